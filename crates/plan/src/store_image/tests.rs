//! The store image of the committed demo closure, judged by squashfs-tools and, as root, by
//! the kernel's squashfs driver.

use super::*;
use crate::format::Format;
use crate::inputs::InputSpec;
use crate::Options;
use std::process::Command;

fn demo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/demo")
}

fn inputs() -> Inputs {
    let d = demo();
    let spec = InputSpec {
        closure: d.join("result"),
        store_root: d.clone(),
        closure_info: Some(d.join("closure-info")),
    };
    Inputs::load(&spec, Some(1)).expect("the demo closure loads")
}

/// The store image of the demo, written on a pool of `threads`.
fn build(inputs: &Inputs, dir: &Path, threads: usize) -> StoreImage {
    let format = Format::load("raw-efi").unwrap();
    let mut opts = Options::new(dir.join("out.img"));
    opts.epoch = 1_700_000_000;
    let cx = Context::new(&format, inputs, &opts).unwrap();
    let path = temp_path(&dir.join(format!("out-{threads}.iso")));
    let cancel = AtomicBool::new(false);
    crate::pool(threads)
        .unwrap()
        .install(|| write(&cx, inputs, &path, &crate::Quiet, &cancel))
        .unwrap()
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn store_image_is_the_closure_for_any_thread_count() {
    let inputs = inputs();
    let dir = tempfile::tempdir().unwrap();
    let one = build(&inputs, dir.path(), 1);
    let three = build(&inputs, dir.path(), 3);
    assert_eq!(one.size, std::fs::metadata(&one.path).unwrap().len());
    assert_eq!(one.size % 4096, 0);
    assert_eq!(
        std::fs::read(&one.path).unwrap(),
        std::fs::read(&three.path).unwrap(),
        "the thread count changed the store image"
    );

    let s = run(Command::new("unsquashfs").arg("-s").arg(&one.path));
    assert!(s.contains("Compression zstd"), "{s}");
    assert!(s.contains("Block size 1048576"), "{s}");
    assert!(s.contains("compression-level 19"), "{s}");

    // `unsquashfs -l`: exactly the closure's base names and the registration at the top.
    let l = run(Command::new("unsquashfs").arg("-l").arg(&one.path));
    let mut top: Vec<&str> = l
        .lines()
        .filter_map(|p| p.strip_prefix("squashfs-root/"))
        .filter(|p| !p.contains('/'))
        .collect();
    top.sort_unstable();
    let mut want: Vec<String> = inputs
        .closure
        .paths
        .iter()
        .map(|p| p.path.base_name().to_string())
        .chain([REGISTRATION.to_string()])
        .collect();
    want.sort_unstable();
    assert_eq!(top, want);

    // Owners root, store files at mtime 1 (1970-01-01 00:00:01), as `-lln` shows them.
    let lln = run(Command::new("unsquashfs")
        .args(["-lln", "-UTC"])
        .arg(&one.path));
    for line in lln.lines().filter(|l| l.contains("squashfs-root/")) {
        assert!(line.contains(" 0/0 "), "not root-owned: {line}");
        if line.contains("squashfs-root/") && !line.ends_with("squashfs-root") {
            let name = line.rsplit(' ').next().unwrap_or_default();
            let is_top_reg = name == "squashfs-root/nix-path-registration";
            let is_link = line.starts_with('l');
            if !is_top_reg && !is_link {
                assert!(line.contains("1970-01-01 00:00"), "{line}");
            }
        }
    }

    let path = one.path.clone();
    drop(one);
    assert!(!path.exists(), "dropping the image removes its file");
    drop(three);
}

/// As root: the kernel mounts the image, and every file equals the closure's.
#[test]
fn store_image_mounts_and_equals_the_closure() {
    // SAFETY: getuid has no preconditions.
    if unsafe { libc::getuid() } != 0 {
        eprintln!("skipped: mounting needs root");
        return;
    }
    let inputs = inputs();
    let dir = tempfile::tempdir().unwrap();
    let img = build(&inputs, dir.path(), 2);
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    run(Command::new("mount")
        .args(["-t", "squashfs", "-o", "loop,ro"])
        .arg(&img.path)
        .arg(&mnt));
    let result = std::panic::catch_unwind(|| {
        for p in &inputs.closure.paths {
            let base = p.path.base_name().to_string();
            run(Command::new("diff")
                .args(["-r", "--no-dereference"])
                .arg(inputs.store.host_path(&p.path))
                .arg(mnt.join(&base)));
        }
        let reg = std::fs::read_to_string(mnt.join(REGISTRATION)).unwrap();
        assert_eq!(reg, inputs.closure.registration_text());
        // Modes as Nix canonicalises them: no write bits anywhere in the store paths.
        let modes = run(Command::new("find").arg(&mnt).args([
            "-mindepth",
            "2",
            "-perm",
            "/0222",
            "-not",
            "-type",
            "l",
        ]));
        assert_eq!(modes, "", "writable store files");
    });
    run(Command::new("umount").arg(&mnt));
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}
