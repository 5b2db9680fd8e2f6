import { resolve } from 'node:path';
import type { Store } from '../../cache/store.js';
import { KilnError } from '../../cache/errors.js';
import type { ConvertOptions } from '../image/convert.js';
import type { Compression } from '../image/oci.js';
import type { LocalImage } from '../image/local.js';
import { parseReference } from '../image/reference.js';
import type { ExportOptions, Exporter } from './exporter.js';
import { ImageExporter } from './image.js';

/**
 * An exporter whose module (and what it brings: archive writing, the image converter, tar-stream)
 * loads only when the build gets to export: parsing `-o` is on every build's path, exporting not.
 */
function lazy(load: () => Promise<Exporter>): Exporter {
  let exporter: Promise<Exporter> | undefined;
  return {
    async export(store: Store, image: LocalImage, options?: ExportOptions): Promise<void> {
      exporter ??= load();
      return (await exporter).export(store, image, options);
    },
  };
}

const COMPRESSIONS: readonly Compression[] = ['gzip', 'zstd', 'uncompressed'];

function invalid(value: string, why: string): KilnError {
  return new KilnError('INVALID_OUTPUT', `Invalid --output "${value}": ${why}`, { exitCode: 2 });
}

const TYPES = ['image', 'registry', 'oci', 'docker', 'tar', 'local'] as const;
export type OutputType = (typeof TYPES)[number];

export interface OutputContext {
  insecureRegistries?: readonly string[];
}

/** One `-o` value, parsed once: what is exported where. */
export interface OutputSpec {
  type: OutputType;
  /** A path (`-`: standard output) as given; only file and directory outputs use it. */
  dest?: string;
  names: string[];
  /** type=image,push=true. */
  push: boolean;
  /** type=oci,tar=false writes a directory. */
  tar: boolean;
  convert: ConvertOptions;
  /** The KEY=VALUE fields as given, to pass the spec on without its dest. */
  fields: ReadonlyMap<string, string>;
}

/**
 * BuildKit's `-o` syntax: `type=oci,dest=F,compression=zstd`; a bare path means type=local, `-`
 * type=tar. A value is one output: a second `type=` (or any key given twice) is an error, not
 * a second output, so that what is checked is what runs.
 */
export function parseOutputSpec(value: string): OutputSpec {
  const fields = new Map<string, string>();
  if (value === '-') {
    fields.set('type', 'tar').set('dest', '-');
  } else if (!value.includes('=')) {
    fields.set('type', 'local').set('dest', value);
  } else {
    for (const part of splitFields(value)) {
      const eq = part.indexOf('=');
      if (eq < 0) throw invalid(value, `"${part}" is not KEY=VALUE`);
      const key = part.slice(0, eq).trim();
      if (fields.has(key)) {
        throw invalid(value, key === 'type' ? 'it names more than one type= (give each output an -o of its own)' : `it gives "${key}" more than once`);
      }
      fields.set(key, part.slice(eq + 1).trim());
    }
  }
  const type = fields.get('type');
  if (!type || !(TYPES as readonly string[]).includes(type)) throw invalid(value, `type must be one of ${TYPES.join(', ')}${type ? `, not "${type}"` : ''}`);
  const bool = (key: string, dflt: boolean): boolean => {
    const v = fields.get(key);
    if (v === undefined || v === '') return v === '' ? true : dflt;
    if (v !== 'true' && v !== 'false') throw invalid(value, `${key} takes true or false, not "${v}"`);
    return v === 'true';
  };
  const convert: ConvertOptions = {};
  const compression = fields.get('compression');
  if (compression !== undefined) {
    if (!(COMPRESSIONS as readonly string[]).includes(compression)) throw invalid(value, `compression must be gzip, zstd or uncompressed, not "${compression}"`);
    convert.compression = compression as Compression;
  }
  const level = fields.get('compression-level');
  if (level !== undefined) {
    const n = Number(level);
    const max = convert.compression === 'zstd' ? 22 : 9;
    if (!Number.isInteger(n) || n < 0 || n > max) throw invalid(value, `compression-level must be a whole number from 0 to ${max}, not "${level}"`);
    convert.level = n;
  }
  if (fields.has('force-compression')) convert.force = bool('force-compression', false);
  if (fields.has('oci-mediatypes')) convert.ociMediaTypes = bool('oci-mediatypes', true);
  if (convert.compression === 'zstd' && convert.ociMediaTypes === false) throw invalid(value, 'zstd layers need oci-mediatypes=true: Docker media types have no zstd');
  const names = (fields.get('name') ?? '').split(/[;,]/).map((n) => n.trim()).filter(Boolean);
  for (const n of names) {
    try {
      parseReference(n);
    } catch (err) {
      throw invalid(value, (err as Error).message);
    }
  }
  return { type: type as OutputType, dest: fields.get('dest'), names, push: bool('push', false), tar: bool('tar', true), convert, fields };
}

/** The spec as a `-o` value without its dest, for the side that chooses the dest itself. */
export function formatOutputSpec(spec: OutputSpec): string {
  return [...spec.fields]
    .filter(([key]) => key !== 'dest')
    .map(([key, v]) => (/[",]/.test(v) ? `${key}="${v.replace(/"/g, '')}"` : `${key}=${v}`))
    .join(',');
}

/** The exporter of a parsed output; file and directory outputs need their dest here. */
export function exporterFor(spec: OutputSpec, context: OutputContext = {}): Exporter {
  const { type, names, convert } = spec;
  const needDest = () => {
    if (!spec.dest) throw new KilnError('INVALID_OUTPUT', `Invalid --output "${formatOutputSpec(spec)}": type=${type} needs dest=`, { exitCode: 2 });
    return spec.dest === '-' ? '-' : resolve(spec.dest);
  };
  switch (type) {
    case 'local': {
      const dir = needDest();
      return lazy(async () => new (await import('./local.js')).LocalDirExporter(dir));
    }
    case 'tar': {
      const file = needDest();
      return lazy(async () => new (await import('./tar.js')).TarExporter(file));
    }
    case 'oci': {
      const file = needDest();
      const tar = spec.tar;
      return lazy(async () => new (await import('./oci.js')).OciExporter(file, { names, tar, convert }));
    }
    case 'docker': {
      const file = needDest();
      return lazy(async () => new (await import('./docker.js')).DockerExporter(file, { names, convert }));
    }
    case 'image':
      return new ImageExporter({ names, push: spec.push, tag: true, convert, insecureRegistries: context.insecureRegistries });
    case 'registry':
      return new ImageExporter({ names, push: true, tag: false, convert, insecureRegistries: context.insecureRegistries });
  }
}

export function parseOutput(value: string, context: OutputContext = {}): Exporter {
  return exporterFor(parseOutputSpec(value), context);
}

/** Splits on commas, except inside double quotes (`name="a,b"`), as BuildKit's CSV reading does. */
function splitFields(value: string): string[] {
  const out: string[] = [];
  let cur = '';
  let quoted = false;
  for (const ch of value) {
    if (ch === '"') {
      quoted = !quoted;
      continue;
    }
    if (ch === ',' && !quoted) {
      out.push(cur);
      cur = '';
      continue;
    }
    cur += ch;
  }
  out.push(cur);
  return out;
}
