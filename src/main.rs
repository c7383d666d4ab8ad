//! berth: command-line definitions and dispatch to one `run` per mode.
#![forbid(unsafe_code)]

mod api;
mod auth;
mod cli;
mod client;
mod config;
mod proxy;
mod relay;
mod server;
mod store;
mod time_fmt;
mod token;
mod web;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

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
  berth server --listen 127.0.0.1:9000 --data /srv/berth")]
    Server(ServerArgs),
    /// Offline maintenance on the data directory (works while the server runs)
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
    /// Read and change the CLI config file
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Create, list and revoke personal access tokens
    #[command(subcommand)]
    Tokens(TokensCommand),
    /// Crews (teams) and their members
    #[command(subcommand)]
    Crews(CrewsCommand),
    /// The crew's live and recent tunnels
    #[command(subcommand)]
    Tunnels(TunnelsCommand),
    /// Open an HTTP or TCP tunnel to a local port and print its public address
    #[command(after_help = "Examples:
  berth share 3000
  berth share 8000 --subdomain myapp
  berth share 5173 --host 127.0.0.1
  berth share 22 --tcp --remote-port 20022")]
    Share(ShareArgs),
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
    /// Public ports TCP tunnels get (`share --tcp`), FIRST-LAST
    #[arg(
        long,
        env = "BERTH_TCP_PORTS",
        value_name = "A-B",
        default_value = relay::tcp::DEFAULT_RANGE
    )]
    pub tcp_ports: relay::tcp::PortRange,
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
    ResetPassword {
        username: String,
        /// Read the password from standard input instead of prompting
        #[arg(long)]
        password_stdin: bool,
        #[command(flatten)]
        data: DataArg,
    },
    /// List users with their crews and roles
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
pub struct LogoutArgs {
    /// Also revoke the token on the server
    #[arg(long)]
    pub revoke: bool,
}

#[derive(Subcommand)]
pub enum ConfigCommand {
    /// Set a key: server, token, username, region, ca_cert (aliases apiToken, apiTokenName)
    Set { key: String, value: String },
    /// Print the value of a key
    Get { key: String },
    /// Remove a key
    Unset { key: String },
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
    /// Preferred server URL for the CLI
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
pub enum CrewsCommand {
    /// Crews you belong to
    List,
    /// Members of a crew and their roles
    Members { crew: String },
    /// Add a user to a crew
    AddMember {
        crew: String,
        user: String,
        /// owner, admin, member or viewer
        #[arg(long, value_name = "R")]
        role: String,
    },
    /// Change a member's role
    SetRole {
        crew: String,
        user: String,
        role: String,
    },
    /// Remove a user from a crew
    RemoveMember { crew: String, user: String },
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
        Command::Config(cmd) => cli::config::run(&global, cmd),
        Command::Tokens(cmd) => cli::tokens::run(&global, cmd),
        Command::Crews(cmd) => cli::crews::run(&global, cmd),
        Command::Tunnels(cmd) => cli::tunnels::run(&global, cmd),
        Command::Share(args) => cli::share::run(
            &global,
            cli::share::Share {
                port: args.port,
                host: args.host,
                subdomain: args.subdomain,
                tcp: args.tcp,
                remote_port: args.remote_port,
            },
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            cli::write_stderr(&format!("error: {}\n", err.message));
            ExitCode::from(err.code)
        }
    }
}
