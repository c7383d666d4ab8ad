//! Dashboard sessions against the real server: the cookie, CSRF on mutations,
//! cross-site refusal, sign-out ending the session on the server, and throttling.

mod common;

use common::{Reply, Server, PASSWORD};
use serde_json::json;

fn alice() -> Server {
    let server = Server::start();
    server.create_user("alice", "home", "owner");
    server
}

/// Sign in; returns the reply, the `name=value` cookie and the CSRF token.
fn sign_in(server: &Server) -> (Reply, String, String) {
    let body = json!({"username": "alice", "password": PASSWORD}).to_string();
    let reply = server.send(
        "POST",
        "/api/v1/session",
        &[("Content-Type", "application/json")],
        &body,
    );
    assert_eq!(reply.status, 200, "{}", reply.text);
    let set = reply.header("Set-Cookie").expect("a cookie");
    let cookie = set.split(';').next().unwrap().trim().to_string();
    let csrf = reply.json()["csrf_token"].as_str().unwrap().to_string();
    (reply, cookie, csrf)
}

#[test]
fn sign_in_sets_an_httponly_samesite_strict_cookie() {
    let server = alice();
    let (reply, cookie, csrf) = sign_in(&server);
    let set = reply.header("Set-Cookie").unwrap();
    let attributes: Vec<&str> = set.split(';').map(str::trim).collect();
    assert!(cookie.starts_with("berth_session="), "{set}");
    assert!(cookie.len() > "berth_session=".len() + 32, "{set}");
    for wanted in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(attributes.contains(&wanted), "{wanted} missing: {set}");
    }
    assert!(
        !attributes.contains(&"Secure"),
        "plain HTTP: no Secure: {set}"
    );
    assert_eq!(reply.json()["user"]["username"], "alice");
    assert!(csrf.len() >= 32);
    // The session identifies the user; no token behind it.
    let me = server.send("GET", "/api/v1/me", &[("Cookie", &cookie)], "");
    assert_eq!(me.status, 200, "{}", me.text);
    assert_eq!(me.json()["user"]["username"], "alice");
    assert_eq!(me.json()["role"], "owner");
    assert!(me.json()["token"].is_null());
    assert_eq!(me.json()["csrf_token"], csrf.as_str());
    // Each sign-in is a new session id.
    let (_, second, _) = sign_in(&server);
    assert_ne!(cookie, second);
    // Only the hash of the session id is stored.
    let id = cookie.split_once('=').unwrap().1;
    let db = std::fs::read(server.data.join("berth.db")).unwrap();
    assert!(!db.windows(id.len()).any(|w| w == id.as_bytes()));
}

#[test]
fn mutations_need_the_csrf_header() {
    let server = alice();
    let (_, cookie, csrf) = sign_in(&server);
    let body = json!({"name": "from the dashboard"}).to_string();
    let missing = server.send("POST", "/api/v1/tokens", &[("Cookie", &cookie)], &body);
    assert_eq!(
        (missing.status, missing.code().as_str()),
        (403, "forbidden")
    );
    assert!(missing.text.contains("X-CSRF-Token"), "{}", missing.text);
    let wrong = server.send(
        "POST",
        "/api/v1/tokens",
        &[("Cookie", &cookie), ("X-CSRF-Token", "0123")],
        &body,
    );
    assert_eq!(wrong.status, 403);
    // Another session's CSRF token is just as wrong.
    let (_, _, other_csrf) = sign_in(&server);
    let crossed = server.send(
        "POST",
        "/api/v1/tokens",
        &[("Cookie", &cookie), ("X-CSRF-Token", &other_csrf)],
        &body,
    );
    assert_eq!(crossed.status, 403);
    let ok = server.send(
        "POST",
        "/api/v1/tokens",
        &[
            ("Cookie", &cookie),
            ("X-CSRF-Token", &csrf),
            ("Content-Type", "application/json"),
        ],
        &body,
    );
    assert_eq!(ok.status, 201, "{}", ok.text);
    let id = ok.json()["token"]["id"].as_i64().unwrap();
    // Every mutation: PATCH and DELETE too.
    let path = format!("/api/v1/tokens/{id}");
    let patch = json!({"redaction": "strict"}).to_string();
    assert_eq!(
        server
            .send("PATCH", &path, &[("Cookie", &cookie)], &patch)
            .status,
        403
    );
    assert_eq!(
        server
            .send("DELETE", &path, &[("Cookie", &cookie)], "")
            .status,
        403
    );
    let deleted = server.send(
        "DELETE",
        &path,
        &[
            ("Cookie", &cookie),
            ("X-CSRF-Token", &csrf),
            ("Content-Type", "application/json"),
        ],
        "",
    );
    assert_eq!(deleted.status, 200);
    // Reads need no CSRF header.
    let list = server.send("GET", "/api/v1/tokens", &[("Cookie", &cookie)], "");
    assert_eq!(list.status, 200);
}

#[test]
fn cross_site_requests_are_refused() {
    let server = alice();
    let (_, cookie, csrf) = sign_in(&server);
    let body = json!({"name": "cross"}).to_string();
    let cross = server.send(
        "POST",
        "/api/v1/tokens",
        &[
            ("Cookie", &cookie),
            ("X-CSRF-Token", &csrf),
            ("Sec-Fetch-Site", "cross-site"),
        ],
        &body,
    );
    assert_eq!((cross.status, cross.code().as_str()), (403, "forbidden"));
    let same = server.send(
        "POST",
        "/api/v1/tokens",
        &[
            ("Cookie", &cookie),
            ("X-CSRF-Token", &csrf),
            ("Sec-Fetch-Site", "same-origin"),
            ("Content-Type", "application/json"),
        ],
        &body,
    );
    assert_eq!(same.status, 201, "{}", same.text);
    // Signing in from another site (login CSRF) is refused as well.
    let login = json!({"username": "alice", "password": PASSWORD}).to_string();
    let reply = server.send(
        "POST",
        "/api/v1/session",
        &[("Sec-Fetch-Site", "cross-site")],
        &login,
    );
    assert_eq!(reply.status, 403, "{}", reply.text);
    assert!(reply.header("Set-Cookie").is_none());
}

#[test]
fn sign_out_ends_the_session_on_the_server() {
    let server = alice();
    let (_, cookie, csrf) = sign_in(&server);
    let (_, other, _) = sign_in(&server);
    // Without the CSRF header, sign-out is refused like any mutation.
    assert_eq!(
        server
            .send("DELETE", "/api/v1/session", &[("Cookie", &cookie)], "")
            .status,
        403
    );
    let out = server.send(
        "DELETE",
        "/api/v1/session",
        &[
            ("Cookie", &cookie),
            ("X-CSRF-Token", &csrf),
            ("Content-Type", "application/json"),
        ],
        "",
    );
    assert_eq!(out.status, 204);
    let cleared = out.header("Set-Cookie").unwrap();
    assert!(cleared.starts_with("berth_session=;"), "{cleared}");
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    // The old cookie, replayed, is worth nothing.
    let replay = server.send("GET", "/api/v1/me", &[("Cookie", &cookie)], "");
    assert_eq!((replay.status, replay.code().as_str()), (401, "no_token"));
    // The other session is untouched.
    assert_eq!(
        server
            .send("GET", "/api/v1/me", &[("Cookie", &other)], "")
            .status,
        200
    );
    // A token cannot "sign out".
    let token = server.token_for("alice", "home", "laptop");
    let (status, reply) = server.call("DELETE", "/api/v1/session", Some(&token), None);
    assert_eq!(status, 400, "{reply}");
}

#[test]
fn made_up_and_garbled_cookies_are_no_session() {
    let server = alice();
    for cookie in [
        "berth_session=00",
        "berth_session=",
        "berth_session",
        "other=1",
        "berth_session=\"quoted\"",
        &format!("berth_session={}", "f".repeat(5000)),
    ] {
        let reply = server.send("GET", "/api/v1/me", &[("Cookie", cookie)], "");
        assert_eq!(reply.status, 401, "{cookie:.40}: {}", reply.text);
    }
}

#[test]
fn sign_in_failures_say_little_and_are_throttled() {
    let server = alice();
    let send = |body: serde_json::Value| {
        server.send(
            "POST",
            "/api/v1/session",
            &[("Content-Type", "application/json")],
            &body.to_string(),
        )
    };
    let wrong = send(json!({"username": "alice", "password": "wrong password"}));
    assert_eq!(
        (wrong.status, wrong.code().as_str()),
        (401, "bad_credentials")
    );
    let unknown = send(json!({"username": "nobody", "password": "wrong password"}));
    assert_eq!(
        unknown.json(),
        wrong.json(),
        "an unknown user reads the same"
    );
    for (body, field) in [
        (json!({"password": PASSWORD}), "username"),
        (json!({"username": "alice"}), "password"),
        (json!({"username": "alice", "password": 5}), "password"),
        (
            json!({"username": "alice", "password": PASSWORD, "remember": true}),
            "remember",
        ),
    ] {
        let reply = send(body.clone());
        assert_eq!(reply.status, 400, "{body}");
        assert!(reply.text.contains(field), "{body}: {}", reply.text);
    }
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(send(json!({"username": "alice", "password": "wrong password"})).status);
    }
    // One failure above, four here; then the limit.
    assert_eq!(statuses, [401, 401, 401, 401, 429]);
    let blocked = send(json!({"username": "alice", "password": PASSWORD}));
    assert_eq!(blocked.status, 429);
    assert!(blocked.header("Retry-After").is_some());
    assert!(blocked.header("Set-Cookie").is_none());
    // The audit log saw the failures.
    let token_attempt = server.call_basic("POST", "/api/v1/tokens", "alice", PASSWORD, None);
    assert_eq!(token_attempt.0, 429, "Basic shares the throttle");
}

#[test]
fn setup_is_refused_once_users_exist() {
    let server = alice();
    let body = json!({"code": "x", "username": "mallory", "password": PASSWORD, "crew": "evil"});
    let (status, reply) = server.call("POST", "/api/v1/setup", None, Some(&body));
    assert_eq!(
        (status, reply["error"]["code"].as_str()),
        (409, Some("conflict"))
    );
}
