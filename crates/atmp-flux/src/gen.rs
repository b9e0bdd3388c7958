//! A generator of realistic, valid DECLARATION files of any size, for benchmarks and tests.
//!
//! The content depends only on the seed and the number of agents, not on `dateCreation`,
//! so that the same content can be produced again under another creation date (re-import).

use std::io::{self, Write};

use atmp_model::{Date, Siret};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::reader::Node;
use crate::writer::FluxWriter;

/// What to generate.
#[derive(Clone, Debug)]
pub struct GenOptions {
    pub agents: u64,
    /// The collectivités the agents are spread over (round robin by blocks).
    pub collectivites: Vec<Siret>,
    pub emetteur: String,
    /// `YYYY-MM-DDTHH:MM:SS`.
    pub date_creation: String,
    pub seed: u64,
    pub cdg: Option<Siret>,
}

const NOMS: &[&str] = &[
    "MARTIN",
    "BERNARD",
    "THOMAS",
    "PETIT",
    "ROBERT",
    "RICHARD",
    "DURAND",
    "DUBOIS",
    "MOREAU",
    "LAURENT",
    "SIMON",
    "MICHEL",
    "LEFEBVRE",
    "LEROY",
    "ROUX",
    "DAVID",
    "BERTRAND",
    "MOREL",
    "FOURNIER",
    "GIRARD",
    "BONNET",
    "DUPONT",
    "LAMBERT",
    "FONTAINE",
    "ROUSSEAU",
    "VINCENT",
    "MULLER",
    "LEFEVRE",
    "FAURE",
    "ANDRE",
    "MERCIER",
    "BLANC",
    "GUERIN",
    "BOYER",
    "GARNIER",
    "CHEVALIER",
    "FRANCOIS",
    "LEGRAND",
    "GAUTHIER",
    "GARCIA",
    "PERRIN",
    "ROBIN",
    "CLEMENT",
    "MORIN",
    "NICOLAS",
    "HENRY",
    "ROUSSEL",
    "MATHIEU",
    "GAUTIER",
    "MASSON",
    "MARCHAND",
    "DUVAL",
    "DENIS",
    "DUMONT",
    "MARIE",
    "LEMAIRE",
    "NOEL",
    "MEYER",
    "DUFOUR",
    "MEUNIER",
    "BRUN",
    "BLANCHARD",
    "GIRAUD",
    "JOLY",
    "RIVIERE",
    "LUCAS",
    "BRUNET",
    "GAILLARD",
    "BARBIER",
    "ARNAUD",
    "MARTINEZ",
    "GERARD",
    "ROCHE",
    "RENARD",
    "SCHMITT",
    "ROY",
    "LEROUX",
    "COLIN",
    "VIDAL",
    "CARON",
    "PICARD",
    "ROGER",
    "FABRE",
    "AUBERT",
    "LEMOINE",
    "RENAUD",
    "DUMAS",
    "LACROIX",
    "OLIVIER",
    "PHILIPPE",
    "BOURGEOIS",
    "PIERRE",
    "BENOIT",
    "REY",
    "LECLERC",
    "PAYET",
    "ROLLAND",
    "LECLERCQ",
    "GUILLAUME",
    "LECOMTE",
];
const PRENOMS_M: &[&str] = &[
    "Jean",
    "Pierre",
    "Michel",
    "André",
    "Philippe",
    "Alain",
    "Bernard",
    "Jacques",
    "Daniel",
    "Christian",
    "Éric",
    "Patrick",
    "Nicolas",
    "Frédéric",
    "Laurent",
    "Stéphane",
    "Pascal",
    "Olivier",
    "Thierry",
    "Christophe",
    "David",
    "Julien",
    "Sébastien",
    "Jérôme",
    "Yannick",
    "Gilbert",
    "Régis",
    "Franck",
    "Hervé",
    "Didier",
    "Bruno",
    "Serge",
    "Thomas",
    "Vincent",
    "Cédric",
    "Ludovic",
    "Mathieu",
    "Guillaume",
    "Romain",
    "Anthony",
    "Maxime",
    "Kévin",
    "Benoît",
    "Fabrice",
    "Gérard",
    "Joël",
    "Marc",
    "Denis",
    "Loïc",
    "Yves",
];
const PRENOMS_F: &[&str] = &[
    "Marie",
    "Nathalie",
    "Isabelle",
    "Sylvie",
    "Catherine",
    "Françoise",
    "Christine",
    "Monique",
    "Valérie",
    "Sandrine",
    "Véronique",
    "Martine",
    "Nicole",
    "Stéphanie",
    "Céline",
    "Chantal",
    "Évelyne",
    "Sophie",
    "Patricia",
    "Brigitte",
    "Aurélie",
    "Émilie",
    "Julie",
    "Laurence",
    "Corinne",
    "Pascale",
    "Caroline",
    "Virginie",
    "Hélène",
    "Anne",
    "Karine",
    "Élodie",
    "Audrey",
    "Delphine",
    "Florence",
    "Agnès",
    "Dominique",
    "Annie",
    "Josiane",
    "Mireille",
    "Odile",
    "Lucie",
    "Camille",
    "Manon",
    "Laura",
    "Sarah",
    "Claire",
    "Béatrice",
    "Danielle",
    "Ginette",
];
const GRADES: &[&str] = &[
    "Adjoint technique principal de 2e classe",
    "Adjoint administratif principal de 1re classe",
    "Agent spécialisé principal de 2e classe des écoles maternelles",
    "Auxiliaire de puériculture principal",
    "Technicien principal de 1re classe",
    "Agent de maîtrise principal",
    "Infirmier en soins généraux",
    "Sergent-chef de sapeurs-pompiers professionnels",
    "Brigadier-chef principal de police municipale",
    "Aide-soignant de classe supérieure",
];
const CIRCONSTANCES: &[&str] = &[
    "Chute de plain-pied sur un sol mouillé dans le couloir du bâtiment administratif ; réception sur la main droite.",
    "Coupure à la main gauche lors de la manipulation d'un outil tranchant pendant l'entretien des espaces verts.",
    "Lumbago en soulevant une charge lourde lors du déménagement du mobilier de la salle du conseil.",
    "Chute dans l'escalier en portant des cartons d'archives ; entorse de la cheville.",
    "Accident de la circulation avec le véhicule de service sur la route départementale, chaussée glissante.",
    "Glissade sur une plaque de verglas sur le parking en se rendant au poste de travail.",
    "Douleurs à l'épaule apparues après des gestes répétés bras au-dessus des épaules à l'atelier.",
    "Projection d'un corps étranger dans l'œil lors du débroussaillage d'un talus, sans lunettes de protection.",
];

fn nir_for(i: u64, male: bool, dob: Date) -> String {
    let sex = if male { 1 } else { 2 };
    let dept = 1 + (i / 1_000_000) % 95;
    let commune = (i / 1000) % 1000;
    let order = i % 1000;
    let body = format!(
        "{sex}{:02}{:02}{dept:02}{commune:03}{order:03}",
        dob.year().rem_euclid(100),
        dob.month()
    );
    let n: u64 = body.parse().expect("digits");
    format!("{body}{:02}", 97 - n % 97)
}

fn d(date: Date) -> String {
    date.iso()
}

/// The header node of a generated file.
pub fn header(opts: &GenOptions, agents: u64, evenements: u64) -> Node {
    let mut h = Node::new("entete");
    h.leaf("emetteur", Some(&opts.emetteur))
        .leaf("typeFichier", Some("DECLARATION"))
        .leaf("mode", Some("COMPLET"))
        .leaf("dateCreation", Some(&opts.date_creation))
        .leaf("limiteAnteriorite", Some("2010-01-01"));
    if let Some(c) = &opts.cdg {
        h.leaf("cdg", Some(c.as_str()));
    }
    h.leaf("nombreAgents", Some(&agents.to_string()))
        .leaf("nombreEvenements", Some(&evenements.to_string()));
    h
}

fn events_of(i: u64) -> u64 {
    1 + i % 3
}

/// One generated agent with its events; deterministic in (`seed`, `i`).
pub fn agent(seed: u64, i: u64) -> Node {
    let mut rng = SmallRng::seed_from_u64(seed ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let male = rng.gen_bool(0.5);
    let nom = NOMS[(i % NOMS.len() as u64) as usize];
    let prenoms = if male { PRENOMS_M } else { PRENOMS_F };
    let prenom = prenoms[((i / NOMS.len() as u64) % prenoms.len() as u64) as usize];
    // (nom, prénom, date de naissance) is unique for every i below 5000 × 14 000.
    let dob = Date::from_ymd(1960, 1, 1)
        .expect("date")
        .add_days(((i / 5000) % 14_000) as i64);
    let mut a = Node::new("agent");
    let nir = nir_for(i, male, dob);
    let matricule = format!("M{i:07}");
    let entree = dob.add_days(365 * 20 + rng.gen_range(0..3650));
    a.leaf("nir", Some(&nir))
        .leaf("matricule", Some(&matricule))
        .leaf("civilite", Some(if male { "M" } else { "MME" }))
        .leaf("nomUsuel", Some(nom))
        .leaf("prenom", Some(prenom))
        .leaf("dateNaissance", Some(&d(dob)))
        .leaf("sexe", Some(if male { "M" } else { "F" }))
        .leaf(
            "lateralite",
            Some(if rng.gen_bool(0.9) { "D" } else { "G" }),
        )
        .leaf(
            "regime",
            Some(if rng.gen_bool(0.8) { "CNRACL" } else { "RG" }),
        );
    let mut adresse = Node::new("adresse");
    let ligne = format!(
        "{} rue des {}",
        1 + rng.gen_range(0..120),
        ["Tilleuls", "Écoles", "Forges", "Lavoirs"][rng.gen_range(0..4)]
    );
    adresse
        .leaf("ligne1", Some(&ligne))
        .leaf("codePostal", Some("21800"))
        .leaf("commune", Some("Vauclaire-Ville"));
    a.children.push(adresse);
    a.leaf("dateEntreeFP", Some(&d(entree)))
        .leaf("dateEntreeCollectivite", Some(&d(entree)))
        .leaf("grade", Some(GRADES[rng.gen_range(0..GRADES.len())]))
        .leaf(
            "typePersonnel",
            Some(["TIT", "TIT", "TIT", "STA", "CONT"][rng.gen_range(0..5)]),
        );
    for k in 0..events_of(i) {
        let date = Date::from_ymd(2010, 1, 1)
            .expect("date")
            .add_days(rng.gen_range(0..600) + (k as i64) * 700); // never the same (type, date) twice
        let mut e = Node::new("evenement");
        let id = format!("EV-{i}-{k}");
        let typ = ["AS", "AS", "AS", "ATR", "MP", "AT"][rng.gen_range(0..6)];
        let heure = format!("{:02}:{:02}", rng.gen_range(7..19), rng.gen_range(0..60));
        e.leaf("identifiant", Some(&id))
            .leaf("type", Some(typ))
            .leaf("date", Some(&d(date)))
            .leaf("heure", Some(&heure))
            .leaf(
                "dateDeclaration",
                Some(&d(date.add_days(rng.gen_range(0..5)))),
            )
            .leaf(
                "statut",
                Some(["DECLARE", "INSTRUCTION", "RECONNU"][rng.gen_range(0..3)]),
            )
            .leaf(
                "quotiteTravail",
                Some(["100", "80", "50"][rng.gen_range(0..3)]),
            )
            .leaf(
                "accidentSite",
                Some(if rng.gen_bool(0.7) { "true" } else { "false" }),
            )
            .leaf(
                "circonstances",
                Some(CIRCONSTANCES[rng.gen_range(0..CIRCONSTANCES.len())]),
            )
            .leaf(
                "elementMateriel",
                Some(&format!("{:02}", rng.gen_range(1..41))),
            );
        if typ == "MP" {
            e.leaf(
                "noTableauMaladiePro",
                Some(["57A", "98", "30 bis"][rng.gen_range(0..3)]),
            );
        }
        let mut day = date;
        let arrets = rng.gen_range(1..4);
        for _ in 0..arrets {
            let fin = day.add_days(rng.gen_range(3..20));
            let mut ar = Node::new("arret");
            ar.leaf("dateDebut", Some(&d(day)))
                .leaf("dateFin", Some(&d(fin)));
            e.children.push(ar);
            day = fin.add_days(1);
        }
        let certs = rng.gen_range(1..4);
        for c in 0..certs {
            let mut ce = Node::new("certificat");
            let cid = format!("CM-{i}-{k}-{c}");
            ce.leaf("identifiant", Some(&cid))
                .leaf("date", Some(&d(date.add_days(c * 10))))
                .leaf("type", Some(["I", "P", "F"][c as usize]));
            e.children.push(ce);
        }
        let mut l = Node::new("lesion");
        let siege = ["30", "51", "53", "62", "64", "78", "13", "531"][rng.gen_range(0..8)];
        l.leaf("siege", Some(siege))
            .leaf(
                "nature",
                Some(["01", "02", "03", "04", "11", "99"][rng.gen_range(0..6)]),
            )
            .leaf("lateralite", Some(["D", "G"][rng.gen_range(0..2)]));
        e.children.push(l);
        if rng.gen_bool(0.3) {
            let mut cm = Node::new("consequenceMedicale");
            let cid = format!("CR-{i}-{k}");
            cm.leaf("identifiant", Some(&cid))
                .leaf("type", Some("IPP"))
                .leaf("dateDecision", Some(&d(day.add_days(30))))
                .leaf("tauxDeficit", Some(&rng.gen_range(1..40).to_string()));
            e.children.push(cm);
        }
        a.children.push(e);
    }
    a
}

/// Writes a whole generated file; returns the numbers of agents and événements written.
pub fn generate<W: Write>(w: W, opts: &GenOptions) -> io::Result<(u64, u64)> {
    let evenements: u64 = (0..opts.agents).map(events_of).sum();
    let mut fw = FluxWriter::new(w)?;
    fw.header(&header(opts, opts.agents, evenements))?;
    let blocks = opts.collectivites.len().max(1) as u64;
    let per_block = opts.agents.div_ceil(blocks);
    for (b, siret) in opts.collectivites.iter().enumerate() {
        let start = b as u64 * per_block;
        let end = (start + per_block).min(opts.agents);
        fw.begin_block(siret.as_str(), None)?;
        for i in start..end {
            fw.record(&agent(opts.seed, i))?;
        }
    }
    fw.finish()?;
    Ok((opts.agents, evenements))
}
