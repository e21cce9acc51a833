//! The `grub-efi` target: GRUB's x86_64-efi `kernel.img` (a relocatable ELF64, read from the
//! closure's GRUB package) laid out, relocated and wrapped in a PE32+ by
//! `imgbuild_grub::EfiImage::build`, with no modules.
//!
//! Mutations: the ELF header's section table fields (offset, entry size, count, name table
//! index); a section header's type, flags, offset, size, link, info, alignment, entry size;
//! a symbol's section index, value or name; a relocation's offset, type, symbol or addend
//! (the tables found by walking the seed's section headers); and raw edits.

use anyhow::Context as _;
use imgbuild_grub::{CoreOptions, EfiImage, Platform};
use imgbuild_testutil::harness::Rng;

use super::{get, pick, put, raw, value};

/// `SHT_SYMTAB`, `SHT_RELA`.
const SYMTAB: u64 = 2;
const RELA: u64 = 4;
/// The largest image an accepted case may make: a 16 MiB kernel layout bound, a page of
/// headers, the module section and the relocation table.
const MAX_IMAGE: usize = 24 << 20;

/// The section headers' (offset, size) in the file, and each header's start.
fn headers(b: &[u8]) -> (usize, usize, Vec<usize>) {
    let shoff = get(b, 40, 8) as usize;
    let ent = get(b, 58, 2) as usize;
    let count = get(b, 60, 2) as usize;
    let starts = (0..count.min(64))
        .map(|i| shoff.saturating_add(i.saturating_mul(ent)))
        .filter(|&h| h + 64 <= b.len())
        .collect();
    (shoff, ent, starts)
}

/// The first section of type `kind`: (its data's offset, size, entry size).
fn table(b: &[u8], kind: u64) -> Option<(usize, usize, usize)> {
    let (_, _, starts) = headers(b);
    starts
        .into_iter()
        .find(|&h| get(b, h + 4, 4) == kind)
        .map(|h| {
            (
                get(b, h + 24, 8) as usize,
                get(b, h + 32, 8) as usize,
                get(b, h + 56, 8) as usize,
            )
        })
}

/// One field of an entry of the table of type `kind`: (offset in the entry, width).
fn entry_field(rng: &mut Rng, b: &mut [u8], kind: u64, fields: &[(usize, usize)]) -> bool {
    let Some((off, size, ent)) = table(b, kind) else {
        return false;
    };
    if ent == 0 || size < ent {
        return false;
    }
    let at = off + ent * pick(rng, size / ent);
    let (f, w) = fields[pick(rng, fields.len())];
    let v = value(rng, get(b, at + f, w));
    put(b, at + f, w, v);
    true
}

/// A mutated `kernel.img` from the seed, and the field kinds changed.
pub(super) fn mutate(rng: &mut Rng, seed: &[u8]) -> (Vec<u8>, Vec<String>) {
    let mut b = seed.to_vec();
    let mut kinds = Vec::new();
    for _ in 0..1 + pick(rng, 3) {
        let kind = match rng.next_u64() % 6 {
            0 => {
                let (off, w) = [(40, 8), (58, 2), (60, 2), (62, 2)][pick(rng, 4)];
                let v = value(rng, get(&b, off, w));
                put(&mut b, off, w, v);
                "elf: header"
            }
            1 | 2 => {
                let (_, _, starts) = headers(&b);
                if let Some(&h) = starts.get(pick(rng, starts.len())) {
                    // sh_type, sh_flags, sh_offset, sh_size, sh_link, sh_info, sh_addralign,
                    // sh_entsize.
                    let (off, w) = [
                        (4, 4),
                        (8, 8),
                        (24, 8),
                        (32, 8),
                        (40, 4),
                        (44, 4),
                        (48, 8),
                        (56, 8),
                    ][pick(rng, 8)];
                    let v = value(rng, get(&b, h + off, w));
                    put(&mut b, h + off, w, v);
                }
                "elf: section header"
            }
            3 => {
                // st_name, st_shndx, st_value.
                entry_field(rng, &mut b, SYMTAB, &[(0, 4), (6, 2), (8, 8)]);
                "elf: symbol"
            }
            4 => {
                // r_offset, the type and symbol halves of r_info, r_addend.
                entry_field(rng, &mut b, RELA, &[(0, 8), (8, 4), (12, 4), (16, 8)]);
                "elf: relocation"
            }
            _ => raw(rng, &mut b),
        };
        kinds.push(kind.to_string());
    }
    (b, kinds)
}

/// Builds the EFI image from the kernel alone (an empty `moddep.lst`, no modules). An
/// accepted image must be a PE file of whole pages within the bound, its size field true.
pub(super) fn read(input: &[u8]) -> anyhow::Result<()> {
    let mut p = Platform::new();
    p.insert("kernel.img", input.to_vec());
    p.insert("moddep.lst", Vec::new());
    let opts = CoreOptions {
        prefix: "/grub",
        config: Some(b"set x=1\n"),
        modules: &[],
    };
    let img = EfiImage::build(&p, &opts).context("EfiImage::build")?;
    let b = img.bytes();
    assert!(
        b.len() <= MAX_IMAGE && b.len().is_multiple_of(4096),
        "accepted a {}-byte image",
        b.len()
    );
    assert!(
        b.starts_with(b"MZ") && b.get(0x80..0x84) == Some(b"PE\0\0".as_slice()),
        "accepted image has no MZ/PE headers"
    );
    assert_eq!(
        get(b, 0x98 + 56, 4) as usize,
        b.len(),
        "the PE image size field"
    );
    Ok(())
}
