//! Domain types of atmp, with no I/O.
//!
//! Every type here follows "parse, don't validate": the only way to get a [`Nir`], a
//! [`Siret`], a [`Date`]… is through its `parse` function, so a value of the type is
//! always valid and code further down never checks it again.

mod nomenclature;
mod text;

pub use nomenclature::{
    parse_csv, CsvError, Nomenclature, NomenclatureEntry, Nomenclatures, BUILTIN_CSV,
    BUILTIN_VERSION,
};
pub use text::{normalize_name, same_name};

use std::fmt;

/// A French social security number (NIR): 13 characters and a 2-digit key.
///
/// Kept as written once spaces are stripped (15 characters, `2A`/`2B` allowed for Corsica).
/// The key is checked by [`Nir::parse`]: `97 − (N mod 97)` where `2A` counts as `19`
/// and `2B` as `18`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Nir(String);

/// Why a NIR was refused; the message is French because it reaches users' logs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NirError {
    #[error("le NIR doit comporter 15 caractères (13 + clé de 2 chiffres), {0} trouvé(s)")]
    Length(usize),
    #[error("le NIR contient des caractères non autorisés")]
    Characters,
    #[error("la clé du NIR est invalide (attendue {expected:02}, trouvée {found:02})")]
    Key { expected: u32, found: u32 },
}

impl Nir {
    /// Parses a NIR: strips spaces, checks the shape and the key.
    pub fn parse(raw: &str) -> Result<Nir, NirError> {
        let s: String = raw.chars().filter(|c| !c.is_whitespace()).collect();
        let n = s.chars().count();
        if n != 15 {
            return Err(NirError::Length(n));
        }
        // Every slice below is by byte: only ASCII may get there.
        if !s.is_ascii() {
            return Err(NirError::Characters);
        }
        let b = s.as_bytes();
        let body = &s[..13];
        let key_str = &s[13..15];
        let corsica = &b[5..7];
        let digits_ok = b.iter().enumerate().all(|(i, c)| {
            c.is_ascii_digit() || (i == 6 && (*c == b'A' || *c == b'B') && b[5] == b'2')
        });
        if !digits_ok || !key_str.bytes().all(|c| c.is_ascii_digit()) {
            return Err(NirError::Characters);
        }
        let numeric_body: u64 = match corsica {
            b"2A" => format!("{}19{}", &body[..5], &body[7..])
                .parse()
                .unwrap_or(0),
            b"2B" => format!("{}18{}", &body[..5], &body[7..])
                .parse()
                .unwrap_or(0),
            _ => body.parse().map_err(|_| NirError::Characters)?,
        };
        let expected = 97 - (numeric_body % 97) as u32;
        let found: u32 = key_str.parse().map_err(|_| NirError::Characters)?;
        if expected != found {
            return Err(NirError::Key { expected, found });
        }
        Ok(Nir(s))
    }

    /// The NIR as stored: 15 characters, no spaces.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The sex digit (1 man, 2 woman, 7/8 provisional numbers).
    pub fn sex_digit(&self) -> u8 {
        self.0.as_bytes()[0] - b'0'
    }

    /// The two-digit birth year (`YY`).
    pub fn birth_year2(&self) -> u32 {
        self.0[1..3].parse().unwrap_or(0)
    }

    /// The birth month as written (01–12, or 20+ / 99 for unknown months).
    pub fn birth_month(&self) -> u32 {
        self.0[3..5].parse().unwrap_or(0)
    }

    /// The same NIR with every character but the last four replaced, for e-mails and traces.
    pub fn masked(&self) -> String {
        format!("{}{}", "*".repeat(11), &self.0[11..])
    }

    /// Coherence of the NIR with the declared sex and birth date (§3.2): returns the
    /// French description of each disagreement. Provisional numbers (7, 8) are not checked.
    pub fn coherence(&self, sexe: Option<Sexe>, naissance: Option<Date>) -> Vec<String> {
        let mut out = Vec::new();
        let d = self.sex_digit();
        if d == 1 || d == 2 {
            if let Some(sx) = sexe {
                let expected = if sx == Sexe::M { 1 } else { 2 };
                if d != expected {
                    out.push(format!(
                        "le premier chiffre du NIR ({d}) ne correspond pas au sexe déclaré ({})",
                        sx.code()
                    ));
                }
            }
            if let Some(dn) = naissance {
                if (dn.year().rem_euclid(100)) as u32 != self.birth_year2() {
                    out.push(format!(
                        "l'année de naissance du NIR ({:02}) ne correspond pas à la date de naissance ({})",
                        self.birth_year2(),
                        dn.fr()
                    ));
                }
                let m = self.birth_month();
                if (1..=12).contains(&m) && m != dn.month() {
                    out.push(format!(
                        "le mois de naissance du NIR ({m:02}) ne correspond pas à la date de naissance ({})",
                        dn.fr()
                    ));
                }
            }
        }
        out
    }
}

impl fmt::Display for Nir {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A SIRET: 14 digits with a valid Luhn key (La Poste, SIREN 356000000: digit sum divisible by 5).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Siret(String);

/// Why a SIRET was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SiretError {
    #[error("le SIRET doit comporter 14 chiffres")]
    Shape,
    #[error("la clé de contrôle du SIRET est invalide")]
    Key,
    #[error("la clé de contrôle du SIREN (les 9 premiers chiffres) est invalide")]
    SirenKey,
}

impl Siret {
    /// Parses a SIRET (spaces stripped), checking its key.
    pub fn parse(raw: &str) -> Result<Siret, SiretError> {
        let s: String = raw.chars().filter(|c| !c.is_whitespace()).collect();
        if s.len() != 14 || !s.bytes().all(|c| c.is_ascii_digit()) {
            return Err(SiretError::Shape);
        }
        // FORMAT.md §2: the SIREN carries its own Luhn key (356000000, La Poste's, does too).
        if !luhn(&s[..9]) {
            return Err(SiretError::SirenKey);
        }
        let ok = if s == "35600000000048" {
            // La Poste's head office follows Luhn, unlike its other establishments.
            true
        } else if s.starts_with("356000000") {
            s.bytes().map(|c| (c - b'0') as u32).sum::<u32>() % 5 == 0
        } else {
            luhn(&s)
        };
        if ok {
            Ok(Siret(s))
        } else {
            Err(SiretError::Key)
        }
    }

    /// The 14 digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Siret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The Luhn check on a string of ASCII digits.
pub fn luhn(digits: &str) -> bool {
    let mut sum = 0u32;
    for (i, c) in digits.bytes().rev().enumerate() {
        let mut d = (c - b'0') as u32;
        if i % 2 == 1 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
    }
    sum.is_multiple_of(10)
}

/// A calendar date, written `YYYY-MM-DD` in files and `DD/MM/YYYY` in logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Date(chrono::NaiveDate);

impl Date {
    /// Parses exactly `YYYY-MM-DD` (no other shape is accepted).
    pub fn parse(s: &str) -> Option<Date> {
        let b = s.as_bytes();
        if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
            return None;
        }
        let y = digits(&b[0..4])?;
        let m = digits(&b[5..7])?;
        let d = digits(&b[8..10])?;
        chrono::NaiveDate::from_ymd_opt(y as i32, m, d).map(Date)
    }

    /// Builds a date from its parts, if it exists.
    pub fn from_ymd(y: i32, m: u32, d: u32) -> Option<Date> {
        chrono::NaiveDate::from_ymd_opt(y, m, d).map(Date)
    }

    /// `YYYY-MM-DD`.
    pub fn iso(&self) -> String {
        use chrono::Datelike;
        format!(
            "{:04}-{:02}-{:02}",
            self.0.year(),
            self.0.month(),
            self.0.day()
        )
    }

    /// `DD/MM/YYYY`, the shape of every date a user reads.
    pub fn fr(&self) -> String {
        use chrono::Datelike;
        format!(
            "{:02}/{:02}/{:04}",
            self.0.day(),
            self.0.month(),
            self.0.year()
        )
    }

    pub fn year(&self) -> i32 {
        use chrono::Datelike;
        self.0.year()
    }

    pub fn month(&self) -> u32 {
        use chrono::Datelike;
        self.0.month()
    }

    /// The underlying chrono date.
    pub fn naive(&self) -> chrono::NaiveDate {
        self.0
    }

    /// A date `days` later (or earlier when negative).
    pub fn add_days(&self, days: i64) -> Date {
        Date(self.0 + chrono::Duration::days(days))
    }
}

fn digits(b: &[u8]) -> Option<u32> {
    let mut v = 0u32;
    for c in b {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v * 10 + (c - b'0') as u32;
    }
    Some(v)
}

/// A time of day, `HH:MM`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Heure {
    h: u8,
    m: u8,
}

impl Heure {
    /// Parses exactly `HH:MM` with 00 ≤ HH ≤ 23 and 00 ≤ MM ≤ 59.
    pub fn parse(s: &str) -> Option<Heure> {
        let b = s.as_bytes();
        if b.len() != 5 || b[2] != b':' {
            return None;
        }
        let h = digits(&b[0..2])?;
        let m = digits(&b[3..5])?;
        if h > 23 || m > 59 {
            return None;
        }
        Some(Heure {
            h: h as u8,
            m: m as u8,
        })
    }
}

impl fmt::Display for Heure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}:{:02}", self.h, self.m)
    }
}

/// A date and time `YYYY-MM-DDTHH:MM:SS`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct DateTime(chrono::NaiveDateTime);

impl DateTime {
    /// Parses exactly `YYYY-MM-DDTHH:MM:SS`.
    pub fn parse(s: &str) -> Option<DateTime> {
        if s.len() != 19 || !s.is_ascii() || s.as_bytes()[10] != b'T' {
            return None;
        }
        let d = Date::parse(&s[..10])?;
        let b = &s.as_bytes()[11..];
        if b[2] != b':' || b[5] != b':' {
            return None;
        }
        let h = digits(&b[0..2])?;
        let m = digits(&b[3..5])?;
        let sec = digits(&b[6..8])?;
        let t = chrono::NaiveTime::from_hms_opt(h, m, sec)?;
        Some(DateTime(d.0.and_time(t)))
    }

    pub fn date(&self) -> Date {
        Date(self.0.date())
    }

    /// `YYYY-MM-DDTHH:MM:SS`.
    pub fn iso(&self) -> String {
        self.0.format("%Y-%m-%dT%H:%M:%S").to_string()
    }

    /// `DD/MM/YYYY HH:MM:SS`.
    pub fn fr(&self) -> String {
        self.0.format("%d/%m/%Y %H:%M:%S").to_string()
    }
}

/// Parses a boolean of the format: `true`, `false`, `1`, `0`.
pub fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "true" | "1" => Some(true),
        "false" | "0" => Some(false),
        _ => None,
    }
}

/// The sex of an agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sexe {
    M,
    F,
}

impl Sexe {
    pub fn parse(s: &str) -> Option<Sexe> {
        match s {
            "M" => Some(Sexe::M),
            "F" => Some(Sexe::F),
            _ => None,
        }
    }
    pub fn code(&self) -> &'static str {
        match self {
            Sexe::M => "M",
            Sexe::F => "F",
        }
    }
}

/// `typeFichier` of the header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TypeFichier {
    Service,
    Agent,
    Declaration,
}

impl TypeFichier {
    pub fn parse(s: &str) -> Option<TypeFichier> {
        match s {
            "SERVICE" => Some(TypeFichier::Service),
            "AGENT" => Some(TypeFichier::Agent),
            "DECLARATION" => Some(TypeFichier::Declaration),
            _ => None,
        }
    }
    pub fn code(&self) -> &'static str {
        match self {
            TypeFichier::Service => "SERVICE",
            TypeFichier::Agent => "AGENT",
            TypeFichier::Declaration => "DECLARATION",
        }
    }
}

/// `mode` of the header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    Complet,
    Differentiel,
}

impl Mode {
    pub fn parse(s: &str) -> Option<Mode> {
        match s {
            "COMPLET" => Some(Mode::Complet),
            "DIFFERENTIEL" => Some(Mode::Differentiel),
            _ => None,
        }
    }
    pub fn code(&self) -> &'static str {
        match self {
            Mode::Complet => "COMPLET",
            Mode::Differentiel => "DIFFERENTIEL",
        }
    }
}

/// Checks a `noTableauMaladiePro`: 1 to 3 digits, optional ` bis`/` ter`, optional
/// letter paragraph (`57`, `30 bis`, `57A`, `30 bis A`).
pub fn valid_no_tableau(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
    }
    if i == 0 || i > 3 {
        return false;
    }
    let mut rest = &s[i..];
    for suffix in [" bis", " ter"] {
        if let Some(r) = rest.strip_prefix(suffix) {
            rest = r;
            break;
        }
    }
    let rest = rest.strip_prefix(' ').unwrap_or(rest);
    rest.is_empty() || (rest.len() == 1 && rest.as_bytes()[0].is_ascii_uppercase())
}

#[cfg(test)]
mod tests;

/// A file name reduced to safe characters (ASCII letters and digits, `-`, `_`, `.`; no leading
/// dot; at most 100 characters): the platform names the files it publishes in a sender's
/// `retours/` after it, and the sender's side finds its receipts by it.
pub fn safe_stem(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let s = s.trim_start_matches('.').to_string();
    if s.is_empty() {
        "fichier".into()
    } else {
        s.chars().take(100).collect()
    }
}
