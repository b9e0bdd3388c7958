//! PostgreSQL: files kept as large objects (`lo:<oid>` keys), so that every instance reads
//! every received file, log and receipt, and no folder but the base has to survive.
//!
//! Why large objects rather than `bytea` rows: a large object is read and written in chunks
//! (`loread`/`lowrite` of 1 MiB here) inside a transaction, so a 1 GB file never sits in the
//! memory of the client or of one server backend, and it is transactional, so a log written in
//! the file's own transaction exists exactly when its import row does. A `bytea` value is
//! read and written whole (1 GB at most, all in memory on both sides); chunk rows of our own
//! would be the same thing as `pg_largeobject`, built by hand.
//!
//! Every file is gzip-compressed (level 1) on its way in and decompressed on its way out:
//! `pg_largeobject` stores 2 KiB pages, one row each, and writes about 20 MB/s on this
//! machine, while logs and XML shrink some tenfold for less CPU than that costs. The size of
//! the file as kept is recorded in `fichier_conserve`, with the large object's oid.

use std::io::Read;
use std::path::Path;
use std::sync::{Arc, Mutex};

use postgres::{Client, GenericClient};

use crate::files::{is_local_key, local_size, open_local, remove_local, LARGE_OBJECT_KEY};
use crate::{FileStore, Result, StoreError};

/// Bytes per `lowrite`/`loread` call.
const CHUNK: usize = 1 << 20;
/// `INV_READ` and `INV_WRITE` of libpq.
const INV_READ: i32 = 0x40000;
const INV_WRITE: i32 = 0x20000;
/// SQLSTATE `undefined_object`: "large object … does not exist".
const UNDEFINED_OBJECT: &str = "42704";

/// Large objects of the base (see the module's documentation). A few connections are kept
/// for the next reads.
pub struct PgFiles {
    url: String,
    idle: Arc<Mutex<Vec<Client>>>,
}

impl PgFiles {
    /// The large objects of the base at `url` (connections are opened when needed).
    pub fn new(url: &str) -> PgFiles {
        PgFiles {
            url: url.to_string(),
            idle: Arc::new(Mutex::new(Vec::new())),
        }
    }

    fn client(&self) -> Result<Client> {
        let c = self.idle.lock().expect("not poisoned").pop();
        match c {
            Some(c) if !c.is_closed() => Ok(c),
            _ => super::connect::connect(&self.url),
        }
    }

    fn give_back(&self, c: Client) {
        give_back(&self.idle, c)
    }
}

fn give_back(idle: &Mutex<Vec<Client>>, c: Client) {
    let mut idle = idle.lock().expect("not poisoned");
    if idle.len() < 4 && !c.is_closed() {
        idle.push(c);
    }
}

/// The oid of a large-object key.
fn oid(key: &str) -> Result<u32> {
    key.strip_prefix(LARGE_OBJECT_KEY)
        .and_then(|o| o.parse().ok())
        .ok_or_else(|| StoreError::Invalid(format!("clé de fichier invalide : {key}")))
}

fn not_found(e: &postgres::Error) -> bool {
    e.code().map(|c| c.code()) == Some(UNDEFINED_OBJECT)
}

/// Writes `src` into a new large object with `c`, which must be inside a transaction,
/// gzip-compressed, and records its size; returns its key. Compression runs on a thread of
/// its own while this one sends the compressed chunks (two in flight): memory is a few
/// chunks, and the time is the slower of the two, not their sum.
pub(crate) fn write_large_object(
    c: &mut impl GenericClient,
    src: &mut (dyn Read + Send),
) -> Result<String> {
    let oid: u32 = c.query_one("SELECT lo_create(0)", &[])?.get(0);
    let fd: i32 = c
        .query_one("SELECT lo_open($1, $2)", &[&oid, &INV_WRITE])?
        .get(0);
    let size = std::thread::scope(|scope| -> Result<u64> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(2);
        let compressing = scope.spawn(move || -> std::io::Result<u64> {
            let mut gz = flate2::write::GzEncoder::new(
                ChunkSender {
                    tx,
                    buf: Vec::with_capacity(CHUNK),
                },
                flate2::Compression::fast(),
            );
            let size = std::io::copy(src, &mut gz)?;
            gz.finish()?.send()?;
            Ok(size)
        });
        for chunk in rx {
            c.query_one("SELECT lowrite($1, $2)", &[&fd, &chunk])?;
        }
        compressing
            .join()
            .map_err(|_| StoreError::Invalid("la compression d'un fichier a échoué".into()))?
            .map_err(StoreError::from)
    })?;
    c.query_one("SELECT lo_close($1)", &[&fd])?;
    c.execute(
        "INSERT INTO fichier_conserve (oid, taille, conserve_le) VALUES ($1, $2, $3)",
        &[&oid, &(size as i64), &crate::now()],
    )?;
    Ok(format!("{LARGE_OBJECT_KEY}{oid}"))
}

/// Compressed bytes, handed to the sending thread one chunk at a time.
struct ChunkSender {
    tx: std::sync::mpsc::SyncSender<Vec<u8>>,
    buf: Vec<u8>,
}

impl ChunkSender {
    fn send(&mut self) -> std::io::Result<()> {
        if !self.buf.is_empty() {
            let full = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
            self.tx
                .send(full)
                .map_err(|_| std::io::Error::other("l'écriture dans la base s'est arrêtée"))?;
        }
        Ok(())
    }
}

impl std::io::Write for ChunkSender {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        let n = b.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&b[..n]);
        if self.buf.len() == CHUNK {
            self.send()?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl FileStore for PgFiles {
    fn describe(&self) -> String {
        "objets volumineux de la base PostgreSQL".into()
    }

    fn in_base(&self) -> bool {
        true
    }

    fn keep(&self, local: &Path) -> Result<String> {
        let mut f = std::fs::File::open(local)?;
        let mut c = self.client()?;
        let key = {
            let mut tx = c.transaction()?;
            let key = write_large_object(&mut tx, &mut f)?;
            tx.commit()?;
            key
        };
        self.give_back(c);
        Ok(key)
    }

    fn open(&self, key: &str) -> Result<Box<dyn Read + Send>> {
        if is_local_key(key) {
            return open_local(key);
        }
        let oid = oid(key)?;
        let mut c = self.client()?;
        c.batch_execute("BEGIN READ ONLY")?;
        let fd: i32 = match c.query_one("SELECT lo_open($1, $2)", &[&oid, &INV_READ]) {
            Ok(r) => r.get(0),
            Err(e) => {
                let _ = c.batch_execute("ROLLBACK");
                self.give_back(c);
                if not_found(&e) {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        "fichier absent de la base",
                    )
                    .into());
                }
                return Err(e.into());
            }
        };
        Ok(Box::new(flate2::read::GzDecoder::new(LargeObjectReader {
            client: Some(c),
            idle: self.idle.clone(),
            fd,
            chunk: Vec::new(),
            at: 0,
            done: false,
        })))
    }

    fn sizes(&self, keys: &[String]) -> Result<Vec<Option<u64>>> {
        let oids: Vec<u32> = keys
            .iter()
            .filter(|k| !is_local_key(k))
            .map(|k| oid(k))
            .collect::<Result<_>>()?;
        let mut found = std::collections::HashMap::new();
        if !oids.is_empty() {
            let mut c = self.client()?;
            for r in c.query(
                "SELECT oid, taille FROM fichier_conserve WHERE oid = ANY($1)",
                &[&oids],
            )? {
                let (o, s): (u32, i64) = (r.get(0), r.get(1));
                found.insert(o, s as u64);
            }
            self.give_back(c);
        }
        keys.iter()
            .map(|k| {
                Ok(if is_local_key(k) {
                    local_size(k)
                } else {
                    found.get(&oid(k)?).copied()
                })
            })
            .collect()
    }

    fn remove(&self, key: &str) -> Result<()> {
        if is_local_key(key) {
            return remove_local(key);
        }
        let oid = oid(key)?;
        let mut c = self.client()?;
        // The row and the object go together; an object already gone is not an error.
        let r = (|| -> Result<()> {
            let mut tx = c.transaction()?;
            tx.execute("DELETE FROM fichier_conserve WHERE oid = $1", &[&oid])?;
            tx.query(
                "SELECT lo_unlink(oid) FROM pg_largeobject_metadata WHERE oid = $1",
                &[&oid],
            )?;
            tx.commit()?;
            Ok(())
        })();
        self.give_back(c);
        r
    }

    fn sweep(&self, before: &str) -> Result<u64> {
        let mut c = self.client()?;
        let r = (|| -> Result<u64> {
            let mut tx = c.transaction()?;
            let gone = tx.query(
                "WITH orphan AS ( \
                   SELECT f.oid FROM fichier_conserve f WHERE f.conserve_le < $1 \
                   AND NOT EXISTS (SELECT 1 FROM job j WHERE j.stored_path = 'lo:' || f.oid::text) \
                   AND NOT EXISTS (SELECT 1 FROM import_log l \
                     WHERE l.complet_path = 'lo:' || f.oid::text OR l.erreurs_path = 'lo:' || f.oid::text) \
                   FOR UPDATE OF f SKIP LOCKED) \
                 DELETE FROM fichier_conserve f USING orphan o WHERE f.oid = o.oid RETURNING f.oid",
                &[&before],
            )?;
            for r in &gone {
                let oid: u32 = r.get(0);
                tx.query(
                    "SELECT lo_unlink(oid) FROM pg_largeobject_metadata WHERE oid = $1",
                    &[&oid],
                )?;
            }
            tx.commit()?;
            Ok(gone.len() as u64)
        })();
        self.give_back(c);
        r
    }
}

/// A large object read 1 MiB at a time, in a read-only transaction of its own connection.
struct LargeObjectReader {
    client: Option<Client>,
    idle: Arc<Mutex<Vec<Client>>>,
    fd: i32,
    chunk: Vec<u8>,
    at: usize,
    done: bool,
}

impl Read for LargeObjectReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.at == self.chunk.len() {
            if self.done {
                return Ok(0);
            }
            let c = self.client.as_mut().expect("open until dropped");
            let row = c
                .query_one("SELECT loread($1, $2)", &[&self.fd, &(CHUNK as i32)])
                .map_err(|e| std::io::Error::other(StoreError::from(e).to_string()))?;
            self.chunk = row.get(0);
            self.at = 0;
            if self.chunk.len() < CHUNK {
                self.done = true;
            }
            if self.chunk.is_empty() {
                return Ok(0);
            }
        }
        let n = buf.len().min(self.chunk.len() - self.at);
        buf[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

impl Drop for LargeObjectReader {
    fn drop(&mut self) {
        if let Some(mut c) = self.client.take() {
            if c.batch_execute("ROLLBACK").is_ok() {
                give_back(&self.idle, c);
            }
        }
    }
}
