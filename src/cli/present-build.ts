import { readFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { basename, join, resolve } from 'node:path';
import { KilnError } from '../../cache/errors.js';
import { parseDigest } from '../../cache/digest.js';
import type { ProgressSink } from '../../solver/progress.js';
import { ExplainCollector } from '../../solver/explain.js';
import type { CommandIO } from './main.js';
import { openProgressView, commandProgressMode } from './progress.js';
import { writeMetadataFile } from './build-flags.js';

/** What the presentation needs of a built image, from this process or from a build service. */
export interface BuiltImage {
  id: string;
  manifestDigest: string;
  mediaType?: string;
  manifestSize: number;
}

/**
 * Runs a build, feeding its progress events; `notice` takes a line for the user (the build
 * service's queue position).
 */
export type BuildRunner = (h: { progress?: ProgressSink; notice: (line: string) => void }) => Promise<BuiltImage>;

/**
 * One presentation of a build, local or remote: the progress view in its mode, `--explain`,
 * `--iidfile`, `--metadata-file`, the image ID for `-q`, the failure report and the exit code.
 */
export async function presentBuild(run: BuildRunner, o: { options: Record<string, unknown>; io: CommandIO; tags: string[]; source: (name: string) => string | undefined }): Promise<number> {
  const { options, io, tags } = o;
  const mode = commandProgressMode(options);
  const quiet = mode === 'quiet';
  const report = options.explain === true ? new ExplainCollector() : undefined;
  const printReport = () => {
    if (!report) return;
    if (mode === 'rawjson') io.stderr(`${JSON.stringify({ type: 'explain', text: report.format() })}\n`);
    else if (!quiet) io.stderr(`\n${report.format()}`);
  };
  const view = await openProgressView(mode, process.stderr, { source: o.source });
  try {
    const result = await run({
      progress:
        !quiet || report
          ? (e) => {
              view.handle(e);
              report?.handle(e);
            }
          : undefined,
      notice: (line) => {
        if (!quiet && mode !== 'rawjson') io.stderr(line);
      },
    });
    if (options.iidfile) await writeFile(options.iidfile as string, result.id);
    if (options['metadata-file']) {
      const image = { configDigest: parseDigest(result.id), manifestDigest: parseDigest(result.manifestDigest), manifest: { mediaType: result.mediaType } };
      await writeMetadataFile(options['metadata-file'] as string, image, { tags, manifestSize: result.manifestSize });
    }
    await view.succeed({ imageId: result.id, tags });
    printReport();
    if (quiet) io.stdout(`${result.id}\n`);
    return 0;
  } catch (err) {
    // The view reports the failure in its own form (a paragraph, or a JSON event in rawjson).
    await view.fail(err);
    printReport();
    return err instanceof KilnError ? err.exitCode : 1;
  }
}

/** The Dockerfile's text by the name error locations give it, read only when a step failed. */
export function dockerfileSource(context: string, file: string | undefined, stdinText: string | undefined): (name: string) => string | undefined {
  if (stdinText !== undefined) return (name) => (name === 'Dockerfile' ? stdinText : undefined);
  const path = resolve(file ?? join(context, 'Dockerfile'));
  return (name) => {
    if (name !== basename(path)) return undefined;
    try {
      return readFileSync(path, 'utf8');
    } catch (err) {
      // Changed or gone since the build read it: the report goes without the excerpt.
      if (err instanceof Error) return undefined;
      throw err;
    }
  };
}
