//! The logs of §6: a complete log and an error log per collectivité, plus the global pair
//! of a grouped CDG file. Lines are written to `.part` files and renamed once the file's
//! transaction has committed, so that a log never describes data that was rolled back.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::counts::Counts;

/// The level of a log line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Info,
    Warn,
    Error,
}

impl Level {
    fn as_str(&self) -> &'static str {
        match self {
            Level::Info => "INFO",
            Level::Warn => "WARN",
            Level::Error => "ERROR",
        }
    }
}

/// One log pair (complete and error log) being written.
pub(crate) struct Pair {
    pub siret: String,
    pub global: bool,
    complet: BufWriter<File>,
    erreurs: BufWriter<File>,
    complet_tmp: PathBuf,
    erreurs_tmp: PathBuf,
    pub complet_path: PathBuf,
    pub erreurs_path: PathBuf,
    pub errors: u64,
    pub warnings: u64,
    pub counts: Counts,
}

/// A finished log pair, as reported in the JSON `logs` list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogFiles {
    /// The collectivité's SIRET (the CDG's for the global pair); empty for a file-level log
    /// of a file rejected before any block was read.
    pub collectivite: String,
    pub global: bool,
    pub complet: PathBuf,
    pub erreurs: PathBuf,
    pub errors: u64,
    pub warnings: u64,
    /// The result label of this log.
    pub label: String,
    /// Where the pair is kept when not under its paths: the keys of its two files in the
    /// base's file store (see [`crate::ImportOptions::files`]).
    pub stored: Option<(String, String)>,
}

/// Writes the lines of one file's logs.
pub(crate) struct Logs {
    dir: PathBuf,
    prefix: String,
    pairs: Vec<Pair>,
    by_siret: HashMap<String, usize>,
    current: Option<usize>,
    global: Option<usize>,
    /// Lines about the file (opening line), repeated at the top of every pair.
    file_lines: Vec<String>,
    ts_secs: u64,
    ts: String,
    line: String,
    pub errors: u64,
    pub warnings: u64,
}

/// Appends one field of a log line, quoted as in CSV when it holds `;`, `"` or a line break.
///
/// A field that a spreadsheet would take for a formula (it starts with `=`, `+`, `-`, `@`, a
/// tab or a carriage return: OWASP's list) gets a leading `'`, so that a value of a file
/// (a name such as `=HYPERLINK(…)`) stays text wherever the log is opened. The fields of
/// §6.1 start with fixed words (`Agent : `…), so this only ever touches hostile values.
pub fn push_field(out: &mut String, s: &str) {
    let mark = if is_formula(s) { "'" } else { "" };
    let b = s.as_bytes();
    if memchr::memchr3(b';', b'"', b'\n', b).is_some() || memchr::memchr(b'\r', b).is_some() {
        out.push('"');
        out.push_str(mark);
        out.push_str(&s.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(mark);
        out.push_str(s);
    }
}

/// Whether a spreadsheet would read this cell as a formula (OWASP "CSV injection").
pub fn is_formula(s: &str) -> bool {
    matches!(
        s.as_bytes().first(),
        Some(b'=' | b'+' | b'-' | b'@' | b'\t' | b'\r')
    )
}

/// The header row of the "tableur" form of a log.
pub const TABLEUR_HEADER: &str = "Horodatage;Niveau;Agent;Événement;Élément;Message\r\n";

/// Rewrites a log (§6.1) as a spreadsheet opens it best: a UTF-8 byte order mark, a header
/// row, `;` between cells, CRLF after each row, exactly six cells per row, every cell that
/// could be read as a formula neutralised. Reads one entry at a time (an entry may span
/// physical lines inside quotes), so memory stays bounded by the longest entry.
pub fn write_tableur(src: impl io::BufRead, mut out: impl Write) -> io::Result<()> {
    out.write_all("\u{feff}".as_bytes())?;
    out.write_all(TABLEUR_HEADER.as_bytes())?;
    let mut src = src;
    let mut entry: Vec<u8> = Vec::with_capacity(1024);
    let mut row = String::with_capacity(1024);
    loop {
        entry.clear();
        // Physical lines until the quotes balance: one entry of the log.
        loop {
            let n = src.read_until(b'\n', &mut entry)?;
            if n == 0 || memchr::memchr_iter(b'"', &entry).count().is_multiple_of(2) {
                break;
            }
        }
        if entry.is_empty() {
            break;
        }
        while matches!(entry.last(), Some(b'\n' | b'\r')) {
            entry.pop();
        }
        let text = String::from_utf8_lossy(&entry);
        let mut fields = split_line(&text);
        fields.resize(6, String::new());
        row.clear();
        for (i, f) in fields.iter().enumerate() {
            if i > 0 {
                row.push(';');
            }
            push_field(&mut row, f);
        }
        row.push_str("\r\n");
        out.write_all(row.as_bytes())?;
    }
    out.flush()
}

/// Splits a whole log (§6.1) into its entries: a quoted field may hold line breaks, so an
/// entry is a CSV record, not a physical line. Each entry is split as [`split_line`] does.
pub fn split_records(text: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut cur = vec![String::new()];
    let mut quoted = false;
    let mut it = text.chars().peekable();
    let mut any = false;
    while let Some(c) = it.next() {
        any = true;
        match (quoted, c) {
            (true, '"') if it.peek() == Some(&'"') => {
                it.next();
                cur.last_mut().expect("a field").push('"');
            }
            (true, '"') => quoted = false,
            (false, '"') => quoted = true,
            (false, ';') if cur.len() < 6 => cur.push(String::new()),
            (false, '\r') if it.peek() == Some(&'\n') => {}
            (false, '\n') => {
                out.push(std::mem::replace(&mut cur, vec![String::new()]));
                any = false;
            }
            (_, c) => cur.last_mut().expect("a field").push(c),
        }
    }
    if any {
        out.push(cur);
    }
    out
}

/// Splits a log line (§6.1) into its six fields, undoing the CSV quoting of
/// [`push_field`]; an unquoted `;` after the fifth separator stays in the message.
pub fn split_line(line: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut quoted = false;
    let mut it = line.chars().peekable();
    while let Some(c) = it.next() {
        match (quoted, c) {
            (true, '"') if it.peek() == Some(&'"') => {
                it.next();
                out.last_mut().expect("a field").push('"');
            }
            (true, '"') => quoted = false,
            (false, '"') => quoted = true,
            (false, ';') if out.len() < 6 => out.push(String::new()),
            (_, c) => out.last_mut().expect("a field").push(c),
        }
    }
    out
}

impl Logs {
    /// Logs of one file, written under `dir` with names starting with `prefix`.
    pub fn new(dir: &Path, prefix: String) -> io::Result<Logs> {
        std::fs::create_dir_all(dir)?;
        Ok(Logs {
            dir: dir.to_path_buf(),
            prefix,
            pairs: Vec::new(),
            by_siret: HashMap::new(),
            current: None,
            global: None,
            file_lines: Vec::new(),
            ts_secs: 0,
            ts: String::new(),
            line: String::with_capacity(512),
            errors: 0,
            warnings: 0,
        })
    }

    fn timestamp(&mut self) -> &str {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        if secs != self.ts_secs || self.ts.is_empty() {
            self.ts_secs = secs;
            self.ts = chrono::Local::now().format("%d/%m/%Y %H:%M:%S").to_string();
        }
        &self.ts
    }

    fn open_pair(&mut self, siret: &str, global: bool) -> io::Result<usize> {
        let key = if global {
            format!("global:{siret}")
        } else {
            siret.to_string()
        };
        if let Some(i) = self.by_siret.get(&key) {
            return Ok(*i);
        }
        // The SIRET comes from the file: only its safe characters reach a file name.
        let safe: String = siret
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .take(20)
            .collect();
        let safe = if safe.is_empty() && !siret.is_empty() {
            format!("bloc{}", self.pairs.len() + 1)
        } else {
            safe
        };
        let stem = match (safe.is_empty(), global) {
            (true, _) => format!("{}_fichier", self.prefix),
            (false, true) => format!("{}_{safe}_global", self.prefix),
            (false, false) => format!("{}_{safe}", self.prefix),
        };
        let complet_path = unique(&self.dir, &format!("{stem}_complet"));
        let erreurs_path = complet_path.with_file_name(
            complet_path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("log")
                .replace("_complet", "_erreurs"),
        );
        let complet_tmp = part(&complet_path);
        let erreurs_tmp = part(&erreurs_path);
        let mut pair = Pair {
            siret: siret.to_string(),
            global,
            complet: BufWriter::with_capacity(256 * 1024, File::create(&complet_tmp)?),
            erreurs: BufWriter::with_capacity(16 * 1024, File::create(&erreurs_tmp)?),
            complet_tmp,
            erreurs_tmp,
            complet_path,
            erreurs_path,
            errors: 0,
            warnings: 0,
            counts: Counts::default(),
        };
        for l in &self.file_lines {
            pair.complet.write_all(l.as_bytes())?;
        }
        self.pairs.push(pair);
        let i = self.pairs.len() - 1;
        self.by_siret.insert(key, i);
        Ok(i)
    }

    /// Opens (or reopens) the global pair of a grouped CDG file.
    pub fn open_global(&mut self, cdg: &str) -> io::Result<()> {
        let i = self.open_pair(cdg, true)?;
        self.global = Some(i);
        Ok(())
    }

    /// Lines from now on go to this collectivité's pair (and the global one).
    pub fn enter_block(&mut self, siret: &str) -> io::Result<()> {
        let i = self.open_pair(siret, false)?;
        self.current = Some(i);
        Ok(())
    }

    pub fn leave_block(&mut self) {
        self.current = None;
    }

    /// The counts of the current block (and nothing when outside a block).
    pub fn block_counts(&mut self) -> Option<&mut Counts> {
        self.current.map(|i| &mut self.pairs[i].counts)
    }

    /// A line about the file as a whole: at the top of every pair, present and future.
    pub fn file_line(&mut self, level: Level, message: &str) -> io::Result<()> {
        self.format(level, "", "", "", message);
        let l = self.line.clone();
        self.count(level, None);
        for p in self.pairs.iter_mut() {
            p.complet.write_all(l.as_bytes())?;
            // Counted in each log it is written to: a log's count is its lines.
            match level {
                Level::Error => {
                    p.erreurs.write_all(l.as_bytes())?;
                    p.errors += 1;
                }
                Level::Warn => p.warnings += 1,
                Level::Info => {}
            }
        }
        self.file_lines.push(l);
        Ok(())
    }

    fn format(&mut self, level: Level, agent: &str, evenement: &str, element: &str, message: &str) {
        let mut line = std::mem::take(&mut self.line);
        line.clear();
        line.push_str(self.timestamp());
        line.push(';');
        line.push_str(level.as_str());
        line.push(';');
        push_field(&mut line, agent);
        line.push(';');
        push_field(&mut line, evenement);
        line.push(';');
        push_field(&mut line, element);
        line.push(';');
        push_field(&mut line, message);
        line.push('\n');
        self.line = line;
    }

    fn count(&mut self, level: Level, targets: Option<[Option<usize>; 2]>) {
        match level {
            Level::Error => self.errors += 1,
            Level::Warn => self.warnings += 1,
            Level::Info => {}
        }
        if let Some(t) = targets {
            for i in t.into_iter().flatten() {
                match level {
                    Level::Error => self.pairs[i].errors += 1,
                    Level::Warn => self.pairs[i].warnings += 1,
                    Level::Info => {}
                }
            }
        }
    }

    /// A line in the current block's pair and in the global pair.
    pub fn line(
        &mut self,
        level: Level,
        agent: &str,
        evenement: &str,
        element: &str,
        message: &str,
    ) -> io::Result<()> {
        self.format(level, agent, evenement, element, message);
        let targets = [
            self.current,
            self.global.filter(|g| Some(*g) != self.current),
        ];
        self.count(level, Some(targets));
        for i in targets.into_iter().flatten() {
            let p = &mut self.pairs[i];
            p.complet.write_all(self.line.as_bytes())?;
            if level == Level::Error {
                p.erreurs.write_all(self.line.as_bytes())?;
            }
        }
        Ok(())
    }

    /// Closes every pair with its totals and result label (given the pair's own errors and
    /// counts; the global pair gets the file's).
    pub fn close(
        &mut self,
        file_counts: &Counts,
        label_for: impl Fn(u64) -> String,
    ) -> io::Result<()> {
        for i in 0..self.pairs.len() {
            let (counts, errors) = if self.pairs[i].global {
                (file_counts.clone(), self.errors)
            } else {
                (self.pairs[i].counts.clone(), self.pairs[i].errors)
            };
            let totals = format!("Fin du traitement : {}", counts.summary());
            let label = label_for(errors);
            for msg in [totals, label] {
                self.format(Level::Info, "", "", "", &msg);
                self.pairs[i].complet.write_all(self.line.as_bytes())?;
            }
        }
        for p in self.pairs.iter_mut() {
            p.complet.flush()?;
            p.erreurs.flush()?;
            p.complet.get_ref().sync_data()?;
            p.erreurs.get_ref().sync_data()?;
        }
        Ok(())
    }

    /// What the pairs are, under their final names (before [`Logs::publish`]).
    pub fn files(&self, label_for: impl Fn(u64) -> String, file_errors: u64) -> Vec<LogFiles> {
        let mut out: Vec<LogFiles> = self
            .pairs
            .iter()
            .map(|p| {
                let errors = if p.global { file_errors } else { p.errors };
                LogFiles {
                    collectivite: p.siret.clone(),
                    global: p.global,
                    complet: p.complet_path.clone(),
                    erreurs: p.erreurs_path.clone(),
                    errors,
                    warnings: if p.global { self.warnings } else { p.warnings },
                    label: label_for(errors),
                    stored: None,
                }
            })
            .collect();
        // The global pair last, as in the JSON of §7.
        out.sort_by_key(|l| l.global);
        out
    }

    /// Keeps every closed pair with `put` (given each file's `.part` path), recording the
    /// keys in `files`; the `.part` files are then [`Logs::discard`]ed by the caller.
    pub fn keep<E>(
        &self,
        files: &mut [LogFiles],
        mut put: impl FnMut(&Path) -> Result<String, E>,
    ) -> Result<(), E> {
        for f in files.iter_mut() {
            if let Some(p) = self.pairs.iter().find(|p| p.complet_path == f.complet) {
                f.stored = Some((put(&p.complet_tmp)?, put(&p.erreurs_tmp)?));
            }
        }
        Ok(())
    }

    /// Renames the `.part` files to their final names.
    pub fn publish(mut self) -> io::Result<()> {
        for p in std::mem::take(&mut self.pairs) {
            drop(p.complet);
            drop(p.erreurs);
            std::fs::rename(&p.complet_tmp, &p.complet_path)?;
            std::fs::rename(&p.erreurs_tmp, &p.erreurs_path)?;
        }
        Ok(())
    }

    /// Removes every `.part` file (the file's data was rolled back).
    pub fn discard(mut self) {
        for p in std::mem::take(&mut self.pairs) {
            drop(p.complet);
            drop(p.erreurs);
            let _ = std::fs::remove_file(&p.complet_tmp);
            let _ = std::fs::remove_file(&p.erreurs_tmp);
        }
    }

    /// The SIRETs of the blocks met so far (not the global pair).
    pub fn block_sirets(&self) -> Vec<String> {
        self.pairs
            .iter()
            .filter(|p| !p.global)
            .map(|p| p.siret.clone())
            .collect()
    }
}

/// Logs dropped without being published (an error of the platform while integrating): their
/// `.part` files go, since the file's data was rolled back.
impl Drop for Logs {
    fn drop(&mut self) {
        for p in std::mem::take(&mut self.pairs) {
            let (ct, et) = (p.complet_tmp.clone(), p.erreurs_tmp.clone());
            drop(p);
            let _ = std::fs::remove_file(ct);
            let _ = std::fs::remove_file(et);
        }
    }
}

fn part(p: &Path) -> PathBuf {
    let mut s = p.as_os_str().to_os_string();
    s.push(".part");
    PathBuf::from(s)
}

/// `dir/stem.log`, or `dir/stem-2.log`… when taken.
fn unique(dir: &Path, stem: &str) -> PathBuf {
    let mut n = 1;
    loop {
        let name = if n == 1 {
            format!("{stem}.log")
        } else {
            format!("{stem}-{n}.log")
        };
        let p = dir.join(&name);
        let errs = dir.join(name.replace("_complet", "_erreurs"));
        // The `.part` is created here, atomically (`create_new`): two imports writing into
        // one folder in the same second (two replays of one import…) never share a name.
        if !p.exists() && !errs.exists() {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(part(&p))
            {
                Ok(_) => return p,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                // Any other failure is the caller's to report, when it opens the file.
                Err(_) => return p,
            }
        }
        n += 1;
    }
}
