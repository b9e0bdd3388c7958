//! The read stage, shared by `atmp validate` and `atmp import` (and the platform's worker):
//! bytes → well-formedness scan → element trees → checked records, on a thread of its own,
//! handed to the next stage in batches over a bounded channel.
//!
//! Having one stage means a rule of reading exists once: the two commands cannot disagree
//! on what a file contains. The next stage (the checks' report, or the integration rules)
//! receives [`Piece`]s in file order through [`Pieces`].

use std::io::Read;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use atmp_model::{Nomenclatures, TypeFichier};

use crate::reader::{BlockStart, FluxReader, Item, Node};
use crate::record::{check_record, Context, Record};
use crate::scan::Limits;
use crate::{FluxError, Header};

/// What the read stage hands on, in file order.
#[derive(Debug)]
pub enum Piece<P> {
    /// The checked header (an error rejects the file: nothing follows).
    Header(Result<Header, FluxError>),
    /// A `<collectivite>` opening tag.
    Block(BlockStart),
    /// A checked record, with what the caller's `prepare` computed from it on the reader's
    /// thread.
    Record(Box<(Record, P)>),
    /// Non-blank text directly inside a block.
    Stray {
        line: u64,
        column: u64,
        path: String,
    },
    /// The end of the current block.
    BlockEnd,
    /// The end of a complete file, with the numbers of `<agent>` and `<evenement>` read.
    End { agents: u64, evenements: u64 },
    /// The file is rejected whole; nothing follows.
    Fatal(FluxError),
}

/// How many pieces travel together at most, and how many bytes (estimated) of records.
const BATCH: usize = 64;
const BATCH_BYTES: usize = 1 << 20;
/// Batches in flight: with [`BATCH_BYTES`] and the largest record a reader keeps, this
/// bounds the memory between the two stages (some 50 MB at worst).
const IN_FLIGHT: usize = 4;

/// What travels between the threads: a piece ready for the consumer, or a record whose checks
/// are left to the consumer's thread ([`Checks::Consumer`]).
enum Wire<P> {
    Ready(Piece<P>),
    Unchecked(Box<Unchecked>),
}

/// A record read but not yet checked, with what its checks need of the file.
struct Unchecked {
    node: Node,
    path: String,
    fragment: Option<String>,
    type_fichier: TypeFichier,
    date_creation: atmp_model::Date,
}

/// Which thread runs the checks of a record (structure, formats, codes, the rules of §3).
///
/// The reader's thread parses; the consumer's either stores (import: nearly a core of work)
/// or only collects issues (validate: nearly idle). Neither fixed choice keeps both cores
/// busy on every file: how much each side costs depends on the records, the base and the
/// backend. Either way the records and their issues are the same: only the thread differs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Checks {
    /// Record by record, on whichever side has slack (the default): the reader checks a
    /// record itself while batches wait in the channel for a consumer that is busy (it is
    /// behind), and leaves it to the consumer when the channel is empty or the consumer waits
    /// for work. A consumer woken but not yet running counts as waiting: on two cores it may
    /// wait for a scheduler tick, the time of a hundred records.
    #[default]
    Balanced,
    /// Always on the reader's thread, with `prepare`.
    Reader,
    /// Always on the consumer's thread, inside [`Pieces::next_piece`] (`prepare` runs there
    /// too).
    Consumer,
}

/// The receiving end of the stage, one piece at a time.
pub struct Pieces<'a, P> {
    rx: crossbeam_channel::Receiver<Vec<Wire<P>>>,
    buf: std::vec::IntoIter<Wire<P>>,
    nomenclatures: &'a Nomenclatures,
    prepare: &'a (dyn Fn(&Record) -> P + Sync),
    /// Set while the consumer waits for a batch ([`Checks::Balanced`]).
    waiting: std::sync::Arc<AtomicBool>,
}

impl<P> Pieces<'_, P> {
    /// The pieces already received that [`Pieces::next_piece`] gives next (at most a
    /// batch), checked now if the reader left them unchecked: a look ahead that never waits,
    /// so that the next stage can ask for several records' data at once.
    pub fn ahead(&mut self) -> impl Iterator<Item = &Piece<P>> {
        for w in self.buf.as_mut_slice() {
            if let Wire::Unchecked(_) = w {
                let Wire::Unchecked(u) = std::mem::replace(w, Wire::Ready(Piece::BlockEnd)) else {
                    unreachable!("matched just above")
                };
                *w = Wire::Ready(u.check(self.nomenclatures, self.prepare));
            }
        }
        self.buf.as_slice().iter().map_while(|w| match w {
            Wire::Ready(p) => Some(p),
            Wire::Unchecked(_) => None,
        })
    }

    /// The next piece; a reader that stopped without saying why is a read failure.
    pub fn next_piece(&mut self) -> Piece<P> {
        loop {
            match self.buf.next() {
                Some(Wire::Ready(p)) => return p,
                Some(Wire::Unchecked(u)) => return self.check(*u),
                None => {}
            }
            self.waiting.store(true, Ordering::Relaxed);
            let got = self.rx.recv();
            self.waiting.store(false, Ordering::Relaxed);
            match got {
                Ok(b) => self.buf = b.into_iter(),
                Err(_) => {
                    return Piece::Fatal(FluxError::file(
                        "LECTURE",
                        "la lecture du fichier s'est interrompue".into(),
                    ))
                }
            }
        }
    }

    fn check(&self, u: Unchecked) -> Piece<P> {
        u.check(self.nomenclatures, self.prepare)
    }
}

impl Unchecked {
    /// The record's checks and `prepare`, on whichever thread [`Checks`] chose.
    fn check<P>(
        self,
        nomenclatures: &Nomenclatures,
        prepare: &(dyn Fn(&Record) -> P + Sync),
    ) -> Piece<P> {
        let Unchecked {
            mut node,
            path,
            fragment,
            type_fichier,
            date_creation,
        } = self;
        let c = Context {
            type_fichier,
            date_creation: Some(date_creation),
            nomenclatures,
        };
        let mut rec = check_record(&mut node, &path, &c);
        rec.fragment = fragment;
        drop(node);
        let prep = prepare(&rec);
        Piece::Record(Box::new((rec, prep)))
    }
}

/// The sending end: pieces go in batches, so that the two threads rarely wake each other.
struct PieceTx<P> {
    out: crossbeam_channel::Sender<Vec<Wire<P>>>,
    buf: Vec<Wire<P>>,
    weight: usize,
}

impl<P> PieceTx<P> {
    fn send(&mut self, p: Piece<P>, weight: usize) -> Result<(), ()> {
        self.send_wire(Wire::Ready(p), weight)
    }

    fn send_wire(&mut self, p: Wire<P>, weight: usize) -> Result<(), ()> {
        let flush = !matches!(p, Wire::Ready(Piece::Record(_)) | Wire::Unchecked(_));
        self.buf.push(p);
        self.weight += weight;
        if flush || self.buf.len() >= BATCH || self.weight >= BATCH_BYTES {
            self.weight = 0;
            let batch = std::mem::replace(&mut self.buf, Vec::with_capacity(BATCH));
            self.out.send(batch).map_err(|_| ())
        } else {
            Ok(())
        }
    }
}

/// What the read stage needs.
pub struct StageOptions<'a> {
    pub limits: Limits,
    pub nomenclatures: &'a Nomenclatures,
    /// Bytes of decoded input read so far, updated now and then (progress reports).
    pub position: Option<&'a AtomicU64>,
    /// Keep each top-level record's XML fragment ([`Record::fragment`]).
    pub fragments: bool,
    /// Which thread checks the records.
    pub checks: Checks,
}

/// Runs the read stage over `raw` (the bytes as received) on its own thread, and `consume`
/// on the calling thread over its pieces. `prepare` runs on the reader's thread for each
/// record (work taken off the consumer's core).
pub fn read_stage<'a, P, R>(
    raw: Box<dyn Read + Send>,
    opts: &StageOptions<'a>,
    prepare: &'a (dyn Fn(&Record) -> P + Sync),
    consume: impl FnOnce(&mut Pieces<'a, P>) -> R,
) -> R
where
    P: Send,
{
    let (tx, rx) = crossbeam_channel::bounded::<Vec<Wire<P>>>(IN_FLIGHT);
    let waiting = std::sync::Arc::new(AtomicBool::new(false));
    let flag = waiting.clone();
    std::thread::scope(|s| {
        std::thread::Builder::new()
            .name("atmp-lecture".into())
            .spawn_scoped(s, move || {
                let mut out = PieceTx {
                    out: tx,
                    buf: Vec::with_capacity(BATCH),
                    weight: 0,
                };
                produce(raw, opts, prepare, &mut out, &flag);
            })
            .expect("the reader thread starts");
        let mut pieces = Pieces {
            rx,
            buf: Vec::new().into_iter(),
            nomenclatures: opts.nomenclatures,
            prepare,
            waiting,
        };
        // `pieces` is dropped when `consume` returns: a reader still running stops at its
        // next send.
        consume(&mut pieces)
    })
}

fn produce<P>(
    raw: Box<dyn Read + Send>,
    opts: &StageOptions<'_>,
    prepare: &(dyn Fn(&Record) -> P + Sync),
    out: &mut PieceTx<P>,
    waiting: &AtomicBool,
) {
    let mut reader = match crate::input::open_reader(raw, &opts.limits) {
        Ok(input) if opts.fragments => FluxReader::new(input).keep_fragments(),
        Ok(input) => FluxReader::new(input),
        Err(e) => {
            let _ = out.send(Piece::Fatal(e), 0);
            return;
        }
    };
    let mut ctx: Option<(TypeFichier, atmp_model::Date)> = None;
    let mut n = 0u64;
    loop {
        let (piece, weight) = match reader.next_item() {
            Ok(Some(Item::Header(node))) => {
                let h = Header::from_node(&node);
                if let Ok(h) = &h {
                    ctx = Some((h.type_fichier, h.date_creation.date()));
                }
                let failed = h.is_err();
                if out.send(Piece::Header(h), 0).is_err() || failed {
                    return;
                }
                continue;
            }
            Ok(Some(Item::BlockStart(b))) => (Piece::Block(b), 0),
            Ok(Some(Item::Record {
                node,
                path,
                fragment,
            })) => {
                let (type_fichier, date_creation) =
                    ctx.expect("the reader yields the header first");
                n += 1;
                if n.is_multiple_of(256) {
                    if let Some(p) = opts.position {
                        p.store(reader.position(), Ordering::Relaxed);
                    }
                }
                let weight = node.weight + fragment.as_ref().map_or(0, String::len);
                let u = Unchecked {
                    node,
                    path,
                    fragment,
                    type_fichier,
                    date_creation,
                };
                // Balanced: an empty channel, or a consumer waiting, means it has slack.
                let leave = match opts.checks {
                    Checks::Consumer => true,
                    Checks::Reader => false,
                    Checks::Balanced => out.out.is_empty() || waiting.load(Ordering::Relaxed),
                };
                match leave {
                    true => {
                        if out.send_wire(Wire::Unchecked(Box::new(u)), weight).is_err() {
                            return;
                        }
                        continue;
                    }
                    false => (u.check(opts.nomenclatures, prepare), weight),
                }
            }
            Ok(Some(Item::StrayText { line, column, path })) => {
                (Piece::Stray { line, column, path }, 0)
            }
            Ok(Some(Item::BlockEnd)) => (Piece::BlockEnd, 0),
            Ok(None) => {
                let (agents, evenements) = reader.totals();
                let _ = out.send(Piece::End { agents, evenements }, 0);
                return;
            }
            Err(e) => {
                let _ = out.send(Piece::Fatal(e), 0);
                return;
            }
        };
        if out.send(piece, weight).is_err() {
            return;
        }
    }
}
