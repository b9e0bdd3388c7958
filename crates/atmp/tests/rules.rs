//! One test per rule of FORMAT.md §5, through the real binary and a real SQLite base.

#[macro_use]
mod common;

use common::*;

fn cardon() -> String {
    nir("M", "1984-05-17", 1)
}

/// One agent with one event and one arrêt, in the SDIS.
fn base_file(arret_fin: &str) -> String {
    let ev = event(
        "EV-1",
        "AS",
        "2015-11-08",
        &arret("2015-11-08", Some(arret_fin)),
    );
    Doc::declaration(vec![(
        SDIS.into(),
        agent(&cardon(), "CARDON", None, "Yannick", "1984-05-17", "M", &ev),
    )])
    .render()
}

fn error_lines(j: &serde_json::Value, siret: &str) -> Vec<Vec<String>> {
    let (_, e) = log_paths(j, siret, false);
    log(&e)
}

fn complete_lines(j: &serde_json::Value, siret: &str) -> Vec<Vec<String>> {
    let (c, _) = log_paths(j, siret, false);
    log(&c)
}

// §5.1: the base is the master; a differing field is kept and named in a WARN line.
both!(present_record_is_never_overwritten);
fn present_record_is_never_overwritten(b: Backend) {
    let env = Env::on(b);
    env.sdis();
    env.import(&env.write("a.xml", &base_file("2015-11-08")), None);
    let before = env.snapshot();
    let (j, code) = env.import(&env.write("b.xml", &base_file("2015-11-15")), None);
    assert_eq!(code, 0);
    assert_eq!(j["errors"], 0);
    assert_eq!(j["warnings"], 1);
    assert_eq!(counts(&j, "arrets"), (0, 1, 0));
    let warn: Vec<_> = complete_lines(&j, SDIS)
        .into_iter()
        .filter(|l| l[1] == "WARN")
        .collect();
    assert_eq!(warn.len(), 1);
    assert_eq!(
        warn[0][5],
        "Valeur différente ignorée pour dateFin : base « 08/11/2015 », fichier « 15/11/2015 »"
    );
    assert_eq!(warn[0][4], "Arrêt : du 08/11/2015 au 15/11/2015");
    assert_eq!(env.snapshot(), before);
    assert_eq!(env.scalar("SELECT date_fin FROM arret"), "2015-11-08");
}

// §5.1: a DIFFERENTIEL file adds new arrêts to an older declaration.
both!(differential_file_adds_children_to_present_event);
fn differential_file_adds_children_to_present_event(b: Backend) {
    let env = Env::on(b);
    env.sdis();
    env.import(&env.write("a.xml", &base_file("2015-11-15")), None);
    let ev = event(
        "EV-1",
        "AS",
        "2015-11-08",
        &format!(
            "{}{}",
            arret("2015-11-08", Some("2015-11-15")),
            arret("2015-11-16", Some("2015-11-30"))
        ),
    );
    let mut d = Doc::declaration(vec![(
        SDIS.into(),
        agent(&cardon(), "CARDON", None, "Yannick", "1984-05-17", "M", &ev),
    )]);
    d.mode = "DIFFERENTIEL";
    let (j, _) = env.import(&env.write("b.xml", &d.render()), None);
    assert_eq!(counts(&j, "agents"), (0, 1, 0));
    assert_eq!(counts(&j, "evenements"), (0, 1, 0));
    assert_eq!(counts(&j, "arrets"), (1, 1, 0));
    assert_eq!(env.scalar("SELECT count(*) FROM arret"), "2");
}

// §5.1 identity keys: an event is found by identifiant, failing that by (type, date);
// certificat and conséquence likewise; lésion by (siège, nature, latéralité); décès per event.
both!(identity_keys_and_fallbacks);
fn identity_keys_and_fallbacks(b: Backend) {
    let env = Env::on(b);
    env.sdis();
    let children = |ev_id: &str, cert_id: &str, cons_id: &str, lat: &str| {
        event(
            ev_id,
            "AS",
            "2015-11-08",
            &format!(
                "<deces><date>2015-11-09</date></deces>{}<certificat><identifiant>{cert_id}</identifiant><date>2015-11-08</date><type>I</type></certificat>\
                 <lesion><siege>53</siege><nature>01</nature><lateralite>{lat}</lateralite></lesion>\
                 <consequenceMedicale><identifiant>{cons_id}</identifiant><type>IPP</type><dateDecision>2015-12-01</dateDecision></consequenceMedicale>",
                arret("2015-11-08", None)
            ),
        )
    };
    let file = |name: &str, ev: String| {
        let d = Doc::declaration(vec![(
            SDIS.into(),
            agent(&cardon(), "CARDON", None, "Yannick", "1984-05-17", "M", &ev),
        )]);
        env.write(name, &d.render())
    };
    env.import(&file("a.xml", children("EV-1", "C-1", "R-1", "D")), None);
    // Other identifiants, same (type, date): everything is found; identifiants differ → WARN.
    let (j, _) = env.import(
        &file("b.xml", children("EV-NEW", "C-NEW", "R-NEW", "D")),
        None,
    );
    for k in [
        "evenements",
        "arrets",
        "certificats",
        "lesions",
        "consequences",
        "deces",
    ] {
        assert_eq!(counts(&j, k), (0, 1, 0), "{k}");
    }
    let warns: Vec<String> = complete_lines(&j, SDIS)
        .into_iter()
        .filter(|l| l[1] == "WARN")
        .map(|l| l[5].clone())
        .collect();
    assert_eq!(
        warns,
        vec![
            "Valeur différente ignorée pour identifiant : base « EV-1 », fichier « EV-NEW »",
            "Valeur différente ignorée pour identifiant : base « C-1 », fichier « C-NEW »",
            "Valeur différente ignorée pour identifiant : base « R-1 », fichier « R-NEW »",
        ]
    );
    // Another latéralité is another lésion.
    let (j, _) = env.import(&file("c.xml", children("EV-1", "C-1", "R-1", "G")), None);
    assert_eq!(counts(&j, "lesions"), (1, 0, 0));
    assert_eq!(env.scalar("SELECT count(*) FROM lesion"), "2");
    assert_eq!(env.scalar("SELECT count(*) FROM evenement"), "1");
}

// §5.2.1: same NIR, other identity → the agent and everything under it are rejected with
// the message of §6.3; names are compared without case, accents, hyphens, apostrophes, spaces.
both!(agent_identity_mismatch_message);
fn agent_identity_mismatch_message(b: Backend) {
    let env = Env::on(b);
    env.sdis();
    let n = nir("M", "1978-06-22", 7);
    let first = agent(
        &n,
        "DUPONT",
        Some("MARTIN"),
        "JEAN LOUIS",
        "1978-06-22",
        "M",
        "",
    );
    env.import_sdis("a.xml", &first);

    let same = agent(
        &n,
        "Dupont",
        Some("MARTIN"),
        "Jean-Louis",
        "1978-06-22",
        "M",
        &event("E", "AS", "2015-01-05", ""),
    );
    let (j, _) = env.import_sdis("b.xml", &same);
    assert_eq!(j["errors"], 0, "{j}");
    assert_eq!(counts(&j, "agents"), (0, 1, 0));
    assert_eq!(counts(&j, "evenements"), (1, 0, 0));

    let other = agent(
        &n,
        "DUPONT",
        Some("MARTIN"),
        "J. Louis",
        "1978-04-28",
        "M",
        &event("E2", "AS", "2015-01-06", &arret("2015-01-06", None)),
    );
    let (j, _) = env.import_sdis("c.xml", &other);
    assert_eq!(j["errors"], 1);
    assert_eq!(counts(&j, "agents"), (0, 0, 1));
    assert_eq!(counts(&j, "evenements"), (0, 0, 1));
    assert_eq!(counts(&j, "arrets"), (0, 0, 1));
    let e = error_lines(&j, SDIS);
    assert_eq!(
        e[0][2],
        format!("Agent : DUPONT (MARTIN) J. Louis - 28/04/1978 - {n}")
    );
    assert_eq!(
        e[0][5],
        format!(
            "Les données de l'agent dans la base [DUPONT (MARTIN) JEAN LOUIS - 22/06/1978 - {n}] ne correspondent pas à celles du fichier à traiter [DUPONT (MARTIN) J. Louis - 28/04/1978 - {n}] (prénom, date de naissance). Les données de l'agent sont rejetées."
        )
    );
    assert_eq!(env.scalar("SELECT count(*) FROM evenement"), "1");
}

// §5.2.2: not found by NIR but found by identity with another NIR → rejected, both NIRs named.
both!(same_identity_other_nir_is_rejected);
fn same_identity_other_nir_is_rejected(b: Backend) {
    let env = Env::on(b);
    env.sdis();
    let n1 = nir("F", "1970-03-04", 1);
    let n2 = nir("F", "1970-03-04", 2);
    env.import(
        &env.write(
            "a.xml",
            &Doc::declaration(vec![(
                SDIS.into(),
                agent(&n1, "LEROY", None, "Anne", "1970-03-04", "F", ""),
            )])
            .render(),
        ),
        None,
    );
    let (j, _) = env.import(
        &env.write(
            "b.xml",
            &Doc::declaration(vec![(
                SDIS.into(),
                agent(&n2, "Le Roy", None, "ANNE", "1970-03-04", "F", ""),
            )])
            .render(),
        ),
        None,
    );
    // "Le Roy" and "LEROY" are different names: a new agent.
    assert_eq!(counts(&j, "agents"), (1, 0, 0));
    let (j, _) = env.import(
        &env.write(
            "c.xml",
            &Doc::declaration(vec![(
                SDIS.into(),
                agent(
                    &nir("F", "1970-03-04", 3),
                    "leroy",
                    None,
                    "Anne",
                    "1970-03-04",
                    "F",
                    "",
                ),
            )])
            .render(),
        ),
        None,
    );
    assert_eq!(counts(&j, "agents"), (0, 0, 1));
    let e = error_lines(&j, SDIS);
    assert!(
        e[0][5].contains(&format!("base : {n1}"))
            && e[0][5].contains(&format!("fichier : {}", nir("F", "1970-03-04", 3))),
        "{:?}",
        e[0]
    );
}

// §5.2.3: an invalid record is rejected with its children, siblings go on; one ERROR line
// naming every problem of its own fields; an invalid arrêt rejects only itself.
both!(invalid_records_reject_their_children_only);
fn invalid_records_reject_their_children_only(b: Backend) {
    let env = Env::on(b);
    env.sdis();
    let bad_nir = format!("{}00", &nir("M", "1980-01-01", 1)[..13]);
    let bad_agent = agent(
        &bad_nir,
        "BAD",
        None,
        "",
        "1980-01-01",
        "M",
        &event("E1", "AS", "2015-01-01", &arret("2015-01-01", None)),
    );
    let bad_event = event("E2", "XX", "2015-01-02", &arret("2015-01-02", None));
    let bad_arret = arret("2014-01-01", None); // before the event
    let good_event = event(
        "E3",
        "AS",
        "2015-01-03",
        &format!("{bad_arret}{}", arret("2015-01-03", None)),
    );
    let good = agent(
        &nir("M", "1980-01-01", 2),
        "GOOD",
        None,
        "Paul",
        "1980-01-01",
        "M",
        &format!("{bad_event}{good_event}"),
    );
    let doc = Doc::declaration(vec![(SDIS.into(), format!("{bad_agent}{good}"))]);
    let (j, code) = env.import(&env.write("a.xml", &doc.render()), None);
    assert_eq!(code, 0);
    assert_eq!(j["result"], "reussi");
    assert_eq!(j["errors"], 3, "{j}");
    assert_eq!(counts(&j, "agents"), (1, 0, 1));
    assert_eq!(counts(&j, "evenements"), (1, 0, 2));
    assert_eq!(counts(&j, "arrets"), (1, 0, 3));
    let e = error_lines(&j, SDIS);
    assert_eq!(e.len(), 3);
    assert!(
        e[0][5].starts_with("Les données de l'agent sont rejetées (ligne "),
        "{}",
        e[0][5]
    );
    assert!(
        e[0][5].contains("NIR invalide") && e[0][5].contains("prenom (prénom) est obligatoire"),
        "{}",
        e[0][5]
    );
    assert!(
        e[1][5].contains("code « XX » absent de la nomenclature TYPE_EVENEMENT"),
        "{}",
        e[1][5]
    );
    assert_eq!(e[1][3], "Événement : XX du 02/01/2015");
    assert!(
        e[2][5].contains(
            "dateDebut (01/01/2014) est antérieure à la date de l'événement (03/01/2015)"
        ),
        "{}",
        e[2][5]
    );
    assert_eq!(e[2][4], "Arrêt : du 01/01/2014");
    assert_eq!(env.scalar("SELECT count(*) FROM arret"), "1");
}

// §5.2.3 structural errors inside a record reject that record only.
both!(structural_error_rejects_the_record);
fn structural_error_rejects_the_record(b: Backend) {
    let env = Env::on(b);
    env.sdis();
    let wrong_order = format!(
        "<agent><nomUsuel>X</nomUsuel><nir>{}</nir><prenom>A</prenom><dateNaissance>1980-01-01</dateNaissance><sexe>M</sexe></agent>",
        nir("M", "1980-01-01", 1)
    );
    let repeated = agent(
        &nir("M", "1980-01-01", 2),
        "Y",
        None,
        "B",
        "1980-01-01",
        "M",
        "<sexe>M</sexe>",
    );
    let unknown = agent(
        &nir("M", "1980-01-01", 3),
        "Z",
        None,
        "C",
        "1980-01-01",
        "M",
        "<couleur>bleu</couleur>",
    );
    let fine = agent(
        &nir("M", "1980-01-01", 4),
        "W",
        None,
        "D",
        "1980-01-01",
        "M",
        "",
    );
    let (j, _) = env.import(
        &env.write(
            "a.xml",
            &Doc::declaration(vec![(
                SDIS.into(),
                format!("{wrong_order}{repeated}{unknown}{fine}"),
            )])
            .render(),
        ),
        None,
    );
    assert_eq!(counts(&j, "agents"), (1, 0, 3));
    let e = error_lines(&j, SDIS);
    assert!(e[0][5].contains("hors de l'ordre attendu"), "{}", e[0][5]);
    assert!(e[1][5].contains("répété"), "{}", e[1][5]);
    assert!(
        e[2][5].contains("élément « couleur » inconnu"),
        "{}",
        e[2][5]
    );
}

// §5.2.4: an unknown service is an ERROR line, the agent is still integrated.
both!(unknown_service_keeps_the_agent);
fn unknown_service_keeps_the_agent(b: Backend) {
    let env = Env::on(b);
    env.sdis();
    let a = agent(
        &nir("M", "1980-01-01", 1),
        "X",
        None,
        "A",
        "1980-01-01",
        "M",
        "<service code=\"NOPE\"><libelle>Inconnu</libelle></service>",
    );
    let (j, _) = env.import_sdis("a.xml", &a);
    assert_eq!(counts(&j, "agents"), (1, 0, 0));
    assert_eq!(
        error_lines(&j, SDIS)[0][5],
        "Aucun service en base ne correspond aux critères suivants : code=NOPE, libellé=Inconnu"
    );
}

// §5.3.1, §5.3.2, §5.3.4: blocks rejected whole, one ERROR line, first reason that applies.
both!(block_rejections_and_their_order);
fn block_rejections_and_their_order(b: Backend) {
    let env = Env::on(b);
    env.sdis();
    let unknown = siret("1111111181111");
    let other = siret("2222222262222");
    env.ok(&["collectivite", "add", "--siret", &other, "--nom", "Autre"]);
    let body = |n: u32| {
        agent(
            &nir("M", "1980-01-01", n),
            &format!("N{n}"),
            None,
            "A",
            "1980-01-01",
            "M",
            &event("E", "AS", "2015-01-01", ""),
        )
    };
    let doc = Doc::declaration(vec![
        (unknown.clone(), body(1)),
        (other.clone(), body(2)),
        (SDIS.into(), body(3)),
    ]);
    let before_other = env.scalar("SELECT count(*) FROM agent");
    let (j, code) = env.import(&env.write("a.xml", &doc.render()), None);
    assert_eq!(code, 0);
    assert_eq!(j["errors"], 2);
    assert_eq!(counts(&j, "agents"), (1, 0, 2));
    assert_eq!(counts(&j, "evenements"), (1, 0, 2));
    let e1 = error_lines(&j, &unknown);
    assert_eq!(e1.len(), 1);
    assert!(
        e1[0][5].contains("n'existe pas dans la base : elle doit d'abord être créée"),
        "{}",
        e1[0][5]
    );
    let e2 = error_lines(&j, &other);
    assert_eq!(e2.len(), 1);
    assert!(
        e2[0][5].contains("L'émetteur SOFIVAL n'est pas autorisé")
            && e2[0][5].contains("aucune autorisation"),
        "{}",
        e2[0][5]
    );
    assert_eq!(before_other, "0");
    assert_eq!(env.scalar("SELECT count(*) FROM agent"), "1");

    // Refused, then withdrawn consent: the block is rejected; granted again: accepted.
    for (statut, word, created) in [
        ("refusee", "autorisation refusée", "2016-02-01T00:00:00"),
        ("retiree", "autorisation retirée", "2016-02-02T00:00:00"),
    ] {
        env.ok(&[
            "emetteur",
            "autorisation",
            "--code",
            "SOFIVAL",
            "--collectivite",
            &other,
            "--statut",
            statut,
        ]);
        let mut doc = Doc::declaration(vec![(other.clone(), body(10))]);
        doc.date_creation = created;
        let (j, _) = env.import(&env.write(&format!("{statut}.xml"), &doc.render()), None);
        assert!(error_lines(&j, &other)[0][5].contains(word));
        assert_eq!(counts(&j, "agents"), (0, 0, 1));
    }
    env.ok(&[
        "emetteur",
        "autorisation",
        "--code",
        "SOFIVAL",
        "--collectivite",
        &other,
        "--statut",
        "accordee",
        "--reference",
        "Courrier 2016-04",
    ]);
    let (j, _) = env.import(
        &env.write(
            "ok.xml",
            &Doc::declaration(vec![(other.clone(), body(10))]).render(),
        ),
        None,
    );
    assert_eq!(counts(&j, "agents"), (1, 0, 0));
}

// §5.3.4: unknown collectivité comes before not attached; not authorised before not attached.
both!(cdg_reason_order);
fn cdg_reason_order(b: Backend) {
    let env = Env::on(b);
    env.cdg(true);
    let lonely = siret("3333333343333");
    env.ok(&[
        "collectivite",
        "add",
        "--siret",
        &lonely,
        "--nom",
        "Non rattachée, non autorisée",
    ]);
    let unknown = siret("4444444424444");
    let body = agent(
        &nir("M", "1980-01-01", 1),
        "N",
        None,
        "A",
        "1980-01-01",
        "M",
        "",
    );
    let mut d = Doc::declaration(vec![
        (lonely.clone(), body.clone()),
        (unknown.clone(), body),
    ]);
    d.emetteur = "CDGVAUCL";
    d.cdg = Some(CDG);
    let (j, _) = env.import(&env.write("a.xml", &d.render()), None);
    assert!(error_lines(&j, &lonely)[0][5].contains("n'est pas autorisé"));
    assert!(error_lines(&j, &unknown)[0][5].contains("n'existe pas"));
    let (g, _) = log_paths(&j, CDG, true);
    assert_eq!(log(&g).iter().filter(|l| l[1] == "ERROR").count(), 2);
    assert_eq!(j["errors"], 2, "the global log is not counted twice");
}

// §5.3.2: the header's emetteur must be the account that delivered the file.
both!(emetteur_must_be_the_delivering_account);
fn emetteur_must_be_the_delivering_account(b: Backend) {
    let env = Env::on(b);
    env.sdis();
    env.ok(&["emetteur", "add", "--code", "AUTRE", "--collectivite", SDIS]);
    let f = env.write("a.xml", &base_file("2015-11-15"));
    let before = env.snapshot();
    let (j, code) = env.import(&f, Some("AUTRE"));
    assert_eq!(code, 1);
    assert_eq!(j["result"], "echoue");
    assert!(
        j["label"]
            .as_str()
            .unwrap()
            .starts_with("Import échoué : l'émetteur de l'en-tête (SOFIVAL)"),
        "{j}"
    );
    assert_eq!(env.snapshot(), before);
    let mut d = Doc::declaration(vec![(SDIS.into(), String::new())]);
    d.emetteur = "INCONNU";
    let (j, code) = env.import(&env.write("b.xml", &d.render()), None);
    assert_eq!(code, 1);
    assert!(j["label"].as_str().unwrap().contains("INCONNU"));
}

// §5.4.1: a file rejected whole stores nothing and says why, in French.
both!(files_rejected_whole_store_nothing);
fn files_rejected_whole_store_nothing(b: Backend) {
    let env = Env::on(b);
    env.sdis();
    env.import(&env.write("seed.xml", &base_file("2015-11-15")), None);
    let good = Doc::declaration(vec![(
        SDIS.into(),
        agent(
            &nir("F", "1990-02-02", 5),
            "NEW",
            None,
            "Eve",
            "1990-02-02",
            "F",
            &event("N1", "AS", "2015-06-01", ""),
        ),
    )])
    .render();
    let cut = &good[..good.len() - 40];
    let doctype = good.replace(
        "<flux version",
        "<!DOCTYPE flux [<!ENTITY x \"y\">]>\n<flux version",
    );
    let latin = good.replace("UTF-8", "ISO-8859-15");
    let mut totals = Doc::declaration(vec![(
        SDIS.into(),
        agent(
            &nir("F", "1990-02-02", 5),
            "NEW",
            None,
            "Eve",
            "1990-02-02",
            "F",
            "",
        ),
    )]);
    totals.totals = Some((2, 0));
    let root = good
        .replace("<flux version=\"1.0\">", "<fluxx version=\"1.0\">")
        .replace("</flux>", "</fluxx>");
    let version = good.replace("<flux version=\"1.0\">", "<flux version=\"2.0\">");
    let no_header = good.replace("<entete>", "<entete><foo/>");
    let mut bad_utf8 = good.clone().into_bytes();
    let pos = good.find("NEW").unwrap();
    bad_utf8[pos] = 0xE9;
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("tronque.xml", cut.as_bytes().to_vec(), "tronqué"),
        ("doctype.xml", doctype.into_bytes(), "DOCTYPE"),
        (
            "encodage.xml",
            latin.into_bytes(),
            "encodage « ISO-8859-15 » non pris en charge",
        ),
        ("octets.xml", bad_utf8, "octets invalides"),
        (
            "totaux.xml",
            totals.render().into_bytes(),
            "nombreAgents annonce 2 agent(s), le fichier en contient 1",
        ),
        (
            "racine.xml",
            root.into_bytes(),
            "l'élément racine doit être <flux>",
        ),
        (
            "version.xml",
            version.into_bytes(),
            "version du format « 2.0 »",
        ),
        ("entete.xml", no_header.into_bytes(), "en-tête invalide"),
        ("vide.xml", Vec::new(), "le fichier est vide"),
    ];
    let before = env.snapshot();
    for (name, bytes, reason) in cases {
        let p = env.dir.path().join(name);
        std::fs::write(&p, &bytes).unwrap();
        let (j, code) = env.import(&p, Some("SOFIVAL"));
        assert_eq!(code, 1, "{name}");
        assert_eq!(j["result"], "echoue", "{name}");
        let label = j["label"].as_str().unwrap();
        assert!(
            label.starts_with("Import échoué : ") && label.contains(reason),
            "{name}: {label}"
        );
        for k in ["agents", "evenements"] {
            assert_eq!(counts(&j, k), (0, 0, 0), "{name}");
        }
        assert_eq!(
            env.snapshot(),
            before,
            "{name}: the base is exactly as before"
        );
        // The error log says why.
        let l = &j["logs"][0];
        let err = std::fs::read_to_string(l["erreurs"].as_str().unwrap()).unwrap();
        assert!(err.contains("Import échoué"), "{name}: {err}");
    }
    // A file rejected whole was never integrated: sent again (fixed or not) it is processed again.
    let p = env.write("tronque2.xml", cut);
    let (j, _) = env.import(&p, Some("SOFIVAL"));
    assert_eq!(j["result"], "echoue");
    let (j, _) = env.import(&p, Some("SOFIVAL"));
    assert_eq!(j["result"], "echoue", "not a duplicate");
}

// §5.4.3 and §5.4.4: duplicates by bytes; the same content under another name or date
// never creates a record twice.
both!(duplicates_and_reimports);
fn duplicates_and_reimports(b: Backend) {
    let env = Env::on(b);
    env.sdis();
    let content = base_file("2015-11-15");
    let (j, _) = env.import(&env.write("a.xml", &content), None);
    assert_eq!(j["result"], "reussi");
    let (j, code) = env.import(&env.write("copie-sous-un-autre-nom.xml", &content), None);
    assert_eq!(code, 0);
    assert_eq!(j["result"], "doublon");
    assert_eq!(j["errors"], 0);
    let (j, _) = env.import(
        &env.write(
            "c.xml",
            &content.replace("2016-01-10T10:00:00", "2016-01-11T10:00:00"),
        ),
        None,
    );
    assert_eq!(j["result"], "reussi");
    assert_eq!(counts(&j, "agents"), (0, 1, 0));
    for t in ["agent", "evenement", "arret"] {
        assert_eq!(env.scalar(&format!("SELECT count(*) FROM {t}")), "1", "{t}");
    }
    // Twice in the same file: the second occurrence is already present.
    let ev = event(
        "EV-1",
        "AS",
        "2015-11-08",
        &format!("{}{}", arret("2015-11-08", None), arret("2015-11-08", None)),
    );
    let a = agent(
        &nir("F", "1990-01-01", 9),
        "TWICE",
        None,
        "Ann",
        "1990-01-01",
        "F",
        &format!("{ev}{ev}"),
    );
    let (j, _) = env.import_sdis("d.xml", &format!("{a}{a}"));
    assert_eq!(counts(&j, "agents"), (1, 1, 0));
    assert_eq!(counts(&j, "evenements"), (1, 3, 0));
    assert_eq!(counts(&j, "arrets"), (1, 7, 0));
}

// §5.4.2: a kill at any moment leaves either the whole file integrated or nothing of it.
both!(killed_import_leaves_nothing_then_integrates_once);
fn killed_import_leaves_nothing_then_integrates_once(b: Backend) {
    let env = Env::on(b);
    env.sdis();
    env.ok(&["emetteur", "add", "--code", "BENCH", "--collectivite", SDIS]);
    let big = env.dir.path().join("big.xml");
    env.ok(&[
        "gen",
        "--agents",
        "6000",
        "--out",
        big.to_str().unwrap(),
        "--collectivite",
        SDIS,
    ]);
    let before = env.snapshot();
    // Killed at two moments of progress (not after fixed delays): once the logs of the run
    // hold 10 KB, then 300 KB, i.e. a few agents, then a few thousand, already treated.
    for threshold in [10_000u64, 300_000] {
        let logs = env.dir.path().join(format!("logs-kill-{threshold}"));
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_atmp"))
            .args([
                "import",
                big.to_str().unwrap(),
                "--json",
                "--logs",
                logs.to_str().unwrap(),
                "--db",
                &env.db(),
            ])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let written = || -> u64 {
            std::fs::read_dir(&logs)
                .map(|d| {
                    d.flatten()
                        .filter(|e| e.file_name().to_string_lossy().ends_with(".part"))
                        .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
                        .sum()
                })
                .unwrap_or(0)
        };
        let t = std::time::Instant::now();
        while written() < threshold {
            assert!(
                child.try_wait().unwrap().is_none(),
                "the import ended before {threshold} bytes of logs: the file is too small to be killed in the middle"
            );
            assert!(t.elapsed().as_secs() < 120, "no progress");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        child.kill().unwrap();
        let status = child.wait().unwrap();
        assert!(!status.success(), "killed while integrating");
        assert_eq!(
            env.snapshot(),
            before,
            "killed after {threshold} bytes of logs: nothing stored"
        );
        assert_eq!(
            env.scalar("SELECT count(*) FROM import WHERE result = 'reussi'"),
            "0"
        );
    }
    let (j, code) = env.import(&big, None);
    assert_eq!(code, 0);
    assert_eq!(j["result"], "reussi");
    assert_eq!(counts(&j, "agents"), (6000, 0, 0));
    assert_eq!(env.scalar("SELECT count(*) FROM agent"), "6000");
    // Published logs are never the .part files of a killed run.
    for l in j["logs"].as_array().unwrap() {
        assert!(!l["complet"].as_str().unwrap().ends_with(".part"));
    }
}
