//! The front door: berth's own listener. It reads each request head with the strict
//! parser, bounds open connections, and routes: the API and dashboard go to tiny_http
//! on a Unix socket; `NAME.DOMAIN` and the relay paths go to the relay, never
//! into tiny_http.

use std::io::{self, BufWriter, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::kept::KeptAlive;
use crate::api::MAX_BODY_BYTES;
use crate::auth::Auth;
use crate::limits::{self, AddressSlot, PerAddress, Share, ShareSlot};
use crate::metrics;
use crate::proxy::forward::{self, Backend, Outcome};
use crate::proxy::forwarded::{self, TrustedProxies};
use crate::proxy::{self, Body, BodyError, Conn, HeadError, RequestHead};
use crate::relay::ingress::{self, Leg};
use crate::relay::Relay;
use crate::sync::lock;
use crate::tls::TlsStream;
use crate::wire::Stream;
use rustls::ServerConfig;

/// The relay's paths on the server's own host.
const CONNECT_PATH: &str = "/api/v1/tunnels/connect";
const ACCEPT_PREFIX: &str = "/api/v1/tunnels/accept/";

// Bounds (sized to the open-file limit at start): see `crate::limits`.
// `max_connections` counts connections with a thread serving requests (API,
// public tunnel traffic, relay handshakes); not control connections once
// they are past the head (they have their own bound, `max_tunnels`, so 1,000
// idle tunnels cannot starve the API and public traffic), and not parked data
// connections (no thread holds them; each tunnel parks at most
// `relay::PARKED_PER_TUNNEL`). Beyond it, `limits::relay_reserve` more are
// accepted so that the data connections a tunnel's client dials for waiting
// public connections are not refused when those fill the bound: past the
// bound, a connection is read up to its first head, and only the relay's own
// paths are served.
/// Bound on each write to a slow client.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Stack of a connection thread: it holds buffers on the heap, not the stack.
const CONN_STACK: usize = 256 * 1024;
/// Connection threads left waiting in `accept` at most: one whose connection
/// ends while this many wait ends too.
const IDLE_ACCEPTORS: usize = 8;
/// An API request body (at most `MAX_BODY_BYTES`) must arrive whole within this
/// time, like its head: the front door reads it before the API sees the request,
/// so slow uploads hold a front-door slot, never one of the API's few workers.
pub const API_BODY_TIMEOUT: Duration = proxy::HEAD_TIMEOUT;
/// After refusing a request, how long and how much of the rest the front door
/// reads and drops, so the refusal is not lost to a reset from unread bytes.
const LINGER_TIME: Duration = Duration::from_secs(2);
const LINGER_BYTES: u64 = 1024 * 1024;

/// What the front door needs to route.
pub struct FrontDoor {
    pub api_socket: PathBuf,
    /// Connections within the bound (see `Admission`).
    pub open: AtomicUsize,
    /// Connections in the relay's reserve past the bound.
    pub in_reserve: AtomicUsize,
    /// Control connections being served (their tunnels' threads hold a handle).
    pub controls: Arc<AtomicUsize>,
    pub stopping: AtomicBool,
    pub max_connections: usize,
    pub max_tunnels: usize,
    /// Connections public tunnel traffic holds; the rest of the bound is the
    /// API's, the dashboard's and the relay's.
    pub tunnel_traffic: Share,
    /// Connections per client address (a trusted proxy's own are counted
    /// per address it forwards for, once a head names it).
    pub per_address: PerAddress,
    /// Proxies whose `X-Forwarded-For` names the client.
    pub trusted: TrustedProxies,
    pub relay: Arc<Relay>,
    pub auth: Arc<Auth>,
    /// Connections kept alive between requests, closed when the server stops.
    kept: KeptAlive,
}

/// Where an accepted connection is counted: within the bound, or past it in
/// the relay's reserve. A connection is placed when accepted, before its
/// first head says what it is for, then moved once it does: a relay
/// handshake to the reserve (where there is room), any other request into
/// the bound (or refused). So the data connections `share` dials in a burst
/// never leave an API request arriving meanwhile with no slot, and a flood of
/// public requests never takes the reserve the relay needs.
struct Admission<'a> {
    door: &'a FrontDoor,
    reserve: bool,
}

impl<'a> Admission<'a> {
    /// Counted within the bound if there is room, else in the reserve if
    /// there is room there; None beyond both.
    fn enter(door: &'a FrontDoor) -> Option<Admission<'a>> {
        if take_below(&door.open, door.max_connections) {
            return Some(Admission {
                door,
                reserve: false,
            });
        }
        let reserve = limits::relay_reserve(door.max_connections);
        // Built only once its place is taken: an Admission dropped gives one back.
        take_below(&door.in_reserve, reserve).then(|| Admission {
            door,
            reserve: true,
        })
    }

    /// Into the reserve, when there is room (else it stays in the bound).
    fn move_to_reserve(&mut self) {
        let room = limits::relay_reserve(self.door.max_connections);
        if !self.reserve && take_below(&self.door.in_reserve, room) {
            self.door.open.fetch_sub(1, Ordering::SeqCst);
            self.reserve = true;
        }
    }

    /// Into the bound; false when it is full.
    fn move_to_bound(&mut self) -> bool {
        if self.reserve {
            if !take_below(&self.door.open, self.door.max_connections) {
                return false;
            }
            self.door.in_reserve.fetch_sub(1, Ordering::SeqCst);
            self.reserve = false;
        }
        true
    }
}

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        let count = if self.reserve {
            &self.door.in_reserve
        } else {
            &self.door.open
        };
        count.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Add one to `count` if it is below `most`.
fn take_below(count: &AtomicUsize, most: usize) -> bool {
    count
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
            (n < most).then(|| n + 1)
        })
        .is_ok()
}

/// Who a request is from, as the API is told: the client's address and the
/// scheme it used.
#[derive(Clone, Copy)]
struct Visitor<'a> {
    ip: &'a str,
    scheme: &'static str,
}

/// Where one request goes.
enum Route<'a> {
    Api,
    /// A public request to a tunnel's host.
    Tunnel(&'a str),
    /// `tunnels/connect`: the connection becomes a control connection.
    Control,
    /// `tunnels/accept/{id}`: the connection becomes a data connection.
    Accept(&'a str),
}

impl FrontDoor {
    pub fn new(api_socket: PathBuf, relay: Arc<Relay>, auth: Arc<Auth>) -> FrontDoor {
        FrontDoor {
            relay,
            auth,
            api_socket,
            open: AtomicUsize::new(0),
            in_reserve: AtomicUsize::new(0),
            controls: Arc::new(AtomicUsize::new(0)),
            stopping: AtomicBool::new(false),
            max_connections: limits::MAX_CONNECTIONS,
            max_tunnels: limits::MAX_TUNNELS,
            tunnel_traffic: Share::new(limits::MAX_CONNECTIONS),
            per_address: PerAddress::new(limits::MAX_PER_ADDRESS),
            trusted: TrustedProxies::default(),
            kept: KeptAlive::default(),
        }
    }

    /// Start stopping: connections finish the request they serve and close,
    /// and those waiting between requests close now, so the drain waits only
    /// for requests in flight.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.kept.close_waiting();
    }

    /// Serve the listener's connections until asked to stop, on connection
    /// threads that each accept their own (see [`Acceptors`]); with `tls`, each
    /// is a TLS connection whose handshake runs on its thread.
    pub fn serve(
        self: &Arc<Self>,
        listener: TcpListener,
        tls: Option<Arc<ServerConfig>>,
    ) -> io::Result<Arc<Acceptors>> {
        let acceptors = Arc::new(Acceptors {
            door: self.clone(),
            listener: Mutex::new(Some(Arc::new(listener))),
            tls,
            idle: AtomicUsize::new(0),
        });
        acceptors.start()?;
        Ok(acceptors)
    }

    /// One accepted connection: counted against the bound and its reserve
    /// (503 beyond), its TLS handshake if any, then its requests.
    fn serve_accepted(&self, stream: TcpStream, peer: SocketAddr, tls: Option<&Arc<ServerConfig>>) {
        let Some(mut admission) = Admission::enter(self) else {
            metrics::connection_refused();
            refuse_busy(stream, tls.is_some());
            return;
        };
        // A trusted proxy speaks for many clients: each is counted once its
        // head names it (see `handle`).
        let address = if self.trusted.trusts(peer.ip()) {
            None
        } else {
            match self.per_address.enter(peer.ip()) {
                Some(slot) => Some(slot),
                None => {
                    metrics::connection_refused();
                    refuse_crowded(stream, tls.is_some());
                    return;
                }
            }
        };
        let _open = metrics::connection_opened();
        // The handshake and the first head share one deadline.
        let deadline = Instant::now() + proxy::HEAD_TIMEOUT;
        let stream = match tls {
            None => Some(Stream::Tcp(stream)),
            // A failed handshake (a plain-HTTP client, an untrusting
            // one, a timeout) has no channel to answer on: close.
            Some(config) => TlsStream::accept(config.clone(), stream, deadline)
                .ok()
                .map(Stream::Tls),
        };
        if let Some(stream) = stream {
            self.handle(stream, peer, &mut admission, deadline);
        }
        drop(address);
    }

    /// Serve one client connection: a loop of request heads, each routed.
    /// `admission`: where it is counted, the bound or the relay's reserve;
    /// `first_by`: when the first head must be whole.
    fn handle(
        &self,
        stream: Stream,
        peer: SocketAddr,
        admission: &mut Admission,
        first_by: Instant,
    ) {
        let _ = stream.set_nodelay(true);
        let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
        let Ok(reader) = stream.try_clone() else {
            return;
        };
        let mut client = Conn::new(reader);
        let Some(kept) = self.kept.enter(&stream) else {
            return;
        };
        let mut out = BufWriter::new(&stream);
        let mut leg: Option<Leg> = None;
        // Only through this (and `to_api`, given it) does the loop change the
        // client socket's read timeout, so an unchanged one costs no system call.
        let timeout = proxy::ReadTimeout::default();
        let set_timeout = |t: Option<Duration>| timeout.set(t, |t| stream.set_read_timeout(t));
        // A new connection's first head must be whole by `first_by`; later
        // ones may wait `KEEP_ALIVE_IDLE` for their first byte.
        let mut first = true;
        let mut refused = false;
        // Written into every forwarded head: formatted once, unless a
        // trusted proxy names each request's client.
        let peer_ip = peer.ip().to_string();
        let from_proxy = self.trusted.trusts(peer.ip());
        // Held from the first request to a tunnel to the connection's end.
        let mut tunnel_slot: Option<ShareSlot> = None;
        while kept.wait_unless(&self.stopping) {
            let raw = if std::mem::take(&mut first) {
                client.read_head_by(first_by, &set_timeout)
            } else {
                client.read_head(proxy::KEEP_ALIVE_IDLE, &set_timeout)
            };
            let head = raw.and_then(|raw| proxy::parse_request(&raw));
            if !kept.take() {
                // Closed while it waited, the server stopping: no answer.
                break;
            }
            let head = match head {
                Ok(head) => head,
                Err(err) => {
                    refused = err.status().is_some();
                    refuse(&mut out, &err);
                    break;
                }
            };
            let _ = set_timeout(Some(proxy::IDLE_TIMEOUT));
            let route = self.route(&head);
            if let Err(why) = self.admit(&route, admission, &mut tunnel_slot) {
                metrics::connection_refused();
                let _ = out.write_all(&proxy::error_response(503, "unavailable", why));
                refused = true;
                break;
            }
            // Behind a trusted proxy: the client it names, counted as such
            // for as long as this request is served.
            let (peer, forwarded_ip, _slot) = match self.forwarded_client(&head, peer, from_proxy) {
                Some(named) => named,
                None => {
                    metrics::connection_refused();
                    let _ = out.write_all(&crowded_response());
                    refused = true;
                    break;
                }
            };
            let peer_ip = forwarded_ip.as_deref().unwrap_or(&peer_ip);
            // The scheme the client used: its connection's, or behind a
            // trusted proxy (which may end TLS) the proxy's X-Forwarded-Proto.
            let scheme = from_proxy
                .then(|| forwarded::proto(head.values("x-forwarded-proto")))
                .flatten()
                .unwrap_or(forward::scheme(&stream));
            let visitor = Visitor {
                ip: peer_ip,
                scheme,
            };
            let outcome = match route {
                Route::Api => self.to_api(&head, &mut client, &mut out, visitor, &set_timeout),
                Route::Tunnel(host) => {
                    if from_proxy {
                        ingress::rebind_for_proxy(&self.relay, host, &mut leg);
                    }
                    ingress::forward(
                        &self.relay,
                        &head,
                        host,
                        &mut client,
                        &stream,
                        &mut out,
                        &mut leg,
                        peer_ip,
                        scheme,
                    )
                }
                Route::Control => {
                    let _ = out.flush();
                    match self.control(&head, &stream, &mut client, peer) {
                        // The connection now belongs to its tunnel's thread.
                        Ok(Outcome::HandedOff) => return,
                        other => other,
                    }
                }
                Route::Accept(id) => {
                    let _ = out.flush();
                    if ingress::serve_accept(&self.relay, &head, id, &stream) {
                        // The connection now belongs to the public side's thread.
                        return;
                    }
                    Ok(Outcome::Close)
                }
            }
            .unwrap_or(Outcome::Close);
            if outcome == Outcome::Refused {
                refused = true;
            }
            if out.flush().is_err() || outcome != Outcome::KeepAlive {
                break;
            }
        }
        let _ = out.flush();
        if refused {
            linger(&stream);
        }
        let _ = stream.shutdown(Shutdown::Both);
    }

    /// Whether a request on `route` may be served on this connection: the
    /// relay's paths move to its reserve where there is room, so their
    /// handshakes never hold the slots the API needs; any other request needs
    /// a slot within the bound. Public tunnel traffic also takes a slot of
    /// its share, held in `tunnel_slot` to the connection's end, so it never
    /// takes the slots kept for the API, dashboard and relay. The 503's
    /// message if not.
    fn admit<'a>(
        &'a self,
        route: &Route,
        admission: &mut Admission,
        tunnel_slot: &mut Option<ShareSlot<'a>>,
    ) -> Result<(), &'static str> {
        match route {
            Route::Control | Route::Accept(_) => admission.move_to_reserve(),
            Route::Api | Route::Tunnel(_) => {
                if !admission.move_to_bound() {
                    return Err("The server has too many open connections; try again shortly.");
                }
            }
        }
        if matches!(route, Route::Tunnel(_)) && tunnel_slot.is_none() {
            *tunnel_slot = self.tunnel_traffic.take();
            if tunnel_slot.is_none() {
                return Err(
                    "The server's tunnels have too many open connections; try again shortly.",
                );
            }
        }
        Ok(())
    }

    /// The client of a request from `peer`: itself, or when it is a trusted
    /// proxy (`from_proxy`) the client its `X-Forwarded-For` names, with that
    /// address formatted and its slot of the per-address cap held; None when
    /// that address holds all it may.
    fn forwarded_client(
        &self,
        head: &RequestHead,
        peer: SocketAddr,
        from_proxy: bool,
    ) -> Option<(SocketAddr, Option<String>, Option<AddressSlot<'_>>)> {
        if !from_proxy {
            return Some((peer, None, None));
        }
        let ip = self
            .trusted
            .client(peer.ip(), head.values("x-forwarded-for"));
        let slot = if self.trusted.trusts(ip) {
            None
        } else {
            Some(self.per_address.enter(ip)?)
        };
        Some((SocketAddr::new(ip, peer.port()), Some(ip.to_string()), slot))
    }

    /// Serve a control connection, counted against `max_tunnels` instead of
    /// `max_connections` for as long as it lasts.
    fn control(
        &self,
        head: &RequestHead,
        stream: &Stream,
        client: &mut Conn<Stream>,
        peer: SocketAddr,
    ) -> io::Result<Outcome> {
        if self.controls.fetch_add(1, Ordering::SeqCst) >= self.max_tunnels {
            self.controls.fetch_sub(1, Ordering::SeqCst);
            let why = format!(
                "The server has too many open tunnels (its limit is {}); close one or try again later.",
                self.max_tunnels
            );
            (&*stream).write_all(&proxy::error_response(503, "unavailable", &why))?;
            return Ok(Outcome::Refused);
        }
        // Still counted among the front door's open connections (the gauge)
        // while its tunnel lives on a thread of its own.
        let counted = metrics::connection_opened();
        let controls = self.controls.clone();
        let ended = move || {
            drop(counted);
            controls.fetch_sub(1, Ordering::SeqCst);
        };
        let handed =
            ingress::serve_control(&self.relay, &self.auth, head, stream, client, peer, ended);
        if handed.unwrap_or(false) {
            return Ok(Outcome::HandedOff);
        }
        self.controls.fetch_sub(1, Ordering::SeqCst);
        Ok(Outcome::Close)
    }

    /// Route by Host first (a tunnel's name wins over every path, but the
    /// public URL's host is always the server's own), then by path.
    fn route<'a>(&self, head: &'a RequestHead) -> Route<'a> {
        let host = head.host();
        if !self.relay.is_own_host(host) && self.relay.subdomain_of(host).is_some() {
            return Route::Tunnel(host);
        }
        let path = head.target.split('?').next().unwrap_or("");
        if head.method == "GET" && path == CONNECT_PATH {
            return Route::Control;
        }
        match path.strip_prefix(ACCEPT_PREFIX) {
            Some(id) if head.method == "GET" && !id.is_empty() => Route::Accept(id),
            _ => Route::Api,
        }
    }

    /// Forward one request to the API and its response back.
    fn to_api(
        &self,
        head: &RequestHead,
        client: &mut Conn<Stream>,
        out: &mut impl Write,
        visitor: Visitor,
        set_timeout: &dyn Fn(Option<Duration>) -> io::Result<()>,
    ) -> io::Result<Outcome> {
        let refuse = |out: &mut dyn Write, status: u16, code: &str, message: &str| {
            out.write_all(&proxy::error_response(status, code, message))
                .map(|_| Outcome::Refused)
        };
        if !head.is_ascii() {
            return refuse(
                out,
                400,
                "bad_request",
                "The API reads only ASCII in the path and headers; percent-encode other characters.",
            );
        }
        if matches!(head.body, Body::Length(n) if n > MAX_BODY_BYTES) {
            return refuse(out, 413, "payload_too_large", TOO_LARGE);
        }
        if let Some(expect) = head.header("expect") {
            if !expect.eq_ignore_ascii_case("100-continue") {
                return refuse(
                    out,
                    417,
                    "bad_request",
                    "Only Expect: 100-continue is understood.",
                );
            }
            if head.body != Body::None {
                out.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
                out.flush()?;
            }
        }
        let body = match proxy::read_body_whole(
            head.body,
            client,
            MAX_BODY_BYTES,
            API_BODY_TIMEOUT,
            set_timeout,
        ) {
            Ok(body) => body,
            Err(BodyError::TooLarge) => {
                return refuse(out, 413, "payload_too_large", TOO_LARGE);
            }
            Err(BodyError::Bad) => {
                return refuse(
                    out,
                    400,
                    "bad_request",
                    "The chunked request body is malformed.",
                );
            }
            Err(BodyError::Timeout) => {
                return refuse(
                    out,
                    408,
                    "timeout",
                    "The request body did not arrive in time; send it whole within 10 seconds.",
                );
            }
            Err(BodyError::Closed) => return Ok(Outcome::Close),
        };
        let _ = set_timeout(Some(proxy::IDLE_TIMEOUT));
        // A new API connection per request: see `RequestHead::encode_for_api`.
        let Ok(mut api) = Backend::connect(&self.api_socket) else {
            out.write_all(&proxy::error_response(
                503,
                "unavailable",
                "The API is not running; try again in a moment.",
            ))?;
            return Ok(Outcome::Close);
        };
        match api.exchange(head, &body, out, visitor.ip, visitor.scheme)? {
            Outcome::Failed(_) => {
                out.write_all(&proxy::error_response(
                    502,
                    "bad_gateway",
                    "The API did not answer; try again.",
                ))?;
                Ok(Outcome::Close)
            }
            outcome => Ok(outcome),
        }
    }
}

const TOO_LARGE: &str = "The request body is larger than 64 KiB; send less.";

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

/// Stop sending, then read and drop what the client still sends (bounded in time
/// and bytes): closing with unread bytes would reset the connection and could
/// destroy the refusal before the client reads it.
fn linger(stream: &Stream) {
    let _ = stream.shutdown(Shutdown::Write);
    let _ = stream.set_read_timeout(Some(LINGER_TIME));
    let _ = io::copy(&mut io::Read::take(stream, LINGER_BYTES), &mut io::sink());
}

/// A listener's connection threads. Each waits in `accept` itself and serves
/// the connection it gets, so a new connection's first request is read by the
/// thread the kernel woke for it: starting a thread per connection (or waking
/// one from a pool) was a sizable share of a fresh connection's time to first
/// byte (scripts/bench-relay.sh). A thread that accepts while no other waits
/// starts one more before it serves, so a thread always waits in `accept`.
pub struct Acceptors {
    door: Arc<FrontDoor>,
    /// Taken out when the server stops: once the threads in `accept` are
    /// woken, the socket closes and new clients are refused at once rather
    /// than left waiting in the backlog through the drain.
    listener: Mutex<Option<Arc<TcpListener>>>,
    tls: Option<Arc<ServerConfig>>,
    /// Threads waiting in `accept`.
    idle: AtomicUsize,
}

impl Acceptors {
    /// Start one more connection thread.
    fn start(self: &Arc<Self>) -> io::Result<()> {
        let acceptors = self.clone();
        let name = if self.tls.is_some() {
            "conn-tls"
        } else {
            "conn"
        };
        std::thread::Builder::new()
            .name(name.into())
            .stack_size(CONN_STACK)
            .spawn(move || acceptors.run())
            .map(drop)
    }

    /// Accept and serve connections until the server stops or enough other
    /// threads wait.
    fn run(self: &Arc<Self>) {
        // A new thread always waits: it was started so that one does.
        self.idle.fetch_add(1, Ordering::SeqCst);
        loop {
            // A `stop` that saw no thread waiting may already be done.
            let listener = match lock(&self.listener).clone() {
                Some(listener) if !self.door.stopping.load(Ordering::SeqCst) => listener,
                _ => {
                    self.idle.fetch_sub(1, Ordering::SeqCst);
                    return;
                }
            };
            let accepted = listener.accept();
            drop(listener);
            let others = self.idle.fetch_sub(1, Ordering::SeqCst) - 1;
            if self.door.stopping.load(Ordering::SeqCst) {
                return;
            }
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(_) => {
                    // Out of descriptors, say: let some connections end first.
                    std::thread::sleep(Duration::from_millis(10));
                    self.idle.fetch_add(1, Ordering::SeqCst);
                    continue;
                }
            };
            if others == 0 && self.start().is_err() {
                // No thread would accept while this one serves: refuse.
                refuse_busy(stream, self.tls.is_some());
                self.idle.fetch_add(1, Ordering::SeqCst);
                continue;
            }
            self.door.serve_accepted(stream, peer, self.tls.as_ref());
            if self.door.stopping.load(Ordering::SeqCst) || !self.wait_again() {
                return;
            }
        }
    }

    /// Count this thread among those waiting in `accept`, unless
    /// `IDLE_ACCEPTORS` already wait: checked and counted in one atomic step,
    /// so threads whose connections end together cannot all stay.
    fn wait_again(&self) -> bool {
        self.idle
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < IDLE_ACCEPTORS).then_some(n + 1)
            })
            .is_ok()
    }

    /// After `stopping` is set: stop listening. No new `accept` starts; connect
    /// to the listener at `addr` until no thread waits in one (each that wakes
    /// sees the flag and ends), for at most a second; the socket closes with
    /// the last of them.
    pub fn stop(&self, addr: SocketAddr) {
        drop(lock(&self.listener).take());
        let deadline = std::time::Instant::now() + Duration::from_secs(1);
        while self.idle.load(Ordering::SeqCst) > 0 && std::time::Instant::now() < deadline {
            let _ = TcpStream::connect_timeout(&addr, Duration::from_millis(100));
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// 429 for an address that holds all the connections it may.
fn crowded_response() -> Vec<u8> {
    let why = "Too many connections from your address; close some and try again.";
    proxy::error_response_with(429, "rate_limited", why, "Retry-After: 1\r\n")
}

/// Tell a connection from an address over its cap to come back later (in
/// plain HTTP; a TLS client just sees the connection close).
fn refuse_crowded(stream: TcpStream, tls: bool) {
    if !tls {
        let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
        let _ = (&stream).write_all(&crowded_response());
    }
    let _ = stream.shutdown(Shutdown::Both);
}

/// Tell a connection beyond the bound to come back later (in plain HTTP; a TLS
/// client just sees the connection close, without spending a handshake on it).
fn refuse_busy(stream: TcpStream, tls: bool) {
    if tls {
        let _ = stream.shutdown(Shutdown::Both);
        return;
    }
    let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
    let _ = (&stream).write_all(&proxy::error_response(
        503,
        "unavailable",
        "The server has too many open connections; try again shortly.",
    ));
    let _ = stream.shutdown(Shutdown::Both);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    #[test]
    fn a_connection_refused_beyond_the_bound_and_the_reserve_gives_back_nothing() {
        let store = Arc::new(Store::open_in_memory().unwrap());
        let relay = Arc::new(Relay::new("localhost", "http://localhost"));
        let mut door = FrontDoor::new(PathBuf::new(), relay, Arc::new(Auth::new(store)));
        door.max_connections = 2;
        let reserve = limits::relay_reserve(2);
        let held: Vec<_> = (0..2 + reserve)
            .map(|_| Admission::enter(&door).unwrap())
            .collect();
        for _ in 0..3 {
            assert!(Admission::enter(&door).is_none());
        }
        assert_eq!(door.open.load(Ordering::SeqCst), 2);
        assert_eq!(door.in_reserve.load(Ordering::SeqCst), reserve);
        drop(held);
        assert_eq!(door.open.load(Ordering::SeqCst), 0);
        assert_eq!(door.in_reserve.load(Ordering::SeqCst), 0);
    }
}
