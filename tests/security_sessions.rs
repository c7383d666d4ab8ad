//! Dashboard sessions against attacks from pages on the same parent domain:
//! JSON only, same-origin only, `__Host-` and `Secure` behind a TLS proxy, one
//! session cookie per request; idle expiry and "sign out everywhere".

mod common;

use common::{Reply, Server, PASSWORD};
use serde_json::json;

const JSON: (&str, &str) = ("Content-Type", "application/json");

fn alice_on(server: Server) -> Server {
    server.create_user("alice", "home", "owner");
    server
}

/// Sign in with extra headers; the reply, the `name=value` cookie and the CSRF token.
fn sign_in_with(server: &Server, headers: &[(&str, &str)]) -> (Reply, String, String) {
    let body = json!({"username": "alice", "password": PASSWORD}).to_string();
    let mut all = vec![JSON];
    all.extend_from_slice(headers);
    let reply = server.send("POST", "/api/v1/session", &all, &body);
    assert_eq!(reply.status, 200, "{}", reply.text);
    let set = reply.header("Set-Cookie").expect("a cookie");
    let cookie = set.split(';').next().unwrap().trim().to_string();
    let csrf = reply.json()["csrf_token"].as_str().unwrap().to_string();
    (reply, cookie, csrf)
}

fn sign_in(server: &Server) -> (String, String) {
    let (_, cookie, csrf) = sign_in_with(server, &[]);
    (cookie, csrf)
}

#[test]
fn sign_in_and_session_changes_take_json_only() {
    let server = alice_on(Server::start());
    let body = json!({"username": "alice", "password": PASSWORD}).to_string();
    for headers in [
        vec![],
        vec![("Content-Type", "text/plain")],
        vec![("Content-Type", "application/x-www-form-urlencoded")],
        vec![("Content-Type", "application/jsonx")],
        vec![("Content-Type", "text/plain; application/json")],
        vec![("Content-Type", "application/json, text/plain")],
    ] {
        let reply = server.send("POST", "/api/v1/session", &headers, &body);
        assert_eq!(
            (reply.status, reply.code().as_str()),
            (400, "bad_request"),
            "{headers:?}: {}",
            reply.text
        );
        assert!(reply.text.contains("Content-Type"), "{}", reply.text);
        assert!(reply.header("Set-Cookie").is_none());
    }
    // Media types compare without regard to case (RFC 9110).
    let upper = server.send(
        "POST",
        "/api/v1/session",
        &[("Content-Type", "APPLICATION/JSON;Charset=UTF-8")],
        &body,
    );
    assert_eq!(upper.status, 200, "{}", upper.text);
    let (cookie, csrf) = sign_in(&server);
    let token = json!({"name": "from a form"}).to_string();
    let plain = server.send(
        "POST",
        "/api/v1/tokens",
        &[
            ("Cookie", &cookie),
            ("X-CSRF-Token", &csrf),
            ("Content-Type", "text/plain"),
        ],
        &token,
    );
    assert_eq!(plain.status, 400, "{}", plain.text);
    let bare_delete = server.send(
        "DELETE",
        "/api/v1/session",
        &[("Cookie", &cookie), ("X-CSRF-Token", &csrf)],
        "",
    );
    assert_eq!(bare_delete.status, 400, "{}", bare_delete.text);
    let ok = server.send(
        "POST",
        "/api/v1/tokens",
        &[
            ("Cookie", &cookie),
            ("X-CSRF-Token", &csrf),
            ("Content-Type", "application/json; charset=utf-8"),
        ],
        &token,
    );
    assert_eq!(ok.status, 201, "{}", ok.text);
    // Bearer tokens (scripts, the CLI) are not held to it.
    let bearer = server.token_for("alice", "home", "script");
    let reply = server.send(
        "DELETE",
        &format!("/api/v1/tokens/{}", ok.json()["token"]["id"]),
        &[("Authorization", &format!("Bearer {bearer}"))],
        "",
    );
    assert_eq!(reply.status, 200, "{}", reply.text);
}

#[test]
fn browsers_may_change_things_only_from_the_server_s_own_origin() {
    let server = alice_on(Server::start());
    let own = format!("http://{}", server.addr);
    let port = server.addr.rsplit_once(':').unwrap().1;
    let (cookie, csrf) = sign_in(&server);
    let body = json!({"name": "t"}).to_string();
    let send = |extra: &[(&str, &str)]| {
        let mut headers = vec![
            JSON,
            ("Cookie", cookie.as_str()),
            ("X-CSRF-Token", csrf.as_str()),
        ];
        headers.extend_from_slice(extra);
        server.send("POST", "/api/v1/tokens", &headers, &body)
    };
    let tunnel = format!("http://evil.localhost:{port}");
    for extra in [
        vec![("Sec-Fetch-Site", "same-site")],
        vec![("Sec-Fetch-Site", "cross-site")],
        vec![("Sec-Fetch-Site", "none")],
        vec![("Origin", tunnel.as_str())],
        vec![("Origin", "null")],
        vec![
            ("Sec-Fetch-Site", "same-origin"),
            ("Origin", tunnel.as_str()),
        ],
    ] {
        let reply = send(&extra);
        assert_eq!(
            (reply.status, reply.code().as_str()),
            (403, "forbidden"),
            "{extra:?}: {}",
            reply.text
        );
    }
    let reply = send(&[("Sec-Fetch-Site", "same-origin"), ("Origin", own.as_str())]);
    assert_eq!(reply.status, 201, "{}", reply.text);
    // Sign-in from a page served through a tunnel (same site) is refused too.
    let login = json!({"username": "alice", "password": PASSWORD}).to_string();
    let reply = server.send(
        "POST",
        "/api/v1/session",
        &[
            JSON,
            ("Sec-Fetch-Site", "same-site"),
            ("Origin", tunnel.as_str()),
        ],
        &login,
    );
    assert_eq!(reply.status, 403, "{}", reply.text);
    assert!(reply.header("Set-Cookie").is_none());
}

#[test]
fn an_https_public_url_makes_the_cookie_host_prefixed_and_secure_behind_a_proxy() {
    let dir = tempfile::tempdir().unwrap();
    let server = alice_on(Server::start_in(
        &dir.path().join("data"),
        &["--public-url", "https://berth.example.com"],
    ));
    let public = ("Origin", "https://berth.example.com");
    let (reply, cookie, csrf) = sign_in_with(&server, &[public, ("Sec-Fetch-Site", "same-origin")]);
    let set = reply.header("Set-Cookie").unwrap();
    assert!(cookie.starts_with("__Host-berth_session="), "{set}");
    let attributes: Vec<&str> = set.split(';').map(str::trim).collect();
    for wanted in ["Secure", "HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(attributes.contains(&wanted), "{wanted} missing: {set}");
    }
    assert!(!set.contains("Domain"), "{set}");
    let me = server.send("GET", "/api/v1/me", &[("Cookie", &cookie)], "");
    assert_eq!(me.status, 200, "{}", me.text);
    // A cookie planted without the prefix is not a session.
    let id = cookie.split_once('=').unwrap().1;
    let planted = server.send(
        "GET",
        "/api/v1/me",
        &[("Cookie", &format!("berth_session={id}"))],
        "",
    );
    assert_eq!(planted.status, 401);
    // With --public-url set, only its origin counts, not the address the request reached.
    let body = json!({"name": "t"}).to_string();
    let direct = format!("http://{}", server.addr);
    let base = [
        JSON,
        ("Cookie", cookie.as_str()),
        ("X-CSRF-Token", csrf.as_str()),
    ];
    let reply = server.send(
        "POST",
        "/api/v1/tokens",
        &[&base[..], &[("Origin", direct.as_str())]].concat(),
        &body,
    );
    assert_eq!(reply.status, 403, "{}", reply.text);
    assert!(
        reply.text.contains("https://berth.example.com"),
        "{}",
        reply.text
    );
    let reply = server.send(
        "POST",
        "/api/v1/tokens",
        &[&base[..], &[public]].concat(),
        &body,
    );
    assert_eq!(reply.status, 201, "{}", reply.text);
}

#[test]
fn two_session_cookies_are_refused() {
    let server = alice_on(Server::start());
    let (cookie, _) = sign_in(&server);
    let planted = "berth_session=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    for headers in [
        vec![("Cookie", format!("{planted}; {cookie}"))],
        vec![("Cookie", format!("{cookie}; {planted}"))],
        vec![("Cookie", format!("{cookie}; theme=dark; {cookie}"))],
        vec![("Cookie", planted.to_string()), ("Cookie", cookie.clone())],
    ] {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let reply = server.send("GET", "/api/v1/me", &headers, "");
        assert_eq!(
            (reply.status, reply.code().as_str()),
            (400, "bad_request"),
            "{headers:?}: {}",
            reply.text
        );
        assert!(reply.text.contains("more than one"), "{}", reply.text);
    }
    let other_cookies = format!("theme=dark; {cookie}; lang=en");
    let reply = server.send("GET", "/api/v1/me", &[("Cookie", &other_cookies)], "");
    assert_eq!(reply.status, 200, "{}", reply.text);
}

/// A session's end as stored, in seconds from now.
fn stored_end_in(server: &Server) -> i64 {
    server
        .db()
        .query_row(
            "SELECT CAST(strftime('%s', expires_at) AS INTEGER) - CAST(strftime('%s', 'now') AS INTEGER)
             FROM sessions ORDER BY created_at DESC, rowid DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .unwrap()
}

#[test]
fn sessions_end_after_an_idle_hour_and_twelve_hours_at_most() {
    let server = alice_on(Server::start());
    let (cookie, _) = sign_in(&server);
    let end = stored_end_in(&server);
    assert!(
        (3500..=3600).contains(&end),
        "a new session ends in an idle hour, not {end} s"
    );
    // Unused past its idle end, it is over.
    server
        .db()
        .execute(
            "UPDATE sessions SET expires_at = '2001-01-01T00:00:00Z'",
            [],
        )
        .unwrap();
    let reply = server.send("GET", "/api/v1/me", &[("Cookie", &cookie)], "");
    assert_eq!(reply.status, 401);
    // Used, it lives on an idle hour from then, but never past 12 h from sign-in.
    let (cookie, _) = sign_in(&server);
    server
        .db()
        .execute(
            "UPDATE sessions SET created_at = strftime('%Y-%m-%dT%H:%M:%SZ', 'now', '-690 minutes'),
                                 expires_at = strftime('%Y-%m-%dT%H:%M:%SZ', 'now', '+5 minutes')",
            [],
        )
        .unwrap();
    let reply = server.send("GET", "/api/v1/me", &[("Cookie", &cookie)], "");
    assert_eq!(reply.status, 200);
    let end = stored_end_in(&server);
    assert!(
        (1700..=1800).contains(&end),
        "capped at 12 h from sign-in, not {end} s"
    );
}

#[test]
fn pages_on_other_origins_can_neither_use_nor_keep_alive_a_session() {
    let server = alice_on(Server::start());
    let (cookie, _) = sign_in(&server);
    server
        .db()
        .execute(
            "UPDATE sessions SET expires_at = strftime('%Y-%m-%dT%H:%M:%SZ', 'now', '+10 minutes')",
            [],
        )
        .unwrap();
    let tunnel_page = "http://evil.localhost:8080";
    for headers in [
        vec![("Sec-Fetch-Site", "same-site")],
        vec![("Sec-Fetch-Site", "cross-site")],
        vec![("Origin", tunnel_page)],
        vec![("Origin", "null")],
        vec![("Sec-Fetch-Site", "same-site"), ("Origin", tunnel_page)],
    ] {
        let mut all = vec![("Cookie", cookie.as_str())];
        all.extend(headers.iter().copied());
        for path in ["/api/v1/me", "/api/v1/tokens", "/api/v1/crews"] {
            let reply = server.send("GET", path, &all, "");
            assert_eq!(
                (reply.status, reply.code().as_str()),
                (403, "forbidden"),
                "{path} {headers:?}: {}",
                reply.text
            );
            assert!(!reply.text.contains("csrf_token"), "{}", reply.text);
        }
    }
    let end = stored_end_in(&server);
    assert!(
        (500..=600).contains(&end),
        "requests from other sites kept the session alive: it ends in {end} s"
    );
    // The dashboard itself, and a URL typed into the address bar, still read.
    for site in ["same-origin", "none"] {
        let reply = server.send(
            "GET",
            "/api/v1/me",
            &[("Cookie", &cookie), ("Sec-Fetch-Site", site)],
            "",
        );
        assert_eq!(reply.status, 200, "{site}: {}", reply.text);
    }
    assert!(stored_end_in(&server) > 3000);
}

#[test]
fn the_dashboard_s_own_polling_does_not_keep_a_session_alive() {
    let server = alice_on(Server::start());
    let (cookie, _) = sign_in(&server);
    server
        .db()
        .execute(
            "UPDATE sessions SET expires_at = strftime('%Y-%m-%dT%H:%M:%SZ', 'now', '+10 minutes')",
            [],
        )
        .unwrap();
    let polling = [
        ("Cookie", cookie.as_str()),
        ("Sec-Fetch-Site", "same-origin"),
        ("X-Berth-Background", "1"),
    ];
    for path in ["/api/v1/tunnels?active=1", "/api/v1/me"] {
        let reply = server.send("GET", path, &polling, "");
        assert_eq!(reply.status, 200, "{path}: {}", reply.text);
    }
    let end = stored_end_in(&server);
    assert!(
        (500..=600).contains(&end),
        "a background refresh kept the session alive: it ends in {end} s"
    );
    // A person's request does.
    let reply = server.send("GET", "/api/v1/me", &polling[..2], "");
    assert_eq!(reply.status, 200);
    assert!(stored_end_in(&server) > 3000);
}

#[test]
fn sign_out_everywhere_ends_every_session_of_the_user() {
    let server = alice_on(Server::start());
    server.create_user("bob", "home", "member");
    let (first, csrf) = sign_in(&server);
    let (second, _) = sign_in(&server);
    let body = json!({"username": "bob", "password": PASSWORD}).to_string();
    let bob = server.send("POST", "/api/v1/session", &[JSON], &body);
    let bob = bob
        .header("Set-Cookie")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let reply = server.send(
        "DELETE",
        "/api/v1/sessions",
        &[JSON, ("Cookie", &first), ("X-CSRF-Token", &csrf)],
        "",
    );
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json()["ended"], 2);
    assert!(reply.header("Set-Cookie").unwrap().contains("Max-Age=0"));
    for cookie in [&first, &second] {
        let me = server.send("GET", "/api/v1/me", &[("Cookie", cookie)], "");
        assert_eq!(me.status, 401);
    }
    let me = server.send("GET", "/api/v1/me", &[("Cookie", &bob)], "");
    assert_eq!(me.status, 200, "another user's session stays");
    // From the CLI's side: a berth:* token may, a narrower one may not.
    sign_in(&server);
    let (_, narrow) = server.call_basic(
        "POST",
        "/api/v1/tokens",
        "alice",
        PASSWORD,
        Some(&json!({"name": "reader", "scopes": ["tokens:read"]})),
    );
    let narrow = narrow["secret"].as_str().unwrap();
    let (status, _) = server.call("DELETE", "/api/v1/sessions", Some(narrow), None);
    assert_eq!(status, 403);
    let full = server.token_for("alice", "home", "laptop");
    let (status, reply) = server.call("DELETE", "/api/v1/sessions", Some(&full), None);
    assert_eq!((status, reply["ended"].as_i64()), (200, Some(1)), "{reply}");
    let audited: i64 = server
        .db()
        .query_row(
            "SELECT COUNT(*) FROM audit WHERE action = 'session.end_all'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(audited, 2);
}

#[test]
fn changing_one_s_password_can_revoke_every_token() {
    let server = alice_on(Server::start());
    server.create_user("bob", "home", "member");
    let laptop = server.token_for("alice", "home", "laptop");
    let ci = server.token_for("alice", "home", "ci");
    let bob = server.token_for("bob", "home", "bob laptop");
    let (cookie, _) = sign_in(&server);
    let passwd = |token: &str, stdin: &str, extra: &[&str]| {
        let env = [
            ("BERTH_CONFIG", common::NO_CONFIG),
            ("BERTH_SERVER", server.url.as_str()),
            ("BERTH_TOKEN", token),
        ];
        let args = [&["passwd", "--password-stdin"], extra].concat();
        common::run_with_stdin(&args, &env, stdin)
    };
    let wrong = passwd(
        &laptop,
        "not my password\nnew password 1\n",
        &["--revoke-tokens"],
    );
    assert_eq!(wrong.code, 3, "{}", wrong.stderr);
    let (status, _) = server.call("GET", "/api/v1/me", Some(&ci), None);
    assert_eq!(status, 200, "a wrong password changes nothing");
    let short = passwd(&laptop, &format!("{PASSWORD}\nshort\n"), &[]);
    assert_eq!(short.code, 2, "{}", short.stderr);
    assert!(short.stderr.contains("shorter"), "{}", short.stderr);

    let changed = passwd(
        &laptop,
        &format!("{PASSWORD}\nnew password 1\n"),
        &["--revoke-tokens"],
    );
    assert_eq!(changed.code, 0, "{}", changed.stderr);
    assert!(
        changed.stdout.contains("Revoked 2 tokens"),
        "{}",
        changed.stdout
    );
    for token in [&laptop, &ci] {
        assert_eq!(server.call("GET", "/api/v1/me", Some(token), None).0, 401);
    }
    assert_eq!(server.call("GET", "/api/v1/me", Some(&bob), None).0, 200);
    let me = server.send("GET", "/api/v1/me", &[("Cookie", &cookie)], "");
    assert_eq!(me.status, 401, "sessions end with the old password");

    // From the dashboard: the session that changed it gets a new one; tokens stay.
    let body = json!({"username": "alice", "password": "new password 1"}).to_string();
    let reply = server.send("POST", "/api/v1/session", &[JSON], &body);
    let cookie = reply
        .header("Set-Cookie")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let csrf = reply.json()["csrf_token"].as_str().unwrap().to_string();
    let (_, fresh) = server.call_basic(
        "POST",
        "/api/v1/tokens",
        "alice",
        "new password 1",
        Some(&json!({"name": "after"})),
    );
    let fresh = fresh["secret"].as_str().unwrap().to_string();
    let change = json!({"current_password": "new password 1", "new_password": "newer password 2"});
    let reply = server.send(
        "POST",
        "/api/v1/me/password",
        &[JSON, ("Cookie", &cookie), ("X-CSRF-Token", &csrf)],
        &change.to_string(),
    );
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json()["tokens_revoked"], 0);
    let renewed = reply
        .header("Set-Cookie")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    assert_ne!(renewed, cookie);
    assert_eq!(
        server
            .send("GET", "/api/v1/me", &[("Cookie", &cookie)], "")
            .status,
        401
    );
    assert_eq!(
        server
            .send("GET", "/api/v1/me", &[("Cookie", &renewed)], "")
            .status,
        200
    );
    assert_eq!(server.call("GET", "/api/v1/me", Some(&fresh), None).0, 200);
    let audited: i64 = server
        .db()
        .query_row(
            "SELECT COUNT(*) FROM audit WHERE action = 'user.password'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(audited, 2);
}
