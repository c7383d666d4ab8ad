//! The API's one error type, mapped to (status, code, message) in one match.
//! The JSON API and the relay's own API paths (`tunnels/connect`,
//! `tunnels/accept`) both answer with it, so it sits below both.

use std::time::Duration;

use crate::auth::AuthError;
use crate::store::StoreError;

#[derive(Debug)]
pub enum ApiError {
    NoToken,
    InvalidToken,
    TokenExpired,
    BadCredentials,
    NoTeamContext,
    Forbidden(String),
    NotFound(String),
    Conflict(String),
    BadRequest(String),
    /// The tunnel's region is not the one this server serves; the message names it.
    RegionNotServed(String),
    /// A limit on live tunnels is reached; the message names it and what to do.
    QuotaExceeded(String),
    RateLimited(Duration),
    MethodNotAllowed,
    PayloadTooLarge,
    Busy,
    DiskFull,
    Internal,
}

impl ApiError {
    /// Status, error code and the one sentence a caller reads.
    pub fn parts(&self) -> (u16, &'static str, String) {
        match self {
            ApiError::NoToken => (
                401,
                "no_token",
                "No token: send Authorization: Bearer <token>, or sign in.".into(),
            ),
            ApiError::InvalidToken => (401, "invalid_token", "Invalid token".into()),
            ApiError::TokenExpired => (
                401,
                "token_expired",
                "The token has expired; create a new one.".into(),
            ),
            ApiError::BadCredentials => {
                (401, "bad_credentials", "Wrong username or password.".into())
            }
            ApiError::NoTeamContext => (403, "no_team_context", "No team context".into()),
            ApiError::Forbidden(why) => (403, "forbidden", why.clone()),
            ApiError::NotFound(what) => (404, "not_found", what.clone()),
            ApiError::Conflict(why) => (409, "conflict", why.clone()),
            ApiError::BadRequest(why) => (400, "bad_request", why.clone()),
            ApiError::RegionNotServed(why) => (400, "region_not_served", why.clone()),
            ApiError::QuotaExceeded(why) => (403, "quota_exceeded", why.clone()),
            ApiError::RateLimited(wait) => (
                429,
                "rate_limited",
                format!(
                    "Too many failed sign-ins; try again in {} seconds.",
                    wait.as_secs().max(1)
                ),
            ),
            ApiError::MethodNotAllowed => (
                405,
                "method_not_allowed",
                "This path does not take that method; see /api/v1/openapi.json.".into(),
            ),
            ApiError::PayloadTooLarge => (
                413,
                "payload_too_large",
                "The request body is larger than 64 KiB; send less.".into(),
            ),
            ApiError::Busy => (
                503,
                "busy",
                "The database is busy; try again in a moment.".into(),
            ),
            ApiError::DiskFull => (
                507,
                "disk_full",
                "The server's disk is full; free some space and try again.".into(),
            ),
            ApiError::Internal => (
                500,
                "internal",
                "The server hit an internal error; see its log.".into(),
            ),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> ApiError {
        match err {
            StoreError::Conflict => ApiError::Conflict("That name is already taken.".into()),
            StoreError::NotFound => ApiError::NotFound("Not found.".into()),
            StoreError::Busy => ApiError::Busy,
            StoreError::Full => ApiError::DiskFull,
            StoreError::Db(err) => {
                eprintln!("berth: database error: {err}");
                ApiError::Internal
            }
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(err: AuthError) -> ApiError {
        match err {
            AuthError::InvalidToken => ApiError::InvalidToken,
            AuthError::TokenExpired => ApiError::TokenExpired,
            AuthError::BadCredentials => ApiError::BadCredentials,
            AuthError::NoTeamContext => ApiError::NoTeamContext,
            AuthError::RateLimited(wait) => ApiError::RateLimited(wait),
            AuthError::Store(err) => err.into(),
        }
    }
}
