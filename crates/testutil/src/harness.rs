//! Corruption harness shared by the inspect fuzz test (`crates/inspect/tests/it/fuzz.rs`,
//! proptest) and the e2e test of imgbuild's own images (`tests/e2e/inspect.rs`).
//!
//! A base image is opened once with read tracing to find the byte ranges the readers
//! actually use (partition tables, superblocks, group descriptors, inode tables, directory
//! blocks, FAT tables and directory entries, boot configs, the Nix database). A case
//! overwrites bytes in those ranges in place, runs everything a user can ask for (open,
//! inspect, list every directory, read every file) in a thread with a deadline, counts
//! panics (caught or not, through the panic hook), and restores the bytes.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Once;
use std::time::{Duration, Instant};

use crate::crc32;
use imgbuild_inspect::{Image, Kind, OpenOptions as InspectOptions};

/// One corruption.
#[derive(Clone, Debug)]
pub enum Mutation {
    /// Flip bit `bit` of the byte at `at`.
    Flip {
        /// Byte offset in the image.
        at: u64,
        /// Bit number, 0 (least significant) to 7.
        bit: u8,
    },
    /// Write these bytes at `at`.
    Write {
        /// Byte offset in the image.
        at: u64,
        /// The bytes written there.
        bytes: Vec<u8>,
    },
    /// Copy `len` bytes from `from` to `at` (duplicates entries, pointers, headers).
    Copy {
        /// Where the copied bytes are taken from.
        from: u64,
        /// Where they are written.
        at: u64,
        /// How many.
        len: u64,
    },
}

/// Numbers that make readers take unusual paths.
pub const INTERESTING: &[u64] = &[
    0,
    1,
    2,
    0x7f,
    0x80,
    0xff,
    0x100,
    0x7fff,
    0x8000,
    0xffff,
    0x1_0000,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_fff0,
    0xffff_ffff,
    0x1_0000_0000,
    u64::MAX / 2,
    u64::MAX,
];

/// A base image and the ranges its readers read.
pub struct Base {
    /// What the image is, in failure messages (`ext4`, `gpt+fat`, ...).
    pub name: String,
    /// The image file.
    pub path: PathBuf,
    /// Its size in bytes.
    pub size: u64,
    /// The byte ranges `(offset, len)` its readers read: where mutations are aimed.
    pub ranges: Vec<(u64, u64)>,
}

impl Base {
    /// Traces an open + inspect + full listing of `path`; adds the first 64 KiB and the last
    /// 17 KiB of the disk (tables) even if untouched.
    pub fn new(name: &str, path: &Path) -> Self {
        let opts = InspectOptions {
            trace_reads: true,
            ..InspectOptions::default()
        };
        let img = Image::open_with(path, &opts).expect("the base image opens");
        let _ = img.inspect();
        let numbers: Vec<u32> = img.partitions().map(|p| p.entry.number).collect();
        for n in numbers {
            if let Ok(fs) = img.filesystem(&n.to_string()) {
                let _ = fs.walk(b"/", |_, _, _| Ok(true));
            }
        }
        let size = img.disk_size();
        let mut ranges = img.traced_reads();
        ranges.push((0, 65536.min(size)));
        ranges.push((size.saturating_sub(17 * 1024), size));
        ranges.retain(|(s, e)| e > s);
        ranges.sort_unstable();
        ranges.dedup();
        Self {
            name: name.to_string(),
            path: path.to_path_buf(),
            size,
            ranges,
        }
    }

    /// Bytes covered by the ranges (overlaps counted once).
    pub fn covered(&self) -> u64 {
        let mut total = 0;
        let mut end = 0;
        for &(s, e) in &self.ranges {
            let s = s.max(end);
            if e > s {
                total += e - s;
                end = e;
            }
        }
        total
    }

    /// A position inside the ranges: `range` and `frac` are arbitrary numbers mapped onto
    /// them (a range picked uniformly, then an offset in it).
    pub fn pick(&self, range: u64, frac: u64) -> u64 {
        let (s, e) = self.ranges[(range % self.ranges.len() as u64) as usize];
        s + frac % (e - s).max(1)
    }
}

/// One line per mutation, `write OFFSET HEX` (copies resolved to the bytes they copy are
/// not known here: `copy FROM TO LEN`, flips `flip OFFSET BIT`); `apply-mutations.py` in
/// the crash directory's notes replays them on the saved base image.
pub fn describe(muts: &[Mutation]) -> String {
    let mut out = String::new();
    for m in muts {
        match m {
            Mutation::Flip { at, bit } => out += &format!("flip {at} {bit}\n"),
            Mutation::Write { at, bytes } => {
                let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
                out += &format!("write {at} {hex}\n");
            }
            Mutation::Copy { from, at, len } => out += &format!("copy {from} {at} {len}\n"),
        }
    }
    out
}

/// Applies mutations in place; the returned guard puts the original bytes back.
pub fn apply(path: &Path, size: u64, muts: &[Mutation]) -> Restore {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .expect("the working copy opens read-write");
    let mut saved = Vec::new();
    for m in muts {
        let (at, new): (u64, Vec<u8>) = match m {
            Mutation::Flip { at, bit } => {
                let mut b = [0u8];
                f.read_exact_at(&mut b, *at).expect("read inside the image");
                (*at, vec![b[0] ^ (1 << (bit % 8))])
            }
            Mutation::Write { at, bytes } => (*at, bytes.clone()),
            Mutation::Copy { from, at, len } => {
                let len = (*len).min(size - from).min(size - at) as usize;
                let mut b = vec![0u8; len];
                f.read_exact_at(&mut b, *from)
                    .expect("read inside the image");
                (*at, b)
            }
        };
        let len = (new.len() as u64).min(size - at) as usize;
        let mut old = vec![0u8; len];
        f.read_exact_at(&mut old, at)
            .expect("read inside the image");
        f.write_all_at(&new[..len], at)
            .expect("write inside the image");
        saved.push((at, old));
    }
    Restore { file: f, saved }
}

/// Recomputes the CRCs of both GPT headers and their entry arrays (when their sizes are
/// plausible), so corrupted headers and entries get past the CRC checks to the deeper ones.
/// Returns the mutations that do it (to be applied after the others, and restored with them).
pub fn gpt_crc_fixups(path: &Path, size: u64) -> Vec<Mutation> {
    let f = File::open(path).expect("the working copy opens");
    let mut out = Vec::new();
    for lba in [1, size / 512 - 1] {
        let mut h = [0u8; 512];
        if size < 3 * 512 || f.read_exact_at(&mut h, lba * 512).is_err() || &h[..8] != b"EFI PART" {
            continue;
        }
        let le32 = |h: &[u8], o: usize| u32::from_le_bytes([h[o], h[o + 1], h[o + 2], h[o + 3]]);
        let start = u64::from_le_bytes(h[72..80].try_into().expect("8 bytes"));
        let (n, esize) = (u64::from(le32(&h, 80)), u64::from(le32(&h, 84)));
        let hsize = (le32(&h, 12) as usize).clamp(92, 512);
        if n > 0
            && n <= 4096
            && esize == 128
            && start.checked_mul(512).is_some_and(|s| s + n * 128 <= size)
        {
            let mut array = vec![0u8; (n * 128) as usize];
            if f.read_exact_at(&mut array, start * 512).is_ok() {
                h[88..92].copy_from_slice(&crc32(&array).to_le_bytes());
            }
        }
        h[16..20].fill(0);
        let crc = crc32(&h[..hsize]);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
        out.push(Mutation::Write {
            at: lba * 512 + 16,
            bytes: h[16..20].to_vec(),
        });
        out.push(Mutation::Write {
            at: lba * 512 + 88,
            bytes: h[88..92].to_vec(),
        });
    }
    out
}

/// Restores the bytes a mutation overwrote (in reverse order) when dropped.
pub struct Restore {
    file: File,
    saved: Vec<(u64, Vec<u8>)>,
}

impl Drop for Restore {
    fn drop(&mut self) {
        for (at, old) in self.saved.iter().rev() {
            self.file
                .write_all_at(old, *at)
                .expect("restoring the working copy");
        }
    }
}

static HOOK: Once = Once::new();

thread_local! {
    /// Panics on this thread (the hook runs on the panicking thread), and the last message.
    static PANICS: std::cell::RefCell<(usize, String)> = const { std::cell::RefCell::new((0, String::new())) };
    /// Largest allocation request on this thread, when a counting allocator reports them.
    static LARGEST: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Bytes allocated and not yet freed in this process, and the most there were since
/// [`reset_peak`] (when a counting allocator reports allocations and frees).
static LIVE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
static PEAK: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Starts a new peak of live bytes; returns the bytes live now (the base of the peak).
pub fn reset_peak() -> usize {
    let live = LIVE.load(std::sync::atomic::Ordering::Relaxed);
    PEAK.store(live, std::sync::atomic::Ordering::Relaxed);
    live
}

/// The most bytes live at once since [`reset_peak`].
pub fn peak() -> usize {
    PEAK.load(std::sync::atomic::Ordering::Relaxed)
}

/// Called by a counting global allocator for every free (and the old block of a realloc).
pub fn note_free(size: usize) {
    LIVE.fetch_sub(size, std::sync::atomic::Ordering::Relaxed);
}

/// Largest allocation request on this thread since [`reset_largest_allocation`].
pub fn largest_allocation() -> usize {
    LARGEST.with(|l| l.get())
}

/// Starts a new measure of [`largest_allocation`] on this thread (before a case).
pub fn reset_largest_allocation() {
    LARGEST.with(|l| l.set(0));
}

/// Called by a counting global allocator (the inspect test binary has one) for every
/// request; `Outcome::largest_allocation` is then the largest request of a case. Must not
/// allocate: a const-initialised `Cell` in thread-local storage, no destructor.
pub fn note_allocation(size: usize) {
    let live = LIVE.fetch_add(size, std::sync::atomic::Ordering::Relaxed) + size;
    PEAK.fetch_max(live, std::sync::atomic::Ordering::Relaxed);
    let _ = LARGEST.try_with(|l| {
        if size > l.get() {
            l.set(size);
        }
    });
}

/// Counts every panic from now on, per thread (caught by the library's guard or not).
pub fn install_panic_counter() {
    HOOK.call_once(|| {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.with(|p| {
                let mut p = p.borrow_mut();
                p.0 += 1;
                p.1 = info.to_string();
            });
            prev(info);
        }));
    });
}

/// Panics so far on this thread, and the last message.
pub fn panics_here() -> (usize, String) {
    PANICS.with(|p| p.borrow().clone())
}

/// What one case did.
#[derive(Debug, Default, Clone)]
pub struct Outcome {
    /// Whether the image opened.
    pub opened: bool,
    /// Why it did not: the error with its causes (`outer: inner`).
    pub open_error: Option<String>,
    /// Files listed.
    pub files: u64,
    /// Bytes of file content read.
    pub bytes: u64,
    /// Errors the reads reported (a refusal is an error, not a failure of the case).
    pub errors: usize,
    /// How long the case took.
    pub elapsed: Duration,
    /// Largest single allocation the case asked for (0 without a counting allocator).
    pub largest_allocation: usize,
}

/// Opens, inspects, lists and reads everything; `Err` when a panic happened or the
/// deadline passed.
pub fn exercise(path: &Path, deadline: Duration) -> Result<Outcome, String> {
    install_panic_counter();
    let p = path.to_path_buf();
    let (tx, rx) = std::sync::mpsc::channel();
    let t0 = Instant::now();
    // A fresh thread: its panic count starts at zero.
    std::thread::spawn(move || {
        let r = std::panic::catch_unwind(|| run_all(&p));
        let r = r.ok().map(|mut o| {
            o.largest_allocation = LARGEST.with(|l| l.get());
            o
        });
        let _ = tx.send((r, panics_here()));
    });
    let r = rx.recv_timeout(deadline);
    let elapsed = t0.elapsed();
    let mut out = match r {
        Err(_) => return Err(format!("no result after {deadline:?}: a hang")),
        Ok((None, (_, msg))) => return Err(format!("panic escaped: {msg}")),
        Ok((Some(_), (n, msg))) if n > 0 => {
            return Err(format!("{n} panic(s) inside readers (caught): {msg}"))
        }
        Ok((Some(o), _)) => o,
    };
    out.elapsed = elapsed;
    Ok(out)
}

fn run_all(path: &Path) -> Outcome {
    let mut o = Outcome::default();
    let img = match Image::open(path) {
        Ok(i) => i,
        Err(e) => {
            o.open_error = Some(crate::error_chain(&e));
            return o;
        }
    };
    o.opened = true;
    let report = img.inspect();
    // Everything the CLI prints must serialise.
    let _ = format!("{report:?}");
    // `ls` of each partition root, then everything read.
    let numbers: Vec<u32> = img.partitions().map(|p| p.entry.number).collect();
    for n in &numbers {
        if let Ok(fs) = img.filesystem(&n.to_string()) {
            match fs.read_dir(b"/") {
                Ok(es) => {
                    for e in es.iter().filter(|e| e.kind == Kind::Symlink) {
                        let _ = fs.read_link(&[b"/", &e.name[..]].concat());
                    }
                }
                Err(_) => o.errors += 1,
            }
        }
    }
    let _ = img
        .root_filesystem()
        .map(|fs| fs.canonicalize(b"/nix/var/nix/profiles/system"));
    // What fills the image (our own ext4 inode walk), and the image against itself.
    if img.sizes().is_err() {
        o.errors += 1;
    }
    let _ = imgbuild_inspect::diff(&img, &img);
    for r in img.read_all() {
        o.files += r.files;
        o.bytes += r.bytes;
        o.errors += r.errors.len();
    }
    o
}

/// Writes the current (mutated) image, zstd-compressed, for a regression test.
pub fn save_crash(path: &Path, dir: &Path, name: &str) -> PathBuf {
    std::fs::create_dir_all(dir).expect("crash directory");
    let out = dir.join(format!("{name}.img.zst"));
    let st = std::process::Command::new("zstd")
        .args(["-19", "-q", "-f"])
        .arg(path)
        .arg("-o")
        .arg(&out)
        .status()
        .expect("running zstd");
    assert!(st.success(), "zstd failed");
    out
}

/// A small deterministic generator (xorshift64*), for callers without proptest.
pub struct Rng(pub u64);

impl Rng {
    /// The next number (xorshift64*; a zero state stays zero: seed with a non-zero value).
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Random mutations inside `base`'s ranges.
    pub fn mutations(&mut self, base: &Base) -> Vec<Mutation> {
        let n = 1 + self.next_u64() % 8;
        (0..n)
            .map(|_| {
                let at = base.pick(self.next_u64(), self.next_u64());
                match self.next_u64() % 4 {
                    0 => Mutation::Flip {
                        at,
                        bit: (self.next_u64() % 8) as u8,
                    },
                    1 => Mutation::Write {
                        at,
                        bytes: vec![self.next_u64() as u8],
                    },
                    2 => {
                        let v = INTERESTING[(self.next_u64() % INTERESTING.len() as u64) as usize];
                        let w = [1usize, 2, 4, 8][(self.next_u64() % 4) as usize];
                        Mutation::Write {
                            at,
                            bytes: v.to_le_bytes()[..w].to_vec(),
                        }
                    }
                    _ => Mutation::Copy {
                        from: base.pick(self.next_u64(), self.next_u64()),
                        at,
                        len: 1 + self.next_u64() % 64,
                    },
                }
            })
            .collect()
    }
}
