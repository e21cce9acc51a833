//! Unit tests on synthetic platform files: layout of the payload, the block list and the
//! boot sector field by field, and bounded failure on corrupt inputs.

use proptest::prelude::*;

use crate::{
    boot_sector, decompress, kernel, read_core, CoreImage, CoreOptions, Error, Platform, SECTOR,
};

const TEXT: &[u8] = b"TEXT-SECTION-BYTES";
const DATA: &[u8] = b"DATA!";

fn section(out: &mut Vec<u8>, kind: u32, flags: u32, addr: u32, offset: u32, size: u32) {
    for v in [0, kind, flags, addr, offset, size, 0, 0, 4, 0] {
        out.extend_from_slice(&v.to_le_bytes());
    }
}

/// A 32-bit ELF like GRUB's kernel.img: .text at 0x9000, .data at 0x9020, .bss after.
fn fake_kernel() -> Vec<u8> {
    let mut elf = vec![0u8; 52];
    elf[..7].copy_from_slice(b"\x7fELF\x01\x01\x01");
    elf[20..24].copy_from_slice(&1u32.to_le_bytes());
    let text_at = 52u32;
    let data_at = text_at + TEXT.len() as u32;
    let shoff = data_at + DATA.len() as u32;
    elf[32..36].copy_from_slice(&shoff.to_le_bytes());
    elf[46..48].copy_from_slice(&40u16.to_le_bytes());
    elf[48..50].copy_from_slice(&4u16.to_le_bytes());
    elf.extend_from_slice(TEXT);
    elf.extend_from_slice(DATA);
    section(&mut elf, 0, 0, 0, 0, 0);
    section(&mut elf, 1, 6, 0x9000, text_at, TEXT.len() as u32);
    section(&mut elf, 1, 3, 0x9020, data_at, DATA.len() as u32);
    section(&mut elf, 8, 3, 0x9040, 0, 0x100);
    elf
}

fn fake_platform() -> Platform {
    let mut p = Platform::new();
    p.insert("kernel.img", fake_kernel());
    p.insert("moddep.lst", b"a: b\nb:\n".to_vec());
    p.insert("a.mod", b"module-a".to_vec());
    p.insert("b.mod", b"mod-b".to_vec());
    let mut decompressor = vec![0x11; 64];
    // Unset redundancy; the first 0x30 bytes are not protected by it.
    decompressor[0x10..0x18].copy_from_slice(&[0, 0, 0, 0, 0x30, 0, 0x11, 0x11]);
    p.insert("lzma_decompress.img", decompressor);
    let mut diskboot = vec![0x22u8; SECTOR];
    diskboot[0x1e0..].fill(0);
    diskboot[0x1f4] = 2;
    diskboot[0x1fe..].copy_from_slice(&0x820u16.to_le_bytes());
    p.insert("diskboot.img", diskboot);
    let mut boot = vec![0x33u8; SECTOR];
    boot[510..].copy_from_slice(&[0x55, 0xaa]);
    p.insert("boot.img", boot);
    p
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

#[test]
fn payload_is_kernel_then_module_section() {
    let p = fake_platform();
    let opts = CoreOptions {
        prefix: "(hd0)/g",
        config: Some(b"set x=1"),
        modules: &["a"],
    };
    let core = CoreImage::build(&p, &opts).unwrap();
    assert_eq!(core.modules(), ["b", "a"]);
    let payload = core.payload_bytes();
    // Kernel: text at 0, data at 0x20, ending at 0x25 (the bss is not stored).
    assert_eq!(&payload[..TEXT.len()], TEXT);
    assert_eq!(&payload[0x20..0x25], DATA);
    let m = &payload[0x25..];
    assert_eq!(le32(m, 0), 0x676d_696d);
    assert_eq!(le32(m, 4), 12);
    assert_eq!(le32(m, 8) as usize, m.len());
    // b (5 bytes, padded to 8), a (8), config (7 + NUL = 8), prefix (7 + NUL = 8).
    let want: [(u32, &[u8]); 4] = [
        (0, b"mod-b\0\0\0"),
        (0, b"module-a"),
        (2, b"set x=1\0"),
        (3, b"(hd0)/g\0"),
    ];
    let mut at = 12;
    for (kind, bytes) in want {
        assert_eq!((le32(m, at), le32(m, at + 4)), (kind, 16));
        assert_eq!(&m[at + 8..at + 16], bytes);
        at += 16;
    }
    assert_eq!(at, m.len());

    let img = core.mkimage_bytes();
    let dec = &img[SECTOR..SECTOR + 64];
    assert_eq!(le32(dec, 12) as usize, payload.len());
    let compressed = &img[SECTOR + 64..];
    assert_eq!(le32(dec, 8) as usize, compressed.len());
    assert_eq!(decompress(compressed, payload.len()).unwrap(), payload);
    assert!(matches!(
        decompress(&compressed[..compressed.len() / 2], payload.len()),
        Err(Error::ShortPayload { .. })
    ));
    assert!(matches!(
        decompress(compressed, crate::MAX_PAYLOAD + 1),
        Err(Error::TooBig { .. })
    ));
    assert_eq!(dec[0x16..], [0x11; 42]);
    assert_eq!(
        u16::from_le_bytes([img[0x1fc], img[0x1fd]]) as usize,
        (img.len() - SECTOR).div_ceil(SECTOR)
    );
}

#[test]
fn placed_core_has_one_block_list_entry_for_its_sectors() {
    let core = CoreImage::build(
        &fake_platform(),
        &CoreOptions {
            prefix: "/boot/grub",
            config: None,
            modules: &["a"],
        },
    )
    .unwrap();
    let placed = core.placed_at(2048).unwrap();
    assert_eq!(placed.len() as u64, core.sectors() * SECTOR as u64);
    assert_eq!(placed[0x1f4..0x1fc], 2049u64.to_le_bytes());
    assert_eq!(
        placed[0x1fc..0x1fe],
        ((core.sectors() - 1) as u16).to_le_bytes()
    );
    assert_eq!(placed[0x1fe..0x200], 0x820u16.to_le_bytes());
    assert_eq!(placed[0x1e8..0x1f4], [0; 12], "terminator");
    assert_eq!(placed[..0x1e0], core.mkimage_bytes()[..0x1e0]);
    assert_eq!(
        placed[SECTOR..core.mkimage_bytes().len()],
        core.mkimage_bytes()[SECTOR..]
    );
    assert!(placed[core.mkimage_bytes().len()..].iter().all(|&b| b == 0));
    assert!(matches!(core.placed_at(0), Err(Error::BadCoreSector(0))));
    assert!(matches!(
        core.placed_at(u64::MAX),
        Err(Error::BadCoreSector(_))
    ));
}

#[test]
fn embedded_core_fills_its_room_with_redundancy() {
    let p = fake_platform();
    // Enough data for several sectors: a large incompressible module.
    let mut p2 = p.clone();
    p2.insert(
        "a.mod",
        (0..6000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect(),
    );
    let core = CoreImage::build(
        &p2,
        &CoreOptions {
            prefix: "/g",
            config: None,
            modules: &["a"],
        },
    )
    .unwrap();
    let n = core.sectors();
    let size = core.mkimage_bytes().len();
    for (available, want) in [(n, n), (n + 3, n + 3), (10_000, 2 * n)] {
        let out = core.embedded(1, available).unwrap();
        assert_eq!(out.len() as u64, want * SECTOR as u64);
        assert_eq!(out[0x1fc..0x1fe], ((want - 1) as u16).to_le_bytes());
        assert_eq!(le32(&out, SECTOR + 0x10) as usize, out.len() - size);
        // The image itself is unchanged apart from the block list and redundancy field.
        let placed = core.placed_at(1).unwrap();
        assert_eq!(out[..0x1fc], placed[..0x1fc]);
        assert_eq!(out[0x1fe..SECTOR], placed[0x1fe..SECTOR]);
        assert_eq!(
            out[SECTOR + 0x14..size],
            core.mkimage_bytes()[SECTOR + 0x14..]
        );
        if want > n {
            assert!(out[size..].iter().any(|&b| b != 0), "redundancy written");
        }
    }
    assert!(matches!(core.embedded(1, n - 1), Err(Error::NoRoom { .. })));
    let a = core.embedded(1, 2047).unwrap();
    assert_eq!(
        a,
        core.embedded(1, 2047).unwrap(),
        "same inputs, same bytes"
    );
}

#[test]
fn boot_sector_keeps_the_table_and_patches_grub_fields() {
    let p = fake_platform();
    let existing: [u8; SECTOR] = std::array::from_fn(|i| (i % 251) as u8);
    let s = boot_sector(&p, &existing, 0x1_0000_0800).unwrap();
    assert_eq!(s[..3], [0x33; 3]);
    assert_eq!(s[3..0x5a], existing[3..0x5a], "BPB area");
    assert_eq!(s[0x5a..0x5c], [0x33; 2]);
    assert_eq!(s[0x5c..0x64], 0x1_0000_0800u64.to_le_bytes());
    assert_eq!(s[0x64], 0xff);
    assert_eq!(s[0x66..0x68], [0x90, 0x90]);
    assert_eq!(s[0x68..0x1b8], [0x33; 0x1b8 - 0x68]);
    assert_eq!(
        s[0x1b8..0x1fe],
        existing[0x1b8..0x1fe],
        "signature and partitions"
    );
    assert_eq!(s[0x1fe..], [0x55, 0xaa]);
    assert!(matches!(
        boot_sector(&p, &existing, 0),
        Err(Error::BadCoreSector(0))
    ));
}

#[test]
fn wrong_inputs_are_typed_errors() {
    let mut p = fake_platform();
    let opts = CoreOptions {
        prefix: "/g",
        config: None,
        modules: &["a"],
    };
    assert!(matches!(
        CoreImage::build(
            &p,
            &CoreOptions {
                prefix: "a\0b",
                ..opts
            }
        ),
        Err(Error::Nul("prefix"))
    ));
    assert!(
        matches!(CoreImage::build(&p, &CoreOptions { modules: &["zz"], ..opts }), Err(Error::MissingFile(f)) if f == "zz.mod")
    );
    p.insert("diskboot.img", vec![0; 100]);
    assert!(matches!(
        CoreImage::build(&p, &opts),
        Err(Error::WrongSize { size: 100, .. })
    ));
    let mut k = fake_kernel();
    // .text's address (second section header, field 3) moved off 0x9000.
    let text_addr = 52 + TEXT.len() + DATA.len() + 40 + 12;
    k[text_addr] = 0x10;
    assert!(matches!(kernel::load(&k), Err(Error::Kernel(_))));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Corrupt kernel images and dependency lists: an error or an image, never a panic or
    /// an allocation beyond GRUB's 0x5f000-byte kernel limit.
    #[test]
    fn corrupt_inputs_do_not_panic(
        edits in proptest::collection::vec((0usize..400, any::<u8>()), 1..8),
        moddep in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut k = fake_kernel();
        for (at, v) in edits {
            if let Some(b) = k.get_mut(at) {
                *b = v;
            }
        }
        if let Ok(image) = kernel::load(&k) {
            prop_assert!(image.len() <= 0x5f000);
        }
        let mut p = fake_platform();
        p.insert("kernel.img", k);
        p.insert("moddep.lst", moddep);
        let _ = CoreImage::build(&p, &CoreOptions { prefix: "/g", config: None, modules: &["a", "b"] });
    }

    /// Arbitrary bytes as an LZMA payload: an error or `size` bytes, never a panic.
    #[test]
    fn corrupt_lzma_does_not_panic(data in proptest::collection::vec(any::<u8>(), 0..256), size in 0usize..4096) {
        if let Ok(out) = decompress(&data, size) {
            prop_assert_eq!(out.len(), size);
        }
    }

    /// A core image read back after random damage: contents or a typed error, never a panic.
    #[test]
    fn damaged_core_reads_do_not_panic(
        edits in proptest::collection::vec((0usize..4096, any::<u8>()), 1..6),
        rs in any::<bool>(),
    ) {
        let core = CoreImage::build(&fake_platform(), &CoreOptions { prefix: "/g", config: None, modules: &["a"] }).unwrap();
        let mut img = if rs { core.embedded(1, 100).unwrap() } else { core.placed_at(1).unwrap() };
        for (at, v) in edits {
            let n = img.len();
            img[at % n] = v;
        }
        let _ = read_core(&img);
    }
}
