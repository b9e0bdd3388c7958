//! The integration worker: takes the oldest unfinished job, integrates its file in one
//! transaction (which also records the job's id), then publishes the results: the sender's
//! `retours/` folder and the mails. A job is marked done only after all of that; a job
//! interrupted at any point is taken again at restart, and a job whose import was already
//! committed is not integrated twice.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use atmp_integrator::{import_file, reject_file, ImportOptions};

use atmp_store::{ImportLog, ImportRow, Job, Store};

use crate::{mail, PlatformError, Shared};

/// How many times an interrupted job is taken again before it is set aside.
const MAX_ATTEMPTS: u64 = 10;

/// A job's file as received, on this machine's disk: the kept file itself (local store), or
/// a copy of the base's large object made for the job and removed with this value.
pub(crate) struct Local {
    path: PathBuf,
    copy: bool,
}

impl Local {
    pub(crate) fn of(shared: &Shared, job: &Job) -> Result<Local, PlatformError> {
        if atmp_store::is_local_key(&job.stored_path) {
            return Ok(Local {
                path: PathBuf::from(&job.stored_path),
                copy: false,
            });
        }
        let dir = shared.data_dir.join("recus").join(".travail");
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(format!("job-{}", job.id));
        let mut src = shared.files.open(&job.stored_path)?;
        let mut out = std::fs::File::create(&path)?;
        std::io::copy(&mut src, &mut out)?;
        out.sync_data()?;
        Ok(Local { path, copy: true })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Local {
    fn drop(&mut self) {
        if self.copy {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Makes a received file read-only.
pub(crate) fn make_read_only(p: &Path) -> std::io::Result<()> {
    let mut perm = std::fs::metadata(p)?.permissions();
    perm.set_readonly(true);
    std::fs::set_permissions(p, perm)
}

/// Runs jobs until the process ends.
pub fn run(shared: Arc<Shared>, wake: std::sync::mpsc::Receiver<()>) {
    let mut store = loop {
        match atmp_store::open(&shared.database_url) {
            Ok(s) => break s,
            Err(e) => {
                tracing::error!(error = %e, "worker cannot open the base");
                std::thread::sleep(Duration::from_secs(5));
            }
        }
    };
    loop {
        match store.next_job() {
            Ok(Some(job)) => {
                if let Err(e) = run_job(&shared, store.as_mut(), &job) {
                    tracing::error!(job = job.id, error = %e, "job failed, retried later");
                    let _ = store.set_job_state(
                        job.id,
                        atmp_store::JobState::Attente,
                        Some(&e.to_string()),
                    );
                    std::thread::sleep(Duration::from_secs(5));
                }
            }
            Ok(None) => {
                let _ = wake.recv_timeout(Duration::from_secs(2));
            }
            Err(e) => {
                tracing::error!(error = %e, "worker cannot read the jobs");
                std::thread::sleep(Duration::from_secs(5));
            }
        }
    }
}

/// Listens to the base's news of the job queue (`LISTEN`, PostgreSQL) and wakes the worker.
pub fn listen(shared: Arc<Shared>) {
    loop {
        let mut store = match atmp_store::open(&shared.database_url) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "job listener cannot open the base");
                std::thread::sleep(Duration::from_secs(5));
                continue;
            }
        };
        loop {
            match store.wait_for_jobs(Duration::from_secs(30)) {
                Ok(true) => shared.wake_worker(),
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "job listener lost the base, reconnecting");
                    std::thread::sleep(Duration::from_secs(1));
                    break;
                }
            }
        }
    }
}

/// Integrates one job (if its import is not committed yet) and publishes its results.
pub fn run_job(shared: &Shared, store: &mut dyn Store, job: &Job) -> Result<(), PlatformError> {
    let import_id = match store.import_of_job(job.id)? {
        Some(id) => {
            tracing::info!(
                job = job.id,
                import = id,
                "job already integrated, publishing"
            );
            id
        }
        None => {
            let opts = ImportOptions {
                emetteur: Some(job.emetteur.clone()),
                logs_dir: shared.logs_dir(job.id),
                display_name: Some(job.file_name.clone()),
                progress: None,
                job_id: Some(job.id),
                limits: shared.config.limits,
                files: Some(shared.files.as_ref()),
                replay: None,
                dry_run: false,
            };
            // The file as received, on this machine's disk for the time of the job.
            let local = Local::of(shared, job)?;
            let path = local.path();
            let out = if job.attempts >= MAX_ATTEMPTS {
                // The file stopped the platform again and again: set it aside, visibly.
                tracing::error!(job = job.id, "job set aside after too many attempts");
                reject_file(
                    store,
                    path,
                    &opts,
                    &format!(
                        "le traitement du fichier a été interrompu {} fois ; il est mis de côté, \
                         contactez l'administrateur de la plate-forme",
                        job.attempts
                    ),
                )?
            } else {
                store.set_job_state(job.id, atmp_store::JobState::EnCours, None)?;
                tracing::info!(job = job.id, "integrating");
                match integrate_in_child(shared, job, path)? {
                    ChildEnd::Done => match store.import_of_job(job.id)? {
                        Some(id) => {
                            tracing::info!(job = job.id, import = id, "integrated");
                            return finish(shared, store, job, id);
                        }
                        None => {
                            crashed(store, path, &opts, "sans enregistrer son résultat".into())?
                        }
                    },
                    ChildEnd::Retry(why) => return Err(PlatformError::Config(why)),
                    ChildEnd::Taken => match store.import_of_job(job.id)? {
                        Some(id) => return finish(shared, store, job, id),
                        None => {
                            // Another instance integrates it; it publishes it too.
                            tracing::info!(job = job.id, "job taken by another instance");
                            return Ok(());
                        }
                    },
                    ChildEnd::Crashed(how) => match store.import_of_job(job.id)? {
                        // Died after its commit: the file is integrated, only publish.
                        Some(id) => return finish(shared, store, job, id),
                        None => crashed(store, path, &opts, how)?,
                    },
                }
            };
            tracing::info!(
                job = job.id,
                import = out.import_id,
                result = out.result.code(),
                errors = out.errors,
                "integrated"
            );
            out.import_id
        }
    };
    finish(shared, store, job, import_id)
}

/// A file whose integration crashed is set aside at once, visibly (`Import échoué`): it
/// would crash again at every attempt.
fn crashed(
    store: &mut dyn Store,
    path: &Path,
    opts: &ImportOptions<'_>,
    how: String,
) -> Result<atmp_integrator::ImportOutcome, PlatformError> {
    tracing::error!(job = opts.job_id, how = %how, "integration crashed, file set aside");
    Ok(reject_file(
        store,
        path,
        opts,
        &format!(
            "l'intégration du fichier s'est arrêtée anormalement ({how}) ; rien n'en a été \
             enregistré et il est mis de côté, contactez l'administrateur de la plate-forme"
        ),
    )?)
}

/// How the integration of a job in its own process ended.
enum ChildEnd {
    /// Exit 0: the import is committed.
    Done,
    /// A failure of the platform (base busy, disk full): the job is taken again later.
    Retry(String),
    /// Another instance holds the job (or has integrated it): left to it.
    Taken,
    /// Killed by a signal, a panic, an abort, memory exhausted…: said in French.
    Crashed(String),
}

/// The exit status of a child whose integration met a platform error (to retry).
pub const CHILD_RETRY: i32 = 3;

/// The exit status of a child whose job another instance holds, or has integrated.
pub const CHILD_TAKEN: i32 = 4;

/// Integrates a job's file in a process of its own (`atmp integrer-job`), so that nothing a
/// file does to the integration (a crash, an abort, memory) can take the web or FTPS down.
/// The child dies with the platform (`PR_SET_PDEATHSIG`): a killed platform leaves no
/// integration running, and its job is taken again at restart.
fn integrate_in_child(shared: &Shared, job: &Job, file: &Path) -> Result<ChildEnd, PlatformError> {
    use std::os::unix::process::{CommandExt, ExitStatusExt};
    // The platform runs as the `atmp` binary, which has the `integrer-job` command.
    let exe = std::env::current_exe()?;
    let limits = shared.config.limits;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("integrer-job")
        .env("ATMP_INTEGRATION_BASE", &shared.database_url)
        .arg("--job")
        .arg(job.id.to_string())
        .arg("--fichier")
        .arg(file)
        .arg("--nom")
        .arg(&job.file_name)
        .arg("--emetteur")
        .arg(&job.emetteur)
        .arg("--journaux")
        .arg(shared.logs_dir(job.id))
        .arg("--taille-max-fichier")
        .arg(limits.max_file.to_string())
        .arg("--taille-max-decompresse")
        .arg(limits.max_decoded.to_string())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null());
    let parent = std::process::id();
    // SAFETY: only async-signal-safe calls between fork and exec (prctl, getppid, _exit).
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() as u32 != parent {
                libc::_exit(CHILD_RETRY);
            }
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    let started = std::time::Instant::now();
    // wait4 rather than wait: the child's peak memory is a typed event of the platform's
    // trace (a number, no personal data), so that a hostile file's cost can be measured.
    let (status, peak_rss_kb) = wait_with_rusage(child)?;
    tracing::info!(
        job = job.id,
        peak_rss_kb,
        seconds = started.elapsed().as_secs_f64(),
        "integration process ended"
    );
    Ok(match (status.code(), status.signal()) {
        (Some(0), _) => ChildEnd::Done,
        (Some(CHILD_TAKEN), _) => ChildEnd::Taken,
        (Some(CHILD_RETRY), _) => ChildEnd::Retry(
            "l'intégration a rencontré une erreur de la plate-forme ; nouvel essai".into(),
        ),
        (Some(101), _) => ChildEnd::Crashed("erreur interne du programme".into()),
        (Some(c), _) => ChildEnd::Crashed(format!("code de sortie {c}")),
        (None, Some(libc::SIGKILL)) => {
            ChildEnd::Crashed("processus tué, par exemple faute de mémoire".into())
        }
        (None, Some(libc::SIGABRT)) => {
            ChildEnd::Crashed("arrêt brutal du programme (abort)".into())
        }
        (None, Some(libc::SIGSEGV)) => ChildEnd::Crashed("erreur de segmentation".into()),
        (None, Some(sig)) => ChildEnd::Crashed(format!("signal {sig}")),
        (None, None) => ChildEnd::Crashed("fin inconnue".into()),
    })
}

/// Waits for a child and returns its status with its peak resident memory (KiB).
fn wait_with_rusage(
    child: std::process::Child,
) -> std::io::Result<(std::process::ExitStatus, i64)> {
    use std::os::unix::process::ExitStatusExt;
    let pid = child.id() as libc::pid_t;
    let mut status: libc::c_int = 0;
    // SAFETY: rusage is plain data, written by the kernel; pid is our own child, not yet
    // reaped (the `Child` is forgotten below so that it is not waited for twice).
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let r = loop {
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if r == -1 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
            continue;
        }
        break r;
    };
    std::mem::forget(child);
    if r == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((std::process::ExitStatus::from_raw(status), usage.ru_maxrss))
}

/// What `atmp integrer-job` is given by the worker.
pub struct ChildArgs {
    pub database_url: String,
    pub job_id: i64,
    pub file: PathBuf,
    pub display_name: String,
    pub emetteur: String,
    pub logs_dir: PathBuf,
    pub limits: atmp_flux::Limits,
}

/// The body of `atmp integrer-job`: integrates one file in this process and exits; the
/// worker that started it publishes the results. Returns the exit status.
pub fn child_main(a: ChildArgs) -> i32 {
    let mut store = match atmp_store::open(&a.database_url) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "integration child cannot open the base");
            return CHILD_RETRY;
        }
    };
    let files = match atmp_store::open_files(&a.database_url, &a.logs_dir) {
        Ok(f) => f,
        Err(e) => {
            tracing::error!(error = %e, "integration child cannot open the file store");
            return CHILD_RETRY;
        }
    };
    let opts = ImportOptions {
        emetteur: Some(a.emetteur),
        logs_dir: a.logs_dir,
        display_name: Some(a.display_name),
        progress: None,
        job_id: Some(a.job_id),
        limits: a.limits,
        files: Some(files.as_ref()),
        replay: None,
        dry_run: false,
    };
    match import_file(store.as_mut(), &a.file, &opts) {
        Ok(_) => 0,
        Err(atmp_integrator::IntegratorError::Store(atmp_store::StoreError::JobTaken(_))) => {
            tracing::info!(job = a.job_id, "job held by another instance");
            CHILD_TAKEN
        }
        Err(e) => {
            tracing::error!(job = a.job_id, error = %e, "integration failed, retried later");
            CHILD_RETRY
        }
    }
}

/// After the commit: the results published, the mails queued, the job done.
fn finish(
    shared: &Shared,
    store: &mut dyn Store,
    job: &Job,
    import_id: i64,
) -> Result<(), PlatformError> {
    let (row, logs) = store
        .import(import_id)?
        .ok_or_else(|| PlatformError::Config(format!("import {import_id} introuvable")))?;
    // The sender's `retours/` is read from the base (`ftps_storage`): the job done, its logs
    // and receipt are listed there, on every instance.
    if shared.config.production {
        mail::enqueue(shared, store, import_id, &row, &logs)?;
    }
    store.finish_job(job.id, import_id, &row.sha256)?;
    shared.wake_mailer();
    Ok(())
}

/// The receipt of a file (JSON): what was received and what became of it. `whole`: the
/// viewer sees the whole file (else its counts are left out, as for a user who sees one
/// collectivité of a grouped file).
pub fn receipt(
    job: Option<&Job>,
    import_id: i64,
    row: &ImportRow,
    logs: &[(i64, ImportLog)],
    whole: bool,
) -> String {
    // The whole file's counts only for who sees the whole file.
    let counts = whole.then_some(row.counts);
    let v = serde_json::json!({
        "accuse_de_reception": {
            "import": import_id,
            "fichier": row.file_name,
            "emetteur": row.emetteur.clone().or_else(|| job.map(|j| j.emetteur.clone())),
            "sha256": row.sha256,
            "taille": row.size,
            "recu_le": job.map(|j| with_offset(&j.received_at)),
            "debut_traitement": with_offset(&row.started_at),
            "fin_traitement": row.finished_at.as_deref().map(with_offset),
            "type_fichier": row.type_fichier,
            "mode": row.mode,
            "date_creation": row.date_creation,
            "resultat": row.result,
            "libelle": row.label,
            "erreurs": row.errors,
            "avertissements": row.warnings,
            "compteurs": counts,
            "journaux": logs.iter().map(|(_, l)| serde_json::json!({
                "collectivite": l.collectivite_siret,
                "global": l.global,
                "resultat": l.label,
                "erreurs": l.errors,
                // The names in the sender's `retours/` (the platform's own names otherwise).
                "complet": job.map(|j| retours_name(j, l, "complet")).unwrap_or_else(|| file_name(&l.complet_path)),
                "erreurs_seules": job.map(|j| retours_name(j, l, "erreurs")).unwrap_or_else(|| file_name(&l.erreurs_path)),
            })).collect::<Vec<_>>(),
        }
    });
    serde_json::to_string_pretty(&v).expect("json")
}

fn file_name(p: &str) -> String {
    Path::new(p)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The name of a job's receipt in the sender's `retours/`.
pub(crate) fn receipt_name(job: &Job) -> String {
    format!("{}_{}_accuse.json", safe_stem(&job.file_name), job.id)
}

/// The name of a log in the sender's `retours/`: `<file>_<job>_<SIRET>_<kind>.log`, with
/// `<SIRET>-global` for a CDG's global pair and `fichier` for a file rejected before its
/// first block.
pub(crate) fn retours_name(job: &Job, l: &ImportLog, kind: &str) -> String {
    let who = if l.global {
        format!("{}-global", l.collectivite_siret)
    } else if l.collectivite_siret.is_empty() {
        "fichier".to_string()
    } else {
        l.collectivite_siret.clone()
    };
    let who: String = who
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect();
    format!("{}_{}_{who}_{kind}.log", safe_stem(&job.file_name), job.id)
}

pub(crate) use atmp_model::safe_stem;

/// A platform time (local, `YYYY-MM-DDTHH:MM:SS`) with its UTC offset, RFC 3339
/// (`2026-12-03T18:51:32+01:00`), so that a sender's program elsewhere reads it right.
pub fn with_offset(local: &str) -> String {
    use chrono::TimeZone;
    chrono::NaiveDateTime::parse_from_str(local, "%Y-%m-%dT%H:%M:%S")
        .ok()
        .and_then(|n| chrono::Local.from_local_datetime(&n).earliest())
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, false))
        .unwrap_or_else(|| local.to_string())
}
