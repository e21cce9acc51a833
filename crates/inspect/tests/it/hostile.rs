//! Hand-made hostile images: each must give its own clear error (or warning), never a panic,
//! a hang or a huge allocation.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use imgbuild_inspect::{Error, Image, Kind, Limits, OpenOptions as InspectOptions};

use crate::common::{self, run};
use crate::harness;

fn write_at(path: &Path, at: u64, bytes: &[u8]) {
    let f = OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(bytes, at).unwrap();
}

fn read_at(path: &Path, at: u64, len: usize) -> Vec<u8> {
    let f = std::fs::File::open(path).unwrap();
    let mut b = vec![0u8; len];
    f.read_exact_at(&mut b, at).unwrap();
    b
}

fn efi(dir: &Path) -> PathBuf {
    common::classic("efi", &dir.join("efi.img"), None)
}

/// Edits both GPT headers with `f` (on the 92-byte header) and fixes their CRCs.
fn edit_gpt_headers(img: &Path, f: impl Fn(&mut [u8])) {
    let size = std::fs::metadata(img).unwrap().len();
    for lba in [1, size / 512 - 1] {
        let mut h = read_at(img, lba * 512, 92);
        f(&mut h);
        h[16..20].fill(0);
        let crc = crc32fast::hash(&h);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
        write_at(img, lba * 512, &h);
    }
}

/// Edits the primary and backup GPT entry arrays (entry `i`, 128 bytes) and fixes the CRCs.
fn edit_gpt_entry(img: &Path, i: u64, f: impl Fn(&mut [u8])) {
    let size = std::fs::metadata(img).unwrap().len();
    for lba in [1, size / 512 - 1] {
        let h = read_at(img, lba * 512, 92);
        let start = u64::from_le_bytes(h[72..80].try_into().unwrap());
        let n = u32::from_le_bytes(h[80..84].try_into().unwrap()) as usize;
        let mut e = read_at(img, start * 512 + i * 128, 128);
        f(&mut e);
        write_at(img, start * 512 + i * 128, &e);
        let array = read_at(img, start * 512, n * 128);
        let crc = crc32fast::hash(&array);
        let mut h = h;
        h[88..92].copy_from_slice(&crc.to_le_bytes());
        h[16..20].fill(0);
        let hc = crc32fast::hash(&h);
        h[16..20].copy_from_slice(&hc.to_le_bytes());
        write_at(img, lba * 512, &h);
    }
}

#[test]
fn gpt_with_huge_entry_count_is_refused_without_allocating() {
    let t = tempfile::tempdir().unwrap();
    let img = efi(t.path());
    edit_gpt_headers(&img, |h| {
        h[80..84].copy_from_slice(&0x1000_0000u32.to_le_bytes())
    });
    harness::reset_largest_allocation();
    let e = Image::open(&img).unwrap_err();
    let largest = harness::largest_allocation();
    assert!(
        matches!(&e, Error::Corrupt { reason, .. } if reason.contains("268435456 partition entries")),
        "{e}"
    );
    assert!(largest > 0, "the counting allocator reports");
    assert!(largest <= 1 << 20, "{largest}");
}

#[test]
fn gpt_with_odd_entry_size_is_unsupported_not_a_panic() {
    // The gpt crate asserts the entry size is 128.
    let t = tempfile::tempdir().unwrap();
    let img = efi(t.path());
    edit_gpt_headers(&img, |h| h[84..88].copy_from_slice(&256u32.to_le_bytes()));
    let e = Image::open(&img).unwrap_err();
    assert!(
        matches!(&e, Error::Unsupported { what, .. } if what.contains("256 bytes")),
        "{e}"
    );
}

#[test]
fn gpt_partition_past_the_end_and_overlaps_are_warnings() {
    let t = tempfile::tempdir().unwrap();
    let img = efi(t.path());
    // Partition 2 ends far past the disk; partition 1 grows into partition 2.
    edit_gpt_entry(&img, 1, |e| {
        e[40..48].copy_from_slice(&10_000_000u64.to_le_bytes())
    });
    edit_gpt_entry(&img, 0, |e| {
        e[40..48].copy_from_slice(&100_000u64.to_le_bytes())
    });
    let i = Image::open(&img).unwrap();
    let w = i.warnings().join("\n");
    assert!(
        w.contains("partition 2: ends at LBA 10000000, past the end"),
        "{w}"
    );
    assert!(w.contains("overlap"), "{w}");
    let p2 = i.partitions().find(|p| p.entry.number == 2).unwrap();
    assert!(!p2.readable);
    let e = i.filesystem("2").unwrap_err();
    assert!(e.to_string().contains("not inside the image"), "{e}");
    // Partition 1 (grown) still reads: its FAT is inside it.
    assert!(i
        .filesystem("ESP")
        .unwrap()
        .exists(b"/loader/loader.conf")
        .unwrap());
}

#[test]
fn truncated_image_loses_the_backup_gpt_and_the_last_partition() {
    let t = tempfile::tempdir().unwrap();
    let img = efi(t.path());
    let size = std::fs::metadata(&img).unwrap().len();
    OpenOptions::new()
        .write(true)
        .open(&img)
        .unwrap()
        .set_len(size - (4 << 20))
        .unwrap();
    let i = Image::open(&img).unwrap();
    assert_eq!(i.table().backup_ok, Some(false));
    let w = i.warnings().join("\n");
    assert!(w.contains("no valid backup GPT header"), "{w}");
    assert!(w.contains("partition 2: ends at LBA"), "{w}");
    let r = i.inspect();
    assert_eq!(r.boot.systemd_boot.len(), 1, "the ESP is still read");
}

/// An MBR image (the classic sd image) with `f` applied to its first sector.
fn sd_with(dir: &Path, f: impl Fn(&mut [u8])) -> PathBuf {
    let img = common::classic("sd", &dir.join("sd.img"), None);
    let mut s = read_at(&img, 0, 512);
    f(&mut s);
    write_at(&img, 0, &s);
    img
}

#[test]
fn mbr_ebr_chain_that_loops_back_is_refused() {
    let t = tempfile::tempdir().unwrap();
    // Entry 3: an extended partition at LBA 200000 (inside the 70 MiB image).
    let img = sd_with(t.path(), |s| {
        let e = &mut s[446 + 32..446 + 48];
        e[4] = 0x05;
        e[8..12].copy_from_slice(&140_000u32.to_le_bytes());
        e[12..16].copy_from_slice(&2_000u32.to_le_bytes());
    });
    // EBR 1 at 140000: a logical partition, next EBR at relative 100; EBR 2 points back to 0+50.
    let mut ebr = vec![0u8; 512];
    ebr[510] = 0x55;
    ebr[511] = 0xaa;
    let mut e1 = ebr.clone();
    e1[446 + 4] = 0x83;
    e1[446 + 8..446 + 12].copy_from_slice(&1u32.to_le_bytes());
    e1[446 + 12..446 + 16].copy_from_slice(&10u32.to_le_bytes());
    e1[462 + 4] = 0x05;
    e1[462 + 8..462 + 12].copy_from_slice(&100u32.to_le_bytes());
    e1[462 + 12..462 + 16].copy_from_slice(&10u32.to_le_bytes());
    write_at(&img, 140_000 * 512, &e1);
    let mut e2 = ebr;
    e2[462 + 4] = 0x05;
    e2[462 + 8..462 + 12].copy_from_slice(&50u32.to_le_bytes());
    write_at(&img, 140_100 * 512, &e2);
    let e = Image::open(&img).unwrap_err();
    assert!(e.to_string().contains("does not move forward"), "{e}");
}

#[test]
fn mbr_entry_at_lba_zero_is_refused() {
    // mbrman's alignment search panics on an entry starting at LBA 0.
    let t = tempfile::tempdir().unwrap();
    let img = sd_with(t.path(), |s| s[446 + 8..446 + 12].fill(0));
    let e = Image::open(&img).unwrap_err();
    assert!(e.to_string().contains("starts at LBA 0"), "{e}");
}

#[test]
fn ext4_bigger_than_its_partition_reports_facts_and_refuses_reading() {
    let t = tempfile::tempdir().unwrap();
    let img = common::classic("sd", &t.path().join("sd.img"), None);
    // s_blocks_count_lo of the root fs (partition 2 at 38 MiB, superblock at +1024).
    write_at(&img, (38 << 20) + 1024 + 4, &0x7fff_ffffu32.to_le_bytes());
    let i = Image::open(&img).unwrap();
    let r = i.inspect();
    let fs = r.partitions[1].filesystem.as_ref().unwrap();
    assert_eq!(fs.summary.label.as_deref(), Some("NIXOS_SD"));
    assert!(
        fs.error
            .as_deref()
            .unwrap()
            .contains("larger than its partition"),
        "{fs:?}"
    );
    assert!(r.nixos.is_none());
}

/// A bare FAT16 image with `f` applied to it, and the layout numbers of `fsck.fat -v`.
fn fat16(dir: &Path) -> PathBuf {
    common::bare_fat(dir, 8192, Some(16), Some(2))
}

/// (offset of the first FAT, offset of the data area, cluster size) of a bare FAT image.
fn fat_layout(img: &Path) -> (u64, u64, u64) {
    let b = read_at(img, 0, 512);
    let bps = u64::from(u16::from_le_bytes([b[11], b[12]]));
    let spc = u64::from(b[13]);
    let reserved = u64::from(u16::from_le_bytes([b[14], b[15]]));
    let fats = u64::from(b[16]);
    let root_entries = u64::from(u16::from_le_bytes([b[17], b[18]]));
    let spf = u64::from(u16::from_le_bytes([b[22], b[23]]));
    let fat = reserved * bps;
    let data = (reserved + fats * spf) * bps + root_entries * 32;
    (fat, data, bps * spc)
}

/// Byte offset of the root directory entry named `short` (11 bytes, space padded) in a FAT16.
fn root_entry(img: &Path, short: &[u8; 11]) -> u64 {
    let b = read_at(img, 0, 512);
    let bps = u64::from(u16::from_le_bytes([b[11], b[12]]));
    let reserved = u64::from(u16::from_le_bytes([b[14], b[15]]));
    let fats = u64::from(b[16]);
    let spf = u64::from(u16::from_le_bytes([b[22], b[23]]));
    let root = (reserved + fats * spf) * bps;
    let dir = read_at(img, root, 512 * 32);
    let i = dir
        .chunks(32)
        .position(|e| &e[..11] == short)
        .unwrap_or_else(|| {
            panic!(
                "{:?} not in the root directory",
                String::from_utf8_lossy(short)
            )
        });
    root + i as u64 * 32
}

#[test]
fn fat_directory_whose_cluster_chain_loops_is_an_error() {
    let t = tempfile::tempdir().unwrap();
    let img = fat16(t.path());
    let (fat, _, _) = fat_layout(&img);
    let e = root_entry(&img, b"DEEP       ");
    let first = u16::from_le_bytes(read_at(&img, e + 26, 2).try_into().unwrap());
    // The directory's first cluster points to itself.
    write_at(&img, fat + u64::from(first) * 2, &first.to_le_bytes());
    let i = Image::open(&img).unwrap();
    let fs = i.filesystem("0").unwrap();
    let t0 = Instant::now();
    let err = fs.read_dir(b"/Deep").unwrap_err();
    assert!(err.to_string().contains("loops"), "{err}");
    assert!(t0.elapsed() < Duration::from_secs(5));
}

#[test]
fn fat_entry_naming_cluster_one_is_an_error_not_an_underflow() {
    // fatfs 0.3 computes `cluster - 2` unchecked for such an entry.
    let t = tempfile::tempdir().unwrap();
    let img = fat16(t.path());
    let e = root_entry(&img, b"README  TXT");
    write_at(&img, e + 26, &1u16.to_le_bytes());
    let i = Image::open(&img).unwrap();
    let fs = i.filesystem("0").unwrap();
    let err = fs.read_to_vec(b"/README.TXT", 1 << 20).unwrap_err();
    assert!(err.to_string().contains("outside the data area"), "{err}");
}

#[test]
fn fat_file_bigger_than_its_chain_is_an_error() {
    let t = tempfile::tempdir().unwrap();
    let img = fat16(t.path());
    let e = root_entry(&img, b"README  TXT");
    write_at(&img, e + 28, &50_000u32.to_le_bytes());
    let i = Image::open(&img).unwrap();
    let err = i
        .filesystem("0")
        .unwrap()
        .open(b"/README.TXT")
        .err()
        .unwrap();
    assert!(err.to_string().contains("its chain has 1"), "{err}");
}

#[test]
fn fat_unsafe_and_duplicate_names_are_never_copied_out() {
    let t = tempfile::tempdir().unwrap();
    let img = fat16(t.path());
    let e = root_entry(&img, b"README  TXT");
    let entry = read_at(&img, e, 32);
    // A second README.TXT right after the first one (replacing the end marker or an entry).
    let dup = t.path().join("dup.img");
    std::fs::copy(&img, &dup).unwrap();
    write_at(&dup, e + 32, &entry);
    let i = Image::open(&dup).unwrap();
    let dest = t.path().join("out-dup");
    let err = imgbuild_inspect::copy_out(i.filesystem("0").unwrap(), b"/", &dest).unwrap_err();
    assert!(matches!(err, Error::DuplicateName { .. }), "{err}");
    // An entry named "..": must not escape the destination.
    let mut dots = entry.clone();
    dots[..11].copy_from_slice(b"..         ");
    dots[11] = 0x20; // a file
    write_at(&img, e, &dots);
    let i = Image::open(&img).unwrap();
    let dest = t.path().join("out-dots");
    std::fs::create_dir(&dest).unwrap();
    let r = imgbuild_inspect::copy_out(i.filesystem("0").unwrap(), b"/", &dest);
    // ".." entries are skipped as directory bookkeeping; nothing lands outside `dest`.
    assert!(
        r.is_ok() || matches!(r, Err(Error::UnsafeName { .. })),
        "{r:?}"
    );
    let outside: Vec<_> = std::fs::read_dir(t.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!outside.iter().any(|n| n == "README.TXT"), "{outside:?}");
}

#[test]
fn zstd_bomb_is_stopped_at_the_size_limit() {
    let t = tempfile::tempdir().unwrap();
    let bomb = t.path().join("bomb.img.zst");
    let mut enc = zstd::stream::Encoder::new(std::fs::File::create(&bomb).unwrap(), 3).unwrap();
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..256 {
        std::io::Write::write_all(&mut enc, &zeros).unwrap();
    }
    enc.finish().unwrap();
    assert!(std::fs::metadata(&bomb).unwrap().len() < 64 << 10);
    let opts = InspectOptions {
        limits: Limits {
            max_image_size: 64 << 20,
            ..Limits::default()
        },
        ..InspectOptions::default()
    };
    let e = Image::open_with(&bomb, &opts).unwrap_err();
    assert!(
        matches!(&e, Error::TooLarge { what: "decompressed image", max, .. } if *max == 64 << 20),
        "{e}"
    );
    // A damaged stream is an error too.
    let mut bytes = std::fs::read(&bomb).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0xff;
    bytes.truncate(n - 3);
    std::fs::write(&bomb, &bytes).unwrap();
    assert!(Image::open(&bomb).is_err());
}

/// ext4 with a symlink loop and a directory hard-linked into itself (debugfs `ln`, which the
/// kernel would never allow).
#[test]
fn ext4_symlink_loop_and_directory_loop_are_bounded() {
    harness::install_panic_counter();
    let t = tempfile::tempdir().unwrap();
    let tree = t.path().join("tree");
    std::fs::create_dir_all(tree.join("d/sub")).unwrap();
    std::fs::write(tree.join("d/sub/file"), b"content\n").unwrap();
    std::os::unix::fs::symlink("b", tree.join("a")).unwrap();
    std::os::unix::fs::symlink("a", tree.join("b")).unwrap();
    let img = t.path().join("loop.img");
    run(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", "loop", "-d"])
        .arg(&tree)
        .arg(&img)
        .arg("8M"));
    run(Command::new("debugfs")
        .args(["-w", "-R", "ln /d /d/sub/up"])
        .arg(&img));
    let i = Image::open(&img).unwrap();
    let fs = i.filesystem("0").unwrap();
    let e = fs.read_to_vec(b"/a", 1 << 20).unwrap_err();
    assert!(matches!(e, Error::Limit { .. }), "{e}");
    assert_eq!(fs.metadata(b"/d/sub/up").unwrap().kind, Kind::Dir);
    let t0 = Instant::now();
    let walked = fs.walk(b"/", |_, _, _| Ok(true));
    let err = walked.unwrap_err();
    // The walk knows ext4 directories by inode number: `/d/sub/up` is `/d` again.
    assert!(
        matches!(&err, Error::Corrupt { reason, .. } if reason.contains("directory loop")),
        "{err}"
    );
    assert!(err.to_string().contains("/d/sub/up"), "{err}");
    let dest = t.path().join("out");
    assert!(imgbuild_inspect::copy_out(fs, b"/d", &dest).is_err());
    let o = harness::exercise(&img, Duration::from_secs(60)).unwrap();
    assert!(o.errors > 0);
    assert!(t0.elapsed() < Duration::from_secs(60), "{:?}", t0.elapsed());
}

#[test]
fn not_an_image_gives_clear_errors() {
    let t = tempfile::tempdir().unwrap();
    let qcow = t.path().join("x.qcow2");
    std::fs::write(&qcow, b"QFI\xfb\0\0\0\x03rest").unwrap();
    let e = Image::open(&qcow).unwrap_err();
    assert!(e.to_string().contains("qcow2"), "{e}");
    let e = Image::open(t.path()).unwrap_err();
    assert!(e.to_string().contains("not a regular file"), "{e}");
    let e = Image::open(&t.path().join("missing.img")).unwrap_err();
    assert!(matches!(e, Error::Io { .. }), "{e}");
    let zeros = t.path().join("zeros.img");
    std::fs::write(&zeros, vec![0u8; 1 << 20]).unwrap();
    let i = Image::open(&zeros).unwrap();
    assert!(i
        .warnings()
        .join("")
        .contains("no partition table and no filesystem"));
    assert!(i.root_filesystem().is_err());
    let e = i.filesystem("ESP").unwrap_err();
    assert!(matches!(e, Error::NoSuchPartition { .. }), "{e}");
}

/// ext4-view allocates a symlink's recorded size before reading it: a corrupt inode claiming
/// a 500 GB target would abort the process (found by the fuzz test). Sizes are checked first.
#[test]
fn ext4_symlink_with_a_huge_recorded_size_is_an_error_not_an_abort() {
    let t = tempfile::tempdir().unwrap();
    let tree = t.path().join("tree");
    std::fs::create_dir_all(tree.join("dir")).unwrap();
    std::fs::write(tree.join("dir/file"), b"x").unwrap();
    std::os::unix::fs::symlink(
        "/nix/store/00000000000000000000000000000000-some-long-name-here",
        tree.join("link"),
    )
    .unwrap();
    std::os::unix::fs::symlink("dir", tree.join("short")).unwrap();
    let img = t.path().join("huge-link.img");
    run(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", "huge", "-d"])
        .arg(&tree)
        .arg(&img)
        .arg("4M"));
    for link in ["/link", "/short"] {
        run(Command::new("debugfs")
            .args(["-w", "-R", &format!("sif {link} size 545460846658")])
            .arg(&img));
    }
    let i = Image::open(&img).unwrap();
    let fs = i.filesystem("0").unwrap();
    for p in [&b"/link"[..], b"/short", b"/short/file"] {
        let e = fs.metadata(p).unwrap_err();
        assert!(
            e.to_string()
                .contains("symlink target of 545460846658 bytes"),
            "{e}"
        );
    }
    let e = fs.read_dir(b"/").unwrap_err();
    assert!(e.to_string().contains("545460846658"), "{e}");
    let o = harness::exercise(&img, Duration::from_secs(60)).unwrap();
    assert!(o.largest_allocation < 1 << 20, "{o:?}");
}

/// A backup GPT header with a valid CRC but nonsense in it only costs a warning when the
/// primary is good (and the other way round).
#[test]
fn one_unusable_gpt_header_is_a_warning() {
    let t = tempfile::tempdir().unwrap();
    let img = efi(t.path());
    let size = std::fs::metadata(&img).unwrap().len();
    let last = size / 512 - 1;
    let mut h = read_at(&img, last * 512, 92);
    h[24..32].copy_from_slice(&7u64.to_le_bytes());
    h[16..20].fill(0);
    let crc = crc32fast::hash(&h);
    h[16..20].copy_from_slice(&crc.to_le_bytes());
    write_at(&img, last * 512, &h);
    let i = Image::open(&img).unwrap();
    let w = i.warnings().join("\n");
    assert!(w.contains("backup GPT header (LBA"), "{w}");
    assert!(w.contains("says it is at LBA 7"), "{w}");
    assert_eq!(i.table().header, Some("primary"));
    assert_eq!(i.partitions().count(), 2);
    // Now the primary too: the error is the primary's own.
    let mut h = read_at(&img, 512, 92);
    h[84..88].copy_from_slice(&512u32.to_le_bytes());
    h[16..20].fill(0);
    let crc = crc32fast::hash(&h);
    h[16..20].copy_from_slice(&crc.to_le_bytes());
    write_at(&img, 512, &h);
    let e = Image::open(&img).unwrap_err();
    assert!(
        matches!(&e, Error::Unsupported { what, .. } if what.contains("512 bytes")),
        "{e}"
    );
}
