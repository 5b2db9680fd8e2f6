import { describe, expect, it } from 'vitest';
import { KilnError } from '../../cache/errors.js';
import { expandWord, expandWords, expandWordWithInfo, expandWordsWithInfo } from '../../frontend/shell/index.js';

const env = (vars: Record<string, string>) => (name: string): string | undefined =>
  Object.hasOwn(vars, name) ? vars[name] : undefined;

describe('expandWord modifiers', () => {
  const lookup = env({ FILE: 'archive.tar.gz', PATHS: '/usr/lib/usr/lib', EMPTY: '', STARS: 'a**b*' });

  it.each([
    ['${FILE#*.}', 'tar.gz'],
    ['${FILE##*.}', 'gz'],
    ['${FILE%.*}', 'archive.tar'],
    ['${FILE%%.*}', 'archive'],
    ['${FILE#}', 'archive.tar.gz'],
    ['${FILE%x}', 'archive.tar.gz'],
    ['${STARS%%\\**}', 'a'],
    ['${STARS#a\\*}', '*b*'],
    ['${PATHS/usr/opt}', '/opt/lib/usr/lib'],
    ['${PATHS//usr/opt}', '/opt/lib/opt/lib'],
    ['${PATHS//\\//:}', ':usr:lib:usr:lib'],
    ['${PATHS//lib}x', 'error'],
    ['${PATHS/?/}', 'usr/lib/usr/lib'],
    // In the replacement `$0` is a (never set) shell variable; `\$0` reaches the match template.
    ['${PATHS//lib/<$0>}', '/usr/<>/usr/<>'],
    ['${PATHS//lib/<\\$0>}', '/usr/<\\lib>/usr/<\\lib>'],
    ['${PATHS/lib/<\\$0>}', '/usr/<\\$0>/usr/lib'],
    ['${EMPTY-unset}|${EMPTY:-empty}|${NOPE-unset}', '|empty|unset'],
    ['${EMPTY+set}|${EMPTY:+nonempty}|${NOPE+set}', 'set||'],
    ['${FILE:?}', 'archive.tar.gz'],
    ['${EMPTY?}', ''],
    ['${FILE:#x}', 'error'],
    ['${FILE:%x}', 'error'],
    ['${FILE=x}', 'error'],
    ['${FILE#\\x}', 'error'],
  ])('%s', (word, expected) => {
    if (expected === 'error') {
      expect(() => expandWord(word, lookup)).toThrow(KilnError);
    } else {
      expect(expandWord(word, lookup)).toBe(expected);
    }
  });

  it('reports a required variable with the given message', () => {
    expect(() => expandWord('${TOKEN:?set TOKEN first}', env({ TOKEN: '' }))).toThrow('Cannot expand "${TOKEN:?set TOKEN first}": TOKEN: set TOKEN first');
    expect(() => expandWord('${TOKEN?}', env({}))).toThrow('variable "TOKEN" is not set');
    try {
      expandWord('he${PWD', env({}));
    } catch (err) {
      expect(err).toBeInstanceOf(KilnError);
      expect((err as KilnError).code).toBe('EXPANSION_ERROR');
      expect((err as KilnError).message).toBe('Cannot expand "he${PWD": missing "}"');
    }
  });
});

describe('variable tracking', () => {
  it('collects names that were set and names that were not', () => {
    const result = expandWordWithInfo('$A ${B:-$C} ${D#x} "$E" \'$F\'', env({ A: '1', D: 'xy', E: '' }));
    expect(result.value).toBe('1  y  $F');
    expect([...result.used].sort()).toEqual(['A', 'D', 'E']);
    expect([...result.unset].sort()).toEqual(['B', 'C']);
  });

  it('tracks names when splitting into words too', () => {
    const result = expandWordsWithInfo('$A "$B c" ${MISSING}', env({ A: 'x y', B: 'b' }));
    expect(result.words).toEqual(['x', 'y', 'b c']);
    expect([...result.unset]).toEqual(['MISSING']);
  });
});

describe('options', () => {
  it('uses the backtick as escape character', () => {
    expect(expandWord('C:\\dir`$X `"q`"', env({ X: 'no' }), { escape: '`' })).toBe('C:\\dir$X "q"');
  });

  it('can keep quotes, escapes and unset references for a later pass', () => {
    const lookup = env({ SET: 'v' });
    expect(expandWord('"$SET" \\$x $UNSET ${UNSET:-d} ${UNSET}', lookup, { keepQuotes: true, keepEscapes: true, keepUnset: true })).toBe(
      '"v" \\$x $UNSET ${UNSET:-d} ${UNSET}',
    );
  });

  it('can treat quotes as ordinary characters', () => {
    expect(expandWord('"$A" \'$A\'', env({ A: 'x' }), { literalQuotes: true })).toBe('"x" \'x\'');
  });

  it('keeps heredoc operators whole when splitting', () => {
    expect(expandWords('cat << EOF > out', env({}))).toEqual(['cat', '<< EOF', '>', 'out']);
  });
});
