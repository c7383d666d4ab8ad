//! What the public client gets when the local service behind a tunnel
//! misbehaves: a status that says what went wrong (502 for a broken answer,
//! 504 for none in time), never a connection closed without a word.

mod common;
mod relay_support;

use std::io::{BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Server;
use relay_support::{read_head, Share};

/// A local service that reads each request head and then does `then` with
/// the connection (connections dialled ahead that carry no request are let go).
fn service(then: fn(TcpStream)) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                if read_head(&mut reader).is_some() {
                    then(stream);
                }
            });
        }
    });
    port
}

/// A server whose local services get `timeout` seconds to answer, an owner's
/// token, and `berth share` of `port` at `NAME.localhost`.
fn tunnel(timeout: &str, port: u16, name: &str) -> (Server, Share) {
    let server = Server::start_with_env(&[("BERTH_RESPONSE_TIMEOUT", timeout)]);
    server.create_user("alice", "home", "owner");
    let token = server.token_for("alice", "home", "share");
    let port = port.to_string();
    let args = ["--host", "127.0.0.1", "--subdomain", name];
    let mut all = vec![port.as_str()];
    all.extend(args);
    let share = Share::spawn(&server.url, &token, &all, Stdio::inherit());
    (server, share)
}

/// curl through the tunnel at `name`: the whole response, head included.
fn curl(server: &Server, name: &str, args: &[&str]) -> String {
    let out = Command::new("curl")
        .args(["-s", "-i", "--max-time", "30", "-H"])
        .arg(format!("Host: {name}.localhost"))
        .args(args)
        .arg(format!("{}/x", server.url))
        .output()
        .expect("curl runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_service_that_answers_garbage_gets_a_502_saying_so() {
    let port = service(|mut stream| {
        let _ = stream.write_all(b"this is not HTTP\r\n\r\n");
    });
    let (server, share) = tunnel("60", port, "garbage");
    let text = curl(&server, "garbage", &[]);
    assert!(text.starts_with("HTTP/1.1 502"), "{text}");
    assert!(text.contains("not an HTTP/1.1 response"), "{text}");
    assert!(share.next_line().starts_with("GET /x 502 "));
}

#[test]
fn a_service_that_never_answers_gets_a_504_after_the_response_timeout() {
    let port = service(|stream| {
        std::thread::sleep(Duration::from_secs(20));
        drop(stream);
    });
    let (server, share) = tunnel("1", port, "mute");
    let text = curl(&server, "mute", &[]);
    assert!(text.starts_with("HTTP/1.1 504"), "{text}");
    assert!(text.contains("did not answer within 1 second."), "{text}");
    assert!(share.next_line().starts_with("GET /x 504 "));
}

#[test]
fn an_upload_the_service_stops_reading_gets_a_504_not_a_cut_connection() {
    // Reads the head, then neither the body nor answers.
    let port = service(|stream| {
        std::thread::sleep(Duration::from_secs(25));
        drop(stream);
    });
    let (server, _share) = tunnel("1", port, "stalled");
    // More than every socket buffer between curl and the service holds.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("upload");
    std::fs::write(&file, vec![7u8; 64 * 1024 * 1024]).unwrap();
    let text = curl(
        &server,
        "stalled",
        &["-T", file.to_str().unwrap(), "-H", "Expect: 100-continue"],
    );
    // The 100 Continue berth sent, then the final status.
    assert!(text.starts_with("HTTP/1.1 100"), "{text}");
    assert!(text.contains("HTTP/1.1 504"), "{text}");
    assert!(text.contains("stopped reading the request body"), "{text}");
}

#[test]
fn an_early_answer_to_an_upload_the_service_stopped_reading_is_passed_on() {
    // Refuses the upload at once, then neither reads it nor closes.
    let port = service(|mut stream| {
        let refusal = "HTTP/1.1 413 Payload Too Large\r\nContent-Length: 9\r\nConnection: close\r\n\r\ntoo large";
        let _ = stream.write_all(refusal.as_bytes());
        std::thread::sleep(Duration::from_secs(25));
    });
    let (server, share) = tunnel("1", port, "early");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("upload");
    std::fs::write(&file, vec![7u8; 64 * 1024 * 1024]).unwrap();
    let text = curl(&server, "early", &["-T", file.to_str().unwrap()]);
    assert!(text.contains("HTTP/1.1 413"), "{text}");
    assert!(text.ends_with("too large"), "{text}");
    assert!(share.next_line().starts_with("PUT /x 413 "));
}

/// Connections open to `server` from this machine's side (the control and
/// data connections of its shares among them), from /proc/net/tcp.
fn connections_to(server: &Server) -> usize {
    let port = server.addr.rsplit(':').next().unwrap();
    let port = format!("{:04X}", port.parse::<u16>().unwrap());
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // rem_address is ADDR:PORT in hex; state 01 is ESTABLISHED.
            fields.len() > 3 && fields[2].ends_with(&format!(":{port}")) && fields[3] == "01"
        })
        .count()
}

/// Wait until `share`'s control connection and the `ahead` data connections
/// it dials at once are open and parked: no longer among the front door's
/// open connections (its gauge shows only the control connection and the
/// scrape itself).
fn until_parked(server: &Server, ahead: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let scrape = server.send("GET", "/metrics", &[], "");
        let open = scrape
            .text
            .lines()
            .find_map(|l| l.strip_prefix("berth_frontdoor_open_connections "))
            .and_then(|v| v.trim().parse::<u64>().ok());
        let dialled = connections_to(server);
        if open == Some(2) && dialled == 1 + ahead {
            // The scrape's slot is given back just after its answer ends.
            std::thread::sleep(Duration::from_millis(100));
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the front door kept {open:?} connections open, {dialled} dialled to it"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn public_connections_filling_the_bound_still_get_their_data_connections() {
    // Answers each request after 300 ms, so the public connections pile up.
    let port = service(|mut stream| {
        std::thread::sleep(Duration::from_millis(300));
        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    });
    // The cap per client address lifted: every connection here is 127.0.0.1's.
    let server = Server::start_with_env(&[
        ("BERTH_MAX_CONNECTIONS", "6"),
        ("BERTH_MAX_CONNECTIONS_PER_IP", "100"),
    ]);
    server.create_user("alice", "home", "owner");
    let token = server.token_for("alice", "home", "share");
    let port = port.to_string();
    let args = [port.as_str(), "--host", "127.0.0.1", "--subdomain", "full"];
    let _share = Share::spawn(&server.url, &token, &args, Stdio::inherit());
    // The data connections `share` dials ahead hold a slot each until they
    // are parked: a connection accepted while they do is past the bound and
    // may carry only the relay's own requests (503 for a visitor). On a
    // loaded machine they can still be on their way; wait until they are
    // parked.
    until_parked(&server, 2);
    // Six connections fill the bound: five public ones (tunnel traffic may
    // hold five of six slots) and one whose head never ends. The five ask
    // at once: most need a data connection dialled for them, through the
    // same front door.
    let mut public: Vec<TcpStream> = (0..6)
        .map(|_| {
            let mut c = TcpStream::connect(&server.addr).unwrap();
            c.write_all(b"GET /x HTTP/1.1\r\n").unwrap();
            c
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let _filler = public.pop();
    for c in &mut public {
        c.write_all(b"Host: full.localhost\r\nConnection: close\r\n\r\n")
            .unwrap();
    }
    let statuses: Vec<String> = public
        .into_iter()
        .map(|mut c| {
            c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            let mut text = String::new();
            let _ = std::io::Read::read_to_string(&mut c, &mut text);
            text.split_whitespace().nth(1).unwrap_or("none").to_string()
        })
        .collect();
    assert!(statuses.iter().all(|s| s == "200"), "{statuses:?}");
}

#[test]
fn a_body_on_a_204_does_not_become_the_next_answer() {
    // `/first` gets a 204 with bytes after it that look like an answer;
    // anything else gets `good`.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().map_while(Result::ok) {
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                while let Some(head) = read_head(&mut reader) {
                    let answer: &[u8] = if head[0].contains("/first") {
                        b"HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nEVIL"
                    } else {
                        b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ngood"
                    };
                    let _ = stream.write_all(answer);
                }
            });
        }
    });
    let (server, _share) = tunnel("60", port, "spoiled");
    // Two requests on one public connection: the second must get its own answer.
    let out = Command::new("curl")
        .args(["-s", "--max-time", "20", "-H", "Host: spoiled.localhost"])
        .arg(format!("{}/first", server.url))
        .arg(format!("{}/second", server.url))
        .output()
        .expect("curl runs");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "good");
}

#[test]
fn a_status_below_100_is_a_broken_answer() {
    // Found by the response_head fuzz target: `000` parsed, and the front
    // door took it for an interim (1xx) answer and passed on whatever head
    // followed instead of saying the service's answer was broken.
    let port = service(|mut stream| {
        let _ = stream
            .write_all(b"HTTP/1.1 000 Zero\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    });
    let (server, share) = tunnel("10", port, "zero");
    let text = curl(&server, "zero", &[]);
    assert!(text.starts_with("HTTP/1.1 502 "), "{text}");
    assert!(share.next_line().starts_with("GET /x 502 "));
}

#[test]
fn a_service_that_is_down_gets_the_server_s_502_and_one_line_from_share() {
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let server = Server::start();
    server.create_user("alice", "home", "owner");
    let token = server.token_for("alice", "home", "share");
    let port = port.to_string();
    let args = [port.as_str(), "--host", "127.0.0.1", "--subdomain", "down"];
    let mut share = Share::spawn(&server.url, &token, &args, Stdio::piped());
    let stderr = share.child.stderr.take().unwrap();
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let text = curl(&server, "down", &[]);
    assert!(text.starts_with("HTTP/1.1 502"), "{text}");
    assert!(!text.contains(&port), "{text}");
    let first = lines.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(
        first.starts_with("The visitor got 502: could not reach"),
        "{first}"
    );
    let more: Vec<String> = lines
        .recv_timeout(Duration::from_secs(3))
        .into_iter()
        .collect();
    assert!(more.is_empty(), "{more:?}");
}
