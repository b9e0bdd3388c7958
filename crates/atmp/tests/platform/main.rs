//! End-to-end tests of `atmp serve`: real FTPS over TLS, real HTTPS, real SMTP, a real
//! browser, the real binary killed and restarted.

mod harness;

use harness::*;

/// The three examples uploaded over FTPS are integrated without anyone pressing a button;
/// each role sees exactly its imports and logs, even by editing URLs.
#[test]
fn examples_over_ftps_then_tracking_table_by_role() {
    let mut p = Platform::new(&[]);
    p.setup();
    p.start(&[]);
    p.upload(
        "SOFIVAL",
        PW_SOFIVAL,
        "services.xml",
        &example("services.xml"),
    );
    p.wait_jobs(1);
    p.upload(
        "SOFIVAL",
        PW_SOFIVAL,
        "declaration-differentiel.xml",
        &example("declaration-differentiel.xml"),
    );
    p.upload(
        "CDGVAUCL",
        PW_CDGVAUCL,
        "cdg-groupe.xml",
        &example("cdg-groupe.xml"),
    );
    p.wait_jobs(3);
    assert_eq!(
        p.sql("SELECT count(*) FROM import WHERE result = 'reussi' AND errors = 0"),
        3
    );
    assert_eq!(p.sql("SELECT count(*) FROM agent"), 3 + p.sql("SELECT count(*) FROM agent WHERE collectivite_id <> (SELECT id FROM collectivite WHERE siret = '28219002400012')"));
    // The file as received is kept, read-only, with its SHA-256.
    assert_eq!(
        p.sql("SELECT count(*) FROM job WHERE length(sha256) = 64"),
        3
    );
    let stored: Vec<String> = {
        let c = rusqlite::Connection::open(p.data().join("atmp.db")).unwrap();
        let mut st = c.prepare("SELECT stored_path FROM job").unwrap();
        st.query_map([], |r| r.get(0))
            .unwrap()
            .map(|x| x.unwrap())
            .collect()
    };
    for s in &stored {
        assert!(
            std::fs::metadata(s).unwrap().permissions().readonly(),
            "{s}"
        );
    }
    // Not a production platform: no mail queued.
    assert_eq!(p.sql("SELECT count(*) FROM mail"), 0);

    // --- FTPS: results in retours/, each sender confined to its folder.
    let mut ftp = p.ftp("SOFIVAL", PW_SOFIVAL).unwrap();
    let names = ftp.nlst(Some("retours")).unwrap();
    let receipt = names
        .iter()
        .find(|n| n.contains("services.xml") && n.ends_with("_accuse.json"))
        .unwrap_or_else(|| panic!("{names:?}"));
    let receipt = format!("retours/{}", receipt.trim_start_matches("retours/"));
    let receipt = ftp.retr_as_buffer(&receipt).unwrap().into_inner();
    let receipt: serde_json::Value = serde_json::from_slice(&receipt).unwrap();
    let r = &receipt["accuse_de_reception"];
    assert_eq!(r["resultat"], "reussi");
    assert_eq!(r["compteurs"]["services"]["added"], 6);
    assert_eq!(r["sha256"].as_str().unwrap().len(), 64);
    assert!(names
        .iter()
        .any(|n| n.contains("services.xml") && n.ends_with("_complet.log")));
    assert!(names
        .iter()
        .any(|n| n.contains("services.xml") && n.ends_with("_erreurs.log")));
    // The uploaded file left the sender's root: it is only in the platform's keeping.
    let _ = ftp.quit();
    let mut ftp = p
        .ftp("SOFIVAL", PW_SOFIVAL)
        .unwrap_or_else(|e| panic!("{e:?}\n{}", p.stderr()));
    let root = ftp.nlst(None).unwrap();
    assert!(!root.iter().any(|n| n.contains("services.xml")), "{root:?}");
    // Another sender's folder cannot be listed or read, by any path.
    let other = p
        .ftp("CDGVAUCL", PW_CDGVAUCL)
        .unwrap()
        .nlst(Some("retours"))
        .unwrap();
    let other_file = format!(
        "retours/{}",
        other
            .iter()
            .find(|n| n.ends_with("_accuse.json"))
            .unwrap()
            .trim_start_matches("retours/")
    );
    for path in [
        format!("../CDGVAUCL/{other_file}"),
        format!("/../CDGVAUCL/{other_file}"),
        format!("/CDGVAUCL/{other_file}"),
    ] {
        assert!(ftp.retr_as_buffer(&path).is_err(), "{path} readable");
    }
    let listed = ftp.nlst(Some("../CDGVAUCL/retours")).unwrap_or_default();
    assert!(
        !listed.iter().any(|n| n.contains("cdg-groupe")),
        "{listed:?}"
    );
    let _ = ftp.quit();
    // Plain FTP is refused before login; a wrong password too.
    let mut plain = suppaftp::FtpStream::connect(&p.ftps).unwrap();
    assert!(
        plain.login("SOFIVAL", PW_SOFIVAL).is_err(),
        "plain FTP login accepted"
    );
    assert!(p.ftp("SOFIVAL", "mauvais-mot-de-passe").is_err());
    assert!(p.ftp("INCONNU", PW_SOFIVAL).is_err());

    // --- Web, platform administrator: every log pair, newest first.
    let admin = p.web("plateforme", PW_USERS);
    let html = admin.text("/suivi");
    let rows = suivi_rows(&html);
    assert_eq!(rows.len(), 5, "{rows:?}");
    assert!(rows.iter().all(|r| r.1 == "Import réussi"), "{rows:?}");
    assert_eq!(rows.last().unwrap().0, "Service");
    assert!(rows.iter().any(|r| r.2.contains("journal global du CDG")));
    let services = suivi_rows(&admin.text("/suivi?type=SERVICE"));
    assert_eq!(services.len(), 1);
    assert!(suivi_rows(&admin.text("/suivi?type=DECLARATION")).len() == 4);
    assert!(suivi_rows(&admin.text("/suivi?du=2020-01-01&au=2020-12-31")).is_empty());
    let complet = admin.text(&rows.last().unwrap().3);
    assert!(
        complet.contains("Début de traitement") && complet.contains("serviceid="),
        "{complet}"
    );

    // --- A collectivité's administrator (SDIS): its two imports only.
    let sdis = p.web("sdis", PW_USERS);
    let rows = suivi_rows(&sdis.text("/suivi"));
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(rows.iter().all(|r| r.2 == "SDIS de la Vauclaire"));
    // The grouped CDG file is invisible to it, by any URL.
    let cdg_import = p.sql("SELECT import_id FROM job WHERE file_name = 'cdg-groupe.xml'");
    let logs: Vec<i64> = {
        let c = rusqlite::Connection::open(p.data().join("atmp.db")).unwrap();
        let mut st = c
            .prepare("SELECT id FROM import_log WHERE import_id = ?1")
            .unwrap();
        st.query_map([cdg_import], |r| r.get(0))
            .unwrap()
            .map(|x| x.unwrap())
            .collect()
    };
    assert_eq!(logs.len(), 3);
    assert_eq!(sdis.status(&format!("/imports/{cdg_import}")), 404);
    assert_eq!(sdis.status(&format!("/imports/{cdg_import}/accuse")), 404);
    for l in &logs {
        for kind in ["complet", "erreurs"] {
            assert_eq!(
                sdis.status(&format!("/imports/{cdg_import}/journaux/{l}/{kind}")),
                404
            );
        }
    }
    // Administration is the platform's.
    assert_eq!(sdis.status("/admin/collectivites"), 403);
    assert_eq!(sdis.status("/admin/utilisateurs"), 403);

    // --- A collectivité's user (the commune, attached to the CDG): its own log only.
    let commune = p.web("commune", PW_USERS);
    let rows = suivi_rows(&commune.text("/suivi"));
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].2, "Commune de Rochebrune-sur-Aube");
    let own = commune.text(&rows[0].3);
    assert!(own.contains("Début de traitement"));
    let page = commune.text(&format!("/imports/{cdg_import}"));
    assert!(!page.contains("CCAS"), "another collectivité shown");
    let visible = import_links(&page)
        .into_iter()
        .filter(|l| l.contains("/journaux/"))
        .count();
    assert_eq!(visible, 2, "its log pair only");
    let mut seen = 0;
    for l in &logs {
        let s = commune.status(&format!("/imports/{cdg_import}/journaux/{l}/complet"));
        if s == 200 {
            seen += 1;
        } else {
            assert_eq!(s, 404);
        }
    }
    assert_eq!(seen, 1, "the commune reads its own log and no other");
    for id in 1..=3 {
        if id != cdg_import {
            assert_eq!(commune.status(&format!("/imports/{id}")), 404);
        }
    }

    // --- The CDG's administrator: its attached collectivités and the global log.
    let cdg = p.web("cdg", PW_USERS);
    let rows = suivi_rows(&cdg.text("/suivi"));
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert!(rows.iter().any(|r| r.2.contains("journal global")));
    for l in &logs {
        assert_eq!(
            cdg.status(&format!("/imports/{cdg_import}/journaux/{l}/erreurs")),
            200
        );
    }
    let sdis_import = p.sql("SELECT import_id FROM job WHERE file_name = 'services.xml'");
    assert_eq!(cdg.status(&format!("/imports/{sdis_import}")), 404);

    // --- Without a session: the login page, for pages and downloads alike.
    let anon = Web::new(&p);
    let r = anon.get(&format!("/imports/{sdis_import}/accuse"));
    assert!(r.url().path().ends_with("/connexion"), "{}", r.url());
}

/// Every form is refused without its CSRF token; the admin forms work with it.
#[test]
fn forms_need_their_csrf_token_and_admin_pages_manage_the_platform() {
    let mut p = Platform::new(&[]);
    p.setup();
    p.start(&[]);
    let admin = p.web("plateforme", PW_USERS);
    // No token, or another token: refused, nothing created.
    for csrf in ["", "un-autre-jeton"] {
        let r = admin
            .client
            .post(format!("{}/admin/collectivites", admin.url))
            .form(&[
                ("csrf", csrf),
                ("siret", "73282932000074"),
                ("nom", "Commune pirate"),
            ])
            .send()
            .unwrap();
        assert_eq!(r.status(), 403);
    }
    assert_eq!(
        p.sql("SELECT count(*) FROM collectivite WHERE siret = '73282932000074'"),
        0
    );
    // With it: created, attached, a service, a sender with its FTPS account and consent.
    let r = admin.post(
        "/admin/collectivites",
        "/admin/collectivites",
        &[
            ("siret", "73282932000074"),
            ("nom", "Commune de Valbrune"),
            ("cdg", CDG),
        ],
    );
    assert_eq!(r.status(), 200);
    assert!(r
        .text()
        .unwrap()
        .contains("Collectivité 73282932000074 créée"));
    let r = admin.post(
        "/admin/collectivites",
        "/admin/collectivites",
        &[("siret", "73282932000075"), ("nom", "X"), ("cdg", "")],
    );
    assert_eq!(r.status(), 400, "a SIRET with a bad key is refused");
    assert!(r.text().unwrap().contains("clé de contrôle"));
    let r = admin.post(
        "/admin/collectivites/73282932000074/services",
        "/admin/collectivites/73282932000074/services",
        &[("code", "TECH"), ("libelle", "Services techniques")],
    );
    assert!(r.text().unwrap().contains("Service TECH ajouté"));
    let r = admin.post(
        "/admin/emetteurs",
        "/admin/emetteurs",
        &[
            ("code", "LOGIRH"),
            ("nom", "Logiciel RH"),
            ("password", "logirh-mot-de-passe"),
        ],
    );
    assert!(r.text().unwrap().contains("Émetteur LOGIRH créé"));
    let r = admin.post(
        "/admin/autorisations",
        "/admin/autorisations",
        &[
            ("emetteur", "LOGIRH"),
            ("siret", "73282932000074"),
            ("statut", "accordee"),
            ("reference", "Délibération 2026-14"),
        ],
    );
    let page = r.text().unwrap();
    assert!(
        page.contains("Délibération 2026-14") && page.contains("accordée"),
        "{page}"
    );
    let r = admin.post(
        "/admin/utilisateurs",
        "/admin/utilisateurs",
        &[
            ("login", "valbrune"),
            ("role", "collectivite-admin"),
            ("siret", "73282932000074"),
            ("email", "rh@valbrune.invalid"),
        ],
    );
    let page = r.text().unwrap();
    let i =
        page.find("affiché une seule fois : ").expect(&page) + "affiché une seule fois : ".len();
    let one_time = page[i..i + 16].to_string();
    // The new sender logs in over FTPS at once.
    p.ftp("LOGIRH", "logirh-mot-de-passe")
        .unwrap()
        .quit()
        .unwrap();
    // The new user must change the one-time password before anything else.
    let v = Web::new(&p);
    let r = v.login("valbrune", &one_time);
    assert!(r.url().path().ends_with("/mot-de-passe"), "{}", r.url());
    assert!(v.get("/suivi").url().path().ends_with("/mot-de-passe"));
    let r = v.post(
        "/mot-de-passe",
        "/mot-de-passe",
        &[
            ("actuel", &one_time),
            ("nouveau", "court"),
            ("confirmation", "court"),
        ],
    );
    assert_eq!(r.status(), 400);
    let r = v.post(
        "/mot-de-passe",
        "/mot-de-passe",
        &[
            ("actuel", &one_time),
            ("nouveau", "un-mot-de-passe-long"),
            ("confirmation", "un-mot-de-passe-long"),
        ],
    );
    assert_eq!(r.status(), 200);
    assert_eq!(v.status("/suivi"), 200);
    // Logout ends the session.
    let r = v.post("/suivi", "/deconnexion", &[]);
    assert!(r.url().path().ends_with("/connexion"));
    assert!(v.get("/suivi").url().path().ends_with("/connexion"));
    // A wrong password: refused, in French.
    let r = Web::new(&p).login("valbrune", "pas-le-bon-mot-de-passe");
    assert_eq!(r.status(), 401);
    assert!(r
        .text()
        .unwrap()
        .contains("Identifiant ou mot de passe incorrect"));
    // The nomenclature page lists the shipped lists.
    assert!(admin.text("/admin/nomenclatures").contains("SIEGE_LESION"));
}

/// Every explicit-TLS session upgrades: the vendored libunftp's AUTH TLS race fix
/// (vendor/libunftp/ATMP-PATCH.md) failed about one session in ten before.
#[test]
fn ftps_sessions_upgrade_to_tls_every_time() {
    let mut p = Platform::new(&[]);
    p.setup();
    p.start(&[]);
    // Sessions from several threads at once, as busy senders would open them.
    std::thread::scope(|sc| {
        for t in 0..4 {
            let p = &p;
            sc.spawn(move || {
                for i in 0..60 {
                    let mut s = p
                        .ftp("SOFIVAL", PW_SOFIVAL)
                        .unwrap_or_else(|e| panic!("session {t}/{i}: {e:?}\n{}", p.stderr()));
                    assert!(s.pwd().is_ok());
                    let _ = s.quit();
                }
            });
        }
    });
}
