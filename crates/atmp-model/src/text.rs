//! Name comparison of §5.2: case, accents, hyphens, apostrophes and repeated spaces ignored.

use unicode_normalization::char::is_combining_mark;
use unicode_normalization::UnicodeNormalization;

/// The comparison form of a name: lower case, no accents, hyphens and apostrophes read as
/// spaces, runs of spaces as one, no leading or trailing space.
///
/// Stored next to each agent so that the lookup by (name, first name, birth date) is an
/// index search.
pub fn normalize_name(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut pending_space = false;
    for c in s.nfd() {
        if is_combining_mark(c) {
            continue;
        }
        let c = match c {
            '-' | '\'' | '\u{2019}' | '\u{2018}' | '\u{2010}' | '\u{2011}' | '\u{2013}' => ' ',
            'œ' | 'Œ' => {
                push_pending(&mut out, &mut pending_space);
                out.push_str("oe");
                continue;
            }
            'æ' | 'Æ' => {
                push_pending(&mut out, &mut pending_space);
                out.push_str("ae");
                continue;
            }
            c => c,
        };
        if c.is_whitespace() {
            pending_space = !out.is_empty();
            continue;
        }
        push_pending(&mut out, &mut pending_space);
        out.extend(c.to_lowercase());
    }
    out
}

fn push_pending(out: &mut String, pending: &mut bool) {
    if *pending {
        out.push(' ');
        *pending = false;
    }
}

/// Whether two names are the same under the rules of §5.2.
pub fn same_name(a: &str, b: &str) -> bool {
    normalize_name(a) == normalize_name(b)
}
