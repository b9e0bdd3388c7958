//! End-to-end tests of `atmp serve`: real FTPS over TLS, real HTTPS, real SMTP, a real
//! browser, the real binary killed and restarted.

#[path = "../common/mod.rs"]
#[macro_use]
mod common;
mod harness;
mod sender;

use harness::*;

// The three examples uploaded over FTPS are integrated without anyone pressing a button;
// each role sees exactly its imports and logs, even by editing URLs.
both!(examples_over_ftps_then_tracking_table_by_role);
fn examples_over_ftps_then_tracking_table_by_role(b: Backend) {
    // Every trace of the platform, to check below that none carries a name or a NIR.
    let mut p = Platform::new(b, &[("ATMP_LOG", "debug")]);
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
    let stored: Vec<(String, String)> = p
        .base
        .rows("SELECT stored_path, sha256 FROM job")
        .into_iter()
        .map(|r| (r[0].to_string(), r[1].to_string()))
        .collect();
    for (s, sha256) in &stored {
        match b {
            Backend::Sqlite => assert!(
                std::fs::metadata(s).unwrap().permissions().readonly(),
                "{s}"
            ),
            // In the base, where every instance reads it (gzip-compressed), byte for byte.
            Backend::Postgres => {
                use sha2::Digest;
                let oid = s.strip_prefix("lo:").unwrap_or_else(|| panic!("{s}"));
                let kept = p.base.rows(&format!(
                    "SELECT encode(lo_get({oid}), 'hex'), (SELECT taille FROM fichier_conserve WHERE oid = {oid})"
                ));
                let gz = hex::decode(kept[0][0].to_string()).unwrap();
                let mut bytes = Vec::new();
                std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz[..]), &mut bytes)
                    .unwrap();
                assert_eq!(&hex::encode(sha2::Sha256::digest(&bytes)), sha256);
                assert_eq!(kept[0][1].to_string(), bytes.len().to_string());
                assert!(gz.len() < bytes.len(), "kept compressed");
            }
        }
    }
    if b == Backend::Postgres {
        // Nothing of the files or their logs stays on this instance's disk.
        let mut left = Vec::new();
        for d in ["recus", "journaux"] {
            let mut stack = vec![p.data().join(d)];
            while let Some(d) = stack.pop() {
                for e in std::fs::read_dir(&d).unwrap() {
                    let e = e.unwrap().path();
                    if e.is_dir() {
                        stack.push(e);
                    } else {
                        left.push(e);
                    }
                }
            }
        }
        assert!(left.is_empty(), "{left:?}");
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
    // The receipt names the logs as they are in retours/, for automated senders.
    let complet = r["journaux"][0]["complet"].as_str().unwrap();
    assert!(
        names
            .iter()
            .any(|n| n.trim_start_matches("retours/") == complet),
        "{complet} not in {names:?}"
    );
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
    let logs: Vec<i64> = p
        .base
        .rows(&format!(
            "SELECT id FROM import_log WHERE import_id = {cdg_import}"
        ))
        .into_iter()
        .map(|r| r[0].to_string().parse().unwrap())
        .collect();
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
    for page in [
        "/admin/emetteurs",
        "/admin/autorisations",
        "/admin/nomenclatures",
    ] {
        assert_eq!(sdis.status(page), 403, "{page}");
    }

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
        .filter(|l| {
            l.contains("/journaux/") && (l.ends_with("/complet") || l.ends_with("/erreurs"))
        })
        .count();
    // Its own complete log only: its error log is empty, so it has no link.
    assert_eq!(visible, 1, "its log only");
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
    // Its receipt holds its own part: its log, no counts of the whole grouped file.
    let receipt: serde_json::Value =
        serde_json::from_str(&commune.text(&format!("/imports/{cdg_import}/accuse"))).unwrap();
    let r = &receipt["accuse_de_reception"];
    assert!(r["compteurs"].is_null(), "{r}");
    let journaux = r["journaux"].as_array().unwrap();
    assert_eq!(journaux.len(), 1, "{r}");
    assert_eq!(journaux[0]["collectivite"], COMMUNE);
    // The CDG's administrator sees the whole file, and its counts.
    let whole: serde_json::Value = serde_json::from_str(
        &p.web("cdg", PW_USERS)
            .text(&format!("/imports/{cdg_import}/accuse")),
    )
    .unwrap();
    assert!(
        whole["accuse_de_reception"]["compteurs"]["agents"].is_object(),
        "{whole}"
    );
    assert_eq!(
        whole["accuse_de_reception"]["journaux"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    // Downloads are in the audit trail, with who and which import.
    let journal = p
        .web("plateforme", PW_USERS)
        .text_with("/admin/journal", &format!("import {cdg_import}</td>"));
    assert!(journal.contains("telechargement_accuse"), "{journal}");
    assert!(journal.contains("telechargement_journal"), "{journal}");
    assert!(
        journal.contains(&format!(
            "<td data-label=\"Qui\">commune</td><td data-label=\"Action\">telechargement_accuse</td><td data-label=\"Détail\">import {cdg_import}</td>"
        )),
        "{journal}"
    );
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

    // --- The program's own trace never names a person nor gives a NIR.
    let trace = p.stderr();
    assert!(trace.contains("integrated"), "the trace is there");
    for f in [
        "services.xml",
        "declaration-differentiel.xml",
        "cdg-groupe.xml",
    ] {
        for id in identities(&String::from_utf8(example(f)).unwrap()) {
            assert!(
                !trace.contains(&id),
                "{id} in the trace: {:?}",
                trace
                    .lines()
                    .filter(|l| l.contains(&id))
                    .collect::<Vec<_>>()
            );
        }
    }

    // --- A browser that comes in plain HTTP is sent to HTTPS.
    let plain = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let http = p.url.replace("https://", "http://");
    let r = plain
        .get(format!("{http}/suivi?type=SERVICE"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 301);
    assert_eq!(
        r.headers()["location"],
        format!("{}/suivi?type=SERVICE", p.url).as_str()
    );

    // --- Without a session: the login page, for pages and downloads alike.
    let anon = Web::new(&p);
    let r = anon.get(&format!("/imports/{sdis_import}/accuse"));
    assert!(r.url().path().ends_with("/connexion"), "{}", r.url());
}

/// The opening tag of the element of `id` in `page`.
fn tag_of<'a>(page: &'a str, id: &str) -> &'a str {
    let at = page
        .find(&format!(" id=\"{id}\""))
        .unwrap_or_else(|| panic!("no element {id} in {page}"));
    let start = page[..at].rfind('<').unwrap();
    let end = at + page[at..].find('>').unwrap();
    &page[start..=end]
}

/// Asserts that a refused form marks field `id` (aria-invalid, described by its message next
/// to it, which says `says`), and only that one.
fn refused_at(page: &str, id: &str, says: &str) {
    let t = tag_of(page, id);
    assert!(
        t.contains("aria-invalid=\"true\"")
            && t.contains(&format!("aria-describedby=\"{id}-erreur\"")),
        "{t}"
    );
    let m = tag_of(page, &format!("{id}-erreur"));
    let at = page.find(m).unwrap() + m.len();
    let text = &page[at..at + page[at..].find('<').unwrap()];
    assert!(text.contains(says), "{id}: « {text} » lacks « {says} »");
    assert_eq!(
        page.matches("aria-invalid=\"true\"").count(),
        1,
        "one field at fault"
    );
    assert!(
        page.contains("corrigez le champ signalé"),
        "the summary at the top"
    );
}

// A refused management form comes back with the values typed (never a password) and the
// error next to its field, saying what to do (RGAA 11.10, 11.11).
both!(refused_forms_keep_what_was_typed_and_say_what_to_do_next_to_the_field);
fn refused_forms_keep_what_was_typed_and_say_what_to_do_next_to_the_field(b: Backend) {
    let mut p = Platform::new(b, &[]);
    p.setup();
    p.start(&[]);
    let admin = p.web("plateforme", PW_USERS);
    let before = p.sql("SELECT count(*) FROM collectivite");
    // A SIRET with a bad key: said at the SIRET, the name and the CDG kept.
    let r = admin.post(
        "/admin/collectivites",
        "/admin/collectivites",
        &[
            ("siret", "73282932000075"),
            ("nom", "Commune de Valbrune"),
            ("cdg", CDG),
        ],
    );
    assert_eq!(r.status(), 400);
    let page = r.text().unwrap();
    refused_at(&page, "c-siret", "clé de contrôle");
    assert!(tag_of(&page, "c-siret").contains("value=\"73282932000075\""));
    assert!(tag_of(&page, "c-nom").contains("value=\"Commune de Valbrune\""));
    assert!(
        page.contains(&format!("<option value=\"{CDG}\" selected>")),
        "CDG kept"
    );
    // No name: said at the name.
    let r = admin.post(
        "/admin/collectivites",
        "/admin/collectivites",
        &[("siret", "73282932000074"), ("nom", " "), ("cdg", "")],
    );
    let page = r.text().unwrap();
    refused_at(&page, "c-nom", "Indiquez le nom");
    assert!(tag_of(&page, "c-siret").contains("value=\"73282932000074\""));
    assert_eq!(
        p.sql("SELECT count(*) FROM collectivite"),
        before,
        "nothing created"
    );
    // The same SIRET twice: said at the SIRET.
    admin.post(
        "/admin/collectivites",
        "/admin/collectivites",
        &[
            ("siret", "73282932000074"),
            ("nom", "Valbrune"),
            ("cdg", ""),
        ],
    );
    let page = admin
        .post(
            "/admin/collectivites",
            "/admin/collectivites",
            &[
                ("siret", "73282932000074"),
                ("nom", "Valbrune bis"),
                ("cdg", ""),
            ],
        )
        .text()
        .unwrap();
    refused_at(&page, "c-siret", "existe déjà");
    assert!(tag_of(&page, "c-nom").contains("value=\"Valbrune bis\""));
    // A service without a code: its label kept.
    let page = admin
        .post(
            "/admin/collectivites/73282932000074/services",
            "/admin/collectivites/73282932000074/services",
            &[("code", ""), ("libelle", "Services techniques")],
        )
        .text()
        .unwrap();
    refused_at(&page, "s-code", "Indiquez le code");
    assert!(tag_of(&page, "s-libelle").contains("value=\"Services techniques\""));
    // A sender: a bad code, then a short password; the password is never drawn again.
    let page = admin
        .post(
            "/admin/emetteurs",
            "/admin/emetteurs",
            &[
                ("code", "logi rh"),
                ("nom", "Logiciel RH"),
                ("password", "secret-de-recette-1"),
            ],
        )
        .text()
        .unwrap();
    refused_at(&page, "e-code", "lettres, de chiffres");
    assert!(tag_of(&page, "e-nom").contains("value=\"Logiciel RH\""));
    assert!(
        !page.contains("secret-de-recette-1"),
        "a password is not sent back"
    );
    let page = admin
        .post(
            "/admin/emetteurs",
            "/admin/emetteurs",
            &[
                ("code", "LOGIRH"),
                ("nom", "Logiciel RH"),
                ("password", "court"),
            ],
        )
        .text()
        .unwrap();
    refused_at(&page, "e-password", "12 caractères");
    assert!(tag_of(&page, "e-code").contains("value=\"LOGIRH\""));
    assert_eq!(
        p.sql("SELECT count(*) FROM emetteur WHERE code = 'LOGIRH'"),
        0
    );
    // The FTPS password of a sender: the sender stays chosen.
    let page = admin
        .post(
            "/admin/emetteurs",
            "/admin/emetteurs/mot-de-passe",
            &[("code", "SOFIVAL"), ("password", "court")],
        )
        .text()
        .unwrap();
    refused_at(&page, "p-password", "12 caractères");
    assert!(
        page.contains("<option value=\"SOFIVAL\" selected>"),
        "{page}"
    );
    // A consent with a reference too long: said at the reference, the choices kept.
    let long = "r".repeat(201);
    let page = admin
        .post(
            "/admin/autorisations",
            "/admin/autorisations",
            &[
                ("emetteur", "SOFIVAL"),
                ("siret", "73282932000074"),
                ("statut", "refusee"),
                ("reference", &long),
            ],
        )
        .text()
        .unwrap();
    refused_at(&page, "a-reference", "200 caractères");
    assert!(page.contains("<option value=\"refusee\" selected>"));
    assert!(page.contains("<option value=\"73282932000074\" selected>"));
    // Changing one's password: each problem at its field.
    for (actuel, nouveau, confirmation, id, says) in [
        (
            "pas-le-bon-mot-de-passe",
            "un-mot-de-passe-long",
            "un-mot-de-passe-long",
            "m-actuel",
            "incorrect",
        ),
        (PW_USERS, "court", "court", "m-nouveau", "12 caractères"),
        (
            PW_USERS,
            "un-mot-de-passe-long",
            "un-autre-mot-de-passe",
            "m-confirmation",
            "ne correspond pas",
        ),
    ] {
        let r = admin.post(
            "/mot-de-passe",
            "/mot-de-passe",
            &[
                ("actuel", actuel),
                ("nouveau", nouveau),
                ("confirmation", confirmation),
            ],
        );
        assert_eq!(r.status(), 400);
        let page = r.text().unwrap();
        refused_at(&page, id, says);
        assert!(
            !page.contains("un-mot-de-passe-long"),
            "a password is not sent back"
        );
    }
}

// Every form is refused without its CSRF token; the admin forms work with it.
both!(forms_need_their_csrf_token_and_admin_pages_manage_the_platform);
fn forms_need_their_csrf_token_and_admin_pages_manage_the_platform(b: Backend) {
    let mut p = Platform::new(b, &[]);
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
    // A wrong password: refused, in French; five in a row block the identifier for a while,
    // even with the right password.
    for _ in 0..5 {
        let r = Web::new(&p).login("valbrune", "pas-le-bon-mot-de-passe");
        assert_eq!(r.status(), 401);
        assert!(r
            .text()
            .unwrap()
            .contains("Identifiant ou mot de passe incorrect"));
    }
    let r = Web::new(&p).login("valbrune", "un-mot-de-passe-long");
    assert_eq!(r.status(), 429);
    assert!(r.text().unwrap().contains("Trop d&#39;essais infructueux"));
    // That block holds for the address that failed only: the user, from another machine,
    // still logs in.
    let elsewhere: std::net::IpAddr = "127.0.0.2".parse().unwrap();
    let r = Web::from_address(&p, Some(elsewhere)).login("valbrune", "un-mot-de-passe-long");
    assert_eq!(r.status(), 200, "locked out by a stranger");
    // One address that tries many identifiers is refused after ten failures, even with a
    // right password; the other addresses are not.
    let stranger: std::net::IpAddr = "127.0.0.3".parse().unwrap();
    for i in 0..10 {
        let r = Web::from_address(&p, Some(stranger)).login(&format!("inconnu{i}"), "x");
        assert_eq!(r.status(), 401, "attempt {i}");
    }
    let r = Web::from_address(&p, Some(stranger)).login("valbrune", "un-mot-de-passe-long");
    assert_eq!(r.status(), 429);
    assert!(r.text().unwrap().contains("depuis cette adresse"));
    let r = Web::from_address(&p, Some(elsewhere)).login("valbrune", "un-mot-de-passe-long");
    assert_eq!(r.status(), 200);
    // Over HTTPS, browsers are told never to come back in plain HTTP.
    let r = Web::new(&p).get("/connexion");
    assert_eq!(
        r.headers()
            .get("strict-transport-security")
            .map(|v| v.to_str().unwrap()),
        Some("max-age=31536000")
    );
    // The audit trail: who did what, when, from where; for the platform administrator
    // only, and never a one-time password.
    let t = std::time::Instant::now();
    let journal = loop {
        let page = admin.text("/admin/journal");
        if page.contains("adresse bloquée") || t.elapsed().as_secs() > 20 {
            break page;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    for expected in [
        "connexion_refusee",
        "identifiant ou mot de passe incorrect",
        "identifiant bloqué après trop d&#39;échecs",
        "adresse bloquée après trop d&#39;échecs",
        "127.0.0.3",
        "création de la collectivité",
        "création de l&#39;émetteur",
        "création de l&#39;utilisateur valbrune",
        "mot_de_passe",
        "deconnexion",
        "connexion_ftps",
    ] {
        assert!(
            journal.contains(expected),
            "{expected} missing from the audit trail:\n{journal}"
        );
    }
    assert!(
        !journal.contains(&one_time),
        "a one-time password in the audit trail"
    );
    assert_eq!(p.web("sdis", PW_USERS).status("/admin/journal"), 403);

    // The nomenclature page lists the shipped lists, and loads a CSV.
    let page = admin.text("/admin/nomenclatures");
    assert!(page.contains("SIEGE_LESION"));
    let csrf = csrf_of(&page);
    let upload = |csv: &'static str| {
        let form = reqwest::blocking::multipart::Form::new()
            .text("csrf", csrf.clone())
            .text("version", "2026-11")
            .part(
                "fichier",
                reqwest::blocking::multipart::Part::bytes(csv.as_bytes()).file_name("n.csv"),
            );
        admin
            .client
            .post(format!("{}/admin/nomenclatures", admin.url))
            .multipart(form)
            .send()
            .unwrap()
    };
    let r = upload("nomenclature;code;libelle\nTYPE_CERTIFICAT;I\n");
    assert_eq!(r.status(), 400);
    assert!(r
        .text()
        .unwrap()
        .contains("1 ligne(s) invalide(s), rien n&#39;a été chargé"));
    let r = upload(
        "nomenclature;code;libelle\nTYPE_CERTIFICAT;I;Initial\nTYPE_CERTIFICAT;P;Prolongation\n",
    );
    assert_eq!(r.status(), 200);
    let page = r.text().unwrap();
    assert!(page.contains("Version 2026-11 chargée : 2 codes"), "{page}");
    // A collectivité attached to a CDG afterwards, then detached.
    let r = admin.post(
        "/admin/collectivites",
        "/admin/collectivites/rattacher",
        &[("siret", SDIS), ("cdg", CDG)],
    );
    assert!(r
        .text()
        .unwrap()
        .contains(&format!("rattachée au CDG {CDG}")));
    assert_eq!(p.sql(&format!("SELECT count(*) FROM collectivite c JOIN collectivite d ON d.id = c.cdg_id WHERE c.siret = '{SDIS}' AND d.siret = '{CDG}'")), 1);
    admin.post(
        "/admin/collectivites",
        "/admin/collectivites/rattacher",
        &[("siret", SDIS), ("cdg", "")],
    );
    assert_eq!(
        p.sql(&format!(
            "SELECT count(*) FROM collectivite WHERE siret = '{SDIS}' AND cdg_id IS NULL"
        )),
        1
    );
    // A malformed SIRET is refused with what is wrong, in French, and changes nothing.
    let r = admin.post(
        "/admin/collectivites",
        "/admin/collectivites/rattacher",
        &[("siret", SDIS), ("cdg", "28219010700048")],
    );
    let page = r.text().unwrap();
    assert!(
        page.contains(
            "SIRET du CDG « 28219010700048 » : la clé de contrôle du SIRET est invalide ; vérifiez-le"
        ),
        "{page}"
    );
    assert_eq!(
        p.sql(&format!(
            "SELECT count(*) FROM collectivite WHERE siret = '{SDIS}' AND cdg_id IS NULL"
        )),
        1
    );
    // A disabled user's sessions end and it cannot log in again.
    let sdis = p.web("sdis", PW_USERS);
    let id = p
        .sql("SELECT id FROM utilisateur WHERE login = 'sdis'")
        .to_string();
    let r = admin.post(
        "/admin/utilisateurs",
        "/admin/utilisateurs/actif",
        &[("id", &id), ("actif", "0")],
    );
    assert!(r.text().unwrap().contains("Utilisateur désactivé"));
    assert!(sdis.get("/suivi").url().path().ends_with("/connexion"));
    assert_eq!(Web::new(&p).login("sdis", PW_USERS).status(), 401);
}

// Every explicit-TLS session upgrades: the vendored libunftp's AUTH TLS race fix
// (vendor/libunftp/ATMP-PATCH.md) failed about one session in ten before.
both!(ftps_sessions_upgrade_to_tls_every_time);
fn ftps_sessions_upgrade_to_tls_every_time(b: Backend) {
    let mut p = Platform::new(b, &[]);
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

/// The NIRs and names written in an example file.
fn identities(xml: &str) -> Vec<String> {
    let mut out = Vec::new();
    for tag in ["nir", "nomUsuel", "prenom"] {
        let open = format!("<{tag}>");
        for (i, _) in xml.match_indices(&open) {
            let s = &xml[i + open.len()..];
            out.push(s[..s.find('<').unwrap()].to_string());
        }
    }
    out
}

/// A free local TCP port.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The decoded text of every part of every message of a maildir (Python's email package).
fn maildir_texts(dir: &std::path::Path) -> Vec<String> {
    let script = r#"
import email, email.policy, pathlib, sys, json
out = []
for f in sorted(pathlib.Path(sys.argv[1], "new").iterdir()):
    m = email.message_from_bytes(f.read_bytes(), policy=email.policy.default)
    parts = ["To: " + str(m["To"]), "Subject: " + str(m["Subject"]), "Message-ID: " + str(m["Message-ID"])]
    for p in m.walk():
        if p.get_content_maintype() == "text":
            parts.append("--- " + str(p.get_filename()) + "\n" + p.get_content())
    out.append("\n".join(parts))
print(json.dumps(out))
"#;
    let o = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

// On a production platform, the collectivité's users get the result by mail over a real
// SMTP exchange; a failed send is retried and never holds the integration back; the logs
// travel attached only with every NIR and name masked.
both!(mail_after_import_is_retried_and_carries_no_identity);
fn mail_after_import_is_retried_and_carries_no_identity(b: Backend) {
    let port = free_port();
    let smtp = format!("smtp://127.0.0.1:{port}");
    let mut p = Platform::new(
        b,
        &[
            ("ATMP_PRODUCTION", "true"),
            ("ATMP_SMTP_URL", &smtp),
            ("ATMP_MAIL_ATTACH_LOGS", "true"),
            ("ATMP_MAIL_RETRY_SECONDS", "1"),
            ("ATMP_PUBLIC_URL", "https://atmp.exemple.invalid"),
            ("ATMP_LOG", "debug"),
        ],
    );
    p.setup();
    p.start(&[]);
    // No SMTP server yet: the file is integrated all the same. One first name holds a line
    // break, a `;` and quotes: the masking works on log entries, not lines.
    let xml = String::from_utf8(example("declaration-differentiel.xml"))
        .unwrap()
        .replace(
            "<prenom>Yannick</prenom>",
            "<prenom>Yannick\nXqlouis;&quot;Xqguil&quot;</prenom>",
        )
        .into_bytes();
    p.upload("SOFIVAL", PW_SOFIVAL, "declaration-differentiel.xml", &xml);
    p.wait_jobs(1);
    let t = std::time::Instant::now();
    while p.sql("SELECT count(*) FROM mail WHERE attempts >= 1 AND last_error IS NOT NULL") == 0 {
        assert!(
            t.elapsed().as_secs() < 30,
            "no failed attempt: {}",
            p.stderr()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(p.sql("SELECT count(*) FROM mail WHERE state = 'envoye'"), 0);
    // The SMTP sink comes up: the queued mail goes out at its next attempt.
    let maildir = p.dir.path().join("maildir");
    let mut sink = std::process::Command::new("python3")
        .args([
            "-m",
            "aiosmtpd",
            "-n",
            "-l",
            &format!("127.0.0.1:{port}"),
            "-c",
            "aiosmtpd.handlers.Mailbox",
        ])
        .arg(&maildir)
        .spawn()
        .expect("python3 -m aiosmtpd (pip install aiosmtpd)");
    let t = std::time::Instant::now();
    while p.sql("SELECT count(*) FROM mail WHERE state = 'envoye'") == 0 {
        assert!(t.elapsed().as_secs() < 60, "mail not sent: {}", p.stderr());
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert!(p.sql("SELECT attempts FROM mail") >= 2);
    // A grouped CDG file: the commune's users get its log, the CDG's administrators the
    // global one; the CCAS has no user, so no mail.
    p.upload(
        "CDGVAUCL",
        PW_CDGVAUCL,
        "cdg-groupe.xml",
        &example("cdg-groupe.xml"),
    );
    p.wait_jobs(2);
    let t = std::time::Instant::now();
    while p.sql("SELECT count(*) FROM mail WHERE state = 'envoye'") < 3 {
        assert!(t.elapsed().as_secs() < 60, "mails not sent: {}", p.stderr());
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    let _ = sink.kill();
    let _ = sink.wait();
    assert_eq!(p.sql("SELECT count(*) FROM mail"), 3);
    let texts = maildir_texts(&maildir);
    assert_eq!(texts.len(), 3);
    let to = |who: &str| {
        texts
            .iter()
            .find(|m| m.contains(&format!("To: {who}@exemple.invalid")))
            .unwrap_or_else(|| panic!("no mail to {who}: {texts:?}"))
            .clone()
    };
    let commune = to("commune");
    assert!(
        commune.contains("Collectivité : Commune de Rochebrune-sur-Aube (21219781800017)"),
        "{commune}"
    );
    assert!(
        !commune.contains("CCAS"),
        "another collectivité in the commune's mail: {commune}"
    );
    let cdg = to("cdg");
    assert!(
        cdg.contains("Journal global du CDG : CDG de la Vauclaire (28219010700049)"),
        "{cdg}"
    );
    let m = &to("sdis");
    assert!(m.contains("To: sdis@exemple.invalid"), "{m}");
    assert!(
        m.contains("Subject: [atmp] Import n° 1 (d***.xml) : Import réussi (3 erreur(s))"),
        "{m}"
    );
    // The sender-chosen file name is masked like a name, in the subject and the body.
    assert!(!m.contains("declaration-differentiel"), "{m}");
    for part in ["Yannick", "Xqlouis", "Xqguil"] {
        assert!(!m.contains(part), "{part} in the mail:\n{m}");
    }
    assert!(m.contains("https://atmp.exemple.invalid/imports/1"), "{m}");
    assert!(m.contains("agents : 3 / 0 / 0"), "{m}");
    assert!(m.contains("fichier « *** »"), "{m}");
    // Both logs attached, masked: no NIR, no name of the file anywhere in the mail.
    assert!(
        m.contains("complet-masque.log") && m.contains("erreurs-masque.log"),
        "{m}"
    );
    assert!(
        m.contains("Aucun service en base"),
        "the error lines are there: {m}"
    );
    let xml = String::from_utf8(xml).unwrap();
    for id in identities(&xml) {
        assert!(!m.contains(&id), "{id} in the mail:\n{m}");
    }
    assert!(m.contains("1**************"), "masked NIR: {m}");
    let trace = p.stderr();
    for id in identities(&xml) {
        assert!(!trace.contains(&id), "{id} in the trace");
    }
}

// Killing the server while a file is integrated, then starting it again, integrates the
// file once, completely; a job whose import was committed is never integrated twice.
both!(kill_during_integration_then_restart_integrates_once);
fn kill_during_integration_then_restart_integrates_once(b: Backend) {
    let mut p = Platform::new(b, &[]);
    p.setup();
    let big = p.dir.path().join("gros.xml");
    // Long enough to be killed in the middle, on either backend.
    let agents: i64 = 15000;
    let agents_arg = agents.to_string();
    p.cli(
        &[
            "gen",
            "--agents",
            &agents_arg,
            "--out",
            big.to_str().unwrap(),
            "--collectivite",
            SDIS,
            "--emetteur",
            "SOFIVAL",
            "--seed",
            "7",
        ],
        None,
    );
    p.start(&[]);
    let admin = p.web("plateforme", PW_USERS);
    p.upload(
        "SOFIVAL",
        PW_SOFIVAL,
        "gros.xml",
        &std::fs::read(&big).unwrap(),
    );
    let t = std::time::Instant::now();
    while p.sql("SELECT count(*) FROM job WHERE state = 'en_cours'") == 0 {
        assert!(t.elapsed().as_secs() < 60, "job not started");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // The platform administrator sees the file in the queue (logged in before: a login
    // writes its session, which waits for the integration's commit, SQLite having one writer).
    assert!(admin
        .text("/suivi")
        .contains("1 fichier(s) reçu(s) en attente ou en cours d&#39;intégration"));
    p.kill();
    assert_eq!(
        p.sql("SELECT count(*) FROM job WHERE state = 'fait'"),
        0,
        "killed too late"
    );
    assert_eq!(
        p.sql("SELECT count(*) FROM import"),
        0,
        "half a file committed"
    );
    assert_eq!(p.sql("SELECT count(*) FROM agent"), 0);
    p.start(&[]);
    // A file arriving while the big one is integrated (the base's one writer is busy) gets
    // its job all the same, and waits its turn.
    p.upload(
        "SOFIVAL",
        PW_SOFIVAL,
        "services.xml",
        &example("services.xml"),
    );
    p.wait_jobs(2);
    assert_eq!(p.sql("SELECT count(*) FROM import"), 2);
    assert_eq!(
        p.sql("SELECT count(*) FROM import WHERE result = 'reussi' AND job_id = 1"),
        1
    );
    assert_eq!(p.sql("SELECT count(*) FROM service"), 6);
    assert_eq!(p.sql("SELECT count(*) FROM agent"), agents);
    assert!(p.sql("SELECT attempts FROM job WHERE id = 1") >= 2);
    let evenements = p.sql("SELECT count(*) FROM evenement");
    // As if the server had died after the commit but before the job was marked done.
    p.kill();
    p.base
        .execute("UPDATE job SET state = 'en_cours' WHERE id = 1");
    p.start(&[]);
    p.wait_jobs(2);
    assert_eq!(p.sql("SELECT count(*) FROM import"), 2, "integrated twice");
    assert_eq!(p.sql("SELECT count(*) FROM agent"), agents);
    assert_eq!(p.sql("SELECT count(*) FROM evenement"), evenements);
}

// An integration that crashes (here its process is killed, as the kernel does when memory
// runs out) never takes the platform down: the file is set aside as `Import échoué` at its
// first crash, nothing of it is stored, the web and FTPS answer, the next file goes on.
both!(a_crashed_integration_sets_the_file_aside_and_the_platform_stays_up);
fn a_crashed_integration_sets_the_file_aside_and_the_platform_stays_up(b: Backend) {
    let mut p = Platform::new(b, &[]);
    p.setup();
    let big = p.dir.path().join("gros.xml");
    p.cli(
        &[
            "gen",
            "--agents",
            "15000",
            "--out",
            big.to_str().unwrap(),
            "--collectivite",
            SDIS,
            "--emetteur",
            "SOFIVAL",
            "--seed",
            "9",
        ],
        None,
    );
    p.start(&[]);
    let admin = p.web("plateforme", PW_USERS);
    p.upload(
        "SOFIVAL",
        PW_SOFIVAL,
        "gros.xml",
        &std::fs::read(&big).unwrap(),
    );
    // Wait for the integration's own process, then kill it.
    let t = std::time::Instant::now();
    let child = loop {
        if let Some(c) = p.integration_children().first() {
            break *c;
        }
        assert!(t.elapsed().as_secs() < 60, "no integration process");
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    assert_eq!(unsafe { libc::kill(child as i32, libc::SIGKILL) }, 0);
    p.wait_jobs(1);
    assert_eq!(
        p.sql("SELECT attempts FROM job WHERE id = 1"),
        1,
        "set aside at its first crash"
    );
    assert_eq!(
        p.sql("SELECT count(*) FROM import WHERE result = 'echoue'"),
        1
    );
    assert_eq!(
        p.sql("SELECT count(*) FROM agent"),
        0,
        "nothing of the file is stored"
    );
    let id = p.sql("SELECT import_id FROM job WHERE id = 1");
    let page = admin.text(&format!("/imports/{id}"));
    assert!(page.contains("Import échoué"), "{page}");
    assert!(page.contains("arrêtée anormalement"), "{page}");
    // The platform is up: FTPS takes the next file, the worker integrates it.
    p.upload(
        "SOFIVAL",
        PW_SOFIVAL,
        "services.xml",
        &example("services.xml"),
    );
    p.wait_jobs(2);
    assert_eq!(
        p.sql("SELECT count(*) FROM import WHERE result = 'reussi'"),
        1
    );
    assert_eq!(p.sql("SELECT count(*) FROM service"), 6);
    assert!(p.integration_children().is_empty());
}

// Personal data at rest: nothing under the data folder is open to another local user —
// checked by the modes of every entry and, as root, by reading as `nobody`.
both!(files_under_data_are_not_readable_by_another_local_user);
fn files_under_data_are_not_readable_by_another_local_user(b: Backend) {
    use std::os::unix::fs::PermissionsExt;
    let mut p = Platform::new(b, &[]);
    p.setup();
    p.start(&[]);
    p.upload(
        "SOFIVAL",
        PW_SOFIVAL,
        "declaration-differentiel.xml",
        &example("declaration-differentiel.xml"),
    );
    p.wait_jobs(1);
    // The test's own folder is opened to all, so that only atmp's modes protect the data.
    std::fs::set_permissions(p.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut stack = vec![p.data()];
    let mut seen = 0;
    while let Some(d) = stack.pop() {
        let mode = std::fs::metadata(&d).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & 0o077, 0, "{} is {mode:o}", d.display());
        seen += 1;
        if d.is_dir() {
            for e in std::fs::read_dir(&d).unwrap() {
                stack.push(e.unwrap().path());
            }
        }
    }
    assert!(seen > 10, "only {seen} entries");
    // On SQLite the received file and its logs are on this disk; on PostgreSQL they are in
    // the base, and the data folder itself is what is checked.
    let mut targets = vec![p.data()];
    if b == Backend::Sqlite {
        let received = std::fs::read_dir(p.data().join("recus/SOFIVAL"))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let mode = std::fs::metadata(&received).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o400, "a received file is read-only for atmp alone");
        let log = p.base.rows("SELECT complet_path FROM import_log")[0][0].to_string();
        targets.extend([received, log.into(), p.data().join("atmp.db")]);
    }
    if unsafe { libc::geteuid() } == 0 {
        for target in targets {
            let out = std::process::Command::new("su")
                .args([
                    "nobody",
                    "-s",
                    "/bin/sh",
                    "-c",
                    &format!("ls -la '{0}' && cat '{0}'", target.display()),
                ])
                .output()
                .unwrap();
            assert!(!out.status.success(), "nobody reads {}", target.display());
            assert!(
                String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
                "{out:?}"
            );
        }
        // The same command does read a file that is open to all (the check can fail).
        let open = p.dir.path().join("ouvert.txt");
        std::fs::write(&open, "x").unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).unwrap();
        let out = std::process::Command::new("su")
            .args([
                "nobody",
                "-s",
                "/bin/sh",
                "-c",
                &format!("cat '{}'", open.display()),
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    }
    // A data folder made wider by hand is reported at the next start.
    p.kill();
    std::fs::set_permissions(p.data(), std::fs::Permissions::from_mode(0o755)).unwrap();
    p.start(&[]);
    assert!(
        p.stderr().contains("accessible à d'autres utilisateurs"),
        "{}",
        p.stderr()
    );
}

// The FTPS intake's limits: no sub-folder, no strange name, `retours/` read-only, an
// upload over the maximum size or the sender's quota stopped and removed.
both!(ftps_intake_limits);
fn ftps_intake_limits(b: Backend) {
    let mut p = Platform::new(
        b,
        &[("ATMP_MAX_FILE_SIZE", "64K"), ("ATMP_SENDER_QUOTA", "150K")],
    );
    p.setup();
    p.start(&[]);
    p.upload(
        "SOFIVAL",
        PW_SOFIVAL,
        "services.xml",
        &example("services.xml"),
    );
    p.wait_jobs(1);
    let mut ftp = p.ftp("SOFIVAL", PW_SOFIVAL).unwrap();
    let retours = ftp.nlst(Some("retours")).unwrap();
    assert!(!retours.is_empty());
    let one = retours[0].rsplit('/').next().unwrap().to_string();
    // The sender cannot create folders, nor touch its results.
    assert!(ftp.mkdir("sous-dossier").is_err());
    assert!(ftp.rm(format!("retours/{one}")).is_err());
    assert!(ftp
        .rename(format!("retours/{one}").as_str(), "vole.log")
        .is_err());
    assert!(ftp
        .put_file(format!("retours/{one}"), &mut &b"faux"[..])
        .is_err());
    assert!(ftp
        .put_file("retours/nouveau.log", &mut &b"faux"[..])
        .is_err());
    assert!(ftp.cwd("retours").is_ok());
    assert!(ftp.put_file("dedans.log", &mut &b"faux"[..]).is_err());
    assert!(ftp.cwd("/").is_ok());
    assert_eq!(ftp.nlst(Some("retours")).unwrap().len(), retours.len());
    // A name with a backslash or a control character is refused at once.
    assert!(ftp.put_file("a\\b.xml", &mut &b"x"[..]).is_err());
    assert!(ftp.put_file("a\u{1}b.xml", &mut &b"x"[..]).is_err());
    drop(ftp);
    // A file over the maximum size is stopped and removed; nothing is queued.
    let big = vec![b' '; 100 * 1024];
    let mut ftp = p.ftp("SOFIVAL", PW_SOFIVAL).unwrap();
    assert!(
        ftp.put_file("gros.xml", &mut &big[..]).is_err(),
        "a 100 KB file passed a 64 KB limit"
    );
    drop(ftp);
    let mut ftp = p.ftp("SOFIVAL", PW_SOFIVAL).unwrap();
    let root = ftp.nlst(None).unwrap();
    assert!(!root.iter().any(|n| n.contains("gros.xml")), "{root:?}");
    // The quota: two files of 60 KB wait under temporary names, a third is refused.
    let part = vec![b' '; 60 * 1024];
    ftp.put_file("a.xml.part", &mut &part[..]).unwrap();
    ftp.put_file("b.xml.part", &mut &part[..]).unwrap();
    assert!(
        ftp.put_file("c.xml.part", &mut &part[..]).is_err(),
        "quota not applied"
    );
    drop(ftp);
    // Removing one makes room again.
    let mut ftp = p.ftp("SOFIVAL", PW_SOFIVAL).unwrap();
    ftp.rm("a.xml.part").unwrap();
    ftp.put_file("c.xml.part", &mut &part[..]).unwrap();
    let _ = ftp.quit();
    assert_eq!(p.sql("SELECT count(*) FROM job"), 1);
}

// FTPS connections: a connection that never logs in is closed after the login timeout, and
// one address holds at most so many connections at once (the others are served).
both!(ftps_connections_are_limited_per_address_and_before_login);
fn ftps_connections_are_limited_per_address_and_before_login(b: Backend) {
    use std::io::{BufRead, BufReader};
    let mut p = Platform::new(
        b,
        &[
            ("ATMP_FTPS_MAX_CONNECTIONS_PER_IP", "3"),
            ("ATMP_FTPS_LOGIN_TIMEOUT_SECONDS", "2"),
        ],
    );
    p.setup();
    p.start(&[]);
    let port: u16 = p.ftps.rsplit(':').next().unwrap().parse().unwrap();
    let connect = |from: &str| {
        let sock =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        sock.bind(
            &format!("{from}:0")
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .into(),
        )
        .unwrap();
        sock.connect(
            &format!("127.0.0.1:{port}")
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .into(),
        )
        .unwrap();
        let s: std::net::TcpStream = sock.into();
        s.set_read_timeout(Some(std::time::Duration::from_secs(15)))
            .unwrap();
        let mut r = BufReader::new(s);
        let mut first = String::new();
        r.read_line(&mut first).unwrap();
        (r, first)
    };
    // Hold three connections (the start-up probes of the harness may still hold a place
    // for a moment: a refused one is tried again).
    let mut held = Vec::new();
    let t = std::time::Instant::now();
    while held.len() < 3 {
        let (r, first) = connect("127.0.0.1");
        if first.starts_with("220") {
            held.push(r);
        } else {
            assert!(
                first.starts_with("421") && t.elapsed().as_secs() < 10,
                "{first}"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
    let (_, refused) = connect("127.0.0.1");
    assert!(
        refused.starts_with("421"),
        "a fourth connection from one address: {refused}"
    );
    let (_, other) = connect("127.0.0.2");
    assert!(
        other.starts_with("220"),
        "another address is served: {other}"
    );
    // None of them logs in: each is closed by the server after the login timeout.
    for mut r in held {
        let mut rest = String::new();
        let n = std::io::Read::read_to_string(&mut r, &mut rest);
        assert!(n.is_ok(), "still open after the login timeout: {n:?}");
    }
    // Their places are free again.
    let (_, again) = connect("127.0.0.1");
    assert!(again.starts_with("220"), "{again}");
    // A sender that logs in is not hurried by the login timeout.
    let mut ftp = p.ftp("SOFIVAL", PW_SOFIVAL).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(3500));
    assert!(ftp.pwd().is_ok());
}

// The access matrix: every role (and no session) × every page, download and form, with the
// status each must get. What a user may not see answers 404; what a role may not do, 403;
// no session, a redirection to the login page; a form without its token, 403.
both!(access_matrix_every_role_every_page);
fn access_matrix_every_role_every_page(b: Backend) {
    let mut p = Platform::new(b, &[]);
    p.setup();
    p.start(&[]);
    p.upload(
        "SOFIVAL",
        PW_SOFIVAL,
        "services.xml",
        &example("services.xml"),
    );
    p.upload(
        "CDGVAUCL",
        PW_CDGVAUCL,
        "cdg-groupe.xml",
        &example("cdg-groupe.xml"),
    );
    p.wait_jobs(2);
    let sdis_import = p.sql("SELECT import_id FROM job WHERE file_name = 'services.xml'");
    let cdg_import = p.sql("SELECT import_id FROM job WHERE file_name = 'cdg-groupe.xml'");
    let log_of = |siret: &str, global: bool| {
        p.sql(&format!(
            "SELECT id FROM import_log WHERE collectivite_siret = '{siret}' AND global = {}",
            global as i32
        ))
    };
    let (sdis_log, global_log, commune_log, ccas_log) = (
        log_of(SDIS, false),
        log_of(CDG, true),
        log_of(COMMUNE, false),
        log_of(CCAS, false),
    );
    // A client per role that does not follow redirections.
    let cert = reqwest::Certificate::from_pem(&std::fs::read(p.cert()).unwrap()).unwrap();
    let url = p.url.replace("127.0.0.1", "localhost");
    let client = |login: Option<&str>| {
        let c = reqwest::blocking::Client::builder()
            .add_root_certificate(cert.clone())
            .cookie_store(true)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        if let Some(login) = login {
            let page = c
                .get(format!("{url}/connexion"))
                .send()
                .unwrap()
                .text()
                .unwrap();
            let r = c
                .post(format!("{url}/connexion"))
                .form(&[
                    ("csrf", csrf_of(&page).as_str()),
                    ("login", login),
                    ("password", PW_USERS),
                ])
                .send()
                .unwrap();
            assert_eq!(r.status(), 303, "login {login}");
        }
        c
    };
    let roles = ["anonyme", "plateforme", "cdg", "sdis", "commune"];
    let clients: Vec<_> = roles
        .iter()
        .map(|r| client((*r != "anonyme").then_some(*r)))
        .collect();
    // Expected statuses, in the order of `roles`.
    const R: u16 = 303; // to the login page
    let logs = |id: i64, log: i64, expected: [u16; 5]| {
        ["complet", "erreurs"].map(|k| (format!("/imports/{id}/journaux/{log}/{k}"), expected))
    };
    let mut gets: Vec<(String, [u16; 5])> = vec![
        ("/sante".into(), [200, 200, 200, 200, 200]),
        ("/connexion".into(), [200, 200, 200, 200, 200]),
        ("/suivi".into(), [R, 200, 200, 200, 200]),
        ("/mot-de-passe".into(), [R, 200, 200, 200, 200]),
        (format!("/imports/{sdis_import}"), [R, 200, 404, 200, 404]),
        (
            format!("/imports/{sdis_import}/accuse"),
            [R, 200, 404, 200, 404],
        ),
        (format!("/imports/{cdg_import}"), [R, 200, 200, 404, 200]),
        (
            format!("/imports/{cdg_import}/accuse"),
            [R, 200, 200, 404, 200],
        ),
        ("/imports/9999".into(), [R, 404, 404, 404, 404]),
        ("/imports/abc".into(), [R, 404, 404, 404, 404]),
        (
            format!("/imports/{cdg_import}/journaux/{sdis_log}/complet"),
            [R, 404, 404, 404, 404],
        ),
        (
            format!("/imports/{cdg_import}/journaux/{commune_log}/autre"),
            [R, 404, 404, 404, 404],
        ),
        ("/admin/collectivites".into(), [R, 200, 200, 200, 403]),
        (
            format!("/admin/collectivites/{SDIS}/services"),
            [R, 200, 404, 200, 403],
        ),
        (
            format!("/admin/collectivites/{COMMUNE}/services"),
            [R, 200, 200, 404, 403],
        ),
        ("/admin/utilisateurs".into(), [R, 200, 200, 200, 403]),
        ("/admin/emetteurs".into(), [R, 200, 403, 403, 403]),
        ("/admin/autorisations".into(), [R, 200, 403, 403, 403]),
        ("/admin/nomenclatures".into(), [R, 200, 403, 403, 403]),
        ("/admin/journal".into(), [R, 200, 403, 403, 403]),
        ("/essai".into(), [R, 200, 403, 403, 403]),
        ("/rejets".into(), [R, 200, 200, 200, 200]),
        (
            "/rejets?etat=tous&raison=contenu&du=2020-01-01".into(),
            [R, 200, 200, 200, 200],
        ),
        ("/rejets/9999".into(), [R, 404, 404, 404, 404]),
        ("/rejets/abc".into(), [R, 404, 404, 404, 404]),
        ("/nulle-part".into(), [404, 404, 404, 404, 404]),
    ];
    gets.extend(logs(sdis_import, sdis_log, [R, 200, 404, 200, 404]));
    gets.extend(logs(cdg_import, global_log, [R, 200, 200, 404, 404]));
    gets.extend(logs(cdg_import, commune_log, [R, 200, 200, 404, 200]));
    gets.extend(logs(cdg_import, ccas_log, [R, 200, 200, 404, 404]));
    let mut wrong = Vec::new();
    for (path, expected) in &gets {
        for (i, c) in clients.iter().enumerate() {
            let got = c
                .get(format!("{url}{path}"))
                .send()
                .unwrap()
                .status()
                .as_u16();
            if got != expected[i] {
                wrong.push(format!(
                    "GET {path} as {}: {got}, expected {}",
                    roles[i], expected[i]
                ));
            }
        }
    }
    // Every form, posted without its token: refused (or the login page without a session),
    // and nothing changes.
    let posts = [
        "/connexion",
        "/deconnexion",
        "/mot-de-passe",
        "/admin/collectivites",
        "/admin/collectivites/rattacher",
        &format!("/admin/collectivites/{SDIS}/services"),
        "/admin/emetteurs",
        "/admin/emetteurs/mot-de-passe",
        "/admin/autorisations",
        "/admin/utilisateurs",
        "/admin/utilisateurs/actif",
        &format!("/imports/{sdis_import}/rejeu"),
        "/rejets/1/corriger",
        "/rejets/1/classer",
    ];
    let before = p.sql("SELECT (SELECT count(*) FROM collectivite) + (SELECT count(*) FROM utilisateur) + (SELECT count(*) FROM emetteur) + (SELECT count(*) FROM service)");
    for path in posts {
        for (i, c) in clients.iter().enumerate() {
            let got = c
                .post(format!("{url}{path}"))
                .form(&[
                    ("siret", "73282932000074"),
                    ("nom", "X"),
                    ("login", "x"),
                    ("code", "X"),
                ])
                .send()
                .unwrap()
                .status()
                .as_u16();
            let expected = if roles[i] == "anonyme" && path != "/connexion" {
                R
            } else {
                403
            };
            if got != expected {
                wrong.push(format!(
                    "POST {path} as {}: {got}, expected {expected}",
                    roles[i]
                ));
            }
        }
    }
    let after = p.sql("SELECT (SELECT count(*) FROM collectivite) + (SELECT count(*) FROM utilisateur) + (SELECT count(*) FROM emetteur) + (SELECT count(*) FROM service)");
    assert_eq!(before, after, "a form without its token changed something");
    assert!(
        wrong.is_empty(),
        "{} wrong answer(s):\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

// Retention: past their time, the received file and the logs (with their copies in
// `retours/`) are deleted; the import stays in the tracking table, whose page says what was
// purged and when; a purged log answers 410 in French.
both!(retention_purges_old_files_and_keeps_the_tracking_table_whole);
fn retention_purges_old_files_and_keeps_the_tracking_table_whole(b: Backend) {
    let mut p = Platform::new(
        b,
        &[
            ("ATMP_RETENTION_RECEIVED_DAYS", "0"),
            ("ATMP_RETENTION_LOGS_DAYS", "0"),
            ("ATMP_PURGE_INTERVAL_SECONDS", "1"),
        ],
    );
    p.setup();
    p.start(&[]);
    p.upload(
        "SOFIVAL",
        PW_SOFIVAL,
        "services.xml",
        &example("services.xml"),
    );
    p.wait_jobs(1);
    let id = p.sql("SELECT import_id FROM job WHERE id = 1");
    let t = std::time::Instant::now();
    while p.sql("SELECT count(*) FROM purge") < 2 {
        assert!(t.elapsed().as_secs() < 30, "no purge: {}", p.stderr());
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // The files are gone from the disk.
    let received: Vec<_> = std::fs::read_dir(p.data().join("recus/SOFIVAL"))
        .unwrap()
        .collect();
    assert!(received.is_empty(), "{received:?}");
    let logs: Vec<_> = std::fs::read_dir(p.data().join("journaux"))
        .unwrap()
        .collect();
    assert!(logs.is_empty(), "{logs:?}");
    if b == Backend::Postgres {
        // The large objects that held them are unlinked.
        assert_eq!(p.sql("SELECT count(*) FROM pg_largeobject_metadata"), 0);
    }
    // The sender's retours/ no longer lists the results whose logs are purged.
    let mut ftp = p.ftp("SOFIVAL", PW_SOFIVAL).unwrap();
    let retours = ftp.nlst(Some("retours")).unwrap();
    assert!(retours.is_empty(), "{retours:?}");
    // The base still knows the import and the data it brought.
    assert_eq!(p.sql("SELECT count(*) FROM import"), 1);
    assert_eq!(p.sql("SELECT count(*) FROM service"), 6);
    let admin = p.web("plateforme", PW_USERS);
    let rows = suivi_rows(&admin.text("/suivi"));
    assert_eq!(rows.len(), 1, "{rows:?}");
    let page = admin.text(&format!("/imports/{id}"));
    assert!(page.contains("Fichier reçu supprimé le"), "{page}");
    assert!(page.contains("Journaux supprimés le"), "{page}");
    assert!(
        !page.contains("/journaux/"),
        "a link to a purged log: {page}"
    );
    let log = p.sql("SELECT id FROM import_log LIMIT 1");
    let r = admin.get(&format!("/imports/{id}/journaux/{log}/complet"));
    assert_eq!(r.status(), 410);
    assert!(r.text().unwrap().contains("durée de conservation"));
    // A purge run again finds nothing more to do, and records nothing twice.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert_eq!(p.sql("SELECT count(*) FROM purge"), 2);
}

// An upload cut before its end is never integrated: no job, nothing stored.
both!(cut_upload_is_never_integrated);
fn cut_upload_is_never_integrated(b: Backend) {
    use std::io::Write;
    let mut p = Platform::new(b, &[]);
    p.setup();
    p.start(&[]);
    let xml = example("services.xml");
    let mut ftp = p.ftp("SOFIVAL", PW_SOFIVAL).unwrap();
    let mut stream = ftp.put_with_stream("coupe.xml").unwrap();
    stream.write_all(&xml[..xml.len() / 2]).unwrap();
    stream.flush().unwrap();
    // The connection dies: no TLS close, no end of transfer.
    stream
        .get_ref()
        .get_ref()
        .shutdown(std::net::Shutdown::Both)
        .unwrap();
    drop(stream);
    drop(ftp);
    // A complete upload afterwards is taken at once, the cut one never.
    p.upload("SOFIVAL", PW_SOFIVAL, "entier.xml", &xml);
    p.wait_jobs(1);
    // A client that uploads under a temporary name is taken at its rename, not before.
    let mut ftp = p.ftp("SOFIVAL", PW_SOFIVAL).unwrap();
    ftp.put_file("renomme.xml.part", &mut &xml[..]).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(p.sql("SELECT count(*) FROM job"), 1, "temporary name taken");
    ftp.rename("renomme.xml.part", "renomme.xml").unwrap();
    let _ = ftp.quit();
    p.wait_jobs(2);
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(p.sql("SELECT count(*) FROM job"), 2);
    assert_eq!(
        p.sql("SELECT count(*) FROM job WHERE file_name = 'entier.xml'"),
        1
    );
    assert_eq!(
        p.sql("SELECT count(*) FROM job WHERE file_name = 'renomme.xml'"),
        1
    );
    // The cut file is still where the sender left it, never taken.
    let root = p.ftp("SOFIVAL", PW_SOFIVAL).unwrap().nlst(None).unwrap();
    assert!(root.iter().any(|n| n.ends_with("coupe.xml")), "{root:?}");
}

// A person in headless Chromium, on the demo platform: logs in, pages through the tracking
// table, filters it by type and period, downloads an error log, reads a rejected agent.
both!(browser_tracking_table_paging_filters_and_download);
fn browser_tracking_table_paging_filters_and_download(b: Backend) {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../browser");
    assert!(
        root.join("node_modules/playwright-core").is_dir(),
        "run `npm ci --prefix browser` (scripts/test does)"
    );
    assert!(
        std::path::Path::new("/usr/bin/chromium").exists(),
        "Chromium is needed (scripts/test installs it)"
    );
    let mut p = Platform::new(b, &[]);
    let passwords = start_demo(&mut p);
    let password = passwords["sdis"].clone();
    let downloads = p.dir.path().join("telechargements");
    std::fs::create_dir_all(&downloads).unwrap();
    let o = std::process::Command::new("node")
        .arg(root.join("suivi.mjs"))
        .env("ATMP_URL", p.url.replace("127.0.0.1", "localhost"))
        .env("ATMP_LOGIN", "sdis")
        .env("ATMP_PASSWORD", &password)
        .env("ATMP_DOWNLOADS", &downloads)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "browser test failed:\n{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    // The download really reached the disk.
    let files: Vec<_> = std::fs::read_dir(&downloads).unwrap().collect();
    assert_eq!(files.len(), 1);
}

/// Starts `atmp serve --demo` and waits until its files are integrated: the one-time
/// password it printed for each web user.
fn start_demo(p: &mut Platform) -> std::collections::BTreeMap<String, String> {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../browser");
    assert!(
        root.join("node_modules/playwright-core").is_dir()
            && root.join("node_modules/axe-core").is_dir(),
        "run `npm ci --prefix browser` (scripts/test does)"
    );
    assert!(
        std::path::Path::new("/usr/bin/chromium").exists(),
        "Chromium is needed (scripts/test installs it)"
    );
    let mut out = p.start(&["--demo"]);
    let t = std::time::Instant::now();
    while !out.contains("fichiers mis en file") {
        assert!(t.elapsed().as_secs() < 30, "{out}");
        std::thread::sleep(std::time::Duration::from_millis(100));
        out = std::fs::read_to_string(p.dir.path().join("serve.out")).unwrap();
    }
    let mut passwords: std::collections::BTreeMap<String, String> = out
        .lines()
        .filter_map(|l| l.trim().strip_prefix("utilisateur web "))
        .map(|l| {
            (
                l.split(' ').next().unwrap().to_string(),
                l.rsplit(' ').next().unwrap().to_string(),
            )
        })
        .collect();
    // The first platform administrator, created at first start.
    let admin = out
        .lines()
        .find(|l| l.starts_with("Mot de passe à usage unique"))
        .unwrap_or_else(|| panic!("{out}"));
    passwords.insert("admin".into(), admin.rsplit(' ').next().unwrap().into());
    assert_eq!(
        passwords.keys().collect::<Vec<_>>(),
        ["admin", "cdg", "commune", "sdis"]
    );
    let jobs = p.sql("SELECT count(*) FROM job");
    assert!(jobs >= 28, "{jobs}");
    p.wait_jobs(jobs);
    passwords
}

// Every page of every role of the demo, in headless Chromium at 1366 and 390 px: axe-core
// finds no serious or critical violation, no page scrolls sideways on a phone; a collectivité
// administrator resets a user's password; an expired session returns to the page asked for;
// the dashboard shows the demo's figures (computed here from the base) and its chart.
both!(browser_every_page_of_every_role_is_accessible);
fn browser_every_page_of_every_role_is_accessible(b: Backend) {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../browser");
    let mut p = Platform::new(b, &[]);
    let passwords = start_demo(&mut p);
    // The SDIS's files, each counted once: all were received now, so this month's files
    // and the chart's six months are the same files.
    let sdis_files = p.sql(&format!(
        "SELECT count(DISTINCT l.import_id) FROM import_log l JOIN import i ON i.id = l.import_id \
         WHERE l.global = 0 AND l.collectivite_siret = '{SDIS}' AND i.result <> 'en_cours'"
    ));
    assert!(sdis_files >= 24, "{sdis_files}");
    let users: Vec<serde_json::Value> = ["admin", "cdg", "sdis", "commune"]
        .iter()
        .map(|l| serde_json::json!({"login": l, "password": passwords[*l]}))
        .collect();
    let shots = std::env::var("ATMP_SHOTS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| p.dir.path().join("captures"));
    let o = std::process::Command::new("node")
        .arg(root.join("pages.mjs"))
        .env("ATMP_URL", p.url.replace("127.0.0.1", "localhost"))
        .env("ATMP_USERS", serde_json::Value::from(users).to_string())
        .env("ATMP_SHOTS", &shots)
        .env(
            "ATMP_EXPECT",
            serde_json::json!({"fichiers_mois": sdis_files, "total_graphique": sdis_files})
                .to_string(),
        )
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "browser test failed:\n{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    // Screenshots of every page at both widths reached the disk.
    let n = std::fs::read_dir(&shots).unwrap().count();
    assert!(n >= 60, "{n} screenshots");
}

// The import's page lists every rejected agent, a hundred per page, each with both
// identities and the differing fields marked.
both!(import_page_lists_every_rejected_agent_by_pages);
fn import_page_lists_every_rejected_agent_by_pages(b: Backend) {
    let mut p = Platform::new(b, &[]);
    p.setup();
    let first = p.dir.path().join("a.xml");
    p.cli(
        &[
            "gen",
            "--agents",
            "150",
            "--out",
            first.to_str().unwrap(),
            "--collectivite",
            SDIS,
            "--emetteur",
            "SOFIVAL",
            "--seed",
            "3",
        ],
        None,
    );
    let xml = std::fs::read_to_string(&first).unwrap();
    // The same agents (same NIRs) under other first names.
    let renamed = xml.replace("</prenom>", "-TEST</prenom>");
    assert_ne!(renamed, xml);
    p.start(&[]);
    p.upload("SOFIVAL", PW_SOFIVAL, "a.xml", xml.as_bytes());
    p.wait_jobs(1);
    p.upload("SOFIVAL", PW_SOFIVAL, "b.xml", renamed.as_bytes());
    p.wait_jobs(2);
    let id = p.sql("SELECT import_id FROM job WHERE file_name = 'b.xml'");
    let admin = p.web("plateforme", PW_USERS);
    let page = admin.text(&format!("/imports/{id}"));
    assert!(
        page.contains("150 rejet(s), dont 150 à traiter — page 1 sur 2"),
        "{page}"
    );
    assert_eq!(page.matches("<section class=\"rejet\">").count(), 100);
    assert_eq!(page.matches("Prénom (différent)").count(), 100);
    assert!(!page.contains("Date de naissance (différent)"));
    assert!(page.contains("Rejouer les 150 rejet(s) à traiter"));
    let page2 = admin.text(&format!("/imports/{id}?rejets=2"));
    assert!(page2.contains("page 2 sur 2"));
    assert_eq!(page2.matches("<section class=\"rejet\">").count(), 50);
    assert!(page2.contains("Rejets précédents"));
    assert!(!page2.contains("Rejets suivants"));
    // The log read on its page: filtered by level, by agent, by text, a hundred lines a page.
    let log = p.sql(&format!("SELECT id FROM import_log WHERE import_id = {id}"));
    let view = |q: &str| admin.text(&format!("/imports/{id}/journaux/{log}?{q}"));
    let rows = |html: &str| html.matches("<tr><td data-label=\"Horodatage\">").count();
    let errors = view("niveau=ERROR");
    assert!(
        errors.contains("150 ligne(s) retenue(s) — page 1 sur 2"),
        "{errors}"
    );
    assert_eq!(rows(&errors), 100);
    assert_eq!(errors.matches("badge-echoue").count(), 100);
    let second = view("niveau=ERROR&page=2");
    assert_eq!(rows(&second), 50);
    let all = view("");
    let total: usize = all
        .split("Le journal complet compte ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .unwrap()
        .parse()
        .unwrap();
    assert!(total > 300, "{total}");
    assert!(all.contains(&format!("{total} ligne(s) retenue(s)")));
    // One agent, by its NIR: its lines only, all naming it.
    let nir = xml
        .split("<nir>")
        .nth(1)
        .and_then(|s| s.split('<').next())
        .unwrap()
        .to_string();
    let one = view(&format!("agent={nir}"));
    let n = rows(&one);
    assert!(n >= 2, "{one}");
    assert!(
        one.split("<tr><td data-label=\"Horodatage\">")
            .skip(1)
            .all(|r| r[..r.find("</tr>").unwrap()].contains(&nir)),
        "{one}"
    );
    assert!(view("texte=introuvable-nulle-part").contains("Aucune ligne ne correspond"));
    // Outside the user's collectivités: 404.
    assert_eq!(
        p.web("commune", PW_USERS)
            .status(&format!("/imports/{id}/journaux/{log}")),
        404
    );
    // The page reads the quarantine's rows, not the logs: with the logs named nowhere, the
    // rejections are all there.
    p.base.execute(&format!(
        "UPDATE import_log SET erreurs_path = 'absent', complet_path = 'absent' WHERE import_id = {id}"
    ));
    let again = admin.text(&format!("/imports/{id}"));
    assert_eq!(again.matches("<section class=\"rejet\">").count(), 100);
}

// A collectivité's administrator manages its own users and services, a CDG's administrator
// those of the CDG and its attached collectivités; nothing beyond, even by editing forms.
both!(delegated_administration_stays_within_scope);
fn delegated_administration_stays_within_scope(b: Backend) {
    let mut p = Platform::new(b, &[]);
    p.setup();
    p.start(&[]);
    let id_of = |login: &str| {
        p.sql(&format!(
            "SELECT id FROM utilisateur WHERE login = '{login}'"
        ))
        .to_string()
    };
    let logins = |html: &str| -> Vec<String> {
        let body = &html[html.find("<tbody>").unwrap()..html.find("</tbody>").unwrap()];
        body.split("<tr>")
            .skip(1)
            .filter(|r| !r.contains("colspan"))
            .map(|r| cells(r)[0].clone())
            .collect()
    };

    // The SDIS's administrator.
    let sdis = p.web("sdis", PW_USERS);
    assert_eq!(logins(&sdis.text("/admin/utilisateurs")), ["sdis"]);
    let coll = sdis.text("/admin/collectivites");
    assert!(coll.contains(SDIS) && !coll.contains(COMMUNE) && !coll.contains(CDG));
    assert!(!coll.contains("Créer une collectivité"));
    let r = sdis.post(
        "/admin/utilisateurs",
        "/admin/utilisateurs",
        &[
            ("login", "sdis-rh"),
            ("role", "collectivite"),
            ("siret", SDIS),
            ("email", ""),
        ],
    );
    assert!(r.text().unwrap().contains("Utilisateur sdis-rh créé"));
    for (role, siret) in [
        ("cdg", SDIS),
        ("collectivite", COMMUNE),
        ("plateforme", ""),
        ("collectivite-admin", CDG),
    ] {
        let r = sdis.post(
            "/admin/utilisateurs",
            "/admin/utilisateurs",
            &[
                ("login", "intrus"),
                ("role", role),
                ("siret", siret),
                ("email", ""),
            ],
        );
        assert_eq!(r.status(), 400, "{role} {siret}");
    }
    assert_eq!(
        p.sql("SELECT count(*) FROM utilisateur WHERE login = 'intrus'"),
        0
    );
    for other in ["commune", "cdg", "plateforme"] {
        let r = sdis.post(
            "/admin/utilisateurs",
            "/admin/utilisateurs/actif",
            &[("id", &id_of(other)), ("actif", "0")],
        );
        assert_eq!(r.status(), 404, "{other}");
    }
    assert_eq!(p.sql("SELECT count(*) FROM utilisateur WHERE actif = 0"), 0);
    let page = format!("/admin/collectivites/{SDIS}/services");
    let r = sdis.post(&page, &page, &[("code", "PREV"), ("libelle", "Prévention")]);
    assert!(r.text().unwrap().contains("Service PREV ajouté"));
    assert_eq!(
        sdis.status(&format!("/admin/collectivites/{COMMUNE}/services")),
        404
    );
    let csrf = csrf_of(&sdis.text(&page));
    let r = sdis
        .client
        .post(format!(
            "{}/admin/collectivites/{COMMUNE}/services",
            sdis.url
        ))
        .form(&[("csrf", csrf.as_str()), ("code", "X"), ("libelle", "")])
        .send()
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(p.sql("SELECT count(*) FROM service"), 1);

    // The CDG's administrator: the CDG and its attached commune and CCAS, not the SDIS.
    let cdg = p.web("cdg", PW_USERS);
    let mut seen = logins(&cdg.text("/admin/utilisateurs"));
    seen.sort();
    assert_eq!(seen, ["cdg", "commune"]);
    let coll = cdg.text("/admin/collectivites");
    assert!(
        coll.contains(CDG) && coll.contains(COMMUNE) && coll.contains(CCAS) && !coll.contains(SDIS)
    );
    let r = cdg.post(
        "/admin/utilisateurs",
        "/admin/utilisateurs",
        &[
            ("login", "ccas-admin"),
            ("role", "collectivite-admin"),
            ("siret", CCAS),
            ("email", ""),
        ],
    );
    assert!(r.text().unwrap().contains("Utilisateur ccas-admin créé"));
    let r = cdg.post(
        "/admin/utilisateurs",
        "/admin/utilisateurs",
        &[
            ("login", "intrus"),
            ("role", "collectivite"),
            ("siret", SDIS),
            ("email", ""),
        ],
    );
    assert_eq!(r.status(), 400);
    let r = cdg.post(
        "/admin/utilisateurs",
        "/admin/utilisateurs/actif",
        &[("id", &id_of("commune")), ("actif", "0")],
    );
    assert!(r.text().unwrap().contains("Utilisateur désactivé"));
    assert_eq!(
        cdg.post(
            "/admin/utilisateurs",
            "/admin/utilisateurs/actif",
            &[("id", &id_of("sdis-rh")), ("actif", "0")]
        )
        .status(),
        404
    );
    assert_eq!(p.sql("SELECT count(*) FROM utilisateur WHERE actif = 0"), 1);

    // A collectivité's plain user administers nothing.
    p.cli(
        &[
            "utilisateur",
            "add",
            "--login",
            "lecteur",
            "--role",
            "collectivite",
            "--collectivite",
            SDIS,
            "--password-stdin",
        ],
        Some(&format!("{PW_USERS}\n")),
    );
    let lecteur = p.web("lecteur", PW_USERS);
    for page in [
        "/admin/utilisateurs",
        "/admin/collectivites",
        &format!("/admin/collectivites/{SDIS}/services"),
    ] {
        assert_eq!(lecteur.status(page), 403, "{page}");
    }
}

// A file moved into the platform's keeping whose job was never recorded (a crash between
// the two) gets its job at the next start, under the sender whose folder it came from.
both!(received_file_without_job_is_recovered_at_start);
fn received_file_without_job_is_recovered_at_start(b: Backend) {
    let mut p = Platform::new(b, &[]);
    p.setup();
    let dir = p.data().join("recus/SOFIVAL");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("20261126-101010-0a1b2c3d-services.xml"),
        example("services.xml"),
    )
    .unwrap();
    p.start(&[]);
    p.wait_jobs(1);
    assert_eq!(
        p.sql("SELECT count(*) FROM job WHERE emetteur = 'SOFIVAL' AND file_name = 'services.xml'"),
        1
    );
    assert_eq!(p.sql("SELECT count(*) FROM service"), 6);
}

// Behind a TLS reverse proxy the web may be served in plain HTTP (`ATMP_WEB_TLS=false`);
// its cookies then lose `Secure`, the rest is the same.
both!(plain_http_web_behind_a_proxy);
fn plain_http_web_behind_a_proxy(b: Backend) {
    let mut p = Platform::new(
        b,
        &[
            ("ATMP_WEB_TLS", "false"),
            ("ATMP_WEB_HEADER_TIMEOUT_SECONDS", "1"),
        ],
    );
    p.setup();
    p.start(&[]);
    let url = p.url.replace("https://", "http://");
    // A client that never finishes its headers is not kept: the server closes it (and says
    // nothing of HSTS over plain HTTP).
    {
        use std::io::{Read, Write};
        let addr = url.trim_start_matches("http://").to_string();
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(15)))
            .unwrap();
        s.write_all(b"GET /connexion HTTP/1.1\r\nHost: x\r\n")
            .unwrap();
        let mut buf = Vec::new();
        let r = s.read_to_end(&mut buf);
        assert!(r.is_ok(), "connection kept open: {r:?}");
        let text = String::from_utf8_lossy(&buf);
        assert!(
            text.is_empty() || text.starts_with("HTTP/1.1 408"),
            "{text}"
        );
    }
    assert!(reqwest::blocking::get(format!("{url}/connexion"))
        .unwrap()
        .headers()
        .get("strict-transport-security")
        .is_none());
    let c = reqwest::blocking::Client::builder()
        .cookie_store(true)
        .build()
        .unwrap();
    let r = c.get(format!("{url}/connexion")).send().unwrap();
    assert_eq!(r.status(), 200);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        cookie.contains("HttpOnly") && !cookie.contains("Secure"),
        "{cookie}"
    );
    let csrf = csrf_of(&r.text().unwrap());
    let r = c
        .post(format!("{url}/connexion"))
        .form(&[
            ("csrf", csrf.as_str()),
            ("login", "sdis"),
            ("password", PW_USERS),
        ])
        .send()
        .unwrap();
    assert_eq!(r.url().path(), "/", "{}", r.url());
    // FTPS still requires TLS.
    assert!(suppaftp::FtpStream::connect(&p.ftps)
        .unwrap()
        .login("SOFIVAL", PW_SOFIVAL)
        .is_err());
}

// A file that stopped the platform ten times is set aside, visibly: rejected whole, with
// its log pair in the table and in the sender's `retours/`, and the queue goes on.
both!(a_file_interrupted_ten_times_is_set_aside);
fn a_file_interrupted_ten_times_is_set_aside(b: Backend) {
    let mut p = Platform::new(b, &[]);
    p.setup();
    let dir = p.data().join("recus/SOFIVAL");
    std::fs::create_dir_all(&dir).unwrap();
    let stuck = dir.join("20261126-101010-0a1b2c3d-bloquant.xml");
    std::fs::write(&stuck, example("services.xml")).unwrap();
    p.base.execute(&format!(
        "INSERT INTO job (emetteur, file_name, stored_path, size, received_at, state, attempts, updated_at) \
         VALUES ('SOFIVAL', 'bloquant.xml', '{}', 1, '2026-11-26T10:10:10', 'en_cours', 10, '2026-11-26T10:10:10')",
        stuck.display()
    ));
    p.start(&[]);
    p.upload(
        "SOFIVAL",
        PW_SOFIVAL,
        "services.xml",
        &example("services.xml"),
    );
    p.wait_jobs(2);
    assert_eq!(
        p.sql("SELECT count(*) FROM import WHERE job_id = 1 AND result = 'echoue'"),
        1
    );
    assert_eq!(
        p.sql("SELECT count(*) FROM service"),
        6,
        "the queue went on"
    );
    let admin = p.web("plateforme", PW_USERS);
    let rows = suivi_rows(&admin.text("/suivi"));
    assert!(
        rows.iter().any(|r| r
            .1
            .starts_with("Import échoué : le traitement du fichier a été interrompu 10 fois")),
        "{rows:?}"
    );
    let names = p
        .ftp("SOFIVAL", PW_SOFIVAL)
        .unwrap()
        .nlst(Some("retours"))
        .unwrap();
    assert!(
        names
            .iter()
            .any(|n| n.contains("bloquant.xml_1_") && n.ends_with("_complet.log")),
        "{names:?}"
    );
}

// Five wrong FTPS passwords block the account from that address, even with the right
// password afterwards; another sender is not affected.
// A sender's FTPS login is answered while another transaction holds what its bookkeeping
// writes (SQLite's one writer, taken by an integration for as long as a large file takes;
// the sender's row on PostgreSQL): the time of the login is written once it is free.
both!(ftps_login_does_not_wait_for_a_busy_writer);
fn ftps_login_does_not_wait_for_a_busy_writer(b: Backend) {
    let mut p = Platform::new(b, &[("ATMP_FTPS_LOGIN_TIMEOUT_SECONDS", "2")]);
    p.setup();
    p.start(&[]);
    let lock = p
        .base
        .hold("UPDATE emetteur SET nom = nom WHERE code = 'SOFIVAL'");
    let mut s = p
        .ftp("SOFIVAL", PW_SOFIVAL)
        .expect("login answered while the writer is busy");
    // Past the login timeout: the session is still open.
    std::thread::sleep(std::time::Duration::from_secs(3));
    s.pwd().expect("the session outlives the busy writer");
    assert_eq!(
        p.base
            .scalar("SELECT count(*) FROM emetteur WHERE code = 'SOFIVAL' AND derniere_connexion IS NOT NULL"),
        "0"
    );
    drop(lock);
    let t = std::time::Instant::now();
    while p.sql(
        "SELECT count(*) FROM emetteur WHERE code = 'SOFIVAL' AND derniere_connexion IS NOT NULL",
    ) == 0
    {
        assert!(t.elapsed().as_secs() < 30, "login time never recorded");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = s.quit();
}

both!(ftps_blocks_an_account_after_five_wrong_passwords);
fn ftps_blocks_an_account_after_five_wrong_passwords(b: Backend) {
    let mut p = Platform::new(b, &[]);
    p.setup();
    p.start(&[]);
    for _ in 0..5 {
        assert!(p.ftp("SOFIVAL", "mauvais-mot-de-passe").is_err());
    }
    assert!(p.ftp("SOFIVAL", PW_SOFIVAL).is_err(), "not blocked");
    p.ftp("CDGVAUCL", PW_CDGVAUCL).unwrap().quit().unwrap();
}

// Two instances sharing one PostgreSQL base, each with its own `--data` folder: files
// uploaded to both at once are each integrated exactly once, those of one collectivité in
// the order they arrived; one instance killed in the middle, the other takes its work at once
// (the claim is the file transaction's row lock), and its restart integrates nothing twice.
// Its folders are deleted while it is down: the files it received, their logs and receipts
// are in the base, and both instances serve them.
#[test]
fn two_instances_on_one_postgresql_base_integrate_every_file_once() {
    let mut a = Platform::new(Backend::Postgres, &[]);
    a.setup();
    let mut b = Platform::sharing(&a);
    a.start(&[]);
    b.start(&[]);
    let mut files = Vec::new();
    for i in 0..12u32 {
        let (sender, pw, coll) = if i % 2 == 0 {
            ("SOFIVAL", PW_SOFIVAL, SDIS)
        } else {
            ("CDGVAUCL", PW_CDGVAUCL, COMMUNE)
        };
        let path = a.dir.path().join(format!("f{i}.xml"));
        let created = format!("2016-01-{:02}T02:00:00", i + 1);
        a.cli(
            &[
                "gen",
                "--agents",
                "150",
                "--seed",
                &(100 + i).to_string(),
                "--out",
                path.to_str().unwrap(),
                "--collectivite",
                coll,
                "--emetteur",
                sender,
                "--date-creation",
                &created,
            ],
            None,
        );
        files.push((
            sender,
            pw,
            format!("f{i}.xml"),
            std::fs::read(&path).unwrap(),
        ));
    }
    // Uploaded to one instance or the other, all at once.
    std::thread::scope(|s| {
        for (i, (sender, pw, name, bytes)) in files.iter().enumerate() {
            let p = if i % 4 < 2 { &a } else { &b };
            s.spawn(move || p.upload(sender, pw, name, bytes));
        }
    });
    let done = |p: &Platform| p.sql("SELECT count(*) FROM job WHERE state = 'fait'");
    let t = std::time::Instant::now();
    while done(&a) < 3 {
        assert!(
            t.elapsed() < std::time::Duration::from_secs(120),
            "{}",
            a.stderr()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    a.kill();
    // Nothing but the base is shared: A's folders go with A (its certificate aside, for the
    // tests' clients), and B still integrates what A received and serves every result.
    let a_received: Vec<i64> = a
        .stderr()
        .match_indices("file received job=")
        .map(|(i, m)| {
            let rest = &a.stderr()[i + m.len()..];
            rest[..rest.find(|c: char| !c.is_ascii_digit()).unwrap()]
                .parse()
                .unwrap()
        })
        .collect();
    for d in ["recus", "journaux", "ftp"] {
        std::fs::remove_dir_all(a.data().join(d)).unwrap();
    }
    let t = std::time::Instant::now();
    while done(&a) < 12 {
        assert!(
            t.elapsed() < std::time::Duration::from_secs(180),
            "{} jobs done; {}",
            done(&a),
            b.stderr()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    a.start(&[]);
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert_eq!(a.sql("SELECT count(*) FROM job"), 12);
    assert_eq!(
        a.sql("SELECT count(*) FROM import WHERE job_id IS NOT NULL AND result = 'reussi'"),
        12,
        "every file integrated"
    );
    assert_eq!(
        a.sql("SELECT count(DISTINCT job_id) FROM import WHERE job_id IS NOT NULL"),
        12,
        "once each"
    );
    // The base holds what the imports say they added, nothing more.
    for (table, key) in [
        ("agent", "agents"),
        ("evenement", "evenements"),
        ("arret", "arrets"),
    ] {
        assert_eq!(
            a.sql(&format!("SELECT count(*) FROM {table}")),
            a.sql(&format!(
                "SELECT sum((counts::json->'{key}'->>'added')::bigint)::bigint FROM import"
            )),
            "{table}"
        );
    }
    assert!(a.sql("SELECT count(*) FROM agent") >= 150 * 2);
    assert_eq!(a.sql("SELECT count(*) FROM job WHERE state <> 'fait'"), 0);
    // One sender's files, integrated in the order they arrived: import ids follow job ids.
    assert_eq!(
        a.sql(
            "SELECT count(*) FROM job j1 JOIN job j2 ON j2.emetteur = j1.emetteur AND j2.id > j1.id \
             JOIN import i1 ON i1.job_id = j1.id JOIN import i2 ON i2.job_id = j2.id WHERE i2.id < i1.id"
        ),
        0,
        "in arrival order per collectivité"
    );
    for p in [&a, &b] {
        let err = p.stderr();
        assert!(!err.contains("panicked"), "{err}");
    }
    // A was killed with at most a few jobs done: B integrated files that A had received.
    assert_eq!(a_received.len(), 6, "{a_received:?}");
    let by_b = b.stderr();
    assert!(
        a_received
            .iter()
            .any(|j| by_b.contains(&format!("integrating job={j}\n"))),
        "{a_received:?} {by_b}"
    );
    // Every result, in every sender's retours/ and on the web, from either instance.
    for p in [&a, &b] {
        for (sender, pw) in [("SOFIVAL", PW_SOFIVAL), ("CDGVAUCL", PW_CDGVAUCL)] {
            let mut ftp = p.ftp(sender, pw).unwrap();
            let names = ftp.nlst(Some("retours")).unwrap();
            let receipts: Vec<&String> = names
                .iter()
                .filter(|n| n.ends_with("_accuse.json"))
                .collect();
            assert!(!receipts.is_empty(), "{names:?}");
            for n in &names {
                let name = n.trim_start_matches("retours/");
                let bytes = ftp.retr_as_buffer(&format!("retours/{name}")).unwrap();
                // An error log may be empty; a complete log and a receipt never are.
                assert!(
                    name.ends_with("_erreurs.log") || !bytes.get_ref().is_empty(),
                    "{name}"
                );
            }
        }
    }
}

// The lock-outs live in the base: five wrong passwords on one instance block the account on
// every instance (web and FTPS alike), and a restart does not lift them.
#[test]
fn lock_outs_hold_across_instances() {
    let mut a = Platform::new(Backend::Postgres, &[]);
    a.setup();
    let mut b = Platform::sharing(&a);
    a.start(&[]);
    b.start(&[]);
    for _ in 0..5 {
        assert_eq!(
            Web::new(&a)
                .login("sdis", "pas-le-bon-mot-de-passe")
                .status(),
            401
        );
        assert!(a.ftp("SOFIVAL", "mauvais-mot-de-passe").is_err());
    }
    let r = Web::new(&b).login("sdis", PW_USERS);
    assert_eq!(r.status(), 429, "blocked on the other instance too");
    assert!(b.ftp("SOFIVAL", PW_SOFIVAL).is_err(), "FTPS blocked on B");
    b.kill();
    b.start(&[]);
    assert_eq!(Web::new(&b).login("sdis", PW_USERS).status(), 429);
    // Other accounts are not concerned.
    assert_eq!(Web::new(&b).login("cdg", PW_USERS).status(), 200);
    b.ftp("CDGVAUCL", PW_CDGVAUCL).unwrap().quit().unwrap();
    assert_eq!(
        a.sql(
            "SELECT count(*) FROM login_failure WHERE key LIKE 'ftps:SOFIVAL|%' AND failures >= 5"
        ),
        1
    );
}

// Three instances on one PostgreSQL base (issue 8's proof): 60 files from 6 senders uploaded
// at once over FTPS, spread over the three; one instance killed in the middle and restarted.
// Every file is integrated exactly once, the base holds the sum of the files, one sender's
// files go in arrival order, every import's logs download from every instance's web, and no
// mail is sent twice (each mail row's Message-ID arrives once at the SMTP sink).
#[test]
fn three_instances_sixty_files_one_killed() {
    let port = free_port();
    let smtp = format!("smtp://127.0.0.1:{port}");
    let mailroot = tempfile::tempdir().unwrap();
    let maildir = mailroot.path().join("maildir");
    let mut sink = std::process::Command::new("python3")
        .args([
            "-m",
            "aiosmtpd",
            "-n",
            "-l",
            &format!("127.0.0.1:{port}"),
            "-c",
            "aiosmtpd.handlers.Mailbox",
        ])
        .arg(&maildir)
        .spawn()
        .expect("python3 -m aiosmtpd (pip install aiosmtpd)");
    let mut a = Platform::new(
        Backend::Postgres,
        &[
            ("ATMP_PRODUCTION", "true"),
            ("ATMP_SMTP_URL", &smtp),
            ("ATMP_MAIL_RETRY_SECONDS", "1"),
            ("ATMP_PUBLIC_URL", "https://atmp.exemple.invalid"),
        ],
    );
    a.setup();
    // Six senders: three for the SDIS, three for the CDG's collectivités.
    let senders: Vec<(String, String, &str)> = vec![
        ("SOFIVAL".into(), PW_SOFIVAL.into(), SDIS),
        ("CDGVAUCL".into(), PW_CDGVAUCL.into(), COMMUNE),
        ("ASSURA".into(), "assura-mot-de-passe-1".into(), SDIS),
        ("ASSURB".into(), "assurb-mot-de-passe-1".into(), COMMUNE),
        ("ASSURC".into(), "assurc-mot-de-passe-1".into(), CCAS),
        ("ASSURD".into(), "assurd-mot-de-passe-1".into(), SDIS),
    ];
    for (code, pw, coll) in &senders[2..] {
        a.cli(
            &[
                "emetteur",
                "add",
                "--code",
                code,
                "--collectivite",
                coll,
                "--password-stdin",
            ],
            Some(&format!("{pw}\n")),
        );
    }
    let mut b = Platform::sharing(&a);
    let mut c = Platform::sharing(&a);
    a.start(&[]);
    b.start(&[]);
    c.start(&[]);
    let mut files: Vec<Vec<(String, Vec<u8>)>> = Vec::new();
    for (k, (code, _, coll)) in senders.iter().enumerate() {
        let mut mine = Vec::new();
        for i in 0..10usize {
            let path = a.dir.path().join(format!("{code}-{i}.xml"));
            let created = format!("2016-{:02}-{:02}T02:00:00", 1 + i % 12, 1 + k);
            a.cli(
                &[
                    "gen",
                    "--agents",
                    "30",
                    "--seed",
                    &(1000 + k * 10 + i).to_string(),
                    "--out",
                    path.to_str().unwrap(),
                    "--collectivite",
                    coll,
                    "--emetteur",
                    code,
                    "--date-creation",
                    &created,
                ],
                None,
            );
            mine.push((format!("{code}-{i}.xml"), std::fs::read(&path).unwrap()));
        }
        files.push(mine);
    }
    // Each sender uploads its ten files one after the other, to the three instances in turn;
    // the six senders at once.
    std::thread::scope(|s| {
        for (k, (code, pw, _)) in senders.iter().enumerate() {
            let (a, b, c) = (&a, &b, &c);
            let mine = &files[k];
            s.spawn(move || {
                for (i, (name, bytes)) in mine.iter().enumerate() {
                    let p = [a, b, c][(i + k) % 3];
                    p.upload(code, pw, name, bytes);
                }
            });
        }
    });
    let done = |p: &Platform| p.sql("SELECT count(*) FROM job WHERE state = 'fait'");
    let t = std::time::Instant::now();
    while done(&a) < 15 {
        assert!(
            t.elapsed() < std::time::Duration::from_secs(180),
            "{}",
            a.stderr()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    b.kill();
    let t = std::time::Instant::now();
    while done(&a) < 60 {
        assert!(
            t.elapsed() < std::time::Duration::from_secs(300),
            "{} jobs done; {}",
            done(&a),
            a.stderr()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    b.start(&[]);
    assert_eq!(a.sql("SELECT count(*) FROM job"), 60);
    assert_eq!(
        a.sql("SELECT count(DISTINCT job_id) FROM import WHERE job_id IS NOT NULL AND result = 'reussi'"),
        60,
        "60/60 integrated"
    );
    assert_eq!(
        a.sql("SELECT count(*) FROM import"),
        60,
        "exactly once each"
    );
    for (table, key) in [
        ("agent", "agents"),
        ("evenement", "evenements"),
        ("arret", "arrets"),
        ("certificat", "certificats"),
    ] {
        assert_eq!(
            a.sql(&format!("SELECT count(*) FROM {table}")),
            a.sql(&format!(
                "SELECT sum((counts::json->'{key}'->>'added')::bigint)::bigint FROM import"
            )),
            "{table}: the base holds the sum of the files"
        );
    }
    assert_eq!(
        a.sql(
            "SELECT count(*) FROM job j1 JOIN job j2 ON j2.emetteur = j1.emetteur AND j2.id > j1.id \
             JOIN import i1 ON i1.job_id = j1.id JOIN import i2 ON i2.job_id = j2.id WHERE i2.id < i1.id"
        ),
        0,
        "one sender's files in arrival order"
    );
    // Every import's logs, from every instance's web.
    let logs: Vec<(i64, i64)> = a
        .base
        .rows("SELECT import_id, id FROM import_log ORDER BY id")
        .into_iter()
        .map(|r| match (&r[0], &r[1]) {
            (common::V::Int(i), common::V::Int(l)) => (*i, *l),
            _ => unreachable!(),
        })
        .collect();
    assert!(logs.len() >= 60);
    for p in [&a, &b, &c] {
        let web = p.web("plateforme", PW_USERS);
        for (import, log) in &logs {
            let r = web.get(&format!("/imports/{import}/journaux/{log}/complet"));
            assert_eq!(r.status(), 200, "import {import} log {log}");
            assert!(r.text().unwrap().contains("Début du traitement du fichier"));
        }
    }
    // Mails: each sent once, whatever instance sent it.
    let t = std::time::Instant::now();
    loop {
        let waiting = a.sql(&format!(
            "SELECT count(*) FROM mail WHERE state = 'attente' AND next_attempt_at <= '{}'",
            atmp_store::now()
        ));
        if waiting == 0 {
            break;
        }
        assert!(
            t.elapsed() < std::time::Duration::from_secs(120),
            "{waiting} mails not sent"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    let _ = sink.kill();
    let _ = sink.wait();
    let texts = maildir_texts(&maildir);
    let ids: Vec<&str> = texts
        .iter()
        .filter_map(|t| t.lines().find_map(|l| l.strip_prefix("Message-ID: ")))
        .collect();
    assert_eq!(ids.len(), texts.len(), "every mail has its Message-ID");
    let distinct: std::collections::HashSet<&&str> = ids.iter().collect();
    assert_eq!(distinct.len(), ids.len(), "no mail sent twice");
    let sent = a.sql("SELECT count(*) FROM mail WHERE state = 'envoye'");
    // One mail per import to the collectivité's user (the CCAS has none): 50.
    assert_eq!(a.sql("SELECT count(*) FROM mail"), 50);
    // The killed instance's claimed mails wait for their lease to end (10 minutes); one of
    // them may have reached the sink just before the kill, unrecorded.
    let claimed = a.sql("SELECT count(*) FROM mail WHERE state = 'attente'");
    let got = texts.len() as i64;
    assert!(
        sent <= got && got <= sent + claimed,
        "{got} received, {sent} sent, {claimed} claimed"
    );
    for p in [&a, &b, &c] {
        assert!(!p.stderr().contains("panicked"));
    }
}

// The quarantine is checked on every request: a collectivité's user sees no other
// collectivité's rejections, not by the list, not by the URL of one, not by posting its forms;
// the CDG sees its members' rejections; a plain user reads but does not act.
both!(rejections_stay_within_each_users_collectivites);
fn rejections_stay_within_each_users_collectivites(b: Backend) {
    let mut p = Platform::new(b, &[]);
    p.setup();
    let first = p.dir.path().join("a.xml");
    p.cli(
        &[
            "gen",
            "--agents",
            "3",
            "--out",
            first.to_str().unwrap(),
            "--collectivite",
            SDIS,
            "--emetteur",
            "SOFIVAL",
            "--seed",
            "4",
        ],
        None,
    );
    let xml = std::fs::read_to_string(&first).unwrap();
    let renamed = xml.replace("</prenom>", "-TEST</prenom>");
    p.start(&[]);
    p.upload("SOFIVAL", PW_SOFIVAL, "a.xml", xml.as_bytes());
    p.wait_jobs(1);
    p.upload("SOFIVAL", PW_SOFIVAL, "b.xml", renamed.as_bytes());
    p.wait_jobs(2);
    let import = p.sql("SELECT import_id FROM job WHERE file_name = 'b.xml'");
    let id = p.sql("SELECT min(id) FROM rejet");
    assert_eq!(
        p.sql("SELECT count(*) FROM rejet WHERE etat = 'a_traiter'"),
        3
    );
    let sdis = p.web("sdis", PW_USERS);
    let list = sdis.text("/rejets");
    assert!(list.contains("3 rejet(s)"), "{list}");
    assert!(list.contains(&format!("href=\"/rejets/{id}\"")));
    assert_eq!(sdis.status(&format!("/rejets/{id}")), 200);
    // The commune's user: nothing, even by the URL; its forms refused.
    let commune = p.web("commune", PW_USERS);
    let list = commune.text("/rejets");
    assert!(list.contains("0 rejet(s)"), "{list}");
    assert!(list.contains("Aucun rejet."));
    assert_eq!(commune.status(&format!("/rejets/{id}")), 404);
    assert_eq!(commune.status(&format!("/rejets/{}", id + 1)), 404);
    let r = commune.post(
        "/rejets",
        &format!("/rejets/{id}/classer"),
        &[("motif", "pas à moi")],
    );
    assert_eq!(r.status(), 404);
    let r = commune.post("/rejets", &format!("/imports/{import}/rejeu"), &[]);
    assert_eq!(r.status(), 403);
    // The CDG the SDIS is not attached to sees none of it either.
    let cdg = p.web("cdg", PW_USERS);
    assert_eq!(cdg.status(&format!("/rejets/{id}")), 404);
    assert!(cdg.text("/rejets").contains("0 rejet(s)"));
    assert_eq!(
        p.sql("SELECT count(*) FROM rejet WHERE etat = 'a_traiter'"),
        3
    );
    // The SDIS's administrator sets one aside, with its comment.
    let r = sdis.post(
        &format!("/rejets/{id}"),
        &format!("/rejets/{id}/classer"),
        &[("motif", "L'émetteur corrige sa base")],
    );
    assert_eq!(r.status(), 200);
    assert!(r.text().unwrap().contains("Le rejet est classé."));
    assert_eq!(p.sql("SELECT count(*) FROM rejet WHERE etat = 'classe'"), 1);
    assert!(sdis.text("/rejets?etat=classe").contains("1 rejet(s)"));
}

// The records kept with rejections are personal data: purged after their own delay, the
// rows staying with their reason and state, the purge recorded; a purged one is not replayed.
both!(retention_purges_the_records_kept_with_rejections);
fn retention_purges_the_records_kept_with_rejections(b: Backend) {
    let mut p = Platform::new(
        b,
        &[
            ("ATMP_RETENTION_REJETS_DAYS", "0"),
            ("ATMP_PURGE_INTERVAL_SECONDS", "1"),
        ],
    );
    p.setup();
    let first = p.dir.path().join("a.xml");
    p.cli(
        &[
            "gen",
            "--agents",
            "2",
            "--out",
            first.to_str().unwrap(),
            "--collectivite",
            SDIS,
            "--emetteur",
            "SOFIVAL",
            "--seed",
            "6",
        ],
        None,
    );
    let xml = std::fs::read_to_string(&first).unwrap();
    p.start(&[]);
    p.upload("SOFIVAL", PW_SOFIVAL, "a.xml", xml.as_bytes());
    p.wait_jobs(1);
    p.upload(
        "SOFIVAL",
        PW_SOFIVAL,
        "b.xml",
        xml.replace("</prenom>", "-TEST</prenom>").as_bytes(),
    );
    p.wait_jobs(2);
    let import = p.sql("SELECT import_id FROM job WHERE file_name = 'b.xml'");
    let t = std::time::Instant::now();
    while p.sql("SELECT count(*) FROM purge WHERE what = 'rejets'") < 1 {
        assert!(t.elapsed().as_secs() < 30, "no purge: {}", p.stderr());
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(p.sql("SELECT count(*) FROM rejet"), 2);
    assert_eq!(
        p.sql("SELECT count(*) FROM rejet WHERE source_xml IS NULL AND base IS NULL AND fichier IS NULL AND message = '' AND purge_le IS NOT NULL AND etat = 'a_traiter' AND raison = 'identite'"),
        2
    );
    // The logs and the data themselves are not touched by this purge.
    assert_eq!(
        p.sql("SELECT count(*) FROM purge WHERE what <> 'rejets'"),
        0
    );
    let admin = p.web("plateforme", PW_USERS);
    let page = admin.text(&format!("/imports/{import}"));
    assert!(
        page.contains("Données personnelles des rejets supprimées le"),
        "{page}"
    );
    let id = p.sql("SELECT min(id) FROM rejet");
    assert!(admin
        .text(&format!("/rejets/{id}"))
        .contains("Les données personnelles de ce rejet ont été supprimées"));
    let r = admin.post(
        &format!("/imports/{import}"),
        &format!("/imports/{import}/rejeu"),
        &[],
    );
    assert_eq!(r.status(), 409);
    assert!(r.text().unwrap().contains("purgées"));
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert_eq!(p.sql("SELECT count(*) FROM purge WHERE what = 'rejets'"), 1);
}

/// Every table of the base as text, but the web's own bookkeeping of who is logged in and
/// who did what (sessions, audit trail, failed logins).
fn digest_of_tables(p: &Platform) -> String {
    let tables = match p.base.backend {
        Backend::Sqlite => p
            .base
            .rows("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"),
        Backend::Postgres => p.base.rows(
            "SELECT table_name::text FROM information_schema.tables WHERE table_schema = current_schema() ORDER BY 1",
        ),
    };
    let mut out = String::new();
    for t in tables {
        let t = t[0].to_string();
        if ["session", "audit", "echec_connexion", "login_failure"].contains(&t.as_str()) {
            continue;
        }
        // A sender's last FTPS login is a trace of the connection, like the audit trail.
        if t == "emetteur" {
            let sql = "SELECT id, code, nom, password_hash, actif FROM emetteur ORDER BY 1";
            out.push_str(&format!("{t}: {:?}\n", p.base.rows(sql)));
            continue;
        }
        let sql = match p.base.backend {
            Backend::Sqlite => format!("SELECT * FROM \"{t}\" ORDER BY 1"),
            // Every column type as text (large objects' oids included).
            Backend::Postgres => format!("SELECT t::text FROM \"{t}\" t ORDER BY 1"),
        };
        out.push_str(&format!("{t}: {:?}\n", p.base.rows(&sql)));
    }
    out
}

// "Tester un fichier": the platform's administrator tests a file against the real base; the
// page says what an import would do, and nothing of it is stored.
both!(web_dry_run_tests_a_file_against_the_base_and_stores_nothing);
fn web_dry_run_tests_a_file_against_the_base_and_stores_nothing(b: Backend) {
    let mut p = Platform::new(b, &[]);
    p.setup();
    let first = p.dir.path().join("a.xml");
    p.cli(
        &[
            "gen",
            "--agents",
            "3",
            "--out",
            first.to_str().unwrap(),
            "--collectivite",
            SDIS,
            "--emetteur",
            "SOFIVAL",
            "--seed",
            "8",
        ],
        None,
    );
    let xml = std::fs::read_to_string(&first).unwrap();
    p.start(&[]);
    p.upload("SOFIVAL", PW_SOFIVAL, "a.xml", xml.as_bytes());
    p.wait_jobs(1);
    let admin = p.web("plateforme", PW_USERS);
    let page = admin.text("/essai");
    let csrf = csrf_of(&page);
    let before = digest_of_tables(&p);
    assert!(before.contains("rejet: []"), "{before}");
    let renamed = xml.replace("</prenom>", "-TEST</prenom>");
    let form = reqwest::blocking::multipart::Form::new()
        .text("csrf", csrf.clone())
        .part(
            "fichier",
            reqwest::blocking::multipart::Part::bytes(renamed.into_bytes()).file_name("essai.xml"),
        );
    let r = admin
        .client
        .post(format!("{}/essai", admin.url))
        .multipart(form)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let page = r.text().unwrap();
    assert!(
        page.contains("Essai : Import réussi (3 erreur(s))"),
        "{page}"
    );
    assert!(page.contains("ne correspondent pas"), "{page}");
    assert!(page.contains("Rien n'a été enregistré"), "{page}");
    assert_eq!(digest_of_tables(&p), before);
    let left: Vec<_> = std::fs::read_dir(p.data().join("essais"))
        .unwrap()
        .collect();
    assert!(left.is_empty(), "{left:?}");
    // Without the form's token: refused, nothing tested.
    let form = reqwest::blocking::multipart::Form::new().part(
        "fichier",
        reqwest::blocking::multipart::Part::bytes(xml.clone().into_bytes()).file_name("x.xml"),
    );
    let r = admin
        .client
        .post(format!("{}/essai", admin.url))
        .multipart(form)
        .send()
        .unwrap();
    assert_eq!(r.status(), 403);
    // Only the platform's administrators test files.
    let sdis = p.web("sdis", PW_USERS);
    assert_eq!(sdis.status("/essai"), 403);
}

// A sender tests a file over FTPS: deposited in test/, it is checked against the real base at
// once; its logs and receipt come back in retours/test/; nothing is stored in the base (no
// job, no import, no rejection, no mail).
both!(ftps_test_folder_answers_in_retours_test_and_stores_nothing);
fn ftps_test_folder_answers_in_retours_test_and_stores_nothing(b: Backend) {
    let mut p = Platform::new(b, &[]);
    p.setup();
    p.start(&[]);
    p.upload(
        "SOFIVAL",
        PW_SOFIVAL,
        "services.xml",
        &example("services.xml"),
    );
    p.wait_jobs(1);
    let before = digest_of_tables(&p);
    let decl = example("declaration-differentiel.xml");
    let text = String::from_utf8(decl).unwrap();
    let mut ftp = p.ftp("SOFIVAL", PW_SOFIVAL).unwrap();
    ftp.put_file("test/essai.xml", &mut text.as_bytes())
        .unwrap();
    let t = std::time::Instant::now();
    let names = loop {
        let names = ftp.nlst(Some("retours/test")).unwrap_or_default();
        if names.iter().any(|n| n.ends_with("_accuse.json")) {
            break names;
        }
        assert!(t.elapsed().as_secs() < 30, "no result: {}", p.stderr());
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let base = |n: &String| n.rsplit('/').next().unwrap().to_string();
    let receipt = names
        .iter()
        .map(base)
        .find(|n| n.ends_with("_accuse.json"))
        .unwrap();
    assert!(
        receipt.starts_with("essai.xml_") || receipt.starts_with("essai_"),
        "{receipt}"
    );
    let bytes = ftp
        .retr_as_buffer(&format!("retours/test/{receipt}"))
        .unwrap()
        .into_inner();
    let j: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    let r = &j["accuse_de_reception"];
    assert_eq!(r["essai"], true);
    assert_eq!(r["enregistre"], false);
    assert_eq!(r["resultat"], "reussi");
    assert_eq!(r["compteurs"]["agents"]["added"], 3);
    let complete = names
        .iter()
        .map(base)
        .find(|n| n.ends_with(&format!("_{SDIS}_complet.log")))
        .unwrap_or_else(|| panic!("{names:?}"));
    let log = ftp
        .retr_as_buffer(&format!("retours/test/{complete}"))
        .unwrap()
        .into_inner();
    let log = String::from_utf8(log).unwrap();
    assert!(
        log.contains(";ESSAI : fichier testé contre la base"),
        "{log}"
    );
    // The root of retours/ lists test/ once it holds results.
    assert!(ftp
        .nlst(Some("retours"))
        .unwrap()
        .iter()
        .any(|n| n.ends_with("test")));
    // Nothing in the base, nothing left in test/, no job.
    assert_eq!(digest_of_tables(&p), before);
    assert_eq!(p.sql("SELECT count(*) FROM job"), 1);
    let left = ftp.nlst(Some("test")).unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
    // The results are the sender's only.
    let mut other = p.ftp("CDGVAUCL", PW_CDGVAUCL).unwrap();
    assert!(other
        .nlst(Some("retours/test"))
        .unwrap_or_default()
        .is_empty());
    assert!(other
        .retr_as_buffer(&format!("retours/test/{receipt}"))
        .is_err());
}

// The "tableur" download of a log: UTF-8 with a BOM, a header, six cells per row, CRLF; a
// name `=HYPERLINK(…)` of the file comes out inert; the same bytes compressed when the
// client accepts gzip. The text download is left as the spec writes it.
both!(tableur_logs_open_in_a_spreadsheet_and_travel_compressed);
fn tableur_logs_open_in_a_spreadsheet_and_travel_compressed(b: Backend) {
    use std::io::Read;
    let mut p = Platform::new(b, &[]);
    p.setup();
    let first = p.dir.path().join("a.xml");
    p.cli(
        &[
            "gen",
            "--agents",
            "3",
            "--out",
            first.to_str().unwrap(),
            "--collectivite",
            SDIS,
            "--emetteur",
            "SOFIVAL",
            "--seed",
            "5",
        ],
        None,
    );
    let xml = std::fs::read_to_string(&first).unwrap();
    let i = xml.find("<nomUsuel>").unwrap() + 10;
    let j = i + xml[i..].find("</nomUsuel>").unwrap();
    let hostile = format!(
        "{}=HYPERLINK(\"http://x.invalid\";\"y\"){}",
        &xml[..i],
        &xml[j..]
    );
    p.start(&[]);
    p.upload("SOFIVAL", PW_SOFIVAL, "a.xml", xml.as_bytes());
    p.wait_jobs(1);
    // The same agents, the first under a hostile name: an identity gap, an ERROR line.
    p.upload("SOFIVAL", PW_SOFIVAL, "b.xml", hostile.as_bytes());
    p.wait_jobs(2);
    let id = p.sql("SELECT import_id FROM job WHERE file_name = 'b.xml'");
    let log = p.sql(&format!("SELECT id FROM import_log WHERE import_id = {id}"));
    let sdis = p.web("sdis", PW_USERS);
    let page = sdis.text(&format!("/imports/{id}"));
    let link = format!("/imports/{id}/journaux/{log}/complet?format=tableur");
    assert!(page.contains(&link.replace('&', "&amp;")), "{page}");
    let r = sdis.get(&link);
    assert_eq!(r.status(), 200);
    let disposition = r.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(disposition.ends_with("-complet.csv\""), "{disposition}");
    assert!(r.headers().get("content-encoding").is_none());
    let bytes = r.bytes().unwrap().to_vec();
    assert!(bytes.starts_with("\u{feff}".as_bytes()), "a BOM");
    let text = String::from_utf8(bytes[3..].to_vec()).expect("UTF-8");
    assert!(text.ends_with("\r\n"));
    let rows: Vec<&str> = text.trim_end_matches("\r\n").split("\r\n").collect();
    assert_eq!(rows[0], "Horodatage;Niveau;Agent;Événement;Élément;Message");
    let mut hostile_cells = 0;
    for r in &rows[1..] {
        assert!(!r.contains('\n'), "one row per line: {r:?}");
        let cells = atmp_integrator::split_line(r);
        assert_eq!(cells.len(), 6, "{r}");
        for c in &cells {
            assert!(!atmp_integrator::is_formula(c), "a formula cell: {c}");
            if c.contains("=HYPERLINK(") {
                hostile_cells += 1;
            }
        }
    }
    assert!(hostile_cells >= 1, "the hostile name is in the log: {text}");
    // The whole text log has as many entries as the spreadsheet has rows.
    let plain = sdis
        .get(&format!("/imports/{id}/journaux/{log}/complet"))
        .text()
        .unwrap();
    assert_eq!(atmp_integrator::split_records(&plain).len(), rows.len() - 1);
    // Compressed on demand: the same bytes once inflated.
    let r = sdis
        .client
        .get(format!("{}{link}", sdis.url))
        .header("accept-encoding", "gzip, deflate")
        .send()
        .unwrap();
    assert_eq!(r.headers()["content-encoding"], "gzip");
    let gz = r.bytes().unwrap();
    let mut inflated = Vec::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_end(&mut inflated)
        .unwrap();
    assert_eq!(inflated, bytes);
    // The receipt's times carry their UTC offset (RFC 3339).
    let receipt: serde_json::Value =
        serde_json::from_str(&sdis.text(&format!("/imports/{id}/accuse"))).unwrap();
    for k in ["recu_le", "debut_traitement", "fin_traitement"] {
        let t = receipt["accuse_de_reception"][k]
            .as_str()
            .unwrap()
            .to_string();
        assert!(chrono::DateTime::parse_from_rfc3339(&t).is_ok(), "{k}: {t}");
        assert_eq!(t.len(), 25, "{k}: {t}");
    }
    // `gzip;q=0` means no gzip.
    let r = sdis
        .client
        .get(format!("{}{link}", sdis.url))
        .header("accept-encoding", "gzip;q=0")
        .send()
        .unwrap();
    assert!(r.headers().get("content-encoding").is_none());
}

// Sessions: an expired session sends to the login page saying so and comes back to the page
// asked for; a return address elsewhere is never followed; an administrator resets the
// password of a user it manages only.
both!(expired_sessions_return_to_the_page_asked_for);
fn expired_sessions_return_to_the_page_asked_for(b: Backend) {
    let mut p = Platform::new(b, &[]);
    p.setup();
    p.start(&[]);
    let sdis = p.web("sdis", PW_USERS);
    assert_eq!(sdis.status("/rejets?etat=a_traiter"), 200);
    p.base
        .execute("UPDATE session SET expires_at = '2000-01-01T00:00:00'");
    let r = sdis.get("/rejets?etat=a_traiter");
    assert_eq!(
        r.url().as_str(),
        format!(
            "{}/connexion?expiree=1&retour=/rejets%3Fetat%3Da_traiter",
            sdis.url
        )
    );
    let page = r.text().unwrap();
    assert!(page.contains("Votre session a expiré"), "{page}");
    assert!(
        page.contains("name=\"retour\" value=\"/rejets?etat=a_traiter\""),
        "{page}"
    );
    let csrf = csrf_of(&page);
    let r = sdis
        .client
        .post(format!("{}/connexion", sdis.url))
        .form(&[
            ("csrf", csrf.as_str()),
            ("login", "sdis"),
            ("password", PW_USERS),
            ("retour", "/rejets?etat=a_traiter"),
        ])
        .send()
        .unwrap();
    assert_eq!(r.url().path(), "/rejets");
    assert_eq!(r.url().query(), Some("etat=a_traiter"));
    // Never a return to another site.
    for evil in [
        "//evil.invalid/x",
        "/\\evil.invalid",
        "https://evil.invalid/",
        "/connexion",
    ] {
        let w = Web::new(&p);
        let page = w
            .get(&format!(
                "/connexion?retour={}",
                evil.replace('/', "%2F")
                    .replace('\\', "%5C")
                    .replace(':', "%3A")
            ))
            .text()
            .unwrap();
        let csrf = csrf_of(&page);
        let r = w
            .client
            .post(format!("{}/connexion", w.url))
            .form(&[
                ("csrf", csrf.as_str()),
                ("login", "commune"),
                ("password", PW_USERS),
                ("retour", evil),
            ])
            .send()
            .unwrap();
        assert_eq!(r.url().host_str(), Some("localhost"), "{evil}");
        assert_eq!(r.url().path(), "/", "{evil}");
    }
    // Password reset: the SDIS's administrator may not reset the commune's user (404), the
    // CDG's administrator may; the old password then fails and the new one must be changed.
    let commune_id = p.sql("SELECT id FROM utilisateur WHERE login = 'commune'");
    let sdis = p.web("sdis", PW_USERS);
    let r = sdis.post(
        "/admin/utilisateurs",
        "/admin/utilisateurs/mot-de-passe",
        &[("id", &commune_id.to_string())],
    );
    assert_eq!(r.status(), 404);
    let cdg = p.web("cdg", PW_USERS);
    let r = cdg.post(
        "/admin/utilisateurs",
        "/admin/utilisateurs/mot-de-passe",
        &[("id", &commune_id.to_string())],
    );
    assert_eq!(r.status(), 200);
    let page = r.text().unwrap();
    let new = page
        .split("première connexion : ")
        .nth(1)
        .and_then(|s| s.split('<').next())
        .unwrap_or_else(|| panic!("{page}"))
        .to_string();
    let w = Web::new(&p);
    assert_eq!(w.login("commune", PW_USERS).status(), 401);
    let r = w.login("commune", &new);
    assert_eq!(r.url().path(), "/mot-de-passe");
    // (askama writes the apostrophe as an entity.)
    let needle = "utilisateur commune</td>";
    let audit = p
        .web("plateforme", PW_USERS)
        .text_with("/admin/journal", needle);
    assert!(audit.contains(needle), "{audit}");
    assert!(audit.contains("réinitialisation du mot de passe de l"));
    assert!(
        !audit.contains(&new),
        "the password is never in the audit trail"
    );
}

// The tracking table's filters (collectivité, sender, result, file name) and its order,
// all kept in the address, on each backend.
both!(tracking_table_filters_by_collectivite_sender_result_and_name);
fn tracking_table_filters_by_collectivite_sender_result_and_name(b: Backend) {
    let mut p = Platform::new(b, &[]);
    p.setup();
    p.start(&[]);
    let xml = example("services.xml");
    p.upload("SOFIVAL", PW_SOFIVAL, "un_100%.xml", &xml);
    p.wait_jobs(1);
    // The same bytes again: a duplicate.
    p.upload("SOFIVAL", PW_SOFIVAL, "deux.xml", &xml);
    p.wait_jobs(2);
    p.upload(
        "CDGVAUCL",
        PW_CDGVAUCL,
        "groupe.xml",
        &example("cdg-groupe.xml"),
    );
    p.wait_jobs(3);
    let admin = p.web("plateforme", PW_USERS);
    let files = |q: &str| -> Vec<String> {
        let html = admin.text(&format!("/suivi?{q}"));
        let body = &html[html.find("<tbody>").unwrap()..html.find("</tbody>").unwrap()];
        body.split("<tr>")
            .skip(1)
            .filter(|r| !r.contains("colspan"))
            .map(|r| cells(r)[1].clone())
            .collect()
    };
    let all = files("");
    assert!(all.len() >= 4, "{all:?}");
    assert!(files("emetteur=SOFIVAL")
        .iter()
        .all(|f| f == "un_100%.xml" || f == "deux.xml"));
    assert_eq!(files("emetteur=SOFIVAL").len(), 2);
    assert_eq!(files("resultat=doublon"), ["deux.xml"]);
    // `%` and `_` are taken literally.
    assert_eq!(files("fichier=100%25"), ["un_100%.xml"]);
    assert_eq!(files("fichier=_1"), ["un_100%.xml"]);
    assert!(files("fichier=%25%25").is_empty());
    assert_eq!(
        files("fichier=GROUPE").len(),
        all.len() - 2,
        "case-insensitive"
    );
    assert_eq!(files(&format!("collectivite={COMMUNE}")), ["groupe.xml"]);
    // Oldest first.
    let mut asc = files("tri=ancien");
    asc.reverse();
    assert_eq!(asc, all);
    // An unknown filter value is dropped, not an error.
    assert_eq!(files("emetteur=INCONNU&resultat=rien").len(), all.len());
    // The duplicate names its sender and collectivité, links the import it repeats, and is
    // seen by those who see that import (the SDIS), by no one else (the commune).
    let first = p.sql("SELECT import_id FROM job WHERE file_name = 'un_100%.xml'");
    let dup = p.sql("SELECT import_id FROM job WHERE file_name = 'deux.xml'");
    let sdis = p.web("sdis", PW_USERS);
    let html = sdis.text("/suivi?resultat=doublon");
    let row = &html[html.find("<tbody>").unwrap()..];
    let c = cells(&row[row.find("<tr>").unwrap()..]);
    assert_eq!(c[1], "deux.xml");
    assert_eq!(c[2], "SOFIVAL");
    assert_eq!(c[4], "SDIS de la Vauclaire");
    assert!(c[5].starts_with("Doublon : déjà intégré le "), "{c:?}");
    assert!(
        c[5].ends_with(&format!("(doublon de l'import n° {first})")),
        "{c:?}"
    );
    let page = sdis.text(&format!("/imports/{dup}"));
    assert!(
        page.contains(&format!(
            "<a href=\"/imports/{first}\">import n° {first}</a> : rien n"
        )),
        "{page}"
    );
    assert_eq!(
        p.web("commune", PW_USERS)
            .status(&format!("/imports/{dup}")),
        404
    );
    // The sort link keeps the filters.
    let html = admin.text("/suivi?emetteur=SOFIVAL&resultat=doublon");
    assert!(
        html.replace("&#38;", "&")
            .replace("&amp;", "&")
            .contains("emetteur=SOFIVAL&resultat=doublon&fichier=&tri=ancien"),
        "{html}"
    );
}

// "Mot de passe oublié": the page answers the same for a login that exists and one that
// does not; the link, sent over a real SMTP exchange, works once, within 30 minutes.
both!(forgotten_password_link_works_once);
fn forgotten_password_link_works_once(b: Backend) {
    let port = free_port();
    let smtp = format!("smtp://127.0.0.1:{port}");
    let mut p = Platform::new(
        b,
        &[
            ("ATMP_PRODUCTION", "true"),
            ("ATMP_SMTP_URL", &smtp),
            ("ATMP_PUBLIC_URL", "https://atmp.exemple.invalid"),
        ],
    );
    p.setup();
    let maildir = p.dir.path().join("maildir");
    let mut sink = std::process::Command::new("python3")
        .args([
            "-m",
            "aiosmtpd",
            "-n",
            "-l",
            &format!("127.0.0.1:{port}"),
            "-c",
            "aiosmtpd.handlers.Mailbox",
        ])
        .arg(&maildir)
        .spawn()
        .expect("python3 -m aiosmtpd (pip install aiosmtpd)");
    let t = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(t.elapsed().as_secs() < 30, "the SMTP sink did not start");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    p.start(&[]);
    let w = Web::new(&p);
    assert!(w
        .text("/connexion")
        .contains("href=\"/mot-de-passe-oublie\""));
    let ask = |login: &str| -> String {
        let page = w.text("/mot-de-passe-oublie");
        let csrf = csrf_of(&page);
        let r = w
            .client
            .post(format!("{}/mot-de-passe-oublie", w.url))
            .form(&[("csrf", csrf.as_str()), ("login", login)])
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
        r.text().unwrap()
    };
    let unknown = ask("personne");
    let known = ask("commune");
    let said = "Si cet identifiant existe et qu&#39;une adresse de courriel lui est associée";
    assert!(known.contains(said), "{known}");
    assert_eq!(unknown, known, "the answer says nothing of the login");
    let t = std::time::Instant::now();
    let mail = loop {
        if maildir.join("new").is_dir() {
            if let Some(m) = maildir_texts(&maildir).into_iter().next() {
                break m;
            }
        }
        assert!(t.elapsed().as_secs() < 30, "no mail: {}", p.stderr());
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    let _ = sink.kill();
    let _ = sink.wait();
    assert_eq!(
        maildir_texts(&maildir).len(),
        1,
        "one mail, for the login that exists"
    );
    assert!(mail.contains("To: commune@exemple.invalid"), "{mail}");
    let link = mail
        .split("https://atmp.exemple.invalid")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or_else(|| panic!("{mail}"))
        .to_string();
    assert!(link.starts_with("/mot-de-passe-oublie/"), "{link}");
    // Both pages pass axe-core at 1366 and 390 px (the link is only shown, not used).
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../browser");
    let o = std::process::Command::new("node")
        .arg(root.join("axe-pages.mjs"))
        .env("ATMP_URL", &w.url)
        .env("ATMP_PATHS", format!("/mot-de-passe-oublie {link}"))
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "axe-core:\n{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    // A password too short is refused, the link still valid; then it works, once.
    let page = w.text(&link);
    let post = |pw: &str, page: &str| {
        let csrf = csrf_of(page);
        w.client
            .post(format!("{}{link}", w.url))
            .form(&[
                ("csrf", csrf.as_str()),
                ("nouveau", pw),
                ("confirmation", pw),
            ])
            .send()
            .unwrap()
    };
    let r = post("court", &page);
    assert_eq!(r.status(), 400);
    let page = r.text().unwrap();
    let r = post("Un tout nouveau mot de passe", &page);
    assert_eq!(r.url().path(), "/connexion");
    assert!(r.text().unwrap().contains("Mot de passe changé"));
    assert_eq!(w.status(&link), 410, "a link serves once");
    assert_eq!(Web::new(&p).login("commune", PW_USERS).status(), 401);
    let r = Web::new(&p).login("commune", "Un tout nouveau mot de passe");
    assert_eq!(r.url().path(), "/");
    assert_eq!(p.sql("SELECT count(*) FROM lien_mot_de_passe"), 0);
    // An expired link is refused, and cannot be used either.
    use sha2::Digest;
    let h = hex::encode(sha2::Sha256::digest(b"lien-perime"));
    p.base.execute(&format!(
        "INSERT INTO lien_mot_de_passe (token_sha256, utilisateur_id, expires_at) \
         SELECT '{h}', id, '2000-01-01T00:00:00' FROM utilisateur WHERE login = 'commune'"
    ));
    assert_eq!(w.status("/mot-de-passe-oublie/lien-perime"), 410);
    let page = w.text("/connexion");
    let csrf = csrf_of(&page);
    let r = w
        .client
        .post(format!("{}/mot-de-passe-oublie/lien-perime", w.url))
        .form(&[
            ("csrf", csrf.as_str()),
            ("nouveau", "Encore un autre mot de passe"),
            ("confirmation", "Encore un autre mot de passe"),
        ])
        .send()
        .unwrap();
    assert_eq!(r.status(), 410);
    let r = Web::new(&p).login("commune", "Un tout nouveau mot de passe");
    assert_eq!(
        r.url().path(),
        "/",
        "the password set by the link still holds"
    );
}

// A sender disabled by the platform can no longer log in over FTPS, and can again once
// enabled; its last FTPS login is shown.
both!(a_disabled_sender_cannot_log_in_and_its_last_login_is_shown);
fn a_disabled_sender_cannot_log_in_and_its_last_login_is_shown(b: Backend) {
    let mut p = Platform::new(b, &[]);
    p.setup();
    p.start(&[]);
    let admin = p.web("plateforme", PW_USERS);
    let row = |html: &str, code: &str| -> Vec<String> {
        let body = &html[html.find("<tbody>").unwrap()..html.find("</tbody>").unwrap()];
        cells(
            body.split("<tr>")
                .find(|r| r.contains(&format!(">{code}</td>")))
                .unwrap(),
        )
    };
    assert_eq!(row(&admin.text("/admin/emetteurs"), "SOFIVAL")[3], "jamais");
    p.upload(
        "SOFIVAL",
        PW_SOFIVAL,
        "services.xml",
        &example("services.xml"),
    );
    p.wait_jobs(1);
    let last = row(&admin.text("/admin/emetteurs"), "SOFIVAL")[3].clone();
    assert!(
        last.starts_with(&chrono::Local::now().format("%d/%m/%Y").to_string()),
        "{last}"
    );
    let r = admin.post(
        "/admin/emetteurs",
        "/admin/emetteurs/actif",
        &[("code", "SOFIVAL"), ("actif", "0")],
    );
    let page = r.text().unwrap();
    assert!(page.contains("Émetteur SOFIVAL désactivé"), "{page}");
    assert!(
        page.contains("<span aria-hidden=\"true\">✖</span> désactivé</span>"),
        "{page}"
    );
    assert!(
        p.ftp("SOFIVAL", PW_SOFIVAL).is_err(),
        "a disabled sender logs in"
    );
    // Another sender is not affected.
    assert!(p.ftp("CDGVAUCL", PW_CDGVAUCL).is_ok());
    let r = admin.post(
        "/admin/emetteurs",
        "/admin/emetteurs/actif",
        &[("code", "SOFIVAL"), ("actif", "1")],
    );
    assert!(r.text().unwrap().contains("Émetteur SOFIVAL réactivé"));
    assert!(p.ftp("SOFIVAL", PW_SOFIVAL).is_ok());
    // Only the platform disables a sender.
    let sdis = p.web("sdis", PW_USERS);
    let r = sdis.post(
        "/suivi",
        "/admin/emetteurs/actif",
        &[("code", "SOFIVAL"), ("actif", "0")],
    );
    assert_eq!(r.status(), 403);
}
