//! The element tables of FORMAT.md §2 and §3, as data.
//!
//! One table drives the structural checks (order, unknown and repeated elements), the
//! field checks, the storage columns and the published XSD, so that these can never
//! disagree with each other.

use atmp_model::Nomenclature;

/// What a field holds, and so how it is checked.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    /// Free text of at most this many characters.
    Text(usize),
    Date,
    Time,
    DateTime,
    Bool,
    /// A code of a nomenclature (§4).
    Code(Nomenclature),
    /// One of a fixed list of values.
    Enum(&'static [&'static str]),
    /// A percentage, 0 < q ≤ 100.
    Percent,
    /// A rate, 0 ≤ t ≤ 100.
    Taux,
    /// A non-negative whole number.
    Count,
    /// A `noTableauMaladiePro`.
    NoTableau,
    Nir,
    Siret,
    /// A container whose fields belong to the enclosing record (`adresse`, the agent's `service`).
    Group(&'static RecordSpec),
    /// A sub-record with its own identity, line in the log and fate (`evenement`, `arret`…).
    Record(&'static RecordSpec),
}

/// A child element of a record.
#[derive(Debug)]
pub struct Field {
    /// The element name in the file.
    pub name: &'static str,
    /// The storage column (and the key of the value in a [`crate::Record`]).
    pub col: &'static str,
    /// The French name of the field, used in log messages.
    pub label: &'static str,
    pub required: bool,
    /// Whether it may repeat (0..n).
    pub many: bool,
    pub kind: Kind,
}

/// An attribute of a record.
#[derive(Debug)]
pub struct Attr {
    pub name: &'static str,
    pub col: &'static str,
    pub label: &'static str,
    pub required: bool,
    pub kind: Kind,
}

/// The kinds of record that have their own line in the log and their own fate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RecordKind {
    Entete,
    Group,
    Service,
    Agent,
    Evenement,
    Arret,
    Certificat,
    Lesion,
    Consequence,
    Deces,
}

impl RecordKind {
    /// Every kind that is counted in the results (§7), in the order of the JSON `counts`.
    pub const COUNTED: [RecordKind; 8] = [
        RecordKind::Service,
        RecordKind::Agent,
        RecordKind::Evenement,
        RecordKind::Arret,
        RecordKind::Certificat,
        RecordKind::Lesion,
        RecordKind::Consequence,
        RecordKind::Deces,
    ];

    /// The key of this kind in the JSON `counts` object.
    pub fn counts_key(&self) -> &'static str {
        match self {
            RecordKind::Service => "services",
            RecordKind::Agent => "agents",
            RecordKind::Evenement => "evenements",
            RecordKind::Arret => "arrets",
            RecordKind::Certificat => "certificats",
            RecordKind::Lesion => "lesions",
            RecordKind::Consequence => "consequences",
            RecordKind::Deces => "deces",
            RecordKind::Entete | RecordKind::Group => "",
        }
    }

    /// The id name used in the log lines (`agentid=N`…).
    pub fn id_name(&self) -> &'static str {
        match self {
            RecordKind::Service => "serviceid",
            RecordKind::Agent => "agentid",
            RecordKind::Evenement => "evenementid",
            RecordKind::Arret => "arretid",
            RecordKind::Certificat => "certificatid",
            RecordKind::Lesion => "lesionid",
            RecordKind::Consequence => "consequenceid",
            RecordKind::Deces => "decesid",
            RecordKind::Entete | RecordKind::Group => "id",
        }
    }

    /// Index into count arrays ([`RecordKind::COUNTED`] order).
    pub fn index(&self) -> usize {
        match self {
            RecordKind::Service => 0,
            RecordKind::Agent => 1,
            RecordKind::Evenement => 2,
            RecordKind::Arret => 3,
            RecordKind::Certificat => 4,
            RecordKind::Lesion => 5,
            RecordKind::Consequence => 6,
            RecordKind::Deces => 7,
            RecordKind::Entete | RecordKind::Group => usize::MAX,
        }
    }

    /// French plural used in totals lines.
    pub fn label_plural(&self) -> &'static str {
        match self {
            RecordKind::Service => "services",
            RecordKind::Agent => "agents",
            RecordKind::Evenement => "événements",
            RecordKind::Arret => "arrêts",
            RecordKind::Certificat => "certificats",
            RecordKind::Lesion => "lésions",
            RecordKind::Consequence => "conséquences médicales",
            RecordKind::Deces => "décès",
            RecordKind::Entete | RecordKind::Group => "",
        }
    }
}

/// A record (or group) and its content model: attributes, then child elements in order.
#[derive(Debug)]
pub struct RecordSpec {
    pub name: &'static str,
    pub kind: RecordKind,
    pub attrs: &'static [Attr],
    pub fields: &'static [Field],
}

impl RecordSpec {
    /// The field of this name, with its position in the content model.
    pub fn field(&self, name: &str) -> Option<(usize, &'static Field)> {
        self.fields.iter().enumerate().find(|(_, f)| f.name == name)
    }
}

const fn f(
    name: &'static str,
    col: &'static str,
    label: &'static str,
    required: bool,
    kind: Kind,
) -> Field {
    Field {
        name,
        col,
        label,
        required,
        many: false,
        kind,
    }
}
const fn many(name: &'static str, col: &'static str, label: &'static str, kind: Kind) -> Field {
    Field {
        name,
        col,
        label,
        required: false,
        many: true,
        kind,
    }
}

use Kind::*;

pub static ENTETE: RecordSpec = RecordSpec {
    name: "entete",
    kind: RecordKind::Entete,
    attrs: &[],
    fields: &[
        f("emetteur", "emetteur", "émetteur", true, Text(40)),
        f(
            "typeFichier",
            "type_fichier",
            "type de fichier",
            true,
            Enum(&["SERVICE", "AGENT", "DECLARATION"]),
        ),
        f(
            "mode",
            "mode",
            "mode",
            true,
            Enum(&["COMPLET", "DIFFERENTIEL"]),
        ),
        f(
            "dateCreation",
            "date_creation",
            "date de création",
            true,
            DateTime,
        ),
        f(
            "periodeDebut",
            "periode_debut",
            "début de période",
            false,
            Date,
        ),
        f("periodeFin", "periode_fin", "fin de période", false, Date),
        f(
            "limiteAnteriorite",
            "limite_anteriorite",
            "limite d'antériorité",
            false,
            Date,
        ),
        f("cdg", "cdg", "CDG", false, Siret),
        f(
            "nombreAgents",
            "nombre_agents",
            "nombre d'agents",
            false,
            Count,
        ),
        f(
            "nombreEvenements",
            "nombre_evenements",
            "nombre d'événements",
            false,
            Count,
        ),
    ],
};

pub static SERVICE: RecordSpec = RecordSpec {
    name: "service",
    kind: RecordKind::Service,
    attrs: &[Attr {
        name: "code",
        col: "code",
        label: "code",
        required: true,
        kind: Text(30),
    }],
    fields: &[f("libelle", "libelle", "libellé", true, Text(100))],
};

static ADRESSE: RecordSpec = RecordSpec {
    name: "adresse",
    kind: RecordKind::Group,
    attrs: &[],
    fields: &[
        f(
            "ligne1",
            "adresse_ligne1",
            "adresse (ligne 1)",
            false,
            Text(100),
        ),
        f(
            "ligne2",
            "adresse_ligne2",
            "adresse (ligne 2)",
            false,
            Text(100),
        ),
        f(
            "ligne3",
            "adresse_ligne3",
            "adresse (ligne 3)",
            false,
            Text(100),
        ),
        f(
            "codePostal",
            "adresse_code_postal",
            "code postal",
            false,
            Text(10),
        ),
        f("commune", "adresse_commune", "commune", false, Text(100)),
        f("pays", "adresse_pays", "pays", false, Text(60)),
    ],
};

static AGENT_SERVICE: RecordSpec = RecordSpec {
    name: "service",
    kind: RecordKind::Group,
    attrs: &[Attr {
        name: "code",
        col: "service_code",
        label: "code du service",
        required: true,
        kind: Text(30),
    }],
    fields: &[f(
        "libelle",
        "service_libelle",
        "libellé du service",
        false,
        Text(100),
    )],
};

pub static AGENT: RecordSpec = RecordSpec {
    name: "agent",
    kind: RecordKind::Agent,
    attrs: &[],
    fields: &[
        f("nir", "nir", "NIR", true, Nir),
        f("matricule", "matricule", "matricule", false, Text(20)),
        f(
            "civilite",
            "civilite",
            "civilité",
            false,
            Enum(&["M", "MME"]),
        ),
        f("nomUsuel", "nom_usuel", "nom usuel", true, Text(60)),
        f(
            "nomPatronymique",
            "nom_patronymique",
            "nom patronymique",
            false,
            Text(60),
        ),
        f("prenom", "prenom", "prénom", true, Text(60)),
        f(
            "dateNaissance",
            "date_naissance",
            "date de naissance",
            true,
            Date,
        ),
        f("sexe", "sexe", "sexe", true, Enum(&["M", "F"])),
        f(
            "lateralite",
            "lateralite",
            "latéralité",
            false,
            Enum(&["D", "G", "A"]),
        ),
        f(
            "regime",
            "regime",
            "régime",
            false,
            Code(Nomenclature::Regime),
        ),
        f("noCnracl", "no_cnracl", "numéro CNRACL", false, Text(20)),
        f("adresse", "adresse", "adresse", false, Group(&ADRESSE)),
        f(
            "dateEntreeFP",
            "date_entree_fp",
            "date d'entrée dans la fonction publique",
            false,
            Date,
        ),
        f(
            "dateEntreeCollectivite",
            "date_entree_collectivite",
            "date d'entrée dans la collectivité",
            false,
            Date,
        ),
        f(
            "dateSortieCollectivite",
            "date_sortie_collectivite",
            "date de sortie de la collectivité",
            false,
            Date,
        ),
        f("grade", "grade", "grade", false, Text(100)),
        f(
            "typePersonnel",
            "type_personnel",
            "type de personnel",
            false,
            Code(Nomenclature::TypePersonnel),
        ),
        f(
            "dateEntreeMetier",
            "date_entree_metier",
            "date d'entrée dans le métier",
            false,
            Date,
        ),
        f(
            "service",
            "service",
            "service",
            false,
            Group(&AGENT_SERVICE),
        ),
        many("evenement", "evenement", "événement", Record(&EVENEMENT)),
    ],
};

pub static EVENEMENT: RecordSpec = RecordSpec {
    name: "evenement",
    kind: RecordKind::Evenement,
    attrs: &[],
    fields: &[
        f("identifiant", "identifiant", "identifiant", true, Text(40)),
        f(
            "type",
            "type",
            "type",
            true,
            Code(Nomenclature::TypeEvenement),
        ),
        f("date", "date", "date", true, Date),
        f("heure", "heure", "heure", false, Time),
        f(
            "dateDeclaration",
            "date_declaration",
            "date de déclaration",
            false,
            Date,
        ),
        f(
            "statut",
            "statut",
            "statut",
            false,
            Code(Nomenclature::Statut),
        ),
        f(
            "regime",
            "regime",
            "régime",
            false,
            Code(Nomenclature::Regime),
        ),
        f("grade", "grade", "grade", false, Text(100)),
        f(
            "typePersonnel",
            "type_personnel",
            "type de personnel",
            false,
            Code(Nomenclature::TypePersonnel),
        ),
        f(
            "quotiteTravail",
            "quotite_travail",
            "quotité de travail",
            false,
            Percent,
        ),
        f(
            "dateEntreeMetier",
            "date_entree_metier",
            "date d'entrée dans le métier",
            false,
            Date,
        ),
        f(
            "dateEntreePoste",
            "date_entree_poste",
            "date d'entrée dans le poste",
            false,
            Date,
        ),
        f(
            "typeHoraireQuotidien",
            "type_horaire_quotidien",
            "type d'horaire quotidien",
            false,
            Code(Nomenclature::TypeHoraire),
        ),
        f(
            "horaireTravailJourAccidentDeb1",
            "horaire_deb1",
            "début de l'horaire 1",
            false,
            Time,
        ),
        f(
            "horaireTravailJourAccidentFin1",
            "horaire_fin1",
            "fin de l'horaire 1",
            false,
            Time,
        ),
        f(
            "horaireTravailJourAccidentDeb2",
            "horaire_deb2",
            "début de l'horaire 2",
            false,
            Time,
        ),
        f(
            "horaireTravailJourAccidentFin2",
            "horaire_fin2",
            "fin de l'horaire 2",
            false,
            Time,
        ),
        f(
            "enqueteHS",
            "enquete_hs",
            "enquête hors service",
            false,
            Bool,
        ),
        f("sssm", "sssm", "SSSM", false, Bool),
        f("tache", "tache", "tâche", false, Text(100)),
        f(
            "accidentCirculation",
            "accident_circulation",
            "accident de la circulation",
            false,
            Bool,
        ),
        f(
            "accidentSite",
            "accident_site",
            "accident sur site",
            false,
            Bool,
        ),
        f(
            "circonstances",
            "circonstances",
            "circonstances",
            false,
            Text(4000),
        ),
        many(
            "elementMateriel",
            "elements_materiels",
            "élément matériel",
            Code(Nomenclature::ElementMateriel),
        ),
        f(
            "noTableauMaladiePro",
            "no_tableau",
            "numéro de tableau de maladie professionnelle",
            false,
            NoTableau,
        ),
        f(
            "assureurCollectivite",
            "assureur_collectivite",
            "assureur de la collectivité",
            false,
            Text(100),
        ),
        f(
            "dateAvisMedecinConseil",
            "date_avis_medecin_conseil",
            "date de l'avis du médecin conseil",
            false,
            Date,
        ),
        f("deces", "deces", "décès", false, Record(&DECES)),
        many("arret", "arret", "arrêt", Record(&ARRET)),
        many(
            "certificat",
            "certificat",
            "certificat",
            Record(&CERTIFICAT),
        ),
        many("lesion", "lesion", "lésion", Record(&LESION)),
        many(
            "consequenceMedicale",
            "consequence",
            "conséquence médicale",
            Record(&CONSEQUENCE),
        ),
    ],
};

pub static DECES: RecordSpec = RecordSpec {
    name: "deces",
    kind: RecordKind::Deces,
    attrs: &[],
    fields: &[
        f("date", "date", "date", true, Date),
        f("heure", "heure", "heure", false, Time),
        f("cause", "cause", "cause", false, Text(200)),
    ],
};

pub static ARRET: RecordSpec = RecordSpec {
    name: "arret",
    kind: RecordKind::Arret,
    attrs: &[],
    fields: &[
        f("dateDebut", "date_debut", "date de début", true, Date),
        f("dateFin", "date_fin", "date de fin", false, Date),
    ],
};

pub static CERTIFICAT: RecordSpec = RecordSpec {
    name: "certificat",
    kind: RecordKind::Certificat,
    attrs: &[],
    fields: &[
        f("identifiant", "identifiant", "identifiant", true, Text(40)),
        f("date", "date", "date", true, Date),
        f(
            "type",
            "type",
            "type",
            true,
            Code(Nomenclature::TypeCertificat),
        ),
        f(
            "dateReprise",
            "date_reprise",
            "date de reprise",
            false,
            Date,
        ),
    ],
};

pub static LESION: RecordSpec = RecordSpec {
    name: "lesion",
    kind: RecordKind::Lesion,
    attrs: &[],
    fields: &[
        f(
            "siege",
            "siege",
            "siège",
            true,
            Code(Nomenclature::SiegeLesion),
        ),
        f(
            "nature",
            "nature",
            "nature",
            true,
            Code(Nomenclature::NatureLesion),
        ),
        f(
            "lateralite",
            "lateralite",
            "latéralité",
            false,
            Enum(&["D", "G", "B"]),
        ),
    ],
};

pub static CONSEQUENCE: RecordSpec = RecordSpec {
    name: "consequenceMedicale",
    kind: RecordKind::Consequence,
    attrs: &[],
    fields: &[
        f("identifiant", "identifiant", "identifiant", true, Text(40)),
        f(
            "type",
            "type",
            "type",
            true,
            Code(Nomenclature::TypeConsequence),
        ),
        f(
            "dateDecision",
            "date_decision",
            "date de décision",
            true,
            Date,
        ),
        f(
            "tauxDeficit",
            "taux_deficit",
            "taux de déficit",
            false,
            Taux,
        ),
    ],
};

/// The spec of a record kind.
pub fn spec_of(kind: RecordKind) -> &'static RecordSpec {
    match kind {
        RecordKind::Entete => &ENTETE,
        RecordKind::Service => &SERVICE,
        RecordKind::Agent => &AGENT,
        RecordKind::Evenement => &EVENEMENT,
        RecordKind::Arret => &ARRET,
        RecordKind::Certificat => &CERTIFICAT,
        RecordKind::Lesion => &LESION,
        RecordKind::Consequence => &CONSEQUENCE,
        RecordKind::Deces => &DECES,
        RecordKind::Group => &ADRESSE,
    }
}

/// [`columns`] of a record kind, computed once.
pub fn columns_of(kind: RecordKind) -> &'static [&'static str] {
    use std::sync::OnceLock;
    static CACHE: OnceLock<Vec<(RecordKind, &'static [&'static str])>> = OnceLock::new();
    let all = CACHE.get_or_init(|| {
        RecordKind::COUNTED
            .iter()
            .map(|k| (*k, &*Vec::leak(columns(spec_of(*k)))))
            .collect()
    });
    all.iter()
        .find(|(k, _)| *k == kind)
        .map(|(_, c)| *c)
        .unwrap_or(&[])
}

/// The storage columns of a record kind: its attributes and scalar fields, groups flattened,
/// sub-records left out. The agent's service reference is resolved to a service id by the
/// integrator and is not a column.
pub fn columns(spec: &'static RecordSpec) -> Vec<&'static str> {
    let mut out = Vec::new();
    fn walk(spec: &'static RecordSpec, out: &mut Vec<&'static str>) {
        for a in spec.attrs {
            out.push(a.col);
        }
        for fl in spec.fields {
            match fl.kind {
                Kind::Group(g) => walk(g, out),
                Kind::Record(_) => {}
                _ => out.push(fl.col),
            }
        }
    }
    walk(spec, &mut out);
    out.retain(|c| *c != "service_code" && *c != "service_libelle");
    out
}

/// The XML name (as used in the `Valeur différente ignorée pour …` lines) and French label
/// of a column of a record kind.
pub fn column_names(spec: &'static RecordSpec, col: &str) -> (&'static str, &'static str) {
    fn walk(spec: &'static RecordSpec, col: &str) -> Option<(&'static str, &'static str)> {
        for a in spec.attrs {
            if a.col == col {
                return Some((a.name, a.label));
            }
        }
        for fl in spec.fields {
            match fl.kind {
                Kind::Group(g) => {
                    if let Some(l) = walk(g, col) {
                        return Some(l);
                    }
                }
                _ if fl.col == col => return Some((fl.name, fl.label)),
                _ => {}
            }
        }
        None
    }
    walk(spec, col).unwrap_or(("champ", "champ"))
}
