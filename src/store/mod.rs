//! SQLite storage: opening, pragmas, migrations from `schema.sql`, and a small connection pool.
//! All SQL of berth lives under this module.

mod audit;
mod crews;
#[cfg(test)]
pub(crate) mod fixture;
mod requests;
mod sessions;
mod subdomains;
mod tokens;
mod tunnels;
mod users;

use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rusqlite::{Connection, ErrorCode, OpenFlags, Transaction, TransactionBehavior};

use crate::metrics::{self, StoreOp};

pub use audit::{Audit, NewAuditEvent};
pub use crews::{Crew, CrewLimits, Crews, Limit, Member, Membership, Redaction, Role};
pub use requests::{RequestRow, Requests};
pub use sessions::{Session, Sessions};
pub use subdomains::{Reserved, SubdomainRow, Subdomains};
pub use tokens::{NewToken, TokenRow, TokenUpdate, Tokens};
pub use tunnels::{NewTunnel, TunnelRow, Tunnels};
pub use users::{User, Users};

/// The migrations, embedded from the repository root.
const SCHEMA: &str = include_str!("../../schema.sql");
/// How long a statement waits for another writer (the server or `berth admin`).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections kept open for a file database.
const POOL_SIZE: usize = 4;
/// A connection's page cache, as SQLite's `cache_size` takes KiB: negative.
const CACHE_KIB: i64 = -512;

/// Failures of the store, as the layers above need to tell them apart.
#[derive(Debug)]
pub enum StoreError {
    /// A unique name is taken.
    Conflict,
    /// The row to change does not exist.
    NotFound,
    /// Another writer held the database past the busy timeout.
    Busy,
    /// The disk is full.
    Full,
    /// Anything else SQLite reported.
    Db(rusqlite::Error),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Conflict => f.write_str("the name is already taken"),
            StoreError::NotFound => f.write_str("not found"),
            StoreError::Busy => f.write_str("the database is locked by another writer"),
            StoreError::Full => f.write_str("the disk holding the database is full"),
            StoreError::Db(err) => write!(f, "database error: {err}"),
        }
    }
}

impl std::error::Error for StoreError {}

impl From<rusqlite::Error> for StoreError {
    fn from(err: rusqlite::Error) -> StoreError {
        match err.sqlite_error_code() {
            Some(ErrorCode::ConstraintViolation) => StoreError::Conflict,
            Some(ErrorCode::DatabaseBusy) | Some(ErrorCode::DatabaseLocked) => StoreError::Busy,
            Some(ErrorCode::DiskFull) => StoreError::Full,
            _ => StoreError::Db(err),
        }
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// The token store: a pool of connections to one SQLite database.
pub struct Store {
    conns: Vec<Mutex<Connection>>,
    next: AtomicUsize,
    /// Bumped after every committed change of a redaction tier, so the
    /// inspector's cache of resolved tiers knows when to forget them.
    redaction_changes: AtomicU64,
}

impl Store {
    /// Open (creating if needed) the database file and bring its schema up to date.
    pub fn open(path: &Path) -> Result<Store> {
        let open = || -> Result<Connection> {
            let conn = Connection::open_with_flags(
                path,
                OpenFlags::SQLITE_OPEN_READ_WRITE
                    | OpenFlags::SQLITE_OPEN_CREATE
                    | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )?;
            configure(&conn)?;
            Ok(conn)
        };
        let first = open()?;
        migrate(&first)?;
        let mut conns = vec![Mutex::new(first)];
        for _ in 1..POOL_SIZE {
            conns.push(Mutex::new(open()?));
        }
        Ok(Store {
            conns,
            next: AtomicUsize::new(0),
            redaction_changes: AtomicU64::new(0),
        })
    }

    /// A private in-memory database with the full schema, for unit tests.
    #[cfg(test)]
    pub fn open_in_memory() -> Result<Store> {
        let conn = Connection::open_in_memory()?;
        configure(&conn)?;
        migrate(&conn)?;
        Ok(Store {
            conns: vec![Mutex::new(conn)],
            next: AtomicUsize::new(0),
            redaction_changes: AtomicU64::new(0),
        })
    }

    /// A free connection, or the next one in turn if all are busy.
    fn conn(&self) -> MutexGuard<'_, Connection> {
        for slot in &self.conns {
            if let Ok(guard) = slot.try_lock() {
                return guard;
            }
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.conns.len();
        // A poisoned lock only means another thread panicked mid-call; SQLite's
        // own transaction state is still consistent.
        self.conns[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Run read-only statements.
    fn read<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T> {
        let started = Instant::now();
        let result = f(&self.conn());
        metrics::store_call(StoreOp::Read, started);
        Ok(result?)
    }

    /// Run statements in one `BEGIN IMMEDIATE` transaction, so the busy timeout applies.
    fn write<T>(&self, f: impl FnOnce(&Transaction) -> Result<T>) -> Result<T> {
        let started = Instant::now();
        let result = (|| {
            let mut conn = self.conn();
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let value = f(&tx)?;
            tx.commit()?;
            Ok(value)
        })();
        metrics::store_call(StoreOp::Write, started);
        result
    }

    pub fn users(&self) -> Users<'_> {
        Users(self)
    }

    pub fn crews(&self) -> Crews<'_> {
        Crews(self)
    }

    pub fn tokens(&self) -> Tokens<'_> {
        Tokens(self)
    }

    pub fn sessions(&self) -> Sessions<'_> {
        Sessions(self)
    }

    pub fn tunnels(&self) -> Tunnels<'_> {
        Tunnels(self)
    }

    pub fn subdomains(&self) -> Subdomains<'_> {
        Subdomains(self)
    }

    pub fn audit(&self) -> Audit<'_> {
        Audit(self)
    }

    pub fn requests(&self) -> Requests<'_> {
        Requests(self)
    }

    /// Changes whenever a token's or a crew's redaction tier has changed.
    pub fn redaction_generation(&self) -> u64 {
        self.redaction_changes.load(Ordering::SeqCst)
    }

    /// Called after a tier change commits.
    fn redaction_changed(&self) {
        self.redaction_changes.fetch_add(1, Ordering::SeqCst);
    }
}

fn configure(conn: &Connection) -> Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // WAL lets `berth admin` write while the server reads; FULL makes every
    // commit durable, so a token shown to a user survives a power cut.
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // Each connection of the pool keeps at most this much of the database in
    // its page cache (SQLite's default is 2 MiB, four times over for the pool):
    // the inspector's writes pass through it, and the server's memory budget
    // is small. The database's busy pages are few; the OS caches the file.
    conn.pragma_update(None, "cache_size", CACHE_KIB)?;
    Ok(())
}

/// The numbered sections of `schema.sql`.
fn migrations() -> Vec<(u32, &'static str)> {
    let mut out = Vec::new();
    for section in SCHEMA.split("-- migration: ").skip(1) {
        let (number, sql) = section.split_once('\n').unwrap_or((section, ""));
        if let Ok(number) = number.trim().parse() {
            out.push((number, sql));
        }
    }
    out
}

fn migrate(conn: &Connection) -> Result<()> {
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let result = (|| -> Result<()> {
        let version: u32 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
        for (number, sql) in migrations() {
            if number > version {
                conn.execute_batch(sql)?;
                conn.pragma_update(None, "user_version", number)?;
            }
        }
        Ok(())
    })();
    match result {
        Ok(()) => conn.execute_batch("COMMIT")?,
        Err(_) => conn.execute_batch("ROLLBACK")?,
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_numbered_in_order() {
        let numbers: Vec<u32> = migrations().iter().map(|m| m.0).collect();
        assert!(!numbers.is_empty());
        assert_eq!(numbers, (1..=numbers.len() as u32).collect::<Vec<_>>());
    }

    #[test]
    fn a_file_database_reopens_at_the_same_version_in_wal_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("berth.db");
        Store::open(&path).unwrap();
        let store = Store::open(&path).unwrap();
        let conn = store.conn();
        let version: u32 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version as usize, migrations().len());
        let mode: String = conn
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let sync: i64 = conn
            .pragma_query_value(None, "synchronous", |r| r.get(0))
            .unwrap();
        assert_eq!(sync, 2, "synchronous=FULL");
    }
}
