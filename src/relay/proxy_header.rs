//! The PROXY protocol (HAProxy's, versions 1 and 2) on TCP tunnels' public
//! ports: a trusted proxy in front of berth opens each connection with a
//! header naming the client. It is read only from trusted proxies; from
//! anyone else the bytes are the connection's own and pass on untouched.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::time::{timeout_at, Instant};

/// How long a trusted proxy's connection may take to show whether it starts
/// with a header: proxies send it at once. A connection silent that long
/// (a protocol where the server speaks first) has none.
pub const HEADER_WAIT: Duration = Duration::from_secs(1);
/// Version 1's longest header, CRLF included (the specification's bound).
const V1_MAX: usize = 107;
/// Version 2's fixed start: the signature, version and command, family, length.
const V2_FIXED: usize = 16;
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// The most address bytes version 2 may carry (TLVs included) that berth reads.
const V2_MAX_LEN: usize = 512;

/// What a connection's start said.
#[derive(Debug, PartialEq, Eq)]
pub enum Header {
    /// No header: the bytes are the connection's own.
    None,
    /// A header without a client address (`UNKNOWN`, `LOCAL`, a family
    /// other than TCP): the proxy's own connection.
    Local,
    /// The client the proxy speaks for.
    Client(IpAddr),
}

/// Look at the start of a connection from a trusted proxy and take a PROXY
/// header off it if there is one. An error: a header that is broken, or not
/// whole by `HEADER_WAIT` once begun; the connection is to be closed.
pub async fn take(stream: &mut TcpStream) -> io::Result<Header> {
    let deadline = Instant::now() + HEADER_WAIT;
    let mut start = [0u8; V2_FIXED];
    loop {
        let seen = match timeout_at(deadline, stream.peek(&mut start)).await {
            Ok(seen) => seen?,
            Err(_) => return Ok(Header::None),
        };
        let v1 = b"PROXY ".starts_with(&start[..seen.min(6)]);
        let v2 = V2_SIGNATURE.starts_with(&start[..seen.min(12)]);
        if seen == 0 || !(v1 || v2) {
            return Ok(Header::None);
        }
        if (v1 && seen >= 6) || (v2 && seen >= V2_SIGNATURE.len()) {
            break;
        }
        // Part of a signature: wait for the rest.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    if start.starts_with(b"PROXY ") {
        read_v1(stream, deadline).await
    } else {
        read_v2(stream, deadline).await
    }
}

fn broken(why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("PROXY header: {why}"))
}

/// Read exactly `buf` by the deadline.
async fn read_exact_by(
    stream: &mut TcpStream,
    buf: &mut [u8],
    deadline: Instant,
) -> io::Result<()> {
    match timeout_at(deadline, stream.read_exact(buf)).await {
        Ok(read) => read.map(drop),
        Err(_) => Err(io::ErrorKind::TimedOut.into()),
    }
}

/// Version 1: one text line. Peek for its end, then take exactly it.
async fn read_v1(stream: &mut TcpStream, deadline: Instant) -> io::Result<Header> {
    let mut line = [0u8; V1_MAX];
    let end = loop {
        let seen = match timeout_at(deadline, stream.peek(&mut line)).await {
            Ok(seen) => seen?,
            Err(_) => return Err(broken("not whole in time")),
        };
        if let Some(at) = line[..seen].windows(2).position(|w| w == b"\r\n") {
            break at + 2;
        }
        if seen == V1_MAX {
            return Err(broken("version 1 line too long"));
        }
        if seen == 0 {
            return Err(broken("the connection closed in the header"));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    read_exact_by(stream, &mut line[..end], deadline).await?;
    parse_v1(&line[..end])
}

/// `PROXY TCP4 SRC DST SPORT DPORT\r\n`, `PROXY TCP6 ...` or `PROXY UNKNOWN...`.
pub fn parse_v1(line: &[u8]) -> io::Result<Header> {
    let text = std::str::from_utf8(line)
        .ok()
        .and_then(|t| t.strip_suffix("\r\n"))
        .ok_or_else(|| broken("version 1 line is not text ending in CRLF"))?;
    let parts: Vec<&str> = text.split(' ').collect();
    match parts.as_slice() {
        ["PROXY", "UNKNOWN", ..] => Ok(Header::Local),
        ["PROXY", family @ ("TCP4" | "TCP6"), source, dest, sport, dport] => {
            let source: IpAddr = source.parse().map_err(|_| broken("bad source address"))?;
            let dest: IpAddr = dest
                .parse()
                .map_err(|_| broken("bad destination address"))?;
            let v4 = *family == "TCP4";
            if source.is_ipv4() != v4 || dest.is_ipv4() != v4 {
                return Err(broken("address of the wrong family"));
            }
            for port in [sport, dport] {
                let ok = !port.is_empty()
                    && port.len() <= 5
                    && port.bytes().all(|b| b.is_ascii_digit())
                    && (port.len() == 1 || !port.starts_with('0'))
                    && port.parse::<u16>().is_ok();
                if !ok {
                    return Err(broken("bad port"));
                }
            }
            Ok(Header::Client(source))
        }
        _ => Err(broken("not a version 1 line")),
    }
}

/// Version 2: sixteen fixed bytes, then as many as they say.
async fn read_v2(stream: &mut TcpStream, deadline: Instant) -> io::Result<Header> {
    let mut fixed = [0u8; V2_FIXED];
    read_exact_by(stream, &mut fixed, deadline).await?;
    let len = usize::from(u16::from_be_bytes([fixed[14], fixed[15]]));
    if len > V2_MAX_LEN {
        return Err(broken("version 2 addresses too long"));
    }
    let mut rest = vec![0u8; len];
    read_exact_by(stream, &mut rest, deadline).await?;
    parse_v2(&fixed, &rest)
}

/// The fixed part and the address block of a version 2 header.
pub fn parse_v2(fixed: &[u8; V2_FIXED], rest: &[u8]) -> io::Result<Header> {
    if &fixed[..12] != V2_SIGNATURE {
        return Err(broken("bad version 2 signature"));
    }
    let (version, command) = (fixed[12] >> 4, fixed[12] & 0x0f);
    if version != 2 {
        return Err(broken("unknown version"));
    }
    match command {
        0 => return Ok(Header::Local),
        1 => {}
        _ => return Err(broken("unknown command")),
    }
    match fixed[13] {
        // TCP over IPv4: source, destination, their ports.
        0x11 => {
            let addr: [u8; 4] = rest
                .get(..4)
                .and_then(|a| a.try_into().ok())
                .filter(|_| rest.len() >= 12)
                .ok_or_else(|| broken("short IPv4 addresses"))?;
            Ok(Header::Client(IpAddr::V4(Ipv4Addr::from(addr))))
        }
        // TCP over IPv6.
        0x21 => {
            let addr: [u8; 16] = rest
                .get(..16)
                .and_then(|a| a.try_into().ok())
                .filter(|_| rest.len() >= 36)
                .ok_or_else(|| broken("short IPv6 addresses"))?;
            Ok(Header::Client(IpAddr::V6(Ipv6Addr::from(addr))))
        }
        // UDP, Unix sockets, unspecified: no client address berth can use.
        _ => Ok(Header::Local),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::TcpListener;

    fn pair() -> (std::net::TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let server = listener.accept().unwrap().0;
        server.set_nonblocking(true).unwrap();
        (client, TcpStream::from_std(server).unwrap())
    }

    fn v2(command: u8, family: u8, addresses: &[u8]) -> Vec<u8> {
        let mut out = V2_SIGNATURE.to_vec();
        out.push(0x20 | command);
        out.push(family);
        out.extend_from_slice(&(addresses.len() as u16).to_be_bytes());
        out.extend_from_slice(addresses);
        out
    }

    #[test]
    fn version_1_lines_parse_and_refuse() {
        let ok = parse_v1(b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\r\n").unwrap();
        assert_eq!(ok, Header::Client("192.0.2.7".parse().unwrap()));
        let six = parse_v1(b"PROXY TCP6 2001:db8::1 2001:db8::2 1 65535\r\n").unwrap();
        assert_eq!(six, Header::Client("2001:db8::1".parse().unwrap()));
        assert_eq!(parse_v1(b"PROXY UNKNOWN\r\n").unwrap(), Header::Local);
        for bad in [
            &b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\n"[..],
            b"PROXY TCP4 2001:db8::1 198.51.100.1 1 2\r\n",
            b"PROXY TCP4 192.0.2.7 198.51.100.1 65536 443\r\n",
            b"PROXY TCP4 192.0.2.7 198.51.100.1 01 443\r\n",
            b"PROXY TCP4 192.0.2.7  198.51.100.1 1 443\r\n",
            b"PROXY UDP4 192.0.2.7 198.51.100.1 1 443\r\n",
            b"PROXY TCP4 192.0.2.7\r\n",
        ] {
            assert!(parse_v1(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn version_2_headers_parse_and_refuse() {
        let four = v2(1, 0x11, &[192, 0, 2, 7, 10, 0, 0, 1, 0, 80, 1, 187]);
        let (fixed, rest) = four.split_at(V2_FIXED);
        let header = parse_v2(fixed.try_into().unwrap(), rest).unwrap();
        assert_eq!(header, Header::Client("192.0.2.7".parse().unwrap()));
        let mut six = vec![0x20, 0x01, 0x0d, 0xb8];
        six.extend_from_slice(&[0; 11]);
        six.push(1);
        six.extend_from_slice(&[0; 20]);
        let six = v2(1, 0x21, &six);
        let (fixed, rest) = six.split_at(V2_FIXED);
        let header = parse_v2(fixed.try_into().unwrap(), rest).unwrap();
        assert_eq!(header, Header::Client("2001:db8::1".parse().unwrap()));
        // TLVs after the addresses (haproxy's send-proxy-v2-ssl, say) are skipped.
        let mut with_tlv = vec![198, 51, 100, 3, 10, 0, 0, 1, 0, 80, 1, 187];
        with_tlv.extend_from_slice(&[0x01, 0x00, 0x02, b'h', b'2']);
        let with_tlv = v2(1, 0x11, &with_tlv);
        let (fixed, rest) = with_tlv.split_at(V2_FIXED);
        let header = parse_v2(fixed.try_into().unwrap(), rest).unwrap();
        assert_eq!(header, Header::Client("198.51.100.3".parse().unwrap()));
        let local = v2(0, 0x00, &[]);
        let (fixed, rest) = local.split_at(V2_FIXED);
        assert_eq!(
            parse_v2(fixed.try_into().unwrap(), rest).unwrap(),
            Header::Local
        );
        for bad in [
            v2(1, 0x11, &[192, 0, 2, 7]),
            v2(2, 0x11, &[0; 12]),
            v2(1, 0x21, &[0; 12]),
        ] {
            let (fixed, rest) = bad.split_at(V2_FIXED);
            assert!(
                parse_v2(fixed.try_into().unwrap(), rest).is_err(),
                "{bad:?}"
            );
        }
        let mut wrong_version = v2(1, 0x11, &[0; 12]);
        wrong_version[12] = 0x11;
        let (fixed, rest) = wrong_version.split_at(V2_FIXED);
        assert!(parse_v2(fixed.try_into().unwrap(), rest).is_err());
    }

    #[tokio::test]
    async fn a_header_is_taken_off_and_the_rest_stays() {
        let (mut client, mut server) = pair();
        client
            .write_all(b"PROXY TCP4 192.0.2.7 10.0.0.1 5000 22\r\nSSH-2.0-x\r\n")
            .unwrap();
        assert_eq!(
            take(&mut server).await.unwrap(),
            Header::Client("192.0.2.7".parse().unwrap())
        );
        let mut rest = [0u8; 11];
        server.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"SSH-2.0-x\r\n");

        let (mut client, mut server) = pair();
        let mut bytes = v2(1, 0x11, &[192, 0, 2, 9, 10, 0, 0, 1, 0, 80, 1, 187]);
        bytes.extend_from_slice(b"hello");
        client.write_all(&bytes).unwrap();
        assert_eq!(
            take(&mut server).await.unwrap(),
            Header::Client("192.0.2.9".parse().unwrap())
        );
        let mut rest = [0u8; 5];
        server.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"hello");

        // No header: nothing is taken.
        let (mut client, mut server) = pair();
        client.write_all(b"GET / HTTP/1.1\r\n").unwrap();
        assert_eq!(take(&mut server).await.unwrap(), Header::None);
        let mut rest = [0u8; 3];
        server.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"GET");

        // Silent (the server speaks first): none, after the short wait.
        let (_client, mut server) = pair();
        let started = std::time::Instant::now();
        assert_eq!(take(&mut server).await.unwrap(), Header::None);
        assert!(started.elapsed() < HEADER_WAIT * 2);

        // A broken one: an error, the connection is to close.
        let (mut client, mut server) = pair();
        client.write_all(b"PROXY TCP4 nonsense\r\n").unwrap();
        assert!(take(&mut server).await.is_err());
    }
}
