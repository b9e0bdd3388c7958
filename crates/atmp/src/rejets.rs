//! `atmp rejets`, `atmp agent corriger`, `atmp rejeu`: the quarantine from the command line
//! (for automation and the tests; the web's "Rejets à traiter" page does the same).

use std::path::PathBuf;

use anyhow::{bail, Context as _, Result};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::{json, Value as Json};

use atmp_integrator::{replay, ImportOptions, ReplayError, ResultKind};
use atmp_model::{Nir, Siret};
use atmp_store::{AgentCorrection, Identite, Rejet, RejetEtat, RejetQuery, Store};

use crate::{outcome_json, parse_siret, print_outcome};

#[derive(Clone, Copy, ValueEnum)]
pub enum Etat {
    #[value(name = "a_traiter")]
    ATraiter,
    Rejoue,
    Classe,
}

impl From<Etat> for RejetEtat {
    fn from(e: Etat) -> Self {
        match e {
            Etat::ATraiter => RejetEtat::ATraiter,
            Etat::Rejoue => RejetEtat::Rejoue,
            Etat::Classe => RejetEtat::Classe,
        }
    }
}

#[derive(Subcommand)]
pub enum RejetsCmd {
    /// Liste les rejets (les plus récents d'abord)
    List {
        /// Rejets de cette collectivité seulement
        #[arg(long, value_parser = parse_siret)]
        collectivite: Option<Siret>,
        /// Rejets de cet import seulement
        #[arg(long)]
        import: Option<i64>,
        /// État : a_traiter, rejoue ou classe
        #[arg(long, value_enum)]
        etat: Option<Etat>,
    },
    /// Classe des rejets à traiter : la base est gardée, l'émetteur doit corriger la sienne
    Classer {
        /// Numéros des rejets
        #[arg(required = true)]
        ids: Vec<i64>,
        /// Motif (obligatoire), conservé avec le rejet
        #[arg(long)]
        motif: String,
    },
}

#[derive(Subcommand)]
pub enum AgentCmd {
    /// Corrige l'identité d'un agent de la base (seule modification de données permise)
    Corriger {
        /// Collectivité de l'agent
        #[arg(long, value_parser = parse_siret)]
        collectivite: Siret,
        /// NIR actuel de l'agent dans la base
        #[arg(long)]
        nir: String,
        /// Nouveau nom d'usage
        #[arg(long)]
        nom_usuel: Option<String>,
        /// Nouveau prénom
        #[arg(long)]
        prenom: Option<String>,
        /// Nouvelle date de naissance (AAAA-MM-JJ)
        #[arg(long)]
        date_naissance: Option<String>,
        /// Nouveau NIR (clé vérifiée)
        #[arg(long)]
        nir_nouveau: Option<String>,
    },
}

#[derive(Args)]
pub struct RejeuArgs {
    /// Import dont les rejets à traiter sont rejoués
    #[arg(long)]
    import: i64,
    /// Rejouer seulement ces rejets (répétable ; défaut : tous ceux à traiter)
    #[arg(long = "rejet")]
    rejets: Vec<i64>,
    /// Dossier des journaux (défaut : data/logs)
    #[arg(long)]
    logs: Option<PathBuf>,
}

/// The one who acts from the command line, as the audit trail names it.
fn actor() -> String {
    let user = std::env::var("USER").unwrap_or_else(|_| "inconnu".into());
    format!("ligne de commande ({user})")
}

fn identite_json(i: &Option<Identite>) -> Json {
    match i {
        Some(i) => serde_json::to_value(i).unwrap_or(Json::Null),
        None => Json::Null,
    }
}

pub(crate) fn rejet_json(r: &Rejet) -> Json {
    json!({
        "id": r.id,
        "import": r.import_id,
        "collectivite": r.new.collectivite_siret,
        "niveau": r.new.niveau,
        "raison": r.new.raison.code(),
        "etat": r.etat.code(),
        "message": r.new.message,
        "chemin": r.new.chemin,
        "ligne": r.new.ligne,
        "base": identite_json(&r.new.base),
        "fichier": identite_json(&r.new.fichier),
        "differences": r.new.differences,
        "fragment": r.fragment(),
        "rejeu": r.rejeu_import_id,
        "motif": r.motif,
    })
}

pub fn rejets_cmd(store: &mut dyn Store, c: RejetsCmd, json_out: bool) -> Result<u8> {
    match c {
        RejetsCmd::List {
            collectivite,
            import,
            etat,
        } => {
            let (rows, total) = store.rejets(&RejetQuery {
                collectivite: collectivite.map(|s| s.as_str().to_string()),
                import_id: import,
                etat: etat.map(Into::into),
                ..Default::default()
            })?;
            if json_out {
                let list: Vec<Json> = rows.iter().map(rejet_json).collect();
                println!("{}", json!({ "rejets": list, "total": total }));
            } else if rows.is_empty() {
                println!("Aucun rejet.");
            } else {
                for r in &rows {
                    println!(
                        "n° {} — import n° {} — {} — {} ({}) — {} : {}",
                        r.id,
                        r.import_id,
                        r.new.collectivite_siret,
                        r.new.niveau,
                        r.new.raison.libelle(),
                        r.etat.libelle(),
                        r.new.message
                    );
                }
            }
            Ok(0)
        }
        RejetsCmd::Classer { ids, motif } => {
            if motif.trim().is_empty() {
                bail!("le motif est obligatoire pour classer un rejet");
            }
            let n = store.classer_rejets(&ids, motif.trim(), &actor())?;
            audit(
                store,
                "rejets_classes",
                &format!("rejets {ids:?} : {n} classé(s)"),
            )?;
            if json_out {
                println!("{}", json!({ "classes": n }));
            } else {
                println!("{n} rejet(s) classé(s).");
            }
            if (n as usize) < ids.len() {
                eprintln!(
                    "atmp : {} rejet(s) n'étaient pas à traiter et sont restés inchangés",
                    ids.len() - n as usize
                );
                return Ok(1);
            }
            Ok(0)
        }
    }
}

fn audit(store: &mut dyn Store, action: &str, detail: &str) -> Result<()> {
    store.add_audit(&atmp_store::AuditEvent {
        actor: actor(),
        action: action.into(),
        detail: detail.into(),
        address: String::new(),
    })?;
    Ok(())
}

pub fn agent_cmd(store: &mut dyn Store, c: AgentCmd, json_out: bool) -> Result<u8> {
    let AgentCmd::Corriger {
        collectivite,
        nir,
        nom_usuel,
        prenom,
        date_naissance,
        nir_nouveau,
    } = c;
    let correction = correction(nom_usuel, prenom, date_naissance, nir_nouveau)?;
    let (before, after) = store
        .correct_agent(&collectivite, nir.trim(), &correction, &actor())
        .context("correction refusée")?;
    // The audit trail names no person: the correction's own row holds before and after.
    audit(
        store,
        "agent_corrige",
        &format!("collectivité {collectivite} : identité d'un agent corrigée"),
    )?;
    if json_out {
        println!("{}", json!({ "avant": before, "apres": after }));
    } else {
        println!(
            "Agent corrigé : {} {} né(e) le {} ({}) → {} {} né(e) le {} ({})",
            before.nom_usuel,
            before.prenom,
            before.date_naissance,
            before.nir,
            after.nom_usuel,
            after.prenom,
            after.date_naissance,
            after.nir
        );
    }
    Ok(0)
}

/// A correction checked as the rules of §3 check a file's values.
pub(crate) fn correction(
    nom_usuel: Option<String>,
    prenom: Option<String>,
    date_naissance: Option<String>,
    nir: Option<String>,
) -> Result<AgentCorrection> {
    let text = |v: Option<String>, what: &str| -> Result<Option<String>> {
        match v.map(|s| s.trim().to_string()) {
            Some(s) if s.is_empty() => bail!("{what} ne peut pas être vide"),
            other => Ok(other),
        }
    };
    let c = AgentCorrection {
        nom_usuel: text(nom_usuel, "le nom d'usage")?,
        prenom: text(prenom, "le prénom")?,
        date_naissance: match date_naissance {
            Some(d) => match atmp_model::Date::parse(d.trim()) {
                Some(d) => Some(d.iso()),
                None => bail!("date de naissance « {d} » invalide (AAAA-MM-JJ attendu)"),
            },
            None => None,
        },
        nir: match nir {
            Some(n) => match Nir::parse(&n) {
                Ok(n) => Some(n.as_str().to_string()),
                Err(e) => bail!("NIR « {n} » refusé : {e}"),
            },
            None => None,
        },
    };
    if c.is_empty() {
        bail!(
            "rien à corriger : indiquer --nom-usuel, --prenom, --date-naissance ou --nir-nouveau"
        );
    }
    Ok(c)
}

pub fn rejeu_cmd(store: &mut dyn Store, a: RejeuArgs, json_out: bool) -> Result<u8> {
    let opts = ImportOptions {
        emetteur: None,
        logs_dir: a.logs.unwrap_or_else(|| PathBuf::from("data/logs")),
        display_name: None,
        progress: None,
        job_id: None,
        limits: atmp_flux::Limits::default(),
        files: None,
        replay: None,
        dry_run: false,
    };
    let only = (!a.rejets.is_empty()).then_some(a.rejets.as_slice());
    let o = match replay(store, a.import, only, &opts) {
        Ok(o) => o,
        Err(e @ (ReplayError::Store(_) | ReplayError::Integrator(_) | ReplayError::Io(_))) => {
            return Err(e).context("rejeu interrompu, rien n'a été enregistré")
        }
        Err(e) => bail!("{e}"),
    };
    if json_out {
        let mut j = outcome_json(&o, std::path::Path::new(&o.file));
        j["rejeu_de"] = Json::from(a.import);
        println!("{j}");
    } else {
        print_outcome(&o, &o.file);
    }
    Ok(if o.result == ResultKind::Echoue { 1 } else { 0 })
}
