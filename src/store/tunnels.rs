//! Tunnel history: a row per tunnel opened, closed_at set when it ends.

use rusqlite::{params, OptionalExtension, Row};

use super::{Result, Store};
use crate::time_fmt;

/// A tunnel to record as opened.
pub struct NewTunnel<'a> {
    pub id: &'a str,
    pub crew_id: i64,
    pub user_id: i64,
    pub token_id: i64,
    pub kind: &'a str,
    pub subdomain: &'a str,
    pub url: &'a str,
}

/// A recorded tunnel with its crew's, user's and token's names.
#[derive(Clone, Debug)]
pub struct TunnelRow {
    pub id: String,
    pub kind: String,
    pub subdomain: String,
    pub url: String,
    pub crew_id: i64,
    pub crew_name: String,
    pub user_id: i64,
    pub username: String,
    pub token_id: i64,
    pub token_name: String,
    pub opened_at: String,
    pub closed_at: Option<String>,
    /// Requests recorded through it since it opened.
    pub request_count: i64,
}

impl TunnelRow {
    fn from_row(row: &Row) -> rusqlite::Result<TunnelRow> {
        Ok(TunnelRow {
            id: row.get("id")?,
            kind: row.get("kind")?,
            subdomain: row.get("subdomain")?,
            url: row.get("url")?,
            crew_id: row.get("crew_id")?,
            crew_name: row.get("crew_name")?,
            user_id: row.get("user_id")?,
            username: row.get("username")?,
            token_id: row.get("token_id")?,
            token_name: row.get("token_name")?,
            opened_at: row.get("opened_at")?,
            closed_at: row.get("closed_at")?,
            request_count: row.get("request_count")?,
        })
    }

    /// Whether the tunnel is still open.
    pub fn active(&self) -> bool {
        self.closed_at.is_none()
    }
}

const SELECT: &str = "SELECT t.id, t.kind, t.subdomain, t.url, t.crew_id, c.name AS crew_name,
        t.user_id, u.username, t.token_id, k.name AS token_name, t.opened_at, t.closed_at,
        t.request_count
    FROM tunnels t
    JOIN crews c ON c.id = t.crew_id
    JOIN users u ON u.id = t.user_id
    JOIN tokens k ON k.id = t.token_id";

pub struct Tunnels<'a>(pub(super) &'a Store);

impl Tunnels<'_> {
    /// Record a tunnel as opened now.
    pub fn open(&self, tunnel: &NewTunnel) -> Result<()> {
        self.0.write(|tx| {
            tx.execute(
                "INSERT INTO tunnels (id, crew_id, user_id, token_id, kind, subdomain, url, opened_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    tunnel.id,
                    tunnel.crew_id,
                    tunnel.user_id,
                    tunnel.token_id,
                    tunnel.kind,
                    tunnel.subdomain,
                    tunnel.url,
                    time_fmt::now()
                ],
            )?;
            Ok(())
        })
    }

    /// Mark a tunnel closed now; false if it was already closed (or unknown).
    pub fn close(&self, id: &str) -> Result<bool> {
        self.0.write(|tx| {
            let changed = tx.execute(
                "UPDATE tunnels SET closed_at = ?2 WHERE id = ?1 AND closed_at IS NULL",
                params![id, time_fmt::now()],
            )?;
            Ok(changed > 0)
        })
    }

    /// For each port a TCP tunnel was on since `since` (or is still marked
    /// open on: a crash), the crew of the last one and when it closed (None:
    /// still marked open). At server start, those ports are held again for
    /// their crews.
    pub fn recent_tcp_ports(&self, since: &str) -> Result<Vec<(u16, i64, Option<String>)>> {
        self.0.read(|c| {
            let rows: Vec<(String, i64, Option<String>)> = c
                .prepare_cached(
                    "SELECT subdomain, crew_id, closed_at FROM tunnels
                     WHERE kind = 'tcp' AND (closed_at IS NULL OR closed_at > ?1)
                     ORDER BY opened_at",
                )?
                .query_map(params![since], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<rusqlite::Result<_>>()?;
            // In opening order: the last tunnel on a port decides.
            let mut last: Vec<(u16, i64, Option<String>)> = Vec::new();
            for (port, crew, closed) in rows {
                let Ok(port) = port.parse::<u16>() else {
                    continue;
                };
                last.retain(|(p, _, _)| *p != port);
                last.push((port, crew, closed));
            }
            Ok(last)
        })
    }

    /// Mark every open tunnel closed: at server start, none is live any more.
    pub fn close_all(&self) -> Result<usize> {
        self.0.write(|tx| {
            Ok(tx.execute(
                "UPDATE tunnels SET closed_at = ?1 WHERE closed_at IS NULL",
                params![time_fmt::now()],
            )?)
        })
    }

    /// Forget tunnels that closed before `cutoff` (an RFC 3339 time), their
    /// inspector records with them; how many tunnels went.
    pub fn prune_closed_before(&self, cutoff: &str) -> Result<usize> {
        self.0.write(|tx| {
            tx.execute(
                "DELETE FROM requests WHERE tunnel_id IN
                   (SELECT id FROM tunnels WHERE closed_at IS NOT NULL AND closed_at < ?1)",
                params![cutoff],
            )?;
            Ok(tx.execute(
                "DELETE FROM tunnels WHERE closed_at IS NOT NULL AND closed_at < ?1",
                params![cutoff],
            )?)
        })
    }

    /// The ids of a member's live tunnels in a crew.
    pub fn live_ids_of_member(&self, crew_id: i64, user_id: i64) -> Result<Vec<String>> {
        self.0.read(|c| {
            c.prepare_cached(
                "SELECT id FROM tunnels WHERE crew_id = ?1 AND user_id = ?2 AND closed_at IS NULL",
            )?
            .query_map(params![crew_id, user_id], |r| r.get(0))?
            .collect()
        })
    }

    pub fn find_by_id(&self, id: &str) -> Result<Option<TunnelRow>> {
        self.0.read(|c| {
            c.prepare_cached(&format!("{SELECT} WHERE t.id = ?1"))?
                .query_row(params![id], TunnelRow::from_row)
                .optional()
        })
    }

    /// A crew's tunnels, newest first; only the open ones when `active_only`.
    pub fn list_for_crew(&self, crew_id: i64, active_only: bool) -> Result<Vec<TunnelRow>> {
        self.0.read(|c| {
            c.prepare_cached(&format!(
                "{SELECT} WHERE t.crew_id = ?1 AND (?2 = 0 OR t.closed_at IS NULL)
                 ORDER BY t.opened_at DESC, t.rowid DESC"
            ))?
            .query_map(params![crew_id, active_only], TunnelRow::from_row)?
            .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::store::fixture::{store_with_tunnels, Fixture};

    #[test]
    fn a_tunnel_opens_closes_once_and_lists_newest_first() {
        let Fixture { store, crew_id, .. } = store_with_tunnels(&["a1", "b2"]);
        let all = store.tunnels().list_for_crew(crew_id, false).unwrap();
        assert_eq!(
            all.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(),
            ["b2", "a1"]
        );
        assert_eq!(all[0].token_name, "ci");
        assert!(store.tunnels().close("a1").unwrap());
        assert!(!store.tunnels().close("a1").unwrap());
        let live = store.tunnels().list_for_crew(crew_id, true).unwrap();
        assert_eq!(live.len(), 1);
        assert!(!store.tunnels().find_by_id("a1").unwrap().unwrap().active());
        assert_eq!(store.tunnels().close_all().unwrap(), 1);
        assert!(store
            .tunnels()
            .list_for_crew(crew_id, true)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn pruning_forgets_only_tunnels_closed_before_the_cutoff() {
        let Fixture { store, crew_id, .. } = store_with_tunnels(&["old", "new", "live"]);
        store.tunnels().close("old").unwrap();
        store.tunnels().close("new").unwrap();
        let conn = store.conn();
        conn.execute(
            "UPDATE tunnels SET closed_at = '2020-01-01T00:00:00Z' WHERE id = 'old'",
            [],
        )
        .unwrap();
        drop(conn);
        assert_eq!(
            store
                .tunnels()
                .prune_closed_before("2021-01-01T00:00:00Z")
                .unwrap(),
            1
        );
        let left: Vec<String> = store
            .tunnels()
            .list_for_crew(crew_id, false)
            .unwrap()
            .into_iter()
            .map(|t| t.id)
            .collect();
        assert_eq!(left, ["live", "new"]);
    }
}
