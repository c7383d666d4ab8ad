//! TCP tunnels end to end: the real server, `berth share --tcp` as a child process,
//! raw sockets and a real `git daemon` behind the tunnel, `git clone` in front.

mod common;
mod relay_support;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{berth_with_token, code_and_stderr, free_tcp_ports, Server, BIN};
use relay_support::{Cutter, Share};
use sha2::{Digest, Sha256};

/// A server with ten TCP ports of its own (tests run in parallel, each with a
/// range no other test uses), an owner `alice` and her token.
fn setup() -> (Server, String, (u16, u16), tempfile::TempDir) {
    let range = free_tcp_ports(10);
    let dir = tempfile::tempdir().unwrap();
    let flag = format!("{}-{}", range.0, range.1);
    let server = Server::start_in(&dir.path().join("data"), &["--tcp-ports", &flag]);
    server.create_user("alice", "home", "owner");
    let token = server.token_for("alice", "home", "share");
    (server, token, range, dir)
}

/// `berth share --tcp` for a local port.
impl Share {
    fn start(server_url: &str, token: &str, local: u16, extra: &[&str]) -> Share {
        let mut args = vec!["--tcp", "--host", "127.0.0.1"];
        args.extend(extra);
        let local = local.to_string();
        args.push(&local);
        Share::spawn(server_url, token, &args, Stdio::inherit())
    }

    /// The public port, from `tcp://localhost:PORT`.
    fn port(&self) -> u16 {
        self.url.rsplit(':').next().unwrap().parse().unwrap()
    }

    /// The public address to connect to (the server listens on 127.0.0.1).
    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port())
    }
}

/// Run `berth ARGS` expecting it to end; its exit code and stderr.
fn run_fails(server: &Server, token: &str, args: &[&str]) -> (i32, String) {
    code_and_stderr(&mut berth_with_token(&server.url, token, args))
}

/// A local service echoing every byte back on each connection.
fn echo_service() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            std::thread::spawn(move || {
                let mut from = stream.try_clone().unwrap();
                let mut to = stream;
                let _ = std::io::copy(&mut from, &mut to);
                let _ = to.shutdown(Shutdown::Write);
            });
        }
    });
    port
}

/// A port nothing listens on: bound by the OS, then released.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Send `payload` through `addr` and read back everything until EOF; the echo.
fn round_trip(addr: &str, payload: Vec<u8>) -> Vec<u8> {
    let stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    let sending = std::thread::spawn(move || {
        writer.write_all(&payload).unwrap();
        writer.shutdown(Shutdown::Write).unwrap();
    });
    let mut back = Vec::new();
    (&stream).read_to_end(&mut back).unwrap();
    sending.join().unwrap();
    back
}

fn sha256(bytes: &[u8]) -> Vec<u8> {
    Sha256::digest(bytes).to_vec()
}

/// Pseudo-random bytes, so a shifted or dropped chunk cannot go unnoticed.
fn payload(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

#[test]
fn megabytes_echo_through_intact_on_parallel_connections() {
    let (server, token, range, _dir) = setup();
    let share = Share::start(&server.url, &token, echo_service(), &[]);
    // The first free port of the range (another program may hold the first).
    let port: u16 = share
        .url
        .strip_prefix("tcp://localhost:")
        .unwrap()
        .parse()
        .unwrap();
    assert!((range.0..=range.1).contains(&port), "{}", share.url);
    let senders: Vec<_> = (0..3)
        .map(|i| {
            let addr = share.addr();
            std::thread::spawn(move || {
                let sent = payload(6 * 1024 * 1024 + i * 7, i as u64 + 1);
                let back = round_trip(&addr, sent.clone());
                assert_eq!(back.len(), sent.len());
                assert_eq!(sha256(&back), sha256(&sent));
            })
        })
        .collect();
    for sender in senders {
        sender.join().unwrap();
    }
    let lines: Vec<String> = (0..3).map(|_| share.next_line()).collect();
    for line in &lines {
        assert!(line.starts_with("tcp ") && line.ends_with("ms"), "{line}");
    }
    for i in 0..3 {
        let n = 6 * 1024 * 1024 + i * 7;
        let counted = format!(" {n} bytes in, {n} bytes out, ");
        assert!(lines.iter().any(|l| l.contains(&counted)), "{lines:?}");
    }
}

/// `git` with no user or system config.
fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
        .args(args)
        .current_dir(dir)
        .env("HOME", dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .expect("run git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `git daemon` serving `base`, killed on Drop.
struct GitDaemon(Child);

impl Drop for GitDaemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn git_clone_through_a_tcp_tunnel_from_a_real_git_daemon() {
    let (server, token, _, _dir) = setup();
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    git(&work, &["init", "-q", "-b", "main"]);
    std::fs::write(work.join("big.bin"), payload(2 * 1024 * 1024, 9)).unwrap();
    git(&work, &["add", "."]);
    git(&work, &["commit", "-q", "-m", "first"]);
    let head = git(&work, &["rev-parse", "HEAD"]);
    let base = dir.path().join("base");
    std::fs::create_dir_all(&base).unwrap();
    git(
        dir.path(),
        &["clone", "-q", "--bare", "work", "base/repo.git"],
    );

    let port = free_port();
    let _daemon = GitDaemon(
        Command::new("git")
            .arg("daemon")
            .arg("--export-all")
            .arg(format!("--base-path={}", base.display()))
            .args(["--reuseaddr", "--listen=127.0.0.1"])
            .arg(format!("--port={port}"))
            .env("HOME", dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn git daemon"),
    );
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        std::thread::sleep(Duration::from_millis(50));
    }

    let share = Share::start(&server.url, &token, port, &[]);
    let url = format!("git://{}/repo.git", share.addr());
    git(dir.path(), &["clone", "-q", &url, "clone"]);
    let cloned = git(&dir.path().join("clone"), &["rev-parse", "HEAD"]);
    assert_eq!(cloned, head);
    let file = std::fs::read(dir.path().join("clone/big.bin")).unwrap();
    assert_eq!(sha256(&file), sha256(&payload(2 * 1024 * 1024, 9)));
    assert!(share.next_line().starts_with("tcp "));
}

#[test]
fn a_held_port_is_a_conflict_and_one_outside_the_range_is_refused() {
    let (server, token, range, _dir) = setup();
    let wanted = (range.0 + 3).to_string();
    let share = Share::start(
        &server.url,
        &token,
        echo_service(),
        &["--remote-port", &wanted],
    );
    assert_eq!(share.port(), range.0 + 3);

    let local = echo_service().to_string();
    let (code, err) = run_fails(
        &server,
        &token,
        &["share", &local, "--tcp", "--remote-port", &wanted],
    );
    assert_eq!(code, 6, "{err}");
    assert!(
        err.contains(&format!("Port {wanted} is held by a live tunnel")),
        "{err}"
    );

    let outside = (range.1 + 1).to_string();
    let (code, err) = run_fails(
        &server,
        &token,
        &["share", &local, "--tcp", "--remote-port", &outside],
    );
    assert_eq!(code, 1, "{err}");
    let named = format!("outside this server's TCP ports {}-{}", range.0, range.1);
    assert!(err.contains(&named), "{err}");

    // Without --remote-port: the first free port of the range.
    let other = Share::start(&server.url, &token, echo_service(), &[]);
    assert_eq!(other.port(), range.0);
    assert_eq!(round_trip(&other.addr(), b"hi".to_vec()), b"hi");

    // The same refusals straight from the API, for scripts.
    let path = format!("/api/v1/tunnels/connect?kind=tcp&remote_port={outside}");
    let raw = format!(
        "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: Upgrade\r\nUpgrade: berth-relay/1\r\n\r\n"
    );
    let (status, _, body) = server.raw(&raw);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("bad_request"), "{body}");
    let raw = raw.replace(&outside, &wanted);
    let (status, _, body) = server.raw(&raw);
    assert_eq!(status, 409, "{body}");
}

#[test]
fn tcp_and_http_options_do_not_mix() {
    let (server, token, _, _dir) = setup();
    for args in [
        &["share", "3000", "--remote-port", "21000"][..],
        &["share", "3000", "--tcp", "--subdomain", "web"],
        &["share", "3000", "--tcp", "--remote-port", "0"],
        &["share", "3000", "--tcp", "--remote-port", "65536"],
    ] {
        let (code, err) = run_fails(&server, &token, args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    let (code, err) = run_fails(
        &server,
        &token,
        &["share", "3000", "--remote-port", "21000"],
    );
    assert_eq!(code, 2);
    assert!(err.contains("--tcp"), "{err}");
}

#[test]
fn closing_cuts_connections_and_frees_the_port_at_once() {
    let (server, token, _, _dir) = setup();
    let mut share = Share::start(&server.url, &token, echo_service(), &[]);
    let port = share.port();
    let (status, list) = server.call("GET", "/api/v1/tunnels?active=1", Some(&token), None);
    assert_eq!(status, 200);
    let tunnel = &list["tunnels"][0];
    assert_eq!(tunnel["kind"], "tcp");
    assert_eq!(tunnel["subdomain"], port.to_string());
    assert_eq!(tunnel["url"], format!("tcp://localhost:{port}"));
    assert_eq!(tunnel["active"], true);
    let id = tunnel["id"].as_str().unwrap().to_string();

    // An open public connection, proven live by an echo.
    let mut open = TcpStream::connect(share.addr()).unwrap();
    open.write_all(b"ping").unwrap();
    let mut got = [0u8; 4];
    open.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"ping");

    let (status, closed) = server.call(
        "DELETE",
        &format!("/api/v1/tunnels/{id}"),
        Some(&token),
        None,
    );
    assert_eq!(status, 200, "{closed}");
    assert_eq!(closed["active"], false);
    // At once: nothing listens, the open connection is cut, the port is claimable.
    assert!(TcpStream::connect(share.addr()).is_err());
    open.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    assert_eq!(open.read(&mut got).unwrap_or(0), 0);
    let wanted = port.to_string();
    let again = Share::start(
        &server.url,
        &token,
        echo_service(),
        &["--remote-port", &wanted],
    );
    assert_eq!(again.port(), port);
    assert_eq!(round_trip(&again.addr(), b"again".to_vec()), b"again");

    // The first share was told why and stopped rather than reconnecting.
    let status = share.child.wait().unwrap();
    assert_eq!(status.code(), Some(1));

    // `berth tunnels list` shows both, by their tcp:// address.
    let out = berth_with_token(&server.url, &token, &["tunnels", "list"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text.matches(&format!("tcp://localhost:{port}")).count(),
        2,
        "{text}"
    );
    assert!(text.contains("live") && text.contains("closed"), "{text}");
}

#[test]
fn revoking_with_disconnect_and_server_shutdown_close_tcp_tunnels() {
    let (mut server, token, _, _dir) = setup();
    let share = Share::start(&server.url, &token, echo_service(), &[]);
    let other_token = server.token_for("alice", "home", "other");
    let second = Share::start(&server.url, &other_token, echo_service(), &[]);
    assert_ne!(share.port(), second.port());

    let (status, me) = server.call("GET", "/api/v1/me", Some(&token), None);
    assert_eq!(status, 200);
    let token_id = me["token"]["id"].as_i64().unwrap();
    let path = format!("/api/v1/tokens/{token_id}?disconnect=1");
    let (status, body) = server.call("DELETE", &path, Some(&other_token), None);
    assert!(status == 200 || status == 204, "{status} {body}");
    assert!(TcpStream::connect(share.addr()).is_err());
    assert_eq!(round_trip(&second.addr(), b"still".to_vec()), b"still");

    server.terminate();
    assert!(TcpStream::connect(second.addr()).is_err());
}

#[test]
fn a_reconnect_after_a_drop_reclaims_the_same_port() {
    let (server, token, range, _dir) = setup();
    let cutter = Cutter::start(&server.addr);
    // Take the first port so the tunnel gets the second: a reconnect must not
    // drift back to the first free one.
    let _first = Share::start(&server.url, &token, echo_service(), &[]);
    let share = Share::start(&cutter.url, &token, echo_service(), &[]);
    assert_eq!(share.port(), range.0 + 1);
    drop(_first);
    cutter.cut();
    // The client reconnects with backoff; poll until the port echoes again.
    let mut echoed = false;
    for _ in 0..200 {
        if let Ok(mut s) = TcpStream::connect(share.addr()) {
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut got = [0u8; 2];
            if s.write_all(b"ok").is_ok() && s.read_exact(&mut got).is_ok() && &got == b"ok" {
                echoed = true;
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(echoed, "the tunnel came back on port {}", share.port());
}

#[test]
fn a_local_service_that_is_down_closes_the_public_connection_and_says_why() {
    let (server, token, _, _dir) = setup();
    let down = free_port();
    let share = Share::start(&server.url, &token, down, &[]);
    let mut public = TcpStream::connect(share.addr()).unwrap();
    public
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(public.read(&mut buf).unwrap_or(0), 0);
    let line = share.next_line();
    assert!(
        line.contains(&format!("could not reach 127.0.0.1:{down}")),
        "{line}"
    );
}

#[test]
fn a_malformed_port_range_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    for (args, env) in [
        (vec!["--tcp-ports", "20099-20000"], None),
        (vec!["--tcp-ports", "ports"], None),
        (vec![], Some("0-10")),
    ] {
        let mut command = Command::new(BIN);
        command
            .args(["server", "--listen", "127.0.0.1:0", "--data"])
            .arg(dir.path().join("data"))
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(value) = env {
            command.env("BERTH_TCP_PORTS", value);
        }
        let out = command.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?} {env:?}: {err}");
        assert!(err.contains("FIRST-LAST"), "{err}");
    }
}

/// A TCP tunnel opens no data connection ahead of need: its client dials the local
/// service per public connection, and a service that speaks first (SSH) or counts
/// connections (iperf3) must see only the real ones.
#[test]
fn the_local_service_sees_only_real_connections() {
    let (server, token, _, _dir) = setup();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            // Speak first, as an SSH server does.
            let _ = (&stream).write_all(b"SSH-2.0-berth-test\r\n");
            std::thread::sleep(Duration::from_secs(2));
        }
    });
    let share = Share::start(&server.url, &token, port, &[]);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        seen.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "no connection before a client"
    );
    let mut public = TcpStream::connect(share.addr()).unwrap();
    public
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut banner = [0u8; 20];
    public.read_exact(&mut banner).unwrap();
    assert_eq!(
        &banner, b"SSH-2.0-berth-test\r\n",
        "the service spoke first, through the tunnel"
    );
    assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[test]
fn a_dropped_tcp_tunnels_port_stays_its_crews_for_the_hold() {
    // While alice's share reconnects, the next TCP tunnel of another crew
    // used to get her port (the first free one), and her clients with it.
    let (mut server, alice, range, _dir) = setup();
    server.create_user("carol", "away", "owner");
    let carol = server.token_for("carol", "away", "share");
    let mut first = Share::start(&server.url, &alice, echo_service(), &[]);
    let port = first.port();
    assert_eq!(port, range.0);
    let _ = first.child.kill();
    let _ = first.child.wait();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "the tunnel stayed open"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Another crew: not as a free port, nor when asked for.
    let theirs = Share::start(&server.url, &carol, echo_service(), &[]);
    assert_ne!(theirs.port(), port);
    let wanted = port.to_string();
    let args = [
        "share",
        "--tcp",
        "--host",
        "127.0.0.1",
        "--remote-port",
        &wanted,
        "9",
    ];
    let (code, stderr) = run_fails(&server, &carol, &args);
    assert_eq!(code, 6, "{stderr}");
    assert!(stderr.contains("another crew"), "{stderr}");
    // Alice's crew has it back.
    let again = Share::start(
        &server.url,
        &alice,
        echo_service(),
        &["--remote-port", &wanted],
    );
    assert_eq!(again.port(), port);
    assert_eq!(round_trip(&again.addr(), b"back".to_vec()), b"back");

    // Through a restart too: the new server holds it for alice's crew.
    drop(theirs);
    server.terminate();
    let flag = format!("{}-{}", range.0, range.1);
    let server = Server::start_in(&server.data, &["--tcp-ports", &flag]);
    let theirs = Share::start(&server.url, &carol, echo_service(), &[]);
    assert_ne!(theirs.port(), port);
    drop(again);
}

#[test]
fn a_service_that_speaks_first_reaches_a_client_that_waits_and_bulk_flows_both_ways() {
    let (server, token, _range, _dir) = setup();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let down = payload(3 << 20, 7);
    let expected_down = down.clone();
    let service = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut writer = stream.try_clone().unwrap();
        // An SSH-like banner before any byte from the client, then bulk.
        let sending = std::thread::spawn(move || {
            writer.write_all(b"SSH-2.0-berth_test\r\n").unwrap();
            writer.write_all(&down).unwrap();
            writer.shutdown(Shutdown::Write).unwrap();
        });
        let mut up = Vec::new();
        (&stream).read_to_end(&mut up).unwrap();
        sending.join().unwrap();
        up
    });
    let share = Share::start(&server.url, &token, port, &[]);
    let stream = TcpStream::connect(share.addr()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut banner = [0u8; 20];
    (&stream).read_exact(&mut banner).unwrap();
    assert_eq!(&banner, b"SSH-2.0-berth_test\r\n");
    let up = payload(3 << 20, 9);
    let expected_up = sha256(&up);
    let mut writer = stream.try_clone().unwrap();
    let sending = std::thread::spawn(move || {
        writer.write_all(&up).unwrap();
        writer.shutdown(Shutdown::Write).unwrap();
    });
    let mut back = Vec::new();
    (&stream).read_to_end(&mut back).unwrap();
    sending.join().unwrap();
    assert_eq!(sha256(&back), sha256(&expected_down));
    assert_eq!(sha256(&service.join().unwrap()), expected_up);
    let line = share.next_line();
    let counted = format!("{} bytes in, {} bytes out", 3 << 20, (3 << 20) + 20);
    assert!(line.contains(&counted), "{line}");
}
