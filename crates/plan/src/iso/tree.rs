//! The ISO's file tree, as `iso-image.nix` fills it: `/nix-store.squashfs`,
//! `/boot/<kernel>`, `/boot/initrd`, `/version.txt`, `/boot/efi.img` and, on x86_64, syslinux's
//! `share/syslinux` as `/isolinux` with an `isolinux.cfg`. Owners root, every date the
//! build's time and modes rationalised (`0555` directories and executables, `0444` the rest),
//! as `make-iso9660-image.sh`'s `xorriso -r` and `-volume_date all_file_dates` leave them.

use std::path::{Path, PathBuf};

use imgbuild_fstree::{FileData, Kind, Meta, Node, NodeId, Tree, ROOT};

use crate::bootloader::Choice;
use crate::options::Context;
use crate::store_image::StoreImage;
use crate::trees::{dir_meta, file_meta, resolve, store_scanner};
use crate::{Error, Inputs, Result};

use super::Settings;

/// The BIOS El Torito image.
pub(crate) const ISOLINUX_BIN: &str = "isolinux/isolinux.bin";
/// The UEFI El Torito image: a FAT image of the system's systemd-boot ESP.
pub(crate) const EFI_IMG: &str = "boot/efi.img";
/// The store image, where the NixOS module's fstab finds it (`/iso/nix-store.squashfs`).
pub(crate) const STORE_IMAGE: &str = "nix-store.squashfs";
/// What isolinux needs besides its configuration.
const SYSLINUX_NEEDS: [&str; 2] = ["isolinux.bin", "ldlinux.c32"];
/// The isohybrid MBR code in syslinux's `share/syslinux`.
const ISOHDPFX: &str = "isohdpfx.bin";
/// Bytes of MBR boot code (the rest of the sector is the caller's: LBA, ids, entries).
pub(crate) const MBR_CODE: usize = 432;
/// isolinux's timeout (tenths of a second) for `boot.loader.timeout = null`, as nixpkgs.
const SYSLINUX_MAX_TIMEOUT: i64 = 35996;
/// Where a tree node of the EFI image would point: never read (its map is supplied).
const EFI_PLACEHOLDER: &str = "<boot/efi.img: mapped from its FAT plan, never read>";

fn tree_err(what: &str) -> impl FnOnce(imgbuild_fstree::Error) -> Error + '_ {
    move |source| Error::Tree {
        what: what.to_string(),
        source,
    }
}

/// The volume's tree for the system of `inputs`, its store image `store` and an EFI image of
/// `efi_size` bytes (a placeholder: the caller supplies its map).
pub(crate) fn build(
    cx: &Context,
    inputs: &Inputs,
    settings: &Settings,
    store: &StoreImage,
    efi_size: u64,
    choice: &Choice,
) -> Result<Tree> {
    let time = cx.time;
    let spec = &inputs.bootspec;
    let mut tree = Tree::new(dir_meta(time));
    let host = |p: FileData| Node::file(file_meta(time), p);
    tree.insert(
        ROOT,
        STORE_IMAGE.as_bytes(),
        host(FileData::Host {
            path: store.path.clone(),
            size: store.size,
        }),
    )
    .map_err(tree_err(STORE_IMAGE))?;
    let boot = tree
        .mkdir_p(b"/boot", dir_meta(time))
        .map_err(tree_err("/boot"))?;
    let mut scanner = store_scanner();
    let kernel = spec.kernel.to_path_buf();
    let kernel_name = kernel_file(&kernel);
    let kernel_host = resolve(&inputs.store, &kernel)?;
    scanner
        .graft(&mut tree, boot, kernel_name.as_bytes(), &kernel_host)
        .map_err(tree_err("/boot/<kernel>"))?;
    if let Some(initrd) = &spec.initrd {
        let h = resolve(&inputs.store, &initrd.to_path_buf())?;
        scanner
            .graft(&mut tree, boot, b"initrd", &h)
            .map_err(tree_err("/boot/initrd"))?;
    }
    let version = spec
        .nixos_version
        .clone()
        .unwrap_or_else(|| spec.label.clone());
    tree.insert(
        ROOT,
        b"version.txt",
        Node::bytes(file_meta(time), version.into_bytes()),
    )
    .map_err(tree_err("/version.txt"))?;
    tree.insert(
        boot,
        b"efi.img",
        host(FileData::Host {
            path: PathBuf::from(EFI_PLACEHOLDER),
            size: efi_size,
        }),
    )
    .map_err(tree_err(EFI_IMG))?;
    if let Some(dir) = &settings.syslinux {
        let isolinux = scanner
            .graft(&mut tree, ROOT, b"isolinux", dir)
            .map_err(tree_err("/isolinux"))?;
        for f in SYSLINUX_NEEDS {
            if tree.lookup_in(isolinux, f.as_bytes()).is_none() {
                return Err(no_syslinux_file(dir, f));
            }
        }
        let ui = tree.lookup_in(isolinux, b"vesamenu.c32").is_some();
        let cfg = isolinux_cfg(inputs, choice, &kernel_name, ui);
        tree.insert(
            isolinux,
            b"isolinux.cfg",
            Node::bytes(file_meta(time), cfg.into_bytes()),
        )
        .map_err(tree_err("/isolinux/isolinux.cfg"))?;
    }
    rationalise(&mut tree, time);
    Ok(tree)
}

/// `bzImage`, `Image`: the kernel's file name, which the ISO keeps (`kernelFile`).
fn kernel_file(kernel: &Path) -> String {
    kernel
        .file_name()
        .map_or_else(|| "kernel".into(), |n| n.to_string_lossy().into_owned())
}

fn no_syslinux_file(dir: &Path, file: &str) -> Error {
    Error::IsoSettingInvalid {
        key: "syslinux",
        reason: format!("names no syslinux: `{}` has no {file}", dir.display()),
    }
}

/// Every node root-owned, dated `time`, `0555` or `0444` (`xorriso -r`).
fn rationalise(tree: &mut Tree, time: i64) {
    let ids: Vec<NodeId> = tree.walk().into_iter().map(|(_, id)| id).collect();
    for id in ids {
        let n = tree.node_mut(id);
        let exec = n.is_dir() || n.meta.perm & 0o111 != 0;
        let perm = match (&n.kind, exec) {
            (Kind::Symlink(_), _) => 0o777,
            (_, true) => 0o555,
            (_, false) => 0o444,
        };
        n.meta = Meta::new(perm, 0, 0, time);
    }
}

/// `isolinux.cfg` with `iso-image.nix`'s entries (default, nomodeset, copytoram, debug,
/// serial console), each booting `init=<toplevel>/init` and the toplevel's kernel
/// parameters. `UI vesamenu.c32` only when syslinux ships it; the theme and splash are left
/// out (nixpkgs' `isolinux/background.png` is not part of the closure).
fn isolinux_cfg(inputs: &Inputs, choice: &Choice, kernel: &str, ui: bool) -> String {
    let spec = &inputs.bootspec;
    let timeout = choice
        .timeout
        .map_or(SYSLINUX_MAX_TIMEOUT, |t| t.saturating_mul(10));
    let mut out = format!("SERIAL 0 115200\nTIMEOUT {timeout}\n");
    if ui {
        out.push_str("UI vesamenu.c32\n");
    }
    out.push_str("\nDEFAULT boot\n");
    let params = format!("init={} {}", spec.init, spec.kernel_params.join(" "));
    let label = &spec.label;
    let entries = [
        ("boot", String::new(), ""),
        ("boot-nomodeset", " (nomodeset)".to_string(), " nomodeset"),
        ("boot-copytoram", " (copytoram)".to_string(), " copytoram"),
        ("boot-debug", " (debug)".to_string(), " loglevel=7"),
        (
            "boot-serial",
            " (serial console=ttyS0,115200n8)".to_string(),
            " console=ttyS0,115200n8",
        ),
    ];
    for (name, suffix, extra) in entries {
        out.push_str(&format!(
            "\nLABEL {name}\nMENU LABEL {label}{suffix}\nLINUX /boot/{kernel}\n\
             APPEND {}{extra}\n",
            params.trim_end()
        ));
        if spec.initrd.is_some() {
            out.push_str("INITRD /boot/initrd\n");
        }
    }
    out
}

/// The first [`MBR_CODE`] bytes of syslinux's `isohdpfx.bin`.
pub(crate) fn isohdpfx(dir: &Path) -> Result<Vec<u8>> {
    let path = dir.join(ISOHDPFX);
    let kind = imgbuild_blockio::InputKind {
        what: "syslinux's isohdpfx.bin",
        max_bytes: 4096,
    };
    let bytes = match imgbuild_blockio::read_input(&path, kind) {
        Ok(b) => b,
        Err(_) if !path.exists() => return Err(no_syslinux_file(dir, ISOHDPFX)),
        Err(e) => return Err(e.into()),
    };
    if bytes.len() < MBR_CODE {
        return Err(Error::IsoSettingInvalid {
            key: "syslinux",
            reason: format!(
                "has an {ISOHDPFX} of {} bytes, not the {MBR_CODE} of MBR code",
                bytes.len()
            ),
        });
    }
    Ok(bytes[..MBR_CODE].to_vec())
}
