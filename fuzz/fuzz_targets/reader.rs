//! Any bytes through the whole reader and record checks: no panic, no unbounded memory.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let n = atmp_model::Nomenclatures::builtin();
    let v = atmp_flux::validate_bytes(data.to_vec(), &n);
    // Every problem has a position and a code.
    for i in v.errors.iter().chain(v.warnings.iter()) {
        assert!(!i.code.is_empty());
    }
});
