//! Administration: the senders, their FTPS accounts and the collectivités' consents.

#[allow(unused_imports)]
use super::*;

pub(in crate::web) struct EmetteurLine {
    code: String,
    nom: String,
    ftps: bool,
    actif: bool,
    /// The last FTPS login, in French, with how long ago.
    derniere: String,
    autorisees: String,
}

#[derive(Template)]
#[template(path = "emetteurs.html")]
pub(in crate::web) struct EmetteursT {
    user: Option<NavUser>,
    message: Option<String>,
    error: Option<String>,
    csrf: String,
    emetteurs: Vec<EmetteurLine>,
    /// The senders as the FTPS password form offers them: (code, "code — name").
    choix: Vec<(String, String)>,
    /// The creation form and the FTPS password form, as typed when refused.
    creation: Saisie,
    ftps: Saisie,
}

pub(in crate::web) async fn emetteurs_page(
    app: &App,
    a: &Auth,
    message: Option<String>,
    error: Option<String>,
    (creation, ftps): (Saisie, Saisie),
) -> Response {
    let list = match db(app, |s| {
        let mut out = Vec::new();
        for e in s.emetteurs()? {
            let ftps = s.emetteur_password(&e.code)?.is_some();
            out.push((e, ftps));
        }
        Ok(out)
    })
    .await
    {
        Ok(l) => l,
        Err(r) => return r,
    };
    let choix = list.iter().map(|(e, _)| sender_choice(e)).collect();
    let emetteurs = list
        .into_iter()
        .map(|(e, ftps)| EmetteurLine {
            actif: e.actif,
            derniere: match &e.derniere_connexion {
                Some(d) => super::suivi::fr_datetime(d),
                None => "jamais".into(),
            },
            autorisees: e
                .autorisations
                .iter()
                .filter(|x| x.1 == Autorisation::Accordee)
                .map(|x| x.0.clone())
                .collect::<Vec<_>>()
                .join(", "),
            code: e.code,
            nom: e.nom.unwrap_or_default(),
            ftps,
        })
        .collect();
    let t = EmetteursT {
        user: Some(a.nav()),
        message,
        error,
        csrf: a.csrf.clone(),
        emetteurs,
        choix,
        creation,
        ftps,
    };
    render(status_for(&t.error), &t)
}

pub(in crate::web) async fn emetteurs(State(app): State<App>, a: Auth) -> Response {
    if let Err(r) = a.admin() {
        return r;
    }
    emetteurs_page(&app, &a, None, None, Default::default()).await
}

#[derive(Deserialize)]
pub(in crate::web) struct EmetteurForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    code: String,
    #[serde(default)]
    nom: String,
    #[serde(default)]
    password: String,
}

pub(in crate::web) async fn emetteur_add(
    State(app): State<App>,
    a: Auth,
    Form(f): Form<EmetteurForm>,
) -> Response {
    if let Err(r) = a.admin().and_then(|_| a.check(&f.csrf)) {
        return r;
    }
    let code = f.code.trim().to_string();
    let mut saisie = Saisie::new().avec("code", &f.code).avec("nom", &f.nom);
    let r: Issue = if !crate::ftps::valid_code(&code) {
        Err((
            "code",
            "Indiquez un code de 64 caractères au plus, fait de lettres, de chiffres, - et _ (c'est l'identifiant FTPS de l'émetteur).".to_string(),
        ))
    } else if f.nom.trim().chars().count() > 200 {
        Err(("nom", "Le nom a 200 caractères au plus.".to_string()))
    } else if let Some(p) = auth::password_problem(&f.password) {
        Err(("password", capitalize(p)))
    } else {
        let pw = f.password.clone();
        let hash = tokio::task::spawn_blocking(move || auth::hash_password(&pw))
            .await
            .unwrap_or_default();
        let nom = f.nom.trim().to_string();
        let detail = format!("création de l'émetteur {code} et de son compte FTPS");
        change(&app, &a, "emetteur", detail, move |st| {
            if st.emetteur(&code)?.is_some() {
                return Err(StoreError::Invalid(format!(
                    "l'émetteur {code} existe déjà : choisissez un autre code"
                )));
            }
            st.add_emetteur(&code, (!nom.is_empty()).then_some(nom.as_str()))?;
            st.set_emetteur_password(&code, &hash)?;
            Ok(format!("Émetteur {code} créé, avec son compte FTPS."))
        })
        .await
        .map_err(|e| ("code", e))
    };
    let (m, e) = outcome(r, &mut saisie, "Émetteur non créé");
    emetteurs_page(&app, &a, m, e, (saisie, Saisie::new())).await
}

#[derive(Deserialize)]
pub(in crate::web) struct EmetteurActifForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    code: String,
    #[serde(default)]
    actif: u8,
}

/// Disables a sender (it can no longer log in over FTPS; what it sent stays) or enables it
/// again.
pub(in crate::web) async fn emetteur_actif(
    State(app): State<App>,
    a: Auth,
    Form(f): Form<EmetteurActifForm>,
) -> Response {
    if let Err(r) = a.admin().and_then(|_| a.check(&f.csrf)) {
        return r;
    }
    let code = f.code.trim().to_string();
    let actif = f.actif == 1;
    let detail = format!(
        "{} de l'émetteur {code}",
        if actif {
            "réactivation"
        } else {
            "désactivation"
        }
    );
    let r = change(&app, &a, "emetteur", detail, move |st| {
        if !st.set_emetteur_actif(&code, actif)? {
            return Err(StoreError::Invalid(format!("aucun émetteur {code}")));
        }
        Ok(if actif {
            format!("Émetteur {code} réactivé : il peut de nouveau se connecter en FTPS.")
        } else {
            format!("Émetteur {code} désactivé : il ne peut plus se connecter en FTPS ; ses fichiers et ses imports restent.")
        })
    })
    .await;
    let (m, e) = split(r);
    emetteurs_page(&app, &a, m, e, Default::default()).await
}

pub(in crate::web) async fn emetteur_password(
    State(app): State<App>,
    a: Auth,
    Form(f): Form<EmetteurForm>,
) -> Response {
    if let Err(r) = a.admin().and_then(|_| a.check(&f.csrf)) {
        return r;
    }
    let code = f.code.trim().to_string();
    let mut saisie = Saisie::new().avec("code", &f.code);
    let r: Issue = if let Some(p) = auth::password_problem(&f.password) {
        Err(("password", capitalize(p)))
    } else {
        let pw = f.password.clone();
        let hash = tokio::task::spawn_blocking(move || auth::hash_password(&pw))
            .await
            .unwrap_or_default();
        let detail = format!("nouveau mot de passe FTPS de l'émetteur {code}");
        change(&app, &a, "emetteur", detail, move |st| {
            if st.emetteur(&code)?.is_none() {
                return Err(StoreError::Invalid(format!(
                    "aucun émetteur {code} : choisissez-en un dans la liste"
                )));
            }
            st.set_emetteur_password(&code, &hash)?;
            Ok(format!("Mot de passe FTPS de {code} changé."))
        })
        .await
        .map_err(|e| ("code", e))
    };
    let (m, e) = outcome(r, &mut saisie, "Mot de passe FTPS non changé");
    emetteurs_page(&app, &a, m, e, (Saisie::new(), saisie)).await
}

#[derive(Template)]
#[template(path = "autorisations.html")]
pub(in crate::web) struct AutorisationsT {
    user: Option<NavUser>,
    message: Option<String>,
    error: Option<String>,
    csrf: String,
    autorisations: Vec<(String, String, &'static str, String, String)>,
    /// The forms' choices: senders (code, label), collectivités (SIRET, label).
    emetteurs: Vec<(String, String)>,
    collectivites: Vec<(String, String)>,
    /// The decisions a form may record: (code, label).
    decisions: Vec<(String, String)>,
    /// The form, as typed when refused.
    saisie: Saisie,
}

pub(in crate::web) async fn autorisations_page(
    app: &App,
    a: &Auth,
    message: Option<String>,
    error: Option<String>,
    saisie: Saisie,
) -> Response {
    let (list, colls) = match db(app, |s| Ok((s.emetteurs()?, s.collectivites()?))).await {
        Ok(l) => l,
        Err(r) => return r,
    };
    let noms: std::collections::HashMap<String, String> = colls
        .iter()
        .map(|c| (c.siret.as_str().to_string(), c.nom.clone()))
        .collect();
    let emetteurs = list.iter().map(sender_choice).collect();
    let mut rows = Vec::new();
    for e in list {
        for (siret, st, date, reference) in e.autorisations {
            rows.push((
                e.code.clone(),
                match noms.get(&siret) {
                    Some(n) => format!("{n} ({siret})"),
                    None => siret,
                },
                match st {
                    Autorisation::Accordee => "accordée",
                    Autorisation::Refusee => "refusée",
                    Autorisation::Retiree => "retirée",
                },
                fr_datetime(&date),
                reference.unwrap_or_default(),
            ));
        }
    }
    let status = status_for(&error);
    let t = AutorisationsT {
        user: Some(a.nav()),
        message,
        error,
        csrf: a.csrf.clone(),
        autorisations: rows,
        emetteurs,
        collectivites: choices(&colls),
        decisions: [
            ("accordee", "autorisation accordée"),
            ("refusee", "refus"),
            ("retiree", "retrait"),
        ]
        .map(|(c, l)| (c.to_string(), l.to_string()))
        .to_vec(),
        saisie,
    };
    render(status, &t)
}

pub(in crate::web) async fn autorisations(State(app): State<App>, a: Auth) -> Response {
    if let Err(r) = a.admin() {
        return r;
    }
    autorisations_page(&app, &a, None, None, Saisie::new()).await
}

#[derive(Deserialize)]
pub(in crate::web) struct AutorisationForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    emetteur: String,
    #[serde(default)]
    siret: String,
    #[serde(default)]
    statut: String,
    #[serde(default)]
    reference: String,
}

pub(in crate::web) async fn autorisation_set(
    State(app): State<App>,
    a: Auth,
    Form(f): Form<AutorisationForm>,
) -> Response {
    if let Err(r) = a.admin().and_then(|_| a.check(&f.csrf)) {
        return r;
    }
    let mut saisie = Saisie::new()
        .avec("emetteur", &f.emetteur)
        .avec("siret", &f.siret)
        .avec("statut", &f.statut)
        .avec("reference", &f.reference);
    let r: Issue = match (Autorisation::parse(&f.statut), siret(&f.siret, "SIRET")) {
        (None, _) => Err((
            "statut",
            "Choisissez une décision dans la liste.".to_string(),
        )),
        (_, Err(e)) => Err(("siret", e)),
        (Some(_), Ok(_)) if f.reference.trim().chars().count() > 200 => Err((
            "reference",
            "La référence a 200 caractères au plus.".to_string(),
        )),
        (Some(st), Ok(s)) => {
            let (e, reference) = (
                f.emetteur.trim().to_string(),
                f.reference.trim().to_string(),
            );
            let detail = format!(
                "autorisation de {e} pour {s} : {} (référence « {reference} »)",
                st.code()
            );
            let e2 = e.clone();
            let known = db(&app, move |store| store.emetteur(&e2)).await;
            match known {
                Err(r) => return r,
                Ok(None) => Err((
                    "emetteur",
                    format!("L'émetteur « {e} » n'existe pas : choisissez-en un dans la liste."),
                )),
                Ok(Some(_)) => change(&app, &a, "autorisation", detail, move |store| {
                    store.set_autorisation(
                        &e,
                        &s,
                        st,
                        (!reference.is_empty()).then_some(reference.as_str()),
                    )?;
                    Ok(format!(
                        "Décision enregistrée pour {e} et la collectivité {s}."
                    ))
                })
                .await
                .map_err(|e| ("siret", e)),
            }
        }
    };
    let (m, e) = outcome(r, &mut saisie, "Décision non enregistrée");
    autorisations_page(&app, &a, m, e, saisie).await
}
