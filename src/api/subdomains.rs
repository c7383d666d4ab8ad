//! `/api/v1/subdomains`: the names the caller's crew holds, and reserving and
//! releasing them (admin and owner), like ngrok's reserved domains.

use serde_json::{json, Value};

use super::{json_reply, ApiError, ApiState, Call, Reply};
use crate::auth::{allows, Action};
use crate::relay::ClaimError;
use crate::store::{Reserved, SubdomainRow};

/// The subdomain object: the name, its public URL and why the crew holds it.
fn subdomain_json(state: &ApiState, row: &SubdomainRow) -> Value {
    json!({
        "name": row.name,
        "url": state.relay.url_of(&row.name),
        "reserved": row.reserved,
        "live": row.live,
        "held_until": if row.reserved || row.live { None } else { row.held_until.clone() },
        "created_at": row.created_at,
    })
}

/// `GET /api/v1/subdomains`: the crew's reserved names, the ones its live
/// tunnels are on and the ones it still holds after use, by name.
pub fn list(state: &ApiState, call: &Call) -> Result<Reply, ApiError> {
    let who = call.principal(state, false)?;
    let ctx = call.context(state, &who, call.crew_selector()?.as_deref())?;
    if !allows(ctx.role, &who.scopes(), Action::ReadTunnels) {
        return Err(ApiError::Forbidden(
            "Listing the crew's subdomains needs the tunnels:read scope.".into(),
        ));
    }
    let rows = state.store.subdomains().list_for_crew(ctx.crew.id)?;
    let names: Vec<Value> = rows.iter().map(|r| subdomain_json(state, r)).collect();
    Ok(json_reply(200, &json!({ "subdomains": names })))
}

/// `POST /api/v1/subdomains` `{name}`: reserve a name for the crew; 409 if
/// another crew holds it.
pub fn reserve(state: &ApiState, call: &Call) -> Result<Reply, ApiError> {
    call.only_fields(&["name", "crew"])?;
    let who = call.principal(state, false)?;
    let ctx = call.context(state, &who, call.crew_selector()?.as_deref())?;
    if !allows(ctx.role, &who.scopes(), Action::ReserveNames) {
        return Err(ApiError::Forbidden(
            "Reserving subdomains needs the admin or owner role and the crew:admin scope.".into(),
        ));
    }
    let name = call.required_str("name")?;
    match state.relay.names.check(name) {
        Ok(()) => {}
        Err(ClaimError::Invalid(why)) => return Err(ApiError::BadRequest(why)),
        Err(_) => return Err(ApiError::Internal),
    }
    let most = state.relay.names.most_per_crew;
    match state.store.subdomains().reserve(name, ctx.crew.id, most)? {
        Reserved::Done => {}
        Reserved::Taken(row) => {
            let why = if row.reserved {
                "another crew reserved it"
            } else {
                "another crew uses it or used it last"
            };
            return Err(ApiError::Conflict(format!(
                "The subdomain {name} is taken: {why}; choose another name."
            )));
        }
        Reserved::Full => {
            return Err(ApiError::QuotaExceeded(format!(
                "Crew `{}` reserves {most} names, the most a crew may; release one first (`berth subdomains list`, `berth subdomains release NAME`).",
                ctx.crew.name
            )));
        }
    }
    state.audit(
        call,
        Some(&who),
        Some(ctx.crew.id),
        "subdomain.reserve",
        format!("subdomain {name}"),
    );
    let row = find(state, name, ctx.crew.id)?;
    Ok(json_reply(201, &subdomain_json(state, &row)))
}

/// `DELETE /api/v1/subdomains/{name}`: give up the crew's reservation; 404 if
/// the crew has none (another crew's reservation is as unknown).
pub fn release(state: &ApiState, call: &Call, name: &str) -> Result<Reply, ApiError> {
    let who = call.principal(state, false)?;
    let ctx = call.context(state, &who, call.crew_selector()?.as_deref())?;
    if !allows(ctx.role, &who.scopes(), Action::ReserveNames) {
        return Err(ApiError::Forbidden(
            "Releasing subdomains needs the admin or owner role and the crew:admin scope.".into(),
        ));
    }
    if !state.store.subdomains().release(name, ctx.crew.id)? {
        return Err(ApiError::NotFound(format!(
            "Your crew has no reservation of {name}; see `berth subdomains list`."
        )));
    }
    state.audit(
        call,
        Some(&who),
        Some(ctx.crew.id),
        "subdomain.release",
        format!("subdomain {name}"),
    );
    // Still held after use, or free: the object says which.
    let row = state
        .store
        .subdomains()
        .list_for_crew(ctx.crew.id)?
        .into_iter()
        .find(|r| r.name == name);
    Ok(json_reply(
        200,
        &json!({
            "name": name,
            "released": true,
            "held_until": row.and_then(|r| r.held_until),
        }),
    ))
}

/// The crew's row for a name it holds.
fn find(state: &ApiState, name: &str, crew_id: i64) -> Result<SubdomainRow, ApiError> {
    state
        .store
        .subdomains()
        .list_for_crew(crew_id)?
        .into_iter()
        .find(|r| r.name == name)
        .ok_or(ApiError::Internal)
}
