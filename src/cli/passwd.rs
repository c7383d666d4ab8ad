//! `berth passwd`: change your own password, optionally revoking every token.

use serde_json::json;

use crate::auth;
use crate::cli::{outln, read_password};
use crate::client::Client;
use crate::config::Session;
use crate::exit::{CliError, CliResult};
use crate::{GlobalArgs, PasswdArgs};

pub fn run(global: &GlobalArgs, args: PasswdArgs) -> CliResult {
    let session = Session::load(global)?;
    let client = Client::with_token(&session.settings)?;
    // With --password-stdin: the current password on the first line, the new one on the second.
    let current = read_password("Current password: ", args.password_stdin, false)?;
    let new = read_password("New password: ", args.password_stdin, true)?;
    auth::check_password_length(&new).map_err(CliError::usage)?;
    let body = json!({
        "current_password": current,
        "new_password": new,
        "revoke_tokens": args.revoke_tokens,
    });
    let reply = client.post("/api/v1/me/password", &body)?;
    outln!("Changed your password; your dashboard sessions are signed out.");
    if args.revoke_tokens {
        let n = reply["tokens_revoked"].as_u64().unwrap_or(0);
        outln!(
            "Revoked {n} token{}, this one included: run `berth login` to sign in again. Their live tunnels stay open until closed (berth tunnels close).",
            if n == 1 { "" } else { "s" }
        );
    }
    Ok(())
}
