//! The HTTP relay end to end: the real server, `berth share` as a child process,
//! a local HTTP service, and curl as the public client.

mod common;
mod relay_support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::{berth_with_token, code_and_stderr, Server};
use relay_support::{big_body, Cutter, Service, Share};

/// `berth share` for a local port, on its own server or through another URL.
impl Share {
    fn start(server: &Server, port: u16, token: &str, subdomain: Option<&str>) -> Share {
        Share::start_via(&server.url, port, token, subdomain)
    }

    /// Share through the server at `server_url` (the server itself or a forwarder).
    fn start_via(server_url: &str, port: u16, token: &str, subdomain: Option<&str>) -> Share {
        let port = port.to_string();
        let mut args = vec![port.as_str(), "--host", "127.0.0.1"];
        if let Some(name) = subdomain {
            args.extend(["--subdomain", name]);
        }
        Share::spawn(server_url, token, &args, Stdio::inherit())
    }
}

/// `berth ARGS` against the server with a token and no config file.
fn share_command(server_url: &str, token: &str, args: &[String]) -> Command {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    berth_with_token(server_url, token, &args)
}

/// Run `berth share` expecting it to fail; its exit code and stderr.
fn share_fails(server: &Server, token: &str, args: &[&str]) -> (i32, String) {
    let mut all = vec!["share".to_string()];
    all.extend(args.iter().map(|a| a.to_string()));
    code_and_stderr(&mut share_command(&server.url, token, &all))
}

/// curl to the server with a Host header; returns stdout bytes.
fn curl(server: &Server, host: &str, args: &[&str]) -> Vec<u8> {
    let out = Command::new("curl")
        .args(["-s", "-S", "--max-time", "30", "-H"])
        .arg(format!("Host: {host}"))
        .args(args)
        .output()
        .expect("run curl");
    let _ = server;
    out.stdout
}

fn url(server: &Server, path: &str) -> String {
    format!("{}{path}", server.url)
}

/// A server with an owner `alice` (token returned) in crew `home`.
fn setup() -> (Server, String) {
    let server = Server::start();
    server.create_user("alice", "home", "owner");
    let token = server.token_for("alice", "home", "share");
    (server, token)
}

#[test]
fn requests_reach_the_local_service_with_forwarding_headers() {
    let (server, token) = setup();
    let service = Service::start();
    let share = Share::start(&server, service.port, &token, Some("demo"));
    let port = server.addr.rsplit(':').next().unwrap();
    assert_eq!(share.url, format!("http://demo.localhost:{port}"));
    let body = curl(
        &server,
        "Demo.Localhost:1234",
        &[&url(&server, "/hello?x=1")],
    );
    let text = String::from_utf8_lossy(&body);
    assert!(text.starts_with("path=/hello?x=1 "), "{text}");
    assert!(text.contains("host=Demo.Localhost:1234"), "{text}");
    assert!(text.contains("xff=127.0.0.1"), "{text}");
    assert!(text.contains("xfh=Demo.Localhost:1234"), "{text}");
    assert!(text.contains("xfp=http"), "{text}");
    let line = share.next_line();
    assert!(line.starts_with("GET /hello?x=1 200 "), "{line}");
    assert!(line.ends_with("ms"), "{line}");
}

#[test]
fn a_random_readable_name_when_none_is_asked_for() {
    let (server, token) = setup();
    let service = Service::start();
    let share = Share::start(&server, service.port, &token, None);
    let host = share.url.strip_prefix("http://").unwrap();
    let name = host.split('.').next().unwrap();
    assert_eq!(name.split('-').count(), 3, "{name}");
    let body = curl(&server, host, &[&url(&server, "/r")]);
    assert!(String::from_utf8_lossy(&body).starts_with("path=/r "));
}

#[test]
fn an_unknown_subdomain_gets_a_404_page_naming_the_host() {
    let (server, _) = setup();
    let out = Command::new("curl")
        .args(["-s", "-i", "-H", "Host: nobody.localhost"])
        .arg(url(&server, "/"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("HTTP/1.1 404"), "{text}");
    assert!(text.contains("nobody.localhost"), "{text}");
    // The server's own host still reaches the API.
    let (status, _) = server.call("GET", "/api/v1/me", None, None);
    assert_eq!(status, 401);
}

#[test]
fn a_taken_subdomain_exits_6() {
    let (server, token) = setup();
    let service = Service::start();
    let _share = Share::start(&server, service.port, &token, Some("taken"));
    let port = service.port.to_string();
    let (code, stderr) = share_fails(&server, &token, &[&port, "--subdomain", "taken"]);
    assert_eq!(code, 6, "{stderr}");
    assert!(stderr.contains("taken"), "{stderr}");
}

#[test]
fn of_two_racing_claims_exactly_one_wins() {
    let (server, token) = setup();
    let attempts: Vec<_> = (0..2)
        .map(|_| {
            let (addr, token) = (server.addr.clone(), token.clone());
            std::thread::spawn(move || {
                let mut stream = TcpStream::connect(&addr).unwrap();
                let request = format!(
                    "GET /api/v1/tunnels/connect?subdomain=race HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nConnection: Upgrade\r\nUpgrade: berth-relay/1\r\n\r\n"
                );
                stream.write_all(request.as_bytes()).unwrap();
                stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let mut first = [0u8; 12];
                stream.read_exact(&mut first).unwrap();
                (String::from_utf8_lossy(&first).into_owned(), stream)
            })
        })
        .collect();
    // Both connections stay open until both answers are in.
    let answers: Vec<(String, TcpStream)> =
        attempts.into_iter().map(|t| t.join().unwrap()).collect();
    let mut statuses: Vec<&str> = answers.iter().map(|(s, _)| s.as_str()).collect();
    statuses.sort();
    assert_eq!(statuses, ["HTTP/1.1 101", "HTTP/1.1 409"]);
}

#[test]
fn a_bad_subdomain_is_a_usage_error() {
    let (server, token) = setup();
    for bad in ["-x", "www", "UPPER", "a.b"] {
        let (code, stderr) = share_fails(&server, &token, &["80", "--subdomain", bad]);
        assert_eq!(code, 2, "{bad}: {stderr}");
    }
}

#[test]
fn a_revoked_token_exits_3() {
    let (server, token) = setup();
    let id = token.split('|').next().unwrap();
    let (status, _) = server.call(
        "DELETE",
        &format!("/api/v1/tokens/{id}"),
        Some(&token),
        None,
    );
    assert_eq!(status, 200);
    let (code, stderr) = share_fails(&server, &token, &["80"]);
    assert_eq!(code, 3, "{stderr}");
}

#[test]
fn a_viewer_exits_4() {
    let (server, _) = setup();
    server.create_user("vera", "home", "viewer");
    let token = server.token_for("vera", "home", "viewer share");
    let (code, stderr) = share_fails(&server, &token, &["80"]);
    assert_eq!(code, 4, "{stderr}");
    assert!(stderr.contains("member"), "{stderr}");
}

#[test]
fn keep_alive_holds_on_both_legs() {
    let (server, token) = setup();
    let service = Service::start();
    let _share = Share::start(&server, service.port, &token, Some("keep"));
    let body = curl(
        &server,
        "keep.localhost",
        &[&url(&server, "/one"), &url(&server, "/two")],
    );
    let text = String::from_utf8_lossy(&body);
    assert!(
        text.contains("path=/one") && text.contains("path=/two"),
        "{text}"
    );
    // Both requests went over one local connection: one data connection, kept.
    assert_eq!(text.matches("conn=1").count(), 2, "{text}");
    assert_eq!(service.connections.load(Ordering::SeqCst), 1);
}

#[test]
fn a_1_mib_body_arrives_intact_both_ways() {
    let (server, token) = setup();
    let service = Service::start();
    let _share = Share::start(&server, service.port, &token, Some("big"));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("up.bin");
    std::fs::write(&file, big_body()).unwrap();
    let echoed = curl(
        &server,
        "big.localhost",
        &[
            "--data-binary",
            &format!("@{}", file.display()),
            &url(&server, "/echo"),
        ],
    );
    assert!(
        echoed == big_body(),
        "echo of {} bytes differs",
        echoed.len()
    );
    let chunked = curl(
        &server,
        "big.localhost",
        &[
            "-H",
            "Transfer-Encoding: chunked",
            "--data-binary",
            &format!("@{}", file.display()),
            &url(&server, "/echo"),
        ],
    );
    assert!(
        chunked == big_body(),
        "chunked echo of {} bytes differs",
        chunked.len()
    );
    let down = curl(&server, "big.localhost", &[&url(&server, "/big")]);
    assert!(
        down == big_body(),
        "download of {} bytes differs",
        down.len()
    );
}

#[test]
fn an_unclaimed_connection_gets_502_after_the_timeout() {
    let (server, token) = setup();
    // A client that opens the control connection but never answers `connect`.
    let mut control = TcpStream::connect(&server.addr).unwrap();
    let request = format!(
        "GET /api/v1/tunnels/connect?subdomain=mute HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\nConnection: Upgrade\r\nUpgrade: berth-relay/1\r\n\r\n",
        server.addr
    );
    control.write_all(request.as_bytes()).unwrap();
    let mut reader = BufReader::new(control.try_clone().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert!(line.starts_with("HTTP/1.1 101"), "{line}");
    while line != "\r\n" {
        line.clear();
        reader.read_line(&mut line).unwrap();
    }
    line.clear();
    reader.read_line(&mut line).unwrap();
    assert!(line.starts_with("{\"ready\":{\"tunnel_id\":"), "{line}");
    let started = Instant::now();
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-H",
            "Host: mute.localhost",
        ])
        .arg(url(&server, "/"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "502");
    assert!(started.elapsed() >= Duration::from_secs(9));
    line.clear();
    reader.read_line(&mut line).unwrap();
    assert!(line.starts_with("{\"connect\":{\"id\":\""), "{line}");
    let id = line.split('"').nth(5).unwrap();
    assert_eq!(id.len(), 32, "{id}");
}

#[test]
fn a_request_waiting_on_a_tunnel_that_closes_gets_502_at_once() {
    let (server, token) = setup();
    // A client that opens the control connection, never answers `connect`,
    // then goes away while a public request waits for it.
    let control = TcpStream::connect(&server.addr).unwrap();
    let request = format!(
        "GET /api/v1/tunnels/connect?subdomain=gone HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\nConnection: Upgrade\r\nUpgrade: berth-relay/1\r\n\r\n",
        server.addr
    );
    (&control).write_all(request.as_bytes()).unwrap();
    let mut reader = BufReader::new(control.try_clone().unwrap());
    let mut line = String::new();
    while !line.starts_with("{\"ready\"") {
        line.clear();
        assert!(reader.read_line(&mut line).unwrap() > 0, "no ready frame");
    }
    let waiting = {
        let url = url(&server, "/");
        std::thread::spawn(move || {
            // Well under the 10 s an unclaimed id would take to expire.
            Command::new("curl")
                .args(["-s", "-i", "--max-time", "6", "-H", "Host: gone.localhost"])
                .arg(url)
                .output()
                .unwrap()
        })
    };
    // Once the public request asked for its data connection, the client leaves.
    let mut asked = 0;
    while asked < 3 {
        line.clear();
        assert!(reader.read_line(&mut line).unwrap() > 0, "control closed");
        if line.starts_with("{\"connect\"") {
            asked += 1; // two asked ahead of need, then the request's own
        }
    }
    drop(reader);
    drop(control);
    let out = waiting.join().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("HTTP/1.1 502"), "{text}");
    assert!(
        text.contains("closed before it could take the request"),
        "{text}"
    );
}

#[test]
fn share_reconnects_keeping_its_subdomain() {
    let (server, token) = setup();
    let service = Service::start();
    let cutter = Cutter::start(&server.addr);
    let _share = Share::start_via(&cutter.url, service.port, &token, Some("steady"));
    let get = || curl(&server, "steady.localhost", &[&url(&server, "/again")]);
    assert!(String::from_utf8_lossy(&get()).starts_with("path=/again "));
    cutter.cut();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        std::thread::sleep(Duration::from_millis(200));
        if String::from_utf8_lossy(&get()).starts_with("path=/again ") {
            break;
        }
        assert!(Instant::now() < deadline, "share did not come back");
    }
}

#[test]
fn an_upgrade_passes_through_the_tunnel() {
    let (server, token) = setup();
    let service = Service::start();
    let _share = Share::start(&server, service.port, &token, Some("ws"));
    let mut stream = TcpStream::connect(&server.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream
        .write_all(b"GET /socket HTTP/1.1\r\nHost: ws.localhost\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert!(line.starts_with("HTTP/1.1 101"), "{line}");
    while line != "\r\n" {
        line.clear();
        reader.read_line(&mut line).unwrap();
    }
    for message in ["hello\n", "both ways\n"] {
        stream.write_all(message.as_bytes()).unwrap();
        line.clear();
        reader.read_line(&mut line).unwrap();
        assert_eq!(line, message);
    }
}

#[test]
fn smuggling_and_oversized_heads_never_reach_the_tunnel() {
    let (server, token) = setup();
    let service = Service::start();
    let _share = Share::start(&server, service.port, &token, Some("guarded"));
    let (status, _, _) = server.raw(
        "POST / HTTP/1.1\r\nHost: guarded.localhost\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    );
    assert_eq!(status, 400);
    let (status, _, _) = server.raw(
        "POST / HTTP/1.1\r\nHost: guarded.localhost\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
    );
    assert_eq!(status, 400);
    let big = "a".repeat(33 * 1024);
    let (status, _, _) = server.raw(&format!(
        "GET / HTTP/1.1\r\nHost: guarded.localhost\r\nX-Big: {big}\r\n\r\n"
    ));
    assert_eq!(status, 431);
    assert_eq!(service.connections.load(Ordering::SeqCst), 0);
    // A bad chunk size is found while streaming: refused all the same.
    let (status, _, text) = server.raw(
        "POST /echo HTTP/1.1\r\nHost: guarded.localhost\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    );
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("chunked"), "{text}");
    // A bare CR inside a chunk line or a trailer is framing too: a parser
    // further on that ends lines at CR would read another message.
    for body in [
        "4;ext=a\rX\r\nWiki\r\n0\r\n\r\n",
        "4\r\nWiki\r\n0\r\nX-Trailer: a\rb\r\n\r\n",
    ] {
        let (status, _, text) = server.raw(&format!(
            "POST /echo HTTP/1.1\r\nHost: guarded.localhost\r\nTransfer-Encoding: chunked\r\n\r\n{body}"
        ));
        assert_eq!(status, 400, "{body:?}: {text}");
    }
}

#[test]
fn a_local_service_that_is_down_gets_a_502_that_names_nothing_inside() {
    let (server, token) = setup();
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let port_text = port.to_string();
    let args = [
        port_text.as_str(),
        "--host",
        "127.0.0.1",
        "--subdomain",
        "down",
    ];
    let mut share = Share::spawn(&server.url, &token, &args, Stdio::piped());
    let stderr = BufReader::new(share.child.stderr.take().unwrap());
    let (tx, errors) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let secrets = [port_text.as_str(), "127.0.0.1", "os error", "refused"];
    let fetch = |accept: &str| {
        let out = Command::new("curl")
            .args(["-s", "-i", "-H", "Host: down.localhost", "-H", accept])
            .arg(url(&server, "/x"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // A browser gets a page; a script asking for JSON gets the API's shape.
    let html = fetch("Accept: text/html,application/xhtml+xml,*/*;q=0.8");
    assert!(html.starts_with("HTTP/1.1 502"), "{html}");
    assert!(html.contains("Content-Type: text/html"), "{html}");
    assert!(html.contains("did not answer"), "{html}");
    let json = fetch("Accept: application/json");
    assert!(json.starts_with("HTTP/1.1 502"), "{json}");
    assert!(json.contains("Content-Type: application/json"), "{json}");
    let body: serde_json::Value =
        serde_json::from_str(json.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(body["error"]["code"], "bad_gateway", "{json}");
    for text in [&html, &json] {
        for secret in secrets {
            assert!(!text.contains(secret), "{secret} shown: {text}");
        }
    }
    assert!(share.next_line().starts_with("GET /x 502 "));
    // The detail goes to the one running share.
    let told = errors.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(
        told.contains(&format!("http://127.0.0.1:{port}")) && told.contains("refused"),
        "{told}"
    );
}

#[test]
fn shutdown_does_not_wait_for_open_tunnels() {
    let (mut server, token) = setup();
    let service = Service::start();
    let _share = Share::start(&server, service.port, &token, Some("bye"));
    let started = Instant::now();
    assert_eq!(server.terminate(), Some(0));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn a_token_without_the_share_scope_exits_4() {
    let (server, _) = setup();
    let (status, body) = server.call_basic(
        "POST",
        "/api/v1/tokens",
        "alice",
        common::PASSWORD,
        Some(&serde_json::json!({"name": "read only", "crew": "home", "scopes": ["tokens:read"]})),
    );
    assert_eq!(status, 201, "{body}");
    let token = body["secret"].as_str().unwrap();
    let (code, stderr) = share_fails(&server, token, &["80"]);
    assert_eq!(code, 4, "{stderr}");
    assert!(stderr.contains("tunnels:share"), "{stderr}");
}

#[test]
fn ctrl_c_closes_the_tunnel_and_frees_its_name() {
    let (server, token) = setup();
    let service = Service::start();
    let mut share = Share::start(&server, service.port, &token, Some("again"));
    let status = Command::new("kill")
        .args(["-INT", &share.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let _ = share.child.wait();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let out = Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "-H",
                "Host: again.localhost",
            ])
            .arg(url(&server, "/"))
            .output()
            .unwrap();
        if out.stdout == b"404" {
            break;
        }
        assert!(Instant::now() < deadline, "the tunnel stayed open");
        std::thread::sleep(Duration::from_millis(100));
    }
    let _again = Share::start(&server, service.port, &token, Some("again"));
}
