//! Who the client is: the TCP peer, or, when the peer is a reverse proxy the
//! operator trusts (`--trusted-proxy`), the address that proxy names.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// A network written `ADDR/BITS` (or a single address).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    bits: u8,
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.net, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.bits)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.bits))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Cidr, String> {
        let bad = || {
            format!("`{text}` is not a network: write an address or ADDRESS/BITS, e.g. 10.0.0.0/8 or 127.0.0.1/32")
        };
        let text = text.trim();
        let (addr, bits) = match text.split_once('/') {
            Some((addr, bits)) => (addr, Some(bits)),
            None => (text, None),
        };
        let net: IpAddr = addr.parse().map_err(|_| bad())?;
        let net = net.to_canonical();
        let most = if net.is_ipv4() { 32 } else { 128 };
        let bits = match bits {
            Some(bits) => bits
                .parse::<u8>()
                .ok()
                .filter(|b| *b <= most)
                .ok_or_else(bad)?,
            None => most,
        };
        Ok(Cidr { net, bits })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.net, self.bits)
    }
}

/// The reverse proxies whose word on the client's address berth takes.
#[derive(Clone, Debug, Default)]
pub struct TrustedProxies(Vec<Cidr>);

impl TrustedProxies {
    pub fn new(networks: Vec<Cidr>) -> TrustedProxies {
        TrustedProxies(networks)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether a connection from `ip` comes from a trusted proxy.
    pub fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(ip))
    }

    /// The client of a request from `peer` carrying these `X-Forwarded-For`
    /// values (in the order the headers came): the peer itself unless it is
    /// trusted; else the rightmost address in the list that is not a trusted
    /// proxy (each proxy appends the address it saw, so entries to the left of
    /// the first untrusted one are the client's own say and worth nothing).
    /// An entry that is not an address stops the walk: the last trusted hop
    /// stands for the client.
    pub fn client<'a>(
        &self,
        peer: IpAddr,
        forwarded_for: impl Iterator<Item = &'a [u8]>,
    ) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.trusts(peer) {
            return peer;
        }
        let mut entries: Vec<&[u8]> = Vec::new();
        for value in forwarded_for {
            entries.extend(value.split(|&b| b == b','));
        }
        let mut client = peer;
        for entry in entries.iter().rev() {
            let Some(ip) = parse_entry(entry) else {
                return client;
            };
            client = ip;
            if !self.trusts(ip) {
                return ip;
            }
        }
        client
    }
}

/// The scheme a trusted proxy says its client used: the last value of its
/// `X-Forwarded-Proto` (the proxy's own, after any the client sent), when it
/// is `http` or `https`; None for anything else, which leaves the
/// connection's own scheme in place.
pub fn proto<'a>(values: impl Iterator<Item = &'a [u8]>) -> Option<&'static str> {
    let last = values.flat_map(|v| v.split(|&b| b == b',')).last()?;
    match last.trim_ascii() {
        p if p.eq_ignore_ascii_case(b"https") => Some("https"),
        p if p.eq_ignore_ascii_case(b"http") => Some("http"),
        _ => None,
    }
}

impl fmt::Display for TrustedProxies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nets: Vec<String> = self.0.iter().map(Cidr::to_string).collect();
        write!(f, "{}", nets.join(","))
    }
}

/// One `X-Forwarded-For` entry: an address, possibly `[v6]` or with a port.
fn parse_entry(entry: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(entry).ok()?.trim();
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Ok(addr) = text.parse::<std::net::SocketAddr>() {
        return Some(addr.ip().to_canonical());
    }
    let inner = text.strip_prefix('[')?.strip_suffix(']')?;
    inner.parse::<IpAddr>().ok().map(|ip| ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn a_trusted_proxys_proto_is_its_last_word() {
        let proto = |values: &[&str]| super::proto(values.iter().map(|v| v.as_bytes()));
        assert_eq!(proto(&[]), None);
        assert_eq!(proto(&["https"]), Some("https"));
        assert_eq!(proto(&[" HTTPS "]), Some("https"));
        assert_eq!(proto(&["https, http"]), Some("http"));
        assert_eq!(proto(&["http", "https"]), Some("https"));
        assert_eq!(proto(&["wss"]), None);
        assert_eq!(proto(&["https, javascript"]), None);
    }

    #[test]
    fn networks_parse_and_match() {
        let net: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(net.contains(ip("10.1.200.3")));
        assert!(!net.contains(ip("10.2.0.1")));
        assert!(net.contains(ip("::ffff:10.1.0.9")), "v4-mapped");
        let one: Cidr = "127.0.0.1".parse().unwrap();
        assert_eq!(one.to_string(), "127.0.0.1/32");
        assert!(one.contains(ip("127.0.0.1")) && !one.contains(ip("127.0.0.2")));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("8.8.8.8")) && !all.contains(ip("::1")));
        let v6: Cidr = "fd00::/8".parse().unwrap();
        assert!(v6.contains(ip("fd12::1")) && !v6.contains(ip("fe80::1")));
        for bad in [
            "",
            "10.0.0.0/33",
            "::/129",
            "example.com",
            "10.0.0.0/x",
            "10.0.0/8",
        ] {
            let err = bad.parse::<Cidr>().unwrap_err();
            assert!(err.contains("ADDRESS/BITS"), "{bad}: {err}");
        }
    }

    #[test]
    fn the_client_is_the_rightmost_untrusted_entry_from_a_trusted_peer_only() {
        let trusted = TrustedProxies::new(vec!["10.0.0.0/8".parse().unwrap()]);
        let client = |peer: &str, values: &[&str]| {
            trusted
                .client(ip(peer), values.iter().map(|v| v.as_bytes()))
                .to_string()
        };
        // Not from a trusted proxy: its headers are the client's own say.
        assert_eq!(client("203.0.113.9", &["1.2.3.4"]), "203.0.113.9");
        // From one: the rightmost address it does not trust.
        assert_eq!(client("10.0.0.2", &["1.2.3.4"]), "1.2.3.4");
        assert_eq!(
            client("10.0.0.2", &["6.6.6.6, 1.2.3.4, 10.0.0.7"]),
            "1.2.3.4"
        );
        assert_eq!(
            client("10.0.0.2", &["6.6.6.6", "1.2.3.4,10.0.0.7"]),
            "1.2.3.4"
        );
        assert_eq!(client("10.0.0.2", &["[2001:db8::1]:443"]), "2001:db8::1");
        assert_eq!(client("10.0.0.2", &["1.2.3.4:5678"]), "1.2.3.4");
        // Nothing said: the proxy itself; all trusted: the leftmost.
        assert_eq!(client("10.0.0.2", &[]), "10.0.0.2");
        assert_eq!(client("10.0.0.2", &["10.9.9.9, 10.0.0.7"]), "10.9.9.9");
        // Garbage stops the walk at the last trusted hop.
        assert_eq!(client("10.0.0.2", &["1.2.3.4, unknown"]), "10.0.0.2");
        assert_eq!(client("10.0.0.2", &["nonsense, 10.0.0.7"]), "10.0.0.7");
        let none = TrustedProxies::default();
        assert_eq!(
            none.client(ip("10.0.0.2"), [&b"1.2.3.4"[..]].into_iter()),
            ip("10.0.0.2")
        );
    }
}
