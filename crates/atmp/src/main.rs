//! `atmp`: the command line of the platform (FORMAT.md §7).
//!
//! Exit statuses: 0 success; 1 a file rejected whole (`import`), an invalid file
//! (`validate`) or an operation refused; 2 a usage error.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context as _, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde_json::{json, Value as Json};

use atmp_flux::gen::{generate, GenOptions};
use atmp_flux::{validate_path, Issue};
use atmp_integrator::{import_file, ImportOptions, ImportOutcome, ResultKind};
use atmp_model::{Nomenclature, Nomenclatures, Siret};
use atmp_store::{Autorisation, Store};

mod aide;
mod rejets;
mod sender;

/// mimalloc: the reader and the rules allocate many small strings; measured faster than the
/// system allocator on `scripts/bench` (see ARCHITECTURE.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The default base: an SQLite file under ./data/.
const DEFAULT_DB: &str = "sqlite://data/atmp.db";

#[derive(Parser)]
#[command(
    name = "atmp",
    version,
    about = "Plate-forme de collecte des déclarations AT/MP (flux 1.0)"
)]
struct Cli {
    /// Base de données : sqlite://CHEMIN ou postgres://… (défaut : sqlite://data/atmp.db)
    #[arg(long, global = true, env = "ATMP_DATABASE_URL")]
    db: Option<String>,
    /// Sortie JSON, une ligne par fichier
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Vérifie des fichiers sans base de données (format, champs, codes, NIR, dates)
    Validate {
        /// Fichiers flux à vérifier (XML, éventuellement compressés en gzip)
        #[arg(required = true, value_name = "FICHIERS")]
        files: Vec<PathBuf>,
    },
    /// Gère les collectivités
    #[command(subcommand)]
    Collectivite(CollectiviteCmd),
    /// Gère les émetteurs et leurs autorisations
    #[command(subcommand)]
    Emetteur(EmetteurCmd),
    /// Gère les nomenclatures
    #[command(subcommand)]
    Nomenclature(NomenclatureCmd),
    /// Intègre des fichiers dans la base
    Import {
        /// Fichiers flux à intégrer (XML, éventuellement compressés en gzip)
        #[arg(required = true, value_name = "FICHIERS")]
        files: Vec<PathBuf>,
        /// Compte émetteur qui a transmis les fichiers (défaut : celui de l'en-tête)
        #[arg(long)]
        emetteur: Option<String>,
        /// Dossier des journaux (défaut : data/logs)
        #[arg(long)]
        logs: Option<PathBuf>,
        /// Essai : vérifie les fichiers contre la base sans rien enregistrer (journaux
        /// d'essai sous DOSSIER_DES_JOURNAUX/essais)
        #[arg(long)]
        dry_run: bool,
    },
    /// Liste ou classe les rejets en attente de traitement (rattrapage)
    #[command(subcommand)]
    Rejets(rejets::RejetsCmd),
    /// Corrige l'identité d'un agent de la base (tracé : qui, quand, avant, après)
    #[command(subcommand)]
    Agent(rejets::AgentCmd),
    /// Rejoue les rejets à traiter d'un import, selon les mêmes règles
    Rejeu(rejets::RejeuArgs),
    /// Génère un fichier DECLARATION réaliste de N agents (bancs d'essai)
    Gen(GenArgs),
    /// Démarre la plate-forme : dépôt FTPS, intégration automatique, administration web
    Serve(ServeArgs),
    /// Gère les comptes de l'administration web
    #[command(subcommand)]
    Utilisateur(UtilisateurCmd),
    /// Écrit le schéma XSD publié (schema/flux-1.0.xsd)
    Xsd,
    /// Côté émetteur : extrait la base source en fichiers flux, complet ou différentiel
    Export(sender::ExportArgs),
    /// Côté émetteur : transmet des fichiers à la plate-forme par FTPS et lit ses accusés
    Send(sender::SendArgs),
    /// Côté émetteur : planificateur hebdomadaire, journal des envois
    #[command(subcommand)]
    Sender(sender::SenderCmd),
    /// Intègre le fichier d'un travail de la plate-forme dans un processus à part (usage
    /// interne de `atmp serve`)
    #[command(hide = true)]
    IntegrerJob(IntegrerJobArgs),
}

#[derive(Subcommand)]
enum CollectiviteCmd {
    /// Crée une collectivité
    Add {
        /// SIRET de la collectivité (14 chiffres, clé de contrôle vérifiée)
        #[arg(long, value_parser = parse_siret)]
        siret: Siret,
        /// Nom de la collectivité
        #[arg(long)]
        nom: String,
        /// SIRET du CDG de rattachement
        #[arg(long, value_parser = parse_siret)]
        cdg: Option<Siret>,
    },
    /// Liste les collectivités
    List,
    /// Rattache une collectivité à un CDG (ou l'en détache, sans --cdg)
    Rattacher {
        /// SIRET de la collectivité à rattacher
        #[arg(long, value_parser = parse_siret)]
        siret: Siret,
        /// SIRET du CDG (absent : la collectivité n'est plus rattachée)
        #[arg(long, value_parser = parse_siret)]
        cdg: Option<Siret>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Statut {
    Accordee,
    Refusee,
    Retiree,
}

#[derive(Subcommand)]
enum EmetteurCmd {
    /// Crée un émetteur et l'autorise pour ces collectivités
    Add {
        /// Code de l'émetteur (lettres, chiffres, - et _), aussi son identifiant FTPS
        #[arg(long, value_parser = parse_code)]
        code: String,
        /// Nom de l'émetteur
        #[arg(long)]
        nom: Option<String>,
        /// Collectivité pour laquelle l'accord de transfert est enregistré (répétable)
        #[arg(long = "collectivite", value_parser = parse_siret)]
        collectivites: Vec<Siret>,
        /// Référence de l'accord écrit (registre des consentements)
        #[arg(long)]
        reference: Option<String>,
        /// Lit le mot de passe du compte FTPS sur l'entrée standard (une ligne)
        #[arg(long)]
        password_stdin: bool,
    },
    /// Enregistre l'état de l'autorisation d'un émetteur pour une collectivité
    Autorisation {
        /// Code de l'émetteur
        #[arg(long, value_parser = parse_code)]
        code: String,
        /// SIRET de la collectivité qui décide
        #[arg(long, value_parser = parse_siret)]
        collectivite: Siret,
        /// Décision de la collectivité
        #[arg(long, value_enum)]
        statut: Statut,
        /// Référence du document de la décision (registre des consentements)
        #[arg(long)]
        reference: Option<String>,
    },
    /// Liste les émetteurs et leurs autorisations
    List,
}

#[derive(Args)]
struct IntegrerJobArgs {
    /// The base, from the environment: a URL may hold a password, which the command line
    /// would show to every local user (`ps`).
    #[arg(long = "base", env = "ATMP_INTEGRATION_BASE", hide_env_values = true)]
    base: String,
    #[arg(long)]
    job: i64,
    #[arg(long)]
    fichier: PathBuf,
    #[arg(long)]
    nom: String,
    #[arg(long)]
    emetteur: String,
    #[arg(long)]
    journaux: PathBuf,
    #[arg(long)]
    taille_max_fichier: u64,
    #[arg(long)]
    taille_max_decompresse: u64,
}

#[derive(Args)]
struct ServeArgs {
    /// Adresse du serveur web (défaut 127.0.0.1:8443 ; port 0 : un port libre)
    #[arg(long)]
    http: Option<String>,
    /// Adresse du serveur FTPS (défaut 127.0.0.1:2121 ; port 0 : un port libre)
    #[arg(long)]
    ftps: Option<String>,
    /// Dossier des données : base, fichiers reçus, journaux, dossiers FTPS (défaut ./data)
    #[arg(long)]
    data: Option<PathBuf>,
    /// Fichier de configuration TOML (voir atmp.example.toml)
    #[arg(long)]
    config: Option<PathBuf>,
    /// Charge les collectivités, émetteurs et fichiers d'exemple (base vide seulement)
    #[arg(long)]
    demo: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum RoleArg {
    Plateforme,
    Cdg,
    CollectiviteAdmin,
    Collectivite,
}

#[derive(Subcommand)]
enum UtilisateurCmd {
    /// Crée un compte de l'administration web
    Add {
        /// Identifiant de connexion
        #[arg(long)]
        login: String,
        /// Rôle du compte
        #[arg(long, value_enum)]
        role: RoleArg,
        /// SIRET de la collectivité (ou du CDG) du compte ; tous les rôles sauf plateforme
        #[arg(long, value_parser = parse_siret)]
        collectivite: Option<Siret>,
        /// Adresse de courriel (avis d'import, mot de passe oublié)
        #[arg(long)]
        email: Option<String>,
        /// Lit le mot de passe sur l'entrée standard (une ligne) ; sinon un mot de passe à
        /// usage unique est tiré et affiché
        #[arg(long)]
        password_stdin: bool,
    },
    /// Liste les comptes
    List,
}

/// One line of standard input: a password, checked.
fn read_password() -> Result<String> {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("lecture du mot de passe sur l'entrée standard")?;
    let p = line.trim_end_matches(['\n', '\r']).to_string();
    if let Some(problem) = atmp_platform::auth::password_problem(&p) {
        bail!("mot de passe refusé : {problem}");
    }
    Ok(p)
}

#[derive(Subcommand)]
enum NomenclatureCmd {
    /// Remplace les nomenclatures présentes dans le fichier CSV (nomenclature;code;libelle)
    Import {
        /// Fichier CSV UTF-8 des nomenclatures
        #[arg(value_name = "FICHIER")]
        file: PathBuf,
    },
    /// Liste les nomenclatures chargées et leurs versions
    List,
}

#[derive(Args)]
struct GenArgs {
    /// Nombre d'agents
    #[arg(long)]
    agents: u64,
    /// Fichier à écrire
    #[arg(long)]
    out: PathBuf,
    /// Graine du générateur : la même graine donne le même fichier
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Date de création écrite dans l'en-tête (AAAA-MM-JJTHH:MM:SS)
    #[arg(long, default_value = "2016-01-01T02:00:00")]
    date_creation: String,
    /// Code de l'émetteur écrit dans l'en-tête
    #[arg(long, default_value = "BENCH")]
    emetteur: String,
    /// Collectivités sur lesquelles répartir les agents (répétable)
    #[arg(long = "collectivite", value_parser = parse_siret, required = true)]
    collectivites: Vec<Siret>,
    /// SIRET du CDG : un fichier groupé pour ses collectivités
    #[arg(long, value_parser = parse_siret)]
    cdg: Option<Siret>,
}

pub(crate) fn parse_siret(s: &str) -> std::result::Result<Siret, String> {
    Siret::parse(s).map_err(|e| format!("SIRET « {s} » invalide : {e}"))
}

pub(crate) fn parse_code(s: &str) -> std::result::Result<String, String> {
    if !s.is_empty()
        && s.len() <= 40
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        Ok(s.to_string())
    } else {
        Err(format!(
            "code « {s} » invalide : 1 à 40 lettres, chiffres, « _ » ou « - »"
        ))
    }
}

fn main() -> ExitCode {
    // Personal and health data: whatever atmp creates (base, logs, received files, folders)
    // is for its own user only.
    // SAFETY: umask has no memory effect; it is set before any thread starts.
    unsafe {
        libc::umask(0o077);
    }
    use clap::{CommandFactory, FromArgMatches};
    let parsed = aide::francise(Cli::command())
        .try_get_matches()
        .and_then(|m| Cli::from_arg_matches(&m));
    let cli = match parsed {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            // --help and --version exit 0, every usage error 2 (said in French).
            if !e.use_stderr() || e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                let _ = e.print();
            } else {
                eprint!("{}", aide::message(&e));
            }
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    // The platform reports its work (ids and counts only, never personal data).
    let default_filter = if matches!(
        cli.command,
        Command::Serve(_)
            | Command::IntegrerJob(_)
            | Command::Sender(sender::SenderCmd::Run { .. })
    ) {
        "warn,atmp=info,atmp_platform=info,atmp_integrator=info,atmp_sender=info"
    } else {
        "error"
    };
    // The PostgreSQL client traces every statement's parameters at debug level: names and
    // NIRs. Capped at info whatever ATMP_LOG asks (the program's trace never holds them).
    let filter = tracing_subscriber::EnvFilter::try_from_env("ATMP_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter))
        .add_directive("tokio_postgres=info".parse().expect("directive"))
        .add_directive("postgres=info".parse().expect("directive"));
    // Colours only on a terminal: a journal or a log file gets plain text.
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("atmp : {e:#}");
            ExitCode::from(1)
        }
    }
}

/// `atmp serve`: the platform, until Ctrl-C or SIGTERM.
fn serve(db: Option<String>, args: ServeArgs) -> Result<u8> {
    let mut config = atmp_platform::Config::load(args.config.as_deref())?;
    if let Some(d) = args.data {
        config.data_dir = d;
    }
    if let Some(db) = db {
        config.database_url = db;
    }
    if let Some(h) = &args.http {
        config.set_http(h)?;
    }
    if let Some(f) = &args.ftps {
        config.set_ftps(f)?;
    }
    config.demo = args.demo;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("démarrage du moteur d'exécution")?;
    rt.block_on(async move {
        let app = atmp_platform::Application::build(config).await?;
        if let Some(pw) = &app.first_admin_password {
            println!("Premier démarrage : compte administrateur plate-forme « admin » créé.");
            println!("Mot de passe à usage unique (affiché une seule fois, à changer à la première connexion) : {pw}");
        }
        if let Some(d) = &app.demo_summary {
            print!("{d}");
        } else if app.shared().config.demo {
            println!("Données de démonstration non chargées : la base contient déjà des collectivités.");
        }
        let scheme = if app.shared().config.web_tls { "https" } else { "http" };
        println!(
            "atmp est prêt : web {scheme}://{} — FTPS {} (TLS obligatoire) — données {}",
            app.http_addr(),
            app.ftps_addr(),
            app.shared().data_dir.display()
        );
        println!(
            "Certificat TLS (à faire reconnaître aux clients FTPS, curl --cacert) : {}",
            app.cert_path().display()
        );
        println!(
            "Base : {} ({}) — fichiers reçus et journaux : {}",
            atmp_store::backend_name(&app.shared().database_url),
            atmp_store::redact_url(&app.shared().database_url),
            app.shared().file_store_description()
        );
        use std::io::Write;
        let _ = std::io::stdout().flush();
        app.run_until_stopped().await?;
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(0)
}

fn open_store(db: &Option<String>) -> Result<Box<dyn Store>> {
    let url = db.clone().unwrap_or_else(|| DEFAULT_DB.to_string());
    atmp_store::open(&url)
        .with_context(|| format!("ouverture de la base {}", atmp_store::redact_url(&url)))
}

fn run(cli: Cli) -> Result<u8> {
    match cli.command {
        Command::Validate { files } => Ok(validate(&files, cli.json)),
        Command::Export(a) => sender::export_cmd(a, cli.json),
        Command::Send(a) => sender::send_cmd(a, cli.json),
        Command::Sender(c) => sender::sender_cmd(c, cli.json),
        Command::Import {
            files,
            emetteur,
            logs,
            dry_run,
        } => {
            let mut store = open_store(&cli.db)?;
            let logs = logs.unwrap_or_else(|| PathBuf::from("data/logs"));
            let logs = if dry_run { logs.join("essais") } else { logs };
            import(&mut *store, &files, emetteur, logs, cli.json, dry_run)
        }
        Command::Rejets(c) => rejets::rejets_cmd(&mut *open_store(&cli.db)?, c, cli.json),
        Command::Agent(c) => rejets::agent_cmd(&mut *open_store(&cli.db)?, c, cli.json),
        Command::Rejeu(a) => rejets::rejeu_cmd(&mut *open_store(&cli.db)?, a, cli.json),
        Command::Collectivite(c) => {
            let mut store = open_store(&cli.db)?;
            match c {
                CollectiviteCmd::Add { siret, nom, cdg } => {
                    let c = store.add_collectivite(&siret, &nom, cdg.as_ref())?;
                    if cli.json {
                        println!(
                            "{}",
                            json!({"id": c.id, "siret": c.siret.as_str(), "nom": c.nom, "cdg": c.cdg_siret.as_ref().map(|s| s.as_str())})
                        );
                    } else {
                        println!("Collectivité {} créée : {}", c.siret, c.nom);
                    }
                }
                CollectiviteCmd::Rattacher { siret, cdg } => {
                    store.set_cdg(&siret, cdg.as_ref())?;
                    match &cdg {
                        Some(c) => println!("Collectivité {siret} rattachée au CDG {c}"),
                        None => println!("Collectivité {siret} rattachée à aucun CDG"),
                    }
                }
                CollectiviteCmd::List => {
                    for c in store.collectivites()? {
                        if cli.json {
                            println!(
                                "{}",
                                json!({"id": c.id, "siret": c.siret.as_str(), "nom": c.nom, "cdg": c.cdg_siret.as_ref().map(|s| s.as_str())})
                            );
                        } else {
                            let cdg = c
                                .cdg_siret
                                .map(|s| format!(" (rattachée au CDG {s})"))
                                .unwrap_or_default();
                            println!("{}  {}{cdg}", c.siret, c.nom);
                        }
                    }
                }
            }
            Ok(0)
        }
        Command::Emetteur(e) => {
            let mut store = open_store(&cli.db)?;
            match e {
                EmetteurCmd::Add {
                    code,
                    nom,
                    collectivites,
                    reference,
                    password_stdin,
                } => {
                    let password = if password_stdin {
                        Some(read_password()?)
                    } else {
                        None
                    };
                    for s in &collectivites {
                        if store.collectivite(s)?.is_none() {
                            bail!("la collectivité {s} n'existe pas : créez-la d'abord (atmp collectivite add)");
                        }
                    }
                    store.add_emetteur(&code, nom.as_deref())?;
                    if let Some(p) = password {
                        store.set_emetteur_password(
                            &code,
                            &atmp_platform::auth::hash_password(&p),
                        )?;
                    }
                    for s in &collectivites {
                        store.set_autorisation(
                            &code,
                            s,
                            Autorisation::Accordee,
                            reference.as_deref(),
                        )?;
                    }
                    print_emetteur(&mut *store, &code, cli.json)?;
                }
                EmetteurCmd::Autorisation {
                    code,
                    collectivite,
                    statut,
                    reference,
                } => {
                    let state = match statut {
                        Statut::Accordee => Autorisation::Accordee,
                        Statut::Refusee => Autorisation::Refusee,
                        Statut::Retiree => Autorisation::Retiree,
                    };
                    store.set_autorisation(&code, &collectivite, state, reference.as_deref())?;
                    print_emetteur(&mut *store, &code, cli.json)?;
                }
                EmetteurCmd::List => {
                    for e in store.emetteurs()? {
                        print_emetteur(&mut *store, &e.code, cli.json)?;
                    }
                }
            }
            Ok(0)
        }
        Command::Serve(args) => serve(cli.db, args),
        Command::IntegrerJob(a) => {
            let limits = atmp_flux::Limits {
                max_file: a.taille_max_fichier,
                max_decoded: a.taille_max_decompresse,
                ..atmp_flux::Limits::default()
            };
            Ok(
                atmp_platform::worker::child_main(atmp_platform::worker::ChildArgs {
                    database_url: a.base,
                    job_id: a.job,
                    file: a.fichier,
                    display_name: a.nom,
                    emetteur: a.emetteur,
                    logs_dir: a.journaux,
                    limits,
                }) as u8,
            )
        }
        Command::Utilisateur(u) => {
            let mut store = open_store(&cli.db)?;
            match u {
                UtilisateurCmd::Add {
                    login,
                    role,
                    collectivite,
                    email,
                    password_stdin,
                } => {
                    let role = match role {
                        RoleArg::Plateforme => atmp_store::Role::Plateforme,
                        RoleArg::Cdg => atmp_store::Role::Cdg,
                        RoleArg::CollectiviteAdmin => atmp_store::Role::CollectiviteAdmin,
                        RoleArg::Collectivite => atmp_store::Role::Collectivite,
                    };
                    let email = match email {
                        Some(e) => Some(
                            atmp_platform::mail::parse_email(&e).map_err(|m| anyhow::anyhow!(m))?,
                        ),
                        None => None,
                    };
                    let (password, generated) = if password_stdin {
                        (read_password()?, false)
                    } else {
                        (atmp_platform::auth::password(), true)
                    };
                    let u = store.add_utilisateur(&atmp_store::NewUtilisateur {
                        login,
                        password_hash: atmp_platform::auth::hash_password(&password),
                        role,
                        collectivite: collectivite.map(|s| s.as_str().to_string()),
                        email,
                        doit_changer: generated,
                    })?;
                    if cli.json {
                        println!(
                            "{}",
                            json!({"id": u.id, "login": u.login, "role": u.role.code(), "collectivite": u.collectivite_siret})
                        );
                    } else {
                        println!("Utilisateur {} créé ({}).", u.login, u.role.libelle());
                    }
                    if generated {
                        println!("Mot de passe à usage unique, à changer à la première connexion : {password}");
                    }
                }
                UtilisateurCmd::List => {
                    for u in store.utilisateurs()? {
                        let c = u.collectivite_siret.clone().unwrap_or_default();
                        if cli.json {
                            println!(
                                "{}",
                                json!({"id": u.id, "login": u.login, "role": u.role.code(), "collectivite": c, "email": u.email, "actif": u.actif})
                            );
                        } else {
                            println!(
                                "{}  {}  {}  {}",
                                u.login,
                                u.role.code(),
                                c,
                                u.email.unwrap_or_default()
                            );
                        }
                    }
                }
            }
            Ok(0)
        }
        Command::Nomenclature(n) => {
            let mut store = open_store(&cli.db)?;
            match n {
                NomenclatureCmd::Import { file } => {
                    let bytes = std::fs::read(&file)
                        .with_context(|| format!("lecture de {}", file.display()))?;
                    let text = String::from_utf8(bytes.clone()).map_err(|_| {
                        anyhow::anyhow!("{} : le fichier doit être en UTF-8", file.display())
                    })?;
                    let entries = match atmp_model::parse_csv(&text) {
                        Ok(e) => e,
                        Err(errs) => {
                            for e in &errs {
                                eprintln!("{}:{}: {}", file.display(), e.line, e.message);
                            }
                            bail!(
                                "{} : {} ligne(s) invalide(s), rien n'a été chargé",
                                file.display(),
                                errs.len()
                            );
                        }
                    };
                    let version = file
                        .file_stem()
                        .map(|s| s.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes));
                    store.replace_nomenclatures(&entries, &version, &sha)?;
                    println!(
                        "{} code(s) chargé(s) depuis {} (version {version})",
                        entries.len(),
                        file.display()
                    );
                }
                NomenclatureCmd::List => {
                    let entries = store.nomenclature_entries()?;
                    for n in Nomenclature::ALL {
                        let codes: Vec<&str> = entries
                            .iter()
                            .filter(|e| e.nomenclature == n)
                            .map(|e| e.code.as_str())
                            .collect();
                        if cli.json {
                            println!("{}", json!({"nomenclature": n.name(), "codes": codes}));
                        } else {
                            println!(
                                "{} ({} codes) : {}",
                                n.name(),
                                codes.len(),
                                codes.join(", ")
                            );
                        }
                    }
                    if !cli.json {
                        for (v, sha, n, at) in store.nomenclature_versions()? {
                            println!("version {v} chargée le {at} ({n} codes, sha256 {sha})");
                        }
                    }
                }
            }
            Ok(0)
        }
        Command::Gen(g) => {
            let opts = GenOptions {
                agents: g.agents,
                collectivites: g.collectivites,
                emetteur: g.emetteur,
                date_creation: g.date_creation,
                seed: g.seed,
                cdg: g.cdg,
            };
            let f = std::fs::File::create(&g.out)
                .with_context(|| format!("création de {}", g.out.display()))?;
            let (a, e) = generate(std::io::BufWriter::with_capacity(1 << 20, f), &opts)?;
            eprintln!("{} : {a} agents, {e} événements", g.out.display());
            Ok(0)
        }
        Command::Xsd => {
            let entries = atmp_model::parse_csv(atmp_model::BUILTIN_CSV)
                .map_err(|e| anyhow::anyhow!("{e:?}"))?;
            print!("{}", atmp_flux::xsd::generate(&entries));
            Ok(0)
        }
    }
}

fn print_emetteur(store: &mut dyn Store, code: &str, json_out: bool) -> Result<()> {
    let e = store.emetteur(code)?.context("émetteur introuvable")?;
    if json_out {
        let auth: Vec<Json> = e
            .autorisations
            .iter()
            .map(|(s, st, d, r)| json!({"collectivite": s, "statut": st.code(), "date": d, "reference": r}))
            .collect();
        println!(
            "{}",
            json!({"code": e.code, "nom": e.nom, "autorisations": auth})
        );
    } else {
        println!(
            "Émetteur {}{}",
            e.code,
            e.nom.map(|n| format!(" ({n})")).unwrap_or_default()
        );
        for (s, st, d, r) in e.autorisations {
            println!(
                "  {s} : {} le {d}{}",
                st.code(),
                r.map(|r| format!(", référence {r}")).unwrap_or_default()
            );
        }
    }
    Ok(())
}

fn issue_json(i: &Issue) -> Json {
    json!({"line": i.line, "column": i.column, "path": i.path, "code": i.code, "message": i.message})
}

fn validate(files: &[PathBuf], json_out: bool) -> u8 {
    let nomenclatures = Nomenclatures::builtin();
    let mut all_valid = true;
    for f in files {
        let v = validate_path(f, &nomenclatures, &atmp_flux::Limits::default());
        all_valid &= v.valid();
        if json_out {
            let errors: Vec<Json> = v.errors.iter().map(issue_json).collect();
            let warnings: Vec<Json> = v.warnings.iter().map(issue_json).collect();
            println!(
                "{}",
                json!({"file": f.display().to_string(), "valid": v.valid(), "errors": errors, "warnings": warnings})
            );
        } else {
            for i in v.errors.iter().chain(v.warnings.iter()) {
                let level = if i.severity == atmp_flux::Severity::Error {
                    "erreur"
                } else {
                    "avertissement"
                };
                println!(
                    "{}:{}:{}: {level} [{}] {} : {}",
                    f.display(),
                    i.line,
                    i.column,
                    i.code,
                    i.path,
                    i.message
                );
            }
            if v.dropped > 0 {
                println!(
                    "{} : {} autre(s) problème(s) non affiché(s)",
                    f.display(),
                    v.dropped
                );
            }
            if v.valid() {
                println!(
                    "{} : valide ({} avertissement(s))",
                    f.display(),
                    v.warnings.len()
                );
            } else {
                println!(
                    "{} : invalide ({} erreur(s))",
                    f.display(),
                    v.errors.len() as u64 + v.dropped
                );
            }
        }
    }
    if all_valid {
        0
    } else {
        1
    }
}

pub(crate) fn outcome_json(o: &ImportOutcome, path: &Path) -> Json {
    let counts = atmp_store::RecordCounts::from(&o.counts);
    let logs: Vec<Json> = o
        .logs
        .iter()
        .map(|l| {
            let mut m = json!({
                "collectivite": if l.collectivite.is_empty() { Json::Null } else { Json::from(l.collectivite.clone()) },
                "complet": l.complet.display().to_string(),
                "erreurs": l.erreurs.display().to_string(),
            });
            if l.global {
                m["global"] = Json::Bool(true);
            }
            m
        })
        .collect();
    json!({
        "file": path.display().to_string(),
        "sha256": o.sha256,
        "result": o.result.code(),
        "label": o.label,
        "errors": o.errors,
        "warnings": o.warnings,
        "counts": counts,
        "logs": logs,
        "import": if o.import_id > 0 { Json::from(o.import_id) } else { Json::Null },
    })
}

fn import(
    store: &mut dyn Store,
    files: &[PathBuf],
    emetteur: Option<String>,
    logs_dir: PathBuf,
    json_out: bool,
    dry_run: bool,
) -> Result<u8> {
    let mut status = 0u8;
    let interactive = !json_out && std::io::stderr().is_terminal();
    for f in files {
        let bar = if interactive {
            let size = std::fs::metadata(f).map(|m| m.len()).unwrap_or(0);
            let b = indicatif::ProgressBar::new(size);
            b.set_style(
                indicatif::ProgressStyle::with_template(
                    "{msg} [{bar:40}] {bytes}/{total_bytes} ({eta})",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            b.set_message(f.display().to_string());
            Some(b)
        } else {
            None
        };
        let progress = |n: u64| {
            if let Some(b) = &bar {
                b.set_position(n);
            }
        };
        let opts = ImportOptions {
            emetteur: emetteur.clone(),
            logs_dir: logs_dir.clone(),
            display_name: None,
            progress: Some(&progress),
            job_id: None,
            limits: atmp_flux::Limits::default(),
            files: None,
            replay: None,
            dry_run,
        };
        let outcome = import_file(store, f, &opts).with_context(|| {
            format!(
                "{} : import interrompu, rien n'a été enregistré",
                f.display()
            )
        });
        if let Some(b) = &bar {
            b.finish_and_clear();
        }
        let o = outcome?;
        if o.result == ResultKind::Echoue {
            status = 1;
        }
        if json_out {
            let mut j = outcome_json(&o, f);
            if dry_run {
                j["essai"] = Json::Bool(true);
            }
            println!("{j}");
        } else {
            if dry_run {
                println!("{} : essai, rien n'a été enregistré", f.display());
            }
            print_outcome(&o, &f.display().to_string());
        }
    }
    Ok(status)
}

/// What an import (or a replay) gave, for a person.
pub(crate) fn print_outcome(o: &ImportOutcome, name: &str) {
    println!("{name} : {}", o.label);
    for k in atmp_flux::spec::RecordKind::COUNTED {
        let (a, e, r) = o.counts.get(k);
        if a + e + r > 0 {
            println!(
                "  {} : {a} ajouté(s), {e} déjà présent(s), {r} rejeté(s)",
                k.label_plural()
            );
        }
    }
    for l in &o.logs {
        println!("  journal complet : {}", l.complet.display());
        println!("  journal des erreurs : {}", l.erreurs.display());
    }
}
