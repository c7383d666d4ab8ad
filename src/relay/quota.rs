//! Quotas on live tunnels: per member and per crew, with TCP tunnels (public
//! ports) also counted on their own, so one member cannot hold every port or
//! thousands of tunnels (DESIGN §5).
//!
//! A tunnel's slot is taken, checked against every limit that applies under
//! one lock, before its name or port is claimed: of two shares racing for the
//! last slot exactly one gets it. A claim that then fails gives the slot back;
//! a tunnel that closes gives it back through `Relay::release`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use super::Tunnel;
use crate::store::{Crew, Limit};
use crate::sync::lock;

/// Live tunnels a member may have in a crew unless the server is told otherwise.
pub const DEFAULT_TUNNELS_PER_USER: u32 = 10;
/// Live tunnels a crew may have.
pub const DEFAULT_TUNNELS_PER_CREW: u32 = 50;
/// Live TCP tunnels (public ports) a member may have in a crew.
pub const DEFAULT_TCP_PORTS_PER_USER: u32 = 5;
/// Live TCP tunnels a crew may have.
pub const DEFAULT_TCP_PORTS_PER_CREW: u32 = 20;

/// The server's limits on live tunnels (`berth server` options); a crew may
/// set lower ones of its own.
#[derive(clap::Args, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Live tunnels (TCP ones included) one member may have in a crew
    #[arg(
        long = "max-tunnels-per-user",
        env = "BERTH_MAX_TUNNELS_PER_USER",
        value_name = "N",
        default_value_t = DEFAULT_TUNNELS_PER_USER
    )]
    pub tunnels_per_user: u32,
    /// Live tunnels (TCP ones included) one crew may have
    #[arg(
        long = "max-tunnels-per-crew",
        env = "BERTH_MAX_TUNNELS_PER_CREW",
        value_name = "N",
        default_value_t = DEFAULT_TUNNELS_PER_CREW
    )]
    pub tunnels_per_crew: u32,
    /// Live TCP tunnels (public ports) one member may have in a crew; 0: none
    #[arg(
        long = "max-tcp-ports-per-user",
        env = "BERTH_MAX_TCP_PORTS_PER_USER",
        value_name = "N",
        default_value_t = DEFAULT_TCP_PORTS_PER_USER
    )]
    pub tcp_ports_per_user: u32,
    /// Live TCP tunnels (public ports) one crew may have; 0: none
    #[arg(
        long = "max-tcp-ports-per-crew",
        env = "BERTH_MAX_TCP_PORTS_PER_CREW",
        value_name = "N",
        default_value_t = DEFAULT_TCP_PORTS_PER_CREW
    )]
    pub tcp_ports_per_crew: u32,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            tunnels_per_user: DEFAULT_TUNNELS_PER_USER,
            tunnels_per_crew: DEFAULT_TUNNELS_PER_CREW,
            tcp_ports_per_user: DEFAULT_TCP_PORTS_PER_USER,
            tcp_ports_per_crew: DEFAULT_TCP_PORTS_PER_CREW,
        }
    }
}

impl Limits {
    /// The server's value of a limit.
    pub fn get(&self, limit: Limit) -> u32 {
        match limit {
            Limit::TunnelsPerUser => self.tunnels_per_user,
            Limit::Tunnels => self.tunnels_per_crew,
            Limit::TcpPortsPerUser => self.tcp_ports_per_user,
            Limit::TcpPorts => self.tcp_ports_per_crew,
        }
    }

    /// The `berth server` option that sets a limit.
    pub fn flag(limit: Limit) -> &'static str {
        match limit {
            Limit::TunnelsPerUser => "--max-tunnels-per-user",
            Limit::Tunnels => "--max-tunnels-per-crew",
            Limit::TcpPortsPerUser => "--max-tcp-ports-per-user",
            Limit::TcpPorts => "--max-tcp-ports-per-crew",
        }
    }

    /// What holds in `crew`: its own value when it set one (never above the
    /// server's), and whether that is the crew's.
    pub fn in_crew(&self, crew: &Crew, limit: Limit) -> (u32, bool) {
        let server = self.get(limit);
        match crew.limits.get(limit) {
            Some(own) if own < server => (own, true),
            _ => (server, false),
        }
    }
}

/// Who opens a tunnel.
pub struct Owner<'a> {
    pub user_id: i64,
    pub crew: &'a Crew,
}

/// A counted tunnel: whose, of which kind, and its id once it has one.
struct Held {
    user_id: i64,
    crew_id: i64,
    tcp: bool,
    tunnel: Option<String>,
}

/// The slots of the live tunnels.
#[derive(Default)]
pub struct Quotas {
    held: Mutex<HashMap<u64, Held>>,
    next: AtomicU64,
}

/// A taken slot: given back when dropped, unless kept for a tunnel.
pub struct Slot<'a> {
    quotas: &'a Quotas,
    key: u64,
    kept: bool,
}

impl Quotas {
    /// Take a slot for a tunnel of `owner` (`tcp`: a TCP tunnel), or say
    /// which limit it would pass and what to do.
    pub fn take(&self, owner: &Owner, tcp: bool, limits: &Limits) -> Result<Slot<'_>, String> {
        let mut held = lock(&self.held);
        for limit in Limit::ALL {
            if limit.tcp_only() && !tcp {
                continue;
            }
            let (most, own) = limits.in_crew(owner.crew, limit);
            let counted = held
                .values()
                .filter(|h| h.crew_id == owner.crew.id)
                .filter(|h| !limit.per_user() || h.user_id == owner.user_id)
                .filter(|h| !limit.tcp_only() || h.tcp)
                .count();
            if counted >= most as usize {
                return Err(refusal(limit, (counted, most), own, &owner.crew.name));
            }
        }
        let key = self.next.fetch_add(1, Ordering::Relaxed);
        held.insert(
            key,
            Held {
                user_id: owner.user_id,
                crew_id: owner.crew.id,
                tcp,
                tunnel: None,
            },
        );
        Ok(Slot {
            quotas: self,
            key,
            kept: false,
        })
    }

    /// Give back the slot of a tunnel that closed (again: no harm).
    pub fn release(&self, tunnel_id: &str) {
        lock(&self.held).retain(|_, h| h.tunnel.as_deref() != Some(tunnel_id));
    }

    /// How many slots are taken.
    #[cfg(test)]
    fn taken(&self) -> usize {
        lock(&self.held).len()
    }
}

impl Slot<'_> {
    /// Keep the slot for `tunnel` until it is released.
    pub fn keep(mut self, tunnel: &Tunnel) {
        self.kept = true;
        if let Some(held) = lock(&self.quotas.held).get_mut(&self.key) {
            held.tunnel = Some(tunnel.id.clone());
        }
        // Closed before its slot knew its id: `release` found nothing to give back.
        if tunnel.is_closed() {
            self.quotas.release(&tunnel.id);
        }
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        if !self.kept {
            lock(&self.quotas.held).remove(&self.key);
        }
    }
}

/// The sentence for a share refused by `limit` with `counted` live tunnels of
/// `most`: what it is, what to close, whom to ask.
fn refusal(limit: Limit, (counted, most): (usize, u32), own: bool, crew: &str) -> String {
    let setting = limit.setting();
    let raise = if own {
        format!("a crew owner may raise the crew's {setting} (`berth crews set-limit {crew} {setting} N`)")
    } else {
        format!("the server's operator may raise {}", Limits::flag(limit))
    };
    let what = if limit.tcp_only() {
        "TCP tunnels"
    } else {
        "tunnels"
    };
    if most == 0 {
        return format!("No live {what} are allowed in crew `{crew}` ({setting} is 0); {raise}.");
    }
    let live = match counted {
        1 => format!("1 live {}", what.trim_end_matches('s')),
        n => format!("{n} live {what}"),
    };
    if limit.per_user() {
        format!(
            "You have {live} in crew `{crew}`, and a member may have {most} ({setting}); close one first (`berth tunnels list`, `berth tunnels close ID`), or {raise}."
        )
    } else {
        format!(
            "Crew `{crew}` has {live}, and may have {most} ({setting}); ask a crew admin to close one (`berth tunnels list`), or {raise}."
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::CrewLimits;
    use std::sync::Arc;

    fn crew(id: i64, limits: CrewLimits) -> Crew {
        Crew {
            id,
            name: format!("crew{id}"),
            default_redaction: crate::store::Redaction::Standard,
            limits,
            created_at: String::new(),
        }
    }

    fn limits(per_user: u32, per_crew: u32, tcp_user: u32, tcp_crew: u32) -> Limits {
        Limits {
            tunnels_per_user: per_user,
            tunnels_per_crew: per_crew,
            tcp_ports_per_user: tcp_user,
            tcp_ports_per_crew: tcp_crew,
        }
    }

    #[test]
    fn each_limit_counts_what_it_names() {
        let quotas = Quotas::default();
        let home = crew(1, CrewLimits::default());
        let work = crew(2, CrewLimits::default());
        let limits = limits(2, 3, 1, 5);
        let alice = Owner {
            user_id: 1,
            crew: &home,
        };
        let bob = Owner {
            user_id: 2,
            crew: &home,
        };
        let mut kept = Vec::new();
        kept.push(quotas.take(&alice, true, &limits).unwrap());
        // A second TCP tunnel passes her TCP limit; an HTTP one does not.
        let why = quotas.take(&alice, true, &limits).err().unwrap();
        assert!(why.contains("max_tcp_ports_per_user"), "{why}");
        assert!(why.contains("--max-tcp-ports-per-user"), "{why}");
        kept.push(quotas.take(&alice, false, &limits).unwrap());
        let why = quotas.take(&alice, false, &limits).err().unwrap();
        assert!(
            why.contains("You have 2 live tunnels in crew `crew1`, and a member may have 2"),
            "{why}"
        );
        assert!(why.contains("berth tunnels close"), "{why}");
        kept.push(quotas.take(&bob, false, &limits).unwrap());
        let why = quotas.take(&bob, false, &limits).err().unwrap();
        assert!(
            why.contains("Crew `crew1` has 3 live tunnels, and may have 3"),
            "{why}"
        );
        // Another crew, and the same user in another crew, count apart.
        let elsewhere = Owner {
            user_id: 1,
            crew: &work,
        };
        kept.push(quotas.take(&elsewhere, false, &limits).unwrap());
        // A slot given back (a claim that failed) frees its place.
        kept.pop();
        assert_eq!(quotas.taken(), 3);
    }

    #[test]
    fn a_crew_may_only_lower_the_servers_limits() {
        let mut own = CrewLimits::default();
        own.set(Limit::TunnelsPerUser, Some(1));
        own.set(Limit::Tunnels, Some(500));
        let home = crew(1, own);
        let limits = limits(10, 50, 5, 20);
        assert_eq!(limits.in_crew(&home, Limit::TunnelsPerUser), (1, true));
        assert_eq!(limits.in_crew(&home, Limit::Tunnels), (50, false));
        assert_eq!(limits.in_crew(&home, Limit::TcpPorts), (20, false));
        let quotas = Quotas::default();
        let alice = Owner {
            user_id: 1,
            crew: &home,
        };
        let _one = quotas.take(&alice, false, &limits).unwrap();
        let why = quotas.take(&alice, false, &limits).err().unwrap();
        assert!(why.contains("You have 1 live tunnel in"), "{why}");
        assert!(why.contains("a crew owner may raise"), "{why}");
        assert!(
            why.contains("berth crews set-limit crew1 max_tunnels_per_user N"),
            "{why}"
        );
    }

    #[test]
    fn a_limit_lowered_below_what_is_live_says_both() {
        let quotas = Quotas::default();
        let open = crew(1, CrewLimits::default());
        let limits = limits(10, 50, 5, 20);
        let alice = Owner {
            user_id: 1,
            crew: &open,
        };
        let _live: Vec<_> = (0..3)
            .map(|_| quotas.take(&alice, false, &limits).unwrap())
            .collect();
        let mut own = CrewLimits::default();
        own.set(Limit::TunnelsPerUser, Some(1));
        let lowered = crew(1, own);
        let alice = Owner {
            user_id: 1,
            crew: &lowered,
        };
        let why = quotas.take(&alice, false, &limits).err().unwrap();
        assert!(
            why.contains("You have 3 live tunnels in crew `crew1`, and a member may have 1"),
            "{why}"
        );
    }

    #[test]
    fn a_zero_limit_allows_none() {
        let home = crew(1, CrewLimits::default());
        let quotas = Quotas::default();
        let alice = Owner {
            user_id: 1,
            crew: &home,
        };
        let why = quotas
            .take(&alice, true, &limits(10, 50, 0, 20))
            .err()
            .unwrap();
        assert!(why.contains("No live TCP tunnels are allowed"), "{why}");
    }

    #[test]
    fn of_racing_shares_for_the_last_slot_exactly_one_wins() {
        let quotas = Arc::new(Quotas::default());
        let home = Arc::new(crew(1, CrewLimits::default()));
        let limits = limits(1, 50, 5, 20);
        let barrier = Arc::new(std::sync::Barrier::new(8));
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let (quotas, home, barrier) = (quotas.clone(), home.clone(), barrier.clone());
                std::thread::spawn(move || {
                    let alice = Owner {
                        user_id: 1,
                        crew: &home,
                    };
                    barrier.wait();
                    let won = quotas.take(&alice, false, &limits).map(|slot| {
                        // Held as a live tunnel's would be.
                        std::mem::forget(slot);
                    });
                    won.is_ok()
                })
            })
            .collect();
        let wins = handles
            .into_iter()
            .filter_map(|h| h.join().ok())
            .filter(|won| *won)
            .count();
        assert_eq!(wins, 1);
        assert_eq!(quotas.taken(), 1);
    }
}
