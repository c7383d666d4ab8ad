//! The data directory must be berth's alone: the server and `berth admin`
//! refuse one that another user owns or that group or others can write.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{run_with_stdin, Output, Server};

/// `berth server` on `data`, which is expected to refuse it and stop: a
/// server still running after 15 s is stopped and reported as exit code -1.
fn server_on(data: &Path) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["server", "--listen", "127.0.0.1:0", "--data"])
        .arg(data)
        .env_remove("BERTH_DATA")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `berth admin list-users` on `data`.
fn list_users(data: &Path) -> Output {
    run_with_stdin(
        &["admin", "list-users", "--data", data.to_str().unwrap()],
        &[],
        "",
    )
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A data directory with a database in it, made by a server that then stopped.
fn used_data_dir() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start_in(&data, &[]);
    server.create_user("alice", "home", "owner");
    drop(server);
    (dir, data)
}

#[test]
fn a_data_dir_others_can_write_is_refused_with_the_fix() {
    let (_dir, data) = used_data_dir();
    chmod(&data, 0o777);
    let out = server_on(&data);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr
            .contains(&format!("run `chmod 700 {}`", data.display())),
        "{}",
        out.stderr
    );
    let out = list_users(&data);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("chmod 700"), "{}", out.stderr);
    // Refused, not changed behind the operator's back.
    assert_eq!(std::fs::metadata(&data).unwrap().mode() & 0o777, 0o777);

    chmod(&data, 0o700);
    let out = list_users(&data);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("alice"), "{}", out.stdout);
}

#[test]
fn a_group_writable_database_is_refused() {
    let (_dir, data) = used_data_dir();
    let db = data.join("berth.db");
    chmod(&db, 0o660);
    let out = server_on(&data);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr
            .contains(&format!("run `chmod 600 {}`", db.display())),
        "{}",
        out.stderr
    );
    chmod(&db, 0o600);
    Server::start_in(&data, &[]);
}

#[test]
fn a_data_dir_of_another_user_is_refused() {
    let (_dir, data) = used_data_dir();
    let me = std::fs::metadata(&data).unwrap().uid();
    if me != 0 {
        eprintln!("skipped: only root can give the data directory to another user");
        return;
    }
    let chown = |owner: &str| {
        let status = Command::new("chown")
            .args(["-R", owner])
            .arg(&data)
            .status()
            .unwrap();
        assert!(status.success());
    };
    chown("65534");
    let out = server_on(&data);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("belongs to uid 65534") && out.stderr.contains("chown -R 0"),
        "{}",
        out.stderr
    );
    let out = list_users(&data);
    assert_eq!(out.code, 1, "{}", out.stderr);
    // The directory is ours again but a database file is still someone else's.
    chown("0");
    std::os::unix::fs::chown(data.join("berth.db"), Some(65534), None).unwrap();
    let out = server_on(&data);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("database file"), "{}", out.stderr);
}

/// Under `umask 002` SQLite would create the database group-writable; berth
/// makes it 0600 itself, so the next start is not refused.
#[test]
fn a_server_started_under_a_loose_umask_starts_again() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut child = Command::new("sh")
        .args(["-c", "umask 002 && exec \"$0\" \"$@\""])
        .arg(env!("CARGO_BIN_EXE_berth"))
        .args(["server", "--listen", "127.0.0.1:0", "--data"])
        .arg(&data)
        .env_remove("BERTH_DATA")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let started = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .any(|line| line.starts_with("berth listening on"));
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(started, "the server did not start");
    for name in ["berth.db", "berth.db-wal", "berth.db-shm"] {
        let path = data.join(name);
        if let Ok(meta) = std::fs::metadata(&path) {
            assert_eq!(meta.mode() & 0o777, 0o600, "{}", path.display());
        }
    }
    let server = Server::start_in(&data, &[]);
    server.create_user("alice", "home", "owner");
}
