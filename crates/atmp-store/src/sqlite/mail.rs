//! SQLite: the mail outbox and who receives what.

#[allow(unused_imports)]
use super::*;

impl crate::MailStore for SqliteStore {
    fn enqueue_mail(&mut self, m: &NewMail) -> Result<()> {
        let att = serde_json::to_string(&m.attachments).expect("strings");
        self.conn.execute(
            "INSERT OR IGNORE INTO mail (import_id, recipient, subject, body, attachments, state, next_attempt_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, 'attente', ?6)",
            params![m.import_id, m.recipient, m.subject, m.body, att, now()],
        )?;
        Ok(())
    }

    fn claim_mails(&mut self, now: &str, until: &str, limit: usize) -> Result<Vec<Mail>> {
        let mut stmt = self.conn.prepare_cached(
            "UPDATE mail SET next_attempt_at = ?3 WHERE id IN (SELECT id FROM mail \
             WHERE state = 'attente' AND next_attempt_at <= ?1 ORDER BY next_attempt_at, id LIMIT ?2) \
             RETURNING id, import_id, recipient, subject, body, attachments, attempts",
        )?;
        let rows = stmt.query_map(params![now, limit as i64, until], |r| {
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
        let mut v: Vec<Mail> = rows.collect::<rusqlite::Result<_>>()?;
        v.sort_by_key(|m| m.id);
        Ok(v)
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
}
