export { parseIgnoreFile } from './ignore-file.js';
export { createIgnoreMatcher, type IgnoreMatcher, type IgnorePattern } from './matcher.js';
