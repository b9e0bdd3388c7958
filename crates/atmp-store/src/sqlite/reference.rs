//! SQLite: collectivités, émetteurs and their consent register, services, nomenclatures: the reference data files refer to.

#[allow(unused_imports)]
use super::*;

impl crate::ReferenceStore for SqliteStore {
    fn add_collectivite(
        &mut self,
        siret: &Siret,
        nom: &str,
        cdg: Option<&Siret>,
    ) -> Result<Collectivite> {
        let cdg_id =
            crate::rules::new_collectivite(siret.as_str(), cdg.map(|c| c.as_str()), |s| {
                collectivite_in(&self.conn, s)
            })?;
        self.conn.execute(
            "INSERT INTO collectivite (siret, nom, cdg_id, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![siret.as_str(), nom, cdg_id, now()],
        )?;
        Ok(collectivite_in(&self.conn, siret.as_str())?.expect("just inserted"))
    }

    fn collectivites(&mut self) -> Result<Vec<Collectivite>> {
        self.collectivite_where("WHERE 1 = ?1", &1)
    }

    fn collectivite(&mut self, siret: &Siret) -> Result<Option<Collectivite>> {
        collectivite_in(&self.conn, siret.as_str())
    }

    fn set_cdg(&mut self, siret: &Siret, cdg: Option<&Siret>) -> Result<()> {
        let (id, cdg_id) =
            crate::rules::attachment(siret.as_str(), cdg.map(|c| c.as_str()), |s| {
                collectivite_in(&self.conn, s)
            })?;
        self.conn.execute(
            "UPDATE collectivite SET cdg_id = ?2 WHERE id = ?1",
            params![id, cdg_id],
        )?;
        Ok(())
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
        siret: &Siret,
        state: Autorisation,
        reference: Option<&str>,
    ) -> Result<()> {
        let e = self
            .emetteur_row(emetteur)?
            .ok_or_else(|| StoreError::Invalid(format!("l'émetteur {emetteur} n'existe pas")))?;
        let c = collectivite_in(&self.conn, siret.as_str())?.ok_or_else(|| {
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

    fn set_emetteur_actif(&mut self, code: &str, actif: bool) -> Result<bool> {
        Ok(self.conn.execute(
            "UPDATE emetteur SET actif = ?2 WHERE code = ?1",
            params![code, actif],
        )? == 1)
    }

    fn record_emetteur_connexion(&mut self, code: &str, at: &str) -> Result<()> {
        self.conn.execute(
            "UPDATE emetteur SET derniere_connexion = ?2 WHERE code = ?1",
            params![code, at],
        )?;
        Ok(())
    }

    fn emetteur_password(&mut self, code: &str) -> Result<Option<String>> {
        Ok(self
            .conn
            .prepare_cached("SELECT password_hash FROM emetteur WHERE code = ?1 AND actif = 1")?
            .query_row([code], |r| r.get::<_, Option<String>>(0))
            .optional()?
            .flatten())
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
}
