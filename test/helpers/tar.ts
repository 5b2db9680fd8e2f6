import tar from 'tar-stream';

export type TarHeader = Parameters<tar.Pack['entry']>[0] & { pax?: Record<string, string> };
export type TarEntry = [TarHeader, (string | Buffer)?];

/** Builds an archive with tar-stream, which writes names exactly as given, hostile ones included. */
export async function packTar(entries: readonly TarEntry[]): Promise<Buffer> {
  const pack = tar.pack();
  const chunks: Buffer[] = [];
  const reading = (async () => {
    for await (const chunk of pack) chunks.push(chunk as Buffer);
  })();
  for (const [header, body] of entries) {
    await new Promise<void>((resolve, reject) => {
      const done = (err?: Error | null): void => (err ? reject(err) : resolve());
      if (body === undefined) pack.entry(header, done);
      else pack.entry(header, body, done);
    });
  }
  pack.finalize();
  await reading;
  return Buffer.concat(chunks);
}
