//! [`Image::read_all`]: every directory, file and symlink of every filesystem read, past errors.

use serde::Serialize;

use crate::fs::{self, Kind};
use crate::{bytes, error, path, Image};

/// What [`Image::read_all`] read in one filesystem.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ReadAll {
    /// The partition walked.
    pub partition: u32,
    /// Directories read.
    pub dirs: u64,
    /// Regular files read.
    pub files: u64,
    /// Symlinks read.
    pub symlinks: u64,
    /// Devices, fifos and sockets seen.
    pub other: u64,
    /// Bytes of file data read.
    pub bytes: u64,
    /// Errors met (the walk goes on past files that cannot be read).
    pub errors: Vec<String>,
}

impl Image {
    /// Reads every directory, file and symlink of every readable filesystem (like
    /// `ls -R` plus `cat` of each file), carrying on past errors: a deep check that the
    /// image reads back, and what the fuzz test runs on corrupted images.
    pub fn read_all(&self) -> Vec<ReadAll> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 256 << 10];
        for p in &self.parts {
            let Some(fs) = &p.fs else { continue };
            let mut r = ReadAll {
                partition: p.partition.entry.number,
                ..ReadAll::default()
            };
            // Like `Filesystem::walk`, but going on past a directory that cannot be read.
            let limits = fs.limits().clone();
            let mut stack: Vec<(Vec<u8>, usize)> = vec![(b"/".to_vec(), 0)];
            let mut visited: u64 = 0;
            let mut seen = std::collections::HashSet::new();
            if let Some(id) = fs.metadata(b"/").ok().and_then(|m| m.id) {
                seen.insert(id);
            }
            while let Some((dir, depth)) = stack.pop() {
                r.dirs += 1;
                if depth >= limits.max_depth {
                    r.errors
                        .push(format!("depth limit at {}", String::from_utf8_lossy(&dir)));
                    continue;
                }
                let entries = match fs.read_dir_walked(&dir) {
                    Ok(es) => es,
                    Err(e) => {
                        r.errors.push(error::chain(&e));
                        continue;
                    }
                };
                if let Err(e) = fs::check_names(&entries, &fs.at().with_path(&dir)) {
                    r.errors.push(error::chain(&e));
                    continue;
                }
                for e in entries {
                    visited += 1;
                    if visited > limits.max_walk_entries {
                        r.errors.push("entry limit reached".into());
                        stack.clear();
                        break;
                    }
                    let path = path::join(&dir, &e.name);
                    match e.kind {
                        Kind::Dir => {
                            if e.id.is_some_and(|id| !seen.insert(id)) {
                                r.errors.push(format!(
                                    "{}: directory loop or cross-linked directory",
                                    String::from_utf8_lossy(&path)
                                ));
                            } else {
                                stack.push((path, depth + 1));
                            }
                        }
                        Kind::Symlink => r.symlinks += 1,
                        Kind::File => {
                            r.files += 1;
                            let read = fs.open_walked(&path).and_then(|mut f| loop {
                                match f.read(&mut buf) {
                                    Ok(0) => break Ok(()),
                                    Ok(n) => r.bytes += bytes::len64(n),
                                    Err(e) => break Err(e),
                                }
                            });
                            if let Err(e) = read {
                                r.errors.push(error::chain(&e));
                            }
                        }
                        _ => r.other += 1,
                    }
                }
            }
            out.push(r);
        }
        out
    }
}
