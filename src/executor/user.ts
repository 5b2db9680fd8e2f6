import { KilnError } from '../../cache/errors.js';
import { isErrno, readFileQuickly } from '../../cache/fsutil.js';
import { secureJoin } from '../fsutil/securejoin.js';
import type { ProcessUser } from './executor.js';

interface PasswdEntry {
  name: string;
  uid: number;
  gid: number;
  home: string;
}

async function readRootFile(rootfs: string, path: string): Promise<string | undefined> {
  try {
    return (await readFileQuickly(await secureJoin(rootfs, path))).toString('utf8');
  } catch (err) {
    if (isErrno(err, 'ENOENT') || isErrno(err, 'ENOTDIR')) return undefined;
    throw err;
  }
}

function parsePasswd(text: string | undefined): PasswdEntry[] {
  if (!text) return [];
  return text.split('\n').flatMap((line) => {
    const f = line.split(':');
    if (f.length < 4 || line.startsWith('#')) return [];
    return [{ name: f[0]!, uid: Number(f[2]), gid: Number(f[3]), home: f[5] ?? '/' }];
  });
}

function parseGroup(text: string | undefined): { name: string; gid: number; members: string[] }[] {
  if (!text) return [];
  return text.split('\n').flatMap((line) => {
    const f = line.split(':');
    if (f.length < 3 || line.startsWith('#')) return [];
    return [{ name: f[0]!, gid: Number(f[2]), members: (f[3] ?? '').split(',').filter(Boolean) }];
  });
}

const NUMERIC = /^\d+$/;

/**
 * Resolves `user[:group]` as Docker does, against the rootfs' /etc/passwd and /etc/group: names
 * must exist there; numbers need not. Supplementary groups come from /etc/group membership.
 */
export async function resolveUser(rootfs: string, spec: string): Promise<ProcessUser> {
  const [userPart = '', groupPart] = spec === '' ? ['root'] : spec.split(':', 2);
  const passwd = parsePasswd(await readRootFile(rootfs, '/etc/passwd'));
  let uid: number;
  let gid = 0;
  let name: string | undefined;
  if (NUMERIC.test(userPart)) {
    uid = Number(userPart);
    const entry = passwd.find((e) => e.uid === uid);
    if (entry) {
      gid = entry.gid;
      name = entry.name;
    }
  } else {
    const entry = passwd.find((e) => e.name === userPart);
    if (!entry) {
      if (userPart === 'root') return { uid: 0, gid: 0, additionalGids: [] };
      throw new KilnError('USER_UNKNOWN', `Unable to find user "${userPart}": no matching entries in /etc/passwd`);
    }
    uid = entry.uid;
    gid = entry.gid;
    name = entry.name;
  }
  const groups = parseGroup(await readRootFile(rootfs, '/etc/group'));
  if (groupPart !== undefined && groupPart !== '') {
    if (NUMERIC.test(groupPart)) {
      gid = Number(groupPart);
    } else {
      const g = groups.find((e) => e.name === groupPart);
      if (!g) throw new KilnError('GROUP_UNKNOWN', `Unable to find group "${groupPart}": no matching entries in /etc/group`);
      gid = g.gid;
    }
    return { uid, gid, additionalGids: [] };
  }
  const additionalGids = name === undefined ? [] : groups.filter((g) => g.members.includes(name!) && g.gid !== gid).map((g) => g.gid);
  return { uid, gid, additionalGids };
}

/** Resolves `user[:group]` to numeric ids for file ownership (COPY --chown, WORKDIR). */
export async function resolveOwner(rootfs: string, spec: { user: string; group?: string }): Promise<{ uid: number; gid: number }> {
  const u = await resolveUser(rootfs, spec.group === undefined ? spec.user : `${spec.user}:${spec.group}`);
  return { uid: u.uid, gid: u.gid };
}
