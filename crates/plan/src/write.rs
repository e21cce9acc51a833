//! Writing a planned image: filesystems in parallel into a sparse `OUT.tmp`, the partition
//! table last, optional compression, hashing, rename into place, manifest.

use crate::format::{Compression, Format, TableType};
use crate::layout::{Layout, SECTOR};
use crate::manifest::{Manifest, ManifestPartition};
use crate::{derive_id, output_full, BuildOptions, Error, Fs, Inputs, Part, Reporter, Result};
use imgbuild_blockio::{self as blockio, OutputFile, Progress, Region};
use imgbuild_partition as partition;
use rayon::prelude::*;
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

/// The raw image's path when the output is compressed: `foo.img.zst` -> `foo.img`.
pub fn raw_path_for(output: &Path) -> PathBuf {
    let s = output.as_os_str().to_string_lossy();
    match s.strip_suffix(".zst") {
        Some(base) => PathBuf::from(base),
        None => PathBuf::from(format!("{s}.raw")),
    }
}

fn uuid_string(b: &[u8; 16]) -> String {
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

struct Table {
    writes: Vec<partition::Write>,
    disk_id: String,
    guids: Vec<Option<String>>,
}

fn table(format: &Format, lay: &Layout, seed: &[u8], opts: &BuildOptions) -> Result<Table> {
    let align = Some(format.table.align.0);
    match format.table.kind {
        TableType::Gpt => {
            let disk_guid = derive_id(seed, "gpt-disk-guid");
            let mut guids = Vec::new();
            let mut parts = Vec::new();
            for (p, pl) in format.partitions.iter().zip(&lay.partitions) {
                let g = derive_id(seed, &format!("gpt-partition-guid:{}", p.name));
                guids.push(Some(uuid_string(&g).to_uppercase()));
                let type_guid = crate::format::parse_guid(&p.type_id)
                    .expect("validate() checked GPT type GUIDs");
                parts.push(partition::GptPartition {
                    name: p.name.clone(),
                    type_guid: uuid::Uuid::from_bytes(type_guid),
                    part_guid: uuid::Uuid::from_bytes(g),
                    first_lba: pl.start / SECTOR,
                    last_lba: (pl.start + pl.size) / SECTOR - 1,
                    attributes: 0,
                });
            }
            let l = partition::GptLayout {
                disk_size: lay.disk_size,
                disk_guid: uuid::Uuid::from_bytes(disk_guid),
                require_alignment: align,
                partitions: parts,
            };
            Ok(Table {
                writes: partition::encode_gpt(&l)?,
                disk_id: uuid_string(&disk_guid).to_uppercase(),
                guids,
            })
        }
        TableType::Mbr => {
            let id = opts.disk_id.unwrap_or_else(|| {
                let d = derive_id(seed, "mbr-disk-id");
                u32::from_le_bytes([d[0], d[1], d[2], d[3]])
            });
            let parts = format
                .partitions
                .iter()
                .zip(&lay.partitions)
                .map(|(p, pl)| partition::MbrPartition {
                    first_lba: pl.start / SECTOR,
                    sectors: pl.size / SECTOR,
                    type_byte: crate::format::parse_mbr_type(&p.type_id)
                        .expect("validate() checked MBR type bytes"),
                    bootable: p.bootable,
                })
                .collect();
            let l = partition::MbrLayout {
                disk_size: lay.disk_size,
                disk_id: id,
                require_alignment: align,
                partitions: parts,
            };
            Ok(Table {
                writes: partition::encode_mbr(&l)?,
                disk_id: format!("0x{id:08x}"),
                guids: vec![None; lay.partitions.len()],
            })
        }
    }
}

fn fill(
    part: &Part,
    file: &File,
    name: &str,
    progress: &dyn Progress,
    cancel: &AtomicBool,
) -> Result<()> {
    let region = Region::new(file, name, part.layout.start, part.layout.fs_size);
    match &part.fs {
        Fs::Ext4(plan) => plan
            .write(&part.tree, &region, progress, cancel)
            .map_err(|source| match source {
                imgbuild_ext4::Error::Interrupted => Error::Interrupted,
                source => Error::Ext4 {
                    name: name.to_string(),
                    source,
                },
            }),
        Fs::Fat(plan) => plan
            .write(&part.tree, &region, progress, cancel)
            .map_err(|source| match source {
                imgbuild_fat::Error::Interrupted => Error::Interrupted,
                source => Error::Fat {
                    name: name.to_string(),
                    source,
                },
            }),
    }
}

/// SHA-256 of the first `len` bytes of `f`. Only the data ranges (`SEEK_DATA`) are read;
/// holes are hashed from a small zero buffer. Reading a hole of a sparse file makes the kernel
/// allocate and zero page-cache pages and copy them out, which cost more than the hashing
/// itself (raw-efi's image is mostly holes: the empty ESP and the root's free space).
fn sha256_file(f: &File, len: u64, path: &Path, cancel: &AtomicBool) -> Result<String> {
    let read_err = |source| Error::Io {
        op: "reading back",
        path: path.to_path_buf(),
        source,
    };
    let ranges = blockio::data_ranges(f, len).map_err(read_err)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 4 << 20];
    let zeros = vec![0u8; 256 << 10];
    let mut off = 0u64;
    for (start, n) in ranges.into_iter().chain(std::iter::once((len, 0))) {
        // The hole [off, start).
        let mut hole = start - off;
        while hole > 0 {
            blockio::check_cancel(cancel).map_err(|_| Error::Interrupted)?;
            let step = hole.min(64 << 20);
            let mut left = step;
            while left > 0 {
                let k = (left as usize).min(zeros.len());
                h.update(&zeros[..k]);
                left -= k as u64;
            }
            hole -= step;
        }
        // The data [start, start + n).
        let end = start + n;
        off = start;
        while off < end {
            blockio::check_cancel(cancel).map_err(|_| Error::Interrupted)?;
            let k = ((end - off) as usize).min(buf.len());
            let got = blockio::read_full_at(f, &mut buf[..k], off).map_err(read_err)?;
            if got < k {
                return Err(read_err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "image shorter than planned",
                )));
            }
            h.update(&buf[..k]);
            off += k as u64;
        }
    }
    Ok(hex(&h.finalize()))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A writer that hashes what passes through it.
struct HashingWriter<W: Write> {
    inner: W,
    hash: Sha256,
    len: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn write(
    format: &Format,
    inputs: &Inputs,
    opts: &BuildOptions,
    lay: &Layout,
    parts: &[Part],
    seed: &[u8],
    added: Vec<crate::add::Added>,
    reporter: &dyn Reporter,
    cancel: &AtomicBool,
) -> Result<Manifest> {
    let compression = opts.compress.unwrap_or(format.compress);
    let table = table(format, lay, seed, opts)?;
    let raw_dest = match compression {
        Compression::None => opts.output.clone(),
        Compression::Zstd => raw_path_for(&opts.output),
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(opts.threads.max(1))
        .build()
        .map_err(|e| Error::Invalid(format!("starting {} threads: {e}", opts.threads)))?;

    let raw = OutputFile::create(&raw_dest, lay.disk_size)
        .map_err(Error::from)
        .map_err(output_full(&OutputFile::tmp_path(&raw_dest)))?;
    let total: u64 = parts
        .iter()
        .map(|p| crate::trees::data_bytes(&p.tree))
        .sum();
    reporter.phase("writing filesystems", total);
    let names: Vec<&str> = format.partitions.iter().map(|p| p.name.as_str()).collect();
    pool.install(|| {
        parts
            .par_iter()
            .zip(names.par_iter())
            .map(|(p, name)| fill(p, raw.file(), name, reporter, cancel))
            .collect::<Result<Vec<()>>>()
    })
    .map_err(output_full(raw.tmp()))?;
    blockio::check_cancel(cancel).map_err(|_| Error::Interrupted)?;
    // The partition table last: a half-written image never looks partitioned.
    let whole = Region::new(raw.file(), "partition table", 0, lay.disk_size);
    for w in &table.writes {
        whole
            .write_at(w.offset, &w.bytes)
            .map_err(Error::from)
            .map_err(output_full(raw.tmp()))?;
    }

    // Files to rename into place, image first, once the manifest is written too.
    let mut finished = Vec::new();
    let (image, image_size, sha256, raw_image) = match compression {
        Compression::None => {
            reporter.phase("hashing", lay.disk_size);
            let sha = sha256_file(raw.file(), lay.disk_size, raw.tmp(), cancel)?;
            let dest = raw.dest().to_path_buf();
            finished.push(raw);
            (dest, lay.disk_size, sha, None)
        }
        Compression::Zstd => {
            reporter.phase("compressing", lay.disk_size);
            let out_tmp = OutputFile::tmp_path(&opts.output);
            let out = OutputFile::create(&opts.output, 0)
                .map_err(Error::from)
                .map_err(output_full(&out_tmp))?;
            let (len, sha) = {
                let mut w = HashingWriter {
                    inner: BufWriter::with_capacity(1 << 20, out.file()),
                    hash: Sha256::new(),
                    len: 0,
                };
                let c = imgbuild_compress::Options {
                    level: opts.level,
                    workers: opts.threads.max(1) as u32,
                    checksum: true,
                };
                let last = std::sync::atomic::AtomicU64::new(0);
                imgbuild_compress::compress(
                    raw.file(),
                    lay.disk_size,
                    &mut w,
                    &c,
                    &|done| {
                        let prev = last.swap(done, std::sync::atomic::Ordering::Relaxed);
                        reporter.add(done.saturating_sub(prev));
                    },
                    cancel,
                )
                .map_err(|e| match e {
                    imgbuild_compress::Error::Interrupted { .. } => Error::Interrupted,
                    e => Error::Compress(e),
                })
                .map_err(output_full(&out_tmp))?;
                w.flush()
                    .map_err(|source| Error::Io {
                        op: "writing",
                        path: out_tmp.clone(),
                        source,
                    })
                    .map_err(output_full(&out_tmp))?;
                (w.len, hex(&w.hash.finalize()))
            };
            let dest = out.dest().to_path_buf();
            finished.push(out);
            let kept = opts.keep_raw.then(|| raw.dest().display().to_string());
            if opts.keep_raw {
                finished.push(raw);
            }
            (dest, len, sha, kept)
        }
    };
    reporter.done();

    let partitions = format
        .partitions
        .iter()
        .zip(&lay.partitions)
        .zip(&table.guids)
        .map(|((p, pl), guid)| {
            let uuid = match p.filesystem {
                crate::format::Filesystem::Ext4 => uuid_string(&crate::ext4_uuid(seed, &p.name)),
                _ => {
                    let id = crate::fat_volume_id(seed, &p.name);
                    format!("{:04X}-{:04X}", id >> 16, id & 0xffff)
                }
            };
            ManifestPartition {
                number: pl.number,
                name: p.name.clone(),
                start: pl.start,
                size: pl.size,
                first_lba: pl.start / SECTOR,
                last_lba: (pl.start + pl.size) / SECTOR - 1,
                type_id: p.type_id.clone(),
                guid: guid.clone(),
                bootable: p.bootable,
                filesystem: match &parts[pl.number - 1].fs {
                    Fs::Ext4(_) => "ext4".into(),
                    Fs::Fat(f) => format!("{:?}", f.fat_type()).to_lowercase(),
                },
                fs_size: pl.fs_size,
                label: p.label.clone(),
                uuid,
                mount_point: p.mount_point.clone(),
            }
        })
        .collect();
    let manifest = Manifest {
        format: format.name.clone(),
        system: format.system.clone(),
        toplevel: inputs.toplevel.to_string(),
        closure_source: inputs.source,
        store_paths: inputs.closure.paths.len(),
        nar_size: inputs.closure.total_nar_size(),
        table: match format.table.kind {
            TableType::Gpt => "gpt".into(),
            TableType::Mbr => "dos".into(),
        },
        disk_id: table.disk_id,
        disk_size: lay.disk_size,
        partitions,
        image: image.display().to_string(),
        image_size,
        sha256,
        compression,
        raw_image,
        source_date_epoch: opts.epoch,
        added,
    };
    // Nothing is renamed into place before every file is complete: a failure up to here
    // leaves no file at the output paths.
    let json = write_manifest(&image, &manifest)?;
    for f in finished {
        let tmp = f.tmp().to_path_buf();
        f.persist()
            .map_err(Error::from)
            .map_err(output_full(&tmp))?;
    }
    let tmp = json.tmp().to_path_buf();
    json.persist()
        .map_err(Error::from)
        .map_err(output_full(&tmp))?;
    Ok(manifest)
}

/// `<image>.json`: the manifest's path beside the image.
pub(crate) fn manifest_path(image: &Path) -> PathBuf {
    let mut s = image.as_os_str().to_owned();
    s.push(".json");
    PathBuf::from(s)
}

/// Writes the manifest to `<image>.json.tmp`; the caller renames it into place.
fn write_manifest(image: &Path, m: &Manifest) -> Result<OutputFile> {
    let dest = manifest_path(image);
    let text = serde_json::to_string_pretty(m).expect("the manifest is plain data") + "\n";
    let tmp = OutputFile::tmp_path(&dest);
    let out = OutputFile::create(&dest, 0)
        .map_err(Error::from)
        .map_err(output_full(&tmp))?;
    Region::new(out.file(), "manifest", 0, text.len() as u64)
        .write_at(0, text.as_bytes())
        .map_err(Error::from)
        .map_err(output_full(&tmp))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    /// The hole-skipping hash equals `sha256sum` of the whole file: holes at the start,
    /// between and after data, data ending off a block boundary, a file with no data.
    #[test]
    fn sparse_hash_matches_sha256sum() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cases: &[(u64, &[(u64, usize)])] = &[
            (0, &[]),
            (1 << 20, &[]),
            (9 << 20, &[(0, 100), (5 << 20, 70_000), ((9 << 20) - 3, 3)]),
            (
                (40 << 20) + 512,
                &[(4096, 4096), (4096 * 3 + 17, 9_000_000), (30 << 20, 1)],
            ),
        ];
        for (i, (len, writes)) in cases.iter().enumerate() {
            let p = dir.path().join(format!("img{i}"));
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&p)
                .expect("create");
            f.set_len(*len).expect("set_len");
            for (k, (off, n)) in writes.iter().enumerate() {
                let data: Vec<u8> = (0..*n).map(|j| (j * 31 + k * 7 + 1) as u8).collect();
                f.write_all_at(&data, *off).expect("write");
            }
            let ours = sha256_file(&f, *len, &p, &AtomicBool::new(false)).expect("hash");
            let out = std::process::Command::new("sha256sum")
                .arg(&p)
                .output()
                .expect("sha256sum runs");
            let theirs = String::from_utf8_lossy(&out.stdout);
            assert_eq!(
                ours,
                theirs.split_whitespace().next().unwrap_or(""),
                "case {i}"
            );
        }
    }

    #[test]
    fn sparse_hash_stops_when_cancelled() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("img");
        let f = File::create(&p).expect("create");
        f.set_len(1 << 20).expect("set_len");
        let r = sha256_file(&f, 1 << 20, &p, &AtomicBool::new(true));
        assert!(matches!(r, Err(Error::Interrupted)));
    }
}
