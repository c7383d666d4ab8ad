//! Subdomains crews hold: reserved names, and names kept for a while after
//! their last tunnel closed (`--subdomain-hold`).
//!
//! A name is another crew's while it is reserved, while a tunnel is live on
//! it, or until its `held_until`. Times are stored as `time_fmt` strings, whose
//! fixed width makes text order time order.

use rusqlite::{params, OptionalExtension, Row, Transaction};

use super::{Result, Store};
use crate::time_fmt;

/// A crew's claim on a name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubdomainRow {
    pub name: String,
    pub crew_id: i64,
    pub reserved: bool,
    /// A tunnel of the crew is on it now.
    pub live: bool,
    /// When the hold after its last tunnel ends (past: no hold left).
    pub held_until: Option<String>,
    pub created_at: String,
}

impl SubdomainRow {
    fn from_row(row: &Row) -> rusqlite::Result<SubdomainRow> {
        Ok(SubdomainRow {
            name: row.get("name")?,
            crew_id: row.get("crew_id")?,
            reserved: row.get("reserved")?,
            live: row.get("live")?,
            held_until: row.get("held_until")?,
            created_at: row.get("created_at")?,
        })
    }

    /// Whether the name is its crew's alone at `now`.
    fn binds(&self, now: &str) -> bool {
        self.reserved || self.live || self.held_until.as_deref().is_some_and(|t| t > now)
    }
}

const SELECT: &str = "SELECT name, crew_id, reserved, live, held_until, created_at FROM subdomains";

pub struct Subdomains<'a>(pub(super) &'a Store);

/// What became of a reservation.
#[derive(Debug, PartialEq, Eq)]
pub enum Reserved {
    Done,
    /// Another crew holds the name: its row.
    Taken(SubdomainRow),
    /// The crew already reserves as many names as it may.
    Full,
}

/// The row for `name`, inside a transaction.
fn find(tx: &Transaction, name: &str) -> rusqlite::Result<Option<SubdomainRow>> {
    tx.prepare_cached(&format!("{SELECT} WHERE name = ?1"))?
        .query_row(params![name], SubdomainRow::from_row)
        .optional()
}

impl Subdomains<'_> {
    /// Take `name` for a live tunnel of `crew_id`: granted (`None`) unless
    /// another crew holds it, whose row comes back.
    pub fn claim(&self, name: &str, crew_id: i64) -> Result<Option<SubdomainRow>> {
        let now = time_fmt::now();
        self.0.write(|tx| {
            // Lapsed holds are forgotten as names are taken, so the table
            // holds only names someone has.
            tx.execute(
                "DELETE FROM subdomains WHERE reserved = 0 AND live = 0 AND held_until <= ?1",
                params![now],
            )?;
            let row = find(tx, name)?;
            if let Some(row) = row.filter(|r| r.crew_id != crew_id && r.binds(&now)) {
                return Ok(Some(row));
            }
            // Another crew's lapsed hold is gone; the crew's own keeps its reservation.
            tx.execute(
                "INSERT INTO subdomains (name, crew_id, live, created_at) VALUES (?1, ?2, 1, ?3)
                 ON CONFLICT (name) DO UPDATE SET
                     reserved = CASE WHEN crew_id = ?2 THEN reserved ELSE 0 END,
                     created_at = CASE WHEN crew_id = ?2 THEN created_at ELSE ?3 END,
                     crew_id = ?2, live = 1, held_until = NULL",
                params![name, crew_id, now],
            )?;
            Ok(None)
        })
    }

    /// The crew's last tunnel on `name` closed: hold it until `until`. A
    /// crew holds at most `most` names after use: beyond, the holds that end
    /// first lapse now, so no member can squat names (or grow the table)
    /// without end by opening and closing tunnels.
    pub fn hold(&self, name: &str, crew_id: i64, until: &str, most: usize) -> Result<()> {
        let most = i64::try_from(most).unwrap_or(i64::MAX);
        self.0.write(|tx| {
            tx.execute(
                "UPDATE subdomains SET live = 0, held_until = ?3 WHERE name = ?1 AND crew_id = ?2",
                params![name, crew_id, until],
            )?;
            tx.execute(
                "DELETE FROM subdomains WHERE crew_id = ?1 AND reserved = 0 AND live = 0
                   AND name NOT IN (SELECT name FROM subdomains
                                    WHERE crew_id = ?1 AND reserved = 0 AND live = 0
                                    ORDER BY held_until DESC, rowid DESC LIMIT ?2)",
                params![crew_id, most],
            )?;
            Ok(())
        })
    }

    /// At server start no tunnel is live: names marked live (a crash, a
    /// kill) are held until `until` from now on. How many.
    pub fn hold_all_live(&self, until: &str) -> Result<usize> {
        self.0.write(|tx| {
            Ok(tx.execute(
                "UPDATE subdomains SET live = 0, held_until = ?1 WHERE live = 1",
                params![until],
            )?)
        })
    }

    /// Reserve `name` for `crew_id`, unless another crew holds it or the
    /// crew already reserves `most` names.
    pub fn reserve(&self, name: &str, crew_id: i64, most: usize) -> Result<Reserved> {
        let now = time_fmt::now();
        self.0.write(|tx| {
            let row = find(tx, name)?;
            if let Some(row) = row
                .clone()
                .filter(|r| r.crew_id != crew_id && r.binds(&now))
            {
                return Ok(Reserved::Taken(row));
            }
            let again = row.is_some_and(|r| r.crew_id == crew_id && r.reserved);
            let reserved: i64 = tx.query_row(
                "SELECT COUNT(*) FROM subdomains WHERE crew_id = ?1 AND reserved = 1",
                params![crew_id],
                |r| r.get(0),
            )?;
            if !again && usize::try_from(reserved).unwrap_or(usize::MAX) >= most {
                return Ok(Reserved::Full);
            }
            tx.execute(
                "INSERT INTO subdomains (name, crew_id, reserved, created_at) VALUES (?1, ?2, 1, ?3)
                 ON CONFLICT (name) DO UPDATE SET
                     live = CASE WHEN crew_id = ?2 THEN live ELSE 0 END,
                     held_until = CASE WHEN crew_id = ?2 THEN held_until ELSE NULL END,
                     created_at = CASE WHEN crew_id = ?2 THEN created_at ELSE ?3 END,
                     crew_id = ?2, reserved = 1",
                params![name, crew_id, now],
            )?;
            Ok(Reserved::Done)
        })
    }

    /// Give up the crew's reservation of `name`; false if it had none. A name
    /// in use, or still held after its last tunnel, stays held as any used
    /// name is; otherwise it is free at once.
    pub fn release(&self, name: &str, crew_id: i64) -> Result<bool> {
        let now = time_fmt::now();
        self.0.write(|tx| {
            let Some(row) = find(tx, name)?.filter(|r| r.crew_id == crew_id && r.reserved) else {
                return Ok(false);
            };
            let unreserved = SubdomainRow {
                reserved: false,
                ..row
            };
            if unreserved.binds(&now) {
                tx.execute(
                    "UPDATE subdomains SET reserved = 0 WHERE name = ?1",
                    params![name],
                )?;
            } else {
                tx.execute("DELETE FROM subdomains WHERE name = ?1", params![name])?;
            }
            Ok(true)
        })
    }

    /// The names a crew holds now (reserved, live or within their hold), by name.
    pub fn list_for_crew(&self, crew_id: i64) -> Result<Vec<SubdomainRow>> {
        let now = time_fmt::now();
        self.0.read(|c| {
            c.prepare_cached(&format!(
                "{SELECT} WHERE crew_id = ?1
                   AND (reserved = 1 OR live = 1 OR (held_until IS NOT NULL AND held_until > ?2))
                 ORDER BY name"
            ))?
            .query_map(params![crew_id, now], SubdomainRow::from_row)?
            .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::Reserved;
    use crate::store::fixture::store_with_two_crews;
    use crate::time_fmt;

    /// The fixture's crew and a second crew `pier`.
    fn two_crews() -> (crate::store::Store, i64, i64) {
        let (fixture, pier) = store_with_two_crews();
        (fixture.store, fixture.crew_id, pier)
    }

    fn later(secs: i64) -> String {
        time_fmt::format(time::OffsetDateTime::now_utc() + time::Duration::seconds(secs))
    }

    #[test]
    fn a_used_name_is_the_crews_while_live_and_held_then_free() {
        let (store, dock, pier) = two_crews();
        let names = store.subdomains();
        assert_eq!(names.claim("app", dock).unwrap(), None);
        // Live: another crew is refused, the same crew is not.
        assert_eq!(names.claim("app", pier).unwrap().unwrap().crew_id, dock);
        assert_eq!(names.claim("app", dock).unwrap(), None);
        names.hold("app", dock, &later(3600), 10).unwrap();
        assert!(names.claim("app", pier).unwrap().is_some());
        assert_eq!(names.list_for_crew(dock).unwrap().len(), 1);
        // A lapsed hold frees it; the new crew then has it.
        names.hold("app", dock, &later(-1), 10).unwrap();
        assert!(names.list_for_crew(dock).unwrap().is_empty());
        // Taking any name forgets lapsed holds.
        assert_eq!(names.claim("other", pier).unwrap(), None);
        let rows: i64 = store
            .read(|c| {
                c.query_row(
                    "SELECT COUNT(*) FROM subdomains WHERE name = 'app'",
                    [],
                    |r| r.get(0),
                )
            })
            .unwrap();
        assert_eq!(rows, 0);
        assert_eq!(names.claim("app", pier).unwrap(), None);
        assert!(names.claim("app", dock).unwrap().is_some());
        // A restart holds what was live.
        assert_eq!(names.hold_all_live(&later(60)).unwrap(), 2);
        let held = &names.list_for_crew(pier).unwrap()[0];
        assert!(!held.live && held.held_until.is_some());
    }

    #[test]
    fn reservations_bind_until_released_and_only_by_their_crew() {
        let (store, dock, pier) = two_crews();
        let names = store.subdomains();
        assert_eq!(names.reserve("shop", dock, 10).unwrap(), Reserved::Done);
        assert!(
            matches!(names.reserve("shop", pier, 10).unwrap(), Reserved::Taken(row) if row.crew_id == dock)
        );
        assert!(names.claim("shop", pier).unwrap().is_some());
        // Used and let go by its crew, it stays reserved.
        assert_eq!(names.claim("shop", dock).unwrap(), None);
        names.hold("shop", dock, &later(-1), 10).unwrap();
        assert!(names.list_for_crew(dock).unwrap()[0].reserved);
        assert!(names.claim("shop", pier).unwrap().is_some());
        // Another crew cannot release it; its own can, and then it is free.
        assert!(!names.release("shop", pier).unwrap());
        assert!(names.release("shop", dock).unwrap());
        assert!(!names.release("shop", dock).unwrap());
        assert_eq!(names.claim("shop", pier).unwrap(), None);
        // Released while held after use: still held for the rest of the hold.
        assert_eq!(names.reserve("cafe", dock, 10).unwrap(), Reserved::Done);
        assert_eq!(names.claim("cafe", dock).unwrap(), None);
        names.hold("cafe", dock, &later(3600), 10).unwrap();
        assert!(names.release("cafe", dock).unwrap());
        assert!(names.claim("cafe", pier).unwrap().is_some());
    }

    #[test]
    fn a_crew_holds_and_reserves_a_bounded_number_of_names() {
        let (store, dock, pier) = two_crews();
        let names = store.subdomains();
        for (i, name) in ["n1", "n2", "n3", "n4"].iter().enumerate() {
            assert_eq!(names.claim(name, dock).unwrap(), None);
            names.hold(name, dock, &later(60 + i as i64), 2).unwrap();
        }
        // The two holds that ended first lapsed; the latest two stand.
        let held: Vec<String> = names
            .list_for_crew(dock)
            .unwrap()
            .into_iter()
            .map(|r| r.name)
            .collect();
        assert_eq!(held, ["n3", "n4"]);
        assert_eq!(names.claim("n1", pier).unwrap(), None);
        assert!(names.claim("n4", pier).unwrap().is_some());
        // Live names and reservations are not holds: never lapsed by them.
        assert_eq!(names.reserve("r1", dock, 2).unwrap(), Reserved::Done);
        assert_eq!(names.claim("live", dock).unwrap(), None);
        assert_eq!(names.claim("n5", dock).unwrap(), None);
        names.hold("n5", dock, &later(120), 2).unwrap();
        let rows = names.list_for_crew(dock).unwrap();
        assert!(rows.iter().any(|r| r.name == "r1") && rows.iter().any(|r| r.name == "live"));
        // Reservations: at most `most`, a name already reserved again is fine.
        assert_eq!(names.reserve("r2", dock, 2).unwrap(), Reserved::Done);
        assert_eq!(names.reserve("r3", dock, 2).unwrap(), Reserved::Full);
        assert_eq!(names.reserve("r2", dock, 2).unwrap(), Reserved::Done);
    }
}
