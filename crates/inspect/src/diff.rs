//! `imgbuild diff OLD NEW`: two images compared as a NixOS user thinks of them: the toplevel,
//! store paths added, removed, rebuilt or changed in version (matched by name without hash,
//! then by package name without version), each with its size; boot changes (kernel, initrd,
//! parameters, device trees, boot loader files, firmware: every boot setting `inspect`
//! reads and every boot file's content); partition layout changes.
//!
//! Ids (GUIDs, filesystem UUIDs, the disk id) are not compared: imgbuild derives them from
//! the inputs, so they change with any change of the closure and would only be noise.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::sizes::{store_name, Sizes};
use crate::{Image, Result};

/// Boot files hashed at most this big (bigger ones are compared by size).
const MAX_HASHED: u64 = 512 << 20;

/// What differs between two images.
#[derive(Clone, Debug, Serialize)]
pub struct Diff {
    /// The old image, as given.
    pub old: String,
    /// The new image, as given.
    pub new: String,
    /// Nothing below differs.
    pub identical: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// The system toplevel store path, when it differs.
    pub toplevel: Option<Fact>,
    /// What changed in the Nix store.
    pub store: StoreDiff,
    /// Boot settings and boot files that differ.
    pub boot: Vec<Fact>,
    /// Partition table and filesystem facts that differ (ids left out).
    pub partitions: Vec<Fact>,
}

/// One fact with its two values (`None`: absent on that side).
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Fact {
    /// What the fact is, e.g. `nixos version` or `partition 2.filesystem.size`.
    pub what: String,
    /// Its value in the old image, when it has one.
    pub old: Option<String>,
    /// Its value in the new image, when it has one.
    pub new: Option<String>,
}

/// The closures compared.
#[derive(Clone, Debug, Default, Serialize)]
pub struct StoreDiff {
    /// Store paths in the old image.
    pub old_paths: usize,
    /// Store paths in the new image.
    pub new_paths: usize,
    /// Closure bytes on disk (each inode once).
    pub old_bytes: u64,
    /// Closure bytes on disk in the new image (each inode once).
    pub new_bytes: u64,
    /// `new_bytes - old_bytes`.
    pub delta: i64,
    /// Store paths only in the new image.
    pub added: Vec<PathChange>,
    /// Store paths only in the old image.
    pub removed: Vec<PathChange>,
    /// Same package, another version or another build.
    pub changed: Vec<PathChange>,
}

/// One store path that came, went or changed.
#[derive(Clone, Debug, Serialize)]
pub struct PathChange {
    /// The name without hash (and, for a version change, without version).
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// The store path in the old image, if any.
    pub old: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// The store path in the new image, if any.
    pub new: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// The version part of the old path's name.
    pub old_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// The version part of the new path's name.
    pub new_version: Option<String>,
    /// Its bytes in the old image (0 when absent).
    pub old_bytes: u64,
    /// Its bytes in the new image (0 when absent).
    pub new_bytes: u64,
    /// `new_bytes - old_bytes`.
    pub delta: i64,
}

impl PathChange {
    /// `old`/`new`: the path and its bytes on each side (absent: added or removed).
    fn new(name: String, old: Option<(String, u64)>, new: Option<(String, u64)>) -> Self {
        let (old, old_bytes) = old.map_or((None, 0), |(p, b)| (Some(p), b));
        let (new, new_bytes) = new.map_or((None, 0), |(p, b)| (Some(p), b));
        PathChange {
            name,
            old,
            new,
            old_version: None,
            new_version: None,
            old_bytes,
            new_bytes,
            delta: delta(old_bytes, new_bytes),
        }
    }
}

/// Nix's `parseDrvName`: the version starts at the first `-` not followed by a letter.
pub fn split_version(name: &str) -> (&str, &str) {
    let b = name.as_bytes();
    for i in 0..b.len() {
        if b[i] == b'-' && b.get(i + 1).is_some_and(|c| !c.is_ascii_alphabetic()) {
            return (&name[..i], &name[i + 1..]);
        }
    }
    (name, "")
}

fn delta(old: u64, new: u64) -> i64 {
    i64::try_from(new)
        .unwrap_or(i64::MAX)
        .saturating_sub(i64::try_from(old).unwrap_or(i64::MAX))
}

/// Store paths by name without hash: path -> bytes.
fn by_name(s: &Sizes) -> BTreeMap<String, BTreeMap<String, u64>> {
    let mut m: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    for p in &s.store_paths {
        m.entry(p.name.clone())
            .or_default()
            .insert(p.path.clone(), p.bytes);
    }
    m
}

/// The store paths of two closures, compared.
pub fn store_diff(old: &Sizes, new: &Sizes) -> StoreDiff {
    let mut d = StoreDiff {
        old_paths: old.store_paths.len(),
        new_paths: new.store_paths.len(),
        old_bytes: old.closure_total,
        new_bytes: new.closure_total,
        delta: delta(old.closure_total, new.closure_total),
        ..StoreDiff::default()
    };
    let (o, n) = (by_name(old), by_name(new));
    // Same name: same paths drop out, the rest pair up in order (a rebuild).
    let mut gone: Vec<(String, u64)> = Vec::new();
    let mut came: Vec<(String, u64)> = Vec::new();
    let names: BTreeSet<&String> = o.keys().chain(n.keys()).collect();
    for name in names {
        let empty = BTreeMap::new();
        let (a, b) = (o.get(name).unwrap_or(&empty), n.get(name).unwrap_or(&empty));
        let mut a: Vec<_> = a.iter().filter(|(p, _)| !b.contains_key(*p)).collect();
        let mut b: Vec<_> = b
            .iter()
            .filter(|(p, _)| !o.get(name).is_some_and(|x| x.contains_key(*p)))
            .collect();
        while !a.is_empty() && !b.is_empty() {
            let ((op, ob), (np, nb)) = (a.remove(0), b.remove(0));
            d.changed.push(PathChange::new(
                name.clone(),
                Some((op.clone(), *ob)),
                Some((np.clone(), *nb)),
            ));
        }
        gone.extend(a.into_iter().map(|(p, b)| (p.clone(), *b)));
        came.extend(b.into_iter().map(|(p, b)| (p.clone(), *b)));
    }
    // Another version of the same package: pair by package name.
    let pname = |p: &str| split_version(store_name(p)).0.to_string();
    let version =
        |p: &str| Some(split_version(store_name(p)).1.to_string()).filter(|v| !v.is_empty());
    let mut unmatched_new = came;
    for (op, ob) in gone {
        let name = pname(&op);
        let found = unmatched_new
            .iter()
            .position(|(np, _)| pname(np) == name && version(np).is_some());
        match found.filter(|_| version(&op).is_some()) {
            Some(i) => {
                let (np, nb) = unmatched_new.remove(i);
                let mut c = PathChange::new(name, Some((op.clone(), ob)), Some((np.clone(), nb)));
                (c.old_version, c.new_version) = (version(&op), version(&np));
                d.changed.push(c);
            }
            None => d.removed.push(PathChange::new(
                store_name(&op).to_string(),
                Some((op, ob)),
                None,
            )),
        }
    }
    for (np, nb) in unmatched_new {
        d.added.push(PathChange::new(
            store_name(&np).to_string(),
            None,
            Some((np, nb)),
        ));
    }
    for v in [&mut d.added, &mut d.removed, &mut d.changed] {
        v.sort_by(|a, b| {
            b.delta
                .unsigned_abs()
                .cmp(&a.delta.unsigned_abs())
                .then_with(|| a.name.cmp(&b.name))
        });
    }
    d
}

/// Flattens JSON into `path = value` lines (`boot.systemd_boot[0].entries[1].options`).
fn flatten(prefix: &str, v: &Value, out: &mut BTreeMap<String, String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                flatten(&format!("{prefix}.{k}"), v, out);
            }
        }
        Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                flatten(&format!("{prefix}[{i}]"), v, out);
            }
        }
        Value::Null => {}
        Value::String(s) => {
            out.insert(prefix.to_string(), s.clone());
        }
        v => {
            out.insert(prefix.to_string(), v.to_string());
        }
    }
}

fn facts(old: &BTreeMap<String, String>, new: &BTreeMap<String, String>) -> Vec<Fact> {
    let keys: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    keys.into_iter()
        .filter(|k| old.get(*k) != new.get(*k))
        .map(|k| Fact {
            what: k.clone(),
            old: old.get(k).cloned(),
            new: new.get(k).cloned(),
        })
        .collect()
}

/// Ids that derive from the inputs: left out of the comparison.
fn is_id(key: &str) -> bool {
    [".guid", ".uuid", ".disk_id", ".machine_id"]
        .iter()
        .any(|s| key.ends_with(s))
}

impl Image {
    /// Boot settings as flat facts, and every boot file with its SHA-256 (files of the
    /// partitions other than the root, and `/boot` of the root).
    fn boot_facts(&self, sizes: &Sizes) -> Result<BTreeMap<String, String>> {
        let report = self.inspect();
        let mut out = BTreeMap::new();
        let boot = serde_json::to_value(&report.boot).unwrap_or(Value::Null);
        flatten("boot", &boot, &mut out);
        if let Some(n) = &report.nixos {
            for (k, v) in [("version", &n.version), ("system", &n.system)] {
                if let Some(v) = v {
                    out.insert(format!("nixos.{k}"), v.clone());
                }
            }
            if let Some(p) = &n.kernel_params {
                out.insert("nixos.kernel-params".into(), p.clone());
            }
        }
        out.retain(|k, _| !is_id(k) && !k.ends_with(".partition"));
        for part in &sizes.partitions {
            let fs = self.filesystem(&part.number.to_string())?;
            let root = part.number == sizes.root_partition;
            let mut files = Vec::new();
            if root {
                if fs.exists(b"/boot")? {
                    fs.walk(b"/boot", |p, e, _| {
                        if e.kind == crate::Kind::File {
                            files.push((p.to_vec(), e.size));
                        }
                        Ok(true)
                    })?;
                }
            } else {
                files.extend(
                    part.files
                        .iter()
                        .map(|f| (f.name.as_bytes().to_vec(), f.bytes)),
                );
            }
            let label = part
                .label
                .clone()
                .unwrap_or_else(|| part.number.to_string());
            for (path, _) in files {
                let size = fs.metadata(&path)?.size;
                let value = if size <= MAX_HASHED {
                    let mut h = HashWriter(Sha256::new());
                    fs.copy_file(&path, &mut h)?;
                    format!("{size} bytes, sha256 {}", hex(&h.0.finalize()))
                } else {
                    format!("{size} bytes")
                };
                out.insert(
                    format!("file {label}:{}", String::from_utf8_lossy(&path)),
                    value,
                );
            }
        }
        Ok(out)
    }

    /// Table and filesystem facts, ids left out.
    fn layout_facts(&self) -> BTreeMap<String, String> {
        let report = self.inspect();
        let mut out = BTreeMap::new();
        out.insert("table".into(), report.table.kind.to_string());
        out.insert("disk size".into(), report.disk_size.to_string());
        for p in &report.partitions {
            let mut v = serde_json::to_value(p).unwrap_or(Value::Null);
            if let Some(fs) = v.get_mut("filesystem").and_then(Value::as_object_mut) {
                fs.retain(|k, _| ["kind", "label", "size"].contains(&k.as_str()));
            }
            flatten(
                &format!("partition {}", p.partition.entry.number),
                &v,
                &mut out,
            );
        }
        out.retain(|k, _| !is_id(k));
        out
    }
}

struct HashWriter(Sha256);

impl std::io::Write for HashWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.update(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Compares two opened images.
pub fn diff(old: &Image, new: &Image) -> Result<Diff> {
    let (os, ns) = (old.sizes()?, new.sizes()?);
    let store = store_diff(&os, &ns);
    let boot = facts(&old.boot_facts(&os)?, &new.boot_facts(&ns)?);
    let partitions = facts(&old.layout_facts(), &new.layout_facts());
    let top = |i: &Image| i.inspect().nixos.and_then(|n| n.toplevel);
    let (ot, nt) = (top(old), top(new));
    let toplevel = (ot != nt).then(|| Fact {
        what: "toplevel".into(),
        old: ot,
        new: nt,
    });
    let identical = toplevel.is_none()
        && store.added.is_empty()
        && store.removed.is_empty()
        && store.changed.is_empty()
        && boot.is_empty()
        && partitions.is_empty();
    Ok(Diff {
        old: old.path().display().to_string(),
        new: new.path().display().to_string(),
        identical,
        toplevel,
        store,
        boot,
        partitions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sizes::StorePathSize;

    #[test]
    fn versions_split_as_nix_does() {
        assert_eq!(split_version("hello-2.12.1"), ("hello", "2.12.1"));
        assert_eq!(split_version("bash-5.2p26"), ("bash", "5.2p26"));
        assert_eq!(
            split_version("nixos-system-demo-24.05"),
            ("nixos-system-demo", "24.05")
        );
        assert_eq!(split_version("etc"), ("etc", ""));
        assert_eq!(
            split_version("unit-hello.service"),
            ("unit-hello.service", "")
        );
    }

    fn sizes(paths: &[(&str, u64)]) -> Sizes {
        Sizes {
            image: String::new(),
            disk_size: 0,
            closure_from: String::new(),
            root_partition: 2,
            store_paths: paths
                .iter()
                .map(|(p, b)| StorePathSize {
                    path: format!("/nix/store/{p}"),
                    name: store_name(&format!("/nix/store/{p}")).to_string(),
                    bytes: *b,
                    exclusive: *b,
                    entries: 1,
                    top: Vec::new(),
                })
                .collect(),
            closure_total: paths.iter().map(|p| p.1).sum(),
            shared: 0,
            partitions: Vec::new(),
            warnings: Vec::new(),
        }
    }

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    const C: &str = "cccccccccccccccccccccccccccccccc";

    #[test]
    fn added_removed_rebuilt_and_new_versions() {
        let old = sizes(&[
            (&format!("{A}-same-1.0"), 10),
            (&format!("{A}-gone-1.0"), 20),
            (&format!("{A}-hello-2.12"), 30),
            (&format!("{A}-etc"), 5),
        ]);
        let new = sizes(&[
            (&format!("{A}-same-1.0"), 10),
            (&format!("{B}-came"), 7),
            (&format!("{C}-hello-2.12.1"), 45),
            (&format!("{B}-etc"), 6),
        ]);
        let d = store_diff(&old, &new);
        let names = |v: &[PathChange]| v.iter().map(|c| c.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(&d.added), ["came"]);
        assert_eq!(names(&d.removed), ["gone-1.0"]);
        assert_eq!(names(&d.changed), ["hello", "etc"]);
        let hello = &d.changed[0];
        assert_eq!(
            (hello.old_version.as_deref(), hello.new_version.as_deref()),
            (Some("2.12"), Some("2.12.1"))
        );
        assert_eq!(hello.delta, 15);
        assert_eq!(d.delta, 68 - 65);
        assert!(store_diff(&old, &old).changed.is_empty());
    }

    #[test]
    fn flat_facts() {
        let mut a = BTreeMap::new();
        flatten(
            "b",
            &serde_json::json!({"x": [1, {"y": "z"}], "n": null}),
            &mut a,
        );
        assert_eq!(a.get("b.x[0]").map(String::as_str), Some("1"));
        assert_eq!(a.get("b.x[1].y").map(String::as_str), Some("z"));
        let mut b = a.clone();
        b.insert("b.x[0]".into(), "2".into());
        assert_eq!(facts(&a, &b).len(), 1);
        assert!(is_id("partition 1.guid"));
    }
}
