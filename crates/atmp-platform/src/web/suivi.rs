//! The web: the tracking table of imports, one import's page, its downloads.

#[allow(unused_imports)]
use super::*;

pub(super) struct SuiviLine {
    import_id: i64,
    log_id: i64,
    type_fichier: &'static str,
    date: String,
    label: String,
    badge: Badge,
    /// The `ERROR` lines of the log: no link to an empty error log.
    errors: u64,
    fichier: String,
    emetteur: String,
    collectivite: String,
    /// A replay: the import whose rejections it replayed.
    rejeu_de: Option<i64>,
    /// A duplicate: the import it repeats.
    doublon_de: Option<i64>,
}

#[derive(Template)]
#[template(path = "suivi.html")]
pub(super) struct SuiviT {
    user: Option<NavUser>,
    message: Option<String>,
    error: Option<String>,
    types: Vec<(&'static str, &'static str)>,
    type_choisi: String,
    du: String,
    au: String,
    collectivites: Vec<(String, String)>,
    collectivite: String,
    emetteurs: Vec<(String, String)>,
    emetteur: String,
    resultats: Vec<(&'static str, &'static str)>,
    resultat: String,
    fichier: String,
    croissant: bool,
    rows: Vec<SuiviLine>,
    total: u64,
    page: u64,
    pages: u64,
    /// The view's address with every filter but the page and the order.
    filtres: String,
    /// The view's address with every filter and the order, but the page.
    query: String,
}

pub(super) struct LogLine {
    id: i64,
    collectivite: String,
    label: String,
    badge: Badge,
    errors: u64,
    warnings: u64,
}

#[derive(Template)]
#[template(path = "import.html")]
pub(super) struct ImportT {
    user: Option<NavUser>,
    message: Option<String>,
    error: Option<String>,
    id: i64,
    row: atmp_store::ImportRow,
    badge: Badge,
    emetteur: String,
    type_fichier: String,
    mode: String,
    date_creation: String,
    cdg: String,
    debut: String,
    fin: String,
    counts: Vec<(&'static str, u64, u64, u64)>,
    logs: Vec<LogLine>,
    rejets: Vec<super::rejets::RejetLigne>,
    rejets_total: u64,
    rejets_page: u64,
    rejets_pages: u64,
    /// Open rejections the user may replay.
    a_rejouer: u64,
    /// The imports that replayed some of this one's rejections.
    rejeux: Vec<i64>,
    /// Whether the user may replay.
    acts: bool,
    /// What the retention purge removed of this import, said in French.
    purges: Vec<String>,
    /// The logs were purged: no download links.
    logs_purged: bool,
}

// ---------------------------------------------------------------------------------------
// Suivi des imports

#[derive(Deserialize, Default)]
pub(super) struct SuiviParams {
    #[serde(rename = "type", default)]
    type_fichier: String,
    #[serde(default)]
    du: String,
    #[serde(default)]
    au: String,
    #[serde(default)]
    collectivite: String,
    #[serde(default)]
    emetteur: String,
    #[serde(default)]
    resultat: String,
    #[serde(default)]
    fichier: String,
    #[serde(default)]
    tri: String,
    #[serde(default)]
    page: Option<String>,
}

pub(super) const TYPES: [(&str, &str); 4] = [
    ("", "Tous"),
    ("AGENT", "Agent"),
    ("SERVICE", "Service"),
    ("DECLARATION", "Déclaration"),
];

pub(super) fn type_libelle(t: Option<&str>) -> &'static str {
    TYPES
        .iter()
        .find(|(v, _)| Some(*v) == t && !v.is_empty())
        .map(|(_, l)| *l)
        .unwrap_or("—")
}

/// `YYYY-MM-DDTHH:MM:SS` → `DD/MM/YYYY HH:MM:SS`.
pub(super) fn fr_datetime(s: &str) -> String {
    match chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S") {
        Ok(d) => d.format("%d/%m/%Y %H:%M:%S").to_string(),
        Err(_) => s.to_string(),
    }
}

pub(super) fn fr_date_opt(s: Option<&str>) -> String {
    s.map(fr_datetime).unwrap_or_else(|| "—".into())
}

pub(super) fn parse_day(s: &str) -> Option<chrono::NaiveDate> {
    let s = s.trim();
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .or_else(|_| chrono::NaiveDate::parse_from_str(s, "%d/%m/%Y"))
        .ok()
}

pub(super) fn enc(s: &str) -> String {
    let mut o = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.".contains(&b) {
            o.push(b as char);
        } else {
            o.push_str(&format!("%{b:02X}"));
        }
    }
    o
}

pub(super) async fn suivi(
    State(app): State<App>,
    a: Auth,
    Query(p): Query<SuiviParams>,
) -> Response {
    let today = chrono::Local::now().date_naive();
    let mut error = None;
    let au = if p.au.is_empty() {
        today
    } else {
        parse_day(&p.au).unwrap_or_else(|| {
            error = Some("Date de fin invalide : la période par défaut est appliquée.".to_string());
            today
        })
    };
    let default_du = au
        .checked_sub_months(chrono::Months::new(12))
        .unwrap_or(au)
        .succ_opt()
        .unwrap_or(au);
    let du = if p.du.is_empty() {
        default_du
    } else {
        parse_day(&p.du).unwrap_or_else(|| {
            error =
                Some("Date de début invalide : la période par défaut est appliquée.".to_string());
            default_du
        })
    };
    let type_choisi = TYPES
        .iter()
        .find(|(v, _)| *v == p.type_fichier)
        .map(|(v, _)| v.to_string())
        .unwrap_or_default();
    let page: u64 = p
        .page
        .as_deref()
        .and_then(|s| s.parse().ok())
        .filter(|n| *n >= 1)
        .unwrap_or(1);
    let colls = match visible_collectivites(&app, &a).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let emetteurs = match visible_emetteurs(&app, &a, &colls).await {
        Ok(e) => e,
        Err(r) => return r,
    };
    // A filter names one of the user's choices or nothing: an unknown value is dropped.
    let collectivite = colls
        .iter()
        .find(|c| c.siret.as_str() == p.collectivite.trim())
        .map(|c| c.siret.as_str().to_string())
        .unwrap_or_default();
    let emetteur = emetteurs
        .iter()
        .find(|e| e.code == p.emetteur.trim())
        .map(|e| e.code.clone())
        .unwrap_or_default();
    let resultat = atmp_store::SuiviResultat::parse(p.resultat.trim());
    let fichier: String = p.fichier.trim().chars().take(200).collect();
    let croissant = p.tri == "ancien";
    let q = SuiviQuery {
        scope: a.scope(),
        type_fichier: (!type_choisi.is_empty()).then(|| type_choisi.clone()),
        du: du.format("%Y-%m-%d").to_string(),
        au: au.format("%Y-%m-%d").to_string(),
        limit: PAGE,
        offset: (page - 1) * PAGE,
        collectivite: (!collectivite.is_empty()).then(|| collectivite.clone()),
        emetteur: (!emetteur.is_empty()).then(|| emetteur.clone()),
        resultat,
        nom_fichier: (!fichier.is_empty()).then(|| fichier.clone()),
        croissant,
    };
    let platform = a.user.role == Role::Plateforme;
    let (rows, total, pending) = match db(&app, move |s| {
        let (rows, total) = s.suivi(&q)?;
        // Files in the queue have no collectivité yet: only the platform sees them.
        let pending = if platform { s.pending_jobs()? } else { 0 };
        Ok((rows, total, pending))
    })
    .await
    {
        Ok(v) => v,
        Err(r) => return r,
    };
    let pages = total.div_ceil(PAGE).max(1);
    let rows = rows
        .into_iter()
        .map(|r| SuiviLine {
            import_id: r.import_id,
            log_id: r.log_id,
            type_fichier: type_libelle(r.type_fichier.as_deref()),
            date: fr_datetime(&r.started_at),
            badge: Badge(r.resultat()),
            errors: r.errors,
            label: r.label,
            rejeu_de: r.rejeu_de,
            doublon_de: r.doublon_de,
            fichier: r.file_name,
            emetteur: r.emetteur.unwrap_or_else(|| "—".into()),
            collectivite: match (r.global, r.collectivite_nom) {
                (true, Some(n)) => format!("{n} (journal global du CDG)"),
                (true, None) => format!("{} (journal global du CDG)", r.collectivite_siret),
                (false, Some(n)) => n,
                (false, None) if r.collectivite_siret.is_empty() => "— (fichier rejeté)".into(),
                (false, None) => r.collectivite_siret,
            },
        })
        .collect();
    let du_s = du.format("%Y-%m-%d").to_string();
    let au_s = au.format("%Y-%m-%d").to_string();
    let filtres = format!(
        "/suivi?type={}&du={}&au={}&collectivite={}&emetteur={}&resultat={}&fichier={}",
        enc(&type_choisi),
        enc(&du_s),
        enc(&au_s),
        enc(&collectivite),
        enc(&emetteur),
        resultat.map(|r| r.code()).unwrap_or(""),
        enc(&fichier),
    );
    let query = format!(
        "{filtres}&tri={}",
        if croissant { "ancien" } else { "recent" }
    );
    let t = SuiviT {
        user: Some(a.nav()),
        message: (pending > 0)
            .then(|| format!("{pending} fichier(s) reçu(s) en attente ou en cours d'intégration.")),
        error,
        types: TYPES.to_vec(),
        type_choisi,
        du: du_s,
        au: au_s,
        collectivites: colls
            .iter()
            .map(|c| {
                (
                    c.siret.as_str().to_string(),
                    format!("{} ({})", c.nom, c.siret.as_str()),
                )
            })
            .collect(),
        collectivite,
        emetteurs: emetteurs
            .iter()
            .map(|e| {
                let l = match &e.nom {
                    Some(n) => format!("{n} ({})", e.code),
                    None => e.code.clone(),
                };
                (e.code.clone(), l)
            })
            .collect(),
        emetteur,
        resultats: atmp_store::SuiviResultat::ALL
            .iter()
            .map(|r| (r.code(), Badge(*r).texte()))
            .collect(),
        resultat: resultat.map(|r| r.code().to_string()).unwrap_or_default(),
        fichier,
        croissant,
        rows,
        total,
        page: page.min(pages),
        pages,
        filtres,
        query,
    };
    render(StatusCode::OK, &t)
}

// ---------------------------------------------------------------------------------------
// One import

/// The import and the logs of it the user may see; `None`: nothing visible (404).
pub(super) async fn visible_import(
    app: &App,
    a: &Auth,
    id: i64,
) -> Result<Option<(atmp_store::ImportRow, Vec<(i64, ImportLog)>, bool)>, Response> {
    let found = db(app, move |s| {
        let Some((row, logs)) = s.import(id)? else {
            return Ok(None);
        };
        let mut cdgs = Vec::new();
        for (_, l) in &logs {
            cdgs.push(match l.siret() {
                Some(x) => s.collectivite(&x)?.and_then(|c| c.cdg_siret),
                None => None,
            });
        }
        Ok(Some((row, logs, cdgs)))
    })
    .await?;
    let Some((row, logs, cdgs)) = found else {
        return Ok(None);
    };
    let all = logs.len();
    let visible: Vec<(i64, ImportLog)> = logs
        .into_iter()
        .zip(cdgs)
        .filter(|((_, l), cdg)| may_see(a, l, cdg.as_ref().map(|c| c.as_str())))
        .map(|(l, _)| l)
        .collect();
    if visible.is_empty() {
        return Ok(None);
    }
    let sees_all = visible.len() == all;
    Ok(Some((row, visible, sees_all)))
}

pub(super) fn counts_rows(counts: &atmp_store::RecordCounts) -> Vec<(&'static str, u64, u64, u64)> {
    counts
        .rows()
        .iter()
        .map(|(_, label, c)| (*label, c.added, c.existing, c.rejected))
        .collect()
}

/// Rejections shown per page of an import's page.
pub(super) const REJETS_PAGE: u64 = 100;

#[derive(Deserialize, Default)]
pub(super) struct ImportParams {
    #[serde(default)]
    rejets: Option<String>,
}

pub(super) async fn import_page(
    State(app): State<App>,
    a: Auth,
    Path(id): Path<String>,
    Query(q): Query<ImportParams>,
) -> Response {
    let rejets_page: u64 = q
        .rejets
        .as_deref()
        .and_then(|s| s.parse().ok())
        .filter(|n| *n >= 1)
        .unwrap_or(1);
    let Ok(id) = id.parse::<i64>() else {
        return not_found();
    };
    let (row, logs, sees_all) = match visible_import(&app, &a, id).await {
        Ok(Some(v)) => v,
        Ok(None) => return not_found(),
        Err(r) => return r,
    };
    let siret_names = {
        let sirets: Vec<Option<atmp_model::Siret>> = logs.iter().map(|(_, l)| l.siret()).collect();
        match db(&app, move |s| {
            sirets
                .iter()
                .map(|x| match x {
                    Some(x) => Ok(s.collectivite(x)?.map(|c| c.nom)),
                    None => Ok(None),
                })
                .collect::<Result<Vec<_>, StoreError>>()
        })
        .await
        {
            Ok(v) => v,
            Err(r) => return r,
        }
    };
    let purged = match db(&app, move |s| s.purges_of(id)).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let logs_purged = purged
        .iter()
        .any(|(k, _)| *k == atmp_store::PurgeKind::Journaux);
    let purges: Vec<String> = purged
        .iter()
        .map(|(k, at)| match k {
            atmp_store::PurgeKind::FichierRecu => format!(
                "Fichier reçu supprimé le {} (durée de conservation atteinte).",
                fr_datetime(at)
            ),
            atmp_store::PurgeKind::Rejets => format!(
                "Données personnelles des rejets supprimées le {} (durée de conservation atteinte).",
                fr_datetime(at)
            ),
            atmp_store::PurgeKind::Journaux => format!(
                "Journaux supprimés le {} (durée de conservation atteinte).",
                fr_datetime(at)
            ),
        })
        .collect();
    // The rejections are read from their rows (the quarantine), never from a log's text.
    let sirets = match super::rejets::visible_sirets(&app, &a).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let offset = (rejets_page - 1) * REJETS_PAGE;
    let q = atmp_store::RejetQuery {
        sirets: sirets.clone(),
        import_id: Some(id),
        offset,
        limit: REJETS_PAGE,
        ..Default::default()
    };
    let open_q = atmp_store::RejetQuery {
        sirets,
        import_id: Some(id),
        etat: Some(atmp_store::RejetEtat::ATraiter),
        limit: 1,
        ..Default::default()
    };
    let found = db(&app, move |s| {
        let page = s.rejets(&q)?;
        let (_, open) = s.rejets(&open_q)?;
        // Their ids only: an import may hold many rejections, each with its record.
        let replays = s.rejeux_of(id)?;
        Ok((page, open, replays))
    })
    .await;
    let ((found, rejets_total), a_rejouer, rejeux) = match found {
        Ok(v) => v,
        Err(r) => return r,
    };
    let noms = match super::rejets::noms(&app).await {
        Ok(n) => n,
        Err(r) => return r,
    };
    let rejets: Vec<super::rejets::RejetLigne> = found
        .iter()
        .map(|r| super::rejets::ligne(r, &noms))
        .collect();
    let logs: Vec<LogLine> = logs
        .iter()
        .zip(siret_names)
        .map(|((lid, l), nom)| LogLine {
            id: *lid,
            collectivite: match (l.global, nom) {
                (true, Some(n)) => {
                    format!("{n} ({}) — journal global du CDG", l.collectivite_siret)
                }
                (false, Some(n)) => format!("{n} ({})", l.collectivite_siret),
                (_, None) if l.collectivite_siret.is_empty() => "— (fichier rejeté)".into(),
                (_, None) => l.collectivite_siret.clone(),
            },
            label: l.label.clone(),
            badge: Badge(atmp_store::SuiviResultat::of(row.result, l.errors)),
            errors: l.errors,
            warnings: l.warnings,
        })
        .collect();
    let t = ImportT {
        badge: Badge(atmp_store::SuiviResultat::of(row.result, row.errors)),
        user: Some(a.nav()),
        message: None,
        error: None,
        id,
        emetteur: row.emetteur.clone().unwrap_or_else(|| "—".into()),
        type_fichier: type_libelle(row.type_fichier.as_deref()).into(),
        mode: row.mode.clone().unwrap_or_else(|| "—".into()),
        date_creation: fr_date_opt(row.date_creation.as_deref()),
        cdg: row.cdg_siret.clone().unwrap_or_else(|| "—".into()),
        debut: fr_datetime(&row.started_at),
        fin: fr_date_opt(row.finished_at.as_deref()),
        counts: if sees_all {
            counts_rows(&row.counts)
        } else {
            vec![]
        },
        row,
        logs,
        rejets,
        rejets_total,
        rejets_page,
        rejets_pages: rejets_total.div_ceil(REJETS_PAGE).max(1),
        a_rejouer,
        rejeux,
        acts: a.user.role != Role::Collectivite,
        purges,
        logs_purged,
    };
    render(StatusCode::OK, &t)
}

#[derive(Deserialize, Default)]
pub(super) struct DownloadParams {
    /// `tableur`: the spreadsheet form (CSV with a BOM, a header row, CRLF).
    #[serde(default)]
    format: String,
}

pub(super) async fn download_log(
    State(app): State<App>,
    a: Auth,
    headers: HeaderMap,
    Path((id, log, kind)): Path<(String, String, String)>,
    Query(params): Query<DownloadParams>,
) -> Response {
    let tableur = params.format == "tableur";
    let (Ok(id), Ok(log)) = (id.parse::<i64>(), log.parse::<i64>()) else {
        return not_found();
    };
    if kind != "complet" && kind != "erreurs" {
        return not_found();
    }
    let logs = match visible_import(&app, &a, id).await {
        Ok(Some((_, logs, _))) => logs,
        Ok(None) => return not_found(),
        Err(r) => return r,
    };
    let Some((_, l)) = logs.iter().find(|(lid, _)| *lid == log) else {
        return not_found();
    };
    let purged = match db(&app, move |s| s.purges_of(id)).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    if let Some((_, at)) = purged
        .iter()
        .find(|(k, _)| *k == atmp_store::PurgeKind::Journaux)
    {
        return page_simple(
            StatusCode::GONE,
            Some(a.nav()),
            "Journal supprimé",
            &format!(
                "Ce journal a été supprimé le {} : sa durée de conservation était atteinte.",
                fr_datetime(at)
            ),
        );
    }
    let key = if kind == "complet" {
        l.complet_path.clone()
    } else {
        l.erreurs_path.clone()
    };
    let opened = {
        let app = app.clone();
        tokio::task::spawn_blocking(move || app.files.open(&key)).await
    };
    let file = match opened {
        Ok(Ok(f)) => f,
        Ok(Err(e)) => return internal(e),
        Err(e) => return internal(e),
    };
    a.audit(
        &app,
        "telechargement_journal",
        format!("import {id}, journal {log} ({kind})"),
    )
    .await;
    let who = if l.global {
        format!("{}-global", l.collectivite_siret)
    } else {
        l.collectivite_siret.clone()
    };
    let name = if tableur {
        format!("import-{id}-{who}-{kind}.csv")
    } else {
        format!("import-{id}-{who}-{kind}.log")
    };
    // Large logs travel compressed when the browser says it can read gzip.
    let gzip = headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|e| {
            let mut it = e.split(';');
            let coding = it.next().unwrap_or("").trim();
            let refused = it.any(|p| matches!(p.trim(), "q=0" | "q=0.0" | "q=0.00" | "q=0.000"));
            coding.eq_ignore_ascii_case("gzip") && !refused
        });
    tracing::info!(
        user = a.user.id,
        import = id,
        log,
        tableur,
        gzip,
        "log downloaded"
    );
    let body = axum::body::Body::from_stream(crate::kept::stream(crate::kept::log_chunks(
        file, tableur, gzip,
    )));
    let mut r = (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
            (header::VARY, "accept-encoding".to_string()),
        ],
        body,
    )
        .into_response();
    if gzip {
        r.headers_mut()
            .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    r
}

pub(super) async fn download_receipt(
    State(app): State<App>,
    a: Auth,
    Path(id): Path<String>,
) -> Response {
    let Ok(id) = id.parse::<i64>() else {
        return not_found();
    };
    let (row, logs, sees_all) = match visible_import(&app, &a, id).await {
        Ok(Some(v)) => v,
        Ok(None) => return not_found(),
        Err(r) => return r,
    };
    // A user who sees only part of a grouped file gets the receipt of that part: its logs,
    // their errors and results, never the whole file's counts.
    let row = if sees_all {
        row
    } else {
        atmp_store::ImportRow {
            errors: logs.iter().map(|(_, l)| l.errors).sum(),
            warnings: logs.iter().map(|(_, l)| l.warnings).sum(),
            label: logs
                .iter()
                .map(|(_, l)| l.label.as_str())
                .collect::<Vec<_>>()
                .join(" ; "),
            ..row
        }
    };
    let job = match row.job_id {
        Some(j) => match db(&app, move |s| s.job(j)).await {
            Ok(j) => j,
            Err(r) => return r,
        },
        None => None,
    };
    let body = crate::worker::receipt(job.as_ref(), id, &row, &logs, sees_all);
    a.audit(&app, "telechargement_accuse", format!("import {id}"))
        .await;
    (
        [
            (
                header::CONTENT_TYPE,
                "application/json; charset=utf-8".to_string(),
            ),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"import-{id}-accuse.json\""),
            ),
        ],
        body,
    )
        .into_response()
}

// ---------------------------------------------------------------------------------------
// A log read on the page, filtered and paged

/// Lines of a log shown per page.
const LIGNES_PAGE: u64 = 100;

#[derive(Template)]
#[template(path = "journal_import.html")]
pub(super) struct JournalImportT {
    user: Option<NavUser>,
    message: Option<String>,
    error: Option<String>,
    id: i64,
    log_id: i64,
    collectivite: String,
    niveaux: Vec<(&'static str, &'static str)>,
    niveau: String,
    agent: String,
    texte: String,
    lignes: Vec<Vec<String>>,
    entrees: u64,
    total: u64,
    page: u64,
    pages: u64,
    query: String,
}

#[derive(Deserialize, Default)]
pub(super) struct JournalParams {
    #[serde(default)]
    niveau: String,
    #[serde(default)]
    agent: String,
    #[serde(default)]
    texte: String,
    #[serde(default)]
    page: Option<String>,
}

/// What a log view keeps: one page of the entries that pass the filters, and the counts.
struct LogView {
    lignes: Vec<Vec<String>>,
    entrees: u64,
    total: u64,
}

/// Reads a log entry by entry (an entry may span lines inside quotes), keeping only one
/// page of those that pass: memory bounded by a page, whatever the log's size.
fn read_log_view(
    src: Box<dyn std::io::Read + Send>,
    niveau: &str,
    agent: &str,
    texte: &str,
    skip: u64,
) -> std::io::Result<LogView> {
    use std::io::BufRead;
    let mut src = std::io::BufReader::with_capacity(64 * 1024, src);
    let (agent, texte) = (agent.to_lowercase(), texte.to_lowercase());
    let mut entry = Vec::with_capacity(1024);
    let mut v = LogView {
        lignes: Vec::new(),
        entrees: 0,
        total: 0,
    };
    loop {
        entry.clear();
        loop {
            let n = src.read_until(b'\n', &mut entry)?;
            if n == 0 || memchr::memchr_iter(b'"', &entry).count().is_multiple_of(2) {
                break;
            }
        }
        if entry.is_empty() {
            return Ok(v);
        }
        while matches!(entry.last(), Some(b'\n' | b'\r')) {
            entry.pop();
        }
        let mut f = atmp_integrator::split_line(&String::from_utf8_lossy(&entry));
        f.resize(6, String::new());
        v.entrees += 1;
        let keep = (niveau.is_empty() || f[1] == niveau)
            && (agent.is_empty() || f[2].to_lowercase().contains(&agent))
            && (texte.is_empty() || f.iter().any(|c| c.to_lowercase().contains(&texte)));
        if keep {
            if v.total >= skip && (v.lignes.len() as u64) < LIGNES_PAGE {
                v.lignes.push(f);
            }
            v.total += 1;
        }
    }
}

pub(super) async fn journal_view(
    State(app): State<App>,
    a: Auth,
    Path((id, log)): Path<(String, String)>,
    Query(q): Query<JournalParams>,
) -> Response {
    let (Ok(id), Ok(log)) = (id.parse::<i64>(), log.parse::<i64>()) else {
        return not_found();
    };
    let logs = match visible_import(&app, &a, id).await {
        Ok(Some((_, logs, _))) => logs,
        Ok(None) => return not_found(),
        Err(r) => return r,
    };
    let Some((_, l)) = logs.iter().find(|(lid, _)| *lid == log) else {
        return not_found();
    };
    let purged = match db(&app, move |s| s.purges_of(id)).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    if purged
        .iter()
        .any(|(k, _)| *k == atmp_store::PurgeKind::Journaux)
    {
        return page_simple(
            StatusCode::GONE,
            Some(a.nav()),
            "Journal supprimé",
            "Ce journal a été supprimé : sa durée de conservation était atteinte.",
        );
    }
    const NIVEAUX: [(&str, &str); 4] = [
        ("", "Tous"),
        ("ERROR", "Erreurs"),
        ("WARN", "Avertissements"),
        ("INFO", "Informations"),
    ];
    let niveau = NIVEAUX
        .iter()
        .find(|(v, _)| *v == q.niveau)
        .map(|(v, _)| v.to_string())
        .unwrap_or_default();
    let agent: String = q.agent.trim().chars().take(100).collect();
    let texte: String = q.texte.trim().chars().take(200).collect();
    let page: u64 = q
        .page
        .as_deref()
        .and_then(|s| s.parse().ok())
        .filter(|n| *n >= 1)
        .unwrap_or(1)
        .min(u64::MAX / LIGNES_PAGE);
    let key = l.complet_path.clone();
    let (n2, a2, t2) = (niveau.clone(), agent.clone(), texte.clone());
    let app2 = app.clone();
    let read = tokio::task::spawn_blocking(move || -> Result<LogView, String> {
        let f = app2.files.open(&key).map_err(|e| e.to_string())?;
        read_log_view(f, &n2, &a2, &t2, (page - 1) * LIGNES_PAGE).map_err(|e| e.to_string())
    })
    .await;
    let v = match read {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => return internal(e),
        Err(e) => return internal(e),
    };
    let names = match super::rejets::noms(&app).await {
        Ok(n) => n,
        Err(r) => return r,
    };
    let collectivite = match names.get(&l.collectivite_siret) {
        Some(n) if l.global => format!("{n} (journal global du CDG)"),
        Some(n) => n.clone(),
        None if l.collectivite_siret.is_empty() => "fichier rejeté".into(),
        None => l.collectivite_siret.clone(),
    };
    a.audit(
        &app,
        "consultation_journal",
        format!("import {id}, journal {log}"),
    )
    .await;
    let pages = v.total.div_ceil(LIGNES_PAGE).max(1);
    let t = JournalImportT {
        user: Some(a.nav()),
        message: None,
        error: None,
        id,
        log_id: log,
        collectivite,
        niveaux: NIVEAUX.to_vec(),
        query: format!(
            "/imports/{id}/journaux/{log}?niveau={}&agent={}&texte={}",
            enc(&niveau),
            enc(&agent),
            enc(&texte)
        ),
        niveau,
        agent,
        texte,
        lignes: v.lignes,
        entrees: v.entrees,
        total: v.total,
        page: page.min(pages),
        pages,
    };
    render(StatusCode::OK, &t)
}
