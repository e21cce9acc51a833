//! A planned volume's bytes as an extent map.

use std::sync::Arc;

use fstree::{FileData, Kind, Tree};
use imgbuild_blockio::{to_usize, PlannedSource};
use imgbuild_diskmap::{Map, MapBuilder, SourceFile};
use imgbuild_fstree as fstree;

use crate::analyse::Target;
use crate::dirent::{self, ATTR_ARCHIVE, ATTR_DIRECTORY, ENTRY};
use crate::geometry::{self, SECTOR};
use crate::{boot, Error, FatType, Plan, Result};

impl Plan {
    /// The volume's bytes as an extent map of [`Plan::fs_bytes`] bytes. Files are taken from
    /// `tree`, which must be the tree given to [`plan`](crate::plan); host files are opened to
    /// check their size and find their holes, and referenced, not read.
    pub fn map(&self, tree: &Tree) -> Result<Map> {
        let mut b = MapBuilder::new("fat", self.fs_bytes());
        self.map_metadata(&mut b)?;
        for i in 0..self.a.files.len() {
            self.map_file(i, tree, &mut b)?;
        }
        Ok(b.finish()?)
    }

    /// Everything but the file contents: boot sectors, FATs and directories.
    fn map_metadata(&self, b: &mut MapBuilder) -> Result<()> {
        let g = &self.geo;
        let label = self.a.label.unwrap_or(*b"NO NAME    ");
        let id = boot::Identity {
            oem_name: &self.oem_name,
            volume_id: self.volume_id,
            label: &label,
            hidden_sectors: self.hidden_sectors,
        };
        let bs = boot::boot_sector(g, &id);
        let mut reserved = vec![0u8; g.reserved_sectors as usize * to_usize(SECTOR)];
        reserved[..512].copy_from_slice(&bs);
        if g.fat_type == FatType::Fat32 {
            let free = g.clusters - self.used_clusters();
            let fsi = boot::fsinfo(free, self.alloc.end - 1);
            let at = |s: u16| usize::from(s) * to_usize(SECTOR);
            reserved[at(boot::FSINFO_SECTOR)..][..512].copy_from_slice(&fsi);
            // Backup boot sector and, right after it, a copy of the FSInfo sector.
            reserved[at(boot::BACKUP_BOOT_SECTOR)..][..512].copy_from_slice(&bs);
            reserved[at(boot::BACKUP_BOOT_SECTOR + 1)..][..512].copy_from_slice(&fsi);
        }
        b.bytes(0, reserved)?;

        // The FATs: the used entries, then free entries (zeros that matter).
        let fat: Arc<[u8]> = boot::fat_bytes(g.fat_type, &self.fat_entries()).into();
        let fat_len = u64::from(g.fat_sectors) * SECTOR;
        debug_assert!(fat.len() as u64 <= fat_len);
        for copy in 0..geometry::NUM_FATS {
            let at = g.fat_start(copy);
            b.bytes_range(at, &fat, 0..fat.len())?;
            b.zeros(at + fat.len() as u64, fat_len - fat.len() as u64)?;
        }

        if g.fat_type != FatType::Fat32 {
            let mut root = vec![0u8; g.root_entries as usize * ENTRY];
            self.encode_dir(0, &mut root);
            b.bytes(g.root_dir_start(), root)?;
        }
        // The directories occupy one run of clusters starting at cluster 2.
        let first_dir = usize::from(g.fat_type != FatType::Fat32);
        let cb = to_usize(g.cluster_bytes());
        let dir_clusters: usize = self.alloc.dirs.iter().map(|d| d.1 as usize).sum();
        if dir_clusters > 0 {
            let mut buf = vec![0u8; dir_clusters * cb];
            for i in first_dir..self.a.dirs.len() {
                let (start, n) = self.alloc.dirs[i];
                let off = (start as usize - 2) * cb;
                self.encode_dir(i, &mut buf[off..off + n as usize * cb]);
            }
            b.bytes(g.cluster_offset(2), buf)?;
        }
        Ok(())
    }

    /// FAT entries 0 .. end of allocation (`u32::MAX` marks an end of chain).
    fn fat_entries(&self) -> Vec<u32> {
        let mut next = vec![0u32; self.alloc.end as usize];
        for &(start, n) in self.alloc.dirs.iter().chain(&self.alloc.files) {
            if n == 0 {
                continue;
            }
            for c in start..start + n - 1 {
                next[c as usize] = c + 1;
            }
            next[(start + n - 1) as usize] = u32::MAX;
        }
        next
    }

    fn dir_cluster(&self, i: usize) -> u32 {
        if i == 0 && self.geo.fat_type != FatType::Fat32 {
            0
        } else {
            self.alloc.dirs[i].0
        }
    }

    fn encode_dir(&self, i: usize, out: &mut [u8]) {
        let d = &self.a.dirs[i];
        let mut pos = 0;
        if i == 0 {
            if let Some(label) = &self.a.label {
                dirent::label_entry(&mut out[pos..], label, self.a.root_mtime);
                pos += ENTRY;
            }
        } else {
            let parent = if d.parent == 0 {
                0
            } else {
                self.dir_cluster(d.parent)
            };
            let me = self.dir_cluster(i);
            dirent::short_entry(
                &mut out[pos..],
                b".          ",
                0,
                ATTR_DIRECTORY,
                me,
                0,
                d.mtime,
            );
            pos += ENTRY;
            dirent::short_entry(
                &mut out[pos..],
                b"..         ",
                0,
                ATTR_DIRECTORY,
                parent,
                0,
                d.mtime,
            );
            pos += ENTRY;
        }
        for e in &d.entries {
            let (attr, cluster, size) = match e.target {
                Target::Dir(node) => (ATTR_DIRECTORY, self.dir_cluster(self.a.dir_index[&node]), 0),
                Target::File(f) => (
                    ATTR_ARCHIVE,
                    self.alloc.files[f].0,
                    // Files over MAX_FILE_SIZE (u32::MAX) were refused when planning.
                    u32::try_from(self.a.files[f].size).expect("at most MAX_FILE_SIZE"),
                ),
            };
            pos += dirent::named_entry(&mut out[pos..], &e.name, attr, cluster, size, e.mtime);
        }
        debug_assert_eq!(pos, d.slots as usize * ENTRY);
    }

    /// The content of file copy `index`: in-memory bytes, or the data ranges of its host
    /// file (its holes as zeros).
    fn map_file(&self, index: usize, tree: &Tree, b: &mut MapBuilder) -> Result<()> {
        let f = &self.a.files[index];
        let kind = (f.node as usize) < tree.len();
        let data = match kind.then(|| &tree.node(f.node).kind) {
            Some(Kind::File(d)) if d.size() == f.size => d,
            _ => {
                return Err(Error::TreeChanged {
                    path: f.path.clone(),
                })
            }
        };
        // An empty file has no cluster.
        let at = || self.geo.cluster_offset(self.alloc.files[index].0);
        match data {
            FileData::Bytes(_) if f.size == 0 => {}
            FileData::Bytes(bytes) => b.bytes_range(at(), bytes, 0..bytes.len())?,
            FileData::Host { path: host, .. } => {
                let src = PlannedSource::open(host, f.size).map_err(|source| Error::Source {
                    path: f.path.clone(),
                    source,
                })?;
                if f.size == 0 {
                    return Ok(());
                }
                // Data ranges from the file, holes as zeros (FAT files have no holes).
                let ranges = src.data_ranges().map_err(|source| Error::Source {
                    path: f.path.clone(),
                    source,
                })?;
                b.file_ranges(at(), &SourceFile::new(host, f.size), &ranges)?;
            }
        }
        Ok(())
    }
}
