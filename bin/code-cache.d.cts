/** The launcher's code cache (bin/code-cache.cjs): its types, for the tests that call it. */
export function useCodeCache(bundleDir: string): void;
export function cacheFile(dir: string, filename: string, source: string | Buffer): string;
