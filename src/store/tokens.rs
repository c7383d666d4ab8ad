//! Personal access tokens: only the SHA-256 of each secret is stored.

use rusqlite::{params, OptionalExtension, Row};

use super::{Crew, CrewLimits, Redaction, Result, Role, Store, StoreError, User};
use crate::time_fmt;

/// How many distinct client addresses a token remembers.
pub const RECENT_IPS: usize = 5;

/// A stored token with its user's and crew's names.
#[derive(Clone)]
pub struct TokenRow {
    pub id: i64,
    pub user_id: i64,
    pub username: String,
    pub crew: Crew,
    pub name: String,
    pub secret_hash: Vec<u8>,
    pub scopes: Vec<String>,
    pub redaction: Redaction,
    pub region: Option<String>,
    pub server: Option<String>,
    pub created_at: String,
    pub last_used_at: Option<String>,
    pub last_used_ip: Option<String>,
    pub recent_ips: Vec<String>,
    pub expires_at: Option<String>,
    pub revoked_at: Option<String>,
}

impl std::fmt::Debug for TokenRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TokenRow({} {:?})", self.id, self.name)
    }
}

impl TokenRow {
    fn from_row(row: &Row) -> rusqlite::Result<TokenRow> {
        let scopes: String = row.get("scopes")?;
        let recent: String = row.get("recent_ips")?;
        let tier: String = row.get("redaction")?;
        let crew_tier: String = row.get("crew_redaction")?;
        Ok(TokenRow {
            id: row.get("id")?,
            user_id: row.get("user_id")?,
            username: row.get("username")?,
            crew: Crew {
                id: row.get("crew_id")?,
                name: row.get("crew_name")?,
                default_redaction: Redaction::parse(&crew_tier).unwrap_or(Redaction::Standard),
                limits: CrewLimits::from_row(row)?,
                created_at: row.get("crew_created_at")?,
            },
            name: row.get("name")?,
            secret_hash: row.get("secret_hash")?,
            scopes: serde_json::from_str(&scopes).unwrap_or_default(),
            redaction: Redaction::parse(&tier).unwrap_or(Redaction::Inherit),
            region: row.get("region")?,
            server: row.get("server")?,
            created_at: row.get("created_at")?,
            last_used_at: row.get("last_used_at")?,
            last_used_ip: row.get("last_used_ip")?,
            recent_ips: serde_json::from_str(&recent).unwrap_or_default(),
            expires_at: row.get("expires_at")?,
            revoked_at: row.get("revoked_at")?,
        })
    }

    /// "active", "revoked" or "expired".
    pub fn status(&self) -> &'static str {
        if self.revoked_at.is_some() {
            "revoked"
        } else if self.expires_at.as_deref().is_some_and(time_fmt::is_past) {
            "expired"
        } else {
            "active"
        }
    }

    /// The tier its traffic is recorded with: its own, or the crew's when inherited.
    pub fn effective_redaction(&self) -> Redaction {
        match self.redaction {
            Redaction::Inherit => self.crew.default_redaction,
            tier => tier,
        }
    }
}

/// What a new token is made of; the caller has hashed the secret.
pub struct NewToken<'a> {
    pub user_id: i64,
    pub crew_id: i64,
    pub name: &'a str,
    pub secret_hash: &'a [u8],
    pub scopes: &'a [String],
    pub redaction: Redaction,
    pub region: Option<&'a str>,
    pub server: Option<&'a str>,
    pub expires_at: Option<&'a str>,
}

/// Changes to a token's settings; `None` leaves a field as it is.
#[derive(Default)]
pub struct TokenUpdate {
    pub name: Option<String>,
    pub redaction: Option<Redaction>,
    pub region: Option<Option<String>>,
    pub server: Option<Option<String>>,
}

const SELECT: &str = "SELECT t.*, u.username, c.name AS crew_name,
    c.default_redaction AS crew_redaction, c.created_at AS crew_created_at,
    c.max_tunnels_per_user, c.max_tunnels, c.max_tcp_ports_per_user, c.max_tcp_ports
    FROM tokens t JOIN users u ON u.id = t.user_id JOIN crews c ON c.id = t.crew_id";

const SELECT_FOR_AUTH: &str = "SELECT t.*, u.username, c.name AS crew_name,
    c.default_redaction AS crew_redaction, c.created_at AS crew_created_at,
    c.max_tunnels_per_user, c.max_tunnels, c.max_tcp_ports_per_user, c.max_tcp_ports,
    u.password_hash, u.created_at AS user_created_at, m.role AS member_role
    FROM tokens t JOIN users u ON u.id = t.user_id JOIN crews c ON c.id = t.crew_id";

pub struct Tokens<'a>(pub(super) &'a Store);

impl Tokens<'_> {
    /// Store a new token; Conflict when the user already has an active one of that name in the crew.
    pub fn create(&self, new: &NewToken) -> Result<TokenRow> {
        let id = self.0.write(|tx| {
            tx.execute(
                "INSERT INTO tokens (user_id, crew_id, name, secret_hash, scopes, redaction,
                 region, server, created_at, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                params![
                    new.user_id,
                    new.crew_id,
                    new.name,
                    new.secret_hash,
                    serde_json::to_string(new.scopes).unwrap_or_else(|_| "[]".into()),
                    new.redaction.as_str(),
                    new.region,
                    new.server,
                    time_fmt::now(),
                    new.expires_at,
                ],
            )?;
            Ok(tx.last_insert_rowid())
        })?;
        self.find_by_id(id)?.ok_or(StoreError::NotFound)
    }

    pub fn find_by_id(&self, id: i64) -> Result<Option<TokenRow>> {
        self.0.read(|c| {
            c.prepare_cached(&format!("{SELECT} WHERE t.id = ?1"))?
                .query_row([id], TokenRow::from_row)
                .optional()
        })
    }

    /// For verification in one read: the token, its user, and the user's current
    /// role in the token's crew (None once they have left it).
    pub fn find_for_auth(&self, id: i64) -> Result<Option<(TokenRow, User, Option<Role>)>> {
        self.0.read(|c| {
            c.prepare_cached(&format!(
                "{SELECT_FOR_AUTH} LEFT JOIN memberships m
                   ON m.crew_id = t.crew_id AND m.user_id = t.user_id
                 WHERE t.id = ?1"
            ))?
            .query_row([id], |row| {
                let token = TokenRow::from_row(row)?;
                let user = User {
                    id: token.user_id,
                    username: token.username.clone(),
                    password_hash: row.get("password_hash")?,
                    created_at: row.get("user_created_at")?,
                };
                let role: Option<String> = row.get("member_role")?;
                Ok((token, user, role.as_deref().and_then(Role::parse)))
            })
            .optional()
        })
    }

    /// A user's tokens, in one crew or all of them, newest first.
    pub fn list_for_user(&self, user_id: i64, crew_id: Option<i64>) -> Result<Vec<TokenRow>> {
        self.0.read(|c| {
            c.prepare_cached(&format!(
                "{SELECT} WHERE t.user_id = ?1 AND (?2 IS NULL OR t.crew_id = ?2) ORDER BY t.id DESC"
            ))?
            .query_map(params![user_id, crew_id], TokenRow::from_row)?
            .collect()
        })
    }

    /// Every token of a crew, newest first.
    pub fn list_for_crew(&self, crew_id: i64) -> Result<Vec<TokenRow>> {
        self.0.read(|c| {
            c.prepare_cached(&format!("{SELECT} WHERE t.crew_id = ?1 ORDER BY t.id DESC"))?
                .query_map([crew_id], TokenRow::from_row)?
                .collect()
        })
    }

    /// Revoke now; revoking a revoked token keeps its first revocation time.
    pub fn revoke(&self, id: i64) -> Result<TokenRow> {
        self.0.write(|tx| {
            let changed = tx.execute(
                "UPDATE tokens SET revoked_at = coalesce(revoked_at, ?2) WHERE id = ?1",
                params![id, time_fmt::now()],
            )?;
            if changed == 0 {
                return Err(StoreError::NotFound);
            }
            Ok(())
        })?;
        self.find_by_id(id)?.ok_or(StoreError::NotFound)
    }

    /// Revoke every active token of a user, in every crew; the ids revoked.
    pub fn revoke_all_for_user(&self, user_id: i64) -> Result<Vec<i64>> {
        self.0.write(|tx| {
            let ids = tx
                .prepare(
                    "UPDATE tokens SET revoked_at = ?2
                     WHERE user_id = ?1 AND revoked_at IS NULL RETURNING id",
                )?
                .query_map(params![user_id, time_fmt::now()], |r| r.get(0))?
                .collect::<rusqlite::Result<Vec<i64>>>()?;
            Ok(ids)
        })
    }

    pub fn update(&self, id: i64, change: &TokenUpdate) -> Result<TokenRow> {
        self.0.write(|tx| {
            let changed = tx.execute(
                "UPDATE tokens SET
                   name = coalesce(?2, name),
                   redaction = coalesce(?3, redaction),
                   region = CASE WHEN ?4 THEN ?5 ELSE region END,
                   server = CASE WHEN ?6 THEN ?7 ELSE server END
                 WHERE id = ?1",
                params![
                    id,
                    change.name,
                    change.redaction.map(Redaction::as_str),
                    change.region.is_some(),
                    change.region.clone().flatten(),
                    change.server.is_some(),
                    change.server.clone().flatten(),
                ],
            )?;
            if changed == 0 {
                return Err(StoreError::NotFound);
            }
            Ok(())
        })?;
        if change.redaction.is_some() {
            self.0.redaction_changed();
        }
        self.find_by_id(id)?.ok_or(StoreError::NotFound)
    }

    /// Write coalesced last-use data: per token, the time of its last use and the
    /// addresses seen since the previous write, oldest first.
    pub fn record_use(&self, uses: &[(i64, String, Vec<String>)]) -> Result<()> {
        if uses.is_empty() {
            return Ok(());
        }
        self.0.write(|tx| {
            for (id, at, ips) in uses {
                let recent: Option<String> = tx
                    .query_row("SELECT recent_ips FROM tokens WHERE id = ?1", [id], |r| r.get(0))
                    .optional()?;
                let Some(recent) = recent else { continue };
                let mut recent: Vec<String> = serde_json::from_str(&recent).unwrap_or_default();
                for ip in ips {
                    recent.retain(|seen| seen != ip);
                    recent.insert(0, ip.clone());
                }
                recent.truncate(RECENT_IPS);
                tx.execute(
                    "UPDATE tokens SET last_used_at = ?2, last_used_ip = ?3, recent_ips = ?4 WHERE id = ?1",
                    params![id, at, recent.first(), serde_json::to_string(&recent).unwrap_or_default()],
                )?;
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Role;

    fn setup() -> (Store, i64, i64) {
        let store = Store::open_in_memory().unwrap();
        let user = store
            .users()
            .create("alice", "h", Some(("home", Role::Owner)))
            .unwrap();
        let crew = store.crews().find_by_name("home").unwrap().unwrap();
        (store, user.id, crew.id)
    }

    fn new<'a>(user_id: i64, crew_id: i64, name: &'a str, scopes: &'a [String]) -> NewToken<'a> {
        NewToken {
            user_id,
            crew_id,
            name,
            secret_hash: &[7u8; 32],
            scopes,
            redaction: Redaction::Inherit,
            region: None,
            server: None,
            expires_at: None,
        }
    }

    #[test]
    fn create_find_list_revoke() {
        let (store, user, crew) = setup();
        let scopes = vec!["berth:*".to_string()];
        let t = store
            .tokens()
            .create(&new(user, crew, "laptop", &scopes))
            .unwrap();
        assert_eq!(t.username, "alice");
        assert_eq!(t.crew.name, "home");
        assert_eq!(t.scopes, scopes);
        assert_eq!(t.status(), "active");
        assert_eq!(t.effective_redaction(), Redaction::Standard);
        assert!(matches!(
            store.tokens().create(&new(user, crew, "laptop", &scopes)),
            Err(StoreError::Conflict)
        ));
        let revoked = store.tokens().revoke(t.id).unwrap();
        assert_eq!(revoked.status(), "revoked");
        // The name is free again once revoked.
        store
            .tokens()
            .create(&new(user, crew, "laptop", &scopes))
            .unwrap();
        assert_eq!(
            store
                .tokens()
                .list_for_user(user, Some(crew))
                .unwrap()
                .len(),
            2
        );
        assert_eq!(store.tokens().list_for_crew(crew).unwrap().len(), 2);
        assert!(matches!(
            store.tokens().revoke(999),
            Err(StoreError::NotFound)
        ));
    }

    #[test]
    fn revoking_all_of_a_user_s_tokens_leaves_others_alone() {
        let (store, alice, crew) = setup();
        let bob = store.users().create("bob", "h", None).unwrap();
        store.crews().add_member(crew, &bob, Role::Member).unwrap();
        let scopes = vec!["berth:*".to_string()];
        let a1 = store
            .tokens()
            .create(&new(alice, crew, "a1", &scopes))
            .unwrap();
        let a2 = store
            .tokens()
            .create(&new(alice, crew, "a2", &scopes))
            .unwrap();
        let b1 = store
            .tokens()
            .create(&new(bob.id, crew, "b1", &scopes))
            .unwrap();
        store.tokens().revoke(a2.id).unwrap();
        assert_eq!(store.tokens().revoke_all_for_user(alice).unwrap(), [a1.id]);
        let status = |id| store.tokens().find_by_id(id).unwrap().unwrap().status();
        assert_eq!((status(a1.id), status(b1.id)), ("revoked", "active"));
        assert!(store
            .tokens()
            .revoke_all_for_user(alice)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn recent_addresses_keep_the_last_five_distinct() {
        let (store, user, crew) = setup();
        let t = store.tokens().create(&new(user, crew, "ci", &[])).unwrap();
        for ip in ["a", "b", "a", "c"] {
            store
                .tokens()
                .record_use(&[(t.id, time_fmt::now(), vec![ip.to_string()])])
                .unwrap();
        }
        let ips = vec!["d".to_string(), "e".to_string(), "f".to_string()];
        store
            .tokens()
            .record_use(&[(t.id, time_fmt::now(), ips)])
            .unwrap();
        let t = store.tokens().find_by_id(t.id).unwrap().unwrap();
        assert_eq!(t.recent_ips, ["f", "e", "d", "c", "a"]);
        assert_eq!(t.last_used_ip.as_deref(), Some("f"));
        assert!(t.last_used_at.is_some());
    }

    #[test]
    fn update_changes_only_what_is_given() {
        let (store, user, crew) = setup();
        let t = store.tokens().create(&new(user, crew, "ci", &[])).unwrap();
        let change = TokenUpdate {
            redaction: Some(Redaction::Strict),
            region: Some(Some("eu".into())),
            ..TokenUpdate::default()
        };
        let t = store.tokens().update(t.id, &change).unwrap();
        assert_eq!(t.redaction, Redaction::Strict);
        assert_eq!(t.region.as_deref(), Some("eu"));
        assert_eq!(t.name, "ci");
        let t = store
            .tokens()
            .update(
                t.id,
                &TokenUpdate {
                    region: Some(None),
                    ..TokenUpdate::default()
                },
            )
            .unwrap();
        assert_eq!(t.region, None);
    }
}
