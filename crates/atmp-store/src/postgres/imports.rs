//! PostgreSQL: imports — duplicates, the storage transaction of one file, the tracking
//! table, one import's detail, retention. This first version inserts row by row inside the
//! file's transaction (correct, not yet fast: the binary COPY path with id blocks is the next
//! step of issue 8).

use std::collections::HashMap;

use postgres::types::{IsNull, ToSql, Type};
use postgres::{Statement, Transaction};

use super::PgStore;
use crate::{
    Autorisation, Cell, Collectivite, FileTx, FindId, Found, ImportLog, ImportResult, ImportRow,
    InsertId, PurgeCandidate, PurgeKind, RecordCounts, Result, StoreError, SuiviQuery, SuiviRow,
    Table,
};

/// The columns of `import` read by [`import_row`].
const IMPORT_COLS: &str = "id, file_name, sha256, head_sha256, size, emetteur, type_fichier, mode, date_creation, cdg_siret, \
    started_at, finished_at, result, label, errors, warnings, counts, job_id";

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
        },
    ))
}

fn counts_text(c: &RecordCounts) -> String {
    serde_json::to_string(c).expect("plain numbers")
}

fn insert_import(c: &mut impl postgres::GenericClient, row: &ImportRow) -> Result<i64> {
    Ok(c.query_one(
        "INSERT INTO import (file_name, sha256, size, emetteur, type_fichier, mode, date_creation, cdg_siret, started_at, finished_at, result, label, errors, warnings, counts, head_sha256, job_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17) RETURNING id",
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
        ],
    )?
    .get(0))
}

fn insert_logs(
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
fn cell_of(r: &postgres::Row, i: usize) -> Cell {
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
    fn integrated_at(&mut self, sha256: &str) -> Result<Option<String>> {
        Ok(self
            .client
            .query_opt(
                "SELECT finished_at FROM import WHERE sha256 = $1 AND result = 'reussi' ORDER BY id LIMIT 1",
                &[&sha256],
            )?
            .and_then(|r| r.get(0)))
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
        let columns = &self.columns;
        let mut tx = self.client.transaction()?;
        let import_id = insert_import(&mut tx, row)?;
        Ok(Box::new(PgFileTx {
            tx,
            columns,
            import_id,
            stmts: Vec::new(),
            finds: Vec::new(),
            dossiers: Vec::new(),
        }))
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

/// A part of a dossier statement: a table and the columns read from it.
type DossierPart = (Table, &'static [&'static str]);

/// One file's storage transaction: dropped without `commit`, it rolls back.
struct PgFileTx<'a> {
    tx: Transaction<'a>,
    /// (table → column → SQL type) of the integrated tables.
    columns: &'a HashMap<&'static str, HashMap<String, Type>>,
    import_id: i64,
    stmts: Vec<Statement>,
    /// For each find: (SQL before the key, its key columns, a statement per pattern of null
    /// keys). `col IS NOT DISTINCT FROM $n` cannot use an index on PostgreSQL (each find would
    /// scan the collectivité's agents: quadratic), so `col = $n` or `col IS NULL` is chosen
    /// by the values, and each pattern prepared once.
    finds: Vec<(String, Vec<&'static str>, HashMap<u64, Statement>)>,
    /// For each dossier statement: its index and each part's (table, columns).
    dossiers: Vec<(usize, Vec<DossierPart>)>,
}

impl PgFileTx<'_> {
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
}

impl FileTx for PgFileTx<'_> {
    fn import_id(&self) -> i64 {
        self.import_id
    }

    fn collectivite(&mut self, siret: &str) -> Result<Option<Collectivite>> {
        Ok(self
            .tx
            .query_opt(
                "SELECT c.id, c.siret, c.nom, p.siret FROM collectivite c LEFT JOIN collectivite p ON p.id = c.cdg_id WHERE c.siret = $1",
                &[&siret],
            )?
            .map(|r| Collectivite {
                id: r.get(0),
                siret: r.get(1),
                nom: r.get(2),
                cdg_siret: r.get(3),
            }))
    }

    fn autorisation(
        &mut self,
        emetteur: &str,
        collectivite_id: i64,
    ) -> Result<Option<Autorisation>> {
        Ok(self
            .tx
            .query_opt(
                "SELECT a.statut FROM autorisation a JOIN emetteur e ON e.id = a.emetteur_id WHERE e.code = $1 AND a.collectivite_id = $2",
                &[&emetteur, &collectivite_id],
            )?
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
        let mut sql = String::from("SELECT id");
        for w in want {
            sql.push_str(", ");
            sql.push_str(w);
        }
        sql.push_str(&format!(
            " FROM {} WHERE {} = $1",
            table.name(),
            table.parent_column()
        ));
        self.finds.push((sql, key.to_vec(), HashMap::new()));
        Ok(FindId(self.finds.len() - 1))
    }

    fn prepare_insert(&mut self, table: Table, cols: &[&'static str]) -> Result<InsertId> {
        self.check_cols(table, cols)?;
        let mut names = vec![table.parent_column(), "import_id"];
        names.extend_from_slice(cols);
        let placeholders: Vec<String> = (1..=names.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "INSERT INTO {} ({}) VALUES ({}) RETURNING id",
            table.name(),
            names.join(", "),
            placeholders.join(", ")
        );
        let st = self.tx.prepare(&sql)?;
        self.stmts.push(st);
        Ok(InsertId(self.stmts.len() - 1))
    }

    fn find(&mut self, id: FindId, parent: i64, key: &[Cell]) -> Result<Option<Found>> {
        let mask = key
            .iter()
            .enumerate()
            .filter(|(_, c)| matches!(c, Cell::Null))
            .fold(0u64, |m, (i, _)| m | 1 << i);
        let (head, cols, by_mask) = &mut self.finds[id.0];
        let st = match by_mask.get(&mask) {
            Some(st) => st.clone(),
            None => {
                let mut sql = head.clone();
                let mut n = 1;
                for (i, k) in cols.iter().enumerate() {
                    if mask & 1 << i != 0 {
                        sql.push_str(&format!(" AND {k} IS NULL"));
                    } else {
                        n += 1;
                        sql.push_str(&format!(" AND {k} = ${n}"));
                    }
                }
                sql.push_str(" ORDER BY id LIMIT 1");
                let st = self.tx.prepare(&sql)?;
                by_mask.insert(mask, st.clone());
                st
            }
        };
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&parent];
        params.extend(
            key.iter()
                .filter(|c| !matches!(c, Cell::Null))
                .map(|c| c as &(dyn ToSql + Sync)),
        );
        Ok(self.tx.query_opt(&st, &params)?.map(|r| Found {
            id: r.get(0),
            cells: (1..r.len()).map(|i| cell_of(&r, i)).collect(),
        }))
    }

    fn prepare_dossier(&mut self, parts: &[(Table, &'static [&'static str])]) -> Result<FindId> {
        // Every column read as text in the UNION (its branches have different types), then
        // typed again from the table's own column types.
        let width = parts.iter().map(|(_, w)| w.len()).max().unwrap_or(0);
        let mut selects = Vec::new();
        for (i, (table, want)) in parts.iter().enumerate() {
            self.check_cols(*table, want)?;
            let mut cols: Vec<String> = want.iter().map(|c| format!("CAST({c} AS TEXT)")).collect();
            cols.resize(width, "CAST(NULL AS TEXT)".to_string());
            let filter = match table {
                Table::Evenement => "agent_id = $1",
                Table::Service | Table::Agent => {
                    return Err(StoreError::Invalid(
                        "pas de dossier pour cette table".into(),
                    ))
                }
                _ => "evenement_id IN (SELECT id FROM evenement WHERE agent_id = $1)",
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
        let st = self.tx.prepare(&sql)?;
        self.stmts.push(st);
        self.dossiers.push((self.stmts.len() - 1, parts.to_vec()));
        Ok(FindId(self.stmts.len() - 1))
    }

    fn dossier(&mut self, id: FindId, agent_id: i64) -> Result<Vec<(usize, i64, Found)>> {
        let parts = self
            .dossiers
            .iter()
            .find(|(i, _)| *i == id.0)
            .expect("a prepared dossier")
            .1
            .clone();
        let st = self.stmts[id.0].clone();
        let mut out = Vec::new();
        for r in self.tx.query(&st, &[&agent_id])? {
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
        Ok(out)
    }

    fn insert(&mut self, id: InsertId, parent: i64, cells: &[Cell]) -> Result<i64> {
        let st = self.stmts[id.0].clone();
        let import_id = self.import_id;
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&parent, &import_id];
        params.extend(cells.iter().map(|c| c as &(dyn ToSql + Sync)));
        Ok(self.tx.query_one(&st, &params)?.get(0))
    }

    fn service_code(&mut self, service_id: i64) -> Result<Option<String>> {
        Ok(self
            .tx
            .query_opt("SELECT code FROM service WHERE id = $1", &[&service_id])?
            .map(|r| r.get(0)))
    }

    fn commit(mut self: Box<Self>, row: &ImportRow, logs: &[ImportLog]) -> Result<()> {
        let import_id = self.import_id;
        self.tx.execute(
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
        insert_logs(&mut self.tx, import_id, row, logs)?;
        let PgFileTx { tx, .. } = *self;
        tx.commit()?;
        Ok(())
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
