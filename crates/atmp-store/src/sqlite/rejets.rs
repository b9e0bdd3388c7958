//! SQLite: the quarantine of rejected records, agents' corrections, table checksums.

#[allow(unused_imports)]
use super::*;
use crate::rejets::{
    differences_of, differences_text, identite_of, identite_text, rejet_where, Arg, REJET_COLS,
};
use crate::{
    AgentCorrection, Identite, NewRejet, Rejet, RejetEtat, RejetMaj, RejetQuery, RejetRaison,
};

pub(super) fn rejet_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Rejet> {
    let bad = |i: usize, s: &str| {
        rusqlite::Error::FromSqlConversionFailure(
            i,
            rusqlite::types::Type::Text,
            format!("code inconnu : {s}").into(),
        )
    };
    let raison: String = r.get(4)?;
    let etat: String = r.get(5)?;
    let differences: String = r.get(16)?;
    Ok(Rejet {
        id: r.get(0)?,
        import_id: r.get(1)?,
        new: NewRejet {
            collectivite_siret: r.get(2)?,
            niveau: r.get(3)?,
            raison: RejetRaison::parse(&raison).ok_or_else(|| bad(4, &raison))?,
            message: r.get(6)?,
            chemin: r.get(7)?,
            ligne: r.get::<_, i64>(8)? as u64,
            racine: r.get(9)?,
            source_xml: r.get(10)?,
            debut: r.get::<_, i64>(11)? as u32,
            fin: r.get::<_, i64>(12)? as u32,
            cle: r.get(13)?,
            base: identite_of(r.get(14)?),
            fichier: identite_of(r.get(15)?),
            differences: differences_of(&differences),
            contenu: differences_of(&r.get::<_, String>(23)?),
        },
        etat: RejetEtat::parse(&etat).ok_or_else(|| bad(5, &etat))?,
        cree_le: r.get(17)?,
        traite_le: r.get(18)?,
        traite_par: r.get(19)?,
        motif: r.get(20)?,
        rejeu_import_id: r.get(21)?,
        purge_le: r.get(22)?,
    })
}

fn args_sql(args: &[Arg]) -> Vec<Box<dyn ToSql>> {
    args.iter()
        .map(|a| -> Box<dyn ToSql> {
            match a {
                Arg::Text(s) => Box::new(s.clone()),
                Arg::Int(i) => Box::new(*i),
            }
        })
        .collect()
}

pub(super) fn add_rejets(conn: &Connection, import_id: i64, rows: &[NewRejet]) -> Result<()> {
    let mut st = conn.prepare_cached(
        "INSERT INTO rejet (import_id, collectivite_siret, niveau, raison, message, chemin, ligne, racine, source_xml, debut, fin, cle, base, fichier, differences, cree_le, contenu) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)",
    )?;
    let at = now();
    for r in rows {
        st.execute(params![
            import_id,
            r.collectivite_siret,
            r.niveau,
            r.raison.code(),
            r.message,
            r.chemin,
            r.ligne as i64,
            r.racine,
            r.source_xml,
            r.debut as i64,
            r.fin as i64,
            r.cle,
            identite_text(&r.base),
            identite_text(&r.fichier),
            differences_text(&r.differences),
            at,
            differences_text(&r.contenu)
        ])?;
    }
    Ok(())
}

pub(super) fn open_rejets(
    conn: &Connection,
    siret: &str,
) -> Result<Vec<(i64, String, Vec<String>)>> {
    let mut st = conn.prepare_cached(
        "SELECT id, cle, contenu FROM rejet WHERE collectivite_siret = ?1 AND etat = 'a_traiter'",
    )?;
    let rows = st
        .query_map([siret], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                differences_of(&r.get::<_, String>(2)?),
            ))
        })?
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(rows)
}

pub(super) fn close_rejets(conn: &Connection, import_id: i64, ids: &[i64]) -> Result<()> {
    let mut st = conn.prepare_cached(
        "UPDATE rejet SET etat = 'rejoue', rejeu_import_id = ?2, traite_le = ?3 WHERE id = ?1 AND etat = 'a_traiter'",
    )?;
    let at = now();
    for id in ids {
        st.execute(params![id, import_id, at])?;
    }
    Ok(())
}

pub(super) fn update_rejets(conn: &Connection, rows: &[RejetMaj]) -> Result<()> {
    let mut st = conn.prepare_cached(
        "UPDATE rejet SET raison = ?2, message = ?3, base = ?4, fichier = ?5, differences = ?6 WHERE id = ?1 AND etat = 'a_traiter'",
    )?;
    for r in rows {
        st.execute(params![
            r.id,
            r.raison.code(),
            r.message,
            identite_text(&r.base),
            identite_text(&r.fichier),
            differences_text(&r.differences)
        ])?;
    }
    Ok(())
}

fn identite_in(conn: &Connection, siret: &Siret, nir: &str) -> Result<Option<(i64, Identite)>> {
    Ok(conn
        .prepare_cached(
            "SELECT a.id, a.nom_usuel, a.prenom, a.date_naissance, a.nir FROM agent a JOIN collectivite c ON c.id = a.collectivite_id \
             WHERE c.siret = ?1 AND a.nir = ?2",
        )?
        .query_row(params![siret.as_str(), nir], |r| {
            Ok((
                r.get(0)?,
                Identite {
                    nom_usuel: r.get(1)?,
                    prenom: r.get(2)?,
                    date_naissance: r.get(3)?,
                    nir: r.get(4)?,
                },
            ))
        })
        .optional()?)
}

impl crate::RejetStore for SqliteStore {
    fn rejets(&mut self, q: &RejetQuery) -> Result<(Vec<Rejet>, u64)> {
        let (w, args) = rejet_where(q, &|n| format!("?{n}"));
        let args = args_sql(&args);
        let refs: Vec<&dyn ToSql> = args.iter().map(|b| b.as_ref()).collect();
        let total: i64 = self.conn.query_row(
            &format!("SELECT count(*) FROM rejet {w}"),
            refs.as_slice(),
            |r| r.get(0),
        )?;
        let limit = if q.limit == 0 { -1 } else { q.limit as i64 };
        let sql = format!(
            "SELECT {REJET_COLS} FROM rejet {w} ORDER BY id DESC LIMIT {limit} OFFSET {}",
            q.offset
        );
        let mut st = self.conn.prepare(&sql)?;
        let rows = st
            .query_map(refs.as_slice(), rejet_row)?
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok((rows, total as u64))
    }

    fn rejeux_of(&mut self, import_id: i64) -> Result<Vec<i64>> {
        let mut st = self.conn.prepare_cached(
            "SELECT DISTINCT rejeu_import_id FROM rejet WHERE import_id = ?1 AND rejeu_import_id IS NOT NULL UNION SELECT id FROM import WHERE rejeu_de = ?1 ORDER BY 1",
        )?;
        let rows = st
            .query_map([import_id], |r| r.get(0))?
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    fn classer_rejets(&mut self, ids: &[i64], motif: &str, actor: &str) -> Result<u64> {
        let tx = self.conn.transaction()?;
        let mut n = 0;
        {
            let mut st = tx.prepare_cached(
                "UPDATE rejet SET etat = 'classe', motif = ?2, traite_par = ?3, traite_le = ?4 WHERE id = ?1 AND etat = 'a_traiter'",
            )?;
            let at = now();
            for id in ids {
                n += st.execute(params![id, motif, actor, at])? as u64;
            }
        }
        tx.commit()?;
        Ok(n)
    }

    fn agent_identite(&mut self, siret: &Siret, nir: &str) -> Result<Option<(i64, Identite)>> {
        identite_in(&self.conn, siret, nir)
    }

    fn correct_agent(
        &mut self,
        siret: &Siret,
        nir: &str,
        c: &AgentCorrection,
        actor: &str,
    ) -> Result<(Identite, Identite)> {
        let tx = self.conn.transaction()?;
        let Some((id, before)) = identite_in(&tx, siret, nir)? else {
            return Err(StoreError::Invalid(format!(
                "aucun agent de NIR {nir} dans la collectivité {siret}"
            )));
        };
        let after = c.apply(&before);
        if after.nir != before.nir && identite_in(&tx, siret, &after.nir)?.is_some() {
            return Err(StoreError::Invalid(format!(
                "un autre agent de la collectivité {siret} a déjà le NIR {}",
                after.nir
            )));
        }
        tx.execute(
            "UPDATE agent SET nom_usuel = ?2, prenom = ?3, date_naissance = ?4, nir = ?5, nom_norm = ?6, prenom_norm = ?7 WHERE id = ?1",
            params![
                id,
                after.nom_usuel,
                after.prenom,
                after.date_naissance,
                after.nir,
                atmp_model::normalize_name(&after.nom_usuel),
                atmp_model::normalize_name(&after.prenom)
            ],
        )?;
        tx.execute(
            "INSERT INTO agent_correction (agent_id, collectivite_siret, at, actor, avant, apres) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                id,
                siret.as_str(),
                now(),
                actor,
                identite_text(&Some(before.clone())),
                identite_text(&Some(after.clone()))
            ],
        )?;
        tx.commit()?;
        Ok((before, after))
    }

    fn agent_corrections(
        &mut self,
        siret: &Siret,
    ) -> Result<Vec<(String, String, Identite, Identite)>> {
        let mut st = self.conn.prepare_cached(
            "SELECT at, actor, avant, apres FROM agent_correction WHERE collectivite_siret = ?1 ORDER BY id DESC",
        )?;
        let rows = st
            .query_map([siret.as_str()], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                ))
            })?
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(rows
            .into_iter()
            .map(|(at, actor, b, a)| {
                (
                    at,
                    actor,
                    identite_of(Some(b)).unwrap_or_default(),
                    identite_of(Some(a)).unwrap_or_default(),
                )
            })
            .collect())
    }

    fn purge_rejets(&mut self, import_id: i64) -> Result<u64> {
        let tx = self.conn.transaction()?;
        let at = now();
        let n = tx.execute(
            "UPDATE rejet SET source_xml = NULL, base = NULL, fichier = NULL, message = '', purge_le = ?2 WHERE import_id = ?1 AND purge_le IS NULL",
            params![import_id, at],
        )?;
        tx.execute(
            "INSERT INTO purge (import_id, what, purged_at) VALUES (?1, 'rejets', ?2) ON CONFLICT (import_id, what) DO NOTHING",
            params![import_id, at],
        )?;
        tx.commit()?;
        Ok(n as u64)
    }

    fn checksums(&mut self) -> Result<Vec<(String, String)>> {
        let tables: Vec<String> = self
            .conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")?
            .query_map([], |r| r.get(0))?
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let mut out = Vec::new();
        for t in tables {
            use sha2::Digest;
            let mut h = sha2::Sha256::new();
            let mut st = self
                .conn
                .prepare(&format!("SELECT * FROM \"{t}\" ORDER BY 1"))?;
            let n = st.column_count();
            let mut rows = st.query([])?;
            while let Some(r) = rows.next()? {
                for i in 0..n {
                    let v = match r.get_ref(i)? {
                        ValueRef::Null => "\u{0}N".to_string(),
                        ValueRef::Integer(x) => x.to_string(),
                        ValueRef::Real(x) => x.to_string(),
                        ValueRef::Text(x) => String::from_utf8_lossy(x).into_owned(),
                        ValueRef::Blob(x) => hex::encode(x),
                    };
                    h.update(v.as_bytes());
                    h.update([0x1f]);
                }
                h.update([0x1e]);
            }
            out.push((t, hex::encode(h.finalize())));
        }
        Ok(out)
    }
}
