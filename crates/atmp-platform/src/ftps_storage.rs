//! The storage a sender sees over FTPS: its folder, with the platform's rules applied to
//! every command before the file system is touched.
//!
//! - no sub-folder (`MKD` refused): a file is deposited at the root, where it is taken;
//! - no name with `\` or a control character (refused at once, rather than never taken);
//! - `retours/` is read-only for the sender: the platform's results cannot be removed,
//!   overwritten or renamed there. It is not a folder of this machine: it is read from the
//!   base (the sender's jobs done, each with its receipt and log pairs, from the file store),
//!   so whichever instance a sender connects to shows the same results, and a result is
//!   listed only once complete;
//! - an upload stops with `552` as soon as it passes the maximum file size or the sender's
//!   quota (bytes of files not yet taken), and what was written of it is removed.

use std::fmt::Debug;
use std::path::{Component, Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;

use async_trait::async_trait;
use unftp_core::storage::{Error, ErrorKind, Fileinfo, Metadata, Result, StorageBackend};
use unftp_sbe_fs::Filesystem;

use crate::ftps::Sender;
use crate::Shared;

/// [`Filesystem`] with the rules above.
pub struct Guarded {
    pub(crate) inner: Filesystem,
    pub(crate) max_file: u64,
    pub(crate) quota: u64,
    pub(crate) shared: Arc<Shared>,
}

impl Debug for Guarded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guarded")
            .field("inner", &self.inner)
            .finish()
    }
}

/// What a listing says of an entry: a file or folder of the sender's folder, or a result of
/// `retours/` read from the base.
#[derive(Debug)]
pub enum Meta {
    Fs(unftp_sbe_fs::Meta),
    Result {
        len: u64,
        modified: SystemTime,
    },
    /// `retours/test/`.
    Dir,
}

impl Metadata for Meta {
    fn len(&self) -> u64 {
        match self {
            Meta::Fs(m) => m.len(),
            Meta::Result { len, .. } => *len,
            Meta::Dir => 0,
        }
    }
    fn is_dir(&self) -> bool {
        match self {
            Meta::Fs(m) => m.is_dir(),
            Meta::Result { .. } => false,
            Meta::Dir => true,
        }
    }
    fn is_file(&self) -> bool {
        match self {
            Meta::Fs(m) => m.is_file(),
            Meta::Result { .. } => true,
            Meta::Dir => false,
        }
    }
    fn is_symlink(&self) -> bool {
        match self {
            Meta::Fs(m) => m.is_symlink(),
            Meta::Result { .. } | Meta::Dir => false,
        }
    }
    fn modified(&self) -> Result<SystemTime> {
        match self {
            Meta::Fs(m) => m.modified(),
            Meta::Result { modified, .. } => Ok(*modified),
            Meta::Dir => Ok(SystemTime::now()),
        }
    }
    fn gid(&self) -> u32 {
        match self {
            Meta::Fs(m) => m.gid(),
            Meta::Result { .. } | Meta::Dir => 0,
        }
    }
    fn uid(&self) -> u32 {
        match self {
            Meta::Fs(m) => m.uid(),
            Meta::Result { .. } | Meta::Dir => 0,
        }
    }
    fn permissions(&self) -> unftp_core::storage::Permissions {
        match self {
            Meta::Fs(m) => m.permissions(),
            Meta::Result { .. } => unftp_core::storage::Permissions(0o100444),
            Meta::Dir => unftp_core::storage::Permissions(0o040555),
        }
    }
}

/// One result in a sender's `retours/`.
struct Retour {
    name: String,
    /// A log: its key in the file store; a receipt: its bytes.
    body: Body,
    len: u64,
    modified: SystemTime,
}

enum Body {
    Kept(String),
    Bytes(Vec<u8>),
}

/// The results of a sender, read from the base: for each of its jobs done (or only job
/// `only`), its log pairs (unless purged) and its receipt, named as `worker::retours_name`
/// says.
fn retours(
    shared: &Shared,
    code: &str,
    only: Option<i64>,
) -> std::result::Result<Vec<Retour>, atmp_store::StoreError> {
    let mut out = Vec::new();
    let mut keys = Vec::new();
    shared.with_store(|s| {
        let jobs = match only {
            None => s.done_jobs_of(code)?,
            Some(id) => match s.job(id)? {
                Some(j) if j.emetteur == code && j.state == atmp_store::JobState::Fait => {
                    s.import_of_job(id)?.map(|i| (j, i)).into_iter().collect()
                }
                _ => Vec::new(),
            },
        };
        for (job, import_id) in jobs {
            let Some((row, logs)) = s.import(import_id)? else {
                continue;
            };
            if s.purges_of(import_id)?
                .iter()
                .any(|(k, _)| *k == atmp_store::PurgeKind::Journaux)
            {
                continue;
            }
            let modified = modified(row.finished_at.as_deref().unwrap_or(&row.started_at));
            for (_, l) in &logs {
                for (kind, key) in [("complet", &l.complet_path), ("erreurs", &l.erreurs_path)] {
                    keys.push(key.clone());
                    out.push(Retour {
                        name: crate::worker::retours_name(&job, l, kind),
                        body: Body::Kept(key.clone()),
                        len: 0,
                        modified,
                    });
                }
            }
            let receipt = crate::worker::receipt(Some(&job), import_id, &row, &logs, true);
            out.push(Retour {
                name: crate::worker::receipt_name(&job),
                len: receipt.len() as u64,
                body: Body::Bytes(receipt.into_bytes()),
                modified,
            });
        }
        Ok(())
    })?;
    // Every log's size in one call; a log missing from the store is not listed.
    let mut sizes = shared.files.sizes(&keys)?.into_iter();
    out.retain_mut(|r| match r.body {
        Body::Kept(_) => match sizes.next().flatten() {
            Some(n) => {
                r.len = n;
                true
            }
            None => false,
        },
        Body::Bytes(_) => true,
    });
    Ok(out)
}

/// A stored local time (`YYYY-MM-DDTHH:MM:SS`) as a system time.
fn modified(at: &str) -> SystemTime {
    chrono::NaiveDateTime::parse_from_str(at, "%Y-%m-%dT%H:%M:%S")
        .ok()
        .and_then(|d| d.and_local_timezone(chrono::Local).earliest())
        .map(SystemTime::from)
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

/// The job a name of `retours/` belongs to: `<stem>_<job>_accuse.json`, or
/// `<stem>_<job>_<who>_<kind>.log` (`who` has no `_`; the stem may).
fn job_of(name: &str) -> Option<i64> {
    let rest = match name.strip_suffix("_accuse.json") {
        Some(r) => r,
        None => name.strip_suffix(".log")?.rsplitn(3, '_').nth(2)?,
    };
    rest.rsplit_once('_')?.1.parse().ok()
}

/// Whether a path is the sender's `retours/` itself (`Some(None)`) or one of its entries
/// (`Some(Some(name))`).
fn in_retours(p: &Path) -> Option<Option<String>> {
    let n = names(p)?;
    match n.as_slice() {
        [r] if r == "retours" => Some(None),
        [r, t] if r == "retours" && t == "test" => None,
        [r, name] if r == "retours" => Some(Some(name.clone())),
        _ => None,
    }
}

/// Whether a path is `retours/test/` itself (`Some(None)`) or one of its entries: the results
/// of the sender's dry runs, on this instance's disk.
fn in_tests(p: &Path) -> Option<Option<String>> {
    let n = names(p)?;
    match n.as_slice() {
        [r, t] if r == "retours" && t == "test" => Some(None),
        [r, t, name] if r == "retours" && t == "test" && !name.starts_with('.') => {
            Some(Some(name.clone()))
        }
        _ => None,
    }
}

fn file_meta(p: &Path) -> Result<Meta> {
    let m = std::fs::metadata(p).map_err(|_| Error::from(ErrorKind::PermanentFileNotAvailable))?;
    if !m.is_file() {
        return Err(Error::from(ErrorKind::PermanentFileNotAvailable));
    }
    Ok(Meta::Result {
        len: m.len(),
        modified: m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
    })
}

impl Guarded {
    async fn retours(&self, user: &Sender, only: Option<i64>) -> Result<Vec<Retour>> {
        let shared = self.shared.clone();
        let code = user.to_string();
        match tokio::task::spawn_blocking(move || retours(&shared, &code, only)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                tracing::error!(emetteur = %user, error = %e, "retours/ not read");
                Err(Error::from(ErrorKind::LocalError))
            }
            Err(_) => Err(Error::from(ErrorKind::LocalError)),
        }
    }

    /// One result, read with its job alone.
    async fn retour(&self, user: &Sender, name: &str) -> Result<Retour> {
        let job = job_of(name).ok_or_else(|| Error::from(ErrorKind::PermanentFileNotAvailable))?;
        self.retours(user, Some(job))
            .await?
            .into_iter()
            .find(|r| r.name == name)
            .ok_or_else(|| Error::from(ErrorKind::PermanentFileNotAvailable))
    }
}

/// The path's components, or `None` when one is not a plain name the platform admits.
fn names(p: &Path) -> Option<Vec<String>> {
    let mut out = Vec::new();
    for c in p.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(n) => {
                let n = n.to_str()?;
                if n.contains('\\') || n.chars().any(char::is_control) {
                    return None;
                }
                out.push(n.to_string());
            }
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

fn denied() -> Error {
    Error::from(ErrorKind::PermissionDenied)
}

/// A path the sender may write: a plain name at the root of its folder, or in `test/` (a
/// file to test without storing anything).
fn writable(p: &Path) -> Result<()> {
    match names(p).as_deref() {
        Some([n]) if n != "retours" && n != "test" => Ok(()),
        Some([t, n]) if t == "test" && !n.is_empty() => Ok(()),
        _ => Err(denied()),
    }
}

/// Bytes of the files waiting at the root of a sender's folder.
fn used(home: &Path) -> u64 {
    std::fs::read_dir(home)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// Stops a stream after `left` bytes with an error that says why; and, every
/// [`SYNC_EVERY`] bytes, has what was written of `target` so far synced to disk on a
/// blocking thread (one sync at a time), so that the sync of the whole file before its job
/// is recorded (`ftps::receive`) only has the last slice left to write.
struct Capped<R> {
    inner: R,
    left: u64,
    over: std::sync::Arc<std::sync::atomic::AtomicBool>,
    target: std::path::PathBuf,
    since_sync: u64,
    syncing: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// How many bytes of an upload are written between two syncs of its file.
const SYNC_EVERY: u64 = 64 << 20;

impl<R: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Capped<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &r {
            let n = (buf.filled().len() - before) as u64;
            if n > self.left {
                self.over.store(true, std::sync::atomic::Ordering::Relaxed);
                return Poll::Ready(Err(std::io::Error::other(
                    "fichier trop volumineux ou quota de l'émetteur dépassé",
                )));
            }
            self.left -= n;
            self.since_sync += n;
            if self.since_sync >= SYNC_EVERY
                && !self.syncing.swap(true, std::sync::atomic::Ordering::AcqRel)
            {
                self.since_sync = 0;
                let (target, syncing) = (self.target.clone(), self.syncing.clone());
                // Any descriptor of the file syncs its data (the inode's dirty pages).
                tokio::task::spawn_blocking(move || {
                    if let Ok(f) = std::fs::File::open(&target) {
                        let _ = f.sync_data();
                    }
                    syncing.store(false, std::sync::atomic::Ordering::Release);
                });
            }
        }
        r
    }
}

#[async_trait]
impl StorageBackend<Sender> for Guarded {
    type Metadata = Meta;

    fn enter(&mut self, user: &Sender) -> std::io::Result<()> {
        StorageBackend::<Sender>::enter(&mut self.inner, user)
    }

    fn supported_features(&self) -> u32 {
        StorageBackend::<Sender>::supported_features(&self.inner)
    }

    async fn metadata<P: AsRef<Path> + Send + Debug>(
        &self,
        user: &Sender,
        path: P,
    ) -> Result<Meta> {
        match in_tests(path.as_ref()) {
            Some(None) => return Ok(Meta::Dir),
            Some(Some(name)) => {
                return file_meta(
                    &crate::essai::results_dir(&self.shared, &user.to_string()).join(name),
                )
            }
            None => {}
        }
        if let Some(Some(name)) = in_retours(path.as_ref()) {
            let r = self.retour(user, &name).await?;
            return Ok(Meta::Result {
                len: r.len,
                modified: r.modified,
            });
        }
        self.inner.metadata(user, path).await.map(Meta::Fs)
    }

    async fn list<P: AsRef<Path> + Send + Debug>(
        &self,
        user: &Sender,
        path: P,
    ) -> Result<Vec<Fileinfo<PathBuf, Meta>>> {
        match in_tests(path.as_ref()) {
            Some(None) => {
                let dir = crate::essai::results_dir(&self.shared, &user.to_string());
                let mut out = Vec::new();
                if let Ok(rd) = std::fs::read_dir(&dir) {
                    for e in rd.flatten() {
                        let name = e.file_name().to_string_lossy().into_owned();
                        if name.starts_with('.') {
                            continue;
                        }
                        if let Ok(m) = file_meta(&e.path()) {
                            out.push(Fileinfo {
                                path: PathBuf::from(name),
                                metadata: m,
                            });
                        }
                    }
                }
                out.sort_by(|a, b| a.path.cmp(&b.path));
                return Ok(out);
            }
            Some(Some(_)) => return Err(Error::from(ErrorKind::PermanentFileNotAvailable)),
            None => {}
        }
        match in_retours(path.as_ref()) {
            Some(None) => {
                let mut out: Vec<Fileinfo<PathBuf, Meta>> = self
                    .retours(user, None)
                    .await?
                    .into_iter()
                    .map(|r| Fileinfo {
                        path: PathBuf::from(r.name),
                        metadata: Meta::Result {
                            len: r.len,
                            modified: r.modified,
                        },
                    })
                    .collect();
                // `test/` is listed once it holds the result of a test.
                let tests = crate::essai::results_dir(&self.shared, &user.to_string());
                let any = std::fs::read_dir(&tests).is_ok_and(|rd| {
                    rd.flatten()
                        .any(|e| !e.file_name().to_string_lossy().starts_with('.'))
                });
                if any {
                    out.push(Fileinfo {
                        path: PathBuf::from("test"),
                        metadata: Meta::Dir,
                    });
                }
                return Ok(out);
            }
            Some(Some(_)) => return Err(Error::from(ErrorKind::PermanentFileNotAvailable)),
            None => {}
        }
        Ok(self
            .inner
            .list(user, path)
            .await?
            .into_iter()
            .map(|f| Fileinfo {
                path: f.path,
                metadata: Meta::Fs(f.metadata),
            })
            .collect())
    }

    async fn get<P: AsRef<Path> + Send + Debug>(
        &self,
        user: &Sender,
        path: P,
        start_pos: u64,
    ) -> Result<Box<dyn tokio::io::AsyncRead + Send + Sync + Unpin>> {
        if let Some(Some(name)) = in_tests(path.as_ref()) {
            let p = crate::essai::results_dir(&self.shared, &user.to_string()).join(name);
            let f = std::fs::File::open(&p)
                .map_err(|_| Error::from(ErrorKind::PermanentFileNotAvailable))?;
            return Ok(Box::new(crate::kept::ChannelReader::new(
                crate::kept::chunks(Box::new(f), start_pos),
            )));
        }
        if let Some(Some(name)) = in_retours(path.as_ref()) {
            let r = self.retour(user, &name).await?;
            let src: Box<dyn std::io::Read + Send> = match r.body {
                Body::Bytes(b) => Box::new(std::io::Cursor::new(b)),
                Body::Kept(key) => {
                    let shared = self.shared.clone();
                    match tokio::task::spawn_blocking(move || shared.files.open(&key)).await {
                        Ok(Ok(f)) => f,
                        Ok(Err(e)) => {
                            tracing::error!(emetteur = %user, error = %e, "result not read");
                            return Err(Error::from(ErrorKind::PermanentFileNotAvailable));
                        }
                        Err(_) => return Err(Error::from(ErrorKind::LocalError)),
                    }
                }
            };
            // A resumed download (`REST`): the bytes before it are read and dropped.
            return Ok(Box::new(crate::kept::ChannelReader::new(
                crate::kept::chunks(src, start_pos),
            )));
        }
        self.inner.get(user, path, start_pos).await
    }

    async fn put<
        P: AsRef<Path> + Send + Debug,
        R: tokio::io::AsyncRead + Send + Sync + Unpin + 'static,
    >(
        &self,
        user: &Sender,
        input: R,
        path: P,
        start_pos: u64,
    ) -> Result<u64> {
        writable(path.as_ref())?;
        let home = user.home_dir().to_path_buf();
        let parts = names(path.as_ref()).unwrap_or_default();
        if parts.len() == 2 {
            std::fs::create_dir_all(home.join(&parts[0]))
                .map_err(|_| Error::from(ErrorKind::LocalError))?;
        }
        let target = home.join(parts.join("/"));
        let already = std::fs::metadata(&target).map(|m| m.len()).unwrap_or(0);
        let used = used(&home).saturating_sub(already);
        let room = self.quota.saturating_sub(used);
        let left = self.max_file.min(room).saturating_sub(start_pos);
        if left == 0 {
            tracing::warn!(emetteur = %user, "FTPS upload refused: quota reached");
            return Err(Error::from(ErrorKind::ExceededStorageAllocationError));
        }
        let over = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let capped = Capped {
            inner: input,
            left,
            over: over.clone(),
            target: target.clone(),
            since_sync: 0,
            syncing: Default::default(),
        };
        let r = self.inner.put(user, capped, path, start_pos).await;
        if over.load(std::sync::atomic::Ordering::Relaxed) {
            tracing::warn!(emetteur = %user, "FTPS upload stopped: too large or quota exceeded");
            let _ = std::fs::remove_file(&target);
            return Err(Error::from(ErrorKind::ExceededStorageAllocationError));
        }
        r
    }

    async fn del<P: AsRef<Path> + Send + Debug>(&self, user: &Sender, path: P) -> Result<()> {
        writable(path.as_ref())?;
        self.inner.del(user, path).await
    }

    async fn mkd<P: AsRef<Path> + Send + Debug>(&self, _user: &Sender, _path: P) -> Result<()> {
        Err(denied())
    }

    async fn rename<P: AsRef<Path> + Send + Debug>(
        &self,
        user: &Sender,
        from: P,
        to: P,
    ) -> Result<()> {
        writable(from.as_ref())?;
        writable(to.as_ref())?;
        self.inner.rename(user, from, to).await
    }

    async fn rmd<P: AsRef<Path> + Send + Debug>(&self, _user: &Sender, _path: P) -> Result<()> {
        Err(denied())
    }

    async fn cwd<P: AsRef<Path> + Send + Debug>(&self, user: &Sender, path: P) -> Result<()> {
        if names(path.as_ref()).is_none() {
            return Err(denied());
        }
        if in_tests(path.as_ref()) == Some(None) {
            return Ok(());
        }
        self.inner.cwd(user, path).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_result_name_gives_its_job() {
        assert_eq!(job_of("f_un_fichier_12_accuse.json"), Some(12));
        assert_eq!(
            job_of("f_un_fichier_12_28219002400012_complet.log"),
            Some(12)
        );
        assert_eq!(job_of("f_7_28219010700049-global_erreurs.log"), Some(7));
        assert_eq!(job_of("f_7_fichier_complet.log"), Some(7));
        assert_eq!(job_of("autre.txt"), None);
        assert_eq!(job_of("f_x_accuse.json"), None);
    }

    #[test]
    fn only_plain_names_at_the_root_are_writable() {
        for ok in [
            "/f.xml",
            "f.xml",
            "./f.xml.gz",
            "/.f.xml.part",
            "/test/f.xml",
        ] {
            assert!(writable(Path::new(ok)).is_ok(), "{ok}");
        }
        for bad in [
            "/retours",
            "/retours/x.log",
            "retours/../f.xml",
            "/a/b.xml",
            "/test",
            "/test/a/b.xml",
            "/retours/test/x.log",
            "a\\b.xml",
            "f\u{1}.xml",
            "f\n.xml",
            "/",
        ] {
            assert!(writable(Path::new(bad)).is_err(), "{bad}");
        }
    }
}
