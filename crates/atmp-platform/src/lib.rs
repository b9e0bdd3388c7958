//! The atmp platform, one process in three parts: the FTPS intake ([`ftps`]), the
//! integration worker ([`worker`]) and the French admin web ([`web`]), plus the mail outbox
//! ([`mail`]). [`Application::build`] prepares everything (base, certificate, first
//! administrator, listening sockets); [`Application::run_until_stopped`] serves.
//!
//! The pipeline: an upload completes → [`ftps::Intake`] moves the file to `<data>/recus/`
//! (read-only) and records a job → the worker integrates it in one transaction that also
//! names the job → results go to the sender's `retours/`, mails are queued → the job is done.

pub mod auth;
pub mod config;
pub mod demo;
mod essai;
pub mod ftps;
mod ftps_storage;
mod kept;
pub mod mail;
pub mod retention;
pub mod tls;
pub mod web;
pub mod worker;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use atmp_store::{NewUtilisateur, Role, Store, StoreError};

pub use config::Config;

/// Failures of the platform itself (configuration, base, disk, network).
#[derive(Debug, thiserror::Error)]
pub enum PlatformError {
    #[error("configuration : {0}")]
    Config(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Integrator(#[from] atmp_integrator::IntegratorError),
    #[error("erreur d'accès aux fichiers : {}", atmp_flux::io_error_fr(.0))]
    Io(#[from] std::io::Error),
    #[error("serveur FTPS : {0}")]
    Ftps(String),
}

/// What every part of the platform shares: the configuration, a few base connections, and
/// the bells that wake the worker and the mailer.
pub struct Shared {
    pub config: Config,
    pub database_url: String,
    /// Absolute data folder.
    pub data_dir: PathBuf,
    /// Where received files, logs and receipts are kept: the data folder (SQLite), or the
    /// base's large objects (PostgreSQL), which every instance reads.
    pub files: Arc<dyn atmp_store::FileStore>,
    pool: Mutex<Vec<Box<dyn Store>>>,
    worker_wake: Mutex<std::sync::mpsc::Sender<()>>,
    pub(crate) mail_wake: tokio::sync::Notify,
    /// Base delay between two attempts of a failed mail (doubled each time).
    pub(crate) mail_retry: Duration,
    /// The web address actually bound.
    pub(crate) http_addr: Mutex<Option<SocketAddr>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("data_dir", &self.data_dir)
            .finish()
    }
}

impl Shared {
    /// Runs `f` with a base connection of the pool (opened when none is free).
    pub fn with_store<T>(
        &self,
        f: impl FnOnce(&mut dyn Store) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let conn = self.pool.lock().expect("pool").pop();
        let mut conn = match conn {
            Some(c) => c,
            None => atmp_store::open(&self.database_url)?,
        };
        let r = f(conn.as_mut());
        let mut pool = self.pool.lock().expect("pool");
        if pool.len() < 8 {
            pool.push(conn);
        }
        r
    }

    /// Where received files and logs are kept, as said at start.
    pub fn file_store_description(&self) -> String {
        self.files.describe()
    }

    /// The root of the senders' FTPS folders (`<data>/ftp`).
    pub fn ftp_root(&self) -> PathBuf {
        self.data_dir.join("ftp")
    }

    /// Where a received file is kept: `<data>/recus/<sender>/<date>-<random>-<name>`.
    pub fn spool_path(&self, emetteur: &str, name: &str) -> PathBuf {
        let dir = self.data_dir.join("recus").join(emetteur);
        let _ = std::fs::create_dir_all(&dir);
        dir.join(format!(
            "{}-{}-{}",
            chrono::Local::now().format("%Y%m%d-%H%M%S"),
            &auth::hex_token(4),
            worker::safe_stem(name)
        ))
    }

    /// Where a job's logs are written.
    pub fn logs_dir(&self, job: i64) -> PathBuf {
        self.data_dir.join("journaux").join(format!("job-{job}"))
    }

    /// Tells the worker a job is waiting.
    pub fn wake_worker(&self) {
        let _ = self.worker_wake.lock().expect("wake").send(());
    }

    /// Tells the mailer mails may be due.
    pub fn wake_mailer(&self) {
        self.mail_wake.notify_one();
    }

    /// The address users reach the web at.
    pub fn public_url(&self) -> String {
        if let Some(u) = &self.config.public_url {
            return u.trim_end_matches('/').to_string();
        }
        let scheme = if self.config.web_tls { "https" } else { "http" };
        let port = self
            .http_addr
            .lock()
            .expect("addr")
            .map(|a| a.port())
            .unwrap_or(self.config.http.port());
        format!("{scheme}://localhost:{port}")
    }
}

/// Records an event of the audit trail on a thread of its own: the caller (a web request, an
/// FTPS login) never waits for the base's writer. A failure is traced.
pub fn record_audit(shared: &Arc<Shared>, e: atmp_store::AuditEvent) {
    let shared = shared.clone();
    let r = std::thread::Builder::new()
        .name("atmp-audit".into())
        .spawn(move || {
            if let Err(err) = shared.with_store(|s| s.add_audit(&e)) {
                tracing::error!(error = %err, action = %e.action, "audit event not recorded");
            }
        });
    if let Err(err) = r {
        tracing::error!(error = %err, "audit thread not started");
    }
}

/// The folders of the data folder (itself included, two levels deep) that other local
/// users may enter or read, with their mode.
pub fn wide_folders(data_dir: &Path) -> Vec<(PathBuf, u32)> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = Vec::new();
    let mut check = |p: &Path| {
        if let Ok(m) = std::fs::metadata(p) {
            let mode = m.permissions().mode() & 0o777;
            if m.is_dir() && mode & 0o077 != 0 {
                out.push((p.to_path_buf(), mode));
            }
        }
    };
    check(data_dir);
    for d in ["recus", "journaux", "ftp", "tls"] {
        let p = data_dir.join(d);
        check(&p);
        if let Ok(rd) = std::fs::read_dir(&p) {
            for e in rd.flatten() {
                check(&e.path());
            }
        }
    }
    out
}

/// The platform, built and ready to serve.
pub struct Application {
    shared: Arc<Shared>,
    web: tokio::net::TcpListener,
    ftps_addr: SocketAddr,
    cert: PathBuf,
    key: PathBuf,
    worker_rx: Option<std::sync::mpsc::Receiver<()>>,
    /// The one-time password of the first administrator, when it was just created.
    pub first_admin_password: Option<String>,
    /// The accounts the demo set created, when it was just loaded.
    pub demo_summary: Option<String>,
}

/// Checks that the FTPS address can be bound, and resolves port 0 to a free port (libunftp
/// binds by address only, later, and says why it cannot in English only).
fn free_port(addr: SocketAddr) -> Result<SocketAddr, PlatformError> {
    let l = std::net::TcpListener::bind(addr).map_err(|e| {
        PlatformError::Config(format!(
            "adresse FTPS {addr} indisponible : {}",
            atmp_flux::io_error_fr(&e)
        ))
    })?;
    Ok(l.local_addr()?)
}

impl Application {
    /// Prepares the platform: folders, base and migrations, certificate, first administrator,
    /// demo data, received files without a job, and the web socket.
    pub async fn build(config: Config) -> Result<Application, PlatformError> {
        tls::install_provider();
        std::fs::create_dir_all(&config.data_dir)?;
        let data_dir = std::fs::canonicalize(&config.data_dir)?;
        let database_url = if config.database_url.is_empty() {
            format!("sqlite://{}", data_dir.join("atmp.db").display())
        } else {
            config.database_url.clone()
        };
        let (tx, rx) = std::sync::mpsc::channel();
        let retry_secs = std::env::var("ATMP_MAIL_RETRY_SECONDS")
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(60);
        let files = atmp_store::open_files(&database_url, &data_dir)?;
        let shared = Arc::new(Shared {
            database_url,
            data_dir: data_dir.clone(),
            files,
            pool: Mutex::new(Vec::new()),
            worker_wake: Mutex::new(tx),
            mail_wake: tokio::sync::Notify::new(),
            mail_retry: Duration::from_secs(retry_secs.max(1)),
            http_addr: Mutex::new(None),
            config: config.clone(),
        });
        for d in ["recus", "journaux", "ftp"] {
            std::fs::create_dir_all(data_dir.join(d))?;
        }
        for wide in wide_folders(&data_dir) {
            tracing::warn!(folder = %wide.0.display(), mode = format!("{:o}", wide.1), "folder readable by other local users");
            eprintln!(
                "attention : le dossier {} est accessible à d'autres utilisateurs de la machine \
                 (droits {:o}) ; il contient des données personnelles : chmod 700 recommandé",
                wide.0.display(),
                wide.1
            );
        }
        // The base's clients are synchronous: never called from a task of the runtime.
        let s2 = shared.clone();
        let demo = config.demo;
        tracing::info!(
            backend = atmp_store::backend_name(&shared.database_url),
            files = %shared.files.describe(),
            "base opened"
        );
        let (first_admin_password, demo_summary) =
            tokio::task::spawn_blocking(move || prepare_base(&s2, demo))
                .await
                .map_err(|e| {
                    PlatformError::Config(format!("préparation de la base interrompue : {e}"))
                })??;
        let (cert, key) =
            tls::ensure_certificate(&data_dir, config.cert.as_deref(), config.key.as_deref())?;
        let web = tokio::net::TcpListener::bind(config.http)
            .await
            .map_err(|e| {
                PlatformError::Config(format!(
                    "adresse web {} indisponible : {}",
                    config.http,
                    atmp_flux::io_error_fr(&e)
                ))
            })?;
        *shared.http_addr.lock().expect("addr") = Some(web.local_addr()?);
        let ftps_addr = free_port(config.ftps)?;
        let app = Application {
            shared,
            web,
            ftps_addr,
            cert,
            key,
            worker_rx: Some(rx),
            first_admin_password,
            demo_summary,
        };
        app.write_addresses()?;
        Ok(app)
    }

    /// The certificate the platform presents (FTPS and HTTPS), as an absolute path: what a
    /// sender's client is told to trust (`curl --cacert`).
    pub fn cert_path(&self) -> PathBuf {
        std::fs::canonicalize(&self.cert).unwrap_or_else(|_| self.cert.clone())
    }

    /// The web address bound (its port, when 0 was asked).
    pub fn http_addr(&self) -> SocketAddr {
        self.web.local_addr().expect("bound")
    }

    /// The FTPS address bound.
    pub fn ftps_addr(&self) -> SocketAddr {
        self.ftps_addr
    }

    /// What the parts share (configuration, base connections).
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// `<data>/adresses.json`: the addresses bound, for scripts and tests.
    fn write_addresses(&self) -> Result<(), PlatformError> {
        let v = serde_json::json!({
            "http": self.http_addr().to_string(),
            "url": self.shared.public_url(),
            "ftps": self.ftps_addr.to_string(),
            "certificat": self.cert.display().to_string(),
            "pid": std::process::id(),
        });
        let p = self.shared.data_dir.join("adresses.json");
        std::fs::write(p.with_extension("tmp"), v.to_string())?;
        std::fs::rename(p.with_extension("tmp"), p)?;
        Ok(())
    }

    /// Serves until Ctrl-C or SIGTERM (or until a part fails).
    pub async fn run_until_stopped(mut self) -> Result<(), PlatformError> {
        let shared = self.shared.clone();
        let rx = self.worker_rx.take().expect("once");
        let s2 = shared.clone();
        std::thread::Builder::new()
            .name("atmp-worker".into())
            .spawn(move || worker::run(s2, rx))?;
        if atmp_store::backend_name(&shared.database_url) == "PostgreSQL" {
            // Other instances' news (a job received, a job done) wake this worker at once;
            // its 2-second poll stays as the fallback.
            let s4 = shared.clone();
            std::thread::Builder::new()
                .name("atmp-ecoute".into())
                .spawn(move || worker::listen(s4))?;
        }
        let s3 = shared.clone();
        std::thread::Builder::new()
            .name("atmp-conservation".into())
            .spawn(move || retention::run(s3))?;
        let tls_cfg = if shared.config.web_tls {
            Some(tls::server_config(&self.cert, &self.key)?)
        } else {
            None
        };
        let web = web::serve(shared.clone(), self.web, tls_cfg);
        let ftps = ftps::run(
            shared.clone(),
            self.ftps_addr,
            self.cert.clone(),
            self.key.clone(),
        );
        let mailer = mail::run(shared.clone());
        tokio::select! {
            r = web => r,
            r = ftps => r,
            _ = async { mailer.await; std::future::pending::<()>().await } => Ok(()),
            _ = shutdown_signal() => {
                tracing::info!("stopping");
                Ok(())
            }
        }
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("signal");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

/// At start: the first administrator (when there is no account), the demo set (`--demo`), and
/// the received files that have no job. Returns the administrator's one-time password and
/// the demo summary.
fn prepare_base(
    shared: &Shared,
    demo: bool,
) -> Result<(Option<String>, Option<String>), PlatformError> {
    let first_admin_password = shared.with_store(|s| {
        if s.count_utilisateurs()? > 0 {
            return Ok(None);
        }
        let pw = auth::password();
        s.add_utilisateur(&NewUtilisateur {
            login: "admin".into(),
            password_hash: auth::hash_password(&pw),
            role: Role::Plateforme,
            collectivite: None,
            email: None,
            doit_changer: true,
        })?;
        Ok(Some(pw))
    })?;
    let demo_summary = if demo { demo::load(shared)? } else { None };
    recover_spool(shared)?;
    Ok((first_admin_password, demo_summary))
}

/// Received files whose job was never recorded (a crash between the move and the insert)
/// get their job now.
fn recover_spool(shared: &Shared) -> Result<(), PlatformError> {
    let known: std::collections::HashSet<String> =
        shared.with_store(|s| s.job_paths())?.into_iter().collect();
    let mut orphans = Vec::new();
    for sender in std::fs::read_dir(shared.data_dir.join("recus"))? {
        let sender = sender?.path();
        let Some(code) = sender.file_name().map(|n| n.to_string_lossy().into_owned()) else {
            continue;
        };
        if !sender.is_dir() || !ftps::valid_code(&code) {
            continue;
        }
        for e in std::fs::read_dir(&sender)? {
            let p = e?.path();
            if p.is_file() && !known.contains(&*p.to_string_lossy()) {
                orphans.push((code.clone(), p));
            }
        }
    }
    orphans.sort();
    for (code, p) in orphans {
        let name = p
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        // `<date>-<time>-<random>-<name>`
        let original = name.splitn(4, '-').nth(3).unwrap_or(&name).to_string();
        let size = std::fs::metadata(&p)?.len();
        ftps::queue_received(shared, &code, &original, &p, size)?;
        tracing::warn!(emetteur = %code, "received file without job recovered");
    }
    Ok(())
}
