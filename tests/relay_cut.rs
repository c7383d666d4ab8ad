//! Closing a tunnel cuts every connection it carries, and a public keep-alive
//! connection stays bound to the one tunnel it reached: after that tunnel
//! closed, its next request reaches neither the old service nor a new tunnel
//! on the same name. The tunnels' client here is a raw relay client that keeps
//! its data connections open whatever happens, as a slow or hostile `share`
//! could, so only the server can be what cuts them.

mod common;
mod relay_support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::Stdio;
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::Duration;

use common::{free_tcp_ports, Server};
use relay_support::{read_head, Service, Share};
use serde_json::Value;

/// What a raw client's data connections do once they are upgraded.
#[derive(Clone, Copy)]
enum Serve {
    /// Answer each HTTP request with `raw:PATH`; switch to an echo on an Upgrade.
    Http,
    /// Echo raw bytes (a TCP tunnel).
    Echo,
}

/// A relay client speaking the wire protocol itself: it answers every
/// `connect` and never closes a data connection on its own.
struct RawClient {
    tunnel_id: String,
    url: String,
    /// A message each time one of its data connections ends.
    ended: Receiver<()>,
    _control: TcpStream,
}

impl RawClient {
    fn open(server: &Server, token: &str, query: &str, serve: Serve) -> RawClient {
        let addr = server.addr.clone();
        let mut control = TcpStream::connect(&addr).unwrap();
        write!(
            control,
            "GET /api/v1/tunnels/connect?{query} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nConnection: Upgrade\r\nUpgrade: berth-relay/1\r\n\r\n"
        )
        .unwrap();
        let mut frames = BufReader::new(control.try_clone().unwrap());
        let head = read_head(&mut frames).expect("an answer to the control request");
        assert!(head[0].contains(" 101 "), "{head:?}");
        let mut line = String::new();
        frames.read_line(&mut line).unwrap();
        let ready: Value = serde_json::from_str(&line).unwrap();
        let (done, ended) = mpsc::channel();
        std::thread::spawn(move || {
            for line in frames.lines().map_while(Result::ok) {
                let frame: Value = serde_json::from_str(&line).unwrap_or_default();
                if let Some(id) = frame["connect"]["id"].as_str() {
                    let (addr, id, done) = (addr.clone(), id.to_string(), done.clone());
                    std::thread::spawn(move || data(&addr, &id, serve, &done));
                }
            }
        });
        RawClient {
            tunnel_id: ready["ready"]["tunnel_id"].as_str().unwrap().to_string(),
            url: ready["ready"]["url"].as_str().unwrap().to_string(),
            ended,
            _control: control,
        }
    }
}

/// One data connection: accept it, then serve until the server ends it.
fn data(addr: &str, id: &str, serve: Serve, done: &Sender<()>) {
    let mut out = TcpStream::connect(addr).unwrap();
    write!(
        out,
        "GET /api/v1/tunnels/accept/{id} HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: berth-relay/1\r\n\r\n"
    )
    .unwrap();
    let mut reader = BufReader::new(out.try_clone().unwrap());
    match read_head(&mut reader) {
        Some(head) if head[0].contains(" 101 ") => {}
        _ => return,
    }
    if let Serve::Echo = serve {
        let _ = std::io::copy(&mut reader, &mut out);
        let _ = done.send(());
        return;
    }
    while let Some(head) = read_head(&mut reader) {
        if head
            .iter()
            .any(|l| l.to_ascii_lowercase().starts_with("upgrade:"))
        {
            let _ = out.write_all(
                b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n",
            );
            let _ = std::io::copy(&mut reader, &mut out);
            break;
        }
        let path = head[0].split_whitespace().nth(1).unwrap_or("");
        let body = format!("raw:{path}");
        let answer = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        if out.write_all(answer.as_bytes()).is_err() {
            break;
        }
    }
    let _ = done.send(());
}

/// One response on a kept-alive connection: status and body.
fn response(reader: &mut BufReader<TcpStream>) -> (String, String) {
    let head = read_head(reader).expect("a response");
    let length: usize = head
        .iter()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    (head[0].clone(), String::from_utf8_lossy(&body).into_owned())
}

/// Whether the server closed (or reset) the connection within 10 s, reading
/// nothing: a timeout or any byte is a failure.
fn closed_without_a_word(stream: &mut impl Read) -> Result<(), String> {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) if got.is_empty() => return Ok(()),
            Ok(0) => return Err(String::from_utf8_lossy(&got).into_owned()),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err(format!(
                    "still open after 10 s; read {:?}",
                    String::from_utf8_lossy(&got)
                ))
            }
            Err(_) if got.is_empty() => return Ok(()),
            Err(_) => return Err(String::from_utf8_lossy(&got).into_owned()),
        }
    }
}

/// A server with crew `home` (owner alice) and crew `away` (owner carol), their tokens.
fn setup(flags: &[&str]) -> (Server, tempfile::TempDir, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_in(&dir.path().join("data"), flags);
    server.create_user("alice", "home", "owner");
    server.create_user("carol", "away", "owner");
    let alice = server.token_for("alice", "home", "t");
    let carol = server.token_for("carol", "away", "t");
    (server, dir, alice, carol)
}

fn close_tunnel(server: &Server, token: &str, id: &str) {
    let (status, body) = server.call(
        "DELETE",
        &format!("/api/v1/tunnels/{id}"),
        Some(token),
        None,
    );
    assert_eq!(status, 200, "{body}");
}

#[test]
fn a_kept_alive_visitor_connection_does_not_outlive_its_tunnel() {
    // No hold, so another crew takes the name the moment it is free.
    let (server, _dir, alice, carol) = setup(&["--subdomain-hold", "0s"]);
    let theirs = RawClient::open(&server, &alice, "kind=http&subdomain=same", Serve::Http);
    let mut visitor = TcpStream::connect(&server.addr).unwrap();
    visitor
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reader = BufReader::new(visitor.try_clone().unwrap());
    let ask = |visitor: &mut TcpStream, path: &str| {
        write!(
            visitor,
            "GET {path} HTTP/1.1\r\nHost: same.localhost\r\n\r\n"
        )
    };
    ask(&mut visitor, "/one").unwrap();
    let (status, body) = response(&mut reader);
    assert!(status.contains(" 200 "), "{status}");
    assert_eq!(body, "raw:/one");

    close_tunnel(&server, &alice, &theirs.tunnel_id);
    let service = Service::start();
    let port = service.port.to_string();
    let ours = Share::spawn(
        &server.url,
        &carol,
        &[&port, "--host", "127.0.0.1", "--subdomain", "same"],
        Stdio::inherit(),
    );
    assert!(
        ours.url.starts_with("http://same.localhost:"),
        "{}",
        ours.url
    );
    let fresh = "GET /fresh HTTP/1.1\r\nHost: same.localhost\r\nConnection: close\r\n\r\n";
    let (status, _, body) = server.raw(fresh);
    assert_eq!(status, 200);
    assert!(body.starts_with("path=/fresh "), "{body}");

    // The old connection's next request goes nowhere: closed unanswered
    // (it was cut when its tunnel closed, so the write itself may fail).
    let _ = ask(&mut visitor, "/two");
    if let Err(got) = closed_without_a_word(&mut reader) {
        panic!("the kept-alive connection was answered after its tunnel closed: {got}");
    }
    // Nor is it in the new tunnel's inspector.
    let (_, live) = server.call("GET", "/api/v1/tunnels?active=1", Some(&carol), None);
    let id = live["tunnels"][0]["id"].as_str().unwrap().to_string();
    std::thread::sleep(Duration::from_millis(300));
    let (_, records) = server.call(
        "GET",
        &format!("/api/v1/tunnels/{id}/requests"),
        Some(&carol),
        None,
    );
    let paths: Vec<&str> = records["requests"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["path"].as_str())
        .collect();
    assert_eq!(paths, ["/fresh"]);
}

#[test]
fn closing_a_tunnel_cuts_its_upgraded_connections_and_data_connections() {
    let (server, _dir, alice, _) = setup(&[]);
    let raw = RawClient::open(&server, &alice, "kind=http&subdomain=ws", Serve::Http);
    let mut visitor = TcpStream::connect(&server.addr).unwrap();
    visitor
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        visitor,
        "GET /socket HTTP/1.1\r\nHost: ws.localhost\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n"
    )
    .unwrap();
    let mut reader = BufReader::new(visitor.try_clone().unwrap());
    let head = read_head(&mut reader).unwrap();
    assert!(head[0].contains(" 101 "), "{head:?}");
    visitor.write_all(b"ping").unwrap();
    let mut echo = [0u8; 4];
    reader.read_exact(&mut echo).unwrap();
    assert_eq!(&echo, b"ping");

    close_tunnel(&server, &alice, &raw.tunnel_id);
    if let Err(got) = closed_without_a_word(&mut reader) {
        panic!("the upgraded connection outlived its tunnel: {got}");
    }
    // The client's end of the data connection was cut too.
    raw.ended
        .recv_timeout(Duration::from_secs(10))
        .expect("the data connection was cut");
}

#[test]
fn closing_a_tcp_tunnel_cuts_its_public_and_data_connections() {
    let (port, _) = free_tcp_ports(1);
    let range = format!("{port}-{port}");
    let (server, _dir, alice, _) = setup(&["--tcp-ports", &range]);
    let raw = RawClient::open(&server, &alice, "kind=tcp", Serve::Echo);
    assert!(raw.url.ends_with(&format!(":{port}")), "{}", raw.url);
    let mut public = TcpStream::connect(("127.0.0.1", port)).unwrap();
    public
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    public.write_all(b"ping").unwrap();
    let mut echo = [0u8; 4];
    public.read_exact(&mut echo).unwrap();
    assert_eq!(&echo, b"ping");

    close_tunnel(&server, &alice, &raw.tunnel_id);
    if let Err(got) = closed_without_a_word(&mut public) {
        panic!("the TCP connection outlived its tunnel: {got}");
    }
    raw.ended
        .recv_timeout(Duration::from_secs(10))
        .expect("the data connection was cut");
}

#[test]
fn revoking_a_token_with_disconnect_cuts_its_tunnels_kept_alive_visitors() {
    let (server, _dir, alice, _) = setup(&[]);
    let spare = server.token_for("alice", "home", "spare");
    let raw = RawClient::open(&server, &spare, "kind=http&subdomain=kept", Serve::Http);
    assert!(raw.url.starts_with("http://kept.localhost:"), "{}", raw.url);
    let mut visitor = TcpStream::connect(&server.addr).unwrap();
    visitor
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reader = BufReader::new(visitor.try_clone().unwrap());
    write!(visitor, "GET /one HTTP/1.1\r\nHost: kept.localhost\r\n\r\n").unwrap();
    assert_eq!(response(&mut reader).1, "raw:/one");

    let id = spare.split('|').next().unwrap();
    let (status, body) = server.call(
        "DELETE",
        &format!("/api/v1/tokens/{id}?disconnect=1"),
        Some(&alice),
        None,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["tunnels_closed"], 1, "{body}");
    if let Err(got) = closed_without_a_word(&mut reader) {
        panic!("the kept-alive connection outlived its revoked tunnel: {got}");
    }
}

#[test]
fn behind_a_trusted_proxy_one_connection_serves_every_tunnel_in_turn() {
    // Caddy and haproxy pool their connections to berth whatever the Host:
    // one connection carries requests for one tunnel, then another, then the
    // dashboard. Each must reach its own tunnel, none be dropped.
    let (server, _dir, alice, carol) = setup(&["--trusted-proxy", "127.0.0.1/32"]);
    let _raw = RawClient::open(&server, &alice, "kind=http&subdomain=one", Serve::Http);
    let service = Service::start();
    let port = service.port.to_string();
    let _share = Share::spawn(
        &server.url,
        &carol,
        &[&port, "--host", "127.0.0.1", "--subdomain", "two"],
        Stdio::inherit(),
    );
    let mut proxy = TcpStream::connect(&server.addr).unwrap();
    proxy
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reader = BufReader::new(proxy.try_clone().unwrap());
    let mut ask = |host: &str, path: &str| {
        write!(
            proxy,
            "POST {path} HTTP/1.1\r\nHost: {host}\r\nX-Forwarded-For: 203.0.113.7\r\nContent-Length: 2\r\n\r\nhi"
        )
        .unwrap();
        response(&mut reader)
    };
    let (status, body) = ask("one.localhost", "/a");
    assert!(status.contains(" 200 "), "{status}");
    assert_eq!(body, "raw:/a");
    let (status, body) = ask("two.localhost", "/b");
    assert!(status.contains(" 200 "), "{status} {body}");
    assert!(
        body.starts_with("path=/b host=two.localhost xff=203.0.113.7 "),
        "{body}"
    );
    // The API's own answer (it refuses this body).
    let (status, body) = ask(&server.addr, "/api/v1/tokens");
    assert!(status.contains(" 400 "), "{status} {body}");
    assert!(body.contains("\"bad_request\""), "{body}");
    let (status, body) = ask("one.localhost", "/c");
    assert!(status.contains(" 200 "), "{status}");
    assert_eq!(body, "raw:/c");
}
