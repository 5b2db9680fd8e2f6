import type { SourceLocation } from '../../solver/graph.js';
import { KilnError } from '../../solver/graph.js';

/**
 * The check rules, under the names BuildKit gives them so that `# check=skip=…` lines and CI
 * filters written for BuildKit work unchanged. Descriptions are one line each.
 */
export const RULES = {
  StageNameCasing: 'Stage names should be lowercase',
  FromAsCasing: 'The AS keyword should be written in the same case as FROM',
  NoEmptyContinuation: 'An empty line inside a continued instruction is deprecated',
  ConsistentInstructionCasing: 'Instructions should all be written in one case, upper or lower',
  DuplicateStageName: 'Each stage name should be used once',
  ReservedStageName: 'Stage names should not be reserved words',
  JSONArgsRecommended: 'CMD and ENTRYPOINT should use the JSON form so that the process receives OS signals',
  MaintainerDeprecated: 'MAINTAINER is deprecated; use a label such as org.opencontainers.image.authors',
  UndefinedArgInFrom: 'A variable used in FROM should be declared with a global ARG',
  UndefinedVar: 'Variables should be defined before they are used',
  WorkdirRelativePath: 'A relative WORKDIR depends on the base image unless an absolute one was set first',
  MultipleInstructionsDisallowed: 'Only the last CMD, ENTRYPOINT or HEALTHCHECK of a stage takes effect',
  LegacyKeyValueFormat: 'ENV and LABEL should use the key=value form',
  SecretsUsedInArgOrEnv: 'Secrets should not be passed in ARG or ENV, which stay in the image',
  InvalidDefaultArgInFrom: 'A global ARG default should give FROM a valid image name',
  FromPlatformFlagConstDisallowed: 'FROM --platform should use a variable rather than a constant',
  CopyIgnoredFile: 'COPY and ADD should not name files that .dockerignore excludes',
  InvalidBaseImagePlatform: 'The base image should match the platform being built',
} as const;

export type RuleName = keyof typeof RULES;

export interface Warning {
  rule?: string;
  message: string;
  location?: SourceLocation;
}

/** What the `# check=` directive asks: rules to skip (or all) and whether warnings fail. */
export interface CheckSettings {
  skip: ReadonlySet<string>;
  skipAll: boolean;
  error: boolean;
}

/** Parses `skip=A,B;error=true`; an unknown key or value is a located error. */
export function parseCheckDirective(value: string | undefined, where: { file: string }): CheckSettings {
  const settings = { skip: new Set<string>(), skipAll: false, error: false };
  if (value === undefined) return settings;
  for (const part of value.split(';')) {
    const [rawKey = '', rawValue = ''] = part.split('=', 2).map((s) => s.trim());
    const key = rawKey.toLowerCase();
    if (key === '') continue;
    if (key === 'skip') {
      for (const name of rawValue.split(',').map((s) => s.trim()).filter(Boolean)) {
        if (name.toLowerCase() === 'all') settings.skipAll = true;
        else settings.skip.add(name);
      }
    } else if (key === 'error') {
      if (rawValue !== 'true' && rawValue !== 'false') {
        throw new KilnError('PARSE_ERROR', `Invalid check directive value "error=${rawValue}": expected true or false at ${where.file}:1`, { location: { file: where.file, line: 1 } });
      }
      settings.error = rawValue === 'true';
    } else {
      throw new KilnError('PARSE_ERROR', `Unknown check directive key "${rawKey}" at ${where.file}:1`, { location: { file: where.file, line: 1 }, hint: 'The check directive accepts skip=RULE,… and error=true|false' });
    }
  }
  return settings;
}

/** A sink that drops skipped rules and each (rule, location, message) repeated. */
export function createLinter(settings: CheckSettings): { report(rule: RuleName, message: string, location?: SourceLocation): void; plain(message: string, location?: SourceLocation): void; warnings: Warning[] } {
  const warnings: Warning[] = [];
  const seen = new Set<string>();
  const push = (w: Warning) => {
    const key = JSON.stringify([w.rule, w.message, w.location?.line]);
    if (seen.has(key)) return;
    seen.add(key);
    warnings.push(w);
  };
  return {
    warnings,
    report(rule, message, location) {
      if (settings.skipAll || settings.skip.has(rule)) return;
      push({ rule, message, location });
    },
    plain(message, location) {
      push({ message, location });
    },
  };
}

/** Names that suggest a secret (the part of a variable name after its last `_` or the whole). */
const SECRET_WORDS = ['apikey', 'auth', 'credential', 'credentials', 'key', 'password', 'pword', 'passwd', 'secret', 'token'];
const NOT_SECRET = new Set(['public', 'id', 'name']);

export function looksSecret(name: string): boolean {
  const parts = name.toLowerCase().split(/[_-]/).filter(Boolean);
  if (parts.some((p) => NOT_SECRET.has(p))) return false;
  return parts.some((p) => SECRET_WORDS.includes(p));
}
