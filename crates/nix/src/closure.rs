//! [`Closure`]: the store paths an image must contain, with what Nix needs to register them.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::input;
use crate::nar::nar_hash_and_refs;
use crate::store_path::HASH_PART_LEN;
use crate::{io_err, Error, NarHash, Result, StorePath, StoreRoot};

/// What Nix records about one valid store path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathInfo {
    /// The store path.
    pub path: StorePath,
    /// The SHA-256 of its NAR serialisation.
    pub nar_hash: NarHash,
    /// The length of its NAR serialisation (0: unknown, as old registrations may say).
    pub nar_size: u64,
    /// Sorted, without duplicates; includes the path itself when it refers to itself.
    pub references: Vec<StorePath>,
    /// The `.drv` it was built from, when known.
    pub deriver: Option<StorePath>,
}

/// A toplevel and the store paths to ship with it. `paths` is sorted by path (and
/// [`Closure::get`] relies on it): keep it sorted if you edit it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Closure {
    /// The system toplevel the closure is of.
    pub toplevel: StorePath,
    /// Every path of the closure, the toplevel included, sorted by path.
    pub paths: Vec<PathInfo>,
}

impl Closure {
    /// Builds a closure from path infos: sorts them, and checks that paths are unique, that
    /// every reference is in the set and that the toplevel is in it. `source_desc` names the
    /// origin in errors.
    pub fn new(toplevel: StorePath, mut paths: Vec<PathInfo>, source_desc: &str) -> Result<Self> {
        for p in &mut paths {
            p.references.sort();
            p.references.dedup();
        }
        paths.sort_by(|a, b| a.path.cmp(&b.path));
        if let Some(w) = paths.windows(2).find(|w| w[0].path == w[1].path) {
            return Err(Error::Inconsistent {
                file: PathBuf::from(source_desc),
                reason: format!("{} is listed twice", w[0].path),
            });
        }
        let closure = Self { toplevel, paths };
        if closure.get(&closure.toplevel).is_none() {
            return Err(Error::ToplevelNotInClosure {
                toplevel: closure.toplevel,
                source_desc: source_desc.to_owned(),
            });
        }
        for p in &closure.paths {
            if let Some(r) = p.references.iter().find(|r| closure.get(r).is_none()) {
                return Err(Error::ReferenceOutsideClosure {
                    path: p.path.clone(),
                    reference: r.clone(),
                });
            }
        }
        Ok(closure)
    }

    /// Reads a nixpkgs `closureInfo` output: `<dir>/store-paths` and `<dir>/registration`.
    /// Every path listed is kept (closureInfo may have several roots); `toplevel` must be one of
    /// them. The two files must list the same paths. Does not look at the store: call
    /// [`Closure::check_present`] before copying.
    pub fn from_closure_info(dir: &Path, toplevel: &StorePath) -> Result<Self> {
        let sp_file = dir.join("store-paths");
        let reg_file = dir.join("registration");
        let sp_text = input::read_text_no_symlink(&sp_file, input::STORE_PATHS)?;
        let reg_text = input::read_text_no_symlink(&reg_file, input::REGISTRATION)?;
        let mut listed = BTreeSet::new();
        for (i, line) in sp_text.lines().enumerate() {
            if line.is_empty() {
                continue;
            }
            let p = StorePath::parse(line).map_err(|e| Error::Malformed {
                file: sp_file.clone(),
                line: i + 1,
                reason: e.to_string(),
            })?;
            if !listed.insert(p.clone()) {
                return Err(Error::Malformed {
                    file: sp_file.clone(),
                    line: i + 1,
                    reason: format!("{p} is listed twice"),
                });
            }
        }
        let infos = parse_registration(&reg_text, &reg_file)?;
        let registered: BTreeSet<StorePath> = infos.iter().map(|p| p.path.clone()).collect();
        if let Some(p) = listed.difference(&registered).next() {
            return Err(Error::Inconsistent {
                file: reg_file,
                reason: format!("{p} is in store-paths but not registered"),
            });
        }
        if let Some(p) = registered.difference(&listed).next() {
            return Err(Error::Inconsistent {
                file: sp_file,
                reason: format!("{p} is registered but not in store-paths"),
            });
        }
        Self::new(toplevel.clone(), infos, &reg_file.display().to_string())
    }

    /// Computes the closure of `toplevel` without metadata: NAR hash and size of each path are
    /// computed here, references are found by scanning each NAR for the hash parts of the
    /// entries of `<store_root>/nix/store`, as Nix does after a build. Paths are hashed in
    /// parallel; the result does not depend on the thread count. Derivers are unknown (`None`).
    pub fn from_scan(store_root: &Path, toplevel: &StorePath) -> Result<Self> {
        let root = StoreRoot::new(store_root);
        let by_hash = list_store(&root)?;
        let candidates: HashSet<[u8; HASH_PART_LEN]> = by_hash.keys().copied().collect();
        let mut done: BTreeMap<StorePath, PathInfo> = BTreeMap::new();
        let mut frontier = vec![toplevel.clone()];
        while !frontier.is_empty() {
            let results: Vec<Result<PathInfo>> = frontier
                .par_iter()
                .map(|p| scan_one(&root, p, &candidates, &by_hash))
                .collect();
            let mut next = BTreeSet::new();
            for r in results {
                let info = r?;
                for reference in &info.references {
                    if !done.contains_key(reference) && *reference != info.path {
                        next.insert(reference.clone());
                    }
                }
                done.insert(info.path.clone(), info);
            }
            frontier = next.into_iter().filter(|p| !done.contains_key(p)).collect();
        }
        Self::new(
            toplevel.clone(),
            done.into_values().collect(),
            &format!("a scan of {}", root.store_dir().display()),
        )
    }

    /// The info of `path`, if it is in the closure.
    pub fn get(&self, path: &StorePath) -> Option<&PathInfo> {
        self.paths
            .binary_search_by(|p| p.path.cmp(path))
            .ok()
            .map(|i| &self.paths[i])
    }

    /// Sum of all NAR sizes (closureInfo's `total-nar-size`).
    pub fn total_nar_size(&self) -> u64 {
        self.paths.iter().map(|p| p.nar_size).sum()
    }

    /// The same closure with every deriver dropped (closureInfo's registration has none).
    pub fn without_derivers(mut self) -> Self {
        for p in &mut self.paths {
            p.deriver = None;
        }
        self
    }

    /// Checks that every path exists under `store_root` (without following a final symlink)
    /// and that directories can be listed, so that copying will not fail half-way.
    pub fn check_present(&self, store_root: &Path) -> Result<()> {
        let root = StoreRoot::new(store_root);
        for p in &self.paths {
            check_present(&root, &p.path)?;
        }
        Ok(())
    }

    /// Registration records in the format of `nix-store --dump-db` and closureInfo's
    /// `registration` (input of `nix-store --load-db`): per path, lines path, base16 NAR hash,
    /// NAR size, deriver (empty when unknown), reference count, references.
    pub fn registration_text(&self) -> String {
        let mut s = String::new();
        for p in &self.paths {
            let deriver = p.deriver.as_ref().map(StorePath::as_str).unwrap_or("");
            // Writing to a String cannot fail.
            let _ = writeln!(
                s,
                "{}\n{}\n{}\n{}\n{}",
                p.path,
                p.nar_hash.to_base16(),
                p.nar_size,
                deriver,
                p.references.len()
            );
            for r in &p.references {
                s.push_str(r.as_str());
                s.push('\n');
            }
        }
        s
    }

    /// One store path per line, sorted (closureInfo's `store-paths`).
    pub fn store_paths_text(&self) -> String {
        self.paths.iter().map(|p| format!("{}\n", p.path)).collect()
    }
}

/// Parses registration records (closureInfo `registration`, `nix-store --dump-db` output).
/// Any NAR hash encoding Nix accepts is accepted. `file` names the source in errors, which
/// carry the 1-based line number. An empty path line ends the input (as in `--load-db`); only
/// empty lines may follow it.
pub fn parse_registration(text: &str, file: &Path) -> Result<Vec<PathInfo>> {
    let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l));
    let last_line = text.lines().count();
    let malformed = |line: usize, reason: String| Error::Malformed {
        file: file.to_owned(),
        line,
        reason,
    };
    let mut next = |what: &str| {
        lines.next().ok_or_else(|| {
            malformed(
                last_line + 1,
                format!("unexpected end of input, expected {what}"),
            )
        })
    };
    let mut out: Vec<PathInfo> = Vec::new();
    let mut seen = HashSet::new();
    loop {
        let (n, line) = match next("a store path") {
            Ok(l) => l,
            Err(_) => break,
        };
        if line.is_empty() {
            for (n, rest) in lines.by_ref() {
                if !rest.is_empty() {
                    return Err(malformed(n, "data after an empty path line".into()));
                }
            }
            break;
        }
        let parse_path =
            |n: usize, l: &str| StorePath::parse(l).map_err(|e| malformed(n, e.to_string()));
        let path = parse_path(n, line)?;
        if !seen.insert(path.clone()) {
            return Err(malformed(n, format!("{path} is registered twice")));
        }
        let (n, h) = next("a NAR hash")?;
        let nar_hash = NarHash::parse(h).map_err(|e| malformed(n, e.to_string()))?;
        let (n, s) = next("a NAR size")?;
        let nar_size: u64 = s
            .parse()
            .map_err(|_| malformed(n, format!("NAR size `{s}` is not a decimal number")))?;
        let (n, d) = next("a deriver line")?;
        let deriver = if d.is_empty() {
            None
        } else {
            Some(parse_path(n, d)?)
        };
        let (n, c) = next("a reference count")?;
        let count: usize = c
            .parse()
            .map_err(|_| malformed(n, format!("reference count `{c}` is not a decimal number")))?;
        let mut references = Vec::with_capacity(count.min(4096));
        for _ in 0..count {
            let (n, r) = next("a reference")?;
            references.push(parse_path(n, r)?);
        }
        references.sort();
        references.dedup();
        out.push(PathInfo {
            path,
            nar_hash,
            nar_size,
            references,
            deriver,
        });
    }
    Ok(out)
}

fn check_present(root: &StoreRoot, path: &StorePath) -> Result<()> {
    let host = root.host_path(path);
    let classify = |source: io::Error| match source.kind() {
        io::ErrorKind::NotFound => Error::MissingStorePath {
            path: path.clone(),
            host: host.clone(),
        },
        _ => Error::UnreadableStorePath {
            path: path.clone(),
            host: host.clone(),
            source,
        },
    };
    let md = std::fs::symlink_metadata(&host).map_err(classify)?;
    if md.is_dir() {
        std::fs::read_dir(&host).map_err(classify)?;
    }
    Ok(())
}

/// Maps the hash part of every store path under the store directory to its path. Entries that
/// are not store path names (`.links`, temporary files) are skipped. When several entries share a
/// hash part, `.lock` files left by builds are dropped; remaining clashes are kept and reported
/// if that hash is ever found.
fn list_store(root: &StoreRoot) -> Result<HashMap<[u8; HASH_PART_LEN], Vec<StorePath>>> {
    let dir = root.store_dir();
    let mut map: HashMap<[u8; HASH_PART_LEN], Vec<StorePath>> = HashMap::new();
    for entry in std::fs::read_dir(&dir).map_err(io_err("listing", &dir))? {
        let entry = entry.map_err(io_err("listing", &dir))?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        let Ok(p) = StorePath::from_base_name(&name) else {
            continue;
        };
        let mut key = [0u8; HASH_PART_LEN];
        key.copy_from_slice(p.hash_part().as_bytes());
        map.entry(key).or_default().push(p);
    }
    for paths in map.values_mut() {
        paths.sort();
        if paths.len() > 1 {
            paths.retain(|p| !p.name().ends_with(".lock"));
        }
    }
    map.retain(|_, v| !v.is_empty());
    Ok(map)
}

fn scan_one(
    root: &StoreRoot,
    path: &StorePath,
    candidates: &HashSet<[u8; HASH_PART_LEN]>,
    by_hash: &HashMap<[u8; HASH_PART_LEN], Vec<StorePath>>,
) -> Result<PathInfo> {
    check_present(root, path)?;
    let host = root.host_path(path);
    let (nar_hash, nar_size, found) =
        nar_hash_and_refs(&host, candidates).map_err(|e| match e {
            Error::Io { source, .. } if source.kind() == io::ErrorKind::PermissionDenied => {
                Error::UnreadableStorePath {
                    path: path.clone(),
                    host: host.clone(),
                    source,
                }
            }
            other => other,
        })?;
    let mut references = Vec::with_capacity(found.len());
    for h in found {
        let paths = by_hash
            .get(&h)
            .expect("found hashes come from the candidate set, which is by_hash's key set");
        match paths.as_slice() {
            [p] => references.push(p.clone()),
            _ => {
                return Err(Error::AmbiguousHashPart {
                    hash: String::from_utf8_lossy(&h).into_owned(),
                    referrer: path.clone(),
                    candidates: paths.clone(),
                })
            }
        }
    }
    references.sort();
    Ok(PathInfo {
        path: path.clone(),
        nar_hash,
        nar_size,
        references,
        deriver: None,
    })
}

#[cfg(test)]
mod tests;
