//! Limits on tunnels end to end: a member who loses the right to share loses
//! their live tunnels, quotas on live tunnels and TCP ports, and the pruning
//! of closed tunnels' history.

mod common;
mod relay_support;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Server;
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
