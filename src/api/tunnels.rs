//! `/api/v1/tunnels`: the crew's live and recent tunnels, closing one, and its recorded requests.

use serde_json::{json, Value};

use super::{json_reply, user_json, ApiError, ApiState, Call, Reply};
use crate::auth::{allows, Action, Principal};
use crate::store::{RequestRow, Role, TunnelRow};

/// The tunnel object of DESIGN §4.
pub fn tunnel_json(row: &TunnelRow) -> Value {
    json!({
        "id": row.id,
        "kind": row.kind,
        "url": row.url,
        "subdomain": row.subdomain,
        "crew": {"id": row.crew_id, "name": row.crew_name},
        "user": user_json(row.user_id, &row.username),
        "token": {"id": row.token_id, "name": row.token_name},
        "opened_at": row.opened_at,
        "closed_at": row.closed_at,
        "active": row.active(),
        "request_count": row.request_count,
    })
}

/// Records per page when `limit` is not given, and the most a page may hold.
pub const DEFAULT_PAGE: u32 = 50;
pub const MAX_PAGE: u32 = 1000;

/// An inspector record as the API shows it.
pub fn request_json(row: &RequestRow) -> Value {
    let r = &row.record;
    json!({
        "id": row.id,
        "tunnel_id": r.tunnel_id,
        "at": r.at,
        "method": r.method,
        "path": r.path,
        "status": r.status,
        "duration_ms": r.duration_ms,
        "bytes_in": r.bytes_in,
        "bytes_out": r.bytes_out,
        "request_headers": r.request_headers,
        "response_headers": r.response_headers,
    })
}

/// `GET /api/v1/tunnels/{id}/requests[?limit=N][&before=ID]`: a tunnel's
/// recorded requests, newest first, to any member of its crew.
pub fn requests(state: &ApiState, call: &Call, id: &str) -> Result<Reply, ApiError> {
    let who = call.principal(state, false)?;
    let limit =
        query_number(call, "limit", 1, i64::from(MAX_PAGE))?.map_or(DEFAULT_PAGE, |n| n as u32);
    let before = query_number(call, "before", 1, i64::MAX)?;
    // Another crew's tunnel is as unknown as one that never existed.
    let missing = || {
        ApiError::NotFound(format!(
            "No tunnel {id} in your crew; see `berth tunnels list`."
        ))
    };
    let row = state.store.tunnels().find_by_id(id)?.ok_or_else(missing)?;
    let role = role_in(state, &who, row.crew_id)?.ok_or_else(missing)?;
    if !allows(role, &who.scopes(), Action::ReadTraffic) {
        return Err(ApiError::Forbidden(
            "Reading recorded traffic needs the traffic:read scope.".into(),
        ));
    }
    let rows = state.store.requests().list(&row.id, before, limit)?;
    let requests: Vec<Value> = rows.iter().map(request_json).collect();
    Ok(json_reply(200, &json!({ "requests": requests })))
}

/// A whole number from `min` to `max` in the query, if given; else 400 naming it.
fn query_number(call: &Call, name: &str, min: i64, max: i64) -> Result<Option<i64>, ApiError> {
    let Some(text) = call.query.get(name) else {
        return Ok(None);
    };
    text.parse::<i64>()
        .ok()
        .filter(|n| (min..=max).contains(n) && text.bytes().all(|b| b.is_ascii_digit()))
        .map(Some)
        .ok_or_else(|| {
            let range = if max == i64::MAX {
                format!("a whole number of at least {min}")
            } else {
                format!("a whole number from {min} to {max}")
            };
            ApiError::BadRequest(format!("Query `{name}` must be {range}; got `{text}`."))
        })
}

/// `GET /api/v1/tunnels[?active=1]`: the caller's crew's tunnels, newest first.
pub fn list(state: &ApiState, call: &Call) -> Result<Reply, ApiError> {
    let who = call.principal(state, false)?;
    let ctx = call.context(state, &who, call.crew_selector()?.as_deref())?;
    if !allows(ctx.role, &who.scopes(), Action::ReadTunnels) {
        return Err(ApiError::Forbidden(
            "Listing tunnels needs the tunnels:read scope.".into(),
        ));
    }
    let active = matches!(
        call.query.get("active").map(String::as_str),
        Some("1" | "true")
    );
    let rows = state.store.tunnels().list_for_crew(ctx.crew.id, active)?;
    let tunnels: Vec<Value> = rows.iter().map(tunnel_json).collect();
    Ok(json_reply(200, &json!({ "tunnels": tunnels })))
}

/// `DELETE /api/v1/tunnels/{id}`: close a live tunnel. 409 if it is already closed.
pub fn close(state: &ApiState, call: &Call, id: &str) -> Result<Reply, ApiError> {
    let who = call.principal(state, false)?;
    let missing = || {
        ApiError::NotFound(format!(
            "No tunnel {id} in your crew; see `berth tunnels list`."
        ))
    };
    let row = state.store.tunnels().find_by_id(id)?.ok_or_else(missing)?;
    let role = role_in(state, &who, row.crew_id)?.ok_or_else(missing)?;
    let scopes = who.scopes();
    let own = row.user_id == who.user.id;
    let allowed = (own && allows(role, &scopes, Action::CloseOwnTunnels))
        || allows(role, &scopes, Action::CloseCrewTunnels);
    if !allowed {
        return Err(ApiError::Forbidden(if own {
            "Closing your tunnel needs the member role or above and the tunnels:share scope.".into()
        } else {
            "Closing another member's tunnel needs the admin or owner role and the crew:admin scope."
                .into()
        }));
    }
    if !row.active() {
        return Err(ApiError::Conflict(format!(
            "Tunnel {id} is already closed."
        )));
    }
    // Recorded before the relay lets go, so the close is the caller's in the audit.
    if state.store.tunnels().close(&row.id)? {
        state.audit(
            call,
            Some(&who),
            Some(row.crew_id),
            "tunnel.close",
            format!("tunnel {} {}", row.id, row.url),
        );
    }
    let reason = format!("closed by {} (berth tunnels close)", who.user.username);
    state.relay.close_by_id(&row.id, &reason);
    let row = state.store.tunnels().find_by_id(id)?.ok_or_else(missing)?;
    Ok(json_reply(200, &tunnel_json(&row)))
}

/// Close the live tunnels a token opened (`tokens revoke --disconnect`); how many.
pub fn close_for_token(state: &ApiState, call: &Call, who: &Principal, token_id: i64) -> usize {
    let reason = format!("its token was revoked by {}", who.user.username);
    let live = state.relay.ids_of_token(token_id);
    close_live(
        state,
        call,
        who,
        &live,
        &reason,
        &format!("token {token_id} revoked"),
    );
    live.len()
}

/// Close a member's live tunnels in a crew after they lost the right to share
/// there (`why`: "removed from the crew", "made viewer"); how many.
pub fn close_for_member(
    state: &ApiState,
    call: &Call,
    who: &Principal,
    crew_id: i64,
    member: (i64, &str),
    why: &str,
) -> usize {
    let (user_id, username) = member;
    let live = match state.store.tunnels().live_ids_of_member(crew_id, user_id) {
        Ok(live) => live,
        Err(err) => {
            eprintln!("berth: could not find the live tunnels of {username}: {err}");
            return 0;
        }
    };
    let reason = format!("{username} was {why} by {}", who.user.username);
    close_live(
        state,
        call,
        who,
        &live,
        &reason,
        &format!("{username} {why}"),
    );
    live.len()
}

/// Close live tunnels, telling each client `reason`; a `tunnel.close` audit
/// event per tunnel whose close this recorded, with `cause` in its detail.
fn close_live(
    state: &ApiState,
    call: &Call,
    who: &Principal,
    ids: &[String],
    reason: &str,
    cause: &str,
) {
    for id in ids {
        let recorded = state.store.tunnels().close(id);
        state.relay.close_by_id(id, reason);
        match recorded {
            Ok(true) => {
                let crew_id = state
                    .store
                    .tunnels()
                    .find_by_id(id)
                    .ok()
                    .flatten()
                    .map(|row| row.crew_id);
                state.audit(
                    call,
                    Some(who),
                    crew_id,
                    "tunnel.close",
                    format!("tunnel {id} ({cause})"),
                );
            }
            Ok(false) => {}
            Err(err) => eprintln!("berth: could not record tunnel {id} closed: {err}"),
        }
    }
}

/// The caller's role in a crew: a token speaks only for its own crew.
fn role_in(state: &ApiState, who: &Principal, crew_id: i64) -> Result<Option<Role>, ApiError> {
    if let Some(ctx) = &who.token_context {
        return Ok((ctx.crew.id == crew_id).then_some(ctx.role));
    }
    Ok(state
        .store
        .crews()
        .membership(crew_id, who.user.id)?
        .map(|m| m.role))
}
