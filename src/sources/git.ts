import { execFile } from 'node:child_process';
import { cp, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, posix } from 'node:path';
import { KilnError } from '../../cache/errors.js';
import type { GitOp } from '../../solver/graph.js';
import { secureJoin } from '../fsutil/securejoin.js';

// Git must never ask for credentials on a terminal, nor read the user's configuration.
const GIT_ENV = { ...process.env, GIT_TERMINAL_PROMPT: '0', GIT_CONFIG_NOSYSTEM: '1', GIT_CONFIG_GLOBAL: '/dev/null' };

function git(args: readonly string[], o: { cwd?: string; signal: AbortSignal }): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile('git', args, { cwd: o.cwd, env: GIT_ENV, signal: o.signal, maxBuffer: 64 * 1024 * 1024 }, (err, stdout, stderr) => {
      if (!err) return resolve(stdout);
      if (o.signal.aborted) return reject(err);
      const detail = stderr.trim().split('\n').pop() || err.message;
      reject(new KilnError('GIT_ERROR', `git ${args[0]} failed: ${detail}`, { cause: err }));
    });
  });
}

const FULL_SHA = /^[0-9a-f]{40}([0-9a-f]{24})?$/;

/** The commit `op.ref` (or the default branch) names in the remote repository. */
export async function resolveCommit(op: GitOp, signal: AbortSignal): Promise<string> {
  if (op.ref && FULL_SHA.test(op.ref)) return op.ref;
  const ref = op.ref ?? 'HEAD';
  const out = await git(['ls-remote', '--', op.url, ref, `${ref}^{}`], { signal }).catch((err: unknown) => {
    throw new KilnError('GIT_ERROR', `Cannot read the git repository "${op.url}": ${(err as Error).message}`, { cause: err });
  });
  const rows = out.split('\n').filter(Boolean).map((l) => l.split('\t') as [string, string]);
  const pick = (name: string) => rows.find(([, n]) => n === name)?.[0];
  const sha = pick(`refs/tags/${ref}^{}`) ?? pick(`refs/tags/${ref}`) ?? pick(`refs/heads/${ref}`) ?? pick(ref) ?? pick(`${ref}^{}`);
  if (!sha) throw new KilnError('GIT_REF_UNKNOWN', `The git repository "${op.url}" has no branch, tag or commit "${ref}"`);
  return sha;
}

/** The content part of a checkout's key: the commit, checked against --checksum when given. */
export async function gitContentKey(op: GitOp, signal: AbortSignal): Promise<{ key: string }> {
  const commit = await resolveCommit(op, signal);
  if (op.checksum && !commit.startsWith(op.checksum)) {
    throw new KilnError('CHECKSUM_MISMATCH', `The git reference "${op.ref ?? 'HEAD'}" of "${op.url}" is commit ${commit}, but ADD --checksum expects ${op.checksum}`);
  }
  return { key: commit };
}

/** Checks the repository out at the resolved commit and copies it (or `subdir`) into `root`. */
export async function checkoutInto(root: string, op: GitOp, signal: AbortSignal): Promise<void> {
  const commit = (await gitContentKey(op, signal)).key;
  const work = await mkdtemp(join(tmpdir(), 'kiln-git-'));
  try {
    await git(['init', '-q', work], { signal });
    // A branch or tag fetches just that; a commit may be anywhere, so every ref comes along.
    const refspecs = op.ref && !FULL_SHA.test(op.ref) ? [op.ref] : ['HEAD', '+refs/heads/*:refs/kiln/heads/*', '+refs/tags/*:refs/kiln/tags/*'];
    await git(['fetch', '-q', '--', op.url, ...refspecs], { cwd: work, signal });
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
