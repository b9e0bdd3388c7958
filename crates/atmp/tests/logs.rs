//! One test per line shape of FORMAT.md §6.

#[macro_use]
mod common;

use common::*;

fn full_file() -> String {
    let children = format!(
        "<deces><date>2015-11-09</date></deces>{}{}\
         <certificat><identifiant>C1</identifiant><date>2015-11-08</date><type>I</type></certificat>\
         <lesion><siege>53</siege><nature>01</nature></lesion>\
         <consequenceMedicale><identifiant>R1</identifiant><type>IPP</type><dateDecision>2015-12-01</dateDecision></consequenceMedicale>",
        arret("2015-11-08", Some("2015-11-15")),
        arret("2015-11-16", None)
    );
    let a1 = agent(
        &nir("F", "1966-09-23", 1),
        "GRANDJEAN",
        Some("FAVIER"),
        "Martine",
        "1966-09-23",
        "F",
        &event("E1", "AS", "2015-11-08", &children),
    );
    let a2 = agent(
        &nir("M", "1958-02-11", 2),
        "PASQUIER",
        None,
        "Gilbert",
        "1958-02-11",
        "M",
        "",
    );
    Doc::declaration(vec![(SDIS.into(), format!("{a1}{a2}"))]).render()
}

both!(line_shapes_and_sequence);
fn line_shapes_and_sequence(b: Backend) {
    let env = Env::on(b);
    env.sdis();
    env.ok(&["collectivite", "list"]);
    let (j, _) = env.import(&env.write("complet.xml", &full_file()), None);
    let (complet, erreurs) = log_paths(&j, SDIS, false);
    let raw = std::fs::read_to_string(&complet).unwrap();
    let lines = log(&complet);
    for l in &lines {
        assert_eq!(l.len(), 6, "six fields: {l:?}");
        let ts = &l[0];
        assert!(
            ts.len() == 19
                && &ts[2..3] == "/"
                && &ts[5..6] == "/"
                && &ts[10..11] == " "
                && &ts[13..14] == ":",
            "{ts}"
        );
        assert!(["INFO", "WARN", "ERROR"].contains(&l[1].as_str()));
    }
    assert_eq!(lines[0][1..], ["INFO", "", "", "", "Début du traitement du fichier « complet.xml » : émetteur SOFIVAL, type DECLARATION, mode COMPLET, créé le 10/01/2016 10:00:00"]);
    let a1 = format!(
        "Agent : GRANDJEAN (FAVIER) Martine - 23/09/1966 - {}",
        nir("F", "1966-09-23", 1)
    );
    let a2 = format!(
        "Agent : PASQUIER Gilbert - 11/02/1958 - {}",
        nir("M", "1958-02-11", 2)
    );
    let ev = "Événement : AS du 08/11/2015";
    let body: Vec<[String; 4]> = lines
        .iter()
        .map(|l| [l[2].clone(), l[3].clone(), l[4].clone(), l[5].clone()])
        .collect();
    let expect = |agent: &str, event: &str, element: &str, msg: &str| {
        [
            agent.to_string(),
            event.to_string(),
            element.to_string(),
            msg.to_string(),
        ]
    };
    let seq = vec![
        expect(&a1, "", "", "Début de traitement"),
        expect(&a1, "", "", "Ajout dans la base (agentid=1)"),
        expect(&a1, ev, "", "Début de traitement"),
        expect(&a1, ev, "", "Ajout dans la base (evenementid=1)"),
        expect(&a1, ev, "Décès : 09/11/2015", "Début de traitement"),
        expect(
            &a1,
            ev,
            "Décès : 09/11/2015",
            "Ajout dans la base (decesid=1)",
        ),
        expect(
            &a1,
            ev,
            "Arrêt : du 08/11/2015 au 15/11/2015",
            "Début de traitement",
        ),
        expect(
            &a1,
            ev,
            "Arrêt : du 08/11/2015 au 15/11/2015",
            "Ajout dans la base (arretid=1)",
        ),
        expect(&a1, ev, "Arrêt : du 16/11/2015", "Début de traitement"),
        expect(
            &a1,
            ev,
            "Arrêt : du 16/11/2015",
            "Ajout dans la base (arretid=2)",
        ),
        expect(
            &a1,
            ev,
            "Certificat : I du 08/11/2015",
            "Début de traitement",
        ),
        expect(
            &a1,
            ev,
            "Certificat : I du 08/11/2015",
            "Ajout dans la base (certificatid=1)",
        ),
        expect(
            &a1,
            ev,
            "Lésion (siège/nature) : 53 / 01",
            "Début de traitement",
        ),
        expect(
            &a1,
            ev,
            "Lésion (siège/nature) : 53 / 01",
            "Ajout dans la base (lesionid=1)",
        ),
        expect(
            &a1,
            ev,
            "Conséquence médicale : IPP du 01/12/2015",
            "Début de traitement",
        ),
        expect(
            &a1,
            ev,
            "Conséquence médicale : IPP du 01/12/2015",
            "Ajout dans la base (consequenceid=1)",
        ),
        expect(&a2, "", "", "Début de traitement"),
        expect(&a2, "", "", "Ajout dans la base (agentid=2)"),
    ];
    // Line 0: the file; line 1: the collectivité; then the records; then totals and result.
    assert!(body[1][3].starts_with("Début du traitement de la collectivité 28219002400012"));
    assert_eq!(body[2..2 + seq.len()].to_vec(), seq);
    let n = lines.len();
    assert_eq!(n, 2 + seq.len() + 2);
    assert!(lines[n - 2][5].starts_with("Fin du traitement : services : 0 ajouté(s), 0 déjà présent(s), 0 rejeté(s) | agents : 2 ajouté(s)"), "{}", lines[n - 2][5]);
    assert_eq!(lines[n - 1][5], "Import réussi");
    assert_eq!(std::fs::read_to_string(&erreurs).unwrap(), "");
    assert!(raw.ends_with("Import réussi\n"));

    // Present again: "Déjà présent dans la base (xid=N), non modifié", same shapes.
    let (j, _) = env.import(
        &env.write(
            "complet2.xml",
            &full_file().replace("2016-01-10T10:00:00", "2016-01-12T10:00:00"),
        ),
        None,
    );
    let (complet, _) = log_paths(&j, SDIS, false);
    let lines = log(&complet);
    assert_eq!(
        lines[3][5],
        "Déjà présent dans la base (agentid=1), non modifié"
    );
    assert_eq!(
        lines[9][5],
        "Déjà présent dans la base (arretid=1), non modifié"
    );
}

both!(error_log_holds_exactly_the_error_lines_and_quotes_fields);
fn error_log_holds_exactly_the_error_lines_and_quotes_fields(b: Backend) {
    let env = Env::on(b);
    env.sdis();
    // A service code with ';' and '"' in it: the field is quoted as in CSV.
    let a = agent(
        &nir("M", "1980-01-01", 1),
        "X",
        None,
        "A",
        "1980-01-01",
        "M",
        "<service code=\"A;B&quot;C\"/>",
    );
    let bad = agent(
        &nir("M", "1980-01-01", 2),
        "Y",
        None,
        "",
        "1980-01-01",
        "M",
        "",
    );
    let (j, _) = env.import_sdis("q.xml", &format!("{a}{bad}"));
    assert_eq!(j["errors"], 2);
    let (complet, erreurs) = log_paths(&j, SDIS, false);
    let raw_err = std::fs::read_to_string(&erreurs).unwrap();
    let errors_in_complete: String = std::fs::read_to_string(&complet)
        .unwrap()
        .lines()
        .filter(|l| l.split(';').nth(1) == Some("ERROR"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(raw_err, errors_in_complete);
    assert!(raw_err.contains(";\"Service : A;B\"\"C\";"), "{raw_err}");
    let lines = log(&erreurs);
    assert_eq!(lines[0][4], "Service : A;B\"C");
    assert_eq!(
        lines[0][5],
        "Aucun service en base ne correspond aux critères suivants : code=A;B\"C, libellé="
    );
    assert_eq!(
        log(&complet).last().unwrap()[5],
        "Import réussi (2 erreur(s))"
    );
}

both!(nir_sex_mismatch_is_a_warning);
fn nir_sex_mismatch_is_a_warning(b: Backend) {
    let env = Env::on(b);
    env.sdis();
    let a = agent(
        &nir("M", "1980-01-01", 1),
        "X",
        None,
        "A",
        "1980-01-01",
        "F",
        "",
    );
    let (j, _) = env.import_sdis("w.xml", &a);
    assert_eq!(j["errors"], 0);
    assert_eq!(j["warnings"], 1);
    assert_eq!(counts(&j, "agents"), (1, 0, 0));
    let (complet, _) = log_paths(&j, SDIS, false);
    let w: Vec<_> = log(&complet)
        .into_iter()
        .filter(|l| l[1] == "WARN")
        .collect();
    assert!(
        w[0][5].contains("ne correspond pas au sexe déclaré"),
        "{:?}",
        w[0]
    );
}
