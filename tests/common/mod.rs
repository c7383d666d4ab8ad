//! Fixtures for integration tests: the real `berth server` on an ephemeral port with
//! its own data directory, killed on Drop, and a small HTTP helper.
#![allow(dead_code)]

pub mod cli;

use std::hash::{BuildHasher, RandomState};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Mutex};
use std::time::Duration;

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_berth");
pub const PASSWORD: &str = "correct horse battery";

/// Where `free_tcp_ports` looks: from here up to the ports the OS hands out itself.
const TCP_PORTS_FROM: u16 = 10_000;

/// `len` consecutive ports on 127.0.0.1 that nothing listens on, as (first,
/// last), for a server's `--tcp-ports`: tests run in parallel, so none names
/// fixed ports. The server binds a port only when a tunnel claims it, so the
/// range is picked below the ports the OS hands out for port 0 and for
/// outgoing connections (any socket of a parallel test could otherwise take
/// one meanwhile), at random, each port checked by binding it, and never
/// twice in one test binary.
pub fn free_tcp_ports(len: u16) -> (u16, u16) {
    static GIVEN: Mutex<Vec<(u16, u16)>> = Mutex::new(Vec::new());
    let below = ephemeral_ports_start().max(TCP_PORTS_FROM + 2 * len);
    loop {
        let span = u64::from(below - TCP_PORTS_FROM - len);
        let first = TCP_PORTS_FROM + (RandomState::new().hash_one(0u8) % span) as u16;
        let last = first + len - 1;
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if given.iter().any(|&(a, b)| first <= b && a <= last) {
            continue;
        }
        if (first..=last).all(|port| TcpListener::bind(("127.0.0.1", port)).is_ok()) {
            given.push((first, last));
            return (first, last);
        }
    }
}

/// The first port of the OS's ephemeral range (Linux's, else the IANA one).
fn ephemeral_ports_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse().ok())
        .unwrap_or(49152)
}

/// A running server; its data directory outlives restarts of the process.
pub struct Server {
    child: Option<Child>,
    pub url: String,
    pub addr: String,
    pub setup_code: Option<String>,
    /// The TLS listener's address, when started with --tls-cert.
    pub tls_addr: Option<String>,
    pub data: PathBuf,
    _dir: Option<tempfile::TempDir>,
    output: mpsc::Receiver<String>,
}

impl Server {
    /// A fresh server with an empty data directory.
    pub fn start() -> Server {
        let dir = tempfile::tempdir().expect("temp dir");
        let data = dir.path().join("data");
        let mut server = Server::start_in(&data, &[]);
        server._dir = Some(dir);
        server
    }

    /// A server on an existing data directory (a restart), with extra flags.
    pub fn start_in(data: &Path, extra: &[&str]) -> Server {
        Server::start_in_env(data, extra, &[])
    }

    /// A fresh server with extra environment variables (e.g. hidden limits).
    pub fn start_with_env(env: &[(&str, &str)]) -> Server {
        let dir = tempfile::tempdir().expect("temp dir");
        let data = dir.path().join("data");
        let mut server = Server::start_in_env(&data, &[], env);
        server._dir = Some(dir);
        server
    }

    /// A fresh server allowed only `limit` open files (soft and hard limit),
    /// with extra flags.
    pub fn start_with_open_files(limit: u32, extra: &[&str]) -> Server {
        let dir = tempfile::tempdir().expect("temp dir");
        let data = dir.path().join("data");
        let mut command = Command::new("sh");
        command
            .args(["-c", "ulimit -n \"$0\" && exec \"$@\""])
            .arg(limit.to_string())
            .arg(BIN);
        let mut server = Server::launch(command, &data, extra, &[]);
        server._dir = Some(dir);
        server
    }

    /// A server on a data directory with extra flags and environment variables.
    pub fn start_in_env(data: &Path, extra: &[&str], env: &[(&str, &str)]) -> Server {
        Server::launch(Command::new(BIN), data, extra, env)
    }

    /// `command` (berth, or what execs it) with `server` and its arguments.
    fn launch(mut command: Command, data: &Path, extra: &[&str], env: &[(&str, &str)]) -> Server {
        let mut child = command
            .args(["server", "--listen", "127.0.0.1:0", "--data"])
            .arg(data)
            .args(extra)
            .env_remove("BERTH_DATA")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn berth server");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut addr = None;
        let mut tls_addr = None;
        let mut setup_code = None;
        while addr.is_none() {
            let line = rx
                .recv_timeout(Duration::from_secs(20))
                .expect("server printed its address");
            if let Some(rest) = line.strip_prefix("berth listening on https://") {
                tls_addr = rest.split_whitespace().next().map(str::to_string);
            }
            if let Some(rest) = line.strip_prefix("berth listening on http://") {
                addr = rest.split_whitespace().next().map(str::to_string);
            }
        }
        // The setup line, if any, follows at once.
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(300)) {
            if let Some(at) = line.find("setup?code=") {
                let code = line[at + 11..].split_whitespace().next().unwrap_or("");
                setup_code = Some(code.to_string());
            }
        }
        let addr = addr.unwrap();
        Server {
            child: Some(child),
            url: format!("http://{addr}"),
            addr,
            setup_code,
            tls_addr,
            data: data.to_path_buf(),
            _dir: None,
            output: rx,
        }
    }

    /// Lines the server printed after starting.
    pub fn output(&self) -> Vec<String> {
        self.output.try_iter().collect()
    }

    /// `berth admin create-user` on this server's data directory.
    pub fn create_user(&self, username: &str, crew: &str, role: &str) {
        let out = run_with_stdin(
            &[
                "admin",
                "create-user",
                username,
                "--crew",
                crew,
                "--role",
                role,
                "--password-stdin",
                "--data",
                self.data.to_str().unwrap(),
            ],
            &[],
            PASSWORD,
        );
        assert_eq!(out.code, 0, "create-user failed: {}", out.stderr);
    }

    /// A token for the user through the password flow.
    pub fn token_for(&self, username: &str, crew: &str, name: &str) -> String {
        let (status, body) = self.call_basic(
            "POST",
            "/api/v1/tokens",
            username,
            PASSWORD,
            Some(&serde_json::json!({"name": name, "crew": crew})),
        );
        assert_eq!(status, 201, "token for {username}: {body}");
        body["secret"].as_str().unwrap().to_string()
    }

    /// A request with a bearer token (or none); returns status and JSON body (Null if not JSON).
    pub fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let auth = token.map(|t| format!("Bearer {t}"));
        self.request(method, path, auth.as_deref(), body)
    }

    /// A request with Basic credentials.
    pub fn call_basic(
        &self,
        method: &str,
        path: &str,
        user: &str,
        password: &str,
        body: Option<&Value>,
    ) -> (u16, Value) {
        use base64ct::{Base64, Encoding};
        let auth = format!(
            "Basic {}",
            Base64::encode_string(format!("{user}:{password}").as_bytes())
        );
        self.request(method, path, Some(&auth), body)
    }

    fn request(
        &self,
        method: &str,
        path: &str,
        auth: Option<&str>,
        body: Option<&Value>,
    ) -> (u16, Value) {
        request_at(&self.addr, method, path, auth, body)
    }

    /// A request with any headers and body on its own connection.
    pub fn send(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Reply {
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
            self.addr
        );
        if !body.is_empty() || method != "GET" {
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        let (status, head, text) = self.raw(&format!("{head}{body}"));
        Reply { status, head, text }
    }

    /// The server's database, opened beside it (WAL lets both write).
    pub fn db(&self) -> rusqlite::Connection {
        let conn = rusqlite::Connection::open(self.data.join("berth.db")).expect("open database");
        conn.busy_timeout(Duration::from_secs(5)).unwrap();
        conn
    }

    /// A user's id, from the database.
    pub fn user_id(&self, username: &str) -> i64 {
        self.db()
            .query_row(
                "SELECT id FROM users WHERE username = ?1",
                [username],
                |r| r.get(0),
            )
            .expect("user exists")
    }

    /// A crew's id, from the database.
    pub fn crew_id(&self, crew: &str) -> i64 {
        self.db()
            .query_row("SELECT id FROM crews WHERE name = ?1", [crew], |r| r.get(0))
            .expect("crew exists")
    }

    /// Send raw bytes on one connection; returns status, head and body text.
    pub fn raw(&self, bytes: &str) -> (u16, String, String) {
        raw_exchange(&self.addr, bytes.as_bytes())
    }

    /// Send a signal by name (`HUP`, `TERM`...) to the server process.
    pub fn signal(&self, name: &str) {
        let child = self.child.as_ref().expect("server is running");
        let status = Command::new("kill")
            .args([&format!("-{name}"), &child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{name}");
    }

    /// The next line the server prints, waiting up to `wait`.
    pub fn next_output(&self, wait: Duration) -> Option<String> {
        self.output.recv_timeout(wait).ok()
    }

    /// The server process's id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("server is running").id()
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then wait for a clean exit; returns the exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        for _ in 0..300 {
            if let Ok(Some(status)) = child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A request to a server at `addr` (usable from threads, unlike `Server`);
/// `auth` is the whole Authorization value. Returns status and JSON body.
pub fn request_at(
    addr: &str,
    method: &str,
    path: &str,
    auth: Option<&str>,
    body: Option<&Value>,
) -> (u16, Value) {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(auth) = auth {
        head.push_str(&format!("Authorization: {auth}\r\n"));
    }
    if !body.is_empty() {
        head.push_str("Content-Type: application/json\r\n");
    }
    head.push_str("\r\n");
    let (status, _, text) = raw_exchange(addr, format!("{head}{body}").as_bytes());
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// A response read whole: status, head and body.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub head: String,
    pub text: String,
}

impl Reply {
    /// The body as JSON (Null if it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or(Value::Null)
    }

    /// The first value of a response header.
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }

    /// The error code of a JSON error body.
    pub fn code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or("")
            .to_string()
    }
}

/// Write `bytes`, read until the server closes; parse the status line.
pub fn raw_exchange(addr: &str, bytes: &[u8]) -> (u16, String, String) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let _ = stream.write_all(bytes);
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let chunked = head
        .to_ascii_lowercase()
        .contains("\r\ntransfer-encoding: chunked");
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    (status, head.to_string(), body)
}

/// The data of a chunked body (large API replies come chunked).
pub fn dechunk(mut raw: &str) -> String {
    let mut out = String::new();
    while let Some((line, rest)) = raw.split_once("\r\n") {
        let size = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16);
        let Ok(size) = size else { break };
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        raw = rest[size..].strip_prefix("\r\n").unwrap_or("");
    }
    out
}

/// What a CLI run produced.
pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Run the berth binary with env and stdin; no inherited BERTH_* variables.
pub fn run_with_stdin(args: &[&str], env: &[(&str, &str)], stdin: &str) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    for (key, _) in std::env::vars() {
        if key.starts_with("BERTH_") {
            cmd.env_remove(key);
        }
    }
    cmd.envs(env.iter().copied());
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn berth");
    if let Some(mut input) = child.stdin.take() {
        let _ = input.write_all(stdin.as_bytes());
    }
    let out = child.wait_with_output().expect("wait for berth");
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `BERTH_CONFIG` for CLI runs with a server and token of their own: a file that
/// is never there, so no config on the machine changes what they do.
pub const NO_CONFIG: &str = "/nonexistent/berth/config.json";

/// `berth ARGS` against `server_url` with `token`, no config file and nothing
/// else in its environment, stdin closed; the caller picks stdout and stderr.
pub fn berth_with_token(server_url: &str, token: &str, args: &[&str]) -> Command {
    let mut command = Command::new(BIN);
    command
        .args(args)
        .env_clear()
        .env("BERTH_CONFIG", NO_CONFIG)
        .env("BERTH_SERVER", server_url)
        .env("BERTH_TOKEN", token)
        .stdin(Stdio::null());
    command
}

/// Run `berth ARGS` to its end against `server_url` with `token` and no config
/// file; no inherited BERTH_* variables.
pub fn run_with_token(server_url: &str, token: &str, args: &[&str]) -> Output {
    let env = [
        ("BERTH_CONFIG", NO_CONFIG),
        ("BERTH_SERVER", server_url),
        ("BERTH_TOKEN", token),
    ];
    run_with_stdin(args, &env, "")
}

/// Run `command` to its end with stdout and stderr captured; its exit code and stderr.
pub fn code_and_stderr(command: &mut Command) -> (i32, String) {
    let out = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("run berth");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
