//! The origin of a berth server's URL, read strictly: where `berth share`
//! sends the bearer, and what the API takes as a token's preferred server.

/// Where a server URL sends requests, and with them the bearer: the scheme,
/// the host in lower case (an IPv6 literal keeps its brackets) and the port,
/// made explicit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerOrigin {
    pub tls: bool,
    pub host: String,
    pub port: u16,
}

/// The origin of an `http://` or `https://` server URL, or None when it has
/// anything a reader could mistake for another host: user info
/// (`http://good.host@evil.host`), a backslash, a query or fragment, spaces or
/// controls, a host of other characters than letters, digits, `.`, `-`, `_`, or
/// a port outside 1-65535.
pub fn server_origin(url: &str) -> Option<ServerOrigin> {
    let lower = url.to_ascii_lowercase();
    let (tls, rest) = match (
        lower.strip_prefix("http://"),
        lower.strip_prefix("https://"),
    ) {
        (Some(rest), _) => (false, rest),
        (_, Some(rest)) => (true, rest),
        _ => return None,
    };
    if rest
        .chars()
        .any(|c| matches!(c, '@' | '\\' | '?' | '#') || c.is_whitespace() || c.is_control())
    {
        return None;
    }
    let authority = rest.split('/').next().unwrap_or("");
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => {
            let (inside, after) = v6.split_once(']')?;
            let literal = !inside.is_empty()
                && inside.contains(':')
                && inside
                    .chars()
                    .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.');
            if !literal {
                return None;
            }
            let port = match after {
                "" => None,
                _ => Some(after.strip_prefix(':')?),
            };
            (format!("[{inside}]"), port)
        }
        None => match authority.split_once(':') {
            Some((host, port)) => (host.to_string(), Some(port)),
            None => (authority.to_string(), None),
        },
    };
    if !host.starts_with('[')
        && (host.is_empty()
            || host.starts_with('.')
            || !host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-_".contains(&b)))
    {
        return None;
    }
    let port = match port {
        None if tls => 443,
        None => 80,
        // All digits: `parse` alone would take `+80`.
        Some(digits) if digits.bytes().all(|b| b.is_ascii_digit()) => {
            digits.parse::<u16>().ok().filter(|p| *p > 0)?
        }
        Some(_) => return None,
    };
    Some(ServerOrigin { tls, host, port })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_origins_name_where_the_bearer_goes() {
        let at = |tls, host: &str, port| {
            Some(ServerOrigin {
                tls,
                host: host.to_string(),
                port,
            })
        };
        let cases = [
            ("http://berth.lan", at(false, "berth.lan", 80)),
            ("HTTP://Berth.LAN:8080/", at(false, "berth.lan", 8080)),
            ("https://berth.example", at(true, "berth.example", 443)),
            (
                "https://berth.example.:8443/x",
                at(true, "berth.example.", 8443),
            ),
            ("http://[::1]:8080", at(false, "[::1]", 8080)),
            ("https://[2001:DB8::1]", at(true, "[2001:db8::1]", 443)),
            ("http://127.0.0.1:8080", at(false, "127.0.0.1", 8080)),
            ("http://good.host@evil.host/", None),
            ("http://good.host:80@evil.host", None),
            ("http://good.host\\@evil.host", None),
            ("http://evil.host?@good.host", None),
            ("http://evil.host#@good.host", None),
            ("http://", None),
            ("http://:8080", None),
            ("http://host:0", None),
            ("http://host:65536", None),
            ("http://host:80:80", None),
            ("http://host:+80", None),
            ("http://[::1", None),
            ("http://[::1]x", None),
            ("http://[evil.host]", None),
            ("http://ho st", None),
            ("ftp://host", None),
        ];
        for (url, origin) in cases {
            assert_eq!(server_origin(url), origin, "{url}");
        }
    }
}
