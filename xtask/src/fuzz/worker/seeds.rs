//! The image seeds of a worker: copied into its directory, each with its field map and
//! checksum fixup (the GCE seed kept as its tar, gzipped again per case).

use std::fs::File;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use imgbuild_testutil::harness;

use crate::fuzz::fields::{self, Map};
use crate::fuzz::mutate::Fixup;
use crate::fuzz::Target;

/// A binary seed, copied into the worker's directory and mutated in place.
pub(super) struct Seed {
    pub name: String,
    pub path: PathBuf,
    pub len: u64,
    pub map: Map,
    pub fixup: Fixup,
    /// A gzip seed (GCE's tar, a gzipped qcow2): what is inside, mutated in memory and
    /// gzipped per case.
    pub tar: Option<Vec<u8>>,
    /// Whether that is a tar (its first header's checksum fixed after mutation).
    pub tar_header: bool,
}

fn seed_map(target: Target, path: &Path, len: u64) -> Result<(Map, Fixup)> {
    let f = File::open(path)?;
    let mut m = Map::default();
    let disk = target.is_disk();
    if disk {
        m.ranges = harness::Base::new("seed", path).ranges;
    }
    let parts = fields::partitions(&f, len);
    let fix = match target {
        Target::Gpt => {
            fields::gpt(&f, len, &mut m);
            Fixup::Gpt
        }
        Target::Mbr => {
            fields::mbr(&mut m);
            Fixup::None
        }
        Target::Ext4 => {
            for &(s, n) in &parts {
                fields::ext4(&f, s, n, &mut m);
            }
            Fixup::Ext4
        }
        Target::Fat => {
            if parts.is_empty() {
                fields::fat(&f, 0, len, &mut m);
            }
            for &(s, n) in &parts {
                fields::fat(&f, s, n, &mut m);
            }
            Fixup::None
        }
        Target::Iso9660 => {
            fields::iso9660(&f, len, &mut m);
            Fixup::None
        }
        Target::Squashfs => {
            fields::squashfs::seed(&f, len, &mut m);
            Fixup::None
        }
        Target::Nixdb => {
            m.ranges.clear();
            for &(s, n) in &parts {
                fields::sqlite(&f, s, n, &mut m);
            }
            Fixup::None
        }
        Target::Qcow2 => {
            fields::qcow2(&f, len, &mut m);
            Fixup::None
        }
        Target::Vhd => {
            fields::vhd(&f, len, &mut m);
            Fixup::Vhd
        }
        Target::Vhdx => {
            fields::vhdx(&f, &mut m);
            Fixup::Vhdx
        }
        Target::Vmdk => {
            fields::vmdk(&f, 0, len, &mut m);
            Fixup::None
        }
        Target::Ova => {
            if let Some((at, size)) = fields::tar(&f, len, &mut m) {
                fields::vmdk(&f, at, size, &mut m);
            }
            Fixup::Tar
        }
        Target::Vma => {
            fields::vma(&f, len, &mut m);
            Fixup::Vma
        }
        Target::Gce
        | Target::Format
        | Target::Registration
        | Target::Bootspec
        | Target::Grub
        | Target::GrubEfi
        | Target::Verity
        | Target::Uki
        | Target::Authenticode => Fixup::None,
    };
    if !disk && m.ranges.is_empty() {
        m.ranges.push((0, len.min(64 << 10)));
        m.ranges.push((len.saturating_sub(4096), len));
    }
    anyhow::ensure!(
        !m.fields.is_empty() || target == Target::Gce,
        "{}: no {} structures found",
        path.display(),
        target.name()
    );
    Ok((m, fix))
}

fn gunzip(path: &Path) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(File::open(path)?).read_to_end(&mut out)?;
    Ok(out)
}

pub(super) fn gzip(b: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let _ = e.write_all(b);
    e.finish().unwrap_or_default()
}

pub(super) fn load_seeds(target: Target, seeds: &Path, work: &Path) -> Result<Vec<Seed>> {
    let mut out = Vec::new();
    for name in target.seeds() {
        let src = seeds.join(name);
        let path = work.join(name);
        crate::fuzz::copy_sparse(&src, &path)?;
        let len = std::fs::metadata(&path)?.len();
        let (map, fixup, tar) = if target == Target::Gce {
            let t = gunzip(&path)?;
            let mut m = Map::default();
            if name.ends_with(".tar.gz") {
                fields::gnu_sparse(&t, &mut m);
            } else {
                // a gzipped qcow2: its fields, found in a copy of what the stream holds
                let inner = work.join(format!("{name}.inner"));
                std::fs::write(&inner, &t)?;
                fields::qcow2(&File::open(&inner)?, t.len() as u64, &mut m);
            }
            (m, Fixup::None, Some(t))
        } else {
            let (m, f) = seed_map(target, &path, len).with_context(|| format!("seed {name}"))?;
            (m, f, None)
        };
        eprintln!(
            "fuzz {}: seed {name}: {} fields, {} hot ranges",
            target.name(),
            map.fields.len(),
            map.ranges.len()
        );
        out.push(Seed {
            name: name.to_string(),
            path,
            len,
            map,
            fixup,
            tar_header: name.ends_with(".tar.gz"),
            tar,
        });
    }
    Ok(out)
}
