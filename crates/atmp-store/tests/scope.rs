//! "Who sees which log" is written once (`Scope::sees`) and said again in the SQL of the
//! tracking table: both must agree, for every scope and every kind of log.

mod common;

use atmp_model::Siret;
use atmp_store::prelude::*;
use atmp_store::{ImportLog, ImportResult, ImportRow, PgStore, Scope, SqliteStore, SuiviQuery};

const SDIS: &str = "28219002400012";
const CDG: &str = "28219010700049";
const COMMUNE: &str = "21219781800017";
const CCAS: &str = "26219781700014";

fn siret(s: &str) -> Siret {
    Siret::parse(s).unwrap()
}

#[test]
fn the_tracking_table_shows_exactly_the_logs_the_scope_sees_on_sqlite() {
    tracking_table_story(&mut SqliteStore::memory().unwrap());
}

#[test]
fn the_tracking_table_shows_exactly_the_logs_the_scope_sees_on_postgres() {
    let url = common::pg_database("scope");
    tracking_table_story(&mut PgStore::connect(&url).unwrap());
}

fn tracking_table_story<S: ReferenceStore + ImportStore>(store: &mut S) {
    store.add_collectivite(&siret(SDIS), "SDIS", None).unwrap();
    let cdg = store.add_collectivite(&siret(CDG), "CDG", None).unwrap();
    store
        .add_collectivite(&siret(COMMUNE), "Commune", Some(&siret(CDG)))
        .unwrap();
    store.add_collectivite(&siret(CCAS), "CCAS", None).unwrap();
    let log = |s: &str, global: bool| ImportLog {
        collectivite_siret: s.to_string(),
        global,
        complet_path: format!("{s}-{global}.log"),
        erreurs_path: format!("{s}-{global}-e.log"),
        errors: 0,
        warnings: 0,
        label: "Import réussi".into(),
    };
    // Every kind of log: each collectivité's own, the CDG's global one, and a global log
    // naming a collectivité that is not a CDG (never seen by the CDG).
    let logs = vec![
        log(SDIS, false),
        log(CDG, false),
        log(COMMUNE, false),
        log(CCAS, false),
        log(CDG, true),
        log(SDIS, true),
    ];
    let row = ImportRow {
        file_name: "f.xml".into(),
        started_at: "2026-11-02T10:00:00".into(),
        finished_at: Some("2026-11-02T10:00:01".into()),
        result: ImportResult::Reussi,
        label: "Import réussi".into(),
        type_fichier: Some("DECLARATION".into()),
        ..Default::default()
    };
    store.record_import(&row, &logs).unwrap();
    let cdg_of = |s: &str| (s == COMMUNE).then_some(CDG);
    let scopes = [
        Scope::Tout,
        Scope::Cdg {
            id: cdg.id,
            siret: CDG.into(),
        },
        Scope::Collectivite { siret: SDIS.into() },
        Scope::Collectivite {
            siret: COMMUNE.into(),
        },
        Scope::Collectivite { siret: CDG.into() },
    ];
    for scope in scopes {
        let (rows, total) = store
            .suivi(&SuiviQuery {
                scope: scope.clone(),
                type_fichier: None,
                du: "2026-11-01".into(),
                au: "2026-11-30".into(),
                limit: 100,
                offset: 0,
                ..Default::default()
            })
            .unwrap();
        let mut shown: Vec<(String, bool)> = rows
            .iter()
            .map(|r| (r.collectivite_siret.clone(), r.global))
            .collect();
        shown.sort();
        let mut expected: Vec<(String, bool)> = logs
            .iter()
            .filter(|l| {
                scope.sees(
                    &l.collectivite_siret,
                    l.global,
                    cdg_of(&l.collectivite_siret),
                )
            })
            .map(|l| (l.collectivite_siret.clone(), l.global))
            .collect();
        expected.sort();
        assert_eq!(shown, expected, "{scope:?}");
        assert_eq!(total as usize, expected.len());
        assert!(!expected.is_empty(), "{scope:?} sees something");
    }
    // And the rule itself, as the roles expect it.
    let c = Scope::Cdg {
        id: cdg.id,
        siret: CDG.into(),
    };
    assert!(c.sees(COMMUNE, false, Some(CDG)));
    assert!(c.sees(CDG, true, None));
    assert!(!c.sees(SDIS, true, None));
    assert!(!c.sees(CCAS, false, None));
    let own = Scope::Collectivite { siret: CDG.into() };
    assert!(own.sees(CDG, false, None) && !own.sees(CDG, true, None));
}
