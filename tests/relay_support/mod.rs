//! Fixtures for the relay tests: a tiny local HTTP service and a forwarder
//! whose connections a test can cut.
#![allow(dead_code)]

pub mod paced;
pub mod streaming;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// The lines a spawned `berth share` prints, read on a thread, and the public
/// URL from its first line ("Forwarding URL -> ...").
pub fn share_output(
    child: &mut std::process::Child,
) -> (std::sync::mpsc::Receiver<String>, String) {
    let stdout = child.stdout.take().expect("share's stdout is piped");
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let first = lines
        .recv_timeout(std::time::Duration::from_secs(20))
        .expect("share printed its URL");
    let url = first
        .strip_prefix("Forwarding ")
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("unexpected first line: {first}"))
        .to_string();
    (lines, url)
}

/// `berth share` running in the background, its output read on a thread;
/// killed on Drop. Each test file adds the constructor its tests call.
pub struct Share {
    pub child: std::process::Child,
    /// The lines it prints after the first (one per request or TCP connection).
    pub lines: std::sync::mpsc::Receiver<String>,
    /// The public URL from its first line.
    pub url: String,
}

impl Share {
    /// `berth share ARGS` against the server at `server_url` with `token` and
    /// no config file; its stderr goes to `stderr`.
    pub fn spawn(
        server_url: &str,
        token: &str,
        args: &[&str],
        stderr: std::process::Stdio,
    ) -> Share {
        let mut all = vec!["share"];
        all.extend_from_slice(args);
        let mut child = crate::common::berth_with_token(server_url, token, &all)
            .stdout(std::process::Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn berth share");
        let (lines, url) = share_output(&mut child);
        Share { child, lines, url }
    }

    /// The public URL without its scheme: `NAME.localhost:PORT`.
    pub fn authority(&self) -> &str {
        self.url
            .split_once("://")
            .map_or(self.url.as_str(), |(_, rest)| rest)
    }

    /// The next line it prints, within 20 s.
    pub fn next_line(&self) -> String {
        self.lines
            .recv_timeout(std::time::Duration::from_secs(20))
            .expect("share printed a line")
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Size of the large bodies sent both ways.
pub const BIG: usize = 1024 * 1024;

pub fn big_body() -> Vec<u8> {
    (0..BIG).map(|i| (i % 251) as u8).collect()
}

/// A tiny keep-alive HTTP/1.1 service: `/echo` returns the request body,
/// `/big` 1 MiB, anything else a line describing the request.
pub struct Service {
    pub port: u16,
    /// Connections that carried a request, numbered in the order of their first
    /// one (`berth share` dials ahead of need; a connection unused is not counted).
    pub connections: Arc<AtomicUsize>,
    /// Connections accepted, used or not; each request's line names its
    /// connection's place in this order as `accepted=N`.
    pub accepted: Arc<AtomicUsize>,
}

impl Service {
    pub fn start() -> Service {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(AtomicUsize::new(0));
        let accepted = Arc::new(AtomicUsize::new(0));
        let (count, accepts) = (connections.clone(), accepted.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (count, place) = (count.clone(), accepts.fetch_add(1, Ordering::SeqCst) + 1);
                std::thread::spawn(move || serve(stream, &count, place));
            }
        });
        Service {
            port,
            connections,
            accepted,
        }
    }
}

fn serve(stream: TcpStream, count: &AtomicUsize, accepted: usize) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut out = stream;
    // The connection's number, taken when its first request comes.
    let mut number = None;
    while let Some(head) = read_head(&mut reader) {
        number.get_or_insert_with(|| count.fetch_add(1, Ordering::SeqCst) + 1);
        let header = |name: &str| header_value(&head, name).unwrap_or_default();
        let body = if header("transfer-encoding").eq_ignore_ascii_case("chunked") {
            read_chunked(&mut reader)
        } else {
            let mut body = vec![0; header("content-length").parse().unwrap_or(0)];
            reader.read_exact(&mut body).map(|()| body).ok()
        };
        let Some(body) = body else { return };
        if !header("upgrade").is_empty() {
            // Switch to an echo of raw bytes, as a WebSocket server would switch.
            let _ = out.write_all(
                b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n",
            );
            let _ = std::io::copy(&mut reader, &mut out);
            return;
        }
        let connection = number.unwrap_or(0);
        let path = head[0].split_whitespace().nth(1).unwrap_or("").to_string();
        let reply = match path.as_str() {
            "/echo" => body,
            "/big" => big_body(),
            _ => format!(
                "path={path} host={} xff={} xfh={} xfp={} conn={connection} accepted={accepted}",
                header("host"),
                header("x-forwarded-for"),
                header("x-forwarded-host"),
                header("x-forwarded-proto"),
            )
            .into_bytes(),
        };
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
            reply.len()
        );
        if out.write_all(head.as_bytes()).is_err() || out.write_all(&reply).is_err() {
            return;
        }
    }
}

/// One request head's lines, request line first; `None` once the peer closes.
pub fn read_head(reader: &mut impl BufRead) -> Option<Vec<String>> {
    let mut head = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return None;
        }
        if line == "\r\n" {
            return Some(head);
        }
        head.push(line.trim_end().to_string());
    }
}

/// A header's value in a head from [`read_head`].
pub fn header_value(head: &[String], name: &str) -> Option<String> {
    head.iter().skip(1).find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
    })
}

/// A chunked request body, de-chunked (no trailers).
fn read_chunked(reader: &mut impl BufRead) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let size = usize::from_str_radix(line.trim(), 16).ok()?;
        let mut chunk = vec![0; size + 2];
        reader.read_exact(&mut chunk).ok()?;
        if size == 0 {
            return Some(body);
        }
        body.extend_from_slice(&chunk[..size]);
    }
}

/// A TCP forwarder to the server whose connections the test can cut, as a
/// network failure would.
pub struct Cutter {
    pub url: String,
    open: Arc<Mutex<Vec<TcpStream>>>,
    accepted: Arc<AtomicUsize>,
}

impl Cutter {
    pub fn start(target: &str) -> Cutter {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let open = Arc::new(Mutex::new(Vec::new()));
        let accepted = Arc::new(AtomicUsize::new(0));
        let (target, streams, count) = (target.to_string(), open.clone(), accepted.clone());
        std::thread::spawn(move || {
            for inbound in listener.incoming() {
                let Ok(inbound) = inbound else { continue };
                count.fetch_add(1, Ordering::SeqCst);
                let Ok(outbound) = TcpStream::connect(&target) else {
                    continue;
                };
                let mut held = streams.lock().unwrap();
                held.push(inbound.try_clone().unwrap());
                held.push(outbound.try_clone().unwrap());
                for (mut from, mut to) in [
                    (inbound.try_clone().unwrap(), outbound.try_clone().unwrap()),
                    (outbound, inbound),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Cutter {
            url,
            open,
            accepted,
        }
    }

    /// Connections made through the forwarder so far.
    pub fn connections(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Break every connection made so far.
    pub fn cut(&self) {
        for stream in self.open.lock().unwrap().drain(..) {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
    }
}
