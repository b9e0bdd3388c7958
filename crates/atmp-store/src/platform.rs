//! The platform's records: accounts, sessions, jobs, mails and the tracking table.

/// The four roles of the admin web.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Administrateur plate-forme: everything.
    Plateforme,
    /// Administrateur CDG: the CDG, its attached collectivités, the global CDG logs.
    Cdg,
    /// Administrateur collectivité: its collectivité only.
    CollectiviteAdmin,
    /// Utilisateur collectivité: its collectivité only, read only.
    Collectivite,
}

impl Role {
    /// Every role, the highest first.
    pub const ALL: [Role; 4] = [
        Role::Plateforme,
        Role::Cdg,
        Role::CollectiviteAdmin,
        Role::Collectivite,
    ];

    /// The code stored and used on the command line.
    pub fn code(&self) -> &'static str {
        match self {
            Role::Plateforme => "plateforme",
            Role::Cdg => "cdg",
            Role::CollectiviteAdmin => "collectivite-admin",
            Role::Collectivite => "collectivite",
        }
    }

    /// The role of a stored code.
    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.code() == s)
    }

    /// The French name shown to users.
    pub fn libelle(&self) -> &'static str {
        match self {
            Role::Plateforme => "Administrateur plate-forme",
            Role::Cdg => "Administrateur CDG",
            Role::CollectiviteAdmin => "Administrateur collectivité",
            Role::Collectivite => "Utilisateur collectivité",
        }
    }

    /// Whether the role is tied to a collectivité (every role but the platform's).
    pub fn needs_collectivite(&self) -> bool {
        !matches!(self, Role::Plateforme)
    }
}

/// A user to create.
#[derive(Clone, Debug)]
pub struct NewUtilisateur {
    pub login: String,
    pub password_hash: String,
    pub role: Role,
    /// The SIRET of its collectivité (or CDG); required for every role but `Plateforme`.
    pub collectivite: Option<String>,
    pub email: Option<String>,
    pub doit_changer: bool,
}

/// A user of the admin web.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Utilisateur {
    pub id: i64,
    pub login: String,
    pub password_hash: String,
    pub role: Role,
    pub collectivite_id: Option<i64>,
    pub collectivite_siret: Option<String>,
    pub collectivite_nom: Option<String>,
    pub email: Option<String>,
    pub doit_changer: bool,
    pub actif: bool,
}

/// A file received over FTPS, to integrate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Job {
    pub id: i64,
    pub emetteur: String,
    pub file_name: String,
    pub stored_path: String,
    pub size: u64,
    pub received_at: String,
    pub state: JobState,
    pub attempts: u64,
}

/// Where a job is (the `job.state` column).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobState {
    /// Received, waiting for a worker (or for a retry).
    Attente,
    /// Being integrated.
    EnCours,
    /// Integrated (or set aside): its import row says how.
    Fait,
}

impl JobState {
    pub fn code(&self) -> &'static str {
        match self {
            JobState::Attente => "attente",
            JobState::EnCours => "en_cours",
            JobState::Fait => "fait",
        }
    }

    pub fn parse(s: &str) -> Option<JobState> {
        [JobState::Attente, JobState::EnCours, JobState::Fait]
            .into_iter()
            .find(|j| j.code() == s)
    }
}

/// Whose imports a query may see.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Every log, global CDG logs included.
    Tout,
    /// A CDG: the logs of itself and its attached collectivités, and its global logs.
    Cdg { id: i64, siret: String },
    /// One collectivité's own logs.
    Collectivite { siret: String },
}

impl Scope {
    /// Whether this scope sees a log: the one rule of who sees which import and log. The
    /// tracking table's SQL (`ImportStore::suivi`) says the same in SQL, and a test checks
    /// that both agree on every scope and every kind of log.
    ///
    /// `cdg_of_log`: the CDG the log's collectivité is attached to, if any.
    pub fn sees(&self, log_siret: &str, global: bool, cdg_of_log: Option<&str>) -> bool {
        match self {
            Scope::Tout => true,
            // A CDG sees its global logs, its own logs and those of its attached
            // collectivités; never another CDG's global log.
            Scope::Cdg { siret, .. } => {
                log_siret == siret || (!global && cdg_of_log == Some(siret.as_str()))
            }
            Scope::Collectivite { siret } => !global && log_siret == siret,
        }
    }
}

/// A query of the tracking table.
#[derive(Clone, Debug)]
pub struct SuiviQuery {
    pub scope: Scope,
    /// `AGENT`, `SERVICE` or `DECLARATION`; `None`: every type.
    pub type_fichier: Option<String>,
    /// First day, `YYYY-MM-DD`, included.
    pub du: String,
    /// Last day, `YYYY-MM-DD`, included.
    pub au: String,
    pub limit: u64,
    pub offset: u64,
    /// Only the lines of this collectivité (its SIRET; a CDG's global lines too).
    pub collectivite: Option<String>,
    /// Only the files of this sender (its code).
    pub emetteur: Option<String>,
    /// Only the lines of this result.
    pub resultat: Option<SuiviResultat>,
    /// Only the files whose name contains this text (case-insensitive for ASCII letters).
    pub nom_fichier: Option<String>,
    /// Oldest first instead of newest first.
    pub croissant: bool,
}

impl Default for SuiviQuery {
    fn default() -> SuiviQuery {
        SuiviQuery {
            scope: Scope::Tout,
            type_fichier: None,
            du: "0000-00-00".into(),
            au: "9999-12-31".into(),
            limit: 20,
            offset: 0,
            collectivite: None,
            emetteur: None,
            resultat: None,
            nom_fichier: None,
            croissant: false,
        }
    }
}

/// The result of one line of the tracking table, as a user filters and reads it: an
/// integrated file with or without `ERROR` lines in this log, a file rejected whole, a
/// duplicate, a file whose transaction is still open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SuiviResultat {
    Reussi,
    ReussiAvecErreurs,
    Echoue,
    Doublon,
    EnCours,
}

impl SuiviResultat {
    /// Every kind, in the order the filters list them.
    pub const ALL: [SuiviResultat; 5] = [
        SuiviResultat::Reussi,
        SuiviResultat::ReussiAvecErreurs,
        SuiviResultat::Echoue,
        SuiviResultat::Doublon,
        SuiviResultat::EnCours,
    ];

    /// The code used in URLs.
    pub fn code(self) -> &'static str {
        match self {
            SuiviResultat::Reussi => "reussi",
            SuiviResultat::ReussiAvecErreurs => "erreurs",
            SuiviResultat::Echoue => "echoue",
            SuiviResultat::Doublon => "doublon",
            SuiviResultat::EnCours => "en_cours",
        }
    }

    pub fn parse(s: &str) -> Option<SuiviResultat> {
        SuiviResultat::ALL.into_iter().find(|r| r.code() == s)
    }

    /// The kind of a line: its import's result and its log's `ERROR` lines.
    pub fn of(result: crate::ImportResult, errors: u64) -> SuiviResultat {
        match result {
            crate::ImportResult::Reussi if errors > 0 => SuiviResultat::ReussiAvecErreurs,
            crate::ImportResult::Reussi => SuiviResultat::Reussi,
            crate::ImportResult::Echoue => SuiviResultat::Echoue,
            crate::ImportResult::Doublon => SuiviResultat::Doublon,
            crate::ImportResult::EnCours => SuiviResultat::EnCours,
        }
    }

    /// The SQL condition on `i` (import) and `l` (import_log).
    fn sql(self) -> &'static str {
        match self {
            SuiviResultat::Reussi => "i.result = 'reussi' AND l.errors = 0",
            SuiviResultat::ReussiAvecErreurs => "i.result = 'reussi' AND l.errors > 0",
            SuiviResultat::Echoue => "i.result = 'echoue'",
            SuiviResultat::Doublon => "i.result = 'doublon'",
            SuiviResultat::EnCours => "i.result = 'en_cours'",
        }
    }
}

/// The SQL of a tracking-table query, the same for every backend but for its placeholders
/// (`?N` or `$N`): the scope's filter says in SQL what [`Scope::sees`] says.
pub(crate) struct SuiviSql {
    /// The number of rows matching, with `params[..count_params]`.
    pub count: String,
    pub count_params: usize,
    /// One page of rows, with every param (the last two: limit and offset).
    pub page: String,
    pub params: Vec<crate::Cell>,
}

impl SuiviQuery {
    pub(crate) fn sql(&self, ph: fn(usize) -> String) -> SuiviSql {
        use crate::Cell;
        // Dates are stored as local `YYYY-MM-DDTHH:MM:SS`: the period is a text range.
        let mut params = vec![
            Cell::Text(self.du.clone()),
            Cell::Text(format!("{}T99", self.au)),
        ];
        let mut wheres = vec![
            format!("l.started_at >= {}", ph(1)),
            format!("l.started_at < {}", ph(2)),
        ];
        match &self.scope {
            Scope::Tout => {}
            Scope::Cdg { id, siret } => {
                wheres.push(format!(
                    "((l.global = 0 AND l.collectivite_siret IN (SELECT siret FROM collectivite WHERE id = {0} OR cdg_id = {0})) \
                     OR (l.global = 1 AND l.collectivite_siret = {1}))",
                    ph(3),
                    ph(4)
                ));
                params.push(Cell::Int(*id));
                params.push(Cell::Text(siret.clone()));
            }
            Scope::Collectivite { siret } => {
                wheres.push(format!("l.global = 0 AND l.collectivite_siret = {}", ph(3)));
                params.push(Cell::Text(siret.clone()));
            }
        }
        if let Some(t) = &self.type_fichier {
            wheres.push(format!("l.type_fichier = {}", ph(params.len() + 1)));
            params.push(Cell::Text(t.clone()));
        }
        if let Some(c) = &self.collectivite {
            wheres.push(format!("l.collectivite_siret = {}", ph(params.len() + 1)));
            params.push(Cell::Text(c.clone()));
        }
        if let Some(e) = &self.emetteur {
            wheres.push(format!("i.emetteur = {}", ph(params.len() + 1)));
            params.push(Cell::Text(e.clone()));
        }
        if let Some(r) = self.resultat {
            wheres.push(r.sql().to_string());
        }
        if let Some(n) = self.nom_fichier.as_deref().filter(|n| !n.is_empty()) {
            // A substring, its LIKE wildcards taken literally.
            let escaped: String = n
                .to_lowercase()
                .chars()
                .flat_map(|c| match c {
                    '%' | '_' | '!' => vec!['!', c],
                    c => vec![c],
                })
                .collect();
            wheres.push(format!(
                "lower(i.file_name) LIKE {} ESCAPE '!'",
                ph(params.len() + 1)
            ));
            params.push(Cell::Text(format!("%{escaped}%")));
        }
        let filter = wheres.join(" AND ");
        let n = params.len();
        let order = if self.croissant { "ASC" } else { "DESC" };
        let page = format!(
            "SELECT l.id, l.import_id, l.type_fichier, l.started_at, l.label, l.collectivite_siret, c.nom, l.global, i.file_name, i.rejeu_de, \
             i.result, l.errors, i.emetteur, i.doublon_de \
             FROM import_log l JOIN import i ON i.id = l.import_id LEFT JOIN collectivite c ON c.siret = l.collectivite_siret \
             WHERE {filter} ORDER BY l.started_at {order}, l.id {order} LIMIT {} OFFSET {}",
            ph(n + 1),
            ph(n + 2)
        );
        params.push(Cell::Int(self.limit as i64));
        params.push(Cell::Int(self.offset as i64));
        SuiviSql {
            count: format!(
                "SELECT count(*) FROM import_log l JOIN import i ON i.id = l.import_id WHERE {filter}"
            ),
            count_params: n,
            page,
            params,
        }
    }
}

/// One line of the tracking table (one log pair of an import).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SuiviRow {
    pub log_id: i64,
    pub import_id: i64,
    pub type_fichier: Option<String>,
    pub started_at: String,
    pub label: String,
    pub collectivite_siret: String,
    pub collectivite_nom: Option<String>,
    pub global: bool,
    pub file_name: String,
    /// A replay: the import whose rejections it replayed.
    pub rejeu_de: Option<i64>,
    /// The import's result.
    pub result: crate::ImportResult,
    /// The `ERROR` lines of this log.
    pub errors: u64,
    /// The sender's code, when the file named a known one.
    pub emetteur: Option<String>,
    /// A duplicate: the import whose bytes it repeats.
    pub doublon_de: Option<i64>,
}

impl SuiviRow {
    /// What the line shows as its result.
    pub fn resultat(&self) -> SuiviResultat {
        SuiviResultat::of(self.result, self.errors)
    }
}

/// A mail to queue.
#[derive(Clone, Debug)]
pub struct NewMail {
    pub import_id: i64,
    pub recipient: String,
    pub subject: String,
    pub body: String,
    /// (file name, path of a log) to attach.
    pub attachments: Vec<(String, String)>,
}

/// A queued mail.
#[derive(Clone, Debug)]
pub struct Mail {
    pub id: i64,
    pub import_id: i64,
    pub recipient: String,
    pub subject: String,
    pub body: String,
    pub attachments: Vec<(String, String)>,
    pub attempts: u64,
}
