//! From the bytes on disk to a UTF-8 byte stream: gzip detection, encoding sniffing and
//! ISO-8859-1 transcoding, and line counting for error positions.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Cursor, Read};
use std::path::Path;

use crate::scan::{human, Limits, WellFormed};
use crate::FluxError;

const BUF: usize = 256 * 1024;

/// An I/O error said in French, for the people who read the results.
pub fn io_error_fr(e: &io::Error) -> String {
    use io::ErrorKind::*;
    match e.kind() {
        NotFound => "fichier introuvable".to_string(),
        PermissionDenied => "accès refusé".to_string(),
        IsADirectory => "c'est un dossier, pas un fichier".to_string(),
        UnexpectedEof => "fin de fichier inattendue".to_string(),
        AddrInUse => "port déjà utilisé par un autre programme".to_string(),
        AddrNotAvailable => "adresse inconnue de cette machine".to_string(),
        InvalidData => format!("données illisibles ({e})"),
        _ => format!("erreur d'entrée-sortie ({e})"),
    }
}

/// Opens a flux file (plain or gzip, UTF-8 or ISO-8859-1) as a UTF-8 stream whose every
/// byte is checked for well-formedness and the limits (see [`crate::scan`]).
pub fn open_path(path: &Path, limits: &Limits) -> Result<Box<dyn BufRead + Send>, FluxError> {
    let file = File::open(path).map_err(|e| {
        FluxError::file(
            "LECTURE",
            format!("le fichier ne peut pas être lu : {}", io_error_fr(&e)),
        )
    })?;
    if let Ok(m) = file.metadata() {
        if m.len() > limits.max_file {
            return Err(FluxError::file(
                "LIMITE_TAILLE",
                format!(
                    "le fichier dépasse la taille maximale admise ({}) ; fichier refusé",
                    human(limits.max_file)
                ),
            ));
        }
    }
    open_reader(Box::new(file), limits)
}

/// Same as [`open_path`] for any byte source.
pub fn open_reader(
    raw: Box<dyn Read + Send>,
    limits: &Limits,
) -> Result<Box<dyn BufRead + Send>, FluxError> {
    let raw = FileLimit {
        inner: raw,
        read: 0,
        max: limits.max_file,
    };
    let mut raw = BufReader::with_capacity(BUF, raw);
    let head = raw
        .fill_buf()
        .map_err(|e| passed_ref(&e).unwrap_or_else(|| io_err(e)))?;
    let gz = head.len() >= 2 && head[0] == 0x1f && head[1] == 0x8b;
    let mut decoded: Box<dyn Read + Send> = if gz {
        Box::new(flate2::bufread::MultiGzDecoder::new(raw))
    } else {
        Box::new(raw)
    };
    // The prolog: enough bytes to read the encoding declaration.
    let mut prefix = Vec::with_capacity(4096);
    (&mut decoded)
        .take(4096)
        .read_to_end(&mut prefix)
        .map_err(|e| {
            if let Some(fe) = passed_ref(&e) {
                fe
            } else if gz {
                FluxError::file(
                    "GZIP",
                    format!("le fichier compressé (gzip) est illisible : {e}"),
                )
            } else {
                io_err(e)
            }
        })?;
    if prefix.is_empty() {
        return Err(FluxError::file(
            "FICHIER_VIDE",
            "le fichier est vide".into(),
        ));
    }
    let encoding = sniff_encoding(&prefix)?;
    let chained: Box<dyn Read + Send> =
        Box::new(Cursor::new(prefix).chain(GzErrors { inner: decoded, gz }));
    let utf8: Box<dyn Read + Send> = match encoding {
        Encoding::Utf8 => chained,
        Encoding::Latin1 => Box::new(Latin1Reader {
            inner: chained,
            buf: vec![0; 64 * 1024],
        }),
    };
    Ok(Box::new(Prefetched::start(WellFormed::new(
        BufReader::with_capacity(BUF, utf8),
        *limits,
    ))))
}

/// Chunks in flight between the prefetch thread and the parser (with [`BUF`], about 1 MB).
const CHUNKS: usize = 4;

/// The bytes of a `BufRead`, read ahead on a thread of its own, in chunks of [`BUF`] bytes.
///
/// The stream below (file, SHA-256 of the bytes as received, gzip, transcoding, the
/// well-formedness scan and its limits) runs on that thread while the parser and the checks
/// run on the caller's: `atmp validate` would otherwise leave the second core idle. Memory
/// stays bounded (at most [`CHUNKS`] + 2 chunks), the limits are still applied while
/// reading (the thread is at most a megabyte ahead), and an error comes after the good bytes
/// before it, as from the stream itself. The thread ends at the end of the stream, at its
/// first error, or as soon as this reader is dropped.
pub struct Prefetched {
    rx: crossbeam_channel::Receiver<io::Result<Vec<u8>>>,
    /// Emptied chunks, sent back to be filled again (no allocation per chunk).
    back: crossbeam_channel::Sender<Vec<u8>>,
    chunk: Vec<u8>,
    at: usize,
    /// The stream's error, once met: said again at every later read.
    failed: Option<io::Error>,
    done: bool,
}

impl Prefetched {
    /// Starts the thread reading `inner`.
    pub fn start<R: BufRead + Send + 'static>(mut inner: R) -> Prefetched {
        let (tx, rx) = crossbeam_channel::bounded::<io::Result<Vec<u8>>>(CHUNKS);
        let (back, spare) = crossbeam_channel::bounded::<Vec<u8>>(CHUNKS + 2);
        std::thread::Builder::new()
            .name("atmp-octets".into())
            .spawn(move || loop {
                let mut chunk = spare.try_recv().unwrap_or_else(|_| Vec::with_capacity(BUF));
                chunk.clear();
                let end = loop {
                    let n = match inner.fill_buf() {
                        Ok([]) => break true,
                        Ok(b) => {
                            let n = b.len().min(BUF - chunk.len());
                            chunk.extend_from_slice(&b[..n]);
                            n
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => {
                            if !chunk.is_empty() && tx.send(Ok(chunk)).is_err() {
                                return;
                            }
                            let _ = tx.send(Err(e));
                            return;
                        }
                    };
                    inner.consume(n);
                    if chunk.len() == BUF {
                        break false;
                    }
                };
                if !chunk.is_empty() && tx.send(Ok(chunk)).is_err() {
                    return;
                }
                if end {
                    let _ = tx.send(Ok(Vec::new()));
                    return;
                }
            })
            .expect("the prefetch thread starts");
        Prefetched {
            rx,
            back,
            chunk: Vec::new(),
            at: 0,
            failed: None,
            done: false,
        }
    }
}

/// An `io::Error` said again: the flux errors it carries keep their code and position.
fn again(e: &io::Error) -> io::Error {
    if let Some(s) = e
        .get_ref()
        .and_then(|r| r.downcast_ref::<crate::scan::ScanError>())
    {
        return io::Error::other(s.clone());
    }
    if let Some(f) = e.get_ref().and_then(|r| r.downcast_ref::<FluxError>()) {
        return io::Error::other(f.clone());
    }
    io::Error::new(e.kind(), e.to_string())
}

impl Read for Prefetched {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = {
            let avail = self.fill_buf()?;
            let n = avail.len().min(buf.len());
            buf[..n].copy_from_slice(&avail[..n]);
            n
        };
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for Prefetched {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.at == self.chunk.len() && !self.done {
            if let Some(e) = &self.failed {
                return Err(again(e));
            }
            match self.rx.recv() {
                Ok(Ok(c)) if c.is_empty() => self.done = true,
                Ok(Ok(c)) => {
                    let old = std::mem::replace(&mut self.chunk, c);
                    let _ = self.back.try_send(old);
                    self.at = 0;
                }
                Ok(Err(e)) => {
                    let said = again(&e);
                    self.failed = Some(e);
                    return Err(said);
                }
                Err(_) => {
                    return Err(io::Error::other(FluxError::file(
                        "LECTURE",
                        "la lecture du fichier s'est interrompue".into(),
                    )))
                }
            }
        }
        Ok(&self.chunk[self.at..])
    }

    fn consume(&mut self, amt: usize) {
        self.at = (self.at + amt).min(self.chunk.len());
    }
}

/// A [`FluxError`] carried through an `io::Error` by [`FileLimit`].
fn passed_ref(e: &io::Error) -> Option<FluxError> {
    e.get_ref()
        .and_then(|r| r.downcast_ref::<FluxError>())
        .cloned()
}

/// Stops a file larger than the limit as it is read (a stream has no size to check first).
struct FileLimit {
    inner: Box<dyn Read + Send>,
    read: u64,
    max: u64,
}

impl Read for FileLimit {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        if self.read > self.max {
            return Err(io::Error::other(FluxError::file(
                "LIMITE_TAILLE",
                format!(
                    "le fichier dépasse la taille maximale admise ({}) ; fichier refusé",
                    human(self.max)
                ),
            )));
        }
        Ok(n)
    }
}

fn io_err(e: io::Error) -> FluxError {
    FluxError::file(
        "LECTURE",
        format!("erreur de lecture du fichier : {}", io_error_fr(&e)),
    )
}

/// Marks read errors of a gzip stream so that the reader can say the compressed data is bad.
struct GzErrors {
    inner: Box<dyn Read + Send>,
    gz: bool,
}

impl Read for GzErrors {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).map_err(|e| {
            if passed_ref(&e).is_some() {
                e
            } else if self.gz {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    "données gzip corrompues ou tronquées".to_string(),
                )
            } else {
                e
            }
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Utf8,
    Latin1,
}

fn sniff_encoding(prefix: &[u8]) -> Result<Encoding, FluxError> {
    if prefix.starts_with(&[0xFF, 0xFE])
        || prefix.starts_with(&[0xFE, 0xFF])
        || prefix.starts_with(&[0, 0x3C])
        || prefix.starts_with(&[0x3C, 0])
    {
        return Err(FluxError::file(
            "ENCODAGE",
            "encodage UTF-16 non pris en charge : seuls UTF-8 et ISO-8859-1 sont acceptés".into(),
        ));
    }
    let body = prefix
        .strip_prefix(&[0xEF, 0xBB, 0xBF][..])
        .unwrap_or(prefix);
    if !body.starts_with(b"<?xml") {
        return Ok(Encoding::Utf8);
    }
    let end = match memchr::memmem::find(body, b"?>") {
        Some(e) => e,
        None => return Ok(Encoding::Utf8), // the parser reports the broken prolog
    };
    let decl = String::from_utf8_lossy(&body[..end]);
    let Some(pos) = decl.find("encoding") else {
        return Ok(Encoding::Utf8);
    };
    let rest = decl[pos + 8..].trim_start();
    let Some(rest) = rest.strip_prefix('=') else {
        return Err(FluxError::file(
            "ENCODAGE",
            "déclaration d'encodage illisible dans le prologue XML".into(),
        ));
    };
    let rest = rest.trim_start();
    let quote = rest.chars().next().unwrap_or(' ');
    if quote != '"' && quote != '\'' {
        return Err(FluxError::file(
            "ENCODAGE",
            "déclaration d'encodage illisible dans le prologue XML".into(),
        ));
    }
    let value: String = rest[1..].chars().take_while(|c| *c != quote).collect();
    match value.to_ascii_uppercase().as_str() {
        "UTF-8" | "UTF8" => Ok(Encoding::Utf8),
        "ISO-8859-1" | "ISO8859-1" | "ISO_8859-1" | "LATIN1" | "LATIN-1" | "L1" => {
            Ok(Encoding::Latin1)
        }
        _ => Err(FluxError::file(
            "ENCODAGE",
            format!(
                "encodage « {value} » non pris en charge : seuls UTF-8 et ISO-8859-1 sont acceptés"
            ),
        )),
    }
}

/// Transcodes ISO-8859-1 to UTF-8 (every byte is the code point of the same value; no
/// windows-1252 remapping of 0x80–0x9F).
struct Latin1Reader {
    inner: Box<dyn Read + Send>,
    buf: Vec<u8>,
}

impl Read for Latin1Reader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.len() < 2 {
            // Never called that way by BufReader; keep the contract anyway.
            let mut one = [0u8; 1];
            let n = self.inner.read(&mut one)?;
            if n == 0 {
                return Ok(0);
            }
            if one[0] < 0x80 && !out.is_empty() {
                out[0] = one[0];
                return Ok(1);
            }
            return Err(io::Error::other(
                "tampon trop petit pour le transcodage ISO-8859-1",
            ));
        }
        let want = (out.len() / 2).min(self.buf.len());
        let n = self.inner.read(&mut self.buf[..want])?;
        let mut o = 0;
        for &b in &self.buf[..n] {
            if b < 0x80 {
                out[o] = b;
                o += 1;
            } else {
                out[o] = 0xC0 | (b >> 6);
                out[o + 1] = 0x80 | (b & 0x3F);
                o += 2;
            }
        }
        Ok(o)
    }
}

/// A `BufRead` that counts lines as the XML parser consumes bytes, so that every event
/// gets a line and a column (in bytes of the UTF-8 stream) at no extra pass over the file.
pub struct Counting<R> {
    inner: R,
    /// Bytes consumed so far.
    pub(crate) consumed: u64,
    /// Newlines consumed so far.
    pub(crate) newlines: u64,
    /// Offset just after the last newline consumed.
    pub(crate) line_start: u64,
    /// While set, every byte consumed is appended (a record's XML fragment, kept for the
    /// quarantine of rejected records), up to [`MAX_FRAGMENT`] bytes.
    pub(crate) capture: Option<Vec<u8>>,
    /// The capture went over [`MAX_FRAGMENT`]: what it holds is not the whole fragment.
    pub(crate) capture_over: bool,
}

/// The largest record fragment kept as received (a record this large is rejected anyway:
/// see [`crate::reader::MAX_RECORD_TEXT`]).
pub const MAX_FRAGMENT: usize = 8 * 1024 * 1024;

impl<R: BufRead> Counting<R> {
    pub fn new(inner: R) -> Self {
        Counting {
            inner,
            consumed: 0,
            newlines: 0,
            line_start: 0,
            capture: None,
            capture_over: false,
        }
    }

    /// (line, column) of the next byte to be consumed, both from 1.
    pub fn position(&self) -> (u64, u64) {
        (self.newlines + 1, self.consumed - self.line_start + 1)
    }
}

impl<R: BufRead> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = {
            let avail = self.fill_buf()?;
            let n = avail.len().min(buf.len());
            buf[..n].copy_from_slice(&avail[..n]);
            n
        };
        self.consume(n);
        Ok(n)
    }
}

impl<R: BufRead> BufRead for Counting<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.inner.fill_buf()
    }

    fn consume(&mut self, amt: usize) {
        if amt > 0 {
            if let Ok(buf) = self.inner.fill_buf() {
                let chunk = &buf[..amt.min(buf.len())];
                // Most chunks are one tag or one text: a plain loop beats memchr's set-up.
                let (count, last) = if chunk.len() < 256 {
                    let mut count = 0u64;
                    let mut last = 0usize;
                    for (i, b) in chunk.iter().enumerate() {
                        if *b == b'\n' {
                            count += 1;
                            last = i;
                        }
                    }
                    (count, last)
                } else {
                    let count = memchr::memchr_iter(b'\n', chunk).count() as u64;
                    (count, memchr::memrchr(b'\n', chunk).unwrap_or(0))
                };
                if count > 0 {
                    self.newlines += count;
                    self.line_start = self.consumed + last as u64 + 1;
                }
                if let Some(c) = self.capture.as_mut() {
                    if c.len() + chunk.len() <= MAX_FRAGMENT {
                        c.extend_from_slice(chunk);
                    } else {
                        self.capture_over = true;
                    }
                }
            }
            self.consumed += amt as u64;
        }
        self.inner.consume(amt);
    }
}
