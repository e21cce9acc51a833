//! The planned volume as an extent map.

use std::path::Path;

use imgbuild_blockio::{to_usize, PlannedSource};
use imgbuild_diskmap::{Map, MapBuilder, SourceFile};
use imgbuild_fstree::{FileData, Kind, Tree};

use crate::encode::{self, BootEntry, Record, BLOCK, FLAG_DIR};
use crate::layout::{record_len, Plan, Rec};
use crate::susp;
use crate::{Error, Result, Supplied, MAX_PATCHED_IMAGE, SYSTEM_AREA};

impl Plan {
    /// The volume's bytes as an extent map of [`Plan::bytes`] bytes. `system_area` (at most
    /// 32 KiB: an MBR, a GPT) goes at byte 0, the rest of the first 16 blocks is zeros.
    /// Files are taken from `tree`, which must be the tree given to [`crate::plan`]; host
    /// files are opened without blocking to check they are still regular files of their
    /// planned size and to find their holes, and referenced, not read (but a BIOS boot image
    /// whose boot information table is patched).
    pub fn map(&self, tree: &Tree, system_area: &[u8]) -> Result<Map> {
        self.map_with(tree, system_area, Vec::new())
    }

    /// [`Plan::map`], with the content of some files given as maps instead of read from the
    /// tree: a filesystem image planned but never written (the EFI boot image, a FAT map),
    /// whose tree node only gives the size. Each map must be as long as its file; the BIOS
    /// boot image and the catalog cannot be supplied.
    pub fn map_with(
        &self,
        tree: &Tree,
        system_area: &[u8],
        mut supplied: Vec<Supplied>,
    ) -> Result<Map> {
        if system_area.len() > SYSTEM_AREA {
            return Err(Error::SystemAreaTooBig {
                len: system_area.len(),
            });
        }
        for s in &supplied {
            let node = tree.lookup(&s.path);
            if !self.files.iter().any(|f| Some(f.node) == node) {
                return Err(Error::NotAFile {
                    what: "supplied file",
                    path: String::from_utf8_lossy(&s.path).into_owned(),
                });
            }
        }
        let mut b = MapBuilder::new("iso9660", self.bytes());
        b.bytes(0, system_area.to_vec())?;
        b.zeros(
            system_area.len() as u64,
            (SYSTEM_AREA - system_area.len()) as u64,
        )?;
        b.bytes(16 * BLOCK, self.metadata())?;
        for i in 0..self.files.len() {
            let node = self.files[i].node;
            let at = supplied
                .iter()
                .position(|s| tree.lookup(&s.path) == Some(node));
            match at {
                Some(k) => self.place_supplied(i, supplied.swap_remove(k), &mut b)?,
                None => self.map_file(i, tree, &mut b)?,
            }
        }
        Ok(b.finish()?)
    }

    /// File `index`'s content from the caller's map, its last block's tail zeros.
    fn place_supplied(&self, index: usize, s: Supplied, b: &mut MapBuilder) -> Result<()> {
        let f = &self.files[index];
        let patched = self.opts.bios.is_some() && self.bios_file == Some(index);
        if patched || self.catalog_file == Some(index) || s.map.len() != f.size {
            return Err(Error::SuppliedMismatch {
                path: f.path.clone(),
                size: f.size,
                map_len: s.map.len(),
            });
        }
        let at = u64::from(f.lba) * BLOCK;
        b.zeros(at + f.size, f.size.next_multiple_of(BLOCK) - f.size)?;
        b.place(at, s.map)?;
        Ok(())
    }

    fn boot_entries(&self) -> Vec<BootEntry> {
        let mut out = Vec::new();
        if let (Some(bios), Some(f)) = (&self.opts.bios, self.bios_file) {
            out.push(BootEntry {
                platform: encode::PLATFORM_X86,
                load_sectors: bios.load_sectors,
                lba: self.files[f].lba,
            });
        }
        if let (Some(efi), Some(f)) = (&self.opts.efi, self.efi_file) {
            let sectors = self.files[f].size.div_ceil(512);
            out.push(BootEntry {
                platform: encode::PLATFORM_EFI,
                load_sectors: efi
                    .load_sectors
                    .unwrap_or_else(|| u16::try_from(sectors).unwrap_or(u16::MAX)),
                lba: self.files[f].lba,
            });
        }
        out
    }

    /// Blocks 16 up to the file data: descriptors, path tables, catalog, directories and
    /// continuation areas.
    fn metadata(&self) -> Vec<u8> {
        let mut buf = vec![0u8; to_usize(u64::from(self.data_lba - 16) * BLOCK)];
        let at = |lba: u32| to_usize(u64::from(lba - 16) * BLOCK);
        let root = &self.dirs[0];
        let mut root_record = [0u8; 34];
        Record {
            lba: root.lba,
            len: root.blocks * 2048,
            mtime: root.recs[0].mtime,
            flags: FLAG_DIR,
            ident: &[0],
            system_use: &[],
        }
        .encode(&mut root_record);
        let pvd = encode::pvd(&encode::Pvd {
            system_id: &self.opts.system_id,
            volume_id: &self.opts.volume_id,
            publisher_id: &self.opts.publisher_id,
            preparer_id: &self.opts.preparer_id,
            application_id: &self.opts.application_id,
            blocks: self.blocks,
            path_table_len: self.path_table_len,
            path_table_l: self.path_table_l,
            path_table_m: self.path_table_m,
            root_record,
            time: self.opts.time,
        });
        buf[..2048].copy_from_slice(&pvd);
        let mut next = 17;
        if let Some(catalog) = self.catalog_lba {
            buf[at(next)..][..2048].copy_from_slice(&encode::boot_record(catalog));
            next += 1;
            if self.catalog_file.is_none() {
                let c = encode::catalog(&self.boot_entries());
                buf[at(catalog)..][..2048].copy_from_slice(&c);
            }
        }
        buf[at(next)..][..2048].copy_from_slice(&encode::terminator());
        for (lba, big) in [(self.path_table_l, false), (self.path_table_m, true)] {
            let t = self.path_table(big);
            buf[at(lba)..][..t.len()].copy_from_slice(&t);
        }
        for d in &self.dirs {
            let mut pos = at(d.lba);
            let end = pos + to_usize(u64::from(d.blocks) * BLOCK);
            for r in &d.recs {
                let len = record_len(r);
                if pos % 2048 + len > 2048 {
                    pos = pos.next_multiple_of(2048);
                }
                debug_assert!(pos + len <= end);
                self.encode_record(r, &mut buf[pos..pos + len]);
                pos += len;
            }
            self.encode_continuations(d.recs.iter(), &mut buf, at(self.ce_lba));
        }
        buf
    }

    fn ce_entry(&self, r: &Rec, i: usize) -> Vec<u8> {
        let (block, off) = r.ce[i];
        let n = r.su.chunks.len();
        let len = r.su.chunks[i].len() + if i + 1 < n { susp::CE_LEN } else { 0 };
        let len = u32::try_from(len).expect("a chunk is at most a block");
        susp::ce(self.ce_lba + block, off, len)
    }

    fn encode_record(&self, r: &Rec, out: &mut [u8]) {
        let (lba, len, flags) = r.extent(self);
        let mut su = r.su.inline.clone();
        if !r.su.chunks.is_empty() {
            su.extend_from_slice(&self.ce_entry(r, 0));
        }
        Record {
            lba,
            len,
            mtime: r.mtime,
            flags,
            ident: &r.ident,
            system_use: &su,
        }
        .encode(out);
    }

    fn encode_continuations<'a>(
        &self,
        recs: impl Iterator<Item = &'a Rec>,
        buf: &mut [u8],
        ce_start: usize,
    ) {
        for r in recs {
            for (i, c) in r.su.chunks.iter().enumerate() {
                let (block, off) = r.ce[i];
                let mut pos =
                    ce_start + to_usize(u64::from(block) * BLOCK) + to_usize(u64::from(off));
                buf[pos..pos + c.len()].copy_from_slice(c);
                pos += c.len();
                if i + 1 < r.su.chunks.len() {
                    let ce = self.ce_entry(r, i + 1);
                    buf[pos..pos + ce.len()].copy_from_slice(&ce);
                }
            }
        }
    }

    /// The content of file `index`: the catalog, a patched boot image, in-memory bytes, or
    /// the data ranges of its host file (its holes as zeros); the last block's tail zeros.
    fn map_file(&self, index: usize, tree: &Tree, b: &mut MapBuilder) -> Result<()> {
        let f = &self.files[index];
        let data = match ((f.node as usize) < tree.len()).then(|| &tree.node(f.node).kind) {
            Some(Kind::File(d)) if d.size() == f.size => d,
            _ => {
                return Err(Error::TreeChanged {
                    path: f.path.clone(),
                })
            }
        };
        let at = u64::from(f.lba) * BLOCK;
        let tail = f.size.next_multiple_of(BLOCK) - f.size;
        b.zeros(at + f.size, tail)?;
        if self.catalog_file == Some(index) {
            b.bytes(at, encode::catalog(&self.boot_entries()))?;
            return Ok(());
        }
        let patch = self.opts.bios.as_ref().is_some_and(|o| o.boot_info_table);
        if patch && self.bios_file == Some(index) {
            let mut bytes = self.read_whole(index, data)?;
            encode::boot_info_table(&mut bytes, f.lba);
            b.bytes(at, bytes)?;
            return Ok(());
        }
        match data {
            FileData::Bytes(bytes) => b.bytes_range(at, bytes, 0..bytes.len())?,
            FileData::Host { path: host, .. } => {
                let src = self.open(index, host)?;
                let ranges = src.data_ranges().map_err(|source| Error::Source {
                    path: f.path.clone(),
                    source,
                })?;
                b.file_ranges(at, &SourceFile::new(host, f.size), &ranges)?;
            }
        }
        Ok(())
    }

    /// Opens the host file of file `index` without blocking and checks it is still a regular
    /// file of the planned size.
    fn open(&self, index: usize, host: &Path) -> Result<PlannedSource> {
        let f = &self.files[index];
        PlannedSource::open(host, f.size).map_err(|source| Error::Source {
            path: f.path.clone(),
            source,
        })
    }

    /// The whole content of file `index` (bounded by [`MAX_PATCHED_IMAGE`] when planned).
    fn read_whole(&self, index: usize, data: &FileData) -> Result<Vec<u8>> {
        let f = &self.files[index];
        debug_assert!(f.size <= MAX_PATCHED_IMAGE);
        match data {
            FileData::Bytes(bytes) => Ok(bytes.to_vec()),
            FileData::Host { path: host, .. } => {
                let src = self.open(index, host)?;
                let mut out = vec![0; to_usize(f.size)];
                src.read_exact_at(0, &mut out)
                    .map_err(|source| Error::Source {
                        path: f.path.clone(),
                        source,
                    })?;
                Ok(out)
            }
        }
    }
}
