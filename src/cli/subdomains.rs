//! `berth subdomains list|reserve|release`: the names the crew holds.

use serde_json::{json, Value};

use crate::cli::auth::{pretty, text};
use crate::cli::tokens::table;
use crate::cli::{out, outln};
use crate::client::Client;
use crate::config::Session;
use crate::exit::{CliError, CliResult};
use crate::names::check_subdomain;
use crate::{GlobalArgs, SubdomainsCommand};

/// Run one `berth subdomains` subcommand.
pub fn run(global: &GlobalArgs, command: SubdomainsCommand) -> CliResult {
    let session = Session::load(global)?;
    let client = Client::with_token(&session.settings)?;
    match command {
        SubdomainsCommand::List => list(global, &client),
        SubdomainsCommand::Reserve { name } => reserve(&client, &name),
        SubdomainsCommand::Release { name } => release(&client, &name),
    }
}

fn list(global: &GlobalArgs, client: &Client) -> CliResult {
    let answer = client.get("/api/v1/subdomains", &[])?;
    let names = answer["subdomains"].as_array().cloned().unwrap_or_default();
    if global.json {
        outln!("{}", pretty(&Value::Array(names)));
    } else if names.is_empty() {
        outln!("Your crew holds no subdomain; reserve one with `berth subdomains reserve NAME`.");
    } else {
        out!("{}", names_table(&names));
    }
    Ok(())
}

/// The table: NAME, URL, STATUS (reserved, in use, or held until when).
fn names_table(names: &[Value]) -> String {
    let rows = names
        .iter()
        .map(|n| {
            let mut status = Vec::new();
            if n["reserved"].as_bool() == Some(true) {
                status.push("reserved".to_string());
            }
            if n["live"].as_bool() == Some(true) {
                status.push("in use".to_string());
            }
            if let Some(until) = n["held_until"].as_str() {
                status.push(format!("held until {until}"));
            }
            vec![text(&n["name"]), text(&n["url"]), status.join(", ")]
        })
        .collect();
    table(&["NAME", "URL", "STATUS"], rows)
}

/// A name as a tunnel could have it, checked before asking the server.
fn checked(name: &str) -> Result<&str, CliError> {
    check_subdomain(name).map_err(CliError::usage)?;
    Ok(name)
}

fn reserve(client: &Client, name: &str) -> CliResult {
    let row = client.post("/api/v1/subdomains", &json!({ "name": checked(name)? }))?;
    outln!(
        "Reserved {} ({}): no other crew can have it until you release it.",
        text(&row["name"]),
        text(&row["url"])
    );
    Ok(())
}

fn release(client: &Client, name: &str) -> CliResult {
    let answer = client.delete(&format!("/api/v1/subdomains/{}", checked(name)?))?;
    match answer["held_until"].as_str() {
        Some(until) => {
            outln!("Released {name}; your crew still holds it after its last use until {until}.")
        }
        None => outln!("Released {name}; any crew may have it now."),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_table_says_why_each_name_is_held() {
        let rows = [
            json!({"name": "shop", "url": "http://shop.localhost:8080", "reserved": true, "live": true, "held_until": null}),
            json!({"name": "old", "url": "http://old.localhost:8080", "reserved": false, "live": false, "held_until": "2026-01-02T00:00:00Z"}),
        ];
        let out = names_table(&rows);
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[0].starts_with("NAME  URL"), "{out}");
        assert!(lines[1].ends_with("reserved, in use"), "{out}");
        assert!(
            lines[2].ends_with("held until 2026-01-02T00:00:00Z"),
            "{out}"
        );
    }

    #[test]
    fn bad_names_are_usage_errors() {
        assert_eq!(checked("Bad_Name").unwrap_err().code, 2);
        assert_eq!(checked("shop").unwrap(), "shop");
    }
}
