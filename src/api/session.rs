//! Who am I, dashboard sign-in and sign-out, and first-run setup.

use std::time::Duration;

use serde_json::json;

use super::crews::crew_json;
use super::tokens::token_json;
use super::{
    header, json_reply, no_content, user_json, ApiError, ApiState, Call, Reply, SESSION_COOKIE,
};
use crate::auth::{self, AuthError, Principal, Via};
use crate::store::{Role, StoreError};
use crate::time_fmt;
use crate::token;

/// How long a dashboard session lasts.
const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 60 * 60);

/// Under TLS the cookie is `__Host-` prefixed: only this host, only over https.
pub fn cookie_name(call: &Call) -> String {
    if call.secure {
        format!("__Host-{SESSION_COOKIE}")
    } else {
        SESSION_COOKIE.to_string()
    }
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
    let expires = time_fmt::format(time::OffsetDateTime::now_utc() + SESSION_LIFETIME);
    state
        .store
        .sessions()
        .create(&token::hash(&id), who.user.id, &csrf, &expires)?;
    body["csrf_token"] = json!(csrf);
    let secure = if call.secure { "; Secure" } else { "" };
    let cookie = format!(
        "{}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
        cookie_name(call),
        SESSION_LIFETIME.as_secs()
    );
    Ok(json_reply(status, &body).with_header(header("Set-Cookie", &cookie)))
}

pub fn sign_in(state: &ApiState, call: &Call) -> Result<Reply, ApiError> {
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
    if let Some(id) = call.cookie() {
        state.store.sessions().delete(&token::hash(&id))?;
    }
    let secure = if call.secure { "; Secure" } else { "" };
    let cookie = format!(
        "{}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{secure}",
        cookie_name(call)
    );
    Ok(no_content().with_header(header("Set-Cookie", &cookie)))
}

pub fn setup(state: &ApiState, call: &Call) -> Result<Reply, ApiError> {
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

/// The rule for user and crew names, shared with `berth admin`.
pub fn check_simple_name(name: &str, max: usize) -> Result<String, ()> {
    let ok = !name.is_empty()
        && name.len() <= max
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        && !name.bytes().all(|b| b.is_ascii_digit());
    if ok {
        Ok(name.to_string())
    } else {
        Err(())
    }
}
