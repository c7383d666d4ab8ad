//! The relay's side of the front door: control connections (`tunnels/connect`),
//! data connections (`tunnels/accept/{id}`) and public requests to `NAME.DOMAIN`.

use std::io::{self, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::protocol::{self, Frame, FrameReader, PING_EVERY, SILENCE_LIMIT, UPGRADE};
use super::{ClaimError, Relay, Tunnel, SWITCHING};
use crate::api::ApiError;
use crate::auth::{self, Action, Auth, Principal};
use crate::proxy::{self, Body, Conn, RequestHead};
use crate::store::{NewAuditEvent, NewTunnel, Store};

/// How long a tunnel's client may take to start answering a request.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);

/// A data connection to a tunnel's client, kept across requests of one public connection.
pub struct Leg {
    subdomain: String,
    reader: Conn<TcpStream>,
    writer: TcpStream,
}

/// What became of the public connection after a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Forwarded {
    KeepAlive,
    Close,
    /// Answered without reading the request body: close after lingering.
    Refused,
}

/// Write a JSON error of the API's shape.
fn refuse(out: &mut impl Write, err: ApiError) -> io::Result<()> {
    let (status, code, message) = err.parts();
    out.write_all(&proxy::error_response(status, code, &message))?;
    out.flush()
}

/// Whether the head asks to upgrade to the relay protocol.
fn wants_relay(head: &RequestHead) -> bool {
    head.upgrade
        && head
            .header("upgrade")
            .is_some_and(|u| u.trim().eq_ignore_ascii_case(UPGRADE))
}

/// A query parameter's value (tunnel names and ids need no percent-decoding).
fn query<'a>(target: &'a str, name: &str) -> Option<&'a str> {
    let (_, query) = target.split_once('?')?;
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
        .filter(|value| !value.is_empty())
}

/// What a control connection asks for: `kind`, with `subdomain` or `remote_port`.
#[derive(Clone, Copy)]
enum Wanted<'a> {
    Http(Option<&'a str>),
    Tcp(Option<u16>),
}

impl<'a> Wanted<'a> {
    /// Read the query; a bad `kind` or a parameter of the other kind is a 400.
    fn parse(target: &'a str) -> Result<Wanted<'a>, ApiError> {
        let subdomain = query(target, "subdomain");
        let port = query(target, "remote_port");
        match query(target, "kind") {
            None | Some("http") if port.is_some() => Err(ApiError::BadRequest(
                "remote_port is for kind=tcp only; add --tcp or leave out --remote-port.".into(),
            )),
            None | Some("http") => Ok(Wanted::Http(subdomain)),
            Some("tcp") if subdomain.is_some() => Err(ApiError::BadRequest(
                "subdomain is for kind=http only; leave out --subdomain with --tcp.".into(),
            )),
            Some("tcp") => match port.map(str::parse::<u16>) {
                None => Ok(Wanted::Tcp(None)),
                Some(Ok(port)) if port > 0 => Ok(Wanted::Tcp(Some(port))),
                Some(_) => Err(ApiError::BadRequest(
                    "remote_port must be a port number from 1 to 65535.".into(),
                )),
            },
            Some(_) => Err(ApiError::BadRequest("kind must be http or tcp.".into())),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Wanted::Http(_) => "http",
            Wanted::Tcp(_) => "tcp",
        }
    }
}

/// `GET /api/v1/tunnels/connect`: check the token, claim the subdomain or port,
/// answer 101 and `ready`, then keep the control connection until it closes.
pub fn serve_control(
    relay: &Arc<Relay>,
    auth: &Auth,
    head: &RequestHead,
    stream: &TcpStream,
    client: &mut Conn<TcpStream>,
    peer: SocketAddr,
) -> io::Result<()> {
    let mut out = stream;
    if !wants_relay(head) {
        let why = format!("Send Connection: Upgrade and Upgrade: {UPGRADE}.");
        return refuse(&mut out, ApiError::BadRequest(why));
    }
    let bearer = head
        .header("authorization")
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(bearer) = bearer else {
        return refuse(&mut out, ApiError::NoToken);
    };
    let principal = match auth.verify_token(bearer, &peer.ip().to_string()) {
        Ok(principal) => principal,
        Err(err) => return refuse(&mut out, err.into()),
    };
    let Some(membership) = principal.token_context.as_ref() else {
        return refuse(&mut out, ApiError::NoTeamContext);
    };
    if !auth::allows(membership.role, &principal.scopes(), Action::ShareTunnels) {
        let why = "Opening tunnels needs the member role or above and the tunnels:share scope.";
        return refuse(&mut out, ApiError::Forbidden(why.into()));
    }
    let wanted = match Wanted::parse(&head.target) {
        Ok(wanted) => wanted,
        Err(err) => return refuse(&mut out, err),
    };
    let token_id = principal.token().map_or(0, |t| t.id);
    let record = History {
        store: auth.store(),
        crew_id: membership.crew.id,
        principal: &principal,
        address: peer.ip().to_string(),
    };
    let mut opened = None;
    let control = stream.try_clone()?;
    let on_claim = |tunnel: &Tunnel| {
        let url = match wanted {
            Wanted::Http(_) => relay.url_of(&tunnel.subdomain),
            Wanted::Tcp(_) => relay.tcp_url(tunnel.subdomain.parse().unwrap_or(0)),
        };
        record.opened(tunnel, wanted.kind(), &url);
        opened = Some(tunnel.id.clone());
    };
    let claimed = match wanted {
        Wanted::Http(name) => relay.claim(name, control, token_id, on_claim),
        Wanted::Tcp(port) => relay.tcp.claim(relay, port, control, token_id, on_claim),
    };
    let tunnel = match claimed {
        Ok(tunnel) => tunnel,
        Err(ClaimError::Invalid(why)) => return refuse(&mut out, ApiError::BadRequest(why)),
        Err(ClaimError::Taken(why)) => return refuse(&mut out, ApiError::Conflict(why)),
        Err(ClaimError::Gone) => {
            if let Some(id) = opened {
                record.closed(&id);
            }
            return Ok(());
        }
    };
    let result = control_loop(&tunnel, stream, client, (PING_EVERY, SILENCE_LIMIT));
    relay.release(&tunnel);
    tunnel.close();
    record.closed(&tunnel.id);
    result
}

/// Writes a tunnel's history row and its `tunnel.open` / `tunnel.close` audit events.
struct History<'a> {
    store: &'a Store,
    crew_id: i64,
    principal: &'a Principal,
    address: String,
}

impl History<'_> {
    /// A TCP tunnel's row holds its port in `subdomain`.
    fn opened(&self, tunnel: &Tunnel, kind: &str, url: &str) {
        let row = NewTunnel {
            id: &tunnel.id,
            crew_id: self.crew_id,
            user_id: self.principal.user.id,
            token_id: tunnel.token_id,
            kind,
            subdomain: &tunnel.subdomain,
            url,
        };
        if let Err(err) = self.store.tunnels().open(&row) {
            eprintln!("berth: could not record tunnel {}: {err}", tunnel.id);
        }
        self.audit("tunnel.open", format!("tunnel {} {url}", tunnel.id));
    }

    /// Record the close, unless someone (an admin, a revocation) already did.
    fn closed(&self, id: &str) {
        match self.store.tunnels().close(id) {
            Ok(true) => self.audit("tunnel.close", format!("tunnel {id}")),
            Ok(false) => {}
            Err(err) => eprintln!("berth: could not record tunnel {id} closed: {err}"),
        }
    }

    fn audit(&self, action: &str, detail: String) {
        let event = NewAuditEvent {
            crew_id: Some(self.crew_id),
            user_id: Some(self.principal.user.id),
            username: Some(&self.principal.user.username),
            token_id: self.principal.token().map(|t| t.id),
            action,
            detail,
            address: Some(&self.address),
        };
        if let Err(err) = self.store.audit().record(&event) {
            eprintln!("berth: could not record audit event {action}: {err}");
        }
    }
}

/// Ping every `ping_every`, answer pings, and end after `silence` without a word.
fn control_loop(
    tunnel: &super::Tunnel,
    stream: &TcpStream,
    client: &mut Conn<TcpStream>,
    (ping_every, silence): (Duration, Duration),
) -> io::Result<()> {
    stream.set_read_timeout(Some(ping_every))?;
    let mut frames = FrameReader::new(client);
    let mut heard = Instant::now();
    let mut pinged = Instant::now();
    loop {
        match frames.read() {
            Ok(Frame::Ping {}) => {
                heard = Instant::now();
                tunnel.send(&Frame::Pong {})?;
            }
            Ok(_) => heard = Instant::now(),
            Err(e) if protocol::is_timeout(&e) => {}
            Err(e) => return Err(e),
        }
        if heard.elapsed() >= silence {
            return Ok(());
        }
        if pinged.elapsed() >= ping_every {
            pinged = Instant::now();
            tunnel.send(&Frame::Ping {})?;
        }
    }
}

/// `GET /api/v1/tunnels/accept/{id}`: answer 101 and hand the connection to
/// the public connection waiting for it. Returns whether it was handed over.
pub fn serve_accept(relay: &Relay, head: &RequestHead, id: &str, stream: &TcpStream) -> bool {
    let mut out = stream;
    if !wants_relay(head) {
        let why = format!("Send Connection: Upgrade and Upgrade: {UPGRADE}.");
        let _ = refuse(&mut out, ApiError::BadRequest(why));
        return false;
    }
    if !relay.is_pending(id) {
        let why = "No public connection waits for this id; it may have expired.";
        let _ = refuse(&mut out, ApiError::NotFound(why.into()));
        return false;
    }
    let Ok(handed) = stream.try_clone() else {
        return false;
    };
    if out.write_all(SWITCHING.as_bytes()).is_err() {
        return false;
    }
    match relay.deliver(id, handed) {
        Ok(()) => true,
        Err(stream) => {
            let _ = stream.shutdown(Shutdown::Both);
            false
        }
    }
}

/// One public request to `host` (a name under the relay's domain), forwarded
/// through the tunnel's client and its response streamed back.
#[allow(clippy::too_many_arguments)]
pub fn forward(
    relay: &Relay,
    head: &RequestHead,
    host: &str,
    client: &mut Conn<TcpStream>,
    client_stream: &TcpStream,
    out: &mut impl Write,
    leg: &mut Option<Leg>,
    peer: SocketAddr,
) -> io::Result<Forwarded> {
    let subdomain = relay.subdomain_of(host).unwrap_or_default();
    let Some(tunnel) = relay.find(subdomain) else {
        out.write_all(&page(404, &format!("No tunnel is open at {host}.")))?;
        return Ok(Forwarded::Refused);
    };
    if leg.as_ref().is_some_and(|l| l.subdomain != subdomain) {
        *leg = None;
    }
    if leg.is_none() {
        let Some(data) = relay.open_data(&tunnel) else {
            let why = format!("The tunnel at {host} did not answer in time; try again.");
            out.write_all(&page(502, &why))?;
            return Ok(Forwarded::Refused);
        };
        data.set_read_timeout(Some(RESPONSE_TIMEOUT))?;
        *leg = Some(Leg {
            subdomain: subdomain.to_string(),
            reader: Conn::new(data.try_clone()?),
            writer: data,
        });
    }
    let Some(data) = leg.as_mut() else {
        return Ok(Forwarded::Close);
    };
    let result = exchange(head, client, client_stream, out, data, peer);
    match result {
        Ok(Some(forwarded)) => {
            if forwarded != Forwarded::KeepAlive {
                *leg = None;
            }
            Ok(forwarded)
        }
        Ok(None) => {
            *leg = None;
            let why = format!("The service behind {host} did not answer.");
            out.write_all(&page(502, &why))?;
            Ok(Forwarded::Close)
        }
        Err(err) => {
            *leg = None;
            Err(err)
        }
    }
}

/// Send the request on the leg and stream the response back; `None` when the
/// leg failed before any response byte reached the client.
fn exchange(
    head: &RequestHead,
    client: &mut Conn<TcpStream>,
    client_stream: &TcpStream,
    out: &mut impl Write,
    leg: &mut Leg,
    peer: SocketAddr,
) -> io::Result<Option<Forwarded>> {
    let continues = head
        .header("expect")
        .is_some_and(|e| e.eq_ignore_ascii_case("100-continue"));
    if leg
        .writer
        .write_all(&head.encode_forwarded(&peer.ip().to_string(), "http"))
        .is_err()
    {
        return Ok(None);
    }
    if continues && head.body != Body::None {
        out.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        out.flush()?;
    }
    if let Err(err) = proxy::copy_body(head.body, client, &mut leg.writer) {
        // Broken chunk framing is the client's fault and no response has started.
        if err.kind() != io::ErrorKind::InvalidData {
            return Err(err);
        }
        let why = "The chunked request body is malformed.";
        out.write_all(&proxy::error_response(400, "bad_request", why))?;
        return Ok(Some(Forwarded::Refused));
    }
    let writer = &leg.writer;
    let response = loop {
        let raw = leg
            .reader
            .read_head(RESPONSE_TIMEOUT, &|t| writer.set_read_timeout(t));
        let Ok(raw) = raw else { return Ok(None) };
        let Ok(response) = proxy::parse_response(&raw, head.method == "HEAD") else {
            return Ok(None);
        };
        if response.status >= 200 || response.status == 101 {
            break response;
        }
    };
    if response.status == 101 {
        if !head.upgrade {
            return Ok(None);
        }
        out.write_all(&response.encode(true))?;
        out.flush()?;
        let public = std::mem::replace(client, Conn::new(client_stream.try_clone()?));
        let back = std::mem::replace(&mut leg.reader, Conn::new(leg.writer.try_clone()?));
        let data = leg.writer.try_clone()?;
        super::pipe(public, client_stream.try_clone()?, back, data, "upgrade");
        return Ok(Some(Forwarded::Close));
    }
    let keep = response.keep_alive && head.keep_alive;
    out.write_all(&response.encode(keep))?;
    proxy::copy_body(response.body, &mut leg.reader, out)?;
    Ok(Some(if keep {
        Forwarded::KeepAlive
    } else {
        Forwarded::Close
    }))
}

/// A small HTML page for the public side, closing the connection.
fn page(status: u16, message: &str) -> Vec<u8> {
    let reason = proxy::reason(status);
    let text = message
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    let body = format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{status} {reason}</title></head>\n<body><h1>{status} {reason}</h1><p>{text}</p><p>berth</p></body></html>\n"
    );
    format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader};
    use std::net::TcpListener;
    use std::sync::Arc;

    /// A claimed tunnel's server side and the client's end of its control connection.
    fn control_pair(relay: &Relay) -> (Arc<super::super::Tunnel>, TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let tunnel = relay
            .claim(Some("quiet"), server.try_clone().unwrap(), 1, |_| {})
            .unwrap();
        (tunnel, server, client)
    }

    #[test]
    fn a_silent_client_is_pinged_then_dropped() {
        let relay = Relay::new("localhost", "http://localhost:8080");
        let (tunnel, server, client) = control_pair(&relay);
        let timing = (Duration::from_millis(50), Duration::from_millis(300));
        let started = Instant::now();
        let mut reader = Conn::new(server.try_clone().unwrap());
        control_loop(&tunnel, &server, &mut reader, timing).unwrap();
        assert!(started.elapsed() >= timing.1);
        let mut lines = BufReader::new(client);
        let mut line = String::new();
        while line != "\r\n" {
            line.clear();
            lines.read_line(&mut line).unwrap();
        }
        line.clear();
        lines.read_line(&mut line).unwrap();
        assert!(line.starts_with("{\"ready\""), "{line}");
        line.clear();
        lines.read_line(&mut line).unwrap();
        assert_eq!(line, "{\"ping\":{}}\n");
    }

    #[test]
    fn a_client_that_answers_stays_and_gets_pongs() {
        let relay = Relay::new("localhost", "http://localhost:8080");
        let (tunnel, server, mut client) = control_pair(&relay);
        let timing = (Duration::from_millis(50), Duration::from_millis(300));
        let looping = std::thread::spawn(move || {
            let mut reader = Conn::new(server.try_clone().unwrap());
            let started = Instant::now();
            let _ = control_loop(&tunnel, &server, &mut reader, timing);
            started.elapsed()
        });
        let mut lines = BufReader::new(client.try_clone().unwrap());
        let mut pongs = 0;
        let until = Instant::now() + Duration::from_millis(900);
        while Instant::now() < until {
            protocol::write_frame(&mut client, &Frame::Ping {}).unwrap();
            let mut line = String::new();
            while !line.starts_with("{\"pong\"") {
                line.clear();
                lines.read_line(&mut line).unwrap();
            }
            pongs += 1;
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(pongs >= 5, "{pongs}");
        drop(client);
        drop(lines);
        // Alive past the silence limit while it heard pings; ends once the client goes.
        assert!(looping.join().unwrap() >= Duration::from_millis(900));
    }
}
