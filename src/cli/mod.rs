//! The client commands, one file per command group.

pub mod admin;
pub mod auth;
pub mod config;
pub mod crews;
pub mod tokens;

pub use crate::client::CliError;

/// What every command returns.
pub type CliResult = Result<(), CliError>;
