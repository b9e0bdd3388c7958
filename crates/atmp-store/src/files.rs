//! Where the platform keeps files: the files as received, their logs and the receipts.
//!
//! A [`FileStore`] gives each file a *key* (a string kept in the base, in `job.stored_path`
//! and in `import_log`). Two implementations:
//!
//! - [`LocalFiles`] (SQLite, one machine): a key is the absolute path of a file under the
//!   instance's `--data` folder; keeping a file is leaving it where it was written.
//! - [`crate::PgFiles`] (PostgreSQL, any number of instances): a key is `lo:<oid>`, a large
//!   object of the base, written and read in chunks of 1 MiB, so that every instance reads
//!   every file and no folder but the base has to survive.
//!
//! Both read a local path key, so that rows written before a base moved to large objects,
//! or by the command line (whose logs are files, §7), stay readable.

use std::io::Read;
use std::path::Path;

use crate::{Result, StoreError};

/// The prefix of the keys of files kept as large objects of the base.
pub const LARGE_OBJECT_KEY: &str = "lo:";

/// Where received files and logs are kept (see the module's documentation).
pub trait FileStore: Send + Sync {
    /// What it is, as said at start (`dossier local …`, `objets volumineux de la base`).
    fn describe(&self) -> String;
    /// Whether files are kept in the base (shared by every instance), rather than on this
    /// machine's disk.
    fn in_base(&self) -> bool;
    /// Keeps a complete local file and returns its key. Local: the file stays where it is
    /// (the key is its path). In the base: its bytes are copied into a new large object
    /// (committed before this returns); the local file is left for the caller to remove
    /// once the key is recorded.
    fn keep(&self, local: &Path) -> Result<String>;
    /// Reads a kept file from its start, in bounded memory.
    fn open(&self, key: &str) -> Result<Box<dyn Read + Send>>;
    /// The size of each file (`None`: not found), in one round trip in the base.
    fn sizes(&self, keys: &[String]) -> Result<Vec<Option<u64>>>;
    /// Removes a kept file; a file already gone is not an error.
    fn remove(&self, key: &str) -> Result<()>;
    /// Removes the files kept before `before` (`YYYY-MM-DDTHH:MM:SS`) that no job and no
    /// import log names: what a process killed between keeping a file and recording its row
    /// left behind. Returns how many. Local files are left to the data folder's owner (a
    /// stray file there is visible; one in the base is not).
    fn sweep(&self, _before: &str) -> Result<u64> {
        Ok(0)
    }
}

/// Whether a key names a file on this machine's disk (not a large object).
pub fn is_local_key(key: &str) -> bool {
    !key.starts_with(LARGE_OBJECT_KEY)
}

/// The files of one machine: keys are paths under the instance's data folder.
#[derive(Debug, Clone)]
pub struct LocalFiles {
    root: std::path::PathBuf,
}

impl LocalFiles {
    /// Files under `root` (said at start; keys are absolute paths).
    pub fn new(root: &Path) -> LocalFiles {
        LocalFiles {
            root: root.to_path_buf(),
        }
    }
}

pub(crate) fn open_local(key: &str) -> Result<Box<dyn Read + Send>> {
    if !is_local_key(key) {
        return Err(StoreError::Invalid(format!(
            "fichier {key} conservé dans une base PostgreSQL, illisible sans elle"
        )));
    }
    Ok(Box::new(std::fs::File::open(key)?))
}

pub(crate) fn local_size(key: &str) -> Option<u64> {
    std::fs::metadata(key)
        .ok()
        .filter(|m| m.is_file())
        .map(|m| m.len())
}

pub(crate) fn remove_local(key: &str) -> Result<()> {
    match std::fs::remove_file(key) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e.into()),
    }
    Ok(())
}

impl FileStore for LocalFiles {
    fn describe(&self) -> String {
        format!("dossier local {}", self.root.display())
    }

    fn in_base(&self) -> bool {
        false
    }

    fn keep(&self, local: &Path) -> Result<String> {
        Ok(local.to_string_lossy().into_owned())
    }

    fn open(&self, key: &str) -> Result<Box<dyn Read + Send>> {
        open_local(key)
    }

    fn sizes(&self, keys: &[String]) -> Result<Vec<Option<u64>>> {
        Ok(keys.iter().map(|k| local_size(k)).collect())
    }

    fn remove(&self, key: &str) -> Result<()> {
        remove_local(key)
    }
}

/// The file store that goes with a base: large objects for PostgreSQL, the data folder
/// `root` for SQLite.
pub fn open_files(url: &str, root: &Path) -> Result<std::sync::Arc<dyn FileStore>> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(std::sync::Arc::new(crate::PgFiles::new(url)))
    } else {
        Ok(std::sync::Arc::new(LocalFiles::new(root)))
    }
}
