//! Streamed responses through a tunnel reach the visitor as the service sends
//! them: server-sent events, a body read until close, a body of known length,
//! and a stream that goes quiet for a while.
//! The real server, `berth share`, a paced local service and a plain TCP visitor.

mod common;
mod relay_support;

use std::io::Write;
use std::net::TcpStream;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::Server;
use relay_support::paced::{event, Paced, EVENTS, PAUSE, VISITOR_WAIT};
use relay_support::Share;
use serde_json::Value;

/// Generous bound for the inspector's record to reach the database (a
/// background thread writes it).
const RECORDED_WITHIN: Duration = Duration::from_secs(20);

/// A server with owner `alice` in crew `home`, the paced service shared at
/// `stream.localhost`; the token too.
fn setup() -> (Server, Paced, Share, String) {
    let server = Server::start();
    server.create_user("alice", "home", "owner");
    let token = server.token_for("alice", "home", "share");
    let paced = Paced::start();
    let port = paced.port.to_string();
    let args = [&port, "--host", "127.0.0.1", "--subdomain", "stream"];
    let share = Share::spawn(&server.url, &token, &args, Stdio::inherit());
    (server, paced, share, token)
}

/// GET `path` through the tunnel as a plain TCP visitor, following the
/// service's events; the raw response, after checking the service saw each
/// event reach the visitor before it sent the next.
fn get_paced(server: &Server, paced: &Paced, share: &Share, path: &str) -> String {
    let mut visitor = TcpStream::connect(&server.addr).unwrap();
    visitor.set_read_timeout(Some(VISITOR_WAIT)).unwrap();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\nConnection: close\r\n\r\n",
        share.authority()
    );
    visitor.write_all(request.as_bytes()).unwrap();
    let watched = paced.watch(&mut visitor);
    // The service's word first: it names the event that was held back.
    paced.outcome().unwrap();
    let raw = watched.unwrap();
    let text = String::from_utf8(raw).unwrap();
    assert!(text.starts_with("HTTP/1.1 200 "), "{text}");
    text
}

/// The body after the head, every event in order.
fn body_has_every_event(text: &str) -> &str {
    let (_, body) = text.split_once("\r\n\r\n").unwrap();
    let mut rest = body;
    for i in 0..EVENTS {
        let at = rest
            .find(&event(i))
            .unwrap_or_else(|| panic!("event {i} in order: {body:?}"));
        rest = &rest[at..];
    }
    body
}

/// The live tunnel's id, then its records once at least one is stored.
fn records(server: &Server, token: &str) -> Vec<Value> {
    let (status, body) = server.call("GET", "/api/v1/tunnels?active=1", Some(token), None);
    assert_eq!(status, 200, "{body}");
    let tunnel = body["tunnels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["subdomain"] == "stream")
        .map(|t| t["id"].as_str().unwrap().to_string())
        .expect("the tunnel is listed");
    let path = format!("/api/v1/tunnels/{tunnel}/requests");
    let deadline = Instant::now() + RECORDED_WITHIN;
    loop {
        let (status, body) = server.call("GET", &path, Some(token), None);
        assert_eq!(status, 200, "{body}");
        let list = body["requests"].as_array().unwrap().clone();
        if !list.is_empty() {
            return list;
        }
        assert!(Instant::now() < deadline, "the exchange was never recorded");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn server_sent_events_reach_the_visitor_as_they_are_sent() {
    let (server, paced, share, token) = setup();
    let text = get_paced(&server, &paced, &share, "/events");
    let (head, _) = text.split_once("\r\n\r\n").unwrap();
    let head = head.to_ascii_lowercase();
    assert!(head.contains("content-type: text/event-stream"), "{head}");
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    let body = body_has_every_event(&text);
    assert!(body.ends_with("\r\n0\r\n\r\n"), "the chunked end: {body:?}");
    // The inspector still records the exchange, once the stream ended.
    let list = records(&server, &token);
    let record = &list[0];
    assert_eq!(record["path"], "/events");
    assert_eq!(record["status"], 200);
    let content_type = record["response_headers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|pair| {
            pair[0]
                .as_str()
                .unwrap()
                .eq_ignore_ascii_case("content-type")
        })
        .map(|pair| pair[1].clone());
    assert_eq!(content_type, Some(Value::from("text/event-stream")));
    assert!(record["bytes_out"].as_u64().unwrap() > 0, "{record}");
    assert!(share.next_line().starts_with("GET /events 200 "));
}

#[test]
fn a_body_read_until_close_reaches_the_visitor_as_it_is_sent() {
    let (server, paced, share, _) = setup();
    let text = get_paced(&server, &paced, &share, "/until-close");
    let (head, _) = text.split_once("\r\n\r\n").unwrap();
    let head = head.to_ascii_lowercase();
    assert!(!head.contains("content-length"), "{head}");
    assert!(!head.contains("transfer-encoding"), "{head}");
    let body = body_has_every_event(&text);
    let whole: String = (0..EVENTS).map(event).collect();
    assert_eq!(body, whole);
}

#[test]
fn a_body_of_known_length_reaches_the_visitor_as_it_is_sent() {
    let (server, paced, share, _) = setup();
    let text = get_paced(&server, &paced, &share, "/length");
    let whole: String = (0..EVENTS).map(event).collect();
    let head = text.split_once("\r\n\r\n").unwrap().0.to_ascii_lowercase();
    assert!(
        head.contains(&format!("content-length: {}", whole.len())),
        "{head}"
    );
    assert_eq!(body_has_every_event(&text), whole);
}

#[test]
fn a_stream_quiet_for_longer_than_a_head_may_take_is_not_cut() {
    let (server, paced, share, _) = setup();
    let started = Instant::now();
    let text = get_paced(&server, &paced, &share, "/paused-events");
    assert!(started.elapsed() >= PAUSE);
    let body = body_has_every_event(&text);
    assert!(body.ends_with("\r\n0\r\n\r\n"), "the chunked end: {body:?}");
}
