//! The client commands, one file per command group.

pub mod admin;
pub mod audit;
pub mod auth;
pub mod completions;
pub mod config;
pub mod crews;
pub mod passwd;
pub mod safe;
pub mod share;
pub mod subdomains;
pub mod tokens;
pub mod traffic;
pub mod tunnels;

use std::io::{BufRead, ErrorKind, IsTerminal, Write};

use crate::exit::{self, write_stderr, CliError};

/// `print!` for command output: a reader that went away (`berth tokens list | head -1`)
/// ends berth quietly instead of panicking as `print!` does.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::write_stdout(&format!($($arg)*))
    };
}

/// `println!` for command output, with `out!`'s handling of a closed pipe.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::cli::write_stdout(&format!("{}\n", format_args!($($arg)*)))
    };
}

pub(crate) use {out, outln};

/// Write command output; a closed pipe exits 0 like other Unix tools' readers expect,
/// any other failure (a full disk) exits 1 with one sentence.
pub fn write_stdout(text: &str) {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => {}
        Err(err) if err.kind() == ErrorKind::BrokenPipe => std::process::exit(0),
        Err(err) => {
            write_stderr(&format!(
                "error: could not write to standard output: {err}\n"
            ));
            std::process::exit(i32::from(exit::OTHER))
        }
    }
}

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
