//! The streaming reader: turns the byte stream into the header, block boundaries and one
//! small element tree per record, never holding more than one record in memory.

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::BufRead;
use std::sync::OnceLock;

use quick_xml::events::{BytesStart, Event};
use quick_xml::{Reader, XmlVersion};

use crate::input::Counting;
use crate::spec::{Kind, RecordSpec, AGENT, ENTETE, SERVICE};
use crate::FluxError;

mod fast;

/// One element of a record, with its position in the file.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub name: Cow<'static, str>,
    pub attrs: Vec<(Cow<'static, str>, String)>,
    /// The text content, references resolved, not trimmed; blank text before any other is
    /// left out (every reader of it trims it or asks whether it is blank).
    pub text: String,
    pub children: Vec<Node>,
    pub line: u64,
    pub column: u64,
    /// Set on a record that exceeded [`MAX_RECORD_NODES`] or [`MAX_RECORD_TEXT`]: the rest of
    /// it was read but not kept, and the record is rejected.
    pub oversized: bool,
    /// On a record: an estimate of the memory it holds (bytes), which bounds what travels
    /// between the stages.
    pub weight: usize,
    /// Where this element lies in its record's XML fragment (bytes from the record's `<`,
    /// end exclusive), so that a rejected sub-record can be quoted and left out of a replay.
    pub span: (u32, u32),
}

/// The most elements one record may hold (an agent with all its events): beyond, the record
/// is rejected, so that memory stays bounded whatever the file.
pub const MAX_RECORD_NODES: usize = 20_000;
/// The most text bytes one record may hold.
pub const MAX_RECORD_TEXT: usize = 2 * 1024 * 1024;
/// What one element costs in memory besides its text (an estimate, for [`Node::weight`]).
const NODE_BYTES: usize = 160;

impl Node {
    /// An element as its start tag opens it: no text yet, room for the `hint` children the
    /// format gives it unless it is empty (both readers build their nodes here).
    fn opened(
        name: Cow<'static, str>,
        attrs: Vec<(Cow<'static, str>, String)>,
        empty: bool,
        hint: usize,
        at: (u64, u64),
    ) -> Node {
        Node {
            name,
            attrs,
            text: String::new(),
            children: if empty {
                Vec::new()
            } else {
                Vec::with_capacity(hint)
            },
            line: at.0,
            column: at.1,
            oversized: false,
            weight: 0,
            span: (0, 0),
        }
    }

    /// An element with no content (for writers and tests).
    pub fn new(name: &str) -> Node {
        Node {
            name: intern(name),
            attrs: Vec::new(),
            text: String::new(),
            children: Vec::new(),
            line: 0,
            column: 0,
            oversized: false,
            weight: 0,
            span: (0, 0),
        }
    }

    /// The value of an attribute.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What the reader yields, in file order.
#[derive(Debug)]
pub enum Item {
    /// The `<entete>` element.
    Header(Node),
    /// A `<collectivite>` opening tag.
    BlockStart(BlockStart),
    /// One record (`<service>`, `<agent>`, or an unexpected element) inside a block, with
    /// its XML fragment as read (UTF-8) when the reader keeps fragments.
    Record {
        node: Node,
        path: String,
        fragment: Option<String>,
    },
    /// Non-blank text directly inside a block.
    StrayText {
        line: u64,
        column: u64,
        path: String,
    },
    /// The end of the current block.
    BlockEnd,
}

/// The opening of a `<collectivite>` block.
#[derive(Debug, Clone)]
pub struct BlockStart {
    /// The `siret` attribute as written (empty when absent).
    pub siret: String,
    pub nom: Option<String>,
    /// Attributes other than `siret` and `nom`.
    pub unknown_attrs: Vec<String>,
    /// 1-based position of the block in the file.
    pub index: usize,
    pub line: u64,
    pub column: u64,
    pub path: String,
}

impl BlockStart {
    /// The attributes of `<collectivite>` other than `siret` and `nom`: ignored, each
    /// reported with a warning (the same by `validate` and `import`).
    pub fn attribute_issues(&self) -> Vec<crate::Issue> {
        self.unknown_attrs
            .iter()
            .map(|a| crate::Issue {
                severity: crate::Severity::Warn,
                code: "ATTRIBUT_INCONNU",
                message: format!("Attribut « {a} » inconnu sur <collectivite>, ignoré"),
                line: self.line,
                column: self.column,
                path: format!("{}/@{a}", self.path),
            })
            .collect()
    }
}

/// A tiny multiplicative hash for element names (the set of keys is fixed and known).
#[derive(Clone, Copy, Default)]
struct BuildNameHasher;

struct NameHasher(u64);

impl std::hash::BuildHasher for BuildNameHasher {
    type Hasher = NameHasher;
    fn build_hasher(&self) -> NameHasher {
        NameHasher(0xcbf2_9ce4_8422_2325)
    }
}

impl std::hash::Hasher for NameHasher {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ *b as u64).wrapping_mul(0x0100_0000_01b3);
        }
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

/// Every element and attribute name of the format, so that nodes share static names.
fn intern(name: &str) -> Cow<'static, str> {
    intern_with_hint(name).0
}

/// [`intern`], with the number of children an element of this name may hold in the format
/// (its fields; 0 for a value or an unknown name), so that its `children` are allocated once
/// at the right size instead of grown by doubling.
fn intern_with_hint(name: &str) -> (Cow<'static, str>, usize) {
    type Names = HashMap<&'static str, (&'static str, usize), BuildNameHasher>;
    // FxHash-like: names are short and trusted to be few; the default SipHash costs more
    // than the rest of the lookup.
    static NAMES: OnceLock<Names> = OnceLock::new();
    let map = NAMES.get_or_init(|| {
        let mut m = HashMap::with_hasher(BuildNameHasher);
        fn put(m: &mut Names, name: &'static str, hint: usize) {
            let e = m.entry(name).or_insert((name, 0));
            e.1 = e.1.max(hint);
        }
        fn walk(spec: &'static RecordSpec, m: &mut Names) {
            put(m, spec.name, spec.fields.len().min(32));
            for a in spec.attrs {
                put(m, a.name, 0);
            }
            for f in spec.fields {
                put(m, f.name, 0);
                if let Kind::Group(g) | Kind::Record(g) = f.kind {
                    walk(g, m);
                }
            }
        }
        walk(&ENTETE, &mut m);
        walk(&SERVICE, &mut m);
        walk(&AGENT, &mut m);
        for n in ["flux", "collectivite", "siret", "nom", "version"] {
            put(&mut m, n, 0);
        }
        m
    });
    match map.get(name) {
        Some((s, hint)) => (Cow::Borrowed(s), *hint),
        None => (Cow::Owned(name.to_string()), 0),
    }
}

/// The streaming reader of a flux file.
pub struct FluxReader {
    xml: Reader<Counting<Box<dyn BufRead + Send>>>,
    buf: Vec<u8>,
    depth: usize,
    root_seen: bool,
    header_seen: bool,
    blocks: usize,
    pending_end: bool,
    block_counts: HashMap<Cow<'static, str>, usize>,
    agents: u64,
    evenements: u64,
    done: bool,
    /// Keep each record's XML fragment ([`FluxReader::keep_fragments`]).
    fragments: bool,
    /// Bytes consumed before the event being handled (a record's start).
    event_start: u64,
    /// quick-xml is between events in its "text" state (after markup), so that bytes it has
    /// not seen may be read past it: a record is then read by [`FluxReader::fast_record`].
    xml_in_text: bool,
    /// Records may be read by the fast path (off only in the tests that compare both).
    fast: bool,
    /// Records read by the fast path so far (the tests check that it really ran).
    fast_records: u64,
}

impl FluxReader {
    /// A reader over a UTF-8 stream (see [`crate::open_path`]).
    pub fn new(input: Box<dyn BufRead + Send>) -> FluxReader {
        let mut xml = Reader::from_reader(Counting::new(input));
        let cfg = xml.config_mut();
        cfg.trim_text(false);
        cfg.check_end_names = true;
        cfg.expand_empty_elements = false;
        FluxReader {
            xml,
            buf: Vec::with_capacity(64 * 1024),
            depth: 0,
            root_seen: false,
            header_seen: false,
            blocks: 0,
            pending_end: false,
            block_counts: HashMap::new(),
            agents: 0,
            evenements: 0,
            done: false,
            fragments: false,
            event_start: 0,
            xml_in_text: false,
            fast: true,
            fast_records: 0,
        }
    }

    /// Keeps each record's XML fragment as read ([`Item::Record`]), for the quarantine of
    /// rejected records. It costs one copy of the blocks' bytes; validation does without.
    pub fn keep_fragments(mut self) -> FluxReader {
        self.fragments = true;
        self
    }

    /// Opens a file (plain or gzip, UTF-8 or ISO-8859-1), scanned under `limits`.
    pub fn open(path: &std::path::Path, limits: &crate::Limits) -> Result<FluxReader, FluxError> {
        Ok(FluxReader::new(crate::input::open_path(path, limits)?))
    }

    /// The numbers of `<agent>` and `<evenement>` elements read so far (all of them once the
    /// reader returned `None`), for the control totals of the header.
    pub fn totals(&self) -> (u64, u64) {
        (self.agents, self.evenements)
    }

    /// Bytes of (decoded) input consumed so far, for progress reports.
    pub fn position(&self) -> u64 {
        self.xml.get_ref().consumed
    }

    fn pos(&self) -> (u64, u64) {
        self.xml.get_ref().position()
    }

    fn fatal(&self, code: &'static str, message: String, at: (u64, u64)) -> FluxError {
        FluxError {
            code,
            message,
            line: at.0,
            column: at.1,
        }
    }

    fn xml_error(&self, e: quick_xml::Error, at: (u64, u64)) -> FluxError {
        if let quick_xml::Error::Io(io) = &e {
            if let Some(scan) = io
                .get_ref()
                .and_then(|r| r.downcast_ref::<crate::scan::ScanError>())
            {
                return FluxError {
                    code: scan.code,
                    message: scan.message.clone(),
                    line: scan.line,
                    column: scan.column,
                };
            }
            if let Some(fe) = io.get_ref().and_then(|r| r.downcast_ref::<FluxError>()) {
                return fe.clone();
            }
        }
        let (code, message) = match &e {
            quick_xml::Error::Encoding(_) => (
                "ENCODAGE",
                "octets invalides pour l'encodage déclaré".to_string(),
            ),
            quick_xml::Error::Io(io) if io.kind() == std::io::ErrorKind::InvalidData => {
                ("GZIP", io.to_string())
            }
            quick_xml::Error::Io(io) => (
                "LECTURE",
                format!("erreur de lecture : {}", crate::input::io_error_fr(io)),
            ),
            quick_xml::Error::IllFormed(quick_xml::errors::IllFormedError::MismatchedEndTag {
                expected,
                found,
            }) => (
                "XML_MALFORME",
                format!(
                    "balise fermante « </{found}> » alors que « </{expected}> » était attendue"
                ),
            ),
            quick_xml::Error::IllFormed(quick_xml::errors::IllFormedError::UnmatchedEndTag(
                name,
            )) => (
                "XML_MALFORME",
                format!("balise fermante « </{name}> » sans balise ouvrante"),
            ),
            quick_xml::Error::Syntax(se) => {
                use quick_xml::errors::SyntaxError as S;
                let (code, what) = match se {
                    S::UnclosedTag
                    | S::UnclosedSingleQuotedAttributeValue
                    | S::UnclosedDoubleQuotedAttributeValue => (
                        "XML_TRONQUE",
                        "balise non fermée avant la fin du fichier (fichier tronqué ?)",
                    ),
                    S::UnclosedComment => (
                        "XML_TRONQUE",
                        "commentaire non fermé avant la fin du fichier",
                    ),
                    S::UnclosedCData => (
                        "XML_TRONQUE",
                        "section CDATA non fermée avant la fin du fichier",
                    ),
                    S::UnclosedPI | S::UnclosedXmlDecl => {
                        ("XML_TRONQUE", "instruction de traitement non fermée")
                    }
                    S::UnclosedDoctype => ("XML_DOCTYPE", "déclaration DOCTYPE refusée"),
                    S::InvalidBangMarkup => ("XML_MALFORME", "balise « <! » invalide"),
                };
                (code, what.to_string())
            }
            quick_xml::Error::IllFormed(quick_xml::errors::IllFormedError::MissingEndTag(name)) => {
                (
                    "XML_TRONQUE",
                    format!("balise « <{name}> » non fermée (fichier tronqué ?)"),
                )
            }
            quick_xml::Error::IllFormed(quick_xml::errors::IllFormedError::UnclosedReference) => (
                "XML_MALFORME",
                "caractère « & » isolé : il doit être écrit &amp;".to_string(),
            ),
            quick_xml::Error::IllFormed(
                quick_xml::errors::IllFormedError::DoubleHyphenInComment,
            ) => (
                "XML_MALFORME",
                "« -- » interdit dans un commentaire".to_string(),
            ),
            other => ("XML_MALFORME", format!("XML mal formé : {other}")),
        };
        self.fatal(code, message, at)
    }

    /// The next item, `None` at the end of a complete file, or the reason the file is
    /// rejected whole.
    pub fn next_item(&mut self) -> Result<Option<Item>, FluxError> {
        if self.done {
            return Ok(None);
        }
        if self.pending_end {
            self.pending_end = false;
            self.depth = 1;
            return Ok(Some(Item::BlockEnd));
        }
        loop {
            let at = self.pos();
            self.event_start = self.xml.get_ref().consumed;
            if self.fragments && self.depth == 2 {
                // Each event inside a block starts a new capture: the one that opens a record
                // ends holding the record's fragment.
                let c = self.xml.get_mut();
                c.capture.get_or_insert_with(Vec::new).clear();
                c.capture_over = false;
            }
            if self.depth == 2 && self.xml_in_text && self.fast {
                if let Some(item) = self.fast_record()? {
                    return Ok(Some(item));
                }
            }
            self.buf.clear();
            let ev = match self.xml.read_event_into(&mut self.buf) {
                Ok(ev) => ev,
                Err(e) => {
                    let at = self.pos();
                    return Err(self.xml_error(e, at));
                }
            };
            // After text (or a reference) quick-xml stands inside markup; after any markup,
            // in its text state.
            self.xml_in_text = !matches!(ev, Event::Text(_) | Event::GeneralRef(_) | Event::Eof);
            match ev {
                Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
                Event::DocType(_) => {
                    return Err(self.fatal(
                        "XML_DOCTYPE",
                        "le fichier contient une déclaration DOCTYPE, refusée : aucune DTD ni entité n'est admise".into(),
                        at,
                    ))
                }
                Event::Text(t) => {
                    if !t.xml10_content().trim().is_empty() {
                        if let Some(item) = self.stray_text(at)? {
                            return Ok(Some(item));
                        }
                    }
                }
                Event::CData(_) => {
                    if let Some(item) = self.stray_text(at)? {
                        return Ok(Some(item));
                    }
                }
                Event::GeneralRef(r) => {
                    let name = r.into_inner().into_owned();
                    check_ref(&name).map_err(|m| self.fatal("XML_ENTITE", m, at))?;
                    if let Some(item) = self.stray_text(at)? {
                        return Ok(Some(item));
                    }
                }
                Event::Start(e) => {
                    let e = e.into_owned();
                    if let Some(item) = self.on_start(e, false, at)? {
                        return Ok(Some(item));
                    }
                }
                Event::Empty(e) => {
                    let e = e.into_owned();
                    if let Some(item) = self.on_start(e, true, at)? {
                        return Ok(Some(item));
                    }
                }
                Event::End(_) => match self.depth {
                    2 => {
                        self.depth = 1;
                        return Ok(Some(Item::BlockEnd));
                    }
                    _ => self.depth = 0,
                },
                Event::Eof => {
                    self.done = true;
                    if self.depth != 0 {
                        return Err(self.fatal(
                            "XML_TRONQUE",
                            "fin de fichier inattendue : des éléments ne sont pas fermés (fichier tronqué ?)".into(),
                            at,
                        ));
                    }
                    if !self.root_seen {
                        return Err(self.fatal("RACINE", "le fichier ne contient pas d'élément racine <flux>".into(), at));
                    }
                    if !self.header_seen {
                        return Err(self.fatal("ENTETE", "le fichier ne contient pas d'en-tête <entete>".into(), at));
                    }
                    if self.blocks == 0 {
                        return Err(self.fatal(
                            "AUCUNE_COLLECTIVITE",
                            "le fichier ne contient aucun bloc <collectivite>".into(),
                            at,
                        ));
                    }
                    return Ok(None);
                }
            }
        }
    }

    fn stray_text(&self, at: (u64, u64)) -> Result<Option<Item>, FluxError> {
        if self.depth == 2 {
            Ok(Some(Item::StrayText {
                line: at.0,
                column: at.1,
                path: format!("/flux/collectivite[{}]", self.blocks),
            }))
        } else {
            Err(self.fatal(
                "STRUCTURE_TEXTE",
                "texte inattendu en dehors des éléments du format".into(),
                at,
            ))
        }
    }

    fn on_start(
        &mut self,
        e: BytesStart<'static>,
        empty: bool,
        at: (u64, u64),
    ) -> Result<Option<Item>, FluxError> {
        let name = e.name().as_ref().to_string();
        match self.depth {
            0 => {
                if self.root_seen {
                    return Err(self.fatal("RACINE", "plusieurs éléments racine".into(), at));
                }
                if name != "flux" {
                    return Err(self.fatal(
                        "RACINE",
                        format!("l'élément racine doit être <flux>, « {name} » trouvé"),
                        at,
                    ));
                }
                self.root_seen = true;
                let attrs = self.attrs(&e, at)?;
                let mut version = None;
                for (k, v) in attrs {
                    if k == "version" {
                        version = Some(v);
                    } else {
                        return Err(self.fatal(
                            "RACINE",
                            format!("attribut inconnu « {k} » sur <flux>"),
                            at,
                        ));
                    }
                }
                match version.as_deref() {
                    Some("1.0") => {}
                    Some(v) => {
                        return Err(self.fatal(
                            "VERSION",
                            format!("version du format « {v} » non prise en charge (1.0 attendue)"),
                            at,
                        ))
                    }
                    None => {
                        return Err(self.fatal(
                            "VERSION",
                            "l'attribut version de <flux> est obligatoire".into(),
                            at,
                        ))
                    }
                }
                if empty {
                    self.done = true;
                    return Err(self.fatal(
                        "ENTETE",
                        "le fichier ne contient pas d'en-tête <entete>".into(),
                        at,
                    ));
                }
                self.depth = 1;
                Ok(None)
            }
            1 => {
                if !self.header_seen {
                    if name != "entete" {
                        return Err(self.fatal(
                            "ENTETE",
                            format!("l'en-tête <entete> doit être le premier élément de <flux>, « {name} » trouvé"),
                            at,
                        ));
                    }
                    self.header_seen = true;
                    let node = self.tree(e, empty, at)?;
                    return Ok(Some(Item::Header(node)));
                }
                if name != "collectivite" {
                    return Err(self.fatal(
                        "STRUCTURE_INCONNU",
                        format!("élément « {name} » inattendu dans <flux> (seuls <entete> puis des <collectivite> sont admis)"),
                        at,
                    ));
                }
                self.blocks += 1;
                self.block_counts.clear();
                let mut block = BlockStart {
                    siret: String::new(),
                    nom: None,
                    unknown_attrs: Vec::new(),
                    index: self.blocks,
                    line: at.0,
                    column: at.1,
                    path: format!("/flux/collectivite[{}]", self.blocks),
                };
                for (k, v) in self.attrs(&e, at)? {
                    match &*k {
                        "siret" => block.siret = v.trim().to_string(),
                        "nom" => block.nom = Some(v.trim().to_string()).filter(|s| !s.is_empty()),
                        _ => block.unknown_attrs.push(k.into_owned()),
                    }
                }
                self.depth = 2;
                if empty {
                    self.pending_end = true;
                }
                Ok(Some(Item::BlockStart(block)))
            }
            _ => {
                let node = self.tree(e, empty, at)?;
                Ok(Some(self.record_item(node)))
            }
        }
    }

    /// A record read whole, with its path in the block and its fragment.
    fn record_item(&mut self, node: Node) -> Item {
        let count = self.block_counts.entry(node.name.clone()).or_insert(0);
        *count += 1;
        let path = format!(
            "/flux/collectivite[{}]/{}[{}]",
            self.blocks, node.name, count
        );
        let fragment = if self.fragments {
            let c = self.xml.get_mut();
            let over = std::mem::take(&mut c.capture_over);
            // Copied out at its exact size: the capture buffer stays, at the size of the
            // largest record so far, instead of growing again for every record.
            c.capture.as_ref().filter(|_| !over).map(|b| {
                String::from_utf8(b.clone())
                    .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
            })
        } else {
            None
        };
        Item::Record {
            node,
            path,
            fragment,
        }
    }

    fn attrs(
        &self,
        e: &BytesStart<'_>,
        at: (u64, u64),
    ) -> Result<Vec<(Cow<'static, str>, String)>, FluxError> {
        attrs_of(e, at)
    }

    /// An error of the stream below (the scan's, the file's) where it was met.
    fn io_error(&self, e: std::io::Error) -> FluxError {
        let at = self.pos();
        self.xml_error(quick_xml::Error::from(e), at)
    }

    fn count(&mut self, name: &str) {
        match name {
            "agent" => self.agents += 1,
            "evenement" => self.evenements += 1,
            _ => {}
        }
    }

    /// Reads one element and everything under it into a [`Node`].
    fn tree(
        &mut self,
        start: BytesStart<'static>,
        empty: bool,
        at: (u64, u64),
    ) -> Result<Node, FluxError> {
        let mut root = self.node(&start, empty, at)?;
        let base = self.event_start;
        root.span = (0, self.offset(base));
        if empty {
            let text = attr_bytes(&root);
            return Ok(finish(root, 1, text));
        }
        // The event buffer is taken out of `self` so that events can borrow it while nodes
        // are built (no copy of each tag).
        let mut buf = std::mem::take(&mut self.buf);
        let r = self.subtree(root, &mut buf, base);
        self.buf = buf;
        r
    }

    /// Bytes consumed since `base` (a record's start), as a span bound.
    fn offset(&self, base: u64) -> u32 {
        u32::try_from(self.xml.get_ref().consumed - base).unwrap_or(u32::MAX)
    }

    fn subtree(&mut self, root: Node, buf: &mut Vec<u8>, base: u64) -> Result<Node, FluxError> {
        let (mut nodes, mut text) = (1usize, attr_bytes(&root));
        let mut stack = vec![root];
        // Depth of elements read but not kept once the record is over its budget.
        let mut skipping = 0usize;
        loop {
            let at = self.pos();
            let before = self.offset(base);
            buf.clear();
            let ev = match self.xml.read_event_into(buf) {
                Ok(ev) => ev,
                Err(e) => {
                    let at = self.pos();
                    return Err(self.xml_error(e, at));
                }
            };
            let over = nodes > MAX_RECORD_NODES || text > MAX_RECORD_TEXT;
            if over && skipping == 0 {
                stack[0].oversized = true;
            }
            match ev {
                Event::Start(e) => {
                    let mut n = self.node(&e, false, at)?;
                    n.span.0 = before;
                    nodes += 1;
                    text += attr_bytes(&n);
                    if over || skipping > 0 {
                        skipping += 1;
                    } else {
                        stack.push(n);
                    }
                }
                Event::Empty(e) => {
                    let mut n = self.node(&e, true, at)?;
                    n.span = (before, self.offset(base));
                    nodes += 1;
                    text += attr_bytes(&n);
                    if !over && skipping == 0 {
                        top(&mut stack).children.push(n);
                    }
                }
                Event::Text(t) => {
                    let s = t.xml10_content();
                    text += s.len();
                    if !over && skipping == 0 {
                        let top = top(&mut stack);
                        // Blank text before any other is left out: every use of a node's
                        // text trims it (a value) or only asks whether it is blank (a group),
                        // so this changes nothing read, and the indentation inside every
                        // group costs no allocation.
                        if !(top.text.is_empty() && s.trim().is_empty()) {
                            top.text.push_str(&s);
                        }
                    }
                }
                Event::CData(t) => {
                    let s = t.xml10_content();
                    text += s.len();
                    if !over && skipping == 0 {
                        top(&mut stack).text.push_str(&s);
                    }
                }
                Event::GeneralRef(r) => {
                    let name = r.into_inner().into_owned();
                    let c = check_ref(&name).map_err(|m| self.fatal("XML_ENTITE", m, at))?;
                    text += 1;
                    if !over && skipping == 0 {
                        top(&mut stack).text.push(c);
                    }
                }
                Event::End(_) if skipping > 0 => skipping -= 1,
                Event::End(_) => {
                    let mut done = stack.pop().expect("stack holds the record");
                    done.span.1 = self.offset(base);
                    match stack.last_mut() {
                        Some(parent) => parent.children.push(done),
                        None => return Ok(finish(done, nodes, text)),
                    }
                }
                Event::Comment(_) | Event::PI(_) | Event::Decl(_) => {}
                Event::DocType(_) => {
                    return Err(self.fatal(
                        "XML_DOCTYPE",
                        "déclaration DOCTYPE refusée".into(),
                        at,
                    ));
                }
                Event::Eof => {
                    self.done = true;
                    return Err(self.fatal(
                        "XML_TRONQUE",
                        "fin de fichier inattendue : des éléments ne sont pas fermés (fichier tronqué ?)".into(),
                        at,
                    ));
                }
            }
        }
    }

    fn node(&mut self, e: &BytesStart<'_>, empty: bool, at: (u64, u64)) -> Result<Node, FluxError> {
        let (name, hint) = intern_with_hint(e.name().as_ref());
        self.count(&name);
        let attrs = if e.attributes_raw().trim().is_empty() {
            Vec::new()
        } else {
            self.attrs(e, at)?
        };
        Ok(Node::opened(name, attrs, empty, hint, at))
    }
}

/// The attributes of a start tag, values normalised (XML 1.0 §3.3.3).
fn attrs_of(
    e: &BytesStart<'_>,
    at: (u64, u64),
) -> Result<Vec<(Cow<'static, str>, String)>, FluxError> {
    let fatal = |code: &'static str, message: String| FluxError {
        code,
        message,
        line: at.0,
        column: at.1,
    };
    let mut out = Vec::new();
    for a in e.attributes() {
        let a = a.map_err(|err| fatal("XML_MALFORME", format!("attribut mal formé : {err}")))?;
        let value = a
            .normalized_value(XmlVersion::Implicit1_0)
            .map_err(|err| fatal("XML_ENTITE", format!("valeur d'attribut refusée : {err}")))?;
        out.push((intern(a.key.as_ref()), value.into_owned()));
    }
    Ok(out)
}

/// The bytes of an element's attribute values: they count in a record's text budget, so
/// that a record of many large attributes is bounded like one of large texts.
fn attr_bytes(n: &Node) -> usize {
    n.attrs.iter().map(|(_, v)| v.len()).sum()
}

/// A record read to its end, of `nodes` elements and `text` bytes of text and attribute
/// values: marked oversized when over either budget (its content then dropped, since it is
/// rejected whole and only its position and span are read), weighed for the stages' batches.
fn finish(mut root: Node, nodes: usize, text: usize) -> Node {
    if nodes > MAX_RECORD_NODES || text > MAX_RECORD_TEXT {
        root.oversized = true;
    }
    if root.oversized {
        root.attrs = Vec::new();
        root.text = String::new();
        root.children = Vec::new();
    }
    root.weight = nodes.min(MAX_RECORD_NODES + 1) * NODE_BYTES + text.min(MAX_RECORD_TEXT + 1);
    root
}

/// The element being read (the record itself at the bottom of the stack).
fn top(stack: &mut [Node]) -> &mut Node {
    stack.last_mut().expect("the stack holds the record")
}

/// Resolves a reference: character references and the five predefined entities only.
fn check_ref(name: &str) -> Result<char, String> {
    if let Some(num) = name.strip_prefix('#') {
        let parsed = if let Some(hex) = num.strip_prefix('x') {
            u32::from_str_radix(hex, 16)
        } else {
            num.parse::<u32>()
        };
        return match parsed.ok().and_then(char::from_u32) {
            Some(c) if c == '\t' || c == '\n' || c == '\r' || c >= ' ' => Ok(c),
            _ => Err(format!("référence de caractère invalide « &{name}; »")),
        };
    }
    match name {
        "lt" => Ok('<'),
        "gt" => Ok('>'),
        "amp" => Ok('&'),
        "apos" => Ok('\''),
        "quot" => Ok('"'),
        _ => Err(format!(
            "référence à l'entité non déclarée « &{name}; » : aucune entité n'est admise"
        )),
    }
}
