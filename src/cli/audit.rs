//! `berth audit`: the crew's recent audit events (admin and owner).

use serde_json::Value;

use crate::cli::auth::{pretty, text};
use crate::cli::tokens::table;
use crate::cli::{out, outln};
use crate::client::Client;
use crate::config::Session;
use crate::exit::CliResult;
use crate::GlobalArgs;

/// Most events one call asks for; the API's own limit.
pub const MAX_LIMIT: u32 = 1000;

/// Print the newest `limit` events of the token's crew, newest first.
pub fn run(global: &GlobalArgs, limit: u32) -> CliResult {
    let session = Session::load(global)?;
    let client = Client::with_token(&session.settings)?;
    let answer = client.get("/api/v1/audit", &[("limit", &limit.to_string())])?;
    let events = answer["events"].as_array().cloned().unwrap_or_default();
    if global.json {
        outln!("{}", pretty(&Value::Array(events)));
    } else {
        out!("{}", audit_table(&events));
    }
    Ok(())
}

/// Who acted: the user, and the token when one was used.
fn actor(event: &Value) -> String {
    match (&event["username"], event["token_id"].as_i64()) {
        (Value::String(user), Some(token)) => format!("{user} (token {token})"),
        (Value::String(user), None) => user.clone(),
        _ => "-".to_string(),
    }
}

/// The audit table: TIME, ACTOR, ACTION, DETAIL, ADDRESS; exact times, as an audit needs.
fn audit_table(events: &[Value]) -> String {
    let rows = events
        .iter()
        .map(|e| {
            vec![
                text(&e["at"]),
                actor(e),
                text(&e["action"]),
                text(&e["detail"]),
                text(&e["address"]),
            ]
        })
        .collect();
    table(&["TIME", "ACTOR", "ACTION", "DETAIL", "ADDRESS"], rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn audit_table_names_the_actor_and_token() {
        let with_token = json!({"id": 2, "at": "2026-01-01T00:00:00Z", "username": "ana",
            "token_id": 7, "action": "token.revoke", "detail": "token 9", "address": "10.0.0.2"});
        let anonymous = json!({"id": 1, "at": "2026-01-01T00:00:00Z", "username": null,
            "token_id": null, "action": "session.fail", "detail": "", "address": "10.0.0.3"});
        let out = audit_table(&[with_token, anonymous]);
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[0].starts_with("TIME                  ACTOR"), "{out}");
        assert!(
            lines[1].contains("ana (token 7)  token.revoke  token 9"),
            "{out}"
        );
        assert!(
            lines[2].contains("  -              session.fail  -"),
            "{out}"
        );
    }
}
