import { describe, expect, it } from 'vitest';
import { CLONE_NEW_FLAGS, seccompArchitectures, seccompProfile } from '../../src/executor/seccomp.js';
import { DEFAULT_CAPABILITIES } from '../../src/executor/spec.js';

interface Rule {
  names: string[];
  action: string;
  errnoRet?: number;
  args?: { index: number; value: number; valueTwo?: number; op: string }[];
}
interface Profile {
  defaultAction: string;
  defaultErrnoRet: number;
  architectures: string[];
  syscalls: Rule[];
}

const profile = (caps: readonly string[], arch = 'x64') => seccompProfile(caps, arch, null) as Profile;
const unconditional = (p: Profile) => new Set(p.syscalls.filter((r) => r.action === 'SCMP_ACT_ALLOW' && !r.args).flatMap((r) => r.names));
const rulesFor = (p: Profile, name: string) => p.syscalls.filter((r) => r.names.includes(name));

describe('seccompProfile', () => {
  it('refuses with EPERM what it does not list, for the x86 family on x86_64 and arm on aarch64', () => {
    const p = profile(DEFAULT_CAPABILITIES);
    expect(p.defaultAction).toBe('SCMP_ACT_ERRNO');
    expect(p.defaultErrnoRet).toBe(1);
    expect(p.architectures).toEqual(['SCMP_ARCH_X86_64', 'SCMP_ARCH_X86', 'SCMP_ARCH_X32']);
    expect(profile(DEFAULT_CAPABILITIES, 'arm64').architectures).toEqual(['SCMP_ARCH_AARCH64', 'SCMP_ARCH_ARM']);
    expect(unconditional(p).has('arch_prctl')).toBe(true);
    expect(unconditional(profile(DEFAULT_CAPABILITIES, 'arm64')).has('arch_prctl')).toBe(false);
    for (const name of ['keyctl', 'add_key', 'request_key', 'kexec_load', 'userfaultfd', 'swapon', 'mount', 'unshare', 'setns', 'bpf', 'socket', 'personality', 'clone']) {
      expect(unconditional(p).has(name), name).toBe(false);
    }
  });

  it('leaves out a compatibility ABI the kernel was built without', () => {
    expect(seccompArchitectures('x64', 'CONFIG_IA32_EMULATION=y\n# CONFIG_X86_X32_ABI is not set\n')).toEqual(['SCMP_ARCH_X86_64', 'SCMP_ARCH_X86']);
    expect(seccompArchitectures('x64', 'CONFIG_IA32_EMULATION=y\nCONFIG_X86_X32_ABI=y\n')).toEqual(['SCMP_ARCH_X86_64', 'SCMP_ARCH_X86', 'SCMP_ARCH_X32']);
    expect(seccompArchitectures('arm64', '# CONFIG_COMPAT is not set\n')).toEqual(['SCMP_ARCH_AARCH64']);
    expect(seccompArchitectures('riscv64', null)).toEqual([]);
  });

  it('gates calls on the capabilities of the step: chroot with CAP_SYS_CHROOT, mount and namespaces with CAP_SYS_ADMIN', () => {
    const sandbox = profile(DEFAULT_CAPABILITIES);
    expect(unconditional(sandbox).has('chroot')).toBe(true);
    expect(unconditional(profile(DEFAULT_CAPABILITIES.filter((c) => c !== 'CAP_SYS_CHROOT'))).has('chroot')).toBe(false);
    // Without CAP_SYS_ADMIN: clone only with every namespace bit clear, clone3 answered ENOSYS.
    expect(rulesFor(sandbox, 'clone')).toEqual([{ names: ['clone'], action: 'SCMP_ACT_ALLOW', args: [{ index: 0, value: CLONE_NEW_FLAGS, valueTwo: 0, op: 'SCMP_CMP_MASKED_EQ' }] }]);
    expect(CLONE_NEW_FLAGS).toBe(0x7e020000);
    expect(rulesFor(sandbox, 'clone3')).toEqual([{ names: ['clone3'], action: 'SCMP_ACT_ERRNO', errnoRet: 38 }]);
    const admin = profile([...DEFAULT_CAPABILITIES, 'CAP_SYS_ADMIN']);
    for (const name of ['mount', 'umount2', 'unshare', 'setns', 'clone', 'clone3', 'bpf']) expect(unconditional(admin).has(name), name).toBe(true);
    expect(rulesFor(admin, 'clone3').every((r) => r.action === 'SCMP_ACT_ALLOW')).toBe(true);
  });

  it('allows personality only with the values that choose the Linux ABI', () => {
    const values = rulesFor(profile(DEFAULT_CAPABILITIES), 'personality').map((r) => r.args?.[0]?.value);
    expect(values.sort((a, b) => a! - b!)).toEqual([0, 8, 0x20000, 0x20008, 0xffffffff]);
  });
});
