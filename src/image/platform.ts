import { KilnError } from '../../cache/errors.js';
import type { Descriptor, Platform } from './oci.js';

const ARCH_ALIASES: Record<string, string> = { x86_64: 'amd64', x86: '386', i386: '386', aarch64: 'arm64', armhf: 'arm', armel: 'arm' };

/** Normalises a platform as containerd does: `aarch64` → `arm64/v8`, `arm` → `arm/v7`. */
export function normalizePlatform(p: Platform): Platform {
  const os = p.os.toLowerCase();
  let architecture = ARCH_ALIASES[p.architecture.toLowerCase()] ?? p.architecture.toLowerCase();
  let variant = p.variant?.toLowerCase() || undefined;
  if (p.architecture === 'armel') variant ??= 'v6';
  if (architecture === 'arm64' && variant === '8') variant = 'v8';
  if (architecture === 'arm64') variant ??= 'v8';
  if (architecture === 'arm') variant = variant === undefined ? 'v7' : variant.startsWith('v') ? variant : `v${variant}`;
  if (architecture === 'amd64' && variant === 'v1') variant = undefined;
  if (architecture === 'x86-64') architecture = 'amd64';
  return { os, architecture, ...(variant ? { variant } : {}) };
}

/** `linux/arm64/v8` → a platform; usage error otherwise. */
export function parsePlatform(spec: string): Platform {
  const parts = spec.trim().split('/');
  if (parts.length < 2 || parts.length > 3 || parts.some((p) => p === '')) {
    throw new KilnError('INVALID_PLATFORM', `Invalid platform "${spec}": expected OS/ARCH[/VARIANT], such as "linux/amd64"`, { exitCode: 2 });
  }
  return normalizePlatform({ os: parts[0]!, architecture: parts[1]!, ...(parts[2] ? { variant: parts[2] } : {}) });
}

export function formatPlatform(p: Platform): string {
  return `${p.os}/${p.architecture}${p.variant ? `/${p.variant}` : ''}`;
}

/**
 * Variants a platform can run, best first, as containerd's default matcher orders them: an
 * arm/v7 host runs v7, then v6 and v5; amd64 v3 runs v3, v2, then plain amd64.
 */
function compatibleVariants(p: Platform): (string | undefined)[] {
  const v = p.variant;
  if (p.architecture === 'arm') {
    const n = Number(v?.slice(1) ?? 7);
    return Array.from({ length: n - 4 }, (_, i) => `v${n - i}`);
  }
  if (p.architecture === 'amd64') {
    const n = v ? Number(v.slice(1)) : 1;
    return [...Array.from({ length: Math.max(0, n - 1) }, (_, i) => `v${n - i}`), undefined];
  }
  if (p.architecture === 'arm64') return ['v8', undefined];
  return [v];
}

/**
 * Chooses the manifest of an index for `want` as docker does: same OS and architecture, the best
 * compatible variant; entries without a platform (attestations, `unknown/unknown`) never match.
 */
export function selectManifest(manifests: readonly Descriptor[], want: Platform): Descriptor | undefined {
  const target = normalizePlatform(want);
  const ranks = compatibleVariants(target);
  let best: { d: Descriptor; rank: number } | undefined;
  for (const d of manifests) {
    if (!d.platform) continue;
    const p = normalizePlatform(d.platform);
    if (p.os !== target.os || p.architecture !== target.architecture) continue;
    const rank = ranks.indexOf(p.variant);
    if (rank < 0) continue;
    if (!best || rank < best.rank) best = { d, rank };
  }
  return best?.d;
}

/** The platform Kiln builds for and pulls by default. */
export const DEFAULT_PLATFORM: Platform = { os: 'linux', architecture: 'amd64' };
