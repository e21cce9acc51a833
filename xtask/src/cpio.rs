//! A minimal, reproducible writer for the Linux initramfs format ("newc" cpio, magic 070701).
//! Inode numbers are sequential, owners 0:0 and mtimes fixed, so the same entries always give
//! the same bytes (GNU cpio needs `--reproducible` for that).

use std::collections::BTreeSet;

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;

pub struct Cpio {
    buf: Vec<u8>,
    next_ino: u32,
    mtime: u32,
    names: BTreeSet<String>,
}

impl Cpio {
    pub fn new(mtime: u32) -> Self {
        Cpio {
            buf: Vec::new(),
            next_ino: 1,
            mtime,
            names: BTreeSet::new(),
        }
    }

    pub fn dir(&mut self, name: &str, perm: u32) {
        self.entry(name, S_IFDIR | perm, 2, (0, 0), b"");
    }

    pub fn file(&mut self, name: &str, perm: u32, data: &[u8]) {
        self.entry(name, S_IFREG | perm, 1, (0, 0), data);
    }

    pub fn symlink(&mut self, name: &str, target: &str) {
        self.entry(name, S_IFLNK | 0o777, 1, (0, 0), target.as_bytes());
    }

    pub fn chardev(&mut self, name: &str, perm: u32, major: u32, minor: u32) {
        self.entry(name, S_IFCHR | perm, 1, (major, minor), b"");
    }

    /// Adds `name` and creates missing parent directories (0755) first.
    fn entry(&mut self, name: &str, mode: u32, nlink: u32, rdev: (u32, u32), data: &[u8]) {
        let name = name.trim_start_matches('/');
        let mut parent = String::new();
        let parts: Vec<&str> = name.split('/').collect();
        for p in &parts[..parts.len() - 1] {
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(p);
            if !self.names.contains(&parent) {
                let dir = parent.clone();
                self.raw(&dir, S_IFDIR | 0o755, 2, (0, 0), b"");
            }
        }
        assert!(
            !self.names.contains(name),
            "duplicate cpio entry {name}: callers add each path once"
        );
        self.raw(name, mode, nlink, rdev, data);
    }

    fn raw(&mut self, name: &str, mode: u32, nlink: u32, rdev: (u32, u32), data: &[u8]) {
        self.names.insert(name.to_string());
        let ino = self.next_ino;
        self.next_ino += 1;
        let h = Header {
            ino,
            mode,
            nlink,
            mtime: self.mtime,
            size: data.len(),
            rdev,
        };
        self.header(name, &h);
        self.buf.extend_from_slice(data);
        self.pad4();
    }

    fn header(&mut self, name: &str, h: &Header) {
        let Header {
            ino,
            mode,
            nlink,
            mtime,
            size,
            rdev,
        } = *h;
        let size = u32::try_from(size).expect("initrd members are far below 4 GiB");
        let namesize = u32::try_from(name.len() + 1).expect("short names");
        let fields = [
            ino, mode, 0, 0, nlink, mtime, size, 0, 0, rdev.0, rdev.1, namesize, 0,
        ];
        self.buf.extend_from_slice(b"070701");
        for f in fields {
            self.buf.extend_from_slice(format!("{f:08X}").as_bytes());
        }
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.push(0);
        self.pad4();
    }

    fn pad4(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }

    pub fn finish(mut self) -> Vec<u8> {
        let end = Header {
            ino: 0,
            mode: 0,
            nlink: 1,
            mtime: 0,
            size: 0,
            rdev: (0, 0),
        };
        self.header("TRAILER!!!", &end);
        // pad to 512 like GNU cpio does
        while !self.buf.len().is_multiple_of(512) {
            self.buf.push(0);
        }
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::process::{Command, Stdio};

    #[test]
    fn gnu_cpio_reads_what_we_write() {
        let mut c = Cpio::new(1);
        c.file("bin/busybox", 0o755, b"hello");
        c.symlink("bin/sh", "busybox");
        c.dir("proc", 0o755);
        c.chardev("dev/console", 0o600, 5, 1);
        let bytes = c.finish();
        let mut child = Command::new("cpio")
            .args(["-t", "-v", "--quiet"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("GNU cpio is installed (apt-get install cpio)");
        child
            .stdin
            .take()
            .expect("piped")
            .write_all(&bytes)
            .expect("write");
        let out = child.wait_with_output().expect("cpio runs");
        assert!(out.status.success());
        let listing = String::from_utf8_lossy(&out.stdout);
        let lines: Vec<&str> = listing.lines().collect();
        assert_eq!(lines.len(), 6, "{listing}");
        assert!(lines[0].starts_with("drwxr-xr-x") && lines[0].ends_with(" bin"));
        assert!(
            lines[1].starts_with("-rwxr-xr-x")
                && lines[1].contains(" 5 ")
                && lines[1].ends_with("bin/busybox")
        );
        assert!(lines[2].ends_with("bin/sh -> busybox"));
        assert!(lines[5].starts_with("crw-------") && lines[5].contains("5,"));
        // same input, same bytes
        let mut c2 = Cpio::new(1);
        c2.file("bin/busybox", 0o755, b"hello");
        c2.symlink("bin/sh", "busybox");
        c2.dir("proc", 0o755);
        c2.chardev("dev/console", 0o600, 5, 1);
        assert_eq!(c2.finish(), bytes);
    }
}

/// The fields of a `newc` member header besides its name.
#[derive(Clone, Copy)]
struct Header {
    ino: u32,
    mode: u32,
    nlink: u32,
    mtime: u32,
    size: usize,
    rdev: (u32, u32),
}
