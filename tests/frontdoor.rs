//! The front door over raw sockets: head limits and timeouts, the smuggling rules,
//! keep-alive, request bodies (chunked, 100-continue, too large, cut off), what
//! reaches the API, and the connection bound.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{Server, PASSWORD};
use serde_json::{json, Value};

/// Longest any test waits for an answer before calling it a hang.
const PATIENCE: Duration = Duration::from_secs(30);

/// One client connection that can read several responses in turn.
struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

/// One response: status, head (lowercased names kept as sent) and body.
#[derive(Debug)]
struct Response {
    status: u16,
    head: String,
    body: String,
}

impl Response {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    fn code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }
}

impl Client {
    fn connect(server: &Server) -> Client {
        let stream = TcpStream::connect(&server.addr).expect("connect");
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        Client {
            reader: BufReader::new(stream.try_clone().unwrap()),
            writer: stream,
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).expect("write");
    }

    /// Read one whole response; None if the server closed first.
    fn response(&mut self) -> Option<Response> {
        let mut head = String::new();
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line).ok()? == 0 {
                return None;
            }
            if line == "\r\n" {
                break;
            }
            head.push_str(&line);
        }
        let status = head.split_whitespace().nth(1)?.parse().ok()?;
        let mut response = Response {
            status,
            head,
            body: String::new(),
        };
        if status == 100 {
            return Some(response);
        }
        let mut body = Vec::new();
        if response
            .header("transfer-encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
        {
            loop {
                let mut line = String::new();
                self.reader.read_line(&mut line).ok()?;
                let size = usize::from_str_radix(line.trim(), 16).ok()?;
                let mut chunk = vec![0; size + 2];
                self.reader.read_exact(&mut chunk).ok()?;
                if size == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..size]);
            }
        } else if let Some(n) = response.header("content-length") {
            body.resize(n.parse().ok()?, 0);
            self.reader.read_exact(&mut body).ok()?;
        } else {
            self.reader.read_to_end(&mut body).ok()?;
        }
        response.body = String::from_utf8_lossy(&body).into_owned();
        Some(response)
    }

    /// Whether the server has closed the connection (reads EOF or a reset).
    fn is_closed(&mut self) -> bool {
        let mut rest = Vec::new();
        match self.reader.read_to_end(&mut rest) {
            Ok(_) => true,
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        }
    }
}

fn get(server: &Server, path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: {}\r\n\r\n", server.addr)
}

fn basic() -> String {
    use base64ct::{Base64, Encoding};
    format!(
        "Basic {}",
        Base64::encode_string(format!("alice:{PASSWORD}").as_bytes())
    )
}

/// The server still answers a plain request on a new connection.
fn assert_alive(server: &Server) {
    let mut c = Client::connect(server);
    c.send(get(server, "/healthz").as_bytes());
    let r = c.response().expect("a response");
    assert_eq!((r.status, r.body.as_str()), (200, "ok\n"));
}

fn alice() -> Server {
    let server = Server::start();
    server.create_user("alice", "home", "owner");
    server
}

#[test]
fn a_head_over_32_kib_gets_431_and_close() {
    let server = Server::start();
    let mut c = Client::connect(&server);
    let big = "a".repeat(33 * 1024);
    c.send(
        format!(
            "GET /healthz HTTP/1.1\r\nHost: {}\r\nX-Big: {big}\r\n\r\n",
            server.addr
        )
        .as_bytes(),
    );
    let r = c.response().expect("431");
    assert_eq!((r.status, r.code().as_str()), (431, "header_too_large"));
    assert!(c.is_closed());
    // Many small header lines are refused the same way.
    let mut c = Client::connect(&server);
    let mut head = format!("GET /healthz HTTP/1.1\r\nHost: {}\r\n", server.addr);
    for i in 0..200 {
        head.push_str(&format!("X-{i}: 1\r\n"));
    }
    c.send(format!("{head}\r\n").as_bytes());
    assert_eq!(c.response().expect("431").status, 431);
    // Just under the limit is fine.
    let mut c = Client::connect(&server);
    let fits = "a".repeat(30 * 1024);
    c.send(
        format!(
            "GET /healthz HTTP/1.1\r\nHost: {}\r\nX-Big: {fits}\r\n\r\n",
            server.addr
        )
        .as_bytes(),
    );
    assert_eq!(c.response().expect("200").status, 200);
}

#[test]
fn a_head_that_stalls_gets_408_within_the_head_timeout() {
    let server = Server::start();
    let mut c = Client::connect(&server);
    let started = Instant::now();
    c.send(format!("GET /healthz HTTP/1.1\r\nHost: {}\r\nX-Slow: ", server.addr).as_bytes());
    let r = c.response().expect("408 before the connection closes");
    assert_eq!((r.status, r.code().as_str()), (408, "timeout"));
    assert!(c.is_closed());
    assert!(started.elapsed() < PATIENCE);
    assert_alive(&server);
}

#[test]
fn a_connection_that_sends_nothing_is_closed_like_a_slow_head() {
    let server = Server::start();
    let mut c = Client::connect(&server);
    let started = Instant::now();
    assert!(c.is_closed(), "the server hangs up on a silent client");
    // Well before the 60 s keep-alive idle time: a silent client holds a slot no longer than a slow head.
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn smuggling_shapes_get_400_and_the_connection_closed() {
    let server = Server::start();
    let host = &server.addr;
    let cases = [
        format!("POST /api/v1/tokens HTTP/1.1\r\nHost: {host}\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        format!("POST /api/v1/tokens HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked,\r\n\r\n0\r\n\r\n"),
        format!("POST /api/v1/tokens HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n"),
        format!("POST /api/v1/tokens HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n"),
        format!("POST /api/v1/tokens HTTP/1.1\r\nHost: {host}\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{{}}"),
        format!("POST /api/v1/tokens HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0x2\r\n\r\n{{}}"),
        format!("GET /healthz HTTP/1.1\r\nHost: {host}\r\nX-A: 1\r\n folded\r\n\r\n"),
        format!("GET /healthz HTTP/1.1\r\nHost : {host}\r\n\r\n"),
        format!("GET /healthz HTTP/1.1\nHost: {host}\n\n"),
        format!("GET /healthz HTTP/1.1\r\nHost: {host}\nX-A: 1\r\n\r\n"),
        format!("GET /healthz HTTP/1.1\r\nHost: {host}\r\nX-A: a\0b\r\n\r\n"),
        "GET /healthz HTTP/1.1\r\n\r\n".to_string(),
        format!("GET /healthz HTTP/1.1\r\nHost: {host}\r\nHost: {host}\r\n\r\n"),
        format!("GET http://{host}/healthz HTTP/1.1\r\nHost: {host}\r\n\r\n"),
        format!("GET /healthz HTTP/2.0\r\nHost: {host}\r\n\r\n"),
    ];
    for case in &cases {
        let mut c = Client::connect(&server);
        // A second, valid request rides behind: it must never be answered.
        c.send(format!("{case}{}", get(&server, "/healthz")).as_bytes());
        let r = c
            .response()
            .unwrap_or_else(|| panic!("no answer to {case:?}"));
        assert_eq!(
            (r.status, r.code().as_str()),
            (400, "bad_request"),
            "{case:?}"
        );
        assert_eq!(r.header("connection").as_deref(), Some("close"), "{case:?}");
        assert!(c.is_closed(), "{case:?}");
    }
    assert_alive(&server);
}

#[test]
fn bad_chunk_framing_closes_the_connection_without_reaching_the_api_twice() {
    let server = alice();
    let mut c = Client::connect(&server);
    c.send(format!("POST /api/v1/tokens HTTP/1.1\r\nHost: {}\r\nAuthorization: {}\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{{}}\r\n0\r\n\r\n", server.addr, basic()).as_bytes());
    if let Some(r) = c.response() {
        assert_eq!(r.status, 400, "{r:?}");
    }
    assert!(c.is_closed());
    assert_alive(&server);
}

#[test]
fn keep_alive_serves_several_requests_on_one_connection() {
    let server = alice();
    let token = server.token_for("alice", "home", "laptop");
    let mut c = Client::connect(&server);
    c.send(get(&server, "/healthz").as_bytes());
    assert_eq!(c.response().unwrap().status, 200);
    c.send(
        format!(
            "GET /api/v1/me HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\n\r\n",
            server.addr
        )
        .as_bytes(),
    );
    let r = c.response().unwrap();
    assert_eq!(
        (r.status, &r.json()["user"]["username"]),
        (200, &json!("alice"))
    );
    // Pipelined: three at once, answered in order.
    let body = json!({"name": "pipelined"}).to_string();
    c.send(format!(
        "{}POST /api/v1/tokens HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\nContent-Length: {}\r\n\r\n{body}{}",
        get(&server, "/nope"),
        server.addr,
        body.len(),
        get(&server, "/healthz"),
    ).as_bytes());
    assert_eq!(c.response().unwrap().status, 404);
    assert_eq!(c.response().unwrap().status, 201);
    assert_eq!(c.response().unwrap().status, 200);
    // An error from the API keeps the connection too.
    c.send(format!("GET /api/v1/me HTTP/1.1\r\nHost: {}\r\n\r\n", server.addr).as_bytes());
    assert_eq!(c.response().unwrap().status, 401);
    c.send(
        format!(
            "GET /healthz HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            server.addr
        )
        .as_bytes(),
    );
    let r = c.response().unwrap();
    assert_eq!(r.header("connection").as_deref(), Some("close"));
    assert!(c.is_closed());
    // HTTP/1.0 closes unless asked otherwise.
    let mut c = Client::connect(&server);
    c.send(format!("GET /healthz HTTP/1.0\r\nHost: {}\r\n\r\n", server.addr).as_bytes());
    assert_eq!(c.response().unwrap().status, 200);
    assert!(c.is_closed());
}

#[test]
fn a_chunked_body_reaches_the_api() {
    let server = alice();
    let mut c = Client::connect(&server);
    let body = json!({"name": "chunked"}).to_string();
    let (a, b) = body.split_at(5);
    c.send(format!(
        "POST /api/v1/tokens HTTP/1.1\r\nHost: {}\r\nAuthorization: {}\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{a}\r\n{:x};ext=1\r\n{b}\r\n0\r\n\r\n",
        server.addr, basic(), a.len(), b.len()
    ).as_bytes());
    let r = c.response().unwrap();
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(r.json()["token"]["name"], "chunked");
    // The connection goes on.
    c.send(get(&server, "/healthz").as_bytes());
    assert_eq!(c.response().unwrap().status, 200);
}

#[test]
fn a_body_on_a_get_does_not_confuse_the_next_request() {
    let server = alice();
    let token = server.token_for("alice", "home", "laptop");
    let mut c = Client::connect(&server);
    // A chunked body whose chunk extension and data look like a request of their own.
    let inner = format!("X-Forwarded-For: 6.6.6.6\r\nAuthorization: Bearer {token}\r\n\r\n");
    c.send(format!(
        "GET /healthz HTTP/1.1\r\nHost: {}\r\nTransfer-Encoding: chunked\r\n\r\n{:x};GET /api/v1/me HTTP/1.1\r\n{inner}\r\n0\r\n\r\n",
        server.addr,
        inner.len()
    ).as_bytes());
    assert_eq!(c.response().unwrap().status, 200);
    c.send(get(&server, "/healthz").as_bytes());
    let r = c.response().expect("the second request is answered");
    assert_eq!(r.status, 200, "{r:?}");
    // A Content-Length body on a GET, larger than tiny_http reads up front.
    let pad = "x".repeat(5000);
    c.send(format!("GET /api/v1/me HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\nContent-Length: {}\r\n\r\n{pad}", server.addr, pad.len()).as_bytes());
    assert_eq!(c.response().unwrap().status, 200);
    c.send(get(&server, "/healthz").as_bytes());
    assert_eq!(c.response().unwrap().status, 200);
}

#[test]
fn expect_100_continue_works_with_curl() {
    let server = alice();
    let body = json!({"name": "curl continue"}).to_string();
    let out = std::process::Command::new("curl")
        .args(["-s", "-i", "-u", &format!("alice:{PASSWORD}")])
        .args([
            "-H",
            "Expect: 100-continue",
            "-H",
            "Content-Type: application/json",
        ])
        .args(["--data-binary", &body])
        .arg(format!("{}/api/v1/tokens", server.url))
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("HTTP/1.1 100 Continue\r\n"), "{text}");
    assert!(text.contains("HTTP/1.1 201 Created"), "{text}");
    assert!(text.contains("curl continue"), "{text}");
    // A large body too, which curl really holds back until the 100.
    let big = json!({"name": "big", "region": "x".repeat(2000)}).to_string();
    let out = std::process::Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-u",
            &format!("alice:{PASSWORD}"),
        ])
        .args(["-H", "Expect: 100-continue", "--data-binary", &big])
        .arg(format!("{}/api/v1/tokens", server.url))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "400",
        "region too long, but answered"
    );
    // Any other expectation is refused.
    let mut c = Client::connect(&server);
    c.send(format!("POST /api/v1/tokens HTTP/1.1\r\nHost: {}\r\nExpect: 200-ok\r\nContent-Length: 2\r\n\r\n{{}}", server.addr).as_bytes());
    assert_eq!(c.response().unwrap().status, 417);
}

#[test]
fn a_body_over_64_kib_gets_413() {
    let server = alice();
    let token = server.token_for("alice", "home", "laptop");
    let big = json!({"name": "x".repeat(100 * 1024)}).to_string();
    let mut c = Client::connect(&server);
    c.send(format!("POST /api/v1/tokens HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\nContent-Length: {}\r\n\r\n{big}", server.addr, big.len()).as_bytes());
    let r = c.response().expect("an answer, not a dropped connection");
    assert_eq!(
        (r.status, r.code().as_str()),
        (413, "payload_too_large"),
        "{r:?}"
    );
    // A body announced as huge is refused without waiting for it.
    let mut c = Client::connect(&server);
    c.send(format!("POST /api/v1/tokens HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\nContent-Length: 1000000000000\r\n\r\n{{", server.addr).as_bytes());
    let r = c.response().expect("413 at once");
    assert_eq!(r.status, 413);
    assert!(c.is_closed());
    // Chunked, too.
    let mut c = Client::connect(&server);
    c.send(format!("POST /api/v1/tokens HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\nTransfer-Encoding: chunked\r\n\r\n", server.addr).as_bytes());
    let chunk = format!("{:x}\r\n{}\r\n", 16 * 1024, "y".repeat(16 * 1024));
    for _ in 0..5 {
        c.send(chunk.as_bytes());
    }
    let r = c.response().expect("413 for a chunked body");
    assert_eq!(r.status, 413);
    assert_alive(&server);
}

#[test]
fn requests_cut_off_mid_body_do_not_hurt_the_server() {
    let server = alice();
    let token = server.token_for("alice", "home", "laptop");
    for i in 0..30 {
        let mut c = Client::connect(&server);
        let head = match i % 3 {
            0 => format!("POST /api/v1/tokens HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\nContent-Length: 1000\r\n\r\n{{\"name\": \"cut", server.addr),
            1 => format!("POST /api/v1/tokens HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\nTransfer-Encoding: chunked\r\n\r\n100\r\n{{\"na", server.addr),
            _ => format!("POST /api/v1/tokens HTTP/1.1\r\nHost: {}\r\nAuthor", server.addr),
        };
        c.send(head.as_bytes());
        drop(c);
    }
    assert_alive(&server);
    let (status, list) = server.call("GET", "/api/v1/tokens", Some(&token), None);
    assert_eq!(status, 200);
    assert_eq!(
        list["tokens"].as_array().unwrap().len(),
        1,
        "nothing half-made: {list}"
    );
    assert_eq!(
        server
            .call(
                "POST",
                "/api/v1/tokens",
                Some(&token),
                Some(&json!({"name": "after"}))
            )
            .0,
        201
    );
}

#[test]
fn slow_bodies_do_not_tie_up_the_api() {
    let server = alice();
    let token = server.token_for("alice", "home", "laptop");
    // More stalled bodies than the API has workers; each larger than tiny_http reads up front.
    let stalled: Vec<Client> = (0..12)
        .map(|_| {
            let mut c = Client::connect(&server);
            c.send(format!("POST /api/v1/tokens HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\nContent-Length: 5000\r\n\r\n{{\"name\":", server.addr).as_bytes());
            c
        })
        .collect();
    // Before the fix this waited on a worker until the client gave up.
    let (status, _) = server.call("GET", "/api/v1/me", Some(&token), None);
    assert_eq!(status, 200, "a stalled upload held the API");
    // Each stalled upload is refused once its time is up.
    for mut c in stalled {
        let r = c.response().expect("408");
        assert_eq!((r.status, r.code().as_str()), (408, "timeout"));
    }
    let (_, list) = server.call("GET", "/api/v1/tokens", Some(&token), None);
    assert_eq!(list["tokens"].as_array().unwrap().len(), 1);
}

#[test]
fn upgrade_headers_on_an_api_call_do_not_hang_it() {
    let server = alice();
    let token = server.token_for("alice", "home", "laptop");
    let mut c = Client::connect(&server);
    let body = json!({"name": "upgraded"}).to_string();
    c.send(format!("POST /api/v1/tokens HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nContent-Length: {}\r\n\r\n{body}", server.addr, body.len()).as_bytes());
    // Before the fix the API read the socket as the body and the answer never came.
    let r = c.response().expect("an answer");
    assert_eq!(r.status, 201, "{r:?}");
    c.send(get(&server, "/healthz").as_bytes());
    assert_eq!(c.response().map(|r| r.status), Some(200));
}

#[test]
fn headers_the_api_cannot_read_get_400_not_502() {
    let server = alice();
    let mut c = Client::connect(&server);
    c.send(
        format!(
            "GET /api/v1/me HTTP/1.1\r\nHost: {}\r\nX-Name: caf\u{e9}\r\n\r\n",
            server.addr
        )
        .as_bytes(),
    );
    let r = c.response().unwrap();
    assert_eq!((r.status, r.code().as_str()), (400, "bad_request"), "{r:?}");
    let mut c = Client::connect(&server);
    c.send(
        format!(
            "GET /api/v1/caf\u{e9} HTTP/1.1\r\nHost: {}\r\n\r\n",
            server.addr
        )
        .as_bytes(),
    );
    let r = c.response().unwrap();
    assert!(matches!(r.status, 400 | 404), "{r:?}");
    assert_alive(&server);
}

#[test]
fn client_forwarding_headers_are_replaced() {
    let server = alice();
    let token = server.token_for("alice", "home", "laptop");
    let mut c = Client::connect(&server);
    c.send(format!(
        "GET /api/v1/me HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\nx-forwarded-for: 6.6.6.6\r\nX-FORWARDED-FOR: 7.7.7.7, 8.8.8.8\r\nForwarded: for=9.9.9.9\r\n\r\n",
        server.addr
    ).as_bytes());
    assert_eq!(c.response().unwrap().status, 200);
    let ip: String = server
        .db()
        .query_row("SELECT last_used_ip FROM tokens", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ip, "127.0.0.1");
}

#[test]
fn beyond_the_connection_bound_new_connections_get_503() {
    // The cap per client address lifted: every connection here is 127.0.0.1's.
    let server = Server::start_with_env(&[
        ("BERTH_MAX_CONNECTIONS", "2"),
        ("BERTH_MAX_CONNECTIONS_PER_IP", "100"),
    ]);
    // Two connections hold the slots, mid-way through a head.
    let mut held: Vec<Client> = (0..2)
        .map(|_| {
            let mut c = Client::connect(&server);
            c.send(b"GET /healthz HTTP/1.1\r\n");
            c
        })
        .collect();
    // Beyond the bound, the relay's reserve (8 here) takes connections up to
    // their first head, and only relay paths are served from it.
    let mut reserve: Vec<Client> = (0..8).map(|_| Client::connect(&server)).collect();
    let mut extra = Client::connect(&server);
    let r = extra.response().expect("503 without sending anything");
    assert_eq!((r.status, r.code().as_str()), (503, "unavailable"));
    assert!(extra.is_closed());
    reserve[0].send(get(&server, "/healthz").as_bytes());
    let r = reserve[0]
        .response()
        .expect("503 for an API request in the reserve");
    assert_eq!((r.status, r.code().as_str()), (503, "unavailable"));
    drop(reserve);
    // The held ones are still served.
    held[0].send(format!("Host: {}\r\n\r\n", server.addr).as_bytes());
    assert_eq!(held[0].response().unwrap().status, 200);
    // Once one leaves, a newcomer gets in (the slot frees as soon as its thread sees the close).
    drop(held.remove(0));
    answered_once_not_busy(&server, "/healthz", 200);
}

/// Send `path` on fresh connections while the front door answers 503, or 429
/// while the test's address still holds its most connections (for at most
/// `PATIENCE`), until one gets `status`; any other answer fails the test.
fn answered_once_not_busy(server: &Server, path: &str, status: u16) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let mut c = Client::connect(server);
        c.send(get(server, path).as_bytes());
        match c.response() {
            Some(r) if r.status == status => break,
            Some(r) if matches!(r.status, 429 | 503) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20))
            }
            other => panic!("{path} did not answer {status}: {other:?}"),
        }
    }
}

#[test]
fn a_low_open_files_limit_bounds_connections_instead_of_breaking_the_api() {
    // 300 descriptors: without a bound that fits them, 250 connections ran the
    // server out and the API's accept thread died for good (every later API
    // request got 503).
    let server = Server::start_with_open_files(300, &[]);
    let held: Vec<Client> = (0..250)
        .map(|_| {
            let mut c = Client::connect(&server);
            c.send(get(&server, "/healthz").as_bytes());
            c
        })
        .collect();
    drop(held);
    // The API comes back: an unauthenticated /me is its 401.
    answered_once_not_busy(&server, "/api/v1/me", 401);
}

/// The server's threads.
fn threads(server: &Server) -> usize {
    std::fs::read_dir(format!("/proc/{}/task", server.pid()))
        .unwrap()
        .count()
}

#[test]
fn a_burst_of_connections_starts_no_thread() {
    // The burst comes from one address: the cap per address is lifted.
    let server = Server::start_with_env(&[("BERTH_MAX_CONNECTIONS_PER_IP", "1000")]);
    answered_once_not_busy(&server, "/healthz", 200);
    let before = threads(&server);
    // Held mid-head: each is the front door's alone, none reaches the API.
    let burst: Vec<Client> = (0..60)
        .map(|_| {
            let mut c = Client::connect(&server);
            c.send(b"GET /healthz HTTP/1.1\r\n");
            c
        })
        .collect();
    // All of them are being served: one more request is answered.
    answered_once_not_busy(&server, "/healthz", 200);
    let during = threads(&server);
    assert!(
        during <= before + 2,
        "{before} threads before, {during} during"
    );
    drop(burst);
}

#[test]
fn nothing_makes_the_api_answer_500() {
    let server = alice();
    let token = server.token_for("alice", "home", "laptop");
    // Token 2 takes the DELETEs aimed at a token.
    server.token_for("alice", "home", "victim");
    let auth = format!("Bearer {token}");
    let paths = [
        "/api/v1/me",
        "/api/v1/tokens",
        "/api/v1/tokens/2",
        "/api/v1/tokens/bulk",
        "/api/v1/crews",
        "/api/v1/crews/1",
        "/api/v1/crews/1/members",
        "/api/v1/crews/1/members/1",
        "/api/v1/audit",
        "/api/v1/session",
        "/api/v1/setup",
        "/healthz",
    ];
    let bodies = [
        "",
        "{",
        "null",
        "[]",
        "{\"name\": {\"a\": 1}}",
        "{\"ids\": [1e400]}",
        "{\"username\": \"\", \"password\": \"\"}",
        "{\"role\": null, \"default_redaction\": []}",
        "{\"action\": \"revoke\", \"ids\": [-1, 0, 9223372036854775807]}",
    ];
    for path in paths {
        for method in ["GET", "POST", "PATCH", "DELETE"] {
            for body in bodies {
                let reply = server.send(method, path, &[("Authorization", &auth)], body);
                assert!(
                    (200..500).contains(&reply.status),
                    "{method} {path} {body}: {} {}",
                    reply.status,
                    reply.text
                );
            }
        }
    }
    let (status, _) = server.call("GET", "/api/v1/me", Some(&token), None);
    assert_eq!(status, 200, "the token survived all that");
}

/// Browsers open several keep-alive connections at once (a page's scripts). tiny_http
/// 0.12's connection pool could leave one of them queued behind the others' busy
/// tasks for minutes, so the front door gives the API one request per connection;
/// here, rounds of six clients at once each make three keep-alive requests, and every
/// one is answered (a stalled read fails after 5 s).
#[test]
fn connections_arriving_together_are_all_answered() {
    let server = Server::start();
    for round in 0..300 {
        let clients: Vec<_> = (0..6)
            .map(|_| {
                let addr = server.addr.clone();
                std::thread::spawn(move || -> std::io::Result<TcpStream> {
                    let stream = TcpStream::connect(&addr)?;
                    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
                    let mut reader = BufReader::new(stream.try_clone()?);
                    for _ in 0..3 {
                        (&stream).write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")?;
                        let mut length = 0;
                        loop {
                            let mut line = String::new();
                            reader.read_line(&mut line)?;
                            if let Some(n) =
                                line.to_ascii_lowercase().strip_prefix("content-length:")
                            {
                                length = n.trim().parse().unwrap_or(0);
                            }
                            if line == "\r\n" || line.is_empty() {
                                break;
                            }
                        }
                        let mut body = vec![0; length];
                        reader.read_exact(&mut body)?;
                    }
                    // Kept open while the others finish, as a browser keeps it.
                    Ok(stream)
                })
            })
            .collect();
        let answered: Vec<_> = clients.into_iter().map(|c| c.join().unwrap()).collect();
        for (i, client) in answered.iter().enumerate() {
            assert!(
                client.is_ok(),
                "round {round}, client {i}: {:?}",
                client.as_ref().err()
            );
        }
    }
}
