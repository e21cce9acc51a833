//! `cargo xtask tidy`: the promises of ARCHITECTURE.md, checked rather than hoped (as
//! rust-analyzer's `tidy` test does):
//! - the crate dependency table in ARCHITECTURE.md equals `cargo metadata`'s workspace
//!   dependencies, both ways;
//! - no allowance of clippy's too-many-arguments lint anywhere (a context struct instead);
//! - no `Debug` formatting used as data: a `format!` whose whole template is one `{…:?}`
//!   turns a value's Debug output into a string that something then stores or hashes
//!   (tests and test helpers excepted);
//! - every crate's `lib.rs`/`main.rs` opens with crate docs (`//!`);
//! - the crates that encode bytes (see [`CAST_CHECKED`]) turn on clippy's lints against
//!   casts that truncate, lose a sign or wrap.

use anyhow::{bail, Context, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use crate::util::{self, cmd};

/// Every `.rs` file below `dir`.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for e in fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let p = e?.path();
        if p.is_dir() {
            if p.file_name().is_some_and(|n| n == "target" || n == ".git") {
                continue;
            }
            rust_files(&p, out)?;
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
    Ok(())
}

/// `crate -> workspace crates it depends on`, from `cargo metadata`.
fn metadata_deps(root: &Path) -> Result<BTreeMap<String, BTreeSet<String>>> {
    let out = util::output_quiet(cmd("cargo").current_dir(root).args([
        "metadata",
        "--format-version",
        "1",
        "--no-deps",
    ]))?;
    let v: serde_json::Value = serde_json::from_str(&out).context("cargo metadata's JSON")?;
    let pkgs = v["packages"].as_array().context("no packages")?;
    let names: BTreeSet<String> = pkgs
        .iter()
        .filter_map(|p| p["name"].as_str().map(str::to_string))
        .collect();
    let mut deps = BTreeMap::new();
    for p in pkgs {
        let name = p["name"].as_str().unwrap_or_default().to_string();
        let d: BTreeSet<String> = p["dependencies"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|d| d["kind"].is_null())
            .filter_map(|d| d["name"].as_str())
            .filter(|n| names.contains(*n))
            .map(str::to_string)
            .collect();
        deps.insert(name, d);
    }
    Ok(deps)
}

/// The `| crate | depends on |` table of ARCHITECTURE.md's "Dependencies" section.
fn documented_deps(architecture: &str) -> Result<BTreeMap<String, BTreeSet<String>>> {
    let section = architecture
        .split("\n## ")
        .find(|s| s.starts_with("Dependencies"))
        .context("ARCHITECTURE.md has no `## Dependencies` section")?;
    let mut deps = BTreeMap::new();
    for line in section.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        let [krate, uses] = cells[..] else {
            bail!("ARCHITECTURE.md: malformed dependency row `{line}`");
        };
        let name = krate
            .split('`')
            .nth(1)
            .context("crate name in backquotes")?
            .to_string();
        let d: BTreeSet<String> = uses
            .split(',')
            .filter_map(|u| u.split('`').nth(1))
            .map(str::to_string)
            .collect();
        deps.insert(name, d);
    }
    Ok(deps)
}

/// Whether `line` (inside `format!(` …) is a template that is only one Debug placeholder.
fn debug_as_data(line: &str) -> bool {
    let Some(i) = line.find("format!(\"") else {
        return false;
    };
    let rest = &line[i + "format!(\"".len()..];
    let Some(end) = rest.find('"') else {
        return false;
    };
    let template = &rest[..end];
    template.starts_with('{') && template.ends_with(":?}") && template.matches('{').count() == 1
}

fn is_test_file(p: &Path) -> bool {
    let s = p.to_string_lossy();
    s.contains("/tests/")
        || s.ends_with("/tests.rs")
        || s.ends_with("/testutil.rs")
        || s.contains("/crates/testutil/")
        || s.contains("/examples/")
}

/// The crates that encode on-disk bytes: every narrowing cast in them is spelled out.
const CAST_CHECKED: &[&str] = &[
    "blockio",
    "diskmap",
    "ext4",
    "fat",
    "partition",
    "compress",
    "container",
    "flash",
    "squashfs",
];

/// Runs every check; lists every violation, fails if there is one.
pub fn run() -> Result<()> {
    let root = util::repo_root();
    let mut problems = Vec::new();

    let arch = fs::read_to_string(root.join("ARCHITECTURE.md"))?;
    let documented = documented_deps(&arch)?;
    let actual = metadata_deps(&root)?;
    for (krate, deps) in &actual {
        match documented.get(krate) {
            None => problems.push(format!(
                "ARCHITECTURE.md: crate `{krate}` is missing from the dependency table"
            )),
            Some(doc) => {
                for d in deps.difference(doc) {
                    problems.push(format!(
                        "`{krate}` depends on `{d}`, which ARCHITECTURE.md does not allow"
                    ));
                }
                for d in doc.difference(deps) {
                    problems.push(format!(
                        "ARCHITECTURE.md says `{krate}` depends on `{d}`, but it does not"
                    ));
                }
            }
        }
    }
    for krate in documented.keys().filter(|k| !actual.contains_key(*k)) {
        problems.push(format!(
            "ARCHITECTURE.md lists `{krate}`, which is not a workspace crate"
        ));
    }

    // Spelled in pieces so that this file does not match itself.
    let too_many = format!("allow(clippy::{}_{}_{})", "too", "many", "arguments");
    let mut files = Vec::new();
    for dir in ["crates", "xtask", "tests"] {
        rust_files(&root.join(dir), &mut files)?;
    }
    files.sort();
    for f in &files {
        let text = fs::read_to_string(f)?;
        let rel = f.strip_prefix(&root).unwrap_or(f).display().to_string();
        let mut in_tests = false;
        for (n, line) in text.lines().enumerate() {
            if line.trim_start().starts_with("#[cfg(test)]") {
                in_tests = true;
            }
            if line.contains(&too_many) {
                problems.push(format!(
                    "{rel}:{}: {too_many}: pass a context struct",
                    n + 1
                ));
            }
            if !in_tests && !is_test_file(f) && debug_as_data(line) {
                problems.push(format!(
                    "{rel}:{}: Debug formatting used as data (`{}`)",
                    n + 1,
                    line.trim()
                ));
            }
        }
        let name = f.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let is_root = (name == "lib.rs" || name == "main.rs")
            && f.parent().is_some_and(|p| p.ends_with("src"));
        if is_root && !text.trim_start().starts_with("//!") {
            problems.push(format!("{rel}: the crate has no docs at its top (`//!`)"));
        }
        if name == "lib.rs"
            && CAST_CHECKED
                .iter()
                .any(|c| rel == format!("crates/{c}/src/lib.rs"))
        {
            for lint in [
                "cast_possible_truncation",
                "cast_sign_loss",
                "cast_possible_wrap",
            ] {
                if !text.contains(&format!("clippy::{lint}")) {
                    problems.push(format!(
                        "{rel}: a byte-encoding crate without clippy::{lint}"
                    ));
                }
            }
        }
    }

    if problems.is_empty() {
        eprintln!(
            "xtask tidy: ok ({} crates, {} files)",
            actual.len(),
            files.len()
        );
        Ok(())
    } else {
        for p in &problems {
            eprintln!("xtask tidy: {p}");
        }
        bail!("{} tidy problems", problems.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_as_data_is_a_lone_debug_template() {
        assert!(debug_as_data(
            r#"    seed.extend(format!("{:?}", meta).as_bytes());"#
        ));
        assert!(debug_as_data(r#"let s = format!("{meta:?}");"#));
        assert!(!debug_as_data(
            r#"format!("character {c:?} is not allowed")"#
        ));
        assert!(!debug_as_data(r#"format!("{a}: {b:?}")"#));
        assert!(!debug_as_data(r#"format!("{x}")"#));
    }

    #[test]
    fn the_dependency_table_is_read_both_ways() {
        let md = "# A\n\n## Dependencies\n\ntext\n\n| crate | depends on |\n|---|---|\n\
                  | `a` | — |\n| `b` (cli) | `a`, `c` |\n\n## Invariants\n| `x` | `y` |\n";
        let d = documented_deps(md).unwrap();
        assert_eq!(d.len(), 2);
        assert!(d["a"].is_empty());
        assert_eq!(
            d["b"].iter().cloned().collect::<Vec<_>>(),
            ["a".to_string(), "c".to_string()]
        );
    }
}
