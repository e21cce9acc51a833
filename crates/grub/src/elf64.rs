//! The little of 64-bit little-endian relocatable ELF that GRUB's x86_64-efi `kernel.img`
//! needs: section headers, symbols and RELA entries. Every read is bounded by the file.

use crate::elf::{header_table, u16_at, u32_at};

pub(crate) const SHT_SYMTAB: u32 = 2;
pub(crate) const SHT_RELA: u32 = 4;
pub(crate) const SHT_NOBITS: u32 = 8;
pub(crate) const SHT_REL: u32 = 9;
pub(crate) const SHF_ALLOC: u64 = 2;
pub(crate) const SHF_EXECINSTR: u64 = 4;
/// `EM_X86_64`.
const MACHINE_X86_64: u16 = 62;
const EHDR_SIZE: usize = 64;
const SHDR_SIZE: usize = 64;
const SYM_SIZE: usize = 24;
const REL_SIZE: usize = 16;

/// One section header.
#[derive(Debug, Clone)]
pub(crate) struct Section {
    pub name: u32,
    pub kind: u32,
    pub flags: u64,
    pub offset: u64,
    pub size: u64,
    pub link: u32,
    pub info: u32,
    pub align: u64,
    pub entsize: u64,
}

/// One symbol: its name's offset in the string table, its section index, its value.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Symbol {
    pub name: u32,
    pub shndx: u16,
    pub value: u64,
}

/// One relocation: where (offset in the target section), which symbol, which type, and the
/// addend (0 for `SHT_REL`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reloc {
    pub offset: u64,
    pub sym: u32,
    pub kind: u32,
    pub addend: u64,
}

fn u64_at(b: &[u8], at: usize) -> Result<u64, &'static str> {
    b.get(at..at + 8)
        .and_then(|s| s.try_into().ok())
        .map(u64::from_le_bytes)
        .ok_or("truncated ELF data")
}

/// A 64-bit file offset or size as an in-memory index; too big for memory is past the file.
pub(crate) fn index(v: u64) -> Result<usize, &'static str> {
    usize::try_from(v).map_err(|_| "an offset or size past the end of the file")
}

impl Section {
    /// The range of the file the section's bytes take (empty for `SHT_NOBITS`).
    pub fn range(&self, file_len: usize) -> Result<std::ops::Range<usize>, &'static str> {
        if self.kind == SHT_NOBITS {
            return Ok(0..0);
        }
        let from = index(self.offset)?;
        let to = from
            .checked_add(index(self.size)?)
            .filter(|&to| to <= file_len)
            .ok_or("a section's bytes are past the end of the file")?;
        Ok(from..to)
    }

    /// The section's bytes in the file (none for `SHT_NOBITS`).
    pub fn bytes<'a>(&self, elf: &'a [u8]) -> Result<&'a [u8], &'static str> {
        Ok(&elf[self.range(elf.len())?])
    }

    /// The entries of a table section, each `min` bytes long at least.
    fn entries<'a>(
        &self,
        elf: &'a [u8],
        min: usize,
    ) -> Result<std::slice::ChunksExact<'a, u8>, &'static str> {
        let entsize = index(self.entsize)?;
        if entsize < min {
            return Err("a table's entries are too small");
        }
        Ok(self.bytes(elf)?.chunks_exact(entsize))
    }
}

/// The section headers of a 64-bit little-endian x86-64 ELF file, and the index of its
/// section name table.
pub(crate) fn sections(elf: &[u8]) -> Result<(Vec<Section>, usize), &'static str> {
    if elf.len() < EHDR_SIZE || elf.get(..4) != Some(b"\x7fELF".as_slice()) {
        return Err("not an ELF file");
    }
    // EI_CLASS 64-bit, EI_DATA little-endian, EI_VERSION current; e_version current.
    if elf.get(4..7) != Some([2u8, 1, 1].as_slice()) || u32_at(elf, 20)? != 1 {
        return Err("not a 64-bit little-endian ELF file");
    }
    if u16_at(elf, 18)? != MACHINE_X86_64 {
        return Err("not an x86-64 ELF file");
    }
    let shoff = index(u64_at(elf, 40)?)?;
    let entsize = usize::from(u16_at(elf, 58)?);
    let count = usize::from(u16_at(elf, 60)?);
    let strndx = usize::from(u16_at(elf, 62)?);
    let sections = header_table(elf, shoff, entsize, count, SHDR_SIZE)?
        .map(|h| {
            Ok(Section {
                name: u32_at(h, 0)?,
                kind: u32_at(h, 4)?,
                flags: u64_at(h, 8)?,
                offset: u64_at(h, 24)?,
                size: u64_at(h, 32)?,
                link: u32_at(h, 40)?,
                info: u32_at(h, 44)?,
                align: u64_at(h, 48)?,
                entsize: u64_at(h, 56)?,
            })
        })
        .collect::<Result<Vec<_>, &'static str>>()?;
    if strndx >= sections.len() {
        return Err("no section name table");
    }
    Ok((sections, strndx))
}

/// The NUL-terminated name at `at` in a string table (empty when `at` is past it).
pub(crate) fn name_at(table: &[u8], at: u32) -> &[u8] {
    let at = usize::try_from(at).unwrap_or(usize::MAX);
    table
        .get(at..)
        .and_then(|rest| rest.split(|&b| b == 0).next())
        .unwrap_or_default()
}

/// The symbols of a `SHT_SYMTAB` section.
pub(crate) fn symbols(elf: &[u8], symtab: &Section) -> Result<Vec<Symbol>, &'static str> {
    symtab
        .entries(elf, SYM_SIZE)?
        .map(|s| {
            Ok(Symbol {
                name: u32_at(s, 0)?,
                shndx: u16_at(s, 6)?,
                value: u64_at(s, 8)?,
            })
        })
        .collect()
}

/// The entries of a `SHT_RELA` or `SHT_REL` section.
pub(crate) fn relocs(elf: &[u8], section: &Section) -> Result<Vec<Reloc>, &'static str> {
    let rela = section.kind == SHT_RELA;
    section
        .entries(elf, if rela { REL_SIZE + 8 } else { REL_SIZE })?
        .map(|r| {
            let info = u64_at(r, 8)?;
            Ok(Reloc {
                offset: u64_at(r, 0)?,
                sym: u32::try_from(info >> 32).unwrap_or(u32::MAX),
                kind: u32::try_from(info & 0xffff_ffff).unwrap_or(u32::MAX),
                addend: if rela { u64_at(r, 16)? } else { 0 },
            })
        })
        .collect()
}
