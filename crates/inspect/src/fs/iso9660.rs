//! Our own bounded ISO 9660 reader (ECMA-119, SUSP, Rock Ridge, El Torito), written from the
//! specifications: the primary volume descriptor's root, directory records (multi-extent
//! files, extended attribute records skipped), Rock Ridge names, modes, owners, symlinks,
//! times and continuation areas, deep directory relocation (`CL`/`RE`), and the boot
//! catalog for `inspect`. Without Rock Ridge, names are the ISO identifiers as Linux shows
//! them (lower case, without `;1` and a trailing dot). Joliet trees are not read.
//!
//! Nothing read is trusted: every extent lies inside the volume and the volume inside the
//! image, directories are capped at [`MAX_DIR_BYTES`], continuation chains at
//! [`MAX_CE_HOPS`] areas (a chain visiting an area twice is refused), symlink resolution at
//! [`MAX_SYMLINK_HOPS`] links, a file at [`MAX_EXTENTS`] extents; walks stop at directory
//! cycles through each directory's block.

use std::cell::RefCell;
use std::collections::HashSet;

use imgbuild_partition::FsSummary;

use super::iso9660_susp::{iso_name, kind_of, mode_bits, Continuation, Susp};
use super::iso9660_vd::{self as vd, Descriptor, IsoFacts, BLOCK};
use super::types::last_name;
use super::{Entry, FsInfo, Kind};
use crate::bytes::{len64, to_usize};
use crate::error::{Error, Result, Where};
use crate::io::Slice;
use crate::path::{components as comps, from_components as canon, normalize};

/// Largest directory read, in bytes.
pub(crate) const MAX_DIR_BYTES: u64 = 64 << 20;
/// Continuation areas followed for one record.
pub(crate) const MAX_CE_HOPS: usize = 32;
/// Symlinks followed while resolving one path (Linux's `MAXSYMLINKS`).
pub(crate) const MAX_SYMLINK_HOPS: usize = 40;
/// Extents of one multi-extent file.
pub(crate) const MAX_EXTENTS: usize = 1 << 16;
/// Longest continuation area (SUSP puts one in a block).
const MAX_CE_LEN: u32 = 2048;

/// One directory record (a multi-extent file's records merged), with its Rock Ridge facts.
#[derive(Clone, Debug)]
struct Rec {
    name: Vec<u8>,
    kind: Kind,
    mode: u16,
    uid: u32,
    gid: u32,
    mtime: i64,
    /// `(byte offset in the volume, bytes)` of each extent; for a directory, one.
    extents: Vec<(u64, u64)>,
    size: u64,
    target: Option<Vec<u8>>,
    relocated: bool,
}

impl Rec {
    fn entry(&self) -> Entry {
        Entry {
            name: self.name.clone(),
            kind: self.kind,
            mode: self.mode,
            uid: self.uid,
            gid: self.gid,
            size: self.size,
            mtime: self.mtime,
            target: self.target.clone(),
            id: (self.kind == Kind::Dir).then(|| self.extents.first().map_or(0, |e| e.0 / BLOCK)),
        }
    }
}

/// An open ISO 9660 volume.
pub(crate) struct IsoFs {
    slice: RefCell<Slice>,
    /// Bytes of the volume (inside the image).
    volume: u64,
    root: Rec,
    /// Rock Ridge: the `SP` skip.
    rr_skip: Option<usize>,
}

/// A file being read: its extents and position.
pub(crate) struct IsoFile {
    extents: Vec<(u64, u64)>,
    pos: u64,
}

impl IsoFile {
    /// `(byte offset in the volume, bytes)` when the file's extents are one run.
    pub(crate) fn contiguous(&self) -> Option<(u64, u64)> {
        let (start, mut end) = (self.extents.first()?.0, self.extents.first()?.0);
        for &(s, l) in &self.extents {
            if s != end {
                return None;
            }
            end = s.checked_add(l)?;
        }
        Some((start, end - start))
    }
}

/// Whether the volume descriptor signature is at byte 32769 of `slice`.
pub(crate) fn looks_like_iso(slice: &mut Slice) -> bool {
    let mut b = [0u8; 6];
    slice.len() >= (vd::FIRST_VD + 1) * BLOCK
        && slice.read_exact_at(vd::FIRST_VD * BLOCK, &mut b).is_ok()
        && &b[1..6] == b"CD001"
}

fn corrupt(at: &Where, reason: impl Into<String>) -> Error {
    Error::Corrupt {
        at: at.clone(),
        reason: format!("ISO 9660: {}", reason.into()),
    }
}

impl IsoFs {
    /// Reads the descriptors, the root and the boot catalog.
    pub(crate) fn open(mut slice: Slice, at: &Where) -> Result<(Self, FsInfo)> {
        let io = |source| Error::Io {
            at: at.clone(),
            source,
        };
        let mut pvd = None;
        let mut facts = IsoFacts::default();
        let mut catalog_lba = None;
        let mut n = vd::FIRST_VD;
        loop {
            if n >= vd::FIRST_VD + vd::MAX_VDS {
                return Err(corrupt(at, "no volume descriptor set terminator"));
            }
            let mut b = [0u8; 2048];
            slice.read_exact_at(n * BLOCK, &mut b).map_err(io)?;
            match vd::descriptor(&b, n).map_err(|e| corrupt(at, e.to_string()))? {
                Descriptor::Terminator => break,
                Descriptor::Primary(p) => {
                    pvd.get_or_insert(p);
                }
                Descriptor::ElTorito(lba) => catalog_lba = Some(lba),
                Descriptor::Joliet => facts.joliet = true,
                Descriptor::Other => {}
            }
            n += 1;
        }
        let pvd = pvd.ok_or_else(|| corrupt(at, vd::VdError::NoPrimary.to_string()))?;
        let volume = u64::from(pvd.blocks) * BLOCK;
        if volume > slice.len() {
            return Err(corrupt(
                at,
                format!(
                    "the volume's {volume} bytes are more than the image's {} (truncated?)",
                    slice.len()
                ),
            ));
        }
        let mut fs = Self {
            slice: RefCell::new(slice),
            volume,
            root: Rec {
                name: b"/".to_vec(),
                kind: Kind::Dir,
                mode: 0o555,
                uid: 0,
                gid: 0,
                mtime: 0,
                extents: Vec::new(),
                size: 0,
                target: None,
                relocated: false,
            },
            rr_skip: None,
        };
        let root = fs.parse_record(&pvd.root, at)?.0;
        let (start, len) = fs.dir_extent(&root, at)?;
        fs.root.extents = vec![(start, len)];
        fs.root.mtime = root.mtime;
        fs.detect_rock_ridge(start, len, at)?;
        facts.rock_ridge = fs.rr_skip.is_some();
        if let Some(lba) = catalog_lba {
            fs.read_catalog(lba, &mut facts, at);
        }
        let info = FsInfo {
            summary: FsSummary {
                kind: "iso9660".into(),
                label: Some(pvd.volume_id).filter(|l| !l.is_empty()),
                size: volume,
                ..FsSummary::default()
            },
            used: volume,
            free: 0,
            block_size: BLOCK,
            iso9660: Some(facts),
            ..FsInfo::default()
        };
        Ok((fs, info))
    }

    /// Rock Ridge, when the root's `.` says so (SUSP 5.3: `SP` first; the `ER` may be in
    /// its continuation area); the root's own mode, owners and time from it.
    fn detect_rock_ridge(&mut self, start: u64, len: u64, at: &Where) -> Result<()> {
        let mut first = vec![0u8; to_usize(len.min(BLOCK))];
        self.read_at(start, &mut first, at)?;
        let dot_len = usize::from(*first.first().unwrap_or(&0));
        let mut s = Susp::default();
        if let Some(dot) = first.get(..dot_len).filter(|d| d.len() >= 34) {
            let su = 33 + usize::from(dot[32]) + usize::from(dot[32] % 2 == 0);
            // Entries that do not parse mean no Rock Ridge; a broken continuation chain after
            // an `SP` is a corrupt volume.
            if let Some(Ok(Some(ce))) = dot.get(su..).map(|a| s.parse(a)) {
                if s.sp_skip.is_some() {
                    self.follow(ce, &mut s, at)?;
                }
            }
        }
        if let Some(skip) = s.sp_skip.filter(|_| s.rock_ridge || s.px.is_some()) {
            self.rr_skip = Some(usize::from(skip));
            if let Some((m, u, g)) = s.px {
                self.root.mode = mode_bits(m);
                self.root.uid = u;
                self.root.gid = g;
            }
            self.root.mtime = s.mtime.unwrap_or(self.root.mtime);
        }
        Ok(())
    }

    /// The boot catalog's entries into `facts` (a catalog that cannot be read is noted
    /// there, not an error: the files still read).
    fn read_catalog(&self, lba: u32, facts: &mut IsoFacts, at: &Where) {
        let mut b = [0u8; 2048];
        match self.read_at(u64::from(lba) * BLOCK, &mut b, at) {
            Ok(()) => match vd::catalog(&b) {
                Ok(e) => facts.el_torito = e,
                Err(e) => facts.el_torito_error = Some(e),
            },
            Err(e) => facts.el_torito_error = Some(crate::error::chain(&e)),
        }
    }

    /// Reads `buf.len()` bytes at `offset` of the volume.
    fn read_at(&self, offset: u64, buf: &mut [u8], at: &Where) -> Result<()> {
        if offset
            .checked_add(len64(buf.len()))
            .is_none_or(|e| e > self.volume)
        {
            return Err(corrupt(
                at,
                format!(
                    "{} bytes at offset {offset} run past the volume's end ({} bytes)",
                    buf.len(),
                    self.volume
                ),
            ));
        }
        self.slice
            .borrow_mut()
            .read_exact_at(offset, buf)
            .map_err(|source| Error::Io {
                at: at.clone(),
                source,
            })
    }

    /// A directory's extent, checked: inside the volume, at most [`MAX_DIR_BYTES`].
    fn dir_extent(&self, r: &Rec, at: &Where) -> Result<(u64, u64)> {
        let (start, len) = r.extents.first().copied().unwrap_or((0, 0));
        if len > MAX_DIR_BYTES {
            return Err(Error::Limit {
                at: at.clone(),
                what: "bytes of one ISO 9660 directory".into(),
                limit: MAX_DIR_BYTES,
            });
        }
        if start < vd::FIRST_VD * BLOCK || start.saturating_add(len) > self.volume {
            return Err(corrupt(
                at,
                format!("a directory at byte {start} of {len} bytes is outside the volume"),
            ));
        }
        Ok((start, len))
    }

    /// Follows a `CE` chain into `s`: at most [`MAX_CE_HOPS`] areas, each inside the
    /// volume and one block, none twice.
    fn follow(&self, mut ce: Continuation, s: &mut Susp, at: &Where) -> Result<()> {
        let mut seen = HashSet::new();
        for _ in 0..MAX_CE_HOPS {
            if !seen.insert((ce.block, ce.offset)) {
                return Err(corrupt(at, "a Rock Ridge continuation area chain loops"));
            }
            if ce.len > MAX_CE_LEN || ce.offset.saturating_add(ce.len) > MAX_CE_LEN {
                return Err(corrupt(
                    at,
                    format!(
                        "a continuation area of {} bytes at offset {} crosses its block",
                        ce.len, ce.offset
                    ),
                ));
            }
            let mut area = vec![0u8; to_usize(u64::from(ce.len))];
            self.read_at(
                u64::from(ce.block) * BLOCK + u64::from(ce.offset),
                &mut area,
                at,
            )?;
            match s.parse(&area).map_err(|e| corrupt(at, e.to_string()))? {
                Some(next) => ce = next,
                None => return Ok(()),
            }
        }
        Err(Error::Limit {
            at: at.clone(),
            what: "Rock Ridge continuation areas of one record".into(),
            limit: len64(MAX_CE_HOPS),
        })
    }

    /// Parses one directory record; the flag byte's multi-extent bit comes back too.
    fn parse_record(&self, r: &[u8], at: &Where) -> Result<(Rec, bool)> {
        if r.len() < 34 {
            return Err(corrupt(at, "a directory record cut short by its block"));
        }
        let len = usize::from(r[0]);
        let id_len = usize::from(r[32]);
        if len < 34 || len > r.len() || 33 + id_len > len {
            return Err(corrupt(
                at,
                format!("a directory record of {len} bytes with a {id_len}-byte name"),
            ));
        }
        let lba = vd::both32(&r[2..10], "extent").map_err(|e| corrupt(at, e.to_string()))?;
        let data_len =
            vd::both32(&r[10..18], "data length").map_err(|e| corrupt(at, e.to_string()))?;
        let flags = r[25];
        if r[26] != 0 || r[27] != 0 {
            return Err(Error::Unsupported {
                at: at.clone(),
                what: "ISO 9660 interleaved files".into(),
            });
        }
        let ear = u64::from(r[1]);
        let start = (u64::from(lba) + ear) * BLOCK;
        let size = u64::from(data_len);
        if size > 0 && start.saturating_add(size) > self.volume {
            return Err(corrupt(
                at,
                format!("an extent at block {lba} of {size} bytes ends past the volume"),
            ));
        }
        let ident = &r[33..33 + id_len];
        let dir = flags & 2 != 0;
        let mut s = Susp::default();
        if let Some(skip) = self.rr_skip {
            let su = 33 + id_len + usize::from(id_len % 2 == 0);
            if let Some(area) = r[..len].get(su + skip..) {
                let ce = s.parse(area).map_err(|e| corrupt(at, e.to_string()))?;
                if let Some(ce) = ce {
                    self.follow(ce, &mut s, at)?;
                }
            }
        }
        let mut rec = Rec {
            name: match s.name.take() {
                Some(n) => n,
                None => iso_name(ident, dir),
            },
            kind: if dir { Kind::Dir } else { Kind::File },
            mode: if dir { 0o555 } else { 0o444 },
            uid: 0,
            gid: 0,
            mtime: super::iso9660_susp::short_date(&r[18..25]).unwrap_or(0),
            extents: vec![(start, size)],
            size,
            target: None,
            relocated: s.relocated,
        };
        if let Some(m) = s.mtime {
            rec.mtime = m;
        }
        if let Some((m, u, g)) = s.px {
            rec.mode = mode_bits(m);
            rec.uid = u;
            rec.gid = g;
            // A `CL` record is a file in ISO 9660 terms standing for a relocated directory.
            if !dir && s.child_link.is_none() {
                rec.kind = kind_of(m).ok_or_else(|| {
                    corrupt(at, format!("a file record whose Rock Ridge mode is {m:o}"))
                })?;
            }
        }
        if let Some(cl) = s.child_link {
            rec.kind = Kind::Dir;
            rec.extents = vec![(u64::from(cl) * BLOCK, 0)];
            rec.size = 0;
        }
        if rec.kind == Kind::Symlink {
            let t = s.symlink.unwrap_or_default();
            rec.size = len64(t.len());
            rec.extents.clear();
            rec.target = Some(t);
        }
        Ok((rec, flags & 0x80 != 0))
    }

    /// The records of the directory `d` (without `.`, `..` and relocated directories),
    /// multi-extent files merged, a relocated directory's size read from its own `.`.
    fn records(&self, d: &Rec, at: &Where, max: usize) -> Result<Vec<Rec>> {
        let (start, mut len) = self.dir_extent(d, at)?;
        if len == 0 {
            // A `CL` target: the size is in its own `.` record.
            let mut dot = vec![0u8; to_usize(self.volume.saturating_sub(start).min(255))];
            self.read_at(start, &mut dot, at)?;
            len = self.parse_record(&dot, at)?.0.size;
            self.dir_extent(
                &Rec {
                    extents: vec![(start, len)],
                    ..d.clone()
                },
                at,
            )?;
        }
        let mut data = vec![0u8; to_usize(len)];
        self.read_at(start, &mut data, at)?;
        let mut out: Vec<Rec> = Vec::new();
        let mut open_multi = false;
        let mut index = 0usize;
        for block in data.chunks(to_usize(BLOCK)) {
            let mut i = 0;
            while i < block.len() && block[i] != 0 {
                let (rec, more) = self.parse_record(&block[i..], at)?;
                i += usize::from(block[i]);
                index += 1;
                if index <= 2 {
                    continue; // `.` and `..`
                }
                if open_multi {
                    let last = out.last_mut().ok_or_else(|| corrupt(at, "multi-extent"))?;
                    if last.extents.len() >= MAX_EXTENTS {
                        return Err(Error::Limit {
                            at: at.clone(),
                            what: "extents of one ISO 9660 file".into(),
                            limit: len64(MAX_EXTENTS),
                        });
                    }
                    last.extents.extend_from_slice(&rec.extents);
                    last.size = last.size.saturating_add(rec.size);
                } else if !rec.relocated {
                    if out.len() >= max {
                        return Err(Error::Limit {
                            at: at.clone(),
                            what: "entries in one directory".into(),
                            limit: len64(max),
                        });
                    }
                    out.push(rec);
                }
                open_multi = more && !out.is_empty();
            }
        }
        if open_multi {
            return Err(corrupt(at, "a multi-extent file without its last extent"));
        }
        Ok(out)
    }

    /// Resolves `path` from the root, following symlinks (the last one only when
    /// `follow_last`); returns the record and the canonical path.
    fn resolve(&self, path: &[u8], follow_last: bool, at: &Where) -> Result<(Rec, Vec<u8>)> {
        let mut todo: Vec<Vec<u8>> = comps(path).rev().collect();
        let mut stack: Vec<Rec> = Vec::new();
        let mut names: Vec<Vec<u8>> = Vec::new();
        let mut hops = 0;
        while let Some(c) = todo.pop() {
            if c == b"." {
                continue;
            }
            if c == b".." {
                stack.pop();
                names.pop();
                continue;
            }
            let dir = stack.last().unwrap_or(&self.root);
            let here = at.with_path(&canon(&names));
            if dir.kind != Kind::Dir {
                return Err(Error::NotADirectory { at: here });
            }
            let rec = self
                .records(dir, &here, usize::MAX)?
                .into_iter()
                .find(|r| r.name == c)
                .ok_or_else(|| {
                    let mut p = names.clone();
                    p.push(c.clone());
                    Error::NotFound {
                        at: at.with_path(&canon(&p)),
                    }
                })?;
            if rec.kind == Kind::Symlink && (follow_last || !todo.is_empty()) {
                hops += 1;
                if hops > MAX_SYMLINK_HOPS {
                    return Err(Error::Limit {
                        at: here,
                        what: "symlinks followed".into(),
                        limit: len64(MAX_SYMLINK_HOPS),
                    });
                }
                let t = rec.target.unwrap_or_default();
                if t.starts_with(b"/") {
                    stack.clear();
                    names.clear();
                }
                todo.extend(comps(&t).rev());
                continue;
            }
            stack.push(rec);
            names.push(c);
        }
        let p = canon(&names);
        Ok((stack.pop().unwrap_or_else(|| self.root.clone()), p))
    }

    pub(crate) fn metadata(&self, path: &[u8], at: &Where) -> Result<Entry> {
        let (r, _) = self.resolve(path, false, at)?;
        let mut e = r.entry();
        e.name = last_name(&normalize(path));
        Ok(e)
    }

    pub(crate) fn canonicalize(&self, path: &[u8], at: &Where) -> Result<Vec<u8>> {
        Ok(self.resolve(path, true, at)?.1)
    }

    pub(crate) fn read_link(&self, path: &[u8], at: &Where) -> Result<Vec<u8>> {
        let (r, _) = self.resolve(path, false, at)?;
        r.target.ok_or_else(|| Error::Corrupt {
            at: at.with_path(path),
            reason: "not a symlink".into(),
        })
    }

    pub(crate) fn read_dir(&self, path: &[u8], at: &Where, max: usize) -> Result<Vec<Entry>> {
        let (d, canon) = self.resolve(path, true, at)?;
        let here = at.with_path(&canon);
        if d.kind != Kind::Dir {
            return Err(Error::NotADirectory { at: here });
        }
        Ok(self
            .records(&d, &here, max)?
            .iter()
            .map(Rec::entry)
            .collect())
    }

    pub(crate) fn open_file(&self, path: &[u8], at: &Where) -> Result<(IsoFile, u64)> {
        let (r, canon) = self.resolve(path, true, at)?;
        let here = at.with_path(&canon);
        match r.kind {
            Kind::Dir => return Err(Error::IsADirectory { at: here }),
            Kind::File => {}
            _ => return Err(Error::NotAFile { at: here }),
        }
        Ok((
            IsoFile {
                extents: r.extents,
                pos: 0,
            },
            r.size,
        ))
    }

    /// Reads from `f` at its position, within one extent.
    pub(crate) fn read(&self, f: &mut IsoFile, buf: &mut [u8], at: &Where) -> Result<usize> {
        let mut skip = f.pos;
        for &(start, len) in &f.extents {
            if skip >= len {
                skip -= len;
                continue;
            }
            let n = to_usize((len - skip).min(len64(buf.len())));
            self.read_at(start + skip, &mut buf[..n], at)?;
            f.pos += len64(n);
            return Ok(n);
        }
        Ok(0)
    }
}
