//! The integration rules of FORMAT.md §5 and the logs of §6.
//!
//! One file goes through three stages: the reader thread (bytes → checked records, see
//! `atmp-flux`), the rules (this crate: match each record against the base, add what is new,
//! never overwrite) inside one storage transaction, and the logs. The file is acknowledged
//! (import row `reussi`, logs published) only once its transaction has committed.

mod counts;
mod log;
mod replay;
mod rules;

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use sha2::{Digest, Sha256};

use atmp_flux::Header;
use atmp_model::Nomenclatures;
use atmp_store::{now, ImportLog, ImportRow, Store, StoreError};

pub use counts::{Counts, Outcome};
pub use log::{
    is_formula, push_field, split_line, split_records, write_tableur, Level, LogFiles,
    TABLEUR_HEADER,
};
pub use replay::{replay, replay_name, ReplayError};
pub use rules::{table, Replay};

use log::Logs;

/// The line a dry run's logs carry after their opening line.
pub const ESSAI: &str =
    "ESSAI : fichier testé contre la base sans rien enregistrer (aucune donnée, aucun import, aucun rejet)";

/// The result of a file (§6.4, §7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResultKind {
    Reussi,
    Echoue,
    Doublon,
}

impl ResultKind {
    /// `reussi`, `echoue` or `doublon`: the stored code of the import row.
    pub fn code(&self) -> &'static str {
        atmp_store::ImportResult::from(*self).code()
    }
}

impl From<ResultKind> for atmp_store::ImportResult {
    fn from(k: ResultKind) -> Self {
        match k {
            ResultKind::Reussi => atmp_store::ImportResult::Reussi,
            ResultKind::Echoue => atmp_store::ImportResult::Echoue,
            ResultKind::Doublon => atmp_store::ImportResult::Doublon,
        }
    }
}

/// How to import a file.
pub struct ImportOptions<'a> {
    /// The sender account that delivered the file; `None`: the header's `emetteur`.
    pub emetteur: Option<String>,
    /// Where the logs are written.
    pub logs_dir: PathBuf,
    /// The file name shown in logs and in the import history (default: the path's name).
    pub display_name: Option<String>,
    /// Called now and then with the number of (decoded) bytes read.
    pub progress: Option<&'a (dyn Fn(u64) + Sync)>,
    /// The platform job this file is, recorded in the file's own transaction.
    pub job_id: Option<i64>,
    /// The limits of the read stage (size, depth, text length…).
    pub limits: atmp_flux::Limits,
    /// Where the logs are kept once complete. `None`, or a store on the local disk: as files
    /// under `logs_dir` (the command line, SQLite). A store in the base (PostgreSQL, several
    /// instances): in it, inside the file's own transaction when there is one, so that a log
    /// exists exactly when its import does and every instance reads it; the local files
    /// are then removed.
    pub files: Option<&'a dyn atmp_store::FileStore>,
    /// A replay of an import's rejections (see [`replay`]).
    pub replay: Option<&'a Replay>,
    /// A dry run ("essai"): everything is checked against the base as for an import, then
    /// rolled back; no import row, no rejection, nothing kept in the base's files.
    pub dry_run: bool,
}

/// What importing one file gave.
#[derive(Clone, Debug)]
pub struct ImportOutcome {
    pub file: String,
    pub sha256: String,
    pub size: u64,
    pub result: ResultKind,
    /// The French label of §6.4.
    pub label: String,
    pub errors: u64,
    pub warnings: u64,
    pub counts: Counts,
    pub logs: Vec<LogFiles>,
    pub import_id: i64,
}

/// A failure of the platform itself (the base, the disk), not of the file: nothing of the
/// file was stored.
#[derive(Debug, thiserror::Error)]
pub enum IntegratorError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("erreur d'écriture des journaux : {}", atmp_flux::io_error_fr(.0))]
    Io(#[from] io::Error),
}

/// The label of a file that was processed.
pub fn success_label(errors: u64) -> String {
    if errors == 0 {
        "Import réussi".to_string()
    } else {
        format!("Import réussi ({errors} erreur(s))")
    }
}

/// SHA-256 and size of the file as received.
pub fn hash_file(path: &Path) -> io::Result<(String, u64)> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        size += n as u64;
        h.update(&buf[..n]);
    }
    Ok((hex::encode(h.finalize()), size))
}

/// SHA-256 and size of the first MiB of a file, and its whole size.
fn head_hash(path: &Path) -> io::Result<(String, u64)> {
    let f = std::fs::File::open(path)?;
    let size = f.metadata()?.len();
    let mut h = Sha256::new();
    let mut buf = Vec::with_capacity(1 << 20);
    f.take(1 << 20).read_to_end(&mut buf)?;
    h.update(&buf);
    Ok((hex::encode(h.finalize()), size))
}

/// Hashes the bytes as received while the reader reads them; publishes the digest at the end.
struct HashingReader {
    inner: std::fs::File,
    hasher: Option<Sha256>,
    out: Arc<OnceLock<String>>,
}

impl Read for HashingReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 {
            if let Some(h) = self.hasher.take() {
                let _ = self.out.set(hex::encode(h.finalize()));
            }
        } else if let Some(h) = self.hasher.as_mut() {
            h.update(&buf[..n]);
        }
        Ok(n)
    }
}

/// Why a file was rejected whole, and what had been read of it.
struct Failure {
    reason: String,
    header: Option<Header>,
    blocks: Vec<String>,
    cdg: Option<String>,
}

impl Failure {
    /// A file rejected before anything of it was read.
    fn reading(reason: String) -> Failure {
        Failure {
            reason,
            header: None,
            blocks: vec![],
            cdg: None,
        }
    }
}

/// Imports one file: the whole of §5 and §6 for it.
pub fn import_file(
    store: &mut dyn Store,
    path: &Path,
    opts: &ImportOptions<'_>,
) -> Result<ImportOutcome, IntegratorError> {
    let started_at = now();
    let name = opts.display_name.clone().unwrap_or_else(|| {
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    });
    let (head, size) = match head_hash(path) {
        Ok(v) => v,
        Err(e) => {
            let base = ImportRow {
                file_name: name.clone(),
                started_at,
                job_id: opts.job_id,
                ..Default::default()
            };
            let f = Failure::reading(format!(
                "le fichier ne peut pas être lu : {}",
                atmp_flux::io_error_fr(&e)
            ));
            return failed(store, path, opts, base, f);
        }
    };
    let prefix = format!(
        "{}_{}",
        chrono::Local::now().format("%Y%m%d-%H%M%S"),
        &head[..12]
    );
    let mut base_row = ImportRow {
        job_id: opts.job_id,
        file_name: name.clone(),
        head_sha256: head.clone(),
        size,
        started_at: started_at.clone(),
        result: atmp_store::ImportResult::EnCours,
        label: "En cours".into(),
        counts: atmp_store::RecordCounts::default(),
        ..Default::default()
    };
    base_row.rejeu_de = opts.replay.map(|r| r.of);
    // A duplicate has the same size and first MiB as an integrated file: only then is the
    // whole file hashed before reading; otherwise it is hashed while it is read. A replay
    // is never a duplicate: it is built for the rejections open at that time.
    let known = if opts.replay.is_none() && store.maybe_integrated(&head, size)? {
        Some(hash_file(path)?.0)
    } else {
        None
    };
    if let Some(sha256) = known {
        base_row.sha256 = sha256.clone();
        if let Some((original, at)) = store.integrated_at(&sha256)? {
            return duplicate(store, opts, &name, base_row, prefix, original, at);
        }
    }

    let nomenclatures = Nomenclatures::from_entries(&store.nomenclature_entries()?);
    let pos = AtomicU64::new(0);
    let hashed: Arc<OnceLock<String>> = Arc::new(OnceLock::new());
    let raw = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) => {
            let f = Failure::reading(format!(
                "le fichier ne peut pas être lu : {}",
                atmp_flux::io_error_fr(&e)
            ));
            return failed(store, path, opts, base_row, f);
        }
    };
    if size > opts.limits.max_file {
        let f = Failure::reading(format!(
            "le fichier dépasse la taille maximale admise ({}) ; fichier refusé",
            atmp_flux::scan::human(opts.limits.max_file)
        ));
        return failed(store, path, opts, base_row, f);
    }
    let raw = HashingReader {
        inner: raw,
        hasher: Some(Sha256::new()),
        out: hashed.clone(),
    };
    let stage = atmp_flux::StageOptions {
        limits: opts.limits,
        nomenclatures: &nomenclatures,
        position: Some(&pos),
        fragments: true,
        // The rules and the store take most of a core: the checks go to whichever side has
        // slack, record by record.
        checks: atmp_flux::Checks::Balanced,
    };
    let outcome = atmp_flux::read_stage(Box::new(raw), &stage, &rules::Prepared::of, |pieces| {
        let progress = || {
            if let Some(p) = opts.progress {
                p(pos.load(Ordering::Relaxed));
            }
        };
        rules::integrate(
            &mut *store,
            pieces,
            &name,
            &base_row,
            opts,
            prefix.clone(),
            &progress,
            &|| {
                hashed
                    .get()
                    .cloned()
                    .or_else(|| hash_file(path).ok().map(|(h, _)| h))
                    .unwrap_or_default()
            },
        )
    })?;
    match outcome {
        Ok((row, files, counts, import_id)) => {
            // Telemetry: identifiers and numbers only, never a name or a NIR.
            let (added, existing, rejected) = counts.get(atmp_flux::spec::RecordKind::Agent);
            tracing::info!(
                import_id,
                sha256 = %row.sha256,
                size,
                errors = row.errors,
                warnings = row.warnings,
                agents_ajoutes = added,
                agents_presents = existing,
                agents_rejetes = rejected,
                "fichier intégré"
            );
            Ok(ImportOutcome {
                file: name,
                sha256: row.sha256.clone(),
                size,
                result: ResultKind::Reussi,
                label: row.label.clone(),
                errors: row.errors,
                warnings: row.warnings,
                counts,
                logs: files,
                import_id,
            })
        }
        Err(f) => failed(store, path, opts, base_row, f),
    }
}

/// A file whose bytes were already integrated (§5.4.3): nothing is stored, the logs say so.
///
/// The same bytes carry the same header: the duplicate's row takes the original's sender,
/// type, mode and CDG, names it (`doublon_de`), and has one log line per collectivité of
/// the original (its one log, the same for each), so that whoever sees the original sees
/// that it came again.
#[allow(clippy::too_many_arguments)]
fn duplicate(
    store: &mut dyn Store,
    opts: &ImportOptions<'_>,
    name: &str,
    base_row: ImportRow,
    prefix: String,
    original: i64,
    at: String,
) -> Result<ImportOutcome, IntegratorError> {
    let first = store.import(original)?;
    let sha256 = base_row.sha256.clone();
    let size = base_row.size;
    let name = name.to_string();
    {
        let day = atmp_model::DateTime::parse(&at)
            .map(|d| d.date().fr())
            .unwrap_or(at);
        let label = format!("Doublon : déjà intégré le {day}");
        let mut logs = Logs::new(&opts.logs_dir, prefix)?;
        logs.enter_block("")?;
        logs.line(
            Level::Info,
            "",
            "",
            "",
            &format!("Début du traitement du fichier « {name} »"),
        )?;
        if opts.dry_run {
            logs.line(Level::Info, "", "", "", ESSAI)?;
        }
        logs.line(
            Level::Info,
            "",
            "",
            "",
            &format!("{label} : fichier identique (SHA-256 {sha256}), rien n'est enregistré"),
        )?;
        logs.close(&Counts::default(), |_| label.clone())?;
        let mut files = logs.files(|_| label.clone(), 0);
        keep_logs(logs, &mut files, opts)?;
        let (header, mut rows) = match &first {
            Some((o, logs)) => (
                Some(o),
                logs.iter()
                    .map(|(_, l)| ImportLog {
                        label: label.clone(),
                        errors: 0,
                        warnings: 0,
                        ..l.clone()
                    })
                    .collect::<Vec<_>>(),
            ),
            None => (None, vec![]),
        };
        let own = import_logs(&files);
        if rows.is_empty() {
            rows = own;
        } else if let Some(own) = own.first() {
            for r in &mut rows {
                r.complet_path = own.complet_path.clone();
                r.erreurs_path = own.erreurs_path.clone();
            }
        }
        let row = ImportRow {
            result: atmp_store::ImportResult::Doublon,
            label: label.clone(),
            finished_at: Some(now()),
            counts: atmp_store::RecordCounts::default(),
            emetteur: header.and_then(|o| o.emetteur.clone()),
            type_fichier: header.and_then(|o| o.type_fichier.clone()),
            mode: header.and_then(|o| o.mode.clone()),
            date_creation: header.and_then(|o| o.date_creation.clone()),
            cdg_siret: header.and_then(|o| o.cdg_siret.clone()),
            doublon_de: Some(original),
            ..base_row
        };
        let import_id = if opts.dry_run {
            0
        } else {
            store.record_import(&row, &rows)?
        };
        Ok(ImportOutcome {
            file: name,
            sha256,
            size,
            result: ResultKind::Doublon,
            label,
            errors: 0,
            warnings: 0,
            counts: Counts::default(),
            logs: files,
            import_id,
        })
    }
}

/// Records a file rejected whole (§5.4.1): nothing of it is stored; its logs say why.
/// Records a file as rejected whole without reading it (`Import échoué : <reason>`), with
/// its log pair: for a file the platform sets aside (it stopped the process too many times).
pub fn reject_file(
    store: &mut dyn Store,
    path: &Path,
    opts: &ImportOptions<'_>,
    reason: &str,
) -> Result<ImportOutcome, IntegratorError> {
    let base = ImportRow {
        file_name: opts.display_name.clone().unwrap_or_else(|| {
            path.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        }),
        size: std::fs::metadata(path).map(|m| m.len()).unwrap_or(0),
        started_at: now(),
        job_id: opts.job_id,
        ..Default::default()
    };
    let f = Failure::reading(reason.to_string());
    failed(store, path, opts, base, f)
}

fn failed(
    store: &mut dyn Store,
    path: &Path,
    opts: &ImportOptions<'_>,
    base: ImportRow,
    f: Failure,
) -> Result<ImportOutcome, IntegratorError> {
    let label = format!("Import échoué : {}", f.reason);
    let mut base = base;
    if base.sha256.is_empty() {
        base.sha256 = hash_file(path).map(|(h, _)| h).unwrap_or_default();
    }
    let stamp = chrono::Local::now().format("%Y%m%d-%H%M%S").to_string();
    let prefix = if base.sha256.len() >= 12 {
        format!("{stamp}_{}", &base.sha256[..12])
    } else {
        stamp
    };
    let mut logs = Logs::new(&opts.logs_dir, prefix)?;
    let opening = match &f.header {
        Some(h) => opening_line(&base.file_name, h),
        None => format!("Début du traitement du fichier « {} »", base.file_name),
    };
    if let Some(cdg) = &f.cdg {
        logs.open_global(cdg)?;
    }
    for b in &f.blocks {
        logs.enter_block(b)?;
    }
    if f.blocks.is_empty() && f.cdg.is_none() {
        logs.enter_block("")?;
    }
    logs.leave_block();
    logs.file_line(Level::Info, &opening)?;
    if opts.dry_run {
        logs.file_line(Level::Info, ESSAI)?;
    }
    logs.file_line(Level::Error, &label)?;
    logs.close(&Counts::default(), |_| label.clone())?;
    let mut files = logs.files(|_| label.clone(), 1);
    keep_logs(logs, &mut files, opts)?;
    let row = ImportRow {
        result: atmp_store::ImportResult::Echoue,
        label: label.clone(),
        finished_at: Some(now()),
        errors: 1,
        counts: atmp_store::RecordCounts::default(),
        emetteur: f.header.as_ref().map(|h| h.emetteur.clone()),
        type_fichier: f.header.as_ref().map(|h| h.type_fichier.code().to_string()),
        mode: f.header.as_ref().map(|h| h.mode.code().to_string()),
        date_creation: f.header.as_ref().map(|h| h.date_creation.iso()),
        cdg_siret: f.cdg.clone(),
        ..base
    };
    let import_id = if opts.dry_run {
        0
    } else {
        store.record_import(&row, &import_logs(&files))?
    };
    tracing::warn!(import_id, sha256 = %row.sha256, raison = %f.reason, "fichier rejeté en entier");
    Ok(ImportOutcome {
        file: row.file_name.clone(),
        sha256: row.sha256.clone(),
        size: row.size,
        result: ResultKind::Echoue,
        label,
        errors: 1,
        warnings: 0,
        counts: Counts::default(),
        logs: files,
        import_id,
    })
}

fn opening_line(name: &str, h: &Header) -> String {
    format!(
        "Début du traitement du fichier « {name} » : émetteur {}, type {}, mode {}, créé le {}",
        h.emetteur,
        h.type_fichier.code(),
        h.mode.code(),
        h.date_creation.fr()
    )
}

/// Whether the logs go into a store in the base (see [`ImportOptions::files`]).
fn logs_in_base<'a>(opts: &ImportOptions<'a>) -> Option<&'a dyn atmp_store::FileStore> {
    // A dry run's logs stay local: they are the caller's to read and remove.
    opts.files.filter(|f| f.in_base() && !opts.dry_run)
}

/// Publishes closed logs outside a file transaction: renamed to their final names, or kept
/// in the base's store (each file committed on its own before the import row that names it;
/// a crash between the two leaves an unnamed large object, never a row without its log).
fn keep_logs(
    logs: Logs,
    files: &mut [LogFiles],
    opts: &ImportOptions<'_>,
) -> Result<(), IntegratorError> {
    let store = logs_in_base(opts);
    if let Some(store) = store {
        logs.keep(files, |p| store.keep(p))?;
    }
    settle_logs(logs, store.is_some(), opts)?;
    Ok(())
}

/// Once the import row that names them is committed: the logs renamed to their final names,
/// or, when they were kept in the base, their local files and folder removed.
fn settle_logs(logs: Logs, in_base: bool, opts: &ImportOptions<'_>) -> io::Result<()> {
    if in_base {
        logs.discard();
        // The folder that held them while they were written, once empty.
        let _ = std::fs::remove_dir(&opts.logs_dir);
        Ok(())
    } else {
        logs.publish()
    }
}

fn import_logs(files: &[LogFiles]) -> Vec<ImportLog> {
    files
        .iter()
        .map(|l| ImportLog {
            collectivite_siret: l.collectivite.clone(),
            global: l.global,
            complet_path: match &l.stored {
                Some((c, _)) => c.clone(),
                None => l.complet.to_string_lossy().into_owned(),
            },
            erreurs_path: match &l.stored {
                Some((_, e)) => e.clone(),
                None => l.erreurs.to_string_lossy().into_owned(),
            },
            errors: l.errors,
            warnings: l.warnings,
            label: l.label.clone(),
        })
        .collect()
}

/// The `counts` object of §7.
impl From<&Counts> for atmp_store::RecordCounts {
    fn from(c: &Counts) -> Self {
        let mut out = atmp_store::RecordCounts::default();
        for k in atmp_flux::spec::RecordKind::COUNTED {
            let (added, existing, rejected) = c.get(k);
            if let Some(t) = out.get_mut(k.counts_key()) {
                *t = atmp_store::Triple {
                    added,
                    existing,
                    rejected,
                };
            }
        }
        out
    }
}
