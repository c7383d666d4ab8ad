//! The redaction tiers: which header values, query values and URL credentials a record keeps, applied before a record exists.

use super::REDACTED;
use crate::store::Redaction;

/// Header names redacted by the standard tier (and so by strict), lowercase,
/// `-` for `_`.
const STANDARD_NAMES: [&str; 8] = [
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "api-key",
    "x-api-key",
    "x-auth-token",
    "x-access-token",
];
/// Name endings redacted by the standard tier.
const STANDARD_SUFFIXES: [&str; 3] = ["-token", "-key", "-secret"];
/// Parts of a name that make a header sensitive under standard (and so strict):
/// `X-Authorization`, `X_Api_Key` and `X-Password` are as secret as the plain names.
const STANDARD_PARTS: [&str; 8] = [
    "authorization",
    "password",
    "passwd",
    "secret",
    "token",
    "api-key",
    "apikey",
    "credential",
];
/// Header names strict adds to standard, lowercase.
const STRICT_NAMES: [&str; 8] = [
    "x-csrf-token",
    "x-xsrf-token",
    "x-csrftoken",
    "csrf-token",
    "session-id",
    "x-session-id",
    "x-amz-security-token",
    "x-amz-credential",
];
/// Parts of a name that make a header or a query parameter sensitive under strict.
const STRICT_PARTS: [&str; 6] = ["session", "csrf", "xsrf", "secret", "token", "signature"];
/// Query parameters strict redacts besides those containing a standard or
/// strict part: names containing this...
const STRICT_PARAM_PARTS: [&str; 1] = ["private-key"];
/// ...or named exactly one of these.
const STRICT_PARAM_NAMES: [&str; 7] = ["key", "auth", "pwd", "sig", "code", "jwt", "otp"];
/// Headers whose values carry URLs: strict redacts their query values and
/// user:password as it does the recorded path's.
const URL_HEADERS: [&str; 5] = ["referer", "location", "content-location", "refresh", "link"];

/// A name byte as names are compared: lowercase, `_` read as `-`.
fn fold(byte: u8) -> u8 {
    match byte {
        b'_' => b'-',
        other => other.to_ascii_lowercase(),
    }
}

/// Whether `name` equals `folded` (lowercase, `-` for `_`) once folded.
fn same_name(name: &[u8], folded: &str) -> bool {
    name.len() == folded.len() && name.iter().zip(folded.bytes()).all(|(a, b)| fold(*a) == b)
}

fn name_ends(name: &[u8], folded: &str) -> bool {
    name.len() >= folded.len() && same_name(&name[name.len() - folded.len()..], folded)
}

fn name_holds(name: &[u8], folded: &str) -> bool {
    name.windows(folded.len()).any(|w| same_name(w, folded))
}

/// Whether a header's value is redacted under `tier` (`Inherit` is treated as strict:
/// an unresolved tier must not record more than the strictest would).
pub fn is_redacted_header(tier: Redaction, name: &str) -> bool {
    // Every header of every request passes here: compared in place, no copy.
    let name = name.as_bytes();
    let standard = STANDARD_NAMES.iter().any(|n| same_name(name, n))
        || STANDARD_SUFFIXES.iter().any(|s| name_ends(name, s))
        || STANDARD_PARTS.iter().any(|p| name_holds(name, p));
    if standard || tier == Redaction::Standard {
        return standard;
    }
    STRICT_NAMES.iter().any(|n| same_name(name, n))
        || STRICT_PARTS.iter().any(|p| name_holds(name, p))
}

/// Whether a query parameter's value is redacted under strict (standard keeps the path).
pub fn is_redacted_param(name: &str) -> bool {
    let name = percent_decode(name);
    let name = name.as_bytes();
    STANDARD_PARTS
        .iter()
        .chain(&STRICT_PARTS)
        .chain(&STRICT_PARAM_PARTS)
        .any(|p| name_holds(name, p))
        || STRICT_PARAM_NAMES.iter().any(|n| same_name(name, n))
}

/// Headers with the values of the tier's sensitive names replaced; under
/// strict, the URLs in `Referer`, `Location` and the like redacted as the path is.
pub fn redact_headers(tier: Redaction, headers: Vec<(String, String)>) -> Vec<(String, String)> {
    headers
        .into_iter()
        .map(|(name, value)| {
            if is_redacted_header(tier, &name) {
                (name, REDACTED.to_string())
            } else if tier != Redaction::Standard
                && URL_HEADERS.iter().any(|h| same_name(name.as_bytes(), h))
            {
                let value = redact_urls(&value);
                (name, value)
            } else {
                (name, value)
            }
        })
        .collect()
}

/// The request target as recorded: under strict (or an unresolved tier), the
/// values of sensitive query parameters and any user:password replaced;
/// standard keeps it whole.
pub fn redact_path(tier: Redaction, target: &str) -> String {
    if tier == Redaction::Standard {
        return target.to_string();
    }
    let target = redact_userinfo(target);
    let (path, query) = match target.find(['?', '#']) {
        Some(start) => target.split_at(start),
        None => (target.as_str(), ""),
    };
    let mut out = redact_path_parameters(path);
    if let Some(separator) = query.chars().next() {
        out.push(separator);
        out.push_str(&redact_query(&query[1..]));
    }
    out
}

/// A path with the values of sensitive `;name=value` segment parameters
/// (`/app;jsessionid=...`) replaced.
fn redact_path_parameters(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut rest = path;
    while let Some(start) = rest.find(';') {
        out.push_str(&rest[..=start]);
        rest = &rest[start + 1..];
        let end = rest.find('/').unwrap_or(rest.len());
        out.push_str(&redact_query(&rest[..end]));
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// Text holding URLs (a header value) with every query's and fragment's
/// sensitive values and every user:password replaced.
fn redact_urls(text: &str) -> String {
    let text = redact_userinfo(text);
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(start) = rest.find(['?', '#']) {
        out.push_str(&rest[..=start]);
        rest = &rest[start + 1..];
        let end = rest.find(ends_url).unwrap_or(rest.len());
        out.push_str(&redact_query(&rest[..end]));
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// Where a URL inside a header value ends: `<...>` in `Link`, quotes in `Refresh`.
fn ends_url(c: char) -> bool {
    matches!(c, '>' | '"' | '\'' | '<') || c.is_whitespace()
}

/// A query with the values of sensitive parameters replaced. Parameters are
/// split at `&` and `;` and also at `?` and `#`, so a URL inside a value
/// (`next=/a?token=x`) or a fragment (`#access_token=x`) is covered too;
/// the separators stay as written.
fn redact_query(query: &str) -> String {
    let mut out = String::with_capacity(query.len());
    let mut rest = query;
    loop {
        let end = rest.find(['&', ';', '?', '#']).unwrap_or(rest.len());
        match rest[..end].split_once('=') {
            Some((name, _)) if is_redacted_param(name) => {
                out.push_str(name);
                out.push('=');
                out.push_str(REDACTED);
            }
            _ => out.push_str(&rest[..end]),
        }
        let Some(separator) = rest[end..].chars().next() else {
            return out;
        };
        out.push(separator);
        rest = &rest[end + 1..];
    }
}

/// Text with the user:password of every URL in it (`scheme://user:pw@host`)
/// replaced: `scheme://[REDACTED]@host`.
fn redact_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("://") {
        out.push_str(&rest[..start + 3]);
        rest = &rest[start + 3..];
        let authority = rest.find(ends_authority).unwrap_or(rest.len());
        if let Some(at) = rest[..authority].rfind('@') {
            out.push_str(REDACTED);
            rest = &rest[at..];
        }
    }
    out.push_str(rest);
    out
}

/// Where a URL's authority ends.
fn ends_authority(c: char) -> bool {
    matches!(c, '/' | '?' | '#') || ends_url(c)
}

/// `%XX` decoded (for matching names only; bad escapes stay as written).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| {
            let h = std::str::from_utf8(h).ok()?;
            u8::from_str_radix(h, 16).ok()
        });
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const STANDARD: Redaction = Redaction::Standard;
    const STRICT: Redaction = Redaction::Strict;

    #[test]
    fn standard_redacts_its_exact_names_in_any_case() {
        for name in [
            "Authorization",
            "PROXY-AUTHORIZATION",
            "cookie",
            "Set-Cookie",
            "Api-Key",
            "x-api-key",
            "X-Auth-Token",
            "X-ACCESS-TOKEN",
        ] {
            assert!(is_redacted_header(STANDARD, name), "{name}");
            assert!(is_redacted_header(STRICT, name), "{name}");
        }
    }

    #[test]
    fn standard_redacts_token_key_and_secret_endings() {
        for name in [
            "X-Github-Token",
            "X-Service-KEY",
            "Client-Secret",
            "a-token",
        ] {
            assert!(is_redacted_header(STANDARD, name), "{name}");
        }
        for name in ["Keys", "Monkey", "Content-Type", "Host", "Author"] {
            assert!(!is_redacted_header(STANDARD, name), "{name}");
        }
    }

    #[test]
    fn names_match_with_underscores_for_dashes_and_any_prefix() {
        for name in [
            "X_Api_Key",
            "API_KEY",
            "x_auth_token",
            "X-Authorization",
            "X-Password",
            "Db_Passwd",
            "X-Apikey",
            "Client_Secret",
            "Secretive",
            "X-Tokens",
            "Token",
            "X-Credentials",
            "proxy_authorization",
            "SET_COOKIE",
        ] {
            assert!(is_redacted_header(STANDARD, name), "{name}");
            assert!(is_redacted_header(STRICT, name), "{name}");
        }
        assert!(is_redacted_header(STRICT, "X_Session_Id"));
        assert!(is_redacted_header(STRICT, "x_csrftoken"));
        assert!(!is_redacted_header(STANDARD, "X_Session_Id"));
    }

    #[test]
    fn strict_adds_its_names_and_any_name_containing_the_parts() {
        for name in [
            "X-CSRF-Token",
            "x-xsrf-token",
            "X-CSRFToken",
            "Csrf-Token",
            "Session-ID",
            "X-Session-Id",
            "X-Amz-Security-Token",
            "X-AMZ-CREDENTIAL",
            "MySessionThing",
            "xcsrf",
            "Xsrf",
            "Secretive",
            "Tokens",
            "X-Amz-Signature",
        ] {
            assert!(is_redacted_header(STRICT, name), "{name}");
        }
        for name in ["Session-ID", "X-Amz-Signature", "Signature", "Xsrf"] {
            assert!(!is_redacted_header(STANDARD, name), "{name}");
        }
        for name in ["Content-Type", "Host", "User-Agent", "X-Forwarded-For"] {
            assert!(!is_redacted_header(STRICT, name), "{name}");
        }
    }

    #[test]
    fn an_unresolved_tier_redacts_like_strict() {
        assert!(is_redacted_header(Redaction::Inherit, "X-Session-Id"));
        assert_eq!(
            redact_path(Redaction::Inherit, "/a?token=1"),
            "/a?token=[REDACTED]"
        );
    }

    #[test]
    fn redacted_values_read_redacted_and_others_stay() {
        let headers = vec![
            ("Host".to_string(), "a.localhost".to_string()),
            ("Cookie".to_string(), "sid=1".to_string()),
        ];
        assert_eq!(
            redact_headers(STANDARD, headers),
            [
                ("Host".to_string(), "a.localhost".to_string()),
                ("Cookie".to_string(), REDACTED.to_string())
            ]
        );
    }

    #[test]
    fn strict_redacts_sensitive_query_values_and_standard_keeps_the_path() {
        let target = "/cb?code=abc&state=ok&access_token=t1&X-Amz-Signature=s&page=2&API_KEY=k&Session=x&flag&key=v&monkey=m&%74oken=enc";
        assert_eq!(redact_path(STANDARD, target), target);
        assert_eq!(
            redact_path(STRICT, target),
            "/cb?code=[REDACTED]&state=ok&access_token=[REDACTED]&X-Amz-Signature=[REDACTED]&page=2&API_KEY=[REDACTED]&Session=[REDACTED]&flag&key=[REDACTED]&monkey=m&%74oken=[REDACTED]"
        );
        assert_eq!(redact_path(STRICT, "/plain"), "/plain");
        for name in [
            "password",
            "user_passwd",
            "apikey",
            "api-key",
            "csrf",
            "xsrf_t",
            "client_secret",
            "sig",
            "pwd",
            "jwt",
            "otp",
            "auth",
            "authorization",
            "x-amz-credential",
            "private_key",
        ] {
            assert!(is_redacted_param(name), "{name}");
        }
        for name in ["page", "q", "author", "monkey", "state", "id"] {
            assert!(!is_redacted_param(name), "{name}");
        }
    }

    #[test]
    fn strict_splits_parameters_at_semicolons_and_nested_urls() {
        assert_eq!(
            redact_path(STRICT, "/a;jsessionid=s1;v=2/b;x=y?x=1;token=t2&page=3"),
            "/a;jsessionid=[REDACTED];v=2/b;x=y?x=1;token=[REDACTED]&page=3"
        );
        assert_eq!(
            redact_path(STRICT, "/login?next=/home?api_key=k&ok=1"),
            "/login?next=/home?api_key=[REDACTED]&ok=1"
        );
        assert_eq!(redact_path(STRICT, "/a?"), "/a?");
        assert_eq!(redact_path(STRICT, "/a?;&=;"), "/a?;&=;");
        assert_eq!(
            redact_path(STRICT, "/a?X_Auth_Token=t"),
            "/a?X_Auth_Token=[REDACTED]"
        );
    }

    #[test]
    fn strict_redacts_user_and_password_in_urls() {
        assert_eq!(
            redact_path(STRICT, "http://bob:hunter2@example.com/x?q=1"),
            "http://[REDACTED]@example.com/x?q=1"
        );
        assert_eq!(
            redact_path(STRICT, "/go?to=https://u:p@w@h.example/p"),
            "/go?to=https://[REDACTED]@h.example/p"
        );
        assert_eq!(
            redact_path(STRICT, "/mail?to=user@example.com"),
            "/mail?to=user@example.com"
        );
        assert_eq!(
            redact_path(STANDARD, "http://bob:pw@h/"),
            "http://bob:pw@h/"
        );
    }

    #[test]
    fn strict_redacts_urls_inside_url_headers_only() {
        let headers = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect()
        };
        let seen = headers(&[
            ("Referer", "https://a.example/p?token=t1&q=ok"),
            ("LOCATION", "https://u:pw@b.example/cb?code=c1;state=s#access_token=t2&x=1"),
            ("Content_Location", "/doc?sig=s1"),
            ("Refresh", "5; url='https://c.example/?session=s2'"),
            (
                "Link",
                "<https://d.example/?page=2&token=t3>; rel=\"next\", <https://d.example/?page=1>; rel=\"prev\"",
            ),
            ("X-Other", "https://e.example/?token=kept"),
        ]);
        let got = redact_headers(STRICT, seen.clone());
        let want = headers(&[
            ("Referer", "https://a.example/p?token=[REDACTED]&q=ok"),
            (
                "LOCATION",
                "https://[REDACTED]@b.example/cb?code=[REDACTED];state=s#access_token=[REDACTED]&x=1",
            ),
            ("Content_Location", "/doc?sig=[REDACTED]"),
            ("Refresh", "5; url='https://c.example/?session=[REDACTED]'"),
            (
                "Link",
                "<https://d.example/?page=2&token=[REDACTED]>; rel=\"next\", <https://d.example/?page=1>; rel=\"prev\"",
            ),
            ("X-Other", "https://e.example/?token=kept"),
        ]);
        assert_eq!(got, want);
        assert_eq!(redact_headers(STANDARD, seen.clone()), seen);
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        /// Parameter names, sensitive or not, written in any case and with `_` or `-`.
        fn param_name() -> impl Strategy<Value = (String, bool)> {
            let names = prop::sample::select(vec![
                ("access_token", true),
                ("Api-Key", true),
                ("X_Amz_Signature", true),
                ("session", true),
                ("code", true),
                ("db-password", true),
                ("page", false),
                ("q", false),
                ("state", false),
                ("monkey", false),
            ]);
            (names, any::<bool>()).prop_map(|((name, secret), upper)| {
                let name = if upper {
                    name.to_ascii_uppercase()
                } else {
                    name.to_string()
                };
                (name, secret)
            })
        }

        /// A URL with parameters after `?` (and `#`), split by `&` and `;`,
        /// maybe a user:password; values are markers naming their position.
        fn url() -> impl Strategy<Value = (String, Vec<(String, bool)>)> {
            let param = (param_name(), prop::sample::select(vec!["&", ";"]));
            (
                any::<bool>(),
                prop::collection::vec(param, 1..6),
                any::<bool>(),
            )
                .prop_map(|(userinfo, params, fragment)| {
                    let mut markers = Vec::new();
                    let mut url = String::from("https://");
                    if userinfo {
                        url.push_str("bob:pwmarker@");
                        markers.push(("pwmarker".to_string(), true));
                    }
                    url.push_str("h.example/p?");
                    for (i, ((name, secret), separator)) in params.into_iter().enumerate() {
                        if i > 0 {
                            url.push_str(if fragment && i == 1 { "#" } else { separator });
                        }
                        let marker = format!("v{i}marker");
                        url.push_str(&format!("{name}={marker}"));
                        markers.push((marker, secret));
                    }
                    (url, markers)
                })
        }

        proptest! {
            #[test]
            fn strict_keeps_no_sensitive_value_and_every_other((url, markers) in url()) {
                let path = format!("/go?next={url}");
                for shown in [
                    redact_path(STRICT, &path),
                    redact_headers(STRICT, vec![("Location".into(), url.clone())]).remove(0).1,
                ] {
                    for (marker, secret) in &markers {
                        prop_assert_eq!(shown.contains(marker.as_str()), !secret, "{} in {}", marker, shown);
                    }
                    prop_assert_eq!(redact_path(STRICT, &shown), shown.clone(), "redacting twice changes nothing");
                }
            }

            #[test]
            fn any_text_redacts_without_panic(text in any::<String>(), name in any::<String>()) {
                let once = redact_path(STRICT, &text);
                prop_assert_eq!(redact_path(STRICT, &once), once);
                redact_headers(STRICT, vec![(name, text.clone()), ("Link".into(), text)]);
            }
        }
    }
}
