//! Who is calling: tokens, passwords and sessions checked; roles × scopes decided;
//! sign-in failures throttled; last use of tokens coalesced into few writes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argon2::password_hash::{
    self, Decimal, Ident, Output, ParamsString, PasswordHash, PasswordHasher, Salt, SaltString,
};
use argon2::{Algorithm, Argon2, Block, Params, PasswordVerifier, Version};

use crate::metrics::{self, AuthFailure, SignIn};
use crate::store::{Membership, Role, Session, Store, StoreError, TokenRow, User};
use crate::time_fmt;
use crate::token::{self, Token};

/// Longest password accepted; longer ones are refused before hashing.
pub const MAX_PASSWORD_BYTES: usize = 1024;
/// Shortest password accepted when one is set.
pub const MIN_PASSWORD_BYTES: usize = 8;
/// Scopes a token may carry.
pub const SCOPES: [&str; 7] = [
    "berth:*",
    "tunnels:share",
    "tunnels:read",
    "traffic:read",
    "tokens:read",
    "tokens:write",
    "crew:admin",
];
/// A token's last use is written at most this often.
pub const LAST_USED_INTERVAL: Duration = Duration::from_secs(60);
/// The longest a dashboard session lasts, however much it is used.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 60 * 60);
/// A dashboard session nobody uses for this long ends.
pub const SESSION_IDLE: Duration = Duration::from_secs(60 * 60);
/// A session's idle end is moved forward at most this often (one write).
const SESSION_EXTEND_EVERY: Duration = Duration::from_secs(60);

/// Why a caller is not let in.
#[derive(Debug)]
pub enum AuthError {
    InvalidToken,
    TokenExpired,
    BadCredentials,
    NoTeamContext,
    RateLimited(Duration),
    Store(StoreError),
}

impl From<StoreError> for AuthError {
    fn from(err: StoreError) -> AuthError {
        AuthError::Store(err)
    }
}

/// What a role and scopes may be allowed to do (DESIGN §2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    ReadOwnTokens,
    WriteOwnTokens,
    ReadCrewTokens,
    WriteCrewTokens,
    ReadMembers,
    ManageMembers,
    ManageOwners,
    CrewSettings,
    ReadAudit,
    /// Take one's own user out of the crew.
    LeaveCrew,
    /// Open a tunnel (`berth share`).
    ShareTunnels,
    /// See the crew's tunnels.
    ReadTunnels,
    /// Close a tunnel one opened oneself.
    CloseOwnTunnels,
    /// Close anyone's tunnel in the crew.
    CloseCrewTunnels,
    /// Read the crew's recorded traffic (the inspector).
    ReadTraffic,
    /// Reserve and release the crew's subdomains.
    ReserveNames,
}

impl Action {
    /// The least role that may do it, and the scope that grants it besides `berth:*`.
    pub fn needs(self) -> (Role, &'static str) {
        match self {
            Action::ReadOwnTokens => (Role::Viewer, "tokens:read"),
            Action::WriteOwnTokens => (Role::Viewer, "tokens:write"),
            Action::ReadCrewTokens => (Role::Admin, "tokens:read"),
            Action::WriteCrewTokens => (Role::Admin, "tokens:write"),
            Action::ReadMembers => (Role::Viewer, "crew:admin"),
            Action::ManageMembers => (Role::Admin, "crew:admin"),
            Action::ManageOwners => (Role::Owner, "crew:admin"),
            Action::CrewSettings => (Role::Owner, "crew:admin"),
            Action::ReadAudit => (Role::Admin, "crew:admin"),
            Action::LeaveCrew => (Role::Viewer, "crew:admin"),
            Action::ShareTunnels => (Role::Member, "tunnels:share"),
            Action::ReadTunnels => (Role::Viewer, "tunnels:read"),
            Action::CloseOwnTunnels => (Role::Member, "tunnels:share"),
            Action::CloseCrewTunnels => (Role::Admin, "crew:admin"),
            Action::ReadTraffic => (Role::Viewer, "traffic:read"),
            Action::ReserveNames => (Role::Admin, "crew:admin"),
        }
    }
}

/// Effective permission: the role allows it and a scope grants it.
pub fn allows(role: Role, scopes: &[String], action: Action) -> bool {
    let (least, scope) = action.needs();
    let scoped = match action {
        // Any valid token may see who its crew is; only writes need crew:admin.
        Action::ReadMembers => true,
        // Writing implies reading one's own tokens.
        Action::ReadOwnTokens | Action::ReadCrewTokens => scopes
            .iter()
            .any(|s| s == "berth:*" || s == scope || s == "tokens:write"),
        _ => scopes.iter().any(|s| s == "berth:*" || s == scope),
    };
    role >= least && scoped
}

/// Whether scopes `holder` include everything `wanted` grants: `berth:*` covers
/// every scope; otherwise each wanted scope must be held.
pub fn scopes_cover(holder: &[String], wanted: &[String]) -> bool {
    holder.iter().any(|s| s == "berth:*") || wanted.iter().all(|s| holder.contains(s))
}

/// How the caller proved who they are.
#[derive(Debug)]
pub enum Via {
    Token(Box<TokenRow>),
    Session(Session),
    Password,
}

/// An authenticated caller.
#[derive(Debug)]
pub struct Principal {
    pub user: User,
    pub via: Via,
    /// For a token, its crew and the user's current role there.
    pub token_context: Option<Membership>,
}

impl Principal {
    pub fn token(&self) -> Option<&TokenRow> {
        match &self.via {
            Via::Token(token) => Some(token),
            _ => None,
        }
    }

    /// The scopes in force: the token's, or everything for a password or session.
    pub fn scopes(&self) -> Vec<String> {
        match &self.via {
            Via::Token(token) => token.scopes.clone(),
            _ => vec!["berth:*".to_string()],
        }
    }
}

/// Hash a password with argon2id and a random salt.
pub fn hash_password(password: &str) -> Result<String, String> {
    check_password_length(password)?;
    let salt_bytes: [u8; 16] = rand::random();
    let salt =
        SaltString::encode_b64(&salt_bytes).map_err(|e| format!("could not make a salt: {e}"))?;
    Argon2Unmapped
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| format!("could not hash the password: {e}"))
}

/// What argon2's work memory is asked of the allocator as, at the least (in
/// 1 KiB blocks): more than glibc's largest dynamic mmap threshold (32 MiB), so
/// each hash's memory is mapped for it and unmapped after it, and never raises
/// that threshold. Left to the crate, the second hash's 19 MiB came from the
/// heap and stayed resident for the life of the process. Only the blocks the
/// hash uses are touched; the rest of the reservation never becomes resident.
const WORK_MEMORY_BLOCKS: usize = 33 * 1024;

/// argon2id's cost for new hashes: 7 MiB and five passes, the configuration
/// OWASP's password storage guidance lists as strong as 19 MiB and two
/// (the crate's default), at a third of the memory. A login then raises the
/// server's resident memory by 7 MiB, not 19 (its peak, which the relay's
/// budget counts).
fn new_hash_params() -> Params {
    Params::new(7 * 1024, 5, 1, None).unwrap_or_default()
}

/// argon2 (argon2id with [`new_hash_params`] for new hashes; any
/// variant and parameters a stored hash names when verifying) with its work
/// memory returned to the system after each hash. Verifying goes through
/// `PasswordVerifier`, whose comparison is constant-time.
struct Argon2Unmapped;

impl PasswordHasher for Argon2Unmapped {
    type Params = Params;

    fn hash_password<'a>(
        &self,
        password: &[u8],
        salt: impl Into<Salt<'a>>,
    ) -> password_hash::Result<PasswordHash<'a>> {
        self.hash_password_customized(password, None, None, new_hash_params(), salt)
    }

    fn hash_password_customized<'a>(
        &self,
        password: &[u8],
        algorithm: Option<Ident<'a>>,
        version: Option<Decimal>,
        params: Params,
        salt: impl Into<Salt<'a>>,
    ) -> password_hash::Result<PasswordHash<'a>> {
        let algorithm = algorithm
            .map(Algorithm::try_from)
            .transpose()?
            .unwrap_or_default();
        let version = version
            .map(Version::try_from)
            .transpose()?
            .unwrap_or_default();
        let salt = salt.into();
        let mut salt_bytes = [0u8; Salt::MAX_LENGTH];
        let salt_bytes = salt.decode_b64(&mut salt_bytes)?;
        let length = params.output_len().unwrap_or(Params::DEFAULT_OUTPUT_LEN);
        let mut memory = Vec::with_capacity(params.block_count().max(WORK_MEMORY_BLOCKS));
        memory.resize(params.block_count(), Block::default());
        let argon2 = Argon2::new(algorithm, version, params.clone());
        let hash = Output::init_with(length, |out| {
            Ok(argon2.hash_password_into_with_memory(password, salt_bytes, out, &mut memory)?)
        })?;
        Ok(PasswordHash {
            algorithm: algorithm.ident(),
            version: Some(version.into()),
            params: ParamsString::try_from(&params)?,
            salt: Some(salt),
            hash: Some(hash),
        })
    }
}

/// The length rules for a new password, as one sentence.
pub fn check_password_length(password: &str) -> Result<(), String> {
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(format!(
            "The password is longer than {MAX_PASSWORD_BYTES} bytes; choose a shorter one."
        ));
    }
    if password.len() < MIN_PASSWORD_BYTES {
        return Err(format!(
            "The password is shorter than {MIN_PASSWORD_BYTES} characters; choose a longer one."
        ));
    }
    Ok(())
}

fn password_matches(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash)
        .map(|parsed| {
            Argon2Unmapped
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

/// Checks credentials against the store.
pub struct Auth {
    store: Arc<Store>,
    throttle: Throttle,
    last_used: LastUsed,
    /// Verified against when the user does not exist, so timing does not tell.
    dummy_password_hash: String,
}

impl Auth {
    pub fn new(store: Arc<Store>) -> Auth {
        let dummy_password_hash = hash_password("berth-timing-equaliser").unwrap_or_default();
        Auth {
            store,
            throttle: Throttle::default(),
            last_used: LastUsed::default(),
            dummy_password_hash,
        }
    }

    /// The store credentials are checked against.
    /// The store (a tunnel's thread keeps a handle to write its history).
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Verify a bearer token (DESIGN §2) and note its use from `address`.
    pub fn verify_token(&self, text: &str, address: &str) -> Result<Principal, AuthError> {
        let result = self.check_token(text, address);
        match &result {
            Err(AuthError::InvalidToken) => metrics::auth_failure(AuthFailure::InvalidToken),
            Err(AuthError::TokenExpired) => metrics::auth_failure(AuthFailure::TokenExpired),
            Err(AuthError::NoTeamContext) => metrics::auth_failure(AuthFailure::NoTeamContext),
            _ => {}
        }
        result
    }

    fn check_token(&self, text: &str, address: &str) -> Result<Principal, AuthError> {
        let parsed = Token::parse(text).map_err(|_| AuthError::InvalidToken)?;
        let presented = parsed.secret.hash();
        let found = self.store.tokens().find_for_auth(parsed.id)?;
        // Compare against something even for an unknown id, so both take the same time.
        let stored = found
            .as_ref()
            .map_or(&[0u8; 32][..], |(r, _, _)| &r.secret_hash[..]);
        let matches = token::hashes_match(&presented, stored);
        let (row, user, role) = match found {
            Some(found) if matches => found,
            _ => return Err(AuthError::InvalidToken),
        };
        if row.revoked_at.is_some() {
            return Err(AuthError::InvalidToken);
        }
        if row.expires_at.as_deref().is_some_and(time_fmt::is_past) {
            return Err(AuthError::TokenExpired);
        }
        let membership = Membership {
            crew: row.crew.clone(),
            role: role.ok_or(AuthError::NoTeamContext)?,
        };
        self.last_used.touch(&self.store, row.id, address);
        Ok(Principal {
            user,
            via: Via::Token(Box::new(row)),
            token_context: Some(membership),
        })
    }

    /// Verify a username and password, throttled per account and address.
    pub fn verify_password(
        &self,
        username: &str,
        password: &str,
        address: &str,
    ) -> Result<Principal, AuthError> {
        let result = self.check_password(username, password, address);
        match &result {
            Ok(_) => metrics::sign_in(SignIn::Success),
            Err(AuthError::RateLimited(_)) => metrics::sign_in(SignIn::Throttled),
            // A store failure says nothing about the password.
            Err(AuthError::Store(_)) => {}
            Err(_) => metrics::sign_in(SignIn::Failure),
        }
        result
    }

    fn check_password(
        &self,
        username: &str,
        password: &str,
        address: &str,
    ) -> Result<Principal, AuthError> {
        let key = username.to_lowercase();
        if let Some(wait) = self.throttle.blocked(&key, address) {
            return Err(AuthError::RateLimited(wait));
        }
        if password.len() > MAX_PASSWORD_BYTES {
            self.throttle.fail(&key, address);
            return Err(AuthError::BadCredentials);
        }
        let user = self.store.users().find_by_name(username)?;
        let hash = user
            .as_ref()
            .map_or(&self.dummy_password_hash, |u| &u.password_hash);
        let matches = password_matches(hash, password);
        match user {
            Some(user) if matches => {
                self.throttle.succeed(&key, address);
                Ok(Principal {
                    user,
                    via: Via::Password,
                    token_context: None,
                })
            }
            _ => {
                self.throttle.fail(&key, address);
                Err(AuthError::BadCredentials)
            }
        }
    }

    /// The user of a session cookie, if the session is live; a use by the
    /// person (`extend`, not the dashboard's background polling) moves its idle
    /// end forward, never past its lifetime.
    pub fn verify_session(&self, session_id: &str, extend: bool) -> Result<Principal, AuthError> {
        let mut session = self
            .store
            .sessions()
            .find(&token::hash(session_id))?
            .ok_or(AuthError::InvalidToken)?;
        let user = self
            .store
            .users()
            .find_by_id(session.user_id)?
            .ok_or(AuthError::InvalidToken)?;
        let until = extend
            .then(|| idle_end(&session, time::OffsetDateTime::now_utc()))
            .flatten();
        if let Some(until) = until {
            // A busy database costs the session some idle time, not this request.
            if self
                .store
                .sessions()
                .extend(&session.id_hash, &until)
                .is_ok()
            {
                session.expires_at = until;
            }
        }
        Ok(Principal {
            user,
            via: Via::Session(session),
            token_context: None,
        })
    }

    /// Show last use not yet written, so lists are current.
    pub fn overlay_last_used(&self, row: &mut TokenRow) {
        self.last_used.overlay(row);
    }

    /// Write last-use data that has waited out its interval.
    pub fn flush_due(&self) {
        self.last_used.flush(&self.store, false);
    }

    /// Write all pending last-use data (clean shutdown).
    pub fn flush_all(&self) {
        self.last_used.flush(&self.store, true);
    }
}

/// The new end of a session used at `now`, when it moves by more than
/// `SESSION_EXTEND_EVERY`: `SESSION_IDLE` from now, capped at its lifetime.
fn idle_end(session: &Session, now: time::OffsetDateTime) -> Option<String> {
    let created = time_fmt::parse(&session.created_at)?;
    let current = time_fmt::parse(&session.expires_at)?;
    let until = (now + SESSION_IDLE).min(created + SESSION_LIFETIME);
    (until - current > SESSION_EXTEND_EVERY).then(|| time_fmt::format(until))
}

/// Windows and limits for failed sign-ins.
const PAIR_LIMIT: (usize, Duration) = (5, Duration::from_secs(15 * 60));
const ACCOUNT_LIMIT: (usize, Duration) = (20, Duration::from_secs(60 * 60));
const ADDRESS_LIMIT: (usize, Duration) = (50, Duration::from_secs(60 * 60));
/// Keys remembered before old ones are swept.
const THROTTLE_SWEEP_AT: usize = 10_000;

/// Failed sign-ins per (account, address), per account and per address. Limits
/// expire with their window, so an owner is never locked out for good.
#[derive(Default)]
struct Throttle {
    failures: Mutex<HashMap<String, Vec<Instant>>>,
}

impl Throttle {
    fn keys(account: &str, address: &str) -> [(String, (usize, Duration)); 3] {
        [
            (format!("p\0{account}\0{address}"), PAIR_LIMIT),
            (format!("u\0{account}"), ACCOUNT_LIMIT),
            (format!("a\0{address}"), ADDRESS_LIMIT),
        ]
    }

    /// How long the caller must wait, if any limit is reached.
    fn blocked(&self, account: &str, address: &str) -> Option<Duration> {
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let mut wait = None;
        for (key, (limit, window)) in Throttle::keys(account, address) {
            if let Some(times) = map.get_mut(&key) {
                times.retain(|t| now.duration_since(*t) < window);
                if times.len() >= limit {
                    let until = window - now.duration_since(times[times.len() - limit]);
                    wait = Some(wait.map_or(until, |w: Duration| w.max(until)));
                }
            }
        }
        wait
    }

    fn fail(&self, account: &str, address: &str) {
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if map.len() > THROTTLE_SWEEP_AT {
            map.retain(|_, times| {
                times
                    .last()
                    .is_some_and(|t| now.duration_since(*t) < ACCOUNT_LIMIT.1)
            });
        }
        for (key, _) in Throttle::keys(account, address) {
            map.entry(key).or_default().push(now);
        }
    }

    /// A correct password clears the failures of that account from that address.
    fn succeed(&self, account: &str, address: &str) {
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let [(pair, _), _, _] = Throttle::keys(account, address);
        map.remove(&pair);
    }
}

/// Last use of each token, held in memory between writes.
#[derive(Default)]
struct LastUsed {
    entries: Mutex<HashMap<i64, UseEntry>>,
}

struct UseEntry {
    at: String,
    /// Distinct addresses since the last write, oldest first.
    pending_ips: Vec<String>,
    written: Option<Instant>,
}

impl LastUsed {
    /// Note a use; write at once if this token has not been written for an interval.
    fn touch(&self, store: &Store, id: i64, address: &str) {
        let due = {
            let mut map = self.entries.lock().unwrap_or_else(|e| e.into_inner());
            let entry = map.entry(id).or_insert_with(|| UseEntry {
                at: String::new(),
                pending_ips: Vec::new(),
                written: None,
            });
            entry.at = time_fmt::now();
            entry.pending_ips.retain(|ip| ip != address);
            entry.pending_ips.push(address.to_string());
            let due = entry
                .written
                .is_none_or(|w| w.elapsed() >= LAST_USED_INTERVAL);
            if due {
                entry.written = Some(Instant::now());
                Some((id, entry.at.clone(), std::mem::take(&mut entry.pending_ips)))
            } else {
                None
            }
        };
        if let Some(write) = due {
            self.write(store, vec![write]);
        }
    }

    fn flush(&self, store: &Store, everything: bool) {
        let writes: Vec<_> = {
            let mut map = self.entries.lock().unwrap_or_else(|e| e.into_inner());
            map.retain(|_, e| {
                !e.pending_ips.is_empty()
                    || e.written.is_some_and(|w| w.elapsed() < LAST_USED_INTERVAL)
            });
            map.iter_mut()
                .filter(|(_, e)| !e.pending_ips.is_empty())
                .filter(|(_, e)| {
                    everything || e.written.is_none_or(|w| w.elapsed() >= LAST_USED_INTERVAL)
                })
                .map(|(id, e)| {
                    e.written = Some(Instant::now());
                    (*id, e.at.clone(), std::mem::take(&mut e.pending_ips))
                })
                .collect()
        };
        self.write(store, writes);
    }

    fn write(&self, store: &Store, writes: Vec<(i64, String, Vec<String>)>) {
        if let Err(err) = store.tokens().record_use(&writes) {
            eprintln!("berth: could not record token last use ({err}); will retry");
            let mut map = self.entries.lock().unwrap_or_else(|e| e.into_inner());
            for (id, _, mut ips) in writes {
                if let Some(entry) = map.get_mut(&id) {
                    ips.append(&mut entry.pending_ips);
                    entry.pending_ips = ips;
                    entry.written = None;
                }
            }
        }
    }

    fn overlay(&self, row: &mut TokenRow) {
        let map = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = map.get(&row.id) {
            if let Some(ip) = entry.pending_ips.last() {
                row.last_used_at = Some(entry.at.clone());
                row.last_used_ip = Some(ip.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{NewToken, Redaction};
    use crate::token::Secret;

    fn all() -> Vec<String> {
        vec!["berth:*".to_string()]
    }

    #[test]
    fn roles_times_scopes_follow_the_table() {
        use Action::*;
        let cases = [
            (Role::Viewer, ReadOwnTokens, true),
            (Role::Viewer, WriteOwnTokens, true),
            (Role::Viewer, ReadCrewTokens, false),
            (Role::Member, WriteCrewTokens, false),
            (Role::Admin, WriteCrewTokens, true),
            (Role::Admin, ManageMembers, true),
            (Role::Admin, ManageOwners, false),
            (Role::Admin, CrewSettings, false),
            (Role::Owner, CrewSettings, true),
            (Role::Member, ReadAudit, false),
            (Role::Admin, ReadAudit, true),
            (Role::Viewer, ReadTunnels, true),
            (Role::Viewer, CloseOwnTunnels, false),
            (Role::Member, CloseOwnTunnels, true),
            (Role::Member, CloseCrewTunnels, false),
            (Role::Admin, CloseCrewTunnels, true),
            (Role::Viewer, ReadTraffic, true),
        ];
        for (role, action, expected) in cases {
            assert_eq!(
                allows(role, &all(), action),
                expected,
                "{role:?} {action:?}"
            );
        }
    }

    #[test]
    fn scopes_narrow_roles() {
        let read = vec!["tokens:read".to_string()];
        assert!(allows(Role::Owner, &read, Action::ReadOwnTokens));
        assert!(!allows(Role::Owner, &read, Action::WriteOwnTokens));
        assert!(!allows(Role::Owner, &read, Action::ManageMembers));
        let write = vec!["tokens:write".to_string()];
        assert!(allows(Role::Admin, &write, Action::ReadCrewTokens));
        assert!(!allows(
            Role::Owner,
            &["tunnels:share".to_string()],
            Action::CrewSettings
        ));
        assert!(allows(Role::Viewer, &all(), Action::LeaveCrew));
        assert!(!allows(Role::Owner, &read, Action::LeaveCrew));
    }

    #[test]
    fn berth_star_covers_every_scope_and_others_need_inclusion() {
        let s = |list: &[&str]| list.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert!(scopes_cover(&s(&["berth:*"]), &s(&["berth:*"])));
        assert!(scopes_cover(
            &s(&["berth:*"]),
            &s(&["crew:admin", "tokens:read"])
        ));
        assert!(!scopes_cover(&s(&["tokens:write"]), &s(&["berth:*"])));
        assert!(scopes_cover(
            &s(&["tokens:write", "tokens:read"]),
            &s(&["tokens:read"])
        ));
        assert!(!scopes_cover(
            &s(&["tokens:write"]),
            &s(&["tokens:write", "tunnels:share"])
        ));
    }

    #[test]
    fn sessions_end_when_idle_and_never_outlive_their_lifetime() {
        let t0 = time::OffsetDateTime::now_utc()
            .replace_nanosecond(0)
            .unwrap();
        let session = |created: time::OffsetDateTime, expires: time::OffsetDateTime| Session {
            id_hash: vec![1],
            user_id: 1,
            csrf_token: String::new(),
            created_at: time_fmt::format(created),
            expires_at: time_fmt::format(expires),
        };
        let fresh = session(t0, t0 + SESSION_IDLE);
        // Used again within the minute: no write.
        assert_eq!(idle_end(&fresh, t0 + Duration::from_secs(30)), None);
        // Used later: the idle end moves to an idle period from then.
        let later = t0 + Duration::from_secs(20 * 60);
        assert_eq!(
            idle_end(&fresh, later),
            Some(time_fmt::format(later + SESSION_IDLE))
        );
        // Near the end of its lifetime, the lifetime wins.
        let old = t0 - SESSION_LIFETIME + Duration::from_secs(30 * 60);
        let s = session(old, t0 + Duration::from_secs(10 * 60));
        assert_eq!(
            idle_end(&s, t0 + Duration::from_secs(5 * 60)),
            Some(time_fmt::format(old + SESSION_LIFETIME))
        );
        let at_cap = session(old, old + SESSION_LIFETIME);
        assert_eq!(idle_end(&at_cap, t0), None);
        assert!(SESSION_IDLE < SESSION_LIFETIME);
    }

    #[test]
    fn throttle_blocks_after_the_pair_limit_and_clears_on_success() {
        let t = Throttle::default();
        for _ in 0..PAIR_LIMIT.0 {
            assert!(t.blocked("alice", "1.2.3.4").is_none());
            t.fail("alice", "1.2.3.4");
        }
        let wait = t.blocked("alice", "1.2.3.4").unwrap();
        assert!(wait > Duration::from_secs(60) && wait <= PAIR_LIMIT.1);
        // Another address is not blocked by that pair.
        assert!(t.blocked("alice", "5.6.7.8").is_none());
        t.succeed("alice", "1.2.3.4");
        assert!(t.blocked("alice", "1.2.3.4").is_none());
    }

    #[test]
    fn the_account_limit_spans_addresses_and_stays_under_owasp() {
        assert!(ACCOUNT_LIMIT.0 * (3600 / ACCOUNT_LIMIT.1.as_secs() as usize).max(1) < 100);
        let t = Throttle::default();
        for i in 0..ACCOUNT_LIMIT.0 {
            t.fail("bob", &format!("10.0.0.{i}"));
        }
        assert!(t.blocked("bob", "10.9.9.9").is_some());
    }

    fn store_with_token() -> (Arc<Store>, String, i64) {
        let store = Arc::new(Store::open_in_memory().unwrap());
        let user = store
            .users()
            .create("alice", "h", Some(("home", Role::Owner)))
            .unwrap();
        let crew = store.crews().find_by_name("home").unwrap().unwrap();
        let secret = Secret::generate();
        let row = store
            .tokens()
            .create(&NewToken {
                user_id: user.id,
                crew_id: crew.id,
                name: "t",
                secret_hash: &secret.hash(),
                scopes: &all(),
                redaction: Redaction::Inherit,
                region: None,
                server: None,
                expires_at: None,
            })
            .unwrap();
        (store, format!("{}|{}", row.id, secret.expose()), crew.id)
    }

    #[test]
    fn tokens_verify_until_revoked_or_the_user_leaves() {
        let (store, text, crew) = store_with_token();
        let auth = Auth::new(store.clone());
        let p = auth.verify_token(&text, "127.0.0.1").unwrap();
        assert_eq!(p.token_context.as_ref().unwrap().role, Role::Owner);
        let id = p.token().unwrap().id;
        // Wrong secret with a valid checksum, and unknown ids, are invalid.
        let other = format!("{id}|{}", Secret::generate().expose());
        assert!(matches!(
            auth.verify_token(&other, "x"),
            Err(AuthError::InvalidToken)
        ));
        let unknown = text.replacen(&format!("{id}|"), "999|", 1);
        assert!(matches!(
            auth.verify_token(&unknown, "x"),
            Err(AuthError::InvalidToken)
        ));
        // Leaving the crew removes team context; the last owner cannot leave, so add one.
        let bob = store.users().create("bob", "h", None).unwrap();
        store.crews().add_member(crew, &bob, Role::Owner).unwrap();
        store.crews().remove_member(crew, p.user.id).unwrap();
        assert!(matches!(
            auth.verify_token(&text, "x"),
            Err(AuthError::NoTeamContext)
        ));
        store.tokens().revoke(id).unwrap();
        assert!(matches!(
            auth.verify_token(&text, "x"),
            Err(AuthError::InvalidToken)
        ));
    }

    #[test]
    fn last_use_is_written_once_per_interval_and_flushed_at_shutdown() {
        let (store, text, _) = store_with_token();
        let auth = Auth::new(store.clone());
        let id = auth
            .verify_token(&text, "10.0.0.1")
            .unwrap()
            .token()
            .unwrap()
            .id;
        let row = store.tokens().find_by_id(id).unwrap().unwrap();
        assert_eq!(row.last_used_ip.as_deref(), Some("10.0.0.1"));
        auth.verify_token(&text, "10.0.0.2").unwrap();
        // Within the interval: not written yet, but shown through the overlay.
        let mut row = store.tokens().find_by_id(id).unwrap().unwrap();
        assert_eq!(row.last_used_ip.as_deref(), Some("10.0.0.1"));
        auth.flush_due();
        assert_eq!(
            store
                .tokens()
                .find_by_id(id)
                .unwrap()
                .unwrap()
                .last_used_ip
                .as_deref(),
            Some("10.0.0.1")
        );
        auth.overlay_last_used(&mut row);
        assert_eq!(row.last_used_ip.as_deref(), Some("10.0.0.2"));
        auth.flush_all();
        let row = store.tokens().find_by_id(id).unwrap().unwrap();
        assert_eq!(row.last_used_ip.as_deref(), Some("10.0.0.2"));
        assert_eq!(row.recent_ips, ["10.0.0.2", "10.0.0.1"]);
    }

    #[test]
    fn hashes_made_by_the_argon2_crate_and_by_berth_verify_both_ways() {
        let salt = SaltString::encode_b64(b"sixteen byte slt").unwrap();
        let stock = Argon2::new(Algorithm::Argon2id, Version::V0x13, new_hash_params())
            .hash_password(b"correct horse", &salt)
            .unwrap()
            .to_string();
        let ours = Argon2Unmapped
            .hash_password(b"correct horse", &salt)
            .unwrap()
            .to_string();
        assert_eq!(stock, ours);
        assert!(ours.starts_with("$argon2id$v=19$m=7168,t=5,p=1$"), "{ours}");
        // Hashes made with the crate's default (berth's before) still verify.
        let before = Argon2::default()
            .hash_password(b"correct horse", &salt)
            .unwrap()
            .to_string();
        assert!(password_matches(&before, "correct horse"));
        assert!(password_matches(&stock, "correct horse"));
        assert!(!password_matches(&stock, "correct horsf"));
        // Other parameters and variants a stored hash may name still verify.
        let params = Params::new(8 * 1024, 1, 1, None).unwrap();
        let argon2i = Argon2::new(Algorithm::Argon2i, Version::V0x10, params)
            .hash_password(b"battery staple", &salt)
            .unwrap()
            .to_string();
        assert!(password_matches(&argon2i, "battery staple"));
        assert!(!password_matches(&argon2i, "battery stapler"));
    }

    #[test]
    fn passwords_hash_with_argon2id_and_long_ones_are_refused() {
        let hash = hash_password("correct horse").unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(password_matches(&hash, "correct horse"));
        assert!(!password_matches(&hash, "wrong horse"));
        assert!(hash_password(&"x".repeat(MAX_PASSWORD_BYTES + 1)).is_err());
        assert!(hash_password("short").is_err());
    }
}
