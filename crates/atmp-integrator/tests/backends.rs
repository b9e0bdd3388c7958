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
    s.set_autorisation("SOFIVAL", &p(SDIS), Autorisation::Accordee, None)
        .unwrap();
    s.set_autorisation("BENCH", &p(SDIS), Autorisation::Accordee, None)
        .unwrap();
    for c in [CDG, COMMUNE, CCAS] {
        s.set_autorisation("CDGVAUCL", &p(c), Autorisation::Accordee, None)
            .unwrap();
    }
}

/// What a run gives, timestamps and paths aside.
/// The logs are read back through the import rows: from `kept` (the base's large objects)
/// when given, else from the files the rows name.
fn run(
    s: &mut dyn Store,
    files: &[(PathBuf, &str)],
    logs: &Path,
    kept: Option<&dyn atmp_store::FileStore>,
) -> Vec<String> {
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
                files: kept,
                replay: None,
                dry_run: false,
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
        let (_, stored) = s.import(o.import_id).unwrap().unwrap();
        assert_eq!(stored.len(), o.logs.len());
        for (_, l) in &stored {
            let mut text = String::new();
            match kept {
                Some(k) => {
                    assert!(l.complet_path.starts_with("lo:"), "{}", l.complet_path);
                    std::io::Read::read_to_string(&mut k.open(&l.complet_path).unwrap(), &mut text)
                        .unwrap();
                }
                None => text = std::fs::read_to_string(&l.complet_path).unwrap(),
            }
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

/// A file where records meet rows of the same file: an agent of the base given new events,
/// an agent twice (the second time with one more event and one more arrêt under a known
/// event), and a new agent with the first one's service.
fn repeats(dir: &Path) -> PathBuf {
    let src = std::fs::read_to_string(demo("declaration-differentiel.xml")).unwrap();
    let agents: Vec<&str> = src
        .match_indices("<agent>")
        .map(|(i, _)| &src[i..i + src[i..].find("</agent>").unwrap() + "</agent>".len()])
        .collect();
    assert!(agents.len() >= 3, "the demo file's agents");
    let first = agents[0];
    let again = first.replacen(
        "<arret>",
        "<arret>\n          <dateDebut>2015-11-21</dateDebut>\n          <dateFin>2015-11-22</dateFin>\n        </arret>\n        <arret>",
        1,
    );
    let more = first.replace("SDIS-2015-0871", "SDIS-2015-0999").replace(
        "<type>AS</type>\n        <date>2015-11-08</date>",
        "<type>AS</type>\n        <date>2015-11-05</date>",
    );
    let ev_start = more.find("<evenement>").unwrap();
    let ev = &more[ev_start..more.rfind("</evenement>").unwrap() + "</evenement>".len()];
    let twice = again.replace(
        "</evenement>\n    </agent>",
        &format!("</evenement>\n      {ev}\n    </agent>"),
    );
    let newcomer = first
        .replace("184052153114629", "184052153114728")
        .replace("CARDON", "CARDONNE")
        .replace("SDIS-2015-0871", "SDIS-2015-0872");
    let body = [agents[1], first, agents[2], &twice, &newcomer, agents[1]].join("\n    ");
    let head_end = src.find("<agent>").unwrap();
    let tail_start = src.rfind("</agent>").unwrap() + "</agent>".len();
    let text = format!("{}{body}{}", &src[..head_end], &src[tail_start..])
        .replace("2015-11-28T02:00:00", "2015-12-05T02:00:00")
        .replace("<nombreAgents>3<", "<nombreAgents>6<")
        .replace("<nombreEvenements>3<", "<nombreEvenements>7<");
    let p = dir.join("repetitions.xml");
    std::fs::write(&p, text).unwrap();
    p
}

/// Every stored row of the integrated tables, ids and links left out, sorted.
fn content_sqlite(path: &Path) -> Vec<String> {
    let c = rusqlite::Connection::open(path).unwrap();
    let mut out = Vec::new();
    for t in Table::ALL {
        let cols: Vec<String> = c
            .prepare(&format!("PRAGMA table_info({})", t.name()))
            .unwrap()
            .query_map([], |r| r.get::<_, String>(1))
            .unwrap()
            .map(|r| r.unwrap())
            .filter(|n| n != "id" && !n.ends_with("_id"))
            .collect();
        let sql = format!("SELECT {} FROM {}", cols.join(", "), t.name());
        let mut st = c.prepare(&sql).unwrap();
        let mut rows: Vec<String> = st
            .query_map([], |r| {
                Ok((0..cols.len())
                    .map(|i| match r.get_ref(i).unwrap() {
                        rusqlite::types::ValueRef::Null => "∅".to_string(),
                        rusqlite::types::ValueRef::Integer(i) => i.to_string(),
                        rusqlite::types::ValueRef::Real(f) => f.to_string(),
                        rusqlite::types::ValueRef::Text(b) => {
                            String::from_utf8_lossy(b).into_owned()
                        }
                        rusqlite::types::ValueRef::Blob(_) => "blob".into(),
                    })
                    .collect::<Vec<_>>()
                    .join("|"))
            })
            .unwrap()
            .map(|r| format!("{}: {}", t.name(), r.unwrap()))
            .collect();
        rows.sort();
        out.extend(rows);
    }
    out
}

fn content_pg(url: &str) -> Vec<String> {
    let mut c = postgres::Client::connect(url, postgres::NoTls).unwrap();
    let mut out = Vec::new();
    for t in Table::ALL {
        let cols: Vec<String> = c
            .query(
                "SELECT column_name FROM information_schema.columns WHERE table_name = $1 AND table_schema = 'public' ORDER BY ordinal_position",
                &[&t.name()],
            )
            .unwrap()
            .iter()
            .map(|r| r.get::<_, String>(0))
            .filter(|n| n != "id" && !n.ends_with("_id"))
            .collect();
        let st = c
            .prepare(&format!("SELECT {} FROM {}", cols.join(", "), t.name()))
            .unwrap();
        let mut rows: Vec<String> = c
            .query(&st, &[])
            .unwrap()
            .iter()
            .map(|r| {
                let cells: Vec<String> = (0..cols.len())
                    .map(|i| {
                        let ty = r.columns()[i].type_().clone();
                        if ty == postgres::types::Type::INT8 {
                            r.get::<_, Option<i64>>(i)
                                .map_or("∅".into(), |v| v.to_string())
                        } else if ty == postgres::types::Type::FLOAT8 {
                            r.get::<_, Option<f64>>(i)
                                .map_or("∅".into(), |v| v.to_string())
                        } else {
                            r.get::<_, Option<String>>(i).unwrap_or_else(|| "∅".into())
                        }
                    })
                    .collect();
                format!("{}: {}", t.name(), cells.join("|"))
            })
            .collect();
        rows.sort();
        out.extend(rows);
    }
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
        // Records that meet rows of their own file, and of the base.
        (repeats(dir.path()), "SOFIVAL"),
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
    let a = run(&mut sqlite, &files, &dir.path().join("logs-sqlite"), None);
    drop(sqlite);
    let stored = content_sqlite(&dir.path().join("b.db"));
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
    let rep = a
        .iter()
        .position(|l| l.starts_with("repetitions.xml"))
        .unwrap();
    assert!(a[rep].contains("Reussi"), "{}", a[rep]);
    assert!(
        stored.iter().any(|r| r.contains("SDIS-2015-0999")),
        "{:#?}",
        &a[rep..rep + 80]
    );
    assert!(stored.iter().any(|r| r.contains("2015-11-21")));

    // PostgreSQL, with the default buffer and with flushes every few rows, so that every
    // lookup meets rows on both sides of a flush.
    for flush in [None, Some(1), Some(2), Some(7)] {
        let (url, _) = atmp_store::test_support::fresh_database("backends");
        let mut pg = PgStore::connect(&url).unwrap();
        if let Some(n) = flush {
            pg.set_flush_rows(n);
        }
        setup(&mut pg);
        // Logs kept in the base (the platform on PostgreSQL) with two of the four runs.
        let kept = matches!(flush, None | Some(7)).then(|| atmp_store::PgFiles::new(&url));
        let logs = dir.path().join(format!("logs-pg-{flush:?}"));
        let b = run(
            &mut pg,
            &files,
            &logs,
            kept.as_ref().map(|k| k as &dyn atmp_store::FileStore),
        );
        drop(pg);
        if kept.is_some() {
            let left: Vec<_> = std::fs::read_dir(&logs)
                .map(|d| d.map(|e| e.unwrap().path()).collect())
                .unwrap_or_default();
            assert!(left.is_empty(), "no log left on the disk: {left:?}");
        }
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(x, y, "flush every {flush:?} rows");
        }
        assert_eq!(a.len(), b.len());
        let c = content_pg(&url);
        for (x, y) in stored.iter().zip(&c) {
            assert_eq!(x, y, "flush every {flush:?} rows");
        }
        assert_eq!(stored.len(), c.len());
    }
}
