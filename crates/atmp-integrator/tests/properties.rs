//! Properties of §5 on generated files: the base is the master, and the same content twice
//! never creates a record twice.

use atmp_store::prelude::*;
use std::path::Path;

use atmp_flux::gen::{generate, GenOptions};
use atmp_integrator::{import_file, ImportOptions, ResultKind};
use atmp_model::Siret;
use atmp_store::{SqliteStore, Table};
use proptest::prelude::*;

const SDIS: &str = "28219002400012";

fn setup(dir: &Path) -> SqliteStore {
    let mut store = SqliteStore::open(&dir.join("base.db")).unwrap();
    store
        .add_collectivite(&Siret::parse(SDIS).unwrap(), "SDIS", None)
        .unwrap();
    store.add_emetteur("BENCH", None).unwrap();
    store
        .set_autorisation(
            "BENCH",
            &Siret::parse(SDIS).unwrap(),
            atmp_store::Autorisation::Accordee,
            None,
        )
        .unwrap();
    store
}

fn gen_file(dir: &Path, name: &str, agents: u64, seed: u64, created: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    let opts = GenOptions {
        agents,
        collectivites: vec![Siret::parse(SDIS).unwrap()],
        emetteur: "BENCH".into(),
        date_creation: created.into(),
        seed,
        cdg: None,
    };
    generate(
        std::io::BufWriter::new(std::fs::File::create(&p).unwrap()),
        &opts,
    )
    .unwrap();
    p
}

fn counts(store: &mut SqliteStore) -> Vec<u64> {
    Table::ALL
        .iter()
        .map(|t| store.count(*t).unwrap())
        .collect()
}

/// Every row of the integrated tables, as text.
fn dump(dir: &Path) -> String {
    let conn = rusqlite::Connection::open(dir.join("base.db")).unwrap();
    let mut out = String::new();
    for t in Table::ALL {
        let mut stmt = conn
            .prepare(&format!("SELECT * FROM {} ORDER BY id", t.name()))
            .unwrap();
        let n = stmt.column_count();
        let rows = stmt
            .query_map([], |r| {
                let mut s = String::new();
                for i in 0..n {
                    let v: rusqlite::types::Value = r.get(i)?;
                    s.push_str(&format!("{v:?}|"));
                }
                Ok(s)
            })
            .unwrap();
        for r in rows {
            out.push_str(&r.unwrap());
            out.push('\n');
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, .. ProptestConfig::default() })]

    /// Importing the same content again, under another name and creation date, adds nothing
    /// and changes nothing; a file whose overlap with the base was edited changes nothing
    /// already there.
    #[test]
    fn same_content_twice_and_master_data(seed in 0u64..10_000, agents in 1u64..40, extra in 1u64..20, edit in 0usize..6) {
        let dir = tempfile::tempdir().unwrap();
        let mut store = setup(dir.path());
        let logs = dir.path().join("logs");
        let opts = ImportOptions { emetteur: None, logs_dir: logs, display_name: None, progress: None, job_id: None, limits: atmp_flux::Limits::default(), files: None , replay: None, dry_run: false};
        let first = gen_file(dir.path(), "a.xml", agents, seed, "2016-01-01T00:00:00");
        let o = import_file(&mut store, &first, &opts).unwrap();
        prop_assert_eq!(o.result, ResultKind::Reussi);
        prop_assert_eq!(o.errors, 0);
        let after_first = counts(&mut store);
        let base = dump(dir.path());

        let again = gen_file(dir.path(), "b.xml", agents, seed, "2016-02-01T00:00:00");
        let o = import_file(&mut store, &again, &opts).unwrap();
        prop_assert_eq!(o.result, ResultKind::Reussi);
        prop_assert_eq!(counts(&mut store), after_first.clone());
        prop_assert_eq!(o.counts.get(atmp_flux::spec::RecordKind::Agent), (0, agents, 0));
        prop_assert_eq!(dump(dir.path()), base.clone());

        // More agents, and one kind of field edited in the whole file: the rows already there
        // stay exactly as they were; only the new agents are added.
        let more = gen_file(dir.path(), "c.xml", agents + extra, seed, "2016-03-01T00:00:00");
        let text = std::fs::read_to_string(&more).unwrap();
        let edited = match edit {
            0 => text.replace("<dateFin>201", "<dateFin>202"),
            1 => text.replace("<statut>DECLARE</statut>", "<statut>RECONNU</statut>"),
            2 => text.replace("<grade>", "<grade>Nouveau grade "),
            3 => text.replace("<quotiteTravail>100</quotiteTravail>", "<quotiteTravail>50</quotiteTravail>"),
            4 => text.replace("<tauxDeficit>", "<tauxDeficit>1"),
            _ => text.replace("<lateralite>D</lateralite>\n      <regime>", "<lateralite>G</lateralite>\n      <regime>"),
        };
        std::fs::write(&more, edited).unwrap();
        let o = import_file(&mut store, &more, &opts).unwrap();
        prop_assert_eq!(o.result, ResultKind::Reussi);
        prop_assert_eq!(o.counts.get(atmp_flux::spec::RecordKind::Agent).0, extra);
        let now = dump(dir.path());
        // Every row that existed is still there, unchanged.
        for line in base.lines() {
            prop_assert!(now.contains(line), "row changed or lost: {}", line);
        }
    }
}

proptest::proptest! {
    /// A log line written with `push_field` reads back into the same six fields.
    #[test]
    fn log_fields_round_trip(fields in proptest::collection::vec("[a-zA-Z0-9 ;\"é«»\\[\\]-]{0,20}", 6)) {
        let mut line = String::new();
        for (i, f) in fields.iter().enumerate() {
            if i > 0 {
                line.push(';');
            }
            atmp_integrator::push_field(&mut line, f);
        }
        // A field a spreadsheet would take for a formula comes back with its leading `'`.
        let expected: Vec<String> = fields
            .iter()
            .map(|f| if atmp_integrator::is_formula(f) { format!("'{f}") } else { f.clone() })
            .collect();
        proptest::prop_assert_eq!(atmp_integrator::split_line(&line), expected);
    }
}

/// The "tableur" form of a log: a BOM, a header, six cells per row, CRLF, formulas inert.
#[test]
fn tableur_form_of_a_log() {
    let mut log = String::new();
    for fields in [
        vec![
            "01/02/2026 10:00:00",
            "INFO",
            "",
            "",
            "",
            "Début du traitement",
        ],
        vec![
            "01/02/2026 10:00:01",
            "ERROR",
            "=HYPERLINK(\"http://x\";\"y\")",
            "",
            "",
            "multi\nligne",
        ],
        vec![
            "01/02/2026 10:00:02",
            "WARN",
            "Agent : A",
            "@SUM(1)",
            "+1",
            "-2",
        ],
    ] {
        for (i, f) in fields.iter().enumerate() {
            if i > 0 {
                log.push(';');
            }
            atmp_integrator::push_field(&mut log, f);
        }
        log.push('\n');
    }
    let mut out = Vec::new();
    atmp_integrator::write_tableur(log.as_bytes(), &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(text.starts_with('\u{feff}'), "BOM");
    let rows: Vec<&str> = text.trim_start_matches('\u{feff}').split("\r\n").collect();
    assert_eq!(rows[0], "Horodatage;Niveau;Agent;Événement;Élément;Message");
    assert_eq!(rows.len(), 5, "{rows:?}"); // header, 3 rows, and the empty tail
    assert_eq!(rows[4], "");
    assert_eq!(
        rows[2],
        "01/02/2026 10:00:01;ERROR;\"'=HYPERLINK(\"\"http://x\"\";\"\"y\"\")\";;;\"multi\nligne\""
    );
    assert_eq!(
        rows[3],
        "01/02/2026 10:00:02;WARN;Agent : A;'@SUM(1);'+1;'-2"
    );
    for r in &rows[1..4] {
        assert_eq!(atmp_integrator::split_line(r).len(), 6, "{r}");
        // No cell starts a formula.
        for c in atmp_integrator::split_line(r) {
            assert!(!atmp_integrator::is_formula(&c), "{c}");
        }
    }
}
