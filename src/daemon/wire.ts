/**
 * What crosses the wire between `kiln serve` and `kiln --host`: build options, the events of a
 * build stream, and errors in a form the client turns back into the same KilnError, so that it
 * prints the same report and exits with the same code as a local run.
 */
import { KilnError, VertexError, type SourceLocation } from '../../cache/errors.js';
import type { ProgressEvent } from '../../solver/progress.js';

export const API_VERSION = 'v1';

export interface WireBuildOptions {
  /** The Dockerfile's path inside the uploaded context; `dockerfileText` wins when given. */
  dockerfile?: string;
  dockerfileText?: string;
  buildArgs?: Record<string, string>;
  tags?: string[];
  target?: string;
  noCache?: boolean;
  noCacheFilter?: string[];
  /** `-o` specs the server runs itself: type=image and type=registry. */
  outputs?: string[];
  push?: boolean;
  insecureRegistries?: string[];
  labels?: Record<string, string>;
  /** Ask the registry for every base image even when the store has it. */
  pull?: boolean;
  /**
   * Settings of every RUN step as the flags gave them (`--network`, `--add-host`, `--ulimit`,
   * `--shm-size`): the server checks them against its own limits, as a local build would.
   */
  runFlags?: { network?: string; addHost?: string[]; ulimit?: string[]; shmSize?: string };
  /** Entitlements asked for with `--allow`; the server grants only those it was started to. */
  allow?: string[];
  /**
   * Secret values the client read (`--secret`), base64: held in memory only, handed to the
   * steps that mount them on their tmpfs, never written or logged by the server.
   */
  secrets?: { id: string; value: string }[];
  /** `--cache-to` / `--cache-from` specs the server runs itself: registry and inline types. */
  cacheTo?: string[];
  cacheFrom?: string[];
  /** How the context follows the options: a tar (the default) or a list of entries and missing contents. */
  context?: 'tar' | 'list';
  /** The client's name for its context, so that cache explanations compare like with like. */
  scope?: string;
}

/**
 * Checks the JSON types of a build's options as they came off the wire, every field once, so
 * that a wrong one is a 400 naming it rather than a failure deep in the build. Fields this
 * server does not know are left out: a newer client may send them.
 */
export function parseBuildOptions(raw: unknown): WireBuildOptions {
  const o = record(raw, 'The build options');
  const out: WireBuildOptions = {};
  const str = (key: keyof WireBuildOptions) => optional(o, key, (v) => (typeof v === 'string' ? v : wrong(key, 'a string', v)));
  const bool = (key: keyof WireBuildOptions) => optional(o, key, (v) => (typeof v === 'boolean' ? v : wrong(key, 'true or false', v)));
  const strs = (key: keyof WireBuildOptions) => optional(o, key, (v) => strings(v, key));
  const map = (key: keyof WireBuildOptions) => optional(o, key, (v) => stringMap(v, key));
  Object.assign(out, {
    dockerfile: str('dockerfile'),
    dockerfileText: str('dockerfileText'),
    buildArgs: map('buildArgs'),
    tags: strs('tags'),
    target: str('target'),
    noCache: bool('noCache'),
    noCacheFilter: strs('noCacheFilter'),
    outputs: strs('outputs'),
    push: bool('push'),
    insecureRegistries: strs('insecureRegistries'),
    labels: map('labels'),
    pull: bool('pull'),
    allow: strs('allow'),
    cacheTo: strs('cacheTo'),
    cacheFrom: strs('cacheFrom'),
    scope: str('scope'),
    context: optional(o, 'context', (v) => {
      if (v === 'tar' || v === 'list') return v;
      throw new KilnError('INVALID_REQUEST', `The build option "context" must be "tar" or "list", not ${typeof v === 'string' ? `"${v}"` : jsonType(v)}`);
    }),
    runFlags: optional(o, 'runFlags', (v) => {
      const f = record(v, 'The build option "runFlags"');
      const flag = (key: string, check: (v: unknown, field: string) => unknown) => optional(f, key, (x) => check(x, `runFlags.${key}`));
      const text = (x: unknown, field: string) => (typeof x === 'string' ? x : wrong(field, 'a string', x));
      return dropUndefined({ network: flag('network', text), addHost: flag('addHost', strings), ulimit: flag('ulimit', strings), shmSize: flag('shmSize', text) });
    }),
    secrets: optional(o, 'secrets', (v) => {
      if (!Array.isArray(v)) return wrong('secrets', 'a list of {"id", "value"}', v);
      return v.map((sec: unknown, i) => {
        const r = record(sec, `The build option "secrets[${i}]"`);
        if (typeof r.id !== 'string') return wrong(`secrets[${i}].id`, 'a string', r.id);
        if (typeof r.value !== 'string') return wrong(`secrets[${i}].value`, 'a base64 string', r.value);
        return { id: r.id, value: r.value };
      });
    }),
  });
  return dropUndefined(out);
}

function optional<T>(o: Record<string, unknown>, key: string, check: (v: unknown) => T): T | undefined {
  return o[key] === undefined ? undefined : check(o[key]);
}

function record(v: unknown, what: string): Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new KilnError('INVALID_REQUEST', `${what} must be a JSON object, not ${jsonType(v)}`);
  return v as Record<string, unknown>;
}

function strings(v: unknown, field: string): string[] {
  if (!Array.isArray(v)) return wrong(field, 'a list of strings', v);
  const i = v.findIndex((x) => typeof x !== 'string');
  if (i >= 0) return wrong(`${field}[${i}]`, 'a string', v[i]);
  return v as string[];
}

function stringMap(v: unknown, field: string, owner = 'The build option'): Record<string, string> {
  const r = record(v, `${owner} "${field}"`);
  for (const [k, x] of Object.entries(r)) if (typeof x !== 'string') wrong(`${field}.${k}`, 'a string', x, owner);
  return r as Record<string, string>;
}

function wrong(field: string, expected: string, v: unknown, owner = 'The build option'): never {
  throw new KilnError('INVALID_REQUEST', `${owner} "${field}" must be ${expected}, not ${jsonType(v)}`);
}

function jsonType(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'an object';
  if (typeof v === 'string') return 'a string';
  if (typeof v === 'number') return 'a number';
  if (typeof v === 'boolean') return v ? 'true' : 'false';
  return typeof v;
}

function dropUndefined<T extends object>(o: T): T {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as T;
}

/**
 * One entry of an incremental context upload (`"context": "list"` in the build options): the
 * second line of the request body holds `{"entries": ContextEntry[]}`, then a tar of the
 * contents the server said it lacks, each named by its checksum's hex.
 */
export interface ContextEntry {
  path: string;
  type: 'dir' | 'file' | 'symlink';
  mode: number;
  uid: number;
  gid: number;
  /** Seconds, as a tar header holds them. */
  mtime: number;
  size?: number;
  /** `sha256:…` of a file's content. */
  checksum?: string;
  /** A symbolic link's target. */
  target?: string;
  /** A file's or directory's extended attributes that travel with it (contentXattrs): name → base64. */
  xattrs?: Record<string, string>;
}

export interface WireError {
  code: string;
  message: string;
  hint?: string;
  location?: SourceLocation;
  exitCode?: number;
  vertex?: string;
  tail?: string[];
}

export type BuildStreamEvent =
  | ProgressEvent
  | { type: 'queued'; position: number }
  | { type: 'result'; image: string; manifest: string; tags: string[]; mediaType?: string; manifestSize?: number }
  | { type: 'error'; error: WireError };

/** Only a KilnError's own fields leave the server: never a stack or an internal message. */
export function toWireError(err: unknown): WireError {
  if (err instanceof VertexError) {
    return { code: err.code, message: err.message, hint: err.hint, location: err.location, exitCode: err.exitCode, vertex: err.vertex, tail: err.tail };
  }
  if (err instanceof KilnError) return { code: err.code, message: err.message, hint: err.hint, location: err.location, exitCode: err.exitCode };
  if (err instanceof Error && err.name === 'AbortError') return { code: 'CANCELLED', message: 'The build was cancelled', exitCode: 130 };
  return { code: 'INTERNAL', message: 'The build service failed unexpectedly', hint: 'The server log has the details' };
}

export function fromWireError(w: WireError): KilnError {
  const base = new KilnError(w.code, w.message, { hint: w.hint, location: w.location, exitCode: w.exitCode });
  if (w.vertex !== undefined) return new VertexError(w.vertex, base, { location: w.location, tail: w.tail });
  return base;
}

/**
 * Checks an incremental upload's list (`{"entries": ContextEntry[]}`) as it came off the wire:
 * each entry's fields have their JSON types, and an error names the entry and the field.
 * Whether the paths and links are safe is the unpacking's to judge (context.ts).
 */
export function parseContextList(raw: unknown): ContextEntry[] {
  const list = record(raw, 'The context list');
  if (!Array.isArray(list.entries)) throw new KilnError('INVALID_REQUEST', `The context list's "entries" must be a list, not ${jsonType(list.entries)}`);
  return list.entries.map((e: unknown, i): ContextEntry => {
    const r = record(e, `The context list's entry ${i}`);
    const bad = (field: string, expected: string): never => {
      const entry = `The context list's entry ${i} ("${String(r.path)}")`;
      if (r[field] === undefined) throw new KilnError('INVALID_REQUEST', `${entry} needs ${expected} as "${field}"`);
      throw new KilnError('INVALID_REQUEST', `${entry} must have ${expected} as "${field}", not ${jsonType(r[field])}`);
    };
    const whole = (field: string, required: boolean, min = 0) => {
      const v = r[field];
      if (v === undefined && !required) return undefined;
      if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min) return bad(field, min === 0 ? 'a whole number of at least 0' : 'a whole number');
      return v;
    };
    const text = (field: string, required: boolean) => {
      const v = r[field];
      if (v === undefined && !required) return undefined;
      if (typeof v !== 'string') return bad(field, 'a string');
      return v;
    };
    if (r.type !== 'dir' && r.type !== 'file' && r.type !== 'symlink') bad('type', '"dir", "file" or "symlink"');
    const xattrs = r.xattrs === undefined ? undefined : stringMap(r.xattrs, `entries[${i}].xattrs`, 'The context list\'s');
    return dropUndefined({
      path: text('path', true)!,
      type: r.type as ContextEntry['type'],
      mode: whole('mode', true)!,
      uid: whole('uid', true)!,
      gid: whole('gid', true)!,
      // Seconds since 1970; a file can be older.
      mtime: whole('mtime', true, Number.MIN_SAFE_INTEGER)!,
      size: whole('size', r.type === 'file'),
      checksum: text('checksum', r.type === 'file'),
      target: text('target', r.type === 'symlink'),
      xattrs,
    });
  });
}
