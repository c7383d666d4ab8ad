//! TCP tunnels: public ports claimed from `--tcp-ports`, one listener per tunnel, and
//! each accepted connection piped raw through a data connection (DESIGN §6).

use std::collections::HashMap;
use std::fmt;
use std::future::poll_fn;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::proxy_header::{self, Header};
use super::{ClaimError, Owner, Relay, Tunnel};
use crate::limits::{self, PerAddress, Share};
use crate::proxy::forwarded::TrustedProxies;
use crate::sync::lock;
use crate::time_fmt;
use crate::wire::duplex::splice;

/// The ports `berth server` hands out when `--tcp-ports` is not given.
pub const DEFAULT_RANGE: &str = "20000-20099";
/// Open public connections per TCP tunnel; one more is closed at once, so a
/// flood on a public port cannot take every thread and socket of the server.
pub const MAX_CONNECTIONS: usize = 512;
/// After a failed accept (out of file descriptors), wait this long before the next.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// An inclusive range of public ports, written `A-B`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl PortRange {
    pub fn contains(&self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }
}

impl FromStr for PortRange {
    type Err = String;

    fn from_str(text: &str) -> Result<PortRange, String> {
        let bad = || {
            format!(
                "`{text}` is not a port range: write FIRST-LAST with 1 <= FIRST <= LAST <= 65535, e.g. {DEFAULT_RANGE}"
            )
        };
        let (first, last) = text.trim().split_once('-').ok_or_else(bad)?;
        let first: u16 = first.trim().parse().map_err(|_| bad())?;
        let last: u16 = last.trim().parse().map_err(|_| bad())?;
        if first == 0 || first > last {
            return Err(bad());
        }
        Ok(PortRange { first, last })
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

/// A claimed port: its listener, its accept task and the public connections it let in.
struct Listening {
    tunnel: Arc<Tunnel>,
    stopping: AtomicBool,
    /// Dropped, freeing the port, when the tunnel closes.
    listener: Mutex<Option<tokio::net::TcpListener>>,
    accepting: Mutex<Option<JoinHandle<()>>>,
    /// The cut signals of the open public connections, so closing the tunnel can cut them.
    open: Mutex<HashMap<u64, Arc<Notify>>>,
    next: AtomicU64,
}

impl Listening {
    /// Stop accepting, drop the listener (freeing the port) and cut open connections.
    fn shut(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        drop(lock(&self.listener).take());
        if let Some(accepting) = lock(&self.accepting).take() {
            accepting.abort();
        }
        for (_, cut) in lock(&self.open).drain() {
            cut.notify_one();
        }
    }

    /// Count a public connection in, with the signal that cuts it; `None`
    /// when the tunnel is closing or full.
    fn track(&self, cut: &Arc<Notify>) -> Option<u64> {
        let mut open = lock(&self.open);
        if self.stopping.load(Ordering::SeqCst) || open.len() >= MAX_CONNECTIONS {
            return None;
        }
        let key = self.next.fetch_add(1, Ordering::SeqCst);
        open.insert(key, cut.clone());
        Some(key)
    }

    fn untrack(&self, key: u64) {
        lock(&self.open).remove(&key);
    }
}

/// A port kept for the crew whose tunnel was last on it.
struct PortHold {
    crew_id: i64,
    /// None: for longer than an `Instant` can say.
    until: Option<Instant>,
}

impl PortHold {
    fn lapsed(&self, now: Instant) -> bool {
        self.until.is_some_and(|until| until <= now)
    }
}

/// The TCP tunnels of a relay, by public port.
pub struct Ports {
    pub range: PortRange,
    /// Listeners bind this address: the front door's, so a server on loopback
    /// exposes its tunnels on loopback only.
    ip: IpAddr,
    live: Mutex<HashMap<u16, Arc<Listening>>>,
    /// Public connections of all TCP tunnels together.
    connections: Share,
    /// Public connections per client address, across TCP tunnels.
    per_address: PerAddress,
    /// Proxies whose PROXY protocol header names the client.
    trusted: TrustedProxies,
    /// Ports kept, like subdomains, for the crew whose tunnel was last on
    /// them, for `hold` (`--subdomain-hold`): during `share`'s reconnect no
    /// other crew's tunnel gets the port and its clients. At most
    /// `most_held` per crew; beyond, the holds that end first lapse.
    held: Mutex<HashMap<u16, PortHold>>,
    hold: Duration,
    most_held: usize,
}

impl Ports {
    pub fn new(range: PortRange, ip: IpAddr) -> Ports {
        Ports {
            range,
            ip,
            live: Mutex::new(HashMap::new()),
            connections: Share::new(limits::MAX_TCP_CONNECTIONS),
            per_address: PerAddress::new(limits::MAX_PER_ADDRESS),
            trusted: TrustedProxies::default(),
            held: Mutex::new(HashMap::new()),
            hold: Duration::ZERO,
            most_held: 0,
        }
    }

    /// Keep a port for `hold` for the crew whose tunnel was last on it, at
    /// most `most_per_crew` ports per crew; `earlier` are the ports held when
    /// the server last stopped, with their crews and what is left of each hold.
    pub fn with_holds(
        mut self,
        hold: Duration,
        most_per_crew: usize,
        earlier: &[(u16, i64, Duration)],
    ) -> Ports {
        self.hold = hold;
        self.most_held = most_per_crew;
        for &(port, crew_id, left) in earlier {
            self.keep_for(port, crew_id, left.min(hold));
        }
        self
    }

    /// Hold `port` for `crew_id` for `hold` from now, lapsing the crew's
    /// holds that end first beyond `most_held`.
    fn keep_for(&self, port: u16, crew_id: i64, hold: Duration) {
        if hold.is_zero() || self.most_held == 0 {
            return;
        }
        let mut held = lock(&self.held);
        let until = Instant::now().checked_add(hold);
        held.insert(port, PortHold { crew_id, until });
        let mut theirs: Vec<(Option<Instant>, u16)> = held
            .iter()
            .filter(|(_, h)| h.crew_id == crew_id)
            .map(|(port, h)| (h.until, *port))
            .collect();
        if theirs.len() > self.most_held {
            // Those ending soonest first (None, the longest, last): they lapse.
            theirs.sort_by_key(|&(until, _)| (until.is_none(), until));
            let lapse = theirs.len() - self.most_held;
            for (_, port) in &theirs[..lapse] {
                held.remove(port);
            }
        }
    }

    /// Bound the public connections of all TCP tunnels, and those of one
    /// client address.
    pub fn with_bounds(mut self, connections: usize, per_address: usize) -> Ports {
        self.connections = Share::new(connections);
        self.per_address = PerAddress::new(per_address);
        self
    }

    /// Take the client's address from the PROXY header of connections from these.
    pub fn with_trusted(mut self, trusted: TrustedProxies) -> Ports {
        self.trusted = trusted;
        self
    }

    /// Claim `wanted` (or the first free port of the range) for a control
    /// connection, start its listener and greet the client (101, then `ready`).
    /// Atomic: of two racing claims of one port exactly one wins. `claimed`
    /// runs before the greeting, as for HTTP tunnels.
    pub fn claim(
        &self,
        relay: &Arc<Relay>,
        wanted: Option<u16>,
        owner: Owner,
        claimed: impl FnOnce(&Tunnel),
    ) -> Result<Arc<Tunnel>, ClaimError> {
        if let Some(port) = wanted.filter(|p| !self.range.contains(*p)) {
            return Err(ClaimError::Invalid(format!(
                "Port {port} is outside this server's TCP ports {}; choose one in that range with --remote-port, or leave it out.",
                self.range
            )));
        }
        let mut live = lock(&self.live);
        let mut held = lock(&self.held);
        let now = Instant::now();
        held.retain(|_, h| !h.lapsed(now));
        if let Some(port) = wanted {
            if let Some(hold) = held.get(&port).filter(|h| h.crew_id != owner.crew_id) {
                let until = match hold.until {
                    Some(until) => time::OffsetDateTime::now_utc()
                        .checked_add(
                            until
                                .saturating_duration_since(now)
                                .try_into()
                                .unwrap_or(time::Duration::MAX),
                        )
                        .map_or_else(|| "later".to_string(), time_fmt::format),
                    None => "later".to_string(),
                };
                return Err(ClaimError::Taken(format!(
                    "Port {port} is taken: another crew's tunnel was on it last and it stays theirs until {until}; choose another with --remote-port, or leave it out for a free one."
                )));
            }
        }
        let (port, listener) = self.bind(&live, &held, wanted)?;
        held.remove(&port);
        drop(held);
        let listener = listener
            .set_nonblocking(true)
            .and_then(|()| tokio::net::TcpListener::from_std(listener));
        let Ok(listener) = listener else {
            return Err(ClaimError::Unavailable);
        };
        // No data connections ahead of need: see `Tunnel::ahead`.
        let tunnel = Arc::new(Tunnel::new(port.to_string(), owner, false));
        tunnel.greet(relay.tcp_url(port));
        let listening = Arc::new(Listening {
            tunnel: tunnel.clone(),
            stopping: AtomicBool::new(false),
            listener: Mutex::new(Some(listener)),
            accepting: Mutex::new(None),
            open: Mutex::new(HashMap::new()),
            next: AtomicU64::new(0),
        });
        let accepting = {
            let (relay, listening) = (relay.clone(), listening.clone());
            tokio::spawn(async move { accept_loop(&relay, &listening).await })
        };
        *lock(&listening.accepting) = Some(accepting);
        live.insert(port, listening);
        drop(live);
        claimed(&tunnel);
        Ok(tunnel)
    }

    /// Bind the wanted port, or the first free one of the range.
    fn bind(
        &self,
        live: &HashMap<u16, Arc<Listening>>,
        held: &HashMap<u16, PortHold>,
        wanted: Option<u16>,
    ) -> Result<(u16, TcpListener), ClaimError> {
        if let Some(port) = wanted {
            if live.contains_key(&port) {
                return Err(ClaimError::Taken(format!(
                    "Port {port} is held by a live tunnel; choose another with --remote-port, or leave it out for a free one."
                )));
            }
            return match TcpListener::bind((self.ip, port)) {
                Ok(listener) => Ok((port, listener)),
                Err(e) => Err(ClaimError::Taken(format!(
                    "Port {port} cannot be opened on the server ({e}); choose another with --remote-port, or leave it out for a free one."
                ))),
            };
        }
        // A free port is one no tunnel is on and no crew holds.
        let free = (self.range.first..=self.range.last)
            .filter(|port| !live.contains_key(port) && !held.contains_key(port))
            .find_map(|port| Some((port, TcpListener::bind((self.ip, port)).ok()?)));
        free.ok_or_else(|| {
            let kept = if held.is_empty() {
                ""
            } else {
                " or kept for their crews after their tunnels closed (--subdomain-hold)"
            };
            ClaimError::Taken(format!(
                "All of this server's TCP ports {} are in use{kept}; close a tunnel (berth tunnels close ID) or ask the admin to widen --tcp-ports.",
                self.range
            ))
        })
    }

    /// Close the listener of this tunnel, if it still holds its port, and free
    /// the port: when this returns, a new claim can bind it.
    pub fn release(&self, tunnel: &Arc<Tunnel>) {
        let Ok(port) = tunnel.subdomain.parse::<u16>() else {
            return;
        };
        let listening = lock(&self.live)
            .get(&port)
            .filter(|l| Arc::ptr_eq(&l.tunnel, tunnel))
            .cloned();
        if let Some(listening) = listening {
            // Shut before forgetting: the port is not offered while still bound.
            listening.shut();
            let mut live = lock(&self.live);
            if live.get(&port).is_some_and(|l| Arc::ptr_eq(l, &listening)) {
                live.remove(&port);
                // Its crew keeps the port for a while (a reconnect, a restart).
                self.keep_for(port, tunnel.crew_id, self.hold);
            }
        }
    }

    /// Whether a live tunnel holds `port`.
    pub fn holds(&self, port: u16) -> bool {
        lock(&self.live).contains_key(&port)
    }

    /// The live TCP tunnel with this id.
    pub fn find_by_id(&self, id: &str) -> Option<Arc<Tunnel>> {
        lock(&self.live)
            .values()
            .find(|l| l.tunnel.id == id)
            .map(|l| l.tunnel.clone())
    }

    /// The ids of the live TCP tunnels a token opened.
    pub fn ids_of_token(&self, token_id: i64) -> Vec<String> {
        lock(&self.live)
            .values()
            .filter(|l| l.tunnel.token_id == token_id)
            .map(|l| l.tunnel.id.clone())
            .collect()
    }

    /// Close every TCP tunnel (server shutdown).
    pub fn close_all(&self) {
        let tunnels: Vec<Arc<Tunnel>> = lock(&self.live)
            .values()
            .map(|l| l.tunnel.clone())
            .collect();
        for tunnel in tunnels {
            self.release(&tunnel);
            tunnel.close();
        }
    }
}

impl Relay {
    /// The public address of a TCP tunnel: the public URL's host and the port.
    pub fn tcp_url(&self, port: u16) -> String {
        let rest = self
            .public_url
            .split_once("://")
            .map_or(self.public_url.as_str(), |(_, rest)| rest);
        let authority = rest.split('/').next().unwrap_or("");
        let host = match authority.rsplit_once(':') {
            Some((host, port)) if !port.contains(']') => host,
            _ => authority,
        };
        let host = if host.is_empty() { "localhost" } else { host };
        format!("tcp://{host}:{port}")
    }
}

/// Accept public connections until the tunnel closes; a task each, ended
/// early when the tunnel cuts it.
async fn accept_loop(relay: &Arc<Relay>, listening: &Arc<Listening>) {
    loop {
        let accepted = poll_fn(|cx| match lock(&listening.listener).as_ref() {
            Some(listener) => listener.poll_accept(cx).map(Some),
            None => Poll::Ready(None),
        })
        .await;
        let (public, peer) = match accepted {
            None => return,
            Some(Ok(accepted)) => accepted,
            Some(Err(_)) => {
                // Out of descriptors, say: let some connections end first.
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let cut = Arc::new(Notify::new());
        let Some(key) = listening.track(&cut) else {
            continue;
        };
        let (relay, held) = (relay.clone(), listening.clone());
        tokio::spawn(async move {
            tokio::select! {
                biased;
                () = cut.notified() => {}
                () = serve_public(&relay, &held, public, peer) => {}
            }
            held.untrack(key);
        });
    }
}

/// One public connection: its client address (from a trusted proxy's PROXY
/// header, else its peer) within the bounds, then a data connection from the
/// tunnel's client, then raw bytes both ways. Raw TCP has no error page: a
/// connection refused just closes.
async fn serve_public(
    relay: &Relay,
    listening: &Listening,
    mut public: TcpStream,
    peer: SocketAddr,
) {
    let ports = &relay.tcp;
    let client = if ports.trusted.trusts(peer.ip()) {
        match proxy_header::take(&mut public).await {
            Ok(Header::Client(ip)) => ip,
            Ok(Header::None | Header::Local) => peer.ip(),
            Err(_) => return,
        }
    } else {
        peer.ip()
    };
    // A trusted proxy's own connections count against the total only.
    let exempt = ports.trusted.trusts(client);
    let address = if exempt {
        None
    } else {
        ports.per_address.enter(client)
    };
    let total = ports.connections.take();
    if total.is_none() || (address.is_none() && !exempt) {
        return;
    }
    let Some(mut data) = relay.open_data(&listening.tunnel).await else {
        return;
    };
    if listening.tunnel.is_closed() {
        return;
    }
    let _ = public.set_nodelay(true);
    // Raw TCP may idle or stall for as long as its peers like, as TCP would.
    splice(&mut public, &mut data, None).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn range(text: &str) -> Result<PortRange, String> {
        text.parse()
    }

    #[test]
    fn port_ranges_parse_and_refuse() {
        assert_eq!(
            range("20000-20099"),
            Ok(PortRange {
                first: 20000,
                last: 20099
            })
        );
        assert_eq!(range(" 7-7 ").map(|r| r.to_string()), Ok("7-7".into()));
        for bad in [
            "", "20000", "a-b", "0-10", "10-9", "1-65536", "-5", "5-", "1--2",
        ] {
            let err = range(bad).unwrap_err();
            assert!(err.contains("FIRST-LAST"), "{bad}: {err}");
        }
        let all = range("1-65535").unwrap();
        assert!(all.contains(1) && all.contains(65535));
    }

    #[test]
    fn tcp_urls_use_the_public_host() {
        let relay = Relay::new("tunnels.example", "https://berth.example:8443/");
        assert_eq!(relay.tcp_url(20001), "tcp://berth.example:20001");
        let plain = Relay::new("localhost", "http://localhost");
        assert_eq!(plain.tcp_url(7), "tcp://localhost:7");
        let v6 = Relay::new("localhost", "http://[::1]:8080");
        assert_eq!(v6.tcp_url(7), "tcp://[::1]:7");
    }

    /// An event loop for the listeners' tasks, entered on this thread.
    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Runtime::new().unwrap()
    }

    /// A relay whose TCP range is a port the OS just handed out, free again.
    fn relay_with_one_port() -> (Arc<Relay>, u16) {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut relay = Relay::new("localhost", "http://localhost:1");
        let range = PortRange {
            first: port,
            last: port,
        };
        relay.tcp = Ports::new(range, Ipv4Addr::LOCALHOST.into());
        (Arc::new(relay), port)
    }

    #[test]
    fn of_racing_claims_of_one_port_exactly_one_wins() {
        let runtime = runtime();
        let _entered = runtime.enter();
        let (relay, port) = relay_with_one_port();
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let relay = relay.clone();
                let handle = runtime.handle().clone();
                std::thread::spawn(move || {
                    let _entered = handle.enter();
                    relay.tcp.claim(&relay, Some(port), Owner::token(1), |_| {})
                })
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let wins: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
        assert_eq!(wins.len(), 1);
        assert!(results
            .iter()
            .filter_map(|r| r.as_ref().err())
            .all(|e| matches!(e, ClaimError::Taken(_))));
        // Released, the port is bindable at once and claimable again.
        let tunnel = wins[0].clone();
        relay.tcp.release(&tunnel);
        let again = relay
            .tcp
            .claim(&relay, None, Owner::token(1), |_| {})
            .unwrap();
        assert_eq!(again.subdomain, port.to_string());
        let full = relay.tcp.claim(&relay, None, Owner::token(1), |_| {});
        assert!(matches!(full, Err(ClaimError::Taken(why)) if why.contains("in use")));
        let outside = relay
            .tcp
            .claim(&relay, Some(port.wrapping_add(1)), Owner::token(1), |_| {});
        assert!(matches!(outside, Err(ClaimError::Invalid(why)) if why.contains("outside")));
    }

    #[test]
    fn public_connections_beyond_the_limit_are_closed() {
        let runtime = runtime();
        let _entered = runtime.enter();
        let (relay, port) = relay_with_one_port();
        let tunnel = relay
            .tcp
            .claim(&relay, None, Owner::token(1), |_| {})
            .unwrap();
        let listening = lock(&relay.tcp.live).get(&port).unwrap().clone();
        let public = Arc::new(Notify::new());
        let held: Vec<u64> = (0..MAX_CONNECTIONS)
            .map(|_| listening.track(&public).unwrap())
            .collect();
        assert!(listening.track(&public).is_none());
        listening.untrack(held[0]);
        assert!(listening.track(&public).is_some());
        relay.tcp.release(&tunnel);
        assert!(
            listening.track(&public).is_none(),
            "a closed tunnel takes no more"
        );
        assert!(lock(&listening.open).is_empty());
    }

    #[test]
    fn a_crew_keeps_its_port_after_its_tunnel_closes() {
        let runtime = runtime();
        let _entered = runtime.enter();
        let (relay, port) = relay_with_one_port();
        let mut relay = Arc::into_inner(relay).unwrap();
        let range = relay.tcp.range;
        // A port left open by the last run is its crew's from the start.
        relay.tcp = Ports::new(range, Ipv4Addr::LOCALHOST.into()).with_holds(
            Duration::from_secs(3600),
            1,
            &[(port, 1, Duration::from_secs(3600))],
        );
        let relay = Arc::new(relay);
        let owner = |crew_id| Owner {
            token_id: 0,
            crew_id,
        };
        let claim = |wanted, crew| (relay.tcp.claim(&relay, wanted, owner(crew), |_| {}), ());
        let (theirs, _c) = claim(Some(port), 2);
        assert!(matches!(theirs, Err(ClaimError::Taken(why)) if why.contains("another crew")));
        // Not handed out as a free one either.
        let (any, _c) = claim(None, 2);
        assert!(matches!(any, Err(ClaimError::Taken(why)) if why.contains("in use")));
        let (ours, _c) = claim(Some(port), 1);
        let ours = ours.unwrap();
        relay.tcp.release(&ours);
        let (theirs, _c) = claim(None, 2);
        assert!(theirs.is_err());
        let (again, _c) = claim(None, 1);
        assert!(again.is_err(), "a crew's free port skips its own holds too");
        let (again, _c) = claim(Some(port), 1);
        let again = again.unwrap();
        relay.tcp.release(&again);
        // Without a hold, the port is anyone's once closed.
        let mut bare = Relay::new("localhost", "http://localhost:1");
        bare.tcp = Ports::new(range, Ipv4Addr::LOCALHOST.into()).with_holds(Duration::ZERO, 1, &[]);
        let bare = Arc::new(bare);
        let first = bare.tcp.claim(&bare, None, owner(1), |_| {}).unwrap();
        bare.tcp.release(&first);
        assert!(bare.tcp.claim(&bare, None, owner(2), |_| {}).is_ok());
    }

    #[test]
    fn a_crew_holds_at_most_its_share_of_ports() {
        let range = PortRange { first: 1, last: 9 };
        let hour = Duration::from_secs(3600);
        let ports = Ports::new(range, Ipv4Addr::LOCALHOST.into()).with_holds(hour, 2, &[]);
        for port in [1, 2, 3] {
            ports.keep_for(port, 1, hour);
            std::thread::sleep(Duration::from_millis(2));
        }
        ports.keep_for(4, 2, hour);
        // Crew 1's oldest hold lapsed; crew 2's is its own.
        let mut held: Vec<(u16, i64)> = lock(&ports.held)
            .iter()
            .map(|(port, h)| (*port, h.crew_id))
            .collect();
        held.sort();
        assert_eq!(held, [(2, 1), (3, 1), (4, 2)]);
        // A hold too long for an `Instant` is kept, and lapses last.
        ports.keep_for(5, 2, Duration::MAX);
        ports.keep_for(6, 2, hour);
        let theirs: Vec<u16> = lock(&ports.held)
            .iter()
            .filter(|(_, h)| h.crew_id == 2)
            .map(|(port, _)| *port)
            .collect();
        assert!(theirs.contains(&5) && theirs.contains(&6) && theirs.len() == 2);
    }
}
