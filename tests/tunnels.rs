//! Tunnel management end to end: the real server, `berth share` as a child
//! process, curl as the public client, and `berth tunnels` / the API closing tunnels.

mod common;
mod relay_support;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{run_with_token, Output, Server};
use relay_support::{Service, Share};
use serde_json::{json, Value};

impl Share {
    fn start(server: &Server, port: u16, token: &str) -> Share {
        let port = port.to_string();
        let args = [port.as_str(), "--host", "127.0.0.1"];
        Share::spawn(&server.url, token, &args, Stdio::piped())
    }

    /// Wait for share to exit on its own; its exit code and stderr.
    fn exits(&mut self) -> (i32, String) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let mut stderr = String::new();
                let _ = self
                    .child
                    .stderr
                    .take()
                    .unwrap()
                    .read_to_string(&mut stderr);
                return (status.code().unwrap_or(-1), stderr);
            }
            assert!(Instant::now() < deadline, "share did not exit");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether share is still running.
    fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    fn host(&self) -> &str {
        self.authority()
    }
}

/// The status curl gets for `/` on a tunnel host.
fn public_status(server: &Server, host: &str) -> u16 {
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "20",
        ])
        .args(["-H", &format!("Host: {host}")])
        .arg(format!("{}/", server.url))
        .output()
        .expect("run curl");
    String::from_utf8_lossy(&out.stdout).parse().unwrap_or(0)
}

/// `berth ARGS` with a token and no config file.
fn berth(server: &Server, token: &str, args: &[&str]) -> Output {
    run_with_token(&server.url, token, args)
}

fn tunnels(server: &Server, token: &str, query: &str) -> Vec<Value> {
    let (status, body) = server.call("GET", &format!("/api/v1/tunnels{query}"), Some(token), None);
    assert_eq!(status, 200, "{body}");
    body["tunnels"].as_array().unwrap().clone()
}

/// Actions of the audit events of crew `home`, oldest first.
fn audit_actions(server: &Server) -> Vec<String> {
    let db = server.db();
    let mut stmt = db
        .prepare("SELECT action FROM audit WHERE action LIKE 'tunnel.%' ORDER BY id")
        .unwrap();
    stmt.query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// A server with owner `alice` (her share token and an admin token) in crew `home`.
fn setup() -> (Server, String, String) {
    let server = Server::start();
    server.create_user("alice", "home", "owner");
    let share = server.token_for("alice", "home", "share");
    let admin = server.token_for("alice", "home", "admin");
    (server, share, admin)
}

#[test]
fn list_shows_the_live_tunnel_and_close_ends_it_for_good() {
    let (server, token, admin) = setup();
    let service = Service::start();
    let mut share = Share::start(&server, service.port, &token);
    assert_eq!(public_status(&server, share.host()), 200);

    let live = tunnels(&server, &admin, "?active=1");
    assert_eq!(live.len(), 1, "{live:?}");
    let t = &live[0];
    assert_eq!(t["url"], share.url.as_str());
    assert_eq!(t["kind"], "http");
    assert_eq!(t["active"], true);
    assert_eq!(t["closed_at"], Value::Null);
    assert_eq!(t["user"]["username"], "alice");
    assert_eq!(t["token"]["name"], "share");
    assert_eq!(t["crew"]["name"], "home");
    let id = t["id"].as_str().unwrap().to_string();

    let out = berth(&server, &admin, &["tunnels", "list"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(lines[0].starts_with("ID "), "{}", out.stdout);
    assert!(
        lines[1].starts_with(&id) && lines[1].contains(&share.url),
        "{}",
        out.stdout
    );
    assert!(
        lines[1].contains("alice") && lines[1].ends_with("live"),
        "{}",
        out.stdout
    );
    let out = berth(&server, &admin, &["tunnels", "list", "--json"]);
    let listed: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(listed[0]["id"], id.as_str());

    let out = berth(&server, &admin, &["tunnels", "close", &id]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains(&format!("Closed tunnel {id}")),
        "{}",
        out.stdout
    );
    let (code, stderr) = share.exits();
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("closed by alice"), "{stderr}");
    assert!(!stderr.contains("Reconnect"), "{stderr}");
    assert_eq!(public_status(&server, share.host()), 404);

    assert!(tunnels(&server, &admin, "?active=1").is_empty());
    let all = tunnels(&server, &admin, "");
    assert_eq!(all[0]["active"], false);
    assert!(all[0]["closed_at"].is_string());
    // Closing a closed tunnel is a conflict (exit 6).
    let (status, body) = server.call(
        "DELETE",
        &format!("/api/v1/tunnels/{id}"),
        Some(&admin),
        None,
    );
    assert_eq!(status, 409, "{body}");
    assert_eq!(berth(&server, &admin, &["tunnels", "close", &id]).code, 6);
    assert_eq!(audit_actions(&server), ["tunnel.open", "tunnel.close"]);
}

#[test]
fn a_tunnel_that_ends_by_itself_is_recorded_closed() {
    let (server, token, admin) = setup();
    let service = Service::start();
    let share = Share::start(&server, service.port, &token);
    drop(share);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !tunnels(&server, &admin, "?active=1").is_empty() {
        assert!(Instant::now() < deadline, "the tunnel stayed active");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(tunnels(&server, &admin, "").len(), 1);
    assert_eq!(audit_actions(&server), ["tunnel.open", "tunnel.close"]);
}

#[test]
fn revoking_leaves_live_tunnels_up_but_refuses_new_ones() {
    let (server, token, admin) = setup();
    let service = Service::start();
    let mut share = Share::start(&server, service.port, &token);
    let token_id = token.split('|').next().unwrap();
    let (status, body) = server.call(
        "DELETE",
        &format!("/api/v1/tokens/{token_id}"),
        Some(&admin),
        None,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(public_status(&server, share.host()), 200);
    assert!(share.running());
    assert_eq!(tunnels(&server, &admin, "?active=1").len(), 1);
    let again = run_with_token(&server.url, &token, &["share", &service.port.to_string()]);
    assert_eq!(again.code, 3, "{}", again.stderr);
}

#[test]
fn revoke_with_disconnect_closes_the_tokens_tunnels() {
    let (server, token, admin) = setup();
    let service = Service::start();
    let mut share = Share::start(&server, service.port, &token);
    let token_id = token.split('|').next().unwrap();
    let out = berth(
        &server,
        &admin,
        &["tokens", "revoke", "--disconnect", token_id],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains("closed its live tunnels"),
        "{}",
        out.stdout
    );
    let (code, stderr) = share.exits();
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("token was revoked"), "{stderr}");
    assert_eq!(public_status(&server, share.host()), 404);
    assert!(tunnels(&server, &admin, "?active=1").is_empty());
}

#[test]
fn revoke_by_id_with_disconnect_query_closes_tunnels() {
    let (server, token, admin) = setup();
    let service = Service::start();
    let mut share = Share::start(&server, service.port, &token);
    let token_id = token.split('|').next().unwrap();
    let path = format!("/api/v1/tokens/{token_id}?disconnect=1");
    let (status, body) = server.call("DELETE", &path, Some(&admin), None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["tunnels_closed"], 1);
    assert_eq!(share.exits().0, 1);
    assert_eq!(public_status(&server, share.host()), 404);
}

#[test]
fn viewers_list_but_close_only_with_rights_and_other_crews_see_nothing() {
    let (server, token, admin) = setup();
    server.create_user("vic", "home", "viewer");
    server.create_user("mo", "home", "member");
    server.create_user("olga", "away", "owner");
    let viewer = server.token_for("vic", "home", "v");
    let member = server.token_for("mo", "home", "m");
    let other = server.token_for("olga", "away", "o");
    let service = Service::start();
    let mut share = Share::start(&server, service.port, &token);
    let id = tunnels(&server, &admin, "")[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let path = format!("/api/v1/tunnels/{id}");

    assert_eq!(tunnels(&server, &viewer, "").len(), 1);
    let (status, body) = server.call("DELETE", &path, Some(&viewer), None);
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (403, json!("forbidden"))
    );
    let (status, _) = server.call("DELETE", &path, Some(&member), None);
    assert_eq!(status, 403);
    let out = berth(&server, &viewer, &["tunnels", "close", &id]);
    assert_eq!(out.code, 4, "{}", out.stderr);

    assert!(tunnels(&server, &other, "").is_empty());
    let (status, _) = server.call("DELETE", &path, Some(&other), None);
    assert_eq!(status, 404);
    assert_eq!(berth(&server, &other, &["tunnels", "close", &id]).code, 5);
    assert!(share.running());
    assert_eq!(public_status(&server, share.host()), 200);

    // A token scoped to tunnels:share may close its own user's tunnel, not list.
    let (status, body) = server.call_basic(
        "POST",
        "/api/v1/tokens",
        "alice",
        common::PASSWORD,
        Some(&json!({"name": "narrow", "scopes": ["tunnels:share"]})),
    );
    assert_eq!(status, 201, "{body}");
    let narrow = body["secret"].as_str().unwrap();
    let (status, _) = server.call("GET", "/api/v1/tunnels", Some(narrow), None);
    assert_eq!(status, 403);
    let (status, body) = server.call("DELETE", &path, Some(narrow), None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["active"], false);
    assert_eq!(share.exits().0, 1);
}

#[test]
fn bulk_revoke_with_disconnect_closes_tunnels_and_checks_the_flag() {
    let (server, token, admin) = setup();
    let service = Service::start();
    let mut share = Share::start(&server, service.port, &token);
    let token_id: i64 = token.split('|').next().unwrap().parse().unwrap();
    let bad = json!({"action": "revoke", "ids": [token_id], "disconnect": "yes"});
    let (status, _) = server.call("POST", "/api/v1/tokens/bulk", Some(&admin), Some(&bad));
    assert_eq!(status, 400);
    let body = json!({"action": "revoke", "ids": [token_id], "disconnect": true});
    let (status, reply) = server.call("POST", "/api/v1/tokens/bulk", Some(&admin), Some(&body));
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["updated"], json!([token_id]));
    assert_eq!(share.exits().0, 1);
    assert_eq!(public_status(&server, share.host()), 404);
}

#[test]
fn an_admins_close_is_audited_as_the_admins() {
    let (server, token, admin) = setup();
    let service = Service::start();
    let mut share = Share::start(&server, service.port, &token);
    let id = tunnels(&server, &admin, "")[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, _) = server.call(
        "DELETE",
        &format!("/api/v1/tunnels/{id}"),
        Some(&admin),
        None,
    );
    assert_eq!(status, 200);
    assert_eq!(share.exits().0, 1);
    let admin_id: i64 = admin.split('|').next().unwrap().parse().unwrap();
    let closer: i64 = server
        .db()
        .query_row(
            "SELECT token_id FROM audit WHERE action = 'tunnel.close'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(closer, admin_id);
}

#[test]
fn a_restart_marks_tunnels_left_open_as_closed() {
    let (mut server, token, admin) = setup();
    let service = Service::start();
    let share = Share::start(&server, service.port, &token);
    assert_eq!(tunnels(&server, &admin, "?active=1").len(), 1);
    server.kill9();
    drop(share);
    let server = Server::start_in(&server.data.clone(), &[]);
    assert!(tunnels(&server, &admin, "?active=1").is_empty());
    let all = tunnels(&server, &admin, "");
    assert_eq!(all.len(), 1);
    assert!(all[0]["closed_at"].is_string());
}
