//! The real `berth` binary against the real server: every CLI workflow of DESIGN §3,
//! end to end, each machine a sandboxed config file pointed at the fixture's URL.

mod common;

use std::path::Path;

use common::cli::{dead_server, valid_token, Run, Sandbox};
use common::{Server, PASSWORD};
use serde_json::Value;

/// One machine running the CLI: its own config file, pointed at `server`.
struct Machine {
    sandbox: Sandbox,
    server: String,
}

impl Machine {
    fn new(server: &Server) -> Machine {
        Machine {
            sandbox: Sandbox::new(),
            server: server.url.clone(),
        }
    }

    /// `berth ARGS` with BERTH_SERVER set and no stdin.
    fn run(&self, args: &[&str]) -> Run {
        self.run_env(args, &[])
    }

    /// `berth ARGS` with BERTH_SERVER and `env` set.
    fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut all = vec![("BERTH_SERVER", self.server.as_str())];
        all.extend_from_slice(env);
        self.sandbox.run(args, &all)
    }

    /// `berth ARGS` with BERTH_SERVER set and `stdin` piped in.
    fn run_stdin(&self, args: &[&str], stdin: &str) -> Run {
        self.sandbox
            .run_with_stdin(args, &[("BERTH_SERVER", &self.server)], Some(stdin))
    }

    /// `berth login --username USER --password-stdin [extra]`, which must succeed.
    fn login(&self, user: &str, extra: &[&str]) -> Run {
        let mut args = vec!["login", "--username", user, "--password-stdin"];
        args.extend_from_slice(extra);
        ok(self.run_stdin(&args, &format!("{PASSWORD}\n")))
    }

    /// The config file as JSON (Null when absent).
    fn config(&self) -> Value {
        serde_json::from_str(&self.sandbox.config_text()).unwrap_or(Value::Null)
    }

    /// The saved token.
    fn token(&self) -> String {
        self.config()["token"]
            .as_str()
            .expect("a saved token")
            .to_string()
    }

    /// `tokens create NAME`, which must succeed; the printed token.
    fn create_token(&self, name: &str) -> String {
        let run = ok(self.run(&["tokens", "create", name]));
        run.stdout.trim().to_string()
    }

    /// `tokens list --json` (or with more args), parsed.
    fn tokens_json(&self, extra: &[&str]) -> Vec<Value> {
        let mut args = vec!["tokens", "list", "--json"];
        args.extend_from_slice(extra);
        let run = ok(self.run(&args));
        serde_json::from_str(&run.stdout).expect("a JSON array of tokens")
    }

    /// The status of the token named `name` in `tokens list --json`.
    fn status_of(&self, name: &str) -> String {
        let tokens = self.tokens_json(&[]);
        let token = tokens
            .iter()
            .find(|t| t["name"] == name)
            .unwrap_or_else(|| panic!("no token named {name}"));
        token["status"].as_str().unwrap().to_string()
    }
}

/// The run succeeded; returns it for further checks.
#[track_caller]
fn ok(run: Run) -> Run {
    assert_eq!(
        run.code, 0,
        "stdout: {}\nstderr: {}",
        run.stdout, run.stderr
    );
    plain(&run);
    run
}

/// The run failed with `code`, saying `says` in one plain sentence on stderr.
#[track_caller]
fn fails(run: &Run, code: i32, says: &str) {
    assert_eq!(
        run.code, code,
        "stdout: {}\nstderr: {}",
        run.stdout, run.stderr
    );
    assert!(
        run.stderr.contains(says),
        "wanted {says:?} in {}",
        run.stderr
    );
    plain(run);
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line of error: {}", run.stderr);
    assert!(lines[0].starts_with("error: "), "{}", run.stderr);
}

/// Nothing on either stream looks like a panic or a Rust Debug dump.
#[track_caller]
fn plain(run: &Run) {
    for text in [&run.stdout, &run.stderr] {
        for bad in ["panicked", "Error {", "kind:", "RUST_BACKTRACE"] {
            assert!(!text.contains(bad), "{bad:?} in output: {text}");
        }
    }
}

/// `berth admin ARGS --data DIR` on a machine, password on stdin.
fn admin(machine: &Machine, data: &Path, args: &[&str], stdin: &str) -> Run {
    let mut all = args.to_vec();
    all.extend_from_slice(&["--data", data.to_str().unwrap()]);
    machine.sandbox.run_with_stdin(&all, &[], Some(stdin))
}

/// A token string as the contract shapes it.
fn is_token(text: &str) -> bool {
    let Some((id, secret)) = text.split_once("|berth_") else {
        return false;
    };
    !id.is_empty()
        && id.bytes().all(|b| b.is_ascii_digit())
        && secret.len() == 40
        && secret.bytes().all(|b| b.is_ascii_alphanumeric())
}

fn id_of(token: &str) -> &str {
    token.split_once('|').unwrap().0
}

#[test]
fn admin_creates_lists_and_resets_users_while_the_server_runs() {
    let server = Server::start();
    let machine = Machine::new(&server);
    let pw = format!("{PASSWORD}\n");
    let run = ok(admin(
        &machine,
        &server.data,
        &[
            "admin",
            "create-user",
            "alice",
            "--crew",
            "home",
            "--role",
            "owner",
            "--password-stdin",
        ],
        &pw,
    ));
    assert!(run.stdout.contains("alice"), "{}", run.stdout);
    let again = admin(
        &machine,
        &server.data,
        &["admin", "create-user", "alice", "--password-stdin"],
        &pw,
    );
    fails(&again, 6, "exists already");
    let bad_role = admin(
        &machine,
        &server.data,
        &[
            "admin",
            "create-user",
            "bob",
            "--crew",
            "home",
            "--role",
            "boss",
            "--password-stdin",
        ],
        &pw,
    );
    fails(&bad_role, 2, "not a role");

    let list = ok(admin(&machine, &server.data, &["admin", "list-users"], ""));
    let alice = list
        .stdout
        .lines()
        .find(|l| l.contains("alice"))
        .expect("alice listed");
    assert!(alice.contains("home (owner)"), "{}", list.stdout);

    // The running server sees the user at once.
    machine.login("alice", &[]);

    let run = ok(admin(
        &machine,
        &server.data,
        &["admin", "reset-password", "alice", "--password-stdin"],
        "a brand new password\n",
    ));
    assert!(run.stdout.contains("alice"));
    let old = machine.run_stdin(&["login", "--username", "alice", "--password-stdin"], &pw);
    fails(&old, 3, "Wrong username or password");
    ok(machine.run_stdin(
        &["login", "--username", "alice", "--password-stdin"],
        "a brand new password\n",
    ));
    let nobody = admin(
        &machine,
        &server.data,
        &["admin", "reset-password", "zed", "--password-stdin"],
        &pw,
    );
    fails(&nobody, 5, "No user `zed`");
}

#[test]
fn admin_commands_on_a_missing_data_dir_say_so_and_create_nothing() {
    let machine = Machine {
        sandbox: Sandbox::new(),
        server: dead_server(),
    };
    let missing = machine.sandbox.dir.path().join("no-such-data");
    let list = admin(&machine, &missing, &["admin", "list-users"], "");
    fails(&list, 1, "no-such-data");
    let reset = admin(
        &machine,
        &missing,
        &["admin", "reset-password", "alice", "--password-stdin"],
        &format!("{PASSWORD}\n"),
    );
    fails(&reset, 1, "no-such-data");
    assert!(
        !missing.exists(),
        "a typo in --data must not create a store"
    );
}

#[test]
fn login_saves_token_username_and_server_privately() {
    let server = Server::start();
    server.create_user("alice", "home", "owner");
    let machine = Machine::new(&server);
    let run = machine.login("alice", &[]);
    assert!(run.stdout.contains("Logged in as alice"), "{}", run.stdout);

    let config = machine.config();
    let first = config["token"].as_str().unwrap().to_string();
    assert!(is_token(&first), "{first}");
    assert_eq!(config["username"], "alice");
    assert_eq!(config["server"], server.url.as_str());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(machine.sandbox.config_path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    // A second login on the same machine: a new token with a distinct name.
    machine.login("alice", &[]);
    let second = machine.token();
    assert_ne!(first, second);
    let names: Vec<String> = machine
        .tokens_json(&[])
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert_ne!(names[0], names[1]);
    assert!(names.iter().all(|n| n.contains(" - CLI")), "{names:?}");

    let who = ok(machine.run(&["whoami"]));
    for line in [
        "User:    alice",
        "Crew:    home",
        "Role:    owner",
        &format!("Token:   {} ", id_of(&second)),
        &format!("Server:  {}", server.url),
    ] {
        assert!(who.stdout.contains(line), "{line:?} in {}", who.stdout);
    }
    let who = ok(machine.run(&["whoami", "--json"]));
    let me: Value = serde_json::from_str(&who.stdout).unwrap();
    assert_eq!(me["user"]["username"], "alice");
    assert_eq!(me["crew"]["name"], "home");
    assert_eq!(me["role"], "owner");
    assert_eq!(me["token"]["id"].to_string(), id_of(&second));
    assert!(!who.stdout.contains(&second[id_of(&second).len() + 1..]));
}

#[test]
fn login_picks_the_crew_and_explains_a_user_without_one() {
    let server = Server::start();
    server.create_user("alice", "home", "owner");
    server.create_user("wendy", "work", "owner");
    let wendy = Machine::new(&server);
    wendy.login("wendy", &[]);
    ok(wendy.run(&["crews", "add-member", "work", "alice", "--role", "member"]));

    let alice = Machine::new(&server);
    alice.login("alice", &["--crew", "work"]);
    let who = ok(alice.run(&["whoami"]));
    assert!(who.stdout.contains("Crew:    work"), "{}", who.stdout);
    assert!(who.stdout.contains("Role:    member"), "{}", who.stdout);
    let nope = alice.run_stdin(
        &[
            "login",
            "--username",
            "alice",
            "--password-stdin",
            "--crew",
            "nope",
        ],
        &format!("{PASSWORD}\n"),
    );
    fails(&nope, 5, "nope");

    // A user in no crew at all gets told so, not "no longer a member".
    let pw = format!("{PASSWORD}\n");
    ok(admin(
        &alice,
        &server.data,
        &["admin", "create-user", "loner", "--password-stdin"],
        &pw,
    ));
    let loner = Machine::new(&server);
    let run = loner.run_stdin(&["login", "--username", "loner", "--password-stdin"], &pw);
    fails(&run, 4, "not a member of any crew");
    assert!(!run.stderr.contains("no longer"), "{}", run.stderr);
    assert_eq!(loner.config(), Value::Null, "nothing saved");
}

#[test]
fn tokens_create_prints_the_secret_once_and_list_shows_it_without() {
    let server = Server::start();
    server.create_user("alice", "home", "owner");
    let machine = Machine::new(&server);
    machine.login("alice", &[]);

    let run = ok(machine.run(&["tokens", "create", "MacBook Pro - Development"]));
    let secret = run.stdout.trim();
    assert_eq!(run.stdout.lines().count(), 1, "{}", run.stdout);
    assert!(is_token(secret), "{secret}");
    assert!(
        run.stderr.contains("will not be shown again"),
        "{}",
        run.stderr
    );
    // The printed token works.
    let who = ok(machine.run(&["--token", secret, "whoami"]));
    assert!(who.stdout.contains("MacBook Pro - Development"));

    let dup = machine.run(&["tokens", "create", "MacBook Pro - Development"]);
    fails(&dup, 6, "MacBook Pro - Development");

    let table = ok(machine.run(&["tokens", "list"]));
    let header: Vec<&str> = table
        .stdout
        .lines()
        .next()
        .unwrap()
        .split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    assert_eq!(
        header,
        [
            "ID",
            "NAME",
            "CREW",
            "CREATED",
            "LAST USED",
            "REDACTION",
            "REGION",
            "SERVER",
            "STATUS"
        ]
    );
    let row = table
        .stdout
        .lines()
        .find(|l| l.contains("MacBook Pro - Development"))
        .expect("row of the new token");
    assert!(row.starts_with(&format!("{} ", id_of(secret))), "{row}");
    assert!(
        row.contains("home") && row.trim_end().ends_with("active"),
        "{row}"
    );
    let random = &secret[id_of(secret).len() + 7..];
    assert!(!table.stdout.contains(random), "list never shows secrets");

    let tokens = machine.tokens_json(&[]);
    let token = tokens
        .iter()
        .find(|t| t["name"] == "MacBook Pro - Development")
        .unwrap();
    assert_eq!(token["id"].to_string(), id_of(secret));
    assert_eq!(token["crew"]["name"], "home");
    assert_eq!(token["status"], "active");
    let json = ok(machine.run(&["tokens", "list", "--json"]));
    assert!(!json.stdout.contains(random));

    // With a username: Basic auth, no token needed on this machine.
    let other = Machine::new(&server);
    let run = ok(other.run_stdin(
        &["tokens", "list", "alice", "--password-stdin"],
        &format!("{PASSWORD}\n"),
    ));
    assert!(
        run.stdout.contains("MacBook Pro - Development"),
        "{}",
        run.stdout
    );
    let wrong = other.run_stdin(
        &["tokens", "list", "alice", "--password-stdin"],
        "not the password\n",
    );
    fails(&wrong, 3, "Wrong username or password");
}

#[test]
fn tokens_list_all_is_for_admins() {
    let server = Server::start();
    server.create_user("alice", "home", "owner");
    server.create_user("bob", "home", "member");
    let alice = Machine::new(&server);
    alice.login("alice", &[]);
    let bob = Machine::new(&server);
    bob.login("bob", &[]);
    bob.create_token("bob's laptop");

    let mine = alice.tokens_json(&[]);
    assert!(mine.iter().all(|t| t["user"]["username"] == "alice"));
    let all = alice.tokens_json(&["--all"]);
    assert!(all.iter().any(|t| t["name"] == "bob's laptop"), "{all:?}");
    let table = ok(alice.run(&["tokens", "list", "--all"]));
    assert!(table.stdout.contains("bob's laptop"));

    let refused = bob.run(&["tokens", "list", "--all"]);
    fails(&refused, 4, "admin or owner");
}

/// Whether text holds a character a terminal acts on or hides: controls,
/// bidi overrides, zero-width characters.
fn holds_raw_controls(text: &str) -> bool {
    text.chars().any(|c| {
        c.is_control() && c != '\n'
            || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}')
    })
}

#[test]
fn tables_escape_controls_and_bidi_characters_in_names() {
    let server = Server::start();
    server.create_user("alice", "home", "owner");
    server.create_user("bob", "home", "member");
    let alice = Machine::new(&server);
    alice.login("alice", &[]);
    let bob = Machine::new(&server);
    bob.login("bob", &[]);
    bob.create_token("placeholder");
    // A name as an older server stored it: U+202E shows "admin\u{202e}IC-" as
    // "admin-CI"; ESC starts a terminal escape sequence.
    let planted = "admin\u{202e}IC-\u{1b}[31m\u{9b}2J\u{200b}";
    let changed = server
        .db()
        .execute(
            "UPDATE tokens SET name = ?1 WHERE name = 'placeholder'",
            [planted],
        )
        .unwrap();
    assert_eq!(changed, 1);

    let table = ok(alice.run(&["tokens", "list", "--all"]));
    assert!(!holds_raw_controls(&table.stdout), "{:?}", table.stdout);
    assert!(
        table
            .stdout
            .contains("admin\\u{202e}IC-\\x1b[31m\\u{9b}2J\\u{200b}"),
        "{}",
        table.stdout
    );
    let all = alice.tokens_json(&["--all"]);
    assert!(all.iter().any(|t| t["name"] == planted), "{all:?}");
    let whoami = ok(bob.run(&["whoami"]));
    assert!(!holds_raw_controls(&whoami.stdout), "{:?}", whoami.stdout);
}

#[test]
fn revoke_destroy_and_set_redaction_by_name_and_id() {
    let server = Server::start();
    server.create_user("alice", "home", "owner");
    let machine = Machine::new(&server);
    machine.login("alice", &[]);
    let t1 = machine.create_token("t1");
    let t2 = machine.create_token("t2");
    let t3 = machine.create_token("t3");
    machine.create_token("t4");
    machine.create_token("t5");

    // Several at once, by name and by id.
    let run = ok(machine.run(&["tokens", "revoke", "t1", id_of(&t2)]));
    assert!(run.stdout.contains("Revoked token") && run.stdout.contains("\"t1\""));
    assert_eq!(run.stdout.lines().count(), 2, "{}", run.stdout);
    assert_eq!(machine.status_of("t1"), "revoked");
    assert_eq!(machine.status_of("t2"), "revoked");
    let gone = machine.run(&["--token", &t1, "whoami"]);
    fails(&gone, 3, "Invalid token");

    ok(machine.run(&["tokens", "destroy", "t3"]));
    assert_eq!(machine.status_of("t3"), "revoked");
    fails(
        &machine.run(&["--token", &t3, "whoami"]),
        3,
        "Invalid token",
    );

    // With a username, from a machine that has no token at all.
    let other = Machine::new(&server);
    ok(other.run_stdin(
        &["tokens", "destroy", "alice", "t4", "--password-stdin"],
        &format!("{PASSWORD}\n"),
    ));
    assert_eq!(machine.status_of("t4"), "revoked");

    let missing = machine.run(&["tokens", "revoke", "no such token"]);
    fails(&missing, 5, "no such token");

    let t5_id = machine
        .tokens_json(&[])
        .iter()
        .find(|t| t["name"] == "t5")
        .unwrap()["id"]
        .to_string();
    let me = machine.token();
    let run = ok(machine.run(&["tokens", "set-redaction", "strict", &t5_id, id_of(&me)]));
    assert_eq!(run.stdout.lines().count(), 2, "{}", run.stdout);
    let changed = [t5_id.as_str(), id_of(&me)];
    for token in machine.tokens_json(&[]) {
        let want = if changed.contains(&token["id"].to_string().as_str()) {
            "strict"
        } else {
            "inherit"
        };
        assert_eq!(token["redaction"], want, "{token}");
    }
    let table = ok(machine.run(&["tokens", "list"]));
    let row = table.stdout.lines().find(|l| l.contains(" t5 ")).unwrap();
    assert!(row.contains("strict"), "{row}");

    let bad = machine.run(&["tokens", "set-redaction", "loose", &t5_id]);
    fails(&bad, 2, "standard, strict or inherit");
}

#[test]
fn token_precedence_flag_then_env_then_config() {
    let server = Server::start();
    server.create_user("alice", "home", "owner");
    let machine = Machine::new(&server);
    machine.login("alice", &[]);
    let config = machine.token();
    let env = machine.create_token("from env");
    let flag = machine.create_token("from flag");

    let token_line = |run: Run| -> String {
        let run = ok(run);
        run.stdout
            .lines()
            .find(|l| l.starts_with("Token:"))
            .unwrap()
            .to_string()
    };
    let with_all =
        token_line(machine.run_env(&["--token", &flag, "whoami"], &[("BERTH_TOKEN", &env)]));
    assert!(with_all.contains("from flag"), "{with_all}");
    let env_and_config = token_line(machine.run_env(&["whoami"], &[("BERTH_TOKEN", &env)]));
    assert!(env_and_config.contains("from env"), "{env_and_config}");
    let config_only = token_line(machine.run(&["whoami"]));
    assert!(
        config_only.contains(&format!("Token:   {} ", id_of(&config))),
        "{config_only}"
    );

    // The wrong variable name: named in the "No token" error...
    let bare = Machine::new(&server);
    let run = bare.run_env(&["whoami"], &[("BERTH_API_TOKEN", &env)]);
    fails(&run, 3, "BERTH_API_TOKEN is set");
    assert!(run.stderr.contains("use BERTH_TOKEN"), "{}", run.stderr);
    let run = bare.run_env(&["whoami"], &[("BERTH_AUTH_TOKEN", &env)]);
    fails(&run, 3, "BERTH_AUTH_TOKEN is set");

    // ...and pointed out when the config file's token is used instead of it.
    let run = ok(machine.run_env(&["whoami"], &[("BERTH_API_TOKEN", &env)]));
    assert!(
        run.stdout
            .contains(&format!("Token:   {} ", id_of(&config))),
        "{}",
        run.stdout
    );
    assert!(
        run.stderr.contains("BERTH_API_TOKEN") && run.stderr.contains("BERTH_TOKEN"),
        "{}",
        run.stderr
    );
}

#[test]
fn auth_failures_exit_3_or_4_with_one_sentence() {
    let mut server = Server::start();
    server.create_user("alice", "home", "owner");
    server.create_user("bob", "home", "member");
    let alice = Machine::new(&server);
    alice.login("alice", &[]);
    let bob = Machine::new(&server);
    bob.login("bob", &[]);

    // Revoked.
    let spare = alice.create_token("spare");
    ok(alice.run(&["tokens", "revoke", "spare"]));
    let run = alice.run(&["--token", &spare, "tokens", "list"]);
    fails(&run, 3, "Invalid token");

    // Its user was removed from the crew by an owner.
    ok(alice.run(&["crews", "remove-member", "home", "bob"]));
    let run = bob.run(&["whoami"]);
    fails(&run, 4, "No team context");
    fails(&bob.run(&["tokens", "list"]), 4, "No team context");

    // Mistyped: refused before any request (nothing listens at this server).
    let mut typo = alice.token();
    typo.pop();
    let dead = dead_server();
    let run = alice.run(&["--server", &dead, "--token", &typo, "whoami"]);
    fails(&run, 3, "incomplete or mistyped (format: 1|berth_");
    let mut checksum = alice.token();
    let last = checksum.pop().unwrap();
    checksum.push(if last == 'a' { 'b' } else { 'a' });
    let run = alice.run_env(
        &["--server", &dead, "whoami"],
        &[("BERTH_TOKEN", &checksum)],
    );
    fails(&run, 3, "incomplete or mistyped");
    // Well-formed but unknown to the server.
    let unknown = valid_token(999_999, 'q');
    fails(
        &alice.run(&["--token", &unknown, "whoami"]),
        3,
        "Invalid token",
    );

    // Wrong password.
    let run = alice.run_stdin(
        &["login", "--username", "alice", "--password-stdin"],
        "wrong password\n",
    );
    fails(&run, 3, "Wrong username or password");
    let run = alice.run_stdin(
        &["login", "--username", "nobody", "--password-stdin"],
        &format!("{PASSWORD}\n"),
    );
    fails(&run, 3, "Wrong username or password");

    // Server down.
    server.kill9();
    let run = alice.run(&["whoami"]);
    fails(&run, 1, "could not reach server");
    assert!(run.stderr.contains(&server.url), "{}", run.stderr);
    let run = alice.run_stdin(
        &["login", "--username", "alice", "--password-stdin"],
        &format!("{PASSWORD}\n"),
    );
    fails(&run, 1, "could not reach server");
}

#[test]
fn crews_members_roles_and_their_errors() {
    let server = Server::start();
    server.create_user("alice", "home", "owner");
    server.create_user("bob", "home", "member");
    let pw = format!("{PASSWORD}\n");
    let alice = Machine::new(&server);
    ok(admin(
        &alice,
        &server.data,
        &["admin", "create-user", "carol", "--password-stdin"],
        &pw,
    ));
    alice.login("alice", &[]);
    let bob = Machine::new(&server);
    bob.login("bob", &[]);

    let run = ok(alice.run(&["crews", "list"]));
    assert!(
        run.stdout.lines().nth(1).unwrap().contains("home"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("owner"));
    let run = ok(alice.run(&["crews", "list", "--json"]));
    let crews: Vec<Value> = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(crews[0]["name"], "home");

    let run = ok(alice.run(&["crews", "members", "home"]));
    assert!(run.stdout.starts_with("ID"), "{}", run.stdout);
    let bob_row = run.stdout.lines().find(|l| l.contains("bob")).unwrap();
    assert!(bob_row.contains("member"), "{bob_row}");

    // A member may look but not manage.
    ok(bob.run(&["crews", "members", "home"]));
    let run = bob.run(&["crews", "add-member", "home", "carol", "--role", "viewer"]);
    fails(&run, 4, "admin or owner");
    let run = bob.run(&["crews", "set-role", "home", "alice", "viewer"]);
    fails(&run, 4, "owner");

    ok(alice.run(&["crews", "add-member", "home", "carol", "--role", "viewer"]));
    let again = alice.run(&["crews", "add-member", "home", "carol", "--role", "member"]);
    fails(&again, 6, "already a member");
    let unknown = alice.run(&["crews", "add-member", "home", "zed", "--role", "member"]);
    fails(&unknown, 5, "zed");
    let bad_role = alice.run(&["crews", "add-member", "home", "zed", "--role", "boss"]);
    fails(&bad_role, 2, "owner, admin, member or viewer");
    let no_crew = alice.run(&["crews", "members", "nope"]);
    fails(&no_crew, 5, "nope");

    // An admin manages members but not owners.
    ok(alice.run(&["crews", "set-role", "home", "bob", "admin"]));
    ok(bob.run(&["crews", "set-role", "home", "carol", "member"]));
    let run = bob.run(&["crews", "set-role", "home", "carol", "owner"]);
    fails(&run, 4, "owner role");
    let run = ok(alice.run(&["crews", "members", "home", "--json"]));
    let members: Vec<Value> = serde_json::from_str(&run.stdout).unwrap();
    let role = |name: &str| {
        members
            .iter()
            .find(|m| m["user"]["username"] == name)
            .map(|m| m["role"].as_str().unwrap().to_string())
    };
    assert_eq!(role("bob").as_deref(), Some("admin"));
    assert_eq!(role("carol").as_deref(), Some("member"));

    // The last owner stays.
    let run = alice.run(&["crews", "set-role", "home", "alice", "member"]);
    fails(&run, 6, "needs an owner");

    ok(bob.run(&["crews", "remove-member", "home", "carol"]));
    let run = alice.run(&["crews", "remove-member", "home", "carol"]);
    fails(&run, 5, "carol is not a member");
    let run = ok(alice.run(&["crews", "members", "home"]));
    assert!(!run.stdout.contains("carol"), "{}", run.stdout);
}

#[test]
fn logout_forgets_the_token_and_revoke_kills_it_on_the_server() {
    let server = Server::start();
    server.create_user("alice", "home", "owner");
    let machine = Machine::new(&server);

    machine.login("alice", &[]);
    let kept = machine.token();
    let run = ok(machine.run(&["logout"]));
    assert!(run.stdout.contains("Logged out"), "{}", run.stdout);
    let config = machine.config();
    assert!(config.get("token").is_none() && config.get("username").is_none());
    assert_eq!(config["server"], server.url.as_str(), "the server is kept");
    // Plain logout leaves the token valid on the server.
    ok(machine.run(&["--token", &kept, "whoami"]));
    let run = machine.run(&["whoami"]);
    fails(&run, 3, "No token");

    machine.login("alice", &[]);
    let revoked = machine.token();
    let run = ok(machine.run(&["logout", "--revoke"]));
    assert!(run.stdout.contains("revoked"), "{}", run.stdout);
    assert!(machine.config().get("token").is_none());
    let run = machine.run(&["--token", &revoked, "whoami"]);
    fails(&run, 3, "Invalid token");
    let (status, _) = server.call("GET", "/api/v1/me", Some(&revoked), None);
    assert_eq!(status, 401);

    // Removed from the crew: the server refuses to revoke, and logout says what to do.
    server.create_user("bob", "home", "member");
    let bob = Machine::new(&server);
    bob.login("bob", &[]);
    let bobs = bob.token();
    machine.login("alice", &[]);
    ok(machine.run(&["crews", "remove-member", "home", "bob"]));
    let run = bob.run(&["logout", "--revoke"]);
    fails(&run, 4, "No team context");
    assert!(
        run.stderr
            .contains(&format!("berth tokens revoke {}", id_of(&bobs))),
        "{}",
        run.stderr
    );
    assert_eq!(bob.token(), bobs, "still saved, as the error says");
    ok(bob.run(&["logout"]));
    ok(machine.run(&["logout", "--revoke"]));

    // Nothing saved: nothing to do, and no error.
    let run = ok(machine.run(&["logout", "--revoke"]));
    assert!(run.stdout.contains("Not logged in"), "{}", run.stdout);

    // A token revoked elsewhere still logs out cleanly.
    machine.sandbox.run(&["config", "set", "token", &kept], &[]);
    ok(machine.run(&["tokens", "revoke", id_of(&kept)]));
    let run = ok(machine.run(&["logout", "--revoke"]));
    assert!(run.stdout.contains("already revoked"), "{}", run.stdout);
}

#[test]
fn config_set_get_unset_list_drive_the_real_server() {
    let server = Server::start();
    server.create_user("alice", "home", "owner");
    let setup = Machine::new(&server);
    setup.login("alice", &[]);
    let token = setup.create_token("set by hand");

    // A machine with no environment at all: only what `config set` wrote.
    let sandbox = Sandbox::new();
    let run = |args: &[&str]| sandbox.run(args, &[]);
    ok(run(&[
        "config",
        "set",
        "server",
        &format!("{}/", server.url),
    ]));
    ok(run(&["config", "set", "token", &token]));
    ok(run(&["config", "set", "username", "alice"]));
    assert_eq!(
        ok(run(&["config", "get", "server"])).stdout.trim(),
        server.url
    );
    assert_eq!(ok(run(&["config", "get", "apiToken"])).stdout.trim(), token);
    let who = ok(run(&["whoami"]));
    assert!(who.stdout.contains("set by hand"), "{}", who.stdout);

    let list = ok(run(&["config", "list"]));
    assert!(list.stdout.contains(&format!("server = {}", server.url)));
    assert!(list.stdout.contains("username = alice"));
    assert!(list
        .stdout
        .contains(&format!("token = {}|berth_", id_of(&token))));
    assert!(!list.stdout.contains(&token[token.len() - 20..]), "masked");
    let json = ok(run(&["config", "list", "--json"]));
    let json: Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(json["username"], "alice");

    ok(run(&["config", "unset", "token"]));
    fails(&run(&["config", "get", "token"]), 1, "not set");
    fails(&run(&["whoami"]), 3, "No token");

    fails(
        &run(&["config", "set", "colour", "red"]),
        2,
        "valid keys: server, token",
    );
    fails(
        &run(&["config", "get", "colour"]),
        2,
        "Unknown config key `colour`",
    );
    fails(
        &run(&["config", "unset", "colour"]),
        2,
        "Unknown config key",
    );
    fails(
        &run(&["config", "set", "token", "17|berth_short"]),
        3,
        "incomplete or mistyped",
    );
    fails(
        &run(&["config", "set", "server", "localhost"]),
        2,
        "not a URL",
    );
}

#[test]
fn a_reader_that_stops_early_is_no_panic() {
    let server = Server::start();
    server.create_user("alice", "home", "owner");
    let machine = Machine::new(&server);
    machine.login("alice", &[]);
    // The pipe's reading end is closed before berth writes a byte.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let output = std::process::Command::new(common::BIN)
        .args(["tokens", "list", "--json"])
        .env_clear()
        .env("BERTH_CONFIG", machine.sandbox.config_path())
        .env("BERTH_SERVER", &server.url)
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(output.status.code(), Some(0), "{stderr}");
}
