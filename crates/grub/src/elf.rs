//! The little of 32-bit little-endian ELF that GRUB's i386-pc files need: section headers,
//! a section's bytes, and a module's name (`.modname`). Every read is bounded by the file.

pub(crate) const SHT_PROGBITS: u32 = 1;
pub(crate) const SHT_NOBITS: u32 = 8;
pub(crate) const SHF_ALLOC: u32 = 2;
pub(crate) const SHF_EXECINSTR: u32 = 4;
const SHDR_SIZE: usize = 40;

/// One section header.
pub(crate) struct Section {
    pub name: u32,
    pub kind: u32,
    pub flags: u32,
    pub addr: u32,
    pub offset: u32,
    pub size: u32,
}

impl Section {
    /// The section's bytes in the file (none for `SHT_NOBITS`).
    pub fn bytes<'a>(&self, elf: &'a [u8]) -> Result<&'a [u8], &'static str> {
        if self.kind == SHT_NOBITS {
            return Ok(&[]);
        }
        let from = to_usize(self.offset);
        from.checked_add(to_usize(self.size))
            .and_then(|to| elf.get(from..to))
            .ok_or("a section's bytes are past the end of the file")
    }
}

/// A 32-bit file offset or size as an in-memory index.
pub(crate) fn to_usize(v: u32) -> usize {
    // u32 fits usize on every target this crate builds for (32- and 64-bit).
    usize::try_from(v).unwrap_or(usize::MAX)
}

/// The little-endian u16 at `at`, bounded by `b`.
pub(crate) fn u16_at(b: &[u8], at: usize) -> Result<u16, &'static str> {
    b.get(at..at + 2)
        .and_then(|s| s.try_into().ok())
        .map(u16::from_le_bytes)
        .ok_or("truncated ELF data")
}

/// The little-endian u32 at `at`, bounded by `b`.
pub(crate) fn u32_at(b: &[u8], at: usize) -> Result<u32, &'static str> {
    b.get(at..at + 4)
        .and_then(|s| s.try_into().ok())
        .map(u32::from_le_bytes)
        .ok_or("truncated ELF data")
}

/// The section header table: `count` entries of `entsize` bytes (at least `min`) from
/// `shoff` on, all inside the file.
pub(crate) fn header_table(
    elf: &[u8],
    shoff: usize,
    entsize: usize,
    count: usize,
    min: usize,
) -> Result<std::slice::ChunksExact<'_, u8>, &'static str> {
    if entsize < min {
        return Err("section headers are too small");
    }
    let table_end = count
        .checked_mul(entsize)
        .and_then(|n| n.checked_add(shoff))
        .filter(|&end| end <= elf.len())
        .ok_or("section headers past the end of the file")?;
    Ok(elf[shoff..table_end].chunks_exact(entsize))
}

/// The section headers of a 32-bit little-endian ELF file.
pub(crate) fn sections(elf: &[u8]) -> Result<Vec<Section>, &'static str> {
    if elf.get(..4) != Some(b"\x7fELF".as_slice()) {
        return Err("not an ELF file");
    }
    // EI_CLASS 32-bit, EI_DATA little-endian, EI_VERSION current; e_version current.
    if elf.get(4..7) != Some([1u8, 1, 1].as_slice()) || u32_at(elf, 20)? != 1 {
        return Err("not a 32-bit little-endian ELF file");
    }
    let shoff = to_usize(u32_at(elf, 32)?);
    let entsize = usize::from(u16_at(elf, 46)?);
    let count = usize::from(u16_at(elf, 48)?);
    header_table(elf, shoff, entsize, count, SHDR_SIZE)?
        .map(|h| {
            Ok(Section {
                name: u32_at(h, 0)?,
                kind: u32_at(h, 4)?,
                flags: u32_at(h, 8)?,
                addr: u32_at(h, 12)?,
                offset: u32_at(h, 16)?,
                size: u32_at(h, 20)?,
            })
        })
        .collect()
}

/// A GRUB module's name: the NUL-terminated text of its `.modname` section.
pub(crate) fn module_name(elf: &[u8]) -> Result<String, &'static str> {
    let sections = sections(elf)?;
    let strndx = usize::from(u16_at(elf, 50)?);
    let names = sections
        .get(strndx)
        .ok_or("no section name table")?
        .bytes(elf)?;
    let section = sections
        .iter()
        .find(|s| {
            names
                .get(to_usize(s.name)..)
                .is_some_and(|n| n.split(|&b| b == 0).next() == Some(b".modname".as_slice()))
        })
        .ok_or("no .modname section")?;
    let text = section.bytes(elf)?;
    let name = text.split(|&b| b == 0).next().unwrap_or_default();
    if name.is_empty() {
        return Err("an empty .modname");
    }
    Ok(String::from_utf8_lossy(name).into_owned())
}
