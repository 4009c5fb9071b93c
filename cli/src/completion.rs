//! `flotilla completion SHELL`: completion scripts for bash, zsh and fish,
//! generated from the same clap definitions as `--help`, with unit names
//! completed from the cluster: the scripts call the hidden
//! `flotilla __complete-units PREFIX` for the arguments of the unit verbs,
//! which prints nothing (and fails silently) without a cluster to ask.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{CommandFactory, ValueEnum};

use crate::Global;
use crate::config::default_path;

/// The shells completion scripts are made for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The shell to print the script for.
    #[arg(value_enum)]
    shell: Shell,
}

#[derive(Debug, clap::Args)]
pub struct UnitsArgs {
    /// The start of the unit names to list.
    #[arg(default_value = "")]
    prefix: String,
}

/// The verbs whose arguments are units of the cluster.
pub const UNIT_VERBS: [&str; 9] = [
    "load", "start", "stop", "unload", "destroy", "restart", "cat", "status", "journal",
];

/// How long completing unit names may wait for the cluster: a shell
/// waiting on a Tab must not hang on an unreachable server.
const UNITS_TIMEOUT: Duration = Duration::from_secs(2);

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let mut script = Vec::new();
    let mut cmd = crate::Cli::command();
    let generated = match args.shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    clap_complete::generate(generated, &mut cmd, "flotilla", &mut script);
    let verbs = UNIT_VERBS.join(" ");
    let dynamic = match args.shell {
        Shell::Bash => BASH_UNITS.replace("@VERBS@", &UNIT_VERBS.join("|")),
        Shell::Zsh => ZSH_UNITS.replace("@VERBS@", &UNIT_VERBS.join("|")),
        Shell::Fish => FISH_UNITS.replace("@VERBS@", &verbs),
    };
    script.extend_from_slice(dynamic.as_bytes());
    std::io::stdout()
        .write_all(&script)
        .context("cannot write the script")?;
    Ok(ExitCode::SUCCESS)
}

/// `flotilla __complete-units PREFIX`: the cluster's unit names starting
/// with PREFIX, one a line. Prints nothing and exits 0 when there is no
/// cluster configured (no client configuration, no --endpoint) or the
/// cluster does not answer in time: a completion never prints an error.
pub fn units(global: &Global, args: &UnitsArgs) -> ExitCode {
    let configured = !global.endpoint.is_empty()
        || global.cluster.is_some()
        || default_path().is_some_and(|p| p.exists());
    if !configured {
        return ExitCode::SUCCESS;
    }
    let Ok(client) = crate::client::connect(global) else {
        return ExitCode::SUCCESS;
    };
    let client = client.with_timeout(UNITS_TIMEOUT);
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return ExitCode::SUCCESS;
    };
    let units = runtime.block_on(async {
        tokio::time::timeout(UNITS_TIMEOUT, client.all_units())
            .await
            .ok()
            .and_then(Result::ok)
    });
    let mut out = std::io::stdout().lock();
    for unit in units.unwrap_or_default() {
        if unit.name.starts_with(&args.prefix) {
            let _ = writeln!(out, "{}", unit.name);
        }
    }
    ExitCode::SUCCESS
}

/// Wraps clap's `_flotilla`: for the arguments of the unit verbs, the
/// cluster's unit names and local files.
const BASH_UNITS: &str = r#"
# Unit names from the cluster for the unit verbs (flotilla __complete-units).
_flotilla_units() {
    _flotilla "$@"
    local cur="${COMP_WORDS[COMP_CWORD]}" prev="${COMP_WORDS[COMP_CWORD-1]}"
    local i verb=""
    for (( i = 1; i < COMP_CWORD; i++ )); do
        case "${COMP_WORDS[i]}" in
            --cluster|--endpoint|--token|--token-file|--ca|--cert|--key|-o|--output) (( i++ )) ;;
            -*) ;;
            *) verb="${COMP_WORDS[i]}"; break ;;
        esac
    done
    [[ -n "$verb" && "$cur" != -* ]] || return 0
    case "$prev" in
        --cluster|--endpoint|--token|--token-file|--ca|--cert|--key|-o|--output|--block-attempts|-n|--lines|--since|--machine) return 0 ;;
    esac
    case "$verb" in
        @VERBS@)
            local IFS=$'\n'
            COMPREPLY=( $(compgen -W "$("${COMP_WORDS[0]}" __complete-units "$cur" 2>/dev/null)" -- "$cur") $(compgen -f -- "$cur") )
            ;;
    esac
    return 0
}
if [[ "${BASH_VERSINFO[0]}" -eq 4 && "${BASH_VERSINFO[1]}" -ge 4 || "${BASH_VERSINFO[0]}" -gt 4 ]]; then
    complete -F _flotilla_units -o nosort -o bashdefault -o default flotilla
else
    complete -F _flotilla_units -o bashdefault -o default flotilla
fi
"#;

/// Adds the cluster's unit names to clap's `_flotilla`, whether the file is
/// sourced or autoloaded from $fpath.
const ZSH_UNITS: &str = r#"
# Unit names from the cluster for the unit verbs (flotilla __complete-units).
_flotilla_units() {
    [[ $CURRENT -gt 2 && $PREFIX != -* ]] || return 0
    case ${words[2]} in
        @VERBS@)
            local -a units
            units=(${(f)"$(${words[1]} __complete-units "$PREFIX" 2>/dev/null)"})
            (( ${#units} )) && compadd -a units
            ;;
    esac
    return 0
}
if (( ! ${+functions[_flotilla_clap]} )); then
    functions[_flotilla_clap]=$functions[_flotilla]
    _flotilla() { _flotilla_clap "$@"; _flotilla_units; }
    if [ "$funcstack[1]" = "_flotilla" ]; then
        _flotilla_units
    fi
fi
"#;

/// The cluster's unit names beside local files for the unit verbs.
const FISH_UNITS: &str = r#"
# Unit names from the cluster for the unit verbs (flotilla __complete-units).
function __flotilla_units
    set -l argv0 (commandline -opc)[1]
    $argv0 __complete-units (commandline -ct) 2>/dev/null
end
complete -c flotilla -n "__fish_seen_subcommand_from @VERBS@" -a "(__flotilla_units)"
"#;
