import { usageError } from './args.js';

/**
 * The part of Go's text/template that `docker inspect --format` is used with: `{{.Config.Env}}`,
 * `{{json .Config}}`, `{{index .Config.Labels "k"}}`, `{{join .RepoTags ","}}`, `{{upper .Os}}`,
 * `{{len .RootFS.Layers}}`, `{{.}}`. Values print as Go prints them: `[a b]`, `map[k:v]`,
 * `<no value>` for a missing key. A field the top level lacks is a usage error, to catch typos.
 */
export type Template = (data: unknown) => string;

type Token = { kind: 'path'; path: string[] } | { kind: 'string'; value: string };

const FUNCTIONS = ['json', 'index', 'join', 'upper', 'lower', 'len', 'title', 'println'] as const;

export function compileTemplate(source: string): Template {
  const parts: ((data: unknown) => string)[] = [];
  let i = 0;
  while (i < source.length) {
    const open = source.indexOf('{{', i);
    if (open < 0) {
      const text = source.slice(i);
      parts.push(() => text);
      break;
    }
    const text = source.slice(i, open);
    if (text) parts.push(() => text);
    const close = source.indexOf('}}', open + 2);
    if (close < 0) throw templateError(source, 'an action "{{" is not closed with "}}"');
    parts.push(compileAction(source, source.slice(open + 2, close).replace(/^-\s|\s-$/g, '').trim()));
    i = close + 2;
  }
  return (data) => parts.map((p) => p(data)).join('');
}

function compileAction(source: string, action: string): (data: unknown) => string {
  const words = tokenize(source, action);
  if (words.length === 0) throw templateError(source, 'an action is empty');
  const [head, ...args] = words;
  if (head!.kind === 'path') {
    if (args.length > 0) throw templateError(source, `"${action}" has more than one value`);
    return (data) => goString(resolvePath(source, data, head!.path));
  }
  const fn = head!.value;
  if (!(FUNCTIONS as readonly string[]).includes(fn)) throw templateError(source, `function "${fn}" is not defined (known: ${FUNCTIONS.join(', ')})`);
  const value = (data: unknown, t: Token | undefined) => {
    if (!t) throw templateError(source, `"${fn}" needs an argument`);
    return t.kind === 'path' ? resolvePath(source, data, t.path) : t.value;
  };
  return (data) => {
    switch (fn) {
      case 'json':
        return JSON.stringify(value(data, args[0]) ?? null);
      case 'index': {
        let v = value(data, args[0]);
        for (const key of args.slice(1)) {
          const k = value(data, key);
          v = v !== null && typeof v === 'object' ? (v as Record<string, unknown>)[String(k)] : undefined;
        }
        return goString(v);
      }
      case 'join': {
        const list = value(data, args[0]);
        return Array.isArray(list) ? list.map(goString).join(String(value(data, args[1]))) : goString(list);
      }
      case 'upper':
        return goString(value(data, args[0])).toUpperCase();
      case 'lower':
        return goString(value(data, args[0])).toLowerCase();
      case 'title':
        return goString(value(data, args[0])).replace(/\b\w/g, (c) => c.toUpperCase());
      case 'len': {
        const v = value(data, args[0]);
        return String(Array.isArray(v) || typeof v === 'string' ? v.length : v && typeof v === 'object' ? Object.keys(v).length : 0);
      }
      default:
        return `${args.map((a) => goString(value(data, a))).join(' ')}\n`;
    }
  };
}

function tokenize(source: string, action: string): Token[] {
  const out: Token[] = [];
  const re = /\s*(?:"((?:[^"\\]|\\.)*)"|(\.[A-Za-z0-9_.]*)|([A-Za-z_][A-Za-z0-9_]*))/y;
  let m: RegExpExecArray | null;
  let at = 0;
  while (at < action.length && (m = re.exec(action))) {
    at = re.lastIndex;
    if (m[1] !== undefined) out.push({ kind: 'string', value: JSON.parse(`"${m[1]}"`) as string });
    else if (m[2] !== undefined) out.push({ kind: 'path', path: m[2] === '.' ? [] : m[2].slice(1).split('.') });
    else out.push({ kind: 'string', value: m[3]! });
  }
  if (action.slice(at).trim() !== '') throw templateError(source, `cannot read "${action.slice(at).trim()}"`);
  // A bare word is a function name only in the first position.
  return out;
}

function resolvePath(source: string, data: unknown, path: readonly string[]): unknown {
  let v: unknown = data;
  for (const [i, key] of path.entries()) {
    if (v === null || typeof v !== 'object') return undefined;
    if (i === 0 && !Object.hasOwn(v, key)) {
      throw templateError(source, `field "${key}" does not exist (fields: ${Object.keys(v).join(', ')})`);
    }
    v = (v as Record<string, unknown>)[key];
  }
  return v;
}

/** A value as Go's fmt prints it with %v. */
export function goString(v: unknown): string {
  if (v === undefined) return '<no value>';
  if (v === null) return '<nil>';
  if (Array.isArray(v)) return `[${v.map(goString).join(' ')}]`;
  if (typeof v === 'object') {
    const entries = Object.entries(v as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `map[${entries.map(([k, x]) => `${k}:${goString(x)}`).join(' ')}]`;
  }
  return String(v);
}

function templateError(source: string, why: string) {
  return usageError(`Invalid --format "${source}": ${why}`);
}
