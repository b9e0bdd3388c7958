//! The web: administration — collectivités, services, senders and their authorisations,
//! users, nomenclatures, the audit trail.

#[allow(unused_imports)]
use super::*;

// ---------------------------------------------------------------------------------------
// Administration (platform administrators only)

#[derive(Template)]
#[template(path = "collectivites.html")]
pub(super) struct CollectivitesT {
    user: Option<NavUser>,
    message: Option<String>,
    error: Option<String>,
    csrf: String,
    collectivites: Vec<atmp_store::Collectivite>,
    /// The creation and attachment forms (platform administrators only).
    formulaires: bool,
    /// Every collectivité by name, "name (SIRET)", for the forms' choices.
    choix: Vec<(String, String)>,
}

/// Collectivités as a form offers them: (SIRET, "name (SIRET)"), by name.
pub(super) fn choices(list: &[atmp_store::Collectivite]) -> Vec<(String, String)> {
    let mut v: Vec<&atmp_store::Collectivite> = list.iter().collect();
    v.sort_by_key(|c| c.nom.to_lowercase());
    v.into_iter()
        .map(|c| {
            (
                c.siret.as_str().to_string(),
                format!("{} ({})", c.nom, c.siret.as_str()),
            )
        })
        .collect()
}

pub(super) async fn collectivites_page(
    app: &App,
    a: &Auth,
    message: Option<String>,
    error: Option<String>,
) -> Response {
    let list = match db(app, |s| s.collectivites()).await {
        Ok(l) => l,
        Err(r) => return r,
    };
    let status = status_for(&error);
    let t = CollectivitesT {
        user: Some(a.nav()),
        message,
        error,
        csrf: a.csrf.clone(),
        choix: choices(&list),
        collectivites: list.into_iter().filter(|c| a.administers(c)).collect(),
        formulaires: a.user.role == Role::Plateforme,
    };
    render(status, &t)
}

pub(super) async fn collectivites(State(app): State<App>, a: Auth) -> Response {
    if let Err(r) = a.gestion() {
        return r;
    }
    collectivites_page(&app, &a, None, None).await
}

#[derive(Deserialize)]
pub(super) struct CollectiviteForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    siret: String,
    #[serde(default)]
    nom: String,
    #[serde(default)]
    cdg: String,
}

/// Runs an admin change; the page shows its message or its error.
pub(super) async fn change(
    app: &App,
    who: &Auth,
    action: &'static str,
    detail: String,
    f: impl FnOnce(&mut dyn atmp_store::Store) -> Result<String, StoreError> + Send + 'static,
) -> Result<String, String> {
    let app2 = app.clone();
    match tokio::task::spawn_blocking(move || app2.with_store(f)).await {
        Ok(Ok(m)) => {
            // Every management change is in the audit trail (never the message: it may hold
            // a one-time password).
            who.audit(app, action, detail).await;
            Ok(m)
        }
        Ok(Err(StoreError::Invalid(m))) => Err(capitalize(&m)),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "admin change failed");
            Err("La modification n'a pas pu être enregistrée.".into())
        }
        Err(_) => Err("La modification n'a pas pu être enregistrée.".into()),
    }
}

pub(super) fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect::<String>() + ".",
        None => String::new(),
    }
}

pub(super) fn siret(s: &str, what: &str) -> Result<Siret, String> {
    Siret::parse(s.trim()).map_err(|e| format!("{what} « {} » : {e}.", s.trim()))
}

/// The collectivité a SIRET typed in a form or a URL names; `None` when it is malformed or
/// unknown (both answer the same to the user: no such collectivité).
async fn collectivite_named(
    app: &App,
    text: &str,
) -> Result<Option<atmp_store::Collectivite>, Response> {
    let Ok(siret) = Siret::parse(text) else {
        return Ok(None);
    };
    db(app, move |s| s.collectivite(&siret)).await
}

pub(super) async fn collectivite_add(
    State(app): State<App>,
    a: Auth,
    Form(f): Form<CollectiviteForm>,
) -> Response {
    if let Err(r) = a.admin().and_then(|_| a.check(&f.csrf)) {
        return r;
    }
    let r = async {
        let s = siret(&f.siret, "SIRET")?;
        let cdg = if f.cdg.trim().is_empty() {
            None
        } else {
            Some(siret(&f.cdg, "SIRET du CDG")?)
        };
        let nom = f.nom.trim().to_string();
        if nom.is_empty() {
            return Err("Le nom est obligatoire.".to_string());
        }
        let detail = format!("création de la collectivité {}", s.as_str());
        change(&app, &a, "collectivite", detail, move |st| {
            if st.collectivite(&s)?.is_some() {
                return Err(StoreError::Invalid(format!(
                    "la collectivité {} existe déjà",
                    s.as_str()
                )));
            }
            st.add_collectivite(&s, &nom, cdg.as_ref())?;
            Ok(format!("Collectivité {} créée.", s.as_str()))
        })
        .await
    }
    .await;
    let (m, e) = split(r);
    collectivites_page(&app, &a, m, e).await
}

pub(super) fn split(r: Result<String, String>) -> (Option<String>, Option<String>) {
    match r {
        Ok(m) => (Some(m), None),
        Err(e) => (None, Some(e)),
    }
}

pub(super) async fn collectivite_attach(
    State(app): State<App>,
    a: Auth,
    Form(f): Form<CollectiviteForm>,
) -> Response {
    if let Err(r) = a.admin().and_then(|_| a.check(&f.csrf)) {
        return r;
    }
    let r = async {
        let s = siret(&f.siret, "SIRET")?;
        let cdg = if f.cdg.trim().is_empty() {
            None
        } else {
            Some(siret(&f.cdg, "SIRET du CDG")?)
        };
        let detail = match &cdg {
            Some(c) => format!("rattachement de {s} au CDG « {c} »"),
            None => format!("rattachement de {s} au CDG « »"),
        };
        change(&app, &a, "collectivite", detail, move |st| {
            st.set_cdg(&s, cdg.as_ref())?;
            Ok(match &cdg {
                None => format!("Collectivité {s} détachée de son CDG."),
                Some(c) => format!("Collectivité {s} rattachée au CDG {c}."),
            })
        })
        .await
    }
    .await;
    let (m, e) = split(r);
    collectivites_page(&app, &a, m, e).await
}

#[derive(Template)]
#[template(path = "services.html")]
pub(super) struct ServicesT {
    user: Option<NavUser>,
    message: Option<String>,
    error: Option<String>,
    csrf: String,
    siret: String,
    nom: String,
    services: Vec<(i64, String, Option<String>)>,
}

pub(super) async fn services_page(
    app: &App,
    a: &Auth,
    siret: String,
    message: Option<String>,
    error: Option<String>,
) -> Response {
    let s2 = Siret::parse(&siret).ok();
    let found = match db(app, move |s| {
        let Some(c) = s2.map(|s2| s.collectivite(&s2)).transpose()?.flatten() else {
            return Ok(None);
        };
        let services = s.services(c.id)?;
        Ok(Some((c, services)))
    })
    .await
    {
        Ok(v) => v,
        Err(r) => return r,
    };
    let Some((c, services)) = found.filter(|(c, _)| a.administers(c)) else {
        return not_found();
    };
    let nom = c.nom;
    let t = ServicesT {
        user: Some(a.nav()),
        message,
        error,
        csrf: a.csrf.clone(),
        siret,
        nom,
        services,
    };
    render(StatusCode::OK, &t)
}

pub(super) async fn services(
    State(app): State<App>,
    a: Auth,
    Path(siret): Path<String>,
) -> Response {
    if let Err(r) = a.gestion() {
        return r;
    }
    services_page(&app, &a, siret, None, None).await
}

#[derive(Deserialize)]
pub(super) struct ServiceForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    code: String,
    #[serde(default)]
    libelle: String,
}

pub(super) async fn service_add(
    State(app): State<App>,
    a: Auth,
    Path(siret): Path<String>,
    Form(f): Form<ServiceForm>,
) -> Response {
    if let Err(r) = a.gestion().and_then(|_| a.check(&f.csrf)) {
        return r;
    }
    let known = match collectivite_named(&app, &siret).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    if !known.as_ref().is_some_and(|c| a.administers(c)) {
        return not_found();
    }
    let code = f.code.trim().to_string();
    let libelle = f.libelle.trim().to_string();
    let Ok(s2) = Siret::parse(&siret) else {
        return not_found();
    };
    let r = if code.is_empty() || code.len() > 50 {
        Err("Le code du service est obligatoire (50 caractères au plus).".to_string())
    } else {
        let detail = format!("service {code} de la collectivité {siret}");
        change(&app, &a, "service", detail, move |st| {
            let c = st
                .collectivite(&s2)?
                .ok_or_else(|| StoreError::Invalid(format!("la collectivité {s2} n'existe pas")))?;
            if st.add_service(
                c.id,
                &code,
                (!libelle.is_empty()).then_some(libelle.as_str()),
            )? {
                Ok(format!("Service {code} ajouté."))
            } else {
                Err(StoreError::Invalid(format!(
                    "le service {code} existe déjà"
                )))
            }
        })
        .await
    };
    let (m, e) = split(r);
    services_page(&app, &a, siret, m, e).await
}

pub(super) struct EmetteurLine {
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
pub(super) struct EmetteursT {
    user: Option<NavUser>,
    message: Option<String>,
    error: Option<String>,
    csrf: String,
    emetteurs: Vec<EmetteurLine>,
}

pub(super) async fn emetteurs_page(
    app: &App,
    a: &Auth,
    message: Option<String>,
    error: Option<String>,
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
    };
    render(StatusCode::OK, &t)
}

pub(super) async fn emetteurs(State(app): State<App>, a: Auth) -> Response {
    if let Err(r) = a.admin() {
        return r;
    }
    emetteurs_page(&app, &a, None, None).await
}

#[derive(Deserialize)]
pub(super) struct EmetteurForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    code: String,
    #[serde(default)]
    nom: String,
    #[serde(default)]
    password: String,
}

pub(super) async fn emetteur_add(
    State(app): State<App>,
    a: Auth,
    Form(f): Form<EmetteurForm>,
) -> Response {
    if let Err(r) = a.admin().and_then(|_| a.check(&f.csrf)) {
        return r;
    }
    let code = f.code.trim().to_string();
    let r = if !crate::ftps::valid_code(&code) {
        Err(
            "Le code de l'émetteur ne peut contenir que des lettres, des chiffres, - et _."
                .to_string(),
        )
    } else if let Some(p) = auth::password_problem(&f.password) {
        Err(capitalize(p))
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
                    "l'émetteur {code} existe déjà"
                )));
            }
            st.add_emetteur(&code, (!nom.is_empty()).then_some(nom.as_str()))?;
            st.set_emetteur_password(&code, &hash)?;
            Ok(format!("Émetteur {code} créé, avec son compte FTPS."))
        })
        .await
    };
    let (m, e) = split(r);
    emetteurs_page(&app, &a, m, e).await
}

#[derive(Deserialize)]
pub(super) struct EmetteurActifForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    code: String,
    #[serde(default)]
    actif: u8,
}

/// Disables a sender (it can no longer log in over FTPS; what it sent stays) or enables it
/// again.
pub(super) async fn emetteur_actif(
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
    emetteurs_page(&app, &a, m, e).await
}

pub(super) async fn emetteur_password(
    State(app): State<App>,
    a: Auth,
    Form(f): Form<EmetteurForm>,
) -> Response {
    if let Err(r) = a.admin().and_then(|_| a.check(&f.csrf)) {
        return r;
    }
    let code = f.code.trim().to_string();
    let r = if let Some(p) = auth::password_problem(&f.password) {
        Err(capitalize(p))
    } else {
        let pw = f.password.clone();
        let hash = tokio::task::spawn_blocking(move || auth::hash_password(&pw))
            .await
            .unwrap_or_default();
        let detail = format!("nouveau mot de passe FTPS de l'émetteur {code}");
        change(&app, &a, "emetteur", detail, move |st| {
            st.set_emetteur_password(&code, &hash)?;
            Ok(format!("Mot de passe FTPS de {code} changé."))
        })
        .await
    };
    let (m, e) = split(r);
    emetteurs_page(&app, &a, m, e).await
}

#[derive(Template)]
#[template(path = "autorisations.html")]
pub(super) struct AutorisationsT {
    user: Option<NavUser>,
    message: Option<String>,
    error: Option<String>,
    csrf: String,
    autorisations: Vec<(String, String, &'static str, String, String)>,
    /// The forms' choices: senders (code, label), collectivités (SIRET, label).
    emetteurs: Vec<(String, String)>,
    collectivites: Vec<(String, String)>,
}

pub(super) async fn autorisations_page(
    app: &App,
    a: &Auth,
    message: Option<String>,
    error: Option<String>,
) -> Response {
    let (list, colls) = match db(app, |s| Ok((s.emetteurs()?, s.collectivites()?))).await {
        Ok(l) => l,
        Err(r) => return r,
    };
    let noms: std::collections::HashMap<String, String> = colls
        .iter()
        .map(|c| (c.siret.as_str().to_string(), c.nom.clone()))
        .collect();
    let emetteurs = list
        .iter()
        .map(|e| {
            (
                e.code.clone(),
                match &e.nom {
                    Some(n) => format!("{} — {n}", e.code),
                    None => e.code.clone(),
                },
            )
        })
        .collect();
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
    };
    render(status, &t)
}

pub(super) async fn autorisations(State(app): State<App>, a: Auth) -> Response {
    if let Err(r) = a.admin() {
        return r;
    }
    autorisations_page(&app, &a, None, None).await
}

#[derive(Deserialize)]
pub(super) struct AutorisationForm {
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

pub(super) async fn autorisation_set(
    State(app): State<App>,
    a: Auth,
    Form(f): Form<AutorisationForm>,
) -> Response {
    if let Err(r) = a.admin().and_then(|_| a.check(&f.csrf)) {
        return r;
    }
    let r = match (Autorisation::parse(&f.statut), siret(&f.siret, "SIRET")) {
        (None, _) => Err("Décision inconnue.".to_string()),
        (_, Err(e)) => Err(e),
        (Some(st), Ok(s)) => {
            let (e, reference) = (
                f.emetteur.trim().to_string(),
                f.reference.trim().to_string(),
            );
            let detail = format!(
                "autorisation de {e} pour {s} : {} (référence « {reference} »)",
                st.code()
            );
            change(&app, &a, "autorisation", detail, move |store| {
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
        }
    };
    let (m, e) = split(r);
    autorisations_page(&app, &a, m, e).await
}

pub(super) struct UtilisateurLine {
    id: i64,
    login: String,
    role: &'static str,
    collectivite: String,
    email: String,
    actif: bool,
}

#[derive(Template)]
#[template(path = "utilisateurs.html")]
pub(super) struct UtilisateursT {
    user: Option<NavUser>,
    message: Option<String>,
    error: Option<String>,
    csrf: String,
    utilisateurs: Vec<UtilisateurLine>,
    roles: Vec<(&'static str, &'static str)>,
    /// The collectivités a new user may belong to: (SIRET, "name (SIRET)").
    collectivites: Vec<(String, String)>,
    /// The platform may create a user of no collectivité.
    sans_collectivite: bool,
    /// What the creation form shows: the typed values after a refusal.
    saisie: UtilisateurSaisie,
}

/// The values of the user creation form, kept when it is refused, with the field at fault.
#[derive(Default)]
pub(super) struct UtilisateurSaisie {
    login: String,
    role: String,
    siret: String,
    email: String,
    /// (field, what to do).
    erreur: Option<(&'static str, String)>,
}

impl UtilisateurSaisie {
    /// The error of this field, if it is the one at fault.
    fn erreur_de(&self, champ: &str) -> Option<&str> {
        self.erreur
            .as_ref()
            .filter(|(c, _)| *c == champ)
            .map(|(_, m)| m.as_str())
    }
}

/// The users `a` manages, with the collectivités it administers (by SIRET).
pub(super) fn managed(
    a: &Auth,
    users: Vec<Utilisateur>,
    collectivites: &[atmp_store::Collectivite],
) -> Vec<Utilisateur> {
    users
        .into_iter()
        .filter(|u| manages(a, u, collectivites))
        .collect()
}

/// Whether `a` manages user `u`: it administers `u`'s collectivité and may give `u`'s role.
pub(super) fn manages(
    a: &Auth,
    u: &Utilisateur,
    collectivites: &[atmp_store::Collectivite],
) -> bool {
    let c = u
        .collectivite_siret
        .as_deref()
        .and_then(|s| collectivites.iter().find(|c| c.siret.as_str() == s));
    a.may_grant(u.role, c)
}

pub(super) async fn utilisateurs_page(
    app: &App,
    a: &Auth,
    message: Option<String>,
    error: Option<String>,
) -> Response {
    let saisie = UtilisateurSaisie {
        siret: if a.user.role == Role::Plateforme {
            String::new()
        } else {
            a.user.collectivite_siret.clone().unwrap_or_default()
        },
        ..Default::default()
    };
    utilisateurs_page_with(app, a, message, error, saisie).await
}

pub(super) async fn utilisateurs_page_with(
    app: &App,
    a: &Auth,
    message: Option<String>,
    error: Option<String>,
    saisie: UtilisateurSaisie,
) -> Response {
    let (list, collectivites) = match db(app, |s| Ok((s.utilisateurs()?, s.collectivites()?))).await
    {
        Ok(l) => l,
        Err(r) => return r,
    };
    let status = status_for(&error);
    let t = UtilisateursT {
        user: Some(a.nav()),
        message,
        error,
        csrf: a.csrf.clone(),
        utilisateurs: managed(a, list, &collectivites)
            .into_iter()
            .map(|u| UtilisateurLine {
                id: u.id,
                login: u.login,
                role: u.role.libelle(),
                collectivite: match (u.collectivite_nom, u.collectivite_siret) {
                    (Some(n), Some(s)) => format!("{n} ({s})"),
                    _ => "—".into(),
                },
                email: u.email.unwrap_or_default(),
                actif: u.actif,
            })
            .collect(),
        roles: Role::ALL
            .iter()
            .filter(|r| match a.user.role {
                Role::Plateforme => true,
                Role::Cdg => **r != Role::Plateforme,
                _ => matches!(r, Role::CollectiviteAdmin | Role::Collectivite),
            })
            .map(|r| (r.code(), r.libelle()))
            .collect(),
        collectivites: {
            let mut c: Vec<&atmp_store::Collectivite> =
                collectivites.iter().filter(|c| a.administers(c)).collect();
            c.sort_by_key(|c| c.nom.to_lowercase());
            c.into_iter()
                .map(|c| {
                    (
                        c.siret.as_str().to_string(),
                        format!("{} ({})", c.nom, c.siret.as_str()),
                    )
                })
                .collect()
        },
        sans_collectivite: a.user.role == Role::Plateforme,
        saisie,
    };
    render(status, &t)
}

pub(super) async fn utilisateurs(State(app): State<App>, a: Auth) -> Response {
    if let Err(r) = a.gestion() {
        return r;
    }
    utilisateurs_page(&app, &a, None, None).await
}

#[derive(Deserialize)]
pub(super) struct UtilisateurForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    login: String,
    #[serde(default)]
    role: String,
    #[serde(default)]
    siret: String,
    #[serde(default)]
    email: String,
}

pub(super) async fn utilisateur_add(
    State(app): State<App>,
    a: Auth,
    Form(f): Form<UtilisateurForm>,
) -> Response {
    if let Err(r) = a.gestion().and_then(|_| a.check(&f.csrf)) {
        return r;
    }
    let siret = f.siret.trim().to_string();
    let target = if siret.is_empty() {
        None
    } else {
        match collectivite_named(&app, &siret).await {
            Ok(c) => c,
            Err(r) => return r,
        }
    };
    let email = if f.email.trim().is_empty() {
        Ok(None)
    } else {
        crate::mail::parse_email(&f.email).map(Some)
    };
    let mut saisie = UtilisateurSaisie {
        login: f.login.trim().chars().take(64).collect(),
        role: f.role.clone(),
        siret: siret.clone(),
        email: f.email.trim().chars().take(254).collect(),
        erreur: None,
    };
    let login_problem = match f.login.trim() {
        "" => Some("Indiquez un identifiant.".to_string()),
        l if l.chars().count() > 64 => Some("L'identifiant a 64 caractères au plus.".to_string()),
        l if l.chars().any(|c| c.is_control() || c.is_whitespace()) => {
            Some("L'identifiant ne contient ni espace ni caractère de contrôle.".to_string())
        }
        _ => None,
    };
    let r = match Role::parse(&f.role) {
        _ if login_problem.is_some() => {
            saisie.erreur = login_problem.map(|m| ("login", m));
            Err("Utilisateur non créé : corrigez le champ signalé.".to_string())
        }
        None => {
            saisie.erreur = Some(("role", "Choisissez un rôle dans la liste.".into()));
            Err("Utilisateur non créé : corrigez le champ signalé.".to_string())
        }
        Some(_) if email.is_err() => {
            saisie.erreur = Some((
                "email",
                format!(
                    "{}. Saisissez une adresse de la forme nom@domaine.fr, ou laissez le champ vide.",
                    email.clone().unwrap_err()
                ),
            ));
            Err("Utilisateur non créé : corrigez le champ signalé.".to_string())
        }
        Some(role) if !a.may_grant(role, target.as_ref()) && a.user.role != Role::Plateforme => {
            saisie.erreur = Some((
                "siret",
                format!(
                    "Vous ne pouvez pas donner le rôle « {} » pour cette collectivité : choisissez-en une que vous administrez, ou un autre rôle.",
                    role.libelle()
                ),
            ));
            Err("Utilisateur non créé : corrigez le champ signalé.".to_string())
        }
        Some(role) => {
            let pw = auth::password();
            let p2 = pw.clone();
            let hash = tokio::task::spawn_blocking(move || auth::hash_password(&p2))
                .await
                .unwrap_or_default();
            let u = NewUtilisateur {
                login: f.login.trim().to_string(),
                password_hash: hash,
                role,
                collectivite: (!siret.is_empty()).then_some(siret),
                email: email.clone().ok().flatten(),
                doit_changer: true,
            };
            let detail = format!(
                "création de l'utilisateur {} (rôle {}{})",
                u.login,
                u.role.code(),
                u.collectivite
                    .as_deref()
                    .map(|c| format!(", collectivité {c}"))
                    .unwrap_or_default()
            );
            change(&app, &a, "utilisateur", detail, move |s| {
                let created = s.add_utilisateur(&u)?;
                Ok(format!(
                    "Utilisateur {} créé. Mot de passe à usage unique, affiché une seule fois : {pw}",
                    created.login
                ))
            })
            .await
        }
    };
    let (m, e) = split(r);
    if e.is_some() {
        if saisie.erreur.is_none() {
            // Refused by the base (a login taken…): said next to the login.
            saisie.erreur = e.clone().map(|m| ("login", m));
        }
        return utilisateurs_page_with(&app, &a, m, e, saisie).await;
    }
    utilisateurs_page(&app, &a, m, e).await
}

#[derive(Deserialize)]
pub(super) struct ResetForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    id: i64,
}

/// An administrator gives a user a new one-time password (shown once), to be changed at
/// the next login; the user's sessions are closed.
pub(super) async fn utilisateur_reinitialiser(
    State(app): State<App>,
    a: Auth,
    Form(f): Form<ResetForm>,
) -> Response {
    if let Err(r) = a.gestion().and_then(|_| a.check(&f.csrf)) {
        return r;
    }
    let (target, collectivites) = match db(&app, move |s| {
        Ok((s.utilisateur_by_id(f.id)?, s.collectivites()?))
    })
    .await
    {
        Ok(v) => v,
        Err(r) => return r,
    };
    let Some(target) = target.filter(|u| manages(&a, u, &collectivites)) else {
        return not_found();
    };
    let r = if target.id == a.user.id {
        Err("Pour votre propre compte, utilisez la page « Mot de passe ».".to_string())
    } else {
        let pw = auth::password();
        let p2 = pw.clone();
        let hash = tokio::task::spawn_blocking(move || auth::hash_password(&p2))
            .await
            .unwrap_or_default();
        let detail = format!(
            "réinitialisation du mot de passe de l'utilisateur {}",
            target.login
        );
        change(&app, &a, "utilisateur", detail, move |s| {
            s.set_utilisateur_password(target.id, &hash, true)?;
            s.delete_sessions_of(target.id, None)?;
            Ok(format!(
                "Mot de passe de {} réinitialisé ; ses sessions sont fermées. Mot de passe à usage unique, affiché une seule fois, à changer à la première connexion : {pw}",
                target.login
            ))
        })
        .await
    };
    let (m, e) = split(r);
    utilisateurs_page(&app, &a, m, e).await
}

#[derive(Deserialize)]
pub(super) struct ActifForm {
    #[serde(default)]
    csrf: String,
    // Defaults, so that a form missing a field is refused by the handler (its token, then
    // an unknown user), in French, rather than by the extractor in English.
    #[serde(default)]
    id: i64,
    #[serde(default)]
    actif: u8,
}

pub(super) async fn utilisateur_actif(
    State(app): State<App>,
    a: Auth,
    Form(f): Form<ActifForm>,
) -> Response {
    if let Err(r) = a.gestion().and_then(|_| a.check(&f.csrf)) {
        return r;
    }
    let (target, collectivites) = match db(&app, move |s| {
        Ok((s.utilisateur_by_id(f.id)?, s.collectivites()?))
    })
    .await
    {
        Ok(v) => v,
        Err(r) => return r,
    };
    let Some(target) = target.filter(|u| manages(&a, u, &collectivites)) else {
        return not_found();
    };
    let r = if target.id == a.user.id {
        Err("Vous ne pouvez pas désactiver votre propre compte.".to_string())
    } else {
        let detail = format!(
            "{} de l'utilisateur {}",
            if f.actif == 1 {
                "réactivation"
            } else {
                "désactivation"
            },
            target.login
        );
        change(&app, &a, "utilisateur", detail, move |s| {
            s.set_utilisateur_actif(target.id, f.actif == 1)?;
            Ok(if f.actif == 1 {
                "Utilisateur réactivé.".into()
            } else {
                "Utilisateur désactivé ; ses sessions sont fermées.".into()
            })
        })
        .await
    };
    let (m, e) = split(r);
    utilisateurs_page(&app, &a, m, e).await
}

#[derive(Template)]
#[template(path = "nomenclatures.html")]
pub(super) struct NomenclaturesT {
    user: Option<NavUser>,
    message: Option<String>,
    error: Option<String>,
    csrf: String,
    listes: Vec<(String, usize)>,
    versions: Vec<(String, String, i64, String)>,
}

pub(super) async fn nomenclatures_page(
    app: &App,
    a: &Auth,
    message: Option<String>,
    error: Option<String>,
) -> Response {
    let (entries, versions) = match db(app, |s| {
        Ok((s.nomenclature_entries()?, s.nomenclature_versions()?))
    })
    .await
    {
        Ok(v) => v,
        Err(r) => return r,
    };
    let mut listes: Vec<(String, usize)> = Vec::new();
    for e in entries {
        let n = e.nomenclature.name().to_string();
        match listes.last_mut() {
            Some((last, c)) if *last == n => *c += 1,
            _ => listes.push((n, 1)),
        }
    }
    let status = status_for(&error);
    let t = NomenclaturesT {
        user: Some(a.nav()),
        message,
        error,
        csrf: a.csrf.clone(),
        listes,
        versions: versions
            .into_iter()
            .rev()
            .map(|(v, s, n, at)| (v, s, n, fr_datetime(&at)))
            .collect(),
    };
    render(status, &t)
}

#[derive(Template)]
#[template(path = "journal.html")]
pub(super) struct JournalT {
    user: Option<NavUser>,
    message: Option<String>,
    error: Option<String>,
    rows: Vec<(String, String, String, String, String)>,
    total: u64,
    first: u64,
    last: u64,
    page: u64,
    pages: u64,
}

/// Events per page of the audit trail.
pub(super) const AUDIT_PAGE: u64 = 100;

#[derive(Deserialize)]
pub(super) struct PageQuery {
    page: Option<u64>,
}

/// The audit trail, for the platform administrator only.
pub(super) async fn journal(
    State(app): State<App>,
    a: Auth,
    Query(q): Query<PageQuery>,
) -> Response {
    if let Err(r) = a.admin() {
        return r;
    }
    let page = q.page.unwrap_or(1).max(1);
    let (total, rows) = match db(&app, move |s| {
        s.audit_page((page - 1) * AUDIT_PAGE, AUDIT_PAGE)
    })
    .await
    {
        Ok(v) => v,
        Err(r) => return r,
    };
    let pages = total.div_ceil(AUDIT_PAGE).max(1);
    let first = if rows.is_empty() {
        0
    } else {
        (page - 1) * AUDIT_PAGE + 1
    };
    let t = JournalT {
        user: Some(a.nav()),
        message: None,
        error: None,
        first,
        last: first + rows.len().saturating_sub(1) as u64,
        rows: rows
            .into_iter()
            .map(|r| {
                (
                    fr_datetime(&r.at),
                    r.event.actor,
                    r.event.action,
                    r.event.detail,
                    r.event.address,
                )
            })
            .collect(),
        total,
        page,
        pages,
    };
    render(StatusCode::OK, &t)
}

pub(super) async fn nomenclatures(State(app): State<App>, a: Auth) -> Response {
    if let Err(r) = a.admin() {
        return r;
    }
    nomenclatures_page(&app, &a, None, None).await
}

pub(super) async fn nomenclature_load(
    State(app): State<App>,
    a: Auth,
    mut mp: Multipart,
) -> Response {
    if let Err(r) = a.admin() {
        return r;
    }
    let (mut csrf, mut version, mut bytes) = (String::new(), String::new(), None::<Vec<u8>>);
    loop {
        match mp.next_field().await {
            Ok(Some(field)) => {
                let name = field.name().unwrap_or("").to_string();
                let Ok(data) = field.bytes().await else {
                    return page_simple(
                        StatusCode::BAD_REQUEST,
                        Some(a.nav()),
                        "Envoi incomplet",
                        "Le fichier n'a pas été reçu en entier.",
                    );
                };
                match name.as_str() {
                    "csrf" => csrf = String::from_utf8_lossy(&data).into_owned(),
                    "version" => version = String::from_utf8_lossy(&data).trim().to_string(),
                    "fichier" => bytes = Some(data.to_vec()),
                    _ => {}
                }
            }
            Ok(None) => break,
            Err(_) => {
                return page_simple(
                    StatusCode::BAD_REQUEST,
                    Some(a.nav()),
                    "Envoi incomplet",
                    "Le formulaire n'a pas été reçu en entier.",
                );
            }
        }
    }
    if let Err(r) = a.check(&csrf) {
        return r;
    }
    let r = async {
        let bytes = bytes
            .filter(|b| !b.is_empty())
            .ok_or("Aucun fichier reçu.")?;
        if version.is_empty() {
            return Err("La version est obligatoire.".to_string());
        }
        let text = String::from_utf8(bytes.clone())
            .map_err(|_| "Le fichier doit être en UTF-8.".to_string())?;
        let entries = atmp_model::parse_csv(&text).map_err(|errs| {
            let first: Vec<String> = errs
                .iter()
                .take(5)
                .map(|e| format!("ligne {} : {}", e.line, e.message))
                .collect();
            format!(
                "{} ligne(s) invalide(s), rien n'a été chargé ({}).",
                errs.len(),
                first.join(" ; ")
            )
        })?;
        let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes));
        let n = entries.len();
        let detail =
            format!("chargement des nomenclatures, version {version}, {n} code(s), SHA-256 {sha}");
        change(&app, &a, "nomenclature", detail, move |s| {
            s.replace_nomenclatures(&entries, &version, &sha)?;
            Ok(format!("Version {version} chargée : {n} codes."))
        })
        .await
    }
    .await;
    let (m, e) = split(r);
    nomenclatures_page(&app, &a, m, e).await
}
