//! Who may have a subdomain (DESIGN §6 "Names"): the format and the reserved
//! list (`crate::names`), the server's own names, and the crews' holds and reservations kept
//! in the store, so a name stays its crew's through a reconnect or a restart.

use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use super::ClaimError;
use crate::names::check_subdomain;
use crate::store::{Store, SubdomainRow};
use crate::sync::lock;
use crate::time_fmt;

/// How long a crew keeps a name after its last tunnel on it closed, unless
/// the server is told otherwise (`--subdomain-hold`).
pub const DEFAULT_HOLD: Duration = Duration::from_secs(24 * 3600);
/// Names a crew may hold after use, and reserve, at the least: see
/// [`names_per_crew`].
pub const MIN_NAMES_PER_CREW: usize = 100;
/// Random names tried before giving up (each is one of 2.3 million).
const RANDOM_TRIES: usize = 64;
const ADJECTIVES: [&str; 16] = [
    "amber", "brave", "calm", "dusty", "eager", "fuzzy", "gentle", "happy", "icy", "jolly", "keen",
    "lucky", "mellow", "nimble", "quiet", "rapid",
];
const NOUNS: [&str; 16] = [
    "otter", "heron", "maple", "harbor", "comet", "falcon", "willow", "pebble", "lynx", "cedar",
    "badger", "meadow", "orca", "raven", "tide", "sparrow",
];

/// The rules and the holds; one per relay.
pub struct Names {
    /// Where holds and reservations live (none in unit tests of a bare relay).
    store: Option<Arc<Store>>,
    /// `--subdomain-hold`.
    pub hold: Duration,
    /// Names a crew holds after use at most (the holds that end first lapse
    /// beyond), and reserves at most.
    pub most_per_crew: usize,
    /// Labels under the tunnel domain that are the server's own names (its
    /// public URL's host, its certificate's names): never a tunnel. Grows
    /// when a reloaded certificate brings new names.
    own: RwLock<Vec<String>>,
    /// One claim or release at a time, so the registry of live tunnels and
    /// the store change together.
    turn: Mutex<()>,
}

impl Names {
    pub fn new() -> Names {
        Names {
            store: None,
            hold: DEFAULT_HOLD,
            most_per_crew: MIN_NAMES_PER_CREW,
            own: RwLock::new(Vec::new()),
            turn: Mutex::new(()),
        }
    }

    /// Keep holds and reservations in `store`, holding used names for
    /// `hold`, at most `most_per_crew` of them per crew.
    pub fn keep_in(&mut self, store: Arc<Store>, hold: Duration, most_per_crew: usize) {
        self.store = Some(store);
        self.hold = hold;
        self.most_per_crew = most_per_crew;
    }

    /// Never let a tunnel have `label` (a name of the server's own).
    pub fn keep_own(&self, label: &str) {
        let mut own = self.own.write().unwrap_or_else(|p| p.into_inner());
        if !own.iter().any(|l| l == label) {
            own.push(label.to_string());
        }
    }

    /// Never let a tunnel have the label under `domain` of any of these
    /// host names (a certificate's; `*.` wildcards name their parent).
    pub fn keep_own_hosts(&self, hosts: &[String], domain: &str) {
        for host in hosts {
            // A label no tunnel could have anyway (`*`, a reserved one) need not be kept.
            match label_under(host, domain) {
                Some(label) if check_subdomain(label).is_ok() => self.keep_own(label),
                _ => {}
            }
        }
    }

    /// Whether `label` is one of the server's own names.
    pub fn is_own(&self, label: &str) -> bool {
        let own = self.own.read().unwrap_or_else(|p| p.into_inner());
        own.iter().any(|l| l == label)
    }

    /// Check a requested name: its format, the reserved list, the server's own names.
    pub fn check(&self, name: &str) -> Result<(), ClaimError> {
        check_subdomain(name).map_err(ClaimError::Invalid)?;
        if self.is_own(name) {
            return Err(ClaimError::Invalid(format!(
                "The subdomain `{name}` is reserved: it is this server's own name; choose another."
            )));
        }
        Ok(())
    }

    /// Held while the registry and the store change together.
    pub(super) fn turn(&self) -> MutexGuard<'_, ()> {
        lock(&self.turn)
    }

    /// Take `name` for a tunnel of `crew_id`, unless another crew holds it.
    /// Called with the turn held.
    pub(super) fn take(&self, name: &str, crew_id: i64) -> Result<(), ClaimError> {
        let Some(store) = &self.store else {
            return Ok(());
        };
        match store.subdomains().claim(name, crew_id) {
            Ok(None) => Ok(()),
            Ok(Some(row)) => Err(ClaimError::Taken(taken(&row))),
            Err(err) => {
                eprintln!("berth: could not check the subdomain {name}: {err}");
                Err(ClaimError::Unavailable)
            }
        }
    }

    /// The crew's tunnel on `name` closed: hold the name for `hold` from now.
    /// Called with the turn held.
    pub(super) fn let_go(&self, name: &str, crew_id: i64) {
        let Some(store) = &self.store else {
            return;
        };
        let until = self.hold_until();
        if let Err(err) = store
            .subdomains()
            .hold(name, crew_id, &until, self.most_per_crew)
        {
            eprintln!("berth: could not record the hold of subdomain {name}: {err}");
        }
    }

    /// When a hold that starts now ends.
    pub fn hold_until(&self) -> String {
        let hold = time::Duration::try_from(self.hold).unwrap_or(time::Duration::MAX);
        let mut until = time::OffsetDateTime::now_utc().saturating_add(hold);
        // Stored to the second: round a hold up, never cut it short.
        if !self.hold.is_zero() && until.nanosecond() > 0 {
            until = until.saturating_add(time::Duration::SECOND);
        }
        time_fmt::format(until)
    }

    /// A random free name for a tunnel of `crew_id`, taken. Called with the
    /// turn held; `live` says whether a live tunnel has a name.
    pub(super) fn take_random(
        &self,
        crew_id: i64,
        live: impl Fn(&str) -> bool,
    ) -> Result<String, ClaimError> {
        for _ in 0..RANDOM_TRIES {
            let name = random_name();
            if live(&name) || self.is_own(&name) {
                continue;
            }
            match self.take(&name, crew_id) {
                Ok(()) => return Ok(name),
                Err(ClaimError::Taken(_)) => continue,
                Err(err) => return Err(err),
            }
        }
        Err(ClaimError::Taken(
            "No free random subdomain was found; choose one with --subdomain.".into(),
        ))
    }
}

impl Default for Names {
    fn default() -> Names {
        Names::new()
    }
}

/// Names a crew holds after use, and reserves, at most: twice the live
/// tunnels a crew may have (a restart holds every live one), at least
/// [`MIN_NAMES_PER_CREW`]. Without a bound a member could hold any number
/// of names for a day by opening and closing tunnels, and keep them by
/// doing it again.
pub fn names_per_crew(tunnels_per_crew: u32) -> usize {
    usize::try_from(tunnels_per_crew)
        .unwrap_or(usize::MAX)
        .saturating_mul(2)
        .max(MIN_NAMES_PER_CREW)
}

/// The refusal for a name another crew holds.
fn taken(row: &SubdomainRow) -> String {
    let name = &row.name;
    if row.reserved {
        format!("The subdomain {name} is taken: another crew reserved it; choose another with --subdomain.")
    } else if row.live {
        format!("The subdomain {name} is taken: another crew's tunnel is on it; choose another with --subdomain.")
    } else {
        format!(
            "The subdomain {name} is taken: another crew used it last and holds it until {}; choose another with --subdomain.",
            row.held_until.as_deref().unwrap_or("later")
        )
    }
}

/// The label of `host` directly under `domain` (`b` of `a.b.DOMAIN`), if
/// `host` is under it: the name a tunnel would need to reach `host` or set
/// cookies for it.
pub fn label_under<'a>(host: &'a str, domain: &str) -> Option<&'a str> {
    let rest = host.strip_suffix(domain)?.strip_suffix('.')?;
    rest.rsplit('.').next().filter(|label| !label.is_empty())
}

/// A random readable name such as `calm-otter-4821`.
pub fn random_name() -> String {
    let adjective = ADJECTIVES[rand::random_range(0..ADJECTIVES.len())];
    let noun = NOUNS[rand::random_range(0..NOUNS.len())];
    format!("{adjective}-{noun}-{}", rand::random_range(1000..10000))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::{Owner, Relay};

    /// A relay keeping names in a fresh store with crews `dock` and `pier`.
    fn relay_with_crews(hold: Duration) -> (Relay, Owner, Owner) {
        let (fixture, pier) = crate::store::fixture::store_with_two_crews();
        let store = fixture.store;
        let mut relay = Relay::new("localhost", "http://localhost:1");
        relay
            .names
            .keep_in(Arc::new(store), hold, MIN_NAMES_PER_CREW);
        let dock = Owner {
            token_id: fixture.token_id,
            crew_id: fixture.crew_id,
        };
        let pier = Owner {
            token_id: 0,
            crew_id: pier,
        };
        (relay, dock, pier)
    }

    #[test]
    fn a_crew_keeps_its_name_after_its_tunnel_closes() {
        let (relay, dock, pier) = relay_with_crews(Duration::from_secs(3600));
        let first = relay.claim(Some("keep"), dock, |_| {}).unwrap();
        assert!(matches!(
            relay.claim(Some("keep"), pier, |_| {}),
            Err(ClaimError::Taken(_))
        ));
        relay.release(&first);
        let held = relay.claim(Some("keep"), pier, |_| {});
        assert!(
            matches!(held, Err(ClaimError::Taken(why)) if why.contains("another crew used it"))
        );
        let again = relay.claim(Some("keep"), dock, |_| {}).unwrap();
        relay.release(&again);
        // Random names never land on a held one, and are held in turn.
        let random = relay.claim(None, dock, |_| {}).unwrap();
        relay.release(&random);
        assert!(relay.claim(Some(&random.subdomain), pier, |_| {}).is_err());
    }

    #[test]
    fn without_a_hold_a_name_is_free_once_its_tunnel_closes() {
        let (relay, dock, pier) = relay_with_crews(Duration::ZERO);
        let first = relay.claim(Some("free"), dock, |_| {}).unwrap();
        relay.release(&first);
        assert!(relay.claim(Some("free"), pier, |_| {}).is_ok());
    }

    #[test]
    fn the_public_urls_host_is_the_servers_own() {
        let relay = Relay::new("example.com", "http://Dash.Example.com:8080/");
        assert!(relay.is_own_host("dash.example.com"));
        assert!(!relay.is_own_host("app.example.com"));
        assert_eq!(relay.own_host_under_domain(), Some("dash.example.com"));
        let refused = relay.claim(Some("dash"), Owner::token(1), |_| {});
        assert!(matches!(refused, Err(ClaimError::Invalid(why)) if why.contains("own name")));
        let apart = Relay::new("tunnels.example.com", "https://berth.example.com");
        assert_eq!(apart.own_host_under_domain(), None);
        assert!(apart.claim(Some("berth2"), Owner::token(1), |_| {}).is_ok());
    }

    #[test]
    fn random_names_are_valid() {
        for _ in 0..100 {
            assert_eq!(check_subdomain(&random_name()), Ok(()));
        }
    }

    #[test]
    fn labels_under_the_domain() {
        assert_eq!(label_under("dash.example.com", "example.com"), Some("dash"));
        assert_eq!(label_under("a.b.example.com", "example.com"), Some("b"));
        assert_eq!(label_under("*.t.example.com", "example.com"), Some("t"));
        assert_eq!(label_under("example.com", "example.com"), None);
        assert_eq!(label_under("xexample.com", "example.com"), None);
        assert_eq!(label_under("other.org", "example.com"), None);
    }

    #[test]
    fn the_servers_own_names_are_refused_like_reserved_ones() {
        let names = Names::new();
        names.keep_own("dash");
        names.keep_own_hosts(
            &["edge.t.example".into(), "*.t.example".into()],
            "t.example",
        );
        assert!(names.is_own("edge") && !names.is_own("*"));
        assert!(
            matches!(names.check("dash"), Err(ClaimError::Invalid(why)) if why.contains("own name"))
        );
        assert_eq!(names.check("dashboard2"), Ok(()));
    }
}
