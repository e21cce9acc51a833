//! Helpers: running the binary and the oracle tools, extracting partitions.

#![allow(dead_code)]

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("crates/cli is two levels below the workspace root")
        .to_path_buf()
}

pub fn demo() -> PathBuf {
    workspace().join("fixtures/demo")
}

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_imgbuild"))
}

/// `imgbuild ARGS`, with a fixed environment (no SOURCE_DATE_EPOCH unless given).
pub fn imgbuild(args: &[&str]) -> Command {
    let mut c = Command::new(bin());
    c.args(args).env_remove("SOURCE_DATE_EPOCH");
    c
}

/// Runs `cmd`, asserting it succeeds (with its output in the message otherwise).
pub use imgbuild_testutil::run_output as ok;

#[track_caller]
pub fn fails(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(!out.status.success(), "{cmd:?} unexpectedly succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs `cmd`, asserting it succeeds; its stdout.
pub use imgbuild_testutil::run as stdout;

pub fn sh(script: &str) -> Command {
    let mut c = Command::new("bash");
    c.args(["-euo", "pipefail", "-c", script]);
    c
}

/// The committed aarch64 demo closure (for sd-aarch64).
pub fn demo_aarch64() -> PathBuf {
    workspace().join("fixtures/demo-aarch64")
}

/// The arguments that build from the committed demo closure of the format's architecture.
pub fn demo_args(format: &str, out: &Path) -> Vec<String> {
    let d = if format == "sd-aarch64" {
        demo_aarch64()
    } else {
        demo()
    };
    closure_args(format, &d, out)
}

/// The arguments that build `format` from a closure laid out like the demo's at `d` (`result`,
/// `nix/store`, `closure-info`).
pub fn closure_args(format: &str, d: &Path, out: &Path) -> Vec<String> {
    vec![
        format.to_string(),
        "--closure".into(),
        d.join("result").display().to_string(),
        "--store-root".into(),
        d.display().to_string(),
        "--closure-info".into(),
        d.join("closure-info").display().to_string(),
        "-o".into(),
        out.display().to_string(),
    ]
}

pub fn run_demo(format: &str, out: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args = demo_args(format, out);
    args.extend(extra.iter().map(|s| s.to_string()));
    args.push("--json".into());
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = ok(&mut imgbuild(&refs));
    serde_json::from_slice(&o.stdout).expect("--json prints the manifest")
}

/// Copy `len` bytes at `offset` of `img` into a new sparse file.
pub fn extract(img: &Path, offset: u64, len: u64, dest: &Path) {
    ok(Command::new("dd")
        .arg(format!("if={}", img.display()))
        .arg(format!("of={}", dest.display()))
        .args([
            "bs=1M",
            "iflag=skip_bytes,count_bytes",
            "conv=sparse",
            "status=none",
        ])
        .arg(format!("skip={offset}"))
        .arg(format!("count={len}")));
}

pub fn sha256(path: &Path) -> String {
    let out = stdout(Command::new("sha256sum").arg(path));
    out.split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// What [`measured`] saw of a run.
pub struct Measured {
    /// The exit code; `None` when killed at the time limit.
    pub code: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: String,
    /// The child's own peak resident memory in KiB, as GNU time reports it (`%M`).
    pub max_rss_kib: u64,
    pub elapsed: Duration,
}

/// Runs `cmd` to its end under GNU time (`/usr/bin/time -f %M`, Debian's package `time`):
/// the child's own peak memory, where `wait4`'s `ru_maxrss` would carry the test process's
/// peak (and so the parallel tests') across the fork and exec. Its output and time too; its
/// process group is killed after `limit` (a build blocked on a FIFO would otherwise hang the
/// test).
pub fn measured(cmd: &Command, limit: Duration) -> Measured {
    let dir = tempfile::tempdir().unwrap();
    let rss = dir.path().join("rss");
    let mut c = Command::new("/usr/bin/time");
    c.arg("-f")
        .arg("%M")
        .arg("-o")
        .arg(&rss)
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    if let Some(d) = cmd.get_current_dir() {
        c.current_dir(d);
    }
    c.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let start = Instant::now();
    let mut child = c
        .spawn()
        .unwrap_or_else(|e| panic!("running {cmd:?} under /usr/bin/time (package `time`): {e}"));
    let pgid = libc::pid_t::try_from(child.id()).expect("a pid fits pid_t");
    let mut out = child.stdout.take().expect("piped");
    let mut err = child.stderr.take().expect("piped");
    let out_t = std::thread::spawn(move || {
        let mut b = Vec::new();
        std::io::Read::read_to_end(&mut out, &mut b).unwrap();
        b
    });
    let err_t = std::thread::spawn(move || {
        let mut b = Vec::new();
        std::io::Read::read_to_end(&mut err, &mut b).unwrap();
        b
    });
    let mut killed = false;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if !killed && start.elapsed() > limit {
            // SAFETY: kill() has no memory-safety preconditions; the group is time's (it
            // is not reaped yet) and the build's.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
            killed = true;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let elapsed = start.elapsed();
    let max_rss_kib = if killed {
        0
    } else {
        std::fs::read_to_string(&rss)
            .unwrap()
            .lines()
            .last()
            .and_then(|l| l.trim().parse().ok())
            .expect("GNU time writes the peak RSS in KiB last")
    };
    Measured {
        code: if killed { None } else { status.code() },
        stdout: out_t.join().unwrap(),
        stderr: String::from_utf8_lossy(&err_t.join().unwrap()).into_owned(),
        max_rss_kib,
        elapsed,
    }
}

/// A refused run: exit code 1 and stderr one `imgbuild: error:` line containing every `want`.
#[track_caller]
pub fn assert_one_error_line(case: &str, code: Option<i32>, err: &str, want: &[&str]) {
    assert_eq!(
        code,
        Some(1),
        "{case}: exit {code:?} instead of 1; stderr:\n{err}"
    );
    assert!(
        err.starts_with("imgbuild: error: ") && err.lines().count() == 1,
        "{case}: not one error line:\n{err}"
    );
    for w in want {
        assert!(
            err.contains(w),
            "{case}: stderr does not name {w:?}:\n{err}"
        );
    }
}

/// SHA-256 of `bytes` by sha256sum (not imgbuild's own hashing).
pub fn sha256_of(bytes: &[u8]) -> String {
    use std::io::Write;
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("running sha256sum");
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(bytes)
        .expect("writing to sha256sum");
    let out = child.wait_with_output().expect("sha256sum output");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// The closure's store paths (base names) from `root/closure-info/store-paths`, sorted.
pub fn closure_names(root: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(root.join("closure-info/store-paths")).unwrap();
    let mut v: Vec<String> = text
        .lines()
        .map(|l| l.trim_start_matches("/nix/store/").to_string())
        .collect();
    v.sort();
    v
}

/// A writable copy of the demo with the sample stub in its systemd and a `PRETTY_NAME` in its
/// os-release: (closure root, toplevel directory, store directory).
pub fn demo_with_stub(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let copy = dir.join("demo");
    ok(Command::new("cp").arg("-a").arg(demo()).arg(&copy));
    ok(Command::new("chmod").args(["-R", "u+w"]).arg(&copy));
    let top = std::fs::read_link(copy.join("result")).unwrap();
    let top = copy.join(top.strip_prefix("/").unwrap());
    let store = copy.join("nix/store");
    let systemd = std::fs::read_link(top.join("systemd")).unwrap();
    let efi = copy
        .join(systemd.strip_prefix("/").unwrap())
        .join("lib/systemd/boot/efi");
    std::fs::write(efi.join("linuxx64.efi.stub"), imgbuild_uki::sample::stub()).unwrap();
    let etc = std::fs::read_link(top.join("etc")).unwrap();
    let osrel = copy.join(etc.strip_prefix("/").unwrap()).join("os-release");
    let mut text = std::fs::read_to_string(&osrel).unwrap();
    text.push_str("PRETTY_NAME=\"NixOS 24.05 (Uakari)\"\n");
    std::fs::write(&osrel, text).unwrap();
    (copy, top, store)
}

/// A writable copy of the demo made an appliance of version `version` (image id `demo`):
/// the sample stub (as [`demo_with_stub`]) and boot.json's `"org.imgbuild.v1"` with the
/// record imgbuild's module writes (`appliance`, `ukiFile`); returns the closure root.
pub fn demo_appliance(dir: &Path, version: &str) -> PathBuf {
    let (root, top, _) = demo_with_stub(dir);
    let bj = top.join("boot.json");
    let mut doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&bj).unwrap()).unwrap();
    doc["org.imgbuild.v1"] = serde_json::json!({
        "ukiFile": format!("demo_{version}.efi"),
        "appliance": {
            "imageId": "demo", "imageVersion": version,
            "systemdInitrd": true, "dmVerity": true
        }
    });
    std::fs::write(&bj, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
    root
}

/// `sfdisk --json IMG`'s partitions.
pub fn sfdisk_partitions(img: &Path) -> Vec<serde_json::Value> {
    let sf: serde_json::Value =
        serde_json::from_str(&stdout(Command::new("sfdisk").arg("--json").arg(img))).unwrap();
    sf["partitiontable"]["partitions"]
        .as_array()
        .expect("sfdisk lists the partitions")
        .clone()
}

/// `imgbuild inspect --json IMG`, parsed.
pub fn inspect_json(img: &Path) -> serde_json::Value {
    let out = ok(&mut imgbuild(&[
        "inspect",
        "--json",
        &img.display().to_string(),
    ]));
    serde_json::from_slice(&out.stdout).expect("inspect --json prints JSON")
}
