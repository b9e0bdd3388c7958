//! Administration: the nomenclatures (reference lists of codes) and their versions.

#[allow(unused_imports)]
use super::*;

#[derive(Template)]
#[template(path = "nomenclatures.html")]
pub(in crate::web) struct NomenclaturesT {
    user: Option<NavUser>,
    message: Option<String>,
    error: Option<String>,
    csrf: String,
    listes: Vec<(String, usize)>,
    versions: Vec<(String, String, i64, String)>,
}

pub(in crate::web) async fn nomenclatures_page(
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

pub(in crate::web) async fn nomenclatures(State(app): State<App>, a: Auth) -> Response {
    if let Err(r) = a.admin() {
        return r;
    }
    nomenclatures_page(&app, &a, None, None).await
}

pub(in crate::web) async fn nomenclature_load(
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
