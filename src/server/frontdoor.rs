//! The front door: berth's own listener. It reads each request head with the strict
//! parser, bounds open connections, and routes: the API and dashboard go to tiny_http
//! on a Unix socket; `NAME.DOMAIN` and the relay paths go to the relay, never
//! into tiny_http.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tokio::time::{timeout, timeout_at, Instant};
use tokio_rustls::TlsAcceptor;

use crate::api::MAX_BODY_BYTES;
use crate::auth::Auth;
use crate::limits::{self, AddressSlot, PerAddress, Share, ShareSlot};
use crate::metrics;
use crate::proxy::forward::{self, Backend, Outcome};
use crate::proxy::forwarded::{self, TrustedProxies};
use crate::proxy::{self, Body, BodyError, Conn, HeadError, RequestHead};
use crate::relay::ingress::{self, Client, Leg, Opened};
use crate::relay::Relay;
use crate::wire;

/// The relay's paths on the server's own host.
const CONNECT_PATH: &str = "/api/v1/tunnels/connect";
const ACCEPT_PREFIX: &str = "/api/v1/tunnels/accept/";

// Bounds (sized to the open-file limit at start): see `crate::limits`.
// `max_connections` counts connections with a task serving requests (API,
// public tunnel traffic, relay handshakes); not control connections once
// they are past the head (they have their own bound, `max_tunnels`, so 1,000
// idle tunnels cannot starve the API and public traffic), and not parked data
// connections (no task holds them; each tunnel parks at most
// `relay::PARKED_PER_TUNNEL`). Beyond it, `limits::relay_reserve` more are
// accepted so that the data connections a tunnel's client dials for waiting
// public connections are not refused when those fill the bound: past the
// bound, a connection is read up to its first head, and only the relay's own
// paths are served.
/// Bound on each write to a slow client.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// After a failed accept (out of descriptors, say), wait this long before the next.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);
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
    /// Control connections being served.
    pub controls: AtomicUsize,
    pub stopping: AtomicBool,
    /// Told when the server stops: connections waiting for a request close.
    stop_signal: watch::Sender<bool>,
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

    /// Keep the place taken without this guard (to carry it into a task):
    /// whether it is in the reserve, to take it back with `resume`.
    fn detach(self) -> bool {
        let reserve = self.reserve;
        std::mem::forget(self);
        reserve
    }

    /// The guard of a place given up with `detach`.
    fn resume(door: &'a FrontDoor, reserve: bool) -> Admission<'a> {
        Admission { door, reserve }
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

/// What a connection becomes once its requests are over: a relay connection
/// its tunnel keeps.
enum Handoff<'a> {
    /// A control connection, counted in `controls` while it lasts.
    Control(Opened, ControlSlot<'a>),
    /// A data connection for this id, answered 101.
    Data(String),
}

/// Where an accepted connection is counted, carried into its task.
struct Place {
    /// In the relay's reserve (else within the bound).
    reserve: bool,
    /// The address whose cap it counts against, if any.
    address: Option<std::net::IpAddr>,
}

/// A control connection's place within `max_tunnels`, given back when dropped.
struct ControlSlot<'a>(&'a AtomicUsize);

impl Drop for ControlSlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
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
            controls: AtomicUsize::new(0),
            stopping: AtomicBool::new(false),
            stop_signal: watch::channel(false).0,
            max_connections: limits::MAX_CONNECTIONS,
            max_tunnels: limits::MAX_TUNNELS,
            tunnel_traffic: Share::new(limits::MAX_CONNECTIONS),
            per_address: PerAddress::new(limits::MAX_PER_ADDRESS),
            trusted: TrustedProxies::default(),
        }
    }

    /// Start stopping: connections finish the request they serve and close,
    /// and those waiting between requests close now, so the drain waits only
    /// for requests in flight.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.stop_signal.send_replace(true);
    }

    /// Serve the listener's connections on `runtime` until asked to stop, a
    /// task each; with `tls`, each is a TLS connection whose handshake runs
    /// on its task.
    pub fn serve(
        self: &Arc<Self>,
        listener: std::net::TcpListener,
        tls: Option<Arc<ServerConfig>>,
        runtime: &tokio::runtime::Handle,
    ) -> io::Result<Acceptor> {
        listener.set_nonblocking(true)?;
        let _entered = runtime.enter();
        let listener = TcpListener::from_std(listener)?;
        let door = self.clone();
        let tls = tls.map(TlsAcceptor::from);
        let task = runtime.spawn(async move {
            loop {
                let (stream, peer) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(_) => {
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                        continue;
                    }
                };
                // Counted here, in the order connections came.
                let place = door.place(peer);
                let (door, tls) = (door.clone(), tls.clone());
                tokio::spawn(async move {
                    match place {
                        Ok(place) => door.serve_accepted(stream, peer, place, tls.as_ref()).await,
                        Err(answer) => {
                            metrics::connection_refused();
                            refuse(stream, tls.is_some(), &answer).await;
                        }
                    }
                });
            }
        });
        Ok(Acceptor { task })
    }

    /// Count a connection just accepted from `peer` against the bound and
    /// its reserve (503 beyond) and the cap of its address (429 beyond):
    /// where it is counted, or the answer that refuses it.
    fn place(&self, peer: SocketAddr) -> Result<Place, Vec<u8>> {
        let admission = Admission::enter(self).ok_or_else(busy_response)?;
        // A trusted proxy speaks for many clients: each is counted once its
        // head names it (see `handle`).
        let address = if self.trusted.trusts(peer.ip()) {
            None
        } else {
            let slot = self
                .per_address
                .enter(peer.ip())
                .ok_or_else(crowded_response)?;
            Some(slot.detach())
        };
        Ok(Place {
            reserve: admission.detach(),
            address,
        })
    }

    /// One accepted connection, counted at `place`: its TLS handshake if
    /// any, then its requests; then, if it became a relay connection, its
    /// tunnel's.
    async fn serve_accepted(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
        place: Place,
        tls: Option<&TlsAcceptor>,
    ) {
        let mut admission = Admission::resume(self, place.reserve);
        let address = place.address.map(|ip| self.per_address.resume(ip));
        if self.stopping.load(Ordering::SeqCst) {
            return;
        }
        let _open = metrics::connection_opened();
        let _ = stream.set_nodelay(true);
        // The handshake and the first head share one deadline.
        let deadline = Instant::now() + proxy::HEAD_TIMEOUT;
        let stream = match tls {
            None => wire::conn::Conn::Tcp(stream),
            // A failed handshake (a plain-HTTP client, an untrusting
            // one, a timeout) has no channel to answer on: close.
            Some(acceptor) => {
                match timeout_at(deadline, acceptor.accept(wire::conn::Tallied::new(stream))).await
                {
                    Ok(Ok(tls)) => wire::conn::Conn::Tls(Box::new(tls.into())),
                    _ => return,
                }
            }
        };
        let mut client = Conn::new(stream);
        client.read_timeout = Some(proxy::IDLE_TIMEOUT);
        client.write_timeout = Some(WRITE_TIMEOUT);
        // Notified when the tunnel this connection is bound to closes.
        let cut = Arc::new(Notify::new());
        let handoff = tokio::select! {
            biased;
            () = cut.notified() => None,
            handoff = self.handle(&mut client, peer, &mut admission, deadline, &cut) => handoff,
        };
        // A relay connection is counted apart from the bound, by address no more.
        drop(admission);
        drop(address);
        match handoff {
            None => {}
            Some(Handoff::Control(opened, _slot)) => {
                let (stream, rest) = client.into_parts();
                ingress::run_control(&self.relay, opened, stream, rest).await;
            }
            Some(Handoff::Data(id)) => {
                // A client says nothing on a data connection before its first request.
                let (stream, rest) = client.into_parts();
                if rest.is_empty() {
                    let _ = self.relay.deliver(&id, stream);
                }
            }
        }
    }

    /// Serve one client connection: a loop of request heads, each routed.
    /// `admission`: where it is counted, the bound or the relay's reserve;
    /// `first_by`: when the first head must be whole. What it becomes if it
    /// is a relay connection.
    async fn handle(
        &self,
        client: &mut Client,
        peer: SocketAddr,
        admission: &mut Admission<'_>,
        first_by: Instant,
        cut: &Arc<Notify>,
    ) -> Option<Handoff<'_>> {
        let mut stop_signal = self.stop_signal.subscribe();
        // Made once: waiting on it registers with the signal once per connection.
        let mut stopped = std::pin::pin!(stop_signal.wait_for(|stopping| *stopping));
        let mut leg: Option<Leg> = None;
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
        let handoff = loop {
            if self.stopping.load(Ordering::SeqCst) {
                break None;
            }
            // Under TLS, a record begun and not whole is a head begun.
            let raw_before = client.stream.raw_bytes_read();
            let read = async {
                let read = if std::mem::take(&mut first) {
                    client.read_head_by(first_by).await
                } else {
                    client.read_head(proxy::KEEP_ALIVE_IDLE).await
                };
                match read {
                    Err(HeadError::Idle) if client.stream.raw_bytes_read() != raw_before => {
                        Err(HeadError::Timeout)
                    }
                    other => other,
                }
            };
            let raw = tokio::select! {
                raw = read => raw,
                // Closed while it waited, the server stopping: no answer.
                _ = &mut stopped => break None,
            };
            let head = match raw.and_then(|raw| proxy::parse_request(&raw)) {
                Ok(head) => head,
                Err(err) => {
                    refused = err.status().is_some();
                    answer_refused(client, &err).await;
                    break None;
                }
            };
            let route = self.route(&head);
            if let Err(why) = self.admit(&route, admission, &mut tunnel_slot) {
                metrics::connection_refused();
                let _ = client
                    .write_all(&proxy::error_response(503, "unavailable", why))
                    .await;
                refused = true;
                break None;
            }
            // Behind a trusted proxy: the client it names, counted as such
            // for as long as this request is served.
            let (peer, forwarded_ip, _slot) = match self.forwarded_client(&head, peer, from_proxy) {
                Some(named) => named,
                None => {
                    metrics::connection_refused();
                    let _ = client.write_all(&crowded_response()).await;
                    refused = true;
                    break None;
                }
            };
            let peer_ip = forwarded_ip.as_deref().unwrap_or(&peer_ip);
            // The scheme the client used: its connection's, or behind a
            // trusted proxy (which may end TLS) the proxy's X-Forwarded-Proto.
            let scheme = from_proxy
                .then(|| forwarded::proto(head.values("x-forwarded-proto")))
                .flatten()
                .unwrap_or(forward::scheme(&client.stream));
            let visitor = Visitor {
                ip: peer_ip,
                scheme,
            };
            let outcome = match route {
                Route::Api => self.to_api(&head, client, visitor).await,
                Route::Tunnel(host) => {
                    if from_proxy {
                        ingress::rebind_for_proxy(&self.relay, host, &mut leg);
                    }
                    let relay = &self.relay;
                    ingress::forward(relay, &head, host, client, cut, &mut leg, peer_ip, scheme)
                        .await
                }
                Route::Control => match self.control(&head, client, peer).await {
                    Ok(Ok(handoff)) => break Some(handoff),
                    Ok(Err(outcome)) => Ok(outcome),
                    Err(err) => Err(err),
                },
                Route::Accept(id) => {
                    match ingress::accept_data(&self.relay, &head, id, client).await {
                        Ok(true) => break Some(Handoff::Data(id.to_string())),
                        Ok(false) => Ok(Outcome::Close),
                        Err(err) => Err(err),
                    }
                }
            }
            .unwrap_or(Outcome::Close);
            if outcome == Outcome::Refused {
                refused = true;
            }
            if client.flush().await.is_err() || outcome != Outcome::KeepAlive {
                break None;
            }
        };
        if handoff.is_none() {
            let _ = client.flush().await;
            if refused {
                // It stops sending first itself.
                linger(client).await;
            } else {
                let _ = timeout(WRITE_TIMEOUT, client.stream.shutdown()).await;
            }
        }
        handoff
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

    /// Open a tunnel on a control connection, counted against `max_tunnels`
    /// instead of `max_connections` for as long as it lasts; refused, the
    /// outcome for the connection.
    async fn control(
        &self,
        head: &RequestHead,
        client: &mut Client,
        peer: SocketAddr,
    ) -> io::Result<Result<Handoff<'_>, Outcome>> {
        if self.controls.fetch_add(1, Ordering::SeqCst) >= self.max_tunnels {
            self.controls.fetch_sub(1, Ordering::SeqCst);
            let why = format!(
                "The server has too many open tunnels (its limit is {}); close one or try again later.",
                self.max_tunnels
            );
            client
                .write_all(&proxy::error_response(503, "unavailable", &why))
                .await?;
            return Ok(Err(Outcome::Refused));
        }
        let slot = ControlSlot(&self.controls);
        let opened = ingress::open_control(&self.relay, &self.auth, head, client, peer).await?;
        Ok(match opened {
            Some(opened) => Ok(Handoff::Control(opened, slot)),
            None => Err(Outcome::Close),
        })
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
    async fn to_api(
        &self,
        head: &RequestHead,
        client: &mut Client,
        visitor: Visitor<'_>,
    ) -> io::Result<Outcome> {
        if !head.is_ascii() {
            let why = "The API reads only ASCII in the path and headers; percent-encode other characters.";
            return refuse_with(client, 400, "bad_request", why).await;
        }
        if matches!(head.body, Body::Length(n) if n > MAX_BODY_BYTES) {
            return refuse_with(client, 413, "payload_too_large", TOO_LARGE).await;
        }
        if let Some(expect) = head.header("expect") {
            if !expect.eq_ignore_ascii_case("100-continue") {
                let why = "Only Expect: 100-continue is understood.";
                return refuse_with(client, 417, "bad_request", why).await;
            }
            if head.body != Body::None {
                client.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
                client.flush().await?;
            }
        }
        let body = match proxy::read_body_whole(head.body, client, MAX_BODY_BYTES, API_BODY_TIMEOUT)
            .await
        {
            Ok(body) => body,
            Err(BodyError::TooLarge) => {
                return refuse_with(client, 413, "payload_too_large", TOO_LARGE).await;
            }
            Err(BodyError::Bad) => {
                let why = "The chunked request body is malformed.";
                return refuse_with(client, 400, "bad_request", why).await;
            }
            Err(BodyError::Timeout) => {
                let why =
                    "The request body did not arrive in time; send it whole within 10 seconds.";
                return refuse_with(client, 408, "timeout", why).await;
            }
            Err(BodyError::Closed) => return Ok(Outcome::Close),
        };
        // A new API connection per request: see `RequestHead::encode_for_api`.
        let Ok(mut api) = Backend::connect(&self.api_socket).await else {
            let why = "The API is not running; try again in a moment.";
            client
                .write_all(&proxy::error_response(503, "unavailable", why))
                .await?;
            return Ok(Outcome::Close);
        };
        match api
            .exchange(head, &body, client, visitor.ip, visitor.scheme)
            .await?
        {
            Outcome::Failed(_) => {
                let why = "The API did not answer; try again.";
                client
                    .write_all(&proxy::error_response(502, "bad_gateway", why))
                    .await?;
                Ok(Outcome::Close)
            }
            outcome => Ok(outcome),
        }
    }
}

/// Answer with a JSON error and leave the rest of the request unread.
async fn refuse_with(
    client: &mut Client,
    status: u16,
    code: &str,
    message: &str,
) -> io::Result<Outcome> {
    client
        .write_all(&proxy::error_response(status, code, message))
        .await
        .map(|()| Outcome::Refused)
}

const TOO_LARGE: &str = "The request body is larger than 64 KiB; send less.";

/// Answer a refused head, if the client is still there to read it.
async fn answer_refused(client: &mut Client, err: &HeadError) {
    if let Some((status, _)) = err.status() {
        let code = if status == 400 {
            "bad_request"
        } else if status == 431 {
            "header_too_large"
        } else {
            "timeout"
        };
        let _ = client
            .write_all(&proxy::error_response(status, code, err.message()))
            .await;
    }
}

/// Stop sending, then read and drop what the client still sends (bounded in time
/// and bytes): closing with unread bytes would reset the connection and could
/// destroy the refusal before the client reads it.
async fn linger(client: &mut Client) {
    let _ = timeout(WRITE_TIMEOUT, client.flush()).await;
    let _ = timeout(WRITE_TIMEOUT, client.stream.shutdown()).await;
    let drain = async {
        let mut sink = [0u8; 8192];
        let mut left = LINGER_BYTES;
        while left > 0 {
            match client.stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n as u64),
            }
        }
    };
    let _ = timeout(LINGER_TIME, drain).await;
}

/// A listener's accept task.
pub struct Acceptor {
    task: JoinHandle<()>,
}

impl Acceptor {
    /// After `stopping` is set: stop listening (the socket closes with the
    /// task), so new clients are refused at once rather than left waiting in
    /// the backlog through the drain.
    pub fn stop(&self) {
        self.task.abort();
    }
}

/// 429 for an address that holds all the connections it may.
fn crowded_response() -> Vec<u8> {
    let why = "Too many connections from your address; close some and try again.";
    proxy::error_response_with(429, "rate_limited", why, "Retry-After: 1\r\n")
}

/// 503 for a connection beyond the bound.
fn busy_response() -> Vec<u8> {
    let why = "The server has too many open connections; try again shortly.";
    proxy::error_response(503, "unavailable", why)
}

/// Tell a connection refused at once to come back later (in plain HTTP; a
/// TLS client just sees the connection close, without spending a handshake on it).
async fn refuse(mut stream: TcpStream, tls: bool, response: &[u8]) {
    if !tls {
        let _ = timeout(Duration::from_secs(1), stream.write_all(response)).await;
    }
    let _ = stream.shutdown().await;
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
