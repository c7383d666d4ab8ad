//! The traffic inspector: request records, the redaction tiers applied before a record exists, and the writer thread that stores them.

use std::collections::HashMap;
use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::store::{Redaction, Store};

/// What a redacted value reads.
pub const REDACTED: &str = "[REDACTED]";
/// Records kept per tunnel unless `--inspect-retention` says otherwise.
pub const DEFAULT_RETENTION: u32 = 1000;
/// Largest `--inspect-retention` accepted: records are small, but a tunnel's
/// history should not grow the database without bound.
pub const MAX_RETENTION: u32 = 1_000_000;
/// Records waiting for the writer; beyond, new ones are dropped (and counted)
/// so a slow disk never stalls the proxy.
pub const QUEUE_CAPACITY: usize = 4096;
/// Most records the writer stores in one transaction.
pub const MAX_BATCH: usize = 512;
/// Longest a record waits for others to share its transaction.
pub const GATHER: Duration = Duration::from_millis(50);
/// Longest path and method in a `request` control frame: the frame stays far
/// under the 64 KiB frame limit even if every character needs escaping.
pub const MAX_FRAME_PATH: usize = 4096;
pub const MAX_FRAME_METHOD: usize = 32;

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

/// Header lines as parsed by the proxy, values as text (moved, not copied,
/// when they are UTF-8).
pub fn text_fields(headers: Vec<(String, Vec<u8>)>) -> Vec<(String, String)> {
    headers
        .into_iter()
        .map(|(n, v)| {
            let text = String::from_utf8(v)
                .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
            (n, text)
        })
        .collect()
}

/// One request through an HTTP tunnel, already redacted: a `Record` is only
/// made by `Record::redacted`, so no unredacted one can reach the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub tunnel_id: String,
    /// RFC 3339 time the request head arrived.
    pub at: String,
    pub method: String,
    /// Path with query, as recorded (strict redacts sensitive query values).
    pub path: String,
    pub status: u16,
    pub duration_ms: u64,
    /// Body bytes as they crossed berth (chunk framing included for chunked bodies).
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// As the service received them (berth's X-Forwarded-* included).
    pub request_headers: Vec<(String, String)>,
    /// As the service sent them (or berth's own 502 page).
    pub response_headers: Vec<(String, String)>,
}

/// What the relay saw of one request, before redaction.
pub struct Seen {
    pub tunnel_id: String,
    pub at: String,
    pub method: String,
    pub target: String,
    pub status: u16,
    pub duration: Duration,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub request_headers: Vec<(String, String)>,
    pub response_headers: Vec<(String, String)>,
}

impl Record {
    /// Redact what was seen under `tier`.
    pub fn redacted(tier: Redaction, seen: Seen) -> Record {
        Record {
            tunnel_id: seen.tunnel_id,
            at: seen.at,
            method: seen.method,
            path: redact_path(tier, &seen.target),
            status: seen.status,
            duration_ms: u64::try_from(seen.duration.as_millis()).unwrap_or(u64::MAX),
            bytes_in: seen.bytes_in,
            bytes_out: seen.bytes_out,
            request_headers: redact_headers(tier, seen.request_headers),
            response_headers: redact_headers(tier, seen.response_headers),
        }
    }

    /// Method and path cut to what a control frame carries.
    pub fn frame_text(&self) -> (String, String) {
        (
            truncate(&self.method, MAX_FRAME_METHOD),
            truncate(&self.path, MAX_FRAME_PATH),
        )
    }
}

/// At most `max` bytes of `text` (at a character boundary), `...` marking a cut.
fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max.saturating_sub(3);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

/// A writer that counts what passes through it (bodies cut short still have a size).
pub struct Counter<W> {
    pub inner: W,
    pub bytes: u64,
}

impl<W: Write> Write for Counter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Messages to the writer thread.
enum Job {
    /// Boxed: the channel allocates and touches all `QUEUE_CAPACITY` slots up
    /// front, and an unboxed record made that 740 KB of an idle server's memory.
    Store(Box<Record>),
    /// Answer once everything queued before is stored (shutdown).
    Flush(SyncSender<()>),
}

/// Tiers resolved per token, valid while the store's redaction generation holds.
#[derive(Default)]
struct TierCache {
    generation: u64,
    tiers: HashMap<i64, Redaction>,
}

/// Resolves tiers and hands records to the writer thread.
pub struct Inspector {
    store: Arc<Store>,
    queue: Option<SyncSender<Job>>,
    dropped: AtomicU64,
    tiers: Mutex<TierCache>,
}

impl Inspector {
    /// An inspector keeping the last `retention` records per tunnel; 0 records
    /// nothing (tiers still apply to the live `request` frames).
    pub fn start(store: Arc<Store>, retention: u32) -> io::Result<Arc<Inspector>> {
        let queue = if retention > 0 {
            let (tx, rx) = mpsc::sync_channel(QUEUE_CAPACITY);
            let writer_store = store.clone();
            std::thread::Builder::new()
                .name("inspect-writer".into())
                .spawn(move || write_loop(&writer_store, &rx, retention))?;
            Some(tx)
        } else {
            None
        };
        Ok(Arc::new(Inspector::new(store, queue)))
    }

    fn new(store: Arc<Store>, queue: Option<SyncSender<Job>>) -> Inspector {
        Inspector {
            store,
            queue,
            dropped: AtomicU64::new(0),
            tiers: Mutex::new(TierCache::default()),
        }
    }

    /// Records dropped because the writer fell behind.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// The tier a token's traffic is recorded with now: its own, or its crew's
    /// current default. Cached until any tier changes; strict if it cannot be read.
    pub fn tier_of(&self, token_id: i64) -> Redaction {
        let generation = self.store.redaction_generation();
        {
            let mut cache = self.tiers.lock().unwrap_or_else(|e| e.into_inner());
            if cache.generation != generation {
                cache.generation = generation;
                cache.tiers.clear();
            }
            if let Some(tier) = cache.tiers.get(&token_id) {
                return *tier;
            }
        }
        let tier = match self.store.tokens().find_by_id(token_id) {
            Ok(Some(token)) => token.effective_redaction(),
            _ => return Redaction::Strict,
        };
        let mut cache = self.tiers.lock().unwrap_or_else(|e| e.into_inner());
        // A change committed during the look-up bumped the generation: do not cache.
        if cache.generation == generation {
            cache.tiers.insert(token_id, tier);
        }
        tier
    }

    /// Queue a record for storage; never waits: a full queue drops it.
    pub fn submit(&self, record: Record) {
        let Some(queue) = &self.queue else { return };
        match queue.try_send(Job::Store(Box::new(record))) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                if self.dropped.fetch_add(1, Ordering::Relaxed) == 0 {
                    eprintln!("berth: the traffic inspector fell behind; dropping records until it catches up");
                }
            }
            Err(TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Wait (up to `within`) until every record queued so far is stored.
    pub fn flush(&self, within: Duration) {
        let Some(queue) = &self.queue else { return };
        let (tx, rx) = mpsc::sync_channel(1);
        if queue.send(Job::Flush(tx)).is_ok() {
            let _ = rx.recv_timeout(within);
        }
    }
}

/// The writer thread: batches of records, each batch one transaction, pruned to `retention`.
/// A batch gathers for up to `GATHER` after its first record (less when it fills
/// or someone waits for a flush), so busy traffic costs a commit per batch
/// rather than one per few records.
fn write_loop(store: &Store, jobs: &Receiver<Job>, retention: u32) {
    while let Ok(first) = jobs.recv() {
        let until = Instant::now() + GATHER;
        let mut batch = Vec::new();
        let mut flushes = Vec::new();
        let mut next = Some(first);
        while let Some(job) = next {
            match job {
                Job::Store(record) => batch.push(*record),
                Job::Flush(done) => flushes.push(done),
            }
            let left = until.saturating_duration_since(Instant::now());
            next = if batch.len() >= MAX_BATCH {
                None
            } else if flushes.is_empty() && !left.is_zero() {
                jobs.recv_timeout(left).ok()
            } else {
                jobs.try_recv().ok()
            };
        }
        if !batch.is_empty() {
            if let Err(err) = store.requests().insert_batch(&batch, retention) {
                eprintln!(
                    "berth: could not store {} inspector records: {err}",
                    batch.len()
                );
            }
        }
        for done in flushes {
            let _ = done.send(());
        }
    }
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

    #[test]
    fn a_record_is_redacted_both_ways() {
        let seen = Seen {
            tunnel_id: "t".into(),
            at: "2026-01-01T00:00:00Z".into(),
            method: "GET".into(),
            target: "/x?session=s1".into(),
            status: 200,
            duration: Duration::from_millis(7),
            bytes_in: 0,
            bytes_out: 5,
            request_headers: vec![("authorization".into(), "Bearer a".into())],
            response_headers: vec![("SET-COOKIE".into(), "sid=b".into())],
        };
        let record = Record::redacted(STRICT, seen);
        assert_eq!(record.path, "/x?session=[REDACTED]");
        assert_eq!(record.request_headers[0].1, REDACTED);
        assert_eq!(record.response_headers[0].1, REDACTED);
        assert_eq!(record.duration_ms, 7);
    }

    #[test]
    fn frame_text_is_cut_at_the_limits() {
        let long = format!("/{}", "é".repeat(MAX_FRAME_PATH));
        let mut record = Record::redacted(
            STANDARD,
            Seen {
                tunnel_id: "t".into(),
                at: String::new(),
                method: "M".repeat(MAX_FRAME_METHOD + 1),
                target: long,
                status: 200,
                duration: Duration::ZERO,
                bytes_in: 0,
                bytes_out: 0,
                request_headers: vec![],
                response_headers: vec![],
            },
        );
        let (method, path) = record.frame_text();
        assert!(path.len() <= MAX_FRAME_PATH && path.ends_with("..."));
        assert!(method.len() <= MAX_FRAME_METHOD && method.ends_with("..."));
        record.path = "/".repeat(MAX_FRAME_PATH);
        record.method = "GET".into();
        assert_eq!(
            record.frame_text(),
            ("GET".into(), "/".repeat(MAX_FRAME_PATH))
        );
    }

    /// A store with one user, crew and token (inherit) and a tunnel `t1` of that token.
    fn store_with_tunnel() -> (Arc<Store>, i64, i64) {
        let fixture = crate::store::fixture::store_with_tunnels(&["t1"]);
        (Arc::new(fixture.store), fixture.crew_id, fixture.token_id)
    }

    fn plain_record(path: &str) -> Record {
        Record::redacted(
            STANDARD,
            Seen {
                tunnel_id: "t1".into(),
                at: "2026-01-01T00:00:00Z".into(),
                method: "GET".into(),
                target: path.into(),
                status: 200,
                duration: Duration::ZERO,
                bytes_in: 0,
                bytes_out: 0,
                request_headers: vec![],
                response_headers: vec![],
            },
        )
    }

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_waiting() {
        let (store, _, _) = store_with_tunnel();
        // A queue nobody drains: the writer has fallen behind.
        let (tx, rx) = mpsc::sync_channel(QUEUE_CAPACITY);
        let inspector = Inspector::new(store, Some(tx));
        for i in 0..QUEUE_CAPACITY {
            inspector.submit(plain_record(&format!("/{i}")));
        }
        assert_eq!(inspector.dropped(), 0);
        inspector.submit(plain_record("/one-too-many"));
        inspector.submit(plain_record("/two-too-many"));
        assert_eq!(inspector.dropped(), 2);
        assert_eq!(rx.try_iter().count(), QUEUE_CAPACITY);
    }

    #[test]
    fn the_writer_stores_more_than_a_batch_and_prunes() {
        let (store, _, _) = store_with_tunnel();
        let (tx, rx) = mpsc::sync_channel(QUEUE_CAPACITY);
        let total = MAX_BATCH * 2 + 1;
        for i in 0..total {
            tx.send(Job::Store(Box::new(plain_record(&format!("/{i}")))))
                .unwrap();
        }
        drop(tx);
        write_loop(&store, &rx, 600);
        let kept = store.requests().list("t1", None, 1000).unwrap();
        assert_eq!(kept.len(), 600);
        assert_eq!(kept[0].record.path, format!("/{}", total - 1));
        let tunnel = store.tunnels().find_by_id("t1").unwrap().unwrap();
        assert_eq!(tunnel.request_count, total as i64);
    }

    #[test]
    fn flush_waits_for_what_was_queued() {
        let (store, _, _) = store_with_tunnel();
        let inspector = Inspector::start(store.clone(), 10).unwrap();
        for i in 0..3 {
            inspector.submit(plain_record(&format!("/{i}")));
        }
        inspector.flush(Duration::from_secs(30));
        assert_eq!(store.requests().list("t1", None, 10).unwrap().len(), 3);
    }

    #[test]
    fn a_request_frame_at_the_limits_fits_a_control_frame() {
        let frame = crate::relay::protocol::Frame::Request {
            method: "\"".repeat(MAX_FRAME_METHOD),
            path: "\u{1}".repeat(MAX_FRAME_PATH),
            status: 599,
            duration_ms: u64::MAX,
            bytes_in: u64::MAX,
            bytes_out: u64::MAX,
        };
        let mut wire = Vec::new();
        crate::relay::protocol::write_frame(&mut wire, &frame).unwrap();
        assert!(
            wire.len() <= crate::relay::protocol::MAX_FRAME_BYTES,
            "{}",
            wire.len()
        );
    }

    #[test]
    fn tiers_resolve_per_token_and_follow_changes() {
        let (store, crew_id, token_id) = store_with_tunnel();
        let inspector = Inspector::start(store.clone(), 0).unwrap();
        assert_eq!(inspector.tier_of(token_id), STANDARD);
        store
            .crews()
            .set_default_redaction(crew_id, STRICT)
            .unwrap();
        assert_eq!(inspector.tier_of(token_id), STRICT);
        let change = crate::store::TokenUpdate {
            redaction: Some(STANDARD),
            ..Default::default()
        };
        store.tokens().update(token_id, &change).unwrap();
        assert_eq!(inspector.tier_of(token_id), STANDARD);
        // A token that cannot be read records nothing more than strict would.
        assert_eq!(inspector.tier_of(9999), STRICT);
    }

    #[test]
    fn response_fields_keep_their_text() {
        let fields = text_fields(vec![
            ("Content-Length".into(), b"0".to_vec()),
            ("X-Odd".into(), vec![b'a', 0xff]),
        ]);
        assert_eq!(fields[0], ("Content-Length".into(), "0".into()));
        assert_eq!(fields[1], ("X-Odd".into(), "a\u{fffd}".into()));
    }

    #[test]
    fn a_counter_counts() {
        let mut counter = Counter {
            inner: Vec::new(),
            bytes: 0,
        };
        counter.write_all(b"hello").unwrap();
        assert_eq!(counter.bytes, 5);
    }
}
