//! `cargo xtask fixtures`: a realistic NixOS-like closure built by real Nix (Debian's
//! nix-bin) into a chroot store `DIR/nix/store`, offline, with busybox-static builders.
//! See xtask/nix/fixture.nix for what the closure contains and fixtures/README.md for the
//! output layout.

use crate::debs::Debs;
use crate::initrd::{self, ModuleTree};
use crate::util::{self, cmd, output, run, Timer};
use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

const FIXTURE_NIX: &str = include_str!("../nix/fixture.nix");
const DEMO_NIX: &str = include_str!("../nix/demo.nix");
const MARKER_FILE: &str = ".imgbuild-fixture";
/// The line the fixture initrd prints when the image is good (followed by ` toplevel=<path>`).
pub const BOOT_OK: &str = "IMGBUILD-BOOT-OK";
pub const BOOT_FAIL: &str = "IMGBUILD-BOOT-FAIL";

const NIXOS_VERSION: &str = "24.05.20240601.b3b2b28";
const CODE_NAME: &str = "Uakari";
const HOST_NAME: &str = "imgbuild-test";

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Arch {
    #[value(name = "x86_64")]
    X86_64,
    #[value(name = "aarch64")]
    Aarch64,
}

impl Arch {
    pub fn name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        }
    }
    fn debarch(self) -> &'static str {
        match self {
            Arch::X86_64 => "amd64",
            Arch::Aarch64 => "arm64",
        }
    }
    fn kernel_meta(self) -> &'static str {
        match self {
            Arch::X86_64 => "linux-image-cloud-amd64",
            Arch::Aarch64 => "linux-image-arm64",
        }
    }
    fn kernel_file(self) -> &'static str {
        match self {
            Arch::X86_64 => "bzImage",
            Arch::Aarch64 => "Image",
        }
    }
    fn console(self) -> &'static str {
        match self {
            Arch::X86_64 => "ttyS0",
            Arch::Aarch64 => "ttyAMA0",
        }
    }
    pub fn root_label(self) -> &'static str {
        match self {
            Arch::X86_64 => "nixos",
            Arch::Aarch64 => "NIXOS_SD",
        }
    }
    /// Modules the initrd loads to find the root disk (bootrig README, pitfall 4): the
    /// cloud-amd64 kernel has ext4 and NVMe built in; arm64 has only virtio core built in.
    fn initrd_modules(self) -> &'static [&'static str] {
        match self {
            Arch::X86_64 => &["virtio_pci", "virtio_blk", "virtio_scsi", "sd_mod"],
            // bcm2835 (the SD host controller) and mmc_block: the Pi 3 boot of QEMU's raspi3b
            // reads the root from its SD card.
            Arch::Aarch64 => &[
                "virtio_pci",
                "virtio_mmio",
                "virtio_blk",
                "virtio_scsi",
                "sd_mod",
                "nvme",
                "mmc_block",
                "bcm2835",
                "crc32c_generic",
                "ext4",
            ],
        }
    }
}

/// `fixture.json`: what a test needs to know about a fixture without parsing the store.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FixtureInfo {
    pub arch: Arch,
    pub system: String,
    pub toplevel: String,
    pub kernel: String,
    pub initrd: String,
    pub init: String,
    pub kernel_params: String,
    pub root_label: String,
    /// The exact line a good boot prints on the serial console; None for the demo.
    pub marker: Option<String>,
    pub kernel_version: String,
    pub store_paths: usize,
    pub total_nar_size: u64,
    pub systemd_boot: Option<String>,
    pub dtbs: Option<String>,
    pub firmware: Option<String>,
}

impl FixtureInfo {
    pub fn load(dir: &Path) -> Result<Self> {
        let p = dir.join("fixture.json");
        let s = fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
        serde_json::from_str(&s).with_context(|| format!("parsing {}", p.display()))
    }
}

pub fn default_dir(arch: Arch) -> PathBuf {
    util::target_dir().join("fixtures").join(arch.name())
}

fn nix_config() -> &'static str {
    "sandbox = false\nbuild-users-group =\nsubstituters =\nrequire-sigs = false\nwarn-dirty = false\n"
}

/// The host's busybox-static with one symlink per applet: the builder of every derivation.
fn builder_busybox(debs: &Debs) -> Result<PathBuf> {
    let deb = debs.fetch("busybox-static", "amd64")?;
    let x = debs.extract(&deb)?;
    let dir = util::cache_root().join("work").join(format!(
        "builder-{}",
        deb.file_stem().context("deb name")?.to_string_lossy()
    ));
    if dir.join(".done").exists() {
        return Ok(dir.join("root"));
    }
    util::remove_tree(&dir)?;
    let bin = dir.join("root/bin");
    fs::create_dir_all(&bin)?;
    fs::copy(x.join("bin/busybox"), bin.join("busybox"))?;
    let list = output(cmd(bin.join("busybox")).arg("--list"))?;
    for applet in list
        .lines()
        .map(str::trim)
        .filter(|a| !a.is_empty() && *a != "busybox")
    {
        symlink("busybox", bin.join(applet))?;
    }
    fs::write(dir.join(".done"), b"")?;
    Ok(dir.join("root"))
}

/// 16 MiB of xorshift64* noise: incompressible, deterministic filler for "binaries".
fn write_pool(path: &Path) -> Result<()> {
    let mut s: u64 = 0x1146_B0D1_2024_0601;
    let mut buf = Vec::with_capacity(16 << 20);
    while buf.len() < 16 << 20 {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        buf.extend_from_slice(&s.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    fs::write(path, buf).with_context(|| format!("writing {}", path.display()))
}

/// Sources and parameters staged for one fixture build.
struct Staged {
    dir: PathBuf,
    kernel_version: String,
}

fn stage(arch: Arch, debs: &Debs) -> Result<Staged> {
    let builder = builder_busybox(debs)?;
    debs.ensure_arch(arch.debarch())?;
    let bb = debs.extract(&debs.fetch("busybox-static", arch.debarch())?)?;
    let kpkg = debs.resolve_kernel(arch.kernel_meta(), arch.debarch())?;
    let kdeb = debs.fetch(&kpkg, arch.debarch())?;
    let kx = debs.extract(&kdeb)?;
    let kver_full = Debs::version(&kdeb)?;
    let kernel_version = kver_full
        .split('-')
        .next()
        .unwrap_or(&kver_full)
        .to_string();
    let vmlinuz = fs::read_dir(kx.join("boot"))?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })
        .with_context(|| format!("no boot/vmlinuz-* in {}", kdeb.display()))?;
    let abi = vmlinuz
        .file_name()
        .context("vmlinuz name")?
        .to_string_lossy()
        .trim_start_matches("vmlinuz-")
        .to_string();
    eprintln!(
        "xtask: {} kernel {kpkg} ({kernel_version}, abi {abi})",
        arch.name()
    );

    let dir = util::cache_root()
        .join("work")
        .join(format!("fixture-{}", arch.name()));
    util::remove_tree(&dir)?;
    fs::create_dir_all(&dir)?;

    // kernel: bzImage / Image (Debian's arm64 vmlinuz is an uncompressed Image), System.map, config
    let k = dir.join("kernel");
    fs::create_dir_all(&k)?;
    fs::copy(&vmlinuz, k.join(arch.kernel_file()))?;
    fs::copy(
        kx.join(format!("boot/System.map-{abi}")),
        k.join("System.map"),
    )?;
    fs::copy(kx.join(format!("boot/config-{abi}")), k.join("config"))?;
    if arch == Arch::Aarch64 {
        let dtbsrc = kx.join(format!("usr/lib/linux-image-{abi}"));
        let mut n = 0;
        for sub in ["broadcom", "allwinner", "rockchip"] {
            let Ok(rd) = fs::read_dir(dtbsrc.join(sub)) else {
                continue;
            };
            let mut names: Vec<String> = rd
                .flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .collect();
            names.sort();
            for name in names {
                let keep = match sub {
                    "broadcom" => {
                        name.starts_with("bcm2711-")
                            || name.starts_with("bcm2710-")
                            || name.starts_with("bcm2837-")
                    }
                    "allwinner" => name.starts_with("sun50i-a64-pine64"),
                    _ => {
                        name.starts_with("rk3399-rockpro64")
                            || name.starts_with("rk3399-pinebook-pro")
                    }
                };
                if keep && name.ends_with(".dtb") {
                    fs::create_dir_all(k.join("dtbs").join(sub))?;
                    fs::copy(
                        dtbsrc.join(sub).join(&name),
                        k.join("dtbs").join(sub).join(&name),
                    )?;
                    n += 1;
                }
            }
        }
        ensure!(
            n >= 4,
            "only {n} device trees found under {}",
            dtbsrc.display()
        );
    }

    // modules: what the initrd needs plus a few more, in the usual lib/modules layout
    let tree = ModuleTree::open(&kx.join("lib/modules").join(&abi))?;
    let order = tree.resolve(arch.initrd_modules())?;
    let mut shipped = order.clone();
    for extra in ["vfat", "nls_cp437", "nls_iso8859_1", "isofs", "btrfs"] {
        if let Ok(more) = tree.resolve(&[extra]) {
            shipped.extend(more);
        }
    }
    shipped.sort();
    shipped.dedup();
    let mdir = dir.join("modules/lib/modules").join(&abi);
    for m in &shipped {
        let src = tree.path(m).with_context(|| format!("module {m}"))?;
        let rel = src
            .strip_prefix(tree.dir())
            .context("module below its tree")?;
        fs::create_dir_all(mdir.join(rel).parent().context("parent")?)?;
        fs::copy(src, mdir.join(rel))?;
    }
    for f in ["modules.builtin", "modules.order"] {
        fs::copy(tree.dir().join(f), mdir.join(f))?;
    }
    eprintln!("xtask: initrd modules (insmod order): {}", order.join(" "));

    let initrd = initrd::build(&bb.join("bin/busybox"), &tree, &order, arch.root_label())?;
    fs::write(dir.join("initrd.zst"), initrd)?;

    let mut systemd_boot = serde_json::Value::Null;
    let sdeb = debs.fetch("systemd-boot-efi", "amd64")?;
    let systemd_version = Debs::version(&sdeb)?
        .split('-')
        .next()
        .unwrap_or("252")
        .to_string();
    if arch == Arch::X86_64 {
        let sx = debs.extract(&sdeb)?;
        let efi = sx.join("usr/lib/systemd/boot/efi/systemd-bootx64.efi");
        ensure!(
            efi.is_file(),
            "{} lacks systemd-bootx64.efi",
            sdeb.display()
        );
        fs::copy(&efi, dir.join("systemd-bootx64.efi"))?;
        systemd_boot = dir.join("systemd-bootx64.efi").to_string_lossy().into();
    }
    write_pool(&dir.join("pool.bin"))?;

    let params = serde_json::json!({
        "arch": arch.name(),
        "system": format!("{}-linux", arch.name()),
        "hostName": HOST_NAME,
        "nixosVersion": NIXOS_VERSION,
        "codeName": CODE_NAME,
        "kernelVersion": kernel_version,
        "modDirVersion": abi,
        "kernelFile": arch.kernel_file(),
        "kernelParams": [format!("console={},115200", arch.console()), "panic=1", "loglevel=4"],
        "systemdVersion": systemd_version,
        "builder": builder,
        "pool": dir.join("pool.bin"),
        "kernelSrc": k,
        "modulesSrc": dir.join("modules"),
        "initrd": dir.join("initrd.zst"),
        "systemdBoot": systemd_boot,
        "rpiFirmware": arch == Arch::Aarch64,
    });
    fs::write(dir.join("params.json"), serde_json::to_vec_pretty(&params)?)?;
    fs::write(dir.join("fixture.nix"), FIXTURE_NIX)?;
    Ok(Staged {
        dir,
        kernel_version,
    })
}

/// Prepares `out` for a (re)build: refuses to touch a non-empty directory we did not make.
fn claim_out_dir(out: &Path, what: &str) -> Result<()> {
    if out.exists() {
        let nonempty = fs::read_dir(out)?.next().is_some();
        if nonempty && !out.join(MARKER_FILE).exists() {
            bail!(
                "{} is not empty and was not made by `cargo xtask fixtures`; refusing to use it",
                out.display()
            );
        }
    }
    fs::create_dir_all(out)?;
    fs::write(out.join(MARKER_FILE), what)?;
    Ok(())
}

/// `nix-build --store STORE EXPR --argstr params PARAMS -o STORE/result`; returns the toplevel.
fn nix_build(store: &Path, expr: &Path, params: &Path) -> Result<String> {
    let out = output(
        cmd("nix-build")
            .env("NIX_CONFIG", nix_config())
            .arg("--store")
            .arg(store)
            .arg(expr)
            .arg("--argstr")
            .arg("params")
            .arg(params)
            .arg("-o")
            .arg(store.join("result"))
            .args([
                "--max-jobs",
                "2",
                "--cores",
                "1",
                "--no-build-output",
                "--quiet",
            ]),
    )?;
    let top = out.lines().last().unwrap_or_default().trim().to_string();
    ensure!(
        top.starts_with("/nix/store/"),
        "nix-build printed no store path: {out:?}"
    );
    Ok(top)
}

/// One record of `nix-store --dump-db` / closureInfo `registration`.
struct Registration {
    path: String,
    nar_hash: String,
    nar_size: u64,
    refs: Vec<String>,
}

fn parse_registration(text: &str) -> Result<Vec<Registration>> {
    let mut lines = text.lines();
    let mut out = Vec::new();
    while let Some(path) = lines.next() {
        if path.is_empty() {
            continue;
        }
        let mut next = |what: &str| {
            lines
                .next()
                .with_context(|| format!("registration of {path}: missing {what}"))
        };
        let nar_hash = next("hash")?.to_string();
        let nar_size = next("size")?.parse().context("nar size")?;
        let _deriver = next("deriver")?;
        let n: usize = next("reference count")?
            .parse()
            .context("reference count")?;
        let refs = (0..n)
            .map(|_| next("reference").map(str::to_string))
            .collect::<Result<_>>()?;
        out.push(Registration {
            path: path.to_string(),
            nar_hash,
            nar_size,
            refs,
        });
    }
    Ok(out)
}

/// Writes `DIR/closure-info/{store-paths,registration,total-nar-size}` like nixpkgs'
/// closureInfo (deriver lines empty), from the store's own database.
fn write_closure_info(store: &Path, toplevel: &str, dest: &Path) -> Result<(usize, u64)> {
    let paths: Vec<String> = output(
        cmd("nix-store")
            .env("NIX_CONFIG", nix_config())
            .arg("--store")
            .arg(store)
            .arg("-qR")
            .arg(toplevel),
    )?
    .lines()
    .map(str::to_string)
    .collect();
    ensure!(
        paths.iter().any(|p| p == toplevel),
        "closure of {toplevel} lacks itself"
    );
    let dump = output(
        cmd("nix-store")
            .env("NIX_CONFIG", nix_config())
            .arg("--store")
            .arg(store)
            .arg("--dump-db")
            .args(&paths),
    )?;
    let regs = parse_registration(&dump)?;
    ensure!(
        regs.len() == paths.len(),
        "--dump-db gave {} records for {} paths",
        regs.len(),
        paths.len()
    );
    let mut reg_text = String::new();
    let mut total = 0u64;
    for r in &regs {
        total += r.nar_size;
        reg_text.push_str(&format!(
            "{}\n{}\n{}\n\n{}\n",
            r.path,
            r.nar_hash,
            r.nar_size,
            r.refs.len()
        ));
        for x in &r.refs {
            reg_text.push_str(x);
            reg_text.push('\n');
        }
    }
    util::remove_tree(dest)?;
    fs::create_dir_all(dest)?;
    fs::write(
        dest.join("store-paths"),
        paths.iter().map(|p| format!("{p}\n")).collect::<String>(),
    )?;
    fs::write(dest.join("registration"), reg_text)?;
    fs::write(dest.join("total-nar-size"), format!("{total}\n"))?;
    Ok((paths.len(), total))
}

/// Reads `toplevel/boot.json` from a store root and fills in [`FixtureInfo`].
fn describe(
    root: &Path,
    arch: Arch,
    toplevel: &str,
    kernel_version: &str,
    paths: usize,
    total: u64,
    bootable: bool,
) -> Result<FixtureInfo> {
    let tl = root.join(toplevel.trim_start_matches('/'));
    let bj: serde_json::Value =
        serde_json::from_slice(&fs::read(tl.join("boot.json"))?).context("boot.json")?;
    let v1 = &bj["org.nixos.bootspec.v1"];
    let s = |v: &serde_json::Value| v.as_str().map(str::to_string).context("boot.json field");
    let params: Vec<String> = v1["kernelParams"]
        .as_array()
        .context("kernelParams")?
        .iter()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    let kparams = fs::read_to_string(tl.join("kernel-params"))?;
    ensure!(
        kparams == params.join(" "),
        "kernel-params {kparams:?} disagrees with boot.json"
    );
    let link = |n: &str| {
        fs::read_link(tl.join(n))
            .ok()
            .map(|p| p.to_string_lossy().into_owned())
    };
    let systemd_boot = link("systemd")
        .map(|s| format!("{s}/lib/systemd/boot/efi/systemd-bootx64.efi"))
        .filter(|p| root.join(p.trim_start_matches('/')).is_file());
    Ok(FixtureInfo {
        arch,
        system: s(&v1["system"])?,
        toplevel: toplevel.to_string(),
        kernel: s(&v1["kernel"])?,
        initrd: s(&v1["initrd"])?,
        init: s(&v1["init"])?,
        kernel_params: kparams,
        root_label: arch.root_label().to_string(),
        marker: bootable.then(|| format!("{BOOT_OK} toplevel={toplevel}")),
        kernel_version: kernel_version.to_string(),
        store_paths: paths,
        total_nar_size: total,
        systemd_boot,
        dtbs: link("dtbs"),
        firmware: bj["org.imgbuild.v1"]["firmware"]
            .as_str()
            .map(str::to_string),
    })
}

/// Builds (or brings up to date) the fixture for `arch` in `out`.
pub fn build(arch: Arch, out: &Path) -> Result<FixtureInfo> {
    util::need_tools(&[
        ("nix-build", "nix-bin"),
        ("nix-store", "nix-bin"),
        ("dpkg-deb", "dpkg"),
        ("apt-get", "apt"),
        ("zstd", "zstd"),
    ])?;
    let t = Timer::start();
    let out = util::absolute(out)?;
    let debs = Debs::new()?;
    let staged = stage(arch, &debs)?;
    claim_out_dir(&out, arch.name())?;
    let toplevel = nix_build(
        &out,
        &staged.dir.join("fixture.nix"),
        &staged.dir.join("params.json"),
    )?;
    let (n, total) = write_closure_info(&out, &toplevel, &out.join("closure-info"))?;
    let info = describe(
        &out,
        arch,
        &toplevel,
        &staged.kernel_version,
        n,
        total,
        true,
    )?;
    ensure!(
        out.join("nix/var/nix/db/db.sqlite").is_file(),
        "nix-build left no database"
    );
    fs::write(
        out.join("fixture.json"),
        serde_json::to_string_pretty(&info)? + "\n",
    )?;
    fs::write(out.join(RECIPE_STAMP), recipe(arch))?;
    eprintln!(
        "xtask: fixture {} in {}: {} store paths, NAR total {:.1} MiB, toplevel {} ({:.1} s)",
        arch.name(),
        out.display(),
        n,
        total as f64 / 1048576.0,
        toplevel,
        t.secs()
    );
    Ok(info)
}

/// Where a fixture records the recipe it was built from.
const RECIPE_STAMP: &str = "recipe.stamp";

/// What a fixture's contents depend on besides the Debian packages: the Nix recipe and the
/// initrd's module list. A fixture built from another recipe is rebuilt.
fn recipe(arch: Arch) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(FIXTURE_NIX.as_bytes());
    h.update(arch.initrd_modules().join(",").as_bytes());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Builds the fixture if `out/fixture.json` is missing or was made from another recipe.
pub fn ensure_built(arch: Arch, out: &Path) -> Result<FixtureInfo> {
    let same_recipe = fs::read_to_string(out.join(RECIPE_STAMP)).is_ok_and(|s| s == recipe(arch));
    match FixtureInfo::load(out) {
        Ok(info)
            if info.arch == arch
                && same_recipe
                && fs::symlink_metadata(out.join("result")).is_ok() =>
        {
            Ok(info)
        }
        _ => build(arch, out),
    }
}

/// Regenerates a small committed demo closure (`fixtures/demo` for x86_64,
/// `fixtures/demo-aarch64`): built by real Nix in a scratch store, then only the closure is
/// copied out.
pub fn build_demo(arch: Arch, out: &Path) -> Result<()> {
    util::need_tools(&[
        ("nix-build", "nix-bin"),
        ("nix-store", "nix-bin"),
        ("dpkg-deb", "dpkg"),
    ])?;
    let t = Timer::start();
    let out = util::absolute(out)?;
    let debs = Debs::new()?;
    let builder = builder_busybox(&debs)?;
    let work = util::cache_root().join(format!("work/demo-{}", arch.name()));
    fs::create_dir_all(&work)?;
    let store = work.join("store");
    claim_out_dir(&store, "demo-store")?;
    let params = serde_json::json!({ "builder": builder, "nixosVersion": NIXOS_VERSION, "codeName": CODE_NAME, "arch": arch.name() });
    fs::write(
        work.join("params.json"),
        serde_json::to_vec_pretty(&params)?,
    )?;
    fs::write(work.join("demo.nix"), DEMO_NIX)?;
    let toplevel = nix_build(&store, &work.join("demo.nix"), &work.join("params.json"))?;

    claim_out_dir(&out, "demo")?;
    util::remove_tree(&out.join("nix"))?;
    let (n, total) = write_closure_info(&store, &toplevel, &out.join("closure-info"))?;
    let dest = out.join("nix/store");
    fs::create_dir_all(&dest)?;
    for p in fs::read_to_string(out.join("closure-info/store-paths"))?.lines() {
        run(cmd("cp")
            .arg("-a")
            .arg(store.join(p.trim_start_matches('/')))
            .arg(&dest))?;
    }
    // like a git checkout: writable, only the executable bit carries meaning
    relax_modes(&dest)?;
    let result = out.join("result");
    let _ = fs::remove_file(&result);
    symlink(&toplevel, &result)?;
    let info = describe(&out, arch, &toplevel, "6.1.0", n, total, false)?;
    fs::write(
        out.join("fixture.json"),
        serde_json::to_string_pretty(&info)? + "\n",
    )?;
    eprintln!("xtask: demo closure in {}: {n} store paths, NAR total {total} bytes, toplevel {toplevel} ({:.1} s)", out.display(), t.secs());
    Ok(())
}

fn relax_modes(p: &Path) -> Result<()> {
    let meta = fs::symlink_metadata(p)?;
    if meta.file_type().is_symlink() {
        return Ok(());
    }
    let exec = meta.permissions().mode() & 0o111 != 0;
    let mode = if meta.is_dir() || exec { 0o755 } else { 0o644 };
    fs::set_permissions(p, fs::Permissions::from_mode(mode))?;
    if meta.is_dir() {
        for e in fs::read_dir(p)? {
            relax_modes(&e?.path())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registration_round_trip() {
        let text = "/nix/store/a-x\nabc\n12\n/nix/store/d.drv\n2\n/nix/store/a-x\n/nix/store/b-y\n/nix/store/b-y\ndef\n8\n\n0\n";
        let r = parse_registration(text).expect("parses");
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].refs, vec!["/nix/store/a-x", "/nix/store/b-y"]);
        assert_eq!(r[1].nar_size, 8);
        assert!(parse_registration("/nix/store/a-x\nabc\n").is_err());
    }
}
