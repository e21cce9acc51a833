//! `cargo xtask ci`: the checks before the boot tests (formatting, clippy, docs, tidy and its
//! negative control, actionlint, the workspace tests, the nix wiring tests, a short fuzz run
//! and its negative control), then `ci-boot`; one summary.

use anyhow::{bail, Result};
use std::path::Path;

use super::{run, CiArgs};
use crate::fixture::{self, Arch};
use crate::util::{self, cmd, Timer};

/// Every GitHub Actions workflow in the repository (the template's included).
fn shipped_workflows(root: &Path) -> Result<Vec<String>> {
    let mut git = cmd("git");
    git.current_dir(root).args([
        "ls-files",
        "--",
        ".github/workflows/*",
        "*/.github/workflows/*",
    ]);
    let files: Vec<String> = util::output_quiet(&mut git)?
        .lines()
        .filter(|f| f.ends_with(".yml") || f.ends_with(".yaml"))
        .map(str::to_string)
        .collect();
    anyhow::ensure!(!files.is_empty(), "no workflow files found by git ls-files");
    Ok(files)
}

/// The checks of `cargo xtask ci` before the boot tests, each with its name.
fn checks(root: &Path) -> Result<Vec<(&'static str, std::process::Command)>> {
    let cargo = |args: &[&str], env: &[(&str, &str)]| {
        let mut c = cmd("cargo");
        c.current_dir(root).args(args);
        for (k, v) in env {
            c.env(k, v);
        }
        c
    };
    let mut nix_tests = cmd("bash");
    nix_tests
        .current_dir(root)
        .arg("nix/tests/run.sh")
        .arg(util::target_dir().join("release/imgbuild"));
    let mut actionlint = cmd("actionlint");
    actionlint.current_dir(root).args(shipped_workflows(root)?);
    // The negative control: a target made to panic must fail the fuzz run.
    let mut fuzz_control = cmd("bash");
    fuzz_control.current_dir(root).args([
        "-c",
        "! XTASK_FUZZ_SABOTAGE=format cargo xtask fuzz format --seconds 2 >/dev/null 2>&1",
    ]);
    Ok(vec![
        (
            "cargo fmt --all --check",
            cargo(&["fmt", "--all", "--", "--check"], &[]),
        ),
        (
            "cargo clippy --workspace --all-targets -D warnings",
            cargo(
                &[
                    "clippy",
                    "--workspace",
                    "--all-targets",
                    "--",
                    "-D",
                    "warnings",
                ],
                &[],
            ),
        ),
        (
            "cargo doc --workspace --no-deps (-D warnings)",
            cargo(
                &["doc", "--workspace", "--no-deps"],
                &[("RUSTDOCFLAGS", "-D warnings")],
            ),
        ),
        (
            "cargo xtask tidy (ARCHITECTURE.md's promises)",
            cargo(&["xtask", "tidy"], &[]),
        ),
        // Its negative control: a generated sabotaged tree must trip every check.
        (
            "tidy negative control (a sabotaged tree trips every check)",
            cargo(&["xtask", "tidy", "--negative-control"], &[]),
        ),
        ("actionlint (every GitHub workflow shipped)", actionlint),
        (
            "cargo test --workspace --no-fail-fast",
            cargo(&["test", "--workspace", "--no-fail-fast"], &[]),
        ),
        ("nix wiring tests (nix/tests/run.sh)", nix_tests),
        (
            "cargo xtask fuzz all --seconds 8 (every reader, a short budget)",
            cargo(&["xtask", "fuzz", "all", "--seconds", "8"], &[]),
        ),
        (
            "fuzz negative control (a sabotaged target fails the run)",
            fuzz_control,
        ),
    ])
}

/// Runs every check, even after a failure: the summary lines and the names that failed.
fn run_checks(checks: Vec<(&'static str, std::process::Command)>) -> (Vec<String>, Vec<String>) {
    let mut failed = Vec::new();
    let mut lines = Vec::new();
    for (name, mut c) in checks {
        eprintln!("xtask ci: === {name}");
        let t = Timer::start();
        let ok = util::run(&mut c).is_ok();
        lines.push(format!(
            "  {} {name:<60} {:>6.1} s",
            if ok { "ok  " } else { "FAIL" },
            t.secs()
        ));
        if !ok {
            failed.push(name.to_string());
        }
    }
    (lines, failed)
}

/// `cargo xtask ci`: what `.ci/run` runs. Formatting, clippy, docs and the workspace tests,
/// then [`run`] (the boot tests). Every step runs even after a failure; one summary at the end.
pub fn run_all(args: CiArgs) -> Result<()> {
    let root = util::repo_root();
    // The e2e tests and the nix wiring tests use the Nix-built fixture closures and the
    // release binary: build them first (fixtures are cached in target/fixtures).
    for arch in [Arch::X86_64, Arch::Aarch64] {
        eprintln!("xtask ci: === fixture {}", arch.name());
        fixture::ensure_built(arch, &fixture::default_dir(arch))?;
    }
    util::run(
        cmd("cargo")
            .current_dir(&root)
            .args(["build", "--release", "-p", "imgbuild"]),
    )?;
    let checks = checks(&root)?;
    let total = Timer::start();
    let (lines, mut failed) = run_checks(checks);
    eprintln!("xtask ci: === boot tests (cargo xtask ci-boot)");
    if let Err(e) = run(args) {
        eprintln!("xtask ci: {e:#}");
        failed.push("boot tests".to_string());
    }
    println!("\nxtask ci summary ({:.0} s in all):", total.secs());
    for l in &lines {
        println!("{l}");
    }
    println!(
        "  {} boot tests (see the ci-boot summary above)",
        if failed.iter().any(|f| f == "boot tests") {
            "FAIL"
        } else {
            "ok  "
        }
    );
    let n = lines.len() + 1;
    println!("ci: {} passed, {} failed", n - failed.len(), failed.len());
    if !failed.is_empty() {
        bail!("failed: {}", failed.join(", "));
    }
    Ok(())
}
