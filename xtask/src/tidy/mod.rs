//! `cargo xtask tidy`: the promises of ARCHITECTURE.md and of the size rules, checked rather
//! than hoped (as rust-analyzer's `tidy` test does). Each problem is reported under the name
//! of its check:
//! - `deps`: the crate dependency table in ARCHITECTURE.md equals `cargo metadata`'s workspace
//!   dependencies, both ways;
//! - `too-many-arguments`: no allowance of clippy's too-many-arguments lint anywhere (a
//!   context struct instead);
//! - `debug-as-data`: no `format!` whose whole template is one `{…:?}` (a value's Debug output
//!   turned into a string that something then stores or hashes; test code excepted);
//! - `crate-docs`: every crate's `lib.rs`/`main.rs` opens with crate docs (`//!`);
//! - `cast-lints`: the crates that encode or read bytes (see [`CAST_CHECKED`]) turn on
//!   clippy's lints against casts that truncate, lose a sign or wrap;
//! - `missing-docs`: every library crate's `lib.rs` has `#![warn(missing_docs)]` (or deny);
//! - `long-file`: no non-test `.rs` file over [`sizes::MAX_FILE_LINES`] lines unless one of
//!   its first 15 lines is `// tidy:long-file: <reason>`;
//! - `long-fn`: no non-test function over [`sizes::MAX_FN_LINES`] lines (from `fn` to its
//!   closing brace) unless the line directly above it (above its docs and attributes) is
//!   `// tidy:long-fn: <reason>`;
//! - `import-cycle`: no circle between the files (modules) of one crate (see [`imports`]);
//! - `ids`: ids are derived only in `crates/plan/src/ids.rs` (no `derive_id(` call elsewhere
//!   in non-test code);
//! - `parse`: a non-test source file that does not parse.
//!
//! Test code is: files under a `tests/`, `benches/` or `examples/` directory, files named
//! `tests.rs` or `tests_*.rs`, and in other files `#[cfg(test)]` modules and items and
//! `#[test]` functions. The sizes, import circles and ids are checked outside test code only.
//!
//! `cargo xtask tidy --negative-control` (and a unit test) runs the checks on a small
//! sabotaged tree, generated in a temporary directory, with one violation of each kind, and
//! fails unless every check reports its violation.

mod control;
mod deps;
mod imports;
mod lines;
mod sizes;
mod source;
#[cfg(test)]
mod tests;

use anyhow::{bail, Result};
use std::fmt;
use std::path::Path;

use crate::util;

/// The crates that encode on-disk bytes, and `inspect`, which reads hostile ones: every
/// narrowing cast in them is spelled out.
pub(crate) const CAST_CHECKED: &[&str] = &[
    "blockio",
    "diskmap",
    "ext4",
    "fat",
    "partition",
    "compress",
    "container",
    "flash",
    "squashfs",
    "inspect",
    "grub",
    "verity",
    "uki",
    "iso9660",
    "tar",
];

/// One violation, under the name of the check that found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Problem {
    /// The check's name (`long-fn`, `import-cycle`, ...).
    pub check: &'static str,
    /// Where and what.
    pub msg: String,
}

impl Problem {
    fn new(check: &'static str, msg: String) -> Problem {
        Problem { check, msg }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] {}", self.check, self.msg)
    }
}

/// What one run found.
pub(crate) struct Report {
    /// Every violation, in check order.
    pub problems: Vec<Problem>,
    /// Workspace crates seen by `cargo metadata`.
    pub crates: usize,
    /// Source files read.
    pub files: usize,
}

/// Every check on the tree at `root` (a workspace with `ARCHITECTURE.md`).
pub(crate) fn check(root: &Path) -> Result<Report> {
    let mut problems = Vec::new();
    let crates = deps::check(root, &mut problems)?;
    let files = source::load(root, &mut problems)?;
    lines::check(&files, &mut problems);
    sizes::check(&files, &mut problems);
    imports::check(&files, &mut problems);
    lines::check_ids(&files, &mut problems);
    Ok(Report {
        problems,
        crates,
        files: files.len(),
    })
}

/// `cargo xtask tidy`'s options.
#[derive(clap::Args)]
pub struct TidyArgs {
    /// Run the checks on a generated sabotaged tree instead: fails unless every check reports
    /// its planted violation
    #[arg(long)]
    pub negative_control: bool,
}

/// `cargo xtask tidy [--negative-control]`: lists every violation, fails if there is one (or,
/// for the negative control, unless each check reports its planted violation).
pub fn run(negative_control: bool) -> Result<()> {
    if negative_control {
        let found = control::run()?;
        eprintln!("xtask tidy: negative control ok, every check fired: {found}");
        return Ok(());
    }
    let report = check(&util::repo_root())?;
    if report.problems.is_empty() {
        eprintln!(
            "xtask tidy: ok ({} crates, {} files)",
            report.crates, report.files
        );
        return Ok(());
    }
    for p in &report.problems {
        eprintln!("xtask tidy: {p}");
    }
    bail!("{} tidy problems", report.problems.len())
}
