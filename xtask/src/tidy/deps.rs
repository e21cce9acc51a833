//! The crate dependency table of ARCHITECTURE.md against `cargo metadata`, both ways.

use anyhow::{bail, Context, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use super::Problem;
use crate::util::{self, cmd};

/// `crate -> workspace crates it depends on`, from `cargo metadata`.
fn metadata_deps(root: &Path) -> Result<BTreeMap<String, BTreeSet<String>>> {
    let out = util::output_quiet(cmd("cargo").current_dir(root).args([
        "metadata",
        "--format-version",
        "1",
        "--no-deps",
        "--offline",
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
pub(super) fn documented_deps(architecture: &str) -> Result<BTreeMap<String, BTreeSet<String>>> {
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

/// Every difference between the table and the workspace; returns the number of crates.
pub(super) fn check(root: &Path, out: &mut Vec<Problem>) -> Result<usize> {
    let arch =
        std::fs::read_to_string(root.join("ARCHITECTURE.md")).context("reading ARCHITECTURE.md")?;
    let documented = documented_deps(&arch)?;
    let actual = metadata_deps(root)?;
    let mut say = |msg: String| out.push(Problem::new("deps", msg));
    for (krate, deps) in &actual {
        let Some(doc) = documented.get(krate) else {
            say(format!(
                "ARCHITECTURE.md: crate `{krate}` is missing from the dependency table"
            ));
            continue;
        };
        for d in deps.difference(doc) {
            say(format!(
                "`{krate}` depends on `{d}`, which ARCHITECTURE.md does not allow"
            ));
        }
        for d in doc.difference(deps) {
            say(format!(
                "ARCHITECTURE.md says `{krate}` depends on `{d}`, but it does not"
            ));
        }
    }
    for krate in documented.keys().filter(|k| !actual.contains_key(*k)) {
        say(format!(
            "ARCHITECTURE.md lists `{krate}`, which is not a workspace crate"
        ));
    }
    Ok(actual.len())
}
