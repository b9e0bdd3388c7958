//! Records read straight from the scanned stream's buffers, past quick-xml.
//!
//! The well-formedness scan ([`crate::scan`]) has already checked every byte the reader
//! sees: names, attribute syntax, references, comments, CDATA, UTF-8. What is left to a
//! record's reader is to cut the bytes into tokens, match end tags to start tags and build
//! the [`Node`] tree. quick-xml does that too, but copies every event into a buffer,
//! validates its UTF-8 again and keeps a stack of names of its own; on the 200 MB file that
//! was about a quarter of the reader thread. Here each token is found in the chunk the scan
//! thread handed over (`memchr`) and read in place; only a token that straddles two chunks
//! is copied (into `spill`).
//!
//! The outcome is the same tree, positions, spans, limits and errors as the quick-xml path
//! ([`FluxReader::tree`], still used for the header and for a record the fast path cannot
//! start on, e.g. at a chunk boundary); the golden test and the reader tests compare them.
//! A record is only read here when quick-xml stands between two events in its text state,
//! so that it never notices the bytes read past it.

use std::borrow::Cow;
use std::io::BufRead;

use quick_xml::events::{BytesCData, BytesStart, BytesText};

use super::{attr_bytes, check_ref, finish, intern_with_hint, FluxReader, Item, Node};
use super::{MAX_RECORD_NODES, MAX_RECORD_TEXT};
use crate::FluxError;

/// What a token is, from its first bytes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Tok {
    Text,
    Ref,
    Start,
    End,
    Comment,
    CData,
    Pi,
    /// `<!` not followed by a comment or CDATA (a DOCTYPE: the scan refuses it first).
    Bang,
}

/// The kind of the token at the start of `b`, `None` when `b` is too short to tell.
fn kind(b: &[u8]) -> Option<Tok> {
    match b.first()? {
        b'&' => Some(Tok::Ref),
        b'<' => match b.get(1)? {
            b'/' => Some(Tok::End),
            b'?' => Some(Tok::Pi),
            b'!' => {
                let rest = &b[2..];
                if rest.starts_with(b"--") {
                    Some(Tok::Comment)
                } else if rest.starts_with(b"[CDATA[") {
                    Some(Tok::CData)
                } else if b"--".starts_with(rest) || b"[CDATA[".starts_with(rest) {
                    None
                } else {
                    Some(Tok::Bang)
                }
            }
            _ => Some(Tok::Start),
        },
        _ => Some(Tok::Text),
    }
}

/// The end (exclusive) of the token of kind `k` at the start of `b`, `None` when `b` does
/// not hold all of it. `from` bytes of `b` were searched already (with `quote` the state of
/// a start tag at that point): a token that straddles many chunks is searched once, not
/// again from its start at every chunk.
fn token_end(k: Tok, b: &[u8], from: usize, quote: &mut u8) -> Option<usize> {
    // Where a terminator of `n` bytes not yet seen may start, past the first `skip`.
    let tail = |skip: usize, n: usize| skip.max(from.saturating_sub(n - 1)).min(b.len());
    match k {
        Tok::Text => memchr::memchr2(b'<', b'&', &b[from..]).map(|i| from + i),
        Tok::Ref => memchr::memchr(b';', &b[from..]).map(|i| from + i + 1),
        Tok::End => memchr::memchr(b'>', &b[from..]).map(|i| from + i + 1),
        Tok::Comment => {
            let at = tail(4, 3);
            memchr::memmem::find(&b[at..], b"-->").map(|i| at + i + 3)
        }
        Tok::CData => {
            let at = tail(9, 3);
            memchr::memmem::find(&b[at..], b"]]>").map(|i| at + i + 3)
        }
        Tok::Pi => {
            let at = tail(2, 2);
            memchr::memmem::find(&b[at..], b"?>").map(|i| at + i + 2)
        }
        Tok::Bang => Some(2),
        Tok::Start => {
            // `>` may stand inside an attribute value.
            for (i, &c) in b.iter().enumerate().skip(from.max(1)) {
                if *quote != 0 {
                    if c == *quote {
                        *quote = 0;
                    }
                } else if c == b'"' || c == b'\'' {
                    *quote = c;
                } else if c == b'>' {
                    return Some(i + 1);
                }
            }
            None
        }
    }
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// Text as quick-xml's `xml10_content` gives it: line ends normalised.
fn text_of(b: &[u8]) -> Cow<'_, str> {
    let s = std::str::from_utf8(b).unwrap_or("\u{FFFD}");
    if memchr::memchr(b'\r', b).is_none() {
        Cow::Borrowed(s)
    } else {
        Cow::Owned(BytesText::from_escaped(s).xml10_content().into_owned())
    }
}

/// The record being built.
struct Build {
    stack: Vec<Node>,
    /// Names of the elements read but not kept once the record is over its budget (their
    /// end tags are still matched).
    skipped: Vec<Vec<u8>>,
    nodes: usize,
    text: usize,
    agents: u64,
    evenements: u64,
}

/// Why a token ended the record's reading.
enum Stop {
    Done(Node),
    Fail(FluxError),
    /// An end tag that does not close the open element: reported once it is consumed.
    Mismatch {
        expected: String,
        found: String,
    },
}

impl Build {
    fn top(&mut self) -> &mut Node {
        self.stack.last_mut().expect("the stack holds the record")
    }

    /// An element from its start tag (`<` … `>` or `/>`).
    fn element(&mut self, tok: &[u8], at: (u64, u64)) -> Result<(Node, bool), FluxError> {
        let inner = &tok[1..tok.len() - 1];
        let (inner, empty) = match inner.strip_suffix(b"/") {
            Some(i) => (i, true),
            None => (inner, false),
        };
        let name_len = inner.iter().position(|&c| is_ws(c)).unwrap_or(inner.len());
        let name = std::str::from_utf8(&inner[..name_len]).unwrap_or("\u{FFFD}");
        let (name, hint) = intern_with_hint(name);
        match &*name {
            "agent" => self.agents += 1,
            "evenement" => self.evenements += 1,
            _ => {}
        }
        let attrs = if inner[name_len..].iter().all(|&c| is_ws(c)) {
            Vec::new()
        } else {
            let content = std::str::from_utf8(inner).unwrap_or("\u{FFFD}");
            super::attrs_of(&BytesStart::from_content(content, name_len), at)?
        };
        let node = Node::opened(name, attrs, empty, hint, at);
        Ok((node, empty))
    }

    /// One token of the record (the first being its start tag), at `at`, from offset
    /// `before` to `after` in the record.
    fn step(
        &mut self,
        k: Tok,
        tok: &[u8],
        at: (u64, u64),
        before: u32,
        after: u32,
    ) -> Result<(), Stop> {
        if self.stack.is_empty() {
            let (mut root, empty) = self.element(tok, at).map_err(Stop::Fail)?;
            self.nodes = 1;
            self.text = attr_bytes(&root);
            root.span = (0, after);
            if empty {
                return Err(Stop::Done(finish(root, self.nodes, self.text)));
            }
            self.stack.push(root);
            return Ok(());
        }
        let over = self.nodes > MAX_RECORD_NODES || self.text > MAX_RECORD_TEXT;
        let skipping = !self.skipped.is_empty();
        if over && !skipping {
            self.stack[0].oversized = true;
        }
        let keep = !over && !skipping;
        match k {
            Tok::Start => {
                let (mut n, empty) = self.element(tok, at).map_err(Stop::Fail)?;
                self.nodes += 1;
                self.text += attr_bytes(&n);
                if empty {
                    n.span = (before, after);
                    if keep {
                        self.top().children.push(n);
                    }
                } else if keep {
                    n.span.0 = before;
                    self.stack.push(n);
                } else {
                    self.skipped.push(n.name.as_bytes().to_vec());
                }
            }
            Tok::Text => {
                let s = text_of(tok);
                self.text += s.len();
                if keep {
                    let top = self.top();
                    // As in the quick-xml path: blank text before any other is left out.
                    if !(top.text.is_empty() && s.trim().is_empty()) {
                        top.text.push_str(&s);
                    }
                }
            }
            Tok::CData => {
                let s = text_of(&tok[9..tok.len() - 3]);
                let s = if s.contains('\r') {
                    Cow::Owned(BytesCData::new(&*s).xml10_content().into_owned())
                } else {
                    s
                };
                self.text += s.len();
                if keep {
                    self.top().text.push_str(&s);
                }
            }
            Tok::Ref => {
                let name = String::from_utf8_lossy(&tok[1..tok.len() - 1]);
                let c = check_ref(&name).map_err(|m| {
                    Stop::Fail(FluxError {
                        code: "XML_ENTITE",
                        message: m,
                        line: at.0,
                        column: at.1,
                    })
                })?;
                self.text += 1;
                if keep {
                    self.top().text.push(c);
                }
            }
            Tok::End => {
                let content = &tok[2..tok.len() - 1];
                let end = content
                    .iter()
                    .rposition(|&c| !is_ws(c))
                    .map_or(0, |i| i + 1);
                let found = &content[..end];
                let expected: &[u8] = match self.skipped.last() {
                    Some(n) => n,
                    None => self
                        .stack
                        .last()
                        .expect("the record is open")
                        .name
                        .as_bytes(),
                };
                if found != expected {
                    return Err(Stop::Mismatch {
                        expected: String::from_utf8_lossy(expected).into_owned(),
                        found: String::from_utf8_lossy(found).into_owned(),
                    });
                }
                if self.skipped.pop().is_some() {
                    return Ok(());
                }
                let mut done = self.stack.pop().expect("the record is open");
                done.span.1 = after;
                match self.stack.last_mut() {
                    Some(parent) => parent.children.push(done),
                    None => return Err(Stop::Done(finish(done, self.nodes, self.text))),
                }
            }
            Tok::Comment | Tok::Pi => {}
            Tok::Bang => {
                return Err(Stop::Fail(FluxError {
                    code: "XML_DOCTYPE",
                    message: "déclaration DOCTYPE refusée".into(),
                    line: at.0,
                    column: at.1,
                }))
            }
        }
        Ok(())
    }
}

/// The error quick-xml gives for a file that ends inside a token of kind `k` (`None`: too
/// short to tell), whose bytes so far are `tok`.
fn truncated(k: Option<Tok>, tok: &[u8]) -> (&'static str, String) {
    let t = |m: &str| ("XML_TRONQUE", m.to_string());
    // quick-xml tells a `<!` token by its third byte alone.
    let k = match (k, tok.get(2)) {
        (None, Some(b'-')) => Some(Tok::Comment),
        (None, Some(b'[')) => Some(Tok::CData),
        (None, None) if tok.starts_with(b"<!") => Some(Tok::Bang),
        _ => k,
    };
    match k {
        None | Some(Tok::Start) | Some(Tok::End) => {
            t("balise non fermée avant la fin du fichier (fichier tronqué ?)")
        }
        Some(Tok::Comment) => t("commentaire non fermé avant la fin du fichier"),
        Some(Tok::CData) => t("section CDATA non fermée avant la fin du fichier"),
        Some(Tok::Pi) => t("instruction de traitement non fermée"),
        Some(Tok::Ref) => (
            "XML_MALFORME",
            "caractère « & » isolé : il doit être écrit &amp;".to_string(),
        ),
        Some(Tok::Bang) => ("XML_MALFORME", "balise « <! » invalide".to_string()),
        Some(Tok::Text) => {
            t("fin de fichier inattendue : des éléments ne sont pas fermés (fichier tronqué ?)")
        }
    }
}

impl FluxReader {
    /// At depth 2, with quick-xml in its text state: when white space then a start tag
    /// follow in the current chunk, reads that record here and returns it; otherwise
    /// consumes nothing and returns `None` (quick-xml reads on).
    pub(super) fn fast_record(&mut self) -> Result<Option<Item>, FluxError> {
        {
            let c = self.xml.get_mut();
            let Ok(buf) = c.fill_buf() else {
                return Ok(None);
            };
            let Some(i) = buf.iter().position(|&b| !is_ws(b)) else {
                return Ok(None);
            };
            if buf[i] != b'<' || i + 1 >= buf.len() || matches!(buf[i + 1], b'/' | b'!' | b'?') {
                return Ok(None);
            }
            c.consume(i);
            if self.fragments {
                c.capture.get_or_insert_with(Vec::new).clear();
                c.capture_over = false;
            }
        }
        self.event_start = self.xml.get_ref().consumed;
        let node = self.fast_tree()?;
        self.fast_records += 1;
        Ok(Some(self.record_item(node)))
    }

    /// Reads the element at the stream's position (a `<` then a name) and all it holds.
    fn fast_tree(&mut self) -> Result<Node, FluxError> {
        let base = self.event_start;
        let mut b = Build {
            stack: Vec::with_capacity(8),
            skipped: Vec::new(),
            nodes: 0,
            text: 0,
            agents: 0,
            evenements: 0,
        };
        let mut spill = std::mem::take(&mut self.buf);
        let r = self.fast_tokens(&mut b, &mut spill, base);
        self.buf = spill;
        self.agents += b.agents;
        self.evenements += b.evenements;
        r
    }

    fn fast_tokens(
        &mut self,
        b: &mut Build,
        spill: &mut Vec<u8>,
        base: u64,
    ) -> Result<Node, FluxError> {
        loop {
            let at = self.pos();
            let before = self.offset(base);
            let c = self.xml.get_mut();
            let avail = match c.fill_buf() {
                Ok(a) => a,
                Err(e) => return Err(self.io_error(e)),
            };
            if avail.is_empty() {
                return Err(self.fatal(
                    "XML_TRONQUE",
                    "fin de fichier inattendue : des éléments ne sont pas fermés (fichier tronqué ?)".into(),
                    at,
                ));
            }
            let k = kind(avail);
            let mut quote = 0;
            let whole = k.and_then(|k| token_end(k, avail, 0, &mut quote).map(|n| (k, n)));
            let stop = match whole {
                Some((k, n)) => {
                    let after = before.saturating_add(n as u32);
                    let r = b.step(k, &avail[..n], at, before, after);
                    c.consume(n);
                    r
                }
                None => {
                    // The token goes on in the next chunk(s): gathered in `spill`.
                    spill.clear();
                    spill.extend_from_slice(avail);
                    let n = avail.len();
                    c.consume(n);
                    // How far the token was searched, under which kind.
                    let mut searched = k.map(|k| (k, n));
                    let (k, len) = loop {
                        let c = self.xml.get_mut();
                        let more = match c.fill_buf() {
                            Ok(a) => a,
                            Err(e) => return Err(self.io_error(e)),
                        };
                        if more.is_empty() {
                            let (code, message) = truncated(kind(spill), spill);
                            let end = self.pos();
                            return Err(self.fatal(code, message, end));
                        }
                        let old = spill.len();
                        spill.extend_from_slice(more);
                        let found = match searched {
                            Some((k, from)) => Some(k).zip(token_end(k, spill, from, &mut quote)),
                            None => kind(spill).and_then(|k| {
                                searched = Some((k, 0));
                                quote = 0;
                                Some(k).zip(token_end(k, spill, 0, &mut quote))
                            }),
                        };
                        if let Some((k, _)) = searched {
                            searched = Some((k, spill.len()));
                        }
                        match found {
                            Some((k, len)) => {
                                // (Only a `<!` the scan let through could end before.)
                                c.consume(len.saturating_sub(old));
                                spill.truncate(len);
                                break (k, len);
                            }
                            None => {
                                let n = more.len();
                                c.consume(n);
                            }
                        }
                    };
                    let after = before.saturating_add(len as u32);
                    b.step(k, &spill[..len], at, before, after)
                }
            };
            match stop {
                Ok(()) => {}
                Err(Stop::Done(node)) => return Ok(node),
                Err(Stop::Fail(e)) => return Err(e),
                Err(Stop::Mismatch { expected, found }) => {
                    let end = self.pos();
                    return Err(self.fatal(
                        "XML_MALFORME",
                        format!(
                            "balise fermante « </{found}> » alors que « </{expected}> » était attendue"
                        ),
                        end,
                    ));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
