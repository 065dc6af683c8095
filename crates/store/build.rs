// `sqlx::migrate!` embeds the migration files at compile time; without this a migration added
// to the directory is silently left out of an incremental build.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
