//! The sender's source base (`source-schema.sql`), read and never written.
//!
//! The source is the sender's own base, not the platform's: this module knows only the tables
//! of SOURCE.md. Everything is read inside one read transaction, so that the files of a run
//! are one consistent snapshot even while the sender's system keeps writing. The agents of a
//! collectivité are streamed: a small number of ordered queries (agents, événements, each
//! child table) are merged on `(agent_id, evenement_id)`, so memory holds one agent at a time
//! whatever the size of the base.

use std::cell::RefCell;

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};

use atmp_flux::spec::{self, RecordKind};

use crate::SenderError;

/// One row of a source table: its id and its non-empty cells, by storage column.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Row {
    pub id: i64,
    pub cells: Vec<(&'static str, String)>,
}

impl Row {
    /// The cell of this column, if not null.
    pub fn get(&self, col: &str) -> Option<&str> {
        self.cells
            .iter()
            .find(|(c, _)| *c == col)
            .map(|(_, v)| v.as_str())
    }

    fn remove(&mut self, col: &str) -> Option<String> {
        let i = self.cells.iter().position(|(c, _)| *c == col)?;
        Some(self.cells.remove(i).1)
    }
}

/// A collectivité of the source.
#[derive(Clone, Debug, PartialEq)]
pub struct SourceCollectivite {
    pub siret: String,
    pub nom: String,
    pub cdg_siret: Option<String>,
    pub limite_anteriorite: Option<String>,
}

/// A row of the consent register.
#[derive(Clone, Debug, PartialEq)]
pub struct Autorisation {
    pub id: i64,
    pub collectivite_siret: String,
    pub statut: String,
    pub date: String,
}

/// An événement with all its current children.
#[derive(Clone, Debug, Default)]
pub struct SourceEvenement {
    pub row: Row,
    pub elements_materiels: Vec<String>,
    pub deces: Option<Row>,
    pub arrets: Vec<Row>,
    pub certificats: Vec<Row>,
    pub lesions: Vec<Row>,
    pub consequences: Vec<Row>,
}

/// An agent with the événements selected for export.
#[derive(Clone, Debug, Default)]
pub struct SourceAgent {
    pub row: Row,
    /// The agent's `service_code`, if any (kept apart: it becomes `<service code="…">`).
    pub service_code: Option<String>,
    pub evenements: Vec<SourceEvenement>,
}

/// Which événements of a collectivité are exported.
#[derive(Clone, Debug, PartialEq)]
pub enum Selection {
    /// Every événement whose `date` is on or after the limit (none: all).
    Complet { limite: Option<String> },
    /// Événements entered in `[debut, fin)` (on `saisi_le`), and older ones that received a
    /// child (arrêt, certificat, lésion, conséquence, décès) in that window.
    Differentiel { debut: String, fin: String },
}

/// The child tables of an événement, with their record kind and ordering column.
const CHILDREN: [(&str, RecordKind); 5] = [
    ("deces", RecordKind::Deces),
    ("arret", RecordKind::Arret),
    ("certificat", RecordKind::Certificat),
    ("lesion", RecordKind::Lesion),
    ("consequence_medicale", RecordKind::Consequence),
];

/// The source column of a storage column of the format's table (they are the same names
/// but for one).
fn source_column(col: &'static str) -> &'static str {
    match col {
        "no_tableau" => "no_tableau_maladie_pro",
        c => c,
    }
}

/// The columns read from a table for a record kind: the format's storage columns.
fn columns(kind: RecordKind) -> Vec<&'static str> {
    spec::columns_of(kind)
        .iter()
        .copied()
        .filter(|c| *c != "elements_materiels")
        .collect()
}

/// A value of the source as text: integers and reals without a useless `.0`, text as is.
fn cell_text(v: ValueRef<'_>) -> Option<String> {
    match v {
        ValueRef::Null => None,
        ValueRef::Integer(i) => Some(i.to_string()),
        ValueRef::Real(r) => Some(real_text(r)),
        ValueRef::Text(t) => Some(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => Some(String::from_utf8_lossy(b).into_owned()),
    }
}

fn real_text(r: f64) -> String {
    if r.fract() == 0.0 && r.abs() < 1e15 {
        format!("{}", r as i64)
    } else {
        format!("{r}")
    }
}

/// A cell read as text from PostgreSQL (every column is cast to text in the query): reals
/// without a useless `.0`, times without seconds, timestamps with a `T`.
fn pg_text(v: Option<String>) -> Option<String> {
    let v = v?;
    if let Ok(r) = v.parse::<f64>() {
        if v.contains('.') && !v.contains(':') && !v.contains('-') {
            return Some(real_text(r));
        }
    }
    let b = v.as_bytes();
    // HH:MM:SS → HH:MM (a TIME column)
    if b.len() == 8 && b[2] == b':' && b[5] == b':' && v.ends_with(":00") {
        return Some(v[..5].to_string());
    }
    Some(v)
}

/// One row of an ordered query: its key columns, then its cells.
type Raw = (Vec<i64>, Vec<Option<String>>);
type Next<'a> = Box<dyn FnMut() -> Result<Option<Raw>, SenderError> + 'a>;

enum Db {
    Sqlite(Connection),
    Postgres(RefCell<postgres::Client>),
}

/// The source base, opened read-only.
pub struct Source {
    db: Db,
    /// For error messages: where the source is (never a password).
    pub location: String,
}

impl Source {
    /// Opens `sqlite://PATH` (read-only; the source is never written) or `postgres://…`
    /// (every run in a read-only, repeatable-read transaction).
    pub fn open(url: &str) -> Result<Source, SenderError> {
        let s = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let location = redact(url);
            if [
                "sslmode=require",
                "sslmode=verify-ca",
                "sslmode=verify-full",
            ]
            .iter()
            .any(|m| url.contains(m))
            {
                return Err(SenderError::Usage(format!(
                    "{location} : TLS vers une base source PostgreSQL n'est pas encore pris en charge (connexion locale ou réseau de confiance, sslmode=disable ou prefer)"
                )));
            }
            let client = postgres::Client::connect(url, postgres::NoTls).map_err(|e| {
                SenderError::Source(format!("la base source {location} ne répond pas : {e}"))
            })?;
            Source {
                db: Db::Postgres(RefCell::new(client)),
                location,
            }
        } else {
            let path = url.strip_prefix("sqlite://").ok_or_else(|| {
                SenderError::Usage(format!(
                    "adresse de source invalide « {url} » : attendu sqlite://CHEMIN ou postgres://…"
                ))
            })?;
            if !std::path::Path::new(path).is_file() {
                return Err(SenderError::Source(format!(
                    "la base source {path} n'existe pas"
                )));
            }
            let conn = Connection::open_with_flags(
                path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .map_err(|e| {
                SenderError::Source(format!("la base source {path} ne s'ouvre pas : {e}"))
            })?;
            conn.busy_timeout(std::time::Duration::from_secs(30))
                .map_err(|e| SenderError::Source(e.to_string()))?;
            Source {
                db: Db::Sqlite(conn),
                location: path.to_string(),
            }
        };
        s.check_schema()?;
        Ok(s)
    }

    fn pg(&self) -> bool {
        matches!(self.db, Db::Postgres(_))
    }

    /// An expression read as text.
    fn t(&self, expr: &str) -> String {
        if self.pg() {
            format!("CAST({expr} AS TEXT)")
        } else {
            expr.to_string()
        }
    }

    /// An id read as a 64-bit integer.
    fn n(&self, expr: &str) -> String {
        if self.pg() {
            format!("CAST({expr} AS BIGINT)")
        } else {
            expr.to_string()
        }
    }

    /// The SQL of this backend: `?N` placeholders become `$N` on PostgreSQL.
    fn sql(&self, q: &str) -> String {
        if self.pg() {
            q.replace("?1", "$1")
                .replace("?2", "$2")
                .replace("?3", "$3")
        } else {
            q.to_string()
        }
    }

    fn select_list(&self, alias: &str, cols: &[&'static str]) -> String {
        cols.iter()
            .map(|c| self.t(&format!("{alias}.{}", source_column(c))))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Runs a small query (every column read as text).
    fn rows(
        &self,
        q: &str,
        params: &[Option<String>],
    ) -> Result<Vec<Vec<Option<String>>>, SenderError> {
        let q = self.sql(q);
        match &self.db {
            Db::Sqlite(c) => {
                let mut st = c.prepare_cached(&q).map_err(src)?;
                let n = st.column_count();
                let rows = st
                    .query_map(rusqlite::params_from_iter(params.iter()), |r| {
                        (0..n).map(|i| Ok(cell_text(r.get_ref(i)?))).collect()
                    })
                    .map_err(src)?;
                rows.collect::<Result<_, _>>().map_err(src)
            }
            Db::Postgres(c) => {
                let p: Vec<&(dyn postgres::types::ToSql + Sync)> = params
                    .iter()
                    .map(|v| v as &(dyn postgres::types::ToSql + Sync))
                    .collect();
                let rows = c.borrow_mut().query(q.as_str(), &p).map_err(pgerr)?;
                Ok(rows
                    .iter()
                    .map(|r| {
                        (0..r.len())
                            .map(|i| pg_text(r.get::<_, Option<String>>(i)))
                            .collect()
                    })
                    .collect())
            }
        }
    }

    /// The column names of a table, or None when it does not exist.
    fn table_columns(&self, table: &str) -> Option<Vec<String>> {
        let q = format!("SELECT * FROM {table} LIMIT 0");
        match &self.db {
            Db::Sqlite(c) => c
                .prepare(&q)
                .ok()
                .map(|st| st.column_names().map(|s| s.to_string()).collect()),
            Db::Postgres(c) => {
                let mut c = c.borrow_mut();
                let r = c
                    .prepare(&q)
                    .ok()
                    .map(|st| st.columns().iter().map(|c| c.name().to_string()).collect());
                if r.is_none() {
                    // A failed statement inside a transaction would abort it; there is none
                    // yet, but be explicit.
                    let _ = c.batch_execute("ROLLBACK");
                }
                r
            }
        }
    }

    /// Every table and column of `source-schema.sql` that is read must exist: a missing one
    /// is a bad schema, said at once rather than half-way through an export.
    fn check_schema(&self) -> Result<(), SenderError> {
        let mut missing = Vec::new();
        let mut need: Vec<(&str, Vec<&str>)> = vec![
            (
                "collectivite",
                vec!["siret", "nom", "cdg_siret", "limite_anteriorite"],
            ),
            (
                "autorisation",
                vec!["id", "collectivite_siret", "statut", "date"],
            ),
            (
                "service",
                vec!["collectivite_siret", "code", "libelle", "saisi_le"],
            ),
            ("element_materiel", vec!["evenement_id", "code"]),
        ];
        let mut agent = vec!["id", "collectivite_siret", "service_code", "saisi_le"];
        agent.extend(columns(RecordKind::Agent).iter().map(|c| source_column(c)));
        need.push(("agent", agent));
        let mut ev = vec!["id", "agent_id", "saisi_le"];
        ev.extend(
            columns(RecordKind::Evenement)
                .iter()
                .map(|c| source_column(c)),
        );
        need.push(("evenement", ev));
        for (table, kind) in CHILDREN {
            let mut cols = vec!["evenement_id", "saisi_le"];
            if table != "deces" {
                cols.push("id");
            }
            cols.extend(columns(kind).iter().map(|c| source_column(c)));
            need.push((table, cols));
        }
        for (table, cols) in need {
            match self.table_columns(table) {
                None => missing.push(format!("table {table}")),
                Some(have) => {
                    for c in cols {
                        if !have.iter().any(|h| h == c) {
                            missing.push(format!("{table}.{c}"));
                        }
                    }
                }
            }
        }
        if missing.is_empty() {
            Ok(())
        } else {
            Err(SenderError::Source(format!(
                "la base source ne suit pas source-schema.sql : manque {}",
                missing.join(", ")
            )))
        }
    }

    /// Starts the read transaction that makes the whole run one snapshot.
    pub fn begin(&self) -> Result<(), SenderError> {
        match &self.db {
            Db::Sqlite(c) => {
                c.execute_batch("BEGIN").map_err(src)?;
                // A deferred transaction takes its snapshot at its first read: read now.
                c.query_row("SELECT count(*) FROM collectivite", [], |_| Ok(()))
                    .map_err(src)
            }
            Db::Postgres(c) => c
                .borrow_mut()
                .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                .map_err(pgerr),
        }
    }

    /// Ends the read transaction.
    pub fn end(&self) {
        match &self.db {
            Db::Sqlite(c) => {
                let _ = c.execute_batch("COMMIT");
            }
            Db::Postgres(c) => {
                let _ = c.borrow_mut().batch_execute("COMMIT");
            }
        }
    }

    pub fn collectivites(&self) -> Result<Vec<SourceCollectivite>, SenderError> {
        let q = format!(
            "SELECT {}, {}, {}, {} FROM collectivite ORDER BY siret",
            self.t("siret"),
            self.t("nom"),
            self.t("cdg_siret"),
            self.t("limite_anteriorite")
        );
        Ok(self
            .rows(&q, &[])?
            .into_iter()
            .map(|mut r| SourceCollectivite {
                siret: r[0].take().unwrap_or_default().trim().to_string(),
                nom: r[1].take().unwrap_or_default(),
                cdg_siret: r[2]
                    .take()
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty()),
                limite_anteriorite: r[3].take().map(|s| day(&s)).filter(|s| !s.is_empty()),
            })
            .collect())
    }

    pub fn autorisations(&self) -> Result<Vec<Autorisation>, SenderError> {
        let q = format!(
            "SELECT {}, {}, {}, {} FROM autorisation",
            self.t("id"),
            self.t("collectivite_siret"),
            self.t("statut"),
            self.t("date")
        );
        self.rows(&q, &[])?
            .into_iter()
            .map(|mut r| {
                Ok(Autorisation {
                    id: r[0]
                        .take()
                        .and_then(|s| s.parse().ok())
                        .ok_or_else(|| SenderError::Source("autorisation sans id".into()))?,
                    collectivite_siret: r[1].take().unwrap_or_default().trim().to_string(),
                    statut: r[2].take().unwrap_or_default(),
                    date: day(&r[3].take().unwrap_or_default()),
                })
            })
            .collect()
    }

    /// The services of a collectivité: `(code, libelle, saisi_le)`, by code.
    pub fn services(&self, siret: &str) -> Result<Vec<(String, String, String)>, SenderError> {
        let q = format!(
            "SELECT {}, {}, {} FROM service WHERE collectivite_siret = ?1 ORDER BY code",
            self.t("code"),
            self.t("libelle"),
            self.t("saisi_le")
        );
        Ok(self
            .rows(&q, &[Some(siret.to_string())])?
            .into_iter()
            .map(|mut r| {
                (
                    r[0].take().unwrap_or_default(),
                    r[1].take().unwrap_or_default(),
                    stamp(&r[2].take().unwrap_or_default()),
                )
            })
            .collect())
    }

    /// Streams the agents of a collectivité that have at least one selected événement, each
    /// with its selected événements and all their children, in id order.
    pub fn agents(
        &self,
        siret: &str,
        sel: &Selection,
        each: &mut dyn FnMut(SourceAgent) -> Result<(), SenderError>,
    ) -> Result<(), SenderError> {
        let (pred, p2, p3): (String, Option<String>, Option<String>) = match sel {
            Selection::Complet { limite } => (
                format!(
                    "a.collectivite_siret = ?1 AND ({} IS NULL OR {} >= ?2) AND {} IS NULL",
                    self.t("?2"),
                    self.t("e.date"),
                    self.t("?3")
                ),
                limite.clone(),
                None,
            ),
            Selection::Differentiel { debut, fin } => {
                let saisi = self.t("e.saisi_le");
                let mut p =
                    format!("a.collectivite_siret = ?1 AND (({saisi} >= ?2 AND {saisi} < ?3)");
                // Uncorrelated subqueries: each is read once into a transient index, so
                // a source without indexes on `evenement_id` is not scanned once per event.
                let cs = self.t("c.saisi_le");
                for (table, _) in CHILDREN {
                    p.push_str(&format!(
                        " OR e.id IN (SELECT c.evenement_id FROM {table} c WHERE {cs} >= ?2 AND {cs} < ?3)"
                    ));
                }
                p.push(')');
                (p, Some(debut.clone()), Some(fin.clone()))
            }
        };
        let params = [Some(siret.to_string()), p2, p3];
        let agent_cols = columns(RecordKind::Agent);
        let ev_cols = columns(RecordKind::Evenement);
        let mut queries: Vec<(String, usize)> = Vec::new();
        queries.push((
            format!(
                "SELECT {}, {}, {} FROM agent x WHERE x.collectivite_siret = ?1 AND x.id IN \
                 (SELECT e.agent_id FROM evenement e JOIN agent a ON a.id = e.agent_id WHERE {pred}) ORDER BY x.id",
                self.n("x.id"),
                self.t("x.service_code"),
                self.select_list("x", &agent_cols)
            ),
            1,
        ));
        queries.push((
            format!(
                "SELECT {}, {}, {} FROM evenement e JOIN agent a ON a.id = e.agent_id WHERE {pred} ORDER BY e.agent_id, e.id",
                self.n("e.agent_id"),
                self.n("e.id"),
                self.select_list("e", &ev_cols)
            ),
            2,
        ));
        queries.push((
            format!(
                "SELECT {}, {}, 0, {} FROM element_materiel x JOIN evenement e ON e.id = x.evenement_id \
                 JOIN agent a ON a.id = e.agent_id WHERE {pred} ORDER BY e.agent_id, e.id, x.code",
                self.n("e.agent_id"),
                self.n("e.id"),
                self.t("x.code")
            ),
            3,
        ));
        let mut child_cols = Vec::new();
        for (table, kind) in CHILDREN {
            let cols = columns(kind);
            let id = if table == "deces" {
                "x.evenement_id"
            } else {
                "x.id"
            };
            queries.push((
                format!(
                    "SELECT {}, {}, {}, {} FROM {table} x JOIN evenement e ON e.id = x.evenement_id \
                     JOIN agent a ON a.id = e.agent_id WHERE {pred} ORDER BY e.agent_id, e.id, {id}",
                    self.n("e.agent_id"),
                    self.n("e.id"),
                    self.n(id),
                    self.select_list("x", &cols)
                ),
                3,
            ));
            child_cols.push(cols);
        }
        match &self.db {
            Db::Sqlite(c) => {
                let mut sts = Vec::new();
                for (q, _) in &queries {
                    sts.push(c.prepare(q).map_err(src)?);
                }
                let mut nexts: Vec<Next<'_>> = Vec::new();
                for (st, (_, keys)) in sts.iter_mut().zip(&queries) {
                    let keys = *keys;
                    let n = st.column_count();
                    let mut rows = st
                        .query(rusqlite::params_from_iter(params.iter()))
                        .map_err(src)?;
                    nexts.push(Box::new(move || {
                        let Some(r) = rows.next().map_err(src)? else {
                            return Ok(None);
                        };
                        let mut k = Vec::with_capacity(keys);
                        for i in 0..keys {
                            k.push(r.get::<_, i64>(i).map_err(src)?);
                        }
                        let mut cells = Vec::with_capacity(n - keys);
                        for i in keys..n {
                            cells.push(cell_text(r.get_ref(i).map_err(src)?));
                        }
                        Ok(Some((k, cells)))
                    }));
                }
                merge(nexts, agent_cols, ev_cols, child_cols, each)
            }
            Db::Postgres(c) => {
                // Server-side cursors of the one read transaction, fetched in batches and
                // interleaved: the merge reads them side by side.
                let mut names = Vec::new();
                for (i, (q, _)) in queries.iter().enumerate() {
                    let name = format!("atmp_c{i}");
                    let p: Vec<&(dyn postgres::types::ToSql + Sync)> = params
                        .iter()
                        .map(|v| v as &(dyn postgres::types::ToSql + Sync))
                        .collect();
                    c.borrow_mut()
                        .execute(
                            format!("DECLARE {name} NO SCROLL CURSOR FOR {}", self.sql(q)).as_str(),
                            &p,
                        )
                        .map_err(pgerr)?;
                    names.push(name);
                }
                let mut nexts: Vec<Next<'_>> = Vec::new();
                for (name, (_, keys)) in names.iter().zip(&queries) {
                    let keys = *keys;
                    let mut buf: std::collections::VecDeque<postgres::Row> = Default::default();
                    let mut done = false;
                    let fetch = format!("FETCH 500 FROM {name}");
                    nexts.push(Box::new(move || {
                        if buf.is_empty() && !done {
                            let rows = c.borrow_mut().query(fetch.as_str(), &[]).map_err(pgerr)?;
                            done = rows.len() < 500;
                            buf.extend(rows);
                        }
                        let Some(r) = buf.pop_front() else {
                            return Ok(None);
                        };
                        let mut k = Vec::with_capacity(keys);
                        for i in 0..keys {
                            k.push(
                                r.try_get::<_, i64>(i)
                                    .or_else(|_| r.try_get::<_, i32>(i).map(i64::from))
                                    .map_err(pgerr)?,
                            );
                        }
                        let cells = (keys..r.len())
                            .map(|i| pg_text(r.get::<_, Option<String>>(i)))
                            .collect();
                        Ok(Some((k, cells)))
                    }));
                }
                let r = merge(nexts, agent_cols, ev_cols, child_cols, each);
                for name in names {
                    let _ = c.borrow_mut().batch_execute(&format!("CLOSE {name}"));
                }
                r
            }
        }
    }
}

/// Merges the ordered streams (agents; événements; element matériels; each child table)
/// into agents, one at a time.
fn merge(
    nexts: Vec<Next<'_>>,
    agent_cols: Vec<&'static str>,
    ev_cols: Vec<&'static str>,
    child_cols: Vec<Vec<&'static str>>,
    each: &mut dyn FnMut(SourceAgent) -> Result<(), SenderError>,
) -> Result<(), SenderError> {
    let mut it = nexts.into_iter();
    let mut agents = it.next().expect("agents");
    let mut evs = Cursor::new(it.next().expect("evenements"), ev_cols, 2);
    let mut ems = Cursor::new(it.next().expect("elements"), vec!["code"], 3);
    let mut children: Vec<Cursor<'_>> = it
        .zip(child_cols)
        .map(|(n, cols)| Cursor::new(n, cols, 3))
        .collect();
    while let Some((keys, mut cells)) = agents()? {
        let id = keys[0];
        let service_code = cells[0]
            .take()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty());
        let mut row = Row {
            id,
            cells: Vec::new(),
        };
        for (c, v) in agent_cols.iter().zip(cells.into_iter().skip(1)) {
            if let Some(v) = v {
                row.cells.push((c, v));
            }
        }
        let mut agent = SourceAgent {
            row,
            service_code,
            evenements: Vec::new(),
        };
        while let Some((ev_id, ev_row)) = evs.take((id, None))? {
            let mut ev = SourceEvenement {
                row: Row {
                    id: ev_id,
                    cells: ev_row.cells,
                },
                ..Default::default()
            };
            while let Some((_, mut em)) = ems.take((id, Some(ev_id)))? {
                if let Some(c) = em.remove("code") {
                    ev.elements_materiels.push(c);
                }
            }
            for (i, cur) in children.iter_mut().enumerate() {
                while let Some((cid, crow)) = cur.take((id, Some(ev_id)))? {
                    let r = Row {
                        id: cid,
                        cells: crow.cells,
                    };
                    match CHILDREN[i].1 {
                        RecordKind::Deces => ev.deces = Some(r),
                        RecordKind::Arret => ev.arrets.push(r),
                        RecordKind::Certificat => ev.certificats.push(r),
                        RecordKind::Lesion => ev.lesions.push(r),
                        _ => ev.consequences.push(r),
                    }
                }
            }
            agent.evenements.push(ev);
        }
        each(agent)?;
    }
    Ok(())
}

/// One ordered query, read ahead by one row, taken while its key matches.
struct Cursor<'a> {
    next: Next<'a>,
    cols: Vec<&'static str>,
    /// How many key columns precede the values: 2 for `(agent_id, id)`, 3 for
    /// `(agent_id, evenement_id, id)`.
    keys: usize,
    peeked: Option<(i64, i64, i64, Row)>,
    done: bool,
}

impl<'a> Cursor<'a> {
    fn new(next: Next<'a>, cols: Vec<&'static str>, keys: usize) -> Cursor<'a> {
        Cursor {
            next,
            cols,
            keys,
            peeked: None,
            done: false,
        }
    }

    fn peek(&mut self) -> Result<Option<&(i64, i64, i64, Row)>, SenderError> {
        if self.peeked.is_none() && !self.done {
            match (self.next)()? {
                None => self.done = true,
                Some((k, cells)) => {
                    let (a, b) = (k[0], k[1]);
                    let c = if self.keys == 3 { k[2] } else { b };
                    let mut row = Row {
                        id: c,
                        cells: Vec::new(),
                    };
                    for (col, v) in self.cols.iter().zip(cells) {
                        if let Some(v) = v {
                            row.cells.push((col, v));
                        }
                    }
                    self.peeked = Some((a, b, c, row));
                }
            }
        }
        Ok(self.peeked.as_ref())
    }

    /// The next row whose key is `(agent, evenement)` (`evenement` None: any événement of
    /// the agent), skipping rows of smaller keys; None when the next row is beyond.
    fn take(&mut self, key: (i64, Option<i64>)) -> Result<Option<(i64, Row)>, SenderError> {
        loop {
            let Some((a, b, _, _)) = self.peek()? else {
                return Ok(None);
            };
            let here = (*a, *b);
            let want_b = key.1.unwrap_or(here.1);
            if here == (key.0, want_b) {
                let (_, _, c, row) = self.peeked.take().expect("peeked");
                return Ok(Some((c, row)));
            }
            if here < (key.0, want_b) {
                self.peeked = None;
                continue;
            }
            return Ok(None);
        }
    }
}

fn pgerr(e: postgres::Error) -> SenderError {
    SenderError::Source(format!("lecture de la base source : {e}"))
}

/// A connection URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

fn src(e: rusqlite::Error) -> SenderError {
    SenderError::Source(format!("lecture de la base source : {e}"))
}

/// A date of the source as `YYYY-MM-DD` (a PostgreSQL or ISO timestamp keeps its day).
pub fn day(s: &str) -> String {
    let s = s.trim();
    s.get(..10)
        .filter(|d| d.len() == 10)
        .unwrap_or(s)
        .to_string()
}

/// A timestamp of the source as `YYYY-MM-DDTHH:MM:SS`.
pub fn stamp(s: &str) -> String {
    s.trim().replacen(' ', "T", 1)
}
