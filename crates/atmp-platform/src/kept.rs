//! Kept files (received files, logs) read from the platform's file store, as async streams
//! for the web's downloads and the sender's `retours/`: a blocking thread reads the store
//! (a local file, or a large object of the base) 64 KiB at a time into a channel of four
//! chunks, so a download holds at most a few hundred KiB whatever the file's size.

use std::io::{Read, Write};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::sync::mpsc;

const CHUNK: usize = 64 * 1024;

/// Reads `src` on a thread of its own into a bounded channel, after its first `skip` bytes;
/// an error ends the stream.
pub(crate) fn chunks(
    mut src: Box<dyn Read + Send>,
    skip: u64,
) -> mpsc::Receiver<std::io::Result<Vec<u8>>> {
    let (tx, rx) = mpsc::channel(4);
    let spawned = std::thread::Builder::new()
        .name("atmp-lecture-fichier".into())
        .spawn(move || {
            if skip > 0 {
                if let Err(e) = std::io::copy(&mut (&mut src).take(skip), &mut std::io::sink()) {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            }
            loop {
                let mut buf = vec![0u8; CHUNK];
                match src.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        buf.truncate(n);
                        if tx.blocking_send(Ok(buf)).is_err() {
                            break;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        let _ = tx.blocking_send(Err(e));
                        break;
                    }
                }
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "file reading thread not started");
    }
    rx
}

/// A writer that sends what it is given, in chunks of [`CHUNK`], into a bounded channel.
struct ChannelWriter {
    tx: mpsc::Sender<std::io::Result<Vec<u8>>>,
    buf: Vec<u8>,
}

impl std::io::Write for ChannelWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(b);
        if self.buf.len() >= CHUNK {
            self.flush()?;
        }
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "download closed"))
    }
}

/// Reads a log on a thread of its own into a bounded channel, rewritten as a spreadsheet
/// opens it (`tableur`, see [`atmp_integrator::write_tableur`]) and/or gzip-compressed
/// (`gzip`): memory stays bounded whatever the log's size.
pub(crate) fn log_chunks(
    src: Box<dyn Read + Send>,
    tableur: bool,
    gzip: bool,
) -> mpsc::Receiver<std::io::Result<Vec<u8>>> {
    let (tx, rx) = mpsc::channel(4);
    let tx2 = tx.clone();
    let spawned = std::thread::Builder::new()
        .name("atmp-lecture-journal".into())
        .spawn(move || {
            let sink = ChannelWriter {
                tx,
                buf: Vec::with_capacity(CHUNK),
            };
            let run = |out: &mut dyn std::io::Write| -> std::io::Result<()> {
                let mut src = std::io::BufReader::with_capacity(CHUNK, src);
                if tableur {
                    atmp_integrator::write_tableur(src, &mut *out)?;
                } else {
                    std::io::copy(&mut src, out)?;
                }
                out.flush()
            };
            let r = if gzip {
                let mut gz = flate2::write::GzEncoder::new(sink, flate2::Compression::fast());
                run(&mut gz).and_then(|_| gz.finish()?.flush())
            } else {
                let mut sink = sink;
                run(&mut sink).and_then(|_| sink.flush())
            };
            if let Err(e) = r {
                if e.kind() != std::io::ErrorKind::BrokenPipe {
                    let _ = tx2.blocking_send(Err(e));
                }
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "log reading thread not started");
    }
    rx
}

/// The chunks as a stream (a web response's body).
pub(crate) fn stream(
    rx: mpsc::Receiver<std::io::Result<Vec<u8>>>,
) -> impl futures_util::Stream<Item = std::io::Result<Vec<u8>>> {
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) })
}

/// The chunks as an `AsyncRead` (an FTPS download).
pub(crate) struct ChannelReader {
    rx: mpsc::Receiver<std::io::Result<Vec<u8>>>,
    chunk: Vec<u8>,
    at: usize,
}

impl ChannelReader {
    pub(crate) fn new(rx: mpsc::Receiver<std::io::Result<Vec<u8>>>) -> ChannelReader {
        ChannelReader {
            rx,
            chunk: Vec::new(),
            at: 0,
        }
    }
}

impl tokio::io::AsyncRead for ChannelReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        while self.at == self.chunk.len() {
            match self.rx.poll_recv(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(e)),
                Poll::Ready(Some(Ok(c))) => {
                    self.chunk = c;
                    self.at = 0;
                }
            }
        }
        let n = buf.remaining().min(self.chunk.len() - self.at);
        let at = self.at;
        buf.put_slice(&self.chunk[at..at + n]);
        self.at += n;
        Poll::Ready(Ok(()))
    }
}
