//! What names may look like, checked alike by the server and the CLI (which
//! refuses a bad one before it asks): subdomains (DESIGN §6) and the names
//! of users and crews. Who may *have* a subdomain is the relay's
//! (`relay::names`).

/// Longest subdomain label.
pub const MAX_SUBDOMAIN: usize = 63;
/// Names no tunnel may take.
const RESERVED: [&str; 16] = [
    "www",
    "api",
    "admin",
    "app",
    "dashboard",
    "relay",
    "berth",
    "mail",
    "smtp",
    "ftp",
    "ns",
    "ns1",
    "ns2",
    "static",
    "assets",
    "status",
];

/// Check a requested subdomain against DESIGN §6's rules; the sentence saying why not.
pub fn check_subdomain(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= MAX_SUBDOMAIN
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if !valid {
        return Err(format!(
            "The subdomain `{name}` is not valid: use 1 to 63 of a-z, 0-9 and -, not starting or ending with -."
        ));
    }
    // `xn--` (and any `??--`, which IDNA keeps for such encodings) is an
    // encoded international name: a browser may show `xn--dsh-...` as a
    // look-alike of the server's own name or of another crew's.
    if name.get(2..4) == Some("--") {
        return Err(format!(
            "The subdomain `{name}` is not valid: `--` as its third and fourth characters marks an encoded international name, which browsers may show as a look-alike of another; choose another."
        ));
    }
    if RESERVED.contains(&name) {
        return Err(format!(
            "The subdomain `{name}` is reserved; choose another."
        ));
    }
    Ok(())
}

/// The rule for user and crew names: 1 to `max` letters, digits, `.`, `_`
/// or `-`, not only digits.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subdomain_rules() {
        for good in [
            "a",
            "my-app",
            "x1",
            "a--b",
            "abc--d",
            &"a".repeat(MAX_SUBDOMAIN),
        ] {
            assert_eq!(check_subdomain(good), Ok(()), "{good}");
        }
        let long = "a".repeat(MAX_SUBDOMAIN + 1);
        for bad in [
            "",
            "-a",
            "a-",
            "A",
            "a.b",
            "a_b",
            "www",
            "api",
            "admin",
            &long,
            "xn--dsh-5na",
            "ab--c",
        ] {
            assert!(check_subdomain(bad).is_err(), "{bad}");
        }
    }
}
