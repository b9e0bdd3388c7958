//! The command line in French: clap's help headings and flags, and its usage errors, which
//! clap writes only in English.

use clap::error::{ContextKind, ContextValue, ErrorKind};

/// The help's layout, with French headings.
const TEMPLATE: &str = "\
{before-help}{about-with-newline}
Utilisation : {usage}

{all-args}{after-help}";

/// Gives `cmd` and every sub-command French headings, a French `--help` (and `--version` at
/// the top), and no `help` sub-command. Recursion follows the program's own command tree,
/// never input.
pub fn francise(cmd: clap::Command) -> clap::Command {
    let top = cmd.get_name() == "atmp";
    let mut cmd = cmd
        .help_template(TEMPLATE)
        // clap writes `{heading}:`; French puts a space before the colon.
        .subcommand_help_heading("Commandes ")
        .subcommand_value_name("COMMANDE")
        .next_help_heading("Options ")
        .disable_help_subcommand(true)
        .disable_help_flag(true)
        .arg(
            clap::Arg::new("aide")
                .short('h')
                .long("help")
                .help("Affiche l'aide")
                .action(clap::ArgAction::Help)
                .global(top),
        )
        .mut_args(|a| {
            if a.is_positional() {
                a.help_heading("Arguments ")
            } else {
                a.help_heading("Options ")
            }
        });
    if top {
        cmd = cmd.disable_version_flag(true).arg(
            clap::Arg::new("version")
                .short('V')
                .long("version")
                .help("Affiche la version")
                .action(clap::ArgAction::Version),
        );
    }
    let names: Vec<String> = cmd
        .get_subcommands()
        .map(|s| s.get_name().to_string())
        .collect();
    for n in names {
        cmd = cmd.mut_subcommand(n, francise);
    }
    cmd
}

fn value(e: &clap::Error, k: ContextKind) -> Option<String> {
    match e.get(k)? {
        ContextValue::String(s) => Some(s.clone()),
        ContextValue::Strings(v) => Some(v.join(", ")),
        ContextValue::StyledStr(s) => Some(s.to_string()),
        ContextValue::StyledStrs(v) => Some(
            v.iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                .join(", "),
        ),
        ContextValue::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A usage error, said in French: what is wrong, a suggestion when clap has one, the usage
/// line, and where to read more. (`--help` and `--version` are printed as they are.)
pub fn message(e: &clap::Error) -> String {
    let arg = value(e, ContextKind::InvalidArg).unwrap_or_default();
    let val = value(e, ContextKind::InvalidValue).unwrap_or_default();
    let mut m = match e.kind() {
        ErrorKind::UnknownArgument => format!("argument inattendu « {arg} »"),
        ErrorKind::InvalidSubcommand => {
            format!(
                "sous-commande inconnue « {} »",
                value(e, ContextKind::InvalidSubcommand).unwrap_or(arg)
            )
        }
        ErrorKind::InvalidValue if val.is_empty() => {
            format!("une valeur est attendue pour « {arg} »")
        }
        ErrorKind::InvalidValue => {
            let mut m = format!("valeur « {val} » invalide pour « {arg} »");
            if let Some(v) = value(e, ContextKind::ValidValue) {
                m.push_str(&format!(" (valeurs possibles : {v})"));
            }
            m
        }
        ErrorKind::ValueValidation => {
            // The cause is the program's own French message (a SIRET's key…).
            let cause = std::error::Error::source(e)
                .map(|s| s.to_string())
                .unwrap_or_default();
            if cause.is_empty() {
                format!("valeur « {val} » invalide pour « {arg} »")
            } else {
                format!("valeur « {val} » invalide pour « {arg} » : {cause}")
            }
        }
        ErrorKind::MissingRequiredArgument => {
            format!("argument(s) obligatoire(s) absent(s) : {arg}")
        }
        ErrorKind::MissingSubcommand | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            "une sous-commande est attendue".to_string()
        }
        ErrorKind::ArgumentConflict => format!(
            "« {arg} » ne peut pas être employé avec « {} »",
            value(e, ContextKind::PriorArg).unwrap_or_default()
        ),
        ErrorKind::NoEquals => format!("« {arg} » attend sa valeur après un signe « = »"),
        ErrorKind::TooManyValues => format!("trop de valeurs pour « {arg} » : « {val} »"),
        ErrorKind::TooFewValues | ErrorKind::WrongNumberOfValues => {
            format!("nombre de valeurs incorrect pour « {arg} »")
        }
        ErrorKind::InvalidUtf8 => "un argument n'est pas de l'UTF-8 valide".to_string(),
        _ => format!("ligne de commande invalide ({})", e.kind()),
    };
    if let Some(s) =
        value(e, ContextKind::SuggestedArg).or_else(|| value(e, ContextKind::SuggestedSubcommand))
    {
        m.push_str(&format!("\n\n  conseil : vouliez-vous dire « {s} » ?"));
    }
    let usage = value(e, ContextKind::Usage)
        .map(|u| u.replacen("Usage:", "Utilisation :", 1))
        .unwrap_or_default();
    let usage = usage.trim();
    if usage.is_empty() {
        format!("erreur : {m}\n\nPour en savoir plus, essayez « --help ».\n")
    } else {
        format!("erreur : {m}\n\n{usage}\n\nPour en savoir plus, essayez « --help ».\n")
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Every option and argument of every sub-command says what it is for, in French, and
    /// positional values have French names.
    #[test]
    fn every_option_is_described() {
        let mut missing = Vec::new();
        let mut stack = vec![(String::from("atmp"), super::francise(crate::Cli::command()))];
        while let Some((path, c)) = stack.pop() {
            if c.is_hide_set() {
                continue;
            }
            for a in c.get_arguments() {
                if a.is_hide_set() {
                    continue;
                }
                if a.get_help().is_none() {
                    missing.push(format!("{path} {}", a.get_id()));
                }
                if a.is_positional() {
                    for v in a.get_value_names().unwrap_or_default() {
                        if v.as_str().chars().any(|c| c.is_ascii_lowercase()) || v == "FILES" {
                            missing.push(format!("{path} <{v}> (nom de valeur)"));
                        }
                    }
                }
            }
            for s in c.get_subcommands() {
                stack.push((format!("{path} {}", s.get_name()), s.clone()));
            }
        }
        assert!(
            missing.is_empty(),
            "sans description :\n{}",
            missing.join("\n")
        );
    }

    #[test]
    fn usage_errors_are_in_french() {
        let cmd = super::francise(crate::Cli::command());
        let e = cmd
            .clone()
            .try_get_matches_from(["atmp", "validat"])
            .unwrap_err();
        let m = super::message(&e);
        assert!(
            m.starts_with("erreur : sous-commande inconnue « validat »"),
            "{m}"
        );
        assert!(
            m.contains("conseil : vouliez-vous dire « validate » ?"),
            "{m}"
        );
        assert!(m.contains("Utilisation : atmp"), "{m}");
        assert!(!m.contains("Usage") && !m.contains("error"), "{m}");
        let e = cmd
            .clone()
            .try_get_matches_from(["atmp", "collectivite", "add", "--nom", "X"])
            .unwrap_err();
        let m = super::message(&e);
        assert!(
            m.contains("argument(s) obligatoire(s) absent(s) : --siret"),
            "{m}"
        );
        let mut help = Vec::new();
        cmd.clone().write_long_help(&mut help).unwrap();
        let help = String::from_utf8(help).unwrap();
        for w in [
            "Utilisation : atmp",
            "Commandes :",
            "Options :",
            "Affiche l'aide",
            "Affiche la version",
        ] {
            assert!(help.contains(w), "{w}: {help}");
        }
        for w in ["Usage:", "Commands:", "Print help"] {
            assert!(!help.contains(w), "{w}: {help}");
        }
    }
}
