//! Disk containers read back into a disk: qcow2, VHD (fixed and dynamic), VHDX, VMDK
//! (stream-optimized and monolithic sparse), an OVA's VMDK, and the GCE `disk.raw` in a
//! gzipped (sparse) tar, and the disk of a Proxmox VMA archive. A fixed VHD is read in place; the others are unpacked into a sparse
//! temporary file (zero runs never written), like a `.zst` image.
//!
//! qcow2 compressed clusters (`qemu-img convert -c`) are inflated; VMDK grains too.
//!
//! Nothing in a container is trusted: every table offset and length is checked against the
//! file, every guest offset against the virtual size, the virtual size against the limit;
//! backing files, differencing disks, encryption and logs to replay are refused by name.
//!
//! One file per container reader; each gives a [`Reader`] (how it is recognised, how it is
//! unpacked), listed once in [`READERS`]. A new container is its file, its [`Container`]
//! variant and its line there.

mod gce;
mod ova;
mod qcow2;
mod tar;
mod vhd;
mod vhdx;
mod vma;
mod vmdk;

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;

use serde::Serialize;

use crate::error::{Error, Result, Where};
use crate::io::{Disk, TempDisk};

/// What holds the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Container {
    /// The disk's bytes themselves (or a `.zst` of them).
    Raw,
    /// A QEMU copy-on-write image (versions 2 and 3, compressed clusters too).
    Qcow2,
    /// A dynamic VHD: a block allocation table, blocks with sector bitmaps.
    Vhd,
    /// A fixed VHD: the disk followed by a 512-byte footer, read in place.
    VhdFixed,
    /// A dynamic VHDX (Hyper-V).
    Vhdx,
    /// A sparse VMDK extent (stream-optimized or monolithic sparse).
    Vmdk,
    /// An OVA: a tar whose first `.vmdk` member holds the disk.
    Ova,
    /// A GCE image: `disk.raw` in a gzipped (GNU sparse) tar.
    GceTar,
    /// A Proxmox VMA backup archive (uncompressed).
    Vma,
}

impl std::fmt::Display for Container {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = READERS
            .iter()
            .find(|r| r.kind == *self)
            .map_or("raw", |r| r.name);
        f.write_str(name)
    }
}

/// The first 512 bytes of a file (fewer when it is shorter), and its last 512 when it has
/// at least 1024: what containers are recognised by.
struct Ends<'a> {
    head: &'a [u8],
    tail: Option<&'a [u8]>,
}

/// What a reader made of its container.
enum Unpacked {
    /// The disk is the container file's first `size` bytes (a fixed VHD).
    InPlace { size: u64 },
    /// The disk was unpacked into a temporary file.
    Out(Out),
}

/// Makes the [`Out`] of a given virtual size (checked against the limits).
type NewOut<'a> = &'a dyn Fn(u64) -> Result<Out>;

/// One container reader.
struct Reader {
    kind: Container,
    /// Its name in reports.
    name: &'static str,
    /// Whether a file with these ends is this container.
    detect: fn(&Ends<'_>) -> bool,
    /// Reads the disk out of the container.
    open: fn(&Src<'_>, NewOut<'_>) -> Result<Unpacked>,
}

/// Every container reader, in the order they are tried; a file none recognises is a raw disk.
const READERS: &[Reader] = &[
    qcow2::READER,
    vhdx::READER,
    vmdk::READER,
    gce::READER,
    ova::READER,
    vhd::DYNAMIC,
    vhd::FIXED,
    vma::READER,
];

const SECTOR: u64 = 512;
/// Largest table read into memory (a qcow2 L1, a VHD BAT, a VHDX BAT, a VMDK grain directory).
const MAX_TABLE: u64 = 256 << 20;

/// The container file, read only inside its bounds.
struct Src<'a> {
    file: &'a File,
    len: u64,
    at: Where,
}

impl Src<'_> {
    fn corrupt(&self, reason: impl Into<String>) -> Error {
        Error::Corrupt {
            at: self.at.clone(),
            reason: reason.into(),
        }
    }

    fn unsupported(&self, what: impl Into<String>) -> Error {
        Error::Unsupported {
            at: self.at.clone(),
            what: what.into(),
        }
    }

    fn read(&self, offset: u64, len: u64, what: &str) -> Result<Vec<u8>> {
        if offset.checked_add(len).is_none_or(|end| end > self.len) {
            return Err(self.corrupt(format!(
                "{what}: {len} bytes at {offset} lie past the end of the file ({} bytes)",
                self.len
            )));
        }
        if len > MAX_TABLE {
            return Err(Error::Limit {
                at: self.at.clone(),
                what: format!("bytes of one {what}"),
                limit: MAX_TABLE,
            });
        }
        let mut b = vec![0u8; usize::try_from(len).unwrap_or(usize::MAX)];
        self.file
            .read_exact_at(&mut b, offset)
            .map_err(|source| Error::Io {
                at: self.at.clone(),
                source,
            })?;
        Ok(b)
    }
}

/// The disk being unpacked: a sparse temporary file of the virtual size, its data bounded
/// ([`TempDisk`]).
struct Out {
    tmp: TempDisk,
    size: u64,
    at: Where,
}

impl Out {
    /// `cap`: the data it may take ([`crate::io::data_cap`] of the container's size).
    fn new(size: u64, max: u64, cap: u64, temp_dir: Option<&Path>, at: &Where) -> Result<Self> {
        if size > max {
            return Err(Error::TooLarge {
                at: at.clone(),
                what: "disk in the container",
                size,
                max,
            });
        }
        Ok(Out {
            tmp: TempDisk::create(temp_dir, size, cap, at.clone())?,
            size,
            at: at.clone(),
        })
    }

    /// Writes `data` at guest offset `at`, leaving zero blocks as holes.
    fn write(&self, offset: u64, data: &[u8]) -> Result<()> {
        let end = u64::try_from(data.len())
            .ok()
            .and_then(|n| offset.checked_add(n));
        if end.is_none_or(|e| e > self.size) {
            return Err(Error::Corrupt {
                at: self.at.clone(),
                reason: format!(
                    "data for guest offset {offset} (+{}) past the disk's end ({})",
                    data.len(),
                    self.size
                ),
            });
        }
        self.tmp.write_at(offset, data)
    }

    fn disk(self) -> Result<Disk> {
        self.tmp.into_disk(self.size)
    }
}

/// Recognises a container by its magic numbers (a raw disk has none of them).
pub(crate) fn detect(file: &File, len: u64) -> io::Result<Container> {
    let mut head = [0u8; 512];
    let n = file.read_at(&mut head, 0)?;
    let mut tail = [0u8; 512];
    let has_tail = len >= 1024;
    if has_tail {
        file.read_exact_at(&mut tail, len - 512)?;
    }
    Ok(recognise(&Ends {
        head: head.get(..n).unwrap_or_default(),
        tail: has_tail.then_some(&tail[..]),
    }))
}

/// The first reader that recognises a file with these ends, else `Raw`.
fn recognise(ends: &Ends<'_>) -> Container {
    READERS
        .iter()
        .find(|r| (r.detect)(ends))
        .map_or(Container::Raw, |r| r.kind)
}

/// The disk inside `file`, of kind `kind` (`Raw`: the file itself).
pub(crate) fn open(
    kind: Container,
    file: File,
    len: u64,
    path: &Path,
    max: u64,
    temp_dir: Option<&Path>,
) -> Result<Disk> {
    let Some(reader) = READERS.iter().find(|r| r.kind == kind) else {
        return Ok(Disk::new(file, len));
    };
    let unpacked = {
        let src = Src {
            file: &file,
            len,
            at: Where::image(path),
        };
        let cap = crate::io::data_cap(len, max);
        let out = |size: u64| Out::new(size, max, cap, temp_dir, &src.at);
        (reader.open)(&src, &out)?
    };
    match unpacked {
        Unpacked::InPlace { size } => Ok(Disk::new(file, size)),
        Unpacked::Out(out) => out.disk(),
    }
}

/// A zlib stream, inflated to at most `max` bytes.
fn inflate(data: &[u8], max: u64) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    flate2::read::ZlibDecoder::new(data)
        .take(max.saturating_add(1))
        .read_to_end(&mut out)?;
    if u64::try_from(out.len()).is_ok_and(|n| n > max) {
        return Err(io::Error::other(format!(
            "inflates to more than {max} bytes"
        )));
    }
    Ok(out)
}

/// A raw deflate stream, inflated to exactly its first `len` bytes.
fn inflate_raw(data: &[u8], len: u64) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    flate2::read::DeflateDecoder::new(data)
        .take(len)
        .read_to_end(&mut out)?;
    if u64::try_from(out.len()).is_ok_and(|n| n < len) {
        return Err(io::Error::other(format!(
            "inflates to {} of {len} bytes",
            out.len()
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every container but `Raw` has exactly one reader (the match fails to compile when a
    /// variant is added and not listed here).
    #[test]
    fn every_container_has_one_reader() {
        for kind in [
            Container::Raw,
            Container::Qcow2,
            Container::Vhd,
            Container::VhdFixed,
            Container::Vhdx,
            Container::Vmdk,
            Container::Ova,
            Container::GceTar,
            Container::Vma,
        ] {
            let readers = match kind {
                Container::Raw => 0,
                Container::Qcow2
                | Container::Vhd
                | Container::VhdFixed
                | Container::Vhdx
                | Container::Vmdk
                | Container::Ova
                | Container::GceTar
                | Container::Vma => 1,
            };
            assert_eq!(
                READERS.iter().filter(|r| r.kind == kind).count(),
                readers,
                "{kind:?}"
            );
        }
        assert_eq!(Container::Raw.to_string(), "raw");
        assert_eq!(Container::VhdFixed.to_string(), "VHD (fixed)");
        assert_eq!(Container::GceTar.to_string(), "GCE tar.gz");
    }

    fn with(at: usize, bytes: &[u8]) -> [u8; 512] {
        let mut b = [0u8; 512];
        b[at..at + bytes.len()].copy_from_slice(bytes);
        b
    }

    fn footer(disk_type: u8) -> [u8; 512] {
        let mut b = with(0, b"conectix");
        b[63] = disk_type;
        b
    }

    /// A file's head, its tail, and the container it is.
    type Case<'a> = (&'a [u8], Option<&'a [u8]>, Container);

    #[test]
    fn containers_are_recognised_by_their_magic() {
        let zeros = [0u8; 512];
        let cases: [Case<'_>; 11] = [
            (&with(0, b"VMA\0\0\0\0\x01"), None, Container::Vma),
            (&with(0, b"QFI\xfb"), None, Container::Qcow2),
            (&with(0, b"vhdxfile"), None, Container::Vhdx),
            (&with(0, b"KDMV"), None, Container::Vmdk),
            (&with(0, &[0x1f, 0x8b]), None, Container::GceTar),
            (&with(257, b"ustar"), None, Container::Ova),
            (&with(257, b"ustar")[..262], None, Container::Raw),
            (&footer(3), None, Container::Vhd),
            (&zeros, Some(&footer(3)), Container::Vhd),
            (&zeros, Some(&footer(2)), Container::VhdFixed),
            (&zeros, Some(&footer(4)), Container::Raw),
        ];
        for (head, tail, want) in cases {
            assert_eq!(recognise(&Ends { head, tail }), want);
        }
    }
}
