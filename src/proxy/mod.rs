//! HTTP/1.1 forwarding: connections read through a buffer, heads read under their
//! limits and deadlines, and bodies framed and streamed between two connections.

// What it forwards between (a tunnel's Stream, the API's socket) is no part of
// the parsers the fuzz targets include.
#[cfg(not(fuzzing))]
pub mod forward;
pub mod forwarded;
mod head;
#[cfg(any(test, fuzzing))]
pub mod props;

use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::{sleep, Instant, Sleep};

pub use head::{parse_request, parse_response, HeadError, RequestHead};

/// Largest request head accepted (431 beyond).
pub const MAX_HEAD_BYTES: usize = 32 * 1024;
/// A request head must arrive whole within this time of its first byte (slowloris).
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a read in the middle of a request may wait (a body streamed
/// through, a response being sent).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a kept-alive connection may wait for its next request: short, so
/// idle connections give their slots back (browsers and proxies open a new
/// one without a fuss).
pub const KEEP_ALIVE_IDLE: Duration = Duration::from_secs(10);
/// Most header lines accepted in one head.
pub const MAX_HEADERS: usize = 100;
/// Longest chunk-size line accepted, extensions included.
const MAX_CHUNK_LINE: usize = 4096;
/// Room a read first has in a connection's buffer: a small request or
/// response whole. Bodies stream, never buffered whole.
const FIRST_READ: usize = 4 * 1024;
/// The most room a read has: each read that fills its room doubles the next
/// one's (a bulk body), up to this.
const MAX_READ: usize = 64 * 1024;
/// Bytes written to a [`Conn`] that wait for a flush before a write sends them.
const OUT_BUF: usize = 64 * 1024;

/// How a message body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Body {
    None,
    Length(u64),
    Chunked,
    /// Responses only: until the server closes.
    UntilClose,
}

/// Why a request body could not be read whole.
#[derive(Debug, PartialEq, Eq)]
pub enum BodyError {
    /// Larger than the limit (413).
    TooLarge,
    /// Broken chunked framing (400).
    Bad,
    /// Not all there within the deadline (408).
    Timeout,
    /// The client went away.
    Closed,
}

/// Read a request body whole, de-chunked, refusing more than `max` bytes and
/// anything slower than `within`: the deadline holds however the bytes trickle in.
pub async fn read_body_whole<S: AsyncRead + Unpin>(
    body: Body,
    from: &mut Conn<S>,
    max: u64,
    within: Duration,
) -> Result<Vec<u8>, BodyError> {
    let deadline = Instant::now() + within;
    match body {
        Body::None | Body::UntilClose => Ok(Vec::new()),
        Body::Length(n) if n > max => Err(BodyError::TooLarge),
        Body::Length(n) => {
            let mut out = Vec::with_capacity(n as usize);
            from.take_into(&mut out, n as usize, deadline).await?;
            Ok(out)
        }
        Body::Chunked => {
            let mut out = Vec::new();
            loop {
                let line = from.line_by(MAX_CHUNK_LINE, deadline).await?;
                let size = parse_chunk_line(&line).map_err(|_| BodyError::Bad)?;
                if size == 0 {
                    // Trailers are dropped: the API reads none.
                    loop {
                        let trailer = from.line_by(MAX_HEAD_BYTES, deadline).await?;
                        if check_trailer(&trailer).is_err() {
                            return Err(BodyError::Bad);
                        }
                        if trailer == b"\r\n" {
                            return Ok(out);
                        }
                    }
                }
                if out.len() as u64 + size > max {
                    return Err(BodyError::TooLarge);
                }
                from.take_into(&mut out, size as usize, deadline).await?;
                let mut crlf = Vec::with_capacity(2);
                from.take_into(&mut crlf, 2, deadline).await?;
                if crlf != b"\r\n" {
                    return Err(BodyError::Bad);
                }
            }
        }
    }
}

fn body_error(e: io::Error) -> BodyError {
    if is_timeout(&e) {
        BodyError::Timeout
    } else {
        BodyError::Closed
    }
}

/// A connection read and written through buffers: bytes after a head stay
/// for its body, and what is written goes out on `flush` (or once a buffer's
/// worth waits). Reads wait at most `read_timeout`, and a write that makes no
/// progress for `write_timeout` fails: either is a `TimedOut` error.
pub struct Conn<S> {
    pub stream: S,
    /// Bytes read and not yet consumed are `buf[pos..end]`; the rest of `buf`
    /// is room kept between reads, so a read does not clear it again.
    buf: Vec<u8>,
    pos: usize,
    end: usize,
    /// Room the next read gets (see `MAX_READ`).
    room: usize,
    /// Bytes written and not yet sent: `out[sent..]`.
    out: Vec<u8>,
    sent: usize,
    pub read_timeout: Option<Duration>,
    pub write_timeout: Option<Duration>,
    /// Armed while a write waits for room.
    write_timer: Option<Pin<Box<Sleep>>>,
}

impl<S> Conn<S> {
    pub fn new(stream: S) -> Conn<S> {
        Conn {
            stream,
            buf: Vec::new(),
            pos: 0,
            end: 0,
            room: FIRST_READ,
            out: Vec::new(),
            sent: 0,
            read_timeout: None,
            write_timeout: None,
            write_timer: None,
        }
    }

    /// Whether bytes were read past what was consumed: after a whole
    /// response, a service that sent more than its framing said.
    pub fn has_buffered(&self) -> bool {
        self.pos < self.end
    }

    fn buffered(&self) -> &[u8] {
        &self.buf[self.pos..self.end]
    }

    /// Give back the buffers while none holds a byte: a connection waiting
    /// for its next request holds its socket, not 32 KiB.
    pub fn release_buffers(&mut self) {
        if self.pos == self.end {
            (self.buf, self.pos, self.end) = (Vec::new(), 0, 0);
        }
        if self.sent == self.out.len() {
            (self.out, self.sent) = (Vec::new(), 0);
        }
    }

    /// The stream and the bytes read past what was consumed (what was
    /// written must have been flushed).
    pub fn into_parts(mut self) -> (S, Vec<u8>) {
        let rest = self.take_buffered();
        (self.stream, rest)
    }

    /// The bytes read past what was consumed, consumed.
    pub fn take_buffered(&mut self) -> Vec<u8> {
        let rest = self.buf[self.pos..self.end].to_vec();
        self.pos = self.end;
        rest
    }

    /// One LF-terminated line from what is buffered, consumed; none while it
    /// is not whole (chunk framing then reads more), an error once more than
    /// `max` bytes came without its end.
    fn take_line(&mut self, max: usize) -> io::Result<Option<Vec<u8>>> {
        if let Some(at) = self.buffered().iter().position(|&b| b == b'\n') {
            let line = self.buffered()[..=at].to_vec();
            self.pos += at + 1;
            return Ok(Some(line));
        }
        if self.buffered().len() > max {
            return Err(invalid("chunk line too long"));
        }
        Ok(None)
    }

    /// The next `n` buffered bytes, consumed; none while fewer are buffered.
    fn take_exact(&mut self, n: usize) -> Option<&[u8]> {
        if self.buffered().len() < n {
            return None;
        }
        self.pos += n;
        Some(&self.buf[self.pos - n..self.pos])
    }
}

impl<S: AsyncRead + Unpin> Conn<S> {
    /// Read more bytes into the buffer, waiting at most `read_timeout`; 0
    /// means the peer closed.
    async fn fill(&mut self) -> io::Result<usize> {
        self.fill_for(self.read_timeout).await
    }

    /// Read more bytes into the buffer, waiting at most `wait` (a `TimedOut`
    /// error beyond); 0 means the peer closed.
    async fn fill_for(&mut self, wait: Option<Duration>) -> io::Result<usize> {
        if self.pos > 0 {
            self.buf.copy_within(self.pos..self.end, 0);
            self.end -= self.pos;
            self.pos = 0;
        }
        if self.buf.len() < self.end + self.room {
            self.buf.resize(self.end + self.room, 0);
        }
        // Armed only if the first read finds nothing waiting.
        let mut timer: Option<Pin<Box<Sleep>>> = None;
        let (stream, room) = (&mut self.stream, &mut self.buf[self.end..]);
        let read = poll_fn(|cx| {
            let mut into = ReadBuf::new(room);
            match Pin::new(&mut *stream).poll_read(cx, &mut into) {
                Poll::Ready(done) => Poll::Ready(done.map(|()| into.filled().len())),
                Poll::Pending => {
                    if let Some(wait) = wait {
                        let timer = timer.get_or_insert_with(|| Box::pin(sleep(wait)));
                        if timer.as_mut().poll(cx).is_ready() {
                            return Poll::Ready(Err(io::ErrorKind::TimedOut.into()));
                        }
                    }
                    Poll::Pending
                }
            }
        })
        .await;
        let n = *read.as_ref().unwrap_or(&0);
        if n == self.buf.len() - self.end {
            self.room = (self.room * 2).min(MAX_READ);
        }
        self.end += n;
        read
    }

    /// Fill by `deadline`; a body error if it passed or the peer closed.
    async fn fill_by(&mut self, deadline: Instant) -> Result<(), BodyError> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(BodyError::Timeout);
        }
        match self.fill_for(Some(left)).await {
            Ok(0) => Err(BodyError::Closed),
            Ok(_) => Ok(()),
            Err(e) => Err(body_error(e)),
        }
    }

    /// Move `n` bytes into `into`, all there by `deadline`.
    async fn take_into(
        &mut self,
        into: &mut Vec<u8>,
        mut n: usize,
        deadline: Instant,
    ) -> Result<(), BodyError> {
        loop {
            let have = self.buffered().len().min(n);
            into.extend_from_slice(&self.buffered()[..have]);
            self.pos += have;
            n -= have;
            if n == 0 {
                return Ok(());
            }
            self.fill_by(deadline).await?;
        }
    }

    /// One line of at most `max` bytes, ending in LF (checked by the caller), by `deadline`.
    async fn line_by(&mut self, max: usize, deadline: Instant) -> Result<Vec<u8>, BodyError> {
        loop {
            match self.take_line(max) {
                Ok(Some(line)) => return Ok(line),
                Ok(None) => self.fill_by(deadline).await?,
                Err(_) => return Err(BodyError::Bad),
            }
        }
    }

    /// Read until the blank line ending a head; returns the head's bytes.
    /// The first byte may take `idle`; once it came, the head must be whole
    /// within `HEAD_TIMEOUT`.
    pub async fn read_head(&mut self, idle: Duration) -> Result<Vec<u8>, HeadError> {
        self.read_head_capped(idle, None).await
    }

    /// Read a head that must be whole by `deadline`, however its bytes
    /// trickle in: a new connection's first head, which shares one deadline
    /// with the TLS handshake before it.
    pub async fn read_head_by(&mut self, deadline: Instant) -> Result<Vec<u8>, HeadError> {
        let idle = deadline.saturating_duration_since(Instant::now());
        self.read_head_capped(idle, Some(deadline)).await
    }

    /// `read_head`, with every wait ending by `cap` when given.
    async fn read_head_capped(
        &mut self,
        idle: Duration,
        cap: Option<Instant>,
    ) -> Result<Vec<u8>, HeadError> {
        let mut deadline: Option<Instant> = None;
        loop {
            if let Some(end) = find_head_end(self.buffered()) {
                // The end may arrive in the same read that crosses the limit.
                if end > MAX_HEAD_BYTES {
                    return Err(HeadError::TooLarge);
                }
                let head = self.buffered()[..end].to_vec();
                self.pos += end;
                return Ok(head);
            }
            if self.buffered().len() > MAX_HEAD_BYTES {
                return Err(HeadError::TooLarge);
            }
            let wait = match deadline {
                None if self.buffered().is_empty() => idle,
                None => {
                    deadline = Some(Instant::now() + HEAD_TIMEOUT);
                    HEAD_TIMEOUT
                }
                Some(end) => end.saturating_duration_since(Instant::now()),
            };
            let wait = match cap {
                Some(cap) => wait.min(cap.saturating_duration_since(Instant::now())),
                None => wait,
            };
            if wait.is_zero() {
                return Err(if self.buffered().is_empty() {
                    HeadError::Idle
                } else {
                    HeadError::Timeout
                });
            }
            match self.fill_for(Some(wait)).await {
                Ok(0) if self.buffered().is_empty() => return Err(HeadError::Closed),
                Ok(0) => {
                    return Err(HeadError::Bad(
                        "The connection closed in the middle of a request head.",
                    ))
                }
                Ok(_) => {
                    if deadline.is_none() {
                        deadline = Some(Instant::now() + HEAD_TIMEOUT);
                    }
                }
                Err(e) if is_timeout(&e) => {
                    return Err(if self.buffered().is_empty() {
                        HeadError::Idle
                    } else {
                        HeadError::Timeout
                    });
                }
                Err(_) => return Err(HeadError::Io),
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> Conn<S> {
    /// Send what waits in the write buffer, failing after `write_timeout`
    /// without progress.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.out.len() {
            match Pin::new(&mut self.stream).poll_write(cx, &self.out[self.sent..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => {
                    self.sent += n;
                    self.write_timer = None;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    if let Some(limit) = self.write_timeout {
                        let timer = self
                            .write_timer
                            .get_or_insert_with(|| Box::pin(sleep(limit)));
                        if timer.as_mut().poll(cx).is_ready() {
                            self.write_timer = None;
                            return Poll::Ready(Err(io::ErrorKind::TimedOut.into()));
                        }
                    }
                    return Poll::Pending;
                }
            }
        }
        self.out.clear();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Conn<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.out.len() >= OUT_BUF {
            ready!(this.poll_send(cx))?;
        }
        this.out.extend_from_slice(bytes);
        Poll::Ready(Ok(bytes.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.stream).poll_shutdown(cx)
    }
}

fn is_timeout(e: &io::Error) -> bool {
    is_timeout_kind(e.kind())
}

/// Whether an error of this kind is a read or write timeout.
pub fn is_timeout_kind(kind: io::ErrorKind) -> bool {
    matches!(kind, io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}

fn invalid(why: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why)
}

/// Index just past the `\r\n\r\n` (or `\n\n`, refused later as bare LF) ending a head.
fn find_head_end(buf: &[u8]) -> Option<usize> {
    for i in 0..buf.len() {
        if buf[i] == b'\n' {
            if buf[i + 1..].starts_with(b"\r\n") {
                return Some(i + 3);
            }
            if buf[i + 1..].starts_with(b"\n") {
                return Some(i + 2);
            }
        }
    }
    None
}

/// Copy one body from `from` to `to` as framed; chunked bodies are checked
/// chunk by chunk and passed on in the same framing.
///
/// Bytes flow as they come: whatever was written to `to` is flushed before
/// any read that waits on the network, so a server-sent event, a progress
/// line or a token of a streamed answer reaches the other side when the
/// sender sends it, not when the body ends or a buffer fills (`to` is a
/// buffered [`Conn`]). Bytes already read and buffered are passed on first,
/// so a bulk body costs one flush per network read, not one per chunk.
pub async fn copy_body<S, W>(body: Body, from: &mut Conn<S>, to: &mut W) -> io::Result<u64>
where
    S: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut flow = Flow { from, to };
    match body {
        Body::None => Ok(0),
        Body::Length(n) => flow.copy(Some(n)).await,
        Body::UntilClose => flow.copy(None).await,
        Body::Chunked => flow.copy_chunked().await,
    }
}

/// A body on its way from one connection to another, flushing the writer
/// before each read that may wait (see [`copy_body`]).
struct Flow<'a, S, W> {
    from: &'a mut Conn<S>,
    to: &'a mut W,
}

impl<S: AsyncRead + Unpin, W: AsyncWrite + Unpin> Flow<'_, S, W> {
    /// Copy `limit` bytes, or (none) until the sender closes. Bytes go on
    /// from the connection's buffer, one write per read from the network;
    /// a read may take in what follows the body (the next chunk's line, a
    /// pipelined request), which stays buffered for whoever reads next.
    async fn copy(&mut self, limit: Option<u64>) -> io::Result<u64> {
        let mut copied = 0u64;
        loop {
            let room = limit.map_or(u64::MAX, |n| n - copied);
            if room == 0 {
                return Ok(copied);
            }
            if !self.from.has_buffered() {
                self.to.flush().await?;
                if self.from.fill().await? == 0 {
                    return match limit {
                        Some(_) => Err(io::ErrorKind::UnexpectedEof.into()),
                        None => Ok(copied),
                    };
                }
            }
            let available = self.from.buffered();
            let n = available
                .len()
                .min(usize::try_from(room).unwrap_or(usize::MAX));
            self.to.write_all(&available[..n]).await?;
            self.from.pos += n;
            copied += n as u64;
        }
    }

    /// One line of chunk framing, read whole however its bytes arrive.
    async fn read_line(&mut self, max: usize) -> io::Result<Vec<u8>> {
        loop {
            if let Some(line) = self.from.take_line(max)? {
                return Ok(line);
            }
            self.wait_for_more().await?;
        }
    }

    /// Pass on what was written so far, then read more into the buffer
    /// (framing begun but not whole): an error if the sender closed.
    async fn wait_for_more(&mut self) -> io::Result<()> {
        self.to.flush().await?;
        if self.from.fill().await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        Ok(())
    }

    async fn copy_chunked(&mut self) -> io::Result<u64> {
        let mut total = 0;
        loop {
            let line = self.read_line(MAX_CHUNK_LINE).await?;
            let size = parse_chunk_line(&line)?;
            self.to.write_all(&line).await?;
            if size == 0 {
                // Trailers, then the blank line.
                loop {
                    let trailer = self.read_line(MAX_HEAD_BYTES).await?;
                    check_trailer(&trailer)?;
                    self.to.write_all(&trailer).await?;
                    if trailer == b"\r\n" {
                        return Ok(total);
                    }
                }
            }
            total += self.copy(Some(size)).await?;
            // The CRLF ending the data may come apart from it (or with the
            // next chunk): the data is passed on before waiting for it.
            loop {
                match self.from.take_exact(2) {
                    Some(b"\r\n") => break,
                    Some(_) => return Err(invalid("chunk data not followed by CRLF")),
                    None => self.wait_for_more().await?,
                }
            }
            self.to.write_all(b"\r\n").await?;
        }
    }
}

/// Run a future over bytes in memory to its end: every read and write of a
/// slice or a `Vec` is ready at once, so it never waits (the property
/// checks and the fuzz targets, which have no runtime).
#[cfg(any(test, fuzzing))]
pub fn now_or_never<F: Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let mut cx = Context::from_waker(std::task::Waker::noop());
    match future.as_mut().poll(&mut cx) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("a future over bytes in memory waited"),
    }
}

/// Whether a byte may stand inside a chunk line or a trailer: no control
/// character but tab. A bare CR in particular is refused: a parser further on
/// that ends lines at CR would see a different message than this one.
fn is_line_byte(b: u8) -> bool {
    b == b'\t' || (b >= b' ' && b != 0x7f)
}

/// A trailer line (or the blank line ending them): CRLF-terminated, no
/// control characters inside.
fn check_trailer(line: &[u8]) -> io::Result<()> {
    match line.strip_suffix(b"\r\n") {
        Some(inner) if inner.iter().all(|&b| is_line_byte(b)) => Ok(()),
        _ => Err(invalid("bad chunked trailer")),
    }
}

/// The size in a `HEX[;ext]\r\n` line; anything looser (a bare CR or another
/// control character in the extension, say) is refused.
fn parse_chunk_line(line: &[u8]) -> io::Result<u64> {
    let line = line
        .strip_suffix(b"\r\n")
        .ok_or_else(|| invalid("chunk size line must end in CRLF"))?;
    if !line.iter().all(|&b| is_line_byte(b)) {
        return Err(invalid("control character in a chunk line"));
    }
    let hex = match line.iter().position(|&b| b == b';') {
        Some(at) => &line[..at],
        None => line,
    };
    if hex.is_empty() || hex.len() > 15 || !hex.iter().all(u8::is_ascii_hexdigit) {
        return Err(invalid("bad chunk size"));
    }
    u64::from_str_radix(std::str::from_utf8(hex).unwrap_or("x"), 16)
        .map_err(|_| invalid("bad chunk size"))
}

/// The reason phrase of a status.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Payload Too Large",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        507 => "Insufficient Storage",
        _ => "Status",
    }
}

/// A complete JSON error response of DESIGN §4's shape, closing the connection.
pub fn error_response(status: u16, code: &str, message: &str) -> Vec<u8> {
    error_response_with(status, code, message, "")
}

/// [`error_response`] with `extra` header lines (each ending in CRLF).
pub fn error_response_with(status: u16, code: &str, message: &str, extra: &str) -> Vec<u8> {
    let body = serde_json::json!({"error": {"code": code, "message": message}}).to_string();
    format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n{body}",
        reason(status),
        body.len()
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(bytes: &[u8]) -> Conn<io::Cursor<Vec<u8>>> {
        Conn::new(io::Cursor::new(bytes.to_vec()))
    }

    #[test]
    fn heads_are_read_whole_and_bodies_stay_buffered() {
        let mut c = conn(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabcGET");
        let raw = now_or_never(c.read_head(IDLE_TIMEOUT)).unwrap();
        let head = parse_request(&raw).unwrap();
        let mut out = Vec::new();
        now_or_never(copy_body(head.body, &mut c, &mut out)).unwrap();
        assert_eq!(out, b"abc");
        assert!(matches!(
            now_or_never(c.read_head(IDLE_TIMEOUT)),
            Err(HeadError::Bad(_))
        ));
        assert!(matches!(
            now_or_never(conn(b"").read_head(IDLE_TIMEOUT)),
            Err(HeadError::Closed)
        ));
    }

    #[test]
    fn a_head_over_the_limit_is_too_large() {
        let mut raw = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
        raw.extend(std::iter::repeat_n(b'a', MAX_HEAD_BYTES + 1));
        assert!(matches!(
            now_or_never(conn(&raw).read_head(IDLE_TIMEOUT)),
            Err(HeadError::TooLarge)
        ));
    }

    #[test]
    fn a_head_ending_past_the_limit_in_one_read_is_too_large() {
        let mut raw = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
        raw.extend(std::iter::repeat_n(b'a', MAX_HEAD_BYTES));
        raw.extend_from_slice(b"\r\n\r\n");
        assert!(matches!(
            now_or_never(conn(&raw).read_head(IDLE_TIMEOUT)),
            Err(HeadError::TooLarge)
        ));
    }

    fn whole(body: Body, bytes: &[u8], max: u64) -> Result<Vec<u8>, BodyError> {
        now_or_never(read_body_whole(body, &mut conn(bytes), max, HEAD_TIMEOUT))
    }

    #[test]
    fn bodies_are_read_whole_and_dechunked_within_the_limit() {
        let chunked = b"4\r\nWiki\r\n5;ext=1\r\npedia\r\n0\r\nX-Trailer: 1\r\n\r\nNEXT";
        assert_eq!(whole(Body::Chunked, chunked, 100).unwrap(), b"Wikipedia");
        assert_eq!(whole(Body::Length(3), b"abcdef", 100).unwrap(), b"abc");
        assert_eq!(whole(Body::None, b"abc", 100).unwrap(), b"");
        assert_eq!(whole(Body::Length(101), b"", 100), Err(BodyError::TooLarge));
        assert_eq!(whole(Body::Chunked, chunked, 8), Err(BodyError::TooLarge));
        assert_eq!(whole(Body::Length(5), b"ab", 100), Err(BodyError::Closed));
        for bad in [
            &b"g\r\nx\r\n0\r\n\r\n"[..],
            b"4\r\nWikiXX0\r\n\r\n",
            b"4\nWiki\r\n",
            b"4;a\rb\r\nWiki\r\n0\r\n\r\n",
            b"4\r\nWiki\r\n0\r\nX-T: a\rb\r\n\r\n",
            b"4\r\nWiki\r\n0\r\nX-T: a\x01\r\n\r\n",
        ] {
            assert_eq!(
                whole(Body::Chunked, bad, 100),
                Err(BodyError::Bad),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn chunked_bodies_pass_through_and_bad_sizes_fail() {
        let body = b"4\r\nWiki\r\n5;ext=1\r\npedia\r\n0\r\nX-Trailer: 1\r\n\r\n";
        let mut out = Vec::new();
        assert_eq!(
            now_or_never(copy_body(Body::Chunked, &mut conn(body), &mut out)).unwrap(),
            9
        );
        assert_eq!(out, body);
        for bad in [
            &b"g\r\nx\r\n0\r\n\r\n"[..],
            b"-1\r\n",
            b"4\nWiki\r\n0\r\n\r\n",
            b"4\r\nWikiXX0\r\n\r\n",
            b"\r\n",
            b"10000000000000000\r\n",
            b"4\r\r\nWiki\r\n0\r\n\r\n",
            b"4;ext=a\rb\r\nWiki\r\n0\r\n\r\n",
            b"4;\x00\r\nWiki\r\n0\r\n\r\n",
            b"4\r\nWiki\r\n0\r\nX-T: a\rb\r\n\r\n",
            b"4\r\nWiki\r\n0\r\n\r\r\n",
        ] {
            assert!(
                now_or_never(copy_body(Body::Chunked, &mut conn(bad), &mut Vec::new())).is_err(),
                "{bad:?}"
            );
        }
    }

    /// What a body's source handed out and what its destination passed on.
    #[derive(Default)]
    struct Ledger {
        handed: Vec<u8>,
        /// Written, not yet flushed (as a `BufWriter` holds them).
        pending: Vec<u8>,
        delivered: Vec<u8>,
        reads: usize,
        /// Flushes that passed bytes on.
        flushes: usize,
    }

    type Shared = std::rc::Rc<std::cell::RefCell<Ledger>>;

    /// A source that hands out one piece per read, and first checks that
    /// nothing whole that it handed out before still waits in the writer:
    /// at most the start of a chunk line or of a chunk's CRLF may.
    struct Pieces {
        pieces: std::collections::VecDeque<Vec<u8>>,
        ledger: Shared,
    }

    impl AsyncRead for Pieces {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            out: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let this = self.get_mut();
            let mut ledger = this.ledger.borrow_mut();
            let held = &ledger.handed[ledger.delivered.len()..];
            assert!(
                ledger.handed.starts_with(&ledger.delivered)
                    && held.len() < 3
                    && !held.contains(&b'\n'),
                "waiting with {:?} held back",
                String::from_utf8_lossy(held)
            );
            let Some(piece) = this.pieces.pop_front() else {
                return Poll::Ready(Ok(()));
            };
            assert!(piece.len() <= out.remaining(), "one piece per read");
            out.put_slice(&piece);
            ledger.handed.extend_from_slice(&piece);
            ledger.reads += 1;
            Poll::Ready(Ok(()))
        }
    }

    /// A writer that holds bytes until flushed.
    struct Holding(Shared);

    impl AsyncWrite for Holding {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.0.borrow_mut().pending.extend_from_slice(buf);
            Poll::Ready(Ok(buf.len()))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            let mut ledger = self.0.borrow_mut();
            if !ledger.pending.is_empty() {
                let pending = std::mem::take(&mut ledger.pending);
                ledger.delivered.extend_from_slice(&pending);
                ledger.flushes += 1;
            }
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.poll_flush(cx)
        }
    }

    /// Copy a body handed out in `pieces`; the ledger once the copy returned.
    fn flow(body: Body, pieces: &[&[u8]]) -> (io::Result<u64>, Ledger) {
        let ledger = Shared::default();
        let source = Pieces {
            pieces: pieces.iter().map(|p| p.to_vec()).collect(),
            ledger: ledger.clone(),
        };
        let copied = now_or_never(copy_body(
            body,
            &mut Conn::new(source),
            &mut Holding(ledger.clone()),
        ));
        let ledger = ledger.take();
        (copied, ledger)
    }

    #[test]
    fn each_piece_of_a_body_is_passed_on_before_the_next_is_waited_for() {
        let chunked: [&[u8]; 7] = [
            b"5\r\nhel",
            b"lo\r\n1",
            b"0\r\n0123456789abcdef",
            b"\r",
            b"\n4\r\ndata",
            b"\r\n0\r\n",
            b"X-T: 1\r\n\r\n",
        ];
        let cases: [(Body, &[&[u8]]); 3] = [
            (Body::Chunked, &chunked),
            (Body::Length(11), &[b"data: 1\n\n", b"x", b"y"]),
            (Body::UntilClose, &[b"one ", b"two ", b"three"]),
        ];
        for (body, pieces) in cases {
            let (copied, ledger) = flow(body, pieces);
            copied.unwrap();
            let mut all = ledger.delivered.clone();
            all.extend_from_slice(&ledger.pending);
            let whole: Vec<u8> = pieces.concat();
            let expected = match body {
                Body::Length(n) => &whole[..n as usize],
                _ => &whole[..],
            };
            assert_eq!(all, expected, "{body:?}");
            // Each network read is passed on with one flush at most.
            assert!(ledger.flushes <= ledger.reads, "{body:?}");
        }
    }

    #[test]
    fn small_chunks_read_together_are_passed_on_together() {
        let mut many = Vec::new();
        for i in 0..100 {
            many.extend_from_slice(format!("3\r\n{i:03}\r\n").as_bytes());
        }
        let (copied, ledger) = flow(Body::Chunked, &[&many, b"0\r\n\r\n"]);
        assert_eq!(copied.unwrap(), 300);
        // Two reads from the network, so one flush before the second: not
        // one per chunk.
        assert_eq!((ledger.reads, ledger.flushes), (2, 1));
        assert_eq!(ledger.delivered, many);
    }
}
