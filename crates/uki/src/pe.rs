//! A bounded reader of PE/COFF images (the systemd EFI stub, a kernel's EFI header, a UKI
//! read back), of the fields a UKI's assembly and inspection need.
//!
//! Layout (Microsoft's "PE Format" specification): the MS-DOS header (`MZ`, the offset of
//! the PE signature at 0x3c), `PE\0\0`, the 20-byte COFF file header, the optional header
//! (PE32 `0x10b` or PE32+ `0x20b`; the fields used here sit at the same offsets in both
//! except the data directories), then the section table (40 bytes a section). Every offset
//! and size is checked against the input before it is used; a header or section that does
//! not fit is an [`Error`], never a panic.

use crate::Error;

/// Bytes of one section header.
pub const SECTION_HEADER_SIZE: usize = 40;
/// Most sections an image may have: the PE specification's limit (the Windows loader's).
pub const MAX_SECTIONS: usize = 96;
/// `IMAGE_FILE_LOCAL_SYMS_STRIPPED`, set by ukify when it strips a symbol table.
pub const LOCAL_SYMS_STRIPPED: u16 = 0x0008;
/// `IMAGE_SCN_CNT_CODE`.
pub const SCN_CNT_CODE: u32 = 0x0000_0020;
/// `IMAGE_SCN_CNT_INITIALIZED_DATA`.
pub const SCN_CNT_INITIALIZED_DATA: u32 = 0x0000_0040;
/// `IMAGE_SCN_MEM_READ`.
pub const SCN_MEM_READ: u32 = 0x4000_0000;

const PE32: u16 = 0x10b;
const PE32_PLUS: u16 = 0x20b;
/// The data directory of the certificate table (Authenticode signatures).
const SECURITY_DIRECTORY: usize = 4;

/// One section header, its fields by the specification's names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SectionHeader {
    /// `Name`: eight bytes, NUL padded.
    pub name: [u8; 8],
    /// `VirtualSize`: the section's size once loaded.
    pub virtual_size: u32,
    /// `VirtualAddress`: where it is loaded, relative to the image base.
    pub virtual_address: u32,
    /// `SizeOfRawData`: its size in the file (a multiple of `FileAlignment`).
    pub size_of_raw_data: u32,
    /// `PointerToRawData`: its offset in the file.
    pub pointer_to_raw_data: u32,
    /// `Characteristics`: `IMAGE_SCN_*` flags.
    pub characteristics: u32,
    /// The other 12 bytes (relocation and line number pointers and counts), kept as read.
    pub rest: [u8; 12],
}

impl SectionHeader {
    /// A new section header with zeros in the fields a UKI's sections do not use.
    pub fn new(name: &str) -> Result<Self, Error> {
        let bytes = name.as_bytes();
        if bytes.is_empty() || bytes.len() > 8 || !bytes.iter().all(|b| b.is_ascii_graphic()) {
            return Err(Error::BadSectionName {
                name: name.to_owned(),
            });
        }
        let mut n = [0u8; 8];
        n[..bytes.len()].copy_from_slice(bytes);
        Ok(Self {
            name: n,
            virtual_size: 0,
            virtual_address: 0,
            size_of_raw_data: 0,
            pointer_to_raw_data: 0,
            characteristics: 0,
            rest: [0; 12],
        })
    }

    /// The name without its NUL padding (ukify's `pe_strip_section_name`), lossily as text.
    pub fn name(&self) -> String {
        let end = self.name.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
        String::from_utf8_lossy(&self.name[..end]).into_owned()
    }

    fn parse(b: &[u8; SECTION_HEADER_SIZE]) -> Self {
        let mut name = [0u8; 8];
        name.copy_from_slice(&b[..8]);
        let mut rest = [0u8; 12];
        rest.copy_from_slice(&b[24..36]);
        Self {
            name,
            virtual_size: le32(b, 8),
            virtual_address: le32(b, 12),
            size_of_raw_data: le32(b, 16),
            pointer_to_raw_data: le32(b, 20),
            characteristics: le32(b, 36),
            rest,
        }
    }

    /// The 40 bytes of the header.
    pub fn encode(&self) -> [u8; SECTION_HEADER_SIZE] {
        let mut b = [0u8; SECTION_HEADER_SIZE];
        b[..8].copy_from_slice(&self.name);
        b[8..12].copy_from_slice(&self.virtual_size.to_le_bytes());
        b[12..16].copy_from_slice(&self.virtual_address.to_le_bytes());
        b[16..20].copy_from_slice(&self.size_of_raw_data.to_le_bytes());
        b[20..24].copy_from_slice(&self.pointer_to_raw_data.to_le_bytes());
        b[24..36].copy_from_slice(&self.rest);
        b[36..40].copy_from_slice(&self.characteristics.to_le_bytes());
        b
    }

    /// The section's bytes in `image`: `VirtualSize` of them, or `SizeOfRawData` when
    /// smaller (the rest is zero once loaded), bounded by the image.
    pub fn data<'a>(&self, image: &'a [u8]) -> Result<&'a [u8], Error> {
        let len = self.virtual_size.min(self.size_of_raw_data);
        slice(image, u64::from(self.pointer_to_raw_data), u64::from(len)).ok_or_else(|| {
            Error::SectionOutside {
                name: self.name(),
                offset: self.pointer_to_raw_data,
                len,
                file: image.len() as u64,
            }
        })
    }
}

/// The headers of a PE image: what a UKI's assembly reads and updates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pe {
    /// Offset of the COFF file header (after `PE\0\0`).
    pub coff: usize,
    /// `Machine`.
    pub machine: u16,
    /// `PointerToSymbolTable` (0 in a stripped image).
    pub pointer_to_symbol_table: u32,
    /// `NumberOfSymbols`.
    pub number_of_symbols: u32,
    /// `Characteristics` of the file header.
    pub characteristics: u16,
    /// Offset of the optional header.
    pub optional: usize,
    /// PE32+ (`0x20b`) rather than PE32.
    pub pe32_plus: bool,
    /// `SizeOfInitializedData`.
    pub size_of_initialized_data: u32,
    /// `SectionAlignment` (a power of two).
    pub section_alignment: u32,
    /// `FileAlignment` (a power of two).
    pub file_alignment: u32,
    /// `SizeOfImage`.
    pub size_of_image: u32,
    /// `SizeOfHeaders`.
    pub size_of_headers: u32,
    /// `CheckSum`.
    pub checksum: u32,
    /// The certificate table's data directory (`VirtualAddress` is a file offset there):
    /// non-zero in a signed image.
    pub security: (u32, u32),
    /// Offset of the section table.
    pub section_table: usize,
    /// The section headers, in table order.
    pub sections: Vec<SectionHeader>,
}

/// Offsets in the COFF file header.
const COFF_NUMBER_OF_SECTIONS: usize = 2;
const COFF_POINTER_TO_SYMBOL_TABLE: usize = 8;
const COFF_NUMBER_OF_SYMBOLS: usize = 12;
const COFF_SIZE_OF_OPTIONAL_HEADER: usize = 16;
const COFF_CHARACTERISTICS: usize = 18;
const COFF_SIZE: usize = 20;
/// Offsets in the optional header (PE32 and PE32+ alike).
const OPT_SIZE_OF_INITIALIZED_DATA: usize = 8;
const OPT_SECTION_ALIGNMENT: usize = 32;
const OPT_FILE_ALIGNMENT: usize = 36;
const OPT_SIZE_OF_IMAGE: usize = 56;
const OPT_SIZE_OF_HEADERS: usize = 60;
const OPT_CHECKSUM: usize = 64;

impl Pe {
    /// Reads the headers of the PE image `image`. Refuses what is not a PE image, a header
    /// or section table past the end, more than [`MAX_SECTIONS`] sections, alignments that
    /// are not powers of two, and section data outside the image.
    pub fn parse(image: &[u8]) -> Result<Self, Error> {
        Self::parse_prefix(image, image.len() as u64)
    }

    /// [`Pe::parse`] of the first bytes `image` of a file of `file_len` bytes: the headers
    /// must be in `image`, section data within `file_len`.
    pub fn parse_prefix(image: &[u8], file_len: u64) -> Result<Self, Error> {
        let bad = |what: &'static str| Error::NotPe { what };
        if image.get(..2) != Some(b"MZ") {
            return Err(bad("no MZ signature"));
        }
        let lfanew = get32(image, 0x3c).ok_or(bad("no PE header offset"))?;
        let sig = u64::from(lfanew);
        if slice(image, sig, 4) != Some(b"PE\0\0") {
            return Err(bad("no PE signature"));
        }
        let coff = usize::try_from(sig + 4).map_err(|_| bad("no PE signature"))?;
        let header = image
            .get(coff..coff + COFF_SIZE)
            .ok_or(bad("file header past the end"))?;
        let n_sections = usize::from(le16(header, COFF_NUMBER_OF_SECTIONS));
        if n_sections > MAX_SECTIONS {
            return Err(Error::TooManySections { count: n_sections });
        }
        let opt_size = usize::from(le16(header, COFF_SIZE_OF_OPTIONAL_HEADER));
        let optional = coff + COFF_SIZE;
        let opt = image
            .get(optional..optional + opt_size)
            .ok_or(bad("optional header past the end"))?;
        let magic = get16(opt, 0).ok_or(bad("optional header too short"))?;
        let (pe32_plus, dirs_count_at) = match magic {
            PE32 => (false, 92),
            PE32_PLUS => (true, 108),
            _ => return Err(bad("optional header magic is neither PE32 nor PE32+")),
        };
        let field = |at: usize| get32(opt, at).ok_or(bad("optional header too short"));
        let section_alignment = field(OPT_SECTION_ALIGNMENT)?;
        let file_alignment = field(OPT_FILE_ALIGNMENT)?;
        for (what, a) in [
            ("SectionAlignment", section_alignment),
            ("FileAlignment", file_alignment),
        ] {
            if !a.is_power_of_two() {
                return Err(Error::BadAlignment { what, value: a });
            }
        }
        let dirs = field(dirs_count_at)?;
        let dir_at = dirs_count_at + 4 + 8 * SECURITY_DIRECTORY;
        let security = if (dirs as usize) > SECURITY_DIRECTORY {
            (field(dir_at)?, field(dir_at + 4)?)
        } else {
            (0, 0)
        };
        let section_table = optional + opt_size;
        let table = image
            .get(section_table..section_table + n_sections * SECTION_HEADER_SIZE)
            .ok_or(bad("section table past the end"))?;
        let sections: Vec<SectionHeader> = table
            .chunks_exact(SECTION_HEADER_SIZE)
            .map(|c| {
                let mut b = [0u8; SECTION_HEADER_SIZE];
                b.copy_from_slice(c);
                SectionHeader::parse(&b)
            })
            .collect();
        for s in &sections {
            let end = u64::from(s.pointer_to_raw_data) + u64::from(s.size_of_raw_data);
            if s.size_of_raw_data != 0 && end > file_len {
                return Err(Error::SectionOutside {
                    name: s.name(),
                    offset: s.pointer_to_raw_data,
                    len: s.size_of_raw_data,
                    file: file_len,
                });
            }
        }
        Ok(Self {
            coff,
            machine: le16(header, 0),
            pointer_to_symbol_table: le32(header, COFF_POINTER_TO_SYMBOL_TABLE),
            number_of_symbols: le32(header, COFF_NUMBER_OF_SYMBOLS),
            characteristics: le16(header, COFF_CHARACTERISTICS),
            optional,
            pe32_plus,
            size_of_initialized_data: field(OPT_SIZE_OF_INITIALIZED_DATA)?,
            section_alignment,
            file_alignment,
            size_of_image: field(OPT_SIZE_OF_IMAGE)?,
            size_of_headers: field(OPT_SIZE_OF_HEADERS)?,
            checksum: field(OPT_CHECKSUM)?,
            security,
            section_table,
            sections,
        })
    }

    /// The first section named `name` (without NUL padding).
    pub fn section(&self, name: &str) -> Option<&SectionHeader> {
        self.sections.iter().find(|s| s.name() == name)
    }

    /// Writes the headers back into `image` (which holds at least the headers): the file
    /// header's section count, symbol table and characteristics, the optional header's sizes
    /// and checksum, and every section header.
    pub(crate) fn write_headers(&self, image: &mut [u8]) -> Result<(), Error> {
        let count = u16::try_from(self.sections.len()).map_err(|_| Error::TooManySections {
            count: self.sections.len(),
        })?;
        let table_end = self.section_table + self.sections.len() * SECTION_HEADER_SIZE;
        if table_end > image.len() || self.optional + OPT_CHECKSUM + 4 > image.len() {
            return Err(Error::NotPe {
                what: "headers past the end",
            });
        }
        let c = self.coff;
        put16(image, c + COFF_NUMBER_OF_SECTIONS, count);
        put32(
            image,
            c + COFF_POINTER_TO_SYMBOL_TABLE,
            self.pointer_to_symbol_table,
        );
        put32(image, c + COFF_NUMBER_OF_SYMBOLS, self.number_of_symbols);
        put16(image, c + COFF_CHARACTERISTICS, self.characteristics);
        let o = self.optional;
        put32(
            image,
            o + OPT_SIZE_OF_INITIALIZED_DATA,
            self.size_of_initialized_data,
        );
        put32(image, o + OPT_SIZE_OF_IMAGE, self.size_of_image);
        put32(image, o + OPT_SIZE_OF_HEADERS, self.size_of_headers);
        put32(image, o + OPT_CHECKSUM, self.checksum);
        for (i, s) in self.sections.iter().enumerate() {
            let at = self.section_table + i * SECTION_HEADER_SIZE;
            image[at..at + SECTION_HEADER_SIZE].copy_from_slice(&s.encode());
        }
        Ok(())
    }
}

/// `len` bytes at `offset` of `b`, if they are all there.
pub(crate) fn slice(b: &[u8], offset: u64, len: u64) -> Option<&[u8]> {
    let start = usize::try_from(offset).ok()?;
    let end = start.checked_add(usize::try_from(len).ok()?)?;
    b.get(start..end)
}

fn get16(b: &[u8], at: usize) -> Option<u16> {
    b.get(at..at + 2).map(|s| u16::from_le_bytes([s[0], s[1]]))
}

pub(crate) fn get32(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

/// A field of a header already bounds-checked by the caller.
fn le16(b: &[u8], at: usize) -> u16 {
    get16(b, at).unwrap_or(0)
}

fn le32(b: &[u8], at: usize) -> u32 {
    get32(b, at).unwrap_or(0)
}

fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}

fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
