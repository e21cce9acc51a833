//! `core.img` as `grub-mkimage -O i386-pc` assembles it, and as `grub-bios-setup` patches
//! its block list for where it lies on the disk.

use crate::moddep::{resolve, ModDeps};
use crate::{kernel, lzma, rs, Error, Platform, SECTOR};

/// "gmim": the magic of the module info section (`GRUB_MODULE_MAGIC`).
pub(crate) const MODULE_MAGIC: u32 = 0x676d_696d;
/// Object types in the module section (`OBJ_TYPE_*` of `grub/kernel.h`).
pub(crate) const OBJ_ELF: u32 = 0;
pub(crate) const OBJ_CONFIG: u32 = 2;
pub(crate) const OBJ_PREFIX: u32 = 3;
/// `struct grub_module_info32`: magic, offset, size.
const MODULE_INFO_SIZE: usize = 12;
/// `struct grub_module_header`: type, size.
const MODULE_HEADER_SIZE: usize = 8;
/// Offsets of the compressed and uncompressed sizes in `lzma_decompress.img`.
pub(crate) const COMPRESSED_SIZE_AT: usize = 0x08;
pub(crate) const UNCOMPRESSED_SIZE_AT: usize = 0x0c;
/// The decompressor runs at 0x8200 and must end before the kernel's 0x9000.
const MAX_DECOMPRESSOR: usize = 0x9000 - 0x8200;
/// `grub-mkimage`'s bound on the core (decompressor and compressed part): from 0x9000 on,
/// it must end below 0x78000.
const CORE_END: u64 = 0x78000;
/// In `lzma_decompress.img`: how many bytes of redundancy follow the image (u32), and how
/// many of its own first bytes the redundancy does not cover (u16).
pub(crate) const RS_REDUNDANCY_AT: usize = 0x10;
const NO_RS_LENGTH_AT: usize = 0x14;
/// The decompressor's fields this crate reads or patches end here.
pub(crate) const DECOMPRESSOR_HEADER: usize = NO_RS_LENGTH_AT + 2;
/// `grub-bios-setup`'s cap on the embedded sectors: what fits between 0x9000 and 0x78000.
const MAX_EMBED_SECTORS: u64 = (0x78000 - 0x9000) / 512;
/// One block list entry at the end of `diskboot.img`: start (u64), sector count (u16),
/// load segment (u16).
pub(crate) const BLOCKLIST_ENTRY: usize = 12;
/// The segment the first block list entry loads to: just after `diskboot.img` at 0x8000.
const LOAD_SEGMENT: u16 = 0x820;

/// What to build into `core.img`.
#[derive(Debug, Clone, Copy)]
pub struct CoreOptions<'a> {
    /// Where GRUB finds its modules and `grub.cfg` (`-p`), e.g. `(hd0,msdos1)/boot/grub`.
    pub prefix: &'a str,
    /// An early config embedded in the image (`-c`), e.g. a `search.fs_uuid` line.
    pub config: Option<&'a [u8]>,
    /// The modules asked for; their dependencies from `moddep.lst` are added.
    pub modules: &'a [&'a str],
}

/// An assembled `core.img`: `diskboot.img`, `lzma_decompress.img` and the compressed kernel
/// with its modules.
#[derive(Debug, Clone)]
pub struct CoreImage {
    image: Vec<u8>,
    payload: Vec<u8>,
    modules: Vec<String>,
}

fn align_to(n: usize, align: usize) -> usize {
    n.div_ceil(align) * align
}

pub(crate) fn le32(v: usize, what: &'static str) -> Result<[u8; 4], Error> {
    u32::try_from(v)
        .map(u32::to_le_bytes)
        .map_err(|_| Error::TooBig {
            what,
            size: u64::try_from(v).unwrap_or(u64::MAX),
            limit: u64::from(u32::MAX),
        })
}

/// One object of the module section: its header, then its bytes padded with zeros to
/// `padded` bytes (the header's size counts the padding).
fn push_object(out: &mut Vec<u8>, kind: u32, bytes: &[u8], padded: usize) -> Result<(), Error> {
    out.extend_from_slice(&kind.to_le_bytes());
    out.extend_from_slice(&le32(padded + MODULE_HEADER_SIZE, "a module object")?);
    out.extend_from_slice(bytes);
    out.resize(out.len() + (padded - bytes.len()), 0);
    Ok(())
}

/// Refuses a prefix or embedded config with a NUL byte, which would cut it short.
pub(crate) fn check_text(opts: &CoreOptions<'_>) -> Result<(), Error> {
    if opts.prefix.contains('\0') {
        return Err(Error::Nul("prefix"));
    }
    if opts.config.is_some_and(|c| c.contains(&0)) {
        return Err(Error::Nul("embedded config"));
    }
    Ok(())
}

/// The objects of the module section as `grub-mkimage` appends them after the kernel, for
/// every target: each module's file, the embedded config (with at least one NUL after
/// it: the kernel reads it as a C string), the prefix, each padded to `align` bytes (the
/// target's pointer size).
pub(crate) fn module_objects(
    platform: &Platform,
    opts: &CoreOptions<'_>,
    modules: &[String],
    align: usize,
) -> Result<Vec<u8>, Error> {
    let mut objects = Vec::new();
    for name in modules {
        let bytes = platform.get(&format!("{name}.mod"))?;
        push_object(&mut objects, OBJ_ELF, bytes, align_to(bytes.len(), align))?;
    }
    if let Some(config) = opts.config {
        push_object(
            &mut objects,
            OBJ_CONFIG,
            config,
            align_to(config.len() + 1, align),
        )?;
    }
    let prefix = opts.prefix.as_bytes();
    push_object(
        &mut objects,
        OBJ_PREFIX,
        prefix,
        align_to(prefix.len() + 1, align),
    )?;
    Ok(objects)
}

impl CoreImage {
    /// Assembles `core.img` from the platform directory's files, as `grub-mkimage -O i386-pc
    /// -p PREFIX [-c CONFIG] MODULES...` does (LZMA bytes aside, see the crate docs).
    pub fn build(platform: &Platform, opts: &CoreOptions<'_>) -> Result<Self, Error> {
        check_text(opts)?;
        let deps = ModDeps::parse(platform.get("moddep.lst")?)?;
        let modules = resolve(&deps, opts.modules)?;
        let payload = Self::payload(platform, opts, &modules)?;
        let compressed = lzma::compress(&payload)?;

        let mut decompressor = platform.get("lzma_decompress.img")?.to_vec();
        if decompressor.len() > MAX_DECOMPRESSOR {
            return Err(Error::TooBig {
                what: "lzma_decompress.img",
                size: u64::try_from(decompressor.len()).unwrap_or(u64::MAX),
                limit: u64::try_from(MAX_DECOMPRESSOR).unwrap_or(u64::MAX),
            });
        }
        if decompressor.len() < DECOMPRESSOR_HEADER {
            return Err(Error::WrongSize {
                name: "lzma_decompress.img".into(),
                size: decompressor.len(),
                expected: DECOMPRESSOR_HEADER,
            });
        }
        decompressor[COMPRESSED_SIZE_AT..COMPRESSED_SIZE_AT + 4]
            .copy_from_slice(&le32(compressed.len(), "the compressed core")?);
        decompressor[UNCOMPRESSED_SIZE_AT..UNCOMPRESSED_SIZE_AT + 4]
            .copy_from_slice(&le32(payload.len(), "the uncompressed core")?);

        let core_size = decompressor.len() + compressed.len();
        let core_size64 = u64::try_from(core_size).unwrap_or(u64::MAX);
        let limit = (CORE_END - u64::from(kernel::LINK_ADDR)).min(0xffff * 512);
        if core_size64 > limit {
            return Err(Error::TooBig {
                what: "core.img",
                size: core_size64,
                limit,
            });
        }
        let sectors = u16::try_from(core_size.div_ceil(SECTOR)).map_err(|_| Error::TooBig {
            what: "core.img",
            size: core_size64,
            limit,
        })?;
        let mut image = platform.get_sized("diskboot.img", SECTOR)?.to_vec();
        let len_at = SECTOR - BLOCKLIST_ENTRY + 8;
        image[len_at..len_at + 2].copy_from_slice(&sectors.to_le_bytes());
        image.extend_from_slice(&decompressor);
        image.extend_from_slice(&compressed);
        Ok(Self {
            image,
            payload,
            modules,
        })
    }

    /// The uncompressed kernel and module section, as `lzma_decompress.img` unpacks it at
    /// 0x9000.
    fn payload(
        platform: &Platform,
        opts: &CoreOptions<'_>,
        modules: &[String],
    ) -> Result<Vec<u8>, Error> {
        let objects = module_objects(platform, opts, modules, 4)?;
        let total = MODULE_INFO_SIZE + objects.len();
        let mut out = kernel::load(platform.get("kernel.img")?)?;
        out.reserve(total);
        out.extend_from_slice(&MODULE_MAGIC.to_le_bytes());
        out.extend_from_slice(&le32(MODULE_INFO_SIZE, "the module info")?);
        out.extend_from_slice(&le32(total, "the module section")?);
        out.extend_from_slice(&objects);
        Ok(out)
    }

    /// The image as `grub-mkimage` writes it: not padded, `diskboot.img`'s block list still
    /// at its default (the core from sector 2 on), its sector count filled in.
    pub fn mkimage_bytes(&self) -> &[u8] {
        &self.image
    }

    /// The uncompressed kernel and module section (what the decompressor unpacks).
    pub fn payload_bytes(&self) -> &[u8] {
        &self.payload
    }

    /// The modules in the image, in their order (dependencies included).
    pub fn modules(&self) -> &[String] {
        &self.modules
    }

    /// How many sectors the image takes on the disk.
    pub fn sectors(&self) -> u64 {
        u64::try_from(self.image.len().div_ceil(SECTOR)).unwrap_or(u64::MAX)
    }

    /// The image as `grub-bios-setup --no-rs-codes` writes it to sectors
    /// `first..first + sectors()`: padded with zeros to whole sectors, `diskboot.img`'s block
    /// list cleared and set to one entry (the sectors after `first`, loaded at 0x8200) and a
    /// terminator. `first` is also what [`crate::boot_sector`] must be given.
    pub fn placed_at(&self, first: u64) -> Result<Vec<u8>, Error> {
        self.place(first, self.sectors())
    }

    /// The image as `grub-bios-setup` embeds it by default, in `available` sectors from
    /// `first` on (an MBR disk: the sectors between the MBR and the first partition; GPT:
    /// the BIOS boot partition): it takes `min(available, 2 * sectors(), 888)` sectors, the
    /// space after the image filled with Reed-Solomon redundancy over the compressed part
    /// (the decompressor's redundancy field says how much), so that the decompressor can
    /// repair sectors that something else overwrote. Returns the bytes to write at `first`.
    pub fn embedded(&self, first: u64, available: u64) -> Result<Vec<u8>, Error> {
        let sectors = self.sectors();
        let nsec = available.min(2 * sectors).min(MAX_EMBED_SECTORS);
        if nsec < sectors {
            return Err(Error::NoRoom {
                available,
                needed: sectors,
            });
        }
        let mut out = self.place(first, nsec)?;
        let size = self.image.len();
        let no_rs = usize::from(u16::from_le_bytes([
            out[SECTOR + NO_RS_LENGTH_AT],
            out[SECTOR + NO_RS_LENGTH_AT + 1],
        ]));
        let protected_from = SECTOR + no_rs;
        if no_rs == 0xffff || protected_from > size {
            return Err(Error::NoRsLength(no_rs));
        }
        let redundancy = out.len() - size;
        out[SECTOR + RS_REDUNDANCY_AT..SECTOR + RS_REDUNDANCY_AT + 4]
            .copy_from_slice(&le32(redundancy, "the Reed-Solomon redundancy")?);
        rs::add_redundancy(&mut out[protected_from..], size - protected_from);
        Ok(out)
    }

    /// The image padded to `nsec` sectors with its block list set for sector `first`.
    fn place(&self, first: u64, nsec: u64) -> Result<Vec<u8>, Error> {
        if first == 0 || first.checked_add(nsec).is_none() {
            return Err(Error::BadCoreSector(first));
        }
        let rest = u16::try_from(nsec - 1).map_err(|_| Error::TooBig {
            what: "core.img in sectors",
            size: nsec,
            limit: 0xffff,
        })?;
        let mut out = self.image.clone();
        out.resize(usize::from(rest) * SECTOR + SECTOR, 0);
        // Clear the block list from its top entry down, as far as entries are in use.
        let mut at = SECTOR - BLOCKLIST_ENTRY;
        while out[at + 8..at + 10] != [0, 0] {
            out[at..at + BLOCKLIST_ENTRY].fill(0);
            at = at
                .checked_sub(BLOCKLIST_ENTRY)
                .ok_or(Error::NoBlocklistTerminator)?;
        }
        let top = SECTOR - BLOCKLIST_ENTRY;
        out[top..top + 8].copy_from_slice(&(first + 1).to_le_bytes());
        out[top + 8..top + 10].copy_from_slice(&rest.to_le_bytes());
        out[top + 10..top + 12].copy_from_slice(&LOAD_SEGMENT.to_le_bytes());
        out[top - BLOCKLIST_ENTRY..top].fill(0);
        Ok(out)
    }
}
