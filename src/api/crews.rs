//! `/api/v1/crews`, members and roles, and the crew's audit log.

use serde_json::{json, Value};

use super::{json_reply, no_content, user_json, ApiError, ApiState, Call, Reply};
use crate::auth::{allows, Action, Principal};
use crate::relay::quota::Limits;
use crate::store::{Crew, Limit, Member, Membership, Redaction, Role, StoreError};

/// Most audit events one call returns.
const MAX_AUDIT: i64 = 1000;

/// The crew object: its own limit settings are null where the server's hold.
pub fn crew_json(crew: &Crew) -> Value {
    let mut out = json!({
        "id": crew.id,
        "name": crew.name,
        "default_redaction": crew.default_redaction.as_str(),
        "created_at": crew.created_at,
    });
    for limit in Limit::ALL {
        out[limit.setting()] = json!(crew.limits.get(limit));
    }
    out
}

/// The crew object with `limits`: what holds for it, its own or the server's.
fn crew_with_limits(state: &ApiState, crew: &Crew) -> Value {
    let mut out = crew_json(crew);
    let limits: serde_json::Map<String, Value> = Limit::ALL
        .iter()
        .map(|l| {
            (
                l.setting().to_string(),
                json!(state.relay.limits.in_crew(crew, *l).0),
            )
        })
        .collect();
    out["limits"] = Value::Object(limits);
    out
}

fn member_json(member: &Member) -> Value {
    json!({"user": user_json(member.user_id, &member.username), "role": member.role.as_str(), "joined_at": member.joined_at})
}

pub fn list(state: &ApiState, call: &Call) -> Result<Reply, ApiError> {
    let who = call.principal(state, false)?;
    // A token sees its own crew: the token determines team context.
    let memberships = match &who.token_context {
        Some(ctx) => vec![ctx.clone()],
        None => state.store.crews().memberships_of(who.user.id)?,
    };
    let crews: Vec<Value> = memberships
        .iter()
        .map(|m| {
            let mut crew = crew_with_limits(state, &m.crew);
            crew["role"] = json!(m.role.as_str());
            crew
        })
        .collect();
    Ok(json_reply(200, &json!({"crews": crews})))
}

/// The caller's membership of crew `id`, refused unless `action` is allowed.
fn in_crew(
    state: &ApiState,
    call: &Call,
    who: &Principal,
    id: i64,
    action: Action,
) -> Result<Membership, ApiError> {
    let ctx = call
        .context(state, who, Some(&id.to_string()))
        .map_err(|err| match err {
            ApiError::NotFound(_) => ApiError::NotFound(format!(
                "No crew {id} among your crews; see `berth crews list`."
            )),
            other => other,
        })?;
    if !allows(ctx.role, &who.scopes(), action) {
        let needs = match action {
            Action::ManageMembers => "the admin or owner role",
            Action::ManageOwners | Action::CrewSettings => "the owner role",
            Action::ReadAudit => "the admin or owner role",
            Action::LeaveCrew => "membership",
            _ => "a role",
        };
        let scoped = who
            .scopes()
            .iter()
            .any(|s| s == "berth:*" || s == "crew:admin");
        let scope = if !scoped {
            " and the crew:admin scope"
        } else {
            ""
        };
        return Err(ApiError::Forbidden(format!(
            "That needs {needs}{scope} in crew `{}`.",
            ctx.crew.name
        )));
    }
    Ok(ctx)
}

/// `PATCH /api/v1/crews/{id}`: the default redaction tier and the crew's
/// own limits on live tunnels (each at most the server's; null: the server's).
pub fn update(state: &ApiState, call: &Call, id: i64) -> Result<Reply, ApiError> {
    let mut known = vec!["default_redaction"];
    known.extend(Limit::ALL.map(Limit::setting));
    call.only_fields(&known)?;
    let who = call.principal(state, false)?;
    let tier = call
        .str_field("default_redaction")?
        .map(parse_tier)
        .transpose()?;
    let limits = limit_changes(call, &state.relay.limits)?;
    if tier.is_none() && limits.is_empty() {
        return Err(ApiError::BadRequest(format!(
            "Send at least one of {}.",
            known.join(", ")
        )));
    }
    let ctx = in_crew(state, call, &who, id, Action::CrewSettings)?;
    let mut crew = ctx.crew;
    if let Some(tier) = tier {
        crew = state.store.crews().set_default_redaction(crew.id, tier)?;
        state.audit(
            call,
            Some(&who),
            Some(crew.id),
            "crew.update",
            format!("default_redaction={}", tier.as_str()),
        );
    }
    if !limits.is_empty() {
        crew = state.store.crews().set_limits(crew.id, &limits)?;
        let detail: Vec<String> = limits
            .iter()
            .map(|(limit, value)| match value {
                Some(n) => format!("{}={n}", limit.setting()),
                None => format!("{}=server", limit.setting()),
            })
            .collect();
        state.audit(
            call,
            Some(&who),
            Some(crew.id),
            "crew.update",
            detail.join(" "),
        );
    }
    Ok(json_reply(200, &crew_with_limits(state, &crew)))
}

fn parse_tier(tier: &str) -> Result<Redaction, ApiError> {
    match Redaction::parse(tier) {
        Some(Redaction::Inherit) | None => Err(ApiError::BadRequest(format!(
            "Field `default_redaction`: `{tier}` is not a crew tier; use standard or strict."
        ))),
        Some(tier) => Ok(tier),
    }
}

/// The limit fields of a crew update: a whole number up to the server's, or
/// null to follow the server's again.
fn limit_changes(call: &Call, server: &Limits) -> Result<Vec<(Limit, Option<u32>)>, ApiError> {
    let mut changes = Vec::new();
    for limit in Limit::ALL {
        let name = limit.setting();
        if !call.has_field(name) {
            continue;
        }
        let most = server.get(limit);
        let value = call.int_field(name, 0, i64::from(most)).map_err(|_| {
            ApiError::BadRequest(format!(
                "Field `{name}` must be a whole number from 0 to {most} (the server's {}), or null for the server's; ask the server's operator for a higher {}.",
                Limits::flag(limit),
                Limits::flag(limit)
            ))
        })?;
        changes.push((limit, value.map(|n| n as u32)));
    }
    Ok(changes)
}

pub fn members(state: &ApiState, call: &Call, id: i64) -> Result<Reply, ApiError> {
    let who = call.principal(state, false)?;
    let ctx = in_crew(state, call, &who, id, Action::ReadMembers)?;
    let members = state.store.crews().members(ctx.crew.id)?;
    Ok(json_reply(
        200,
        &json!({"members": members.iter().map(member_json).collect::<Vec<_>>()}),
    ))
}

fn parse_role(text: &str) -> Result<Role, ApiError> {
    Role::parse(text).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "Field `role`: `{text}` is not a role; use {}.",
            Role::NAMES
        ))
    })
}

pub fn add_member(state: &ApiState, call: &Call, id: i64) -> Result<Reply, ApiError> {
    call.only_fields(&["username", "role"])?;
    let who = call.principal(state, false)?;
    let username = call.required_str("username")?;
    let role = parse_role(call.required_str("role")?)?;
    let action = if role == Role::Owner {
        Action::ManageOwners
    } else {
        Action::ManageMembers
    };
    let ctx = in_crew(state, call, &who, id, action)?;
    let user = state.store.users().find_by_name(username)?.ok_or_else(|| {
        ApiError::NotFound(format!(
            "No user `{username}`; create it with `berth admin create-user {username}`."
        ))
    })?;
    let member = state
        .store
        .crews()
        .add_member(ctx.crew.id, &user, role)
        .map_err(|err| match err {
            StoreError::Conflict => ApiError::Conflict(format!(
                "`{}` is already a member of crew `{}`; use set-role to change their role.",
                user.username, ctx.crew.name
            )),
            other => other.into(),
        })?;
    state.audit(
        call,
        Some(&who),
        Some(ctx.crew.id),
        "member.add",
        format!("{} as {}", user.username, role.as_str()),
    );
    Ok(json_reply(201, &member_json(&member)))
}

/// The member `user_id` of the caller's crew, checking the caller may manage them.
fn managed_member(
    state: &ApiState,
    call: &Call,
    who: &Principal,
    id: i64,
    user_id: i64,
    new_role: Option<Role>,
) -> Result<(Membership, Member), ApiError> {
    let ctx = in_crew(state, call, who, id, Action::ReadMembers)?;
    let target = state
        .store
        .crews()
        .members(ctx.crew.id)?
        .into_iter()
        .find(|m| m.user_id == user_id)
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "User {user_id} is not a member of crew `{}`.",
                ctx.crew.name
            ))
        })?;
    let leaving_self = new_role.is_none() && user_id == who.user.id;
    let touches_owner = target.role == Role::Owner || new_role == Some(Role::Owner);
    // Leaving needs no role, but a narrowly scoped token (CI, say) must not
    // take its user out of the crew.
    let action = if leaving_self {
        Action::LeaveCrew
    } else if touches_owner {
        Action::ManageOwners
    } else {
        Action::ManageMembers
    };
    in_crew(state, call, who, id, action)?;
    Ok((ctx, target))
}

fn last_owner(err: StoreError, crew: &str) -> ApiError {
    match err {
        StoreError::Conflict => ApiError::Conflict(format!(
            "Crew `{crew}` needs an owner; make another member owner first."
        )),
        other => other.into(),
    }
}

pub fn set_role(state: &ApiState, call: &Call, id: i64, user_id: i64) -> Result<Reply, ApiError> {
    call.only_fields(&["role"])?;
    let who = call.principal(state, false)?;
    let role = parse_role(call.required_str("role")?)?;
    let (ctx, target) = managed_member(state, call, &who, id, user_id, Some(role))?;
    let member = state
        .store
        .crews()
        .set_role(ctx.crew.id, user_id, role)
        .map_err(|e| last_owner(e, &ctx.crew.name))?;
    state.audit(
        call,
        Some(&who),
        Some(ctx.crew.id),
        "member.set_role",
        format!(
            "{} {} -> {}",
            target.username,
            target.role.as_str(),
            role.as_str()
        ),
    );
    // A viewer may not share: the tunnels they opened close with the right.
    if role < Action::ShareTunnels.needs().0 {
        let why = format!("made {}", role.as_str());
        let member = (user_id, target.username.as_str());
        super::tunnels::close_for_member(state, call, &who, ctx.crew.id, member, &why);
    }
    Ok(json_reply(200, &member_json(&member)))
}

pub fn remove_member(
    state: &ApiState,
    call: &Call,
    id: i64,
    user_id: i64,
) -> Result<Reply, ApiError> {
    let who = call.principal(state, false)?;
    let (ctx, target) = managed_member(state, call, &who, id, user_id, None)?;
    state
        .store
        .crews()
        .remove_member(ctx.crew.id, user_id)
        .map_err(|e| last_owner(e, &ctx.crew.name))?;
    state.audit(
        call,
        Some(&who),
        Some(ctx.crew.id),
        "member.remove",
        target.username.clone(),
    );
    let member = (user_id, target.username.as_str());
    let why = "removed from the crew";
    super::tunnels::close_for_member(state, call, &who, ctx.crew.id, member, why);
    Ok(no_content())
}

pub fn audit(state: &ApiState, call: &Call) -> Result<Reply, ApiError> {
    let who = call.principal(state, false)?;
    let selector = call.crew_selector()?;
    let ctx = call.context(state, &who, selector.as_deref())?;
    let ctx = in_crew(state, call, &who, ctx.crew.id, Action::ReadAudit)?;
    let limit = match call.query.get("limit") {
        None => 100,
        Some(text) => text
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=MAX_AUDIT).contains(n))
            .ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "Query `limit` must be a whole number from 1 to {MAX_AUDIT}."
                ))
            })?,
    };
    let events = state.store.audit().list(ctx.crew.id, limit as u32)?;
    Ok(json_reply(200, &json!({"events": events})))
}
