//! Memory and time bounded by what the image holds, not by `--size`: the largest disk
//! imgbuild builds (16 TiB) plans in well under 256 MiB, and anything larger is refused at
//! once, with the limit named and nothing written.

use crate::common::*;
use std::process::Command;
use std::time::Duration;

const TIB: u64 = 1 << 40;

/// `imgbuild ARGS` under [`measured`]: (the run, its peak RSS in bytes, how long it took).
fn run(args: &[String]) -> (Measured, u64, Duration) {
    let mut c = Command::new(bin());
    c.args(args).env_remove("SOURCE_DATE_EPOCH");
    let m = measured(&c, Duration::from_secs(600));
    let (rss, took) = (m.max_rss_kib * 1024, m.elapsed);
    (m, rss, took)
}

#[test]
fn the_largest_disk_plans_in_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("big.img");
    let mut args = demo_args("raw-efi", &out);
    args.extend(["--size", "16TiB", "--dry-run", "--json"].map(String::from));
    let (o, rss, took) = run(&args);
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    let d: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(d["disk_size"], 16 * TIB);
    // Every group's inode table is zeroed metadata (ITABLE_ZEROED): 1/64 of the disk.
    assert!(d["mapped_bytes"].as_u64().unwrap() > 16 * TIB / 64, "{d}");
    assert!(rss < 256 << 20, "planning 16 TiB took {} MiB", rss >> 20);
    assert!(
        took < Duration::from_secs(60),
        "planning 16 TiB took {took:?}"
    );
    assert!(!out.exists(), "a dry run writes nothing");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn sizes_above_the_largest_disk_are_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("big.img");
    for (opt, size, what) in [
        ("--size", "17TiB", "--size is 18691697672192 bytes"),
        ("--size", "16777217MiB", "--size is 17592187092992 bytes"),
        ("--size", "1000000T", "--size is 1099511627776000000 bytes"),
        ("--free", "1000000T", "--free is 1099511627776000000 bytes"),
        (
            "--esp-size",
            "17TiB",
            "partition `ESP` is 18691697672192 bytes",
        ),
    ] {
        let mut args = demo_args("raw-efi", &out);
        args.extend([opt, size].map(String::from));
        let (o, rss, took) = run(&args);
        let err = &o.stderr;
        assert_eq!(o.code, Some(1), "{opt} {size}: {err}");
        assert!(err.contains(what), "{opt} {size}: {err}");
        assert!(
            err.contains("more than the largest disk imgbuild builds, 16 TiB"),
            "{opt} {size}: {err}"
        );
        assert!(
            !err.contains("panicked") && !err.contains("backtrace"),
            "{err}"
        );
        assert!(rss < 64 << 20, "{opt} {size}: {} MiB", rss >> 20);
        assert!(took < Duration::from_secs(5), "{opt} {size}: {took:?}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}

#[test]
fn an_mbr_disk_above_2_tib_is_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = demo_args("sd-aarch64", &dir.path().join("sd.img.zst"));
    args.extend(["--size", "3TiB"].map(String::from));
    let (o, _, took) = run(&args);
    let err = &o.stderr;
    assert_eq!(o.code, Some(1), "{err}");
    assert!(
        err.contains("more than what an MBR partition table addresses (2^32 sectors"),
        "{err}"
    );
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn ext4_images_above_the_writer_limit_are_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("a"), "a").unwrap();
    let out = dir.path().join("fs.img");
    let args: Vec<String> = ["ext4", src.to_str().unwrap(), "-o", out.to_str().unwrap()]
        .into_iter()
        .chain(["--size", "1000000T"])
        .map(String::from)
        .collect();
    let (o, _, took) = run(&args);
    let err = &o.stderr;
    assert_eq!(o.code, Some(1), "{err}");
    assert!(err.contains("more than this writer makes"), "{err}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert!(!out.exists());
}

/// A zstd bomb: `mib` MiB of 0x01 bytes in a few KiB, without the size in its header.
fn bomb(dir: &std::path::Path, mib: u64) -> std::path::PathBuf {
    let p = dir.join("bomb.img.zst");
    ok(&mut sh(&format!(
        "head -c {}M /dev/zero | tr '\\0' '\\1' | zstd -q -3 --no-content-size > {}",
        mib,
        p.display()
    )));
    p
}

#[test]
fn a_zstd_bomb_stops_early_with_its_limit_named() {
    let t = tempfile::tempdir().unwrap();
    let img = bomb(t.path(), 1024);
    let small = std::fs::metadata(&img).unwrap().len();
    assert!(small < 64 << 10, "the bomb is {small} bytes");
    let tmp = t.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let args: Vec<String> = [
        "inspect",
        img.to_str().unwrap(),
        "--tmpdir",
        tmp.to_str().unwrap(),
    ]
    .map(String::from)
    .to_vec();
    let (o, rss, took) = run(&args);
    let err = &o.stderr;
    assert_eq!(o.code, Some(1), "{err}");
    // The cap: 256 MiB of data for so small a file, far below the 1 GiB it unpacks to.
    assert!(err.contains("data unpacked from the image"), "{err}");
    assert!(
        err.contains("more than the limit of 268435456 bytes"),
        "{err}"
    );
    assert!(took < Duration::from_secs(10), "{took:?}");
    assert!(rss < 256 << 20, "{} MiB", rss >> 20);
    assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0, "nothing left");
}

#[test]
fn every_unpacking_command_uses_and_names_the_chosen_temporary_directory() {
    let t = tempfile::tempdir().unwrap();
    let img = t.path().join("demo.img.zst");
    run_demo("raw-efi", &img, &["--compress", "zstd"]);
    let i = img.to_str().unwrap();
    let dest = t.path().join("out");
    let d = dest.to_str().unwrap();
    let commands: [&[&str]; 6] = [
        &["inspect", i],
        &["inspect", "--sizes", i],
        &["ls", i, "/"],
        &["cat", i, "/etc/NIXOS"],
        &["cp", i, "/etc", d],
        &["diff", i, i],
    ];
    for cmd in commands {
        let missing = t.path().join("no-such-dir");
        let mut args = cmd.to_vec();
        args.extend(["--tmpdir", missing.to_str().unwrap()]);
        let e = fails(&mut imgbuild(&args));
        assert!(
            e.contains(missing.to_str().unwrap()),
            "{cmd:?} --tmpdir: {e}"
        );
        let from_env = t.path().join("no-such-env-dir");
        let e = fails(imgbuild(cmd).env("TMPDIR", &from_env));
        assert!(
            e.contains(from_env.to_str().unwrap()),
            "{cmd:?} TMPDIR: {e}"
        );
    }
}

#[test]
fn a_full_temporary_directory_is_named_with_what_to_do() {
    let t = tempfile::tempdir().unwrap();
    let small = t.path().join("small");
    std::fs::create_dir(&small).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=96m", "tmpfs"])
        .arg(&small)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("cannot mount a tmpfs (not root?): the full-directory case is untested here");
        return;
    }
    let img = bomb(t.path(), 200);
    let e = fails(&mut imgbuild(&[
        "inspect",
        img.to_str().unwrap(),
        "--tmpdir",
        small.to_str().unwrap(),
    ]));
    let _ = Command::new("umount").arg(&small).status();
    assert!(e.contains(&format!("`{}`", small.display())), "{e}");
    assert!(e.contains("bytes free in the temporary directory"), "{e}");
    assert!(e.contains("--tmpdir"), "{e}");
}

/// Bitmaps shared between block groups with the same contents: a filesystem of 64 groups (4
/// flex groups, superblock backups in 8 of them) passes e2fsck.
#[test]
fn an_ext4_of_many_empty_groups_passes_e2fsck() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("d")).unwrap();
    std::fs::write(src.join("d/f"), "f").unwrap();
    std::fs::write(src.join("big"), vec![7u8; 3 << 20]).unwrap();
    let out = dir.path().join("fs.img");
    ok(&mut imgbuild(&[
        "ext4",
        src.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--size",
        "8GiB",
    ]));
    let o = ok(Command::new("e2fsck").arg("-fn").arg(&out));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("/2097152 blocks"), "{text}");
}
