/**
 * What crosses the wire between `kiln serve` and `kiln --host`: build options, the events of a
 * build stream, and errors in a form the client turns back into the same KilnError, so that it
 * prints the same report and exits with the same code as a local run.
 */
import { KilnError, VertexError, type SourceLocation } from '../../cache/errors.js';
import type { ProgressEvent } from '../../solver/progress.js';

export const API_VERSION = 'v1';

export interface WireBuildOptions {
  /** The Dockerfile's path inside the uploaded context; `dockerfileText` wins when given. */
  dockerfile?: string;
  dockerfileText?: string;
  buildArgs?: Record<string, string>;
  tags?: string[];
  target?: string;
  noCache?: boolean;
  noCacheFilter?: string[];
  /** `-o` specs the server runs itself: type=image and type=registry. */
  outputs?: string[];
  push?: boolean;
  insecureRegistries?: string[];
  labels?: Record<string, string>;
  /** Ask the registry for every base image even when the store has it. */
  pull?: boolean;
  /**
   * Settings of every RUN step as the flags gave them (`--network`, `--add-host`, `--ulimit`,
   * `--shm-size`): the server checks them against its own limits, as a local build would.
   */
  runFlags?: { network?: string; addHost?: string[]; ulimit?: string[]; shmSize?: string };
  /** Entitlements asked for with `--allow`; the server grants only those it was started to. */
  allow?: string[];
  /**
   * Secret values the client read (`--secret`), base64: held in memory only, handed to the
   * steps that mount them on their tmpfs, never written or logged by the server.
   */
  secrets?: { id: string; value: string }[];
  /** `--cache-to` / `--cache-from` specs the server runs itself: registry and inline types. */
  cacheTo?: string[];
  cacheFrom?: string[];
  /** How the context follows the options: a tar (the default) or a list of entries and missing contents. */
  context?: 'tar' | 'list';
}

/**
 * One entry of an incremental context upload (`"context": "list"` in the build options): the
 * second line of the request body holds `{"entries": ContextEntry[]}`, then a tar of the
 * contents the server said it lacks, each named by its checksum's hex.
 */
export interface ContextEntry {
  path: string;
  type: 'dir' | 'file' | 'symlink';
  mode: number;
  uid: number;
  gid: number;
  /** Seconds, as a tar header holds them. */
  mtime: number;
  size?: number;
  /** `sha256:…` of a file's content. */
  checksum?: string;
  /** A symbolic link's target. */
  target?: string;
  /** A file's or directory's extended attributes that travel with it (contentXattrs): name → base64. */
  xattrs?: Record<string, string>;
}

export interface WireError {
  code: string;
  message: string;
  hint?: string;
  location?: SourceLocation;
  exitCode?: number;
  vertex?: string;
  tail?: string[];
}

export type BuildStreamEvent =
  | ProgressEvent
  | { type: 'queued'; position: number }
  | { type: 'result'; image: string; manifest: string; tags: string[]; mediaType?: string; manifestSize?: number }
  | { type: 'error'; error: WireError };

/** Only a KilnError's own fields leave the server: never a stack or an internal message. */
export function toWireError(err: unknown): WireError {
  if (err instanceof VertexError) {
    return { code: err.code, message: err.message, hint: err.hint, location: err.location, exitCode: err.exitCode, vertex: err.vertex, tail: err.tail };
  }
  if (err instanceof KilnError) return { code: err.code, message: err.message, hint: err.hint, location: err.location, exitCode: err.exitCode };
  if (err instanceof Error && err.name === 'AbortError') return { code: 'CANCELLED', message: 'The build was cancelled', exitCode: 130 };
  return { code: 'INTERNAL', message: 'The build service failed unexpectedly', hint: 'The server log has the details' };
}

export function fromWireError(w: WireError): KilnError {
  const base = new KilnError(w.code, w.message, { hint: w.hint, location: w.location, exitCode: w.exitCode });
  if (w.vertex !== undefined) return new VertexError(w.vertex, base, { location: w.location, tail: w.tail });
  return base;
}
