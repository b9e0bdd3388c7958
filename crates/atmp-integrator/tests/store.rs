//! The format tables and the base agree; the store refuses what it does not know.

use atmp_flux::spec::{self, RecordKind};
use atmp_integrator::table;
use atmp_store::prelude::*;
use atmp_store::{SqliteStore, Table};

#[test]
fn every_column_of_the_format_is_a_column_of_the_base() {
    let store = SqliteStore::memory().unwrap();
    for kind in RecordKind::COUNTED {
        let have = store.table_columns(table(kind));
        for col in spec::columns_of(kind) {
            assert!(
                have.contains(*col),
                "{}.{col} is missing from the schema",
                table(kind).name()
            );
        }
    }
}

#[test]
fn unknown_columns_are_refused_and_a_dropped_transaction_rolls_back() {
    let mut store = SqliteStore::memory().unwrap();
    let siret = atmp_model::Siret::parse("28219002400012").unwrap();
    let c = store.add_collectivite(&siret, "SDIS", None).unwrap();
    let row = atmp_store::ImportRow {
        file_name: "f.xml".into(),
        started_at: atmp_store::now(),
        result: atmp_store::ImportResult::EnCours,
        label: "En cours".into(),
        counts: atmp_store::RecordCounts::default(),
        ..Default::default()
    };
    {
        let mut tx = store.begin_file(&row).unwrap();
        assert!(tx
            .prepare_insert(Table::Service, &["code; DROP TABLE agent"])
            .is_err());
        let ins = tx
            .prepare_insert(Table::Service, &["code", "libelle"])
            .unwrap();
        tx.insert(
            ins,
            c.id,
            &[
                atmp_store::Cell::Text("DIR".into()),
                atmp_store::Cell::Text("Direction".into()),
            ],
        )
        .unwrap();
        // Dropped without commit.
    }
    assert_eq!(store.count(Table::Service).unwrap(), 0);
    assert!(
        store.imports().unwrap().is_empty(),
        "the import row went with the rollback"
    );
    // Committed: there.
    let mut tx = store.begin_file(&row).unwrap();
    let ins = tx
        .prepare_insert(Table::Service, &["code", "libelle"])
        .unwrap();
    tx.insert(
        ins,
        c.id,
        &[atmp_store::Cell::Text("DIR".into()), atmp_store::Cell::Null],
    )
    .unwrap();
    let done = atmp_store::ImportRow {
        result: atmp_store::ImportResult::Reussi,
        label: "Import réussi".into(),
        ..row
    };
    tx.commit(&done, &[]).unwrap();
    assert_eq!(store.count(Table::Service).unwrap(), 1);
    assert_eq!(
        store.imports().unwrap()[0].1.result,
        atmp_store::ImportResult::Reussi
    );
}

#[test]
fn consent_register_and_collectivites() {
    let mut store = SqliteStore::memory().unwrap();
    let cdg = atmp_model::Siret::parse("28219010700049").unwrap();
    let commune = atmp_model::Siret::parse("21219781800017").unwrap();
    assert!(
        store
            .add_collectivite(&commune, "Commune", Some(&cdg))
            .is_err(),
        "the CDG must exist first"
    );
    store.add_collectivite(&cdg, "CDG", None).unwrap();
    let c = store
        .add_collectivite(&commune, "Commune", Some(&cdg))
        .unwrap();
    assert_eq!(
        c.cdg_siret.as_ref().map(|s| s.as_str()),
        Some("28219010700049")
    );
    assert!(
        store.add_collectivite(&commune, "Encore", None).is_err(),
        "never twice"
    );
    store.add_emetteur("E", None).unwrap();
    store
        .set_autorisation(
            "E",
            &commune,
            atmp_store::Autorisation::Accordee,
            Some("Courrier"),
        )
        .unwrap();
    store
        .set_autorisation("E", &commune, atmp_store::Autorisation::Retiree, None)
        .unwrap();
    let e = store.emetteur("E").unwrap().unwrap();
    assert_eq!(e.autorisations.len(), 1);
    assert_eq!(e.autorisations[0].1, atmp_store::Autorisation::Retiree);
    assert!(store
        .set_autorisation(
            "E",
            &atmp_model::Siret::parse("00000000000000").unwrap(),
            atmp_store::Autorisation::Accordee,
            None
        )
        .is_err());
}
