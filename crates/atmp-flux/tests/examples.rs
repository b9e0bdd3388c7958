use std::path::PathBuf;

use atmp_flux::validate_path;
use atmp_model::Nomenclatures;

fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/spec/examples")
}

#[test]
fn the_shared_examples_are_valid() {
    let n = Nomenclatures::builtin();
    for f in [
        "services.xml",
        "declaration-differentiel.xml",
        "cdg-groupe.xml",
    ] {
        let v = validate_path(&examples().join(f), &n, &atmp_flux::Limits::default());
        assert!(v.valid(), "{f}: {:#?}", v.errors);
        assert!(v.warnings.is_empty(), "{f}: {:#?}", v.warnings);
    }
}
