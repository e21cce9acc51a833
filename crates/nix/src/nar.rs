//! NAR serialisation (`nix-store --dump`), its SHA-256, and Nix's reference scanner.
//!
//! The format (libutil/archive.cc): every token is a string written as a little-endian u64
//! length, the bytes, and zero padding to a multiple of 8. The archive is `nix-archive-1`
//! followed by one node:
//! `( type regular [executable ""] contents <data> )`, `( type symlink target <t> )` or
//! `( type directory { entry ( name <n> node <node> ) }* )`, entries sorted by name bytes.
//! Symlinks are never followed; a regular file is executable when its owner-execute bit is set.

use std::collections::{BTreeSet, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::encoding::nix32_digit;
use crate::store_path::HASH_PART_LEN;
use crate::{io_err, Error, NarHash, Result};

/// Size of the read buffer and of the batches handed to the hasher and scanner.
const CHUNK: usize = 256 * 1024;

/// SHA-256 and size of the NAR serialisation of `host_path` (not following a final symlink).
/// Files are streamed; memory use is bounded by the directory fan-out, not file sizes.
pub fn nar_hash(host_path: &Path) -> Result<(NarHash, u64)> {
    let mut sink = NarSink::new(io::sink(), None);
    dump(host_path, &mut sink)?;
    let (hash, size, _) = sink.finish(host_path)?;
    Ok((hash, size))
}

/// Writes the NAR serialisation of `host_path` to `out`, returning its size.
pub fn nar_dump(host_path: &Path, out: &mut dyn Write) -> Result<u64> {
    let mut sink = NarSink::new(out, None);
    dump(host_path, &mut sink)?;
    let (_, size, _) = sink.finish(host_path)?;
    Ok(size)
}

/// NAR hash, size, and the hash parts out of `candidates` that occur anywhere in the NAR.
pub(crate) fn nar_hash_and_refs(
    host_path: &Path,
    candidates: &HashSet<[u8; HASH_PART_LEN]>,
) -> Result<(NarHash, u64, BTreeSet<[u8; HASH_PART_LEN]>)> {
    let mut sink = NarSink::new(io::sink(), Some(RefScanner::new(candidates)));
    dump(host_path, &mut sink)?;
    sink.finish(host_path)
}

/// Collects NAR bytes in batches and feeds them to the hash, the size, the optional reference
/// scanner and the optional writer.
struct NarSink<'a, W: Write> {
    out: W,
    hasher: Sha256,
    size: u64,
    batch: Vec<u8>,
    read_buf: Vec<u8>,
    scanner: Option<RefScanner<'a>>,
    write_error: Option<io::Error>,
}

impl<'a, W: Write> NarSink<'a, W> {
    fn new(out: W, scanner: Option<RefScanner<'a>>) -> Self {
        Self {
            out,
            hasher: Sha256::new(),
            size: 0,
            // Both grow to CHUNK only when the data needs it: hashing many small files one
            // by one must not map and fault in half a MiB each time.
            batch: Vec::new(),
            read_buf: Vec::new(),
            scanner,
            write_error: None,
        }
    }

    fn data(&mut self, data: &[u8]) {
        if self.batch.len() + data.len() > CHUNK {
            self.flush();
        }
        if data.len() >= CHUNK {
            self.process(data);
        } else {
            self.batch.extend_from_slice(data);
        }
    }

    fn flush(&mut self) {
        let batch = std::mem::take(&mut self.batch);
        self.process(&batch);
        self.batch = batch;
        self.batch.clear();
    }

    fn process(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        self.hasher.update(data);
        self.size += data.len() as u64;
        if let Some(s) = &mut self.scanner {
            s.feed(data);
        }
        if self.write_error.is_none() {
            if let Err(e) = self.out.write_all(data) {
                self.write_error = Some(e);
            }
        }
    }

    fn pad(&mut self, len: u64) {
        let rem = (len % 8) as usize;
        if rem != 0 {
            self.data(&[0u8; 8][..8 - rem]);
        }
    }

    fn token(&mut self, s: &[u8]) {
        self.data(&(s.len() as u64).to_le_bytes());
        self.data(s);
        self.pad(s.len() as u64);
    }

    fn finish(mut self, path: &Path) -> Result<(NarHash, u64, BTreeSet<[u8; HASH_PART_LEN]>)> {
        self.flush();
        if let Some(e) = self.write_error.take() {
            return Err(io_err("writing the NAR of", path)(e));
        }
        self.out
            .flush()
            .map_err(io_err("writing the NAR of", path))?;
        let found = self.scanner.map(|s| s.found).unwrap_or_default();
        Ok((NarHash(self.hasher.finalize().into()), self.size, found))
    }
}

fn dump<W: Write>(path: &Path, sink: &mut NarSink<'_, W>) -> Result<()> {
    sink.token(b"nix-archive-1");
    dump_node(path, sink)
}

fn dump_node<W: Write>(path: &Path, sink: &mut NarSink<'_, W>) -> Result<()> {
    let md = std::fs::symlink_metadata(path).map_err(io_err("reading", path))?;
    let ft = md.file_type();
    sink.token(b"(");
    sink.token(b"type");
    if ft.is_file() {
        dump_file(path, sink)?;
    } else if ft.is_symlink() {
        let target = std::fs::read_link(path).map_err(io_err("reading link", path))?;
        sink.token(b"symlink");
        sink.token(b"target");
        sink.token(target.as_os_str().as_bytes());
    } else if ft.is_dir() {
        sink.token(b"directory");
        let mut names = Vec::new();
        for entry in std::fs::read_dir(path).map_err(io_err("listing", path))? {
            names.push(entry.map_err(io_err("listing", path))?.file_name());
        }
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        for name in names {
            sink.token(b"entry");
            sink.token(b"(");
            sink.token(b"name");
            sink.token(name.as_bytes());
            sink.token(b"node");
            dump_node(&path.join(&name), sink)?;
            sink.token(b")");
        }
    } else {
        return Err(Error::UnsupportedFileType {
            path: path.to_owned(),
        });
    }
    sink.token(b")");
    Ok(())
}

fn dump_file<W: Write>(path: &Path, sink: &mut NarSink<'_, W>) -> Result<()> {
    // O_NOFOLLOW: if the entry was swapped for a symlink since lstat, fail instead of reading
    // whatever it points to.
    let mut file: File = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(io_err("opening", path))?;
    let md = file.metadata().map_err(io_err("reading", path))?;
    if !md.file_type().is_file() {
        return Err(Error::UnsupportedFileType {
            path: path.to_owned(),
        });
    }
    sink.token(b"regular");
    if md.mode() & 0o100 != 0 {
        sink.token(b"executable");
        sink.token(b"");
    }
    sink.token(b"contents");
    let expected = md.len();
    sink.data(&expected.to_le_bytes());
    let mut buf = std::mem::take(&mut sink.read_buf);
    let fits = usize::try_from(expected.saturating_add(1))
        .unwrap_or(CHUNK)
        .clamp(4096, CHUNK);
    if buf.len() < fits {
        buf.resize(fits, 0);
    }
    let mut done: u64 = 0;
    let result = loop {
        let want = usize::try_from(expected - done)
            .unwrap_or(usize::MAX)
            .min(buf.len())
            .max(1); // when done == expected, probe one byte to detect growth
        let n = match file.read(&mut buf[..want]) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => break Err(io_err("reading", path)(e)),
        };
        if n == 0 || done + n as u64 > expected {
            break if done == expected && n == 0 {
                Ok(())
            } else {
                Err(Error::FileChanged {
                    path: path.to_owned(),
                    expected,
                    actual: done + n as u64,
                })
            };
        }
        sink.data(&buf[..n]);
        done += n as u64;
    };
    sink.read_buf = buf;
    result?;
    sink.pad(expected);
    Ok(())
}

/// Finds occurrences of candidate hash parts in a byte stream fed in pieces, exactly like Nix's
/// `RefScanSink`: a candidate matches wherever its 32 characters appear, and matches spanning
/// two pieces are found through a 32-byte tail of the previous piece.
pub(crate) struct RefScanner<'a> {
    candidates: &'a HashSet<[u8; HASH_PART_LEN]>,
    found: BTreeSet<[u8; HASH_PART_LEN]>,
    tail: Vec<u8>,
}

impl<'a> RefScanner<'a> {
    pub(crate) fn new(candidates: &'a HashSet<[u8; HASH_PART_LEN]>) -> Self {
        Self {
            candidates,
            found: BTreeSet::new(),
            tail: Vec::with_capacity(2 * HASH_PART_LEN),
        }
    }

    pub(crate) fn feed(&mut self, data: &[u8]) {
        let head = data.len().min(HASH_PART_LEN);
        let mut joined = std::mem::take(&mut self.tail);
        let old_tail_len = joined.len();
        joined.extend_from_slice(&data[..head]);
        self.search(&joined);
        self.search(data);
        // Keep the last HASH_PART_LEN bytes of (old tail + data).
        joined.truncate(old_tail_len);
        joined.extend_from_slice(&data[data.len() - head..]);
        let excess = joined.len().saturating_sub(HASH_PART_LEN);
        joined.drain(..excess);
        self.tail = joined;
    }

    fn search(&mut self, s: &[u8]) {
        let mut i = 0;
        'outer: while i + HASH_PART_LEN <= s.len() {
            // Check from the end so a non-base32 byte lets us skip past it.
            for j in (0..HASH_PART_LEN).rev() {
                if nix32_digit(s[i + j]).is_none() {
                    i += j + 1;
                    continue 'outer;
                }
            }
            let mut cand = [0u8; HASH_PART_LEN];
            cand.copy_from_slice(&s[i..i + HASH_PART_LEN]);
            if self.candidates.contains(&cand) {
                self.found.insert(cand);
            }
            i += 1;
        }
    }

    #[cfg(test)]
    pub(crate) fn found(&self) -> &BTreeSet<[u8; HASH_PART_LEN]> {
        &self.found
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const H1: &[u8; 32] = b"0123456789abcdfghijklmnpqrsvwxyz";
    const H2: &[u8; 32] = b"zyxwvsrqpnmlkjihgfdcba9876543210";

    #[test]
    fn scanner_finds_hashes_across_every_split() {
        let cands: HashSet<[u8; 32]> = [*H1, *H2].into_iter().collect();
        let mut text = b"junk/nix/store/".to_vec();
        text.extend_from_slice(H1);
        text.extend_from_slice(b"-foo\0\x01aaaa");
        // H2 embedded in a longer base32 run still matches (Nix matches any occurrence).
        text.extend_from_slice(b"00");
        text.extend_from_slice(H2);
        text.extend_from_slice(b"11 end");
        for split1 in 0..text.len() {
            for split2 in split1..text.len() {
                let mut s = RefScanner::new(&cands);
                s.feed(&text[..split1]);
                s.feed(&text[split1..split2]);
                s.feed(&text[split2..]);
                assert_eq!(s.found().len(), 2, "splits {split1} {split2}");
            }
        }
        // Byte by byte.
        let mut s = RefScanner::new(&cands);
        for b in &text {
            s.feed(std::slice::from_ref(b));
        }
        assert_eq!(s.found().len(), 2);
        // A near miss (one char differs) is not found.
        let mut near = *H1;
        near[31] = b'0';
        let mut s = RefScanner::new(&cands);
        s.feed(&near);
        assert!(s.found().is_empty());
    }

    #[test]
    fn tiny_nar_by_hand() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, b"abc").unwrap();
        let mut out = Vec::new();
        let size = nar_dump(&f, &mut out).unwrap();
        let mut want = Vec::new();
        for tok in [
            &b"nix-archive-1"[..],
            b"(",
            b"type",
            b"regular",
            b"contents",
            b"abc",
            b")",
        ] {
            want.extend_from_slice(&(tok.len() as u64).to_le_bytes());
            want.extend_from_slice(tok);
            want.resize(want.len().div_ceil(8) * 8, 0);
        }
        assert_eq!(out, want);
        assert_eq!(size, want.len() as u64);
        let (h, n) = nar_hash(&f).unwrap();
        assert_eq!(n, size);
        assert_eq!(h.0, <[u8; 32]>::from(Sha256::digest(&want)));
    }
}
