//! The web: "Rejets à traiter" — the quarantine of rejected records, an identity corrected
//! field by field, a rejection set aside, an import's rejections replayed. Every view reads
//! the rejection rows, never a log's text.

#[allow(unused_imports)]
use super::*;

use atmp_store::{AgentCorrection, Rejet, RejetEtat, RejetQuery, RejetRaison, IDENTITE_CHAMPS};

/// Rejections shown per page.
pub(super) const REJETS_PAGE: u64 = 50;

/// The SIRETs whose rejections the user sees: `None` for the platform (all, the unknown
/// collectivités' included); a CDG's administrator its CDG and attached collectivités; any
/// other user its own collectivité.
pub(super) async fn visible_sirets(app: &App, a: &Auth) -> Result<Option<Vec<String>>, Response> {
    match a.scope() {
        Scope::Tout => Ok(None),
        Scope::Collectivite { siret } => Ok(Some(vec![siret])),
        Scope::Cdg { siret, .. } => {
            let cdg = siret.clone();
            let all = db(app, |s| s.collectivites()).await?;
            let mut out = vec![siret];
            out.extend(
                all.into_iter()
                    .filter(|c| c.cdg_siret.as_ref().map(|x| x.as_str()) == Some(cdg.as_str()))
                    .map(|c| c.siret.as_str().to_string()),
            );
            Ok(Some(out))
        }
    }
}

/// Whether the user may correct, set aside and replay (not a collectivité's plain user).
fn acts(a: &Auth) -> bool {
    a.user.role != Role::Collectivite
}

/// A field of the two identities side by side.
pub(super) struct Champ {
    pub nom: &'static str,
    pub code: &'static str,
    pub base: String,
    pub fichier: String,
    pub differe: bool,
}

/// A rejection as a page shows it.
pub(super) struct RejetLigne {
    pub id: i64,
    pub import_id: i64,
    pub collectivite: String,
    pub niveau: String,
    pub raison: &'static str,
    /// The admin page where the fix is made, for the platform's administrators.
    pub correctif: Option<(&'static str, &'static str)>,
    pub remede: &'static str,
    pub etat: &'static str,
    pub ouvert: bool,
    pub message: String,
    pub ligne: u64,
    pub champs: Vec<Champ>,
    pub identite: bool,
    pub fragment: String,
    pub motif: String,
    pub rejeu: Option<i64>,
    pub purge: bool,
    /// Who or what: the file's identity of a rejected agent, else the level and line.
    pub titre: String,
}

fn libelle_champ(code: &str) -> &'static str {
    match code {
        "nomUsuel" => "Nom d'usage",
        "prenom" => "Prénom",
        "dateNaissance" => "Date de naissance",
        _ => "NIR",
    }
}

fn niveau_libelle(n: &str) -> String {
    match n {
        "service" => "Service",
        "agent" => "Agent",
        "evenement" => "Événement",
        "arret" => "Arrêt",
        "certificat" => "Certificat",
        "lesion" => "Lésion",
        "consequence" => "Conséquence médicale",
        "deces" => "Décès",
        other => other,
    }
    .to_string()
}

fn fr_day(iso: &str) -> String {
    atmp_model::Date::parse(iso)
        .map(|d| d.fr())
        .unwrap_or_else(|| iso.to_string())
}

pub(super) fn ligne(r: &Rejet, noms: &std::collections::HashMap<String, String>) -> RejetLigne {
    let champs = match (&r.new.base, &r.new.fichier) {
        (Some(b), Some(f)) => IDENTITE_CHAMPS
            .iter()
            .map(|c| {
                let show = |v: &str| {
                    if *c == "dateNaissance" {
                        fr_day(v)
                    } else {
                        v.to_string()
                    }
                };
                Champ {
                    nom: libelle_champ(c),
                    code: c,
                    base: show(b.get(c).unwrap_or_default()),
                    fichier: show(f.get(c).unwrap_or_default()),
                    differe: r.new.differences.iter().any(|d| d == c),
                }
            })
            .collect(),
        _ => Vec::new(),
    };
    let siret = &r.new.collectivite_siret;
    RejetLigne {
        id: r.id,
        import_id: r.import_id,
        collectivite: match noms.get(siret) {
            Some(n) => format!("{n} ({siret})"),
            None => format!("{siret} (inconnue de la plate-forme)"),
        },
        niveau: niveau_libelle(&r.new.niveau),
        raison: r.new.raison.libelle(),
        correctif: match r.new.raison {
            RejetRaison::CollectiviteInconnue | RejetRaison::HorsCdg => {
                Some(("/admin/collectivites", "Gérer les collectivités"))
            }
            RejetRaison::NonAutorise => {
                Some(("/admin/autorisations", "Enregistrer le consentement"))
            }
            RejetRaison::Contenu => {
                Some(("/admin/nomenclatures", "Mettre à jour une nomenclature"))
            }
            RejetRaison::Identite | RejetRaison::AutreNir => None,
        },
        remede: r.new.raison.remede(),
        etat: r.etat.libelle(),
        ouvert: r.etat == RejetEtat::ATraiter,
        message: r.new.message.clone(),
        ligne: r.new.ligne,
        identite: !champs.is_empty() && r.new.raison == RejetRaison::Identite,
        champs,
        fragment: r.fragment().unwrap_or_default().to_string(),
        motif: r.motif.clone().unwrap_or_default(),
        rejeu: r.rejeu_import_id,
        purge: r.purge_le.is_some(),
        titre: match &r.new.fichier {
            Some(f) => format!(
                "{} {} - {} - {}",
                f.nom_usuel,
                f.prenom,
                fr_day(&f.date_naissance),
                f.nir
            ),
            None => format!("{} (ligne {})", niveau_libelle(&r.new.niveau), r.new.ligne),
        },
    }
}

/// The names of the collectivités, by SIRET.
pub(super) async fn noms(app: &App) -> Result<std::collections::HashMap<String, String>, Response> {
    Ok(db(app, |s| s.collectivites())
        .await?
        .into_iter()
        .map(|c| (c.siret.as_str().to_string(), c.nom))
        .collect())
}

#[derive(Deserialize, Default)]
pub(super) struct RejetsParams {
    #[serde(default)]
    import: String,
    #[serde(default)]
    raison: String,
    #[serde(default)]
    etat: String,
    #[serde(default)]
    du: String,
    #[serde(default)]
    au: String,
    #[serde(default)]
    page: Option<String>,
}

#[derive(Template)]
#[template(path = "rejets.html")]
pub(super) struct RejetsT {
    user: Option<NavUser>,
    message: Option<String>,
    error: Option<String>,
    rows: Vec<RejetLigne>,
    total: u64,
    page: u64,
    pages: u64,
    raisons: Vec<(&'static str, &'static str)>,
    etats: Vec<(&'static str, &'static str)>,
    import: String,
    raison: String,
    etat: String,
    du: String,
    au: String,
    query: String,
}

pub(super) async fn rejets_page(
    State(app): State<App>,
    a: Auth,
    Query(q): Query<RejetsParams>,
) -> Response {
    let sirets = match visible_sirets(&app, &a).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let page: u64 = q
        .page
        .as_deref()
        .and_then(|p| p.parse().ok())
        .filter(|p| *p >= 1)
        .unwrap_or(1);
    let mut error = None;
    let import_id = match q.import.trim() {
        "" => None,
        s => match s.parse::<i64>() {
            Ok(n) => Some(n),
            Err(_) => {
                error = Some(format!("« {s} » n'est pas un numéro d'import."));
                None
            }
        },
    };
    let day = |s: &str, what: &str, error: &mut Option<String>| -> Option<String> {
        match s.trim() {
            "" => None,
            v => match parse_day(v) {
                Some(d) => Some(d.format("%Y-%m-%d").to_string()),
                None => {
                    *error = Some(format!(
                        "La date {what} « {v} » n'est pas valide (JJ/MM/AAAA attendu)."
                    ));
                    None
                }
            },
        }
    };
    let du = day(&q.du, "de début", &mut error);
    let au = day(&q.au, "de fin", &mut error);
    let etat = match q.etat.as_str() {
        "" => Some(RejetEtat::ATraiter),
        "tous" => None,
        e => RejetEtat::parse(e).or(Some(RejetEtat::ATraiter)),
    };
    let query = RejetQuery {
        sirets,
        import_id,
        etat,
        raison: RejetRaison::parse(&q.raison),
        du,
        au,
        offset: (page - 1) * REJETS_PAGE,
        limit: REJETS_PAGE,
        ..Default::default()
    };
    let (found, total) = match db(&app, move |s| s.rejets(&query)).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let noms = match noms(&app).await {
        Ok(n) => n,
        Err(r) => return r,
    };
    let rows = found.iter().map(|r| ligne(r, &noms)).collect();
    let etat_code = etat.map(|e| e.code()).unwrap_or("tous").to_string();
    let t = RejetsT {
        user: Some(a.nav()),
        message: None,
        error,
        rows,
        total,
        page,
        pages: total.div_ceil(REJETS_PAGE).max(1),
        raisons: std::iter::once(("", "Toutes"))
            .chain(RejetRaison::ALL.iter().map(|r| (r.code(), r.libelle())))
            .collect(),
        etats: vec![
            ("a_traiter", "À traiter"),
            ("rejoue", "Rejoués"),
            ("classe", "Classés"),
            ("tous", "Tous"),
        ],
        query: format!(
            "/rejets?import={}&raison={}&etat={}&du={}&au={}",
            enc(q.import.trim()),
            enc(&q.raison),
            enc(&etat_code),
            enc(q.du.trim()),
            enc(q.au.trim())
        ),
        import: q.import.trim().to_string(),
        raison: q.raison.clone(),
        etat: etat_code,
        du: q.du.trim().to_string(),
        au: q.au.trim().to_string(),
    };
    render(StatusCode::OK, &t)
}

#[derive(Template)]
#[template(path = "rejet.html")]
pub(super) struct RejetT {
    user: Option<NavUser>,
    message: Option<String>,
    error: Option<String>,
    r: RejetLigne,
    acts: bool,
    /// A platform administrator: the fixes' pages are his.
    admin: bool,
    csrf: String,
}

/// A rejection the user may see, or `None` (404: as if it did not exist).
async fn visible_rejet(app: &App, a: &Auth, id: i64) -> Result<Option<Rejet>, Response> {
    let sirets = visible_sirets(app, a).await?;
    let q = RejetQuery {
        sirets,
        ids: Some(vec![id]),
        ..Default::default()
    };
    Ok(db(app, move |s| s.rejets(&q)).await?.0.into_iter().next())
}

async fn rejet_view(
    app: &App,
    a: &Auth,
    id: i64,
    message: Option<String>,
    error: Option<String>,
) -> Response {
    let r = match visible_rejet(app, a, id).await {
        Ok(Some(r)) => r,
        Ok(None) => return not_found(),
        Err(r) => return r,
    };
    let noms = match noms(app).await {
        Ok(n) => n,
        Err(r) => return r,
    };
    let status = status_for(&error);
    let t = RejetT {
        user: Some(a.nav()),
        message,
        error,
        r: ligne(&r, &noms),
        acts: acts(a),
        admin: a.user.role == Role::Plateforme,
        csrf: a.nav().csrf,
    };
    render(status, &t)
}

pub(super) async fn rejet_page(
    State(app): State<App>,
    a: Auth,
    Path(id): Path<String>,
) -> Response {
    let Ok(id) = id.parse::<i64>() else {
        return not_found();
    };
    rejet_view(&app, &a, id, None, None).await
}

/// The correction form: for each differing field, which value is right.
#[derive(Deserialize)]
pub(super) struct CorrectionForm {
    #[serde(default)]
    csrf: String,
    #[serde(rename = "nomUsuel", default)]
    nom_usuel: String,
    #[serde(default)]
    prenom: String,
    #[serde(rename = "dateNaissance", default)]
    date_naissance: String,
}

pub(super) async fn rejet_corriger(
    State(app): State<App>,
    a: Auth,
    Path(id): Path<String>,
    Form(f): Form<CorrectionForm>,
) -> Response {
    let Ok(id) = id.parse::<i64>() else {
        return not_found();
    };
    if let Err(r) = a.check(&f.csrf) {
        return r;
    }
    let r = match visible_rejet(&app, &a, id).await {
        Ok(Some(r)) => r,
        Ok(None) => return not_found(),
        Err(r) => return r,
    };
    if !acts(&a) {
        return forbidden(&a);
    }
    let (Some(base), Some(fichier)) = (r.new.base.clone(), r.new.fichier.clone()) else {
        return rejet_view(
            &app,
            &a,
            id,
            None,
            Some(
                "Ce rejet n'est pas un écart d'identité : il n'y a rien à corriger dans la base."
                    .into(),
            ),
        )
        .await;
    };
    if r.etat != RejetEtat::ATraiter || r.new.raison != RejetRaison::Identite {
        return rejet_view(
            &app,
            &a,
            id,
            None,
            Some("Seul un écart d'identité à traiter se corrige ici.".into()),
        )
        .await;
    }
    // Each differing field: "fichier" takes the file's value into the base; "base" keeps it.
    let pick = |choice: &str, champ: &str, v: &str| -> Option<String> {
        (choice == "fichier" && r.new.differences.iter().any(|d| d == champ)).then(|| v.to_string())
    };
    let c = AgentCorrection {
        nom_usuel: pick(&f.nom_usuel, "nomUsuel", &fichier.nom_usuel),
        prenom: pick(&f.prenom, "prenom", &fichier.prenom),
        date_naissance: pick(&f.date_naissance, "dateNaissance", &fichier.date_naissance),
        nir: None,
    };
    if c.is_empty() {
        return rejet_view(&app, &a, id, None, Some("Aucune valeur du fichier n'a été choisie : la base reste telle quelle. Pour garder la base, classez le rejet.".into())).await;
    }
    let Ok(siret) = Siret::parse(&r.new.collectivite_siret) else {
        return not_found();
    };
    let actor = a.user.login.clone();
    let nir = base.nir.clone();
    let res = db(&app, move |s| s.correct_agent(&siret, &nir, &c, &actor)).await;
    match res {
        Ok(_) => {
            a.audit(
                &app,
                "agent_corrige",
                format!(
                    "rejet {id} : identité d'un agent corrigée (collectivité {})",
                    r.new.collectivite_siret
                ),
            )
            .await;
            rejet_view(
                &app,
                &a,
                id,
                Some(
                    "L'agent de la base est corrigé. Rejouez l'import pour intégrer ses données."
                        .into(),
                ),
                None,
            )
            .await
        }
        Err(e) => e,
    }
}

#[derive(Deserialize)]
pub(super) struct ClasserForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    motif: String,
}

pub(super) async fn rejet_classer(
    State(app): State<App>,
    a: Auth,
    Path(id): Path<String>,
    Form(f): Form<ClasserForm>,
) -> Response {
    let Ok(id) = id.parse::<i64>() else {
        return not_found();
    };
    if let Err(r) = a.check(&f.csrf) {
        return r;
    }
    match visible_rejet(&app, &a, id).await {
        Ok(Some(_)) => {}
        Ok(None) => return not_found(),
        Err(r) => return r,
    }
    if !acts(&a) {
        return forbidden(&a);
    }
    let motif = f.motif.trim().to_string();
    if motif.is_empty() {
        return rejet_view(
            &app,
            &a,
            id,
            None,
            Some(
                "Indiquez le motif du classement (par exemple : l'émetteur doit corriger sa base)."
                    .into(),
            ),
        )
        .await;
    }
    let actor = a.user.login.clone();
    match db(&app, move |s| s.classer_rejets(&[id], &motif, &actor)).await {
        Ok(1) => {
            a.audit(&app, "rejet_classe", format!("rejet {id}")).await;
            rejet_view(&app, &a, id, Some("Le rejet est classé.".into()), None).await
        }
        Ok(_) => {
            rejet_view(
                &app,
                &a,
                id,
                None,
                Some("Ce rejet n'est plus à traiter.".into()),
            )
            .await
        }
        Err(r) => r,
    }
}

/// Replays the open rejections of an import that the user sees (or those chosen), then
/// shows the replay's own import page.
pub(super) async fn rejeu(
    State(app): State<App>,
    a: Auth,
    Path(id): Path<String>,
    body: String,
) -> Response {
    let Ok(id) = id.parse::<i64>() else {
        return not_found();
    };
    let pairs = form_pairs(&body);
    let csrf = pairs
        .iter()
        .find(|(k, _)| k == "csrf")
        .map(|(_, v)| v.as_str())
        .unwrap_or_default();
    if let Err(r) = a.check(csrf) {
        return r;
    }
    // The rejections chosen (none: all the open ones the user sees).
    let chosen: Vec<i64> = pairs
        .iter()
        .filter(|(k, _)| k == "rejet")
        .filter_map(|(_, v)| v.parse().ok())
        .collect();
    if !acts(&a) {
        return forbidden(&a);
    }
    let sirets = match visible_sirets(&app, &a).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let q = RejetQuery {
        sirets,
        import_id: Some(id),
        etat: Some(RejetEtat::ATraiter),
        ..Default::default()
    };
    let open = match db(&app, move |s| s.rejets(&q)).await {
        Ok((rows, _)) => rows,
        Err(r) => return r,
    };
    if open.is_empty() {
        return page_simple(
            StatusCode::NOT_FOUND,
            Some(a.nav()),
            "Rejeu",
            "Cet import n'a aucun rejet à traiter que vous puissiez rejouer.",
        );
    }
    let ids: Vec<i64> = if chosen.is_empty() {
        open.iter().map(|r| r.id).collect()
    } else {
        // Only chosen ones the user may replay.
        chosen
            .iter()
            .copied()
            .filter(|x| open.iter().any(|r| r.id == *x))
            .collect()
    };
    let logs_dir = app.data_dir.join("journaux").join(format!("rejeu-{id}"));
    let run = {
        let app = app.clone();
        move |s: &mut dyn atmp_store::Store| {
            let opts = atmp_integrator::ImportOptions {
                emetteur: None,
                logs_dir,
                display_name: None,
                progress: None,
                job_id: None,
                limits: app.config.limits,
                files: Some(app.files.as_ref()),
                replay: None,
                dry_run: false,
            };
            Ok(atmp_integrator::replay(s, id, Some(&ids), &opts))
        }
    };
    match db(&app, run).await {
        Ok(Ok(o)) => {
            a.audit(
                &app,
                "rejeu",
                format!("import {id} rejoué : import {}", o.import_id),
            )
            .await;
            Redirect::to(&format!("/imports/{}", o.import_id)).into_response()
        }
        Ok(Err(e)) => {
            tracing::warn!(import = id, "rejeu refusé");
            page_simple(
                StatusCode::CONFLICT,
                Some(a.nav()),
                "Rejeu",
                &format!("Le rejeu n'a pas eu lieu : {e}."),
            )
        }
        Err(r) => r,
    }
}

/// The pairs of an `application/x-www-form-urlencoded` body, repeated names kept (the
/// checkboxes of the rejections to replay).
fn form_pairs(body: &str) -> Vec<(String, String)> {
    fn decode(s: &str) -> String {
        let b = s.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            let hex = || {
                b.get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
            };
            match (b[i], hex()) {
                (b'+', _) => out.push(b' '),
                (b'%', Some(v)) => {
                    out.push(v);
                    i += 2;
                }
                (c, _) => out.push(c),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    body.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(p), String::new()),
        })
        .collect()
}
