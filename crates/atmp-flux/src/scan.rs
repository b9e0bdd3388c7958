//! The well-formedness scan of XML 1.0 (FORMAT.md §1) and the limits of a file, applied
//! *while* the bytes are read.
//!
//! quick-xml tokenises, but checks little of XML 1.0 (it accepts NUL bytes, U+FFFF, `]]>` in
//! text, illegal names, misplaced declarations) and buffers each token whole, so that a 1 GB
//! text node is 1 GB of memory before anyone can look at it. [`WellFormed`] sits between the
//! UTF-8 stream and quick-xml: every byte passes once through a small state machine that
//! knows the lexical context (text, tag, attribute value, comment, CDATA, processing
//! instruction, reference) and stops the stream at the first byte that breaks a rule or a
//! limit. quick-xml therefore never sees an ill-formed byte, never holds more than one token
//! of at most [`Limits::max_token`] bytes, and never sees more than [`Limits::max_depth`]
//! open elements. No recursion anywhere: the state is a handful of integers.
//!
//! What is left to quick-xml and the reader: matching end tags to start tags, a single root,
//! text outside the root, the DOCTYPE message (the scan refuses it too).

use std::fmt;
use std::io::{self, BufRead, Read};

/// The limits applied to every file, whatever its sender. Defaults are documented in
/// `docs/decisions.md`; the platform reads them from its configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Most elements open at once (the format needs 6; a deeper file is refused).
    pub max_depth: usize,
    /// Most bytes of one token: a text node (between two tags), an attribute value, a
    /// comment, a CDATA section or a processing instruction.
    pub max_token: usize,
    /// Most attributes on one element (the format uses at most 2).
    pub max_attributes: usize,
    /// Most bytes of one element or attribute name.
    pub max_name: usize,
    /// Most bytes of the decoded document (after gzip and transcoding): bounds a gzip bomb.
    pub max_decoded: u64,
    /// Most bytes of the file as received (compressed or not).
    pub max_file: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_depth: 64,
            max_token: 1 << 20,
            max_attributes: 32,
            max_name: 256,
            max_decoded: 4 << 30,
            max_file: 2 << 30,
        }
    }
}

/// Why the scan stopped the stream, with where (line and column in bytes of the UTF-8
/// stream, both from 1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScanError {
    pub code: &'static str,
    pub message: String,
    pub line: u64,
    pub column: u64,
}

impl fmt::Display for ScanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (ligne {}, colonne {})",
            self.message, self.line, self.column
        )
    }
}

impl std::error::Error for ScanError {}

/// Where the scan is in the grammar.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum St {
    /// Character data (content, or white space around the root).
    Text,
    /// After `<`.
    Lt,
    /// In the name of a start tag.
    StartName,
    /// In a start tag, after the name or an attribute value (`space` says whether white
    /// space was seen since).
    InTag { space: bool },
    /// In an attribute name.
    AttrName,
    /// After an attribute name, before `=`.
    AttrEq,
    /// After `=`, before the quote.
    AttrQuote,
    /// In an attribute value delimited by this quote.
    AttrValue(u8),
    /// After `/` in a start tag: `>` must follow.
    EmptyClose,
    /// After `</`.
    EndStart,
    /// In the name of an end tag.
    EndName,
    /// After the name of an end tag.
    EndAfter,
    /// After `<!`.
    Bang,
    /// After `<!-`.
    CommentOpen,
    /// In a comment; `dashes` consecutive `-` just read (2 means `>` must follow).
    Comment { dashes: u8 },
    /// Matching `[CDATA[` after `<!`: how many of its bytes were matched.
    CdataOpen(u8),
    /// In a CDATA section, with the number of `]` just read.
    Cdata { brackets: u8 },
    /// After `<?`.
    PiStart,
    /// In the target of a processing instruction.
    PiTarget,
    /// In the body of a processing instruction (`q`: a `?` was just read).
    PiBody { q: bool },
    /// In a reference (`&…;`), in text or in an attribute value.
    Ref,
}

/// The scanning layer: a `BufRead` over a UTF-8 stream that hands on only bytes already
/// checked.
pub struct WellFormed<R> {
    inner: R,
    scan: Scanner,
    /// Bytes at the front of `inner`'s buffer already checked and not yet consumed.
    ok: usize,
}

impl<R: BufRead> WellFormed<R> {
    pub fn new(inner: R, limits: Limits) -> WellFormed<R> {
        WellFormed {
            inner,
            scan: Scanner::new(limits),
            ok: 0,
        }
    }
}

impl<R: BufRead> Read for WellFormed<R> {
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

impl<R: BufRead> BufRead for WellFormed<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.ok == 0 {
            if let Some(e) = &self.scan.error {
                return Err(io::Error::other(e.clone()));
            }
            let buf = self.inner.fill_buf()?;
            if buf.is_empty() {
                self.scan.finish();
                if let Some(e) = &self.scan.error {
                    return Err(io::Error::other(e.clone()));
                }
                return Ok(&[]);
            }
            self.ok = self.scan.feed(buf);
            if self.ok == 0 {
                let e = self.scan.error.clone().expect("a scan that stops says why");
                return Err(io::Error::other(e));
            }
        }
        let buf = self.inner.fill_buf()?;
        Ok(&buf[..self.ok.min(buf.len())])
    }

    fn consume(&mut self, amt: usize) {
        let amt = amt.min(self.ok);
        self.ok -= amt;
        self.inner.consume(amt);
    }
}

/// The state machine, independent of where the bytes come from.
pub struct Scanner {
    limits: Limits,
    st: St,
    /// Where to go back after a reference.
    ref_return: St,
    /// The bytes of the reference being read (after `&`, before `;`).
    ref_buf: [u8; 16],
    ref_len: usize,
    /// The UTF-8 sequence being decoded: code point so far, bytes still expected, and the
    /// smallest code point allowed for its length (overlong forms are invalid).
    cp: u32,
    need: u8,
    min: u32,
    /// Bytes of the current token (text, value, comment…), for `max_token`.
    token: usize,
    /// Bytes of the current name, for `max_name`.
    name_len: usize,
    /// The current name's bytes while they matter (attributes, PI target).
    name: Vec<u8>,
    /// Attribute names of the current start tag.
    attrs: Vec<Vec<u8>>,
    /// `]` just read in text (for `]]>`).
    brackets: u8,
    depth: usize,
    /// Absolute offset of the next byte; line and offset of the current line's start.
    offset: u64,
    line: u64,
    line_start: u64,
    /// Where the current construct began, for messages.
    mark: (u64, u64),
    /// The document so far is only a byte-order mark.
    at_start: bool,
    /// `at_start` as it was at the last `<` (for the XML declaration).
    lt_at_start: bool,
    /// The processing instruction being read is the XML declaration.
    is_decl: bool,
    /// The first bytes of the XML declaration's body.
    decl: Vec<u8>,
    pub(crate) error: Option<ScanError>,
}

/// ASCII bytes that may go on a name (`NameChar`): the fast path of names. Every one of
/// them is also a legal XML character, and none is a name's end.
const NAME_ASCII: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 0x80 {
        t[b] =
            matches!(b as u8, b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b':');
        b += 1;
    }
    t
};

/// Bytes of plain text that need no attention (the fast path).
const TEXT_PLAIN: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0x20;
    while b < 0x80 {
        t[b] = true;
        b += 1;
    }
    t[b'<' as usize] = false;
    t[b'&' as usize] = false;
    t[b']' as usize] = false;
    t[b'>' as usize] = false;
    t[b'\t' as usize] = true;
    t[b'\r' as usize] = true;
    t
};

impl Scanner {
    pub fn new(limits: Limits) -> Scanner {
        Scanner {
            limits,
            st: St::Text,
            ref_return: St::Text,
            ref_buf: [0; 16],
            ref_len: 0,
            cp: 0,
            need: 0,
            min: 0,
            token: 0,
            name_len: 0,
            name: Vec::new(),
            attrs: Vec::new(),
            brackets: 0,
            depth: 0,
            offset: 0,
            line: 1,
            line_start: 0,
            mark: (1, 1),
            at_start: true,
            lt_at_start: false,
            is_decl: false,
            decl: Vec::new(),
            error: None,
        }
    }

    /// The error that stopped the scan, if any.
    pub fn error(&self) -> Option<&ScanError> {
        self.error.as_ref()
    }

    fn here(&self) -> (u64, u64) {
        (self.line, self.offset.saturating_sub(self.line_start) + 1)
    }

    fn fail(&mut self, code: &'static str, message: String) {
        if self.error.is_none() {
            let at = self.here();
            self.error = Some(ScanError {
                code,
                message,
                line: at.0,
                column: at.1,
            });
        }
    }

    /// The end of the stream: a construct left open is reported by the parser (truncated
    /// file); a multi-byte character cut at the end is an encoding error.
    pub fn finish(&mut self) {
        if self.need > 0 {
            self.fail(
                "ENCODAGE",
                "octets invalides pour l'encodage déclaré (caractère UTF-8 tronqué en fin de fichier)"
                    .into(),
            );
        }
    }

    /// Checks `buf`; returns how many of its bytes are good: all of them, unless an error
    /// was found, which is then in [`Scanner::error`].
    pub fn feed(&mut self, buf: &[u8]) -> usize {
        if self.error.is_some() {
            return 0;
        }
        let room = self.limits.max_decoded.saturating_sub(self.offset);
        if room == 0 {
            self.fail(
                "LIMITE_TAILLE",
                format!(
                    "le contenu du fichier (décompressé) dépasse la taille maximale admise ({}) ; fichier refusé",
                    human(self.limits.max_decoded)
                ),
            );
            return 0;
        }
        let buf = if (buf.len() as u64) > room {
            &buf[..room as usize]
        } else {
            buf
        };
        let base = self.offset;
        let mut i = 0;
        while i < buf.len() {
            if self.st == St::Text && self.need == 0 {
                // Fast path: plain ASCII text.
                let start = i;
                // Never look past the byte that would break the length limit.
                let end = buf
                    .len()
                    .min(start + (self.limits.max_token - self.token) + 1);
                while i < end {
                    let b = buf[i];
                    if TEXT_PLAIN[b as usize] {
                        i += 1;
                    } else if b == b'\n' {
                        self.line += 1;
                        self.line_start = base + i as u64 + 1;
                        i += 1;
                    } else {
                        break;
                    }
                }
                let run = i - start;
                if run > 0 {
                    self.brackets = 0;
                    self.at_start = false;
                    if self.token + run > self.limits.max_token {
                        let good = start + (self.limits.max_token - self.token);
                        self.offset = base + good as u64;
                        self.too_long("un texte");
                        return good;
                    }
                    self.token += run;
                    if i == buf.len() {
                        break;
                    }
                    if i == end {
                        continue;
                    }
                }
            }
            if self.need == 0 && matches!(self.st, St::StartName | St::EndName | St::AttrName) {
                // Fast path: the ASCII bytes of a name. The run stops at the name's length
                // limit, so that the byte that breaks it is reported by the slow path.
                let start = i;
                let end = buf
                    .len()
                    .min(start + self.limits.max_name.saturating_sub(self.name_len));
                while i < end && NAME_ASCII[buf[i] as usize] {
                    i += 1;
                }
                if i > start {
                    self.name_len += i - start;
                    if self.st == St::AttrName {
                        self.name.extend_from_slice(&buf[start..i]);
                    }
                    if i == buf.len() {
                        break;
                    }
                }
            }
            self.offset = base + i as u64;
            self.byte(buf[i]);
            if self.error.is_some() {
                return i;
            }
            i += 1;
        }
        self.offset = base + buf.len() as u64;
        buf.len()
    }

    fn too_long(&mut self, what: &str) {
        let m = format!(
            "{what} dépasse la longueur maximale admise ({}) ; fichier refusé",
            human(self.limits.max_token as u64)
        );
        self.fail("LIMITE_TEXTE", m);
    }

    fn byte(&mut self, b: u8) {
        if b == b'\n' {
            self.line += 1;
            self.line_start = self.offset + 1;
        }
        if self.need > 0 {
            if b & 0xC0 != 0x80 {
                return self.bad_utf8();
            }
            self.cp = (self.cp << 6) | (b & 0x3F) as u32;
            self.need -= 1;
            if self.need > 0 {
                return;
            }
            let (cp, min) = (self.cp, self.min);
            if cp < min || (0xD800..=0xDFFF).contains(&cp) || cp > 0x10FFFF {
                return self.bad_utf8();
            }
            let len = if cp < 0x800 {
                2
            } else if cp < 0x10000 {
                3
            } else {
                4
            };
            return self.char(cp, len);
        }
        match b {
            0x00..=0x7F => self.char(b as u32, 1),
            0xC2..=0xDF => self.lead(b & 0x1F, 1, 0x80),
            0xE0..=0xEF => self.lead(b & 0x0F, 2, 0x800),
            0xF0..=0xF4 => self.lead(b & 0x07, 3, 0x10000),
            _ => self.bad_utf8(),
        }
    }

    fn lead(&mut self, bits: u8, need: u8, min: u32) {
        self.cp = bits as u32;
        self.need = need;
        self.min = min;
    }

    fn bad_utf8(&mut self) {
        self.fail(
            "ENCODAGE",
            "octets invalides pour l'encodage déclaré".into(),
        );
    }

    fn counted(&mut self, len: usize, what: &str) {
        self.token += len;
        if self.token > self.limits.max_token {
            self.too_long(what);
        }
    }

    fn name_byte(&mut self, len: usize) {
        self.name_len += len;
        if self.name_len > self.limits.max_name {
            let m = format!(
                "un nom d'élément ou d'attribut dépasse la longueur maximale admise ({} octets) ; fichier refusé",
                self.limits.max_name
            );
            self.fail("LIMITE_NOM", m);
        }
    }

    fn push_name(&mut self, c: u32) {
        let mut tmp = [0u8; 4];
        let s = char::from_u32(c)
            .unwrap_or('\u{FFFD}')
            .encode_utf8(&mut tmp);
        self.name.extend_from_slice(s.as_bytes());
    }

    fn char(&mut self, c: u32, len: usize) {
        if !is_xml_char(c) {
            return self.fail(
                "XML_CARACTERE",
                format!("caractère interdit en XML (U+{c:04X}) ; fichier refusé"),
            );
        }
        let first = self.at_start;
        if !(first && c == 0xFEFF && self.offset == 2) {
            self.at_start = false;
        }
        match self.st {
            St::Text => match c {
                0x3C => {
                    self.lt_at_start = first;
                    self.mark = self.here();
                    self.brackets = 0;
                    self.token = 0;
                    self.st = St::Lt;
                }
                0x26 => {
                    self.ref_return = St::Text;
                    self.ref_len = 0;
                    self.st = St::Ref;
                    self.counted(len, "un texte");
                }
                0x5D => {
                    self.brackets = (self.brackets + 1).min(2);
                    self.counted(len, "un texte");
                }
                0x3E if self.brackets == 2 => self.fail(
                    "XML_MALFORME",
                    "« ]]> » est interdit dans le texte ; fichier refusé".into(),
                ),
                _ => {
                    self.brackets = 0;
                    self.counted(len, "un texte");
                }
            },
            St::Lt => match c {
                0x2F => self.st = St::EndStart,
                0x3F => {
                    self.st = St::PiStart;
                    self.name.clear();
                    self.name_len = 0;
                }
                0x21 => self.st = St::Bang,
                c if is_name_start(c) => {
                    if self.depth >= self.limits.max_depth {
                        let m = format!(
                            "imbrication trop profonde : plus de {} niveaux d'éléments ; fichier refusé",
                            self.limits.max_depth
                        );
                        return self.fail("LIMITE_PROFONDEUR", m);
                    }
                    self.depth += 1;
                    self.attrs.clear();
                    self.name_len = 0;
                    self.name_byte(len);
                    self.st = St::StartName;
                }
                _ => self.fail(
                    "XML_NOM",
                    format!("nom d'élément invalide : « {} » ne peut pas suivre « < »", show(c)),
                ),
            },
            St::StartName => match c {
                c if is_name_char(c) => self.name_byte(len),
                c if is_space(c) => self.st = St::InTag { space: true },
                0x3E => self.open_content(),
                0x2F => self.st = St::EmptyClose,
                _ => self.fail(
                    "XML_NOM",
                    format!("caractère « {} » interdit dans un nom d'élément", show(c)),
                ),
            },
            St::InTag { space } => match c {
                c if is_space(c) => self.st = St::InTag { space: true },
                0x3E => self.open_content(),
                0x2F => self.st = St::EmptyClose,
                c if is_name_char(c) && !is_name_start(c) => self.fail(
                    "XML_NOM",
                    format!("nom d'attribut invalide : il ne peut pas commencer par « {} »", show(c)),
                ),
                c if is_name_start(c) => {
                    if !space {
                        return self.fail(
                            "XML_ATTRIBUT",
                            "une espace doit séparer deux attributs".into(),
                        );
                    }
                    if self.attrs.len() >= self.limits.max_attributes {
                        let m = format!(
                            "plus de {} attributs sur un élément ; fichier refusé",
                            self.limits.max_attributes
                        );
                        return self.fail("LIMITE_ATTRIBUTS", m);
                    }
                    self.name.clear();
                    self.name_len = 0;
                    self.name_byte(len);
                    self.push_name(c);
                    self.st = St::AttrName;
                }
                _ => self.fail(
                    "XML_MALFORME",
                    format!("caractère « {} » inattendu dans une balise", show(c)),
                ),
            },
            St::AttrName => match c {
                c if is_name_char(c) => {
                    self.name_byte(len);
                    self.push_name(c);
                }
                c if is_space(c) => {
                    self.end_attr_name();
                    self.st = St::AttrEq;
                }
                0x3D => {
                    self.end_attr_name();
                    self.st = St::AttrQuote;
                }
                _ => self.fail(
                    "XML_NOM",
                    format!("caractère « {} » interdit dans un nom d'attribut", show(c)),
                ),
            },
            St::AttrEq => match c {
                c if is_space(c) => {}
                0x3D => self.st = St::AttrQuote,
                _ => self.fail(
                    "XML_ATTRIBUT",
                    "« = » attendu après le nom d'un attribut".into(),
                ),
            },
            St::AttrQuote => match c {
                c if is_space(c) => {}
                0x22 | 0x27 => {
                    self.token = 0;
                    self.st = St::AttrValue(c as u8);
                }
                _ => self.fail(
                    "XML_ATTRIBUT",
                    "la valeur d'un attribut doit être entre guillemets".into(),
                ),
            },
            St::AttrValue(q) => match c {
                c if c == q as u32 => self.st = St::InTag { space: false },
                0x3C => self.fail(
                    "XML_ATTRIBUT",
                    "« < » est interdit dans une valeur d'attribut".into(),
                ),
                0x26 => {
                    self.ref_return = St::AttrValue(q);
                    self.ref_len = 0;
                    self.st = St::Ref;
                    self.counted(len, "une valeur d'attribut");
                }
                _ => self.counted(len, "une valeur d'attribut"),
            },
            St::EmptyClose => match c {
                0x3E => {
                    self.depth -= 1;
                    self.open_content();
                }
                _ => self.fail("XML_MALFORME", "« > » attendu après « / » dans une balise".into()),
            },
            St::EndStart => match c {
                c if is_name_start(c) => {
                    self.name_len = 0;
                    self.name_byte(len);
                    self.st = St::EndName;
                }
                _ => self.fail("XML_NOM", "nom invalide dans une balise fermante".into()),
            },
            St::EndName => match c {
                c if is_name_char(c) => self.name_byte(len),
                c if is_space(c) => self.st = St::EndAfter,
                0x3E => self.close(),
                _ => self.fail(
                    "XML_NOM",
                    format!("caractère « {} » interdit dans un nom d'élément", show(c)),
                ),
            },
            St::EndAfter => match c {
                c if is_space(c) => {}
                0x3E => self.close(),
                _ => self.fail("XML_MALFORME", "« > » attendu dans une balise fermante".into()),
            },
            St::Bang => match c {
                0x2D => self.st = St::CommentOpen,
                0x5B => self.st = St::CdataOpen(1),
                0x44 => self.fail(
                    "XML_DOCTYPE",
                    "le fichier contient une déclaration DOCTYPE, refusée : aucune DTD ni entité n'est admise".into(),
                ),
                _ => self.fail("XML_MALFORME", "balise « <! » invalide".into()),
            },
            St::CommentOpen => match c {
                0x2D => {
                    self.token = 0;
                    self.st = St::Comment { dashes: 0 };
                }
                _ => self.fail("XML_MALFORME", "balise « <! » invalide".into()),
            },
            St::Comment { dashes } => {
                match (c, dashes) {
                    (0x2D, 0) => self.st = St::Comment { dashes: 1 },
                    (0x2D, 1) => self.st = St::Comment { dashes: 2 },
                    (0x3E, 2) => return self.open_content(),
                    (_, 2) => {
                        return self.fail(
                            "XML_COMMENTAIRE",
                            "« -- » est interdit dans un commentaire ; fichier refusé".into(),
                        )
                    }
                    _ => self.st = St::Comment { dashes: 0 },
                }
                self.counted(len, "un commentaire");
            }
            St::CdataOpen(n) => {
                const OPEN: &[u8] = b"[CDATA[";
                if c != OPEN[n as usize] as u32 {
                    return self.fail("XML_MALFORME", "balise « <! » invalide".into());
                }
                if n as usize + 1 == OPEN.len() {
                    self.token = 0;
                    self.st = St::Cdata { brackets: 0 };
                } else {
                    self.st = St::CdataOpen(n + 1);
                }
            }
            St::Cdata { brackets } => {
                match c {
                    0x5D => self.st = St::Cdata { brackets: (brackets + 1).min(2) },
                    0x3E if brackets == 2 => return self.open_content(),
                    _ => self.st = St::Cdata { brackets: 0 },
                }
                self.counted(len, "une section CDATA");
            }
            St::PiStart => match c {
                c if is_name_start(c) => {
                    self.name_byte(len);
                    self.push_name(c);
                    self.st = St::PiTarget;
                }
                _ => self.fail(
                    "XML_NOM",
                    "cible d'instruction de traitement invalide après « <? »".into(),
                ),
            },
            St::PiTarget => match c {
                c if is_name_char(c) => {
                    self.name_byte(len);
                    self.push_name(c);
                }
                c if is_space(c) => {
                    self.end_pi_target();
                    if self.is_decl {
                        self.push_decl(c);
                    }
                    self.st = St::PiBody { q: false };
                }
                0x3F => {
                    self.end_pi_target();
                    self.st = St::PiBody { q: true };
                }
                _ => self.fail(
                    "XML_NOM",
                    format!(
                        "caractère « {} » interdit dans la cible d'une instruction de traitement",
                        show(c)
                    ),
                ),
            },
            St::PiBody { q } => {
                if c == 0x3E && q {
                    return self.end_pi();
                }
                self.st = St::PiBody { q: c == 0x3F };
                if self.is_decl && self.decl.len() < 64 {
                    self.push_decl(c);
                }
                self.counted(len, "une instruction de traitement");
            }
            St::Ref => match c {
                0x3B => self.end_ref(),
                c if c < 0x80 && !is_space(c) && c != 0x3C && c != 0x26 && self.ref_len < 16 => {
                    self.ref_buf[self.ref_len] = c as u8;
                    self.ref_len += 1;
                    self.counted(len, "un texte");
                }
                _ => self.fail(
                    "XML_MALFORME",
                    "caractère « & » isolé ou référence non terminée : « & » doit être écrit &amp;"
                        .into(),
                ),
            },
        }
    }

    fn push_decl(&mut self, c: u32) {
        let mut tmp = [0u8; 4];
        let s = char::from_u32(c)
            .unwrap_or('\u{FFFD}')
            .encode_utf8(&mut tmp);
        self.decl.extend_from_slice(s.as_bytes());
    }

    /// After `>` (of a start tag, an empty tag, a comment…): text follows.
    fn open_content(&mut self) {
        self.token = 0;
        self.brackets = 0;
        self.st = St::Text;
    }

    fn close(&mut self) {
        self.depth = self.depth.saturating_sub(1);
        self.open_content();
    }

    fn end_attr_name(&mut self) {
        let name = std::mem::take(&mut self.name);
        if self.attrs.contains(&name) {
            let m = format!(
                "attribut « {} » répété sur le même élément ; fichier refusé",
                String::from_utf8_lossy(&name)
            );
            return self.fail("XML_ATTRIBUT", m);
        }
        self.attrs.push(name);
    }

    fn end_pi_target(&mut self) {
        if self.name.eq_ignore_ascii_case(b"xml") {
            if self.name != b"xml" || !self.lt_at_start {
                return self.fail(
                    "XML_DECLARATION",
                    "la déclaration XML <?xml … ?> n'est admise qu'au tout début du fichier, en minuscules ; fichier refusé".into(),
                );
            }
            self.is_decl = true;
            self.decl.clear();
        }
    }

    fn end_pi(&mut self) {
        if self.is_decl {
            self.is_decl = false;
            let body = String::from_utf8_lossy(&self.decl);
            if !body.trim_start().starts_with("version")
                || !body.starts_with([' ', '\t', '\r', '\n'])
            {
                return self.fail(
                    "XML_DECLARATION",
                    "déclaration XML sans version (<?xml version=\"1.0\" … ?> attendu)".into(),
                );
            }
        }
        self.open_content();
    }

    fn end_ref(&mut self) {
        let r = &self.ref_buf[..self.ref_len];
        let text = String::from_utf8_lossy(r).into_owned();
        self.st = self.ref_return;
        if let Some(num) = r.strip_prefix(b"#") {
            let value = if let Some(hex) = num.strip_prefix(b"x") {
                (!hex.is_empty() && hex.iter().all(u8::is_ascii_hexdigit))
                    .then(|| u32::from_str_radix(std::str::from_utf8(hex).unwrap_or("x"), 16).ok())
                    .flatten()
            } else {
                (!num.is_empty() && num.iter().all(u8::is_ascii_digit))
                    .then(|| std::str::from_utf8(num).unwrap_or("x").parse::<u32>().ok())
                    .flatten()
            };
            match value {
                Some(v) if is_xml_char(v) => {}
                Some(_) => self.fail(
                    "XML_CARACTERE",
                    format!("la référence « &{text}; » désigne un caractère interdit en XML ; fichier refusé"),
                ),
                None => self.fail(
                    "XML_MALFORME",
                    format!("référence de caractère invalide « &{text}; »"),
                ),
            }
            return;
        }
        match r {
            b"lt" | b"gt" | b"amp" | b"apos" | b"quot" => {}
            b"" => self.fail(
                "XML_MALFORME",
                "caractère « & » isolé : il doit être écrit &amp;".into(),
            ),
            _ => self.fail(
                "XML_ENTITE",
                format!(
                    "référence à l'entité non déclarée « &{text}; » : aucune entité n'est admise"
                ),
            ),
        }
    }
}

/// A character as shown in a message (control characters by their code point).
fn show(c: u32) -> String {
    match char::from_u32(c) {
        Some(ch) if !ch.is_control() => ch.to_string(),
        _ => format!("U+{c:04X}"),
    }
}

/// XML 1.0 `Char` (§2.2).
pub fn is_xml_char(c: u32) -> bool {
    matches!(c, 0x9 | 0xA | 0xD | 0x20..=0xD7FF | 0xE000..=0xFFFD | 0x10000..=0x10FFFF)
}

fn is_space(c: u32) -> bool {
    matches!(c, 0x20 | 0x9 | 0xD | 0xA)
}

/// XML 1.0 `NameStartChar` (§2.3).
pub fn is_name_start(c: u32) -> bool {
    if c < 0x80 {
        return NAME_ASCII[c as usize] && !matches!(c, 0x2D | 0x2E | 0x30..=0x39);
    }
    matches!(c,
        0x3A | 0x41..=0x5A | 0x5F | 0x61..=0x7A | 0xC0..=0xD6 | 0xD8..=0xF6 | 0xF8..=0x2FF
        | 0x370..=0x37D | 0x37F..=0x1FFF | 0x200C..=0x200D | 0x2070..=0x218F
        | 0x2C00..=0x2FEF | 0x3001..=0xD7FF | 0xF900..=0xFDCF | 0xFDF0..=0xFFFD
        | 0x10000..=0xEFFFF)
}

/// XML 1.0 `NameChar` (§2.3).
pub fn is_name_char(c: u32) -> bool {
    if c < 0x80 {
        return NAME_ASCII[c as usize];
    }
    is_name_start(c)
        || matches!(c, 0x2D | 0x2E | 0x30..=0x39 | 0xB7 | 0x300..=0x36F | 0x203F..=0x2040)
}

/// A size said in French units.
pub fn human(n: u64) -> String {
    if n >= 1 << 30 && n.is_multiple_of(1 << 30) {
        format!("{} Gio", n >> 30)
    } else if n >= 1 << 20 && n.is_multiple_of(1 << 20) {
        format!("{} Mio", n >> 20)
    } else if n >= 1 << 10 && n.is_multiple_of(1 << 10) {
        format!("{} Kio", n >> 10)
    } else {
        format!("{n} octets")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(doc: &[u8]) -> Result<(), ScanError> {
        scan_with(doc, Limits::default())
    }

    fn scan_with(doc: &[u8], limits: Limits) -> Result<(), ScanError> {
        // Fed in small, uneven pieces, so that every state is crossed at a buffer edge.
        let mut s = Scanner::new(limits);
        for chunk in doc.chunks(3) {
            let mut rest = chunk;
            while !rest.is_empty() {
                let n = s.feed(rest);
                if let Some(e) = s.error() {
                    return Err(e.clone());
                }
                rest = &rest[n..];
            }
        }
        s.finish();
        s.error.map_or(Ok(()), Err)
    }

    fn code(doc: &str) -> &'static str {
        scan(doc.as_bytes()).expect_err(doc).code
    }

    #[test]
    fn well_formed_documents_pass() {
        for doc in [
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<flux version=\"1.0\"><a b='1' c=\"2\">t&amp;&lt;&#233;&#x20AC;</a><!-- ok - ok --><?pi x?><![CDATA[ <&]] ]]></flux>",
            "\u{FEFF}<?xml version='1.0'?><a/>",
            "<a>]] > ]>]</a>",
            "<a\tb = 'x>y' />",
            "<é:ß-1.x/>",
            "<?xml-stylesheet href='x'?><a/>",
        ] {
            assert_eq!(scan(doc.as_bytes()), Ok(()), "{doc}");
        }
    }

    #[test]
    fn each_rule_of_xml_1_0_is_enforced() {
        assert_eq!(code("<a>\u{0}</a>"), "XML_CARACTERE");
        assert_eq!(code("<a>\u{1}</a>"), "XML_CARACTERE");
        assert_eq!(code("<a>\u{FFFF}</a>"), "XML_CARACTERE");
        assert_eq!(code("<a>\u{FFFE}</a>"), "XML_CARACTERE");
        assert_eq!(code("<a b='\u{7}'/>"), "XML_CARACTERE");
        assert_eq!(code("<a>&#0;</a>"), "XML_CARACTERE");
        assert_eq!(code("<a>&#xFFFF;</a>"), "XML_CARACTERE");
        assert_eq!(code("<a>&#xD800;</a>"), "XML_CARACTERE");
        assert_eq!(code("<a b='&#1;'/>"), "XML_CARACTERE");
        assert_eq!(code("<a>x]]>y</a>"), "XML_MALFORME");
        assert_eq!(code("<a><!-- a -- b --></a>"), "XML_COMMENTAIRE");
        assert_eq!(code("<a><!-- a ---></a>"), "XML_COMMENTAIRE");
        assert_eq!(code("<1a/>"), "XML_NOM");
        assert_eq!(code("<a b='1' 2c='1'/>"), "XML_NOM");
        assert_eq!(code("<a$/>"), "XML_NOM");
        assert_eq!(code("<a><?xml version='1.0'?></a>"), "XML_DECLARATION");
        assert_eq!(code(" <?xml version='1.0'?><a/>"), "XML_DECLARATION");
        assert_eq!(code("<?XML version='1.0'?><a/>"), "XML_DECLARATION");
        assert_eq!(code("<?xml?><a/>"), "XML_DECLARATION");
        assert_eq!(code("<a b='<'/>"), "XML_ATTRIBUT");
        assert_eq!(code("<a b='1' b='2'/>"), "XML_ATTRIBUT");
        assert_eq!(code("<a b='1'c='2'/>"), "XML_ATTRIBUT");
        assert_eq!(code("<a b=1/>"), "XML_ATTRIBUT");
        assert_eq!(code("<a>&foo;</a>"), "XML_ENTITE");
        assert_eq!(code("<a>a & b</a>"), "XML_MALFORME");
        assert_eq!(code("<!DOCTYPE a><a/>"), "XML_DOCTYPE");
        assert_eq!(code("<a><!x></a>"), "XML_MALFORME");
    }

    #[test]
    fn bytes_that_are_not_utf8_are_refused() {
        for bad in [
            &b"<a>\xff</a>"[..],
            b"<a>\xc3</a>",
            b"<a>\xc0\xaf</a>",         // overlong
            b"<a>\xed\xa0\x80</a>",     // surrogate
            b"<a>\xf4\x90\x80\x80</a>", // above U+10FFFF
            b"<a>\xc3",
        ] {
            assert_eq!(scan(bad).unwrap_err().code, "ENCODAGE", "{bad:?}");
        }
    }

    #[test]
    fn limits_are_applied_while_reading() {
        let limits = Limits {
            max_token: 100,
            max_depth: 4,
            max_attributes: 3,
            max_name: 8,
            max_decoded: 1000,
            ..Limits::default()
        };
        let long = format!("<a>{}</a>", "x".repeat(101));
        assert_eq!(
            scan_with(long.as_bytes(), limits).unwrap_err().code,
            "LIMITE_TEXTE"
        );
        let ok = format!("<a>{}</a>", "x".repeat(100));
        assert_eq!(scan_with(ok.as_bytes(), limits), Ok(()));
        let spaces = format!("<a>{}<b/></a>", " \n".repeat(60));
        assert_eq!(
            scan_with(spaces.as_bytes(), limits).unwrap_err().code,
            "LIMITE_TEXTE"
        );
        let attr = format!("<a b='{}'/>", "é".repeat(51));
        assert_eq!(
            scan_with(attr.as_bytes(), limits).unwrap_err().code,
            "LIMITE_TEXTE"
        );
        let comment = format!("<a><!--{}--></a>", "<".repeat(101));
        assert_eq!(
            scan_with(comment.as_bytes(), limits).unwrap_err().code,
            "LIMITE_TEXTE"
        );
        assert_eq!(scan_with(b"<a><a><a><a/></a></a></a>", limits), Ok(()));
        assert_eq!(
            scan_with(b"<a><a><a><a><a/></a></a></a></a>", limits)
                .unwrap_err()
                .code,
            "LIMITE_PROFONDEUR"
        );
        assert_eq!(
            scan_with(b"<a b='1' c='2' d='3' e='4'/>", limits)
                .unwrap_err()
                .code,
            "LIMITE_ATTRIBUTS"
        );
        assert_eq!(
            scan_with(b"<abcdefghi/>", limits).unwrap_err().code,
            "LIMITE_NOM"
        );
        // Names at the limit pass; one byte more is refused where it is, in a start tag,
        // an end tag or an attribute, whichever way the bytes are cut into buffers.
        assert_eq!(
            scan_with(b"<abcdefgh h2345678='1'></abcdefgh>", limits),
            Ok(())
        );
        for (doc, column) in [
            (&b"<abcdefghi/>"[..], 10),
            (b"<a></abcdefghi>", 14),
            (b"<a b23456789='1'/>", 12),
            (b"<a:b.c-d_\xc3\xa9/>", 11),
        ] {
            for cut in [1, 3, doc.len()] {
                let mut s = Scanner::new(limits);
                let mut at = 0;
                for part in doc.chunks(cut) {
                    let n = s.feed(part);
                    at += n;
                    if n < part.len() {
                        break;
                    }
                }
                let e = s.error().unwrap_or_else(|| panic!("{doc:?} passes"));
                assert_eq!(
                    (e.code, e.column),
                    ("LIMITE_NOM", column),
                    "{doc:?} cut {cut}"
                );
                assert_eq!(at, column as usize - 1, "{doc:?} cut {cut}");
            }
        }
        let big = format!("<a>{}</a>", "<b>xxxxxxxx</b>".repeat(100));
        assert_eq!(
            scan_with(big.as_bytes(), limits).unwrap_err().code,
            "LIMITE_TAILLE"
        );
    }

    #[test]
    fn errors_say_where() {
        let e = scan(b"<a>\n  <b>x\x01</b></a>").unwrap_err();
        assert_eq!((e.line, e.column), (2, 7));
        let long = format!("<a>\n{}</a>", "y".repeat(2 << 20));
        let e = scan(long.as_bytes()).unwrap_err();
        assert_eq!(
            (e.code, e.line, e.column),
            ("LIMITE_TEXTE", 2, (1 << 20) as u64)
        );
    }

    #[test]
    fn deep_nesting_costs_no_stack() {
        let doc = "<a>".repeat(1_000_000);
        assert_eq!(scan(doc.as_bytes()).unwrap_err().code, "LIMITE_PROFONDEUR");
    }
}
