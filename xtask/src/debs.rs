//! Debian package cache: `apt-get download` into `<cache>/debs`, `dpkg-deb -x` into `<cache>/x`.
//! Once a .deb is cached everything works offline.

use crate::util::{cache_root, cmd, output_quiet, run};
use anyhow::{bail, Context, Result};
use std::fs;
use std::path::{Path, PathBuf};

pub struct Debs {
    debs: PathBuf,
    unpacked: PathBuf,
}

impl Debs {
    pub fn new() -> Result<Self> {
        let root = cache_root();
        let debs = root.join("debs");
        let unpacked = root.join("x");
        fs::create_dir_all(&debs).with_context(|| format!("creating {}", debs.display()))?;
        fs::create_dir_all(&unpacked)?;
        Ok(Debs { debs, unpacked })
    }

    /// Makes apt able to download packages of a foreign architecture (needs root once).
    pub fn ensure_arch(&self, debarch: &str) -> Result<()> {
        let native = output_quiet(cmd("dpkg").arg("--print-architecture"))?;
        if native.trim() == debarch {
            return Ok(());
        }
        let foreign = output_quiet(cmd("dpkg").arg("--print-foreign-architectures"))?;
        let known = foreign.lines().any(|l| l.trim() == debarch);
        let listed = known
            && output_quiet(
                cmd("apt-cache")
                    .arg("policy")
                    .arg(format!("busybox-static:{debarch}")),
            )
            .is_ok_and(|o| o.contains("Candidate:") && !o.contains("Candidate: (none)"));
        if listed {
            return Ok(());
        }
        if self.has_cached_any(debarch) && !is_root() {
            return Ok(()); // offline / unprivileged: rely on the cache
        }
        if !known {
            eprintln!("xtask: dpkg --add-architecture {debarch} && apt-get update");
            run(cmd("dpkg").arg("--add-architecture").arg(debarch))?;
        }
        if let Err(e) = run(cmd("apt-get").arg("update").arg("-qq")) {
            if !self.has_cached_any(debarch) {
                return Err(e);
            }
            eprintln!("xtask: warning: {e:#}; using cached .debs");
        }
        Ok(())
    }

    fn has_cached_any(&self, debarch: &str) -> bool {
        fs::read_dir(&self.debs).is_ok_and(|rd| {
            rd.flatten().any(|e| {
                e.file_name()
                    .to_string_lossy()
                    .ends_with(&format!("_{debarch}.deb"))
            })
        })
    }

    /// The real `linux-image-<abi>-<flavour>` package behind a meta package.
    pub fn resolve_kernel(&self, meta: &str, debarch: &str) -> Result<String> {
        if let Ok(out) = output_quiet(
            cmd("apt-cache")
                .args(["depends", "--no-recommends", "--no-suggests"])
                .arg(format!("{meta}:{debarch}")),
        ) {
            for line in out.lines() {
                if let Some(dep) = line.trim().strip_prefix("Depends: ") {
                    let name = dep.split(':').next().unwrap_or(dep);
                    if name.starts_with("linux-image-")
                        && name[12..].starts_with(|c: char| c.is_ascii_digit())
                    {
                        return Ok(name.to_string());
                    }
                }
            }
        }
        // offline: the newest cached kernel image of this architecture
        let mut found: Vec<String> = fs::read_dir(&self.debs)?
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| {
                n.starts_with("linux-image-")
                    && n[12..].starts_with(|c: char| c.is_ascii_digit())
                    && n.ends_with(&format!("_{debarch}.deb"))
                    && !n.contains("-dbg")
            })
            .map(|n| n.split('_').next().unwrap_or_default().to_string())
            .collect();
        found.sort();
        found.pop().with_context(|| {
            format!("cannot resolve {meta}:{debarch} (apt-cache and cache both failed)")
        })
    }

    /// Path of the cached .deb for `pkg:debarch`, downloading the candidate on first use.
    pub fn fetch(&self, pkg: &str, debarch: &str) -> Result<PathBuf> {
        let candidate = output_quiet(
            cmd("apt-cache")
                .arg("policy")
                .arg(format!("{pkg}:{debarch}")),
        )
        .ok()
        .and_then(|o| {
            o.lines()
                .find_map(|l| l.trim().strip_prefix("Candidate: ").map(str::to_string))
        })
        .filter(|v| v != "(none)");
        if let Some(ver) = candidate {
            let file = self
                .debs
                .join(format!("{pkg}_{}_{debarch}.deb", ver.replace(':', "%3a")));
            if file.metadata().is_ok_and(|m| m.len() > 0) {
                return Ok(file);
            }
            eprintln!("xtask: apt-get download {pkg}:{debarch}={ver}");
            let res = output_quiet(
                cmd("apt-get")
                    .current_dir(&self.debs)
                    .args(["download", "-q"])
                    .arg(format!("{pkg}:{debarch}={ver}")),
            );
            if file.metadata().is_ok_and(|m| m.len() > 0) {
                return Ok(file);
            }
            if let Err(e) = res {
                eprintln!("xtask: warning: {e:#}");
            }
        }
        let mut cached: Vec<PathBuf> = fs::read_dir(&self.debs)?
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name().is_some_and(|n| {
                    let n = n.to_string_lossy();
                    n.starts_with(&format!("{pkg}_")) && n.ends_with(&format!("_{debarch}.deb"))
                })
            })
            .collect();
        cached.sort();
        cached
            .pop()
            .with_context(|| format!("cannot download or find a cached {pkg}:{debarch}"))
    }

    /// Unpacks a .deb once (`dpkg-deb -x`) and returns the tree.
    pub fn extract(&self, deb: &Path) -> Result<PathBuf> {
        let stem = deb
            .file_stem()
            .context("deb without a file name")?
            .to_string_lossy()
            .into_owned();
        let dir = self.unpacked.join(stem);
        if dir.join(".done").exists() {
            return Ok(dir);
        }
        crate::util::remove_tree(&dir)?;
        fs::create_dir_all(&dir)?;
        run(cmd("dpkg-deb").arg("-x").arg(deb).arg(&dir))?;
        fs::write(dir.join(".done"), b"")?;
        Ok(dir)
    }

    /// `Version:` of a .deb.
    pub fn version(deb: &Path) -> Result<String> {
        let v = output_quiet(cmd("dpkg-deb").arg("-f").arg(deb).arg("Version"))?;
        let v = v.trim();
        if v.is_empty() {
            bail!("{} has no Version", deb.display());
        }
        Ok(v.to_string())
    }
}

fn is_root() -> bool {
    output_quiet(cmd("id").arg("-u")).is_ok_and(|o| o.trim() == "0")
}
