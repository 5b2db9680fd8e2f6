import path from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * BuildKit's parser, shell-expansion and .dockerignore test data (Apache-2.0; licences and notice
 * beside it), kept in the repository so that a fresh clone runs it.
 */
export const CONFORMANCE_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../fixtures/conformance');
