//! PostgreSQL: imports — duplicates, the tracking table, one import's detail, retention; the
//! storage transaction of one file is in `file_tx.rs`.

use std::collections::HashMap;

use postgres::types::{IsNull, ToSql, Type};

use super::file_tx::{FileConn, PgFileTx};
use super::PgStore;
use crate::{
    Cell, FileTx, ImportLog, ImportResult, ImportRow, PurgeCandidate, PurgeKind, RecordCounts,
    Result, StoreError, SuiviQuery, SuiviRow, Table,
};

/// The columns of `import` read by [`import_row`].
const IMPORT_COLS: &str = "id, file_name, sha256, head_sha256, size, emetteur, type_fichier, mode, date_creation, cdg_siret, \
    started_at, finished_at, result, label, errors, warnings, counts, job_id, rejeu_de, doublon_de";

fn import_row(r: &postgres::Row) -> Result<(i64, ImportRow)> {
    let result: String = r.get(12);
    let counts: String = r.get(16);
    Ok((
        r.get(0),
        ImportRow {
            file_name: r.get(1),
            sha256: r.get(2),
            head_sha256: r.get(3),
            size: r.get::<_, i64>(4) as u64,
            emetteur: r.get(5),
            type_fichier: r.get(6),
            mode: r.get(7),
            date_creation: r.get(8),
            cdg_siret: r.get(9),
            started_at: r.get(10),
            finished_at: r.get(11),
            result: ImportResult::parse(&result).ok_or_else(|| {
                StoreError::Invalid(format!("résultat d'import inconnu : {result}"))
            })?,
            label: r.get(13),
            errors: r.get::<_, i64>(14) as u64,
            warnings: r.get::<_, i64>(15) as u64,
            counts: serde_json::from_str::<RecordCounts>(&counts)
                .map_err(|e| StoreError::Invalid(format!("compteurs illisibles : {e}")))?,
            job_id: r.get(17),
            rejeu_de: r.get(18),
            doublon_de: r.get(19),
        },
    ))
}

pub(super) fn counts_text(c: &RecordCounts) -> String {
    serde_json::to_string(c).expect("plain numbers")
}

fn insert_import(c: &mut impl postgres::GenericClient, row: &ImportRow) -> Result<i64> {
    Ok(c.query_one(
        "INSERT INTO import (file_name, sha256, size, emetteur, type_fichier, mode, date_creation, cdg_siret, started_at, finished_at, result, label, errors, warnings, counts, head_sha256, job_id, rejeu_de, doublon_de) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19) RETURNING id",
        &[
            &row.file_name,
            &row.sha256,
            &(row.size as i64),
            &row.emetteur,
            &row.type_fichier,
            &row.mode,
            &row.date_creation,
            &row.cdg_siret,
            &row.started_at,
            &row.finished_at,
            &row.result.code(),
            &row.label,
            &(row.errors as i64),
            &(row.warnings as i64),
            &counts_text(&row.counts),
            &row.head_sha256,
            &row.job_id,
            &row.rejeu_de,
            &row.doublon_de,
        ],
    )?
    .get(0))
}

pub(super) fn insert_logs(
    c: &mut impl postgres::GenericClient,
    import_id: i64,
    row: &ImportRow,
    logs: &[ImportLog],
) -> Result<()> {
    let st = c.prepare(
        "INSERT INTO import_log (import_id, collectivite_siret, global, complet_path, erreurs_path, errors, warnings, label, started_at, type_fichier) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )?;
    for l in logs {
        c.execute(
            &st,
            &[
                &import_id,
                &l.collectivite_siret,
                &i64::from(l.global),
                &l.complet_path,
                &l.erreurs_path,
                &(l.errors as i64),
                &(l.warnings as i64),
                &l.label,
                &row.started_at,
                &row.type_fichier,
            ],
        )?;
    }
    Ok(())
}

/// A stored value bound to a column of whatever type the statement says.
impl ToSql for Cell {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut postgres::types::private::BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Cell::Null => Ok(IsNull::Yes),
            Cell::Int(i) if *ty == Type::INT8 => i.to_sql(ty, out),
            Cell::Int(i) if *ty == Type::FLOAT8 => (*i as f64).to_sql(ty, out),
            Cell::Int(i) => i.to_string().to_sql(ty, out),
            Cell::Real(r) if *ty == Type::FLOAT8 => r.to_sql(ty, out),
            Cell::Real(r) => r.to_string().to_sql(ty, out),
            Cell::Text(t) if *ty == Type::INT8 => t
                .parse::<i64>()
                .map_err(|e| format!("« {t} » n'est pas un entier : {e}"))?
                .to_sql(ty, out),
            Cell::Text(t) if *ty == Type::FLOAT8 => t
                .parse::<f64>()
                .map_err(|e| format!("« {t} » n'est pas un nombre : {e}"))?
                .to_sql(ty, out),
            Cell::Text(t) => t.to_sql(ty, out),
        }
    }

    fn accepts(ty: &Type) -> bool {
        [Type::INT8, Type::FLOAT8, Type::TEXT, Type::VARCHAR].contains(ty)
    }

    postgres::types::to_sql_checked!();
}

/// A cell read from a row, by the column's type.
pub(super) fn cell_of(r: &postgres::Row, i: usize) -> Cell {
    let ty = r.columns()[i].type_();
    if *ty == Type::INT8 {
        r.get::<_, Option<i64>>(i).map_or(Cell::Null, Cell::Int)
    } else if *ty == Type::INT4 {
        r.get::<_, Option<i32>>(i)
            .map_or(Cell::Null, |v| Cell::Int(v.into()))
    } else if *ty == Type::FLOAT8 {
        r.get::<_, Option<f64>>(i).map_or(Cell::Null, Cell::Real)
    } else {
        r.get::<_, Option<String>>(i).map_or(Cell::Null, Cell::Text)
    }
}

impl crate::ImportStore for PgStore {
    fn integrated_at(&mut self, sha256: &str) -> Result<Option<(i64, String)>> {
        Ok(self
            .client
            .query_opt(
                "SELECT id, finished_at FROM import WHERE sha256 = $1 AND result = 'reussi' ORDER BY id LIMIT 1",
                &[&sha256],
            )?
            .and_then(|r| Some((r.get(0), r.get::<_, Option<String>>(1)?))))
    }

    fn maybe_integrated(&mut self, head_sha256: &str, size: u64) -> Result<bool> {
        let n: i64 = self
            .client
            .query_one(
                "SELECT count(*) FROM import WHERE head_sha256 = $1 AND size = $2 AND result = 'reussi'",
                &[&head_sha256, &(size as i64)],
            )?
            .get(0);
        Ok(n > 0)
    }

    fn record_import(&mut self, row: &ImportRow, logs: &[ImportLog]) -> Result<i64> {
        let mut tx = self.client.transaction()?;
        let id = insert_import(&mut tx, row)?;
        insert_logs(&mut tx, id, row, logs)?;
        tx.commit()?;
        Ok(id)
    }

    fn imports(&mut self) -> Result<Vec<(i64, ImportRow)>> {
        self.client
            .query(
                format!("SELECT {IMPORT_COLS} FROM import ORDER BY id DESC").as_str(),
                &[],
            )?
            .iter()
            .map(import_row)
            .collect()
    }

    fn count(&mut self, table: Table) -> Result<u64> {
        let n: i64 = self
            .client
            .query_one(
                format!("SELECT count(*) FROM {}", table.name()).as_str(),
                &[],
            )?
            .get(0);
        Ok(n as u64)
    }

    fn begin_file<'a>(&'a mut self, row: &ImportRow) -> Result<Box<dyn FileTx + 'a>> {
        let PgStore {
            client,
            columns,
            flush_rows,
            url,
            file_conn,
            ..
        } = self;
        let mut conn = FileConn::open(file_conn, url)?;
        let row = row.clone();
        let import_id = conn.call(move |tx| {
            // The claim of the job is the file transaction's own row lock: held until commit
            // or rollback, gone at once if this process dies. Another instance that holds it,
            // or an import already made, means the job is not this one's.
            if let Some(job) = row.job_id {
                let mine = tx
                    .query_opt(
                        "SELECT id FROM job WHERE id = $1 FOR NO KEY UPDATE SKIP LOCKED",
                        &[&job],
                    )?
                    .is_some();
                let done = tx
                    .query_opt("SELECT id FROM import WHERE job_id = $1", &[&job])?
                    .is_some();
                if !mine || done {
                    return Err(StoreError::JobTaken(job));
                }
            }
            insert_import(tx, &row)
        })?;
        Ok(Box::new(PgFileTx::new(
            conn,
            client,
            columns,
            import_id,
            *flush_rows,
        )))
    }

    fn import(&mut self, id: i64) -> Result<Option<crate::ImportDetail>> {
        let Some(r) = self.client.query_opt(
            format!("SELECT {IMPORT_COLS} FROM import WHERE id = $1").as_str(),
            &[&id],
        )?
        else {
            return Ok(None);
        };
        let row = import_row(&r)?.1;
        let logs = self
            .client
            .query(
                "SELECT id, collectivite_siret, global, complet_path, erreurs_path, errors, warnings, label \
                 FROM import_log WHERE import_id = $1 ORDER BY global, id",
                &[&id],
            )?
            .iter()
            .map(|r| {
                (
                    r.get(0),
                    ImportLog {
                        collectivite_siret: r.get(1),
                        global: r.get::<_, i64>(2) != 0,
                        complet_path: r.get(3),
                        erreurs_path: r.get(4),
                        errors: r.get::<_, i64>(5) as u64,
                        warnings: r.get::<_, i64>(6) as u64,
                        label: r.get(7),
                    },
                )
            })
            .collect();
        Ok(Some((row, logs)))
    }

    fn suivi(&mut self, q: &SuiviQuery) -> Result<(Vec<SuiviRow>, u64)> {
        let sql = q.sql(|i| format!("${i}"));
        let params: Vec<&(dyn ToSql + Sync)> = sql
            .params
            .iter()
            .map(|c| c as &(dyn ToSql + Sync))
            .collect();
        let total: i64 = self
            .client
            .query_one(sql.count.as_str(), &params[..sql.count_params])?
            .get(0);
        let rows = self
            .client
            .query(sql.page.as_str(), &params)?
            .iter()
            .map(|r| SuiviRow {
                log_id: r.get(0),
                import_id: r.get(1),
                type_fichier: r.get(2),
                started_at: r.get(3),
                label: r.get(4),
                collectivite_siret: r.get(5),
                collectivite_nom: r.get(6),
                global: r.get::<_, i64>(7) != 0,
                file_name: r.get(8),
                rejeu_de: r.get(9),
                result: ImportResult::parse(r.get(10)).unwrap_or_default(),
                errors: r.get::<_, i64>(11) as u64,
                emetteur: r.get(12),
                doublon_de: r.get(13),
            })
            .collect();
        Ok((rows, total as u64))
    }

    fn purge_candidates(&mut self, what: PurgeKind, before: &str) -> Result<Vec<PurgeCandidate>> {
        let sql = match what {
            PurgeKind::FichierRecu => {
                "SELECT j.import_id, j.id, j.stored_path FROM job j \
                 WHERE j.state = 'fait' AND j.import_id IS NOT NULL AND j.received_at < $1 \
                 AND NOT EXISTS (SELECT 1 FROM purge p WHERE p.import_id = j.import_id AND p.what = 'fichier_recu') \
                 ORDER BY j.id"
            }
            PurgeKind::Journaux => {
                "SELECT i.id, (SELECT j.id FROM job j WHERE j.import_id = i.id), '' FROM import i \
                 WHERE i.result <> 'en_cours' AND coalesce(i.finished_at, i.started_at) < $1 \
                 AND NOT EXISTS (SELECT 1 FROM job j WHERE j.import_id = i.id AND j.state <> 'fait') \
                 AND NOT EXISTS (SELECT 1 FROM purge p WHERE p.import_id = i.id AND p.what = 'journaux') \
                 ORDER BY i.id"
            }
            // The quarantine's personal data: by the end of the import the records came from.
            PurgeKind::Rejets => {
                "SELECT i.id, NULL::bigint, '' FROM import i \
                 WHERE coalesce(i.finished_at, i.started_at) < $1 \
                 AND EXISTS (SELECT 1 FROM rejet r WHERE r.import_id = i.id AND r.purge_le IS NULL) \
                 ORDER BY i.id"
            }
        };
        Ok(self
            .client
            .query(sql, &[&before])?
            .iter()
            .map(|r| PurgeCandidate {
                import_id: r.get(0),
                job_id: r.get(1),
                stored_path: r.get(2),
            })
            .collect())
    }

    fn record_purge(&mut self, import_id: i64, what: PurgeKind) -> Result<()> {
        self.client.execute(
            "INSERT INTO purge (import_id, what, purged_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            &[&import_id, &what.code(), &crate::now()],
        )?;
        Ok(())
    }

    fn purges_of(&mut self, import_id: i64) -> Result<Vec<(PurgeKind, String)>> {
        Ok(self
            .client
            .query(
                "SELECT what, purged_at FROM purge WHERE import_id = $1 ORDER BY id",
                &[&import_id],
            )?
            .iter()
            .filter_map(|r| {
                let w: String = r.get(0);
                PurgeKind::parse(&w).map(|k| (k, r.get(1)))
            })
            .collect())
    }
}

/// The types of the integrated tables' columns, read once at connection.
pub(super) fn column_types(
    client: &mut postgres::Client,
) -> Result<HashMap<&'static str, HashMap<String, Type>>> {
    let mut out = HashMap::new();
    for t in Table::ALL {
        let st = client.prepare(format!("SELECT * FROM {} LIMIT 0", t.name()).as_str())?;
        let cols: HashMap<String, Type> = st
            .columns()
            .iter()
            .map(|c| (c.name().to_string(), c.type_().clone()))
            .collect();
        out.insert(t.name(), cols);
    }
    Ok(out)
}
