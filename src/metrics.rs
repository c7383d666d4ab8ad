//! Prometheus metrics: atomic counters bumped with one call each, rendered as text format 0.0.4.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The Content-Type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Upper bounds (seconds) of the store latency histogram's buckets; `+Inf` follows.
pub const STORE_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// Status classes of tunnel responses, `1xx` to `5xx`.
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Why a bearer token was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthFailure {
    /// Malformed, unknown, wrong secret or revoked.
    InvalidToken,
    TokenExpired,
    NoTeamContext,
}

const AUTH_REASONS: [(AuthFailure, &str); 3] = [
    (AuthFailure::InvalidToken, "invalid_token"),
    (AuthFailure::TokenExpired, "token_expired"),
    (AuthFailure::NoTeamContext, "no_team_context"),
];

/// How a password sign-in ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignIn {
    Success,
    Failure,
    /// Refused by the throttle before the password was checked.
    Throttled,
}

const SIGN_IN_RESULTS: [(SignIn, &str); 3] = [
    (SignIn::Success, "success"),
    (SignIn::Failure, "failure"),
    (SignIn::Throttled, "throttled"),
];

/// Whether a store call read or wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreOp {
    Read,
    Write,
}

/// A cumulative histogram of durations.
struct Histogram {
    buckets: [AtomicU64; STORE_BUCKETS.len()],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

impl Histogram {
    const fn new() -> Histogram {
        Histogram {
            buckets: [const { AtomicU64::new(0) }; STORE_BUCKETS.len()],
            count: AtomicU64::new(0),
            sum_nanos: AtomicU64::new(0),
        }
    }

    fn observe(&self, took: Duration) {
        let seconds = took.as_secs_f64();
        // Each observation lands in one bucket; rendering makes them cumulative.
        if let Some(i) = STORE_BUCKETS.iter().position(|le| seconds <= *le) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }
}

struct Metrics {
    tunnel_requests: [AtomicU64; CLASSES.len()],
    tunnel_bytes_in: AtomicU64,
    tunnel_bytes_out: AtomicU64,
    auth_failures: [AtomicU64; AUTH_REASONS.len()],
    sign_ins: [AtomicU64; SIGN_IN_RESULTS.len()],
    store_reads: Histogram,
    store_writes: Histogram,
    open_connections: AtomicI64,
    refused_connections: AtomicU64,
}

// One static, like a Prometheus client's default registry: a hook in the store,
// the auth checks or the relay stays a single line instead of threading a handle
// through every constructor.
static METRICS: Metrics = Metrics {
    tunnel_requests: [const { AtomicU64::new(0) }; CLASSES.len()],
    tunnel_bytes_in: AtomicU64::new(0),
    tunnel_bytes_out: AtomicU64::new(0),
    auth_failures: [const { AtomicU64::new(0) }; AUTH_REASONS.len()],
    sign_ins: [const { AtomicU64::new(0) }; SIGN_IN_RESULTS.len()],
    store_reads: Histogram::new(),
    store_writes: Histogram::new(),
    open_connections: AtomicI64::new(0),
    refused_connections: AtomicU64::new(0),
};

/// When the process started, for `process_start_time_seconds`.
static STARTED: OnceLock<f64> = OnceLock::new();

/// Note the start time; called once when the server starts.
pub fn mark_start() {
    STARTED.get_or_init(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64())
    });
}

/// One response through a tunnel: its status and the body bytes each way.
pub fn tunnel_request(status: u16, bytes_in: u64, bytes_out: u64) {
    let class = usize::from(status / 100).clamp(1, CLASSES.len()) - 1;
    METRICS.tunnel_requests[class].fetch_add(1, Ordering::Relaxed);
    METRICS
        .tunnel_bytes_in
        .fetch_add(bytes_in, Ordering::Relaxed);
    METRICS
        .tunnel_bytes_out
        .fetch_add(bytes_out, Ordering::Relaxed);
}

/// A bearer token refused.
pub fn auth_failure(reason: AuthFailure) {
    let i = AUTH_REASONS.iter().position(|(r, _)| *r == reason);
    if let Some(i) = i {
        METRICS.auth_failures[i].fetch_add(1, Ordering::Relaxed);
    }
}

/// A username and password checked.
pub fn sign_in(result: SignIn) {
    let i = SIGN_IN_RESULTS.iter().position(|(r, _)| *r == result);
    if let Some(i) = i {
        METRICS.sign_ins[i].fetch_add(1, Ordering::Relaxed);
    }
}

/// A store call that began at `started` has ended.
pub fn store_call(op: StoreOp, started: Instant) {
    let histogram = match op {
        StoreOp::Read => &METRICS.store_reads,
        StoreOp::Write => &METRICS.store_writes,
    };
    histogram.observe(started.elapsed());
}

/// Held while the front door serves a connection; counts it as open.
pub struct OpenConnection(());

impl Drop for OpenConnection {
    fn drop(&mut self) {
        METRICS.open_connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A connection the front door took; open until the guard drops.
pub fn connection_opened() -> OpenConnection {
    METRICS.open_connections.fetch_add(1, Ordering::Relaxed);
    OpenConnection(())
}

/// A connection the front door turned away at its limit.
pub fn connection_refused() {
    METRICS.refused_connections.fetch_add(1, Ordering::Relaxed);
}

/// A metric family being written: `# HELP`, `# TYPE`, then its samples.
struct Family<'a> {
    out: &'a mut String,
    name: &'a str,
}

impl<'a> Family<'a> {
    fn new(out: &'a mut String, name: &'a str, kind: &str, help: &str) -> Family<'a> {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        Family { out, name }
    }

    /// One sample; `labels` is `key="value",...` or empty, `suffix` e.g. `_bucket`.
    fn sample(&mut self, suffix: &str, labels: &str, value: impl std::fmt::Display) {
        let name = self.name;
        let _ = match labels {
            "" => writeln!(self.out, "{name}{suffix} {value}"),
            _ => writeln!(self.out, "{name}{suffix}{{{labels}}} {value}"),
        };
    }

    fn histogram(&mut self, op: &str, h: &Histogram) {
        let mut cumulative = 0;
        for (le, bucket) in STORE_BUCKETS.iter().zip(&h.buckets) {
            cumulative += bucket.load(Ordering::Relaxed);
            self.sample("_bucket", &format!("op=\"{op}\",le=\"{le}\""), cumulative);
        }
        let count = h.count.load(Ordering::Relaxed);
        self.sample("_bucket", &format!("op=\"{op}\",le=\"+Inf\""), count);
        let sum = h.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        self.sample("_sum", &format!("op=\"{op}\""), sum);
        self.sample("_count", &format!("op=\"{op}\""), count);
    }
}

/// Every metric as Prometheus text; `live_tunnels` is read from the relay by the caller.
pub fn render(live_tunnels: usize) -> String {
    let m = &METRICS;
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let mut out = String::new();
    let mut f = Family::new(&mut out, "berth_tunnels_live", "gauge", "Tunnels open now.");
    f.sample("", "", live_tunnels);
    let help = "Responses through tunnels, by status class.";
    let mut f = Family::new(&mut out, "berth_tunnel_requests_total", "counter", help);
    for (class, n) in CLASSES.iter().zip(&m.tunnel_requests) {
        f.sample("", &format!("class=\"{class}\""), load(n));
    }
    let help = "Request body bytes from public clients into tunnels.";
    let mut f = Family::new(&mut out, "berth_tunnel_bytes_in_total", "counter", help);
    f.sample("", "", load(&m.tunnel_bytes_in));
    let help = "Response body bytes from tunnels to public clients.";
    let mut f = Family::new(&mut out, "berth_tunnel_bytes_out_total", "counter", help);
    f.sample("", "", load(&m.tunnel_bytes_out));
    let help = "Bearer tokens refused, by reason.";
    let mut f = Family::new(&mut out, "berth_token_auth_failures_total", "counter", help);
    for ((_, reason), n) in AUTH_REASONS.iter().zip(&m.auth_failures) {
        f.sample("", &format!("reason=\"{reason}\""), load(n));
    }
    let help = "Username and password checks (dashboard, login, Basic), by result.";
    let mut f = Family::new(&mut out, "berth_sign_ins_total", "counter", help);
    for ((_, result), n) in SIGN_IN_RESULTS.iter().zip(&m.sign_ins) {
        f.sample("", &format!("result=\"{result}\""), load(n));
    }
    let help = "Duration of store (SQLite) calls, including the wait for a connection.";
    let mut f = Family::new(&mut out, "berth_store_call_seconds", "histogram", help);
    f.histogram("read", &m.store_reads);
    f.histogram("write", &m.store_writes);
    let help = "Connections the front door is serving now.";
    let mut f = Family::new(&mut out, "berth_frontdoor_open_connections", "gauge", help);
    f.sample("", "", m.open_connections.load(Ordering::Relaxed).max(0));
    let help =
        "Connections refused at the front door's bounds (503) or its cap per client address (429).";
    let name = "berth_frontdoor_refused_connections_total";
    let mut f = Family::new(&mut out, name, "counter", help);
    f.sample("", "", load(&m.refused_connections));
    let help = "Start time of the process since the Unix epoch, in seconds.";
    let mut f = Family::new(&mut out, "process_start_time_seconds", "gauge", help);
    f.sample("", "", STARTED.get().copied().unwrap_or(0.0));
    let help = "The berth version, as a label.";
    let mut f = Family::new(&mut out, "berth_build_info", "gauge", help);
    f.sample("", &format!("version=\"{}\"", env!("CARGO_PKG_VERSION")), 1);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of the first sample line starting with `prefix`.
    fn value(text: &str, prefix: &str) -> f64 {
        text.lines()
            .find(|l| l.starts_with(prefix) && l[prefix.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no sample {prefix} in\n{text}"))
    }

    #[test]
    fn every_family_has_help_and_type_before_its_samples() {
        let text = render(0);
        let mut declared = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                assert!(["counter", "gauge", "histogram"].contains(&kind));
                declared.push(name.to_string());
            } else if !line.starts_with("# HELP ") {
                let name = line.split(['{', ' ']).next().unwrap();
                let family = declared.last().expect("a sample before any # TYPE");
                assert!(name.starts_with(family.as_str()), "{name} under {family}");
            }
        }
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn tunnel_statuses_count_by_class_and_odd_statuses_clamp() {
        let before = render(0);
        tunnel_request(204, 10, 20);
        tunnel_request(502, 0, 5);
        tunnel_request(999, 0, 0);
        let after = render(3);
        let delta = |p: &str| value(&after, p) - value(&before, p);
        assert_eq!(delta("berth_tunnel_requests_total{class=\"2xx\"}"), 1.0);
        assert_eq!(delta("berth_tunnel_requests_total{class=\"5xx\"}"), 2.0);
        assert!(delta("berth_tunnel_bytes_in_total") >= 10.0);
        assert!(delta("berth_tunnel_bytes_out_total") >= 25.0);
        assert_eq!(value(&after, "berth_tunnels_live"), 3.0);
    }

    #[test]
    fn the_store_histogram_is_cumulative_up_to_its_count() {
        let h = Histogram::new();
        h.observe(Duration::from_micros(100));
        h.observe(Duration::from_millis(3));
        // Past the largest bucket: only +Inf and the count hold it.
        h.observe(Duration::from_secs(6));
        let mut out = String::new();
        Family::new(&mut out, "t", "histogram", "test").histogram("read", &h);
        assert_eq!(value(&out, "t_bucket{op=\"read\",le=\"0.0005\"}"), 1.0);
        assert_eq!(value(&out, "t_bucket{op=\"read\",le=\"0.005\"}"), 2.0);
        assert_eq!(value(&out, "t_bucket{op=\"read\",le=\"5\"}"), 2.0);
        assert_eq!(value(&out, "t_bucket{op=\"read\",le=\"+Inf\"}"), 3.0);
        assert_eq!(value(&out, "t_count{op=\"read\"}"), 3.0);
        assert!(value(&out, "t_sum{op=\"read\"}") > 6.0);
    }

    #[test]
    fn open_connections_fall_when_their_guards_drop() {
        let gauge = || METRICS.open_connections.load(Ordering::Relaxed);
        let before = gauge();
        // Only the front door opens connections, and no unit test runs it.
        let guard = connection_opened();
        assert_eq!(gauge(), before + 1);
        drop(guard);
        assert_eq!(gauge(), before);
        auth_failure(AuthFailure::TokenExpired);
        sign_in(SignIn::Throttled);
        let text = render(0);
        assert!(
            value(
                &text,
                "berth_token_auth_failures_total{reason=\"token_expired\"}"
            ) >= 1.0
        );
        assert!(value(&text, "berth_sign_ins_total{result=\"throttled\"}") >= 1.0);
    }
}
