export interface Heredoc {
  /** The delimiter word, quotes removed. */
  name: string;
  /**
   * The body: every line between the instruction and the delimiter, each with its line ending as
   * in the file. With `chomp`, leading tabs are already removed from each line.
   */
  content: string;
  /** Opened with `<<-`. */
  chomp: boolean;
  /** False when any part of the delimiter was quoted: the body is then taken literally. */
  expand: boolean;
  /** The file descriptor written before `<<` (`3<<EOF`), when one was. */
  fd?: number;
}

export interface InstructionNode {
  /** The instruction word, lowercased ("run", "copy", unknown words too). */
  name: string;
  /** The instruction as written, continuation lines joined with escape characters removed. */
  original: string;
  /** Leading `--name=value` words, quotes removed and escapes applied. */
  flags: string[];
  /**
   * The arguments as the reference parse tree prints them. ONBUILD has none: its instruction is
   * `next`. An unknown instruction has a single empty argument.
   */
  args: string[];
  /** The arguments came from a JSON array (exec form). */
  json: boolean;
  /** ONBUILD's nested instruction. */
  next?: InstructionNode;
  /** Heredoc bodies, in the order their `<<` words appear. ONBUILD and its `next` share them. */
  heredocs: Heredoc[];
  /** First physical line, 1-based. */
  startLine: number;
  /** Last physical line consumed, including skipped blank and comment lines and heredoc bodies. */
  endLine: number;
}

export interface Directives {
  syntax?: string;
  escape: '\\' | '`';
  check?: string;
}

export interface ParseWarning {
  message: string;
  line: number;
}

export interface ParsedDockerfile {
  directives: Directives;
  instructions: InstructionNode[];
  warnings: ParseWarning[];
}
