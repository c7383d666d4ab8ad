//! The front door: berth's own listener. It reads each request head with the strict
//! parser, bounds open connections, and routes: the API and dashboard go to tiny_http
//! on a Unix socket; tunnels and relay paths will plug in here, never into tiny_http.

use std::io::{self, BufWriter, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::proxy::{self, Body, Conn, HeadError, RequestHead};

/// Open connections the front door serves at once; beyond, 503 and close.
pub const MAX_CONNECTIONS: usize = 1024;
/// How long a response from the API may take to start.
const BACKEND_TIMEOUT: Duration = Duration::from_secs(60);
/// Bound on each write to a slow client.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Stack of a connection thread: it holds buffers on the heap, not the stack.
const CONN_STACK: usize = 256 * 1024;

/// What the front door needs to route.
pub struct FrontDoor {
    pub api_socket: PathBuf,
    pub open: AtomicUsize,
    pub stopping: AtomicBool,
    pub max_connections: usize,
}

impl FrontDoor {
    pub fn new(api_socket: PathBuf) -> FrontDoor {
        FrontDoor {
            api_socket,
            open: AtomicUsize::new(0),
            stopping: AtomicBool::new(false),
            max_connections: MAX_CONNECTIONS,
        }
    }

    /// Accept connections until asked to stop.
    pub fn serve(self: &Arc<Self>, listener: TcpListener) {
        for stream in listener.incoming() {
            if self.stopping.load(Ordering::SeqCst) {
                break;
            }
            let Ok(stream) = stream else { continue };
            let Ok(peer) = stream.peer_addr() else {
                continue;
            };
            if self.open.fetch_add(1, Ordering::SeqCst) >= self.max_connections {
                self.open.fetch_sub(1, Ordering::SeqCst);
                refuse_busy(stream);
                continue;
            }
            let door = self.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("conn-{peer}"))
                .stack_size(CONN_STACK)
                .spawn(move || {
                    door.handle(stream, peer);
                    door.open.fetch_sub(1, Ordering::SeqCst);
                });
            if spawned.is_err() {
                self.open.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }

    /// Serve one client connection: a loop of request heads, each routed.
    fn handle(&self, stream: TcpStream, peer: SocketAddr) {
        let _ = stream.set_nodelay(true);
        let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
        let Ok(reader) = stream.try_clone() else {
            return;
        };
        let mut client = Conn::new(reader);
        let mut out = BufWriter::new(&stream);
        let mut backend: Option<Backend> = None;
        let set_timeout = |t: Option<Duration>| stream.set_read_timeout(t);
        loop {
            let head = client
                .read_head(proxy::IDLE_TIMEOUT, &set_timeout)
                .and_then(|raw| proxy::parse_request(&raw));
            let head = match head {
                Ok(head) => head,
                Err(err) => {
                    refuse(&mut out, &err);
                    break;
                }
            };
            let _ = stream.set_read_timeout(Some(proxy::IDLE_TIMEOUT));
            let keep_alive = self
                .to_api(&head, &mut client, &mut out, &mut backend, peer)
                .unwrap_or_default();
            if out.flush().is_err() || !keep_alive || self.stopping.load(Ordering::SeqCst) {
                break;
            }
        }
        let _ = out.flush();
        let _ = stream.shutdown(Shutdown::Both);
    }

    /// Forward one request to the API and its response back; Ok(keep the client connection).
    fn to_api(
        &self,
        head: &RequestHead,
        client: &mut Conn<TcpStream>,
        out: &mut impl Write,
        backend: &mut Option<Backend>,
        peer: SocketAddr,
    ) -> io::Result<bool> {
        if let Some(expect) = head.header("expect") {
            if !expect.eq_ignore_ascii_case("100-continue") {
                out.write_all(&proxy::error_response(
                    417,
                    "bad_request",
                    "Only Expect: 100-continue is understood.",
                ))?;
                return Ok(false);
            }
            if head.body != Body::None {
                out.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
                out.flush()?;
            }
        }
        if backend.is_none() {
            match Backend::connect(&self.api_socket) {
                Ok(b) => *backend = Some(b),
                Err(_) => {
                    out.write_all(&proxy::error_response(
                        503,
                        "unavailable",
                        "The API is not running; try again in a moment.",
                    ))?;
                    return Ok(false);
                }
            }
        }
        let Some(api) = backend.as_mut() else {
            return Ok(false);
        };
        let result = exchange(head, client, out, api, &peer.ip().to_string());
        match result {
            Ok(Exchange {
                keep_backend,
                keep_client,
            }) => {
                if !keep_backend {
                    *backend = None;
                }
                Ok(keep_client && head.keep_alive)
            }
            Err(ExchangeError::BeforeResponse) => {
                *backend = None;
                out.write_all(&proxy::error_response(
                    502,
                    "bad_gateway",
                    "The API did not answer; try again.",
                ))?;
                Ok(false)
            }
            Err(ExchangeError::After(err)) => Err(err),
        }
    }
}

/// A keep-alive connection to the API's Unix socket.
struct Backend {
    reader: Conn<UnixStream>,
    writer: UnixStream,
}

impl Backend {
    fn connect(path: &PathBuf) -> io::Result<Backend> {
        let writer = UnixStream::connect(path)?;
        writer.set_read_timeout(Some(BACKEND_TIMEOUT))?;
        Ok(Backend {
            reader: Conn::new(writer.try_clone()?),
            writer,
        })
    }
}

struct Exchange {
    keep_backend: bool,
    keep_client: bool,
}

enum ExchangeError {
    /// Nothing was sent to the client yet: it can still get an error response.
    BeforeResponse,
    After(io::Error),
}

/// One request to the backend and its response to the client, bodies streamed.
fn exchange(
    head: &RequestHead,
    client: &mut Conn<TcpStream>,
    out: &mut impl Write,
    api: &mut Backend,
    client_ip: &str,
) -> Result<Exchange, ExchangeError> {
    let before = |_: io::Error| ExchangeError::BeforeResponse;
    let mut request = head.encode_forwarded(client_ip, "http");
    if let Body::Length(n) = head.body {
        // Small bodies go out with the head in one write.
        if n <= 16 * 1024 {
            let mut body = vec![0; n as usize];
            io::Read::read_exact(client, &mut body).map_err(ExchangeError::After)?;
            request.extend_from_slice(&body);
        }
    }
    api.writer.write_all(&request).map_err(before)?;
    if !matches!(head.body, Body::Length(n) if n <= 16 * 1024) {
        proxy::copy_body(head.body, client, &mut api.writer).map_err(ExchangeError::After)?;
    }
    let response = loop {
        let raw = api
            .reader
            .read_head(BACKEND_TIMEOUT, &|t| api.writer.set_read_timeout(t))
            .map_err(|e| before(io::Error::other(e.message())))?;
        let response = proxy::parse_response(&raw, head.method == "HEAD").map_err(before)?;
        // 100 Continue was answered by the front door already.
        if response.status >= 200 || response.status == 101 {
            break response;
        }
    };
    let keep_client = response.keep_alive || response.body != Body::UntilClose;
    out.write_all(&response.encode(keep_client && head.keep_alive))
        .map_err(ExchangeError::After)?;
    proxy::copy_body(response.body, &mut api.reader, out).map_err(ExchangeError::After)?;
    Ok(Exchange {
        keep_backend: response.keep_alive,
        keep_client,
    })
}

/// Answer a refused head, if the client is still there to read it.
fn refuse(out: &mut impl Write, err: &HeadError) {
    if let Some((status, _)) = err.status() {
        let code = if status == 400 {
            "bad_request"
        } else if status == 431 {
            "header_too_large"
        } else {
            "timeout"
        };
        let _ = out.write_all(&proxy::error_response(status, code, err.message()));
    }
}

/// Tell a connection beyond the bound to come back later.
fn refuse_busy(stream: TcpStream) {
    let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
    let _ = (&stream).write_all(&proxy::error_response(
        503,
        "unavailable",
        "The server has too many open connections; try again shortly.",
    ));
    let _ = stream.shutdown(Shutdown::Both);
}
