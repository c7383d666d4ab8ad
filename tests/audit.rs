//! The audit log end to end: real actions through the API, `berth share`, the
//! dashboard sign-in and `berth admin`, read back with `berth audit` before and
//! after a restart.

mod common;
mod relay_support;

use std::process::Stdio;

use common::{berth_with_token, run_with_stdin, run_with_token, Output, Server, PASSWORD};
use relay_support::Service;
use serde_json::{json, Value};

fn audit(server: &Server, token: &str, args: &[&str]) -> Output {
    let mut all = vec!["audit"];
    all.extend_from_slice(args);
    run_with_token(&server.url, token, &all)
}

fn events(server: &Server, token: &str) -> Vec<Value> {
    let out = audit(server, token, &["--json", "--limit", "1000"]);
    assert_eq!(out.code, 0, "berth audit --json: {}", out.stderr);
    serde_json::from_str::<Value>(&out.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// The first event with this action (newest first).
fn find<'a>(events: &'a [Value], action: &str) -> &'a Value {
    events
        .iter()
        .find(|e| e["action"] == action)
        .unwrap_or_else(|| panic!("no {action} event in {events:#?}"))
}

/// Open a tunnel with `berth share`, then end it; the server records both.
fn share_once(server: &Server, token: &str) {
    let service = Service::start();
    let port = service.port.to_string();
    let mut child = berth_with_token(&server.url, token, &["share", &port, "--host", "127.0.0.1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn berth share");
    let (_lines, _url) = relay_support::share_output(&mut child);
    let _ = child.kill();
    let _ = child.wait();
    // The close is recorded when the server notices the control connection ended.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (_, body) = server.call("GET", "/api/v1/tunnels?active=1", Some(token), None);
        if body["tunnels"].as_array().is_some_and(|t| t.is_empty()) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the tunnel stayed open"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn the_audit_covers_tokens_sign_ins_tunnels_members_and_settings_across_a_restart() {
    let mut server = Server::start();
    server.create_user("alice", "home", "owner");
    server.create_user("bob", "home", "member");
    server.create_user("carol", "elsewhere", "member");
    let token = server.token_for("alice", "home", "ops");
    let crew = server.crew_id("home");
    let carol = server.user_id("carol");

    // Tokens: create (above), revoke, bulk revoke.
    let spare = |name: &str| {
        let (status, body) = server.call(
            "POST",
            "/api/v1/tokens",
            Some(&token),
            Some(&json!({"name": name})),
        );
        assert_eq!(status, 201);
        body["token"]["id"].as_i64().unwrap()
    };
    let (one, two) = (spare("one"), spare("two"));
    assert_eq!(
        server
            .call(
                "DELETE",
                &format!("/api/v1/tokens/{one}"),
                Some(&token),
                None
            )
            .0,
        200
    );
    let bulk = json!({"action": "revoke", "ids": [two]});
    assert_eq!(
        server
            .call("POST", "/api/v1/tokens/bulk", Some(&token), Some(&bulk))
            .0,
        200
    );

    // Sign-ins: the dashboard's, both ways, and a wrong password over Basic.
    let wrong = json!({"username": "bob", "password": "not it at all"});
    assert_eq!(
        server.call("POST", "/api/v1/session", None, Some(&wrong)).0,
        401
    );
    let right = json!({"username": "bob", "password": PASSWORD});
    assert_eq!(
        server.call("POST", "/api/v1/session", None, Some(&right)).0,
        200
    );
    assert_eq!(
        server
            .call_basic("GET", "/api/v1/tokens", "bob", "wrong password", None)
            .0,
        401
    );

    // Members and settings.
    let add = json!({"username": "carol", "role": "viewer"});
    let path = format!("/api/v1/crews/{crew}/members");
    assert_eq!(server.call("POST", &path, Some(&token), Some(&add)).0, 201);
    let role = json!({"role": "member"});
    let member = format!("{path}/{carol}");
    assert_eq!(
        server.call("PATCH", &member, Some(&token), Some(&role)).0,
        200
    );
    assert_eq!(server.call("DELETE", &member, Some(&token), None).0, 204);
    let strict = json!({"default_redaction": "strict"});
    let crew_path = format!("/api/v1/crews/{crew}");
    assert_eq!(
        server
            .call("PATCH", &crew_path, Some(&token), Some(&strict))
            .0,
        200
    );

    // Tunnels, and the offline tool.
    share_once(&server, &token);
    let out = run_with_stdin(
        &[
            "admin",
            "create-user",
            "dave",
            "--crew",
            "home",
            "--role",
            "viewer",
            "--password-stdin",
            "--data",
            server.data.to_str().unwrap(),
        ],
        &[],
        PASSWORD,
    );
    assert_eq!(out.code, 0, "{}", out.stderr);

    let before = events(&server, &token);
    let created = find(&before, "token.create");
    assert_eq!(created["username"], "alice");
    assert_eq!(created["crew_id"], crew);
    assert_eq!(created["address"], "127.0.0.1");
    assert!(created["at"].as_str().unwrap().ends_with('Z'));
    assert!(find(&before, "signin.basic")["detail"]
        .as_str()
        .unwrap()
        .contains("alice"));
    let revoked: Vec<&Value> = before
        .iter()
        .filter(|e| e["action"] == "token.revoke")
        .collect();
    assert_eq!(revoked.len(), 2);
    assert!(revoked
        .iter()
        .any(|e| e["detail"].as_str().unwrap().ends_with("(bulk)")));
    assert!(revoked.iter().all(|e| e["token_id"].is_i64()));
    let failed = find(&before, "session.fail");
    assert_eq!(
        (failed["username"].clone(), failed["detail"].clone()),
        (Value::Null, json!("user bob"))
    );
    assert_eq!(find(&before, "session.create")["username"], "bob");
    assert!(find(&before, "signin.fail")["detail"]
        .as_str()
        .unwrap()
        .starts_with("user bob via Basic"));
    for action in [
        "member.add",
        "member.set_role",
        "member.remove",
        "crew.update",
        "tunnel.open",
        "tunnel.close",
    ] {
        let event = find(&before, action);
        assert_eq!(event["crew_id"], crew, "{action}");
        assert!(event["address"].is_string(), "{action}");
    }
    let offline = find(&before, "member.add");
    assert_eq!(offline["detail"], "user dave as viewer (berth admin)");
    assert_eq!(offline["address"], "local");
    // Carol's own crew sees none of home's events.
    assert!(before.iter().all(|e| e["crew_id"] == crew));

    // The table names the actor and token; everything survives a restart.
    let table = audit(&server, &token, &[]);
    assert_eq!(table.code, 0);
    assert!(table.stdout.starts_with("TIME"), "{}", table.stdout);
    assert!(table.stdout.contains("alice (token "), "{}", table.stdout);
    assert_eq!(server.terminate(), Some(0));
    let restarted = Server::start_in(&server.data.clone(), &[]);
    assert_eq!(events(&restarted, &token), before);
    assert_eq!(
        audit(&restarted, &token, &["--limit", "2", "--json"])
            .stdout
            .matches("\"action\"")
            .count(),
        2
    );
}

#[test]
fn audit_is_for_admins_and_bad_limits_are_usage_errors() {
    let server = Server::start();
    server.create_user("vera", "home", "viewer");
    let token = server.token_for("vera", "home", "ops");
    let out = audit(&server, &token, &[]);
    assert_eq!(out.code, 4, "{}", out.stderr);
    assert!(out.stderr.contains("admin"), "{}", out.stderr);
    for bad in ["0", "1001", "x"] {
        let out = audit(&server, &token, &["--limit", bad]);
        assert_eq!(out.code, 2, "--limit {bad}: {}", out.stderr);
    }
    let out = audit(&server, "", &[]);
    assert_eq!(out.code, 3, "{}", out.stderr);
}
