//! Files read because an input named them (a format file's `base`, closureInfo, `boot.json`,
//! `--add` sources): opened without blocking, refused unless they are regular files (or
//! directories where one is meant), read with a size bound that fits their kind, and refused
//! when what they hold does not match the size they report (`/proc` and `/sys` files say 0 or
//! 4096 whatever they hold).
//!
//! A FIFO, a device or a socket is refused from its `stat` before it is opened, and the open
//! itself is `O_NONBLOCK | O_NOCTTY` (a FIFO swapped in between the two does not block, a
//! terminal does not become ours), then checked again with `fstat` on the descriptor read.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// What an input file is (named in messages) and the most bytes a file of that kind may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InputKind {
    /// `format file`, `closureInfo registration`, ...
    pub what: &'static str,
    pub max_bytes: u64,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InputError {
    #[error("{op} {what} `{}`", path.display())]
    Io {
        op: &'static str,
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{what} `{}` is {found}, not a {expected}", path.display())]
    WrongType {
        what: &'static str,
        path: PathBuf,
        /// `a FIFO`, `a character device`, ...
        found: &'static str,
        /// `regular file` or `directory`.
        expected: &'static str,
    },
    #[error("{what} `{}` holds more than {max} bytes, the most a {what} may hold", path.display())]
    TooBig {
        what: &'static str,
        path: PathBuf,
        max: u64,
    },
    #[error(
        "{what} `{}` reports {reported} bytes but holds {}{found}: not an ordinary file (a /proc or \
         /sys file?) or one being changed; copy it to a regular file first",
        path.display(),
        if *found > *reported { "at least " } else { "" }
    )]
    SizeMismatch {
        what: &'static str,
        path: PathBuf,
        reported: u64,
        found: u64,
    },
}

pub type InputResult<T> = std::result::Result<T, InputError>;

/// `a FIFO`, `a directory`, ...: what a non-regular file is, for messages.
fn describe(t: std::fs::FileType) -> &'static str {
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_symlink() {
        "a symlink"
    } else if t.is_file() {
        "a regular file"
    } else {
        "a special file"
    }
}

/// `s` (text taken from an input) for an error message: control characters escaped (a
/// terminal sequence is shown, not run), at most `max_chars` characters, then `…`.
pub fn excerpt(s: &str, max_chars: usize) -> String {
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i == max_chars {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// An input file, open for reading, known to be a regular file.
#[derive(Debug)]
pub struct Input {
    file: File,
    path: PathBuf,
    kind: InputKind,
    size: u64,
}

/// Opens `path` (symlinks followed) as an input of `kind`: refused unless it is a regular
/// file, or when it reports more than `kind.max_bytes`; never blocks on a FIFO.
pub fn open_input(path: &Path, kind: InputKind) -> InputResult<Input> {
    open_checked(path, kind, Follow::Yes)
}

/// [`open_input`] of a path whose last component must not be a symlink: checked with
/// `lstat`, then opened `O_NOFOLLOW` (a symlink swapped in between fails the open), so the
/// descriptor read is the file that was checked.
pub fn open_input_no_follow(path: &Path, kind: InputKind) -> InputResult<Input> {
    open_checked(path, kind, Follow::No)
}

/// The whole of an input file of `kind` that is not a symlink, at most `kind.max_bytes`.
pub fn read_input_no_follow(path: &Path, kind: InputKind) -> InputResult<Vec<u8>> {
    open_input_no_follow(path, kind)?.read_all()
}

/// Whether [`open_regular`] follows a symlink at the path's end.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Follow {
    Yes,
    No,
}

/// Why [`open_regular`] refused a path.
pub(crate) enum OpenFail {
    /// `stat`, `open` or `fstat` failed; `op` is `reading` or `opening`.
    Io { op: &'static str, source: io::Error },
    /// Not a regular file: `a FIFO`, `a directory`, ...
    WrongType(&'static str),
}

/// Opens `path` for reading if it is a regular file: refused from its `stat` before the open
/// (opening a device or a FIFO can have effects of its own), opened `O_NONBLOCK | O_NOCTTY`
/// (and `O_NOFOLLOW` for [`Follow::No`]), then checked again on the descriptor, whose
/// metadata is returned: the path may have been replaced between the stat and the open.
pub(crate) fn open_regular(
    path: &Path,
    follow: Follow,
) -> Result<(File, std::fs::Metadata), OpenFail> {
    let io = |op| move |source| OpenFail::Io { op, source };
    let md = match follow {
        Follow::Yes => std::fs::metadata(path),
        Follow::No => std::fs::symlink_metadata(path),
    }
    .map_err(io("reading"))?;
    if !md.is_file() {
        return Err(OpenFail::WrongType(describe(md.file_type())));
    }
    let no_follow = match follow {
        Follow::Yes => 0,
        Follow::No => libc::O_NOFOLLOW,
    };
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC | no_follow)
        .open(path)
        .map_err(io("opening"))?;
    let md = file.metadata().map_err(io("reading"))?;
    if !md.is_file() {
        return Err(OpenFail::WrongType(describe(md.file_type())));
    }
    Ok((file, md))
}

fn open_checked(path: &Path, kind: InputKind, follow: Follow) -> InputResult<Input> {
    let (file, md) = open_regular(path, follow).map_err(|e| match e {
        OpenFail::Io { op, source } => InputError::Io {
            op,
            what: kind.what,
            path: path.to_path_buf(),
            source,
        },
        OpenFail::WrongType(found) => InputError::WrongType {
            what: kind.what,
            path: path.to_path_buf(),
            found,
            expected: "regular file",
        },
    })?;
    if md.len() > kind.max_bytes {
        return Err(InputError::TooBig {
            what: kind.what,
            path: path.to_path_buf(),
            max: kind.max_bytes,
        });
    }
    Ok(Input {
        file,
        path: path.to_path_buf(),
        kind,
        size: md.len(),
    })
}

/// The whole of an input file of `kind`, at most `kind.max_bytes`.
pub fn read_input(path: &Path, kind: InputKind) -> InputResult<Vec<u8>> {
    open_input(path, kind)?.read_all()
}

/// Refuses `path` unless it is a directory (symlinks followed); `what` names it in messages.
pub fn check_input_dir(path: &Path, what: &'static str) -> InputResult<()> {
    let md = std::fs::metadata(path).map_err(|source| InputError::Io {
        op: "reading",
        what,
        path: path.to_path_buf(),
        source,
    })?;
    if md.is_dir() {
        Ok(())
    } else {
        Err(InputError::WrongType {
            what,
            path: path.to_path_buf(),
            found: describe(md.file_type()),
            expected: "directory",
        })
    }
}

impl Input {
    pub fn file(&self) -> &File {
        &self.file
    }

    /// The size `fstat` reports.
    pub fn size(&self) -> u64 {
        self.size
    }

    fn io(&self, op: &'static str) -> impl FnOnce(io::Error) -> InputError + '_ {
        move |source| InputError::Io {
            op,
            what: self.kind.what,
            path: self.path.clone(),
            source,
        }
    }

    /// Refuses a file that holds more than its reported size (a `/proc` file reports 0):
    /// one byte is read at the reported end. For files read later by range (`--add`).
    pub fn check_size(&self) -> InputResult<()> {
        let mut b = [0u8; 1];
        let n = std::os::unix::fs::FileExt::read_at(&self.file, &mut b, self.size)
            .map_err(self.io("reading"))?;
        if n == 0 {
            return Ok(());
        }
        Err(InputError::SizeMismatch {
            what: self.kind.what,
            path: self.path.clone(),
            reported: self.size,
            found: self.size + 1,
        })
    }

    /// Reads the whole file: refused when it holds more than the bound or other than the
    /// size it reports.
    pub fn read_all(self) -> InputResult<Vec<u8>> {
        // The reported size is at most the bound (checked at open); one byte more tells a
        // file that grows or lies.
        let want = self.size.min(self.kind.max_bytes);
        let mut bytes = Vec::with_capacity(usize::try_from(want).unwrap_or(0));
        (&self.file)
            .take(self.kind.max_bytes.saturating_add(1))
            .read_to_end(&mut bytes)
            .map_err(self.io("reading"))?;
        let found = bytes.len() as u64;
        if found > self.kind.max_bytes {
            return Err(InputError::TooBig {
                what: self.kind.what,
                path: self.path,
                max: self.kind.max_bytes,
            });
        }
        if found != self.size {
            return Err(InputError::SizeMismatch {
                what: self.kind.what,
                path: self.path,
                reported: self.size,
                found,
            });
        }
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    const K: InputKind = InputKind {
        what: "test file",
        max_bytes: 100,
    };

    fn mkfifo(p: &Path) {
        let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    }

    #[test]
    fn no_follow_refuses_a_symlink_that_open_input_follows() {
        let d = tempfile::tempdir().unwrap();
        let real = d.path().join("real");
        std::fs::write(&real, b"text").unwrap();
        let link = d.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let kind = InputKind {
            what: "test file",
            max_bytes: 1 << 10,
        };
        assert_eq!(read_input(&link, kind).unwrap(), b"text");
        assert_eq!(read_input_no_follow(&real, kind).unwrap(), b"text");
        let e = read_input_no_follow(&link, kind).unwrap_err();
        assert!(
            matches!(
                e,
                InputError::WrongType {
                    found: "a symlink",
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn excerpts_are_short_and_escaped() {
        assert_eq!(excerpt("abc", 3), "abc");
        assert_eq!(excerpt("abcd", 3), "abc…");
        assert_eq!(excerpt("a\u{1b}[2J\0", 10), "a\\u{1b}[2J\\u{0}");
        assert_eq!(excerpt("ééé", 2), "éé…");
    }

    #[test]
    fn regular_files_read_within_the_bound() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        std::fs::write(&p, b"hello").unwrap();
        assert_eq!(read_input(&p, K).unwrap(), b"hello");
        std::fs::write(&p, vec![b'a'; 100]).unwrap();
        assert_eq!(read_input(&p, K).unwrap().len(), 100);
        std::fs::write(&p, vec![b'a'; 101]).unwrap();
        let e = read_input(&p, K).unwrap_err();
        assert!(matches!(e, InputError::TooBig { max: 100, .. }), "{e}");
        assert!(e.to_string().contains("more than 100 bytes"), "{e}");
        // A symlink to a regular file is followed.
        std::fs::write(&p, b"x").unwrap();
        let l = d.path().join("l");
        std::os::unix::fs::symlink(&p, &l).unwrap();
        assert_eq!(read_input(&l, K).unwrap(), b"x");
    }

    #[test]
    fn special_files_are_refused_at_once() {
        let d = tempfile::tempdir().unwrap();
        let fifo = d.path().join("fifo");
        mkfifo(&fifo);
        let link = d.path().join("to-fifo");
        std::os::unix::fs::symlink(&fifo, &link).unwrap();
        let zero_link = d.path().join("to-zero");
        std::os::unix::fs::symlink("/dev/zero", &zero_link).unwrap();
        let t = Instant::now();
        for (p, found) in [
            (fifo.as_path(), "a FIFO"),
            (link.as_path(), "a FIFO"),
            (Path::new("/dev/zero"), "a character device"),
            (zero_link.as_path(), "a character device"),
            (d.path(), "a directory"),
        ] {
            let e = read_input(p, K).unwrap_err();
            match &e {
                InputError::WrongType { found: f, .. } => assert_eq!(*f, found, "{e}"),
                _ => panic!("{}: {e}", p.display()),
            }
            assert!(e.to_string().contains("not a regular file"), "{e}");
        }
        assert!(t.elapsed() < Duration::from_secs(2));
        let e = read_input(&d.path().join("missing"), K).unwrap_err();
        assert!(
            matches!(&e, InputError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound)
        );
        check_input_dir(d.path(), "dir").unwrap();
        let e = check_input_dir(&fifo, "firmware directory").unwrap_err();
        assert!(e.to_string().contains("is a FIFO, not a directory"), "{e}");
    }

    /// `/proc` files report size 0 and hold content: refused, not read as empty.
    #[test]
    fn proc_files_are_refused() {
        let p = Path::new("/proc/self/environ");
        let big = InputKind {
            what: "test file",
            max_bytes: 1 << 30,
        };
        let e = read_input(p, big).unwrap_err();
        assert!(
            matches!(e, InputError::SizeMismatch { reported: 0, .. }),
            "{e}"
        );
        assert!(e.to_string().contains("/proc"), "{e}");
        let i = open_input(Path::new("/proc/self/status"), big).unwrap();
        assert!(i.check_size().is_err());
        // An honest empty file passes.
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("empty");
        std::fs::write(&f, b"").unwrap();
        open_input(&f, K).unwrap().check_size().unwrap();
        assert!(read_input(&f, K).unwrap().is_empty());
    }
}
