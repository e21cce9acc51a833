//! Helpers: running the binary and the oracle tools, extracting partitions.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

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
