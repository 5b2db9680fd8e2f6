import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';

/**
 * Extra certificate authorities for Kiln's TLS connections (registries, token servers, ADD
 * downloads, a build service without --tls-ca), from the PEM file `KILN_EXTRA_CA_CERTS` names.
 *
 * bin/kiln moves `NODE_EXTRA_CA_CERTS` there before Node starts: Node reads and parses that file
 * before any code runs (~70 ms for Debian's 140-root bundle on a 2-core machine), on every
 * command, cached builds included. Read here, it costs only the commands that open a TLS
 * connection, and they trust what Node would have: its own roots and the extra ones.
 */
let loaded: { ca?: string[] } | undefined;

export function extraCaOptions(): { ca?: string[] } {
  if (loaded) return loaded;
  const file = process.env.KILN_EXTRA_CA_CERTS;
  let result: { ca?: string[] } = {};
  if (file) {
    try {
      // node:tls only now: loading it costs a command that opens no TLS connection ~4 ms.
      const { rootCertificates } = createRequire(import.meta.url)('node:tls') as typeof import('node:tls');
      result = { ca: [...rootCertificates, readFileSync(file, 'utf8')] };
    } catch (err) {
      // As Node does with NODE_EXTRA_CA_CERTS: say so, and go on with the usual roots.
      process.stderr.write(`warning: Ignoring extra certificates from ${file}: ${(err as Error).message}\n`);
    }
  }
  loaded = result;
  return result;
}
