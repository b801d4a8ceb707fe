//! Rebuilds the crate when a migration changes: the migrations are embedded in the binary at
//! compile time (`embed_migrations!`), and cargo would not otherwise look at them, so a new
//! migration could be missing from an incremental build.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
