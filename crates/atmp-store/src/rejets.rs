//! The quarantine of rejected records ("rattrapage"): what is kept of each rejection, how it
//! is read, set aside or closed. The SQL of each backend is in its own module; these are the
//! types both share.

use serde::{Deserialize, Serialize};

/// Why a record was rejected: a stable code (stored, on the command line, in JSON).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RejetRaison {
    /// The agent's NIR is in the base with another name or birth date (§5.2.1).
    Identite,
    /// An agent of the same name and birth date is in the base with another NIR (§5.2.2).
    AutreNir,
    /// The record itself breaks a rule of §3 or §4 (a missing field, an unknown code…).
    Contenu,
    /// Its block's collectivité is not in the base (or its SIRET is malformed).
    CollectiviteInconnue,
    /// The sender has no consent on record for the collectivité (§5.3.2).
    NonAutorise,
    /// In a grouped file, the collectivité is not attached to the file's CDG (§5.3.3).
    HorsCdg,
}

impl RejetRaison {
    pub const ALL: [RejetRaison; 6] = [
        RejetRaison::Identite,
        RejetRaison::AutreNir,
        RejetRaison::Contenu,
        RejetRaison::CollectiviteInconnue,
        RejetRaison::NonAutorise,
        RejetRaison::HorsCdg,
    ];

    /// The stored code.
    pub fn code(&self) -> &'static str {
        match self {
            RejetRaison::Identite => "identite",
            RejetRaison::AutreNir => "autre_nir",
            RejetRaison::Contenu => "contenu",
            RejetRaison::CollectiviteInconnue => "collectivite_inconnue",
            RejetRaison::NonAutorise => "non_autorise",
            RejetRaison::HorsCdg => "hors_cdg",
        }
    }

    /// The reason of a stored code.
    pub fn parse(s: &str) -> Option<RejetRaison> {
        Self::ALL.into_iter().find(|r| r.code() == s)
    }

    /// What a page says of it, in French.
    pub fn libelle(&self) -> &'static str {
        match self {
            RejetRaison::Identite => "Identité différente de la base",
            RejetRaison::AutreNir => "Même identité avec un autre NIR",
            RejetRaison::Contenu => "Données non conformes",
            RejetRaison::CollectiviteInconnue => "Collectivité inconnue",
            RejetRaison::NonAutorise => "Émetteur non autorisé",
            RejetRaison::HorsCdg => "Collectivité non rattachée au CDG",
        }
    }

    /// What fixes it, in French (the page points there before a replay).
    pub fn remede(&self) -> &'static str {
        match self {
            RejetRaison::Identite => "Choisir, champ par champ, la bonne valeur : corriger l'agent de la base, ou classer le rejet si l'émetteur doit corriger sa propre base.",
            RejetRaison::AutreNir => "Vérifier le NIR de l'agent de la base (le corriger s'il est faux), ou classer le rejet si l'émetteur doit corriger sa propre base.",
            RejetRaison::Contenu => "L'émetteur doit corriger ses données ; si un code manque à une nomenclature, l'administrateur de la plate-forme la met à jour, puis rejouer.",
            RejetRaison::CollectiviteInconnue => "Créer la collectivité (administration), puis rejouer.",
            RejetRaison::NonAutorise => "Enregistrer le consentement de la collectivité pour cet émetteur (autorisations), puis rejouer.",
            RejetRaison::HorsCdg => "Rattacher la collectivité au CDG du fichier (administration), puis rejouer.",
        }
    }
}

/// Where a rejection stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RejetEtat {
    /// Open: waiting for a fix and a replay.
    ATraiter,
    /// Integrated since, by a replay or a later file.
    Rejoue,
    /// Set aside by an administrator, with a comment (the sender corrects its own base).
    Classe,
}

impl RejetEtat {
    pub const ALL: [RejetEtat; 3] = [RejetEtat::ATraiter, RejetEtat::Rejoue, RejetEtat::Classe];

    pub fn code(&self) -> &'static str {
        match self {
            RejetEtat::ATraiter => "a_traiter",
            RejetEtat::Rejoue => "rejoue",
            RejetEtat::Classe => "classe",
        }
    }

    pub fn parse(s: &str) -> Option<RejetEtat> {
        Self::ALL.into_iter().find(|r| r.code() == s)
    }

    pub fn libelle(&self) -> &'static str {
        match self {
            RejetEtat::ATraiter => "À traiter",
            RejetEtat::Rejoue => "Rejoué",
            RejetEtat::Classe => "Classé",
        }
    }
}

/// An agent's identity as the base or the file has it (JSON: `nomUsuel`, `prenom`,
/// `dateNaissance` (YYYY-MM-DD), `nir`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Identite {
    pub nom_usuel: String,
    pub prenom: String,
    pub date_naissance: String,
    pub nir: String,
}

/// The fields of an [`Identite`], in the JSON's names, in display order.
pub const IDENTITE_CHAMPS: [&str; 4] = ["nomUsuel", "prenom", "dateNaissance", "nir"];

impl Identite {
    /// The value of a field by its JSON name.
    pub fn get(&self, champ: &str) -> Option<&str> {
        match champ {
            "nomUsuel" => Some(&self.nom_usuel),
            "prenom" => Some(&self.prenom),
            "dateNaissance" => Some(&self.date_naissance),
            "nir" => Some(&self.nir),
            _ => None,
        }
    }
}

/// A rejection as the rules produce it, written in the file's own transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewRejet {
    /// The block's SIRET as written in the file.
    pub collectivite_siret: String,
    /// The rejected record's kind: `service`, `agent`, `evenement`, `arret`, …
    pub niveau: String,
    pub raison: RejetRaison,
    /// The French message of its log line.
    pub message: String,
    /// The rejected record's path in the file, and its line.
    pub chemin: String,
    pub ligne: u64,
    /// The top-level record it belongs to: its path, its XML as read (`None` when the
    /// fragment could not be kept: over the size limit), and the rejected record's span in it.
    pub racine: String,
    pub source_xml: Option<String>,
    pub debut: u32,
    pub fin: u32,
    /// The record's identity across files (see the integrator's `cle`).
    pub cle: String,
    /// The keys of the records under it (a later file closes it only by integrating all).
    pub contenu: Vec<String>,
    pub base: Option<Identite>,
    pub fichier: Option<Identite>,
    /// The differing fields (JSON names of [`Identite`]).
    pub differences: Vec<String>,
}

/// A kept rejection, as read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejet {
    pub id: i64,
    pub import_id: i64,
    pub new: NewRejet,
    pub etat: RejetEtat,
    pub cree_le: String,
    pub traite_le: Option<String>,
    pub traite_par: Option<String>,
    pub motif: Option<String>,
    /// The replay or later import that integrated it.
    pub rejeu_import_id: Option<i64>,
    /// When its personal data (fragment, identities, message) were purged.
    pub purge_le: Option<String>,
}

impl Rejet {
    /// The rejected record's own XML fragment, as read.
    pub fn fragment(&self) -> Option<&str> {
        let x = self.new.source_xml.as_deref()?;
        x.get(self.new.debut as usize..self.new.fin as usize)
    }
}

/// Which rejections to read. `sirets`: the collectivités the reader may see (`None`: all).
#[derive(Clone, Debug, Default)]
pub struct RejetQuery {
    pub sirets: Option<Vec<String>>,
    pub collectivite: Option<String>,
    pub import_id: Option<i64>,
    pub etat: Option<RejetEtat>,
    pub raison: Option<RejetRaison>,
    /// `cree_le` bounds, ISO (`YYYY-MM-DD…`), inclusive day bounds.
    pub du: Option<String>,
    pub au: Option<String>,
    pub ids: Option<Vec<i64>>,
    pub offset: u64,
    /// 0: no limit.
    pub limit: u64,
}

/// What changes in a replay for an original rejection that failed again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RejetMaj {
    pub id: i64,
    pub raison: RejetRaison,
    pub message: String,
    pub base: Option<Identite>,
    pub fichier: Option<Identite>,
    pub differences: Vec<String>,
}

/// A correction of an agent's identity: the fields to change (`None`: kept).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AgentCorrection {
    pub nom_usuel: Option<String>,
    pub prenom: Option<String>,
    /// YYYY-MM-DD.
    pub date_naissance: Option<String>,
    pub nir: Option<String>,
}

impl AgentCorrection {
    pub fn is_empty(&self) -> bool {
        self.nom_usuel.is_none()
            && self.prenom.is_none()
            && self.date_naissance.is_none()
            && self.nir.is_none()
    }

    /// The identity after the correction.
    pub fn apply(&self, before: &Identite) -> Identite {
        Identite {
            nom_usuel: self
                .nom_usuel
                .clone()
                .unwrap_or_else(|| before.nom_usuel.clone()),
            prenom: self.prenom.clone().unwrap_or_else(|| before.prenom.clone()),
            date_naissance: self
                .date_naissance
                .clone()
                .unwrap_or_else(|| before.date_naissance.clone()),
            nir: self.nir.clone().unwrap_or_else(|| before.nir.clone()),
        }
    }
}

/// The JSON text of an identity column.
pub(crate) fn identite_text(i: &Option<Identite>) -> Option<String> {
    i.as_ref()
        .map(|i| serde_json::to_string(i).expect("plain strings"))
}

pub(crate) fn identite_of(s: Option<String>) -> Option<Identite> {
    s.and_then(|s| serde_json::from_str(&s).ok())
}

pub(crate) fn differences_text(d: &[String]) -> String {
    serde_json::to_string(d).expect("plain strings")
}

pub(crate) fn differences_of(s: &str) -> Vec<String> {
    serde_json::from_str(s).unwrap_or_default()
}

/// The columns read by both backends' row readers, in this order.
pub(crate) const REJET_COLS: &str = "id, import_id, collectivite_siret, niveau, raison, etat, message, chemin, ligne, racine, \
    source_xml, debut, fin, cle, base, fichier, differences, cree_le, traite_le, traite_par, motif, rejeu_import_id, purge_le, contenu";

/// The `WHERE` clause of a [`RejetQuery`] with its placeholders numbered by `ph(n)`, and its
/// arguments as text or integers, the same on both backends.
pub(crate) enum Arg {
    Text(String),
    Int(i64),
}

pub(crate) fn rejet_where(q: &RejetQuery, ph: &dyn Fn(usize) -> String) -> (String, Vec<Arg>) {
    let mut conds: Vec<String> = Vec::new();
    let mut args: Vec<Arg> = Vec::new();
    let list = |col: &str, values: Vec<Arg>, conds: &mut Vec<String>, args: &mut Vec<Arg>| {
        let mut parts = Vec::new();
        for v in values {
            args.push(v);
            parts.push(ph(args.len()));
        }
        conds.push(format!("{col} IN ({})", parts.join(", ")));
    };
    let none = || ("WHERE 1 = 0".to_string(), Vec::new());
    if let Some(s) = &q.sirets {
        if s.is_empty() {
            return none();
        }
        let v = s.iter().map(|x| Arg::Text(x.clone())).collect();
        list("collectivite_siret", v, &mut conds, &mut args);
    }
    if let Some(ids) = &q.ids {
        if ids.is_empty() {
            return none();
        }
        let v = ids.iter().map(|x| Arg::Int(*x)).collect();
        list("id", v, &mut conds, &mut args);
    }
    let mut one = |cond: String, a: Arg| {
        args.push(a);
        conds.push(cond.replace('?', &ph(args.len())));
    };
    if let Some(c) = &q.collectivite {
        one("collectivite_siret = ?".into(), Arg::Text(c.clone()));
    }
    if let Some(i) = q.import_id {
        one("import_id = ?".into(), Arg::Int(i));
    }
    if let Some(e) = q.etat {
        one("etat = ?".into(), Arg::Text(e.code().into()));
    }
    if let Some(r) = q.raison {
        one("raison = ?".into(), Arg::Text(r.code().into()));
    }
    if let Some(d) = &q.du {
        one("substr(cree_le, 1, 10) >= ?".into(), Arg::Text(d.clone()));
    }
    if let Some(a) = &q.au {
        one("substr(cree_le, 1, 10) <= ?".into(), Arg::Text(a.clone()));
    }
    if conds.is_empty() {
        (String::new(), args)
    } else {
        (format!("WHERE {}", conds.join(" AND ")), args)
    }
}
