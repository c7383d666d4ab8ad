//! Inspector records: batches written by the inspector's writer thread, pruned per tunnel, read newest first.

use std::collections::HashMap;

use rusqlite::{params, Row};

use super::{Result, Store};
use crate::inspect::Record;

/// A stored record with its id (the paging key).
#[derive(Clone, Debug)]
pub struct RequestRow {
    pub id: i64,
    pub record: Record,
}

impl RequestRow {
    fn from_row(row: &Row) -> rusqlite::Result<RequestRow> {
        let request_headers: String = row.get("request_headers")?;
        let response_headers: String = row.get("response_headers")?;
        Ok(RequestRow {
            id: row.get("id")?,
            record: Record {
                tunnel_id: row.get("tunnel_id")?,
                at: row.get("at")?,
                method: row.get("method")?,
                path: row.get("path")?,
                status: row.get("status")?,
                duration_ms: row.get("duration_ms")?,
                bytes_in: row.get("bytes_in")?,
                bytes_out: row.get("bytes_out")?,
                request_headers: serde_json::from_str(&request_headers).unwrap_or_default(),
                response_headers: serde_json::from_str(&response_headers).unwrap_or_default(),
            },
        })
    }
}

pub struct Requests<'a>(pub(super) &'a Store);

impl Requests<'_> {
    /// Store a batch in one transaction, count it on each tunnel and keep only
    /// the newest `retention` records of each tunnel touched. `superseded`:
    /// records of a tunnel that came before its newest `retention` of the
    /// batch, counted but not stored (they would be pruned at once). A record
    /// whose tunnel row is missing is skipped; returns how many were stored.
    pub fn insert_batch(
        &self,
        records: &[Record],
        superseded: &[(String, u64)],
        retention: u32,
    ) -> Result<usize> {
        self.0.write(|tx| {
            let mut per_tunnel: HashMap<&str, i64> = HashMap::new();
            let mut insert = tx.prepare_cached(
                "INSERT INTO requests (tunnel_id, at, method, path, status, duration_ms,
                   bytes_in, bytes_out, request_headers, response_headers)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )?;
            for r in records {
                let stored = insert.execute(params![
                    r.tunnel_id,
                    r.at,
                    r.method,
                    r.path,
                    r.status,
                    r.duration_ms,
                    r.bytes_in,
                    r.bytes_out,
                    serde_json::to_string(&r.request_headers).unwrap_or_else(|_| "[]".into()),
                    serde_json::to_string(&r.response_headers).unwrap_or_else(|_| "[]".into()),
                ]);
                // A failed statement leaves the transaction usable: one bad row
                // (its tunnel row was never written) must not lose the batch.
                if stored.is_ok() {
                    *per_tunnel.entry(&r.tunnel_id).or_default() += 1;
                }
            }
            let mut count = tx.prepare_cached(
                "UPDATE tunnels SET request_count = request_count + ?2 WHERE id = ?1",
            )?;
            let mut prune = tx.prepare_cached(
                "DELETE FROM requests WHERE tunnel_id = ?1 AND id < (
                   SELECT id FROM requests WHERE tunnel_id = ?1
                   ORDER BY id DESC LIMIT 1 OFFSET ?2)",
            )?;
            let stored = per_tunnel.values().sum::<i64>() as usize;
            for (tunnel_id, n) in superseded {
                *per_tunnel.entry(tunnel_id).or_default() += *n as i64;
            }
            for (tunnel_id, n) in &per_tunnel {
                count.execute(params![tunnel_id, n])?;
                prune.execute(params![tunnel_id, retention.saturating_sub(1)])?;
            }
            Ok(stored)
        })
    }

    /// A tunnel's records, newest first: at most `limit`, older than `before` when given.
    pub fn list(
        &self,
        tunnel_id: &str,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<RequestRow>> {
        self.0.read(|c| {
            c.prepare_cached(
                "SELECT * FROM requests WHERE tunnel_id = ?1 AND id < ?2
                 ORDER BY id DESC LIMIT ?3",
            )?
            .query_map(
                params![tunnel_id, before.unwrap_or(i64::MAX), limit],
                RequestRow::from_row,
            )?
            .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store with tunnels `a` and `b`.
    fn store_with_tunnels() -> Store {
        crate::store::fixture::store_with_tunnels(&["a", "b"]).store
    }

    fn record(tunnel: &str, path: &str) -> Record {
        Record {
            tunnel_id: tunnel.into(),
            at: "2026-01-01T00:00:00Z".into(),
            method: "GET".into(),
            path: path.into(),
            status: 200,
            duration_ms: 1,
            bytes_in: 2,
            bytes_out: 3,
            request_headers: vec![("Host".into(), "a.localhost".into())],
            response_headers: vec![("Set-Cookie".into(), "[REDACTED]".into())],
        }
    }

    #[test]
    fn records_page_newest_first_and_read_back_whole() {
        let store = store_with_tunnels();
        let batch: Vec<Record> = (0..5).map(|i| record("a", &format!("/{i}"))).collect();
        assert_eq!(store.requests().insert_batch(&batch, &[], 100).unwrap(), 5);
        let page = store.requests().list("a", None, 2).unwrap();
        let paths: Vec<&str> = page.iter().map(|r| r.record.path.as_str()).collect();
        assert_eq!(paths, ["/4", "/3"]);
        assert_eq!(page[0].record, batch[4]);
        let next = store.requests().list("a", Some(page[1].id), 10).unwrap();
        let paths: Vec<&str> = next.iter().map(|r| r.record.path.as_str()).collect();
        assert_eq!(paths, ["/2", "/1", "/0"]);
        assert!(store.requests().list("b", None, 10).unwrap().is_empty());
    }

    #[test]
    fn retention_keeps_the_newest_per_tunnel_and_counts_all() {
        let store = store_with_tunnels();
        for round in 0..3 {
            let batch: Vec<Record> = (0..4)
                .flat_map(|i| [record("a", &format!("/{round}-{i}")), record("b", "/b")])
                .collect();
            store.requests().insert_batch(&batch, &[], 3).unwrap();
        }
        let kept = store.requests().list("a", None, 100).unwrap();
        let paths: Vec<&str> = kept.iter().map(|r| r.record.path.as_str()).collect();
        assert_eq!(paths, ["/2-3", "/2-2", "/2-1"]);
        assert_eq!(store.requests().list("b", None, 100).unwrap().len(), 3);
        let a = store.tunnels().find_by_id("a").unwrap().unwrap();
        assert_eq!(a.request_count, 12);
    }

    #[test]
    fn a_record_of_an_unknown_tunnel_does_not_lose_the_batch() {
        let store = store_with_tunnels();
        let batch = [record("a", "/1"), record("gone", "/2"), record("a", "/3")];
        assert_eq!(store.requests().insert_batch(&batch, &[], 10).unwrap(), 2);
        assert_eq!(store.requests().list("a", None, 10).unwrap().len(), 2);
    }
}
