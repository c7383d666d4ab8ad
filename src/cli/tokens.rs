//! `berth tokens list|create|revoke|destroy|set-redaction`, and the table printer.

use serde_json::{json, Value};

use crate::cli::auth::{id_or_name, pretty, read_password, text};
use crate::cli::safe::{shown, shown_lines};
use crate::cli::{out, outln};
use crate::client::{Auth, Client};
use crate::config::Session;
use crate::exit::{self, write_stderr, CliError, CliResult};
use crate::time_fmt;
use crate::{CreateTokenArgs, GlobalArgs, TokensCommand};

/// Most ids the server takes in one bulk call.
const MAX_BULK_IDS: usize = 1000;
/// Redaction tiers a token can be set to.
const TIERS: [&str; 3] = ["standard", "strict", "inherit"];

/// Run one `berth tokens` subcommand.
pub fn run(global: &GlobalArgs, command: TokensCommand) -> CliResult {
    let session = Session::load(global)?;
    match command {
        TokensCommand::List {
            username,
            crew,
            all,
            password_stdin,
        } => {
            let client = client_for(&session, username, password_stdin)?;
            list(global, &client, crew.as_deref(), all)
        }
        TokensCommand::Create(args) => {
            create(global, &Client::with_token(&session.settings)?, args)
        }
        TokensCommand::Revoke { tokens, disconnect } => bulk(
            &Client::with_token(&session.settings)?,
            &tokens,
            Action::Revoke { disconnect },
        ),
        TokensCommand::Destroy {
            mut args,
            password_stdin,
        } => {
            let name = args.pop().unwrap_or_default();
            let client = client_for(&session, args.pop(), password_stdin)?;
            bulk(&client, &[name], Action::Revoke { disconnect: false })
        }
        TokensCommand::SetRedaction { tier, tokens } => {
            let tier = checked_tier(&tier)?;
            bulk(
                &Client::with_token(&session.settings)?,
                &tokens,
                Action::SetRedaction(tier),
            )
        }
    }
}

/// The resolved token, or USERNAME with a password when one was named.
fn client_for(
    session: &Session,
    username: Option<String>,
    password_stdin: bool,
) -> Result<Client, CliError> {
    match username {
        None => Client::with_token(&session.settings),
        Some(username) => {
            let password = read_password(password_stdin, &format!("Password for {username}: "))?;
            Client::new(&session.settings, Auth::Basic { username, password })
        }
    }
}

fn list(global: &GlobalArgs, client: &Client, crew: Option<&str>, all: bool) -> CliResult {
    let mut query = Vec::new();
    if let Some(crew) = crew {
        query.push(("crew", crew));
    }
    if all {
        query.push(("all", "1"));
    }
    let answer = client.get("/api/v1/tokens", &query)?;
    let tokens = answer["tokens"].as_array().cloned().unwrap_or_default();
    if global.json {
        outln!("{}", pretty(&Value::Array(tokens)));
    } else {
        out!("{}", tokens_table(&tokens));
    }
    Ok(())
}

/// The token table: ID, NAME, CREW, CREATED, LAST USED, REDACTION, REGION, SERVER, STATUS.
fn tokens_table(tokens: &[Value]) -> String {
    let rows = tokens
        .iter()
        .map(|t| {
            let redaction = match t["redaction"].as_str() {
                Some("inherit") => match t["effective_redaction"].as_str() {
                    Some(effective) => format!("inherit ({effective})"),
                    None => "inherit".to_string(),
                },
                _ => text(&t["redaction"]),
            };
            vec![
                text(&t["id"]),
                text(&t["name"]),
                text(&t["crew"]["name"]),
                when(&t["created_at"], "-"),
                when(&t["last_used_at"], "never"),
                redaction,
                text(&t["region"]),
                text(&t["server"]),
                text(&t["status"]),
            ]
        })
        .collect();
    table(
        &[
            "ID",
            "NAME",
            "CREW",
            "CREATED",
            "LAST USED",
            "REDACTION",
            "REGION",
            "SERVER",
            "STATUS",
        ],
        rows,
    )
}

/// A time as "3 minutes ago", or `missing` when null.
pub(crate) fn when(value: &Value, missing: &str) -> String {
    match value.as_str() {
        Some(at) if !at.is_empty() => time_fmt::ago(at),
        _ => missing.to_string(),
    }
}

/// Columns padded to their widest cell, two spaces apart; cells are shown
/// with control and format characters escaped (they hold what others chose).
pub(crate) fn table(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    let rows: Vec<Vec<String>> = rows
        .into_iter()
        .map(|row| row.iter().map(|cell| shown(cell).into_owned()).collect())
        .collect();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let header = headers.iter().map(|h| h.to_string()).collect();
    let mut out = String::new();
    for row in std::iter::once(header).chain(rows) {
        let mut line = String::new();
        for (i, (cell, width)) in row.iter().zip(&widths).enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            line.push_str(cell);
            line.extend(std::iter::repeat_n(' ', width - cell.chars().count()));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn create(global: &GlobalArgs, client: &Client, args: CreateTokenArgs) -> CliResult {
    let mut body = json!({ "name": args.name });
    if let Some(crew) = &args.crew {
        body["crew"] = id_or_name(crew);
    }
    if let Some(tier) = &args.redaction {
        body["redaction"] = json!(checked_tier(tier)?);
    }
    if let Some(region) = args.region {
        body["region"] = json!(region);
    }
    if let Some(server) = args.cli_server {
        body["server"] = json!(server);
    }
    if let Some(days) = args.expires_in_days {
        body["expires_in_days"] = json!(days);
    }
    if !args.scopes.is_empty() {
        body["scopes"] = json!(args.scopes);
    }
    let created = client.post("/api/v1/tokens", &body)?;
    if global.json {
        outln!("{}", pretty(&created));
    } else {
        outln!("{}", text(&created["secret"]));
    }
    let token = &created["token"];
    write_stderr(&format!(
        "Token {} \"{}\" created in crew {}. Copy it now: it will not be shown again.\n",
        text(&token["id"]),
        shown(&text(&token["name"])),
        shown(&text(&token["crew"]["name"])),
    ));
    // E.g. the expiry limited to the creating token's.
    for note in created["notes"].as_array().into_iter().flatten() {
        write_stderr(&format!("{}\n", text(note)));
    }
    Ok(())
}

fn checked_tier(tier: &str) -> Result<&str, CliError> {
    TIERS.into_iter().find(|t| *t == tier).ok_or_else(|| {
        CliError::usage(format!(
            "Unknown redaction tier `{tier}`; use standard, strict or inherit"
        ))
    })
}

/// What a bulk call does to the tokens it names.
enum Action<'a> {
    /// With `disconnect`, also close the live tunnels the tokens opened.
    Revoke {
        disconnect: bool,
    },
    SetRedaction(&'a str),
}

/// Resolve ids and names, make the bulk calls, report each token.
fn bulk(client: &Client, args: &[String], action: Action) -> CliResult {
    let (targets, mut failures) = resolve_tokens(client, args)?;
    for chunk in targets.chunks(MAX_BULK_IDS) {
        let ids: Vec<i64> = chunk.iter().map(|(id, _)| *id).collect();
        let mut body = json!({ "ids": ids });
        match action {
            Action::Revoke { disconnect } => {
                body["action"] = json!("revoke");
                if disconnect {
                    body["disconnect"] = json!(true);
                }
            }
            Action::SetRedaction(tier) => {
                body["action"] = json!("set_redaction");
                body["redaction"] = json!(tier);
            }
        }
        let answer = client.post("/api/v1/tokens/bulk", &body)?;
        let label = |id: i64| {
            let name = chunk
                .iter()
                .find(|(t, _)| *t == id)
                .and_then(|(_, n)| n.as_deref());
            token_label(id, name)
        };
        for id in answer["updated"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_i64)
        {
            match action {
                Action::Revoke { disconnect: false } => outln!("Revoked {}", label(id)),
                Action::Revoke { disconnect: true } => {
                    outln!("Revoked {} and closed its live tunnels", label(id))
                }
                Action::SetRedaction(tier) => outln!("Set redaction of {} to {tier}", label(id)),
            }
        }
        for failed in answer["failed"].as_array().into_iter().flatten() {
            let id = failed["id"].as_i64().unwrap_or_default();
            failures.push(failure(&label(id), &failed["error"]));
        }
    }
    report_failures(failures, args.len())
}

/// Print every failure; the exit code is the first one's.
fn report_failures(mut failures: Vec<CliError>, asked: usize) -> CliResult {
    match failures.len() {
        0 => return Ok(()),
        1 => return Err(failures.remove(0)),
        _ => {}
    }
    let code = failures[0].code;
    for failure in &failures {
        write_stderr(&format!("error: {}\n", shown_lines(&failure.message)));
    }
    Err(CliError::new(
        code,
        format!("{} of {asked} tokens were not changed", failures.len()),
    ))
}

/// `token 17 "laptop - CLI"`, or `token 17` when the name is unknown.
fn token_label(id: i64, name: Option<&str>) -> String {
    match name {
        Some(name) => format!("token {id} \"{}\"", shown(name)),
        None => format!("token {id}"),
    }
}

/// A `failed` entry of a bulk answer as an error naming the token.
fn failure(label: &str, error: &Value) -> CliError {
    let mapped = crate::client::error_from_response(
        status_of(error["code"].as_str().unwrap_or("")),
        None,
        &json!({ "error": error }).to_string(),
    );
    let mut message = mapped.message;
    if let Some(first) = message.get(..1) {
        message = format!("{}{}", first.to_lowercase(), &message[1..]);
    }
    CliError::new(mapped.code, format!("Could not change {label}: {message}"))
}

/// The HTTP status an error code stands for (bulk failures carry no status).
fn status_of(code: &str) -> u16 {
    match code {
        "no_token" | "invalid_token" | "token_expired" | "bad_credentials" => 401,
        "no_team_context" | "forbidden" => 403,
        "not_found" => 404,
        "conflict" => 409,
        "rate_limited" => 429,
        "bad_request" => 400,
        _ => 500,
    }
}

/// Numbers are ids; anything else names the caller's own active tokens.
/// Returns (id, name if known) per target and a failure per name that matched nothing.
#[allow(clippy::type_complexity)]
fn resolve_tokens(
    client: &Client,
    args: &[String],
) -> Result<(Vec<(i64, Option<String>)>, Vec<CliError>), CliError> {
    let mine = if args.iter().any(|a| a.parse::<i64>().is_err()) {
        let answer = client.get("/api/v1/tokens", &[])?;
        answer["tokens"].as_array().cloned().unwrap_or_default()
    } else {
        Vec::new()
    };
    let mut targets: Vec<(i64, Option<String>)> = Vec::new();
    let mut failures = Vec::new();
    for arg in args {
        let found = match arg.parse::<i64>() {
            Ok(id) => Ok(vec![id]),
            Err(_) => match_name(&mine, arg),
        };
        match found {
            Ok(ids) => {
                for id in ids {
                    if !targets.iter().any(|(t, _)| *t == id) {
                        let name = mine
                            .iter()
                            .find(|t| t["id"].as_i64() == Some(id))
                            .and_then(|t| t["name"].as_str())
                            .map(str::to_string);
                        targets.push((id, name));
                    }
                }
            }
            Err(err) => failures.push(err),
        }
    }
    Ok((targets, failures))
}

/// The id of the one active token named `name`.
fn match_name(tokens: &[Value], name: &str) -> Result<Vec<i64>, CliError> {
    let matches: Vec<&Value> = tokens
        .iter()
        .filter(|t| t["name"].as_str() == Some(name) && t["status"].as_str() == Some("active"))
        .collect();
    match matches.as_slice() {
        [] => Err(CliError::not_found(format!(
            "No active token of yours is named \"{name}\"; `berth tokens list` shows them"
        ))),
        [one] => Ok(one["id"].as_i64().into_iter().collect()),
        many => {
            let ids: Vec<String> = many.iter().map(|t| text(&t["id"])).collect();
            Err(CliError::new(
                exit::USAGE,
                format!(
                    "Several of your tokens are named \"{name}\" (ids {}); name them by id",
                    ids.join(", ")
                ),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_pads_columns_and_trims_line_ends() {
        let out = table(
            &["ID", "NAME"],
            vec![
                vec!["1".into(), "a".into()],
                vec!["10".into(), "longer".into()],
            ],
        );
        assert_eq!(out, "ID  NAME\n1   a\n10  longer\n");
    }

    #[test]
    fn token_table_columns() {
        let token = json!({
            "id": 3, "name": "host - CLI", "crew": {"id": 1, "name": "home"},
            "created_at": "2001-01-01T00:00:00Z", "last_used_at": null,
            "redaction": "inherit", "effective_redaction": "standard",
            "region": null, "server": "", "status": "active"
        });
        let out = tokens_table(&[token]);
        let mut lines = out.lines();
        let header: Vec<&str> = lines
            .next()
            .unwrap()
            .split("  ")
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        assert_eq!(
            header,
            [
                "ID",
                "NAME",
                "CREW",
                "CREATED",
                "LAST USED",
                "REDACTION",
                "REGION",
                "SERVER",
                "STATUS"
            ]
        );
        let row = lines.next().unwrap();
        for cell in [
            "3",
            "host - CLI",
            "home",
            "days ago",
            "never",
            "inherit (standard)",
            "active",
        ] {
            assert!(row.contains(cell), "{row} lacks {cell}");
        }
        assert!(row.contains(" -  "), "{row}");
    }

    #[test]
    fn names_resolve_to_one_active_token() {
        let tokens = [
            json!({"id": 1, "name": "a", "status": "revoked"}),
            json!({"id": 2, "name": "a", "status": "active"}),
            json!({"id": 3, "name": "b", "status": "active"}),
            json!({"id": 4, "name": "b", "status": "active"}),
        ];
        assert_eq!(match_name(&tokens, "a").unwrap(), [2]);
        assert_eq!(match_name(&tokens, "c").unwrap_err().code, exit::NOT_FOUND);
        assert_eq!(match_name(&tokens, "b").unwrap_err().code, exit::USAGE);
    }

    #[test]
    fn tiers_are_checked_client_side() {
        assert_eq!(checked_tier("strict").unwrap(), "strict");
        assert_eq!(checked_tier("loose").unwrap_err().code, exit::USAGE);
    }

    #[test]
    fn bulk_failures_keep_their_exit_codes() {
        let err = failure(
            "token 9",
            &json!({"code": "not_found", "message": "Token 9 not found"}),
        );
        assert_eq!(err.code, exit::NOT_FOUND);
        assert_eq!(err.message, "Could not change token 9: token 9 not found");
        let err = failure(
            "token 9",
            &json!({"code": "forbidden", "message": "Not yours"}),
        );
        assert_eq!(err.code, exit::FORBIDDEN);
    }
}
