// `kedge completion bash|zsh`: a completion script for the shell, built from
// the CLI's own command and resource lists so it cannot drift from them.
// zsh uses the same function through bashcompinit.
import { KedgeError } from '../proto/model/errors';

/** What completion offers: commands, the kinds get/delete take, and sub-commands. */
export interface CompletionWords {
  commands: readonly string[];
  kinds: readonly string[];
  subcommands: Readonly<Record<string, readonly string[]>>;
}

/** The bash completion function for `kedge`. */
export function bashCompletion(w: CompletionWords): string {
  const sub = Object.entries(w.subcommands)
    .map(([cmd, words]) => `    ${cmd}) [ "$COMP_CWORD" -eq 2 ] && COMPREPLY=( $(compgen -W "${words.join(' ')}" -- "$cur") ) ;;`)
    .join('\n');
  return `# kedge completion for bash: source it, or put it in /etc/bash_completion.d/kedge
_kedge() {
  local cur prev
  cur="\${COMP_WORDS[COMP_CWORD]}"
  prev="\${COMP_WORDS[COMP_CWORD-1]}"
  COMPREPLY=()
  case "$prev" in
    -o|--output) COMPREPLY=( $(compgen -W "table json yaml" -- "$cur") ); return 0 ;;
    -f|--filename|-c|--config|--admin-token-file|--root-cert|--data-dir|--package-dir) COMPREPLY=( $(compgen -f -- "$cur") ); return 0 ;;
  esac
  if [ "$COMP_CWORD" -eq 1 ]; then
    COMPREPLY=( $(compgen -W "${w.commands.join(' ')}" -- "$cur") )
    return 0
  fi
  case "\${COMP_WORDS[1]}" in
    get|delete) [ "$COMP_CWORD" -eq 2 ] && COMPREPLY=( $(compgen -W "${w.kinds.join(' ')}" -- "$cur") ) ;;
${sub}
  esac
  return 0
}
complete -F _kedge kedge
`;
}

/** The zsh completion: the bash function through zsh's bashcompinit. */
export function zshCompletion(w: CompletionWords): string {
  return `# kedge completion for zsh: source it from ~/.zshrc
autoload -U +X compinit && compinit
autoload -U +X bashcompinit && bashcompinit
${bashCompletion(w).split('\n').slice(1).join('\n')}`;
}

/** Runs `kedge completion SHELL`; returns the script. */
export function runCompletion(argv: string[], words: CompletionWords): string {
  const [shell, ...rest] = argv;
  if (rest.length || (shell !== 'bash' && shell !== 'zsh')) throw new KedgeError('KEDGE_USAGE', 'usage: kedge completion bash|zsh   (e.g. source <(kedge completion bash))');
  return shell === 'bash' ? bashCompletion(words) : zshCompletion(words);
}
