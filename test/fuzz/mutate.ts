import type { Rng } from './prng.js';

/** Fragments that reach the corners of the parser, expansion and compile. */
export const TOKENS = [
  '\\', '\\\n', '`', '`\n', '$', '${', '}', '${A}', '${A:-', '${A:+x}', '${A#', '${A%%*}', '${A/b/c}', '${A//', '${', '$$', '${#A}',
  '${A:?err}', '${A:1:2}', '$1', '$@', '"', "'", '\\"', '[', ']', '["', '"]', '[]', '["a", "b"]', '{', ',', '=', '==', ' = ',
  '<<EOF', '<<-EOF', '<<"EOF"', "<<'EOF'", '\nEOF\n', '<<', '<<<', '#', '# escape=`\n', '# escape=\\\n', '# syntax=x\n',
  '# check=skip=all\n', '# check=error=true\n', '#!', '\n', '\r\n', '\r', '\t', ' ', '\u00a0', '\uFEFF', '\0', '\ud800', '\u{1F600}',
  'FROM ', 'FROM base:1\n', 'FROM scratch\n', 'FROM base:1 AS b\n', 'FROM onbuild:1\n', 'FROM missing:1\n', 'AS ', ' AS x',
  'RUN ', 'COPY ', 'ADD ', 'ARG ', 'ENV ', 'LABEL ', 'USER ', 'WORKDIR ', 'CMD ', 'ENTRYPOINT ', 'SHELL ', 'EXPOSE ', 'VOLUME ',
  'STOPSIGNAL ', 'HEALTHCHECK ', 'ONBUILD ', 'MAINTAINER ', 'HEALTHCHECK NONE', 'HEALTHCHECK CMD ',
  '--from=', '--from=0 ', '--from=b ', '--from=base:1 ', '--chown=', '--chown=a:b ', '--chmod=', '--chmod=u+x,go-w ', '--chmod=7777 ',
  '--link ', '--parents ', '--exclude=', '--checksum=', '--keep-git-dir ', '--platform=', '--platform=$BUILDPLATFORM ', '--network=',
  '--network=none ', '--security=insecure ', '--mount=', '--mount=type=cache,target=/c ', '--mount=type=bind,from=0,target=/m ',
  '--mount=type=secret,id=s,env=E ', '--mount=type=tmpfs,target=/t,size=1g ', '--mount=type=ssh ', '--interval=', '--retries=',
  '--start-period=', '--timeout=', 'type=', 'target=', 'source=', 'uid=', 'mode=', 'sharing=', ',rw', ',ro',
  '..', '../', '/..', '/', '/./', '*', '**', '?', '[a-', '[^', '[]]', 'http://', 'https://example.com/x.tar', 'git@host:r.git#ref:sub',
  'https://h/r.git#', '0', '-1', '99999999999999999999', '0x10', '1e400', 'NaN', '__proto__', 'constructor', 'toString',
  'TARGETPLATFORM', 'BUILDPLATFORM', 'TARGETSTAGE', 'HTTP_PROXY', 'PATH', 'SIGKILL', '65536/udp', '1-0', 'linux/amd64', 'windows/arm/v7',
];

const BOUNDARY = /[\s=,:"'[\]{}$\\]/;

/** One random edit of `text`: an insertion, deletion, duplication, splice or swap. */
function mutateOnce(text: string, rng: Rng, donors: readonly string[]): string {
  const pos = () => rng.int(text.length + 1);
  switch (rng.int(11)) {
    case 0: {
      const p = pos();
      return text.slice(0, p) + rng.pick(TOKENS) + text.slice(p);
    }
    case 1: {
      const a = pos();
      const b = Math.min(text.length, a + 1 + rng.int(16));
      return text.slice(0, a) + text.slice(b);
    }
    case 2: {
      const a = pos();
      const b = Math.min(text.length, a + 1 + rng.int(40));
      const chunk = text.slice(a, b);
      return text.slice(0, b) + chunk.repeat(1 + rng.int(3)) + text.slice(b);
    }
    case 3: {
      const lines = text.split('\n');
      const i = rng.int(lines.length);
      const j = rng.int(lines.length);
      [lines[i], lines[j]] = [lines[j]!, lines[i]!];
      return lines.join('\n');
    }
    case 4: {
      const lines = text.split('\n');
      const donor = rng.pick(donors).split('\n');
      lines.splice(rng.int(lines.length + 1), 0, ...donor.slice(rng.int(donor.length), rng.int(donor.length) + 1 + rng.int(4)));
      return lines.join('\n');
    }
    case 5: {
      // Replace one word (a run between boundaries) with a token.
      const p = pos();
      let a = p;
      let b = p;
      while (a > 0 && !BOUNDARY.test(text[a - 1]!)) a--;
      while (b < text.length && !BOUNDARY.test(text[b]!)) b++;
      return text.slice(0, a) + rng.pick(TOKENS) + text.slice(b);
    }
    case 6: {
      const p = pos();
      return text.slice(0, p) + String.fromCharCode(rng.int(rng.chance(0.8) ? 128 : 0x10000)) + text.slice(p);
    }
    case 7:
      return text.slice(0, pos());
    case 8: {
      // Deep nesting: what recursion in the parser and expansion has to survive.
      const depth = 1 + rng.int(rng.chance(0.1) ? 5000 : 40);
      const open = rng.pick(['${A:-', '${A:+', '"', '[', '${', '$(', '\\', '`']);
      const p = pos();
      return text.slice(0, p) + open.repeat(depth) + 'x' + '}'.repeat(rng.int(depth + 1)) + text.slice(p);
    }
    case 9: {
      const lines = text.split('\n');
      const i = rng.int(lines.length);
      lines.splice(i, 0, ...Array.from({ length: 1 + rng.int(3) }, () => lines[i] ?? ''));
      return lines.join('\n');
    }
    default: {
      // A long line: quadratic work in a scanner shows up here.
      const p = pos();
      return text.slice(0, p) + rng.pick(TOKENS).repeat(100 + rng.int(1500)) + text.slice(p);
    }
  }
}

export function mutate(text: string, rng: Rng, donors: readonly string[], rounds = 1 + rng.int(8)): string {
  let out = text;
  for (let i = 0; i < rounds; i++) out = mutateOnce(out, rng, donors);
  return out.length > 200_000 ? out.slice(0, 200_000) : out;
}

/** Build args: ordinary, hostile and prototype-shaped names, values with expansion syntax. */
export function buildArgs(rng: Rng): Record<string, string> {
  const args: Record<string, string> = Object.create(null) as Record<string, string>;
  const n = rng.int(5);
  for (let i = 0; i < n; i++) {
    const key = rng.pick(['A', 'B', 'BASE', 'IMG', 'TAG', 'VERSION', 'TARGETPLATFORM', 'HTTP_PROXY', '__proto__', 'constructor', '', '1X', 'a b', rng.pick(TOKENS)]);
    const value = rng.chance(0.5) ? rng.pick(['base:1', 'scratch', '', 'linux/arm64', '$A', '${B}', '../..', '/etc', 'onbuild:1']) : mutate(rng.pick(TOKENS), rng, TOKENS, 2);
    args[key] = value;
  }
  return { ...args };
}
