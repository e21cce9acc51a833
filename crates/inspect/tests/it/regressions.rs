//! Inputs the fuzz test once broke the readers with, kept as regression tests:
//! `tests/regressions/*.img.zst` (zstd-compressed images, each under 100 KiB). Each must
//! open or fail cleanly, and be read entirely without a panic, within the deadline.

use std::path::Path;
use std::time::Duration;

use crate::harness;

#[test]
fn fuzz_regressions_read_without_panic_or_hang() {
    harness::install_panic_counter();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/regressions");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("tests/regressions exists")
        .map(|e| e.expect("readable entry").path())
        .filter(|p| p.to_string_lossy().ends_with(".img.zst"))
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "no regression inputs in {}",
        dir.display()
    );
    for f in &files {
        let size = std::fs::metadata(f).unwrap().len();
        assert!(
            size < 100 << 10,
            "{} is {size} bytes: keep regressions small",
            f.display()
        );
        // 60 s: the ext4 htree input is a 1.1 GB sparse disk, unpacked from zstd first.
        let o = harness::exercise(f, Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        assert!(
            o.largest_allocation <= 96 << 20,
            "{}: allocation of {} bytes",
            f.display(),
            o.largest_allocation
        );
        eprintln!(
            "{}: opened {}, {} files read, {} errors, {:?}",
            f.file_name().unwrap().to_string_lossy(),
            o.opened,
            o.files,
            o.errors,
            o.elapsed
        );
    }
}

/// `/nix/var/nix/temproots` made an entry for `/nix`'s inode (found by `cargo xtask fuzz ext4`
/// as a 20 s hang): a walk went around the loop to its depth limit, resolving ever longer
/// paths. Now it stops at the first directory seen twice, at once.
#[test]
fn ext4_directory_loop_stops_the_walk_at_once() {
    let f = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/regressions/ext4-dir-entry-loops-to-parent.img.zst");
    let img = imgbuild_inspect::Image::open(&f).expect("the image opens");
    let root = img.root_filesystem().expect("a root filesystem");
    let t0 = std::time::Instant::now();
    let mut visited = 0;
    let r = root.walk(b"/", |_, _, _| {
        visited += 1;
        Ok(true)
    });
    let e = r.expect_err("the loop is an error").to_string();
    assert!(e.contains("seen before"), "{e}");
    assert!(e.contains("/nix/var/nix/temproots"), "{e}");
    assert!(
        visited < 200,
        "{visited} entries visited before the loop was seen"
    );
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
}
