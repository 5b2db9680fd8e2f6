import { KilnError } from '../../cache/errors.js';

const UNREADABLE: Record<string, string> = {
  ENOENT: 'no such file',
  ENOTDIR: 'a part of its path is not a directory',
  ELOOP: 'too many levels of symbolic links',
  ENAMETOOLONG: 'the path is too long',
  EACCES: 'permission denied',
};

/** The error of a Dockerfile that cannot be read, in words; anything else as it came. */
export function dockerfileReadError(err: unknown, path: string): unknown {
  const code = (err as NodeJS.ErrnoException | undefined)?.code ?? '';
  if (code === 'EISDIR') return new KilnError('DOCKERFILE_MISSING', `The Dockerfile "${path}" is a directory`);
  const why = UNREADABLE[code];
  if (why === undefined) return err;
  return new KilnError('DOCKERFILE_MISSING', `Cannot read the Dockerfile "${path}": ${why}`, code === 'ENOENT' ? { hint: 'Pass its path with -f, or "-f -" to read it from standard input' } : {});
}
