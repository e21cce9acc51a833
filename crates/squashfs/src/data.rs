//! File data: which files are stored (identical contents once), how they are cut into
//! blocks and fragments, and the parallel, ordered compression of those blocks into the
//! output.
//!
//! The plan is arithmetic on sizes (plus content hashes for files whose size is shared):
//! every full block of a file is a job; a file smaller than a block goes, whole, into the
//! fragment being filled, which becomes a job of its own when the next such file no longer
//! fits. Jobs run on rayon's current pool (read, test for zeros, compress), at most a
//! window ahead of the one being written, and are written in job order: the bytes do not
//! depend on the thread count, and at most a window of blocks is in memory.

use std::collections::HashMap;
use std::io::Write;
use std::sync::{mpsc, Arc};

use imgbuild_blockio::{to_usize, PlannedSource};
use imgbuild_fstree::{FileData, NodeId};
use rayon::prelude::*;
use sha2::{Digest, Sha256};

use crate::inode::FileInfo;
use crate::meta::Codec;
use crate::{Error, Result};

/// Block size entry bit: stored uncompressed.
pub(crate) const BLOCK_UNCOMPRESSED: u32 = 1 << 24;

/// A byte range of one stored file.
#[derive(Clone, Copy, Debug)]
struct Piece {
    /// Index of the stored file.
    file: usize,
    offset: u64,
    len: usize,
}

#[derive(Debug)]
enum Job {
    /// One data block of the stored file `piece.file`.
    Block(Piece),
    /// One fragment block: small files back to back.
    Fragment(Vec<Piece>),
}

impl Job {
    fn len(&self) -> usize {
        match self {
            Job::Block(p) => p.len,
            Job::Fragment(ps) => ps.iter().map(|p| p.len).sum(),
        }
    }
}

/// A fragment table entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Fragment {
    pub start: u64,
    /// Stored size, bit 24 set when stored uncompressed.
    pub size: u32,
}

/// Which files are stored, and the jobs that store them.
pub(crate) struct Plan<'t> {
    /// The stored files, in tree order; duplicates of an earlier file are left out.
    files: Vec<&'t FileData>,
    /// For each tree node that is a regular file: the index of the stored file holding its
    /// bytes.
    pub stored: HashMap<NodeId, usize>,
    /// One per stored file: size and fragment now, blocks once written.
    pub infos: Vec<FileInfo>,
    jobs: Vec<Job>,
    pub fragments: u32,
    /// Files whose bytes another file already holds.
    pub duplicates: u64,
}

/// Bytes hashed at a time.
const HASH_BUF: usize = 256 << 10;

/// A stored file's bytes, ready to be read by range.
enum Source<'t> {
    Bytes(&'t [u8]),
    /// A host file opened once, checked to be still a regular file of its planned size
    /// (never blocks on a FIFO swapped in).
    Host(PlannedSource),
}

impl<'t> Source<'t> {
    fn open(data: &'t FileData) -> Result<Self> {
        match data {
            FileData::Bytes(b) => Ok(Source::Bytes(&b[..])),
            FileData::Host { path, size } => Ok(Source::Host(PlannedSource::open(path, *size)?)),
        }
    }

    /// Appends bytes `offset..offset + len` to `buf`; a file that ends early is
    /// [`SourceError::Changed`](imgbuild_blockio::SourceError::Changed) with the size it was
    /// found to have.
    fn read(&self, offset: u64, len: usize, buf: &mut Vec<u8>) -> Result<()> {
        match self {
            Source::Bytes(b) => {
                let o = to_usize(offset);
                buf.extend_from_slice(&b[o..o + len]);
            }
            Source::Host(src) => {
                let start = buf.len();
                buf.resize(start + len, 0);
                src.read_exact_at(offset, &mut buf[start..])?;
            }
        }
        Ok(())
    }
}

/// SHA-256 of a file's bytes, read through one descriptor.
fn content_hash(data: &FileData) -> Result<[u8; 32]> {
    let src = Source::open(data)?;
    if let Source::Bytes(b) = src {
        return Ok(Sha256::digest(b).into());
    }
    let size = data.size();
    let mut h = Sha256::new();
    let mut buf = Vec::with_capacity(HASH_BUF);
    let mut offset = 0;
    while offset < size {
        let len = to_usize((size - offset).min(HASH_BUF as u64));
        buf.clear();
        src.read(offset, len, &mut buf)?;
        h.update(&buf);
        offset += len as u64;
    }
    Ok(h.finalize().into())
}

/// Plans the data of `files` (every regular file once, in tree order).
pub(crate) fn plan<'t>(
    files: &[(NodeId, &'t FileData)],
    block_size: u32,
    fragments: bool,
    dedup: bool,
) -> Result<Plan<'t>> {
    // Only files whose size another file shares can be duplicates: hash those.
    let mut same_size: HashMap<u64, u32> = HashMap::new();
    if dedup {
        for (_, d) in files {
            if d.size() > 0 {
                *same_size.entry(d.size()).or_default() += 1;
            }
        }
    }
    let candidates: Vec<usize> = (0..files.len())
        .filter(|&i| same_size.get(&files[i].1.size()).is_some_and(|&n| n > 1))
        .collect();
    let hashes: Vec<Result<[u8; 32]>> = candidates
        .par_iter()
        .map(|&i| content_hash(files[i].1))
        .collect();
    let mut hash_of: HashMap<usize, [u8; 32]> = HashMap::with_capacity(candidates.len());
    for (&i, h) in candidates.iter().zip(hashes) {
        hash_of.insert(i, h?);
    }

    let bs = u64::from(block_size);
    let mut p = Plan {
        files: Vec::new(),
        stored: HashMap::with_capacity(files.len()),
        infos: Vec::new(),
        jobs: Vec::new(),
        fragments: 0,
        duplicates: 0,
    };
    let mut first_with: HashMap<(u64, [u8; 32]), usize> = HashMap::new();
    let mut frag: Vec<Piece> = Vec::new();
    let mut frag_len = 0usize;
    for (i, &(node, data)) in files.iter().enumerate() {
        let size = data.size();
        if let Some(h) = hash_of.get(&i) {
            if let Some(&s) = first_with.get(&(size, *h)) {
                p.stored.insert(node, s);
                p.duplicates += 1;
                continue;
            }
            first_with.insert((size, *h), p.files.len());
        }
        let s = p.files.len();
        p.files.push(data);
        p.stored.insert(node, s);
        let mut info = FileInfo {
            size,
            ..FileInfo::default()
        };
        // Like mksquashfs by default, only files smaller than a block go into fragments;
        // a bigger file's last partial block is a short block of its own.
        if fragments && size > 0 && size < bs {
            let len = to_usize(size);
            if frag_len + len > to_usize(bs) {
                p.jobs.push(Job::Fragment(std::mem::take(&mut frag)));
                p.fragments += 1;
                frag_len = 0;
            }
            let off = u32::try_from(frag_len).expect("a fragment is at most one block");
            info.fragment = Some((p.fragments, off));
            frag.push(Piece {
                file: s,
                offset: 0,
                len,
            });
            frag_len += len;
        } else {
            let mut offset = 0;
            while offset < size {
                let len = to_usize((size - offset).min(bs));
                p.jobs.push(Job::Block(Piece {
                    file: s,
                    offset,
                    len,
                }));
                offset += bs;
            }
        }
        p.infos.push(info);
    }
    if !frag.is_empty() {
        p.jobs.push(Job::Fragment(frag));
        p.fragments += 1;
    }
    Ok(p)
}

/// A job's outcome.
enum Out {
    /// A data block of zeros: not stored.
    Zero,
    /// Stored as it is.
    Plain(Vec<u8>),
    Compressed(Vec<u8>),
}

/// Runs one job. A block job reads through `src`, its file opened once by the spawner for
/// all its blocks; a fragment opens each of its files here, reads it whole and closes it.
fn run_job(files: &[&FileData], job: &Job, src: Option<&Source>, codec: Codec) -> Result<Out> {
    let mut buf = Vec::with_capacity(job.len());
    match job {
        Job::Block(p) => {
            let opened;
            let src = match src {
                Some(s) => s,
                None => {
                    opened = Source::open(files[p.file])?;
                    &opened
                }
            };
            src.read(p.offset, p.len, &mut buf)?;
            if buf.iter().all(|&b| b == 0) {
                return Ok(Out::Zero);
            }
        }
        Job::Fragment(ps) => {
            for p in ps {
                Source::open(files[p.file])?.read(p.offset, p.len, &mut buf)?;
            }
        }
    }
    Ok(match codec.compress(&buf)? {
        Some(c) => Out::Compressed(c),
        None => Out::Plain(buf),
    })
}

/// What writing the data gave.
pub(crate) struct Written {
    pub fragments: Vec<Fragment>,
    /// Data and fragment blocks written (blocks of zeros are not).
    pub blocks: u64,
}

/// The outcome of job `next`, running queued jobs on this thread while it waits.
fn wait_for(
    next: usize,
    ready: &mut HashMap<usize, Result<Out>>,
    rx: &mpsc::Receiver<(usize, Result<Out>)>,
) -> Result<Out> {
    loop {
        if let Some(o) = ready.remove(&next) {
            return o;
        }
        let (i, o) = match rx.try_recv() {
            Ok(r) => r,
            // Nothing finished: help with the queued jobs (this thread may be the pool's
            // only one); when none is left to run here, every job is on another thread and
            // will send its outcome.
            Err(_) => match rayon::yield_now() {
                Some(rayon::Yield::Executed) => continue,
                _ => rx.recv().expect("every spawned job sends its outcome"),
            },
        };
        ready.insert(i, o);
    }
}

/// Runs the plan's jobs and writes their blocks to `out`, whose next byte is at filesystem
/// position `*pos`; fills in every stored file's blocks and start.
///
/// Jobs are spawned on rayon's current pool at most a window ahead of the one being
/// written (8 per thread: every thread kept busy, memory bounded), and written strictly in
/// job order, so the bytes do not depend on the thread count or on which job ends first.
pub(crate) fn write(
    plan: &mut Plan,
    codec: Codec,
    out: &mut impl Write,
    pos: &mut u64,
) -> Result<Written> {
    let window = 8 * rayon::current_num_threads().max(1);
    let mut w = Written {
        fragments: Vec::with_capacity(to_usize(u64::from(plan.fragments))),
        blocks: 0,
    };
    let Plan {
        files, jobs, infos, ..
    } = plan;
    let (files, jobs) = (&*files, &*jobs);
    let (tx, rx) = mpsc::channel();
    let mut ready = HashMap::new();
    rayon::in_place_scope(|scope| -> Result<()> {
        let mut spawned = 0;
        // The file of the last block job spawned: a file's blocks are consecutive jobs, so
        // each file is opened once, and at most a window of files is open at a time.
        let mut open: Option<(usize, Arc<Source>)> = None;
        for (next, job) in jobs.iter().enumerate() {
            while spawned < jobs.len() && spawned < next + window {
                let (tx, i) = (tx.clone(), spawned);
                spawned += 1;
                let src = match &jobs[i] {
                    Job::Block(p) if !matches!(&open, Some((f, _)) if *f == p.file) => {
                        match Source::open(files[p.file]) {
                            Ok(s) => {
                                let s = Arc::new(s);
                                open = Some((p.file, Arc::clone(&s)));
                                Some(s)
                            }
                            Err(e) => {
                                // Reported in job order, like any other job's error.
                                open = None;
                                let _ = tx.send((i, Err(e)));
                                continue;
                            }
                        }
                    }
                    Job::Block(_) => open.as_ref().map(|(_, s)| Arc::clone(s)),
                    Job::Fragment(_) => None,
                };
                scope.spawn(move |_| {
                    // The receiver outlives the scope: sending cannot fail.
                    let _ = tx.send((i, run_job(files, &jobs[i], src.as_deref(), codec)));
                });
            }
            let o = wait_for(next, &mut ready, &rx)?;
            let (bytes, size) = match &o {
                Out::Zero => (&[][..], 0),
                Out::Plain(b) => (&b[..], BLOCK_UNCOMPRESSED),
                Out::Compressed(b) => (&b[..], 0),
            };
            let size = size | u32::try_from(bytes.len()).expect("a block is at most 1 MiB");
            match job {
                Job::Block(p) => {
                    let info = &mut infos[p.file];
                    if info.blocks.is_empty() {
                        info.start = *pos;
                    }
                    info.blocks.push(size);
                    if matches!(o, Out::Zero) {
                        info.sparse += p.len as u64;
                    }
                }
                Job::Fragment(_) => w.fragments.push(Fragment { start: *pos, size }),
            }
            if !bytes.is_empty() {
                out.write_all(bytes)
                    .map_err(|source| Error::Write { source })?;
                *pos += bytes.len() as u64;
                w.blocks += 1;
            }
        }
        Ok(())
    })?;
    Ok(w)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn bytes(b: &[u8]) -> FileData {
        FileData::Bytes(Arc::from(b))
    }

    #[test]
    fn fragments_and_duplicates() {
        let a = bytes(&[1; 3000]);
        let b = bytes(&[2; 3000]);
        let a2 = bytes(&[1; 3000]);
        let big = bytes(&[3; 4096 * 2 + 5]);
        let empty = bytes(b"");
        let files = [(1, &a), (2, &b), (3, &a2), (4, &big), (5, &empty)];
        let p = plan(&files, 4096, true, true).unwrap();
        assert_eq!(p.duplicates, 1);
        assert_eq!(p.stored[&3], p.stored[&1]);
        // a fills fragment 0; b does not fit next to it and opens fragment 1.
        assert_eq!(p.infos[0].fragment, Some((0, 0)));
        assert_eq!(p.infos[1].fragment, Some((1, 0)));
        // The big file: two full blocks and a short one, no fragment.
        assert_eq!(p.infos[2].fragment, None);
        assert_eq!(p.fragments, 2);
        let lens: Vec<usize> = p.jobs.iter().map(Job::len).collect();
        assert_eq!(lens, [3000, 4096, 4096, 5, 3000]);
        // Without fragments or dedup.
        let p = plan(&files, 4096, false, false).unwrap();
        assert_eq!((p.duplicates, p.fragments), (0, 0));
        assert_eq!(p.jobs.len(), 3 + 3);
    }

    #[test]
    fn written_in_order_with_holes() {
        let mut data = vec![0u8; 8192];
        data.extend(imgbuild_testutil::noise(3, 100));
        let f = bytes(&data);
        let files = [(1, &f)];
        let mut p = plan(&files, 4096, true, true).unwrap();
        let mut out = Vec::new();
        let mut pos = 96;
        let w = write(&mut p, Codec::Zstd(3), &mut out, &mut pos).unwrap();
        // Two blocks of zeros (not stored), then 100 incompressible bytes stored as they are.
        assert_eq!(p.infos[0].blocks, [0, 0, 100 | BLOCK_UNCOMPRESSED]);
        assert_eq!(p.infos[0].sparse, 8192);
        assert_eq!(p.infos[0].start, 96);
        assert_eq!((w.blocks, pos, out.len()), (1, 196, 100));
    }

    #[test]
    fn a_source_that_shrinks_after_opening_reports_what_was_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, vec![7u8; 10_000]).unwrap();
        let data = FileData::Host {
            path: path.clone(),
            size: 10_000,
        };
        let src = Source::open(&data).unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(6_000)
            .unwrap();
        let mut buf = Vec::new();
        src.read(0, 4096, &mut buf).unwrap();
        let e = src.read(4096, 4096, &mut buf).unwrap_err();
        // 4096 planned from 4096, 1904 found there: the file now ends at 6000.
        assert!(
            matches!(
                e,
                Error::Source(imgbuild_blockio::SourceError::Changed {
                    planned: 10_000,
                    found: 6_000,
                    ..
                })
            ),
            "{e}"
        );
    }
}
