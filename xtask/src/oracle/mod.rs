//! `cargo xtask oracle`: nixpkgs' own boot builders as the oracle for imgbuild's boot files.
//!
//! nixpkgs' `systemd-boot-builder.py` and `extlinux-conf-builder.sh` of a release (MIT, not
//! in this repository: a developer puts them in `--builder-dir DIR/<release>/`, see
//! `fixtures/oracle/README.md`) are run, as `switch-to-configuration` and `sd-image.nix`
//! run them, on small fixture toplevels: the committed demo closures plus one generated
//! toplevel per case (`fixtures/oracle/nix/store`, text only, made here from the demo's
//! toplevel with the release's `nixos-version`, bootspec label and `org.imgbuild.v1`
//! settings). What they write (the ESP for systemd-boot, `/boot` for extlinux) is recorded as
//! golden data under `fixtures/oracle/<release>/<case>/`: `listing.txt` (every file with size
//! and SHA-256, every directory), the text files themselves under `tree/`, and `meta.json`.
//! `tests/e2e/oracle.rs` builds the same toplevels with imgbuild and compares.
//!
//! How a builder runs: its `@placeholders@` substituted as `systemd-boot.nix` /
//! `generic-extlinux-compatible` would (stubs for `nix-env --list-generations`, `bootctl
//! install`, `systemd-machine-id-setup`, the mount-point and extra-files scripts), as root in
//! `unshare --mount`: the case's store bind-mounted on `/nix/store`, a tmpfs on
//! `/nix/var/nix` (systemd-boot: `profiles/system-1-link` to the toplevel, as imgbuild's
//! image has; extlinux: no profiles, as in `sd-image.nix`'s build sandbox), a tmpfs on `/boot` (the ESP), `/etc/machine-id` hidden behind an overlay,
//! `TZ=UTC`. The 25.11 and 26.11 systemd-boot builders need Python 3.12 (`type` aliases,
//! `Path.walk`, `Path.glob(case_sensitive=)`): `--python`, else the first python3.12+ found.

mod builder;
mod golden;

use crate::util::{self, cmd};
use anyhow::{bail, ensure, Context, Result};
use builder::{find_python, run_case};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct OracleArgs {
    /// Directory with nixpkgs' builders: `<release>/systemd-boot-builder.py` and
    /// `<release>/extlinux-conf-builder.sh` for 24.05, 25.11 and 26.11
    #[arg(long)]
    pub builder_dir: Option<PathBuf>,
    /// Python 3.12 or newer for the builders that need it (default: the first found)
    #[arg(long)]
    pub python: Option<PathBuf>,
    /// Only this case (`RELEASE/CASE`, e.g. `26.11/systemd-boot-counting`)
    #[arg(long)]
    pub only: Option<String>,
    /// Only regenerate the case toplevels in fixtures/oracle/nix/store (no builder runs)
    #[arg(long)]
    pub toplevels_only: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Loader {
    SystemdBoot,
    Extlinux,
}

impl Loader {
    pub fn name(self) -> &'static str {
        match self {
            Loader::SystemdBoot => "systemd-boot",
            Loader::Extlinux => "extlinux",
        }
    }
    fn builder_file(self) -> &'static str {
        match self {
            Loader::SystemdBoot => "systemd-boot-builder.py",
            Loader::Extlinux => "extlinux-conf-builder.sh",
        }
    }
    /// The imgbuild format whose image holds this loader's files, and the committed demo
    /// closure the case toplevel is made from.
    fn format_and_base(self) -> (&'static str, &'static str) {
        match self {
            Loader::SystemdBoot => ("raw-efi", "demo"),
            Loader::Extlinux => ("sd-aarch64", "demo-aarch64"),
        }
    }
}

/// One golden case: a release's builder on a toplevel carrying these settings.
#[derive(Clone, Debug)]
pub struct Case {
    pub release: &'static str,
    pub name: &'static str,
    pub loader: Loader,
    /// `boot.loader.timeout` (None = null).
    pub timeout: Option<u32>,
    pub editor: bool,
    pub console_mode: &'static str,
    /// `boot.loader.systemd-boot.bootCounting.{enable,tries}` where the release has it.
    pub counting: Option<(bool, u32)>,
    /// `installDeviceTree`: the bootspec's `org.nixos.systemd-boot.devicetree` names a DTB.
    pub devicetree: bool,
}

impl Case {
    pub fn id(&self) -> String {
        format!("{}/{}", self.release, self.name)
    }
}

const fn case(release: &'static str, name: &'static str, loader: Loader) -> Case {
    Case {
        release,
        name,
        loader,
        timeout: Some(5),
        editor: true,
        console_mode: "keep",
        counting: None,
        devicetree: false,
    }
}

/// The golden cases: 24.05, 25.11, 26.11 x systemd-boot, extlinux x boot counting off/on
/// (on only in 26.11), plus non-default loader.conf settings in 25.11 and 26.11, and a
/// device tree (`installDeviceTree`) in 25.11 and 26.11.
pub fn cases() -> Vec<Case> {
    use Loader::{Extlinux, SystemdBoot};
    vec![
        case("24.05", "systemd-boot", SystemdBoot),
        case("24.05", "extlinux", Extlinux),
        case("25.11", "systemd-boot", SystemdBoot),
        Case {
            timeout: None,
            editor: false,
            console_mode: "max",
            ..case("25.11", "systemd-boot-options", SystemdBoot)
        },
        case("25.11", "extlinux", Extlinux),
        Case {
            counting: Some((false, 3)),
            ..case("26.11", "systemd-boot", SystemdBoot)
        },
        Case {
            counting: Some((true, 3)),
            ..case("26.11", "systemd-boot-counting", SystemdBoot)
        },
        Case {
            timeout: None,
            editor: false,
            console_mode: "auto",
            counting: Some((true, 5)),
            ..case("26.11", "systemd-boot-counting-options", SystemdBoot)
        },
        case("26.11", "extlinux", Extlinux),
        Case {
            devicetree: true,
            ..case("25.11", "systemd-boot-devicetree", SystemdBoot)
        },
        Case {
            devicetree: true,
            counting: Some((true, 3)),
            ..case("26.11", "systemd-boot-devicetree", SystemdBoot)
        },
    ]
}

/// Where each builder of this session came from (see fixtures/oracle/README.md).
fn provenance(release: &str, loader: Loader) -> &'static str {
    match (release, loader) {
        ("24.05", Loader::SystemdBoot) => "NixOS/nixpkgs 379460a0849431a093134bb93137db0f2ed3c8ad (os.path version, 15206 chars)",
        ("25.11", Loader::SystemdBoot) => "NixOS/nixpkgs 0137840114d1444c766db37c01e96258e4edf5fb (pathlib version without boot counting, 18077 chars)",
        ("26.11", Loader::SystemdBoot) => "NixOS/nixpkgs boot-counting builder (PR #447173 shape), code index id 52435660369, commit not given by the index (24051 chars)",
        ("24.05", Loader::Extlinux) => "NixOS/nixpkgs extlinux-conf-builder.sh, code index id 106932251, commit not given (MENU TITLE before TIMEOUT, 4924 chars)",
        (_, Loader::Extlinux) => "NixOS/nixpkgs 8ee7ca3fd50f4d0e3124dbfb1ee736e8a74e0961 (menu variable, TIMEOUT before MENU TITLE, 5486 chars)",
        _ => "unknown",
    }
}

/// `nixos-version` of a release's case toplevels.
pub fn release_version(release: &str) -> Result<&'static str> {
    Ok(match release {
        "24.05" => "24.05.20240601.b3b2b28",
        "25.11" => "25.11.20251130.0a1b2c3",
        "26.11" => "26.11.20261201.abcdef0",
        _ => bail!("no version for release {release}"),
    })
}

/// Release code names for the bootspec label (26.11's is a placeholder: only the shape of the
/// label matters, both sides read it from boot.json).
fn code_name(release: &str) -> &'static str {
    match release {
        "24.05" => "Uakari",
        "25.11" => "Xantusia",
        _ => "Zokor",
    }
}

/// The `org.imgbuild.v1.bootloader` object of CONTRACT.md for a case.
pub fn bootloader_settings(
    loader: Loader,
    timeout: Option<u32>,
    editor: bool,
    console_mode: &str,
    counting: Option<(bool, u32)>,
) -> Value {
    let mut b = json!({
        "type": loader.name(),
        "timeout": timeout,
        "editor": editor,
        "consoleMode": console_mode,
        "rebootForBitlocker": false,
        "distroName": "NixOS",
        "installDeviceTree": false,
    });
    if let Some((enable, tries)) = counting {
        b["bootCounting"] = json!({ "enable": enable, "tries": tries });
    }
    b
}

/// Writes a copy of toplevel `base` (a toplevel directory of a fixture store) under a new name
/// into `store` (`.../nix/store`): `nixos-version`, the bootspec label, `init` and `toplevel`
/// for `version`, and `merges` (`{"<extension key>": {...}}`) merged into boot.json's
/// top-level extension objects (`"org.imgbuild.v1"`, `"org.nixos.systemd-boot"`). The store
/// hash is derived from the contents, so the same inputs give the same path. Returns the
/// logical store path.
pub fn write_variant_toplevel(
    base: &Path,
    store: &Path,
    version: &str,
    code: &str,
    merges: &Value,
) -> Result<String> {
    let base_name = base
        .file_name()
        .and_then(|n| n.to_str())
        .context("toplevel without a name")?;
    let old_path = format!("/nix/store/{base_name}");
    let stem = base_name
        .get(33..)
        .and_then(|n| n.strip_prefix("nixos-system-"))
        .and_then(|n| n.rsplit_once('-').map(|(host, _)| host))
        .with_context(|| format!("{base_name} is not a nixos-system-HOST-VERSION path"))?;
    let name = format!("nixos-system-{stem}-{version}");
    let placeholder = format!("/nix/store/{}-{name}", "0".repeat(32));

    // The entries, with the placeholder for the new path in top-level text files.
    let mut entries: Vec<(String, Entry)> = Vec::new();
    for p in sorted_children(base)? {
        let fname = p
            .file_name()
            .context("no file name")?
            .to_string_lossy()
            .into_owned();
        let meta = fs::symlink_metadata(&p)?;
        let entry = if meta.file_type().is_symlink() {
            Entry::Link(fs::read_link(&p)?.to_string_lossy().into_owned())
        } else if meta.is_dir() {
            Entry::Dir(p.clone())
        } else {
            let bytes = fs::read(&p)?;
            let exec = meta.permissions().mode() & 0o111 != 0;
            let bytes = match (fname.as_str(), String::from_utf8(bytes)) {
                ("nixos-version", _) => version.as_bytes().to_vec(),
                ("boot.json", Ok(t)) => {
                    boot_json(&t, &placeholder, version, code, merges)?.into_bytes()
                }
                (_, Ok(t)) => t.replace(&old_path, &placeholder).into_bytes(),
                (_, Err(e)) => e.into_bytes(),
            };
            Entry::File(bytes, exec)
        };
        entries.push((fname, entry));
    }
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    for (n, e) in &entries {
        h.update(b"\0");
        h.update(n.as_bytes());
        match e {
            Entry::Link(t) => h.update(format!("\0link\0{t}")),
            Entry::File(b, x) => {
                h.update(format!("\0file\0{x}\0"));
                h.update(b);
            }
            Entry::Dir(d) => hash_tree(&mut h, d, d)?,
        }
    }
    let digest = h.finalize();
    let hash = imgbuild_nix::encoding::nix32_encode(&digest[..20]);
    let dir_name = format!("{hash}-{name}");
    let path = format!("/nix/store/{dir_name}");
    let dir = store.join(&dir_name);
    util::remove_tree(&dir)?;
    fs::create_dir_all(&dir)?;
    for (n, e) in entries {
        let p = dir.join(&n);
        match e {
            Entry::Link(t) => std::os::unix::fs::symlink(t, &p)?,
            Entry::Dir(src) => util::run(cmd("cp").arg("-a").arg(&src).arg(&p))?,
            Entry::File(b, exec) => {
                let b = match String::from_utf8(b) {
                    Ok(t) => t.replace(&placeholder, &path).into_bytes(),
                    Err(e) => e.into_bytes(),
                };
                fs::write(&p, b)?;
                let mode = if exec { 0o755 } else { 0o644 };
                fs::set_permissions(&p, fs::Permissions::from_mode(mode))?;
            }
        }
    }
    Ok(path)
}

/// Names, link targets and file bytes of a directory tree, in order, into `h`.
fn hash_tree(h: &mut Sha256, root: &Path, dir: &Path) -> Result<()> {
    for p in sorted_children(dir)? {
        let rel = p.strip_prefix(root)?.to_string_lossy().into_owned();
        let meta = fs::symlink_metadata(&p)?;
        h.update(format!("\0{rel}\0"));
        if meta.file_type().is_symlink() {
            h.update(fs::read_link(&p)?.to_string_lossy().as_bytes());
        } else if meta.is_dir() {
            hash_tree(h, root, &p)?;
        } else {
            h.update(fs::read(&p)?);
        }
    }
    Ok(())
}

enum Entry {
    Link(String),
    File(Vec<u8>, bool),
    /// A subdirectory (e.g. `bin/`, `specialisation/`), copied as it is.
    Dir(PathBuf),
}

fn boot_json(
    text: &str,
    toplevel: &str,
    version: &str,
    code: &str,
    merges: &Value,
) -> Result<String> {
    let mut v: Value = serde_json::from_str(text).context("parsing the demo's boot.json")?;
    let main = v
        .get_mut("org.nixos.bootspec.v1")
        .and_then(Value::as_object_mut)
        .context("boot.json without org.nixos.bootspec.v1")?;
    let label = main
        .get("label")
        .and_then(Value::as_str)
        .context("bootspec without a label")?;
    let linux = label
        .rsplit_once(" (Linux ")
        .map(|(_, l)| l)
        .context("label without (Linux ...)")?;
    let label = format!("NixOS {code} {version} (Linux {linux}");
    main.insert("label".into(), json!(label));
    main.insert("init".into(), json!(format!("{toplevel}/init")));
    main.insert("toplevel".into(), json!(toplevel));
    let obj = v.as_object_mut().context("boot.json is not an object")?;
    for (key, add) in merges.as_object().into_iter().flatten() {
        let target = obj
            .entry(key.clone())
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .with_context(|| format!("{key} is not an object"))?;
        for (k, val) in add.as_object().into_iter().flatten() {
            target.insert(k.clone(), val.clone());
        }
    }
    Ok(serde_json::to_string_pretty(&v)? + "\n")
}

/// The demo toplevel directory of `base` (`fixtures/demo` or `fixtures/demo-aarch64`).
pub fn demo_toplevel(base_dir: &Path) -> Result<PathBuf> {
    let target = fs::read_link(base_dir.join("result"))
        .with_context(|| format!("reading {}/result", base_dir.display()))?;
    let name = target.file_name().context("result points nowhere")?;
    Ok(base_dir.join("nix/store").join(name))
}

fn oracle_dir() -> PathBuf {
    util::repo_root().join(golden::DIR)
}

/// The placeholder device tree of the devicetree cases: one store path with one DTB, named
/// by its contents like the case toplevels. Returns (store path, the DTB's path).
fn write_dtb_path(store: &Path) -> Result<(String, String)> {
    let (name, file) = ("device-tree-demo", "broadcom/bcm2711-rpi-4-b.dtb");
    let text = "IMGBUILD DEMO PLACEHOLDER, NOT A REAL DEVICE TREE\n";
    let digest = Sha256::digest(format!("{name}\0{file}\0{text}"));
    let dir_name = format!(
        "{}-{name}",
        imgbuild_nix::encoding::nix32_encode(&digest[..20])
    );
    let dir = store.join(&dir_name);
    util::remove_tree(&dir)?;
    let dtb = dir.join(file);
    fs::create_dir_all(dtb.parent().context("no parent")?)?;
    fs::write(&dtb, text)?;
    let path = format!("/nix/store/{dir_name}");
    Ok((path.clone(), format!("{path}/{file}")))
}

/// Regenerates the case toplevels; returns, in `cases()` order, the store paths of each case
/// in fixtures/oracle/nix/store, its toplevel first.
pub fn write_case_toplevels(cases: &[Case]) -> Result<Vec<Vec<String>>> {
    let store = oracle_dir().join("nix/store");
    fs::create_dir_all(&store)?;
    let mut keep = Vec::new();
    let mut out = Vec::new();
    let (dtb_path, dtb) = write_dtb_path(&store)?;
    for c in cases {
        let (_, base) = c.loader.format_and_base();
        let base_dir = util::repo_root().join("fixtures").join(base);
        let mut ext = json!({
            "release": c.release,
            "bootloader": bootloader_settings(c.loader, c.timeout, c.editor, c.console_mode, c.counting),
        });
        if c.loader == Loader::Extlinux {
            // generic-extlinux-compatible has no editor/console/counting settings.
            ext["bootloader"] = json!({ "type": "extlinux", "timeout": c.timeout });
        }
        if c.devicetree {
            ext["bootloader"]["installDeviceTree"] = json!(true);
        }
        let mut merges = json!({ "org.imgbuild.v1": ext });
        if c.devicetree {
            merges["org.nixos.systemd-boot"] = json!({ "devicetree": dtb });
        }
        let path = write_variant_toplevel(
            &demo_toplevel(&base_dir)?,
            &store,
            release_version(c.release)?,
            code_name(c.release),
            &merges,
        )?;
        keep.push(path.clone());
        let mut paths = vec![path];
        if c.devicetree {
            paths.push(dtb_path.clone());
        }
        out.push(paths);
    }
    keep.push(dtb_path);
    // Drop toplevels of cases that no longer exist.
    for e in fs::read_dir(&store)? {
        let e = e?;
        let logical = format!("/nix/store/{}", e.file_name().to_string_lossy());
        if !keep.contains(&logical) {
            util::remove_tree(&e.path())?;
        }
    }
    Ok(out)
}

/// A store for one case: the demo's store paths plus the case's paths from
/// fixtures/oracle/nix/store, copied (the builders and imgbuild read only store contents;
/// copies keep the committed fixtures untouched).
pub fn assemble_store(base: &str, paths: &[String], dest: &Path) -> Result<()> {
    let store = dest.join("nix/store");
    fs::create_dir_all(&store)?;
    let paths: Vec<&str> = paths.iter().map(String::as_str).collect();
    let sources = golden::store_sources(&util::repo_root(), &format!("fixtures/{base}"), &paths)
        .map_err(anyhow::Error::msg)?;
    util::run(cmd("cp").arg("-a").args(sources).arg(&store))
}

fn sorted_children(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    v.sort();
    Ok(v)
}

pub fn run(args: OracleArgs) -> Result<()> {
    let all = cases();
    let toplevels = write_case_toplevels(&all)?;
    if args.toplevels_only {
        for (c, t) in all.iter().zip(&toplevels) {
            println!("{} {}", c.id(), t.join(" "));
        }
        return Ok(());
    }
    let builders = args.builder_dir.context(
        "--builder-dir DIR is needed (nixpkgs' builders; see fixtures/oracle/README.md)",
    )?;
    ensure!(
        util::output_quiet(cmd("id").arg("-u"))?.trim() == "0",
        "cargo xtask oracle mounts in a private mount namespace: run it as root"
    );
    let python = find_python(args.python.as_deref())?;
    eprintln!("oracle: Python {} at {}", python.1, python.0.display());
    let mut n = 0;
    for (c, t) in all.iter().zip(&toplevels) {
        if args.only.as_deref().is_some_and(|o| o != c.id()) {
            continue;
        }
        run_case(c, t, &builders, &python)?;
        n += 1;
    }
    ensure!(n > 0, "no case matched --only");
    println!("oracle: {n} case(s) written under fixtures/oracle");
    Ok(())
}
