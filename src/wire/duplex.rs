//! Bytes both ways between two async streams until both sides close, holding
//! no buffer while a direction waits for its source.

use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{sleep_until, Instant, Sleep};

/// The buffer a waiting direction reads into first: a small request or
/// response whole, in one read.
const FIRST_BUFFER: usize = 16 * 1024;
/// The largest buffer: while reads fill the buffer (a bulk transfer), each
/// next one doubles, up to this; few large copies move bulk bytes fastest.
const MAX_BUFFER: usize = 256 * 1024;

/// What a splice moved, and how it ended.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Spliced {
    /// Bytes from `a` to `b` and from `b` to `a`.
    pub a_to_b: u64,
    pub b_to_a: u64,
    /// Whether it ended because nothing moved for the idle limit.
    pub idle: bool,
}

/// Copy bytes both ways until both sides have ended: the end of one side's
/// bytes ends the other side's writing (a half-close), an error on either side
/// ends both. With `idle`, both end once no byte moved either way that long.
///
/// A direction holds a buffer only while it has bytes to move or its source
/// has more to read: thousands of idle connections (WebSockets held open) cost
/// their sockets, not their buffers.
pub async fn splice<A, B>(a: &mut A, b: &mut B, idle: Option<Duration>) -> Spliced
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let mut up = Direction::default();
    let mut down = Direction::default();
    let mut quiet = idle.map(|limit| Quiet {
        limit,
        last: Instant::now(),
        timer: Box::pin(sleep_until(Instant::now() + limit)),
    });
    let mut timed_out = false;
    poll_fn(|cx| {
        let before = up.bytes + down.bytes;
        let up_done = up.poll_copy(cx, a, b);
        let down_done = down.poll_copy(cx, b, a);
        if let (Poll::Ready(Err(_)), _) | (_, Poll::Ready(Err(_))) = (&up_done, &down_done) {
            return Poll::Ready(());
        }
        if up_done.is_ready() && down_done.is_ready() {
            return Poll::Ready(());
        }
        if let Some(quiet) = &mut quiet {
            if up.bytes + down.bytes != before {
                quiet.last = Instant::now();
            }
            if quiet.is_over(cx) {
                timed_out = true;
                return Poll::Ready(());
            }
        }
        Poll::Pending
    })
    .await;
    Spliced {
        a_to_b: up.bytes,
        b_to_a: down.bytes,
        idle: timed_out,
    }
}

/// When a splice last moved a byte, and the timer that looks again.
struct Quiet {
    limit: Duration,
    last: Instant,
    timer: Pin<Box<Sleep>>,
}

impl Quiet {
    /// Whether nothing moved for the limit; otherwise the timer is set for
    /// the moment that would be so, and wakes the task then.
    fn is_over(&mut self, cx: &mut Context<'_>) -> bool {
        loop {
            let deadline = self.last + self.limit;
            if Instant::now() >= deadline {
                return true;
            }
            if self.timer.deadline() != deadline {
                self.timer.as_mut().reset(deadline);
            }
            if self.timer.as_mut().poll(cx).is_pending() {
                return false;
            }
        }
    }
}

/// One direction of a splice: read from one side, write to the other.
#[derive(Default)]
struct Direction {
    /// Empty while waiting for the source: see `poll_copy`.
    buf: Vec<u8>,
    /// The bytes read and not yet written: `buf[start..end]`.
    start: usize,
    end: usize,
    /// The size of the next buffer (0 for `FIRST_BUFFER`).
    next: usize,
    /// The last read filled its buffer: more is likely waiting.
    full: bool,
    read_done: bool,
    unflushed: bool,
    done: bool,
    bytes: u64,
}

impl Direction {
    fn poll_copy<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        from: &mut R,
        to: &mut W,
    ) -> Poll<io::Result<()>>
    where
        R: AsyncRead + Unpin + ?Sized,
        W: AsyncWrite + Unpin + ?Sized,
    {
        if self.done {
            return Poll::Ready(Ok(()));
        }
        let result = self.poll_steps(cx, from, to);
        if result.is_ready() {
            self.done = true;
            self.buf = Vec::new();
        }
        result
    }

    fn poll_steps<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        from: &mut R,
        to: &mut W,
    ) -> Poll<io::Result<()>>
    where
        R: AsyncRead + Unpin + ?Sized,
        W: AsyncWrite + Unpin + ?Sized,
    {
        loop {
            while self.start < self.end {
                let n = ready!(Pin::new(&mut *to).poll_write(cx, &self.buf[self.start..self.end]))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                self.start += n;
                self.bytes += n as u64;
                self.unflushed = true;
            }
            if self.read_done {
                // Ends the other side's reading: a TCP FIN, a TLS close_notify.
                return Pin::new(&mut *to).poll_shutdown(cx);
            }
            // A buffer that the last read filled gives way to the next, larger one.
            let size = if self.next == 0 {
                FIRST_BUFFER
            } else {
                self.next
            };
            if self.buf.len() != size {
                self.buf = vec![0; size];
            }
            let mut read = ReadBuf::new(&mut self.buf);
            match Pin::new(&mut *from).poll_read(cx, &mut read) {
                Poll::Ready(Ok(())) => {
                    let n = read.filled().len();
                    if n == 0 {
                        self.read_done = true;
                        self.buf = Vec::new();
                        continue;
                    }
                    self.full = n == self.buf.len();
                    if self.full {
                        self.next = (self.buf.len() * 2).min(MAX_BUFFER);
                    }
                    (self.start, self.end) = (0, n);
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    // The source has nothing now: what was written goes out
                    // (a TLS record), and the buffer is given back until the
                    // source wakes this direction, which may be never (a
                    // WebSocket gone quiet after a large message). A bulk one
                    // only remembers its size: the copy is ahead of its source
                    // here, so allocating again costs no throughput.
                    self.buf = Vec::new();
                    if !self.full {
                        self.next = 0;
                    }
                    if self.unflushed {
                        ready!(Pin::new(&mut *to).poll_flush(cx))?;
                        self.unflushed = false;
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{duplex, AsyncReadExt, AsyncWriteExt};

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn bytes_go_both_ways_and_a_half_close_passes_on() {
        runtime().block_on(async {
            let (mut a, mut a_far) = duplex(64);
            let (mut b, mut b_far) = duplex(64);
            let relay = tokio::spawn(async move { splice(&mut a, &mut b, None).await });
            let big: Vec<u8> = (0..300_000u32).map(|i| i as u8).collect();
            let sent = big.clone();
            let writer = tokio::spawn(async move {
                a_far.write_all(&sent).await.unwrap();
                a_far.shutdown().await.unwrap();
                let mut back = Vec::new();
                a_far.read_to_end(&mut back).await.unwrap();
                back
            });
            let mut got = Vec::new();
            b_far.read_to_end(&mut got).await.unwrap();
            assert_eq!(got, big);
            b_far.write_all(b"pong").await.unwrap();
            b_far.shutdown().await.unwrap();
            assert_eq!(writer.await.unwrap(), b"pong");
            let spliced = relay.await.unwrap();
            assert_eq!(
                (spliced.a_to_b, spliced.b_to_a, spliced.idle),
                (300_000, 4, false)
            );
        });
    }

    #[test]
    fn a_quiet_splice_ends_at_its_idle_limit_and_not_before() {
        runtime().block_on(async {
            tokio::time::pause();
            let (mut a, mut a_far) = duplex(64);
            let (mut b, mut b_far) = duplex(64);
            let limit = Duration::from_secs(10);
            let relay = tokio::spawn(async move { splice(&mut a, &mut b, Some(limit)).await });
            tokio::time::sleep(Duration::from_secs(8)).await;
            a_far.write_all(b"x").await.unwrap();
            let mut one = [0u8; 1];
            b_far.read_exact(&mut one).await.unwrap();
            // 8 s after that byte, the limit counted from it is not reached.
            tokio::time::sleep(Duration::from_secs(8)).await;
            assert!(!relay.is_finished());
            let spliced = relay.await.unwrap();
            assert!(spliced.idle);
            assert_eq!(spliced.a_to_b, 1);
        });
    }

    #[test]
    fn a_bulk_direction_reads_into_ever_larger_buffers() {
        runtime().block_on(async {
            let (mut a, mut a_far) = duplex(4 * MAX_BUFFER);
            // Room for the first read and part of the second: the direction
            // then waits to write, holding the buffer it read into.
            let (mut b, _b_far) = duplex(FIRST_BUFFER + FIRST_BUFFER / 2);
            a_far.write_all(&vec![7u8; 2 * MAX_BUFFER]).await.unwrap();
            let mut up = Direction::default();
            let waker = std::task::Waker::noop();
            let mut cx = Context::from_waker(waker);
            assert!(up.poll_copy(&mut cx, &mut a, &mut b).is_pending());
            assert_eq!(up.buf.len(), 2 * FIRST_BUFFER);
            assert!(up.start < up.end);
        });
    }

    #[test]
    fn a_direction_whose_last_read_filled_its_buffer_holds_none_while_waiting() {
        runtime().block_on(async {
            let (mut a, mut a_far) = duplex(4 * MAX_BUFFER);
            let (mut b, mut b_far) = duplex(4 * MAX_BUFFER);
            // A message that fills the first buffer and the second exactly.
            a_far.write_all(&vec![1u8; 3 * FIRST_BUFFER]).await.unwrap();
            let mut up = Direction::default();
            let waker = std::task::Waker::noop();
            let mut cx = Context::from_waker(waker);
            assert!(up.poll_copy(&mut cx, &mut a, &mut b).is_pending());
            assert_eq!(up.buf.capacity(), 0);
            let mut got = vec![0u8; 3 * FIRST_BUFFER];
            b_far.read_exact(&mut got).await.unwrap();
            // The next message is read into a buffer of the size bulk earned.
            a_far.write_all(&vec![2u8; 5 * FIRST_BUFFER]).await.unwrap();
            assert!(up.poll_copy(&mut cx, &mut a, &mut b).is_pending());
            assert_eq!(up.bytes, 8 * FIRST_BUFFER as u64);
        });
    }

    #[test]
    fn an_idle_direction_holds_no_buffer() {
        runtime().block_on(async {
            let (mut a, mut a_far) = duplex(1024);
            let (mut b, mut b_far) = duplex(1024);
            let mut up = Direction::default();
            let waker = std::task::Waker::noop();
            let mut cx = Context::from_waker(waker);
            a_far.write_all(b"hello").await.unwrap();
            assert!(up.poll_copy(&mut cx, &mut a, &mut b).is_pending());
            assert_eq!(up.buf.capacity(), 0);
            let mut got = [0u8; 5];
            b_far.read_exact(&mut got).await.unwrap();
            assert_eq!(&got, b"hello");
        });
    }
}
