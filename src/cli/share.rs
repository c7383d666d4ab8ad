//! `berth share`: open an HTTP or TCP tunnel from the server's relay to a local port.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::outln;
use crate::client::{error_from_response, Auth, Client};
use crate::config::{Masked, Session, Settings};
use crate::exit::{self, write_stderr, CliError, CliResult};
use crate::names::check_subdomain;
use crate::origin::server_origin;
use crate::proxy::{self, Body, Conn};
use crate::sync::lock;
use crate::tls::{self, TlsStream};
use crate::wire::protocol::{self, Frame, FrameReader, PING_EVERY, SILENCE_LIMIT, UPGRADE};
use crate::wire::Stream;
use crate::GlobalArgs;
use rustls::ClientConfig;

/// Longest wait for a TCP connection to the server or the local service.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for the server's answer to an upgrade request.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest error body read from a refused upgrade.
const MAX_ERROR_BODY: u64 = 64 * 1024;
/// A parked data connection that gets no request this long is dropped (the
/// server's tending closes it sooner).
const LEG_IDLE_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// How long a parked data connection keeps the connection to the local service
/// dialled for it: well under the time servers give a silent new connection
/// (Apache's 20 s for a first byte is among the shortest), so the service has
/// not given up on it when the request comes.
const PREDIAL_KEEP: Duration = Duration::from_secs(10);
/// Parked data connections dial the local service ahead only this soon after
/// the tunnel's last request, so an idle tunnel does not keep dialling it.
const PREDIAL_WHILE_USED: Duration = Duration::from_secs(60);
/// The first read of a data connection: a whole small request in one go.
const FIRST_READ: usize = 16 * 1024;
/// How long data connections outlive the control connection they came with:
/// longer than the server's drain of requests in flight when it shuts down (10 s).
const LEGS_GRACE: Duration = Duration::from_secs(15);
/// First and longest wait between reconnection attempts.
const BACKOFF_START: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// What `berth share` was asked to do.
pub struct Share {
    pub port: u16,
    pub host: String,
    pub subdomain: Option<String>,
    /// The region to be served in (`--region`, else the config's `region`).
    pub region: Option<String>,
    /// A TCP tunnel (raw bytes) rather than HTTP.
    pub tcp: bool,
    /// The public port to ask for, with `tcp`.
    pub remote_port: Option<u16>,
    /// Follow the token's preferred server even to plain http on another host.
    pub follow_server: bool,
}

/// What the control connection claims; after a reconnect, the same again.
enum Claim {
    Http(Option<String>),
    Tcp(Option<u16>),
}

impl Claim {
    /// The control connection's path and query.
    fn path(&self) -> String {
        let mut path = "/api/v1/tunnels/connect?kind=".to_string();
        match self {
            Claim::Http(name) => {
                path.push_str("http");
                if let Some(name) = name {
                    path.push_str(&format!("&subdomain={name}"));
                }
            }
            Claim::Tcp(port) => {
                path.push_str("tcp");
                if let Some(port) = port {
                    path.push_str(&format!("&remote_port={port}"));
                }
            }
        }
        path
    }

    /// Keep what the server gave (`url`), so a reconnect asks for it again.
    fn keep(self, url: &str) -> Claim {
        match self {
            Claim::Http(name) => Claim::Http(subdomain_of(url).or(name)),
            Claim::Tcp(port) => Claim::Tcp(port_of(url).or(port)),
        }
    }
}

/// The server as a TCP address, a Host header and, for https, TLS settings.
#[derive(Clone)]
struct Server {
    url: String,
    authority: String,
    /// The host name the certificate must match (https only).
    host: String,
    tls: Option<Arc<ClientConfig>>,
    bearer: String,
}

pub fn run(global: &GlobalArgs, share: Share) -> CliResult {
    let session = Session::load(global)?;
    let token = session.settings.require_token()?;
    if let Some(note) = session.settings.token_note() {
        write_stderr(&format!("{note}\n"));
    }
    if let Some(Err(why)) = share.subdomain.as_deref().map(check_subdomain) {
        return Err(CliError::usage(why));
    }
    let url = preferred_server(&session.settings, &token.expose(), share.follow_server)?;
    let server = Server::parse(&url, session.settings.ca_cert.as_deref(), token.expose())?;
    let region = share
        .region
        .or(session.config.region.clone())
        .filter(|r| !r.is_empty());
    let local = format!("{}:{}", share.host, share.port);
    let tcp = share.tcp;
    let mut claim = if tcp {
        Claim::Tcp(share.remote_port)
    } else {
        Claim::Http(share.subdomain)
    };
    let mut backoff = BACKOFF_START;
    let mut first = true;
    loop {
        match open_control(&server, &claim, region.as_deref()) {
            Ok((control, frames, url)) => {
                if first && tcp {
                    outln!("Forwarding {url} -> {local}");
                } else if first {
                    outln!("Forwarding {url} -> http://{local}");
                } else {
                    write_stderr(&format!("Reconnected: {url}\n"));
                }
                first = false;
                backoff = BACKOFF_START;
                claim = claim.keep(&url);
                let legs = Legs::default();
                let ended = run_control(&control, frames, &server, &local, tcp, &legs);
                // Piped data connections have no idle timeout of their own: a
                // server that vanished without closing them must not hold them.
                // Those still open get the server's shutdown drain first.
                legs.close_after(LEGS_GRACE);
                match ended {
                    Ended::Lost(why) => {
                        write_stderr(&format!("Lost the connection to {}: {why}\n", server.url))
                    }
                    // Closed on purpose on the server: reconnecting would undo it.
                    Ended::Closed(reason) => {
                        return Err(CliError::other(format!(
                            "The server closed the tunnel: {reason}. Run berth share again to open a new one."
                        )))
                    }
                }
            }
            // A refused token will not get better by waiting.
            Err(err) if first || [exit::NOT_AUTHENTICATED, exit::FORBIDDEN].contains(&err.code) => {
                return Err(err)
            }
            Err(err) => write_stderr(&format!("{}\n", err.message)),
        }
        write_stderr(&format!(
            "Reconnecting in {} s (Ctrl-C to stop)\n",
            backoff.as_secs()
        ));
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

impl Server {
    fn parse(url: &str, ca_cert: Option<&Path>, bearer: String) -> Result<Server, CliError> {
        let (rest, secure) = match (url.strip_prefix("http://"), url.strip_prefix("https://")) {
            (Some(rest), _) => (rest, false),
            (_, Some(rest)) => (rest, true),
            _ => {
                return Err(CliError::usage(format!(
                    "Server `{url}` is not a URL; use e.g. --server https://berth.example:8443"
                )))
            }
        };
        let authority = rest.split('/').next().unwrap_or("").to_string();
        if authority.is_empty() {
            return Err(CliError::usage(format!("Server `{url}` has no host.")));
        }
        let host = match authority.rsplit_once(':') {
            Some((host, port)) if !port.contains(']') => host,
            _ => authority.as_str(),
        };
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let tls = if secure {
            Some(tls::client_config(
                tls::trusted(ca_cert).map_err(CliError::other)?,
            ))
        } else {
            None
        };
        Ok(Server {
            url: url.trim_end_matches('/').to_string(),
            authority,
            host,
            tls,
            bearer,
        })
    }

    /// A connection to the server, over TLS for https.
    fn connect(&self) -> Result<Stream, CliError> {
        let tcp = self.connect_tcp()?;
        let Some(config) = &self.tls else {
            return Ok(Stream::Tcp(tcp));
        };
        TlsStream::connect(config.clone(), &self.host, tcp)
            .map(Stream::Tls)
            .map_err(|e| {
                let hint = if e.to_string().contains("certificate") {
                    "; if the server uses a private CA, pass --ca-cert FILE (or set BERTH_CA_CERT)"
                } else {
                    ""
                };
                CliError::other(format!(
                    "could not reach server {}: TLS with {} failed: {e}{hint}",
                    self.url, self.host
                ))
            })
    }

    /// A TCP connection to the server's address.
    fn connect_tcp(&self) -> Result<TcpStream, CliError> {
        let unreachable = |e: &dyn std::fmt::Display| {
            CliError::other(format!("could not reach server {}: {e}", self.url))
        };
        let with_port = if self
            .authority
            .rsplit_once(':')
            .is_some_and(|(_, p)| !p.contains(']'))
        {
            self.authority.clone()
        } else {
            let port = if self.tls.is_some() { 443 } else { 80 };
            format!("{}:{port}", self.authority)
        };
        let addrs = with_port.to_socket_addrs().map_err(|e| unreachable(&e))?;
        let mut last = io::Error::other("no address");
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
                Ok(stream) => {
                    let _ = stream.set_nodelay(true);
                    return Ok(stream);
                }
                Err(e) => last = e,
            }
        }
        Err(unreachable(&last))
    }

    /// Send an upgrade request for `path`; the stream and its reader after the 101.
    fn upgrade(&self, path: &str, bearer: bool) -> Result<(Stream, Conn<Stream>), CliError> {
        let mut stream = self.connect()?;
        let lost = |e: io::Error| CliError::other(format!("lost the server {}: {e}", self.url));
        let auth = if bearer {
            format!("Authorization: Bearer {}\r\n", self.bearer)
        } else {
            String::new()
        };
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\n{auth}Connection: Upgrade\r\nUpgrade: {UPGRADE}\r\nUser-Agent: berth/{}\r\n\r\n",
            self.authority,
            env!("CARGO_PKG_VERSION")
        );
        stream.write_all(request.as_bytes()).map_err(lost)?;
        let mut reader = Conn::new(stream.try_clone().map_err(lost)?);
        let raw = reader
            .read_head(HANDSHAKE_TIMEOUT, &|t| stream.set_read_timeout(t))
            .map_err(|e| lost(io::Error::other(e.message())))?;
        let response = proxy::parse_response(&raw, false).map_err(lost)?;
        if response.status == 101 {
            return Ok((stream, reader));
        }
        let mut body = Vec::new();
        if let Body::Length(n) = response.body {
            let _ = (&mut reader)
                .take(n.min(MAX_ERROR_BODY))
                .read_to_end(&mut body);
        }
        let retry_after = response
            .headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("retry-after"))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned());
        Err(error_from_response(
            response.status,
            retry_after.as_deref(),
            &String::from_utf8_lossy(&body),
        ))
    }
}

/// Open the control connection; the stream, its frames and the public URL.
fn open_control(
    server: &Server,
    claim: &Claim,
    region: Option<&str>,
) -> Result<(Stream, FrameReader<Conn<Stream>>, String), CliError> {
    let mut path = claim.path();
    if let Some(region) = region {
        path.push_str(&format!("&region={}", query_value(region)));
    }
    let (stream, reader) = server.upgrade(&path, true)?;
    let mut frames = FrameReader::new(reader);
    match frames.read() {
        Ok(Frame::Ready { url, .. }) => Ok((stream, frames, url)),
        _ => Err(CliError::other(format!(
            "the server {} did not open the tunnel; is it a berth server?",
            server.url
        ))),
    }
}

/// A query value with everything but unreserved characters percent-encoded
/// (a region the server does not serve is refused with a message, never mangled).
fn query_value(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The server to share through: the token's preferred CLI server (from
/// `GET /api/v1/me`) when it is set, differs from the one the CLI was pointed
/// at, and `follow_preference` allows the move, saying so; else the one pointed
/// at. A refused token stops here with its own error; other failures leave the
/// choice to the connect.
fn preferred_server(settings: &Settings, bearer: &str, follow: bool) -> Result<String, CliError> {
    let pointed = settings.server.trim_end_matches('/').to_string();
    let client = Client::new(settings, Auth::Bearer(Masked::new(bearer)));
    let me = match client.and_then(|c| c.get("/api/v1/me", &[])) {
        Ok(me) => me,
        Err(err) if [exit::NOT_AUTHENTICATED, exit::FORBIDDEN].contains(&err.code) => {
            return Err(err)
        }
        Err(_) => return Ok(pointed),
    };
    let preferred = me["token"]["server"]
        .as_str()
        .map(|s| s.trim().trim_end_matches('/'))
        .filter(|s| !s.is_empty());
    match follow_preference(&pointed, preferred, follow).map_err(CliError::other)? {
        Some(url) => {
            write_stderr(&format!(
                "The token prefers the server {url}; sharing through it instead of {pointed}.\n"
            ));
            Ok(url)
        }
        None => Ok(pointed),
    }
}

/// Whether to move from the server the CLI was pointed at to the token's
/// preferred one (`Some(url)`), stay (`None`), or stop (the sentence saying
/// why). The bearer goes wherever `share` connects, so it moves on its own only
/// to https, or over plain http only to the very scheme, host and port it was
/// pointed at (another port on the same host may be another user's process);
/// never from https to plain http, even with `--follow-server`; and never to a
/// URL that could read as another host (`http://good.host@evil.host`).
fn follow_preference(
    pointed: &str,
    preferred: Option<&str>,
    follow: bool,
) -> Result<Option<String>, String> {
    let Some(url) = preferred.filter(|url| !url.eq_ignore_ascii_case(pointed)) else {
        return Ok(None);
    };
    let Some(to) = server_origin(url) else {
        return Err(format!(
            "The token prefers the server `{url}`, which is not a plain http:// or https:// URL of a host; berth share did not follow it. Clear the token's server, or pass --server URL."
        ));
    };
    let from = server_origin(pointed);
    // A pointed URL that does not parse still never downgrades from https.
    let from_tls = match &from {
        Some(origin) => origin.tls,
        None => pointed.to_ascii_lowercase().starts_with("https://"),
    };
    if from_tls && !to.tls {
        return Err(format!(
            "The token prefers the server {url}, plain http, but berth share never moves from https ({pointed}) to http, even with --follow-server; pass --server {url} yourself if you trust it."
        ));
    }
    if to.tls || from.as_ref() == Some(&to) || follow {
        return Ok(Some(url.to_string()));
    }
    Err(format!(
        "The token prefers the server {url}, plain http on another host or port than {pointed}; berth share did not send the token there. Pass --follow-server (berth share --follow-server ...) to share through it anyway."
    ))
}

/// The first label of a tunnel URL's host.
fn subdomain_of(url: &str) -> Option<String> {
    let host = url.split("://").nth(1)?;
    Some(host.split('.').next()?.to_string())
}

/// The port of a TCP tunnel's `tcp://HOST:PORT`.
fn port_of(url: &str) -> Option<u16> {
    url.strip_prefix("tcp://")?.rsplit_once(':')?.1.parse().ok()
}

/// How a control connection ended.
enum Ended {
    /// The connection was lost: reconnect.
    Lost(String),
    /// The server closed the tunnel on purpose (a `closed` frame): do not reconnect.
    Closed(String),
}

/// Serve the control connection until it ends; says why it ended.
fn run_control(
    control: &Stream,
    mut frames: FrameReader<Conn<Stream>>,
    server: &Server,
    local: &str,
    tcp: bool,
    legs: &Legs,
) -> Ended {
    if let Err(e) = control.set_read_timeout(Some(PING_EVERY)) {
        return Ended::Lost(e.to_string());
    }
    let mut writer = control;
    let mut heard = Instant::now();
    let mut pinged = Instant::now();
    // Request lines arrive gathered; they are printed in one write per gathering.
    let mut printed = String::new();
    loop {
        if !frames.has_frame() {
            write_stdout_lines(&printed);
            printed.clear();
        }
        let result = match frames.read() {
            Ok(Frame::Connect { id }) => {
                heard = Instant::now();
                let (server, local, legs) = (server.clone(), local.to_string(), legs.clone());
                let name = format!("share-{}", id.get(..8).unwrap_or(&id));
                let _ = std::thread::Builder::new().name(name).spawn(move || {
                    if tcp {
                        serve_tcp_connection(&server, &id, &local)
                    } else {
                        serve_connection(&server, &id, &local, &legs)
                    }
                });
                Ok(())
            }
            Ok(Frame::Ping {}) => {
                heard = Instant::now();
                protocol::write_frame(&mut writer, &Frame::Pong {})
            }
            Ok(Frame::Closed { reason }) => {
                write_stdout_lines(&printed);
                return Ended::Closed(reason);
            }
            Ok(Frame::Request {
                method,
                path,
                status,
                duration_ms,
                ..
            }) => {
                heard = Instant::now();
                let (method, path) = (printable(&method), printable(&path));
                printed.push_str(&format!("{method} {path} {status} {duration_ms}ms\n"));
                Ok(())
            }
            Ok(_) => {
                heard = Instant::now();
                Ok(())
            }
            Err(e) if protocol::is_timeout(&e) => Ok(()),
            Err(e) => return Ended::Lost(describe(&e)),
        };
        if let Err(e) = result {
            return Ended::Lost(describe(&e));
        }
        if heard.elapsed() >= SILENCE_LIMIT {
            return Ended::Lost("the server was silent for 60 seconds".into());
        }
        if pinged.elapsed() >= PING_EVERY {
            pinged = Instant::now();
            if let Err(e) = protocol::write_frame(&mut writer, &Frame::Ping {}) {
                return Ended::Lost(describe(&e));
            }
        }
    }
}

/// Print gathered request lines (each ending in a newline) in one write.
fn write_stdout_lines(lines: &str) {
    if !lines.is_empty() {
        super::write_stdout(lines);
    }
}

/// Text from the wire as a terminal may show it (see `safe::shown`).
fn printable(text: &str) -> String {
    super::safe::shown(text).into_owned()
}

fn describe(e: &io::Error) -> String {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        "the server closed the tunnel".into()
    } else {
        e.to_string()
    }
}

/// One public connection: a data connection to the server, piped byte for
/// byte to a connection to the local service. The server already checked and
/// framed every request (and answers 502 itself when the service goes quiet),
/// so nothing here parses HTTP; the per-request lines come from the server's
/// `request` frames, so they show what the inspector recorded.
///
/// Most data connections arrive ahead of need and wait parked for a public
/// connection. While the tunnel is in use (a request within
/// `PREDIAL_WHILE_USED`), a connection that parks also dials the local service
/// ahead, as a browser preconnects, so the next new connection's request does
/// not wait for the service to accept (a sizable share of the time to first
/// byte through a tunnel). There is one such connection per tunnel at most,
/// and the next request takes it, whichever data connection brings it: a
/// service that serves one connection at a time (`php -S`, a single sync
/// worker) may be blocked reading it, and a request sent over another would
/// wait until it was dropped. It is kept `PREDIAL_KEEP` at most, so an idle
/// tunnel soon holds none and dials nothing, and used only while the service
/// has said nothing on it: otherwise the request dials anew.
fn serve_connection(server: &Server, id: &str, local: &str, legs: &Legs) {
    let Ok((data, mut public)) = server.upgrade(&format!("/api/v1/tunnels/accept/{id}"), false)
    else {
        return;
    };
    let _held = legs.hold(id, &data);
    let parked_at = Instant::now();
    let mut dialled = if legs.used_within(PREDIAL_WHILE_USED) {
        legs.dial_ahead(local)
    } else {
        None
    };
    let mut first = vec![0u8; FIRST_READ];
    let n = loop {
        let waited = parked_at.elapsed();
        let wait = match dialled {
            Some(_) => PREDIAL_KEEP.saturating_sub(waited),
            None => LEG_IDLE_TIMEOUT.saturating_sub(waited),
        };
        if wait.is_zero() {
            if dialled.take().is_some() {
                continue;
            }
            return;
        }
        let _ = data.set_read_timeout(Some(wait));
        match public.read(&mut first) {
            Ok(n) if n > 0 => break n,
            // A signal during the wait is not the end of the connection.
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if protocol::is_timeout(&e) => {}
            _ => return,
        }
    };
    let _ = data.set_read_timeout(None);
    legs.used();
    let dialled = legs.take_ahead().filter(crate::wire::silent_and_open);
    let mut service = match dialled.map_or_else(|| connect_local(local), Ok) {
        Ok(service) => service,
        Err(e) => return local_unreachable(&data, &format!("could not reach http://{local}: {e}")),
    };
    if let Err(e) = service.write_all(&first[..n]) {
        return local_unreachable(
            &data,
            &format!("http://{local} did not take the request: {e}"),
        );
    }
    drop(first);
    let Ok(from_local) = service.try_clone() else {
        return;
    };
    crate::wire::pipe(public, data, from_local, Stream::Tcp(service), "share");
}

/// The data connections of one control connection, by id, so that losing the
/// server closes them all.
#[derive(Clone, Default)]
struct Legs {
    held: Arc<Mutex<HashMap<String, Stream>>>,
    /// When a data connection last got its first request.
    last_used: Arc<Mutex<Option<Instant>>>,
    /// The connection to the local service dialled ahead, if any, and which
    /// dialling it was (see `serve_connection`).
    ahead: Arc<Mutex<Option<(u64, TcpStream)>>>,
    dialled: Arc<AtomicU64>,
}

/// A connection dialled ahead, closed when this drops unless a request took it
/// (however the data connection that dialled it ends).
struct DialledAhead<'a> {
    legs: &'a Legs,
    n: u64,
}

impl Drop for DialledAhead<'_> {
    fn drop(&mut self) {
        let mut ahead = lock(&self.legs.ahead);
        if ahead.as_ref().is_some_and(|(which, _)| *which == self.n) {
            *ahead = None;
        }
    }
}

/// A data connection's place in `Legs`, given up when its thread ends.
struct Held<'a> {
    legs: &'a Legs,
    id: String,
}

impl Legs {
    /// A data connection got its first request now.
    fn used(&self) {
        *lock(&self.last_used) = Some(Instant::now());
    }

    /// Whether a data connection got a request within `window`.
    fn used_within(&self, window: Duration) -> bool {
        lock(&self.last_used).is_some_and(|at| at.elapsed() < window)
    }

    /// Dial the local service ahead unless a connection dialled ahead waits
    /// already. While the result lives, the connection may wait; dropping it
    /// closes the connection unless a request took it.
    fn dial_ahead(&self, local: &str) -> Option<DialledAhead<'_>> {
        if lock(&self.ahead).is_some() {
            return None;
        }
        let stream = connect_local(local).ok()?;
        let mut ahead = lock(&self.ahead);
        if ahead.is_some() {
            return None;
        }
        let n = self.dialled.fetch_add(1, Ordering::Relaxed);
        *ahead = Some((n, stream));
        Some(DialledAhead { legs: self, n })
    }

    /// The connection dialled ahead, for a request.
    fn take_ahead(&self) -> Option<TcpStream> {
        lock(&self.ahead).take().map(|(_, stream)| stream)
    }

    fn hold<'a>(&'a self, id: &str, data: &Stream) -> Held<'a> {
        if let Ok(clone) = data.try_clone() {
            lock(&self.held).insert(id.to_string(), clone);
        }
        Held {
            legs: self,
            id: id.to_string(),
        }
    }

    /// Close every held data connection after `grace`, on a thread of its own.
    fn close_after(&self, grace: Duration) {
        let legs = self.clone();
        let _ = std::thread::Builder::new()
            .name("share-legs".into())
            .spawn(move || {
                std::thread::sleep(grace);
                legs.close_all();
            });
    }

    fn close_all(&self) {
        for (_, data) in lock(&self.held).drain() {
            let _ = data.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        lock(&self.legs.held).remove(&self.id);
    }
}

/// One public TCP connection: a data connection to the server piped raw to a
/// new connection to the local service; one line when it ends.
fn serve_tcp_connection(server: &Server, id: &str, local: &str) {
    let started = Instant::now();
    let opened = crate::time_fmt::now();
    let short = id.get(..8).unwrap_or(id);
    let (data, from_server) = match server.upgrade(&format!("/api/v1/tunnels/accept/{id}"), false) {
        Ok(pair) => pair,
        Err(err) => {
            outln!("tcp {short} not opened: {}", err.message);
            return;
        }
    };
    let local_stream = match connect_local(local) {
        Ok(stream) => stream,
        Err(e) => {
            // Closing the data connection closes the public one: raw TCP has no error page.
            let _ = data.shutdown(std::net::Shutdown::Both);
            outln!("tcp {short} closed: could not reach {local}: {e}");
            return;
        }
    };
    let Ok(from_local) = local_stream.try_clone() else {
        return;
    };
    let _ = data.set_write_timeout(None);
    let name = format!("share-tcp-{short}");
    let (bytes_in, bytes_out) = crate::wire::splice(
        from_server,
        data,
        from_local,
        Stream::Tcp(local_stream),
        &name,
    );
    let ms = started.elapsed().as_millis();
    outln!("tcp {short} opened {opened}: {bytes_in} bytes in, {bytes_out} bytes out, {ms}ms");
}

/// The local service cannot be had: say why here, and close the data
/// connection unanswered. The server then answers the visitor with its own
/// 502 page, which never shows the local address or the OS error.
fn local_unreachable(data: &Stream, why: &str) {
    write_stderr(&format!("The visitor got 502: {why}\n"));
    let _ = data.shutdown(Shutdown::Both);
}

fn connect_local(local: &str) -> io::Result<TcpStream> {
    let mut last = io::Error::other("no address");
    for addr in local.to_socket_addrs()? {
        match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn losing_the_server_closes_every_data_connection_held() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let data = Stream::Tcp(TcpStream::connect(listener.local_addr().unwrap()).unwrap());
        let (mut far, _) = listener.accept().unwrap();
        let legs = Legs::default();
        let held = legs.hold("a1", &data);
        legs.hold("b2", &data);
        assert_eq!(
            lock(&legs.held).len(),
            1,
            "a finished leg gives up its place"
        );
        legs.close_all();
        assert_eq!(far.read(&mut [0u8; 8]).unwrap(), 0, "closed");
        assert!(lock(&legs.held).is_empty());
        drop(held);
    }

    #[test]
    fn request_lines_never_carry_control_characters() {
        assert_eq!(printable("/a\u{1b}[2Jb\n"), "/a\\x1b[2Jb\\x0a");
        assert_eq!(printable("/\u{9b}\u{202e}"), "/\\u{9b}\\u{202e}");
        assert_eq!(printable("/ünï?x=1"), "/ünï?x=1");
    }

    #[test]
    fn claims_ask_for_their_kind_and_keep_what_they_got() {
        assert_eq!(
            Claim::Http(None).path(),
            "/api/v1/tunnels/connect?kind=http"
        );
        let http = Claim::Http(None).keep("http://calm-otter-4821.localhost:8080");
        assert_eq!(
            http.path(),
            "/api/v1/tunnels/connect?kind=http&subdomain=calm-otter-4821"
        );
        assert_eq!(Claim::Tcp(None).path(), "/api/v1/tunnels/connect?kind=tcp");
        let tcp = Claim::Tcp(None).keep("tcp://berth.example:20007");
        assert_eq!(
            tcp.path(),
            "/api/v1/tunnels/connect?kind=tcp&remote_port=20007"
        );
        assert_eq!(port_of("tcp://[::1]:20001"), Some(20001));
        assert_eq!(port_of("http://a.localhost:8080"), None);
        assert_eq!(port_of("tcp://localhost"), None);
    }

    #[test]
    fn the_token_s_server_is_followed_only_where_the_bearer_stays_safe() {
        let here = "http://berth.lan:8080";
        let tls = "https://berth.lan:8443";
        // (pointed, preferred, --follow-server, expected: Ok(Some) move, Ok(None) stay, Err stop)
        type Case<'a> = (&'a str, Option<&'a str>, bool, Result<Option<&'a str>, ()>);
        let cases: [Case; 16] = [
            (here, None, false, Ok(None)),
            (here, Some("HTTP://BERTH.LAN:8080"), false, Ok(None)),
            (
                here,
                Some("https://eu.example"),
                false,
                Ok(Some("https://eu.example")),
            ),
            (here, Some("http://berth.lan:9090"), false, Err(())),
            (
                here,
                Some("http://berth.lan:8080/berth"),
                false,
                Ok(Some("http://berth.lan:8080/berth")),
            ),
            (
                here,
                Some("http://berth.lan:8080@evil.example"),
                true,
                Err(()),
            ),
            (here, Some("https://berth.lan@evil.example"), false, Err(())),
            (here, Some("http://BERTH.lan.:8080"), false, Err(())),
            (
                "http://[::1]:8080",
                Some("http://[::1]:8080/x"),
                false,
                Ok(Some("http://[::1]:8080/x")),
            ),
            (
                "http://[::1]:8080",
                Some("http://[::1]:8081"),
                false,
                Err(()),
            ),
            (here, Some("http://evil.example"), false, Err(())),
            (
                here,
                Some("http://evil.example"),
                true,
                Ok(Some("http://evil.example")),
            ),
            (
                tls,
                Some("https://other.example"),
                false,
                Ok(Some("https://other.example")),
            ),
            (tls, Some("http://berth.lan:8080"), false, Err(())),
            (tls, Some("http://evil.example"), true, Err(())),
            (here, Some("ftp://evil.example"), true, Err(())),
        ];
        for (pointed, preferred, follow, expected) in cases {
            let got = follow_preference(pointed, preferred, follow);
            assert_eq!(
                got.as_ref().map(|o| o.as_deref()).map_err(|_| ()),
                expected,
                "{pointed} -> {preferred:?} (follow {follow}): {got:?}"
            );
        }
        let why = follow_preference(here, Some("http://evil.example:81"), false).unwrap_err();
        assert!(why.contains("http://evil.example:81") && why.contains("--follow-server"));
    }
}
