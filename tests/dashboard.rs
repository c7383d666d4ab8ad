//! The web dashboard end to end in Debian's headless chromium: `tests/dashboard/e2e.mjs`
//! (playwright-core) drives a real server from setup to sign-out.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Server, BIN};

/// Where Debian installs chromium; `BERTH_CHROMIUM` points elsewhere.
const DEFAULT_CHROMIUM: &str = "/usr/bin/chromium";

fn e2e_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/dashboard")
}

/// The chromium to drive, or a failure that says how to get one.
fn chromium() -> String {
    let path = std::env::var("BERTH_CHROMIUM").unwrap_or_else(|_| DEFAULT_CHROMIUM.to_string());
    assert!(
        Path::new(&path).exists(),
        "The dashboard test needs Debian's chromium at {path}: install it with `apt-get install chromium` (or set BERTH_CHROMIUM)."
    );
    path
}

/// playwright-core from the committed lock file, installed on first use.
fn ensure_node_modules() {
    let dir = e2e_dir();
    if dir.join("node_modules/playwright-core").exists() {
        return;
    }
    let status = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(&dir)
        .status()
        .expect("The dashboard test needs node and npm: install them with `apt-get install nodejs npm`.");
    assert!(status.success(), "`npm ci` in tests/dashboard failed");
}

/// `/` serves the dashboard shell and its modules under the strict CSP, without chromium.
#[test]
fn the_dashboard_is_served_at_the_root_under_the_csp() {
    let server = Server::start();
    let page = server.send("GET", "/", &[], "");
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type").as_deref(),
        Some("text/html; charset=utf-8")
    );
    let csp = page.header("content-security-policy").unwrap_or_default();
    assert!(csp.contains("script-src 'self'") && csp.contains("default-src 'none'"));
    assert!(page
        .text
        .contains(r#"<script type="module" src="/assets/app.js">"#));
    for module in ["app.js", "dom.js", "tokens.js", "tunnels.js", "crew.js"] {
        let asset = server.send("GET", &format!("/assets/{module}"), &[], "");
        assert_eq!(asset.status, 200, "{module}");
        assert_eq!(
            asset.header("content-type").as_deref(),
            Some("text/javascript; charset=utf-8")
        );
    }
    assert_eq!(server.send("POST", "/", &[], "").status, 405);
}

/// The pure helpers of `web/dom.js` (relative times, error placement) in node.
#[test]
fn dashboard_helpers() {
    let out = Command::new("node")
        .arg(e2e_dir().join("unit.mjs"))
        .output()
        .expect("The dashboard tests need node: install it with `apt-get install nodejs`.");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn dashboard_from_setup_to_sign_out_in_chromium() {
    let chromium = chromium();
    ensure_node_modules();
    let server = Server::start();
    let code = server
        .setup_code
        .clone()
        .expect("a fresh server prints a setup code");
    let mut node = Command::new("node");
    node.arg(e2e_dir().join("e2e.mjs"))
        .current_dir(e2e_dir())
        .env("BERTH_URL", &server.url)
        .env("BERTH_SETUP_CODE", &code)
        .env("BERTH_BIN", BIN)
        .env("BERTH_DATA_DIR", &server.data)
        .env("BERTH_CHROMIUM", &chromium);
    let out = node.output().expect("run node tests/dashboard/e2e.mjs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.lines().last() == Some("ok"),
        "the browser flow failed:\n{stdout}\n{stderr}"
    );

    assert_what_the_clicks_did(&server);
}

/// What the browser's clicks did, read back from the server's own records.
fn assert_what_the_clicks_did(server: &Server) {
    let db = server.db();
    let statuses: Vec<(String, String, Option<String>)> = db
        .prepare("SELECT name, redaction, revoked_at FROM tokens ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let names: Vec<&str> = statuses.iter().map(|(n, _, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "Laptop - berth - dev",
            "CI - deploy - prod",
            "CI - build - staging",
            "Old box - scratch",
            "bob - before the change"
        ]
    );
    assert!(
        statuses.iter().all(|(_, _, revoked)| revoked.is_some()),
        "every token was revoked in the browser: {statuses:?}"
    );
    assert_eq!(statuses[1].1, "strict");
    assert_eq!(statuses[2].1, "strict");
    let tier: String = db
        .query_row(
            "SELECT default_redaction FROM crews WHERE name = 'home'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(tier, "strict");
    let open: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM tunnels WHERE closed_at IS NULL",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(open, 0, "both tunnels were closed from the dashboard");
}
