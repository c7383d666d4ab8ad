//! `/metrics` and `/api/v1/openapi.json` on the real server, read with curl after
//! real traffic: sign-ins, refused tokens, and requests through live tunnels.

mod common;
mod relay_support;

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Server, PASSWORD};
use relay_support::{Service, Share};
use serde_json::{json, Value};

impl Share {
    fn start(server: &Server, port: u16, token: &str) -> Share {
        let port = port.to_string();
        let args = [port.as_str(), "--host", "127.0.0.1"];
        Share::spawn(&server.url, token, &args, Stdio::null())
    }
}

/// curl: status, headers and body of one request to the server's address.
fn curl(server: &Server, host: Option<&str>, path: &str, args: &[&str]) -> (u16, String, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-S", "--max-time", "30", "-D", "-"]);
    if let Some(host) = host {
        cmd.arg("-H").arg(format!("Host: {host}"));
    }
    let out = cmd
        .args(args)
        .arg(format!("{}{path}", server.url))
        .output()
        .expect("run curl");
    assert!(out.status.success(), "curl failed: {out:?}");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, head.to_string(), body.to_string())
}

/// The value of the sample `name` (with its labels, as written) in Prometheus text.
fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no sample {name} in:\n{text}"))
}

fn metrics(server: &Server) -> String {
    let (status, head, body) = curl(server, None, "/metrics", &[]);
    assert_eq!(status, 200);
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    body
}

#[test]
fn metrics_count_real_traffic_without_auth() {
    let server = Server::start();
    server.create_user("alice", "home", "owner");
    let token = server.token_for("alice", "home", "share");
    let before = metrics(&server);
    assert_eq!(sample(&before, "berth_tunnels_live"), 0.0);

    // Refused tokens, by reason, and sign-ins both ways.
    for _ in 0..2 {
        let (status, _) = server.call("GET", "/api/v1/me", Some("7|berth_nope"), None);
        assert_eq!(status, 401);
    }
    let wrong = json!({"username": "alice", "password": "not the password"});
    assert_eq!(
        server.call("POST", "/api/v1/session", None, Some(&wrong)).0,
        401
    );
    let right = json!({"username": "alice", "password": PASSWORD});
    assert_eq!(
        server.call("POST", "/api/v1/session", None, Some(&right)).0,
        200
    );

    // Two tunnels: one to a live service (2xx), one to a closed port (502 from share).
    let service = Service::start();
    let live = Share::start(&server, service.port, &token);
    let closed_port = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let dead = Share::start(&server, closed_port, &token);
    let payload = "x".repeat(1000);
    let (status, _, body) = curl(
        &server,
        Some(live.authority()),
        "/echo",
        &["--data-binary", &payload],
    );
    assert_eq!((status, body.len()), (200, 1000));
    assert_eq!(curl(&server, Some(live.authority()), "/hello", &[]).0, 200);
    assert_eq!(curl(&server, Some(dead.authority()), "/", &[]).0, 502);

    // The relay counts a response just after its last byte leaves, so the
    // scrape may briefly run ahead of it: read until the three responses show.
    let class = |text: &str, c: &str| {
        sample(
            text,
            &format!("berth_tunnel_requests_total{{class=\"{c}\"}}"),
        )
    };
    let after = scrape_until(&server, |text| {
        class(text, "2xx") + class(text, "5xx")
            >= class(&before, "2xx") + class(&before, "5xx") + 3.0
    });
    let delta = |name: &str| sample(&after, name) - sample(&before, name);
    assert_eq!(sample(&after, "berth_tunnels_live"), 2.0);
    assert_eq!(delta("berth_tunnel_requests_total{class=\"2xx\"}"), 2.0);
    assert_eq!(delta("berth_tunnel_requests_total{class=\"5xx\"}"), 1.0);
    assert_eq!(delta("berth_tunnel_requests_total{class=\"4xx\"}"), 0.0);
    assert_eq!(delta("berth_tunnel_bytes_in_total"), 1000.0);
    assert!(delta("berth_tunnel_bytes_out_total") >= 1000.0);
    assert_eq!(
        delta("berth_token_auth_failures_total{reason=\"invalid_token\"}"),
        2.0
    );
    assert_eq!(delta("berth_sign_ins_total{result=\"failure\"}"), 1.0);
    assert_eq!(delta("berth_sign_ins_total{result=\"success\"}"), 1.0);
    // Every call above read the store; the histogram's +Inf bucket is its count.
    let reads = "berth_store_call_seconds_count{op=\"read\"}";
    assert!(delta(reads) > 0.0);
    assert_eq!(
        sample(
            &after,
            "berth_store_call_seconds_bucket{op=\"read\",le=\"+Inf\"}"
        ),
        sample(&after, reads)
    );
    // The two control connections and this scrape's own connection are open.
    assert!(sample(&after, "berth_frontdoor_open_connections") >= 3.0);
    assert!(sample(&after, "process_start_time_seconds") > 1.6e9);

    drop(dead);
    drop(live);
    scrape_until(&server, |text| sample(text, "berth_tunnels_live") == 0.0);
}

/// Scrape until `done` holds (within a generous deadline); the last scrape.
fn scrape_until(server: &Server, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = metrics(server);
        if done(&text) {
            return text;
        }
        assert!(Instant::now() < deadline, "metrics never settled:\n{text}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn metrics_take_only_get() {
    let server = Server::start();
    let (status, _, body) = curl(&server, None, "/metrics", &["-X", "POST"]);
    assert_eq!(status, 405);
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["error"]["code"], "method_not_allowed");
}

#[test]
fn the_openapi_document_is_served_without_auth_and_matches_the_file() {
    let server = Server::start();
    let (status, head, body) = curl(&server, None, "/api/v1/openapi.json", &[]);
    assert_eq!(status, 200);
    assert!(head
        .to_ascii_lowercase()
        .contains("content-type: application/json"));
    let served: Value = serde_json::from_str(&body).unwrap();
    let file: Value =
        serde_json::from_str(include_str!("../docs/openapi.json")).expect("docs/openapi.json");
    assert_eq!(served, file);
    assert!(served["paths"]["/api/v1/tokens"]["post"].is_object());
}
