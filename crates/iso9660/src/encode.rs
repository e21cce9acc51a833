//! ECMA-119 encodings: both-endian numbers, dates, directory records, path tables, volume
//! descriptors, and the El Torito boot record and catalog.

use imgbuild_units::utc;

/// Bytes of a logical block (and of a sector).
pub const BLOCK: u64 = 2048;

/// ECMA-119 7.3.3: little-endian then big-endian.
pub fn both32(v: u32) -> [u8; 8] {
    let mut out = [0u8; 8];
    out[..4].copy_from_slice(&v.to_le_bytes());
    out[4..].copy_from_slice(&v.to_be_bytes());
    out
}

/// ECMA-119 7.2.3.
pub fn both16(v: u16) -> [u8; 4] {
    let mut out = [0u8; 4];
    out[..2].copy_from_slice(&v.to_le_bytes());
    out[2..].copy_from_slice(&v.to_be_bytes());
    out
}

fn clamp_secs(secs: i64) -> (i64, u32, u32, u32, u32, u32) {
    // Directory record years are 1900 + 0..=255; descriptor years 4 digits.
    const MIN: i64 = -2_208_988_800; // 1900-01-01
    const MAX: i64 = 6_311_433_599; // 2169-12-31 23:59:59
    utc(secs.clamp(MIN, MAX))
}

fn byte(v: u32) -> u8 {
    u8::try_from(v).expect("calendar parts are below 256")
}

/// ECMA-119 9.1.5: seven bytes, years since 1900 (1900..2155, clamped), UTC.
pub fn dir_date(secs: i64) -> [u8; 7] {
    let (y, mo, d, h, mi, s) = clamp_secs(secs);
    let y = u8::try_from((y - 1900).clamp(0, 255)).expect("clamped");
    [y, byte(mo), byte(d), byte(h), byte(mi), byte(s), 0]
}

/// ECMA-119 8.4.26.1: `YYYYMMDDHHMMSScc` in digits and the offset from UTC (0).
pub fn volume_date(secs: i64) -> [u8; 17] {
    let (y, mo, d, h, mi, s) = clamp_secs(secs);
    let text = format!("{y:04}{mo:02}{d:02}{h:02}{mi:02}{s:02}00");
    let mut out = [0u8; 17];
    out[..16].copy_from_slice(&text.as_bytes()[..16]);
    out
}

/// "Not specified": sixteen `0` digits and a zero offset.
pub const NO_DATE: [u8; 17] = *b"0000000000000000\0";

/// Directory record flag: a directory.
pub const FLAG_DIR: u8 = 0x02;
/// Directory record flag: not the last record of a multi-extent file.
pub const FLAG_MULTI_EXTENT: u8 = 0x80;

/// The fixed part of a directory record plus its identifier and padding byte.
pub fn record_base(ident_len: usize) -> usize {
    33 + ident_len + usize::from(ident_len.is_multiple_of(2))
}

/// What one directory record says.
pub struct Record<'a> {
    /// First block of the extent.
    pub lba: u32,
    /// Bytes of the extent.
    pub len: u32,
    /// Recording date (Unix seconds).
    pub mtime: i64,
    /// `FLAG_*` bits.
    pub flags: u8,
    /// File identifier bytes (`[0]` for `.`, `[1]` for `..`).
    pub ident: &'a [u8],
    /// System Use field (SUSP entries, any `CE` included).
    pub system_use: &'a [u8],
}

impl Record<'_> {
    /// Bytes of the record (even).
    pub fn len(&self) -> usize {
        let n = record_base(self.ident.len()) + self.system_use.len();
        n + n % 2
    }

    /// Writes the record at the start of `out`, which must hold [`Record::len`] bytes.
    pub fn encode(&self, out: &mut [u8]) {
        let len = self.len();
        out[0] = u8::try_from(len).expect("records are planned under 256 bytes");
        out[1] = 0;
        out[2..10].copy_from_slice(&both32(self.lba));
        out[10..18].copy_from_slice(&both32(self.len));
        out[18..25].copy_from_slice(&dir_date(self.mtime));
        out[25] = self.flags;
        out[26] = 0;
        out[27] = 0;
        out[28..32].copy_from_slice(&both16(1));
        out[32] = u8::try_from(self.ident.len()).expect("identifiers are at most 32 bytes");
        out[33..33 + self.ident.len()].copy_from_slice(self.ident);
        let su = record_base(self.ident.len());
        out[su..su + self.system_use.len()].copy_from_slice(self.system_use);
    }
}

/// One path table record (ECMA-119 9.4), little- or big-endian.
pub fn path_record(out: &mut Vec<u8>, ident: &[u8], lba: u32, parent: u16, big: bool) {
    out.push(u8::try_from(ident.len()).expect("identifiers are at most 31 bytes"));
    out.push(0);
    if big {
        out.extend_from_slice(&lba.to_be_bytes());
        out.extend_from_slice(&parent.to_be_bytes());
    } else {
        out.extend_from_slice(&lba.to_le_bytes());
        out.extend_from_slice(&parent.to_le_bytes());
    }
    out.extend_from_slice(ident);
    if ident.len() % 2 == 1 {
        out.push(0);
    }
}

fn text(out: &mut [u8], s: &str) {
    out.fill(b' ');
    out[..s.len()].copy_from_slice(s.as_bytes());
}

/// What the primary volume descriptor says.
pub struct Pvd<'a> {
    /// System identifier (32 bytes).
    pub system_id: &'a str,
    /// Volume identifier (32 bytes).
    pub volume_id: &'a str,
    /// Publisher identifier (128 bytes).
    pub publisher_id: &'a str,
    /// Data preparer identifier (128 bytes).
    pub preparer_id: &'a str,
    /// Application identifier (128 bytes).
    pub application_id: &'a str,
    /// Blocks of the volume.
    pub blocks: u32,
    /// Bytes of one path table.
    pub path_table_len: u32,
    /// Block of the little-endian path table.
    pub path_table_l: u32,
    /// Block of the big-endian path table.
    pub path_table_m: u32,
    /// The root directory's record (34 bytes).
    pub root_record: [u8; 34],
    /// Creation and modification time.
    pub time: i64,
}

/// The primary volume descriptor (ECMA-119 8.4).
pub fn pvd(p: &Pvd<'_>) -> Vec<u8> {
    let mut s = descriptor(1);
    text(&mut s[8..40], p.system_id);
    text(&mut s[40..72], p.volume_id);
    s[80..88].copy_from_slice(&both32(p.blocks));
    s[120..124].copy_from_slice(&both16(1));
    s[124..128].copy_from_slice(&both16(1));
    s[128..132].copy_from_slice(&both16(2048));
    s[132..140].copy_from_slice(&both32(p.path_table_len));
    s[140..144].copy_from_slice(&p.path_table_l.to_le_bytes());
    s[148..152].copy_from_slice(&p.path_table_m.to_be_bytes());
    s[156..190].copy_from_slice(&p.root_record);
    text(&mut s[190..318], "");
    text(&mut s[318..446], p.publisher_id);
    text(&mut s[446..574], p.preparer_id);
    text(&mut s[574..702], p.application_id);
    text(&mut s[702..813], "");
    let date = volume_date(p.time);
    s[813..830].copy_from_slice(&date);
    s[830..847].copy_from_slice(&date);
    s[847..864].copy_from_slice(&NO_DATE);
    s[864..881].copy_from_slice(&NO_DATE);
    s[881] = 1;
    s
}

fn descriptor(kind: u8) -> Vec<u8> {
    let mut s = vec![0u8; 2048];
    s[0] = kind;
    s[1..6].copy_from_slice(b"CD001");
    s[6] = 1;
    s
}

/// The volume descriptor set terminator.
pub fn terminator() -> Vec<u8> {
    descriptor(255)
}

/// The El Torito boot record volume descriptor pointing at the catalog.
pub fn boot_record(catalog: u32) -> Vec<u8> {
    let mut s = descriptor(0);
    s[7..30].copy_from_slice(b"EL TORITO SPECIFICATION");
    s[0x47..0x4B].copy_from_slice(&catalog.to_le_bytes());
    s
}

/// El Torito platform ids.
pub const PLATFORM_X86: u8 = 0;
/// UEFI.
pub const PLATFORM_EFI: u8 = 0xEF;

/// One bootable no-emulation image.
pub struct BootEntry {
    /// `PLATFORM_*`.
    pub platform: u8,
    /// 512-byte sectors the firmware loads.
    pub load_sectors: u16,
    /// First block of the image.
    pub lba: u32,
}

fn catalog_entry(out: &mut [u8], e: &BootEntry) {
    out[0] = 0x88; // bootable
    out[1] = 0; // no emulation
    out[2..4].copy_from_slice(&0u16.to_le_bytes()); // load segment: default 0x7C0
    out[6..8].copy_from_slice(&e.load_sectors.to_le_bytes());
    out[8..12].copy_from_slice(&e.lba.to_le_bytes());
}

/// The boot catalog (one block): validation entry, the first image as the default entry,
/// then every other image in a section of its own platform (the last section marked final).
pub fn catalog(entries: &[BootEntry]) -> Vec<u8> {
    let mut c = vec![0u8; 2048];
    let Some(first) = entries.first() else {
        return c;
    };
    c[0] = 1;
    c[1] = first.platform;
    c[0x1E] = 0x55;
    c[0x1F] = 0xAA;
    let sum = c[..32].chunks(2).fold(0u16, |s, w| {
        s.wrapping_add(u16::from_le_bytes([w[0], w[1]]))
    });
    c[0x1C..0x1E].copy_from_slice(&0u16.wrapping_sub(sum).to_le_bytes());
    catalog_entry(&mut c[32..64], first);
    let mut at = 64;
    for (i, e) in entries.iter().enumerate().skip(1) {
        c[at] = if i + 1 == entries.len() { 0x91 } else { 0x90 };
        c[at + 1] = e.platform;
        c[at + 2..at + 4].copy_from_slice(&1u16.to_le_bytes());
        catalog_entry(&mut c[at + 32..at + 64], e);
        at += 64;
    }
    c
}

/// Patches the boot information table into `image` (bytes 8..64, isolinux's
/// `-boot-info-table`): the primary volume descriptor's block (16), the image's block, its
/// length, and the 32-bit sum of its little-endian words from byte 64 on.
pub fn boot_info_table(image: &mut [u8], lba: u32) {
    let len = u32::try_from(image.len()).expect("boot images are bounded far below 4 GiB");
    let sum = image[64..].chunks(4).fold(0u32, |s, w| {
        let mut word = [0u8; 4];
        word[..w.len()].copy_from_slice(w);
        s.wrapping_add(u32::from_le_bytes(word))
    });
    image[8..64].fill(0);
    image[8..12].copy_from_slice(&16u32.to_le_bytes());
    image[12..16].copy_from_slice(&lba.to_le_bytes());
    image[16..20].copy_from_slice(&len.to_le_bytes());
    image[20..24].copy_from_slice(&sum.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(dir_date(0), [70, 1, 1, 0, 0, 0, 0]);
        assert_eq!(&volume_date(86_400 + 61)[..16], b"1970010200010100");
        assert_eq!(dir_date(i64::MIN)[0], 0);
        assert_eq!(dir_date(i64::MAX)[0], 255);
    }

    #[test]
    fn catalog_validation_sums_to_zero() {
        let c = catalog(&[
            BootEntry {
                platform: PLATFORM_X86,
                load_sectors: 4,
                lba: 40,
            },
            BootEntry {
                platform: PLATFORM_EFI,
                load_sectors: 2880,
                lba: 50,
            },
        ]);
        let sum = c[..32].chunks(2).fold(0u16, |s, w| {
            s.wrapping_add(u16::from_le_bytes([w[0], w[1]]))
        });
        assert_eq!(sum, 0);
        assert_eq!(&c[64..68], &[0x91, 0xEF, 1, 0]);
        assert_eq!(&c[96..98], &[0x88, 0]);
        assert_eq!(u32::from_le_bytes(c[104..108].try_into().unwrap()), 50);
    }
}
