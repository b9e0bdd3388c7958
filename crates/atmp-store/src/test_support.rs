//! For the workspace's test suites only (feature `test-support`): fresh databases on the
//! PostgreSQL server of the tests (`./scripts/test` starts one and sets
//! `ATMP_TEST_POSTGRES_URL`).

use std::sync::atomic::{AtomicU32, Ordering};

/// The admin URL of the tests' server.
pub fn admin_url() -> String {
    std::env::var("ATMP_TEST_POSTGRES_URL").expect(
        "ATMP_TEST_POSTGRES_URL: the PostgreSQL server of the tests (./scripts/test starts one)",
    )
}

/// A fresh, empty database named after `tag`, the process and a counter: (its URL, its name).
pub fn fresh_database(tag: &str) -> (String, String) {
    static N: AtomicU32 = AtomicU32::new(0);
    let admin = admin_url();
    let name = format!(
        "{tag}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    );
    let mut a = postgres::Client::connect(&admin, postgres::NoTls).expect("the tests' server");
    a.batch_execute(&format!("DROP DATABASE IF EXISTS {name}"))
        .expect("drop");
    a.batch_execute(&format!("CREATE DATABASE {name}"))
        .expect("create");
    (
        format!("{}/{name}", admin.rsplit_once('/').expect("URL").0),
        name,
    )
}

/// Drops a database of [`fresh_database`], its connections closed first (best effort).
pub fn drop_database(name: &str) {
    if let Ok(mut a) = postgres::Client::connect(&admin_url(), postgres::NoTls) {
        let _ = a.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
    }
}
