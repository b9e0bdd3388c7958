//! Replays at once on PostgreSQL: two replays of the same rejections, started together on two
//! connections, add each record once (the file transactions take turns per collectivité).

use atmp_integrator::{import_file, replay, ImportOptions, ReplayError};
use atmp_model::Siret;
use atmp_store::prelude::*;
use atmp_store::{AgentCorrection, Autorisation, PgStore, RejetQuery, Table};

const SDIS: &str = "28219002400012";
const NIR: &str = "184052153114629";

fn file(nom: &str, events: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<flux version=\"1.0\"><entete><emetteur>SOFIVAL</emetteur><typeFichier>DECLARATION</typeFichier><mode>COMPLET</mode><dateCreation>2016-01-10T10:00:00</dateCreation></entete>\
<collectivite siret=\"{SDIS}\"><agent><nir>{NIR}</nir><nomUsuel>{nom}</nomUsuel><prenom>Yannick</prenom><dateNaissance>1984-05-17</dateNaissance><sexe>M</sexe>{events}</agent></collectivite></flux>\n"
    )
}

fn ev(id: &str, date: &str) -> String {
    format!(
        "<evenement><identifiant>{id}</identifiant><type>AS</type><date>{date}</date></evenement>"
    )
}

fn opts(dir: &std::path::Path) -> ImportOptions<'static> {
    ImportOptions {
        emetteur: Some("SOFIVAL".into()),
        logs_dir: dir.to_path_buf(),
        display_name: None,
        progress: None,
        job_id: None,
        limits: atmp_flux::Limits::default(),
        files: None,
        replay: None,
        dry_run: false,
    }
}

#[test]
fn two_replays_at_once_add_each_record_once_on_postgres() {
    let (url, _) = atmp_store::test_support::fresh_database("replay");
    let dir = tempfile::tempdir().unwrap();
    let mut s = PgStore::connect(&url).unwrap();
    let sdis = Siret::parse(SDIS).unwrap();
    s.add_collectivite(&sdis, "SDIS", None).unwrap();
    s.add_emetteur("SOFIVAL", None).unwrap();
    s.set_autorisation("SOFIVAL", &sdis, Autorisation::Accordee, None)
        .unwrap();
    let a = dir.path().join("a.xml");
    std::fs::write(&a, file("CARDON", &ev("EV-1", "2015-11-08"))).unwrap();
    import_file(&mut s, &a, &opts(dir.path())).unwrap();
    let b = dir.path().join("b.xml");
    let two = format!("{}{}", ev("EV-1", "2015-11-08"), ev("EV-2", "2015-12-01"));
    std::fs::write(&b, file("CARDONNE", &two)).unwrap();
    let o = import_file(&mut s, &b, &opts(dir.path())).unwrap();
    let (rows, _) = s
        .rejets(&RejetQuery {
            import_id: Some(o.import_id),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(rows.len(), 1);
    s.correct_agent(
        &sdis,
        NIR,
        &AgentCorrection {
            nom_usuel: Some("CARDONNE".into()),
            ..Default::default()
        },
        "test",
    )
    .unwrap();
    assert_eq!(s.count(Table::Evenement).unwrap(), 1);
    let results: Vec<_> = std::thread::scope(|sc| {
        let runs: Vec<_> = (0..2)
            .map(|_| {
                let url = url.clone();
                let logs = dir.path().join("logs");
                sc.spawn(move || {
                    let mut s = PgStore::connect(&url).unwrap();
                    replay(&mut s, o.import_id, None, &opts(&logs)).map(|o| o.counts)
                })
            })
            .collect();
        runs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut added = 0;
    for r in &results {
        match r {
            Ok(c) => added += c.get(atmp_flux::spec::RecordKind::Evenement).0,
            // The second read the rejections after the first closed them.
            Err(ReplayError::Nothing(_)) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(added, 1, "{results:?}");
    assert_eq!(s.count(Table::Evenement).unwrap(), 2);
    let (rows, _) = s
        .rejets(&RejetQuery {
            import_id: Some(o.import_id),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(rows[0].etat, atmp_store::RejetEtat::Rejoue);
}

/// A dry run leaves the checksum of every table as it was, on both backends; the same file
/// imported for real changes them.
#[test]
fn a_dry_run_leaves_every_table_checksum_unchanged() {
    let (url, _) = atmp_store::test_support::fresh_database("essai");
    let dir = tempfile::tempdir().unwrap();
    let stores: Vec<Box<dyn Store>> = vec![
        Box::new(atmp_store::SqliteStore::open(&dir.path().join("b.db")).unwrap()),
        Box::new(PgStore::connect(&url).unwrap()),
    ];
    for mut s in stores {
        let sdis = Siret::parse(SDIS).unwrap();
        s.add_collectivite(&sdis, "SDIS", None).unwrap();
        s.add_emetteur("SOFIVAL", None).unwrap();
        s.set_autorisation("SOFIVAL", &sdis, Autorisation::Accordee, None)
            .unwrap();
        let a = dir.path().join("a.xml");
        std::fs::write(&a, file("CARDON", &ev("EV-1", "2015-11-08"))).unwrap();
        import_file(&mut *s, &a, &opts(dir.path())).unwrap();
        let before = s.checksums().unwrap();
        assert!(before.iter().any(|(t, _)| t == "rejet"), "{before:?}");
        let b = dir.path().join("b.xml");
        let two = format!("{}{}", ev("EV-1", "2015-11-08"), ev("EV-2", "2015-12-01"));
        std::fs::write(&b, file("CARDONNE", &two)).unwrap();
        let mut o = opts(&dir.path().join("essais"));
        o.dry_run = true;
        let out = import_file(&mut *s, &b, &o).unwrap();
        assert_eq!(out.import_id, 0);
        assert_eq!(out.counts.get(atmp_flux::spec::RecordKind::Agent).2, 1);
        // Also a file the platform rejects whole, and a duplicate: nothing recorded.
        let bad = dir.path().join("bad.xml");
        std::fs::write(&bad, "<flux version=\"1.0\"><entete>").unwrap();
        import_file(&mut *s, &bad, &o).unwrap();
        import_file(&mut *s, &a, &o).unwrap();
        assert_eq!(s.checksums().unwrap(), before);
        import_file(&mut *s, &b, &opts(dir.path())).unwrap();
        let after = s.checksums().unwrap();
        let changed: Vec<&str> = after
            .iter()
            .zip(&before)
            .filter(|(x, y)| x != y)
            .map(|(x, _)| x.0.as_str())
            .collect();
        assert!(
            changed.contains(&"rejet") && changed.contains(&"import"),
            "{changed:?}"
        );
    }
}
