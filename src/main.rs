//! berth: command-line definitions and dispatch to one `run` per mode.
#![forbid(unsafe_code)]

mod api;
mod api_error;
mod auth;
mod cli;
mod client;
mod config;
mod datadir;
mod duration;
mod exit;
mod inspect;
mod limits;
mod metrics;
mod names;
mod origin;
mod proxy;
mod relay;
mod server;
mod store;
mod sync;
mod text;
mod time_fmt;
mod tls;
mod token;
mod web;
mod wire;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, CommandFactory, Parser, Subcommand};

/// Share local services through a tunnel and manage personal access tokens.
#[derive(Parser)]
#[command(name = "berth", version, propagate_version = true)]
#[command(after_help = "Examples:
  berth server                           run the appliance on :8080
  berth login --username alice           mint a token for this machine
  berth tokens create \"CI - deploy\"      create a token for automation
  berth tokens list --json               list your tokens
  berth share 3000                       share localhost:3000 through a tunnel")]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every client command understands.
#[derive(Args, Clone, Default)]
pub struct GlobalArgs {
    /// Server URL [env: BERTH_SERVER] [default: http://localhost:8080]
    #[arg(long, global = true, value_name = "URL")]
    pub server: Option<String>,
    /// Token to authenticate with [env: BERTH_TOKEN]
    #[arg(long, global = true, value_name = "TOKEN")]
    pub token: Option<String>,
    /// Print machine-readable JSON (list and show commands)
    #[arg(long, global = true)]
    pub json: bool,
    /// Trust this PEM CA certificate for https servers [env: BERTH_CA_CERT]
    #[arg(long, global = true, value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the appliance: API, dashboard and token store
    #[command(after_help = "Examples:
  berth server
  berth server --listen 127.0.0.1:9000 --data /srv/berth
  berth server --listen 127.0.0.1:8080 --trusted-proxy 127.0.0.1/32   # behind nginx or Caddy")]
    Server(ServerArgs),
    /// Offline maintenance on the data directory (works while the server runs)
    #[command(after_help = "Examples:
  berth admin create-user alice --crew home --role owner
  berth admin list-users --data /srv/berth")]
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Sign in and save a token for this machine to the config file
    #[command(after_help = "Examples:
  berth login
  berth login --username alice --crew home
  echo \"$PASSWORD\" | berth login --username alice --password-stdin")]
    Login(LoginArgs),
    /// Remove the saved token from the config file
    #[command(after_help = "Examples:
  berth logout
  berth logout --revoke")]
    Logout(LogoutArgs),
    /// Show the user, crew, role and token in use
    #[command(after_help = "Examples:
  berth whoami
  berth whoami --json")]
    Whoami,
    /// Change your own password (and, after a stolen password, revoke your tokens)
    #[command(after_help = "Examples:
  berth passwd
  berth passwd --revoke-tokens
  printf '%s\\n%s\\n' \"$OLD\" \"$NEW\" | berth passwd --password-stdin")]
    Passwd(PasswdArgs),
    /// Read and change the CLI config file
    #[command(after_help = "Examples:
  berth config set server https://berth.example.com
  berth config list")]
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Create, list and revoke personal access tokens
    #[command(after_help = "Examples:
  berth tokens create \"CI - deploy\" --scope tunnels:share
  berth tokens list --all
  berth tokens revoke 17")]
    #[command(subcommand)]
    Tokens(TokensCommand),
    /// Crews (teams) and their members
    #[command(after_help = "Examples:
  berth crews list
  berth crews add-member home bob --role member")]
    #[command(subcommand)]
    Crews(CrewsCommand),
    /// The crew's live and recent tunnels
    #[command(after_help = "Examples:
  berth tunnels list
  berth tunnels close 3f2a9c01d4e5b6a7")]
    #[command(subcommand)]
    Tunnels(TunnelsCommand),
    /// Subdomains the crew holds; reserve and release names (admin and owner)
    #[command(after_help = "Examples:
  berth subdomains list
  berth subdomains reserve shop
  berth subdomains release shop")]
    #[command(subcommand)]
    Subdomains(SubdomainsCommand),
    /// Requests recorded through a tunnel, newest first
    #[command(after_help = "Examples:
  berth traffic 3f2a9c01d4e5b6a7
  berth traffic 3f2a9c01d4e5b6a7 --limit 200 --json")]
    Traffic(TrafficArgs),
    /// Open an HTTP or TCP tunnel to a local port and print its public address
    #[command(after_help = "Examples:
  berth share 3000
  berth share 8000 --subdomain myapp
  berth share 5173 --host 127.0.0.1
  berth share 3000 --region eu
  berth share 22 --tcp --remote-port 20022
  berth share 3000 --follow-server")]
    Share(ShareArgs),
    /// Recent audit events of the crew (admin and owner)
    #[command(after_help = "Examples:
  berth audit
  berth audit --limit 500 --json")]
    Audit {
        /// How many events, newest first (1 to 1000)
        #[arg(long, value_name = "N", default_value_t = 100,
              value_parser = clap::value_parser!(u32).range(1..=i64::from(cli::audit::MAX_LIMIT)))]
        limit: u32,
    },
    /// Print a shell completion script for berth
    #[command(after_help = "Examples:
  berth completions bash > /etc/bash_completion.d/berth
  berth completions zsh > \"${fpath[1]}/_berth\"
  berth completions fish > ~/.config/fish/completions/berth.fish")]
    Completions {
        /// bash, zsh or fish
        shell: cli::completions::Shell,
    },
}

#[derive(Args)]
pub struct ShareArgs {
    /// Local port to share
    pub port: u16,
    /// Local host the service listens on
    #[arg(long, value_name = "H", default_value = "localhost")]
    pub host: String,
    /// Subdomain to ask for [default: a random readable name]
    #[arg(long, value_name = "S", conflicts_with = "tcp")]
    pub subdomain: Option<String>,
    /// Region the tunnel must be served in [default: config `region`, else the server's]
    #[arg(long, value_name = "R")]
    pub region: Option<String>,
    /// Open a TCP tunnel: a public port whose connections are piped raw to the local port
    #[arg(long)]
    pub tcp: bool,
    /// Public port to ask for, with --tcp [default: the first free one of the server's range]
    #[arg(
        long,
        value_name = "N",
        requires = "tcp",
        value_parser = clap::value_parser!(u16).range(1..)
    )]
    pub remote_port: Option<u16>,
    /// Follow the token's preferred server (`tokens create --cli-server`) even
    /// when it is plain http on another host or port (never from https to http)
    #[arg(long)]
    pub follow_server: bool,
}

#[derive(Args)]
pub struct TrafficArgs {
    /// The tunnel's id, as `berth tunnels list` shows it
    pub tunnel_id: String,
    /// How many of the newest records to show (1 to 1000)
    #[arg(
        long,
        value_name = "N",
        default_value_t = 50,
        value_parser = clap::value_parser!(u32).range(1..=1000)
    )]
    pub limit: u32,
}

/// `berth server` options; each also reads `BERTH_<NAME>`.
#[derive(Args, Clone)]
pub struct ServerArgs {
    /// Data directory [default: $XDG_DATA_HOME/berth or ~/.local/share/berth]
    #[arg(long, env = "BERTH_DATA", value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Address of the plain HTTP listener
    #[arg(
        long,
        env = "BERTH_LISTEN",
        value_name = "ADDR",
        default_value = "0.0.0.0:8080"
    )]
    pub listen: SocketAddr,
    /// Address of the TLS listener, used when --tls-cert and --tls-key are given
    #[arg(
        long,
        env = "BERTH_LISTEN_TLS",
        value_name = "ADDR",
        default_value = "0.0.0.0:8443"
    )]
    pub listen_tls: SocketAddr,
    /// PEM certificate chain for TLS (a wildcard for *.DOMAIN covers tunnels); re-read on SIGHUP
    #[arg(
        long,
        env = "BERTH_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert
    #[arg(
        long,
        env = "BERTH_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
    /// URL that links and the CLI are told, when behind a port-forward
    #[arg(long, env = "BERTH_PUBLIC_URL", value_name = "URL")]
    pub public_url: Option<String>,
    /// Domain tunnels live under: `NAME.DOMAIN`
    #[arg(
        long,
        env = "BERTH_DOMAIN",
        value_name = "D",
        default_value = "localhost"
    )]
    pub domain: String,
    /// The region this server serves; tunnels asking for another are refused
    #[arg(
        long,
        env = "BERTH_REGION",
        value_name = "NAME",
        default_value = "local"
    )]
    pub region: String,
    /// Inspector records kept per HTTP tunnel; 0 turns recording off
    #[arg(
        long,
        env = "BERTH_INSPECT_RETENTION",
        value_name = "N",
        default_value_t = inspect::DEFAULT_RETENTION,
        value_parser = clap::value_parser!(u32).range(0..=inspect::MAX_RETENTION as i64)
    )]
    pub inspect_retention: u32,
    /// Seconds a tunnel's local service may take to start its response or to
    /// take more of a request body (the public client gets a 504), or to send
    /// more of its response (the response is cut)
    #[arg(
        long,
        env = "BERTH_RESPONSE_TIMEOUT",
        value_name = "SECS",
        default_value_t = relay::RESPONSE_TIMEOUT.as_secs(),
        value_parser = clap::value_parser!(u64).range(1..=86_400)
    )]
    pub response_timeout: u64,
    /// Public ports TCP tunnels get (`share --tcp`), FIRST-LAST
    #[arg(
        long,
        env = "BERTH_TCP_PORTS",
        value_name = "A-B",
        default_value = relay::tcp::DEFAULT_RANGE
    )]
    pub tcp_ports: relay::tcp::PortRange,
    #[command(flatten)]
    pub limits: relay::quota::Limits,
    /// Days the history of a closed tunnel (its row and inspector records) is
    /// kept; 0 keeps it for ever
    #[arg(
        long,
        env = "BERTH_HISTORY_DAYS",
        value_name = "N",
        default_value_t = server::DEFAULT_HISTORY_DAYS,
        value_parser = clap::value_parser!(u32).range(0..=36_500)
    )]
    pub history_days: u32,
    /// How long a crew keeps a subdomain or TCP port after its last tunnel on
    /// it closed (other crews get 409 meanwhile): 30s, 15m, 24h, 7d; 0s for no hold
    #[arg(
        long,
        env = "BERTH_SUBDOMAIN_HOLD",
        value_name = "DURATION",
        default_value = "24h",
        value_parser = duration::parse
    )]
    pub subdomain_hold: std::time::Duration,
    /// Connections one client address may hold at once [default: 64, or for
    /// a small connection bound a quarter of it, at least 8, at most half]
    #[arg(long, env = "BERTH_MAX_CONNECTIONS_PER_IP", value_name = "N",
        value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections_per_ip: Option<u32>,
    /// How long an upgraded connection (a WebSocket) through a tunnel may move
    /// no byte either way before it is closed: 30s, 10m, 24h
    #[arg(long, env = "BERTH_IDLE_TIMEOUT", value_name = "DURATION",
        default_value = limits::IDLE_TIMEOUT, value_parser = duration::parse_positive)]
    pub idle_timeout: std::time::Duration,
    /// A reverse proxy in front of berth (ADDRESS/BITS, repeatable): from it,
    /// the client address is taken from X-Forwarded-For (HTTP) or a PROXY
    /// protocol header (TCP tunnels), never from anyone else
    #[arg(
        long,
        env = "BERTH_TRUSTED_PROXY",
        value_name = "CIDR",
        value_delimiter = ','
    )]
    pub trusted_proxy: Vec<proxy::forwarded::Cidr>,
}

#[derive(Subcommand)]
pub enum AdminCommand {
    /// Create a user (and the crew if it is new)
    #[command(after_help = "Examples:
  berth admin create-user alice --crew home --role owner
  echo \"$PASSWORD\" | berth admin create-user ci --crew home --role member --password-stdin")]
    CreateUser {
        username: String,
        /// Crew to add the user to (created if new)
        #[arg(long, value_name = "C")]
        crew: Option<String>,
        /// Role in that crew: owner, admin, member or viewer
        #[arg(long, value_name = "R", default_value = "member")]
        role: String,
        /// Read the password from standard input instead of prompting
        #[arg(long)]
        password_stdin: bool,
        #[command(flatten)]
        data: DataArg,
    },
    /// Set a new password for a user
    #[command(after_help = "Examples:
  berth admin reset-password alice
  berth admin reset-password alice --revoke-tokens
  echo \"$PASSWORD\" | berth admin reset-password alice --password-stdin --data /srv/berth")]
    ResetPassword {
        username: String,
        /// Read the password from standard input instead of prompting
        #[arg(long)]
        password_stdin: bool,
        /// Also revoke every token of the user, in every crew (a stolen password)
        #[arg(long)]
        revoke_tokens: bool,
        #[command(flatten)]
        data: DataArg,
    },
    /// List users with their crews and roles
    #[command(after_help = "Examples:
  berth admin list-users
  berth admin list-users --data /srv/berth")]
    ListUsers {
        #[command(flatten)]
        data: DataArg,
    },
}

#[derive(Args, Clone)]
pub struct DataArg {
    /// Data directory of the server [default: $XDG_DATA_HOME/berth]
    #[arg(long, env = "BERTH_DATA", value_name = "DIR")]
    pub data: Option<PathBuf>,
}

#[derive(Args)]
pub struct LoginArgs {
    /// Username (prompted for when omitted)
    #[arg(long, value_name = "U")]
    pub username: Option<String>,
    /// Read the password from standard input instead of prompting
    #[arg(long)]
    pub password_stdin: bool,
    /// Crew the new token belongs to [default: your first crew]
    #[arg(long, value_name = "C")]
    pub crew: Option<String>,
}

#[derive(Args)]
pub struct PasswdArgs {
    /// Also revoke every token of yours, in every crew, this one included
    #[arg(long)]
    pub revoke_tokens: bool,
    /// Read the current password, then the new one, from standard input (one per line)
    #[arg(long)]
    pub password_stdin: bool,
}

#[derive(Args)]
pub struct LogoutArgs {
    /// Also revoke the token on the server
    #[arg(long)]
    pub revoke: bool,
}

#[derive(Subcommand)]
pub enum ConfigCommand {
    /// Set a key: server, token, username, region, ca_cert (aliases apiToken, apiTokenName)
    #[command(after_help = "Examples:
  berth config set server https://berth.example.com
  berth config set ca_cert /etc/ssl/our-ca.pem")]
    Set { key: String, value: String },
    /// Print the value of a key
    #[command(after_help = "Examples:
  berth config get server")]
    Get { key: String },
    /// Remove a key
    #[command(after_help = "Examples:
  berth config unset token")]
    Unset { key: String },
    #[command(after_help = "Examples:
  berth config list")]
    /// Print every key that is set (the token masked)
    List,
}

#[derive(Subcommand)]
pub enum TokensCommand {
    /// List tokens: yours, another user's (password prompt) or the crew's (--all)
    #[command(after_help = "Examples:
  berth tokens list
  berth tokens list alice
  berth tokens list --all --json")]
    List {
        /// List this user's tokens, signing in with their password
        username: Option<String>,
        /// Crew to list
        #[arg(long, value_name = "C")]
        crew: Option<String>,
        /// Every token of the crew (admin and owner)
        #[arg(long)]
        all: bool,
        /// Read the password from standard input instead of prompting
        #[arg(long)]
        password_stdin: bool,
    },
    /// Create a token and print it once
    #[command(after_help = "Examples:
  berth tokens create \"MacBook Pro - Development\"
  berth tokens create \"CI - deploy\" --scope tunnels:share --expires-in-days 90")]
    Create(CreateTokenArgs),
    /// Revoke tokens by id or name
    #[command(after_help = "Examples:
  berth tokens revoke 17
  berth tokens revoke \"old laptop - CLI\" 18 19
  berth tokens revoke --disconnect 17")]
    Revoke {
        #[arg(required = true, value_name = "ID_OR_NAME")]
        tokens: Vec<String>,
        /// Also close the live tunnels these tokens opened (a compromised token)
        #[arg(long)]
        disconnect: bool,
    },
    /// Revoke a token by name (alias of revoke; with USERNAME, signs in with a password)
    #[command(after_help = "Examples:
  berth tokens destroy \"old laptop - CLI\"
  berth tokens destroy alice \"old laptop - CLI\"")]
    Destroy {
        /// [USERNAME] NAME
        #[arg(required = true, num_args = 1..=2, value_name = "USERNAME NAME")]
        args: Vec<String>,
        /// Read the password from standard input instead of prompting
        #[arg(long)]
        password_stdin: bool,
    },
    /// Set the redaction tier of tokens: standard, strict or inherit
    #[command(after_help = "Examples:
  berth tokens set-redaction strict 17 18")]
    SetRedaction {
        tier: String,
        #[arg(required = true, value_name = "ID_OR_NAME")]
        tokens: Vec<String>,
    },
}

#[derive(Args)]
pub struct CreateTokenArgs {
    /// Descriptive name, e.g. "Machine/Service - Project/Team/Environment"
    pub name: String,
    /// Crew the token belongs to [default: the current token's crew]
    #[arg(long, value_name = "C")]
    pub crew: Option<String>,
    /// Redaction tier of its traffic: inherit, standard or strict
    #[arg(long, value_name = "T")]
    pub redaction: Option<String>,
    /// Preferred edge region
    #[arg(long, value_name = "R")]
    pub region: Option<String>,
    /// Preferred server URL for the CLI (`share` follows it on its own only to
    /// https or the same host and port; see `share --follow-server`)
    #[arg(long, value_name = "URL")]
    pub cli_server: Option<String>,
    /// Expire after this many days
    #[arg(long, value_name = "N")]
    pub expires_in_days: Option<u32>,
    /// Limit the token to a scope (repeatable) [default: berth:*]
    #[arg(long = "scope", value_name = "S")]
    pub scopes: Vec<String>,
}

#[derive(Subcommand)]
pub enum TunnelsCommand {
    /// Live and recent tunnels of the crew, newest first
    #[command(after_help = "Examples:
  berth tunnels list
  berth tunnels list --json")]
    List,
    /// Close a live tunnel: your own (member), anyone's (admin, owner)
    #[command(after_help = "Examples:
  berth tunnels close 3f2a9c01d4e5b6a7")]
    Close {
        /// The tunnel's id, as `berth tunnels list` shows it
        id: String,
    },
}

#[derive(Subcommand)]
pub enum SubdomainsCommand {
    /// Names the crew holds: reserved, in use, or held after use (--subdomain-hold)
    #[command(after_help = "Examples:
  berth subdomains list
  berth subdomains list --json")]
    List,
    /// Reserve a name for the crew: no other crew can share on it (admin and owner)
    #[command(after_help = "Examples:
  berth subdomains reserve shop")]
    Reserve {
        /// The subdomain: 1 to 63 of a-z, 0-9 and -
        name: String,
    },
    /// Give up the crew's reservation of a name (admin and owner)
    #[command(after_help = "Examples:
  berth subdomains release shop")]
    Release {
        /// The subdomain
        name: String,
    },
}

#[derive(Subcommand)]
pub enum CrewsCommand {
    #[command(after_help = "Examples:
  berth crews list
  berth crews list --json")]
    /// Crews you belong to
    List,
    /// Members of a crew and their roles
    #[command(after_help = "Examples:
  berth crews members home
  berth crews members home --json")]
    Members { crew: String },
    /// Add a user to a crew
    #[command(after_help = "Examples:
  berth crews add-member home bob --role member")]
    AddMember {
        crew: String,
        user: String,
        /// owner, admin, member or viewer
        #[arg(long, value_name = "R")]
        role: String,
    },
    /// Change a member's role
    #[command(after_help = "Examples:
  berth crews set-role home bob admin")]
    SetRole {
        crew: String,
        user: String,
        role: String,
    },
    /// Remove a user from a crew
    #[command(after_help = "Examples:
  berth crews remove-member home bob")]
    RemoveMember { crew: String, user: String },
    /// Set the crew's default redaction tier: standard or strict (owner)
    #[command(after_help = "Examples:
  berth crews set-redaction home strict")]
    SetRedaction { crew: String, tier: String },
    /// Set one of the crew's limits on live tunnels, at most the server's (owner)
    #[command(after_help = "Examples:
  berth crews set-limit home max_tunnels_per_user 3
  berth crews set-limit home max_tcp_ports 0
  berth crews set-limit home max_tunnels server")]
    SetLimit {
        crew: String,
        /// max_tunnels_per_user, max_tunnels, max_tcp_ports_per_user or max_tcp_ports
        setting: String,
        /// A whole number, or `server` to follow the server's limit again
        value: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let global = cli.global;
    let result = match cli.command {
        Command::Server(args) => server::run(args),
        Command::Admin(cmd) => cli::admin::run(cmd),
        Command::Login(args) => cli::auth::login(&global, args),
        Command::Logout(args) => cli::auth::logout(&global, args),
        Command::Whoami => cli::auth::whoami(&global),
        Command::Passwd(args) => cli::passwd::run(&global, args),
        Command::Config(cmd) => cli::config::run(&global, cmd),
        Command::Tokens(cmd) => cli::tokens::run(&global, cmd),
        Command::Crews(cmd) => cli::crews::run(&global, cmd),
        Command::Tunnels(cmd) => cli::tunnels::run(&global, cmd),
        Command::Subdomains(cmd) => cli::subdomains::run(&global, cmd),
        Command::Traffic(args) => cli::traffic::run(&global, args),
        Command::Audit { limit } => cli::audit::run(&global, limit),
        Command::Completions { shell } => cli::completions::run(shell, Cli::command()),
        Command::Share(args) => cli::share::run(
            &global,
            cli::share::Share {
                port: args.port,
                host: args.host,
                subdomain: args.subdomain,
                region: args.region,
                tcp: args.tcp,
                remote_port: args.remote_port,
                follow_server: args.follow_server,
            },
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let message = cli::safe::shown_lines(&err.message);
            exit::write_stderr(&format!("error: {message}\n"));
            ExitCode::from(err.code)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every command and subcommand, by its path (`berth tokens list`).
    fn walk(cmd: &clap::Command, path: String, out: &mut Vec<(String, String)>) {
        let help = cmd
            .get_after_help()
            .map(|h| h.to_string())
            .unwrap_or_default();
        out.push((path.clone(), help));
        for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
            walk(sub, format!("{path} {}", sub.get_name()), out);
        }
    }

    #[test]
    fn every_command_has_help_with_examples_of_itself() {
        Cli::command().debug_assert();
        let mut commands = Vec::new();
        walk(&Cli::command(), "berth".into(), &mut commands);
        assert!(commands.len() > 30, "{}", commands.len());
        for (path, help) in commands {
            assert!(
                help.starts_with("Examples:\n  "),
                "`{path} --help` has no examples"
            );
            let own = help.lines().skip(1).any(|l| l.contains(&path));
            assert!(own, "`{path} --help` shows no example of `{path}`:\n{help}");
        }
    }
}
