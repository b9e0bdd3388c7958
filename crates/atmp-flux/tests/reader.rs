//! The reader and the record checks: encodings, gzip, positions, entities, structure.

use std::io::Write;

use atmp_flux::{validate_path, FluxReader, Item, Validation};
use atmp_model::Nomenclatures;
use proptest::prelude::*;

fn check(bytes: &[u8]) -> Validation {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("f.xml");
    std::fs::write(&p, bytes).unwrap();
    validate_path(&p, &Nomenclatures::builtin(), &atmp_flux::Limits::default())
}

fn nir(body: &str) -> String {
    let n: u64 = body.parse().unwrap();
    format!("{body}{:02}", 97 - n % 97)
}

fn doc(decl: &str, agents: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"{decl}\"?>\n<flux version=\"1.0\">\n<entete><emetteur>E</emetteur><typeFichier>AGENT</typeFichier><mode>COMPLET</mode><dateCreation>2016-01-01T00:00:00</dateCreation></entete>\n<collectivite siret=\"28219002400012\">\n{agents}</collectivite>\n</flux>\n"
    )
}

fn agent(nom: &str, prenom: &str) -> String {
    format!(
        "<agent>\n<nir>{}</nir>\n<nomUsuel>{nom}</nomUsuel>\n<prenom>{prenom}</prenom>\n<dateNaissance>1984-05-17</dateNaissance>\n<sexe>M</sexe>\n</agent>\n",
        nir("1840521531146")
    )
}

fn first_agent_text(bytes: &[u8], field: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("f.xml");
    std::fs::write(&p, bytes).unwrap();
    let mut r = FluxReader::open(&p, &atmp_flux::Limits::default()).unwrap();
    while let Some(item) = r.next_item().unwrap() {
        if let Item::Record { node, .. } = item {
            return node
                .children
                .iter()
                .find(|c| c.name == field)
                .unwrap()
                .text
                .clone();
        }
    }
    panic!("no agent")
}

#[test]
fn utf8_and_iso_8859_1() {
    let utf8 = doc("UTF-8", &agent("LÉGER", "Hélène"));
    assert!(check(utf8.as_bytes()).valid());
    assert_eq!(first_agent_text(utf8.as_bytes(), "prenom"), "Hélène");
    let latin1: Vec<u8> = doc("ISO-8859-1", &agent("LÉGER", "Hélène"))
        .chars()
        .map(|c| c as u32 as u8)
        .collect();
    assert!(check(&latin1).valid(), "{:?}", check(&latin1).errors);
    assert_eq!(first_agent_text(&latin1, "prenom"), "Hélène");
    // Latin-1 bytes declared as UTF-8: rejected, not silently mangled.
    let wrong: Vec<u8> = doc("UTF-8", &agent("LÉGER", "Hélène"))
        .chars()
        .map(|c| c as u32 as u8)
        .collect();
    let v = check(&wrong);
    assert_eq!(v.errors[0].code, "ENCODAGE");
    let other = check(doc("windows-1252", &agent("A", "B")).as_bytes());
    assert_eq!(other.errors[0].code, "ENCODAGE");
    assert!(other.errors[0].message.contains("windows-1252"));
}

#[test]
fn gzip_files() {
    let plain = doc("UTF-8", &agent("A", "B"));
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(plain.as_bytes()).unwrap();
    let gz = gz.finish().unwrap();
    assert!(check(&gz).valid());
    let cut = check(&gz[..gz.len() - 20]);
    assert!(!cut.valid());
    assert!(
        matches!(cut.errors[0].code, "GZIP" | "XML_TRONQUE"),
        "{:?}",
        cut.errors
    );
}

#[test]
fn issues_carry_line_column_and_path() {
    let bad = doc("UTF-8", &format!("{}{}", agent("A", "B"), agent("C", "")));
    let v = check(bad.as_bytes());
    assert_eq!(v.errors.len(), 1, "{:?}", v.errors);
    let e = &v.errors[0];
    assert_eq!(e.code, "OBLIGATOIRE");
    assert_eq!(e.path, "/flux/collectivite[1]/agent[2]/prenom");
    assert_eq!(e.line, 12, "the line of the <agent> that lacks it");
    assert_eq!(e.column, 1);
    let bad_nir = doc(
        "UTF-8",
        &agent("A", "B").replace(&nir("1840521531146"), "184052153114600"),
    );
    let v = check(bad_nir.as_bytes());
    assert_eq!(
        (
            v.errors[0].code,
            v.errors[0].line,
            v.errors[0].path.as_str()
        ),
        ("NIR", 6, "/flux/collectivite[1]/agent[1]/nir")
    );
}

#[test]
fn references_doctype_and_entities() {
    let ok = doc("UTF-8", &agent("D&apos;ARC &amp; Co", "J&#233;r&#xF4;me"));
    assert!(check(ok.as_bytes()).valid());
    assert_eq!(first_agent_text(ok.as_bytes(), "nomUsuel"), "D'ARC & Co");
    assert_eq!(first_agent_text(ok.as_bytes(), "prenom"), "Jérôme");
    let cdata = doc("UTF-8", &agent("<![CDATA[O'NEIL <junior>]]>", "B"));
    assert_eq!(
        first_agent_text(cdata.as_bytes(), "nomUsuel"),
        "O'NEIL <junior>"
    );
    let entity = doc("UTF-8", &agent("&moi;", "B"));
    assert_eq!(check(entity.as_bytes()).errors[0].code, "XML_ENTITE");
    let doctype = doc("UTF-8", &agent("A", "B")).replace(
        "<flux ",
        "<!DOCTYPE flux SYSTEM \"http://example.invalid/x.dtd\">\n<flux ",
    );
    assert_eq!(check(doctype.as_bytes()).errors[0].code, "XML_DOCTYPE");
    let bomb = "<?xml version=\"1.0\"?><!DOCTYPE lolz [<!ENTITY lol \"lol\"><!ENTITY lol2 \"&lol;&lol;\">]><flux version=\"1.0\">&lol2;</flux>";
    assert_eq!(check(bomb.as_bytes()).errors[0].code, "XML_DOCTYPE");
}

#[test]
fn empty_element_is_absent() {
    let a = agent("A", "B").replace(
        "<sexe>M</sexe>",
        "<sexe>M</sexe><lateralite></lateralite><regime/>",
    );
    assert!(check(doc("UTF-8", &a).as_bytes()).valid());
    let v = check(doc("UTF-8", &agent("A", "")).as_bytes());
    assert_eq!(v.errors[0].code, "OBLIGATOIRE");
}

#[test]
fn malformed_files_are_file_errors() {
    for (bytes, code) in [
        (
            doc("UTF-8", &agent("A", "B")).replace("</nomUsuel>", "</nom>"),
            "XML_MALFORME",
        ),
        (
            doc("UTF-8", &agent("A", "B")).replace("</flux>\n", ""),
            "XML_TRONQUE",
        ),
        ("<autre/>".to_string(), "RACINE"),
        (
            "<flux version=\"1.0\"><collectivite siret=\"28219002400012\"/></flux>".to_string(),
            "ENTETE",
        ),
        (
            doc("UTF-8", "").replace(
                "<collectivite siret=\"28219002400012\">\n</collectivite>\n",
                "",
            ),
            "AUCUNE_COLLECTIVITE",
        ),
        (
            doc("UTF-8", &agent("A", "B")).replace("</flux>", "</flux><flux version=\"1.0\"/>"),
            "RACINE",
        ),
        (
            doc("UTF-8", &agent("A", "B")).replace("<collectivite", "du texte <collectivite"),
            "STRUCTURE_TEXTE",
        ),
    ] {
        let v = check(bytes.as_bytes());
        assert!(!v.valid());
        assert_eq!(v.errors[0].code, code, "{bytes}: {:?}", v.errors);
    }
}

#[test]
fn control_totals() {
    let with = |a: u32, e: u32| {
        doc("UTF-8", &agent("A", "B")).replace(
            "</entete>",
            &format!(
                "<nombreAgents>{a}</nombreAgents><nombreEvenements>{e}</nombreEvenements></entete>"
            ),
        )
    };
    assert!(check(with(1, 0).as_bytes()).valid());
    let v = check(with(2, 0).as_bytes());
    assert_eq!(v.errors[0].code, "TOTAUX");
}

fn text_strategy() -> impl Strategy<Value = String> {
    // Any text a sender may write, including markup characters and non-Latin letters.
    proptest::string::string_regex("[a-zA-Z0-9 éèàçÉœ€<>&\"';:,./()\\-]{1,60}")
        .unwrap()
        .prop_map(|s| s.trim().to_string())
        .prop_filter("non-empty", |s| !s.is_empty())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]

    /// writer → reader round trip: every node, attribute and text comes back as written.
    #[test]
    fn writer_reader_round_trip(seed in 0u64..1000, i in 0u64..100_000, circ in text_strategy(), code in text_strategy()) {
        let mut a = atmp_flux::gen::agent(seed, i);
        a.children[0].text = nir("1840521531146");
        let ev = a.children.iter_mut().find(|c| c.name == "evenement").unwrap();
        ev.children.iter_mut().find(|c| c.name == "circonstances").unwrap().text = circ.clone();
        let service = atmp_flux::Node::new("service").with_attr("code", &code);
        let mut buf = Vec::new();
        let mut w = atmp_flux::FluxWriter::new(&mut buf).unwrap();
        let mut h = atmp_flux::Node::new("entete");
        h.leaf("emetteur", Some("E")).leaf("typeFichier", Some("DECLARATION")).leaf("mode", Some("COMPLET")).leaf("dateCreation", Some("2020-01-01T00:00:00"));
        w.header(&h).unwrap();
        w.begin_block("28219002400012", Some("SDIS \"test\" & co")).unwrap();
        w.record(&a).unwrap();
        w.record(&service).unwrap();
        w.finish().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("rt.xml");
        std::fs::write(&p, &buf).unwrap();
        let mut r = FluxReader::open(&p, &atmp_flux::Limits::default()).unwrap();
        let mut records = Vec::new();
        let mut nom = None;
        while let Some(item) = r.next_item().unwrap() {
            match item {
                Item::Record { node, .. } => records.push(node),
                Item::BlockStart(b) => nom = b.nom,
                _ => {}
            }
        }
        prop_assert_eq!(nom.as_deref(), Some("SDIS \"test\" & co"));
        prop_assert_eq!(records.len(), 2);
        fn strip(n: &atmp_flux::Node) -> (String, Vec<(String, String)>, String, Vec<String>) {
            let kids = n.children.iter().map(|c| format!("{:?}", strip(c))).collect();
            let text = if n.children.is_empty() { n.text.clone() } else { String::new() };
            (n.name.to_string(), n.attrs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect(), text, kids)
        }
        prop_assert_eq!(strip(&records[0]), strip(&a));
        prop_assert_eq!(records[1].attr("code"), Some(code.as_str()));
    }
}

/// The file's only problem: its first agent rejected as too large.
fn assert_first_agent_oversized(v: &Validation) {
    assert_eq!(
        v.errors.len(),
        1,
        "{:?}",
        &v.errors[..v.errors.len().min(3)]
    );
    assert_eq!(v.errors[0].code, "STRUCTURE_TAILLE");
    assert_eq!(v.errors[0].path, "/flux/collectivite[1]/agent[1]");
}

#[test]
fn an_oversized_record_is_rejected_in_bounded_memory() {
    // One agent with more elements than a record may hold: read to its end, not kept, rejected;
    // the next agent is read as usual.
    let many = "<evenement><identifiant>x</identifiant></evenement>"
        .repeat(atmp_flux::MAX_RECORD_NODES / 2 + 10);
    let big = agent("A", "B").replace("</agent>", &format!("{many}</agent>"));
    let v = check(doc("UTF-8", &format!("{big}{}", agent("C", "D"))).as_bytes());
    assert_first_agent_oversized(&v);
}

/// Attribute values count in a record's budget: a record of large attributes (each under the
/// scan's limits) is rejected like one of large texts, keeps nothing of its content and weighs
/// what it holds, wherever the attributes stand (on the record, empty or not, or inside it).
#[test]
fn a_record_of_large_attributes_is_rejected_and_dropped() {
    let value = "v".repeat(900_000);
    let attrs: String = (0..3).map(|i| format!(" a{i}=\"{value}\"")).collect();
    let cases = [
        format!("<agent{attrs}><nir>1</nir></agent>\n"),
        format!("<agent{attrs}/>\n"),
        format!("<agent><nir>1</nir><x{attrs}/></agent>\n"),
        format!("<agent><nir>1</nir><a b=\"{value}\"><c d=\"{value}\"/><e f=\"{value}\">t</e></a></agent>\n"),
    ];
    for case in &cases {
        let text = doc("UTF-8", &format!("{case}{}", agent("C", "D")));
        let v = check(text.as_bytes());
        assert_first_agent_oversized(&v);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.xml");
        std::fs::write(&p, &text).unwrap();
        let mut r = FluxReader::open(&p, &atmp_flux::Limits::default()).unwrap();
        let mut nodes = Vec::new();
        while let Some(item) = r.next_item().unwrap() {
            if let Item::Record { node, .. } = item {
                nodes.push(node);
            }
        }
        assert_eq!(nodes.len(), 2);
        let big = &nodes[0];
        assert!(big.oversized);
        assert!(big.attrs.is_empty() && big.children.is_empty() && big.text.is_empty());
        assert!(
            big.weight <= atmp_flux::MAX_RECORD_TEXT + 8 * 160,
            "{}",
            big.weight
        );
        assert!(!nodes[1].oversized);
        assert_eq!(nodes[1].children.len(), 5);
    }
}

/// A record's fragment is its bytes as read, and each sub-record's span cuts its own element
/// out of it: what the quarantine keeps and what a replay leaves out.
#[test]
fn fragments_and_spans_quote_records_as_read() {
    let ev = "<evenement>\n<!-- a comment --><identifiant>E&amp;1</identifiant><type>AS</type><date>2015-11-08</date><arret dateDebut=\"2015-11-09\"/></evenement>";
    let agent = format!(
        "<agent>\n<nir>{}</nir>\n<nomUsuel>DURAND</nomUsuel>\n<prenom>Zoé</prenom>\n<dateNaissance>1984-05-17</dateNaissance>\n<sexe>M</sexe>\n{ev}\n</agent>",
        nir("1840521531146")
    );
    let text = doc(
        "UTF-8",
        &format!("  {agent}\n  <service><code>S1</code></service>\n"),
    );
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("f.xml");
    std::fs::write(&p, &text).unwrap();
    let mut r = FluxReader::open(&p, &atmp_flux::Limits::default())
        .unwrap()
        .keep_fragments();
    let mut records = Vec::new();
    while let Some(item) = r.next_item().unwrap() {
        if let Item::Record { node, fragment, .. } = item {
            records.push((node, fragment.expect("fragments are kept")));
        }
    }
    assert_eq!(records.len(), 2);
    let (node, fragment) = &records[0];
    assert_eq!(fragment, &agent);
    assert_eq!(node.span, (0, agent.len() as u32));
    let e = node
        .children
        .iter()
        .find(|c| c.name == "evenement")
        .unwrap();
    assert_eq!(&fragment[e.span.0 as usize..e.span.1 as usize], ev);
    let a = e.children.iter().find(|c| c.name == "arret").unwrap();
    assert_eq!(
        &fragment[a.span.0 as usize..a.span.1 as usize],
        "<arret dateDebut=\"2015-11-09\"/>"
    );
    assert_eq!(records[1].1, "<service><code>S1</code></service>");
    // Without fragments kept, none is copied.
    let mut r = FluxReader::open(&p, &atmp_flux::Limits::default()).unwrap();
    while let Some(item) = r.next_item().unwrap() {
        if let Item::Record { fragment, .. } = item {
            assert!(fragment.is_none());
        }
    }
}
