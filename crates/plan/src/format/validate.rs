//! The checks a format passes after parsing: names, sizes, table and boot loader agree.

use super::*;

impl Format {
    /// Refuses a format whose parts disagree, naming the first disagreement.
    pub(super) fn validate(&self) -> Result<(), FormatError> {
        self.check().map_err(|reason| FormatError::Invalid {
            name: quote(&self.name),
            reason,
        })
    }

    fn check(&self) -> Result<(), String> {
        check_extension(&self.extension)?;
        if self.system.0.is_empty() {
            return Err("`system` lists no system".into());
        }
        match self.volume {
            Volume::Iso9660 => return self.check_iso(),
            Volume::Netboot | Volume::Kexec => return self.check_netboot(),
            Volume::Tar => return self.check_tar(),
            Volume::Disk => {}
        }
        if !self.container.kind.takes_compress() && self.compress != Compression::None {
            return Err(format!(
                "`compress` applies to raw images; a `{}` container is not compressed again",
                self.container.kind.name()
            ));
        }
        if let Some(m) = self.container.size_multiple {
            if m.0 == 0 || !m.0.is_multiple_of(self.table.align.0) {
                return Err(format!(
                    "container size-multiple {} is not a multiple of the table's align {}",
                    m.0, self.table.align.0
                ));
            }
        }
        if self.partitions.is_empty() {
            return Err("no partitions".into());
        }
        if self.table.align.0 == 0 || !self.table.align.0.is_multiple_of(512) {
            return Err(format!(
                "align {} is not a multiple of 512",
                self.table.align.0
            ));
        }
        let roots = self
            .partitions
            .iter()
            .filter(|p| p.contents == Contents::Root)
            .count();
        if roots != 1 {
            return Err(format!("needs exactly one root partition, has {roots}"));
        }
        for (i, p) in self.partitions.iter().enumerate() {
            self.check_partition(i, p)?;
        }
        if self.table.kind == TableType::None {
            self.check_no_table()?;
        }
        self.check_verity()?;
        match (self.bootloader.kind, self.table.kind) {
            (Bootloader::SystemdBoot, TableType::Gpt) => {
                if !self.partitions.iter().any(|p| p.contents == Contents::Esp) {
                    return Err("systemd-boot needs an `esp` partition".into());
                }
            }
            (Bootloader::SystemdBoot, TableType::Mbr | TableType::None) => {
                return Err("systemd-boot needs a GPT table".into());
            }
            (Bootloader::Extlinux, _) | (Bootloader::Grub, TableType::Mbr | TableType::None) => {}
            (Bootloader::Grub, TableType::Gpt) => {
                if !self
                    .partitions
                    .iter()
                    .any(|p| p.contents == Contents::BiosBoot)
                {
                    return Err("GRUB on a GPT disk needs a `bios-boot` partition".into());
                }
            }
        }
        if self.bootloader.uki && self.bootloader.kind != Bootloader::SystemdBoot {
            return Err("`uki = true` is for `[bootloader] type = \"systemd-boot\"`".into());
        }
        if self.bootloader.kind != Bootloader::Grub
            && self
                .partitions
                .iter()
                .any(|p| p.contents == Contents::BiosBoot)
        {
            return Err("a `bios-boot` partition is for `[bootloader] type = \"grub\"`".into());
        }
        self.check_grub_efi()
    }

    /// `[bootloader] efi` (GRUB for BIOS and UEFI): a GPT disk with an `esp` partition
    /// mounted at `/boot` (GRUB's directory); a GRUB disk without it has no ESP.
    fn check_grub_efi(&self) -> Result<(), String> {
        let esp = self.partitions.iter().find(|p| p.contents == Contents::Esp);
        match (self.bootloader.kind, self.bootloader.efi, esp) {
            (Bootloader::Grub, true, Some(p)) if p.mount_point == "/boot" => {
                if self.table.kind != TableType::Gpt {
                    return Err("GRUB with `efi` needs a GPT table".into());
                }
            }
            (Bootloader::Grub, true, Some(_)) => {
                return Err(
                    "GRUB with `efi` keeps /boot on the `esp` partition: mount-point = \"/boot\""
                        .into(),
                );
            }
            (Bootloader::Grub, true, None) => {
                return Err("GRUB with `efi` needs an `esp` partition".into());
            }
            (Bootloader::Grub, false, Some(_)) => {
                return Err("an `esp` partition with GRUB needs `[bootloader] efi = true`".into());
            }
            (Bootloader::Grub, ..) | (_, false, _) => {}
            (_, true, _) => return Err("`[bootloader] efi` is for `type = \"grub\"`".into()),
        }
        Ok(())
    }

    /// A disk without a table: one partition, the ext4 root, from the disk's first byte (no
    /// `start` but 0, no `type`, not `bootable`: there is no table to hold them).
    fn check_no_table(&self) -> Result<(), String> {
        let [p] = self.partitions.as_slice() else {
            return Err(format!(
                "a disk without a partition table holds one file system, not {} partitions",
                self.partitions.len()
            ));
        };
        let pname = quote(&p.name);
        if p.contents != Contents::Root {
            return Err(format!(
                "partition `{pname}`: a disk without a partition table holds only the root"
            ));
        }
        if p.start.is_some_and(|s| s.0 != 0) {
            return Err(format!(
                "partition `{pname}`: a disk without a partition table starts its file system \
                 at byte 0"
            ));
        }
        if p.type_id.is_some() || p.bootable {
            return Err(format!(
                "partition `{pname}`: a disk without a partition table has no `type` or \
                 `bootable` (no table entry holds them)"
            ));
        }
        Ok(())
    }

    /// An ISO 9660 volume: written as it is (raw, optionally zstd), booted by systemd-boot
    /// from its EFI image (and isolinux on x86_64).
    fn check_iso(&self) -> Result<(), String> {
        if self.container.kind != ContainerType::default() {
            return Err(format!(
                "an iso9660 volume is written raw, not in a `{}` container",
                self.container.kind.name()
            ));
        }
        if self.bootloader.kind != Bootloader::SystemdBoot {
            return Err("an iso9660 volume boots UEFI with systemd-boot".into());
        }
        if self.bootloader.uki {
            return Err("an iso9660 volume boots type #1 entries, not `uki = true`".into());
        }
        Ok(())
    }

    /// A tar volume: written as it is (raw, zstd) or xz-compressed; its directories are
    /// plain relative paths outside the store.
    fn check_tar(&self) -> Result<(), String> {
        let kind = self.container.kind.name();
        if kind != "raw" && kind != "xz" {
            return Err(format!(
                "a tar volume is written as it is or xz-compressed, not in a `{kind}` container"
            ));
        }
        let Some(tar) = &self.tar else {
            return Err("a tar volume needs `[tar]`".into());
        };
        for d in &tar.directories {
            let ok = !d.is_empty()
                && d.len() <= 255
                && d.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
                && d.split('/').next() != Some("nix")
                && d.chars().all(|c| !c.is_control());
            if !ok {
                return Err(format!(
                    "tar directory `{}` is not a relative path of plain names outside /nix",
                    quote(d)
                ));
            }
        }
        Ok(())
    }

    /// Netboot files or a kexec tarball: the initrd and kernel as they are (netboot: raw,
    /// the directory's files; kexec: the tar, gzip), no `compress`.
    fn check_netboot(&self) -> Result<(), String> {
        let (want, what) = match self.volume {
            Volume::Kexec => (
                ContainerType::find("gzip"),
                "a kexec tarball is written as `gzip`",
            ),
            _ => (
                Some(ContainerType::default()),
                "netboot files are written raw",
            ),
        };
        if Some(self.container.kind) != want {
            return Err(format!("{what}, not as `{}`", self.container.kind.name()));
        }
        if self.compress != Compression::None {
            return Err(format!("{what}: no `compress`"));
        }
        Ok(())
    }

    /// What the table asks of partition `i`, `p`'s entry: a type of its kind (none without a
    /// table), GPT's 36-character names and no MBR flag, MBR's four entries.
    fn check_table_entry(&self, i: usize, p: &Partition) -> Result<(), String> {
        let pname = quote(&p.name);
        let t = match (self.table.kind, p.type_id) {
            (TableType::None, _) => return Ok(()),
            (_, Some(t)) => t,
            (_, None) => return Err(format!("partition `{pname}`: no `type`")),
        };
        if self.table.kind == TableType::Gpt {
            if matches!(t, PartType::Mbr(_)) {
                return Err(format!("partition `{pname}`: type `{t}` is not a GUID"));
            }
            if p.bootable {
                return Err(format!("partition `{pname}`: `bootable` is an MBR flag"));
            }
            if p.name.encode_utf16().count() > 36 {
                return Err(format!("partition `{pname}`: GPT names hold 36 characters"));
            }
        } else {
            if matches!(t, PartType::Gpt(_)) {
                return Err(format!(
                    "partition `{pname}`: type `{t}` is not an MBR type byte like 0x83"
                ));
            }
            if i >= 4 {
                return Err("MBR tables hold 4 primary partitions".into());
            }
        }
        Ok(())
    }

    /// The checks of partition `i`, `p`.
    fn check_partition(&self, i: usize, p: &Partition) -> Result<(), String> {
        let pname = quote(&p.name);
        if let Err(why) = check_name(&p.name) {
            return Err(format!("partition `{pname}`: name {why}"));
        }
        if let Err(why) = check_name(&p.label) {
            return Err(format!(
                "partition `{pname}`: label `{}` {why}",
                quote(&p.label)
            ));
        }
        self.check_table_entry(i, p)?;
        // A store or verity partition's `auto` is its contents' exact size (checked in
        // `check_verity`); only the last, ext4, partition fills the disk.
        let fills = p.size == PartSize::Auto && !p.sized_by_contents();
        if fills && i + 1 != self.partitions.len() {
            return Err(format!(
                "partition `{}`: only the last partition can be sized `auto`",
                pname
            ));
        }
        if fills && p.filesystem != Filesystem::Ext4 {
            return Err(format!(
                "partition `{}`: `auto` size needs an ext4 filesystem",
                pname
            ));
        }
        if (p.contents == Contents::Root) != (p.filesystem == Filesystem::Ext4) {
            return Err(format!(
                "partition `{}`: the root partition, and only it, is ext4",
                pname
            ));
        }
        let raw = matches!(
            p.contents,
            Contents::BiosBoot | Contents::Verity | Contents::Empty
        );
        if raw != (p.filesystem == Filesystem::None) {
            return Err(format!(
                "partition `{}`: a `bios-boot`, `verity` or `empty` partition, and only they, \
                 have filesystem `none`",
                pname
            ));
        }
        self.check_mount_point(p)?;
        let label_max = if p.filesystem == Filesystem::Ext4 {
            16
        } else {
            11
        };
        if p.label.len() > label_max {
            return Err(format!(
                "partition `{}`: label `{}` is longer than {label_max} bytes",
                pname,
                quote(&p.label)
            ));
        }
        Ok(())
    }

    /// A BIOS boot partition is GPT's and unmounted, a verity partition unmounted, every
    /// other partition mounted at an absolute path.
    fn check_mount_point(&self, p: &Partition) -> Result<(), String> {
        let pname = quote(&p.name);
        if p.contents == Contents::BiosBoot {
            if self.table.kind != TableType::Gpt {
                return Err(format!(
                    "partition `{}`: a `bios-boot` partition is a GPT partition (an MBR disk \
                     has GRUB's core image after the MBR)",
                    pname
                ));
            }
            if !p.mount_point.is_empty() {
                return Err(format!(
                    "partition `{}`: a `bios-boot` partition is not mounted (no mount-point)",
                    pname
                ));
            }
        } else if matches!(p.contents, Contents::Verity | Contents::Empty) {
            if !p.mount_point.is_empty() {
                return Err(format!(
                    "partition `{}`: a `verity` or `empty` partition is not mounted (no \
                     mount-point)",
                    pname
                ));
            }
        } else if !p.mount_point.starts_with('/') {
            return Err(format!(
                "partition `{}`: mount-point must be absolute",
                pname
            ));
        }
        Ok(())
    }
}

/// A partition name or label: no NUL (GPT names and ext4 labels end at one), no other
/// control character, no `/` (udev turns it into `\x2f` in /dev/disk/by-label and
/// by-partlabel, so a mount by that name would not find it).
fn check_name(s: &str) -> Result<(), String> {
    if s.contains('\0') {
        return Err("contains NUL, which would end it early".into());
    }
    if s.chars().any(char::is_control) {
        return Err("contains a control character".into());
    }
    if s.contains('/') {
        return Err("contains `/` (/dev/disk/by-label and by-partlabel names cannot)".into());
    }
    Ok(())
}

/// The image's file-name extension: letters, digits, `.`, `_`, `-`, `+`, no `..`, at most 32
/// bytes (it is appended to `nixos.` in the working directory; a `/` would leave it).
fn check_extension(e: &str) -> Result<(), String> {
    let ok = !e.is_empty()
        && e.len() <= 32
        && !e.contains("..")
        && !e.starts_with('.')
        && e.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-+".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "extension `{}` is not a file-name extension like `img` or `raw.tar.gz` (letters, \
             digits, `.`, `_`, `-`, `+`; no `/` or `..`; at most 32 bytes)",
            quote(e)
        ))
    }
}
