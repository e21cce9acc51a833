//! Adding sections to a stub, step for step as systemd's `ukify` does it (`pe_add_sections`
//! in `src/ukify/ukify.py`, read at systemd commit 0010d39a, the 258 series):
//!
//! 1. A symbol table is stripped when it (18 bytes a symbol, then the string table, whose
//!    size is its first 4 bytes) ends exactly at the end of the file: the file is cut there,
//!    `PointerToSymbolTable` and `NumberOfSymbols` set to 0 and `IMAGE_FILE_LOCAL_SYMS_STRIPPED`
//!    set.
//! 2. Every section's `PointerToRawData` and `SizeOfRawData` are rounded up to `FileAlignment`,
//!    zeros inserted before and after its data, and the later sections' pointers moved by both
//!    (a no-op for an aligned stub).
//! 3. `SizeOfHeaders` is rounded up to `FileAlignment` (room for the new section headers).
//! 4. A signed stub (a certificate table directory) is refused.
//! 5. Each new section, in the order given: its header goes after the last one and must end
//!    within `SizeOfHeaders`; `VirtualSize` is the data's length (or the one given: ukify
//!    gives `.linux` the kernel's own `SizeOfImage`); `PointerToRawData` is the file's length
//!    rounded up to `FileAlignment`; `SizeOfRawData` the length rounded up likewise;
//!    `VirtualAddress` the end of the last section (`VirtualAddress + VirtualSize`) rounded up
//!    to `SectionAlignment`; characteristics `MEM_READ` plus `CNT_CODE` for `.linux` (old
//!    kernels run inline through the EFI handover protocol), `CNT_INITIALIZED_DATA` for the
//!    others. `NumberOfSections` grows by one and `SizeOfInitializedData` by `VirtualSize`.
//! 6. A section the stub already has (`.sbat`) is not added but its data replaced in place:
//!    the new data must fit in its `SizeOfRawData`; its `VirtualSize` and `SizeOfRawData`
//!    become the new ones. ukify joins the bytes after the new data's rounded size to the
//!    next section's data, which shifts that data under unchanged headers when the rounded
//!    size is smaller than the old raw size; here the old raw extent is kept, filled with
//!    zeros (the same bytes whenever ukify's output is sound).
//! 7. Last, `CheckSum` is 0 and `SizeOfImage` the end of the last section rounded up to
//!    `SectionAlignment`. Nothing else changes: `TimeDateStamp` stays the stub's.
//!
//! Beyond ukify, for hostile stubs (pefile's warnings, which ukify treats as errors, or
//! outputs that would not be PE images): section data inside the headers and a
//! `FileAlignment` above the PE specification's 64 KiB are refused, and a symbol table
//! pointer into the headers or the sections' data is left as it is.

use crate::pe::{self, Pe, SectionHeader};
use crate::Error;

/// A section's data: bytes in memory, or a file's bytes the caller supplies later (the
/// kernel and initrd, which need not be read to be placed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Data {
    /// The bytes themselves.
    Bytes(Vec<u8>),
    /// `len` bytes, supplied when the image is written ([`Layout::to_vec`]); the caller
    /// keeps their order: the n-th external section is the n-th supplied.
    External {
        /// The length.
        len: u64,
    },
}

impl Data {
    fn len(&self) -> u64 {
        match self {
            Data::Bytes(b) => b.len() as u64,
            Data::External { len } => *len,
        }
    }
}

/// A section to add.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Part {
    /// `.osrel`, `.linux`, ...: at most 8 printable ASCII bytes.
    pub name: String,
    /// Its data.
    pub data: Data,
    /// `VirtualSize` when not the data's length.
    pub virtual_size: Option<u32>,
}

/// One run of the assembled file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Piece {
    /// Bytes held here (the stub with its headers updated, small sections).
    Bytes(Vec<u8>),
    /// Zeros (alignment padding).
    Zeros(u64),
    /// The `index`-th external section's data, `len` bytes.
    External {
        /// Which external section (counted in the order of the parts).
        index: usize,
        /// Its length.
        len: u64,
    },
}

/// A section of the assembled image, for reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placed {
    /// The section's name.
    pub name: String,
    /// `PointerToRawData`.
    pub offset: u64,
    /// Its data's length.
    pub len: u64,
    /// `VirtualAddress`.
    pub virtual_address: u32,
    /// `VirtualSize`.
    pub virtual_size: u32,
}

/// The assembled image as runs of bytes, zeros and external data, in file order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    /// The runs, in order.
    pub pieces: Vec<Piece>,
    /// Every section of the result (the stub's and the added ones), in table order.
    pub sections: Vec<Placed>,
    /// The file's length.
    pub len: u64,
}

impl Layout {
    /// The whole image in memory, `externals[i]` being the `i`-th external section's data
    /// (of the length it was declared with).
    pub fn to_vec(&self, externals: &[&[u8]]) -> Result<Vec<u8>, Error> {
        let mut out = Vec::with_capacity(usize::try_from(self.len).unwrap_or(0));
        for p in &self.pieces {
            match p {
                Piece::Bytes(b) => out.extend_from_slice(b),
                Piece::Zeros(n) => {
                    out.resize(out.len() + usize::try_from(*n).map_err(|_| too_big(*n))?, 0);
                }
                Piece::External { index, len } => {
                    let data = externals
                        .get(*index)
                        .ok_or(Error::ExternalMissing { index: *index })?;
                    if data.len() as u64 != *len {
                        return Err(Error::ExternalLength {
                            index: *index,
                            declared: *len,
                            given: data.len() as u64,
                        });
                    }
                    out.extend_from_slice(data);
                }
            }
        }
        Ok(out)
    }
}

fn too_big(n: u64) -> Error {
    Error::TooBig { size: n }
}

/// The largest `FileAlignment` a stub may have.
pub const MAX_FILE_ALIGNMENT: u32 = 64 << 10;

/// `x` rounded up to `align` (a power of two), `None` past `u64`.
fn round_up(x: u64, align: u32) -> Option<u64> {
    let a = u64::from(align);
    Some(x.checked_add(a - 1)? & !(a - 1))
}

fn u32_field(x: u64) -> Result<u32, Error> {
    u32::try_from(x).map_err(|_| too_big(x))
}

/// Steps 1 to 4: the stub read, checked, its symbol table stripped, its sections realigned,
/// `SizeOfHeaders` rounded up.
fn prepare(stub: &[u8]) -> Result<(Pe, Vec<u8>), Error> {
    let mut pe = Pe::parse(stub)?;
    // The PE specification's bound ("between 512 and 64 K"); padding to a larger alignment
    // would be allocated here. systemd's stubs use 512.
    if pe.file_alignment > MAX_FILE_ALIGNMENT {
        return Err(Error::BadAlignment {
            what: "FileAlignment",
            value: pe.file_alignment,
        });
    }
    if pe.sections.is_empty() {
        return Err(Error::NotPe {
            what: "the stub has no sections",
        });
    }
    // Section data inside the headers would be moved by the realignment (pefile warns about
    // such an image, and ukify treats its warnings as errors).
    let table_end = pe.section_table + pe.sections.len() * pe::SECTION_HEADER_SIZE;
    if pe.sections.iter().any(|s| {
        (s.pointer_to_raw_data != 0 || s.size_of_raw_data != 0)
            && (s.pointer_to_raw_data as usize) < table_end
    }) {
        return Err(Error::NotPe {
            what: "section data overlaps the headers",
        });
    }
    let mut data = stub.to_vec();
    strip_symbol_table(&mut pe, &mut data, table_end);
    realign(&mut pe, &mut data, table_end)?;
    pe.size_of_headers =
        u32_field(round_up(u64::from(pe.size_of_headers), pe.file_alignment).ok_or(too_big(0))?)?;
    if pe.security.0 != 0 {
        return Err(Error::SignedStub);
    }
    Ok((pe, data))
}

/// Assembles a UKI from the stub `stub` and the sections `parts`, in their order.
pub fn assemble(stub: &[u8], parts: &[Part]) -> Result<Layout, Error> {
    let (mut pe, mut data) = prepare(stub)?;
    let fa = pe.file_alignment;
    let original = pe.sections.len();
    let mut tail: Vec<Piece> = Vec::new();
    let mut len = data.len() as u64;
    let mut externals = 0usize;
    for part in parts {
        let mut header = SectionHeader::new(&part.name)?;
        let at = pe.section_table + pe.sections.len() * pe::SECTION_HEADER_SIZE;
        if at + pe::SECTION_HEADER_SIZE > pe.size_of_headers as usize {
            return Err(Error::NoHeaderRoom {
                name: part.name.clone(),
            });
        }
        let dlen = part.data.len();
        let vsize = match part.virtual_size {
            Some(v) => v,
            None => u32_field(dlen)?,
        };
        let raw = round_up(dlen, fa).ok_or(too_big(dlen))?;
        let last = pe.sections.last().ok_or(Error::NotPe {
            what: "the stub has no sections",
        })?;
        let end = u64::from(last.virtual_address) + u64::from(last.virtual_size);
        header.virtual_size = vsize;
        header.size_of_raw_data = u32_field(raw)?;
        header.virtual_address =
            u32_field(round_up(end, pe.section_alignment).ok_or(too_big(end))?)?;
        header.characteristics = pe::SCN_MEM_READ
            | if part.name == ".linux" {
                pe::SCN_CNT_CODE
            } else {
                pe::SCN_CNT_INITIALIZED_DATA
            };
        if let Some(i) = pe.sections[..original]
            .iter()
            .position(|s| s.name() == part.name)
        {
            replace_in_place(&mut pe.sections[i], &mut data, part, &header)?;
            continue;
        }
        let ptr = round_up(len, fa).ok_or(too_big(len))?;
        header.pointer_to_raw_data = u32_field(ptr)?;
        push_zeros(&mut tail, &mut data, ptr - len);
        match &part.data {
            Data::Bytes(b) => push_bytes(&mut tail, &mut data, b),
            Data::External { len } => {
                tail.push(Piece::External {
                    index: externals,
                    len: *len,
                });
                externals += 1;
            }
        }
        push_zeros(&mut tail, &mut data, raw - dlen);
        len = ptr + raw;
        pe.size_of_initialized_data = pe
            .size_of_initialized_data
            .checked_add(vsize)
            .ok_or(too_big(u64::from(vsize)))?;
        pe.sections.push(header);
    }
    pe.checksum = 0;
    let last = pe.sections.last().ok_or(Error::NotPe {
        what: "the stub has no sections",
    })?;
    let end = u64::from(last.virtual_address) + u64::from(last.virtual_size);
    pe.size_of_image = u32_field(round_up(end, pe.section_alignment).ok_or(too_big(end))?)?;
    pe.write_headers(&mut data)?;
    let sections = placed(&pe, parts);
    let mut pieces = vec![Piece::Bytes(data)];
    pieces.extend(tail);
    Ok(Layout {
        pieces,
        sections,
        len,
    })
}

/// Appends bytes: to the stub's own buffer while no external data came yet (so small
/// sections before the first external one join it), else as a piece of their own.
fn push_bytes(tail: &mut Vec<Piece>, data: &mut Vec<u8>, b: &[u8]) {
    match tail.last_mut() {
        None => data.extend_from_slice(b),
        Some(Piece::Bytes(v)) => v.extend_from_slice(b),
        Some(_) => tail.push(Piece::Bytes(b.to_vec())),
    }
}

fn push_zeros(tail: &mut Vec<Piece>, data: &mut Vec<u8>, n: u64) {
    if n == 0 {
        return;
    }
    match tail.last_mut() {
        // Padding below one FileAlignment joins the stub's buffer; a hostile stub's larger
        // alignment stays a run of zeros, never allocated.
        None if n <= u64::from(u16::MAX) => {
            data.resize(data.len() + usize::from(u16::try_from(n).unwrap_or(0)), 0);
        }
        Some(Piece::Zeros(z)) => *z += n,
        _ => tail.push(Piece::Zeros(n)),
    }
}

/// Step 1: the symbol table cut off when it ends the file (and, a check ukify leaves to
/// pefile, starts after the headers and every section's data: a table pointer into them in a
/// hostile stub is left alone rather than cutting the image short).
fn strip_symbol_table(pe: &mut Pe, data: &mut Vec<u8>, headers_end: usize) {
    let at = u64::from(pe.pointer_to_symbol_table);
    let data_end = pe
        .sections
        .iter()
        .map(|s| u64::from(s.pointer_to_raw_data) + u64::from(s.size_of_raw_data))
        .max()
        .unwrap_or(0)
        .max(headers_end as u64);
    if at == 0 || at < data_end {
        return;
    }
    let mut size = 18 * u64::from(pe.number_of_symbols);
    if let Some(strings) = usize::try_from(at + size)
        .ok()
        .and_then(|o| pe::get32(data, o))
    {
        size += u64::from(strings);
    }
    if at + size == data.len() as u64 {
        data.truncate(usize::try_from(at).unwrap_or(data.len()));
        pe.pointer_to_symbol_table = 0;
        pe.number_of_symbols = 0;
        pe.characteristics |= pe::LOCAL_SYMS_STRIPPED;
    }
}

/// Step 2: every section's raw data aligned to `FileAlignment`. Padding is never inserted
/// into the headers (before `headers_end`): ukify moves a later section with no data
/// (pointer 0) along with the padding of the sections before it, and would then pad it there.
fn realign(pe: &mut Pe, data: &mut Vec<u8>, headers_end: usize) -> Result<(), Error> {
    let fa = pe.file_alignment;
    for i in 0..pe.sections.len() {
        let s = &pe.sections[i];
        let (oldp, oldsz) = (
            u64::from(s.pointer_to_raw_data),
            u64::from(s.size_of_raw_data),
        );
        let newp = round_up(oldp, fa).ok_or(too_big(oldp))?;
        let newsz = round_up(oldsz, fa).ok_or(too_big(oldsz))?;
        let (padp, padsz) = (newp - oldp, newsz - oldsz);
        if padp == 0 && padsz == 0 {
            continue;
        }
        if oldp < headers_end as u64 {
            return Err(Error::NotPe {
                what: "section data overlaps the headers",
            });
        }
        let start = usize::try_from(oldp).map_err(|_| too_big(oldp))?;
        let end = usize::try_from(oldp + oldsz).map_err(|_| too_big(oldsz))?;
        if end > data.len() {
            return Err(Error::SectionOutside {
                name: s.name(),
                offset: s.pointer_to_raw_data,
                len: s.size_of_raw_data,
                file: data.len() as u64,
            });
        }
        let mut v = Vec::with_capacity(data.len() + usize::try_from(padp + padsz).unwrap_or(0));
        v.extend_from_slice(&data[..start]);
        v.resize(
            v.len() + usize::try_from(padp).map_err(|_| too_big(padp))?,
            0,
        );
        v.extend_from_slice(&data[start..end]);
        v.resize(
            v.len() + usize::try_from(padsz).map_err(|_| too_big(padsz))?,
            0,
        );
        v.extend_from_slice(&data[end..]);
        *data = v;
        pe.sections[i].pointer_to_raw_data = u32_field(newp)?;
        pe.sections[i].size_of_raw_data = u32_field(newsz)?;
        for later in &mut pe.sections[i + 1..] {
            later.pointer_to_raw_data =
                u32_field(u64::from(later.pointer_to_raw_data) + padp + padsz)?;
        }
    }
    Ok(())
}

/// Step 6: a section the stub has, its data replaced within its raw extent.
fn replace_in_place(
    s: &mut SectionHeader,
    data: &mut [u8],
    part: &Part,
    new: &SectionHeader,
) -> Result<(), Error> {
    let Data::Bytes(bytes) = &part.data else {
        return Err(Error::ExternalInStub {
            name: part.name.clone(),
        });
    };
    if new.virtual_size > s.size_of_raw_data || bytes.len() as u64 > u64::from(s.size_of_raw_data) {
        return Err(Error::NoRoomInSection {
            name: part.name.clone(),
            needed: bytes.len() as u64,
            room: s.size_of_raw_data,
        });
    }
    let start = s.pointer_to_raw_data as usize;
    let extent = data
        .get_mut(start..start + s.size_of_raw_data as usize)
        .ok_or_else(|| Error::SectionOutside {
            name: s.name(),
            offset: s.pointer_to_raw_data,
            len: s.size_of_raw_data,
            file: 0,
        })?;
    extent.fill(0);
    extent[..bytes.len()].copy_from_slice(bytes);
    s.size_of_raw_data = new.size_of_raw_data;
    s.virtual_size = new.virtual_size;
    Ok(())
}

/// The sections for reports: each one's data length (the added ones' own, the stub's
/// `VirtualSize` bounded by its raw size).
fn placed(pe: &Pe, parts: &[Part]) -> Vec<Placed> {
    pe.sections
        .iter()
        .map(|s| {
            let name = s.name();
            let len = parts
                .iter()
                .find(|p| p.name == name)
                .map_or(u64::from(s.virtual_size.min(s.size_of_raw_data)), |p| {
                    p.data.len()
                });
            Placed {
                name,
                offset: u64::from(s.pointer_to_raw_data),
                len,
                virtual_address: s.virtual_address,
                virtual_size: s.virtual_size,
            }
        })
        .collect()
}
