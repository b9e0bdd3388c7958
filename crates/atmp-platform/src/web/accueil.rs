//! The web: "Accueil", the dashboard of a role — what came in this month, the last file of
//! each sender and collectivité, what needs attention (errors, open rejections, files
//! waiting), and the imports of the last six months by week, as a server-rendered SVG chart
//! with its data as a table and as CSV.

#[allow(unused_imports)]
use super::*;

use atmp_store::SuiviResultat;

/// Weeks in the chart (six months).
const SEMAINES: usize = 26;
/// The most lines of the tracking table the dashboard reads (six months of a large
/// platform); beyond, the figures say they are partial.
const MAX_LIGNES: u64 = 100_000;
/// The kinds the chart stacks, bottom to top, with their colour (AA against white).
const SERIES: [(SuiviResultat, &str); 4] = [
    (SuiviResultat::Reussi, "#18753c"),
    (SuiviResultat::ReussiAvecErreurs, "#fc5d00"),
    (SuiviResultat::Echoue, "#ce0500"),
    (SuiviResultat::Doublon, "#a558a0"),
];

pub(super) struct Semaine {
    /// Monday, `DD/MM/YYYY`.
    debut: String,
    /// Files per kind of [`SERIES`].
    n: [u64; 4],
}

impl Semaine {
    fn total(&self) -> u64 {
        self.n.iter().sum()
    }
}

pub(super) struct Dernier {
    emetteur: String,
    collectivite: String,
    date: String,
    il_y_a: String,
    import_id: i64,
}

#[derive(Template)]
#[template(path = "accueil.html")]
pub(super) struct AccueilT {
    user: Option<NavUser>,
    message: Option<String>,
    error: Option<String>,
    portee: String,
    mois: String,
    fichiers_mois: u64,
    avec_erreurs_mois: u64,
    rejets_ouverts: u64,
    en_attente: u64,
    derniers: Vec<Dernier>,
    /// The platform sees the queue: (file, sender, size, state).
    file: Vec<(String, String, String, &'static str)>,
    voit_file: bool,
    semaines: Vec<Semaine>,
    graphique: String,
    total_graphique: u64,
    partiel: bool,
}

/// What the dashboard counts, read from the tracking table's rows.
struct Figures {
    fichiers_mois: u64,
    avec_erreurs_mois: u64,
    en_cours: u64,
    derniers: Vec<Dernier>,
    semaines: Vec<Semaine>,
    partiel: bool,
}

fn monday(d: chrono::NaiveDate) -> chrono::NaiveDate {
    use chrono::Datelike;
    d - chrono::Duration::days(d.weekday().num_days_from_monday() as i64)
}

/// "il y a 3 jours", "il y a 2 h", "à l'instant".
fn il_y_a(then: &str, now: chrono::NaiveDateTime) -> String {
    let Ok(t) = chrono::NaiveDateTime::parse_from_str(then, "%Y-%m-%dT%H:%M:%S") else {
        return String::new();
    };
    let d = now - t;
    match (d.num_days(), d.num_hours(), d.num_minutes()) {
        (j, _, _) if j >= 1 => format!("il y a {j} jour{}", if j > 1 { "s" } else { "" }),
        (_, h, _) if h >= 1 => format!("il y a {h} h"),
        (_, _, m) if m >= 1 => format!("il y a {m} min"),
        _ => "à l'instant".into(),
    }
}

async fn figures(app: &App, a: &Auth) -> Result<Figures, Response> {
    let now = chrono::Local::now().naive_local();
    let today = now.date();
    let first_week = monday(today) - chrono::Duration::weeks(SEMAINES as i64 - 1);
    use chrono::Datelike;
    let month_start = today.with_day(1).unwrap_or(today);
    let since = first_week.min(month_start);
    let q = SuiviQuery {
        scope: a.scope(),
        du: since.format("%Y-%m-%d").to_string(),
        au: today.format("%Y-%m-%d").to_string(),
        limit: MAX_LIGNES,
        offset: 0,
        ..Default::default()
    };
    let (rows, total) = db(app, move |s| s.suivi(&q)).await?;
    // One file may have several lines (a CDG's grouped file): counted once, with the
    // errors of the lines the user sees.
    let mut imports: std::collections::BTreeMap<i64, (String, atmp_store::ImportResult, u64)> =
        Default::default();
    let mut derniers: std::collections::BTreeMap<(String, String), (String, i64)> =
        Default::default();
    for r in &rows {
        let e = imports
            .entry(r.import_id)
            .or_insert((r.started_at.clone(), r.result, 0));
        e.2 += r.errors;
        if r.global || r.collectivite_siret.is_empty() {
            continue;
        }
        let key = (
            r.emetteur.clone().unwrap_or_else(|| "—".into()),
            r.collectivite_nom
                .clone()
                .unwrap_or_else(|| r.collectivite_siret.clone()),
        );
        // Rows come newest first: the first seen is the last file.
        derniers
            .entry(key)
            .or_insert((r.started_at.clone(), r.import_id));
    }
    let mut semaines: Vec<Semaine> = (0..SEMAINES)
        .map(|i| Semaine {
            debut: (first_week + chrono::Duration::weeks(i as i64))
                .format("%d/%m/%Y")
                .to_string(),
            n: [0; 4],
        })
        .collect();
    let (mut fichiers_mois, mut avec_erreurs_mois, mut en_cours) = (0, 0, 0);
    let month = month_start.format("%Y-%m-%d").to_string();
    for (started, result, errors) in imports.values() {
        let kind = SuiviResultat::of(*result, *errors);
        if kind == SuiviResultat::EnCours {
            en_cours += 1;
            continue;
        }
        if started.as_str() >= month.as_str() {
            fichiers_mois += 1;
            if matches!(
                kind,
                SuiviResultat::ReussiAvecErreurs | SuiviResultat::Echoue
            ) {
                avec_erreurs_mois += 1;
            }
        }
        let Ok(d) =
            chrono::NaiveDate::parse_from_str(&started[..started.len().min(10)], "%Y-%m-%d")
        else {
            continue;
        };
        if d < first_week {
            continue;
        }
        let w = ((monday(d) - first_week).num_weeks() as usize).min(SEMAINES - 1);
        if let Some(k) = SERIES.iter().position(|(s, _)| *s == kind) {
            semaines[w].n[k] += 1;
        }
    }
    let mut derniers: Vec<Dernier> = derniers
        .into_iter()
        .map(|((emetteur, collectivite), (at, import_id))| Dernier {
            emetteur,
            collectivite,
            date: super::suivi::fr_datetime(&at),
            il_y_a: il_y_a(&at, now),
            import_id,
        })
        .collect();
    derniers.sort_by(|x, y| (&x.collectivite, &x.emetteur).cmp(&(&y.collectivite, &y.emetteur)));
    Ok(Figures {
        fichiers_mois,
        avec_erreurs_mois,
        en_cours,
        derniers,
        semaines,
        partiel: total > MAX_LIGNES,
    })
}

/// The stacked bars, in SVG (numbers and fixed words only: no user text).
fn svg(semaines: &[Semaine]) -> String {
    let (w, h, left, bottom, top) = (780.0f64, 300.0f64, 40.0f64, 40.0f64, 10.0f64);
    let max = semaines
        .iter()
        .map(Semaine::total)
        .max()
        .unwrap_or(0)
        .max(1);
    // A round scale: 1, 2, 5, 10, 20, 50…
    let step = {
        let raw = (max as f64 / 4.0).max(1.0);
        let p = 10f64.powf(raw.log10().floor());
        [1.0, 2.0, 5.0, 10.0]
            .iter()
            .map(|m| m * p)
            .find(|s| *s >= raw)
            .unwrap_or(10.0 * p)
    };
    let top_value = (max as f64 / step).ceil() * step;
    let plot_h = h - bottom - top;
    let bar_w = (w - left) / semaines.len() as f64;
    let mut o = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {w} {h}\" role=\"img\" aria-labelledby=\"graphique-titre\" focusable=\"false\">"
    );
    let mut v = 0.0;
    while v <= top_value + 0.5 {
        let y = top + plot_h - v / top_value * plot_h;
        o.push_str(&format!(
            "<line x1=\"{left}\" x2=\"{w}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#929292\" stroke-width=\"0.5\"/><text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"end\" fill=\"#3a3a3a\">{}</text>",
            left - 4.0,
            y + 4.0,
            v as u64
        ));
        v += step;
    }
    for (i, s) in semaines.iter().enumerate() {
        let x = left + i as f64 * bar_w + bar_w * 0.15;
        let mut y = top + plot_h;
        for (k, (_, colour)) in SERIES.iter().enumerate() {
            let bh = s.n[k] as f64 / top_value * plot_h;
            if bh > 0.0 {
                y -= bh;
                o.push_str(&format!(
                    "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{bh:.1}\" fill=\"{colour}\"/>",
                    bar_w * 0.7
                ));
            }
        }
        if i % 4 == 0 {
            o.push_str(&format!(
                "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" fill=\"#3a3a3a\">{}</text>",
                x,
                h - bottom + 16.0,
                &s.debut[..5]
            ));
        }
    }
    o.push_str("</svg>");
    o
}

pub(super) async fn accueil(State(app): State<App>, a: Auth) -> Response {
    let f = match figures(&app, &a).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    let sirets = match super::rejets::visible_sirets(&app, &a).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let rq = atmp_store::RejetQuery {
        sirets,
        etat: Some(atmp_store::RejetEtat::ATraiter),
        limit: 1,
        ..Default::default()
    };
    let voit_file = a.user.role == Role::Plateforme;
    let (rejets_ouverts, jobs) = match db(&app, move |s| {
        let (_, n) = s.rejets(&rq)?;
        let jobs = if voit_file {
            s.waiting_jobs(50)?
        } else {
            vec![]
        };
        Ok((n, jobs))
    })
    .await
    {
        Ok(v) => v,
        Err(r) => return r,
    };
    let portee = match a.scope() {
        Scope::Tout => "toute la plate-forme".to_string(),
        _ => match (&a.user.collectivite_nom, a.user.role) {
            (Some(n), Role::Cdg) => format!("{n} et ses collectivités rattachées"),
            (Some(n), _) => n.clone(),
            _ => "votre collectivité".into(),
        },
    };
    let t = AccueilT {
        user: Some(a.nav()),
        message: None,
        error: None,
        portee,
        mois: chrono::Local::now().format("%m/%Y").to_string(),
        fichiers_mois: f.fichiers_mois,
        avec_erreurs_mois: f.avec_erreurs_mois,
        rejets_ouverts,
        en_attente: if voit_file {
            jobs.len() as u64
        } else {
            f.en_cours
        },
        derniers: f.derniers,
        file: jobs
            .iter()
            .map(|j| {
                (
                    j.file_name.clone(),
                    j.emetteur.clone(),
                    taille(j.size),
                    match j.state {
                        atmp_store::JobState::EnCours => "en cours d'intégration",
                        _ => "en attente",
                    },
                )
            })
            .collect(),
        voit_file,
        graphique: svg(&f.semaines),
        total_graphique: f.semaines.iter().map(Semaine::total).sum(),
        semaines: f.semaines,
        partiel: f.partiel,
    };
    render(StatusCode::OK, &t)
}

/// A size in French units.
fn taille(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.1} Go", n as f64 / (1u64 << 30) as f64),
        n if n >= 1 << 20 => format!("{:.1} Mo", n as f64 / (1u64 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.1} ko", n as f64 / 1024.0),
        n => format!("{n} octets"),
    }
    .replace('.', ",")
}

/// The chart's data as CSV (UTF-8 with BOM, `;`, CRLF), for a spreadsheet.
pub(super) async fn accueil_csv(State(app): State<App>, a: Auth) -> Response {
    let f = match figures(&app, &a).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    let mut o =
        String::from("\u{feff}Semaine du;Réussi;Réussi avec erreurs;Échoué;Doublon;Total\r\n");
    for s in &f.semaines {
        o.push_str(&format!(
            "{};{};{};{};{};{}\r\n",
            s.debut,
            s.n[0],
            s.n[1],
            s.n[2],
            s.n[3],
            s.total()
        ));
    }
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"imports-par-semaine.csv\"",
            ),
        ],
        o,
    )
        .into_response()
}
