import { execFile } from 'node:child_process';
import { cp, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, posix } from 'node:path';
import { KilnError } from '../../cache/errors.js';
import type { GitOp } from '../../solver/graph.js';
import { secureJoin } from '../fsutil/securejoin.js';
import { checkEgress, gitHost } from './egress.js';

// Git must never ask for credentials on a terminal, nor read the user's configuration.
// Only the transports a Dockerfile may name: never ext:: (a command) or fd::, whatever a config says.
const GIT_ENV = { ...process.env, GIT_TERMINAL_PROMPT: '0', GIT_CONFIG_NOSYSTEM: '1', GIT_CONFIG_GLOBAL: '/dev/null', GIT_ALLOW_PROTOCOL: 'file:git:http:https:ssh' };

/**
 * A build service's git has none of the server's credentials (its ssh keys and agent, a .netrc)
 * and follows no redirect (which could lead to the server's own host).
 */
const SERVICE_ENV = {
  ...GIT_ENV,
  HOME: '/nonexistent',
  SSH_AUTH_SOCK: '',
  GIT_SSH_COMMAND: 'ssh -F /dev/null -o IdentityFile=none -o IdentitiesOnly=yes -o BatchMode=yes',
};

export interface GitOptions {
  signal: AbortSignal;
  /** A build service's source: the server's host and credentials are out of reach. */
  service?: boolean;
}

function git(args: readonly string[], o: GitOptions & { cwd?: string }): Promise<string> {
  const argv = o.service ? ['-c', 'http.followRedirects=false', ...args] : args;
  return new Promise((resolve, reject) => {
    execFile('git', argv, { cwd: o.cwd, env: o.service ? SERVICE_ENV : GIT_ENV, signal: o.signal, maxBuffer: 64 * 1024 * 1024 }, (err, stdout, stderr) => {
      if (!err) return resolve(stdout);
      if (o.signal.aborted) return reject(err);
      const detail = stderr.trim().split('\n').pop() || err.message;
      reject(new KilnError('GIT_ERROR', `git ${args[0]} failed: ${detail}`, { cause: err }));
    });
  });
}

const FULL_SHA = /^[0-9a-f]{40}([0-9a-f]{24})?$/;

/** The commit `op.ref` (or the default branch) names in the remote repository. */
export async function resolveCommit(op: GitOp, o: GitOptions): Promise<string> {
  if (o.service) {
    if (op.url.startsWith('file://')) throw new KilnError('SOURCE_REFUSED', `"${op.url}" is a git repository on the build service's own disk, which a build may not read`);
    const host = gitHost(op.url);
    if (host !== undefined) await checkEgress(host);
  }
  if (op.ref && FULL_SHA.test(op.ref)) return op.ref;
  const ref = op.ref ?? 'HEAD';
  const out = await git(['ls-remote', '--', op.url, ref, `${ref}^{}`], o).catch((err: unknown) => {
    throw new KilnError('GIT_ERROR', `Cannot read the git repository "${op.url}": ${(err as Error).message}`, { cause: err });
  });
  const rows = out.split('\n').filter(Boolean).map((l) => l.split('\t') as [string, string]);
  const pick = (name: string) => rows.find(([, n]) => n === name)?.[0];
  const sha = pick(`refs/tags/${ref}^{}`) ?? pick(`refs/tags/${ref}`) ?? pick(`refs/heads/${ref}`) ?? pick(ref) ?? pick(`${ref}^{}`);
  if (!sha) throw new KilnError('GIT_REF_UNKNOWN', `The git repository "${op.url}" has no branch, tag or commit "${ref}"`);
  return sha;
}

/** The content part of a checkout's key: the commit, checked against --checksum when given. */
export async function gitContentKey(op: GitOp, o: GitOptions): Promise<{ key: string }> {
  const commit = await resolveCommit(op, o);
  if (op.checksum && !commit.startsWith(op.checksum)) {
    throw new KilnError('CHECKSUM_MISMATCH', `The git reference "${op.ref ?? 'HEAD'}" of "${op.url}" is commit ${commit}, but ADD --checksum expects ${op.checksum}`);
  }
  return { key: commit };
}

/** Checks the repository out at the resolved commit and copies it (or `subdir`) into `root`. */
export async function checkoutInto(root: string, op: GitOp, o: GitOptions): Promise<void> {
  const { signal } = o;
  const commit = (await gitContentKey(op, o)).key;
  const work = await mkdtemp(join(tmpdir(), 'kiln-git-'));
  try {
    await git(['init', '-q', work], { signal });
    // A branch or tag fetches just that; a commit may be anywhere, so every ref comes along.
    const refspecs = op.ref && !FULL_SHA.test(op.ref) ? [op.ref] : ['HEAD', '+refs/heads/*:refs/kiln/heads/*', '+refs/tags/*:refs/kiln/tags/*'];
    await git(['fetch', '-q', '--', op.url, ...refspecs], { ...o, cwd: work });
    await git(['-c', 'advice.detachedHead=false', 'checkout', '-q', commit], { cwd: work, signal }).catch((err: unknown) => {
      throw new KilnError('GIT_REF_UNKNOWN', `Cannot check out commit ${commit} of "${op.url}": ${(err as Error).message}`, { cause: err });
    });
    const from = op.subdir ? await secureJoin(work, posix.normalize(`/${op.subdir}`)) : work;
    await cp(from, root, {
      recursive: true,
      verbatimSymlinks: true,
      preserveTimestamps: true,
      filter: (src) => op.keepGitDir || !(src === join(work, '.git') || src.startsWith(`${join(work, '.git')}/`)),
    });
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}
