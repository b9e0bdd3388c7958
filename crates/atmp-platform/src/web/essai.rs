//! The web: "Tester un fichier" — a dry run of a file against the real base. The upload is
//! written to a private temporary file (in bounded memory), integrated in a transaction that
//! is then rolled back, and its result shown; the file and its logs are removed at once.
//! Nothing of it is stored: no record, no import row, no rejection, no mail.

#[allow(unused_imports)]
use super::*;

/// The error-log lines shown at most on the result page.
const LINES: usize = 500;

#[derive(Template)]
#[template(path = "essai.html")]
pub(super) struct EssaiT {
    user: Option<NavUser>,
    message: Option<String>,
    error: Option<String>,
    csrf: String,
    resultat: Option<Resultat>,
}

pub(super) struct Resultat {
    fichier: String,
    label: String,
    erreurs: u64,
    avertissements: u64,
    counts: Vec<(&'static str, u64, u64, u64)>,
    /// (collectivité, level, agent, event, element, message) of the error logs.
    lignes: Vec<Vec<String>>,
    tronque: bool,
}

fn page(
    a: &Auth,
    status: StatusCode,
    resultat: Option<Resultat>,
    error: Option<String>,
) -> Response {
    let t = EssaiT {
        user: Some(a.nav()),
        message: None,
        error,
        csrf: a.nav().csrf,
        resultat,
    };
    render(status, &t)
}

pub(super) async fn essai_form(a: Auth) -> Response {
    // Only the platform's administrators: a file's lines may name the base's agents of any
    // collectivité it holds.
    if let Err(r) = a.admin() {
        return r;
    }
    page(&a, StatusCode::OK, None, None)
}

/// Removes the uploaded file and its logs whatever happens.
struct Scratch(std::path::PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub(super) async fn essai(State(app): State<App>, a: Auth, mut mp: Multipart) -> Response {
    if let Err(r) = a.admin() {
        return r;
    }
    let dir = app
        .data_dir
        .join("essais")
        .join(format!("{}-{}", std::process::id(), rand_token()));
    if let Err(e) = private_dir(&dir) {
        return internal(e);
    }
    let scratch = Scratch(dir.clone());
    let max = app.config.limits.max_file;
    let (mut csrf, mut name, mut path) = (String::new(), String::new(), None);
    loop {
        match mp.next_field().await {
            Ok(Some(mut field)) => match field.name().unwrap_or("") {
                "csrf" => csrf = field.text().await.unwrap_or_default(),
                "fichier" => {
                    name = field
                        .file_name()
                        .map(|n| n.rsplit(['/', '\\']).next().unwrap_or(n).to_string())
                        .unwrap_or_else(|| "fichier.xml".into());
                    let p = dir.join("fichier");
                    let Ok(mut out) = std::fs::File::create(&p) else {
                        return internal("fichier d'essai");
                    };
                    let mut size = 0u64;
                    loop {
                        match field.chunk().await {
                            Ok(Some(c)) => {
                                size += c.len() as u64;
                                if size > max {
                                    return page(
                                        &a,
                                        StatusCode::PAYLOAD_TOO_LARGE,
                                        None,
                                        Some(format!(
                                            "Le fichier dépasse la taille maximale admise ({}).",
                                            atmp_flux::scan::human(max)
                                        )),
                                    );
                                }
                                if let Err(e) = std::io::Write::write_all(&mut out, &c) {
                                    return internal(e);
                                }
                            }
                            Ok(None) => break,
                            Err(_) => {
                                return page(
                                    &a,
                                    StatusCode::BAD_REQUEST,
                                    None,
                                    Some("Le fichier n'a pas été reçu en entier.".into()),
                                )
                            }
                        }
                    }
                    path = Some(p);
                }
                _ => {}
            },
            Ok(None) => break,
            Err(_) => {
                return page(
                    &a,
                    StatusCode::BAD_REQUEST,
                    None,
                    Some("Le formulaire n'a pas été reçu en entier.".into()),
                )
            }
        }
    }
    if let Err(r) = a.check(&csrf) {
        return r;
    }
    let Some(path) = path else {
        return page(
            &a,
            StatusCode::BAD_REQUEST,
            None,
            Some("Choisissez le fichier à tester.".into()),
        );
    };
    let logs_dir = dir.join("journaux");
    let run = {
        let app = app.clone();
        let name = name.clone();
        move |s: &mut dyn atmp_store::Store| {
            let opts = atmp_integrator::ImportOptions {
                emetteur: None,
                logs_dir: logs_dir.clone(),
                display_name: Some(name),
                progress: None,
                job_id: None,
                limits: app.config.limits,
                files: None,
                replay: None,
                dry_run: true,
            };
            Ok(atmp_integrator::import_file(s, &path, &opts))
        }
    };
    let outcome = match db(&app, run).await {
        Ok(Ok(o)) => o,
        Ok(Err(e)) => return internal(e),
        Err(r) => return r,
    };
    let mut lignes = Vec::new();
    let mut tronque = false;
    for l in &outcome.logs {
        let Ok(text) = std::fs::read_to_string(&l.erreurs) else {
            continue;
        };
        for line in text.lines() {
            if lignes.len() >= LINES {
                tronque = true;
                break;
            }
            let mut f = atmp_integrator::split_line(line);
            if f.len() >= 6 {
                f[0] = l.collectivite.clone();
                lignes.push(f);
            }
        }
    }
    drop(scratch);
    a.audit(&app, "essai", format!("fichier testé : {}", outcome.label))
        .await;
    let r = Resultat {
        fichier: name,
        label: outcome.label.clone(),
        erreurs: outcome.errors,
        avertissements: outcome.warnings,
        counts: counts_rows(&atmp_store::RecordCounts::from(&outcome.counts)),
        lignes,
        tronque,
    };
    page(&a, StatusCode::OK, Some(r), None)
}

/// A folder only this user reads (the file holds personal data).
fn private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

fn rand_token() -> String {
    use rand::RngCore;
    let mut b = [0u8; 8];
    rand::rngs::OsRng.fill_bytes(&mut b);
    hex::encode(b)
}
