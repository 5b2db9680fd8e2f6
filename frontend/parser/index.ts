// The lexer is our own rather than dockerfile-ast: on the conformance corpus dockerfile-ast joins
// `\\` at line end as a continuation, drops blanks of whitespace-only continuation lines and keeps
// indented comments inside continuations, all of which change BuildKit's parse tree.
export { parseDockerfile, type ParseOptions } from './parse.js';
export { formatParseTree } from './format.js';
export { goQuote, goQuoteList } from './go-quote.js';
export type { Directives, Heredoc, InstructionNode, ParsedDockerfile, ParseWarning } from './types.js';
