//! GRUB's x86_64-efi image (`BOOTX64.EFI`, `grubx64.efi`) as `grub-mkimage -O x86_64-efi`
//! makes it: `kernel.img`, a relocatable ELF, laid out (code, then data and bss, each on a
//! 4 KiB page), its symbols and relocations resolved against that layout, the module
//! section (every module, the embedded config, the prefix; no compression) after it, all of
//! it wrapped in a PE32+ with a base relocation table for every absolute address.

use crate::core_img::{check_text, le32, module_objects, CoreOptions, MODULE_MAGIC};
use crate::elf64::{
    index, name_at, relocs, sections, symbols, Section, Symbol, SHF_ALLOC, SHF_EXECINSTR,
    SHT_NOBITS, SHT_REL, SHT_RELA, SHT_SYMTAB,
};
use crate::moddep::{resolve, ModDeps};
use crate::{Error, Platform};

/// The PE headers' size, and where the image's first section starts, in memory and in the
/// file (`EFI64_HEADER_SIZE`: the headers of four sections rounded up to a page).
const HEADER_SIZE: u64 = 0x1000;
/// Section and file alignment: GRUB 2.06 puts every PE section on a 4 KiB page.
const PAGE: u64 = 0x1000;
/// `struct grub_module_info64`: magic, padding, offset (u64), size (u64).
const MODULE_INFO_SIZE: usize = 24;
/// The pointer size, to which the module objects are padded.
const POINTER: usize = 8;
/// A bound on the laid-out kernel (code, data, bss): GRUB's is about 150 KiB.
const MAX_KERNEL: u64 = 16 << 20;
/// `SHN_ABS`: a symbol whose value is absolute.
const SHN_ABS: u16 = 0xfff1;
/// x86-64 relocation types GRUB's kernel has (`R_X86_64_*`).
const R_NONE: u32 = 0;
const R_64: u32 = 1;
const R_PC32: u32 = 2;
const R_PLT32: u32 = 4;
const R_32: u32 = 10;
const R_32S: u32 = 11;
const R_PC64: u32 = 24;
/// `IMAGE_REL_BASED_DIR64`: a base relocation of a 64-bit address.
const REL_BASED_DIR64: u16 = 10;
/// 2015-01-01T00:00:00Z, the time stamp `grub-mkimage` writes into every PE header.
const TIMESTAMP: u32 = 1_420_070_400;

/// An assembled x86_64-efi image.
#[derive(Debug, Clone)]
pub struct EfiImage {
    image: Vec<u8>,
    modules: Vec<String>,
}

impl EfiImage {
    /// Builds the image from the x86_64-efi platform directory's files, as `grub-mkimage -O
    /// x86_64-efi -p PREFIX [-c CONFIG] MODULES...` does (byte for byte with GRUB 2.06).
    pub fn build(platform: &Platform, opts: &CoreOptions<'_>) -> Result<Self, Error> {
        check_text(opts)?;
        let deps = ModDeps::parse(platform.get("moddep.lst")?)?;
        let modules = resolve(&deps, opts.modules)?;
        let objects = module_objects(platform, opts, &modules, POINTER)?;
        let kernel = Kernel::load(platform.get("kernel.img")?)?;

        let total = MODULE_INFO_SIZE + objects.len();
        let mut core = kernel.image;
        core.reserve(total);
        core.extend_from_slice(&MODULE_MAGIC.to_le_bytes());
        core.extend_from_slice(&[0; 4]);
        core.extend_from_slice(&(MODULE_INFO_SIZE as u64).to_le_bytes());
        core.extend_from_slice(&u64::try_from(total).unwrap_or(u64::MAX).to_le_bytes());
        core.extend_from_slice(&objects);
        let image = pe(&core, &kernel.layout, &kernel.fixups, total)?;
        Ok(Self { image, modules })
    }

    /// The PE32+ file, as `grub-mkimage` writes it.
    pub fn bytes(&self) -> &[u8] {
        &self.image
    }

    /// The modules in the image, in their order (dependencies included).
    pub fn modules(&self) -> &[String] {
        &self.modules
    }
}

fn bad(what: &'static str) -> Error {
    Error::Kernel(what)
}

fn align_up(v: u64, align: u64) -> Result<u64, Error> {
    if align <= 1 {
        return Ok(v);
    }
    v.div_ceil(align)
        .checked_mul(align)
        .ok_or(bad("a section address overflows"))
}

/// Where each section of `kernel.img` goes, as offsets from the end of the PE headers.
#[derive(Debug, Default)]
struct Layout {
    /// Per section: its offset in the kernel image (0 for sections not loaded).
    addrs: Vec<u64>,
    /// The size of the code, rounded to a page.
    exec_size: u64,
    /// Where the data ends and the bss begins.
    bss_start: u64,
    /// The end of the bss, rounded to a page: the kernel image's size.
    end: u64,
    /// The entry point's address (`_start`), relative to the image base.
    start: u64,
}

impl Layout {
    /// A section's address relative to the image base (its offset plus the headers).
    fn vaddr(&self, i: usize) -> u64 {
        self.addrs.get(i).copied().unwrap_or(0) + HEADER_SIZE
    }
}

fn is_text(s: &Section) -> bool {
    s.flags & (SHF_EXECINSTR | SHF_ALLOC) == SHF_EXECINSTR | SHF_ALLOC
}

fn is_data(s: &Section) -> bool {
    s.flags & (SHF_EXECINSTR | SHF_ALLOC) == SHF_ALLOC && s.kind != SHT_NOBITS
}

fn is_bss(s: &Section) -> bool {
    s.flags & (SHF_EXECINSTR | SHF_ALLOC) == SHF_ALLOC && s.kind == SHT_NOBITS
}

fn is_kept(s: &Section) -> bool {
    is_text(s) || is_data(s) || is_bss(s)
}

/// `kernel.img` laid out and relocated, with its base relocation table.
struct Kernel {
    image: Vec<u8>,
    layout: Layout,
    fixups: Vec<u8>,
}

impl Kernel {
    fn load(file: &[u8]) -> Result<Self, Error> {
        let (sections, strndx) = sections(file).map_err(bad)?;
        let names = sections[strndx].bytes(file).map_err(bad)?;
        let mut layout = locate(&sections)?;
        let symtab = sections
            .iter()
            .find(|s| s.kind == SHT_SYMTAB)
            .ok_or(bad("no symbol table"))?;
        let mut syms = symbols(file, symtab).map_err(bad)?;
        let strtab = sections
            .get(index(u64::from(symtab.link)).map_err(bad)?)
            .ok_or(bad("no symbol name table"))?
            .bytes(file)
            .map_err(bad)?;
        layout.start = relocate_symbols(&mut syms, strtab, &layout, sections.len())?;

        let mut elf = file.to_vec();
        let mut fixups = Fixups::default();
        for s in sections
            .iter()
            .filter(|s| s.kind == SHT_RELA || s.kind == SHT_REL)
        {
            if kept_reloc(s, &sections, names) {
                apply(&mut elf, s, &sections, &syms, &layout, &mut fixups)?;
            }
        }
        let fixups = fixups.finish()?;

        let mut image = vec![0u8; index(layout.end).map_err(bad)?];
        for (s, &at) in sections.iter().zip(&layout.addrs) {
            if is_kept(s) && s.kind != SHT_NOBITS {
                let bytes = &elf[s.range(elf.len()).map_err(bad)?];
                let at = index(at).map_err(bad)?;
                image[at..at + bytes.len()].copy_from_slice(bytes);
            }
        }
        Ok(Self {
            image,
            layout,
            fixups,
        })
    }
}

/// Places a section at `at` rounded up to its alignment (counted from the image base, as
/// GRUB's `put_section` does); returns where it ends.
fn put(s: &Section, at: u64, addr: &mut u64) -> Result<u64, Error> {
    let at = align_up(at + HEADER_SIZE, s.align)? - HEADER_SIZE;
    *addr = at;
    at.checked_add(s.size)
        .filter(|&end| end <= MAX_KERNEL)
        .ok_or(Error::TooBig {
            what: "kernel.img laid out",
            size: at.saturating_add(s.size),
            limit: MAX_KERNEL,
        })
}

/// GRUB's `locate_sections` for EFI: code sections one after the other, a page boundary,
/// data sections, the bss sections, the end rounded to a page.
fn locate(sections: &[Section]) -> Result<Layout, Error> {
    let mut addrs = vec![0u64; sections.len()];
    let mut size = 0;
    for (s, addr) in sections.iter().zip(addrs.iter_mut()) {
        if is_text(s) {
            size = put(s, size, addr)?;
        }
    }
    let exec_size = align_up(size + HEADER_SIZE, PAGE)? - HEADER_SIZE;
    size = exec_size;
    for (s, addr) in sections.iter().zip(addrs.iter_mut()) {
        if is_data(s) {
            size = put(s, size, addr)?;
        }
    }
    let bss_start = size;
    let mut end = size;
    for (s, addr) in sections.iter().zip(addrs.iter_mut()) {
        if is_bss(s) {
            end = put(s, end, addr)?;
        }
    }
    let end = align_up(end + HEADER_SIZE, PAGE)? - HEADER_SIZE;
    Ok(Layout {
        addrs,
        exec_size,
        bss_start,
        end: align_up(end, PAGE)?,
        start: 0,
    })
}

/// GRUB's `relocate_symbols`: every symbol of a section moved by that section's address;
/// `__bss_start` and `_end` (undefined in `kernel.img`) given the layout's offsets (not
/// addresses: GRUB's choice, kept); another undefined symbol refused. Returns the address
/// of the first `_start` or `start`.
fn relocate_symbols(
    syms: &mut [Symbol],
    names: &[u8],
    layout: &Layout,
    count: usize,
) -> Result<u64, Error> {
    let mut start = None;
    for sym in syms.iter_mut() {
        let name = name_at(names, sym.name);
        match sym.shndx {
            SHN_ABS => continue,
            0 if sym.name == 0 => continue,
            0 => {
                sym.value = match name {
                    b"__bss_start" => layout.bss_start,
                    b"_end" => layout.end,
                    _ => {
                        return Err(Error::UndefinedSymbol(
                            String::from_utf8_lossy(name).into_owned(),
                        ))
                    }
                }
            }
            i if usize::from(i) >= count => return Err(bad("a symbol's section does not exist")),
            i => sym.value = sym.value.wrapping_add(layout.vaddr(usize::from(i))),
        }
        if start.is_none() && (name == b"_start" || name == b"start") {
            start = Some(sym.value);
        }
    }
    start.ok_or(bad("no _start symbol"))
}

/// GRUB's `is_kept_reloc_section`: `.rela.X` (`.rel.X`) is kept when the first section
/// named `X` is; a relocation section of another name always is.
fn kept_reloc(s: &Section, sections: &[Section], names: &[u8]) -> bool {
    let name = name_at(names, s.name);
    let target = if let Some(rest) = name.strip_prefix(b".rela") {
        rest
    } else if let Some(rest) = name.strip_prefix(b".rel") {
        rest
    } else {
        return true;
    };
    if !target.starts_with(b".") {
        return true;
    }
    sections
        .iter()
        .find(|t| name_at(names, t.name) == target)
        .is_some_and(is_kept)
}

/// Applies one relocation section to the ELF's bytes in memory (GRUB's `relocate_addrs`:
/// absolute values as addresses from an image base of 0, PC-relative ones resolved) and
/// adds a base relocation for each 64-bit absolute one (`make_reloc_section`).
fn apply(
    elf: &mut [u8],
    s: &Section,
    sections: &[Section],
    syms: &[Symbol],
    layout: &Layout,
    fixups: &mut Fixups,
) -> Result<(), Error> {
    let target_index = index(u64::from(s.info)).map_err(bad)?;
    let target = sections
        .get(target_index)
        .ok_or(bad("a relocation's section does not exist"))?;
    let bytes = target.range(elf.len()).map_err(bad)?;
    let target_addr = layout.addrs.get(target_index).copied().unwrap_or(0);
    let target_vaddr = layout.vaddr(target_index);
    for r in relocs(elf, s).map_err(bad)? {
        let sym = syms
            .get(index(u64::from(r.sym)).map_err(bad)?)
            .ok_or(bad("a relocation's symbol does not exist"))?
            .value;
        let width = match r.kind {
            R_NONE => continue,
            R_64 | R_PC64 => 8,
            R_PC32 | R_PLT32 | R_32 | R_32S => 4,
            other => return Err(Error::Relocation(other)),
        };
        let at = index(r.offset)
            .ok()
            .and_then(|o| o.checked_add(bytes.start))
            .filter(|&at| at + width <= bytes.end)
            .ok_or(bad("a relocation is past its section"))?;
        let field = &mut elf[at..at + width];
        let old = if width == 8 {
            u64::from_le_bytes(field.try_into().map_err(|_| bad("relocation field"))?)
        } else {
            u64::from(u32::from_le_bytes(
                field.try_into().map_err(|_| bad("relocation field"))?,
            ))
        };
        let mut value = old.wrapping_add(r.addend).wrapping_add(sym);
        if matches!(r.kind, R_PC32 | R_PLT32 | R_PC64) {
            value = value
                .wrapping_sub(target_addr)
                .wrapping_sub(r.offset)
                .wrapping_sub(HEADER_SIZE);
        }
        field.copy_from_slice(&value.to_le_bytes()[..width]);
        match r.kind {
            R_32 | R_32S => return Err(Error::Relocation(r.kind)),
            R_64 => fixups.add(target_vaddr.wrapping_add(r.offset))?,
            _ => {}
        }
    }
    Ok(())
}

/// The PE base relocation table as `grub-mkimage` builds it: a block per run of entries in
/// one 4 KiB page (a new block whenever an address leaves the current page), each block
/// padded to 8 bytes, the last one padded so that the table ends on a page boundary.
#[derive(Default)]
struct Fixups {
    out: Vec<u8>,
    block: Option<(u64, Vec<u16>)>,
}

impl Fixups {
    fn add(&mut self, addr: u64) -> Result<(), Error> {
        if let Some((page, _)) = &self.block {
            if addr < *page || *page + PAGE <= addr {
                self.close(false)?;
            }
        }
        let (page, entries) = self.block.get_or_insert((addr & !(PAGE - 1), Vec::new()));
        let offset = u16::try_from(addr - *page).map_err(|_| bad("a fixup offset"))?;
        entries.push(REL_BASED_DIR64 << 12 | offset);
        Ok(())
    }

    fn close(&mut self, last: bool) -> Result<(), Error> {
        let Some((page, mut entries)) = self.block.take() else {
            return Ok(());
        };
        let size = 8 + 2 * entries.len();
        if last {
            let end = self.out.len() + size;
            let pad = (align_to(end, PAGE) - end) / 2;
            entries.resize(entries.len() + pad, 0);
        } else if size % 8 != 0 {
            entries.resize(entries.len() + (8 - size % 8) / 2, 0);
        }
        let page = u32::try_from(page).map_err(|_| bad("a fixup page past 4 GiB"))?;
        self.out.extend_from_slice(&page.to_le_bytes());
        self.out
            .extend_from_slice(&le32(8 + 2 * entries.len(), "a fixup block")?);
        for e in entries {
            self.out.extend_from_slice(&e.to_le_bytes());
        }
        Ok(())
    }

    fn finish(mut self) -> Result<Vec<u8>, Error> {
        self.close(true)?;
        Ok(self.out)
    }
}

fn align_to(n: usize, align: u64) -> usize {
    let align = usize::try_from(align).unwrap_or(1);
    n.div_ceil(align) * align
}

fn u32_of(v: u64, what: &'static str) -> Result<u32, Error> {
    u32::try_from(v).map_err(|_| Error::TooBig {
        what,
        size: v,
        limit: u64::from(u32::MAX),
    })
}

/// `struct grub_pe32_section_table`'s fields that GRUB sets.
struct PeSection {
    name: &'static [u8],
    size: u64,
    characteristics: u32,
}

const SCN_CODE: u32 = 0x20;
const SCN_DATA: u32 = 0x40;
const SCN_DISCARDABLE: u32 = 0x0200_0000;
const SCN_EXECUTE: u32 = 0x2000_0000;
const SCN_READ: u32 = 0x4000_0000;
const SCN_WRITE: u32 = 0x8000_0000;

/// The MS-DOS stub GRUB puts in front of every PE image: the `MZ` header pointing at the PE
/// signature at 0x80, and the "cannot be run in DOS mode" program.
const MSDOS_STUB: [u8; 0x80] = {
    let mut stub = [0u8; 0x80];
    let head: [u8; 16] = [
        0x4d, 0x5a, 0x90, 0, 3, 0, 0, 0, 4, 0, 0, 0, 0xff, 0xff, 0, 0,
    ];
    let mut i = 0;
    while i < 16 {
        stub[i] = head[i];
        i += 1;
    }
    stub[0x10] = 0xb8;
    stub[0x18] = 0x40;
    stub[0x3c] = 0x80;
    let code: &[u8] = b"\x0e\x1f\xba\x0e\x00\xb4\x09\xcd\x21\xb8\x01\x4c\xcd\x21This program cannot be run in DOS mode.\r\r\n$";
    let mut i = 0;
    while i < code.len() {
        stub[0x40 + i] = code[i];
        i += 1;
    }
    stub
};

/// The PE32+ file: headers, the kernel and module section from 0x1000 on, the base
/// relocation table in the last page(s). Sections `.text` (the code), `.data` (data and
/// bss), `mods` (the module section, up to the table) and `.reloc`.
fn pe(core: &[u8], layout: &Layout, fixups: &[u8], modules: usize) -> Result<Vec<u8>, Error> {
    let core_size = u64::try_from(core.len()).unwrap_or(u64::MAX);
    let reloc_size = u64::try_from(fixups.len()).unwrap_or(u64::MAX);
    let pe_size = align_up(HEADER_SIZE + core_size, PAGE)? + align_up(reloc_size, PAGE)?;
    let mut img = vec![0u8; index(pe_size).map_err(bad)?];
    img[0x1000..0x1000 + core.len()].copy_from_slice(core);
    img[..0x80].copy_from_slice(&MSDOS_STUB);
    img[0x80..0x84].copy_from_slice(b"PE\0\0");

    let data_size = layout.end - layout.exec_size;
    let mods_at = HEADER_SIZE + layout.end;
    let sections = [
        PeSection {
            name: b".text",
            size: layout.exec_size,
            characteristics: SCN_CODE | SCN_EXECUTE | SCN_READ,
        },
        PeSection {
            name: b".data",
            size: data_size,
            characteristics: SCN_DATA | SCN_READ | SCN_WRITE,
        },
        PeSection {
            name: b"mods",
            size: pe_size - reloc_size - mods_at,
            characteristics: SCN_DATA | SCN_READ | SCN_WRITE,
        },
        PeSection {
            name: b".reloc",
            size: reloc_size,
            characteristics: SCN_DATA | SCN_DISCARDABLE | SCN_READ,
        },
    ];
    // COFF file header: x86-64, 4 sections, the stable time stamp, no symbols, a PE32+
    // optional header, executable with line numbers, local symbols and debug info stripped.
    let coff = &mut img[0x84..0x98];
    coff[0..2].copy_from_slice(&0x8664u16.to_le_bytes());
    coff[2..4].copy_from_slice(&4u16.to_le_bytes());
    coff[4..8].copy_from_slice(&TIMESTAMP.to_le_bytes());
    coff[16..18].copy_from_slice(&0xf0u16.to_le_bytes());
    coff[18..20].copy_from_slice(&0x020eu16.to_le_bytes());

    let modules_size = align_up(u64::try_from(modules).unwrap_or(u64::MAX), PAGE)?;
    let reloc_rva = align_up(pe_size - reloc_size, PAGE)?;
    let fields: [(usize, u64, usize); 17] = [
        (0, 0x20b, 2),                    // magic: PE32+
        (4, layout.exec_size, 4),         // code size
        (8, data_size + modules_size, 4), // initialised data size
        (16, layout.start, 4),            // entry point
        (20, HEADER_SIZE, 4),             // code base
        (32, PAGE, 4),                    // section alignment
        (36, PAGE, 4),                    // file alignment
        (56, pe_size, 4),                 // image size
        (60, HEADER_SIZE, 4),             // header size
        (68, 10, 2),                      // subsystem: EFI application
        (72, 0x10000, 8),                 // stack reserve
        (80, 0x10000, 8),                 // stack commit
        (88, 0x10000, 8),                 // heap reserve
        (96, 0x10000, 8),                 // heap commit
        (108, 16, 4),                     // data directories
        (152, reloc_rva, 4),              // base relocation table
        (156, reloc_size, 4),             // its size
    ];
    let opt = 0x98;
    let mut vma = HEADER_SIZE;
    let mut table = opt + 0xf0;
    for s in &sections {
        let h = &mut img[table..table + 40];
        h[..s.name.len()].copy_from_slice(s.name);
        let size = u32_of(s.size, "a PE section")?;
        h[8..12].copy_from_slice(&size.to_le_bytes());
        h[12..16].copy_from_slice(&u32_of(vma, "a PE section's address")?.to_le_bytes());
        h[16..20].copy_from_slice(&size.to_le_bytes());
        h[20..24].copy_from_slice(&u32_of(vma, "a PE section's offset")?.to_le_bytes());
        h[36..40].copy_from_slice(&s.characteristics.to_le_bytes());
        vma = align_up(vma + s.size, PAGE)?;
        table += 40;
    }
    for (at, value, width) in fields {
        let bytes = value.to_le_bytes();
        if width < 8 && value >> (width * 8) != 0 {
            return Err(Error::TooBig {
                what: "a PE header field",
                size: value,
                limit: (1 << (width * 8)) - 1,
            });
        }
        img[opt + at..opt + at + width].copy_from_slice(&bytes[..width]);
    }
    let reloc_at = index(reloc_rva).map_err(bad)?;
    img.get_mut(reloc_at..reloc_at + fixups.len())
        .ok_or(bad("the relocation table is past the image"))?
        .copy_from_slice(fixups);
    Ok(img)
}
