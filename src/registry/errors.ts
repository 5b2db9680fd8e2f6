import { KilnError } from '../../cache/errors.js';

/** A failure talking to a registry; `code` is the distribution spec's code where it gave one. */
export class RegistryError extends KilnError {
  /** Worth trying again: 429, 5xx, a reset connection. Drives the retry loop. */
  readonly temporary: boolean;
  readonly status: number | undefined;

  constructor(code: string, message: string, options: { temporary?: boolean; status?: number; hint?: string; cause?: unknown } = {}) {
    super(code, message, { hint: options.hint, cause: options.cause });
    this.name = 'RegistryError';
    this.temporary = options.temporary ?? false;
    this.status = options.status;
  }
}

interface SpecError {
  code?: string;
  message?: string;
}

/** Codes of the distribution spec a status maps to when the body names none. */
const STATUS_CODES: Record<number, string> = {
  400: 'BAD_REQUEST',
  401: 'UNAUTHORIZED',
  403: 'DENIED',
  404: 'NOT_FOUND',
  405: 'UNSUPPORTED',
  416: 'RANGE_INVALID',
  429: 'TOOMANYREQUESTS',
};

export function isTemporaryStatus(status: number): boolean {
  return status === 429 || status === 408 || status >= 500;
}

/** Builds the error for a response: the registry's own code and message when the body has them. */
export function errorFromResponse(status: number, body: string, what: string): RegistryError {
  let first: SpecError | undefined;
  try {
    const parsed = JSON.parse(body) as { errors?: SpecError[] };
    first = parsed.errors?.[0];
  } catch {
    // Not a spec error body (a proxy's HTML page, an empty 500): the status speaks for itself.
  }
  const code = first?.code ?? STATUS_CODES[status] ?? (status >= 500 ? 'UNAVAILABLE' : `HTTP_${status}`);
  const detail = first?.message ?? (body.trim().slice(0, 200) || `HTTP status ${status}`);
  const hint =
    code === 'UNAUTHORIZED' ? 'Log in with "kiln login REGISTRY", or check the credentials in the docker config'
    : code === 'DENIED' ? 'The credentials in use have no access to this repository'
    : undefined;
  return new RegistryError(code, `${what}: ${code}: ${detail}`, { temporary: isTemporaryStatus(status), status, hint });
}

/** Connection-level failures that another attempt may not meet. */
const TEMPORARY_ERRNOS = new Set(['ECONNRESET', 'ECONNREFUSED', 'EPIPE', 'ETIMEDOUT', 'EAI_AGAIN', 'ECONNABORTED', 'UND_ERR_SOCKET', 'ERR_STREAM_PREMATURE_CLOSE']);

export function networkError(err: unknown, what: string): RegistryError {
  const code = (err as NodeJS.ErrnoException)?.code ?? '';
  const message = err instanceof Error ? err.message : String(err);
  return new RegistryError('NETWORK', `${what}: ${message}`, { temporary: TEMPORARY_ERRNOS.has(code) || /socket hang up|aborted|premature/i.test(message), cause: err });
}
