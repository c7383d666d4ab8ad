//! `/api/v1/tokens`: list, create, show, change, revoke, and bulk actions.

use serde_json::{json, Value};

use super::{json_reply, user_json, ApiError, ApiState, Call, Reply};
use crate::auth::{allows, scopes_cover, Action, Principal, SCOPES};
use crate::store::{NewToken, Redaction, StoreError, TokenRow, TokenUpdate};
use crate::time_fmt;
use crate::token::Secret;

/// Longest token name.
const MAX_NAME: usize = 100;
/// Longest expiry.
const MAX_EXPIRY_DAYS: i64 = 3650;
/// Most ids one bulk call takes.
const MAX_BULK: usize = 1000;

/// The token object of DESIGN §4; never the secret.
pub fn token_json(state: &ApiState, row: &TokenRow) -> Value {
    let mut row = row.clone();
    state.auth.overlay_last_used(&mut row);
    json!({
        "id": row.id,
        "name": row.name,
        "crew": {"id": row.crew.id, "name": row.crew.name},
        "user": user_json(row.user_id, &row.username),
        "scopes": row.scopes,
        "redaction": row.redaction.as_str(),
        "effective_redaction": row.effective_redaction().as_str(),
        "region": row.region,
        "server": row.server,
        "created_at": row.created_at,
        "last_used_at": row.last_used_at,
        "last_used_ip": row.last_used_ip,
        "recent_ips": row.recent_ips,
        "expires_at": row.expires_at,
        "revoked_at": row.revoked_at,
        "status": row.status(),
    })
}

fn list_json(state: &ApiState, rows: &[TokenRow]) -> Value {
    json!({"tokens": rows.iter().map(|r| token_json(state, r)).collect::<Vec<_>>()})
}

pub fn list(state: &ApiState, call: &Call) -> Result<Reply, ApiError> {
    let who = call.principal(state, true)?;
    let selector = call.crew_selector()?;
    let all = matches!(
        call.query.get("all").map(String::as_str),
        Some("1" | "true")
    );
    let rows = if all {
        let ctx = call.context(state, &who, selector.as_deref())?;
        if !allows(ctx.role, &who.scopes(), Action::ReadCrewTokens) {
            return Err(ApiError::Forbidden(format!(
                "Listing every token of crew `{}` needs the admin or owner role and the tokens:read scope.",
                ctx.crew.name
            )));
        }
        state.store.tokens().list_for_crew(ctx.crew.id)?
    } else if who.token().is_some() || selector.is_some() {
        let ctx = call.context(state, &who, selector.as_deref())?;
        require(&who, ctx.role, Action::ReadOwnTokens)?;
        state
            .store
            .tokens()
            .list_for_user(who.user.id, Some(ctx.crew.id))?
    } else {
        state.store.tokens().list_for_user(who.user.id, None)?
    };
    Ok(json_reply(200, &list_json(state, &rows)))
}

fn require(who: &Principal, role: crate::store::Role, action: Action) -> Result<(), ApiError> {
    if allows(role, &who.scopes(), action) {
        Ok(())
    } else {
        Err(ApiError::Forbidden(match who.token() {
            Some(_) => "This token's role or scopes do not allow that.".to_string(),
            None => "Your role in this crew does not allow that.".to_string(),
        }))
    }
}

pub fn create(state: &ApiState, call: &Call) -> Result<Reply, ApiError> {
    call.only_fields(&[
        "name",
        "crew",
        "redaction",
        "region",
        "server",
        "expires_in_days",
        "scopes",
    ])?;
    let who = call.principal(state, true)?;
    let name = valid_name(call.required_str("name")?)?;
    let redaction = match call.str_field("redaction")? {
        Some(tier) => parse_tier(tier)?,
        None => Redaction::Inherit,
    };
    let region = call.str_field("region")?.map(valid_region).transpose()?;
    let server = call.str_field("server")?.map(valid_server).transpose()?;
    let asked = call
        .int_field("expires_in_days", 1, MAX_EXPIRY_DAYS)?
        .map(|days| time_fmt::days_from_now(days as u32));
    let scopes = match call.str_list("scopes")? {
        Some(scopes) if scopes.is_empty() => {
            return Err(ApiError::BadRequest(
                "Field `scopes` must name at least one scope.".into(),
            ))
        }
        Some(scopes) => scopes,
        None => vec!["berth:*".to_string()],
    };
    if let Some(bad) = scopes.iter().find(|s| !SCOPES.contains(&s.as_str())) {
        return Err(ApiError::BadRequest(format!(
            "Field `scopes`: unknown scope `{bad}`; scopes are {}.",
            SCOPES.join(", ")
        )));
    }
    let ctx = call.context(state, &who, call.crew_selector()?.as_deref())?;
    require(&who, ctx.role, Action::WriteOwnTokens)?;
    if let Some(token) = who.token() {
        if !scopes_cover(&token.scopes, &scopes) {
            return Err(ApiError::Forbidden(
                "A token can only create tokens with scopes it has itself.".into(),
            ));
        }
    }
    let (expires_at, notes) = clamp_expiry(&who, asked);
    let secret = Secret::generate();
    let row = state
        .store
        .tokens()
        .create(&NewToken {
            user_id: who.user.id,
            crew_id: ctx.crew.id,
            name: &name,
            secret_hash: &secret.hash(),
            scopes: &scopes,
            redaction,
            region: region.as_deref(),
            server: server.as_deref(),
            expires_at: expires_at.as_deref(),
        })
        .map_err(|err| match err {
            StoreError::Conflict => ApiError::Conflict(format!(
                "You already have an active token named `{name}` in crew `{}`; choose another name or revoke that one.",
                ctx.crew.name
            )),
            other => other.into(),
        })?;
    state.audit(
        call,
        Some(&who),
        Some(ctx.crew.id),
        "token.create",
        format!("token {} \"{}\"", row.id, row.name),
    );
    let whole = format!("{}|{}", row.id, secret.expose());
    Ok(json_reply(
        201,
        &json!({"token": token_json(state, &row), "secret": whole, "notes": notes}),
    ))
}

/// A token-created token never outlives the token that created it: a later
/// expiry, or none, becomes the creator's, and a note says so. Revoking the
/// creator does not revoke what it created (see docs/security.md).
fn clamp_expiry(who: &Principal, asked: Option<String>) -> (Option<String>, Vec<String>) {
    let Some(limit) = who.token().and_then(|t| t.expires_at.clone()) else {
        return (asked, Vec::new());
    };
    let later = match asked.as_deref() {
        None => true,
        Some(at) => time_fmt::parse(at)
            .zip(time_fmt::parse(&limit))
            .is_none_or(|(at, limit)| at > limit),
    };
    if !later {
        return (asked, Vec::new());
    }
    let note = format!(
        "The expiry was limited to {limit}, the expiry of the token that created this one."
    );
    (Some(limit), vec![note])
}

pub fn show(state: &ApiState, call: &Call, id: i64) -> Result<Reply, ApiError> {
    let who = call.principal(state, true)?;
    let row = accessible(state, &who, id, Access::Read)?;
    Ok(json_reply(200, &token_json(state, &row)))
}

pub fn update(state: &ApiState, call: &Call, id: i64) -> Result<Reply, ApiError> {
    call.only_fields(&["name", "redaction", "region", "server"])?;
    let who = call.principal(state, true)?;
    let change = TokenUpdate {
        name: call.str_field("name")?.map(valid_name).transpose()?,
        redaction: call.str_field("redaction")?.map(parse_tier).transpose()?,
        region: nullable(call, "region", valid_region)?,
        server: nullable(call, "server", valid_server)?,
    };
    let row = accessible(state, &who, id, Access::Change)?;
    // Where a token sends its bearer is its user's choice alone: an admin (or a
    // weaker token) that could point it elsewhere could collect the secret.
    let moves = change.region.is_some() || change.server.is_some();
    if moves && row.user_id != who.user.id {
        return Err(ApiError::Forbidden(format!(
            "Only {}, the token's own user, may change its server or region.",
            row.username
        )));
    }
    let row = state
        .store
        .tokens()
        .update(row.id, &change)
        .map_err(|err| match err {
            StoreError::Conflict => ApiError::Conflict(
                "That name is taken by another active token of the same user and crew.".into(),
            ),
            other => other.into(),
        })?;
    state.audit(
        call,
        Some(&who),
        Some(row.crew.id),
        "token.update",
        format!("token {}", row.id),
    );
    Ok(json_reply(200, &token_json(state, &row)))
}

/// A field that may be set to a value or cleared with null; absent leaves it alone.
fn nullable(
    call: &Call,
    name: &str,
    check: fn(&str) -> Result<String, ApiError>,
) -> Result<Option<Option<String>>, ApiError> {
    if !call.body.contains_key(name) {
        return Ok(None);
    }
    match call.str_field(name)? {
        None => Ok(Some(None)),
        Some("") => Ok(Some(None)),
        Some(value) => Ok(Some(Some(check(value)?))),
    }
}

pub fn revoke(state: &ApiState, call: &Call, id: i64) -> Result<Reply, ApiError> {
    let who = call.principal(state, true)?;
    let row = accessible(state, &who, id, Access::Revoke)?;
    let row = state.store.tokens().revoke(row.id)?;
    state.audit(
        call,
        Some(&who),
        Some(row.crew.id),
        "token.revoke",
        format!("token {} \"{}\"", row.id, row.name),
    );
    let mut reply = token_json(state, &row);
    if flag(call.query.get("disconnect").map(String::as_str)) {
        let closed = super::tunnels::close_for_token(state, call, &who, row.id);
        reply["tunnels_closed"] = json!(closed);
    }
    Ok(json_reply(200, &reply))
}

pub fn bulk(state: &ApiState, call: &Call) -> Result<Reply, ApiError> {
    call.only_fields(&["action", "ids", "redaction", "disconnect"])?;
    let who = call.principal(state, true)?;
    let disconnect = match call.field("disconnect") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(ApiError::BadRequest(
                "Field `disconnect` must be true or false.".into(),
            ))
        }
    };
    let action = call.required_str("action")?;
    let tier = match action {
        "revoke" => None,
        "set_redaction" => Some(parse_tier(call.required_str("redaction")?)?),
        other => {
            return Err(ApiError::BadRequest(format!(
                "Field `action`: `{other}` is not an action; use revoke or set_redaction."
            )))
        }
    };
    let ids: Vec<i64> = match call.field("ids") {
        Some(Value::Array(items)) if !items.is_empty() && items.len() <= MAX_BULK => items
            .iter()
            .map(Value::as_i64)
            .collect::<Option<_>>()
            .ok_or_else(|| {
                ApiError::BadRequest("Field `ids` must be a list of token ids.".into())
            })?,
        _ => {
            return Err(ApiError::BadRequest(format!(
                "Field `ids` must be a list of 1 to {MAX_BULK} token ids."
            )))
        }
    };
    let mut updated = Vec::new();
    let mut failed = Vec::new();
    for id in ids {
        let access = if tier.is_some() {
            Access::Change
        } else {
            Access::Revoke
        };
        let outcome = accessible(state, &who, id, access).and_then(|row| {
            let row = match tier {
                None => state.store.tokens().revoke(row.id)?,
                Some(tier) => state.store.tokens().update(
                    row.id,
                    &TokenUpdate {
                        redaction: Some(tier),
                        ..TokenUpdate::default()
                    },
                )?,
            };
            Ok(row)
        });
        match outcome {
            Ok(row) => {
                let what = if tier.is_some() {
                    "token.set_redaction"
                } else {
                    "token.revoke"
                };
                state.audit(
                    call,
                    Some(&who),
                    Some(row.crew.id),
                    what,
                    format!("token {} (bulk)", row.id),
                );
                if disconnect && tier.is_none() {
                    super::tunnels::close_for_token(state, call, &who, row.id);
                }
                updated.push(id);
            }
            Err(err) => {
                let (_, code, message) = err.parts();
                failed.push(json!({"id": id, "error": {"code": code, "message": message}}));
            }
        }
    }
    Ok(json_reply(
        200,
        &json!({"updated": updated, "failed": failed}),
    ))
}

/// A query flag: `1` or `true`.
fn flag(value: Option<&str>) -> bool {
    matches!(value, Some("1" | "true"))
}

/// What a caller wants to do with a token.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Access {
    Read,
    Revoke,
    Change,
}

/// The token, if the caller may do `access` to it. Tokens the caller may not
/// see are reported as not found, so their ids tell nothing.
fn accessible(
    state: &ApiState,
    who: &Principal,
    id: i64,
    access: Access,
) -> Result<TokenRow, ApiError> {
    let missing = || {
        ApiError::NotFound(format!(
            "No token {id} that you can see; see `berth tokens list`."
        ))
    };
    let row = state.store.tokens().find_by_id(id)?.ok_or_else(missing)?;
    // A token may always read and revoke itself (berth logout --revoke), but
    // changing its own settings needs the scope like any other change.
    if access != Access::Change && who.token().is_some_and(|t| t.id == row.id) {
        return Ok(row);
    }
    if let Some(ctx) = &who.token_context {
        if ctx.crew.id != row.crew.id {
            return Err(missing());
        }
    }
    let own = row.user_id == who.user.id;
    let role = match &who.token_context {
        Some(ctx) => Some(ctx.role),
        None => state
            .store
            .crews()
            .membership(row.crew.id, who.user.id)?
            .map(|m| m.role),
    };
    let (own_action, crew_action) = if access != Access::Read {
        (Action::WriteOwnTokens, Action::WriteCrewTokens)
    } else {
        (Action::ReadOwnTokens, Action::ReadCrewTokens)
    };
    let scopes = who.scopes();
    let allowed = if own {
        // Your own tokens stay yours to see and revoke even after you leave the crew.
        role.is_none_or(|role| allows(role, &scopes, own_action))
    } else {
        role.is_some_and(|role| allows(role, &scopes, crew_action))
    };
    if allowed {
        check_not_stronger(who, &row, access)?;
        Ok(row)
    } else if own || role.is_some_and(|role| allows(role, &scopes, Action::ReadCrewTokens)) {
        Err(ApiError::Forbidden(
            "Your role or this token's scopes do not allow changing that token.".into(),
        ))
    } else {
        Err(missing())
    }
}

/// A token never changes or revokes a stronger token: one that holds scopes
/// it does not (`berth:*` holds them all), or that lives longer (an expiring
/// token pointing a never-expiring one at its own server would collect a
/// secret that outlives it). A password or session holds everything.
fn check_not_stronger(who: &Principal, row: &TokenRow, access: Access) -> Result<(), ApiError> {
    let Some(token) = who.token() else {
        return Ok(());
    };
    if access == Access::Read {
        return Ok(());
    }
    if !scopes_cover(&token.scopes, &row.scopes) {
        return Err(ApiError::Forbidden(format!(
            "Token {} has scopes this token lacks ({}); change it with a token that has them, or from the dashboard.",
            row.id,
            row.scopes.join(", ")
        )));
    }
    if outlives(row.expires_at.as_deref(), token.expires_at.as_deref()) {
        return Err(ApiError::Forbidden(format!(
            "Token {} expires later than this token ({}); change it with a token that lives as long, or from the dashboard.",
            row.id,
            row.expires_at.as_deref().unwrap_or("never")
        )));
    }
    Ok(())
}

/// Whether a token expiring at `theirs` outlives one expiring at `mine` (None:
/// never). An expiry that does not parse counts as the longer one.
fn outlives(theirs: Option<&str>, mine: Option<&str>) -> bool {
    match (theirs, mine) {
        (_, None) => false,
        (None, Some(_)) => true,
        (Some(theirs), Some(mine)) => time_fmt::parse(theirs)
            .zip(time_fmt::parse(mine))
            .is_none_or(|(theirs, mine)| theirs > mine),
    }
}

fn parse_tier(text: &str) -> Result<Redaction, ApiError> {
    Redaction::parse(text).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "Field `redaction`: `{text}` is not a tier; use {}.",
            Redaction::NAMES
        ))
    })
}

fn valid_name(name: &str) -> Result<String, ApiError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME || name.chars().any(char::is_control) {
        return Err(ApiError::BadRequest(format!(
            "Field `name` must be 1 to {MAX_NAME} printable characters, e.g. \"MacBook Pro - Development\"."
        )));
    }
    if let Some(c) = crate::text::invisible_in(name) {
        return Err(ApiError::BadRequest(format!(
            "Field `name` contains U+{:04X}, an invisible formatting character (bidi control or zero-width); remove it.",
            c as u32
        )));
    }
    Ok(name.to_string())
}

fn valid_region(region: &str) -> Result<String, ApiError> {
    if region.is_empty()
        || region.len() > 32
        || !region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(ApiError::BadRequest(
            "Field `region` must be 1 to 32 of a-z, 0-9 and -.".into(),
        ));
    }
    Ok(region.to_string())
}

/// A preferred server: `berth share` sends the bearer there, so nothing that
/// could read as another host (user info, backslashes) is taken.
fn valid_server(server: &str) -> Result<String, ApiError> {
    if server.len() > 200 || crate::origin::server_origin(server).is_none() {
        return Err(ApiError::BadRequest(
            "Field `server` must be an http:// or https:// URL of a host and optional port, without user@ or ?query, e.g. https://berth.example.com.".into(),
        ));
    }
    Ok(server.trim_end_matches('/').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_that_lives_longer_is_stronger() {
        let day = Some("2030-01-02T00:00:00Z");
        let later = Some("2030-01-03T00:00:00Z");
        assert!(!outlives(None, None));
        assert!(!outlives(later, None));
        assert!(outlives(None, day));
        assert!(outlives(later, day));
        assert!(!outlives(day, day));
        assert!(!outlives(day, later));
        assert!(outlives(Some("garbage"), day));
    }

    #[test]
    fn names_refuse_bidi_zero_width_and_control_characters() {
        for bad in [
            "ci\u{202E}nimda",
            "admin\u{200B}",
            "a\u{2066}b\u{2069}",
            "\u{FEFF}laptop",
            "x\u{200E}",
            "x\u{2060}y",
            "tag\u{E0041}",
            "soft\u{AD}hyphen",
            "bell\u{7}",
            "c1\u{85}x",
            "ci\u{3164}",
            "\u{115F}admin",
            "a\u{34F}b",
            "ci\u{FE0F}",
            "\u{FE0E}x",
            "x\u{E0100}",
            "x\u{180B}",
        ] {
            let err = valid_name(bad).unwrap_err();
            assert!(err.parts().2.contains("`name`"), "{bad:?}");
        }
        for good in [
            "MacBook Pro - Development",
            "Büro – CI",
            "日本語 laptop",
            "emoji 🚀",
            "love \u{2764}\u{FE0F}",
            "한국어 CI",
        ] {
            assert_eq!(valid_name(good).unwrap(), good);
        }
    }
}
