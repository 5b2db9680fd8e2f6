import path from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * The shared conformance corpus is read in place: it sits beside the repository
 * (`<repo>/../shared/conformance`), here and in CI.
 */
export const CONFORMANCE_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../shared/conformance');
