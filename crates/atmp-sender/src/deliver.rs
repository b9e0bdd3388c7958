//! `atmp send`: delivery over explicit FTPS, and the platform's receipts.
//!
//! The platform's certificate is always verified: by a CA file, or by the SHA-256 fingerprint
//! of a self-signed certificate (pinned: any other certificate is refused, even one signed by
//! a public authority). Files travel in binary mode under a temporary name (`….part`, which the
//! platform never takes) and are renamed once complete, so the platform never sees half a
//! file. A transient failure is retried with a growing delay; a refused certificate, a refused
//! login or a refused file is not. The receipt is then read from `retours/` and matched by
//! the SHA-256 of the file.

use std::io::Read;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde::Serialize;
use sha2::{Digest, Sha256};
use suppaftp::types::FileType;
use suppaftp::{FtpError, RustlsConnector, RustlsFtpStream};

use crate::SenderError;

/// How the platform's certificate is trusted.
#[derive(Clone, Debug)]
pub enum Trust {
    /// A PEM file of CA certificates (the platform's certificate must chain to one, for its name).
    Ca(PathBuf),
    /// The SHA-256 of the platform's certificate (DER).
    Empreinte([u8; 32]),
}

impl Trust {
    /// Parses a fingerprint: 64 hexadecimal digits, with or without `:` separators.
    pub fn empreinte(s: &str) -> Result<Trust, SenderError> {
        let hexs: String = s
            .chars()
            .filter(|c| *c != ':' && !c.is_whitespace())
            .collect();
        let bytes = hex::decode(&hexs).ok().filter(|b| b.len() == 32).ok_or_else(|| {
            SenderError::Usage(format!(
                "empreinte invalide « {s} » : attendu le SHA-256 du certificat, 64 chiffres hexadécimaux"
            ))
        })?;
        let mut a = [0u8; 32];
        a.copy_from_slice(&bytes);
        Ok(Trust::Empreinte(a))
    }
}

/// Where and how to deliver.
#[derive(Clone, Debug)]
pub struct DeliverOptions {
    /// `HOST:PORT` of the platform's FTPS.
    pub address: String,
    pub user: String,
    pub password: String,
    pub trust: Trust,
    /// Attempts per file, the first included.
    pub attempts: u32,
    /// The delay before the second attempt; doubled at each further one.
    pub first_delay: Duration,
    /// How long to wait for the receipt once the file is delivered.
    pub receipt_wait: Duration,
    /// How often `retours/` is read while waiting.
    pub receipt_poll: Duration,
    /// A connection or transfer that makes no progress for this long is cut and retried.
    pub io_timeout: Duration,
}

impl DeliverOptions {
    pub fn new(address: &str, user: &str, password: &str, trust: Trust) -> DeliverOptions {
        DeliverOptions {
            address: address.to_string(),
            user: user.to_string(),
            password: password.to_string(),
            trust,
            attempts: 5,
            first_delay: Duration::from_secs(30),
            receipt_wait: Duration::from_secs(600),
            receipt_poll: Duration::from_secs(5),
            io_timeout: Duration::from_secs(60),
        }
    }
}

/// The platform's receipt of a file (the `accuse_de_reception` of `retours/`).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Receipt {
    /// Its name in `retours/`.
    pub name: String,
    pub import: Option<i64>,
    /// `reussi`, `echoue` or `doublon`.
    pub resultat: String,
    /// As the platform says it: `Import réussi (2 erreur(s))`…
    pub libelle: String,
    pub erreurs: i64,
}

/// The outcome of delivering one file.
#[derive(Clone, Debug, Serialize)]
pub struct Sent {
    pub file: String,
    pub remote: String,
    pub sha256: String,
    pub attempts: u32,
}

/// Why an attempt failed, and whether trying again may help.
#[derive(Debug)]
pub struct Failure {
    pub message: String,
    pub permanent: bool,
}

/// The SHA-256 of a file, read as a stream.
pub fn sha256_file(path: &Path) -> Result<String, SenderError> {
    let mut f = std::fs::File::open(path)
        .map_err(|e| SenderError::Io(format!("{} ne peut pas être lu : {e}", path.display())))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf).map_err(|e| {
            SenderError::Io(format!("{} ne peut pas être lu : {e}", path.display()))
        })?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// Uploads one file, retrying transient failures with a growing delay. `on_retry` is told of
/// each failed attempt (for the journal and the operator).
pub fn send_file(
    opts: &DeliverOptions,
    path: &Path,
    on_retry: &mut dyn FnMut(u32, &Failure),
) -> Result<Sent, SenderError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| SenderError::Usage(format!("{} n'est pas un fichier", path.display())))?;
    if !path.is_file() {
        return Err(SenderError::Usage(format!(
            "{} n'existe pas ou n'est pas un fichier",
            path.display()
        )));
    }
    let sha256 = sha256_file(path)?;
    let mut delay = opts.first_delay;
    let mut attempt = 0;
    loop {
        attempt += 1;
        match upload_once(opts, path, &name) {
            Ok(()) => {
                return Ok(Sent {
                    file: path.display().to_string(),
                    remote: name,
                    sha256,
                    attempts: attempt,
                })
            }
            Err(f) => {
                on_retry(attempt, &f);
                if f.permanent || attempt >= opts.attempts {
                    return Err(SenderError::Transfer(if f.permanent {
                        f.message
                    } else {
                        format!("{} (après {attempt} tentative(s))", f.message)
                    }));
                }
                std::thread::sleep(delay);
                delay = delay.saturating_mul(2);
            }
        }
    }
}

fn upload_once(opts: &DeliverOptions, path: &Path, name: &str) -> Result<(), Failure> {
    let watch = Watch::start(opts.io_timeout);
    let res = (|| {
        let (mut ftp, _) = connect(opts, Some(&watch))?;
        let tmp = format!("{name}.part");
        let file = std::fs::File::open(path).map_err(|e| Failure {
            message: format!("{} ne peut pas être lu : {e}", path.display()),
            permanent: true,
        })?;
        let mut file = Progress {
            inner: file,
            watch: &watch,
        };
        let res = (|| -> Result<(), Failure> {
            ftp.put_file(&tmp, &mut file)
                .map_err(|e| failure("envoi du fichier", e))?;
            watch.touch();
            ftp.rename(tmp.as_str(), name)
                .map_err(|e| failure("renommage du fichier envoyé", e))?;
            Ok(())
        })();
        let _ = ftp.quit();
        res
    })();
    let cut = watch.stop();
    match res {
        Err(f) if cut => Err(Failure {
            message: format!(
                "transfert interrompu : aucun progrès pendant {} s ({})",
                opts.io_timeout.as_secs(),
                f.message
            ),
            permanent: false,
        }),
        r => r,
    }
}

/// Cuts a transfer that makes no progress: the sockets' own timeouts do not fire while the
/// kernel still accepts a few bytes now and then, so a watchdog shuts them down when the file
/// has not been read for `timeout`.
struct Watch {
    inner: Arc<WatchState>,
    thread: Option<std::thread::JoinHandle<()>>,
}

struct WatchState {
    start: Instant,
    /// Milliseconds since `start` of the last progress.
    last: std::sync::atomic::AtomicU64,
    done: std::sync::atomic::AtomicBool,
    cut: std::sync::atomic::AtomicBool,
    sockets: Mutex<Vec<TcpStream>>,
}

impl Watch {
    fn start(timeout: Duration) -> Watch {
        use std::sync::atomic::Ordering::SeqCst;
        let inner = Arc::new(WatchState {
            start: Instant::now(),
            last: 0.into(),
            done: false.into(),
            cut: false.into(),
            sockets: Mutex::new(Vec::new()),
        });
        let st = inner.clone();
        let thread = std::thread::Builder::new()
            .name("atmp-envoi-garde".into())
            .spawn(move || {
                while !st.done.load(SeqCst) {
                    std::thread::sleep(Duration::from_millis(100));
                    let idle = st.start.elapsed().as_millis() as u64 - st.last.load(SeqCst);
                    if idle > timeout.as_millis() as u64 {
                        st.cut.store(true, SeqCst);
                        for s in st.sockets.lock().expect("lock").iter() {
                            let _ = s.shutdown(std::net::Shutdown::Both);
                        }
                        return;
                    }
                }
            })
            .ok();
        Watch { inner, thread }
    }

    fn touch(&self) {
        self.inner.last.store(
            self.inner.start.elapsed().as_millis() as u64,
            std::sync::atomic::Ordering::SeqCst,
        );
    }

    fn add(&self, s: &TcpStream) {
        if let Ok(c) = s.try_clone() {
            self.inner.sockets.lock().expect("lock").push(c);
        }
        self.touch();
    }

    /// Stops the watchdog; whether it cut the transfer.
    fn stop(mut self) -> bool {
        self.inner
            .done
            .store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.inner.cut.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// The file being sent, each read a sign of progress.
struct Progress<'w, R: Read> {
    inner: R,
    watch: &'w Watch,
}

impl<R: Read> Read for Progress<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.watch.touch();
        Ok(n)
    }
}

/// Opens an authenticated FTPS session in binary mode.
fn connect(
    opts: &DeliverOptions,
    watch: Option<&Watch>,
) -> Result<(RustlsFtpStream, String), Failure> {
    let (host, addr) = resolve(&opts.address)?;
    let t = opts.io_timeout;
    let tcp = TcpStream::connect_timeout(&addr, t).map_err(|e| Failure {
        message: format!("connexion à {} impossible : {e}", opts.address),
        permanent: false,
    })?;
    let _ = tcp.set_read_timeout(Some(t));
    let _ = tcp.set_write_timeout(Some(t));
    if let Some(w) = watch {
        w.add(&tcp);
    }
    let data_sockets = watch.map(|w| w.inner.clone());
    let rejected: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
    let config = client_config(&opts.trust, rejected.clone()).map_err(|e| Failure {
        message: e.to_string(),
        permanent: true,
    })?;
    let cert_failure = |e: FtpError| -> Failure {
        if let Some(why) = rejected.lock().expect("lock").clone() {
            return Failure {
                message: why,
                permanent: true,
            };
        }
        let text = e.to_string();
        if matches!(e, FtpError::SecureError(_)) || text.contains("certificate") {
            return Failure {
                message: format!(
                    "certificat de la plateforme refusé ({text}) : vérifiez le fichier CA ou l'empreinte configurée"
                ),
                permanent: true,
            };
        }
        failure("ouverture de la session FTPS", e)
    };
    let ftp = RustlsFtpStream::connect_with_stream(tcp)
        .map_err(|e| failure("accueil du serveur FTPS", e))?;
    let mut ftp = ftp
        .passive_stream_builder(move |a: SocketAddr| {
            let s = TcpStream::connect_timeout(&a, t).map_err(FtpError::ConnectionError)?;
            let _ = s.set_read_timeout(Some(t));
            let _ = s.set_write_timeout(Some(t));
            if let Some(st) = &data_sockets {
                if let Ok(c) = s.try_clone() {
                    st.sockets.lock().expect("lock").push(c);
                }
            }
            Ok(s)
        })
        .into_secure(RustlsConnector::from(Arc::new(config)), &host)
        .map_err(cert_failure)?;
    ftp.set_passive_nat_workaround(true);
    ftp.login(opts.user.as_str(), opts.password.as_str())
        .map_err(|e| match &e {
            FtpError::UnexpectedResponse(r) if r.status.code() == 530 => Failure {
                message: format!(
                    "connexion refusée par la plateforme pour l'émetteur {} : code ou mot de passe incorrect, ou compte bloqué",
                    opts.user
                ),
                permanent: true,
            },
            _ => cert_failure(e),
        })?;
    ftp.transfer_type(FileType::Binary)
        .map_err(|e| failure("passage en mode binaire", e))?;
    Ok((ftp, host))
}

fn resolve(address: &str) -> Result<(String, SocketAddr), Failure> {
    let host = address
        .rsplit_once(':')
        .map(|(h, _)| h.trim_start_matches('[').trim_end_matches(']').to_string())
        .ok_or_else(|| Failure {
            message: format!("adresse FTPS invalide « {address} » : attendu HÔTE:PORT"),
            permanent: true,
        })?;
    let addr = address
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| Failure {
            message: format!("adresse FTPS introuvable « {address} »"),
            permanent: false,
        })?;
    Ok((host, addr))
}

/// A French reason for a failed FTP step; refusals by the server (5xx) are permanent.
fn failure(step: &str, e: FtpError) -> Failure {
    match &e {
        FtpError::UnexpectedResponse(r) => {
            let code = r.status.code();
            let body = String::from_utf8_lossy(&r.body).trim().to_string();
            Failure {
                message: format!("{step} : refusé par la plateforme ({body})"),
                // 4xx is "try again later"; 5xx a definite refusal (quota, size, name).
                permanent: (500..600).contains(&code),
            }
        }
        FtpError::ConnectionError(io) => Failure {
            message: format!("{step} : connexion interrompue ({io})"),
            permanent: false,
        },
        other => Failure {
            message: format!("{step} : {other}"),
            permanent: false,
        },
    }
}

/// Waits for the platform's receipt of a file delivered as `remote` with this SHA-256.
/// None when it did not come within `receipt_wait`.
pub fn fetch_receipt(
    opts: &DeliverOptions,
    remote: &str,
    sha256: &str,
) -> Result<Option<Receipt>, SenderError> {
    let start = Instant::now();
    // The platform's own reduction of the name (its `retours/` names), not a copy of it.
    let prefix = format!("{}_", atmp_model::safe_stem(remote));
    loop {
        match read_receipts(opts, &prefix, sha256) {
            Ok(Some(r)) => return Ok(Some(r)),
            Ok(None) => {}
            Err(f) if f.permanent => return Err(SenderError::Transfer(f.message)),
            Err(f) => tracing::warn!(reason = %f.message, "lecture des accusés : nouvel essai"),
        }
        if start.elapsed() >= opts.receipt_wait {
            return Ok(None);
        }
        std::thread::sleep(opts.receipt_poll);
    }
}

fn read_receipts(
    opts: &DeliverOptions,
    prefix: &str,
    sha256: &str,
) -> Result<Option<Receipt>, Failure> {
    let (mut ftp, _) = connect(opts, None)?;
    let names = ftp
        .nlst(Some("retours"))
        .map_err(|e| failure("lecture de retours/", e))?;
    let mut found: Vec<Receipt> = Vec::new();
    for n in names {
        let base = n.rsplit('/').next().unwrap_or(&n).to_string();
        if !base.starts_with(prefix) || !base.ends_with("_accuse.json") {
            continue;
        }
        let bytes = ftp
            .retr_as_buffer(&format!("retours/{base}"))
            .map_err(|e| failure("lecture d'un accusé de réception", e))?
            .into_inner();
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
            continue;
        };
        let a = &v["accuse_de_reception"];
        if a["sha256"].as_str() != Some(sha256) {
            continue;
        }
        found.push(Receipt {
            name: base,
            import: a["import"].as_i64(),
            resultat: a["resultat"].as_str().unwrap_or_default().to_string(),
            libelle: a["libelle"].as_str().unwrap_or_default().to_string(),
            erreurs: a["erreurs"].as_i64().unwrap_or(0),
        });
    }
    let _ = ftp.quit();
    // The same bytes delivered twice give one integration and one `doublon`: the
    // integration is the result.
    found.sort_by_key(|r| (r.resultat == "doublon", r.import));
    Ok(found.into_iter().next())
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn client_config(
    trust: &Trust,
    rejected: Arc<Mutex<Option<String>>>,
) -> Result<rustls::ClientConfig, SenderError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| SenderError::Transfer(format!("TLS : {e}")))?;
    Ok(match trust {
        Trust::Ca(path) => {
            let pem = std::fs::read(path).map_err(|e| {
                SenderError::Usage(format!(
                    "le fichier CA {} ne peut pas être lu : {e}",
                    path.display()
                ))
            })?;
            let mut roots = rustls::RootCertStore::empty();
            for c in rustls_pemfile::certs(&mut &pem[..]) {
                let c = c.map_err(|e| {
                    SenderError::Usage(format!("fichier CA {} illisible : {e}", path.display()))
                })?;
                roots.add(c).map_err(|e| {
                    SenderError::Usage(format!(
                        "certificat refusé dans le fichier CA {} : {e}",
                        path.display()
                    ))
                })?;
            }
            if roots.is_empty() {
                return Err(SenderError::Usage(format!(
                    "le fichier CA {} ne contient aucun certificat PEM",
                    path.display()
                )));
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        Trust::Empreinte(pin) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Pinned {
                pin: *pin,
                provider: provider(),
                rejected,
            }))
            .with_no_client_auth(),
    })
}

/// Accepts exactly the certificate of this SHA-256, and checks that the server holds its key.
#[derive(Debug)]
struct Pinned {
    pin: [u8; 32],
    provider: Arc<rustls::crypto::CryptoProvider>,
    rejected: Arc<Mutex<Option<String>>>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let seen: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
        if seen == self.pin {
            Ok(ServerCertVerified::assertion())
        } else {
            *self.rejected.lock().expect("lock") = Some(format!(
                "certificat de la plateforme refusé : son empreinte SHA-256 {} n'est pas celle configurée ({}) ; connexion abandonnée",
                hex::encode(seen),
                hex::encode(self.pin)
            ));
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The SHA-256 fingerprint of the first certificate of a PEM file (to configure a sender).
pub fn fingerprint_of_pem(path: &Path) -> Result<String, SenderError> {
    let pem = std::fs::read(path)
        .map_err(|e| SenderError::Usage(format!("{} ne peut pas être lu : {e}", path.display())))?;
    let cert = rustls_pemfile::certs(&mut &pem[..])
        .next()
        .and_then(|c| c.ok())
        .ok_or_else(|| {
            SenderError::Usage(format!(
                "{} ne contient aucun certificat PEM",
                path.display()
            ))
        })?;
    Ok(hex::encode(Sha256::digest(cert.as_ref())))
}
