//! The golden data of the oracle, one definition for its writer (`cargo xtask oracle`) and its
//! reader (`tests/e2e/oracle.rs`, which includes this file with `#[path]`): where it lives,
//! `listing.txt`'s lines, which files are kept as text, and the store a case is built from.
//! Standard library only, so that both crates can compile it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The golden data's directory, from the repository root.
pub const DIR: &str = "fixtures/oracle";

/// Files of the builder output kept as text in the golden data (compared by content,
/// normalised; the rest by size and SHA-256).
pub fn is_text(rel: &str) -> bool {
    rel.starts_with("loader/") || rel.starts_with("extlinux/")
}

/// One entry of `listing.txt`.
#[derive(Debug, PartialEq)]
pub enum Item {
    /// A directory.
    Dir,
    /// A file, with its size and SHA-256 (hex).
    File {
        /// Bytes.
        size: u64,
        /// SHA-256 of the contents, lower-case hex.
        sha256: String,
    },
}

/// The line of `listing.txt` for `rel` (without its newline).
pub fn listing_line(rel: &str, item: &Item) -> String {
    match item {
        Item::Dir => format!("dir {rel}"),
        Item::File { size, sha256 } => format!("file {rel} {size} {sha256}"),
    }
}

/// `listing.txt` read back: path -> item; the first bad line is an error.
pub fn parse_listing(text: &str) -> Result<BTreeMap<String, Item>, String> {
    text.lines()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            match f.as_slice() {
                ["dir", p] => Ok(((*p).to_string(), Item::Dir)),
                ["file", p, size, sha] => Ok((
                    (*p).to_string(),
                    Item::File {
                        size: size.parse().map_err(|_| format!("bad size in {l:?}"))?,
                        sha256: (*sha).to_string(),
                    },
                )),
                _ => Err(format!("bad listing line {l:?}")),
            }
        })
        .collect()
}

/// What `cp -a` copies into a case's `nix/store`: every path of the demo store at
/// `repo/base/nix/store` (sorted), then the case's own `/nix/store/...` paths from the oracle's
/// store.
pub fn store_sources(repo: &Path, base: &str, paths: &[&str]) -> Result<Vec<PathBuf>, String> {
    let demo = repo.join(base).join("nix/store");
    let mut out: Vec<PathBuf> = std::fs::read_dir(&demo)
        .and_then(|d| d.map(|e| e.map(|e| e.path())).collect())
        .map_err(|e| format!("listing {}: {e}", demo.display()))?;
    out.sort();
    for p in paths {
        let name = p
            .strip_prefix("/nix/store/")
            .ok_or_else(|| format!("{p}: not a store path"))?;
        out.push(repo.join(DIR).join("nix/store").join(name));
    }
    Ok(out)
}
