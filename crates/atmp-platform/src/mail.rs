//! E-mail after each import: an outbox in the base, filled by the worker once the import is
//! committed (production platforms only) and emptied by [`run`], which retries failures with
//! a growing delay. Sending never blocks integration. A mail carries no name and no NIR: the
//! result, the counts and a link; the logs are attached only where configured, masked.

use std::sync::Arc;
use std::time::Duration;

use atmp_store::{ImportLog, ImportRow, Mail, NewMail, Store};
use lettre::message::{header::ContentType, Attachment, Mailbox, MultiPart, SinglePart};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::{PlatformError, Shared};

/// Attempts before a mail is given up.
const MAX_ATTEMPTS: u64 = 8;

/// Queues the mails of an import: one per recipient of each log (the collectivité's users;
/// the CDG's administrators for the global log of a grouped file).
pub fn enqueue(
    shared: &Shared,
    store: &mut dyn Store,
    import_id: i64,
    row: &ImportRow,
    logs: &[(i64, ImportLog)],
) -> Result<(), PlatformError> {
    let single = logs.iter().filter(|(_, l)| !l.global).count() <= 1;
    for (_, l) in logs {
        if l.collectivite_siret.is_empty() {
            continue;
        }
        let recipients = store.destinataires(&l.collectivite_siret, l.global)?;
        if recipients.is_empty() {
            continue;
        }
        let nom = match l.siret() {
            Some(x) => store.collectivite(&x)?.map(|c| c.nom).unwrap_or_default(),
            None => String::new(),
        };
        // The file name is the sender's choice and may carry a name: masked like one.
        let subject = format!(
            "[atmp] Import n° {import_id} ({}) : {}",
            mask_file_name(&row.file_name),
            if l.global { &row.label } else { &l.label }
        );
        let mut body = String::new();
        body.push_str("Bonjour,\n\n");
        body.push_str(&format!(
            "Le fichier n° {import_id} (« {} », émetteur {}) a été traité par la plate-forme atmp.\n\n",
            mask_file_name(&row.file_name),
            row.emetteur.as_deref().unwrap_or("inconnu")
        ));
        if l.global {
            body.push_str(&format!(
                "Journal global du CDG : {nom} ({})\n",
                l.collectivite_siret
            ));
        } else {
            body.push_str(&format!(
                "Collectivité : {nom} ({})\n",
                l.collectivite_siret
            ));
        }
        body.push_str(&format!(
            "Type de fichier : {}\nRésultat : {}\nErreurs : {} — Avertissements : {}\n",
            row.type_fichier.as_deref().unwrap_or("—"),
            l.label,
            l.errors,
            l.warnings
        ));
        if single || l.global {
            body.push_str(&counts_text(&row.counts));
        }
        body.push_str(&format!(
            "\nDétail de l'import et journaux : {}/imports/{import_id}\n\n",
            shared.public_url()
        ));
        body.push_str(
            "Ce message est envoyé automatiquement ; il ne contient ni nom ni NIR. \
             Les journaux complets se téléchargent après connexion.\n",
        );
        let attachments = if shared.config.attach_logs {
            let base = format!("import-{import_id}-{}", l.collectivite_siret);
            vec![
                (format!("{base}-complet-masque.log"), l.complet_path.clone()),
                (format!("{base}-erreurs-masque.log"), l.erreurs_path.clone()),
            ]
        } else {
            vec![]
        };
        for to in recipients {
            store.enqueue_mail(&NewMail {
                import_id,
                recipient: to,
                subject: subject.clone(),
                body: body.clone(),
                attachments: attachments.clone(),
            })?;
        }
    }
    Ok(())
}

fn counts_text(counts: &atmp_store::RecordCounts) -> String {
    let mut s = String::from("\nEnregistrements (ajoutés / déjà présents / rejetés) :\n");
    for (k, _, c) in counts.rows() {
        s.push_str(&format!(
            "  {k} : {} / {} / {}\n",
            c.added, c.existing, c.rejected
        ));
    }
    s
}

/// Masks a NIR-shaped token (13 or 15 characters, digits, Corsica's 2A/2B allowed): only
/// the first character (the sex) is kept.
fn is_nir(tok: &str) -> bool {
    let b = tok.as_bytes();
    (b.len() == 13 || b.len() == 15)
        && b.iter().enumerate().all(|(i, c)| {
            c.is_ascii_digit() || (i == 6 && (*c == b'A' || *c == b'B' || *c == b'a' || *c == b'b'))
        })
}

fn mask_nirs(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut tok = String::new();
    let flush = |tok: &mut String, out: &mut String| {
        if is_nir(tok) {
            out.push_str(&tok[..1]);
            out.extend(std::iter::repeat_n('*', tok.len() - 1));
        } else {
            out.push_str(tok);
        }
        tok.clear();
    };
    for c in s.chars() {
        if c.is_ascii_alphanumeric() {
            tok.push(c);
        } else {
            flush(&mut tok, &mut out);
            out.push(c);
        }
    }
    flush(&mut tok, &mut out);
    out
}

/// Replaces every `«…»` value and every `[…]` identity by a mask.
fn mask_values(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut depth: Option<char> = None;
    for c in s.chars() {
        match (depth, c) {
            (None, '«') => {
                depth = Some('»');
                out.push_str("« ***");
            }
            (None, '[') => {
                depth = Some(']');
                out.push_str("[données masquées");
            }
            (Some(end), c) if c == end => {
                depth = None;
                if c == '»' {
                    out.push(' ');
                }
                out.push(c);
            }
            (Some(_), _) => {}
            (None, c) => out.push(c),
        }
    }
    out
}

/// A file name as a mail may show it: its first character and its extension
/// (`d***.xml.gz`), since a sender may name a file after a person.
pub fn mask_file_name(name: &str) -> String {
    let lower = name.to_ascii_lowercase();
    let ext = [".xml.gz", ".xml", ".gz"]
        .into_iter()
        .find(|e| lower.ends_with(e) && name.is_char_boundary(name.len() - e.len()))
        .unwrap_or("");
    let (stem, ext) = name.split_at(name.len() - ext.len());
    let first: String = stem
        .chars()
        .filter(|c| c.is_alphanumeric())
        .take(1)
        .collect();
    format!("{first}***{ext}")
}

/// The agent field with names reduced to initials and the NIR masked.
fn mask_agent(s: &str) -> String {
    let Some(rest) = s.strip_prefix("Agent : ") else {
        return mask_values(&mask_nirs(s));
    };
    let parts: Vec<&str> = rest.split(" - ").collect();
    let names = parts.first().copied().unwrap_or("");
    let initials: Vec<String> = names
        .split_whitespace()
        .filter(|w| !w.is_empty())
        .map(|w| {
            let (open, inner) = match w.strip_prefix('(') {
                Some(i) => ("(", i.trim_end_matches(')')),
                None => ("", w),
            };
            let close = if open.is_empty() { "" } else { ")" };
            let first: String = inner.chars().take(1).collect();
            format!("{open}{first}.{close}")
        })
        .collect();
    let year = parts
        .get(1)
        .and_then(|d| d.get(6..10))
        .filter(|y| y.bytes().all(|b| b.is_ascii_digit()))
        .map(|y| format!("**/**/{y}"))
        .unwrap_or_else(|| "**/**/****".into());
    let nir = parts.get(2).map(|n| mask_nirs(n)).unwrap_or_default();
    format!("Agent : {} - {year} - {nir}", initials.join(" "))
}

/// A log with every NIR masked, names reduced to initials and field values hidden: what may
/// travel by e-mail.
///
/// It works on log entries (CSV records), not physical lines: a name holding a line break,
/// a `;` or quotes is one field and is masked whole. An entry that is not of six fields is
/// not shown at all.
pub fn mask_log(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for mut f in atmp_integrator::split_records(text) {
        if f.len() == 6 {
            f[2] = mask_agent(&f[2]);
            f[3] = mask_values(&f[3]);
            f[4] = mask_values(&f[4]);
            f[5] = mask_values(&f[5]);
            for (i, x) in f.iter().enumerate() {
                if i > 0 {
                    out.push(';');
                }
                atmp_integrator::push_field(&mut out, &mask_nirs(x));
            }
        } else {
            out.push_str("[entrée du journal masquée]");
        }
        out.push('\n');
    }
    out
}

/// An e-mail address as entered (web, command line): trimmed, checked, or refused in
/// French. No white space or control character is admitted (a CR/LF would forge headers).
pub fn parse_email(s: &str) -> Result<String, String> {
    let t = s.trim();
    if t.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(format!(
            "adresse électronique invalide « {} » : espaces et caractères de contrôle interdits",
            t.escape_debug()
        ));
    }
    t.parse::<lettre::Address>()
        .map(|a| a.to_string())
        .map_err(|_| {
            format!("adresse électronique invalide « {t} » (forme attendue : nom@domaine.fr)")
        })
}

fn build_message(shared: &Shared, m: &Mail) -> Result<Message, String> {
    let from: Mailbox = shared
        .config
        .mail_from
        .parse()
        .map_err(|e| format!("expéditeur invalide : {e}"))?;
    let to: Mailbox = m
        .recipient
        .parse()
        .map_err(|e| format!("destinataire invalide : {e}"))?;
    // One Message-ID per queued mail: a mail sent again after a crash (its sending instance
    // died before recording it) is recognisably the same message.
    let builder = Message::builder()
        .from(from)
        .to(to)
        .subject(&m.subject)
        .message_id(Some(format!(
            "<atmp-{}-{}@atmp.invalid>",
            m.import_id, m.id
        )));
    let text = SinglePart::builder()
        .header(ContentType::TEXT_PLAIN)
        .body(m.body.clone());
    if m.attachments.is_empty() {
        return builder.singlepart(text).map_err(|e| e.to_string());
    }
    let mut mp = MultiPart::mixed().singlepart(text);
    for (name, path) in &m.attachments {
        let mut raw = String::new();
        shared
            .files
            .open(path)
            .map_err(|e| e.to_string())
            .and_then(|mut f| {
                std::io::Read::read_to_string(&mut f, &mut raw)
                    .map_err(|e| atmp_flux::io_error_fr(&e))
            })
            .map_err(|e| format!("journal illisible : {e}"))?;
        let ct = ContentType::parse("text/csv; charset=utf-8").expect("content type");
        mp = mp.singlepart(Attachment::new(name.clone()).body(mask_log(&raw), ct));
    }
    builder.multipart(mp).map_err(|e| e.to_string())
}

/// Sends one plain-text mail at once, outside the outbox (a password link: it is worth
/// nothing after 30 minutes, so it is not retried). Never holds personal data of agents.
pub async fn send_now(
    shared: &Shared,
    to: &str,
    subject: &str,
    body: String,
) -> Result<(), String> {
    let Some(url) = shared.config.smtp_url.clone() else {
        return Err("aucun serveur SMTP configuré".into());
    };
    let from: Mailbox = shared
        .config
        .mail_from
        .parse()
        .map_err(|e| format!("expéditeur invalide : {e}"))?;
    let to: Mailbox = to
        .parse()
        .map_err(|e| format!("destinataire invalide : {e}"))?;
    let msg = Message::builder()
        .from(from)
        .to(to)
        .subject(subject)
        .singlepart(
            SinglePart::builder()
                .header(ContentType::TEXT_PLAIN)
                .body(body),
        )
        .map_err(|e| e.to_string())?;
    let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(&url)
        .map_err(|e| e.to_string())?
        .timeout(Some(Duration::from_secs(30)))
        .build();
    transport
        .send(msg)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Sends the queued mails, forever. Without an SMTP address, mails stay queued.
pub async fn run(shared: Arc<Shared>) {
    let Some(url) = shared.config.smtp_url.clone() else {
        tracing::info!("no SMTP server configured: mails stay queued");
        return;
    };
    let transport = match AsyncSmtpTransport::<Tokio1Executor>::from_url(&url) {
        Ok(b) => b.timeout(Some(Duration::from_secs(30))).build(),
        Err(e) => {
            tracing::error!(error = %e, "invalid SMTP address: mails stay queued");
            return;
        }
    };
    let retry = shared.mail_retry;
    loop {
        let s2 = shared.clone();
        let due = tokio::task::spawn_blocking(move || {
            // Ten at a time, each SMTP exchange within 30 s: well inside the lease.
            let until = (chrono::Local::now() + chrono::Duration::minutes(MAIL_LEASE_MINUTES))
                .format("%Y-%m-%dT%H:%M:%S")
                .to_string();
            s2.with_store(|s| s.claim_mails(&atmp_store::now(), &until, 10))
        })
        .await;
        let due = match due {
            Ok(Ok(d)) => d,
            _ => vec![],
        };
        for m in due {
            // The attachments are read from the file store (the base, on PostgreSQL).
            let (s2, m2) = (shared.clone(), m.clone());
            let built = tokio::task::spawn_blocking(move || build_message(&s2, &m2))
                .await
                .unwrap_or_else(|e| Err(format!("préparation du message interrompue : {e}")));
            let outcome = match built {
                Ok(msg) => transport
                    .send(msg)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e),
            };
            let s2 = shared.clone();
            let attempts = m.attempts + 1;
            let _ = tokio::task::spawn_blocking(move || {
                s2.with_store(|s| match &outcome {
                    Ok(()) => {
                        tracing::info!(mail = m.id, import = m.import_id, "mail sent");
                        s.mail_sent(m.id)
                    }
                    Err(e) => {
                        let next = (attempts < MAX_ATTEMPTS).then(|| {
                            let delay = retry * 2u32.saturating_pow(attempts as u32 - 1);
                            (chrono::Local::now()
                                + chrono::Duration::from_std(delay).unwrap_or_default())
                            .format("%Y-%m-%dT%H:%M:%S")
                            .to_string()
                        });
                        tracing::warn!(mail = m.id, attempts, error = %e, "mail not sent");
                        s.mail_failed(m.id, e, next.as_deref())
                    }
                })
            })
            .await;
        }
        tokio::select! {
            _ = shared.mail_wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(1).max(retry.min(Duration::from_secs(30)))) => {}
        }
    }
}

/// How long a claimed mail is this instance's to send (see `MailStore::claim_mails`).
const MAIL_LEASE_MINUTES: i64 = 10;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn name() -> impl Strategy<Value = String> {
        // Distinctive ("Xq…"), so that no fixed word of a log line can match by chance.
        "Xq[A-ZÉÈa-zéèï]{2,12}( Xq[a-z]{2,8})?"
    }

    proptest! {
        /// Whatever the identities in a log line, its masked form holds no NIR, no name
        /// and no birth day.
        #[test]
        fn masked_lines_hold_no_identity(
            nom in name(), patro in proptest::option::of(name()), prenom in name(),
            (jour, mois) in (1u32..29, 1u32..13), annee in 1940u32..2005,
            nir_body in "[12][0-9]{12}", key in 1u32..98, level in "INFO|WARN|ERROR",
            valeur in "zq[a-z]{3,10}",
        ) {
            let nir = format!("{nir_body}{key:02}");
            let patro_s = patro.as_ref().map(|p| format!(" ({p})")).unwrap_or_default();
            let ident = format!("{nom}{patro_s} {prenom} - {jour:02}/{mois:02}/{annee} - {nir}");
            let line = format!(
                "01/01/2020 10:00:00;{level};Agent : {ident};Événement : AS du 02/01/2020;;\
                 Les données de l'agent dans la base [{ident}] ne correspondent pas ; valeur « {valeur} » ; NIR {nir}"
            );
            let m = mask_log(&line);
            prop_assert!(!m.contains(&nir), "{}", m);
            prop_assert!(!m.contains(&nom), "{}", m);
            prop_assert!(!m.contains(&prenom), "{}", m);
            if let Some(p) = &patro { prop_assert!(!m.contains(p.as_str()), "{}", m); }
            let dob = format!("{jour:02}/{mois:02}/{annee}");
            prop_assert!(!m.contains(&dob), "{}", m);
            prop_assert!(!m.contains(&valeur), "{}", m);
            let kept = format!(";{level};");
            prop_assert!(m.contains(&kept), "{}", m);
        }
    }

    #[test]
    fn a_name_with_a_line_break_or_quotes_is_masked_whole() {
        let mut log = String::new();
        for name in ["DUPONT\nJEAN-PIERRE", "LE;GOFF \"YVES\"", "MARTIN\r\nANNE"] {
            let mut agent = String::new();
            atmp_integrator::push_field(
                &mut agent,
                &format!("Agent : {name} - 28/04/1978 - 178069912345675"),
            );
            log.push_str(&format!(
                "01/01/2020 10:00:00;ERROR;{agent};;;Les données de l'agent sont rejetées.\n"
            ));
        }
        let m = mask_log(&log);
        for leak in [
            "DUPONT",
            "JEAN",
            "PIERRE",
            "GOFF",
            "YVES",
            "MARTIN",
            "ANNE",
            "28/04",
            "178069912345675",
        ] {
            assert!(!m.contains(leak), "{leak} in {m}");
        }
        assert_eq!(m.lines().count(), 3, "{m}");
        assert!(
            m.contains("Agent : D. J. - **/**/1978 - 1**************"),
            "{m}"
        );
    }

    #[test]
    fn file_names_and_addresses() {
        assert_eq!(mask_file_name("DUPONT_Jean_AT.xml"), "D***.xml");
        assert_eq!(mask_file_name("x.XML.GZ"), "x***.XML.GZ");
        assert_eq!(mask_file_name(""), "***");
        assert!(parse_email("agent@mairie.fr").is_ok());
        assert!(parse_email(" agent@mairie.fr ").is_ok());
        for bad in [
            "agent@mairie.fr\r\nBcc: x@y.fr",
            "pas une adresse",
            "a b@c.fr",
            "@c.fr",
            "a@",
        ] {
            assert!(parse_email(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn masks_nir_names_and_values() {
        let line = "11/01/2014 22:30:48;ERROR;Agent : DUPONT (MARTIN) J. Louis - 28/04/1978 - 178069912345675;;;Les données de l'agent dans la base [DUPONT (MARTIN) JEAN LOUIS - 22/06/1978 - 178069912345675] ne correspondent pas à celles du fichier à traiter [DUPONT (MARTIN) J. Louis - 28/04/1978 - 178069912345675] (prénom, date de naissance). Les données de l'agent sont rejetées.";
        let m = mask_log(line);
        assert!(!m.contains("178069912345675"), "{m}");
        assert!(
            !m.contains("DUPONT") && !m.contains("Louis") && !m.contains("28/04"),
            "{m}"
        );
        assert!(
            m.contains("Agent : D. (M.) J. L. - **/**/1978 - 1**************"),
            "{m}"
        );
        assert!(m.contains("(prénom, date de naissance)"), "{m}");
        let warn = "01/01/2020 10:00:00;WARN;Agent : A B - 01/01/1980 - 280012A00000000;;;Valeur différente ignorée pour adresseLigne1 : base « 1 rue X », fichier « 2 rue Y »";
        let m = mask_log(warn);
        assert!(!m.contains("rue") && m.contains("adresseLigne1"), "{m}");
        assert!(m.contains("2**************"), "{m}");
        // A SIRET (14 digits) and ids are left alone.
        assert_eq!(
            mask_nirs("28219002400012 agentid=12"),
            "28219002400012 agentid=12"
        );
    }
}
