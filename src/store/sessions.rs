//! Dashboard sessions: only the SHA-256 of the session id is stored.

use rusqlite::{params, OptionalExtension};

use super::{Result, Store};
use crate::time_fmt;

pub struct Session {
    /// SHA-256 of the session id.
    pub id_hash: Vec<u8>,
    pub user_id: i64,
    pub csrf_token: String,
    pub created_at: String,
    /// When it ends unless used again (idle expiry), never past its lifetime.
    pub expires_at: String,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Session(user {})", self.user_id)
    }
}

pub struct Sessions<'a>(pub(super) &'a Store);

impl Sessions<'_> {
    pub fn create(
        &self,
        id_hash: &[u8],
        user_id: i64,
        csrf_token: &str,
        expires_at: &str,
    ) -> Result<()> {
        self.0.write(|tx| {
            // Sign-in is a good moment to forget sessions that have run out.
            tx.execute(
                "DELETE FROM sessions WHERE expires_at < ?1",
                [time_fmt::now()],
            )?;
            tx.execute(
                "INSERT INTO sessions (id_hash, user_id, csrf_token, created_at, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![id_hash, user_id, csrf_token, time_fmt::now(), expires_at],
            )?;
            Ok(())
        })
    }

    /// The session, if it exists and has not expired.
    pub fn find(&self, id_hash: &[u8]) -> Result<Option<Session>> {
        let found = self.0.read(|c| {
            c.prepare_cached(
                "SELECT user_id, csrf_token, created_at, expires_at FROM sessions WHERE id_hash = ?1",
            )?
            .query_row([id_hash], |r| {
                Ok(Session {
                    id_hash: id_hash.to_vec(),
                    user_id: r.get(0)?,
                    csrf_token: r.get(1)?,
                    created_at: r.get(2)?,
                    expires_at: r.get(3)?,
                })
            })
            .optional()
        })?;
        Ok(found.filter(|s| !time_fmt::is_past(&s.expires_at)))
    }

    pub fn delete(&self, id_hash: &[u8]) -> Result<()> {
        self.0.write(|tx| {
            tx.execute("DELETE FROM sessions WHERE id_hash = ?1", [id_hash])?;
            Ok(())
        })
    }

    /// Move a live session's end to `expires_at` (a use within the idle limit).
    pub fn extend(&self, id_hash: &[u8], expires_at: &str) -> Result<()> {
        self.0.write(|tx| {
            tx.execute(
                "UPDATE sessions SET expires_at = ?2 WHERE id_hash = ?1",
                params![id_hash, expires_at],
            )?;
            Ok(())
        })
    }

    /// End every session of a user ("sign out everywhere"); how many there were.
    pub fn delete_for_user(&self, user_id: i64) -> Result<usize> {
        self.0.write(|tx| {
            let live = tx.execute(
                "DELETE FROM sessions WHERE user_id = ?1 AND expires_at > ?2",
                params![user_id, time_fmt::now()],
            )?;
            tx.execute("DELETE FROM sessions WHERE user_id = ?1", [user_id])?;
            Ok(live)
        })
    }
}
