import { createHash, timingSafeEqual } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { KilnError } from '../../cache/errors.js';
import { isErrno } from '../../cache/fsutil.js';

/**
 * Bearer tokens from a file, one a line (blank lines and `#` comments skipped). Each token is kept
 * as its sha256 so that every comparison has the same length and runs in constant time: neither
 * a token's content nor its length leaks through timing.
 */
export class TokenAuth {
  private constructor(private readonly hashes: Buffer[]) {}

  static async fromFile(path: string): Promise<TokenAuth> {
    let text: string;
    try {
      text = await readFile(path, 'utf8');
    } catch (err) {
      if (isErrno(err, 'ENOENT')) throw new KilnError('FILE_MISSING', `Cannot read the token file "${path}": no such file`, { exitCode: 2 });
      throw err;
    }
    const tokens = text.split('\n').map((l) => l.trim()).filter((l) => l !== '' && !l.startsWith('#'));
    if (tokens.length === 0) throw new KilnError('INVALID_TOKEN_FILE', `The token file "${path}" holds no token`, { exitCode: 2, hint: 'Write one token a line' });
    return new TokenAuth(tokens.map(hash));
  }

  /** Whether an `Authorization` header carries one of the tokens. */
  check(header: string | undefined): boolean {
    const m = /^Bearer\s+(\S+)\s*$/i.exec(header ?? '');
    const given = hash(m?.[1] ?? '');
    let ok = false;
    // Every token is compared, whether or not an earlier one matched.
    for (const h of this.hashes) ok = timingSafeEqual(h, given) || ok;
    return ok && m !== null;
  }
}

function hash(token: string): Buffer {
  return createHash('sha256').update(token).digest();
}
