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
    /// Imports whose rejections' personal data were purged.
    pub rejets: u64,
    /// Results of senders' tests (`retours/test/`) past their time.
    pub essais: u64,
    /// Files of the base that no row named for a day (see [`atmp_store::FileStore::sweep`]).
    pub orphans: u64,
}

/// Runs the purge now, then every `purge_interval`, until the process ends.
pub fn run(shared: Arc<Shared>) {
    loop {
        match shared.with_store(|s| Ok(purge_once(&shared, s))) {
            Ok(Ok(r)) if r != PurgeReport::default() => tracing::info!(
                received_files = r.received_files,
                log_sets = r.log_sets,
                rejets = r.rejets,
                orphans = r.orphans,
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

/// One purge: received files older than `retention_received_days`, logs older than
/// `retention_logs_days` (and with them the results of the sender's `retours/`), from the
/// file store: on PostgreSQL, the base's large objects, whichever instance runs it.
pub fn purge_once(shared: &Shared, store: &mut dyn Store) -> Result<PurgeReport, PlatformError> {
    let mut report = PurgeReport::default();
    let received = store.purge_candidates(
        PurgeKind::FichierRecu,
        &before(shared.config.retention_received_days),
    )?;
    for c in received {
        if !c.stored_path.is_empty() {
            shared.files.remove(&c.stored_path)?;
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
    for c in store.purge_candidates(
        PurgeKind::Rejets,
        &before(shared.config.retention_rejets_days),
    )? {
        store.purge_rejets(c.import_id)?;
        report.rejets += 1;
    }
    report.essais = crate::essai::purge_old(shared);
    // A file kept a day ago that no row names will never be named (the intake retries its
    // job for an hour at most): personal data nobody can reach, so it goes.
    report.orphans = shared.files.sweep(&before(1))?;
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
    // The sender's `retours/` lists an import's results from these same files, and leaves
    // out an import whose logs are purged.
    for (_, l) in &logs {
        shared.files.remove(&l.complet_path)?;
        shared.files.remove(&l.erreurs_path)?;
        // The job's own folder of logs, once empty.
        if atmp_store::is_local_key(&l.complet_path) {
            if let Some(dir) = Path::new(&l.complet_path).parent() {
                let _ = std::fs::remove_dir(dir);
            }
        }
    }
    Ok(())
}

/// The default time between two purges.
pub const DAILY: Duration = Duration::from_secs(24 * 3600);
