//! The embedded SQLite implementation of [`Store`].

use std::collections::{HashMap, HashSet};
use std::path::Path;

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{params, Connection, OptionalExtension, Statement, ToSql};

use atmp_model::{Nomenclature, NomenclatureEntry, Nomenclatures, Siret};

use crate::prelude::*;
use crate::{
    now, AuditEvent, AuditRow, Autorisation, Cell, Collectivite, Emetteur, FileTx, FindId, Found,
    ImportLog, ImportRow, InsertId, Job, Mail, NewMail, NewUtilisateur, PurgeCandidate, PurgeKind,
    Result, Role, StoreError, SuiviQuery, SuiviRow, Table, Utilisateur,
};

/// The migrations, applied in order on open; `PRAGMA user_version` is the number applied.
const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/sqlite/0001_init.sql"),
    include_str!("../migrations/sqlite/0002_platform.sql"),
    include_str!("../migrations/sqlite/0003_audit.sql"),
    include_str!("../migrations/sqlite/0004_purge.sql"),
    include_str!("../migrations/sqlite/0005_login_failures.sql"),
    include_str!("../migrations/sqlite/0006_rejets.sql"),
    include_str!("../migrations/sqlite/0007_doublon.sql"),
    include_str!("../migrations/sqlite/0008_lien_mot_de_passe.sql"),
    include_str!("../migrations/sqlite/0009_emetteur_actif.sql"),
];

/// The columns of `import` read by [`import_row`].
const IMPORT_COLS: &str = "id, file_name, sha256, head_sha256, size, emetteur, type_fichier, mode, date_creation, cdg_siret, \
    started_at, finished_at, result, label, errors, warnings, counts, job_id, rejeu_de, doublon_de";

fn import_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(i64, ImportRow)> {
    Ok((
        r.get(0)?,
        ImportRow {
            file_name: r.get(1)?,
            sha256: r.get(2)?,
            head_sha256: r.get(3)?,
            size: r.get::<_, i64>(4)? as u64,
            emetteur: r.get(5)?,
            type_fichier: r.get(6)?,
            mode: r.get(7)?,
            date_creation: r.get(8)?,
            cdg_siret: r.get(9)?,
            started_at: r.get(10)?,
            finished_at: r.get(11)?,
            result: r.get(12)?,
            label: r.get(13)?,
            errors: r.get::<_, i64>(14)? as u64,
            warnings: r.get::<_, i64>(15)? as u64,
            counts: r.get(16)?,
            job_id: r.get(17)?,
            rejeu_de: r.get(18)?,
            doublon_de: r.get(19)?,
        },
    ))
}

/// The embedded SQLite store (WAL, one writer).
pub struct SqliteStore {
    conn: Connection,
    columns: HashMap<&'static str, HashSet<String>>,
}

impl ToSql for Cell {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Cell::Null => ToSqlOutput::Borrowed(ValueRef::Null),
            Cell::Int(n) => ToSqlOutput::Borrowed(ValueRef::Integer(*n)),
            Cell::Real(f) => ToSqlOutput::Borrowed(ValueRef::Real(*f)),
            Cell::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
        })
    }
}

fn cell(v: ValueRef<'_>) -> Cell {
    match v {
        ValueRef::Null => Cell::Null,
        ValueRef::Integer(n) => Cell::Int(n),
        ValueRef::Real(f) => Cell::Real(f),
        ValueRef::Text(t) | ValueRef::Blob(t) => {
            Cell::Text(String::from_utf8_lossy(t).into_owned())
        }
    }
}

impl SqliteStore {
    /// Opens (creating it and its folder if needed) the base at `path`, applies the
    /// migrations and seeds the shipped nomenclatures into a new base.
    pub fn open(path: &Path) -> Result<SqliteStore> {
        if let Some(dir) = path.parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir)?;
            }
        }
        let conn = Connection::open(path)?;
        Self::init(conn)
    }

    /// A private in-memory base (tests).
    pub fn memory() -> Result<SqliteStore> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(mut conn: Connection) -> Result<SqliteStore> {
        // One writer at a time: a file is integrated in one transaction (25 s for 1 GB), and
        // any other write (a web login, a job row, another import) waits for its commit
        // rather than fail.
        conn.busy_timeout(std::time::Duration::from_secs(300))?;
        // 16 KiB pages (taken by a new base only): a quarter of the page writes of a bulk load.
        conn.pragma_update(None, "page_size", 16384)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.pragma_update(None, "cache_size", -98304)?;
        conn.pragma_update(None, "temp_store", "MEMORY")?;
        conn.set_prepared_statement_cache_capacity(64);
        let applied: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(applied as usize) {
            let tx = conn.transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
            tx.commit()?;
        }
        let mut columns = HashMap::new();
        for t in Table::ALL {
            let mut stmt = conn.prepare(&format!("PRAGMA table_info({})", t.name()))?;
            let cols: HashSet<String> = stmt
                .query_map([], |r| r.get::<_, String>(1))?
                .collect::<rusqlite::Result<_>>()?;
            columns.insert(t.name(), cols);
        }
        let mut store = SqliteStore { conn, columns };
        let n: i64 = store
            .conn
            .query_row("SELECT count(*) FROM nomenclature", [], |r| r.get(0))?;
        if n == 0 {
            let entries = atmp_model::parse_csv(atmp_model::BUILTIN_CSV)
                .map_err(|e| StoreError::Invalid(format!("{e:?}")))?;
            store.replace_nomenclatures(&entries, atmp_model::BUILTIN_VERSION, "livree")?;
        }
        Ok(store)
    }

    /// The loaded nomenclatures, ready for checks.
    pub fn nomenclatures(&mut self) -> Result<Nomenclatures> {
        Ok(Nomenclatures::from_entries(&self.nomenclature_entries()?))
    }

    /// The columns of a table of integrated records (for consistency tests).
    pub fn table_columns(&self, table: Table) -> &HashSet<String> {
        &self.columns[table.name()]
    }

    fn collectivite_where(&self, clause: &str, arg: &dyn ToSql) -> Result<Vec<Collectivite>> {
        let sql = format!(
            "SELECT c.id, c.siret, c.nom, p.siret FROM collectivite c LEFT JOIN collectivite p ON p.id = c.cdg_id {clause} ORDER BY c.siret"
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map([arg], collectivite_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn utilisateur_where(&self, clause: &str, arg: &dyn ToSql) -> Result<Vec<Utilisateur>> {
        let sql = format!(
            "SELECT u.id, u.login, u.password_hash, u.role, u.collectivite_id, c.siret, c.nom, u.email, u.doit_changer, u.actif \
             FROM utilisateur u LEFT JOIN collectivite c ON c.id = u.collectivite_id WHERE {clause} ORDER BY u.login"
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map([arg], |r| {
            let role: String = r.get(3)?;
            Ok(Utilisateur {
                id: r.get(0)?,
                login: r.get(1)?,
                password_hash: r.get(2)?,
                role: Role::parse(&role).unwrap_or(Role::Collectivite),
                collectivite_id: r.get(4)?,
                collectivite_siret: r.get(5)?,
                collectivite_nom: r.get(6)?,
                email: r.get(7)?,
                doit_changer: r.get(8)?,
                actif: r.get(9)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn job_where(&self, clause: &str, args: &[&dyn ToSql]) -> Result<Vec<Job>> {
        let sql = format!(
            "SELECT id, emetteur, file_name, stored_path, size, received_at, state, attempts FROM job WHERE {clause}"
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(args, |r| {
            Ok(Job {
                id: r.get(0)?,
                emetteur: r.get(1)?,
                file_name: r.get(2)?,
                stored_path: r.get(3)?,
                size: r.get::<_, i64>(4)? as u64,
                received_at: r.get(5)?,
                state: r.get(6)?,
                attempts: r.get::<_, i64>(7)? as u64,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn emetteur_row(&self, code: &str) -> Result<Option<Emetteur>> {
        type Row = (i64, String, Option<String>, bool, Option<String>);
        let row: Option<Row> = self
            .conn
            .query_row(
                "SELECT id, code, nom, actif, derniere_connexion FROM emetteur WHERE code = ?1",
                [code],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .optional()?;
        let Some((id, code, nom, actif, derniere_connexion)) = row else {
            return Ok(None);
        };
        let mut stmt = self.conn.prepare_cached(
            "SELECT c.siret, a.statut, a.date_decision, a.reference FROM autorisation a JOIN collectivite c ON c.id = a.collectivite_id \
             WHERE a.emetteur_id = ?1 ORDER BY c.siret",
        )?;
        let autorisations = stmt
            .query_map([id], |r| {
                let s: String = r.get(1)?;
                Ok((
                    r.get(0)?,
                    Autorisation::parse(&s).unwrap_or(Autorisation::Refusee),
                    r.get(2)?,
                    r.get(3)?,
                ))
            })?
            .collect::<rusqlite::Result<_>>()?;
        Ok(Some(Emetteur {
            id,
            code,
            nom,
            autorisations,
            actif,
            derniere_connexion,
        }))
    }
}

fn collectivite_in(conn: &Connection, siret: &str) -> Result<Option<Collectivite>> {
    Ok(conn
        .prepare_cached(
            "SELECT c.id, c.siret, c.nom, p.siret FROM collectivite c LEFT JOIN collectivite p ON p.id = c.cdg_id WHERE c.siret = ?1",
        )?
        .query_row([siret], collectivite_row)
        .optional()?)
}

/// A SIRET of a row (only checked ones are written).
fn siret_at(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<Option<Siret>> {
    r.get::<_, Option<String>>(i)?
        .map(|s| {
            crate::stored_siret(&s).map_err(|e| {
                rusqlite::Error::FromSqlConversionFailure(
                    i,
                    rusqlite::types::Type::Text,
                    Box::new(e),
                )
            })
        })
        .transpose()
}

/// `c.id, c.siret, c.nom, p.siret` as a collectivité.
fn collectivite_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Collectivite> {
    Ok(Collectivite {
        id: r.get(0)?,
        siret: siret_at(r, 1)?.ok_or(rusqlite::Error::InvalidColumnType(
            1,
            "siret".into(),
            rusqlite::types::Type::Null,
        ))?,
        nom: r.get(2)?,
        cdg_siret: siret_at(r, 3)?,
    })
}

fn insert_import(conn: &Connection, row: &ImportRow) -> Result<i64> {
    conn.execute(
        "INSERT INTO import (file_name, sha256, size, emetteur, type_fichier, mode, date_creation, cdg_siret, started_at, finished_at, result, label, errors, warnings, counts, head_sha256, job_id, rejeu_de, doublon_de) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)",
        params![
            row.file_name,
            row.sha256,
            row.size as i64,
            row.emetteur,
            row.type_fichier,
            row.mode,
            row.date_creation,
            row.cdg_siret,
            row.started_at,
            row.finished_at,
            row.result,
            row.label,
            row.errors as i64,
            row.warnings as i64,
            row.counts,
            row.head_sha256,
            row.job_id,
            row.rejeu_de,
            row.doublon_de
        ],
    )?;
    Ok(conn.last_insert_rowid())
}

fn insert_logs(
    conn: &Connection,
    import_id: i64,
    row: &ImportRow,
    logs: &[ImportLog],
) -> Result<()> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO import_log (import_id, collectivite_siret, global, complet_path, erreurs_path, errors, warnings, label, started_at, type_fichier) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?;
    for l in logs {
        stmt.execute(params![
            import_id,
            l.collectivite_siret,
            l.global,
            l.complet_path,
            l.erreurs_path,
            l.errors as i64,
            l.warnings as i64,
            l.label,
            row.started_at,
            row.type_fichier
        ])?;
    }
    Ok(())
}

// The implementations of each concern, one file each.
mod accounts;
mod audit;
mod imports;
mod jobs;
mod mail;
mod reference;
mod rejets;

struct SqliteFileTx<'a> {
    conn: &'a Connection,
    columns: &'a HashMap<&'static str, HashSet<String>>,
    import_id: i64,
    /// The prepared statements of this file, by id (no cache lookup per row).
    stmts: Vec<Statement<'a>>,
    /// For each dossier statement, the number of columns of each of its parts.
    dossier_widths: Vec<(usize, Vec<usize>)>,
    done: bool,
}

impl SqliteFileTx<'_> {
    fn check_cols(&self, table: Table, cols: &[&'static str]) -> Result<()> {
        let known = &self.columns[table.name()];
        for c in cols {
            if !known.contains(*c) {
                return Err(StoreError::Invalid(format!(
                    "colonne inconnue {}.{c}",
                    table.name()
                )));
            }
        }
        Ok(())
    }
}

impl Drop for SqliteFileTx<'_> {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }
}

impl FileTx for SqliteFileTx<'_> {
    fn import_id(&self) -> i64 {
        self.import_id
    }

    fn collectivite(&mut self, siret: &Siret) -> Result<Option<Collectivite>> {
        collectivite_in(self.conn, siret.as_str())
    }

    fn autorisation(
        &mut self,
        emetteur: &str,
        collectivite_id: i64,
    ) -> Result<Option<Autorisation>> {
        let s: Option<String> = self
            .conn
            .prepare_cached(
                "SELECT a.statut FROM autorisation a JOIN emetteur e ON e.id = a.emetteur_id WHERE e.code = ?1 AND a.collectivite_id = ?2",
            )?
            .query_row(params![emetteur, collectivite_id], |r| r.get(0))
            .optional()?;
        Ok(s.as_deref().and_then(Autorisation::parse))
    }

    fn prepare_find(
        &mut self,
        table: Table,
        key: &[&'static str],
        want: &[&'static str],
    ) -> Result<FindId> {
        self.check_cols(table, key)?;
        self.check_cols(table, want)?;
        let mut sql = String::from("SELECT id");
        for w in want {
            sql.push_str(", ");
            sql.push_str(w);
        }
        sql.push_str(&format!(
            " FROM {} WHERE {} = ?1",
            table.name(),
            table.parent_column()
        ));
        for (i, k) in key.iter().enumerate() {
            sql.push_str(&format!(" AND {k} IS ?{}", i + 2));
        }
        sql.push_str(" ORDER BY id LIMIT 1");
        self.stmts.push(self.conn.prepare(&sql)?);
        Ok(FindId(self.stmts.len() - 1))
    }

    fn prepare_insert(&mut self, table: Table, cols: &[&'static str]) -> Result<InsertId> {
        self.check_cols(table, cols)?;
        let mut names = vec![table.parent_column(), "import_id"];
        names.extend_from_slice(cols);
        let placeholders: Vec<String> = (1..=names.len()).map(|i| format!("?{i}")).collect();
        let sql = format!(
            "INSERT INTO {} ({}) VALUES ({})",
            table.name(),
            names.join(", "),
            placeholders.join(", ")
        );
        self.stmts.push(self.conn.prepare(&sql)?);
        Ok(InsertId(self.stmts.len() - 1))
    }

    fn find(&mut self, id: FindId, parent: i64, key: &[Cell]) -> Result<Option<Found>> {
        let stmt = &mut self.stmts[id.0];
        stmt.raw_bind_parameter(1, parent)?;
        for (i, c) in key.iter().enumerate() {
            stmt.raw_bind_parameter(i + 2, c)?;
        }
        let mut rows = stmt.raw_query();
        match rows.next()? {
            Some(r) => {
                let n = r.as_ref().column_count();
                let id: i64 = r.get(0)?;
                let mut cells = Vec::with_capacity(n - 1);
                for i in 1..n {
                    cells.push(cell(r.get_ref(i)?));
                }
                Ok(Some(Found { id, cells }))
            }
            None => Ok(None),
        }
    }

    fn prepare_dossier(&mut self, parts: &[(Table, &'static [&'static str])]) -> Result<FindId> {
        let width = parts.iter().map(|(_, w)| w.len()).max().unwrap_or(0);
        let mut selects = Vec::new();
        for (i, (table, want)) in parts.iter().enumerate() {
            self.check_cols(*table, want)?;
            let mut cols: Vec<String> = want.iter().map(|c| c.to_string()).collect();
            cols.resize(width, "NULL".to_string());
            let filter = match table {
                Table::Evenement => "agent_id = ?1",
                Table::Service | Table::Agent => {
                    return Err(StoreError::Invalid(
                        "pas de dossier pour cette table".into(),
                    ))
                }
                _ => "evenement_id IN (SELECT id FROM evenement WHERE agent_id = ?1)",
            };
            let cols = if cols.is_empty() {
                String::new()
            } else {
                format!(", {}", cols.join(", "))
            };
            selects.push(format!(
                "SELECT {i}, {}, id{cols} FROM {} WHERE {filter}",
                table.parent_column(),
                table.name()
            ));
        }
        // Ordered by part then id in `dossier`, not by SQL: an `ORDER BY` over the union
        // ran SQLite's sorter for every agent of a re-import, for a handful of rows.
        let sql = selects.join(" UNION ALL ");
        self.stmts.push(self.conn.prepare(&sql)?);
        self.dossier_widths.push((
            self.stmts.len() - 1,
            parts.iter().map(|(_, w)| w.len()).collect(),
        ));
        Ok(FindId(self.stmts.len() - 1))
    }

    fn dossier(&mut self, id: FindId, agent_id: i64) -> Result<Vec<(usize, i64, Found)>> {
        let widths = &self
            .dossier_widths
            .iter()
            .find(|(i, _)| *i == id.0)
            .expect("a prepared dossier")
            .1;
        let stmt = &mut self.stmts[id.0];
        stmt.raw_bind_parameter(1, agent_id)?;
        let mut rows = stmt.raw_query();
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let part = r.get::<_, i64>(0)? as usize;
            let n = widths[part];
            let mut cells = Vec::with_capacity(n);
            for i in 3..3 + n {
                cells.push(cell(r.get_ref(i)?));
            }
            out.push((
                part,
                r.get(1)?,
                Found {
                    id: r.get(2)?,
                    cells,
                },
            ));
        }
        // As `ORDER BY part, id` (ids are unique in a table).
        out.sort_unstable_by_key(|(part, _, f)| (*part, f.id));
        Ok(out)
    }

    fn insert(&mut self, id: InsertId, parent: i64, cells: &[Cell]) -> Result<i64> {
        let stmt = &mut self.stmts[id.0];
        stmt.raw_bind_parameter(1, parent)?;
        stmt.raw_bind_parameter(2, self.import_id)?;
        for (i, c) in cells.iter().enumerate() {
            stmt.raw_bind_parameter(i + 3, c)?;
        }
        stmt.raw_execute()?;
        Ok(self.conn.last_insert_rowid())
    }

    fn service_code(&mut self, service_id: i64) -> Result<Option<String>> {
        Ok(self
            .conn
            .prepare_cached("SELECT code FROM service WHERE id = ?1")?
            .query_row([service_id], |r| r.get(0))
            .optional()?)
    }

    fn add_rejets(&mut self, import_id: i64, rows: &[crate::NewRejet]) -> Result<()> {
        rejets::add_rejets(self.conn, import_id, rows)
    }

    fn open_rejets(&mut self, siret: &str) -> Result<Vec<(i64, String, Vec<String>)>> {
        rejets::open_rejets(self.conn, siret)
    }

    fn close_rejets(&mut self, ids: &[i64]) -> Result<()> {
        rejets::close_rejets(self.conn, self.import_id, ids)
    }

    fn update_rejets(&mut self, rows: &[crate::RejetMaj]) -> Result<()> {
        rejets::update_rejets(self.conn, rows)
    }

    fn commit(mut self: Box<Self>, row: &ImportRow, logs: &[ImportLog]) -> Result<()> {
        self.conn.execute(
            "UPDATE import SET finished_at = ?2, result = ?3, label = ?4, errors = ?5, warnings = ?6, counts = ?7, \
             emetteur = ?8, type_fichier = ?9, mode = ?10, date_creation = ?11, cdg_siret = ?12, sha256 = ?13 WHERE id = ?1",
            params![
                self.import_id,
                row.finished_at,
                row.result,
                row.label,
                row.errors as i64,
                row.warnings as i64,
                row.counts,
                row.emetteur,
                row.type_fichier,
                row.mode,
                row.date_creation,
                row.cdg_siret,
                row.sha256
            ],
        )?;
        insert_logs(self.conn, self.import_id, row, logs)?;
        self.conn.execute_batch("COMMIT")?;
        self.done = true;
        Ok(())
    }
}

/// The typed states as stored: their codes.
macro_rules! coded {
    ($t:ty, $what:literal) => {
        impl ToSql for $t {
            fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
                Ok(ToSqlOutput::from(self.code()))
            }
        }
        impl rusqlite::types::FromSql for $t {
            fn column_result(v: ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
                let s = v.as_str()?;
                <$t>::parse(s).ok_or_else(|| {
                    rusqlite::types::FromSqlError::Other(format!("{} inconnu : {s}", $what).into())
                })
            }
        }
    };
}
coded!(crate::ImportResult, "résultat d'import");
coded!(crate::JobState, "état de travail");

/// The counts, stored as their JSON object.
impl ToSql for crate::RecordCounts {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(serde_json::to_string(self).map_err(
            |e| rusqlite::Error::ToSqlConversionFailure(e.into()),
        )?))
    }
}
impl rusqlite::types::FromSql for crate::RecordCounts {
    fn column_result(v: ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
        serde_json::from_str(v.as_str()?)
            .map_err(|e| rusqlite::types::FromSqlError::Other(e.into()))
    }
}
