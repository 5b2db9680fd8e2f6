export { parseCacheFrom, parseCacheTo, type CacheFrom, type CacheMode, type CacheTo } from './spec.js';
export { collectRecords, INLINE_CACHE_FIELD, MEDIA_TYPE_CACHE_CONFIG, type CacheRecord, type SolvedRecord } from './records.js';
export { exportCache, withInlineCache, type CacheExportOptions } from './export.js';
export { importCache, ImportedCache, type CacheImportOptions } from './import.js';
