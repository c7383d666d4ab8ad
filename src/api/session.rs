//! Who am I, dashboard sign-in and sign-out, and first-run setup.

use serde_json::json;

use super::crews::crew_json;
use super::tokens::token_json;
use super::{
    header, json_reply, no_content, user_json, ApiError, ApiState, Call, Reply, SESSION_COOKIE,
};
use crate::auth::{self, AuthError, Principal, Via, SESSION_IDLE, SESSION_LIFETIME};
use crate::names::check_simple_name;
use crate::store::{Role, StoreError};
use crate::time_fmt;
use crate::token;

/// Whether session cookies are `Secure` and `__Host-` prefixed: under TLS, and
/// whenever the public URL is https (TLS ended by a proxy in front of berth).
fn secure_cookies(state: &ApiState, call: &Call) -> bool {
    call.secure || origin_of(&state.public_url).is_some_and(|o| o.starts_with("https://"))
}

/// The session cookie's name: `__Host-` prefixed when secure, so only this
/// host, over https, may set it.
pub fn cookie_name(state: &ApiState, call: &Call) -> String {
    if secure_cookies(state, call) {
        format!("__Host-{SESSION_COOKIE}")
    } else {
        SESSION_COOKIE.to_string()
    }
}

/// `Set-Cookie` for the session cookie with `value` for `max_age` seconds.
fn session_cookie(state: &ApiState, call: &Call, value: &str, max_age: u64) -> String {
    let secure = if secure_cookies(state, call) {
        "; Secure"
    } else {
        ""
    };
    format!(
        "{}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}",
        cookie_name(state, call)
    )
}

/// A URL's origin as browsers send it: scheme and host in lower case, the
/// port only when it is not the scheme's default.
fn origin_of(url: &str) -> Option<String> {
    let lower = url.trim().to_ascii_lowercase();
    let (scheme, rest) = lower.split_once("://")?;
    let default_port = match scheme {
        "http" => ":80",
        "https" => ":443",
        _ => return None,
    };
    let authority = rest.split(['/', '?', '#']).next()?;
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    let authority = authority.strip_suffix(default_port).unwrap_or(authority);
    Some(format!("{scheme}://{authority}"))
}

/// Browsers mark where a request comes from. A mutation (sign-in and setup
/// included) marked as coming from anywhere but this origin is refused: pages
/// served through tunnels are same-site, so `same-site` is refused too.
/// Clients that send neither header (the CLI, scripts) are not browsers.
pub fn check_origin(state: &ApiState, call: &Call) -> Result<(), ApiError> {
    if let Some(site) = call.header("sec-fetch-site") {
        if !site.trim().eq_ignore_ascii_case("same-origin") {
            return Err(ApiError::Forbidden(format!(
                "Requests from other sites are refused (Sec-Fetch-Site: {site}); use the dashboard at {}.",
                state.public_url
            )));
        }
    }
    check_origin_header(state, call)
}

/// An `Origin` header, when sent, must be the public URL's origin (or, without
/// `--public-url`, the origin of the Host the request was addressed to).
fn check_origin_header(state: &ApiState, call: &Call) -> Result<(), ApiError> {
    let Some(origin) = call.header("origin") else {
        return Ok(());
    };
    let sent = origin_of(origin);
    let public = origin_of(&state.public_url);
    // Without --public-url, the origin the request was addressed to (its Host).
    let addressed = (!state.public_url_set)
        .then(|| call.header("host"))
        .flatten()
        .and_then(|host| {
            let scheme = if call.secure { "https" } else { "http" };
            origin_of(&format!("{scheme}://{host}"))
        });
    if sent.is_some() && (sent == public || sent == addressed) {
        return Ok(());
    }
    Err(ApiError::Forbidden(format!(
        "Requests from origin {origin} are refused; use the dashboard at {}.",
        state.public_url
    )))
}

/// A session cookie counts only on requests from the dashboard's own origin,
/// reads included: pages served through tunnels are same-site, so browsers
/// attach the cookie to their requests too, and such a request must neither
/// keep an idle session alive nor tell the page whether someone is signed in.
/// A read typed into the address bar (`Sec-Fetch-Site: none`) is fine.
pub fn check_cookie_site(state: &ApiState, call: &Call) -> Result<(), ApiError> {
    if call.mutation {
        return check_origin(state, call);
    }
    if let Some(site) = call.header("sec-fetch-site") {
        let site = site.trim();
        if !site.eq_ignore_ascii_case("same-origin") && !site.eq_ignore_ascii_case("none") {
            return Err(ApiError::Forbidden(format!(
                "The session cookie is not taken from other sites (Sec-Fetch-Site: {site}); use the dashboard at {}.",
                state.public_url
            )));
        }
    }
    check_origin_header(state, call)
}

/// Sign-in and mutations by session take JSON only: a cross-site HTML form
/// cannot send `application/json` without the browser asking first.
pub fn require_json(call: &Call) -> Result<(), ApiError> {
    let kind = call.header("content-type").unwrap_or("");
    let media = kind.split(';').next().unwrap_or("").trim();
    if media.eq_ignore_ascii_case("application/json") {
        return Ok(());
    }
    Err(ApiError::BadRequest(
        "Header `Content-Type` must be application/json for sign-in and dashboard changes; send the body as JSON.".into(),
    ))
}

fn random_hex() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Mutations by session need the CSRF header (cross-site ones are refused
/// earlier, for every caller, in the routing).
pub fn check_csrf(call: &Call, who: &Principal) -> Result<(), ApiError> {
    let Via::Session(session) = &who.via else {
        return Ok(());
    };
    let sent = call.header("x-csrf-token").unwrap_or("");
    if !token::hashes_match(sent.as_bytes(), session.csrf_token.as_bytes()) {
        return Err(ApiError::Forbidden(
            "Missing or wrong X-CSRF-Token header; reload the page.".into(),
        ));
    }
    Ok(())
}

pub fn me(state: &ApiState, call: &Call) -> Result<Reply, ApiError> {
    let who = call.principal(state, false)?;
    let selector = call.crew_selector()?;
    let ctx = call.context(state, &who, selector.as_deref())?;
    let token = who.token().map(|t| token_json(state, t));
    let mut body = json!({
        "user": user_json(who.user.id, &who.user.username),
        "crew": crew_json(&ctx.crew),
        "role": ctx.role.as_str(),
        "token": token,
    });
    if let Via::Session(session) = &who.via {
        body["csrf_token"] = json!(session.csrf_token);
    }
    Ok(json_reply(200, &body))
}

/// Start a session for `who` and answer with its cookie.
fn start_session(
    state: &ApiState,
    call: &Call,
    who: &Principal,
    status: u16,
    mut body: serde_json::Value,
) -> Result<Reply, ApiError> {
    let id = random_hex();
    let csrf = random_hex();
    // A new session ends after an idle period unless used (auth::verify_session).
    let expires = time_fmt::format(time::OffsetDateTime::now_utc() + SESSION_IDLE);
    state
        .store
        .sessions()
        .create(&token::hash(&id), who.user.id, &csrf, &expires)?;
    body["csrf_token"] = json!(csrf);
    let cookie = session_cookie(state, call, &id, SESSION_LIFETIME.as_secs());
    Ok(json_reply(status, &body).with_header(header("Set-Cookie", &cookie)))
}

pub fn sign_in(state: &ApiState, call: &Call) -> Result<Reply, ApiError> {
    require_json(call)?;
    call.only_fields(&["username", "password"])?;
    let username = call.required_str("username")?;
    let password = call.required_str("password")?;
    if password.len() > auth::MAX_PASSWORD_BYTES {
        return Err(ApiError::BadRequest(format!(
            "Field `password` is longer than {} bytes.",
            auth::MAX_PASSWORD_BYTES
        )));
    }
    let who = match state
        .auth
        .verify_password(username, password, &call.client_ip)
    {
        Ok(who) => who,
        Err(err) => {
            if matches!(err, AuthError::BadCredentials) {
                state.audit_failed_password(call, username, "session.fail", String::new());
            }
            return Err(err.into());
        }
    };
    for m in state.store.crews().memberships_of(who.user.id)? {
        state.audit(
            call,
            Some(&who),
            Some(m.crew.id),
            "session.create",
            String::new(),
        );
    }
    start_session(
        state,
        call,
        &who,
        200,
        json!({"user": user_json(who.user.id, &who.user.username)}),
    )
}

pub fn sign_out(state: &ApiState, call: &Call) -> Result<Reply, ApiError> {
    let who = call.principal(state, false)?;
    if !matches!(who.via, Via::Session(_)) {
        return Err(ApiError::BadRequest(
            "Only a dashboard session can sign out; to drop a token use `berth logout --revoke`."
                .into(),
        ));
    }
    if let Some(id) = call.cookie(state)? {
        state.store.sessions().delete(&token::hash(&id))?;
    }
    let cookie = session_cookie(state, call, "", 0);
    Ok(no_content().with_header(header("Set-Cookie", &cookie)))
}

/// Change one's own password, proving the current one. Every dashboard
/// session ends with the old password; a session caller gets a new one. With
/// `revoke_tokens`, every token of the user is revoked too (a stolen password
/// may have minted some).
pub fn change_password(state: &ApiState, call: &Call) -> Result<Reply, ApiError> {
    call.only_fields(&["current_password", "new_password", "revoke_tokens"])?;
    let who = call.principal(state, false)?;
    let current = call.required_str("current_password")?;
    let new = call.required_str("new_password")?;
    let revoke = match call.field("revoke_tokens") {
        None => false,
        Some(serde_json::Value::Bool(b)) => *b,
        Some(_) => {
            return Err(ApiError::BadRequest(
                "Field `revoke_tokens` must be true or false.".into(),
            ))
        }
    };
    auth::check_password_length(new)
        .map_err(|why| ApiError::BadRequest(format!("Field `new_password`: {why}")))?;
    let username = who.user.username.clone();
    match state
        .auth
        .verify_password(&username, current, &call.client_ip)
    {
        Ok(_) => {}
        Err(AuthError::BadCredentials) => {
            state.audit_failed_password(call, &username, "user.password_fail", String::new());
            return Err(ApiError::BadCredentials);
        }
        Err(err) => return Err(err.into()),
    }
    let hash = auth::hash_password(new).map_err(|_| ApiError::Internal)?;
    state.store.users().set_password(who.user.id, &hash)?;
    let revoked = if revoke {
        state.store.tokens().revoke_all_for_user(who.user.id)?
    } else {
        Vec::new()
    };
    for m in state.store.crews().memberships_of(who.user.id)? {
        let detail = format!("user {username}: {} tokens revoked", revoked.len());
        state.audit(call, Some(&who), Some(m.crew.id), "user.password", detail);
    }
    for id in &revoked {
        let crew = state.store.tokens().find_by_id(*id)?.map(|t| t.crew.id);
        let detail = format!("token {id}, with the password change");
        state.audit(call, Some(&who), crew, "token.revoke", detail);
    }
    let body = json!({"tokens_revoked": revoked.len()});
    if matches!(who.via, Via::Session(_)) {
        return start_session(state, call, &who, 200, body);
    }
    Ok(json_reply(200, &body))
}

/// "Sign out everywhere": end every dashboard session of the caller's user.
/// A session (with its CSRF header) or a token with `berth:*` may ask.
pub fn sign_out_everywhere(state: &ApiState, call: &Call) -> Result<Reply, ApiError> {
    let who = call.principal(state, false)?;
    if who.token().is_some() && !who.scopes().iter().any(|s| s == "berth:*") {
        return Err(ApiError::Forbidden(
            "Ending every session needs a token with the berth:* scope, or the dashboard.".into(),
        ));
    }
    let ended = state.store.sessions().delete_for_user(who.user.id)?;
    for m in state.store.crews().memberships_of(who.user.id)? {
        let detail = format!("user {}: {ended} sessions ended", who.user.username);
        state.audit(call, Some(&who), Some(m.crew.id), "session.end_all", detail);
    }
    let mut reply = json_reply(200, &json!({"ended": ended}));
    if matches!(who.via, Via::Session(_)) {
        let cookie = session_cookie(state, call, "", 0);
        reply = reply.with_header(header("Set-Cookie", &cookie));
    }
    Ok(reply)
}

pub fn setup(state: &ApiState, call: &Call) -> Result<Reply, ApiError> {
    require_json(call)?;
    call.only_fields(&["code", "username", "password", "crew"])?;
    let code = call.required_str("code")?;
    let username = valid_username(call.required_str("username")?)?;
    let password = call.required_str("password")?;
    let crew = valid_crew_name(call.required_str("crew")?)?;
    // Held through the whole setup so two racing requests make one owner.
    let mut pending = state.setup_code.lock().unwrap_or_else(|e| e.into_inner());
    if state.store.users().count()? > 0 {
        *pending = None;
        return Err(ApiError::Conflict(
            "Setup is already done; sign in instead.".into(),
        ));
    }
    let Some(expected) = pending.as_deref() else {
        return Err(ApiError::Conflict(
            "Setup is already done; sign in instead.".into(),
        ));
    };
    if !token::hashes_match(&token::hash(code), &token::hash(expected)) {
        return Err(ApiError::Forbidden(
            "The setup code is wrong; use the setup URL the server printed.".into(),
        ));
    }
    auth::check_password_length(password)
        .map_err(|why| ApiError::BadRequest(format!("Field `password`: {why}")))?;
    let hash = auth::hash_password(password).map_err(|_| ApiError::Internal)?;
    let user = state
        .store
        .users()
        .create(&username, &hash, Some((&crew, Role::Owner)))
        .map_err(|err| match err {
            StoreError::Conflict => ApiError::Conflict(format!(
                "A user `{username}` exists already; sign in instead."
            )),
            other => other.into(),
        })?;
    *pending = None;
    drop(pending);
    let who = Principal {
        user,
        via: Via::Password,
        token_context: None,
    };
    let membership = state
        .store
        .crews()
        .memberships_of(who.user.id)?
        .into_iter()
        .next();
    let crew_id = membership.as_ref().map(|m| m.crew.id);
    state.audit(
        call,
        Some(&who),
        crew_id,
        "setup",
        format!("owner {username} of crew {crew}"),
    );
    let body = json!({
        "user": user_json(who.user.id, &who.user.username),
        "crew": membership.map(|m| crew_json(&m.crew)),
    });
    start_session(state, call, &who, 201, body)
}

/// Usernames: 1 to 64 of letters, digits, `.`, `_`, `-`.
pub fn valid_username(name: &str) -> Result<String, ApiError> {
    check_simple_name(name, 64).map_err(|_| {
        ApiError::BadRequest(
            "Field `username` must be 1 to 64 letters, digits, `.`, `_` or `-`.".into(),
        )
    })
}

/// Crew names: 1 to 64 of letters, digits, `.`, `_`, `-`.
pub fn valid_crew_name(name: &str) -> Result<String, ApiError> {
    check_simple_name(name, 64).map_err(|_| {
        ApiError::BadRequest(
            "Field `crew` must be 1 to 64 letters, digits, `.`, `_` or `-`.".into(),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_compare_as_browsers_send_them() {
        let cases = [
            (
                "https://Berth.Example.com/",
                Some("https://berth.example.com"),
            ),
            (
                "https://berth.example.com:443",
                Some("https://berth.example.com"),
            ),
            ("http://berth.lan:80/x?y", Some("http://berth.lan")),
            ("http://127.0.0.1:8080", Some("http://127.0.0.1:8080")),
            ("http://[::1]:8080", Some("http://[::1]:8080")),
            ("https://a.example:8443", Some("https://a.example:8443")),
            ("null", None),
            ("ftp://x", None),
            ("http://user@evil", None),
            ("http://", None),
        ];
        for (url, origin) in cases {
            assert_eq!(origin_of(url).as_deref(), origin, "{url}");
        }
    }
}
