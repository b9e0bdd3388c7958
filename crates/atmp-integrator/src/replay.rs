//! The replay ("rejeu") of an import's open rejections: their records, kept as read, are put
//! back together into a file of their own and integrated under the same rules of §5, in one
//! transaction, with logs of their own linked to the original import.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;

use atmp_store::{Rejet, RejetEtat, RejetQuery, Store, StoreError};

use crate::{import_file, ImportOptions, ImportOutcome, IntegratorError, Replay};

/// Why a replay did not run (nothing was stored).
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("l'import n° {0} n'existe pas")]
    UnknownImport(i64),
    #[error("l'import n° {0} n'a aucun rejet à traiter : rien n'est rejoué")]
    Nothing(i64),
    #[error("le rejet n° {0} n'appartient pas à l'import n° {1}")]
    OtherImport(i64, i64),
    #[error("le rejet n° {0} n'est pas à traiter (état : {1}) : il n'est pas rejoué")]
    NotOpen(i64, &'static str),
    #[error("les données reçues du rejet n° {0} ont été purgées (durée de conservation atteinte) : il ne peut plus être rejoué")]
    Purged(i64),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Integrator(#[from] IntegratorError),
    #[error("erreur d'écriture du fichier de rejeu : {}", atmp_flux::io_error_fr(.0))]
    Io(#[from] std::io::Error),
}

/// The name a replay carries in logs and in the tracking table.
pub fn replay_name(of: i64, started_at: &str) -> String {
    let day = atmp_model::DateTime::parse(started_at)
        .map(|d| d.date().fr())
        .unwrap_or_else(|| started_at.chars().take(10).collect());
    format!("Rejeu de l'import n° {of} du {day}")
}

/// Replays the open rejections of import `of` (all of them, or those of `only`), as the
/// sender of that import. `opts` gives the logs' folder, the file store and the limits; its
/// `replay`, `display_name` and `emetteur` are set here.
pub fn replay(
    store: &mut dyn Store,
    of: i64,
    only: Option<&[i64]>,
    opts: &ImportOptions<'_>,
) -> Result<ImportOutcome, ReplayError> {
    let Some((row, _)) = store.import(of)? else {
        return Err(ReplayError::UnknownImport(of));
    };
    let (all, _) = store.rejets(&RejetQuery {
        import_id: Some(of),
        ..Default::default()
    })?;
    let mut all = all;
    all.sort_by_key(|r| r.id);
    let chosen: Vec<Rejet> = match only {
        Some(ids) => {
            let mut out = Vec::new();
            for id in ids {
                let Some(r) = all.iter().find(|r| r.id == *id) else {
                    return Err(ReplayError::OtherImport(*id, of));
                };
                if r.etat != RejetEtat::ATraiter {
                    return Err(ReplayError::NotOpen(*id, r.etat.libelle()));
                }
                out.push(r.clone());
            }
            out
        }
        None => all
            .iter()
            .filter(|r| r.etat == RejetEtat::ATraiter)
            .cloned()
            .collect(),
    };
    if chosen.is_empty() {
        return Err(ReplayError::Nothing(of));
    }
    if let Some(r) = chosen.iter().find(|r| r.new.source_xml.is_none()) {
        return Err(ReplayError::Purged(r.id));
    }
    let xml = replay_file(&row, &all, &chosen);
    std::fs::create_dir_all(&opts.logs_dir)?;
    let path = private_file(&opts.logs_dir, of, xml.as_bytes())?;
    let plan = Replay {
        of,
        originals: chosen,
    };
    let run = ImportOptions {
        emetteur: row.emetteur.clone(),
        logs_dir: opts.logs_dir.clone(),
        display_name: Some(replay_name(of, &row.started_at)),
        progress: opts.progress,
        job_id: None,
        limits: opts.limits,
        files: opts.files,
        replay: Some(&plan),
        dry_run: opts.dry_run,
    };
    let out = import_file(store, &path, &run);
    let _ = std::fs::remove_file(&path);
    let out = out?;
    if out.result == crate::ResultKind::Echoue {
        tracing::warn!(import_id = out.import_id, rejeu_de = of, "rejeu échoué");
    }
    Ok(out)
}

/// Writes the replay file, readable by this user only (it holds personal data).
fn private_file(dir: &std::path::Path, of: i64, bytes: &[u8]) -> std::io::Result<PathBuf> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    for n in 0u32.. {
        let p = dir.join(format!(".rejeu-{of}-{}-{n}.xml", std::process::id()));
        match opts.open(&p) {
            Ok(mut f) => {
                f.write_all(bytes)?;
                f.sync_all()?;
                return Ok(p);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    unreachable!("some name is free")
}

/// The file of a replay: a header as the original's sender would write it (mode COMPLET, no
/// period, created now), then, per collectivité, each top-level record of the chosen
/// rejections as it was read, without the sub-records of other rejections (those are not
/// replayed with it).
fn replay_file(row: &atmp_store::ImportRow, all: &[Rejet], chosen: &[Rejet]) -> String {
    use atmp_flux::escape;
    let mut out = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<flux version=\"1.0\">\n  <entete>\n",
    );
    out.push_str(&format!(
        "    <emetteur>{}</emetteur>\n    <typeFichier>{}</typeFichier>\n    <mode>COMPLET</mode>\n    <dateCreation>{}</dateCreation>\n",
        escape(row.emetteur.as_deref().unwrap_or_default(), false),
        escape(row.type_fichier.as_deref().unwrap_or("DECLARATION"), false),
        chrono::Local::now().format("%Y-%m-%dT%H:%M:%S")
    ));
    if let Some(cdg) = &row.cdg_siret {
        out.push_str(&format!("    <cdg>{}</cdg>\n", escape(cdg, false)));
    }
    out.push_str("  </entete>\n");
    // Blocks in the order of their first rejection; records in file order.
    let mut blocks: Vec<(String, Vec<(String, u64)>)> = Vec::new();
    for r in chosen {
        let i = match blocks
            .iter()
            .position(|(s, _)| *s == r.new.collectivite_siret)
        {
            Some(i) => i,
            None => {
                blocks.push((r.new.collectivite_siret.clone(), Vec::new()));
                blocks.len() - 1
            }
        };
        let key = (r.new.racine.clone(), r.new.ligne);
        if !blocks[i].1.iter().any(|(racine, _)| *racine == key.0) {
            blocks[i].1.push(key);
        }
    }
    let mut by_racine: HashMap<(&str, &str), Vec<&Rejet>> = HashMap::new();
    for r in all {
        by_racine
            .entry((&r.new.collectivite_siret, &r.new.racine))
            .or_default()
            .push(r);
    }
    for (siret, racines) in &mut blocks {
        racines.sort_by_key(|(_, line)| *line);
        out.push_str(&format!(
            "  <collectivite siret=\"{}\">\n",
            escape(siret, true)
        ));
        for (racine, _) in racines.iter() {
            let rows = &by_racine[&(siret.as_str(), racine.as_str())];
            let Some(xml) = rows.iter().find_map(|r| r.new.source_xml.as_deref()) else {
                continue;
            };
            let picked: Vec<(u32, u32)> = rows
                .iter()
                .filter(|r| chosen.iter().any(|c| c.id == r.id))
                .map(|r| (r.new.debut, r.new.fin))
                .collect();
            // Cut out the other rejections' records that hold no chosen one.
            let mut cuts: Vec<(u32, u32)> = rows
                .iter()
                .filter(|r| !chosen.iter().any(|c| c.id == r.id))
                .map(|r| (r.new.debut, r.new.fin))
                .filter(|(d, f)| !picked.iter().any(|(pd, pf)| d <= pd && pf <= f))
                .collect();
            cuts.sort();
            let mut at = 0usize;
            out.push_str("    ");
            for (d, f) in cuts {
                let (d, f) = (d as usize, f as usize);
                if d < at || f > xml.len() || !xml.is_char_boundary(d) || !xml.is_char_boundary(f) {
                    continue;
                }
                out.push_str(&xml[at..d]);
                at = f;
            }
            out.push_str(&xml[at..]);
            out.push('\n');
        }
        out.push_str("  </collectivite>\n");
    }
    out.push_str("</flux>\n");
    out
}
