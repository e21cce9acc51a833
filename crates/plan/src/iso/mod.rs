//! The ISO formats (`volume = "iso9660"`): the closure as nixpkgs' live and installer ISOs
//! lay it out (`nixos/modules/installer/cd-dvd/iso-image.nix`), with no partition table of
//! its own. The stages, in the order a disk's run:
//!
//! 1. the settings: `"org.imgbuild.v1".iso` in boot.json (`volumeID`, and `syslinux` on
//!    x86_64), refused when missing;
//! 2. the store image (`store_image`): the closure as squashfs, written to `OUT.store.tmp`
//!    (a dry run: to a temporary directory), since the volume's size depends on it;
//! 3. the EFI boot image: the system's systemd-boot ESP (one entry, the kernel and initrd),
//!    planned as a FAT image, never written on its own;
//! 4. the volume's tree ([`tree`]) planned by `iso9660` with El Torito entries for isolinux
//!    (x86_64) and the EFI image;
//! 5. the image's map: the volume with the FAT map placed at `/boot/efi.img`'s extent, the
//!    isohybrid MBR and the primary GPT in its system area, the backup GPT in room reserved
//!    at its end ([`hybrid`]);
//! 6. the output, as a disk's: the raw output kind (optionally zstd), SHA-256, bmap,
//!    manifest (with its `iso` part); the store image file is removed after.

mod hybrid;
mod tree;

use std::path::{Path, PathBuf};

use imgbuild_diskmap::{Map, MapBuilder};
use imgbuild_fat as fat;
use imgbuild_fstree::Tree;
use imgbuild_iso9660 as iso9660;

use crate::manifest::{ElToritoEntry, IsoManifest};
use crate::options::Context;
use crate::output::{self, Layout, TreeNotes};
use crate::store_image::{self, StoreImage};
use crate::{DryRun, Error, Inputs, Manifest, Result, Stages};

/// The key of imgbuild's boot.json extension, whose `iso` object this reads.
const IMGBUILD_V1: &str = "org.imgbuild.v1";
/// The longest volume id ISO 9660 holds.
const VOLUME_ID_MAX: usize = 32;
/// The EFI image's size is a whole number of these (nixpkgs rounds to MiB too).
const EFI_IMAGE_ROUND: u64 = 1 << 20;
/// The EFI image's FAT label, as nixpkgs' `mkfs.vfat -n EFIBOOT`.
const EFI_LABEL: &str = "EFIBOOT";

/// What boot.json's `"org.imgbuild.v1".iso` says.
pub(crate) struct Settings {
    /// `volumeID`: the volume id, which the kernel command line names (`root=LABEL=`).
    pub volume_id: String,
    /// `syslinux`'s `share/syslinux` on the host (x86_64 only): isolinux and `isohdpfx.bin`.
    pub syslinux: Option<PathBuf>,
}

/// Whether the toplevel's system boots from BIOS too (isolinux exists for x86 only).
fn has_bios(inputs: &Inputs) -> bool {
    inputs.bootspec.system.starts_with("x86_64")
}

/// Reads the ISO settings, refusing what is missing or malformed with the key's name.
fn settings(cx: &Context, inputs: &Inputs) -> Result<Settings> {
    let iso = inputs
        .bootspec
        .extensions
        .get(IMGBUILD_V1)
        .and_then(|v| v.get("iso"));
    let missing = |key: &'static str| Error::IsoSettingMissing {
        key,
        format: cx.format.name.clone(),
    };
    let text = |key: &'static str| -> Result<String> {
        match iso.and_then(|o| o.get(key)) {
            None | Some(serde_json::Value::Null) => Err(missing(key)),
            Some(serde_json::Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(Error::IsoSettingInvalid {
                key,
                reason: "is not a string".into(),
            }),
        }
    };
    let volume_id = text("volumeID")?;
    let ok_char = |c: char| c.is_ascii_alphanumeric() || "_-.".contains(c);
    if volume_id.is_empty() || volume_id.len() > VOLUME_ID_MAX || !volume_id.chars().all(ok_char) {
        return Err(Error::IsoSettingInvalid {
            key: "volumeID",
            reason: format!(
                "`{}` is not 1 to {VOLUME_ID_MAX} characters of A-Z, a-z, 0-9, `_`, `-`, `.`",
                crate::quote(&volume_id)
            ),
        });
    }
    let syslinux = match has_bios(inputs) {
        false => None,
        true => {
            let store_path = text("syslinux")?;
            let share = Path::new(&store_path).join("share/syslinux");
            Some(crate::trees::resolve(&inputs.store, &share)?)
        }
    };
    Ok(Settings {
        volume_id,
        syslinux,
    })
}

/// The image planned and mapped, with what the manifest says of it. Holds the store image
/// file, which the map reads: dropping this removes it.
pub(crate) struct Planned {
    map: Map,
    layout: Layout,
    notes: TreeNotes,
    store: StoreImage,
}

/// Build the ISO: plan, map, then write it as a disk is written.
pub(crate) fn build(s: &Stages) -> Result<Manifest> {
    let cx = s.context()?;
    output::check(&cx, s.inputs)?;
    let store_path = store_image::temp_path(&cx.output.path);
    let Planned {
        map,
        layout,
        notes,
        store,
    } = plan(s, &cx, &store_path)?;
    let manifest = crate::pool(cx.threads)?
        .install(|| output::write(&cx, s.inputs, layout, &map, notes, s.reporter, s.cancel))?;
    // The map read the store image; it is no longer needed.
    drop(store);
    Ok(manifest)
}

/// What [`build`] would write, its store image written to a temporary directory (its size
/// decides the volume's) and removed.
pub(crate) fn dry_run(s: &Stages) -> Result<DryRun> {
    let cx = s.context()?;
    let dir = tempfile::tempdir().map_err(|source| Error::Io {
        op: "creating a temporary directory for",
        path: std::env::temp_dir(),
        source,
    })?;
    let p = plan(s, &cx, &dir.path().join("nix-store.squashfs"))?;
    Ok(DryRun::of_volume(s.format, &p.map))
}

/// Stages 1 to 5 (see the module docs), on the pool.
fn plan(s: &Stages, cx: &Context, store_path: &Path) -> Result<Planned> {
    let settings = settings(cx, s.inputs)?;
    crate::pool(cx.threads)?.install(|| {
        s.reporter.phase("reading the closure", 0);
        let store = store_image::write(cx, s.inputs, store_path, s.reporter, s.cancel)?;
        s.reporter.phase("planning", 0);
        let (esp, choice) = crate::trees::esp_alone(cx, s.inputs)?;
        let fat_opts = fat::Options {
            label: EFI_LABEL.into(),
            volume_id: cx.ids.fat_volume_id("efi.img"),
            fat_type: fat::FatType::Auto,
            ..Default::default()
        };
        let fat_err = |source| Error::Fat {
            name: "efi.img".into(),
            source,
        };
        let min = fat::min_size(&esp, &fat_opts).map_err(fat_err)?;
        let efi =
            fat::plan(&esp, min.next_multiple_of(EFI_IMAGE_ROUND), &fat_opts).map_err(fat_err)?;
        let efi_map = efi.map(&esp).map_err(fat_err)?;
        let t = tree::build(cx, s.inputs, &settings, &store, efi.fs_bytes(), &choice)?;
        let opts = volume_options(cx, &settings, s.inputs);
        let mut vol = iso9660::plan(&t, &opts).map_err(Error::from)?;
        vol.reserve_tail(hybrid::TAIL, hybrid::ALIGN)
            .map_err(Error::from)?;
        s.reporter.phase("mapping", 0);
        let (map, disk_id) = image_map(cx, &settings, &t, &vol, efi_map)?;
        let layout = Layout {
            table: "gpt".into(),
            disk_id,
            disk_size: map.len(),
            partitions: Vec::new(),
            iso: Some(iso_manifest(&settings, &vol, &opts, &store, efi.fs_bytes())),
        };
        let notes = TreeNotes {
            added: Vec::new(),
            dedup: crate::DedupReport::default(),
            boot: choice.note,
            verity: None,
            sysupdate: None,
        };
        Ok(Planned {
            map,
            layout,
            notes,
            store,
        })
    })
}

/// The volume's identifiers and El Torito entries, as nixpkgs' `make-iso9660-image.sh`.
fn volume_options(cx: &Context, settings: &Settings, inputs: &Inputs) -> iso9660::Options {
    iso9660::Options {
        volume_id: settings.volume_id.clone(),
        system_id: "LINUX".into(),
        publisher_id: "nixos".into(),
        preparer_id: String::new(),
        application_id: "nixos".into(),
        time: cx.time,
        bios: has_bios(inputs).then(|| iso9660::BiosBoot {
            image: tree::ISOLINUX_BIN.as_bytes().to_vec(),
            load_sectors: 4,
            boot_info_table: true,
        }),
        efi: Some(iso9660::EfiBoot {
            image: tree::EFI_IMG.as_bytes().to_vec(),
            load_sectors: None,
        }),
        catalog: None,
    }
}

/// The whole image: the volume (its system area the hybrid MBR and primary GPT, the FAT map
/// at the EFI image's extent, the backup GPT in the room at its end). Returns the map and
/// the GPT disk GUID.
fn image_map(
    cx: &Context,
    settings: &Settings,
    t: &Tree,
    vol: &iso9660::Plan,
    efi_map: Map,
) -> Result<(Map, String)> {
    let efi = vol.efi_image().expect("the volume has a UEFI entry");
    let mbr_code = match &settings.syslinux {
        Some(dir) => Some(tree::isohdpfx(dir)?),
        None => None,
    };
    let h = hybrid::Hybrid::new(&hybrid::Input {
        volume_bytes: vol.bytes(),
        efi,
        bios: vol.bios_image(),
        mbr_code: mbr_code.as_deref(),
        disk_id: cx.mbr_disk_id,
        disk_guid: cx.ids.gpt_disk_guid(),
        esp_guid: cx.ids.gpt_partition_guid("efi.img"),
    })?;
    let supplied = vec![iso9660::Supplied {
        path: tree::EFI_IMG.as_bytes().to_vec(),
        map: efi_map,
    }];
    let volume = vol
        .map_with(t, &h.system_area, supplied)
        .map_err(Error::from)?;
    let mut b = MapBuilder::new("ISO image", h.image_size);
    b.place(0, volume)?;
    for w in h.tail {
        b.bytes(w.offset, w.bytes)?;
    }
    Ok((b.finish()?, h.disk_guid.to_string()))
}

fn iso_manifest(
    settings: &Settings,
    vol: &iso9660::Plan,
    opts: &iso9660::Options,
    store: &StoreImage,
    efi_size: u64,
) -> IsoManifest {
    let mut el_torito = Vec::new();
    if let (Some(e), Some(b)) = (vol.bios_image(), &opts.bios) {
        el_torito.push(ElToritoEntry {
            platform: "bios".into(),
            image: format!("/{}", tree::ISOLINUX_BIN),
            lba: e.lba,
            load_sectors: b.load_sectors,
        });
    }
    if let Some(e) = vol.efi_image() {
        el_torito.push(ElToritoEntry {
            platform: "uefi".into(),
            image: format!("/{}", tree::EFI_IMG),
            lba: e.lba,
            load_sectors: u16::try_from(e.bytes.div_ceil(512)).unwrap_or(u16::MAX),
        });
    }
    IsoManifest {
        volume_id: settings.volume_id.clone(),
        volume_size: vol.bytes(),
        store_image_size: store.size,
        store_image_inodes: store.summary.inodes,
        efi_image_size: efi_size,
        el_torito,
    }
}
