//! The CLI's API client (ureq) and the mapping of failures to exit codes.

use std::path::Path;
use std::time::Duration;

use base64ct::{Base64, Encoding};
use serde_json::Value;
use ureq::tls::{Certificate, RootCerts, TlsConfig};
use ureq::Agent;

use crate::config::{Masked, Settings};
use crate::exit::{self, write_stderr, CliError};

/// Longest wait for a TCP (and TLS) connection to the server.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for a whole call, request to last byte of the answer.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// How a request proves who is asking.
#[derive(Debug, Clone)]
pub enum Auth {
    Bearer(Masked),
    Basic { username: String, password: Masked },
}

impl Auth {
    fn header(&self) -> String {
        match self {
            Auth::Bearer(token) => format!("Bearer {}", token.expose()),
            Auth::Basic { username, password } => {
                let pair = format!("{username}:{}", password.expose());
                format!("Basic {}", Base64::encode_string(pair.as_bytes()))
            }
        }
    }
}

/// A connection to one berth server with one identity.
pub struct Client {
    agent: Agent,
    server: String,
    auth: Auth,
}

impl Client {
    /// A client that sends the resolved token (refused here if missing or malformed).
    pub fn with_token(settings: &Settings) -> Result<Client, CliError> {
        let token = settings.require_token()?;
        if let Some(note) = settings.token_note() {
            write_stderr(&format!("{note}\n"));
        }
        Client::new(settings, Auth::Bearer(Masked::new(token.expose())))
    }

    /// A client for the server in `settings` with the given identity.
    pub fn new(settings: &Settings, auth: Auth) -> Result<Client, CliError> {
        let server = &settings.server;
        if !server.starts_with("http://") && !server.starts_with("https://") {
            return Err(CliError::usage(format!(
                "Server `{server}` is not a URL; use e.g. --server http://localhost:8080"
            )));
        }
        let mut config = Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_global(Some(CALL_TIMEOUT))
            .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")));
        if server.starts_with("https://") || settings.ca_cert.is_some() {
            let roots = load_roots(settings.ca_cert.as_deref())?;
            config = config.tls_config(TlsConfig::builder().root_certs(roots).build());
        }
        Ok(Client {
            agent: config.build().new_agent(),
            server: settings.server.clone(),
            auth,
        })
    }

    /// The server this client talks to.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// GET a path with query pairs; the JSON answer.
    pub fn get(&self, path: &str, query: &[(&str, &str)]) -> Result<Value, CliError> {
        let request = self
            .agent
            .get(self.url(path))
            .header("Authorization", self.auth.header())
            .query_pairs(query.iter().copied());
        self.finish(request.call())
    }

    /// POST a JSON body; the JSON answer.
    pub fn post(&self, path: &str, body: &Value) -> Result<Value, CliError> {
        let request = self
            .agent
            .post(self.url(path))
            .header("Authorization", self.auth.header())
            .content_type("application/json");
        self.finish(request.send(body.to_string()))
    }

    /// PATCH a JSON body; the JSON answer.
    pub fn patch(&self, path: &str, body: &Value) -> Result<Value, CliError> {
        let request = self
            .agent
            .patch(self.url(path))
            .header("Authorization", self.auth.header())
            .content_type("application/json");
        self.finish(request.send(body.to_string()))
    }

    /// DELETE a path; the JSON answer (null for 204).
    pub fn delete(&self, path: &str) -> Result<Value, CliError> {
        let request = self
            .agent
            .delete(self.url(path))
            .header("Authorization", self.auth.header());
        self.finish(request.call())
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server)
    }

    fn finish(
        &self,
        sent: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<Value, CliError> {
        let mut response = sent.map_err(|err| unreachable_server(&self.server, &err))?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = response
            .body_mut()
            .read_to_string()
            .map_err(|err| unreachable_server(&self.server, &err))?;
        if !(200..300).contains(&status) {
            return Err(error_from_response(status, retry_after.as_deref(), &body));
        }
        if body.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&body).map_err(|_| {
            CliError::other(format!(
                "The server at {} sent an answer berth could not read; check that --server points at a berth server",
                self.server
            ))
        })
    }
}

/// The system's roots, or only the private CA's: the same trust as `share`'s.
fn load_roots(ca_cert: Option<&Path>) -> Result<RootCerts, CliError> {
    let certs = crate::tls::trusted(ca_cert).map_err(CliError::other)?;
    let certs: Vec<Certificate<'static>> = certs
        .iter()
        .map(|der| Certificate::from_der(der.as_ref()).to_owned())
        .collect();
    Ok(RootCerts::new_with_certs(&certs))
}

/// "could not reach server URL: reason" for a failure before any HTTP answer.
fn unreachable_server(server: &str, err: &ureq::Error) -> CliError {
    let reason = match err {
        ureq::Error::Io(io) => match io.kind() {
            std::io::ErrorKind::ConnectionRefused => "connection refused".to_string(),
            std::io::ErrorKind::ConnectionReset => "connection reset".to_string(),
            std::io::ErrorKind::TimedOut => "timed out".to_string(),
            _ => io.to_string(),
        },
        ureq::Error::Timeout(_) => "timed out".to_string(),
        ureq::Error::BadUri(uri) => {
            format!("not a valid URL ({uri}); use e.g. http://localhost:8080")
        }
        other => other.to_string(),
    };
    let hint = if reason.contains("certificate") {
        "; if the server uses a private CA, pass --ca-cert FILE (or set BERTH_CA_CERT)"
    } else {
        ""
    };
    CliError::other(format!("could not reach server {server}: {reason}{hint}"))
}

/// Turn an error answer into one sentence that says what to do next.
pub fn error_from_response(status: u16, retry_after: Option<&str>, body: &str) -> CliError {
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    let error = parsed.as_ref().and_then(|v| v.get("error"));
    let code = error
        .and_then(|e| e.get("code"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let message = error
        .and_then(|e| e.get("message"))
        .and_then(Value::as_str)
        .map(sentence)
        .unwrap_or_default();
    let or = |fallback: &str| {
        if message.is_empty() {
            fallback.to_string()
        } else {
            message.clone()
        }
    };
    let (exit_code, text) = match (status, code) {
        (401, "no_token") => (
            exit::NOT_AUTHENTICATED,
            "The server got no token; run `berth login` or pass --token".to_string(),
        ),
        (401, "token_expired") => (
            exit::NOT_AUTHENTICATED,
            "This token has expired; run `berth login` for a new one".to_string(),
        ),
        (401, "bad_credentials") => (
            exit::NOT_AUTHENTICATED,
            "Wrong username or password; check them and try again".to_string(),
        ),
        (401, _) => (
            exit::NOT_AUTHENTICATED,
            "Invalid token: it may be revoked or expired; run `berth login` for a new one"
                .to_string(),
        ),
        (403, "no_team_context") => (
            exit::FORBIDDEN,
            "No team context: the token's user is no longer a member of its crew; ask a crew admin to add you back, or run `berth login --crew C` for another crew".to_string(),
        ),
        (403, _) => (
            exit::FORBIDDEN,
            or("Forbidden: your role in the crew or the token's scopes do not allow this"),
        ),
        (404, _) => (exit::NOT_FOUND, or("Not found on the server")),
        (409, _) => (exit::CONFLICT, or("That name is already taken")),
        (429, _) => {
            let wait = retry_after
                .and_then(|s| s.trim().parse::<u64>().ok())
                .map_or("a minute".to_string(), |n| {
                    format!("{n} second{}", if n == 1 { "" } else { "s" })
                });
            (
                exit::OTHER,
                format!("Too many failed attempts; try again in {wait}"),
            )
        }
        (_, _) if !message.is_empty() => (exit::OTHER, message.clone()),
        (status, _) if status >= 500 => (
            exit::OTHER,
            format!("The server failed ({status}); try again, and check the server's log if it persists"),
        ),
        (status, _) => (
            exit::OTHER,
            format!("The server refused the request ({status}); check that --server points at a berth server"),
        ),
    };
    CliError::new(exit_code, text)
}

/// The server's message as a sentence: capital first letter, no trailing period.
fn sentence(text: &str) -> String {
    let text = text.trim().trim_end_matches('.');
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(code: &str, message: &str) -> String {
        serde_json::json!({"error": {"code": code, "message": message}}).to_string()
    }

    #[test]
    fn statuses_map_to_exit_codes() {
        let cases = [
            (401, "invalid_token", exit::NOT_AUTHENTICATED),
            (401, "bad_credentials", exit::NOT_AUTHENTICATED),
            (403, "no_team_context", exit::FORBIDDEN),
            (403, "forbidden", exit::FORBIDDEN),
            (404, "not_found", exit::NOT_FOUND),
            (409, "conflict", exit::CONFLICT),
            (429, "rate_limited", exit::OTHER),
            (400, "bad_request", exit::OTHER),
            (500, "internal", exit::OTHER),
        ];
        for (status, code, want) in cases {
            let err = error_from_response(status, None, &body(code, "x"));
            assert_eq!(err.code, want, "{status} {code}");
        }
    }

    #[test]
    fn messages_say_what_to_do_next() {
        let err = error_from_response(401, None, &body("invalid_token", "Invalid token"));
        assert_eq!(
            err.message,
            "Invalid token: it may be revoked or expired; run `berth login` for a new one"
        );
        let err = error_from_response(429, Some("42"), &body("rate_limited", "slow down"));
        assert_eq!(
            err.message,
            "Too many failed attempts; try again in 42 seconds"
        );
        let err = error_from_response(404, None, &body("not_found", "token 9 not found."));
        assert_eq!(err.message, "Token 9 not found");
        let err = error_from_response(403, None, &body("no_team_context", "No team context"));
        assert!(err.message.starts_with("No team context"));
        let err = error_from_response(400, None, &body("bad_request", "name is required"));
        assert_eq!(err.message, "Name is required");
    }

    #[test]
    fn non_json_answers_still_read_as_sentences() {
        let err = error_from_response(502, None, "<html>Bad Gateway</html>");
        assert_eq!(err.code, exit::OTHER);
        assert!(err.message.contains("502") && !err.message.contains("html"));
        let err = error_from_response(401, None, "");
        assert_eq!(err.code, exit::NOT_AUTHENTICATED);
    }

    #[test]
    fn auth_debug_masks_secrets() {
        let auth = Auth::Basic {
            username: "alice".into(),
            password: Masked::new("hunter2"),
        };
        assert!(!format!("{auth:?}").contains("hunter2"));
    }
}
