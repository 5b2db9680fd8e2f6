import { KilnError } from '../../cache/errors.js';

export interface Reference {
  /** Registry host, `docker.io` when none is given. */
  domain: string;
  /** Repository path, `library/` prefixed for official docker.io images. */
  path: string;
  tag?: string;
  digest?: string;
}

const NAME_COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const TAG = /^[\w][\w.-]{0,127}$/;
/** The longest repository name docker accepts (distribution's NameTotalLengthMax). */
const NAME_MAX = 255;
const DIGEST = /^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/;

/** Parses and normalises an image reference as Docker does (`busybox` → `docker.io/library/busybox:latest`). */
export function parseReference(input: string): Reference {
  // A name of 100,000 characters is not quoted back whole.
  const shown = input.length > 300 ? `${input.slice(0, 80)}…` : input;
  const bad = (why: string) => new KilnError('INVALID_REFERENCE', `Invalid reference "${shown}": ${why}`, { exitCode: 2 });
  if (input === '') throw bad('it is empty');
  let rest = input;
  let digest: string | undefined;
  const at = rest.indexOf('@');
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!DIGEST.test(digest)) throw bad(`"${digest}" is not a digest`);
  }
  let tag: string | undefined;
  const lastColon = rest.lastIndexOf(':');
  if (lastColon > rest.lastIndexOf('/')) {
    tag = rest.slice(lastColon + 1);
    rest = rest.slice(0, lastColon);
    if (!TAG.test(tag)) throw bad(`"${tag}" is not a valid tag`);
  }
  // As docker's reference parser: the name as written, registry included, before normalising.
  if (rest.length > NAME_MAX) throw bad(`the repository name is longer than ${NAME_MAX} characters`);
  let domain = 'docker.io';
  const slash = rest.indexOf('/');
  if (slash >= 0) {
    const first = rest.slice(0, slash);
    if (first.includes('.') || first.includes(':') || first === 'localhost') {
      domain = first;
      rest = rest.slice(slash + 1);
    }
  }
  if (domain === 'index.docker.io') domain = 'docker.io';
  if (rest === '') throw bad('the repository name is empty');
  for (const part of rest.split('/')) {
    if (!NAME_COMPONENT.test(part)) {
      throw bad(part !== part.toLowerCase() ? 'repository names must be lowercase' : `"${part}" is not a valid repository name component`);
    }
  }
  if (domain === 'docker.io' && !rest.includes('/')) rest = `library/${rest}`;
  if (tag === undefined && digest === undefined) tag = 'latest';
  return { domain, path: rest, tag, digest };
}

/** The full normalised name: `docker.io/library/busybox:latest`. */
export function formatReference(ref: Reference): string {
  return `${ref.domain}/${ref.path}${ref.tag ? `:${ref.tag}` : ''}${ref.digest ? `@${ref.digest}` : ''}`;
}

/** The repository as Docker shows it: `busybox`, `acc/app`, `localhost:5000/x`. */
export function familiarRepository(ref: Reference): string {
  if (ref.domain !== 'docker.io') return `${ref.domain}/${ref.path}`;
  return ref.path.startsWith('library/') ? ref.path.slice('library/'.length) : ref.path;
}

/** `acc/app:1` for a stored name `docker.io/acc/app:1`. */
export function familiarName(name: string): string {
  const ref = parseReference(name);
  return `${familiarRepository(ref)}${ref.tag ? `:${ref.tag}` : ''}${ref.digest ? `@${ref.digest}` : ''}`;
}

export function normalizeName(input: string): string {
  return formatReference(parseReference(input));
}
