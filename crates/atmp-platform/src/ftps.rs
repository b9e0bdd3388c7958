//! FTPS intake: one account and one folder per sender; a completed upload becomes a durable
//! job and the listener returns at once (the worker integrates it).
//!
//! The layer stays thin: libunftp serves the protocol over TLS (required for login and data),
//! [`SenderAuth`] checks the sender's argon2 password, [`SenderHome`] confines each sender to
//! `<data>/ftp/<code>/`, and [`Intake`] turns an upload-complete event into a job row.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use libunftp::notification::{DataEvent, DataListener, EventMeta};
use unftp_core::auth::{
    AuthenticationError, Authenticator, Credentials, Principal, UserDetail, UserDetailError,
    UserDetailProvider,
};

use crate::{PlatformError, Shared};

/// A sender's code may name a folder: letters, digits, `-` and `_` only.
pub fn valid_code(code: &str) -> bool {
    !code.is_empty()
        && code.len() <= 64
        && code
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A logged-in sender.
#[derive(Debug)]
pub struct Sender {
    code: String,
    home: PathBuf,
}

impl fmt::Display for Sender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.code)
    }
}

impl Sender {
    /// The sender's folder.
    pub(crate) fn home_dir(&self) -> &Path {
        &self.home
    }
}

impl UserDetail for Sender {
    fn home(&self) -> Option<&Path> {
        Some(&self.home)
    }
}

/// Checks a sender's code and password against the base.
#[derive(Debug)]
pub struct SenderAuth {
    pub(crate) shared: Arc<Shared>,
}

/// Wrong FTPS passwords for one account from one address before it is blocked there, and for
/// how long.
const FTPS_MAX_FAILURES: u64 = 5;
const FTPS_BLOCK_SECONDS: i64 = 300;

/// Writes one line of the audit trail about a sender's FTPS login.
fn audit_login(shared: &Arc<Shared>, code: &str, action: &str, detail: &str, address: String) {
    crate::record_audit(
        shared,
        atmp_store::AuditEvent {
            actor: format!("émetteur {code}"),
            action: action.into(),
            detail: detail.into(),
            address,
        },
    );
}

#[async_trait]
impl Authenticator for SenderAuth {
    async fn authenticate(
        &self,
        username: &str,
        creds: &Credentials,
    ) -> Result<Principal, AuthenticationError> {
        if !valid_code(username) {
            return Err(AuthenticationError::BadUser);
        }
        let password = creds.password.clone().unwrap_or_default();
        let shared = self.shared.clone();
        let code = username.to_string();
        let address = creds.source_ip.to_string();
        let ok = tokio::task::spawn_blocking(move || {
            // Five wrong passwords for an account from one address block it there for five
            // minutes, on every instance (the count is in the base).
            let key = format!("ftps:{code}|{address}");
            let since = (chrono::Local::now() - chrono::Duration::seconds(FTPS_BLOCK_SECONDS))
                .format("%Y-%m-%dT%H:%M:%S")
                .to_string();
            let failures = shared
                .with_store(|s| s.login_failures(&key, &since))
                .unwrap_or(0);
            if failures >= FTPS_MAX_FAILURES {
                tracing::warn!(emetteur = %code, "FTPS login refused: blocked after too many failures");
                audit_login(
                    &shared,
                    &code,
                    "connexion_ftps_refusee",
                    "compte bloqué après trop d'échecs depuis cette adresse",
                    address,
                );
                return false;
            }
            let hash = shared
                .with_store(|s| s.emetteur_password(&code))
                .ok()
                .flatten();
            // Same work whether or not the sender exists.
            let hash = hash.unwrap_or_else(|| crate::auth::hash_password("-"));
            let ok = crate::auth::verify_password(&password, &hash);
            if ok {
                // The bookkeeping of a successful login (its time, the failures cleared, the
                // audit line) is written beside the session, not before it: on SQLite an
                // integration holds the one writer for as long as a large file takes, and a
                // login waiting for it would time out the sender's session.
                tokio::runtime::Handle::current().spawn_blocking(move || {
                    let recorded = shared.with_store(|s| {
                        s.record_emetteur_connexion(&code, &atmp_store::now())?;
                        s.clear_login_failures(&key)
                    });
                    if recorded.is_err() {
                        tracing::warn!("FTPS login time not recorded");
                    }
                    audit_login(&shared, &code, "connexion_ftps", "", address);
                });
                return true;
            }
            // A failure is counted before the answer: the next attempt must see it.
            let recorded = shared
                .with_store(|s| s.record_login_failure(&key, &atmp_store::now(), &since))
                .map(|_| ());
            if recorded.is_err() {
                tracing::warn!("FTPS login failure count not updated");
            }
            audit_login(&shared, &code, "connexion_ftps_refusee", "", address);
            false
        })
        .await
        .unwrap_or(false);
        if ok {
            tracing::info!(emetteur = username, "FTPS login");
            Ok(Principal {
                username: username.to_string(),
            })
        } else {
            tracing::warn!(emetteur = username, "FTPS login refused");
            Err(AuthenticationError::BadPassword)
        }
    }
}

/// Gives each sender its folder (created on first login, with `retours/`).
#[derive(Debug)]
pub struct SenderHome {
    pub(crate) root: PathBuf,
}

#[async_trait]
impl UserDetailProvider for SenderHome {
    type User = Sender;

    async fn provide_user_detail(&self, principal: &Principal) -> Result<Sender, UserDetailError> {
        if !valid_code(&principal.username) {
            return Err(UserDetailError::new("code d'émetteur invalide"));
        }
        let home = self.root.join(&principal.username);
        std::fs::create_dir_all(home.join("retours"))
            .map_err(|e| UserDetailError::with_source("dossier de l'émetteur", e))?;
        Ok(Sender {
            code: principal.username.clone(),
            home,
        })
    }
}

/// Whether a name is a client's temporary upload name (renamed when complete).
fn temporary(name: &str) -> bool {
    let l = name.to_ascii_lowercase();
    name.starts_with('.')
        || l.ends_with(".part")
        || l.ends_with(".tmp")
        || l.ends_with(".filepart")
        || l.ends_with(".partial")
}

/// Turns completed uploads into jobs.
#[derive(Debug)]
pub struct Intake {
    pub(crate) shared: Arc<Shared>,
}

#[async_trait]
impl DataListener for Intake {
    async fn receive_data_event(&self, e: DataEvent, m: EventMeta) {
        let path = match e {
            DataEvent::Put { path, .. } => path,
            DataEvent::Renamed { to, .. } => to,
            _ => return,
        };
        let shared = self.shared.clone();
        let user = m.username.clone();
        let r = tokio::task::spawn_blocking(move || receive(&shared, &user, &path)).await;
        match r {
            Ok(Ok(Some(job))) => tracing::info!(job, emetteur = %m.username, "file received"),
            Ok(Ok(None)) => {}
            Ok(Err(e)) => tracing::error!(emetteur = %m.username, error = %e, "file not queued"),
            Err(e) => tracing::error!(error = %e, "intake task failed"),
        }
    }
}

/// Moves a completed upload out of the sender's folder into `<data>/recus/` (read-only) and
/// records its job. Only files at the root of the folder are taken.
fn receive(shared: &Shared, user: &str, ftp_path: &str) -> Result<Option<i64>, PlatformError> {
    if !valid_code(user) {
        return Ok(None);
    }
    let rel = ftp_path.trim_start_matches('/');
    // `test/NAME`: a dry run, answered in `retours/test/`; nothing is queued.
    if let Some(name) = rel.strip_prefix("test/") {
        if name.is_empty()
            || name.contains('/')
            || name.contains('\\')
            || name == ".."
            || temporary(name)
        {
            return Ok(None);
        }
        crate::essai::test_file(shared, user, name)?;
        return Ok(None);
    }
    if rel.is_empty() || rel.contains('/') || rel.contains('\\') || rel == ".." || temporary(rel) {
        return Ok(None);
    }
    let src = shared.ftp_root().join(user).join(rel);
    if !src.is_file() {
        return Ok(None);
    }
    let stored = shared.spool_path(user, rel);
    std::fs::rename(&src, &stored)?;
    crate::worker::make_read_only(&stored)?;
    // On disk before its job is recorded: an upload answered `226` survives a power loss
    // (the upload itself was synced as it was written, see `ftps_storage::Capped`).
    std::fs::File::open(&stored)?.sync_all()?;
    if let Some(dir) = stored.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    let size = std::fs::metadata(&stored)?.len();
    let id = queue_received(shared, user, rel, &stored, size)?;
    shared.wake_worker();
    Ok(Some(id))
}

/// Turns a received file of `recus/` into a job: keeps it in the platform's file store (the
/// base's large objects on PostgreSQL, where every instance reads it), records its job
/// naming the key, then removes the local copy when the store is the base. Each step is
/// retried while the base is busy or unreachable (one writer: a large file being
/// integrated); the file waits in `recus/` meanwhile, and is taken at the next start if this
/// process ends first.
pub(crate) fn queue_received(
    shared: &Shared,
    emetteur: &str,
    name: &str,
    local: &std::path::Path,
    size: u64,
) -> Result<i64, PlatformError> {
    let key = retried("received file not kept yet", || shared.files.keep(local))?;
    let id = retried("job not recorded yet", || {
        shared.with_store(|s| s.add_job(emetteur, name, &key, size))
    })?;
    if shared.files.in_base() {
        std::fs::remove_file(local)?;
    }
    Ok(id)
}

/// Runs `f` until it succeeds, for an hour at most, doubling the wait between attempts
/// (200 ms to 10 s).
fn retried<T>(
    what: &str,
    mut f: impl FnMut() -> Result<T, atmp_store::StoreError>,
) -> Result<T, PlatformError> {
    let mut wait = std::time::Duration::from_millis(200);
    let started = std::time::Instant::now();
    loop {
        match f() {
            Ok(v) => return Ok(v),
            Err(e) if started.elapsed() < std::time::Duration::from_secs(3600) => {
                tracing::warn!(error = %e, "{what}, retrying");
                std::thread::sleep(wait);
                wait = (wait * 2).min(std::time::Duration::from_secs(10));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Starts the FTPS server; returns when it stops.
pub async fn run(
    shared: Arc<Shared>,
    addr: std::net::SocketAddr,
    cert: PathBuf,
    key: PathBuf,
) -> Result<(), PlatformError> {
    let root = shared.ftp_root();
    std::fs::create_dir_all(&root)?;
    let fs_root = root.clone();
    let storage_shared = shared.clone();
    let (max_file, quota) = (shared.config.limits.max_file, shared.config.sender_quota);
    let server =
        libunftp::ServerBuilder::<crate::ftps_storage::Guarded, Sender>::with_user_detail_provider(
            Box::new(move || crate::ftps_storage::Guarded {
                inner: unftp_sbe_fs::Filesystem::new(fs_root.clone()).expect("ftp root"),
                max_file,
                quota,
                shared: storage_shared.clone(),
            }),
            Arc::new(SenderHome { root: root.clone() }),
        )
        .authenticator(Arc::new(SenderAuth {
            shared: shared.clone(),
        }))
        .greeting("atmp : dépôt des fichiers AT/MP (FTPS obligatoire)")
        .ftps(cert, key)
        .ftps_required(
            libunftp::options::FtpsRequired::All,
            libunftp::options::FtpsRequired::All,
        )
        .passive_ports(shared.config.passive_ports.clone())
        .idle_session_timeout(600)
        // A connection that does not log in within 30 s is closed; one address holds at most
        // `connexions_par_adresse` connections at once.
        .login_timeout(shared.config.ftps_login_timeout)
        .max_connections_per_ip(shared.config.max_connections_per_ip)
        // Wrong passwords are counted in the base by `SenderAuth`, for every instance.
        .notify_data(Intake {
            shared: shared.clone(),
        })
        .build()
        .map_err(|e| PlatformError::Ftps(e.to_string()))?;
    server
        .listen(addr.to_string())
        .await
        .map_err(|e| PlatformError::Ftps(e.to_string()))
}
