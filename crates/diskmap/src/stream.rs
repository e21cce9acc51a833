//! One ordered pass over a map: pieces read by a bounded window of parallel readers,
//! delivered in disk order to every sink, each sink on a thread of its own.

use crate::to_usize;
use std::collections::BTreeMap;
use std::fs::File;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::sync_channel;
use std::sync::{Arc, Condvar, Mutex};

use imgbuild_blockio::{PlannedSource, Progress};

use crate::{Content, Error, Map, Result, SourceFile};

/// Largest piece of data handed to the sinks at once.
pub const PIECE: u64 = 2 << 20;
/// Largest piece of zeros (they cost no memory; the bound keeps progress and cancellation
/// moving while a sink hashes or compresses a long run of zeros).
pub const ZERO_PIECE: u64 = 64 << 20;
/// Extents shorter than this are gathered into shared pieces (many small files: one piece).
const SMALL: u64 = 256 << 10;
/// Pieces a sink may have queued before the reader waits for it.
const QUEUE: usize = 2;

/// The bytes of a piece.
#[derive(Debug)]
pub enum Data<'m> {
    /// All zeros (free space or zeros that matter: see the map for which).
    Zero,
    /// Memory of the map itself.
    Mem(&'m [u8]),
    /// Read from host files (zeros between them filled in).
    Buf(Vec<u8>),
}

/// `len` bytes of the disk at `offset`.
#[derive(Debug)]
pub struct Piece<'m> {
    pub offset: u64,
    pub len: u64,
    pub data: Data<'m>,
    /// When the whole piece is one range of one host file: that file, open, and where the
    /// range starts in it (a sink writing a plain file may `copy_file_range` from it).
    pub source: Option<(Arc<File>, &'m SourceFile, u64)>,
}

impl Piece<'_> {
    /// The bytes, or `None` for zeros.
    pub fn bytes(&self) -> Option<&[u8]> {
        match &self.data {
            Data::Zero => None,
            Data::Mem(m) => Some(m),
            Data::Buf(b) => Some(b),
        }
    }
}

/// A consumer of the disk's bytes. [`stream`] calls [`Sink::piece`] with every piece in disk
/// order, without gaps, then [`Sink::finish`] once.
pub trait Sink: Send {
    /// What this sink makes, for error messages (`writing nixos.img.tmp`).
    fn name(&self) -> String;
    fn piece(&mut self, piece: &Piece<'_>) -> Result<(), Box<dyn std::error::Error + Send + Sync>>;
    fn finish(&mut self) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        Ok(())
    }
}

#[derive(Clone, Copy, Debug)]
pub struct StreamOptions {
    /// Reader threads (at least 1). Sinks get a thread each besides.
    pub readers: usize,
}

impl Default for StreamOptions {
    fn default() -> Self {
        StreamOptions { readers: 2 }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Zero,
    Mem,
    File,
    /// Several small extents copied into one buffer.
    Batch,
}

/// A piece to be read: `len` bytes at `offset`, starting in extent `first`.
#[derive(Clone, Copy, Debug)]
struct Spec {
    offset: u64,
    len: u64,
    first: usize,
    kind: Kind,
}

/// Cut the map into pieces: big extents into pieces of their own (at most [`PIECE`] bytes,
/// [`ZERO_PIECE`] of zeros), runs of small ones gathered into batches of up to [`PIECE`].
fn specs(map: &Map) -> Vec<Spec> {
    let mut out = Vec::new();
    let mut batch: Option<Spec> = None;
    for (i, e) in map.extents.iter().enumerate() {
        let zero = e.is_zeros();
        let small = e.len < SMALL && (!zero || batch.is_some());
        if small {
            if let Some(b) = batch.filter(|b| b.len + e.len > PIECE) {
                out.push(b);
                batch = None;
            }
            match &mut batch {
                Some(b) => b.len += e.len,
                None => {
                    batch = Some(Spec {
                        offset: e.offset,
                        len: e.len,
                        first: i,
                        kind: Kind::Batch,
                    })
                }
            }
            continue;
        }
        out.extend(batch.take());
        let (kind, step) = match e.content {
            Content::Free | Content::Zero => (Kind::Zero, ZERO_PIECE),
            Content::Bytes { .. } => (Kind::Mem, PIECE),
            Content::File { .. } => (Kind::File, PIECE),
        };
        let mut off = e.offset;
        while off < e.end() {
            let len = step.min(e.end() - off);
            out.push(Spec {
                offset: off,
                len,
                first: i,
                kind,
            });
            off += len;
        }
    }
    out.extend(batch);
    out
}

/// Copy the bytes of `[offset, offset + buf.len())` into `buf` (zeros stay as they are in
/// `buf`: pass it zeroed), starting the search at extent `first`.
fn fill_from(map: &Map, first: usize, offset: u64, buf: &mut [u8]) -> Result<()> {
    let end = offset + buf.len() as u64;
    for e in map.extents[first..].iter().take_while(|e| e.offset < end) {
        let from = e.offset.max(offset);
        let to = e.end().min(end);
        if from >= to {
            continue;
        }
        let dst = &mut buf[to_usize(from - offset)..to_usize(to - offset)];
        let within = from - e.offset;
        match &e.content {
            Content::Free | Content::Zero => {}
            Content::Bytes { data, start } => {
                let s = *start + to_usize(within);
                dst.copy_from_slice(&data[s..s + dst.len()]);
            }
            Content::File { file, offset: fo } => {
                PlannedSource::open(&file.path, file.size)?.read_exact_at(fo + within, dst)?;
            }
        }
    }
    Ok(())
}

pub(crate) fn fill(map: &Map, offset: u64, buf: &mut [u8]) -> Result<()> {
    buf.fill(0);
    if buf.is_empty() {
        return Ok(());
    }
    fill_from(map, map.find(offset), offset, buf)
}

fn materialize<'m>(map: &'m Map, s: &Spec) -> Result<Piece<'m>> {
    let e = &map.extents[s.first];
    let within = s.offset - e.offset;
    let (data, source) = match s.kind {
        Kind::Zero => (Data::Zero, None),
        Kind::Mem => {
            let b = e.bytes().expect("a Mem spec starts in a Bytes extent");
            (
                Data::Mem(&b[to_usize(within)..to_usize(within + s.len)]),
                None,
            )
        }
        Kind::File => {
            let Content::File { file, offset } = &e.content else {
                unreachable!("a File spec starts in a File extent")
            };
            let f = PlannedSource::open(&file.path, file.size)?;
            let mut buf = vec![0u8; to_usize(s.len)];
            f.read_exact_at(offset + within, &mut buf)?;
            (
                Data::Buf(buf),
                Some((Arc::new(f.into_file()), &**file, offset + within)),
            )
        }
        Kind::Batch => {
            let mut buf = vec![0u8; to_usize(s.len)];
            fill_from(map, s.first, s.offset, &mut buf)?;
            (Data::Buf(buf), None)
        }
    };
    Ok(Piece {
        offset: s.offset,
        len: s.len,
        data,
        source,
    })
}

struct Window<'m> {
    ready: BTreeMap<usize, Result<Piece<'m>>>,
    /// Pieces handed to the sinks so far.
    delivered: usize,
    stop: bool,
}

/// Feed every byte of `map`, in order, to every sink; then finish them. Readers run ahead of
/// the slowest sink by a bounded number of pieces, so memory stays bounded whatever the
/// map's size. `progress` counts disk bytes handed to all sinks.
///
/// The first error (a source that cannot be read or changed size, a sink's error, `cancel`)
/// stops everything and is returned; sinks are then not finished.
pub fn stream(
    map: &Map,
    sinks: &mut [&mut dyn Sink],
    opts: &StreamOptions,
    progress: &dyn Progress,
    cancel: &AtomicBool,
) -> Result<()> {
    let specs = specs(map);
    let readers = opts.readers.max(1);
    let ahead = readers + 2;
    let next = AtomicUsize::new(0);
    let window = Mutex::new(Window {
        ready: BTreeMap::new(),
        delivered: 0,
        stop: false,
    });
    let (ready_cv, room_cv) = (Condvar::new(), Condvar::new());
    let lock = || window.lock().unwrap_or_else(|p| p.into_inner());

    std::thread::scope(|scope| -> Result<()> {
        for _ in 0..readers {
            let (specs, next, lock, ready_cv, room_cv) =
                (&specs, &next, &lock, &ready_cv, &room_cv);
            std::thread::Builder::new()
                .name("imgbuild-read".into())
                .spawn_scoped(scope, move || loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(spec) = specs.get(i) else { break };
                    {
                        let mut w = lock();
                        while !w.stop && i >= w.delivered + ahead {
                            w = room_cv.wait(w).unwrap_or_else(|p| p.into_inner());
                        }
                        if w.stop {
                            break;
                        }
                    }
                    let r = if cancel.load(Ordering::Relaxed) {
                        Err(Error::Interrupted)
                    } else {
                        materialize(map, spec)
                    };
                    lock().ready.insert(i, r);
                    ready_cv.notify_all();
                })
                .map_err(Error::Threads)?;
        }

        let mut senders = Vec::new();
        let mut handles = Vec::new();
        for sink in sinks.iter_mut() {
            let (tx, rx) = sync_channel::<Arc<Piece>>(QUEUE);
            senders.push(tx);
            let sink: &mut dyn Sink = &mut **sink;
            let h = std::thread::Builder::new()
                .name("imgbuild-sink".into())
                .spawn_scoped(scope, move || -> Result<()> {
                    for p in rx {
                        if let Err(source) = sink.piece(&p) {
                            return Err(Error::Sink {
                                sink: sink.name(),
                                source,
                            });
                        }
                    }
                    Ok(())
                })
                .map_err(Error::Threads)?;
            handles.push(h);
        }

        let mut result = Ok(());
        for i in 0..specs.len() {
            let piece = {
                let mut w = lock();
                loop {
                    if let Some(r) = w.ready.remove(&i) {
                        break r;
                    }
                    w = ready_cv.wait(w).unwrap_or_else(|p| p.into_inner());
                }
            };
            lock().delivered = i + 1;
            room_cv.notify_all();
            let piece = match piece {
                Ok(p) => Arc::new(p),
                Err(e) => {
                    result = Err(e);
                    break;
                }
            };
            let len = piece.len;
            // A send fails only when that sink's thread stopped on an error (joined below).
            if senders.iter().any(|tx| tx.send(piece.clone()).is_err()) {
                break;
            }
            drop(piece);
            progress.add(len);
            if cancel.load(Ordering::Relaxed) {
                result = Err(Error::Interrupted);
                break;
            }
        }
        lock().stop = true;
        room_cv.notify_all();
        drop(senders);
        let mut sink_result = Ok(());
        for h in handles {
            let r = h.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
            if sink_result.is_ok() {
                sink_result = r;
            }
        }
        // A sink's own failure explains a stop better than the reader's view of it.
        sink_result.and(result)
    })?;

    for sink in sinks.iter_mut() {
        sink.finish().map_err(|source| Error::Sink {
            sink: sink.name(),
            source,
        })?;
    }
    Ok(())
}
