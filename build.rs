//! Rebuild when the dashboard's files change: include_dir does not tell cargo about them.

fn main() {
    println!("cargo:rerun-if-changed=web");
}
