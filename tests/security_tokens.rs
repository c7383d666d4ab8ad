//! Who may change a token, and where `share` sends it: a token's server and
//! region are its user's alone, a token never changes a stronger one, `share`
//! follows a token's server only where the bearer stays safe, tokens made by
//! tokens expire with them, and names refuse invisible characters.

mod common;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{run_with_stdin, run_with_token, Server, PASSWORD};
use serde_json::{json, Value};

/// A crew `home`: alice (owner), carol (admin), bob (member).
fn crew() -> Server {
    let server = Server::start();
    server.create_user("alice", "home", "owner");
    server.create_user("carol", "home", "admin");
    server.create_user("bob", "home", "member");
    server
}

/// A token of `user` made with the password flow, with extra fields.
fn token_with(server: &Server, user: &str, body: Value) -> (i64, String) {
    let (status, reply) = server.call_basic("POST", "/api/v1/tokens", user, PASSWORD, Some(&body));
    assert_eq!(status, 201, "{reply}");
    (
        reply["token"]["id"].as_i64().unwrap(),
        reply["secret"].as_str().unwrap().to_string(),
    )
}

#[test]
fn only_a_token_s_own_user_may_change_its_server_or_region() {
    let server = crew();
    let (bob_id, _) = token_with(&server, "bob", json!({"name": "bob laptop"}));
    let carol = server.token_for("carol", "home", "carol laptop");
    let path = format!("/api/v1/tokens/{bob_id}");
    for change in [
        json!({"server": "http://203.0.113.7:8080"}),
        json!({"region": "eu"}),
        json!({"server": null}),
    ] {
        let (status, reply) = server.call("PATCH", &path, Some(&carol), Some(&change));
        assert_eq!(
            (status, reply["error"]["code"].as_str()),
            (403, Some("forbidden")),
            "{change}: {reply}"
        );
        assert!(
            reply["error"]["message"].as_str().unwrap().contains("bob"),
            "{reply}"
        );
    }
    let (_, shown) = server.call("GET", &path, Some(&carol), None);
    assert!(
        shown["server"].is_null() && shown["region"].is_null(),
        "{shown}"
    );
    // What an admin may change on a member's token still works.
    let (status, _) = server.call(
        "PATCH",
        &path,
        Some(&carol),
        Some(&json!({"redaction": "strict"})),
    );
    assert_eq!(status, 200);
    // The owner of the crew is no different from an admin here.
    let alice = server.token_for("alice", "home", "alice laptop");
    let (status, _) = server.call(
        "PATCH",
        &path,
        Some(&alice),
        Some(&json!({"server": "https://x.example"})),
    );
    assert_eq!(status, 403);
    // bob himself may.
    let bob = server.token_for("bob", "home", "bob other");
    let (status, reply) = server.call(
        "PATCH",
        &path,
        Some(&bob),
        Some(&json!({"server": "https://eu.example"})),
    );
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["server"], "https://eu.example");
}

#[test]
fn a_token_cannot_change_or_revoke_a_token_with_scopes_it_lacks() {
    let server = crew();
    let (strong_id, strong) = token_with(&server, "alice", json!({"name": "strong"}));
    let (_, writer) = token_with(
        &server,
        "alice",
        json!({"name": "writer", "scopes": ["tokens:write"]}),
    );
    let (peer_id, _) = token_with(
        &server,
        "alice",
        json!({"name": "peer", "scopes": ["tokens:write"]}),
    );
    let (bob_id, _) = token_with(&server, "bob", json!({"name": "bob laptop"}));
    let strong_path = format!("/api/v1/tokens/{strong_id}");
    for (method, body) in [
        ("PATCH", Some(json!({"redaction": "strict"}))),
        ("PATCH", Some(json!({"name": "renamed"}))),
        ("PATCH", Some(json!({"server": "http://203.0.113.7"}))),
        ("DELETE", None),
    ] {
        let (status, reply) = server.call(method, &strong_path, Some(&writer), body.as_ref());
        assert_eq!(
            (status, reply["error"]["code"].as_str()),
            (403, Some("forbidden")),
            "{method} {body:?}: {reply}"
        );
    }
    // Bulk actions are held to the same rule, token by token.
    for body in [
        json!({"action": "set_redaction", "redaction": "strict", "ids": [strong_id, peer_id]}),
        json!({"action": "revoke", "ids": [strong_id, bob_id]}),
    ] {
        let (status, reply) =
            server.call("POST", "/api/v1/tokens/bulk", Some(&writer), Some(&body));
        assert_eq!(status, 200, "{reply}");
        assert_eq!(reply["failed"][0]["id"], strong_id, "{reply}");
        assert_eq!(reply["failed"][0]["error"]["code"], "forbidden", "{reply}");
    }
    // The strong token is untouched and still works.
    let (status, me) = server.call("GET", "/api/v1/me", Some(&strong), None);
    assert_eq!(status, 200);
    assert_eq!(me["token"]["redaction"], "inherit");
    // A token may change one with the same scopes, and a stronger one anything.
    let (status, _) = server.call(
        "PATCH",
        &format!("/api/v1/tokens/{peer_id}"),
        Some(&writer),
        Some(&json!({"redaction": "standard"})),
    );
    assert_eq!(status, 200);
    let (status, _) = server.call(
        "PATCH",
        &format!("/api/v1/tokens/{peer_id}"),
        Some(&strong),
        Some(&json!({"redaction": "strict"})),
    );
    assert_eq!(status, 200);
}

#[test]
fn an_expiring_token_cannot_change_or_revoke_a_token_that_outlives_it() {
    let server = crew();
    let scopes = json!(["tokens:write", "tunnels:share"]);
    let (forever_id, forever) = token_with(
        &server,
        "alice",
        json!({"name": "ci forever", "scopes": scopes}),
    );
    let (month_id, _) = token_with(
        &server,
        "alice",
        json!({"name": "a month", "scopes": scopes, "expires_in_days": 30}),
    );
    let (_, day) = token_with(
        &server,
        "alice",
        json!({"name": "stolen, one day", "scopes": scopes, "expires_in_days": 1}),
    );
    for id in [forever_id, month_id] {
        let path = format!("/api/v1/tokens/{id}");
        for (method, body) in [
            (
                "PATCH",
                Some(json!({"server": "https://collector.example"})),
            ),
            ("PATCH", Some(json!({"region": "eu"}))),
            ("PATCH", Some(json!({"name": "renamed"}))),
            ("DELETE", None),
        ] {
            let (status, reply) = server.call(method, &path, Some(&day), body.as_ref());
            assert_eq!(
                (status, reply["error"]["code"].as_str()),
                (403, Some("forbidden")),
                "{method} {id} {body:?}: {reply}"
            );
            assert!(
                reply["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("expires later"),
                "{reply}"
            );
        }
    }
    let body = json!({"action": "revoke", "ids": [forever_id, month_id]});
    let (status, reply) = server.call("POST", "/api/v1/tokens/bulk", Some(&day), Some(&body));
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["updated"], json!([]), "{reply}");
    let (_, me) = server.call("GET", "/api/v1/me", Some(&forever), None);
    assert!(me["token"]["server"].is_null(), "{me}");
    assert_eq!(me["token"]["status"], "active");
    // What the day token created lives as long as it does: that it may change.
    let (status, child) = server.call(
        "POST",
        "/api/v1/tokens",
        Some(&day),
        Some(&json!({"name": "child", "scopes": ["tunnels:share"]})),
    );
    assert_eq!(status, 201, "{child}");
    let path = format!("/api/v1/tokens/{}", child["token"]["id"]);
    let (status, reply) = server.call(
        "PATCH",
        &path,
        Some(&day),
        Some(&json!({"server": "https://eu.example"})),
    );
    assert_eq!(status, 200, "{reply}");
    // The never-expiring token may change the month one.
    let (status, _) = server.call(
        "PATCH",
        &format!("/api/v1/tokens/{month_id}"),
        Some(&forever),
        Some(&json!({"redaction": "strict"})),
    );
    assert_eq!(status, 200);
}

/// A listener that records whether anything connected and what it sent first.
struct Trap {
    url: String,
    heads: Arc<Mutex<Vec<String>>>,
}

impl Trap {
    /// On 127.0.0.2: another host than the server's 127.0.0.1.
    fn start() -> Trap {
        Trap::on("127.0.0.2")
    }

    /// On `ip`, port 0.
    fn on(ip: &str) -> Trap {
        let listener = TcpListener::bind((ip, 0)).expect("bind the trap");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let heads = Arc::new(Mutex::new(Vec::new()));
        let seen = heads.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let mut head = String::new();
                let mut reader = BufReader::new(stream);
                while reader.read_line(&mut head).is_ok_and(|n| n > 2) {}
                seen.lock().unwrap().push(head);
            }
        });
        Trap { url, heads }
    }

    fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }
}

#[test]
fn share_follows_a_plain_http_server_on_another_host_only_when_told() {
    let server = crew();
    let trap = Trap::start();
    let (_, token) = token_with(
        &server,
        "bob",
        json!({"name": "bob ci", "server": trap.url}),
    );
    let refused = run_with_token(&server.url, &token, &["share", "9"]);
    assert_eq!(refused.code, 1, "{}", refused.stderr);
    assert!(
        refused.stderr.contains(&trap.url) && refused.stderr.contains("--follow-server"),
        "{}",
        refused.stderr
    );
    std::thread::sleep(Duration::from_millis(200));
    assert!(trap.heads().is_empty(), "share connected to {}", trap.url);

    // Told to, it goes there (and the bearer with it).
    let followed = run_with_token(&server.url, &token, &["share", "9", "--follow-server"]);
    assert_ne!(followed.code, 0, "the trap is no berth server");
    assert!(
        followed
            .stderr
            .contains(&format!("prefers the server {}", trap.url)),
        "{}",
        followed.stderr
    );
    let heads = trap.heads();
    assert_eq!(heads.len(), 1, "{heads:?}");
    assert!(heads[0].contains("Authorization: Bearer"), "{heads:?}");
}

#[test]
fn share_follows_plain_http_only_to_the_same_host_and_port() {
    let server = crew();
    // Same host as the server, another port: maybe another user's process.
    let trap = Trap::on("127.0.0.1");
    let (_, token) = token_with(
        &server,
        "bob",
        json!({"name": "bob ci", "server": trap.url}),
    );
    let refused = run_with_token(&server.url, &token, &["share", "9"]);
    assert_eq!(refused.code, 1, "{}", refused.stderr);
    assert!(
        refused.stderr.contains(&trap.url) && refused.stderr.contains("--follow-server"),
        "{}",
        refused.stderr
    );
    std::thread::sleep(Duration::from_millis(200));
    assert!(trap.heads().is_empty(), "share connected to {}", trap.url);
}

#[test]
fn a_server_preference_that_could_read_as_another_host_is_refused() {
    let server = crew();
    let bob = server.token_for("bob", "home", "bob laptop");
    let (_, me) = server.call("GET", "/api/v1/me", Some(&bob), None);
    let path = format!("/api/v1/tokens/{}", me["token"]["id"]);
    let good = server.url.clone();
    for bad in [
        format!("{good}@evil.example"),
        "http://127.0.0.1@evil.example/".to_string(),
        "https://good.example:443@evil.example".to_string(),
        "http://good.example\\@evil.example".to_string(),
        "http://evil.example?@good.example".to_string(),
        "http://evil.example:0".to_string(),
    ] {
        let (status, reply) =
            server.call("PATCH", &path, Some(&bob), Some(&json!({"server": bad})));
        assert_eq!(
            (status, reply["error"]["code"].as_str()),
            (400, Some("bad_request")),
            "{bad}: {reply}"
        );
        let (status, _) = server.call(
            "POST",
            "/api/v1/tokens",
            Some(&bob),
            Some(&json!({"name": "ci", "server": bad})),
        );
        assert_eq!(status, 400, "{bad}");
    }
    for fine in [
        "http://[::1]:8080",
        "https://Berth.Example.COM/",
        "http://10.0.0.2:8080",
    ] {
        let (status, reply) =
            server.call("PATCH", &path, Some(&bob), Some(&json!({"server": fine})));
        assert_eq!(status, 200, "{fine}: {reply}");
    }
}

#[test]
fn a_token_never_creates_a_token_that_outlives_it() {
    let server = crew();
    let (_, parent) = token_with(
        &server,
        "alice",
        json!({"name": "one day", "expires_in_days": 1}),
    );
    let (_, me) = server.call("GET", "/api/v1/me", Some(&parent), None);
    let limit = me["token"]["expires_at"].as_str().unwrap().to_string();
    for body in [
        json!({"name": "forever"}),
        json!({"name": "a month", "expires_in_days": 30}),
    ] {
        let (status, reply) = server.call("POST", "/api/v1/tokens", Some(&parent), Some(&body));
        assert_eq!(status, 201, "{reply}");
        assert_eq!(reply["token"]["expires_at"], limit.as_str(), "{body}");
        let note = reply["notes"][0].as_str().unwrap_or("");
        assert!(note.contains("limited") && note.contains(&limit), "{reply}");
    }
    // The CLI says so too.
    let out = run_with_token(&server.url, &parent, &["tokens", "create", "from the CLI"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.contains("expiry was limited"), "{}", out.stderr);
    // A token without an expiry, or a password, creates what it is asked for.
    let (_, forever) = token_with(&server, "alice", json!({"name": "no expiry"}));
    let (status, reply) = server.call(
        "POST",
        "/api/v1/tokens",
        Some(&forever),
        Some(&json!({"name": "child of forever"})),
    );
    assert_eq!(status, 201);
    assert!(reply["token"]["expires_at"].is_null(), "{reply}");
    assert_eq!(reply["notes"], json!([]));
}

#[test]
fn names_refuse_bidi_and_zero_width_characters() {
    let server = crew();
    let alice = server.token_for("alice", "home", "alice laptop");
    for name in [
        "admin\u{202E}IC-",
        "ci\u{200B}",
        "\u{2066}x\u{2069}",
        "a\u{FEFF}b",
    ] {
        let (status, reply) = server.call(
            "POST",
            "/api/v1/tokens",
            Some(&alice),
            Some(&json!({"name": name})),
        );
        assert_eq!(
            (status, reply["error"]["code"].as_str()),
            (400, Some("bad_request")),
            "{name:?}: {reply}"
        );
        assert!(
            reply["error"]["message"]
                .as_str()
                .unwrap()
                .contains("`name`"),
            "{reply}"
        );
    }
    let (_, me) = server.call("GET", "/api/v1/me", Some(&alice), None);
    let path = format!("/api/v1/tokens/{}", me["token"]["id"]);
    let (status, _) = server.call(
        "PATCH",
        &path,
        Some(&alice),
        Some(&json!({"name": "x\u{202D}y"})),
    );
    assert_eq!(status, 400);
    // Usernames and crew names are refused alike, naming the field.
    let out = run_with_stdin(
        &[
            "admin",
            "create-user",
            "ad\u{202E}min",
            "--password-stdin",
            "--data",
            server.data.to_str().unwrap(),
        ],
        &[],
        PASSWORD,
    );
    assert_eq!(out.code, 2, "{}", out.stderr);
    let fresh = Server::start();
    let body = json!({
        "code": fresh.setup_code.clone().unwrap(),
        "username": "ow\u{200B}ner",
        "password": PASSWORD,
        "crew": "home",
    });
    let (status, reply) = fresh.call("POST", "/api/v1/setup", None, Some(&body));
    assert_eq!(status, 400, "{reply}");
    assert!(reply["error"]["message"]
        .as_str()
        .unwrap()
        .contains("`username`"));
    let body = json!({
        "code": fresh.setup_code.clone().unwrap(),
        "username": "owner",
        "password": PASSWORD,
        "crew": "ho\u{2067}me",
    });
    let (status, reply) = fresh.call("POST", "/api/v1/setup", None, Some(&body));
    assert_eq!(status, 400, "{reply}");
    assert!(reply["error"]["message"]
        .as_str()
        .unwrap()
        .contains("`crew`"));
}

#[test]
fn names_refuse_fillers_and_stray_variation_selectors_on_rename_too() {
    let server = crew();
    let alice = server.token_for("alice", "home", "ci");
    let (_, me) = server.call("GET", "/api/v1/me", Some(&alice), None);
    let path = format!("/api/v1/tokens/{}", me["token"]["id"]);
    // Each displays as "ci", or "ci" and a blank, beside the real one.
    for name in [
        "ci\u{3164}",
        "\u{115F}ci",
        "c\u{34F}i",
        "ci\u{FE0F}",
        "ci\u{E0100}",
    ] {
        let (status, reply) =
            server.call("PATCH", &path, Some(&alice), Some(&json!({"name": name})));
        assert_eq!(
            (status, reply["error"]["code"].as_str()),
            (400, Some("bad_request")),
            "{name:?}: {reply}"
        );
        let (status, _) = server.call(
            "POST",
            "/api/v1/tokens",
            Some(&alice),
            Some(&json!({"name": name})),
        );
        assert_eq!(status, 400, "{name:?}");
    }
    let (status, reply) = server.call(
        "PATCH",
        &path,
        Some(&alice),
        Some(&json!({"name": "ci \u{2764}\u{FE0F}"})),
    );
    assert_eq!(status, 200, "an emoji keeps its selector: {reply}");
}

#[test]
fn reset_password_can_revoke_every_token_of_the_user() {
    let server = crew();
    let first = server.token_for("alice", "home", "laptop");
    let second = server.token_for("alice", "home", "ci");
    let bob = server.token_for("bob", "home", "bob laptop");
    let out = run_with_stdin(
        &[
            "admin",
            "reset-password",
            "alice",
            "--revoke-tokens",
            "--password-stdin",
            "--data",
            server.data.to_str().unwrap(),
        ],
        &[],
        "a brand new password",
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("Revoked 2 tokens"), "{}", out.stdout);
    for token in [&first, &second] {
        let (status, _) = server.call("GET", "/api/v1/me", Some(token), None);
        assert_eq!(status, 401);
    }
    let (status, _) = server.call("GET", "/api/v1/me", Some(&bob), None);
    assert_eq!(status, 200, "another user's tokens stay");
    let revoked: i64 = server
        .db()
        .query_row(
            "SELECT COUNT(*) FROM audit WHERE action = 'token.revoke' AND detail LIKE '%password reset%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(revoked, 2, "each revocation is audited");
}
