//! Bytes both ways between two streams until both sides close: a TCP tunnel's
//! public and data connections, or an upgraded HTTP connection's two legs.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::wire::Stream;

/// Bytes each direction of a piped connection moves per system call: bulk
/// transfers (iperf3, git) want few large copies, not many 8 KiB ones; on
/// loopback 1 MiB measured clearly better than 256 KiB (scripts/bench-tcp.sh).
/// The buffer is zeroed memory from the OS, so an interactive connection's
/// small reads only ever touch its first pages.
pub const COPY_BUFFER: usize = 1024 * 1024;

/// Copy bytes both ways until both sides close, one named thread per direction,
/// with `COPY_BUFFER`-sized copies; the bytes moved a → b and b → a.
pub fn splice(
    a_read: impl Read + Send + 'static,
    a: Stream,
    b_read: impl Read + Send + 'static,
    b: Stream,
    name: &str,
) -> (u64, u64) {
    splice_until_idle(a_read, a, b_read, b, name, None)
}

/// [`splice`], and with `idle`, close both sides once no byte moved either
/// way for that long: a silent upgraded connection gives its slot back.
pub fn splice_until_idle(
    a_read: impl Read + Send + 'static,
    a: Stream,
    b_read: impl Read + Send + 'static,
    b: Stream,
    name: &str,
    idle: Option<Duration>,
) -> (u64, u64) {
    // Each direction wakes this often to see whether the other moved bytes.
    let tick = idle.map(|idle| (idle / 4).max(MIN_TICK));
    let _ = a.set_read_timeout(tick);
    let _ = b.set_read_timeout(tick);
    let quiet = Arc::new(Quiet {
        since: Instant::now(),
        last: AtomicU64::new(0),
        idle,
    });
    let up = {
        let quiet = quiet.clone();
        std::thread::Builder::new()
            .name(format!("{name}-up"))
            .spawn(move || copy_counted(a_read, b, &quiet))
    };
    let down = copy_counted(b_read, a, &quiet);
    let up = up.ok().and_then(|up| up.join().ok()).unwrap_or(0);
    (up, down)
}

/// The shortest wait between looks at an idle splice's activity.
const MIN_TICK: Duration = Duration::from_millis(100);

/// When a splice last moved a byte either way, and how long it may stay quiet.
struct Quiet {
    since: Instant,
    /// Milliseconds from `since` to the last byte moved.
    last: AtomicU64,
    idle: Option<Duration>,
}

impl Quiet {
    fn moved(&self) {
        let now = self.since.elapsed().as_millis() as u64;
        self.last.fetch_max(now, Ordering::Relaxed);
    }

    /// Whether nothing moved either way for the idle limit.
    fn is_over(&self) -> bool {
        let Some(idle) = self.idle else {
            return false;
        };
        let last = Duration::from_millis(self.last.load(Ordering::Relaxed));
        self.since.elapsed().saturating_sub(last) >= idle
    }
}

/// Copy until EOF, then end the write side so the peer sees it; on an error,
/// or once the splice was quiet too long, end both sides. The bytes copied.
fn copy_counted(mut from: impl Read, mut to: Stream, quiet: &Quiet) -> u64 {
    let mut buf = vec![0u8; COPY_BUFFER];
    let mut copied = 0u64;
    let clean = loop {
        match from.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => {
                quiet.moved();
                if to.write_all(&buf[..n]).is_err() {
                    break false;
                }
                copied += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if quiet.idle.is_some() && super::protocol::is_timeout(&e) => {
                if quiet.is_over() {
                    break false;
                }
            }
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

    /// Two connected pairs, spliced in the middle with an idle limit.
    fn idle_splice(idle: Duration) -> (TcpStream, TcpStream, std::thread::JoinHandle<(u64, u64)>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let left = TcpStream::connect(addr).unwrap();
        let a = listener.accept().unwrap().0;
        let right = TcpStream::connect(addr).unwrap();
        let b = listener.accept().unwrap().0;
        let piping = std::thread::spawn(move || {
            let (ar, br) = (a.try_clone().unwrap(), b.try_clone().unwrap());
            splice_until_idle(ar, Stream::Tcp(a), br, Stream::Tcp(b), "test", Some(idle))
        });
        (left, right, piping)
    }

    #[test]
    fn a_splice_quiet_both_ways_past_the_idle_limit_closes() {
        let idle = Duration::from_millis(400);
        let (mut left, mut right, piping) = idle_splice(idle);
        // Bytes one way only keep both directions open.
        let started = Instant::now();
        while started.elapsed() < idle * 3 {
            left.write_all(b"x").unwrap();
            let mut byte = [0u8; 1];
            right.read_exact(&mut byte).unwrap();
            std::thread::sleep(idle / 4);
        }
        right.write_all(b"back").unwrap();
        let mut back = [0u8; 4];
        left.read_exact(&mut back).unwrap();
        // Then silence: both sides close within the limit and a tick.
        let quiet = Instant::now();
        let mut rest = Vec::new();
        left.read_to_end(&mut rest).unwrap();
        right.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty());
        let waited = quiet.elapsed();
        assert!(waited >= idle && waited < idle * 5, "{waited:?}");
        assert!(piping.join().unwrap().0 > 0);
    }
}
