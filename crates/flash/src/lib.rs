//! `imgbuild flash`: an image (raw, or zstd-compressed) written onto a disk, with its bmap
//! when there is one: only the mapped ranges are written (the rest is free space nothing
//! reads), each checked against the bmap's SHA-256 as it is read, and read back from the disk
//! after `fsync` (its page cache dropped first) and checked again. Without a bmap the whole
//! image is written and read back. The target is refused when writing it would be unsafe
//! ([`target::open`]).
//!
//! Knows nothing of Nix or of how images are built; linux-only (sysfs, mountinfo).

#![cfg_attr(test, allow(clippy::unwrap_used))]
// Casts that may truncate, lose a sign or wrap are spelled out (`try_from` with a reason,
// `to_usize` for in-memory lengths); tests may cast freely.
#![cfg_attr(
    not(test),
    warn(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_possible_wrap
    )
)]

use std::cell::Cell;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use imgbuild_blockio::Reporter;
use sha2::{Digest, Sha256};

pub mod bmap;
pub mod target;

pub use bmap::Bmap;
pub use target::Target;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("cannot open `{}`", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} `{}` at byte {offset}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        offset: u64,
        #[source]
        source: std::io::Error,
    },
    #[error("bmap `{path}`: {reason}")]
    Bmap { path: String, reason: String },
    #[error("refusing to write `{}`: {reason}", target.display())]
    Refused { target: PathBuf, reason: String },
    #[error("the image `{}` {reason}", image.display())]
    Image { image: PathBuf, reason: String },
    #[error(
        "verification failed: `{}` reads back different bytes at {offset}..{end} than were \
         written (a failing or fake-capacity disk?)",
        target.display()
    )]
    Verify {
        target: PathBuf,
        offset: u64,
        end: u64,
    },
    #[error("interrupted")]
    Interrupted,
    /// The flash failed after it began writing: `state` says what the target now holds and
    /// what to do, `cause` is the error that stopped it (chained).
    #[error("the flash stopped; {state}")]
    Stopped {
        /// What the target holds now and what to do about it.
        state: String,
        /// The error that stopped the flash.
        #[source]
        cause: Box<Error>,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What a flash did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    pub image_size: u64,
    /// Bytes written (the mapped ranges, or the whole image).
    pub written: u64,
    pub ranges: usize,
    pub verified: bool,
    pub bmap: Option<PathBuf>,
}

const BUF: usize = 4 << 20;
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];

/// The image's bytes, read in order.
enum Source {
    Raw(File),
    Zstd(
        Box<zstd::stream::read::Decoder<'static, std::io::BufReader<File>>>,
        u64,
    ),
}

impl Source {
    fn open(path: &Path) -> Result<(Source, u64)> {
        let io = |source| Error::Open {
            path: path.to_path_buf(),
            source,
        };
        let mut f = File::open(path).map_err(io)?;
        let mut head = [0u8; 18];
        let n = f.read(&mut head).map_err(io)?;
        f.seek(SeekFrom::Start(0)).map_err(io)?;
        if n >= 4 && head[..4] == ZSTD_MAGIC {
            let size = zstd::zstd_safe::get_frame_content_size(&head[..n])
                .ok()
                .flatten()
                .ok_or_else(|| Error::Image {
                    image: path.to_path_buf(),
                    reason: "is zstd-compressed without its size in the frame header (imgbuild \
                             records it; decompress it first)"
                        .into(),
                })?;
            let dec = zstd::stream::read::Decoder::new(f).map_err(io)?;
            Ok((Source::Zstd(Box::new(dec), 0), size))
        } else {
            let len = f.metadata().map_err(io)?.len();
            Ok((Source::Raw(f), len))
        }
    }

    /// Reads exactly `buf.len()` bytes at `offset` (at or after the last read's end).
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        match self {
            Source::Raw(f) => f.read_exact_at(buf, offset),
            Source::Zstd(d, pos) => {
                let mut skip = offset - *pos;
                let mut scratch = vec![0u8; BUF.min(usize::try_from(skip).unwrap_or(BUF))];
                while skip > 0 {
                    let n = usize::try_from(skip).map_or(scratch.len(), |s| s.min(scratch.len()));
                    d.read_exact(&mut scratch[..n])?;
                    skip -= n as u64;
                }
                d.read_exact(buf)?;
                *pos = offset + buf.len() as u64;
                Ok(())
            }
        }
    }
}

/// The bmap beside `image`: `IMAGE.bmap`, or `X.bmap` for `X.zst` (imgbuild writes
/// `nixos.img.bmap` for `nixos.img.zst`).
pub fn find_bmap(image: &Path) -> Option<PathBuf> {
    let s = image.as_os_str().to_string_lossy();
    let mut c = vec![PathBuf::from(format!("{s}.bmap"))];
    if let Some(base) = s.strip_suffix(".zst") {
        c.push(PathBuf::from(format!("{base}.bmap")));
    }
    c.into_iter().find(|p| p.is_file())
}

/// Reads and parses a bmap file.
pub fn read_bmap(path: &Path) -> Result<Bmap> {
    let xml = std::fs::read_to_string(path).map_err(|source| Error::Open {
        path: path.to_path_buf(),
        source,
    })?;
    bmap::parse(&path.display().to_string(), &xml)
}

/// Writes `image` onto `target` (see the crate docs). `bmap`: the image's block map, if any.
/// A failure after the first write says what the target now holds ([`Error::Stopped`]): a
/// partial image on a disk, while a new file is removed and an empty one emptied again
/// ([`target::Was`]).
pub fn flash(
    image: &Path,
    bmap: Option<(&Path, &Bmap)>,
    target_path: &Path,
    verify: bool,
    reporter: &dyn Reporter,
    cancel: &AtomicBool,
) -> Result<Report> {
    let (mut src, image_size) = Source::open(image)?;
    if let Some((p, b)) = bmap {
        if b.image_size != image_size {
            return Err(Error::Bmap {
                path: p.display().to_string(),
                reason: format!(
                    "it is for an image of {} bytes, `{}` holds {image_size}",
                    b.image_size,
                    image.display()
                ),
            });
        }
    }
    let target = target::open(target_path, image_size, image)?;
    let job = Job {
        image,
        image_size,
        bmap,
        target: &target,
        written: Cell::new(0),
    };
    match job.run(&mut src, verify, reporter, cancel) {
        Ok(r) => {
            target.finish()?;
            Ok(r)
        }
        Err(e) => {
            let written = job.written.get();
            let total = job.ranges_total();
            let state = target.fail(written, total);
            Err(Error::Stopped {
                state,
                cause: Box::new(e),
            })
        }
    }
}

/// One flash: the image, its map and the target, and the bytes written so far.
struct Job<'a> {
    image: &'a Path,
    image_size: u64,
    bmap: Option<(&'a Path, &'a Bmap)>,
    target: &'a Target,
    written: Cell<u64>,
}

impl Job<'_> {
    fn ranges_total(&self) -> u64 {
        self.bmap.map_or(self.image_size, |(_, b)| {
            b.ranges.iter().map(|r| r.len).sum()
        })
    }

    /// The writes (counted in `written`), then the read-back.
    fn run(
        &self,
        src: &mut Source,
        verify: bool,
        reporter: &dyn Reporter,
        cancel: &AtomicBool,
    ) -> Result<Report> {
        let (image, image_size, bmap, target) =
            (self.image, self.image_size, self.bmap, self.target);
        let whole = [bmap::Range {
            offset: 0,
            len: image_size,
            sha256: None,
        }];
        let ranges: &[bmap::Range] = bmap.map_or(&whole[..], |(_, b)| &b.ranges);
        let total: u64 = ranges.iter().map(|r| r.len).sum();
        let tpath = target.path.clone();
        let werr = |what: &'static str, offset: u64| {
            let path = tpath.clone();
            move |source| Error::Io {
                what,
                path,
                offset,
                source,
            }
        };

        reporter.phase("writing", total);
        let mut buf = vec![0u8; BUF];
        let mut sums = Vec::with_capacity(ranges.len());
        for r in ranges {
            let sum = chunks(r, &mut buf, reporter, cancel, |at, chunk| {
                src.read_at(at, chunk).map_err(|source| Error::Io {
                    what: "reading the image",
                    path: image.to_path_buf(),
                    offset: at,
                    source,
                })?;
                target
                    .file
                    .write_all_at(chunk, at)
                    .map_err(werr("writing", at))?;
                self.written.set(self.written.get() + chunk.len() as u64);
                Ok(())
            })?;
            if let (Some(want), Some((p, _))) = (r.sha256, bmap) {
                if want != sum {
                    return Err(Error::Bmap {
                        path: p.display().to_string(),
                        reason: format!(
                            "the image's bytes {}..{} do not match its checksum: the image or the \
                             bmap is damaged, or they do not belong together",
                            r.offset,
                            r.offset + r.len
                        ),
                    });
                }
            }
            sums.push(sum);
        }
        target.file.sync_all().map_err(werr("flushing", 0))?;
        reporter.done();

        if verify {
            // Drop the target's cached pages so the reads come from the disk (best effort).
            // SAFETY: posix_fadvise only reads its integer arguments; the descriptor is open.
            unsafe {
                libc::posix_fadvise(target.file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED);
            }
            reporter.phase("verifying", total);
            for (r, want) in ranges.iter().zip(&sums) {
                let got = chunks(r, &mut buf, reporter, cancel, |at, chunk| {
                    target
                        .file
                        .read_exact_at(chunk, at)
                        .map_err(werr("reading back", at))
                })?;
                if got != *want {
                    return Err(Error::Verify {
                        target: target.path.clone(),
                        offset: r.offset,
                        end: r.offset + r.len,
                    });
                }
            }
            reporter.done();
        }
        Ok(Report {
            image_size,
            written: total,
            ranges: ranges.len(),
            verified: verify,
            bmap: bmap.map(|(p, _)| p.to_path_buf()),
        })
    }
}

/// Runs `f` on each piece of range `r` (at most [`BUF`] bytes, in order), then hashes the
/// piece; the range's SHA-256.
fn chunks(
    r: &bmap::Range,
    buf: &mut [u8],
    reporter: &dyn Reporter,
    cancel: &AtomicBool,
    mut f: impl FnMut(u64, &mut [u8]) -> Result<()>,
) -> Result<[u8; 32]> {
    let mut h = Sha256::new();
    let mut at = r.offset;
    while at < r.offset + r.len {
        if cancel.load(Ordering::Relaxed) {
            return Err(Error::Interrupted);
        }
        let n = usize::try_from(r.offset + r.len - at).map_or(buf.len(), |n| n.min(buf.len()));
        f(at, &mut buf[..n])?;
        h.update(&buf[..n]);
        reporter.add(n as u64);
        at += n as u64;
    }
    Ok(h.finalize().into())
}

#[cfg(test)]
mod tests;
