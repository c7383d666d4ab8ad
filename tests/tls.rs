//! TLS at the front door: the API, the session cookie, tunnels and the relay over
//! https with a private CA, an untrusted certificate refused by the CLI, and a
//! certificate reload on SIGHUP that keeps live tunnels.

mod common;
mod relay_support;

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{berth_with_token, Server, BIN, PASSWORD};
use relay_support::paced::{event, Paced, EVENTS};
use relay_support::Service;

/// A private CA made by openssl, and leaf certificates it signs for
/// localhost, 127.0.0.1 and *.berth.test (the tunnels' domain: TLS clients
/// refuse a wildcard over a single label such as *.localhost).
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        let pki = Pki {
            dir: tempfile::tempdir().unwrap(),
        };
        pki.sh(
            "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
             -keyout ca.key -out ca.pem -days 2 -subj /CN=berth-test-ca \
             -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign",
        );
        pki.issue("cert.pem", "key.pem");
        pki
    }

    /// A fresh leaf from the same CA, as a renewal would bring.
    fn issue(&self, cert: &str, key: &str) {
        self.sh(&format!(
            "openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout {key} \
             -out leaf.csr -subj /CN=localhost && \
             printf 'subjectAltName=DNS:localhost,DNS:*.berth.test,IP:127.0.0.1\\nbasicConstraints=CA:FALSE\\nextendedKeyUsage=serverAuth\\n' > ext && \
             openssl x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
             -out {cert} -days 2 -extfile ext"
        ));
    }

    fn sh(&self, script: &str) {
        let out = Command::new("sh")
            .args(["-c", script])
            .current_dir(self.dir.path())
            .output()
            .expect("openssl runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn arg(&self, name: &str) -> String {
        self.path(name).to_str().unwrap().to_string()
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A server with plain and TLS listeners; public URLs are the TLS ones.
fn tls_server(pki: &Pki) -> (Server, tempfile::TempDir, String) {
    tls_server_with(pki, &[])
}

/// [`tls_server`], with `extra` server flags.
fn tls_server_with(pki: &Pki, extra: &[&str]) -> (Server, tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let public = format!("https://localhost:{port}");
    let (listen, cert, key) = (
        format!("127.0.0.1:{port}"),
        pki.arg("cert.pem"),
        pki.arg("key.pem"),
    );
    let mut args = vec![
        "--listen-tls",
        &listen,
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
        "--public-url",
        &public,
        "--domain",
        "berth.test",
    ];
    args.extend_from_slice(extra);
    let server = Server::start_in(&dir.path().join("data"), &args);
    assert_eq!(
        server.tls_addr.as_deref(),
        Some(&*format!("127.0.0.1:{port}"))
    );
    server.create_user("alice", "home", "owner");
    (server, dir, public)
}

/// curl with the private CA; status line and body.
fn curl(pki: &Pki, url: &str, extra: &[&str]) -> (String, String) {
    let out = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "20",
            "-D",
            "-",
            "--cacert",
            &pki.arg("ca.pem"),
        ])
        .args(extra)
        .arg(url)
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    assert!(
        out.status.success(),
        "curl {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (head.to_string(), body.to_string())
}

fn berth(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .env_clear()
        .env("BERTH_CONFIG", "/nonexistent/berth-tls-test.json")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("berth runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A running `share`: the process, its stdout and stderr lines, its public URL.
struct Shared {
    child: Child,
    _lines: mpsc::Receiver<String>,
    errors: mpsc::Receiver<String>,
    url: String,
}

impl Drop for Shared {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn share(public: &str, pki: &Pki, token: &str, port: u16) -> Shared {
    let port = port.to_string();
    let args = [
        "share",
        &port,
        "--host",
        "127.0.0.1",
        "--subdomain",
        "secure",
    ];
    let mut child = berth_with_token(public, token, &args)
        .env("BERTH_CA_CERT", pki.path("ca.pem"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn share");
    let stderr = child.stderr.take().unwrap();
    let (tx, errors) = mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    // Keep reading stdout for as long as share runs: a closed pipe ends it.
    let (lines, url) = relay_support::share_output(&mut child);
    Shared {
        child,
        _lines: lines,
        errors,
        url,
    }
}

#[test]
fn the_api_and_the_cli_work_over_https_with_a_private_ca() {
    let pki = Pki::new();
    let (server, _dir, public) = tls_server(&pki);
    let (head, body) = curl(&pki, &format!("{public}/healthz"), &[]);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(body.contains("ok"), "{body}");

    let token = server.token_for("alice", "home", "tls");
    let ca = pki.arg("ca.pem");
    let (code, out, err) = berth(
        &[
            "whoami",
            "--server",
            &public,
            "--token",
            &token,
            "--ca-cert",
            &ca,
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("alice"), "{out}");
    // The same through the environment variable.
    let (code, _, err) = berth(
        &["whoami", "--server", &public, "--token", &token],
        &[("BERTH_CA_CERT", &ca)],
    );
    assert_eq!(code, 0, "{err}");
}

#[test]
fn an_untrusted_certificate_is_a_clear_error_never_a_downgrade() {
    let pki = Pki::new();
    let (server, _dir, public) = tls_server(&pki);
    let token = server.token_for("alice", "home", "tls");
    let (code, out, err) = berth(&["whoami", "--server", &public, "--token", &token], &[]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains(&public), "names the server: {err}");
    assert!(err.contains("certificate"), "says why: {err}");
    assert!(err.contains("--ca-cert"), "says what to do: {err}");
    assert_eq!(err.trim().lines().count(), 1, "one sentence: {err}");

    let service = Service::start();
    let (code, _, err) = berth(
        &[
            "share",
            &service.port.to_string(),
            "--server",
            &public,
            "--token",
            &token,
        ],
        &[],
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("localhost") && err.contains("--ca-cert"),
        "{err}"
    );
}

#[test]
fn the_session_cookie_is_host_prefixed_and_secure_under_an_https_public_url() {
    let pki = Pki::new();
    let (server, _dir, public) = tls_server(&pki);
    let body = format!(r#"{{"username":"alice","password":"{PASSWORD}"}}"#);
    let post = [
        "-X",
        "POST",
        "-H",
        "Content-Type: application/json",
        "--data",
        body.as_str(),
    ];
    let (head, _) = curl(&pki, &format!("{public}/api/v1/session"), &post);
    let cookie = head
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .unwrap_or_else(|| panic!("no cookie: {head}"));
    assert!(cookie.contains("__Host-"), "{cookie}");
    assert!(cookie.contains("Secure"), "{cookie}");

    // The plain listener too, as behind a proxy that ends TLS: the public URL
    // is https, so browsers reach it over https.
    let (head, _) = curl(&pki, &format!("{}/api/v1/session", server.url), &post);
    let cookie = head
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .unwrap_or_else(|| panic!("no cookie: {head}"));
    assert!(
        cookie.contains("__Host-") && cookie.contains("Secure"),
        "{cookie}"
    );
}

#[test]
fn tunnels_run_over_https_and_survive_a_certificate_reload() {
    let pki = Pki::new();
    let (server, _dir, public) = tls_server(&pki);
    let token = server.token_for("alice", "home", "tls");
    let service = Service::start();
    let shared = share(&public, &pki, &token, service.port);
    let url = shared.url.clone();
    let port = public.rsplit(':').next().unwrap();
    assert_eq!(url, format!("https://secure.berth.test:{port}"));
    let resolve = format!("secure.berth.test:{port}:127.0.0.1");
    let resolve = ["--resolve", resolve.as_str()];

    let (head, body) = curl(&pki, &format!("{url}/hello"), &resolve);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(body.contains("path=/hello"), "{body}");
    assert!(
        body.contains("xfp=https"),
        "the service hears the public scheme: {body}"
    );

    // Renew the certificate in place and tell the server.
    let before = fingerprint(&pki, port);
    pki.issue("cert.pem", "key.pem");
    server.signal("HUP");
    let said = server
        .next_output(Duration::from_secs(10))
        .unwrap_or_default();
    assert!(said.contains("reloaded the TLS certificate"), "{said}");
    assert_ne!(
        fingerprint(&pki, port),
        before,
        "new connections get the new certificate"
    );

    // The tunnel stayed up: no reconnect, and requests still pass.
    let (head, _) = curl(&pki, &format!("{url}/again"), &resolve);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        shared.errors.try_iter().all(|l| !l.contains("Reconnect")),
        "share reconnected"
    );

    // A broken file on reload keeps the certificate in use.
    std::fs::write(pki.path("key.pem"), "garbage").unwrap();
    server.signal("HUP");
    let said = server
        .next_output(Duration::from_secs(10))
        .unwrap_or_default();
    assert!(said.contains("kept the TLS certificate"), "{said}");
    let (head, _) = curl(&pki, &format!("{url}/still"), &resolve);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
}

#[test]
fn streamed_responses_flow_through_tls_on_both_legs() {
    let pki = Pki::new();
    let (server, _dir, public) = tls_server(&pki);
    let token = server.token_for("alice", "home", "tls");
    let paced = Paced::start();
    let shared = share(&public, &pki, &token, paced.port);
    let port = public.rsplit(':').next().unwrap();
    let resolve = format!("secure.berth.test:{port}:127.0.0.1");
    let whole: String = (0..EVENTS).map(event).collect();
    for path in ["/events", "/until-close"] {
        // -N: curl writes each piece out as it gets it.
        let mut curl = Command::new("curl")
            .args(["-sS", "-N", "--max-time", "30", "--cacert"])
            .arg(pki.path("ca.pem"))
            .args(["--resolve", &resolve])
            .arg(format!("{}{path}", shared.url))
            .stdout(Stdio::piped())
            .spawn()
            .expect("curl runs");
        let mut stdout = curl.stdout.take().unwrap();
        let watched = paced.watch(&mut stdout);
        // The service's word first: it names the event that was held back.
        paced.outcome().unwrap();
        assert_eq!(
            String::from_utf8(watched.unwrap()).unwrap(),
            whole,
            "{path}"
        );
        assert!(curl.wait().unwrap().success(), "{path}");
    }
}

#[test]
fn bad_certificate_files_stop_the_server_with_a_sentence() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = berth(
        &[
            "server",
            "--listen",
            "127.0.0.1:0",
            "--listen-tls",
            "127.0.0.1:0",
            "--data",
            dir.path().to_str().unwrap(),
            "--tls-cert",
            &pki.arg("key.pem"),
            "--tls-key",
            &pki.arg("key.pem"),
        ],
        &[],
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("No certificate found"), "{err}");
    let (code, _, err) = berth(
        &[
            "server",
            "--data",
            dir.path().to_str().unwrap(),
            "--tls-cert",
            &pki.arg("cert.pem"),
        ],
        &[],
    );
    assert_eq!(code, 2, "--tls-cert needs --tls-key: {err}");
}

/// The SHA-256 fingerprint of the certificate the TLS listener presents now.
fn fingerprint(pki: &Pki, port: &str) -> String {
    let out = Command::new("sh")
        .args([
            "-c",
            &format!(
                "openssl s_client -connect 127.0.0.1:{port} -servername localhost -CAfile {} </dev/null 2>/dev/null | openssl x509 -noout -fingerprint -sha256",
                pki.path("ca.pem").display()
            ),
        ])
        .output()
        .expect("openssl runs");
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(text.contains("Fingerprint"), "openssl s_client: {text}");
    text
}

#[test]
fn share_never_follows_a_token_from_https_to_plain_http() {
    let pki = Pki::new();
    let (server, _dir, public) = tls_server(&pki);
    // A plain-http listener on the same host name the CLI was pointed at.
    let trap = TcpListener::bind("127.0.0.1:0").unwrap();
    trap.set_nonblocking(true).unwrap();
    let plain = format!("http://localhost:{}", trap.local_addr().unwrap().port());
    let (status, reply) = server.call_basic(
        "POST",
        "/api/v1/tokens",
        "alice",
        PASSWORD,
        Some(&serde_json::json!({"name": "downgraded", "server": plain})),
    );
    assert_eq!(status, 201, "{reply}");
    let token = reply["secret"].as_str().unwrap();
    for extra in [&[][..], &["--follow-server"][..]] {
        let args = [&["share", "9"][..], extra].concat();
        let out = berth_with_token(&public, token, &args)
            .env("BERTH_CA_CERT", pki.path("ca.pem"))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{extra:?}: {stderr}");
        assert!(
            stderr.contains(&plain) && stderr.contains("never moves from https"),
            "{stderr}"
        );
        assert!(trap.accept().is_err(), "share connected to {plain}");
    }
}

/// How long a trickling client is given before the test calls the server's
/// deadline missing: the handshake and the first head share 10 s from accept.
const TRICKLE_GIVE_UP: Duration = Duration::from_secs(16);
/// One byte per this much: well within any per-read timeout of 10 s.
const TRICKLE_EVERY: Duration = Duration::from_millis(1500);

/// A rustls client for localhost trusting the test CA.
fn tls_client(pki: &Pki) -> rustls::ClientConnection {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(pki.path("ca.pem")).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    rustls::ClientConnection::new(std::sync::Arc::new(config), "localhost".try_into().unwrap())
        .unwrap()
}

/// Send `bytes` one at a time, `TRICKLE_EVERY` apart, reading what comes back
/// meanwhile, until the server closes or `TRICKLE_GIVE_UP` after `from`:
/// the bytes received, and how long after `from` the connection closed.
fn trickle(tcp: &mut TcpStream, bytes: &[u8], from: Instant) -> (Vec<u8>, Option<Duration>, usize) {
    let mut got = Vec::new();
    let mut sent = 0;
    tcp.set_read_timeout(Some(TRICKLE_EVERY)).unwrap();
    while from.elapsed() < TRICKLE_GIVE_UP {
        if sent < bytes.len() && tcp.write_all(&bytes[sent..=sent]).is_ok() {
            sent += 1;
        }
        let mut buf = [0u8; 4096];
        match tcp.read(&mut buf) {
            Ok(0) => return (got, Some(from.elapsed()), sent),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return (got, Some(from.elapsed()), sent),
        }
    }
    (got, None, sent)
}

#[test]
fn a_trickled_handshake_or_head_is_cut_at_one_deadline() {
    let pki = Pki::new();
    let (server, _dir, _public) = tls_server(&pki);
    let addr = server.tls_addr.clone().unwrap();

    // A ClientHello a byte at a time: closed at the deadline, unfinished.
    let mut hello = Vec::new();
    tls_client(&pki).write_tls(&mut hello).unwrap();
    let started = Instant::now();
    let mut tcp = TcpStream::connect(&addr).unwrap();
    let (_, closed, sent) = trickle(&mut tcp, &hello, started);
    let closed = closed.expect("a trickled ClientHello holds the connection past the deadline");
    assert!(sent < hello.len(), "the hello finished: {sent} bytes");
    assert!(closed < Duration::from_secs(13), "closed after {closed:?}");

    // A quick handshake, then the head's one record a byte at a time: 408
    // by the same deadline, as for plain HTTP.
    let started = Instant::now();
    let mut tcp = TcpStream::connect(&addr).unwrap();
    let mut client = tls_client(&pki);
    while client.is_handshaking() {
        client.complete_io(&mut tcp).unwrap();
    }
    client
        .writer()
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut record = Vec::new();
    while client.wants_write() {
        client.write_tls(&mut record).unwrap();
    }
    let (got, closed, sent) = trickle(&mut tcp, &record, started);
    let closed = closed.expect("a trickled head holds the connection past the deadline");
    assert!(sent < record.len(), "the head finished: {sent} bytes");
    assert!(closed < Duration::from_secs(13), "closed after {closed:?}");
    client.read_tls(&mut &got[..]).unwrap();
    client.process_new_packets().unwrap();
    let mut answer = String::new();
    let _ = client.reader().read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
}

#[test]
fn a_tcp_tunnel_over_tls_passes_half_closes_and_bulk_both_ways() {
    let pki = Pki::new();
    let range = common::free_tcp_ports(2);
    let ports = format!("{}-{}", range.0, range.1);
    let (server, _dir, public) = tls_server_with(&pki, &["--tcp-ports", &ports]);
    let token = server.token_for("alice", "home", "share");
    // A service that reads the whole request to EOF, then answers it reversed.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let local = listener.local_addr().unwrap().port().to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            std::thread::spawn(move || {
                let mut got = Vec::new();
                (&stream).read_to_end(&mut got).unwrap();
                got.reverse();
                (&stream).write_all(&got).unwrap();
            });
        }
    });
    let args = ["share", "--tcp", "--host", "127.0.0.1", local.as_str()];
    let mut child = berth_with_token(&public, &token, &args)
        .env("BERTH_CA_CERT", pki.path("ca.pem"))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let (lines, url) = relay_support::share_output(&mut child);
    let addr = format!("127.0.0.1:{}", url.rsplit(':').next().unwrap());
    let sent: Vec<u8> = (0..2_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let stream = TcpStream::connect(&addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    let payload = sent.clone();
    let sending = std::thread::spawn(move || {
        writer.write_all(&payload).unwrap();
        writer.shutdown(std::net::Shutdown::Write).unwrap();
    });
    let mut back = Vec::new();
    (&stream).read_to_end(&mut back).unwrap();
    sending.join().unwrap();
    let mut expected = sent;
    expected.reverse();
    assert!(back == expected, "{} bytes back", back.len());
    let line = lines.recv_timeout(Duration::from_secs(20)).unwrap();
    assert!(
        line.contains("2000000 bytes in, 2000000 bytes out"),
        "{line}"
    );
    let _ = child.kill();
    let _ = child.wait();
}
