//! The migrations per backend give the same base: every table and column of the SQLite
//! migrations exists in the PostgreSQL ones, and no other (but the tables of
//! `POSTGRES_ONLY_TABLES`, which SQLite has no use for).

mod common;

use std::collections::BTreeSet;

#[test]
fn postgres_migrations_give_the_tables_and_columns_of_the_sqlite_ones() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b.db");
    drop(atmp_store::SqliteStore::open(&path).unwrap());
    let c = rusqlite::Connection::open(&path).unwrap();
    let mut sqlite = BTreeSet::new();
    let tables: Vec<String> = c
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    for t in &tables {
        let mut st = c.prepare(&format!("PRAGMA table_info({t})")).unwrap();
        for col in st.query_map([], |r| r.get::<_, String>(1)).unwrap() {
            sqlite.insert((t.clone(), col.unwrap()));
        }
    }
    assert!(sqlite.contains(&("agent".into(), "nir".into())));

    let url = common::pg_database("migrations");
    let mut pg = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    for (i, m) in atmp_store::POSTGRES_MIGRATIONS.iter().enumerate() {
        pg.batch_execute(m)
            .unwrap_or_else(|e| panic!("migration {}: {e}", i + 1));
    }
    let got: BTreeSet<(String, String)> = pg
        .query(
            "SELECT table_name::text, column_name::text FROM information_schema.columns WHERE table_schema = 'public'",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .filter(|(t, _): &(String, String)| !atmp_store::POSTGRES_ONLY_TABLES.contains(&t.as_str()))
        .collect();
    let only_sqlite: Vec<_> = sqlite.difference(&got).collect();
    let only_pg: Vec<_> = got.difference(&sqlite).collect();
    assert!(
        only_sqlite.is_empty() && only_pg.is_empty(),
        "SQLite only: {only_sqlite:?}\nPostgreSQL only: {only_pg:?}"
    );
}
