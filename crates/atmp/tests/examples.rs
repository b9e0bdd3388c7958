//! The example files of ../shared/spec/examples give exactly the outcomes their README states.

#[macro_use]
mod common;

use common::*;

#[test]
fn validate_examples_without_database() {
    let env = Env::new();
    for f in [
        "services.xml",
        "declaration-differentiel.xml",
        "cdg-groupe.xml",
    ] {
        let path = examples().join(f);
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_atmp"))
            .args(["validate", path.to_str().unwrap(), "--json"])
            .current_dir(env.dir.path())
            .env_remove("ATMP_DATABASE_URL")
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(0), "{f}");
        let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(j["valid"], true, "{f}: {j}");
        assert_eq!(j["errors"].as_array().unwrap().len(), 0, "{f}: {j}");
        // No database was created: validate needs none.
        assert!(!env.dir.path().join("data").exists());
    }
}

both!(services_then_duplicate);
fn services_then_duplicate(b: Backend) {
    let env = Env::on(b);
    env.sdis();
    let (j, code) = env.import(&examples().join("services.xml"), Some("SOFIVAL"));
    assert_eq!(code, 0);
    assert_eq!(j["result"], "reussi");
    assert_eq!(j["errors"], 0);
    assert_eq!(counts(&j, "services"), (6, 0, 0));
    for k in [
        "agents",
        "evenements",
        "arrets",
        "certificats",
        "lesions",
        "consequences",
        "deces",
    ] {
        assert_eq!(counts(&j, k), (0, 0, 0), "{k}");
    }
    let before = env.snapshot();
    let (j, code) = env.import(&examples().join("services.xml"), Some("SOFIVAL"));
    assert_eq!(code, 0);
    assert_eq!(j["result"], "doublon");
    assert!(
        j["label"]
            .as_str()
            .unwrap()
            .starts_with("Doublon : déjà intégré le "),
        "{j}"
    );
    for k in ["services", "agents", "evenements"] {
        assert_eq!(counts(&j, k), (0, 0, 0));
    }
    assert_eq!(env.snapshot(), before);
}

both!(declaration_differentiel);
fn declaration_differentiel(b: Backend) {
    let env = Env::on(b);
    env.sdis();
    env.import(&examples().join("services.xml"), Some("SOFIVAL"));
    let (j, code) = env.import(
        &examples().join("declaration-differentiel.xml"),
        Some("SOFIVAL"),
    );
    assert_eq!(code, 0);
    assert_eq!(j["result"], "reussi", "{j}");
    assert_eq!(j["errors"], 0, "{j}");
    let expected = [
        ("services", 0),
        ("agents", 3),
        ("evenements", 3),
        ("arrets", 3),
        ("certificats", 5),
        ("lesions", 4),
        ("consequences", 0),
        ("deces", 1),
    ];
    for (k, n) in expected {
        assert_eq!(counts(&j, k), (n, 0, 0), "{k}");
    }
    let logs = j["logs"].as_array().unwrap();
    assert_eq!(logs.len(), 1);
    let (complet, erreurs) = log_paths(&j, SDIS, false);
    assert_eq!(std::fs::read_to_string(erreurs).unwrap(), "");
    assert!(log(&complet).len() > 40);

    // Variant: the same content with another dateCreation: everything is already present.
    let src = std::fs::read_to_string(examples().join("declaration-differentiel.xml")).unwrap();
    let again = env.write(
        "again.xml",
        &src.replace("2015-11-21T02:00:00", "2015-11-28T02:00:00"),
    );
    let before = env.snapshot();
    let (j, code) = env.import(&again, Some("SOFIVAL"));
    assert_eq!(code, 0);
    assert_eq!(j["result"], "reussi");
    assert_eq!(j["errors"], 0);
    assert_eq!(j["warnings"], 0, "{j}");
    for (k, n) in expected {
        assert_eq!(counts(&j, k), (0, n, 0), "{k}");
    }
    assert_eq!(env.snapshot(), before, "nothing added, nothing changed");
}

both!(declaration_without_services);
fn declaration_without_services(b: Backend) {
    let env = Env::on(b);
    env.sdis();
    let (j, code) = env.import(
        &examples().join("declaration-differentiel.xml"),
        Some("SOFIVAL"),
    );
    assert_eq!(code, 0);
    assert_eq!(j["result"], "reussi");
    assert_eq!(j["errors"], 3);
    assert_eq!(j["label"], "Import réussi (3 erreur(s))");
    assert_eq!(counts(&j, "agents"), (3, 0, 0));
    assert_eq!(counts(&j, "certificats"), (5, 0, 0));
    let (_, erreurs) = log_paths(&j, SDIS, false);
    let lines = log(&erreurs);
    assert_eq!(lines.len(), 3);
    assert_eq!(
        lines[1][5],
        "Aucun service en base ne correspond aux critères suivants : code=GTL, libellé="
    );
    assert_eq!(
        lines[0][5],
        "Aucun service en base ne correspond aux critères suivants : code=CIS-ROCHEBRUNE, libellé=Centre d'incendie et de secours de Rochebrune-sur-Aube"
    );
    assert!(lines.iter().all(|l| l[1] == "ERROR"));
    assert_eq!(
        env.scalar("SELECT count(*) FROM agent WHERE service_id IS NULL"),
        "3"
    );
}

both!(cdg_grouped_file);
fn cdg_grouped_file(b: Backend) {
    let env = Env::on(b);
    env.cdg(true);
    let (j, code) = env.import(&examples().join("cdg-groupe.xml"), Some("CDGVAUCL"));
    assert_eq!(code, 0);
    assert_eq!(j["result"], "reussi", "{j}");
    assert_eq!(j["errors"], 0);
    for (k, n) in [
        ("agents", 3),
        ("evenements", 4),
        ("arrets", 5),
        ("certificats", 8),
        ("lesions", 4),
        ("consequences", 1),
        ("deces", 0),
        ("services", 0),
    ] {
        assert_eq!(counts(&j, k), (n, 0, 0), "{k}");
    }
    let logs = j["logs"].as_array().unwrap();
    assert_eq!(logs.len(), 3, "{j}");
    assert_eq!(logs[2]["global"], true);
    assert_eq!(logs[2]["collectivite"], CDG);
    let (commune, _) = log_paths(&j, COMMUNE, false);
    let (ccas, _) = log_paths(&j, CCAS, false);
    let (global, global_err) = log_paths(&j, CDG, true);
    let agents = |p: &str| {
        let mut v: Vec<String> = log(p)
            .into_iter()
            .map(|l| l[2].clone())
            .filter(|a| !a.is_empty())
            .collect();
        v.dedup();
        v
    };
    let a_commune = agents(&commune);
    let a_ccas = agents(&ccas);
    assert_eq!(a_commune.len(), 2, "{a_commune:?}");
    assert!(
        a_commune.iter().any(|a| a.contains("THIBAULT"))
            && a_commune.iter().any(|a| a.contains("COLAS"))
    );
    assert_eq!(
        a_ccas,
        vec!["Agent : LOISEAU Chantal - 08/07/1963 - 263071031220390".to_string()]
    );
    assert_eq!(agents(&global).len(), 3);
    assert_eq!(std::fs::read_to_string(global_err).unwrap(), "");
    // Per-collectivité totals in each log, the file's in the global one.
    let last_but_one = |p: &str| log(p).iter().rev().nth(1).unwrap()[5].clone();
    assert!(
        last_but_one(&ccas).contains("agents : 1 ajouté(s)"),
        "{}",
        last_but_one(&ccas)
    );
    assert!(last_but_one(&commune).contains("agents : 2 ajouté(s)"));
    assert!(last_but_one(&global).contains("agents : 3 ajouté(s)"));
    assert_eq!(env.scalar(&format!("SELECT count(*) FROM agent a JOIN collectivite c ON c.id = a.collectivite_id WHERE c.siret = '{CCAS}'")), "1");
}

both!(cdg_block_not_attached_is_rejected);
fn cdg_block_not_attached_is_rejected(b: Backend) {
    let env = Env::on(b);
    env.cdg(false);
    let (j, code) = env.import(&examples().join("cdg-groupe.xml"), Some("CDGVAUCL"));
    assert_eq!(code, 0);
    assert_eq!(j["result"], "reussi");
    assert_eq!(j["errors"], 1, "{j}");
    assert_eq!(counts(&j, "agents"), (2, 0, 1));
    assert_eq!(counts(&j, "evenements"), (3, 0, 1));
    assert_eq!(counts(&j, "certificats"), (6, 0, 2));
    let (_, ccas_err) = log_paths(&j, CCAS, false);
    let lines = log(&ccas_err);
    assert_eq!(lines.len(), 1);
    assert!(
        lines[0][5].contains("n'est pas rattachée au CDG 28219010700049"),
        "{:?}",
        lines[0]
    );
    assert_eq!(env.scalar(&format!("SELECT count(*) FROM agent a JOIN collectivite c ON c.id = a.collectivite_id WHERE c.siret = '{CCAS}'")), "0");
}
