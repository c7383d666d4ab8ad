//! berth behind Debian's nginx, configured as the README shows: the client
//! address berth records and passes on is the one nginx names in
//! X-Forwarded-For (never what the client claims), and upgrades pass through.

mod common;
mod relay_support;

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::Server;
use relay_support::{Service, Share};

/// The nginx binary: on PATH, or where Debian puts it (/usr/sbin is not on
/// every user's PATH). scripts/test.sh and .ci/run install it.
fn nginx_binary() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|dir| dir.join("nginx"));
    on_path
        .chain([PathBuf::from("/usr/sbin/nginx")])
        .find(|path| path.is_file())
        .expect("nginx is not installed: apt-get install nginx (scripts/test.sh does)")
}

/// nginx in the foreground on `port`, in one process as the current user,
/// with its pid, logs and temp files in `dir`; killed on Drop.
struct Nginx {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The README's nginx configuration (its ```nginx block), made local: it
/// listens on `port` without TLS, for `localhost` names, and proxies to
/// berth on `upstream`; each line changed must be there, so the README and
/// this test cannot drift apart.
fn readme_server_block(port: u16, upstream: &str) -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let start = readme
        .find("```nginx\n")
        .expect("an nginx block in the README")
        + 9;
    let block = &readme[start..start + readme[start..].find("```").unwrap()];
    let mut changed = 0;
    let lines: Vec<String> = block
        .lines()
        .filter_map(|line| {
            let trimmed = line.trim_start();
            let local = if trimmed.starts_with("listen ") {
                format!("    listen 127.0.0.1:{port};")
            } else if trimmed.starts_with("server_name ") {
                "    server_name localhost *.localhost;".to_string()
            } else if trimmed.starts_with("proxy_pass ") {
                format!("        proxy_pass http://{upstream};")
            } else if trimmed.starts_with("ssl_certificate") {
                changed += 1;
                return None;
            } else {
                return Some(line.to_string());
            };
            changed += 1;
            Some(local)
        })
        .collect();
    assert_eq!(
        changed, 5,
        "the README's nginx block changed shape:\n{block}"
    );
    lines.join("\n")
}

/// A whole nginx configuration around the README's block: one process, the
/// current user, its pid, logs and temp files in `dir`.
fn config(dir: &Path, port: u16, upstream: &str) -> String {
    let d = dir.display();
    let block = readme_server_block(port, upstream);
    format!(
        "master_process off;
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{ worker_connections 64; }}
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
{block}
}}
"
    )
}

impl Nginx {
    fn start(upstream: &str) -> Nginx {
        let dir = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let conf = dir.path().join("nginx.conf");
        std::fs::write(&conf, config(dir.path(), port, upstream)).unwrap();
        let child = Command::new(nginx_binary())
            .arg("-c")
            .arg(&conf)
            .arg("-p")
            .arg(dir.path())
            .args(["-g", "daemon off;"])
            .stdin(Stdio::null())
            .spawn()
            .expect("nginx starts");
        let nginx = Nginx { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            let log = std::fs::read_to_string(nginx.dir.path().join("error.log"));
            assert!(
                Instant::now() < deadline,
                "nginx did not listen: {}",
                log.unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        nginx
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

/// curl from `source` (another loopback address) with headers: the body.
fn curl_from(source: &str, url: &str, headers: &[&str]) -> String {
    let mut command = Command::new("curl");
    command.args([
        "-s",
        "-S",
        "--fail",
        "--max-time",
        "10",
        "--interface",
        source,
    ]);
    for header in headers {
        command.args(["-H", header]);
    }
    let out = command.arg(url).output().expect("curl runs");
    assert!(
        out.status.success(),
        "curl {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn behind_nginx_the_client_is_the_one_nginx_names_and_upgrades_pass() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_in(
        &dir.path().join("data"),
        &["--trusted-proxy", "127.0.0.1/32"],
    );
    server.create_user("alice", "home", "owner");
    let token = server.token_for("alice", "home", "share");
    let service = Service::start();
    let port = service.port.to_string();
    let args = ["--host", "127.0.0.1", "--subdomain", "web", port.as_str()];
    let _share = Share::spawn(&server.url, &token, &args, Stdio::inherit());
    let nginx = Nginx::start(&server.addr);

    // A visitor at 127.0.0.2, claiming to be someone else: berth passes on
    // the address nginx saw.
    let who = curl_from(
        "127.0.0.2",
        &nginx.url("/who"),
        &["Host: web.localhost", "X-Forwarded-For: 6.6.6.6"],
    );
    assert!(who.contains("xff=127.0.0.2 "), "{who}");
    assert!(who.contains("host=web.localhost "), "{who}");

    // The API records it as the token's last address.
    let api = server.token_for("alice", "home", "api");
    let me = curl_from(
        "127.0.0.3",
        &nginx.url("/api/v1/me"),
        &[&format!("Authorization: Bearer {api}")],
    );
    assert!(me.contains("alice"), "{me}");
    let ip: String = server
        .db()
        .query_row(
            "SELECT last_used_ip FROM tokens WHERE name = 'api'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(ip, "127.0.0.3");

    // An upgrade passes through nginx and the tunnel, both ways.
    let stream = TcpStream::connect(("127.0.0.1", nginx.port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    (&stream)
        .write_all(b"GET /socket HTTP/1.1\r\nHost: web.localhost\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert!(line.starts_with("HTTP/1.1 101"), "{line}");
    while line != "\r\n" {
        line.clear();
        reader.read_line(&mut line).unwrap();
    }
    for message in ["hello\n", "through nginx\n"] {
        (&stream).write_all(message.as_bytes()).unwrap();
        line.clear();
        reader.read_line(&mut line).unwrap();
        assert_eq!(line, message);
    }
}
