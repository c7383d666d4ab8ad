//! Crews (teams), their members and roles.

use rusqlite::{params, OptionalExtension, Row, Transaction};

use super::{Result, Store, StoreError, User};
use crate::time_fmt;

/// A member's role in a crew, weakest first so roles compare by power.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Viewer,
    Member,
    Admin,
    Owner,
}

impl Role {
    pub const NAMES: &'static str = "owner, admin, member or viewer";

    pub fn parse(text: &str) -> Option<Role> {
        match text {
            "viewer" => Some(Role::Viewer),
            "member" => Some(Role::Member),
            "admin" => Some(Role::Admin),
            "owner" => Some(Role::Owner),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Member => "member",
            Role::Admin => "admin",
            Role::Owner => "owner",
        }
    }
}

/// Redaction tier of recorded traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Redaction {
    Inherit,
    Standard,
    Strict,
}

impl Redaction {
    pub const NAMES: &'static str = "inherit, standard or strict";

    pub fn parse(text: &str) -> Option<Redaction> {
        match text {
            "inherit" => Some(Redaction::Inherit),
            "standard" => Some(Redaction::Standard),
            "strict" => Some(Redaction::Strict),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Redaction::Inherit => "inherit",
            Redaction::Standard => "standard",
            Redaction::Strict => "strict",
        }
    }
}

/// A limit on live tunnels; a crew may set its own, at most the server's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    /// Live tunnels of one member in the crew, TCP ones included.
    TunnelsPerUser,
    /// Live tunnels of the whole crew, TCP ones included.
    Tunnels,
    /// Live TCP tunnels (public ports) of one member in the crew.
    TcpPortsPerUser,
    /// Live TCP tunnels of the whole crew.
    TcpPorts,
}

impl Limit {
    pub const ALL: [Limit; 4] = [
        Limit::TunnelsPerUser,
        Limit::Tunnels,
        Limit::TcpPortsPerUser,
        Limit::TcpPorts,
    ];

    /// The crew setting's name: its column, its API field and its CLI name.
    pub fn setting(self) -> &'static str {
        match self {
            Limit::TunnelsPerUser => "max_tunnels_per_user",
            Limit::Tunnels => "max_tunnels",
            Limit::TcpPortsPerUser => "max_tcp_ports_per_user",
            Limit::TcpPorts => "max_tcp_ports",
        }
    }

    pub fn parse(text: &str) -> Option<Limit> {
        Limit::ALL.into_iter().find(|l| l.setting() == text)
    }

    /// Whether it counts one member's tunnels (else the whole crew's).
    pub fn per_user(self) -> bool {
        matches!(self, Limit::TunnelsPerUser | Limit::TcpPortsPerUser)
    }

    /// Whether it counts TCP tunnels only.
    pub fn tcp_only(self) -> bool {
        matches!(self, Limit::TcpPortsPerUser | Limit::TcpPorts)
    }

    fn index(self) -> usize {
        Limit::ALL.iter().position(|l| *l == self).unwrap_or(0)
    }
}

/// A crew's own limits: none set means the server's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CrewLimits([Option<u32>; 4]);

impl CrewLimits {
    pub fn get(&self, limit: Limit) -> Option<u32> {
        self.0[limit.index()]
    }

    pub fn set(&mut self, limit: Limit, value: Option<u32>) {
        self.0[limit.index()] = value;
    }

    /// The limit columns of a row that selected them by their own names.
    pub(super) fn from_row(row: &Row) -> rusqlite::Result<CrewLimits> {
        let mut limits = CrewLimits::default();
        for limit in Limit::ALL {
            limits.set(limit, row.get(limit.setting())?);
        }
        Ok(limits)
    }
}

#[derive(Clone, Debug)]
pub struct Crew {
    pub id: i64,
    pub name: String,
    pub default_redaction: Redaction,
    pub limits: CrewLimits,
    pub created_at: String,
}

impl Crew {
    fn from_row(row: &Row) -> rusqlite::Result<Crew> {
        let tier: String = row.get("default_redaction")?;
        Ok(Crew {
            id: row.get("id")?,
            name: row.get("name")?,
            default_redaction: Redaction::parse(&tier).unwrap_or(Redaction::Standard),
            limits: CrewLimits::from_row(row)?,
            created_at: row.get("created_at")?,
        })
    }
}

/// A crew seen from one of its members.
#[derive(Clone, Debug)]
pub struct Membership {
    pub crew: Crew,
    pub role: Role,
}

/// A user seen from their crew.
#[derive(Clone, Debug)]
pub struct Member {
    pub user_id: i64,
    pub username: String,
    pub role: Role,
    pub joined_at: String,
}

fn role_of(row: &Row, column: &str) -> rusqlite::Result<Role> {
    let text: String = row.get(column)?;
    Ok(Role::parse(&text).unwrap_or(Role::Viewer))
}

pub struct Crews<'a>(pub(super) &'a Store);

impl Crews<'_> {
    /// The crew's id, creating the crew if it does not exist.
    pub(super) fn ensure_in(tx: &Transaction, name: &str) -> Result<i64> {
        let found: Option<i64> = tx
            .query_row("SELECT id FROM crews WHERE name = ?1", [name], |r| r.get(0))
            .optional()?;
        if let Some(id) = found {
            return Ok(id);
        }
        tx.execute(
            "INSERT INTO crews (name, created_at) VALUES (?1, ?2)",
            params![name, time_fmt::now()],
        )?;
        Ok(tx.last_insert_rowid())
    }

    pub(super) fn add_member_in(
        tx: &Transaction,
        crew_id: i64,
        user_id: i64,
        role: Role,
    ) -> Result<()> {
        tx.execute(
            "INSERT INTO memberships (crew_id, user_id, role, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![crew_id, user_id, role.as_str(), time_fmt::now()],
        )?;
        Ok(())
    }

    pub fn find_by_id(&self, id: i64) -> Result<Option<Crew>> {
        self.0.read(|c| {
            c.prepare_cached("SELECT * FROM crews WHERE id = ?1")?
                .query_row([id], Crew::from_row)
                .optional()
        })
    }

    #[cfg(test)]
    pub fn find_by_name(&self, name: &str) -> Result<Option<Crew>> {
        self.0.read(|c| {
            c.prepare_cached("SELECT * FROM crews WHERE name = ?1")?
                .query_row([name], Crew::from_row)
                .optional()
        })
    }

    /// The crews a user belongs to, oldest first.
    pub fn memberships_of(&self, user_id: i64) -> Result<Vec<Membership>> {
        self.0.read(|c| {
            c.prepare(
                "SELECT c.*, m.role FROM memberships m JOIN crews c ON c.id = m.crew_id
                 WHERE m.user_id = ?1 ORDER BY c.id",
            )?
            .query_map([user_id], |row| {
                Ok(Membership {
                    crew: Crew::from_row(row)?,
                    role: role_of(row, "role")?,
                })
            })?
            .collect()
        })
    }

    /// The user's membership of one crew, if any.
    pub fn membership(&self, crew_id: i64, user_id: i64) -> Result<Option<Membership>> {
        self.0.read(|c| {
            c.prepare_cached(
                "SELECT c.*, m.role FROM memberships m JOIN crews c ON c.id = m.crew_id
                 WHERE m.crew_id = ?1 AND m.user_id = ?2",
            )?
            .query_row([crew_id, user_id], |row| {
                Ok(Membership {
                    crew: Crew::from_row(row)?,
                    role: role_of(row, "role")?,
                })
            })
            .optional()
        })
    }

    pub fn members(&self, crew_id: i64) -> Result<Vec<Member>> {
        self.0.read(|c| {
            c.prepare(
                "SELECT u.id, u.username, m.role, m.created_at FROM memberships m
                 JOIN users u ON u.id = m.user_id WHERE m.crew_id = ?1 ORDER BY u.username",
            )?
            .query_map([crew_id], |row| {
                Ok(Member {
                    user_id: row.get(0)?,
                    username: row.get(1)?,
                    role: role_of(row, "role")?,
                    joined_at: row.get(3)?,
                })
            })?
            .collect()
        })
    }

    pub fn add_member(&self, crew_id: i64, user: &User, role: Role) -> Result<Member> {
        self.0.write(|tx| {
            Crews::add_member_in(tx, crew_id, user.id, role)?;
            Ok(())
        })?;
        self.member(crew_id, user.id)
    }

    fn member(&self, crew_id: i64, user_id: i64) -> Result<Member> {
        self.members(crew_id)?
            .into_iter()
            .find(|m| m.user_id == user_id)
            .ok_or(StoreError::NotFound)
    }

    /// Change a role; refuses (Conflict) to leave the crew without an owner.
    pub fn set_role(&self, crew_id: i64, user_id: i64, role: Role) -> Result<Member> {
        self.0.write(|tx| {
            if role != Role::Owner {
                guard_last_owner(tx, crew_id, user_id)?;
            }
            let changed = tx.execute(
                "UPDATE memberships SET role = ?3 WHERE crew_id = ?1 AND user_id = ?2",
                params![crew_id, user_id, role.as_str()],
            )?;
            if changed == 0 {
                return Err(StoreError::NotFound);
            }
            Ok(())
        })?;
        self.member(crew_id, user_id)
    }

    /// Remove a member; refuses (Conflict) to remove the last owner.
    pub fn remove_member(&self, crew_id: i64, user_id: i64) -> Result<()> {
        self.0.write(|tx| {
            guard_last_owner(tx, crew_id, user_id)?;
            let changed = tx.execute(
                "DELETE FROM memberships WHERE crew_id = ?1 AND user_id = ?2",
                [crew_id, user_id],
            )?;
            if changed == 0 {
                return Err(StoreError::NotFound);
            }
            Ok(())
        })
    }

    pub fn set_default_redaction(&self, crew_id: i64, tier: Redaction) -> Result<Crew> {
        self.0.write(|tx| {
            let changed = tx.execute(
                "UPDATE crews SET default_redaction = ?2 WHERE id = ?1",
                params![crew_id, tier.as_str()],
            )?;
            if changed == 0 {
                return Err(StoreError::NotFound);
            }
            Ok(())
        })?;
        self.0.redaction_changed();
        self.find_by_id(crew_id)?.ok_or(StoreError::NotFound)
    }
}

impl Crews<'_> {
    /// Set (or with `None`, clear) some of a crew's own limits.
    pub fn set_limits(&self, crew_id: i64, changes: &[(Limit, Option<u32>)]) -> Result<Crew> {
        self.0.write(|tx| {
            for (limit, value) in changes {
                // The column name comes from `Limit`, never from the caller.
                let sql = format!("UPDATE crews SET {} = ?2 WHERE id = ?1", limit.setting());
                if tx.execute(&sql, params![crew_id, value])? == 0 {
                    return Err(StoreError::NotFound);
                }
            }
            Ok(())
        })?;
        self.find_by_id(crew_id)?.ok_or(StoreError::NotFound)
    }
}

/// Conflict when `user_id` is the crew's only owner.
fn guard_last_owner(tx: &Transaction, crew_id: i64, user_id: i64) -> Result<()> {
    let (is_owner, owners): (bool, i64) = tx.query_row(
        "SELECT coalesce(sum(user_id = ?2), 0) > 0, count(*) FROM memberships
         WHERE crew_id = ?1 AND role = 'owner'",
        [crew_id, user_id],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    if is_owner && owners == 1 {
        return Err(StoreError::Conflict);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_order_by_power() {
        assert!(
            Role::Owner > Role::Admin && Role::Admin > Role::Member && Role::Member > Role::Viewer
        );
        for role in [Role::Viewer, Role::Member, Role::Admin, Role::Owner] {
            assert_eq!(Role::parse(role.as_str()), Some(role));
        }
    }

    #[test]
    fn members_change_roles_but_the_last_owner_stays() {
        let store = Store::open_in_memory().unwrap();
        let alice = store
            .users()
            .create("alice", "h", Some(("home", Role::Owner)))
            .unwrap();
        let bob = store.users().create("bob", "h", None).unwrap();
        let crew = store.crews().find_by_name("home").unwrap().unwrap();
        store
            .crews()
            .add_member(crew.id, &bob, Role::Viewer)
            .unwrap();
        assert!(matches!(
            store.crews().add_member(crew.id, &bob, Role::Admin),
            Err(StoreError::Conflict)
        ));
        assert_eq!(
            store
                .crews()
                .set_role(crew.id, bob.id, Role::Admin)
                .unwrap()
                .role,
            Role::Admin
        );
        assert!(matches!(
            store.crews().set_role(crew.id, alice.id, Role::Member),
            Err(StoreError::Conflict)
        ));
        assert!(matches!(
            store.crews().remove_member(crew.id, alice.id),
            Err(StoreError::Conflict)
        ));
        store
            .crews()
            .set_role(crew.id, bob.id, Role::Owner)
            .unwrap();
        store.crews().remove_member(crew.id, alice.id).unwrap();
        assert_eq!(store.crews().members(crew.id).unwrap().len(), 1);
        assert!(matches!(
            store.crews().remove_member(crew.id, alice.id),
            Err(StoreError::NotFound)
        ));
    }

    #[test]
    fn default_redaction_changes() {
        let store = Store::open_in_memory().unwrap();
        store
            .users()
            .create("alice", "h", Some(("home", Role::Owner)))
            .unwrap();
        let crew = store.crews().find_by_name("home").unwrap().unwrap();
        assert_eq!(crew.default_redaction, Redaction::Standard);
        let crew = store
            .crews()
            .set_default_redaction(crew.id, Redaction::Strict)
            .unwrap();
        assert_eq!(crew.default_redaction, Redaction::Strict);
    }

    #[test]
    fn limits_are_set_cleared_and_read_back() {
        let store = Store::open_in_memory().unwrap();
        store
            .users()
            .create("alice", "h", Some(("home", Role::Owner)))
            .unwrap();
        let crew = store.crews().find_by_name("home").unwrap().unwrap();
        assert_eq!(crew.limits, CrewLimits::default());
        let changes = [(Limit::Tunnels, Some(3)), (Limit::TcpPortsPerUser, Some(0))];
        let crew = store.crews().set_limits(crew.id, &changes).unwrap();
        assert_eq!(crew.limits.get(Limit::Tunnels), Some(3));
        assert_eq!(crew.limits.get(Limit::TcpPortsPerUser), Some(0));
        assert_eq!(crew.limits.get(Limit::TunnelsPerUser), None);
        let crew = store
            .crews()
            .set_limits(crew.id, &[(Limit::Tunnels, None)])
            .unwrap();
        assert_eq!(crew.limits.get(Limit::Tunnels), None);
        assert!(matches!(
            store.crews().set_limits(999, &changes),
            Err(StoreError::NotFound)
        ));
        for limit in Limit::ALL {
            assert_eq!(Limit::parse(limit.setting()), Some(limit));
        }
    }
}
