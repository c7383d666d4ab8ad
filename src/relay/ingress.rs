//! The relay's side of the front door: control connections (`tunnels/connect`),
//! data connections (`tunnels/accept/{id}`) and public requests to `NAME.DOMAIN`.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::Notify;

use super::{
    quota, Carrying, ClaimError, Outbox, Owner, Relay, Tunnel, CONTROL_WRITE_TIMEOUT, SWITCHING,
};
use crate::api_error::ApiError;
use crate::auth::{self, Action, Auth};
use crate::inspect::{self, Record};
use crate::proxy::forward::{self, Observed, Outcome, Upstream};
use crate::proxy::{self, Conn, RequestHead};
use crate::store::{NewAuditEvent, NewTunnel, Store};
use crate::wire;
use crate::wire::control::Frames;
use crate::wire::protocol::{Frame, PING_EVERY, SILENCE_LIMIT, UPGRADE};

/// A public connection's tie to the one tunnel it reaches, for its life: a
/// later request on it for any other tunnel (another tunnel may take the name
/// once this one closed) closes it unanswered. Holds the data connection kept
/// across its requests.
pub struct Leg {
    tunnel: Arc<Tunnel>,
    /// The public connection, among those the tunnel cuts when it closes:
    /// from its first data connection on (a request still waiting for its
    /// first one gets a 502 page when the tunnel closes, not a cut).
    public: Option<Carrying>,
    data: Option<Upstream>,
}

/// The public side of the front door: a client's connection.
pub type Client = Conn<wire::conn::Conn>;

/// Write a JSON error of the API's shape.
async fn refuse<W: AsyncWrite + Unpin>(out: &mut W, err: ApiError) -> io::Result<()> {
    let (status, code, message) = err.parts();
    out.write_all(&proxy::error_response(status, code, &message))
        .await?;
    out.flush().await
}

/// Run SQLite work from a task: on a worker the runtime may do without for
/// a moment (the store's calls take milliseconds at most).
fn blocking<T>(work: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(work)
        }
        _ => work(),
    }
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

/// A tunnel opened on a control connection, for [`run_control`].
pub struct Opened {
    tunnel: Arc<Tunnel>,
    record: History,
}

/// `GET /api/v1/tunnels/connect`: check the token, claim the subdomain or
/// port, and queue the 101 and `ready`; the connection is then the tunnel's
/// (see [`run_control`]). Refused: a JSON error of the API's shape is
/// written to `client`, and None.
pub async fn open_control(
    relay: &Arc<Relay>,
    auth: &Auth,
    head: &RequestHead,
    client: &mut Client,
    peer: SocketAddr,
) -> io::Result<Option<Opened>> {
    let opened = blocking(|| claim_for(relay, auth, head, peer));
    match opened {
        Ok(opened) => Ok(Some(opened)),
        Err(err) => refuse(client, err).await.map(|()| None),
    }
}

/// The checks and the claim of `open_control`, with the store's work.
fn claim_for(
    relay: &Arc<Relay>,
    auth: &Auth,
    head: &RequestHead,
    peer: SocketAddr,
) -> Result<Opened, ApiError> {
    if !wants_relay(head) {
        let why = format!("Send Connection: Upgrade and Upgrade: {UPGRADE}.");
        return Err(ApiError::BadRequest(why));
    }
    let bearer = head
        .header("authorization")
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(bearer) = bearer else {
        return Err(ApiError::NoToken);
    };
    let principal = auth.verify_token(bearer, &peer.ip().to_string())?;
    let Some(membership) = principal.token_context.as_ref() else {
        return Err(ApiError::NoTeamContext);
    };
    if !auth::allows(membership.role, &principal.scopes(), Action::ShareTunnels) {
        let why = "Opening tunnels needs the member role or above and the tunnels:share scope.";
        return Err(ApiError::Forbidden(why.into()));
    }
    let token_region = principal.token().and_then(|t| t.region.as_deref());
    if let Some(why) = relay.region_refusal(query(&head.target, "region"), token_region) {
        return Err(ApiError::RegionNotServed(why));
    }
    let wanted = Wanted::parse(&head.target)?;
    // A reconnecting share asks for the name or port it had: while its old
    // tunnel still holds them (the server has not seen it go), it gets 409
    // and retries, rather than a quota its old tunnel fills and an exit.
    if let Some(why) = held(relay, wanted, membership.crew.id) {
        return Err(ApiError::Conflict(why));
    }
    let quota_owner = quota::Owner {
        user_id: principal.user.id,
        crew: &membership.crew,
    };
    let tcp = matches!(wanted, Wanted::Tcp(_));
    let slot = relay
        .quotas
        .take(&quota_owner, tcp, &relay.limits)
        .map_err(ApiError::QuotaExceeded)?;
    let owner = Owner {
        token_id: principal.token().map_or(0, |t| t.id),
        crew_id: membership.crew.id,
    };
    let record = History {
        store: auth.store().clone(),
        crew_id: membership.crew.id,
        user_id: principal.user.id,
        username: principal.user.username.clone(),
        token_id: principal.token().map(|t| t.id),
        address: peer.ip().to_string(),
    };
    let on_claim = |tunnel: &Tunnel| {
        let url = match wanted {
            Wanted::Http(_) => relay.url_of(&tunnel.subdomain),
            Wanted::Tcp(_) => relay.tcp_url(tunnel.subdomain.parse().unwrap_or(0)),
        };
        record.opened(tunnel, wanted.kind(), &url);
        slot.keep(tunnel);
    };
    let claimed = match wanted {
        Wanted::Http(name) => relay.claim(name, owner, on_claim),
        Wanted::Tcp(port) => relay.tcp.claim(relay, port, owner, on_claim),
    };
    let tunnel = match claimed {
        Ok(tunnel) => tunnel,
        Err(ClaimError::Invalid(why)) => return Err(ApiError::BadRequest(why)),
        Err(ClaimError::Taken(why)) => return Err(ApiError::Conflict(why)),
        Err(ClaimError::Unavailable) => return Err(ApiError::Busy),
    };
    // A member removed or made viewer while this claim ran: the removal may
    // have looked for their live tunnels before this one's row was written.
    // Looking again after writing it, one of the two always sees the other.
    // (The client still reads the 101 and then the reason it closed.)
    if !record.may_still_share() {
        relay.release(&tunnel);
        tunnel.close_for("your role in the crew no longer allows sharing");
        record.closed(&tunnel.id);
    } else {
        relay.refill(&tunnel);
    }
    Ok(Opened { tunnel, record })
}

/// Serve a tunnel's control connection until it closes (its client went
/// silent or away, or the tunnel was closed for it), then forget the tunnel.
/// `already`: bytes that came after the connection's head.
pub async fn run_control(
    relay: &Arc<Relay>,
    opened: Opened,
    stream: wire::conn::Conn,
    already: Vec<u8>,
) {
    let Opened { tunnel, record } = opened;
    if let Some(outbox) = tunnel.take_outbox() {
        let timing = (PING_EVERY, SILENCE_LIMIT);
        let _ = control_loop(relay, &tunnel, stream, already, outbox, timing).await;
    }
    relay.release(&tunnel);
    tunnel.close();
    blocking(|| record.closed(&tunnel.id));
}

/// Why the name or port asked for is held by a live tunnel, if it is.
fn held(relay: &Relay, wanted: Wanted, crew_id: i64) -> Option<String> {
    match wanted {
        // Another crew's live tunnel is refused by the claim, which says whose.
        Wanted::Http(Some(name)) if relay.find(name).is_some_and(|t| t.crew_id == crew_id) => Some(format!(
            "The subdomain {name} is held by a live tunnel; choose another with --subdomain."
        )),
        Wanted::Tcp(Some(port)) if relay.tcp.holds(port) => Some(format!(
            "Port {port} is held by a live tunnel; choose another with --remote-port, or leave it out for a free one."
        )),
        _ => None,
    }
}

/// Writes a tunnel's history row and its `tunnel.open` / `tunnel.close` audit events.
#[derive(Clone)]
struct History {
    store: Arc<Store>,
    crew_id: i64,
    user_id: i64,
    username: String,
    token_id: Option<i64>,
    address: String,
}

impl History {
    /// A TCP tunnel's row holds its port in `subdomain`.
    fn opened(&self, tunnel: &Tunnel, kind: &str, url: &str) {
        let row = NewTunnel {
            id: &tunnel.id,
            crew_id: self.crew_id,
            user_id: self.user_id,
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

    /// Whether the user is still a member of the crew who may share (a
    /// store that cannot answer is not taken for a removal).
    fn may_still_share(&self) -> bool {
        match self.store.crews().membership(self.crew_id, self.user_id) {
            Ok(Some(membership)) => membership.role >= Action::ShareTunnels.needs().0,
            Ok(None) => false,
            Err(_) => true,
        }
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
            user_id: Some(self.user_id),
            username: Some(&self.username),
            token_id: self.token_id,
            action,
            detail,
            address: Some(&self.address),
        };
        if let Err(err) = self.store.audit().record(&event) {
            eprintln!("berth: could not record audit event {action}: {err}");
        }
    }
}

/// Write what is queued for the client, read its frames, ping every
/// `ping_every` and tend the tunnel's parked data connections as often; end
/// after `silence` without a word, or once the tunnel closed and what was
/// queued is written.
async fn control_loop(
    relay: &Relay,
    tunnel: &Arc<Tunnel>,
    stream: wire::conn::Conn,
    already: Vec<u8>,
    mut outbox: Outbox,
    (ping_every, silence): (Duration, Duration),
) -> io::Result<()> {
    let (reader, mut writer) = tokio::io::split(stream);
    let mut frames = Frames::new(reader, already);
    let start = tokio::time::Instant::now() + ping_every;
    let mut ticks = tokio::time::interval_at(start, ping_every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut heard = Instant::now();
    loop {
        tokio::select! {
            frame = frames.next() => {
                heard = Instant::now();
                if frame? == (Frame::Ping {}) {
                    tunnel.send(&Frame::Pong {})?;
                }
            }
            bytes = outbox.recv() => {
                let Some(mut bytes) = bytes else {
                    // Closed, and all it queued is written.
                    let _ = tokio::time::timeout(CONTROL_WRITE_TIMEOUT, writer.shutdown()).await;
                    return Ok(());
                };
                // What else waits goes in the same write.
                while let Ok(more) = outbox.try_recv() {
                    bytes.extend_from_slice(&more);
                }
                let write = async {
                    writer.write_all(&bytes).await?;
                    writer.flush().await
                };
                tokio::time::timeout(CONTROL_WRITE_TIMEOUT, write)
                    .await
                    .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
            }
            _ = ticks.tick() => {
                if heard.elapsed() >= silence {
                    return Ok(());
                }
                tunnel.send(&Frame::Ping {})?;
                relay.tend(tunnel, Instant::now());
            }
        }
    }
}

/// `GET /api/v1/tunnels/accept/{id}`: answer 101 if a public connection (or
/// the tunnel's pool) waits for this id, else refuse; whether it answered
/// 101 (the connection is then to be handed over with [`Relay::deliver`]).
pub async fn accept_data<W: AsyncWrite + Unpin>(
    relay: &Relay,
    head: &RequestHead,
    id: &str,
    out: &mut W,
) -> io::Result<bool> {
    if !wants_relay(head) {
        let why = format!("Send Connection: Upgrade and Upgrade: {UPGRADE}.");
        refuse(out, ApiError::BadRequest(why)).await?;
        return Ok(false);
    }
    if !relay.is_pending(id) {
        let why = "No public connection waits for this id; it may have expired.";
        refuse(out, ApiError::NotFound(why.into())).await?;
        return Ok(false);
    }
    out.write_all(SWITCHING.as_bytes()).await?;
    out.flush().await?;
    Ok(true)
}

/// Behind a trusted proxy, one connection carries the requests of many
/// visitors for any tunnel (Caddy and haproxy pool their connections to
/// berth, whatever the Host): a request for another tunnel than the one the
/// connection is bound to, or after that one closed, moves the binding
/// instead of closing a connection the proxy may already have sent it on.
/// The old tunnel's data connection is closed, never reused, and the old
/// tunnel no longer cuts this connection when it closes.
pub fn rebind_for_proxy(relay: &Relay, host: &str, leg: &mut Option<Leg>) {
    let Some(bound) = leg.as_ref() else {
        return;
    };
    let subdomain = relay.subdomain_of(host).unwrap_or_default();
    let same = relay
        .find(subdomain)
        .is_some_and(|t| Arc::ptr_eq(&t, &bound.tunnel));
    if !same || bound.tunnel.is_closed() {
        *leg = None;
    }
}

/// One public request to `host` (a name under the relay's domain), forwarded
/// through the tunnel's client and its response streamed back, then recorded.
/// `cut` is the public connection's: notified when its tunnel closes.
#[allow(clippy::too_many_arguments)]
pub async fn forward(
    relay: &Relay,
    head: &RequestHead,
    host: &str,
    client: &mut Client,
    cut: &Arc<Notify>,
    leg: &mut Option<Leg>,
    client_ip: &str,
    scheme: &'static str,
) -> io::Result<Outcome> {
    let subdomain = relay.subdomain_of(host).unwrap_or_default();
    let found = relay.find(subdomain);
    if let Some(bound) = leg.as_ref() {
        let same = found
            .as_ref()
            .is_some_and(|t| Arc::ptr_eq(t, &bound.tunnel));
        if !same || bound.tunnel.is_closed() {
            // Its tunnel closed, or this is another's: not a byte goes on.
            *leg = None;
            return Ok(Outcome::Close);
        }
    }
    let Some(tunnel) = found else {
        client
            .write_all(&page(head, 404, &format!("No tunnel is open at {host}.")))
            .await?;
        return Ok(Outcome::Refused);
    };
    if leg.is_none() {
        *leg = Some(Leg {
            tunnel: tunnel.clone(),
            public: None,
            data: None,
        });
    }
    let mut seen = Observed::start(head, client_ip, scheme);
    let refill = Refill {
        relay,
        tunnel: &tunnel,
        due: AtomicBool::new(leg.as_ref().is_none_or(|l| l.data.is_none())),
    };
    let Some(data) = leg_to(relay, &tunnel, leg, cut).await else {
        let why = if tunnel.is_closed() {
            format!("The tunnel at {host} closed before it could take the request; try again once it is back.")
        } else {
            format!("The tunnel at {host} did not answer in time; try again.")
        };
        seen.answer(client, &page(head, 502, &why)).await?;
        let _ = client.flush().await;
        note(relay, &tunnel, head, seen);
        return Ok(Outcome::Refused);
    };
    // The pool refills once the response head is on its way, if this took from it.
    let refilled = || refill.now();
    let due = refill.due.load(Ordering::Relaxed);
    let on_head = due.then_some(&refilled as &(dyn Fn() + Sync));
    let answer = forward::exchange(head, client, data, &mut seen, on_head).await;
    refill.now();
    let result = match answer {
        Ok(Outcome::Upgraded) => {
            // Recorded when the switch happens, not when the upgraded connection ends.
            note(relay, &tunnel, head, seen);
            return splice(client, leg, relay.idle_timeout).await;
        }
        Ok(Outcome::Failed(failure)) => {
            drop_data(leg);
            let (status, why) = failure.explain(host, relay.response_timeout);
            // A request body not passed on whole is still (partly) unread:
            // linger, so closing does not reset the page away.
            let then = if seen.body_whole {
                Outcome::Close
            } else {
                Outcome::Refused
            };
            seen.answer(client, &page(head, status, &why))
                .await
                .map(|()| then)
        }
        Ok(outcome) => {
            // Bytes beyond the response (a body on a 204, 304 or HEAD answer)
            // would be read as the next request's response: not used again.
            let spoiled = data_of(leg).is_some_and(|d| d.conn.has_buffered());
            if outcome != Outcome::KeepAlive || spoiled {
                drop_data(leg);
            }
            Ok(outcome)
        }
        Err(err) => {
            drop_data(leg);
            Err(err)
        }
    };
    // The public client gets its response before the record is made.
    let _ = client.flush().await;
    note(relay, &tunnel, head, seen);
    result
}

/// Refilling a tunnel's pool of parked data connections after this public
/// connection took one, once its response is on its way (see `relay`'s header).
struct Refill<'a> {
    relay: &'a Relay,
    tunnel: &'a Arc<Tunnel>,
    due: AtomicBool,
}

impl Refill<'_> {
    /// Refill, if a data connection was taken and it was not done yet.
    fn now(&self) {
        if self.due.swap(false, Ordering::Relaxed) {
            self.relay.refill(self.tunnel);
        }
    }
}

impl Drop for Refill<'_> {
    /// However the exchange ended (an error returned early), the pool refills.
    fn drop(&mut self) {
        self.now();
    }
}

/// The data connection for this public connection's request: the one kept from
/// its last request, or a new one from the tunnel's client; none if the
/// connection is not bound (its tunnel closed) or no client answered.
async fn leg_to<'a>(
    relay: &Relay,
    tunnel: &Arc<Tunnel>,
    leg: &'a mut Option<Leg>,
    cut: &Arc<Notify>,
) -> Option<&'a mut Upstream> {
    let leg = leg.as_mut()?;
    if leg.data.is_none() {
        let data = relay.open_data(tunnel).await?;
        if leg.public.is_none() {
            // None if the tunnel closed meanwhile: the data connection goes.
            leg.public = Some(tunnel.carry(cut)?);
        } else if tunnel.is_closed() {
            return None;
        }
        leg.data = Some(Upstream::new(data, relay.response_timeout));
    }
    leg.data.as_mut()
}

/// The kept data connection, if any.
fn data_of(leg: &Option<Leg>) -> Option<&Upstream> {
    leg.as_ref().and_then(|l| l.data.as_ref())
}

/// Close the kept data connection; the public connection stays bound.
fn drop_data(leg: &mut Option<Leg>) {
    if let Some(leg) = leg.as_mut() {
        leg.data = None;
    }
}

/// Hand a request's record to the inspector and its line to the tunnel's client.
fn note(relay: &Relay, tunnel: &Arc<Tunnel>, head: &RequestHead, seen: Observed) {
    if let Some(status) = seen.status {
        crate::metrics::tunnel_request(status, seen.bytes_in, seen.bytes_out);
    }
    let (Some(inspector), Some(status)) = (relay.inspector(), seen.status) else {
        return;
    };
    let tier = inspector.tier_of(tunnel.token_id);
    let record = Record::redacted(
        tier,
        inspect::Seen {
            tunnel_id: tunnel.id.clone(),
            at: seen.at,
            method: head.method.clone(),
            target: head.target.clone(),
            status,
            duration: seen.started.elapsed(),
            bytes_in: seen.bytes_in,
            bytes_out: seen.bytes_out,
            request_headers: head.forwarded_fields(seen.client_ip, seen.scheme),
            response_headers: seen.response_headers,
        },
    );
    let (method, path) = record.frame_text();
    relay.send_line(
        tunnel,
        &Frame::Request {
            method,
            path,
            status,
            duration_ms: record.duration_ms,
            bytes_in: record.bytes_in,
            bytes_out: record.bytes_out,
        },
    );
    inspector.submit(record);
}

/// After a 101: pipe the public connection and the leg both ways until either
/// closes, or no byte moved either way for `idle`.
async fn splice(
    client: &mut Client,
    leg: &mut Option<Leg>,
    idle: Option<Duration>,
) -> io::Result<Outcome> {
    // The binding lives while the pipe runs: closing the tunnel cuts it.
    let Some((_bound, mut data)) = leg.take().and_then(|l| Some((l.public, l.data?))) else {
        return Ok(Outcome::Close);
    };
    forward::splice(client, &mut data.conn, idle).await?;
    Ok(Outcome::Close)
}

/// berth's own answer to a public visitor, closing the connection: a small
/// HTML page, or the API's JSON error shape when the request asks for JSON.
/// `message` is for strangers: it never names the local service's address or
/// an OS error (those go to `share`'s output).
fn page(head: &RequestHead, status: u16, message: &str) -> Vec<u8> {
    if wants_json(head) {
        let code = match status {
            404 => "not_found",
            502 => "bad_gateway",
            504 => "gateway_timeout",
            _ => "error",
        };
        return proxy::error_response(status, code, message);
    }
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

/// Whether the visitor's `Accept` names JSON before (or without) HTML: a
/// script or a single-page app, rather than a browser opening the page.
fn wants_json(head: &RequestHead) -> bool {
    let Some(accept) = head.header("accept") else {
        return false;
    };
    accept
        .split(',')
        .map(|range| range.split(';').next().unwrap_or("").trim())
        .find_map(|media| {
            if media.eq_ignore_ascii_case("application/json") {
                Some(true)
            } else if media.eq_ignore_ascii_case("text/html") {
                Some(false)
            } else {
                None
            }
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader};
    use std::net::TcpListener;

    /// A claimed tunnel, the server's end of its control connection, the
    /// client's end, and what is queued for it.
    fn control_pair(relay: &Relay) -> (Arc<Tunnel>, wire::conn::Conn, std::net::TcpStream, Outbox) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        server.set_nonblocking(true).unwrap();
        let server = wire::conn::Conn::Tcp(tokio::net::TcpStream::from_std(server).unwrap());
        let tunnel = relay.claim(Some("quiet"), Owner::token(1), |_| {}).unwrap();
        let outbox = tunnel.take_outbox().unwrap();
        (tunnel, server, client, outbox)
    }

    fn head_accepting(accept: Option<&str>) -> RequestHead {
        let accept = accept.map_or(String::new(), |a| format!("Accept: {a}\r\n"));
        let raw = format!("GET / HTTP/1.1\r\nHost: a.localhost\r\n{accept}\r\n");
        proxy::parse_request(raw.as_bytes()).unwrap()
    }

    #[test]
    fn pages_are_json_only_for_those_who_ask_for_json_first() {
        for (accept, json) in [
            (None, false),
            (Some("*/*"), false),
            (Some("text/html,application/xhtml+xml,*/*;q=0.8"), false),
            (Some("application/json"), true),
            (Some("Application/JSON; charset=utf-8"), true),
            (Some("application/json, text/html;q=0.5"), true),
            (Some("text/html, application/json"), false),
        ] {
            let head = head_accepting(accept);
            assert_eq!(wants_json(&head), json, "{accept:?}");
            let page =
                String::from_utf8(page(&head, 502, "The service <x> did not answer.")).unwrap();
            let kind = if json {
                "application/json"
            } else {
                "text/html"
            };
            assert!(page.contains(&format!("Content-Type: {kind}")), "{page}");
            assert!(page.starts_with("HTTP/1.1 502 "), "{page}");
        }
    }

    #[tokio::test]
    async fn a_public_connection_bound_to_a_closed_tunnel_is_closed_unanswered() {
        let relay = Relay::new("localhost", "http://localhost:8080");
        let (old, _old_server, _old_client, _) = control_pair(&relay);
        let mut leg = Some(Leg {
            tunnel: old.clone(),
            public: None,
            data: None,
        });
        relay.release(&old);
        old.close();
        // Another tunnel takes the name.
        let (_new, _new_server, _new_client, _) = control_pair(&relay);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut visitor = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let served = listener.accept().unwrap().0;
        served.set_nonblocking(true).unwrap();
        let served = wire::conn::Conn::Tcp(tokio::net::TcpStream::from_std(served).unwrap());
        let mut client = Conn::new(served);
        let head =
            proxy::parse_request(b"GET /two HTTP/1.1\r\nHost: quiet.localhost\r\n\r\n").unwrap();
        let cut = Arc::new(Notify::new());
        let host = "quiet.localhost";
        let forwarded = forward(
            &relay,
            &head,
            host,
            &mut client,
            &cut,
            &mut leg,
            "127.0.0.1",
            "http",
        )
        .await
        .unwrap();
        assert_eq!(forwarded, Outcome::Close);
        assert!(leg.is_none());
        client.flush().await.unwrap();
        drop(client);
        let mut answer = Vec::new();
        std::io::Read::read_to_end(&mut visitor, &mut answer).unwrap();
        assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));
    }

    #[tokio::test]
    async fn a_silent_client_is_pinged_then_dropped() {
        let relay = Relay::new("localhost", "http://localhost:8080");
        let (tunnel, server, client, outbox) = control_pair(&relay);
        let timing = (Duration::from_millis(50), Duration::from_millis(300));
        let started = Instant::now();
        control_loop(&relay, &tunnel, server, Vec::new(), outbox, timing)
            .await
            .unwrap();
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

    #[tokio::test]
    async fn a_client_that_answers_stays_and_gets_pongs() {
        let relay = Arc::new(Relay::new("localhost", "http://localhost:8080"));
        let (tunnel, server, client, outbox) = control_pair(&relay);
        let timing = (Duration::from_millis(50), Duration::from_millis(300));
        let looping = tokio::spawn(async move {
            let started = Instant::now();
            let _ = control_loop(&relay, &tunnel, server, Vec::new(), outbox, timing).await;
            started.elapsed()
        });
        let pongs = tokio::task::spawn_blocking(move || {
            let mut writer = client.try_clone().unwrap();
            let mut lines = BufReader::new(client);
            let mut pongs = 0;
            let until = Instant::now() + Duration::from_millis(900);
            while Instant::now() < until {
                std::io::Write::write_all(&mut writer, b"{\"ping\":{}}\n").unwrap();
                let mut line = String::new();
                while !line.starts_with("{\"pong\"") {
                    line.clear();
                    lines.read_line(&mut line).unwrap();
                }
                pongs += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            pongs
        })
        .await
        .unwrap();
        assert!(pongs >= 5, "{pongs}");
        // Alive past the silence limit while it heard pings; ends once the client goes.
        assert!(looping.await.unwrap() >= Duration::from_millis(900));
    }
}
