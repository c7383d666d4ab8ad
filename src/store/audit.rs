//! The audit log: who did what, when, from where. Kept, never pruned.

use rusqlite::params;
use serde::Serialize;

use super::{Result, Store};
use crate::time_fmt;

/// An event to record.
pub struct NewAuditEvent<'a> {
    pub crew_id: Option<i64>,
    pub user_id: Option<i64>,
    pub username: Option<&'a str>,
    pub token_id: Option<i64>,
    pub action: &'a str,
    pub detail: String,
    pub address: Option<&'a str>,
}

/// A recorded event, as the API shows it.
#[derive(Serialize, Debug)]
pub struct AuditEvent {
    pub id: i64,
    pub at: String,
    pub crew_id: Option<i64>,
    pub user_id: Option<i64>,
    pub username: Option<String>,
    pub token_id: Option<i64>,
    pub action: String,
    pub detail: String,
    pub address: Option<String>,
}

pub struct Audit<'a>(pub(super) &'a Store);

impl Audit<'_> {
    pub fn record(&self, event: &NewAuditEvent) -> Result<()> {
        self.0.write(|tx| {
            tx.execute(
                "INSERT INTO audit (at, crew_id, user_id, username, token_id, action, detail, address)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    time_fmt::now(),
                    event.crew_id,
                    event.user_id,
                    event.username,
                    event.token_id,
                    event.action,
                    event.detail,
                    event.address
                ],
            )?;
            Ok(())
        })
    }

    /// The newest events of a crew.
    pub fn list(&self, crew_id: i64, limit: u32) -> Result<Vec<AuditEvent>> {
        self.0.read(|c| {
            c.prepare_cached(
                "SELECT id, at, crew_id, user_id, username, token_id, action, detail, address
                 FROM audit WHERE crew_id = ?1 ORDER BY id DESC LIMIT ?2",
            )?
            .query_map(params![crew_id, limit], |r| {
                Ok(AuditEvent {
                    id: r.get(0)?,
                    at: r.get(1)?,
                    crew_id: r.get(2)?,
                    user_id: r.get(3)?,
                    username: r.get(4)?,
                    token_id: r.get(5)?,
                    action: r.get(6)?,
                    detail: r.get(7)?,
                    address: r.get(8)?,
                })
            })?
            .collect()
        })
    }
}
