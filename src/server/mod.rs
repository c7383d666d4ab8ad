//! `berth server`: open the store, start the API behind the front door, and shut
//! down cleanly on SIGTERM or SIGINT.

mod frontdoor;

use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::api::{self, ApiState};
use crate::auth::Auth;
use crate::datadir::{data_dir, open_store};
use crate::exit::{CliError, CliResult};
use crate::inspect::Inspector;
use crate::limits::{self, Bounds, PerAddress, Share};
use crate::proxy::forwarded::TrustedProxies;
use crate::relay::tcp::Ports;
use crate::relay::Relay;
use crate::store::Store;
use crate::tls::CertFiles;
use crate::ServerArgs;

pub use frontdoor::FrontDoor;

/// How often pending last-use times are written.
const FLUSH_EVERY: Duration = Duration::from_secs(5);
/// How long shutdown waits for requests in flight.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Days a closed tunnel's history is kept unless the server is told otherwise.
pub const DEFAULT_HISTORY_DAYS: u32 = 30;
/// How often closed tunnels past `--history-days` are forgotten (and once at start).
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

pub fn run(args: ServerArgs) -> CliResult {
    crate::metrics::mark_start();
    let asked = limits::Asked {
        connections: env_bound("BERTH_MAX_CONNECTIONS", limits::MAX_CONNECTIONS)?
            .unwrap_or(limits::MAX_CONNECTIONS),
        tunnels: env_bound("BERTH_MAX_TUNNELS", limits::MAX_TUNNELS)?
            .unwrap_or(limits::MAX_TUNNELS),
        tcp_connections: env_bound("BERTH_MAX_TCP_CONNECTIONS", limits::MAX_TCP_CONNECTIONS)?
            .unwrap_or(limits::MAX_TCP_CONNECTIONS),
        per_address: args.max_connections_per_ip.map(|n| n as usize),
    };
    let bounds = Bounds::fit(open_files_limit(), asked);
    let trusted = TrustedProxies::new(args.trusted_proxy.clone());
    check_region(&args.region)?;
    let dir = data_dir(args.data.clone())?;
    let store = Arc::new(open_store(&dir)?);
    let auth = Arc::new(Auth::new(store.clone()));
    let socket = dir.join("api.sock");
    if UnixStream::connect(&socket).is_ok() {
        return Err(CliError::other(format!(
            "another berth server is using the data directory {}; stop it or choose another with --data",
            dir.display()
        )));
    }
    let _ = std::fs::remove_file(&socket);

    let listener = TcpListener::bind(args.listen).map_err(|e| {
        CliError::other(format!(
            "could not listen on {}: {e}; choose another address with --listen",
            args.listen
        ))
    })?;
    let bound = listener
        .local_addr()
        .map_err(|e| CliError::other(format!("could not read the listening address: {e}")))?;
    let tls = tls_listener(&args)?;
    let public_url_set = args.public_url.is_some();
    let public_url = args
        .public_url
        .map(|u| u.trim_end_matches('/').to_string())
        .unwrap_or_else(|| default_public_url(bound));

    // No tunnel outlives the server that relayed it; the ports of TCP ones
    // stay their crews' for the hold, as subdomains do.
    let held_ports = held_tcp_ports(&store, args.subdomain_hold)?;
    store
        .tunnels()
        .close_all()
        .map_err(|e| CliError::other(format!("could not update the database: {e}")))?;
    let setup_code = first_run_code(&store)?;
    let inspector = Inspector::start(store.clone(), args.inspect_retention)
        .map_err(|e| CliError::other(format!("could not start the traffic inspector: {e}")))?;
    let mut relay = Relay::new(&args.domain, &public_url).with_inspector(inspector.clone());
    relay.limits = args.limits;
    keep_names(&mut relay, &store, args.subdomain_hold, tls.as_ref())?;
    relay.region = args.region.clone();
    relay.response_timeout = Duration::from_secs(args.response_timeout);
    relay.idle_timeout = Some(args.idle_timeout);
    // TCP tunnels listen where the front door does (loopback stays loopback).
    relay.tcp = Ports::new(args.tcp_ports, bound.ip())
        .with_bounds(bounds.tcp_connections, bounds.per_address)
        .with_trusted(trusted.clone())
        .with_holds(
            args.subdomain_hold,
            args.limits.tcp_ports_per_crew as usize,
            &held_ports,
        );
    let relay = Arc::new(relay);
    let state = Arc::new(ApiState {
        store: store.clone(),
        auth: auth.clone(),
        setup_code: Mutex::new(setup_code.clone()),
        relay: relay.clone(),
        public_url: public_url.clone(),
        public_url_set,
    });
    let api = api::start(&socket, state).map_err(|e| {
        CliError::other(format!(
            "could not start the API on {}: {e}",
            socket.display()
        ))
    })?;
    let _ = std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600));

    let mut door = FrontDoor::new(socket.clone(), relay, auth.clone());
    door.max_connections = bounds.connections;
    door.max_tunnels = bounds.tunnels;
    door.tunnel_traffic = Share::new(bounds.tunnel_traffic);
    door.per_address = PerAddress::new(bounds.per_address);
    door.trusted = trusted;
    let door = Arc::new(door);
    say(format_args!("berth limits: {bounds}"));
    if !door.trusted.is_empty() {
        say(format_args!(
            "berth takes client addresses from the proxies at {}",
            door.trusted
        ));
    }
    let runtime = relay_runtime()?;
    let serving = door
        .serve(listener, None, runtime.handle())
        .map_err(|e| CliError::other(format!("could not start the listener: {e}")))?;
    let serving_tls = match &tls {
        Some(tls) => {
            let listener = tls.listener.try_clone();
            let listener = listener
                .map_err(|e| CliError::other(format!("could not start the TLS listener: {e}")))?;
            let config = crate::tls::server_config(tls.certs.clone());
            let acceptors = door
                .serve(listener, Some(config), runtime.handle())
                .map_err(|e| CliError::other(format!("could not start the TLS listener: {e}")))?;
            say(format_args!("berth listening on https://{}", tls.bound));
            Some(acceptors)
        }
        None => None,
    };
    say(format_args!(
        "berth listening on http://{bound} (public URL {public_url}, data {})",
        dir.display()
    ));
    if let Some(code) = setup_code {
        say(format_args!(
            "No users yet: finish setup at {public_url}/setup?code={code} or run: berth admin create-user USERNAME --crew CREW --role owner --data {}",
            dir.display()
        ));
    }

    let flusher = {
        let auth = auth.clone();
        std::thread::Builder::new()
            .name("last-used".into())
            .spawn(move || loop {
                std::thread::sleep(FLUSH_EVERY);
                auth.flush_due();
            })
            .map_err(|e| CliError::other(format!("could not start the flusher: {e}")))?
    };
    drop(flusher);
    if args.history_days > 0 {
        prune_history_hourly(store.clone(), args.history_days)?;
    }

    wait_for_signal(tls.as_ref().map(|t| &*t.certs), &door.relay)?;
    say(format_args!("berth shutting down"));
    door.stop();
    door.relay.close_all();
    // Stop listening.
    serving.stop();
    if let Some(acceptors) = serving_tls {
        acceptors.stop();
    }
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    while door.open.load(Ordering::SeqCst) + door.in_reserve.load(Ordering::SeqCst) > 0
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    runtime.shutdown_timeout(Duration::from_secs(1));
    api.stop();
    auth.flush_all();
    inspector.flush(DRAIN_TIMEOUT);
    if inspector.dropped() > 0 {
        say(format_args!(
            "berth: the traffic inspector dropped {} records while the disk was behind",
            inspector.dropped()
        ));
    }
    let _ = std::fs::remove_file(&socket);
    Ok(())
}

/// The event loop that carries the front door, the relay and its tunnels:
/// a worker per core.
fn relay_runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(std::thread::available_parallelism().map_or(2, |n| n.get()))
        .thread_name("relay")
        .enable_all()
        .build()
        .map_err(|e| CliError::other(format!("could not start the relay's event loop: {e}")))
}

/// Forget closed tunnels older than `days` (their records with them) now,
/// then every `PRUNE_EVERY`, on a thread of its own.
fn prune_history_hourly(store: Arc<Store>, days: u32) -> CliResult {
    let prune = move || {
        let cutoff = crate::time_fmt::days_ago(days);
        match store.tunnels().prune_closed_before(&cutoff) {
            Ok(0) => {}
            Ok(n) => say(format_args!(
                "berth: forgot {n} tunnels closed more than {days} days ago"
            )),
            Err(err) => eprintln!("berth: could not prune tunnel history: {err}"),
        }
    };
    std::thread::Builder::new()
        .name("history".into())
        .spawn(move || loop {
            prune();
            std::thread::sleep(PRUNE_EVERY);
        })
        .map(drop)
        .map_err(|e| CliError::other(format!("could not start the history pruner: {e}")))
}

/// The TCP ports whose hold outlasts the last run: each port a TCP tunnel
/// was on within `hold`, its last tunnel's crew, and what is left of the
/// hold (all of it for a tunnel a crash left marked open).
fn held_tcp_ports(store: &Store, hold: Duration) -> Result<Vec<(u16, i64, Duration)>, CliError> {
    let now = time::OffsetDateTime::now_utc();
    let since = time::Duration::try_from(hold)
        .ok()
        .and_then(|hold| now.checked_sub(hold))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let recent = store
        .tunnels()
        .recent_tcp_ports(&crate::time_fmt::format(since))
        .map_err(|e| CliError::other(format!("could not read the database: {e}")))?;
    Ok(recent
        .into_iter()
        .filter_map(|(port, crew, closed)| {
            let left = match closed {
                None => hold,
                Some(closed) => {
                    let closed = crate::time_fmt::parse(&closed)?;
                    let left = (closed - since).max(time::Duration::ZERO);
                    Duration::try_from(left).ok()?
                }
            };
            Some((port, crew, left))
        })
        .collect())
}

/// Holds and reservations of subdomains in the store, and the server's own
/// names (its public URL's host, its certificate's names) kept from tunnels;
/// warns when the public URL lies under the tunnel domain.
fn keep_names(
    relay: &mut Relay,
    store: &Arc<Store>,
    hold: Duration,
    tls: Option<&TlsListener>,
) -> CliResult {
    let most = crate::relay::names::names_per_crew(relay.limits.tunnels_per_crew);
    relay.names.keep_in(store.clone(), hold, most);
    // No tunnel is live after a restart: the names live ones had stay held.
    let until = relay.names.hold_until();
    store
        .subdomains()
        .hold_all_live(&until)
        .map_err(|e| CliError::other(format!("could not update the database: {e}")))?;
    if let Some(tls) = tls {
        relay
            .names
            .keep_own_hosts(&tls.certs.dns_names(), &relay.domain);
    }
    if let Some(host) = relay.own_host_under_domain() {
        eprintln!(
            "berth: warning: the public URL's host {host} lies under the tunnel domain {}. berth keeps that name from tunnels, but pages served through tunnels share a parent domain with the dashboard; prefer a separate tunnel domain (e.g. --domain tunnels.example.com).",
            relay.domain
        );
    }
    Ok(())
}

/// A bound from an environment variable (`BERTH_MAX_CONNECTIONS`,
/// `BERTH_MAX_TUNNELS`, `BERTH_MAX_TCP_CONNECTIONS`), if set: not documented
/// options, but a way for tests, benchmarks and small machines to move the
/// defaults.
fn env_bound(name: &str, default: usize) -> Result<Option<usize>, CliError> {
    let Some(value) = std::env::var_os(name) else {
        return Ok(None);
    };
    match value.to_str().and_then(|v| v.trim().parse::<usize>().ok()) {
        Some(n) if n > 0 => Ok(Some(n)),
        _ => Err(CliError::usage(format!(
            "{name} must be a positive whole number; unset it for the default of {default}."
        ))),
    }
}

/// Raise the soft limit on open files to the hard one, as servers do (1024, a
/// common default, is below what `limits::MAX_CONNECTIONS` needs); the limit now.
/// Running out of descriptors would make accepts fail, the API's among them.
fn open_files_limit() -> u64 {
    rlimit::increase_nofile_limit(u64::MAX)
        .or_else(|_| rlimit::getrlimit(rlimit::Resource::NOFILE).map(|(soft, _)| soft))
        .unwrap_or(1024)
}

/// A region name is what a token's region may be: 1 to 32 of a-z, 0-9 and -.
fn check_region(region: &str) -> CliResult {
    let valid = !region.is_empty()
        && region.len() <= 32
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if valid {
        Ok(())
    } else {
        Err(CliError::usage(format!(
            "The region `{region}` is not valid: use 1 to 32 of a-z, 0-9 and -, e.g. --region eu-west."
        )))
    }
}

/// A line on standard output; a closed stdout (`berth server | head -1`) is not fatal.
fn say(line: std::fmt::Arguments) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout(), "{line}");
}

/// A fresh setup code when the store has no users yet.
fn first_run_code(store: &Store) -> Result<Option<String>, CliError> {
    let users = store
        .users()
        .count()
        .map_err(|e| CliError::other(format!("could not read the database: {e}")))?;
    if users > 0 {
        return Ok(None);
    }
    let bytes: [u8; 16] = rand::random();
    Ok(Some(bytes.iter().map(|b| format!("{b:02x}")).collect()))
}

fn default_public_url(bound: SocketAddr) -> String {
    if bound.ip().is_unspecified() || bound.ip().is_loopback() {
        format!("http://localhost:{}", bound.port())
    } else {
        format!("http://{bound}")
    }
}

/// Wait for SIGTERM or SIGINT; on SIGHUP re-read the TLS certificate (connections
/// already open keep the one they started with) and keep its names from tunnels.
fn wait_for_signal(certs: Option<&CertFiles>, relay: &Relay) -> CliResult {
    let mut signals = Signals::new([SIGTERM, SIGINT, SIGHUP])
        .map_err(|e| CliError::other(format!("could not install signal handlers: {e}")))?;
    for signal in signals.forever() {
        if signal != SIGHUP {
            break;
        }
        match certs.map(|c| c.reload().map(|()| c.dns_names())) {
            Some(Ok(names)) => {
                relay.names.keep_own_hosts(&names, &relay.domain);
                say(format_args!("berth reloaded the TLS certificate"))
            }
            Some(Err(why)) => say(format_args!("berth kept the TLS certificate in use: {why}")),
            None => {}
        }
    }
    Ok(())
}

/// The TLS listener and its certificate, when --tls-cert and --tls-key are given.
struct TlsListener {
    listener: TcpListener,
    bound: SocketAddr,
    certs: Arc<CertFiles>,
}

fn tls_listener(args: &ServerArgs) -> Result<Option<TlsListener>, CliError> {
    let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) else {
        return Ok(None);
    };
    let certs = Arc::new(CertFiles::load(cert, key).map_err(CliError::other)?);
    let listener = TcpListener::bind(args.listen_tls).map_err(|e| {
        CliError::other(format!(
            "could not listen on {}: {e}; choose another address with --listen-tls",
            args.listen_tls
        ))
    })?;
    let bound = listener
        .local_addr()
        .map_err(|e| CliError::other(format!("could not read the listening address: {e}")))?;
    Ok(Some(TlsListener {
        listener,
        bound,
        certs,
    }))
}
