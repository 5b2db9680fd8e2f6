import type * as InkModule from 'ink';
import type * as ReactModule from 'react';
import type { ProgressEvent } from '../../solver/progress.js';
import { isCancelled, ttyEpilogue, type BuildOutcome, type ProgressView } from './progress.js';
import type { ReportOptions } from './report.js';
import { drawFinished, TtyState, type Line } from './tty-state.js';

/**
 * The live terminal view, drawn with ink. This module is the only one that loads ink and react,
 * and it is loaded only when this view is drawn: a cached build in a script never pays for them.
 */

interface Ui {
  ink: typeof InkModule;
  react: typeof ReactModule;
}

/**
 * ink and react as one pre-bundled file when the build made it (scripts/bundle-ink.mjs): read
 * from ~80 small modules they take twice as long to load. The packages themselves otherwise.
 */
async function loadUi(): Promise<Ui> {
  try {
    return (await import(new URL('../../vendor/ink.js', import.meta.url).href)) as Ui;
  } catch (err) {
    if ((err as { code?: string }).code !== 'ERR_MODULE_NOT_FOUND') throw err;
  }
  const [ink, react] = await Promise.all([import('ink'), import('react')]);
  return { ink, react };
}

const TONES: Record<NonNullable<Line['tone']>, Record<string, unknown>> = {
  dim: { dimColor: true },
  error: { color: 'red' },
  ok: { color: 'green' },
  warn: { color: 'yellow' },
  bold: { bold: true },
};

function makeView({ ink, react }: Ui) {
  const { Box, Static, Text } = ink;
  const h = react.createElement;
  const text = (line: Line, key: number | string) => h(Text, { key, wrap: 'truncate-end', ...(line.tone ? TONES[line.tone] : {}) }, line.text);
  return function BuildView({ state, stream }: { state: TtyState; stream: NodeJS.WriteStream }) {
    const [, setTick] = react.useState(0);
    react.useEffect(() => {
      // Redraws at a steady pace rather than per event: a step printing thousands of lines costs
      // the terminal ten frames a second, not thousands.
      const timer = setInterval(() => setTick((n) => n + 1), 100);
      return () => clearInterval(timer);
    }, []);
    // One column short of the edge: a line as wide as the terminal wraps in some of them.
    const width = Math.max(20, (stream.columns || 80) - 1);
    const rows = Math.max(4, stream.rows || 24);
    const items = state.finished.map((item, i) => ({ i, line: drawFinished(item, width) }));
    const live = state.live({ width, rows, now: Date.now() });
    return h(
      react.Fragment,
      null,
      h(Static<{ i: number; line: Line }>, { items, children: (item) => text(item.line, item.i) }),
      h(Box, { flexDirection: 'column' }, ...live.map((l, i) => text(l, i))),
    );
  };
}

export async function openTtyView(stream: NodeJS.WriteStream, report: ReportOptions, state = new TtyState(Date.now())): Promise<ProgressView> {
  const ui = await loadUi();
  const BuildView = makeView(ui);
  const h = ui.react.createElement;
  const instance = ui.ink.render(h(BuildView, { state, stream }), {
    stdout: stream,
    stderr: stream,
    // Ctrl-C stays a signal for the process (main.ts cancels the build on it); ink must not
    // read the keyboard or exit on its own.
    exitOnCtrlC: false,
    patchConsole: false,
    maxFps: 20,
  });
  const stop = async (outcome: 'ok' | 'failed' | 'cancelled') => {
    state.close(outcome, Date.now());
    instance.rerender(h(BuildView, { state, stream }));
    instance.unmount();
    await instance.waitUntilExit();
  };
  return {
    handle(e: ProgressEvent) {
      state.apply(e);
    },
    async succeed(result: BuildOutcome) {
      await stop('ok');
      stream.write(ttyEpilogue(state, { result }, report));
    },
    async fail(err: unknown) {
      await stop(isCancelled(err) ? 'cancelled' : 'failed');
      stream.write(ttyEpilogue(state, { err }, report));
    },
  };
}
