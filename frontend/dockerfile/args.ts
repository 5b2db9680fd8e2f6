import type { Platform } from '../../solver/graph.js';

/**
 * Proxy variables every build may pass with --build-arg without declaring them: RUN sees them,
 * but they stay out of the image history, where they could leak credentials.
 */
export const PROXY_ARGS: ReadonlySet<string> = new Set([
  'HTTP_PROXY', 'http_proxy', 'HTTPS_PROXY', 'https_proxy', 'FTP_PROXY', 'ftp_proxy', 'NO_PROXY', 'no_proxy', 'ALL_PROXY', 'all_proxy',
]);

/** Build args Kiln itself reads, consumed whether or not a Dockerfile declares them. */
export const ENGINE_ARGS: ReadonlySet<string> = new Set(['SOURCE_DATE_EPOCH']);

export function formatPlatform(p: Platform): string {
  return `${p.os}/${p.architecture}${p.variant ? `/${p.variant}` : ''}`;
}

/** `linux/arm64/v8` → a platform; undefined for anything else. */
export function parsePlatform(text: string): Platform | undefined {
  const parts = text.toLowerCase().split('/');
  if (parts.length < 2 || parts.length > 3 || parts.some((p) => !/^[a-z0-9_.-]+$/.test(p))) return undefined;
  return { os: parts[0]!, architecture: parts[1]!, ...(parts[2] ? { variant: parts[2] } : {}) };
}

/**
 * The arguments the builder defines itself: visible to FROM lines without a declaration, and
 * inside a stage once declared with a bare `ARG NAME`.
 */
export function automaticArgs(target: Platform, build: Platform, targetStage: string): Map<string, string> {
  return new Map([
    ['TARGETPLATFORM', formatPlatform(target)],
    ['TARGETOS', target.os],
    ['TARGETARCH', target.architecture],
    ['TARGETVARIANT', target.variant ?? ''],
    ['BUILDPLATFORM', formatPlatform(build)],
    ['BUILDOS', build.os],
    ['BUILDARCH', build.architecture],
    ['BUILDVARIANT', build.variant ?? ''],
    ['TARGETSTAGE', targetStage],
  ]);
}
