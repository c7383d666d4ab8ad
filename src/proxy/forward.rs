//! Forwarding one request and its response between a client's connection and
//! the connection behind it: a tunnel's service (streamed both ways, kept
//! alive, upgraded) or the API on its Unix socket (the body read whole first).

use std::io;
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::UnixStream;

use super::{Body, Conn, HeadError, RequestHead};
use crate::inspect;
use crate::time_fmt;
use crate::wire;

/// After a service took no more of a request body for the response timeout,
/// how long an answer it may have sent early (a 413, say) gets to arrive.
const EARLY_ANSWER_WAIT: Duration = Duration::from_millis(200);
/// How long a response from the API may take to start.
pub const BACKEND_TIMEOUT: Duration = Duration::from_secs(60);

/// How one exchange ended, and so what becomes of the client's connection.
/// One type for every step that ends an exchange: `exchange` ends in any of
/// the first five; the relay turns `Upgraded` into a splice and `Failed` into
/// its own page, and the front door's API path `Failed` into a 502, each then
/// `Close` or `Refused`; the front door's loop keeps the connection for the
/// next request on `KeepAlive` only, lingers on `Refused`, and lets go of it
/// on `HandedOff`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A response reached the client, and its connection takes the next request.
    KeepAlive,
    /// The connection closes: after a response, or with none to give.
    Close,
    /// Answered with (part of) the request body unread: close after lingering,
    /// so that closing does not reset the answer away.
    Refused,
    /// The service switched protocols: the connections are to be spliced.
    Upgraded,
    /// No response byte reached the client: it can still get berth's own answer.
    Failed(Failure),
}

/// The connection an exchange forwards to (in the relay, a data connection
/// to a tunnel's client), kept across the requests of one client connection.
/// Its reads wait, and its writes stall, at most the response timeout.
pub struct Upstream {
    pub conn: Conn<wire::conn::Conn>,
    /// How long the service may take to answer or to take more of a body.
    pub response_timeout: Duration,
}

impl Upstream {
    pub fn new(stream: wire::conn::Conn, response_timeout: Duration) -> Upstream {
        let mut conn = Conn::new(stream);
        conn.read_timeout = Some(response_timeout);
        conn.write_timeout = Some(response_timeout);
        Upstream {
            conn,
            response_timeout,
        }
    }
}

/// How much of the request reached the leg: a step within `exchange`, not
/// an outcome (only `Over` ends the exchange, with its outcome).
enum Sent {
    All,
    /// The leg stopped taking the body with this error: a service that
    /// answers early (413, say) and closes may have left its response.
    Partly(io::ErrorKind),
    /// The exchange ended here.
    Over(Outcome),
}

/// Send the request on the leg and stream the response back to `client`.
/// With `on_head`, the response head is flushed to the client as soon as it
/// is written, and then `on_head` runs (the relay refills its pool of data
/// connections then).
pub async fn exchange<C: AsyncRead + AsyncWrite + Unpin>(
    head: &RequestHead,
    client: &mut Conn<C>,
    leg: &mut Upstream,
    seen: &mut Observed<'_>,
    on_head: Option<&(dyn Fn() + Sync)>,
) -> io::Result<Outcome> {
    // A service that stopped taking the body may have answered early, and
    // one that closed on it may have left its answer: either is passed on.
    let (wait, none_in_time) = match send_request(head, client, leg, seen).await? {
        Sent::Over(answer) => return Ok(answer),
        Sent::Partly(kind) if super::is_timeout_kind(kind) => (EARLY_ANSWER_WAIT, Failure::Stalled),
        Sent::All | Sent::Partly(_) => (leg.response_timeout, Failure::TimedOut),
    };
    // The rest of a body the leg stopped taking is still unread on the public side.
    let unread = !seen.body_whole;
    let response = loop {
        let raw = match leg.conn.read_head(wait).await {
            Ok(raw) => raw,
            Err(err) => return Ok(Outcome::Failed(Failure::of_head(err, none_in_time))),
        };
        let Ok(response) = super::parse_response(&raw, head.method == "HEAD") else {
            return Ok(Outcome::Failed(Failure::Invalid));
        };
        if response.status >= 200 || response.status == 101 {
            break response;
        }
    };
    if response.status == 101 && (!head.upgrade || unread) {
        return Ok(Outcome::Failed(Failure::Invalid));
    }
    let keep = response.keep_alive && head.keep_alive && !unread;
    let encoded = response.encode(response.status == 101 || keep);
    seen.status = Some(response.status);
    seen.response_headers = inspect::text_fields(response.headers);
    client.write_all(&encoded).await?;
    if let Some(on_head) = on_head {
        client.flush().await?;
        on_head();
    }
    if response.status == 101 {
        client.flush().await?;
        return Ok(Outcome::Upgraded);
    }
    // The body's pauses, a quiet event stream between heartbeats, may each
    // last the response timeout (the leg's read timeout).
    let mut download = Counted::new(&mut *client);
    let copied = super::copy_body(response.body, &mut leg.conn, &mut download).await;
    seen.bytes_out = download.bytes;
    copied?;
    Ok(if keep {
        Outcome::KeepAlive
    } else if unread {
        Outcome::Refused
    } else {
        Outcome::Close
    })
}

/// A writer that counts the bytes written through it and remembers the kind
/// of its first failure, so a failed copy tells whether the leg or the
/// public client gave out.
struct Counted<'a, W> {
    inner: &'a mut W,
    bytes: u64,
    failed: Option<io::ErrorKind>,
}

impl<'a, W> Counted<'a, W> {
    fn new(inner: &'a mut W) -> Counted<'a, W> {
        Counted {
            inner,
            bytes: 0,
            failed: None,
        }
    }

    fn watch<T>(&mut self, polled: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if let Poll::Ready(Err(err)) = &polled {
            self.failed.get_or_insert(err.kind());
        }
        polled
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for Counted<'_, W> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut *this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &polled {
            this.bytes += *n as u64;
        }
        this.watch(polled)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut *this.inner).poll_flush(cx);
        this.watch(polled)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut *this.inner).poll_shutdown(cx);
        this.watch(polled)
    }
}

/// The request head and body onto the leg.
async fn send_request<C: AsyncRead + AsyncWrite + Unpin>(
    head: &RequestHead,
    client: &mut Conn<C>,
    leg: &mut Upstream,
    seen: &mut Observed<'_>,
) -> io::Result<Sent> {
    let continues = head
        .header("expect")
        .is_some_and(|e| e.eq_ignore_ascii_case("100-continue"));
    leg.conn.write_all(&seen.sent).await?;
    if head.body == Body::None {
        if let Err(err) = leg.conn.flush().await {
            return Ok(Sent::Over(Outcome::Failed(Failure::of_write(&err))));
        }
        return Ok(Sent::All);
    }
    if continues {
        client.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
        client.flush().await?;
    }
    let mut upload = Counted::new(&mut leg.conn);
    let mut sent = super::copy_body(head.body, client, &mut upload).await;
    if sent.is_ok() {
        if let Err(err) = upload.flush().await {
            sent = Err(err);
        }
    }
    seen.bytes_in = upload.bytes;
    match (sent, upload.failed) {
        (Ok(_), _) => {
            seen.body_whole = true;
            Ok(Sent::All)
        }
        // The leg, not the public client, gave out.
        (Err(_), Some(kind)) => Ok(Sent::Partly(kind)),
        // Broken chunk framing is the client's fault and no response has started.
        (Err(err), None) if err.kind() == io::ErrorKind::InvalidData => {
            let why = "The chunked request body is malformed.";
            seen.answer(client, &super::error_response(400, "bad_request", why))
                .await?;
            Ok(Sent::Over(Outcome::Refused))
        }
        (Err(err), None) => Err(err),
    }
}

/// After a 101: pipe the two connections both ways (what each had read past
/// the 101 first) until either closes, or no byte moved either way for `idle`.
pub async fn splice<A, B>(
    a: &mut Conn<A>,
    b: &mut Conn<B>,
    idle: Option<Duration>,
) -> io::Result<()>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    a.flush().await?;
    b.flush().await?;
    let (a_rest, b_rest) = (a.take_buffered(), b.take_buffered());
    b.stream.write_all(&a_rest).await?;
    a.stream.write_all(&b_rest).await?;
    a.release_buffers();
    b.release_buffers();
    wire::duplex::splice(&mut a.stream, &mut b.stream, idle).await;
    Ok(())
}

/// Why no response of the local service reached the public client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The leg closed before a response: the service (or `share`) closed it.
    Silent,
    /// What came back is not an HTTP/1.1 response.
    Invalid,
    /// No response began within the response timeout.
    TimedOut,
    /// The service took no more of the request body within the response
    /// timeout (the rest of the body is unread).
    Stalled,
}

impl Failure {
    /// Why the request head could not be sent.
    fn of_write(err: &io::Error) -> Failure {
        if super::is_timeout_kind(err.kind()) {
            Failure::TimedOut
        } else {
            Failure::Silent
        }
    }

    /// Why a response head could not be read; `idle` when none began in time.
    fn of_head(err: HeadError, idle: Failure) -> Failure {
        match err {
            HeadError::Idle => idle,
            HeadError::Bad(_) | HeadError::TooLarge | HeadError::Timeout => Failure::Invalid,
            HeadError::Closed | HeadError::Io => Failure::Silent,
        }
    }

    /// The status and the sentence for the public client.
    pub fn explain(self, host: &str, timeout: Duration) -> (u16, String) {
        let secs = match timeout.as_secs() {
            1 => "1 second".to_string(),
            n => format!("{n} seconds"),
        };
        match self {
            Failure::Silent => (502, format!("The service behind {host} did not answer.")),
            Failure::Invalid => (
                502,
                format!(
                    "The service behind {host} sent something that is not an HTTP/1.1 response."
                ),
            ),
            Failure::TimedOut => (
                504,
                format!("The service behind {host} did not answer within {secs}."),
            ),
            Failure::Stalled => (
                504,
                format!("The service behind {host} stopped reading the request body for {secs}."),
            ),
        }
    }
}

/// What was seen of one exchange with a tunnel's service, for the inspector.
pub struct Observed<'a> {
    pub started: Instant,
    pub at: String,
    /// The head as forwarded to the service, and what went into it.
    pub sent: Vec<u8>,
    pub client_ip: &'a str,
    pub scheme: &'static str,
    pub bytes_in: u64,
    /// The request body reached the service whole (or there was none).
    pub body_whole: bool,
    /// Status and headers of the response that reached the public client, once one did.
    pub status: Option<u16>,
    pub response_headers: Vec<(String, String)>,
    pub bytes_out: u64,
}

impl<'a> Observed<'a> {
    pub fn start(head: &RequestHead, client_ip: &'a str, scheme: &'static str) -> Observed<'a> {
        Observed {
            started: Instant::now(),
            at: time_fmt::now(),
            sent: head.encode_forwarded(client_ip, scheme),
            client_ip,
            scheme,
            bytes_in: 0,
            body_whole: head.body == Body::None,
            status: None,
            response_headers: Vec::new(),
            bytes_out: 0,
        }
    }

    /// Send berth's own whole response (a 502 page, a 400) and remember it.
    pub async fn answer(
        &mut self,
        out: &mut (impl AsyncWrite + Unpin),
        response: &[u8],
    ) -> io::Result<()> {
        if let Ok(parsed) = super::parse_response(response, false) {
            self.status = Some(parsed.status);
            self.response_headers = inspect::text_fields(parsed.headers);
            if let Body::Length(n) = parsed.body {
                self.bytes_out = n;
            }
        }
        out.write_all(response).await
    }
}

/// The scheme the public client used on its connection to berth, for
/// X-Forwarded-Proto (a trusted proxy's own word replaces it: see the front door).
pub fn scheme(stream: &wire::conn::Conn) -> &'static str {
    match stream {
        wire::conn::Conn::Tls(_) => "https",
        wire::conn::Conn::Tcp(_) => "http",
    }
}

/// A connection to the API's Unix socket, for one request.
pub struct Backend {
    conn: Conn<UnixStream>,
}

impl Backend {
    pub async fn connect(path: &Path) -> io::Result<Backend> {
        let mut conn = Conn::new(UnixStream::connect(path).await?);
        conn.read_timeout = Some(BACKEND_TIMEOUT);
        conn.write_timeout = Some(BACKEND_TIMEOUT);
        Ok(Backend { conn })
    }

    /// One request, its body already read whole, to the API; its response
    /// streamed to the client. `Failed` while nothing was sent to the
    /// client, which can still get an error response; an error after.
    pub async fn exchange<C: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        head: &RequestHead,
        body: &[u8],
        out: &mut Conn<C>,
        client_ip: &str,
        scheme: &str,
    ) -> io::Result<Outcome> {
        let mut request = head.encode_for_api(client_ip, scheme, body.len());
        request.extend_from_slice(body);
        self.conn.write_all(&request).await?;
        if let Err(err) = self.conn.flush().await {
            return Ok(Outcome::Failed(Failure::of_write(&err)));
        }
        let response = loop {
            let raw = match self.conn.read_head(BACKEND_TIMEOUT).await {
                Ok(raw) => raw,
                Err(err) => return Ok(Outcome::Failed(Failure::of_head(err, Failure::TimedOut))),
            };
            let Ok(response) = super::parse_response(&raw, head.method == "HEAD") else {
                return Ok(Outcome::Failed(Failure::Invalid));
            };
            // 100 Continue was answered by the front door already.
            if response.status >= 200 || response.status == 101 {
                break response;
            }
        };
        let keep_client = response.keep_alive || response.body != Body::UntilClose;
        let keep = keep_client && head.keep_alive;
        out.write_all(&response.encode(keep)).await?;
        super::copy_body(response.body, &mut self.conn, out).await?;
        Ok(if keep {
            Outcome::KeepAlive
        } else {
            Outcome::Close
        })
    }
}
