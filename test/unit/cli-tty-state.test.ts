import { describe, expect, it } from 'vitest';
import { drawFinished, fit, stepLine, TtyState } from '../../src/cli/tty-state.js';

const T0 = 1_000_000;

function build(): TtyState {
  const s = new TtyState(T0);
  s.apply({ type: 'vertex.start', id: 1, name: '[internal] load build definition from Dockerfile', time: T0 });
  s.apply({ type: 'vertex.done', id: 1, time: T0, duration: 0 });
  s.apply({ type: 'vertex.start', id: 2, name: '[1/3] FROM test/base:1', kind: 'image', time: T0 + 10 });
  s.apply({ type: 'vertex.done', id: 2, time: T0 + 20, duration: 10 });
  s.apply({ type: 'vertex.start', id: 3, name: '[2/3] RUN echo x', kind: 'exec', time: T0 + 20 });
  s.apply({ type: 'vertex.cached', id: 3, name: '[2/3] RUN echo x', time: T0 + 20 });
  s.apply({ type: 'vertex.start', id: 4, name: '[3/3] RUN make', kind: 'exec', time: T0 + 100 });
  return s;
}

describe('the tty view model', () => {
  it('collapses finished steps to one line each, with CACHED or their time, in the order they finished', () => {
    const s = build();
    const lines = s.finished.map((f) => drawFinished(f, 60).text);
    expect(lines).toEqual([
      '=> #1 [internal] load build definition from Dockerfile  0.0s',
      '=> #2 [1/3] FROM test/base:1                            0.0s',
      '=> #3 [2/3] RUN echo x                                CACHED',
    ]);
    for (const l of lines) expect(l).toHaveLength(60);
  });

  it('shows running steps with a spinner, their time and the last lines of their output', () => {
    const s = build();
    s.apply({ type: 'vertex.log', id: 4, stream: 1, data: 'one\ntwo\nthr', time: T0 + 200 });
    s.apply({ type: 'vertex.log', id: 4, stream: 2, data: 'ee\x1b[31m!\x1b[0m\r\n', time: T0 + 300 });
    const live = s.live({ width: 50, rows: 20, now: T0 + 2100 });
    expect(live.map((l) => l.text)).toEqual([
      '[+] Building 2.1s (3/4), 1 cached',
      expect.stringMatching(/^=> #4 \[3\/3\] RUN make +[⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏] 2\.0s$/),
      '   │ one',
      '   │ two',
      '   │ three!',
    ]);
  });

  it('keeps the live area shorter than the terminal and every line within its width', () => {
    const s = new TtyState(T0);
    for (let id = 1; id <= 12; id++) {
      s.apply({ type: 'vertex.start', id, name: `[${id}/12] RUN ${'x'.repeat(100)}`, kind: 'exec', time: T0 });
      s.apply({ type: 'vertex.log', id, stream: 1, data: `${'y'.repeat(200)}\nz\n`, time: T0 });
    }
    for (const [width, rows] of [[20, 6], [40, 10], [80, 24], [200, 50]] as const) {
      const live = s.live({ width, rows, now: T0 + 500 });
      expect(live.length).toBeLessThan(rows);
      for (const l of live) expect(Array.from(l.text).length).toBeLessThanOrEqual(width);
    }
    expect(s.live({ width: 80, rows: 6, now: T0 }).at(-1)!.text).toMatch(/… and \d+ more running/);
  });

  it('ends with the total time and the cache hits of the Dockerfile steps', () => {
    const s = build();
    s.apply({ type: 'vertex.done', id: 4, time: T0 + 1500, duration: 1400 });
    s.close('ok', T0 + 3200);
    expect(s.live({ width: 80, rows: 24, now: T0 + 9999 })).toEqual([{ text: '[+] Built in 3.2s: 2 steps, 1 cached (50%)', tone: 'ok' }]);
  });

  it('marks steps still running as cancelled when the build is interrupted', () => {
    const s = build();
    s.close('cancelled', T0 + 1100);
    expect(drawFinished(s.finished.at(-1)!, 40)).toEqual({ text: '=> #4 [3/3] RUN make      CANCELLED 1.0s', tone: 'error' });
    expect(s.live({ width: 80, rows: 24, now: T0 }).at(0)!.text).toBe('[+] Cancelled in 1.1s: 2 steps, 1 cached (50%)');
  });

  it('cuts long text with an ellipsis and keeps the right column whole', () => {
    expect(fit('abcdef', 4)).toBe('abc…');
    expect(fit('abc', 4)).toBe('abc');
    expect(stepLine({ id: 12, label: 'build 3/9', instruction: 'RUN apt-get update && apt-get install -y curl' }, '12.3s', 34)).toBe('=> #12 [build 3/9] RUN apt-… 12.3s');
  });
});
