//! Who may have a subdomain: the server's own names are never a tunnel's, a
//! crew keeps a name for `--subdomain-hold` after its last tunnel on it closed
//! (a restart included), and crews reserve names (`berth subdomains`).

mod common;
mod relay_support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{berth_with_token, run_with_token, Server, BIN};
use relay_support::{Service, Share};
use serde_json::json;

/// A server on a fresh data directory with extra flags; the directory lives
/// as long as the returned guard.
fn server_with(flags: &[&str]) -> (Server, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_in(&dir.path().join("data"), flags);
    (server, dir)
}

/// Crew `home`: alice (owner), bob (member), vic (viewer); crew `away`: carol
/// (owner). Their tokens, in that order.
fn people(server: &Server) -> [String; 4] {
    server.create_user("alice", "home", "owner");
    server.create_user("bob", "home", "member");
    server.create_user("vic", "home", "viewer");
    server.create_user("carol", "away", "owner");
    [
        server.token_for("alice", "home", "t"),
        server.token_for("bob", "home", "t"),
        server.token_for("vic", "home", "t"),
        server.token_for("carol", "away", "t"),
    ]
}

/// `berth share PORT --subdomain NAME`: the running share once it printed
/// its URL, or its exit code and stderr if it stopped first.
fn share(server: &Server, token: &str, port: u16, name: &str) -> Result<Share, (i32, String)> {
    let port = port.to_string();
    let args = ["share", &port, "--host", "127.0.0.1", "--subdomain", name];
    let mut child = berth_with_token(&server.url, token, &args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn berth share");
    let stdout = child.stdout.take().unwrap();
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(first) = lines.recv_timeout(Duration::from_millis(50)) {
            let url = first
                .strip_prefix("Forwarding ")
                .and_then(|rest| rest.split_whitespace().next())
                .unwrap_or_else(|| panic!("unexpected first line: {first}"))
                .to_string();
            return Ok(Share { child, lines, url });
        }
        if let Some(status) = child.try_wait().unwrap() {
            return Err((status.code().unwrap_or(-1), stderr_of(&mut child)));
        }
        assert!(Instant::now() < deadline, "share neither ran nor stopped");
    }
}

fn stderr_of(child: &mut Child) -> String {
    let mut text = String::new();
    if let Some(mut err) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut err, &mut text);
    }
    text
}

/// Stop a share without a word and wait until the server closed its tunnel.
fn kill(server: &Server, token: &str, mut share: Share) {
    let _ = share.child.kill();
    let _ = share.child.wait();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = server.call("GET", "/api/v1/tunnels?active=1", Some(token), None);
        assert_eq!(status, 200, "{body}");
        if body["tunnels"].as_array().unwrap().is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "the tunnel stayed open");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The status and body of `GET path` with a Host header.
fn get_with_host(server: &Server, host: &str, path: &str) -> (u16, String) {
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    let (status, _, body) = server.raw(&request);
    (status, body)
}

/// Refused as a name another crew holds: exit 6 and a sentence saying so.
fn assert_taken(outcome: Result<Share, (i32, String)>) {
    match outcome {
        Ok(share) => panic!("share got {} although the name is taken", share.url),
        Err((code, stderr)) => {
            assert_eq!(code, 6, "{stderr}");
            assert!(stderr.contains("is taken"), "{stderr}");
        }
    }
}

#[test]
fn the_public_urls_host_reaches_the_api_and_its_name_is_never_a_tunnels() {
    let (server, _dir) = server_with(&[
        "--public-url",
        "http://dash.example.com",
        "--domain",
        "example.com",
    ]);
    let [alice, ..] = people(&server);
    let service = Service::start();
    // `dash` is the server's own name: refused like a reserved one.
    match share(&server, &alice, service.port, "dash") {
        Ok(share) => panic!("share got {}", share.url),
        Err((code, stderr)) => {
            assert_eq!(code, 1, "{stderr}");
            assert!(stderr.contains("own name"), "{stderr}");
        }
    }
    let (status, body) = server.call(
        "POST",
        "/api/v1/subdomains",
        Some(&alice),
        Some(&json!({"name": "dash"})),
    );
    assert_eq!(status, 400, "{body}");
    // Another name under the domain is a tunnel as usual...
    let _app = share(&server, &alice, service.port, "shop").unwrap();
    let (status, body) = get_with_host(&server, "shop.example.com", "/x");
    assert_eq!(status, 200);
    assert!(body.starts_with("path=/x "), "{body}");
    // ...and the public URL's host is the API and the dashboard.
    let (status, body) = get_with_host(&server, "Dash.Example.com:80", "/api/v1/me");
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("no_token"), "{body}");
    let (status, body) = get_with_host(&server, "dash.example.com", "/");
    assert_eq!(status, 200);
    assert!(body.contains("<html"), "{body}");
    // A final dot names the same host: the tunnel's, and the server's own.
    let (status, body) = get_with_host(&server, "shop.example.com.", "/y");
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("path=/y "), "{body}");
    let (status, body) = get_with_host(&server, "DASH.example.com.:8080", "/api/v1/me");
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("no_token"), "{body}");
}

/// openssl in `dir`: a self-signed certificate for the given DNS names.
fn certificate(dir: &Path, names: &[&str]) {
    let san = names
        .iter()
        .map(|n| format!("DNS:{n}"))
        .collect::<Vec<_>>()
        .join(",");
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "key.pem",
            "-out",
            "cert.pem",
            "-days",
            "2",
            "-subj",
            "/CN=edge.example.com",
            "-addext",
        ])
        .arg(format!("subjectAltName={san}"))
        .current_dir(dir)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_certificates_names_are_never_a_tunnels_and_a_shared_domain_is_warned_about() {
    let pki = tempfile::tempdir().unwrap();
    certificate(pki.path(), &["edge.example.com", "*.example.com"]);
    let data = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .args([
            "server",
            "--listen",
            "127.0.0.1:0",
            "--listen-tls",
            "127.0.0.1:0",
        ])
        .args([
            "--domain",
            "example.com",
            "--public-url",
            "https://panel.example.com",
        ])
        .arg("--tls-cert")
        .arg(pki.path().join("cert.pem"))
        .arg("--tls-key")
        .arg(pki.path().join("key.pem"))
        .arg("--data")
        .arg(data.path())
        .env_remove("BERTH_DATA")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut addr = None;
    while addr.is_none() {
        let mut line = String::new();
        assert!(stdout.read_line(&mut line).unwrap() > 0, "server ended");
        addr = line
            .strip_prefix("berth listening on http://")
            .and_then(|rest| rest.split_whitespace().next())
            .map(str::to_string);
    }
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let (tx, warnings) = mpsc::channel();
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let warning = warnings
        .recv_timeout(Duration::from_secs(20))
        .unwrap_or_default();
    let server_url = format!("http://{}", addr.unwrap());
    let owner = Command::new(BIN)
        .args([
            "admin",
            "create-user",
            "ana",
            "--crew",
            "c",
            "--role",
            "owner",
        ])
        .args(["--password-stdin", "--data"])
        .arg(data.path())
        .stdin(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin
                .take()
                .unwrap()
                .write_all(b"correct horse battery\n")?;
            c.wait()
        })
        .unwrap();
    assert!(owner.success());
    let token = common::request_at(
        server_url.trim_start_matches("http://"),
        "POST",
        "/api/v1/tokens",
        Some("Basic YW5hOmNvcnJlY3QgaG9yc2UgYmF0dGVyeQ=="),
        Some(&json!({"name": "t"})),
    )
    .1["secret"]
        .as_str()
        .unwrap()
        .to_string();
    let out = run_with_token(&server_url, &token, &["subdomains", "reserve", "edge"]);
    // A renewed certificate with a new name, re-read on SIGHUP: that name too.
    let fresh = run_with_token(&server_url, &token, &["subdomains", "reserve", "fresh"]);
    assert_eq!(fresh.code, 0, "{}", fresh.stderr);
    certificate(pki.path(), &["fresh.example.com", "*.example.com"]);
    let status = Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut reloaded = String::new();
    while !reloaded.contains("reloaded the TLS certificate") {
        reloaded.clear();
        assert!(stdout.read_line(&mut reloaded).unwrap() > 0, "server ended");
    }
    let renewed = run_with_token(&server_url, &token, &["subdomains", "reserve", "fresh2"]);
    let refused = run_with_token(&server_url, &token, &["share", "1", "--subdomain", "fresh"]);
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        warning.contains("panel.example.com") && warning.contains("separate tunnel domain"),
        "{warning}"
    );
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("own name"), "{}", out.stderr);
    assert_eq!(renewed.code, 0, "{}", renewed.stderr);
    assert_eq!(refused.code, 1, "{}", refused.stderr);
    assert!(refused.stderr.contains("own name"), "{}", refused.stderr);
}

#[test]
fn another_crew_waits_out_the_hold_the_same_crew_does_not() {
    let (server, _dir) = server_with(&["--subdomain-hold", "5s"]);
    let [alice, bob, _, carol] = people(&server);
    let service = Service::start();
    let first = share(&server, &alice, service.port, "keep").unwrap();
    // While live, and held after it closes, another crew is refused.
    assert_taken(share(&server, &carol, service.port, "keep"));
    kill(&server, &alice, first);
    assert_taken(share(&server, &carol, service.port, "keep"));
    // Any member of the crew takes it back (a reconnect would too).
    let again = share(&server, &bob, service.port, "keep").unwrap();
    let (status, body) = get_with_host(&server, "keep.localhost", "/back");
    assert_eq!(status, 200, "{body}");
    kill(&server, &alice, again);
    let (status, body) = server.call("GET", "/api/v1/subdomains", Some(&alice), None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["subdomains"][0]["name"], "keep", "{body}");
    assert!(body["subdomains"][0]["held_until"].is_string(), "{body}");
    assert_taken(share(&server, &carol, service.port, "keep"));
    // The hold ends: the other crew may have it then.
    std::thread::sleep(Duration::from_secs(6));
    let theirs = share(&server, &carol, service.port, "keep").unwrap();
    assert!(
        theirs.url.starts_with("http://keep.localhost:"),
        "{}",
        theirs.url
    );
}

#[test]
fn a_restart_keeps_the_hold() {
    let (mut server, dir) = server_with(&[]);
    let [alice, _, _, carol] = people(&server);
    let service = Service::start();
    let live = share(&server, &alice, service.port, "stay").unwrap();
    // A crash: the server never saw the tunnel close.
    server.kill9();
    drop(live);
    let server = Server::start_in(&dir.path().join("data"), &[]);
    assert_taken(share(&server, &carol, service.port, "stay"));
    assert!(share(&server, &alice, service.port, "stay").is_ok());
}

#[test]
fn reserved_names_belong_to_their_crew_until_released() {
    let (server, _dir) = server_with(&["--subdomain-hold", "0s"]);
    let [alice, bob, vic, carol] = people(&server);
    let reserve = |token: &str, name: &str| {
        server.call(
            "POST",
            "/api/v1/subdomains",
            Some(token),
            Some(&json!({ "name": name })),
        )
    };
    // Members and viewers may not reserve; admins and owners may.
    assert_eq!(reserve(&bob, "shop").0, 403);
    assert_eq!(reserve(&vic, "shop").0, 403);
    let out = run_with_token(&server.url, &bob, &["subdomains", "reserve", "shop"]);
    assert_eq!(out.code, 4, "{}", out.stderr);
    let out = run_with_token(&server.url, &alice, &["subdomains", "reserve", "shop"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("Reserved shop"), "{}", out.stdout);
    let out = run_with_token(&server.url, &alice, &["subdomains", "reserve", "www"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert_eq!(reserve(&alice, "www").0, 400);

    // Listed for the crew (viewers too), not for another crew.
    let out = run_with_token(&server.url, &vic, &["subdomains", "list"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains("shop") && out.stdout.contains("reserved"),
        "{}",
        out.stdout
    );
    let (_, theirs) = server.call("GET", "/api/v1/subdomains", Some(&carol), None);
    assert_eq!(theirs["subdomains"], json!([]));

    // Another crew can neither share on it, reserve it nor release it.
    let service = Service::start();
    assert_taken(share(&server, &carol, service.port, "shop"));
    let (status, body) = reserve(&carol, "shop");
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "conflict");
    let (status, _) = server.call("DELETE", "/api/v1/subdomains/shop", Some(&carol), None);
    assert_eq!(status, 404);
    let out = run_with_token(&server.url, &carol, &["subdomains", "release", "shop"]);
    assert_eq!(out.code, 5, "{}", out.stderr);
    // Any member of the crew shares on it, even with no hold.
    let ours = share(&server, &bob, service.port, "shop").unwrap();
    kill(&server, &alice, ours);
    assert_taken(share(&server, &carol, service.port, "shop"));
    // Members cannot release; the owner can, and then it is free.
    let (status, _) = server.call("DELETE", "/api/v1/subdomains/shop", Some(&bob), None);
    assert_eq!(status, 403);
    let out = run_with_token(&server.url, &alice, &["subdomains", "release", "shop"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("Released shop"), "{}", out.stdout);
    assert!(share(&server, &carol, service.port, "shop").is_ok());

    // Both changes are audited as the owner's.
    let db = server.db();
    let actions: Vec<(String, String)> = db
        .prepare("SELECT action, username FROM audit WHERE action LIKE 'subdomain.%' ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let alice_did = |a: &str| (a.to_string(), "alice".to_string());
    assert_eq!(
        actions,
        [
            alice_did("subdomain.reserve"),
            alice_did("subdomain.release")
        ]
    );
}

#[test]
fn an_encoded_international_name_that_may_look_like_another_is_refused() {
    let (server, _dir) = server_with(&[
        "--public-url",
        "http://dash.example.com",
        "--domain",
        "example.com",
    ]);
    let [alice, ..] = people(&server);
    // `xn--dsh-5na` is how a browser is sent to `dåsh`: a look-alike of the
    // server's own `dash`, where a sign-in form would collect passwords.
    let bearer = format!("Bearer {alice}");
    let headers = [
        ("Authorization", bearer.as_str()),
        ("Connection", "Upgrade"),
        ("Upgrade", "berth-relay/1"),
    ];
    for name in ["xn--dsh-5na", "ab--cd"] {
        let target = format!("/api/v1/tunnels/connect?subdomain={name}");
        let reply = server.send("GET", &target, &headers, "");
        assert_eq!(reply.status, 400, "{name}: {}", reply.text);
        assert!(reply.text.contains("international"), "{}", reply.text);
        let (status, body) = server.call(
            "POST",
            "/api/v1/subdomains",
            Some(&alice),
            Some(&json!({ "name": name })),
        );
        assert_eq!(status, 400, "{name}: {body}");
    }
    // `share` says so before it connects.
    let service = Service::start();
    match share(&server, &alice, service.port, "xn--dsh-5na") {
        Ok(share) => panic!("share got {}", share.url),
        Err((code, stderr)) => {
            assert_eq!(code, 2, "{stderr}");
            assert!(stderr.contains("international"), "{stderr}");
        }
    }
    // Two dashes elsewhere are an ordinary name.
    assert!(share(&server, &alice, service.port, "shop--2").is_ok());
}

/// Open a tunnel on `name` with a raw control connection and drop it at once
/// (waiting out the member's tunnel limit while earlier ones close).
fn open_and_drop(server: &Server, token: &str, name: &str) {
    use std::io::{Read, Write};
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut control = std::net::TcpStream::connect(&server.addr).unwrap();
        write!(
            control,
            "GET /api/v1/tunnels/connect?subdomain={name} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\nConnection: Upgrade\r\nUpgrade: berth-relay/1\r\n\r\n",
            server.addr
        )
        .unwrap();
        let mut start = [0u8; 12];
        control.read_exact(&mut start).unwrap();
        let start = String::from_utf8_lossy(&start).into_owned();
        if start.ends_with(" 101") {
            return;
        }
        assert!(start.ends_with(" 403"), "{name}: {start}");
        assert!(Instant::now() < deadline, "{name}: the limit never let up");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_crew_holds_and_reserves_a_bounded_number_of_names() {
    // With the server's default of 50 tunnels per crew, a crew holds 100
    // names after use, and reserves 100, at most.
    let (server, _dir) = server_with(&[]);
    let [alice, _, _, carol] = people(&server);
    // Opening and closing tunnels, one member would otherwise hold every
    // name it touched for a day, and keep them by doing it again.
    for i in 0..110 {
        open_and_drop(&server, &carol, &format!("squat{i}"));
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let held = loop {
        let (_, live) = server.call("GET", "/api/v1/tunnels?active=1", Some(&carol), None);
        let (_, names) = server.call("GET", "/api/v1/subdomains", Some(&carol), None);
        if live["tunnels"].as_array().unwrap().is_empty() {
            break names["subdomains"].as_array().unwrap().clone();
        }
        assert!(Instant::now() < deadline, "the tunnels stayed open");
        std::thread::sleep(Duration::from_millis(50));
    };
    let names: Vec<&str> = held.iter().filter_map(|r| r["name"].as_str()).collect();
    assert_eq!(names.len(), 100, "{names:?}");
    // The latest are held; the first ones are free for others.
    let service = Service::start();
    assert_taken(share(&server, &alice, service.port, "squat109"));
    let first = share(&server, &alice, service.port, "squat0").unwrap();
    assert!(first.url.starts_with("http://squat0."), "{}", first.url);

    let reserve = |name: &str| {
        server.call(
            "POST",
            "/api/v1/subdomains",
            Some(&alice),
            Some(&json!({ "name": name })),
        )
    };
    for i in 0..100 {
        let (status, body) = reserve(&format!("mine{i}"));
        assert_eq!(status, 201, "{body}");
    }
    let (status, body) = reserve("mine100");
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "quota_exceeded");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("release one first"),
        "{body}"
    );
    // Asking again for one it has is no new reservation.
    assert_eq!(reserve("mine7").0, 201);
}
