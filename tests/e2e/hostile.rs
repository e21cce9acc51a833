//! Issue 27, the input side (items 1, 5, 6), each case run through the binary: files named by
//! inputs (a format file's `base`, `--add` sources) that are devices, FIFOs, `/proc` files,
//! other files of the host or 50 MB on one line end in one clear error line within 10 s and
//! 256 MiB, quote nothing of what they hold, and leave nothing at the output; the manifest of
//! an image holding `--add` files gives no hash to test guesses of them against, and such an
//! image and its bmap are readable by their owner only.

use crate::common::*;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// An environment variable given to every hostile build: no message may contain it.
const TOKEN: &str = "tok-9f3c51d07ab2e64c";
/// The one line of a shadow-like file a `base` names.
const SHADOW: &str = "root:$6$Xy7secretSALT$hashhashhashhashhashhash:19000:0:99999:7:::";

/// How long a hostile build may run before it is killed (a build blocked on a FIFO).
const LIMIT: Duration = Duration::from_secs(30);

/// The build of the demo closure as `format` (a name or a format file) into `out`.
fn build(format: &str, out: &Path, extra: &[&str]) -> Command {
    let mut args = demo_args(format, out);
    args.extend(extra.iter().map(|s| s.to_string()));
    let mut c = imgbuild(&args.iter().map(String::as_str).collect::<Vec<_>>());
    c.env("IMGBUILD_TEST_TOKEN", TOKEN);
    c
}

/// `case` ended in exit code 1 with one error line holding every `want`, fast, small, quoting
/// no secret, and left nothing at `out`.
#[track_caller]
fn refused(case: &str, cmd: &Command, out: &Path, want: &[&str]) {
    let r = measured(cmd, LIMIT);
    let err = &r.stderr;
    assert_one_error_line(case, r.code, err, want);
    assert!(
        !err.contains(TOKEN),
        "{case}: the environment is quoted:\n{err}"
    );
    assert!(
        !err.contains("Xy7secret"),
        "{case}: the shadow line is quoted:\n{err}"
    );
    assert!(err.len() < 1000, "{case}: {} bytes of stderr", err.len());
    assert!(
        r.elapsed < Duration::from_secs(10),
        "{case}: {:?}",
        r.elapsed
    );
    assert!(
        r.max_rss_kib < 256 * 1024,
        "{case}: {} KiB of memory",
        r.max_rss_kib
    );
    let dir = out.parent().unwrap();
    let left: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().starts_with("out"))
        .collect();
    assert!(left.is_empty(), "{case}: left behind {left:?}");
    eprintln!(
        "[hostile input] {case} ({:?}, {} KiB): {}",
        r.elapsed,
        r.max_rss_kib,
        err.trim_end()
    );
}

fn mkfifo(p: &Path) {
    let c = std::ffi::CString::new(p.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
}

/// A format file deriving from `base`, in `dir`.
fn derived(dir: &Path, base: &str) -> PathBuf {
    let f = dir.join("derived.toml");
    std::fs::write(&f, format!("base = {base:?}\nname = \"derived\"\n")).unwrap();
    f
}

#[test]
fn format_bases_naming_special_or_foreign_files_are_refused() {
    let t = tempfile::tempdir().unwrap();
    let outs = t.path().join("outs");
    std::fs::create_dir(&outs).unwrap();
    let out = outs.join("out.img");
    let fifo = t.path().join("fifo.toml");
    mkfifo(&fifo);
    std::fs::write(t.path().join("shadow"), format!("{SHADOW}\n")).unwrap();
    let deep = t.path().join("a/b");
    std::fs::create_dir_all(&deep).unwrap();
    let huge = t.path().join("huge.toml");
    std::fs::write(&huge, vec![b'x'; 50_000_000]).unwrap();
    std::os::unix::fs::symlink("/proc/self/environ", t.path().join("env.toml")).unwrap();
    for (case, dir, base, want) in [
        (
            "base /dev/zero",
            t.path(),
            "/dev/zero",
            "is a character device, not a regular file",
        ),
        (
            "base a FIFO",
            t.path(),
            "fifo.toml",
            "is a FIFO, not a regular file",
        ),
        (
            "base /proc/self/environ",
            t.path(),
            "/proc/self/environ",
            "/proc",
        ),
        (
            "base a symlink to /proc/self/environ",
            t.path(),
            "env.toml",
            "/proc",
        ),
        (
            "base ../../shadow",
            deep.as_path(),
            "../../shadow",
            "line 1, column",
        ),
        (
            "base a 50 MB line",
            t.path(),
            "huge.toml",
            "more than 1048576 bytes",
        ),
    ] {
        let f = derived(dir, base);
        refused(case, &build(f.to_str().unwrap(), &out, &[]), &out, &[want]);
    }
    // The format file itself, 50 MB on one line.
    refused(
        "format file of a 50 MB line",
        &build(huge.to_str().unwrap(), &out, &[]),
        &out,
        &["more than 1048576 bytes"],
    );
    // An extension that would put the default output elsewhere.
    let f = t.path().join("ext.toml");
    std::fs::write(
        &f,
        "base = \"raw-efi\"\nname = \"ext\"\nextension = \"../../x\"\n",
    )
    .unwrap();
    refused(
        "extension with ../",
        &build(f.to_str().unwrap(), &out, &[]),
        &out,
        &["is not a file-name extension"],
    );
}

#[test]
fn add_sources_that_are_not_regular_files_are_refused() {
    let t = tempfile::tempdir().unwrap();
    let outs = t.path().join("outs");
    std::fs::create_dir(&outs).unwrap();
    let out = outs.join("out.img");
    let fifo = t.path().join("fifo");
    mkfifo(&fifo);
    let tree = t.path().join("tree");
    std::fs::create_dir(&tree).unwrap();
    for (case, spec, want) in [
        (
            "--add /proc/self/environ (size 0, content)",
            "/proc/self/environ:/etc/env".to_string(),
            "reports 0 bytes but holds",
        ),
        (
            "--add /proc/self/status",
            "/proc/self/status:/etc/status".to_string(),
            "/proc",
        ),
        (
            "--add a FIFO",
            format!("{}:/etc/fifo", fifo.display()),
            "is not a regular file",
        ),
        (
            "--add /dev/zero",
            "/dev/zero:/etc/zero".to_string(),
            "is not a regular file",
        ),
    ] {
        refused(
            case,
            &build("raw-efi", &out, &["--add", &spec]),
            &out,
            &[want],
        );
    }
}

/// raw-efi with a 64 MiB ESP and 8 MiB free in the root, written in `dir`: 89 MB images
/// build and hash in a moment.
fn small_raw_efi(dir: &Path) -> PathBuf {
    let raw_efi = std::fs::read_to_string(workspace().join("formats/raw-efi.toml")).unwrap();
    let small_text = raw_efi
        .replace("size = \"512MiB\"", "size = \"64MiB\"")
        .replace("free = \"512MiB\"", "free = \"8MiB\"");
    assert_eq!(small_text.matches("64MiB").count(), 1, "{small_text}");
    assert!(small_text.contains("8MiB\""));
    let small = dir.join("small.toml");
    std::fs::write(&small, small_text).unwrap();
    small
}

/// The image is private (0600) when any added file is: a host file kept from others (even
/// added without :MODE, or inside --add-tree, whose modes are normalized to 0644), or any
/// file on the FAT boot partition, which keeps no modes. A world-readable file added to the
/// root without a private mode leaves the image as the umask makes it.
#[test]
fn images_holding_host_secrets_are_private_whatever_the_image_mode() {
    let t = tempfile::tempdir().unwrap();
    let small = small_raw_efi(t.path());
    let small = small.to_str().unwrap();
    let host = |name: &str, perm: u32| {
        let p = t.path().join(name);
        std::fs::write(&p, b"key\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(perm)).unwrap();
        p
    };
    let secret = host("secret", 0o600);
    let public = host("public", 0o644);
    let tree = t.path().join("tree");
    std::fs::create_dir(&tree).unwrap();
    std::fs::write(tree.join("readme"), b"hello\n").unwrap();
    std::fs::write(tree.join("key"), b"key\n").unwrap();
    std::fs::set_permissions(tree.join("key"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let cases: [(&str, &str, String, bool); 4] = [
        (
            "no-mode",
            "--add",
            format!("{}:/etc/secret", secret.display()),
            true,
        ),
        (
            "tree",
            "--add-tree",
            format!("{}:/etc/keys", tree.display()),
            true,
        ),
        (
            "boot",
            "--add-boot",
            format!("{}:/public", public.display()),
            true,
        ),
        (
            "public",
            "--add",
            format!("{}:/etc/public", public.display()),
            false,
        ),
    ];
    for (name, flag, spec, private) in cases {
        let img = t.path().join(format!("{name}.img"));
        let r = measured(&build(small, &img, &[flag, &spec]), LIMIT);
        assert_eq!(r.code, Some(0), "{name}: {}", r.stderr);
        let bmap = t.path().join(format!("{name}.img.bmap"));
        if private {
            assert_eq!(mode(&img), 0o600, "{name}");
            assert_eq!(mode(&bmap), 0o600, "{name}");
        } else {
            assert_ne!(mode(&img) & 0o077, 0, "{name}: the umask leaves 0600 too");
        }
    }
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

/// Issue 27 item 5: with the same closure and seed, the hash of an image holding a 4-digit
/// PIN tells which guess is right. The image is reproducible (a guess's build is the same
/// file), so the manifest must not carry its hashes, and the image and bmap are private.
#[test]
fn manifests_of_images_with_added_files_give_no_guessing_oracle() {
    let t = tempfile::tempdir().unwrap();
    let small = small_raw_efi(t.path());
    let small = small.to_str().unwrap();
    let build_pin = |name: &str, pin: &str, file_mode: &str| {
        let d = t.path().join(name);
        std::fs::create_dir(&d).unwrap();
        let src = d.join("pin");
        std::fs::write(&src, format!("{pin}\n")).unwrap();
        let img = d.join("nixos.img");
        let spec = format!("{}:/etc/pin:{file_mode}", src.display());
        let r = measured(
            &build(small, &img, &["--add", &spec, "--seed", "pin-test"]),
            LIMIT,
        );
        assert_eq!(r.code, Some(0), "{}", r.stderr);
        assert!(r.stdout.is_empty());
        let json = std::fs::read(d.join("nixos.img.json")).unwrap();
        let m: serde_json::Value = serde_json::from_slice(&json).unwrap();
        (img, m, r.stderr)
    };
    let (secret_img, secret_m, secret_err) = build_pin("secret", "4821", "0600");
    let (right, _, _) = build_pin("right-guess", "4821", "0600");
    let (wrong, _, _) = build_pin("wrong-guess", "1111", "0600");
    // What an attacker could compute for each guess: the oracle exists if hashes are
    // published (same file for the right guess, another for a wrong one).
    let (right_sha, wrong_sha) = (sha256(&right), sha256(&wrong));
    assert_eq!(sha256(&secret_img), right_sha);
    assert_ne!(right_sha, wrong_sha);
    // The published outputs (the manifest, the build's stderr) carry neither.
    let text = serde_json::to_string(&secret_m).unwrap();
    for (what, h) in [("right guess", &right_sha), ("wrong guess", &wrong_sha)] {
        assert!(
            !text.contains(h.as_str()),
            "manifest holds the {what}'s sha256"
        );
        assert!(
            !secret_err.contains(h.as_str()),
            "stderr holds the {what}'s sha256"
        );
    }
    assert!(secret_m.get("sha256").is_none() && secret_m.get("disk_sha256").is_none());
    assert!(
        secret_m["hashes"].as_str().unwrap().starts_with("withheld"),
        "{secret_m}"
    );
    assert!(secret_err.contains("sha256 withheld"), "{secret_err}");
    // Names, not the host's paths.
    assert_eq!(secret_m["image"], "nixos.img");
    assert_eq!(secret_m["bmap"], "nixos.img.bmap");
    assert!(!text.contains(t.path().to_str().unwrap()), "{text}");
    // A 0600 file makes the image and its bmap 0600.
    assert_eq!(mode(&secret_img), 0o600);
    assert_eq!(mode(&t.path().join("secret/nixos.img.bmap")), 0o600);

    // Compressed, the image's size depends on the PIN too: withheld as well.
    let zst = t.path().join("secret/nixos.img.zst");
    let spec = format!("{}:/etc/pin:0600", t.path().join("secret/pin").display());
    let r = measured(
        &build(
            small,
            &zst,
            &["--add", &spec, "--compress", "zstd", "--json"],
        ),
        LIMIT,
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let m: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    assert!(
        m.get("image_size").is_none() && m.get("sha256").is_none(),
        "{m}"
    );
    assert_eq!(mode(&zst), 0o600);
    assert!(
        secret_m["image_size"].as_u64().is_some(),
        "a raw image's size is fixed"
    );
    // Without --add the manifest has its hashes and says what they cover.
    let plain = t.path().join("plain.img");
    let r = measured(&build(small, &plain, &["--json"]), LIMIT);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let m: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    assert_eq!(m["sha256"], sha256(&plain));
    assert_eq!(m["disk_sha256"], m["sha256"]);
    assert!(
        m["hashes"].as_str().unwrap().contains("the raw disk"),
        "{m}"
    );
}

/// A copy of the aarch64 demo's Pi firmware directory, writable, in `dir`.
fn firmware_copy(dir: &Path) -> PathBuf {
    let d = demo_aarch64();
    let top = std::fs::read_link(d.join("result")).unwrap();
    let boot: serde_json::Value = serde_json::from_slice(
        &std::fs::read(d.join(top.strip_prefix("/").unwrap()).join("boot.json")).unwrap(),
    )
    .unwrap();
    let fw = boot["org.imgbuild.v1"]["firmware"].as_str().unwrap();
    let src = d.join(fw.trim_start_matches('/'));
    let dst = dir.join("firmware");
    std::fs::create_dir(&dst).unwrap();
    for e in std::fs::read_dir(&src).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, dst.join(p.file_name().unwrap())).unwrap();
    }
    dst
}

#[test]
fn firmware_config_txt_that_is_huge_or_not_a_file_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let outs = t.path().join("outs");
    std::fs::create_dir(&outs).unwrap();
    let out = outs.join("out.img.zst");
    let fw = firmware_copy(t.path());
    let config = fw.join("config.txt");
    let fw_arg = fw.to_str().unwrap().to_string();
    std::fs::write(&config, "x".repeat(3 << 20)).unwrap();
    refused(
        "firmware config.txt of 3 MiB",
        &build("sd-aarch64", &out, &["--firmware", &fw_arg]),
        &out,
        &["config.txt", "holds more than 1048576 bytes"],
    );
    std::fs::remove_file(&config).unwrap();
    mkfifo(&config);
    refused(
        "firmware config.txt that is a FIFO",
        &build("sd-aarch64", &out, &["--firmware", &fw_arg]),
        &out,
        &["config.txt", "not a regular file"],
    );
}
