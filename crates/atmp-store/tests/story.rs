//! One story per concern, run on both backends (as atuin does): the same calls give the same
//! answers on SQLite and on PostgreSQL. This version covers the concerns the PostgreSQL
//! backend implements so far: reference data, accounts and sessions, the job queue, the mail
//! outbox, the audit trail.

mod common;

use atmp_model::{Nomenclature, NomenclatureEntry, Siret};
use atmp_store::prelude::*;
use atmp_store::{
    AuditEvent, Autorisation, ImportResult, ImportRow, JobState, NewMail, NewUtilisateur, PgStore,
    Role, SqliteStore,
};
use common::pg_database;

const SDIS: &str = "28219002400012";
const CDG: &str = "28219010700049";
const COMMUNE: &str = "21219781800017";

fn siret(s: &str) -> Siret {
    Siret::parse(s).unwrap()
}

fn reference_story<S: ReferenceStore>(s: &mut S) {
    let sdis = s.add_collectivite(&siret(SDIS), "SDIS", None).unwrap();
    assert_eq!(sdis.siret.as_str(), SDIS);
    let e = s.add_collectivite(&siret(SDIS), "SDIS", None).unwrap_err();
    assert!(e.to_string().contains("existe déjà"), "{e}");
    let e = s
        .add_collectivite(&siret(COMMUNE), "Commune", Some(&siret(CDG)))
        .unwrap_err();
    assert!(e.to_string().contains("n'existe pas"), "{e}");
    s.add_collectivite(&siret(CDG), "CDG", None).unwrap();
    let c = s
        .add_collectivite(&siret(COMMUNE), "Commune", Some(&siret(CDG)))
        .unwrap();
    assert_eq!(c.cdg_siret.as_ref().map(|s| s.as_str()), Some(CDG));
    let all: Vec<String> = s
        .collectivites()
        .unwrap()
        .into_iter()
        .map(|c| c.siret.to_string())
        .collect();
    assert_eq!(all, vec![COMMUNE, SDIS, CDG]);
    assert!(s.set_cdg(&siret(CDG), Some(&siret(CDG))).is_err());
    s.set_cdg(&siret(COMMUNE), None).unwrap();
    assert_eq!(
        s.collectivite(&siret(COMMUNE)).unwrap().unwrap().cdg_siret,
        None
    );
    assert!(s.collectivite(&siret("00000000000000")).unwrap().is_none());

    let e1 = s.add_emetteur("SOFIVAL", Some("Sofival")).unwrap();
    let e2 = s.add_emetteur("SOFIVAL", None).unwrap();
    assert_eq!(e1.id, e2.id, "adding again is harmless");
    s.add_emetteur("CDGVAUCL", None).unwrap();
    s.set_autorisation(
        "SOFIVAL",
        &siret(SDIS),
        Autorisation::Accordee,
        Some("accord 1"),
    )
    .unwrap();
    s.set_autorisation(
        "SOFIVAL",
        &siret(SDIS),
        Autorisation::Retiree,
        Some("retrait"),
    )
    .unwrap();
    assert!(s
        .set_autorisation(
            "SOFIVAL",
            &siret("00000000000000"),
            Autorisation::Accordee,
            None
        )
        .is_err());
    let e = s.emetteur("SOFIVAL").unwrap().unwrap();
    assert_eq!(e.autorisations.len(), 1);
    assert_eq!(e.autorisations[0].1, Autorisation::Retiree);
    assert_eq!(e.autorisations[0].3.as_deref(), Some("retrait"));
    let codes: Vec<String> = s.emetteurs().unwrap().into_iter().map(|e| e.code).collect();
    assert_eq!(codes, vec!["CDGVAUCL", "SOFIVAL"]);
    assert_eq!(s.emetteur_password("SOFIVAL").unwrap(), None);
    s.set_emetteur_password("SOFIVAL", "$argon2id$…").unwrap();
    assert_eq!(
        s.emetteur_password("SOFIVAL").unwrap().as_deref(),
        Some("$argon2id$…")
    );
    assert!(s.set_emetteur_password("INCONNU", "x").is_err());

    assert!(s.add_service(sdis.id, "CIS", Some("Centre")).unwrap());
    assert!(!s.add_service(sdis.id, "CIS", Some("Autre")).unwrap());
    assert_eq!(
        s.services(sdis.id).unwrap(),
        vec![(
            s.services(sdis.id).unwrap()[0].0,
            "CIS".to_string(),
            Some("Centre".to_string())
        )]
    );

    // The built-in nomenclatures are there from the start.
    let builtin = s.nomenclature_entries().unwrap();
    assert!(builtin
        .iter()
        .any(|e| e.nomenclature == Nomenclature::TypeEvenement && e.code == "AS"));
    assert_eq!(s.nomenclature_versions().unwrap()[0].1, "livree");
    let entries = vec![
        NomenclatureEntry {
            nomenclature: Nomenclature::Regime,
            code: "CNRACL".into(),
            libelle: "CNRACL".into(),
        },
        NomenclatureEntry {
            nomenclature: Nomenclature::Regime,
            code: "RG".into(),
            libelle: "Régime général".into(),
        },
    ];
    s.replace_nomenclatures(&entries, "essai-1", "abc").unwrap();
    let now: Vec<NomenclatureEntry> = s.nomenclature_entries().unwrap();
    let regime: Vec<&str> = now
        .iter()
        .filter(|e| e.nomenclature == Nomenclature::Regime)
        .map(|e| e.code.as_str())
        .collect();
    assert_eq!(regime, vec!["CNRACL", "RG"]);
    // Only the nomenclatures named in the import are replaced.
    assert!(now
        .iter()
        .any(|e| e.nomenclature == Nomenclature::TypeEvenement && e.code == "AS"));
    assert_eq!(
        now.len(),
        builtin.len()
            - builtin
                .iter()
                .filter(|e| e.nomenclature == Nomenclature::Regime)
                .count()
            + 2
    );
    let versions = s.nomenclature_versions().unwrap();
    assert_eq!(versions.last().unwrap().0, "essai-1");
    assert_eq!(versions.last().unwrap().2, 2);
}

fn audit_story<S: AuditStore>(s: &mut S) {
    for i in 0..5 {
        s.add_audit(&AuditEvent {
            actor: format!("u{i}"),
            action: "connexion".into(),
            detail: String::new(),
            address: "127.0.0.1".into(),
        })
        .unwrap();
    }
    let (total, page) = s.audit_page(1, 2).unwrap();
    assert_eq!(total, 5);
    let actors: Vec<&str> = page.iter().map(|r| r.event.actor.as_str()).collect();
    assert_eq!(actors, vec!["u3", "u2"], "latest first, paged");
}

fn accounts_story<S: ReferenceStore + AccountStore>(s: &mut S) {
    s.add_collectivite(&siret(CDG), "CDG", None).unwrap();
    let new = |login: &str, role: Role, c: Option<&str>| NewUtilisateur {
        login: login.into(),
        password_hash: "$argon2id$h".into(),
        role,
        collectivite: c.map(Into::into),
        email: Some(format!("{login}@exemple.invalid")),
        doit_changer: true,
    };
    assert_eq!(s.count_utilisateurs().unwrap(), 0);
    let admin = s
        .add_utilisateur(&new("admin", Role::Plateforme, None))
        .unwrap();
    assert!(admin.doit_changer && admin.actif && admin.collectivite_id.is_none());
    let cdg = s
        .add_utilisateur(&new("cdg", Role::Cdg, Some(CDG)))
        .unwrap();
    assert_eq!(cdg.collectivite_siret.as_deref(), Some(CDG));
    assert_eq!(cdg.collectivite_nom.as_deref(), Some("CDG"));
    for (bad, why) in [
        (new("cdg", Role::Cdg, Some(CDG)), "déjà pris"),
        (new("x", Role::Cdg, None), "demande une collectivité"),
        (new("y", Role::Plateforme, Some(CDG)), "aucune collectivité"),
        (new("z", Role::Collectivite, Some(SDIS)), "n'existe pas"),
        (new(" ", Role::Plateforme, None), "vide"),
    ] {
        let e = s.add_utilisateur(&bad).unwrap_err().to_string();
        assert!(e.contains(why), "{e}");
    }
    assert_eq!(s.count_utilisateurs().unwrap(), 2);
    let logins: Vec<String> = s
        .utilisateurs()
        .unwrap()
        .into_iter()
        .map(|u| u.login)
        .collect();
    assert_eq!(logins, vec!["admin", "cdg"]);
    s.set_utilisateur_password(cdg.id, "$argon2id$new", false)
        .unwrap();
    let u = s.utilisateur("cdg").unwrap().unwrap();
    assert_eq!(
        (u.password_hash.as_str(), u.doit_changer),
        ("$argon2id$new", false)
    );
    assert_eq!(
        s.utilisateur_by_id(admin.id).unwrap().unwrap().login,
        "admin"
    );
    assert!(s.utilisateur("nobody").unwrap().is_none());

    // Sessions: valid until they expire; deleted one by one, all but one, or with the user.
    s.create_session("t1", cdg.id, "csrf1", "2999-01-01T00:00:00")
        .unwrap();
    s.create_session("t2", cdg.id, "csrf2", "2999-01-01T00:00:00")
        .unwrap();
    s.create_session("t3", cdg.id, "csrf3", "2999-01-01T00:00:00")
        .unwrap();
    s.create_session("old", admin.id, "c", "2000-01-01T00:00:00")
        .unwrap();
    let (u, csrf) = s.session("t1", "2026-12-02T10:00:00").unwrap().unwrap();
    assert_eq!((u.login.as_str(), csrf.as_str()), ("cdg", "csrf1"));
    assert!(
        s.session("t1", "3000-01-01T00:00:00").unwrap().is_none(),
        "expired"
    );
    assert!(s.session("old", "2026-12-02T10:00:00").unwrap().is_none());
    s.delete_session("t1").unwrap();
    assert!(s.session("t1", "2026-12-02T10:00:00").unwrap().is_none());
    s.delete_sessions_of(cdg.id, Some("t3")).unwrap();
    assert!(s.session("t2", "2026-12-02T10:00:00").unwrap().is_none());
    assert!(s.session("t3", "2026-12-02T10:00:00").unwrap().is_some());
    s.delete_sessions_of(cdg.id, None).unwrap();
    assert!(s.session("t3", "2026-12-02T10:00:00").unwrap().is_none());
    // A deactivated user loses its sessions and cannot use one.
    s.create_session("t4", cdg.id, "csrf4", "2999-01-01T00:00:00")
        .unwrap();
    s.set_utilisateur_actif(cdg.id, false).unwrap();
    assert!(!s.utilisateur("cdg").unwrap().unwrap().actif);
    assert!(s.session("t4", "2026-12-02T10:00:00").unwrap().is_none());
    s.set_utilisateur_actif(cdg.id, true).unwrap();
    assert!(s.session("t4", "2026-12-02T10:00:00").unwrap().is_none());
}

/// The job queue and the mail outbox. `import` records an import row for a job (the
/// PostgreSQL backend has no `ImportStore` yet: the test writes that row itself).
fn jobs_and_mail_story<S: ReferenceStore + AccountStore + JobStore + MailStore>(
    s: &mut S,
    import: &mut dyn FnMut(&mut S, i64) -> i64,
) {
    assert!(s.next_job().unwrap().is_none());
    let a = s.add_job("SOFIVAL", "a.xml", "/recus/1-a.xml", 10).unwrap();
    let b = s.add_job("SOFIVAL", "b.xml", "/recus/2-b.xml", 20).unwrap();
    assert!(
        s.add_job("SOFIVAL", "a.xml", "/recus/1-a.xml", 10).is_err(),
        "one job per stored file"
    );
    assert_eq!(s.pending_jobs().unwrap(), 2);
    let j = s.next_job().unwrap().unwrap();
    assert_eq!(
        (j.id, j.state, j.attempts, j.size),
        (a, JobState::Attente, 0, 10)
    );
    s.set_job_state(a, JobState::EnCours, None).unwrap();
    s.set_job_state(a, JobState::Attente, Some("base occupée"))
        .unwrap();
    s.set_job_state(a, JobState::EnCours, None).unwrap();
    let j = s.job(a).unwrap().unwrap();
    assert_eq!(
        (j.state, j.attempts),
        (JobState::EnCours, 2),
        "each start counted"
    );
    assert_eq!(
        s.next_job().unwrap().unwrap().id,
        a,
        "an interrupted job comes first"
    );
    assert!(s.import_of_job(a).unwrap().is_none());
    let imp = import(s, a);
    assert_eq!(s.import_of_job(a).unwrap(), Some(imp));
    s.finish_job(a, imp, "f00d").unwrap();
    assert_eq!(s.job(a).unwrap().unwrap().state, JobState::Fait);
    assert_eq!(s.next_job().unwrap().unwrap().id, b);
    assert_eq!(s.pending_jobs().unwrap(), 1);
    let mut paths = s.job_paths().unwrap();
    paths.sort();
    assert_eq!(paths, vec!["/recus/1-a.xml", "/recus/2-b.xml"]);

    // Recipients: a collectivité's users for its log, the CDG's admins for the global log.
    s.add_collectivite(&siret(CDG), "CDG", None).unwrap();
    for (login, role) in [
        ("cdg", Role::Cdg),
        ("agent", Role::Collectivite),
        ("chef", Role::CollectiviteAdmin),
    ] {
        s.add_utilisateur(&NewUtilisateur {
            login: login.into(),
            password_hash: "h".into(),
            role,
            collectivite: Some(CDG.into()),
            email: Some(format!("{login}@exemple.invalid")),
            doit_changer: false,
        })
        .unwrap();
    }
    assert_eq!(
        s.destinataires(CDG, true).unwrap(),
        vec!["cdg@exemple.invalid"]
    );
    assert_eq!(
        s.destinataires(CDG, false).unwrap(),
        vec!["agent@exemple.invalid", "chef@exemple.invalid"]
    );
    let chef = s.utilisateur("chef").unwrap().unwrap();
    s.set_utilisateur_actif(chef.id, false).unwrap();
    assert_eq!(
        s.destinataires(CDG, false).unwrap(),
        vec!["agent@exemple.invalid"]
    );

    // The outbox: one mail per (import, recipient), retried until sent or given up.
    let mail = |to: &str| NewMail {
        import_id: imp,
        recipient: to.into(),
        subject: "Import réussi".into(),
        body: "…".into(),
        attachments: vec![("journal.log".into(), "/logs/1.log".into())],
    };
    s.enqueue_mail(&mail("x@exemple.invalid")).unwrap();
    s.enqueue_mail(&mail("x@exemple.invalid")).unwrap();
    s.enqueue_mail(&mail("y@exemple.invalid")).unwrap();
    let due = s
        .claim_mails("2999-01-01T00:00:00", "2999-01-01T00:10:00", 10)
        .unwrap();
    assert_eq!(due.len(), 2, "queued once per recipient");
    assert!(
        s.claim_mails("2999-01-01T00:05:00", "2999-01-01T00:15:00", 10)
            .unwrap()
            .is_empty(),
        "claimed once: another instance does not send them too"
    );
    assert_eq!(
        due[0].attachments,
        vec![("journal.log".to_string(), "/logs/1.log".to_string())]
    );
    assert!(
        s.claim_mails("2000-01-01T00:00:00", "2000-01-01T00:10:00", 10)
            .unwrap()
            .is_empty(),
        "not due yet"
    );
    s.mail_sent(due[0].id).unwrap();
    s.mail_failed(due[1].id, "421", Some("2999-06-01T00:00:00"))
        .unwrap();
    let again = s
        .claim_mails("2999-12-31T00:00:00", "2999-12-31T00:10:00", 10)
        .unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!((again[0].id, again[0].attempts), (due[1].id, 1));
    assert!(
        s.claim_mails("2999-01-02T00:00:00", "2999-01-02T00:10:00", 10)
            .unwrap()
            .is_empty(),
        "retried later"
    );
    // A claim whose sender died: due again once its lease is over.
    let back = s
        .claim_mails("2999-12-31T00:11:00", "2999-12-31T00:21:00", 10)
        .unwrap();
    assert_eq!(back.len(), 1, "the lease is over");
    s.mail_failed(due[1].id, "550", None).unwrap();
    assert!(
        s.claim_mails("3000-01-01T00:00:00", "3000-01-01T00:10:00", 10)
            .unwrap()
            .is_empty(),
        "given up"
    );
}

fn import_row(job: i64) -> ImportRow {
    ImportRow {
        file_name: "a.xml".into(),
        sha256: "f00d".into(),
        started_at: "2026-12-02T10:00:00".into(),
        finished_at: Some("2026-12-02T10:00:01".into()),
        result: ImportResult::Reussi,
        label: "Import réussi".into(),
        job_id: Some(job),
        ..Default::default()
    }
}

#[test]
fn jobs_and_mail_on_sqlite() {
    jobs_and_mail_story(&mut SqliteStore::memory().unwrap(), &mut |s, job| {
        s.record_import(&import_row(job), &[]).unwrap()
    });
}

#[test]
fn jobs_and_mail_on_postgres() {
    let url = pg_database("story_jobs");
    let mut raw = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let mut store = PgStore::connect(&url).unwrap();
    jobs_and_mail_story(&mut store, &mut |_, job| {
        let r = import_row(job);
        raw.query_one(
            "INSERT INTO import (file_name, sha256, size, started_at, finished_at, result, label, job_id) \
             VALUES ($1, $2, 0, $3, $4, 'reussi', $5, $6) RETURNING id",
            &[&r.file_name, &r.sha256, &r.started_at, &r.finished_at, &r.label, &r.job_id],
        )
        .unwrap()
        .get(0)
    });
}

#[test]
fn accounts_and_sessions_on_sqlite() {
    accounts_story(&mut SqliteStore::memory().unwrap());
}

#[test]
fn accounts_and_sessions_on_postgres() {
    accounts_story(&mut PgStore::connect(&pg_database("story_accounts")).unwrap());
}

#[test]
fn reference_data_on_sqlite() {
    reference_story(&mut SqliteStore::memory().unwrap());
}

#[test]
fn reference_data_on_postgres() {
    let url = pg_database("story_ref");
    reference_story(&mut PgStore::connect(&url).unwrap());
    // Connecting again applies no migration twice.
    let mut again = PgStore::connect(&url).unwrap();
    assert_eq!(again.collectivites().unwrap().len(), 3);
}

#[test]
fn audit_trail_on_sqlite() {
    audit_story(&mut SqliteStore::memory().unwrap());
}

#[test]
fn audit_trail_on_postgres() {
    audit_story(&mut PgStore::connect(&pg_database("story_audit")).unwrap());
}

#[test]
fn several_instances_starting_at_once_migrate_once() {
    let url = pg_database("story_concurrent");
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || PgStore::connect(&url).map(|_| ()))
        })
        .collect();
    for h in handles {
        h.join().unwrap().unwrap();
    }
    let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let n: i64 = c
        .query_one("SELECT count(*) FROM atmp_migration", &[])
        .unwrap()
        .get(0);
    assert_eq!(n as usize, atmp_store::POSTGRES_MIGRATIONS.len());
}

/// A file's transaction: what it inserts is visible to its own lookups, a failure (here a
/// row the schema refuses, which PostgreSQL only meets when the buffered rows are sent)
/// comes back as an error and leaves nothing stored, and the store goes on with the next file.
fn file_story(s: &mut dyn Store) {
    use atmp_store::{Cell, Table};
    s.add_collectivite(&siret(SDIS), "SDIS", None).unwrap();
    let coll = s.collectivite(&siret(SDIS)).unwrap().unwrap().id;
    let row = ImportRow {
        job_id: None,
        ..import_row(0)
    };
    let cols = [
        "nir",
        "nom_usuel",
        "prenom",
        "date_naissance",
        "sexe",
        "nom_norm",
        "prenom_norm",
    ];
    let agent = |nir: &str, nom: Option<&str>| -> Vec<Cell> {
        vec![
            Cell::Text(nir.into()),
            nom.map_or(Cell::Null, |n| Cell::Text(n.into())),
            Cell::Text("Martine".into()),
            Cell::Text("1966-09-23".into()),
            Cell::Text("F".into()),
            Cell::Text(nom.unwrap_or("").into()),
            Cell::Text("MARTINE".into()),
        ]
    };
    // A refused row: nom_usuel is NOT NULL.
    let failed = (|| -> atmp_store::Result<()> {
        let mut tx = s.begin_file(&row)?;
        let ins = tx.prepare_insert(Table::Agent, &cols)?;
        tx.insert(ins, coll, &agent("266092105426383", Some("GRANDJEAN")))?;
        tx.insert(ins, coll, &agent("158022161705230", None))?;
        tx.commit(&row, &[])
    })();
    assert!(failed.is_err(), "the refused row fails the file");
    assert_eq!(s.count(Table::Agent).unwrap(), 0, "nothing of it is stored");

    // The next file: its rows are found by its own lookups before and after commit.
    let mut tx = s.begin_file(&row).unwrap();
    let ins = tx.prepare_insert(Table::Agent, &cols).unwrap();
    let by_nir = tx
        .prepare_find(Table::Agent, &["nir"], &["nom_usuel"])
        .unwrap();
    let nir = Cell::Text("266092105426383".into());
    assert!(tx
        .find(by_nir, coll, std::slice::from_ref(&nir))
        .unwrap()
        .is_none());
    let id = tx
        .insert(ins, coll, &agent("266092105426383", Some("GRANDJEAN")))
        .unwrap();
    let f = tx
        .find(by_nir, coll, std::slice::from_ref(&nir))
        .unwrap()
        .unwrap();
    assert_eq!((f.id, f.cells), (id, vec![Cell::Text("GRANDJEAN".into())]));
    assert!(tx
        .find(by_nir, coll + 1, std::slice::from_ref(&nir))
        .unwrap()
        .is_none());
    tx.commit(&row, &[]).unwrap();
    assert_eq!(s.count(Table::Agent).unwrap(), 1);
    let mut tx = s.begin_file(&row).unwrap();
    let by_nir = tx
        .prepare_find(Table::Agent, &["nir"], &["nom_usuel"])
        .unwrap();
    assert_eq!(tx.find(by_nir, coll, &[nir]).unwrap().unwrap().id, id);
    // Dropped without commit: rolled back.
    let ins = tx.prepare_insert(Table::Agent, &cols).unwrap();
    tx.insert(ins, coll, &agent("158022161705230", Some("PASQUIER")))
        .unwrap();
    drop(tx);
    assert_eq!(s.count(Table::Agent).unwrap(), 1);
}

#[test]
fn file_transaction_on_sqlite() {
    file_story(&mut SqliteStore::memory().unwrap());
}

#[test]
fn file_transaction_on_postgres() {
    let mut pg = PgStore::connect(&pg_database("story_file")).unwrap();
    file_story(&mut pg);
    // With a flush at every row, the refused row fails at its own insert or at commit.
    let mut pg = PgStore::connect(&pg_database("story_file_flush")).unwrap();
    pg.set_flush_rows(1);
    file_story(&mut pg);
}

/// The order of jobs: two files whose senders share an authorised collectivité go one after
/// the other, in arrival order; a file of an unrelated sender does not wait for them.
fn setup_order(s: &mut dyn Store) -> (i64, i64, i64) {
    s.add_collectivite(&siret(SDIS), "SDIS", None).unwrap();
    s.add_collectivite(&siret(CDG), "CDG", None).unwrap();
    s.add_collectivite(&siret(COMMUNE), "Commune", None)
        .unwrap();
    for (e, c) in [("SOFIVAL", SDIS), ("ASSUREUR", SDIS), ("CDGVAUCL", COMMUNE)] {
        s.add_emetteur(e, None).unwrap();
        s.set_autorisation(e, &siret(c), Autorisation::Accordee, None)
            .unwrap();
    }
    let j1 = s.add_job("SOFIVAL", "1.xml", "/recus/1.xml", 1).unwrap();
    let j2 = s.add_job("ASSUREUR", "2.xml", "/recus/2.xml", 1).unwrap();
    let j3 = s.add_job("CDGVAUCL", "3.xml", "/recus/3.xml", 1).unwrap();
    (j1, j2, j3)
}

fn file_row(job: i64) -> ImportRow {
    ImportRow {
        job_id: Some(job),
        result: ImportResult::EnCours,
        finished_at: None,
        ..import_row(job)
    }
}

#[test]
fn jobs_go_in_order_per_collectivite_on_sqlite() {
    let mut s = SqliteStore::memory().unwrap();
    let (j1, j2, j3) = setup_order(&mut s);
    assert_eq!(s.next_job().unwrap().unwrap().id, j1);
    let imp = s.record_import(&import_row(j1), &[]).unwrap();
    // Integrated, not yet published: still offered (to publish), and no longer holds j2 back.
    assert_eq!(s.next_job().unwrap().unwrap().id, j1);
    s.finish_job(j1, imp, "f00d").unwrap();
    assert_eq!(s.next_job().unwrap().unwrap().id, j2);
    // A job whose import exists is not integrated again.
    let e = s.begin_file(&file_row(j1)).err().unwrap();
    assert!(
        matches!(e, atmp_store::StoreError::JobTaken(j) if j == j1),
        "{e}"
    );
    let _ = j3;
}

#[test]
fn jobs_are_claimed_by_the_file_transaction_on_postgres() {
    let url = pg_database("story_claim");
    let mut a = PgStore::connect(&url).unwrap();
    let mut b = PgStore::connect(&url).unwrap();
    let (j1, j2, j3) = setup_order(&mut a);
    assert_eq!(b.next_job().unwrap().unwrap().id, j1);
    {
        // Instance A integrates j1: its file transaction holds the job.
        let tx = a.begin_file(&file_row(j1)).unwrap();
        // B does not see j1 any more, nor j2 (same collectivité, after j1): j3 is next.
        assert_eq!(b.next_job().unwrap().unwrap().id, j3);
        let e = b.begin_file(&file_row(j1)).err().unwrap();
        assert!(
            matches!(e, atmp_store::StoreError::JobTaken(j) if j == j1),
            "{e}"
        );
        // B's state changes leave a job A holds as it is, without waiting for A.
        b.set_job_state(j1, JobState::Attente, Some("ailleurs"))
            .unwrap();
        drop(tx);
    }
    // A died (rolled back): j1 is free again at once, for anyone.
    assert_eq!(b.next_job().unwrap().unwrap().id, j1);
    let tx = b.begin_file(&file_row(j1)).unwrap();
    // Committed by B: j1 is integrated once; A cannot take it again.
    let row = import_row(j1);
    tx.commit(&row, &[]).unwrap();
    let e = a.begin_file(&file_row(j1)).err().unwrap();
    assert!(matches!(e, atmp_store::StoreError::JobTaken(_)), "{e}");
    let imp = a.import_of_job(j1).unwrap().unwrap();
    a.finish_job(j1, imp, "f00d").unwrap();
    assert_eq!(a.next_job().unwrap().unwrap().id, j2);
    // The news reaches a listening instance (listening from its first wait on).
    assert!(!b
        .wait_for_jobs(std::time::Duration::from_millis(10))
        .unwrap());
    let t =
        std::thread::spawn(move || b.wait_for_jobs(std::time::Duration::from_secs(20)).unwrap());
    a.add_job("SOFIVAL", "4.xml", "/recus/4.xml", 1).unwrap();
    assert!(t.join().unwrap(), "a job added wakes the other instances");
}

/// The file store: a file kept is read back byte for byte, its size is known, and it is gone
/// once removed; a file kept in a file's transaction exists only if that transaction commits.
fn files_story(files: &dyn atmp_store::FileStore, s: &mut dyn Store, dir: &std::path::Path) {
    // 5 MiB and a few bytes: several chunks, the last one short.
    let bytes: Vec<u8> = (0..(5 << 20) + 123u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let local = dir.join("recu.xml");
    std::fs::write(&local, &bytes).unwrap();
    let key = files.keep(&local).unwrap();
    assert_eq!(atmp_store::is_local_key(&key), !files.in_base(), "{key}");
    if files.in_base() {
        // The base's copy does not depend on the local file.
        std::fs::remove_file(&local).unwrap();
    }
    let mut back = Vec::new();
    std::io::Read::read_to_end(&mut files.open(&key).unwrap(), &mut back).unwrap();
    assert!(
        back == bytes,
        "read back {} bytes of {}",
        back.len(),
        bytes.len()
    );
    // Text as logs and XML are (compressible), of several chunks once compressed or not.
    let text: String = (0..400_000)
        .map(|i| format!("2026-12-03T10:00:00;INFO;{i};;;Agent {} ajouté\n", i * 7))
        .collect();
    let local = dir.join("journal-long.log");
    std::fs::write(&local, &text).unwrap();
    let text_key = files.keep(&local).unwrap();
    let mut back = String::new();
    std::io::Read::read_to_string(&mut files.open(&text_key).unwrap(), &mut back).unwrap();
    assert!(
        back == text,
        "read back {} bytes of {}",
        back.len(),
        text.len()
    );
    assert_eq!(
        files.sizes(std::slice::from_ref(&text_key)).unwrap(),
        vec![Some(text.len() as u64)]
    );
    let empty = dir.join("vide.log");
    std::fs::write(&empty, b"").unwrap();
    let empty_key = files.keep(&empty).unwrap();
    let mut back = Vec::new();
    std::io::Read::read_to_end(&mut files.open(&empty_key).unwrap(), &mut back).unwrap();
    assert!(back.is_empty());
    let missing = if files.in_base() {
        "lo:4000000000".to_string()
    } else {
        dir.join("absent").to_string_lossy().into_owned()
    };
    assert_eq!(
        files
            .sizes(&[key.clone(), empty_key.clone(), missing.clone()])
            .unwrap(),
        vec![Some(bytes.len() as u64), Some(0), None]
    );
    files.remove(&key).unwrap();
    files.remove(&key).unwrap();
    assert_eq!(files.sizes(std::slice::from_ref(&key)).unwrap(), vec![None]);
    let e = match files.open(&key) {
        Ok(_) => panic!("a removed file is not read"),
        Err(e) => e,
    };
    assert!(
        matches!(&e, atmp_store::StoreError::Io(io) if io.kind() == std::io::ErrorKind::NotFound),
        "{e}"
    );

    // The sweep: a file no row names goes once old enough; one a job names stays.
    let named = dir.join("nomme.xml");
    std::fs::write(&named, b"<fichier/>").unwrap();
    let named_key = files.keep(&named).unwrap();
    s.add_job("SOFIVAL", "nomme.xml", &named_key, 10).unwrap();
    let unnamed_key = files.keep(&named).unwrap();
    assert_eq!(files.sweep("2000-01-01T00:00:00").unwrap(), 0, "too recent");
    let swept = files.sweep("2999-01-01T00:00:00").unwrap();
    let left = files
        .sizes(&[named_key.clone(), unnamed_key.clone()])
        .unwrap();
    if files.in_base() {
        // The text and empty files above are not named either.
        assert_eq!(swept, 3);
        assert_eq!(left, vec![Some(10), None]);
    } else {
        assert_eq!((swept, left), (0, vec![Some(10), Some(10)]));
    }

    // In a file's transaction (PostgreSQL): rolled back, the log does not exist.
    let log = dir.join("journal.log");
    std::fs::write(&log, b"2026-12-03;INFO;;;;Debut\n").unwrap();
    let row = ImportRow {
        job_id: None,
        ..import_row(0)
    };
    let mut tx = s.begin_file(&row).unwrap();
    let rolled_back = tx.store_file(&log).unwrap();
    drop(tx);
    let mut tx = s.begin_file(&row).unwrap();
    let committed = tx.store_file(&log).unwrap();
    tx.commit(&row, &[]).unwrap();
    match (rolled_back, committed) {
        (Some(r), Some(c)) => {
            assert!(files.in_base());
            assert_eq!(files.sizes(&[r, c.clone()]).unwrap(), vec![None, Some(25)]);
            let mut back = String::new();
            std::io::Read::read_to_string(&mut files.open(&c).unwrap(), &mut back).unwrap();
            assert_eq!(back, "2026-12-03;INFO;;;;Debut\n");
        }
        (None, None) => assert!(!files.in_base(), "SQLite keeps logs on disk"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn files_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let files = atmp_store::open_files("sqlite:///x.db", dir.path()).unwrap();
    files_story(
        files.as_ref(),
        &mut SqliteStore::memory().unwrap(),
        dir.path(),
    );
}

#[test]
fn files_on_postgres() {
    let dir = tempfile::tempdir().unwrap();
    let url = pg_database("story_files");
    let files = atmp_store::open_files(&url, dir.path()).unwrap();
    assert!(files.in_base());
    files_story(
        files.as_ref(),
        &mut PgStore::connect(&url).unwrap(),
        dir.path(),
    );
}
