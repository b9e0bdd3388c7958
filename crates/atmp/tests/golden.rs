//! The outputs of a fixed scenario on generated files (the JSON of each import, every log,
//! every stored row) are exactly those recorded in `golden/generated.*.sha256`: an
//! optimisation of the reader, the rules or the stores that changed any of them would fail
//! here, on both backends.
//!
//! The scenario: a first import of a generated SDIS file; the same content again (another
//! `dateCreation`: everything existing); that content with mutations (NIR keys broken, names
//! changed, new agents); a CDG's grouped file for two collectivités. The answers of
//! `atmp validate --json` on three of them are recorded too.
//!
//! `ATMP_BLESS=1` writes the file from this build's outputs (after a deliberate change of
//! behaviour: the diff then shows which outputs moved). `ATMP_TEST_BIN=path` runs another
//! build of `atmp` against the recorded outputs (an older commit, a release build). On a
//! difference, the normalised outputs are kept in a folder the message names.

#[macro_use]
mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use sha2::Digest;

/// The recorded digests of one backend (the ids the logs name are the backend's own: a
/// PostgreSQL file transaction takes its ids from the sequences in blocks).
fn golden(b: Backend) -> PathBuf {
    let name = match b {
        Backend::Sqlite => "generated.sqlite.sha256",
        Backend::Postgres => "generated.postgres.sha256",
    };
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name)
}

/// Every stored row of integrated data (not the set-up's, which carry the time they were
/// made), in id order.
fn integrated(env: &Env) -> String {
    let mut out = String::new();
    for t in [
        "service",
        "agent",
        "evenement",
        "arret",
        "certificat",
        "lesion",
        "consequence",
        "deces",
    ] {
        for r in env.rows(&format!("SELECT * FROM {t} ORDER BY id")) {
            out.push_str(t);
            for v in r {
                out.push_str(&format!("|{v:?}"));
            }
            out.push('\n');
        }
    }
    out
}

fn bin() -> String {
    std::env::var("ATMP_TEST_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_atmp").to_string())
}

/// `atmp ARGS --db URL` with the build under test; stdout, asserting success unless told.
fn atmp(env: &Env, args: &[&str], ok: bool) -> String {
    let o = Command::new(bin())
        .args(args)
        .arg("--db")
        .arg(env.db())
        .current_dir(env.dir.path())
        .env_remove("ATMP_DATABASE_URL")
        .output()
        .unwrap();
    if ok {
        assert!(
            o.status.success(),
            "atmp {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    String::from_utf8(o.stdout).unwrap()
}

/// A log file's name without its time stamp (`20261204-131200_` before the digest).
fn log_name(path: &str) -> String {
    let name = Path::new(path).file_name().unwrap().to_string_lossy();
    name.split_once('_').map(|(_, r)| r.to_string()).unwrap()
}

/// A log's text with each line's time of writing (its first field) blanked.
fn normalise_log(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let b = line.as_bytes();
        // dd/mm/yyyy hh:mm:ss;
        let stamped = b.len() > 20
            && b[19] == b';'
            && b[2] == b'/'
            && b[5] == b'/'
            && b[13] == b':'
            && b[16] == b':';
        assert!(stamped, "a log line without its time stamp: {line:?}");
        out.push('T');
        out.push_str(&line[19..]);
    }
    out
}

/// Each mutation of the third file is made on one agent out of `EVERY`, at these ranks.
const EVERY: usize = 37;

/// A NIR's body (13 digits) with its key.
fn keyed(body: &str) -> String {
    let v: u64 = body.parse().unwrap();
    format!("{body}{:02}", 97 - v % 97)
}

/// The generated file, with a third `dateCreation` and mutations on some agents: a broken NIR
/// key (an error), another usage name (an identity that does not match), a new NIR,
/// matricule and first name (a new agent, with the events of the one it was copied from).
fn mutate(text: &str) -> String {
    let text = text.replace(
        "<dateCreation>2016-01-08T02:00:00</dateCreation>",
        "<dateCreation>2016-01-15T02:00:00</dateCreation>",
    );
    let mut out = String::with_capacity(text.len() + 4096);
    let mut rest = text.as_str();
    let mut rank = 0usize;
    while let Some(at) = rest.find("<agent>") {
        let end = rest[at..].find("</agent>").unwrap() + at + "</agent>".len();
        out.push_str(&rest[..at]);
        let mut a = rest[at..end].to_string();
        let nir_at = a.find("<nir>").unwrap() + 5;
        let nir = a[nir_at..nir_at + 15].to_string();
        match rank % EVERY {
            3 => {
                let key: u32 = nir[13..].parse().unwrap();
                let wrong = format!("{}{:02}", &nir[..13], (key % 97) + 1);
                a = a.replacen(&nir, &wrong, 1);
            }
            11 => {
                let from = a.find("<nomUsuel>").unwrap() + "<nomUsuel>".len();
                a.insert_str(from, "DE ");
            }
            20 => {
                // Another order number in the same birth place: a person not yet known.
                let serial: u32 = nir[10..13].parse().unwrap();
                let body = format!("{}{:03}", &nir[..10], (serial + 500) % 1000);
                a = a.replacen(&nir, &keyed(&body), 1);
                a = a.replacen("<matricule>M", "<matricule>N", 1);
                a = a.replacen("<prenom>", "<prenom>Anne-", 1);
            }
            _ => {}
        }
        out.push_str(&a);
        rest = &rest[end..];
        rank += 1;
    }
    out.push_str(rest);
    out
}

fn gen(env: &Env, out: &Path, args: &[&str]) {
    let mut all = vec!["gen", "--out", out.to_str().unwrap(), "--seed", "7"];
    all.extend_from_slice(args);
    atmp(env, &all, true);
}

/// One import: its JSON (paths and the import's own time made neutral) and its logs, each
/// normalised, under `step`.
fn import(env: &Env, step: &str, file: &Path, outputs: &mut BTreeMap<String, String>) -> Json {
    let logs = env.logs();
    let out = atmp(
        env,
        &[
            "import",
            file.to_str().unwrap(),
            "--json",
            "--logs",
            logs.to_str().unwrap(),
        ],
        false,
    );
    let mut j: Json = serde_json::from_str(out.lines().next().expect("a JSON line")).unwrap();
    j["file"] = Json::from(file.file_name().unwrap().to_string_lossy().to_string());
    for l in j["logs"].as_array_mut().unwrap() {
        for k in ["complet", "erreurs"] {
            if let Some(p) = l[k].as_str().map(str::to_string) {
                let text = std::fs::read_to_string(&p).unwrap();
                let name = log_name(&p);
                outputs.insert(format!("{step} {name}"), normalise_log(&text));
                l[k] = Json::from(name);
            }
        }
    }
    outputs.insert(format!("{step} json"), j.to_string());
    j
}

use serde_json::Value as Json;

/// `atmp validate FILE --json` (no base): its answer, the file's path made neutral, under
/// `step`. Validation checks its records on another thread than import does: its issues,
/// their order and their text must not move.
fn validate(env: &Env, step: &str, file: &Path, outputs: &mut BTreeMap<String, String>) -> Json {
    let o = Command::new(bin())
        .args(["validate", file.to_str().unwrap(), "--json"])
        .current_dir(env.dir.path())
        .env_remove("ATMP_DATABASE_URL")
        .output()
        .unwrap();
    let text = String::from_utf8(o.stdout).unwrap();
    let dir = format!("{}/", env.dir.path().display());
    let text = text.replace(&dir, "");
    let j: Json = serde_json::from_str(&text).expect("validate --json answers JSON");
    outputs.insert(format!("{step} validate"), text);
    j
}

fn digest(text: &str) -> String {
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

both!(generated_files_give_the_recorded_outputs);
fn generated_files_give_the_recorded_outputs(b: Backend) {
    let env = Env::on(b);
    for args in [
        &[
            "collectivite",
            "add",
            "--siret",
            SDIS,
            "--nom",
            "SDIS de la Vauclaire",
        ][..],
        &["emetteur", "add", "--code", "BENCH", "--collectivite", SDIS],
        &[
            "collectivite",
            "add",
            "--siret",
            CDG,
            "--nom",
            "CDG de la Vauclaire",
        ],
        &[
            "collectivite",
            "add",
            "--siret",
            COMMUNE,
            "--nom",
            "Commune",
            "--cdg",
            CDG,
        ],
        &[
            "collectivite",
            "add",
            "--siret",
            CCAS,
            "--nom",
            "CCAS",
            "--cdg",
            CDG,
        ],
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
        ],
    ] {
        atmp(&env, args, true);
    }
    let dir = env.dir.path();
    let f1 = dir.join("sdis-1.xml");
    let f2 = dir.join("sdis-2.xml");
    let f3 = dir.join("sdis-3.xml");
    let f4 = dir.join("cdg.xml");
    gen(&env, &f1, &["--agents", "1200", "--collectivite", SDIS]);
    gen(
        &env,
        &f2,
        &[
            "--agents",
            "1200",
            "--collectivite",
            SDIS,
            "--date-creation",
            "2016-01-08T02:00:00",
        ],
    );
    std::fs::write(&f3, mutate(&std::fs::read_to_string(&f2).unwrap())).unwrap();
    gen(
        &env,
        &f4,
        &[
            "--agents",
            "600",
            "--emetteur",
            "CDGVAUCL",
            "--cdg",
            CDG,
            "--collectivite",
            COMMUNE,
            "--collectivite",
            CCAS,
        ],
    );

    let mut outputs = BTreeMap::new();
    let v = validate(&env, "1", &f1, &mut outputs);
    assert_eq!(v["valid"], true, "{v}");
    let v = validate(&env, "3", &f3, &mut outputs);
    assert_eq!(v["valid"], false, "the broken NIR keys are errors: {v}");
    assert!(v["errors"].as_array().unwrap().len() > 10, "{v}");
    let v = validate(&env, "4", &f4, &mut outputs);
    assert_eq!(v["valid"], true, "{v}");
    let j = import(&env, "1", &f1, &mut outputs);
    assert_eq!(j["result"], "reussi", "{j}");
    assert_eq!(counts(&j, "agents"), (1200, 0, 0));
    let j = import(&env, "2", &f2, &mut outputs);
    assert_eq!(j["result"], "reussi", "{j}");
    assert_eq!(counts(&j, "agents"), (0, 1200, 0));
    let j = import(&env, "3", &f3, &mut outputs);
    // The mutations show: some agents rejected, some added, the rest existing.
    let (added, existing, rejected) = counts(&j, "agents");
    assert!(added > 0 && rejected > 0 && existing > 0, "{j}");
    assert!(j["errors"].as_u64().unwrap() > 0, "{j}");
    let j = import(&env, "4", &f4, &mut outputs);
    assert_eq!(counts(&j, "agents"), (600, 0, 0), "{j}");
    assert_eq!(
        j["logs"].as_array().unwrap().len(),
        3,
        "two collectivités and the CDG's: {j}"
    );
    outputs.insert("base".into(), integrated(&env));

    let actual: String = outputs
        .iter()
        .map(|(k, v)| format!("{}  {k}\n", digest(v)))
        .collect();
    if std::env::var_os("ATMP_BLESS").is_some() {
        std::fs::write(golden(b), &actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(golden(b)).expect("the recorded digests");
    if actual != expected {
        let kept: PathBuf = std::env::temp_dir().join(format!("atmp-golden-{b:?}"));
        std::fs::create_dir_all(&kept).unwrap();
        for (k, v) in &outputs {
            std::fs::write(kept.join(k.replace(' ', "_")), v).unwrap();
        }
        let exp: Vec<&str> = expected.lines().collect();
        let moved: Vec<&str> = actual.lines().filter(|l| !exp.contains(l)).collect();
        panic!(
            "outputs differ from {}:\n{}\nthe normalised outputs are in {}",
            golden(b).display(),
            moved.join("\n"),
            kept.display()
        );
    }
}
