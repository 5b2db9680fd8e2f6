import { binarySize } from '../executor/cgroup.js';
import type { ResourceLimits } from '../executor/executor.js';

/** Docker-style sizes: 12.3MB, with decimal units. */
export function humanSize(bytes: number): string {
  const units = ['B', 'kB', 'MB', 'GB', 'TB'];
  let v = bytes;
  let i = 0;
  while (v >= 1000 && i < units.length - 1) {
    v /= 1000;
    i++;
  }
  // Trailing zeros go only after a decimal point: 500kB stays 500kB, 1.50MB becomes 1.5MB.
  return `${i === 0 ? v : v.toPrecision(3).replace(/(\.\d*?)0+$/, '$1').replace(/\.$/, '')}${units[i]}`;
}

/** Docker-style relative times: "3 minutes ago". */
export function timeAgo(ms: number, now = Date.now()): string {
  const s = Math.max(0, Math.round((now - ms) / 1000));
  const plural = (n: number, unit: string) => `${n} ${unit}${n === 1 ? '' : 's'} ago`;
  if (s < 1) return 'Less than a second ago';
  if (s < 60) return plural(s, 'second');
  const m = Math.round(s / 60);
  if (m < 60) return m === 1 ? 'About a minute ago' : plural(m, 'minute');
  const h = Math.round(m / 60);
  if (h < 48) return h === 1 ? 'About an hour ago' : plural(h, 'hour');
  const d = Math.round(h / 24);
  if (d < 14) return plural(d, 'day');
  if (d < 60) return plural(Math.round(d / 7), 'week');
  if (d < 730) return plural(Math.round(d / 30), 'month');
  return plural(Math.round(d / 365), 'year');
}

/** Columns padded like Go's tabwriter with three spaces between them. */
export function table(rows: readonly (readonly string[])[]): string {
  const widths: number[] = [];
  for (const r of rows) r.forEach((c, i) => (widths[i] = Math.max(widths[i] ?? 0, c.length)));
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]! + 3))).join('').trimEnd()).join('\n') + '\n';
}

/** "memory 2GiB, 4096 processes, CPU weight 512": what the server log says each step gets. */
export function describeLimits(limits: ResourceLimits | undefined): string {
  const parts: string[] = [];
  if (limits?.memory !== undefined) parts.push(`memory ${binarySize(limits.memory)}`);
  if (limits?.pids !== undefined) parts.push(`${limits.pids} processes`);
  if (limits?.cpuShares !== undefined) parts.push(`CPU weight ${limits.cpuShares}`);
  if (limits?.cpus !== undefined) parts.push(`${limits.cpus} CPUs`);
  if (limits?.cpusetCpus !== undefined) parts.push(`CPUs ${limits.cpusetCpus}`);
  return parts.length > 0 ? parts.join(', ') : 'none';
}
