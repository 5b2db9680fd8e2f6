import type { BuildDefinition, ContextOp, Digest, ExecOp, ImageConfig, Platform } from '../solver/graph.js';

/** What a frontend needs from base images, supplied by the caller: the frontend does no I/O. */
export interface ResolvedImage {
  /** The reference as resolved, for display. */
  ref: string;
  manifest: Digest;
  config: ImageConfig;
}

export interface ImageResolver {
  resolve(ref: string, options: { platform: Platform; signal?: AbortSignal }): Promise<ResolvedImage>;
}

export interface FrontendRequest {
  /** The Dockerfile's text and the name it is shown under (`Dockerfile`, `Dockerfile.dev`). */
  dockerfile: string;
  file: string;
  buildArgs: Readonly<Record<string, string>>;
  target?: string;
  context: Omit<ContextOp, 'kind'>;
  platform: Platform;
  resolver: ImageResolver;
  signal?: AbortSignal;
  /** Compile every stage for its warnings; the caller builds nothing (`kiln build --check`). */
  check?: boolean;
  /** What every RUN step gets unless its own flags say otherwise. */
  runDefaults?: RunDefaults;
  /**
   * Whether sources on the building machine (a `file://` git repository) may be read: false for
   * a build service's clients, whose Dockerfile must not reach the server's files.
   */
  hostSources?: boolean;
}

/** The build's settings for RUN steps (`kiln build --network --add-host --ulimit --shm-size`). */
export type RunDefaults = Partial<Pick<ExecOp, 'network' | 'extraHosts' | 'ulimits' | 'shmSize'>>;

/** A frontend turns a request into a graph. */
export interface Frontend {
  compile(request: FrontendRequest): Promise<BuildDefinition>;
}
