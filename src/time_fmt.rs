//! Times as RFC 3339 UTC strings with second precision, the one form stored and sent.

use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};

/// The current time as stored and sent.
pub fn now() -> String {
    format(OffsetDateTime::now_utc())
}

/// Format a time as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn format(at: OffsetDateTime) -> String {
    let at = at
        .to_offset(time::UtcOffset::UTC)
        .replace_nanosecond(0)
        .unwrap_or(at);
    at.format(&Rfc3339).unwrap_or_default()
}

/// Parse an RFC 3339 time.
pub fn parse(text: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(text, &Rfc3339).ok()
}

/// The time `days` from now.
pub fn days_from_now(days: u32) -> String {
    format(OffsetDateTime::now_utc() + Duration::days(days.into()))
}

/// The time `days` ago.
pub fn days_ago(days: u32) -> String {
    format(OffsetDateTime::now_utc() - Duration::days(days.into()))
}

/// Whether an RFC 3339 time lies in the past (unparseable counts as past).
pub fn is_past(text: &str) -> bool {
    parse(text).is_none_or(|at| at <= OffsetDateTime::now_utc())
}

/// "3 minutes ago"-style rendering for tables.
pub fn ago(text: &str) -> String {
    let Some(at) = parse(text) else {
        return text.to_string();
    };
    let secs = (OffsetDateTime::now_utc() - at).whole_seconds();
    let (n, unit) = match secs {
        s if s < 0 => return format!("in {}", ago_units(-s)),
        s => (s, ago_units(s)),
    };
    if n < 60 {
        "just now".to_string()
    } else {
        format!("{unit} ago")
    }
}

fn ago_units(secs: i64) -> String {
    let (n, unit) = match secs {
        s if s < 60 => (s, "second"),
        s if s < 3600 => (s / 60, "minute"),
        s if s < 86_400 => (s / 3600, "hour"),
        s => (s / 86_400, "day"),
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_at_second_precision() {
        let text = now();
        assert!(text.ends_with('Z') && text.len() == 20, "{text}");
        assert_eq!(format(parse(&text).unwrap()), text);
    }

    #[test]
    fn past_and_future() {
        assert!(is_past("2001-01-01T00:00:00Z"));
        assert!(!is_past(&days_from_now(1)));
        assert!(is_past("garbage"));
    }

    #[test]
    fn ago_reads_naturally() {
        let two_hours = format(OffsetDateTime::now_utc() - Duration::hours(2));
        assert_eq!(ago(&two_hours), "2 hours ago");
        assert_eq!(ago(&now()), "just now");
    }
}
