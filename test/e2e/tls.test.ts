import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KILN, kiln, storeWithBase, tempDir } from '../helpers/kiln.js';

/**
 * TLS with a certificate authority of the user's: bin/kiln keeps NODE_EXTRA_CA_CERTS away from
 * Node's start-up and Kiln reads the file itself when it connects. An HTTPS server signed by a
 * test CA serves an ADD download: trusted with NODE_EXTRA_CA_CERTS or KILN_EXTRA_CA_CERTS,
 * refused without.
 */
describe('extra certificate authorities', () => {
  let store: { root: string; cleanup: () => Promise<void> };
  let work: ReturnType<typeof tempDir>;
  let server: https.Server;
  let url: string;
  let ctx: string;
  const ca = () => join(work.path, 'ca.pem');
  // Whatever the environment running the tests trusts, each build says what it trusts.
  const none = { NODE_EXTRA_CA_CERTS: '', KILN_EXTRA_CA_CERTS: '' };

  beforeAll(async () => {
    [store, work] = [await storeWithBase(), tempDir('kiln-tls-')];
    const p = (name: string) => join(work.path, name);
    const openssl = (args: string[]) => execFileSync('openssl', args, { stdio: 'pipe' });
    openssl(['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', p('ca.key'), '-out', ca(), '-days', '2', '-subj', '/CN=kiln-test-ca']);
    openssl(['req', '-newkey', 'rsa:2048', '-nodes', '-keyout', p('server.key'), '-out', p('server.csr'), '-subj', '/CN=127.0.0.1']);
    writeFileSync(p('san.ext'), 'subjectAltName=IP:127.0.0.1\n');
    openssl(['x509', '-req', '-in', p('server.csr'), '-CA', ca(), '-CAkey', p('ca.key'), '-CAcreateserial', '-out', p('server.pem'), '-days', '2', '-extfile', p('san.ext')]);
    server = https.createServer({ key: readFileSync(p('server.key')), cert: readFileSync(p('server.pem')) }, (req, res) => {
      if (req.url === '/hello.txt') res.end('over tls\n');
      else if (req.url === '/v2/') res.writeHead(200, { 'Content-Type': 'application/json' }).end('{}');
      else if (req.url?.startsWith('/v2/')) {
        res.writeHead(404, { 'Content-Type': 'application/json' }).end(JSON.stringify({ errors: [{ code: 'MANIFEST_UNKNOWN', message: 'manifest unknown' }] }));
      } else res.writeHead(404).end();
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    url = `https://127.0.0.1:${(server.address() as AddressInfo).port}/hello.txt`;
    ctx = p('ctx');
    execFileSync('mkdir', ['-p', ctx]);
    writeFileSync(join(ctx, 'Dockerfile'), `FROM test/base:1\nADD ${url} /hello.txt\n`);
  });

  afterAll(async () => {
    server?.closeAllConnections();
    await new Promise((r) => server?.close(r));
    await store?.cleanup();
    await work?.cleanup();
  });

  it('trusts the CA NODE_EXTRA_CA_CERTS names', async () => {
    const r = await kiln(store.root, ['build', '--no-cache', '-t', 'tls/ok:1', ctx], { env: { ...none, NODE_EXTRA_CA_CERTS: ca() } });
    expect(r.code, r.stderr).toBe(0);
    expect((await kiln(store.root, ['run', '--rm', 'tls/ok:1', 'cat', '/hello.txt'])).stdout).toBe('over tls\n');
  });

  it('bin/kiln starts Node without NODE_EXTRA_CA_CERTS and hands the file to Kiln', () => {
    // A stand-in `node` first on PATH shows what bin/kiln passes on.
    const bin = join(work.path, 'fake-node');
    execFileSync('mkdir', ['-p', bin]);
    writeFileSync(join(bin, 'node'), '#!/bin/sh\necho "node=${NODE_EXTRA_CA_CERTS-unset} kiln=${KILN_EXTRA_CA_CERTS-unset} args=$*"\n', { mode: 0o755 });
    const launch = (env: Record<string, string>) =>
      execFileSync(KILN, ['build', '.'], { env: { PATH: `${bin}:${process.env.PATH}`, ...env }, encoding: 'utf8' }).trim();
    expect(launch({ NODE_EXTRA_CA_CERTS: ca() })).toBe(`node=unset kiln=${ca()} args=${KILN}.cjs build .`);
    expect(launch({ NODE_EXTRA_CA_CERTS: ca(), KILN_EXTRA_CA_CERTS: '/kiln.pem' })).toBe(`node=unset kiln=/kiln.pem args=${KILN}.cjs build .`);
    expect(launch({})).toBe(`node=unset kiln=unset args=${KILN}.cjs build .`);
  });

  it('trusts the CA KILN_EXTRA_CA_CERTS names', async () => {
    const r = await kiln(store.root, ['build', '--no-cache', ctx], { env: { ...none, KILN_EXTRA_CA_CERTS: ca() } });
    expect(r.code, r.stderr).toBe(0);
  });

  it('speaks TLS to an insecure registry whose certificate no authority signed for it', async () => {
    // The answer to the manifest request (404, manifest unknown) comes over HTTPS: a failed
    // handshake would have made the probe fall back to plain HTTP, which this server does not speak.
    const host = new URL(url).host;
    const r = await kiln(store.root, ['pull', '--insecure-registry', host, `${host}/tls/none:1`], { env: none });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`Cannot fetch the manifest of "${host}/tls/none:1": MANIFEST_UNKNOWN: manifest unknown`);
  });

  it('refuses the server without its CA, and warns about a CA file it cannot read', async () => {
    const r = await kiln(store.root, ['build', '--no-cache', ctx], { env: none });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/Cannot download "https:\/\/127\.0\.0\.1:\d+\/hello\.txt": .*certificate/);
    const missing = await kiln(store.root, ['build', '--no-cache', ctx], { env: { ...none, NODE_EXTRA_CA_CERTS: join(work.path, 'nope.pem') } });
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain(`warning: Ignoring extra certificates from ${join(work.path, 'nope.pem')}`);
  });
});
