//! The server starts on port 0, prints its setup line, answers health checks,
//! and keeps a token it returned through kill -9.

mod common;

use common::Server;
use serde_json::json;

#[test]
fn first_run_prints_a_setup_url_and_the_admin_command() {
    let server = Server::start();
    let code = server.setup_code.clone().expect("setup line on first run");
    assert_eq!(code.len(), 32);
    let (status, _, body) = server.raw(&format!(
        "GET /healthz HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        server.addr
    ));
    assert_eq!((status, body.as_str()), (200, "ok\n"));
}

#[test]
fn setup_creates_the_first_owner_once() {
    let server = Server::start();
    let code = server.setup_code.clone().unwrap();
    let body =
        json!({"code": "wrong", "username": "alice", "password": common::PASSWORD, "crew": "home"});
    assert_eq!(
        server.call("POST", "/api/v1/setup", None, Some(&body)).0,
        403
    );
    let body =
        json!({"code": code, "username": "alice", "password": common::PASSWORD, "crew": "home"});
    let (status, reply) = server.call("POST", "/api/v1/setup", None, Some(&body));
    assert_eq!(status, 201, "{reply}");
    assert_eq!(reply["crew"]["name"], "home");
    let (status, reply) = server.call("POST", "/api/v1/setup", None, Some(&body));
    assert_eq!(
        (status, reply["error"]["code"].as_str()),
        (409, Some("conflict"))
    );
    // The owner can now mint tokens with the password.
    let token = server.token_for("alice", "home", "laptop");
    let (status, me) = server.call("GET", "/api/v1/me", Some(&token), None);
    assert_eq!(status, 200);
    assert_eq!(
        (me["user"]["username"].as_str(), me["role"].as_str()),
        (Some("alice"), Some("owner"))
    );
}

#[test]
fn a_token_returned_by_the_api_survives_kill_9() {
    let mut server = Server::start();
    server.create_user("alice", "home", "owner");
    let token = server.token_for("alice", "home", "survivor");
    server.kill9();
    let server = Server::start_in(&server.data.clone(), &[]);
    assert!(
        server.setup_code.is_none(),
        "no setup line once users exist"
    );
    let (status, me) = server.call("GET", "/api/v1/me", Some(&token), None);
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["token"]["name"], "survivor");
}

#[test]
fn the_printed_setup_url_serves_the_setup_page_under_a_strict_csp() {
    let server = Server::start();
    let code = server.setup_code.clone().unwrap();
    let get = |path: &str| {
        server.raw(&format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            server.addr
        ))
    };
    let (status, head, body) = get(&format!("/setup?code={code}"));
    assert_eq!(status, 200, "{head}");
    let lower = head.to_lowercase();
    assert!(lower.contains("content-type: text/html"), "{head}");
    assert!(
        lower.contains("content-security-policy: default-src 'none'; script-src 'self'"),
        "{head}"
    );
    assert!(body.contains("<form id=\"setup\""));
    // Every script and stylesheet the page names is served from here.
    for asset in ["/assets/setup.js", "/assets/berth.css"] {
        assert!(body.contains(asset), "page names {asset}");
        let (status, head, _) = get(asset);
        assert_eq!(status, 200, "{asset}: {head}");
    }
    assert_eq!(get("/assets/..%2FCargo.toml").0, 404);
    assert_eq!(get("/assets/nope.js").0, 404);
}
