//! The quarantine ("rattrapage"): every rejection kept as data, corrected, replayed; the dry
//! run. Through the real binary, on both backends.

#[macro_use]
mod common;

use common::*;
use serde_json::Value as Json;

fn cardon() -> String {
    nir("M", "1984-05-17", 1)
}

fn cardon_agent(nom: &str, events: &str) -> String {
    agent(&cardon(), nom, None, "Yannick", "1984-05-17", "M", events)
}

fn ev(id: &str, date: &str) -> String {
    event(id, "AS", date, &arret(date, Some(date)))
}

fn rejets(env: &Env, args: &[&str]) -> Vec<Json> {
    let mut a = vec!["rejets", "list", "--json"];
    a.extend_from_slice(args);
    let out = env.ok(&a);
    let j: Json = serde_json::from_str(out.trim()).unwrap();
    j["rejets"].as_array().unwrap().clone()
}

fn rejeu(env: &Env, import: i64) -> (Json, i32) {
    let logs = env.logs().to_str().unwrap().to_string();
    let imp = import.to_string();
    let o = env.run(&["rejeu", "--import", &imp, "--json", "--logs", &logs]);
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    let code = o.status.code().unwrap();
    if code != 0 && out.trim().is_empty() {
        return (
            Json::String(String::from_utf8_lossy(&o.stderr).to_string()),
            code,
        );
    }
    (serde_json::from_str(out.trim()).unwrap(), code)
}

// The acceptance scenario: identity gap → correction in the base → replay → the declarations
// are integrated, the replay's log links the original import → a second replay adds nothing.
both!(identity_gap_corrected_in_the_base_then_replayed);
fn identity_gap_corrected_in_the_base_then_replayed(b: Backend) {
    let env = Env::on(b);
    env.sdis();
    let (j, _) = env.import_sdis("a.xml", &cardon_agent("CARDON", &ev("EV-1", "2015-11-08")));
    assert_eq!(counts(&j, "agents"), (1, 0, 0));
    // The sender's base spells the name otherwise, and brings a new event.
    let (j, code) = env.import_sdis(
        "b.xml",
        &cardon_agent(
            "CARDONNE",
            &format!("{}{}", ev("EV-1", "2015-11-08"), ev("EV-2", "2015-12-01")),
        ),
    );
    assert_eq!(code, 0);
    assert_eq!(counts(&j, "agents"), (0, 0, 1));
    assert_eq!(counts(&j, "evenements"), (0, 0, 2));
    let import = j["import"].as_i64().expect("the import's id");
    let r = rejets(&env, &["--import", &import.to_string()]);
    assert_eq!(r.len(), 1, "{r:#?}");
    let r = &r[0];
    assert_eq!(r["raison"], "identite");
    assert_eq!(r["niveau"], "agent");
    assert_eq!(r["etat"], "a_traiter");
    assert_eq!(r["collectivite"], SDIS);
    assert_eq!(r["base"]["nomUsuel"], "CARDON");
    assert_eq!(r["fichier"]["nomUsuel"], "CARDONNE");
    assert_eq!(r["base"]["nir"], cardon());
    assert_eq!(r["differences"], serde_json::json!(["nomUsuel"]));
    assert!(r["message"]
        .as_str()
        .unwrap()
        .contains("ne correspondent pas"));
    // The record exactly as received.
    let fragment = r["fragment"].as_str().unwrap();
    assert!(fragment.starts_with("<agent><nir>"), "{fragment}");
    assert!(fragment.contains("EV-2") && fragment.ends_with("</agent>"));

    // Replayed before the fix: it fails again and stays open, nothing is added.
    let before = env.snapshot();
    let (j2, code) = rejeu(&env, import);
    assert_eq!(code, 0, "{j2}");
    assert_eq!(counts(&j2, "agents"), (0, 0, 1));
    assert_eq!(env.snapshot(), before);
    let r = rejets(&env, &["--import", &import.to_string()]);
    assert_eq!(r[0]["etat"], "a_traiter");

    // The base is corrected (audited), then the replay integrates the new event.
    let out = env.ok(&[
        "agent",
        "corriger",
        "--collectivite",
        SDIS,
        "--nir",
        &cardon(),
        "--nom-usuel",
        "CARDONNE",
    ]);
    assert!(out.contains("CARDONNE"), "{out}");
    assert_eq!(env.scalar("SELECT count(*) FROM agent_correction"), "1");
    let avant = env.scalar("SELECT avant FROM agent_correction");
    assert!(avant.contains("\"CARDON\""), "{avant}");
    assert_eq!(env.scalar("SELECT nom_norm FROM agent"), "cardonne");
    let (j3, code) = rejeu(&env, import);
    assert_eq!(code, 0, "{j3}");
    assert_eq!(j3["rejeu_de"], import);
    assert_eq!(j3["result"], "reussi");
    assert_eq!(counts(&j3, "agents"), (0, 1, 0));
    assert_eq!(counts(&j3, "evenements"), (1, 1, 0));
    assert_eq!(env.scalar("SELECT count(*) FROM evenement"), "2");
    let replay_id = j3["import"].as_i64().unwrap();
    assert_eq!(
        env.scalar(&format!(
            "SELECT rejeu_de FROM import WHERE id = {replay_id}"
        )),
        import.to_string()
    );
    let (c, _) = log_paths(&j3, SDIS, false);
    let first = &log(&c)[0];
    assert!(
        first[5].contains(&format!("Rejeu de l'import n° {import} du ")),
        "{first:?}"
    );
    let r = rejets(&env, &["--import", &import.to_string()]);
    assert_eq!(r[0]["etat"], "rejoue");
    assert_eq!(r[0]["rejeu"], replay_id);
    // A second replay adds nothing.
    let after = env.snapshot();
    let imports = env.scalar("SELECT count(*) FROM import");
    let (msg, code) = rejeu(&env, import);
    assert_eq!(code, 1);
    assert!(
        msg.as_str().unwrap().contains("aucun rejet à traiter"),
        "{msg}"
    );
    assert_eq!(env.snapshot(), after);
    assert_eq!(env.scalar("SELECT count(*) FROM import"), imports);
}

// Every reason is kept, with its code, and replayable once fixed.
both!(every_reason_is_kept_and_replayable_after_its_fix);
fn every_reason_is_kept_and_replayable_after_its_fix(b: Backend) {
    let env = Env::on(b);
    env.sdis();
    env.cdg(false);
    let other = siret("2222222262222");
    // collectivite_inconnue: a block for a collectivité the base does not know.
    let martin = nir("F", "1990-02-03", 7);
    let body = agent(
        &martin,
        "MARTIN",
        None,
        "Julie",
        "1990-02-03",
        "F",
        &ev("EV-9", "2016-01-02"),
    );
    let f = env.write(
        "inconnue.xml",
        &Doc::declaration(vec![(other.clone(), body.clone())]).render(),
    );
    let (j, _) = env.import(&f, None);
    let unknown_import = j["import"].as_i64().unwrap();
    // hors_cdg: the CCAS is not attached to the CDG of the grouped file.
    let mut d = Doc::declaration(vec![(CCAS.into(), body.clone())]);
    d.emetteur = "CDGVAUCL";
    d.cdg = Some(CDG);
    let (j, _) = env.import(&env.write("groupe.xml", &d.render()), None);
    let cdg_import = j["import"].as_i64().unwrap();
    // contenu: an element matériel no nomenclature knows.
    let bad_ev = event(
        "EV-3",
        "AS",
        "2016-01-03",
        "<elementMateriel>ZZ</elementMateriel>",
    );
    let (j, _) = env.import_sdis("contenu.xml", &cardon_agent("CARDON", &bad_ev));
    assert_eq!(counts(&j, "agents"), (1, 0, 0));
    assert_eq!(counts(&j, "evenements"), (0, 0, 1));
    let content_import = j["import"].as_i64().unwrap();
    // autre_nir: the same person in the base under another NIR.
    let (j, _) = env.import_sdis(
        "autre.xml",
        &agent(
            &nir("M", "1984-05-17", 2),
            "CARDON",
            None,
            "Yannick",
            "1984-05-17",
            "M",
            "",
        ),
    );
    let other_nir_import = j["import"].as_i64().unwrap();

    let all = rejets(&env, &["--etat", "a_traiter"]);
    let reason = |import: i64| -> Vec<(String, String)> {
        all.iter()
            .filter(|r| r["import"] == import)
            .map(|r| {
                (
                    r["raison"].as_str().unwrap().to_string(),
                    r["niveau"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    assert_eq!(
        reason(unknown_import),
        [("collectivite_inconnue".into(), "agent".into())]
    );
    assert_eq!(reason(cdg_import), [("hors_cdg".into(), "agent".into())]);
    assert_eq!(
        reason(content_import),
        [("contenu".into(), "evenement".into())]
    );
    assert_eq!(
        reason(other_nir_import),
        [("autre_nir".into(), "agent".into())]
    );
    let content = all.iter().find(|r| r["import"] == content_import).unwrap();
    assert!(content["fragment"]
        .as_str()
        .unwrap()
        .starts_with("<evenement><identifiant>EV-3"));
    assert!(content["base"].is_null());
    let on = all
        .iter()
        .find(|r| r["import"] == other_nir_import)
        .unwrap();
    assert_eq!(on["base"]["nir"], cardon());
    assert_eq!(on["differences"], serde_json::json!(["nir"]));

    // The fixes, then the replays.
    env.ok(&[
        "collectivite",
        "add",
        "--siret",
        &other,
        "--nom",
        "Nouvelle commune",
    ]);
    env.ok(&[
        "emetteur",
        "autorisation",
        "--code",
        "SOFIVAL",
        "--collectivite",
        &other,
        "--statut",
        "accordee",
    ]);
    let (j, code) = rejeu(&env, unknown_import);
    assert_eq!(code, 0, "{j}");
    assert_eq!(counts(&j, "agents"), (1, 0, 0));
    assert_eq!(counts(&j, "evenements"), (1, 0, 0));

    env.ok(&["collectivite", "rattacher", "--siret", CCAS, "--cdg", CDG]);
    let (j, _) = rejeu(&env, cdg_import);
    assert_eq!(counts(&j, "agents"), (1, 0, 0));

    let csv = env.write(
        "nomenclature.csv",
        "nomenclature;code;libelle\nELEMENT_MATERIEL;ZZ;Élément ajouté\nELEMENT_MATERIEL;02;Escaliers\n",
    );
    env.ok(&["nomenclature", "import", csv.to_str().unwrap()]);
    let (j, _) = rejeu(&env, content_import);
    // The agent was integrated by its file; only the event is new.
    assert_eq!(counts(&j, "agents"), (0, 1, 0));
    assert_eq!(counts(&j, "evenements"), (1, 0, 0));

    env.ok(&[
        "agent",
        "corriger",
        "--collectivite",
        SDIS,
        "--nir",
        &cardon(),
        "--nir-nouveau",
        &nir("M", "1984-05-17", 2),
    ]);
    let (j, _) = rejeu(&env, other_nir_import);
    assert_eq!(counts(&j, "agents"), (0, 1, 0));

    assert!(rejets(&env, &["--etat", "a_traiter"]).is_empty());
    assert_eq!(rejets(&env, &["--etat", "rejoue"]).len(), 4);
    // A NIR with a bad key is refused, and nothing changes.
    let before = env.snapshot();
    let bad = format!("{}00", &cardon()[..13]);
    let o = env.run(&[
        "agent",
        "corriger",
        "--collectivite",
        SDIS,
        "--nir",
        &nir("M", "1984-05-17", 2),
        "--nir-nouveau",
        &bad,
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("clé du NIR"));
    assert_eq!(env.snapshot(), before);
}

// A later file bringing the same records integrates them and closes their open rejections;
// one that brings only part of them leaves them open.
both!(a_later_file_closes_the_open_rejections_of_its_records);
fn a_later_file_closes_the_open_rejections_of_its_records(b: Backend) {
    let env = Env::on(b);
    env.sdis();
    env.import_sdis("a.xml", &cardon_agent("CARDON", ""));
    let two = format!("{}{}", ev("EV-1", "2015-11-08"), ev("EV-2", "2015-12-01"));
    let (j, _) = env.import_sdis("b.xml", &cardon_agent("CARDONNE", &two));
    let import = j["import"].as_i64().unwrap();
    // The sender corrects its base, but its next weekly file brings only EV-2: EV-1 is still
    // not in the base, the rejection stays open.
    let (j, _) = env.import_sdis("c.xml", &cardon_agent("CARDON", &ev("EV-2", "2015-12-01")));
    assert_eq!(counts(&j, "evenements"), (1, 0, 0));
    assert_eq!(
        rejets(&env, &["--import", &import.to_string()])[0]["etat"],
        "a_traiter"
    );
    // Its complete file brings both: closed, by that import.
    let (j, _) = env.import_sdis("d.xml", &cardon_agent("CARDON", &two));
    assert_eq!(counts(&j, "evenements"), (1, 1, 0));
    let r = &rejets(&env, &["--import", &import.to_string()])[0];
    assert_eq!(r["etat"], "rejoue");
    assert_eq!(r["rejeu"], j["import"]);
    // Classer: only an open one, with a comment.
    let (j, _) = env.import_sdis("e.xml", &cardon_agent("DUPONT", ""));
    let id = rejets(&env, &["--import", &j["import"].to_string()])[0]["id"].to_string();
    env.ok(&[
        "rejets",
        "classer",
        &id,
        "--motif",
        "L'émetteur corrige sa base",
    ]);
    let r = &rejets(&env, &["--etat", "classe"])[0];
    assert_eq!(r["motif"], "L'émetteur corrige sa base");
    assert_eq!(
        env.run(&["rejets", "classer", &id, "--motif", "encore"])
            .status
            .code(),
        Some(1)
    );
}

// A dry run checks the file against the real base and leaves every table exactly as it was.
both!(a_dry_run_changes_nothing_in_the_base);
fn a_dry_run_changes_nothing_in_the_base(b: Backend) {
    let env = Env::on(b);
    env.sdis();
    env.import_sdis("a.xml", &cardon_agent("CARDON", &ev("EV-1", "2015-11-08")));
    let digest = || -> String {
        // Every table of the base, whatever it holds (imports, rejections, jobs, audit…).
        let tables = match b {
            Backend::Sqlite => env.rows("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"),
            Backend::Postgres => env.rows(
                "SELECT table_name::text FROM information_schema.tables WHERE table_schema = current_schema() ORDER BY 1",
            ),
        };
        let mut out = String::new();
        for t in tables {
            let t = t[0].to_string();
            out.push_str(&format!(
                "{t}: {:?}\n",
                env.rows(&format!("SELECT * FROM \"{t}\" ORDER BY 1"))
            ));
        }
        out
    };
    let before = digest();
    assert!(before.contains("rejet: []"), "{before}");
    let logs = env.logs().to_str().unwrap().to_string();
    let f = env.write(
        "essai.xml",
        &Doc::declaration(vec![(
            SDIS.into(),
            format!(
                "{}{}",
                cardon_agent("CARDONNE", &ev("EV-1", "2015-11-08")),
                agent(
                    &nir("F", "1990-02-03", 7),
                    "MARTIN",
                    None,
                    "Julie",
                    "1990-02-03",
                    "F",
                    &ev("EV-9", "2016-01-02")
                )
            ),
        )])
        .render(),
    );
    let o = env.run(&[
        "import",
        "--dry-run",
        f.to_str().unwrap(),
        "--json",
        "--logs",
        &logs,
    ]);
    assert_eq!(o.status.code(), Some(0));
    let j: Json = serde_json::from_str(String::from_utf8_lossy(&o.stdout).trim()).unwrap();
    assert_eq!(j["essai"], true);
    assert!(j["import"].is_null());
    assert_eq!(counts(&j, "agents"), (1, 0, 1));
    let (c, _) = log_paths(&j, SDIS, false);
    assert!(c.contains("/essais/"), "{c}");
    assert!(log(&c)[1][5].starts_with("ESSAI"), "{:?}", log(&c)[1]);
    assert_eq!(digest(), before);
    // The same file for real stores it: the dry run said what would happen.
    let (j, _) = env.import(&f, None);
    assert_eq!(counts(&j, "agents"), (1, 0, 1));
    assert_ne!(digest(), before);
}
