//! `berth share`: open an HTTP or TCP tunnel from the server's relay to a local port.

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{sleep_until, timeout};
use tokio_rustls::TlsConnector;

use super::outln;
use crate::client::{error_from_response, Auth, Client};
use crate::config::{Masked, Session, Settings};
use crate::exit::{self, write_stderr, CliError, CliResult};
use crate::names::check_subdomain;
use crate::origin::server_origin;
use crate::proxy::{self, Body};
use crate::sync::lock;
use crate::tls;
use crate::wire::conn::Conn;
use crate::wire::control::Frames;
use crate::wire::duplex::splice;
use crate::wire::protocol::{Frame, PING_EVERY, SILENCE_LIMIT, UPGRADE};
use crate::GlobalArgs;

/// Longest wait for a TCP connection to the server or the local service.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for the server's answer to an upgrade request.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a data connection's id may be waited for on the server (its
/// `PENDING_TIMEOUT`): a busy server is asked again within it.
const ACCEPT_PATIENCE: Duration = Duration::from_secs(10);
/// The pause before asking a busy server again (its Retry-After).
const ACCEPT_RETRY: Duration = Duration::from_millis(250);
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
/// Threads of the event loop: a core each, a few at most (bulk TCP through
/// several connections is the only load that keeps more than one busy).
const MAX_WORKERS: usize = 4;

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
    let local: Arc<str> = format!("{}:{}", share.host, share.port).into();
    let claim = if share.tcp {
        Claim::Tcp(share.remote_port)
    } else {
        Claim::Http(share.subdomain)
    };
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get().min(MAX_WORKERS));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .thread_name("share")
        .enable_all()
        .build()
        .map_err(|e| CliError::other(format!("Could not start berth share's event loop: {e}.")))?;
    runtime.block_on(serve(Arc::new(server), claim, region, local, share.tcp))
}

/// Keep a control connection open, reconnecting with backoff, until the
/// server closes the tunnel on purpose or refuses the token.
async fn serve(
    server: Arc<Server>,
    mut claim: Claim,
    region: Option<String>,
    local: Arc<str>,
    tcp: bool,
) -> CliResult {
    let mut backoff = BACKOFF_START;
    let mut first = true;
    loop {
        match open_control(&server, &claim, region.as_deref()).await {
            Ok((frames, url)) => {
                // The server's words reach the terminal with controls escaped.
                let shown = printable(&url);
                if first && tcp {
                    outln!("Forwarding {shown} -> {local}");
                } else if first {
                    outln!("Forwarding {shown} -> http://{local}");
                } else {
                    write_stderr(&format!("Reconnected: {shown}\n"));
                }
                first = false;
                backoff = BACKOFF_START;
                claim = claim.keep(&url);
                let legs = Legs::new();
                let ended = run_control(frames, &server, &local, tcp, &legs).await;
                // Piped data connections have no idle timeout of their own: a
                // server that vanished without closing them must not hold them.
                // Those still open get the server's shutdown drain first.
                legs.close_after(LEGS_GRACE);
                match ended {
                    Ended::Lost(why) => write_stderr(&format!(
                        "Lost the connection to {}: {}\n",
                        server.url,
                        printable(&why)
                    )),
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
            Err(err) => write_stderr(&format!("{}\n", printable(&err.message))),
        }
        write_stderr(&format!(
            "Reconnecting in {} s (Ctrl-C to stop)\n",
            backoff.as_secs()
        ));
        tokio::time::sleep(backoff).await;
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
    async fn connect(&self) -> Result<Conn, CliError> {
        let tcp = self.connect_tcp().await?;
        let Some(config) = &self.tls else {
            return Ok(Conn::Tcp(tcp));
        };
        let failed = |e: &dyn std::fmt::Display| {
            let hint = if e.to_string().contains("certificate") {
                "; if the server uses a private CA, pass --ca-cert FILE (or set BERTH_CA_CERT)"
            } else {
                ""
            };
            CliError::other(format!(
                "could not reach server {}: TLS with {} failed: {e}{hint}",
                self.url, self.host
            ))
        };
        let name = ServerName::try_from(self.host.clone()).map_err(|e| failed(&e))?;
        let connector = TlsConnector::from(config.clone());
        let tcp = crate::wire::conn::Tallied::new(tcp);
        match timeout(HANDSHAKE_TIMEOUT, connector.connect(name, tcp)).await {
            Ok(Ok(tls)) => Ok(Conn::Tls(Box::new(tls.into()))),
            Ok(Err(e)) => Err(failed(&e)),
            Err(_) => Err(failed(&"no answer within 10 seconds")),
        }
    }

    /// A TCP connection to the server's address.
    async fn connect_tcp(&self) -> Result<TcpStream, CliError> {
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
        connect_any(&with_port).await.map_err(|e| unreachable(&e))
    }

    /// Open the data connection the server asked for with `id`. A server
    /// whose connections (or this address's) are full for the moment says so
    /// (503, 429): asked again after a moment, as long as the id may still
    /// be waited for.
    async fn accept(&self, id: &str) -> Result<(Conn, Vec<u8>), CliError> {
        let path = format!("/api/v1/tunnels/accept/{id}");
        let until = Instant::now() + ACCEPT_PATIENCE;
        loop {
            match self.upgrade_once(&path, false).await {
                Err((Some(429 | 503), _)) if Instant::now() + ACCEPT_RETRY < until => {
                    tokio::time::sleep(ACCEPT_RETRY).await;
                }
                other => return other.map_err(|(_, err)| err),
            }
        }
    }

    /// Send an upgrade request for `path`; after the 101, the connection and
    /// the bytes that came with the answer.
    async fn upgrade(&self, path: &str, bearer: bool) -> Result<(Conn, Vec<u8>), CliError> {
        self.upgrade_once(path, bearer)
            .await
            .map_err(|(_, err)| err)
    }

    /// `upgrade`, the error with the status that refused it, if one did.
    async fn upgrade_once(
        &self,
        path: &str,
        bearer: bool,
    ) -> Result<(Conn, Vec<u8>), (Option<u16>, CliError)> {
        let unanswered = |err| (None, err);
        let mut stream = self.connect().await.map_err(unanswered)?;
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
        let answer = async {
            stream.write_all(request.as_bytes()).await?;
            stream.flush().await?;
            read_head(&mut stream).await
        };
        // An answer that is not a berth server's HTTP says so, not why the parser balked.
        let not_berth = |what: &str| {
            CliError::other(format!(
                "the server {} answered with {what}; is it a berth server?",
                self.url
            ))
        };
        let (raw, mut rest) = match timeout(HANDSHAKE_TIMEOUT, answer).await {
            Ok(Err(e)) if e.kind() == io::ErrorKind::InvalidData => {
                return Err(unanswered(not_berth("a response head larger than 32 KiB")))
            }
            Ok(result) => result.map_err(|e| unanswered(lost(e)))?,
            Err(_) => {
                let silent = io::Error::other("no answer within 10 seconds");
                return Err(unanswered(lost(silent)));
            }
        };
        let response = proxy::parse_response(&raw, false)
            .map_err(|_| unanswered(not_berth("something other than an HTTP/1.1 response")))?;
        if response.status == 101 {
            return Ok((stream, rest));
        }
        if let Body::Length(n) = response.body {
            let want = n.min(MAX_ERROR_BODY) as usize;
            let more = async {
                let mut chunk = [0u8; 4096];
                while rest.len() < want {
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => rest.extend_from_slice(&chunk[..n]),
                    }
                }
            };
            let _ = timeout(HANDSHAKE_TIMEOUT, more).await;
            rest.truncate(want);
        } else {
            rest.clear();
        }
        let retry_after = response
            .headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("retry-after"))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned());
        let refusal = error_from_response(
            response.status,
            retry_after.as_deref(),
            &String::from_utf8_lossy(&rest),
        );
        Err((Some(response.status), refusal))
    }
}

/// An HTTP response head, read whole: its bytes and those that came after it.
async fn read_head(stream: &mut Conn) -> io::Result<(Vec<u8>, Vec<u8>)> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(at + 4);
            return Ok((buf, rest));
        }
        if buf.len() > proxy::MAX_HEAD_BYTES {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the answer's head is larger than 32 KiB",
            ));
        }
        match stream.read(&mut chunk).await? {
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            n => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Open the control connection; its frames and the public URL.
async fn open_control(
    server: &Server,
    claim: &Claim,
    region: Option<&str>,
) -> Result<(Frames<Conn>, String), CliError> {
    let mut path = claim.path();
    if let Some(region) = region {
        path.push_str(&format!("&region={}", query_value(region)));
    }
    let (stream, already) = server.upgrade(&path, true).await?;
    let mut frames = Frames::new(stream, already);
    match timeout(HANDSHAKE_TIMEOUT, frames.next()).await {
        Ok(Ok(Frame::Ready { url, .. })) => Ok((frames, url)),
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
async fn run_control(
    mut frames: Frames<Conn>,
    server: &Arc<Server>,
    local: &Arc<str>,
    tcp: bool,
    legs: &Legs,
) -> Ended {
    let mut heard = Instant::now();
    let mut pinged = Instant::now();
    // Request lines arrive gathered; they are printed in one write per gathering.
    let mut printed = String::new();
    loop {
        if !frames.has_frame() {
            write_stdout_lines(&printed);
            printed.clear();
        }
        let wake = (pinged + PING_EVERY).min(heard + SILENCE_LIMIT);
        let frame = tokio::select! {
            frame = frames.next() => Some(frame),
            () = sleep_until(wake.into()) => None,
        };
        let result = match frame {
            None => Ok(()),
            Some(Ok(Frame::Connect { id })) => {
                heard = Instant::now();
                let (server, local, legs) = (server.clone(), local.clone(), legs.clone());
                tokio::spawn(async move {
                    if tcp {
                        serve_tcp_connection(&server, &id, &local, &legs).await
                    } else {
                        serve_connection(&server, &id, &local, &legs).await
                    }
                });
                Ok(())
            }
            Some(Ok(Frame::Ping {})) => {
                heard = Instant::now();
                send(&mut frames, &Frame::Pong {}).await
            }
            Some(Ok(Frame::Closed { reason })) => {
                write_stdout_lines(&printed);
                return Ended::Closed(reason);
            }
            Some(Ok(Frame::Request {
                method,
                path,
                status,
                duration_ms,
                ..
            })) => {
                heard = Instant::now();
                let (method, path) = (printable(&method), printable(&path));
                printed.push_str(&format!("{method} {path} {status} {duration_ms}ms\n"));
                Ok(())
            }
            Some(Ok(_)) => {
                heard = Instant::now();
                Ok(())
            }
            Some(Err(e)) => return Ended::Lost(describe(&e)),
        };
        if let Err(e) = result {
            return Ended::Lost(describe(&e));
        }
        if heard.elapsed() >= SILENCE_LIMIT {
            return Ended::Lost("the server was silent for 60 seconds".into());
        }
        if pinged.elapsed() >= PING_EVERY {
            pinged = Instant::now();
            if let Err(e) = send(&mut frames, &Frame::Ping {}).await {
                return Ended::Lost(describe(&e));
            }
        }
    }
}

/// Write a frame to the control connection, giving up on a server that
/// takes nothing for as long as it may stay silent.
async fn send(frames: &mut Frames<Conn>, frame: &Frame) -> io::Result<()> {
    match timeout(SILENCE_LIMIT, frames.send(frame)).await {
        Ok(result) => result,
        Err(_) => Err(io::Error::other("the server took no data for 60 seconds")),
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
        "the server closed the connection".into()
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
async fn serve_connection(server: &Server, id: &str, local: &str, legs: &Legs) {
    let mut closed = legs.closed();
    tokio::select! {
        _ = closed.wait_for(|closed| *closed) => {}
        () = relay_requests(server, id, local, legs) => {}
    }
}

async fn relay_requests(server: &Server, id: &str, local: &str, legs: &Legs) {
    let Ok((mut data, mut first)) = server.accept(id).await else {
        return;
    };
    // Kept until the request took the connection dialled ahead, if it did.
    let mut dialled = None;
    if first.is_empty() {
        let parked_at = Instant::now();
        if legs.used_within(PREDIAL_WHILE_USED) {
            dialled = legs.dial_ahead(local).await;
        }
        let mut buf = vec![0u8; FIRST_READ];
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
            match timeout(wait, data.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => break n,
                Ok(_) => return,
                Err(_) => {}
            }
        };
        buf.truncate(n);
        first = buf;
    }
    legs.used();
    let ahead = legs.take_ahead().filter(silent_and_open);
    drop(dialled);
    let mut service = match ahead {
        Some(service) => service,
        None => match connect_any(local).await {
            Ok(service) => service,
            Err(e) => {
                return local_unreachable(&format!("could not reach http://{local}: {e}"));
            }
        },
    };
    if let Err(e) = service.write_all(&first).await {
        return local_unreachable(&format!("http://{local} did not take the request: {e}"));
    }
    drop(first);
    splice(&mut data, &mut service, None).await;
}

/// Whether nothing is waiting to be read on a connection made ahead of need
/// and its peer has not closed it: still good to use. Either would have
/// reached the event loop as readiness, so a peek that would wait says so.
fn silent_and_open(stream: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    let mut read = tokio::io::ReadBuf::new(&mut byte);
    stream.poll_peek(&mut cx, &mut read).is_pending()
}

/// The data connections of one control connection: losing the server closes
/// them all (see `Legs::close_after`).
#[derive(Clone)]
struct Legs {
    shared: Arc<LegsShared>,
}

struct LegsShared {
    /// Set once the data connections are to close.
    closed: watch::Sender<bool>,
    /// When a data connection last got its first request.
    last_used: Mutex<Option<Instant>>,
    /// The connection to the local service dialled ahead, if any, and which
    /// dialling it was (see `serve_connection`).
    ahead: Mutex<Option<(u64, TcpStream)>>,
    dialled: AtomicU64,
}

/// A connection dialled ahead, closed when this drops unless a request took it
/// (however the data connection that dialled it ends).
struct DialledAhead {
    legs: Legs,
    n: u64,
}

impl Drop for DialledAhead {
    fn drop(&mut self) {
        let mut ahead = lock(&self.legs.shared.ahead);
        if ahead.as_ref().is_some_and(|(which, _)| *which == self.n) {
            *ahead = None;
        }
    }
}

impl Legs {
    fn new() -> Legs {
        Legs {
            shared: Arc::new(LegsShared {
                closed: watch::Sender::new(false),
                last_used: Mutex::new(None),
                ahead: Mutex::new(None),
                dialled: AtomicU64::new(0),
            }),
        }
    }

    /// What a data connection watches to learn that it must close.
    fn closed(&self) -> watch::Receiver<bool> {
        self.shared.closed.subscribe()
    }

    /// A data connection got its first request now.
    fn used(&self) {
        *lock(&self.shared.last_used) = Some(Instant::now());
    }

    /// Whether a data connection got a request within `window`.
    fn used_within(&self, window: Duration) -> bool {
        lock(&self.shared.last_used).is_some_and(|at| at.elapsed() < window)
    }

    /// Dial the local service ahead unless a connection dialled ahead waits
    /// already. While the result lives, the connection may wait; dropping it
    /// closes the connection unless a request took it.
    async fn dial_ahead(&self, local: &str) -> Option<DialledAhead> {
        if lock(&self.shared.ahead).is_some() {
            return None;
        }
        let stream = connect_any(local).await.ok()?;
        let mut ahead = lock(&self.shared.ahead);
        if ahead.is_some() {
            return None;
        }
        let n = self.shared.dialled.fetch_add(1, Ordering::Relaxed);
        *ahead = Some((n, stream));
        Some(DialledAhead {
            legs: self.clone(),
            n,
        })
    }

    /// The connection dialled ahead, for a request.
    fn take_ahead(&self) -> Option<TcpStream> {
        lock(&self.shared.ahead).take().map(|(_, stream)| stream)
    }

    /// Close every data connection after `grace`.
    fn close_after(&self, grace: Duration) {
        let legs = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            legs.close_all();
        });
    }

    fn close_all(&self) {
        self.shared.closed.send_replace(true);
        *lock(&self.shared.ahead) = None;
    }
}

/// One public TCP connection: a data connection to the server piped raw to a
/// new connection to the local service; one line when it ends.
async fn serve_tcp_connection(server: &Server, id: &str, local: &str, legs: &Legs) {
    let mut closed = legs.closed();
    tokio::select! {
        _ = closed.wait_for(|closed| *closed) => {}
        () = relay_tcp(server, id, local) => {}
    }
}

async fn relay_tcp(server: &Server, id: &str, local: &str) {
    let started = Instant::now();
    let opened = crate::time_fmt::now();
    let short = printable(id.get(..8).unwrap_or(id));
    let (mut data, first) = match server.accept(id).await {
        Ok(pair) => pair,
        Err(err) => {
            outln!("tcp {short} not opened: {}", printable(&err.message));
            return;
        }
    };
    let mut service = match connect_any(local).await {
        Ok(stream) => stream,
        Err(e) => {
            // Closing the data connection closes the public one: raw TCP has no error page.
            outln!("tcp {short} closed: could not reach {local}: {e}");
            return;
        }
    };
    if !first.is_empty() && service.write_all(&first).await.is_err() {
        return;
    }
    let spliced = splice(&mut data, &mut service, None).await;
    let bytes_in = spliced.a_to_b + first.len() as u64;
    let bytes_out = spliced.b_to_a;
    let ms = started.elapsed().as_millis();
    outln!("tcp {short} opened {opened}: {bytes_in} bytes in, {bytes_out} bytes out, {ms}ms");
}

/// The local service cannot be had: say why here; the data connection
/// closes unanswered as it drops. The server then answers the visitor with
/// its own 502 page, which never shows the local address or the OS error.
fn local_unreachable(why: &str) {
    write_stderr(&format!("The visitor got 502: {why}\n"));
}

/// A TCP connection to `addr` (HOST:PORT), trying each address it resolves to.
async fn connect_any(addr: &str) -> io::Result<TcpStream> {
    let mut last = io::Error::other("no address");
    for addr in tokio::net::lookup_host(addr).await? {
        match timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Ok(Err(e)) => last = e,
            Err(_) => last = io::Error::new(io::ErrorKind::TimedOut, "connection timed out"),
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn losing_the_server_closes_every_data_connection_held() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let legs = Legs::new();
            let mut closed = [legs.closed(), legs.closed()];
            assert!(!*closed[0].borrow());
            legs.close_all();
            for watch in &mut closed {
                let told = timeout(Duration::from_secs(5), watch.wait_for(|c| *c)).await;
                assert!(told.is_ok_and(|r| r.is_ok()));
            }
            // A data connection that starts after the loss closes at once too.
            assert!(*legs.closed().borrow());
        });
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
