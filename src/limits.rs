//! The server's bounds on connections and tunnels, sized to its open-file
//! limit, and the counted shares that keep one client address, or the
//! tunnels' visitors, from taking every slot.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::sync::lock;

/// Front-door connections served at once, unless the open-file limit or
/// `BERTH_MAX_CONNECTIONS` says fewer.
pub const MAX_CONNECTIONS: usize = 1024;
/// Live tunnels (control connections) at once, unless the open-file limit or
/// `BERTH_MAX_TUNNELS` says fewer.
pub const MAX_TUNNELS: usize = 4096;
/// Public connections to all TCP tunnels together, unless the open-file
/// limit says fewer.
pub const MAX_TCP_CONNECTIONS: usize = 4096;
/// Connections one client address may hold at once, unless the bound is so
/// small that a quarter of it is less (`--max-connections-per-ip`).
pub const MAX_PER_ADDRESS: usize = 64;
/// The least cap per address a small bound brings (if half the bound allows).
const MIN_PER_ADDRESS: usize = 8;
/// The relay's reserve beyond the connection bound is at least this (see
/// the front door's `Admission`).
pub const MIN_RELAY_RESERVE: usize = 8;

/// Descriptors kept aside from every bound: the database and its journal,
/// listeners, the API's workers, logs; what the API needs when every bound is full.
pub const RESERVED_FILES: u64 = 128;
/// Descriptors one front-door connection may hold at once: its socket, and
/// for a request to a tunnel its data connection, or for an API request its
/// end of the Unix socket to the API.
pub const FILES_PER_CONNECTION: u64 = 2;
/// What an API request holds besides: the API's end of the Unix socket and
/// its clone of it (counted for the slots kept from tunnel traffic, the only
/// ones API requests may hold when tunnel traffic fills its share).
pub const FILES_PER_API_REQUEST: u64 = 2;
/// What a connection in the relay's reserve holds: its socket (a data
/// connection on its way to its tunnel).
pub const FILES_PER_RESERVE: u64 = 1;
/// Descriptors one tunnel holds: its control connection and its parked data
/// connections (`relay::PARKED_PER_TUNNEL`), or a TCP tunnel's listener.
pub const FILES_PER_TUNNEL: u64 = 3;
/// Descriptors one public connection to a TCP tunnel holds: the public
/// socket and its data connection.
pub const FILES_PER_TCP_CONNECTION: u64 = 2;

/// Descriptors `connections` front-door connections and their reserve may hold.
pub fn connection_files(connections: usize) -> u64 {
    connections as u64 * FILES_PER_CONNECTION
        + kept_from_tunnels(connections) as u64 * FILES_PER_API_REQUEST
        + relay_reserve(connections) as u64 * FILES_PER_RESERVE
}

/// Of `connections`, the slots public tunnel traffic never takes: a quarter
/// (one at least) once there are two.
fn kept_from_tunnels(connections: usize) -> usize {
    if connections > 1 {
        (connections / 4).max(1)
    } else {
        0
    }
}

/// The connections beyond `connections` kept for the relay's data connections.
pub fn relay_reserve(connections: usize) -> usize {
    (connections / 4).max(MIN_RELAY_RESERVE)
}

/// How long an upgraded connection (a WebSocket, say) may move no byte
/// either way before it is closed (`--idle-timeout`).
pub const IDLE_TIMEOUT: &str = "10m";

/// The cap per client address for a bound of `connections`: 64, or for a
/// small bound a quarter of it, yet at least 8 (a browser opens six to a
/// host) and never more than half, so no one address holds every slot.
fn default_per_address(connections: usize) -> usize {
    MAX_PER_ADDRESS
        .min((connections / 4).max(MIN_PER_ADDRESS))
        .min((connections / 2).max(1))
}

/// What the operator asked for (or the defaults).
#[derive(Clone, Copy, Debug)]
pub struct Asked {
    pub connections: usize,
    pub tunnels: usize,
    /// Public connections of all TCP tunnels together.
    pub tcp_connections: usize,
    /// `--max-connections-per-ip`, if given: taken as it is.
    pub per_address: Option<usize>,
}

/// The bounds the server runs with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounds {
    pub open_files: u64,
    /// Front-door connections (the relay's reserve comes on top).
    pub connections: usize,
    /// Of those, how many public tunnel traffic may hold; the rest are the
    /// API's, the dashboard's and the relay's.
    pub tunnel_traffic: usize,
    pub per_address: usize,
    pub tunnels: usize,
    pub tcp_connections: usize,
}

impl Bounds {
    /// Fit the asked bounds into `open_files` descriptors: `RESERVED_FILES`
    /// aside, half of the rest for front-door connections and their reserve,
    /// a quarter for tunnels, a quarter for TCP tunnels' public connections;
    /// what one of them needs less than its part goes to the others.
    pub fn fit(open_files: u64, asked: Asked) -> Bounds {
        let usable = open_files.saturating_sub(RESERVED_FILES);
        let needs = [
            connection_files(asked.connections),
            asked.tunnels as u64 * FILES_PER_TUNNEL,
            asked.tcp_connections as u64 * FILES_PER_TCP_CONNECTION,
        ];
        let parts = [usable / 2, usable / 4, usable / 4];
        let mut files = [0u64; 3];
        for i in 0..3 {
            files[i] = needs[i].min(parts[i]);
        }
        let mut left = usable.saturating_sub(files.iter().sum());
        for i in [1, 0, 2] {
            let more = (needs[i] - files[i]).min(left);
            files[i] += more;
            left -= more;
        }
        let within = |files: u64, each: u64| usize::try_from(files / each).unwrap_or(usize::MAX);
        let mut connections = asked.connections.max(1);
        while connections > 1 && connection_files(connections) > files[0] {
            connections -= 1;
        }
        let tunnels = asked.tunnels.min(within(files[1], FILES_PER_TUNNEL)).max(1);
        let tcp_connections = asked
            .tcp_connections
            .min(within(files[2], FILES_PER_TCP_CONNECTION))
            .max(1);
        let kept = kept_from_tunnels(connections);
        let per_address = asked
            .per_address
            .unwrap_or_else(|| default_per_address(connections));
        Bounds {
            open_files,
            connections,
            tunnel_traffic: connections - kept,
            per_address,
            tunnels,
            tcp_connections,
        }
    }
}

impl fmt::Display for Bounds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} connections ({} at most for tunnel traffic, {} per client address, {} more for the relay), {} tunnels, {} TCP tunnel connections, from {} open files",
            self.connections,
            self.tunnel_traffic,
            self.per_address,
            relay_reserve(self.connections),
            self.tunnels,
            self.tcp_connections,
            self.open_files
        )
    }
}

/// A share of slots: at most `most` taken at once.
pub struct Share {
    most: usize,
    taken: AtomicUsize,
}

/// One slot of a [`Share`], given back when dropped.
pub struct ShareSlot<'a>(&'a Share);

impl Share {
    pub fn new(most: usize) -> Share {
        Share {
            most,
            taken: AtomicUsize::new(0),
        }
    }

    /// A slot, unless all are taken.
    pub fn take(&self) -> Option<ShareSlot<'_>> {
        self.taken
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < self.most).then_some(n + 1)
            })
            .ok()
            .map(|_| ShareSlot(self))
    }
}

impl Drop for ShareSlot<'_> {
    fn drop(&mut self) {
        self.0.taken.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Connections open per client address, each address at most `cap`.
pub struct PerAddress {
    cap: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// The address a client is counted by: an IPv4 address (v4-mapped ones as
/// such), or an IPv6 address's /64, which one host is commonly given whole,
/// so that it cannot walk past the cap address by address.
fn client_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !(u128::MAX >> 64)).into()),
        v4 => v4,
    }
}

/// One connection of an address, given back when dropped.
pub struct AddressSlot<'a> {
    of: &'a PerAddress,
    ip: IpAddr,
}

impl PerAddress {
    pub fn new(cap: usize) -> PerAddress {
        PerAddress {
            cap,
            open: Mutex::new(HashMap::new()),
        }
    }

    /// A slot for `ip`, unless it holds `cap` already.
    pub fn enter(&self, ip: IpAddr) -> Option<AddressSlot<'_>> {
        let ip = client_key(ip);
        let mut open = lock(&self.open);
        let count = open.entry(ip).or_insert(0);
        if *count >= self.cap {
            return None;
        }
        *count += 1;
        Some(AddressSlot { of: self, ip })
    }
}

impl AddressSlot<'_> {
    /// Keep the slot taken without this guard (to carry it into a task):
    /// the address to take it back with [`PerAddress::resume`].
    pub fn detach(self) -> IpAddr {
        let ip = self.ip;
        std::mem::forget(self);
        ip
    }
}

impl PerAddress {
    /// The guard of a slot given up with [`AddressSlot::detach`].
    pub fn resume(&self, ip: IpAddr) -> AddressSlot<'_> {
        AddressSlot { of: self, ip }
    }
}

impl Drop for AddressSlot<'_> {
    fn drop(&mut self) {
        let mut open = lock(&self.of.open);
        if let Some(count) = open.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asked(connections: usize) -> Asked {
        Asked {
            connections,
            tunnels: MAX_TUNNELS,
            tcp_connections: MAX_TCP_CONNECTIONS,
            per_address: None,
        }
    }

    #[test]
    fn bounds_fit_the_open_files_and_keep_a_share_from_tunnels() {
        // Plenty of descriptors: the defaults.
        let big = Bounds::fit(1 << 20, asked(MAX_CONNECTIONS));
        assert_eq!(big.connections, MAX_CONNECTIONS);
        assert_eq!(big.tunnels, MAX_TUNNELS);
        assert_eq!(big.tcp_connections, MAX_TCP_CONNECTIONS);
        assert_eq!(big.per_address, MAX_PER_ADDRESS);
        assert_eq!(big.tunnel_traffic, 768);
        // 512 descriptors: every bound shrinks, and all of them together fit.
        let small = Bounds::fit(512, asked(MAX_CONNECTIONS));
        let used = connection_files(small.connections)
            + small.tunnels as u64 * FILES_PER_TUNNEL
            + small.tcp_connections as u64 * FILES_PER_TCP_CONNECTION;
        assert!(used + RESERVED_FILES <= 512, "{small:?} uses {used}");
        assert!(small.tunnels < 100 && small.tunnels > 10, "{small:?}");
        assert!(small.per_address < small.tunnel_traffic, "{small:?}");
        assert!(small.tunnel_traffic < small.connections, "{small:?}");
        // Lowered by hand: taken, with its shares.
        let four = Bounds::fit(1 << 20, asked(4));
        assert_eq!(
            (four.connections, four.tunnel_traffic, four.per_address),
            (4, 3, 2)
        );
        let one = Bounds::fit(1 << 20, asked(1));
        assert_eq!((one.connections, one.tunnel_traffic), (1, 1));
        // An explicit per-address cap is taken as it is.
        let set = Bounds::fit(
            1 << 20,
            Asked {
                per_address: Some(500),
                ..asked(4)
            },
        );
        assert_eq!(set.per_address, 500);
        assert!(small.to_string().contains("from 512 open files"));
        // What connections need less than their half goes to tunnels first.
        let some = Bounds::fit(20_000, asked(MAX_CONNECTIONS));
        assert_eq!(some.connections, MAX_CONNECTIONS);
        assert!(some.tunnels > 1000, "{some:?}");
        let used = connection_files(some.connections)
            + some.tunnels as u64 * FILES_PER_TUNNEL
            + some.tcp_connections as u64 * FILES_PER_TCP_CONNECTION;
        assert!(used + RESERVED_FILES <= 20_000, "{some:?} uses {used}");
        // Few tunnels and TCP connections asked for: their files go to
        // connections (5,000 WebSockets held through one tunnel).
        let many = Bounds::fit(
            20_000,
            Asked {
                tunnels: 16,
                tcp_connections: 64,
                ..asked(6700)
            },
        );
        assert_eq!(many.connections, 6700, "{many:?}");
        assert!(many.tunnel_traffic >= 5000, "{many:?}");
    }

    #[test]
    fn shares_and_address_slots_are_given_back() {
        let share = Share::new(2);
        let a = share.take().unwrap();
        let _b = share.take().unwrap();
        assert!(share.take().is_none());
        drop(a);
        assert!(share.take().is_some());

        let per = PerAddress::new(2);
        let one: IpAddr = "10.0.0.1".parse().unwrap();
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        let first = per.enter(one).unwrap();
        let _second = per.enter(mapped).unwrap();
        assert!(
            per.enter(one).is_none(),
            "a v4-mapped address is the same client"
        );
        assert!(per.enter(other).is_some());
        drop(first);
        assert!(per.enter(one).is_some());
        // An IPv6 client is counted by its /64.
        let v6 = |text: &str| text.parse::<IpAddr>().unwrap();
        let _a = per.enter(v6("2001:db8:1:2::1")).unwrap();
        let _b = per.enter(v6("2001:db8:1:2:ffff::9")).unwrap();
        assert!(per.enter(v6("2001:db8:1:2::77")).is_none());
        assert!(per.enter(v6("2001:db8:1:3::1")).is_some());
    }
}
