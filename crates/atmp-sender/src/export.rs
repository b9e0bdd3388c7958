//! `atmp export`: from the source base to checked flux files (SOURCE.md §2–§3).
//!
//! Each destination's DECLARATION file is written in two passes over local files, never over
//! the source: the blocks are streamed to a private temporary file while the control totals are
//! counted, then the header (which carries the totals) and the blocks are written to the final
//! file under a temporary name, renamed once complete and checked again by the same read stage
//! as `atmp validate`. Memory holds one agent at a time.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use atmp_flux::spec::{self, Field, Kind, RecordKind, RecordSpec};
use atmp_flux::{check_record, Context, Limits, Node, Record};
use atmp_model::{Date, Nomenclature, Nomenclatures, TypeFichier};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::consent::{self, Destination};
use crate::source::{Row, Selection, Source, SourceAgent, SourceCollectivite};
use crate::SenderError;

/// The extraction mode (SOURCE.md §2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ExportMode {
    Complet,
    Differentiel,
}

impl ExportMode {
    pub fn code(&self) -> &'static str {
        match self {
            ExportMode::Complet => "COMPLET",
            ExportMode::Differentiel => "DIFFERENTIEL",
        }
    }
}

/// What to export.
pub struct ExportOptions<'a> {
    pub emetteur: String,
    pub mode: ExportMode,
    pub out: PathBuf,
    /// Différentiel: the end of the window (excluded); default today.
    pub jusqu_au: Option<Date>,
    /// Différentiel: the start of the window for every destination.
    pub depuis: Option<Date>,
    /// Complet: the anteriority limit for every collectivité.
    pub limite_anteriorite: Option<Date>,
    pub gzip: bool,
    /// The moment of the run (`dateCreation`, the file names, the consent day).
    pub now: chrono::NaiveDateTime,
    /// Différentiel without `depuis`: the end of the last window delivered to a destination.
    pub last_fin: &'a dyn Fn(&str) -> Option<Date>,
    /// Which destinations this run is for (None: all).
    pub only: Option<&'a dyn Fn(&str) -> bool>,
}

/// One file written.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Fichier {
    pub path: String,
    pub destination: String,
    pub cdg: bool,
    #[serde(rename = "typeFichier")]
    pub type_fichier: String,
    pub collectivites: Vec<String>,
    pub agents: u64,
    pub evenements: u64,
    pub sha256: String,
    /// Différentiel: the window `[debut, fin)` of this destination.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub debut: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fin: Option<String>,
}

/// A collectivité left out, and why.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Exclue {
    pub siret: String,
    pub raison: &'static str,
}

/// A source row left out of the files (or, in `avertissements`, sent without one of its
/// references), and why.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Ecarte {
    pub table: &'static str,
    pub id: serde_json::Value,
    pub raison: String,
}

/// The report of a run (`atmp export --json`).
#[derive(Clone, Debug, Serialize, Default)]
pub struct Report {
    pub mode: Option<ExportMode>,
    pub debut: Option<String>,
    pub fin: Option<String>,
    pub fichiers: Vec<Fichier>,
    pub exclues: Vec<Exclue>,
    pub ecartes: Vec<Ecarte>,
    pub avertissements: Vec<Ecarte>,
    /// Destinations whose window was already delivered up to `fin`: nothing sent twice.
    pub deja_livrees: Vec<String>,
    /// `rien à transmettre` when a complet run found nothing to send.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Runs one export.
pub fn export(source: &Source, opts: &ExportOptions<'_>) -> Result<Report, SenderError> {
    std::fs::create_dir_all(&opts.out).map_err(|e| {
        SenderError::Io(format!(
            "le dossier de sortie {} ne peut pas être créé : {e}",
            opts.out.display()
        ))
    })?;
    let today = Date::parse(&opts.now.date().format("%Y-%m-%d").to_string()).expect("date");
    let fin = opts.jusqu_au.unwrap_or(today);
    if let (ExportMode::Differentiel, Some(d)) = (opts.mode, opts.depuis) {
        if d >= fin {
            return Err(SenderError::Usage(format!(
                "--depuis ({}) doit précéder --jusqu-au ({})",
                d.iso(),
                fin.iso()
            )));
        }
    }
    source.begin()?;
    let result = export_in(source, opts, today, fin);
    source.end();
    result
}

fn export_in(
    source: &Source,
    opts: &ExportOptions<'_>,
    today: Date,
    fin: Date,
) -> Result<Report, SenderError> {
    let collectivites = source.collectivites()?;
    let autorisations = source.autorisations()?;
    let plan = consent::plan(&collectivites, &autorisations, &today.iso());
    let by_siret: HashMap<&str, &SourceCollectivite> = collectivites
        .iter()
        .map(|c| (c.siret.as_str(), c))
        .collect();
    let mut report = Report {
        mode: Some(opts.mode),
        exclues: plan
            .exclues
            .iter()
            .map(|(s, r)| Exclue {
                siret: s.clone(),
                raison: r.code(),
            })
            .collect(),
        ..Default::default()
    };
    let nomenclatures = Nomenclatures::builtin();
    let mut earliest: Option<Date> = None;
    for dest in &plan.destinations {
        if opts.only.is_some_and(|only| !only(&dest.siret)) {
            continue;
        }
        let window = match opts.mode {
            ExportMode::Complet => None,
            ExportMode::Differentiel => {
                let debut = opts
                    .depuis
                    .or_else(|| (opts.last_fin)(&dest.siret))
                    .unwrap_or_else(|| fin.add_days(-7));
                if debut >= fin {
                    report.deja_livrees.push(dest.siret.clone());
                    continue;
                }
                earliest = Some(earliest.map_or(debut, |e| e.min(debut)));
                Some((debut, fin))
            }
        };
        let mut job = DestinationExport {
            source,
            opts,
            dest,
            by_siret: &by_siret,
            window,
            nomenclatures: &nomenclatures,
            report: &mut report,
        };
        job.run()?;
    }
    if opts.mode == ExportMode::Differentiel {
        report.debut = opts.depuis.or(earliest).map(|d| d.iso());
        report.fin = Some(fin.iso());
    }
    if report.fichiers.is_empty() && opts.mode == ExportMode::Complet {
        report.message = Some("rien à transmettre".into());
    }
    Ok(report)
}

struct DestinationExport<'a, 'o> {
    source: &'a Source,
    opts: &'a ExportOptions<'o>,
    dest: &'a Destination,
    by_siret: &'a HashMap<&'a str, &'a SourceCollectivite>,
    window: Option<(Date, Date)>,
    nomenclatures: &'a Nomenclatures,
    report: &'a mut Report,
}

/// A service of the source, as it goes in a file.
struct Service {
    libelle: String,
    saisi_le: String,
    valid: bool,
}

impl DestinationExport<'_, '_> {
    fn run(&mut self) -> Result<(), SenderError> {
        let stamp = self.opts.now.format("%Y%m%dT%H%M%S").to_string();
        let ext = if self.opts.gzip { "xml.gz" } else { "xml" };
        let name = |t: &str| {
            format!(
                "{}_{}_{}_{}_{stamp}.{ext}",
                self.opts.emetteur,
                self.dest.siret,
                t,
                self.opts.mode.code()
            )
        };
        let date_creation = self.opts.now.format("%Y-%m-%dT%H:%M:%S").to_string();
        let ctx_date = Date::parse(&self.opts.now.date().format("%Y-%m-%d").to_string());
        let ctx = Context {
            type_fichier: TypeFichier::Declaration,
            date_creation: ctx_date,
            nomenclatures: self.nomenclatures,
        };

        // The services of every collectivité of the destination, checked once.
        let mut services: BTreeMap<String, BTreeMap<String, Service>> = BTreeMap::new();
        for siret in &self.dest.collectivites {
            let mut map = BTreeMap::new();
            for (code, libelle, saisi_le) in self.source.services(siret)? {
                let mut node = service_node(&code, &libelle);
                let rec = check_record(
                    &mut node,
                    "/flux/collectivite/service",
                    &Context {
                        type_fichier: TypeFichier::Service,
                        ..ctx
                    },
                );
                let valid = rec.errors.is_empty();
                if !valid {
                    self.report.ecartes.push(Ecarte {
                        table: "service",
                        id: format!("{siret}/{code}").into(),
                        raison: reasons(&rec),
                    });
                }
                map.insert(
                    code,
                    Service {
                        libelle,
                        saisi_le,
                        valid,
                    },
                );
            }
            services.insert(siret.clone(), map);
        }

        // The DECLARATION blocks, to a private temporary file.
        let body_path = self
            .opts
            .out
            .join(format!(".{}.blocs", name("DECLARATION")));
        let mut body = BufWriter::with_capacity(1 << 20, private_file(&body_path)?);
        let mut agents_n = 0u64;
        let mut evenements_n = 0u64;
        let mut blocks = 0usize;
        let mut referenced: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut limits: Vec<Option<Date>> = Vec::new();
        let source = self.source;
        let result = (|| -> Result<(), SenderError> {
            for (i, siret) in self.dest.collectivites.iter().enumerate() {
                let optional = self.dest.cdg && *siret == self.dest.siret;
                let coll = self.by_siret.get(siret.as_str()).copied();
                let nom = coll
                    .map(|c| c.nom.as_str())
                    .filter(|n| !n.trim().is_empty());
                let selection = match self.window {
                    Some((d, f)) => Selection::Differentiel {
                        debut: d.iso(),
                        fin: f.iso(),
                    },
                    None => {
                        let limite = self.opts.limite_anteriorite.or_else(|| {
                            coll.and_then(|c| c.limite_anteriorite.as_deref())
                                .and_then(Date::parse)
                        });
                        limits.push(limite);
                        Selection::Complet {
                            limite: limite.map(|d| d.iso()),
                        }
                    }
                };
                let mut opened = false;
                let known = services.get(siret);
                let mut n_in_block = 0usize;
                let mut each = |mut agent: SourceAgent| -> Result<(), SenderError> {
                    let Some(node) = self.checked_agent(&mut agent, siret, known, &ctx, n_in_block)
                    else {
                        return Ok(());
                    };
                    if !opened {
                        atmp_flux::write_block_start(&mut body, siret, nom).map_err(io_err)?;
                        opened = true;
                    }
                    if let Some(code) = &agent.service_code {
                        referenced
                            .entry(siret.clone())
                            .or_default()
                            .insert(code.clone());
                    }
                    n_in_block += 1;
                    agents_n += 1;
                    evenements_n += agent.evenements.len() as u64;
                    atmp_flux::write_node(&mut body, &node, 2).map_err(io_err)
                };
                source.agents(siret, &selection, &mut each)?;
                // A member's block is written even when empty (the néant file of a quiet
                // week); the CDG's own block only when it has data, or when the file would
                // otherwise have no block at all.
                let last = i + 1 == self.dest.collectivites.len();
                if !opened
                    && (self.opts.mode == ExportMode::Differentiel)
                    && (!optional || (last && blocks == 0))
                {
                    atmp_flux::write_block_start(&mut body, siret, nom).map_err(io_err)?;
                    opened = true;
                }
                if opened {
                    atmp_flux::write_block_end(&mut body).map_err(io_err)?;
                    blocks += 1;
                }
            }
            body.flush().map_err(io_err)
        })();
        drop(body);
        if let Err(e) = result {
            let _ = std::fs::remove_file(&body_path);
            return Err(e);
        }

        // The SERVICE file first (it precedes the DECLARATION file of its destination).
        let mut service_blocks: Vec<(String, Vec<(String, String)>)> = Vec::new();
        for siret in &self.dest.collectivites {
            let Some(map) = services.get(siret) else {
                continue;
            };
            let refs = referenced.get(siret);
            let list: Vec<(String, String)> = map
                .iter()
                .filter(|(_, s)| s.valid)
                .filter(|(code, s)| match self.window {
                    None => true,
                    Some((d, f)) => {
                        let (d, f) = (d.iso(), f.iso());
                        (s.saisi_le.as_str() >= d.as_str() && s.saisi_le.as_str() < f.as_str())
                            || refs.is_some_and(|r| r.contains(*code))
                    }
                })
                .map(|(c, s)| (c.clone(), s.libelle.clone()))
                .collect();
            if !list.is_empty() {
                service_blocks.push((siret.clone(), list));
            }
        }
        let period = self.window.map(|(d, f)| (d, f.add_days(-1)));
        // A SERVICE file precedes a DECLARATION file: none when there is no DECLARATION file
        // (a complet run with nothing to send).
        if !service_blocks.is_empty() && blocks > 0 {
            let path = self.opts.out.join(name("SERVICE"));
            let header = self.header(TypeFichier::Service, &date_creation, period, None, 0, 0);
            let sha = write_file(&path, self.opts.gzip, &header, |w| {
                for (siret, list) in &service_blocks {
                    let nom = self
                        .by_siret
                        .get(siret.as_str())
                        .map(|c| c.nom.as_str())
                        .filter(|n| !n.trim().is_empty());
                    atmp_flux::write_block_start(w, siret, nom)?;
                    for (code, libelle) in list {
                        atmp_flux::write_node(w, &service_node(code, libelle), 2)?;
                    }
                    atmp_flux::write_block_end(w)?;
                }
                Ok(())
            })?;
            self.push_file(
                &path,
                "SERVICE",
                0,
                0,
                sha,
                service_blocks.iter().map(|b| b.0.clone()).collect(),
            )?;
        }

        if blocks == 0 {
            // Complet with nothing to send for this destination: no file.
            let _ = std::fs::remove_file(&body_path);
            return Ok(());
        }
        let limite = if limits.iter().all(Option::is_some) {
            limits.iter().flatten().min().copied()
        } else {
            None
        };
        let path = self.opts.out.join(name("DECLARATION"));
        let header = self.header(
            TypeFichier::Declaration,
            &date_creation,
            period,
            limite,
            agents_n,
            evenements_n,
        );
        let res = write_file(&path, self.opts.gzip, &header, |w| {
            let mut blocks = File::open(&body_path)?;
            io::copy(&mut blocks, w)?;
            Ok(())
        });
        let _ = std::fs::remove_file(&body_path);
        let sha = res?;
        self.push_file(
            &path,
            "DECLARATION",
            agents_n,
            evenements_n,
            sha,
            self.dest.collectivites.clone(),
        )
    }

    /// The agent as it goes in the file, its invalid rows left out and reported; None when
    /// nothing of it can be sent.
    fn checked_agent(
        &mut self,
        agent: &mut SourceAgent,
        siret: &str,
        services: Option<&BTreeMap<String, Service>>,
        ctx: &Context<'_>,
        position: usize,
    ) -> Option<Node> {
        // Element materials are rows of their own: a bad code leaves out that row only.
        for ev in agent.evenements.iter_mut() {
            let id = ev.row.id;
            let report = &mut self.report;
            ev.elements_materiels.retain(|code| {
                let ok = self
                    .nomenclatures
                    .contains(Nomenclature::ElementMateriel, code.trim());
                if !ok {
                    report.ecartes.push(Ecarte {
                        table: "element_materiel",
                        id: format!("{id}/{code}").into(),
                        raison: format!("code d'élément matériel inconnu « {code} »"),
                    });
                }
                ok
            });
        }
        if let Some(code) = agent.service_code.clone() {
            if !services.and_then(|m| m.get(&code)).is_some_and(|s| s.valid) {
                self.report.avertissements.push(Ecarte {
                    table: "agent",
                    id: agent.row.id.into(),
                    raison: format!(
                        "service « {code} » absent (ou invalide) dans les services de la collectivité {siret} : l'agent est transmis sans service"
                    ),
                });
                agent.service_code = None;
            }
        }
        let path = format!("/flux/collectivite/agent[{}]", position + 1);
        let mut node = agent_node(agent, services);
        let rec = check_record(&mut node, &path, ctx);
        if !rec.errors.is_empty() {
            self.report.ecartes.push(Ecarte {
                table: "agent",
                id: agent.row.id.into(),
                raison: masked(reasons(&rec), &agent.row),
            });
            return None;
        }
        let evs: Vec<&Record> = rec
            .children
            .iter()
            .filter(|c| c.kind() == RecordKind::Evenement)
            .collect();
        let who = agent.row.clone();
        let mut keep = Vec::with_capacity(agent.evenements.len());
        for (mut ev, erec) in std::mem::take(&mut agent.evenements).into_iter().zip(evs) {
            if !erec.errors.is_empty() {
                self.report.ecartes.push(Ecarte {
                    table: "evenement",
                    id: ev.row.id.into(),
                    raison: masked(reasons(erec), &who),
                });
                continue;
            }
            let mut prune = |kind: RecordKind, table: &'static str, rows: &mut Vec<Row>| {
                let recs: Vec<&Record> =
                    erec.children.iter().filter(|c| c.kind() == kind).collect();
                let mut kept = Vec::new();
                for (row, r) in std::mem::take(rows).into_iter().zip(recs) {
                    if r.errors.is_empty() {
                        kept.push(row);
                    } else {
                        self.report.ecartes.push(Ecarte {
                            table,
                            id: row.id.into(),
                            raison: masked(reasons(r), &who),
                        });
                    }
                }
                *rows = kept;
            };
            let mut deces: Vec<Row> = ev.deces.take().into_iter().collect();
            prune(RecordKind::Deces, "deces", &mut deces);
            ev.deces = deces.pop();
            prune(RecordKind::Arret, "arret", &mut ev.arrets);
            prune(RecordKind::Certificat, "certificat", &mut ev.certificats);
            prune(RecordKind::Lesion, "lesion", &mut ev.lesions);
            prune(
                RecordKind::Consequence,
                "consequence_medicale",
                &mut ev.consequences,
            );
            keep.push(ev);
        }
        agent.evenements = keep;
        if agent.evenements.is_empty() {
            // Only the victims: an agent goes with at least one événement.
            return None;
        }
        Some(agent_node(agent, services))
    }

    fn header(
        &self,
        t: TypeFichier,
        date_creation: &str,
        period: Option<(Date, Date)>,
        limite: Option<Date>,
        agents: u64,
        evenements: u64,
    ) -> Node {
        let mut h = Node::new("entete");
        h.leaf("emetteur", Some(&self.opts.emetteur))
            .leaf("typeFichier", Some(t.code()))
            .leaf("mode", Some(self.opts.mode.code()))
            .leaf("dateCreation", Some(date_creation));
        if let Some((d, f)) = period {
            h.leaf("periodeDebut", Some(&d.iso()))
                .leaf("periodeFin", Some(&f.iso()));
        }
        if let Some(l) = limite {
            h.leaf("limiteAnteriorite", Some(&l.iso()));
        }
        if self.dest.cdg {
            h.leaf("cdg", Some(&self.dest.siret));
        }
        h.leaf("nombreAgents", Some(&agents.to_string()))
            .leaf("nombreEvenements", Some(&evenements.to_string()));
        h
    }

    fn push_file(
        &mut self,
        path: &Path,
        t: &str,
        agents: u64,
        evenements: u64,
        sha256: String,
        collectivites: Vec<String>,
    ) -> Result<(), SenderError> {
        // The same read stage as `atmp validate`: a file that would not pass is never left
        // for delivery.
        let v = atmp_flux::validate_path(path, self.nomenclatures, &Limits::default());
        if !v.valid() {
            let first = &v.errors[0];
            let _ = std::fs::remove_file(path);
            return Err(SenderError::Io(format!(
                "le fichier produit {} ne passe pas la vérification (ligne {}, {}) : {} — fichier supprimé",
                path.display(),
                first.line,
                first.code,
                first.message
            )));
        }
        self.report.fichiers.push(Fichier {
            path: path.display().to_string(),
            destination: self.dest.siret.clone(),
            cdg: self.dest.cdg,
            type_fichier: t.to_string(),
            collectivites,
            agents,
            evenements,
            sha256,
            debut: self.window.map(|(d, _)| d.iso()),
            fin: self.window.map(|(_, f)| f.iso()),
        });
        Ok(())
    }
}

/// A reason with the agent's identity taken out: the report is printed and may be kept in
/// the sender's own logs, so it names rows by table and id, never by NIR or name.
fn masked(mut reason: String, agent: &Row) -> String {
    for col in [
        "nir",
        "nom_usuel",
        "nom_patronymique",
        "prenom",
        "date_naissance",
    ] {
        if let Some(v) = agent.get(col).map(str::trim).filter(|v| v.len() >= 2) {
            reason = reason.replace(v, "(masqué)");
        }
    }
    reason
}

/// Every problem that rejects a record, in one French sentence.
fn reasons(rec: &Record) -> String {
    rec.errors
        .iter()
        .map(|i| i.message.clone())
        .collect::<Vec<_>>()
        .join(" ; ")
}

fn io_err(e: io::Error) -> SenderError {
    SenderError::Io(format!("écriture d'un fichier : {e}"))
}

/// A new file readable by its owner only (personal data).
fn private_file(path: &Path) -> Result<File, SenderError> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| SenderError::Io(format!("{} ne peut pas être créé : {e}", path.display())))
}

/// Writes a whole file (prolog, header, blocks, end) under a temporary name, syncs it and
/// renames it; returns the SHA-256 of its bytes as written (compressed or not).
fn write_file(
    path: &Path,
    gzip: bool,
    header: &Node,
    blocks: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> Result<String, SenderError> {
    if path.exists() {
        return Err(SenderError::Io(format!(
            "{} existe déjà : il n'est pas écrasé",
            path.display()
        )));
    }
    let tmp = path.with_file_name(format!(
        ".{}.part",
        path.file_name().unwrap_or_default().to_string_lossy()
    ));
    let file = private_file(&tmp)?;
    let res = (|| -> io::Result<String> {
        let hashing = HashWriter {
            inner: BufWriter::with_capacity(1 << 20, file),
            hash: Sha256::new(),
        };
        let hashing = if gzip {
            let gz = flate2::write::GzEncoder::new(hashing, flate2::Compression::default());
            let mut w = atmp_flux::FluxWriter::new(gz)?;
            w.header(header)?;
            blocks(w.blocks()?)?;
            w.finish()?.finish()?
        } else {
            let mut w = atmp_flux::FluxWriter::new(hashing)?;
            w.header(header)?;
            blocks(w.blocks()?)?;
            w.finish()?
        };
        let HashWriter { inner, hash } = hashing;
        let f = inner.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        Ok(hex::encode(hash.finalize()))
    })();
    match res {
        Ok(sha) => {
            std::fs::rename(&tmp, path).map_err(io_err)?;
            Ok(sha)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(io_err(e))
        }
    }
}

struct HashWriter<W: Write> {
    inner: W,
    hash: Sha256,
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

// ---- Building the elements from the source rows, driven by the format's table ----

fn service_node(code: &str, libelle: &str) -> Node {
    let mut n = Node::new("service").with_attr("code", code);
    n.leaf("libelle", Some(libelle));
    n
}

/// The text of a cell as the format writes it (booleans `true`/`false`).
fn cell(field: &Field, row: &Row) -> Option<String> {
    let v = row.get(field.col)?;
    if v.trim().is_empty() {
        return None;
    }
    Some(match field.kind {
        Kind::Bool => match v.trim() {
            "1" | "true" | "t" => "true".to_string(),
            "0" | "false" | "f" => "false".to_string(),
            other => other.to_string(),
        },
        _ => v.to_string(),
    })
}

/// The plain fields and groups of a record from its row, in the table's order; `sub` writes
/// the sub-records and repeated codes at their place.
fn fill(
    node: &mut Node,
    spec: &'static RecordSpec,
    row: &Row,
    sub: &mut dyn FnMut(&Field, &mut Node),
) {
    for field in spec.fields {
        match field.kind {
            Kind::Group(g) if g.kind == RecordKind::Group && g.name == "adresse" => {
                let mut group = Node::new(g.name);
                for f in g.fields {
                    let t = cell(f, row);
                    group.leaf(f.name, t.as_deref());
                }
                if !group.children.is_empty() {
                    node.children.push(group);
                }
            }
            Kind::Group(_) | Kind::Record(_) => sub(field, node),
            _ if field.many => sub(field, node),
            _ => {
                let t = cell(field, row);
                node.leaf(field.name, t.as_deref());
            }
        }
    }
}

fn agent_node(agent: &SourceAgent, services: Option<&BTreeMap<String, Service>>) -> Node {
    let mut node = Node::new("agent");
    fill(
        &mut node,
        &spec::AGENT,
        &agent.row,
        &mut |field, node| match field.name {
            "service" => {
                if let Some(code) = &agent.service_code {
                    let mut s = Node::new("service").with_attr("code", code);
                    let libelle = services
                        .and_then(|m| m.get(code))
                        .map(|s| s.libelle.as_str());
                    s.leaf("libelle", libelle);
                    node.children.push(s);
                }
            }
            "evenement" => {
                for ev in &agent.evenements {
                    let mut e = Node::new("evenement");
                    fill(
                        &mut e,
                        &spec::EVENEMENT,
                        &ev.row,
                        &mut |f, e| match f.name {
                            "elementMateriel" => {
                                for code in &ev.elements_materiels {
                                    e.leaf("elementMateriel", Some(code));
                                }
                            }
                            "deces" => {
                                if let Some(d) = &ev.deces {
                                    e.children.push(child(&spec::DECES, d));
                                }
                            }
                            "arret" => e
                                .children
                                .extend(ev.arrets.iter().map(|r| child(&spec::ARRET, r))),
                            "certificat" => e
                                .children
                                .extend(ev.certificats.iter().map(|r| child(&spec::CERTIFICAT, r))),
                            "lesion" => e
                                .children
                                .extend(ev.lesions.iter().map(|r| child(&spec::LESION, r))),
                            "consequenceMedicale" => e.children.extend(
                                ev.consequences.iter().map(|r| child(&spec::CONSEQUENCE, r)),
                            ),
                            _ => {}
                        },
                    );
                    node.children.push(e);
                }
            }
            _ => {}
        },
    );
    node
}

fn child(spec: &'static RecordSpec, row: &Row) -> Node {
    let mut n = Node::new(spec.name);
    fill(&mut n, spec, row, &mut |_, _| {});
    n
}
