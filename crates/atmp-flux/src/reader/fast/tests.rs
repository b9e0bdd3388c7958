//! The fast path against the quick-xml path: the same items, errors, positions, spans and
//! fragments, whatever the chunk boundaries, for well-formed, truncated, mismatched and
//! oversized records.

use std::io::{BufReader, Cursor};

use crate::reader::{FluxReader, MAX_RECORD_NODES, MAX_RECORD_TEXT};
use crate::scan::{Limits, WellFormed};

/// What a reader made of a document: every item (Debug, fragments included), then how it
/// ended, the totals and the bytes consumed.
#[derive(Debug, PartialEq)]
struct Outcome {
    items: Vec<String>,
    end: String,
    totals: (u64, u64),
    consumed: u64,
}

/// Reads `bytes` through the scan, in chunks of `chunk` bytes, with or without the fast
/// path; returns the outcome and the number of records the fast path read.
fn read(bytes: &[u8], chunk: usize, fast: bool) -> (Outcome, u64) {
    let input = WellFormed::new(
        BufReader::with_capacity(chunk, Cursor::new(bytes.to_vec())),
        Limits::default(),
    );
    let mut r = FluxReader::new(Box::new(input)).keep_fragments();
    r.fast = fast;
    let mut items = Vec::new();
    let end = loop {
        match r.next_item() {
            Ok(Some(item)) => items.push(format!("{item:?}")),
            Ok(None) => break "fin".to_string(),
            Err(e) => break format!("{e:?}"),
        }
    };
    let outcome = Outcome {
        items,
        end,
        totals: r.totals(),
        consumed: r.position(),
    };
    (outcome, r.fast_records)
}

/// Both paths agree on `bytes` at every chunk size; returns the records the fast path read
/// over all of them.
fn same(bytes: &[u8], chunks: &[usize]) -> u64 {
    let mut fast_records = 0;
    for &chunk in chunks {
        let (slow, none) = read(bytes, chunk, false);
        assert_eq!(none, 0);
        let (fast, n) = read(bytes, chunk, true);
        if fast != slow {
            let i = (0..=fast.items.len().max(slow.items.len()))
                .find(|&i| fast.items.get(i) != slow.items.get(i))
                .unwrap_or(usize::MAX);
            panic!(
                "chunks of {chunk} bytes, {} bytes of document ending {:?}\nitem {i}:\nquick-xml: {:?}\nfast:      {:?}\nend: {} / {}\ntotals {:?} / {:?}, consumed {} / {}",
                bytes.len(),
                String::from_utf8_lossy(&bytes[bytes.len().saturating_sub(60)..]),
                slow.items.get(i),
                fast.items.get(i),
                slow.end,
                fast.end,
                slow.totals,
                fast.totals,
                slow.consumed,
                fast.consumed
            );
        }
        fast_records += n;
    }
    fast_records
}

const CHUNKS: &[usize] = &[2, 3, 5, 8, 13, 31, 64, 1000, 1 << 16];

fn doc(records: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<flux version=\"1.0\">\n<entete><emetteur>E</emetteur><typeFichier>AGENT</typeFichier><mode>COMPLET</mode><dateCreation>2016-01-01T00:00:00</dateCreation></entete>\n<collectivite siret=\"28219002400012\">\n{records}</collectivite>\n<collectivite siret=\"21750001600019\">\n<agent><nir>2</nir></agent>\n</collectivite>\n</flux>\n"
    )
}

/// Records using every token a record may hold, line ends of all kinds, attributes (one
/// with `>` in its value), references, empty elements, end tags with white space.
const TRICKY: &str = "<agent a=\"x>y\" b='1 &amp;&#10;2'>\r\n  <nir>1&amp;2&#233;&#x41;&lt;</nir><!-- un commentaire > -->\
<?pi x?><nomUsuel><![CDATA[a]]b<c\r\nd]]></nomUsuel><x/><y z=\"1\" /><prenom >t\r\nu\rv</prenom ></agent >\n\
<agent/>\n<agent>  \n <evenement><type>AT</type>\n<arret><debut>2020-01-01</debut></arret></evenement>\r\n<evenement/>\n</agent>\n\
<!-- entre deux --><?pi entre deux?>\n<service code=\"S1\">  <libelle>Voirie &amp; espaces</libelle>\n</service>\n";

#[test]
fn tricky_records_read_alike_at_every_chunk_size() {
    let fast = same(doc(TRICKY).as_bytes(), CHUNKS);
    assert!(fast > 20, "the fast path read only {fast} records");
}

#[test]
fn a_file_cut_at_any_byte_reads_alike() {
    let full = doc(TRICKY);
    let start = full.find("<collectivite").unwrap();
    let mut fast = 0;
    for cut in start..full.len() {
        fast += same(&full.as_bytes()[..cut], &[3, 7, 64, 1 << 16]);
    }
    assert!(fast > 1000, "the fast path read only {fast} records");
}

#[test]
fn mismatched_end_tags_read_alike() {
    let cases = [
        "<agent><nir>1</nom></agent>\n",
        "<agent><nir>1</nir></agnt>\n",
        "<agent><a><b></a></b></agent>\n",
        "<agent>x</agent >\n<agent><nir>1</nir ></agent\t>\n<agent></collectivite>\n",
        "<agent><nir>1</nir>\n</agent>\n</agent>\n",
    ];
    let mut fast = 0;
    for case in cases {
        fast += same(doc(case).as_bytes(), CHUNKS);
    }
    assert!(fast > 0);
}

#[test]
fn oversized_records_read_alike() {
    // Over the node budget, then a mismatch inside the part not kept.
    let many: String = (0..MAX_RECORD_NODES + 5)
        .map(|i| format!("<c>{i}</c>"))
        .collect();
    // Over the text budget, in several text nodes (each under the scan's token limit).
    let chunk = "t".repeat(900_000);
    let long: String = (0..=MAX_RECORD_TEXT / 900_000)
        .map(|_| format!("<l>{chunk}</l><m><n>x</n></m>"))
        .collect();
    let cases = [
        format!("<agent>{many}</agent>\n<agent><nir>1</nir></agent>\n"),
        format!("<agent>{many}<d><e>1</d></agent>\n"),
        format!("<agent>{long}</agent>\n<agent><nir>1</nir></agent>\n"),
        format!("<agent>{long}<z>{chunk}</y></agent>\n"),
        // Over the budget by attribute values, on the record (empty or not) and inside it.
        format!(
            "<agent a=\"{chunk}\" b=\"{chunk}\" c=\"{chunk}\"><nir>1</nir></agent>\n<agent/>\n"
        ),
        format!(
            "<agent a=\"{chunk}\" b=\"{chunk}\" c=\"{chunk}\"/>\n<agent><nir>1</nir></agent>\n"
        ),
        format!(
            "<agent><x a=\"{chunk}\"/><y b=\"{chunk}\"><z c=\"{chunk}\">t</z></y><w/></agent>\n"
        ),
    ];
    let mut fast = 0;
    for case in &cases {
        fast += same(doc(case).as_bytes(), &[4096, 1 << 16, 256 * 1024]);
    }
    assert!(fast > 0);
}

#[test]
fn a_generated_file_reads_alike_through_the_real_input() {
    let opts = crate::gen::GenOptions {
        agents: 800,
        collectivites: vec![atmp_model::Siret::parse("28219002400012").unwrap()],
        emetteur: "E".into(),
        date_creation: "2016-01-01T00:00:00".into(),
        seed: 7,
        cdg: None,
    };
    let mut bytes = Vec::new();
    crate::gen::generate(&mut bytes, &opts).unwrap();
    assert!(
        bytes.len() > 3 * 256 * 1024,
        "several chunks of the real input"
    );
    let run = |fast: bool| {
        let input =
            crate::input::open_reader(Box::new(Cursor::new(bytes.clone())), &Limits::default())
                .unwrap();
        let mut r = FluxReader::new(input).keep_fragments();
        r.fast = fast;
        let mut items = Vec::new();
        while let Some(item) = r.next_item().unwrap() {
            items.push(format!("{item:?}"));
        }
        (items, r.totals(), r.fast_records)
    };
    let (slow, slow_totals, _) = run(false);
    let (fast, fast_totals, n) = run(true);
    assert_eq!(slow_totals, fast_totals);
    assert_eq!(slow.len(), fast.len());
    for (a, b) in slow.iter().zip(&fast) {
        assert_eq!(a, b);
    }
    // Only a record starting at a chunk's very end falls back to quick-xml.
    assert!(n + 10 > 800, "the fast path read {n} records of 800");
}
