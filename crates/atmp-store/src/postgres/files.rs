//! PostgreSQL: files kept as large objects (`lo:<oid>` keys), so that every instance reads
//! every received file, log and receipt, and no folder but the base has to survive.
//!
//! Why large objects rather than `bytea` rows: a large object is read and written in chunks
//! (`loread`/`lowrite` of 1 MiB here) inside a transaction, so a 1 GB file never sits in the
//! memory of the client or of one server backend, and it is transactional, so a log written in
//! the file's own transaction exists exactly when its import row does. A `bytea` value is
//! read and written whole (1 GB at most, all in memory on both sides); chunk rows of our own
//! would be the same thing as `pg_largeobject`, built by hand.

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

/// Writes `src` into a new large object with `c`, which must be inside a transaction; returns
/// its key. Memory: one chunk.
pub(crate) fn write_large_object(c: &mut impl GenericClient, src: &mut dyn Read) -> Result<String> {
    let oid: u32 = c.query_one("SELECT lo_create(0)", &[])?.get(0);
    let fd: i32 = c
        .query_one("SELECT lo_open($1, $2)", &[&oid, &INV_WRITE])?
        .get(0);
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = read_full(src, &mut buf)?;
        if n == 0 {
            break;
        }
        c.query_one("SELECT lowrite($1, $2)", &[&fd, &&buf[..n]])?;
        if n < buf.len() {
            break;
        }
    }
    c.query_one("SELECT lo_close($1)", &[&fd])?;
    Ok(format!("{LARGE_OBJECT_KEY}{oid}"))
}

/// Fills `buf` as far as the source goes.
fn read_full(src: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match src.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
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
        Ok(Box::new(LargeObjectReader {
            client: Some(c),
            idle: self.idle.clone(),
            fd,
            chunk: Vec::new(),
            at: 0,
            done: false,
        }))
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
                "SELECT o, atmp_lo_size(o) FROM unnest($1::oid[]) AS o",
                &[&oids],
            )? {
                let (o, s): (u32, Option<i64>) = (r.get(0), r.get(1));
                if let Some(s) = s {
                    found.insert(o, s as u64);
                }
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
        let r = c.query_one("SELECT lo_unlink($1)", &[&oid]);
        self.give_back(c);
        match r {
            Ok(_) => Ok(()),
            Err(e) if not_found(&e) => Ok(()),
            Err(e) => Err(e.into()),
        }
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
