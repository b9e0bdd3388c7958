//! The PostgreSQL server of the tests (`./scripts/test` starts one, `ATMP_TEST_POSTGRES_URL`).

/// A fresh database on the test server; its URL.
pub fn pg_database(tag: &str) -> String {
    atmp_store::test_support::fresh_database(tag).0
}
