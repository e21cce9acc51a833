//! An image file to its disk: a raw image as is, a zstd or gzip stream decompressed, a
//! container unpacked (see [`crate::container`]), also when compressed (DigitalOcean's
//! `.qcow2.gz`).

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::bytes::len64;
use crate::container::{self, Container};
use crate::error::{Error, Result, Where};
use crate::io::{data_cap, Disk, TempDisk};

/// What the image file holds before any decoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// A raw disk image.
    None,
    /// A zstd stream, decompressed to a sparse temporary file on open.
    Zstd,
    /// A gzip stream (not a tar: that is a GCE image), decompressed the same way.
    Gzip,
}

const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Whether the gzip stream of `file` starts with a tar header (`ustar` at 257: a GCE image,
/// which its container reader unpacks); a stream that does not inflate is not a tar.
fn gzipped_tar(file: &File) -> bool {
    let mut head = [0u8; 512];
    let mut dec = flate2::read::MultiGzDecoder::new(io::BufReader::new(ReadAt { file, pos: 0 }));
    dec.read_exact(&mut head).is_ok() && &head[257..262] == b"ustar"
}

/// A `Read` over a file from `pos` on, leaving the file's own position alone.
struct ReadAt<'a> {
    file: &'a File,
    pos: u64,
}

impl Read for ReadAt<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read_at(buf, self.pos)?;
        self.pos += len64(n);
        Ok(n)
    }
}

/// Opens `path`: a raw image as is, a zstd- or gzip-compressed one decompressed into a
/// sparse anonymous temporary file (only non-zero 64 KiB blocks are written; memory stays
/// bounded by the decoder's window), a disk container (qcow2, VHD, VHDX, VMDK, OVA, GCE
/// tar.gz, VMA) unpacked the same way (a fixed VHD read in place), also out of a
/// decompressed stream. Refuses a disk above `max_size`.
pub(crate) fn open_disk(
    path: &Path,
    max_size: u64,
    temp_dir: Option<&Path>,
) -> Result<(Disk, Compression, u64, Container)> {
    let at = || Where::image(path);
    let file = File::open(path).map_err(|source| Error::Io { at: at(), source })?;
    let meta = file
        .metadata()
        .map_err(|source| Error::Io { at: at(), source })?;
    if !meta.is_file() {
        return Err(Error::Unsupported {
            at: at(),
            what: "not a regular file (block devices and directories are not images)".into(),
        });
    }
    let file_size = meta.len();
    let mut magic = [0u8; 4];
    let got = file
        .read_at(&mut magic, 0)
        .map_err(|source| Error::Io { at: at(), source })?;
    let compression = if got == 4 && magic == ZSTD_MAGIC {
        Some(Compression::Zstd)
    } else if got == 4 && magic[..2] == GZIP_MAGIC && !gzipped_tar(&file) {
        Some(Compression::Gzip)
    } else {
        None
    };
    if got == 4 && magic == [0xfd, b'7', b'z', b'X'] {
        return Err(Error::Unsupported {
            at: at(),
            what: "an xz stream (decompress it first)".into(),
        });
    }
    // The bytes a container is looked for in: the file, or what its stream decompresses to
    // (`.qcow2.gz`, `.vhd.zst`).
    let (inner, size) = match compression {
        Some(c) => {
            let disk = decompress(path, file, c, max_size, temp_dir)?;
            let size = disk.size();
            (disk.into_file(), size)
        }
        None => (file, file_size),
    };
    let kind = container::detect(&inner, size).map_err(|source| Error::Io { at: at(), source })?;
    let disk = container::open(kind, inner, size, path, max_size, temp_dir)?;
    Ok((
        disk,
        compression.unwrap_or(Compression::None),
        file_size,
        kind,
    ))
}

fn decompress(
    path: &Path,
    file: File,
    compression: Compression,
    max_size: u64,
    temp_dir: Option<&Path>,
) -> Result<Disk> {
    let at = || Where::image(path);
    let compressed = file
        .metadata()
        .map_err(|source| Error::Io { at: at(), source })?
        .len();
    // The size the frame header declares, when it does: refused at once when too large.
    let mut head = [0u8; 18];
    let n = file
        .read_at(&mut head, 0)
        .map_err(|source| Error::Io { at: at(), source })?;
    let declared = match compression {
        Compression::Zstd => zstd::zstd_safe::get_frame_content_size(&head[..n])
            .ok()
            .flatten(),
        _ => None,
    };
    if let Some(declared) = declared {
        if declared > max_size {
            return Err(Error::TooLarge {
                at: at(),
                what: "decompressed image (as its zstd frame header declares)",
                size: declared,
                max: max_size,
            });
        }
    }
    let tmp = TempDisk::create(temp_dir, 0, data_cap(compressed, max_size), at())?;
    let mut dec: Box<dyn Read> = match compression {
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(io::BufReader::new(
            ReadAt {
                file: &file,
                pos: 0,
            },
        ))),
        _ => Box::new(
            zstd::stream::read::Decoder::new(ReadAt {
                file: &file,
                pos: 0,
            })
            .map_err(|source| Error::Decompress { at: at(), source })?,
        ),
    };
    let mut buf = vec![0u8; 1 << 20];
    let mut total: u64 = 0;
    loop {
        // Fill the buffer completely (or to the end of the stream) so blocks stay aligned.
        let mut filled = 0;
        while filled < buf.len() {
            match dec.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => return Err(Error::Decompress { at: at(), source }),
            }
        }
        if filled == 0 {
            break;
        }
        if total + len64(filled) > max_size {
            return Err(Error::TooLarge {
                at: at(),
                what: "decompressed image",
                size: total + len64(filled),
                max: max_size,
            });
        }
        tmp.write_at(total, &buf[..filled])?;
        total += len64(filled);
    }
    tmp.into_disk(total)
}
