//! What `grub-install --target=i386-pc DISK` asks `grub-mkimage` for on a plain disk (no
//! LVM, RAID or encryption, the boot directory on the disk it installs to).

use crate::{CoreImage, CoreOptions, EfiImage, Error, Platform};

/// The disk's partition table, as GRUB names it (`part_msdos`, `(hd0,gpt2)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartTable {
    /// An MBR (DOS) partition table.
    Msdos,
    /// A GUID partition table.
    Gpt,
}

impl PartTable {
    fn name(self) -> &'static str {
        match self {
            Self::Msdos => "msdos",
            Self::Gpt => "gpt",
        }
    }
}

/// Where GRUB's directory lies, for [`Install::modules`] and [`Install::prefix`].
#[derive(Debug, Clone, Copy)]
pub struct Install<'a> {
    /// The boot disk's partition table.
    pub table: PartTable,
    /// The 1-based number of the partition holding GRUB's directory.
    pub partition: u32,
    /// GRUB's name of that partition's file system module (`ext2` for ext2/3/4, `fat`).
    pub fs_module: &'a str,
    /// GRUB's directory relative to that file system's root: `/boot/grub`, or `/grub` when
    /// `/boot` is a partition of its own.
    pub grub_dir: &'a str,
}

impl<'a> Install<'a> {
    /// The modules `grub-install` passes, in its order: the file system, the partition
    /// map(s) it probed, the BIOS disk driver (`grub-mkimage` adds their dependencies).
    pub fn modules(&self) -> [&'a str; 3] {
        let part = match self.table {
            PartTable::Msdos => "part_msdos",
            PartTable::Gpt => "part_gpt",
        };
        [self.fs_module, part, "biosdisk"]
    }

    /// The prefix `grub-install` embeds when GRUB's directory is on the disk it boots from:
    /// the partition hard-coded, the drive left empty so that it is the BIOS boot drive,
    /// e.g. `(,msdos1)/boot/grub`. No embedded config and no UUID search are needed then.
    pub fn prefix(&self) -> Result<String, Error> {
        if self.partition == 0 {
            return Err(Error::BadInstall("partition numbers start at 1"));
        }
        if !self.grub_dir.starts_with('/') || self.grub_dir.contains(['(', ')', '\0']) {
            return Err(Error::BadInstall(
                "GRUB's directory must be an absolute plain path",
            ));
        }
        Ok(format!(
            "(,{}{}){}",
            self.table.name(),
            self.partition,
            self.grub_dir
        ))
    }

    /// The core image `grub-install` has `grub-mkimage` build: [`Self::modules`] with
    /// [`Self::prefix`], no embedded config.
    pub fn core_image(&self, platform: &Platform) -> Result<CoreImage, Error> {
        let prefix = self.prefix()?;
        let opts = CoreOptions {
            prefix: &prefix,
            config: None,
            modules: &self.modules(),
        };
        CoreImage::build(platform, &opts)
    }
}

/// The lists and scripts `grub-install` copies besides the modules; all required.
const REQUIRED_DATA: [&str; 9] = [
    "moddep.lst",
    "command.lst",
    "fs.lst",
    "partmap.lst",
    "parttool.lst",
    "video.lst",
    "crypto.lst",
    "terminal.lst",
    "modinfo.sh",
];
/// Copied when the platform has them (the i386-pc EFI emulator).
const OPTIONAL_DATA: [&str; 2] = ["efiemu32.o", "efiemu64.o"];

/// Every `.mod`, the lists and `modinfo.sh`, and `efiemu32.o`/`efiemu64.o` when present:
/// what `grub-install` (with its default module list) copies into the platform directory.
fn platform_files(platform: &Platform) -> Result<Vec<(String, &[u8])>, Error> {
    let mut files = Vec::new();
    for name in platform.names().filter(|n| n.ends_with(".mod")) {
        files.push((name.to_owned(), platform.get(name)?));
    }
    for name in REQUIRED_DATA {
        files.push((name.to_owned(), platform.get(name)?));
    }
    for name in OPTIONAL_DATA {
        if let Ok(bytes) = platform.get(name) {
            files.push((name.to_owned(), bytes));
        }
    }
    Ok(files)
}

/// The files `grub-install --target=i386-pc` (with its default module list) leaves in
/// `GRUB_DIR/i386-pc`, by name in byte order: every `.mod` of the platform, the lists,
/// `modinfo.sh`, `efiemu32.o`/`efiemu64.o` when present, `boot.img` (unpatched) and
/// `core.img` as `grub-mkimage` wrote it. Fonts, locales and `grubenv`, which it puts
/// elsewhere in `GRUB_DIR`, are not included.
pub fn installed_files<'a>(
    platform: &'a Platform,
    core: &'a CoreImage,
) -> Result<Vec<(String, &'a [u8])>, Error> {
    let mut files = platform_files(platform)?;
    files.push(("boot.img".to_owned(), platform.get("boot.img")?));
    files.push(("core.img".to_owned(), core.mkimage_bytes()));
    files.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(files)
}

/// Where `grub-install --target=x86_64-efi --removable` puts the image on the EFI system
/// partition (the removable-media path firmware boots without a boot entry).
pub const REMOVABLE_EFI_PATH: &str = "EFI/BOOT/BOOTX64.EFI";

/// What `grub-install --target=x86_64-efi --removable` (no install device, as NixOS runs
/// it) asks `grub-mkimage` for: GRUB's directory is found by the UUID of its file system,
/// so the image carries an early config that searches for it and sets the prefix.
#[derive(Debug, Clone, Copy)]
pub struct EfiInstall<'a> {
    /// The disk's partition table.
    pub table: PartTable,
    /// GRUB's name of the file system module holding GRUB's directory (`fat`, `ext2`).
    pub fs_module: &'a str,
    /// That file system's UUID as GRUB prints it (`1234-abcd` for FAT, lower case).
    pub fs_uuid: &'a str,
    /// GRUB's directory relative to that file system's root (`/grub` when `/boot` is the
    /// ESP, `/boot/grub` on the root file system).
    pub grub_dir: &'a str,
}

impl<'a> EfiInstall<'a> {
    /// The modules `grub-install` passes, in its order: the file system, the partition map
    /// it probed, the UUID search of the early config.
    pub fn modules(&self) -> [&'a str; 3] {
        let part = match self.table {
            PartTable::Msdos => "part_msdos",
            PartTable::Gpt => "part_gpt",
        };
        [self.fs_module, part, "search_fs_uuid"]
    }

    /// The early config `grub-install` writes (`load.cfg`): the search by UUID (no drive
    /// hint: it guesses none for a virtio disk) and the prefix on the device found.
    pub fn config(&self) -> Result<String, Error> {
        if !self.grub_dir.starts_with('/') || self.grub_dir.contains(['\'', '\0', '\n']) {
            return Err(Error::BadInstall(
                "GRUB's directory must be an absolute plain path",
            ));
        }
        if self.fs_uuid.is_empty()
            || !self
                .fs_uuid
                .chars()
                .all(|c| c.is_ascii_hexdigit() || c == '-')
        {
            return Err(Error::BadInstall(
                "a file system UUID is hex digits and dashes",
            ));
        }
        Ok(format!(
            "search.fs_uuid {} root \nset prefix=($root)'{}'\n",
            self.fs_uuid, self.grub_dir
        ))
    }

    /// The image `grub-install` has `grub-mkimage` build: [`Self::modules`], the prefix
    /// [`Self::grub_dir`](EfiInstall::grub_dir) and [`Self::config`] embedded.
    pub fn image(&self, platform: &Platform) -> Result<EfiImage, Error> {
        let config = self.config()?;
        EfiImage::build(
            platform,
            &CoreOptions {
                prefix: self.grub_dir,
                config: Some(config.as_bytes()),
                modules: &self.modules(),
            },
        )
    }
}

/// The files `grub-install --target=x86_64-efi` leaves in `GRUB_DIR/x86_64-efi`, by name in
/// byte order: every `.mod`, the lists, `modinfo.sh`, and the image as `core.efi` and again
/// as `grub.efi` (its backward-compatibility copy). The image itself also goes to the ESP
/// at [`REMOVABLE_EFI_PATH`].
pub fn installed_efi_files<'a>(
    platform: &'a Platform,
    image: &'a EfiImage,
) -> Result<Vec<(String, &'a [u8])>, Error> {
    let mut files = platform_files(platform)?;
    files.push(("core.efi".to_owned(), image.bytes()));
    files.push(("grub.efi".to_owned(), image.bytes()));
    files.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_and_modules_as_grub_install_passes_them() {
        let i = Install {
            table: PartTable::Gpt,
            partition: 2,
            fs_module: "ext2",
            grub_dir: "/boot/grub",
        };
        assert_eq!(i.prefix().unwrap(), "(,gpt2)/boot/grub");
        assert_eq!(i.modules(), ["ext2", "part_gpt", "biosdisk"]);
        let m = Install {
            table: PartTable::Msdos,
            partition: 1,
            fs_module: "fat",
            grub_dir: "/grub",
        };
        assert_eq!(m.prefix().unwrap(), "(,msdos1)/grub");
        assert!(matches!(
            Install { partition: 0, ..m }.prefix(),
            Err(Error::BadInstall(_))
        ));
        assert!(matches!(
            Install {
                grub_dir: "grub",
                ..m
            }
            .prefix(),
            Err(Error::BadInstall(_))
        ));
    }
}
