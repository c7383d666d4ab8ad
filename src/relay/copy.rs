//! Bytes both ways between two streams until both sides close: a TCP tunnel's
//! public and data connections, or an upgraded HTTP connection's two legs.

use std::io::{self, Read, Write};
use std::net::Shutdown;

use crate::stream::Stream;

/// Bytes each direction of a piped connection moves per system call: bulk
/// transfers (iperf3, git) want few large copies, not many 8 KiB ones; on
/// loopback 1 MiB measured clearly better than 256 KiB (scripts/bench-tcp.sh).
/// The buffer is zeroed memory from the OS, so an interactive connection's
/// small reads only ever touch its first pages.
pub const COPY_BUFFER: usize = 1024 * 1024;

/// Copy bytes both ways until both sides close (an upgraded HTTP connection),
/// as [`splice`] does.
pub fn pipe(
    a_read: impl Read + Send + 'static,
    a: Stream,
    b_read: impl Read + Send + 'static,
    b: Stream,
    name: &str,
) {
    splice(a_read, a, b_read, b, name);
}

/// Copy bytes both ways until both sides close, one named thread per direction,
/// with `COPY_BUFFER`-sized copies; the bytes moved a → b and b → a.
pub fn splice(
    a_read: impl Read + Send + 'static,
    a: Stream,
    b_read: impl Read + Send + 'static,
    b: Stream,
    name: &str,
) -> (u64, u64) {
    let _ = a.set_read_timeout(None);
    let _ = b.set_read_timeout(None);
    let up = std::thread::Builder::new()
        .name(format!("{name}-up"))
        .spawn(move || copy_counted(a_read, b));
    let down = copy_counted(b_read, a);
    let up = up.ok().and_then(|up| up.join().ok()).unwrap_or(0);
    (up, down)
}

/// Copy until EOF, then end the write side so the peer sees it; on an error,
/// end both sides. The bytes copied.
fn copy_counted(mut from: impl Read, mut to: Stream) -> u64 {
    let mut buf = vec![0u8; COPY_BUFFER];
    let mut copied = 0u64;
    let clean = loop {
        match from.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break false;
                }
                copied += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break false,
        }
    };
    let _ = to.flush();
    let _ = to.shutdown(if clean {
        Shutdown::Write
    } else {
        Shutdown::Both
    });
    copied
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};

    #[test]
    fn splice_counts_both_ways_and_passes_eof() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut left = TcpStream::connect(addr).unwrap();
        let a = listener.accept().unwrap().0;
        let mut right = TcpStream::connect(addr).unwrap();
        let b = listener.accept().unwrap().0;
        let piping = std::thread::spawn(move || {
            let (ar, br) = (a.try_clone().unwrap(), b.try_clone().unwrap());
            splice(ar, Stream::Tcp(a), br, Stream::Tcp(b), "test")
        });
        let big = vec![7u8; 3 * COPY_BUFFER + 5];
        left.write_all(&big).unwrap();
        left.shutdown(Shutdown::Write).unwrap();
        let mut got = Vec::new();
        right.read_to_end(&mut got).unwrap();
        assert_eq!(got, big);
        right.write_all(b"back").unwrap();
        right.shutdown(Shutdown::Write).unwrap();
        let mut back = Vec::new();
        left.read_to_end(&mut back).unwrap();
        assert_eq!(back, b"back");
        assert_eq!(piping.join().unwrap(), (big.len() as u64, 4));
    }
}
