//! PostgreSQL: the quarantine of rejected records, agents' corrections, table checksums.

use postgres::types::ToSql;
use postgres::GenericClient;

use super::PgStore;
use crate::rejets::{
    differences_of, differences_text, identite_of, identite_text, rejet_where, Arg, REJET_COLS,
};
use crate::{
    now, AgentCorrection, Identite, NewRejet, Rejet, RejetEtat, RejetMaj, RejetQuery, RejetRaison,
    Result, StoreError,
};
use atmp_model::Siret;

fn rejet_row(r: &postgres::Row) -> Result<Rejet> {
    let raison: String = r.get(4);
    let etat: String = r.get(5);
    let differences: String = r.get(16);
    Ok(Rejet {
        id: r.get(0),
        import_id: r.get(1),
        new: NewRejet {
            collectivite_siret: r.get(2),
            niveau: r.get(3),
            raison: RejetRaison::parse(&raison).ok_or_else(|| {
                StoreError::Invalid(format!("raison de rejet inconnue : {raison}"))
            })?,
            message: r.get(6),
            chemin: r.get(7),
            ligne: r.get::<_, i64>(8) as u64,
            racine: r.get(9),
            source_xml: r.get(10),
            debut: r.get::<_, i64>(11) as u32,
            fin: r.get::<_, i64>(12) as u32,
            cle: r.get(13),
            base: identite_of(r.get(14)),
            fichier: identite_of(r.get(15)),
            differences: differences_of(&differences),
            contenu: differences_of(&r.get::<_, String>(23)),
        },
        etat: RejetEtat::parse(&etat)
            .ok_or_else(|| StoreError::Invalid(format!("état de rejet inconnu : {etat}")))?,
        cree_le: r.get(17),
        traite_le: r.get(18),
        traite_par: r.get(19),
        motif: r.get(20),
        rejeu_import_id: r.get(21),
        purge_le: r.get(22),
    })
}

/// Rows sent in one statement (arrays unnested by the server).
const BATCH: usize = 500;

pub(super) fn add_rejets(
    c: &mut impl GenericClient,
    import_id: i64,
    rows: &[NewRejet],
) -> Result<()> {
    let at = now();
    for chunk in rows.chunks(BATCH) {
        let text = |f: &dyn Fn(&NewRejet) -> String| chunk.iter().map(f).collect::<Vec<String>>();
        let opt = |f: &dyn Fn(&NewRejet) -> Option<String>| {
            chunk.iter().map(f).collect::<Vec<Option<String>>>()
        };
        let int = |f: &dyn Fn(&NewRejet) -> i64| chunk.iter().map(f).collect::<Vec<i64>>();
        let siret = text(&|r| r.collectivite_siret.clone());
        let niveau = text(&|r| r.niveau.clone());
        let raison = text(&|r| r.raison.code().to_string());
        let message = text(&|r| r.message.clone());
        let chemin = text(&|r| r.chemin.clone());
        let ligne = int(&|r| r.ligne as i64);
        let racine = text(&|r| r.racine.clone());
        let xml = opt(&|r| r.source_xml.clone());
        let debut = int(&|r| r.debut as i64);
        let fin = int(&|r| r.fin as i64);
        let cle = text(&|r| r.cle.clone());
        let base = opt(&|r| identite_text(&r.base));
        let fichier = opt(&|r| identite_text(&r.fichier));
        let diff = text(&|r| differences_text(&r.differences));
        let contenu = text(&|r| differences_text(&r.contenu));
        c.execute(
            "INSERT INTO rejet (import_id, collectivite_siret, niveau, raison, message, chemin, ligne, racine, source_xml, debut, fin, cle, base, fichier, differences, contenu, cree_le) \
             SELECT $1, u.*, $17 FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bigint[], $8::text[], $9::text[], $10::bigint[], $11::bigint[], $12::text[], $13::text[], $14::text[], $15::text[], $16::text[]) u",
            &[
                &import_id, &siret, &niveau, &raison, &message, &chemin, &ligne, &racine, &xml,
                &debut, &fin, &cle, &base, &fichier, &diff, &contenu, &at,
            ],
        )?;
    }
    Ok(())
}

pub(super) fn open_rejets(
    c: &mut impl GenericClient,
    siret: &str,
) -> Result<Vec<(i64, String, Vec<String>)>> {
    Ok(c.query(
        "SELECT id, cle, contenu FROM rejet WHERE collectivite_siret = $1 AND etat = 'a_traiter'",
        &[&siret],
    )?
    .iter()
    .map(|r| (r.get(0), r.get(1), differences_of(&r.get::<_, String>(2))))
    .collect())
}

pub(super) fn close_rejets(c: &mut impl GenericClient, import_id: i64, ids: &[i64]) -> Result<()> {
    let at = now();
    let ids = ids.to_vec();
    c.execute(
        "UPDATE rejet SET etat = 'rejoue', rejeu_import_id = $2, traite_le = $3 WHERE id = ANY($1) AND etat = 'a_traiter'",
        &[&ids, &import_id, &at],
    )?;
    Ok(())
}

pub(super) fn update_rejets(c: &mut impl GenericClient, rows: &[RejetMaj]) -> Result<()> {
    let st = c.prepare(
        "UPDATE rejet SET raison = $2, message = $3, base = $4, fichier = $5, differences = $6 WHERE id = $1 AND etat = 'a_traiter'",
    )?;
    for r in rows {
        c.execute(
            &st,
            &[
                &r.id,
                &r.raison.code(),
                &r.message,
                &identite_text(&r.base),
                &identite_text(&r.fichier),
                &differences_text(&r.differences),
            ],
        )?;
    }
    Ok(())
}

fn identite_in(
    c: &mut impl GenericClient,
    siret: &Siret,
    nir: &str,
) -> Result<Option<(i64, Identite)>> {
    Ok(c
        .query_opt(
            "SELECT a.id, a.nom_usuel, a.prenom, a.date_naissance, a.nir FROM agent a JOIN collectivite c ON c.id = a.collectivite_id \
             WHERE c.siret = $1 AND a.nir = $2",
            &[&siret.as_str(), &nir],
        )?
        .map(|r| {
            (
                r.get(0),
                Identite {
                    nom_usuel: r.get(1),
                    prenom: r.get(2),
                    date_naissance: r.get(3),
                    nir: r.get(4),
                },
            )
        }))
}

impl crate::RejetStore for PgStore {
    fn rejets(&mut self, q: &RejetQuery) -> Result<(Vec<Rejet>, u64)> {
        let (w, args) = rejet_where(q, &|n| format!("${n}"));
        let boxed: Vec<Box<dyn ToSql + Sync>> = args
            .iter()
            .map(|a| -> Box<dyn ToSql + Sync> {
                match a {
                    Arg::Text(s) => Box::new(s.clone()),
                    Arg::Int(i) => Box::new(*i),
                }
            })
            .collect();
        let refs: Vec<&(dyn ToSql + Sync)> = boxed.iter().map(|b| b.as_ref()).collect();
        let total: i64 = self
            .client
            .query_one(&format!("SELECT count(*) FROM rejet {w}"), &refs)?
            .get(0);
        let limit = if q.limit == 0 {
            "ALL".to_string()
        } else {
            q.limit.to_string()
        };
        let rows = self.client.query(
            &format!(
                "SELECT {REJET_COLS} FROM rejet {w} ORDER BY id DESC LIMIT {limit} OFFSET {}",
                q.offset
            ),
            &refs,
        )?;
        let rows = rows.iter().map(rejet_row).collect::<Result<Vec<_>>>()?;
        Ok((rows, total as u64))
    }

    fn rejeux_of(&mut self, import_id: i64) -> Result<Vec<i64>> {
        Ok(self
            .client
            .query(
                "SELECT DISTINCT rejeu_import_id FROM rejet WHERE import_id = $1 AND rejeu_import_id IS NOT NULL UNION SELECT id FROM import WHERE rejeu_de = $1 ORDER BY 1",
                &[&import_id],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect())
    }

    fn classer_rejets(&mut self, ids: &[i64], motif: &str, actor: &str) -> Result<u64> {
        let ids = ids.to_vec();
        Ok(self.client.execute(
            "UPDATE rejet SET etat = 'classe', motif = $2, traite_par = $3, traite_le = $4 WHERE id = ANY($1) AND etat = 'a_traiter'",
            &[&ids, &motif, &actor, &now()],
        )?)
    }

    fn agent_identite(&mut self, siret: &Siret, nir: &str) -> Result<Option<(i64, Identite)>> {
        identite_in(&mut self.client, siret, nir)
    }

    fn correct_agent(
        &mut self,
        siret: &Siret,
        nir: &str,
        c: &AgentCorrection,
        actor: &str,
    ) -> Result<(Identite, Identite)> {
        let mut tx = self.client.transaction()?;
        // The agent's row is locked until commit: two corrections at once apply one after
        // the other, each recording what it saw.
        tx.execute(
            "SELECT a.id FROM agent a JOIN collectivite c ON c.id = a.collectivite_id WHERE c.siret = $1 AND a.nir = $2 FOR UPDATE OF a",
            &[&siret.as_str(), &nir],
        )?;
        let Some((id, before)) = identite_in(&mut tx, siret, nir)? else {
            return Err(StoreError::Invalid(format!(
                "aucun agent de NIR {nir} dans la collectivité {siret}"
            )));
        };
        let after = c.apply(&before);
        if after.nir != before.nir && identite_in(&mut tx, siret, &after.nir)?.is_some() {
            return Err(StoreError::Invalid(format!(
                "un autre agent de la collectivité {siret} a déjà le NIR {}",
                after.nir
            )));
        }
        tx.execute(
            "UPDATE agent SET nom_usuel = $2, prenom = $3, date_naissance = $4, nir = $5, nom_norm = $6, prenom_norm = $7 WHERE id = $1",
            &[
                &id,
                &after.nom_usuel,
                &after.prenom,
                &after.date_naissance,
                &after.nir,
                &atmp_model::normalize_name(&after.nom_usuel),
                &atmp_model::normalize_name(&after.prenom),
            ],
        )?;
        tx.execute(
            "INSERT INTO agent_correction (agent_id, collectivite_siret, at, actor, avant, apres) VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                &id,
                &siret.as_str(),
                &now(),
                &actor,
                &identite_text(&Some(before.clone())),
                &identite_text(&Some(after.clone())),
            ],
        )?;
        tx.commit()?;
        Ok((before, after))
    }

    fn agent_corrections(
        &mut self,
        siret: &Siret,
    ) -> Result<Vec<(String, String, Identite, Identite)>> {
        Ok(self
            .client
            .query(
                "SELECT at, actor, avant, apres FROM agent_correction WHERE collectivite_siret = $1 ORDER BY id DESC",
                &[&siret.as_str()],
            )?
            .iter()
            .map(|r| {
                (
                    r.get(0),
                    r.get(1),
                    identite_of(Some(r.get(2))).unwrap_or_default(),
                    identite_of(Some(r.get(3))).unwrap_or_default(),
                )
            })
            .collect())
    }

    fn purge_rejets(&mut self, import_id: i64) -> Result<u64> {
        let mut tx = self.client.transaction()?;
        let at = now();
        let n = tx.execute(
            "UPDATE rejet SET source_xml = NULL, base = NULL, fichier = NULL, message = '', purge_le = $2 WHERE import_id = $1 AND purge_le IS NULL",
            &[&import_id, &at],
        )?;
        tx.execute(
            "INSERT INTO purge (import_id, what, purged_at) VALUES ($1, 'rejets', $2) ON CONFLICT (import_id, what) DO NOTHING",
            &[&import_id, &at],
        )?;
        tx.commit()?;
        Ok(n)
    }

    fn checksums(&mut self) -> Result<Vec<(String, String)>> {
        let tables: Vec<String> = self
            .client
            .query(
                "SELECT table_name::text FROM information_schema.tables WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' ORDER BY 1",
                &[],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let mut out = Vec::new();
        for t in tables {
            // Each row as text, in the order of its first column, digested by the server.
            let h: Option<String> = self
                .client
                .query_one(
                    &format!(
                        "SELECT encode(sha256(convert_to(coalesce(string_agg(t::text, E'\\x1e' ORDER BY t::text), ''), 'UTF8')), 'hex') FROM \"{t}\" t"
                    ),
                    &[],
                )?
                .get(0);
            out.push((t, h.unwrap_or_default()));
        }
        Ok(out)
    }
}
