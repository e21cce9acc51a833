//! `kernel.img`, GRUB's i386-pc kernel: a 32-bit ELF linked at 0x9000, laid out as
//! `grub-mkimage` does for a target without relocations.

use crate::Error;

/// Where the i386-pc kernel is linked and loaded (`GRUB_KERNEL_I386_PC_LINK_ADDR`).
pub(crate) const LINK_ADDR: u32 = 0x9000;
/// The end of the memory the kernel and its bss may use (`grub-mkimage`'s check).
const KERNEL_END: u32 = 0x68000;

const SHT_PROGBITS: u32 = 1;
const SHT_NOBITS: u32 = 8;
const SHF_ALLOC: u32 = 2;
const SHF_EXECINSTR: u32 = 4;
const SHDR_SIZE: usize = 40;

struct Section {
    kind: u32,
    flags: u32,
    addr: u32,
    offset: u32,
    size: u32,
}

impl Section {
    fn is_text(&self) -> bool {
        self.kind == SHT_PROGBITS
            && self.flags & (SHF_ALLOC | SHF_EXECINSTR) == SHF_ALLOC | SHF_EXECINSTR
    }
    fn is_data(&self) -> bool {
        self.kind == SHT_PROGBITS && self.flags & (SHF_ALLOC | SHF_EXECINSTR) == SHF_ALLOC
    }
    /// The section's offset in the image (its address minus the link address) and its end.
    fn span(&self) -> Result<(u32, u32), Error> {
        let start = self.addr.checked_sub(LINK_ADDR).ok_or(Error::Kernel(
            "a section lies below the link address 0x9000",
        ))?;
        let end = start
            .checked_add(self.size)
            .ok_or(Error::Kernel("a section ends past 4 GiB"))?;
        Ok((start, end))
    }
}

fn u16_at(b: &[u8], at: usize) -> Result<u16, Error> {
    b.get(at..at + 2)
        .and_then(|s| s.try_into().ok())
        .map(u16::from_le_bytes)
        .ok_or(Error::Kernel("truncated ELF header"))
}

fn u32_at(b: &[u8], at: usize) -> Result<u32, Error> {
    b.get(at..at + 4)
        .and_then(|s| s.try_into().ok())
        .map(u32::from_le_bytes)
        .ok_or(Error::Kernel("truncated ELF header"))
}

fn to_usize(v: u32) -> usize {
    // u32 fits usize on every target this crate builds for (32- and 64-bit).
    usize::try_from(v).unwrap_or(usize::MAX)
}

fn sections(elf: &[u8]) -> Result<Vec<Section>, Error> {
    if elf.get(..4) != Some(b"\x7fELF".as_slice()) {
        return Err(Error::Kernel("not an ELF file"));
    }
    // EI_CLASS 32-bit, EI_DATA little-endian, EI_VERSION current; e_version current.
    if elf.get(4..7) != Some([1u8, 1, 1].as_slice()) || u32_at(elf, 20)? != 1 {
        return Err(Error::Kernel("not a 32-bit little-endian ELF file"));
    }
    let shoff = to_usize(u32_at(elf, 32)?);
    let entsize = usize::from(u16_at(elf, 46)?);
    let count = usize::from(u16_at(elf, 48)?);
    if entsize < SHDR_SIZE {
        return Err(Error::Kernel("section headers are too small"));
    }
    let table_end = count
        .checked_mul(entsize)
        .and_then(|n| n.checked_add(shoff))
        .filter(|&end| end <= elf.len())
        .ok_or(Error::Kernel("section headers past the end of the file"))?;
    let table = &elf[shoff..table_end];
    table
        .chunks_exact(entsize)
        .map(|h| {
            Ok(Section {
                kind: u32_at(h, 4)?,
                flags: u32_at(h, 8)?,
                addr: u32_at(h, 12)?,
                offset: u32_at(h, 16)?,
                size: u32_at(h, 20)?,
            })
        })
        .collect()
}

/// Lays out `kernel.img` as `grub-mkimage` does for i386-pc: text then data at their link
/// addresses minus 0x9000. Every text section must start at 0x9000; the image ends where
/// the last data section (or, without one, the last text section) ends; the bss is not
/// stored, only counted for the size check.
pub(crate) fn load(elf: &[u8]) -> Result<Vec<u8>, Error> {
    let sections = sections(elf)?;
    let mut size = 0u32;
    for s in sections.iter().filter(|s| s.is_text()) {
        if s.addr != LINK_ADDR {
            return Err(Error::Kernel("a text section does not start at 0x9000"));
        }
        size = s.span()?.1;
    }
    for s in sections.iter().filter(|s| s.is_data()) {
        size = s.span()?.1;
    }
    let mut bss_end = size;
    for s in sections.iter().filter(|s| s.kind == SHT_NOBITS) {
        bss_end = s.span()?.1;
    }
    let bss_size = bss_end.saturating_sub(size);
    let used = u64::from(size) + u64::from(bss_size) + u64::from(LINK_ADDR);
    if used > u64::from(KERNEL_END) {
        return Err(Error::TooBig {
            what: "kernel.img with its bss, from 0x9000",
            size: used,
            limit: u64::from(KERNEL_END),
        });
    }
    let mut image = vec![0u8; to_usize(size)];
    for s in sections.iter().filter(|s| s.is_text() || s.is_data()) {
        let (start, end) = s.span()?;
        if end > size {
            return Err(Error::Kernel("sections are not in address order"));
        }
        let from = to_usize(s.offset);
        let bytes = from
            .checked_add(to_usize(s.size))
            .and_then(|to| elf.get(from..to))
            .ok_or(Error::Kernel(
                "a section's bytes are past the end of the file",
            ))?;
        image[to_usize(start)..to_usize(end)].copy_from_slice(bytes);
    }
    Ok(image)
}
