import { execFileSync } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { KILN, kiln, kilnContainers, mountsUnder, storeWithBase, tempDir } from '../helpers/kiln.js';
import { startRegistry } from '../helpers/registry.js';

/**
 * A real terminal: kiln runs in a detached tmux session and the test reads the screen. Each has a
 * tmux server of its own, on a socket of its own (-S): a session started while the last one's
 * shared server was exiting failed with "server exited unexpectedly".
 */
class Terminal {
  readonly name = `kiln-tty-${process.pid}-${Math.random().toString(36).slice(2, 8)}`;
  readonly socket = join(tmpdir(), `${this.name}.sock`);

  constructor(
    readonly cols: number,
    readonly rows: number,
  ) {}

  start(command: string): void {
    // The pane stays after kiln exits, showing its exit code, until the test kills the session.
    execFileSync('tmux', ['-S', this.socket, 'new-session', '-d', '-s', this.name, '-x', String(this.cols), '-y', String(this.rows), `${command}; echo EXIT=$?; sleep 600`]);
  }

  screen(): string {
    return execFileSync('tmux', ['-S', this.socket, 'capture-pane', '-p', '-t', this.name], { encoding: 'utf8' });
  }

  lines(): string[] {
    return this.screen().split('\n').map((l) => l.trimEnd());
  }

  keys(...keys: string[]): void {
    execFileSync('tmux', ['-S', this.socket, 'send-keys', '-t', this.name, ...keys]);
  }

  async waitFor(pattern: RegExp, timeoutMs = 30_000): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const s = this.screen();
      if (pattern.test(s)) return s;
      if (Date.now() > deadline) throw new Error(`The screen never showed ${pattern}; it shows:\n${s}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  kill(): void {
    try {
      execFileSync('tmux', ['-S', this.socket, 'kill-server'], { stdio: 'ignore' });
    } catch {
      // The server is gone already: nothing to clean.
    }
    rmSync(this.socket, { force: true });
  }
}

const SPINNER = '[⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏]';

describe('the tty progress view in a real terminal', () => {
  let root: string;
  let cleanupStore: () => Promise<void>;
  let work: { path: string; cleanup: () => Promise<void> };
  let ctx: string;
  const terminals: Terminal[] = [];

  const run = (args: string, cols = 100, rows = 30) => {
    const t = new Terminal(cols, rows);
    terminals.push(t);
    t.start(`env -u CI KILN_ROOT='${root}' '${KILN}' ${args}`);
    return t;
  };

  beforeAll(async () => {
    ({ root, cleanup: cleanupStore } = await storeWithBase());
    work = tempDir('kiln-tty-');
    ctx = join(work.path, 'ctx');
    mkdirSync(ctx);
    writeFileSync(join(ctx, 'Dockerfile'), 'FROM test/base:1\nRUN for i in 1 2 3 4 5 6; do echo line-$i; sleep 0.4; done\nRUN echo second > /second\n');
    writeFileSync(join(ctx, 'Dockerfile.fail'), 'FROM test/base:1\nRUN echo first\nRUN echo out-42 >&2 && false\nCMD ["sh"]\n');
    writeFileSync(join(ctx, 'Dockerfile.sleep'), 'FROM test/base:1\nRUN echo started && sleep 60\n');
  });
  afterEach(() => {
    for (const t of terminals.splice(0)) t.kill();
  });
  afterAll(async () => {
    await work.cleanup();
    await cleanupStore();
  });

  it('shows running steps live, then one line per step, the total time and the cache hits', async () => {
    const t = run(`build --progress tty -t test/tty:1 ${ctx}`);
    // During: the running step with spinner and time, and its latest output under it.
    const during = await t.waitFor(/│ line-3/);
    expect(during).toMatch(/^\[\+\] Building \d+\.\ds \(\d+\/\d+\)/m);
    expect(during).toMatch(new RegExp(`^=> #4 \\[2/3\\] RUN for i in 1 2 3 4 5 6; do echo line-\\$i; sleep 0\\.4; done +${SPINNER} \\d+\\.\\ds$`, 'm'));
    expect(during).toMatch(/^=> #3 \[1\/3\] FROM test\/base:1 +0\.\ds$/m);
    // After: the output is gone, each step is one line, a summary and the image ID follow.
    const after = await t.waitFor(/EXIT=\d+/);
    expect(after).toContain('EXIT=0');
    const lines = t.lines();
    expect(lines.filter((l) => l.startsWith('=> #'))).toEqual([
      expect.stringMatching(/^=> #1 \[internal\] load build definition from Dockerfile +0\.\ds$/),
      expect.stringMatching(/^=> #2 \[internal\] load \.dockerignore +0\.\ds$/),
      expect.stringMatching(/^=> #3 \[1\/3\] FROM test\/base:1 +0\.\ds$/),
      expect.stringMatching(/^=> #4 \[2\/3\] RUN for i in .* +[23]\.\ds$/),
      expect.stringMatching(/^=> #5 \[3\/3\] RUN echo second > \/second +\d\.\ds$/),
      expect.stringMatching(/^=> #6 exporting to image +\d\.\ds$/),
    ]);
    // Step lines fill the width exactly (one column spare), with the time right-aligned.
    for (const l of lines.filter((x) => x.startsWith('=> #'))) expect(Array.from(l)).toHaveLength(99);
    expect(after).not.toContain('│');
    expect(after).not.toContain('[+] Building');
    expect(after).toMatch(/^\[\+\] Built in \d+\.\ds: 2 steps, 0 cached \(0%\)$/m);
    expect(after).toMatch(/^Built sha256:[0-9a-f]{64} as test\/tty:1$/m);

    const again = run(`build ${ctx}`);
    const cached = await again.waitFor(/EXIT=\d+/);
    expect(cached).toContain('EXIT=0');
    expect(cached).toMatch(/^=> #4 \[2\/3\] RUN for i in .* +CACHED$/m);
    expect(cached).toMatch(/^=> #5 \[3\/3\] RUN echo second > \/second +CACHED$/m);
    expect(cached).toMatch(/^\[\+\] Built in \d+\.\ds: 2 steps, 2 cached \(100%\)$/m);
  });

  it('fits a narrow, short terminal without wrapping or leftover frames', async () => {
    const t = run(`build --no-cache ${ctx}`, 40, 8);
    const during = await t.waitFor(/│ line-2/);
    for (const l of during.split('\n')) expect(Array.from(l.trimEnd()).length).toBeLessThanOrEqual(39);
    const after = await t.waitFor(/EXIT=\d+/);
    expect(after).toContain('EXIT=0');
    expect(after).not.toContain('[+] Building');
    // Every step line is cut to the width with an ellipsis and keeps its time: no wrapped halves.
    const steps = after.split('\n').filter((l) => l.startsWith('=> #'));
    expect(steps.length).toBeGreaterThanOrEqual(3);
    for (const l of steps) expect(Array.from(l.trimEnd())).toHaveLength(39);
    expect(after).toMatch(/^=> #4 \[2\/3\] RUN for i in 1 2 3 4 … [23]\.\ds$/m);
    expect(after.split('\n').filter((l) => l.startsWith('=> #4 '))).toHaveLength(1);
  });

  it('a failing build ends with the failing step, the Dockerfile around it and its output', async () => {
    const t = run(`build -f ${join(ctx, 'Dockerfile.fail')} ${ctx}`);
    const after = await t.waitFor(/EXIT=\d+/);
    expect(after).toContain('EXIT=1');
    expect(after).toMatch(/^=> #5 \[3\/3\] RUN echo out-42 >&2 && false +ERROR \d\.\ds$/m);
    expect(after).toMatch(/^\[\+\] Failed in \d+\.\ds: 2 steps, 0 cached \(0%\)$/m);
    expect(after).toContain(
      [
        'error: step [3/3] RUN echo out-42 >&2 && false failed at Dockerfile.fail:3',
        '--------------------',
        ' 1 |     FROM test/base:1',
        ' 2 |     RUN echo first',
        ' 3 | >>> RUN echo out-42 >&2 && false',
        ' 4 |     CMD ["sh"]',
        '--------------------',
        'last lines of its output:',
        '  out-42',
      ].join('\n'),
    );
  });

  it('Ctrl-C cancels the build cleanly: exit 130, the step marked, nothing left running or mounted', async () => {
    const t = run(`build -f ${join(ctx, 'Dockerfile.sleep')} ${ctx}`);
    await t.waitFor(/│ started/);
    t.keys('C-c');
    const after = await t.waitFor(/EXIT=\d+/, 15_000);
    expect(after).toContain('EXIT=130');
    expect(after).toMatch(/^=> #4 \[2\/2\] RUN echo started && sleep 60 +CANCELLED \d+\.\ds$/m);
    expect(after).toMatch(/^\[\+\] Cancelled in \d+\.\ds/m);
    expect(after).toContain('error: Interrupted by SIGINT: the build was cancelled');
    expect(kilnContainers(root)).toEqual([]);
    expect(mountsUnder(root)).toEqual([]);
  });

  it('a pull draws its layers in the view and ends with what it moved; docker\'s per-layer lines stay out of it', async () => {
    const reg = await startRegistry();
    const empty = tempDir('kiln-store-');
    try {
      const name = `${reg.host}/acc/tty:1`;
      expect((await kiln(root, ['tag', 'test/base:1', name])).code).toBe(0);
      const pushed = await kiln(root, ['push', '-q', name]);
      expect(pushed.code, pushed.stderr).toBe(0);
      const t = new Terminal(100, 30);
      terminals.push(t);
      t.start(`env -u CI KILN_ROOT='${empty.path}' '${KILN}' pull ${name}`);
      const after = await t.waitFor(/EXIT=\d+/);
      expect(after).toContain('EXIT=0');
      expect(after).toMatch(new RegExp(`^=> #1 pulling ${name.replace(/[.:/]/g, '\\$&')} +\\d+\\.\\ds$`, 'm'));
      expect(after).toMatch(/^\[\+\] Pulled in \d+\.\ds: \d+(\.\d+)?[kM]B$/m);
      expect(after).toContain(`Pulled ${name}`);
      expect(after).not.toContain('Pull complete');
    } finally {
      await empty.cleanup();
      await reg.stop();
    }
  });
});
