//! The embedded SQLite implementation of [`Store`].

use std::collections::{HashMap, HashSet};
use std::path::Path;

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{params, Connection, OptionalExtension, Statement, ToSql};

use atmp_model::{Nomenclature, NomenclatureEntry, Nomenclatures, Siret};

use crate::{
    now, AuditEvent, AuditRow, Autorisation, Cell, Collectivite, Emetteur, FileTx, FindId, Found,
    ImportLog, ImportRow, InsertId, Job, Mail, NewMail, NewUtilisateur, PurgeCandidate, PurgeKind,
    Result, Role, Scope, Store, StoreError, SuiviQuery, SuiviRow, Table, Utilisateur,
};

/// The migrations, applied in order on open; `PRAGMA user_version` is the number applied.
const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/sqlite/0001_init.sql"),
    include_str!("../migrations/sqlite/0002_platform.sql"),
    include_str!("../migrations/sqlite/0003_audit.sql"),
    include_str!("../migrations/sqlite/0004_purge.sql"),
];

/// The columns of `import` read by [`import_row`].
const IMPORT_COLS: &str = "id, file_name, sha256, head_sha256, size, emetteur, type_fichier, mode, date_creation, cdg_siret, \
    started_at, finished_at, result, label, errors, warnings, counts, job_id";

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
        let rows = stmt.query_map([arg], |r| {
            Ok(Collectivite {
                id: r.get(0)?,
                siret: r.get(1)?,
                nom: r.get(2)?,
                cdg_siret: r.get(3)?,
            })
        })?;
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
        let row: Option<(i64, String, Option<String>)> = self
            .conn
            .query_row(
                "SELECT id, code, nom FROM emetteur WHERE code = ?1",
                [code],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        let Some((id, code, nom)) = row else {
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
        }))
    }
}

fn collectivite_in(conn: &Connection, siret: &str) -> Result<Option<Collectivite>> {
    Ok(conn
        .prepare_cached(
            "SELECT c.id, c.siret, c.nom, p.siret FROM collectivite c LEFT JOIN collectivite p ON p.id = c.cdg_id WHERE c.siret = ?1",
        )?
        .query_row([siret], |r| Ok(Collectivite { id: r.get(0)?, siret: r.get(1)?, nom: r.get(2)?, cdg_siret: r.get(3)? }))
        .optional()?)
}

fn insert_import(conn: &Connection, row: &ImportRow) -> Result<i64> {
    conn.execute(
        "INSERT INTO import (file_name, sha256, size, emetteur, type_fichier, mode, date_creation, cdg_siret, started_at, finished_at, result, label, errors, warnings, counts, head_sha256, job_id) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)",
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
            row.job_id
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

impl Store for SqliteStore {
    fn add_collectivite(
        &mut self,
        siret: &Siret,
        nom: &str,
        cdg: Option<&Siret>,
    ) -> Result<Collectivite> {
        if collectivite_in(&self.conn, siret.as_str())?.is_some() {
            return Err(StoreError::Invalid(format!(
                "la collectivité {siret} existe déjà"
            )));
        }
        let cdg_id = match cdg {
            Some(c) => Some(
                collectivite_in(&self.conn, c.as_str())?
                    .ok_or_else(|| {
                        StoreError::Invalid(format!("le CDG {c} n'existe pas : créez-le d'abord"))
                    })?
                    .id,
            ),
            None => None,
        };
        self.conn.execute(
            "INSERT INTO collectivite (siret, nom, cdg_id, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![siret.as_str(), nom, cdg_id, now()],
        )?;
        Ok(collectivite_in(&self.conn, siret.as_str())?.expect("just inserted"))
    }

    fn collectivites(&mut self) -> Result<Vec<Collectivite>> {
        self.collectivite_where("WHERE 1 = ?1", &1)
    }

    fn collectivite(&mut self, siret: &str) -> Result<Option<Collectivite>> {
        collectivite_in(&self.conn, siret)
    }

    fn add_emetteur(&mut self, code: &str, nom: Option<&str>) -> Result<Emetteur> {
        self.conn.execute(
            "INSERT INTO emetteur (code, nom, created_at) VALUES (?1, ?2, ?3) ON CONFLICT (code) DO NOTHING",
            params![code, nom, now()],
        )?;
        Ok(self.emetteur_row(code)?.expect("just inserted"))
    }

    fn set_autorisation(
        &mut self,
        emetteur: &str,
        siret: &str,
        state: Autorisation,
        reference: Option<&str>,
    ) -> Result<()> {
        let e = self
            .emetteur_row(emetteur)?
            .ok_or_else(|| StoreError::Invalid(format!("l'émetteur {emetteur} n'existe pas")))?;
        let c = collectivite_in(&self.conn, siret)?.ok_or_else(|| {
            StoreError::Invalid(format!(
                "la collectivité {siret} n'existe pas : créez-la d'abord"
            ))
        })?;
        self.conn.execute(
            "INSERT INTO autorisation (emetteur_id, collectivite_id, statut, date_decision, reference) VALUES (?1, ?2, ?3, ?4, ?5) \
             ON CONFLICT (emetteur_id, collectivite_id) DO UPDATE SET statut = excluded.statut, date_decision = excluded.date_decision, \
             reference = excluded.reference",
            params![e.id, c.id, state.code(), now(), reference],
        )?;
        Ok(())
    }

    fn emetteurs(&mut self) -> Result<Vec<Emetteur>> {
        let codes: Vec<String> = {
            let mut stmt = self
                .conn
                .prepare("SELECT code FROM emetteur ORDER BY code")?;
            let rows = stmt.query_map([], |r| r.get(0))?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        codes
            .iter()
            .map(|c| Ok(self.emetteur_row(c)?.expect("listed")))
            .collect()
    }

    fn emetteur(&mut self, code: &str) -> Result<Option<Emetteur>> {
        self.emetteur_row(code)
    }

    fn nomenclature_entries(&mut self) -> Result<Vec<NomenclatureEntry>> {
        let mut stmt = self.conn.prepare(
            "SELECT nomenclature, code, libelle FROM nomenclature ORDER BY nomenclature, code",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (n, code, libelle) = row?;
            if let Some(nomenclature) = Nomenclature::from_name(&n) {
                out.push(NomenclatureEntry {
                    nomenclature,
                    code,
                    libelle,
                });
            }
        }
        Ok(out)
    }

    fn replace_nomenclatures(
        &mut self,
        entries: &[NomenclatureEntry],
        version: &str,
        sha256: &str,
    ) -> Result<()> {
        let tx = self.conn.transaction()?;
        let names: HashSet<&str> = entries.iter().map(|e| e.nomenclature.name()).collect();
        for n in &names {
            tx.execute("DELETE FROM nomenclature WHERE nomenclature = ?1", [n])?;
        }
        {
            let mut stmt = tx.prepare(
                "INSERT INTO nomenclature (nomenclature, code, libelle) VALUES (?1, ?2, ?3)",
            )?;
            for e in entries {
                stmt.execute(params![e.nomenclature.name(), e.code, e.libelle])?;
            }
        }
        tx.execute(
            "INSERT INTO nomenclature_version (version, sha256, entries, imported_at) VALUES (?1, ?2, ?3, ?4)",
            params![version, sha256, entries.len() as i64, now()],
        )?;
        tx.commit()?;
        Ok(())
    }

    fn nomenclature_versions(&mut self) -> Result<Vec<(String, String, i64, String)>> {
        let mut stmt = self.conn.prepare(
            "SELECT version, sha256, entries, imported_at FROM nomenclature_version ORDER BY id",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn integrated_at(&mut self, sha256: &str) -> Result<Option<String>> {
        Ok(self
            .conn
            .query_row(
                "SELECT finished_at FROM import WHERE sha256 = ?1 AND result = 'reussi' ORDER BY id LIMIT 1",
                [sha256],
                |r| r.get(0),
            )
            .optional()?)
    }

    fn maybe_integrated(&mut self, head_sha256: &str, size: u64) -> Result<bool> {
        let n: i64 = self.conn.query_row(
            "SELECT count(*) FROM import WHERE head_sha256 = ?1 AND size = ?2 AND result = 'reussi'",
            params![head_sha256, size as i64],
            |r| r.get(0),
        )?;
        Ok(n > 0)
    }

    fn record_import(&mut self, row: &ImportRow, logs: &[ImportLog]) -> Result<i64> {
        let tx = self.conn.transaction()?;
        let id = insert_import(&tx, row)?;
        insert_logs(&tx, id, row, logs)?;
        tx.commit()?;
        Ok(id)
    }

    fn imports(&mut self) -> Result<Vec<(i64, ImportRow)>> {
        let mut stmt = self.conn.prepare(&format!(
            "SELECT {IMPORT_COLS} FROM import ORDER BY id DESC"
        ))?;
        let rows = stmt.query_map([], import_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn count(&mut self, table: Table) -> Result<u64> {
        let n: i64 =
            self.conn
                .query_row(&format!("SELECT count(*) FROM {}", table.name()), [], |r| {
                    r.get(0)
                })?;
        Ok(n as u64)
    }

    fn begin_file<'a>(&'a mut self, row: &ImportRow) -> Result<Box<dyn FileTx + 'a>> {
        self.conn.execute_batch("BEGIN IMMEDIATE")?;
        let import_id = match insert_import(&self.conn, row) {
            Ok(id) => id,
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                return Err(e);
            }
        };
        Ok(Box::new(SqliteFileTx {
            conn: &self.conn,
            columns: &self.columns,
            import_id,
            stmts: Vec::new(),
            dossier_widths: Vec::new(),
            done: false,
        }))
    }

    fn set_cdg(&mut self, siret: &str, cdg: Option<&str>) -> Result<()> {
        let c = collectivite_in(&self.conn, siret)?
            .ok_or_else(|| StoreError::Invalid(format!("la collectivité {siret} n'existe pas")))?;
        let cdg_id = match cdg {
            None => None,
            Some(s) => {
                if s == siret {
                    return Err(StoreError::Invalid(
                        "une collectivité ne peut pas être rattachée à elle-même".into(),
                    ));
                }
                Some(
                    collectivite_in(&self.conn, s)?
                        .ok_or_else(|| {
                            StoreError::Invalid(format!(
                                "le CDG {s} n'existe pas : créez-le d'abord"
                            ))
                        })?
                        .id,
                )
            }
        };
        self.conn.execute(
            "UPDATE collectivite SET cdg_id = ?2 WHERE id = ?1",
            params![c.id, cdg_id],
        )?;
        Ok(())
    }

    fn services(&mut self, collectivite_id: i64) -> Result<Vec<(i64, String, Option<String>)>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, code, libelle FROM service WHERE collectivite_id = ?1 ORDER BY code",
        )?;
        let rows = stmt.query_map([collectivite_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn add_service(
        &mut self,
        collectivite_id: i64,
        code: &str,
        libelle: Option<&str>,
    ) -> Result<bool> {
        let n = self.conn.execute(
            "INSERT OR IGNORE INTO service (collectivite_id, code, libelle, import_id) VALUES (?1, ?2, ?3, 0)",
            params![collectivite_id, code, libelle],
        )?;
        Ok(n == 1)
    }

    fn set_emetteur_password(&mut self, code: &str, hash: &str) -> Result<()> {
        let n = self.conn.execute(
            "UPDATE emetteur SET password_hash = ?2 WHERE code = ?1",
            params![code, hash],
        )?;
        if n == 0 {
            return Err(StoreError::Invalid(format!(
                "l'émetteur {code} n'existe pas"
            )));
        }
        Ok(())
    }

    fn emetteur_password(&mut self, code: &str) -> Result<Option<String>> {
        Ok(self
            .conn
            .prepare_cached("SELECT password_hash FROM emetteur WHERE code = ?1")?
            .query_row([code], |r| r.get::<_, Option<String>>(0))
            .optional()?
            .flatten())
    }

    fn add_utilisateur(&mut self, u: &NewUtilisateur) -> Result<Utilisateur> {
        let collectivite_id = match (&u.collectivite, u.role.needs_collectivite()) {
            (Some(s), true) => Some(
                collectivite_in(&self.conn, s)?
                    .ok_or_else(|| {
                        StoreError::Invalid(format!(
                            "la collectivité {s} n'existe pas : créez-la d'abord"
                        ))
                    })?
                    .id,
            ),
            (None, true) => {
                return Err(StoreError::Invalid(format!(
                    "le rôle {} demande une collectivité (--collectivite SIRET)",
                    u.role.code()
                )))
            }
            (Some(_), false) => {
                return Err(StoreError::Invalid(
                    "un administrateur plate-forme n'est rattaché à aucune collectivité".into(),
                ))
            }
            (None, false) => None,
        };
        if u.login.trim().is_empty() {
            return Err(StoreError::Invalid("l'identifiant est vide".into()));
        }
        let exists: Option<i64> = self
            .conn
            .query_row(
                "SELECT id FROM utilisateur WHERE login = ?1",
                [&u.login],
                |r| r.get(0),
            )
            .optional()?;
        if exists.is_some() {
            return Err(StoreError::Invalid(format!(
                "l'identifiant {} est déjà pris",
                u.login
            )));
        }
        self.conn.execute(
            "INSERT INTO utilisateur (login, password_hash, role, collectivite_id, email, doit_changer, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                u.login,
                u.password_hash,
                u.role.code(),
                collectivite_id,
                u.email,
                u.doit_changer,
                now()
            ],
        )?;
        let id = self.conn.last_insert_rowid();
        Ok(self.utilisateur_where("u.id = ?1", &id)?.remove(0))
    }

    fn utilisateur(&mut self, login: &str) -> Result<Option<Utilisateur>> {
        Ok(self.utilisateur_where("u.login = ?1", &login)?.pop())
    }

    fn utilisateur_by_id(&mut self, id: i64) -> Result<Option<Utilisateur>> {
        Ok(self.utilisateur_where("u.id = ?1", &id)?.pop())
    }

    fn utilisateurs(&mut self) -> Result<Vec<Utilisateur>> {
        self.utilisateur_where("?1 = 1", &1)
    }

    fn purge_candidates(&mut self, what: PurgeKind, before: &str) -> Result<Vec<PurgeCandidate>> {
        // Received files: by the date they were received; logs: by the end of the import.
        let sql = match what {
            PurgeKind::FichierRecu => {
                "SELECT j.import_id, j.id, j.stored_path FROM job j \
                 WHERE j.state = 'fait' AND j.import_id IS NOT NULL AND j.received_at < ?1 \
                 AND NOT EXISTS (SELECT 1 FROM purge p WHERE p.import_id = j.import_id AND p.what = 'fichier_recu') \
                 ORDER BY j.id"
            }
            PurgeKind::Journaux => {
                "SELECT i.id, (SELECT j.id FROM job j WHERE j.import_id = i.id), '' FROM import i \
                 WHERE i.result <> 'en_cours' AND coalesce(i.finished_at, i.started_at) < ?1 \
                 AND NOT EXISTS (SELECT 1 FROM job j WHERE j.import_id = i.id AND j.state <> 'fait') \
                 AND NOT EXISTS (SELECT 1 FROM purge p WHERE p.import_id = i.id AND p.what = 'journaux') \
                 ORDER BY i.id"
            }
        };
        let mut st = self.conn.prepare_cached(sql)?;
        let rows = st
            .query_map([before], |r| {
                Ok(PurgeCandidate {
                    import_id: r.get(0)?,
                    job_id: r.get(1)?,
                    stored_path: r.get(2)?,
                })
            })?
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    fn record_purge(&mut self, import_id: i64, what: PurgeKind) -> Result<()> {
        self.conn.execute(
            "INSERT OR IGNORE INTO purge (import_id, what, purged_at) VALUES (?1, ?2, ?3)",
            params![import_id, what.code(), now()],
        )?;
        Ok(())
    }

    fn purges_of(&mut self, import_id: i64) -> Result<Vec<(PurgeKind, String)>> {
        let mut st = self
            .conn
            .prepare_cached("SELECT what, purged_at FROM purge WHERE import_id = ?1 ORDER BY id")?;
        let rows = st
            .query_map([import_id], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })?
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(rows
            .into_iter()
            .filter_map(|(w, at)| PurgeKind::parse(&w).map(|k| (k, at)))
            .collect())
    }

    fn add_audit(&mut self, e: &AuditEvent) -> Result<()> {
        self.conn.execute(
            "INSERT INTO audit (at, actor, action, detail, address) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![now(), e.actor, e.action, e.detail, e.address],
        )?;
        Ok(())
    }

    fn audit_page(&mut self, offset: u64, limit: u64) -> Result<(u64, Vec<AuditRow>)> {
        let total: i64 = self
            .conn
            .query_row("SELECT count(*) FROM audit", [], |r| r.get(0))?;
        let mut st = self.conn.prepare_cached(
            "SELECT id, at, actor, action, detail, address FROM audit ORDER BY id DESC LIMIT ?1 OFFSET ?2",
        )?;
        let rows = st
            .query_map(params![limit as i64, offset as i64], |r| {
                Ok(AuditRow {
                    id: r.get(0)?,
                    at: r.get(1)?,
                    event: AuditEvent {
                        actor: r.get(2)?,
                        action: r.get(3)?,
                        detail: r.get(4)?,
                        address: r.get(5)?,
                    },
                })
            })?
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok((total as u64, rows))
    }

    fn count_utilisateurs(&mut self) -> Result<u64> {
        let n: i64 = self
            .conn
            .query_row("SELECT count(*) FROM utilisateur", [], |r| r.get(0))?;
        Ok(n as u64)
    }

    fn set_utilisateur_password(&mut self, id: i64, hash: &str, doit_changer: bool) -> Result<()> {
        self.conn.execute(
            "UPDATE utilisateur SET password_hash = ?2, doit_changer = ?3 WHERE id = ?1",
            params![id, hash, doit_changer],
        )?;
        Ok(())
    }

    fn set_utilisateur_actif(&mut self, id: i64, actif: bool) -> Result<()> {
        self.conn.execute(
            "UPDATE utilisateur SET actif = ?2 WHERE id = ?1",
            params![id, actif],
        )?;
        if !actif {
            self.conn
                .execute("DELETE FROM session WHERE utilisateur_id = ?1", [id])?;
        }
        Ok(())
    }

    fn destinataires(&mut self, siret: &str, global: bool) -> Result<Vec<String>> {
        // A collectivité's log goes to its own users; a global CDG log to the CDG's admins.
        let sql = if global {
            "SELECT DISTINCT u.email FROM utilisateur u JOIN collectivite c ON c.id = u.collectivite_id \
             WHERE c.siret = ?1 AND u.role = 'cdg' AND u.actif = 1 AND u.email IS NOT NULL AND u.email <> '' ORDER BY 1"
        } else {
            "SELECT DISTINCT u.email FROM utilisateur u JOIN collectivite c ON c.id = u.collectivite_id \
             WHERE c.siret = ?1 AND u.role IN ('collectivite-admin', 'collectivite') AND u.actif = 1 \
             AND u.email IS NOT NULL AND u.email <> '' ORDER BY 1"
        };
        let mut stmt = self.conn.prepare_cached(sql)?;
        let rows = stmt.query_map([siret], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn create_session(
        &mut self,
        token_sha256: &str,
        user: i64,
        csrf: &str,
        expires_at: &str,
    ) -> Result<()> {
        let t = now();
        self.conn
            .execute("DELETE FROM session WHERE expires_at < ?1", [&t])?;
        self.conn.execute(
            "INSERT INTO session (token_sha256, utilisateur_id, csrf, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![token_sha256, user, csrf, t, expires_at],
        )?;
        Ok(())
    }

    fn session(&mut self, token_sha256: &str, now: &str) -> Result<Option<(Utilisateur, String)>> {
        let found: Option<(i64, String)> = self
            .conn
            .prepare_cached(
                "SELECT utilisateur_id, csrf FROM session WHERE token_sha256 = ?1 AND expires_at > ?2",
            )?
            .query_row(params![token_sha256, now], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        let Some((uid, csrf)) = found else {
            return Ok(None);
        };
        Ok(self
            .utilisateur_where("u.id = ?1", &uid)?
            .pop()
            .filter(|u| u.actif)
            .map(|u| (u, csrf)))
    }

    fn delete_session(&mut self, token_sha256: &str) -> Result<()> {
        self.conn.execute(
            "DELETE FROM session WHERE token_sha256 = ?1",
            [token_sha256],
        )?;
        Ok(())
    }

    fn delete_sessions_of(&mut self, user: i64, keep: Option<&str>) -> Result<()> {
        self.conn.execute(
            "DELETE FROM session WHERE utilisateur_id = ?1 AND token_sha256 IS NOT ?2",
            params![user, keep],
        )?;
        Ok(())
    }

    fn add_job(
        &mut self,
        emetteur: &str,
        file_name: &str,
        stored_path: &str,
        size: u64,
    ) -> Result<i64> {
        let t = now();
        self.conn.execute(
            "INSERT INTO job (emetteur, file_name, stored_path, size, received_at, state, updated_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, 'attente', ?5)",
            params![emetteur, file_name, stored_path, size as i64, t],
        )?;
        Ok(self.conn.last_insert_rowid())
    }

    fn next_job(&mut self) -> Result<Option<Job>> {
        Ok(self
            .job_where("state IN ('attente', 'en_cours') ORDER BY id LIMIT 1", &[])?
            .pop())
    }

    fn job(&mut self, id: i64) -> Result<Option<Job>> {
        Ok(self.job_where("id = ?1", &[&id])?.pop())
    }

    fn job_paths(&mut self) -> Result<Vec<String>> {
        let mut stmt = self.conn.prepare("SELECT stored_path FROM job")?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn set_job_state(&mut self, id: i64, state: &str, error: Option<&str>) -> Result<()> {
        let bump = i64::from(state == "en_cours");
        self.conn.execute(
            "UPDATE job SET state = ?2, last_error = coalesce(?3, last_error), attempts = attempts + ?4, updated_at = ?5 WHERE id = ?1",
            params![id, state, error, bump, now()],
        )?;
        Ok(())
    }

    fn finish_job(&mut self, id: i64, import_id: i64, sha256: &str) -> Result<()> {
        self.conn.execute(
            "UPDATE job SET state = 'fait', import_id = ?2, sha256 = ?3, updated_at = ?4 WHERE id = ?1",
            params![id, import_id, sha256, now()],
        )?;
        Ok(())
    }

    fn pending_jobs(&mut self) -> Result<u64> {
        let n: i64 = self.conn.query_row(
            "SELECT count(*) FROM job WHERE state IN ('attente', 'en_cours')",
            [],
            |r| r.get(0),
        )?;
        Ok(n as u64)
    }

    fn import_of_job(&mut self, job_id: i64) -> Result<Option<i64>> {
        Ok(self
            .conn
            .prepare_cached("SELECT id FROM import WHERE job_id = ?1")?
            .query_row([job_id], |r| r.get(0))
            .optional()?)
    }

    fn import(&mut self, id: i64) -> Result<Option<crate::ImportDetail>> {
        let row = self
            .conn
            .prepare_cached(&format!("SELECT {IMPORT_COLS} FROM import WHERE id = ?1"))?
            .query_row([id], |r| Ok(import_row(r)?.1))
            .optional()?;
        let Some(row) = row else { return Ok(None) };
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, collectivite_siret, global, complet_path, erreurs_path, errors, warnings, label \
             FROM import_log WHERE import_id = ?1 ORDER BY global, id",
        )?;
        let logs = stmt
            .query_map([id], |r| {
                Ok((
                    r.get(0)?,
                    ImportLog {
                        collectivite_siret: r.get(1)?,
                        global: r.get(2)?,
                        complet_path: r.get(3)?,
                        erreurs_path: r.get(4)?,
                        errors: r.get::<_, i64>(5)? as u64,
                        warnings: r.get::<_, i64>(6)? as u64,
                        label: r.get(7)?,
                    },
                ))
            })?
            .collect::<rusqlite::Result<_>>()?;
        Ok(Some((row, logs)))
    }

    fn suivi(&mut self, q: &SuiviQuery) -> Result<(Vec<SuiviRow>, u64)> {
        // Dates are stored as local `YYYY-MM-DDTHH:MM:SS`: the period is a text range.
        let du = q.du.clone();
        let au = format!("{}T99", q.au);
        let mut wheres: Vec<String> = vec!["l.started_at >= ?1".into(), "l.started_at < ?2".into()];
        let mut args: Vec<Box<dyn ToSql>> = vec![Box::new(du), Box::new(au)];
        match &q.scope {
            Scope::Tout => {}
            Scope::Cdg { id, siret } => {
                wheres.push(
                    "((l.global = 0 AND l.collectivite_siret IN (SELECT siret FROM collectivite WHERE id = ?3 OR cdg_id = ?3)) \
                     OR (l.global = 1 AND l.collectivite_siret = ?4))"
                        .into(),
                );
                args.push(Box::new(*id));
                args.push(Box::new(siret.clone()));
            }
            Scope::Collectivite { siret } => {
                wheres.push("l.global = 0 AND l.collectivite_siret = ?3".into());
                args.push(Box::new(siret.clone()));
            }
        }
        if let Some(t) = &q.type_fichier {
            let n = args.len() + 1;
            wheres.push(format!("l.type_fichier = ?{n}"));
            args.push(Box::new(t.clone()));
        }
        let filter = wheres.join(" AND ");
        let params: Vec<&dyn ToSql> = args.iter().map(|b| b.as_ref()).collect();
        let total: i64 = self
            .conn
            .prepare_cached(&format!("SELECT count(*) FROM import_log l WHERE {filter}"))?
            .query_row(params.as_slice(), |r| r.get(0))?;
        let n = args.len();
        let sql = format!(
            "SELECT l.id, l.import_id, l.type_fichier, l.started_at, l.label, l.collectivite_siret, c.nom, l.global, i.file_name \
             FROM import_log l JOIN import i ON i.id = l.import_id LEFT JOIN collectivite c ON c.siret = l.collectivite_siret \
             WHERE {filter} ORDER BY l.started_at DESC, l.id DESC LIMIT ?{} OFFSET ?{}",
            n + 1,
            n + 2
        );
        let limit = q.limit as i64;
        let offset = q.offset as i64;
        let mut all = params.clone();
        all.push(&limit);
        all.push(&offset);
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt
            .query_map(all.as_slice(), |r| {
                Ok(SuiviRow {
                    log_id: r.get(0)?,
                    import_id: r.get(1)?,
                    type_fichier: r.get(2)?,
                    started_at: r.get(3)?,
                    label: r.get(4)?,
                    collectivite_siret: r.get(5)?,
                    collectivite_nom: r.get(6)?,
                    global: r.get(7)?,
                    file_name: r.get(8)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        Ok((rows, total as u64))
    }

    fn enqueue_mail(&mut self, m: &NewMail) -> Result<()> {
        let att = serde_json::to_string(&m.attachments).expect("strings");
        self.conn.execute(
            "INSERT OR IGNORE INTO mail (import_id, recipient, subject, body, attachments, state, next_attempt_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, 'attente', ?6)",
            params![m.import_id, m.recipient, m.subject, m.body, att, now()],
        )?;
        Ok(())
    }

    fn due_mails(&mut self, now: &str, limit: usize) -> Result<Vec<Mail>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, import_id, recipient, subject, body, attachments, attempts FROM mail \
             WHERE state = 'attente' AND next_attempt_at <= ?1 ORDER BY next_attempt_at, id LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![now, limit as i64], |r| {
            let att: String = r.get(5)?;
            Ok(Mail {
                id: r.get(0)?,
                import_id: r.get(1)?,
                recipient: r.get(2)?,
                subject: r.get(3)?,
                body: r.get(4)?,
                attachments: serde_json::from_str(&att).unwrap_or_default(),
                attempts: r.get::<_, i64>(6)? as u64,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn mail_sent(&mut self, id: i64) -> Result<()> {
        self.conn.execute(
            "UPDATE mail SET state = 'envoye', sent_at = ?2, attempts = attempts + 1 WHERE id = ?1",
            params![id, now()],
        )?;
        Ok(())
    }

    fn mail_failed(&mut self, id: i64, error: &str, next: Option<&str>) -> Result<()> {
        self.conn.execute(
            "UPDATE mail SET attempts = attempts + 1, last_error = ?2, next_attempt_at = coalesce(?3, next_attempt_at), \
             state = CASE WHEN ?3 IS NULL THEN 'abandonne' ELSE 'attente' END WHERE id = ?1",
            params![id, error, next],
        )?;
        Ok(())
    }
}

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

    fn collectivite(&mut self, siret: &str) -> Result<Option<Collectivite>> {
        collectivite_in(self.conn, siret)
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
        let sql = format!("{} ORDER BY 1, 3", selects.join(" UNION ALL "));
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
