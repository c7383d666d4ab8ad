//! Helpers for driving the real `berth` binary as a CLI: a sandboxed config, captured output, a fake API.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// What one run of the binary did.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// A temp directory holding the config file; runs see only the environment given.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
}

impl Sandbox {
    pub fn new() -> Sandbox {
        Sandbox {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    /// `BERTH_CONFIG` of every run: a file in a not-yet-created subdirectory.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("berth").join("config.json")
    }

    /// The config file's text ("" when absent).
    pub fn config_text(&self) -> String {
        std::fs::read_to_string(self.config_path()).unwrap_or_default()
    }

    /// Run `berth ARGS` with only `env` (plus BERTH_CONFIG and HOME) set and no stdin.
    pub fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        self.run_with_stdin(args, env, None)
    }

    /// Run `berth ARGS`, feeding `stdin` when given (else stdin is /dev/null).
    pub fn run_with_stdin(&self, args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> Run {
        let mut command = Command::new(env!("CARGO_BIN_EXE_berth"));
        command
            .args(args)
            .env_clear()
            .env("HOME", self.dir.path())
            .env("BERTH_CONFIG", self.config_path())
            .envs(env.iter().copied())
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("spawn berth");
        if let Some(text) = stdin {
            let mut pipe = child.stdin.take().expect("stdin");
            // berth may exit before reading (a usage error): not the test's failure.
            let _ = pipe.write_all(text.as_bytes());
        }
        let output = child.wait_with_output().expect("wait for berth");
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

/// A well-formed token (valid checksum) with this id; random part fixed by `seed`.
pub fn valid_token(id: u64, seed: char) -> String {
    let random: String = std::iter::repeat_n(seed, 34).collect();
    let mut n = crc32fast::hash(random.as_bytes()) as u64;
    let mut sum = [b'0'; 6];
    for slot in sum.iter_mut().rev() {
        *slot = BASE62[(n % 62) as usize];
        n /= 62;
    }
    format!("{id}|berth_{random}{}", String::from_utf8_lossy(&sum))
}

/// A server URL on which nothing listens.
pub fn dead_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    format!("http://127.0.0.1:{port}")
}

/// One request the fake API received.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// Path with query.
    pub target: String,
    /// Header names lowercased.
    pub headers: HashMap<String, String>,
    pub body: String,
}

impl Request {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).expect("JSON request body")
    }
}

/// One canned answer: status, extra headers, JSON body.
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

/// A canned answer with a JSON body.
pub fn reply(status: u16, body: serde_json::Value) -> Reply {
    Reply {
        status,
        headers: Vec::new(),
        body: if body.is_null() {
            String::new()
        } else {
            body.to_string()
        },
    }
}

/// An API error answer in the contract's shape.
pub fn error_reply(status: u16, code: &str, message: &str) -> Reply {
    reply(
        status,
        serde_json::json!({"error": {"code": code, "message": message}}),
    )
}

/// A stand-in for the API that answers requests in order with canned replies and
/// records them, to check what the CLI sends without a real server.
pub struct FakeApi {
    pub url: String,
    requests: Arc<Mutex<Vec<Request>>>,
}

impl FakeApi {
    pub fn start(replies: Vec<Reply>) -> FakeApi {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&requests);
        thread::Builder::new()
            .name("fake-api".into())
            .spawn(move || {
                for reply in replies {
                    let Ok((stream, _)) = listener.accept() else {
                        return;
                    };
                    // Recorded before answering, so a test that saw the CLI exit sees the request.
                    let Some(request) = read_request(&stream) else {
                        continue;
                    };
                    seen.lock().expect("lock").push(request);
                    write_reply(stream, &reply);
                }
            })
            .expect("spawn fake api");
        FakeApi { url, requests }
    }

    /// The requests received so far.
    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().expect("lock").clone()
    }
}

fn read_request(stream: &TcpStream) -> Option<Request> {
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let target = parts.next()?.to_string();
    let mut headers = HashMap::new();
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).ok()?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':')?;
        headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
    }
    let length: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(Request {
        method,
        target,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

fn write_reply(mut stream: TcpStream, reply: &Reply) {
    let reason = match reply.status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        _ => "Error",
    };
    let mut head = format!(
        "HTTP/1.1 {} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        reply.status,
        reply.body.len()
    );
    for (name, value) in &reply.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    head.push_str(&reply.body);
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.flush();
}
