//! `/api/v1/tokens` against the real server: the token format, list/show/change/revoke,
//! bulk actions, expiry, roles × scopes, Basic auth and its throttle, last use, bad
//! input, and many clients at once.

mod common;

use common::{request_at, Server, PASSWORD};
use serde_json::{json, Value};

/// Secret-scanning regex of DESIGN §2, `[0-9]+\|berth_[A-Za-z0-9]{40}`, as a whole match.
fn scanner_matches(text: &str) -> bool {
    let Some((id, rest)) = text.split_once('|') else {
        return false;
    };
    let Some(body) = rest.strip_prefix("berth_") else {
        return false;
    };
    !id.is_empty()
        && id.bytes().all(|b| b.is_ascii_digit())
        && body.len() == 40
        && body.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// A server with alice (owner of `home`) and her token.
fn home() -> (Server, String) {
    let server = Server::start();
    server.create_user("alice", "home", "owner");
    let token = server.token_for("alice", "home", "laptop");
    (server, token)
}

fn create(server: &Server, token: &str, body: Value) -> (u16, Value) {
    server.call("POST", "/api/v1/tokens", Some(token), Some(&body))
}

fn id_of(secret: &str) -> i64 {
    secret.split_once('|').unwrap().0.parse().unwrap()
}

fn ids(list: &Value) -> Vec<i64> {
    list["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_i64().unwrap())
        .collect()
}

fn code(reply: &Value) -> &str {
    reply["error"]["code"].as_str().unwrap_or("")
}

#[test]
fn create_shows_the_secret_once_in_the_scanning_shape() {
    let (server, token) = home();
    let (status, reply) = create(&server, &token, json!({"name": "CI - deploy"}));
    assert_eq!(status, 201, "{reply}");
    let secret = reply["secret"].as_str().unwrap();
    assert!(scanner_matches(secret), "{secret}");
    let object = &reply["token"];
    assert_eq!(id_of(secret), object["id"].as_i64().unwrap());
    assert_eq!(object["name"], "CI - deploy");
    assert_eq!(object["crew"]["name"], "home");
    assert_eq!(object["user"]["username"], "alice");
    assert_eq!(object["scopes"], json!(["berth:*"]));
    assert_eq!(object["redaction"], "inherit");
    assert_eq!(object["effective_redaction"], "standard");
    assert_eq!(object["status"], "active");
    for key in [
        "region",
        "server",
        "last_used_at",
        "last_used_ip",
        "expires_at",
        "revoked_at",
    ] {
        assert!(object[key].is_null(), "{key} in {object}");
    }
    let created = object["created_at"].as_str().unwrap();
    assert!(created.ends_with('Z') && created.len() == 20, "{created}");

    // The secret never appears again: not in list, show or the database.
    let random = secret.split_once("berth_").unwrap().1;
    let (_, list) = server.call("GET", "/api/v1/tokens", Some(&token), None);
    let (_, shown) = server.call(
        "GET",
        &format!("/api/v1/tokens/{}", id_of(secret)),
        Some(&token),
        None,
    );
    assert!(!list.to_string().contains(random));
    assert!(!shown.to_string().contains(random));
    assert!(shown.get("secret").is_none());
    let db = std::fs::read(server.data.join("berth.db")).unwrap();
    assert!(!db.windows(random.len()).any(|w| w == random.as_bytes()));

    // And the new token works.
    let (status, me) = server.call("GET", "/api/v1/me", Some(secret), None);
    assert_eq!(status, 200);
    assert_eq!(me["token"]["name"], "CI - deploy");
}

#[test]
fn create_takes_every_documented_field() {
    let (server, token) = home();
    let (status, reply) = create(
        &server,
        &token,
        json!({"name": "edge", "crew": "home", "redaction": "strict", "region": "eu-west",
               "server": "https://berth.example.com/", "expires_in_days": 30,
               "scopes": ["tunnels:share", "traffic:read"]}),
    );
    assert_eq!(status, 201, "{reply}");
    let t = &reply["token"];
    assert_eq!(t["redaction"], "strict");
    assert_eq!(t["effective_redaction"], "strict");
    assert_eq!(t["region"], "eu-west");
    assert_eq!(t["server"], "https://berth.example.com");
    assert_eq!(t["scopes"], json!(["tunnels:share", "traffic:read"]));
    assert!(t["expires_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(t["status"], "active");
    // The crew may be given by id too.
    let crew = server.crew_id("home");
    let (status, reply) = create(&server, &token, json!({"name": "by id", "crew": crew}));
    assert_eq!((status, &reply["token"]["crew"]["id"]), (201, &json!(crew)));
}

#[test]
fn list_shows_own_tokens_by_crew_and_all_only_to_admins() {
    let server = Server::start();
    server.create_user("alice", "home", "owner");
    server.create_user("bob", "home", "member");
    server.create_user("carol", "work", "owner");
    let alice = server.token_for("alice", "home", "a1");
    let bob = server.token_for("bob", "home", "b1");
    let carol = server.token_for("carol", "work", "c1");

    let (status, list) = server.call("GET", "/api/v1/tokens", Some(&alice), None);
    assert_eq!(status, 200);
    assert_eq!(ids(&list), [id_of(&alice)]);
    let (_, list) = server.call("GET", "/api/v1/tokens?crew=home", Some(&bob), None);
    assert_eq!(ids(&list), [id_of(&bob)]);

    let (status, list) = server.call("GET", "/api/v1/tokens?all=1", Some(&alice), None);
    assert_eq!(status, 200, "{list}");
    assert_eq!(ids(&list), [id_of(&bob), id_of(&alice)], "newest first");
    let (status, reply) = server.call("GET", "/api/v1/tokens?all=1", Some(&bob), None);
    assert_eq!((status, code(&reply)), (403, "forbidden"), "{reply}");

    // A token speaks for its own crew only.
    let (status, reply) = server.call("GET", "/api/v1/tokens?crew=work", Some(&alice), None);
    assert_eq!((status, code(&reply)), (403, "forbidden"), "{reply}");
    let (_, list) = server.call("GET", "/api/v1/tokens?all=1", Some(&carol), None);
    assert_eq!(ids(&list), [id_of(&carol)]);

    // With a password, every crew of the user, or one.
    let (_, list) = server.call_basic("GET", "/api/v1/tokens", "bob", PASSWORD, None);
    assert_eq!(ids(&list), [id_of(&bob)]);
    let (status, reply) =
        server.call_basic("GET", "/api/v1/tokens?crew=work", "bob", PASSWORD, None);
    assert_eq!((status, code(&reply)), (404, "not_found"), "{reply}");
}

#[test]
fn show_patch_and_delete_a_token() {
    let (server, token) = home();
    let (_, reply) = create(&server, &token, json!({"name": "ci"}));
    let id = reply["token"]["id"].as_i64().unwrap();
    let other = reply["secret"].as_str().unwrap().to_string();
    let path = format!("/api/v1/tokens/{id}");

    let (status, shown) = server.call("GET", &path, Some(&token), None);
    assert_eq!((status, &shown["name"]), (200, &json!("ci")));

    let change = json!({"name": "ci - deploy", "redaction": "strict", "region": "eu",
                        "server": "http://berth.lan:8080"});
    let (status, changed) = server.call("PATCH", &path, Some(&token), Some(&change));
    assert_eq!(status, 200, "{changed}");
    assert_eq!(changed["name"], "ci - deploy");
    assert_eq!(changed["redaction"], "strict");
    assert_eq!(changed["region"], "eu");
    assert_eq!(changed["server"], "http://berth.lan:8080");
    // null clears; absent fields stay.
    let (_, changed) = server.call(
        "PATCH",
        &path,
        Some(&token),
        Some(&json!({"server": null, "redaction": "inherit"})),
    );
    assert_eq!(changed["server"], Value::Null);
    assert_eq!(changed["region"], "eu");
    assert_eq!(changed["effective_redaction"], "standard");

    let (status, revoked) = server.call("DELETE", &path, Some(&token), None);
    assert_eq!(status, 200, "{revoked}");
    assert_eq!(revoked["status"], "revoked");
    assert!(revoked["revoked_at"].as_str().is_some());
    // The revoked token is refused on its very next call, with the documented body.
    let reply = server.send(
        "GET",
        "/api/v1/me",
        &[("Authorization", &format!("Bearer {other}"))],
        "",
    );
    assert_eq!(reply.status, 401);
    assert_eq!(
        reply.json(),
        json!({"error": {"code": "invalid_token", "message": "Invalid token"}})
    );
    // Revoking again keeps the first time.
    let (status, again) = server.call("DELETE", &path, Some(&token), None);
    assert_eq!(
        (status, &again["revoked_at"]),
        (200, &revoked["revoked_at"])
    );
    let (status, reply) = server.call("GET", "/api/v1/tokens/424242", Some(&token), None);
    assert_eq!((status, code(&reply)), (404, "not_found"));
}

#[test]
fn a_token_can_revoke_itself() {
    let (server, token) = home();
    let path = format!("/api/v1/tokens/{}", id_of(&token));
    let (status, reply) = server.call("DELETE", &path, Some(&token), None);
    assert_eq!((status, &reply["status"]), (200, &json!("revoked")));
    let (status, reply) = server.call("GET", "/api/v1/me", Some(&token), None);
    assert_eq!((status, code(&reply)), (401, "invalid_token"));
}

#[test]
fn names_are_unique_among_active_tokens_of_a_user_and_crew() {
    let (server, token) = home();
    let (status, first) = create(&server, &token, json!({"name": "ci"}));
    assert_eq!(status, 201);
    let (status, reply) = create(&server, &token, json!({"name": "ci"}));
    assert_eq!((status, code(&reply)), (409, "conflict"), "{reply}");
    assert!(reply["error"]["message"].as_str().unwrap().contains("ci"));
    // Renaming onto a taken name conflicts too.
    let (_, second) = create(&server, &token, json!({"name": "ci2"}));
    let path = format!("/api/v1/tokens/{}", second["token"]["id"]);
    let (status, reply) = server.call("PATCH", &path, Some(&token), Some(&json!({"name": "ci"})));
    assert_eq!((status, code(&reply)), (409, "conflict"), "{reply}");
    // Once revoked, the name is free again.
    let path = format!("/api/v1/tokens/{}", first["token"]["id"]);
    server.call("DELETE", &path, Some(&token), None);
    let (status, _) = create(&server, &token, json!({"name": "ci"}));
    assert_eq!(status, 201);
}

#[test]
fn an_expired_token_gets_token_expired() {
    let (server, token) = home();
    let (_, reply) = create(
        &server,
        &token,
        json!({"name": "short", "expires_in_days": 1}),
    );
    let secret = reply["secret"].as_str().unwrap().to_string();
    assert_eq!(server.call("GET", "/api/v1/me", Some(&secret), None).0, 200);
    // Move its expiry into the past, as a day going by would.
    server
        .db()
        .execute(
            "UPDATE tokens SET expires_at = '2001-01-01T00:00:00Z' WHERE id = ?1",
            [id_of(&secret)],
        )
        .unwrap();
    let (status, reply) = server.call("GET", "/api/v1/me", Some(&secret), None);
    assert_eq!((status, code(&reply)), (401, "token_expired"), "{reply}");
    let (_, shown) = server.call(
        "GET",
        &format!("/api/v1/tokens/{}", id_of(&secret)),
        Some(&token),
        None,
    );
    assert_eq!(shown["status"], "expired");
    for days in [json!(0), json!(-1), json!(3651), json!("7"), json!(1.5)] {
        let (status, reply) = create(
            &server,
            &token,
            json!({"name": "x", "expires_in_days": days}),
        );
        assert_eq!(status, 400, "{days}: {reply}");
        assert!(reply["error"]["message"]
            .as_str()
            .unwrap()
            .contains("expires_in_days"));
    }
}

#[test]
fn bulk_actions_report_what_was_updated_and_what_failed() {
    let server = Server::start();
    server.create_user("alice", "home", "owner");
    server.create_user("bob", "home", "member");
    let alice = server.token_for("alice", "home", "a");
    let bob = server.token_for("bob", "home", "b");
    let (_, one) = create(&server, &alice, json!({"name": "one"}));
    let (_, two) = create(&server, &alice, json!({"name": "two"}));
    let (one, two) = (one["token"]["id"].clone(), two["token"]["id"].clone());

    let body = json!({"action": "set_redaction", "redaction": "strict", "ids": [one, two, 999]});
    let (status, reply) = server.call("POST", "/api/v1/tokens/bulk", Some(&alice), Some(&body));
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["updated"], json!([one, two]));
    assert_eq!(reply["failed"][0]["id"], 999);
    assert_eq!(reply["failed"][0]["error"]["code"], "not_found");
    let (_, shown) = server.call("GET", &format!("/api/v1/tokens/{one}"), Some(&alice), None);
    assert_eq!(shown["redaction"], "strict");

    // A member cannot touch another's token; it is not even visible.
    let body = json!({"action": "revoke", "ids": [one]});
    let (_, reply) = server.call("POST", "/api/v1/tokens/bulk", Some(&bob), Some(&body));
    assert_eq!(reply["updated"], json!([]), "{reply}");
    assert_eq!(reply["failed"][0]["error"]["code"], "not_found");
    let body = json!({"action": "revoke", "ids": [one, id_of(&bob)]});
    // The owner may revoke every token of the crew.
    let (_, reply) = server.call("POST", "/api/v1/tokens/bulk", Some(&alice), Some(&body));
    assert_eq!(reply["updated"], json!([one, id_of(&bob)]), "{reply}");
    assert_eq!(
        server.call("GET", "/api/v1/me", Some(&bob), None).0,
        401,
        "bulk revocation takes effect at once"
    );

    for (bad, field) in [
        (json!({"action": "explode", "ids": [1]}), "action"),
        (json!({"action": "revoke", "ids": []}), "ids"),
        (json!({"action": "revoke", "ids": "1,2"}), "ids"),
        (json!({"action": "revoke", "ids": ["1"]}), "ids"),
        (
            json!({"action": "revoke", "ids": (1..=1001).collect::<Vec<_>>()}),
            "ids",
        ),
        (json!({"action": "set_redaction", "ids": [1]}), "redaction"),
        (
            json!({"action": "set_redaction", "ids": [1], "redaction": "loud"}),
            "redaction",
        ),
        (json!({"ids": [1]}), "action"),
        (
            json!({"action": "revoke", "ids": [1], "force": true}),
            "force",
        ),
    ] {
        let (status, reply) = server.call("POST", "/api/v1/tokens/bulk", Some(&alice), Some(&bad));
        assert_eq!((status, code(&reply)), (400, "bad_request"), "{bad}");
        let message = reply["error"]["message"].as_str().unwrap();
        assert!(message.contains(&format!("`{field}`")), "{bad}: {message}");
    }
}

#[test]
fn scopes_narrow_what_a_token_may_do() {
    let (server, token) = home();
    let (_, other) = create(&server, &token, json!({"name": "other"}));
    let other_id = other["token"]["id"].as_i64().unwrap();
    let (_, read) = create(
        &server,
        &token,
        json!({"name": "reader", "scopes": ["tokens:read"]}),
    );
    let read = read["secret"].as_str().unwrap().to_string();

    // Reading is fine.
    assert_eq!(
        server.call("GET", "/api/v1/tokens", Some(&read), None).0,
        200
    );
    let path = format!("/api/v1/tokens/{other_id}");
    assert_eq!(server.call("GET", &path, Some(&read), None).0, 200);
    // Writing is not: no create, no revoke, no change — of others or of itself.
    let (status, reply) = create(
        &server,
        &read,
        json!({"name": "x", "scopes": ["tokens:read"]}),
    );
    assert_eq!((status, code(&reply)), (403, "forbidden"), "{reply}");
    let (status, reply) = server.call("DELETE", &path, Some(&read), None);
    assert_eq!((status, code(&reply)), (403, "forbidden"), "{reply}");
    let bulk = json!({"action": "revoke", "ids": [other_id]});
    let (_, reply) = server.call("POST", "/api/v1/tokens/bulk", Some(&read), Some(&bulk));
    assert_eq!(reply["failed"][0]["error"]["code"], "forbidden", "{reply}");
    let own = format!("/api/v1/tokens/{}", id_of(&read));
    let (status, reply) = server.call(
        "PATCH",
        &own,
        Some(&read),
        Some(&json!({"redaction": "standard", "server": "http://evil.example"})),
    );
    assert_eq!((status, code(&reply)), (403, "forbidden"), "{reply}");
    let (_, shown) = server.call("GET", &path, Some(&token), None);
    assert_eq!(shown["status"], "active");
    // Nor anything outside tokens.
    let (status, _) = server.call("GET", "/api/v1/audit", Some(&read), None);
    assert_eq!(status, 403);
    // Giving itself up is always allowed (berth logout --revoke).
    assert_eq!(server.call("DELETE", &own, Some(&read), None).0, 200);

    // A tokens:write token mints tokens, but none wider than itself.
    let (_, write) = create(
        &server,
        &token,
        json!({"name": "writer", "scopes": ["tokens:write"]}),
    );
    let write = write["secret"].as_str().unwrap().to_string();
    let (status, reply) = create(
        &server,
        &write,
        json!({"name": "w2", "scopes": ["tokens:write"]}),
    );
    assert_eq!(status, 201, "{reply}");
    let w2 = format!("/api/v1/tokens/{}", reply["token"]["id"]);
    for wider in [json!(["berth:*"]), json!(["crew:admin"]), json!(null)] {
        let (status, reply) = create(&server, &write, json!({"name": "w3", "scopes": wider}));
        assert_eq!(
            (status, code(&reply)),
            (403, "forbidden"),
            "{wider}: {reply}"
        );
    }
    // It revokes tokens no stronger than itself, never a berth:* one.
    assert_eq!(server.call("DELETE", &path, Some(&write), None).0, 403);
    assert_eq!(server.call("DELETE", &w2, Some(&write), None).0, 200);

    for bad in [json!([]), json!(["root"]), json!("berth:*"), json!([1])] {
        let (status, reply) = create(&server, &token, json!({"name": "s", "scopes": bad}));
        assert_eq!(status, 400, "{bad}: {reply}");
        assert!(reply["error"]["message"]
            .as_str()
            .unwrap()
            .contains("scopes"));
    }
}

#[test]
fn roles_decide_whose_tokens_a_token_can_see_and_revoke() {
    let server = Server::start();
    let roles = ["viewer", "member", "admin", "owner"];
    let tokens: Vec<String> = roles
        .iter()
        .map(|role| {
            server.create_user(role, "home", role);
            server.token_for(role, "home", "t")
        })
        .collect();
    let crew_wide = [false, false, true, true];
    for (i, role) in roles.iter().enumerate() {
        let mine = &tokens[i];
        // Everyone creates and revokes their own tokens.
        let (status, made) = create(&server, mine, json!({"name": "own"}));
        assert_eq!(status, 201, "{role}: {made}");
        let path = format!("/api/v1/tokens/{}", made["token"]["id"]);
        assert_eq!(
            server.call("DELETE", &path, Some(mine), None).0,
            200,
            "{role}"
        );
        // Only admins and owners see the crew's tokens.
        let (status, list) = server.call("GET", "/api/v1/tokens?all=1", Some(mine), None);
        if crew_wide[i] {
            assert_eq!(status, 200, "{role}");
            assert_eq!(ids(&list).len(), 4 + i + 1, "{role}: {list}");
        } else {
            assert_eq!(status, 403, "{role}");
        }
        // Others' tokens: visible and revocable to admin+, invisible below.
        let victim = &tokens[(i + 3) % 4];
        let path = format!("/api/v1/tokens/{}", id_of(victim));
        let (status, reply) = server.call("GET", &path, Some(mine), None);
        let expect = if crew_wide[i] { 200 } else { 404 };
        assert_eq!(
            status,
            expect,
            "{role} reads {}: {reply}",
            roles[(i + 3) % 4]
        );
    }
    // The admin revokes the owner's token; the member's token is still fine.
    let path = format!("/api/v1/tokens/{}", id_of(&tokens[3]));
    assert_eq!(server.call("DELETE", &path, Some(&tokens[2]), None).0, 200);
    assert_eq!(
        server.call("GET", "/api/v1/me", Some(&tokens[3]), None).0,
        401
    );
    assert_eq!(
        server.call("GET", "/api/v1/me", Some(&tokens[1]), None).0,
        200
    );
}

#[test]
fn a_token_whose_user_left_the_crew_has_no_team_context() {
    let server = Server::start();
    server.create_user("alice", "home", "owner");
    server.create_user("bob", "home", "member");
    let alice = server.token_for("alice", "home", "a");
    let bob = server.token_for("bob", "home", "b");
    let bob_id = server.user_id("bob");
    let crew = server.crew_id("home");
    let (status, _) = server.call(
        "DELETE",
        &format!("/api/v1/crews/{crew}/members/{bob_id}"),
        Some(&alice),
        None,
    );
    assert_eq!(status, 204);
    for (method, path) in [
        ("GET", "/api/v1/me"),
        ("GET", "/api/v1/tokens"),
        ("POST", "/api/v1/tokens"),
    ] {
        let body = json!({"name": "again"});
        let (status, reply) = server.call(
            method,
            path,
            Some(&bob),
            Some(&body).filter(|_| method == "POST"),
        );
        assert_eq!(status, 403, "{method} {path}");
        assert_eq!(
            reply,
            json!({"error": {"code": "no_team_context", "message": "No team context"}})
        );
    }
    // Bob still sees his own token with his password, and may revoke it.
    let (_, list) = server.call_basic("GET", "/api/v1/tokens", "bob", PASSWORD, None);
    assert_eq!(ids(&list), [id_of(&bob)]);
    let (status, _) = server.call_basic(
        "DELETE",
        &format!("/api/v1/tokens/{}", id_of(&bob)),
        "bob",
        PASSWORD,
        None,
    );
    assert_eq!(status, 200);
}

#[test]
fn basic_auth_is_taken_by_the_token_endpoints_only() {
    let (server, _) = home();
    let (status, reply) = server.call_basic(
        "POST",
        "/api/v1/tokens",
        "alice",
        PASSWORD,
        Some(&json!({"name": "by password"})),
    );
    assert_eq!(status, 201, "{reply}");
    let id = reply["token"]["id"].as_i64().unwrap();
    for (method, path) in [
        ("GET", "/api/v1/tokens"),
        ("GET", &format!("/api/v1/tokens/{id}") as &str),
    ] {
        assert_eq!(
            server.call_basic(method, path, "alice", PASSWORD, None).0,
            200
        );
    }
    for path in ["/api/v1/me", "/api/v1/crews", "/api/v1/audit"] {
        let (status, reply) = server.call_basic("GET", path, "alice", PASSWORD, None);
        assert_eq!(
            (status, code(&reply)),
            (400, "bad_request"),
            "{path}: {reply}"
        );
        assert!(reply["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Bearer"));
    }
    let (status, reply) =
        server.call_basic("GET", "/api/v1/tokens", "alice", "wrong password", None);
    assert_eq!((status, code(&reply)), (401, "bad_credentials"));
    let (status, reply) = server.call_basic("GET", "/api/v1/tokens", "nobody", PASSWORD, None);
    assert_eq!((status, code(&reply)), (401, "bad_credentials"));
    for garbage in [
        "Basic !!!",
        "Basic YWxpY2U=",
        "Basic",
        "Digest abc",
        "Bearer",
    ] {
        let reply = server.send("GET", "/api/v1/tokens", &[("Authorization", garbage)], "");
        assert!(
            matches!(reply.status, 400 | 401),
            "{garbage}: {} {}",
            reply.status,
            reply.text
        );
    }
}

#[test]
fn wrong_passwords_are_throttled_with_retry_after() {
    let (server, _) = home();
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(
            server
                .call_basic("GET", "/api/v1/tokens", "alice", "wrong password", None)
                .0,
        );
    }
    assert_eq!(statuses, [401, 401, 401, 401, 401, 429]);
    let basic = {
        use base64ct::{Base64, Encoding};
        format!(
            "Basic {}",
            Base64::encode_string(format!("alice:{PASSWORD}").as_bytes())
        )
    };
    // Blocked now even with the right password, and told when to come back.
    let reply = server.send("GET", "/api/v1/tokens", &[("Authorization", &basic)], "");
    assert_eq!((reply.status, reply.code().as_str()), (429, "rate_limited"));
    let wait: u64 = reply.header("Retry-After").unwrap().parse().unwrap();
    assert!(wait > 0 && wait <= 15 * 60, "{wait}");
    // Sign-in shares the throttle.
    let body = json!({"username": "alice", "password": PASSWORD}).to_string();
    assert_eq!(
        server
            .send(
                "POST",
                "/api/v1/session",
                &[("Content-Type", "application/json")],
                &body
            )
            .status,
        429
    );
    // Tokens are not throttled.
    let token_reply = server.send("GET", "/api/v1/tokens", &[], "");
    assert_eq!(token_reply.status, 401);
}

#[test]
fn passwords_over_1024_bytes_are_refused() {
    let (server, _) = home();
    let long = "x".repeat(1025);
    let (status, reply) = server.call_basic("GET", "/api/v1/tokens", "alice", &long, None);
    assert_eq!((status, code(&reply)), (401, "bad_credentials"), "{reply}");
    let body = json!({"username": "alice", "password": long}).to_string();
    let reply = server.send(
        "POST",
        "/api/v1/session",
        &[("Content-Type", "application/json")],
        &body,
    );
    assert_eq!(reply.status, 400, "{}", reply.text);
    assert!(reply.text.contains("password"));
}

#[test]
fn last_use_is_recorded_with_the_address_the_front_door_saw() {
    let (server, token) = home();
    let id = id_of(&token);
    let reply = server.send(
        "GET",
        "/api/v1/me",
        &[
            ("Authorization", &format!("Bearer {token}")),
            ("X-Forwarded-For", "6.6.6.6"),
            ("X-Forwarded-For", "7.7.7.7"),
            ("X-Real-IP", "8.8.8.8"),
            ("Forwarded", "for=9.9.9.9"),
        ],
        "",
    );
    assert_eq!(reply.status, 200);
    let (_, shown) = server.call("GET", &format!("/api/v1/tokens/{id}"), Some(&token), None);
    assert_eq!(shown["last_used_ip"], "127.0.0.1", "{shown}");
    assert_eq!(shown["recent_ips"], json!(["127.0.0.1"]), "{shown}");
    assert!(shown["last_used_at"].as_str().unwrap().ends_with('Z'));
    // The audit log records the real address as well.
    let reply = server.send(
        "POST",
        "/api/v1/tokens",
        &[
            ("Authorization", &format!("Bearer {token}")),
            ("X-Forwarded-For", "6.6.6.6"),
        ],
        &json!({"name": "audited"}).to_string(),
    );
    assert_eq!(reply.status, 201);
    let (_, audit) = server.call("GET", "/api/v1/audit", Some(&token), None);
    let event = &audit["events"][0];
    assert_eq!(event["action"], "token.create");
    assert_eq!(event["address"], "127.0.0.1");
    assert!(!audit.to_string().contains("6.6.6.6"));
}

/// `curl` from a given loopback source address; returns the status.
fn curl_from(source: &str, url: &str, token: &str) -> u16 {
    let out = std::process::Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--interface",
            source,
        ])
        .args(["-H", &format!("Authorization: Bearer {token}"), url])
        .output()
        .expect("curl runs");
    String::from_utf8_lossy(&out.stdout).parse().unwrap_or(0)
}

#[test]
fn the_last_five_distinct_addresses_survive_a_clean_shutdown() {
    let (mut server, token) = home();
    let url = format!("{}/api/v1/me", server.url);
    for n in 2..=8 {
        assert_eq!(curl_from(&format!("127.0.0.{n}"), &url, &token), 200);
    }
    // Again from an address already seen: it moves to the front, not twice.
    assert_eq!(curl_from("127.0.0.5", &url, &token), 200);
    let (_, shown) = server.call(
        "GET",
        &format!("/api/v1/tokens/{}", id_of(&token)),
        Some(&token),
        None,
    );
    // The call just made came from 127.0.0.1 and is the latest.
    assert_eq!(shown["last_used_ip"], "127.0.0.1");
    assert_eq!(server.terminate(), Some(0));
    let server = Server::start_in(&server.data.clone(), &[]);
    let row: (String, String) = server
        .db()
        .query_row(
            "SELECT last_used_ip, recent_ips FROM tokens WHERE id = ?1",
            [id_of(&token)],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(row.0, "127.0.0.1");
    let recent: Vec<String> = serde_json::from_str(&row.1).unwrap();
    assert_eq!(
        recent,
        [
            "127.0.0.1",
            "127.0.0.5",
            "127.0.0.8",
            "127.0.0.7",
            "127.0.0.6"
        ]
    );
}

#[test]
fn malformed_tokens_are_invalid_and_never_an_error_page() {
    let (server, token) = home();
    let (id, secret) = token.split_once('|').unwrap();
    let mut flipped = secret.as_bytes().to_vec();
    let at = flipped.len() - 10;
    flipped[at] = if flipped[at] == b'a' { b'b' } else { b'a' };
    let flipped = String::from_utf8(flipped).unwrap();
    let cases = [
        format!("abc|{secret}"),
        format!("-{id}|{secret}"),
        format!("{id}|"),
        format!("{id}|berth_"),
        id.to_string(),
        format!("{id}|{flipped}"),
        format!("{id}|{}", &secret[..secret.len() - 1]),
        format!("{id}|{secret}x"),
        format!("99999999999999999999999|{secret}"),
        format!("424242|{secret}"),
        format!("{id}|{}", secret.replace("berth_", "ghp_")),
        "x".repeat(20_000),
    ];
    for case in &cases {
        let reply = server.send(
            "GET",
            "/api/v1/me",
            &[("Authorization", &format!("Bearer {case}"))],
            "",
        );
        assert_eq!(reply.status, 401, "{case:.60}: {}", reply.text);
        assert_eq!(
            reply.json(),
            json!({"error": {"code": "invalid_token", "message": "Invalid token"}}),
            "{case:.60}"
        );
    }
    let reply = server.send("GET", "/api/v1/me", &[], "");
    assert_eq!((reply.status, reply.code().as_str()), (401, "no_token"));
    // Bytes beyond ASCII never reach the API: the front door answers 400 for any header.
    let reply = server.send(
        "GET",
        "/api/v1/me",
        &[(
            "Authorization",
            &format!("Bearer {id}|berth_{}", "é".repeat(20)),
        )],
        "",
    );
    assert_eq!((reply.status, reply.code().as_str()), (400, "bad_request"));
}

#[test]
fn bad_bodies_get_400_naming_the_field() {
    let (server, token) = home();
    let auth = format!("Bearer {token}");
    let send = |body: &str| {
        server.send(
            "POST",
            "/api/v1/tokens",
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/json"),
            ],
            body,
        )
    };
    for (body, mention) in [
        ("{", "JSON"),
        ("{\"name\": \"x\",}", "JSON"),
        ("[1,2]", "object"),
        ("\"name\"", "object"),
        ("\u{0}", "JSON"),
        ("{\"name\": 5}", "`name`"),
        ("{\"name\": \"\"}", "`name`"),
        ("{\"name\": \"   \"}", "`name`"),
        ("{\"name\": \"a\\u0000b\"}", "`name`"),
        ("{}", "`name`"),
        ("{\"name\": \"x\", \"redaction\": \"loud\"}", "`redaction`"),
        ("{\"name\": \"x\", \"redaction\": 1}", "`redaction`"),
        ("{\"name\": \"x\", \"region\": \"EU WEST\"}", "`region`"),
        ("{\"name\": \"x\", \"server\": \"ftp://x\"}", "`server`"),
        ("{\"name\": \"x\", \"server\": []}", "`server`"),
        ("{\"name\": \"x\", \"crew\": true}", "`crew`"),
        ("{\"name\": \"x\", \"secret\": \"mine\"}", "`secret`"),
        ("{\"name\": \"x\", \"user_id\": 2}", "`user_id`"),
    ] {
        let reply = send(body);
        assert_eq!(reply.status, 400, "{body:?}: {}", reply.text);
        assert_eq!(reply.code(), "bad_request");
        let message = reply.json()["error"]["message"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(message.contains(mention), "{body:?}: {message}");
    }
    let long = json!({"name": "n".repeat(101)}).to_string();
    assert_eq!(send(&long).status, 400);
    let reply = send(&json!({"name": "x", "crew": "nowhere"}).to_string());
    assert_eq!(
        reply.status, 403,
        "a token names only its own crew: {}",
        reply.text
    );
    // An empty body on a mutation means no fields.
    let reply = send("");
    assert!(reply.text.contains("`name`"), "{}", reply.text);
}

#[test]
fn ids_in_paths_must_be_positive_whole_numbers() {
    let (server, token) = home();
    for id in [
        "abc",
        "-1",
        "0",
        "1.5",
        "99999999999999999999999",
        "%00",
        "1%20",
        "+1",
        "0x1",
    ] {
        let (status, reply) =
            server.call("GET", &format!("/api/v1/tokens/{id}"), Some(&token), None);
        assert_eq!(
            (status, code(&reply)),
            (400, "bad_request"),
            "{id}: {reply}"
        );
        let (status, _) = server.call(
            "DELETE",
            &format!("/api/v1/crews/{id}/members/1"),
            Some(&token),
            None,
        );
        assert_eq!(status, 400, "{id}");
    }
    let (status, _) = server.call(
        "GET",
        "/api/v1/tokens/9223372036854775807",
        Some(&token),
        None,
    );
    assert_eq!(status, 404);
}

#[test]
fn wrong_methods_get_405_and_unknown_paths_404() {
    let (server, token) = home();
    for (method, path) in [
        ("PUT", "/api/v1/tokens"),
        ("DELETE", "/api/v1/tokens"),
        ("PATCH", "/api/v1/tokens"),
        ("GET", "/api/v1/tokens/bulk"),
        ("DELETE", "/api/v1/tokens/bulk"),
        ("POST", "/api/v1/tokens/1"),
        ("PUT", "/api/v1/me"),
        ("GET", "/api/v1/session"),
        ("GET", "/api/v1/setup"),
        ("POST", "/api/v1/crews"),
        ("PUT", "/api/v1/crews/1/members/1"),
        ("POST", "/healthz"),
        ("BREW", "/api/v1/tokens"),
    ] {
        let (status, reply) = server.call(method, path, Some(&token), None);
        assert_eq!(
            (status, code(&reply)),
            (405, "method_not_allowed"),
            "{method} {path}"
        );
    }
    for path in [
        "/api/v1/nope",
        "/api/v2/tokens",
        "/api/v1/tokens/1/extra",
        "/api",
        "/nope",
        "/api/v1/crews/1/owners",
    ] {
        let (status, reply) = server.call("GET", path, Some(&token), None);
        assert_eq!(
            (status, code(&reply)),
            (404, "not_found"),
            "{path}: {reply}"
        );
    }
}

#[test]
fn many_clients_create_and_verify_tokens_at_once() {
    let (server, token) = home();
    let threads: Vec<_> = (0..12)
        .map(|t| {
            let addr = server.addr.clone();
            let auth = format!("Bearer {token}");
            std::thread::spawn(move || {
                let mut made = Vec::new();
                for i in 0..8 {
                    let body = json!({"name": format!("t{t}-{i}")});
                    let (status, reply) =
                        request_at(&addr, "POST", "/api/v1/tokens", Some(&auth), Some(&body));
                    assert_eq!(status, 201, "{reply}");
                    let secret = reply["secret"].as_str().unwrap().to_string();
                    let bearer = format!("Bearer {secret}");
                    let (status, me) = request_at(&addr, "GET", "/api/v1/me", Some(&bearer), None);
                    assert_eq!(status, 200, "{me}");
                    assert_eq!(me["token"]["name"], format!("t{t}-{i}"));
                    made.push(secret);
                }
                made
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in threads {
        all.extend(t.join().expect("no thread failed"));
    }
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 96);
    let reply = server.send(
        "GET",
        "/api/v1/tokens",
        &[("Authorization", &format!("Bearer {token}"))],
        "",
    );
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(ids(&reply.json()).len(), 97);
}
