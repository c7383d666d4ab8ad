//! Unit-test fixture: an in-memory store with a user, a crew, a token and tunnels.

use super::{NewToken, NewTunnel, Redaction, Role, Store};

/// What [`store_with_tunnels`] made, by id.
pub(crate) struct Fixture {
    pub(crate) store: Store,
    pub(crate) crew_id: i64,
    pub(crate) token_id: i64,
}

/// An in-memory store where user `ana` owns crew `dock` and holds token `ci`
/// (scopes `berth:*`, redaction inherited), with one open HTTP tunnel of that
/// token per id in `tunnels`, opened in that order, each on subdomain `<id>`.
pub(crate) fn store_with_tunnels(tunnels: &[&str]) -> Fixture {
    let store = Store::open_in_memory().unwrap();
    let user = store
        .users()
        .create("ana", "x", Some(("dock", Role::Owner)))
        .unwrap();
    let crew = store.crews().find_by_name("dock").unwrap().unwrap();
    let token = store
        .tokens()
        .create(&NewToken {
            user_id: user.id,
            crew_id: crew.id,
            name: "ci",
            secret_hash: &[0; 32],
            scopes: &["berth:*".to_string()],
            redaction: Redaction::Inherit,
            region: None,
            server: None,
            expires_at: None,
        })
        .unwrap();
    for id in tunnels {
        let url = format!("http://{id}.localhost");
        store
            .tunnels()
            .open(&NewTunnel {
                id,
                crew_id: crew.id,
                user_id: user.id,
                token_id: token.id,
                kind: "http",
                subdomain: id,
                url: &url,
            })
            .unwrap();
    }
    Fixture {
        store,
        crew_id: crew.id,
        token_id: token.id,
    }
}

/// [`store_with_tunnels`] with no tunnel and a second crew, `pier`, owned by
/// user `bo`: the fixture and `pier`'s id.
pub(crate) fn store_with_two_crews() -> (Fixture, i64) {
    let fixture = store_with_tunnels(&[]);
    fixture
        .store
        .users()
        .create("bo", "x", Some(("pier", Role::Owner)))
        .unwrap();
    let pier = fixture
        .store
        .crews()
        .find_by_name("pier")
        .unwrap()
        .unwrap()
        .id;
    (fixture, pier)
}
