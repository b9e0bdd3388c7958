//! Stage two: the rules of §5, applied record by record inside the file's transaction.

use std::collections::HashMap;

use atmp_flux::spec::{self, RecordKind};
use atmp_flux::{BlockStart, Header, Record, Value};
use atmp_model::{normalize_name, same_name, Siret};
use atmp_store::{
    now, Autorisation, Cell, FileTx, FindId, Identite, ImportRow, InsertId, NewRejet, RejetMaj,
    RejetRaison, Store, Table,
};

use crate::counts::{Counts, Outcome};
use crate::log::{Level, LogFiles, Logs};
use crate::{import_logs, opening_line, success_label, Failure, ImportOptions, IntegratorError};
use atmp_flux::Piece;

type Done = (ImportRow, Vec<LogFiles>, Counts, i64);

/// The table that stores a kind of record.
pub fn table(kind: RecordKind) -> Table {
    match kind {
        RecordKind::Service => Table::Service,
        RecordKind::Agent => Table::Agent,
        RecordKind::Evenement => Table::Evenement,
        RecordKind::Arret => Table::Arret,
        RecordKind::Certificat => Table::Certificat,
        RecordKind::Lesion => Table::Lesion,
        RecordKind::Consequence => Table::Consequence,
        RecordKind::Deces => Table::Deces,
        RecordKind::Entete | RecordKind::Group => unreachable!("not stored"),
    }
}

/// The identity keys of §5.1: the primary key columns, then the fallback ones.
fn keys(kind: RecordKind) -> (&'static [&'static str], Option<&'static [&'static str]>) {
    match kind {
        RecordKind::Service => (&["code"], None),
        RecordKind::Evenement => (&["identifiant"], Some(&["type", "date"])),
        RecordKind::Arret => (&["date_debut"], None),
        RecordKind::Certificat => (&["identifiant"], Some(&["type", "date"])),
        RecordKind::Lesion => (&["siege", "nature", "lateralite"], None),
        RecordKind::Consequence => (&["identifiant"], Some(&["type", "date_decision"])),
        RecordKind::Deces => (&[], None),
        _ => (&[], None),
    }
}

/// The French noun of a record kind, for rejection messages.
fn noun(kind: RecordKind) -> &'static str {
    match kind {
        RecordKind::Service => "du service",
        RecordKind::Agent => "de l'agent",
        RecordKind::Evenement => "de l'événement",
        RecordKind::Arret => "de l'arrêt",
        RecordKind::Certificat => "du certificat",
        RecordKind::Lesion => "de la lésion",
        RecordKind::Consequence => "de la conséquence médicale",
        RecordKind::Deces => "du décès",
        _ => "de l'élément",
    }
}

/// Prepared statements and columns of one stored kind.
struct KindPlan {
    cols: &'static [&'static str],
    primary: Vec<usize>,
    fallback: Option<Vec<usize>>,
    /// Lookup by primary key (services, which have no dossier).
    find_primary: FindId,
    insert: InsertId,
}

/// A record of the base under the parent being processed: read with the agent's dossier, or
/// inserted from this file. §5.1 keys are matched against these in memory.
struct Sibling {
    kind: RecordKind,
    id: i64,
    cells: Vec<Cell>,
}

/// An agent's events and their children as they are in the base, read in one go per kind
/// when the agent is already present (a new agent has none).
#[derive(Default)]
struct Dossier {
    events: Vec<Sibling>,
    children: HashMap<i64, Vec<Sibling>>,
}

impl Dossier {
    /// The base rows under a record just matched (empty for a new one).
    fn take_children(&mut self, parent: i64) -> Vec<Sibling> {
        self.children.remove(&parent).unwrap_or_default()
    }
}

/// What the reader stage computes for each record so that the rules stage does not: its
/// cells in storage order (valid records only) and its log label (agent, event or element).
pub(crate) struct Prepared {
    pub cells: Vec<Cell>,
    pub label: String,
    pub children: Vec<Prepared>,
}

impl Prepared {
    pub(crate) fn of(rec: &Record) -> Prepared {
        let kind = rec.kind();
        let cells = if rec.is_valid() && kind.index() < 8 {
            spec::columns_of(kind)
                .iter()
                .map(|c| rec.get(c).map(to_cell).unwrap_or(Cell::Null))
                .collect()
        } else {
            Vec::new()
        };
        let label = match kind {
            RecordKind::Agent => agent_label(rec),
            RecordKind::Evenement => event_label(rec),
            _ => element_label(rec),
        };
        Prepared {
            cells,
            label,
            children: rec.children.iter().map(Prepared::of).collect(),
        }
    }
}

enum BlockState {
    Active {
        id: i64,
    },
    /// Every record of the block is rejected, for this reason, with this log line.
    Rejected {
        raison: RejetRaison,
        message: String,
    },
}

/// The level of a record kind, as the quarantine names it (`niveau`).
pub(crate) fn niveau(kind: RecordKind) -> &'static str {
    match kind {
        RecordKind::Service => "service",
        RecordKind::Agent => "agent",
        RecordKind::Evenement => "evenement",
        RecordKind::Arret => "arret",
        RecordKind::Certificat => "certificat",
        RecordKind::Lesion => "lesion",
        RecordKind::Consequence => "consequence",
        RecordKind::Deces => "deces",
        _ => "inconnu",
    }
}

/// A record's identity across files, under its parent's: `a:<nir>`, `s:<code>`,
/// `a:<nir>/evenement:<identifiant>`, … (the §5.1 primary key, or the fallback one when the
/// primary is missing). A later file that integrates a record of the same key closes its
/// open rejection; a replay's rejections find the originals they repeat by it.
fn record_cle(rec: &Record, parent: &str) -> String {
    let kind = rec.kind();
    match kind {
        RecordKind::Agent => format!("a:{}", rec.raw("nir").trim()),
        RecordKind::Service => format!("s:{}", rec.raw("code").trim()),
        _ => {
            let (p, f) = keys(kind);
            let vals = |ks: &[&str]| {
                ks.iter()
                    .map(|k| rec.raw(k).trim().to_string())
                    .collect::<Vec<_>>()
            };
            let pv = vals(p);
            let v = match f {
                Some(f) if pv.iter().any(String::is_empty) => vals(f),
                _ => pv,
            };
            format!("{parent}/{}:{}", niveau(kind), v.join("|"))
        }
    }
}

/// The keys of every record under `rec` (whose key is `cle`).
fn contenu(rec: &Record, cle: &str, out: &mut Vec<String>) {
    for c in &rec.children {
        let k = record_cle(c, cle);
        contenu(c, &k, out);
        out.push(k);
    }
}

/// The records above one being processed: its top-level record (agent or service) and, for
/// an event's child, the event. A record's key and its quarantine's fragment come from them.
#[derive(Clone, Copy)]
struct Above<'r> {
    top: &'r Record,
    event: Option<&'r Record>,
}

impl Above<'_> {
    /// The key of `rec`, a record at or under these.
    fn cle(&self, rec: &Record) -> String {
        if std::ptr::eq(self.top, rec) {
            return record_cle(rec, "");
        }
        let top = record_cle(self.top, "");
        match self.event {
            Some(e) if !std::ptr::eq(e, rec) => {
                let e = record_cle(e, &top);
                record_cle(rec, &e)
            }
            _ => record_cle(rec, &top),
        }
    }
}

/// Rejections kept per statement.
const REJETS_BATCH: usize = 256;

/// A replay ("rejeu") of an import's open rejections: the rows replayed. Their records are
/// re-integrated under the rules of §5; what is integrated closes its row, what fails again
/// leaves it open with its new reason.
pub struct Replay {
    /// The import the rejections came from.
    pub of: i64,
    pub originals: Vec<atmp_store::Rejet>,
}

/// The kinds under an agent, in the order of the dossier query's parts.
const DOSSIER: [RecordKind; 6] = [
    RecordKind::Evenement,
    RecordKind::Deces,
    RecordKind::Arret,
    RecordKind::Certificat,
    RecordKind::Lesion,
    RecordKind::Consequence,
];

struct Run<'a, 'r> {
    tx: Box<dyn FileTx + 'a>,
    logs: Logs,
    header: Header,
    account: String,
    /// By [`RecordKind::index`] (the agent's slot is unused).
    plans: Vec<Option<KindPlan>>,
    agent_by_nir: FindId,
    agent_by_identity: FindId,
    agent_insert: InsertId,
    service_by_code: FindId,
    /// Everything under an agent, in one statement.
    dossier: FindId,
    counts: Counts,
    block: Option<BlockState>,
    cdg: Option<String>,
    /// The current block's SIRET as written.
    block_siret: String,
    /// The open rejections of the current block's collectivité, by key: (id, keys under it).
    open: HashMap<String, Vec<(i64, Vec<String>)>>,
    /// While `open` is not empty: the keys integrated under the current top-level record.
    integrated: Vec<String>,
    /// Open rejections this file integrated.
    closing: Vec<i64>,
    /// Rejections to keep, sent in batches.
    rejets: Vec<NewRejet>,
    /// In a replay: the rejections of the replayed records, reconciled with the originals
    /// before commit instead of being kept as new rows.
    replay: Option<&'r Replay>,
    replay_rejets: Vec<NewRejet>,
}

pub(crate) fn to_cell(v: &Value) -> Cell {
    match v {
        Value::Text(s) | Value::Invalid(s) => Cell::Text(s.clone()),
        Value::Date(d) => Cell::Text(d.iso()),
        Value::Time(t) => Cell::Text(t.to_string()),
        Value::DateTime(d) => Cell::Text(d.iso()),
        Value::Bool(b) => Cell::Int(*b as i64),
        Value::Num(n) => Cell::Real(*n),
        Value::Int(n) => Cell::Int(*n),
    }
}

/// A stored value shown the way the file's value of the same field is shown.
fn display_cell(c: &Cell, like: &Value) -> String {
    match (c, like) {
        (Cell::Null, _) => String::new(),
        (Cell::Text(s), Value::Date(_)) => atmp_model::Date::parse(s)
            .map(|d| d.fr())
            .unwrap_or_else(|| s.clone()),
        (Cell::Int(n), Value::Bool(_)) => (if *n != 0 { "true" } else { "false" }).to_string(),
        (Cell::Int(n), _) => n.to_string(),
        (Cell::Real(f), _) => f.to_string(),
        (Cell::Text(s), _) => s.clone(),
    }
}

fn agent_label(r: &Record) -> String {
    let patro = r
        .text("nom_patronymique")
        .map(|p| format!(" ({p})"))
        .unwrap_or_default();
    format!(
        "Agent : {}{patro} {} - {} - {}",
        r.raw("nom_usuel"),
        r.raw("prenom"),
        r.raw("date_naissance"),
        r.raw("nir")
    )
}

fn event_label(r: &Record) -> String {
    format!("Événement : {} du {}", r.raw("type"), r.raw("date"))
}

fn element_label(r: &Record) -> String {
    match r.kind() {
        RecordKind::Arret => match r.get("date_fin") {
            Some(f) => format!("Arrêt : du {} au {f}", r.raw("date_debut")),
            None => format!("Arrêt : du {}", r.raw("date_debut")),
        },
        RecordKind::Certificat => format!("Certificat : {} du {}", r.raw("type"), r.raw("date")),
        RecordKind::Lesion => format!(
            "Lésion (siège/nature) : {} / {}",
            r.raw("siege"),
            r.raw("nature")
        ),
        RecordKind::Consequence => format!(
            "Conséquence médicale : {} du {}",
            r.raw("type"),
            r.raw("date_decision")
        ),
        RecordKind::Deces => format!("Décès : {}", r.raw("date")),
        RecordKind::Service => format!("Service : {}", r.raw("code")),
        _ => String::new(),
    }
}

fn rejection(r: &Record) -> String {
    let problems: Vec<&str> = r.errors.iter().map(|e| e.message.as_str()).collect();
    format!(
        "Les données {} sont rejetées (ligne {}) : {}",
        noun(r.kind()),
        r.line,
        problems.join(" ; ")
    )
}

/// Integrates the records sent by the reader stage in one transaction.
#[allow(clippy::too_many_arguments)]
pub(crate) fn integrate(
    store: &mut dyn Store,
    rx: &mut atmp_flux::Pieces<'_, Prepared>,
    name: &str,
    base_row: &ImportRow,
    opts: &ImportOptions<'_>,
    prefix: String,
    progress: &dyn Fn(),
    sha256: &dyn Fn() -> String,
) -> Result<Result<Done, Failure>, IntegratorError> {
    let fail = |reason: String, header: Option<Header>| Failure {
        reason,
        header,
        blocks: vec![],
        cdg: None,
    };
    let header = match rx.next_piece() {
        Piece::Header(Ok(h)) => h,
        Piece::Header(Err(e)) | Piece::Fatal(e) => return Ok(Err(fail(flux_reason(&e), None))),
        _ => return Ok(Err(fail("le fichier ne peut pas être lu".into(), None))),
    };
    let account = opts
        .emetteur
        .clone()
        .unwrap_or_else(|| header.emetteur.clone());
    if account != header.emetteur {
        let reason = format!(
            "l'émetteur de l'en-tête ({}) n'est pas le compte qui a transmis le fichier ({account})",
            header.emetteur
        );
        return Ok(Err(fail(reason, Some(header))));
    }
    if store.emetteur(&account)?.is_none() {
        return Ok(Err(fail(
            format!("l'émetteur « {account} » est inconnu de la plate-forme"),
            Some(header),
        )));
    }
    let row = ImportRow {
        emetteur: Some(header.emetteur.clone()),
        type_fichier: Some(header.type_fichier.code().into()),
        mode: Some(header.mode.code().into()),
        date_creation: Some(header.date_creation.iso()),
        cdg_siret: header.cdg.as_ref().map(|c| c.as_str().to_string()),
        ..base_row.clone()
    };
    let mut tx = store.begin_file(&row)?;
    let mut plans: Vec<Option<KindPlan>> = (0..8).map(|_| None).collect();
    for kind in [
        RecordKind::Service,
        RecordKind::Evenement,
        RecordKind::Arret,
        RecordKind::Certificat,
        RecordKind::Lesion,
        RecordKind::Consequence,
        RecordKind::Deces,
    ] {
        let cols = spec::columns_of(kind);
        let (p, f) = keys(kind);
        let idx = |ks: &[&str]| {
            ks.iter()
                .map(|k| cols.iter().position(|c| c == k).expect("key is a column"))
                .collect::<Vec<_>>()
        };
        let t = table(kind);
        plans[kind.index()] = Some(KindPlan {
            primary: idx(p),
            fallback: f.map(idx),
            find_primary: tx.prepare_find(t, p, cols)?,
            insert: tx.prepare_insert(t, cols)?,
            cols,
        });
    }
    let mut agent_cols = spec::columns_of(RecordKind::Agent).to_vec();
    let agent_find_cols = {
        let mut c = agent_cols.clone();
        c.push("service_id");
        c
    };
    let agent_by_nir = tx.prepare_find(Table::Agent, &["nir"], &agent_find_cols)?;
    let agent_by_identity = tx.prepare_find(
        Table::Agent,
        &["nom_norm", "prenom_norm", "date_naissance"],
        &["nir", "nom_usuel", "prenom", "date_naissance"],
    )?;
    agent_cols.extend(["service_id", "nom_norm", "prenom_norm"]);
    let agent_insert = tx.prepare_insert(Table::Agent, &agent_cols)?;
    let service_by_code = tx.prepare_find(Table::Service, &["code"], &["libelle"])?;
    let parts: Vec<(Table, &'static [&'static str])> = DOSSIER
        .iter()
        .map(|k| (table(*k), spec::columns_of(*k)))
        .collect();
    let dossier = tx.prepare_dossier(&parts)?;

    let import_id = tx.import_id();
    let mut logs = Logs::new(&opts.logs_dir, prefix)?;
    let cdg = header.cdg.as_ref().map(|c| c.as_str().to_string());
    if let Some(c) = &cdg {
        logs.open_global(c)?;
    }
    logs.file_line(Level::Info, &opening_line(name, &header))?;
    if opts.dry_run {
        logs.file_line(Level::Info, crate::ESSAI)?;
    }
    if let Some(r) = opts.replay {
        logs.file_line(
            Level::Info,
            &format!(
                "Rejeu de {} rejet(s) de l'import n° {} : les enregistrements sont intégrés selon les mêmes règles, rien de ce qui est déjà en base n'est modifié",
                r.originals.len(),
                r.of
            ),
        )?;
    }
    let mut run = Run {
        tx,
        logs,
        header,
        account,
        plans,
        agent_by_nir,
        agent_by_identity,
        agent_insert,
        service_by_code,
        dossier,
        counts: Counts::default(),
        block: None,
        cdg,
        block_siret: String::new(),
        open: HashMap::new(),
        integrated: Vec::new(),
        closing: Vec::new(),
        rejets: Vec::new(),
        replay: opts.replay,
        replay_rejets: Vec::new(),
    };
    let mut n = 0u64;
    // Records ahead whose agents' lookups were announced to the store.
    let mut hinted = 0usize;
    loop {
        match rx.next_piece() {
            Piece::Header(_) => {}
            Piece::Block(b) => run.block_start(&b)?,
            Piece::Record(rec) => {
                let (rec, prep) = *rec;
                if hinted == 0 {
                    hinted = run.hint(&rec, rx.ahead())?;
                } else {
                    hinted -= 1;
                }
                run.record(&rec, prep)?;
                n += 1;
                if n.is_multiple_of(1024) {
                    progress();
                }
            }
            Piece::Stray { line, .. } => {
                if matches!(run.block, Some(BlockState::Active { .. })) {
                    run.logs.line(
                        Level::Error,
                        "",
                        "",
                        "",
                        &format!(
                            "Texte inattendu dans le bloc <collectivite> (ligne {line}), ignoré"
                        ),
                    )?;
                }
            }
            Piece::BlockEnd => {
                run.block = None;
                run.open.clear();
                run.logs.leave_block();
            }
            Piece::End { agents, evenements } => {
                if let Err(e) = run.header.check_totals(agents, evenements) {
                    return Ok(Err(run.failure(flux_reason(&e))));
                }
                break;
            }
            Piece::Fatal(e) => return Ok(Err(run.failure(flux_reason(&e)))),
        }
    }
    progress();
    run.finish_rejets()?;
    // Close the logs, then commit, then publish the logs: a log never describes data that
    // was not committed.
    let errors = run.logs.errors;
    let warnings = run.logs.warnings;
    let label = success_label(errors);
    run.logs.close(&run.counts, success_label)?;
    let finished = ImportRow {
        sha256: if row.sha256.is_empty() {
            sha256()
        } else {
            row.sha256.clone()
        },
        finished_at: Some(now()),
        result: atmp_store::ImportResult::Reussi,
        label: label.clone(),
        errors,
        warnings,
        counts: (&run.counts).into(),
        ..row
    };
    let Run {
        mut tx,
        logs,
        counts,
        ..
    } = run;
    // The final paths are known before the rename; they are recorded with the import. In a
    // base that keeps files, the logs go into it inside this very transaction.
    let mut files = logs.files(success_label, errors);
    let in_base = crate::logs_in_base(opts).is_some();
    if in_base {
        logs.keep(&mut files, |p| {
            tx.store_file(p)?.ok_or_else(|| {
                atmp_store::StoreError::Invalid("cette base ne conserve pas les journaux".into())
            })
        })?;
    }
    if opts.dry_run {
        // Everything was checked against the base; dropping the transaction undoes it.
        drop(tx);
        crate::settle_logs(logs, false, opts)?;
        return Ok(Ok((finished, files, counts, 0)));
    }
    tx.commit(&finished, &import_logs(&files))?;
    crate::settle_logs(logs, in_base, opts)?;
    Ok(Ok((finished, files, counts, import_id)))
}

fn flux_reason(e: &atmp_flux::FluxError) -> String {
    if e.line > 0 {
        format!("{} (ligne {}, colonne {})", e.message, e.line, e.column)
    } else {
        e.message.clone()
    }
}

impl Run<'_, '_> {
    fn failure(self, reason: String) -> Failure {
        let blocks = self.logs.block_sirets();
        let cdg = self.cdg.clone();
        let header = Some(self.header.clone());
        self.logs.discard();
        // Dropping `tx` rolls the file back.
        drop(self.tx);
        Failure {
            reason,
            header,
            blocks,
            cdg,
        }
    }

    fn add(&mut self, kind: RecordKind, outcome: Outcome, n: u64) {
        self.counts.add(kind, outcome, n);
        if let Some(c) = self.logs.block_counts() {
            c.add(kind, outcome, n);
        }
    }

    fn reject_all(&mut self, rec: &Record) {
        let mut c = [0u64; 8];
        rec.count_all(&mut c);
        for k in RecordKind::COUNTED {
            if c[k.index()] > 0 {
                self.add(k, Outcome::Rejected, c[k.index()]);
            }
        }
    }

    /// §5.3: the collectivité must exist, the sender be authorised, and, in a grouped file,
    /// the collectivité be attached to the file's CDG; the first failing reason rejects the block.
    fn block_start(&mut self, b: &BlockStart) -> Result<(), IntegratorError> {
        let siret_text = b.siret.clone();
        self.logs.enter_block(&siret_text)?;
        let nom = b
            .nom
            .as_deref()
            .map(|n| format!(" ({n})"))
            .unwrap_or_default();
        self.logs.line(
            Level::Info,
            "",
            "",
            "",
            &format!("Début du traitement de la collectivité {siret_text}{nom}"),
        )?;
        self.block_siret = siret_text.clone();
        self.open.clear();
        let reason = match Siret::parse(&b.siret) {
            Err(e) => Some((RejetRaison::CollectiviteInconnue, format!(
                "Le SIRET de la collectivité « {} » est invalide ({e}), ligne {}. Les données de ce bloc sont rejetées.",
                b.siret, b.line
            ))),
            Ok(siret) => match self.tx.collectivite(&siret)? {
                None => Some((RejetRaison::CollectiviteInconnue, format!(
                    "La collectivité {siret} n'existe pas dans la base : elle doit d'abord être créée. Les données de ce bloc sont rejetées."
                ))),
                Some(c) => match self.tx.autorisation(&self.account, c.id)? {
                    Some(Autorisation::Accordee) => match &self.cdg {
                        Some(cdg) if c.siret.as_str() != cdg.as_str() && c.cdg_siret.as_ref().map(Siret::as_str) != Some(cdg.as_str()) => Some((RejetRaison::HorsCdg, format!(
                            "La collectivité {siret} n'est pas rattachée au CDG {cdg} du fichier groupé. Les données de ce bloc sont rejetées."
                        ))),
                        _ => {
                            self.block = Some(BlockState::Active { id: c.id });
                            None
                        }
                    },
                    state => {
                        let why = match state {
                            Some(Autorisation::Refusee) => "autorisation refusée",
                            Some(Autorisation::Retiree) => "autorisation retirée",
                            _ => "aucune autorisation enregistrée",
                        };
                        Some((RejetRaison::NonAutorise, format!(
                            "L'émetteur {} n'est pas autorisé à transmettre les données de la collectivité {siret} ({why}). Les données de ce bloc sont rejetées.",
                            self.account
                        )))
                    }
                },
            },
        };
        if let Some((raison, message)) = reason {
            self.logs.line(Level::Error, "", "", "", &message)?;
            self.block = Some(BlockState::Rejected { raison, message });
        } else {
            for issue in b.attribute_issues() {
                self.logs.line(Level::Warn, "", "", "", &issue.message)?;
            }
            for (id, cle, under) in self.tx.open_rejets(&siret_text)? {
                self.open.entry(cle).or_default().push((id, under));
            }
        }
        Ok(())
    }

    /// Announces to the store the NIR lookups of this agent and of the agents ahead in the
    /// same block (one round trip for them all on PostgreSQL); returns how many records
    /// ahead were covered.
    fn hint<'p>(
        &mut self,
        rec: &Record,
        ahead: impl Iterator<Item = &'p Piece<Prepared>>,
    ) -> Result<usize, IntegratorError> {
        let Some(BlockState::Active { id: coll }) = self.block else {
            return Ok(0);
        };
        let nir = |r: &Record| {
            (r.kind() == RecordKind::Agent && r.is_valid())
                .then(|| r.text("nir").map(|n| Cell::Text(n.to_string())))
                .flatten()
        };
        let mut keys: Vec<Cell> = nir(rec).into_iter().collect();
        let mut covered = 0;
        for p in ahead {
            let Piece::Record(next) = p else { break };
            keys.extend(nir(&next.0));
            covered += 1;
        }
        if keys.len() > 1 {
            self.tx.prefetch(self.agent_by_nir, coll, &keys)?;
        }
        Ok(covered)
    }

    fn record(&mut self, rec: &Record, prep: Prepared) -> Result<(), IntegratorError> {
        let coll = match &self.block {
            Some(BlockState::Active { id }) => *id,
            Some(BlockState::Rejected { raison, message }) => {
                let (raison, message) = (*raison, message.clone());
                self.reject_all(rec);
                if matches!(rec.kind(), RecordKind::Agent | RecordKind::Service) {
                    let above = Above {
                        top: rec,
                        event: None,
                    };
                    self.quarantine(rec, above, raison, &message, None)?;
                }
                return Ok(());
            }
            None => {
                self.reject_all(rec);
                return Ok(());
            }
        };
        let above = Above {
            top: rec,
            event: None,
        };
        let r = match rec.kind() {
            RecordKind::Agent => self.agent(rec, prep, coll),
            RecordKind::Service => self.generic(
                rec,
                prep,
                coll,
                "",
                "",
                None,
                &mut Dossier::default(),
                above,
            ),
            _ => {
                // An element that is no record of the format.
                let msg = rejection(rec);
                self.logs.line(Level::Error, "", "", "", &msg)?;
                Ok(())
            }
        };
        r?;
        self.settle_open();
        Ok(())
    }

    /// Keeps a rejected record in quarantine (or, in a replay, for the reconciliation).
    fn quarantine(
        &mut self,
        rec: &Record,
        above: Above<'_>,
        raison: RejetRaison,
        message: &str,
        identities: Option<(Identite, Identite, Vec<String>)>,
    ) -> Result<(), IntegratorError> {
        let cle = above.cle(rec);
        let mut under = Vec::new();
        contenu(rec, &cle, &mut under);
        let (base, fichier, differences) = match identities {
            Some((b, f, d)) => (Some(b), Some(f), d),
            None => (None, None, Vec::new()),
        };
        let row = NewRejet {
            collectivite_siret: self.block_siret.clone(),
            niveau: niveau(rec.kind()).into(),
            raison,
            message: message.to_string(),
            chemin: rec.path.clone(),
            ligne: rec.line,
            racine: above.top.path.clone(),
            source_xml: above.top.fragment.clone(),
            debut: rec.span.0,
            fin: rec.span.1,
            cle,
            contenu: under,
            base,
            fichier,
            differences,
        };
        if self.replay.is_some() {
            self.replay_rejets.push(row);
        } else {
            self.rejets.push(row);
            if self.rejets.len() >= REJETS_BATCH {
                let rows = std::mem::take(&mut self.rejets);
                let id = self.tx.import_id();
                self.tx.add_rejets(id, &rows)?;
            }
        }
        Ok(())
    }

    /// Notes an integrated record (added or already present) while open rejections wait.
    fn integrated(&mut self, above: Above<'_>, rec: &Record) {
        if !self.open.is_empty() {
            self.integrated.push(above.cle(rec));
        }
    }

    /// After a top-level record: the open rejections it integrated whole are closed.
    fn settle_open(&mut self) {
        if self.integrated.is_empty() {
            return;
        }
        let done: std::collections::HashSet<String> = self.integrated.drain(..).collect();
        for k in &done {
            if let Some(list) = self.open.get_mut(k) {
                list.retain(|(id, under)| {
                    let whole = under.iter().all(|u| done.contains(u));
                    if whole {
                        self.closing.push(*id);
                    }
                    !whole
                });
                if list.is_empty() {
                    self.open.remove(k);
                }
            }
        }
    }

    /// At the end of the file: the last rejections kept, the integrated ones closed, and in
    /// a replay the originals reconciled with what failed again.
    fn finish_rejets(&mut self) -> Result<(), IntegratorError> {
        let import_id = self.tx.import_id();
        if !self.rejets.is_empty() {
            let rows = std::mem::take(&mut self.rejets);
            self.tx.add_rejets(import_id, &rows)?;
        }
        if let Some(replay) = self.replay {
            // A cle covers another when it is the same or one of its ancestors'.
            let covers =
                |a: &str, b: &str| b == a || (b.starts_with(a) && b[a.len()..].starts_with('/'));
            let mut updates = Vec::new();
            for r in &replay.originals {
                let again = self
                    .replay_rejets
                    .iter()
                    .filter(|x| {
                        x.collectivite_siret == r.new.collectivite_siret
                            && covers(&x.cle, &r.new.cle)
                    })
                    .max_by_key(|x| x.cle.len());
                match again {
                    Some(x) => updates.push(RejetMaj {
                        id: r.id,
                        raison: x.raison,
                        message: x.message.clone(),
                        base: x.base.clone(),
                        fichier: x.fichier.clone(),
                        differences: x.differences.clone(),
                    }),
                    None => self.closing.push(r.id),
                }
            }
            // What fails inside a record that passed now (an event of an agent whose identity
            // was corrected) is a rejection of its own, of the original import.
            let fresh: Vec<NewRejet> = self
                .replay_rejets
                .iter()
                .filter(|x| {
                    !replay.originals.iter().any(|r| {
                        r.new.collectivite_siret == x.collectivite_siret
                            && covers(&x.cle, &r.new.cle)
                    })
                })
                .cloned()
                .collect();
            self.tx.update_rejets(&updates)?;
            if !fresh.is_empty() {
                self.tx.add_rejets(replay.of, &fresh)?;
            }
        }
        if !self.closing.is_empty() {
            self.closing.sort_unstable();
            self.closing.dedup();
            let ids = std::mem::take(&mut self.closing);
            self.tx.close_rejets(&ids)?;
        }
        Ok(())
    }

    /// WARN lines for fields where the base and the file differ (§5.1); the base is kept.
    fn differences(
        &mut self,
        rec: &Record,
        cols: &[&'static str],
        file: &[Cell],
        base: &[Cell],
        skip: &[&str],
        labels: (&str, &str, &str),
    ) -> Result<(), IntegratorError> {
        for (i, col) in cols.iter().enumerate() {
            if file[i] == Cell::Null || skip.contains(col) || file[i] == base[i] {
                continue;
            }
            let value = rec.get(col).expect("non-null cell comes from a value");
            let (xml, _) = spec::column_names(rec.spec, col);
            let msg = format!(
                "Valeur différente ignorée pour {xml} : base « {} », fichier « {} »",
                display_cell(&base[i], value),
                value.display()
            );
            self.logs
                .line(Level::Warn, labels.0, labels.1, labels.2, &msg)?;
        }
        Ok(())
    }

    /// §5.2: the agent and everything under it.
    fn agent(&mut self, rec: &Record, prep: Prepared, coll: i64) -> Result<(), IntegratorError> {
        let Prepared {
            cells: file,
            label,
            children: prep_children,
        } = prep;
        self.logs
            .line(Level::Info, &label, "", "", "Début de traitement")?;
        for w in &rec.warnings {
            self.logs.line(
                Level::Warn,
                &label,
                "",
                "",
                &format!("{} (ligne {})", w.message, w.line),
            )?;
        }
        let above = Above {
            top: rec,
            event: None,
        };
        if !rec.is_valid() {
            let msg = rejection(rec);
            self.logs.line(Level::Error, &label, "", "", &msg)?;
            self.reject_all(rec);
            self.quarantine(rec, above, RejetRaison::Contenu, &msg, None)?;
            return Ok(());
        }
        let nir = rec.text("nir").expect("valid agent has a NIR").to_string();
        let file_identity = || Identite {
            nom_usuel: rec.text("nom_usuel").unwrap_or_default().to_string(),
            prenom: rec.text("prenom").unwrap_or_default().to_string(),
            date_naissance: rec
                .date("date_naissance")
                .map(|d| d.iso())
                .unwrap_or_default(),
            nir: nir.clone(),
        };
        let cols = spec::columns_of(RecordKind::Agent);
        let found = self
            .tx
            .find(self.agent_by_nir, coll, &[Cell::Text(nir.clone())])?;
        let (agent_id, is_new) = match found {
            Some(f) => {
                let get =
                    |c: &str| f.cells[cols.iter().position(|x| *x == c).expect("column")].clone();
                let text = |c: &Cell| c.as_text().unwrap_or_default().to_string();
                let (b_nom, b_prenom, b_dob, b_patro) = (
                    text(&get("nom_usuel")),
                    text(&get("prenom")),
                    text(&get("date_naissance")),
                    get("nom_patronymique"),
                );
                let mut differing = Vec::new();
                let mut champs = Vec::new();
                if !same_name(&b_nom, rec.text("nom_usuel").unwrap_or_default()) {
                    differing.push("nom usuel");
                    champs.push("nomUsuel".to_string());
                }
                if !same_name(&b_prenom, rec.text("prenom").unwrap_or_default()) {
                    differing.push("prénom");
                    champs.push("prenom".to_string());
                }
                if rec.date("date_naissance").map(|d| d.iso()).as_deref() != Some(b_dob.as_str()) {
                    differing.push("date de naissance");
                    champs.push("dateNaissance".to_string());
                }
                if !differing.is_empty() {
                    let base_identity = Identite {
                        nom_usuel: b_nom.clone(),
                        prenom: b_prenom.clone(),
                        date_naissance: b_dob.clone(),
                        nir: nir.clone(),
                    };
                    let patro = b_patro
                        .as_text()
                        .map(|p| format!(" ({p})"))
                        .unwrap_or_default();
                    let dob = atmp_model::Date::parse(&b_dob)
                        .map(|d| d.fr())
                        .unwrap_or(b_dob);
                    let base_id = format!("{b_nom}{patro} {b_prenom} - {dob} - {nir}");
                    let file_id = label.trim_start_matches("Agent : ");
                    let msg = format!(
                        "Les données de l'agent dans la base [{base_id}] ne correspondent pas à celles du fichier à traiter [{file_id}] ({}). Les données de l'agent sont rejetées.",
                        differing.join(", ")
                    );
                    self.logs.line(Level::Error, &label, "", "", &msg)?;
                    self.reject_all(rec);
                    let ids = (base_identity, file_identity(), champs);
                    self.quarantine(rec, above, RejetRaison::Identite, &msg, Some(ids))?;
                    return Ok(());
                }
                self.logs.line(
                    Level::Info,
                    &label,
                    "",
                    "",
                    &format!("Déjà présent dans la base (agentid={}), non modifié", f.id),
                )?;
                self.integrated(above, rec);
                self.add(RecordKind::Agent, Outcome::Existing, 1);
                self.differences(
                    rec,
                    cols,
                    &file,
                    &f.cells[..cols.len()],
                    &["nom_usuel", "prenom"],
                    (&label, "", ""),
                )?;
                if let Some(code) = rec.text("service_code") {
                    let base_code = match f.cells[cols.len()] {
                        Cell::Int(sid) => self.tx.service_code(sid)?,
                        _ => None,
                    };
                    if base_code.as_deref() != Some(code) {
                        let msg = format!(
                            "Valeur différente ignorée pour service : base « {} », fichier « {code} »",
                            base_code.unwrap_or_default()
                        );
                        self.logs.line(Level::Warn, &label, "", "", &msg)?;
                    }
                }
                (f.id, false)
            }
            None => {
                let nom_norm = normalize_name(rec.text("nom_usuel").unwrap_or_default());
                let prenom_norm = normalize_name(rec.text("prenom").unwrap_or_default());
                let dob = rec
                    .date("date_naissance")
                    .expect("valid agent has a birth date")
                    .iso();
                let key = [
                    Cell::Text(nom_norm.clone()),
                    Cell::Text(prenom_norm.clone()),
                    Cell::Text(dob),
                ];
                if let Some(other) = self.tx.find(self.agent_by_identity, coll, &key)? {
                    let text = |i: usize| other.cells[i].as_text().unwrap_or_default().to_string();
                    let other_nir = text(0);
                    let base_identity = Identite {
                        nom_usuel: text(1),
                        prenom: text(2),
                        date_naissance: text(3),
                        nir: other_nir.clone(),
                    };
                    let msg = format!(
                        "Un agent de mêmes nom usuel, prénom et date de naissance existe déjà dans la base avec un autre NIR (base : {other_nir}, fichier : {nir}). Les données de l'agent sont rejetées."
                    );
                    self.logs.line(Level::Error, &label, "", "", &msg)?;
                    self.reject_all(rec);
                    let ids = (base_identity, file_identity(), vec!["nir".to_string()]);
                    self.quarantine(rec, above, RejetRaison::AutreNir, &msg, Some(ids))?;
                    return Ok(());
                }
                let service_id = match rec.text("service_code") {
                    Some(code) => match self.tx.find(
                        self.service_by_code,
                        coll,
                        &[Cell::Text(code.to_string())],
                    )? {
                        Some(s) => Cell::Int(s.id),
                        None => {
                            let msg = format!(
                                "Aucun service en base ne correspond aux critères suivants : code={code}, libellé={}",
                                rec.text("service_libelle").unwrap_or_default()
                            );
                            self.logs.line(
                                Level::Error,
                                &label,
                                "",
                                &format!("Service : {code}"),
                                &msg,
                            )?;
                            Cell::Null
                        }
                    },
                    None => Cell::Null,
                };
                let mut cells = file;
                if let Some(i) = cols.iter().position(|c| *c == "matricule") {
                    if cells[i] == Cell::Null {
                        cells[i] = Cell::Text("X".into());
                    }
                }
                cells.extend([service_id, Cell::Text(nom_norm), Cell::Text(prenom_norm)]);
                let id = self.tx.insert(self.agent_insert, coll, &cells)?;
                self.logs.line(
                    Level::Info,
                    &label,
                    "",
                    "",
                    &format!("Ajout dans la base (agentid={id})"),
                )?;
                self.add(RecordKind::Agent, Outcome::Added, 1);
                self.integrated(above, rec);
                (id, true)
            }
        };
        let mut dossier = if is_new {
            Dossier::default()
        } else {
            self.dossier(agent_id)?
        };
        let mut events = std::mem::take(&mut dossier.events);
        for (ev, p) in rec.children.iter().zip(prep_children) {
            self.generic(
                ev,
                p,
                agent_id,
                &label,
                "",
                Some(&mut events),
                &mut dossier,
                above,
            )?;
        }
        Ok(())
    }

    /// Reads what the base holds under an agent: its events, then each kind of child.
    fn dossier(&mut self, agent_id: i64) -> Result<Dossier, IntegratorError> {
        let mut d = Dossier::default();
        for (part, parent, f) in self.tx.dossier(self.dossier, agent_id)? {
            let kind = DOSSIER[part];
            let s = Sibling {
                kind,
                id: f.id,
                cells: f.cells,
            };
            if kind == RecordKind::Evenement {
                d.events.push(s);
            } else {
                d.children.entry(parent).or_default().push(s);
            }
        }
        Ok(d)
    }

    /// Any record other than the agent: match it by its keys (§5.1) against `siblings` (the
    /// base's rows under the same parent; `None` for services: looked up in the base), add it
    /// or leave it, then its children.
    #[allow(clippy::too_many_arguments)]
    fn generic(
        &mut self,
        rec: &Record,
        prep: Prepared,
        parent: i64,
        agent: &str,
        event: &str,
        siblings: Option<&mut Vec<Sibling>>,
        dossier: &mut Dossier,
        above: Above<'_>,
    ) -> Result<(), IntegratorError> {
        let kind = rec.kind();
        let Prepared {
            cells,
            label,
            children: prep_children,
        } = prep;
        let (ev_label, el_label) = if kind == RecordKind::Evenement {
            (label, String::new())
        } else {
            (event.to_string(), label)
        };
        self.logs.line(
            Level::Info,
            agent,
            &ev_label,
            &el_label,
            "Début de traitement",
        )?;
        for w in &rec.warnings {
            self.logs
                .line(Level::Warn, agent, &ev_label, &el_label, &w.message)?;
        }
        if !rec.is_valid() {
            let msg = rejection(rec);
            self.logs
                .line(Level::Error, agent, &ev_label, &el_label, &msg)?;
            self.reject_all(rec);
            self.quarantine(rec, above, RejetRaison::Contenu, &msg, None)?;
            return Ok(());
        }
        let plan = self.plans[kind.index()]
            .as_ref()
            .expect("every kind but the agent has a plan");
        let cols = plan.cols;
        let same = |idx: &[usize], a: &[Cell], b: &[Cell]| idx.iter().all(|i| a[*i] == b[*i]);
        // Found among the siblings: its index; found in the base (services): its row.
        let mut from_base: Option<(i64, Vec<Cell>)> = None;
        let mut at: Option<usize> = None;
        match &siblings {
            Some(sibs) => {
                let by = |idx: &[usize]| {
                    sibs.iter()
                        .position(|s| s.kind == kind && same(idx, &s.cells, &cells))
                };
                at = by(&plan.primary).or_else(|| plan.fallback.as_deref().and_then(by));
            }
            None => {
                let pk: Vec<Cell> = plan.primary.iter().map(|i| cells[*i].clone()).collect();
                from_base = self
                    .tx
                    .find(plan.find_primary, parent, &pk)?
                    .map(|f| (f.id, f.cells));
            }
        }
        let found: Option<(i64, &[Cell])> = match (at, &siblings, &from_base) {
            (Some(i), Some(sibs), _) => Some((sibs[i].id, &sibs[i].cells)),
            (_, _, Some((id, c))) => Some((*id, c)),
            _ => None,
        };
        let id_name = kind.id_name();
        let (id, mut children) = match found {
            Some((id, base)) => {
                self.logs.line(
                    Level::Info,
                    agent,
                    &ev_label,
                    &el_label,
                    &format!("Déjà présent dans la base ({id_name}={id}), non modifié"),
                )?;
                self.add(kind, Outcome::Existing, 1);
                self.differences(rec, cols, &cells, base, &[], (agent, &ev_label, &el_label))?;
                self.integrated(above, rec);
                (id, dossier.take_children(id))
            }
            None => {
                let insert = plan.insert;
                let id = self.tx.insert(insert, parent, &cells)?;
                self.logs.line(
                    Level::Info,
                    agent,
                    &ev_label,
                    &el_label,
                    &format!("Ajout dans la base ({id_name}={id})"),
                )?;
                self.add(kind, Outcome::Added, 1);
                self.integrated(above, rec);
                if let Some(sibs) = siblings {
                    sibs.push(Sibling { kind, id, cells });
                }
                (id, Vec::new())
            }
        };
        let below = if kind == RecordKind::Evenement {
            Above {
                top: above.top,
                event: Some(rec),
            }
        } else {
            above
        };
        for (c, p) in rec.children.iter().zip(prep_children) {
            self.generic(
                c,
                p,
                id,
                agent,
                &ev_label,
                Some(&mut children),
                dossier,
                below,
            )?;
        }
        // Kept for a later occurrence of the same record in this file.
        if !children.is_empty() {
            dossier.children.insert(id, children);
        }
        Ok(())
    }
}
