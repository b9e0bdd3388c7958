//! The sender's side of the command line (SOURCE.md §4): `atmp export`, `atmp send`,
//! `atmp sender run`, `atmp sender journal`.

use std::io::BufRead;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, Context as _, Result};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::json;

use atmp_model::Date;
use atmp_sender::cycle::{self, Config};
use atmp_sender::deliver::{self, DeliverOptions, Trust};
use atmp_sender::export::{self, ExportMode, ExportOptions};
use atmp_sender::journal::Journal;
use atmp_sender::source::Source;
use atmp_sender::SenderError;

#[derive(Clone, Copy, ValueEnum)]
pub enum ModeArg {
    Complet,
    Differentiel,
}

fn parse_date(s: &str) -> std::result::Result<Date, String> {
    Date::parse(s).ok_or_else(|| format!("date « {s} » invalide : attendu AAAA-MM-JJ"))
}

#[derive(Args)]
pub struct ExportArgs {
    /// Base source : sqlite://CHEMIN ou postgres://… (tables de source-schema.sql)
    #[arg(long)]
    source: String,
    /// Code de l'émetteur (en-tête et noms des fichiers)
    #[arg(long, value_parser = crate::parse_code)]
    emetteur: String,
    /// Mode d'extraction : complet (tout) ou différentiel (ce qui a changé depuis l'envoi précédent)
    #[arg(long, value_enum)]
    mode: ModeArg,
    /// Dossier où écrire les fichiers
    #[arg(long)]
    out: PathBuf,
    /// Différentiel : fin de la fenêtre, exclue (défaut : aujourd'hui 00:00)
    #[arg(long = "jusqu-au", value_parser = parse_date)]
    jusqu_au: Option<Date>,
    /// Différentiel : début de la fenêtre (défaut : fin de la dernière fenêtre livrée, selon
    /// --journal ; sinon fin − 7 jours)
    #[arg(long, value_parser = parse_date)]
    depuis: Option<Date>,
    /// Complet : date d'événement la plus ancienne à transmettre (défaut : celle de chaque
    /// collectivité)
    #[arg(long = "limite-anteriorite", value_parser = parse_date)]
    limite_anteriorite: Option<Date>,
    /// Compresse les fichiers (.xml.gz)
    #[arg(long)]
    gzip: bool,
    /// Journal d'un `atmp sender run`, pour chaîner la fenêtre à la dernière livrée
    #[arg(long)]
    journal: Option<PathBuf>,
}

#[derive(Args)]
pub struct SendArgs {
    /// Fichiers flux à transmettre
    #[arg(required = true, value_name = "FICHIERS")]
    files: Vec<PathBuf>,
    /// Adresse FTPS de la plate-forme, HÔTE:PORT
    #[arg(long)]
    ftps: String,
    /// Code de l'émetteur (compte FTPS)
    #[arg(long, value_parser = crate::parse_code)]
    user: String,
    /// Lit le mot de passe sur l'entrée standard (une ligne)
    #[arg(long, required = true)]
    password_stdin: bool,
    /// Fichier PEM des autorités qui signent le certificat de la plate-forme
    #[arg(
        long,
        conflicts_with = "empreinte",
        required_unless_present = "empreinte"
    )]
    ca: Option<PathBuf>,
    /// Empreinte SHA-256 du certificat de la plate-forme (64 chiffres hexadécimaux)
    #[arg(long)]
    empreinte: Option<String>,
    /// Nombre de tentatives par fichier
    #[arg(long, default_value_t = 5)]
    tentatives: u32,
    /// Délai avant la deuxième tentative, en secondes (doublé ensuite)
    #[arg(long, default_value_t = 30)]
    delai: u64,
    /// Attente maximale de l'accusé de réception, en secondes
    #[arg(long, default_value_t = 600)]
    attente: u64,
    /// Délai sans progrès après lequel une connexion est coupée et reprise, en secondes
    #[arg(long, default_value_t = 60)]
    delai_reseau: u64,
}

#[derive(Subcommand)]
pub enum SenderCmd {
    /// Planificateur : un cycle différentiel à chaque échéance (défaut : le samedi à 02:00)
    Run {
        /// Fichier de configuration (défaut : $ATMP_SENDER_CONFIG, sinon ./atmp-emetteur.toml)
        #[arg(long, env = "ATMP_SENDER_CONFIG", default_value = "atmp-emetteur.toml")]
        config: PathBuf,
        /// Un seul cycle, maintenant
        #[arg(long)]
        once: bool,
        /// Avec --once : le cycle comme s'il était lancé ce jour-là (passé ; rattrapage, essais)
        #[arg(long, value_parser = parse_date, requires = "once")]
        date: Option<Date>,
    },
    /// Liste les cycles et les transferts du journal
    Journal {
        /// Fichier de configuration (défaut : $ATMP_SENDER_CONFIG, sinon ./atmp-emetteur.toml)
        #[arg(long, env = "ATMP_SENDER_CONFIG", default_value = "atmp-emetteur.toml")]
        config: PathBuf,
        /// Le journal lui-même, sans fichier de configuration
        #[arg(long)]
        journal: Option<PathBuf>,
    },
    /// Génère une grande base source (bancs d'essai ; personnes fictives)
    #[command(hide = true)]
    GenSource {
        #[arg(long)]
        source: PathBuf,
        #[arg(long)]
        agents: u64,
    },
    /// Affiche l'empreinte SHA-256 d'un certificat PEM (pour configurer --empreinte)
    Empreinte {
        /// Fichier PEM du certificat
        certificat: PathBuf,
    },
    /// Crée une base source de démonstration (personnes fictives), ou y ajoute une semaine
    Demo {
        /// Fichier SQLite à créer
        #[arg(long)]
        source: PathBuf,
        /// Jour de référence (défaut : aujourd'hui) ; les saisies le précèdent
        #[arg(long, value_parser = parse_date)]
        date: Option<Date>,
        /// Ajoute une semaine de saisies (la semaine avant --date) à une base existante
        #[arg(long)]
        semaine: bool,
    },
}

/// The exit status of a sender error: 2 for usage, 1 otherwise.
fn fail(e: SenderError) -> Result<u8> {
    eprintln!("atmp : {e}");
    Ok(if matches!(e, SenderError::Usage(_)) {
        2
    } else {
        1
    })
}

pub fn export_cmd(a: ExportArgs, json_out: bool) -> Result<u8> {
    let source = match Source::open(&a.source) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let journal = match &a.journal {
        Some(p) => match Journal::open(p) {
            Ok(j) => Some(j),
            Err(e) => return fail(e),
        },
        None => None,
    };
    let last = |dest: &str| {
        journal
            .as_ref()
            .and_then(|j| j.next_start(dest).ok().flatten())
    };
    let mode = match a.mode {
        ModeArg::Complet => ExportMode::Complet,
        ModeArg::Differentiel => ExportMode::Differentiel,
    };
    let opts = ExportOptions {
        emetteur: a.emetteur,
        mode,
        out: a.out,
        jusqu_au: a.jusqu_au,
        depuis: a.depuis,
        limite_anteriorite: a.limite_anteriorite,
        gzip: a.gzip,
        now: chrono::Local::now().naive_local(),
        last_fin: &last,
        only: None,
    };
    let report = match export::export(&source, &opts) {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    if json_out {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        if let (Some(d), Some(f)) = (&report.debut, &report.fin) {
            println!("Fenêtre de saisie : du {d} au {f} (exclu)");
        }
        for f in &report.fichiers {
            println!(
                "{} : {} {} pour {} ({} agent(s), {} événement(s)) sha256 {}",
                f.path,
                f.type_fichier,
                if f.cdg { "groupé CDG" } else { "" },
                f.destination,
                f.agents,
                f.evenements,
                f.sha256
            );
        }
        for e in &report.exclues {
            println!("Collectivité {} non extraite : {}", e.siret, e.raison);
        }
        for e in &report.ecartes {
            println!("Écarté : {} {} — {}", e.table, e.id, e.raison);
        }
        for e in &report.avertissements {
            println!("Attention : {} {} — {}", e.table, e.id, e.raison);
        }
        for d in &report.deja_livrees {
            println!("Destination {d} : fenêtre déjà livrée, rien de nouveau à envoyer");
        }
        if let Some(m) = &report.message {
            println!("{m}");
        }
    }
    Ok(0)
}

pub fn send_cmd(a: SendArgs, json_out: bool) -> Result<u8> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("lecture du mot de passe sur l'entrée standard")?;
    let password = line.trim_end_matches(['\n', '\r']).to_string();
    let trust = match (&a.ca, &a.empreinte) {
        (Some(ca), _) => Trust::Ca(ca.clone()),
        (None, Some(e)) => match Trust::empreinte(e) {
            Ok(t) => t,
            Err(e) => return fail(e),
        },
        (None, None) => {
            return fail(SenderError::Usage(
                "--ca ou --empreinte est obligatoire".into(),
            ))
        }
    };
    let mut opts = DeliverOptions::new(&a.ftps, &a.user, &password, trust);
    opts.attempts = a.tentatives.max(1);
    opts.first_delay = Duration::from_secs(a.delai);
    opts.receipt_wait = Duration::from_secs(a.attente);
    opts.receipt_poll = Duration::from_secs(2);
    opts.io_timeout = Duration::from_secs(a.delai_reseau.max(1));
    let mut status = 0u8;
    for f in &a.files {
        let mut retry = |n: u32, why: &deliver::Failure| {
            eprintln!(
                "{} : tentative {n} échouée : {}{}",
                f.display(),
                why.message,
                if why.permanent { "" } else { " ; nouvel essai" }
            );
        };
        let sent = match deliver::send_file(&opts, f, &mut retry) {
            Ok(s) => s,
            Err(e) => {
                if json_out {
                    println!(
                        "{}",
                        json!({"file": f.display().to_string(), "envoye": false, "erreur": e.to_string()})
                    );
                } else {
                    eprintln!("{} : non transmis : {e}", f.display());
                }
                status = 1;
                continue;
            }
        };
        let receipt = match deliver::fetch_receipt(&opts, &sent.remote, &sent.sha256) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("{} : accusé de réception illisible : {e}", f.display());
                None
            }
        };
        if receipt.as_ref().is_none_or(|r| r.resultat == "echoue") {
            status = 1;
        }
        if json_out {
            println!(
                "{}",
                json!({
                    "file": sent.file, "envoye": true, "nom": sent.remote, "sha256": sent.sha256,
                    "tentatives": sent.attempts,
                    "resultat": receipt.as_ref().map(|r| r.resultat.clone()),
                    "libelle": receipt.as_ref().map(|r| r.libelle.clone()),
                    "accuse": receipt.as_ref().map(|r| r.name.clone()),
                })
            );
        } else {
            match &receipt {
                Some(r) => println!("{} : {}", f.display(), r.libelle),
                None => println!(
                    "{} : transmis ({} tentative(s)), accusé de réception non reçu dans le délai",
                    f.display(),
                    sent.attempts
                ),
            }
        }
    }
    Ok(status)
}

pub fn sender_cmd(c: SenderCmd, json_out: bool) -> Result<u8> {
    match c {
        SenderCmd::Run { config, once, date } => {
            let today =
                Date::parse(&chrono::Local::now().format("%Y-%m-%d").to_string()).expect("date");
            if date.is_some_and(|d| d > today) {
                return fail(SenderError::Usage(
                    "--date ne peut pas être dans le futur".into(),
                ));
            }
            let cfg = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => return fail(e),
            };
            let mut journal = match Journal::open(&cfg.journal) {
                Ok(j) => j,
                Err(e) => return fail(e),
            };
            if once {
                match cycle::run_once(&cfg, &mut journal, date) {
                    Ok(o) => {
                        for (f, r) in &o.results {
                            println!("{f} : {r}");
                        }
                        for e in &o.errors {
                            eprintln!("atmp : {e}");
                        }
                        Ok(if o.errors.is_empty() { 0 } else { 1 })
                    }
                    Err(e) => fail(e),
                }
            } else {
                match cycle::run_forever(&cfg, &mut journal) {
                    Ok(()) => Ok(0),
                    Err(e) => fail(e),
                }
            }
        }
        SenderCmd::Journal { config, journal } => {
            let path = match journal {
                Some(p) => p,
                None => match Config::load(&config) {
                    Ok(c) => c.journal,
                    Err(e) => return fail(e),
                },
            };
            if !path.is_file() {
                return fail(SenderError::Usage(format!(
                    "journal introuvable : {}",
                    path.display()
                )));
            }
            let j = Journal::open(&path).map_err(|e| anyhow!("{e}"))?;
            let cycles = j.cycles().map_err(|e| anyhow!("{e}"))?;
            if json_out {
                for c in &cycles {
                    println!("{}", serde_json::to_string(c)?);
                }
            } else {
                for c in &cycles {
                    println!(
                        "Cycle {} ({}) du {} : {}{}",
                        c.id,
                        c.mode,
                        c.debut_le,
                        c.etat,
                        c.erreur
                            .as_deref()
                            .map(|e| format!(" — {e}"))
                            .unwrap_or_default()
                    );
                    for f in &c.fichiers {
                        println!(
                            "  {} [{}] fenêtre {}→{} sha256 {} : {} ({} tentative(s)){}",
                            f.nom,
                            f.destination,
                            f.fenetre_debut.as_deref().unwrap_or("-"),
                            f.fenetre_fin.as_deref().unwrap_or("-"),
                            f.sha256,
                            f.libelle.as_deref().unwrap_or(&f.etat),
                            f.tentatives,
                            f.erreur
                                .as_deref()
                                .map(|e| format!(" — {e}"))
                                .unwrap_or_default()
                        );
                    }
                }
            }
            Ok(0)
        }
        SenderCmd::Demo {
            source,
            date,
            semaine,
        } => {
            let today = date.unwrap_or_else(|| {
                Date::parse(&chrono::Local::now().format("%Y-%m-%d").to_string()).expect("date")
            });
            let r = if semaine {
                atmp_sender::demo::add_week(&source, today)
            } else {
                atmp_sender::demo::create(&source, today)
            };
            match r {
                Ok(()) => {
                    println!(
                        "Base source de démonstration {} : {}",
                        source.display(),
                        if semaine {
                            "une semaine de saisies ajoutée"
                        } else {
                            "créée"
                        }
                    );
                    Ok(0)
                }
                Err(e) => fail(e),
            }
        }
        SenderCmd::GenSource { source, agents } => {
            match atmp_sender::demo::generate(&source, agents) {
                Ok(()) => Ok(0),
                Err(e) => fail(e),
            }
        }
        SenderCmd::Empreinte { certificat } => match deliver::fingerprint_of_pem(&certificat) {
            Ok(f) => {
                println!("{f}");
                Ok(0)
            }
            Err(e) => fail(e),
        },
    }
}
