//! The fixture initrd: busybox-static, the kernel modules needed to find the root disk
//! (insmod order resolved from each module's `.modinfo` `depends=`), `/init`
//! (xtask/initrd/init.sh) and, on x86_64 when the host has it, the host's `veritysetup` with
//! the shared libraries `ldd` names (the appliance boots map the dm-verity store with it),
//! as a reproducible newc cpio compressed with zstd.

use crate::util::cmd;
use anyhow::{bail, Context, Result};
use imgbuild_cpio::Archive as Cpio;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;

/// `/init` before its root label is filled in.
pub const INIT_TEMPLATE: &str = include_str!("../initrd/init.sh");

/// Kernel modules in a Debian kernel's module tree, by canonical name (`-` -> `_`).
pub struct ModuleTree {
    dir: PathBuf,
    by_name: BTreeMap<String, PathBuf>,
    builtin: BTreeSet<String>,
}

impl ModuleTree {
    pub fn open(moddir: &Path) -> Result<Self> {
        let mut by_name = BTreeMap::new();
        walk(&moddir.join("kernel"), &mut |p| {
            if let Some(n) = p.file_name().and_then(|n| n.to_str()) {
                if let Some(stem) = n.strip_suffix(".ko") {
                    by_name.insert(stem.replace('-', "_"), p.to_path_buf());
                }
            }
        })?;
        if by_name.is_empty() {
            bail!("no .ko files under {}", moddir.display());
        }
        let builtin = fs::read_to_string(moddir.join("modules.builtin"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.rsplit('/').next())
            .map(|n| n.trim_end_matches(".ko").replace('-', "_"))
            .collect();
        Ok(ModuleTree {
            dir: moddir.to_path_buf(),
            by_name,
            builtin,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn path(&self, name: &str) -> Option<&Path> {
        self.by_name.get(name).map(PathBuf::as_path)
    }

    /// `wanted` plus their dependencies, dependencies first (insmod order). Built-in
    /// modules are skipped; unknown ones are an error.
    pub fn resolve(&self, wanted: &[&str]) -> Result<Vec<String>> {
        let mut order = Vec::new();
        let mut seen = BTreeSet::new();
        for w in wanted {
            self.visit(&w.replace('-', "_"), &mut seen, &mut order)?;
        }
        Ok(order)
    }

    fn visit(&self, m: &str, seen: &mut BTreeSet<String>, order: &mut Vec<String>) -> Result<()> {
        if !seen.insert(m.to_string()) {
            return Ok(());
        }
        let Some(path) = self.by_name.get(m) else {
            if self.builtin.contains(m) {
                return Ok(());
            }
            bail!(
                "kernel module {m} is neither built in nor in {}",
                self.dir.display()
            );
        };
        let data = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let mut deps: Vec<String> = Vec::new();
        for s in data.split(|b| *b == 0) {
            if let Some(d) = s.strip_prefix(b"depends=") {
                deps.extend(
                    String::from_utf8_lossy(d)
                        .split(',')
                        .filter(|x| !x.is_empty())
                        .map(|x| x.replace('-', "_")),
                );
                break;
            }
        }
        // ext4's `softdep=pre: crypto-crc32c` (a crypto alias, not a module name)
        if data
            .split(|b| *b == 0)
            .any(|s| s.starts_with(b"softdep=pre: crypto-crc32c"))
        {
            deps.insert(0, "crc32c_generic".to_string());
        }
        for d in deps {
            self.visit(&d, seen, order)?;
        }
        order.push(m.to_string());
        Ok(())
    }
}

fn walk(dir: &Path, f: &mut dyn FnMut(&Path)) -> Result<()> {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .flatten()
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let p = e.path();
        if e.file_type()?.is_dir() {
            walk(&p, f)?;
        } else {
            f(&p);
        }
    }
    Ok(())
}

/// Where the host's veritysetup is (Debian's cryptsetup-bin).
pub const VERITYSETUP: &str = "/usr/sbin/veritysetup";

/// A host program and the shared libraries it loads (`ldd`'s absolute paths, the dynamic
/// loader included), to be copied into the initrd at the same paths.
pub struct HostProgram {
    path: PathBuf,
    libs: Vec<PathBuf>,
}

impl HostProgram {
    /// `path` and its libraries; `None` when the host does not have it.
    pub fn find(path: &str) -> Result<Option<Self>> {
        let path = PathBuf::from(path);
        if !path.exists() {
            return Ok(None);
        }
        let out = cmd("ldd")
            .arg(&path)
            .output()
            .with_context(|| format!("running ldd {}", path.display()))?;
        if !out.status.success() {
            bail!("ldd {} failed with {}", path.display(), out.status);
        }
        let mut libs: Vec<PathBuf> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                // "libx.so.1 => /lib/.../libx.so.1 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
                let lib = l.split("=>").last()?.split_whitespace().next()?;
                lib.starts_with('/').then(|| PathBuf::from(lib))
            })
            .collect();
        libs.sort();
        libs.dedup();
        Ok(Some(HostProgram { path, libs }))
    }

    /// The bytes the initrd gets from the host (for the fixture's recipe stamp).
    pub fn digest_into(&self, h: &mut impl sha2::Digest) -> Result<()> {
        for p in std::iter::once(&self.path).chain(&self.libs) {
            h.update(p.as_os_str().as_encoded_bytes());
            h.update(fs::read(p).with_context(|| format!("reading {}", p.display()))?);
        }
        Ok(())
    }

    /// Copies the program to `bin/<name>` and each library to its own path.
    fn add_to(&self, c: &mut Cpio, dirs: &mut BTreeSet<String>) -> Result<()> {
        let name = self.path.file_name().context("program without a name")?;
        let read = |p: &Path| fs::read(p).with_context(|| format!("reading {}", p.display()));
        c.file(
            &format!("bin/{}", name.to_string_lossy()),
            0o755,
            &read(&self.path)?,
        )?;
        for lib in &self.libs {
            let rel = lib.strip_prefix("/").context("absolute library path")?;
            let mut dir = PathBuf::new();
            for part in rel.parent().into_iter().flat_map(Path::components) {
                dir.push(part);
                let d = dir.to_string_lossy().into_owned();
                if dirs.insert(d.clone()) {
                    c.dir(&d, 0o755)?;
                }
            }
            c.file(&rel.to_string_lossy(), 0o755, &read(lib)?)?;
        }
        Ok(())
    }
}

/// Builds the compressed initrd.
pub fn build(
    busybox: &Path,
    modules: &ModuleTree,
    order: &[String],
    root_label: &str,
    programs: &[HostProgram],
) -> Result<Vec<u8>> {
    let mut c = Cpio::new(1);
    let top = [
        "bin",
        "dev",
        "etc",
        "etc/imgbuild",
        "lib",
        "lib/modules",
        "mnt",
        "proc",
        "sys",
        "run",
        "tmp",
    ];
    let mut dirs: BTreeSet<String> = top.iter().map(|d| d.to_string()).collect();
    for d in top {
        c.dir(d, 0o755)?;
    }
    c.chardev("dev/console", 0o600, 5, 1)?;
    c.file(
        "bin/busybox",
        0o755,
        &fs::read(busybox).with_context(|| format!("reading {}", busybox.display()))?,
    )?;
    c.symlink("bin/sh", "busybox")?;
    let init = INIT_TEMPLATE.replace("@ROOT_LABEL@", root_label);
    c.file("init", 0o755, init.as_bytes())?;
    let mut list = String::new();
    for m in order {
        let p = modules
            .path(m)
            .with_context(|| format!("module {m} vanished"))?;
        c.file(&format!("lib/modules/{m}.ko"), 0o644, &fs::read(p)?)?;
        list.push_str(m);
        list.push('\n');
    }
    c.file("etc/imgbuild/modules", 0o644, list.as_bytes())?;
    for p in programs {
        p.add_to(&mut c, &mut dirs)?;
    }
    c.file(
        "etc/imgbuild/root-label",
        0o644,
        format!("{root_label}\n").as_bytes(),
    )?;
    zstd(&c.finish(512))
}

/// `zstd -19` (single-threaded, so the output only depends on the input and zstd's version).
fn zstd(data: &[u8]) -> Result<Vec<u8>> {
    let mut child = cmd("zstd")
        .args(["-q", "-19", "-T1", "-c", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting zstd (apt-get install zstd)")?;
    let mut stdin = child.stdin.take().context("zstd stdin")?;
    let data = data.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&data));
    let out = child.wait_with_output()?;
    writer
        .join()
        .map_err(|_| anyhow::anyhow!("zstd writer thread panicked"))??;
    if !out.status.success() {
        bail!("zstd failed with {}", out.status);
    }
    Ok(out.stdout)
}
