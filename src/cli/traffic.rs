//! `berth traffic TUNNEL_ID`: the requests the inspector recorded through a tunnel.

use serde_json::Value;

use crate::cli::auth::{pretty, text};
use crate::cli::tokens::table;
use crate::cli::{out, outln};
use crate::client::Client;
use crate::config::Session;
use crate::exit::{CliError, CliResult};
use crate::{GlobalArgs, TrafficArgs};

/// Longest path shown in the table; `--json` has it whole.
const MAX_TABLE_PATH: usize = 80;

/// Run `berth traffic`.
pub fn run(global: &GlobalArgs, args: TrafficArgs) -> CliResult {
    let id = args.tunnel_id;
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(CliError::usage(format!(
            "`{id}` is not a tunnel id; see the ID column of `berth tunnels list`."
        )));
    }
    let session = Session::load(global)?;
    let client = Client::with_token(&session.settings)?;
    let limit = args.limit.to_string();
    let answer = client.get(
        &format!("/api/v1/tunnels/{id}/requests"),
        &[("limit", &limit)],
    )?;
    let requests = answer["requests"].as_array().cloned().unwrap_or_default();
    if global.json {
        outln!("{}", pretty(&Value::Array(requests)));
    } else if requests.is_empty() {
        outln!("No requests recorded for tunnel {id} yet.");
    } else {
        out!("{}", traffic_table(&requests));
    }
    Ok(())
}

/// The traffic table: TIME, METHOD, PATH, STATUS, MS, IN, OUT.
fn traffic_table(requests: &[Value]) -> String {
    let rows = requests
        .iter()
        .map(|r| {
            vec![
                text(&r["at"]),
                text(&r["method"]),
                shorten(&text(&r["path"])),
                text(&r["status"]),
                text(&r["duration_ms"]),
                text(&r["bytes_in"]),
                text(&r["bytes_out"]),
            ]
        })
        .collect();
    table(
        &["TIME", "METHOD", "PATH", "STATUS", "MS", "IN", "OUT"],
        rows,
    )
}

fn shorten(path: &str) -> String {
    if path.chars().count() <= MAX_TABLE_PATH {
        return path.to_string();
    }
    let cut: String = path.chars().take(MAX_TABLE_PATH - 3).collect();
    format!("{cut}...")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn traffic_table_columns() {
        let request = json!({"id": 9, "at": "2026-01-01T00:00:00Z", "method": "POST",
            "path": "/login?token=[REDACTED]", "status": 302, "duration_ms": 12,
            "bytes_in": 30, "bytes_out": 0});
        let out = traffic_table(&[request]);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines[0],
            "TIME                  METHOD  PATH                     STATUS  MS  IN  OUT"
        );
        assert_eq!(
            lines[1],
            "2026-01-01T00:00:00Z  POST    /login?token=[REDACTED]  302     12  30  0"
        );
    }

    #[test]
    fn long_paths_are_cut_in_the_table() {
        let long = format!("/{}", "a".repeat(200));
        let cut = shorten(&long);
        assert_eq!(cut.chars().count(), MAX_TABLE_PATH);
        assert!(cut.ends_with("..."));
        assert_eq!(shorten("/short"), "/short");
    }
}
