//! What login, whoami, tokens and crews send and print, against a fake API with canned answers.

#[path = "common/cli.rs"]
mod cli;

use cli::{error_reply, reply, valid_token, FakeApi, Reply, Sandbox};
use serde_json::{json, Value};

fn token_object(id: i64, name: &str) -> Value {
    json!({
        "id": id, "name": name, "crew": {"id": 1, "name": "home"},
        "user": {"id": 1, "username": "alice"}, "scopes": ["berth:*"],
        "redaction": "inherit", "effective_redaction": "standard",
        "region": null, "server": null, "created_at": "2001-01-01T00:00:00Z",
        "last_used_at": null, "last_used_ip": null, "expires_at": null,
        "revoked_at": null, "status": "active"
    })
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown-host".to_string())
}

#[test]
fn login_retries_taken_names_and_saves_the_token() {
    let sb = Sandbox::new();
    let secret = valid_token(3, 'a');
    let name2 = format!("{} - CLI (2)", hostname());
    let api = FakeApi::start(vec![
        error_reply(409, "conflict", "A token with that name exists"),
        reply(
            201,
            json!({"token": token_object(3, &name2), "secret": secret}),
        ),
    ]);
    let run = sb.run_with_stdin(
        &[
            "login",
            "--server",
            &api.url,
            "--username",
            "alice",
            "--password-stdin",
            "--crew",
            "home",
        ],
        &[],
        Some("s3cret\n"),
    );
    assert_eq!(run.code, 0, "{run:?}");
    let path = sb.config_path().display().to_string();
    assert_eq!(
        run.stdout.trim(),
        format!("Logged in as alice (crew home). Token 3 \"{name2}\" saved to {path}")
    );
    let requests = api.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].method, "POST");
    assert_eq!(requests[0].target, "/api/v1/tokens");
    // alice:s3cret
    assert_eq!(
        requests[0].headers["authorization"],
        "Basic YWxpY2U6czNjcmV0"
    );
    assert_eq!(
        requests[0].json(),
        json!({"name": format!("{} - CLI", hostname()), "crew": "home"})
    );
    assert_eq!(requests[1].json()["name"], name2);

    let saved: Value = serde_json::from_str(&sb.config_text()).unwrap();
    assert_eq!(
        saved,
        json!({"server": api.url, "token": secret, "username": "alice", "apiTokenName": name2})
    );
}

#[test]
fn login_with_a_wrong_password_exits_3() {
    let sb = Sandbox::new();
    let api = FakeApi::start(vec![error_reply(401, "bad_credentials", "Bad credentials")]);
    let run = sb.run_with_stdin(
        &[
            "login",
            "--server",
            &api.url,
            "--username",
            "alice",
            "--password-stdin",
        ],
        &[],
        Some("wrong\n"),
    );
    assert_eq!(run.code, 3, "{run:?}");
    assert!(run.stderr.contains("Wrong username or password"), "{run:?}");
    assert!(!sb.config_path().exists());
}

#[test]
fn rate_limited_login_says_when_to_retry() {
    let sb = Sandbox::new();
    let api = FakeApi::start(vec![Reply {
        headers: vec![("Retry-After".into(), "30".into())],
        ..error_reply(429, "rate_limited", "Too many attempts")
    }]);
    let run = sb.run_with_stdin(
        &[
            "login",
            "--server",
            &api.url,
            "--username",
            "alice",
            "--password-stdin",
        ],
        &[],
        Some("pw\n"),
    );
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(
        run.stderr.trim(),
        "error: Too many failed attempts; try again in 30 seconds"
    );
}

#[test]
fn whoami_sends_the_bearer_token_and_prints_the_identity() {
    let sb = Sandbox::new();
    let token = valid_token(3, 'b');
    let me = json!({
        "user": {"id": 1, "username": "alice"},
        "crew": {"id": 1, "name": "home", "default_redaction": "standard"},
        "role": "owner", "token": token_object(3, "laptop - CLI")
    });
    let api = FakeApi::start(vec![reply(200, me.clone()), reply(200, me.clone())]);
    let run = sb.run(
        &["whoami", "--server", &api.url],
        &[("BERTH_TOKEN", token.as_str())],
    );
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(
        run.stdout,
        format!("User:    alice\nCrew:    home\nRole:    owner\nToken:   3 \"laptop - CLI\"\nServer:  {}\n", api.url)
    );
    let json_run = sb.run(
        &["whoami", "--json", "--server", &api.url],
        &[("BERTH_TOKEN", token.as_str())],
    );
    assert_eq!(serde_json::from_str::<Value>(&json_run.stdout).unwrap(), me);
    let requests = api.requests();
    assert_eq!(requests[0].target, "/api/v1/me");
    assert_eq!(
        requests[0].headers["authorization"],
        format!("Bearer {token}")
    );
}

#[test]
fn api_errors_map_to_exit_codes_and_sentences() {
    let sb = Sandbox::new();
    let token = valid_token(3, 'c');
    let cases = [
        (
            error_reply(401, "invalid_token", "Invalid token"),
            3,
            "Invalid token: it may be revoked or expired; run `berth login` for a new one",
        ),
        (
            error_reply(403, "no_team_context", "No team context"),
            4,
            "No team context",
        ),
        (
            error_reply(404, "not_found", "Crew not found"),
            5,
            "Crew not found",
        ),
        (
            error_reply(500, "internal", "Database is locked"),
            1,
            "Database is locked",
        ),
    ];
    for (answer, code, sentence) in cases {
        let api = FakeApi::start(vec![answer]);
        let run = sb.run(&["whoami", "--server", &api.url, "--token", &token], &[]);
        assert_eq!(run.code, code, "{run:?}");
        assert!(
            run.stderr.starts_with(&format!("error: {sentence}")),
            "{run:?}"
        );
        assert_eq!(run.stderr.lines().count(), 1, "{run:?}");
    }
}

#[test]
fn tokens_list_prints_the_table_or_json() {
    let sb = Sandbox::new();
    let token = valid_token(3, 'd');
    let tokens = json!({"tokens": [token_object(3, "laptop - CLI")]});
    let api = FakeApi::start(vec![reply(200, tokens.clone()), reply(200, tokens.clone())]);
    let auth = [
        ("BERTH_TOKEN", token.as_str()),
        ("BERTH_SERVER", api.url.as_str()),
    ];
    let run = sb.run(&["tokens", "list", "--crew", "home", "--all"], &auth);
    assert_eq!(run.code, 0, "{run:?}");
    let mut lines = run.stdout.lines();
    let header = lines.next().unwrap();
    let columns: Vec<&str> = header
        .split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    assert_eq!(
        columns,
        [
            "ID",
            "NAME",
            "CREW",
            "CREATED",
            "LAST USED",
            "REDACTION",
            "REGION",
            "SERVER",
            "STATUS"
        ]
    );
    let row = lines.next().unwrap();
    assert!(row.starts_with("3   laptop - CLI  home  "), "{row}");
    assert!(
        row.contains("days ago") && row.contains("never") && row.ends_with("active"),
        "{row}"
    );
    let json_run = sb.run(&["tokens", "list", "--json"], &auth);
    assert_eq!(
        serde_json::from_str::<Value>(&json_run.stdout).unwrap(),
        tokens["tokens"]
    );
    let requests = api.requests();
    assert_eq!(requests[0].target, "/api/v1/tokens?crew=home&all=1");
    assert_eq!(requests[1].target, "/api/v1/tokens");
}

#[test]
fn tokens_list_for_a_user_signs_in_with_the_password() {
    let sb = Sandbox::new();
    let api = FakeApi::start(vec![reply(200, json!({"tokens": []}))]);
    let run = sb.run_with_stdin(
        &[
            "tokens",
            "list",
            "bob",
            "--password-stdin",
            "--server",
            &api.url,
        ],
        &[],
        Some("pw\n"),
    );
    assert_eq!(run.code, 0, "{run:?}");
    // bob:pw
    assert_eq!(api.requests()[0].headers["authorization"], "Basic Ym9iOnB3");
}

#[test]
fn tokens_create_prints_the_secret_once() {
    let sb = Sandbox::new();
    let token = valid_token(3, 'e');
    let secret = valid_token(17, 'f');
    let api = FakeApi::start(vec![reply(
        201,
        json!({"token": token_object(17, "CI - deploy"), "secret": secret}),
    )]);
    let run = sb.run(
        &[
            "tokens",
            "create",
            "CI - deploy",
            "--crew",
            "2",
            "--redaction",
            "strict",
            "--region",
            "eu",
            "--cli-server",
            "https://b.example",
            "--expires-in-days",
            "90",
            "--scope",
            "tunnels:share",
            "--scope",
            "tokens:read",
            "--server",
            &api.url,
            "--token",
            &token,
        ],
        &[],
    );
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.stdout, format!("{secret}\n"));
    assert!(run.stderr.contains("will not be shown again"), "{run:?}");
    assert_eq!(
        api.requests()[0].json(),
        json!({
            "name": "CI - deploy", "crew": 2, "redaction": "strict", "region": "eu",
            "server": "https://b.example", "expires_in_days": 90,
            "scopes": ["tunnels:share", "tokens:read"]
        })
    );
}

#[test]
fn tokens_create_leaves_out_what_was_not_given() {
    let sb = Sandbox::new();
    let token = valid_token(3, 'g');
    let api = FakeApi::start(vec![reply(
        201,
        json!({"token": token_object(18, "x"), "secret": valid_token(18, 'h')}),
    )]);
    let run = sb.run(
        &[
            "tokens", "create", "x", "--server", &api.url, "--token", &token,
        ],
        &[],
    );
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(api.requests()[0].json(), json!({"name": "x"}));
}

#[test]
fn revoke_resolves_names_and_reports_each_token() {
    let sb = Sandbox::new();
    let token = valid_token(3, 'i');
    let mut revoked_twin = token_object(9, "old laptop - CLI");
    revoked_twin["status"] = json!("revoked");
    let api = FakeApi::start(vec![
        reply(
            200,
            json!({"tokens": [token_object(5, "old laptop - CLI"), revoked_twin, token_object(6, "ci")]}),
        ),
        reply(
            200,
            json!({"updated": [5], "failed": [{"id": 42, "error": {"code": "not_found", "message": "Token 42 not found"}}]}),
        ),
    ]);
    let run = sb.run(
        &[
            "tokens",
            "revoke",
            "old laptop - CLI",
            "42",
            "no such name",
            "--server",
            &api.url,
            "--token",
            &token,
        ],
        &[],
    );
    assert_eq!(run.code, 5, "{run:?}");
    assert_eq!(run.stdout, "Revoked token 5 \"old laptop - CLI\"\n");
    assert!(run.stderr.contains("\"no such name\""), "{run:?}");
    assert!(run.stderr.contains("token 42"), "{run:?}");
    let requests = api.requests();
    assert_eq!(requests[0].target, "/api/v1/tokens");
    assert_eq!(
        (requests[1].method.as_str(), requests[1].target.as_str()),
        ("POST", "/api/v1/tokens/bulk")
    );
    assert_eq!(
        requests[1].json(),
        json!({"action": "revoke", "ids": [5, 42]})
    );
}

#[test]
fn revoke_by_id_alone_needs_no_lookup() {
    let sb = Sandbox::new();
    let token = valid_token(3, 'j');
    let api = FakeApi::start(vec![reply(200, json!({"updated": [7, 8], "failed": []}))]);
    let run = sb.run(
        &[
            "tokens", "revoke", "7", "8", "7", "--server", &api.url, "--token", &token,
        ],
        &[],
    );
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.stdout, "Revoked token 7\nRevoked token 8\n");
    assert_eq!(
        api.requests()[0].json(),
        json!({"action": "revoke", "ids": [7, 8]})
    );
}

#[test]
fn destroy_with_a_username_uses_the_password_for_both_calls() {
    let sb = Sandbox::new();
    let api = FakeApi::start(vec![
        reply(200, json!({"tokens": [token_object(5, "laptop - CLI")]})),
        reply(200, json!({"updated": [5], "failed": []})),
    ]);
    let run = sb.run_with_stdin(
        &[
            "tokens",
            "destroy",
            "alice",
            "laptop - CLI",
            "--password-stdin",
            "--server",
            &api.url,
        ],
        &[],
        Some("pw\n"),
    );
    assert_eq!(run.code, 0, "{run:?}");
    for request in api.requests() {
        assert_eq!(request.headers["authorization"], "Basic YWxpY2U6cHc=");
    }
}

#[test]
fn set_redaction_sends_the_tier() {
    let sb = Sandbox::new();
    let token = valid_token(3, 'k');
    let api = FakeApi::start(vec![reply(200, json!({"updated": [4], "failed": []}))]);
    let run = sb.run(
        &[
            "tokens",
            "set-redaction",
            "strict",
            "4",
            "--server",
            &api.url,
            "--token",
            &token,
        ],
        &[],
    );
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.stdout, "Set redaction of token 4 to strict\n");
    assert_eq!(
        api.requests()[0].json(),
        json!({"action": "set_redaction", "ids": [4], "redaction": "strict"})
    );
}

#[test]
fn logout_revoke_deletes_the_token_then_forgets_it() {
    let sb = Sandbox::new();
    let token = valid_token(12, 'l');
    let api = FakeApi::start(vec![reply(200, token_object(12, "host - CLI"))]);
    for (key, value) in [
        ("token", token.as_str()),
        ("username", "alice"),
        ("apiTokenName", "host - CLI"),
        ("server", api.url.as_str()),
    ] {
        assert_eq!(sb.run(&["config", "set", key, value], &[]).code, 0);
    }
    let run = sb.run(&["logout", "--revoke"], &[]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("revoked it on the server"), "{run:?}");
    let requests = api.requests();
    assert_eq!(
        (requests[0].method.as_str(), requests[0].target.as_str()),
        ("DELETE", "/api/v1/tokens/12")
    );
    assert_eq!(
        requests[0].headers["authorization"],
        format!("Bearer {token}")
    );
    let saved: Value = serde_json::from_str(&sb.config_text()).unwrap();
    assert_eq!(saved, json!({"server": api.url}));
}

#[test]
fn crews_resolve_names_and_usernames() {
    let sb = Sandbox::new();
    let token = valid_token(3, 'm');
    let crews = json!({"crews": [{"id": 4, "name": "home", "default_redaction": "standard", "role": "owner"}]});
    let members = json!({"members": [
        {"user": {"id": 1, "username": "alice"}, "role": "owner", "joined_at": "2001-01-01T00:00:00Z"},
        {"user": {"id": 8, "username": "bob"}, "role": "member", "joined_at": "2001-01-01T00:00:00Z"}
    ]});
    let api = FakeApi::start(vec![
        reply(200, crews.clone()),
        reply(200, members.clone()),
        reply(200, crews.clone()),
        reply(200, members.clone()),
        reply(
            200,
            json!({"user": {"id": 8, "username": "bob"}, "role": "admin", "joined_at": null}),
        ),
        reply(200, crews.clone()),
        reply(200, members.clone()),
        reply(204, Value::Null),
    ]);
    let auth = [
        ("BERTH_TOKEN", token.as_str()),
        ("BERTH_SERVER", api.url.as_str()),
    ];
    let run = sb.run(&["crews", "members", "home"], &auth);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout
            .starts_with("ID  USERNAME  ROLE    JOINED\n1   alice     owner   "),
        "{run:?}"
    );
    let run = sb.run(&["crews", "set-role", "home", "bob", "admin"], &auth);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.stdout, "bob is now admin in crew home\n");
    let run = sb.run(&["crews", "remove-member", "4", "bob"], &auth);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.stdout, "Removed bob from crew home\n");
    let seen: Vec<(String, String)> = api
        .requests()
        .into_iter()
        .map(|r| (r.method, r.target))
        .collect();
    let want = [
        ("GET", "/api/v1/crews"),
        ("GET", "/api/v1/crews/4/members"),
        ("GET", "/api/v1/crews"),
        ("GET", "/api/v1/crews/4/members"),
        ("PATCH", "/api/v1/crews/4/members/8"),
        ("GET", "/api/v1/crews"),
        ("GET", "/api/v1/crews/4/members"),
        ("DELETE", "/api/v1/crews/4/members/8"),
    ];
    let want: Vec<(String, String)> = want
        .iter()
        .map(|(m, t)| (m.to_string(), t.to_string()))
        .collect();
    assert_eq!(seen, want);
}
