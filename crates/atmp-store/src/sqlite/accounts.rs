//! SQLite: the web's accounts and sessions.

#[allow(unused_imports)]
use super::*;

impl crate::AccountStore for SqliteStore {
    fn add_utilisateur(&mut self, u: &NewUtilisateur) -> Result<Utilisateur> {
        let collectivite_id = crate::rules::new_utilisateur(u, |s| collectivite_in(&self.conn, s))?;
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

    fn create_password_link(&mut self, token_hash: &str, user: i64, expires: &str) -> Result<()> {
        self.conn.execute(
            "INSERT INTO lien_mot_de_passe (token_sha256, utilisateur_id, expires_at) VALUES (?1, ?2, ?3)",
            params![token_hash, user, expires],
        )?;
        Ok(())
    }

    fn password_link(&mut self, token_hash: &str, now: &str) -> Result<Option<i64>> {
        Ok(self
            .conn
            .query_row(
                "SELECT utilisateur_id FROM lien_mot_de_passe WHERE token_sha256 = ?1 AND expires_at > ?2",
                params![token_hash, now],
                |r| r.get(0),
            )
            .optional()?)
    }

    fn use_password_link(&mut self, token_hash: &str, now: &str) -> Result<Option<i64>> {
        let tx = self.conn.transaction()?;
        let user: Option<(i64, String)> = tx
            .query_row(
                "DELETE FROM lien_mot_de_passe WHERE token_sha256 = ?1 RETURNING utilisateur_id, expires_at",
                [token_hash],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        if let Some((u, _)) = &user {
            tx.execute(
                "DELETE FROM lien_mot_de_passe WHERE utilisateur_id = ?1",
                [u],
            )?;
        }
        tx.commit()?;
        Ok(user.filter(|(_, exp)| exp.as_str() > now).map(|(u, _)| u))
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

    fn login_failures(&mut self, key: &str, since: &str) -> Result<u64> {
        let n: Option<i64> = self
            .conn
            .query_row(
                "SELECT failures FROM login_failure WHERE key = ?1 AND first_at >= ?2",
                params![key, since],
                |r| r.get(0),
            )
            .optional()?;
        Ok(n.unwrap_or(0) as u64)
    }

    fn record_login_failure(&mut self, key: &str, now: &str, since: &str) -> Result<u64> {
        self.conn.execute(
            "DELETE FROM login_failure WHERE first_at < ?1 AND key <> ?2",
            params![since, key],
        )?;
        let n: i64 = self.conn.query_row(
            &crate::RECORD_LOGIN_FAILURE.replace('$', "?"),
            params![key, now, since],
            |r| r.get(0),
        )?;
        Ok(n as u64)
    }

    fn clear_login_failures(&mut self, key: &str) -> Result<()> {
        self.conn
            .execute("DELETE FROM login_failure WHERE key = ?1", [key])?;
        Ok(())
    }
}
