//! Rebuilds the crate when a migration is added or changed: `sqlx::migrate!` embeds
//! `../migrations/{sqlite,postgres}` at compile time, and cargo does not watch that
//! directory by itself (sqlx documents this build script for `migrate!`).
fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
