//! Durations as users write them (DESIGN §3): `30s`, `15m`, `24h`, `7d`.

use std::time::Duration;

/// Longest duration accepted: a year, far beyond any sensible hold or timeout.
const MAX_SECS: u64 = 366 * 24 * 3600;

/// Parse `N` followed by `s`, `m`, `h` or `d`; a clap value parser.
pub fn parse(text: &str) -> Result<Duration, String> {
    let bad = || {
        format!("`{text}` is not a duration: write a whole number and s, m, h or d, e.g. 30s, 15m, 24h or 7d")
    };
    let text = text.trim();
    let unit = text.chars().last().ok_or_else(bad)?;
    let per = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => return Err(bad()),
    };
    let number = &text[..text.len() - 1];
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let secs = number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(per))
        .filter(|s| *s <= MAX_SECS)
        .ok_or_else(|| format!("`{text}` is longer than a year; choose a shorter duration"))?;
    Ok(Duration::from_secs(secs))
}

/// Like [`parse`], refusing zero: for timeouts, which must end some time.
pub fn parse_positive(text: &str) -> Result<Duration, String> {
    match parse(text)? {
        Duration::ZERO => Err(format!(
            "`{}` is no time at all: give a positive duration, e.g. 30s, 10m or 24h",
            text.trim()
        )),
        positive => Ok(positive),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_refuse() {
        assert_eq!(parse("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse(" 7d "), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse("0s"), Ok(Duration::ZERO));
        for bad in ["", "s", "10", "1.5h", "-1s", "1w", "h1", "1 h", "+1s"] {
            assert!(parse(bad).unwrap_err().contains("e.g. 30s"), "{bad}");
        }
        assert!(parse("400d").unwrap_err().contains("longer than a year"));
        assert!(parse("99999999999999999999s").is_err());
    }

    #[test]
    fn timeouts_are_positive() {
        assert_eq!(parse_positive("10m"), Ok(Duration::from_secs(600)));
        assert!(parse_positive("0s").unwrap_err().contains("positive"));
        assert!(parse_positive("10").unwrap_err().contains("e.g. 30s"));
    }
}
