//! Request and response heads: parsing under the smuggling rules of DESIGN §6, and
//! encoding them onward with hop-by-hop and forwarding headers replaced.

use std::io;

use super::{invalid, reason, Body, MAX_HEADERS};

/// Why a request head was refused; each maps to one status.
#[derive(Debug)]
pub enum HeadError {
    /// The peer closed before sending a byte: the end of a keep-alive connection.
    Closed,
    /// Not a byte arrived within the idle wait (a kept-alive connection's
    /// client that left it, a service that never answers).
    Idle,
    /// The head did not arrive in time (408).
    Timeout,
    /// The head is larger than `MAX_HEAD_BYTES` or has too many lines (431).
    TooLarge,
    /// The head breaks HTTP/1.1's rules (400), with the reason.
    Bad(&'static str),
    /// The connection failed while reading.
    Io,
}

impl HeadError {
    /// Status and reason phrase to answer with, if the peer is still there.
    pub fn status(&self) -> Option<(u16, &'static str)> {
        match self {
            HeadError::Closed | HeadError::Idle | HeadError::Io => None,
            HeadError::Timeout => Some((408, "Request Timeout")),
            HeadError::TooLarge => Some((431, "Request Header Fields Too Large")),
            HeadError::Bad(_) => Some((400, "Bad Request")),
        }
    }

    pub fn message(&self) -> &'static str {
        match self {
            HeadError::Closed | HeadError::Io => "connection closed",
            HeadError::Idle => "nothing arrived in time",
            HeadError::Timeout => {
                "The request head did not arrive in time; send it whole within 10 seconds."
            }
            HeadError::TooLarge => {
                "The request head is larger than 32 KiB; send fewer or shorter headers."
            }
            HeadError::Bad(why) => why,
        }
    }
}

/// A checked request head.
#[derive(Debug)]
pub struct RequestHead {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Body,
    pub keep_alive: bool,
    /// The request asks to switch protocols (WebSocket and the like).
    pub upgrade: bool,
    /// The Host, lowercased and without its port.
    host: String,
}

impl RequestHead {
    /// The first value of a header, as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }

    /// Every value of a header, in order.
    pub fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    /// The Host, lowercased and without its port (checked by `parse_request`).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The header lines of [`RequestHead::encode_forwarded`]'s head, values
    /// as text, for the inspector.
    pub fn forwarded_fields(&self, client_ip: &str, proto: &str) -> Vec<(String, String)> {
        let text = |v: &[u8]| String::from_utf8_lossy(v).into_owned();
        let mut fields: Vec<(String, String)> = self
            .headers
            .iter()
            .filter(|(name, _)| passes_on(name, &[]))
            .map(|(name, value)| (name.clone(), text(value)))
            .collect();
        if let Some(upgrade) = self.upgrade.then(|| self.header("upgrade")).flatten() {
            fields.push(("Connection".into(), "Upgrade".into()));
            fields.push(("Upgrade".into(), upgrade.into()));
        }
        fields.push(("X-Forwarded-For".into(), client_ip.into()));
        fields.push(("X-Forwarded-Proto".into(), proto.into()));
        let host = self.header("host").unwrap_or("");
        fields.push(("X-Forwarded-Host".into(), host.into()));
        fields
    }

    /// The head as sent onward: hop-by-hop headers dropped, forwarding headers
    /// replaced by what the front door knows, and the connection kept alive.
    /// For tunnel traffic, whose bodies stream; the API gets `encode_for_api`.
    pub fn encode_forwarded(&self, client_ip: &str, proto: &str) -> Vec<u8> {
        let mut out = self.encode_start(&[]);
        if self.upgrade {
            if let Some(proto) = self.header("upgrade") {
                out.extend_from_slice(
                    format!("Connection: Upgrade\r\nUpgrade: {proto}\r\n").as_bytes(),
                );
            }
        }
        self.encode_end(out, client_ip, proto)
    }

    /// The head as sent to the API, whose body the front door has read whole
    /// (`body_len` bytes, de-chunked): framed by Content-Length alone, never an
    /// upgrade, and the only request on its connection. tiny_http 0.12 runs each
    /// connection as one task of a pool that can leave a new task queued behind
    /// busy ones when connections arrive together; a kept-alive connection keeps
    /// its task busy, so a request queued behind it would wait for minutes. One
    /// request per connection keeps every task short.
    pub fn encode_for_api(&self, client_ip: &str, proto: &str, body_len: usize) -> Vec<u8> {
        let mut out = self.encode_start(&["transfer-encoding", "content-length"]);
        out.extend_from_slice(format!("Content-Length: {body_len}\r\n").as_bytes());
        out.extend_from_slice(b"Connection: close\r\n");
        self.encode_end(out, client_ip, proto)
    }

    /// The request line and the headers that pass on, less `drop`.
    fn encode_start(&self, drop: &[&str]) -> Vec<u8> {
        let mut out = Vec::with_capacity(512);
        out.extend_from_slice(format!("{} {} HTTP/1.1\r\n", self.method, self.target).as_bytes());
        for (name, value) in &self.headers {
            if !passes_on(name, drop) {
                continue;
            }
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value);
            out.extend_from_slice(b"\r\n");
        }
        out
    }

    /// The forwarding headers and the blank line ending the head.
    fn encode_end(&self, mut out: Vec<u8>, client_ip: &str, proto: &str) -> Vec<u8> {
        let forwarded = format!(
            "X-Forwarded-For: {client_ip}\r\nX-Forwarded-Proto: {proto}\r\nX-Forwarded-Host: {}\r\n\r\n",
            self.header("host").unwrap_or("")
        );
        out.extend_from_slice(forwarded.as_bytes());
        out
    }

    /// Whether the request line and headers are plain ASCII (tiny_http reads nothing else).
    pub fn is_ascii(&self) -> bool {
        self.target.is_ascii()
            && self
                .headers
                .iter()
                .all(|(name, value)| name.is_ascii() && value.is_ascii())
    }
}

/// Whether a request header is sent onward (less the names in `drop`).
fn passes_on(name: &str, drop: &[&str]) -> bool {
    // The front door answers Expect itself, before reading the body.
    !(is_hop_by_hop(name)
        || is_forwarding(name)
        || name.eq_ignore_ascii_case("expect")
        || drop.iter().any(|d| name.eq_ignore_ascii_case(d)))
}

fn is_hop_by_hop(name: &str) -> bool {
    [
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
    ]
    .iter()
    .any(|h| name.eq_ignore_ascii_case(h))
}

fn is_forwarding(name: &str) -> bool {
    [
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "forwarded",
        "x-real-ip",
    ]
    .iter()
    .any(|h| name.eq_ignore_ascii_case(h))
}

/// Parse and check a request head against the smuggling rules.
pub fn parse_request(raw: &[u8]) -> Result<RequestHead, HeadError> {
    if raw.contains(&0) {
        return Err(HeadError::Bad("The request head contains a NUL byte."));
    }
    if raw
        .iter()
        .enumerate()
        .any(|(i, &b)| b == b'\n' && (i == 0 || raw[i - 1] != b'\r'))
    {
        return Err(HeadError::Bad(
            "The request head has a line ending in a bare LF; end lines with CRLF.",
        ));
    }
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut slots);
    match req.parse(raw) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => {
            return Err(HeadError::Bad("The request head is incomplete."))
        }
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(httparse::Error::HeaderName) => {
            return Err(HeadError::Bad(
                "A header name is malformed (no whitespace before the colon, no folded lines).",
            ))
        }
        Err(_) => return Err(HeadError::Bad("The request head is malformed.")),
    }
    let method = req.method.unwrap_or_default().to_string();
    let target = req.path.unwrap_or_default().to_string();
    let version = req.version.unwrap_or(1);
    if !(target.starts_with('/') || (method == "OPTIONS" && target == "*")) {
        return Err(HeadError::Bad(
            "The request target must be a path starting with /.",
        ));
    }
    let headers: Vec<(String, Vec<u8>)> = req
        .headers
        .iter()
        .map(|h| (h.name.to_string(), h.value.to_vec()))
        .collect();
    let values = |name: &str| -> Vec<&[u8]> {
        headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
            .collect()
    };
    let hosts = values("host");
    let host = match hosts.as_slice() {
        [one] => normalize_host(one).ok_or(HeadError::Bad("The Host header is malformed."))?,
        [] => return Err(HeadError::Bad("The request has no Host header.")),
        _ => return Err(HeadError::Bad("The request has more than one Host header.")),
    };
    let body = request_body(&values("transfer-encoding"), &values("content-length"))?;
    let connection: Vec<String> = values("connection")
        .iter()
        .flat_map(|v| {
            String::from_utf8_lossy(v)
                .split(',')
                .map(|t| t.trim().to_ascii_lowercase())
                .collect::<Vec<_>>()
        })
        .collect();
    let keep_alive = if version == 0 {
        connection.iter().any(|t| t == "keep-alive")
    } else {
        !connection.iter().any(|t| t == "close")
    };
    // Only an Upgrade that can be forwarded (text) makes an upgrade: the
    // service must see the same request the front door acts on.
    let upgrade = connection.iter().any(|t| t == "upgrade")
        && values("upgrade")
            .first()
            .is_some_and(|v| std::str::from_utf8(v).is_ok());
    Ok(RequestHead {
        method,
        target,
        headers,
        body,
        keep_alive,
        upgrade,
        host,
    })
}

/// Lowercased host with any port and a final dot (`app.example.com.` is the
/// same name in DNS) removed; None if it holds bytes no host has.
fn normalize_host(raw: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(raw).ok()?.trim();
    if text.is_empty()
        || !text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:[]_".contains(&b))
    {
        return None;
    }
    let host = if let Some(rest) = text.strip_prefix('[') {
        // IPv6 literal: keep the brackets' content.
        format!("[{}]", rest.split(']').next()?)
    } else {
        let name = text.split(':').next()?;
        let name = name.strip_suffix('.').unwrap_or(name);
        if name.is_empty() {
            return None;
        }
        name.to_string()
    };
    Some(host.to_ascii_lowercase())
}

/// The body framing of a request, refusing every ambiguous combination.
fn request_body(te: &[&[u8]], cl: &[&[u8]]) -> Result<Body, HeadError> {
    if !te.is_empty() {
        if !cl.is_empty() {
            return Err(HeadError::Bad(
                "The request has both Transfer-Encoding and Content-Length.",
            ));
        }
        let joined: Vec<u8> = te.join(&b","[..]);
        let text = String::from_utf8_lossy(&joined);
        if !text.trim().eq_ignore_ascii_case("chunked") {
            return Err(HeadError::Bad("Transfer-Encoding must be exactly chunked."));
        }
        return Ok(Body::Chunked);
    }
    let mut length = None;
    for value in cl {
        if value.is_empty() || value.len() > 18 || !value.iter().all(u8::is_ascii_digit) {
            return Err(HeadError::Bad("Content-Length must be a number."));
        }
        let n: u64 = String::from_utf8_lossy(value)
            .parse()
            .map_err(|_| HeadError::Bad("Content-Length must be a number."))?;
        if length.is_some_and(|l| l != n) {
            return Err(HeadError::Bad(
                "The request has differing Content-Length headers.",
            ));
        }
        length = Some(n);
    }
    Ok(match length {
        Some(0) | None => Body::None,
        Some(n) => Body::Length(n),
    })
}

/// A response head from the backend.
#[derive(Debug)]
pub struct ResponseHead {
    pub status: u16,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Body,
    /// The backend will keep the connection open after this response.
    pub keep_alive: bool,
}

impl ResponseHead {
    /// The head as sent to the client, saying whether the connection stays open.
    pub fn encode(&self, keep_alive: bool) -> Vec<u8> {
        let mut out = Vec::with_capacity(512);
        out.extend_from_slice(
            format!("HTTP/1.1 {} {}\r\n", self.status, reason(self.status)).as_bytes(),
        );
        for (name, value) in &self.headers {
            // Chunked framing wins; a Content-Length beside it must not reach
            // a client that might read it instead (RFC 9112 6.3).
            if self.body == Body::Chunked && name.eq_ignore_ascii_case("content-length") {
                continue;
            }
            if is_hop_by_hop(name)
                && !(self.status == 101
                    && (name.eq_ignore_ascii_case("upgrade")
                        || name.eq_ignore_ascii_case("connection")))
            {
                continue;
            }
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value);
            out.extend_from_slice(b"\r\n");
        }
        if self.status != 101 && !keep_alive {
            out.extend_from_slice(b"Connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out
    }
}

/// Parse a response head; `head_request` and the status decide whether a body follows.
pub fn parse_response(raw: &[u8], head_request: bool) -> io::Result<ResponseHead> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut res = httparse::Response::new(&mut slots);
    match res.parse(raw) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return Err(invalid("malformed response head from the backend")),
    }
    let status = res.code.unwrap_or(502);
    // httparse takes any three digits; below 100 is no status, and it would
    // be sent on as a malformed status line.
    if status < 100 {
        return Err(invalid("status code below 100 from the backend"));
    }
    let version = res.version.unwrap_or(1);
    // What framing and reuse need, read in place: every response passes here.
    let (mut coded, mut chunked, mut length) = (false, false, None);
    let (mut closes, mut keeps) = (false, false);
    for h in res.headers.iter() {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            // The last coding of the last header is what frames the body.
            let last = h.value.rsplit(|&b| b == b',').next().unwrap_or_default();
            chunked = last.trim_ascii().eq_ignore_ascii_case(b"chunked");
            coded = true;
        } else if h.name.eq_ignore_ascii_case("content-length") {
            for value in h.value.split(|&b| b == b',') {
                let n = std::str::from_utf8(value.trim_ascii())
                    .ok()
                    .and_then(|n| n.parse::<u64>().ok());
                // Differing lengths leave the body's end unknown (RFC 9112 6.3).
                if length.is_some_and(|l| l != n) {
                    return Err(invalid("differing Content-Length from the backend"));
                }
                length = Some(n);
            }
        } else if h.name.eq_ignore_ascii_case("connection") {
            for token in h.value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                closes |= token.eq_ignore_ascii_case(b"close");
                keeps |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        }
    }
    let body = if head_request || status < 200 || status == 204 || status == 304 {
        Body::None
    } else if chunked {
        Body::Chunked
    } else if coded {
        // Another final coding: the body runs until the close, whatever
        // Content-Length says (RFC 9112 §6.3).
        Body::UntilClose
    } else {
        match length {
            Some(Some(0)) => Body::None,
            Some(Some(n)) => Body::Length(n),
            Some(None) => return Err(invalid("bad Content-Length from the backend")),
            None => Body::UntilClose,
        }
    };
    let keep_alive = body != Body::UntilClose && !closes && (version == 1 || keeps);
    let headers: Vec<(String, Vec<u8>)> = res
        .headers
        .iter()
        .map(|h| (h.name.to_string(), h.value.to_vec()))
        .collect();
    Ok(ResponseHead {
        status,
        headers,
        body,
        keep_alive,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_fields_are_the_forwarded_heads_lines() {
        let raw = b"GET /ws HTTP/1.1\r\nHost: App.localhost:8080\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\nExpect: 100-continue\r\nX-Forwarded-For: 6.6.6.6\r\nX-Real-IP: 6.6.6.6\r\nTE: trailers\r\nCookie: a=b\r\nContent-Length: 0\r\n\r\n";
        let head = parse_request(raw).unwrap();
        let sent = head.encode_forwarded("10.1.1.1", "https");
        let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut parsed = httparse::Request::new(&mut slots);
        assert!(parsed.parse(&sent).unwrap().is_complete());
        let on_the_wire: Vec<(String, String)> = parsed
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_string(),
                    String::from_utf8_lossy(h.value).into_owned(),
                )
            })
            .collect();
        assert_eq!(head.forwarded_fields("10.1.1.1", "https"), on_the_wire);
        assert_eq!(head.host(), "app.localhost");
    }

    fn parse(raw: &str) -> Result<RequestHead, HeadError> {
        parse_request(raw.as_bytes())
    }

    fn refused(raw: &str) -> bool {
        matches!(parse(raw), Err(HeadError::Bad(_)))
    }

    #[test]
    fn a_plain_request_parses() {
        let head = parse("GET /a?b=1 HTTP/1.1\r\nHost: Api.Example.com:8080\r\n\r\n").unwrap();
        assert_eq!(head.method, "GET");
        assert_eq!(head.target, "/a?b=1");
        assert_eq!(
            normalize_host(b"Api.Example.com:8080").as_deref(),
            Some("api.example.com")
        );
        for dotted in [&b"Api.Example.com."[..], b"api.example.com.:8080"] {
            assert_eq!(normalize_host(dotted).as_deref(), Some("api.example.com"));
        }
        assert_eq!(normalize_host(b"."), None);
        assert_eq!(normalize_host(b".:80"), None);
        assert_eq!(head.body, Body::None);
        assert!(head.keep_alive);
        let head = parse("POST / HTTP/1.0\r\nHost: x\r\nContent-Length: 5\r\n\r\n").unwrap();
        assert_eq!(head.body, Body::Length(5));
        assert!(!head.keep_alive);
    }

    #[test]
    fn smuggling_shapes_are_refused() {
        let cases = [
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked,\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 5\r\n\r\n",
            "GET / HTTP/1.1\r\nHost : x\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n folded\r\n\r\n",
            "GET / HTTP/1.1\nHost: x\n\n",
            "GET / HTTP/1.1\r\nHost: x\nX: y\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\0\r\n\r\n",
            "GET / HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            "GET http://evil/ HTTP/1.1\r\nHost: x\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
        ];
        for case in cases {
            assert!(refused(case), "accepted {case:?}");
        }
        // Same-valued duplicate Content-Length is harmless.
        let head =
            parse("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n")
                .unwrap();
        assert_eq!(head.body, Body::Length(5));
        let head =
            parse("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked\r\n\r\n").unwrap();
        assert_eq!(head.body, Body::Chunked);
    }

    #[test]
    fn too_many_headers_is_too_large() {
        let mut raw = String::from("GET / HTTP/1.1\r\nHost: x\r\n");
        for i in 0..MAX_HEADERS {
            raw.push_str(&format!("X-{i}: 1\r\n"));
        }
        raw.push_str("\r\n");
        assert!(matches!(parse(&raw), Err(HeadError::TooLarge)));
    }

    #[test]
    fn the_api_gets_a_content_length_head_and_never_an_upgrade() {
        let head = parse(
            "POST /t HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nExpect: 100-continue\r\nX-Forwarded-For: 6.6.6.6\r\nX-A: b\r\n\r\n",
        )
        .unwrap();
        let out = String::from_utf8(head.encode_for_api("10.1.1.1", "http", 9)).unwrap();
        let lower = out.to_ascii_lowercase();
        for gone in ["transfer-encoding", "upgrade", "expect", "6.6.6.6"] {
            assert!(!lower.contains(gone), "{gone} in {out}");
        }
        // The client's Connection header is dropped; the API's own says close.
        assert_eq!(lower.matches("connection:").count(), 1, "{out}");
        assert!(out.contains("Connection: close\r\n"), "{out}");
        assert!(out.contains("Content-Length: 9\r\n"));
        assert!(out.contains("X-A: b\r\n"));
        assert!(out.ends_with(
            "X-Forwarded-For: 10.1.1.1\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: x\r\n\r\n"
        ));
        assert!(head.is_ascii());
        assert!(!parse("GET /caf\u{e9} HTTP/1.1\r\nHost: x\r\n\r\n").is_ok_and(|h| h.is_ascii()));
    }

    #[test]
    fn responses_tell_their_framing() {
        let r = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n", false).unwrap();
        assert_eq!((r.body, r.keep_alive), (Body::Length(4), true));
        let r = parse_response(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            false,
        )
        .unwrap();
        assert_eq!(r.body, Body::Chunked);
        let r = parse_response(b"HTTP/1.1 200 OK\r\n\r\n", false).unwrap();
        assert_eq!((r.body, r.keep_alive), (Body::UntilClose, false));
        let r = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n", true).unwrap();
        assert_eq!(r.body, Body::None);
        let r = parse_response(b"HTTP/1.1 204 No Content\r\n\r\n", false).unwrap();
        assert_eq!((r.body, r.keep_alive), (Body::None, true));
        // Chunked only as the last coding; a lookalike is not chunked.
        let r = parse_response(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n",
            false,
        )
        .unwrap();
        assert_eq!(r.body, Body::Chunked);
        let r = parse_response(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: xchunked\r\nContent-Length: 2\r\n\r\n",
            false,
        )
        .unwrap();
        assert_eq!((r.body, r.keep_alive), (Body::UntilClose, false));
        // Connection tokens in any case; HTTP/1.0 stays only when asked.
        let r = parse_response(
            b"HTTP/1.1 200 OK\r\nConnection: Keep-Alive, CLOSE\r\nContent-Length: 1\r\n\r\n",
            false,
        )
        .unwrap();
        assert!(!r.keep_alive);
        let r = parse_response(
            b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\n",
            false,
        )
        .unwrap();
        assert!(r.keep_alive);
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", false).is_err());
        let differing = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 30\r\n\r\n";
        assert!(parse_response(differing, false).is_err());
        let same = b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\n";
        assert_eq!(parse_response(same, false).unwrap().body, Body::Length(2));
        let both = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n";
        let r = parse_response(both, false).unwrap();
        assert_eq!(r.body, Body::Chunked);
        let sent = String::from_utf8(r.encode(true)).unwrap();
        assert!(
            !sent.to_ascii_lowercase().contains("content-length"),
            "{sent}"
        );
    }

    #[test]
    fn forwarding_replaces_client_supplied_forwarding_headers() {
        let head = parse("GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 6.6.6.6\r\nConnection: keep-alive\r\n\r\n").unwrap();
        let out = String::from_utf8(head.encode_forwarded("10.1.1.1", "http")).unwrap();
        assert!(!out.contains("6.6.6.6"));
        assert!(out.contains("X-Forwarded-For: 10.1.1.1\r\n"));
        assert!(!out.to_lowercase().contains("connection:"));
        assert!(out.ends_with("\r\n\r\n"));
    }
}
