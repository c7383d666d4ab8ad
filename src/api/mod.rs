//! The JSON API on tiny_http, behind the front door: state, routing table, and the
//! per-request context (caller, query, body) that handlers share.

mod crews;
mod openapi;
mod routes;
mod session;
mod subdomains;
mod tokens;
mod tunnels;

use std::collections::HashMap;
use std::io::{Cursor, Read};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use serde_json::{json, Map, Value};
use tiny_http::{Header, Method, Request, Response, Server};

use crate::api_error::ApiError;
use crate::auth::{Auth, AuthError, Principal};
use crate::relay::Relay;
use crate::store::{Membership, NewAuditEvent, Store};

/// Largest request body the API reads.
pub const MAX_BODY_BYTES: u64 = 64 * 1024;
/// Sent by the dashboard on its automatic refreshes: they do not keep a
/// session from its idle end, so a tab left open still signs out.
pub const BACKGROUND_HEADER: &str = "x-berth-background";
/// Threads answering API requests.
const WORKERS: usize = 8;
/// The dashboard's session cookie (prefixed `__Host-` under TLS).
pub const SESSION_COOKIE: &str = "berth_session";

/// What every handler can reach.
pub struct ApiState {
    pub store: Arc<Store>,
    pub auth: Arc<Auth>,
    /// The one-time setup code, while there are no users.
    pub setup_code: Mutex<Option<String>>,
    /// The live tunnels, shared with the front door's relay threads.
    pub relay: Arc<Relay>,
    /// The public URL (`--public-url`, else the listener's): an https one makes
    /// session cookies `Secure` and `__Host-`, and browsers' mutations must
    /// come from its origin.
    pub public_url: String,
    /// Whether the operator set `--public-url`; without it, a browser's
    /// mutation may also come from the origin of the Host it was sent to.
    pub public_url_set: bool,
}

impl ApiState {
    /// Record an audit event; a failure to record is logged, not fatal to the call.
    pub fn audit(
        &self,
        call: &Call,
        who: Option<&Principal>,
        crew_id: Option<i64>,
        action: &str,
        detail: String,
    ) {
        let event = NewAuditEvent {
            crew_id,
            user_id: who.map(|p| p.user.id),
            username: who.map(|p| p.user.username.as_str()),
            token_id: who.and_then(|p| p.token()).map(|t| t.id),
            action,
            detail,
            address: Some(&call.client_ip),
        };
        if let Err(err) = self.store.audit().record(&event) {
            eprintln!("berth: could not record audit event {action}: {err}");
        }
    }
}

impl ApiState {
    /// Record a wrong password in every crew of the named user (if the user exists),
    /// so the crew's admins see attempts on their members' accounts.
    pub fn audit_failed_password(&self, call: &Call, username: &str, action: &str, how: String) {
        let user = self.store.users().find_by_name(username).ok().flatten();
        let crews = user
            .map(|u| self.store.crews().memberships_of(u.id).unwrap_or_default())
            .unwrap_or_default();
        for m in crews {
            self.audit(
                call,
                None,
                Some(m.crew.id),
                action,
                format!("user {username}{how}"),
            );
        }
    }
}

/// The running API: its tiny_http server and worker threads.
pub struct ApiHandle {
    server: Arc<Server>,
    workers: Vec<JoinHandle<()>>,
}

impl ApiHandle {
    /// Stop taking requests and wait for the workers to finish theirs.
    pub fn stop(self) {
        for _ in &self.workers {
            self.server.unblock();
        }
        for worker in self.workers {
            let _ = worker.join();
        }
    }
}

/// Serve the API on a Unix socket that only the front door connects to.
pub fn start(socket: &Path, state: Arc<ApiState>) -> std::io::Result<ApiHandle> {
    let server = Server::http_unix(socket).map_err(std::io::Error::other)?;
    let server = Arc::new(server);
    let mut workers = Vec::new();
    for i in 0..WORKERS {
        let server = server.clone();
        let state = state.clone();
        let worker = std::thread::Builder::new()
            .name(format!("api-{i}"))
            .spawn(move || {
                while let Ok(request) = server.recv() {
                    handle(&state, request);
                }
            })?;
        workers.push(worker);
    }
    Ok(ApiHandle { server, workers })
}

type Reply = Response<Cursor<Vec<u8>>>;

fn handle(state: &ApiState, mut request: Request) {
    let mut call = Call::new(&request);
    let reply = match route(state, &mut call, &mut request) {
        Ok(reply) => reply,
        Err(err) => error_reply(&err),
    };
    let reply = reply
        .with_header(header("Cache-Control", "no-store"))
        .with_header(header("X-Content-Type-Options", "nosniff"));
    let _ = request.respond(reply);
}

/// Dashboard pages, then the API's routing table (`routes.rs`).
fn route(state: &ApiState, call: &mut Call, request: &mut Request) -> Result<Reply, ApiError> {
    let path = call.path.clone();
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    let method = request.method().clone();
    match (segments.as_slice(), &method) {
        (["setup"], Method::Get) => return page("setup.html"),
        // The dashboard is one page (sign-in included) with hash routes.
        ([] | [""], Method::Get) => return page("index.html"),
        ([] | [""], _) => return Err(ApiError::MethodNotAllowed),
        (["assets", name], Method::Get) => return page(name),
        (["api", "v1", ..], _) => {
            // Browsers say where a request comes from; no mutation, sign-in and
            // setup included (login CSRF), is taken from another origin.
            if call.mutation {
                session::check_origin(state, call)?;
            }
            call.read_body(request)?;
        }
        _ => {}
    }
    routes::dispatch(state, call, &method, &segments)
}

/// An embedded dashboard file, under the strict Content-Security-Policy.
fn page(name: &str) -> Result<Reply, ApiError> {
    let (bytes, kind) =
        crate::web::file(name).ok_or_else(|| ApiError::NotFound(format!("Nothing at {name}.")))?;
    Ok(Response::from_data(bytes.to_vec())
        .with_header(header("Content-Type", kind))
        .with_header(header(
            "Content-Security-Policy",
            crate::web::CONTENT_SECURITY_POLICY,
        ))
        .with_header(header("X-Frame-Options", "DENY"))
        .with_header(header("Referrer-Policy", "no-referrer")))
}

/// A path id: ASCII digits only (`+1` and ` 1` are not ids), positive, within i64.
fn parse_id(text: &str) -> Result<i64, ApiError> {
    Some(text)
        .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|t| t.parse::<i64>().ok())
        .filter(|id| *id > 0)
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "`{text}` is not an id; ids are positive whole numbers."
            ))
        })
}

pub fn header(name: &str, value: &str) -> Header {
    Header::from_bytes(name.as_bytes(), value.as_bytes())
        .expect("static header names and values are valid")
}

/// A JSON reply.
pub fn json_reply(status: u16, value: &Value) -> Reply {
    Response::from_string(value.to_string())
        .with_status_code(status)
        .with_header(header("Content-Type", "application/json"))
}

/// An empty 204 reply.
pub fn no_content() -> Reply {
    Response::from_data(Vec::new()).with_status_code(204)
}

fn error_reply(err: &ApiError) -> Reply {
    let (status, code, message) = err.parts();
    let mut reply = json_reply(
        status,
        &json!({"error": {"code": code, "message": message}}),
    );
    if let ApiError::RateLimited(wait) = err {
        reply = reply.with_header(header("Retry-After", &wait.as_secs().max(1).to_string()));
    }
    if let ApiError::Busy = err {
        reply = reply.with_header(header("Retry-After", "1"));
    }
    reply
}

/// One request as handlers see it.
pub struct Call {
    pub path: String,
    pub query: HashMap<String, String>,
    pub headers: Vec<(String, String)>,
    pub mutation: bool,
    /// The client's address, from the front door's X-Forwarded-For.
    pub client_ip: String,
    /// Whether the client came over TLS (the front door's X-Forwarded-Proto).
    pub secure: bool,
    body: Map<String, Value>,
}

impl Call {
    fn new(request: &Request) -> Call {
        let (path, query) = request.url().split_once('?').unwrap_or((request.url(), ""));
        let headers: Vec<(String, String)> = request
            .headers()
            .iter()
            .map(|h| {
                (
                    h.field.as_str().as_str().to_ascii_lowercase(),
                    h.value.as_str().to_string(),
                )
            })
            .collect();
        let client_ip = headers
            .iter()
            .find(|(n, _)| n == "x-forwarded-for")
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| "unknown".to_string());
        let secure = headers
            .iter()
            .any(|(n, v)| n == "x-forwarded-proto" && v == "https");
        Call {
            path: path.to_string(),
            query: parse_query(query),
            headers,
            mutation: !matches!(
                request.method(),
                Method::Get | Method::Head | Method::Options
            ),
            client_ip,
            secure,
            body: Map::new(),
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn read_body(&mut self, request: &mut Request) -> Result<(), ApiError> {
        if !self.mutation {
            return Ok(());
        }
        let mut raw = Vec::new();
        request
            .as_reader()
            .take(MAX_BODY_BYTES + 1)
            .read_to_end(&mut raw)
            .map_err(|_| ApiError::BadRequest("The request body could not be read.".into()))?;
        if raw.len() as u64 > MAX_BODY_BYTES {
            return Err(ApiError::PayloadTooLarge);
        }
        if raw.iter().all(u8::is_ascii_whitespace) {
            return Ok(());
        }
        match serde_json::from_slice::<Value>(&raw) {
            Ok(Value::Object(map)) => {
                self.body = map;
                Ok(())
            }
            Ok(_) => Err(ApiError::BadRequest(
                "The body must be a JSON object.".into(),
            )),
            Err(err) => Err(ApiError::BadRequest(format!(
                "The body is not valid JSON ({err})."
            ))),
        }
    }

    /// Refuse body fields this endpoint does not know.
    pub fn only_fields(&self, known: &[&str]) -> Result<(), ApiError> {
        match self.body.keys().find(|k| !known.contains(&k.as_str())) {
            Some(k) => Err(ApiError::BadRequest(format!(
                "Unknown field `{k}`; this endpoint takes {}.",
                known.join(", ")
            ))),
            None => Ok(()),
        }
    }

    /// Whether the body names the field, even as null (null clears a setting).
    pub fn has_field(&self, name: &str) -> bool {
        self.body.contains_key(name)
    }

    pub fn field(&self, name: &str) -> Option<&Value> {
        self.body.get(name).filter(|v| !v.is_null())
    }

    /// An optional string field.
    pub fn str_field(&self, name: &str) -> Result<Option<&str>, ApiError> {
        match self.field(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(ApiError::BadRequest(format!(
                "Field `{name}` must be a string."
            ))),
        }
    }

    pub fn required_str(&self, name: &str) -> Result<&str, ApiError> {
        self.str_field(name)?
            .ok_or_else(|| ApiError::BadRequest(format!("Field `{name}` is required.")))
    }

    /// An optional whole-number field within a range.
    pub fn int_field(&self, name: &str, min: i64, max: i64) -> Result<Option<i64>, ApiError> {
        match self.field(name) {
            None => Ok(None),
            Some(v) => match v.as_i64() {
                Some(n) if (min..=max).contains(&n) => Ok(Some(n)),
                _ => Err(ApiError::BadRequest(format!(
                    "Field `{name}` must be a whole number from {min} to {max}."
                ))),
            },
        }
    }

    /// An optional list of strings.
    pub fn str_list(&self, name: &str) -> Result<Option<Vec<String>>, ApiError> {
        match self.field(name) {
            None => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| v.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .map(Some)
                .ok_or_else(|| {
                    ApiError::BadRequest(format!("Field `{name}` must be a list of strings."))
                }),
            Some(_) => Err(ApiError::BadRequest(format!(
                "Field `{name}` must be a list of strings."
            ))),
        }
    }

    /// A crew given as an id (number) or a name (string), in the body or the query.
    pub fn crew_selector(&self) -> Result<Option<String>, ApiError> {
        match self.field("crew") {
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(_) => Err(ApiError::BadRequest(
                "Field `crew` must be a crew id or name.".into(),
            )),
            None => Ok(self.query.get("crew").filter(|c| !c.is_empty()).cloned()),
        }
    }

    /// Who is calling. `basic` allows a username and password (token endpoints only).
    pub fn principal(&self, state: &ApiState, basic: bool) -> Result<Principal, ApiError> {
        if let Some(value) = self.header("authorization") {
            let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
            if scheme.eq_ignore_ascii_case("bearer") {
                return Ok(state.auth.verify_token(rest.trim(), &self.client_ip)?);
            }
            if scheme.eq_ignore_ascii_case("basic") {
                if !basic {
                    return Err(ApiError::BadRequest("Basic authentication is only taken by the token endpoints; send a Bearer token.".into()));
                }
                let (user, password) = decode_basic(rest.trim()).ok_or_else(|| {
                    ApiError::BadRequest(
                        "The Basic credentials are not valid base64 of username:password.".into(),
                    )
                })?;
                return self.basic_sign_in(state, &user, &password);
            }
            return Err(ApiError::BadRequest(
                "Authorization must be Bearer <token> or Basic.".into(),
            ));
        }
        if let Some(session_id) = self.cookie(state)? {
            // Before the session is looked at (and its idle end moved).
            session::check_cookie_site(state, self)?;
            // The dashboard's own polling is no sign of a person at the screen.
            let extend = self.header(BACKGROUND_HEADER).is_none();
            let verified = state.auth.verify_session(&session_id, extend);
            let principal = verified.map_err(|err| match err {
                AuthError::InvalidToken => ApiError::NoToken,
                other => other.into(),
            })?;
            if self.mutation {
                session::check_csrf(self, &principal)?;
                session::require_json(self)?;
            }
            return Ok(principal);
        }
        Err(ApiError::NoToken)
    }

    /// A username and password on a token endpoint (`berth login`, `tokens list
    /// USERNAME`): a sign-in, audited like the dashboard's.
    fn basic_sign_in(
        &self,
        state: &ApiState,
        user: &str,
        password: &str,
    ) -> Result<Principal, ApiError> {
        let how = format!(" via Basic on {}", self.path);
        match state.auth.verify_password(user, password, &self.client_ip) {
            Ok(who) => {
                for m in state.store.crews().memberships_of(who.user.id)? {
                    let detail = format!("user {}{how}", who.user.username);
                    state.audit(self, Some(&who), Some(m.crew.id), "signin.basic", detail);
                }
                Ok(who)
            }
            Err(err) => {
                if matches!(err, AuthError::BadCredentials) {
                    state.audit_failed_password(self, user, "signin.fail", how);
                }
                Err(err.into())
            }
        }
    }

    /// The session id from the Cookie header. More than one cookie of that name
    /// is refused: a page served through a tunnel on the same parent domain
    /// could have planted one beside the real one (cookie tossing).
    pub fn cookie(&self, state: &ApiState) -> Result<Option<String>, ApiError> {
        let name = session::cookie_name(state, self);
        let mut found = self
            .headers
            .iter()
            .filter(|(n, _)| n == "cookie")
            .flat_map(|(_, v)| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .filter(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string());
        let first = found.next();
        if found.next().is_some() {
            return Err(ApiError::BadRequest(format!(
                "The request carries more than one {name} cookie; clear this site's cookies and sign in again."
            )));
        }
        Ok(first)
    }

    /// The caller's crew and role: the token's crew for a token, else the named
    /// crew or the caller's first.
    pub fn context(
        &self,
        state: &ApiState,
        who: &Principal,
        selector: Option<&str>,
    ) -> Result<Membership, ApiError> {
        if let Some(ctx) = &who.token_context {
            if let Some(sel) = selector {
                if sel != ctx.crew.id.to_string() && !sel.eq_ignore_ascii_case(&ctx.crew.name) {
                    return Err(ApiError::Forbidden(format!(
                        "This token belongs to crew `{}`; use a token of crew `{sel}` (berth login --crew {sel}).",
                        ctx.crew.name
                    )));
                }
            }
            return Ok(ctx.clone());
        }
        let memberships = state.store.crews().memberships_of(who.user.id)?;
        match selector {
            None => memberships
                .into_iter()
                .next()
                .ok_or(ApiError::NoTeamContext),
            Some(sel) => memberships
                .into_iter()
                .find(|m| sel == m.crew.id.to_string() || sel.eq_ignore_ascii_case(&m.crew.name))
                .ok_or_else(|| {
                    ApiError::NotFound(format!(
                        "You are not a member of a crew `{sel}`; see `berth crews list`."
                    ))
                }),
        }
    }
}

fn parse_query(query: &str) -> HashMap<String, String> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

/// Decode `%XX` and `+` in a query component; bad escapes stay as written.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match u8::from_str_radix(
                    std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("x"),
                    16,
                ) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn decode_basic(encoded: &str) -> Option<(String, String)> {
    use base64ct::{Base64, Encoding};
    let raw = Base64::decode_vec(encoded).ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// The `{id, username}` form of a user.
pub fn user_json(id: i64, username: &str) -> Value {
    json!({"id": id, "username": username})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings_decode() {
        let q = parse_query("crew=my%20crew&all=1&x=%zz&y=a+b&flag");
        assert_eq!(q["crew"], "my crew");
        assert_eq!(q["all"], "1");
        assert_eq!(q["x"], "%zz");
        assert_eq!(q["y"], "a b");
        assert_eq!(q["flag"], "");
        assert_eq!(percent_decode("%4"), "%4");
        assert_eq!(percent_decode("%"), "%");
    }

    #[test]
    fn basic_credentials_decode() {
        assert_eq!(
            decode_basic("YWxpY2U6cGE6c3M="),
            Some(("alice".into(), "pa:ss".into()))
        );
        assert_eq!(decode_basic("!!!"), None);
        assert_eq!(decode_basic("YWxpY2U="), None);
    }
}
