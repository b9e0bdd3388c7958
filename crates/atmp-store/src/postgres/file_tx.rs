//! PostgreSQL: the storage transaction of one file, on the bulk path.
//!
//! One round trip per inserted row is what made the first version slow (4.8 million rows in a
//! 1 GB file). Here an insert is a row appended to a buffer, and the buffer goes to the server
//! as binary `COPY`, parents before children, every [`FLUSH_ROWS`] rows (by default) and at commit. So that
//! the caller gets the new row's id at once (it writes it in the log and uses it as the parent
//! of the next rows), ids are taken by atmp from the table's identity sequence in blocks:
//! the sequences step by a block (`INCREMENT BY`, migration 0005), one `nextval` reserves the
//! whole block for this transaction.
//!
//! The transaction runs on a connection of its own, on a thread of its own ([`FileConn`]): a
//! flush is handed to that thread and the file's reading goes on while the server ingests the
//! rows (on two cores, parsing and the server's work overlap instead of taking turns). A
//! read is a call to that thread, answered after the flushes queued before it; the id blocks
//! are taken on the store's main connection (`nextval` is outside any transaction anyway), so
//! that they never wait for a flush. At most one flush waits while another runs: memory stays
//! bounded.
//!
//! Reads must see the buffered rows as if they were in the base. The lookups of §5 are
//! answered from three places, each exact:
//! - rows still in the buffer: indexed by (lookup, parent, key) and by parent;
//! - rows under a parent that held no row of another import when first met ("known empty":
//!   a new agent's parent is one of this transaction's own ids, or a collectivité with no
//!   agent yet): every row under it is this file's own, so an index of their keys kept for the
//!   whole transaction answers without asking the server (a hit is read back by id);
//! - otherwise the server, plus the buffer.
//!
//! The index keeps a hash and an id per row (about 20 bytes), not the row: a 1 GB file's
//! 340 000 agents cost some 15 MB. Two files that touch the same collectivité are never
//! integrated at the same time (the job queue's order), which is what makes "known empty"
//! stay true for the whole transaction.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};

use postgres::binary_copy::BinaryCopyInWriter;
use postgres::types::{ToSql, Type};
use postgres::{Client, Row as PgRow, Statement, Transaction};

use super::imports::{cell_of, counts_text, insert_logs};
use crate::{
    Autorisation, Cell, Collectivite, FileTx, FindId, Found, ImportLog, ImportRow, InsertId,
    Result, StoreError, Table,
};

/// Rows buffered before a flush by default (some 10 MB of cells at most).
pub(super) const FLUSH_ROWS: usize = 20_000;

/// Rows inserted by a file from which its commit is followed by `ANALYZE`.
const ANALYZE_AFTER: u64 = 10_000;

/// The parent table of a table's rows (`None`: the collectivité, not an integrated table).
fn parent_table(t: Table) -> Option<Table> {
    match t {
        Table::Service | Table::Agent => None,
        Table::Evenement => Some(Table::Agent),
        _ => Some(Table::Evenement),
    }
}

fn table_index(t: Table) -> usize {
    Table::ALL
        .iter()
        .position(|x| *x == t)
        .expect("every table")
}

/// A value as the server stores it in a column of type `ty` (and gives it back): what
/// [`Cell`]'s `ToSql` writes, so that a buffered row compares and reads as a stored one.
fn stored(c: &Cell, ty: &Type) -> Cell {
    match c {
        Cell::Null => Cell::Null,
        Cell::Int(i) if *ty == Type::INT8 => Cell::Int(*i),
        Cell::Int(i) if *ty == Type::FLOAT8 => Cell::Real(*i as f64),
        Cell::Int(i) => Cell::Text(i.to_string()),
        Cell::Real(r) if *ty == Type::TEXT || *ty == Type::VARCHAR => Cell::Text(r.to_string()),
        Cell::Real(r) => Cell::Real(*r),
        Cell::Text(t) if *ty == Type::INT8 => t.parse().map_or(c.clone(), Cell::Int),
        Cell::Text(t) if *ty == Type::FLOAT8 => t.parse().map_or(c.clone(), Cell::Real),
        Cell::Text(_) => c.clone(),
    }
}

/// A piece of work for the file's connection.
type Task = Box<dyn FnOnce(&mut Transaction<'_>) -> Result<()> + Send>;

enum Msg {
    Run(Task),
    Commit(SyncSender<Result<()>>),
}

/// The file's transaction, on a connection and a thread of their own. Dropped without
/// [`FileConn::commit`], the thread rolls back; either way the connection comes back to the
/// store for its next file.
pub(super) struct FileConn<'a> {
    sender: Option<SyncSender<Msg>>,
    thread: Option<std::thread::JoinHandle<Option<Client>>>,
    /// The first failure of work nobody waited for (a flush): every later call returns it.
    failed: Arc<Mutex<Option<String>>>,
    slot: &'a mut Option<Client>,
}

impl<'a> FileConn<'a> {
    /// Opens the transaction on the connection kept in `slot` (or on a new one).
    pub(super) fn open(slot: &'a mut Option<Client>, url: &str) -> Result<Self> {
        let mut client = match slot.take() {
            Some(c) if !c.is_closed() => c,
            _ => super::connect::connect(url)?,
        };
        let failed = Arc::new(Mutex::new(None));
        let (sender, rx) = sync_channel::<Msg>(1);
        let f = failed.clone();
        let thread = std::thread::Builder::new()
            .name("atmp-pg-fichier".into())
            .spawn(move || {
                let ok = run_file_conn(&mut client, rx, &f);
                ok.then_some(client)
            })?;
        Ok(FileConn {
            sender: Some(sender),
            thread: Some(thread),
            failed,
            slot,
        })
    }

    fn failure(&self) -> StoreError {
        StoreError::Postgres(
            self.failed
                .lock()
                .expect("not poisoned")
                .clone()
                .unwrap_or_else(|| "la connexion du fichier s'est arrêtée".into()),
        )
    }

    fn send(&mut self, m: Msg) -> Result<()> {
        if let Some(e) = self.failed.lock().expect("not poisoned").clone() {
            return Err(StoreError::Postgres(e));
        }
        let s = self.sender.as_ref().expect("open until commit");
        s.send(m).map_err(|_| self.failure())
    }

    /// Runs `f` in the transaction, after the work queued before it, and returns its result.
    pub(super) fn call<R: Send + 'static>(
        &mut self,
        f: impl FnOnce(&mut Transaction<'_>) -> Result<R> + Send + 'static,
    ) -> Result<R> {
        let (rtx, rrx) = sync_channel(1);
        self.send(Msg::Run(Box::new(move |tx| {
            let _ = rtx.send(f(tx));
            Ok(())
        })))?;
        rrx.recv().map_err(|_| self.failure())?
    }

    /// Queues `f`; a failure comes back from the next call.
    fn spawn(
        &mut self,
        f: impl FnOnce(&mut Transaction<'_>) -> Result<()> + Send + 'static,
    ) -> Result<()> {
        self.send(Msg::Run(Box::new(f)))
    }

    /// Commits, once all queued work has run.
    fn commit(mut self) -> Result<()> {
        let (rtx, rrx) = sync_channel(1);
        self.send(Msg::Commit(rtx))?;
        rrx.recv().map_err(|_| self.failure())?
    }
}

impl Drop for FileConn<'_> {
    fn drop(&mut self) {
        // Closing the channel ends the thread (rolling back unless it committed).
        self.sender = None;
        if let Some(t) = self.thread.take() {
            if let Ok(Some(c)) = t.join() {
                *self.slot = Some(c);
            }
        }
    }
}

/// The body of the file's thread: runs the work in one transaction until commit or until the
/// channel closes (rollback). Returns whether the connection is fit for another file.
fn run_file_conn(client: &mut Client, rx: Receiver<Msg>, failed: &Mutex<Option<String>>) -> bool {
    let fail = |e: StoreError| {
        let mut f = failed.lock().expect("not poisoned");
        if f.is_none() {
            *f = Some(match e {
                StoreError::Postgres(m) => m,
                other => other.to_string(),
            });
        }
    };
    let mut tx = match client.transaction() {
        Ok(tx) => tx,
        Err(e) => {
            fail(e.into());
            return false;
        }
    };
    for m in rx {
        match m {
            Msg::Run(task) => {
                if failed.lock().expect("not poisoned").is_some() {
                    continue;
                }
                if let Err(e) = task(&mut tx) {
                    fail(e);
                }
            }
            Msg::Commit(reply) => {
                let r = match failed.lock().expect("not poisoned").clone() {
                    Some(e) => Err(StoreError::Postgres(e)),
                    None => tx.commit().map_err(StoreError::from),
                };
                let ok = r.is_ok();
                let _ = reply.send(r);
                return ok;
            }
        }
    }
    // Dropped without commit: rolled back.
    drop(tx);
    failed.lock().expect("not poisoned").is_none()
}

/// A buffered row: its id, its parent, its cells (as stored), in the insert's column order.
struct Row {
    id: i64,
    parent: i64,
    cells: Vec<Cell>,
}

/// A prepared insert: its table, columns and buffer.
struct InsertPlan {
    table: Table,
    cols: Vec<&'static str>,
    /// The types of `id`, the parent, `import_id`, then of `cols`.
    types: Vec<Type>,
    copy_sql: String,
    rows: Vec<Row>,
}

/// Whether a lookup is answered with the help of the in-memory indexes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Indexing {
    /// Not used yet: indexed from its first use (the rows inserted before are read back).
    Inactive,
    /// Every insert of its table carries its key and wanted columns: buffered rows are
    /// indexed.
    Indexed,
    /// Some insert lacks a column of the lookup: the buffer is flushed before it runs.
    Unindexed,
}

/// Where a lookup's key and wanted columns sit in an insert's cells.
type Cover = (Vec<usize>, Vec<usize>);

/// A prepared lookup.
struct FindPlan {
    table: Table,
    key: Vec<&'static str>,
    want: Vec<&'static str>,
    /// `SELECT id, want… FROM t WHERE parent = $1`, completed per pattern of null keys.
    head: String,
    /// A statement per pattern of null keys: `col = $n` or `col IS NULL`, chosen by the
    /// values (`IS NOT DISTINCT FROM` cannot use an index on PostgreSQL).
    by_mask: HashMap<u64, Statement>,
    /// `SELECT parent, key…, want… FROM t WHERE id = $1`: an indexed hit read back.
    by_id: Option<Statement>,
    indexing: Indexing,
    /// (insert plan → positions of the key and wanted columns in its cells).
    cover: HashMap<usize, Option<Cover>>,
}

/// A part of a dossier statement: a table and the columns read from it.
type DossierPart = (Table, &'static [&'static str]);

/// What a handle given to the caller names: the handles of lookups, dossiers and inserts
/// share one numbering.
enum Prepared {
    Find(usize),
    /// The dossier of one agent, the dossiers of agents `= ANY($1)` (each row ending with its
    /// agent's id), the parts.
    Dossier(Statement, Statement, Vec<DossierPart>),
    Insert(usize),
}

/// Hashes to ids, with the rare second id of a hash kept aside.
#[derive(Default)]
struct HashIndex {
    first: HashMap<u64, i64>,
    more: HashMap<u64, Vec<i64>>,
}

impl HashIndex {
    fn add(&mut self, h: u64, id: i64) {
        match self.first.entry(h) {
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(id);
            }
            std::collections::hash_map::Entry::Occupied(_) => {
                self.more.entry(h).or_default().push(id)
            }
        }
    }

    /// The ids of a hash, ascending.
    fn get(&self, h: u64) -> Vec<i64> {
        let mut v: Vec<i64> = self.first.get(&h).copied().into_iter().collect();
        if let Some(m) = self.more.get(&h) {
            v.extend(m);
            v.sort_unstable();
        }
        v
    }

    fn clear(&mut self) {
        self.first.clear();
        self.more.clear();
    }
}

/// One file's storage transaction: dropped without `commit`, it rolls back.
pub(super) struct PgFileTx<'a> {
    conn: FileConn<'a>,
    /// The store's own connection: the id blocks (`nextval` is not transactional).
    main: &'a mut Client,
    /// (table → column → SQL type) of the integrated tables.
    columns: &'a HashMap<&'static str, HashMap<String, Type>>,
    import_id: i64,
    prepared: Vec<Prepared>,
    finds: Vec<FindPlan>,
    inserts: Vec<InsertPlan>,
    /// Per table: the next id of the current block, the block's end, and the blocks taken
    /// (ascending: a sequence only grows).
    blocks: [(i64, i64); 8],
    own: [Vec<(i64, i64)>; 8],
    next_block: [Option<Statement>; 8],
    /// Rows inserted so far in this transaction, per table.
    inserted: [u64; 8],
    /// Per table: whether its lookups went to the server, and the rows inserted when it was
    /// last analysed in this transaction.
    read_from_base: [bool; 8],
    analysed_at: [u64; 8],
    /// Buffered rows by (table, id) and by (table, parent): (insert plan, row index).
    pending: HashMap<(Table, i64), (usize, usize)>,
    by_parent: HashMap<(Table, i64), Vec<(usize, usize)>>,
    pending_rows: usize,
    flush_rows: usize,
    /// (lookup, parent, key) of the buffered rows, cleared at each flush.
    pending_index: HashIndex,
    /// (lookup, parent, key) of every row of this file under a known-empty parent.
    kept_index: HashIndex,
    /// (table, parent) → no row of another import under it.
    empty: HashMap<(Table, i64), bool>,
    hasher: RandomState,
    /// The dossier of the agent the last lookup found in the base, read in the same call
    /// (the rules read it next): (dossier handle, agent, rows). Dropped at each flush.
    prefetched: Option<(usize, i64, Vec<PgRow>)>,
    /// Lookups answered ahead by [`FileTx::prefetch`]: (lookup, parent, key) → the row found
    /// in the base, and the dossiers of the agents found, by agent. Dropped at each flush
    /// (the base then holds rows the answers did not see), each answer used once.
    batch: HashMap<(usize, i64, String), Option<Found>>,
    batch_dossiers: HashMap<i64, Vec<PgRow>>,
    /// Service codes read from the base (a stored row never changes).
    service_codes: HashMap<i64, Option<String>>,
}

impl<'a> PgFileTx<'a> {
    pub(super) fn new(
        conn: FileConn<'a>,
        main: &'a mut Client,
        columns: &'a HashMap<&'static str, HashMap<String, Type>>,
        import_id: i64,
        flush_rows: usize,
    ) -> Self {
        PgFileTx {
            conn,
            main,
            columns,
            import_id,
            prepared: Vec::new(),
            finds: Vec::new(),
            inserts: Vec::new(),
            blocks: [(1, 0); 8],
            own: Default::default(),
            next_block: Default::default(),
            inserted: [0; 8],
            read_from_base: [false; 8],
            analysed_at: [0; 8],
            pending: HashMap::new(),
            by_parent: HashMap::new(),
            pending_rows: 0,
            flush_rows,
            pending_index: HashIndex::default(),
            kept_index: HashIndex::default(),
            empty: HashMap::new(),
            hasher: RandomState::new(),
            prefetched: None,
            batch: HashMap::new(),
            batch_dossiers: HashMap::new(),
            service_codes: HashMap::new(),
        }
    }

    fn check_cols(&self, table: Table, cols: &[&'static str]) -> Result<()> {
        let known = &self.columns[table.name()];
        for c in cols {
            if !known.contains_key(*c) {
                return Err(StoreError::Invalid(format!(
                    "colonne inconnue {}.{c}",
                    table.name()
                )));
            }
        }
        Ok(())
    }

    fn ty(&self, table: Table, col: &str) -> &Type {
        &self.columns[table.name()][col]
    }

    /// The key of a lookup as stored.
    fn stored_key(&self, f: usize, key: &[Cell]) -> Vec<Cell> {
        let p = &self.finds[f];
        key.iter()
            .zip(&p.key)
            .map(|(c, k)| stored(c, self.ty(p.table, k)))
            .collect()
    }

    fn hash(&self, f: usize, parent: i64, key: &[Cell]) -> u64 {
        let mut h = self.hasher.build_hasher();
        h.write_usize(f);
        h.write_i64(parent);
        for c in key {
            match c {
                Cell::Null => h.write_u8(0),
                Cell::Int(i) => {
                    h.write_u8(1);
                    h.write_i64(*i);
                }
                Cell::Real(r) => {
                    h.write_u8(2);
                    // 0.0 and -0.0 are equal, and must hash equal.
                    h.write_u64(if *r == 0.0 { 0 } else { r.to_bits() });
                }
                Cell::Text(t) => {
                    h.write_u8(3);
                    h.write(t.as_bytes());
                    h.write_u8(0xff);
                }
            }
        }
        h.finish()
    }

    /// Positions of a lookup's key and wanted columns in an insert's cells, if it has them.
    fn cover(&mut self, f: usize, i: usize) -> Option<Cover> {
        if let Some(c) = self.finds[f].cover.get(&i) {
            return c.clone();
        }
        let plan = &self.inserts[i];
        let pos = |cols: &[&'static str]| -> Option<Vec<usize>> {
            cols.iter()
                .map(|c| plan.cols.iter().position(|x| x == c))
                .collect()
        };
        let c = pos(&self.finds[f].key).zip(pos(&self.finds[f].want));
        self.finds[f].cover.insert(i, c.clone());
        c
    }

    /// Whether an id of `table` is one this transaction took.
    fn own_id(&self, table: Table, id: i64) -> bool {
        let blocks = &self.own[table_index(table)];
        let i = blocks.partition_point(|(start, _)| *start <= id);
        i > 0 && id <= blocks[i - 1].1
    }

    /// Whether no row of another import is under `parent` in `table`.
    fn known_empty(&mut self, table: Table, parent: i64) -> Result<bool> {
        if let Some(pt) = parent_table(table) {
            if self.own_id(pt, parent) {
                return Ok(true);
            }
        }
        if let Some(e) = self.empty.get(&(table, parent)) {
            return Ok(*e);
        }
        let sql = format!(
            "SELECT NOT EXISTS (SELECT 1 FROM {} WHERE {} = $1 AND import_id <> $2)",
            table.name(),
            table.parent_column()
        );
        let import_id = self.import_id;
        let e: bool = self
            .conn
            .call(move |tx| Ok(tx.query_one(sql.as_str(), &[&parent, &import_id])?))?
            .get(0);
        self.empty.insert((table, parent), e);
        Ok(e)
    }

    /// The next id of a table, from this transaction's block.
    fn next_id(&mut self, table: Table) -> Result<i64> {
        let t = table_index(table);
        let (next, end) = self.blocks[t];
        if next <= end {
            self.blocks[t].0 += 1;
            return Ok(next);
        }
        let st = match &self.next_block[t] {
            Some(st) => st.clone(),
            None => {
                let st = self.main.prepare(&format!(
                    "SELECT nextval(pg_get_serial_sequence('{}', 'id')), \
                     (SELECT increment_by FROM pg_sequences WHERE schemaname = current_schema() \
                      AND sequencename = split_part(pg_get_serial_sequence('{0}', 'id'), '.', 2))",
                    table.name()
                ))?;
                self.next_block[t] = Some(st.clone());
                st
            }
        };
        let r = self.main.query_one(&st, &[])?;
        let start: i64 = r.get(0);
        let step: i64 = r.get::<_, Option<i64>>(1).unwrap_or(1).max(1);
        self.own[t].push((start, start + step - 1));
        self.blocks[t] = (start + 1, start + step - 1);
        Ok(start)
    }

    /// Hands the buffered rows to the file's connection (binary COPY, parents before
    /// children) and goes on: the server ingests them while the next rows are read.
    fn flush(&mut self) -> Result<()> {
        if self.pending_rows == 0 {
            return Ok(());
        }
        let mut order: Vec<usize> = (0..self.inserts.len()).collect();
        order.sort_by_key(|i| table_index(self.inserts[*i].table));
        let import_id = self.import_id;
        let mut batches: Vec<(String, Vec<Type>, Vec<Row>)> = Vec::new();
        for i in order {
            let plan = &mut self.inserts[i];
            if plan.rows.is_empty() {
                continue;
            }
            let cap = plan.rows.len();
            let rows = std::mem::replace(&mut plan.rows, Vec::with_capacity(cap));
            batches.push((plan.copy_sql.clone(), plan.types.clone(), rows));
        }
        self.pending.clear();
        self.by_parent.clear();
        self.pending_index.clear();
        self.pending_rows = 0;
        self.prefetched = None;
        self.batch.clear();
        self.batch_dossiers.clear();
        // A table this file grows while looking rows up in it is analysed again (in the
        // transaction, which sees its own rows) each time it has doubled: planned on the
        // statistics of the table as it was, a lookup by identity took the index of the NIR
        // on the collectivité alone and read all its agents, each time (quadratic: 14 s for
        // 8 000 agents after 200).
        let mut analyse = Vec::new();
        for t in Table::ALL {
            let i = table_index(t);
            if self.read_from_base[i] && self.inserted[i] >= (2 * self.analysed_at[i]).max(1_000) {
                analyse.push(t.name());
                self.analysed_at[i] = self.inserted[i];
            }
        }
        self.conn.spawn(move |tx| {
            for (sql, types, rows) in batches {
                let sink = tx.copy_in(sql.as_str())?;
                let mut w = BinaryCopyInWriter::new(sink, &types);
                for row in &rows {
                    let mut vals: Vec<&(dyn ToSql + Sync)> =
                        Vec::with_capacity(3 + row.cells.len());
                    vals.push(&row.id);
                    vals.push(&row.parent);
                    vals.push(&import_id);
                    vals.extend(row.cells.iter().map(|c| c as &(dyn ToSql + Sync)));
                    w.write(&vals)?;
                }
                w.finish()?;
            }
            if !analyse.is_empty() {
                tx.batch_execute(&format!("ANALYZE {}", analyse.join(", ")))?;
            }
            Ok(())
        })
    }

    /// Makes a lookup ready for its first use: indexed when every insert of its table has its
    /// columns, this file's rows inserted before now read back into the index.
    fn activate(&mut self, f: usize) -> Result<()> {
        let table = self.finds[f].table;
        let plans: Vec<usize> = (0..self.inserts.len())
            .filter(|i| self.inserts[*i].table == table)
            .collect();
        if !plans.iter().all(|i| self.cover(f, *i).is_some()) {
            self.finds[f].indexing = Indexing::Unindexed;
            return Ok(());
        }
        self.finds[f].indexing = Indexing::Indexed;
        if self.inserted[table_index(table)] == 0 {
            return Ok(());
        }
        self.flush()?;
        let key = self.finds[f].key.join(", ");
        let sql = format!(
            "SELECT id, {}, {key} FROM {} WHERE import_id = $1",
            table.parent_column(),
            table.name()
        );
        let import_id = self.import_id;
        let rows = self
            .conn
            .call(move |tx| Ok(tx.query(sql.as_str(), &[&import_id])?))?;
        for r in rows {
            let (id, parent): (i64, i64) = (r.get(0), r.get(1));
            if self.known_empty(table, parent)? {
                let k: Vec<Cell> = (2..r.len()).map(|i| cell_of(&r, i)).collect();
                let h = self.hash(f, parent, &k);
                self.kept_index.add(h, id);
            }
        }
        Ok(())
    }

    /// A buffered row's cells at these positions.
    fn pick(&self, at: (usize, usize), pos: &[usize]) -> Vec<Cell> {
        let row = &self.inserts[at.0].rows[at.1];
        pos.iter().map(|p| row.cells[*p].clone()).collect()
    }

    /// The first buffered row of a lookup's key under a parent.
    fn find_pending(&mut self, f: usize, h: u64, parent: i64, key: &[Cell]) -> Option<Found> {
        let table = self.finds[f].table;
        for id in self.pending_index.get(h) {
            let Some(&at) = self.pending.get(&(table, id)) else {
                continue;
            };
            let (kpos, wpos) = self
                .cover(f, at.0)
                .expect("indexed lookups cover every insert");
            if self.inserts[at.0].rows[at.1].parent == parent && self.pick(at, &kpos) == key {
                return Some(Found {
                    id,
                    cells: self.pick(at, &wpos),
                });
            }
        }
        None
    }

    /// A lookup answered by the server.
    fn find_in_base(&mut self, f: usize, parent: i64, key: &[Cell]) -> Result<Option<Found>> {
        self.read_from_base[table_index(self.finds[f].table)] = true;
        if let [Cell::Text(k)] = key {
            if let Some(found) = self.batch.remove(&(f, parent, k.clone())) {
                if let Some(fd) = &found {
                    if let Some(rows) = self.batch_dossiers.remove(&fd.id) {
                        let d = self.dossier_handle().map(|(i, _, _)| i);
                        if let Some(i) = d {
                            self.prefetched = Some((i, fd.id, rows));
                        }
                    }
                }
                return Ok(found);
            }
        }
        let mask = key
            .iter()
            .enumerate()
            .filter(|(_, c)| matches!(c, Cell::Null))
            .fold(0u64, |m, (i, _)| m | 1 << i);
        let st = match self.finds[f].by_mask.get(&mask) {
            Some(st) => st.clone(),
            None => {
                let p = &self.finds[f];
                let mut sql = p.head.clone();
                let mut n = 1;
                for (i, k) in p.key.iter().enumerate() {
                    if mask & 1 << i != 0 {
                        sql.push_str(&format!(" AND {k} IS NULL"));
                    } else {
                        n += 1;
                        sql.push_str(&format!(" AND {k} = ${n}"));
                    }
                }
                sql.push_str(" ORDER BY id LIMIT 1");
                let st = self.conn.call(move |tx| Ok(tx.prepare(&sql)?))?;
                self.finds[f].by_mask.insert(mask, st.clone());
                st
            }
        };
        let key: Vec<Cell> = key
            .iter()
            .filter(|c| !matches!(c, Cell::Null))
            .cloned()
            .collect();
        // An agent found is followed by the read of its dossier: both in one call.
        let dossier = if self.finds[f].table == Table::Agent {
            self.dossier_handle().map(|(i, st, _)| (i, st))
        } else {
            None
        };
        let (row, prefetched) = self.conn.call(move |tx| {
            let mut params: Vec<&(dyn ToSql + Sync)> = vec![&parent];
            params.extend(key.iter().map(|c| c as &(dyn ToSql + Sync)));
            let row = tx.query_opt(&st, &params)?;
            let prefetched = match (&row, dossier) {
                (Some(r), Some((i, d))) => {
                    let id: i64 = r.get(0);
                    Some((i, id, tx.query(&d, &[&id])?))
                }
                _ => None,
            };
            Ok((row, prefetched))
        })?;
        if prefetched.is_some() {
            self.prefetched = prefetched;
        }
        Ok(row.map(|r| Found {
            id: r.get(0),
            cells: (1..r.len()).map(|i| cell_of(&r, i)).collect(),
        }))
    }

    /// The prepared dossier (there is one per file): its handle, its statement for one agent
    /// and for several.
    fn dossier_handle(&self) -> Option<(usize, Statement, Statement)> {
        self.prepared.iter().enumerate().find_map(|(i, p)| match p {
            Prepared::Dossier(one, many, _) => Some((i, one.clone(), many.clone())),
            _ => None,
        })
    }

    /// A row of this file, flushed, read back by id: its cells if it is under `parent` with
    /// this key.
    fn find_by_id(
        &mut self,
        f: usize,
        id: i64,
        parent: i64,
        key: &[Cell],
    ) -> Result<Option<Found>> {
        let st = match &self.finds[f].by_id {
            Some(st) => st.clone(),
            None => {
                let p = &self.finds[f];
                let mut cols = vec![p.table.parent_column()];
                cols.extend(&p.key);
                cols.extend(&p.want);
                let sql = format!(
                    "SELECT {} FROM {} WHERE id = $1",
                    cols.join(", "),
                    p.table.name()
                );
                let st = self.conn.call(move |tx| Ok(tx.prepare(&sql)?))?;
                self.finds[f].by_id = Some(st.clone());
                st
            }
        };
        let Some(r) = self.conn.call(move |tx| Ok(tx.query_opt(&st, &[&id])?))? else {
            return Ok(None);
        };
        let nk = self.finds[f].key.len();
        let cells: Vec<Cell> = (1..r.len()).map(|i| cell_of(&r, i)).collect();
        if r.get::<_, i64>(0) != parent || cells[..nk] != *key {
            return Ok(None);
        }
        Ok(Some(Found {
            id,
            cells: cells[nk..].to_vec(),
        }))
    }
}

/// The base of the advisory lock a file transaction holds on each collectivité it stores
/// data of ("atmpcoll" in the high bytes, the collectivité's id below).
const COLLECTIVITE_LOCK: i64 = 0x6174_6d70_0000_0000;

impl FileTx for PgFileTx<'_> {
    fn import_id(&self) -> i64 {
        self.import_id
    }

    fn collectivite(&mut self, siret: &atmp_model::Siret) -> Result<Option<Collectivite>> {
        let siret = siret.as_str().to_string();
        let c = self
            .conn
            .call(move |tx| Ok(tx.query_opt(
                "SELECT c.id, c.siret, c.nom, p.siret FROM collectivite c LEFT JOIN collectivite p ON p.id = c.cdg_id WHERE c.siret = $1",
                &[&siret],
            )?))?
            .map(|r| super::collectivite_row(&r))
            .transpose()?;
        if let Some(c) = &c {
            // Two files storing data of one collectivité at once (a replay or a dry run beside
            // a job; the job queue already orders jobs that share one) take turns: the second
            // waits for the first's commit, then matches its rows instead of adding them again.
            let key = COLLECTIVITE_LOCK + c.id;
            self.conn.call(move |tx| {
                tx.execute("SELECT pg_advisory_xact_lock($1)", &[&key])?;
                Ok(())
            })?;
        }
        Ok(c)
    }

    fn autorisation(
        &mut self,
        emetteur: &str,
        collectivite_id: i64,
    ) -> Result<Option<Autorisation>> {
        let emetteur = emetteur.to_string();
        Ok(self
            .conn
            .call(move |tx| Ok(tx.query_opt(
                "SELECT a.statut FROM autorisation a JOIN emetteur e ON e.id = a.emetteur_id WHERE e.code = $1 AND a.collectivite_id = $2",
                &[&emetteur, &collectivite_id],
            )?))?
            .and_then(|r| Autorisation::parse(&r.get::<_, String>(0))))
    }

    fn prepare_find(
        &mut self,
        table: Table,
        key: &[&'static str],
        want: &[&'static str],
    ) -> Result<FindId> {
        self.check_cols(table, key)?;
        self.check_cols(table, want)?;
        let mut head = String::from("SELECT id");
        for w in want {
            head.push_str(", ");
            head.push_str(w);
        }
        head.push_str(&format!(
            " FROM {} WHERE {} = $1",
            table.name(),
            table.parent_column()
        ));
        self.finds.push(FindPlan {
            table,
            key: key.to_vec(),
            want: want.to_vec(),
            head,
            by_mask: HashMap::new(),
            by_id: None,
            indexing: Indexing::Inactive,
            cover: HashMap::new(),
        });
        self.prepared.push(Prepared::Find(self.finds.len() - 1));
        Ok(FindId(self.prepared.len() - 1))
    }

    fn prepare_insert(&mut self, table: Table, cols: &[&'static str]) -> Result<InsertId> {
        self.check_cols(table, cols)?;
        let mut names = vec!["id", table.parent_column(), "import_id"];
        names.extend_from_slice(cols);
        let types = names.iter().map(|c| self.ty(table, c).clone()).collect();
        let copy_sql = format!(
            "COPY {} ({}) FROM STDIN (FORMAT binary)",
            table.name(),
            names.join(", ")
        );
        self.inserts.push(InsertPlan {
            table,
            cols: cols.to_vec(),
            types,
            copy_sql,
            rows: Vec::new(),
        });
        let i = self.inserts.len() - 1;
        // A lookup already indexed that this insert cannot feed goes to the server from now.
        for f in 0..self.finds.len() {
            if self.finds[f].table == table
                && self.finds[f].indexing == Indexing::Indexed
                && self.cover(f, i).is_none()
            {
                self.finds[f].indexing = Indexing::Unindexed;
            }
        }
        self.prepared.push(Prepared::Insert(i));
        Ok(InsertId(self.prepared.len() - 1))
    }

    fn find(&mut self, id: FindId, parent: i64, key: &[Cell]) -> Result<Option<Found>> {
        let Prepared::Find(f) = self.prepared[id.0] else {
            return Err(StoreError::Invalid("pas une recherche préparée".into()));
        };
        if self.finds[f].indexing == Indexing::Inactive {
            self.activate(f)?;
        }
        if self.finds[f].indexing == Indexing::Unindexed {
            self.flush()?;
            return self.find_in_base(f, parent, key);
        }
        let table = self.finds[f].table;
        let key = self.stored_key(f, key);
        let h = self.hash(f, parent, &key);
        if self.known_empty(table, parent)? {
            // Every row under this parent is this file's: the kept index has them all.
            for cand in self.kept_index.get(h) {
                if let Some(&at) = self.pending.get(&(table, cand)) {
                    let (kpos, wpos) = self.cover(f, at.0).expect("indexed");
                    if self.inserts[at.0].rows[at.1].parent == parent && self.pick(at, &kpos) == key
                    {
                        return Ok(Some(Found {
                            id: cand,
                            cells: self.pick(at, &wpos),
                        }));
                    }
                } else if let Some(found) = self.find_by_id(f, cand, parent, &key)? {
                    return Ok(Some(found));
                }
            }
            return Ok(None);
        }
        // The base (rows of other imports, and this file's flushed rows), then the buffer:
        // the lowest id wins, as in `ORDER BY id`.
        let in_base = self.find_in_base(f, parent, &key)?;
        let buffered = self.find_pending(f, h, parent, &key);
        Ok(match (in_base, buffered) {
            (Some(a), Some(b)) => Some(if a.id <= b.id { a } else { b }),
            (a, b) => a.or(b),
        })
    }

    fn prefetch(&mut self, id: FindId, parent: i64, keys: &[Cell]) -> Result<()> {
        let Prepared::Find(f) = self.prepared[id.0] else {
            return Err(StoreError::Invalid("pas une recherche préparée".into()));
        };
        if keys.len() < 2 || self.finds[f].key.len() != 1 {
            return Ok(());
        }
        if self.finds[f].indexing == Indexing::Inactive {
            self.activate(f)?;
        }
        // Only lookups that go to the server without a flush first: an unindexed lookup
        // flushes (which drops the answers), one under a known-empty parent stays local.
        let table = self.finds[f].table;
        if self.finds[f].indexing != Indexing::Indexed || self.known_empty(table, parent)? {
            return Ok(());
        }
        // The answers of the previous hint not asked for are dropped: the records they were
        // for have all been through the rules, so memory stays one batch.
        self.batch.clear();
        self.batch_dossiers.clear();
        let ty = self.ty(table, self.finds[f].key[0]).clone();
        let mut wanted: Vec<String> = Vec::with_capacity(keys.len());
        for k in keys {
            if let Cell::Text(t) = stored(k, &ty) {
                if !wanted.contains(&t) {
                    wanted.push(t);
                }
            }
        }
        if wanted.len() < 2 {
            return Ok(());
        }
        let p = &self.finds[f];
        let sql = format!("{} AND {k} = ANY ($2) ORDER BY id", p.head, k = p.key[0]);
        let nw = p.want.len();
        let dossier = if table == Table::Agent {
            self.dossier_handle().map(|(_, _, many)| many)
        } else {
            None
        };
        let col = p.key[0];
        let sql = sql.replacen("SELECT id", &format!("SELECT id, {col}"), 1);
        let asked = wanted.clone();
        let (rows, dossiers) = self.conn.call(move |tx| {
            let rows = tx.query(sql.as_str(), &[&parent, &asked])?;
            let ids: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
            let dossiers = match dossier {
                Some(st) if !ids.is_empty() => tx.query(&st, &[&ids])?,
                _ => Vec::new(),
            };
            Ok((rows, dossiers))
        })?;
        for k in wanted {
            self.batch.insert((f, parent, k), None);
        }
        let mut found_ids = std::collections::HashSet::new();
        for r in rows {
            let k: String = r.get(1);
            let slot = self.batch.entry((f, parent, k)).or_insert(None);
            // Ascending ids: the first row of a key is the one `ORDER BY id LIMIT 1` gives.
            if slot.is_none() {
                let id: i64 = r.get(0);
                found_ids.insert(id);
                *slot = Some(Found {
                    id,
                    cells: (2..2 + nw).map(|i| cell_of(&r, i)).collect(),
                });
            }
        }
        if table == Table::Agent {
            for id in &found_ids {
                self.batch_dossiers.insert(*id, Vec::new());
            }
            for r in dossiers {
                let agent: i64 = r.get(r.len() - 1);
                if let Some(v) = self.batch_dossiers.get_mut(&agent) {
                    v.push(r);
                }
            }
        }
        Ok(())
    }

    fn prepare_dossier(&mut self, parts: &[(Table, &'static [&'static str])]) -> Result<FindId> {
        // Every column read as text in the UNION (its branches have different types), then
        // typed again from the table's own column types.
        let width = parts.iter().map(|(_, w)| w.len()).max().unwrap_or(0);
        let mut selects = Vec::new();
        let mut many = Vec::new();
        for (i, (table, want)) in parts.iter().enumerate() {
            self.check_cols(*table, want)?;
            let mut cols: Vec<String> = want.iter().map(|c| format!("CAST({c} AS TEXT)")).collect();
            cols.resize(width, "CAST(NULL AS TEXT)".to_string());
            // The same rows for several agents, each followed by its agent's id.
            let mut t_cols: Vec<String> = want
                .iter()
                .map(|c| format!("CAST(t.{c} AS TEXT)"))
                .collect();
            t_cols.resize(width, "CAST(NULL AS TEXT)".to_string());
            let t_cols: String = t_cols.iter().map(|c| format!(", {c}")).collect();
            many.push(match table {
                Table::Evenement => format!(
                    "SELECT CAST({i} AS BIGINT), t.agent_id, t.id{t_cols}, t.agent_id \
                     FROM evenement t WHERE t.agent_id = ANY ($1)"
                ),
                _ => format!(
                    "SELECT CAST({i} AS BIGINT), t.evenement_id, t.id{t_cols}, e.agent_id \
                     FROM {} t JOIN evenement e ON e.id = t.evenement_id \
                     WHERE t.evenement_id = ANY (ARRAY(SELECT id FROM evenement WHERE agent_id = ANY ($1)))",
                    table.name()
                ),
            });
            let filter = match table {
                Table::Evenement => "agent_id = $1",
                Table::Service | Table::Agent => {
                    return Err(StoreError::Invalid(
                        "pas de dossier pour cette table".into(),
                    ))
                }
                // An array, not `IN (SELECT …)`: with the statistics of a base just loaded (or
                // none yet), the planner may hash-join a whole table for `IN`; `= ANY` of a
                // small array always goes through the parent index.
                _ => "evenement_id = ANY (ARRAY(SELECT id FROM evenement WHERE agent_id = $1))",
            };
            let cols = if cols.is_empty() {
                String::new()
            } else {
                format!(", {}", cols.join(", "))
            };
            selects.push(format!(
                "SELECT CAST({i} AS BIGINT), {}, id{cols} FROM {} WHERE {filter}",
                table.parent_column(),
                table.name()
            ));
        }
        let sql = format!("{} ORDER BY 1, 3", selects.join(" UNION ALL "));
        let many = format!("{} ORDER BY 1, 3", many.join(" UNION ALL "));
        let (one, many) = self
            .conn
            .call(move |tx| Ok((tx.prepare(&sql)?, tx.prepare(&many)?)))?;
        self.prepared
            .push(Prepared::Dossier(one, many, parts.to_vec()));
        Ok(FindId(self.prepared.len() - 1))
    }

    fn dossier(&mut self, id: FindId, agent_id: i64) -> Result<Vec<(usize, i64, Found)>> {
        let Prepared::Dossier(st, _, parts) = &self.prepared[id.0] else {
            return Err(StoreError::Invalid("pas un dossier préparé".into()));
        };
        let (st, parts) = (st.clone(), parts.clone());
        // The wanted columns' positions in every insert of each part's table; a part some
        // insert cannot give is read from the server only, after a flush.
        let mut wpos: Vec<HashMap<usize, Vec<usize>>> = Vec::new();
        let mut covered = true;
        for (table, want) in &parts {
            let mut m = HashMap::new();
            for (i, plan) in self.inserts.iter().enumerate() {
                if plan.table != *table {
                    continue;
                }
                let pos: Option<Vec<usize>> = want
                    .iter()
                    .map(|c| plan.cols.iter().position(|x| x == c))
                    .collect();
                match pos {
                    Some(p) => {
                        m.insert(i, p);
                    }
                    None => covered = false,
                }
            }
            wpos.push(m);
        }
        if !covered {
            self.flush()?;
        }
        let mut out = Vec::new();
        // An agent still in the buffer has nothing in the base.
        if !self.pending.contains_key(&(Table::Agent, agent_id)) {
            let rows: Vec<PgRow> = match self.prefetched.take() {
                Some((i, a, rows)) if i == id.0 && a == agent_id => rows,
                _ => self.conn.call(move |tx| Ok(tx.query(&st, &[&agent_id])?))?,
            };
            for r in rows {
                let part = r.get::<_, i64>(0) as usize;
                let (table, want) = parts[part];
                let types = &self.columns[table.name()];
                let mut cells = Vec::with_capacity(want.len());
                for (k, col) in want.iter().enumerate() {
                    let v: Option<String> = r.get(3 + k);
                    let ty = &types[*col];
                    cells.push(match v {
                        None => Cell::Null,
                        Some(t) if *ty == Type::INT8 => {
                            t.parse().map(Cell::Int).unwrap_or(Cell::Text(t))
                        }
                        Some(t) if *ty == Type::FLOAT8 => {
                            t.parse().map(Cell::Real).unwrap_or(Cell::Text(t))
                        }
                        Some(t) => Cell::Text(t),
                    });
                }
                out.push((
                    part,
                    r.get(1),
                    Found {
                        id: r.get(2),
                        cells,
                    },
                ));
            }
        }
        if self.pending_rows > 0 {
            // The buffered rows under the agent: its events, then the events' children (under
            // events of the base or of the buffer).
            let mut events: Vec<i64> = Vec::new();
            for (part, (table, _)) in parts.iter().enumerate() {
                if *table == Table::Evenement {
                    events.extend(out.iter().filter(|o| o.0 == part).map(|o| o.2.id));
                }
            }
            for (part, (table, _)) in parts.iter().enumerate() {
                if *table != Table::Evenement {
                    continue;
                }
                for at in self
                    .by_parent
                    .get(&(Table::Evenement, agent_id))
                    .into_iter()
                    .flatten()
                {
                    let row = &self.inserts[at.0].rows[at.1];
                    events.push(row.id);
                    let cells = self.pick(*at, &wpos[part][&at.0]);
                    out.push((part, agent_id, Found { id: row.id, cells }));
                }
            }
            events.sort_unstable();
            events.dedup();
            for (part, (table, _)) in parts.iter().enumerate() {
                if *table == Table::Evenement {
                    continue;
                }
                for ev in &events {
                    for at in self.by_parent.get(&(*table, *ev)).into_iter().flatten() {
                        let row = &self.inserts[at.0].rows[at.1];
                        let cells = self.pick(*at, &wpos[part][&at.0]);
                        out.push((part, *ev, Found { id: row.id, cells }));
                    }
                }
            }
            out.sort_by_key(|o| (o.0, o.2.id));
        }
        Ok(out)
    }

    fn insert(&mut self, id: InsertId, parent: i64, cells: &[Cell]) -> Result<i64> {
        let Prepared::Insert(i) = self.prepared[id.0] else {
            return Err(StoreError::Invalid("pas une insertion préparée".into()));
        };
        let table = self.inserts[i].table;
        if cells.len() != self.inserts[i].cols.len() {
            return Err(StoreError::Invalid(format!(
                "{} valeurs pour {} colonnes de {}",
                cells.len(),
                self.inserts[i].cols.len(),
                table.name()
            )));
        }
        let new_id = self.next_id(table)?;
        let cells: Vec<Cell> = cells
            .iter()
            .zip(&self.inserts[i].types[3..])
            .map(|(c, ty)| stored(c, ty))
            .collect();
        // The indexed lookups of this table learn the row.
        for f in 0..self.finds.len() {
            if self.finds[f].table != table || self.finds[f].indexing != Indexing::Indexed {
                continue;
            }
            let (kpos, _) = self
                .cover(f, i)
                .expect("indexed lookups cover every insert");
            let key: Vec<Cell> = kpos.iter().map(|p| cells[*p].clone()).collect();
            let h = self.hash(f, parent, &key);
            self.pending_index.add(h, new_id);
            if self.known_empty(table, parent)? {
                self.kept_index.add(h, new_id);
            }
        }
        let at = (i, self.inserts[i].rows.len());
        self.inserts[i].rows.push(Row {
            id: new_id,
            parent,
            cells,
        });
        self.pending.insert((table, new_id), at);
        self.by_parent.entry((table, parent)).or_default().push(at);
        self.inserted[table_index(table)] += 1;
        self.pending_rows += 1;
        if self.pending_rows >= self.flush_rows {
            self.flush()?;
        }
        Ok(new_id)
    }

    fn service_code(&mut self, service_id: i64) -> Result<Option<String>> {
        if let Some(&at) = self.pending.get(&(Table::Service, service_id)) {
            if let Some(p) = self.inserts[at.0].cols.iter().position(|c| *c == "code") {
                return Ok(self.inserts[at.0].rows[at.1].cells[p]
                    .as_text()
                    .map(str::to_string));
            }
            self.flush()?;
        }
        if let Some(c) = self.service_codes.get(&service_id) {
            return Ok(c.clone());
        }
        let code: Option<String> = self
            .conn
            .call(move |tx| {
                Ok(tx.query_opt("SELECT code FROM service WHERE id = $1", &[&service_id])?)
            })?
            .map(|r| r.get(0));
        self.service_codes.insert(service_id, code.clone());
        Ok(code)
    }

    fn store_file(&mut self, local: &std::path::Path) -> Result<Option<String>> {
        let mut f = std::fs::File::open(local)?;
        // On the transaction's own connection, after the rows queued before it.
        self.conn
            .call(move |tx| super::files::write_large_object(tx, &mut f))
            .map(Some)
    }

    fn add_rejets(&mut self, import_id: i64, rows: &[crate::NewRejet]) -> Result<()> {
        let rows = rows.to_vec();
        self.conn
            .spawn(move |tx| super::rejets::add_rejets(tx, import_id, &rows))
    }

    fn open_rejets(&mut self, siret: &str) -> Result<Vec<(i64, String, Vec<String>)>> {
        let siret = siret.to_string();
        self.conn
            .call(move |tx| super::rejets::open_rejets(tx, &siret))
    }

    fn close_rejets(&mut self, ids: &[i64]) -> Result<()> {
        let (ids, import_id) = (ids.to_vec(), self.import_id);
        self.conn
            .spawn(move |tx| super::rejets::close_rejets(tx, import_id, &ids))
    }

    fn update_rejets(&mut self, rows: &[crate::RejetMaj]) -> Result<()> {
        let rows = rows.to_vec();
        self.conn
            .spawn(move |tx| super::rejets::update_rejets(tx, &rows))
    }

    fn commit(mut self: Box<Self>, row: &ImportRow, logs: &[ImportLog]) -> Result<()> {
        self.flush()?;
        let import_id = self.import_id;
        let (row, logs) = (row.clone(), logs.to_vec());
        self.conn.call(move |tx| {
            tx.execute(
                "UPDATE import SET finished_at = $2, result = $3, label = $4, errors = $5, warnings = $6, counts = $7, \
                 emetteur = $8, type_fichier = $9, mode = $10, date_creation = $11, cdg_siret = $12, sha256 = $13 WHERE id = $1",
                &[
                    &import_id,
                    &row.finished_at,
                    &row.result.code(),
                    &row.label,
                    &(row.errors as i64),
                    &(row.warnings as i64),
                    &counts_text(&row.counts),
                    &row.emetteur,
                    &row.type_fichier,
                    &row.mode,
                    &row.date_creation,
                    &row.cdg_siret,
                    &row.sha256,
                ],
            )?;
            insert_logs(tx, import_id, &row, &logs)
        })?;
        let inserted: u64 = self.inserted.iter().sum();
        let PgFileTx { conn, main, .. } = *self;
        conn.commit()?;
        // A big file changes the tables' statistics; the next file's lookups are planned on
        // them (autovacuum's ANALYZE may come minutes later).
        if inserted >= ANALYZE_AFTER {
            let tables: Vec<&str> = Table::ALL.iter().map(|t| t.name()).collect();
            main.batch_execute(&format!("ANALYZE {}", tables.join(", ")))?;
        }
        Ok(())
    }
}
