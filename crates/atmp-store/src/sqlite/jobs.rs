//! SQLite: the durable job queue of received files.

#[allow(unused_imports)]
use super::*;
use crate::JobState;

impl crate::JobStore for SqliteStore {
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
            .job_where(&format!("{} ORDER BY id LIMIT 1", crate::JOB_ELIGIBLE), &[])?
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

    fn done_jobs_of(&mut self, emetteur: &str) -> Result<Vec<(Job, i64)>> {
        let jobs = self.job_where(
            "emetteur = ?1 AND state = 'fait' AND import_id IS NOT NULL ORDER BY id",
            &[&emetteur],
        )?;
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, import_id FROM job WHERE emetteur = ?1 AND state = 'fait' AND import_id IS NOT NULL",
        )?;
        let ids: std::collections::HashMap<i64, i64> = stmt
            .query_map([emetteur], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(jobs
            .into_iter()
            .filter_map(|j| ids.get(&j.id).map(|i| (j.clone(), *i)))
            .collect())
    }

    fn set_job_state(&mut self, id: i64, state: JobState, error: Option<&str>) -> Result<()> {
        let bump = i64::from(state == JobState::EnCours);
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

    fn import_of_job(&mut self, job_id: i64) -> Result<Option<i64>> {
        Ok(self
            .conn
            .prepare_cached("SELECT id FROM import WHERE job_id = ?1")?
            .query_row([job_id], |r| r.get(0))
            .optional()?)
    }

    fn waiting_jobs(&mut self, limit: u64) -> Result<Vec<Job>> {
        let limit = limit.min(i64::MAX as u64) as i64;
        self.job_where(
            "state IN ('attente', 'en_cours') ORDER BY id LIMIT ?1",
            &[&limit],
        )
    }

    fn pending_jobs(&mut self) -> Result<u64> {
        let n: i64 = self.conn.query_row(
            "SELECT count(*) FROM job WHERE state IN ('attente', 'en_cours')",
            [],
            |r| r.get(0),
        )?;
        Ok(n as u64)
    }
}
