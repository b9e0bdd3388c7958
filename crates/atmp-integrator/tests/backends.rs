//! The rules of §5 give the same results on both backends: the platform's example files, a
//! rejected identity, a generated file and its re-import under another creation date are
//! integrated into SQLite and into PostgreSQL; every outcome, every log line (timestamps
//! aside) and every table's row count agree.

use std::path::{Path, PathBuf};

use atmp_flux::gen::{generate, GenOptions};
use atmp_integrator::{import_file, ImportOptions};
use atmp_model::Siret;
use atmp_store::prelude::*;
use atmp_store::{Autorisation, PgStore, SqliteStore, Table};

const SDIS: &str = "28219002400012";
const CDG: &str = "28219010700049";
const COMMUNE: &str = "21219781800017";
const CCAS: &str = "26219781700014";

fn demo(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../atmp-platform/demo")
        .join(name)
}

fn setup(s: &mut dyn Store) {
    let p = |x: &str| Siret::parse(x).unwrap();
    s.add_collectivite(&p(SDIS), "SDIS", None).unwrap();
    s.add_collectivite(&p(CDG), "CDG", None).unwrap();
    s.add_collectivite(&p(COMMUNE), "Commune", Some(&p(CDG)))
        .unwrap();
    s.add_collectivite(&p(CCAS), "CCAS", Some(&p(CDG))).unwrap();
    s.add_emetteur("SOFIVAL", None).unwrap();
    s.add_emetteur("CDGVAUCL", None).unwrap();
    s.add_emetteur("BENCH", None).unwrap();
    s.set_autorisation("SOFIVAL", SDIS, Autorisation::Accordee, None)
        .unwrap();
    s.set_autorisation("BENCH", SDIS, Autorisation::Accordee, None)
        .unwrap();
    for c in [CDG, COMMUNE, CCAS] {
        s.set_autorisation("CDGVAUCL", c, Autorisation::Accordee, None)
            .unwrap();
    }
}

/// What a run gives, timestamps and paths aside.
fn run(s: &mut dyn Store, files: &[(PathBuf, &str)], logs: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for (f, emetteur) in files {
        let o = import_file(
            s,
            f,
            &ImportOptions {
                emetteur: Some(emetteur.to_string()),
                logs_dir: logs.to_path_buf(),
                display_name: None,
                progress: None,
                job_id: None,
                limits: atmp_flux::Limits::default(),
            },
        )
        .unwrap();
        out.push(format!(
            "{} {:?} {} e={} w={} {:?}",
            f.file_name().unwrap().to_string_lossy(),
            o.result,
            o.label,
            o.errors,
            o.warnings,
            atmp_store::RecordCounts::from(&o.counts)
        ));
        for l in &o.logs {
            let text = std::fs::read_to_string(&l.complet).unwrap();
            for line in text.lines() {
                // The first field is the time of the line.
                out.push(without_ids(
                    line.split_once(';').map(|x| x.1).unwrap_or(line),
                ));
            }
        }
    }
    for t in Table::ALL {
        out.push(format!("{}: {}", t.name(), s.count(t).unwrap()));
    }
    out
}

fn gen(dir: &Path, name: &str, created: &str) -> PathBuf {
    let p = dir.join(name);
    generate(
        std::io::BufWriter::new(std::fs::File::create(&p).unwrap()),
        &GenOptions {
            agents: 300,
            collectivites: vec![Siret::parse(SDIS).unwrap()],
            emetteur: "BENCH".into(),
            date_creation: created.into(),
            seed: 5,
            cdg: None,
        },
    )
    .unwrap();
    p
}

/// A log line with the ids it names (`agentid=12`…) left out: PostgreSQL's sequences are not
/// rolled back with a rejected file, so ids may differ by value, never by meaning.
fn without_ids(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(i) = rest.find("id=") {
        out.push_str(&rest[..i + 3]);
        rest = rest[i + 3..].trim_start_matches(|c: char| c.is_ascii_digit());
        out.push('#');
    }
    out.push_str(rest);
    out
}

fn cut(p: &Path) -> PathBuf {
    let bytes = std::fs::read(p).unwrap();
    let out = p.with_file_name("coupe.xml");
    std::fs::write(&out, &bytes[..bytes.len() * 2 / 3]).unwrap();
    out
}

#[test]
fn sqlite_and_postgres_integrate_alike() {
    let dir = tempfile::tempdir().unwrap();
    let files = vec![
        (demo("services.xml"), "SOFIVAL"),
        (demo("declaration-differentiel.xml"), "SOFIVAL"),
        (demo("cdg-groupe.xml"), "CDGVAUCL"),
        (demo("declaration-rectificative.xml"), "SOFIVAL"),
        // The same bytes again: a duplicate.
        (demo("declaration-differentiel.xml"), "SOFIVAL"),
        // Cut in the middle: records are stored in the file's transaction, then the file is
        // rejected whole and everything is rolled back.
        (
            cut(&gen(dir.path(), "g0.xml", "2015-12-01T02:00:00")),
            "BENCH",
        ),
        (gen(dir.path(), "g1.xml", "2016-01-01T02:00:00"), "BENCH"),
        // The same content under another creation date: everything already present.
        (gen(dir.path(), "g2.xml", "2016-01-08T02:00:00"), "BENCH"),
    ];
    let mut sqlite = SqliteStore::open(&dir.path().join("b.db")).unwrap();
    setup(&mut sqlite);
    let a = run(&mut sqlite, &files, &dir.path().join("logs-sqlite"));

    let (url, _) = atmp_store::test_support::fresh_database("backends");
    let mut pg = PgStore::connect(&url).unwrap();
    setup(&mut pg);
    let b = run(&mut pg, &files, &dir.path().join("logs-pg"));
    assert!(a.iter().any(|l| l.contains("Doublon")), "{a:#?}");
    assert!(
        a.iter().any(|l| l.starts_with("coupe.xml Echoue")),
        "{a:#?}"
    );
    assert!(
        a.iter().any(|l| l.contains("Déjà présent")),
        "the re-import is checked"
    );
    assert!(a
        .iter()
        .any(|l| l.starts_with("agent: ") && l != "agent: 0"));
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x, y);
    }
    assert_eq!(a.len(), b.len());
}
