//! The read stage gives the same pieces whichever thread checks the records
//! ([`Checks`]): the balance between the two cores changes where the work runs, never what
//! comes out.

use std::time::Duration;

use atmp_flux::gen::{generate, GenOptions};
use atmp_flux::{read_stage, Checks, Limits, Piece, StageOptions};
use atmp_model::{Nomenclatures, Siret};

/// A generated file of `agents` agents over two blocks, one record in seven spoilt in a way
/// the checks report (a bad sex code, a bad date, an unknown element).
fn file(agents: u64) -> Vec<u8> {
    let opts = GenOptions {
        agents,
        collectivites: vec![
            Siret::parse("28219002400012").unwrap(),
            Siret::parse("21750001600019").unwrap(),
        ],
        emetteur: "TEST".into(),
        date_creation: "2016-01-01T02:00:00".into(),
        seed: 7,
        cdg: None,
    };
    let mut out = Vec::new();
    generate(&mut out, &opts).unwrap();
    let text = String::from_utf8(out).unwrap();
    let mut spoilt = String::with_capacity(text.len());
    for (i, part) in text.split("<agent>").enumerate() {
        if i > 0 {
            spoilt.push_str("<agent>");
        }
        let part = match i % 7 {
            1 => part.replacen("<sexe>M</sexe>", "<sexe>X</sexe>", 1),
            3 => part.replacen("<dateDeclaration>20", "<dateDeclaration>31/", 1),
            5 => part.replacen("<grade>", "<inconnu>1</inconnu><grade>", 1),
            _ => part.to_string(),
        };
        spoilt.push_str(&part);
    }
    spoilt.into_bytes()
}

/// Every piece as text, and the names of the threads that checked the records. The
/// consumer is slow on the first records (so that batches wait in the channel) and fast
/// on the others, and looks ahead now and then as the integrator does.
fn pieces(bytes: &[u8], checks: Checks) -> (Vec<String>, Vec<String>) {
    let n = Nomenclatures::builtin();
    let opts = StageOptions {
        limits: Limits::default(),
        nomenclatures: &n,
        position: None,
        fragments: true,
        checks,
    };
    let prepare = |r: &atmp_flux::Record| {
        (
            r.values.len(),
            std::thread::current().name().unwrap_or("").to_string(),
        )
    };
    let raw: Box<dyn std::io::Read + Send> = Box::new(std::io::Cursor::new(bytes.to_vec()));
    read_stage(raw, &opts, &prepare, |rx| {
        let (mut out, mut threads) = (Vec::new(), Vec::new());
        let mut records = 0usize;
        loop {
            let p = rx.next_piece();
            let last = matches!(p, Piece::End { .. } | Piece::Fatal(_));
            if let Piece::Record(r) = &p {
                records += 1;
                if records < 600 {
                    std::thread::sleep(Duration::from_micros(300));
                }
                if records.is_multiple_of(97) {
                    // What it sees depends on the timing; what follows must not.
                    let _ = rx.ahead().count();
                }
                let (rec, (values, thread)) = &**r;
                threads.push(thread.clone());
                out.push(format!("{rec:?} {values}"));
            } else {
                out.push(format!("{p:?}"));
            }
            if last {
                return (out, threads);
            }
        }
    })
}

#[test]
fn every_balance_of_the_checks_gives_the_same_pieces() {
    let bytes = file(3000);
    let (reader, on_reader) = pieces(&bytes, Checks::Reader);
    let (consumer, on_consumer) = pieces(&bytes, Checks::Consumer);
    let (balanced, on_both) = pieces(&bytes, Checks::Balanced);
    assert!(reader.iter().any(|p| p.contains("STRUCTURE_INCONNU")));
    assert!(reader.iter().any(|p| p.starts_with("End")));
    assert_eq!(reader.len(), consumer.len());
    for (i, (a, b)) in reader.iter().zip(&consumer).enumerate() {
        assert_eq!(a, b, "piece {i}: Reader and Consumer differ");
    }
    assert_eq!(reader.len(), balanced.len());
    for (i, (a, b)) in reader.iter().zip(&balanced).enumerate() {
        assert_eq!(a, b, "piece {i}: Reader and Balanced differ");
    }
    assert!(on_reader.iter().all(|t| t == "atmp-lecture"));
    assert!(on_consumer.iter().all(|t| t != "atmp-lecture"));
    // The slow start fills the channel (the reader checks), the fast rest empties it (the
    // consumer does): the balance used both threads.
    assert!(
        on_both.iter().any(|t| t == "atmp-lecture"),
        "never on the reader"
    );
    assert!(
        on_both.iter().any(|t| t != "atmp-lecture"),
        "never on the consumer"
    );
}
