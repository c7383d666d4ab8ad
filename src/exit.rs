//! How a command ends: the exit codes of DESIGN §3, the one-sentence error
//! that carries one, and standard error. Below the CLI, its API client, its
//! config and the server alike, so none of them imports another for these.

use std::fmt;
use std::io::Write;

/// Any other error.
pub const OTHER: u8 = 1;
/// Bad arguments or flags.
pub const USAGE: u8 = 2;
/// No, invalid, expired or revoked token; wrong password.
pub const NOT_AUTHENTICATED: u8 = 3;
/// No team context, role or scope.
pub const FORBIDDEN: u8 = 4;
/// What was named does not exist.
pub const NOT_FOUND: u8 = 5;
/// A name, subdomain or port is taken.
pub const CONFLICT: u8 = 6;

/// A failure the CLI reports as one sentence and an exit code.
#[derive(Debug)]
pub struct CliError {
    pub code: u8,
    pub message: String,
}

impl CliError {
    pub fn new(code: u8, message: impl Into<String>) -> CliError {
        CliError {
            code,
            message: message.into(),
        }
    }

    pub fn other(message: impl Into<String>) -> CliError {
        CliError::new(OTHER, message)
    }

    pub fn usage(message: impl Into<String>) -> CliError {
        CliError::new(USAGE, message)
    }

    pub fn not_found(message: impl Into<String>) -> CliError {
        CliError::new(NOT_FOUND, message)
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// What every command returns.
pub type CliResult = Result<(), CliError>;

/// Write to standard error; if even that fails there is nobody left to tell.
pub fn write_stderr(text: &str) {
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}
