//! Helpers of the command-line tests: a fresh base and log folder per test, the real binary,
//! and small builders of flux files.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value as Json;

pub const SDIS: &str = "28219002400012";
pub const CDG: &str = "28219010700049";
pub const COMMUNE: &str = "21219781800017";
pub const CCAS: &str = "26219781700014";

pub fn examples() -> PathBuf {
    match std::env::var("ATMP_SHARED") {
        Ok(s) => PathBuf::from(s).join("spec/examples"),
        Err(_) => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/spec/examples"),
    }
}

/// A valid SIRET from its first 13 digits (whose first 9, the SIREN, must carry their key).
pub fn siret(body13: &str) -> String {
    for d in 0..10 {
        let s = format!("{body13}{d}");
        if atmp_model::Siret::parse(&s).is_ok() {
            return s;
        }
    }
    panic!("no valid SIRET starts with {body13}: its SIREN key is wrong")
}

/// A NIR coherent with sex and birth date (`YYYY-MM-DD`), unique by `n`.
pub fn nir(sexe: &str, dob: &str, n: u32) -> String {
    let s = if sexe == "M" { 1 } else { 2 };
    let body = format!("{s}{}{}21{:06}", &dob[2..4], &dob[5..7], n);
    let v: u64 = body.parse().unwrap();
    format!("{body}{:02}", 97 - v % 97)
}

/// The backend a test runs on: the same test body runs on both (`both!`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Declares `NAME::sqlite` and `NAME::postgres`, two tests running `NAME(Backend)`.
#[macro_export]
macro_rules! both {
    ($name:ident) => {
        mod $name {
            #[test]
            fn sqlite() {
                super::$name($crate::common::Backend::Sqlite)
            }
            #[test]
            fn postgres() {
                super::$name($crate::common::Backend::Postgres)
            }
        }
    };
}

/// A value read back from the base, the same on both backends.
#[derive(Debug, PartialEq, Eq)]
pub enum V {
    Null,
    Int(i64),
    /// A real, as `{:?}` writes it (`100.0`).
    Real(String),
    Text(String),
}

impl std::fmt::Display for V {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            V::Null => write!(f, "NULL"),
            V::Int(n) => write!(f, "{n}"),
            V::Real(r) => write!(f, "{r}"),
            V::Text(t) => write!(f, "{t}"),
        }
    }
}

/// A base of a test on one backend: a fresh PostgreSQL database (dropped at the end), or an
/// SQLite file; read and written with the backend's own client, as a check from outside.
pub struct Base {
    pub backend: Backend,
    sqlite: PathBuf,
    /// PostgreSQL: (URL, database name).
    pg: Option<(String, String)>,
}

impl Drop for Base {
    fn drop(&mut self) {
        if let Some((_, name)) = &self.pg {
            atmp_store::test_support::drop_database(name);
        }
    }
}

impl Base {
    /// A fresh base on `backend`; on SQLite, the file `sqlite` (created by atmp).
    pub fn new(backend: Backend, sqlite: PathBuf) -> Base {
        Base {
            backend,
            sqlite,
            pg: (backend == Backend::Postgres)
                .then(|| atmp_store::test_support::fresh_database("cli")),
        }
    }

    /// The URL atmp is given (`--db`).
    pub fn url(&self) -> String {
        match &self.pg {
            Some((url, _)) => url.clone(),
            None => format!("sqlite://{}", self.sqlite.display()),
        }
    }

    fn sqlite_conn(&self) -> rusqlite::Connection {
        let c = rusqlite::Connection::open(&self.sqlite).unwrap();
        c.busy_timeout(std::time::Duration::from_secs(30)).unwrap();
        c
    }

    /// Every row of a query, every column as a [`V`].
    pub fn rows(&self, sql: &str) -> Vec<Vec<V>> {
        match &self.pg {
            None => {
                let conn = self.sqlite_conn();
                let mut stmt = conn.prepare(sql).unwrap();
                let n = stmt.column_count();
                let rows = stmt
                    .query_map([], |r| {
                        (0..n)
                            .map(|i| {
                                Ok(match r.get::<_, rusqlite::types::Value>(i)? {
                                    rusqlite::types::Value::Null => V::Null,
                                    rusqlite::types::Value::Integer(n) => V::Int(n),
                                    rusqlite::types::Value::Real(x) => V::Real(format!("{x:?}")),
                                    rusqlite::types::Value::Text(t) => V::Text(t),
                                    other => panic!("unexpected value {other:?}"),
                                })
                            })
                            .collect::<rusqlite::Result<Vec<V>>>()
                    })
                    .unwrap();
                rows.map(|r| r.unwrap()).collect()
            }
            Some((url, _)) => {
                use postgres::types::Type;
                let mut c = postgres::Client::connect(url, postgres::NoTls).unwrap();
                c.query(sql, &[])
                    .unwrap()
                    .iter()
                    .map(|r| {
                        (0..r.len())
                            .map(|i| {
                                let t = r.columns()[i].type_().clone();
                                let v = if t == Type::INT8 {
                                    r.get::<_, Option<i64>>(i).map(V::Int)
                                } else if t == Type::INT4 {
                                    r.get::<_, Option<i32>>(i).map(|n| V::Int(n as i64))
                                } else if t == Type::INT2 {
                                    r.get::<_, Option<i16>>(i).map(|n| V::Int(n as i64))
                                } else if t == Type::FLOAT8 {
                                    r.get::<_, Option<f64>>(i)
                                        .map(|x| V::Real(format!("{x:?}")))
                                } else if t == Type::TEXT || t == Type::VARCHAR {
                                    r.get::<_, Option<String>>(i).map(V::Text)
                                } else {
                                    panic!("unexpected column type {t} in {sql}")
                                };
                                v.unwrap_or(V::Null)
                            })
                            .collect()
                    })
                    .collect()
            }
        }
    }

    /// Runs a statement on the base (to set up a case the command line cannot).
    pub fn execute(&self, sql: &str) {
        match &self.pg {
            None => {
                self.sqlite_conn().execute_batch(sql).unwrap();
            }
            Some((url, _)) => postgres::Client::connect(url, postgres::NoTls)
                .unwrap()
                .batch_execute(sql)
                .unwrap(),
        }
    }

    /// Opens a transaction of its own, runs `sql` in it and keeps it open, with its locks,
    /// until the returned connection is dropped (which rolls it back). SQLite's transaction
    /// is `IMMEDIATE`: it holds the base's one writer.
    pub fn hold(&self, sql: &str) -> Box<dyn std::any::Any> {
        match &self.pg {
            None => {
                let c = self.sqlite_conn();
                c.execute_batch(&format!("BEGIN IMMEDIATE; {sql}")).unwrap();
                Box::new(c)
            }
            Some((url, _)) => {
                let mut c = postgres::Client::connect(url, postgres::NoTls).unwrap();
                c.batch_execute(&format!("BEGIN; {sql}")).unwrap();
                Box::new(c)
            }
        }
    }

    /// The one value of a query, as text (`NULL` for null).
    pub fn scalar(&self, sql: &str) -> String {
        let rows = self.rows(sql);
        assert_eq!(rows.len(), 1, "{sql}: {rows:?}");
        rows[0][0].to_string()
    }

    /// Every row of every table of integrated data, as text: "the base is exactly as before".
    pub fn snapshot(&self) -> String {
        let mut out = String::new();
        for t in [
            "collectivite",
            "emetteur",
            "autorisation",
            "service",
            "agent",
            "evenement",
            "arret",
            "certificat",
            "lesion",
            "consequence",
            "deces",
        ] {
            for r in self.rows(&format!("SELECT * FROM {t} ORDER BY id")) {
                out.push_str(t);
                out.push(':');
                for v in r {
                    out.push_str(&format!("{v:?}|"));
                }
                out.push('\n');
            }
        }
        out
    }
}

pub struct Env {
    pub dir: tempfile::TempDir,
    pub base: Base,
}

impl std::ops::Deref for Env {
    type Target = Base;
    fn deref(&self) -> &Base {
        &self.base
    }
}

impl Env {
    /// A fresh SQLite base.
    pub fn new() -> Env {
        Env::on(Backend::Sqlite)
    }

    /// A fresh base on `backend`.
    pub fn on(backend: Backend) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let base = Base::new(backend, dir.path().join("base.db"));
        Env { dir, base }
    }

    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join("base.db")
    }

    pub fn db(&self) -> String {
        self.base.url()
    }

    pub fn logs(&self) -> PathBuf {
        self.dir.path().join("logs")
    }

    pub fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_atmp"))
            .args(args)
            .arg("--db")
            .arg(self.db())
            .current_dir(self.dir.path())
            .env_remove("ATMP_DATABASE_URL")
            .output()
            .unwrap()
    }

    /// Runs and expects exit status 0; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "atmp {args:?}: {}\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    }

    pub fn write(&self, name: &str, content: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, content).unwrap();
        p
    }

    /// `atmp import FILE --json` (with `--emetteur` when given): (JSON, exit status).
    pub fn import(&self, file: &Path, emetteur: Option<&str>) -> (Json, i32) {
        let f = file.to_str().unwrap().to_string();
        let logs = self.logs().to_str().unwrap().to_string();
        let mut args = vec!["import", f.as_str(), "--json", "--logs", logs.as_str()];
        if let Some(e) = emetteur {
            args.push("--emetteur");
            args.push(e);
        }
        let o = self.run(&args);
        let out = String::from_utf8_lossy(&o.stdout);
        let line = out
            .lines()
            .next()
            .unwrap_or_else(|| panic!("no output; stderr: {}", String::from_utf8_lossy(&o.stderr)));
        (
            serde_json::from_str(line).unwrap(),
            o.status.code().unwrap(),
        )
    }

    /// Writes a DECLARATION file of one SDIS block holding `body` and imports it.
    pub fn import_sdis(&self, name: &str, body: &str) -> (Json, i32) {
        let f = self.write(
            name,
            &Doc::declaration(vec![(SDIS.into(), body.to_string())]).render(),
        );
        self.import(&f, None)
    }

    /// The standard set-up: the SDIS and its sender SOFIVAL.
    pub fn sdis(&self) {
        self.ok(&[
            "collectivite",
            "add",
            "--siret",
            SDIS,
            "--nom",
            "SDIS de la Vauclaire",
        ]);
        self.ok(&[
            "emetteur",
            "add",
            "--code",
            "SOFIVAL",
            "--collectivite",
            SDIS,
        ]);
    }

    /// The CDG set-up of the examples README.
    pub fn cdg(&self, attach_ccas: bool) {
        self.ok(&[
            "collectivite",
            "add",
            "--siret",
            CDG,
            "--nom",
            "CDG de la Vauclaire",
        ]);
        self.ok(&[
            "collectivite",
            "add",
            "--siret",
            COMMUNE,
            "--nom",
            "Commune de Rochebrune-sur-Aube",
            "--cdg",
            CDG,
        ]);
        if attach_ccas {
            self.ok(&[
                "collectivite",
                "add",
                "--siret",
                CCAS,
                "--nom",
                "CCAS de Rochebrune-sur-Aube",
                "--cdg",
                CDG,
            ]);
        } else {
            self.ok(&[
                "collectivite",
                "add",
                "--siret",
                CCAS,
                "--nom",
                "CCAS de Rochebrune-sur-Aube",
            ]);
        }
        self.ok(&[
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
        ]);
    }
}

/// (added, existing, rejected) of a kind in an import JSON.
pub fn counts(j: &Json, kind: &str) -> (u64, u64, u64) {
    let c = &j["counts"][kind];
    (
        c["added"].as_u64().unwrap(),
        c["existing"].as_u64().unwrap(),
        c["rejected"].as_u64().unwrap(),
    )
}

/// Splits a log line into its six fields (CSV quoting of §6.1 undone).
pub fn fields(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            ';' if !quoted => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    out.push(cur);
    out
}

/// The lines of a log, each split into its fields.
pub fn log(path: &str) -> Vec<Vec<String>> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(fields)
        .collect()
}

/// The complete and error logs of a collectivité in an import JSON.
pub fn log_paths(j: &Json, siret: &str, global: bool) -> (String, String) {
    let l = j["logs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["collectivite"] == siret && l["global"].as_bool().unwrap_or(false) == global)
        .unwrap_or_else(|| panic!("no log for {siret} in {j}"));
    (
        l["complet"].as_str().unwrap().to_string(),
        l["erreurs"].as_str().unwrap().to_string(),
    )
}

/// A flux file.
pub struct Doc {
    pub type_fichier: &'static str,
    pub mode: &'static str,
    pub emetteur: &'static str,
    pub date_creation: &'static str,
    pub cdg: Option<&'static str>,
    pub totals: Option<(u64, u64)>,
    pub blocks: Vec<(String, String)>,
}

impl Doc {
    pub fn declaration(blocks: Vec<(String, String)>) -> Doc {
        Doc {
            type_fichier: "DECLARATION",
            mode: "COMPLET",
            emetteur: "SOFIVAL",
            date_creation: "2016-01-10T10:00:00",
            cdg: None,
            totals: None,
            blocks,
        }
    }

    pub fn render(&self) -> String {
        let mut s = String::from(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<flux version=\"1.0\">\n<entete>\n",
        );
        s.push_str(&format!(
            "<emetteur>{}</emetteur><typeFichier>{}</typeFichier><mode>{}</mode><dateCreation>{}</dateCreation>\n",
            self.emetteur, self.type_fichier, self.mode, self.date_creation
        ));
        if self.mode == "DIFFERENTIEL" {
            s.push_str(
                "<periodeDebut>2016-01-01</periodeDebut><periodeFin>2016-01-07</periodeFin>\n",
            );
        }
        if let Some(c) = self.cdg {
            s.push_str(&format!("<cdg>{c}</cdg>\n"));
        }
        if let Some((a, e)) = self.totals {
            s.push_str(&format!(
                "<nombreAgents>{a}</nombreAgents><nombreEvenements>{e}</nombreEvenements>\n"
            ));
        }
        s.push_str("</entete>\n");
        for (siret, body) in &self.blocks {
            s.push_str(&format!(
                "<collectivite siret=\"{siret}\">\n{body}</collectivite>\n"
            ));
        }
        s.push_str("</flux>\n");
        s
    }
}

/// An `<agent>`: `rest` goes after `<sexe>` (service, events…).
pub fn agent(
    nir: &str,
    nom: &str,
    patro: Option<&str>,
    prenom: &str,
    dob: &str,
    sexe: &str,
    rest: &str,
) -> String {
    let patro = patro
        .map(|p| format!("<nomPatronymique>{p}</nomPatronymique>"))
        .unwrap_or_default();
    format!(
        "<agent><nir>{nir}</nir><nomUsuel>{nom}</nomUsuel>{patro}<prenom>{prenom}</prenom><dateNaissance>{dob}</dateNaissance><sexe>{sexe}</sexe>{rest}</agent>\n"
    )
}

/// An `<evenement>`: `rest` goes after `<date>`, in the order of §3.3.
pub fn event(id: &str, typ: &str, date: &str, rest: &str) -> String {
    format!("<evenement><identifiant>{id}</identifiant><type>{typ}</type><date>{date}</date>{rest}</evenement>\n")
}

pub fn arret(debut: &str, fin: Option<&str>) -> String {
    let fin = fin
        .map(|f| format!("<dateFin>{f}</dateFin>"))
        .unwrap_or_default();
    format!("<arret><dateDebut>{debut}</dateDebut>{fin}</arret>")
}
