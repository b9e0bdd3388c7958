//! SQLite: imports: duplicates, the storage transaction of one file, the tracking table, one import's detail, retention.

#[allow(unused_imports)]
use super::*;

impl crate::ImportStore for SqliteStore {
    fn integrated_at(&mut self, sha256: &str) -> Result<Option<(i64, String)>> {
        Ok(self
            .conn
            .query_row(
                "SELECT id, finished_at FROM import WHERE sha256 = ?1 AND result = 'reussi' ORDER BY id LIMIT 1",
                [sha256],
                |r| Ok((r.get(0)?, r.get(1)?)),
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
        // One instance on SQLite: a job is not another's, but it may be integrated already.
        if let Some(job) = row.job_id {
            let done: Option<i64> = self
                .conn
                .query_row("SELECT id FROM import WHERE job_id = ?1", [job], |r| {
                    r.get(0)
                })
                .optional()?;
            if done.is_some() {
                let _ = self.conn.execute_batch("ROLLBACK");
                return Err(StoreError::JobTaken(job));
            }
        }
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
        let sql = q.sql(|i| format!("?{i}"));
        let params: Vec<&dyn ToSql> = sql.params.iter().map(|c| c as &dyn ToSql).collect();
        let total: i64 = self
            .conn
            .prepare_cached(&sql.count)?
            .query_row(&params[..sql.count_params], |r| r.get(0))?;
        let mut stmt = self.conn.prepare_cached(&sql.page)?;
        let rows = stmt
            .query_map(params.as_slice(), |r| {
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
                    rejeu_de: r.get(9)?,
                    result: crate::ImportResult::parse(&r.get::<_, String>(10)?)
                        .unwrap_or_default(),
                    errors: r.get::<_, i64>(11)? as u64,
                    emetteur: r.get(12)?,
                    doublon_de: r.get(13)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        Ok((rows, total as u64))
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
            // The quarantine's personal data: by the end of the import the records came from.
            PurgeKind::Rejets => {
                "SELECT i.id, NULL, '' FROM import i \
                 WHERE coalesce(i.finished_at, i.started_at) < ?1 \
                 AND EXISTS (SELECT 1 FROM rejet r WHERE r.import_id = i.id AND r.purge_le IS NULL) \
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
}
