//! The JSON manifest written beside every image (and printed by `--json`).

use serde::Serialize;

/// One partition of the manifest: the table entry and the filesystem summary in the shape
/// `imgbuild inspect --json` prints them (both are `imgbuild_partition` types), plus where
/// NixOS mounts it.
#[derive(Clone, Debug, Serialize)]
pub struct ManifestPartition {
    #[serde(flatten)]
    /// The table entry: number, offsets, type, name, GUID, flags.
    pub entry: imgbuild_partition::Entry,
    /// The filesystem in it: kind, label, UUID, size.
    pub filesystem: imgbuild_partition::FsSummary,
    /// Where the booted system mounts it (absent for a BIOS boot partition, not mounted).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub mount_point: String,
}

#[derive(Clone, Debug, Serialize)]
/// What a build wrote and from what, written beside the image as `IMAGE.json`.
pub struct Manifest {
    /// The imgbuild release that wrote the image.
    pub imgbuild_version: String,
    /// The format's name.
    pub format: String,
    /// The Nix system of the toplevel.
    pub system: String,
    /// The system toplevel's store path.
    pub toplevel: String,
    /// How the closure was enumerated.
    pub closure_source: crate::ClosureSource,
    /// How many store paths the image holds.
    pub store_paths: usize,
    /// Their total NAR size in bytes.
    pub nar_size: u64,
    /// The partition table: `gpt` or `dos`.
    pub table: String,
    /// GPT disk GUID or MBR disk signature (`0x1234abcd`).
    pub disk_id: String,
    /// The disk's size in bytes.
    pub disk_size: u64,
    /// SHA-256 of the raw disk (`sha256sum` of the uncompressed image, or of the first
    /// `disk_size` bytes of a disk it was written to); absent when `added` is not empty.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk_sha256: Option<String>,
    /// Every partition, in table order (none for an ISO 9660 volume).
    pub partitions: Vec<ManifestPartition>,
    /// The ISO 9660 volume, for an ISO format.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iso: Option<IsoManifest>,
    /// The netboot files or the kexec tarball, for those formats.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub netboot: Option<NetbootManifest>,
    /// The file written (compressed or not): its name, in the manifest's directory.
    pub image: String,
    /// Absent when `added` is not empty and `image` is compressed (zstd, gzip, deflated
    /// VMDK grains): a compressed size depends on the added files' contents.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_size: Option<u64>,
    /// SHA-256 of `image` as written (equal to `disk_sha256` for a raw, uncompressed image);
    /// absent when `added` is not empty.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// What the hashes cover, or why they are left out.
    pub hashes: String,
    /// What `image` is: `raw` (the disk's bytes), `qcow2`, `vhd`, `vhd-fixed`, `gce-tar`.
    pub container: crate::format::ContainerType,
    /// Compression of `image` (`none` or `zstd`).
    pub compression: crate::Compression,
    /// The uncompressed image, when it was kept (its name, beside `image`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raw_image: Option<String>,
    /// The block map (bmaptool format 2.0) of the raw disk, beside a raw or zstd image or a
    /// kept raw disk.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bmap: Option<String>,
    /// `SOURCE_DATE_EPOCH`: the time every generated file carries.
    pub source_date_epoch: i64,
    /// Identical store files stored once (absent with dedup off).
    #[serde(skip_serializing_if = "is_off")]
    pub dedup: crate::DedupReport,
    /// Host files added with --add, --add-tree, --add-boot.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub added: Vec<crate::add::Added>,
    /// The NixOS release whose boot files were written, the entry, what was assumed.
    pub boot: crate::BootNote,
    /// The dm-verity protected store (a format with a `store` partition): root hash, salt,
    /// the kernel command line arguments, and both partitions (name, offset, size, UUID).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verity: Option<crate::VerityManifest>,
    /// A/B updates (a format with empty B slots): the image id and version, the artifacts
    /// written to `OUT.sysupdate/` (name, kind, size, SHA-256, as its `SHA256SUMS` lists
    /// them) and the empty slots (number, offset, size, type, A slot).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sysupdate: Option<crate::sysupdate::SysupdateManifest>,
}

fn is_off(d: &crate::DedupReport) -> bool {
    *d == crate::DedupReport::default()
}

/// An ISO 9660 image: its volume, its store image and how it boots.
#[derive(Clone, Debug, Serialize)]
pub struct IsoManifest {
    /// The volume identifier (`iso.volumeID`; the kernel command line's `root=LABEL=`).
    pub volume_id: String,
    /// Bytes of the ISO 9660 volume: the whole image (the hybrid's backup GPT lies in room at
    /// its end, as in xorriso's images).
    pub volume_size: u64,
    /// Bytes of `/nix-store.squashfs`, the closure's squashfs store image.
    pub store_image_size: u64,
    /// Inodes in the store image.
    pub store_image_inodes: u32,
    /// Bytes of `/boot/efi.img`, the FAT image the UEFI entry boots.
    pub efi_image_size: u64,
    /// The El Torito boot entries, BIOS (isolinux, x86_64 only) first.
    pub el_torito: Vec<ElToritoEntry>,
}

/// One El Torito boot entry of an ISO.
#[derive(Clone, Debug, Serialize)]
pub struct ElToritoEntry {
    /// `bios` or `uefi`.
    pub platform: String,
    /// The image's path in the volume.
    pub image: String,
    /// Its first 2048-byte block.
    pub lba: u32,
    /// 512-byte sectors the firmware loads.
    pub load_sectors: u16,
}

/// What a `netboot` or `kexec` build wrote: the initrd carrying the store image and the files
/// beside it.
#[derive(Clone, Debug, Serialize)]
pub struct NetbootManifest {
    /// The kernel command line of `netboot.ipxe` and `kexec-boot`: `init=<toplevel>/init`
    /// and the toplevel's kernel parameters.
    pub command_line: String,
    /// Bytes of `nix-store.squashfs`, the closure's squashfs store image.
    pub store_image_size: u64,
    /// Inodes in the store image.
    pub store_image_inodes: u32,
    /// Bytes of the closure's own initrd, unchanged at the start of the netboot initrd.
    pub closure_initrd_size: u64,
    /// Bytes of the netboot initrd: the closure's initrd, zeros to a multiple of 4, then an
    /// uncompressed newc cpio archive holding `nix-store.squashfs`.
    pub initrd_size: u64,
    /// The files written (netboot: in the directory; kexec: in the tarball), in order.
    pub files: Vec<NetbootFile>,
}

/// One file of a netboot directory or a kexec tarball.
#[derive(Clone, Debug, Serialize)]
pub struct NetbootFile {
    /// Its path in the directory or the tarball.
    pub name: String,
    /// Its size in bytes (a symlink: its target's length).
    pub size: u64,
    /// Its SHA-256 (netboot's files; a kexec tarball's members are covered by `disk_sha256`,
    /// the SHA-256 of the uncompressed tar).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}
