/**
 * A `security.capability` value granting cap_net_raw, permitted and effective
 * (VFS_CAP_REVISION_2), as setcap writes it: what the tests give a file to see that COPY and the
 * context uploads keep file capabilities.
 */
export function netRawCapability(): Buffer {
  const value = Buffer.alloc(20);
  value.writeUInt32LE(0x02000001, 0);
  value.writeUInt32LE(1 << 13, 4);
  return value;
}
