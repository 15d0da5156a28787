//! Rebuilds the crate when a migration is added or changed: `refinery::embed_migrations!`
//! reads `../sql` at compile time, and cargo does not know it depends on that directory.
fn main() {
    println!("cargo:rerun-if-changed=../sql");
}
