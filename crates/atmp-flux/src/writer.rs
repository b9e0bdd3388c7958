//! Writes flux files: the format's own writer, used by the generator, the tests and the
//! sender side.

use std::io::{self, Write};

use crate::reader::Node;

/// A streaming writer of a flux file: prolog and root, header, blocks, records.
pub struct FluxWriter<W: Write> {
    w: W,
    in_block: bool,
}

impl<W: Write> FluxWriter<W> {
    /// Writes the prolog and opens `<flux version="1.0">`.
    pub fn new(mut w: W) -> io::Result<Self> {
        w.write_all(b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<flux version=\"1.0\">\n")?;
        Ok(FluxWriter { w, in_block: false })
    }

    /// Writes the `<entete>` element.
    pub fn header(&mut self, entete: &Node) -> io::Result<()> {
        write_node(&mut self.w, entete, 1)
    }

    /// Opens a `<collectivite>` block (closing the previous one).
    pub fn begin_block(&mut self, siret: &str, nom: Option<&str>) -> io::Result<()> {
        self.end_block()?;
        write_block_start(&mut self.w, siret, nom)?;
        self.in_block = true;
        Ok(())
    }

    /// Writes one record (`<service>` or `<agent>`) in the current block.
    pub fn record(&mut self, node: &Node) -> io::Result<()> {
        write_node(&mut self.w, node, 2)
    }

    /// The sink, past the header and any open block: for blocks written elsewhere (by
    /// [`write_block_start`], [`write_node`] at depth 2 and [`write_block_end`]), e.g. by a
    /// writer that must put the control totals in the header and so writes the blocks first.
    pub fn blocks(&mut self) -> io::Result<&mut W> {
        self.end_block()?;
        Ok(&mut self.w)
    }

    fn end_block(&mut self) -> io::Result<()> {
        if self.in_block {
            write_block_end(&mut self.w)?;
            self.in_block = false;
        }
        Ok(())
    }

    /// Closes the last block and the root; returns the sink.
    pub fn finish(mut self) -> io::Result<W> {
        self.end_block()?;
        self.w.write_all(b"</flux>\n")?;
        self.w.flush()?;
        Ok(self.w)
    }
}

/// Writes the opening tag of a `<collectivite>` block.
pub fn write_block_start<W: Write + ?Sized>(
    w: &mut W,
    siret: &str,
    nom: Option<&str>,
) -> io::Result<()> {
    write!(w, "  <collectivite siret=\"{}\"", escape(siret, true))?;
    if let Some(n) = nom {
        write!(w, " nom=\"{}\"", escape(n, true))?;
    }
    w.write_all(b">\n")
}

/// Writes the closing tag of a `<collectivite>` block.
pub fn write_block_end<W: Write + ?Sized>(w: &mut W) -> io::Result<()> {
    w.write_all(b"  </collectivite>\n")
}

/// Writes an element tree with two-space indentation.
pub fn write_node<W: Write + ?Sized>(w: &mut W, node: &Node, depth: usize) -> io::Result<()> {
    for _ in 0..depth {
        w.write_all(b"  ")?;
    }
    write!(w, "<{}", node.name)?;
    for (k, v) in &node.attrs {
        write!(w, " {}=\"{}\"", k, escape(v, true))?;
    }
    if node.children.is_empty() {
        if node.text.is_empty() {
            w.write_all(b"/>\n")
        } else {
            writeln!(w, ">{}</{}>", escape(&node.text, false), node.name)
        }
    } else {
        w.write_all(b">\n")?;
        for c in &node.children {
            write_node(w, c, depth + 1)?;
        }
        for _ in 0..depth {
            w.write_all(b"  ")?;
        }
        writeln!(w, "</{}>", node.name)
    }
}

/// Escapes text for XML content or attribute values.
pub fn escape(s: &str, attr: bool) -> std::borrow::Cow<'_, str> {
    if !s
        .bytes()
        .any(|b| matches!(b, b'<' | b'>' | b'&' | b'"' | b'\r' | b'\t' | b'\n'))
    {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' if attr => out.push_str("&quot;"),
            '\r' => out.push_str("&#13;"),
            '\t' if attr => out.push_str("&#9;"),
            '\n' if attr => out.push_str("&#10;"),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Helpers to build element trees.
impl Node {
    /// Adds a child element with text content (skipped when `text` is `None`).
    pub fn leaf(&mut self, name: &str, text: Option<&str>) -> &mut Self {
        if let Some(t) = text {
            let mut n = Node::new(name);
            n.text = t.to_string();
            self.children.push(n);
        }
        self
    }

    /// Adds an attribute.
    pub fn with_attr(mut self, name: &str, value: &str) -> Self {
        self.attrs
            .push((std::borrow::Cow::Owned(name.to_string()), value.to_string()));
        self
    }
}
