//! The PostgreSQL server of the tests (`./scripts/test` starts one, `ATMP_TEST_POSTGRES_URL`).

/// A fresh database on the test server; its URL.
pub fn pg_database(tag: &str) -> String {
    let admin = std::env::var("ATMP_TEST_POSTGRES_URL").expect(
        "ATMP_TEST_POSTGRES_URL: the PostgreSQL server of the tests (./scripts/test starts one)",
    );
    let name = format!("{tag}_{}", std::process::id());
    let mut a = postgres::Client::connect(&admin, postgres::NoTls).unwrap();
    a.batch_execute(&format!("DROP DATABASE IF EXISTS {name}"))
        .unwrap();
    a.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
    format!("{}/{name}", admin.rsplit_once('/').unwrap().0)
}
