//! Graceful shutdown (issue 6): on SIGTERM the server stops accepting, lets a
//! request in flight through a tunnel finish, exits 0, and the `share` client
//! reconnects to the restarted server with its subdomain.

mod common;
mod relay_support;

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, Sender};
use std::time::{Duration, Instant};

use common::{Server, BIN};
use relay_support::streaming::FixedServer;

/// How long the local service takes to answer `/slow`.
const SLOW: Duration = Duration::from_secs(2);

/// A local HTTP service that answers `/slow` after `SLOW` and anything else at
/// once, closing after each; its receiver hears of each `/slow` as it arrives.
fn slow_service() -> (u16, Receiver<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (arrived, slow) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            let arrived = arrived.clone();
            std::thread::spawn(move || answer_slowly(stream, &arrived));
        }
    });
    (port, slow)
}

fn answer_slowly(stream: TcpStream, arrived: &Sender<()>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut target = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        if target.is_empty() {
            target = line.split_whitespace().nth(1).unwrap_or("").to_string();
        }
        if line == "\r\n" {
            break;
        }
    }
    if target == "/slow" {
        let _ = arrived.send(());
        std::thread::sleep(SLOW);
    }
    let body = format!("answered {target}");
    let _ = (&stream).write_all(
        format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
}

fn share(server: &Server, port: u16, token: &str) -> (Child, std::sync::mpsc::Receiver<String>) {
    let mut child = Command::new(BIN)
        .args([
            "share",
            &port.to_string(),
            "--host",
            "127.0.0.1",
            "--subdomain",
            "drain",
        ])
        .env_clear()
        .env("BERTH_CONFIG", "/nonexistent/berth-shutdown-test.json")
        .env("BERTH_SERVER", &server.url)
        .env("BERTH_TOKEN", token)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn share");
    let (lines, _url) = relay_support::share_output(&mut child);
    (child, lines)
}

/// curl through the tunnel: status and body.
fn through(server: &Server, path: &str) -> (String, String) {
    let out = Command::new("curl")
        .args([
            "-s",
            "--max-time",
            "20",
            "-w",
            "\n%{http_code}",
            "-H",
            "Host: drain.localhost",
        ])
        .arg(format!("{}{path}", server.url))
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
    (status.to_string(), body.to_string())
}

/// A server with `share` of the slow service at `drain.localhost` (and its
/// output lines, kept so that it can print them), and the receiver that hears
/// when `/slow` reaches the service.
fn draining() -> (Server, Child, Receiver<String>, Receiver<()>) {
    let server = Server::start();
    server.create_user("alice", "home", "owner");
    let token = server.token_for("alice", "home", "drain");
    let (port, slow) = slow_service();
    let (child, lines) = share(&server, port, &token);
    (server, child, lines, slow)
}

/// `/slow` through the tunnel on a thread: its body, then a newline and the status.
fn slow_in_flight(server: &Server) -> std::thread::JoinHandle<String> {
    let url = server.url.clone();
    std::thread::spawn(move || {
        let out = Command::new("curl")
            .args(["-s", "--max-time", "20", "-w", "\n%{http_code}"])
            .args(["-H", "Host: drain.localhost"])
            .arg(format!("{url}/slow"))
            .output()
            .expect("curl runs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    })
}

#[test]
fn sigterm_lets_a_request_in_flight_finish_and_share_reconnects_after_restart() {
    let (mut server, mut child, _lines, slow) = draining();
    assert_eq!(through(&server, "/quick").0, "200");
    let in_flight = slow_in_flight(&server);
    // Once the slow request reached the service, stop the server under it.
    slow.recv_timeout(Duration::from_secs(20))
        .expect("/slow arrived");
    assert_eq!(server.terminate(), Some(0), "a clean exit after the drain");
    let answer = in_flight.join().unwrap();
    assert!(
        answer.ends_with("\n200"),
        "the request in flight finished: {answer:?}"
    );
    assert!(answer.starts_with("answered /slow"), "{answer:?}");

    // The client was told by the closed control connection, and comes back.
    let _restarted = FixedServer::start(BIN, &server.data, &server.addr);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = through(&server, "/again");
        if status == "200" {
            assert_eq!(body, "answered /again");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "share did not come back: {status} {body}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Send a keep-alive `GET /healthz` on `stream` and read its whole answer.
fn healthz_kept_alive(stream: &mut TcpStream) {
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut length = 0;
    loop {
        let mut line = String::new();
        assert!(reader.read_line(&mut line).unwrap() > 0, "closed early");
        let lower = line.to_ascii_lowercase();
        if let Some(n) = lower.strip_prefix("content-length:") {
            length = n.trim().parse().unwrap();
        }
        if line == "\r\n" {
            break;
        }
    }
    let mut body = vec![0; length];
    std::io::Read::read_exact(&mut reader, &mut body).unwrap();
}

#[test]
fn sigterm_closes_idle_connections_and_refuses_new_ones_during_the_drain() {
    let (mut server, mut child, _lines, slow) = draining();
    let mut idle = TcpStream::connect(&server.addr).unwrap();
    healthz_kept_alive(&mut idle);
    let in_flight = slow_in_flight(&server);
    slow.recv_timeout(Duration::from_secs(20))
        .expect("/slow arrived");
    server.signal("TERM");

    // The kept-alive connection, waiting between requests, is closed at once
    // (before the request in flight is done), not left for the drain's end.
    idle.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut byte = [0u8; 1];
    let read = std::io::Read::read(&mut idle, &mut byte);
    assert!(
        matches!(read, Ok(0)) || read.is_err_and(|e| e.kind() != std::io::ErrorKind::WouldBlock),
        "the idle connection was closed"
    );
    assert!(!in_flight.is_finished(), "closed before the drain ended");

    // New clients are refused rather than left in the listener's backlog.
    let refused = loop {
        match TcpStream::connect(&server.addr) {
            Err(e) => break e.kind() == std::io::ErrorKind::ConnectionRefused,
            Ok(_) if in_flight.is_finished() => break false,
            Ok(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    assert!(refused, "a new connection during the drain was refused");

    let answer = in_flight.join().unwrap();
    assert!(answer.ends_with("\n200"), "{answer:?}");
    assert_eq!(server.terminate(), Some(0));
    let _ = child.kill();
    let _ = child.wait();
}
