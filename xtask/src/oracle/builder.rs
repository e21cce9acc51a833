//! Running one case: nixpkgs' builder with its placeholders substituted, stubs for the host
//! tools it calls, in a private mount namespace over the case's store; its output kept as the
//! case's golden directory.

use anyhow::{bail, ensure, Context, Result};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::fmt::Write as _;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::golden::{self, is_text, Item};
use super::{assemble_store, oracle_dir, provenance, sorted_children, Case, Loader};
use crate::util::{self, cmd};

/// Python 3.12 or newer: `--python`, else python3.13/python3.12/python3 on PATH, else pyenv's.
pub(super) fn find_python(given: Option<&Path>) -> Result<(PathBuf, String)> {
    let version = |p: &Path| -> Option<(u32, String)> {
        let out = std::process::Command::new(p)
            .arg("--version")
            .output()
            .ok()?;
        let s = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let v = s.strip_prefix("Python ")?.to_string();
        let mut it = v.split('.');
        let major: u32 = it.next()?.parse().ok()?;
        let minor: u32 = it.next()?.parse().ok()?;
        (major == 3).then_some((minor, v))
    };
    if let Some(p) = given {
        let (minor, v) = version(p).with_context(|| format!("{} --version failed", p.display()))?;
        ensure!(
            minor >= 12,
            "{} is Python {v}; the 25.11/26.11 builders need 3.12+",
            p.display()
        );
        return Ok((p.to_path_buf(), v));
    }
    let mut candidates: Vec<PathBuf> = ["python3.14", "python3.13", "python3.12", "python3"]
        .iter()
        .map(PathBuf::from)
        .collect();
    let home = std::env::var_os("PYENV_ROOT")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".pyenv")));
    if let Some(pyenv) = home {
        if let Ok(rd) = fs::read_dir(pyenv.join("versions")) {
            let mut v: Vec<PathBuf> = rd.flatten().map(|e| e.path().join("bin/python3")).collect();
            v.sort();
            v.reverse();
            candidates.extend(v);
        }
    }
    for c in candidates {
        if let Some((minor, v)) = version(&c) {
            if minor >= 12 {
                let abs = if c.is_absolute() {
                    c
                } else {
                    PathBuf::from(
                        util::output_quiet(
                            cmd("sh")
                                .arg("-c")
                                .arg(format!("command -v {}", c.display())),
                        )?
                        .trim(),
                    )
                };
                return Ok((abs, v));
            }
        }
    }
    bail!("no Python 3.12+ found (the 25.11/26.11 systemd-boot builders need it): pass --python")
}

const STUB_BOOTCTL: &str = r#"#!/bin/bash
# Stand-in for `bootctl install` (systemd >= 254 on NixOS): what it leaves on the ESP,
# except loader/random-seed (imgbuild deliberately writes none; nixpkgs #394739).
set -eu
esp=; verb=
for a in "$@"; do
  case "$a" in
    --esp-path=*) esp=${a#--esp-path=} ;;
    --*) ;;
    *) verb=$a ;;
  esac
done
if [ "$verb" != install ]; then echo "oracle bootctl stub: only 'install' is emulated, got '$verb'" >&2; exit 1; fi
mkdir -p "$esp/EFI/systemd" "$esp/EFI/BOOT" "$esp/EFI/Linux" "$esp/loader/entries" "$esp/loader/keys"
cp "$ORACLE_SDBOOT_EFI" "$esp/EFI/systemd/systemd-bootx64.efi"
cp "$ORACLE_SDBOOT_EFI" "$esp/EFI/BOOT/BOOTX64.EFI"
printf 'type1\n' > "$esp/loader/entries.srel"
printf '#timeout 3\n#console-mode keep\n' > "$esp/loader/loader.conf"
"#;

const STUB_NIX_ENV: &str = "#!/bin/sh\n# nix-env --list-generations -p /nix/var/nix/profiles/system: generation 1, current\nprintf '   1   2026-12-01 00:00:00   (current)\\n'\n";
const STUB_MACHINE_ID: &str =
    "#!/bin/sh\n# systemd-machine-id-setup --print (the 24.05 builder's fallback)\necho 0123456789abcdef0123456789abcdef\n";
const STUB_TRUE: &str = "#!/bin/sh\nexit 0\n";

/// What runs inside `unshare --mount`: mounts, the profile, the builder, the copy out.
const RUN_SCRIPT: &str = r#"set -euo pipefail
mount --bind "$ORACLE_STORE" /nix/store
mount -t tmpfs -o mode=0755 tmpfs /nix/var/nix
if [ -e /etc/machine-id ]; then
  mount -t tmpfs tmpfs "$ORACLE_WORK/ovl"
  mkdir "$ORACLE_WORK/ovl/upper" "$ORACLE_WORK/ovl/work"
  mount -t overlay overlay -o "lowerdir=/etc,upperdir=$ORACLE_WORK/ovl/upper,workdir=$ORACLE_WORK/ovl/work" /etc
  rm -f /etc/machine-id
fi
test ! -e /etc/machine-id
export TZ=UTC
if [ "$ORACLE_LOADER" = systemd-boot ]; then
  mount -t tmpfs -o mode=0755 tmpfs /boot
  mkdir /nix/var/nix/profiles
  ln -s "$ORACLE_TOPLEVEL" /nix/var/nix/profiles/system-1-link
  ln -s system-1-link /nix/var/nix/profiles/system
  export ORACLE_SDBOOT_EFI="$(readlink -f "$ORACLE_TOPLEVEL/systemd")/lib/systemd/boot/efi/systemd-bootx64.efi"
  NIXOS_INSTALL_BOOTLOADER=1 "$ORACLE_BUILDER" "$ORACLE_TOPLEVEL"
  cp -r /boot/. "$ORACLE_OUT/"
else
  # As in sd-image.nix's build sandbox: no /nix/var/nix/profiles at all.
  "$ORACLE_BUILDER" -g 20 -t "$ORACLE_TIMEOUT" -c "$ORACLE_TOPLEVEL" -d "$ORACLE_OUT"
fi
stat -L -c %Z "$ORACLE_TOPLEVEL" > "$ORACLE_WORK/ctime"
"#;

/// The builder with its placeholders replaced as the NixOS module of its release does.
fn substitute(
    case: &Case,
    template: &str,
    stubs: &Path,
    python_dir: &Path,
) -> Result<(String, Value)> {
    let s = |p: &str| stubs.join(p).display().to_string();
    let mut subs: Vec<(&str, String)> = match case.loader {
        Loader::SystemdBoot => {
            let timeout = match (case.timeout, case.release) {
                (Some(t), _) => t.to_string(),
                (None, "24.05") => String::new(), // 24.05: optionalString (timeout != null)
                (None, _) => "menu-force".to_string(),
            };
            let mut v = vec![
                ("python3", python_dir.display().to_string()),
                ("efiSysMountPoint", "/boot".into()),
                ("bootMountPoint", "/boot".into()),
                ("nixosDir", "/EFI/nixos".into()),
                ("timeout", timeout),
                ("editor", if case.editor { "1" } else { "" }.into()),
                ("consoleMode", case.console_mode.into()),
                ("bootspecTools", s("bootspec-tools-not-used")),
                ("distroName", "NixOS".into()),
                ("nix", s("nix")),
                ("systemd", s("systemd")),
                ("configurationLimit", "0".into()),
                ("rebootForBitlocker", String::new()),
                ("canTouchEfiVariables", String::new()),
                ("graceful", String::new()),
                ("copyExtraFiles", s("copy-extra-files")),
                ("checkMountpoints", s("check-mountpoints")),
                ("storeDir", "/nix/store".into()),
            ];
            if let Some((enable, tries)) = case.counting {
                v.push(("bootCounting", if enable { "True" } else { "False" }.into()));
                v.push(("bootCountingTries", tries.to_string()));
            }
            v
        }
        Loader::Extlinux => vec![("bash", s("bash")), ("path", "/usr".into())],
    };
    let mut out = template.to_string();
    for (k, v) in &subs {
        out = out.replace(&format!("@{k}@"), v);
    }
    // Anything left is a placeholder this harness does not know: fail rather than guess.
    let left: Vec<&str> = out
        .match_indices('@')
        .filter_map(|(i, _)| {
            let rest = &out[i + 1..];
            let end = rest.find('@')?;
            let word = &rest[..end];
            (!word.is_empty() && word.chars().all(|c| c.is_ascii_alphanumeric())).then_some(word)
        })
        .collect();
    ensure!(
        left.is_empty(),
        "{}: unknown placeholders {left:?}",
        case.id()
    );
    subs.retain(|(k, _)| *k != "python3");
    let map: serde_json::Map<String, Value> = subs
        .into_iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                json!(v.replace(&stubs.display().to_string(), "STUBS")),
            )
        })
        .collect();
    Ok((out, Value::Object(map)))
}

fn write_exec(path: &Path, text: &str) -> Result<()> {
    if let Some(p) = path.parent() {
        fs::create_dir_all(p)?;
    }
    fs::write(path, text)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o755))?;
    Ok(())
}

/// The stubs the builder calls instead of the host's tools (bootctl, machine-id setup,
/// nix-env, mount checks, bash as `sh`) and the Python it runs on, under `stubs`; Python's
/// version.
fn write_stubs(case: &Case, stubs: &Path, python: &(PathBuf, String)) -> Result<String> {
    write_exec(&stubs.join("systemd/bin/bootctl"), STUB_BOOTCTL)?;
    write_exec(
        &stubs.join("systemd/bin/systemd-machine-id-setup"),
        STUB_MACHINE_ID,
    )?;
    write_exec(&stubs.join("nix/bin/nix-env"), STUB_NIX_ENV)?;
    write_exec(&stubs.join("check-mountpoints"), STUB_TRUE)?;
    write_exec(&stubs.join("copy-extra-files"), STUB_TRUE)?;
    fs::create_dir_all(stubs.join("bash/bin"))?;
    std::os::unix::fs::symlink("/bin/bash", stubs.join("bash/bin/sh"))?;
    // 24.05's builder runs on any Python 3.10+; the newer ones need 3.12.
    let py = if case.release == "24.05" && case.loader == Loader::SystemdBoot {
        PathBuf::from(util::output_quiet(cmd("sh").args(["-c", "command -v python3"]))?.trim())
    } else {
        python.0.clone()
    };
    fs::create_dir_all(stubs.join("python3/bin"))?;
    std::os::unix::fs::symlink(&py, stubs.join("python3/bin/python3"))?;
    Ok(util::output_quiet(cmd(&py).arg("--version"))?
        .trim()
        .to_string())
}

/// Runs `builder` in a private mount namespace (`RUN_SCRIPT`), the case's store at
/// `/nix/store`, its output into `out`; the ctime of the toplevel when it ran.
fn run_builder(case: &Case, w: &Path, toplevel: &str, builder: &Path, out: &Path) -> Result<i64> {
    // Mount points on the host for the namespace (created empty, removed again).
    let mut made = Vec::new();
    for d in [
        "/nix",
        "/nix/store",
        "/nix/var",
        "/nix/var/nix",
        "/nix/var/nix/profiles",
        "/boot",
    ] {
        if !Path::new(d).exists() {
            fs::create_dir(d).with_context(|| format!("creating mount point {d} (needs root)"))?;
            made.push(d);
        }
    }
    let res = util::run(
        cmd("unshare")
            .args([
                "--mount",
                "--propagation",
                "private",
                "bash",
                "-c",
                RUN_SCRIPT,
            ])
            .env("ORACLE_STORE", w.join("root/nix/store"))
            .env("ORACLE_WORK", w)
            .env("ORACLE_LOADER", case.loader.name())
            .env("ORACLE_TOPLEVEL", toplevel)
            .env("ORACLE_BUILDER", builder)
            .env("ORACLE_OUT", out)
            .env(
                "ORACLE_TIMEOUT",
                case.timeout.map_or(-1, i64::from).to_string(),
            ),
    );
    for d in made.iter().rev() {
        let _ = fs::remove_dir(d);
    }
    res.with_context(|| {
        format!(
            "running the {} builder of {}",
            case.loader.name(),
            case.release
        )
    })?;
    Ok(fs::read_to_string(w.join("ctime"))?.trim().parse()?)
}

/// What a case's run leaves for its golden directory besides the tree.
struct Ran<'a> {
    paths: &'a [String],
    py_version: String,
    subs: Value,
    ctime: i64,
}

/// The golden directory of a case: the tree (`write_tree`) and `meta.json`.
fn write_golden(case: &Case, out: &Path, ran: &Ran) -> Result<()> {
    let (base_format, base) = case.loader.format_and_base();
    let toplevel = ran
        .paths
        .first()
        .context("a case without a toplevel")?
        .as_str();
    let golden = oracle_dir().join(case.release).join(case.name);
    util::remove_tree(&golden)?;
    fs::create_dir_all(golden.join("tree"))?;
    let count = write_tree(out, &golden)?;
    let meta = json!({
        "release": case.release,
        "case": case.name,
        "loader": case.loader.name(),
        "format": base_format,
        "base": format!("fixtures/{base}"),
        "toplevel": toplevel,
        "oracle_store_paths": ran.paths,
        "builder": format!("{}/{}", case.release, case.loader.builder_file()),
        "builder_source": provenance(case.release, case.loader),
        "python": ran.py_version,
        "tree": match case.loader { Loader::SystemdBoot => "ESP:/", Loader::Extlinux => "/boot" },
        "source_date_epoch": ran.ctime,
        "not_from_builder": match case.loader {
            Loader::SystemdBoot => json!([]),
            // imgbuild's mount point for the FIRMWARE partition, not the builder's.
            Loader::Extlinux => json!(["firmware"]),
        },
        "note": "source_date_epoch is the ctime of the toplevel when the builder ran (the date of 'built on'); the e2e test builds with it so the dates agree",
        "substitutions": ran.subs,
        "args": match case.loader {
            Loader::SystemdBoot => json!(["NIXOS_INSTALL_BOOTLOADER=1", toplevel]),
            Loader::Extlinux => json!(["-g", "20", "-t", case.timeout.map_or(-1, i64::from).to_string(), "-c", toplevel, "-d", "/boot"]),
        },
    });
    fs::write(
        golden.join("meta.json"),
        serde_json::to_string_pretty(&meta)? + "\n",
    )?;
    println!(
        "oracle: {} -> {} entries, {}",
        case.id(),
        count,
        golden.display()
    );
    Ok(())
}

/// Runs one case's builder and writes its golden directory.
pub(super) fn run_case(
    case: &Case,
    paths: &[String],
    builders: &Path,
    python: &(PathBuf, String),
) -> Result<()> {
    let template_path = builders.join(case.release).join(case.loader.builder_file());
    let template = fs::read_to_string(&template_path).with_context(|| {
        format!(
            "reading {} (see fixtures/oracle/README.md)",
            template_path.display()
        )
    })?;
    let work = tempfile::Builder::new().prefix("xtask-oracle-").tempdir()?;
    let w = work.path();
    let (_, base) = case.loader.format_and_base();
    let toplevel = paths.first().context("a case without a toplevel")?.as_str();
    assemble_store(base, paths, &w.join("root"))?;
    let stubs = w.join("stubs");
    let py_version = write_stubs(case, &stubs, python)?;
    let (script, subs) = substitute(case, &template, &stubs, &stubs.join("python3"))?;
    let builder = w.join("builder");
    write_exec(&builder, &script)?;
    let out = w.join("out");
    fs::create_dir_all(&out)?;
    fs::create_dir_all(w.join("ovl"))?;
    let ctime = run_builder(case, w, toplevel, &builder, &out)?;
    let ran = Ran {
        paths,
        py_version,
        subs,
        ctime,
    };
    write_golden(case, &out, &ran)
}

/// `listing.txt` (every directory and file of `out`, files with size and SHA-256) and the
/// text files under `tree/`, into `golden`; the number of entries.
fn write_tree(out: &Path, golden: &Path) -> Result<usize> {
    let mut listing = String::new();
    let mut entries = Vec::new();
    walk(out, out, &mut entries)?;
    for (rel, path) in &entries {
        let meta = fs::symlink_metadata(path)?;
        if meta.is_dir() {
            writeln!(listing, "{}", golden::listing_line(rel, &Item::Dir))?;
        } else if meta.is_file() {
            let bytes = fs::read(path)?;
            let item = Item::File {
                size: u64::try_from(bytes.len())?,
                sha256: hex(&Sha256::digest(&bytes)),
            };
            writeln!(listing, "{}", golden::listing_line(rel, &item))?;
            if is_text(rel) {
                let dest = golden.join("tree").join(rel);
                fs::create_dir_all(dest.parent().context("no parent")?)?;
                fs::write(dest, &bytes)?;
            }
        } else {
            bail!("{rel}: neither file nor directory in the builder's output");
        }
    }
    // Read back as the e2e test will: a name with a space would not survive.
    let back = golden::parse_listing(&listing).map_err(anyhow::Error::msg)?;
    ensure!(
        back.len() == entries.len(),
        "listing.txt reads back as {} entries, not {}",
        back.len(),
        entries.len()
    );
    fs::write(golden.join("listing.txt"), listing)?;
    Ok(entries.len())
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, PathBuf)>) -> Result<()> {
    for p in sorted_children(dir)? {
        let rel = p.strip_prefix(root)?.to_string_lossy().into_owned();
        let meta = fs::symlink_metadata(&p)?;
        out.push((rel, p.clone()));
        if meta.is_dir() {
            walk(root, &p, out)?;
        }
    }
    Ok(())
}

fn hex(b: &[u8]) -> String {
    b.iter().fold(String::new(), |mut s, x| {
        let _ = write!(s, "{x:02x}");
        s
    })
}
