//! The front door's slots under pressure: one client address cannot take them
//! all, tunnel traffic leaves the API its share, silent upgraded connections
//! and idle kept-alive ones give theirs back, bounds fit a small open-file
//! limit, and behind a trusted proxy the client is the one it names (HTTP's
//! X-Forwarded-For, TCP tunnels' PROXY header).

mod common;
mod relay_support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_tcp_ports, Server};
use relay_support::{Service, Share};

/// A fresh server with flags and environment, an owner `alice` and her token.
fn start(extra: &[&str], env: &[(&str, &str)]) -> (Server, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_in_env(&dir.path().join("data"), extra, env);
    server.create_user("alice", "home", "owner");
    let token = server.token_for("alice", "home", "share");
    (server, token, dir)
}

/// `berth share` of a local HTTP port under `name`.
fn share(server: &Server, token: &str, port: u16, name: &str) -> Share {
    let port = port.to_string();
    let args = ["--host", "127.0.0.1", "--subdomain", name, port.as_str()];
    Share::spawn(&server.url, token, &args, Stdio::inherit())
}

/// A connection with a read timeout.
fn connect(server: &Server) -> TcpStream {
    let stream = TcpStream::connect(&server.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream
}

/// One response on `stream`: status and body (by Content-Length).
fn response(stream: &TcpStream) -> Option<(u16, String)> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let status = line.split_whitespace().nth(1)?.parse().ok()?;
    let mut length = 0;
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).ok()?;
        if let Some(n) = header.to_ascii_lowercase().strip_prefix("content-length:") {
            length = n.trim().parse().unwrap_or(0);
        }
        if header == "\r\n" || header.is_empty() {
            break;
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some((status, String::from_utf8_lossy(&body).into_owned()))
}

/// Send a request on a fresh connection; its status and body.
fn exchange(server: &Server, request: &str) -> (u16, String) {
    let mut stream = connect(server);
    stream.write_all(request.as_bytes()).unwrap();
    response(&stream).expect("a response")
}

/// curl from another loopback address (all of 127/8 reaches lo): status and body.
fn curl_from(source: &str, url: &str, headers: &[&str]) -> (String, String) {
    let mut command = Command::new("curl");
    command.args(["-s", "--max-time", "10", "--interface", source]);
    for header in headers {
        command.args(["-H", header]);
    }
    let out = command
        .args(["-w", "\n%{http_code}"])
        .arg(url)
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
    (status.to_string(), body.to_string())
}

/// Whether the server closed `stream` (EOF or reset) within `wait`.
fn closed_within(stream: &TcpStream, wait: Duration) -> bool {
    stream.set_read_timeout(Some(wait)).unwrap();
    let mut byte = [0u8; 1];
    !matches!((&*stream).read(&mut byte), Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut))
}

#[test]
fn one_address_with_more_connections_than_the_bound_leaves_healthz_to_everyone_else() {
    // A bound of 4 (and 8 more for the relay): one address may hold 2.
    let (server, _token, _dir) = start(&[], &[("BERTH_MAX_CONNECTIONS", "4")]);
    let silent: Vec<TcpStream> = (0..16).map(|_| connect(&server)).collect();
    // Beyond its share the address is told so.
    let extra = connect(&server);
    (&extra)
        .write_all(format!("GET /healthz HTTP/1.1\r\nHost: {}\r\n\r\n", server.addr).as_bytes())
        .unwrap();
    let (status, body) = response(&extra).expect("an answer");
    assert_eq!(status, 429, "{body}");
    assert!(
        body.contains("Too many connections from your address"),
        "{body}"
    );
    // Everyone else is answered at once.
    for source in ["127.0.0.2", "127.0.0.3"] {
        let started = Instant::now();
        let (status, body) = curl_from(source, &format!("{}/healthz", server.url), &[]);
        assert_eq!(status, "200", "{source}: {body}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    }
    drop(silent);
}

/// An upgrade through the tunnel `name`: the 101 read, the connection now echoes.
fn upgrade(server: &Server, name: &str) -> Result<TcpStream, (u16, String)> {
    let stream = connect(server);
    (&stream)
        .write_all(
            format!("GET /socket HTTP/1.1\r\nHost: {name}.localhost\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
                .as_bytes(),
        )
        .unwrap();
    let mut reader = BufReader::new(&stream);
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    if !line.starts_with("HTTP/1.1 101") {
        let status = line
            .split_whitespace()
            .nth(1)
            .unwrap_or("0")
            .parse()
            .unwrap_or(0);
        let mut rest = String::new();
        let _ = reader.read_to_string(&mut rest);
        return Err((status, rest));
    }
    while line != "\r\n" {
        line.clear();
        reader.read_line(&mut line).unwrap();
    }
    Ok(stream)
}

#[test]
fn tunnel_traffic_leaves_the_api_its_share_and_silent_upgrades_close() {
    // A bound of 8: tunnel traffic may hold 6; the address cap is lifted so
    // one test client can fill that share.
    let (server, token, _dir) = start(
        &["--idle-timeout", "2s", "--max-connections-per-ip", "100"],
        &[("BERTH_MAX_CONNECTIONS", "8")],
    );
    let service = Service::start();
    let _share = share(&server, &token, service.port, "ws");
    let mut held: Vec<TcpStream> = (0..6).map(|_| upgrade(&server, "ws").unwrap()).collect();
    let (status, body) = upgrade(&server, "ws").expect_err("a seventh is refused");
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("tunnels have too many open connections"),
        "{body}"
    );
    // The API's share is untouched.
    let started = Instant::now();
    let (status, body) = exchange(&server, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status, 200, "{body}");
    assert!(started.elapsed() < Duration::from_secs(5));

    // One upgrade keeps talking: it stays; the silent ones close after 2 s.
    let chatty = held.remove(0);
    let mut echo = BufReader::new(chatty.try_clone().unwrap());
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(3500) {
        (&chatty).write_all(b"ping\n").unwrap();
        let mut line = String::new();
        echo.read_line(&mut line).unwrap();
        assert_eq!(line, "ping\n");
        std::thread::sleep(Duration::from_millis(500));
    }
    for silent in &held {
        assert!(
            closed_within(silent, Duration::from_secs(3)),
            "a silent upgrade stays open"
        );
    }
    assert!(!closed_within(&chatty, Duration::from_millis(200)));
    // Their slots are free again.
    let again = upgrade(&server, "ws").expect("a slot came free");
    drop(again);
}

#[test]
fn an_idle_kept_alive_connection_is_closed_after_a_short_while() {
    let server = Server::start();
    let stream = connect(&server);
    (&stream)
        .write_all(format!("GET /healthz HTTP/1.1\r\nHost: {}\r\n\r\n", server.addr).as_bytes())
        .unwrap();
    assert_eq!(response(&stream).unwrap().0, 200);
    let started = Instant::now();
    assert!(closed_within(&stream, Duration::from_secs(20)));
    let idle = started.elapsed();
    assert!(
        idle >= Duration::from_secs(8) && idle < Duration::from_secs(13),
        "{idle:?}"
    );
}

#[test]
fn bad_limits_are_refused_with_a_sentence() {
    for (flag, value, want) in [
        ("--idle-timeout", "10", "e.g. 30s"),
        ("--idle-timeout", "0s", "positive duration"),
        ("--max-connections-per-ip", "0", "max-connections-per-ip"),
        ("--trusted-proxy", "10.0.0.0/40", "ADDRESS/BITS"),
    ] {
        let out = Command::new(common::BIN)
            .args([
                "server",
                "--listen",
                "127.0.0.1:0",
                "--data",
                "/nonexistent",
                flag,
                value,
            ])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{flag} {value}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(want), "{flag} {value}: {stderr}");
    }
}

#[test]
fn behind_a_trusted_proxy_the_client_is_the_one_it_names() {
    // 127.0.0.1 is the proxy; the test's other loopback addresses are not.
    let (server, token, _dir) = start(
        &[
            "--trusted-proxy",
            "127.0.0.1/32",
            "--max-connections-per-ip",
            "1",
        ],
        &[],
    );
    let service = Service::start();
    let _share = share(&server, &token, service.port, "shop");
    let at = |path: &str| format!("{}{path}", server.url);

    // Through a tunnel: the X-Forwarded-For passed on names the client.
    let (status, body) = exchange(
        &server,
        "GET /who HTTP/1.1\r\nHost: shop.localhost\r\nX-Forwarded-For: 6.6.6.6, 203.0.113.5\r\n\r\n",
    );
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("xff=203.0.113.5 "), "{body}");
    // From an address not trusted, its header is its own say and ignored.
    let (status, body) = curl_from(
        "127.0.0.2",
        &at("/who"),
        &["Host: shop.localhost", "X-Forwarded-For: 9.9.9.9"],
    );
    assert_eq!(status, "200", "{body}");
    assert!(body.contains("xff=127.0.0.2 "), "{body}");

    // The scheme: a trusted proxy that ends TLS says https, and the tunnel's
    // service hears it; anyone else's say is replaced by the connection's.
    let (status, body) = exchange(
        &server,
        "GET /who HTTP/1.1\r\nHost: shop.localhost\r\nX-Forwarded-Proto: https\r\n\r\n",
    );
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("xfp=https "), "{body}");
    let (status, body) = curl_from(
        "127.0.0.2",
        &at("/who"),
        &["Host: shop.localhost", "X-Forwarded-Proto: https"],
    );
    assert_eq!(status, "200", "{body}");
    assert!(body.contains("xfp=http "), "{body}");

    // The API records the named client as the token's last address.
    let named = server.token_for("alice", "home", "named");
    let (status, _) = exchange(
        &server,
        &format!("GET /api/v1/me HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {named}\r\nX-Forwarded-For: 198.51.100.4\r\n\r\n"),
    );
    assert_eq!(status, 200);
    let ip: String = server
        .db()
        .query_row(
            "SELECT last_used_ip FROM tokens WHERE name = 'named'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(ip, "198.51.100.4");

    // The per-address cap (1 here) applies to each named client, never to
    // the proxy: one request of 203.0.113.7 in flight (its body awaited)...
    let slow = connect(&server);
    (&slow)
        .write_all(b"POST /api/v1/session HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 203.0.113.7\r\nContent-Type: application/json\r\nContent-Length: 10\r\n\r\n{\"a")
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    // ...leaves no room for a second of that client...
    let (status, body) = exchange(
        &server,
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 203.0.113.7\r\n\r\n",
    );
    assert_eq!(status, 429, "{body}");
    // ...while others, through the same proxy address, pass.
    let (status, _) = exchange(
        &server,
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 203.0.113.8\r\n\r\n",
    );
    assert_eq!(status, 200);
    drop(slow);
}

/// A local service that answers each connection with the first line it read.
fn first_line_service() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            std::thread::spawn(move || {
                let mut line = String::new();
                let _ = BufReader::new(&stream).read_line(&mut line);
                let _ = (&stream).write_all(format!("got {line}").as_bytes());
                let _ = stream.shutdown(Shutdown::Write);
            });
        }
    });
    port
}

/// What a TCP tunnel's service answers to `bytes`, sent from `source` if given.
fn through_tcp(port: u16, bytes: &[u8]) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(bytes).unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
}

#[test]
fn a_trusted_proxys_proxy_header_is_taken_off_tcp_tunnels_and_counted() {
    let (first, last) = free_tcp_ports(10);
    let range = &format!("{first}-{last}");
    let (server, token, _dir) = start(
        &[
            "--tcp-ports",
            range,
            "--trusted-proxy",
            "127.0.0.1/32",
            "--max-connections-per-ip",
            "1",
        ],
        &[],
    );
    let local = first_line_service().to_string();
    let args = ["--tcp", "--host", "127.0.0.1", local.as_str()];
    let tcp = Share::spawn(&server.url, &token, &args, Stdio::inherit());
    let port: u16 = tcp.url.rsplit(':').next().unwrap().parse().unwrap();

    // Version 1 and version 2 headers are taken off; the rest passes.
    let v1 = through_tcp(port, b"PROXY TCP4 192.0.2.7 127.0.0.1 5000 22\r\nhello\n");
    assert_eq!(v1, "got hello\n");
    let mut v2 = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c".to_vec();
    v2.extend_from_slice(&[192, 0, 2, 8, 127, 0, 0, 1, 0x13, 0x88, 0, 22]);
    v2.extend_from_slice(b"there\n");
    assert_eq!(through_tcp(port, &v2), "got there\n");
    // Without a header, a trusted proxy's connection passes as it is.
    assert_eq!(through_tcp(port, b"plain\n"), "got plain\n");
    // A broken header closes the connection before the service sees it.
    assert_eq!(through_tcp(port, b"PROXY TCP4 nonsense\r\nx\n"), "");

    // The cap counts the client the header names (1 here).
    let held = TcpStream::connect(("127.0.0.1", port)).unwrap();
    (&held)
        .write_all(b"PROXY TCP4 192.0.2.9 127.0.0.1 5000 22\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let second = through_tcp(port, b"PROXY TCP4 192.0.2.9 127.0.0.1 5001 22\r\nagain\n");
    assert_eq!(second, "", "a second connection of 192.0.2.9 is closed");
    let other = through_tcp(port, b"PROXY TCP4 192.0.2.10 127.0.0.1 5001 22\r\nother\n");
    assert_eq!(other, "got other\n");
    drop(held);
}

#[test]
fn from_an_untrusted_address_a_proxy_header_is_data() {
    let (first, last) = free_tcp_ports(10);
    let range = &format!("{first}-{last}");
    let (server, token, _dir) = start(&["--tcp-ports", range], &[]);
    let local = first_line_service().to_string();
    let args = ["--tcp", "--host", "127.0.0.1", local.as_str()];
    let tcp = Share::spawn(&server.url, &token, &args, Stdio::inherit());
    let port: u16 = tcp.url.rsplit(':').next().unwrap().parse().unwrap();
    let answer = through_tcp(port, b"PROXY TCP4 192.0.2.7 127.0.0.1 5000 22\r\nhello\n");
    assert_eq!(answer, "got PROXY TCP4 192.0.2.7 127.0.0.1 5000 22\r\n");
}

#[test]
fn under_512_open_files_many_tunnels_leave_the_api_answering() {
    // Past the quotas of one member and crew, to reach the descriptor bound.
    let quotas = [
        "--max-tunnels-per-user",
        "1000",
        "--max-tunnels-per-crew",
        "1000",
    ];
    let server = Server::start_with_open_files(512, &quotas);
    server.create_user("alice", "home", "owner");
    let token = server.token_for("alice", "home", "share");
    // An upgrade on the relay's `path`: the status, and what followed a refusal.
    let relay_upgrade = |path: &str, auth: &str| {
        let stream = connect(&server);
        (&stream)
            .write_all(
                format!(
                    "GET {path} HTTP/1.1\r\nHost: {}\r\n{auth}Connection: Upgrade\r\nUpgrade: berth-relay/1\r\n\r\n",
                    server.addr
                )
                .as_bytes(),
            )
            .unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .unwrap_or("0")
            .parse()
            .unwrap_or(0);
        let mut rest = String::new();
        if status != 101 {
            let _ = reader.read_to_string(&mut rest);
        }
        (status, rest, reader)
    };
    let auth = format!("Authorization: Bearer {token}\r\n");
    let mut open = Vec::new();
    let mut refused = Vec::new();
    for _ in 0..110 {
        let (status, rest, mut control) = relay_upgrade("/api/v1/tunnels/connect?kind=http", &auth);
        if status != 101 {
            refused.push((status, rest));
            continue;
        }
        // As `share` does: dial the data connections the tunnel asks for
        // ahead of need (each a descriptor on the server).
        control
            .get_ref()
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let mut line = String::new();
        while control.read_line(&mut line).is_ok_and(|n| n > 0) {
            let frame: serde_json::Value = serde_json::from_str(line.trim()).unwrap_or_default();
            if let Some(id) = frame["connect"]["id"].as_str() {
                let path = format!("/api/v1/tunnels/accept/{id}");
                // Out of descriptors, the server may drop it: the API must
                // answer all the same.
                let (status, _, data) = relay_upgrade(&path, "");
                if status == 101 {
                    open.push(data);
                }
            }
            line.clear();
        }
        open.push(control);
    }
    // The API answers, at once and again.
    for _ in 0..5 {
        let (status, body) = exchange(
            &server,
            &format!("GET /api/v1/me HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n"),
        );
        assert_eq!(status, 200, "{body}");
    }
    assert!(open.len() >= 10, "only {} tunnels opened", open.len());
    assert!(!refused.is_empty(), "110 tunnels fit 512 open files?");
    for (status, rest) in &refused {
        assert_eq!(*status, 503, "{rest}");
        assert!(rest.contains("too many open tunnels"), "{rest}");
    }
    drop(open);
}

#[test]
fn behind_a_trusted_proxy_sign_in_failures_are_throttled_per_named_client() {
    let (server, _token, _dir) = start(&["--trusted-proxy", "127.0.0.1/32"], &[]);
    let sign_in = |client: &str| {
        let body = r#"{"username": "alice", "password": "wrong password"}"#;
        exchange(
            &server,
            &format!(
                "POST /api/v1/session HTTP/1.1\r\nHost: {}\r\nX-Forwarded-For: {client}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                server.addr,
                body.len()
            ),
        )
        .0
    };
    // Five failures of one client and account; the sixth attempt is held.
    let statuses: Vec<u16> = (0..6).map(|_| sign_in("203.0.113.1")).collect();
    assert_eq!(statuses, [401, 401, 401, 401, 401, 429]);
    // Another client behind the same proxy is not held to the first one's
    // failures (without --trusted-proxy both would be the proxy's address).
    assert_eq!(sign_in("203.0.113.2"), 401);
    assert_eq!(sign_in("203.0.113.1"), 429);
}

#[test]
fn the_server_says_at_start_what_its_bounds_came_out_as() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new("sh")
        .args(["-c", "ulimit -n 512 && exec \"$@\"", "sh", common::BIN])
        .args(["server", "--listen", "127.0.0.1:0", "--data"])
        .arg(dir.path().join("data"))
        .args(["--trusted-proxy", "10.0.0.0/8"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let second = lines.next().unwrap().unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        first,
        "berth limits: 70 connections (53 at most for tunnel traffic, 17 per client address, 17 more for the relay), 32 tunnels, 48 TCP tunnel connections, from 512 open files"
    );
    assert_eq!(
        second,
        "berth takes client addresses from the proxies at 10.0.0.0/8"
    );
}
