//! The sender's dry run over FTPS: a file deposited in `test/` is checked against the real
//! base at once, as an import would be, then everything is rolled back. Its logs and receipt
//! come back in `retours/test/`; nothing of it is stored in the base (no job, no import row,
//! no rejection, no mail). The results are kept on this instance's disk, readable by the
//! platform's user only, for [`KEPT_DAYS`] days.

use std::path::{Path, PathBuf};

use crate::{PlatformError, Shared};

/// Days the results of a test stay in `retours/test/`.
pub const KEPT_DAYS: u64 = 7;

/// The folder of a sender's test results (`retours/test/`).
pub(crate) fn results_dir(shared: &Shared, emetteur: &str) -> PathBuf {
    shared.data_dir.join("essais-ftp").join(emetteur)
}

fn private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Tests the file `test/<name>` of a sender's folder, then removes it. Returns the receipt's
/// name in `retours/test/`.
pub(crate) fn test_file(
    shared: &Shared,
    emetteur: &str,
    name: &str,
) -> Result<Option<String>, PlatformError> {
    let src = shared.ftp_root().join(emetteur).join("test").join(name);
    if !src.is_file() {
        return Ok(None);
    }
    let out = results_dir(shared, emetteur);
    private_dir(&out)?;
    let stamp = chrono::Local::now().format("%Y%m%d-%H%M%S").to_string();
    let scratch = out.join(format!(".en-cours-{stamp}-{}", std::process::id()));
    private_dir(&scratch)?;
    let file = scratch.join("fichier");
    std::fs::rename(&src, &file)?;
    let logs_dir = scratch.join("journaux");
    let r = shared.with_store(|s| {
        let opts = atmp_integrator::ImportOptions {
            emetteur: Some(emetteur.to_string()),
            logs_dir: logs_dir.clone(),
            display_name: Some(name.to_string()),
            progress: None,
            job_id: None,
            limits: shared.config.limits,
            files: None,
            replay: None,
            dry_run: true,
        };
        Ok(atmp_integrator::import_file(s, &file, &opts))
    });
    let result = (|| -> Result<String, PlatformError> {
        let o = r??;
        let stem = format!("{}_{stamp}_essai", crate::worker::safe_stem(name));
        for l in &o.logs {
            let who = if l.global {
                format!("{}-global", l.collectivite)
            } else if l.collectivite.is_empty() {
                "fichier".to_string()
            } else {
                l.collectivite.clone()
            };
            for (kind, p) in [("complet", &l.complet), ("erreurs", &l.erreurs)] {
                let tmp = scratch.join(format!("{who}_{kind}"));
                std::fs::copy(p, &tmp)?;
                std::fs::rename(&tmp, out.join(format!("{stem}_{who}_{kind}.log")))?;
            }
        }
        let receipt = serde_json::json!({
            "accuse_de_reception": {
                "essai": true,
                "fichier": name,
                "sha256": o.sha256,
                "taille": o.size,
                "resultat": o.result.code(),
                "libelle": o.label,
                "erreurs": o.errors,
                "avertissements": o.warnings,
                "compteurs": atmp_store::RecordCounts::from(&o.counts),
                "enregistre": false,
            }
        });
        let receipt_name = format!("{stem}_accuse.json");
        let tmp = scratch.join("accuse");
        std::fs::write(
            &tmp,
            serde_json::to_vec_pretty(&receipt).expect("plain JSON"),
        )?;
        std::fs::rename(&tmp, out.join(&receipt_name))?;
        tracing::info!(emetteur, errors = o.errors, "fichier d'essai testé");
        Ok(receipt_name)
    })();
    let _ = std::fs::remove_dir_all(&scratch);
    result.map(Some)
}

/// Removes the test results older than [`KEPT_DAYS`] (and a test interrupted by a stop).
pub(crate) fn purge_old(shared: &Shared) -> u64 {
    let root = shared.data_dir.join("essais-ftp");
    let limit = std::time::Duration::from_secs(KEPT_DAYS * 24 * 3600);
    let mut n = 0;
    let Ok(senders) = std::fs::read_dir(&root) else {
        return 0;
    };
    for d in senders.flatten() {
        let Ok(files) = std::fs::read_dir(d.path()) else {
            continue;
        };
        for f in files.flatten() {
            let old = f
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > limit);
            let stale = f.file_name().to_string_lossy().starts_with(".en-cours-")
                && f.metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age > std::time::Duration::from_secs(24 * 3600));
            if old || stale {
                let p = f.path();
                let gone = if p.is_dir() {
                    std::fs::remove_dir_all(&p)
                } else {
                    std::fs::remove_file(&p)
                };
                if gone.is_ok() {
                    n += 1;
                }
            }
        }
    }
    n
}
