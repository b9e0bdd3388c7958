//! SQLite: the audit trail.

#[allow(unused_imports)]
use super::*;

impl crate::AuditStore for SqliteStore {
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
}
