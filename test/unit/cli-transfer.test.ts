import { describe, expect, it } from 'vitest';
import { KilnError } from '../../cache/errors.js';
import type { CommandSpec } from '../../src/cli/args.js';
import { parseAddHosts, parseExtraBuildFlags, parseUlimits } from '../../src/cli/build-flags.js';
import { PlainPrinter } from '../../src/cli/plain.js';
import { TtyState, transferLine } from '../../src/cli/tty-state.js';
import { countTransfer } from '../../solver/progress.js';

const T0 = 1_000_000;
const A = `sha256:${'a'.repeat(64)}`;
const B = `sha256:${'b'.repeat(64)}`;
const SPEC: CommandSpec = { name: 'build', usage: 'kiln build', description: '', options: [], minPositionals: 0, maxPositionals: 1 };

describe('transfer progress', () => {
  it('plain prints a line when a blob starts and one when it is done, nothing between', () => {
    let out = '';
    const p = new PlainPrinter((s) => (out += s));
    p.handle({ type: 'vertex.start', id: 1, name: 'pulling r/app:1', time: T0 });
    p.handle({ type: 'transfer', id: 1, name: A, current: 0, total: 3_400_000, time: T0 });
    p.handle({ type: 'transfer', id: 1, name: B, current: 0, total: 620, time: T0 + 10 });
    p.handle({ type: 'transfer', id: 1, name: A, current: 1_000_000, total: 3_400_000, time: T0 + 100 });
    p.handle({ type: 'transfer', id: 1, name: B, current: 620, total: 620, time: T0 + 20, done: true });
    p.handle({ type: 'transfer', id: 1, name: A, current: 3_400_000, total: 3_400_000, time: T0 + 1200, done: true });
    p.handle({ type: 'vertex.done', id: 1, time: T0 + 1300, duration: 1300 });
    expect(out).toBe(
      [
        '#1 pulling r/app:1',
        `#1 ${A} 0B / 3.4MB`,
        `#1 ${B} 0B / 620B`,
        `#1 ${B} 620B / 620B 0.0s done`,
        `#1 ${A} 3.4MB / 3.4MB 1.2s done`,
        '#1 DONE 1.3s',
        '',
      ].join('\n'),
    );
  });

  it('the tty view shows each blob with its bytes and rate, the totals on the step line', () => {
    const s = new TtyState(T0, { running: 'Pulling', done: 'Pulled' });
    s.apply({ type: 'vertex.start', id: 1, name: 'pulling r/app:1', time: T0 });
    s.apply({ type: 'transfer', id: 1, name: A, current: 0, total: 4_000_000, time: T0 });
    s.apply({ type: 'transfer', id: 1, name: B, current: 0, total: 500, time: T0 });
    s.apply({ type: 'transfer', id: 1, name: A, current: 1_000_000, total: 4_000_000, time: T0 + 1000 });
    s.apply({ type: 'transfer', id: 1, name: B, current: 500, total: 500, time: T0 + 500, done: true });
    const live = s.live({ width: 100, rows: 20, now: T0 + 2000 }).map((l) => l.text);
    expect(live[0]).toBe('[+] Pulling 2.0s (0/1)');
    expect(live[1]).toMatch(/^=> #1 pulling r\/app:1 +1MB \/ 4MB 500kB\/s [⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏] 2\.0s$/);
    expect(live.slice(2)).toEqual([`   │ sha256:aaaaaaaaaaaa  1MB / 4MB  500kB/s`, `   │ sha256:bbbbbbbbbbbb  500B / 500B  done 0.5s`]);
    s.apply({ type: 'vertex.done', id: 1, time: T0 + 3000, duration: 3000 });
    s.close('ok', T0 + 3000);
    expect(s.live({ width: 100, rows: 20, now: T0 + 3000 }).map((l) => l.text)).toEqual(['[+] Pulled in 3.0s: 4MB']);
    expect(transferLine({ name: 'plain-name', current: 0, total: 10, start: T0, time: T0, done: false }, T0)).toBe('plain-name  0B / 10B  0B/s');
  });

  it('countTransfer reports the start, every so often, and the end with done', async () => {
    const seen: { current: number; done?: boolean }[] = [];
    async function* chunks() {
      for (let i = 0; i < 3; i++) yield new Uint8Array(10);
    }
    let total = 0;
    for await (const c of countTransfer(chunks(), (t) => seen.push({ current: t.current, done: t.done }), { name: A, total: 30 }, 0)) total += c.byteLength;
    expect(total).toBe(30);
    expect(seen).toEqual([{ current: 0, done: undefined }, { current: 10, done: undefined }, { current: 20, done: undefined }, { current: 30, done: undefined }, { current: 30, done: true }]);
    const chunked: number[] = [];
    for await (const _ of countTransfer(chunks(), (t) => chunked.push(t.current), { name: A, total: 60, offset: 30, last: false }, 1e9)) void _;
    expect(chunked).toEqual([]);
  });
});

describe('container options', () => {
  it('--add-host takes NAME:IP and NAME=IP, IPv4 and IPv6', () => {
    expect(parseAddHosts(['db:10.0.0.2', 'v6=fd00::1', 'br:[::1]'], SPEC)).toEqual([
      { host: 'db', ip: '10.0.0.2' },
      { host: 'v6', ip: 'fd00::1' },
      { host: 'br', ip: '::1' },
    ]);
    for (const bad of ['db', 'db:', 'db:example.com', ':1.2.3.4']) expect(() => parseAddHosts([bad], SPEC)).toThrow(/Invalid --add-host/);
  });

  it('--ulimit takes NAME=SOFT[:HARD]; a hard limit above this process\'s is refused', () => {
    expect(parseUlimits(['nofile=1024:2048', 'nproc=100', 'nofile=512'], SPEC)).toEqual([
      { name: 'nofile', soft: 512, hard: 512 },
      { name: 'nproc', soft: 100, hard: 100 },
    ]);
    expect(() => parseUlimits(['nofile=99999999'], SPEC)).toThrow(/Cannot set --ulimit nofile to 99999999: the hard limit of this machine is \d+/);
    try {
      parseUlimits(['nofile=-1'], SPEC);
      expect.unreachable();
    } catch (err) {
      expect((err as KilnError).exitCode).toBe(2);
    }
  });

  it('build defaults are set only when given, so that other builds keep their cache keys', () => {
    expect(parseExtraBuildFlags({ network: 'default' }, SPEC).runDefaults).toEqual({});
    expect(parseExtraBuildFlags({ network: 'default', 'shm-size': '64m' }, SPEC).runDefaults).toEqual({});
    // The host's network is another network than a step's own: another key.
    expect(parseExtraBuildFlags({ network: 'host' }, SPEC).runDefaults).toEqual({ network: 'host' });
    expect(parseExtraBuildFlags({ network: 'none', 'add-host': ['a:1.2.3.4'], ulimit: ['nofile=10:20'], 'shm-size': '1g' }, SPEC).runDefaults).toEqual({
      network: 'none',
      extraHosts: [{ host: 'a', ip: '1.2.3.4' }],
      ulimits: [{ name: 'nofile', soft: 10, hard: 20 }],
      shmSize: 1024 ** 3,
    });
  });
});
