//! The CLI config file (where it lives, how it is read and written) and the precedence rules.

use std::fmt;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::exit::{self, CliError};
use crate::token::{Token, FORMAT_HINT};
use crate::GlobalArgs;

/// Server used when neither flag, environment nor config names one.
pub const DEFAULT_SERVER: &str = "http://localhost:8080";

/// Keys `berth config` understands, in the order `list` shows them.
pub const VALID_KEYS: &str = "server, token, username, region, ca_cert, apiToken, apiTokenName";

/// Environment variables people reach for that berth does not read.
const WRONG_TOKEN_VARS: [&str; 2] = ["BERTH_API_TOKEN", "BERTH_AUTH_TOKEN"];

/// How the environment is seen: a function from variable name to value.
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process environment, with empty values counted as unset.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|value| !value.is_empty())
}

/// A secret string whose Debug and Display never show it.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Masked(String);

impl Masked {
    pub fn new(secret: impl Into<String>) -> Masked {
        Masked(secret.into())
    }

    /// The secret itself, for the request or the file that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Masked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MASKED")
    }
}

impl fmt::Display for Masked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MASKED")
    }
}

/// A key of the config file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Key {
    Server,
    Token,
    Username,
    Region,
    CaCert,
    ApiTokenName,
}

impl Key {
    /// Every key, in file and `list` order.
    pub const ALL: [Key; 6] = [
        Key::Server,
        Key::Token,
        Key::Username,
        Key::Region,
        Key::CaCert,
        Key::ApiTokenName,
    ];

    /// The key for a name, accepting the `apiToken` alias of `token`.
    pub fn from_name(name: &str) -> Option<Key> {
        Some(match name {
            "server" => Key::Server,
            "token" | "apiToken" => Key::Token,
            "username" => Key::Username,
            "region" => Key::Region,
            "ca_cert" => Key::CaCert,
            "apiTokenName" => Key::ApiTokenName,
            _ => return None,
        })
    }

    /// The name written to the file and shown by `list`.
    pub fn name(self) -> &'static str {
        match self {
            Key::Server => "server",
            Key::Token => "token",
            Key::Username => "username",
            Key::Region => "region",
            Key::CaCert => "ca_cert",
            Key::ApiTokenName => "apiTokenName",
        }
    }
}

/// The contents of the config file.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Config {
    pub server: Option<String>,
    pub token: Option<Masked>,
    pub username: Option<String>,
    pub region: Option<String>,
    pub ca_cert: Option<String>,
    pub api_token_name: Option<String>,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("server", &self.server)
            .field(
                "token",
                &self.token.as_ref().map(|t| mask_token(t.expose())),
            )
            .field("username", &self.username)
            .field("region", &self.region)
            .field("ca_cert", &self.ca_cert)
            .field("api_token_name", &self.api_token_name)
            .finish()
    }
}

impl Config {
    /// Read the file at `path`; a missing file is an empty config.
    pub fn load(path: &Path) -> Result<Config, CliError> {
        let text = match fs::read_to_string(path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Config::default()),
            Err(err) => {
                return Err(CliError::other(format!(
                    "could not read config file {}: {err}",
                    path.display()
                )))
            }
        };
        Config::from_json(&text)
            .map_err(|why| CliError::other(format!("Config file {} {why}", path.display())))
    }

    /// Parse the file's text; the error completes "Config file PATH ...".
    fn from_json(text: &str) -> Result<Config, String> {
        if text.trim().is_empty() {
            return Ok(Config::default());
        }
        let object: Map<String, Value> = serde_json::from_str(text).map_err(|err| {
            format!("is not a JSON object ({err}); fix it or remove it and run `berth login`")
        })?;
        let mut config = Config::default();
        // `token` wins over its alias `apiToken` whatever their order in the file.
        let mut entries: Vec<_> = object.iter().collect();
        entries.sort_by_key(|(name, _)| name.as_str() == "token");
        for (name, value) in entries {
            let key = Key::from_name(name)
                .ok_or_else(|| format!("has an unknown key `{name}`; valid keys: {VALID_KEYS}"))?;
            match value {
                Value::Null => config.set(key, None),
                Value::String(text) => config.set(key, Some(text.clone())),
                _ => return Err(format!("has a non-string value for `{name}`")),
            }
        }
        Ok(config)
    }

    /// The file's text: keys in a fixed order, unset keys left out.
    fn to_json(&self) -> String {
        let mut object = Map::new();
        for key in Key::ALL {
            if let Some(value) = self.get(key) {
                object.insert(key.name().to_string(), Value::String(value.to_string()));
            }
        }
        let mut text = serde_json::to_string_pretty(&Value::Object(object)).unwrap_or_default();
        text.push('\n');
        text
    }

    /// The value of a key, if set.
    pub fn get(&self, key: Key) -> Option<&str> {
        match key {
            Key::Server => self.server.as_deref(),
            Key::Token => self.token.as_ref().map(Masked::expose),
            Key::Username => self.username.as_deref(),
            Key::Region => self.region.as_deref(),
            Key::CaCert => self.ca_cert.as_deref(),
            Key::ApiTokenName => self.api_token_name.as_deref(),
        }
    }

    /// Set (`Some`) or remove (`None`) a key.
    pub fn set(&mut self, key: Key, value: Option<String>) {
        match key {
            Key::Server => self.server = value,
            Key::Token => self.token = value.map(Masked),
            Key::Username => self.username = value,
            Key::Region => self.region = value,
            Key::CaCert => self.ca_cert = value,
            Key::ApiTokenName => self.api_token_name = value,
        }
    }

    /// Write atomically, mode 0600: a new temp file in the same directory with a
    /// random name, created exclusively and never through a symlink, then
    /// renamed over `path`. A symlink at `path` is replaced by the file, never
    /// written through.
    pub fn save(&self, path: &Path) -> Result<(), CliError> {
        let fail = |what: &str, err: std::io::Error| {
            CliError::other(format!("could not {what} {}: {err}", path.display()))
        };
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        };
        create_private_dir(&dir).map_err(|err| fail("create the directory of", err))?;
        let file_name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("config.json");
        let suffix: u64 = rand::random();
        let temp = dir.join(format!(".{file_name}.{suffix:016x}.tmp"));
        let written = match write_new_private(&temp, self.to_json().as_bytes()) {
            // Not created: whatever is at that name is someone else's; leave it.
            Err(err) => Err(err),
            Ok(()) => fs::rename(&temp, path).inspect_err(|_| {
                let _ = fs::remove_file(&temp);
            }),
        };
        written.map_err(|err| fail("write config file", err))
    }
}

#[cfg(unix)]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

#[cfg(not(unix))]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    fs::create_dir_all(dir)
}

/// Create `path`, which must not exist yet (not even as a symlink), readable
/// by the owner only, write `bytes` and flush them to disk; a partly written
/// file is removed.
fn write_new_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // create_new already refuses an existing name, links included;
        // O_NOFOLLOW says so to the kernel too.
        options.mode(0o600).custom_flags(libc::O_NOFOLLOW);
    }
    let mut file = options.open(path)?;
    let written = file.write_all(bytes).and_then(|()| file.sync_all());
    if written.is_err() {
        let _ = fs::remove_file(path);
    }
    written
}

/// Where the config file lives: `$BERTH_CONFIG`, else the platform's config directory.
pub fn path(env: Env) -> Result<PathBuf, CliError> {
    if let Some(path) = env("BERTH_CONFIG") {
        return Ok(PathBuf::from(path));
    }
    let base = if cfg!(windows) {
        env("APPDATA").map(PathBuf::from)
    } else {
        env("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .or_else(|| env("HOME").map(|home| Path::new(&home).join(".config")))
    };
    base.map(|dir| dir.join("berth").join("config.json"))
        .ok_or_else(|| {
            CliError::other("could not find a config directory; set BERTH_CONFIG to a file path")
        })
}

/// `17|berth_k3T9...`: enough to tell tokens apart, too little to use one.
pub fn mask_token(token: &str) -> String {
    const SHOWN: usize = 4;
    match token.split_once("|berth_") {
        Some((id, secret)) => {
            let start: String = secret.chars().take(SHOWN).collect();
            format!("{id}|berth_{start}...")
        }
        None => {
            let start: String = token.chars().take(SHOWN).collect();
            format!("{start}...")
        }
    }
}

/// Where the token in use came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenSource {
    Flag,
    Env,
    Config,
}

impl TokenSource {
    fn describe(self) -> &'static str {
        match self {
            TokenSource::Flag => "--token",
            TokenSource::Env => "BERTH_TOKEN",
            TokenSource::Config => "the config file",
        }
    }
}

/// The settings a client command runs with, after precedence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub server: String,
    pub ca_cert: Option<PathBuf>,
    pub token: Option<(Masked, TokenSource)>,
    /// A token variable berth does not read but that was set (for the "No token" hint).
    pub misnamed_token_var: Option<&'static str>,
}

/// Apply the precedence rules: flag > environment > config file > default.
pub fn resolve(flags: &GlobalArgs, env: Env, config: &Config) -> Settings {
    let token = if let Some(token) = flags.token.clone().filter(|t| !t.is_empty()) {
        Some((Masked(token), TokenSource::Flag))
    } else if let Some(token) = env("BERTH_TOKEN") {
        Some((Masked(token), TokenSource::Env))
    } else {
        config
            .token
            .clone()
            .map(|token| (token, TokenSource::Config))
    };
    let misnamed_token_var = WRONG_TOKEN_VARS
        .into_iter()
        .find(|name| env(name).is_some());
    let server = flags
        .server
        .clone()
        .or_else(|| env("BERTH_SERVER"))
        .or_else(|| config.server.clone())
        .unwrap_or_else(|| DEFAULT_SERVER.to_string());
    let ca_cert = flags
        .ca_cert
        .clone()
        .or_else(|| env("BERTH_CA_CERT").map(PathBuf::from))
        .or_else(|| config.ca_cert.clone().map(PathBuf::from));
    Settings {
        server: server.trim_end_matches('/').to_string(),
        ca_cert,
        token,
        misnamed_token_var,
    }
}

impl Settings {
    /// When the config file's token is used although a misnamed variable is set,
    /// a line saying so: whoever set BERTH_API_TOKEN meant that token to be used.
    pub fn token_note(&self) -> Option<String> {
        let var = self.misnamed_token_var?;
        match &self.token {
            Some((_, TokenSource::Config)) => Some(format!(
                "note: {var} is set, but berth reads its token from BERTH_TOKEN; using the token from the config file"
            )),
            _ => None,
        }
    }

    /// The token to send, checked for shape before any request.
    pub fn require_token(&self) -> Result<Token, CliError> {
        let Some((text, source)) = &self.token else {
            let mut message =
                "No token. Run `berth login` or `berth config set token TOKEN`".to_string();
            if let Some(var) = self.misnamed_token_var {
                message.push_str(&format!(
                    " ({var} is set, but berth reads its token from BERTH_TOKEN: use BERTH_TOKEN)"
                ));
            }
            return Err(CliError::new(exit::NOT_AUTHENTICATED, message));
        };
        Token::parse(text.expose()).map_err(|_| {
            CliError::new(
                exit::NOT_AUTHENTICATED,
                format!("{FORMAT_HINT}; it came from {}", source.describe()),
            )
        })
    }
}

/// Everything a client command starts from: the file, its contents and the settings.
pub struct Session {
    pub path: PathBuf,
    pub config: Config,
    pub settings: Settings,
}

impl Session {
    /// Find and read the config file, then apply precedence to the global flags.
    pub fn load(flags: &GlobalArgs) -> Result<Session, CliError> {
        let path = path(&process_env)?;
        let config = Config::load(&path)?;
        let settings = resolve(flags, &process_env, &config);
        Ok(Session {
            path,
            config,
            settings,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const FLAG: &str = "1|berth_flag";
    const ENV: &str = "2|berth_env";
    const FILE: &str = "3|berth_file";

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn precedence_table() {
        struct Case {
            flag: bool,
            env: bool,
            file: bool,
            want: Option<(&'static str, TokenSource)>,
        }
        let cases = [
            Case {
                flag: true,
                env: true,
                file: true,
                want: Some((FLAG, TokenSource::Flag)),
            },
            Case {
                flag: false,
                env: true,
                file: true,
                want: Some((ENV, TokenSource::Env)),
            },
            Case {
                flag: false,
                env: false,
                file: true,
                want: Some((FILE, TokenSource::Config)),
            },
            Case {
                flag: true,
                env: false,
                file: false,
                want: Some((FLAG, TokenSource::Flag)),
            },
            Case {
                flag: false,
                env: true,
                file: false,
                want: Some((ENV, TokenSource::Env)),
            },
            Case {
                flag: false,
                env: false,
                file: false,
                want: None,
            },
        ];
        for (i, case) in cases.iter().enumerate() {
            let flags = GlobalArgs {
                token: case.flag.then(|| FLAG.to_string()),
                server: case.flag.then(|| "http://flag/".to_string()),
                ca_cert: case.flag.then(|| PathBuf::from("/flag.pem")),
                json: false,
            };
            let mut env = vec![];
            if case.env {
                env = vec![
                    ("BERTH_TOKEN", ENV),
                    ("BERTH_SERVER", "http://env"),
                    ("BERTH_CA_CERT", "/env.pem"),
                ];
            }
            let config = Config {
                token: case.file.then(|| Masked::new(FILE)),
                server: case.file.then(|| "http://file".to_string()),
                ca_cert: case.file.then(|| "/file.pem".to_string()),
                ..Config::default()
            };
            let got = resolve(&flags, &env_of(&env), &config);
            let got_token = got.token.as_ref().map(|(t, s)| (t.expose(), *s));
            assert_eq!(got_token, case.want, "case {i}");
            let (server, ca) = match case.want.map(|w| w.1) {
                Some(TokenSource::Flag) => ("http://flag", "/flag.pem"),
                Some(TokenSource::Env) => ("http://env", "/env.pem"),
                Some(TokenSource::Config) => ("http://file", "/file.pem"),
                None => (DEFAULT_SERVER, ""),
            };
            assert_eq!(got.server, server, "case {i}");
            let ca = (!ca.is_empty()).then(|| PathBuf::from(ca));
            assert_eq!(got.ca_cert, ca, "case {i}");
        }
    }

    #[test]
    fn missing_token_names_the_right_variable() {
        for var in WRONG_TOKEN_VARS {
            let got = resolve(
                &GlobalArgs::default(),
                &env_of(&[(var, "x")]),
                &Config::default(),
            );
            let err = got.require_token().unwrap_err();
            assert_eq!(err.code, exit::NOT_AUTHENTICATED);
            assert!(
                err.message.starts_with("No token. Run `berth login`"),
                "{}",
                err.message
            );
            assert!(err.message.contains(var) && err.message.contains("use BERTH_TOKEN"));
        }
        let plain = resolve(&GlobalArgs::default(), &env_of(&[]), &Config::default());
        let err = plain.require_token().unwrap_err();
        assert_eq!(
            err.message,
            "No token. Run `berth login` or `berth config set token TOKEN`"
        );
    }

    #[test]
    fn a_misnamed_variable_is_noted_when_the_config_token_is_used() {
        let config = Config {
            token: Some(Masked::new(FILE)),
            ..Config::default()
        };
        let wrong = env_of(&[("BERTH_API_TOKEN", "x")]);
        let note = resolve(&GlobalArgs::default(), &wrong, &config).token_note();
        assert!(note.unwrap().contains("BERTH_API_TOKEN is set"));
        let flags = GlobalArgs {
            token: Some(FLAG.to_string()),
            ..GlobalArgs::default()
        };
        assert_eq!(resolve(&flags, &wrong, &config).token_note(), None);
        let both = env_of(&[("BERTH_API_TOKEN", "x"), ("BERTH_TOKEN", ENV)]);
        assert_eq!(
            resolve(&GlobalArgs::default(), &both, &config).token_note(),
            None
        );
        let right = env_of(&[]);
        assert_eq!(
            resolve(&GlobalArgs::default(), &right, &config).token_note(),
            None
        );
    }

    #[test]
    fn malformed_token_is_refused_with_the_format_hint() {
        let got = resolve(
            &GlobalArgs::default(),
            &env_of(&[("BERTH_TOKEN", "17|nope")]),
            &Config::default(),
        );
        let err = got.require_token().unwrap_err();
        assert_eq!(err.code, exit::NOT_AUTHENTICATED);
        assert!(err.message.starts_with(FORMAT_HINT));
        assert!(err.message.contains("BERTH_TOKEN"));
    }

    #[test]
    fn config_path_order() {
        let linux = !cfg!(windows);
        let p = path(&env_of(&[
            ("BERTH_CONFIG", "/a.json"),
            ("XDG_CONFIG_HOME", "/x"),
            ("HOME", "/h"),
        ]));
        assert_eq!(p.unwrap(), PathBuf::from("/a.json"));
        if linux {
            let p = path(&env_of(&[("XDG_CONFIG_HOME", "/x"), ("HOME", "/h")])).unwrap();
            assert_eq!(p, PathBuf::from("/x/berth/config.json"));
            let p = path(&env_of(&[("HOME", "/h")])).unwrap();
            assert_eq!(p, PathBuf::from("/h/.config/berth/config.json"));
            assert!(path(&env_of(&[])).is_err());
        }
    }

    #[test]
    fn reads_the_api_token_alias_and_refuses_unknown_keys() {
        let config = Config::from_json(r#"{"apiToken":"1|berth_a","apiTokenName":"n"}"#).unwrap();
        assert_eq!(config.get(Key::Token), Some("1|berth_a"));
        assert_eq!(config.get(Key::ApiTokenName), Some("n"));
        let both = Config::from_json(r#"{"token":"1|berth_t","apiToken":"1|berth_a"}"#).unwrap();
        assert_eq!(both.get(Key::Token), Some("1|berth_t"));
        let err = Config::from_json(r#"{"server":"http://x","colour":"red"}"#).unwrap_err();
        assert!(
            err.contains("`colour`") && err.contains(VALID_KEYS),
            "{err}"
        );
        assert!(Config::from_json("[1]").is_err());
        assert!(Config::from_json(r#"{"server":3}"#).is_err());
        assert_eq!(Config::from_json("").unwrap(), Config::default());
    }

    #[cfg(unix)]
    #[test]
    fn save_never_writes_through_a_planted_symlink() {
        use std::os::unix::fs::{symlink, PermissionsExt};
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, "untouched").unwrap();
        let path = dir.path().join("config.json");
        // The name the temp file used to have, predictable from the pid.
        let old_temp = dir
            .path()
            .join(format!(".config.json.{}.tmp", std::process::id()));
        symlink(&victim, &old_temp).unwrap();
        // And the config path itself a link to the victim.
        symlink(&victim, &path).unwrap();
        let config = Config {
            server: Some("http://s".into()),
            ..Config::default()
        };
        config.save(&path).unwrap();
        assert_eq!(fs::read_to_string(&victim).unwrap(), "untouched");
        let meta = fs::symlink_metadata(&path).unwrap();
        assert!(
            meta.file_type().is_file(),
            "the link is replaced by the file"
        );
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(Config::load(&path).unwrap(), config);
        // An existing name, link or not, is never opened for writing.
        let err = write_new_private(&old_temp, b"x").unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read_to_string(&victim).unwrap(), "untouched");
    }

    #[test]
    fn save_is_private_atomic_and_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new").join("config.json");
        let config = Config {
            server: Some("http://s".into()),
            token: Some(Masked::new("5|berth_x")),
            api_token_name: Some("host - CLI".into()),
            ..Config::default()
        };
        config.save(&path).unwrap();
        assert_eq!(Config::load(&path).unwrap(), config);
        let text = fs::read_to_string(&path).unwrap();
        assert!(
            text.contains("\"token\"") && !text.contains("apiToken\""),
            "{text}"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        // Nothing but the file itself is left behind in the directory.
        let names: Vec<_> = fs::read_dir(path.parent().unwrap()).unwrap().collect();
        assert_eq!(names.len(), 1);
        assert_eq!(
            Config::load(&dir.path().join("absent.json")).unwrap(),
            Config::default()
        );
    }

    #[test]
    fn load_names_the_file_and_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        fs::write(&path, r#"{"tokn":"x"}"#).unwrap();
        let err = Config::load(&path).unwrap_err();
        assert!(err.message.contains(&path.display().to_string()));
        assert!(err.message.contains("`tokn`"));
    }

    #[test]
    fn debug_masks_the_token() {
        let config = Config {
            token: Some(Masked::new(
                "17|berth_abcdefghijklmnopqrstuvwxyz0123456789ABCD",
            )),
            ..Config::default()
        };
        let shown = format!("{config:?}");
        assert!(
            shown.contains("17|berth_abcd...") && !shown.contains("efgh"),
            "{shown}"
        );
        assert_eq!(format!("{:?}", Masked::new("pw")), "MASKED");
    }
}
