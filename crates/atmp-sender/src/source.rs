//! The sender's source base (`source-schema.sql`), read and never written.
//!
//! The source is the sender's own base, not the platform's: this module knows only the tables
//! of SOURCE.md. Everything is read inside one read transaction, so that the files of a run
//! are one consistent snapshot even while the sender's system keeps writing. The agents of a
//! collectivité are streamed: a small number of ordered queries (agents, événements, each
//! child table) are merged on `(agent_id, evenement_id)`, so memory holds one agent at a time
//! whatever the size of the base.

use std::collections::HashMap;

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

fn select_list(alias: &str, cols: &[&'static str]) -> String {
    cols.iter()
        .map(|c| format!("{alias}.{}", source_column(c)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A value of the source as text: integers and reals without a useless `.0`, text as is.
fn cell_text(v: ValueRef<'_>) -> Option<String> {
    match v {
        ValueRef::Null => None,
        ValueRef::Integer(i) => Some(i.to_string()),
        ValueRef::Real(r) => Some(if r.fract() == 0.0 && r.abs() < 1e15 {
            format!("{}", r as i64)
        } else {
            format!("{r}")
        }),
        ValueRef::Text(t) => Some(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => Some(String::from_utf8_lossy(b).into_owned()),
    }
}

/// The source base, opened read-only.
pub struct Source {
    conn: Connection,
    /// For error messages: where the source is (never a password).
    pub location: String,
}

impl Source {
    /// Opens `sqlite://PATH` (read-only; the source is never written).
    pub fn open(url: &str) -> Result<Source, SenderError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Err(SenderError::Source(
                "source PostgreSQL : pas encore prise en charge par cette version, utilisez une base SQLite (sqlite://CHEMIN)".into(),
            ));
        }
        let path = url.strip_prefix("sqlite://").ok_or_else(|| {
            SenderError::Usage(format!(
                "adresse de source invalide « {url} » : attendu sqlite://CHEMIN"
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
        .map_err(|e| SenderError::Source(format!("la base source {path} ne s'ouvre pas : {e}")))?;
        conn.busy_timeout(std::time::Duration::from_secs(30))
            .map_err(|e| SenderError::Source(e.to_string()))?;
        let s = Source {
            conn,
            location: path.to_string(),
        };
        s.check_schema()?;
        Ok(s)
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
            let sql = format!("SELECT * FROM {table} LIMIT 0");
            match self.conn.prepare(&sql) {
                Err(_) => missing.push(format!("table {table}")),
                Ok(st) => {
                    let have: Vec<String> = st.column_names().map(|s| s.to_string()).collect();
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
        self.conn.execute_batch("BEGIN").map_err(src)?;
        // A deferred transaction takes its snapshot at its first read: read now.
        self.conn
            .query_row("SELECT count(*) FROM collectivite", [], |_| Ok(()))
            .map_err(src)
    }

    /// Ends the read transaction.
    pub fn end(&self) {
        let _ = self.conn.execute_batch("COMMIT");
    }

    pub fn collectivites(&self) -> Result<Vec<SourceCollectivite>, SenderError> {
        let mut st = self
            .conn
            .prepare(
                "SELECT siret, nom, cdg_siret, limite_anteriorite FROM collectivite ORDER BY siret",
            )
            .map_err(src)?;
        let rows = st
            .query_map([], |r| {
                Ok(SourceCollectivite {
                    siret: cell_text(r.get_ref(0)?)
                        .unwrap_or_default()
                        .trim()
                        .to_string(),
                    nom: cell_text(r.get_ref(1)?).unwrap_or_default(),
                    cdg_siret: cell_text(r.get_ref(2)?)
                        .map(|s| s.trim().to_string())
                        .filter(|s| !s.is_empty()),
                    limite_anteriorite: cell_text(r.get_ref(3)?)
                        .map(|s| day(&s))
                        .filter(|s| !s.is_empty()),
                })
            })
            .map_err(src)?;
        rows.collect::<Result<_, _>>().map_err(src)
    }

    pub fn autorisations(&self) -> Result<Vec<Autorisation>, SenderError> {
        let mut st = self
            .conn
            .prepare("SELECT id, collectivite_siret, statut, date FROM autorisation")
            .map_err(src)?;
        let rows = st
            .query_map([], |r| {
                Ok(Autorisation {
                    id: r.get(0)?,
                    collectivite_siret: cell_text(r.get_ref(1)?)
                        .unwrap_or_default()
                        .trim()
                        .to_string(),
                    statut: cell_text(r.get_ref(2)?).unwrap_or_default(),
                    date: day(&cell_text(r.get_ref(3)?).unwrap_or_default()),
                })
            })
            .map_err(src)?;
        rows.collect::<Result<_, _>>().map_err(src)
    }

    /// The services of a collectivité: `(code, libelle, saisi_le)`, by code.
    pub fn services(&self, siret: &str) -> Result<Vec<(String, String, String)>, SenderError> {
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT code, libelle, saisi_le FROM service WHERE collectivite_siret = ?1 ORDER BY code",
            )
            .map_err(src)?;
        let rows = st
            .query_map([siret], |r| {
                Ok((
                    cell_text(r.get_ref(0)?).unwrap_or_default(),
                    cell_text(r.get_ref(1)?).unwrap_or_default(),
                    stamp(&cell_text(r.get_ref(2)?).unwrap_or_default()),
                ))
            })
            .map_err(src)?;
        rows.collect::<Result<_, _>>().map_err(src)
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
                "a.collectivite_siret = ?1 AND (?2 IS NULL OR e.date >= ?2) AND ?3 IS NULL".into(),
                limite.clone(),
                None,
            ),
            Selection::Differentiel { debut, fin } => {
                let mut p = String::from(
                    "a.collectivite_siret = ?1 AND ((e.saisi_le >= ?2 AND e.saisi_le < ?3)",
                );
                // Uncorrelated subqueries: each is read once into a transient index, so
                // a source without indexes on `evenement_id` is not scanned once per event.
                for (table, _) in CHILDREN {
                    p.push_str(&format!(
                        " OR e.id IN (SELECT c.evenement_id FROM {table} c WHERE c.saisi_le >= ?2 AND c.saisi_le < ?3)"
                    ));
                }
                p.push(')');
                (p, Some(debut.clone()), Some(fin.clone()))
            }
        };
        let params = rusqlite::params![siret, p2, p3];
        let agent_cols = columns(RecordKind::Agent);
        let ev_cols = columns(RecordKind::Evenement);
        let mut agents_st = self
            .conn
            .prepare(&format!(
                "SELECT x.id, x.service_code, {} FROM agent x WHERE x.collectivite_siret = ?1 AND x.id IN \
                 (SELECT e.agent_id FROM evenement e JOIN agent a ON a.id = e.agent_id WHERE {pred}) ORDER BY x.id",
                select_list("x", &agent_cols)
            ))
            .map_err(src)?;
        let mut ev_st = self
            .conn
            .prepare(&format!(
                "SELECT e.agent_id, e.id, {} FROM evenement e JOIN agent a ON a.id = e.agent_id WHERE {pred} ORDER BY e.agent_id, e.id",
                select_list("e", &ev_cols)
            ))
            .map_err(src)?;
        let mut em_st = self
            .conn
            .prepare(&format!(
                "SELECT e.agent_id, e.id, 0, x.code FROM element_materiel x JOIN evenement e ON e.id = x.evenement_id \
                 JOIN agent a ON a.id = e.agent_id WHERE {pred} ORDER BY e.agent_id, e.id, x.code"
            ))
            .map_err(src)?;
        let mut child_sts = Vec::new();
        let mut child_cols = Vec::new();
        for (table, kind) in CHILDREN {
            let cols = columns(kind);
            let id = if table == "deces" {
                "x.evenement_id"
            } else {
                "x.id"
            };
            child_sts.push(
                self.conn
                    .prepare(&format!(
                        "SELECT e.agent_id, e.id, {id}, {} FROM {table} x JOIN evenement e ON e.id = x.evenement_id \
                         JOIN agent a ON a.id = e.agent_id WHERE {pred} ORDER BY e.agent_id, e.id, {id}",
                        select_list("x", &cols)
                    ))
                    .map_err(src)?,
            );
            child_cols.push(cols);
        }
        let mut agents = agents_st.query(params).map_err(src)?;
        let mut evs = Cursor::new(ev_st.query(params).map_err(src)?, ev_cols, 2);
        let mut ems = Cursor::new(em_st.query(params).map_err(src)?, vec!["code"], 3);
        let mut children: Vec<Cursor<'_>> = Vec::new();
        for (st, cols) in child_sts.iter_mut().zip(child_cols) {
            children.push(Cursor::new(st.query(params).map_err(src)?, cols, 3));
        }
        while let Some(r) = agents.next().map_err(src)? {
            let id: i64 = r.get(0).map_err(src)?;
            let service_code = cell_text(r.get_ref(1).map_err(src)?)
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty());
            let mut row = Row {
                id,
                cells: Vec::new(),
            };
            for (i, c) in agent_cols.iter().enumerate() {
                if let Some(v) = cell_text(r.get_ref(i + 2).map_err(src)?) {
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
}

/// One ordered query, read ahead by one row, taken while its key matches.
struct Cursor<'a> {
    rows: rusqlite::Rows<'a>,
    cols: Vec<&'static str>,
    /// How many key columns precede the values: 2 for `(agent_id, id)`, 3 for
    /// `(agent_id, evenement_id, id)`.
    keys: usize,
    peeked: Option<(i64, i64, i64, Row)>,
    done: bool,
}

impl<'a> Cursor<'a> {
    fn new(rows: rusqlite::Rows<'a>, cols: Vec<&'static str>, keys: usize) -> Cursor<'a> {
        Cursor {
            rows,
            cols,
            keys,
            peeked: None,
            done: false,
        }
    }

    fn peek(&mut self) -> Result<Option<&(i64, i64, i64, Row)>, SenderError> {
        if self.peeked.is_none() && !self.done {
            match self.rows.next().map_err(src)? {
                None => self.done = true,
                Some(r) => {
                    let a: i64 = r.get(0).map_err(src)?;
                    let b: i64 = r.get(1).map_err(src)?;
                    let c: i64 = if self.keys == 3 {
                        r.get(2).map_err(src)?
                    } else {
                        b
                    };
                    let mut row = Row {
                        id: c,
                        cells: Vec::new(),
                    };
                    for (i, col) in self.cols.iter().enumerate() {
                        if let Some(v) = cell_text(r.get_ref(i + self.keys).map_err(src)?) {
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

/// The services of each collectivité, for the agents' `<service>` references.
pub type ServiceIndex = HashMap<String, String>;
