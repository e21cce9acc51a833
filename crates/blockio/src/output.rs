//! [`OutputFile`]: an image written as `PATH.tmp` and renamed to `PATH` only when complete.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// An output file written as `PATH.tmp` and renamed to `PATH` only by [`OutputFile::persist`].
/// Dropping it unpersisted removes the temporary file, so a failed or interrupted build never
/// leaves anything at `PATH` (and never touches a previous `PATH`).
pub struct OutputFile {
    file: Option<File>,
    tmp: PathBuf,
    dest: PathBuf,
}

impl OutputFile {
    /// The temporary path used for `dest`.
    pub fn tmp_path(dest: &Path) -> PathBuf {
        let mut s = dest.as_os_str().to_owned();
        s.push(".tmp");
        PathBuf::from(s)
    }

    /// Create `dest.tmp` (replacing a stale one) with length `len`, sparse.
    pub fn create(dest: &Path, len: u64) -> Result<Self> {
        Self::create_with_mode(dest, len, 0o666)
    }

    /// [`OutputFile::create`] with the permission bits `mode` (before the umask): 0600 for a
    /// file only its owner may read.
    pub fn create_with_mode(dest: &Path, len: u64, mode: u32) -> Result<Self> {
        use std::os::unix::fs::OpenOptionsExt;
        let tmp = Self::tmp_path(dest);
        let io = |op, source| Error::Io {
            op,
            path: tmp.clone(),
            source,
        };
        match std::fs::remove_file(&tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("removing a stale temporary file", e)),
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .map_err(|e| io("creating", e))?;
        // From here on, Drop removes the temporary file if anything fails.
        let out = OutputFile {
            file: Some(file),
            tmp: tmp.clone(),
            dest: dest.to_path_buf(),
        };
        out.file()
            .set_len(len)
            .map_err(|e| io("setting the image size", e))?;
        Ok(out)
    }

    pub fn file(&self) -> &File {
        self.file
            .as_ref()
            .expect("the file is present until persist() consumes self")
    }

    pub fn tmp(&self) -> &Path {
        &self.tmp
    }

    pub fn dest(&self) -> &Path {
        &self.dest
    }

    /// fsync, then rename to the final name. The previous file at `dest`, if any, is replaced
    /// atomically.
    pub fn persist(mut self) -> Result<PathBuf> {
        let file = self
            .file
            .take()
            .expect("the file is present until persist() consumes self");
        let io = |op, path: &Path, source| Error::Io {
            op,
            path: path.to_path_buf(),
            source,
        };
        file.sync_all().map_err(|e| io("syncing", &self.tmp, e))?;
        drop(file);
        std::fs::rename(&self.tmp, &self.dest)
            .map_err(|e| io("renaming into place", &self.dest, e))?;
        Ok(self.dest.clone())
    }
}

impl Drop for OutputFile {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Region;

    #[test]
    fn output_file_is_removed_unless_persisted() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out.img");
        {
            let o = OutputFile::create(&dest, 1 << 20).unwrap();
            assert!(o.tmp().exists());
        }
        assert!(!OutputFile::tmp_path(&dest).exists());
        assert!(!dest.exists());
        let o = OutputFile::create(&dest, 1 << 20).unwrap();
        Region::new(o.file(), "all", 0, 1 << 20)
            .write_at(0, b"hi")
            .unwrap();
        o.persist().unwrap();
        assert_eq!(&std::fs::read(&dest).unwrap()[..2], b"hi");
        assert!(!OutputFile::tmp_path(&dest).exists());
    }

    #[test]
    fn private_output_files_keep_their_mode_through_the_rename() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out.img");
        std::fs::write(&dest, b"old").unwrap();
        std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o644)).unwrap();
        let o = OutputFile::create_with_mode(&dest, 16, 0o600).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(o.tmp()), 0o600);
        o.persist().unwrap();
        assert_eq!(mode(&dest), 0o600);
    }
}
