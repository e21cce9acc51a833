//! GRUB for PC BIOS, installed as NixOS's installer (`install-grub.pl` running
//! `grub-install`) would: the platform directory of the closure's GRUB package
//! (`org.imgbuild.v1.bootloader.grub`), the core image `grub-install` has `grub-mkimage`
//! build for this disk, `/boot/grub` on the root file system, and the boot code's sectors
//! (boot.img in sector 0, core.img after the MBR or in the BIOS boot partition).

use imgbuild_boot as boot;
use imgbuild_fstree::Tree;
use imgbuild_grub::{CoreImage, Install, PartTable, Platform};
use imgbuild_nix::{FsIdentifier, GrubSettings, StorePath};
use imgbuild_partition as partition;

use super::{add_boot_files, dir_meta, file_meta, resolve, STORE_MTIME};
use crate::bootloader::Choice;
use crate::format::{Contents, TableType};
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
fn settings<'a>(cx: &Context, choice: &'a Choice) -> Result<(&'a GrubSettings, &'a StorePath)> {
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
    if s.efi_support {
        return Err(Error::GrubUnsupported {
            setting: "efiSupport".into(),
            reason: "imgbuild installs GRUB for PC BIOS only (use a systemd-boot format for UEFI)",
        });
    }
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
    Ok((s, package))
}

/// Every regular file of `<grub>/lib/grub/i386-pc`, read with a bound each.
fn read_platform(inputs: &Inputs, package: &StorePath) -> Result<Platform> {
    let logical = package.join("lib/grub/i386-pc");
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
        boot: boot::GrubFsId {
            search: search.clone(),
            path: "/boot".into(),
        },
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

/// Where GRUB's directory is for `grub-install`: the root partition, `/boot/grub`, ext2.
fn install_location(cx: &Context) -> Result<Install<'static>> {
    let format = cx.format;
    if format.partitions.iter().any(|p| p.mount_point == "/boot") {
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
        partition: u32::try_from(root + 1).expect("at most 128 partitions"),
        fs_module: "ext2",
        grub_dir: "/boot/grub",
    })
}

/// Installs GRUB into the root tree (`/boot/grub` with `grub.cfg`, `state`, `grubenv`, the
/// platform files `grub-install` copies, its font) and returns the core image for the disk.
/// On a disk without a partition table (`device = "nodev"`: install-grub.pl runs no
/// `grub-install`) only what install-grub.pl writes: `grub.cfg`, `state` and its copies; no
/// core image.
pub(crate) fn install(
    cx: &Context,
    inputs: &Inputs,
    choice: &Choice,
    entry: &boot::BootEntry,
    root: &mut Tree,
) -> Result<Option<GrubSetup>> {
    let (s, package) = settings(cx, choice)?;
    let (name, version) = boot::parse_drv_name(package.name());
    let state = boot::GrubState {
        name: name.to_owned(),
        version: version.to_owned(),
        efi: "no".into(),
        devices: s.devices.clone(),
        efi_mount_point: s.efi_sys_mount_point.clone(),
    };
    if cx.format.table.kind == TableType::None {
        let files = boot::grub_boot(entry, &cfg_options(cx, inputs, choice, s)?, &state)?;
        add_boot_files(root, "/boot", &files, &inputs.store, cx.time)?;
        private_grub_dir(cx, root);
        return Ok(None);
    }
    let platform = read_platform(inputs, package)?;
    let core = install_location(cx)?
        .core_image(&platform)
        .map_err(grub_err("building core.img"))?;
    let files = boot::grub_boot(entry, &cfg_options(cx, inputs, choice, s)?, &state)?;
    add_boot_files(root, "/boot", &files, &inputs.store, cx.time)?;
    private_grub_dir(cx, root);
    let i386 = root
        .mkdir_p(b"/boot/grub/i386-pc", dir_meta(cx.time))
        .map_err(|source| Error::Tree {
            what: "/boot/grub/i386-pc".into(),
            source,
        })?;
    for (name, bytes) in
        imgbuild_grub::installed_files(&platform, &core).map_err(grub_err("listing"))?
    {
        let node = imgbuild_fstree::Node::bytes(file_meta(cx.time), bytes.to_vec());
        root.insert(i386, name.as_bytes(), node)
            .map_err(|source| Error::Tree {
                what: format!("/boot/grub/i386-pc/{name}"),
                source,
            })?;
    }
    // grub-install copies its font when the package has one.
    let font = package.join("share/grub/unicode.pf2");
    if inputs.store.resolve_in_store(&font).is_ok() {
        let f = [boot::BootFile {
            path: "grub/fonts/unicode.pf2".into(),
            content: boot::Content::StoreFile(font),
        }];
        add_boot_files(root, "/boot", &f, &inputs.store, cx.time)?;
    }
    Ok(Some(GrubSetup { platform, core }))
}

/// install-grub.pl makes /boot/grub 0700.
fn private_grub_dir(cx: &Context, root: &mut Tree) {
    if let Some(dir) = root.lookup(b"/boot/grub") {
        root.node_mut(dir).meta = imgbuild_fstree::Meta::new(0o700, 0, 0, cx.time);
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
