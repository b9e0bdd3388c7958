//! Retention: the received files and the logs of old imports hold personal data and are kept
//! for a configured time only. A purge runs at start and then every day: it deletes the
//! files (the space is freed at once: nothing of them is in the base), then records for each
//! import what was purged and when, so that the tracking table stays whole and its page says
//! so. Deleting before recording makes a purge interrupted at any point safe to run again.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use atmp_store::{PurgeCandidate, PurgeKind, Store};

use crate::{PlatformError, Shared};

/// What one purge removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PurgeReport {
    pub received_files: u64,
    pub log_sets: u64,
}

/// Runs the purge now, then every `purge_interval`, until the process ends.
pub fn run(shared: Arc<Shared>) {
    loop {
        match shared.with_store(|s| Ok(purge_once(&shared, s))) {
            Ok(Ok(r)) if r != PurgeReport::default() => tracing::info!(
                received_files = r.received_files,
                log_sets = r.log_sets,
                "retention purge"
            ),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "retention purge failed, retried later"),
            Err(e) => tracing::error!(error = %e, "retention purge failed, retried later"),
        }
        std::thread::sleep(shared.config.purge_interval);
    }
}

fn before(days: u32) -> String {
    (chrono::Local::now() - chrono::Duration::days(days as i64))
        .format("%Y-%m-%dT%H:%M:%S")
        .to_string()
}

/// Removes a file; one already gone is fine (a purge taken up again).
fn remove(p: &Path) -> Result<(), PlatformError> {
    match std::fs::remove_file(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// One purge: received files older than `retention_received_days`, logs older than
/// `retention_logs_days` (with their copies in the sender's `retours/`).
pub fn purge_once(shared: &Shared, store: &mut dyn Store) -> Result<PurgeReport, PlatformError> {
    let mut report = PurgeReport::default();
    let received = store.purge_candidates(
        PurgeKind::FichierRecu,
        &before(shared.config.retention_received_days),
    )?;
    for c in received {
        if !c.stored_path.is_empty() {
            remove(Path::new(&c.stored_path))?;
        }
        store.record_purge(c.import_id, PurgeKind::FichierRecu)?;
        report.received_files += 1;
    }
    let logs = store.purge_candidates(
        PurgeKind::Journaux,
        &before(shared.config.retention_logs_days),
    )?;
    for c in logs {
        purge_logs(shared, store, &c)?;
        store.record_purge(c.import_id, PurgeKind::Journaux)?;
        report.log_sets += 1;
    }
    Ok(report)
}

fn purge_logs(
    shared: &Shared,
    store: &mut dyn Store,
    c: &PurgeCandidate,
) -> Result<(), PlatformError> {
    let Some((_, logs)) = store.import(c.import_id)? else {
        return Ok(());
    };
    let job = match c.job_id {
        Some(j) => store.job(j)?,
        None => None,
    };
    for (_, l) in &logs {
        remove(Path::new(&l.complet_path))?;
        remove(Path::new(&l.erreurs_path))?;
        if let Some(job) = &job {
            let retours = shared.ftp_root().join(&job.emetteur).join("retours");
            for kind in ["complet", "erreurs"] {
                remove(&retours.join(crate::worker::retours_name(job, l, kind)))?;
            }
        }
        // The job's own folder of logs, once empty.
        if let Some(dir) = Path::new(&l.complet_path).parent() {
            let _ = std::fs::remove_dir(dir);
        }
    }
    if let Some(job) = &job {
        let retours = shared.ftp_root().join(&job.emetteur).join("retours");
        remove(&retours.join(crate::worker::receipt_name(job)))?;
    }
    Ok(())
}

/// The default time between two purges.
pub const DAILY: Duration = Duration::from_secs(24 * 3600);
