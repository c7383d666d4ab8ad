//! `berth admin`: offline maintenance on the data directory, safe while the server runs.

use std::path::PathBuf;

use crate::auth;
use crate::cli::{outln, read_password};
use crate::datadir::{data_dir, open_store};
use crate::exit::{self, write_stderr, CliError, CliResult};
use crate::names::check_simple_name;
use crate::store::{NewAuditEvent, Role, Store, StoreError};
use crate::AdminCommand;

/// The store of a data directory that must already hold one: reading or changing
/// users in a mistyped `--data` should fail, not create an empty store there.
fn existing_store(flag: Option<PathBuf>) -> Result<Store, CliError> {
    let dir = data_dir(flag)?;
    // The file name `open_store` uses.
    if !dir.join("berth.db").is_file() {
        return Err(CliError::other(format!(
            "No berth data in {}; pass the server's data directory with --data DIR or BERTH_DATA.",
            dir.display()
        )));
    }
    open_store(&dir)
}

/// Record an offline change in every crew of the user. There is no signed-in
/// actor: the event says it came from `berth admin` on the server's machine.
fn audit(store: &Store, user_id: i64, action: &str, detail: String) {
    for m in store.crews().memberships_of(user_id).unwrap_or_default() {
        let event = NewAuditEvent {
            crew_id: Some(m.crew.id),
            user_id: None,
            username: None,
            token_id: None,
            action,
            detail: format!("{detail} (berth admin)"),
            address: Some("local"),
        };
        if let Err(err) = store.audit().record(&event) {
            write_stderr(&format!(
                "warning: could not record audit event {action}: {err}\n"
            ));
        }
    }
}

/// Revoke every token of a user (tokens outlive a password change by design,
/// but after a stolen password they may be the attacker's), audited per token.
fn revoke_all_tokens(store: &Store, user_id: i64, username: &str) -> CliResult {
    let ids = store
        .tokens()
        .revoke_all_for_user(user_id)
        .map_err(|e| CliError::other(format!("could not revoke the tokens: {e}")))?;
    for id in &ids {
        let event = NewAuditEvent {
            crew_id: store
                .tokens()
                .find_by_id(*id)
                .ok()
                .flatten()
                .map(|t| t.crew.id),
            user_id: None,
            username: None,
            token_id: None,
            action: "token.revoke",
            detail: format!("token {id} of {username}, with the password reset (berth admin)"),
            address: Some("local"),
        };
        if let Err(err) = store.audit().record(&event) {
            write_stderr(&format!(
                "warning: could not record audit event token.revoke: {err}\n"
            ));
        }
    }
    outln!(
        "Revoked {} token{} of {username}; their live tunnels stay open until closed (berth tunnels close).",
        ids.len(),
        if ids.len() == 1 { "" } else { "s" }
    );
    Ok(())
}

pub fn run(cmd: AdminCommand) -> CliResult {
    match cmd {
        AdminCommand::CreateUser {
            username,
            crew,
            role,
            password_stdin,
            data,
        } => {
            check_simple_name(&username, 64).map_err(|_| {
                CliError::usage(
                    "A username is 1 to 64 letters, digits, `.`, `_` or `-`, not only digits.",
                )
            })?;
            if let Some(crew) = &crew {
                check_simple_name(crew, 64).map_err(|_| {
                    CliError::usage(
                        "A crew name is 1 to 64 letters, digits, `.`, `_` or `-`, not only digits.",
                    )
                })?;
            }
            let role = Role::parse(&role).ok_or_else(|| {
                CliError::usage(format!("`{role}` is not a role; use {}.", Role::NAMES))
            })?;
            let store = open_store(&data_dir(data.data)?)?;
            let password =
                read_password(&format!("Password for {username}: "), password_stdin, true)?;
            let hash = auth::hash_password(&password).map_err(CliError::usage)?;
            let user = store
                .users()
                .create(&username, &hash, crew.as_deref().map(|c| (c, role)))
                .map_err(|err| match err {
                    StoreError::Conflict => CliError::new(
                        exit::CONFLICT,
                        format!("A user `{username}` exists already; use `berth admin reset-password {username}` to change the password."),
                    ),
                    other => CliError::other(format!("could not create the user: {other}")),
                })?;
            let detail = format!("user {username} as {}", role.as_str());
            audit(&store, user.id, "member.add", detail);
            match crew {
                Some(crew) => outln!(
                    "Created user {username} ({} of crew {crew}).",
                    role.as_str()
                ),
                None => outln!("Created user {username}."),
            }
            Ok(())
        }
        AdminCommand::ResetPassword {
            username,
            password_stdin,
            revoke_tokens,
            data,
        } => {
            let store = existing_store(data.data)?;
            let user = store
                .users()
                .find_by_name(&username)
                .map_err(|e| CliError::other(format!("could not read the database: {e}")))?
                .ok_or_else(|| {
                    CliError::new(
                        exit::NOT_FOUND,
                        format!("No user `{username}`; see `berth admin list-users`."),
                    )
                })?;
            let password = read_password(
                &format!("New password for {username}: "),
                password_stdin,
                true,
            )?;
            let hash = auth::hash_password(&password).map_err(CliError::usage)?;
            store
                .users()
                .set_password(user.id, &hash)
                .map_err(|e| CliError::other(format!("could not change the password: {e}")))?;
            audit(
                &store,
                user.id,
                "user.reset_password",
                format!("user {username}"),
            );
            outln!("Changed the password of {username}; their dashboard sessions are signed out.");
            if revoke_tokens {
                revoke_all_tokens(&store, user.id, &username)?;
            }
            Ok(())
        }
        AdminCommand::ListUsers { data } => {
            let store = existing_store(data.data)?;
            let users = store
                .users()
                .list()
                .map_err(|e| CliError::other(format!("could not read the database: {e}")))?;
            outln!("{:<6} {:<24} {:<22} CREWS", "ID", "USERNAME", "CREATED");
            for (user, crews) in users {
                let crews: Vec<String> = crews
                    .iter()
                    .map(|(c, r)| format!("{} ({})", crate::cli::safe::shown(c), r.as_str()))
                    .collect();
                outln!(
                    "{:<6} {:<24} {:<22} {}",
                    user.id,
                    crate::cli::safe::shown(&user.username),
                    user.created_at,
                    if crews.is_empty() {
                        "-".to_string()
                    } else {
                        crews.join(", ")
                    }
                );
            }
            Ok(())
        }
    }
}
