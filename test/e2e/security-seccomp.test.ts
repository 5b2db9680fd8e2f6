import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { kiln, kilnContainers, mountsUnder, REPO, storeAndContext } from '../helpers/kiln.js';

/** The syscall filter of RUN steps and `kiln run`: docker's default policy, lifted by --security=insecure. */
describe('seccomp profile of containers', () => {
  let root: string;
  let ctx: string;
  let cleanup: () => Promise<void>;

  beforeAll(async () => {
    ({ root, ctx, cleanup } = await storeAndContext('kiln-seccomp-'));
    // A static probe: busybox has no applet for keyctl, bpf or clone3.
    execFileSync('gcc', ['-static', '-O', '-o', join(ctx, 'probe'), join(REPO, 'fixtures/security/syscalls.c')]);
    execFileSync('gcc', ['-static', '-nostdlib', '-o', join(ctx, 'i386-syscall'), join(REPO, 'fixtures/security/i386-syscall.S')]);
  });

  afterAll(async () => {
    await cleanup?.();
  });

  const build = (dockerfile: string, args: string[] = []) => {
    writeFileSync(join(ctx, 'Dockerfile'), dockerfile);
    return kiln(root, ['build', '--progress', 'plain', '--no-cache', ...args, ctx]);
  };

  /** NAME=RESULT lines of the probe in a plain-progress log. */
  const probe = (log: string) => Object.fromEntries([...log.matchAll(/^#\d+ [\d.]+ (\w+)=(\w+)$/gm)].map((m) => [m[1]!, m[2]!]));

  it('filters the syscalls of a RUN step: mode 2, namespaces, keyrings and bpf refused with EPERM', async () => {
    const r = await build('FROM test/base:1\nCOPY probe /probe\nRUN grep "^Seccomp:" /proc/self/status && /probe\n');
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/^#\d+ [\d.]+ Seccomp:\t2$/m);
    expect(probe(r.stderr)).toEqual({
      add_key: 'EPERM',
      keyctl: 'EPERM',
      bpf: 'EPERM',
      // ENOSYS, not EPERM: glibc takes it as "no clone3 here" and uses clone.
      clone3: 'ENOSYS',
      clone: 'ok',
      clone_newuser: 'EPERM',
      clone_newns: 'EPERM',
      personality_linux32: 'ok',
      personality_addr_no_randomize: 'EPERM',
      chown: 'ok',
      setresgid: 'ok',
      setresuid: 'ok',
    });
  });

  it('refuses unshare, nsenter and mount from busybox while ordinary tools keep working', async () => {
    const script = [
      'unshare -U true; echo "unshare=$?"',
      'nsenter -t 1 -U true; echo "nsenter=$?"',
      'mkdir -p /m && mount -t tmpfs none /m; echo "mount=$?"',
      'linux32 uname -m',
      'chown 1:1 /m && ls -nd /m | awk "{print \\"owner=\\" \\$3 \\":\\" \\$4}"',
      'su -s /bin/sh nobody -c "id -u" | sed "s/^/su=/"',
      'echo a b c | tr " " "\\n" | sort -r | head -1 | sed "s/^/pipe=/"',
    ].join('; ');
    const r = await build(`FROM test/base:1\nRUN ${JSON.stringify(['sh', '-c', script])}\n`);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/unshare\(0x10000000\): Operation not permitted/);
    expect(r.stderr).toMatch(/^#\d+ [\d.]+ unshare=1$/m);
    expect(r.stderr).toMatch(/nsenter: .*Operation not permitted/);
    expect(r.stderr).toMatch(/^#\d+ [\d.]+ nsenter=1$/m);
    expect(r.stderr).toMatch(/^#\d+ [\d.]+ mount=(?!0)\d+$/m);
    expect(r.stderr).toMatch(/^#\d+ [\d.]+ i686$/m);
    expect(r.stderr).toMatch(/^#\d+ [\d.]+ owner=1:1$/m);
    expect(r.stderr).toMatch(/^#\d+ [\d.]+ su=65534$/m);
    expect(r.stderr).toMatch(/^#\d+ [\d.]+ pipe=c$/m);
  });

  // A kernel built without IA32 emulation runs no x86 binary, filter or not.
  const ia32 = !existsSync('/proc/config.gz') || /^CONFIG_IA32_EMULATION=y$/m.test(gunzipSync(readFileSync('/proc/config.gz')).toString('latin1'));
  it.skipIf(!ia32)('lets 32-bit syscalls through the filter where the kernel runs x86 binaries', async () => {
    const r = await build('FROM test/base:1\nCOPY i386-syscall /i386-syscall\nRUN /i386-syscall; echo "status=$?"\n');
    expect(r.code, r.stderr).toBe(0);
    // 159 (SIGSYS) would be the filter refusing an architecture it does not list.
    expect(r.stderr).toMatch(/^#\d+ [\d.]+ status=0$/m);
  });

  it('lifts the filter for RUN --security=insecure', async () => {
    const r = await build('FROM test/base:1\nCOPY probe /probe\nRUN --security=insecure grep "^Seccomp:" /proc/self/status && /probe\n', ['--allow', 'security.insecure']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/^#\d+ [\d.]+ Seccomp:\t0$/m);
    const seen = probe(r.stderr);
    expect(seen.add_key).toBe('ok');
    expect(seen.clone_newns).toBe('ok');
    expect(seen.personality_addr_no_randomize).toBe('ok');
  });

  it('filters kiln run as well', async () => {
    const r = await kiln(root, ['run', '--rm', 'test/base:1', 'sh', '-c', 'grep "^Seccomp:" /proc/self/status; unshare -U true']);
    expect(r.stdout).toBe('Seccomp:\t2\n');
    expect(r.stderr).toContain('Operation not permitted');
    expect(r.code).toBe(1);
  });

  it('says in kiln info what is applied, and no AppArmor or SELinux where the host has neither', async () => {
    const json = JSON.parse((await kiln(root, ['info', '--format', 'json'])).stdout) as { security: { options: string[]; hostModules: string[] } };
    expect(json.security.options).toEqual(['name=seccomp,profile=builtin', 'name=no-new-privileges']);
    const expected: string[] = [];
    if (existsSync('/sys/module/apparmor/parameters/enabled') && readFileSync('/sys/module/apparmor/parameters/enabled', 'utf8').trim() === 'Y') expected.push('apparmor');
    if (existsSync('/sys/fs/selinux/enforce')) expected.push('selinux');
    expect(json.security.hostModules).toEqual(expected);
    const text = await kiln(root, ['info']);
    expect(text.stdout).toMatch(/^Security: +seccomp \(profile builtin\), no-new-privileges; RUN --security=insecure runs unconfined$/m);
    expect(/AppArmor|SELinux/.test(text.stdout)).toBe(expected.length > 0);
  });

  it('leaves no mount and no container', () => {
    expect(mountsUnder(root)).toEqual([]);
    expect(kilnContainers(root)).toEqual([]);
  });
});
