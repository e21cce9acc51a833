//! Planned sources: host files whose size was measured when the image was planned and whose
//! bytes are read later, by range, while the image is written (a closure's store files, `--add`
//! sources, a file system image being compressed). Between the two the file may have been
//! changed, truncated, or swapped for a FIFO or a device: [`PlannedSource`] is the one place that
//! opens such a file without blocking, checks it is still a regular file of the planned size,
//! and reads ranges of it, refusing a file that ends early. Its errors are one type,
//! [`SourceError`], that every writer reports alike.

use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::input::{open_regular, Follow, OpenFail};

/// Why a planned source could not be used: it cannot be read, or it is no longer what the plan
/// measured.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// Opening, `fstat` or reading failed (missing, no permission, an I/O error).
    #[error("`{}`: cannot read it", path.display())]
    Unreadable {
        /// The host file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// The path no longer names a regular file (a FIFO, a device, a directory swapped in).
    #[error("`{}` is {found}, not a regular file: it changed since it was scanned", path.display())]
    NotRegular {
        /// The host file.
        path: PathBuf,
        /// What it is now: `a FIFO`, `a character device`, `a directory`, ...
        found: &'static str,
    },
    /// The file's size differs from the planned one: at the open (its `fstat` size), or while
    /// reading (it ended at `found`, before the range read).
    #[error("`{}` changed since it was scanned: planned {planned} bytes, found {found}", path.display())]
    Changed {
        /// The host file.
        path: PathBuf,
        /// The size the plan measured.
        planned: u64,
        /// The size found (or where the file ended during a read).
        found: u64,
    },
}

impl SourceError {
    /// The host file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            SourceError::Unreadable { path, .. }
            | SourceError::NotRegular { path, .. }
            | SourceError::Changed { path, .. } => path,
        }
    }
}

/// A host file open for reading, checked at the open to be a regular file of its planned size.
///
/// The open never blocks (`O_NONBLOCK`: a path swapped for a FIFO since the plan would hang
/// the build) nor takes a terminal (`O_NOCTTY`); a non-regular file is refused from its `stat`
/// before the open and again from the descriptor's `fstat`. Symlinks are followed.
#[derive(Debug)]
pub struct PlannedSource {
    file: File,
    path: PathBuf,
    size: u64,
    allocated: u64,
}

impl PlannedSource {
    /// Opens `path`, which the plan measured at `planned` bytes: [`SourceError::NotRegular`]
    /// unless it is still a regular file, [`SourceError::Changed`] when its size differs,
    /// [`SourceError::Unreadable`] when it cannot be opened.
    pub fn open(path: &Path, planned: u64) -> Result<Self, SourceError> {
        let (file, md) = open_regular(path, Follow::Yes).map_err(|e| match e {
            OpenFail::Io { source, .. } => SourceError::Unreadable {
                path: path.to_path_buf(),
                source,
            },
            OpenFail::WrongType(found) => SourceError::NotRegular {
                path: path.to_path_buf(),
                found,
            },
        })?;
        if md.len() != planned {
            return Err(SourceError::Changed {
                path: path.to_path_buf(),
                planned,
                found: md.len(),
            });
        }
        Ok(PlannedSource {
            file,
            path: path.to_path_buf(),
            size: planned,
            // st_blocks counts 512-byte units whatever the file system's block size.
            allocated: md.blocks().saturating_mul(512),
        })
    }

    /// The path it was opened by (for messages).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Its size: the planned one, which the open checked.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Bytes of storage the file had allocated at the open (`st_blocks * 512`): at least its
    /// size means it has no holes, so its data ranges need not be looked for.
    pub fn allocated_bytes(&self) -> u64 {
        self.allocated
    }

    /// The open descriptor (for `copy_file_range` or [`crate::Region::copy_from`]).
    pub fn file(&self) -> &File {
        &self.file
    }

    /// The descriptor, keeping nothing else (to share it, e.g. in an `Arc<File>`).
    pub fn into_file(self) -> File {
        self.file
    }

    /// Fills `buf` with the bytes at `offset`: [`SourceError::Changed`] (with where the file
    /// ended) when it ends before `offset + buf.len()`, [`SourceError::Unreadable`] on an I/O
    /// error.
    pub fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), SourceError> {
        let got = crate::read_full_at(&self.file, buf, offset).map_err(|e| self.unreadable(e))?;
        if got < buf.len() {
            return Err(SourceError::Changed {
                path: self.path.clone(),
                planned: self.size,
                found: offset.saturating_add(got as u64),
            });
        }
        Ok(())
    }

    /// The file's data ranges `(offset, len)` within its planned size, holes left out (see
    /// [`crate::data_ranges`]); [`SourceError::Unreadable`] when the file system fails.
    pub fn data_ranges(&self) -> Result<Vec<(u64, u64)>, SourceError> {
        crate::data_ranges(&self.file, self.size).map_err(|e| self.unreadable(e))
    }

    fn unreadable(&self, source: io::Error) -> SourceError {
        SourceError::Unreadable {
            path: self.path.clone(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;
    use std::time::{Duration, Instant};

    #[test]
    fn a_file_of_the_planned_size_reads_by_range() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        std::fs::write(&p, b"0123456789").unwrap();
        let s = PlannedSource::open(&p, 10).unwrap();
        assert_eq!((s.path(), s.size()), (p.as_path(), 10));
        let mut b = [0u8; 4];
        s.read_exact_at(3, &mut b).unwrap();
        assert_eq!(&b, b"3456");
        assert_eq!(s.data_ranges().unwrap(), vec![(0, 10)]);
        s.read_exact_at(10, &mut []).unwrap();
        // Past the end: where the file ended is reported.
        let e = s.read_exact_at(8, &mut b).unwrap_err();
        assert!(
            matches!(&e, SourceError::Changed { planned: 10, found: 10, path } if *path == p),
            "{e}"
        );
    }

    #[test]
    fn a_size_change_is_refused_at_the_open_and_while_reading() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        std::fs::write(&p, b"0123456789").unwrap();
        let e = PlannedSource::open(&p, 11).unwrap_err();
        assert!(
            matches!(
                &e,
                SourceError::Changed {
                    planned: 11,
                    found: 10,
                    ..
                }
            ),
            "{e}"
        );
        assert_eq!(
            e.to_string(),
            format!(
                "`{}` changed since it was scanned: planned 11 bytes, found 10",
                p.display()
            )
        );
        // Truncated after the open: the read finds the new end.
        let s = PlannedSource::open(&p, 10).unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&p)
            .unwrap()
            .set_len(6)
            .unwrap();
        let mut b = [0u8; 4];
        let e = s.read_exact_at(4, &mut b).unwrap_err();
        assert!(
            matches!(
                &e,
                SourceError::Changed {
                    planned: 10,
                    found: 6,
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn a_missing_file_is_unreadable_with_its_cause_chained_not_printed() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("missing");
        let e = PlannedSource::open(&p, 1).unwrap_err();
        assert_eq!(e.to_string(), format!("`{}`: cannot read it", p.display()));
        let cause = e.source().expect("the io error is chained");
        assert_eq!(
            cause.downcast_ref::<io::Error>().map(io::Error::kind),
            Some(io::ErrorKind::NotFound)
        );
        assert_eq!(e.path(), p);
    }

    /// A path swapped for a FIFO: refused at once (the open would block for a writer), named
    /// for what it is.
    #[test]
    fn a_fifo_or_device_is_refused_without_blocking() {
        let d = tempfile::tempdir().unwrap();
        let fifo = d.path().join("fifo");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let t = Instant::now();
        for (p, found) in [
            (fifo.as_path(), "a FIFO"),
            (Path::new("/dev/null"), "a character device"),
            (d.path(), "a directory"),
        ] {
            let e = PlannedSource::open(p, 0).unwrap_err();
            assert!(
                matches!(&e, SourceError::NotRegular { found: f, .. } if *f == found),
                "{e}"
            );
            assert!(e.to_string().contains("not a regular file"), "{e}");
        }
        assert!(t.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn allocation_tells_a_sparse_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("sparse");
        let f = File::create(&p).unwrap();
        f.set_len(64 << 20).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, &[1; 4096], 8 << 20).unwrap();
        f.sync_all().unwrap();
        let s = PlannedSource::open(&p, 64 << 20).unwrap();
        assert!(s.allocated_bytes() < s.size(), "{}", s.allocated_bytes());
        let ranges = s.data_ranges().unwrap();
        assert!(ranges.iter().any(|&(o, l)| o <= 8 << 20 && o + l > 8 << 20));
        let mut b = [9u8; 4];
        s.read_exact_at(0, &mut b).unwrap();
        assert_eq!(b, [0; 4], "holes read as zeros");
    }
}
