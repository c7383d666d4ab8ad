//! `berth crews list|members|add-member|set-role|remove-member|set-redaction|set-limit`.

use serde_json::{json, Value};

use crate::cli::auth::{pretty, text};
use crate::cli::safe::shown;
use crate::cli::tokens::{table, when};
use crate::cli::{out, outln};
use crate::client::Client;
use crate::config::Session;
use crate::exit::{CliError, CliResult};
use crate::store::Limit;
use crate::{CrewsCommand, GlobalArgs};

/// Roles a member can have.
const ROLES: [&str; 4] = ["owner", "admin", "member", "viewer"];

/// Run one `berth crews` subcommand.
pub fn run(global: &GlobalArgs, command: CrewsCommand) -> CliResult {
    let session = Session::load(global)?;
    let client = Client::with_token(&session.settings)?;
    match command {
        CrewsCommand::List => {
            let crews = list_crews(&client)?;
            if global.json {
                outln!("{}", pretty(&Value::Array(crews)));
            } else {
                out!("{}", crews_table(&crews));
            }
        }
        CrewsCommand::Members { crew } => {
            let crew = find_crew(&client, &crew)?;
            let members = list_members(&client, &crew)?;
            if global.json {
                outln!("{}", pretty(&Value::Array(members)));
            } else {
                out!("{}", members_table(&members));
            }
        }
        CrewsCommand::AddMember { crew, user, role } => {
            let role = checked_role(&role)?;
            let crew = find_crew(&client, &crew)?;
            let body = json!({ "username": user, "role": role });
            let member = client.post(&format!("/api/v1/crews/{}/members", crew.id), &body)?;
            print_member(
                global,
                &member,
                &format!("Added {user} to crew {} as {role}", crew.name),
            );
        }
        CrewsCommand::SetRole { crew, user, role } => {
            let role = checked_role(&role)?;
            let crew = find_crew(&client, &crew)?;
            let user_id = find_member(&client, &crew, &user)?;
            let path = format!("/api/v1/crews/{}/members/{user_id}", crew.id);
            let member = client.patch(&path, &json!({ "role": role }))?;
            print_member(
                global,
                &member,
                &format!("{user} is now {role} in crew {}", crew.name),
            );
        }
        CrewsCommand::RemoveMember { crew, user } => {
            let crew = find_crew(&client, &crew)?;
            let user_id = find_member(&client, &crew, &user)?;
            client.delete(&format!("/api/v1/crews/{}/members/{user_id}", crew.id))?;
            outln!("Removed {} from crew {}", shown(&user), shown(&crew.name));
        }
        CrewsCommand::SetRedaction { crew, tier } => {
            let tier = checked_tier(&tier)?;
            let crew = find_crew(&client, &crew)?;
            let body = json!({ "default_redaction": tier });
            let updated = client.patch(&format!("/api/v1/crews/{}", crew.id), &body)?;
            print_member(
                global,
                &updated,
                &format!(
                    "Crew {} now records traffic of inherit tokens as {tier}",
                    crew.name
                ),
            );
        }
        CrewsCommand::SetLimit {
            crew,
            setting,
            value,
        } => {
            let (limit, value) = checked_limit(&setting, &value)?;
            let crew = find_crew(&client, &crew)?;
            let body = json!({ limit.setting(): value });
            let updated = client.patch(&format!("/api/v1/crews/{}", crew.id), &body)?;
            let holds = text(&updated["limits"][limit.setting()]);
            let done = match value {
                Some(_) => format!("Crew {} now has {setting} {holds}", crew.name),
                None => format!(
                    "Crew {} now follows the server's {setting} ({holds})",
                    crew.name
                ),
            };
            print_member(global, &updated, &done);
        }
    }
    Ok(())
}

fn print_member(global: &GlobalArgs, member: &Value, done: &str) {
    if global.json {
        outln!("{}", pretty(member));
    } else {
        outln!("{}", shown(done));
    }
}

/// A crew of the caller, by name or id.
#[derive(Debug)]
struct Crew {
    id: i64,
    name: String,
}

fn list_crews(client: &Client) -> Result<Vec<Value>, CliError> {
    let answer = client.get("/api/v1/crews", &[])?;
    Ok(answer["crews"].as_array().cloned().unwrap_or_default())
}

fn list_members(client: &Client, crew: &Crew) -> Result<Vec<Value>, CliError> {
    let answer = client.get(&format!("/api/v1/crews/{}/members", crew.id), &[])?;
    Ok(answer["members"].as_array().cloned().unwrap_or_default())
}

/// Find a crew among the caller's: a name first, then an id.
fn find_crew(client: &Client, arg: &str) -> Result<Crew, CliError> {
    let crews = list_crews(client)?;
    pick_crew(&crews, arg)
}

fn pick_crew(crews: &[Value], arg: &str) -> Result<Crew, CliError> {
    let by_name = crews.iter().find(|c| c["name"].as_str() == Some(arg));
    let by_id = || {
        let id = arg.parse::<i64>().ok()?;
        crews.iter().find(|c| c["id"].as_i64() == Some(id))
    };
    let crew = by_name.or_else(by_id).ok_or_else(|| {
        CliError::not_found(format!(
            "You are not in a crew named `{arg}`; `berth crews list` shows yours"
        ))
    })?;
    Ok(Crew {
        id: crew["id"].as_i64().unwrap_or_default(),
        name: text(&crew["name"]),
    })
}

/// A member's user id, by username (or id).
fn find_member(client: &Client, crew: &Crew, user: &str) -> Result<i64, CliError> {
    let members = list_members(client, crew)?;
    pick_member(&members, user).ok_or_else(|| {
        CliError::not_found(format!(
            "{user} is not a member of crew {}; `berth crews members {}` lists them",
            crew.name, crew.name
        ))
    })
}

fn pick_member(members: &[Value], user: &str) -> Option<i64> {
    let by_name = members
        .iter()
        .find(|m| m["user"]["username"].as_str() == Some(user));
    let by_id = || {
        let id = user.parse::<i64>().ok()?;
        members
            .iter()
            .find(|m| m["user"]["id"].as_i64() == Some(id))
    };
    by_name.or_else(by_id)?["user"]["id"].as_i64()
}

fn checked_role(role: &str) -> Result<&str, CliError> {
    ROLES.into_iter().find(|r| *r == role).ok_or_else(|| {
        CliError::usage(format!(
            "Unknown role `{role}`; use owner, admin, member or viewer"
        ))
    })
}

/// A crew's default tier: `inherit` is a token's setting, not a crew's.
fn checked_tier(tier: &str) -> Result<&str, CliError> {
    ["standard", "strict"]
        .into_iter()
        .find(|t| *t == tier)
        .ok_or_else(|| {
            CliError::usage(format!(
                "Unknown crew redaction tier `{tier}`; use standard or strict"
            ))
        })
}

/// A limit setting and its value (`server`: none of the crew's own).
fn checked_limit(setting: &str, value: &str) -> Result<(Limit, Option<u32>), CliError> {
    let names = Limit::ALL.map(Limit::setting).join(", ");
    let limit = Limit::parse(setting)
        .ok_or_else(|| CliError::usage(format!("Unknown limit `{setting}`; use one of {names}")))?;
    if value == "server" {
        return Ok((limit, None));
    }
    let n = value.parse::<u32>().map_err(|_| {
        CliError::usage(format!(
            "The value of {setting} must be a whole number or `server`, not `{value}`"
        ))
    })?;
    Ok((limit, Some(n)))
}

/// Two limits that hold for a crew as `PER USER/PER CREW`.
fn limit_pair(crew: &Value, per_user: Limit, per_crew: Limit) -> String {
    let limits = &crew["limits"];
    format!(
        "{}/{}",
        text(&limits[per_user.setting()]),
        text(&limits[per_crew.setting()])
    )
}

fn crews_table(crews: &[Value]) -> String {
    let rows = crews
        .iter()
        .map(|c| {
            vec![
                text(&c["id"]),
                text(&c["name"]),
                text(&c["role"]),
                text(&c["default_redaction"]),
                limit_pair(c, Limit::TunnelsPerUser, Limit::Tunnels),
                limit_pair(c, Limit::TcpPortsPerUser, Limit::TcpPorts),
            ]
        })
        .collect();
    let head = [
        "ID",
        "NAME",
        "ROLE",
        "DEFAULT REDACTION",
        "TUNNELS (USER/CREW)",
        "TCP PORTS (USER/CREW)",
    ];
    table(&head, rows)
}

fn members_table(members: &[Value]) -> String {
    let rows = members
        .iter()
        .map(|m| {
            vec![
                text(&m["user"]["id"]),
                text(&m["user"]["username"]),
                text(&m["role"]),
                when(&m["joined_at"], "-"),
            ]
        })
        .collect();
    table(&["ID", "USERNAME", "ROLE", "JOINED"], rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit;

    #[test]
    fn crews_resolve_by_name_then_id() {
        let limits = json!({"max_tunnels_per_user": 10, "max_tunnels": 50,
            "max_tcp_ports_per_user": 0, "max_tcp_ports": 20});
        let crews = [
            json!({"id": 1, "name": "home", "role": "owner", "default_redaction": "standard", "limits": limits}),
            json!({"id": 2, "name": "1", "role": "member", "default_redaction": "strict"}),
        ];
        assert_eq!(pick_crew(&crews, "home").unwrap().id, 1);
        assert_eq!(pick_crew(&crews, "1").unwrap().id, 2);
        assert_eq!(pick_crew(&crews, "2").unwrap().name, "1");
        assert_eq!(pick_crew(&crews, "work").unwrap_err().code, exit::NOT_FOUND);
        assert_eq!(
            crews_table(&crews[..1]),
            "ID  NAME  ROLE   DEFAULT REDACTION  TUNNELS (USER/CREW)  TCP PORTS (USER/CREW)\n1   home  owner  standard           10/50                0/20\n"
        );
    }

    #[test]
    fn members_resolve_by_username() {
        let members =
            [json!({"user": {"id": 5, "username": "bob"}, "role": "member", "joined_at": null})];
        assert_eq!(pick_member(&members, "bob"), Some(5));
        assert_eq!(pick_member(&members, "5"), Some(5));
        assert_eq!(pick_member(&members, "eve"), None);
        assert!(members_table(&members).contains("bob       member  -"));
    }

    #[test]
    fn roles_are_checked_client_side() {
        assert_eq!(checked_role("admin").unwrap(), "admin");
        assert_eq!(checked_role("root").unwrap_err().code, exit::USAGE);
        assert_eq!(checked_tier("strict").unwrap(), "strict");
        assert_eq!(checked_tier("inherit").unwrap_err().code, exit::USAGE);
        assert_eq!(
            checked_limit("max_tunnels", "3").unwrap(),
            (Limit::Tunnels, Some(3))
        );
        assert_eq!(
            checked_limit("max_tcp_ports", "server").unwrap(),
            (Limit::TcpPorts, None)
        );
        assert_eq!(
            checked_limit("max_ports", "3").unwrap_err().code,
            exit::USAGE
        );
        assert_eq!(
            checked_limit("max_tunnels", "-1").unwrap_err().code,
            exit::USAGE
        );
    }
}
