//! ISSUE #8, the failure half: every way a build can go wrong ends with exit code 1 (128 + the
//! signal's number after SIGINT, SIGTERM or SIGHUP: 130, 143, 129), one stderr line naming the cause (path, reason, numbers), and no file at
//! the output path (or the previous one untouched): neither `OUT`, `OUT.tmp`, `OUT.json` nor
//! `OUT.json.tmp`. Inputs are mutated only in copies of the demo closure. Tests that need root
//! (tmpfs mounts, `setpriv` to uid 65534) fail, not skip, without it: CI runs as root.
//!
//! Every refusal is printed as `[failure message] <case>: <stderr>`
//! (`cargo test -p imgbuild --test e2e failures -- --nocapture`).

use crate::common::*;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a failed build must leave at a pre-existing output path.
const PREVIOUS: &[u8] = b"the previous image, which a failed build must not touch\n";
const HELLO: &str = "5n1pps77w9rn9xxav4sqblz2avfg5m94-hello-2.12.1";
const KERNEL: &str = "knh4j0zphbwpnpgrplpd6q9j2r59d4wa-linux-6.1.0-imgbuild-demo";

fn set_mode(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", p.display()));
}

fn with_suffix(p: &Path, suffix: &str) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Every path a build of `out` may create.
fn out_paths(out: &Path) -> Vec<PathBuf> {
    [".tmp", ".json", ".json.tmp"]
        .iter()
        .map(|s| with_suffix(out, s))
        .chain([out.to_path_buf()])
        .collect()
}

fn exists(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok()
}

#[track_caller]
fn assert_nothing_at(out: &Path) {
    for p in out_paths(out) {
        assert!(!exists(&p), "`{}` exists after a failed build", p.display());
    }
}

/// `out` holds [`PREVIOUS`], and nothing else of the build exists.
#[track_caller]
fn assert_previous(out: &Path) {
    assert_eq!(
        std::fs::read(out).unwrap_or_else(|e| panic!("{}: {e}", out.display())),
        PREVIOUS,
        "the previous `{}` was changed",
        out.display()
    );
    for p in out_paths(out).iter().filter(|p| *p != out) {
        assert!(!exists(p), "`{}` exists after a failed build", p.display());
    }
}

fn previous(out: &Path) {
    std::fs::write(out, PREVIOUS).expect("writing the previous image");
}

/// Runs a build that must be refused: exit code 1, stderr one `imgbuild: error:` line
/// containing every `want`. Returns stderr.
#[track_caller]
fn refused(case: &str, cmd: &mut Command, want: &[&str]) -> String {
    let o = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_one_error_line(&format!("{case}: {cmd:?}"), o.status.code(), &err, want);
    eprintln!("[failure message] {case}: {}", err.trim_end());
    err
}

/// A writable copy of the demo closure in a fresh temporary directory readable by everyone
/// (some builds run as uid 65534).
struct Demo {
    t: tempfile::TempDir,
    root: PathBuf,
}

impl Demo {
    fn new() -> Demo {
        let t = tempfile::tempdir().expect("a temporary directory");
        set_mode(t.path(), 0o755);
        let root = t.path().join("demo");
        ok(Command::new("cp").arg("-a").arg(demo()).arg(&root));
        ok(Command::new("chmod").arg("-R").arg("u+w").arg(&root));
        Demo { t, root }
    }

    fn dir(&self) -> &Path {
        self.t.path()
    }

    /// A new directory everyone can write to, for outputs.
    fn out_dir(&self, name: &str) -> PathBuf {
        let d = self.dir().join(name);
        std::fs::create_dir(&d).expect("creating an output directory");
        set_mode(&d, 0o777);
        d
    }

    fn store(&self, name: &str) -> PathBuf {
        self.root.join("nix/store").join(name)
    }

    fn toplevel(&self) -> PathBuf {
        let l = std::fs::read_link(self.root.join("result")).expect("the demo has ./result");
        let name = l.file_name().and_then(|n| n.to_str());
        self.store(name.expect("result points to a store path"))
    }

    fn args(&self, format: &str, out: &Path, extra: &[&str]) -> Vec<String> {
        let mut a = vec![
            format.to_string(),
            "--closure".into(),
            self.root.join("result").display().to_string(),
            "--store-root".into(),
            self.root.display().to_string(),
            "--closure-info".into(),
            self.root.join("closure-info").display().to_string(),
            "-o".into(),
            out.display().to_string(),
        ];
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    }

    fn build(&self, out: &Path, extra: &[&str]) -> Command {
        run(&self.args("raw-efi", out, extra))
    }

    /// The same build, run as uid/gid 65534 with no supplementary groups.
    fn build_as_nobody(&self, out: &Path, extra: &[&str]) -> Command {
        let mut c = Command::new("setpriv");
        c.args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
            .arg(bin())
            .args(self.args("raw-efi", out, extra))
            .env_remove("SOURCE_DATE_EPOCH")
            .current_dir(self.dir());
        c
    }
}

fn run(args: &[String]) -> Command {
    imgbuild(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

/// `args` with `flag`'s value replaced (`Some`) or the flag removed (`None`).
fn set_flag(args: &[String], flag: &str, value: Option<&Path>) -> Vec<String> {
    let i = args
        .iter()
        .position(|a| a == flag)
        .unwrap_or_else(|| panic!("{flag} in {args:?}"));
    let mut a = args.to_vec();
    match value {
        Some(v) => a[i + 1] = v.display().to_string(),
        None => {
            a.drain(i..i + 2);
        }
    }
    a
}

/// A tmpfs mounted for one test, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, opts: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).expect("creating the mount point");
        ok(Command::new("mount")
            .args(["-t", "tmpfs", "-o", opts, "imgbuild-test"])
            .arg(dir));
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn spawn(mut cmd: Command) -> Child {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"))
}

fn stderr_of(child: Child) -> (std::process::ExitStatus, String) {
    let o = child.wait_with_output().expect("waiting for the build");
    (o.status, String::from_utf8_lossy(&o.stderr).into_owned())
}

/// Waits until `path` exists, i.e. the build is writing; panics if the build ends first.
fn wait_for(path: &Path, child: &mut Child) {
    let start = Instant::now();
    while !exists(path) {
        if let Some(st) = child.try_wait().expect("polling the build") {
            panic!(
                "the build ended ({st}) before `{}` appeared",
                path.display()
            );
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "`{}` did not appear within 60 s",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn signal(child: &Child, sig: libc::c_int) {
    // SAFETY: kill() has no memory-safety preconditions; the pid is our own unreaped child.
    let r = unsafe { libc::kill(child.id() as libc::pid_t, sig) };
    assert_eq!(r, 0, "kill: {}", std::io::Error::last_os_error());
}

#[test]
fn closure_missing_or_not_a_toplevel() {
    let d = Demo::new();
    let out = d.dir().join("x.img");
    let nope = d.dir().join("nope");
    let a = d.args("raw-efi", &out, &[]);
    refused(
        "--closure does not exist",
        &mut run(&set_flag(&a, "--closure", Some(&nope))),
        &[&format!("{}: does not exist", nope.display())],
    );
    assert_nothing_at(&out);

    // No --closure and no ./result in the working directory.
    let empty = d.out_dir("empty");
    let mut c = run(&set_flag(&a, "--closure", None));
    c.current_dir(&empty);
    refused(
        "default ./result missing",
        &mut c,
        &["--closure `./result`", "result: does not exist"],
    );
    assert_nothing_at(&out);

    let hello = d.store(HELLO);
    refused(
        "--closure is not a toplevel",
        &mut run(&set_flag(&a, "--closure", Some(&hello))),
        &[
            "not a NixOS system toplevel",
            HELLO,
            "has neither boot.json nor init with a kernel",
        ],
    );
    assert_nothing_at(&out);

    let init = d.toplevel().join("init");
    refused(
        "--closure inside a store path",
        &mut run(&set_flag(&a, "--closure", Some(&init))),
        &["not a NixOS system toplevel", "/init is inside store path"],
    );
    assert_nothing_at(&out);
}

#[test]
fn store_path_missing() {
    let d = Demo::new();
    let out = d.dir().join("x.img");
    previous(&out);
    std::fs::rename(d.store(HELLO), d.dir().join("moved")).unwrap();
    refused(
        "store path missing",
        &mut d.build(&out, &[]),
        &[
            &format!("store path /nix/store/{HELLO} is missing on disk"),
            &d.store(HELLO).display().to_string(),
        ],
    );
    assert_previous(&out);
}

#[test]
fn store_path_unreadable_by_the_user() {
    let d = Demo::new();
    let outd = d.out_dir("out");
    let out = outd.join("x.img");
    // A whole store path: found when the closure is checked.
    set_mode(&d.store(HELLO), 0o000);
    refused(
        "store path unreadable (permission denied)",
        &mut d.build_as_nobody(&out, &[]),
        &[
            &format!(
                "store path /nix/store/{HELLO} is not readable at {}",
                d.store(HELLO).display()
            ),
            "Permission denied",
        ],
    );
    assert_nothing_at(&out);
    set_mode(&d.store(HELLO), 0o755);

    // One file in it: found while the image is being written, after OUT.tmp exists.
    let readme = d.store(HELLO).join("share/doc/hello/README");
    set_mode(&readme, 0o000);
    refused(
        "store file unreadable (permission denied)",
        &mut d.build_as_nobody(&out, &[]),
        &[
            &format!("`{}`: cannot read it", readme.display()),
            "Permission denied",
        ],
    );
    assert_nothing_at(&out);
}

#[test]
fn boot_symlinks_leaving_the_store_are_refused() {
    let d = Demo::new();
    let out = d.dir().join("x.img");
    previous(&out);
    let top = d.toplevel();
    let boot_json = top.join("boot.json");
    let orig = std::fs::read_to_string(&boot_json).unwrap();
    let kernel = format!("/nix/store/{KERNEL}/bzImage");

    // boot.json naming a kernel outside the store, directly or through `..`.
    for (case, path, want) in [
        (
            "boot.json kernel outside the store",
            "/etc/passwd".to_string(),
            "kernel: invalid store path `/etc/passwd`: does not start with /nix/store/",
        ),
        (
            "boot.json kernel escaping with ..",
            format!("/nix/store/{KERNEL}/../../../etc/passwd"),
            "has '.' or '..' components",
        ),
    ] {
        std::fs::write(&boot_json, orig.replace(&kernel, &path)).unwrap();
        refused(case, &mut d.build(&out, &[]), &["boot.json", want]);
        assert_previous(&out);
    }
    std::fs::write(&boot_json, &orig).unwrap();

    // The kernel file in the store is a symlink to the host's /etc/passwd.
    let bz = d.store(KERNEL).join("bzImage");
    std::fs::rename(&bz, d.dir().join("bzImage")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", &bz).unwrap();
    refused(
        "kernel symlink to /etc/passwd",
        &mut d.build(&out, &[]),
        &[
            "leaves the Nix store",
            &format!("{kernel} points to /etc/passwd"),
        ],
    );
    assert_previous(&out);
    std::fs::remove_file(&bz).unwrap();
    std::fs::rename(d.dir().join("bzImage"), &bz).unwrap();

    // No boot.json: the toplevel's `kernel` symlink is followed, only inside the store.
    std::fs::remove_file(&boot_json).unwrap();
    let link = top.join("kernel");
    for (case, target, want) in [
        (
            "toplevel kernel symlink to /etc/passwd",
            "/etc/passwd",
            "kernel points to /etc/passwd",
        ),
        (
            "toplevel kernel symlink escaping with ..",
            "../../../../../../../../../../etc/passwd",
            "'..' above /nix/store",
        ),
    ] {
        std::fs::remove_file(&link).unwrap();
        std::os::unix::fs::symlink(target, &link).unwrap();
        refused(
            case,
            &mut d.build(&out, &[]),
            &["/kernel: leaves the Nix store", want],
        );
        assert_previous(&out);
    }

    // `result` itself pointing outside the store.
    let result = d.root.join("result");
    std::fs::remove_file(&result).unwrap();
    std::os::unix::fs::symlink("/etc", &result).unwrap();
    refused(
        "result pointing outside the store",
        &mut d.build(&out, &[]),
        &[
            &format!("{}: not in the Nix store", result.display()),
            &d.root.join("nix/store").display().to_string(),
        ],
    );
    assert_previous(&out);
}

#[test]
fn add_sources_leaving_their_tree_are_refused() {
    let d = Demo::new();
    let out = d.dir().join("x.img");
    let secret = d.dir().join("secret");
    std::fs::write(&secret, b"not for the image\n").unwrap();
    let tree = d.dir().join("tree");
    std::fs::create_dir_all(tree.join("sub")).unwrap();
    std::os::unix::fs::symlink("../../secret", tree.join("sub/up")).unwrap();
    refused(
        "--add-tree symlink leaving the tree",
        &mut d.build(&out, &["--add-tree", &format!("{}:/srv", tree.display())]),
        &[
            &format!("--add source `{}`", tree.join("sub/up").display()),
            "symlink to `../../secret` leaves the added tree",
        ],
    );
    assert_nothing_at(&out);

    let link = d.dir().join("link");
    std::os::unix::fs::symlink(&secret, &link).unwrap();
    refused(
        "--add source is a symlink",
        &mut d.build(&out, &["--add", &format!("{}:/etc/key", link.display())]),
        &[&format!("--add source `{}` is a symlink", link.display())],
    );
    assert_nothing_at(&out);
}

/// Every file nixpkgs' config.txt makes the Pi firmware load, as placeholders.
fn complete_firmware(fw: &Path) {
    std::fs::create_dir_all(fw).unwrap();
    for f in [
        "u-boot.bin",
        "armstub8-gic.bin",
        "bootcode.bin",
        "start.elf",
        "fixup.dat",
        "start4.elf",
        "fixup4.dat",
        "bcm2710-rpi-3-b.dtb",
        "bcm2710-rpi-3-b-plus.dtb",
        "bcm2711-rpi-4-b.dtb",
        "bcm2711-rpi-400.dtb",
        "bcm2711-rpi-cm4.dtb",
        "bcm2712-rpi-5-b.dtb",
    ] {
        std::fs::write(fw.join(f), format!("placeholder {f}\n")).unwrap();
    }
}

/// ISSUE #14.1: a firmware directory lacking what config.txt names is refused, naming each
/// missing file and why it is needed.
#[test]
fn incomplete_firmware_is_refused() {
    let d = Demo::new();
    let boot_json = d.toplevel().join("boot.json");
    let text = std::fs::read_to_string(&boot_json).unwrap();
    std::fs::write(&boot_json, text.replace("x86_64-linux", "aarch64-linux")).unwrap();
    let fw = d.dir().join("fw");
    complete_firmware(&fw);
    let out = d.dir().join("sd.img.zst");
    let sd = || {
        let mut a = d.args("sd-aarch64", &out, &["--no-system-check"]);
        a.extend(["--firmware".to_string(), fw.display().to_string()]);
        run(&a)
    };
    ok(&mut sd());
    for p in [out.clone(), with_suffix(&out, ".json")] {
        std::fs::remove_file(p).unwrap();
    }
    std::fs::remove_file(fw.join("u-boot.bin")).unwrap();
    std::fs::remove_file(fw.join("bcm2711-rpi-4-b.dtb")).unwrap();
    refused(
        "firmware without U-Boot and the Pi 4 device tree",
        &mut sd(),
        &[
            &format!(
                "the Raspberry Pi firmware directory `{}` lacks",
                fw.display()
            ),
            "bcm2711-rpi-4-b.dtb ([pi4]: the Raspberry Pi 4 loads it)",
            "u-boot.bin ([all] kernel=u-boot.bin)",
        ],
    );
    assert_nothing_at(&out);
    // A config.txt of its own decides: a Pi 4-only one needs no Pi 3 files.
    std::fs::write(
        fw.join("config.txt"),
        "[pi4]\nkernel=u-boot-rpi4.bin\narmstub=armstub8-gic.bin\n",
    )
    .unwrap();
    for f in [
        "bootcode.bin",
        "start.elf",
        "fixup.dat",
        "bcm2710-rpi-3-b.dtb",
    ] {
        std::fs::remove_file(fw.join(f)).unwrap();
    }
    std::fs::write(fw.join("bcm2711-rpi-4-b.dtb"), b"dtb\n").unwrap();
    refused(
        "per-board U-Boot missing",
        &mut sd(),
        &["u-boot-rpi4.bin ([pi4] kernel=u-boot-rpi4.bin)"],
    );
    std::fs::write(fw.join("u-boot-rpi4.bin"), b"u-boot\n").unwrap();
    ok(&mut sd());
}

/// ISSUE #14.1: a system not configured for the format is refused, naming the mismatch and
/// the fix; --no-system-check builds it anyway.
#[test]
fn a_system_not_configured_for_the_format_is_refused() {
    let d = Demo::new();
    let out = d.dir().join("x.img");
    let fstab = {
        let etc = std::fs::read_link(d.toplevel().join("etc")).unwrap();
        let etc = d.root.join(etc.strip_prefix("/").unwrap());
        etc.join("fstab")
    };
    let good = std::fs::read_to_string(&fstab).unwrap();
    for (case, text, want) in [
        (
            "root by another label",
            good.replace("by-label/nixos", "by-label/root"),
            "its /etc/fstab mounts / from /dev/disk/by-label/root, but the image's `primary` \
             partition is /dev/disk/by-label/nixos",
        ),
        (
            "no /boot",
            good.lines()
                .filter(|l| !l.contains(" /boot "))
                .map(|l| format!("{l}\n"))
                .collect(),
            "its /etc/fstab mounts nothing at /boot",
        ),
        (
            "root as btrfs",
            good.replace(" / ext4 ", " / btrfs "),
            "mounts / as btrfs, but the image has ext4 there",
        ),
    ] {
        std::fs::write(&fstab, &text).unwrap();
        refused(
            case,
            &mut d.build(&out, &[]),
            &[
                "the system is not configured for `raw-efi`",
                want,
                "nixosModules.imgbuild",
                "--no-system-check",
            ],
        );
        assert_nothing_at(&out);
    }
    ok(&mut d.build(&out, &["--no-system-check"]));
    for p in [
        out.clone(),
        with_suffix(&out, ".json"),
        with_suffix(&out, ".bmap"),
    ] {
        std::fs::remove_file(p).unwrap();
    }
    // By UUID or PARTUUID is as good as by label.
    let m: serde_json::Value =
        serde_json::from_slice(&ok(&mut d.build(&out, &["--no-system-check", "--json"])).stdout)
            .unwrap();
    for p in [
        out.clone(),
        with_suffix(&out, ".json"),
        with_suffix(&out, ".bmap"),
    ] {
        std::fs::remove_file(p).unwrap();
    }
    let uuid = m["partitions"][1]["filesystem"]["uuid"].as_str().unwrap();
    let partuuid = m["partitions"][0]["guid"].as_str().unwrap().to_lowercase();
    std::fs::write(
        &fstab,
        good.replace("/dev/disk/by-label/nixos", &format!("UUID={uuid}"))
            .replace(
                "/dev/disk/by-label/ESP",
                &format!("/dev/disk/by-partuuid/{partuuid}"),
            ),
    )
    .unwrap();
    ok(&mut d.build(&out, &[]));
    // No fstab at all; a boot loader that is not the format's.
    std::fs::remove_file(&fstab).unwrap();
    refused(
        "no fstab",
        &mut d.build(&out, &[]),
        &["it has no /etc/fstab"],
    );
    std::fs::write(&fstab, &good).unwrap();
    let boot_json = d.toplevel().join("boot.json");
    let bj = std::fs::read_to_string(&boot_json).unwrap();
    let v: serde_json::Value = serde_json::from_str(&bj).unwrap();
    let mut v2 = v.clone();
    v2.as_object_mut().unwrap().remove("org.nixos.systemd-boot");
    std::fs::write(&boot_json, serde_json::to_string_pretty(&v2).unwrap()).unwrap();
    refused(
        "GRUB instead of systemd-boot",
        &mut d.build(&out, &[]),
        &["its boot loader is not systemd-boot"],
    );
}

#[test]
fn firmware_symlinks_leaving_the_firmware_directory_are_refused() {
    let d = Demo::new();
    // sd-aarch64 from the demo closure, relabelled aarch64, with a host --firmware directory.
    let boot_json = d.toplevel().join("boot.json");
    let text = std::fs::read_to_string(&boot_json).unwrap();
    std::fs::write(&boot_json, text.replace("x86_64-linux", "aarch64-linux")).unwrap();
    let fw = d.dir().join("fw");
    std::fs::create_dir_all(fw.join("overlays")).unwrap();
    complete_firmware(&fw);
    std::fs::remove_file(fw.join("start.elf")).unwrap();
    std::fs::write(d.dir().join("secret"), b"host secret\n").unwrap();
    let out = d.dir().join("sd.img.zst");
    let sd = |extra: &[&str]| {
        let mut a = d.args("sd-aarch64", &out, extra);
        a.extend([
            "--firmware".to_string(),
            fw.display().to_string(),
            // The demo system is configured for raw-efi.
            "--no-system-check".to_string(),
        ]);
        run(&a)
    };
    // Control: a symlink inside the directory is followed.
    std::os::unix::fs::symlink("start4.elf", fw.join("start.elf")).unwrap();
    ok(&mut sd(&[]));
    for p in [out.clone(), with_suffix(&out, ".json")] {
        std::fs::remove_file(p).unwrap();
    }
    previous(&out);
    for (case, link, target) in [
        (
            "firmware symlink to /etc/passwd",
            fw.join("evil"),
            "/etc/passwd",
        ),
        (
            "firmware symlink leaving the directory with ..",
            fw.join("overlays/up"),
            "../../secret",
        ),
    ] {
        std::os::unix::fs::symlink(target, &link).unwrap();
        refused(
            case,
            &mut sd(&[]),
            &[
                &format!("symlink `{}` -> `{target}`", link.display()),
                &format!("(neither in `{}` nor in the store)", fw.display()),
                "not in the Nix store",
            ],
        );
        assert_previous(&out);
        assert!(!exists(&d.dir().join("sd.img.tmp")));
        std::fs::remove_file(&link).unwrap();
    }
}

#[test]
fn names_over_255_bytes_are_refused() {
    let d = Demo::new();
    let out = d.dir().join("x.img");
    let f = d.dir().join("f");
    std::fs::write(&f, b"x\n").unwrap();
    // Host file systems cannot hold such a name: it comes from --add's destination.
    let long = "n".repeat(256);
    refused(
        "ext4 name of 256 bytes",
        &mut d.build(&out, &["--add", &format!("{}:/etc/{long}", f.display())]),
        &[
            &format!("`/etc/{long}`: name is 256 bytes long, ext4 allows at most 255"),
            "partition `primary`",
        ],
    );
    assert_nothing_at(&out);
    refused(
        "FAT name of 256 bytes",
        &mut d.build(
            &out,
            &["--add-boot", &format!("{}:/EFI/{long}", f.display())],
        ),
        &[
            &format!("partition `ESP`: file name `/EFI/{long}`"),
            "name is 256 UTF-16 units long, FAT allows 255",
        ],
    );
    assert_nothing_at(&out);
    // 255 bytes is fine.
    let ok_name = "n".repeat(255);
    ok(&mut d.build(
        &out,
        &[
            "--add",
            &format!("{}:/etc/{ok_name}", f.display()),
            "--free",
            "0",
        ],
    ));
}

#[test]
fn size_too_small_is_refused_before_writing_with_the_size_needed() {
    let d = Demo::new();
    let out = d.dir().join("x.img");
    previous(&out);
    let err = refused(
        "--size too small",
        &mut d.build(&out, &["--size", "10MiB"]),
        &["the image needs at least", "but --size is 10485760 bytes"],
    );
    assert_previous(&out);
    let needed: u64 = err
        .split("needs at least ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no size in {err}"));
    // The size named is the real minimum: one MiB less is refused with the same number, the
    // size itself builds.
    let less = needed - (1 << 20);
    refused(
        "--size one MiB too small",
        &mut d.build(&out, &["--size", &less.to_string()]),
        &[&format!(
            "needs at least {needed} bytes ({:.1} MiB), but --size is {less} bytes",
            needed as f64 / (1u64 << 20) as f64
        )],
    );
    assert_previous(&out);
    let fits = d.dir().join("fits.img");
    ok(&mut d.build(&fits, &["--size", &needed.to_string()]));
    assert_eq!(std::fs::metadata(&fits).unwrap().len(), needed);

    refused(
        "--size not a whole number of sectors",
        &mut d.build(&out, &["--size", &(needed + 1).to_string()]),
        &[&format!(
            "--size {} is not a multiple of the 512-byte sector",
            needed + 1
        )],
    );
    assert_previous(&out);
}

#[test]
fn output_directory_read_only_or_missing() {
    let d = Demo::new();
    let dir = d.out_dir("dir");
    refused(
        "output is a directory",
        &mut d.build(&dir, &[]),
        &[&format!("the output `{}` is a directory", dir.display())],
    );
    assert!(std::fs::read_dir(&dir).unwrap().next().is_none());

    let out = d.dir().join("x.img");
    std::fs::create_dir(with_suffix(&out, ".json")).unwrap();
    refused(
        "output manifest path is a directory",
        &mut d.build(&out, &[]),
        &[&format!(
            "would need `{}.json`, which is a directory",
            out.display()
        )],
    );
    assert!(!exists(&out) && !exists(&with_suffix(&out, ".tmp")));

    let missing = d.dir().join("missing/x.img");
    refused(
        "output directory missing",
        &mut d.build(&missing, &[]),
        &[&format!(
            "cannot be created in `{}`: No such file or directory",
            d.dir().join("missing").display()
        )],
    );

    // A directory the user cannot write to (root could: run as uid 65534).
    let ro = d.out_dir("ro");
    set_mode(&ro, 0o555);
    let o = ro.join("x.img");
    refused(
        "output directory not writable",
        &mut d.build_as_nobody(&o, &[]),
        &[&format!(
            "its directory `{}` is not writable (Permission denied",
            ro.display()
        )],
    );
    assert_nothing_at(&o);

    // A read-only file system (refuses root too).
    let rofs = d.dir().join("rofs");
    let _m = Tmpfs::mount(&rofs, "ro,size=1m");
    let o = rofs.join("x.img");
    refused(
        "output on a read-only file system",
        &mut d.build(&o, &[]),
        &[&format!(
            "its directory `{}` is not writable (Read-only file system",
            rofs.display()
        )],
    );
    assert_nothing_at(&o);

    // An existing read-only image is not replaced.
    let kept = d.dir().join("kept.img");
    previous(&kept);
    set_mode(&kept, 0o444);
    refused(
        "existing output is read-only",
        &mut d.build(&kept, &[]),
        &["kept.img` exists and is read-only (mode 0444)"],
    );
    assert_previous(&kept);
}

#[test]
fn output_equal_to_an_input_is_refused() {
    let d = Demo::new();
    let reg = d.root.join("closure-info/registration");
    let reg_sum = sha256(&reg);
    let key = d.dir().join("key");
    std::fs::write(&key, b"key\n").unwrap();
    let key_json = d.dir().join("key.json");
    std::fs::write(&key_json, b"{}\n").unwrap();
    let result = d.root.join("result");
    let closure_info = d.root.join("closure-info");
    let nix = d.root.join("nix");
    let add = |src: &Path| format!("{}:/etc/extra", src.display());
    let cases: Vec<(&str, PathBuf, Vec<String>, String)> = vec![
        (
            "output is the --closure symlink",
            result.clone(),
            vec![],
            format!("is the input --closure `{}`", result.display()),
        ),
        (
            "output inside --closure-info",
            reg.clone(),
            vec![],
            format!(
                "is inside the input --closure-info `{}`",
                closure_info.display()
            ),
        ),
        (
            "output inside the store root's nix/",
            d.root.join("nix/store/x.img"),
            vec![],
            format!("is inside `{}`, the Nix store being read", nix.display()),
        ),
        (
            "output in a new directory under the store root's nix/",
            d.root.join("nix/var/nix/x.img"),
            vec![],
            format!("is inside `{}`, the Nix store being read", nix.display()),
        ),
        (
            "output is an --add source",
            key.clone(),
            vec!["--add".into(), add(&key)],
            format!("is the input --add source `{}`", key.display()),
        ),
        (
            "output manifest is an --add source",
            key.clone(),
            vec!["--add".into(), add(&key_json)],
            format!(
                "would need `{}`, which is the input --add source `{}`",
                key_json.display(),
                key_json.display()
            ),
        ),
        (
            "kept raw image of a .zst output is an --add source",
            d.dir().join("key.zst"),
            vec![
                "--compress".into(),
                "zstd".into(),
                "--keep-raw".into(),
                "--add".into(),
                add(&key),
            ],
            format!(
                "would need `{}`, which is the input --add source",
                key.display()
            ),
        ),
    ];
    for (case, out, extra, want) in cases {
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        refused(case, &mut d.build(&out, &extra), &[&want]);
    }
    // Every input is as it was.
    assert_eq!(sha256(&reg), reg_sum);
    assert!(std::fs::symlink_metadata(&result)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(std::fs::read(&key).unwrap(), b"key\n");
    assert_eq!(std::fs::read(&key_json).unwrap(), b"{}\n");
    assert!(!exists(&d.root.join("nix/var")));
    assert!(!exists(&d.root.join("nix/store/x.img.tmp")));
    assert!(!exists(&d.dir().join("key.zst")) && !exists(&d.dir().join("key.tmp")));
}

#[test]
fn file_size_limit_reached() {
    let d = Demo::new();
    let out = d.dir().join("x.img");
    previous(&out);
    // `ulimit -f` in bash counts KiB. The kernel sends SIGXFSZ, which must not kill the build.
    let mut c = Command::new("bash");
    c.args(["-c", "ulimit -f 4096 && exec \"$0\" \"$@\""])
        .arg(bin())
        .args(d.args("raw-efi", &out, &[]))
        .env_remove("SOURCE_DATE_EPOCH");
    refused(
        "file size limit (ulimit -f)",
        &mut c,
        &[
            &format!("cannot write the output `{}.tmp`", out.display()),
            "ulimit -f",
            "EFBIG",
            "File too large",
        ],
    );
    assert_previous(&out);
}

#[test]
fn output_file_system_full() {
    let d = Demo::new();
    let small = d.dir().join("small");
    // The demo image needs about 620 KiB of real blocks.
    let _m = Tmpfs::mount(&small, "size=256k");
    let out = small.join("x.img");
    // The image is sparse: set_len succeeds, the writes run out of space.
    refused(
        "output file system full (ENOSPC)",
        &mut d.build(&out, &[]),
        &[
            &format!("cannot write the output `{}.tmp`", out.display()),
            "its file system is full (ENOSPC)",
            "No space left on device",
        ],
    );
    assert_nothing_at(&out);
    assert!(std::fs::read_dir(&small).unwrap().next().is_none());
}

/// A build that runs long enough to be interrupted: a 20 GiB sparse disk takes seconds to
/// hash (raw) or compress (zstd).
fn long_build(d: &Demo, out: &Path, extra: &[&str]) -> Command {
    let mut e = vec!["--size", "20GiB"];
    e.extend_from_slice(extra);
    d.build(out, &e)
}

#[test]
fn sigint_and_sigterm_mid_build_remove_the_temporary_files() {
    let d = Demo::new();
    for (case, sig, out, extra) in [
        (
            "SIGINT while writing or hashing",
            libc::SIGINT,
            d.dir().join("int.img"),
            vec![],
        ),
        (
            "SIGTERM while compressing",
            libc::SIGTERM,
            d.dir().join("term.img.zst"),
            vec!["--compress", "zstd"],
        ),
        (
            "SIGHUP while writing or hashing",
            libc::SIGHUP,
            d.dir().join("hup.img"),
            vec![],
        ),
    ] {
        previous(&out);
        let mut child = spawn(long_build(&d, &out, &extra));
        // The build is writing once its temporary file exists (with zstd, the compressed
        // one: the raw image is complete and being compressed).
        wait_for(&with_suffix(&out, ".tmp"), &mut child);
        std::thread::sleep(Duration::from_millis(100));
        signal(&child, sig);
        let (st, err) = stderr_of(child);
        // As a shell reports a process killed by the signal: 130, 143, 129.
        let want = [
            (libc::SIGINT, 130),
            (libc::SIGTERM, 143),
            (libc::SIGHUP, 129),
        ]
        .iter()
        .find(|(s, _)| *s == sig)
        .map(|(_, c)| *c);
        assert_eq!(st.code(), want, "{case}: {st}: {err}");
        assert!(
            err.contains(&format!(
                "interrupted: nothing was written at `{}`",
                out.display()
            )),
            "{case}: {err}"
        );
        eprintln!("[failure message] {case}: {}", err.trim_end());
        assert_previous(&out);
        if extra.contains(&"zstd") {
            let raw = d.dir().join("term.img");
            assert!(!exists(&raw) && !exists(&with_suffix(&raw, ".tmp")));
        }
    }
}

#[test]
fn sigkill_mid_build_leaves_no_image_and_the_next_run_succeeds() {
    let d = Demo::new();
    let out = d.dir().join("x.img");
    let mut child = spawn(long_build(&d, &out, &[]));
    wait_for(&with_suffix(&out, ".tmp"), &mut child);
    std::thread::sleep(Duration::from_millis(100));
    child.kill().unwrap();
    let (st, _) = stderr_of(child);
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&st),
        Some(libc::SIGKILL)
    );
    // A killed process cannot clean up: OUT.tmp may remain, but never OUT.
    assert!(!exists(&out) && !exists(&with_suffix(&out, ".json")));
    eprintln!(
        "[failure message] SIGKILL mid-build: no output; stale `{}` left: {}",
        with_suffix(&out, ".tmp").display(),
        exists(&with_suffix(&out, ".tmp"))
    );
    let o = ok(&mut d.build(&out, &["--free", "0", "--json"]));
    let m: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(m["sha256"], sha256(&out));
    assert!(!exists(&with_suffix(&out, ".tmp")));
}

#[test]
fn closure_file_changing_size_during_the_build() {
    // The file is scanned (its size planned) when the trees are built and copied later; a
    // writer appending to it all along makes the two sizes differ. Appending a byte every
    // 200 us, with several milliseconds between scan and copy, the race is lost only if the
    // appender never runs in that window; then the build legitimately succeeds (the file did
    // not change between scan and copy) and the attempt is repeated.
    let d = Demo::new();
    let out = d.dir().join("x.img");
    let readme = d.store(HELLO).join("share/doc/hello/README");
    let stop = Arc::new(AtomicBool::new(false));
    let appender = {
        let stop = stop.clone();
        let readme = readme.clone();
        std::thread::spawn(move || {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&readme)
                .unwrap();
            while !stop.load(Ordering::Relaxed) {
                f.write_all(b"x").unwrap();
                std::thread::sleep(Duration::from_micros(200));
            }
        })
    };
    let mut result = None;
    for _ in 0..5 {
        let o = d.build(&out, &[]).output().unwrap();
        if !o.status.success() {
            result = Some(o);
            break;
        }
        std::fs::remove_file(&out).unwrap();
        std::fs::remove_file(with_suffix(&out, ".json")).unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    appender.join().unwrap();
    let o = result.expect("the appender never ran between scan and copy in 5 builds");
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "`{}` changed since it was scanned: planned ",
            readme.display()
        )) && err.contains("bytes, found "),
        "{err}"
    );
    eprintln!(
        "[failure message] closure file changing size: {}",
        err.trim_end()
    );
    assert_nothing_at(&out);
}

#[test]
fn corrupt_boot_json() {
    let d = Demo::new();
    let out = d.dir().join("x.img");
    previous(&out);
    let boot_json = d.toplevel().join("boot.json");
    let orig = std::fs::read_to_string(&boot_json).unwrap();
    let logical = format!(
        "/nix/store/{}/boot.json",
        d.toplevel().file_name().unwrap().to_str().unwrap()
    );
    std::fs::write(
        &boot_json,
        "{\n  \"org.nixos.bootspec.v1\": {\n    \"init\": ,\n",
    )
    .unwrap();
    refused(
        "boot.json not JSON",
        &mut d.build(&out, &[]),
        &[&logical, "invalid JSON", "line 3 column 13"],
    );
    assert_previous(&out);
    let v: serde_json::Value = serde_json::from_str(&orig).unwrap();
    let mut no_kernel = v.clone();
    no_kernel["org.nixos.bootspec.v1"]
        .as_object_mut()
        .unwrap()
        .remove("kernel");
    std::fs::write(&boot_json, no_kernel.to_string()).unwrap();
    refused(
        "boot.json without a kernel",
        &mut d.build(&out, &[]),
        &[&logical, "missing field `kernel`"],
    );
    assert_previous(&out);
}

#[test]
fn corrupt_registration() {
    let d = Demo::new();
    let out = d.dir().join("x.img");
    previous(&out);
    let reg = d.root.join("closure-info/registration");
    let orig = std::fs::read_to_string(&reg).unwrap();
    let with_line = |n: usize, text: &str| {
        let mut lines: Vec<&str> = orig.lines().collect();
        lines[n - 1] = text;
        lines.join("\n") + "\n"
    };
    for (case, line, text, want) in [
        (
            "registration: bad NAR size",
            3,
            "twelve",
            "NAR size `twelve` is not a decimal number",
        ),
        (
            "registration: bad store path",
            6,
            "/usr/lib/evil",
            "invalid store path `/usr/lib/evil`",
        ),
    ] {
        std::fs::write(&reg, with_line(line, text)).unwrap();
        refused(
            case,
            &mut d.build(&out, &[]),
            &[&format!("{}:{line}: ", reg.display()), want],
        );
        assert_previous(&out);
    }
}

/// The Nix database imgbuild writes into the demo image: a real one, valid for the demo store.
fn real_db(d: &Demo) -> Vec<u8> {
    let img = d.dir().join("db-source.img");
    let o = ok(&mut d.build(&img, &["--free", "0", "--json"]));
    let m: serde_json::Value = serde_json::from_slice(&o.stdout).expect("the manifest");
    let root = &m["partitions"][1];
    let fs = d.dir().join("db-source.ext4");
    extract(
        &img,
        root["start"].as_u64().expect("start"),
        root["filesystem"]["size"].as_u64().expect("fs_size"),
        &fs,
    );
    let db = d.dir().join("db-source.sqlite");
    ok(Command::new("debugfs")
        .arg("-R")
        .arg(format!("dump /nix/var/nix/db/db.sqlite {}", db.display()))
        .arg(&fs));
    for p in [img.clone(), with_suffix(&img, ".json"), fs] {
        std::fs::remove_file(p).expect("removing a scratch file");
    }
    std::fs::read(&db).expect("debugfs dumped the database")
}

#[test]
fn corrupt_nix_database() {
    let d = Demo::new();
    let out = d.dir().join("x.img");
    previous(&out);
    let db = d.root.join("nix/var/nix/db/db.sqlite");
    let real = real_db(&d);
    assert!(real.starts_with(b"SQLite format 3\0"));
    let page = u16::from_be_bytes([real[16], real[17]]) as usize;
    assert!(
        real.len() >= 3 * page,
        "{} bytes, pages of {page}",
        real.len()
    );
    std::fs::create_dir_all(db.parent().unwrap()).unwrap();
    // Without --closure-info the database is where the closure comes from.
    let args = set_flag(&d.args("raw-efi", &out, &[]), "--closure-info", None);

    // Control: the real database works (into another output).
    std::fs::write(&db, &real).unwrap();
    let good = d.dir().join("good.img");
    let o = ok(run(&set_flag(&args, "-o", Some(&good))).args(["--json", "--free", "0"]));
    let m: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(m["closure_source"], "database");

    let mut pages_garbled = real.clone();
    for (i, b) in pages_garbled[page..].iter_mut().enumerate() {
        *b = (i * 7 % 251) as u8;
    }
    for (case, bytes, want) in [
        (
            "Nix database: not SQLite",
            (0..8192u32)
                .map(|i| (i * 7 % 253) as u8)
                .collect::<Vec<_>>(),
            "file is not a database",
        ),
        (
            "Nix database: pages after the first garbled",
            pages_garbled,
            "database disk image is malformed",
        ),
        (
            "Nix database: truncated to its first page",
            real[..page].to_vec(),
            "database disk image is malformed",
        ),
        (
            "Nix database: empty file",
            Vec::new(),
            "no such table: ValidPaths",
        ),
    ] {
        std::fs::write(&db, &bytes).unwrap();
        refused(
            case,
            &mut run(&args),
            &[&format!("nix database {}: ", db.display()), want],
        );
        assert_previous(&out);
    }
}

/// ISSUE #14.2: numbers and options mean what was typed, or are refused by name.
#[test]
fn options_mean_what_was_typed() {
    let d = Demo::new();
    let out = d.dir().join("o.img");
    // clap refuses these itself (exit code 2, before anything is read).
    for (case, extra, want) in [
        (
            "zstd level out of range",
            vec!["--level", "99"],
            "99 is not in 1..=22",
        ),
        (
            "--free next to --size",
            vec!["--size", "2GiB", "--free", "1GiB"],
            "cannot be used with",
        ),
        (
            "a decimal unit that does not exist",
            vec!["--size", "3Gi"],
            "unknown size unit",
        ),
    ] {
        let o = d.build(&out, &extra).output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{case}: {err}");
        assert!(err.contains(want), "{case}: {err}");
        assert_nothing_at(&out);
    }
    let key = d.dir().join("key");
    std::fs::write(&key, b"k").unwrap();
    let mut gpt_disk_id = run(&d.args(
        "build",
        &out,
        &["--format", "raw-efi", "--disk-id", "0x1234abcd"],
    ));
    refused(
        "--disk-id on a GPT format",
        &mut gpt_disk_id,
        &["--disk-id: format `raw-efi` has a GPT table"],
    );
    let fw = d.out_dir("fw");
    let mut fw_on_efi = run(&d.args(
        "build",
        &out,
        &[
            "--format",
            "raw-efi",
            "--firmware",
            &fw.display().to_string(),
        ],
    ));
    refused(
        "--firmware on raw-efi",
        &mut fw_on_efi,
        &["--firmware: format `raw-efi` has no Raspberry Pi firmware partition"],
    );
    refused(
        "--add-boot with a mode",
        &mut d.build(
            &out,
            &["--add-boot", &format!("{}:/EFI/k:0600:0:0", key.display())],
        ),
        &["FAT, which keeps no modes or owners"],
    );
    for bad in ["-1", "99999999999"] {
        refused(
            &format!("SOURCE_DATE_EPOCH={bad}"),
            d.build(&out, &[]).env("SOURCE_DATE_EPOCH", bad),
            &["SOURCE_DATE_EPOCH", "outside the times"],
        );
    }
    assert_nothing_at(&out);

    // GB is decimal, GiB binary; -j 0 is all cores.
    for (size, bytes) in [("2GB", 2_000_000_000u64), ("2GiB", 2 << 30)] {
        let o = ok(&mut d.build(&out, &["--size", size, "-j", "0", "--json"]));
        let m: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(m["disk_size"].as_u64(), Some(bytes), "--size {size}");
        assert_eq!(std::fs::metadata(&out).unwrap().len(), bytes);
    }
}
