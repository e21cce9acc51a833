//! Parallel, reproducible gzip (RFC 1952), for containers that must be gzip (GCE's
//! `.tar.gz`).
//!
//! The input is cut into 1 MiB chunks at fixed positions; each chunk is deflated on its own
//! (raw deflate, no shared dictionary) and ends with a sync flush, so the chunks' outputs
//! concatenate into one deflate stream, closed by a final block at [`Gzip::finish`]. That is
//! how pigz works, without its dictionary carry-over (about 0.1% larger). Chunks are deflated
//! by a pool of `workers` threads; the output depends only on the input, the level and the deflate
//! implementation (miniz_oxide, pinned in the workspace), never on the worker count. The
//! header records no name and no time.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use flate2::{Compress, Compression, FlushCompress, Status};

/// Input bytes per independently deflated chunk.
const CHUNK: usize = 1 << 20;

type Job = (u64, Vec<u8>);
type Done = (u64, io::Result<Vec<u8>>);

/// A gzip member written to `W` as input arrives through [`Write`]. Full chunks go to a pool
/// of deflate threads while the caller goes on filling the next; their outputs are written
/// in order by the caller's thread. At most `2 * workers + 2` chunks are in flight.
pub struct Gzip<W: Write> {
    inner: W,
    level: u32,
    current: Vec<u8>,
    /// The work queue; dropping it (with the whole `Gzip`, on an error) stops the workers.
    jobs: Option<SyncSender<Job>>,
    done: Receiver<Done>,
    pool: Vec<JoinHandle<()>>,
    max_in_flight: u64,
    /// Chunks sent, and the next one to write out.
    sent: u64,
    next: u64,
    /// Deflated chunks that came back before their turn.
    early: BTreeMap<u64, Vec<u8>>,
    crc: crc32fast::Hasher,
    input: u64,
    written: u64,
}

impl<W: Write> Gzip<W> {
    /// A gzip stream at `level` (1..=9) deflated by `workers` threads, written to `inner`.
    pub fn new(mut inner: W, level: u32, workers: usize) -> io::Result<Self> {
        // ID1 ID2 CM=deflate FLG=0 MTIME=0 XFL=0 OS=3 (Unix).
        let header = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3];
        inner.write_all(&header)?;
        let level = level.clamp(1, 9);
        let workers = workers.max(1);
        let (jobs, queue) = mpsc::sync_channel::<Job>(workers);
        let (results, done) = mpsc::channel::<Done>();
        let queue = Arc::new(Mutex::new(queue));
        let pool = (0..workers)
            .map(|_| {
                let queue = Arc::clone(&queue);
                let results = results.clone();
                std::thread::spawn(move || loop {
                    // A poisoned lock means another worker panicked: stop too.
                    let job = match queue.lock() {
                        Ok(q) => q.recv(),
                        Err(_) => return,
                    };
                    let Ok((seq, chunk)) = job else { return };
                    let out = deflate(&chunk, level, FlushCompress::Sync);
                    if results.send((seq, out)).is_err() {
                        return;
                    }
                })
            })
            .collect();
        Ok(Gzip {
            inner,
            level,
            current: Vec::with_capacity(CHUNK),
            jobs: Some(jobs),
            done,
            pool,
            max_in_flight: 2 * workers as u64 + 2,
            sent: 0,
            next: 0,
            early: BTreeMap::new(),
            crc: crc32fast::Hasher::new(),
            input: 0,
            written: header.len() as u64,
        })
    }

    /// Bytes written to `W` so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Writes out every deflated chunk whose turn has come; waits for results while more
    /// than `limit` chunks are in flight.
    fn collect(&mut self, limit: u64) -> io::Result<()> {
        loop {
            while let Some(out) = self.early.remove(&self.next) {
                self.inner.write_all(&out)?;
                self.written += out.len() as u64;
                self.next += 1;
            }
            let in_flight = self.sent - self.next;
            let got = if in_flight > limit {
                self.done
                    .recv()
                    .map_err(|_| io::Error::other("the deflate threads stopped"))?
            } else {
                match self.done.try_recv() {
                    Ok(d) => d,
                    Err(_) => return Ok(()),
                }
            };
            let (seq, out) = got;
            self.early.insert(seq, out?);
        }
    }

    /// Deflate what is left, close the stream with the CRC-32 and length; returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.jobs = None;
        self.collect(0)?;
        let last = std::mem::take(&mut self.current);
        let out = deflate(&last, self.level, FlushCompress::Finish)?;
        self.inner.write_all(&out)?;
        let mut trailer = [0u8; 8];
        trailer[..4].copy_from_slice(&self.crc.clone().finalize().to_le_bytes());
        // ISIZE: the input length modulo 2^32, by definition.
        trailer[4..].copy_from_slice(&((self.input & 0xFFFF_FFFF) as u32).to_le_bytes());
        self.inner.write_all(&trailer)?;
        self.written += (out.len() + trailer.len()) as u64;
        self.inner.flush()?;
        for t in std::mem::take(&mut self.pool) {
            let _ = t.join();
        }
        Ok(self.inner)
    }
}

/// One chunk as raw deflate, ending with `flush` (a sync flush, or the final block).
fn deflate(input: &[u8], level: u32, flush: FlushCompress) -> io::Result<Vec<u8>> {
    let mut c = Compress::new(Compression::new(level), false);
    let mut out = Vec::with_capacity(input.len() / 2 + 1024);
    loop {
        let consumed = usize::try_from(c.total_in()).unwrap_or(usize::MAX);
        let status = c
            .compress_vec(&input[consumed.min(input.len())..], &mut out, flush)
            .map_err(io::Error::other)?;
        let done = c.total_in() == input.len() as u64;
        match status {
            Status::StreamEnd => return Ok(out),
            _ if done && out.len() < out.capacity() && flush != FlushCompress::Finish => {
                return Ok(out)
            }
            _ => out.reserve(out.capacity().max(64 << 10)),
        }
    }
}

impl<W: Write> Write for Gzip<W> {
    fn write(&mut self, mut buf: &[u8]) -> io::Result<usize> {
        let n = buf.len();
        self.crc.update(buf);
        self.input += n as u64;
        while !buf.is_empty() {
            let take = (CHUNK - self.current.len()).min(buf.len());
            self.current.extend_from_slice(&buf[..take]);
            buf = &buf[take..];
            if self.current.len() == CHUNK {
                let chunk = std::mem::replace(&mut self.current, Vec::with_capacity(CHUNK));
                let jobs = self
                    .jobs
                    .as_ref()
                    .ok_or_else(|| io::Error::other("finished"))?;
                jobs.send((self.sent, chunk))
                    .map_err(|_| io::Error::other("the deflate threads stopped"))?;
                self.sent += 1;
                self.collect(self.max_in_flight)?;
            }
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        // Chunks are cut at fixed positions: flushing does not deflate a partial one.
        self.inner.flush()
    }
}
