//! What a format's image is (`volume`): a partitioned disk, an ISO 9660 volume or a tar
//! archive, what a tar volume holds (`[tar]`), and which top-level keys each volume takes.

use serde::Deserialize;

use super::{quote, FormatError};

/// What the image is: a partitioned disk, or an ISO 9660 volume.
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
    /// A tar archive of a file tree, no disk at all: a container's root file system
    /// (`lxc`, `proxmox-lxc`), its metadata (`lxc-metadata`), or both (`incus`), as `[tar]`
    /// says. A format saying so has no `[table]`, `[[partition]]`, `[root]` or
    /// `[bootloader]` (a container boots no kernel).
    Tar,
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

/// A disk format has `[table]`, `[[partition]]` and `[root]`; an ISO 9660 or tar format has
/// none of them; a tar format has `[tar]` and no `[bootloader]`, the others the other way
/// round (checked on the merged text: after parsing, a default is not told from a table).
pub(super) fn check_volume_keys(name: &str, table: &toml::Table) -> Result<(), FormatError> {
    let volume = table.get("volume").and_then(toml::Value::as_str);
    let tar = volume == Some("tar");
    for (key, want) in [("tar", tar), ("bootloader", !tar)] {
        match (want, table.contains_key(key)) {
            (true, false) => {
                return Err(FormatError::Parse {
                    name: quote(name),
                    message: format!("missing field `{key}`"),
                })
            }
            (false, true) => {
                return Err(FormatError::Invalid {
                    name: quote(name),
                    reason: format!(
                        "`{key}` belongs to {} formats only",
                        if tar { "disk and iso9660" } else { "tar" }
                    ),
                })
            }
            _ => {}
        }
    }
    let iso = volume.is_some_and(|v| v != "disk");
    for key in DISK_KEYS {
        match (iso, table.contains_key(key)) {
            (true, true) => {
                return Err(FormatError::Invalid {
                    name: quote(name),
                    reason: format!(
                        "{} volume has no partition table: no `{key}`",
                        match volume {
                            Some("tar") => "a tar",
                            _ => "an iso9660",
                        }
                    ),
                })
            }
            (false, false) => {
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
