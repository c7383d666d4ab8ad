//! The traffic inspector: request records, the redaction tiers applied before a record exists, and the writer thread that stores them.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::Thread;
use std::time::{Duration, Instant};

use crate::store::{Redaction, Store};

mod redact;

use redact::{redact_headers, redact_path};

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
/// Records queued that wake the writer to take them (it sleeps out `GATHER` otherwise).
pub const MAX_BATCH: usize = 512;
/// Most records the writer holds for one transaction; it commits early beyond.
pub const MAX_PENDING: usize = 4096;
/// Longest a record waits for others to share its transaction.
pub const GATHER: Duration = Duration::from_millis(200);
/// Longest path and method in a `request` control frame: the frame stays far
/// under the 64 KiB frame limit even if every character needs escaping.
pub const MAX_FRAME_PATH: usize = 4096;
pub const MAX_FRAME_METHOD: usize = 32;

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
    queue: Option<Queue>,
    dropped: AtomicU64,
    tiers: Mutex<TierCache>,
}

/// The writer thread's jobs, and how it is woken: not for every record (a
/// wake-up per request cost the server a fifth of its time per request), but
/// for the first of a batch (it waits in `recv`), once a batch is waiting, and
/// for a flush; otherwise it sleeps out `GATHER`.
struct Queue {
    jobs: SyncSender<Job>,
    /// Records sent and not yet taken by the writer.
    queued: Arc<AtomicUsize>,
    writer: Option<Thread>,
}

impl Queue {
    fn wake(&self) {
        if let Some(writer) = &self.writer {
            writer.unpark();
        }
    }
}

impl Inspector {
    /// An inspector keeping the last `retention` records per tunnel; 0 records
    /// nothing (tiers still apply to the live `request` frames).
    pub fn start(store: Arc<Store>, retention: u32) -> io::Result<Arc<Inspector>> {
        let queue = if retention > 0 {
            let (tx, rx) = mpsc::sync_channel(QUEUE_CAPACITY);
            let writer_store = store.clone();
            let queued = Arc::new(AtomicUsize::new(0));
            let taken = queued.clone();
            let writer = std::thread::Builder::new()
                .name("inspect-writer".into())
                .spawn(move || write_loop(&writer_store, &rx, retention, &taken))?;
            Some(Queue {
                jobs: tx,
                queued,
                writer: Some(writer.thread().clone()),
            })
        } else {
            None
        };
        Ok(Arc::new(Inspector::new(store, queue)))
    }

    fn new(store: Arc<Store>, queue: Option<Queue>) -> Inspector {
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
        // Counted before it is sent, so the writer never takes more than counted.
        let waiting = queue.queued.fetch_add(1, Ordering::Relaxed) + 1;
        let sent = queue.jobs.try_send(Job::Store(Box::new(record)));
        if sent.is_err() {
            queue.queued.fetch_sub(1, Ordering::Relaxed);
        }
        match sent {
            Ok(()) => {
                if waiting == MAX_BATCH {
                    queue.wake();
                }
            }
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
        if queue.jobs.send(Job::Flush(tx)).is_ok() {
            queue.wake();
            let _ = rx.recv_timeout(within);
        }
    }
}

/// The records a writer's transaction will store: per tunnel, the newest
/// `retention` that arrived while it gathered. Older ones of a busy tunnel are
/// superseded before they are ever written (the transaction would store and
/// prune them at once): they are only counted, so that recording costs a busy
/// tunnel a few hundred rows a second, not one per request.
struct Batch {
    retention: usize,
    tunnels: HashMap<String, Gathered>,
    /// Records held.
    held: usize,
    /// Records taken from the queue, and of those, taken off its count.
    taken: usize,
    counted: usize,
}

/// One tunnel's part of a batch.
#[derive(Default)]
struct Gathered {
    records: VecDeque<Record>,
    superseded: u64,
}

impl Batch {
    fn new(retention: u32) -> Batch {
        Batch {
            retention: (retention as usize).max(1),
            tunnels: HashMap::new(),
            held: 0,
            taken: 0,
            counted: 0,
        }
    }

    fn push(&mut self, record: Record) {
        self.taken += 1;
        let gathered = self.tunnels.entry(record.tunnel_id.clone()).or_default();
        gathered.records.push_back(record);
        if gathered.records.len() > self.retention {
            gathered.records.pop_front();
            gathered.superseded += 1;
        } else {
            self.held += 1;
        }
    }

    /// Store what it holds in one transaction.
    fn store(self, store: &Store, retention: u32) {
        if self.taken == 0 {
            return;
        }
        let mut records = Vec::with_capacity(self.held);
        let mut superseded = Vec::new();
        for (tunnel_id, gathered) in self.tunnels {
            records.extend(gathered.records);
            if gathered.superseded > 0 {
                superseded.push((tunnel_id, gathered.superseded));
            }
        }
        if let Err(err) = store
            .requests()
            .insert_batch(&records, &superseded, retention)
        {
            eprintln!(
                "berth: could not store {} inspector records: {err}",
                self.taken
            );
        }
    }
}

/// The writer thread: batches of records, each batch one transaction, pruned to `retention`.
/// A batch gathers for up to `GATHER` after its first record (less when it
/// holds `MAX_PENDING` or someone waits for a flush), so busy traffic costs a
/// commit per batch rather than one per few records. While it gathers the
/// thread sleeps (see `Queue`) and takes what arrived when it wakes.
fn write_loop(store: &Store, jobs: &Receiver<Job>, retention: u32, queued: &AtomicUsize) {
    while let Ok(first) = jobs.recv() {
        let until = Instant::now() + GATHER;
        let mut batch = Batch::new(retention);
        let mut flushes = Vec::new();
        let mut next = Some(first);
        loop {
            while let Some(job) = next {
                match job {
                    Job::Store(record) => batch.push(*record),
                    Job::Flush(done) => flushes.push(done),
                }
                next = if batch.held < MAX_PENDING {
                    jobs.try_recv().ok()
                } else {
                    None
                };
            }
            // Taken: no longer waiting in the queue (submit wakes the writer
            // again once `MAX_BATCH` more wait).
            queued.fetch_sub(batch.taken - batch.counted, Ordering::Relaxed);
            batch.counted = batch.taken;
            let left = until.saturating_duration_since(Instant::now());
            if batch.held >= MAX_PENDING || !flushes.is_empty() || left.is_zero() {
                break;
            }
            std::thread::park_timeout(left);
            next = jobs.try_recv().ok();
        }
        batch.store(store, retention);
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
        let queue = Queue {
            jobs: tx,
            queued: Arc::new(AtomicUsize::new(0)),
            writer: None,
        };
        let inspector = Inspector::new(store, Some(queue));
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
        write_loop(&store, &rx, 600, &AtomicUsize::new(total));
        let kept = store.requests().list("t1", None, 1000).unwrap();
        assert_eq!(kept.len(), 600);
        // The newest, in order: older ones were superseded (counted, never written).
        for (i, row) in kept.iter().enumerate() {
            assert_eq!(row.record.path, format!("/{}", total - 1 - i));
        }
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
        let frame = crate::wire::protocol::Frame::Request {
            method: "\"".repeat(MAX_FRAME_METHOD),
            path: "\u{1}".repeat(MAX_FRAME_PATH),
            status: 599,
            duration_ms: u64::MAX,
            bytes_in: u64::MAX,
            bytes_out: u64::MAX,
        };
        let mut wire = Vec::new();
        crate::wire::protocol::write_frame(&mut wire, &frame).unwrap();
        assert!(
            wire.len() <= crate::wire::protocol::MAX_FRAME_BYTES,
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
}
