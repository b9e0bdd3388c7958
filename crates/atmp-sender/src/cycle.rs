//! `atmp sender run`: the weekly cycle, unattended.
//!
//! A cycle is: take up what a previous cycle left pending, export a différentiel whose
//! window, per destination, starts where the last delivered one ended (so a missed Saturday
//! is caught up, and a window is never sent twice), record the files in the journal, deliver
//! each (SERVICE before DECLARATION), wait for each receipt and record its result.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::deliver::{self, DeliverOptions, Trust};
use crate::export::{self, ExportMode, ExportOptions};
use crate::journal::Journal;
use crate::source::Source;
use crate::SenderError;

/// The configuration file of `atmp sender run` (TOML, French keys; see
/// `docs/guide-emetteurs.md`). Relative paths are relative to the file's folder.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    pub source: SourceSection,
    pub emetteur: EmetteurSection,
    pub plateforme: PlateformeSection,
    #[serde(default)]
    pub sortie: SortieSection,
    #[serde(default)]
    pub planification: PlanificationSection,
    #[serde(default)]
    pub envoi: EnvoiSection,
    #[serde(default)]
    pub journal: JournalSection,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSection {
    pub url: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmetteurSection {
    pub code: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlateformeSection {
    /// `HOST:PORT`.
    pub ftps: String,
    pub ca: Option<PathBuf>,
    pub empreinte: Option<String>,
    /// A file holding the FTPS password (else `ATMP_SENDER_PASSWORD`).
    pub mot_de_passe_fichier: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SortieSection {
    #[serde(default = "default_dossier")]
    pub dossier: PathBuf,
    #[serde(default)]
    pub gzip: bool,
}
impl Default for SortieSection {
    fn default() -> Self {
        SortieSection {
            dossier: default_dossier(),
            gzip: false,
        }
    }
}
fn default_dossier() -> PathBuf {
    PathBuf::from("fichiers")
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanificationSection {
    /// Cron syntax, local time.
    #[serde(default = "default_cron")]
    pub cron: String,
    /// `complet` (default): a destination never delivered gets a reprise d'antériorité
    /// first; `differentiel`: it starts with the last seven days, as `atmp export` does.
    #[serde(default = "default_premier")]
    pub premier_envoi: String,
}
impl Default for PlanificationSection {
    fn default() -> Self {
        PlanificationSection {
            cron: default_cron(),
            premier_envoi: default_premier(),
        }
    }
}
fn default_premier() -> String {
    "complet".into()
}
fn default_cron() -> String {
    "0 2 * * 6".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvoiSection {
    #[serde(default = "five")]
    pub tentatives: u32,
    #[serde(default = "thirty")]
    pub delai_initial_secondes: u64,
    #[serde(default = "six_hundred")]
    pub attente_accuse_secondes: u64,
    #[serde(default = "five_u64")]
    pub intervalle_accuse_secondes: u64,
    #[serde(default = "sixty")]
    pub delai_reseau_secondes: u64,
}
impl Default for EnvoiSection {
    fn default() -> Self {
        EnvoiSection {
            tentatives: 5,
            delai_initial_secondes: 30,
            attente_accuse_secondes: 600,
            intervalle_accuse_secondes: 5,
            delai_reseau_secondes: 60,
        }
    }
}
fn five() -> u32 {
    5
}
fn five_u64() -> u64 {
    5
}
fn thirty() -> u64 {
    30
}
fn sixty() -> u64 {
    60
}
fn six_hundred() -> u64 {
    600
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JournalSection {
    #[serde(default = "default_journal")]
    pub chemin: PathBuf,
}
impl Default for JournalSection {
    fn default() -> Self {
        JournalSection {
            chemin: default_journal(),
        }
    }
}
fn default_journal() -> PathBuf {
    PathBuf::from("journal.sqlite")
}

/// The configuration, checked and resolved.
#[derive(Debug)]
pub struct Config {
    pub source_url: String,
    pub emetteur: String,
    pub deliver: DeliverOptions,
    pub out: PathBuf,
    pub gzip: bool,
    pub cron: croner::Cron,
    pub journal: PathBuf,
    /// A destination never delivered gets a complet file first.
    pub first_complet: bool,
}

impl Config {
    /// Reads and checks the configuration file; the password comes from its file or from
    /// `ATMP_SENDER_PASSWORD`.
    pub fn load(path: &Path) -> Result<Config, SenderError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            SenderError::Usage(format!(
                "le fichier de configuration {} ne peut pas être lu : {e}",
                path.display()
            ))
        })?;
        let f: ConfigFile = toml::from_str(&text).map_err(|e| {
            SenderError::Usage(format!("configuration {} invalide : {e}", path.display()))
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let resolve = |p: &Path| {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        };
        let trust = match (&f.plateforme.ca, &f.plateforme.empreinte) {
            (Some(ca), None) => Trust::Ca(resolve(ca)),
            (None, Some(e)) => Trust::empreinte(e)?,
            _ => {
                return Err(SenderError::Usage(
                    "[plateforme] : donnez soit « ca » (fichier des autorités), soit « empreinte » (SHA-256 du certificat), l'un des deux exactement".into(),
                ))
            }
        };
        let password = match &f.plateforme.mot_de_passe_fichier {
            Some(p) => {
                let p = resolve(p);
                {
                    use std::os::unix::fs::MetadataExt;
                    if let Ok(m) = std::fs::metadata(&p) {
                        if m.mode() & 0o077 != 0 {
                            tracing::warn!(path = %p.display(), "le fichier du mot de passe est lisible par d'autres utilisateurs : chmod 600 conseillé");
                        }
                    }
                }
                std::fs::read_to_string(&p)
                    .map_err(|e| {
                        SenderError::Usage(format!(
                            "le fichier du mot de passe {} ne peut pas être lu : {e}",
                            p.display()
                        ))
                    })?
                    .trim_end_matches(['\r', '\n'])
                    .to_string()
            }
            None => std::env::var("ATMP_SENDER_PASSWORD").map_err(|_| {
                SenderError::Usage(
                    "mot de passe FTPS absent : [plateforme] mot_de_passe_fichier, ou la variable ATMP_SENDER_PASSWORD".into(),
                )
            })?,
        };
        let cron = croner::Cron::from_str(&f.planification.cron).map_err(|e| {
            SenderError::Usage(format!(
                "[planification] cron invalide « {} » : {e}",
                f.planification.cron
            ))
        })?;
        let mut deliver =
            DeliverOptions::new(&f.plateforme.ftps, &f.emetteur.code, &password, trust);
        deliver.attempts = f.envoi.tentatives.max(1);
        deliver.first_delay = Duration::from_secs(f.envoi.delai_initial_secondes);
        deliver.receipt_wait = Duration::from_secs(f.envoi.attente_accuse_secondes);
        deliver.receipt_poll = Duration::from_secs(f.envoi.intervalle_accuse_secondes.max(1));
        deliver.io_timeout = Duration::from_secs(f.envoi.delai_reseau_secondes.max(1));
        let first_complet = match f.planification.premier_envoi.as_str() {
            "complet" => true,
            "differentiel" => false,
            other => {
                return Err(SenderError::Usage(format!(
                    "[planification] premier_envoi « {other} » invalide : complet ou differentiel"
                )))
            }
        };
        Ok(Config {
            first_complet,
            source_url: f.source.url,
            emetteur: f.emetteur.code,
            deliver,
            out: resolve(&f.sortie.dossier),
            gzip: f.sortie.gzip,
            cron,
            journal: resolve(&f.journal.chemin),
        })
    }
}

use std::str::FromStr;

fn now_text() -> String {
    chrono::Local::now()
        .naive_local()
        .format("%Y-%m-%dT%H:%M:%S")
        .to_string()
}

/// What a cycle did, for the operator.
#[derive(Debug, Default)]
pub struct CycleOutcome {
    pub cycle: Option<i64>,
    /// (file name, platform result) for each file settled.
    pub results: Vec<(String, String)>,
    /// What did not work (the cycle is then `echoue` and taken up at the next start).
    pub errors: Vec<String>,
}

/// Delivers the files a previous cycle left pending, then runs one cycle as of `day` (None:
/// today): a différentiel for every destination already delivered, and — unless
/// `premier_envoi` says otherwise — a complet (*reprise d'antériorité*) for a destination
/// never delivered, so that its history is not cut at seven days.
pub fn run_once(
    cfg: &Config,
    journal: &mut Journal,
    day: Option<atmp_model::Date>,
) -> Result<CycleOutcome, SenderError> {
    let mut outcome = CycleOutcome::default();
    take_up(cfg, journal, &mut outcome)?;
    journal.settle_cycles()?;
    let real = chrono::Local::now().naive_local();
    let now = match day {
        Some(d) => d.naive().and_time(real.time()),
        None => real,
    };
    let today = now.date().format("%Y-%m-%d").to_string();
    let cycle = journal.start_cycle(&now_text(), "differentiel", Some(&today))?;
    outcome.cycle = Some(cycle);
    let exported = (|| {
        let source = Source::open(&cfg.source_url)?;
        let known: std::collections::HashMap<String, Option<atmp_model::Date>> =
            std::collections::HashMap::new();
        let known = std::cell::RefCell::new(known);
        let last = |dest: &str| {
            *known
                .borrow_mut()
                .entry(dest.to_string())
                .or_insert_with(|| journal.next_start(dest).ok().flatten())
        };
        let is_new = |dest: &str| last(dest).is_none();
        let is_known = |dest: &str| last(dest).is_some();
        let mut fichiers = Vec::new();
        let mut ecartes = Vec::new();
        if cfg.first_complet {
            let r = export::export(
                &source,
                &ExportOptions {
                    emetteur: cfg.emetteur.clone(),
                    mode: ExportMode::Complet,
                    out: cfg.out.clone(),
                    jusqu_au: None,
                    depuis: None,
                    limite_anteriorite: None,
                    gzip: cfg.gzip,
                    now,
                    last_fin: &last,
                    only: Some(&is_new),
                },
            )?;
            // The reprise covers everything entered before today: the next window starts here.
            for mut f in r.fichiers {
                f.fin = Some(today.clone());
                fichiers.push(f);
            }
            ecartes.extend(r.ecartes);
        }
        let r = export::export(
            &source,
            &ExportOptions {
                emetteur: cfg.emetteur.clone(),
                mode: ExportMode::Differentiel,
                out: cfg.out.clone(),
                jusqu_au: Some(atmp_model::Date::parse(&today).expect("date")),
                depuis: None,
                limite_anteriorite: None,
                gzip: cfg.gzip,
                now,
                last_fin: &last,
                only: if cfg.first_complet {
                    Some(&is_known)
                } else {
                    None
                },
            },
        )?;
        fichiers.extend(r.fichiers);
        ecartes.extend(r.ecartes);
        Ok::<_, SenderError>((fichiers, ecartes))
    })();
    let (fichiers, ecartes) = match exported {
        Ok(r) => r,
        Err(e) => {
            journal.end_cycle(cycle, &now_text(), Some(&e.to_string()))?;
            return Err(e);
        }
    };
    for e in &ecartes {
        tracing::warn!(table = e.table, id = %e.id, "ligne de la source écartée");
    }
    let complet = fichiers.iter().any(|f| f.path.contains("_COMPLET_"));
    let differentiel = fichiers.iter().any(|f| f.path.contains("_DIFFERENTIEL_"));
    if complet {
        journal.set_cycle_mode(
            cycle,
            if differentiel {
                "complet+differentiel"
            } else {
                "complet"
            },
        )?;
    }
    journal.add_files(cycle, &fichiers, &now_text())?;
    take_up(cfg, journal, &mut outcome)?;
    let err = if outcome.errors.is_empty() {
        None
    } else {
        Some(outcome.errors.join(" ; "))
    };
    journal.end_cycle(cycle, &now_text(), err.as_deref())?;
    Ok(outcome)
}

/// Sends every pending file (in order: SERVICE before DECLARATION of a destination, as they
/// were produced) and waits for the receipts.
fn take_up(
    cfg: &Config,
    journal: &mut Journal,
    outcome: &mut CycleOutcome,
) -> Result<(), SenderError> {
    for f in journal.pending()? {
        if f.etat == "a_envoyer" {
            let path = PathBuf::from(&f.chemin);
            if deliver::sha256_file(&path).ok().as_deref() != Some(f.sha256.as_str()) {
                let e = format!(
                    "{} : fichier absent ou modifié depuis sa production, il n'est pas envoyé",
                    f.nom
                );
                journal.attempt_failed(f.id, &e)?;
                outcome.errors.push(e);
                continue;
            }
            let mut retry = |n: u32, why: &deliver::Failure| {
                tracing::warn!(attempt = n, reason = %why.message, "envoi : tentative échouée");
                let _ = journal.attempt_failed(f.id, &why.message);
            };
            match deliver::send_file(&cfg.deliver, &path, &mut retry) {
                Ok(_) => journal.sent(f.id, &now_text())?,
                Err(e) => {
                    outcome.errors.push(format!("{} : {e}", f.nom));
                    // Files of the same destination wait: a DECLARATION never goes before
                    // its SERVICE file.
                    break;
                }
            }
        }
        match deliver::fetch_receipt(&cfg.deliver, &f.nom, &f.sha256) {
            Ok(Some(r)) => {
                journal.receipt(f.id, &r, &now_text())?;
                outcome.results.push((f.nom.clone(), r.libelle.clone()));
            }
            Ok(None) => outcome.errors.push(format!(
                "{} : accusé de réception non reçu à temps ; il sera relu au prochain cycle",
                f.nom
            )),
            Err(e) => outcome.errors.push(format!("{} : {e}", f.nom)),
        }
    }
    Ok(())
}

/// Whether the planning had an occurrence since the last cycle started (the sender was
/// stopped at that time): then a cycle runs at once.
pub fn missed<Tz: chrono::TimeZone>(
    cron: &croner::Cron,
    now: &chrono::DateTime<Tz>,
    last_start: Option<&str>,
) -> bool {
    let Some(last) = last_start else {
        return false;
    };
    match cron.find_previous_occurrence(now, false) {
        Ok(prev) => {
            last < prev
                .naive_local()
                .format("%Y-%m-%dT%H:%M:%S")
                .to_string()
                .as_str()
        }
        Err(_) => false,
    }
}

/// The scheduler: runs a cycle at every occurrence of the planning, for ever. A cycle missed
/// while the sender was stopped is run at start.
pub fn run_forever(cfg: &Config, journal: &mut Journal) -> Result<(), SenderError> {
    let mut first = true;
    loop {
        let now = chrono::Local::now();
        let run_now = first && missed(&cfg.cron, &now, journal.last_cycle_start()?.as_deref());
        first = false;
        if !run_now {
            let next = cfg
                .cron
                .find_next_occurrence(&now, false)
                .map_err(|e| SenderError::Usage(format!("planification : {e}")))?;
            tracing::info!(prochain = %next.format("%Y-%m-%d %H:%M"), "en attente du prochain cycle");
            // Sleep in short steps: a clock change or a suspended machine is caught up.
            loop {
                let left = next.signed_duration_since(chrono::Local::now());
                if left <= chrono::Duration::zero() {
                    break;
                }
                std::thread::sleep(
                    left.to_std()
                        .unwrap_or_default()
                        .min(Duration::from_secs(60)),
                );
            }
        }
        match run_once(cfg, journal, None) {
            Ok(o) => {
                for (f, r) in &o.results {
                    tracing::info!(fichier = %f, resultat = %r, "fichier livré");
                }
                for e in &o.errors {
                    tracing::error!(erreur = %e, "cycle incomplet");
                }
            }
            Err(e) => tracing::error!(erreur = %e, "cycle échoué ; repris au prochain"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn the_default_planning_is_saturday_two_oclock_and_a_missed_one_runs_at_start() {
        let cron = croner::Cron::from_str(&default_cron()).unwrap();
        // Wednesday 2 December 2026, 15:00 (UTC, so that the test does not depend on the zone).
        let now = chrono::Utc.with_ymd_and_hms(2026, 12, 2, 15, 0, 0).unwrap();
        let next = cron.find_next_occurrence(&now, false).unwrap();
        assert_eq!(
            next,
            chrono::Utc.with_ymd_and_hms(2026, 12, 5, 2, 0, 0).unwrap()
        );
        // The last cycle ran on Saturday 21 November: the one of 28 November was missed.
        assert!(missed(&cron, &now, Some("2026-11-21T02:00:03")));
        // It ran on 28 November: nothing missed. No cycle ever: wait for the planning.
        assert!(!missed(&cron, &now, Some("2026-11-28T02:00:01")));
        assert!(!missed(&cron, &now, None));
    }
}
