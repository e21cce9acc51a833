use super::*;
use imgbuild_testutil::{error_chain, noise, run};
use std::io::Write;
use std::process::{Command, Stdio};

/// Runs `cmd` with `input` on stdin; its stdout (panics with stderr on failure).
fn pipe(cmd: &mut Command, input: &[u8]) -> String {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e} (is it installed?)"));
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn sample() -> Vec<u8> {
    let mut c = Archive::new(1);
    c.file("bin/busybox", 0o755, b"hello").unwrap();
    c.symlink("bin/sh", "busybox").unwrap();
    c.dir("proc", 0o755).unwrap();
    c.chardev("dev/console", 0o600, 5, 1).unwrap();
    c.finish(512)
}

#[test]
fn header_bytes_are_newc() {
    let m = Member::file(7, 0o644, 1, 5);
    let h = header("ab", &m).unwrap();
    let expected = concat!(
        "070701", "00000007", "000081A4", "00000000", "00000000", "00000001", "00000001",
        "00000005", "00000000", "00000000", "00000000", "00000000", "00000003", "00000000", "ab\0"
    );
    // 110 + 3 = 113 bytes, padded to 116.
    assert_eq!(h.len(), 116);
    assert_eq!(&h[..113], expected.as_bytes());
    assert_eq!(&h[113..], &[0, 0, 0]);
    assert_eq!(padding(5), 3);
    assert_eq!(padding(8), 0);
    let t = trailer();
    assert_eq!(t.len(), 124, "110 + 11 = 121, padded to 124");
    let fields = format!(
        "070701{}00000001{}0000000B00000000",
        "00000000".repeat(4),
        "00000000".repeat(6)
    );
    assert_eq!(&t[..110], fields.as_bytes());
    assert_eq!(&t[110..], b"TRAILER!!!\0\0\0\0");
}

#[test]
fn gnu_cpio_and_bsdtar_list_what_we_write() {
    let bytes = sample();
    assert_eq!(bytes.len() % 512, 0);
    let listing = pipe(Command::new("cpio").args(["-t", "-v", "--quiet"]), &bytes);
    let lines: Vec<&str> = listing.lines().collect();
    assert_eq!(lines.len(), 6, "{listing}");
    assert!(lines[0].starts_with("drwxr-xr-x") && lines[0].ends_with(" bin"));
    assert!(
        lines[1].starts_with("-rwxr-xr-x")
            && lines[1].contains(" 5 ")
            && lines[1].ends_with("bin/busybox"),
        "{listing}"
    );
    assert!(lines[2].ends_with("bin/sh -> busybox"), "{listing}");
    assert!(lines[3].ends_with(" proc"), "{listing}");
    assert!(lines[4].starts_with("drwxr-xr-x") && lines[4].ends_with(" dev"));
    assert!(lines[5].starts_with("crw-------") && lines[5].contains("5,"));
    let bsd = pipe(Command::new("bsdtar").args(["-t", "-f", "-"]), &bytes);
    assert_eq!(
        bsd.lines().collect::<Vec<_>>(),
        ["bin", "bin/busybox", "bin/sh", "proc", "dev", "dev/console"]
    );
    assert_eq!(sample(), bytes, "same members, same bytes");
}

/// The netboot initrd's shape: a header from [`header`], the data placed after it, its
/// padding, the trailer: GNU cpio extracts the file with its bytes, mode and time.
#[test]
fn header_then_data_extracts() {
    let data = noise(3, 100_001);
    let m = Member::file(1, 0o444, 1_700_000_000, data.len() as u64);
    let mut archive = header("nix-store.squashfs", &m).unwrap();
    assert_eq!(archive.len() % 4, 0);
    archive.extend_from_slice(&data);
    archive.extend(std::iter::repeat_n(0, padding(m.size) as usize));
    archive.extend_from_slice(&trailer());
    let dir = tempfile::tempdir().unwrap();
    pipe(
        Command::new("cpio")
            .args(["-i", "--quiet", "--preserve-modification-time"])
            .current_dir(dir.path()),
        &archive,
    );
    let out = dir.path().join("nix-store.squashfs");
    assert_eq!(std::fs::read(&out).unwrap(), data);
    let listing = run(Command::new("bsdtar")
        .args(["-t", "-v", "-f"])
        .arg(write_tmp(dir.path(), &archive)));
    assert!(listing.starts_with("-r--r--r--"), "{listing}");
    assert!(listing.contains(" 100001 "), "{listing}");
    let meta = std::fs::metadata(&out).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(meta.mtime(), 1_700_000_000);
}

fn write_tmp(dir: &std::path::Path, bytes: &[u8]) -> std::path::PathBuf {
    let p = dir.join("archive.cpio");
    std::fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn refusals_name_the_member() {
    let m = Member::file(1, 0o444, 0, 1 << 32);
    let e = header("nix-store.squashfs", &m).unwrap_err();
    assert!(matches!(e, Error::TooLarge { size, .. } if size == 1 << 32));
    assert_eq!(
        error_chain(&e),
        "`nix-store.squashfs` is 4294967296 bytes: a newc cpio member holds at most 4 GiB - 1"
    );
    // The largest size that fits is accepted.
    let m = Member::file(1, 0o444, 0, u64::from(u32::MAX));
    assert!(header("big", &m).unwrap().starts_with(b"070701"));
    let e = header("a\0b", &Member::file(1, 0o444, 0, 0)).unwrap_err();
    assert_eq!(
        error_chain(&e),
        "`a\\0b` cannot be a cpio member name (empty, a NUL byte, or too long)"
    );
    assert!(matches!(
        header("", &Member::file(1, 0o444, 0, 0)),
        Err(Error::BadName { .. })
    ));
    let mut c = Archive::new(0);
    c.file("a/b", 0o644, b"").unwrap();
    assert!(matches!(c.dir("a", 0o755), Err(Error::Duplicate { name }) if name == "a"));
    assert!(matches!(
        c.file("/a/b", 0o644, b""),
        Err(Error::Duplicate { .. })
    ));
}
