import { readFileSync } from 'node:fs';

/** Identifies a live process across pid reuse: its pid and its start time in clock ticks. */
export interface ProcessIdentity {
  pid: number;
  start: string;
}

export function processStart(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (fields[0] === 'Z' || fields[0] === 'X') return undefined;
    return fields[19];
  } catch {
    // No such process (ENOENT) is the answer we are asking for.
    return undefined;
  }
}

let self: ProcessIdentity | undefined;

export function selfIdentity(): ProcessIdentity {
  self ??= { pid: process.pid, start: processStart(process.pid) ?? '0' };
  return self;
}

export function isAlive(owner: ProcessIdentity): boolean {
  return processStart(owner.pid) === owner.start;
}
