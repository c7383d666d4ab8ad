//! Rebuild when the dashboard's files change: include_dir does not tell cargo about them.
//!
//! Release builds also hand the linker `.cargo/hot-functions.txt`, the functions
//! an idle server and an idle `berth share` run, so that it lays them out
//! together and idle processes keep less of the binary resident
//! (scripts/hot-functions.sh says why and how the list is made). Only LLD
//! reads such a list (rustup's default linker on x86_64 Linux since Rust 1.90),
//! and other linkers refuse the option, so a small program is linked with it
//! first, the way this build links; where that fails the build goes without.
//! BERTH_HOT_FUNCTIONS=0 goes without too.

use std::env;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const HOT_FUNCTIONS: &str = ".cargo/hot-functions.txt";

fn main() {
    println!("cargo:rerun-if-changed=web");
    // The directory, not the file: a list added later is noticed too.
    println!("cargo:rerun-if-changed=.cargo");
    println!("cargo:rerun-if-env-changed=BERTH_HOT_FUNCTIONS");
    if let Some(args) = hot_functions() {
        for arg in args {
            println!("cargo:rustc-link-arg-bins={arg}");
        }
    }
}

/// The link arguments that order the binary by the list, if this build can use them.
fn hot_functions() -> Option<[String; 4]> {
    if env::var("BERTH_HOT_FUNCTIONS").is_ok_and(|v| v == "0")
        || env::var("PROFILE").ok()? != "release"
    {
        return None;
    }
    let list = Path::new(&env::var_os("CARGO_MANIFEST_DIR")?).join(HOT_FUNCTIONS);
    if !list.is_file() {
        return None;
    }
    // -Xlinker pairs, not -Wl,: a comma in the path would split it.
    let args = [
        "-Xlinker".to_string(),
        format!("--symbol-ordering-file={}", list.display()),
        // Names this build lacks (code changed since the list was made) are
        // left out quietly; the rest keep their order.
        "-Xlinker".to_string(),
        "--no-warn-symbol-ordering".to_string(),
    ];
    links_with(&args).then_some(args)
}

/// Whether an empty program links with `link_args` added, built as this crate is.
fn links_with(link_args: &[String]) -> bool {
    let Some(out_dir) = env::var_os("OUT_DIR").map(PathBuf::from) else {
        return false;
    };
    let source = out_dir.join("hot_functions_probe.rs");
    if std::fs::write(&source, "fn main() {}\n").is_err() {
        return false;
    }
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| OsString::from("rustc"));
    let mut probe = Command::new(rustc);
    probe
        .arg("--crate-name=hot_functions_probe")
        .arg("--edition=2021")
        .arg("-o")
        .arg(out_dir.join("hot_functions_probe"))
        .arg(&source);
    if let Ok(target) = env::var("TARGET") {
        probe.arg("--target").arg(target);
    }
    if let Some(linker) = env::var_os("RUSTC_LINKER") {
        let mut flag = OsString::from("-Clinker=");
        flag.push(linker);
        probe.arg(flag);
    }
    let flags = env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    probe.args(flags.split('\x1f').filter(|flag| !flag.is_empty()));
    for arg in link_args {
        probe.arg(format!("-Clink-arg={arg}"));
    }
    probe
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}
