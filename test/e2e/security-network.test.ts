import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { networkInterfaces } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BridgeNetwork, GATEWAY } from '../../src/executor/network.js';
import { KILN, kiln, kilnContainers, storeWithBase, tempDir } from '../helpers/kiln.js';
import { startServe, type Served } from './serve-helpers.js';

/**
 * The default network of RUN steps: a namespace of their own with outbound access through NAT,
 * and no way to the host. "Outside" is a namespace this test makes, routed from the host, with an
 * HTTP server in it; the host's own server listens on every address.
 */
describe('the network of RUN steps', () => {
  let store: { root: string; cleanup: () => Promise<void> };
  let work: ReturnType<typeof tempDir>;
  let hostServer: http.Server;
  let hostPort = 0;
  let otherPort = 0;
  let other: http.Server;
  const outside = { ns: `kt-${process.pid}`, veth: `ktv${process.pid % 100000}`, host: '', peer: '', port: 18000 + (process.pid % 1000) };
  let outsideServer: ChildProcess | undefined;
  let redirector: ChildProcess | undefined;
  const hostAddress = Object.values(networkInterfaces()).flat().find((a) => a && a.family === 'IPv4' && !a.internal)?.address;

  beforeAll(async () => {
    [store, work] = [await storeWithBase(), tempDir('kiln-net-')];
    const listen = async (s: http.Server) => {
      await new Promise<void>((r) => s.listen(0, '0.0.0.0', r));
      return (s.address() as AddressInfo).port;
    };
    hostServer = http.createServer((_, res) => res.end('host-secret\n'));
    other = http.createServer((_, res) => res.end('other-port\n'));
    [hostPort, otherPort] = [await listen(hostServer), await listen(other)];
    // 198.18.0.0/15 is for tests of networks (RFC 2544): no real host has it.
    const n = process.pid % 250;
    [outside.host, outside.peer] = [`198.18.${n}.1`, `198.18.${n}.2`];
    const ip = (...args: string[]) => execFileSync('ip', args);
    ip('netns', 'add', outside.ns);
    ip('link', 'add', outside.veth, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', outside.ns);
    ip('addr', 'add', `${outside.host}/30`, 'dev', outside.veth);
    ip('link', 'set', outside.veth, 'up');
    ip('-n', outside.ns, 'addr', 'add', `${outside.peer}/30`, 'dev', 'eth0');
    ip('-n', outside.ns, 'link', 'set', 'eth0', 'up');
    ip('-n', outside.ns, 'link', 'set', 'lo', 'up');
    ip('-n', outside.ns, 'route', 'add', 'default', 'via', outside.host);
    mkdirSync(join(work.path, 'www'));
    writeFileSync(join(work.path, 'www', 'index.html'), 'outside-world\n');
    outsideServer = spawn('ip', ['netns', 'exec', outside.ns, 'python3', '-m', 'http.server', '--bind', outside.peer, String(outside.port)], { cwd: join(work.path, 'www'), stdio: 'ignore' });
    // Outside too: a server that sends every request to the host's loopback.
    const redirect = [
      'import http.server',
      'class H(http.server.BaseHTTPRequestHandler):',
      '  def do_GET(self):',
      `    self.send_response(302); self.send_header("Location", "http://127.0.0.1:${hostPort}/"); self.end_headers()`,
      `http.server.HTTPServer(("${outside.peer}", ${outside.port + 1}), H).serve_forever()`,
    ].join('\n');
    redirector = spawn('ip', ['netns', 'exec', outside.ns, 'python3', '-c', redirect], { stdio: 'ignore' });
    for (const port of [outside.port, outside.port + 1]) {
      for (let i = 0; i < 50; i++) {
        const r = spawnSyncOk('ip', ['netns', 'exec', outside.ns, 'python3', '-c', `import socket; socket.create_connection(("${outside.peer}", ${port}), 1)`]);
        if (r) break;
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  });

  afterAll(async () => {
    outsideServer?.kill('SIGKILL');
    redirector?.kill('SIGKILL');
    spawnSyncOk('ip', ['netns', 'delete', outside.ns]);
    await new Promise((r) => hostServer?.close(r));
    await new Promise((r) => other?.close(r));
    await store?.cleanup();
    await work?.cleanup();
  });

  /** A RUN that tries each address and prints "reached A:P" or "blocked A:P". */
  const probe = (targets: string[]) =>
    `RUN for t in ${targets.join(' ')}; do if printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 \${t%:*} \${t#*:} 2>/dev/null | grep -q 200; then echo "reached $t"; else echo "blocked $t"; fi; done`;

  function context(name: string, dockerfile: string): string {
    const ctx = join(work.path, name);
    mkdirSync(ctx, { recursive: true });
    writeFileSync(join(ctx, 'Dockerfile'), dockerfile);
    return ctx;
  }

  it('a RUN has its own interface and route, reaches hosts outside through NAT, and not the host', async () => {
    const targets = [`${outside.peer}:${outside.port}`, `127.0.0.1:${hostPort}`, `${GATEWAY}:${hostPort}`, ...(hostAddress ? [`${hostAddress}:${hostPort}`] : [])];
    const ctx = context('isolated', `FROM test/base:1\nRUN ip -4 -o addr show eth0; ip route; grep gw /etc/hosts\n${probe(targets)}\n`);
    const r = await kiln(store.root, ['build', '--progress', 'plain', '--no-cache', '--add-host', 'gw:host-gateway', ctx]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/eth0\s+inet 10\.89\.\d+\.\d+\/16/);
    expect(r.stderr).toContain(`default via ${GATEWAY} dev eth0`);
    // The bridge has an address of its own: one taken from its ports would change as steps come
    // and go, and a namespace used again would send to the old one.
    expect(readFileSync('/sys/class/net/kiln0/address', 'utf8').trim()).toBe('02:42:0a:59:00:01');
    // docker's host-gateway names the host on the steps' bridge.
    expect(r.stderr).toContain(`${GATEWAY}\tgw`);
    expect(r.stderr).toContain(`reached ${outside.peer}:${outside.port}`);
    expect(r.stderr).toContain(`blocked 127.0.0.1:${hostPort}`);
    expect(r.stderr).toContain(`blocked ${GATEWAY}:${hostPort}`);
    if (hostAddress) expect(r.stderr).toContain(`blocked ${hostAddress}:${hostPort}`);
    expect(r.stderr).not.toContain('host-secret');
  });

  it('a local build may ask for the host network; RUN then sees the host and its loopback', async () => {
    const ctx = context('host', `FROM test/base:1\nRUN --network=host wget -q -O- http://127.0.0.1:${hostPort}/\n`);
    const r = await kiln(store.root, ['build', '--progress', 'plain', '--no-cache', ctx]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toContain('host-secret');
    const flag = context('host-flag', `FROM test/base:1\nRUN wget -q -O- http://127.0.0.1:${hostPort}/\n`);
    const f = await kiln(store.root, ['build', '--progress', 'plain', '--no-cache', '--network', 'host', flag]);
    expect(f.code, f.stderr).toBe(0);
    expect(f.stderr).toContain('host-secret');
  });

  it('steps in two namespaces cannot reach each other, and a namespace is removed once given back', async () => {
    const net = new BridgeNetwork();
    const [a, b] = [await net.acquire(), await net.acquire()];
    const name = (l: { nsPath: string }) => l.nsPath.split('/').at(-1)!;
    const listener = spawn('ip', ['netns', 'exec', name(a), 'busybox', 'nc', '-l', '-p', '7777'], { stdio: 'ignore' });
    try {
      await new Promise((r) => setTimeout(r, 300));
      // Each reaches the world outside, and not the other.
      expect(spawnSyncOk('ip', ['netns', 'exec', name(b), 'busybox', 'ping', '-c', '1', '-W', '2', outside.peer])).toBe(true);
      expect(spawnSyncOk('ip', ['netns', 'exec', name(b), 'busybox', 'ping', '-c', '1', '-W', '1', a.address])).toBe(false);
      expect(spawnSyncOk('ip', ['netns', 'exec', name(b), 'busybox', 'nc', '-w', '2', a.address, '7777'], 'x')).toBe(false);
    } finally {
      listener.kill('SIGKILL');
    }
    a.release();
    b.release();
    await net.close();
    expect(readdirSync('/run/netns')).not.toContain(name(a));
    expect(readdirSync('/run/netns')).not.toContain(name(b));
  });

  it('a build killed in a RUN leaves its namespace to the next process, which removes it', async () => {
    const ctx = context('killed', 'FROM test/base:1\nRUN sleep 60\n');
    const victim = spawn(KILN, ['build', '-q', '--no-cache', ctx], { env: { ...process.env, KILN_ROOT: store.root }, stdio: 'ignore', detached: true });
    const exited = new Promise((r) => victim.on('close', r));
    let held: string | undefined;
    for (let i = 0; i < 100 && !held; i++) {
      await new Promise((r) => setTimeout(r, 100));
      held = readdirSync('/run/kiln/net').find((f) => readFileSync(join('/run/kiln/net', f), 'utf8').startsWith(`${victim.pid} `));
    }
    expect(held).toBeDefined();
    process.kill(-victim.pid!, 'SIGKILL');
    await exited;
    expect(readdirSync('/run/netns')).toContain(`kiln-${held}`);
    const r = await kiln(store.root, ['build', '-q', context('after', 'FROM test/base:1\nRUN true\n')]);
    expect(r.code, r.stderr).toBe(0);
    expect(readdirSync('/run/netns')).not.toContain(`kiln-${held}`);
    expect(readdirSync('/run/kiln/net')).not.toContain(held);
    expect(kilnContainers(store.root)).toEqual([]);
  });

  describe('through kiln serve', () => {
    let served: Served;
    let open: Served | undefined;

    beforeAll(async () => {
      served = await startServe(store.root, join(work.path, 'plain.sock'));
    });

    afterAll(async () => {
      await served?.stop();
      await open?.stop();
    });

    it('refuses the host network without the network.host entitlement, in a flag or in a RUN', async () => {
      const host = ['--host', `unix://${served.socket}`];
      const ctx = context('srv-host', `FROM test/base:1\nRUN --network=host wget -q -O- http://127.0.0.1:${hostPort}/\n`);
      const r = await kiln(store.root, [...host, 'build', '--progress', 'plain', '--no-cache', ctx]);
      expect(r.code).toBe(1);
      expect(r.stderr).toContain('RUN --network=host needs the "network.host" entitlement');
      expect(r.stderr).not.toContain('host-secret');
      const flag = context('srv-flag', `FROM test/base:1\nRUN wget -q -O- http://127.0.0.1:${hostPort}/\n`);
      const f = await kiln(store.root, [...host, 'build', '--network', 'host', flag]);
      expect(f.code).toBe(1);
      expect(f.stderr).toContain('The build service does not grant "network.host", which --network host needs');
      const allow = await kiln(store.root, [...host, 'build', '--allow', 'network.host', flag]);
      expect(allow.code).toBe(1);
      expect(allow.stderr).toContain('The build service does not grant "network.host"');
      const run = await kiln(store.root, [...host, 'run', '--network', 'host', 'test/base:1', 'true']);
      // As docker run's own failures (not the container's): 125.
      expect(run.code).toBe(125);
      expect(run.stderr).toContain('"network.host"');
      // The default network works, and is the isolated one.
      const ok = await kiln(store.root, [...host, 'build', '--progress', 'plain', '--no-cache', context('srv-default', `FROM test/base:1\n${probe([`${GATEWAY}:${hostPort}`, `${outside.peer}:${outside.port}`])}\n`)]);
      expect(ok.code, ok.stderr).toBe(0);
      expect(ok.stderr).toContain(`blocked ${GATEWAY}:${hostPort}`);
      expect(ok.stderr).toContain(`reached ${outside.peer}:${outside.port}`);
    });

    it("ADD of a URL or git repository of the server's own host is refused; the world outside is not", async () => {
      const host = ['--host', `unix://${served.socket}`];
      const build = (name: string, line: string) => kiln(store.root, [...host, 'build', '--progress', 'plain', '--no-cache', context(name, `FROM test/base:1\n${line}\n`)]);
      for (const url of [`http://127.0.0.1:${hostPort}/x`, `http://localhost:${hostPort}/x`, `http://[::1]:${hostPort}/x`, `http://${GATEWAY}:${hostPort}/x`, ...(hostAddress ? [`http://${hostAddress}:${hostPort}/x`] : [])]) {
        const r = await build(`add-${url.length}`, `ADD ${url} /x`);
        expect(r.code, url).toBe(1);
        expect(r.stderr, url).toMatch(/is the build service's own host \(.+\), which a build's sources may not reach/);
        expect(r.stderr).not.toContain('host-secret');
      }
      const hop = await build('add-redirect', `ADD http://${outside.peer}:${outside.port + 1}/x /x`);
      expect(hop.code).toBe(1);
      expect(hop.stderr).toContain('"127.0.0.1" is the build service\'s own host');
      const ok = await build('add-outside', `ADD http://${outside.peer}:${outside.port}/index.html /got\nRUN cat /got`);
      expect(ok.code, ok.stderr).toBe(0);
      expect(ok.stderr).toContain('outside-world');
      const repo = join(work.path, 'repo.git');
      execFileSync('git', ['init', '-q', '--bare', repo]);
      const git = await build('add-git', `ADD file://${repo} /src`);
      expect(git.code).toBe(1);
      expect(git.stderr).toContain(`ADD of "file://${repo}" would read a git repository on the build service's own disk`);
      expect(git.stderr).toMatch(/Dockerfile:2/);
      const ssh = await build('add-git-host', `ADD git://127.0.0.1:${hostPort}/repo.git /src`);
      expect(ssh.code).toBe(1);
      expect(ssh.stderr).toContain('"127.0.0.1" is the build service\'s own host');
      // A local build is the host's own user's: it may.
      const local = await kiln(store.root, ['build', '--progress', 'plain', '--no-cache', context('add-local', `FROM test/base:1\nADD http://127.0.0.1:${hostPort}/x /x\nRUN cat /x\n`)]);
      expect(local.code, local.stderr).toBe(0);
      expect(local.stderr).toContain('host-secret');
    });

    it('with --allow-entitlement network.host and --allow-host-port, grants exactly what the operator opened', async () => {
      open = await startServe(store.root, join(work.path, 'open.sock'), ['--allow-entitlement', 'network.host', '--allow-host-port', String(hostPort)]);
      const host = ['--host', `unix://${open.socket}`];
      const ctx = context('open-default', `FROM test/base:1\n${probe([`${GATEWAY}:${hostPort}`, `${GATEWAY}:${otherPort}`])}\n`);
      const r = await kiln(store.root, [...host, 'build', '--progress', 'plain', '--no-cache', ctx]);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stderr).toContain(`reached ${GATEWAY}:${hostPort}`);
      expect(r.stderr).toContain(`blocked ${GATEWAY}:${otherPort}`);
      const h = await kiln(store.root, [...host, 'build', '--progress', 'plain', '--no-cache', '--allow', 'network.host', context('open-host', `FROM test/base:1\nRUN --network=host wget -q -O- http://127.0.0.1:${otherPort}/\n`)]);
      expect(h.code, h.stderr).toBe(0);
      expect(h.stderr).toContain('other-port');
      const info = await kiln(store.root, [...host, 'info']);
      expect(info.stdout).toContain(`Step network:     kiln0 10.89.0.0/16 (NAT outside; the host at ${GATEWAY} refused but for ports ${hostPort})`);
      // The port closes with the server that opened it.
      expect(await open.stop()).toBe(0);
      open = undefined;
      const after = await kiln(store.root, ['build', '--progress', 'plain', '--no-cache', context('closed-again', `FROM test/base:1\n${probe([`${GATEWAY}:${hostPort}`])}\n`)]);
      expect(after.code, after.stderr).toBe(0);
      expect(after.stderr).toContain(`blocked ${GATEWAY}:${hostPort}`);
    });

    it('a server killed with ports open leaves them to the next Kiln process, which closes them', async () => {
      const doomed = await startServe(store.root, join(work.path, 'doomed.sock'), ['--allow-host-port', String(otherPort)]);
      expect(execFileSync('nft', ['list', 'set', 'inet', 'kiln', 'host_ports'], { encoding: 'utf8' })).toContain(String(otherPort));
      await doomed.crash();
      const r = await kiln(store.root, ['build', '--progress', 'plain', '--no-cache', context('after-crash', `FROM test/base:1\n${probe([`${GATEWAY}:${otherPort}`])}\n`)]);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stderr).toContain(`blocked ${GATEWAY}:${otherPort}`);
      expect(execFileSync('nft', ['list', 'set', 'inet', 'kiln', 'host_ports'], { encoding: 'utf8' })).not.toContain(String(otherPort));
    });
  });
});

function spawnSyncOk(cmd: string, args: string[], input?: string): boolean {
  try {
    execFileSync(cmd, args, { stdio: [input === undefined ? 'ignore' : 'pipe', 'ignore', 'ignore'], input, timeout: 10_000 });
    return true;
  } catch {
    return false;
  }
}
