//! The platform under test: the real `atmp serve` process on free ports with its own data
//! folder, driven over real FTPS (TLS) and HTTPS, as the senders and the users would.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value as Json;
use suppaftp::{RustlsConnector, RustlsFtpStream};

/// The collectivités of the examples, as in the command-line tests.
pub use crate::common::{Backend, Base, CCAS, CDG, COMMUNE, SDIS};

/// The passwords of the accounts [`Platform::setup`] creates.
pub const PW_SOFIVAL: &str = "sofival-mot-de-passe-1";
pub const PW_CDGVAUCL: &str = "cdgvaucl-mot-de-passe-1";
pub const PW_USERS: &str = "utilisateur-mot-de-passe";

/// An example file shipped with the platform (fictional data).
pub fn example(name: &str) -> Vec<u8> {
    std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../atmp-platform/demo")
            .join(name),
    )
    .unwrap()
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_atmp")
}

pub struct Platform {
    /// The base, on the backend of the test (dropped after the server: fields drop in order).
    pub base: Base,
    pub dir: tempfile::TempDir,
    pub child: Option<Child>,
    pub url: String,
    pub ftps: String,
    pub env: Vec<(String, String)>,
    /// Another platform's base, shared (several instances; PostgreSQL only).
    pub shared_db: Option<String>,
}

impl Drop for Platform {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Platform {
    /// A platform on `backend` (its base: `<data>/atmp.db` or a fresh PostgreSQL database).
    pub fn new(backend: Backend, env: &[(&str, &str)]) -> Platform {
        let dir = tempfile::tempdir().unwrap();
        Platform {
            base: Base::new(backend, dir.path().join("data/atmp.db")),
            dir,
            child: None,
            url: String::new(),
            ftps: String::new(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            shared_db: None,
        }
    }

    /// Another instance of `other`'s platform: its own `--data` folder, the same base.
    pub fn sharing(other: &Platform) -> Platform {
        let mut p = Platform::new(Backend::Sqlite, &[]);
        p.shared_db = Some(other.db_url());
        p.env = other.env.clone();
        p
    }

    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn db_url(&self) -> String {
        self.shared_db.clone().unwrap_or_else(|| self.base.url())
    }

    pub fn cert(&self) -> PathBuf {
        self.data().join("tls/cert.pem")
    }

    /// Runs the command line on the platform's base; expects success.
    pub fn cli(&self, args: &[&str], stdin: Option<&str>) -> String {
        {
            use std::os::unix::fs::DirBuilderExt;
            // As an operator following the README would: for atmp's user only.
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(self.data())
                .unwrap();
        }
        let mut c = Command::new(bin())
            .args(args)
            .arg("--db")
            .arg(self.db_url())
            .current_dir(self.dir.path())
            .env_remove("ATMP_DATABASE_URL")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        if let Some(s) = stdin {
            c.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
        }
        drop(c.stdin.take());
        let o = c.wait_with_output().unwrap();
        assert!(
            o.status.success(),
            "atmp {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    }

    /// The examples' collectivités and senders (with FTPS passwords), and one web user per
    /// role: `plateforme`, `sdis` (collectivité admin), `cdg`, `commune` (collectivité user).
    pub fn setup(&self) {
        self.cli(
            &[
                "collectivite",
                "add",
                "--siret",
                SDIS,
                "--nom",
                "SDIS de la Vauclaire",
            ],
            None,
        );
        self.cli(
            &[
                "collectivite",
                "add",
                "--siret",
                CDG,
                "--nom",
                "CDG de la Vauclaire",
            ],
            None,
        );
        for (s, n) in [
            (COMMUNE, "Commune de Rochebrune-sur-Aube"),
            (CCAS, "CCAS de Rochebrune-sur-Aube"),
        ] {
            self.cli(
                &[
                    "collectivite",
                    "add",
                    "--siret",
                    s,
                    "--nom",
                    n,
                    "--cdg",
                    CDG,
                ],
                None,
            );
        }
        self.cli(
            &[
                "emetteur",
                "add",
                "--code",
                "SOFIVAL",
                "--collectivite",
                SDIS,
                "--password-stdin",
            ],
            Some(&format!("{PW_SOFIVAL}\n")),
        );
        self.cli(
            &[
                "emetteur",
                "add",
                "--code",
                "CDGVAUCL",
                "--collectivite",
                CDG,
                "--collectivite",
                COMMUNE,
                "--collectivite",
                CCAS,
                "--password-stdin",
            ],
            Some(&format!("{PW_CDGVAUCL}\n")),
        );
        let users: [(&str, &str, Option<&str>); 4] = [
            ("plateforme", "plateforme", None),
            ("sdis", "collectivite-admin", Some(SDIS)),
            ("cdg", "cdg", Some(CDG)),
            ("commune", "collectivite", Some(COMMUNE)),
        ];
        for (login, role, coll) in users {
            let email = format!("{login}@exemple.invalid");
            let mut args = vec![
                "utilisateur",
                "add",
                "--login",
                login,
                "--role",
                role,
                "--email",
                &email,
                "--password-stdin",
            ];
            if let Some(c) = coll {
                args.extend(["--collectivite", c]);
            }
            self.cli(&args, Some(&format!("{PW_USERS}\n")));
        }
    }

    /// Starts `atmp serve` on free ports; waits until it listens.
    pub fn start(&mut self, extra: &[&str]) -> String {
        assert!(self.child.is_none());
        let addresses = self.data().join("adresses.json");
        let _ = std::fs::remove_file(&addresses);
        // A passive port range of its own, so that tests running together do not collide
        // (half of the process's hundred for each server it starts, in turn).
        static STARTS: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
        let slot = STARTS.fetch_add(1, std::sync::atomic::Ordering::SeqCst) % 2;
        let base = 20000 + (std::process::id() % 400) as u16 * 100 + slot * 50;
        let out = std::fs::File::create(self.dir.path().join("serve.out")).unwrap();
        let err = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("serve.err"))
            .unwrap();
        let mut cmd = Command::new(bin());
        cmd.args(["serve", "--data"])
            .arg(self.data())
            .arg("--db")
            .arg(self.db_url())
            .args(["--http", "127.0.0.1:0", "--ftps", "127.0.0.1:0"])
            .args(extra)
            .current_dir(self.dir.path())
            .env_remove("ATMP_DATABASE_URL")
            .env("ATMP_FTPS_PASSIVE_PORTS", format!("{}-{}", base, base + 49))
            .env("ATMP_LOG", "warn,atmp_platform=info,atmp_integrator=info")
            .stdout(out)
            .stderr(err);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().unwrap();
        let pid = child.id();
        self.child = Some(child);
        let t = Instant::now();
        loop {
            if let Ok(s) = std::fs::read_to_string(&addresses) {
                let v: Json = serde_json::from_str(&s).unwrap();
                if v["pid"].as_u64() == Some(pid as u64) {
                    self.url = format!("https://{}", v["http"].as_str().unwrap());
                    self.ftps = v["ftps"].as_str().unwrap().to_string();
                    break;
                }
            }
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("atmp serve stopped ({st}): {}", self.stderr());
            }
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "atmp serve did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        // The FTPS server listens once the runtime runs: wait for its greeting.
        let t = Instant::now();
        while std::net::TcpStream::connect(&self.ftps).is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "FTPS does not listen"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        std::fs::read_to_string(self.dir.path().join("serve.out")).unwrap_or_default()
    }

    /// Kills the server at once (SIGKILL), as a crash would.
    #[allow(dead_code)]
    pub fn kill(&mut self) {
        let mut c = self.child.take().unwrap();
        c.kill().unwrap();
        c.wait().unwrap();
    }

    /// The integration processes `atmp serve` has started and that are still running.
    pub fn integration_children(&self) -> Vec<u32> {
        let parent = self.child.as_ref().expect("started").id();
        let mut out = Vec::new();
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            // pid (comm) state ppid …: the name may hold spaces, the fields after `)` don't.
            let Some(after) = stat.rsplit_once(')').map(|(_, a)| a.to_string()) else {
                continue;
            };
            let ppid: u32 = after
                .split_whitespace()
                .nth(1)
                .and_then(|p| p.parse().ok())
                .unwrap_or(0);
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if ppid == parent && String::from_utf8_lossy(&cmd).contains("integrer-job") {
                out.push(pid);
            }
        }
        out
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("serve.err")).unwrap_or_default()
    }

    fn tls(&self) -> Arc<suppaftp::rustls::ClientConfig> {
        let mut roots = suppaftp::rustls::RootCertStore::empty();
        let pem = std::fs::read(self.cert()).unwrap();
        for c in rustls_pemfile::certs(&mut pem.as_slice()) {
            roots.add(c.unwrap()).unwrap();
        }
        Arc::new(
            suppaftp::rustls::ClientConfig::builder_with_provider(Arc::new(
                suppaftp::rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
        )
    }

    /// A sender's FTPS session (explicit TLS, binary mode).
    pub fn ftp(&self, user: &str, password: &str) -> suppaftp::FtpResult<RustlsFtpStream> {
        let s = RustlsFtpStream::connect(&self.ftps)?;
        let mut s = s.into_secure(RustlsConnector::from(self.tls()), "localhost")?;
        s.login(user, password)?;
        s.transfer_type(suppaftp::types::FileType::Binary)?;
        Ok(s)
    }

    pub fn upload(&self, user: &str, password: &str, name: &str, bytes: &[u8]) {
        let mut s = self.ftp(user, password).unwrap();
        s.put_file(name, &mut &bytes[..]).unwrap();
        let _ = s.quit();
    }

    /// Reads one value from the base.
    pub fn sql(&self, q: &str) -> i64 {
        self.base
            .scalar(q)
            .parse()
            .unwrap_or_else(|_| panic!("{q}: not a number"))
    }

    /// Waits until `n` jobs are done.
    pub fn wait_jobs(&self, n: i64) {
        let t = Instant::now();
        loop {
            if self.sql("SELECT count(*) FROM job WHERE state = 'fait'") >= n {
                return;
            }
            assert!(
                t.elapsed() < Duration::from_secs(120),
                "jobs not done: {}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A logged-in web user (its own cookies).
    pub fn web(&self, login: &str, password: &str) -> Web {
        let w = Web::new(self);
        let r = w.login(login, password);
        assert_eq!(r.status(), 200, "login of {login}");
        // Login lands on the dashboard.
        assert_eq!(r.url().path(), "/", "{}", r.url());
        w
    }
}

pub struct Web {
    pub client: reqwest::blocking::Client,
    pub url: String,
}

/// The value of the first `name="csrf"` hidden input of a page.
pub fn csrf_of(html: &str) -> String {
    let i = html
        .find("name=\"csrf\" value=\"")
        .expect("a form with a CSRF token")
        + 19;
    html[i..i + html[i..].find('"').unwrap()].to_string()
}

impl Web {
    pub fn new(p: &Platform) -> Web {
        Web::from_address(p, None)
    }

    /// A client whose connections leave from this local address (127.0.0.2…: another
    /// machine, as the platform sees it).
    pub fn from_address(p: &Platform, local: Option<std::net::IpAddr>) -> Web {
        let cert = reqwest::Certificate::from_pem(&std::fs::read(p.cert()).unwrap()).unwrap();
        Web {
            client: reqwest::blocking::Client::builder()
                .local_address(local)
                .add_root_certificate(cert)
                .cookie_store(true)
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
            url: p.url.replace("127.0.0.1", "localhost"),
        }
    }

    pub fn login(&self, login: &str, password: &str) -> reqwest::blocking::Response {
        let page = self.get("/connexion").text().unwrap();
        let csrf = csrf_of(&page);
        self.client
            .post(format!("{}/connexion", self.url))
            .form(&[
                ("csrf", csrf.as_str()),
                ("login", login),
                ("password", password),
            ])
            .send()
            .unwrap()
    }

    pub fn get(&self, path: &str) -> reqwest::blocking::Response {
        self.client
            .get(format!("{}{path}", self.url))
            .send()
            .unwrap()
    }

    /// A page, fetched again until it holds `needle` (events recorded in the background).
    pub fn text_with(&self, path: &str, needle: &str) -> String {
        let t = Instant::now();
        loop {
            let page = self.text(path);
            if page.contains(needle) || t.elapsed() > Duration::from_secs(20) {
                return page;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn text(&self, path: &str) -> String {
        let r = self.get(path);
        assert_eq!(r.status(), 200, "GET {path}");
        r.text().unwrap()
    }

    pub fn status(&self, path: &str) -> u16 {
        self.get(path).status().as_u16()
    }

    /// Posts a form of `page` with its CSRF token.
    pub fn post(
        &self,
        page: &str,
        action: &str,
        fields: &[(&str, &str)],
    ) -> reqwest::blocking::Response {
        let csrf = csrf_of(&self.text(page));
        let mut f: Vec<(&str, &str)> = vec![("csrf", csrf.as_str())];
        f.extend_from_slice(fields);
        self.client
            .post(format!("{}{action}", self.url))
            .form(&f)
            .send()
            .unwrap()
    }
}

/// The rows of the tracking table: (type, result, collectivité, complete log link).
pub fn suivi_rows(html: &str) -> Vec<(String, String, String, String)> {
    let Some(start) = html.find("<tbody>") else {
        return vec![];
    };
    let body = &html[start..html[start..].find("</tbody>").unwrap() + start];
    body.split("<tr>")
        .skip(1)
        .filter(|r| r.contains("/journaux/"))
        .map(|r| {
            let cells = cells(r);
            let complet = import_links(r)
                .into_iter()
                .find(|l| l.ends_with("/complet"))
                .unwrap();
            // Date, file, sender, type, collectivité, result, logs.
            (
                cells[3].clone(),
                cells[5].clone(),
                cells[4].clone(),
                complet,
            )
        })
        .collect()
}

/// The text of each `<td>` of a table row, the result badge left out (its text repeats the
/// label's).
pub fn cells(row: &str) -> Vec<String> {
    row.split("<td")
        .skip(1)
        .map(|c| {
            let c = &c[c.find('>').unwrap() + 1..c.find("</td>").unwrap()];
            let c = match c.find("class=\"badge ") {
                Some(i) => {
                    let first = i + c[i..].find("</span>").unwrap() + 7;
                    &c[first + c[first..].find("</span>").unwrap() + 7..]
                }
                None => c,
            };
            strip_tags(c).trim().to_string()
        })
        .collect()
}

pub fn strip_tags(s: &str) -> String {
    let mut out = String::new();
    let mut inside = false;
    for c in s.chars() {
        match c {
            '<' => inside = true,
            '>' => inside = false,
            c if !inside => out.push(c),
            _ => {}
        }
    }
    out.replace("&#39;", "'")
        .replace("&amp;", "&")
        .replace("&quot;", "\"")
        .trim()
        .to_string()
}

/// The import ids linked from a page.
pub fn import_links(html: &str) -> Vec<String> {
    html.match_indices("href=\"/imports/")
        .map(|(i, _)| {
            let s = &html[i + 6..];
            s[..s.find('"').unwrap()].to_string()
        })
        .collect()
}
