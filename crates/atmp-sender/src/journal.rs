//! The sender's journal: its own SQLite base (never the source, never the platform's), which
//! holds each cycle, each file produced with its SHA-256 and window, each transfer and each
//! receipt. It is what makes a window delivered once: the next cycle starts where the last
//! delivered (or still pending) window ended, and a file left pending by a stopped or failed
//! cycle is taken up at the next start.

use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

use atmp_model::Date;

use crate::SenderError;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS cycle (
    id            INTEGER PRIMARY KEY,
    debut_le      TEXT NOT NULL,
    fin_le        TEXT,
    mode          TEXT NOT NULL,
    fenetre_fin   TEXT,
    etat          TEXT NOT NULL CHECK (etat IN ('en_cours', 'termine', 'echoue', 'repris')),
    -- repris: failed, then its files were delivered by a later start.
    erreur        TEXT
);
CREATE TABLE IF NOT EXISTS fichier (
    id            INTEGER PRIMARY KEY,
    cycle_id      INTEGER NOT NULL REFERENCES cycle (id),
    destination   TEXT NOT NULL,
    type_fichier  TEXT NOT NULL,
    chemin        TEXT NOT NULL,
    nom           TEXT NOT NULL,
    sha256        TEXT NOT NULL,
    fenetre_debut TEXT,
    fenetre_fin   TEXT,
    agents        INTEGER NOT NULL,
    evenements    INTEGER NOT NULL,
    cree_le       TEXT NOT NULL,
    -- a_envoyer: produced; envoye: on the platform, receipt awaited; livre: receipt
    -- reussi or doublon; refuse: the platform rejected the file whole (Import échoué).
    etat          TEXT NOT NULL CHECK (etat IN ('a_envoyer', 'envoye', 'livre', 'refuse')),
    tentatives    INTEGER NOT NULL DEFAULT 0,
    envoye_le     TEXT,
    resultat      TEXT,
    libelle       TEXT,
    accuse        TEXT,
    accuse_le     TEXT,
    erreur        TEXT
);
CREATE INDEX IF NOT EXISTS fichier_destination ON fichier (destination, type_fichier);
";

/// A file as the journal holds it.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct JournalFile {
    pub id: i64,
    pub cycle: i64,
    pub destination: String,
    #[serde(rename = "typeFichier")]
    pub type_fichier: String,
    pub chemin: String,
    pub nom: String,
    pub sha256: String,
    pub fenetre_debut: Option<String>,
    pub fenetre_fin: Option<String>,
    pub agents: i64,
    pub evenements: i64,
    pub cree_le: String,
    pub etat: String,
    pub tentatives: i64,
    pub envoye_le: Option<String>,
    pub resultat: Option<String>,
    pub libelle: Option<String>,
    pub accuse_le: Option<String>,
    pub erreur: Option<String>,
}

/// A cycle with its files.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct JournalCycle {
    pub id: i64,
    pub debut_le: String,
    pub fin_le: Option<String>,
    pub mode: String,
    pub fenetre_fin: Option<String>,
    pub etat: String,
    pub erreur: Option<String>,
    pub fichiers: Vec<JournalFile>,
}

pub struct Journal {
    conn: Connection,
}

fn j(e: rusqlite::Error) -> SenderError {
    SenderError::Journal(e.to_string())
}

impl Journal {
    /// Opens (creating it, for its owner only) the journal base.
    pub fn open(path: &Path) -> Result<Journal, SenderError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| SenderError::Journal(format!("{} : {e}", dir.display())))?;
        }
        let conn = Connection::open(path).map_err(|e| {
            SenderError::Journal(format!("{} ne s'ouvre pas : {e}", path.display()))
        })?;
        conn.busy_timeout(std::time::Duration::from_secs(30))
            .map_err(j)?;
        conn.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;")
            .map_err(j)?;
        conn.execute_batch(SCHEMA).map_err(j)?;
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
        }
        Ok(Journal { conn })
    }

    pub fn start_cycle(
        &self,
        now: &str,
        mode: &str,
        fin: Option<&str>,
    ) -> Result<i64, SenderError> {
        self.conn
            .execute(
                "INSERT INTO cycle (debut_le, mode, fenetre_fin, etat) VALUES (?1, ?2, ?3, 'en_cours')",
                params![now, mode, fin],
            )
            .map_err(j)?;
        Ok(self.conn.last_insert_rowid())
    }

    /// What the cycle turned out to send: `complet`, `differentiel` or both.
    pub fn set_cycle_mode(&self, id: i64, mode: &str) -> Result<(), SenderError> {
        self.conn
            .execute(
                "UPDATE cycle SET mode = ?2 WHERE id = ?1",
                params![id, mode],
            )
            .map_err(j)?;
        Ok(())
    }

    pub fn end_cycle(&self, id: i64, now: &str, error: Option<&str>) -> Result<(), SenderError> {
        self.conn
            .execute(
                "UPDATE cycle SET fin_le = ?2, etat = ?3, erreur = ?4 WHERE id = ?1",
                params![
                    id,
                    now,
                    if error.is_some() { "echoue" } else { "termine" },
                    error
                ],
            )
            .map_err(j)?;
        Ok(())
    }

    /// Records the files of a cycle, all or none.
    pub fn add_files(
        &mut self,
        cycle: i64,
        files: &[crate::export::Fichier],
        now: &str,
    ) -> Result<Vec<i64>, SenderError> {
        let tx = self.conn.transaction().map_err(j)?;
        let mut ids = Vec::new();
        for f in files {
            let nom = Path::new(&f.path)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            tx.execute(
                "INSERT INTO fichier (cycle_id, destination, type_fichier, chemin, nom, sha256, fenetre_debut, fenetre_fin, agents, evenements, cree_le, etat)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, 'a_envoyer')",
                params![cycle, f.destination, f.type_fichier, f.path, nom, f.sha256, f.debut, f.fin, f.agents as i64, f.evenements as i64, now],
            )
            .map_err(j)?;
            ids.push(tx.last_insert_rowid());
        }
        tx.commit().map_err(j)?;
        Ok(ids)
    }

    pub fn attempt_failed(&self, file: i64, error: &str) -> Result<(), SenderError> {
        self.conn
            .execute(
                "UPDATE fichier SET tentatives = tentatives + 1, erreur = ?2 WHERE id = ?1",
                params![file, error],
            )
            .map_err(j)?;
        Ok(())
    }

    pub fn sent(&self, file: i64, now: &str) -> Result<(), SenderError> {
        self.conn
            .execute(
                "UPDATE fichier SET tentatives = tentatives + 1, etat = 'envoye', envoye_le = ?2, erreur = NULL WHERE id = ?1",
                params![file, now],
            )
            .map_err(j)?;
        Ok(())
    }

    pub fn receipt(
        &self,
        file: i64,
        r: &crate::deliver::Receipt,
        now: &str,
    ) -> Result<(), SenderError> {
        let etat = if r.resultat == "echoue" {
            "refuse"
        } else {
            "livre"
        };
        self.conn
            .execute(
                "UPDATE fichier SET etat = ?2, resultat = ?3, libelle = ?4, accuse = ?5, accuse_le = ?6, erreur = NULL WHERE id = ?1",
                params![file, etat, r.resultat, r.libelle, r.name, now],
            )
            .map_err(j)?;
        Ok(())
    }

    /// A failed cycle whose files have all been settled since is marked `repris`.
    pub fn settle_cycles(&self) -> Result<(), SenderError> {
        self.conn
            .execute(
                "UPDATE cycle SET etat = 'repris' WHERE etat = 'echoue' AND EXISTS (SELECT 1 FROM fichier f WHERE f.cycle_id = cycle.id)
                 AND NOT EXISTS (SELECT 1 FROM fichier f WHERE f.cycle_id = cycle.id AND f.etat IN ('a_envoyer', 'envoye'))",
                [],
            )
            .map_err(j)?;
        Ok(())
    }

    /// Files not yet settled (produced but not on the platform, or awaiting their receipt),
    /// oldest first.
    pub fn pending(&self) -> Result<Vec<JournalFile>, SenderError> {
        self.files(
            "WHERE etat IN ('a_envoyer', 'envoye') ORDER BY id",
            params![],
        )
    }

    fn files(
        &self,
        tail: &str,
        p: &[&dyn rusqlite::ToSql],
    ) -> Result<Vec<JournalFile>, SenderError> {
        let mut st = self
            .conn
            .prepare(&format!(
                "SELECT id, cycle_id, destination, type_fichier, chemin, nom, sha256, fenetre_debut, fenetre_fin, agents, evenements, cree_le, etat, tentatives, envoye_le, resultat, libelle, accuse_le, erreur FROM fichier {tail}"
            ))
            .map_err(j)?;
        let rows = st
            .query_map(p, |r| {
                Ok(JournalFile {
                    id: r.get(0)?,
                    cycle: r.get(1)?,
                    destination: r.get(2)?,
                    type_fichier: r.get(3)?,
                    chemin: r.get(4)?,
                    nom: r.get(5)?,
                    sha256: r.get(6)?,
                    fenetre_debut: r.get(7)?,
                    fenetre_fin: r.get(8)?,
                    agents: r.get(9)?,
                    evenements: r.get(10)?,
                    cree_le: r.get(11)?,
                    etat: r.get(12)?,
                    tentatives: r.get(13)?,
                    envoye_le: r.get(14)?,
                    resultat: r.get(15)?,
                    libelle: r.get(16)?,
                    accuse_le: r.get(17)?,
                    erreur: r.get(18)?,
                })
            })
            .map_err(j)?;
        rows.collect::<Result<_, _>>().map_err(j)
    }

    /// Where the next différentiel window of a destination starts: the end of its last
    /// window delivered or still pending, unless a window the platform refused is not
    /// covered by a later one — then its start, so that nothing is lost.
    pub fn next_start(&self, destination: &str) -> Result<Option<Date>, SenderError> {
        let files = self.files(
            "WHERE destination = ?1 AND type_fichier = 'DECLARATION' AND fenetre_fin IS NOT NULL ORDER BY id",
            params![destination],
        )?;
        let ok: Vec<&JournalFile> = files.iter().filter(|f| f.etat != "refuse").collect();
        let mut start: Option<String> = ok.iter().filter_map(|f| f.fenetre_fin.clone()).max();
        for f in files.iter().filter(|f| f.etat == "refuse") {
            let (Some(d), Some(e)) = (&f.fenetre_debut, &f.fenetre_fin) else {
                continue;
            };
            let covered = ok.iter().any(|g| {
                g.fenetre_debut
                    .as_deref()
                    .is_some_and(|gd| gd <= d.as_str())
                    && g.fenetre_fin.as_deref().is_some_and(|ge| ge >= e.as_str())
            });
            if !covered && start.as_deref().is_none_or(|s| d.as_str() < s) {
                start = Some(d.clone());
            }
        }
        Ok(start.and_then(|s| Date::parse(&s)))
    }

    /// The start time of the last cycle.
    pub fn last_cycle_start(&self) -> Result<Option<String>, SenderError> {
        self.conn
            .query_row("SELECT max(debut_le) FROM cycle", [], |r| r.get(0))
            .optional()
            .map(|o| o.flatten())
            .map_err(j)
    }

    /// Every cycle with its files, the latest first.
    pub fn cycles(&self) -> Result<Vec<JournalCycle>, SenderError> {
        let mut st = self
            .conn
            .prepare("SELECT id, debut_le, fin_le, mode, fenetre_fin, etat, erreur FROM cycle ORDER BY id DESC")
            .map_err(j)?;
        let cycles: Vec<JournalCycle> = st
            .query_map([], |r| {
                Ok(JournalCycle {
                    id: r.get(0)?,
                    debut_le: r.get(1)?,
                    fin_le: r.get(2)?,
                    mode: r.get(3)?,
                    fenetre_fin: r.get(4)?,
                    etat: r.get(5)?,
                    erreur: r.get(6)?,
                    fichiers: Vec::new(),
                })
            })
            .map_err(j)?
            .collect::<Result<_, _>>()
            .map_err(j)?;
        let mut out = Vec::new();
        for mut c in cycles {
            c.fichiers = self.files("WHERE cycle_id = ?1 ORDER BY id", params![c.id])?;
            out.push(c);
        }
        Ok(out)
    }
}
