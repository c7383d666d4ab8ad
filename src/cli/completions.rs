//! `berth completions bash|zsh|fish`: completion scripts generated from the clap definitions.

use clap::ValueEnum;
use clap_complete::{generate, shells};

use crate::cli::write_stdout;
use crate::exit::CliResult;

/// The shells berth writes completions for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

/// The completion script for `shell`, for the command tree `cmd`.
pub fn script(shell: Shell, mut cmd: clap::Command) -> String {
    let mut out = Vec::new();
    match shell {
        Shell::Bash => generate(shells::Bash, &mut cmd, "berth", &mut out),
        Shell::Zsh => generate(shells::Zsh, &mut cmd, "berth", &mut out),
        Shell::Fish => generate(shells::Fish, &mut cmd, "berth", &mut out),
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Print the script to standard output.
pub fn run(shell: Shell, cmd: clap::Command) -> CliResult {
    write_stdout(&script(shell, cmd));
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn each_shell_gets_a_script_that_knows_the_subcommands() {
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let text = script(shell, crate::Cli::command());
            for word in ["tokens", "share", "set-redaction", "completions"] {
                assert!(text.contains(word), "{shell:?} script lacks {word}");
            }
        }
    }
}
