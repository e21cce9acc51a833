//! The reader entry points one case exercises on a mutated image.

use std::path::Path;

use imgbuild_inspect::{Image, Kind, Limits, OpenOptions};

use super::normalise;

/// What one image case ran into.
#[derive(Default)]
pub(super) struct Seen {
    pub accepted: bool,
    pub errors: Vec<String>,
    pub calls: Vec<&'static str>,
}

/// The reader entry points a user has, on the image at `path`: open, then in turn inspect,
/// ls (every partition, recursively), cat (a few files), --sizes, the deep read of
/// everything (`inspect --deep`), cp (a directory), diff (against itself).
pub(super) fn exercise(path: &Path, scratch: &Path, n: u64) -> Seen {
    let mut seen = Seen::default();
    let opts = OpenOptions {
        limits: Limits {
            max_copy_bytes: Some(64 << 20),
            max_image_size: 8 << 30,
            ..Limits::default()
        },
        temp_dir: Some(scratch.to_path_buf()),
        ..OpenOptions::default()
    };
    let mut err =
        |call: &'static str, e: String| seen.errors.push(format!("{call}: {}", normalise(&e)));
    seen.calls.push("open");
    let img = match Image::open_with(path, &opts) {
        Ok(i) => i,
        Err(e) => {
            err("open", e.to_string());
            return seen;
        }
    };
    seen.accepted = true;
    // One entry point per case, in turn (each repeats the open and most of `inspect`).
    let call = ["inspect", "ls", "cat", "sizes", "read_all", "cp", "diff"][(n % 7) as usize];
    seen.calls.push(call);
    match call {
        "inspect" => {
            let report = img.inspect();
            let _ = serde_json::to_string(&report);
            for w in report.warnings.iter().take(4) {
                err("inspect", w.clone());
            }
        }
        "ls" | "cat" => walk_files(&img, call, &mut err),
        "sizes" => {
            if let Err(e) = img.sizes() {
                err("sizes", e.to_string());
            }
        }
        "read_all" => {
            for r in img.read_all() {
                for e in r.errors.iter().take(2) {
                    err("read_all", e.clone());
                }
            }
        }
        "cp" => copy_root(&img, scratch, n, &mut err),
        _ => {
            if let Err(e) = imgbuild_inspect::diff(&img, &img) {
                err("diff", e.to_string());
            }
        }
    }
    seen
}

/// `ls` (every partition, recursively) or `cat` (up to three files of each, 1 MiB each).
fn walk_files(img: &Image, call: &str, err: &mut dyn FnMut(&'static str, String)) {
    let numbers: Vec<u32> = img.partitions().map(|p| p.entry.number).collect();
    for n in &numbers {
        let Ok(fs) = img.filesystem(&n.to_string()) else {
            continue;
        };
        let mut files = Vec::new();
        let r = fs.walk(b"/", |p, e, depth| {
            if e.kind == Kind::File && files.len() < 3 && depth <= 3 {
                files.push(p.to_vec());
            }
            if e.kind == Kind::Symlink {
                let _ = fs.read_link(p);
            }
            Ok(call == "ls" || files.len() < 3)
        });
        if let Err(e) = r {
            err("ls", e.to_string());
        }
        for f in files.iter().filter(|_| call == "cat") {
            if let Err(e) = fs.read_to_vec(f, 1 << 20) {
                err("cat", e.to_string());
            }
        }
    }
}

/// `cp` of the root filesystem's `/etc` (or `/`) into a new directory under `scratch`,
/// removed again.
fn copy_root(img: &Image, scratch: &Path, n: u64, err: &mut dyn FnMut(&'static str, String)) {
    let Ok(root) = img.root_filesystem() else {
        return;
    };
    let _ = root.canonicalize(b"/nix/var/nix/profiles/system");
    // A new destination per case: one copy that could not be removed must not
    // turn every later `cp` into "exists; refusing to overwrite".
    let dest = scratch.join(format!("cp-{n}"));
    let from: &[u8] = if root.exists(b"/etc").unwrap_or(false) {
        b"/etc"
    } else {
        b"/"
    };
    if let Err(e) = imgbuild_inspect::copy_out(root, from, &dest) {
        err("cp", e.to_string());
    }
    // Copies keep the image's modes (0555 store directories): writable again first.
    let _ = std::process::Command::new("chmod")
        .args(["-R", "u+rwX"])
        .arg(&dest)
        .status();
    let _ = std::fs::remove_dir_all(&dest);
}
