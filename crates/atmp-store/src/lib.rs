//! Storage of atmp. All SQL of the project lives in this crate, with bound parameters.
//!
//! [`Store`] is the trait the rest of the code talks to; [`SqliteStore`] is its embedded
//! implementation (a PostgreSQL one plugs in behind the same trait). One file is integrated
//! in one [`FileTx`]: everything it stores is committed together or not at all (§5.4.2).
//!
//! The file transaction is synchronous on purpose: the integrator owns the connection on its
//! own thread and is fed by the reader through a bounded channel, which is what lets SQLite
//! load millions of rows at bulk speed (see ARCHITECTURE.md).

mod sqlite;

pub use sqlite::SqliteStore;

use atmp_model::{NomenclatureEntry, Siret};

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("erreur de la base de données : {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("{0}")]
    Invalid(String),
    #[error("base de données non prise en charge : {0}")]
    Url(String),
    #[error("erreur d'accès au dossier de la base : {0}")]
    Io(#[from] std::io::Error),
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// A value as stored.
#[derive(Clone, Debug, PartialEq)]
pub enum Cell {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
}

impl Cell {
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Cell::Text(s) => Some(s),
            _ => None,
        }
    }
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
    pub siret: String,
    pub nom: String,
    /// The SIRET of the CDG it is attached to.
    pub cdg_siret: Option<String>,
}

/// The state of a sender's authorisation for a collectivité (the consent register).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Autorisation {
    Accordee,
    Refusee,
    Retiree,
}

impl Autorisation {
    pub fn code(&self) -> &'static str {
        match self {
            Autorisation::Accordee => "accordee",
            Autorisation::Refusee => "refusee",
            Autorisation::Retiree => "retiree",
        }
    }
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
    /// `reussi`, `echoue` or `doublon`.
    pub result: String,
    /// The French label of §6.4.
    pub label: String,
    pub errors: u64,
    pub warnings: u64,
    /// The JSON `counts` object.
    pub counts: String,
}

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

/// The storage of atmp: reference data, import history, and file transactions.
pub trait Store: Send {
    /// Creates a collectivité (attached to the CDG `cdg` if given, which must exist).
    fn add_collectivite(
        &mut self,
        siret: &Siret,
        nom: &str,
        cdg: Option<&Siret>,
    ) -> Result<Collectivite>;
    fn collectivites(&mut self) -> Result<Vec<Collectivite>>;
    fn collectivite(&mut self, siret: &str) -> Result<Option<Collectivite>>;

    /// Creates the sender if needed; returns it.
    fn add_emetteur(&mut self, code: &str, nom: Option<&str>) -> Result<Emetteur>;
    /// Records the state of a sender's authorisation for a collectivité (the consent register).
    fn set_autorisation(
        &mut self,
        emetteur: &str,
        siret: &str,
        state: Autorisation,
        reference: Option<&str>,
    ) -> Result<()>;
    fn emetteurs(&mut self) -> Result<Vec<Emetteur>>;
    fn emetteur(&mut self, code: &str) -> Result<Option<Emetteur>>;

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

    /// When a file of these bytes was integrated (result `reussi`), the date of that import.
    fn integrated_at(&mut self, sha256: &str) -> Result<Option<String>>;
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
}

/// The transaction of one file: lookups and inserts of §5, then commit or rollback.
///
/// Dropping it without [`FileTx::commit`] rolls everything back.
pub trait FileTx {
    /// The id of the import row of this file.
    fn import_id(&self) -> i64;
    fn collectivite(&mut self, siret: &str) -> Result<Option<Collectivite>>;
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
    /// Prepares the read, in one statement, of every row under one agent of each of `parts`
    /// (its events, its events' children), each part with its own columns.
    fn prepare_dossier(&mut self, parts: &[(Table, &'static [&'static str])]) -> Result<FindId>;
    /// Runs a prepared dossier read: (part index, parent id, row) for every row under the agent.
    fn dossier(&mut self, id: FindId, agent_id: i64) -> Result<Vec<(usize, i64, Found)>>;
    /// Runs a prepared insert; returns the new row's id.
    fn insert(&mut self, id: InsertId, parent: i64, cells: &[Cell]) -> Result<i64>;
    /// The service code of a service id.
    fn service_code(&mut self, service_id: i64) -> Result<Option<String>>;
    /// Finishes the import row and its logs, and commits everything.
    fn commit(self: Box<Self>, row: &ImportRow, logs: &[ImportLog]) -> Result<()>;
}

/// Opens the store named by a URL: `sqlite://PATH` (PostgreSQL: a later issue).
pub fn open(url: &str) -> Result<Box<dyn Store>> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        Ok(Box::new(SqliteStore::open(std::path::Path::new(path))?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Err(StoreError::Url(
            "PostgreSQL n'est pas encore disponible dans cette version (SQLite seulement)".into(),
        ))
    } else {
        Err(StoreError::Url(format!(
            "« {url} » : adresse attendue de la forme sqlite://CHEMIN ou postgres://…"
        )))
    }
}

/// Now, as stored (`YYYY-MM-DDTHH:MM:SS`, local time of the platform).
pub fn now() -> String {
    chrono::Local::now().format("%Y-%m-%dT%H:%M:%S").to_string()
}
