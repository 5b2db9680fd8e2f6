/**
 * The build graph: vertices are operations with a canonical JSON definition; the sha256 of that
 * definition (inputs by digest) is the vertex digest. Equal digests are the same vertex.
 * This module is the vocabulary the frontend may use: it imports nothing that does I/O.
 */
import { canonicalJson, type Digest, digestOf } from '../cache/digest.js';
import type { SourceLocation } from '../cache/errors.js';

export type { Digest } from '../cache/digest.js';
export { canonicalJson, digestOf, parseDigest } from '../cache/digest.js';
export { KilnError, VertexError, type SourceLocation } from '../cache/errors.js';

export interface Platform {
  os: string;
  architecture: string;
  variant?: string;
}

/** A base image: its rootfs is the image's layers, resolved to a manifest digest by the caller. */
export interface ImageOp {
  kind: 'image';
  ref: string;
  /** The manifest digest the reference resolved to when the graph was compiled. */
  manifest: Digest;
  platform: Platform;
}

/** Files of a build context. `include`/`exclude` are .dockerignore-style patterns. */
export interface ContextOp {
  kind: 'context';
  name: string;
  /** Where the files are: a local directory. Not part of cache keys, which use content. */
  source: string;
  exclude: string[];
}

export interface UserSpec {
  /** As written: a name or number, resolved against the rootfs' /etc/passwd at run time. */
  user: string;
  group?: string;
}

/** A mount of a RUN step (`RUN --mount=…`). Inputs are indexes into the vertex's inputs. */
export type ExecMount =
  | { type: 'bind'; target: string; input: number; source: string; readwrite: boolean }
  | {
      type: 'cache';
      target: string;
      id: string;
      sharing: 'shared' | 'private' | 'locked';
      mode: number;
      uid: number;
      gid: number;
      /** Seed the cache from this input's `source` path when it is first created. */
      input?: number;
      source?: string;
      readonly?: boolean;
    }
  | { type: 'tmpfs'; target: string; size?: number }
  | { type: 'secret'; id: string; target?: string; env?: string; required: boolean; mode: number; uid: number; gid: number }
  | { type: 'ssh'; id: string; target?: string; required: boolean; mode: number; uid: number; gid: number };

export interface ExecOp {
  kind: 'exec';
  /** Input index of the root filesystem, or -1 for an empty root (FROM scratch). */
  root: number;
  args: string[];
  env: string[];
  cwd: string;
  user: string;
  network: 'default' | 'none' | 'host';
  hostname?: string;
  mounts?: ExecMount[];
  security?: 'sandbox' | 'insecure';
  /** Lines added to /etc/hosts (`--add-host`); part of the definition, as in BuildKit. */
  extraHosts?: ExtraHost[];
  /** Resource limits of the process (`--ulimit`). */
  ulimits?: Ulimit[];
  /** Size of /dev/shm in bytes (`--shm-size`); 64 MiB when absent. */
  shmSize?: number;
}

export interface ExtraHost {
  host: string;
  ip: string;
}

/** `name` as ulimit names it: `nofile`, `nproc`, `core`, … */
export interface Ulimit {
  name: string;
  soft: number;
  hard: number;
}

/** A file fetched over http(s) for ADD; `checksum` pins its content. */
export interface HttpOp {
  kind: 'http';
  url: string;
  checksum?: string;
  filename?: string;
}

/** A git repository checked out for ADD. */
export interface GitOp {
  kind: 'git';
  url: string;
  ref?: string;
  subdir?: string;
  keepGitDir: boolean;
  checksum?: string;
}

export interface CopyAction {
  action: 'copy';
  /** Input index the sources come from. */
  from: number;
  /** Source paths or glob patterns, relative to the input's root. */
  src: string[];
  dest: string;
  /** Owner of created files; absent keeps the source owner (or root for context files). */
  chown?: UserSpec;
  /** Octal (`755`) or symbolic (`u+x,go=r`) mode applied to what is copied. */
  chmod?: string;
  /** The instruction's working directory, for relative destinations. */
  cwd: string;
  /** COPY --parents: keep each source's path (below a `/./` pivot, if any) under `dest`. */
  parents?: boolean;
  /** COPY/ADD --exclude: .dockerignore-style patterns, relative to the source root, left out. */
  exclude?: string[];
  /** COPY/ADD --link: the copy does not depend on the files below it. */
  link?: boolean;
  /** ADD of local files: a tar archive (plain, gzip, bzip2, xz) is unpacked into `dest`. */
  extract?: boolean;
}

export interface MkdirAction {
  action: 'mkdir';
  path: string;
  mode: number;
  chown?: UserSpec;
}

export interface MkfileAction {
  action: 'mkfile';
  path: string;
  mode: number;
  data: string;
  chown?: UserSpec;
}

export type FileAction = CopyAction | MkdirAction | MkfileAction;

export interface FileOp {
  kind: 'file';
  /** Input index of the filesystem the actions apply to, or -1 for an empty one. */
  base: number;
  actions: FileAction[];
}

export type Op = ImageOp | ContextOp | ExecOp | FileOp | HttpOp | GitOp;

/** How a vertex shows in progress output and errors; not part of its digest. */
export interface VertexMeta {
  /** e.g. `[build 3/5] RUN make`. */
  name: string;
  location?: SourceLocation;
  /** The stage a vertex belongs to, for --no-cache-filter and display. */
  stage?: string;
  /** Base image op of this vertex shows no progress line of its own unless it resolves. */
  hidden?: boolean;
}

export interface Vertex {
  readonly digest: Digest;
  readonly op: Op;
  readonly inputs: readonly Vertex[];
  readonly meta: VertexMeta;
}

export function vertex(op: Op, inputs: readonly Vertex[], meta: VertexMeta): Vertex {
  const digest = digestOf(canonicalJson({ op, inputs: inputs.map((i) => i.digest) }));
  return Object.freeze({ digest, op, inputs: Object.freeze([...inputs]), meta });
}

/** Every vertex reachable from `roots`, inputs before the vertices that use them. */
export function topoSort(roots: readonly Vertex[]): Vertex[] {
  const seen = new Set<Digest>();
  const out: Vertex[] = [];
  const visit = (v: Vertex) => {
    if (seen.has(v.digest)) return;
    seen.add(v.digest);
    for (const i of v.inputs) visit(i);
    out.push(v);
  };
  for (const r of roots) visit(r);
  return out;
}

/**
 * The vertices whose layers make up the roots' filesystems, and so the images built from them:
 * each root and, from each, the input it builds on (a RUN's root, a file op's base), down to the
 * base image. Stages the roots only copy or mount from are not among them.
 */
export function imageChain(roots: readonly Vertex[]): Set<Digest> {
  const chain = new Set<Digest>();
  for (let v of roots) {
    for (;;) {
      chain.add(v.digest);
      const below = v.op.kind === 'exec' ? v.op.root : v.op.kind === 'file' ? v.op.base : -1;
      const next = below >= 0 ? v.inputs[below] : undefined;
      if (!next) break;
      v = next;
    }
  }
  return chain;
}

/** The graph as plain JSON, for `kiln debug graph`. */
export function graphToJson(roots: readonly Vertex[]): unknown {
  return {
    roots: roots.map((r) => r.digest),
    vertices: topoSort(roots).map((v) => ({ digest: v.digest, name: v.meta.name, op: v.op, inputs: v.inputs.map((i) => i.digest) })),
  };
}

// ---- image configuration (OCI image config, as Docker writes it) ---------------------------

export interface HealthConfig {
  Test?: string[];
  Interval?: number;
  Timeout?: number;
  StartPeriod?: number;
  StartInterval?: number;
  Retries?: number;
}

export interface ContainerConfig {
  User?: string;
  ExposedPorts?: Record<string, object>;
  Env?: string[];
  Entrypoint?: string[] | null;
  Cmd?: string[] | null;
  Volumes?: Record<string, object>;
  WorkingDir?: string;
  Labels?: Record<string, string>;
  StopSignal?: string;
  Shell?: string[];
  Healthcheck?: HealthConfig;
  OnBuild?: string[] | null;
  ArgsEscaped?: boolean;
}

export interface HistoryEntry {
  created?: string;
  created_by?: string;
  author?: string;
  comment?: string;
  empty_layer?: boolean;
}

export interface ImageConfig {
  created?: string;
  author?: string;
  architecture: string;
  os: string;
  variant?: string;
  config: ContainerConfig;
  rootfs: { type: 'layers'; diff_ids: Digest[] };
  history?: HistoryEntry[];
}

/** A history entry a build adds; `vertex` names the step whose layer (if any) it describes. */
export interface PendingHistory {
  created_by: string;
  vertex?: Digest;
  comment?: string;
}

/** What the frontend hands the solver and the exporters for one target stage. */
export interface BuildDefinition {
  /** The target's filesystem; undefined for an empty image (FROM scratch with no steps). */
  root: Vertex | undefined;
  /** The base image's config with this build's changes; rootfs and history are the base's. */
  image: ImageConfig;
  history: PendingHistory[];
  /** Every root the build must solve (the target; other stages only when it depends on them). */
  warnings: { rule?: string; message: string; location?: SourceLocation }[];
  /** The Dockerfile asks (`# check=error=true`) that check warnings fail the build. */
  checkError?: boolean;
}
