import { describe, expect, it } from 'vitest';
import { familiarName, normalizeName, parseReference } from '../../src/image/reference.js';

describe('image references', () => {
  it.each([
    ['busybox', 'docker.io/library/busybox:latest'],
    ['acc/app:1', 'docker.io/acc/app:1'],
    ['localhost:5000/x/y:tag', 'localhost:5000/x/y:tag'],
    ['127.0.0.1:5000/img', '127.0.0.1:5000/img:latest'],
    [`busybox@sha256:${'a'.repeat(64)}`, `docker.io/library/busybox@sha256:${'a'.repeat(64)}`],
  ])('normalises %s', (input, expected) => {
    expect(normalizeName(input)).toBe(expected);
  });

  it('shows names as docker does', () => {
    expect(familiarName('docker.io/library/busybox:latest')).toBe('busybox:latest');
    expect(familiarName('docker.io/acc/app:1')).toBe('acc/app:1');
  });

  it.each(['UPPER/case', 'a:b:c', 'x::', ''])('rejects %j with exit code 2', (input) => {
    try {
      parseReference(input);
      expect.unreachable();
    } catch (err) {
      expect((err as { exitCode: number }).exitCode).toBe(2);
      expect((err as Error).message).toContain('Invalid reference');
    }
  });

  it('takes a name of 255 characters and refuses 256, as docker does, without quoting a huge one whole', () => {
    const name = (n: number) => `localhost:5000/${'a'.repeat(n - 'localhost:5000/'.length)}`;
    expect(normalizeName(`${name(255)}:1`)).toBe(`${name(255)}:1`);
    expect(() => parseReference(name(256))).toThrow(/the repository name is longer than 255 characters/);
    let message = '';
    try {
      parseReference('a'.repeat(100_000));
    } catch (err) {
      message = (err as Error).message;
    }
    expect(message).toMatch(/longer than 255 characters/);
    expect(message.length).toBeLessThan(300);
  });
});
