//! The client commands, one file per command group.

pub mod admin;
pub mod auth;
pub mod config;
pub mod crews;
pub mod tokens;

use std::io::{BufRead, IsTerminal};

pub use crate::client::CliError;

/// What every command returns.
pub type CliResult = Result<(), CliError>;

/// A password from one line of standard input, or a prompt on the terminal
/// (asked twice when `confirm`, for a new password).
pub fn read_password(prompt: &str, from_stdin: bool, confirm: bool) -> Result<String, CliError> {
    if from_stdin {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).map_err(|e| {
            CliError::other(format!(
                "could not read the password from standard input: {e}"
            ))
        })?;
        let password = line.trim_end_matches(['\r', '\n']).to_string();
        if password.is_empty() {
            return Err(CliError::usage("Standard input held no password; pipe it in, e.g. `echo \"$PASSWORD\" | berth ... --password-stdin`."));
        }
        return Ok(password);
    }
    if !std::io::stdin().is_terminal() {
        return Err(CliError::usage(
            "No terminal to ask for a password; pass --password-stdin and pipe the password in.",
        ));
    }
    let password = rpassword::prompt_password(prompt)
        .map_err(|e| CliError::other(format!("could not read the password: {e}")))?;
    if confirm {
        let again = rpassword::prompt_password("Repeat it: ")
            .map_err(|e| CliError::other(format!("could not read the password: {e}")))?;
        if again != password {
            return Err(CliError::usage("The passwords did not match; try again."));
        }
    }
    Ok(password)
}
