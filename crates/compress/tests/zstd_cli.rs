//! The output as the reference `zstd` tool sees it (`zstd` must be installed; missing fails).

#![allow(clippy::unwrap_used)]

use std::fs::File;
use std::io::Write as _;
use std::process::Command;
use std::sync::atomic::AtomicBool;

use imgbuild_compress::{compress_file, Options};

fn zstd(args: &[&str]) -> (bool, Vec<u8>, String) {
    let out = Command::new("zstd")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run `zstd` (install the zstd package): {e}"));
    (
        out.status.success(),
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn zstd_tool_decompresses_tests_and_lists_it() {
    let dir = tempfile::tempdir().unwrap();
    // Mixed content: text, a run of zeros, pseudo-random bytes; 13 MiB + 7 bytes.
    let mut data = Vec::new();
    while data.len() < 5 << 20 {
        data.extend_from_slice(format!("line {} of the image\n", data.len()).as_bytes());
    }
    data.resize(9 << 20, 0);
    let mut s = 0x9E37_79B9_7F4A_7C15u64;
    while data.len() < (13 << 20) + 7 {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        data.push(s as u8);
    }
    let raw = dir.path().join("disk.img");
    File::create(&raw).unwrap().write_all(&data).unwrap();
    let zst = dir.path().join("disk.img.zst");
    let out = File::create(&zst).unwrap();
    let (out, _) = compress_file(
        &raw,
        data.len() as u64,
        out,
        &Options {
            level: 3,
            workers: 2,
            checksum: true,
        },
        2,
        &imgbuild_blockio::NoProgress,
        &AtomicBool::new(false),
    )
    .unwrap();
    drop(out);
    let zst = zst.to_str().unwrap();

    let (ok, stdout, err) = zstd(&["-dc", zst]);
    assert!(ok, "zstd -dc failed: {err}");
    assert!(stdout == data, "zstd -dc output differs from the input");

    let (ok, _, err) = zstd(&["-t", zst]);
    assert!(ok, "zstd -t failed: {err}");

    // One frame, content size recorded, XXH64 checksum present.
    let (ok, stdout, err) = zstd(&["-lv", zst]);
    let text = format!("{}{err}", String::from_utf8_lossy(&stdout));
    assert!(ok, "zstd -lv failed: {text}");
    assert!(text.contains("# Zstandard Frames: 1"), "{text}");
    assert!(text.contains("Check: XXH64"), "{text}");
    assert!(
        text.contains(&format!("({} B)", data.len())),
        "decompressed size not recorded:\n{text}"
    );

    // A damaged checksum is caught by zstd -t (the checksum is really there).
    let mut bytes = std::fs::read(zst).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    let bad = dir.path().join("bad.zst");
    std::fs::write(&bad, &bytes).unwrap();
    let (ok, _, _) = zstd(&["-t", bad.to_str().unwrap()]);
    assert!(!ok, "zstd -t accepted a frame with a damaged checksum");
}
