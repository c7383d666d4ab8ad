//! The tunnel relay: the registry of live tunnels by subdomain, pending data
//! connections by id, and the subdomain rules (DESIGN §6).

pub mod ingress;
pub mod protocol;
pub mod tcp;

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use protocol::Frame;

/// An unclaimed data connection id expires after this long (the public side gets 502).
pub const PENDING_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest subdomain label.
pub const MAX_SUBDOMAIN: usize = 63;
/// Bound on each write to a control connection.
const CONTROL_WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Names no tunnel may take.
const RESERVED: [&str; 16] = [
    "www",
    "api",
    "admin",
    "app",
    "dashboard",
    "relay",
    "berth",
    "mail",
    "smtp",
    "ftp",
    "ns",
    "ns1",
    "ns2",
    "static",
    "assets",
    "status",
];
const ADJECTIVES: [&str; 16] = [
    "amber", "brave", "calm", "dusty", "eager", "fuzzy", "gentle", "happy", "icy", "jolly", "keen",
    "lucky", "mellow", "nimble", "quiet", "rapid",
];
const NOUNS: [&str; 16] = [
    "otter", "heron", "maple", "harbor", "comet", "falcon", "willow", "pebble", "lynx", "cedar",
    "badger", "meadow", "orca", "raven", "tide", "sparrow",
];

/// A live tunnel: its control connection, through which `connect` frames go.
pub struct Tunnel {
    pub id: String,
    pub subdomain: String,
    /// The token that opened it (`tokens revoke --disconnect` closes by token).
    pub token_id: i64,
    control: Mutex<TcpStream>,
}

impl Tunnel {
    /// A tunnel with a fresh id, under `subdomain` (a TCP tunnel's: its port).
    fn new(subdomain: String, token_id: i64, control: TcpStream) -> Tunnel {
        Tunnel {
            id: random_hex::<8>(),
            subdomain,
            token_id,
            control: Mutex::new(control),
        }
    }

    /// Send one frame on the control connection.
    pub fn send(&self, frame: &Frame) -> io::Result<()> {
        let mut control = lock(&self.control);
        protocol::write_frame(&mut *control, frame)
    }

    /// Close the control connection (the client reconnects or ends).
    pub fn close(&self) {
        let _ = lock(&self.control).shutdown(Shutdown::Both);
    }

    /// Tell the client why, so it does not reconnect, then close.
    pub fn close_for(&self, reason: &str) {
        let _ = self.send(&Frame::Closed {
            reason: reason.to_string(),
        });
        self.close();
    }
}

/// Why a subdomain cannot be had.
#[derive(Debug, PartialEq, Eq)]
pub enum ClaimError {
    /// Not `[a-z0-9-]{1,63}` without a leading or trailing `-`, or reserved (400).
    Invalid(String),
    /// Held by a live tunnel (409).
    Taken(String),
    /// The client went away before it heard the answer.
    Gone,
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
    tunnels: Mutex<HashMap<String, Arc<Tunnel>>>,
    pending: Mutex<HashMap<String, SyncSender<TcpStream>>>,
    /// TCP tunnels, by public port.
    pub tcp: tcp::Ports,
}

impl Relay {
    pub fn new(domain: &str, public_url: &str) -> Relay {
        Relay {
            domain: domain.trim_end_matches('.').to_ascii_lowercase(),
            public_url: public_url.to_string(),
            tunnels: Mutex::new(HashMap::new()),
            pending: Mutex::new(HashMap::new()),
            tcp: tcp::Ports::new(
                tcp::DEFAULT_RANGE
                    .parse()
                    .expect("the default range parses"),
                std::net::Ipv4Addr::UNSPECIFIED.into(),
            ),
        }
    }

    /// Claim a subdomain (or a random free one) for a control connection and
    /// greet the client (101, then `ready`); atomic: of two racing claims exactly one wins.
    /// `claimed` runs before the greeting (to record the tunnel before anyone can ask for it).
    pub fn claim(
        &self,
        wanted: Option<&str>,
        control: TcpStream,
        token_id: i64,
        claimed: impl FnOnce(&Tunnel),
    ) -> Result<Arc<Tunnel>, ClaimError> {
        if let Some(name) = wanted {
            check_subdomain(name)?;
        }
        let _ = control.set_write_timeout(Some(CONTROL_WRITE_TIMEOUT));
        let mut tunnels = lock(&self.tunnels);
        let subdomain = match wanted {
            Some(name) if tunnels.contains_key(name) => {
                return Err(ClaimError::Taken(format!(
                "The subdomain {name} is held by a live tunnel; choose another with --subdomain."
            )))
            }
            Some(name) => name.to_string(),
            None => loop {
                let name = random_name();
                if !tunnels.contains_key(&name) {
                    break name;
                }
            },
        };
        let tunnel = Arc::new(Tunnel::new(subdomain.clone(), token_id, control));
        // The 101 and `ready` go out before any `connect`: hold the control
        // connection's lock from before the tunnel is findable until they are sent.
        let mut control = lock(&tunnel.control);
        tunnels.insert(subdomain.clone(), tunnel.clone());
        drop(tunnels);
        claimed(&tunnel);
        let ready = Frame::Ready {
            tunnel_id: tunnel.id.clone(),
            url: self.url_of(&subdomain),
        };
        let greeted = control
            .write_all(SWITCHING.as_bytes())
            .and_then(|()| protocol::write_frame(&mut *control, &ready));
        drop(control);
        if greeted.is_err() {
            self.release(&tunnel);
            return Err(ClaimError::Gone);
        }
        Ok(tunnel)
    }

    /// Forget a tunnel, if the registry still holds this one under its name
    /// (a TCP tunnel's listener closes and its port is free when this returns).
    pub fn release(&self, tunnel: &Arc<Tunnel>) {
        self.tcp.release(tunnel);
        let mut tunnels = lock(&self.tunnels);
        if tunnels
            .get(&tunnel.subdomain)
            .is_some_and(|t| Arc::ptr_eq(t, tunnel))
        {
            tunnels.remove(&tunnel.subdomain);
        }
    }

    /// Close every control connection (shutdown): the clients reconnect elsewhere
    /// or later, and the front door's drain need not wait for them.
    pub fn close_all(&self) {
        let tunnels: Vec<Arc<Tunnel>> = lock(&self.tunnels).drain().map(|(_, t)| t).collect();
        for tunnel in tunnels {
            tunnel.close();
        }
        self.tcp.close_all();
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

    /// The live tunnel at a subdomain.
    pub fn find(&self, subdomain: &str) -> Option<Arc<Tunnel>> {
        lock(&self.tunnels).get(subdomain).cloned()
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

    /// Ask the tunnel's client for a data connection and wait for it.
    pub fn open_data(&self, tunnel: &Tunnel) -> Option<TcpStream> {
        let id = random_hex::<16>();
        let (tx, rx): (_, Receiver<TcpStream>) = mpsc::sync_channel(1);
        lock(&self.pending).insert(id.clone(), tx);
        let sent = tunnel.send(&Frame::Connect { id: id.clone() });
        let stream = match sent {
            Ok(()) => rx.recv_timeout(PENDING_TIMEOUT).ok(),
            Err(_) => None,
        };
        lock(&self.pending).remove(&id);
        stream
    }

    /// Hand a client's data connection to the public connection waiting for `id`;
    /// false if no one waits (unknown or expired id).
    pub fn deliver(&self, id: &str, stream: TcpStream) -> Result<(), TcpStream> {
        let waiting = lock(&self.pending).remove(id);
        match waiting {
            Some(tx) => tx.send(stream).map_err(|e| e.0),
            None => Err(stream),
        }
    }

    /// Whether a data connection id is awaited (checked before answering 101).
    pub fn is_pending(&self, id: &str) -> bool {
        lock(&self.pending).contains_key(id)
    }
}

/// A poisoned lock still guards consistent data here: every critical section
/// is a single map operation.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Check a requested subdomain against DESIGN §6's rules.
pub fn check_subdomain(name: &str) -> Result<(), ClaimError> {
    let valid = !name.is_empty()
        && name.len() <= MAX_SUBDOMAIN
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if !valid {
        return Err(ClaimError::Invalid(format!(
            "The subdomain `{name}` is not valid: use 1 to 63 of a-z, 0-9 and -, not starting or ending with -."
        )));
    }
    if RESERVED.contains(&name) {
        return Err(ClaimError::Invalid(format!(
            "The subdomain `{name}` is reserved; choose another."
        )));
    }
    Ok(())
}

/// A random readable name such as `calm-otter-4821`.
fn random_name() -> String {
    let adjective = ADJECTIVES[rand::random_range(0..ADJECTIVES.len())];
    let noun = NOUNS[rand::random_range(0..NOUNS.len())];
    format!("{adjective}-{noun}-{}", rand::random_range(1000..10000))
}

/// `N` random bytes as lowercase hex.
fn random_hex<const N: usize>() -> String {
    let bytes: [u8; N] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Copy bytes both ways until either side closes: one named thread per direction.
pub fn pipe(
    a_read: impl Read + Send + 'static,
    a: TcpStream,
    b_read: impl Read + Send + 'static,
    b: TcpStream,
    name: &str,
) {
    let (a_write, b_write) = match (a.try_clone(), b.try_clone()) {
        (Ok(a_write), Ok(b_write)) => (a_write, b_write),
        _ => return,
    };
    let _ = a.set_read_timeout(None);
    let _ = b.set_read_timeout(None);
    let up = std::thread::Builder::new()
        .name(format!("{name}-up"))
        .spawn(move || copy_then_close(a_read, b_write));
    copy_then_close(b_read, a_write);
    if let Ok(up) = up {
        let _ = up.join();
    }
}

/// Copy until EOF, then end the write side so the peer sees it.
fn copy_then_close(mut from: impl Read, mut to: TcpStream) {
    let _ = io::copy(&mut from, &mut to);
    let _ = to.flush();
    let _ = to.shutdown(Shutdown::Write);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A connected socket whose far end stays open (its listener lives on).
    fn socket() -> TcpStream {
        static LISTENER: std::sync::OnceLock<TcpListener> = std::sync::OnceLock::new();
        let listener = LISTENER.get_or_init(|| TcpListener::bind("127.0.0.1:0").unwrap());
        TcpStream::connect(listener.local_addr().unwrap()).unwrap()
    }

    #[test]
    fn subdomain_rules() {
        for good in ["a", "my-app", "x1", &"a".repeat(MAX_SUBDOMAIN)] {
            assert_eq!(check_subdomain(good), Ok(()), "{good}");
        }
        let long = "a".repeat(MAX_SUBDOMAIN + 1);
        for bad in [
            "", "-a", "a-", "A", "a.b", "a_b", "www", "api", "admin", &long,
        ] {
            assert!(check_subdomain(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn random_names_are_valid() {
        for _ in 0..100 {
            assert_eq!(check_subdomain(&random_name()), Ok(()));
        }
    }

    #[test]
    fn of_racing_claims_exactly_one_wins() {
        let relay = Arc::new(Relay::new("localhost", "http://localhost:8080"));
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let relay = relay.clone();
                let control = socket();
                std::thread::spawn(move || relay.claim(Some("race"), control, 1, |_| {}).is_ok())
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
        assert!(relay.claim(Some("race"), socket(), 1, |_| {}).is_ok());
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

    #[test]
    fn an_unclaimed_id_expires() {
        let relay = Relay::new("localhost", "http://localhost:1");
        let tunnel = relay.claim(Some("slow"), socket(), 1, |_| {}).unwrap();
        let started = std::time::Instant::now();
        assert!(relay.open_data(&tunnel).is_none());
        assert!(started.elapsed() >= PENDING_TIMEOUT);
        assert!(relay.deliver("nope", socket()).is_err());
    }

    #[test]
    fn tunnels_close_by_id_and_by_token() {
        let relay = Relay::new("localhost", "http://localhost:1");
        let a = relay.claim(Some("a"), socket(), 1, |_| {}).unwrap();
        relay.claim(Some("b"), socket(), 2, |_| {}).unwrap();
        relay.claim(Some("c"), socket(), 2, |_| {}).unwrap();
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
