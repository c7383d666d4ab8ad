//! The tunnel relay: the registry of live tunnels by subdomain, pending and
//! parked data connections, and the connections each tunnel carries (cut when
//! it closes). Who may have which subdomain is `names`'s (DESIGN §6).
//!
//! Pre-opened data connections. A public connection that had to ask the client
//! for a data connection would wait a round trip to the client, a TCP handshake
//! and an upgrade before its first byte moves. So each tunnel keeps a few data
//! connections open ahead of need, with the wire protocol unchanged: the server
//! sends `connect` frames nobody waits for yet; the client dials `accept/{id}` as
//! always (and, while the tunnel is in use, dials the local service ahead too:
//! see `cli::share`). The server parks those connections in the tunnel's small
//! pool: no thread holds a parked socket, and the front door's connection
//! thread that answered the 101 goes back to accepting. A new public connection
//! takes a parked one (checking with a non-blocking peek that it is still open)
//! and, once the response's first bytes are on their way back, a `connect`
//! frame goes out to refill the pool: refilling earlier set the client dialling
//! and the server upgrading a new connection on the same cores, at the moment
//! the first request needed them (scripts/bench-relay.sh's time to first byte).
//! The control connection's loop, which wakes at least every ping interval,
//! retires parked connections older than `PARKED_MAX_AGE` (well before the
//! client's own idle timeout on them) and expires ids asked ahead of
//! need that no client claimed within `PENDING_TIMEOUT`.

pub mod ingress;
mod lines;
pub mod names;
pub mod proxy_header;
pub mod quota;
pub mod tcp;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::Context;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, Notify};

use crate::inspect::Inspector;
use crate::sync::lock;
use crate::wire::conn::Conn;
use crate::wire::protocol::Frame;

/// How long a tunnel's local service may take to start answering a request
/// (504 beyond), to take the next part of its body (504), or to send the next
/// part of its response (the response is cut), unless the server is told
/// otherwise (`berth server --response-timeout`).
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);
/// An unclaimed data connection id expires after this long (the public side gets 502).
pub const PENDING_TIMEOUT: Duration = Duration::from_secs(10);
/// The region a server serves unless told otherwise.
pub const DEFAULT_REGION: &str = "local";
/// Data connections each tunnel keeps open ahead of need (parked or asked for).
pub const PARKED_PER_TUNNEL: usize = 2;
/// A parked data connection older than this is closed and replaced: well under
/// the client's 10-minute idle timeout, and short enough that a middlebox that
/// silently forgets idle connections is unlikely to have forgotten it.
pub const PARKED_MAX_AGE: Duration = Duration::from_secs(120);
/// Messages that may wait for a control connection; a client that does not
/// read them has its tunnel closed once a write stalls `CONTROL_WRITE_TIMEOUT`.
const CONTROL_QUEUE: usize = 1024;
/// Bound on each write to a control connection.
pub const CONTROL_WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// What a control connection's task sends, in order: the greeting first.
pub type Outbox = mpsc::Receiver<Vec<u8>>;

/// A live tunnel: where `connect` frames for its control connection go.
pub struct Tunnel {
    pub id: String,
    pub subdomain: String,
    /// The token that opened it (`tokens revoke --disconnect` closes by token).
    pub token_id: i64,
    /// The crew it belongs to, which holds its name after it closes.
    pub crew_id: i64,
    /// Bytes for the control connection, written by its task in order;
    /// taken when the tunnel closes, which ends the task once it wrote
    /// what was queued (a `closed` frame's reason).
    control: Mutex<Option<mpsc::Sender<Vec<u8>>>>,
    /// The receiving end, until the control connection's task takes it.
    outbox: Mutex<Option<Outbox>>,
    /// Whether data connections are opened ahead of need: HTTP only. A TCP
    /// tunnel's client dials the local service when its data connection
    /// arrives, and a service that speaks first (SSH, SMTP, a database) or
    /// counts connections (iperf3) must not see connections nobody made.
    ahead: bool,
    pool: Mutex<Pool>,
    closed: AtomicBool,
    /// The connections it carries (public connections bound to it, with
    /// their data connections), cut when it closes; see [`Tunnel::carry`].
    carried: Mutex<Carried>,
}

/// The cut signals of the connections a tunnel carries, by a number of their own.
#[derive(Default)]
struct Carried {
    next: u64,
    cuts: HashMap<u64, Arc<Notify>>,
}

/// A connection's place among those its tunnel carries, given up when dropped.
pub struct Carrying {
    tunnel: Arc<Tunnel>,
    key: u64,
}

impl Drop for Carrying {
    fn drop(&mut self) {
        lock(&self.tunnel.carried).cuts.remove(&self.key);
    }
}

/// A tunnel's data connections opened ahead of need.
#[derive(Default)]
struct Pool {
    /// Connected data connections and when each arrived, oldest first.
    parked: VecDeque<(Conn, Instant)>,
    /// `connect` frames sent ahead of need whose connection has not arrived.
    asked: usize,
}

/// Who a data connection id is for.
enum Pending {
    /// A public connection waits on this channel for a connection from
    /// `tunnel`'s client; dropping it (the tunnel closed) ends the wait.
    Waiter {
        tx: oneshot::Sender<Conn>,
        tunnel: Weak<Tunnel>,
    },
    /// Asked ahead of need: the connection goes to this tunnel's pool.
    Ahead {
        tunnel: Weak<Tunnel>,
        asked: Instant,
    },
}

impl Tunnel {
    /// A tunnel with a fresh id, under `subdomain` (a TCP tunnel's: its port);
    /// `ahead`: whether data connections are opened ahead of need.
    fn new(subdomain: String, owner: Owner, ahead: bool) -> Tunnel {
        let (tx, rx) = mpsc::channel(CONTROL_QUEUE);
        Tunnel {
            id: random_hex::<8>(),
            subdomain,
            token_id: owner.token_id,
            crew_id: owner.crew_id,
            control: Mutex::new(Some(tx)),
            outbox: Mutex::new(Some(rx)),
            ahead,
            pool: Mutex::new(Pool::default()),
            closed: AtomicBool::new(false),
            carried: Mutex::new(Carried::default()),
        }
    }

    /// The bytes for the control connection, once: for its task.
    pub fn take_outbox(&self) -> Option<Outbox> {
        lock(&self.outbox).take()
    }

    /// Count a connection among those the tunnel carries: `cut` is notified
    /// when the tunnel closes, and the connection's task then ends; `None`
    /// if it already closed (the caller must not use the connection for it).
    pub fn carry(self: &Arc<Self>, cut: &Arc<Notify>) -> Option<Carrying> {
        let mut carried = lock(&self.carried);
        // Checked under the lock `cut` takes after setting the flag: a
        // connection is either cut there or refused here.
        if self.is_closed() {
            return None;
        }
        let key = carried.next;
        carried.next += 1;
        carried.cuts.insert(key, cut.clone());
        Some(Carrying {
            tunnel: self.clone(),
            key,
        })
    }

    /// Cut every connection the tunnel carries (it closed: no byte more goes
    /// through it, whoever asked).
    fn cut(&self) {
        let cuts: Vec<Arc<Notify>> = lock(&self.carried).cuts.drain().map(|(_, c)| c).collect();
        for cut in cuts {
            cut.notify_one();
        }
    }

    /// Queue one frame for the control connection; an error if it closed or
    /// its client reads nothing.
    pub fn send(&self, frame: &Frame) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(frame).map_err(std::io::Error::other)?;
        line.push(b'\n');
        self.send_bytes(line)
    }

    /// Queue bytes for the control connection.
    fn send_bytes(&self, bytes: Vec<u8>) -> std::io::Result<()> {
        let control = lock(&self.control);
        let Some(control) = control.as_ref() else {
            return Err(std::io::ErrorKind::NotConnected.into());
        };
        control
            .try_send(bytes)
            .map_err(|_| std::io::ErrorKind::WouldBlock.into())
    }

    /// Close the control connection (once what is queued for it is written;
    /// the client reconnects or ends) and the parked data connections.
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        drop(lock(&self.control).take());
        drop(std::mem::take(&mut lock(&self.pool).parked));
    }

    /// Whether it closed (its client went, or it was closed for it).
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// How many data connections are parked now.
    #[cfg(test)]
    pub fn parked(&self) -> usize {
        lock(&self.pool).parked.len()
    }

    /// Tell the client why, so it does not reconnect, then close.
    pub fn close_for(&self, reason: &str) {
        let _ = self.send(&Frame::Closed {
            reason: reason.to_string(),
        });
        self.close();
    }

    /// Queue the 101 and `ready` (with the tunnel's `url`): before the tunnel
    /// is findable, so that no `connect` goes first.
    fn greet(&self, url: String) {
        let ready = Frame::Ready {
            tunnel_id: self.id.clone(),
            url,
        };
        let mut bytes = SWITCHING.as_bytes().to_vec();
        if let Ok(line) = serde_json::to_vec(&ready) {
            bytes.extend_from_slice(&line);
            bytes.push(b'\n');
        }
        // A fresh queue has room.
        let _ = self.send_bytes(bytes);
    }
}

/// Why a subdomain cannot be had.
#[derive(Debug, PartialEq, Eq)]
pub enum ClaimError {
    /// Not `[a-z0-9-]{1,63}` without a leading or trailing `-`, reserved, or
    /// one of the server's own names (400).
    Invalid(String),
    /// Held by a live tunnel, or by another crew (409).
    Taken(String),
    /// The store could not say who holds the name (503).
    Unavailable,
}

/// Who opens a tunnel: the token, and its crew, which keeps the tunnel's name.
#[derive(Clone, Copy, Debug)]
pub struct Owner {
    pub token_id: i64,
    pub crew_id: i64,
}

#[cfg(test)]
impl Owner {
    /// A token of crew 1, for unit tests.
    pub fn token(token_id: i64) -> Owner {
        Owner {
            token_id,
            crew_id: 1,
        }
    }
}

/// The answer that turns a relay request into relay bytes.
pub const SWITCHING: &str =
    "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: berth-relay/1\r\n\r\n";

/// The relay's shared state.
pub struct Relay {
    /// Tunnels live at `NAME.DOMAIN`.
    pub domain: String,
    /// Scheme, and port when not the default, of public tunnel URLs.
    pub public_url: String,
    /// The one region this server serves (`--region`).
    pub region: String,
    /// How long a local service may take to answer (`--response-timeout`).
    pub response_timeout: Duration,
    /// How long an upgraded public connection may move no byte either way
    /// (`--idle-timeout`); none: for as long as its peers like.
    pub idle_timeout: Option<Duration>,
    tunnels: Mutex<HashMap<String, Arc<Tunnel>>>,
    pending: Mutex<HashMap<String, Pending>>,
    /// Records HTTP requests (none in unit tests that build a bare relay).
    inspector: Option<Arc<Inspector>>,
    /// TCP tunnels, by public port.
    pub tcp: tcp::Ports,
    /// The server's limits on live tunnels, and the slots they hold.
    pub limits: quota::Limits,
    pub quotas: quota::Quotas,
    /// `request` frames gathered for each tunnel's client.
    lines: Arc<lines::Lines>,
    /// Who may have which subdomain.
    pub names: names::Names,
    /// The public URL's host (lowercased, no port): always the API and the
    /// dashboard, never a tunnel.
    own_host: String,
    /// Set when the server stops: closing tunnels then leaves the requests
    /// in flight through them to finish within the drain.
    stopping: AtomicBool,
}

impl Relay {
    pub fn new(domain: &str, public_url: &str) -> Relay {
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        let own_host = host_of(public_url);
        let names = names::Names::new();
        if let Some(label) = names::label_under(&own_host, &domain) {
            names.keep_own(label);
        }
        Relay {
            names,
            own_host,
            stopping: AtomicBool::new(false),
            domain,
            public_url: public_url.to_string(),
            region: DEFAULT_REGION.to_string(),
            response_timeout: RESPONSE_TIMEOUT,
            idle_timeout: None,
            tunnels: Mutex::new(HashMap::new()),
            pending: Mutex::new(HashMap::new()),
            inspector: None,
            tcp: tcp::Ports::new(
                tcp::DEFAULT_RANGE
                    .parse()
                    .expect("the default range parses"),
                std::net::Ipv4Addr::UNSPECIFIED.into(),
            ),
            limits: quota::Limits::default(),
            quotas: quota::Quotas::default(),
            lines: Arc::default(),
        }
    }

    /// The relay, recording its HTTP requests with `inspector`.
    pub fn with_inspector(mut self, inspector: Arc<Inspector>) -> Relay {
        self.inspector = Some(inspector);
        self
    }

    /// Send a per-request `request` frame to the tunnel's client, gathered
    /// with others for up to `lines::GATHER`.
    pub fn send_line(&self, tunnel: &Arc<Tunnel>, frame: &Frame) {
        self.lines.send(tunnel, frame);
    }

    /// The traffic inspector, if the relay records.
    pub fn inspector(&self) -> Option<&Inspector> {
        self.inspector.as_deref()
    }

    /// Claim a subdomain (or a random free one) for a control connection and
    /// greet the client (101, then `ready`); atomic: of two racing claims exactly one wins.
    /// A name another crew holds or reserved is refused (`names`).
    /// `claimed` runs before the greeting (to record the tunnel before anyone can ask for it).
    pub fn claim(
        &self,
        wanted: Option<&str>,
        owner: Owner,
        claimed: impl FnOnce(&Tunnel),
    ) -> Result<Arc<Tunnel>, ClaimError> {
        if let Some(name) = wanted {
            self.names.check(name)?;
        }
        let turn = self.names.turn();
        let live = |name: &str| lock(&self.tunnels).contains_key(name);
        let subdomain = match wanted {
            Some(name) if live(name) => {
                return Err(ClaimError::Taken(format!(
                "The subdomain {name} is taken: a live tunnel is on it; choose another with --subdomain."
            )))
            }
            Some(name) => {
                self.names.take(name, owner.crew_id)?;
                name.to_string()
            }
            None => self.names.take_random(owner.crew_id, live)?,
        };
        let tunnel = Arc::new(Tunnel::new(subdomain.clone(), owner, true));
        tunnel.greet(self.url_of(&subdomain));
        lock(&self.tunnels).insert(subdomain, tunnel.clone());
        drop(turn);
        claimed(&tunnel);
        Ok(tunnel)
    }

    /// Why a tunnel asked for in region `asked` (`share --region`) with a token
    /// preferring `token_region` cannot be served here, if it cannot.
    pub fn region_refusal(
        &self,
        asked: Option<&str>,
        token_region: Option<&str>,
    ) -> Option<String> {
        let served = &self.region;
        if let Some(asked) = asked.filter(|r| r != served) {
            return Some(format!(
                "This server serves region {served} only, not {asked}; share with --region {served} or through a server of region {asked}."
            ));
        }
        let wrong = token_region.filter(|r| r != served)?;
        Some(format!(
            "This server serves region {served} only, and the token prefers region {wrong}; use a token for region {served} or a server of region {wrong}."
        ))
    }

    /// Forget a tunnel, if the registry still holds this one under its name
    /// (a TCP tunnel's listener closes and its port is free when this returns).
    /// Public connections waiting for one of its data connections get none
    /// at once (their 502 need not wait out `PENDING_TIMEOUT`).
    pub fn release(&self, tunnel: &Arc<Tunnel>) {
        // Set before the waiters go: `open_data` registers and then looks.
        tunnel.closed.store(true, Ordering::SeqCst);
        // After `closed`: see `quota::Slot::keep`.
        self.quotas.release(&tunnel.id);
        self.tcp.release(tunnel);
        {
            let _turn = self.names.turn();
            let mut tunnels = lock(&self.tunnels);
            let held = tunnels
                .get(&tunnel.subdomain)
                .is_some_and(|t| Arc::ptr_eq(t, tunnel));
            if held {
                tunnels.remove(&tunnel.subdomain);
                drop(tunnels);
                // Its crew keeps the name for a while (a reconnect, a restart).
                self.names.let_go(&tunnel.subdomain, tunnel.crew_id);
            }
        }
        lock(&self.pending).retain(|_, pending| match pending {
            Pending::Waiter { tunnel: of, .. } => !std::ptr::eq(of.as_ptr(), Arc::as_ptr(tunnel)),
            Pending::Ahead { .. } => true,
        });
        if !self.stopping.load(Ordering::SeqCst) {
            tunnel.cut();
        }
    }

    /// Close every control connection (shutdown): the clients reconnect elsewhere
    /// or later, and the front door's drain need not wait for them.
    pub fn close_all(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        let tunnels: Vec<Arc<Tunnel>> = lock(&self.tunnels).drain().map(|(_, t)| t).collect();
        for tunnel in tunnels {
            tunnel.close();
        }
        self.tcp.close_all();
        // No data connection will come for anyone waiting.
        lock(&self.pending).clear();
    }

    /// Close the live tunnel with this id, telling its client why; false if none is live.
    pub fn close_by_id(&self, id: &str, reason: &str) -> bool {
        let found = lock(&self.tunnels).values().find(|t| t.id == id).cloned();
        let found = found.or_else(|| self.tcp.find_by_id(id));
        match found {
            Some(tunnel) => {
                self.release(&tunnel);
                tunnel.close_for(reason);
                true
            }
            None => false,
        }
    }

    /// The ids of the live tunnels a token opened.
    pub fn ids_of_token(&self, token_id: i64) -> Vec<String> {
        let mut ids: Vec<String> = lock(&self.tunnels)
            .values()
            .filter(|t| t.token_id == token_id)
            .map(|t| t.id.clone())
            .collect();
        ids.extend(self.tcp.ids_of_token(token_id));
        ids
    }

    /// How many tunnels are live.
    pub fn live_count(&self) -> usize {
        lock(&self.tunnels).len()
    }

    /// The live tunnel at a subdomain.
    pub fn find(&self, subdomain: &str) -> Option<Arc<Tunnel>> {
        lock(&self.tunnels).get(subdomain).cloned()
    }

    /// Whether a Host (already lowercased, port stripped) is the public URL's:
    /// the server's own, whatever tunnel the name would otherwise be.
    pub fn is_own_host(&self, host: &str) -> bool {
        host == self.own_host
    }

    /// The public URL's host, if it lies under the tunnel domain (a setup
    /// the server warns about: tunnels then share a parent domain with it).
    pub fn own_host_under_domain(&self) -> Option<&str> {
        names::label_under(&self.own_host, &self.domain).map(|_| self.own_host.as_str())
    }

    /// The subdomain a Host (already lowercased, port stripped) names, if it is
    /// under the relay's domain.
    pub fn subdomain_of<'a>(&self, host: &'a str) -> Option<&'a str> {
        host.strip_suffix(self.domain.as_str())?
            .strip_suffix('.')
            .filter(|name| !name.is_empty())
    }

    /// The public URL of a subdomain: the public URL's scheme and port.
    pub fn url_of(&self, subdomain: &str) -> String {
        let (scheme, rest) = self
            .public_url
            .split_once("://")
            .unwrap_or(("http", &self.public_url));
        let authority = rest.split('/').next().unwrap_or("");
        let port = match authority.rsplit_once(':') {
            Some((_, port)) if !port.contains(']') => format!(":{port}"),
            _ => String::new(),
        };
        format!("{scheme}://{subdomain}.{}{port}", self.domain)
    }

    /// A data connection for a new public connection: a parked one when one is
    /// still open (the caller refills the pool with [`Relay::refill`] once the
    /// response is under way), else ask the tunnel's client for one, refill
    /// the empty pool, and wait.
    pub async fn open_data(&self, tunnel: &Arc<Tunnel>) -> Option<Conn> {
        if let Some(stream) = self.take_parked(tunnel) {
            return Some(stream);
        }
        self.refill(tunnel);
        let id = random_hex::<16>();
        let (tx, rx) = oneshot::channel();
        let waiter = Pending::Waiter {
            tx,
            tunnel: Arc::downgrade(tunnel),
        };
        lock(&self.pending).insert(id.clone(), waiter);
        // However the wait ends (the public connection may go first), the id goes.
        let _forget = Forget {
            pending: &self.pending,
            id: &id,
        };
        if tunnel.is_closed() || tunnel.send(&Frame::Connect { id: id.clone() }).is_err() {
            return None;
        }
        tokio::time::timeout(PENDING_TIMEOUT, rx).await.ok()?.ok()
    }

    /// The newest parked connection that is still open: the least likely to
    /// have been dropped along the way, and while the tunnel is in use the one
    /// whose client has dialled the local service ahead (see `cli::share`).
    fn take_parked(&self, tunnel: &Arc<Tunnel>) -> Option<Conn> {
        let mut pool = lock(&tunnel.pool);
        while let Some((stream, _)) = pool.parked.pop_back() {
            if still_open(&stream) {
                return Some(stream);
            }
        }
        None
    }

    /// Send `connect` frames until the tunnel has `PARKED_PER_TUNNEL` data
    /// connections parked or on their way.
    pub fn refill(&self, tunnel: &Arc<Tunnel>) {
        if !tunnel.ahead || tunnel.closed.load(Ordering::SeqCst) {
            return;
        }
        let need = {
            let mut pool = lock(&tunnel.pool);
            let need = PARKED_PER_TUNNEL.saturating_sub(pool.parked.len() + pool.asked);
            pool.asked += need;
            need
        };
        for _ in 0..need {
            let id = random_hex::<16>();
            let ahead = Pending::Ahead {
                tunnel: Arc::downgrade(tunnel),
                asked: Instant::now(),
            };
            lock(&self.pending).insert(id.clone(), ahead);
            if tunnel.send(&Frame::Connect { id }).is_err() {
                // The control connection is gone; its loop ends and closes the tunnel.
                return;
            }
        }
    }

    /// Upkeep of a tunnel's pool as of `now`: forget ids asked ahead of need
    /// that expired, close parked connections that are too old or closed, refill.
    pub fn tend(&self, tunnel: &Arc<Tunnel>, now: Instant) {
        // Every tunnel's expired ids go, so a closed tunnel's leave no trace.
        let mut expired = Vec::new();
        lock(&self.pending).retain(|_, pending| match pending {
            Pending::Ahead { tunnel, asked } if now.duration_since(*asked) >= PENDING_TIMEOUT => {
                expired.push(tunnel.clone());
                false
            }
            _ => true,
        });
        for owner in expired.iter().filter_map(Weak::upgrade) {
            let mut pool = lock(&owner.pool);
            pool.asked = pool.asked.saturating_sub(1);
        }
        let mut pool = lock(&tunnel.pool);
        pool.parked.retain(|(stream, since)| {
            now.duration_since(*since) < PARKED_MAX_AGE && still_open(stream)
        });
        drop(pool);
        self.refill(tunnel);
    }

    /// Hand a client's data connection to the public connection waiting for `id`,
    /// or park it in its tunnel's pool; gives it back if the id is unknown or expired.
    pub fn deliver(&self, id: &str, stream: Conn) -> Result<(), Conn> {
        let waiting = lock(&self.pending).remove(id);
        match waiting {
            Some(Pending::Waiter { tx, .. }) => tx.send(stream),
            Some(Pending::Ahead { tunnel, asked }) => {
                let Some(tunnel) = tunnel.upgrade() else {
                    return Err(stream);
                };
                let mut pool = lock(&tunnel.pool);
                pool.asked = pool.asked.saturating_sub(1);
                if asked.elapsed() >= PENDING_TIMEOUT || tunnel.closed.load(Ordering::SeqCst) {
                    return Err(stream);
                }
                pool.parked.push_back((stream, Instant::now()));
                Ok(())
            }
            None => Err(stream),
        }
    }

    /// Whether a data connection id is awaited (checked before answering 101).
    pub fn is_pending(&self, id: &str) -> bool {
        match lock(&self.pending).get(id) {
            Some(Pending::Waiter { .. }) => true,
            Some(Pending::Ahead { asked, .. }) => asked.elapsed() < PENDING_TIMEOUT,
            None => false,
        }
    }
}

/// Whether a parked connection is still open and silent: a client that closed
/// it reads as EOF, and a client has nothing to say before the first request.
fn still_open(stream: &Conn) -> bool {
    // Under TLS this looks at the encrypted bytes: any at all mean the client
    // spoke (a close_notify, say), which it never does before a request.
    let tcp = stream.tcp();
    let mut byte = [0u8; 1];
    let mut peeked = tokio::io::ReadBuf::new(&mut byte);
    let mut cx = Context::from_waker(std::task::Waker::noop());
    // Nothing to read yet: open and silent.
    tcp.poll_peek(&mut cx, &mut peeked).is_pending()
}

/// Forgets a data connection id when the wait for it ends, however it ends.
struct Forget<'a> {
    pending: &'a Mutex<HashMap<String, Pending>>,
    id: &'a str,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        lock(self.pending).remove(self.id);
    }
}

/// The host of a URL, lowercased, without its port (an IPv6 host keeps its brackets).
fn host_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    let host = match authority.rsplit_once(':') {
        Some((host, port)) if !port.contains(']') => host,
        _ => authority,
    };
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// `N` random bytes as lowercase hex.
fn random_hex<const N: usize>() -> String {
    let bytes: [u8; N] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::TcpListener;
    use tokio::io::AsyncWriteExt;

    /// Both ends of a fresh loopback connection: (client, server), the
    /// server's on the event loop.
    fn pair() -> (std::net::TcpStream, Conn) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let server = listener.accept().unwrap().0;
        server.set_nonblocking(true).unwrap();
        (
            client,
            Conn::Tcp(tokio::net::TcpStream::from_std(server).unwrap()),
        )
    }

    /// The ids of the next `n` `connect` frames queued for a control connection.
    fn connect_ids(outbox: &mut Outbox, n: usize) -> Vec<String> {
        let mut ids = Vec::new();
        while ids.len() < n {
            let bytes = outbox.try_recv().expect("a frame queued");
            for line in bytes.split(|&b| b == b'\n') {
                if let Ok(Frame::Connect { id }) = serde_json::from_slice(line) {
                    ids.push(id);
                }
            }
        }
        ids
    }

    #[tokio::test]
    async fn a_tunnel_parks_data_connections_ahead_of_need() {
        let relay = Relay::new("localhost", "http://localhost:1");
        let tunnel = relay.claim(Some("ahead"), Owner::token(1), |_| {}).unwrap();
        let mut lines = tunnel.take_outbox().unwrap();
        relay.refill(&tunnel);
        let ids = connect_ids(&mut lines, PARKED_PER_TUNNEL);
        let mut client_ends = Vec::new();
        for id in &ids {
            assert!(relay.is_pending(id));
            let (client_end, server_end) = pair();
            assert!(relay.deliver(id, server_end).is_ok());
            assert!(!relay.is_pending(id));
            client_ends.push(client_end);
        }
        assert_eq!(tunnel.parked(), PARKED_PER_TUNNEL);
        // Full: a refill asks for nothing more.
        relay.refill(&tunnel);
        assert_eq!(lock(&tunnel.pool).asked, 0);
        // A public connection takes a parked one at once; one more is asked
        // for when the caller refills.
        let mut data = relay.open_data(&tunnel).await.expect("a parked connection");
        assert_eq!(tunnel.parked(), PARKED_PER_TUNNEL - 1);
        assert_eq!(lock(&tunnel.pool).asked, 0);
        relay.refill(&tunnel);
        assert_eq!(connect_ids(&mut lines, 1).len(), 1);
        // The newest one.
        data.write_all(b"x").await.unwrap();
        let mut byte = [0u8; 1];
        client_ends[1].read_exact(&mut byte).unwrap();
        assert_eq!(&byte, b"x");
        // Closing the tunnel closes what is parked.
        tunnel.close();
        assert_eq!(tunnel.parked(), 0);
        assert_eq!(client_ends[0].read(&mut byte).unwrap(), 0);
    }

    #[tokio::test]
    async fn a_closed_parked_connection_is_not_handed_out() {
        let (client_end, server_end) = pair();
        assert!(still_open(&server_end));
        drop(client_end);
        // The FIN crosses loopback at once, but give the kernel a moment.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while still_open(&server_end) && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(!still_open(&server_end));
    }

    #[tokio::test]
    async fn tending_expires_unclaimed_ids_and_retires_old_connections() {
        let relay = Relay::new("localhost", "http://localhost:1");
        let tunnel = relay.claim(Some("tend"), Owner::token(1), |_| {}).unwrap();
        let mut lines = tunnel.take_outbox().unwrap();
        relay.refill(&tunnel);
        let first = connect_ids(&mut lines, PARKED_PER_TUNNEL);
        let now = Instant::now();
        // Just before the limit nothing changes; past it the ids are forgotten and asked anew.
        relay.tend(&tunnel, now);
        assert!(first.iter().all(|id| relay.is_pending(id)));
        relay.tend(&tunnel, now + PENDING_TIMEOUT + Duration::from_secs(1));
        assert!(lock(&relay.pending).keys().all(|id| !first.contains(id)));
        let second = connect_ids(&mut lines, PARKED_PER_TUNNEL);
        let (mut client_end, server_end) = pair();
        assert!(relay.deliver(&second[0], server_end).is_ok());
        relay.tend(
            &tunnel,
            Instant::now() + PARKED_MAX_AGE - Duration::from_secs(1),
        );
        assert_eq!(tunnel.parked(), 1);
        relay.tend(
            &tunnel,
            Instant::now() + PARKED_MAX_AGE + Duration::from_secs(1),
        );
        assert_eq!(tunnel.parked(), 0);
        let mut byte = [0u8; 1];
        assert_eq!(client_end.read(&mut byte).unwrap(), 0);
        // A connection for a closed tunnel is handed back, not parked.
        // (Each tend in the future expired what was asked before it: the last
        // frame is the one id still awaited.)
        let asked = connect_ids(&mut lines, 1 + PARKED_PER_TUNNEL);
        let last = asked.last().unwrap();
        assert!(relay.is_pending(last));
        tunnel.close();
        let (_client_end, server_end) = pair();
        assert!(relay.deliver(last, server_end).is_err());
    }

    #[test]
    fn regions_other_than_the_served_one_are_refused() {
        let mut relay = Relay::new("localhost", "http://localhost:1");
        relay.region = "eu".into();
        assert_eq!(relay.region_refusal(None, None), None);
        assert_eq!(relay.region_refusal(Some("eu"), Some("eu")), None);
        let asked = relay.region_refusal(Some("us"), None).unwrap();
        assert!(
            asked.contains("serves region eu only") && asked.contains("us"),
            "{asked}"
        );
        let token = relay.region_refusal(None, Some("ap")).unwrap();
        assert!(
            token.contains("serves region eu only") && token.contains("ap"),
            "{token}"
        );
        assert!(relay.region_refusal(Some("eu"), Some("ap")).is_some());
    }

    #[tokio::test]
    async fn closing_a_tunnel_cuts_what_it_carries_but_not_while_the_server_drains() {
        let cut_in = |cut: &Arc<Notify>| {
            let cut = cut.clone();
            async move {
                tokio::time::timeout(Duration::from_millis(100), cut.notified())
                    .await
                    .is_ok()
            }
        };
        let relay = Relay::new("localhost", "http://localhost:1");
        let tunnel = relay.claim(Some("cut"), Owner::token(1), |_| {}).unwrap();
        let cut = Arc::new(Notify::new());
        let carrying = tunnel.carry(&cut).unwrap();
        assert!(relay.close_by_id(&tunnel.id, "test"));
        assert!(cut_in(&cut).await, "cut");
        drop(carrying);
        // Closed: nothing more is carried.
        assert!(tunnel.carry(&Arc::new(Notify::new())).is_none());
        // Stopping: requests in flight finish within the drain.
        let draining = relay.claim(Some("drain"), Owner::token(1), |_| {}).unwrap();
        let cut = Arc::new(Notify::new());
        let _carrying = draining.carry(&cut).unwrap();
        relay.close_all();
        relay.release(&draining);
        assert!(!cut_in(&cut).await, "still open");
    }

    #[test]
    fn of_racing_claims_exactly_one_wins() {
        let relay = Arc::new(Relay::new("localhost", "http://localhost:8080"));
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let relay = relay.clone();
                std::thread::spawn(move || {
                    relay.claim(Some("race"), Owner::token(1), |_| {}).is_ok()
                })
            })
            .collect();
        let wins = handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .filter(|won| *won)
            .count();
        assert_eq!(wins, 1);
        let tunnel = relay.find("race").unwrap();
        relay.release(&tunnel);
        assert!(relay.find("race").is_none());
        assert!(relay.claim(Some("race"), Owner::token(1), |_| {}).is_ok());
    }

    #[test]
    fn hosts_map_to_subdomains_and_urls() {
        let relay = Relay::new("Tunnels.Example", "https://berth.example:8443/");
        assert_eq!(relay.subdomain_of("app.tunnels.example"), Some("app"));
        assert_eq!(relay.subdomain_of("tunnels.example"), None);
        assert_eq!(relay.subdomain_of("xtunnels.example"), None);
        assert_eq!(relay.url_of("app"), "https://app.tunnels.example:8443");
        let plain = Relay::new("localhost", "http://localhost");
        assert_eq!(plain.url_of("a"), "http://a.localhost");
    }

    #[tokio::test(start_paused = true)]
    async fn an_unclaimed_id_expires() {
        let relay = Relay::new("localhost", "http://localhost:1");
        let tunnel = relay.claim(Some("slow"), Owner::token(1), |_| {}).unwrap();
        let started = tokio::time::Instant::now();
        assert!(relay.open_data(&tunnel).await.is_none());
        assert!(started.elapsed() >= PENDING_TIMEOUT);
        assert!(lock(&relay.pending)
            .values()
            .all(|p| matches!(p, Pending::Ahead { .. })));
        let (_client, server) = pair();
        assert!(relay.deliver("nope", server).is_err());
    }

    #[tokio::test]
    async fn a_public_connection_waiting_on_a_closing_tunnel_stops_waiting() {
        let relay = Arc::new(Relay::new("localhost", "http://localhost:1"));
        let tunnel = relay.claim(Some("going"), Owner::token(1), |_| {}).unwrap();
        let waiting = {
            let (relay, tunnel) = (relay.clone(), tunnel.clone());
            tokio::spawn(async move {
                let started = Instant::now();
                (relay.open_data(&tunnel).await.is_none(), started.elapsed())
            })
        };
        // The waiter is registered once a `connect` for it is pending.
        while !lock(&relay.pending)
            .values()
            .any(|p| matches!(p, Pending::Waiter { .. }))
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        relay.release(&tunnel);
        tunnel.close();
        let (none, waited) = waiting.await.unwrap();
        assert!(none && waited < Duration::from_secs(2), "waited {waited:?}");
        // And a closed tunnel asks no client for anything.
        assert!(relay.open_data(&tunnel).await.is_none());
        assert!(lock(&relay.pending)
            .values()
            .all(|p| matches!(p, Pending::Ahead { .. })));
    }

    #[test]
    fn a_tunnel_holds_its_quota_slot_until_released() {
        let mut relay = Relay::new("localhost", "http://localhost:1");
        relay.limits.tunnels_per_user = 1;
        let crew = crate::store::Crew {
            id: 1,
            name: "home".into(),
            default_redaction: crate::store::Redaction::Standard,
            limits: crate::store::CrewLimits::default(),
            created_at: String::new(),
        };
        let owner = quota::Owner {
            user_id: 1,
            crew: &crew,
        };
        let take = || relay.quotas.take(&owner, false, &relay.limits);
        // A claim that fails gives its slot back.
        let slot = take().unwrap();
        assert!(relay
            .claim(Some("www"), Owner::token(1), |t| slot.keep(t))
            .is_err());
        let slot = take().unwrap();
        let tunnel = relay
            .claim(Some("q"), Owner::token(1), |t| slot.keep(t))
            .unwrap();
        assert!(take().is_err());
        relay.release(&tunnel);
        drop(take().unwrap());
        // Closed before the slot knew its tunnel: given back all the same.
        let slot = take().unwrap();
        let tunnel = relay
            .claim(Some("r"), Owner::token(1), |t| {
                t.closed.store(true, Ordering::SeqCst);
                relay.quotas.release(&t.id);
                slot.keep(t)
            })
            .unwrap();
        assert!(tunnel.is_closed());
        assert!(take().is_ok());
    }

    #[test]
    fn tunnels_close_by_id_and_by_token() {
        let relay = Relay::new("localhost", "http://localhost:1");
        let a = relay.claim(Some("a"), Owner::token(1), |_| {}).unwrap();
        relay.claim(Some("b"), Owner::token(2), |_| {}).unwrap();
        relay.claim(Some("c"), Owner::token(2), |_| {}).unwrap();
        assert!(relay.close_by_id(&a.id, "test"));
        assert!(!relay.close_by_id(&a.id, "test"));
        assert!(relay.find("a").is_none());
        let mut ids = relay.ids_of_token(2);
        assert_eq!(ids.len(), 2);
        for id in ids.drain(..) {
            assert!(relay.close_by_id(&id, "test"));
        }
        assert!(relay.find("b").is_none() && relay.find("c").is_none());
        assert!(relay.ids_of_token(2).is_empty());
    }
}
