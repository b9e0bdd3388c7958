use super::*;
use proptest::prelude::*;

fn nir_with_key(body13: &str) -> String {
    let n: u64 = body13
        .replace("2A", "19")
        .replace("2B", "18")
        .parse()
        .unwrap();
    format!("{body13}{:02}", 97 - n % 97)
}

#[test]
fn nir_examples() {
    assert!(Nir::parse("184052153114629").is_ok());
    assert!(Nir::parse("1 84 05 21 531 146 29").is_ok());
    assert!(matches!(
        Nir::parse("184052153114628"),
        Err(NirError::Key { .. })
    ));
    assert!(matches!(
        Nir::parse("18405215311462"),
        Err(NirError::Length(14))
    ));
    assert!(matches!(
        Nir::parse("18405215311462X"),
        Err(NirError::Characters)
    ));
    let corse = nir_with_key("184052A531146");
    assert!(Nir::parse(&corse).is_ok(), "{corse}");
    let corse_b = nir_with_key("184052B531146");
    assert!(Nir::parse(&corse_b).is_ok());
    assert_ne!(corse[13..], corse_b[13..]);
}

#[test]
fn nir_coherence() {
    let nir = Nir::parse("184052153114629").unwrap();
    assert!(nir
        .coherence(Some(Sexe::M), Date::parse("1984-05-17"))
        .is_empty());
    assert_eq!(
        nir.coherence(Some(Sexe::F), Date::parse("1984-05-17"))
            .len(),
        1
    );
    assert_eq!(
        nir.coherence(Some(Sexe::M), Date::parse("1985-06-17"))
            .len(),
        2
    );
    let provisional = Nir::parse(&nir_with_key("7840521531146")).unwrap();
    assert!(provisional
        .coherence(Some(Sexe::F), Date::parse("1999-01-01"))
        .is_empty());
    assert_eq!(nir.masked(), "***********4629");
}

proptest! {
    #[test]
    fn nir_valid_key_always_parses(body in "[12][0-9]{12}") {
        let s = nir_with_key(&body);
        prop_assert!(Nir::parse(&s).is_ok());
    }

    #[test]
    fn nir_any_other_key_is_refused(body in "[12][0-9]{12}", delta in 1u64..97) {
        let good = nir_with_key(&body);
        let key: u64 = good[13..].parse().unwrap();
        let bad = (key + delta - 1) % 97 + 1;
        let s = format!("{body}{bad:02}");
        prop_assert!(Nir::parse(&s).is_err());
    }

    #[test]
    fn siret_luhn(body in "[0-9]{13}") {
        let valid: Vec<String> = (0..10).map(|d| format!("{body}{d}")).filter(|s| Siret::parse(s).is_ok()).collect();
        if !luhn(&body[..9]) {
            // A SIREN with a wrong key: no SIRET of it is valid.
            prop_assert_eq!(valid.len(), 0);
            prop_assert_eq!(Siret::parse(&format!("{body}0")), Err(SiretError::SirenKey));
        } else if body == "3560000000004" {
            prop_assert_eq!(valid.len(), 3);
        } else if body.starts_with("356000000") {
            prop_assert_eq!(valid.len(), 2);
        } else {
            prop_assert_eq!(valid.len(), 1);
        }
    }

    #[test]
    fn every_parser_is_safe_on_any_text(s in "\\PC{0,40}", t in ".{0,20}") {
        // Any Unicode, in any position: an answer, never a panic.
        for x in [&s, &t, &format!("{s}{t}"), &format!("18405215311462{t}"), &format!("2015-11-2{t}"), &format!("2821900240001{t}")] {
            let _ = Nir::parse(x);
            let _ = Siret::parse(x);
            let _ = Date::parse(x);
            let _ = Heure::parse(x);
            let _ = DateTime::parse(x);
            let _ = parse_bool(x);
            let _ = Sexe::parse(x);
            let _ = TypeFichier::parse(x);
            let _ = Mode::parse(x);
            let _ = valid_no_tableau(x);
            let _ = normalize_name(x);
            let _ = same_name(x, &s);
            let _ = parse_csv(x);
        }
    }

    #[test]
    fn a_multibyte_character_anywhere_in_a_nir_is_refused(pos in 0usize..15, c in "[éß€😀\u{0300}]") {
        let good = "184052153114623";
        let mut chars: Vec<String> = good.chars().map(|c| c.to_string()).collect();
        chars[pos] = c.clone();
        let s: String = chars.concat();
        prop_assert_eq!(Nir::parse(&s), Err(NirError::Characters));
        let extra = format!("{}{c}", &good[..14]);
        prop_assert!(Nir::parse(&extra).is_err());
    }

    #[test]
    fn name_normalization_ignores_case_accents_and_punctuation(s in "[a-zA-Zéèêàçô' -]{0,30}") {
        let upper = s.to_uppercase();
        prop_assert!(same_name(&s, &upper));
        let spaced = format!("  {}  ", s.replace(' ', "   ").replace('-', " "));
        prop_assert!(same_name(&s, &spaced));
        let norm = normalize_name(&s);
        prop_assert_eq!(normalize_name(&norm), norm.clone());
        prop_assert!(!norm.contains("  ") && !norm.starts_with(' ') && !norm.ends_with(' '));
    }
}

#[test]
fn siret_examples() {
    for s in [
        "28219002400012",
        "28219010700049",
        "21219781800017",
        "26219781700014",
    ] {
        assert!(Siret::parse(s).is_ok(), "{s}");
    }
    assert_eq!(Siret::parse("28219002400013"), Err(SiretError::Key));
    assert_eq!(Siret::parse("2821900240001"), Err(SiretError::Shape));
    // La Poste: digit sum divisible by 5 (Luhn would refuse it).
    assert!(Siret::parse("35600000000001").is_ok());
    assert!(!luhn("35600000000001"));
    // Its head office follows Luhn (its digit sum is not a multiple of 5).
    assert!(Siret::parse("35600000000048").is_ok());
    // FORMAT.md §2: a Luhn-valid SIRET whose SIREN key is wrong is refused.
    assert!(luhn("11111111111110") && !luhn("111111111"));
    assert_eq!(Siret::parse("11111111111110"), Err(SiretError::SirenKey));
    // The NIR of the hardening issue: a multi-byte character where the key is sliced.
    assert!(Nir::parse("18405215311462é").is_err());
    assert!(DateTime::parse("2015-11-2é02:00:0").is_none());
}

#[test]
fn names() {
    assert!(same_name("Jean-Louis", "JEAN LOUIS"));
    assert!(same_name("D'Artagnan", "d artagnan"));
    assert!(same_name("Évelyne", "EVELYNE"));
    assert!(same_name("  Le   Goff ", "LE GOFF"));
    assert!(!same_name("J. Louis", "JEAN LOUIS"));
    assert!(!same_name("Martin", "Martine"));
}

#[test]
fn dates_and_times() {
    assert_eq!(Date::parse("2015-11-08").unwrap().fr(), "08/11/2015");
    assert!(Date::parse("2015-02-30").is_none());
    assert!(Date::parse("2015-2-03").is_none());
    assert!(Date::parse("08/11/2015").is_none());
    assert!(Heure::parse("23:59").is_some());
    assert!(Heure::parse("24:00").is_none());
    assert!(DateTime::parse("2015-11-21T02:00:00").is_some());
    assert!(DateTime::parse("2015-11-21 02:00:00").is_none());
    assert_eq!(parse_bool("1"), Some(true));
    assert_eq!(parse_bool("oui"), None);
}

#[test]
fn no_tableau() {
    for ok in ["57", "30 bis", "57A", "1", "999", "30 ter", "30 bis A"] {
        assert!(valid_no_tableau(ok), "{ok}");
    }
    for bad in ["", "1000", "A57", "57a", "57AB", "30bis", "57 quater"] {
        assert!(!valid_no_tableau(bad), "{bad}");
    }
}

#[test]
fn builtin_nomenclatures() {
    let n = Nomenclatures::builtin();
    for code in ["30", "51", "53", "62", "64", "78", "641", "00", "99"] {
        assert!(n.contains(Nomenclature::SiegeLesion, code), "{code}");
    }
    for code in ["100", "991", "10 "] {
        assert!(!n.contains(Nomenclature::SiegeLesion, code), "{code}");
    }
    assert!(n.contains(Nomenclature::ElementMateriel, "40"));
    assert!(!n.contains(Nomenclature::ElementMateriel, "41"));
    assert_eq!(n.len(Nomenclature::TypeEvenement), 5);
    let errs = parse_csv("nomenclature;code;libelle\nFOO;1;x\nREGIME;RG\n").unwrap_err();
    assert_eq!(errs.iter().map(|e| e.line).collect::<Vec<_>>(), vec![2, 3]);
}
