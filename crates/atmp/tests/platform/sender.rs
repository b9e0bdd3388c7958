//! The sender's side against the real platform: `atmp sender run --once` exports the demo
//! source and delivers it over real FTPS (TLS, the platform's certificate pinned) to an
//! `atmp serve` started here; a later cycle adds exactly its week; a wrong fingerprint is
//! refused; an upload cut in the middle is retried and integrated once.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value as Json;

use crate::harness::*;

fn today() -> atmp_model::Date {
    atmp_model::Date::parse(&chrono::Local::now().format("%Y-%m-%d").to_string()).unwrap()
}

fn atmp(dir: &Path, args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
    use std::io::Write;
    let mut c = Command::new(bin())
        .args(args)
        .current_dir(dir)
        .env_remove("ATMP_DATABASE_URL")
        .env_remove("ATMP_SENDER_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(s) = stdin {
        c.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
    }
    drop(c.stdin.take());
    let o = c.wait_with_output().unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// The platform with the demo's sender authorised for the demo's consenting collectivités,
/// started; and the sender's folder with its demo source and configuration.
fn platform_and_sender(first_day: atmp_model::Date) -> (Platform, PathBuf) {
    // The sender's side is the subject here; the platform's backends are covered by main.rs.
    let mut p = Platform::new(Backend::Sqlite, &[]);
    p.setup();
    for s in [CDG, COMMUNE] {
        p.cli(
            &[
                "emetteur",
                "autorisation",
                "--code",
                "SOFIVAL",
                "--collectivite",
                s,
                "--statut",
                "accordee",
            ],
            None,
        );
    }
    p.start(&[]);
    let dir = p.dir.path().join("emetteur");
    std::fs::create_dir_all(&dir).unwrap();
    let (rc, _, err) = atmp(
        &dir,
        &[
            "sender",
            "demo",
            "--source",
            "source.db",
            "--date",
            &first_day.iso(),
        ],
        None,
    );
    assert_eq!(rc, 0, "{err}");
    let (rc, fp, err) = atmp(
        &dir,
        &["sender", "empreinte", p.cert().to_str().unwrap()],
        None,
    );
    assert_eq!(rc, 0, "{err}");
    std::fs::write(dir.join("mot-de-passe"), format!("{PW_SOFIVAL}\n")).unwrap();
    std::fs::write(
        dir.join("atmp-emetteur.toml"),
        format!(
            r#"[source]
url = "sqlite://source.db"

[emetteur]
code = "SOFIVAL"

[plateforme]
ftps = "{}"
empreinte = "{}"
mot_de_passe_fichier = "mot-de-passe"

[envoi]
tentatives = 3
delai_initial_secondes = 1
attente_accuse_secondes = 120
intervalle_accuse_secondes = 1
"#,
            p.ftps,
            fp.trim()
        ),
    )
    .unwrap();
    (p, dir)
}

/// Rows of one collectivité on the platform: (agents, événements, arrêts).
fn platform_counts(p: &Platform, siret: &str) -> (i64, i64, i64) {
    let agents = p.sql(&format!(
        "SELECT count(*) FROM agent a JOIN collectivite c ON c.id = a.collectivite_id WHERE c.siret = '{siret}'"
    ));
    let evs = p.sql(&format!(
        "SELECT count(*) FROM evenement e JOIN agent a ON a.id = e.agent_id JOIN collectivite c ON c.id = a.collectivite_id WHERE c.siret = '{siret}'"
    ));
    let arrets = p.sql(&format!(
        "SELECT count(*) FROM arret x JOIN evenement e ON e.id = x.evenement_id JOIN agent a ON a.id = e.agent_id JOIN collectivite c ON c.id = a.collectivite_id WHERE c.siret = '{siret}'"
    ));
    (agents, evs, arrets)
}

/// The same in the source, as SOURCE.md says they travel: victims only, an arrêt that ends
/// before it starts left out.
fn source_counts(dir: &Path, siret: &str) -> (i64, i64, i64) {
    let c = rusqlite::Connection::open(dir.join("source.db")).unwrap();
    let q = |sql: &str| -> i64 { c.query_row(sql, [siret], |r| r.get(0)).unwrap() };
    (
        q("SELECT count(*) FROM agent a WHERE a.collectivite_siret = ?1 AND EXISTS (SELECT 1 FROM evenement e WHERE e.agent_id = a.id)"),
        q("SELECT count(*) FROM evenement e JOIN agent a ON a.id = e.agent_id WHERE a.collectivite_siret = ?1"),
        q("SELECT count(*) FROM arret x JOIN evenement e ON e.id = x.evenement_id JOIN agent a ON a.id = e.agent_id WHERE a.collectivite_siret = ?1 AND (x.date_fin IS NULL OR x.date_fin >= x.date_debut)"),
    )
}

fn journal(dir: &Path) -> Vec<Json> {
    let (rc, out, err) = atmp(dir, &["sender", "journal", "--json"], None);
    assert_eq!(rc, 0, "{err}");
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn sender_run_once_delivers_the_demo_source_and_a_later_cycle_adds_exactly_its_week() {
    let first = today().add_days(-7);
    let (p, dir) = platform_and_sender(first);

    // First cycle, as of a week ago: every destination is new, so a reprise (complet).
    let (rc, out, err) = atmp(
        &dir,
        &["sender", "run", "--once", "--date", &first.iso()],
        None,
    );
    assert_eq!(rc, 0, "{out}\n{err}\n{}", p.stderr());
    // SDIS and the CDG's grouped file: a SERVICE and a DECLARATION file each.
    assert_eq!(
        out.lines()
            .filter(|l| l.ends_with(": Import réussi"))
            .count(),
        4,
        "{out}"
    );
    let cycles = journal(&dir);
    assert_eq!(cycles.len(), 1);
    assert_eq!(cycles[0]["etat"], "termine", "{:#?}", cycles[0]);
    for f in cycles[0]["fichiers"].as_array().unwrap() {
        assert_eq!(f["etat"], "livre", "{f:#}");
        assert_eq!(f["libelle"], "Import réussi", "{f:#}");
        assert!(f["nom"].as_str().unwrap().contains("_COMPLET_"), "{f:#}");
    }
    // The platform holds exactly what the source holds for the consenting collectivités…
    for s in [SDIS, CDG, COMMUNE] {
        assert_eq!(platform_counts(&p, s), source_counts(&dir, s), "{s}");
        assert!(platform_counts(&p, s).0 > 0, "{s}");
    }
    // …and nothing of the one that refused (known to the platform, authorised there, but
    // its refusal is recorded at the sender's).
    assert_eq!(platform_counts(&p, CCAS), (0, 0, 0));
    assert_eq!(
        p.sql("SELECT count(*) FROM import WHERE result = 'reussi' AND errors = 0"),
        4
    );

    // A week of entries, then the weekly cycle: a différentiel of that week only.
    let (rc, _, err) = atmp(
        &dir,
        &[
            "sender",
            "demo",
            "--source",
            "source.db",
            "--semaine",
            "--date",
            &today().iso(),
        ],
        None,
    );
    assert_eq!(rc, 0, "{err}");
    let before: Vec<(i64, i64, i64)> = [SDIS, COMMUNE, CCAS]
        .iter()
        .map(|s| platform_counts(&p, s))
        .collect();
    let (rc, out, err) = atmp(&dir, &["sender", "run", "--once"], None);
    assert_eq!(rc, 0, "{out}\n{err}\n{}", p.stderr());
    let after: Vec<(i64, i64, i64)> = [SDIS, COMMUNE, CCAS]
        .iter()
        .map(|s| platform_counts(&p, s))
        .collect();
    // SDIS: a new declaration of a known agent, with its arrêt, and the prolongation of an
    // older declaration; the commune: a new agent with its declaration and arrêt; the CCAS:
    // nothing (its refusal holds).
    assert_eq!(after[0], (before[0].0, before[0].1 + 1, before[0].2 + 2));
    assert_eq!(
        after[1],
        (before[1].0 + 1, before[1].1 + 1, before[1].2 + 1)
    );
    assert_eq!(after[2], (0, 0, 0));
    let cycles = journal(&dir);
    assert_eq!(cycles.len(), 2);
    let second = &cycles[0];
    assert_eq!(second["etat"], "termine", "{second:#}");
    for f in second["fichiers"].as_array().unwrap() {
        assert_eq!(f["etat"], "livre", "{f:#}");
        assert!(f["nom"].as_str().unwrap().contains("_DIFFERENTIEL_"));
        // Chained to the first cycle's end.
        assert_eq!(f["fenetre_debut"], first.iso(), "{f:#}");
        assert_eq!(f["fenetre_fin"], today().iso());
    }
    // Nothing already on the platform was added again: every added row is of the week.
    let added: i64 = p.sql(
        "SELECT sum(json_extract(counts, '$.evenements.added')) FROM import WHERE file_name LIKE '%_DIFFERENTIEL_%'",
    );
    assert_eq!(added, 2);

    // The same day again: the window is delivered, nothing is sent twice.
    let jobs = p.sql("SELECT count(*) FROM job");
    let (rc, _, err) = atmp(&dir, &["sender", "run", "--once"], None);
    assert_eq!(rc, 0, "{err}");
    assert_eq!(p.sql("SELECT count(*) FROM job"), jobs);
}

#[test]
fn a_wrong_fingerprint_is_refused_and_nothing_is_sent() {
    let (p, dir) = platform_and_sender(today());
    let (rc, out, err) = atmp(
        &dir,
        &[
            "export",
            "--source",
            "sqlite://source.db",
            "--emetteur",
            "SOFIVAL",
            "--mode",
            "complet",
            "--out",
            "f",
            "--json",
        ],
        None,
    );
    assert_eq!(rc, 0, "{err}");
    let report: Json = serde_json::from_str(&out).unwrap();
    let file = report["fichiers"][0]["path"].as_str().unwrap().to_string();
    let (rc, _, err) = atmp(
        &dir,
        &[
            "send",
            &file,
            "--ftps",
            &p.ftps,
            "--user",
            "SOFIVAL",
            "--password-stdin",
            "--empreinte",
            &"ab".repeat(32),
            "--tentatives",
            "3",
            "--delai",
            "1",
        ],
        Some(&format!("{PW_SOFIVAL}\n")),
    );
    assert_eq!(rc, 1);
    assert!(err.contains("certificat de la plateforme refusé"), "{err}");
    assert!(err.contains(&"ab".repeat(32)), "{err}");
    // Refused at once, not retried: one attempt only.
    assert_eq!(err.matches("tentative").count(), 1, "{err}");
    assert_eq!(p.sql("SELECT count(*) FROM job"), 0);
    // A malformed fingerprint is a usage error.
    let (rc, _, err) = atmp(
        &dir,
        &[
            "send",
            &file,
            "--ftps",
            &p.ftps,
            "--user",
            "SOFIVAL",
            "--password-stdin",
            "--empreinte",
            "zz",
        ],
        Some("x\n"),
    );
    assert_eq!(rc, 2, "{err}");
    // The right certificate as a CA file works, and the receipt says the result.
    let (rc, out, err) = atmp(
        &dir,
        &[
            "send",
            &file,
            "--ftps",
            &p.ftps,
            "--user",
            "SOFIVAL",
            "--password-stdin",
            "--ca",
            p.cert().to_str().unwrap(),
            "--json",
        ],
        Some(&format!("{PW_SOFIVAL}\n")),
    );
    assert_eq!(rc, 0, "{err}");
    let v: Json = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["resultat"], "reussi", "{v}");
    assert_eq!(v["sha256"], report["fichiers"][0]["sha256"]);
}

#[test]
fn an_upload_cut_in_the_middle_is_retried_and_integrated_once() {
    let (mut p, dir) = platform_and_sender(today());
    // A file large enough to be caught in the middle of its upload.
    let big = dir.join("SOFIVAL_gros.xml");
    let (rc, _, err) = atmp(
        &dir,
        &[
            "gen",
            "--agents",
            "12000",
            "--out",
            big.to_str().unwrap(),
            "--emetteur",
            "SOFIVAL",
            "--collectivite",
            SDIS,
            "--date-creation",
            "2026-01-01T02:00:00",
        ],
        None,
    );
    assert_eq!(rc, 0, "{err}");
    let (_, fp, _) = atmp(
        &dir,
        &["sender", "empreinte", p.cert().to_str().unwrap()],
        None,
    );
    let mut send = Command::new(bin())
        .args([
            "send",
            big.to_str().unwrap(),
            "--ftps",
            &p.ftps,
            "--user",
            "SOFIVAL",
            "--password-stdin",
            "--empreinte",
            fp.trim(),
            "--tentatives",
            "6",
            "--delai",
            "1",
            "--delai-reseau",
            "2",
            "--attente",
            "300",
            "--json",
        ])
        .current_dir(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        send.stdin
            .take()
            .unwrap()
            .write_all(format!("{PW_SOFIVAL}\n").as_bytes())
            .unwrap();
    }
    // As soon as the upload has started, the platform stops answering (SIGSTOP) for longer
    // than the sender's network timeout: the sender's transfer is cut.
    let part = p.data().join("ftp/SOFIVAL/SOFIVAL_gros.xml.part");
    let t = Instant::now();
    while std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0) == 0 {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "upload did not start"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    let pid = p.child.as_ref().unwrap().id() as i32;
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let size_when_stopped = std::fs::metadata(&part).unwrap().len();
    std::thread::sleep(Duration::from_secs(5));
    unsafe { libc::kill(pid, libc::SIGCONT) };
    let o = send.wait_with_output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{out}\n{err}\n{}", p.stderr());
    assert!(
        err.contains("tentative 1 échouée"),
        "the first attempt was cut (stopped at {size_when_stopped} bytes): {err}\n{out}"
    );
    let v: Json = serde_json::from_str(out.trim()).unwrap();
    assert!(v["tentatives"].as_u64().unwrap() >= 2, "{v}");
    assert_eq!(v["resultat"], "reussi", "{v}");
    assert!(size_when_stopped < std::fs::metadata(&big).unwrap().len());
    // Integrated once: one job, one import, 12 000 agents.
    p.wait_jobs(1);
    assert_eq!(p.sql("SELECT count(*) FROM job"), 1);
    assert_eq!(
        p.sql("SELECT count(*) FROM import WHERE result = 'reussi'"),
        1
    );
    assert_eq!(platform_counts(&p, SDIS).0, 12000);
    p.kill();
}

#[test]
fn a_cycle_that_could_not_deliver_is_taken_up_at_the_next_start() {
    let (p, dir) = platform_and_sender(today());
    let config = std::fs::read_to_string(dir.join("atmp-emetteur.toml")).unwrap();
    // First start: nothing listens at the platform's address.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    std::fs::write(
        dir.join("atmp-emetteur.toml"),
        config
            .replace(&p.ftps, &closed)
            .replace("tentatives = 3", "tentatives = 2"),
    )
    .unwrap();
    let (rc, _, err) = atmp(&dir, &["sender", "run", "--once"], None);
    assert_eq!(rc, 1, "{err}");
    assert!(err.contains("connexion à"), "{err}");
    let cycles = journal(&dir);
    assert_eq!(cycles[0]["etat"], "echoue", "{:#}", cycles[0]);
    let files = cycles[0]["fichiers"].as_array().unwrap().clone();
    assert_eq!(files.len(), 4);
    assert!(files.iter().all(|f| f["etat"] == "a_envoyer"), "{files:#?}");
    assert_eq!(files[0]["tentatives"], 2);
    assert_eq!(p.sql("SELECT count(*) FROM job"), 0);

    // The next start, the platform reachable: the same files (same bytes) are delivered; no
    // new extraction of the same window.
    std::fs::write(dir.join("atmp-emetteur.toml"), config).unwrap();
    let (rc, out, err) = atmp(&dir, &["sender", "run", "--once"], None);
    assert_eq!(rc, 0, "{out}\n{err}");
    let cycles = journal(&dir);
    assert_eq!(cycles.len(), 2);
    assert_eq!(cycles[1]["etat"], "repris", "{:#}", cycles[1]);
    for (before, after) in files.iter().zip(cycles[1]["fichiers"].as_array().unwrap()) {
        assert_eq!(after["etat"], "livre", "{after:#}");
        assert_eq!(after["sha256"], before["sha256"]);
    }
    assert_eq!(
        cycles[0]["fichiers"].as_array().unwrap().len(),
        0,
        "{:#}",
        cycles[0]
    );
    p.wait_jobs(4);
    assert_eq!(p.sql("SELECT count(*) FROM job"), 4);
    assert_eq!(
        p.sql("SELECT count(*) FROM import WHERE result = 'reussi'"),
        4
    );
}
