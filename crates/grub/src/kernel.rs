//! `kernel.img`, GRUB's i386-pc kernel: a 32-bit ELF linked at 0x9000, laid out as
//! `grub-mkimage` does for a target without relocations.

use crate::Error;

/// Where the i386-pc kernel is linked and loaded (`GRUB_KERNEL_I386_PC_LINK_ADDR`).
pub(crate) const LINK_ADDR: u32 = 0x9000;
/// The end of the memory the kernel and its bss may use (`grub-mkimage`'s check).
const KERNEL_END: u32 = 0x68000;

use crate::elf::{sections, to_usize, Section, SHF_ALLOC, SHF_EXECINSTR, SHT_NOBITS, SHT_PROGBITS};

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

/// Lays out `kernel.img` as `grub-mkimage` does for i386-pc: text then data at their link
/// addresses minus 0x9000. Every text section must start at 0x9000; the image ends where
/// the last data section (or, without one, the last text section) ends; the bss is not
/// stored, only counted for the size check.
pub(crate) fn load(elf: &[u8]) -> Result<Vec<u8>, Error> {
    let sections = sections(elf).map_err(Error::Kernel)?;
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
        let bytes = s.bytes(elf).map_err(Error::Kernel)?;
        image[to_usize(start)..to_usize(end)].copy_from_slice(bytes);
    }
    Ok(image)
}
