//! A local HTTP service for the real-client relay tests that never holds a body
//! whole: `/download/N` streams N bytes, `/upload` answers the SHA-256 of the
//! body it streamed in, `/slow` answers after `SLOW`; and a restartable server.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use sha2::{Digest, Sha256};

/// How long `/slow` waits before answering.
pub const SLOW: Duration = Duration::from_secs(2);
/// The byte at offset `i` of a download.
pub fn pattern(i: u64) -> u8 {
    (i % 251) as u8
}

/// The streaming service on its own port; threads per connection, keep-alive.
pub struct StreamingService {
    pub port: u16,
}

impl StreamingService {
    pub fn start() -> StreamingService {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                std::thread::spawn(move || serve(stream));
            }
        });
        StreamingService { port }
    }
}

fn serve(stream: TcpStream) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut out = stream;
    while let Some(head) = super::read_head(&mut reader) {
        let length: u64 = super::header_value(&head, "content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let path = head[0].split_whitespace().nth(1).unwrap_or("").to_string();
        // Hash the body as it streams in, 64 KiB at a time.
        let mut hash = Sha256::new();
        let mut left = length;
        let mut chunk = vec![0u8; 64 * 1024];
        while left > 0 {
            let want = chunk.len().min(left as usize);
            let Ok(n) = reader.read(&mut chunk[..want]) else {
                return;
            };
            if n == 0 {
                return;
            }
            hash.update(&chunk[..n]);
            left -= n as u64;
        }
        let ok = if let Some(n) = path.strip_prefix("/download/") {
            download(&mut out, n.parse().unwrap_or(0))
        } else if path == "/upload" {
            let hex: String = hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
            reply(&mut out, &format!("{length} {hex}"))
        } else if path == "/slow" {
            std::thread::sleep(SLOW);
            reply(&mut out, "slow")
        } else {
            reply(&mut out, "hello")
        };
        if !ok {
            return;
        }
    }
}

fn reply(out: &mut TcpStream, text: &str) -> bool {
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{text}",
        text.len()
    );
    out.write_all(head.as_bytes()).is_ok()
}

/// Stream `n` bytes of `pattern`, never more than 64 KiB in memory.
fn download(out: &mut TcpStream, n: u64) -> bool {
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {n}\r\n\r\n"
    );
    if out.write_all(head.as_bytes()).is_err() {
        return false;
    }
    let mut at = 0u64;
    let mut chunk = vec![0u8; 64 * 1024];
    while at < n {
        let len = chunk.len().min((n - at) as usize);
        for (i, byte) in chunk[..len].iter_mut().enumerate() {
            *byte = pattern(at + i as u64);
        }
        if out.write_all(&chunk[..len]).is_err() {
            return false;
        }
        at += len as u64;
    }
    true
}

/// SHA-256 of a file, hex, read in pieces.
pub fn sha256_file(path: &Path) -> String {
    let mut file = std::fs::File::open(path).unwrap();
    let mut hash = Sha256::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut chunk).unwrap();
        if n == 0 {
            break;
        }
        hash.update(&chunk[..n]);
    }
    hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 of `n` bytes of `pattern`, hex.
pub fn sha256_pattern(n: u64) -> String {
    let mut hash = Sha256::new();
    let chunk: Vec<u8> = (0..n.min(251 * 256)).map(pattern).collect();
    let mut at = 0;
    while at < n {
        // 251 * 256 is a whole number of pattern periods, so each chunk starts at 0.
        let len = chunk.len().min((n - at) as usize);
        hash.update(&chunk[..len]);
        at += len as u64;
    }
    hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// A `berth server` at a fixed address on an existing data directory (the
/// restart after a kill), killed on Drop.
pub struct FixedServer {
    child: Child,
}

impl FixedServer {
    pub fn start(bin: &str, data: &Path, addr: &str) -> FixedServer {
        let mut child = Command::new(bin)
            .args(["server", "--listen", addr, "--data"])
            .arg(data)
            .env_remove("BERTH_DATA")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn berth server");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        loop {
            let line = rx
                .recv_timeout(Duration::from_secs(20))
                .expect("the restarted server printed its address");
            if line.starts_with("berth listening on") {
                break;
            }
        }
        FixedServer { child }
    }
}

impl Drop for FixedServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
