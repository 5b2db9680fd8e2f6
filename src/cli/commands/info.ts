import { readFileSync } from 'node:fs';
import { statfs } from 'node:fs/promises';
import { defaultKeepBytes, diskUsage } from '../../../cache/gc.js';
import { Engine } from '../../engine.js';
import type { CommandSpec } from '../args.js';
import { describeLimits, humanSize } from '../format.js';
import type { Command, CommandIO } from '../main.js';
import { runtimeVersion } from './version.js';
import { BRIDGE, GATEWAY, SUBNET_PREFIX } from '../../executor/network.js';
import { hostSecurityModules, SECURITY_OPTIONS } from '../../executor/security.js';
import { cgroupSupport } from '../../executor/cgroup.js';
import { totalmem } from 'node:os';

const spec: CommandSpec = {
  name: 'info',
  usage: 'kiln info [OPTIONS]',
  description: 'Show the store (location, size, free space, record counts), the runtime, the storage driver and the garbage collection policy.',
  minPositionals: 0,
  maxPositionals: 0,
  options: [{ name: 'format', short: 'f', type: 'string', placeholder: 'FORMAT', choices: ['text', 'json'], description: 'text (default) or json' }],
  examples: ['kiln info', 'kiln info --format json'],
};

function overlaySupported(): boolean {
  try {
    return /\toverlay$/m.test(readFileSync('/proc/filesystems', 'utf8'));
  } catch (err) {
    // Without /proc the answer is unknown; the first build would say why overlay fails.
    if (err instanceof Error) return false;
    throw err;
  }
}

/** What `kiln info` shows, as data: the server's `/v1/info` carries it for `kiln --host … info`. */
export async function collectInfo(engine: Engine) {
  const { store } = engine;
  const stepLimits = engine.executor.limits;
  const hostPorts = engine.executor.network.hostPorts;
  const db = store.db;
  const usage = await diskUsage(store);
  const fs = await statfs(store.root);
  const keep = await defaultKeepBytes(store);
  const runtime = engine.executor.runtime;
  return {
    store: {
      root: store.root,
      size: usage.total,
      imagesSize: usage.images,
      reclaimable: usage.reclaimable,
      diskFree: fs.bavail * fs.bsize,
      records: db.counts(),
    },
    runtime: { name: runtime, version: await runtimeVersion(runtime) },
    storageDriver: { name: 'overlay', supported: overlaySupported() },
    // What confines a sandboxed RUN step or `kiln run`; RUN --security=insecure runs without it.
    security: { options: [...SECURITY_OPTIONS], hostModules: hostSecurityModules() },
    // The host's memory, and the cgroup limits each RUN step and `kiln run` container gets.
    resources: { memTotal: totalmem(), cgroups: cgroupSupport(), stepLimits: stepLimits ?? null },
    // RUN steps' default network (src/executor/network.ts) and the host ports a server opened to it.
    network: { bridge: BRIDGE, subnet: `${SUBNET_PREFIX}.0.0/16`, gateway: GATEWAY, hostPorts: [...hostPorts] },
    gc: { keepStorage: keep ?? null, source: process.env.KILN_GC_KEEP_STORAGE !== undefined ? 'KILN_GC_KEEP_STORAGE' : 'the default: 10% of the disk, at most 10GB' },
  };
}

export type StoreInfo = Awaited<ReturnType<typeof collectInfo>>;

export const infoCommand: Command = {
  spec,
  async run({ options }, io) {
    let info: StoreInfo;
    if (io.host) {
      const { KilnClient } = await import('../../daemon/client.js');
      info = (await new KilnClient(io.host).json<{ system: StoreInfo }>('GET', '/info', undefined, io.signal)).system;
    } else {
      const engine = await Engine.open();
      try {
        info = await collectInfo(engine);
      } finally {
        engine.close();
      }
    }
    printInfo(info, options.format as string | undefined, io);
    return 0;
  },
};

function printInfo(info: StoreInfo, format: string | undefined, io: CommandIO): void {
  if (format === 'json') {
    io.stdout(`${JSON.stringify(info)}\n`);
    return;
  }
  const r = info.store.records;
  const keep = info.gc.keepStorage;
  io.stdout(
    [
      'Store:',
      ` Root:            ${info.store.root}`,
      ` Size:            ${humanSize(info.store.size)} (images ${humanSize(info.store.imagesSize)}, reclaimable ${humanSize(info.store.reclaimable)})`,
      ` Disk free:       ${humanSize(info.store.diskFree)}`,
      ` Images:          ${r.images} (${r.tags} tag${r.tags === 1 ? '' : 's'})`,
      ` Layers:          ${r.layers}`,
      ` Blobs:           ${r.blobs}`,
      ` Cache records:   ${r.cacheRecords}`,
      ` Cache mounts:    ${r.cacheMounts}`,
      ` Leases:          ${r.leases}`,
      `Runtime:          ${info.runtime.version}`,
      `Storage driver:   overlay${info.storageDriver.supported ? '' : ' (not supported by this kernel)'}`,
      `Security:         ${securityLine(info.security.options)}`,
      `Memory:           ${humanSize(info.resources.memTotal)}`,
      `Cgroups:          ${cgroupLine(info.resources.cgroups)}`,
      `Step limits:      ${describeLimits(info.resources.stepLimits ?? undefined)}`,
      `Step network:     ${info.network.bridge} ${info.network.subnet} (NAT outside; the host at ${info.network.gateway} refused${info.network.hostPorts.length > 0 ? ` but for ports ${info.network.hostPorts.join(', ')}` : ''})`,
      ...info.security.hostModules.map((m) => ` ${m === 'apparmor' ? 'AppArmor' : 'SELinux'} is enabled on this host; Kiln loads no profile of it`),
      `GC policy:        ${keep === null ? 'off' : `keep ${humanSize(keep)} of build cache`} (${info.gc.source})`,
      '',
    ].join('\n'),
  );
}

/** `name=seccomp,profile=builtin` as "seccomp (profile builtin)", for people. */
function securityLine(options: readonly string[]): string {
  const shown = options.map((o) => {
    const fields = new Map(o.split(',').map((f) => f.split('=', 2) as [string, string]));
    const name = fields.get('name') ?? o;
    const profile = fields.get('profile');
    return profile === undefined ? name : `${name} (profile ${profile})`;
  });
  return `${shown.join(', ')}; RUN --security=insecure runs unconfined`;
}

/** "v1 (memory, pids, cpu, cpuset; swap accounted)". */
function cgroupLine(c: StoreInfo['resources']['cgroups']): string {
  if (c.version === null) return 'none';
  const controllers = (['memory', 'pids', 'cpu', 'cpuset'] as const).filter((k) => c[k]);
  return `v${c.version} (${controllers.join(', ') || 'no controller'}${c.swap ? '; swap accounted' : ''})`;
}
