//! Fuzzing the readers: proptest corrupts the metadata of real images (partition tables,
//! superblocks, group descriptors, inode tables, directory blocks, FAT tables and entries,
//! boot configs, the Nix database) and every case must end without a panic (not even one
//! the library's guard catches), within a deadline, without a huge allocation.
//!
//! `IMGBUILD_FUZZ_CASES` sets the number of cases per base image (default 150),
//! `IMGBUILD_FUZZ_SEED` the seed (default fixed, so CI runs the same cases). A failing
//! case is saved, zstd-compressed, as `$CARGO_TARGET_TMPDIR/inspect-fuzz/crash-<base>.img.zst`
//! (proptest shrinks first, so the last one saved is the smallest); fixed crashes go to
//! `tests/regressions/`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};

use crate::common;
use imgbuild_testutil::harness::{self, Base, Mutation, INTERESTING};

/// Per-case deadline (debug build, two shared cores).
const DEADLINE: Duration = Duration::from_secs(20);
/// Largest single allocation a case may request.
const MAX_ALLOCATION: usize = 96 << 20;

#[derive(Clone, Debug)]
enum M {
    Flip(u64, u64, u8),
    Byte(u64, u64, u8),
    Number(u64, u64, usize, usize),
    Copy(u64, u64, u64, u64, u8),
}

fn mutation() -> impl Strategy<Value = M> {
    prop_oneof![
        (any::<u64>(), any::<u64>(), any::<u8>()).prop_map(|(r, f, b)| M::Flip(r, f, b)),
        (any::<u64>(), any::<u64>(), any::<u8>()).prop_map(|(r, f, b)| M::Byte(r, f, b)),
        (any::<u64>(), any::<u64>(), 0..INTERESTING.len(), 0usize..4)
            .prop_map(|(r, f, v, w)| M::Number(r, f, v, w)),
        (
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            1u8..64
        )
            .prop_map(|(r1, f1, r2, f2, l)| M::Copy(r1, f1, r2, f2, l)),
    ]
}

fn concrete(base: &Base, ms: &[M]) -> Vec<Mutation> {
    ms.iter()
        .map(|m| match *m {
            M::Flip(r, f, bit) => Mutation::Flip {
                at: base.pick(r, f),
                bit: bit % 8,
            },
            M::Byte(r, f, b) => Mutation::Write {
                at: base.pick(r, f),
                bytes: vec![b],
            },
            M::Number(r, f, v, w) => Mutation::Write {
                at: base.pick(r, f),
                bytes: INTERESTING[v].to_le_bytes()[..[1, 2, 4, 8][w]].to_vec(),
            },
            M::Copy(r1, f1, r2, f2, len) => Mutation::Copy {
                from: base.pick(r1, f1),
                at: base.pick(r2, f2),
                len: u64::from(len),
            },
        })
        .collect()
}

fn cases() -> u32 {
    std::env::var("IMGBUILD_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(150)
}

fn crash_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("inspect-fuzz")
}

/// Fuzzes one base image; prints what it did.
pub(crate) fn fuzz(name: &str, image: &Path) {
    harness::install_panic_counter();
    let base = Base::new(name, image);
    assert!(base.covered() > 0);
    // A case that aborts the process (an allocation that fails) cannot be saved afterwards:
    // keep the pristine base and write each case's mutations before running it.
    std::fs::create_dir_all(crash_dir()).unwrap();
    let pristine = crash_dir().join(format!("base-{name}.img"));
    std::fs::copy(image, &pristine).unwrap();
    let current = crash_dir().join(format!("current-{name}.txt"));
    let n = cases();
    // Deterministic by default (CI runs the same cases every time); IMGBUILD_FUZZ_SEED
    // explores others.
    let seed: u64 = std::env::var("IMGBUILD_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
    for (i, b) in name.bytes().enumerate() {
        seed_bytes[8 + i % 24] ^= b;
    }
    let config = Config {
        cases: n,
        failure_persistence: None,
        max_shrink_iters: 300,
        // A hang costs the whole deadline per shrink step: keep shrinking bounded.
        max_shrink_time: 180_000,
        ..Config::default()
    };
    let mut runner = TestRunner::new_with_rng(
        config,
        TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes),
    );
    let opened = AtomicU64::new(0);
    let files = AtomicU64::new(0);
    let max_ms = AtomicU64::new(0);
    let largest = AtomicU64::new(0);
    let ran = AtomicU64::new(0);
    let open_errors = std::sync::Mutex::new(std::collections::BTreeMap::<String, u64>::new());
    let t0 = Instant::now();
    let strategy = (prop::collection::vec(mutation(), 1..8), any::<bool>());
    let result = runner.run(&strategy, |(ms, fix_crcs)| {
        let mut muts = concrete(&base, &ms);
        let restore = harness::apply(&base.path, base.size, &muts);
        // Half the cases then make the GPT CRCs match again (only GPT images have any).
        let fixups = if fix_crcs {
            harness::gpt_crc_fixups(&base.path, base.size)
        } else {
            Vec::new()
        };
        let restore_fixups = harness::apply(&base.path, base.size, &fixups);
        muts.extend(fixups);
        std::fs::write(&current, harness::describe(&muts)).unwrap();
        let r = harness::exercise(&base.path, DEADLINE);
        ran.fetch_add(1, Ordering::Relaxed);
        let fail = |msg: String| {
            let saved = harness::save_crash(&base.path, &crash_dir(), &format!("crash-{name}"));
            TestCaseError::fail(format!(
                "{msg}\nmutations: {muts:?}\nsaved: {}",
                saved.display()
            ))
        };
        let o = match r {
            Ok(o) => o,
            Err(msg) => return Err(fail(msg)),
        };
        if o.largest_allocation > MAX_ALLOCATION {
            return Err(fail(format!(
                "allocation of {} bytes",
                o.largest_allocation
            )));
        }
        largest.fetch_max(o.largest_allocation as u64, Ordering::Relaxed);
        drop(restore_fixups);
        drop(restore);
        if o.opened {
            opened.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(e) = &o.open_error {
            // Group by message without the image path and numbers.
            let key: String = e
                .split_once(": ")
                .map_or(e.as_str(), |(_, r)| r)
                .chars()
                .filter(|c| !c.is_ascii_digit())
                .take(70)
                .collect();
            *open_errors.lock().unwrap().entry(key).or_default() += 1;
        }
        files.fetch_add(o.files, Ordering::Relaxed);
        max_ms.fetch_max(o.elapsed.as_millis() as u64, Ordering::Relaxed);
        Ok(())
    });
    eprintln!(
        "fuzz {name} (seed {seed}): {} cases run ({n} asked) in {:.1} s, {} images opened, {} files read, \
         slowest case {} ms, {} byte ranges ({} bytes) targeted, largest allocation in a case \
         {} bytes",
        ran.load(Ordering::Relaxed),
        t0.elapsed().as_secs_f64(),
        opened.load(Ordering::Relaxed),
        files.load(Ordering::Relaxed),
        max_ms.load(Ordering::Relaxed),
        base.ranges.len(),
        base.covered(),
        largest.load(Ordering::Relaxed),
    );
    let mut errs: Vec<(String, u64)> = open_errors.into_inner().unwrap().into_iter().collect();
    errs.sort_by_key(|e| std::cmp::Reverse(e.1));
    for (e, n) in errs.iter().take(6) {
        eprintln!("    {n:>6} x open error: {e}");
    }
    if let Err(e) = result {
        panic!("fuzz {name}: {e}");
    }
}

/// Sanity check that the harness can fail: the uncorrupted base reads everything back.
pub(crate) fn clean(image: &Path) -> harness::Outcome {
    harness::install_panic_counter();
    let o = harness::exercise(image, DEADLINE).expect("the clean image reads");
    assert!(o.opened, "{:?}", o.open_error);
    assert_eq!(o.errors, 0, "a clean image reads without errors");
    assert!(o.files > 10, "{o:?}");
    o
}

#[test]
fn fuzz_classic_sd_mbr_fat16_ext4() {
    let t = tempfile::tempdir().unwrap();
    let img = common::classic("sd", &t.path().join("sd.img"), None);
    clean(&img);
    fuzz("classic-sd", &img);
}

#[test]
fn fuzz_classic_efi_gpt_fat32_ext4_sqlite() {
    let t = tempfile::tempdir().unwrap();
    let img = common::classic("efi", &t.path().join("efi.img"), None);
    clean(&img);
    fuzz("classic-efi", &img);
}

/// Without metadata checksums, corrupted ext4 structures get past the checksum checks and
/// into the deeper parts of the reader.
#[test]
fn fuzz_classic_efi_ext4_without_checksums() {
    let t = tempfile::tempdir().unwrap();
    let img = common::classic(
        "efi",
        &t.path().join("efi-nocsum.img"),
        Some("^metadata_csum,^has_journal"),
    );
    clean(&img);
    fuzz("classic-efi-nocsum", &img);
}

#[test]
fn fuzz_bare_fat12() {
    let t = tempfile::tempdir().unwrap();
    let img = common::bare_fat(t.path(), 1440, Some(12), None);
    clean(&img);
    fuzz("bare-fat12", &img);
}

/// Corrupted zstd streams: decoding errors, never a panic or an unbounded output.
#[test]
fn fuzz_zstd_stream() {
    harness::install_panic_counter();
    let t = tempfile::tempdir().unwrap();
    let img = common::bare_fat(t.path(), 1440, Some(12), None);
    let raw = std::fs::read(&img).unwrap();
    let zst = zstd::bulk::compress(&raw, 3).unwrap();
    let path = t.path().join("case.img.zst");
    let mut runner = TestRunner::new_with_rng(
        Config {
            cases: cases(),
            failure_persistence: None,
            ..Config::default()
        },
        TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]),
    );
    let len = zst.len();
    let t0 = Instant::now();
    let result = runner.run(
        &prop::collection::vec((0..len, any::<u8>()), 1..16),
        |edits| {
            let mut z = zst.clone();
            for (at, b) in &edits {
                z[*at] = *b;
            }
            std::fs::write(&path, &z).unwrap();
            let o = harness::exercise(&path, DEADLINE).map_err(TestCaseError::fail)?;
            prop_assert!(o.largest_allocation <= MAX_ALLOCATION);
            Ok(())
        },
    );
    eprintln!(
        "fuzz zstd stream: {} cases in {:.1} s",
        cases(),
        t0.elapsed().as_secs_f64()
    );
    result.unwrap();
}

/// Corrupted disk containers (made by qemu-img from a small FAT image): headers, tables,
/// compressed grains and clusters. Errors, never a panic, a hang or an unbounded
/// allocation. Skipped without qemu-img.
#[test]
fn fuzz_containers() {
    harness::install_panic_counter();
    let have = std::process::Command::new("qemu-img")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !have {
        eprintln!("fuzz containers: no qemu-img, skipped");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let img = common::bare_fat(t.path(), 1440, Some(12), None);
    let kinds: [(&str, &[&str]); 6] = [
        ("qcow2", &[]),
        ("qcow2", &["-c"]),
        ("vpc", &[]),
        ("vhdx", &[]),
        ("vmdk", &[]),
        ("vmdk", &["-o", "subformat=streamOptimized"]),
    ];
    for (i, (fmt, opts)) in kinds.iter().enumerate() {
        let c = t.path().join(format!("c{i}.{fmt}"));
        let st = std::process::Command::new("qemu-img")
            .args(["convert", "-O", fmt])
            .args(*opts)
            .arg(&img)
            .arg(&c)
            .status()
            .unwrap();
        assert!(st.success());
        let clean = harness::exercise(&c, DEADLINE).unwrap();
        assert!(clean.opened && clean.files > 0, "{fmt} {opts:?}: {clean:?}");
        let bytes = std::fs::read(&c).unwrap();
        let len = bytes.len();
        // Most edits land in the first 64 KiB and the last 4 KiB (headers, tables, footers).
        let hot = |r: u64, f: u64| -> usize {
            let r = r as usize;
            match f % 4 {
                0 => r % len,
                1 => len - 1 - r % len.min(4096),
                _ => r % len.min(65536),
            }
        };
        let case = t.path().join(format!("case{i}.{fmt}"));
        let mut runner = TestRunner::new_with_rng(
            Config {
                cases: cases(),
                failure_persistence: None,
                ..Config::default()
            },
            TestRng::from_seed(RngAlgorithm::ChaCha, &[i as u8 + 11; 32]),
        );
        let t0 = Instant::now();
        let opened = AtomicU64::new(0);
        let result = runner.run(
            &prop::collection::vec(
                (any::<u64>(), any::<u64>(), 0..INTERESTING.len(), 0usize..5),
                1..8,
            ),
            |edits| {
                let mut b = bytes.clone();
                for &(r, f, v, w) in &edits {
                    let at = hot(r, f);
                    let val = INTERESTING[v].to_le_bytes();
                    let n = [1, 2, 4, 8, 1][w].min(len - at);
                    if w == 4 {
                        b[at] ^= 1 << (f % 8);
                    } else {
                        b[at..at + n].copy_from_slice(&val[..n]);
                    }
                }
                std::fs::write(&case, &b).unwrap();
                let o = harness::exercise(&case, DEADLINE).map_err(TestCaseError::fail)?;
                if o.opened {
                    opened.fetch_add(1, Ordering::Relaxed);
                }
                prop_assert!(o.largest_allocation <= MAX_ALLOCATION);
                Ok(())
            },
        );
        eprintln!(
            "fuzz container {fmt} {opts:?}: {} cases in {:.1} s, {} opened",
            cases(),
            t0.elapsed().as_secs_f64(),
            opened.load(Ordering::Relaxed)
        );
        result.unwrap();
    }
}
