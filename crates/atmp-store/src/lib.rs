//! Storage of atmp. All SQL of the project lives in this crate, with bound parameters.
//!
//! [`Store`] is the trait the rest of the code talks to; [`SqliteStore`] is its embedded
//! implementation (a PostgreSQL one plugs in behind the same trait). One file is integrated
//! in one [`FileTx`]: everything it stores is committed together or not at all (§5.4.2).
//!
//! The file transaction is synchronous on purpose: the integrator owns the connection on its
//! own thread and is fed by the reader through a bounded channel, which is what lets SQLite
//! load millions of rows at bulk speed (see ARCHITECTURE.md).

mod files;
mod platform;
mod postgres;
mod rejets;
mod sqlite;
#[cfg(feature = "test-support")]
pub mod test_support;

/// The migrations of the PostgreSQL backend, in order (a test checks that they give the tables
/// and columns of the SQLite migrations).
pub const POSTGRES_MIGRATIONS: &[&str] = &[
    include_str!("../migrations/postgres/0001_init.sql"),
    include_str!("../migrations/postgres/0002_platform.sql"),
    include_str!("../migrations/postgres/0003_audit.sql"),
    include_str!("../migrations/postgres/0004_purge.sql"),
    include_str!("../migrations/postgres/0005_id_blocks.sql"),
    include_str!("../migrations/postgres/0006_login_failures.sql"),
    include_str!("../migrations/postgres/0007_files.sql"),
    include_str!("../migrations/postgres/0008_rejets.sql"),
    include_str!("../migrations/postgres/0009_doublon.sql"),
    include_str!("../migrations/postgres/0010_lien_mot_de_passe.sql"),
    include_str!("../migrations/postgres/0011_emetteur_actif.sql"),
];

/// Tables of the PostgreSQL migrations that SQLite has no use for: the file store in the base
/// (SQLite keeps files in the data folder).
pub const POSTGRES_ONLY_TABLES: &[&str] = &["fichier_conserve"];

pub use files::{is_local_key, open_files, FileStore, LocalFiles, LARGE_OBJECT_KEY};
pub use platform::*;
pub use postgres::{PgFiles, PgStore};
pub use rejets::{
    AgentCorrection, Identite, NewRejet, Rejet, RejetEtat, RejetMaj, RejetQuery, RejetRaison,
    IDENTITE_CHAMPS,
};
pub use sqlite::SqliteStore;

use atmp_model::{NomenclatureEntry, Siret};

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("erreur de la base de données : {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("erreur de la base de données : {0}")]
    Postgres(String),
    #[error("{0}")]
    Invalid(String),
    #[error("base de données non prise en charge : {0}")]
    Url(String),
    /// The job is being integrated by another instance, or is integrated already: this one
    /// leaves it (not a failure).
    #[error("le travail {0} est déjà pris en charge par une autre instance")]
    JobTaken(i64),
    #[error("erreur d'accès au dossier de la base : {0}")]
    Io(#[from] std::io::Error),
}

/// The result of every storage operation.
pub type Result<T> = std::result::Result<T, StoreError>;

/// The rules of reference data that are not SQL, written once for every backend; `find`
/// looks a collectivité up by SIRET.
pub(crate) mod rules {
    use super::{Collectivite, NewUtilisateur, Result, StoreError};

    /// A new collectivité: its SIRET is free and its CDG, if any, exists. Returns the CDG's id.
    pub fn new_collectivite(
        siret: &str,
        cdg: Option<&str>,
        mut find: impl FnMut(&str) -> Result<Option<Collectivite>>,
    ) -> Result<Option<i64>> {
        if find(siret)?.is_some() {
            return Err(StoreError::Invalid(format!(
                "la collectivité {siret} existe déjà"
            )));
        }
        cdg.map(|c| existing_cdg(c, &mut find)).transpose()
    }

    /// A collectivité attached to another (or to none): both exist and differ. Returns the
    /// collectivité's id and the CDG's.
    pub fn attachment(
        siret: &str,
        cdg: Option<&str>,
        mut find: impl FnMut(&str) -> Result<Option<Collectivite>>,
    ) -> Result<(i64, Option<i64>)> {
        let c = find(siret)?
            .ok_or_else(|| StoreError::Invalid(format!("la collectivité {siret} n'existe pas")))?;
        if cdg == Some(siret) {
            return Err(StoreError::Invalid(
                "une collectivité ne peut pas être rattachée à elle-même".into(),
            ));
        }
        Ok((c.id, cdg.map(|s| existing_cdg(s, &mut find)).transpose()?))
    }

    fn existing_cdg(
        cdg: &str,
        find: &mut impl FnMut(&str) -> Result<Option<Collectivite>>,
    ) -> Result<i64> {
        Ok(find(cdg)?
            .ok_or_else(|| {
                StoreError::Invalid(format!("le CDG {cdg} n'existe pas : créez-le d'abord"))
            })?
            .id)
    }

    /// A new web account: a non-empty login, a collectivité for every role but the platform's
    /// and none for it, and that collectivité exists. Returns its id.
    pub fn new_utilisateur(
        u: &NewUtilisateur,
        mut find: impl FnMut(&str) -> Result<Option<Collectivite>>,
    ) -> Result<Option<i64>> {
        let id = match (&u.collectivite, u.role.needs_collectivite()) {
            (Some(s), true) => Some(
                find(s)?
                    .ok_or_else(|| {
                        StoreError::Invalid(format!(
                            "la collectivité {s} n'existe pas : créez-la d'abord"
                        ))
                    })?
                    .id,
            ),
            (None, true) => {
                return Err(StoreError::Invalid(format!(
                    "le rôle {} demande une collectivité (--collectivite SIRET)",
                    u.role.code()
                )))
            }
            (Some(_), false) => {
                return Err(StoreError::Invalid(
                    "un administrateur plate-forme n'est rattaché à aucune collectivité".into(),
                ))
            }
            (None, false) => None,
        };
        if u.login.trim().is_empty() {
            return Err(StoreError::Invalid("l'identifiant est vide".into()));
        }
        Ok(id)
    }
}

/// A value as stored.
#[derive(Clone, Debug, PartialEq)]
pub enum Cell {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
}

impl Cell {
    /// The text of a `Text` cell.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Cell::Text(s) => Some(s),
            _ => None,
        }
    }
    /// The value of an `Int` cell.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Cell::Int(n) => Some(*n),
            _ => None,
        }
    }
}

/// The tables of integrated records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Table {
    Service,
    Agent,
    Evenement,
    Arret,
    Certificat,
    Lesion,
    Consequence,
    Deces,
}

impl Table {
    /// The SQL name of the table.
    pub fn name(&self) -> &'static str {
        match self {
            Table::Service => "service",
            Table::Agent => "agent",
            Table::Evenement => "evenement",
            Table::Arret => "arret",
            Table::Certificat => "certificat",
            Table::Lesion => "lesion",
            Table::Consequence => "consequence",
            Table::Deces => "deces",
        }
    }

    /// The column that links a row to its parent.
    pub fn parent_column(&self) -> &'static str {
        match self {
            Table::Service | Table::Agent => "collectivite_id",
            Table::Evenement => "agent_id",
            _ => "evenement_id",
        }
    }

    /// Every table, parents before children.
    pub const ALL: [Table; 8] = [
        Table::Service,
        Table::Agent,
        Table::Evenement,
        Table::Arret,
        Table::Certificat,
        Table::Lesion,
        Table::Consequence,
        Table::Deces,
    ];
}

/// A collectivité of the base.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Collectivite {
    pub id: i64,
    pub siret: Siret,
    pub nom: String,
    /// The SIRET of the CDG it is attached to.
    pub cdg_siret: Option<Siret>,
}

/// A SIRET read back from the base, where only checked [`Siret`]s are written.
pub(crate) fn stored_siret(s: &str) -> Result<Siret> {
    Siret::parse(s).map_err(|e| StoreError::Invalid(format!("SIRET « {s} » de la base : {e}")))
}

/// The state of a sender's authorisation for a collectivité (the consent register).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Autorisation {
    Accordee,
    Refusee,
    Retiree,
}

impl Autorisation {
    /// The state as stored (`accordee`, `refusee`, `retiree`).
    pub fn code(&self) -> &'static str {
        match self {
            Autorisation::Accordee => "accordee",
            Autorisation::Refusee => "refusee",
            Autorisation::Retiree => "retiree",
        }
    }
    /// The state of a stored code.
    pub fn parse(s: &str) -> Option<Autorisation> {
        match s {
            "accordee" => Some(Autorisation::Accordee),
            "refusee" => Some(Autorisation::Refusee),
            "retiree" => Some(Autorisation::Retiree),
            _ => None,
        }
    }
}

/// A sender account with its authorisations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Emetteur {
    pub id: i64,
    pub code: String,
    pub nom: Option<String>,
    /// (SIRET, state, date, reference) of each collectivité on record.
    pub autorisations: Vec<(String, Autorisation, String, Option<String>)>,
    /// A disabled sender can no longer log in over FTPS.
    pub actif: bool,
    /// Its last successful FTPS login.
    pub derniere_connexion: Option<String>,
}

/// Added / existing / rejected records of one kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Triple {
    pub added: u64,
    pub existing: u64,
    pub rejected: u64,
}

/// The `counts` object of FORMAT.md §7: one type for the command line's JSON, the import row,
/// the receipt, the import page and the mails (never JSON built or parsed by hand).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct RecordCounts {
    pub services: Triple,
    pub agents: Triple,
    pub evenements: Triple,
    pub arrets: Triple,
    pub certificats: Triple,
    pub lesions: Triple,
    pub consequences: Triple,
    pub deces: Triple,
}

impl RecordCounts {
    /// Every kind in the order of §7: (JSON key, French label, counts).
    pub fn rows(&self) -> [(&'static str, &'static str, Triple); 8] {
        [
            ("services", "Services", self.services),
            ("agents", "Agents", self.agents),
            ("evenements", "Événements", self.evenements),
            ("arrets", "Arrêts", self.arrets),
            ("certificats", "Certificats", self.certificats),
            ("lesions", "Lésions", self.lesions),
            ("consequences", "Conséquences médicales", self.consequences),
            ("deces", "Décès", self.deces),
        ]
    }

    /// The counts of a kind by its JSON key.
    pub fn get_mut(&mut self, key: &str) -> Option<&mut Triple> {
        Some(match key {
            "services" => &mut self.services,
            "agents" => &mut self.agents,
            "evenements" => &mut self.evenements,
            "arrets" => &mut self.arrets,
            "certificats" => &mut self.certificats,
            "lesions" => &mut self.lesions,
            "consequences" => &mut self.consequences,
            "deces" => &mut self.deces,
            _ => return None,
        })
    }
}

/// The result of an import (the `import.result` column).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ImportResult {
    /// The file's transaction is open (never seen once committed: the row is completed in it).
    #[default]
    EnCours,
    Reussi,
    Echoue,
    Doublon,
}

impl ImportResult {
    /// The stored code (also the JSON `result` of §7 and the receipt's `resultat`).
    pub fn code(&self) -> &'static str {
        match self {
            ImportResult::EnCours => "en_cours",
            ImportResult::Reussi => "reussi",
            ImportResult::Echoue => "echoue",
            ImportResult::Doublon => "doublon",
        }
    }

    pub fn parse(s: &str) -> Option<ImportResult> {
        [
            ImportResult::EnCours,
            ImportResult::Reussi,
            ImportResult::Echoue,
            ImportResult::Doublon,
        ]
        .into_iter()
        .find(|r| r.code() == s)
    }
}

impl serde::Serialize for ImportResult {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.code())
    }
}

/// What is recorded of a processed file.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ImportRow {
    pub file_name: String,
    pub sha256: String,
    /// SHA-256 of the first MiB (see [`Store::maybe_integrated`]).
    pub head_sha256: String,
    pub size: u64,
    pub emetteur: Option<String>,
    pub type_fichier: Option<String>,
    pub mode: Option<String>,
    pub date_creation: Option<String>,
    pub cdg_siret: Option<String>,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub result: ImportResult,
    /// The French label of §6.4.
    pub label: String,
    pub errors: u64,
    pub warnings: u64,
    /// The `counts` of §7, stored as their JSON object.
    pub counts: RecordCounts,
    /// The platform job (file received over FTPS) this import belongs to.
    pub job_id: Option<i64>,
    /// A replay ("rejeu"): the import whose rejections it re-integrated.
    pub rejeu_de: Option<i64>,
    /// A duplicate: the import whose bytes it repeats.
    pub doublon_de: Option<i64>,
}

/// An import with its logs, each with its id.
pub type ImportDetail = (ImportRow, Vec<(i64, ImportLog)>);

/// One log pair of an import.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportLog {
    pub collectivite_siret: String,
    pub global: bool,
    pub complet_path: String,
    pub erreurs_path: String,
    pub errors: u64,
    pub warnings: u64,
    pub label: String,
}

impl ImportLog {
    /// The collectivité's SIRET (the CDG's for a global pair); `None` for the file-level pair
    /// of a file rejected before its first block, or a SIRET the file got wrong.
    pub fn siret(&self) -> Option<Siret> {
        Siret::parse(&self.collectivite_siret).ok()
    }
}

/// A prepared lookup: by these key columns, returning the id and these columns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FindId(pub(crate) usize);

/// A prepared insert of these columns (plus the parent and import columns).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InsertId(pub(crate) usize);

/// A row found by a lookup: its id and the requested columns, in order.
#[derive(Clone, Debug, PartialEq)]
pub struct Found {
    pub id: i64,
    pub cells: Vec<Cell>,
}

/// What the retention purge removes of an old import.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PurgeKind {
    /// The file as received (kept under `recus/`).
    FichierRecu,
    /// Its logs, and their copies in the sender's `retours/`.
    Journaux,
    /// The personal data kept with its rejections (fragments, identities, messages).
    Rejets,
}

impl PurgeKind {
    /// The stored code.
    pub fn code(&self) -> &'static str {
        match self {
            PurgeKind::FichierRecu => "fichier_recu",
            PurgeKind::Journaux => "journaux",
            PurgeKind::Rejets => "rejets",
        }
    }

    /// The kind of a stored code.
    pub fn parse(s: &str) -> Option<PurgeKind> {
        [
            PurgeKind::FichierRecu,
            PurgeKind::Journaux,
            PurgeKind::Rejets,
        ]
        .into_iter()
        .find(|k| k.code() == s)
    }
}

/// An import with something to purge: its job (if it came through the platform) and the
/// received file's path (for [`PurgeKind::FichierRecu`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PurgeCandidate {
    pub import_id: i64,
    pub job_id: Option<i64>,
    pub stored_path: String,
}

/// One event of the audit trail: who (a login, `émetteur CODE`, or `système`), what (a
/// stable code: `connexion`, `connexion_refusee`, `telechargement_journal`, `utilisateur`…),
/// the detail (ids and codes; never a NIR nor an agent's name), and from which address.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditEvent {
    pub actor: String,
    pub action: String,
    pub detail: String,
    pub address: String,
}

/// A recorded [`AuditEvent`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditRow {
    pub id: i64,
    /// Local time, `YYYY-MM-DDTHH:MM:SS`.
    pub at: String,
    pub event: AuditEvent,
}

/// The storage of atmp: reference data, import history, and file transactions.
/// The platform's base, one concern: collectivités, émetteurs and their consent register, services, nomenclatures: the reference data files refer to.
pub trait ReferenceStore: Send {
    /// Creates a collectivité (attached to the CDG `cdg` if given, which must exist).
    fn add_collectivite(
        &mut self,
        siret: &Siret,
        nom: &str,
        cdg: Option<&Siret>,
    ) -> Result<Collectivite>;
    /// Every collectivité, by SIRET.
    fn collectivites(&mut self) -> Result<Vec<Collectivite>>;
    /// The collectivité of a SIRET.
    fn collectivite(&mut self, siret: &Siret) -> Result<Option<Collectivite>>;

    // ---- The platform (issue 3): accounts, sessions, jobs, mails, tracking. ----

    /// Attaches a collectivité to a CDG (`None`: detaches it).
    fn set_cdg(&mut self, siret: &Siret, cdg: Option<&Siret>) -> Result<()>;

    /// Creates the sender if needed; returns it.
    fn add_emetteur(&mut self, code: &str, nom: Option<&str>) -> Result<Emetteur>;
    /// Records the state of a sender's authorisation for a collectivité (the consent register).
    fn set_autorisation(
        &mut self,
        emetteur: &str,
        siret: &Siret,
        state: Autorisation,
        reference: Option<&str>,
    ) -> Result<()>;
    /// Every sender with its authorisations, by code.
    fn emetteurs(&mut self) -> Result<Vec<Emetteur>>;
    /// The sender of a code, with its authorisations.
    fn emetteur(&mut self, code: &str) -> Result<Option<Emetteur>>;
    /// Sets the argon2 hash of a sender's FTPS password.
    fn set_emetteur_password(&mut self, code: &str, hash: &str) -> Result<()>;
    /// The argon2 hash of a sender's FTPS password, if it has one and is not disabled.
    fn emetteur_password(&mut self, code: &str) -> Result<Option<String>>;
    /// Enables or disables a sender (FTPS login); false when there is no such sender.
    fn set_emetteur_actif(&mut self, code: &str, actif: bool) -> Result<bool>;
    /// Records a successful FTPS login of a sender.
    fn record_emetteur_connexion(&mut self, code: &str, at: &str) -> Result<()>;
    /// The services of a collectivité: (id, code, libellé).
    fn services(&mut self, collectivite_id: i64) -> Result<Vec<(i64, String, Option<String>)>>;
    /// Creates a service by hand (import id 0); an existing code is left as it is.
    fn add_service(
        &mut self,
        collectivite_id: i64,
        code: &str,
        libelle: Option<&str>,
    ) -> Result<bool>;

    /// Every code of the loaded nomenclatures.
    fn nomenclature_entries(&mut self) -> Result<Vec<NomenclatureEntry>>;
    /// Replaces every nomenclature named in `entries` by the list given; records the version.
    fn replace_nomenclatures(
        &mut self,
        entries: &[NomenclatureEntry],
        version: &str,
        sha256: &str,
    ) -> Result<()>;
    /// (version, sha256, entries, imported_at) of every nomenclature load, newest last.
    fn nomenclature_versions(&mut self) -> Result<Vec<(String, String, i64, String)>>;
}

/// The platform's base, one concern: imports: duplicates, the storage transaction of one file, the tracking table, one import's detail, retention.
pub trait ImportStore: Send {
    /// When a file of these bytes was integrated (result `reussi`): that import's id and
    /// the date it was integrated.
    fn integrated_at(&mut self, sha256: &str) -> Result<Option<(i64, String)>>;
    /// Whether a file of this size whose first MiB has this hash was integrated: when false,
    /// the file cannot be a duplicate and its full hash can be computed while it is read.
    fn maybe_integrated(&mut self, head_sha256: &str, size: u64) -> Result<bool>;
    /// Records a file that was not integrated (`echoue`, `doublon`) with its logs.
    fn record_import(&mut self, row: &ImportRow, logs: &[ImportLog]) -> Result<i64>;
    /// Every import, newest first.
    fn imports(&mut self) -> Result<Vec<(i64, ImportRow)>>;
    /// Number of rows of a table of integrated records.
    fn count(&mut self, table: Table) -> Result<u64>;

    /// Opens the transaction that integrates one file.
    fn begin_file<'a>(&'a mut self, row: &ImportRow) -> Result<Box<dyn FileTx + 'a>>;

    /// One import with its logs: (log id, log).
    fn import(&mut self, id: i64) -> Result<Option<ImportDetail>>;
    /// The tracking table: one row per log pair, newest first, and the number of rows.
    fn suivi(&mut self, q: &SuiviQuery) -> Result<(Vec<SuiviRow>, u64)>;
    /// The imports whose received file (or logs) is older than `before` (local time,
    /// `YYYY-MM-DDTHH:MM:SS`) and not purged yet.
    fn purge_candidates(&mut self, what: PurgeKind, before: &str) -> Result<Vec<PurgeCandidate>>;
    /// Records that this part of an import was purged, now (once).
    fn record_purge(&mut self, import_id: i64, what: PurgeKind) -> Result<()>;
    /// What was purged of an import, and when.
    fn purges_of(&mut self, import_id: i64) -> Result<Vec<(PurgeKind, String)>>;
}

/// The platform's base, one concern: the web's accounts and sessions.
pub trait AccountStore: Send {
    /// Creates a web user (its collectivité must exist; the login must be free).
    fn add_utilisateur(&mut self, u: &NewUtilisateur) -> Result<Utilisateur>;
    /// The user of a login.
    fn utilisateur(&mut self, login: &str) -> Result<Option<Utilisateur>>;
    /// The user of an id.
    fn utilisateur_by_id(&mut self, id: i64) -> Result<Option<Utilisateur>>;
    /// Every user, by login.
    fn utilisateurs(&mut self) -> Result<Vec<Utilisateur>>;
    /// How many users exist (none: the first start creates the administrator).
    fn count_utilisateurs(&mut self) -> Result<u64>;
    /// Sets a user's password hash; `doit_changer`: must change it at next login.
    fn set_utilisateur_password(&mut self, id: i64, hash: &str, doit_changer: bool) -> Result<()>;
    /// Records a one-use link to set a new password ("Mot de passe oublié"): the SHA-256 of
    /// its token, the user, the end of its validity.
    fn create_password_link(&mut self, token_hash: &str, user: i64, expires: &str) -> Result<()>;
    /// The user of a link still valid at `now`, without using it (to show its form).
    fn password_link(&mut self, token_hash: &str, now: &str) -> Result<Option<i64>>;
    /// Uses a link: deletes it and every other link of its user, in one statement that only
    /// one request can win; the user when it was still valid at `now`.
    fn use_password_link(&mut self, token_hash: &str, now: &str) -> Result<Option<i64>>;
    /// Enables or disables a user; disabling ends its sessions.
    fn set_utilisateur_actif(&mut self, id: i64, actif: bool) -> Result<()>;

    /// Records a new session (expired ones are purged).
    fn create_session(
        &mut self,
        token_sha256: &str,
        user: i64,
        csrf: &str,
        expires_at: &str,
    ) -> Result<()>;
    /// The live session of this token: its user and CSRF token.
    fn session(&mut self, token_sha256: &str, now: &str) -> Result<Option<(Utilisateur, String)>>;
    /// Ends a session (logout).
    fn delete_session(&mut self, token_sha256: &str) -> Result<()>;
    /// Ends every session of a user (password change) but `keep`.
    fn delete_sessions_of(&mut self, user: i64, keep: Option<&str>) -> Result<()>;
    /// The failed logins of a key (web or FTPS; an identifier with its address, or an
    /// address) whose first failure is at `since` or later.
    fn login_failures(&mut self, key: &str, since: &str) -> Result<u64>;
    /// Records a failed login of a key at `now` (a count whose first failure is before `since`
    /// starts again); returns the count. Keys past their window are forgotten.
    fn record_login_failure(&mut self, key: &str, now: &str, since: &str) -> Result<u64>;
    /// Forgets a key's failures (a successful login).
    fn clear_login_failures(&mut self, key: &str) -> Result<()>;
}

/// The SQL of [`AccountStore::record_login_failure`], the same on both backends (`$1` key,
/// `$2` now, `$3` since).
pub(crate) const RECORD_LOGIN_FAILURE: &str =
    "INSERT INTO login_failure (key, failures, first_at) VALUES ($1, 1, $2) \
    ON CONFLICT (key) DO UPDATE SET \
    failures = CASE WHEN login_failure.first_at < $3 THEN 1 ELSE login_failure.failures + 1 END, \
    first_at = CASE WHEN login_failure.first_at < $3 THEN $2 ELSE login_failure.first_at END \
    RETURNING failures";

/// The platform's base, one concern: the durable job queue of received files.
pub trait JobStore: Send {
    /// Records a received file as a job waiting to be integrated.
    fn add_job(
        &mut self,
        emetteur: &str,
        file_name: &str,
        stored_path: &str,
        size: u64,
    ) -> Result<i64>;
    /// The oldest job that may be taken now: unfinished (waiting, or interrupted while
    /// running), and either integrated already (to publish) or with no earlier unfinished job
    /// of a sender that shares an authorised collectivité with its sender ([`JOB_ELIGIBLE`]:
    /// two files that may touch the same collectivité go one after the other, in arrival
    /// order). On PostgreSQL a job being integrated by another instance is skipped.
    fn next_job(&mut self) -> Result<Option<Job>>;
    /// The job of an id.
    fn job(&mut self, id: i64) -> Result<Option<Job>>;
    /// Every job's stored path (to find received files whose job was never recorded).
    fn job_paths(&mut self) -> Result<Vec<String>>;
    /// A sender's jobs that are done, with an import, oldest first (its `retours/`).
    fn done_jobs_of(&mut self, emetteur: &str) -> Result<Vec<(Job, i64)>>;
    /// Sets a job's state (`en_cours` counts an attempt), with the last error if any. On
    /// PostgreSQL a job being integrated by another instance is left as it is.
    fn set_job_state(&mut self, id: i64, state: JobState, error: Option<&str>) -> Result<()>;
    /// Marks a job done with the import it gave.
    fn finish_job(&mut self, id: i64, import_id: i64, sha256: &str) -> Result<()>;
    /// The import committed for a job, if any.
    fn import_of_job(&mut self, job_id: i64) -> Result<Option<i64>>;
    /// How many received files wait for, or are in, integration.
    fn pending_jobs(&mut self) -> Result<u64>;
    /// The received files waiting for, or in, integration, oldest first, at most `limit`.
    fn waiting_jobs(&mut self, limit: u64) -> Result<Vec<Job>>;
    /// Waits up to `timeout` for news of the job queue from any instance (a job added, a job
    /// done): true when some came. PostgreSQL listens (`LISTEN atmp_jobs`); SQLite has one
    /// instance, whose own intake wakes its worker, and only waits.
    fn wait_for_jobs(&mut self, timeout: std::time::Duration) -> Result<bool> {
        std::thread::sleep(timeout);
        Ok(false)
    }
}

/// The platform's base, one concern: the mail outbox and who receives what.
pub trait MailStore: Send {
    /// Queues a mail (once per import and recipient).
    fn enqueue_mail(&mut self, m: &NewMail) -> Result<()>;
    /// Claims up to `limit` mails due for sending at `now`: they are not due again, for any
    /// instance, before `until` (the lease of their sending: a mail is sent once whatever
    /// the number of instances, and again only if its sender died before recording it).
    fn claim_mails(&mut self, now: &str, until: &str, limit: usize) -> Result<Vec<Mail>>;
    /// Records a mail as sent.
    fn mail_sent(&mut self, id: i64) -> Result<()>;
    /// Records a failed attempt; `next`: when to try again (`None`: give up).
    fn mail_failed(&mut self, id: i64, error: &str, next: Option<&str>) -> Result<()>;
    /// The recipients of an import's mail for a collectivité: the e-mail of its active users
    /// (and, when `cdg` is set, of that CDG's administrators).
    fn destinataires(&mut self, siret: &str, global: bool) -> Result<Vec<String>>;
}

/// The platform's base, one concern: the audit trail.
pub trait AuditStore: Send {
    /// Records an event of the audit trail (with the current time).
    fn add_audit(&mut self, e: &AuditEvent) -> Result<()>;
    /// The audit trail, newest first: its size and one page.
    fn audit_page(&mut self, offset: u64, limit: u64) -> Result<(u64, Vec<AuditRow>)>;
}

/// The quarantine of rejected records: read, set aside, and the one correction of stored
/// data a person may make (an agent's identity, audited).
pub trait RejetStore: Send {
    /// The rejections a query selects (newest first), and how many there are in all.
    fn rejets(&mut self, q: &RejetQuery) -> Result<(Vec<Rejet>, u64)>;
    /// The imports that replayed rejections of `import_id` (or integrated them as a later
    /// file), in order.
    fn rejeux_of(&mut self, import_id: i64) -> Result<Vec<i64>>;
    /// Sets open rejections aside (`classe`) with a comment; returns how many were open.
    fn classer_rejets(&mut self, ids: &[i64], motif: &str, actor: &str) -> Result<u64>;
    /// An agent of a collectivité by NIR: its id and identity.
    fn agent_identite(&mut self, siret: &Siret, nir: &str) -> Result<Option<(i64, Identite)>>;
    /// Corrects an agent's identity and records who, when, before and after, in one
    /// transaction. Returns (before, after). A NIR another agent of the collectivité holds is
    /// refused.
    fn correct_agent(
        &mut self,
        siret: &Siret,
        nir: &str,
        c: &AgentCorrection,
        actor: &str,
    ) -> Result<(Identite, Identite)>;
    /// The corrections of an agent's identity recorded for a collectivité: (at, actor, before,
    /// after), newest first.
    fn agent_corrections(
        &mut self,
        siret: &Siret,
    ) -> Result<Vec<(String, String, Identite, Identite)>>;
    /// Purges the personal data kept with an import's rejections (fragments, identities,
    /// messages), leaving the rows and a purge row; returns the rows purged.
    fn purge_rejets(&mut self, import_id: i64) -> Result<u64>;
    /// A digest of every table's content (name → SHA-256 of its rows in id order): what a
    /// dry run must leave unchanged.
    fn checksums(&mut self) -> Result<Vec<(String, String)>>;
}

/// The whole base: every concern, one implementation per backend. Callers hold a
/// `Box<dyn Store>` and bring the concerns they use into scope (`use atmp_store::prelude::*`).
pub trait Store:
    ReferenceStore + ImportStore + AccountStore + JobStore + MailStore + AuditStore + RejetStore
{
}

impl<
        T: ReferenceStore
            + ImportStore
            + AccountStore
            + JobStore
            + MailStore
            + AuditStore
            + RejetStore,
    > Store for T
{
}

/// The storage traits, to bring their methods into scope.
pub mod prelude {
    pub use crate::{
        AccountStore, AuditStore, FileTx, ImportStore, JobStore, MailStore, ReferenceStore,
        RejetStore, Store,
    };
}

/// The transaction of one file: lookups and inserts of §5, then commit or rollback.
///
/// Dropping it without [`FileTx::commit`] rolls everything back.
pub trait FileTx {
    /// The id of the import row of this file.
    fn import_id(&self) -> i64;
    /// The collectivité of a SIRET, inside the file's transaction.
    fn collectivite(&mut self, siret: &Siret) -> Result<Option<Collectivite>>;
    /// The sender's authorisation state for a collectivité, if any is on record.
    fn autorisation(
        &mut self,
        emetteur: &str,
        collectivite_id: i64,
    ) -> Result<Option<Autorisation>>;
    /// Prepares a lookup of `table` by `key` columns (the parent column comes first,
    /// implicitly), returning the `want` columns.
    fn prepare_find(
        &mut self,
        table: Table,
        key: &[&'static str],
        want: &[&'static str],
    ) -> Result<FindId>;
    /// Prepares an insert of `cols` (the parent and import columns are added).
    fn prepare_insert(&mut self, table: Table, cols: &[&'static str]) -> Result<InsertId>;
    /// Runs a prepared lookup; `key` in the order of preparation, parent first.
    fn find(&mut self, id: FindId, parent: i64, key: &[Cell]) -> Result<Option<Found>>;
    /// Says that lookups of these one-column `keys` under `parent` come next, so that a
    /// backend whose every lookup is a round trip can answer them in one (PostgreSQL reads
    /// the rows found and, for agents, their dossiers, in a single call). A hint only: every
    /// [`FileTx::find`] and [`FileTx::dossier`] answers exactly as it would without it.
    fn prefetch(&mut self, _id: FindId, _parent: i64, _keys: &[Cell]) -> Result<()> {
        Ok(())
    }
    /// Prepares the read, in one statement, of every row under one agent of each of `parts`
    /// (its events, its events' children), each part with its own columns.
    fn prepare_dossier(&mut self, parts: &[(Table, &'static [&'static str])]) -> Result<FindId>;
    /// Runs a prepared dossier read: (part index, parent id, row) for every row under the agent.
    fn dossier(&mut self, id: FindId, agent_id: i64) -> Result<Vec<(usize, i64, Found)>>;
    /// Runs a prepared insert; returns the new row's id.
    fn insert(&mut self, id: InsertId, parent: i64, cells: &[Cell]) -> Result<i64>;
    /// The service code of a service id.
    fn service_code(&mut self, service_id: i64) -> Result<Option<String>>;
    /// Keeps a complete local file (a log) in the base *inside this transaction*, so that it
    /// exists exactly when the import does; returns its key. `None`: this backend keeps files
    /// on the local disk, and the caller renames them once committed (SQLite).
    fn store_file(&mut self, _local: &std::path::Path) -> Result<Option<String>> {
        Ok(None)
    }
    /// Keeps rejected records in quarantine, for `import_id` (this file's import, or, in a
    /// replay, the import the records came from).
    fn add_rejets(&mut self, import_id: i64, rows: &[NewRejet]) -> Result<()>;
    /// The open rejections of a collectivité (by the block's SIRET): (id, key, keys under
    /// it), so that a record this file integrates with all of those closes them.
    fn open_rejets(&mut self, siret: &str) -> Result<Vec<(i64, String, Vec<String>)>>;
    /// Closes open rejections as integrated (`rejoue`) by this file's import.
    fn close_rejets(&mut self, ids: &[i64]) -> Result<()>;
    /// In a replay: the new reason of rejections that failed again (they stay open).
    fn update_rejets(&mut self, rows: &[RejetMaj]) -> Result<()>;
    /// Finishes the import row and its logs, and commits everything.
    fn commit(self: Box<Self>, row: &ImportRow, logs: &[ImportLog]) -> Result<()>;
}

/// The condition on `job` of [`JobStore::next_job`], the same SQL on both backends: a job
/// integrated already (to publish), or one with no earlier unfinished, unintegrated job of a
/// sender sharing an authorised collectivité with its sender (a file stores data only for the
/// collectivités its sender is authorised for; the authorisation's state does not matter, it
/// may change while the file waits).
pub const JOB_ELIGIBLE: &str = "job.state IN ('attente', 'en_cours') AND (\
    EXISTS (SELECT 1 FROM import i WHERE i.job_id = job.id) \
    OR NOT EXISTS (SELECT 1 FROM job e WHERE e.id < job.id AND e.state IN ('attente', 'en_cours') \
        AND NOT EXISTS (SELECT 1 FROM import i WHERE i.job_id = e.id) \
        AND (e.emetteur = job.emetteur OR EXISTS (\
            SELECT 1 FROM autorisation a1 JOIN emetteur m1 ON m1.id = a1.emetteur_id \
            JOIN autorisation a2 ON a2.collectivite_id = a1.collectivite_id \
            JOIN emetteur m2 ON m2.id = a2.emetteur_id \
            WHERE m1.code = job.emetteur AND m2.code = e.emetteur))))";

/// Opens the store named by a URL: `sqlite://PATH`, or `postgres://…` (libpq's form; TLS
/// with `sslmode=require`, see [`postgres`]).
pub fn open(url: &str) -> Result<Box<dyn Store>> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        Ok(Box::new(SqliteStore::open(std::path::Path::new(path))?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Box::new(PgStore::connect(url)?))
    } else {
        Err(StoreError::Url(format!(
            "« {} » : adresse attendue de la forme sqlite://CHEMIN ou postgres://…",
            redact_url(url)
        )))
    }
}

/// The backend a URL names, as said at start (`SQLite` or `PostgreSQL`).
pub fn backend_name(url: &str) -> &'static str {
    if url.starts_with("sqlite://") {
        "SQLite"
    } else {
        "PostgreSQL"
    }
}

/// A base URL as it may be shown in errors and traces: its password masked.
pub fn redact_url(url: &str) -> String {
    postgres::redact(url)
}

/// Now, as stored (`YYYY-MM-DDTHH:MM:SS`, local time of the platform).
pub fn now() -> String {
    chrono::Local::now().format("%Y-%m-%dT%H:%M:%S").to_string()
}
