//! `berth config set|get|unset|list`: read and change the CLI config file.

use serde_json::{Map, Value};

use crate::cli::{out, outln};
use crate::config::{self, mask_token, Config, Key, VALID_KEYS};
use crate::exit::{self, CliError, CliResult};
use crate::token::{Token, FORMAT_HINT};
use crate::{ConfigCommand, GlobalArgs};

/// Run one `berth config` subcommand.
pub fn run(global: &GlobalArgs, command: ConfigCommand) -> CliResult {
    let path = config::path(&config::process_env)?;
    let mut file = Config::load(&path)?;
    match command {
        ConfigCommand::Set { key, value } => {
            let key = parse_key(&key)?;
            let value = checked_value(key, value)?;
            file.set(key, Some(value));
            file.save(&path)
        }
        ConfigCommand::Get { key } => {
            let key = parse_key(&key)?;
            match file.get(key) {
                Some(value) => {
                    outln!("{value}");
                    Ok(())
                }
                None => Err(CliError::other(format!(
                    "`{}` is not set in {}",
                    key.name(),
                    path.display()
                ))),
            }
        }
        ConfigCommand::Unset { key } => {
            let key = parse_key(&key)?;
            if file.get(key).is_some() {
                file.set(key, None);
                file.save(&path)?;
            }
            Ok(())
        }
        ConfigCommand::List => {
            if global.json {
                outln!("{}", list_json(&file));
            } else {
                out!("{}", list_text(&file));
            }
            Ok(())
        }
    }
}

fn parse_key(name: &str) -> Result<Key, CliError> {
    Key::from_name(name).ok_or_else(|| {
        CliError::usage(format!(
            "Unknown config key `{name}`; valid keys: {VALID_KEYS}"
        ))
    })
}

/// Refuse values that could only fail later, far from where they were typed.
fn checked_value(key: Key, value: String) -> Result<String, CliError> {
    let value = value.trim().to_string();
    match key {
        Key::Token => match Token::parse(&value) {
            Ok(_) => Ok(value),
            Err(_) => Err(CliError::new(exit::NOT_AUTHENTICATED, FORMAT_HINT)),
        },
        Key::Server => {
            if value.starts_with("http://") || value.starts_with("https://") {
                Ok(value.trim_end_matches('/').to_string())
            } else {
                Err(CliError::usage(format!(
                    "Server `{value}` is not a URL; use e.g. http://localhost:8080 or https://berth.example.com"
                )))
            }
        }
        // Stored absolute, so the CLI finds it from any working directory.
        Key::CaCert => std::path::absolute(&value)
            .map(|p| p.display().to_string())
            .map_err(|err| CliError::usage(format!("Bad CA certificate path `{value}`: {err}"))),
        Key::Username | Key::Region | Key::ApiTokenName => {
            if value.is_empty() {
                Err(CliError::usage(format!(
                    "`{}` needs a value; use `berth config unset {}` to remove it",
                    key.name(),
                    key.name()
                )))
            } else {
                Ok(value)
            }
        }
    }
}

/// `key = value` lines, the token masked; values escaped for the terminal
/// (the token's name came from the server).
fn list_text(file: &Config) -> String {
    let mut out = String::new();
    for (key, value) in shown_entries(file) {
        out.push_str(&format!("{key} = {}\n", crate::cli::safe::shown(&value)));
    }
    out
}

/// The same entries as a JSON object.
fn list_json(file: &Config) -> String {
    let object: Map<String, Value> = shown_entries(file)
        .into_iter()
        .map(|(key, value)| (key.to_string(), Value::String(value)))
        .collect();
    serde_json::to_string_pretty(&Value::Object(object)).unwrap_or_default()
}

fn shown_entries(file: &Config) -> Vec<(&'static str, String)> {
    Key::ALL
        .into_iter()
        .filter_map(|key| {
            let value = file.get(key)?;
            let shown = if key == Key::Token {
                mask_token(value)
            } else {
                value.to_string()
            };
            Some((key.name(), shown))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Masked;

    #[test]
    fn list_masks_the_token_and_keeps_the_order() {
        let file = Config {
            server: Some("http://s".into()),
            token: Some(Masked::new(
                "7|berth_abcdefghijklmnopqrstuvwxyz0123456789ABCD",
            )),
            api_token_name: Some("host - CLI".into()),
            ..Config::default()
        };
        assert_eq!(
            list_text(&file),
            "server = http://s\ntoken = 7|berth_abcd...\napiTokenName = host - CLI\n"
        );
        assert!(!list_json(&file).contains("efgh"));
        let named = Config {
            api_token_name: Some("evil\u{1b}]0;x\u{7}\u{202e}".into()),
            ..Config::default()
        };
        assert_eq!(
            list_text(&named),
            "apiTokenName = evil\\x1b]0;x\\x07\\u{202e}\n"
        );
        assert!(list_json(&named).contains("\\u001b]0;x\\u0007\u{202e}"));
    }

    #[test]
    fn unknown_keys_are_usage_errors_listing_the_valid_ones() {
        let err = parse_key("colour").unwrap_err();
        assert_eq!(err.code, exit::USAGE);
        assert_eq!(
            err.message,
            "Unknown config key `colour`; valid keys: server, token, username, region, ca_cert, apiToken, apiTokenName"
        );
        assert_eq!(parse_key("apiToken").unwrap(), Key::Token);
    }

    #[test]
    fn values_are_checked() {
        assert_eq!(
            checked_value(Key::Token, "17|x".into()).unwrap_err().code,
            exit::NOT_AUTHENTICATED
        );
        assert_eq!(
            checked_value(Key::Server, "localhost".into())
                .unwrap_err()
                .code,
            exit::USAGE
        );
        assert_eq!(
            checked_value(Key::Server, "http://h:1/".into()).unwrap(),
            "http://h:1"
        );
        let ca = checked_value(Key::CaCert, "ca.pem".into()).unwrap();
        assert!(std::path::Path::new(&ca).is_absolute());
    }
}
