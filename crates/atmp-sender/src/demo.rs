//! A demo source base (fictional people): the example collectivités of the shared examples,
//! with their consents (a CDG's request covering a member, a member's refusal, a withdrawal, a
//! collectivité without consent), services, and a few weeks of declarations; then, on request,
//! one more week. Used by `atmp sender demo`, the README's first session and the tests.

use std::path::Path;

use rusqlite::{params, Connection};

use atmp_model::{Date, Siret};

use crate::SenderError;

/// The schema of the source base (`source-schema.sql` of the contract, version 1.0).
pub const SCHEMA: &str = include_str!("../schema/source-1.0.sql");

pub const SDIS: &str = "28219002400012";
pub const CDG: &str = "28219010700049";
pub const COMMUNE: &str = "21219781800017";
pub const CCAS: &str = "26219781700014";

/// A valid SIRET from 13 digits whose first 9 carry their key.
pub fn siret(body13: &str) -> String {
    (0..10)
        .map(|d| format!("{body13}{d}"))
        .find(|s| Siret::parse(s).is_ok())
        .expect("a SIREN with its key")
}

/// The collectivité of the demo that never consented.
pub fn syndicat() -> String {
    siret("2121900030001")
}
/// The member of the CDG whose consent was withdrawn.
pub fn hameau() -> String {
    siret("2121900110001")
}

/// A NIR coherent with sex and birth date, unique by `n`.
pub fn nir(sexe: &str, dob: &str, n: u32) -> String {
    let s = if sexe == "M" { 1 } else { 2 };
    let body = format!("{s}{}{}21{:06}", &dob[2..4], &dob[5..7], n);
    let v: u64 = body.parse().expect("digits");
    format!("{body}{:02}", 97 - v % 97)
}

fn e(e: rusqlite::Error) -> SenderError {
    SenderError::Source(format!("base de démonstration : {e}"))
}

/// Creates the demo source at `path` (which must not exist), its declarations entered in
/// the four weeks before `today`.
pub fn create(path: &Path, today: Date) -> Result<(), SenderError> {
    if path.exists() {
        return Err(SenderError::Usage(format!(
            "{} existe déjà : la base de démonstration n'est créée que dans un fichier neuf",
            path.display()
        )));
    }
    let c = Connection::open(path).map_err(e)?;
    c.execute_batch(SCHEMA).map_err(e)?;
    let tx = c.unchecked_transaction().map_err(e)?;
    let d = |n: i64| today.add_days(-n).iso();
    let at = |n: i64, h: &str| format!("{}T{h}:00", today.add_days(-n).iso());
    for (s, nom, cdg, limite) in [
        (SDIS, "SDIS de la Vauclaire", None, Some("2020-01-01")),
        (CDG, "CDG de la Vauclaire", None, None),
        (COMMUNE, "Commune de Rochebrune-sur-Aube", Some(CDG), None),
        (CCAS, "CCAS de Rochebrune-sur-Aube", Some(CDG), None),
        (&hameau(), "Commune du Hameau-Vert", Some(CDG), None),
        (&syndicat(), "Syndicat des eaux de la Vauclaire", None, None),
    ] {
        tx.execute(
            "INSERT INTO collectivite (siret, nom, cdg_siret, limite_anteriorite) VALUES (?1, ?2, ?3, ?4)",
            params![s, nom, cdg, limite],
        )
        .map_err(e)?;
    }
    for (id, s, statut, date, r) in [
        (
            1,
            SDIS,
            "accordee",
            "2026-01-05",
            "Convention de transfert 2026-014",
        ),
        (
            2,
            CDG,
            "accordee",
            "2026-01-05",
            "Demande du CDG pour ses collectivités affiliées",
        ),
        (
            3,
            CCAS,
            "refusee",
            "2026-02-01",
            "Refus recueilli par le CDG",
        ),
        (
            4,
            &hameau() as &str,
            "accordee",
            "2026-01-10",
            "Accord écrit",
        ),
        (
            5,
            &hameau() as &str,
            "retiree",
            "2026-03-01",
            "Retrait de l'accord",
        ),
    ] {
        tx.execute(
            "INSERT INTO autorisation (id, collectivite_siret, statut, date, reference) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![id, s, statut, date, r],
        )
        .map_err(e)?;
    }
    for (s, code, lib) in [
        (SDIS, "CIS-NORD", "Centre d'incendie et de secours Nord"),
        (SDIS, "CIS-SUD", "Centre d'incendie et de secours Sud"),
        (COMMUNE, "TECH", "Services techniques"),
        (COMMUNE, "ECOLES", "Écoles et périscolaire"),
        (CDG, "RH", "Ressources humaines"),
        (CCAS, "AIDE", "Aide à domicile"),
        (&syndicat() as &str, "RESEAU", "Réseau d'eau"),
    ] {
        tx.execute(
            "INSERT INTO service (collectivite_siret, code, libelle, saisi_le) VALUES (?1, ?2, ?3, ?4)",
            params![s, code, lib, at(40, "09:00")],
        )
        .map_err(e)?;
    }
    // Agents: (id, collectivité, sexe, naissance, nom, prénom, service).
    type DemoAgent<'a> = (
        i64,
        &'a str,
        &'a str,
        &'a str,
        &'a str,
        &'a str,
        Option<&'a str>,
    );
    let agents: [DemoAgent<'_>; 9] = [
        (
            1,
            SDIS,
            "M",
            "1978-04-28",
            "DURAND",
            "Louis",
            Some("CIS-NORD"),
        ),
        (
            2,
            SDIS,
            "F",
            "1985-09-12",
            "LEROY",
            "Camille",
            Some("CIS-SUD"),
        ),
        (
            3,
            SDIS,
            "M",
            "1990-01-30",
            "FAURE",
            "Hugo",
            Some("CIS-NORD"),
        ),
        (
            4,
            COMMUNE,
            "F",
            "1969-06-03",
            "MOREAU",
            "Sylvie",
            Some("TECH"),
        ),
        (
            5,
            COMMUNE,
            "M",
            "1981-11-21",
            "GIRARD",
            "Paul",
            Some("ECOLES"),
        ),
        (6, CDG, "F", "1975-02-14", "BLANC", "Nathalie", Some("RH")),
        (7, CCAS, "F", "1988-08-08", "ROUX", "Julie", Some("AIDE")),
        (
            8,
            &syndicat() as &str,
            "M",
            "1972-12-01",
            "PERRIN",
            "Marc",
            Some("RESEAU"),
        ),
        // An agent without an événement: not a victim, never exported.
        (
            9,
            COMMUNE,
            "M",
            "1995-05-05",
            "MERCIER",
            "Théo",
            Some("TECH"),
        ),
    ];
    for (id, s, sexe, dob, nom, prenom, service) in agents {
        tx.execute(
            "INSERT INTO agent (id, collectivite_siret, nir, matricule, civilite, nom_usuel, prenom, date_naissance, sexe, regime, grade, type_personnel, service_code, adresse_ligne1, adresse_code_postal, adresse_commune, saisi_le)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 'CNRACL', 'Adjoint technique', 'TIT', ?10, '3 rue des Lilas', '21000', 'Rochebrune-sur-Aube', ?11)",
            params![id, s, nir(sexe, dob, id as u32), format!("M{id:04}"), if sexe == "M" { "M" } else { "MME" }, nom, prenom, dob, sexe, service, at(30, "08:30")],
        )
        .map_err(e)?;
    }
    // Événements over four weeks: (id, agent, identifiant, type, jours avant, saisi jours avant).
    let evs: [(i64, i64, &str, &str, i64, i64); 9] = [
        (1, 1, "SDIS-2026-001", "AS", 27, 26),
        (2, 1, "SDIS-2026-002", "ATR", 12, 11),
        (3, 2, "SDIS-2026-003", "AS", 20, 19),
        (4, 3, "SDIS-2026-004", "MP", 9, 8),
        (5, 4, "COM-2026-001", "AS", 25, 24),
        (6, 5, "COM-2026-002", "AS", 10, 10),
        (7, 6, "CDG-2026-001", "AS", 15, 14),
        (8, 7, "CCAS-2026-001", "AS", 18, 17),
        (9, 8, "SYN-2026-001", "AS", 13, 12),
    ];
    for (id, agent, ident, t, days, saisi) in evs {
        let tableau = if t == "MP" { Some("57") } else { None };
        tx.execute(
            "INSERT INTO evenement (id, agent_id, identifiant, type, date, heure, date_declaration, statut, regime, type_personnel, quotite_travail, accident_circulation, accident_site, circonstances, no_tableau_maladie_pro, saisi_le)
             VALUES (?1, ?2, ?3, ?4, ?5, '10:30', ?6, 'DECLARE', 'CNRACL', 'TIT', 100, 0, 1, 'Chute lors d''une intervention', ?7, ?8)",
            params![id, agent, ident, t, d(days), d(days - 1), tableau, at(saisi, "14:00")],
        )
        .map_err(e)?;
        tx.execute(
            "INSERT INTO element_materiel (evenement_id, code) VALUES (?1, '02')",
            params![id],
        )
        .map_err(e)?;
        tx.execute(
            "INSERT INTO arret (id, evenement_id, date_debut, date_fin, saisi_le) VALUES (?1, ?1, ?2, ?3, ?4)",
            params![id, d(days), d(days - 5), at(saisi, "14:05")],
        )
        .map_err(e)?;
        tx.execute(
            "INSERT INTO certificat (id, evenement_id, identifiant, date, type, saisi_le) VALUES (?1, ?1, ?2, ?3, 'I', ?4)",
            params![id, format!("CERT-{id}"), d(days), at(saisi, "14:06")],
        )
        .map_err(e)?;
        tx.execute(
            "INSERT INTO lesion (id, evenement_id, siege, nature, lateralite, saisi_le) VALUES (?1, ?1, '53', '02', 'D', ?2)",
            params![id, at(saisi, "14:07")],
        )
        .map_err(e)?;
    }
    // One invalid row: an arrêt that ends before it starts; left out and reported.
    tx.execute(
        "INSERT INTO arret (id, evenement_id, date_debut, date_fin, saisi_le) VALUES (100, 3, ?1, ?2, ?3)",
        params![d(15), d(18), at(15, "09:00")],
    )
    .map_err(e)?;
    tx.execute(
        "INSERT INTO consequence_medicale (id, evenement_id, identifiant, type, date_decision, taux_deficit, saisi_le) VALUES (1, 1, 'CONS-1', 'GUERISON', ?1, 0, ?2)",
        params![d(20), at(20, "11:00")],
    )
    .map_err(e)?;
    tx.commit().map_err(e)?;
    Ok(())
}

/// Adds one more week of entries, all entered in the week before `today`: a new declaration
/// of a known agent, a new arrêt of an older declaration, a new agent with its declaration,
/// and one in a collectivité that refused (never sent).
pub fn add_week(path: &Path, today: Date) -> Result<(), SenderError> {
    let c = Connection::open(path).map_err(e)?;
    let tx = c.unchecked_transaction().map_err(e)?;
    let d = |n: i64| today.add_days(-n).iso();
    let at = |n: i64, h: &str| format!("{}T{h}:00", today.add_days(-n).iso());
    let next: i64 = tx
        .query_row("SELECT coalesce(max(id), 0) + 1 FROM evenement", [], |r| {
            r.get(0)
        })
        .map_err(e)?;
    let next_agent: i64 = tx
        .query_row("SELECT coalesce(max(id), 0) + 1 FROM agent", [], |r| {
            r.get(0)
        })
        .map_err(e)?;
    let next_arret: i64 = tx
        .query_row("SELECT coalesce(max(id), 0) + 1 FROM arret", [], |r| {
            r.get(0)
        })
        .map_err(e)?;
    tx.execute(
        "INSERT INTO agent (id, collectivite_siret, nir, nom_usuel, prenom, date_naissance, sexe, service_code, saisi_le) VALUES (?1, ?2, ?3, 'NICOLAS', 'Emma', '1992-03-17', 'F', 'ECOLES', ?4)",
        params![next_agent, COMMUNE, nir("F", "1992-03-17", 5000 + next_agent as u32), at(3, "10:00")],
    )
    .map_err(e)?;
    for (i, (agent, ident, days, saisi)) in [
        (2i64, format!("SDIS-S-{next}"), 5i64, 4i64),
        (next_agent, format!("COM-S-{next}"), 4, 3),
        (7, format!("CCAS-S-{next}"), 4, 3),
    ]
    .into_iter()
    .enumerate()
    {
        let id = next + i as i64;
        tx.execute(
            "INSERT INTO evenement (id, agent_id, identifiant, type, date, saisi_le) VALUES (?1, ?2, ?3, 'AS', ?4, ?5)",
            params![id, agent, ident, d(days), at(saisi, "16:00")],
        )
        .map_err(e)?;
        tx.execute(
            "INSERT INTO arret (id, evenement_id, date_debut, saisi_le) VALUES (?1, ?2, ?3, ?4)",
            params![next_arret + 1 + i as i64, id, d(days), at(saisi, "16:05")],
        )
        .map_err(e)?;
    }
    // A prolongation of an older declaration (événement 1, entered four weeks ago).
    tx.execute(
        "INSERT INTO arret (id, evenement_id, date_debut, date_fin, saisi_le) VALUES (?1, 1, ?2, ?3, ?4)",
        params![next_arret, d(6), d(1), at(2, "09:30")],
    )
    .map_err(e)?;
    tx.commit().map_err(e)?;
    Ok(())
}

/// A large source for benchmarks: `agents` victims of one consenting collectivité, each with
/// two événements and their children (arrêts, certificats, lésion, conséquence, élément
/// matériel), about the size per agent of `atmp gen`'s files. Fictional, deterministic.
pub fn generate(path: &Path, agents: u64) -> Result<(), SenderError> {
    if path.exists() {
        return Err(SenderError::Usage(format!(
            "{} existe déjà : la base source générée n'est créée que dans un fichier neuf",
            path.display()
        )));
    }
    let c = Connection::open(path).map_err(e)?;
    c.execute_batch("PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;")
        .map_err(e)?;
    c.execute_batch(SCHEMA).map_err(e)?;
    let tx = c.unchecked_transaction().map_err(e)?;
    tx.execute(
        "INSERT INTO collectivite (siret, nom) VALUES (?1, 'SDIS de la Vauclaire')",
        [SDIS],
    )
    .map_err(e)?;
    tx.execute(
        "INSERT INTO autorisation (id, collectivite_siret, statut, date) VALUES (1, ?1, 'accordee', '2015-01-01')",
        [SDIS],
    )
    .map_err(e)?;
    for (code, lib) in [("CIS-NORD", "Centre Nord"), ("CIS-SUD", "Centre Sud")] {
        tx.execute(
            "INSERT INTO service (collectivite_siret, code, libelle, saisi_le) VALUES (?1, ?2, ?3, '2015-01-01T00:00:00')",
            params![SDIS, code, lib],
        )
        .map_err(e)?;
    }
    {
        let mut ag = tx
            .prepare(
                "INSERT INTO agent (id, collectivite_siret, nir, matricule, civilite, nom_usuel, nom_patronymique, prenom, date_naissance, sexe, lateralite, regime, no_cnracl, adresse_ligne1, adresse_code_postal, adresse_commune, adresse_pays, date_entree_fp, date_entree_collectivite, grade, type_personnel, date_entree_metier, service_code, saisi_le)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 'D', 'CNRACL', ?11, ?12, '21000', 'Rochebrune-sur-Aube', 'France', '2005-09-01', '2008-01-01', 'Sapeur-pompier professionnel', 'SPP', '2005-09-01', ?13, '2015-06-01T10:00:00')",
            )
            .map_err(e)?;
        let mut ev = tx
            .prepare(
                "INSERT INTO evenement (id, agent_id, identifiant, type, date, heure, date_declaration, statut, regime, grade, type_personnel, quotite_travail, date_entree_metier, accident_circulation, accident_site, circonstances, assureur_collectivite, saisi_le)
                 VALUES (?1, ?2, ?3, 'AS', ?4, '10:30', ?4, 'RECONNU', 'CNRACL', 'Sapeur-pompier professionnel', 'SPP', 100, '2005-09-01', 0, 1, ?5, 'Assureur mutuel des collectivités', '2015-06-02T10:00:00')",
            )
            .map_err(e)?;
        let mut em = tx
            .prepare("INSERT INTO element_materiel (evenement_id, code) VALUES (?1, '02')")
            .map_err(e)?;
        let mut ar = tx
            .prepare("INSERT INTO arret (evenement_id, date_debut, date_fin, saisi_le) VALUES (?1, ?2, ?3, '2015-06-02T10:00:00')")
            .map_err(e)?;
        let mut ce = tx
            .prepare("INSERT INTO certificat (evenement_id, identifiant, date, type, saisi_le) VALUES (?1, ?2, ?3, ?4, '2015-06-02T10:00:00')")
            .map_err(e)?;
        let mut le = tx
            .prepare("INSERT INTO lesion (evenement_id, siege, nature, lateralite, saisi_le) VALUES (?1, '53', '02', 'D', '2015-06-02T10:00:00')")
            .map_err(e)?;
        let mut co = tx
            .prepare("INSERT INTO consequence_medicale (evenement_id, identifiant, type, date_decision, taux_deficit, saisi_le) VALUES (?1, ?2, 'IPP', ?3, 5, '2015-06-02T10:00:00')")
            .map_err(e)?;
        const NOMS: [&str; 8] = [
            "MARTIN", "BERNARD", "DUBOIS", "THOMAS", "ROBERT", "RICHARD", "PETIT", "DURAND",
        ];
        const PRENOMS: [&str; 8] = [
            "Louis", "Camille", "Hugo", "Sylvie", "Paul", "Nathalie", "Julie", "Marc",
        ];
        for i in 1..=agents {
            let sexe = if i % 2 == 0 { "F" } else { "M" };
            let year = 1960 + (i % 40);
            let month = 1 + (i % 12);
            let dob = format!("{year}-{month:02}-{:02}", 1 + (i % 28));
            let n = (i % 1_000_000) as u32;
            let nir = {
                let s = if sexe == "M" { 1 } else { 2 };
                let body = format!(
                    "{s}{:02}{month:02}{:02}{:06}",
                    year % 100,
                    1 + (i / 1_000_000) % 95,
                    n
                );
                let v: u64 = body.parse().expect("digits");
                format!("{body}{:02}", 97 - v % 97)
            };
            let nom = NOMS[(i % 8) as usize];
            ag.execute(params![
                i as i64,
                SDIS,
                nir,
                format!("M{i:07}"),
                if sexe == "M" { "M" } else { "MME" },
                format!("{nom}{}", i % 997),
                nom,
                PRENOMS[(i / 8 % 8) as usize],
                dob,
                sexe,
                format!("C{i:09}"),
                format!("{} rue des Écoles", 1 + i % 200),
                if i % 2 == 0 { "CIS-NORD" } else { "CIS-SUD" },
            ])
            .map_err(e)?;
            for k in 0..2u64 {
                let id = (i * 2 + k) as i64;
                let date = format!("2015-{:02}-{:02}", 1 + (i + k) % 5, 1 + (i % 28));
                ev.execute(params![
                    id,
                    i as i64,
                    format!("EV-{i}-{k}"),
                    date,
                    "Chute lors d'une intervention, glissade en descendant de l'engin.",
                ])
                .map_err(e)?;
                em.execute([id]).map_err(e)?;
                ar.execute(params![id, date, format!("2015-06-{:02}", 1 + i % 28)])
                    .map_err(e)?;
                ar.execute(params![
                    id,
                    format!("2015-07-{:02}", 1 + i % 28),
                    Option::<String>::None
                ])
                .map_err(e)?;
                ce.execute(params![id, format!("CI-{id}"), date, "I"])
                    .map_err(e)?;
                le.execute([id]).map_err(e)?;
                if k == 0 {
                    co.execute(params![id, format!("CS-{id}"), "2015-08-01"])
                        .map_err(e)?;
                }
            }
        }
    }
    tx.commit().map_err(e)?;
    Ok(())
}
