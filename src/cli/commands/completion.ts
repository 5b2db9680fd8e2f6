import { usageError, type CommandSpec } from '../args.js';
import type { Command } from '../main.js';

const spec: CommandSpec = {
  name: 'completion',
  usage: 'kiln completion bash|zsh',
  description: 'Print a shell completion script: commands, their flags, and image names from the store where an image is expected.',
  minPositionals: 1,
  maxPositionals: 1,
  options: [],
  examples: ['source <(kiln completion bash)', 'kiln completion zsh > "${fpath[1]}/_kiln"'],
};

export const completionCommand: Command = {
  spec,
  async run({ positionals }, io) {
    const shell = positionals[0]!;
    if (shell !== 'bash' && shell !== 'zsh') throw usageError(`Unknown shell "${shell}": expected bash or zsh`, spec);
    // Every command's module loads here, for its flags: completion is off every other path.
    const { COMMANDS } = await import('../main.js');
    const specs = await Promise.all(Object.values(COMMANDS).map(async (load) => (await load()).spec));
    io.stdout(shell === 'bash' ? bashScript(specs) : zshScript(specs));
    return 0;
  },
};

/** The store's image names, for the commands that take one. */
const IMAGES = `kiln images 2>/dev/null | awk 'NR > 1 && $1 != "<none>" { print $1 ":" $2 }'`;

/** Commands whose positionals are images of the store. */
const IMAGE_COMMANDS = ['run', 'inspect', 'history', 'rmi', 'tag', 'save', 'push'];

function flags(s: CommandSpec): string[] {
  return s.options.flatMap((o) => [`--${o.name}`, ...(o.short ? [`-${o.short}`] : [])]).concat('--help');
}

export function bashScript(specs: readonly CommandSpec[]): string {
  const cases = specs.map((s) => `    ${s.name}) flags="${flags(s).join(' ')}" ;;`).join('\n');
  return `# bash completion for kiln: source <(kiln completion bash)
_kiln() {
  local cur=\${COMP_WORDS[COMP_CWORD]} cmd=\${COMP_WORDS[1]} flags=""
  if [ "$COMP_CWORD" -eq 1 ]; then
    COMPREPLY=($(compgen -W "${specs.map((s) => s.name).join(' ')} ls help" -- "$cur"))
    return
  fi
  case "$cmd" in
${cases}
  esac
  if [[ "$cur" == -* ]]; then
    COMPREPLY=($(compgen -W "$flags" -- "$cur"))
  elif [[ " ${IMAGE_COMMANDS.join(' ')} " == *" $cmd "* ]]; then
    COMPREPLY=($(compgen -W "$(${IMAGES})" -- "$cur"))
  else
    COMPREPLY=($(compgen -f -- "$cur"))
  fi
}
complete -F _kiln kiln
`;
}

export function zshScript(specs: readonly CommandSpec[]): string {
  const commands = specs.map((s) => `    '${s.name}:${s.description.split(/[.:]/)[0]!.replace(/'/g, "'\\''").replace(/:/g, '\\:')}'`).join('\n');
  const cases = specs.map((s) => `    ${s.name}) flags=(${flags(s).join(' ')}) ;;`).join('\n');
  return `#compdef kiln
# zsh completion for kiln: kiln completion zsh > "\${fpath[1]}/_kiln"
_kiln() {
  local -a commands flags
  commands=(
${commands}
  )
  if (( CURRENT == 2 )); then
    _describe 'command' commands
    return
  fi
  case "\${words[2]}" in
${cases}
  esac
  if [[ "\${words[CURRENT]}" == -* ]]; then
    compadd -- $flags
    return
  fi
  case "\${words[2]}" in
    ${IMAGE_COMMANDS.join('|')}) compadd -- \${(f)"$(${IMAGES})"} ;;
    *) _files ;;
  esac
}
compdef _kiln kiln 2>/dev/null || _kiln "$@"
`;
}
