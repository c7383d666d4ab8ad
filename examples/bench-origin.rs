//! A minimal, fast keep-alive HTTP/1.1 origin for scripts/bench-relay.sh: every
//! request gets the same 1 KiB body. Prints its port, then serves until killed.
#![forbid(unsafe_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};

/// Size of the body every request gets.
const BODY_BYTES: usize = 1024;
/// Largest request head read; longer ones close the connection.
const MAX_HEAD: usize = 16 * 1024;

fn main() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    println!("{}", listener.local_addr().expect("local address").port());
    let mut response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {BODY_BYTES}\r\n\r\n"
    )
    .into_bytes();
    response.extend(std::iter::repeat_n(b'x', BODY_BYTES));
    let response: &'static [u8] = response.leak();
    for stream in listener.incoming().map_while(Result::ok) {
        let _ = std::thread::Builder::new()
            .name("origin-conn".into())
            .spawn(move || serve(stream, response));
    }
}

/// Answer each request head (GET, no body) on the connection until it closes.
fn serve(mut stream: TcpStream, response: &[u8]) {
    let _ = stream.set_nodelay(true);
    let mut buf = vec![0u8; MAX_HEAD];
    let mut filled = 0;
    loop {
        let Ok(n) = stream.read(&mut buf[filled..]) else {
            return;
        };
        if n == 0 {
            return;
        }
        filled += n;
        let mut answered = 0;
        while let Some(end) = buf[answered..filled]
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
        {
            answered += end + 4;
            if stream.write_all(response).is_err() {
                return;
            }
        }
        buf.copy_within(answered..filled, 0);
        filled -= answered;
        if filled == buf.len() {
            return;
        }
    }
}
