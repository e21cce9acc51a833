//! Bounded reading: the image file, byte ranges of it (`Slice`), and the read budget that
//! turns any loop a corrupt image could send a third-party reader into an error.

use std::cell::Cell;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;

use crate::bytes::{len64, to_usize};
use crate::error::{Error, Result, Where};

/// The uncompressed image: a host file (the image itself, or a sparse temporary file holding
/// its decompressed bytes) and its size.
#[derive(Debug)]
pub(crate) struct Disk {
    file: File,
    size: u64,
    /// Byte ranges read, when tracing (see [`crate::OpenOptions::trace_reads`]).
    trace: Option<std::sync::Mutex<Vec<(u64, u64)>>>,
}

impl Disk {
    pub(crate) fn new(file: File, size: u64) -> Self {
        Self {
            file,
            size,
            trace: None,
        }
    }

    /// The host file (for a container found inside a decompressed image).
    pub(crate) fn into_file(self) -> File {
        self.file
    }

    pub(crate) fn set_tracing(&mut self, on: bool) {
        self.trace = on.then(|| std::sync::Mutex::new(Vec::new()));
    }

    /// The byte ranges asked for so far (each read request once, sorted; empty when not
    /// tracing). Requests, not cache fills: a 32-byte directory entry read is its own range.
    pub(crate) fn traced(&self) -> Vec<(u64, u64)> {
        let Some(t) = &self.trace else {
            return Vec::new();
        };
        let mut v = t.lock().map(|v| v.clone()).unwrap_or_default();
        v.sort_unstable();
        v.dedup();
        v
    }

    fn note(&self, offset: u64, len: u64) {
        if let Some(t) = &self.trace {
            if let Ok(mut t) = t.lock() {
                if t.len() < 1 << 20 {
                    t.push((offset, offset + len));
                }
            }
        }
    }

    /// Reads exactly `buf.len()` bytes at `offset`, traced.
    pub(crate) fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.note(offset, len64(buf.len()));
        self.read_raw(offset, buf)
    }

    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    /// Reads exactly `buf.len()` bytes at `offset`; an error if that is past the end.
    fn read_raw(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let end = offset
            .checked_add(len64(buf.len()))
            .filter(|&e| e <= self.size)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "read of {} bytes at offset {offset} is past the end of the image ({} bytes)",
                        buf.len(),
                        self.size
                    ),
                )
            })?;
        debug_assert!(end <= self.size);
        self.file.read_exact_at(buf, offset)
    }
}

/// How many bytes a reader may still read before the current operation is stopped.
///
/// Third-party readers (`fatfs`, `ext4-view`, `gpt`, `mbrman`) follow pointers they find in
/// the image: a cluster chain or an extent tree that loops would make them read forever. Every
/// operation sets a budget proportional to what it can legitimately need; running out of it is
/// an error ([`Error::Limit`]), not a hang.
#[derive(Clone, Debug, Default)]
pub(crate) struct Budget(Rc<BudgetInner>);

#[derive(Debug, Default)]
struct BudgetInner {
    left: Cell<u64>,
    exhausted: Cell<bool>,
}

/// Every operation may read this much on top of what it needs for file data.
pub(crate) const BASE_BUDGET: u64 = 256 << 20;

impl Budget {
    pub(crate) fn new(bytes: u64) -> Self {
        let b = Self::default();
        b.set(bytes);
        b
    }

    pub(crate) fn set(&self, bytes: u64) {
        self.0.left.set(bytes);
        self.0.exhausted.set(false);
    }

    pub(crate) fn exhausted(&self) -> bool {
        self.0.exhausted.get()
    }

    fn take(&self, n: u64) -> io::Result<()> {
        let left = self.0.left.get();
        if n > left {
            self.0.exhausted.set(true);
            self.0.left.set(0);
            return Err(io::Error::other(
                "read budget exhausted: the image's metadata makes the reader loop",
            ));
        }
        self.0.left.set(left - n);
        Ok(())
    }
}

const CACHE: usize = 64 << 10;

/// A byte range of the disk, readable and seekable like a file, writable never.
///
/// Small reads (FAT directory entries, table entries) are served from a 64 KiB cache so a
/// reader that asks for 32 bytes at a time does not cost a system call each.
#[derive(Debug)]
pub(crate) struct Slice {
    disk: Arc<Disk>,
    start: u64,
    len: u64,
    pos: u64,
    budget: Budget,
    cache: Vec<u8>,
    cache_at: u64,
}

impl Slice {
    /// `start..start + len` must lie inside the disk (checked by the caller; reads past the
    /// disk's end are errors anyway).
    pub(crate) fn new(disk: Arc<Disk>, start: u64, len: u64, budget: Budget) -> Self {
        Self {
            disk,
            start,
            len,
            pos: 0,
            budget,
            cache: Vec::new(),
            cache_at: 0,
        }
    }

    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Reads exactly `buf.len()` bytes at `offset` within the slice.
    pub(crate) fn read_exact_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let n = len64(buf.len());
        if offset.checked_add(n).is_none_or(|end| end > self.len) {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "read of {n} bytes at offset {offset} is past the end of the partition ({} bytes)",
                    self.len
                ),
            ));
        }
        self.budget.take(n)?;
        self.disk.note(self.start + offset, n);
        if buf.len() >= CACHE / 4 {
            return self.disk.read_raw(self.start + offset, buf);
        }
        let mut done = 0;
        while done < buf.len() {
            let at = offset + len64(done);
            let cached = at >= self.cache_at && at < self.cache_at + len64(self.cache.len());
            if !cached {
                let chunk = at - at % len64(CACHE);
                let clen = to_usize(self.len - chunk).min(CACHE);
                self.cache.resize(clen, 0);
                if let Err(e) = self.disk.read_raw(self.start + chunk, &mut self.cache) {
                    self.cache.clear();
                    return Err(e);
                }
                self.cache_at = chunk;
            }
            let i = to_usize(at - self.cache_at);
            let m = (self.cache.len() - i).min(buf.len() - done);
            buf[done..done + m].copy_from_slice(&self.cache[i..i + m]);
            done += m;
        }
        Ok(())
    }
}

impl Read for Slice {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = to_usize(self.len.saturating_sub(self.pos)).min(buf.len());
        if n == 0 {
            return Ok(0);
        }
        self.read_exact_at(self.pos, &mut buf[..n])?;
        self.pos += len64(n);
        Ok(n)
    }
}

impl Seek for Slice {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let new = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        match new {
            Some(n) => {
                self.pos = n;
                Ok(n)
            }
            None => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek to a negative or overflowing position",
            )),
        }
    }
}

/// Readers only ever get read access: any write attempt (fatfs updating a dirty flag on
/// drop, for example) fails and leaves the image untouched.
impl Write for Slice {
    fn write(&mut self, _buf: &[u8]) -> io::Result<usize> {
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "imgbuild-inspect never writes to an image",
        ))
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl ext4_view::Ext4Read for Slice {
    fn read(
        &mut self,
        start_byte: u64,
        dst: &mut [u8],
    ) -> std::result::Result<(), Box<dyn std::error::Error + Send + Sync + 'static>> {
        self.read_exact_at(start_byte, dst).map_err(Box::from)
    }
}

/// Data (not zeros) an unpacked image may write into its temporary file: 1024 bytes per byte
/// of the file it comes from, at least 256 MiB, at most `max_size`. A real image's data
/// compresses far less than that (zstd's own worst case for zeros is 32768:1, and zeros are
/// never written); a small bomb of non-zero data stops at 256 MiB.
pub(crate) fn data_cap(source_len: u64, max_size: u64) -> u64 {
    source_len
        .saturating_mul(DATA_PER_SOURCE_BYTE)
        .max(MIN_DATA_CAP)
        .min(max_size)
}

const DATA_PER_SOURCE_BYTE: u64 = 1024;
const MIN_DATA_CAP: u64 = 256 << 20;
/// The space left in the temporary directory is checked after every this many bytes written,
/// and must stay above it.
const SPACE_CHECK: u64 = 64 << 20;
/// Zero runs of this size are not written to the temporary file.
pub(crate) const SPARSE_BLOCK: usize = 64 << 10;

/// The sparse temporary file an image is unpacked into (decompressed, or out of a
/// container): zero blocks stay holes; the data written is bounded by a cap
/// ([`data_cap`]) and by the space left in the directory, which every error names (the
/// `--tmpdir` given, else `TMPDIR`, else `/tmp`).
#[derive(Debug)]
pub(crate) struct TempDisk {
    file: File,
    dir: std::path::PathBuf,
    /// Bytes of data written so far, and the cap on them.
    written: Cell<u64>,
    cap: u64,
    /// `written` at which the free space is checked next.
    next_check: Cell<u64>,
    at: Where,
}

impl TempDisk {
    /// A new temporary file of `len` bytes (sparse) in `dir` (else the default temporary
    /// directory), taking at most `cap` bytes of data.
    pub(crate) fn create(dir: Option<&Path>, len: u64, cap: u64, at: Where) -> Result<Self> {
        let dir = dir.map_or_else(std::env::temp_dir, Path::to_path_buf);
        let host = |source| Error::Host {
            path: dir.clone(),
            source,
        };
        let file = tempfile::tempfile_in(&dir)
            .and_then(|f| f.set_len(len).map(|()| f))
            .map_err(host)?;
        let t = TempDisk {
            file,
            dir,
            written: Cell::new(0),
            cap,
            next_check: Cell::new(0),
            at,
        };
        t.check_space()?;
        Ok(t)
    }

    fn host(&self, source: io::Error) -> Error {
        Error::Host {
            path: self.dir.clone(),
            source,
        }
    }

    /// Refuses to go on when the directory has less than [`SPACE_CHECK`] bytes left.
    fn check_space(&self) -> Result<()> {
        let free = free_space(&self.dir).map_err(|e| self.host(e))?;
        if free < SPACE_CHECK {
            return Err(self.host(io::Error::new(
                io::ErrorKind::StorageFull,
                format!(
                    "only {free} bytes free in the temporary directory after unpacking {} bytes \
                     of the image into it; choose another with --tmpdir DIR (or TMPDIR)",
                    self.written.get()
                ),
            )));
        }
        self.next_check.set(self.written.get() + SPACE_CHECK);
        Ok(())
    }

    /// Writes `data` at `offset`, leaving zero blocks of [`SPARSE_BLOCK`] bytes as holes.
    pub(crate) fn write_at(&self, offset: u64, data: &[u8]) -> Result<()> {
        let mut pos = offset;
        for block in data.chunks(SPARSE_BLOCK) {
            if block.iter().any(|&b| b != 0) {
                let w = self.written.get() + len64(block.len());
                if w > self.cap {
                    return Err(Error::TooLarge {
                        at: self.at.clone(),
                        what: "data unpacked from the image (at most 1024 times the file's \
                               size, at least 256 MiB, zeros not counted)",
                        size: w,
                        max: self.cap,
                    });
                }
                self.file
                    .write_all_at(block, pos)
                    .map_err(|e| self.host(e))?;
                self.written.set(w);
                if w >= self.next_check.get() {
                    self.check_space()?;
                }
            }
            pos += len64(block.len());
        }
        Ok(())
    }

    /// The unpacked disk of `size` bytes.
    pub(crate) fn into_disk(self, size: u64) -> Result<Disk> {
        self.file.set_len(size).map_err(|e| self.host(e))?;
        Ok(Disk::new(self.file, size))
    }
}

/// Bytes an unprivileged user may still write in the filesystem holding `dir`.
fn free_space(dir: &Path) -> io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL byte in the path"))?;
    // SAFETY: `c` is a valid NUL-terminated path; `st` is written by statvfs before it is
    // read, and only read when the call succeeded.
    let st = unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(c.as_ptr(), &mut st) != 0 {
            return Err(io::Error::last_os_error());
        }
        st
    };
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk(bytes: &[u8]) -> Arc<Disk> {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(bytes).unwrap();
        Arc::new(Disk::new(f, bytes.len() as u64))
    }

    #[test]
    fn slice_reads_are_bounded_and_cached() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let d = disk(&data);
        let mut s = Slice::new(d, 1000, 150_000, Budget::new(u64::MAX));
        let mut b = [0u8; 10];
        s.read_exact_at(65_530, &mut b).unwrap();
        assert_eq!(&b[..], &data[66_530..66_540]);
        assert!(s.read_exact_at(149_995, &mut b).is_err());
        s.seek(SeekFrom::End(-4)).unwrap();
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).unwrap();
        assert_eq!(rest, &data[150_996..151_000]);
        assert!(s.write(b"x").is_err());
        assert!(s.seek(SeekFrom::Current(-1_000_000)).is_err());
    }

    #[test]
    fn unpacked_data_is_capped_and_zeros_are_free() {
        assert_eq!(data_cap(32 << 10, 64 << 30), 256 << 20);
        assert_eq!(data_cap(1 << 20, 64 << 30), 1 << 30);
        assert_eq!(data_cap(1 << 30, 64 << 30), 64 << 30);
        assert_eq!(data_cap(u64::MAX, 64 << 30), 64 << 30);
        let dir = tempfile::tempdir().unwrap();
        let at = Where::image(Path::new("x.zst"));
        let t = TempDisk::create(Some(dir.path()), 0, 2 * SPARSE_BLOCK as u64, at).unwrap();
        t.write_at(0, &vec![0u8; 1 << 20]).unwrap();
        let data = vec![1u8; SPARSE_BLOCK];
        t.write_at(1 << 20, &data).unwrap();
        t.write_at(4 << 20, &data).unwrap();
        let e = t.write_at(8 << 20, &data).unwrap_err();
        assert!(e.to_string().contains("data unpacked"), "{e}");
        let d = t.into_disk(9 << 20).unwrap();
        assert_eq!(d.size(), 9 << 20);
        let mut b = vec![0u8; 4];
        d.read_exact_at(4 << 20, &mut b).unwrap();
        assert_eq!(b, [1; 4]);
        let missing = dir.path().join("missing");
        let e = TempDisk::create(Some(&missing), 0, 1, Where::image(Path::new("x"))).unwrap_err();
        assert!(e.to_string().contains(missing.to_str().unwrap()), "{e}");
    }

    #[test]
    fn budget_stops_reading() {
        let d = disk(&[7u8; 4096]);
        let budget = Budget::new(100);
        let mut s = Slice::new(d, 0, 4096, budget.clone());
        let mut b = [0u8; 64];
        s.read_exact_at(0, &mut b).unwrap();
        assert!(s.read_exact_at(0, &mut b).is_err());
        assert!(budget.exhausted());
        budget.set(1000);
        s.read_exact_at(0, &mut b).unwrap();
    }
}
