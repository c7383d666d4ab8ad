//! The inspector tests' local service: keep-alive HTTP/1.1 that sets cookies
//! and other sensitive response headers beside a plain marker, plus any
//! header a request asks for with `X-Reply-With: Name: value`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};

/// A keep-alive local service answering every request with sensitive and
/// plain response headers, and a body naming the path.
pub fn service() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            std::thread::spawn(move || serve(stream));
        }
    });
    port
}

fn serve(stream: TcpStream) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut out = stream;
    loop {
        let mut path = String::new();
        let mut length = 0usize;
        let mut extra = String::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            if line == "\r\n" {
                break;
            }
            if path.is_empty() {
                path = line.split_whitespace().nth(1).unwrap_or("").to_string();
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap_or(0);
                }
                if name.eq_ignore_ascii_case("x-reply-with") {
                    extra.push_str(value.trim());
                    extra.push_str("\r\n");
                }
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let reply = format!("served {path}");
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nSet-Cookie: sid=resp-cookie-secret; HttpOnly\r\nSET-COOKIE: second=resp-cookie-two\r\nX-Session-Id: resp-session-strict\r\nX-Reply-Marker: resp-visible-marker\r\n{extra}Content-Length: {}\r\n\r\n",
            reply.len()
        );
        if out.write_all(head.as_bytes()).is_err() || out.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}
