//! GRUB for PC BIOS, installed as NixOS's installer (`install-grub.pl` running
//! `grub-install`) would: the platform directory of the closure's GRUB package
//! (`org.imgbuild.v1.bootloader.grub`), the core image `grub-install` has `grub-mkimage`
//! build for this disk, `/boot/grub` on the root file system, and the boot code's sectors
//! (boot.img in sector 0, core.img after the MBR or in the BIOS boot partition). A hybrid
//! format (`[bootloader] efi`) also gets GRUB for UEFI as `grub-install --target=x86_64-efi
//! --removable` leaves it: `/boot` is then the ESP, which holds GRUB's directory (with
//! `x86_64-efi/` beside `i386-pc/`) and `EFI/BOOT/BOOTX64.EFI`, from the closure's GRUB
//! built with EFI support (`org.imgbuild.v1.bootloader.grubEfi`).

use imgbuild_boot as boot;
use imgbuild_fstree::Tree;
use imgbuild_grub::{CoreImage, EfiImage, EfiInstall, Install, PartTable, Platform};
use imgbuild_nix::{FsIdentifier, GrubSettings, StorePath};
use imgbuild_partition as partition;

use super::{add_boot_files, dir_meta, file_meta, resolve, STORE_MTIME};
use crate::bootloader::Choice;
use crate::format::{Contents, TableType};
use crate::ids::fat_volume_id_string;
use crate::layout::{Layout, SECTOR};
use crate::options::Context;
use crate::{Error, Inputs, Result};

/// A file of GRUB's platform directory (modules are KiB; `kernel.img` tens of KiB).
const PLATFORM_FILE: imgbuild_blockio::InputKind = imgbuild_blockio::InputKind {
    what: "GRUB platform file",
    max_bytes: 16 << 20,
};
/// Files of the platform directory read at most (GRUB 2.12's i386-pc has about 300).
const MAX_PLATFORM_FILES: usize = 4096;
/// `configuration-name` and `nixos-version` of a specialisation: one short line.
const SHORT_FILE: imgbuild_blockio::InputKind = imgbuild_blockio::InputKind {
    what: "toplevel text file",
    max_bytes: 4 << 10,
};

/// The GRUB the image boots with: its platform files and the core image built from them.
pub(crate) struct GrubSetup {
    platform: Platform,
    core: CoreImage,
}

fn grub_err(what: &str) -> impl FnOnce(imgbuild_grub::Error) -> Error + '_ {
    move |source| Error::Grub {
        what: what.to_owned(),
        source,
    }
}

/// The recorded GRUB settings, refused when absent or asking for what imgbuild cannot do.
/// Returns them, the GRUB package and (a hybrid format) the GRUB package with EFI support.
fn settings<'a>(
    cx: &Context,
    choice: &'a Choice,
) -> Result<(&'a GrubSettings, &'a StorePath, Option<&'a StorePath>)> {
    let missing = |key| Error::NoGrubRecord {
        format: cx.format.name.clone(),
        key,
    };
    let s = choice.grub.as_ref().ok_or_else(|| missing("type"))?;
    let package = s.package.as_ref().ok_or_else(|| missing("grub"))?;
    if let Some(setting) = s.unsupported.first() {
        return Err(Error::GrubUnsupported {
            setting: (*setting).to_owned(),
            reason: "it needs NixOS's installer to run programs or read files at install time",
        });
    }
    let efi = efi_settings(cx, s)?
        .then(|| s.efi_package.as_ref().ok_or_else(|| missing("grubEfi")))
        .transpose()?;
    if s.fs_identifier == FsIdentifier::Provided {
        return Err(Error::GrubUnsupported {
            setting: "fsIdentifier = \"provided\"".into(),
            reason: "it depends on the device the running system mounted; use uuid or label",
        });
    }
    // A disk without a table has no room for GRUB's boot code: something else's GRUB (Linode's
    // "GRUB 2" boot mode) reads its grub.cfg, and `nodev` is right there.
    if cx.format.table.kind != TableType::None && !s.devices.iter().any(|d| d != "nodev") {
        return Err(Error::GrubUnsupported {
            setting: "devices = [\"nodev\"]".into(),
            reason: "a PC BIOS disk needs GRUB installed on it: set boot.loader.grub.device",
        });
    }
    Ok((s, package, efi))
}

/// Whether GRUB is installed for UEFI too (the format is hybrid), with the settings that
/// needs refused by name when they do not match the disk: `efiSupport` on exactly for a
/// hybrid format, the removable path (no NVRAM entry is written), the ESP at `/boot`.
fn efi_settings(cx: &Context, s: &GrubSettings) -> Result<bool> {
    let unsupported = |setting: String, reason| Err(Error::GrubUnsupported { setting, reason });
    if !cx.format.bootloader.efi {
        if s.efi_support {
            return unsupported(
                "efiSupport".into(),
                "this format has no EFI system partition (the hybrid `qemu` format boots UEFI \
                 through GRUB; the systemd-boot formats boot UEFI otherwise)",
            );
        }
        return Ok(false);
    }
    if !s.efi_support {
        return unsupported(
            "efiSupport = false".into(),
            "this format also boots with UEFI through GRUB: set boot.loader.grub.efiSupport = true",
        );
    }
    if !s.efi_install_as_removable {
        return unsupported(
            "efiInstallAsRemovable = false".into(),
            "the image has no firmware boot entry, GRUB must be at EFI/BOOT/BOOTX64.EFI: set \
             boot.loader.grub.efiInstallAsRemovable = true",
        );
    }
    if s.efi_sys_mount_point != "/boot" {
        return unsupported(
            format!("efiSysMountPoint = \"{}\"", s.efi_sys_mount_point),
            "the image's ESP is /boot (as nixpkgs' hybrid disk mounts it)",
        );
    }
    Ok(true)
}

/// Every regular file of `<grub>/lib/grub/<target>` (`i386-pc`, `x86_64-efi`), read with a
/// bound each.
fn read_platform(inputs: &Inputs, package: &StorePath, target: &str) -> Result<Platform> {
    let logical = package.join(format!("lib/grub/{target}"));
    let dir = resolve(&inputs.store, &logical)?;
    let io = |source| Error::Io {
        op: "reading GRUB's platform directory",
        path: dir.clone(),
        source,
    };
    let mut names = Vec::new();
    for e in std::fs::read_dir(&dir).map_err(io)? {
        let e = e.map_err(io)?;
        if e.file_type().map_err(io)?.is_file() {
            names.push(e.file_name());
        }
        if names.len() > MAX_PLATFORM_FILES {
            return Err(io(std::io::Error::other(format!(
                "more than {MAX_PLATFORM_FILES} files"
            ))));
        }
    }
    names.sort();
    let mut platform = Platform::new();
    for n in names {
        let Some(name) = n.to_str() else { continue };
        let bytes = imgbuild_blockio::read_input(&dir.join(name), PLATFORM_FILE)?;
        platform.insert(name, bytes);
    }
    Ok(platform)
}

/// A short text file of a toplevel (`configuration-name`), chomped; empty when absent.
fn read_short(inputs: &Inputs, toplevel: &StorePath, name: &str) -> Result<String> {
    match inputs.store.resolve_in_store(&toplevel.join(name)) {
        Ok(host) => {
            let bytes = imgbuild_blockio::read_input(&host, SHORT_FILE)?;
            let text = String::from_utf8_lossy(&bytes).into_owned();
            Ok(text.strip_suffix('\n').unwrap_or(&text).to_owned())
        }
        Err(_) => Ok(String::new()),
    }
}

/// The `search` arguments that find the root file system, per `fsIdentifier`.
fn root_search(cx: &Context, s: &GrubSettings) -> String {
    let root = cx.format.root_partition();
    match s.fs_identifier {
        FsIdentifier::Label => format!("--label {}", root.label),
        _ => format!("--fs-uuid {}", cx.ids.ext4_uuid(&root.name)),
    }
}

/// A hybrid format's ESP (`/boot`): its index among the partitions.
fn esp_index(cx: &Context) -> Option<usize> {
    cx.format.bootloader.efi.then(|| {
        cx.format
            .partitions
            .iter()
            .position(|p| p.contents == Contents::Esp)
    })?
}

/// `/boot`'s file system for grub.cfg: the root's (`/boot` a directory of it), or, on a
/// hybrid disk, the ESP's (searched as `blkid` names a FAT volume, `1234-ABCD`).
fn boot_fs(cx: &Context, s: &GrubSettings) -> boot::GrubFsId {
    match esp_index(cx) {
        Some(i) => {
            let esp = &cx.format.partitions[i];
            let search = match s.fs_identifier {
                FsIdentifier::Label => format!("--label {}", esp.label),
                _ => format!(
                    "--fs-uuid {}",
                    fat_volume_id_string(cx.ids.fat_volume_id(&esp.name))
                ),
            };
            boot::GrubFsId {
                search,
                path: "/".into(),
            }
        }
        None => boot::GrubFsId {
            search: root_search(cx, s),
            path: "/boot".into(),
        },
    }
}

fn cfg_options(
    cx: &Context,
    inputs: &Inputs,
    choice: &Choice,
    s: &GrubSettings,
) -> Result<boot::GrubCfgOptions> {
    let search = root_search(cx, s);
    let mut specialisations = Vec::new();
    for (name, child) in &inputs.bootspec.specialisations {
        specialisations.push(boot::GrubSpecialisation {
            name: name.clone(),
            entry: crate::inputs::boot_entry(cx.format, child, None)?,
            configuration_name: read_short(inputs, &child.toplevel, "configuration-name")?,
            nixos_version: child.nixos_version.clone().unwrap_or_default(),
            // The `specialisation/<name>` link is a store file: mtime 1.
            date: imgbuild_units::date(STORE_MTIME),
        });
    }
    Ok(boot::GrubCfgOptions {
        boot: boot_fs(cx, s),
        store: boot::GrubFsId {
            search,
            path: "/nix/store".into(),
        },
        copy_kernels: s.copy_kernels,
        timeout: choice.timeout,
        default: s.default.clone(),
        timeout_style: s.timeout_style.clone(),
        gfx: [
            s.gfxmode_efi.clone(),
            s.gfxmode_bios.clone(),
            s.gfxpayload_efi.clone(),
            s.gfxpayload_bios.clone(),
        ],
        entry_options: s.entry_options.clone(),
        sub_entry_options: s.sub_entry_options.clone(),
        font: s
            .font
            .as_ref()
            .map(|f| f.to_path_buf().display().to_string()),
        splash_image: s
            .splash_image
            .as_ref()
            .map(|f| f.to_path_buf().display().to_string()),
        splash_mode: s.splash_mode.clone(),
        background_color: s.background_color.clone(),
        extra_config: s.extra_config.clone(),
        extra_per_entry_config: s.extra_per_entry_config.clone(),
        extra_entries: s.extra_entries.clone(),
        extra_entries_before_nixos: s.extra_entries_before_nixos,
        distro_name: choice.distro_name.clone(),
        configuration_limit: s.configuration_limit,
        nixos_version: inputs.bootspec.nixos_version.clone(),
        // The profile link `system-1-link` carries the image's time.
        generation_date: imgbuild_units::date(cx.time),
        specialisations,
    })
}

/// Where GRUB's directory is for `grub-install`: the root partition, `/boot/grub`, ext2; or,
/// on a hybrid disk, the ESP (`/boot`), `/grub`, fat.
fn install_location(cx: &Context) -> Result<Install<'static>> {
    let format = cx.format;
    let esp = esp_index(cx);
    if esp.is_none() && format.partitions.iter().any(|p| p.mount_point == "/boot") {
        return Err(Error::GrubUnsupported {
            setting: "a /boot partition".into(),
            reason: "imgbuild keeps GRUB's /boot on the root file system",
        });
    }
    let root = format
        .partitions
        .iter()
        .position(|p| p.contents == Contents::Root)
        .expect("validate() checked there is exactly one root partition");
    let (index, fs_module, grub_dir) = match esp {
        Some(i) => (i, "fat", "/grub"),
        None => (root, "ext2", "/boot/grub"),
    };
    Ok(Install {
        table: match format.table.kind {
            TableType::Gpt => PartTable::Gpt,
            TableType::Mbr => PartTable::Msdos,
            TableType::None => {
                return Err(Error::GrubUnsupported {
                    setting: "a disk without a partition table".into(),
                    reason: "GRUB's core image needs the gap after an MBR or a BIOS boot partition",
                })
            }
        },
        partition: u32::try_from(index + 1).expect("at most 128 partitions"),
        fs_module,
        grub_dir,
    })
}

/// GRUB for UEFI on a hybrid disk: the x86_64-efi platform files of the EFI package and the
/// image `grub-install --target=x86_64-efi --removable` builds (found by the ESP's UUID,
/// lower case as GRUB prints a FAT volume's).
fn efi_image(cx: &Context, inputs: &Inputs, package: &StorePath) -> Result<(Platform, EfiImage)> {
    let platform = read_platform(inputs, package, "x86_64-efi")?;
    let esp = &cx.format.partitions[esp_index(cx).expect("a hybrid format has an ESP")];
    let uuid = fat_volume_id_string(cx.ids.fat_volume_id(&esp.name)).to_ascii_lowercase();
    let image = EfiInstall {
        table: PartTable::Gpt,
        fs_module: "fat",
        fs_uuid: &uuid,
        grub_dir: "/grub",
    }
    .image(&platform)
    .map_err(grub_err("building BOOTX64.EFI"))?;
    Ok((platform, image))
}

/// Adds `files` (name, bytes) to the directory `dir` of `tree` (made as needed).
fn add_dir(tree: &mut Tree, dir: &str, files: Vec<(String, &[u8])>, time: i64) -> Result<()> {
    let tree_err = |what: String| move |source| Error::Tree { what, source };
    let at = tree
        .mkdir_p(dir.as_bytes(), dir_meta(time))
        .map_err(tree_err(dir.to_owned()))?;
    for (name, bytes) in files {
        let node = imgbuild_fstree::Node::bytes(file_meta(time), bytes.to_vec());
        tree.insert(at, name.as_bytes(), node)
            .map_err(tree_err(format!("{dir}/{name}")))?;
    }
    Ok(())
}

/// Installs GRUB into `tree`, the file system holding `/boot` (the root's, or a hybrid
/// disk's ESP): `grub/` with `grub.cfg`, `state`, `grubenv`, the platform files
/// `grub-install` copies (`i386-pc/`, and `x86_64-efi/` with `EFI/BOOT/BOOTX64.EFI` on a
/// hybrid disk), its font; returns the core image for the disk. On a disk without a
/// partition table (`device = "nodev"`: install-grub.pl runs no `grub-install`) only what
/// install-grub.pl writes: `grub.cfg`, `state` and its copies; no core image.
pub(crate) fn install(
    cx: &Context,
    inputs: &Inputs,
    choice: &Choice,
    entry: &boot::BootEntry,
    tree: &mut Tree,
) -> Result<Option<GrubSetup>> {
    let (s, package, efi_package) = settings(cx, choice)?;
    if cx.format.table.kind == TableType::None {
        let (name, version) = boot::parse_drv_name(package.name());
        let state = boot::GrubState {
            name: name.to_owned(),
            version: version.to_owned(),
            efi: "no".into(),
            devices: s.devices.clone(),
            efi_mount_point: s.efi_sys_mount_point.clone(),
        };
        let files = boot::grub_boot(entry, &cfg_options(cx, inputs, choice, s)?, &state)?;
        add_boot_files(tree, "/boot", &files, &inputs.store, cx.time)?;
        private_grub_dir(cx, tree, "/boot");
        return Ok(None);
    }
    let platform = read_platform(inputs, package, "i386-pc")?;
    let core = install_location(cx)?
        .core_image(&platform)
        .map_err(grub_err("building core.img"))?;
    let efi = efi_package.map(|p| efi_image(cx, inputs, p)).transpose()?;
    // Where /boot is in `tree` (the ESP is /boot on a hybrid disk).
    let (boot_root, boot_dir) = if efi.is_some() {
        ("/", "")
    } else {
        ("/boot", "/boot")
    };
    let (name, version) = boot::parse_drv_name(package.name());
    let state = boot::GrubState {
        name: name.to_owned(),
        version: version.to_owned(),
        // install-grub.pl's `$efiTarget`: both GRUBs installed, or the BIOS one only.
        efi: if efi.is_some() { "both" } else { "no" }.into(),
        devices: s.devices.clone(),
        efi_mount_point: s.efi_sys_mount_point.clone(),
    };
    let files = boot::grub_boot(entry, &cfg_options(cx, inputs, choice, s)?, &state)?;
    add_boot_files(tree, boot_root, &files, &inputs.store, cx.time)?;
    private_grub_dir(cx, tree, boot_dir);
    let listed = imgbuild_grub::installed_files(&platform, &core).map_err(grub_err("listing"))?;
    add_dir(tree, &format!("{boot_dir}/grub/i386-pc"), listed, cx.time)?;
    if let Some((efi_platform, image)) = &efi {
        let listed =
            imgbuild_grub::installed_efi_files(efi_platform, image).map_err(grub_err("listing"))?;
        add_dir(
            tree,
            &format!("{boot_dir}/grub/x86_64-efi"),
            listed,
            cx.time,
        )?;
        // efiSysMountPoint is /boot: the removable path on the ESP.
        let (dir, file) = imgbuild_grub::REMOVABLE_EFI_PATH
            .rsplit_once('/')
            .expect("a path with a directory");
        add_dir(
            tree,
            &format!("/{dir}"),
            vec![(file.to_owned(), image.bytes())],
            cx.time,
        )?;
    }
    // grub-install copies its font when the package has one.
    let font = package.join("share/grub/unicode.pf2");
    if inputs.store.resolve_in_store(&font).is_ok() {
        let f = [boot::BootFile {
            path: "grub/fonts/unicode.pf2".into(),
            content: boot::Content::StoreFile(font),
        }];
        add_boot_files(tree, boot_root, &f, &inputs.store, cx.time)?;
    }
    Ok(Some(GrubSetup { platform, core }))
}

/// install-grub.pl makes /boot/grub 0700.
/// install-grub.pl makes `<boot>/grub` 0700 (`boot_dir`: `/boot`, or `` when the tree is
/// the ESP mounted at /boot).
fn private_grub_dir(cx: &Context, tree: &mut Tree, boot_dir: &str) {
    if let Some(dir) = tree.lookup(format!("{boot_dir}/grub").as_bytes()) {
        tree.node_mut(dir).meta = imgbuild_fstree::Meta::new(0o700, 0, 0, cx.time);
    }
}

impl GrubSetup {
    /// The boot code's sector writes: core.img where `grub-bios-setup` embeds it (the BIOS
    /// boot partition, or the sectors between the MBR and the first partition) with its
    /// Reed-Solomon redundancy, and sector 0 (the table writer's, `writes[0]`) made boot.img
    /// with the table kept.
    pub(crate) fn patch(
        &self,
        cx: &Context,
        layout: &Layout,
        writes: &mut [partition::Write],
    ) -> Result<partition::Write> {
        let (first, available) = match cx
            .format
            .partitions
            .iter()
            .position(|p| p.contents == Contents::BiosBoot)
        {
            Some(i) => {
                let p = &layout.partitions[i];
                (p.start / SECTOR, p.size / SECTOR)
            }
            None => {
                let first_part = layout.partitions.iter().map(|p| p.start).min().unwrap_or(0);
                (1, (first_part / SECTOR).saturating_sub(1))
            }
        };
        let core = self
            .core
            .embedded(first, available)
            .map_err(grub_err("embedding core.img"))?;
        let mbr = writes
            .iter_mut()
            .find(|w| w.offset == 0 && w.bytes.len() >= SECTOR as usize)
            .expect("every table writes sector 0");
        let existing: [u8; imgbuild_grub::SECTOR] = mbr.bytes[..imgbuild_grub::SECTOR]
            .try_into()
            .expect("sliced to a sector");
        let sector = imgbuild_grub::boot_sector(&self.platform, &existing, first)
            .map_err(grub_err("patching boot.img"))?;
        mbr.bytes[..imgbuild_grub::SECTOR].copy_from_slice(&sector);
        Ok(partition::Write {
            offset: first * SECTOR,
            bytes: core,
        })
    }
}
