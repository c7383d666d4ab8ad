//! The HTTP relay with real clients: curl, a python WebSocket client, large
//! streamed bodies, many slow requests at once, a killed `share`, a restarted
//! server, regions, the token's preferred server and the front door's bounds.

mod common;
mod relay_support;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{berth_with_token, code_and_stderr, Server, BIN, PASSWORD};
use relay_support::streaming::{sha256_file, sha256_pattern, FixedServer, StreamingService};
use relay_support::{Cutter, Service, Share};

/// The data connections each tunnel keeps open ahead of need (`relay::PARKED_PER_TUNNEL`).
const PARKED_PER_TUNNEL: usize = 2;

/// `berth share` for a local port through the server at a URL.
impl Share {
    fn start(server_url: &str, port: u16, token: &str, extra: &[&str]) -> Share {
        let port = port.to_string();
        let mut args = vec![port.as_str(), "--host", "127.0.0.1"];
        args.extend_from_slice(extra);
        Share::spawn(server_url, token, &args, Stdio::inherit())
    }

    /// The tunnel's host, e.g. `calm-otter-1234.localhost`.
    fn host(&self) -> String {
        self.authority().split(':').next().unwrap().to_string()
    }
}

fn share_command(server_url: &str, token: &str, port: u16, extra: &[&str]) -> Command {
    let port = port.to_string();
    let mut args = vec!["share", &port, "--host", "127.0.0.1"];
    args.extend_from_slice(extra);
    berth_with_token(server_url, token, &args)
}

/// Run `berth share` expecting it to end; its exit code and stderr.
fn share_fails(server_url: &str, token: &str, port: u16, extra: &[&str]) -> (i32, String) {
    code_and_stderr(&mut share_command(server_url, token, port, extra))
}

/// curl through the tunnel at `host`; stdout as text.
fn curl(server: &Server, host: &str, path: &str, args: &[&str]) -> String {
    curl_at(&server.url, host, path, args)
}

/// `curl` for the server at `url` (shareable between threads, unlike `Server`).
fn curl_at(url: &str, host: &str, path: &str, args: &[&str]) -> String {
    let out = Command::new("curl")
        .args(["-s", "-S", "--max-time", "60", "-H"])
        .arg(format!("Host: {host}"))
        .args(args)
        .arg(format!("{url}{path}"))
        .output()
        .expect("run curl");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A server with an owner `alice` in crew `home`, and a token of hers.
fn setup() -> (Server, String) {
    let server = Server::start();
    server.create_user("alice", "home", "owner");
    let token = server.token_for("alice", "home", "share");
    (server, token)
}

/// A token of alice's with extra fields (region, server).
fn token_with(server: &Server, fields: serde_json::Value) -> String {
    let mut body = serde_json::json!({"name": format!("t{}", rand_suffix()), "crew": "home"});
    for (k, v) in fields.as_object().unwrap() {
        body[k] = v.clone();
    }
    let (status, reply) =
        server.call_basic("POST", "/api/v1/tokens", "alice", PASSWORD, Some(&body));
    assert_eq!(status, 201, "{reply}");
    reply["secret"].as_str().unwrap().to_string()
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// Wait until `done` holds, checking every 50 ms, failing after 20 s.
fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn data_connections_are_opened_ahead_of_the_first_request() {
    let (server, token) = setup();
    let service = Service::start();
    // Through a forwarder that counts connections: the share's /me, its
    // control connection and the data connections it opens ahead of need.
    let cutter = Cutter::start(&server.addr);
    let share = Share::start(&cutter.url, service.port, &token, &[]);
    let before = 2 + PARKED_PER_TUNNEL;
    eventually("the pre-opened data connections", || {
        cutter.connections() >= before
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(cutter.connections(), before, "no more than the pool's size");
    // A tunnel not yet used holds no connection to the local service.
    let accepted = || service.accepted.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(accepted(), 0);
    let text = curl(&server, &share.host(), "/first", &[]);
    assert!(text.starts_with("path=/first "), "{text}");
    // The public connection took a parked one; one more is opened to refill.
    eventually("the refill", || cutter.connections() > before);
    assert_eq!(
        service
            .connections
            .load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    // In use, the parked connection that refilled the pool dialled the local
    // service as it parked, and the next new connection's request goes over it.
    eventually("the local connection dialled ahead", || accepted() >= 2);
    let dialled = accepted();
    let text = curl(&server, &share.host(), "/second", &[]);
    let place: usize = text
        .rsplit_once("accepted=")
        .and_then(|(_, n)| n.trim().parse().ok())
        .unwrap_or(usize::MAX);
    assert!(place <= dialled, "{text}");
    // Fresh public connections one after another all get answers.
    for i in 0..10 {
        let text = curl(&server, &share.host(), &format!("/n{i}"), &[]);
        assert!(text.starts_with(&format!("path=/n{i} ")), "{text}");
    }
}

/// A service that closes a connection on which no request came within 200 ms
/// (as servers time out silent connections) and answers `ok` otherwise.
fn impatient_service() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            std::thread::spawn(move || {
                stream
                    .set_read_timeout(Some(Duration::from_millis(200)))
                    .unwrap();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                while reader.read_line(&mut line).unwrap_or(0) > 0 && line != "\r\n" {
                    line.clear();
                }
                if line == "\r\n" {
                    let _ = (&stream).write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                    );
                }
            });
        }
    });
    port
}

#[test]
fn a_local_connection_dialled_ahead_that_the_service_closed_is_not_used() {
    let (server, token) = setup();
    let share = Share::start(&server.url, impatient_service(), &token, &[]);
    // In use, the tunnel's parked connections dial the service ahead; then
    // longer than the service waits for a request on them.
    assert_eq!(curl(&server, &share.host(), "/", &[]), "ok");
    std::thread::sleep(Duration::from_millis(800));
    for _ in 0..3 {
        let text = curl(&server, &share.host(), "/", &[]);
        assert_eq!(text, "ok");
    }
}

/// A service that serves one connection at a time, as `php -S` or a single
/// sync worker does: it reads a request, answers `ok`, closes, then accepts
/// the next connection.
fn one_at_a_time_service() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap_or(0) > 0 && line != "\r\n" {
                line.clear();
            }
            let _ = (&stream)
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
        }
    });
    port
}

#[test]
fn a_service_that_serves_one_connection_at_a_time_is_not_stalled_by_dialling_ahead() {
    let (server, token) = setup();
    let share = Share::start(&server.url, one_at_a_time_service(), &token, &[]);
    // Without the bound, a request waits until the service's connection
    // dialled ahead (which it is blocked reading) is dropped, 10 s later.
    let quick = ["--max-time", "5"];
    assert_eq!(curl(&server, &share.host(), "/", &quick), "ok");
    for round in 0..3 {
        let host = share.host();
        let pair: Vec<String> = std::thread::scope(|scope| {
            let runs: Vec<_> = (0..2)
                .map(|i| {
                    let (url, host, quick) = (&server.url, &host, &quick);
                    scope.spawn(move || curl_at(url, host, &format!("/{round}/{i}"), quick))
                })
                .collect();
            runs.into_iter().map(|run| run.join().unwrap()).collect()
        });
        assert_eq!(pair, ["ok", "ok"], "round {round}");
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(
            curl(&server, &host, "/after", &quick),
            "ok",
            "round {round}"
        );
    }
}

#[test]
fn a_python_websocket_client_talks_to_a_python_server_through_the_tunnel() {
    let (server, token) = setup();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/relay_support/ws_echo.py"
    );
    let mut echo = Command::new("python3")
        .args([script, "server"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 with the websockets package");
    let mut first = String::new();
    BufReader::new(echo.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let port: u16 = first.trim().parse().expect("the echo server's port");
    let share = Share::start(&server.url, port, &token, &[]);
    let host = format!(
        "{}:{}",
        share.host(),
        server.addr.rsplit(':').next().unwrap()
    );
    let port = server.addr.rsplit(':').next().unwrap();
    let out = Command::new("python3")
        .args([script, "client", port, &host])
        .output()
        .unwrap();
    let _ = echo.kill();
    let _ = echo.wait();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "ok",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_64_mib_download_and_a_24_mib_upload_arrive_intact() {
    let (server, token) = setup();
    let service = StreamingService::start();
    let share = Share::start(&server.url, service.port, &token, &[]);
    let dir = tempfile::tempdir().unwrap();
    let down = dir.path().join("down");
    let size = 64 * 1024 * 1024;
    let status = curl(
        &server,
        &share.host(),
        &format!("/download/{size}"),
        &["-o", down.to_str().unwrap(), "-w", "%{http_code}"],
    );
    assert_eq!(status, "200");
    assert_eq!(std::fs::metadata(&down).unwrap().len(), size);
    assert_eq!(sha256_file(&down), sha256_pattern(size));

    let up = dir.path().join("up");
    let up_size = 24 * 1024 * 1024;
    let body: Vec<u8> = (0..up_size).map(|i| (i * 7 % 253) as u8).collect();
    std::fs::write(&up, &body).unwrap();
    let data = format!("@{}", up.display());
    let answer = curl(&server, &share.host(), "/upload", &["--data-binary", &data]);
    assert_eq!(answer, format!("{up_size} {}", sha256_file(&up)));
    // Chunked too (curl streams the file with Transfer-Encoding: chunked).
    let answer = curl(
        &server,
        &share.host(),
        "/upload",
        &["-T", up.to_str().unwrap(), "-X", "POST"],
    );
    assert_eq!(answer, format!("{up_size} {}", sha256_file(&up)));
    // The share client streamed: its peak memory stayed far below the bodies.
    let status = std::fs::read_to_string(format!("/proc/{}/status", share.child.id())).unwrap();
    let peak_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    assert!(peak_kib < 20 * 1024, "share's peak RSS {peak_kib} KiB");
}

#[test]
fn one_hundred_fifty_slow_requests_at_once_are_all_answered() {
    // All 150 come from 127.0.0.1: the cap per client address is raised.
    let server = Server::start_with_env(&[("BERTH_MAX_CONNECTIONS_PER_IP", "200")]);
    server.create_user("alice", "home", "owner");
    let token = server.token_for("alice", "home", "share");
    let service = StreamingService::start();
    let share = Share::start(&server.url, service.port, &token, &[]);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("urls");
    let lines: String = (0..150)
        .map(|_| format!("url = \"{}/slow\"\noutput = \"/dev/null\"\n", server.url))
        .collect();
    std::fs::write(&config, lines).unwrap();
    let out = Command::new("curl")
        .args([
            "-s",
            "--parallel",
            "--parallel-immediate",
            "--parallel-max",
            "150",
            "--max-time",
            "60",
            "-H",
        ])
        .arg(format!("Host: {}", share.host()))
        .args(["-w", "%{http_code}\\n", "-K"])
        .arg(&config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let codes: Vec<&str> = text.lines().collect();
    assert_eq!(codes.len(), 150, "{text}");
    assert!(codes.iter().all(|c| *c == "200"), "{text}");
}

#[test]
fn after_kill_9_of_share_its_subdomain_can_be_shared_again() {
    let (server, token) = setup();
    let service = Service::start();
    let mut first = Share::start(
        &server.url,
        service.port,
        &token,
        &["--subdomain", "phoenix"],
    );
    let _ = first.child.kill(); // SIGKILL: no goodbye on the control connection.
    let _ = first.child.wait();
    let started = Instant::now();
    // The server releases the name once the dead control connection reads EOF.
    let again = loop {
        let mut child = share_command(
            &server.url,
            &token,
            service.port,
            &["--subdomain", "phoenix"],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        if line.starts_with("Forwarding ") {
            break child;
        }
        let _ = child.wait();
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the name stayed taken"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut again = again;
    let text = curl(&server, "phoenix.localhost", "/back", &[]);
    let _ = again.kill();
    let _ = again.wait();
    assert!(text.starts_with("path=/back "), "{text}");
}

#[test]
fn after_a_server_restart_share_reconnects_with_its_subdomain() {
    let (mut server, token) = setup();
    let service = Service::start();
    let _share = Share::start(
        &server.url,
        service.port,
        &token,
        &["--subdomain", "sticky"],
    );
    assert!(curl(&server, "sticky.localhost", "/one", &[]).starts_with("path=/one "));
    server.kill9();
    let _restarted = FixedServer::start(BIN, &server.data, &server.addr);
    eventually("share reconnected after the restart", || {
        curl(&server, "sticky.localhost", "/two", &[]).starts_with("path=/two ")
    });
}

#[test]
fn a_region_the_server_does_not_serve_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_in(&dir.path().join("data"), &["--region", "eu"]);
    server.create_user("alice", "home", "owner");
    let token = server.token_for("alice", "home", "plain");
    let service = Service::start();

    let (code, stderr) = share_fails(&server.url, &token, service.port, &["--region", "us"]);
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("serves region eu only"), "{stderr}");

    let us_token = token_with(&server, serde_json::json!({"region": "us"}));
    let (code, stderr) = share_fails(&server.url, &us_token, service.port, &[]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("region eu") && stderr.contains("us"),
        "{stderr}"
    );

    // The API's answer: 400 region_not_served naming the served region.
    let (status, head, body) = server.raw(&format!(
        "GET /api/v1/tunnels/connect?region=us HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\nConnection: Upgrade\r\nUpgrade: berth-relay/1\r\n\r\n",
        server.addr
    ));
    assert_eq!(status, 400, "{head}");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["error"]["code"], "region_not_served");
    assert!(body["error"]["message"].as_str().unwrap().contains("eu"));

    // The served region, asked for or preferred by the token, is fine.
    let eu_token = token_with(&server, serde_json::json!({"region": "eu"}));
    let share = Share::start(&server.url, service.port, &eu_token, &["--region", "eu"]);
    assert!(curl(&server, &share.host(), "/eu", &[]).starts_with("path=/eu "));
}

#[test]
fn a_server_with_a_bad_region_name_is_a_usage_error() {
    let out = Command::new(BIN)
        .args(["server", "--listen", "127.0.0.1:0", "--region", "EU West"])
        .env(
            "BERTH_DATA",
            std::env::temp_dir().join("berth-never-created"),
        )
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--region"), "{stderr}");
}

#[test]
fn share_switches_to_the_tokens_preferred_server() {
    let (server, _) = setup();
    let service = Service::start();
    let token = token_with(&server, serde_json::json!({"server": server.url}));
    // Pointed at a forwarder; the token prefers the server itself, plain http
    // on another port, which share follows only when told.
    let cutter = Cutter::start(&server.addr);
    let mut child = share_command(&cutter.url, &token, service.port, &["--follow-server"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (_lines, url) = relay_support::share_output(&mut child);
    let mut stderr = String::new();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    err.read_line(&mut stderr).unwrap();
    assert!(
        stderr.contains(&format!("prefers the server {}", server.url)),
        "{stderr}"
    );
    let host = url.split("://").nth(1).unwrap().split(':').next().unwrap();
    assert!(curl(&server, host, "/switched", &[]).starts_with("path=/switched "));
    // Only the look-up of the token went through the forwarder.
    assert_eq!(cutter.connections(), 1);
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn idle_tunnels_count_against_their_own_bound_not_the_connections() {
    let server =
        Server::start_with_env(&[("BERTH_MAX_CONNECTIONS", "4"), ("BERTH_MAX_TUNNELS", "6")]);
    server.create_user("alice", "home", "owner");
    let token = server.token_for("alice", "home", "many");
    let service = Service::start();
    // More tunnels than the connection bound, each with its parked connections.
    let shares: Vec<Share> = (0..6)
        .map(|_| Share::start(&server.url, service.port, &token, &[]))
        .collect();
    for share in &shares {
        let text = curl(&server, &share.host(), "/idle", &[]);
        assert!(text.starts_with("path=/idle "), "{text}");
    }
    let (status, _) = server.call("GET", "/api/v1/me", Some(&token), None);
    assert_eq!(status, 200);
    // One tunnel past MAX_TUNNELS is refused with one sentence.
    let (code, stderr) = share_fails(&server.url, &token, service.port, &[]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("too many open tunnels"), "{stderr}");
}

/// A server that answers `/api/v1/me` with 500 and each upgrade in turn with
/// the next of `answers` (then closes it): a fake, or a hostile one.
fn fake_server(answers: Vec<Vec<u8>>) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let mut answers = answers.into_iter();
        for mut stream in listener.incoming().map_while(Result::ok) {
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let Some(head) = relay_support::read_head(&mut reader) else {
                continue;
            };
            let answer = if head[0].contains("/api/v1/me") {
                b"HTTP/1.1 500 Oops\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec()
            } else {
                match answers.next() {
                    Some(answer) => answer,
                    None => return,
                }
            };
            let _ = stream.write_all(&answer);
            std::thread::sleep(Duration::from_millis(200));
        }
    });
    url
}

#[test]
fn a_hostile_server_s_words_reach_the_terminal_with_controls_escaped() {
    let ready = |url: &str| {
        let frame = serde_json::json!({"ready": {"tunnel_id": "t", "url": url}});
        format!("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: berth-relay/1\r\n\r\n{frame}\n")
            .into_bytes()
    };
    let refusal =
        serde_json::json!({"error": {"code": "x", "message": "busy\u{1b}[2J now"}}).to_string();
    let answers = vec![
        ready("http://a\u{1b}]0;owned\u{7}.localhost:1"),
        format!(
            "HTTP/1.1 500 Oops\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{refusal}",
            refusal.len()
        )
        .into_bytes(),
        ready("http://b\u{1b}[31m.localhost:1"),
    ];
    let server = fake_server(answers);
    // A token of the right shape (its checksum holds); the fake takes any.
    let token = "1|berth_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa4B35tI";
    let mut share = berth_with_token(&server, token, &["share", "9"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = share.stderr.take().unwrap();
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut stdout = BufReader::new(share.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    let mut seen = Vec::new();
    while let Ok(line) = lines.recv_timeout(Duration::from_secs(20)) {
        let done = line.starts_with("Reconnected");
        seen.push(line);
        if done {
            break;
        }
    }
    let _ = share.kill();
    let _ = share.wait();
    assert!(
        first.contains("http://a\\x1b]0;owned\\x07.localhost:1"),
        "{first:?}"
    );
    assert!(
        seen.iter().any(|l| l.contains("usy\\x1b[2J now")),
        "{seen:?}"
    );
    assert!(
        seen.iter().any(|l| l.contains("http://b\\x1b[31m")),
        "{seen:?}"
    );
    assert!(!seen.concat().contains('\u{1b}'), "{seen:?}");
}

#[test]
fn a_server_that_answers_garbage_or_a_huge_head_is_one_clear_sentence() {
    let huge = [
        b"HTTP/1.1 101 Switching Protocols\r\nX-A: ".to_vec(),
        vec![b'a'; 1_000_000],
        b"\r\n\r\n".to_vec(),
    ]
    .concat();
    let cases = [
        (
            b"\x00\xff garbage\r\n\r\n".to_vec(),
            "something other than an HTTP/1.1 response",
        ),
        (
            b"HTTP/1.1 99999999999 X\r\n\r\n".to_vec(),
            "something other than an HTTP/1.1 response",
        ),
        (
            b"HTTP/1.1 403 No\r\nContent-Length: 99999999999999999999999\r\n\r\n".to_vec(),
            "something other than an HTTP/1.1 response",
        ),
        (huge, "a response head larger than 32 KiB"),
    ];
    let token = "1|berth_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa4B35tI";
    for (answer, said) in cases {
        let server = fake_server(vec![answer]);
        let (code, stderr) =
            code_and_stderr(&mut berth_with_token(&server, token, &["share", "9"]));
        assert_eq!(code, 1, "{stderr}");
        assert_eq!(
            stderr,
            format!("error: the server {server} answered with {said}; is it a berth server?\n")
        );
    }
}

/// Open descriptors of a process (Linux).
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

#[test]
fn visitors_that_vanish_mid_download_leave_share_no_sockets() {
    let (server, token) = setup();
    let service = Service::start();
    let share = Share::start(&server.url, service.port, &token, &[]);
    let host = share.host();
    let pid = share.child.id();
    std::thread::sleep(Duration::from_millis(500));
    let before = open_fds(pid);
    for _ in 0..30 {
        let mut visitor = std::net::TcpStream::connect(&server.addr).unwrap();
        let request = format!("GET /big HTTP/1.1\r\nHost: {host}\r\n\r\n");
        visitor.write_all(request.as_bytes()).unwrap();
        let mut some = [0u8; 1024];
        std::io::Read::read(&mut visitor, &mut some).unwrap();
        // Gone with the body unread: a reset, not a close.
        drop(visitor);
    }
    let settled = Instant::now();
    while open_fds(pid) > before + 4 && settled.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        open_fds(pid) <= before + 4,
        "{} open, {before} before",
        open_fds(pid)
    );
}
