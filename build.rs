//! Rebuild when the dashboard's files change: include_dir does not tell cargo about them.
//!
//! Release builds for x86_64 Linux also hand the linker `.cargo/hot-functions.txt`,
//! the functions an idle server and an idle `berth share` run, so that it lays
//! them out together: an idle process keeps resident every 64 KiB block of code
//! it touched once, and scattered through the binary that code filled most
//! blocks (scripts/hot-functions.sh says how the list is made). That target's
//! default linker since Rust 1.90 is LLD, which reads the list; an older Rust
//! or a build that names another linker (which may not know the option) goes
//! without, as does one with BERTH_HOT_FUNCTIONS=0.

use std::env;
use std::path::Path;

const HOT_FUNCTIONS: &str = ".cargo/hot-functions.txt";

fn main() {
    println!("cargo:rerun-if-changed=web");
    println!("cargo:rerun-if-changed={HOT_FUNCTIONS}");
    println!("cargo:rerun-if-env-changed=BERTH_HOT_FUNCTIONS");
    if let Some(list) = hot_functions() {
        println!("cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={list}");
        // Functions the list names that this build lacks (code changed since) are
        // no error: they are left out, and the rest keep their order.
        println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
    }
}

/// The list's path, when this build links with LLD for release.
fn hot_functions() -> Option<String> {
    let var = |name: &str| env::var(name).unwrap_or_default();
    if var("BERTH_HOT_FUNCTIONS") == "0"
        || var("PROFILE") != "release"
        || var("TARGET") != "x86_64-unknown-linux-gnu"
        || !env::var_os("RUSTC_LINKER").unwrap_or_default().is_empty()
    {
        return None;
    }
    let flags = var("CARGO_ENCODED_RUSTFLAGS");
    if flags.contains("linker") || flags.contains("fuse-ld") || rustc_minor() < Some(90) {
        return None;
    }
    let list = Path::new(&var("CARGO_MANIFEST_DIR")).join(HOT_FUNCTIONS);
    list.is_file().then(|| list.display().to_string())
}

/// The compiler's minor version (`rustc 1.95.0 (...)` gives 95).
fn rustc_minor() -> Option<u32> {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let out = std::process::Command::new(rustc)
        .arg("--version")
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    text.split_whitespace()
        .nth(1)?
        .split('.')
        .nth(1)?
        .parse()
        .ok()
}
