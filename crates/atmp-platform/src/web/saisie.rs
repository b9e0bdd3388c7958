//! The web: what a refused form typed, shown again with the error next to its field.
//!
//! RGAA 4.1 (criteria 11.10 and 11.11) asks that an input error be announced next to the
//! field, with what to do, and that the values typed be kept. Every management form answers
//! a refusal with its page, the form filled with a [`Saisie`] (never a password: those are
//! typed again), and the field at fault marked `aria-invalid` and described by its message.
//! `templates/champs.html` holds the macros that draw a field from it.

/// The values a form was sent with and, when it was refused, the field at fault with what to
/// do. An empty `Saisie` draws an empty form.
#[derive(Default, Clone, Debug)]
pub(crate) struct Saisie {
    valeurs: Vec<(&'static str, String)>,
    erreur: Option<(&'static str, String)>,
}

/// The longest value drawn again: a form field never needs more, and a hostile post of
/// megabytes does not come back in the page.
const KEPT: usize = 500;

impl Saisie {
    /// An empty form.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Keeps the value typed in `champ` (trimmed, cut at 500 characters).
    pub(crate) fn avec(mut self, champ: &'static str, valeur: &str) -> Self {
        self.valeurs
            .push((champ, valeur.trim().chars().take(KEPT).collect()));
        self
    }

    /// Marks `champ` as the field at fault, with what to do.
    pub(crate) fn refuse(&mut self, champ: &'static str, message: impl Into<String>) {
        self.erreur = Some((champ, message.into()));
    }

    /// The value to draw in `champ` (empty when none was kept).
    pub(crate) fn valeur(&self, champ: &str) -> &str {
        self.valeurs
            .iter()
            .find(|(c, _)| *c == champ)
            .map_or("", |(_, v)| v.as_str())
    }

    /// The error of `champ`, if it is the field at fault.
    pub(crate) fn erreur_de(&self, champ: &str) -> Option<&str> {
        self.erreur
            .as_ref()
            .filter(|(c, _)| *c == champ)
            .map(|(_, m)| m.as_str())
    }

    /// Whether some field is at fault.
    pub(crate) fn refusee(&self) -> bool {
        self.erreur.is_some()
    }
}

/// A form's outcome: a message for the page, or the field at fault with what to do.
pub(crate) type Issue = Result<String, (&'static str, String)>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_field_at_fault_gets_its_message_and_the_others_keep_their_values() {
        let mut s = Saisie::new()
            .avec("siret", " 123 ")
            .avec("nom", &"x".repeat(600));
        assert_eq!(s.valeur("siret"), "123");
        assert_eq!(s.valeur("nom").chars().count(), 500);
        assert_eq!(s.valeur("cdg"), "");
        assert_eq!(s.erreur_de("siret"), None);
        s.refuse("siret", "Saisissez 14 chiffres.");
        assert_eq!(s.erreur_de("siret"), Some("Saisissez 14 chiffres."));
        assert_eq!(s.erreur_de("nom"), None);
        assert_eq!(s.valeur("siret"), "123");
    }
}
