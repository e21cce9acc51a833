//! A small PE32+ EFI application shaped like systemd's stub, for tests and fuzz seeds (no
//! real stub is committed): `.text`, `.sbat`, `.sdmagic` with `SectionAlignment` 4 KiB,
//! `FileAlignment` 512, 1 KiB of headers, a non-zero `TimeDateStamp` and `CheckSum` (which
//! ukify keeps and zeroes). It is not executable code.

use crate::pe::SectionHeader;

/// The `.sbat` of [`stub`].
pub const STUB_SBAT: &[u8] = b"sbat,1,SBAT Version,sbat,1,https://github.com/rhboot/shim/blob/main/SBAT.md\nsystemd-stub,1,The systemd Developers,systemd,257,https://systemd.io/\n";
/// `TimeDateStamp` of the samples.
pub const TIME_DATE_STAMP: u32 = 0x1234_5678;
/// Offset of the COFF file header in the samples.
pub const COFF: usize = 0x84;

/// A PE32+ image with `sections` (name, data, raw size; the data padded with zeros to the
/// raw size, which may be unaligned), laid out after 1 KiB of headers, `FileAlignment`
/// `file_alignment`. Panics if a name is not a valid section name or sizes exceed 32 bits
/// (test data).
pub fn stub_with(sections: &[(&str, &[u8], u32)], file_alignment: u32) -> Vec<u8> {
    let u32_of = |n: usize| u32::try_from(n).expect("sample sizes fit 32 bits");
    let mut b = vec![0u8; 0x400];
    let put = |b: &mut Vec<u8>, at: usize, v: &[u8]| b[at..at + v.len()].copy_from_slice(v);
    put(&mut b, 0, b"MZ");
    put(&mut b, 0x3c, &0x80u32.to_le_bytes());
    put(&mut b, 0x80, b"PE\0\0");
    let n = u16::try_from(sections.len()).expect("few sample sections");
    put(&mut b, COFF, &0x8664u16.to_le_bytes());
    put(&mut b, COFF + 2, &n.to_le_bytes());
    put(&mut b, COFF + 4, &TIME_DATE_STAMP.to_le_bytes());
    put(&mut b, COFF + 16, &240u16.to_le_bytes());
    put(&mut b, COFF + 18, &0x0206u16.to_le_bytes());
    let opt = COFF + 20;
    put(&mut b, opt, &0x20bu16.to_le_bytes());
    put(&mut b, opt + 8, &0x1000u32.to_le_bytes());
    put(&mut b, opt + 32, &0x1000u32.to_le_bytes());
    put(&mut b, opt + 36, &file_alignment.to_le_bytes());
    put(&mut b, opt + 60, &0x3c0u32.to_le_bytes());
    put(&mut b, opt + 64, &0xdead_beefu32.to_le_bytes());
    put(&mut b, opt + 68, &10u16.to_le_bytes());
    put(&mut b, opt + 108, &16u32.to_le_bytes());
    let table = opt + 240;
    let mut va = 0x1000u32;
    for (i, (name, data, raw)) in sections.iter().enumerate() {
        let mut h = SectionHeader::new(name).expect("a valid sample section name");
        h.virtual_size = u32_of(data.len());
        h.virtual_address = va;
        h.size_of_raw_data = *raw;
        h.pointer_to_raw_data = u32_of(b.len());
        h.characteristics = 0x4000_0040;
        va += u32_of(data.len()).div_ceil(0x1000) * 0x1000;
        put(&mut b, table + i * 40, &h.encode());
        let at = b.len();
        b.extend_from_slice(data);
        b.resize(at + *raw as usize, 0);
    }
    put(&mut b, opt + 56, &va.to_le_bytes());
    b
}

/// The sample stub: `.text` (700 bytes in 1 KiB), `.sbat` ([`STUB_SBAT`] in 512 bytes),
/// `.sdmagic` (in 512 bytes).
pub fn stub() -> Vec<u8> {
    stub_with(
        &[
            (".text", &[0xc3; 700], 1024),
            (".sbat", STUB_SBAT, 512),
            (".sdmagic", b"#### LoaderInfo: systemd-stub 257 ####", 512),
        ],
        512,
    )
}
