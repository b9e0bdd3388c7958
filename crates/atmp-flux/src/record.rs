//! From an element tree to a checked record: structure (order, unknown, repeated elements),
//! field formats, codes, and the cross-field rules of §3.

use std::fmt;

use atmp_model::{parse_bool, Date, DateTime, Heure, Nir, Nomenclatures, Sexe, Siret, TypeFichier};

use crate::reader::Node;
use crate::spec::{Field, Kind, RecordKind, RecordSpec};
use crate::{Issue, Severity};

/// A checked field value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Text(String),
    Date(Date),
    Time(Heure),
    DateTime(DateTime),
    Bool(bool),
    Num(f64),
    Int(i64),
    /// A value that failed its check, kept as written for the log labels.
    Invalid(String),
}

impl Value {
    /// The value as a user reads it (dates `DD/MM/YYYY`).
    pub fn display(&self) -> String {
        self.to_string()
    }

    /// The value as stored in text form (dates ISO), for storage and comparison.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Value::Text(s) | Value::Invalid(s) => Some(s),
            _ => None,
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Text(s) | Value::Invalid(s) => f.write_str(s),
            Value::Date(d) => f.write_str(&d.fr()),
            Value::Time(t) => write!(f, "{t}"),
            Value::DateTime(d) => f.write_str(&d.fr()),
            Value::Bool(b) => f.write_str(if *b { "true" } else { "false" }),
            Value::Num(n) => write!(f, "{n}"),
            Value::Int(n) => write!(f, "{n}"),
        }
    }
}

/// A record read from a file: its values, its sub-records, and what is wrong with it.
#[derive(Clone, Debug)]
pub struct Record {
    pub spec: &'static RecordSpec,
    pub line: u64,
    pub column: u64,
    /// XPath-like location, e.g. `/flux/collectivite[1]/agent[3]/evenement[1]`.
    pub path: String,
    /// (column, value) for every field and attribute present, groups flattened.
    pub values: Vec<(&'static str, Value)>,
    /// Sub-records in file order.
    pub children: Vec<Record>,
    /// Problems that reject this record (and its children).
    pub errors: Vec<Issue>,
    /// Problems reported without rejecting it.
    pub warnings: Vec<Issue>,
    /// Where it lies in its top-level record's fragment (see [`crate::Node::span`]).
    pub span: (u32, u32),
    /// On a top-level record read with fragments kept: its XML as read.
    pub fragment: Option<String>,
}

impl Record {
    pub fn kind(&self) -> RecordKind {
        self.spec.kind
    }

    pub fn get(&self, col: &str) -> Option<&Value> {
        self.values.iter().find(|(c, _)| *c == col).map(|(_, v)| v)
    }

    /// A text field (also a value that failed its check, as written).
    pub fn text(&self, col: &str) -> Option<&str> {
        self.get(col).and_then(Value::as_text)
    }

    pub fn date(&self, col: &str) -> Option<Date> {
        match self.get(col) {
            Some(Value::Date(d)) => Some(*d),
            _ => None,
        }
    }

    /// The field as written, whatever its kind, for log labels.
    pub fn raw(&self, col: &str) -> String {
        self.get(col).map(|v| v.display()).unwrap_or_default()
    }

    pub fn is_valid(&self) -> bool {
        self.errors.is_empty()
    }

    fn error(&mut self, code: &'static str, message: String, line: u64, column: u64, path: String) {
        self.errors.push(Issue {
            severity: Severity::Error,
            code,
            message,
            line,
            column,
            path,
        });
    }

    /// Adds to `counts` this record and all its sub-records, by kind.
    pub fn count_all(&self, counts: &mut [u64; 8]) {
        let i = self.kind().index();
        if i < 8 {
            counts[i] += 1;
        }
        for c in &self.children {
            c.count_all(counts);
        }
    }

    /// Every issue of this record and its sub-records, in file order.
    pub fn all_issues(&self) -> Vec<&Issue> {
        let mut out: Vec<&Issue> = self.errors.iter().chain(self.warnings.iter()).collect();
        for c in &self.children {
            out.extend(c.all_issues());
        }
        out
    }
}

/// What the checks of a record need to know of the file.
#[derive(Clone, Copy)]
pub struct Context<'a> {
    pub type_fichier: TypeFichier,
    /// The header's `dateCreation` (events may not be after it).
    pub date_creation: Option<Date>,
    pub nomenclatures: &'a Nomenclatures,
}

/// Checks a record element read inside a `<collectivite>` block: its kind must be allowed
/// by the file type; its content is checked against its spec.
pub fn check_record(node: &mut Node, path: &str, ctx: &Context<'_>) -> Record {
    let spec = match &*node.name {
        "service" => &crate::spec::SERVICE,
        "agent" => &crate::spec::AGENT,
        _ => {
            // Unknown element directly in a block: a record of no kind, rejected.
            let mut r = Record {
                spec: &UNKNOWN,
                line: node.line,
                column: node.column,
                path: path.to_string(),
                values: Vec::new(),
                children: Vec::new(),
                errors: Vec::new(),
                warnings: Vec::new(),
                span: node.span,
                fragment: None,
            };
            r.error(
                "STRUCTURE_INCONNU",
                format!(
                    "élément « {} » inconnu dans un bloc <collectivite> : <service> ou <agent> attendu",
                    node.name
                ),
                node.line,
                node.column,
                path.to_string(),
            );
            return r;
        }
    };
    if node.oversized {
        // Not analysed further: the record is rejected whole, with one problem.
        let mut rec = Record {
            spec,
            line: node.line,
            column: node.column,
            path: path.to_string(),
            values: Vec::new(),
            children: Vec::new(),
            errors: Vec::new(),
            warnings: Vec::new(),
            span: node.span,
            fragment: None,
        };
        rec.error(
            "STRUCTURE_TAILLE",
            format!(
                "enregistrement trop volumineux (plus de {} éléments ou {} Mo de texte et de valeurs d'attributs) : il n'est pas lu en entier",
                crate::reader::MAX_RECORD_NODES,
                crate::reader::MAX_RECORD_TEXT >> 20
            ),
            node.line,
            node.column,
            path.to_string(),
        );
        return rec;
    }
    let mut rec = build(node, spec, path, ctx, None);
    let allowed = match ctx.type_fichier {
        TypeFichier::Service => spec.kind == RecordKind::Service,
        TypeFichier::Agent | TypeFichier::Declaration => spec.kind == RecordKind::Agent,
    };
    if !allowed {
        rec.errors.insert(
            0,
            Issue::error(
                "TYPE_FICHIER",
                format!(
                    "un fichier {} ne peut pas contenir d'élément <{}>",
                    ctx.type_fichier.code(),
                    spec.name
                ),
                node.line,
                node.column,
                path,
            ),
        );
    }
    if ctx.type_fichier == TypeFichier::Agent {
        for ev in rec.children.iter_mut() {
            let (l, c, p) = (ev.line, ev.column, ev.path.clone());
            ev.errors.insert(
                0,
                Issue::error(
                    "TYPE_FICHIER",
                    "un fichier AGENT ne peut pas contenir d'événement".into(),
                    l,
                    c,
                    &p,
                ),
            );
        }
    }
    rec
}

/// The spec of elements that are not part of the format.
pub static UNKNOWN: RecordSpec = RecordSpec {
    name: "inconnu",
    kind: RecordKind::Group,
    attrs: &[],
    fields: &[],
};

/// Checks the header; every problem found is returned (the file is rejected if any).
pub fn check_header(node: &Node) -> Record {
    let nomenclatures = Nomenclatures::default();
    let ctx = Context {
        type_fichier: TypeFichier::Declaration,
        date_creation: None,
        nomenclatures: &nomenclatures,
    };
    let mut node = node.clone();
    let mut rec = build(&mut node, &crate::spec::ENTETE, "/flux/entete", &ctx, None);
    let mode = rec.text("mode").map(str::to_string);
    let (l, c) = (rec.line, rec.column);
    if let Some("DIFFERENTIEL") = mode.as_deref() {
        for col in ["periode_debut", "periode_fin"] {
            if rec.get(col).is_none() {
                let name = if col == "periode_debut" {
                    "periodeDebut"
                } else {
                    "periodeFin"
                };
                rec.error(
                    "OBLIGATOIRE",
                    format!("{name} est obligatoire en mode DIFFERENTIEL"),
                    l,
                    c,
                    format!("/flux/entete/{name}"),
                );
            }
        }
        if rec.get("limite_anteriorite").is_some() {
            rec.error(
                "MODE",
                "limiteAnteriorite n'est admis qu'en mode COMPLET".into(),
                l,
                c,
                "/flux/entete/limiteAnteriorite".into(),
            );
        }
    }
    if let (Some(d), Some(f)) = (rec.date("periode_debut"), rec.date("periode_fin")) {
        if f < d {
            rec.error(
                "CHRONOLOGIE",
                format!(
                    "periodeFin ({}) est antérieure à periodeDebut ({})",
                    f.fr(),
                    d.fr()
                ),
                l,
                c,
                "/flux/entete/periodeFin".into(),
            );
        }
    }
    rec
}

fn build(
    node: &mut Node,
    spec: &'static RecordSpec,
    path: &str,
    ctx: &Context<'_>,
    parent_date: Option<Date>,
) -> Record {
    let mut rec = Record {
        spec,
        line: node.line,
        column: node.column,
        path: path.to_string(),
        values: Vec::with_capacity(spec.fields.len()),
        children: Vec::new(),
        errors: Vec::new(),
        warnings: Vec::new(),
        span: node.span,
        fragment: None,
    };
    fill(&mut rec, node, spec, path, ctx);
    rules(&mut rec, ctx, parent_date);
    // Sub-records are built after the record's own rules so that they know its date.
    let own_date = rec.date("date");
    let dob = rec.date("date_naissance");
    let mut counters: Vec<(&str, usize)> = Vec::new();
    for child in node.children.iter_mut() {
        if let Some((_, field)) = spec.field(&child.name) {
            if let Kind::Record(sub) = field.kind {
                let n = bump(&mut counters, field.name);
                let child_path = format!("{path}/{}[{n}]", field.name);
                let ctx_date = if spec.kind == RecordKind::Agent {
                    dob
                } else {
                    own_date
                };
                rec.children
                    .push(build(child, sub, &child_path, ctx, ctx_date));
            }
        }
    }
    rec
}

#[allow(clippy::ptr_arg)]
fn bump_cow(
    counters: &mut Vec<(std::borrow::Cow<'static, str>, usize)>,
    name: &std::borrow::Cow<'static, str>,
) -> usize {
    for (n, c) in counters.iter_mut() {
        if n == name {
            *c += 1;
            return *c;
        }
    }
    counters.push((name.clone(), 1));
    1
}

fn bump<'a>(counters: &mut Vec<(&'a str, usize)>, name: &'a str) -> usize {
    for (n, c) in counters.iter_mut() {
        if *n == name {
            *c += 1;
            return *c;
        }
    }
    counters.push((name, 1));
    1
}

/// Structure and field checks of one element against its spec, values flattened into `rec`.
fn fill(
    rec: &mut Record,
    node: &mut Node,
    spec: &'static RecordSpec,
    path: &str,
    ctx: &Context<'_>,
) {
    // Attributes.
    let (line, column) = (node.line, node.column);
    for (k, v) in &node.attrs {
        match spec.attrs.iter().find(|a| a.name == k) {
            Some(a) => {
                let v = v.trim().to_string();
                if v.is_empty() {
                    continue;
                }
                let p = || format!("{path}/@{}", a.name);
                if let Some(val) = check_value(rec, a.kind, a.name, v, ctx, line, column, &p) {
                    rec.values.push((a.col, val));
                }
            }
            None => rec.error(
                "ATTRIBUT_INCONNU",
                format!("attribut « {k} » inconnu sur <{}>", spec.name),
                node.line,
                node.column,
                format!("{path}/@{k}"),
            ),
        }
    }
    for a in spec.attrs {
        if a.required && node.attr(a.name).is_none_or(|v| v.trim().is_empty()) {
            rec.error(
                "OBLIGATOIRE",
                format!("l'attribut {} ({}) est obligatoire", a.name, a.label),
                node.line,
                node.column,
                format!("{path}/@{}", a.name),
            );
        }
    }
    if !node.children.is_empty() && !node.text.trim().is_empty() {
        rec.error(
            "STRUCTURE_TEXTE",
            format!("texte inattendu dans <{}>", spec.name),
            node.line,
            node.column,
            path.to_string(),
        );
    }
    // Children, in the order of the spec.
    let mut cursor = 0usize;
    let mut seen = [0u32; 48];
    let mut multi: Vec<(&'static str, Vec<String>)> = Vec::new();
    let mut counters: Vec<(std::borrow::Cow<'static, str>, usize)> = Vec::new();
    for child in node.children.iter_mut() {
        let cname = child.name.clone();
        let n = bump_cow(&mut counters, &cname);
        let (cline, ccol) = (child.line, child.column);
        // Paths are only built when an issue is reported.
        let indexed = || format!("{path}/{}[{n}]", cname);
        let Some((i, field)) = spec.field(&cname) else {
            rec.error(
                "STRUCTURE_INCONNU",
                format!(
                    "élément « {} » inconnu dans <{}> : {}",
                    cname,
                    spec.name,
                    expected_from(spec, cursor, seen[cursor] > 0)
                ),
                cline,
                ccol,
                indexed(),
            );
            continue;
        };
        let child_path = || {
            if field.many {
                indexed()
            } else {
                format!("{path}/{}", cname)
            }
        };
        if i < cursor {
            rec.error(
                "STRUCTURE_ORDRE",
                format!(
                    "élément <{}> hors de l'ordre attendu dans <{}> : il doit venir avant <{}> ; {}",
                    field.name,
                    spec.name,
                    spec.fields[cursor].name,
                    expected_from(spec, cursor, true)
                ),
                cline,
                ccol,
                child_path(),
            );
            continue;
        }
        cursor = i;
        seen[i] += 1;
        if seen[i] > 1 && !field.many {
            rec.error(
                "STRUCTURE_REPETE",
                format!("élément <{}> répété dans <{}>", field.name, spec.name),
                cline,
                ccol,
                child_path(),
            );
            continue;
        }
        match field.kind {
            Kind::Record(_) => {} // built by the caller, with its own fate
            Kind::Group(g) => fill(rec, child, g, &child_path(), ctx),
            kind => {
                if !child.children.is_empty() || !child.attrs.is_empty() {
                    rec.error(
                        "STRUCTURE_CONTENU",
                        format!("l'élément <{}> ne doit contenir que du texte", field.name),
                        cline,
                        ccol,
                        child_path(),
                    );
                    continue;
                }
                let raw = std::mem::take(&mut child.text);
                let text = if raw.trim().len() == raw.len() {
                    raw
                } else {
                    raw.trim().to_string()
                };
                if text.is_empty() {
                    continue; // an empty element is an absent one
                }
                let checked =
                    check_value(rec, kind, field.name, text, ctx, cline, ccol, &child_path);
                if field.many {
                    if let Some(Value::Text(t)) = checked {
                        match multi.iter_mut().find(|(c, _)| *c == field.col) {
                            Some((_, v)) => v.push(t),
                            None => multi.push((field.col, vec![t])),
                        }
                    }
                } else if let Some(val) = checked {
                    rec.values.push((field.col, val));
                }
            }
        }
    }
    for (col, vals) in multi {
        rec.values.push((col, Value::Text(vals.join(","))));
    }
    for field in spec.fields.iter() {
        if field.required && is_scalar(field) && rec.get(field.col).is_none() {
            rec.error(
                "OBLIGATOIRE",
                format!("{} ({}) est obligatoire", field.name, field.label),
                node.line,
                node.column,
                format!("{path}/{}", field.name),
            );
        }
    }
}

fn is_scalar(f: &Field) -> bool {
    !matches!(f.kind, Kind::Group(_) | Kind::Record(_))
}

#[allow(clippy::too_many_arguments)]
fn check_value(
    rec: &mut Record,
    kind: Kind,
    name: &str,
    owned: String,
    ctx: &Context<'_>,
    line: u64,
    column: u64,
    path: &dyn Fn() -> String,
) -> Option<Value> {
    let v = owned.as_str();
    let bad = |code: &'static str, msg: String| Issue::error(code, msg, line, column, &path());
    // `Ok(None)`: the value is the text itself, moved in without a copy.
    let res: Result<Option<Value>, Issue> = match kind {
        Kind::Text(max) => {
            let n = v.chars().count();
            if n > max {
                Err(bad(
                    "LONGUEUR",
                    format!("{name} dépasse {max} caractères ({n})"),
                ))
            } else {
                Ok(None)
            }
        }
        Kind::Date => Date::parse(v).map(|x| Some(Value::Date(x))).ok_or_else(|| {
            bad(
                "DATE",
                format!("{name} : date invalide « {v} » (AAAA-MM-JJ attendu)"),
            )
        }),
        Kind::Time => Heure::parse(v)
            .map(|x| Some(Value::Time(x)))
            .ok_or_else(|| {
                bad(
                    "HEURE",
                    format!("{name} : heure invalide « {v} » (HH:MM attendu)"),
                )
            }),
        Kind::DateTime => DateTime::parse(v)
            .map(|x| Some(Value::DateTime(x)))
            .ok_or_else(|| {
                bad(
                    "DATEHEURE",
                    format!("{name} : date-heure invalide « {v} » (AAAA-MM-JJTHH:MM:SS attendu)"),
                )
            }),
        Kind::Bool => parse_bool(v).map(|x| Some(Value::Bool(x))).ok_or_else(|| {
            bad(
                "BOOLEEN",
                format!("{name} : booléen invalide « {v} » (true, false, 1 ou 0 attendu)"),
            )
        }),
        Kind::Code(n) => {
            if ctx.nomenclatures.contains(n, v) {
                Ok(None)
            } else {
                Err(bad(
                    "CODE_INCONNU",
                    format!(
                        "{name} : code « {v} » absent de la nomenclature {}",
                        n.name()
                    ),
                ))
            }
        }
        Kind::Enum(values) => {
            if values.contains(&v) {
                Ok(None)
            } else {
                Err(bad(
                    "VALEUR",
                    format!(
                        "{name} : valeur « {v} » non admise ({} attendu)",
                        values.join(", ")
                    ),
                ))
            }
        }
        Kind::Percent | Kind::Taux => match v.parse::<f64>() {
            Ok(q)
                if q.is_finite()
                    && (matches!(kind, Kind::Percent) && q > 0.0
                        || matches!(kind, Kind::Taux) && q >= 0.0)
                    && q <= 100.0
                    && !v.contains(['e', 'E'])
                    && v.bytes().any(|b| b.is_ascii_digit()) =>
            {
                Ok(Some(Value::Num(q)))
            }
            _ => Err(bad(
                "NOMBRE",
                if matches!(kind, Kind::Percent) {
                    format!("{name} : pourcentage invalide « {v} » (0 < q ≤ 100 attendu)")
                } else {
                    format!("{name} : taux invalide « {v} » (0 à 100 attendu)")
                },
            )),
        },
        Kind::Count => match v.parse::<i64>() {
            Ok(n) if n >= 0 => Ok(Some(Value::Int(n))),
            _ => Err(bad(
                "NOMBRE",
                format!("{name} : nombre entier positif attendu, « {v} » trouvé"),
            )),
        },
        Kind::NoTableau => {
            if atmp_model::valid_no_tableau(v) {
                Ok(None)
            } else {
                Err(bad(
                    "VALEUR",
                    format!("{name} : numéro de tableau invalide « {v} » (ex. 57, 30 bis, 57A)"),
                ))
            }
        }
        Kind::Nir => match Nir::parse(v) {
            Ok(nir) if nir.as_str() == v => Ok(None),
            Ok(nir) => Ok(Some(Value::Text(nir.as_str().to_string()))),
            Err(e) => Err(bad("NIR", format!("NIR invalide « {v} » : {e}"))),
        },
        Kind::Siret => match Siret::parse(v) {
            Ok(s) if s.as_str() == v => Ok(None),
            Ok(s) => Ok(Some(Value::Text(s.as_str().to_string()))),
            Err(e) => Err(bad("SIRET", format!("SIRET invalide « {v} » : {e}"))),
        },
        Kind::Group(_) | Kind::Record(_) => unreachable!("containers are not values"),
    };
    match res {
        Ok(Some(value)) => Some(value),
        Ok(None) => Some(Value::Text(owned)),
        Err(issue) => {
            rec.errors.push(issue);
            // Keep the text as written for the labels of the log lines.
            if let Some(col) = column_of(rec.spec, name) {
                rec.values.push((col, Value::Invalid(owned)));
            }
            None
        }
    }
}

fn column_of(spec: &'static RecordSpec, name: &str) -> Option<&'static str> {
    spec.fields
        .iter()
        .find(|f| f.name == name && !f.many)
        .map(|f| f.col)
}

/// The cross-field rules of §3 for one record.
fn rules(rec: &mut Record, ctx: &Context<'_>, parent_date: Option<Date>) {
    let (l, c) = (rec.line, rec.column);
    let p = rec.path.clone();
    let chrono_err = |rec: &mut Record, field: &str, msg: String| {
        rec.error("CHRONOLOGIE", msg, l, c, format!("{p}/{field}"));
    };
    match rec.kind() {
        RecordKind::Agent => {
            if let (Some(e), Some(s)) = (
                rec.date("date_entree_collectivite"),
                rec.date("date_sortie_collectivite"),
            ) {
                if s < e {
                    chrono_err(
                        rec,
                        "dateSortieCollectivite",
                        format!("dateSortieCollectivite ({}) est antérieure à dateEntreeCollectivite ({})", s.fr(), e.fr()),
                    );
                }
            }
            if let Some(Value::Text(nir)) = rec.get("nir") {
                if let Ok(nir) = Nir::parse(nir) {
                    let sexe = rec.text("sexe").and_then(Sexe::parse);
                    for m in nir.coherence(sexe, rec.date("date_naissance")) {
                        rec.warnings.push(Issue {
                            severity: Severity::Warn,
                            code: "NIR_COHERENCE",
                            message: m,
                            line: l,
                            column: c,
                            path: format!("{p}/nir"),
                        });
                    }
                }
            }
        }
        RecordKind::Evenement => {
            if let Some(d) = rec.date("date") {
                if let Some(dob) = parent_date {
                    if d <= dob {
                        chrono_err(rec, "date", format!("la date de l'événement ({}) n'est pas postérieure à la date de naissance ({})", d.fr(), dob.fr()));
                    }
                }
                if let Some(dc) = ctx.date_creation {
                    if d > dc {
                        chrono_err(rec, "date", format!("la date de l'événement ({}) est postérieure à la date de création du fichier ({})", d.fr(), dc.fr()));
                    }
                }
                if let Some(dd) = rec.date("date_declaration") {
                    if dd < d {
                        chrono_err(
                            rec,
                            "dateDeclaration",
                            format!(
                                "dateDeclaration ({}) est antérieure à la date de l'événement ({})",
                                dd.fr(),
                                d.fr()
                            ),
                        );
                    }
                }
            }
            if rec.text("type") == Some("MP") && rec.get("no_tableau").is_none() {
                rec.error(
                    "OBLIGATOIRE",
                    "noTableauMaladiePro (numéro de tableau de maladie professionnelle) est obligatoire pour une maladie professionnelle (MP)".into(),
                    l,
                    c,
                    format!("{p}/noTableauMaladiePro"),
                );
            }
        }
        RecordKind::Arret => {
            if let Some(d) = rec.date("date_debut") {
                if let Some(ev) = parent_date {
                    if d < ev {
                        chrono_err(
                            rec,
                            "dateDebut",
                            format!(
                                "dateDebut ({}) est antérieure à la date de l'événement ({})",
                                d.fr(),
                                ev.fr()
                            ),
                        );
                    }
                }
                if let Some(f) = rec.date("date_fin") {
                    if f < d {
                        chrono_err(
                            rec,
                            "dateFin",
                            format!(
                                "dateFin ({}) est antérieure à dateDebut ({})",
                                f.fr(),
                                d.fr()
                            ),
                        );
                    }
                }
            }
        }
        RecordKind::Deces => {
            if let (Some(d), Some(ev)) = (rec.date("date"), parent_date) {
                if d < ev {
                    chrono_err(
                        rec,
                        "date",
                        format!(
                            "la date du décès ({}) est antérieure à la date de l'événement ({})",
                            d.fr(),
                            ev.fr()
                        ),
                    );
                }
            }
        }
        _ => {}
    }
}

/// What may come next in `spec` once its field `cursor` was reached (`seen`: it was given):
/// "attendu ici : <a>, <b> ou <c>", the first few of the content model's order.
fn expected_from(spec: &RecordSpec, cursor: usize, seen: bool) -> String {
    let start = if seen && !spec.fields.get(cursor).is_some_and(|f| f.many) {
        cursor + 1
    } else {
        cursor
    };
    let names: Vec<String> = spec
        .fields
        .iter()
        .skip(start)
        .map(|f| format!("<{}>", f.name))
        .collect();
    match names.len() {
        0 => format!(
            "rien n'est attendu après <{}>",
            spec.fields[cursor.min(spec.fields.len().saturating_sub(1))].name
        ),
        1 => format!("attendu ici : {}", names[0]),
        n if n <= 6 => format!(
            "attendu ici : {} ou {}",
            names[..n - 1].join(", "),
            names[n - 1]
        ),
        _ => format!("attendu ici : {}…", names[..6].join(", ")),
    }
}
