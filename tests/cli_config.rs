//! The CLI without a server: config file commands, token precedence, and early failures.

#[path = "common/cli.rs"]
mod cli;

use cli::{dead_server, valid_token, Sandbox};

const FORMAT_SENTENCE: &str = "This token is incomplete or mistyped (format: 1|berth_";
const VALID_KEYS: &str =
    "valid keys: server, token, username, region, ca_cert, apiToken, apiTokenName";

#[test]
fn set_get_unset_list_round_trip() {
    let sb = Sandbox::new();
    let token = valid_token(17, 'a');
    for (key, value) in [
        ("server", "http://berth.lan:8080"),
        ("token", token.as_str()),
        ("username", "alice"),
        ("region", "eu"),
        ("apiTokenName", "host - CLI"),
    ] {
        let run = sb.run(&["config", "set", key, value], &[]);
        assert_eq!(run.code, 0, "{run:?}");
    }
    let get = sb.run(&["config", "get", "token"], &[]);
    assert_eq!(
        get.stdout,
        format!("{token}\n"),
        "get prints the token whole"
    );
    assert_eq!(
        sb.run(&["config", "get", "apiToken"], &[]).stdout,
        format!("{token}\n")
    );

    let list = sb.run(&["config", "list"], &[]);
    assert_eq!(
        list.stdout,
        "server = http://berth.lan:8080\ntoken = 17|berth_aaaa...\nusername = alice\nregion = eu\napiTokenName = host - CLI\n"
    );
    let json = sb.run(&["config", "list", "--json"], &[]);
    let listed: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(listed["token"], "17|berth_aaaa...");

    assert_eq!(sb.run(&["config", "unset", "region"], &[]).code, 0);
    let missing = sb.run(&["config", "get", "region"], &[]);
    assert_eq!(missing.code, 1);
    assert!(
        missing.stderr.contains("`region` is not set"),
        "{missing:?}"
    );
    assert!(!sb.run(&["config", "list"], &[]).stdout.contains("region"));
}

#[test]
fn api_token_alias_is_stored_as_token() {
    let sb = Sandbox::new();
    let token = valid_token(3, 'b');
    assert_eq!(sb.run(&["config", "set", "apiToken", &token], &[]).code, 0);
    let text = sb.config_text();
    assert!(
        text.contains("\"token\"") && !text.contains("apiToken\""),
        "{text}"
    );
    // A file written by another tool with `apiToken` is read as the token.
    std::fs::write(sb.config_path(), format!(r#"{{"apiToken":"{token}"}}"#)).unwrap();
    assert_eq!(
        sb.run(&["config", "get", "token"], &[]).stdout,
        format!("{token}\n")
    );
}

#[test]
fn unknown_keys_exit_2_listing_the_valid_ones() {
    let sb = Sandbox::new();
    for args in [
        &["config", "set", "colour", "red"][..],
        &["config", "get", "colour"],
        &["config", "unset", "colour"],
    ] {
        let run = sb.run(args, &[]);
        assert_eq!(run.code, 2, "{run:?}");
        assert!(
            run.stderr.contains("Unknown config key `colour`"),
            "{run:?}"
        );
        assert!(run.stderr.contains(VALID_KEYS), "{run:?}");
    }
    assert!(!sb.config_path().exists(), "nothing written on error");
}

#[test]
fn unknown_key_in_the_file_names_file_and_key() {
    let sb = Sandbox::new();
    std::fs::create_dir_all(sb.config_path().parent().unwrap()).unwrap();
    std::fs::write(sb.config_path(), r#"{"server":"http://x","tokn":"1"}"#).unwrap();
    let run = sb.run(&["config", "list"], &[]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains(&sb.config_path().display().to_string()),
        "{run:?}"
    );
    assert!(run.stderr.contains("`tokn`"), "{run:?}");
    assert!(!run.stderr.contains("panicked"), "{run:?}");
}

#[cfg(unix)]
#[test]
fn file_is_mode_0600_in_a_created_directory() {
    use std::os::unix::fs::PermissionsExt;
    let sb = Sandbox::new();
    assert_eq!(sb.run(&["config", "set", "username", "alice"], &[]).code, 0);
    let mode = std::fs::metadata(sb.config_path())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // Rewrites keep the mode and leave no temp files next to the config.
    assert_eq!(sb.run(&["config", "set", "region", "eu"], &[]).code, 0);
    let mode = std::fs::metadata(sb.config_path())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let entries = std::fs::read_dir(sb.config_path().parent().unwrap())
        .unwrap()
        .count();
    assert_eq!(entries, 1);
}

#[test]
fn set_token_checks_the_format() {
    let sb = Sandbox::new();
    let run = sb.run(&["config", "set", "token", "17|berth_short"], &[]);
    assert_eq!(run.code, 3, "{run:?}");
    assert!(run.stderr.contains(FORMAT_SENTENCE), "{run:?}");
    assert!(!sb.config_path().exists());
}

#[test]
fn set_server_wants_a_url() {
    let sb = Sandbox::new();
    let run = sb.run(&["config", "set", "server", "localhost:8080"], &[]);
    assert_eq!(run.code, 2, "{run:?}");
}

#[test]
fn no_token_exits_3_with_what_to_do() {
    let sb = Sandbox::new();
    let run = sb.run(&["whoami"], &[]);
    assert_eq!(run.code, 3, "{run:?}");
    assert!(
        run.stderr
            .contains("No token. Run `berth login` or `berth config set token TOKEN`"),
        "{run:?}"
    );
}

#[test]
fn misnamed_token_variables_point_at_berth_token() {
    let sb = Sandbox::new();
    let token = valid_token(4, 'c');
    for var in ["BERTH_API_TOKEN", "BERTH_AUTH_TOKEN"] {
        let run = sb.run(&["whoami"], &[(var, token.as_str())]);
        assert_eq!(run.code, 3, "{run:?}");
        assert!(
            run.stderr.contains(var) && run.stderr.contains("use BERTH_TOKEN"),
            "{run:?}"
        );
    }
}

#[test]
fn malformed_token_is_refused_before_any_request() {
    let sb = Sandbox::new();
    // The server is unreachable: exit 3 (not 1) proves nothing was sent.
    let server = dead_server();
    let run = sb.run(
        &["whoami", "--server", &server, "--token", "17|berth_nope"],
        &[],
    );
    assert_eq!(run.code, 3, "{run:?}");
    assert!(run.stderr.contains(FORMAT_SENTENCE), "{run:?}");
}

#[test]
fn token_precedence_flag_then_env_then_file() {
    let sb = Sandbox::new();
    let server = dead_server();
    let good = valid_token(5, 'd');
    let bad = "5|berth_bad";

    // File holds a bad token, env a good one: env wins, so the request is attempted.
    std::fs::create_dir_all(sb.config_path().parent().unwrap()).unwrap();
    std::fs::write(sb.config_path(), format!(r#"{{"token":"{bad}"}}"#)).unwrap();
    let run = sb.run(
        &["whoami", "--server", &server],
        &[("BERTH_TOKEN", good.as_str())],
    );
    assert_eq!(run.code, 1, "env beats file: {run:?}");

    // Env bad, flag good: the flag wins.
    let run = sb.run(
        &["whoami", "--server", &server, "--token", &good],
        &[("BERTH_TOKEN", bad)],
    );
    assert_eq!(run.code, 1, "flag beats env: {run:?}");

    // Flag bad, env good: the flag is still the one used, and named.
    let run = sb.run(
        &["whoami", "--server", &server, "--token", bad],
        &[("BERTH_TOKEN", good.as_str())],
    );
    assert_eq!(run.code, 3, "{run:?}");
    assert!(run.stderr.contains("--token"), "{run:?}");

    // Only the file: its bad token is the one refused.
    let run = sb.run(&["whoami", "--server", &server], &[]);
    assert_eq!(run.code, 3, "{run:?}");
    assert!(run.stderr.contains("config file"), "{run:?}");
}

#[test]
fn server_precedence_flag_then_env_then_file() {
    let sb = Sandbox::new();
    let token = valid_token(6, 'e');
    let (flag, env, file) = (dead_server(), dead_server(), dead_server());
    std::fs::create_dir_all(sb.config_path().parent().unwrap()).unwrap();
    std::fs::write(
        sb.config_path(),
        format!(r#"{{"server":"{file}","token":"{token}"}}"#),
    )
    .unwrap();
    let run = sb.run(
        &["whoami", "--server", &flag],
        &[("BERTH_SERVER", env.as_str())],
    );
    assert!(run.stderr.contains(&flag), "{run:?}");
    let run = sb.run(&["whoami"], &[("BERTH_SERVER", env.as_str())]);
    assert!(run.stderr.contains(&env), "{run:?}");
    let run = sb.run(&["whoami"], &[]);
    assert!(run.stderr.contains(&file), "{run:?}");
}

#[test]
fn unreachable_server_exits_1_naming_it() {
    let sb = Sandbox::new();
    let server = dead_server();
    let token = valid_token(7, 'f');
    let run = sb.run(
        &["tokens", "list", "--server", &server, "--token", &token],
        &[],
    );
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(
        run.stderr.trim(),
        format!("error: could not reach server {server}: connection refused")
    );
}

#[test]
fn missing_ca_certificate_is_a_sentence() {
    let sb = Sandbox::new();
    let token = valid_token(8, 'g');
    let run = sb.run(
        &[
            "whoami",
            "--token",
            &token,
            "--ca-cert",
            "/nonexistent/ca.pem",
        ],
        &[],
    );
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr
            .contains("Could not read the CA certificate /nonexistent/ca.pem"),
        "{run:?}"
    );
}

#[test]
fn password_needed_without_a_terminal_asks_for_password_stdin() {
    let sb = Sandbox::new();
    let run = sb.run(
        &["tokens", "list", "alice", "--server", &dead_server()],
        &[],
    );
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("--password-stdin"), "{run:?}");
    let run = sb.run(&["login", "--server", &dead_server()], &[]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("--username"), "{run:?}");
}

#[test]
fn client_side_checks_are_usage_errors() {
    let sb = Sandbox::new();
    let token = valid_token(9, 'h');
    let server = dead_server();
    let base = ["--server", server.as_str(), "--token", token.as_str()];
    let tier = sb.run(
        &[&["tokens", "set-redaction", "loose", "3"][..], &base].concat(),
        &[],
    );
    assert_eq!(tier.code, 2, "{tier:?}");
    let role = sb.run(
        &[
            &["crews", "add-member", "home", "bob", "--role", "root"][..],
            &base,
        ]
        .concat(),
        &[],
    );
    assert_eq!(role.code, 2, "{role:?}");
    let create = sb.run(
        &[
            &["tokens", "create", "x", "--redaction", "loose"][..],
            &base,
        ]
        .concat(),
        &[],
    );
    assert_eq!(create.code, 2, "{create:?}");
}

#[test]
fn logout_without_a_token_says_so() {
    let sb = Sandbox::new();
    let run = sb.run(&["logout"], &[]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("Not logged in"), "{run:?}");
}

#[test]
fn server_that_is_not_a_url_is_a_usage_error() {
    let sb = Sandbox::new();
    let token = valid_token(10, 'i');
    let run = sb.run(&["whoami", "--server", "berth.lan", "--token", &token], &[]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("is not a URL"), "{run:?}");
}

/// An attacker who can write to the config directory plants links to a file
/// of the user's at the config path and at every temp name the CLI could use
/// next (the old ones were `.config.json.PID.tmp`): the file is never written.
#[cfg(target_os = "linux")]
#[test]
fn config_writes_never_follow_planted_symlinks() {
    use std::os::unix::fs::{symlink, PermissionsExt};
    let sb = Sandbox::new();
    let dir = sb.config_path().parent().unwrap().to_path_buf();
    std::fs::create_dir_all(&dir).unwrap();
    let victim = sb.dir.path().join("victim");
    // JSON, so reading the config through the link works.
    let untouched = "{\"username\": \"untouched\"}";
    std::fs::write(&victim, untouched).unwrap();
    symlink(&victim, sb.config_path()).unwrap();
    let last_pid: u32 = std::fs::read_to_string("/proc/sys/kernel/ns_last_pid")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    for pid in last_pid + 1..last_pid + 2000 {
        symlink(&victim, dir.join(format!(".config.json.{pid}.tmp"))).unwrap();
    }
    let run = sb.run(&["config", "set", "server", "http://berth.lan"], &[]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), untouched);
    let meta = std::fs::symlink_metadata(sb.config_path()).unwrap();
    assert!(meta.file_type().is_file());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert!(sb.config_text().contains("http://berth.lan"));
}
