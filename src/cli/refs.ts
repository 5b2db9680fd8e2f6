import { parseReference } from '../image/reference.js';

/**
 * Checks an image argument before the store is opened: an image ID or ID prefix passes, a name
 * must parse as a reference (a malformed one is a usage error, exit 2, not an unknown image).
 */
export function checkImageArg(ref: string): void {
  if (/^(sha256:)?[a-f0-9]{1,64}$/.test(ref)) return;
  parseReference(ref);
}
