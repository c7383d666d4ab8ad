//! The routing table: each (method, path template) and its handler, checked by the OpenAPI tests.

use tiny_http::{Method, Response};

use super::{
    crews, header, parse_id, session, subdomains, tokens, tunnels, ApiError, ApiState, Call, Reply,
};

/// A handler; `params` are the path's `{...}` segments in order.
type Handler = fn(&ApiState, &Call, &[&str]) -> Result<Reply, ApiError>;

/// One row of the routing table.
pub struct Route {
    pub method: &'static str,
    /// `/`-separated; a `{name}` segment matches any one segment.
    pub path: &'static str,
    handler: Handler,
}

const fn route(method: &'static str, path: &'static str, handler: Handler) -> Route {
    Route {
        method,
        path,
        handler,
    }
}

/// Every endpoint of the API (the dashboard's pages are served apart).
pub const ROUTES: &[Route] = &[
    route("GET", "/healthz", |_, _, _| {
        Ok(Response::from_string("ok\n").with_header(header("Content-Type", "text/plain")))
    }),
    route("GET", "/metrics", |state, _, _| {
        let text = crate::metrics::render(state.relay.live_count());
        Ok(Response::from_string(text)
            .with_header(header("Content-Type", crate::metrics::CONTENT_TYPE)))
    }),
    route("GET", "/api/v1/openapi.json", |_, _, _| {
        Ok(Response::from_string(super::openapi::DOCUMENT)
            .with_header(header("Content-Type", "application/json")))
    }),
    route("GET", "/api/v1/me", |s, c, _| session::me(s, c)),
    route("POST", "/api/v1/me/password", |s, c, _| {
        session::change_password(s, c)
    }),
    route("POST", "/api/v1/session", |s, c, _| session::sign_in(s, c)),
    route("DELETE", "/api/v1/session", |s, c, _| {
        session::sign_out(s, c)
    }),
    route("DELETE", "/api/v1/sessions", |s, c, _| {
        session::sign_out_everywhere(s, c)
    }),
    route("POST", "/api/v1/setup", |s, c, _| session::setup(s, c)),
    route("GET", "/api/v1/crews", |s, c, _| crews::list(s, c)),
    route("PATCH", "/api/v1/crews/{id}", |s, c, p| {
        crews::update(s, c, parse_id(p[0])?)
    }),
    route("GET", "/api/v1/crews/{id}/members", |s, c, p| {
        crews::members(s, c, parse_id(p[0])?)
    }),
    route("POST", "/api/v1/crews/{id}/members", |s, c, p| {
        crews::add_member(s, c, parse_id(p[0])?)
    }),
    route(
        "PATCH",
        "/api/v1/crews/{id}/members/{user_id}",
        |s, c, p| crews::set_role(s, c, parse_id(p[0])?, parse_id(p[1])?),
    ),
    route(
        "DELETE",
        "/api/v1/crews/{id}/members/{user_id}",
        |s, c, p| crews::remove_member(s, c, parse_id(p[0])?, parse_id(p[1])?),
    ),
    route("GET", "/api/v1/audit", |s, c, _| crews::audit(s, c)),
    route("GET", "/api/v1/tokens", |s, c, _| tokens::list(s, c)),
    route("POST", "/api/v1/tokens", |s, c, _| tokens::create(s, c)),
    route("POST", "/api/v1/tokens/bulk", |s, c, _| tokens::bulk(s, c)),
    route("GET", "/api/v1/tokens/{id}", |s, c, p| {
        tokens::show(s, c, parse_id(p[0])?)
    }),
    route("PATCH", "/api/v1/tokens/{id}", |s, c, p| {
        tokens::update(s, c, parse_id(p[0])?)
    }),
    route("DELETE", "/api/v1/tokens/{id}", |s, c, p| {
        tokens::revoke(s, c, parse_id(p[0])?)
    }),
    route("GET", "/api/v1/tunnels", |s, c, _| tunnels::list(s, c)),
    route("DELETE", "/api/v1/tunnels/{id}", |s, c, p| {
        tunnels::close(s, c, p[0])
    }),
    route("GET", "/api/v1/tunnels/{id}/requests", |s, c, p| {
        tunnels::requests(s, c, p[0])
    }),
    route("GET", "/api/v1/subdomains", |s, c, _| {
        subdomains::list(s, c)
    }),
    route("POST", "/api/v1/subdomains", |s, c, _| {
        subdomains::reserve(s, c)
    }),
    route("DELETE", "/api/v1/subdomains/{name}", |s, c, p| {
        subdomains::release(s, c, p[0])
    }),
];

/// The path's `{...}` segments if `template` matches it, else `None`.
fn matches<'a>(template: &str, segments: &[&'a str]) -> Option<Vec<&'a str>> {
    let parts: Vec<&str> = template.split('/').skip(1).collect();
    if parts.len() != segments.len() {
        return None;
    }
    let mut params = Vec::new();
    for (part, segment) in parts.iter().zip(segments) {
        if part.starts_with('{') {
            params.push(*segment);
        } else if part != segment {
            return None;
        }
    }
    Some(params)
}

/// The routes whose template matches the path, the most literal ones only (so
/// `/tokens/bulk` is never taken for `/tokens/{id}`).
fn candidates<'a>(segments: &[&'a str]) -> Vec<(&'static Route, Vec<&'a str>)> {
    let found: Vec<_> = ROUTES
        .iter()
        .filter_map(|r| matches(r.path, segments).map(|p| (r, p)))
        .collect();
    let fewest = found.iter().map(|(_, p)| p.len()).min().unwrap_or(0);
    found
        .into_iter()
        .filter(|(_, p)| p.len() == fewest)
        .collect()
}

/// Call the handler for this method and path: 405 for a known path with another
/// method, 404 for an unknown path.
pub fn dispatch(
    state: &ApiState,
    call: &Call,
    method: &Method,
    segments: &[&str],
) -> Result<Reply, ApiError> {
    let found = candidates(segments);
    if found.is_empty() {
        return Err(ApiError::NotFound(format!("Nothing at {}.", call.path)));
    }
    let wanted = method.as_str();
    match found.iter().find(|(r, _)| r.method == wanted) {
        Some((route, params)) => (route.handler)(state, call, params),
        None => Err(ApiError::MethodNotAllowed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (method, template, params) of every candidate route for a path.
    fn routed(path: &str) -> Vec<(&'static str, &'static str, Vec<String>)> {
        let segments: Vec<&str> = path.split('/').skip(1).collect();
        candidates(&segments)
            .into_iter()
            .map(|(r, p)| (r.method, r.path, p.iter().map(|s| s.to_string()).collect()))
            .collect()
    }

    #[test]
    fn literal_segments_win_over_parameters() {
        let found = routed("/api/v1/tokens/bulk");
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].1, "/api/v1/tokens/bulk");
        let found = routed("/api/v1/tokens/17");
        assert_eq!(found.len(), 3);
        assert!(found.iter().all(|(_, _, p)| p == &["17"]));
        let found = routed("/api/v1/crews/2/members/9");
        assert_eq!(found[0].2, ["2", "9"]);
        assert!(routed("/api/v1/tokens/17/extra").is_empty());
        assert!(routed("/api/v1").is_empty());
    }

    #[test]
    fn every_route_is_unique_and_well_formed() {
        for (i, a) in ROUTES.iter().enumerate() {
            assert!(a.path.starts_with('/') && !a.path.ends_with('/'));
            assert!(["GET", "POST", "PATCH", "DELETE"].contains(&a.method));
            for b in &ROUTES[i + 1..] {
                assert!(
                    (a.method, a.path) != (b.method, b.path),
                    "{} {}",
                    a.method,
                    a.path
                );
            }
        }
    }
}
