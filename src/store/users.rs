//! Users: accounts that sign in with a password.

use rusqlite::{params, OptionalExtension, Row};

use super::{Crews, Result, Role, Store, StoreError};
use crate::time_fmt;

/// A user account; the password hash stays out of Debug output.
#[derive(Clone)]
pub struct User {
    pub id: i64,
    pub username: String,
    pub password_hash: String,
    pub created_at: String,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "User({} {})", self.id, self.username)
    }
}

impl User {
    fn from_row(row: &Row) -> rusqlite::Result<User> {
        Ok(User {
            id: row.get("id")?,
            username: row.get("username")?,
            password_hash: row.get("password_hash")?,
            created_at: row.get("created_at")?,
        })
    }
}

/// A user with the names of their crews and their role in each.
pub type UserWithCrews = (User, Vec<(String, Role)>);

pub struct Users<'a>(pub(super) &'a Store);

impl Users<'_> {
    /// Create a user and, when given, put them in a crew (created if new) with a role,
    /// all in one transaction.
    pub fn create(
        &self,
        username: &str,
        password_hash: &str,
        crew: Option<(&str, Role)>,
    ) -> Result<User> {
        self.0.write(|tx| {
            let now = time_fmt::now();
            tx.execute(
                "INSERT INTO users (username, password_hash, created_at) VALUES (?1, ?2, ?3)",
                params![username, password_hash, now],
            )?;
            let user_id = tx.last_insert_rowid();
            if let Some((crew_name, role)) = crew {
                let crew_id = Crews::ensure_in(tx, crew_name)?;
                Crews::add_member_in(tx, crew_id, user_id, role)?;
            }
            Ok(User {
                id: user_id,
                username: username.to_string(),
                password_hash: password_hash.to_string(),
                created_at: now,
            })
        })
    }

    pub fn find_by_name(&self, username: &str) -> Result<Option<User>> {
        self.0.read(|c| {
            c.prepare_cached("SELECT * FROM users WHERE username = ?1")?
                .query_row([username], User::from_row)
                .optional()
        })
    }

    pub fn find_by_id(&self, id: i64) -> Result<Option<User>> {
        self.0.read(|c| {
            c.prepare_cached("SELECT * FROM users WHERE id = ?1")?
                .query_row([id], User::from_row)
                .optional()
        })
    }

    pub fn count(&self) -> Result<i64> {
        self.0.read(|c| {
            c.prepare_cached("SELECT count(*) FROM users")?
                .query_row([], |r| r.get(0))
        })
    }

    /// Every user with their crews and roles, by username.
    pub fn list(&self) -> Result<Vec<UserWithCrews>> {
        self.0.read(|c| {
            let mut users = c
                .prepare("SELECT * FROM users ORDER BY username")?
                .query_map([], User::from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let mut stmt = c.prepare(
                "SELECT c.name, m.role FROM memberships m JOIN crews c ON c.id = m.crew_id
                 WHERE m.user_id = ?1 ORDER BY c.name",
            )?;
            let mut out = Vec::new();
            for user in users.drain(..) {
                let crews = stmt
                    .query_map([user.id], |r| {
                        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
                    })?
                    .filter_map(|r| r.ok())
                    .filter_map(|(name, role)| Some((name, Role::parse(&role)?)))
                    .collect();
                out.push((user, crews));
            }
            Ok(out)
        })
    }

    pub fn set_password(&self, user_id: i64, password_hash: &str) -> Result<()> {
        self.0.write(|tx| {
            let changed = tx.execute(
                "UPDATE users SET password_hash = ?2 WHERE id = ?1",
                params![user_id, password_hash],
            )?;
            // Sessions signed in with the old password end with it.
            tx.execute("DELETE FROM sessions WHERE user_id = ?1", [user_id])?;
            if changed == 0 {
                return Err(StoreError::NotFound);
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_with_crew_then_find() {
        let store = Store::open_in_memory().unwrap();
        let alice = store
            .users()
            .create("alice", "hash", Some(("home", Role::Owner)))
            .unwrap();
        assert_eq!(
            store.users().find_by_name("ALICE").unwrap().unwrap().id,
            alice.id
        );
        let crews = store.crews().memberships_of(alice.id).unwrap();
        assert_eq!(crews.len(), 1);
        assert_eq!(crews[0].crew.name, "home");
        assert_eq!(crews[0].role, Role::Owner);
        assert_eq!(store.users().count().unwrap(), 1);
    }

    #[test]
    fn duplicate_usernames_conflict_and_leave_no_crew_behind() {
        let store = Store::open_in_memory().unwrap();
        store.users().create("bob", "h", None).unwrap();
        let err = store
            .users()
            .create("Bob", "h", Some(("new-crew", Role::Owner)))
            .unwrap_err();
        assert!(matches!(err, StoreError::Conflict));
        assert!(store.crews().find_by_name("new-crew").unwrap().is_none());
    }

    #[test]
    fn debug_hides_the_password_hash() {
        let user = User {
            id: 1,
            username: "a".into(),
            password_hash: "$argon2id$secret".into(),
            created_at: String::new(),
        };
        assert!(!format!("{user:?}").contains("argon2"));
    }
}
