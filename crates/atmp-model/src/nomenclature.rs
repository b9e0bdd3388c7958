//! Nomenclatures (§4): code lists are data, loaded from versioned CSV files.

use std::collections::{HashMap, HashSet};

/// The code lists of §4.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Nomenclature {
    TypeEvenement,
    TypeCertificat,
    Regime,
    TypePersonnel,
    Statut,
    TypeHoraire,
    TypeConsequence,
    SiegeLesion,
    NatureLesion,
    ElementMateriel,
}

impl Nomenclature {
    /// Every nomenclature, in the order of §4.
    pub const ALL: [Nomenclature; 10] = [
        Nomenclature::TypeEvenement,
        Nomenclature::TypeCertificat,
        Nomenclature::Regime,
        Nomenclature::TypePersonnel,
        Nomenclature::Statut,
        Nomenclature::TypeHoraire,
        Nomenclature::TypeConsequence,
        Nomenclature::SiegeLesion,
        Nomenclature::NatureLesion,
        Nomenclature::ElementMateriel,
    ];

    /// The name used in CSV files and in the base (`TYPE_EVENEMENT`…).
    pub fn name(&self) -> &'static str {
        match self {
            Nomenclature::TypeEvenement => "TYPE_EVENEMENT",
            Nomenclature::TypeCertificat => "TYPE_CERTIFICAT",
            Nomenclature::Regime => "REGIME",
            Nomenclature::TypePersonnel => "TYPE_PERSONNEL",
            Nomenclature::Statut => "STATUT",
            Nomenclature::TypeHoraire => "TYPE_HORAIRE",
            Nomenclature::TypeConsequence => "TYPE_CONSEQUENCE",
            Nomenclature::SiegeLesion => "SIEGE_LESION",
            Nomenclature::NatureLesion => "NATURE_LESION",
            Nomenclature::ElementMateriel => "ELEMENT_MATERIEL",
        }
    }

    pub fn from_name(s: &str) -> Option<Nomenclature> {
        Nomenclature::ALL.into_iter().find(|n| n.name() == s)
    }
}

/// One row of a nomenclature CSV file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NomenclatureEntry {
    pub nomenclature: Nomenclature,
    pub code: String,
    pub libelle: String,
}

/// A CSV line that could not be read, with its line number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("ligne {line} : {message}")]
pub struct CsvError {
    pub line: usize,
    pub message: String,
}

/// The nomenclature file shipped with this release (`nomenclatures/nomenclatures-1.0.csv`).
pub const BUILTIN_CSV: &str = include_str!("../../../nomenclatures/nomenclatures-1.0.csv");
/// The version name of [`BUILTIN_CSV`].
pub const BUILTIN_VERSION: &str = "nomenclatures-1.0";

/// The loaded code lists: what the checks of §4 look codes up in.
#[derive(Clone, Debug, Default)]
pub struct Nomenclatures {
    codes: HashMap<Nomenclature, HashSet<String>>,
}

impl Nomenclatures {
    /// The code lists shipped with the release, used when no base is at hand
    /// (`atmp validate`) and to seed a new base.
    pub fn builtin() -> Nomenclatures {
        let entries = parse_csv(BUILTIN_CSV).expect("the shipped nomenclature file is valid");
        Nomenclatures::from_entries(&entries)
    }

    /// Builds the lists from entries (for instance read from the base).
    pub fn from_entries(entries: &[NomenclatureEntry]) -> Nomenclatures {
        let mut codes: HashMap<Nomenclature, HashSet<String>> = HashMap::new();
        for e in entries {
            codes
                .entry(e.nomenclature)
                .or_default()
                .insert(e.code.clone());
        }
        Nomenclatures { codes }
    }

    /// Whether `code` is in the list `n`.
    pub fn contains(&self, n: Nomenclature, code: &str) -> bool {
        self.codes.get(&n).is_some_and(|s| s.contains(code))
    }

    /// How many codes the list `n` holds.
    pub fn len(&self, n: Nomenclature) -> usize {
        self.codes.get(&n).map_or(0, |s| s.len())
    }
}

/// Reads a nomenclature CSV: a header `nomenclature;code;libelle`, then one code a line.
/// Every bad line is reported with its number; nothing is returned unless all are good.
pub fn parse_csv(text: &str) -> Result<Vec<NomenclatureEntry>, Vec<CsvError>> {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    let mut seen = HashSet::new();
    let mut lines = text.lines().enumerate();
    match lines.next() {
        Some((_, h)) if h.trim_start_matches('\u{feff}').trim() == "nomenclature;code;libelle" => {}
        _ => errors.push(CsvError {
            line: 1,
            message: "l'en-tête attendu est « nomenclature;code;libelle »".into(),
        }),
    }
    for (i, line) in lines {
        let line_no = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split(';').map(str::trim).collect();
        if fields.len() != 3 {
            errors.push(CsvError {
                line: line_no,
                message: format!(
                    "3 champs attendus séparés par « ; », {} trouvé(s)",
                    fields.len()
                ),
            });
            continue;
        }
        let Some(n) = Nomenclature::from_name(fields[0]) else {
            errors.push(CsvError {
                line: line_no,
                message: format!("nomenclature inconnue « {} »", fields[0]),
            });
            continue;
        };
        let code = fields[1];
        if code.is_empty() || code.len() > 40 {
            errors.push(CsvError {
                line: line_no,
                message: "code vide ou trop long (40 caractères au plus)".into(),
            });
            continue;
        }
        if !seen.insert((n, code.to_string())) {
            errors.push(CsvError {
                line: line_no,
                message: format!("code « {code} » en double dans {}", n.name()),
            });
            continue;
        }
        out.push(NomenclatureEntry {
            nomenclature: n,
            code: code.to_string(),
            libelle: fields[2].to_string(),
        });
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}
