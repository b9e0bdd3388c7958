//! The web: administration — collectivités, services, senders and their authorisations,
//! users, nomenclatures, the audit trail; one file per area, the helpers they share here.

#[allow(unused_imports)]
use super::*;

mod collectivites;
mod emetteurs;
mod journal;
mod nomenclatures;
mod utilisateurs;

pub(super) use collectivites::*;
pub(super) use emetteurs::*;
pub(super) use journal::*;
pub(super) use nomenclatures::*;
pub(super) use utilisateurs::*;

/// Collectivités as a form offers them: (SIRET, "name (SIRET)"), by name.
pub(in crate::web) fn choices(list: &[atmp_store::Collectivite]) -> Vec<(String, String)> {
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

/// Runs an admin change; the page shows its message or its error.
pub(in crate::web) async fn change(
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

pub(in crate::web) fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect::<String>() + ".",
        None => String::new(),
    }
}

pub(in crate::web) fn siret(s: &str, what: &str) -> Result<Siret, String> {
    Siret::parse(s.trim()).map_err(|e| {
        format!(
            "{what} « {} » : {e} ; vérifiez-le (14 chiffres, espaces admis).",
            s.trim()
        )
    })
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

pub(in crate::web) fn split(r: Result<String, String>) -> (Option<String>, Option<String>) {
    match r {
        Ok(m) => (Some(m), None),
        Err(e) => (None, Some(e)),
    }
}

/// A form's outcome as the page shows it: on success the message (and an empty form); on a
/// refusal the field at fault marked in `saisie` and, at the top, what was not done.
pub(in crate::web) fn outcome(
    r: Issue,
    saisie: &mut Saisie,
    non_fait: &str,
) -> (Option<String>, Option<String>) {
    match r {
        Ok(m) => {
            *saisie = Saisie::new();
            (Some(m), None)
        }
        Err((champ, m)) => {
            saisie.refuse(champ, m);
            (
                None,
                Some(format!("{non_fait} : corrigez le champ signalé.")),
            )
        }
    }
}

/// A sender as a form offers it: (code, "code — name").
pub(in crate::web) fn sender_choice(e: &atmp_store::Emetteur) -> (String, String) {
    (
        e.code.clone(),
        match &e.nom {
            Some(n) => format!("{} — {n}", e.code),
            None => e.code.clone(),
        },
    )
}
