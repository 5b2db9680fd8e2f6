import { resolve } from 'node:path';
import { KilnError } from '../../cache/errors.js';
import type { Exporter } from './exporter.js';
import { LocalDirExporter } from './local.js';
import { OciArchiveExporter } from './oci.js';

function invalid(value: string, why: string): KilnError {
  return new KilnError('INVALID_OUTPUT', `Invalid --output "${value}": ${why}`, { exitCode: 2 });
}

/** Parses BuildKit's `-o` syntax (`type=oci,dest=F`); a bare path means type=local. */
export function parseOutput(value: string): Exporter {
  const fields = new Map<string, string>();
  if (!value.includes('=')) {
    fields.set('type', 'local');
    fields.set('dest', value);
  } else {
    for (const part of value.split(',')) {
      const eq = part.indexOf('=');
      if (eq < 0) throw invalid(value, `"${part}" is not KEY=VALUE`);
      fields.set(part.slice(0, eq).trim(), part.slice(eq + 1).trim());
    }
  }
  const type = fields.get('type');
  const dest = fields.get('dest');
  if (type === 'oci' || type === 'local') {
    if (!dest) throw invalid(value, `type=${type} needs dest=`);
    const names = fields.get('name')?.split(';') ?? [];
    return type === 'oci' ? new OciArchiveExporter(resolve(dest), names) : new LocalDirExporter(resolve(dest));
  }
  throw invalid(value, `type must be oci or local${type ? `, not "${type}"` : ''}`);
}
