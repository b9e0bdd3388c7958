//! The platform's configuration: defaults, then a TOML file, then environment variables,
//! then the command line (see `atmp.example.toml` at the root of the repository).

use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::PlatformError;

/// The resolved configuration of `atmp serve`.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where the base, the received files, the logs, the FTPS folders and the certificate live.
    pub data_dir: PathBuf,
    /// `sqlite://PATH` (default: `<data>/atmp.db`).
    pub database_url: String,
    /// The web server's address (port 0: any free port).
    pub http: SocketAddr,
    /// The FTPS server's address (port 0: any free port).
    pub ftps: SocketAddr,
    /// The ports offered for FTPS passive data connections.
    pub passive_ports: RangeInclusive<u16>,
    /// The address users reach the web at, used in e-mail links.
    pub public_url: Option<String>,
    /// Whether the web is served over HTTPS (default); off only behind a TLS reverse proxy.
    pub web_tls: bool,
    /// PEM certificate chain and key for FTPS and HTTPS (default: generated self-signed).
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// A production platform sends e-mail; any other never does.
    pub production: bool,
    /// `smtp://HOST:PORT`, `smtps://…` or `smtp://…?tls=required` (lettre's URL form).
    pub smtp_url: Option<String>,
    pub mail_from: String,
    /// Attach the logs (NIR masked) to the mails.
    pub attach_logs: bool,
    /// Load the example collectivités, senders and files on start.
    pub demo: bool,
    /// The limits every received file is read under (size as received and decompressed,
    /// depth, text length); the FTPS intake refuses an upload larger than `max_file`.
    pub limits: atmp_flux::Limits,
    /// The most bytes a sender's FTPS folder may hold (files not yet taken).
    pub sender_quota: u64,
    /// The most FTPS connections at once from one address.
    pub max_connections_per_ip: usize,
    /// Seconds an FTPS connection may stay without logging in.
    pub ftps_login_timeout: u64,
    /// Days a received file is kept after its reception (0: purged at the next purge).
    pub retention_received_days: u32,
    /// Days the logs of an import are kept after its end.
    pub retention_logs_days: u32,
    /// Days the records kept with an import's rejections (as received, with the identities)
    /// are kept after its end: then only the rejection's reason and state remain.
    pub retention_rejets_days: u32,
    /// Time between two purges (a day).
    pub purge_interval: std::time::Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("data"),
            database_url: String::new(),
            http: "127.0.0.1:8443".parse().expect("address"),
            ftps: "127.0.0.1:2121".parse().expect("address"),
            passive_ports: 50000..=50100,
            public_url: None,
            web_tls: true,
            cert: None,
            key: None,
            production: false,
            smtp_url: None,
            mail_from: "atmp <ne-pas-repondre@atmp.invalid>".into(),
            attach_logs: false,
            demo: false,
            limits: atmp_flux::Limits::default(),
            sender_quota: 4 << 30,
            max_connections_per_ip: 16,
            ftps_login_timeout: 30,
            retention_received_days: 90,
            retention_logs_days: 730,
            retention_rejets_days: 730,
            purge_interval: crate::retention::DAILY,
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct FileConfig {
    serveur: ServeurSection,
    tls: TlsSection,
    mail: MailSection,
    limites: LimitesSection,
    conservation: ConservationSection,
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct ConservationSection {
    fichiers_recus_jours: Option<u32>,
    journaux_jours: Option<u32>,
    rejets_jours: Option<u32>,
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct LimitesSection {
    taille_max_fichier: Option<String>,
    taille_max_decompresse: Option<String>,
    quota_emetteur: Option<String>,
    connexions_par_adresse: Option<usize>,
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct ServeurSection {
    donnees: Option<PathBuf>,
    base: Option<String>,
    http: Option<String>,
    ftps: Option<String>,
    ports_passifs: Option<String>,
    url_publique: Option<String>,
    production: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct TlsSection {
    certificat: Option<PathBuf>,
    cle: Option<PathBuf>,
    web: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct MailSection {
    smtp: Option<String>,
    expediteur: Option<String>,
    joindre_journaux: Option<bool>,
}

fn addr(what: &str, s: &str) -> Result<SocketAddr, PlatformError> {
    s.parse().map_err(|_| {
        PlatformError::Config(format!(
            "{what} : « {s} » n'est pas une adresse de la forme IP:PORT"
        ))
    })
}

fn ports(s: &str) -> Result<RangeInclusive<u16>, PlatformError> {
    let bad = || {
        PlatformError::Config(format!(
            "ports passifs : « {s} » attendu de la forme DEBUT-FIN (par exemple 50000-50100)"
        ))
    };
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    let a: u16 = a.trim().parse().map_err(|_| bad())?;
    let b: u16 = b.trim().parse().map_err(|_| bad())?;
    if a == 0 || a > b {
        return Err(bad());
    }
    Ok(a..=b)
}

/// A size in bytes, with an optional unit: `2G`, `512M`, `64K` (binary multiples), or
/// plain bytes.
pub fn size(what: &str, s: &str) -> Result<u64, PlatformError> {
    let t = s.trim().to_ascii_uppercase();
    let t = t.trim_end_matches('O').trim_end_matches("I");
    let (num, mul) = match t.chars().last() {
        Some('K') => (&t[..t.len() - 1], 1u64 << 10),
        Some('M') => (&t[..t.len() - 1], 1 << 20),
        Some('G') => (&t[..t.len() - 1], 1 << 30),
        Some('T') => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    num.trim()
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mul))
        .filter(|n| *n > 0)
        .ok_or_else(|| {
            PlatformError::Config(format!(
                "{what} : « {s} » n'est pas une taille (par exemple 2G, 512M ou un nombre d'octets)"
            ))
        })
}

fn boolean(what: &str, s: &str) -> Result<bool, PlatformError> {
    match s.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "oui" | "yes" => Ok(true),
        "0" | "false" | "non" | "no" | "" => Ok(false),
        _ => Err(PlatformError::Config(format!(
            "{what} : « {s} » attendu true ou false"
        ))),
    }
}

impl Config {
    /// Reads the TOML file (if any), then the `ATMP_*` environment variables.
    pub fn load(file: Option<&Path>) -> Result<Config, PlatformError> {
        let mut c = Config::default();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|e| {
                PlatformError::Config(format!(
                    "{} : lecture impossible ({})",
                    path.display(),
                    atmp_flux::io_error_fr(&e)
                ))
            })?;
            let f: FileConfig = toml::from_str(&text).map_err(|e| {
                let line = e
                    .span()
                    .map(|r| text[..r.start.min(text.len())].matches('\n').count() + 1)
                    .unwrap_or(1);
                PlatformError::Config(format!(
                    "{}, ligne {line} : clé inconnue ou valeur invalide ({})",
                    path.display(),
                    e.message()
                ))
            })?;
            if let Some(v) = f.serveur.donnees {
                c.data_dir = v;
            }
            if let Some(v) = f.serveur.base {
                c.database_url = v;
            }
            if let Some(v) = f.serveur.http {
                c.http = addr("serveur.http", &v)?;
            }
            if let Some(v) = f.serveur.ftps {
                c.ftps = addr("serveur.ftps", &v)?;
            }
            if let Some(v) = f.serveur.ports_passifs {
                c.passive_ports = ports(&v)?;
            }
            if let Some(v) = f.serveur.url_publique {
                c.public_url = Some(v);
            }
            if let Some(v) = f.serveur.production {
                c.production = v;
            }
            c.cert = f.tls.certificat.or(c.cert);
            c.key = f.tls.cle.or(c.key);
            if let Some(v) = f.tls.web {
                c.web_tls = v;
            }
            c.smtp_url = f.mail.smtp.or(c.smtp_url);
            if let Some(v) = f.mail.expediteur {
                c.mail_from = v;
            }
            if let Some(v) = f.mail.joindre_journaux {
                c.attach_logs = v;
            }
            if let Some(v) = f.limites.taille_max_fichier {
                c.limits.max_file = size("limites.taille_max_fichier", &v)?;
            }
            if let Some(v) = f.limites.taille_max_decompresse {
                c.limits.max_decoded = size("limites.taille_max_decompresse", &v)?;
            }
            if let Some(v) = f.limites.quota_emetteur {
                c.sender_quota = size("limites.quota_emetteur", &v)?;
            }
            if let Some(v) = f.limites.connexions_par_adresse {
                c.max_connections_per_ip = v.max(1);
            }
            if let Some(v) = f.conservation.fichiers_recus_jours {
                c.retention_received_days = v;
            }
            if let Some(v) = f.conservation.journaux_jours {
                c.retention_logs_days = v;
            }
            if let Some(v) = f.conservation.rejets_jours {
                c.retention_rejets_days = v;
            }
        }
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        if let Some(v) = env("ATMP_DATA") {
            c.data_dir = v.into();
        }
        if let Some(v) = env("ATMP_DATABASE_URL") {
            c.database_url = v;
        }
        if let Some(v) = env("ATMP_HTTP") {
            c.http = addr("ATMP_HTTP", &v)?;
        }
        if let Some(v) = env("ATMP_FTPS") {
            c.ftps = addr("ATMP_FTPS", &v)?;
        }
        if let Some(v) = env("ATMP_FTPS_PASSIVE_PORTS") {
            c.passive_ports = ports(&v)?;
        }
        if let Some(v) = env("ATMP_PUBLIC_URL") {
            c.public_url = Some(v);
        }
        if let Some(v) = env("ATMP_PRODUCTION") {
            c.production = boolean("ATMP_PRODUCTION", &v)?;
        }
        if let Some(v) = env("ATMP_WEB_TLS") {
            c.web_tls = boolean("ATMP_WEB_TLS", &v)?;
        }
        if let Some(v) = env("ATMP_TLS_CERT") {
            c.cert = Some(v.into());
        }
        if let Some(v) = env("ATMP_TLS_KEY") {
            c.key = Some(v.into());
        }
        if let Some(v) = env("ATMP_SMTP_URL") {
            c.smtp_url = Some(v);
        }
        if let Some(v) = env("ATMP_MAIL_FROM") {
            c.mail_from = v;
        }
        if let Some(v) = env("ATMP_MAIL_ATTACH_LOGS") {
            c.attach_logs = boolean("ATMP_MAIL_ATTACH_LOGS", &v)?;
        }
        if let Some(v) = env("ATMP_MAX_FILE_SIZE") {
            c.limits.max_file = size("ATMP_MAX_FILE_SIZE", &v)?;
        }
        if let Some(v) = env("ATMP_MAX_DECOMPRESSED_SIZE") {
            c.limits.max_decoded = size("ATMP_MAX_DECOMPRESSED_SIZE", &v)?;
        }
        if let Some(v) = env("ATMP_FTPS_LOGIN_TIMEOUT_SECONDS") {
            c.ftps_login_timeout = v.parse::<u64>().ok().filter(|n| *n > 0).ok_or_else(|| {
                PlatformError::Config(format!(
                    "ATMP_FTPS_LOGIN_TIMEOUT_SECONDS : « {v} » attendu un nombre de secondes"
                ))
            })?;
        }
        if let Some(v) = env("ATMP_FTPS_MAX_CONNECTIONS_PER_IP") {
            c.max_connections_per_ip =
                v.parse::<usize>().ok().filter(|n| *n > 0).ok_or_else(|| {
                    PlatformError::Config(format!(
                        "ATMP_FTPS_MAX_CONNECTIONS_PER_IP : « {v} » attendu un nombre"
                    ))
                })?;
        }
        let days = |k: &str, v: &str| {
            v.parse::<u32>().map_err(|_| {
                PlatformError::Config(format!("{k} : « {v} » attendu un nombre de jours"))
            })
        };
        if let Some(v) = env("ATMP_RETENTION_RECEIVED_DAYS") {
            c.retention_received_days = days("ATMP_RETENTION_RECEIVED_DAYS", &v)?;
        }
        if let Some(v) = env("ATMP_RETENTION_LOGS_DAYS") {
            c.retention_logs_days = days("ATMP_RETENTION_LOGS_DAYS", &v)?;
        }
        if let Some(v) = env("ATMP_RETENTION_REJETS_DAYS") {
            c.retention_rejets_days = days("ATMP_RETENTION_REJETS_DAYS", &v)?;
        }
        if let Some(v) = env("ATMP_PURGE_INTERVAL_SECONDS") {
            let n = v.parse::<u64>().ok().filter(|n| *n > 0).ok_or_else(|| {
                PlatformError::Config(format!(
                    "ATMP_PURGE_INTERVAL_SECONDS : « {v} » attendu un nombre de secondes"
                ))
            })?;
            c.purge_interval = std::time::Duration::from_secs(n);
        }
        if let Some(v) = env("ATMP_SENDER_QUOTA") {
            c.sender_quota = size("ATMP_SENDER_QUOTA", &v)?;
        }
        Ok(c)
    }

    /// Sets addresses from strings given on the command line.
    pub fn set_http(&mut self, s: &str) -> Result<(), PlatformError> {
        self.http = addr("--http", s)?;
        Ok(())
    }

    /// Sets the FTPS address from a string given on the command line.
    pub fn set_ftps(&mut self, s: &str) -> Result<(), PlatformError> {
        self.ftps = addr("--ftps", s)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_file_is_valid() {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../atmp.example.toml");
        let c = Config::load(Some(&p)).unwrap();
        assert_eq!(c.ftps.port(), 2121);
        assert_eq!(c.passive_ports, 50000..=50100);
        assert!(!c.production && c.web_tls && !c.attach_logs);
    }

    #[test]
    fn file_values_are_read_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("atmp.toml");
        std::fs::write(
            &p,
            "[serveur]\nhttp = \"0.0.0.0:9443\"\nports_passifs = \"40000-40010\"\nproduction = true\n[mail]\njoindre_journaux = true\n",
        )
        .unwrap();
        let c = Config::load(Some(&p)).unwrap();
        assert_eq!(c.http.port(), 9443);
        assert_eq!(c.passive_ports, 40000..=40010);
        assert!(c.production && c.attach_logs);
        std::fs::write(&p, "[serveur]\nhttp = \"0.0.0.0:1\"\nhttpp = \"x\"\n").unwrap();
        let e = Config::load(Some(&p)).unwrap_err().to_string();
        assert!(
            e.contains("ligne 3 : clé inconnue") && e.contains("httpp"),
            "{e}"
        );
        std::fs::write(
            &p,
            "[limites]\ntaille_max_fichier = \"512M\"\nquota_emetteur = \"3Gio\"\n",
        )
        .unwrap();
        let c = Config::load(Some(&p)).unwrap();
        assert_eq!((c.limits.max_file, c.sender_quota), (512 << 20, 3 << 30));
        std::fs::write(&p, "[limites]\ntaille_max_fichier = \"beaucoup\"\n").unwrap();
        let e = Config::load(Some(&p)).unwrap_err().to_string();
        assert!(e.contains("n'est pas une taille"), "{e}");
        std::fs::write(&p, "[serveur]\nports_passifs = \"9-1\"\n").unwrap();
        let e = Config::load(Some(&p)).unwrap_err().to_string();
        assert!(e.contains("DEBUT-FIN"), "{e}");
    }
}
