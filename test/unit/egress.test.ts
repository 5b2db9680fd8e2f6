import { networkInterfaces } from 'node:os';
import { describe, expect, it } from 'vitest';
import { stepResolvConf } from '../../src/executor/network.js';
import { gitHost, isHostAddress } from '../../src/sources/egress.js';

describe('what a build service\'s sources and steps may not reach', () => {
  it('counts loopback, unspecified, link-local, the steps\' bridge and this host\'s addresses as the host', () => {
    for (const a of ['127.0.0.1', '127.8.9.10', '0.0.0.0', '::1', '::', '::ffff:127.0.0.1', '169.254.169.254', 'fe80::1', '10.89.0.1', '10.89.200.3']) {
      expect(isHostAddress(a), a).toBe(true);
    }
    const own = Object.values(networkInterfaces()).flat().filter((i) => i && !i.internal).map((i) => i!.address);
    for (const a of own) expect(isHostAddress(a), a).toBe(true);
    for (const a of ['8.8.8.8', '198.18.3.2', '10.88.0.1', '2001:db8::1', 'example.org']) expect(isHostAddress(a), a).toBe(false);
  });

  it('finds the host of every git source form', () => {
    expect(gitHost('git@github.com:moby/buildkit.git')).toBe('github.com');
    expect(gitHost('ssh://git@127.0.0.1:2222/x.git')).toBe('127.0.0.1');
    expect(gitHost('git://[::1]/x.git')).toBe('[::1]');
    expect(gitHost('https://example.org/x.git')).toBe('example.org');
  });

  it('gives a step the host\'s resolvers without loopback ones, or public ones when none is left', () => {
    expect(stepResolvConf('search lan\nnameserver 127.0.0.53\nnameserver 10.0.0.2\noptions edns0\n')).toBe('search lan\nnameserver 10.0.0.2\noptions edns0\n');
    expect(stepResolvConf('nameserver 127.0.0.53\nnameserver ::1\n')).toBe('nameserver 8.8.8.8\nnameserver 8.8.4.4\n');
    expect(stepResolvConf('')).toBe('nameserver 8.8.8.8\nnameserver 8.8.4.4\n');
  });
});
