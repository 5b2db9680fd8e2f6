import { readFileSync } from 'node:fs';
import { isErrno } from '../../cache/fsutil.js';
import { SECCOMP_SECURITY_OPTION } from './seccomp.js';

/** What a sandboxed container gets, in the form of docker's `SecurityOptions` of /info. */
export const SECURITY_OPTIONS = [SECCOMP_SECURITY_OPTION, 'name=no-new-privileges'] as const;

function readOrNull(path: string): string | null {
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    // Absent or unreadable here means the module is not in this kernel.
    if (isErrno(err, 'ENOENT') || isErrno(err, 'ENOTDIR') || isErrno(err, 'EACCES') || isErrno(err, 'EINVAL')) return null;
    throw err;
  }
}

/**
 * The Linux security modules of this host that could confine a container (AppArmor, SELinux),
 * found where docker looks for them. Kiln loads no profile of either: they are reported so that
 * an operator knows they are there and not applied.
 */
export function hostSecurityModules(): string[] {
  const modules: string[] = [];
  if (readOrNull('/sys/module/apparmor/parameters/enabled')?.trim() === 'Y') modules.push('apparmor');
  if (readOrNull('/sys/fs/selinux/enforce') !== null) modules.push('selinux');
  return modules;
}
