//! The published schema: generated from the format tables, accepted by xmllint on the examples,
//! and in agreement with `atmp validate` on a corpus of broken files.

use std::path::{Path, PathBuf};
use std::process::Command;

use atmp_flux::validate_path;
use atmp_model::Nomenclatures;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn examples() -> PathBuf {
    match std::env::var("ATMP_SHARED") {
        Ok(s) => PathBuf::from(s).join("spec/examples"),
        Err(_) => root().join("../shared/spec/examples"),
    }
}

/// xmllint's verdict (never in --stream mode: that mode expands external entities).
fn xmllint_valid(file: &Path) -> bool {
    let out = Command::new("xmllint")
        .arg("--noout")
        .arg("--nonet")
        .arg("--schema")
        .arg(root().join("schema/flux-1.0.xsd"))
        .arg(file)
        .output()
        .expect("xmllint is installed by scripts/test");
    out.status.success()
}

#[test]
fn committed_schema_is_the_generated_one() {
    let entries = atmp_model::parse_csv(atmp_model::BUILTIN_CSV).unwrap();
    let generated = atmp_flux::xsd::generate(&entries);
    let committed = std::fs::read_to_string(root().join("schema/flux-1.0.xsd")).unwrap();
    assert!(
        committed == generated,
        "schema/flux-1.0.xsd is stale: regenerate it with `atmp xsd > schema/flux-1.0.xsd`"
    );
}

#[test]
fn examples_are_valid_for_xmllint_and_atmp() {
    let n = Nomenclatures::builtin();
    for f in [
        "services.xml",
        "declaration-differentiel.xml",
        "cdg-groupe.xml",
    ] {
        let p = examples().join(f);
        assert!(xmllint_valid(&p), "{f}");
        assert!(
            validate_path(&p, &n, &atmp_flux::Limits::default()).valid(),
            "{f}"
        );
    }
}

#[test]
fn corpus_agreement() {
    let n = Nomenclatures::builtin();
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("schema/corpus"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "xml"))
        .collect();
    files.sort();
    assert!(files.len() >= 30, "the corpus is there");
    for f in files {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        let v = validate_path(&f, &n, &atmp_flux::Limits::default());
        assert!(!v.valid(), "{name}: atmp validate must reject it");
        if name.starts_with("xsd-") {
            // A rule the XSD can express: both reject.
            assert!(!xmllint_valid(&f), "{name}: xmllint must reject it");
        } else {
            // A rule only atmp checks (keys, chronology, file type, totals, DTD).
            assert!(
                name.starts_with("atmp-"),
                "{name}: corpus files are named xsd-* or atmp-*"
            );
        }
    }
}

/// Well-formedness (FORMAT.md §1): atmp's scan and xmllint (libxml2, no DTD loaded, no
/// network) agree on every document of this corpus, the tricky well-formed ones and the
/// ill-formed ones.
#[test]
fn xmllint_and_atmp_agree_on_well_formedness() {
    let well_formed = [
        "<a>]] > ]>]</a>",
        "<a b='x>y' c=\"&amp;&#233;&#x20AC;\"/>",
        "<a><![CDATA[ <&]] ]]><!-- - --><?pi x?></a>",
        "<?xml version='1.0'?><?xml-stylesheet href='x'?><a/>",
        "\u{FEFF}<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<é:ß-1.x/>",
        "<a>\t\r\n&#9;&#10;&#13;\u{10000}\u{E000}\u{FFFD}</a>",
    ];
    let ill_formed = [
        "<a>\u{0}</a>",
        "<a>\u{1}</a>",
        "<a>\u{1F}</a>",
        "<a>\u{FFFF}</a>",
        "<a>\u{FFFE}</a>",
        "<a>&#0;</a>",
        "<a>&#xFFFF;</a>",
        "<a>&#xD800;</a>",
        "<a b='&#1;'/>",
        "<a>x]]>y</a>",
        "<a><!-- a -- b --></a>",
        "<a><!-- a ---></a>",
        "<1a/>",
        "<a 2b='1'/>",
        "<a$/>",
        "<a><?xml version='1.0'?></a>",
        " <?xml version='1.0'?><a/>",
        "<a b='<'/>",
        "<a b='1' b='2'/>",
        "<a b='1'c='2'/>",
        "<a b=1/>",
        "<a>&foo;</a>",
        "<a>a & b</a>",
        "<a><!x></a>",
    ];
    let dir = tempfile::tempdir().unwrap();
    let xmllint_ok = |doc: &str| {
        let f = dir.path().join("doc.xml");
        std::fs::write(&f, doc).unwrap();
        Command::new("xmllint")
            .args(["--noout", "--nonet"])
            .arg(&f)
            .output()
            .expect("xmllint is installed by scripts/test")
            .status
            .success()
    };
    let atmp_ok = |doc: &str| {
        let mut s = atmp_flux::scan::Scanner::new(atmp_flux::Limits::default());
        let n = s.feed(doc.as_bytes());
        s.finish();
        n == doc.len() && s.error().is_none()
    };
    for doc in well_formed {
        assert!(xmllint_ok(doc), "xmllint refuses {doc:?}");
        assert!(atmp_ok(doc), "atmp refuses {doc:?}");
    }
    for doc in ill_formed {
        assert!(!xmllint_ok(doc), "xmllint accepts {doc:?}");
        assert!(!atmp_ok(doc), "atmp accepts {doc:?}");
    }
}
