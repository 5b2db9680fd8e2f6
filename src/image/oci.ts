import type { Digest } from '../../cache/digest.js';

export const MEDIA_TYPE_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
export const MEDIA_TYPE_INDEX = 'application/vnd.oci.image.index.v1+json';
export const MEDIA_TYPE_CONFIG = 'application/vnd.oci.image.config.v1+json';
export const MEDIA_TYPE_OCI_LAYER = 'application/vnd.oci.image.layer.v1.tar';
export const MEDIA_TYPE_OCI_LAYER_GZIP = 'application/vnd.oci.image.layer.v1.tar+gzip';
export const MEDIA_TYPE_OCI_LAYER_ZSTD = 'application/vnd.oci.image.layer.v1.tar+zstd';

export const MEDIA_TYPE_DOCKER_MANIFEST = 'application/vnd.docker.distribution.manifest.v2+json';
export const MEDIA_TYPE_DOCKER_LIST = 'application/vnd.docker.distribution.manifest.list.v2+json';
export const MEDIA_TYPE_DOCKER_CONFIG = 'application/vnd.docker.container.image.v1+json';
export const MEDIA_TYPE_DOCKER_LAYER = 'application/vnd.docker.image.rootfs.diff.tar';
export const MEDIA_TYPE_DOCKER_LAYER_GZIP = 'application/vnd.docker.image.rootfs.diff.tar.gzip';
export const MEDIA_TYPE_DOCKER_FOREIGN_LAYER_GZIP = 'application/vnd.docker.image.rootfs.foreign.diff.tar.gzip';

export const MANIFEST_TYPES = [MEDIA_TYPE_MANIFEST, MEDIA_TYPE_DOCKER_MANIFEST] as const;
export const INDEX_TYPES = [MEDIA_TYPE_INDEX, MEDIA_TYPE_DOCKER_LIST] as const;

export type Compression = 'gzip' | 'zstd' | 'uncompressed';

export interface Platform {
  architecture: string;
  os: string;
  variant?: string;
  'os.version'?: string;
  'os.features'?: string[];
}

export interface Descriptor {
  mediaType: string;
  digest: Digest;
  size: number;
  annotations?: Record<string, string>;
  platform?: Platform;
  urls?: string[];
}

export interface Manifest {
  schemaVersion: 2;
  mediaType?: string;
  config: Descriptor;
  layers: Descriptor[];
  annotations?: Record<string, string>;
}

export interface Index {
  schemaVersion: 2;
  mediaType?: string;
  manifests: Descriptor[];
  annotations?: Record<string, string>;
}

export function isIndexType(mediaType: string | undefined): boolean {
  return mediaType !== undefined && (INDEX_TYPES as readonly string[]).includes(mediaType);
}

export function isManifestType(mediaType: string | undefined): boolean {
  return mediaType !== undefined && (MANIFEST_TYPES as readonly string[]).includes(mediaType);
}

/** The compression a layer media type names. */
export function layerCompression(mediaType: string): Compression {
  if (mediaType.endsWith('gzip')) return 'gzip';
  if (mediaType.endsWith('zstd')) return 'zstd';
  return 'uncompressed';
}

/** The layer media type for a compression, in OCI or Docker flavour (Docker has no zstd). */
export function layerMediaType(compression: Compression, oci: boolean): string {
  if (compression === 'zstd') return MEDIA_TYPE_OCI_LAYER_ZSTD;
  if (oci) return compression === 'gzip' ? MEDIA_TYPE_OCI_LAYER_GZIP : MEDIA_TYPE_OCI_LAYER;
  return compression === 'gzip' ? MEDIA_TYPE_DOCKER_LAYER_GZIP : MEDIA_TYPE_DOCKER_LAYER;
}

/** A manifest's or index's media type: its own field, else what its shape says (OCI allows leaving it out). */
export function documentMediaType(doc: { mediaType?: string; manifests?: unknown; config?: unknown }, fallback?: string): string | undefined {
  if (doc.mediaType) return doc.mediaType;
  if (fallback && fallback !== 'application/json' && fallback !== 'text/plain') return fallback;
  if (Array.isArray(doc.manifests)) return MEDIA_TYPE_INDEX;
  if (doc.config) return MEDIA_TYPE_MANIFEST;
  return undefined;
}
