export {
  expandWord,
  expandWordWithInfo,
  expandWords,
  expandWordsWithInfo,
  type ExpandOptions,
  type WordExpansion,
  type WordsExpansion,
} from './expand.js';
export type { VariableLookup } from './lexer.js';
