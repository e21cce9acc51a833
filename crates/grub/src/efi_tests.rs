//! Unit tests of the x86_64-efi image on a synthetic `kernel.img`: layout, relocations, the
//! base relocation table and the PE headers field by field, and bounded failure on corrupt
//! kernels (the oracle test against `grub-mkimage` is `tests/efi_mkimage.rs`).

use proptest::prelude::*;

use crate::{CoreOptions, EfiImage, Error, Platform};

fn shdr(out: &mut Vec<u8>, f: [u64; 10]) {
    // name, type, flags, addr, offset, size, link, info, addralign, entsize
    out.extend_from_slice(&(f[0] as u32).to_le_bytes());
    out.extend_from_slice(&(f[1] as u32).to_le_bytes());
    for v in &f[2..6] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(&(f[6] as u32).to_le_bytes());
    out.extend_from_slice(&(f[7] as u32).to_le_bytes());
    out.extend_from_slice(&f[8].to_le_bytes());
    out.extend_from_slice(&f[9].to_le_bytes());
}

fn sym(out: &mut Vec<u8>, name: u32, shndx: u16, value: u64) {
    out.extend_from_slice(&name.to_le_bytes());
    out.extend_from_slice(&[0x10, 0]);
    out.extend_from_slice(&shndx.to_le_bytes());
    out.extend_from_slice(&value.to_le_bytes());
    out.extend_from_slice(&0u64.to_le_bytes());
}

fn rela(out: &mut Vec<u8>, offset: u64, sym: u64, kind: u64, addend: i64) {
    out.extend_from_slice(&offset.to_le_bytes());
    out.extend_from_slice(&(sym << 32 | kind).to_le_bytes());
    out.extend_from_slice(&addend.to_le_bytes());
}

/// A relocatable x86-64 ELF like GRUB's kernel.img: 16 bytes of .text (`_start` at 0), 8 of
/// .data (`d` at 0), 0x20 of .bss, and two relocations in .text: an absolute 64-bit one to
/// `d + 4` at 0 and a PC-relative 32-bit one to `d - 4` at 8.
fn fake_kernel() -> Vec<u8> {
    let shstr = b"\0.text\0.rela.text\0.data\0.bss\0.symtab\0.strtab\0.shstrtab\0";
    let strtab = b"\0_start\0d\0";
    let mut body = Vec::new();
    let text_at = 64u64;
    // Zeros where the relocations go: GRUB adds to the field's value, RELA or not.
    body.extend_from_slice(&[0u8; 16]);
    let data_at = text_at + 16;
    body.extend_from_slice(b"DATADATA");
    let rela_at = data_at + 8;
    rela(&mut body, 0, 2, 1, 4);
    rela(&mut body, 8, 2, 2, -4);
    let sym_at = rela_at + 48;
    sym(&mut body, 0, 0, 0);
    sym(&mut body, 1, 1, 0);
    sym(&mut body, 8, 3, 0);
    let str_at = sym_at + 72;
    body.extend_from_slice(strtab);
    let shstr_at = str_at + strtab.len() as u64;
    body.extend_from_slice(shstr);
    let shoff = shstr_at + shstr.len() as u64;
    let mut elf = vec![0u8; 64];
    elf[..8].copy_from_slice(b"\x7fELF\x02\x01\x01\x00");
    elf[16..18].copy_from_slice(&1u16.to_le_bytes());
    elf[18..20].copy_from_slice(&62u16.to_le_bytes());
    elf[20..24].copy_from_slice(&1u32.to_le_bytes());
    elf[40..48].copy_from_slice(&shoff.to_le_bytes());
    elf[58..60].copy_from_slice(&64u16.to_le_bytes());
    elf[60..62].copy_from_slice(&8u16.to_le_bytes());
    elf[62..64].copy_from_slice(&7u16.to_le_bytes());
    elf.extend_from_slice(&body);
    shdr(&mut elf, [0; 10]);
    shdr(&mut elf, [1, 1, 6, 0, text_at, 16, 0, 0, 16, 0]);
    shdr(&mut elf, [7, 4, 0x40, 0, rela_at, 48, 5, 1, 8, 24]);
    shdr(&mut elf, [18, 1, 3, 0, data_at, 8, 0, 0, 8, 0]);
    shdr(&mut elf, [24, 8, 3, 0, data_at + 8, 0x20, 0, 0, 32, 0]);
    shdr(&mut elf, [29, 2, 0, 0, sym_at, 72, 6, 1, 8, 24]);
    shdr(
        &mut elf,
        [37, 3, 0, 0, str_at, strtab.len() as u64, 0, 0, 1, 0],
    );
    shdr(
        &mut elf,
        [45, 3, 0, 0, shstr_at, shstr.len() as u64, 0, 0, 1, 0],
    );
    elf
}

fn platform(kernel: Vec<u8>) -> Platform {
    let mut p = Platform::new();
    p.insert("kernel.img", kernel);
    p.insert("moddep.lst", b"a: b\nb:\n".to_vec());
    p.insert("a.mod", b"module-a".to_vec());
    p.insert("b.mod", b"mod-b".to_vec());
    p
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

const OPTS: CoreOptions<'static> = CoreOptions {
    prefix: "/EFI/BOOT",
    config: Some(b"set a=1"),
    modules: &["a"],
};

#[test]
fn layout_relocations_and_pe_headers() {
    let img = EfiImage::build(&platform(fake_kernel()), &OPTS).unwrap();
    assert_eq!(img.modules(), ["b", "a"]);
    let b = img.bytes();
    assert_eq!(&b[..2], b"MZ");
    assert_eq!(le32(b, 0x3c), 0x80);
    assert_eq!(&b[0x80..0x84], b"PE\0\0");
    assert_eq!(u16::from_le_bytes([b[0x84], b[0x85]]), 0x8664);
    // .text at 0x1000 (one page), .data at 0x2000 with the bss after it (one page).
    // R_X86_64_64 to d + 4: d's address 0x2000 relative to the image base 0.
    assert_eq!(le64(b, 0x1000), 0x2004);
    // R_X86_64_PC32 to d - 4 from 0x1008: 0x2000 - 4 - 0x1008.
    assert_eq!(le32(b, 0x1008), 0xff4);
    assert_eq!(&b[0x2000..0x2008], b"DATADATA");
    // Module info after the kernel (0x3000): magic, padding, offset 24, size.
    let m = 0x3000;
    assert_eq!(&b[m..m + 4], b"mimg");
    assert_eq!(le64(b, m + 8), 24);
    // b (5 bytes -> 8), a (8), config (7 + NUL -> 8), prefix (9 + NUL -> 16), 8-byte headers.
    assert_eq!(le64(b, m + 16), 24 + (8 + 8) + (8 + 8) + (8 + 8) + (8 + 16));
    assert_eq!(&b[m + 24 + 8..m + 24 + 13], b"mod-b");
    // Entry point: _start at 0x1000; image: headers, 2 kernel pages, 1 module page, reloc.
    let opt = 0x98;
    assert_eq!(le32(b, opt + 16), 0x1000);
    assert_eq!(le32(b, opt + 56), 0x5000);
    assert_eq!(b.len(), 0x5000);
    // One fixup block for page 0x1000 with the entry at offset 0, padded to a page.
    assert_eq!((le32(b, opt + 152), le32(b, opt + 156)), (0x4000, 0x1000));
    assert_eq!((le32(b, 0x4000), le32(b, 0x4004)), (0x1000, 0x1000));
    assert_eq!(u16::from_le_bytes([b[0x4008], b[0x4009]]), 0xa000);
    assert!(b[0x400a..].iter().all(|&x| x == 0));
    // Sections: .text, .data, mods, .reloc at 0x1000, 0x2000, 0x3000, 0x4000.
    let names: Vec<&[u8]> = (0..4)
        .map(|i| &b[0x188 + 40 * i..0x188 + 40 * i + 8])
        .collect();
    assert_eq!(
        names,
        [
            b".text\0\0\0",
            b".data\0\0\0",
            b"mods\0\0\0\0",
            b".reloc\0\0"
        ]
    );
    for (i, at) in [0x1000, 0x2000, 0x3000, 0x4000].into_iter().enumerate() {
        assert_eq!(le32(b, 0x188 + 40 * i + 12), at, "section {i}");
        assert_eq!(le32(b, 0x188 + 40 * i + 20), at, "section {i}");
    }
}

#[test]
fn bad_kernels_are_typed_errors() {
    let mut k = fake_kernel();
    // An undefined symbol: d's section index set to 0 (SHN_UNDEF).
    let sym_d = 64 + 16 + 8 + 48 + 48 + 6;
    k[sym_d..sym_d + 2].copy_from_slice(&0u16.to_le_bytes());
    assert!(matches!(
        EfiImage::build(&platform(k), &OPTS),
        Err(Error::UndefinedSymbol(name)) if name == "d"
    ));
    // R_X86_64_32 cannot be relocated by a PE loader.
    let mut k = fake_kernel();
    k[64 + 24 + 8] = 10;
    assert!(matches!(
        EfiImage::build(&platform(k), &OPTS),
        Err(Error::Relocation(10))
    ));
    // A 32-bit ELF is not an x86_64-efi kernel.
    let mut k = fake_kernel();
    k[4] = 1;
    assert!(matches!(
        EfiImage::build(&platform(k), &OPTS),
        Err(Error::Kernel(_))
    ));
    // A relocation past its section.
    let mut k = fake_kernel();
    k[64 + 24..64 + 32].copy_from_slice(&15u64.to_le_bytes());
    assert!(matches!(
        EfiImage::build(&platform(k), &OPTS),
        Err(Error::Kernel(_))
    ));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]
    #[test]
    fn corrupt_kernels_do_not_panic(
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
        cut in any::<usize>(),
    ) {
        let mut k = fake_kernel();
        for (at, v) in edits {
            let at = at % k.len();
            k[at] = v;
        }
        if cut % 4 == 0 {
            k.truncate(cut % k.len());
        }
        let _ = EfiImage::build(&platform(k), &OPTS);
    }
}
