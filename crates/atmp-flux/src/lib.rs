//! The flux AT/MP file format (FORMAT.md §1–§4): a streaming reader that knows the line and
//! column of every element, the record checks, a writer and a generator of realistic files.
//!
//! The reader never holds more than one record (one agent with its events) in memory, so a
//! file of any size is read in bounded memory. Problems are data ([`Issue`]), never panics:
//! a problem inside a record rejects that record only; a problem of the file as a whole is
//! a [`FluxError`] and rejects the file.

pub mod gen;
mod input;
mod reader;
mod record;
pub mod scan;
pub mod spec;
mod stage;
mod writer;
pub mod xsd;

use std::fmt;
use std::path::Path;

pub use input::{io_error_fr, open_path, open_reader};
pub use reader::{BlockStart, FluxReader, Item, Node, MAX_RECORD_NODES, MAX_RECORD_TEXT};
pub use record::{check_header, check_record, Context, Record, Value};
pub use scan::{Limits, ScanError};
pub use stage::{read_stage, Checks, Piece, Pieces, StageOptions};
pub use writer::{escape, write_block_end, write_block_start, write_node, FluxWriter};

use atmp_model::{Date, DateTime, Mode, Nomenclatures, Siret, TypeFichier};

/// How serious an [`Issue`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    /// Rejects the record that carries it.
    Error,
    /// Reported, the record is kept.
    Warn,
}

/// One problem found in a file, with where it is: for programs (code, line, column, path)
/// and for people (a French message).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Issue {
    pub severity: Severity,
    /// A stable code, e.g. `NIR`, `OBLIGATOIRE`, `STRUCTURE_ORDRE`.
    pub code: &'static str,
    pub message: String,
    pub line: u64,
    pub column: u64,
    /// XPath-like location, e.g. `/flux/collectivite[1]/agent[2]/nir`.
    pub path: String,
}

impl Issue {
    pub fn error(code: &'static str, message: String, line: u64, column: u64, path: &str) -> Issue {
        Issue {
            severity: Severity::Error,
            code,
            message,
            line,
            column,
            path: path.to_string(),
        }
    }
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ligne {}, colonne {} ({}) : {} [{}]",
            self.line, self.column, self.path, self.message, self.code
        )
    }
}

/// Why a file is rejected whole (§5.4.1): malformed, DOCTYPE, bad encoding, wrong root or
/// header, control totals that do not match.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message} (ligne {line}, colonne {column})")]
pub struct FluxError {
    /// A stable code, e.g. `XML_MALFORME`, `LIMITE_PROFONDEUR`.
    pub code: &'static str,
    /// French, for the `Import échoué : …` label.
    pub message: String,
    pub line: u64,
    pub column: u64,
}

impl FluxError {
    /// An error about the file as a whole, with no position in it.
    pub fn file(code: &'static str, message: String) -> FluxError {
        FluxError {
            code,
            message,
            line: 0,
            column: 0,
        }
    }

    /// The error as an [`Issue`] (for `atmp validate --json`).
    pub fn to_issue(&self) -> Issue {
        Issue::error(
            self.code,
            self.message.clone(),
            self.line,
            self.column,
            "/flux",
        )
    }
}

/// The checked header of a file.
#[derive(Clone, Debug)]
pub struct Header {
    pub emetteur: String,
    pub type_fichier: TypeFichier,
    pub mode: Mode,
    pub date_creation: DateTime,
    pub periode_debut: Option<Date>,
    pub periode_fin: Option<Date>,
    pub limite_anteriorite: Option<Date>,
    pub cdg: Option<Siret>,
    pub nombre_agents: Option<u64>,
    pub nombre_evenements: Option<u64>,
}

impl Header {
    /// Checks the `<entete>` element; any problem rejects the file.
    pub fn from_node(node: &Node) -> Result<Header, FluxError> {
        let rec = check_header(node);
        if let Some(first) = rec.errors.first() {
            let all: Vec<String> = rec.errors.iter().map(|e| e.message.clone()).collect();
            return Err(FluxError {
                code: "ENTETE",
                message: format!("en-tête invalide : {}", all.join(" ; ")),
                line: first.line,
                column: first.column,
            });
        }
        let text = |c: &str| rec.text(c).unwrap_or_default().to_string();
        let int = |c: &str| match rec.get(c) {
            Some(Value::Int(n)) => Some(*n as u64),
            _ => None,
        };
        Ok(Header {
            emetteur: text("emetteur"),
            type_fichier: TypeFichier::parse(&text("type_fichier")).expect("checked by the spec"),
            mode: Mode::parse(&text("mode")).expect("checked by the spec"),
            date_creation: match rec.get("date_creation") {
                Some(Value::DateTime(d)) => *d,
                _ => unreachable!("dateCreation is mandatory and checked"),
            },
            periode_debut: rec.date("periode_debut"),
            periode_fin: rec.date("periode_fin"),
            limite_anteriorite: rec.date("limite_anteriorite"),
            cdg: rec.text("cdg").and_then(|s| Siret::parse(s).ok()),
            nombre_agents: int("nombre_agents"),
            nombre_evenements: int("nombre_evenements"),
        })
    }

    /// Checks the control totals against what the reader counted (§2).
    pub fn check_totals(&self, agents: u64, evenements: u64) -> Result<(), FluxError> {
        let mut problems = Vec::new();
        if let Some(n) = self.nombre_agents {
            if n != agents {
                problems.push(format!(
                    "nombreAgents annonce {n} agent(s), le fichier en contient {agents}"
                ));
            }
        }
        if let Some(n) = self.nombre_evenements {
            if n != evenements {
                problems.push(format!("nombreEvenements annonce {n} événement(s), le fichier en contient {evenements}"));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(FluxError::file(
                "TOTAUX",
                format!(
                    "totaux de contrôle incohérents (fichier tronqué ou corrompu) : {}",
                    problems.join(" ; ")
                ),
            ))
        }
    }
}

/// The outcome of checking a whole file with no database (`atmp validate`).
#[derive(Clone, Debug, Default)]
pub struct Validation {
    pub errors: Vec<Issue>,
    pub warnings: Vec<Issue>,
    /// Issues not kept beyond [`Validation::LIMIT`].
    pub dropped: u64,
}

impl Validation {
    /// How many issues of each severity are kept, so that a huge bad file stays in bounded memory.
    pub const LIMIT: usize = 10_000;

    pub fn valid(&self) -> bool {
        self.errors.is_empty()
    }

    fn push(&mut self, issue: Issue) {
        let list = if issue.severity == Severity::Error {
            &mut self.errors
        } else {
            &mut self.warnings
        };
        if list.len() < Self::LIMIT {
            list.push(issue);
        } else {
            self.dropped += 1;
        }
    }
}

/// Checks everything that needs no database: format, structure, mandatory fields, codes,
/// NIR, dates, control totals. The same read stage as `atmp import` ([`read_stage`]).
pub fn validate_path(path: &Path, nomenclatures: &Nomenclatures, limits: &Limits) -> Validation {
    let mut out = Validation::default();
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) => {
            out.push(
                FluxError::file(
                    "LECTURE",
                    format!("le fichier ne peut pas être lu : {}", io_error_fr(&e)),
                )
                .to_issue(),
            );
            return out;
        }
    };
    if let Ok(m) = file.metadata() {
        if m.len() > limits.max_file {
            out.push(
                FluxError::file(
                    "LIMITE_TAILLE",
                    format!(
                        "le fichier dépasse la taille maximale admise ({}) ; fichier refusé",
                        scan::human(limits.max_file)
                    ),
                )
                .to_issue(),
            );
            return out;
        }
    }
    validate_reader(Box::new(file), nomenclatures, limits)
}

/// Same as [`validate_path`] for bytes in memory (tests, fuzzing).
pub fn validate_bytes(bytes: Vec<u8>, nomenclatures: &Nomenclatures) -> Validation {
    validate_reader(
        Box::new(std::io::Cursor::new(bytes)),
        nomenclatures,
        &Limits::default(),
    )
}

/// Same as [`validate_path`] for any byte source.
pub fn validate_reader(
    raw: Box<dyn std::io::Read + Send>,
    nomenclatures: &Nomenclatures,
    limits: &Limits,
) -> Validation {
    let mut out = Validation::default();
    let opts = StageOptions {
        limits: *limits,
        nomenclatures,
        position: None,
        fragments: false,
        // Validation only collects issues: the balance leaves nearly all the checks to it.
        checks: Checks::Balanced,
    };
    read_stage(raw, &opts, &|_| (), |pieces| {
        if let Err(e) = check_pieces(pieces, &mut out) {
            out.push(e.to_issue());
        }
    });
    out
}

fn check_pieces(pieces: &mut Pieces<'_, ()>, out: &mut Validation) -> Result<(), FluxError> {
    let mut header: Option<Header> = None;
    loop {
        match pieces.next_piece() {
            Piece::Header(h) => header = Some(h?),
            Piece::End { agents, evenements } => {
                return header
                    .expect("a complete file has a header")
                    .check_totals(agents, evenements)
            }
            Piece::Fatal(e) => return Err(e),
            Piece::Block(b) => {
                if let Err(e) = Siret::parse(&b.siret) {
                    out.push(Issue::error(
                        "SIRET",
                        if b.siret.is_empty() {
                            "l'attribut siret de <collectivite> est obligatoire".to_string()
                        } else {
                            format!("SIRET de collectivité invalide « {} » : {e}", b.siret)
                        },
                        b.line,
                        b.column,
                        &format!("{}/@siret", b.path),
                    ));
                }
                for issue in b.attribute_issues() {
                    out.push(issue);
                }
            }
            Piece::Record(rec) => {
                for issue in rec.0.all_issues() {
                    out.push(issue.clone());
                }
            }
            Piece::Stray { line, column, path } => out.push(Issue::error(
                "STRUCTURE_TEXTE",
                "texte inattendu dans <collectivite>".into(),
                line,
                column,
                &path,
            )),
            Piece::BlockEnd => {}
        }
    }
}
