//! Limits on tunnels end to end: a member who loses the right to share loses
//! their live tunnels, quotas on live tunnels and TCP ports, and the pruning
//! of closed tunnels' history.

mod common;
mod relay_support;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_tcp_ports, Server};
use relay_support::{Service, Share};
use serde_json::{json, Value};

impl Share {
    fn start(server: &Server, port: u16, token: &str, extra: &[&str]) -> Share {
        let port = port.to_string();
        let mut args = vec![port.as_str(), "--host", "127.0.0.1"];
        args.extend_from_slice(extra);
        Share::spawn(&server.url, token, &args, Stdio::piped())
    }

    /// Wait for share to exit on its own; its exit code and stderr.
    fn exits(&mut self) -> (i32, String) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let mut stderr = String::new();
                let _ = self
                    .child
                    .stderr
                    .take()
                    .unwrap()
                    .read_to_string(&mut stderr);
                return (status.code().unwrap_or(-1), stderr);
            }
            assert!(Instant::now() < deadline, "share did not exit");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The status curl gets for `/` on a tunnel host.
fn public_status(server: &Server, host: &str) -> u16 {
    let out = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
        .args(["--max-time", "20", "-H", &format!("Host: {host}")])
        .arg(format!("{}/", server.url))
        .output()
        .expect("run curl");
    String::from_utf8_lossy(&out.stdout).parse().unwrap_or(0)
}

fn tunnels(server: &Server, token: &str, query: &str) -> Vec<Value> {
    let (status, body) = server.call("GET", &format!("/api/v1/tunnels{query}"), Some(token), None);
    assert_eq!(status, 200, "{body}");
    body["tunnels"].as_array().unwrap().clone()
}

/// Details of the `tunnel.close` audit events, oldest first.
fn closes_audited(server: &Server) -> Vec<String> {
    let db = server.db();
    let mut stmt = db
        .prepare("SELECT detail FROM audit WHERE action = 'tunnel.close' ORDER BY id")
        .unwrap();
    stmt.query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// A server (with `env`) with owner `alice` (an admin token) and member
/// `bob` (a share token) in crew `home`.
fn crew_with_member(env: &[(&str, &str)]) -> (Server, String, String) {
    let server = Server::start_with_env(env);
    server.create_user("alice", "home", "owner");
    server.create_user("bob", "home", "member");
    let admin = server.token_for("alice", "home", "admin");
    let bob = server.token_for("bob", "home", "share");
    (server, admin, bob)
}

/// Bob's share is up; `change` (an API call by alice) must close it for good.
fn losing_the_right_to_share_closes(change: &str, body: Option<Value>, cause: &str) {
    let (server, admin, bob) = crew_with_member(&[]);
    let service = Service::start();
    let mut share = Share::start(&server, service.port, &bob, &[]);
    assert_eq!(public_status(&server, share.authority()), 200);
    let path = format!(
        "/api/v1/crews/{}/members/{}",
        server.crew_id("home"),
        server.user_id("bob")
    );
    let (status, reply) = server.call(change, &path, Some(&admin), body.as_ref());
    assert!(status == 200 || status == 204, "{status} {reply}");

    let (code, stderr) = share.exits();
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(cause) && stderr.contains("by alice"),
        "{stderr}"
    );
    assert_eq!(public_status(&server, share.authority()), 404);
    assert!(tunnels(&server, &admin, "?active=1").is_empty());
    let all = tunnels(&server, &admin, "");
    assert_eq!(all[0]["active"], false, "{all:?}");
    let id = all[0]["id"].as_str().unwrap();
    let audited = closes_audited(&server);
    assert_eq!(audited, [format!("tunnel {id} (bob {cause})")]);
}

#[test]
fn removing_a_member_closes_their_live_tunnels() {
    losing_the_right_to_share_closes("DELETE", None, "removed from the crew");
}

#[test]
fn demoting_a_member_to_viewer_closes_their_live_tunnels() {
    losing_the_right_to_share_closes("PATCH", Some(json!({"role": "viewer"})), "made viewer");
}

#[test]
fn a_role_change_that_keeps_sharing_keeps_the_tunnels() {
    let (server, admin, bob) = crew_with_member(&[]);
    let service = Service::start();
    let share = Share::start(&server, service.port, &bob, &[]);
    let path = format!(
        "/api/v1/crews/{}/members/{}",
        server.crew_id("home"),
        server.user_id("bob")
    );
    let body = json!({"role": "admin"});
    let (status, reply) = server.call("PATCH", &path, Some(&admin), Some(&body));
    assert_eq!(status, 200, "{reply}");
    assert_eq!(public_status(&server, share.authority()), 200);
    assert_eq!(tunnels(&server, &admin, "?active=1").len(), 1);
    assert!(closes_audited(&server).is_empty());
}

/// `berth share` that is expected to be refused: its exit code and stderr
/// (-1 if it was still running after 20 s: it opened a tunnel).
fn share_refused(server: &Server, token: &str, args: &[&str]) -> (i32, String) {
    let mut all = vec!["share"];
    all.extend_from_slice(args);
    let mut child = common::berth_with_token(&server.url, token, &all)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn berth share");
    let deadline = Instant::now() + Duration::from_secs(20);
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code().unwrap_or(-1);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break -1;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    let _ = child.stderr.take().unwrap().read_to_string(&mut stderr);
    (code, stderr)
}

/// The answer to a control connection's upgrade asking for `query`.
fn connect(server: &Server, token: &str, query: &str) -> common::Reply {
    let bearer = format!("Bearer {token}");
    let headers = [
        ("Authorization", bearer.as_str()),
        ("Connection", "Upgrade"),
        ("Upgrade", "berth-relay/1"),
    ];
    server.send(
        "GET",
        &format!("/api/v1/tunnels/connect?{query}"),
        &headers,
        "",
    )
}

/// Wait until the crew has `n` live tunnels.
fn until_live(server: &Server, token: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while tunnels(server, token, "?active=1").len() != n {
        assert!(Instant::now() < deadline, "never {n} live tunnels");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_member_past_their_tunnel_limit_is_refused_until_one_closes() {
    let (server, admin, bob) = crew_with_member(&[("BERTH_MAX_TUNNELS_PER_USER", "2")]);
    let service = Service::start();
    let first = Share::start(&server, service.port, &bob, &[]);
    let _second = Share::start(&server, service.port, &bob, &[]);
    let port = service.port.to_string();
    let (code, stderr) = share_refused(&server, &bob, &[&port, "--host", "127.0.0.1"]);
    assert_eq!(code, 4, "{stderr}");
    assert!(
        stderr.contains("You have 2 live tunnels in crew `home`, and a member may have 2")
            && stderr.contains("max_tunnels_per_user")
            && stderr.contains("berth tunnels close")
            && stderr.contains("--max-tunnels-per-user"),
        "{stderr}"
    );
    let refused = connect(&server, &bob, "kind=http");
    assert_eq!(refused.status, 403, "{}", refused.text);
    assert_eq!(refused.code(), "quota_exceeded");
    // Another member has slots of their own.
    let alice = server.token_for("alice", "home", "share");
    let _hers = Share::start(&server, service.port, &alice, &[]);
    // Once one of bob's closes, he may open another.
    drop(first);
    until_live(&server, &admin, 2);
    let again = Share::start(&server, service.port, &bob, &[]);
    assert_eq!(public_status(&server, again.authority()), 200);
}

#[test]
fn a_reconnect_asking_for_its_own_name_is_a_conflict_not_a_quota() {
    let (server, _admin, bob) = crew_with_member(&[("BERTH_MAX_TUNNELS_PER_USER", "1")]);
    let service = Service::start();
    let share = Share::start(&server, service.port, &bob, &["--subdomain", "mine"]);
    assert_eq!(public_status(&server, share.authority()), 200);
    // The server has not seen the old control connection go: a share coming
    // back for its name retries (409) instead of stopping (403).
    let back = connect(&server, &bob, "kind=http&subdomain=mine");
    assert_eq!(back.status, 409, "{}", back.text);
    let other = connect(&server, &bob, "kind=http&subdomain=other");
    assert_eq!(other.status, 403, "{}", other.text);
    // And a share whose connection is cut comes back within its limit.
    let cutter = relay_support::Cutter::start(&server.addr);
    drop(share);
    let share = Share::spawn(
        &cutter.url,
        &bob,
        &[
            &service.port.to_string(),
            "--host",
            "127.0.0.1",
            "--subdomain",
            "mine",
        ],
        Stdio::inherit(),
    );
    cutter.cut();
    let deadline = Instant::now() + Duration::from_secs(15);
    while public_status(&server, share.authority()) != 200 {
        assert!(Instant::now() < deadline, "share did not come back");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn tcp_ports_have_limits_of_their_own() {
    let (first, last) = free_tcp_ports(2);
    let ports = format!("{first}-{last}");
    let (server, _admin, bob) = crew_with_member(&[
        ("BERTH_MAX_TCP_PORTS_PER_USER", "1"),
        ("BERTH_TCP_PORTS", &ports),
    ]);
    let service = Service::start();
    let _tcp = Share::start(&server, service.port, &bob, &["--tcp"]);
    let port = service.port.to_string();
    let (code, stderr) = share_refused(&server, &bob, &[&port, "--tcp"]);
    assert_eq!(code, 4, "{stderr}");
    assert!(
        stderr.contains("You have 1 live TCP tunnel in crew `home`")
            && stderr.contains("max_tcp_ports_per_user"),
        "{stderr}"
    );
    // HTTP tunnels are not ports.
    let http = Share::start(&server, service.port, &bob, &[]);
    assert_eq!(public_status(&server, http.authority()), 200);
}

#[test]
fn a_crew_owner_lowers_the_crews_limits_and_only_to_the_servers() {
    let (server, admin, bob) = crew_with_member(&[]);
    let crew = format!("/api/v1/crews/{}", server.crew_id("home"));
    // Above the server's limit, or set by a member: refused.
    let (status, body) = server.call(
        "PATCH",
        &crew,
        Some(&admin),
        Some(&json!({"max_tunnels": 51})),
    );
    assert_eq!(status, 400, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("from 0 to 50") && message.contains("--max-tunnels-per-crew"),
        "{message}"
    );
    let (status, body) = server.call("PATCH", &crew, Some(&bob), Some(&json!({"max_tunnels": 1})));
    assert_eq!(status, 403, "{body}");
    let out = common::run_with_token(
        &server.url,
        &admin,
        &["crews", "set-limit", "home", "max_tunnels", "1"],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains("Crew home now has max_tunnels 1"),
        "{}",
        out.stdout
    );
    let out = common::run_with_token(&server.url, &admin, &["crews", "list"]);
    assert!(
        out.stdout.contains("TUNNELS (USER/CREW)") && out.stdout.contains("10/1"),
        "{}",
        out.stdout
    );
    let (_, body) = server.call("GET", "/api/v1/crews", Some(&admin), None);
    assert_eq!(body["crews"][0]["max_tunnels"], 1);
    assert_eq!(body["crews"][0]["max_tunnels_per_user"], Value::Null);
    assert_eq!(body["crews"][0]["limits"]["max_tunnels_per_user"], 10);

    let service = Service::start();
    let _alices = Share::start(
        &server,
        service.port,
        &server.token_for("alice", "home", "share"),
        &[],
    );
    let port = service.port.to_string();
    let (code, stderr) = share_refused(&server, &bob, &[&port]);
    assert_eq!(code, 4, "{stderr}");
    assert!(
        stderr.contains("Crew `home` has 1 live tunnel, and may have 1")
            && stderr.contains("berth crews set-limit home max_tunnels N"),
        "{stderr}"
    );
    // Back to the server's limit.
    let out = common::run_with_token(
        &server.url,
        &admin,
        &["crews", "set-limit", "home", "max_tunnels", "server"],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let bobs = Share::start(&server, service.port, &bob, &[]);
    assert_eq!(public_status(&server, bobs.authority()), 200);
    let db = server.db();
    let updates: Vec<String> = db
        .prepare("SELECT detail FROM audit WHERE action = 'crew.update' ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(updates, ["max_tunnels=1", "max_tunnels=server"]);
}

#[test]
fn history_of_tunnels_closed_longer_ago_than_history_days_is_pruned() {
    let (server, admin, bob) = crew_with_member(&[]);
    let service = Service::start();
    let mut ids = Vec::new();
    for _ in 0..2 {
        let share = Share::start(&server, service.port, &bob, &[]);
        assert_eq!(public_status(&server, share.authority()), 200);
        ids.push(
            tunnels(&server, &admin, "?active=1")[0]["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
        drop(share);
        until_live(&server, &admin, 0);
    }
    let db = server.db();
    let records = |id: &str| -> i64 {
        db.query_row(
            "SELECT count(*) FROM requests WHERE tunnel_id = ?1",
            [id],
            |r| r.get(0),
        )
        .unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while records(&ids[0]) == 0 {
        assert!(Instant::now() < deadline, "the request was never recorded");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The first closed 31 days ago, the second 29.
    for (id, days) in [(&ids[0], 31), (&ids[1], 29)] {
        db.execute(
            "UPDATE tunnels SET closed_at = strftime('%Y-%m-%dT%H:%M:%SZ', 'now', ?2) WHERE id = ?1",
            rusqlite::params![id, format!("-{days} days")],
        )
        .unwrap();
    }
    let mut server = server;
    server.terminate();
    let restarted = Server::start_in(&server.data, &[]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while tunnels(&restarted, &admin, "").len() != 1 {
        assert!(Instant::now() < deadline, "the old tunnel was not pruned");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(tunnels(&restarted, &admin, "")[0]["id"], ids[1].as_str());
    assert_eq!(records(&ids[0]), 0);
    assert!(records(&ids[1]) > 0);
    // Days count from the setting: with 7, the second goes too.
    drop(restarted);
    let again = Server::start_in(&server.data, &["--history-days", "7"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !tunnels(&again, &admin, "").is_empty() {
        assert!(
            Instant::now() < deadline,
            "the second tunnel was not pruned"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(records(&ids[1]), 0);
}
