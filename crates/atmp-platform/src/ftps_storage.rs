//! The storage a sender sees over FTPS: its folder, with the platform's rules applied to
//! every command before the file system is touched.
//!
//! - no sub-folder (`MKD` refused): a file is deposited at the root, where it is taken;
//! - no name with `\` or a control character (refused at once, rather than never taken);
//! - `retours/` is read-only for the sender: the platform's results cannot be removed,
//!   overwritten or renamed there;
//! - an upload stops with `552` as soon as it passes the maximum file size or the sender's
//!   quota (bytes of files not yet taken), and what was written of it is removed.

use std::fmt::Debug;
use std::path::{Component, Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

use async_trait::async_trait;
use unftp_core::storage::{Error, ErrorKind, Fileinfo, Result, StorageBackend};
use unftp_sbe_fs::{Filesystem, Meta};

use crate::ftps::Sender;

/// [`Filesystem`] with the rules above.
#[derive(Debug)]
pub struct Guarded {
    pub(crate) inner: Filesystem,
    pub(crate) max_file: u64,
    pub(crate) quota: u64,
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

/// A path the sender may write: a plain name at the root of its folder.
fn writable(p: &Path) -> Result<()> {
    match names(p) {
        Some(n) if n.len() == 1 && n[0] != "retours" => Ok(()),
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

/// Stops a stream after `left` bytes with an error that says why.
struct Capped<R> {
    inner: R,
    left: u64,
    over: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

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
        self.inner.metadata(user, path).await
    }

    async fn list<P: AsRef<Path> + Send + Debug>(
        &self,
        user: &Sender,
        path: P,
    ) -> Result<Vec<Fileinfo<PathBuf, Meta>>> {
        // The platform publishes into `retours/` through temporary names renamed at once; a
        // listing that meets one between its reading of the folder and of the entry fails
        // whole (the entry is gone). Such a listing is read again, and the temporary names
        // (results not complete yet) are never shown.
        let mut tries = 0;
        loop {
            match self.inner.list(user, path.as_ref()).await {
                Ok(v) => {
                    return Ok(v
                        .into_iter()
                        .filter(|f| {
                            !f.path
                                .to_string_lossy()
                                .ends_with(crate::worker::TEMPORARY_SUFFIX)
                        })
                        .collect())
                }
                Err(_) if tries < 5 => {
                    tries += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn get<P: AsRef<Path> + Send + Debug>(
        &self,
        user: &Sender,
        path: P,
        start_pos: u64,
    ) -> Result<Box<dyn tokio::io::AsyncRead + Send + Sync + Unpin>> {
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
        let target = home.join(names(path.as_ref()).unwrap_or_default().concat());
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
        self.inner.cwd(user, path).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_names_at_the_root_are_writable() {
        for ok in ["/f.xml", "f.xml", "./f.xml.gz", "/.f.xml.part"] {
            assert!(writable(Path::new(ok)).is_ok(), "{ok}");
        }
        for bad in [
            "/retours",
            "/retours/x.log",
            "retours/../f.xml",
            "/a/b.xml",
            "a\\b.xml",
            "f\u{1}.xml",
            "f\n.xml",
            "/",
        ] {
            assert!(writable(Path::new(bad)).is_err(), "{bad}");
        }
    }
}
