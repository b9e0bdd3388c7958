//! `atmp serve --demo`: the example collectivités, senders and users, and files queued for
//! the worker, so that the pages show something. Loaded once, into an empty base only.
//! The example files (`demo/`) are fictional, from the format's examples.

use atmp_model::Siret;
use atmp_store::{Autorisation, NewUtilisateur, Role};

use crate::{auth, PlatformError, Shared};

const SDIS: &str = "28219002400012";
const CDG: &str = "28219010700049";
const COMMUNE: &str = "21219781800017";
const CCAS: &str = "26219781700014";

const FILES: [(&str, &str, &[u8]); 4] = [
    (
        "SOFIVAL",
        "services.xml",
        include_bytes!("../demo/services.xml"),
    ),
    (
        "SOFIVAL",
        "declaration-differentiel.xml",
        include_bytes!("../demo/declaration-differentiel.xml"),
    ),
    (
        "CDGVAUCL",
        "cdg-groupe.xml",
        include_bytes!("../demo/cdg-groupe.xml"),
    ),
    // The first agent again, with another first name and birth date: rejected (§6.3).
    (
        "SOFIVAL",
        "declaration-rectificative.xml",
        include_bytes!("../demo/declaration-rectificative.xml"),
    ),
];

fn siret(s: &str) -> Siret {
    Siret::parse(s).expect("example SIRET")
}

/// Loads the demo set; returns the accounts created (to print once), or `None` when the
/// base already had collectivités.
pub fn load(shared: &Shared) -> Result<Option<String>, PlatformError> {
    let mut out = String::new();
    let created = shared.with_store(|s| {
        if !s.collectivites()?.is_empty() {
            return Ok(false);
        }
        s.add_collectivite(&siret(SDIS), "SDIS de la Vauclaire", None)?;
        s.add_collectivite(&siret(CDG), "CDG de la Vauclaire", None)?;
        s.add_collectivite(
            &siret(COMMUNE),
            "Commune de Rochebrune-sur-Aube",
            Some(&siret(CDG)),
        )?;
        s.add_collectivite(
            &siret(CCAS),
            "CCAS de Rochebrune-sur-Aube",
            Some(&siret(CDG)),
        )?;
        Ok(true)
    })?;
    if !created {
        return Ok(None);
    }
    out.push_str("Données de démonstration chargées. Comptes créés (mots de passe affichés une seule fois) :\n");
    for (code, nom, colls) in [
        ("SOFIVAL", "Sofival Assurances", vec![SDIS]),
        ("CDGVAUCL", "CDG de la Vauclaire", vec![CDG, COMMUNE, CCAS]),
    ] {
        let pw = auth::password();
        let hash = auth::hash_password(&pw);
        shared.with_store(|s| {
            s.add_emetteur(code, Some(nom))?;
            s.set_emetteur_password(code, &hash)?;
            for c in &colls {
                let c = atmp_model::Siret::parse(c).expect("the demo's SIRETs are valid");
                s.set_autorisation(code, &c, Autorisation::Accordee, Some("démonstration"))?;
            }
            Ok(())
        })?;
        out.push_str(&format!("  émetteur FTPS {code} : {pw}\n"));
    }
    for (login, role, coll) in [
        ("sdis", Role::CollectiviteAdmin, Some(SDIS)),
        ("cdg", Role::Cdg, Some(CDG)),
        ("commune", Role::Collectivite, Some(COMMUNE)),
    ] {
        let pw = auth::password();
        // A printed password is a one-time password like any other: changed at first login.
        let u = NewUtilisateur {
            login: login.into(),
            password_hash: auth::hash_password(&pw),
            role,
            collectivite: coll.map(Into::into),
            email: Some(format!("{login}@demo.invalid")),
            doit_changer: true,
        };
        shared.with_store(|s| s.add_utilisateur(&u).map(|_| ()))?;
        out.push_str(&format!(
            "  utilisateur web {login} ({}) : {pw}\n",
            role.libelle()
        ));
    }
    // Generated files for the SDIS, then the examples: enough rows to page through.
    let mut files: Vec<(String, String, Vec<u8>)> = Vec::new();
    for i in 0..24u64 {
        let mut buf = Vec::new();
        let opts = atmp_flux::gen::GenOptions {
            agents: 2 + i % 3,
            collectivites: vec![siret(SDIS)],
            emetteur: "SOFIVAL".into(),
            date_creation: format!("2025-{:02}-{:02}T08:00:00", 1 + i % 12, 1 + i),
            seed: 1000 + i,
            cdg: None,
        };
        atmp_flux::gen::generate(&mut buf, &opts)?;
        files.push(("SOFIVAL".into(), format!("demo-{:02}.xml", i + 1), buf));
    }
    for (e, name, bytes) in FILES {
        files.push((e.into(), name.into(), bytes.to_vec()));
    }
    let n = files.len();
    for (e, name, bytes) in files {
        let p = shared.spool_path(&e, &name);
        std::fs::write(&p, &bytes)?;
        crate::worker::make_read_only(&p)?;
        crate::ftps::queue_received(shared, &e, &name, &p, bytes.len() as u64)?;
    }
    out.push_str(&format!("  {n} fichiers mis en file d'intégration.\n"));
    Ok(Some(out))
}
