//! The command-line contract of the sender's side (SOURCE.md §4): `atmp export` and its JSON
//! report, exit statuses, and every exported file valid for `atmp validate` and for xmllint
//! with the published schema.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value as Json;

fn atmp(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_atmp"))
        .args(args)
        .current_dir(dir)
        .env_remove("ATMP_DATABASE_URL")
        .env_remove("ATMP_SENDER_CONFIG")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn schema() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../schema/flux-1.0.xsd")
}

fn demo(dir: &Path) {
    let o = atmp(dir, &["sender", "demo", "--source", "source.db"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn export_json_report_and_every_file_valid_for_validate_and_xmllint() {
    let dir = tempfile::tempdir().unwrap();
    demo(dir.path());
    for (mode, gz) in [
        ("complet", false),
        ("differentiel", false),
        ("complet", true),
    ] {
        let out = format!("out-{mode}-{gz}");
        let mut args = vec![
            "export",
            "--source",
            "sqlite://source.db",
            "--emetteur",
            "SOFIVAL",
            "--mode",
            mode,
            "--out",
            &out,
            "--json",
        ];
        if mode == "differentiel" {
            // The window that holds the demo's last two weeks.
            args.extend(["--depuis", "2000-01-01"]);
        }
        if gz {
            args.push("--gzip");
        }
        let o = atmp(dir.path(), &args);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let lines: Vec<&str> = std::str::from_utf8(&o.stdout).unwrap().lines().collect();
        assert_eq!(lines.len(), 1, "one JSON object");
        let r: Json = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(r["mode"], mode);
        for key in ["debut", "fin", "fichiers", "exclues", "ecartes"] {
            assert!(r.get(key).is_some(), "{key} missing in {r}");
        }
        let files = r["fichiers"].as_array().unwrap();
        assert_eq!(files.len(), 4, "{r}");
        for f in files {
            for key in [
                "path",
                "destination",
                "cdg",
                "typeFichier",
                "collectivites",
                "agents",
                "evenements",
                "sha256",
            ] {
                assert!(f.get(key).is_some(), "{key} missing in {f}");
            }
            let path = dir.path().join(f["path"].as_str().unwrap());
            let name = path.file_name().unwrap().to_str().unwrap().to_string();
            let t = f["typeFichier"].as_str().unwrap();
            let m = if mode == "complet" {
                "COMPLET"
            } else {
                "DIFFERENTIEL"
            };
            let prefix = format!("SOFIVAL_{}_{t}_{m}_", f["destination"].as_str().unwrap());
            assert!(name.starts_with(&prefix), "{name}");
            assert!(
                name.ends_with(if gz { ".xml.gz" } else { ".xml" }),
                "{name}"
            );
            let v = atmp(dir.path(), &["validate", "--json", path.to_str().unwrap()]);
            assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stdout));
            if !gz {
                let x = Command::new("xmllint")
                    .args(["--noout", "--nonet", "--schema"])
                    .arg(schema())
                    .arg(&path)
                    .output()
                    .expect("xmllint is installed by scripts/test");
                assert!(x.status.success(), "{}", String::from_utf8_lossy(&x.stderr));
            }
        }
        let exclues: Vec<&str> = r["exclues"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["raison"].as_str().unwrap())
            .collect();
        assert_eq!(exclues.len(), 3);
        for reason in ["refus", "retrait", "sans_autorisation"] {
            assert!(exclues.contains(&reason), "{exclues:?}");
        }
        assert_eq!(r["ecartes"][0]["table"], "arret", "{r}");
        assert_eq!(r["ecartes"][0]["id"], 100, "{r}");
    }
}

#[test]
fn export_exit_statuses() {
    let dir = tempfile::tempdir().unwrap();
    demo(dir.path());
    let base = ["export", "--emetteur", "SOFIVAL", "--out", "o"];
    // A source that cannot be read: 1, with a French reason.
    let o = atmp(
        dir.path(),
        &[
            &base[..],
            &["--source", "sqlite://absente.db", "--mode", "complet"],
        ]
        .concat(),
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("n'existe pas"));
    // A base that is not a source: 1.
    std::fs::write(dir.path().join("vide.db"), b"").unwrap();
    let o = atmp(
        dir.path(),
        &[
            &base[..],
            &["--source", "sqlite://vide.db", "--mode", "complet"],
        ]
        .concat(),
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("source-schema.sql"));
    // Usage errors: 2.
    for bad in [
        vec!["--source", "sqlite://source.db", "--mode", "hebdo"],
        vec![
            "--source",
            "sqlite://source.db",
            "--mode",
            "differentiel",
            "--jusqu-au",
            "2026-13-01",
        ],
        vec!["--source", "mysql://x", "--mode", "complet"],
        vec![
            "--source",
            "sqlite://source.db",
            "--mode",
            "differentiel",
            "--depuis",
            "2026-11-10",
            "--jusqu-au",
            "2026-11-03",
        ],
        vec!["--mode", "complet"],
    ] {
        let o = atmp(dir.path(), &[&base[..], &bad[..]].concat());
        assert_eq!(
            o.status.code(),
            Some(2),
            "{bad:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    // A complet run with nothing to send says so and writes nothing.
    let o = atmp(
        dir.path(),
        &[
            &base[..],
            &[
                "--source",
                "sqlite://source.db",
                "--mode",
                "complet",
                "--limite-anteriorite",
                "2100-01-01",
            ],
        ]
        .concat(),
    );
    assert!(o.status.success());
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("rien à transmettre"), "{out}");
    // `sender journal` without a journal: a usage error.
    let o = atmp(dir.path(), &["sender", "journal"]);
    assert_eq!(o.status.code(), Some(2));
}
