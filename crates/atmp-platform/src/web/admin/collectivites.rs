//! Administration: the collectivités, their CDG and their services.

#[allow(unused_imports)]
use super::*;

#[derive(Template)]
#[template(path = "collectivites.html")]
pub(in crate::web) struct CollectivitesT {
    user: Option<NavUser>,
    message: Option<String>,
    error: Option<String>,
    csrf: String,
    collectivites: Vec<atmp_store::Collectivite>,
    /// The creation and attachment forms (platform administrators only).
    formulaires: bool,
    /// Every collectivité by name, "name (SIRET)", for the forms' choices.
    choix: Vec<(String, String)>,
    /// The creation form and the attachment form, as typed when refused.
    creation: Saisie,
    rattachement: Saisie,
}

pub(in crate::web) async fn collectivites_page(
    app: &App,
    a: &Auth,
    message: Option<String>,
    error: Option<String>,
    (creation, rattachement): (Saisie, Saisie),
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
        creation,
        rattachement,
    };
    render(status, &t)
}

pub(in crate::web) async fn collectivites(State(app): State<App>, a: Auth) -> Response {
    if let Err(r) = a.gestion() {
        return r;
    }
    collectivites_page(&app, &a, None, None, Default::default()).await
}

#[derive(Deserialize)]
pub(in crate::web) struct CollectiviteForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    siret: String,
    #[serde(default)]
    nom: String,
    #[serde(default)]
    cdg: String,
}

pub(in crate::web) async fn collectivite_add(
    State(app): State<App>,
    a: Auth,
    Form(f): Form<CollectiviteForm>,
) -> Response {
    if let Err(r) = a.admin().and_then(|_| a.check(&f.csrf)) {
        return r;
    }
    let mut saisie = Saisie::new()
        .avec("siret", &f.siret)
        .avec("nom", &f.nom)
        .avec("cdg", &f.cdg);
    let r: Issue = async {
        let s = siret(&f.siret, "SIRET").map_err(|e| ("siret", e))?;
        let cdg = if f.cdg.trim().is_empty() {
            None
        } else {
            Some(siret(&f.cdg, "SIRET du CDG").map_err(|e| ("cdg", e))?)
        };
        let nom = f.nom.trim().to_string();
        if nom.is_empty() {
            return Err(("nom", "Indiquez le nom de la collectivité.".to_string()));
        }
        let detail = format!("création de la collectivité {}", s.as_str());
        change(&app, &a, "collectivite", detail, move |st| {
            if st.collectivite(&s)?.is_some() {
                return Err(StoreError::Invalid(format!(
                    "la collectivité {} existe déjà : vérifiez le SIRET",
                    s.as_str()
                )));
            }
            st.add_collectivite(&s, &nom, cdg.as_ref())?;
            Ok(format!("Collectivité {} créée.", s.as_str()))
        })
        .await
        .map_err(|e| ("siret", e))
    }
    .await;
    let (m, e) = outcome(r, &mut saisie, "Collectivité non créée");
    collectivites_page(&app, &a, m, e, (saisie, Saisie::new())).await
}

pub(in crate::web) async fn collectivite_attach(
    State(app): State<App>,
    a: Auth,
    Form(f): Form<CollectiviteForm>,
) -> Response {
    if let Err(r) = a.admin().and_then(|_| a.check(&f.csrf)) {
        return r;
    }
    let mut saisie = Saisie::new().avec("siret", &f.siret).avec("cdg", &f.cdg);
    let r: Issue = async {
        let s = siret(&f.siret, "SIRET").map_err(|e| ("siret", e))?;
        let cdg = if f.cdg.trim().is_empty() {
            None
        } else {
            Some(siret(&f.cdg, "SIRET du CDG").map_err(|e| ("cdg", e))?)
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
        .map_err(|e| ("cdg", e))
    }
    .await;
    let (m, e) = outcome(r, &mut saisie, "Rattachement non enregistré");
    collectivites_page(&app, &a, m, e, (Saisie::new(), saisie)).await
}

#[derive(Template)]
#[template(path = "services.html")]
pub(in crate::web) struct ServicesT {
    user: Option<NavUser>,
    message: Option<String>,
    error: Option<String>,
    csrf: String,
    siret: String,
    nom: String,
    services: Vec<(i64, String, Option<String>)>,
    /// The form to add a service, as typed when refused.
    saisie: Saisie,
}

pub(in crate::web) async fn services_page(
    app: &App,
    a: &Auth,
    siret: String,
    message: Option<String>,
    error: Option<String>,
    saisie: Saisie,
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
    let status = status_for(&error);
    let t = ServicesT {
        user: Some(a.nav()),
        message,
        error,
        csrf: a.csrf.clone(),
        siret,
        nom,
        services,
        saisie,
    };
    render(status, &t)
}

pub(in crate::web) async fn services(
    State(app): State<App>,
    a: Auth,
    Path(siret): Path<String>,
) -> Response {
    if let Err(r) = a.gestion() {
        return r;
    }
    services_page(&app, &a, siret, None, None, Saisie::new()).await
}

#[derive(Deserialize)]
pub(in crate::web) struct ServiceForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    code: String,
    #[serde(default)]
    libelle: String,
}

pub(in crate::web) async fn service_add(
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
    let mut saisie = Saisie::new()
        .avec("code", &f.code)
        .avec("libelle", &f.libelle);
    let r: Issue = if code.is_empty() || code.chars().count() > 50 {
        Err((
            "code",
            "Indiquez le code du service, 50 caractères au plus.".to_string(),
        ))
    } else if libelle.chars().count() > 200 {
        Err((
            "libelle",
            "Le libellé a 200 caractères au plus.".to_string(),
        ))
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
                    "le service {code} existe déjà : choisissez un autre code"
                )))
            }
        })
        .await
        .map_err(|e| ("code", e))
    };
    let (m, e) = outcome(r, &mut saisie, "Service non ajouté");
    services_page(&app, &a, siret, m, e, saisie).await
}
