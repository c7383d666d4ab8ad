//! `berth login`, `logout` and `whoami`, and the username and password prompts.

use std::io::{BufRead, IsTerminal, Write};

use serde_json::{json, Value};

use crate::cli::safe::shown;
use crate::cli::{out, outln};
use crate::client::{Auth, Client};
use crate::config::{Masked, Session};
use crate::exit::{self, CliError, CliResult};
use crate::token::Token;
use crate::{GlobalArgs, LoginArgs, LogoutArgs};

/// How many `<hostname> - CLI (n)` names login tries before giving up.
const MAX_NAME_ATTEMPTS: u32 = 10;

/// Mint a token for this machine with a username and password, and save it.
pub fn login(global: &GlobalArgs, args: LoginArgs) -> CliResult {
    let mut session = Session::load(global)?;
    let username = match args.username {
        Some(username) => username,
        None => read_username()?,
    };
    let password = read_password(args.password_stdin, &format!("Password for {username}: "))?;
    let client = Client::new(
        &session.settings,
        Auth::Basic {
            username: username.clone(),
            password,
        },
    )?;
    let created = create_named_token(&client, &token_base_name(), args.crew.as_deref())
        .map_err(|err| without_crew(err, &username))?;

    let secret = created["secret"].as_str().unwrap_or_default().to_string();
    Token::parse(&secret).map_err(|_| {
        CliError::other("The server answered without a usable token; check that --server points at a berth server")
    })?;
    let token = &created["token"];
    let id = token["id"].as_i64().unwrap_or_default();
    let name = text(&token["name"]);
    let crew = text(&token["crew"]["name"]);
    let username = token["user"]["username"]
        .as_str()
        .unwrap_or(&username)
        .to_string();

    let config = &mut session.config;
    config.token = Some(Masked::new(secret));
    config.username = Some(username.clone());
    config.server = Some(session.settings.server.clone());
    config.api_token_name = Some(name.clone());
    config.save(&session.path).map_err(|err| {
        CliError::other(format!(
            "Token {id} \"{name}\" was created but not saved ({}); revoke it with `berth tokens revoke {id}` and log in again",
            err.message
        ))
    })?;
    outln!(
        "Logged in as {} (crew {}). Token {id} \"{}\" saved to {}",
        shown(&username),
        shown(&crew),
        shown(&name),
        session.path.display()
    );
    Ok(())
}

/// At login, "No team context" means the user is in no crew at all (a crew they
/// are not in is "not found"), so the generic "no longer a member" would mislead.
fn without_crew(err: CliError, username: &str) -> CliError {
    if err.code == exit::FORBIDDEN && err.message.starts_with("No team context") {
        CliError::new(
            exit::FORBIDDEN,
            format!("{username} is not a member of any crew yet; ask a crew owner or admin to run `berth crews add-member CREW {username} --role member`, then log in again"),
        )
    } else {
        err
    }
}

/// POST a token named `base`, then `base (2)`, `base (3)`... while the name is taken.
fn create_named_token(client: &Client, base: &str, crew: Option<&str>) -> Result<Value, CliError> {
    for attempt in 1..=MAX_NAME_ATTEMPTS {
        let name = if attempt == 1 {
            base.to_string()
        } else {
            format!("{base} ({attempt})")
        };
        let mut body = json!({ "name": name });
        if let Some(crew) = crew {
            body["crew"] = id_or_name(crew);
        }
        match client.post("/api/v1/tokens", &body) {
            Err(err) if err.code == exit::CONFLICT => continue,
            other => return other,
        }
    }
    Err(CliError::new(
        exit::CONFLICT,
        format!(
            "Tokens \"{base}\" to \"{base} ({MAX_NAME_ATTEMPTS})\" all exist; revoke old ones with `berth tokens revoke NAME` and log in again"
        ),
    ))
}

/// Remove the saved token (and revoke it first with `--revoke`).
pub fn logout(global: &GlobalArgs, args: LogoutArgs) -> CliResult {
    let mut session = Session::load(global)?;
    let Some(saved) = session.config.token.clone() else {
        outln!(
            "Not logged in: no token saved in {}",
            session.path.display()
        );
        return Ok(());
    };
    let mut revoked = "";
    if args.revoke {
        let token = Token::parse(saved.expose()).map_err(|_| {
            CliError::new(
                exit::NOT_AUTHENTICATED,
                "The saved token is malformed and cannot be revoked; run `berth logout` without --revoke to remove it",
            )
        })?;
        let client = Client::new(&session.settings, Auth::Bearer(saved))?;
        match client.delete(&format!("/api/v1/tokens/{}", token.id)) {
            Ok(_) => revoked = " and revoked it on the server",
            // Already revoked, expired or deleted: nothing left to do on the server.
            Err(err) if err.code == exit::NOT_AUTHENTICATED || err.code == exit::NOT_FOUND => {
                revoked = " (it was already revoked or expired)"
            }
            // Removed from the crew: the server refuses the token for everything, but
            // honours it again if the user is added back, so it must not look revoked.
            Err(err) if err.code == exit::FORBIDDEN => {
                return Err(CliError::new(
                    exit::FORBIDDEN,
                    format!(
                        "The server refused to revoke token {id} ({}); it is still saved here: run `berth logout` to remove it, and ask a crew admin to run `berth tokens revoke {id}`",
                        first_clause(&err.message),
                        id = token.id
                    ),
                ))
            }
            Err(err) => return Err(err),
        }
    }
    let config = &mut session.config;
    config.token = None;
    config.username = None;
    config.api_token_name = None;
    config.save(&session.path)?;
    outln!(
        "Logged out: removed the token from {}{revoked}",
        session.path.display()
    );
    Ok(())
}

/// An error sentence up to its first colon or semicolon, to quote inside another.
fn first_clause(message: &str) -> &str {
    message.split([':', ';']).next().unwrap_or(message).trim()
}

/// Show who the current token belongs to.
pub fn whoami(global: &GlobalArgs) -> CliResult {
    let session = Session::load(global)?;
    let client = Client::with_token(&session.settings)?;
    let me = client.get("/api/v1/me", &[])?;
    if global.json {
        outln!("{}", pretty(&me));
    } else {
        out!("{}", whoami_text(&me, client.server()));
    }
    Ok(())
}

fn whoami_text(me: &Value, server: &str) -> String {
    let token = match &me["token"] {
        Value::Null => "-".to_string(),
        token => format!("{} \"{}\"", token["id"], shown(&text(&token["name"]))),
    };
    format!(
        "User:    {}\nCrew:    {}\nRole:    {}\nToken:   {token}\nServer:  {server}\n",
        shown(&text(&me["user"]["username"])),
        shown(&text(&me["crew"]["name"])),
        shown(&text(&me["role"])),
    )
}

/// A JSON value's text, `-` when missing or empty.
pub(crate) fn text(value: &Value) -> String {
    match value {
        Value::String(s) if !s.is_empty() => s.clone(),
        Value::Null | Value::String(_) => "-".to_string(),
        other => other.to_string(),
    }
}

/// JSON for `--json` output.
pub(crate) fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default()
}

/// A crew argument as the API takes it: a number for an id, else a name.
pub(crate) fn id_or_name(arg: &str) -> Value {
    match arg.parse::<i64>() {
        Ok(id) if !arg.starts_with('+') => json!(id),
        _ => json!(arg),
    }
}

/// `<hostname> - CLI`, the default name of a login token.
fn token_base_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| crate::config::process_env("HOSTNAME"))
        .unwrap_or_else(|| "unknown-host".to_string());
    format!("{host} - CLI")
}

/// Ask for a username on the terminal.
fn read_username() -> Result<String, CliError> {
    if !std::io::stdin().is_terminal() {
        return Err(CliError::usage(
            "A username is needed and standard input is not a terminal; pass --username",
        ));
    }
    eprint!("Username: ");
    let _ = std::io::stderr().flush();
    let line = read_stdin_line()?;
    if line.is_empty() {
        return Err(CliError::usage("No username given; pass --username"));
    }
    Ok(line)
}

/// A password from one line of standard input (`--password-stdin`) or a terminal prompt.
pub(crate) fn read_password(from_stdin: bool, prompt: &str) -> Result<Masked, CliError> {
    let password = if from_stdin {
        read_stdin_line()?
    } else if std::io::stdin().is_terminal() {
        rpassword::prompt_password(prompt)
            .map_err(|err| CliError::other(format!("could not read the password: {err}")))?
    } else {
        return Err(CliError::usage(
            "A password is needed and standard input is not a terminal; pass --password-stdin and pipe the password in",
        ));
    };
    if password.is_empty() {
        return Err(CliError::usage(
            "The password is empty; type it or pipe it in with --password-stdin",
        ));
    }
    Ok(Masked::new(password))
}

fn read_stdin_line() -> Result<String, CliError> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|err| CliError::other(format!("could not read standard input: {err}")))?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whoami_lists_user_crew_role_token_and_server() {
        let me = json!({
            "user": {"id": 1, "username": "alice"},
            "crew": {"id": 2, "name": "home", "default_redaction": "standard"},
            "role": "owner",
            "token": {"id": 3, "name": "host - CLI"}
        });
        assert_eq!(
            whoami_text(&me, "http://s"),
            "User:    alice\nCrew:    home\nRole:    owner\nToken:   3 \"host - CLI\"\nServer:  http://s\n"
        );
        let session = json!({"user": {"username": "a"}, "crew": {"name": "c"}, "role": "viewer", "token": null});
        assert!(whoami_text(&session, "s").contains("Token:   -\n"));
    }

    #[test]
    fn crew_arguments_are_ids_or_names() {
        assert_eq!(id_or_name("12"), json!(12));
        assert_eq!(id_or_name("home"), json!("home"));
        assert_eq!(id_or_name("+1"), json!("+1"));
    }

    #[test]
    fn login_token_names_end_in_cli() {
        assert!(token_base_name().ends_with(" - CLI"));
    }
}
