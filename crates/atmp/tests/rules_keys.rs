//! Rules of FORMAT.md §5–§6 that had no test that would fail without them (issue 7, point 10):
//! each test here is written so that removing its rule makes it fail.

#[macro_use]
mod common;

use common::*;

fn cardon() -> String {
    nir("M", "1984-05-17", 1)
}

fn one_agent(siret: &str, name: &str, prenom: &str, rest: &str) -> (String, String) {
    (
        siret.to_string(),
        agent(&cardon(), name, None, prenom, "1984-05-17", "M", rest),
    )
}

fn lines(path: &str) -> Vec<Vec<String>> {
    log(path)
}

// §5.1: an event is looked up by identifiant first; its type and date may differ (each
// difference is one WARN), it is still the same event. Without the identifiant lookup the
// (type, date) fallback would not find it and a second event would be created.
both!(an_event_is_found_by_identifiant_before_type_and_date_with_one_warn_per_field);
fn an_event_is_found_by_identifiant_before_type_and_date_with_one_warn_per_field(b: Backend) {
    let env = Env::on(b);
    env.sdis();
    let file = |name: &str, t: &str, date: &str, cert_type: &str| {
        let ev = event(
            "EV-1",
            t,
            date,
            &format!(
                "{}<certificat><identifiant>C-1</identifiant><date>{date}</date><type>{cert_type}</type></certificat>",
                arret(date, None)
            ),
        );
        env.write(
            name,
            &Doc::declaration(vec![one_agent(SDIS, "CARDON", "Yannick", &ev)]).render(),
        )
    };
    env.import(&file("a.xml", "AS", "2015-11-08", "I"), None);
    let (j, _) = env.import(&file("b.xml", "ATR", "2015-11-09", "P"), None);
    assert_eq!(counts(&j, "evenements"), (0, 1, 0));
    assert_eq!(counts(&j, "certificats"), (0, 1, 0));
    assert_eq!(env.scalar("SELECT count(*) FROM evenement"), "1");
    assert_eq!(
        env.scalar("SELECT type || ' ' || date FROM evenement"),
        "AS 2015-11-08"
    );
    let (c, _) = log_paths(&j, SDIS, false);
    let warns: Vec<String> = lines(&c)
        .into_iter()
        .filter(|l| l[1] == "WARN")
        .map(|l| l[5].clone())
        .collect();
    assert!(
        warns.contains(
            &"Valeur différente ignorée pour type : base « AS », fichier « ATR »".to_string()
        ),
        "{warns:#?}"
    );
    assert!(
        warns.contains(
            &"Valeur différente ignorée pour date : base « 08/11/2015 », fichier « 09/11/2015 »"
                .to_string()
        ),
        "{warns:#?}"
    );
    assert!(
        warns.contains(
            &"Valeur différente ignorée pour type : base « I », fichier « P »".to_string()
        ),
        "{warns:#?}"
    );
    // One line per differing field, never one line for several.
    assert!(warns
        .iter()
        .all(|w| w.matches("Valeur différente").count() == 1));
    assert_eq!(j["warnings"], warns.len() as u64);
}

// §5.1: the agent key is (collectivité, NIR) and the service key (collectivité, code): the
// same NIR or code in two collectivités are two records.
both!(agent_and_service_keys_are_per_collectivite);
fn agent_and_service_keys_are_per_collectivite(b: Backend) {
    let env = Env::on(b);
    env.sdis();
    env.cdg(true);
    env.ok(&[
        "emetteur",
        "autorisation",
        "--code",
        "SOFIVAL",
        "--collectivite",
        COMMUNE,
        "--statut",
        "accordee",
    ]);
    let svc = "<service code=\"S1\"><libelle>Service un</libelle></service>\n";
    let mut services = Doc::declaration(vec![
        (SDIS.into(), svc.into()),
        (COMMUNE.into(), svc.into()),
    ]);
    services.type_fichier = "SERVICE";
    let (j, _) = env.import(&env.write("s.xml", &services.render()), None);
    assert_eq!(counts(&j, "services"), (2, 0, 0));
    let ev = event("EV-1", "AS", "2015-11-08", "");
    let rest = format!("<service code=\"S1\"/>{ev}");
    let d = Doc::declaration(vec![
        one_agent(SDIS, "CARDON", "Yannick", &rest),
        one_agent(COMMUNE, "CARDON", "Yannick", &rest),
    ]);
    let (j, _) = env.import(&env.write("d.xml", &d.render()), None);
    assert_eq!(j["errors"], 0, "{j}");
    assert_eq!(counts(&j, "agents"), (2, 0, 0));
    assert_eq!(
        env.scalar("SELECT count(DISTINCT collectivite_id) FROM agent"),
        "2"
    );
    // Each agent refers to the service of its own collectivité.
    assert_eq!(
        env.scalar("SELECT count(*) FROM agent a JOIN service s ON s.id = a.service_id WHERE s.collectivite_id = a.collectivite_id"),
        "2"
    );
}

// §5.2.1: names compared without case or accents: no rejection, and no WARN either.
both!(names_differing_only_in_case_or_accents_give_no_line_at_all);
fn names_differing_only_in_case_or_accents_give_no_line_at_all(b: Backend) {
    let env = Env::on(b);
    env.sdis();
    let ev = event("EV-1", "AS", "2015-11-08", "");
    env.import_sdis("a.xml", &one_agent(SDIS, "CARDON", "Jérôme", &ev).1);
    let (j, _) = env.import_sdis("b.xml", &one_agent(SDIS, "Cardon", "JEROME", &ev).1);
    assert_eq!(counts(&j, "agents"), (0, 1, 0));
    assert_eq!(j["errors"], 0);
    assert_eq!(j["warnings"], 0, "{j}");
    assert_eq!(env.scalar("SELECT prenom FROM agent"), "Jérôme");
}

// §6.3: the mismatch message names "nom usuel" when the usual name differs.
both!(the_mismatch_message_names_the_usual_name);
fn the_mismatch_message_names_the_usual_name(b: Backend) {
    let env = Env::on(b);
    env.sdis();
    let ev = event("EV-1", "AS", "2015-11-08", "");
    env.import_sdis("a.xml", &one_agent(SDIS, "CARDON", "Yannick", &ev).1);
    let (j, _) = env.import_sdis("b.xml", &one_agent(SDIS, "DURAND", "Yannick", &ev).1);
    assert_eq!(counts(&j, "agents"), (0, 0, 1));
    let (_, e) = log_paths(&j, SDIS, false);
    let err = &lines(&e)[0][5];
    assert!(
        err.ends_with("(nom usuel). Les données de l'agent sont rejetées."),
        "{err}"
    );
    assert!(
        err.contains("[CARDON Yannick - 17/05/1984 - ") && err.contains("[DURAND Yannick"),
        "{err}"
    );
}

// §5.3.3: a CDG's own block is accepted in its grouped file.
both!(a_cdg_own_block_is_integrated_in_its_grouped_file);
fn a_cdg_own_block_is_integrated_in_its_grouped_file(b: Backend) {
    let env = Env::on(b);
    env.cdg(true);
    let ev = event("EV-1", "AS", "2015-11-08", "");
    let mut d = Doc::declaration(vec![
        one_agent(CDG, "CARDON", "Yannick", &ev),
        (
            COMMUNE.into(),
            agent(
                &nir("F", "1990-02-03", 2),
                "MOREAU",
                None,
                "Anne",
                "1990-02-03",
                "F",
                &ev,
            ),
        ),
    ]);
    d.cdg = Some(CDG);
    d.emetteur = "CDGVAUCL";
    let (j, _) = env.import(&env.write("g.xml", &d.render()), None);
    assert_eq!(j["result"], "reussi");
    assert_eq!(j["errors"], 0, "{j}");
    assert_eq!(counts(&j, "agents"), (2, 0, 0));
    // One log per collectivité plus the global one.
    log_paths(&j, CDG, false);
    log_paths(&j, COMMUNE, false);
    log_paths(&j, CDG, true);
}

// §3.2: matricule stored as X when absent.
both!(an_absent_matricule_is_stored_as_x);
fn an_absent_matricule_is_stored_as_x(b: Backend) {
    let env = Env::on(b);
    env.sdis();
    let ev = event("EV-1", "AS", "2015-11-08", "");
    env.import_sdis("a.xml", &one_agent(SDIS, "CARDON", "Yannick", &ev).1);
    assert_eq!(env.scalar("SELECT matricule FROM agent"), "X");
}

// §6.1: the agent field as written in the file (NIR without its spaces, names in their case);
// a field holding a line break or a `;` is quoted as in CSV.
both!(log_fields_as_written_and_quoted_when_they_hold_a_line_break);
fn log_fields_as_written_and_quoted_when_they_hold_a_line_break(b: Backend) {
    let env = Env::on(b);
    env.sdis();
    let n = cardon();
    let spaced = format!(
        "{} {} {} {} {} {} {}",
        &n[0..1],
        &n[1..3],
        &n[3..5],
        &n[5..7],
        &n[7..10],
        &n[10..13],
        &n[13..15]
    );
    let ev = event("EV-1", "AS", "2015-11-08", "");
    let a = agent(
        &spaced,
        "Cardon",
        Some("Le;Gall"),
        "Jean&#10;Louis",
        "1984-05-17",
        "M",
        &ev,
    );
    let (j, _) = env.import_sdis("a.xml", &a);
    assert_eq!(j["errors"], 0, "{j}");
    let (c, _) = log_paths(&j, SDIS, false);
    let raw = std::fs::read_to_string(&c).unwrap();
    let field = format!("\"Agent : Cardon (Le;Gall) Jean\nLouis - 17/05/1984 - {n}\"");
    assert!(raw.contains(&format!(";{field};")), "{raw}");
    assert!(!raw.contains(&spaced));
}

// §6.1: the lines of a service name it in the élément field, `Service : CODE`.
both!(service_lines_name_the_service_code);
fn service_lines_name_the_service_code(b: Backend) {
    let env = Env::on(b);
    env.sdis();
    let mut d = Doc::declaration(vec![(
        SDIS.into(),
        "<service code=\"CIS-NORD\"><libelle>Centre Nord</libelle></service>\n".into(),
    )]);
    d.type_fichier = "SERVICE";
    let (j, _) = env.import(&env.write("s.xml", &d.render()), None);
    let (c, _) = log_paths(&j, SDIS, false);
    let service: Vec<Vec<String>> = lines(&c)
        .into_iter()
        .filter(|l| l[4] == "Service : CIS-NORD")
        .collect();
    assert_eq!(
        service.len(),
        2,
        "Début de traitement and Ajout: {service:?}"
    );
    assert!(
        service[1][5].starts_with("Ajout dans la base (serviceid="),
        "{service:?}"
    );
    assert!(service.iter().all(|l| l[2].is_empty() && l[3].is_empty()));
}

// §6.4: a duplicate says the day the bytes were first integrated, not today's.
both!(a_duplicate_says_the_day_of_the_first_integration);
fn a_duplicate_says_the_day_of_the_first_integration(b: Backend) {
    let env = Env::on(b);
    env.sdis();
    let ev = event("EV-1", "AS", "2015-11-08", "");
    let content = Doc::declaration(vec![one_agent(SDIS, "CARDON", "Yannick", &ev)]).render();
    env.import(&env.write("a.xml", &content), None);
    env.execute("UPDATE import SET finished_at = '2016-03-04T10:00:00'");
    let (j, _) = env.import(&env.write("b.xml", &content), None);
    assert_eq!(j["result"], "doublon");
    assert_eq!(j["label"], "Doublon : déjà intégré le 04/03/2016");
    let raw = std::fs::read_to_string(j["logs"][0]["complet"].as_str().unwrap()).unwrap();
    assert!(
        raw.contains("Doublon : déjà intégré le 04/03/2016"),
        "{raw}"
    );
}

// §2: a wrong nombreEvenements rejects the file whole; nothing stored.
both!(a_wrong_event_total_rejects_the_file);
fn a_wrong_event_total_rejects_the_file(b: Backend) {
    let env = Env::on(b);
    env.sdis();
    let ev = event("EV-1", "AS", "2015-11-08", "");
    let mut d = Doc::declaration(vec![one_agent(SDIS, "CARDON", "Yannick", &ev)]);
    d.totals = Some((1, 2));
    let before = env.snapshot();
    let (j, code) = env.import(&env.write("t.xml", &d.render()), None);
    assert_eq!(code, 1);
    assert_eq!(j["result"], "echoue");
    assert_eq!(env.snapshot(), before);
    d.totals = Some((1, 1));
    let (j, _) = env.import(&env.write("t2.xml", &d.render()), None);
    assert_eq!(j["result"], "reussi");
}
