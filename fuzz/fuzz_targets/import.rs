//! Any bytes through the whole import into a temporary base (the examples' collectivités and
//! senders recorded): no panic, no abort, and a file rejected whole stores nothing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use atmp_store::prelude::*;

use atmp_integrator::{import_file, ImportOptions, ResultKind};
use atmp_model::Siret;
use atmp_store::Autorisation;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().expect("temporary folder");
    let mut store = atmp_store::open(&format!("sqlite://{}", dir.path().join("atmp.db").display()))
        .expect("base");
    let cdg = Siret::parse("28219010700049").unwrap();
    store.add_collectivite(&cdg, "CDG", None).unwrap();
    for (s, attached) in [("28219002400012", false), ("21219781800017", true), ("26219781700014", true)] {
        let siret = Siret::parse(s).unwrap();
        store
            .add_collectivite(&siret, "Collectivité", attached.then_some(&cdg))
            .unwrap();
    }
    for code in ["SOFIVAL", "CDGVAUCL", "SOFCAP"] {
        store.add_emetteur(code, None).unwrap();
        for s in ["28219010700049", "28219002400012", "21219781800017", "26219781700014"] {
            store
                .set_autorisation(code, s, Autorisation::Accordee, Some("fuzz"))
                .unwrap();
        }
    }
    let file = dir.path().join("fichier.xml");
    std::fs::write(&file, data).unwrap();
    let opts = ImportOptions {
        emetteur: None,
        logs_dir: dir.path().join("logs"),
        display_name: None,
        progress: None,
        job_id: None,
        limits: atmp_flux::Limits::default(),
    };
    let out = import_file(store.as_mut(), &file, &opts).expect("no platform error on a temporary base");
    if out.result == ResultKind::Echoue {
        let total: u64 = atmp_flux::spec::RecordKind::COUNTED
            .iter()
            .map(|k| out.counts.get(*k).0)
            .sum();
        assert_eq!(total, 0, "a file rejected whole added records");
    }
});
