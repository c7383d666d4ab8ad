//! `berth tunnels list|close`: the crew's live and recent tunnels.

use serde_json::Value;

use crate::cli::auth::{pretty, text};
use crate::cli::safe::shown;
use crate::cli::tokens::{table, when};
use crate::cli::{out, outln};
use crate::client::Client;
use crate::config::Session;
use crate::exit::{CliError, CliResult};
use crate::{GlobalArgs, TunnelsCommand};

/// Run one `berth tunnels` subcommand.
pub fn run(global: &GlobalArgs, command: TunnelsCommand) -> CliResult {
    let session = Session::load(global)?;
    let client = Client::with_token(&session.settings)?;
    match command {
        TunnelsCommand::List => list(global, &client),
        TunnelsCommand::Close { id } => close(&client, &id),
    }
}

fn list(global: &GlobalArgs, client: &Client) -> CliResult {
    let answer = client.get("/api/v1/tunnels", &[])?;
    let tunnels = answer["tunnels"].as_array().cloned().unwrap_or_default();
    if global.json {
        outln!("{}", pretty(&Value::Array(tunnels)));
    } else {
        out!("{}", tunnels_table(&tunnels));
    }
    Ok(())
}

/// The tunnel table: ID, URL, OWNER, TOKEN, OPENED, STATUS.
fn tunnels_table(tunnels: &[Value]) -> String {
    let rows = tunnels
        .iter()
        .map(|t| {
            let status = if t["active"].as_bool() == Some(true) {
                "live".to_string()
            } else {
                format!("closed {}", when(&t["closed_at"], "-"))
            };
            vec![
                text(&t["id"]),
                text(&t["url"]),
                text(&t["user"]["username"]),
                text(&t["token"]["name"]),
                when(&t["opened_at"], "-"),
                status,
            ]
        })
        .collect();
    table(&["ID", "URL", "OWNER", "TOKEN", "OPENED", "STATUS"], rows)
}

fn close(client: &Client, id: &str) -> CliResult {
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(CliError::usage(format!(
            "`{id}` is not a tunnel id; see the ID column of `berth tunnels list`."
        )));
    }
    let row = client.delete(&format!("/api/v1/tunnels/{id}"))?;
    outln!("Closed tunnel {id} ({})", shown(&text(&row["url"])));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tunnel_table_columns() {
        let live = json!({"id": "ab12", "url": "http://a.localhost:8080",
            "user": {"id": 1, "username": "ana"}, "token": {"id": 2, "name": "ci"},
            "opened_at": "2026-01-01T00:00:00Z", "closed_at": null, "active": true});
        let out = tunnels_table(&[live]);
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[0].starts_with("ID    URL"), "{out}");
        assert!(lines[0].ends_with("OPENED        STATUS"), "{out}");
        assert!(
            lines[1].starts_with("ab12  http://a.localhost:8080  ana"),
            "{out}"
        );
        assert!(lines[1].ends_with("live"), "{out}");
    }
}
