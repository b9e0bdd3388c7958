//! The rules of SOURCE.md on hand-made source bases: consent, both window edges, old
//! declarations with new children, the anteriority limit, invalid rows, the néant file, file
//! names and the CDG grouping. Each test would fail without the rule it names.

use std::path::{Path, PathBuf};

use atmp_model::{Date, Nomenclatures};
use atmp_sender::demo::{nir, CCAS, CDG, COMMUNE, SCHEMA, SDIS};
use atmp_sender::export::{export, ExportMode, ExportOptions, Report};
use atmp_sender::source::Source;
use rusqlite::Connection;

#[derive(Clone, Copy, Debug)]
enum Backend {
    Sqlite,
    Postgres,
}

/// A hand-made source base, on SQLite or on a fresh PostgreSQL database of the server that
/// `scripts/test` starts (`ATMP_TEST_POSTGRES_URL`).
struct Src {
    _dir: tempfile::TempDir,
    url: String,
    sqlite: Option<Connection>,
    pg: Option<std::cell::RefCell<postgres::Client>>,
    ids: std::cell::Cell<i64>,
}

/// A SQL literal.
fn q(v: Option<&str>) -> String {
    match v {
        Some(v) => format!("'{}'", v.replace('\'', "''")),
        None => "NULL".into(),
    }
}

impl Src {
    fn new(b: Backend) -> Src {
        let dir = tempfile::tempdir().unwrap();
        match b {
            Backend::Sqlite => {
                let path = dir.path().join("source.db");
                let c = Connection::open(&path).unwrap();
                c.execute_batch(SCHEMA).unwrap();
                Src {
                    url: format!("sqlite://{}", path.display()),
                    _dir: dir,
                    sqlite: Some(c),
                    pg: None,
                    ids: 1000.into(),
                }
            }
            Backend::Postgres => {
                let (url, _) = atmp_store::test_support::fresh_database("source");
                let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
                c.batch_execute(SCHEMA).unwrap();
                Src {
                    url,
                    _dir: dir,
                    sqlite: None,
                    pg: Some(c.into()),
                    ids: 1000.into(),
                }
            }
        }
    }
    fn exec(&self, sql: &str) {
        if let Some(c) = &self.sqlite {
            c.execute_batch(sql).unwrap();
        }
        if let Some(c) = &self.pg {
            c.borrow_mut().batch_execute(sql).unwrap();
        }
    }
    fn id(&self) -> i64 {
        self.ids.set(self.ids.get() + 1);
        self.ids.get()
    }
    fn url(&self) -> String {
        self.url.clone()
    }
    fn out(&self) -> PathBuf {
        self._dir.path().join("out")
    }
    fn coll(&self, siret: &str, cdg: Option<&str>, limite: Option<&str>) -> &Self {
        self.exec(&format!(
            "INSERT INTO collectivite (siret, nom, cdg_siret, limite_anteriorite) VALUES ({}, {}, {}, {})",
            q(Some(siret)), q(Some(siret)), q(cdg), q(limite)
        ));
        self
    }
    fn aut(&self, siret: &str, statut: &str, date: &str) -> &Self {
        self.exec(&format!(
            "INSERT INTO autorisation (id, collectivite_siret, statut, date) VALUES ({}, {}, {}, {})",
            self.id(), q(Some(siret)), q(Some(statut)), q(Some(date))
        ));
        self
    }
    fn service(&self, siret: &str, code: &str, saisi: &str) -> &Self {
        self.exec(&format!(
            "INSERT INTO service (collectivite_siret, code, libelle, saisi_le) VALUES ({}, {}, {}, {})",
            q(Some(siret)), q(Some(code)), q(Some(&format!("Service {code}"))), q(Some(saisi))
        ));
        self
    }
    fn agent(&self, id: i64, siret: &str, service: Option<&str>) -> &Self {
        self.agent_nir(id, siret, &nir("M", "1980-05-01", id as u32), service)
    }
    fn agent_nir(&self, id: i64, siret: &str, nir: &str, service: Option<&str>) -> &Self {
        self.exec(&format!(
            "INSERT INTO agent (id, collectivite_siret, nir, nom_usuel, prenom, date_naissance, sexe, service_code, saisi_le)
             VALUES ({id}, {}, {}, 'NOM{id}', 'Jean', '1980-05-01', 'M', {}, '2020-01-01T00:00:00')",
            q(Some(siret)), q(Some(nir)), q(service)
        ));
        self
    }
    fn event(&self, id: i64, agent: i64, ident: &str, t: &str, date: &str, saisi: &str) -> &Self {
        self.exec(&format!(
            "INSERT INTO evenement (id, agent_id, identifiant, type, date, no_tableau_maladie_pro, saisi_le) VALUES ({id}, {agent}, {}, {}, {}, {}, {})",
            q(Some(ident)), q(Some(t)), q(Some(date)), q(if t == "MP" { Some("57") } else { None }), q(Some(saisi))
        ));
        self
    }
    fn arret(&self, id: i64, ev: i64, debut: &str, fin: Option<&str>, saisi: &str) -> &Self {
        self.exec(&format!(
            "INSERT INTO arret (id, evenement_id, date_debut, date_fin, saisi_le) VALUES ({id}, {ev}, {}, {}, {})",
            q(Some(debut)), q(fin), q(Some(saisi))
        ));
        self
    }
    fn lesion(&self, id: i64, ev: i64, saisi: &str) -> &Self {
        self.exec(&format!(
            "INSERT INTO lesion (id, evenement_id, siege, nature, saisi_le) VALUES ({id}, {ev}, '53', '02', {})",
            q(Some(saisi))
        ));
        self
    }
    fn element(&self, ev: i64, code: &str) -> &Self {
        self.exec(&format!(
            "INSERT INTO element_materiel (evenement_id, code) VALUES ({ev}, {})",
            q(Some(code))
        ));
        self
    }

    fn run<'a>(&self, mode: ExportMode, f: impl FnOnce(&mut ExportOptions<'a>)) -> Report {
        let source = Source::open(&self.url()).unwrap();
        let mut o = ExportOptions {
            emetteur: "SOFIVAL".into(),
            mode,
            out: self.out(),
            jusqu_au: None,
            depuis: None,
            limite_anteriorite: None,
            gzip: false,
            now: chrono::NaiveDate::from_ymd_opt(2026, 11, 28)
                .unwrap()
                .and_hms_opt(2, 0, 0)
                .unwrap(),
            last_fin: &no_delivery,
            only: None,
        };
        f(&mut o);
        export(&source, &o).unwrap()
    }
}

/// One test body, run on both backends (as atuin does).
macro_rules! both {
    ($name:ident) => {
        mod $name {
            #[test]
            fn sqlite() {
                super::$name(super::Backend::Sqlite)
            }
            #[test]
            fn postgres() {
                super::$name(super::Backend::Postgres)
            }
        }
    };
}

fn no_delivery(_: &str) -> Option<Date> {
    None
}

fn d(s: &str) -> Date {
    Date::parse(s).unwrap()
}

fn text(p: &str) -> String {
    std::fs::read_to_string(p).unwrap()
}

fn file<'a>(r: &'a Report, dest: &str, t: &str) -> &'a atmp_sender::export::Fichier {
    r.fichiers
        .iter()
        .find(|f| f.destination == dest && f.type_fichier == t)
        .unwrap_or_else(|| panic!("no {t} file for {dest}: {:?}", r.fichiers))
}

fn valid(p: &str) {
    let v = atmp_flux::validate_path(
        Path::new(p),
        &Nomenclatures::builtin(),
        &atmp_flux::Limits::default(),
    );
    assert!(v.valid(), "{p}: {:?}", v.errors);
}

/// A SDIS that consented, with one agent.
fn sdis(b: Backend) -> Src {
    let s = Src::new(b);
    s.coll(SDIS, None, None).aut(SDIS, "accordee", "2026-01-01");
    s.service(SDIS, "CIS", "2020-01-01T00:00:00");
    s.agent(1, SDIS, Some("CIS"));
    s
}

both!(differentiel_window_includes_its_start_and_excludes_its_end);
fn differentiel_window_includes_its_start_and_excludes_its_end(b: Backend) {
    let s = sdis(b);
    s.event(1, 1, "IN-START", "AS", "2026-11-01", "2026-11-21T00:00:00")
        .event(2, 1, "IN-END", "AS", "2026-11-01", "2026-11-27T23:59:59")
        .event(3, 1, "OUT-END", "AS", "2026-11-01", "2026-11-28T00:00:00")
        .event(4, 1, "OUT-START", "AS", "2026-11-01", "2026-11-20T23:59:59");
    let r = s.run(ExportMode::Differentiel, |o| {
        o.depuis = Some(d("2026-11-21"));
        o.jusqu_au = Some(d("2026-11-28"));
    });
    let f = file(&r, SDIS, "DECLARATION");
    let t = text(&f.path);
    assert!(t.contains("<identifiant>IN-START</identifiant>"), "{t}");
    assert!(t.contains("<identifiant>IN-END</identifiant>"));
    assert!(!t.contains("OUT-END"));
    assert!(!t.contains("OUT-START"));
    assert_eq!((f.agents, f.evenements), (1, 2));
    assert!(t.contains("<periodeDebut>2026-11-21</periodeDebut>"));
    assert!(t.contains("<periodeFin>2026-11-27</periodeFin>"));
    assert!(t.contains("<nombreEvenements>2</nombreEvenements>"));
    assert_eq!(r.debut.as_deref(), Some("2026-11-21"));
    assert_eq!(r.fin.as_deref(), Some("2026-11-28"));
    valid(&f.path);
}

both!(default_window_is_the_seven_days_before_today_or_follows_the_last_delivered);
fn default_window_is_the_seven_days_before_today_or_follows_the_last_delivered(b: Backend) {
    let s = sdis(b);
    s.event(1, 1, "DAY-7", "AS", "2026-11-01", "2026-11-21T08:00:00")
        .event(2, 1, "DAY-8", "AS", "2026-11-01", "2026-11-20T08:00:00");
    let r = s.run(ExportMode::Differentiel, |_| {});
    let t = text(&file(&r, SDIS, "DECLARATION").path);
    assert!(t.contains("DAY-7") && !t.contains("DAY-8"), "{t}");
    // Chained to the last window delivered to this destination: a missed week is caught up.
    let s2 = sdis(b);
    s2.event(1, 1, "DAY-7", "AS", "2026-11-01", "2026-11-21T08:00:00")
        .event(2, 1, "DAY-8", "AS", "2026-11-01", "2026-11-20T08:00:00")
        .event(3, 1, "DAY-14", "AS", "2026-11-01", "2026-11-14T08:00:00");
    let last = |dest: &str| (dest == SDIS).then(|| d("2026-11-14"));
    let r = s2.run(ExportMode::Differentiel, |o| o.last_fin = &last);
    let f = file(&r, SDIS, "DECLARATION");
    let t = text(&f.path);
    assert!(t.contains("DAY-7") && t.contains("DAY-8") && t.contains("DAY-14"));
    assert_eq!(f.debut.as_deref(), Some("2026-11-14"));
    // Already delivered up to today: nothing is sent twice.
    let s3 = sdis(b);
    let done = |_: &str| Some(d("2026-11-28"));
    let r = s3.run(ExportMode::Differentiel, |o| o.last_fin = &done);
    assert!(r.fichiers.is_empty());
    assert_eq!(r.deja_livrees, vec![SDIS.to_string()]);
}

both!(an_older_declaration_with_a_new_child_is_sent_with_all_its_children);
fn an_older_declaration_with_a_new_child_is_sent_with_all_its_children(b: Backend) {
    let s = sdis(b);
    s.event(
        1,
        1,
        "OLD-NEW-ARRET",
        "AS",
        "2026-01-10",
        "2026-01-11T09:00:00",
    )
    .arret(
        1,
        1,
        "2026-01-10",
        Some("2026-01-20"),
        "2026-01-11T09:00:00",
    )
    .arret(2, 1, "2026-11-22", None, "2026-11-23T10:00:00")
    .event(
        2,
        1,
        "OLD-NEW-LESION",
        "AS",
        "2026-02-10",
        "2026-02-11T09:00:00",
    )
    .lesion(1, 2, "2026-11-24T10:00:00")
    .event(
        3,
        1,
        "OLD-NOTHING-NEW",
        "AS",
        "2026-03-10",
        "2026-03-11T09:00:00",
    )
    .arret(3, 3, "2026-03-10", None, "2026-03-11T09:00:00");
    let r = s.run(ExportMode::Differentiel, |o| {
        o.depuis = Some(d("2026-11-21"))
    });
    let t = text(&file(&r, SDIS, "DECLARATION").path);
    assert!(
        t.contains("OLD-NEW-ARRET") && t.contains("OLD-NEW-LESION"),
        "{t}"
    );
    assert!(!t.contains("OLD-NOTHING-NEW"));
    // All the current children, the old arrêt included.
    assert!(t.contains("<dateDebut>2026-01-10</dateDebut>"));
    assert!(t.contains("<dateDebut>2026-11-22</dateDebut>"));
    assert!(!t.contains("<dateDebut>2026-03-10</dateDebut>"));
}

both!(complet_applies_the_anteriority_limit_of_the_collectivite_or_of_the_command);
fn complet_applies_the_anteriority_limit_of_the_collectivite_or_of_the_command(b: Backend) {
    let s = Src::new(b);
    s.coll(SDIS, None, Some("2020-01-01"))
        .aut(SDIS, "accordee", "2026-01-01")
        .agent(1, SDIS, None)
        .event(1, 1, "ON-LIMIT", "AS", "2020-01-01", "2020-01-02T00:00:00")
        .event(
            2,
            1,
            "BEFORE-LIMIT",
            "AS",
            "2019-12-31",
            "2020-01-02T00:00:00",
        );
    let r = s.run(ExportMode::Complet, |_| {});
    let f = file(&r, SDIS, "DECLARATION");
    let t = text(&f.path);
    assert!(t.contains("ON-LIMIT") && !t.contains("BEFORE-LIMIT"), "{t}");
    assert!(t.contains("<mode>COMPLET</mode>"));
    assert!(t.contains("<limiteAnteriorite>2020-01-01</limiteAnteriorite>"));
    assert!(!t.contains("periodeDebut"));
    std::fs::remove_dir_all(s.out()).unwrap();
    let r = s.run(ExportMode::Complet, |o| {
        o.limite_anteriorite = Some(d("2019-01-01"))
    });
    let t = text(&file(&r, SDIS, "DECLARATION").path);
    assert!(t.contains("BEFORE-LIMIT"));
    assert!(t.contains("<limiteAnteriorite>2019-01-01</limiteAnteriorite>"));
}

both!(invalid_source_rows_are_left_out_and_reported_with_table_id_and_reason);
fn invalid_source_rows_are_left_out_and_reported_with_table_id_and_reason(b: Backend) {
    let s = sdis(b);
    let mut bad = nir("M", "1980-05-01", 2);
    let key: u32 = bad[13..].parse().unwrap();
    bad.replace_range(13.., &format!("{:02}", (key + 1) % 97));
    s.agent_nir(2, SDIS, &bad, None)
        .event(
            10,
            2,
            "OF-BAD-AGENT",
            "AS",
            "2026-11-01",
            "2026-11-22T00:00:00",
        )
        .event(1, 1, "GOOD", "AS", "2026-11-01", "2026-11-22T00:00:00")
        .element(1, "02")
        .element(1, "77")
        .arret(
            1,
            1,
            "2026-11-01",
            Some("2026-11-05"),
            "2026-11-22T00:00:00",
        )
        .arret(
            2,
            1,
            "2026-11-09",
            Some("2026-11-06"),
            "2026-11-22T00:00:00",
        )
        .event(2, 1, "BAD-TYPE", "XX", "2026-11-01", "2026-11-22T00:00:00");
    let r = s.run(ExportMode::Differentiel, |o| {
        o.depuis = Some(d("2026-11-21"))
    });
    let f = file(&r, SDIS, "DECLARATION");
    let t = text(&f.path);
    assert!(t.contains("GOOD"));
    for gone in [
        "OF-BAD-AGENT",
        "BAD-TYPE",
        "<elementMateriel>77",
        "2026-11-09",
        &bad,
    ] {
        assert!(!t.contains(gone), "{gone} sent: {t}");
    }
    assert!(t.contains("<elementMateriel>02</elementMateriel>"));
    assert_eq!((f.agents, f.evenements), (1, 1));
    let got: Vec<(&str, String)> = r
        .ecartes
        .iter()
        .map(|e| (e.table, e.id.to_string()))
        .collect();
    assert!(got.contains(&("agent", "2".into())), "{got:?}");
    assert!(got.contains(&("evenement", "2".into())), "{got:?}");
    assert!(got.contains(&("arret", "2".into())), "{got:?}");
    assert!(
        got.contains(&("element_materiel", "\"1/77\"".into())),
        "{got:?}"
    );
    let agent = r.ecartes.iter().find(|e| e.table == "agent").unwrap();
    assert!(agent.raison.contains("NIR"), "{}", agent.raison);
    // The reasons never carry the NIR itself.
    assert!(!agent.raison.contains(&bad[..13]), "{}", agent.raison);
    valid(&f.path);
}

both!(a_quiet_week_gives_a_neant_file_and_an_empty_complet_gives_no_file);
fn a_quiet_week_gives_a_neant_file_and_an_empty_complet_gives_no_file(b: Backend) {
    let s = sdis(b);
    s.event(1, 1, "OLD", "AS", "2026-01-01", "2026-01-02T00:00:00");
    let r = s.run(ExportMode::Differentiel, |_| {});
    assert_eq!(
        r.fichiers.len(),
        1,
        "no SERVICE file when it would be empty"
    );
    let f = file(&r, SDIS, "DECLARATION");
    assert_eq!((f.agents, f.evenements), (0, 0));
    let t = text(&f.path);
    assert!(
        t.contains(&format!("<collectivite siret=\"{SDIS}\"")),
        "{t}"
    );
    assert!(t.contains("<nombreAgents>0</nombreAgents>"));
    assert!(t.contains("<nombreEvenements>0</nombreEvenements>"));
    assert!(!t.contains("<agent>"));
    valid(&f.path);

    let empty = Src::new(b);
    empty
        .coll(SDIS, None, None)
        .aut(SDIS, "accordee", "2026-01-01");
    let r = empty.run(ExportMode::Complet, |_| {});
    assert!(r.fichiers.is_empty());
    assert_eq!(r.message.as_deref(), Some("rien à transmettre"));
    assert!(!empty.out().exists() || std::fs::read_dir(empty.out()).unwrap().count() == 0);
}

both!(one_grouped_file_per_cdg_with_its_members_and_its_own_block_when_it_has_data);
fn one_grouped_file_per_cdg_with_its_members_and_its_own_block_when_it_has_data(b: Backend) {
    let s = Src::new(b);
    s.coll(CDG, None, None)
        .coll(COMMUNE, Some(CDG), None)
        .coll(CCAS, Some(CDG), None)
        .aut(CDG, "accordee", "2026-01-01")
        .agent(1, COMMUNE, None)
        .event(1, 1, "COMMUNE-1", "AS", "2026-11-01", "2026-11-22T00:00:00")
        .agent(2, CCAS, None)
        .event(2, 2, "CCAS-1", "AS", "2026-11-01", "2026-11-22T00:00:00")
        .agent(3, CDG, None)
        .event(3, 3, "CDG-OLD", "AS", "2026-01-01", "2026-01-02T00:00:00");
    let r = s.run(ExportMode::Differentiel, |_| {});
    assert_eq!(r.fichiers.len(), 1);
    let f = file(&r, CDG, "DECLARATION");
    assert!(f.cdg);
    assert_eq!(
        f.collectivites,
        vec![CDG.to_string(), COMMUNE.into(), CCAS.into()]
    );
    assert_eq!(
        Path::new(&f.path).file_name().unwrap().to_str().unwrap(),
        format!("SOFIVAL_{CDG}_DECLARATION_DIFFERENTIEL_20261128T020000.xml")
    );
    let t = text(&f.path);
    assert!(t.contains(&format!("<cdg>{CDG}</cdg>")));
    assert!(t.contains(&format!("<collectivite siret=\"{COMMUNE}\"")));
    assert!(t.contains(&format!("<collectivite siret=\"{CCAS}\"")));
    // The CDG's own block: nothing new of its own this week, so no block.
    assert!(
        !t.contains(&format!("<collectivite siret=\"{CDG}\"")),
        "{t}"
    );
    assert!(t.contains("<dateCreation>2026-11-28T02:00:00</dateCreation>"));
    valid(&f.path);
    // With data of its own, its block comes first.
    std::fs::remove_dir_all(s.out()).unwrap();
    let r = s.run(ExportMode::Complet, |_| {});
    let t = text(&file(&r, CDG, "DECLARATION").path);
    let own = t
        .find(&format!("<collectivite siret=\"{CDG}\""))
        .expect("CDG block");
    assert!(
        own < t
            .find(&format!("<collectivite siret=\"{COMMUNE}\""))
            .unwrap()
    );
    assert_eq!(file(&r, CDG, "DECLARATION").evenements, 3);
}

both!(consent_decides_who_is_extracted_and_the_report_says_why_not);
fn consent_decides_who_is_extracted_and_the_report_says_why_not(b: Backend) {
    let s = Src::new(b);
    s.coll(SDIS, None, None)
        .coll(CDG, None, None)
        .coll(COMMUNE, Some(CDG), None)
        .coll(CCAS, Some(CDG), None)
        // The SDIS consented, then withdrew.
        .aut(SDIS, "accordee", "2026-01-01")
        .aut(SDIS, "retiree", "2026-06-01")
        // The CDG has not (yet) asked: its members have no consent of their own but one.
        .aut(CDG, "accordee", "2026-12-01")
        .aut(CCAS, "accordee", "2026-02-01");
    for (i, siret) in [SDIS, CDG, COMMUNE, CCAS].iter().enumerate() {
        let id = i as i64 + 1;
        s.agent(id, siret, None).event(
            id,
            id,
            &format!("EV-{siret}"),
            "AS",
            "2026-11-01",
            "2026-11-22T00:00:00",
        );
    }
    let r = s.run(ExportMode::Differentiel, |_| {});
    // Only the CCAS, in a file of its own (its CDG's consent is in the future).
    assert_eq!(r.fichiers.len(), 1, "{:?}", r.fichiers);
    let f = file(&r, CCAS, "DECLARATION");
    assert!(!f.cdg);
    let t = text(&f.path);
    assert!(t.contains(&format!("EV-{CCAS}")) && !t.contains("<cdg>"));
    let ex: Vec<(String, &str)> = r
        .exclues
        .iter()
        .map(|e| (e.siret.clone(), e.raison))
        .collect();
    assert!(ex.contains(&(SDIS.into(), "retrait")), "{ex:?}");
    assert!(ex.contains(&(CDG.into(), "sans_autorisation")), "{ex:?}");
    assert!(
        ex.contains(&(COMMUNE.into(), "cdg_sans_autorisation")),
        "{ex:?}"
    );
}

both!(services_complet_all_differentiel_new_or_referenced);
fn services_complet_all_differentiel_new_or_referenced(b: Backend) {
    let s = sdis(b);
    s.service(SDIS, "NEW", "2026-11-25T00:00:00")
        .service(SDIS, "OLD-UNUSED", "2020-01-01T00:00:00")
        .event(1, 1, "E", "AS", "2026-11-01", "2026-11-22T00:00:00")
        .agent(2, SDIS, Some("NOPE"))
        .event(2, 2, "E2", "AS", "2026-11-01", "2026-11-22T00:00:00")
        // Not a victim: never exported.
        .agent(3, SDIS, Some("CIS"));
    let r = s.run(ExportMode::Differentiel, |_| {});
    let svc = text(&file(&r, SDIS, "SERVICE").path);
    assert!(
        svc.contains("code=\"NEW\"") && svc.contains("code=\"CIS\""),
        "{svc}"
    );
    assert!(!svc.contains("OLD-UNUSED"));
    // The SERVICE file precedes the DECLARATION file of its destination.
    assert_eq!(r.fichiers[0].type_fichier, "SERVICE");
    let decl = text(&file(&r, SDIS, "DECLARATION").path);
    assert!(decl.contains("<service code=\"CIS\">"));
    assert!(
        !decl.contains("NOPE"),
        "an unknown service is not referenced"
    );
    assert!(
        !decl.contains("NOM3"),
        "an agent without événement is not exported"
    );
    assert!(r
        .avertissements
        .iter()
        .any(|a| a.table == "agent" && a.id == 2));
    std::fs::remove_dir_all(s.out()).unwrap();
    let r = s.run(ExportMode::Complet, |_| {});
    let svc = text(&file(&r, SDIS, "SERVICE").path);
    assert!(svc.contains("OLD-UNUSED") && svc.contains("NEW") && svc.contains("CIS"));
}

both!(gzip_files_are_valid_and_named_xml_gz);
fn gzip_files_are_valid_and_named_xml_gz(b: Backend) {
    let s = sdis(b);
    s.event(1, 1, "E", "AS", "2026-11-01", "2026-11-22T00:00:00");
    let r = s.run(ExportMode::Differentiel, |o| o.gzip = true);
    for f in &r.fichiers {
        assert!(f.path.ends_with(".xml.gz"), "{}", f.path);
        let bytes = std::fs::read(&f.path).unwrap();
        assert_eq!(&bytes[..2], &[0x1f, 0x8b]);
        use sha2::Digest;
        assert_eq!(hex::encode(sha2::Sha256::digest(&bytes)), f.sha256);
        valid(&f.path);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&f.path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "personal data: for the sender's user only");
    }
}

both!(a_source_without_the_schema_is_refused_with_what_is_missing);
fn a_source_without_the_schema_is_refused_with_what_is_missing(b: Backend) {
    let s = Src::new(b);
    s.exec("ALTER TABLE agent DROP COLUMN prenom; DROP TABLE lesion;");
    let e = Source::open(&s.url()).err().unwrap();
    let m = e.to_string();
    assert!(
        m.contains("agent.prenom") && m.contains("table lesion"),
        "{m}"
    );
    let missing = match b {
        Backend::Sqlite => "sqlite:///nonexistent/x.db".to_string(),
        Backend::Postgres => {
            let admin = atmp_store::test_support::admin_url();
            format!("{}/base_absente", admin.rsplit_once('/').unwrap().0)
        }
    };
    let e = Source::open(&missing).err().unwrap();
    assert!(
        e.to_string().contains("n'existe pas") || e.to_string().contains("ne répond pas"),
        "{e}"
    );
}

/// Typed columns, as a PostgreSQL source may have them (DATE, TIME, TIMESTAMP, BOOLEAN,
/// NUMERIC): read as the format writes them.
#[test]
fn postgres_typed_columns_are_read_as_the_format_writes_them() {
    let s = Src::new(Backend::Postgres);
    s.exec(
        "ALTER TABLE evenement ALTER COLUMN date TYPE DATE USING date::date;
         ALTER TABLE evenement ALTER COLUMN heure TYPE TIME USING heure::time;
         ALTER TABLE evenement ALTER COLUMN saisi_le TYPE TIMESTAMP USING saisi_le::timestamp;
         ALTER TABLE evenement ALTER COLUMN quotite_travail TYPE NUMERIC(5,2);
         ALTER TABLE evenement ALTER COLUMN accident_site TYPE BOOLEAN USING accident_site::int::boolean;
         ALTER TABLE arret ALTER COLUMN date_debut TYPE DATE USING date_debut::date;
         ALTER TABLE arret ALTER COLUMN saisi_le TYPE TIMESTAMP USING saisi_le::timestamp;",
    );
    s.coll(SDIS, None, None).aut(SDIS, "accordee", "2026-01-01");
    s.agent(1, SDIS, None);
    s.exec(
        "INSERT INTO evenement (id, agent_id, identifiant, type, date, heure, quotite_travail, accident_site, saisi_le)
         VALUES (1, 1, 'TYPED', 'AS', DATE '2026-11-02', TIME '10:30', 80.5, true, TIMESTAMP '2026-11-22 08:00:00'),
                (2, 1, 'OLD', 'AS', DATE '2026-01-02', NULL, 100, false, TIMESTAMP '2026-01-03 08:00:00');
         INSERT INTO arret (id, evenement_id, date_debut, saisi_le) VALUES (1, 2, DATE '2026-11-23', TIMESTAMP '2026-11-23 09:00:00');",
    );
    let r = s.run(ExportMode::Differentiel, |o| {
        o.depuis = Some(d("2026-11-21"))
    });
    let f = file(&r, SDIS, "DECLARATION");
    let t = text(&f.path);
    assert!(t.contains("<date>2026-11-02</date>"), "{t}");
    assert!(t.contains("<heure>10:30</heure>"), "{t}");
    assert!(t.contains("<quotiteTravail>80.5</quotiteTravail>"), "{t}");
    assert!(t.contains("<quotiteTravail>100</quotiteTravail>"), "{t}");
    assert!(t.contains("<accidentSite>true</accidentSite>"), "{t}");
    assert!(t.contains("<accidentSite>false</accidentSite>"), "{t}");
    // The old declaration with a new arrêt (TIMESTAMP compared with the window's dates).
    assert!(
        t.contains("OLD") && t.contains("<dateDebut>2026-11-23</dateDebut>"),
        "{t}"
    );
    assert_eq!(f.evenements, 2);
    valid(&f.path);
}
