//! `/api/v1/crews`, members and roles, default redaction and the audit log,
//! against the real server.

mod common;

use common::{Server, PASSWORD};
use serde_json::{json, Value};

/// A crew `home` with one user per role, each with a token.
struct Crew {
    server: Server,
    id: i64,
    owner: String,
    admin: String,
    member: String,
    viewer: String,
}

fn crew() -> Crew {
    let server = Server::start();
    for role in ["owner", "admin", "member", "viewer"] {
        server.create_user(role, "home", role);
    }
    let token = |user: &str| server.token_for(user, "home", "t");
    Crew {
        id: server.crew_id("home"),
        owner: token("owner"),
        admin: token("admin"),
        member: token("member"),
        viewer: token("viewer"),
        server,
    }
}

fn code(reply: &Value) -> &str {
    reply["error"]["code"].as_str().unwrap_or("")
}

impl Crew {
    fn members_path(&self) -> String {
        format!("/api/v1/crews/{}/members", self.id)
    }

    fn member_path(&self, user: &str) -> String {
        format!("{}/{}", self.members_path(), self.server.user_id(user))
    }

    fn roles(&self) -> Vec<(String, String)> {
        let (status, reply) =
            self.server
                .call("GET", &self.members_path(), Some(&self.viewer), None);
        assert_eq!(status, 200, "{reply}");
        reply["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["user"]["username"].as_str().unwrap().to_string(),
                    m["role"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    fn set_role(&self, token: &str, user: &str, role: &str) -> (u16, Value) {
        self.server.call(
            "PATCH",
            &self.member_path(user),
            Some(token),
            Some(&json!({"role": role})),
        )
    }

    fn add(&self, token: &str, user: &str, role: &str) -> (u16, Value) {
        self.server.call(
            "POST",
            &self.members_path(),
            Some(token),
            Some(&json!({"username": user, "role": role})),
        )
    }
}

#[test]
fn crews_list_shows_the_callers_crews_and_role() {
    let c = crew();
    c.server.create_user("carol", "work", "owner");
    let carol = c.server.token_for("carol", "work", "t");
    let work = c.server.crew_id("work");
    let (status, _) = c.server.call(
        "POST",
        &format!("/api/v1/crews/{work}/members"),
        Some(&carol),
        Some(&json!({"username": "admin", "role": "member"})),
    );
    assert_eq!(status, 201);
    let (status, reply) = c.server.call("GET", "/api/v1/crews", Some(&c.admin), None);
    assert_eq!(status, 200);
    // A token sees only its own crew, even when its user is in more.
    assert_eq!(reply["crews"].as_array().unwrap().len(), 1, "{reply}");
    assert_eq!(reply["crews"][0]["name"], "home");
    assert_eq!(reply["crews"][0]["role"], "admin");
    assert_eq!(reply["crews"][0]["default_redaction"], "standard");
    // A session sees every crew of its user, each with the role there.
    let body = json!({"username": "admin", "password": PASSWORD}).to_string();
    let signed = c.server.send(
        "POST",
        "/api/v1/session",
        &[("Content-Type", "application/json")],
        &body,
    );
    let cookie = signed.header("Set-Cookie").unwrap();
    let cookie = cookie.split(';').next().unwrap();
    let reply = c
        .server
        .send("GET", "/api/v1/crews", &[("Cookie", cookie)], "");
    let crews: Vec<(Value, Value)> = reply.json()["crews"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["name"].clone(), c["role"].clone()))
        .collect();
    assert_eq!(
        crews,
        [
            (json!("home"), json!("admin")),
            (json!("work"), json!("member"))
        ]
    );
}

#[test]
fn everyone_sees_the_members_and_their_roles() {
    let c = crew();
    assert_eq!(
        c.roles(),
        [
            ("admin".to_string(), "admin".to_string()),
            ("member".into(), "member".into()),
            ("owner".into(), "owner".into()),
            ("viewer".into(), "viewer".into()),
        ]
    );
    c.server.create_user("stranger", "elsewhere", "owner");
    let stranger = c.server.token_for("stranger", "elsewhere", "t");
    let (status, reply) = c
        .server
        .call("GET", &c.members_path(), Some(&stranger), None);
    assert_eq!(status, 403, "a token names only its own crew: {reply}");
    let (status, _) = c
        .server
        .call("GET", "/api/v1/crews/424242/members", Some(&c.owner), None);
    assert_eq!(status, 403);
}

#[test]
fn admins_manage_members_but_not_owners() {
    let c = crew();
    c.server.create_user("newbie", "other", "owner");
    c.server.create_user("newowner", "other2", "owner");
    // Below admin: no.
    for token in [&c.member, &c.viewer] {
        let (status, reply) = c.add(token, "newbie", "viewer");
        assert_eq!((status, code(&reply)), (403, "forbidden"), "{reply}");
        let (status, _) = c.set_role(token, "viewer", "member");
        assert_eq!(status, 403);
    }
    // Admin: add, change and remove members.
    let (status, reply) = c.add(&c.admin, "newbie", "viewer");
    assert_eq!(status, 201, "{reply}");
    assert_eq!(reply["role"], "viewer");
    assert_eq!(reply["user"]["username"], "newbie");
    let (status, reply) = c.add(&c.admin, "newbie", "member");
    assert_eq!((status, code(&reply)), (409, "conflict"), "{reply}");
    let (status, reply) = c.set_role(&c.admin, "newbie", "admin");
    assert_eq!((status, &reply["role"]), (200, &json!("admin")));
    // ... but never owners: not adding, promoting, demoting or removing one.
    let (status, reply) = c.add(&c.admin, "newowner", "owner");
    assert_eq!((status, code(&reply)), (403, "forbidden"), "{reply}");
    let (status, _) = c.set_role(&c.admin, "member", "owner");
    assert_eq!(status, 403);
    let (status, _) = c.set_role(&c.admin, "owner", "member");
    assert_eq!(status, 403);
    let (status, _) = c
        .server
        .call("DELETE", &c.member_path("owner"), Some(&c.admin), None);
    assert_eq!(status, 403);
    let (status, _) = c
        .server
        .call("DELETE", &c.member_path("newbie"), Some(&c.admin), None);
    assert_eq!(status, 204);
    assert!(!c.roles().iter().any(|(u, _)| u == "newbie"));
    // The owner may do all of it.
    let (status, reply) = c.add(&c.owner, "newowner", "owner");
    assert_eq!(status, 201, "{reply}");
    let (status, _) = c.set_role(&c.owner, "admin", "owner");
    assert_eq!(status, 200);
    // Bad input names the field.
    for (body, field) in [
        (json!({"username": "newbie"}), "role"),
        (json!({"username": "newbie", "role": "king"}), "role"),
        (json!({"role": "viewer"}), "username"),
        (json!({"username": 7, "role": "viewer"}), "username"),
        (json!({"username": "newbie", "role": "viewer", "x": 1}), "x"),
    ] {
        let (status, reply) = c
            .server
            .call("POST", &c.members_path(), Some(&c.owner), Some(&body));
        assert_eq!(status, 400, "{body}");
        assert!(
            reply["error"]["message"]
                .as_str()
                .unwrap()
                .contains(&format!("`{field}`")),
            "{reply}"
        );
    }
    let (status, reply) = c.add(&c.owner, "ghost", "viewer");
    assert_eq!((status, code(&reply)), (404, "not_found"), "{reply}");
    let (status, _) = c.server.call(
        "PATCH",
        &format!("{}/424242", c.members_path()),
        Some(&c.owner),
        Some(&json!({"role": "viewer"})),
    );
    assert_eq!(status, 404);
}

#[test]
fn the_last_owner_cannot_be_demoted_or_removed() {
    let c = crew();
    let (status, reply) = c.set_role(&c.owner, "owner", "admin");
    assert_eq!((status, code(&reply)), (409, "conflict"), "{reply}");
    let (status, reply) = c
        .server
        .call("DELETE", &c.member_path("owner"), Some(&c.owner), None);
    assert_eq!((status, code(&reply)), (409, "conflict"), "{reply}");
    assert!(c.roles().contains(&("owner".into(), "owner".into())));
    // With a second owner, the first may step down.
    assert_eq!(c.set_role(&c.owner, "admin", "owner").0, 200);
    let (status, reply) = c.set_role(&c.owner, "owner", "member");
    assert_eq!(status, 200, "{reply}");
    // Now the former admin is the last owner.
    let (status, _) = c.set_role(&c.admin, "admin", "viewer");
    assert_eq!(status, 409);
}

#[test]
fn members_may_leave_and_their_tokens_lose_team_context() {
    let c = crew();
    let (status, _) = c
        .server
        .call("DELETE", &c.member_path("viewer"), Some(&c.member), None);
    assert_eq!(status, 403, "a member cannot remove another");
    let (status, _) = c
        .server
        .call("DELETE", &c.member_path("member"), Some(&c.member), None);
    assert_eq!(status, 204, "but may leave");
    let (status, reply) = c.server.call("GET", "/api/v1/me", Some(&c.member), None);
    assert_eq!((status, code(&reply)), (403, "no_team_context"));
}

#[test]
fn narrow_scopes_cannot_manage_the_crew() {
    let c = crew();
    let (_, narrow) = c.server.call(
        "POST",
        "/api/v1/tokens",
        Some(&c.owner),
        Some(&json!({"name": "ci", "scopes": ["tokens:write"]})),
    );
    let narrow = narrow["secret"].as_str().unwrap().to_string();
    c.server.create_user("newbie", "other", "owner");
    let (status, _) = c.add(&narrow, "newbie", "viewer");
    assert_eq!(status, 403);
    let (status, _) = c.set_role(&narrow, "viewer", "member");
    assert_eq!(status, 403);
    let (status, _) = c.server.call(
        "PATCH",
        &format!("/api/v1/crews/{}", c.id),
        Some(&narrow),
        Some(&json!({"default_redaction": "strict"})),
    );
    assert_eq!(status, 403);
    let (status, _) = c.server.call("GET", "/api/v1/audit", Some(&narrow), None);
    assert_eq!(status, 403);
    // Not even leaving: a CI token must not take its user out of the crew.
    let (_, narrow_member) = c.server.call(
        "POST",
        "/api/v1/tokens",
        Some(&c.member),
        Some(&json!({"name": "ci", "scopes": ["tokens:read"]})),
    );
    let narrow_member = narrow_member["secret"].as_str().unwrap().to_string();
    let (status, reply) = c.server.call(
        "DELETE",
        &c.member_path("member"),
        Some(&narrow_member),
        None,
    );
    assert_eq!((status, code(&reply)), (403, "forbidden"), "{reply}");
    assert!(c.roles().contains(&("member".into(), "member".into())));
    // With crew:admin, the owner's token may.
    let (_, admin_scope) = c.server.call(
        "POST",
        "/api/v1/tokens",
        Some(&c.owner),
        Some(&json!({"name": "crew admin", "scopes": ["crew:admin"]})),
    );
    let admin_scope = admin_scope["secret"].as_str().unwrap().to_string();
    assert_eq!(c.add(&admin_scope, "newbie", "viewer").0, 201);
}

#[test]
fn only_owners_change_the_default_redaction() {
    let c = crew();
    let path = format!("/api/v1/crews/{}", c.id);
    let strict = json!({"default_redaction": "strict"});
    for token in [&c.admin, &c.member, &c.viewer] {
        let (status, reply) = c.server.call("PATCH", &path, Some(token), Some(&strict));
        assert_eq!((status, code(&reply)), (403, "forbidden"), "{reply}");
    }
    let (status, reply) = c.server.call("PATCH", &path, Some(&c.owner), Some(&strict));
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["default_redaction"], "strict");
    // Tokens that inherit follow the crew.
    let (_, me) = c.server.call("GET", "/api/v1/me", Some(&c.member), None);
    assert_eq!(me["token"]["redaction"], "inherit");
    assert_eq!(me["token"]["effective_redaction"], "strict");
    for bad in [
        json!({"default_redaction": "inherit"}),
        json!({"default_redaction": 1}),
        json!({}),
        json!({"name": "x", "default_redaction": "strict"}),
    ] {
        let (status, reply) = c.server.call("PATCH", &path, Some(&c.owner), Some(&bad));
        assert_eq!(status, 400, "{bad}: {reply}");
    }
}

#[test]
fn the_audit_log_is_for_admins_and_owners() {
    let c = crew();
    c.server.create_user("newbie", "other", "owner");
    c.add(&c.admin, "newbie", "viewer");
    c.set_role(&c.owner, "newbie", "member");
    c.server.call(
        "DELETE",
        &format!("/api/v1/tokens/{}", c.viewer.split('|').next().unwrap()),
        Some(&c.owner),
        None,
    );
    for token in [&c.member, &c.viewer] {
        let (status, _) = c.server.call("GET", "/api/v1/audit", Some(token), None);
        assert!(matches!(status, 401 | 403), "{status}");
    }
    let (status, reply) = c.server.call("GET", "/api/v1/audit", Some(&c.admin), None);
    assert_eq!(status, 200, "{reply}");
    let events = reply["events"].as_array().unwrap();
    let actions: Vec<&str> = events
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        &actions[..3],
        ["token.revoke", "member.set_role", "member.add"],
        "newest first"
    );
    let add = &events[2];
    assert_eq!(add["username"], "admin");
    assert_eq!(add["detail"], "newbie as viewer");
    assert_eq!(add["address"], "127.0.0.1");
    assert!(add["token_id"].as_i64().is_some());
    assert!(actions.iter().filter(|a| **a == "token.create").count() >= 4);
    let (_, reply) = c
        .server
        .call("GET", "/api/v1/audit?limit=2", Some(&c.owner), None);
    assert_eq!(reply["events"].as_array().unwrap().len(), 2);
    for limit in ["0", "-1", "1001", "x", ""] {
        let (status, _) = c.server.call(
            "GET",
            &format!("/api/v1/audit?limit={limit}"),
            Some(&c.owner),
            None,
        );
        assert_eq!(status, 400, "limit={limit}");
    }
    // Another crew's events stay there.
    c.server.create_user("carol", "work", "owner");
    let carol = c.server.token_for("carol", "work", "t");
    let (_, reply) = c.server.call("GET", "/api/v1/audit", Some(&carol), None);
    assert!(reply["events"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["crew_id"] != json!(c.id)));
    // A session picks the crew with ?crew=.
    let body = json!({"username": "owner", "password": PASSWORD}).to_string();
    let signed = c.server.send(
        "POST",
        "/api/v1/session",
        &[("Content-Type", "application/json")],
        &body,
    );
    let cookie = signed.header("Set-Cookie").unwrap();
    let cookie = cookie.split(';').next().unwrap();
    let reply = c
        .server
        .send("GET", "/api/v1/audit?crew=home", &[("Cookie", cookie)], "");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["events"][0]["action"], "session.create");
}
