//! What a format's image is (`volume`): a partitioned disk, an ISO 9660 volume or a tar
//! archive, what a tar volume holds (`[tar]`), and which top-level keys each volume takes.

use serde::Deserialize;

use super::{quote, FormatError};

/// What the image is: a partitioned disk, an ISO 9660 volume, netboot files, a kexec
/// tarball or a tar archive of a container's tree.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Volume {
    /// A disk: `[table]`, `[[partition]]`s with their filesystems, `[root]`.
    #[default]
    Disk,
    /// An ISO 9660 volume (El Torito BIOS and UEFI, isohybrid MBR and GPT in its system
    /// area), no partition table of its own: its files are the closure's store image, the
    /// kernel, the initrd and the boot loaders. A format saying so has no `[table]`,
    /// `[[partition]]` or `[root]`; its `[bootloader]` (systemd-boot) is the one on the EFI
    /// boot image.
    Iso9660,
    /// nixpkgs' netboot directory: the kernel, an initrd carrying the store image (the
    /// closure's initrd followed by a newc cpio holding `nix-store.squashfs`) and
    /// `netboot.ipxe`. No partition table, no `[root]`.
    Netboot,
    /// nixpkgs' kexec tree (`bzImage`, `initrd.gz` as netboot's initrd, `kexec-boot`) in a
    /// gzip-compressed tar under `kexec/`, plus `kexec/run` for nixos-anywhere. No partition
    /// table, no `[root]`.
    Kexec,
    /// A tar archive of a file tree, no disk at all: a container's root file system
    /// (`lxc`, `proxmox-lxc`), its metadata (`lxc-metadata`), or both (`incus`), as `[tar]`
    /// says. A format saying so has no `[table]`, `[[partition]]`, `[root]` or
    /// `[bootloader]` (a container boots no kernel).
    Tar,
}

impl Volume {
    /// Whether the image is a partitioned disk (`[table]`, `[[partition]]`, `[root]`).
    pub fn is_disk(self) -> bool {
        self == Volume::Disk
    }
}

/// The keys a disk format must have and the other volumes must not.
const DISK_KEYS: [&str; 3] = ["table", "partition", "root"];

/// What a tar volume holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TarLayout {
    /// The container's root file system at the archive's top (`nix/store/...`,
    /// `nix-path-registration`, `sbin/init`, ...): nixpkgs' `lxc` and `proxmox-lxc`.
    Rootfs,
    /// LXD/Incus image metadata alone: `metadata.yaml` and `templates/` (nixpkgs'
    /// `lxc-metadata`, imported beside a `rootfs` tarball).
    Metadata,
    /// Incus' unified image: `metadata.yaml`, `templates/` and the root file system under
    /// `rootfs/`, in one archive.
    Unified,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
/// A tar format's `[tar]`: what the archive holds.
pub struct TarOptions {
    /// Root file system, metadata, or both.
    pub layout: TarLayout,
    /// Empty directories made at the root file system's top (`dev`, `proc`, `sys`: what
    /// nixpkgs' tarballs make for LXC; Proxmox's: `root`, `etc/systemd/network`).
    #[serde(default)]
    pub directories: Vec<String>,
    /// `/etc/os-release` before the first boot, a link to the toplevel's (nixpkgs' `lxc`
    /// ships it for systemd-nspawn, which reads it before NixOS's activation makes it).
    #[serde(default)]
    pub os_release: bool,
}

/// A disk format has `[table]`, `[[partition]]`, `[root]` and `[bootloader]`; the other
/// volumes have no partition table; netboot, kexec and tar no boot loader of their own (the
/// firmware's iPXE or the running kernel loads the first two, a container boots no kernel);
/// a tar format, and only it, has `[tar]`. Checked on the merged text: after parsing, a
/// default is not told from a table.
pub(super) fn check_volume_keys(name: &str, table: &toml::Table) -> Result<(), FormatError> {
    let volume = table.get("volume").and_then(toml::Value::as_str);
    let disk = volume.is_none_or(|v| v == "disk");
    let tar = volume == Some("tar");
    let loader = !matches!(volume, Some("netboot" | "kexec" | "tar"));
    let keys = DISK_KEYS
        .iter()
        .map(|k| (*k, disk, "has no partition table"))
        .chain([
            ("bootloader", loader, "has no boot loader of its own"),
            ("tar", tar, "is not a tar archive"),
        ]);
    for (key, wanted, why) in keys {
        match (wanted, table.contains_key(key)) {
            (false, true) => {
                return Err(FormatError::Invalid {
                    name: quote(name),
                    reason: format!("volume `{}` {why}: no `{key}`", volume.unwrap_or("disk")),
                })
            }
            (true, false) => {
                return Err(FormatError::Parse {
                    name: quote(name),
                    message: format!("missing field `{key}`"),
                })
            }
            _ => {}
        }
    }
    Ok(())
}
