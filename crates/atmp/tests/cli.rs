//! The command-line contract of FORMAT.md §7: options, exit statuses, JSON shapes.

#[macro_use]
mod common;

use common::*;

#[test]
fn usage_errors_exit_2() {
    let env = Env::new();
    for args in [
        vec!["frobnicate"],
        vec![
            "collectivite",
            "add",
            "--siret",
            "28219002400013",
            "--nom",
            "Clé fausse",
        ],
        vec![
            "collectivite",
            "add",
            "--siret",
            "123",
            "--nom",
            "Trop court",
        ],
        vec!["collectivite", "add", "--nom", "Sans SIRET"],
        vec!["import"],
        vec!["validate", "--bogus", "x.xml"],
        vec!["emetteur", "add", "--code", "a b"],
    ] {
        let o = env.run(&args);
        assert_eq!(
            o.status.code(),
            Some(2),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let o = env.run(&[
        "collectivite",
        "add",
        "--siret",
        "28219002400013",
        "--nom",
        "X",
    ]);
    assert!(String::from_utf8_lossy(&o.stderr)
        .contains("SIRET « 28219002400013 » invalide : la clé de contrôle du SIRET est invalide"));
}

both!(global_options_before_or_after);
fn global_options_before_or_after(b: Backend) {
    let env = Env::on(b);
    env.sdis();
    let db = env.db();
    let before = env.ok(&["collectivite", "list", "--json"]);
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_atmp"))
        .args(["--json", "--db", &db, "collectivite", "list"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8(o.stdout).unwrap(), before);
    let j: serde_json::Value = serde_json::from_str(before.lines().next().unwrap()).unwrap();
    assert_eq!(j["siret"], SDIS);
    // ATMP_DATABASE_URL chooses the base too.
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_atmp"))
        .args(["emetteur", "list", "--json"])
        .env("ATMP_DATABASE_URL", &db)
        .output()
        .unwrap();
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["code"], "SOFIVAL");
    assert_eq!(j["autorisations"][0]["collectivite"], SDIS);
    assert_eq!(j["autorisations"][0]["statut"], "accordee");
}

#[test]
fn default_base_is_under_data() {
    let env = Env::new();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_atmp"))
        .args(["collectivite", "add", "--siret", SDIS, "--nom", "SDIS"])
        .current_dir(env.dir.path())
        .env_remove("ATMP_DATABASE_URL")
        .output()
        .unwrap();
    assert!(o.status.success());
    assert!(env.dir.path().join("data/atmp.db").exists());
}

#[test]
fn validate_json_reports_positions_and_exit_status() {
    let env = Env::new();
    let good = examples().join("services.xml");
    let bad = env.write(
        "bad.xml",
        &std::fs::read_to_string(&good)
            .unwrap()
            .replace("<service code=\"GTL\">", "<service>"),
    );
    let o = env.run(&[
        "validate",
        good.to_str().unwrap(),
        bad.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let out = String::from_utf8(o.stdout).unwrap();
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["valid"], true);
    assert_eq!(lines[1]["valid"], false);
    let e = &lines[1]["errors"][0];
    assert_eq!(e["line"], 13, "the line of <service> in services.xml");
    assert_eq!(e["code"], "OBLIGATOIRE");
    assert_eq!(e["path"], "/flux/collectivite[1]/service[2]/@code");
    assert!(e["column"].as_u64().unwrap() >= 1);
    assert!(e["message"].as_str().unwrap().contains("obligatoire"));
}

both!(import_exit_status_and_several_files);
fn import_exit_status_and_several_files(b: Backend) {
    let env = Env::on(b);
    env.sdis();
    let good = examples().join("services.xml");
    let bad = env.write("bad.xml", "<flux");
    let logs = env.logs();
    let o = env.run(&[
        "import",
        good.to_str().unwrap(),
        bad.to_str().unwrap(),
        "--json",
        "--emetteur",
        "SOFIVAL",
        "--logs",
        logs.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1), "one file rejected whole");
    let out = String::from_utf8(o.stdout).unwrap();
    let results: Vec<String> = out
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["result"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(results, ["reussi", "echoue"]);
    // Record errors only: exit 0.
    let (j, code) = env.import(
        &examples().join("declaration-differentiel.xml"),
        Some("SOFIVAL"),
    );
    assert_eq!((j["result"].as_str(), code), (Some("reussi"), 0));
}

both!(nomenclatures_are_data);
fn nomenclatures_are_data(b: Backend) {
    let env = Env::on(b);
    env.sdis();
    let list = env.ok(&["nomenclature", "list", "--json"]);
    assert!(list.contains("\"TYPE_EVENEMENT\""));
    // An administrator adds a code without a release; a record using it becomes valid.
    let a = agent(
        &nir("M", "1980-01-01", 1),
        "X",
        None,
        "A",
        "1980-01-01",
        "M",
        &event("E", "ACC", "2015-01-01", ""),
    );
    let f = env.write(
        "n.xml",
        &Doc::declaration(vec![(SDIS.into(), a.clone())]).render(),
    );
    let (j, _) = env.import(&f, None);
    assert_eq!(counts(&j, "evenements"), (0, 0, 1));
    let bad_csv = env.write("bad.csv", "nomenclature;code;libelle\nTYPE_EVENEMENT;ACC\n");
    let o = env.run(&["nomenclature", "import", bad_csv.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains(":2: 3 champs attendus"));
    let csv = env.write(
        "types-2.csv",
        "nomenclature;code;libelle\nTYPE_EVENEMENT;AS;Accident de service\nTYPE_EVENEMENT;AT;Accident du travail\nTYPE_EVENEMENT;ATR;Accident de trajet\nTYPE_EVENEMENT;MP;Maladie professionnelle\nTYPE_EVENEMENT;MCS;Maladie contractée en service\nTYPE_EVENEMENT;ACC;Accident (code local)\n",
    );
    env.ok(&["nomenclature", "import", csv.to_str().unwrap()]);
    let f2 = env.write(
        "n2.xml",
        &Doc::declaration(vec![(SDIS.into(), a)])
            .render()
            .replace("2016-01-10", "2016-01-11"),
    );
    let (j, _) = env.import(&f2, None);
    assert_eq!(counts(&j, "evenements"), (1, 0, 0));
    // The other nomenclatures were left as they were.
    assert!(env
        .ok(&["nomenclature", "list"])
        .contains("SIEGE_LESION (329 codes)"));
}

both!(gzip_and_latin1_files_import_like_the_plain_ones);
fn gzip_and_latin1_files_import_like_the_plain_ones(b: Backend) {
    use std::io::Write;
    let env = Env::on(b);
    env.sdis();
    // ISO-8859-1: the names come out in UTF-8 in the logs and the base.
    let a = agent(
        &nir("F", "1975-03-03", 1),
        "LÉGER",
        None,
        "Hélène",
        "1975-03-03",
        "F",
        "",
    );
    let latin: Vec<u8> = Doc::declaration(vec![(SDIS.into(), a)])
        .render()
        .replace("UTF-8", "ISO-8859-1")
        .chars()
        .map(|c| c as u32 as u8)
        .collect();
    let p = env.dir.path().join("latin1.xml");
    std::fs::write(&p, &latin).unwrap();
    let (j, code) = env.import(&p, None);
    assert_eq!((j["result"].as_str(), code), (Some("reussi"), 0), "{j}");
    assert_eq!(env.scalar("SELECT prenom FROM agent"), "Hélène");
    let (complet, _) = log_paths(&j, SDIS, false);
    assert!(std::fs::read_to_string(complet)
        .unwrap()
        .contains("Agent : LÉGER Hélène - 03/03/1975"));
    // gzip: same rules; the SHA-256 is the one of the bytes as received.
    let src = std::fs::read(examples().join("services.xml")).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&src).unwrap();
    let gz = gz.finish().unwrap();
    let p = env.dir.path().join("services.xml.gz");
    std::fs::write(&p, &gz).unwrap();
    let (j, _) = env.import(&p, Some("SOFIVAL"));
    assert_eq!(j["result"], "reussi");
    assert_eq!(counts(&j, "services"), (6, 0, 0));
    let sha = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&gz))
    };
    assert_eq!(j["sha256"], sha);
    // The plain file is other bytes: not a duplicate, every service already present.
    let (j, _) = env.import(&examples().join("services.xml"), Some("SOFIVAL"));
    assert_eq!(j["result"], "reussi");
    assert_eq!(counts(&j, "services"), (0, 6, 0));
    // A truncated gzip file is rejected whole.
    let p = env.dir.path().join("cut.xml.gz");
    std::fs::write(&p, &gz[..gz.len() / 2]).unwrap();
    let (j, code) = env.import(&p, Some("SOFIVAL"));
    assert_eq!((j["result"].as_str(), code), (Some("echoue"), 1), "{j}");
}

// An e-mail address is checked when it is entered: one with a line break (which would
// forge mail headers) or of the wrong shape is refused, in French, and nothing is stored.
both!(user_email_is_checked_at_entry);
fn user_email_is_checked_at_entry(b: Backend) {
    let env = Env::on(b);
    for bad in [
        "agent@mairie.fr\r\nBcc: x@y.fr",
        "pas-une-adresse",
        "a b@mairie.fr",
    ] {
        let o = env.run(&[
            "utilisateur",
            "add",
            "--login",
            "agent",
            "--role",
            "plateforme",
            "--email",
            bad,
        ]);
        assert_eq!(o.status.code(), Some(1), "{bad:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("adresse électronique invalide"), "{err}");
    }
    let o = env.run(&["--json", "utilisateur", "list"]);
    assert!(
        !String::from_utf8_lossy(&o.stdout).contains("\"agent\""),
        "stored anyway"
    );
    let o = env.run(&[
        "utilisateur",
        "add",
        "--login",
        "agent",
        "--role",
        "plateforme",
        "--email",
        "agent@mairie.fr",
    ]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

// A PostgreSQL base over TLS (the certificate checked against the CA named in the URL), and a
// password in the URL never shown in an error.
#[test]
fn postgres_over_tls_and_the_password_is_never_shown() {
    let env = Env::on(Backend::Postgres);
    env.sdis();
    let ca =
        std::env::var("ATMP_TEST_POSTGRES_CA").expect("ATMP_TEST_POSTGRES_CA (./scripts/test)");
    let tls = format!("{}?sslmode=verify-full&sslrootcert={ca}", env.db());
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_atmp"))
        .args(["collectivite", "list", "--json", "--db", &tls])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains(SDIS));
    let admin = std::env::var("ATMP_TEST_POSTGRES_URL").unwrap();
    let wrong = admin
        .replace("atmp@", "atmp:motdepasse-secret@")
        .replace("/postgres", "/base_absente");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_atmp"))
        .args(["collectivite", "list", "--db", &wrong])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("atmp:***@") && err.contains("base_absente"),
        "{err}"
    );
    assert!(!err.contains("motdepasse-secret"), "{err}");
}

/// Usage errors and help speak French (clap writes English by itself); a structure error
/// says which element was expected where.
#[test]
fn the_command_line_speaks_french() {
    let env = Env::new();
    let o = env.run(&["validat", "x.xml"]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.starts_with("erreur : sous-commande inconnue « validat »"),
        "{err}"
    );
    assert!(err.contains("vouliez-vous dire « validate »"), "{err}");
    assert!(!err.contains("error:") && !err.contains("Usage"), "{err}");
    let o = env.run(&["import", "--help"]);
    assert_eq!(o.status.code(), Some(0));
    let help = String::from_utf8_lossy(&o.stdout);
    for w in [
        "Utilisation : atmp import",
        "Arguments :",
        "<FICHIERS>",
        "Options :",
        "Affiche l'aide",
        "--dry-run",
    ] {
        assert!(help.contains(w), "{w}: {help}");
    }
    let xml = std::fs::read_to_string(examples().join("services.xml"))
        .unwrap()
        .replacen("<libelle>", "<intrus/><libelle>", 1);
    let f = env.write("intrus.xml", &xml);
    let o = env.run(&["validate", f.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("élément « intrus » inconnu dans <service> : attendu ici : <libelle>"),
        "{out}"
    );
}

// A file that fails inside a block: the collectivité's log counts the ERROR line it holds
// (the import's page then says "Erreurs 1", as its error log has one line).
both!(a_failed_files_logs_count_their_error_line);
fn a_failed_files_logs_count_their_error_line(b: Backend) {
    let env = Env::on(b);
    env.sdis();
    let xml = std::fs::read_to_string(examples().join("services.xml")).unwrap();
    let f = env.write("coupe.xml", &xml[..900]);
    let (j, code) = env.import(&f, None);
    assert_eq!(code, 1);
    assert_eq!(j["result"], "echoue");
    let (_, erreurs) = log_paths(&j, SDIS, false);
    let lines = log(&erreurs);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(
        env.scalar(&format!(
            "SELECT errors FROM import_log WHERE collectivite_siret = '{SDIS}'"
        )),
        "1"
    );
}
