//! `berth server`: open the store, start the API behind the front door, and shut
//! down cleanly on SIGTERM or SIGINT.

mod datadir;
mod frontdoor;
mod kept;

use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::api::{self, ApiState};
use crate::auth::Auth;
use crate::cli::{CliError, CliResult};
use crate::inspect::Inspector;
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

/// The data directory: the flag or `BERTH_DATA`, else `$XDG_DATA_HOME/berth`, else `~/.local/share/berth`.
pub fn data_dir(flag: Option<PathBuf>) -> Result<PathBuf, CliError> {
    if let Some(dir) = flag {
        return Ok(dir);
    }
    if let Some(xdg) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(xdg).join("berth"));
    }
    match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        Some(home) => Ok(PathBuf::from(home).join(".local/share/berth")),
        None => Err(CliError::usage(
            "No data directory: set --data DIR, BERTH_DATA or HOME.",
        )),
    }
}

/// Open the store in the data directory, creating both (0700, 0600) when new;
/// a directory or database someone else owns or can write is refused.
pub fn open_store(dir: &Path) -> Result<Store, CliError> {
    datadir::check(dir)?;
    let path = dir.join(datadir::DATABASE_FILES[0]);
    let store = Store::open(&path).map_err(|e| {
        CliError::other(format!(
            "could not open the database {}: {e}",
            path.display()
        ))
    })?;
    datadir::make_private(dir);
    Ok(store)
}

pub fn run(args: ServerArgs) -> CliResult {
    crate::metrics::mark_start();
    let connection_bound = env_bound("BERTH_MAX_CONNECTIONS", frontdoor::MAX_CONNECTIONS)?;
    let tunnel_bound = env_bound("BERTH_MAX_TUNNELS", frontdoor::MAX_TUNNELS)?;
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
    let public_url = args
        .public_url
        .map(|u| u.trim_end_matches('/').to_string())
        .unwrap_or_else(|| default_public_url(bound));

    // No tunnel outlives the server that relayed it.
    store
        .tunnels()
        .close_all()
        .map_err(|e| CliError::other(format!("could not update the database: {e}")))?;
    let setup_code = first_run_code(&store)?;
    let inspector = Inspector::start(store.clone(), args.inspect_retention)
        .map_err(|e| CliError::other(format!("could not start the traffic inspector: {e}")))?;
    let mut relay = Relay::new(&args.domain, &public_url).with_inspector(inspector.clone());
    relay.region = args.region.clone();
    relay.response_timeout = Duration::from_secs(args.response_timeout);
    // TCP tunnels listen where the front door does (loopback stays loopback).
    relay.tcp = Ports::new(args.tcp_ports, bound.ip());
    let relay = Arc::new(relay);
    let state = Arc::new(ApiState {
        store: store.clone(),
        auth: auth.clone(),
        setup_code: Mutex::new(setup_code.clone()),
        relay: relay.clone(),
    });
    let api = api::start(&socket, state).map_err(|e| {
        CliError::other(format!(
            "could not start the API on {}: {e}",
            socket.display()
        ))
    })?;
    let _ = std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600));

    let mut door = FrontDoor::new(socket.clone(), relay, auth.clone());
    door.max_connections = connection_bound
        .unwrap_or(door.max_connections)
        .min(connections_within(open_files_limit()));
    // The relay's reserve beyond the bound must fit the descriptors too.
    let fit = connections_within(open_files_limit());
    while door.max_connections > 1 && FrontDoor::most_accepted(door.max_connections) > fit {
        door.max_connections -= 1;
    }
    if let Some(bound) = tunnel_bound {
        door.max_tunnels = bound;
    }
    let door = Arc::new(door);
    let serving = door
        .serve(listener, None)
        .map_err(|e| CliError::other(format!("could not start the listener: {e}")))?;
    let serving_tls = match &tls {
        Some(tls) => {
            let listener = tls.listener.try_clone();
            let listener = listener
                .map_err(|e| CliError::other(format!("could not start the TLS listener: {e}")))?;
            let config = crate::tls::server_config(tls.certs.clone());
            let acceptors = door
                .serve(listener, Some(config))
                .map_err(|e| CliError::other(format!("could not start the TLS listener: {e}")))?;
            say(format_args!("berth listening on https://{}", tls.bound));
            Some((acceptors, tls.bound))
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

    wait_for_signal(tls.as_ref().map(|t| &*t.certs))?;
    say(format_args!("berth shutting down"));
    door.stop();
    door.relay.close_all();
    // Stop listening: the threads waiting in accept wake and end.
    serving.stop(wake_addr(bound));
    if let Some((acceptors, bound)) = serving_tls {
        acceptors.stop(wake_addr(bound));
    }
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    while door.open.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
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

/// A bound from an environment variable (`BERTH_MAX_CONNECTIONS`,
/// `BERTH_MAX_TUNNELS`), if set: not documented options, but a way for tests and
/// small machines to lower the defaults.
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

/// Descriptors kept aside from connections: the database, listeners, the
/// control and parked data connections of tunnels, logs.
const RESERVED_FILES: u64 = 128;
/// Descriptors one front-door connection may hold at once: its socket and two
/// clones (the reader's, and the one that closes it when the server stops),
/// and for an API request the Unix socket to the API on both ends and the
/// API's clone of it.
const FILES_PER_CONNECTION: u64 = 7;

/// Raise the soft limit on open files to the hard one, as servers do (1024, a
/// common default, is below what `MAX_CONNECTIONS` needs); the limit now.
/// Running out of descriptors would make accepts fail, the API's among them.
fn open_files_limit() -> u64 {
    rlimit::increase_nofile_limit(u64::MAX)
        .or_else(|_| rlimit::getrlimit(rlimit::Resource::NOFILE).map(|(soft, _)| soft))
        .unwrap_or(1024)
}

/// How many front-door connections fit in `limit` open files.
fn connections_within(limit: u64) -> usize {
    let fit = limit.saturating_sub(RESERVED_FILES) / FILES_PER_CONNECTION;
    usize::try_from(fit).unwrap_or(usize::MAX).max(1)
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

/// The address to connect to so a blocked accept returns.
fn wake_addr(bound: SocketAddr) -> SocketAddr {
    let mut addr = bound;
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            [127, 0, 0, 1].into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    addr
}

/// Wait for SIGTERM or SIGINT; on SIGHUP re-read the TLS certificate (connections
/// already open keep the one they started with).
fn wait_for_signal(certs: Option<&CertFiles>) -> CliResult {
    let mut signals = Signals::new([SIGTERM, SIGINT, SIGHUP])
        .map_err(|e| CliError::other(format!("could not install signal handlers: {e}")))?;
    for signal in signals.forever() {
        if signal != SIGHUP {
            break;
        }
        match certs.map(CertFiles::reload) {
            Some(Ok(())) => say(format_args!("berth reloaded the TLS certificate")),
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
