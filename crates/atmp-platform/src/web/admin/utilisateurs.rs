//! Administration: the users, their roles, their passwords.

#[allow(unused_imports)]
use super::*;

pub(in crate::web) struct UtilisateurLine {
    id: i64,
    login: String,
    role: &'static str,
    collectivite: String,
    email: String,
    actif: bool,
}

#[derive(Template)]
#[template(path = "utilisateurs.html")]
pub(in crate::web) struct UtilisateursT {
    user: Option<NavUser>,
    message: Option<String>,
    error: Option<String>,
    csrf: String,
    utilisateurs: Vec<UtilisateurLine>,
    roles: Vec<(String, String)>,
    /// The collectivités a new user may belong to: (SIRET, "name (SIRET)").
    collectivites: Vec<(String, String)>,
    /// The empty choice of the collectivité list: the platform may create a user of no
    /// collectivité; nobody else may.
    vide_collectivite: &'static str,
    /// What the creation form shows: the typed values after a refusal.
    saisie: Saisie,
}

/// The users `a` manages, with the collectivités it administers (by SIRET).
pub(in crate::web) fn managed(
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
pub(in crate::web) fn manages(
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

pub(in crate::web) async fn utilisateurs_page(
    app: &App,
    a: &Auth,
    message: Option<String>,
    error: Option<String>,
) -> Response {
    let saisie = if a.user.role == Role::Plateforme {
        Saisie::new()
    } else {
        Saisie::new().avec(
            "siret",
            a.user.collectivite_siret.as_deref().unwrap_or_default(),
        )
    };
    utilisateurs_page_with(app, a, message, error, saisie).await
}

pub(in crate::web) async fn utilisateurs_page_with(
    app: &App,
    a: &Auth,
    message: Option<String>,
    error: Option<String>,
    saisie: Saisie,
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
            .map(|r| (r.code().to_string(), r.libelle().to_string()))
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
        vide_collectivite: if a.user.role == Role::Plateforme {
            "Aucune (administrateur de la plate-forme)"
        } else {
            ""
        },
        saisie,
    };
    render(status, &t)
}

pub(in crate::web) async fn utilisateurs(State(app): State<App>, a: Auth) -> Response {
    if let Err(r) = a.gestion() {
        return r;
    }
    utilisateurs_page(&app, &a, None, None).await
}

#[derive(Deserialize)]
pub(in crate::web) struct UtilisateurForm {
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

pub(in crate::web) async fn utilisateur_add(
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
    let mut saisie = Saisie::new()
        .avec("login", &f.login)
        .avec("role", &f.role)
        .avec("siret", &siret)
        .avec("email", &f.email);
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
            saisie.refuse("login", login_problem.unwrap_or_default());
            Err("Utilisateur non créé : corrigez le champ signalé.".to_string())
        }
        None => {
            saisie.refuse("role", "Choisissez un rôle dans la liste.");
            Err("Utilisateur non créé : corrigez le champ signalé.".to_string())
        }
        Some(_) if email.is_err() => {
            saisie.refuse(
                "email",
                format!(
                    "{}. Saisissez une adresse de la forme nom@domaine.fr, ou laissez le champ vide.",
                    email.clone().unwrap_err()
                ),
            );
            Err("Utilisateur non créé : corrigez le champ signalé.".to_string())
        }
        Some(role) if !a.may_grant(role, target.as_ref()) && a.user.role != Role::Plateforme => {
            saisie.refuse(
                "siret",
                format!(
                    "Vous ne pouvez pas donner le rôle « {} » pour cette collectivité : choisissez-en une que vous administrez, ou un autre rôle.",
                    role.libelle()
                ),
            );
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
        if !saisie.refusee() {
            // Refused by the base (a login taken…): said next to the login.
            saisie.refuse("login", e.clone().unwrap_or_default());
        }
        return utilisateurs_page_with(&app, &a, m, e, saisie).await;
    }
    utilisateurs_page(&app, &a, m, e).await
}

#[derive(Deserialize)]
pub(in crate::web) struct ResetForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    id: i64,
}

/// An administrator gives a user a new one-time password (shown once), to be changed at
/// the next login; the user's sessions are closed.
pub(in crate::web) async fn utilisateur_reinitialiser(
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
pub(in crate::web) struct ActifForm {
    #[serde(default)]
    csrf: String,
    // Defaults, so that a form missing a field is refused by the handler (its token, then
    // an unknown user), in French, rather than by the extractor in English.
    #[serde(default)]
    id: i64,
    #[serde(default)]
    actif: u8,
}

pub(in crate::web) async fn utilisateur_actif(
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
