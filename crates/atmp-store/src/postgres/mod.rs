//! The PostgreSQL backend. Every concern is implemented — reference data, imports with the
//! file transaction (`imports.rs`, and its bulk path `file_tx.rs`: binary COPY of buffered
//! rows, ids from sequence blocks, the job claimed by the transaction), accounts and sessions,
//! the job queue, the mail outbox, the audit trail, TLS (`connect.rs`) and the files kept as
//! large objects (`files.rs`) — and tested against SQLite with the same calls
//! (`atmp-store/tests/story.rs`, `atmp-integrator/tests/backends.rs`).
//!
//! The synchronous `postgres` client (rust-postgres): the store's traits are synchronous, and
//! its callers use it from plain threads or `spawn_blocking`, never from inside a tokio task.
//! Migrations are applied under a transaction-level advisory lock, so that several
//! instances starting at once apply each one once.

use std::collections::{HashMap, HashSet};

mod connect;
mod file_tx;
mod files;
mod imports;
mod rejets;

pub use connect::redact;
pub use files::PgFiles;

use atmp_model::{Nomenclature, NomenclatureEntry, Siret};
use postgres::Client;

use crate::{
    now, AuditEvent, AuditRow, Autorisation, Collectivite, Emetteur, Job, JobState, Mail, NewMail,
    NewUtilisateur, Result, Role, StoreError, Utilisateur, POSTGRES_MIGRATIONS,
};

/// A fixed key of `pg_advisory_xact_lock` for the migrations ("atmp" in ASCII).
const MIGRATION_LOCK: i64 = 0x61746d70;

impl From<postgres::Error> for StoreError {
    fn from(e: postgres::Error) -> Self {
        // The server's own message, or the cause of a connection failure (TLS, refused…),
        // which the client's display leaves out.
        let mut msg = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            msg.push_str(" : ");
            msg.push_str(&s.to_string());
            src = s.source();
        }
        StoreError::Postgres(msg)
    }
}

/// `c.id, c.siret, c.nom, p.siret` as a collectivité.
pub(crate) fn collectivite_row(r: &postgres::Row) -> Result<Collectivite> {
    Ok(Collectivite {
        id: r.get(0),
        siret: crate::stored_siret(r.get(1))?,
        nom: r.get(2),
        cdg_siret: r
            .get::<_, Option<&str>>(3)
            .map(crate::stored_siret)
            .transpose()?,
    })
}

/// A connection to the platform's base on PostgreSQL.
pub struct PgStore {
    client: Client,
    /// (table → column → SQL type) of the integrated tables: checks column names and types
    /// the values read back from a dossier.
    columns: HashMap<&'static str, HashMap<String, postgres::types::Type>>,
    /// Rows a file transaction buffers before sending them (see `file_tx.rs`).
    flush_rows: usize,
    /// The URL (a file's transaction runs on a second connection, opened when first needed).
    url: String,
    /// That second connection, between files.
    file_conn: Option<Client>,
    /// `LISTEN atmp_jobs` was sent on this connection.
    listening: bool,
}

impl PgStore {
    /// Sets how many rows a file transaction buffers before it sends them by COPY (20 000
    /// by default). The tests set it to 1, 2, 3… so that every read meets rows on both
    /// sides of a flush; nothing else needs it.
    pub fn set_flush_rows(&mut self, n: usize) {
        self.flush_rows = n.max(1);
    }

    /// Connects and brings the schema up to date.
    pub fn connect(url: &str) -> Result<PgStore> {
        let client = connect::connect(url)?;
        let mut s = PgStore {
            client,
            columns: HashMap::new(),
            flush_rows: file_tx::FLUSH_ROWS,
            url: url.to_string(),
            file_conn: None,
            listening: false,
        };
        s.migrate()?;
        s.columns = imports::column_types(&mut s.client)?;
        Ok(s)
    }

    fn migrate(&mut self) -> Result<()> {
        let mut tx = self.client.transaction()?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
        // Created when missing (checked first: `IF NOT EXISTS` would send a NOTICE each time).
        let exists: bool = tx
            .query_one("SELECT to_regclass('atmp_migration') IS NOT NULL", &[])?
            .get(0);
        if !exists {
            tx.batch_execute(
                "CREATE TABLE atmp_migration (version BIGINT PRIMARY KEY, applied_at TEXT NOT NULL)",
            )?;
        }
        let applied: i64 = tx
            .query_one("SELECT coalesce(max(version), 0) FROM atmp_migration", &[])?
            .get(0);
        for (i, sql) in POSTGRES_MIGRATIONS
            .iter()
            .enumerate()
            .skip(applied as usize)
        {
            tx.batch_execute(sql)?;
            tx.execute(
                "INSERT INTO atmp_migration (version, applied_at) VALUES ($1, $2)",
                &[&((i + 1) as i64), &now()],
            )?;
        }
        // The built-in nomenclatures, once, as on SQLite (under the same lock).
        let n: i64 = tx
            .query_one("SELECT count(*) FROM nomenclature", &[])?
            .get(0);
        if n == 0 {
            let entries = atmp_model::parse_csv(atmp_model::BUILTIN_CSV)
                .map_err(|e| StoreError::Invalid(format!("{e:?}")))?;
            let st = tx.prepare(
                "INSERT INTO nomenclature (nomenclature, code, libelle) VALUES ($1, $2, $3)",
            )?;
            for e in &entries {
                tx.execute(&st, &[&e.nomenclature.name(), &e.code, &e.libelle])?;
            }
            tx.execute(
                "INSERT INTO nomenclature_version (version, sha256, entries, imported_at) VALUES ($1, 'livree', $2, $3)",
                &[&atmp_model::BUILTIN_VERSION, &(entries.len() as i64), &now()],
            )?;
        }
        if applied as usize > POSTGRES_MIGRATIONS.len() {
            return Err(StoreError::Invalid(format!(
                "la base est en version {applied}, plus récente que ce programme ({}) : mettez atmp à jour",
                POSTGRES_MIGRATIONS.len()
            )));
        }
        tx.commit()?;
        Ok(())
    }

    fn collectivite_where(
        &mut self,
        clause: &str,
        arg: &(dyn postgres::types::ToSql + Sync),
    ) -> Result<Vec<Collectivite>> {
        let sql = format!(
            "SELECT c.id, c.siret, c.nom, p.siret FROM collectivite c LEFT JOIN collectivite p ON p.id = c.cdg_id {clause} ORDER BY c.siret"
        );
        self.client
            .query(sql.as_str(), &[arg])?
            .iter()
            .map(collectivite_row)
            .collect()
    }

    fn collectivite_in(&mut self, siret: &str) -> Result<Option<Collectivite>> {
        Ok(self
            .collectivite_where("WHERE c.siret = $1", &siret)?
            .into_iter()
            .next())
    }

    fn emetteur_row(&mut self, code: &str) -> Result<Option<Emetteur>> {
        let Some(r) = self.client.query_opt(
            "SELECT id, code, nom, actif, derniere_connexion FROM emetteur WHERE code = $1",
            &[&code],
        )?
        else {
            return Ok(None);
        };
        let id: i64 = r.get(0);
        let autorisations = self
            .client
            .query(
                "SELECT c.siret, a.statut, a.date_decision, a.reference FROM autorisation a JOIN collectivite c ON c.id = a.collectivite_id \
                 WHERE a.emetteur_id = $1 ORDER BY c.siret",
                &[&id],
            )?
            .iter()
            .map(|a| {
                let s: String = a.get(1);
                (
                    a.get(0),
                    Autorisation::parse(&s).unwrap_or(Autorisation::Refusee),
                    a.get(2),
                    a.get(3),
                )
            })
            .collect();
        Ok(Some(Emetteur {
            id,
            code: r.get(1),
            nom: r.get(2),
            autorisations,
            actif: r.get::<_, i64>(3) != 0,
            derniere_connexion: r.get(4),
        }))
    }
}

impl PgStore {
    fn utilisateur_where(
        &mut self,
        clause: &str,
        arg: &(dyn postgres::types::ToSql + Sync),
    ) -> Result<Vec<Utilisateur>> {
        let sql = format!(
            "SELECT u.id, u.login, u.password_hash, u.role, u.collectivite_id, c.siret, c.nom, u.email, u.doit_changer, u.actif \
             FROM utilisateur u LEFT JOIN collectivite c ON c.id = u.collectivite_id WHERE {clause} ORDER BY u.login"
        );
        Ok(self
            .client
            .query(sql.as_str(), &[arg])?
            .iter()
            .map(|r| {
                let role: String = r.get(3);
                Utilisateur {
                    id: r.get(0),
                    login: r.get(1),
                    password_hash: r.get(2),
                    role: Role::parse(&role).unwrap_or(Role::Collectivite),
                    collectivite_id: r.get(4),
                    collectivite_siret: r.get(5),
                    collectivite_nom: r.get(6),
                    email: r.get(7),
                    doit_changer: r.get::<_, i64>(8) != 0,
                    actif: r.get::<_, i64>(9) != 0,
                }
            })
            .collect())
    }
}

impl crate::AccountStore for PgStore {
    fn add_utilisateur(&mut self, u: &NewUtilisateur) -> Result<Utilisateur> {
        let collectivite_id = crate::rules::new_utilisateur(u, |s| self.collectivite_in(s))?;
        // The unique index decides between two instances creating the same login at once.
        let id: Option<i64> = self
            .client
            .query_opt(
                "INSERT INTO utilisateur (login, password_hash, role, collectivite_id, email, doit_changer, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (login) DO NOTHING RETURNING id",
                &[
                    &u.login,
                    &u.password_hash,
                    &u.role.code(),
                    &collectivite_id,
                    &u.email,
                    &i64::from(u.doit_changer),
                    &now(),
                ],
            )?
            .map(|r| r.get(0));
        let Some(id) = id else {
            return Err(StoreError::Invalid(format!(
                "l'identifiant {} est déjà pris",
                u.login
            )));
        };
        Ok(self.utilisateur_where("u.id = $1", &id)?.remove(0))
    }

    fn utilisateur(&mut self, login: &str) -> Result<Option<Utilisateur>> {
        Ok(self.utilisateur_where("u.login = $1", &login)?.pop())
    }

    fn utilisateur_by_id(&mut self, id: i64) -> Result<Option<Utilisateur>> {
        Ok(self.utilisateur_where("u.id = $1", &id)?.pop())
    }

    fn utilisateurs(&mut self) -> Result<Vec<Utilisateur>> {
        self.utilisateur_where("$1 = 1", &1i32)
    }

    fn count_utilisateurs(&mut self) -> Result<u64> {
        let n: i64 = self
            .client
            .query_one("SELECT count(*) FROM utilisateur", &[])?
            .get(0);
        Ok(n as u64)
    }

    fn create_password_link(&mut self, token_hash: &str, user: i64, expires: &str) -> Result<()> {
        self.client.execute(
            "INSERT INTO lien_mot_de_passe (token_sha256, utilisateur_id, expires_at) VALUES ($1, $2, $3)",
            &[&token_hash, &user, &expires],
        )?;
        Ok(())
    }

    fn password_link(&mut self, token_hash: &str, now: &str) -> Result<Option<i64>> {
        Ok(self
            .client
            .query_opt(
                "SELECT utilisateur_id FROM lien_mot_de_passe WHERE token_sha256 = $1 AND expires_at > $2",
                &[&token_hash, &now],
            )?
            .map(|r| r.get(0)))
    }

    fn use_password_link(&mut self, token_hash: &str, now: &str) -> Result<Option<i64>> {
        let mut tx = self.client.transaction()?;
        let user: Option<(i64, String)> = tx
            .query_opt(
                "DELETE FROM lien_mot_de_passe WHERE token_sha256 = $1 RETURNING utilisateur_id, expires_at",
                &[&token_hash],
            )?
            .map(|r| (r.get(0), r.get(1)));
        if let Some((u, _)) = &user {
            tx.execute(
                "DELETE FROM lien_mot_de_passe WHERE utilisateur_id = $1",
                &[u],
            )?;
        }
        tx.commit()?;
        Ok(user.filter(|(_, exp)| exp.as_str() > now).map(|(u, _)| u))
    }

    fn set_utilisateur_password(&mut self, id: i64, hash: &str, doit_changer: bool) -> Result<()> {
        self.client.execute(
            "UPDATE utilisateur SET password_hash = $2, doit_changer = $3 WHERE id = $1",
            &[&id, &hash, &i64::from(doit_changer)],
        )?;
        Ok(())
    }

    fn set_utilisateur_actif(&mut self, id: i64, actif: bool) -> Result<()> {
        let mut tx = self.client.transaction()?;
        tx.execute(
            "UPDATE utilisateur SET actif = $2 WHERE id = $1",
            &[&id, &i64::from(actif)],
        )?;
        if !actif {
            tx.execute("DELETE FROM session WHERE utilisateur_id = $1", &[&id])?;
        }
        tx.commit()?;
        Ok(())
    }

    fn create_session(
        &mut self,
        token_sha256: &str,
        user: i64,
        csrf: &str,
        expires_at: &str,
    ) -> Result<()> {
        let t = now();
        self.client
            .execute("DELETE FROM session WHERE expires_at < $1", &[&t])?;
        self.client.execute(
            "INSERT INTO session (token_sha256, utilisateur_id, csrf, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)",
            &[&token_sha256, &user, &csrf, &t, &expires_at],
        )?;
        Ok(())
    }

    fn session(&mut self, token_sha256: &str, now: &str) -> Result<Option<(Utilisateur, String)>> {
        let Some(r) = self.client.query_opt(
            "SELECT utilisateur_id, csrf FROM session WHERE token_sha256 = $1 AND expires_at > $2",
            &[&token_sha256, &now],
        )?
        else {
            return Ok(None);
        };
        let (uid, csrf): (i64, String) = (r.get(0), r.get(1));
        Ok(self
            .utilisateur_where("u.id = $1", &uid)?
            .pop()
            .filter(|u| u.actif)
            .map(|u| (u, csrf)))
    }

    fn delete_session(&mut self, token_sha256: &str) -> Result<()> {
        self.client.execute(
            "DELETE FROM session WHERE token_sha256 = $1",
            &[&token_sha256],
        )?;
        Ok(())
    }

    fn delete_sessions_of(&mut self, user: i64, keep: Option<&str>) -> Result<()> {
        self.client.execute(
            "DELETE FROM session WHERE utilisateur_id = $1 AND token_sha256 IS DISTINCT FROM $2",
            &[&user, &keep],
        )?;
        Ok(())
    }

    fn login_failures(&mut self, key: &str, since: &str) -> Result<u64> {
        Ok(self
            .client
            .query_opt(
                "SELECT failures FROM login_failure WHERE key = $1 AND first_at >= $2",
                &[&key, &since],
            )?
            .map_or(0, |r| r.get::<_, i64>(0) as u64))
    }

    fn record_login_failure(&mut self, key: &str, now: &str, since: &str) -> Result<u64> {
        self.client.execute(
            "DELETE FROM login_failure WHERE first_at < $1 AND key <> $2",
            &[&since, &key],
        )?;
        Ok(self
            .client
            .query_one(crate::RECORD_LOGIN_FAILURE, &[&key, &now, &since])?
            .get::<_, i64>(0) as u64)
    }

    fn clear_login_failures(&mut self, key: &str) -> Result<()> {
        self.client
            .execute("DELETE FROM login_failure WHERE key = $1", &[&key])?;
        Ok(())
    }
}

impl crate::ReferenceStore for PgStore {
    fn add_collectivite(
        &mut self,
        siret: &Siret,
        nom: &str,
        cdg: Option<&Siret>,
    ) -> Result<Collectivite> {
        let cdg_id =
            crate::rules::new_collectivite(siret.as_str(), cdg.map(|c| c.as_str()), |s| {
                self.collectivite_in(s)
            })?;
        self.client.execute(
            "INSERT INTO collectivite (siret, nom, cdg_id, created_at) VALUES ($1, $2, $3, $4)",
            &[&siret.as_str(), &nom, &cdg_id, &now()],
        )?;
        Ok(self
            .collectivite_in(siret.as_str())?
            .expect("just inserted"))
    }

    fn collectivites(&mut self) -> Result<Vec<Collectivite>> {
        self.collectivite_where("WHERE 1 = $1", &1i32)
    }

    fn collectivite(&mut self, siret: &Siret) -> Result<Option<Collectivite>> {
        self.collectivite_in(siret.as_str())
    }

    fn set_cdg(&mut self, siret: &Siret, cdg: Option<&Siret>) -> Result<()> {
        let (id, cdg_id) =
            crate::rules::attachment(siret.as_str(), cdg.map(|c| c.as_str()), |s| {
                self.collectivite_in(s)
            })?;
        self.client.execute(
            "UPDATE collectivite SET cdg_id = $2 WHERE id = $1",
            &[&id, &cdg_id],
        )?;
        Ok(())
    }

    fn add_emetteur(&mut self, code: &str, nom: Option<&str>) -> Result<Emetteur> {
        self.client.execute(
            "INSERT INTO emetteur (code, nom, created_at) VALUES ($1, $2, $3) ON CONFLICT (code) DO NOTHING",
            &[&code, &nom, &now()],
        )?;
        Ok(self.emetteur_row(code)?.expect("just inserted"))
    }

    fn set_autorisation(
        &mut self,
        emetteur: &str,
        siret: &Siret,
        state: Autorisation,
        reference: Option<&str>,
    ) -> Result<()> {
        let e = self
            .emetteur_row(emetteur)?
            .ok_or_else(|| StoreError::Invalid(format!("l'émetteur {emetteur} n'existe pas")))?;
        let c = self.collectivite_in(siret.as_str())?.ok_or_else(|| {
            StoreError::Invalid(format!(
                "la collectivité {siret} n'existe pas : créez-la d'abord"
            ))
        })?;
        self.client.execute(
            "INSERT INTO autorisation (emetteur_id, collectivite_id, statut, date_decision, reference) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (emetteur_id, collectivite_id) DO UPDATE SET statut = excluded.statut, date_decision = excluded.date_decision, \
             reference = excluded.reference",
            &[&e.id, &c.id, &state.code(), &now(), &reference],
        )?;
        Ok(())
    }

    fn emetteurs(&mut self) -> Result<Vec<Emetteur>> {
        let codes: Vec<String> = self
            .client
            .query("SELECT code FROM emetteur ORDER BY code", &[])?
            .iter()
            .map(|r| r.get(0))
            .collect();
        codes
            .iter()
            .map(|c| Ok(self.emetteur_row(c)?.expect("listed")))
            .collect()
    }

    fn emetteur(&mut self, code: &str) -> Result<Option<Emetteur>> {
        self.emetteur_row(code)
    }

    fn set_emetteur_password(&mut self, code: &str, hash: &str) -> Result<()> {
        let n = self.client.execute(
            "UPDATE emetteur SET password_hash = $2 WHERE code = $1",
            &[&code, &hash],
        )?;
        if n == 0 {
            return Err(StoreError::Invalid(format!(
                "l'émetteur {code} n'existe pas"
            )));
        }
        Ok(())
    }

    fn set_emetteur_actif(&mut self, code: &str, actif: bool) -> Result<bool> {
        Ok(self.client.execute(
            "UPDATE emetteur SET actif = $2 WHERE code = $1",
            &[&code, &(actif as i64)],
        )? == 1)
    }

    fn record_emetteur_connexion(&mut self, code: &str, at: &str) -> Result<()> {
        self.client.execute(
            "UPDATE emetteur SET derniere_connexion = $2 WHERE code = $1",
            &[&code, &at],
        )?;
        Ok(())
    }

    fn emetteur_password(&mut self, code: &str) -> Result<Option<String>> {
        Ok(self
            .client
            .query_opt(
                "SELECT password_hash FROM emetteur WHERE code = $1 AND actif = 1",
                &[&code],
            )?
            .and_then(|r| r.get::<_, Option<String>>(0)))
    }

    fn services(&mut self, collectivite_id: i64) -> Result<Vec<(i64, String, Option<String>)>> {
        Ok(self
            .client
            .query(
                "SELECT id, code, libelle FROM service WHERE collectivite_id = $1 ORDER BY code",
                &[&collectivite_id],
            )?
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect())
    }

    fn add_service(
        &mut self,
        collectivite_id: i64,
        code: &str,
        libelle: Option<&str>,
    ) -> Result<bool> {
        let n = self.client.execute(
            "INSERT INTO service (collectivite_id, code, libelle, import_id) VALUES ($1, $2, $3, 0) ON CONFLICT DO NOTHING",
            &[&collectivite_id, &code, &libelle],
        )?;
        Ok(n == 1)
    }

    fn nomenclature_entries(&mut self) -> Result<Vec<NomenclatureEntry>> {
        Ok(self
            .client
            .query(
                "SELECT nomenclature, code, libelle FROM nomenclature ORDER BY nomenclature, code",
                &[],
            )?
            .iter()
            .filter_map(|r| {
                let n: String = r.get(0);
                Nomenclature::from_name(&n).map(|nomenclature| NomenclatureEntry {
                    nomenclature,
                    code: r.get(1),
                    libelle: r.get(2),
                })
            })
            .collect())
    }

    fn replace_nomenclatures(
        &mut self,
        entries: &[NomenclatureEntry],
        version: &str,
        sha256: &str,
    ) -> Result<()> {
        let mut tx = self.client.transaction()?;
        let names: HashSet<&str> = entries.iter().map(|e| e.nomenclature.name()).collect();
        for n in &names {
            tx.execute("DELETE FROM nomenclature WHERE nomenclature = $1", &[n])?;
        }
        let st = tx.prepare(
            "INSERT INTO nomenclature (nomenclature, code, libelle) VALUES ($1, $2, $3)",
        )?;
        for e in entries {
            tx.execute(&st, &[&e.nomenclature.name(), &e.code, &e.libelle])?;
        }
        tx.execute(
            "INSERT INTO nomenclature_version (version, sha256, entries, imported_at) VALUES ($1, $2, $3, $4)",
            &[&version, &sha256, &(entries.len() as i64), &now()],
        )?;
        tx.commit()?;
        Ok(())
    }

    fn nomenclature_versions(&mut self) -> Result<Vec<(String, String, i64, String)>> {
        Ok(self
            .client
            .query(
                "SELECT version, sha256, entries, imported_at FROM nomenclature_version ORDER BY id",
                &[],
            )?
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
            .collect())
    }
}

impl crate::AuditStore for PgStore {
    fn add_audit(&mut self, e: &AuditEvent) -> Result<()> {
        self.client.execute(
            "INSERT INTO audit (at, actor, action, detail, address) VALUES ($1, $2, $3, $4, $5)",
            &[&now(), &e.actor, &e.action, &e.detail, &e.address],
        )?;
        Ok(())
    }

    fn audit_page(&mut self, offset: u64, limit: u64) -> Result<(u64, Vec<AuditRow>)> {
        let total: i64 = self
            .client
            .query_one("SELECT count(*) FROM audit", &[])?
            .get(0);
        let rows = self
            .client
            .query(
                "SELECT id, at, actor, action, detail, address FROM audit ORDER BY id DESC LIMIT $1 OFFSET $2",
                &[&(limit as i64), &(offset as i64)],
            )?
            .iter()
            .map(|r| AuditRow {
                id: r.get(0),
                at: r.get(1),
                event: AuditEvent {
                    actor: r.get(2),
                    action: r.get(3),
                    detail: r.get(4),
                    address: r.get(5),
                },
            })
            .collect();
        Ok((total as u64, rows))
    }
}

impl PgStore {
    fn job_where(
        &mut self,
        clause: &str,
        args: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> Result<Vec<Job>> {
        let sql = format!(
            "SELECT id, emetteur, file_name, stored_path, size, received_at, state, attempts FROM job WHERE {clause}"
        );
        self.client
            .query(sql.as_str(), args)?
            .iter()
            .map(|r| {
                let state: String = r.get(6);
                Ok(Job {
                    id: r.get(0),
                    emetteur: r.get(1),
                    file_name: r.get(2),
                    stored_path: r.get(3),
                    size: r.get::<_, i64>(4) as u64,
                    received_at: r.get(5),
                    state: JobState::parse(&state).ok_or_else(|| {
                        StoreError::Invalid(format!("état de travail inconnu : {state}"))
                    })?,
                    attempts: r.get::<_, i64>(7) as u64,
                })
            })
            .collect()
    }
}

impl crate::JobStore for PgStore {
    fn add_job(
        &mut self,
        emetteur: &str,
        file_name: &str,
        stored_path: &str,
        size: u64,
    ) -> Result<i64> {
        let t = now();
        Ok(self
            .client
            .query_one(
                "WITH j AS (INSERT INTO job (emetteur, file_name, stored_path, size, received_at, state, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, 'attente', $5) RETURNING id) \
                 SELECT id, pg_notify('atmp_jobs', id::text) FROM j",
                &[&emetteur, &file_name, &stored_path, &(size as i64), &t],
            )?
            .get(0))
    }

    fn wait_for_jobs(&mut self, timeout: std::time::Duration) -> Result<bool> {
        if !self.listening {
            self.client.batch_execute("LISTEN atmp_jobs")?;
            self.listening = true;
        }
        let mut n = self.client.notifications();
        let mut it = n.timeout_iter(timeout);
        use postgres::fallible_iterator::FallibleIterator;
        Ok(it.next()?.is_some())
    }

    fn next_job(&mut self) -> Result<Option<Job>> {
        // The row lock of a file transaction (`FileTx` of another instance's integration) makes
        // its job invisible here: a killed instance's job is free again at once.
        Ok(self
            .job_where(
                &format!(
                    "{} ORDER BY id LIMIT 1 FOR NO KEY UPDATE OF job SKIP LOCKED",
                    crate::JOB_ELIGIBLE
                ),
                &[],
            )?
            .pop())
    }

    fn job(&mut self, id: i64) -> Result<Option<Job>> {
        Ok(self.job_where("id = $1", &[&id])?.pop())
    }

    fn job_paths(&mut self) -> Result<Vec<String>> {
        Ok(self
            .client
            .query("SELECT stored_path FROM job", &[])?
            .iter()
            .map(|r| r.get(0))
            .collect())
    }

    fn done_jobs_of(&mut self, emetteur: &str) -> Result<Vec<(Job, i64)>> {
        let jobs = self.job_where(
            "emetteur = $1 AND state = 'fait' AND import_id IS NOT NULL ORDER BY id",
            &[&emetteur],
        )?;
        let ids: HashMap<i64, i64> = self
            .client
            .query(
                "SELECT id, import_id FROM job WHERE emetteur = $1 AND state = 'fait' AND import_id IS NOT NULL",
                &[&emetteur],
            )?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        Ok(jobs
            .into_iter()
            .filter_map(|j| ids.get(&j.id).map(|i| (j.clone(), *i)))
            .collect())
    }

    fn set_job_state(&mut self, id: i64, state: JobState, error: Option<&str>) -> Result<()> {
        let bump = i64::from(state == JobState::EnCours);
        self.client.execute(
            "UPDATE job SET state = $2, last_error = coalesce($3, last_error), attempts = attempts + $4, updated_at = $5 \
             WHERE id = (SELECT id FROM job WHERE id = $1 FOR NO KEY UPDATE SKIP LOCKED)",
            &[&id, &state.code(), &error, &bump, &now()],
        )?;
        self.client
            .execute("SELECT pg_notify('atmp_jobs', '')", &[])?;
        Ok(())
    }

    fn finish_job(&mut self, id: i64, import_id: i64, sha256: &str) -> Result<()> {
        self.client.execute(
            "UPDATE job SET state = 'fait', import_id = $2, sha256 = $3, updated_at = $4 WHERE id = $1",
            &[&id, &import_id, &sha256, &now()],
        )?;
        // Later jobs of the senders sharing its collectivités may be taken now, anywhere.
        self.client
            .execute("SELECT pg_notify('atmp_jobs', '')", &[])?;
        Ok(())
    }

    fn import_of_job(&mut self, job_id: i64) -> Result<Option<i64>> {
        Ok(self
            .client
            .query_opt("SELECT id FROM import WHERE job_id = $1", &[&job_id])?
            .map(|r| r.get(0)))
    }

    fn waiting_jobs(&mut self, limit: u64) -> Result<Vec<Job>> {
        let limit = limit.min(i64::MAX as u64) as i64;
        self.job_where(
            "state IN ('attente', 'en_cours') ORDER BY id LIMIT $1",
            &[&limit],
        )
    }

    fn pending_jobs(&mut self) -> Result<u64> {
        let n: i64 = self
            .client
            .query_one(
                "SELECT count(*) FROM job WHERE state IN ('attente', 'en_cours')",
                &[],
            )?
            .get(0);
        Ok(n as u64)
    }
}

impl crate::MailStore for PgStore {
    fn enqueue_mail(&mut self, m: &NewMail) -> Result<()> {
        let att = serde_json::to_string(&m.attachments).expect("strings");
        self.client.execute(
            "INSERT INTO mail (import_id, recipient, subject, body, attachments, state, next_attempt_at) \
             VALUES ($1, $2, $3, $4, $5, 'attente', $6) ON CONFLICT DO NOTHING",
            &[&m.import_id, &m.recipient, &m.subject, &m.body, &att, &now()],
        )?;
        Ok(())
    }

    fn claim_mails(&mut self, now: &str, until: &str, limit: usize) -> Result<Vec<Mail>> {
        // SKIP LOCKED: two instances claiming at once take different mails.
        let mut v: Vec<Mail> = self
            .client
            .query(
                "UPDATE mail SET next_attempt_at = $3 WHERE id IN (SELECT id FROM mail \
                 WHERE state = 'attente' AND next_attempt_at <= $1 ORDER BY next_attempt_at, id LIMIT $2 \
                 FOR UPDATE SKIP LOCKED) \
                 RETURNING id, import_id, recipient, subject, body, attachments, attempts",
                &[&now, &(limit as i64), &until],
            )?
            .iter()
            .map(|r| {
                let att: String = r.get(5);
                Mail {
                    id: r.get(0),
                    import_id: r.get(1),
                    recipient: r.get(2),
                    subject: r.get(3),
                    body: r.get(4),
                    attachments: serde_json::from_str(&att).unwrap_or_default(),
                    attempts: r.get::<_, i64>(6) as u64,
                }
            })
            .collect();
        v.sort_by_key(|m| m.id);
        Ok(v)
    }

    fn mail_sent(&mut self, id: i64) -> Result<()> {
        self.client.execute(
            "UPDATE mail SET state = 'envoye', sent_at = $2, attempts = attempts + 1 WHERE id = $1",
            &[&id, &now()],
        )?;
        Ok(())
    }

    fn mail_failed(&mut self, id: i64, error: &str, next: Option<&str>) -> Result<()> {
        self.client.execute(
            "UPDATE mail SET attempts = attempts + 1, last_error = $2, next_attempt_at = coalesce($3, next_attempt_at), \
             state = CASE WHEN $3::text IS NULL THEN 'abandonne' ELSE 'attente' END WHERE id = $1",
            &[&id, &error, &next],
        )?;
        Ok(())
    }

    fn destinataires(&mut self, siret: &str, global: bool) -> Result<Vec<String>> {
        // A collectivité's log goes to its own users; a global CDG log to the CDG's admins.
        let sql = if global {
            "SELECT DISTINCT u.email FROM utilisateur u JOIN collectivite c ON c.id = u.collectivite_id \
             WHERE c.siret = $1 AND u.role = 'cdg' AND u.actif = 1 AND u.email IS NOT NULL AND u.email <> '' ORDER BY 1"
        } else {
            "SELECT DISTINCT u.email FROM utilisateur u JOIN collectivite c ON c.id = u.collectivite_id \
             WHERE c.siret = $1 AND u.role IN ('collectivite-admin', 'collectivite') AND u.actif = 1 \
             AND u.email IS NOT NULL AND u.email <> '' ORDER BY 1"
        };
        Ok(self
            .client
            .query(sql, &[&siret])?
            .iter()
            .map(|r| r.get(0))
            .collect())
    }
}
