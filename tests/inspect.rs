//! The traffic inspector end to end: the real server, `berth share` as a child
//! process, a local service that sets cookies, curl as the public client, and
//! the records read back through the API, `berth traffic` and the database files.

mod common;
mod inspect_support;
mod relay_support;

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{run_with_stdin, run_with_token, Output, Server, PASSWORD};
use inspect_support::service;
use relay_support::Share;
use serde_json::{json, Value};

/// Generous bound for records to reach the database (they are written by a
/// background thread); only a broken writer gets near it.
const RECORDED_WITHIN: Duration = Duration::from_secs(20);

impl Share {
    fn start(server: &Server, port: u16, token: &str, subdomain: &str) -> Share {
        let port = port.to_string();
        let args = [&port, "--host", "127.0.0.1", "--subdomain", subdomain];
        Share::spawn(&server.url, token, &args, Stdio::inherit())
    }
}

/// A server with owner `alice` in crew `home`; extra server flags.
fn setup(extra: &[&str]) -> (Server, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_in(&dir.path().join("data"), extra);
    server.create_user("alice", "home", "owner");
    (server, dir)
}

/// A token of alice's with a redaction tier.
fn token_with_tier(server: &Server, name: &str, tier: &str) -> String {
    let body = json!({"name": name, "crew": "home", "redaction": tier});
    let (status, answer) =
        server.call_basic("POST", "/api/v1/tokens", "alice", PASSWORD, Some(&body));
    assert_eq!(status, 201, "{answer}");
    answer["secret"].as_str().unwrap().to_string()
}

/// The id of the live tunnel at `host`.
fn tunnel_id(server: &Server, token: &str, host: &str) -> String {
    let (status, body) = server.call("GET", "/api/v1/tunnels?active=1", Some(token), None);
    assert_eq!(status, 200, "{body}");
    let subdomain = host.split('.').next().unwrap();
    body["tunnels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["subdomain"] == subdomain)
        .map(|t| t["id"].as_str().unwrap().to_string())
        .expect("the tunnel is listed")
}

/// One GET for `/path` through the tunnel at `host`, with extra headers; the body.
fn curl(server: &Server, host: &str, path: &str, headers: &[&str]) -> String {
    let mut command = Command::new("curl");
    command.args([
        "-s",
        "-S",
        "--max-time",
        "30",
        "-H",
        &format!("Host: {host}"),
    ]);
    for header in headers {
        command.args(["-H", header]);
    }
    let out = command
        .arg(format!("{}{path}", server.url))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The tunnel's records (newest first) once at least `n` are stored.
fn records(server: &Server, token: &str, tunnel: &str, n: usize) -> Vec<Value> {
    let path = format!("/api/v1/tunnels/{tunnel}/requests?limit=1000");
    let deadline = Instant::now() + RECORDED_WITHIN;
    loop {
        let (status, body) = server.call("GET", &path, Some(token), None);
        assert_eq!(status, 200, "{body}");
        let list = body["requests"].as_array().unwrap().clone();
        if list.len() >= n {
            return list;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {n} recorded",
            list.len()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A header's value in a record's `[[name, value], ...]` list (first match, any case).
fn header(list: &Value, name: &str) -> String {
    let values = headers(list, name);
    let first = values
        .first()
        .unwrap_or_else(|| panic!("no header {name} in {list}"));
    first.clone()
}

/// Every value of a header in a record's list.
fn headers(list: &Value, name: &str) -> Vec<String> {
    list.as_array()
        .unwrap()
        .iter()
        .filter(|pair| pair[0].as_str().unwrap().eq_ignore_ascii_case(name))
        .map(|pair| pair[1].as_str().unwrap().to_string())
        .collect()
}

/// Standard's header names, in mixed case, each with a value naming it (strict's
/// names that end in `-Token` are standard's already).
const STANDARD_HEADERS: [(&str, &str); 15] = [
    ("aUTHORIZATION", "Bearer std-authorization"),
    ("Proxy-Authorization", "Basic std-proxy-auth"),
    ("COOKIE", "sid=std-cookie"),
    ("Api-Key", "std-api-key"),
    ("x-api-key", "std-x-api-key"),
    ("X-Auth-Token", "std-x-auth-token"),
    ("x-ACCESS-token", "std-x-access-token"),
    ("X-Github-Token", "std-suffix-token"),
    ("Stripe-KEY", "std-suffix-key"),
    ("Client-Secret", "std-suffix-secret"),
    ("X-CSRF-Token", "std-csrf-suffix"),
    ("x-xsrf-token", "std-xsrf-suffix"),
    ("X-Amz-Security-Token", "std-amz-security"),
    ("X-CSRFToken", "std-contains-token"),
    ("X-Amz-Credential", "std-contains-credential"),
];

/// Names only strict redacts, with values naming them.
const STRICT_HEADERS: [(&str, &str); 4] = [
    ("Session-ID", "strict-session-id"),
    ("X-Session-ID", "strict-x-session-id"),
    ("My-Session-Thing", "strict-contains-session"),
    ("X-Request-Signature", "strict-contains-signature"),
];

/// Send every listed header through a tunnel, with a plain marker and a query.
fn send_sensitive(server: &Server, host: &str, prefix: &str) -> String {
    let mut lines: Vec<String> = Vec::new();
    for (name, value) in STANDARD_HEADERS.iter().chain(&STRICT_HEADERS) {
        lines.push(format!("{name}: {prefix}-{value}"));
    }
    lines.push(format!("X-Plain-Marker: {prefix}-visible-marker"));
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    let path = format!("/login?access_token={prefix}-query-token&page=2&Session={prefix}-query-session&code={prefix}-query-code");
    let body = curl(server, host, &path, &refs);
    assert_eq!(body, format!("served {path}"));
    path
}

#[test]
fn standard_redacts_its_exact_list_both_ways_and_keeps_the_rest() {
    let (server, _dir) = setup(&[]);
    let token = token_with_tier(&server, "std", "standard");
    let share = Share::start(&server, service(), &token, "std");
    let path = send_sensitive(&server, share.authority(), "s");
    let tunnel = tunnel_id(&server, &token, share.authority());
    let list = records(&server, &token, &tunnel, 1);
    let record = &list[0];
    assert_eq!(record["path"], path.as_str(), "standard keeps the query");
    assert_eq!(record["method"], "GET");
    assert_eq!(record["status"], 200);
    assert_eq!(record["tunnel_id"], tunnel.as_str());
    let sent = &record["request_headers"];
    for (name, _) in STANDARD_HEADERS {
        assert_eq!(header(sent, name), "[REDACTED]", "{name}");
    }
    for (name, value) in STRICT_HEADERS {
        assert_eq!(header(sent, name), format!("s-{value}"), "{name}");
    }
    assert_eq!(header(sent, "X-Plain-Marker"), "s-visible-marker");
    // As the service received them: berth's forwarding headers included.
    assert_eq!(header(sent, "X-Forwarded-For"), "127.0.0.1");
    assert_eq!(header(sent, "X-Forwarded-Host"), share.authority());
    let got = &record["response_headers"];
    assert_eq!(headers(got, "set-cookie"), ["[REDACTED]", "[REDACTED]"]);
    assert_eq!(header(got, "X-Session-Id"), "resp-session-strict");
    assert_eq!(header(got, "X-Reply-Marker"), "resp-visible-marker");
    assert_eq!(record["bytes_out"], format!("served {path}").len());
    assert!(share.next_line().starts_with(&format!("GET {path} 200 ")));
}

#[test]
fn strict_redacts_more_headers_both_ways_and_sensitive_query_values() {
    let (server, _dir) = setup(&[]);
    let token = token_with_tier(&server, "strict", "strict");
    let share = Share::start(&server, service(), &token, "tight");
    send_sensitive(&server, share.authority(), "t");
    let tunnel = tunnel_id(&server, &token, share.authority());
    let record = records(&server, &token, &tunnel, 1).remove(0);
    let redacted_path = "/login?access_token=[REDACTED]&page=2&Session=[REDACTED]&code=[REDACTED]";
    assert_eq!(record["path"], redacted_path);
    let sent = &record["request_headers"];
    for (name, _) in STANDARD_HEADERS.iter().chain(&STRICT_HEADERS) {
        assert_eq!(header(sent, name), "[REDACTED]", "{name}");
    }
    assert_eq!(header(sent, "X-Plain-Marker"), "t-visible-marker");
    assert_eq!(header(sent, "User-Agent").split('/').next(), Some("curl"));
    let got = &record["response_headers"];
    assert_eq!(header(got, "X-Session-Id"), "[REDACTED]");
    assert_eq!(header(got, "X-Reply-Marker"), "resp-visible-marker");
    // The live line is what was recorded, redacted path and all.
    let line = share.next_line();
    assert!(
        line.starts_with(&format!("GET {redacted_path} 200 ")) && line.ends_with("ms"),
        "{line}"
    );
}

/// Header names that differ from standard's by `_` for `-` or a prefix, each
/// with a value naming it: every tier redacts them.
const DISGUISED_HEADERS: [(&str, &str); 4] = [
    ("X_Api_Key", "disguised-underscore-key"),
    ("X-Authorization", "disguised-x-authorization"),
    ("X-Password", "disguised-x-password"),
    ("Db_Passwd", "disguised-passwd"),
];

/// Send the disguised names, a URL-bearing `Referer` and a path with `;`
/// parameters and a user:password; the service answers with URL headers.
fn send_urls(server: &Server, host: &str) -> String {
    let mut lines: Vec<String> = DISGUISED_HEADERS
        .iter()
        .map(|(name, value)| format!("{name}: {value}"))
        .collect();
    lines.extend([
        "Referer: https://ref.example/from?api_key=url-referer-key&q=kept-ref".to_string(),
        "X-Reply-With: Location: https://user:url-location-password@b.example/cb?code=url-location-code;state=kept-state#access_token=url-fragment-token".to_string(),
        "X-Reply-With: Content-Location: /doc?sig=url-content-sig".to_string(),
        "X-Reply-With: Refresh: 0; url=/next?session=url-refresh-session".to_string(),
        "X-Reply-With: Link: <https://l.example/?page=2&token=url-link-token>; rel=\"next\"".to_string(),
    ]);
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    let path = "/cb;jsessionid=url-path-session?x=1;token=url-semicolon-token&go=http://u:url-path-password@h.example/";
    let body = curl(server, host, path, &refs);
    assert_eq!(body, format!("served {path}"));
    path.to_string()
}

#[test]
fn disguised_names_are_redacted_by_every_tier() {
    let (server, _dir) = setup(&[]);
    let token = token_with_tier(&server, "std", "standard");
    let share = Share::start(&server, service(), &token, "disguise");
    let path = send_urls(&server, share.authority());
    let tunnel = tunnel_id(&server, &token, share.authority());
    let record = records(&server, &token, &tunnel, 1).remove(0);
    for (name, _) in DISGUISED_HEADERS {
        assert_eq!(
            header(&record["request_headers"], name),
            "[REDACTED]",
            "{name}"
        );
    }
    // Standard keeps the path and the URLs in headers whole.
    assert_eq!(record["path"], path.as_str());
    let got = &record["response_headers"];
    assert!(header(got, "Location").contains("url-location-code"));
}

#[test]
fn strict_redacts_urls_in_the_path_and_in_url_headers() {
    let (server, _dir) = setup(&[]);
    let token = token_with_tier(&server, "strict", "strict");
    let share = Share::start(&server, service(), &token, "urls");
    send_urls(&server, share.authority());
    let tunnel = tunnel_id(&server, &token, share.authority());
    let record = records(&server, &token, &tunnel, 1).remove(0);
    assert_eq!(
        record["path"],
        "/cb;jsessionid=[REDACTED]?x=1;token=[REDACTED]&go=http://[REDACTED]@h.example/"
    );
    let sent = &record["request_headers"];
    assert_eq!(
        header(sent, "Referer"),
        "https://ref.example/from?api_key=[REDACTED]&q=kept-ref"
    );
    let got = &record["response_headers"];
    assert_eq!(
        header(got, "Location"),
        "https://[REDACTED]@b.example/cb?code=[REDACTED];state=kept-state#access_token=[REDACTED]"
    );
    assert_eq!(header(got, "Content-Location"), "/doc?sig=[REDACTED]");
    assert_eq!(header(got, "Refresh"), "0; url=/next?session=[REDACTED]");
    assert_eq!(
        header(got, "Link"),
        "<https://l.example/?page=2&token=[REDACTED]>; rel=\"next\""
    );
    let line = share.next_line();
    assert!(line.starts_with("GET /cb;jsessionid=[REDACTED]?"), "{line}");
}

/// `berth ARGS` with a token against the server; no config file.
fn berth(server: &Server, token: &str, args: &[&str]) -> Output {
    run_with_token(&server.url, token, args)
}

#[test]
fn inherit_follows_the_crews_default_as_it_changes() {
    let (server, _dir) = setup(&[]);
    let token = server.token_for("alice", "home", "inherits");
    let share = Share::start(&server, service(), &token, "follow");
    let tunnel = tunnel_id(&server, &token, share.authority());
    curl(
        &server,
        share.authority(),
        "/one?token=first",
        &["Session-ID: before-change"],
    );
    let first = records(&server, &token, &tunnel, 1);
    assert_eq!(
        header(&first[0]["request_headers"], "Session-ID"),
        "before-change"
    );
    assert_eq!(first[0]["path"], "/one?token=first");

    let out = berth(
        &server,
        &token,
        &["crews", "set-redaction", "home", "strict"],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let out = berth(&server, &token, &["crews", "list"]);
    assert!(
        // ID, NAME, ROLE, DEFAULT REDACTION, then the limits.
        out.stdout.lines().nth(1).unwrap().split_whitespace().nth(3) == Some("strict"),
        "{}",
        out.stdout
    );

    // The same live tunnel: the next request already records as strict.
    curl(
        &server,
        share.authority(),
        "/two?token=second",
        &["Session-ID: after-change"],
    );
    let both = records(&server, &token, &tunnel, 2);
    assert_eq!(
        header(&both[0]["request_headers"], "Session-ID"),
        "[REDACTED]"
    );
    assert_eq!(both[0]["path"], "/two?token=[REDACTED]");

    let out = berth(
        &server,
        &token,
        &["crews", "set-redaction", "home", "inherit"],
    );
    assert_eq!(out.code, 2, "{}", out.stderr);
    server.create_user("mo", "home", "member");
    let member = server.token_for("mo", "home", "m");
    let out = berth(
        &server,
        &member,
        &["crews", "set-redaction", "home", "standard"],
    );
    assert_eq!(
        out.code, 4,
        "only owners change crew settings: {}",
        out.stderr
    );
}

/// Every regular file in a directory tree, with its bytes.
fn files_under(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().map_while(Result::ok) {
        let path = entry.path();
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            out.extend(files_under(&path));
        } else if kind.is_file() {
            out.push((path.display().to_string(), std::fs::read(&path).unwrap()));
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[test]
fn redacted_values_never_reach_the_database_files() {
    let (server, dir) = setup(&[]);
    let standard = token_with_tier(&server, "std", "standard");
    let strict = token_with_tier(&server, "strict", "strict");
    let port = service();
    let loose = Share::start(&server, port, &standard, "loose");
    let tight = Share::start(&server, port, &strict, "tight");
    send_sensitive(&server, loose.authority(), "diskstd");
    send_sensitive(&server, tight.authority(), "diskstrict");
    // Bodies are counted, never recorded.
    let body = "request-body-never-stored";
    let out = Command::new("curl")
        .args(["-s", "-S", "-H", &format!("Host: {}", loose.authority())])
        .args(["--data-binary", body])
        .arg(format!("{}/upload", server.url))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "served /upload");
    let loose_tunnel = tunnel_id(&server, &standard, loose.authority());
    let newest = records(&server, &standard, &loose_tunnel, 2).remove(0);
    assert_eq!(newest["method"], "POST");
    assert_eq!(newest["bytes_in"], body.len());
    let tight_tunnel = tunnel_id(&server, &strict, tight.authority());
    records(&server, &strict, &tight_tunnel, 1);

    let files = files_under(dir.path());
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    assert!(names.iter().any(|n| n.ends_with("berth.db")), "{names:?}");
    assert!(
        names.iter().any(|n| n.ends_with("berth.db-wal")),
        "{names:?}"
    );
    let anywhere = |needle: &str| files.iter().any(|(_, bytes)| contains(bytes, needle));
    let mut secrets: Vec<String> = Vec::new();
    for (_, value) in STANDARD_HEADERS {
        secrets.push(format!("diskstd-{value}"));
        secrets.push(format!("diskstrict-{value}"));
    }
    for (_, value) in STRICT_HEADERS {
        secrets.push(format!("diskstrict-{value}"));
    }
    for part in ["query-token", "query-session", "query-code"] {
        secrets.push(format!("diskstrict-{part}"));
    }
    secrets.extend([
        "resp-cookie-secret".into(),
        "resp-cookie-two".into(),
        body.into(),
    ]);
    for secret in &secrets {
        assert!(!anywhere(secret), "{secret} reached the disk");
    }
    // Control: what is not redacted is there, so the scan can see records.
    for visible in [
        "diskstd-visible-marker",
        "diskstrict-visible-marker",
        "diskstd-strict-session-id",
        "diskstd-query-token",
        "resp-visible-marker",
    ] {
        assert!(anywhere(visible), "{visible} should be recorded");
    }
}

#[test]
fn records_page_newest_first_and_bad_paging_is_refused() {
    let (server, _dir) = setup(&[]);
    let token = server.token_for("alice", "home", "pager");
    let share = Share::start(&server, service(), &token, "pages");
    for i in 0..7 {
        curl(&server, share.authority(), &format!("/{i}"), &[]);
    }
    let tunnel = tunnel_id(&server, &token, share.authority());
    let all = records(&server, &token, &tunnel, 7);
    let paths: Vec<&str> = all.iter().map(|r| r["path"].as_str().unwrap()).collect();
    assert_eq!(paths, ["/6", "/5", "/4", "/3", "/2", "/1", "/0"]);
    let base = format!("/api/v1/tunnels/{tunnel}/requests");
    let page = |query: &str| {
        let (status, body) = server.call("GET", &format!("{base}{query}"), Some(&token), None);
        assert_eq!(status, 200, "{body}");
        body["requests"].as_array().unwrap().clone()
    };
    let first = page("?limit=3");
    assert_eq!(first.len(), 3);
    assert_eq!(first[0]["path"], "/6");
    let last_id = first[2]["id"].as_i64().unwrap();
    let second = page(&format!("?limit=3&before={last_id}"));
    let paths: Vec<&str> = second.iter().map(|r| r["path"].as_str().unwrap()).collect();
    assert_eq!(paths, ["/3", "/2", "/1"]);
    let rest = page(&format!("?before={}", second[2]["id"]));
    assert_eq!(rest.len(), 1);
    assert_eq!(page("").len(), 7, "default limit 50");
    for (query, field) in [
        ("?limit=0", "limit"),
        ("?limit=1001", "limit"),
        ("?limit=ten", "limit"),
        ("?before=0", "before"),
        ("?before=-3", "before"),
        ("?before=x", "before"),
    ] {
        let (status, body) = server.call("GET", &format!("{base}{query}"), Some(&token), None);
        assert_eq!(status, 400, "{query}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(&format!("`{field}`")),
            "{query}: {message}"
        );
    }
    assert_eq!(page("?limit=1000").len(), 7);
    let (status, _) = server.call(
        "GET",
        "/api/v1/tunnels/ffff0000/requests",
        Some(&token),
        None,
    );
    assert_eq!(status, 404);
    let (status, _) = server.call("POST", &base, Some(&token), None);
    assert_eq!(status, 405);
    // The tunnel object counts its requests.
    let (_, body) = server.call("GET", "/api/v1/tunnels", Some(&token), None);
    assert_eq!(body["tunnels"][0]["request_count"], 7);
}

#[test]
fn retention_keeps_the_newest_records_of_each_tunnel() {
    let (server, _dir) = setup(&["--inspect-retention", "5"]);
    let token = server.token_for("alice", "home", "kept");
    let share = Share::start(&server, service(), &token, "kept");
    let tunnel = tunnel_id(&server, &token, share.authority());
    for i in 0..12 {
        curl(&server, share.authority(), &format!("/{i}"), &[]);
        // One at a time, so each lands in its own batch and pruning runs often.
        records(&server, &token, &tunnel, (i + 1).min(5));
    }
    let deadline = Instant::now() + RECORDED_WITHIN;
    while count_of(&server, &token, &tunnel) < 12 {
        assert!(Instant::now() < deadline, "request_count did not reach 12");
        std::thread::sleep(Duration::from_millis(50));
    }
    let kept = records(&server, &token, &tunnel, 5);
    let paths: Vec<&str> = kept.iter().map(|r| r["path"].as_str().unwrap()).collect();
    assert_eq!(paths, ["/11", "/10", "/9", "/8", "/7"]);
    let rows: i64 = server
        .db()
        .query_row("SELECT count(*) FROM requests", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 5);
}

fn count_of(server: &Server, token: &str, tunnel: &str) -> i64 {
    let (_, body) = server.call("GET", "/api/v1/tunnels", Some(token), None);
    body["tunnels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == tunnel)
        .map(|t| t["request_count"].as_i64().unwrap())
        .unwrap()
}

#[test]
fn retention_zero_records_nothing_but_share_still_prints_lines() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_in_env(
        &dir.path().join("data"),
        &[],
        &[("BERTH_INSPECT_RETENTION", "0")],
    );
    server.create_user("alice", "home", "owner");
    let token = token_with_tier(&server, "strict", "strict");
    let share = Share::start(&server, service(), &token, "off");
    curl(&server, share.authority(), "/quiet?secret=s3", &[]);
    let line = share.next_line();
    assert!(
        line.starts_with("GET /quiet?secret=[REDACTED] 200 "),
        "{line}"
    );
    let tunnel = tunnel_id(&server, &token, share.authority());
    let path = format!("/api/v1/tunnels/{tunnel}/requests");
    let (status, body) = server.call("GET", &path, Some(&token), None);
    assert_eq!(status, 200);
    assert_eq!(body["requests"], json!([]));
    assert_eq!(count_of(&server, &token, &tunnel), 0);
}

#[test]
fn a_bad_retention_is_a_usage_error() {
    let out = run_with_stdin(
        &[
            "server",
            "--listen",
            "127.0.0.1:0",
            "--inspect-retention",
            "2000000",
        ],
        &[],
        "",
    );
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("--inspect-retention"), "{}", out.stderr);
}

#[test]
fn several_tunnels_record_at_once_with_right_counts() {
    let (server, _dir) = setup(&[]);
    let token = server.token_for("alice", "home", "busy");
    let port = service();
    let shares: Vec<Share> = (0..3)
        .map(|i| Share::start(&server, port, &token, &format!("busy{i}")))
        .collect();
    const PER_CLIENT: usize = 10;
    const CLIENTS: usize = 2;
    std::thread::scope(|scope| {
        for share in &shares {
            for client in 0..CLIENTS {
                let (base, host) = (server.url.clone(), share.authority().to_string());
                scope.spawn(move || {
                    // One curl, many URLs: a kept-alive public connection.
                    let urls: Vec<String> = (0..PER_CLIENT)
                        .map(|i| format!("{base}/c{client}-{i}"))
                        .collect();
                    let out = Command::new("curl")
                        .args([
                            "-s",
                            "-S",
                            "-o",
                            "/dev/null",
                            "-H",
                            &format!("Host: {host}"),
                        ])
                        .args(&urls)
                        .output()
                        .unwrap();
                    assert!(out.status.success());
                });
            }
        }
    });
    for share in &shares {
        let tunnel = tunnel_id(&server, &token, share.authority());
        let list = records(&server, &token, &tunnel, PER_CLIENT * CLIENTS);
        assert_eq!(list.len(), PER_CLIENT * CLIENTS);
        assert!(list
            .iter()
            .all(|r| r["status"] == 200 && r["tunnel_id"] == tunnel.as_str()));
        assert_eq!(
            count_of(&server, &token, &tunnel),
            (PER_CLIENT * CLIENTS) as i64
        );
    }
}

#[test]
fn viewers_read_traffic_and_other_crews_get_404() {
    let (server, _dir) = setup(&[]);
    let token = server.token_for("alice", "home", "own");
    server.create_user("vic", "home", "viewer");
    server.create_user("eve", "elsewhere", "owner");
    let viewer = server.token_for("vic", "home", "v");
    let outsider = server.token_for("eve", "elsewhere", "e");
    let share = Share::start(&server, service(), &token, "shown");
    curl(&server, share.authority(), "/seen", &[]);
    let tunnel = tunnel_id(&server, &token, share.authority());
    records(&server, &token, &tunnel, 1);
    let path = format!("/api/v1/tunnels/{tunnel}/requests");
    let (status, body) = server.call("GET", &path, Some(&viewer), None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["requests"][0]["path"], "/seen");
    let (status, body) = server.call("GET", &path, Some(&outsider), None);
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "not_found");
    // Scopes narrow: traffic:read alone reads; tokens:read alone does not.
    let scoped = |name: &str, scope: &str| {
        let body = json!({"name": name, "crew": "home", "scopes": [scope]});
        let (_, answer) = server.call_basic("POST", "/api/v1/tokens", "vic", PASSWORD, Some(&body));
        answer["secret"].as_str().unwrap().to_string()
    };
    let (status, _) = server.call("GET", &path, Some(&scoped("t", "traffic:read")), None);
    assert_eq!(status, 200);
    let (status, body) = server.call("GET", &path, Some(&scoped("k", "tokens:read")), None);
    assert_eq!(status, 403, "{body}");
    let (status, _) = server.call("GET", &path, None, None);
    assert_eq!(status, 401);
}

#[test]
fn berth_traffic_prints_a_table_or_json() {
    let (server, _dir) = setup(&[]);
    let token = server.token_for("alice", "home", "cli");
    let share = Share::start(&server, service(), &token, "cli");
    curl(&server, share.authority(), "/a", &[]);
    curl(&server, share.authority(), "/b?x=1", &[]);
    let tunnel = tunnel_id(&server, &token, share.authority());
    records(&server, &token, &tunnel, 2);

    let out = berth(&server, &token, &["traffic", &tunnel]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    let columns: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(
        columns,
        ["TIME", "METHOD", "PATH", "STATUS", "MS", "IN", "OUT"]
    );
    let newest: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(&newest[1..4], ["GET", "/b?x=1", "200"]);
    assert_eq!(newest[6], "served /b?x=1".len().to_string());
    assert_eq!(lines.len(), 3, "{}", out.stdout);

    let out = berth(
        &server,
        &token,
        &["traffic", &tunnel, "--limit", "1", "--json"],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let list: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["path"], "/b?x=1");

    let out = berth(&server, &token, &["traffic", "abcdef0123456789"]);
    assert_eq!(out.code, 5, "{}", out.stderr);
    assert!(out.stderr.contains("berth tunnels list"), "{}", out.stderr);
    let out = berth(&server, &token, &["traffic", "not-an-id"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    let out = berth(&server, &token, &["traffic", &tunnel, "--limit", "0"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
}

#[test]
fn berth_traffic_escapes_control_characters_and_json_keeps_them() {
    let (server, _dir) = setup(&[]);
    let token = server.token_for("alice", "home", "esc");
    let share = Share::start(&server, service(), &token, "esc");
    // UTF-8 in the target passes HTTP's rules: U+009B is a one-character CSI
    // (C1), U+202E reverses what follows; the User-Agent carries the same.
    let path = "/x\u{9b}2J\u{202e}gpj.exe";
    let head = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: ua\u{9b}31m\r\nConnection: close\r\n\r\n",
        share.authority()
    );
    let (status, _, body) = common::raw_exchange(&server.addr, head.as_bytes());
    assert_eq!(status, 200, "{body}");
    let tunnel = tunnel_id(&server, &token, share.authority());
    records(&server, &token, &tunnel, 1);

    let out = berth(&server, &token, &["traffic", &tunnel]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        !out.stdout
            .chars()
            .any(|c| c.is_control() && c != '\n' || c == '\u{202e}'),
        "{:?}",
        out.stdout
    );
    assert!(
        out.stdout.contains("/x\\u{9b}2J\\u{202e}gpj.exe"),
        "{}",
        out.stdout
    );
    // The share's live line is escaped alike.
    let line = share.next_line();
    assert!(
        line.starts_with("GET /x\\u{9b}2J\\u{202e}gpj.exe 200 "),
        "{line:?}"
    );

    let out = berth(&server, &token, &["traffic", &tunnel, "--json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let list: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(list[0]["path"], path);
    assert_eq!(
        header(&list[0]["request_headers"], "User-Agent"),
        "ua\u{9b}31m"
    );
}

#[test]
fn a_service_that_is_down_is_recorded_as_the_502_sent() {
    let (server, _dir) = setup(&[]);
    let token = server.token_for("alice", "home", "down");
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let share = Share::start(&server, port, &token, "down");
    let out = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-H"])
        .arg(format!("Host: {}", share.authority()))
        .arg(format!("{}/gone", server.url))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "502");
    let tunnel = tunnel_id(&server, &token, share.authority());
    let record = records(&server, &token, &tunnel, 1).remove(0);
    assert_eq!(record["status"], 502);
    assert_eq!(record["path"], "/gone");
    assert!(share.next_line().starts_with("GET /gone 502 "));
}

#[test]
fn an_upgrade_is_recorded_when_it_switches() {
    let (server, _dir) = setup(&[]);
    let token = server.token_for("alice", "home", "ws");
    let echo = relay_support::Service::start();
    let share = Share::start(&server, echo.port, &token, "ws");
    let mut public = TcpStream::connect(&server.addr).unwrap();
    let head = format!(
        "GET /socket?token=t HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n",
        share.authority()
    );
    public.write_all(head.as_bytes()).unwrap();
    public.set_read_timeout(Some(RECORDED_WITHIN)).unwrap();
    let mut reader = BufReader::new(public.try_clone().unwrap());
    let mut status = String::new();
    reader.read_line(&mut status).unwrap();
    assert!(status.starts_with("HTTP/1.1 101"), "{status}");
    // Still open and echoing, yet already recorded and printed.
    let tunnel = tunnel_id(&server, &token, share.authority());
    let record = records(&server, &token, &tunnel, 1).remove(0);
    assert_eq!(record["status"], 101);
    assert_eq!(header(&record["response_headers"], "Upgrade"), "echo");
    assert!(share.next_line().starts_with("GET /socket?token=t 101 "));
    let mut line = String::new();
    while line != "\r\n" {
        line.clear();
        reader.read_line(&mut line).unwrap();
    }
    public.write_all(b"ping\n").unwrap();
    line.clear();
    reader.read_line(&mut line).unwrap();
    assert_eq!(line, "ping\n");
}
