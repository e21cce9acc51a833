//! 32-byte directory entries and DOS timestamps.

use crate::names::{lfn_checksum, DirName};

pub(crate) const ENTRY: usize = 32;
pub(crate) const ATTR_VOLUME_ID: u8 = 0x08;
pub(crate) const ATTR_DIRECTORY: u8 = 0x10;
pub(crate) const ATTR_ARCHIVE: u8 = 0x20;
const ATTR_LONG_NAME: u8 = 0x0F;
const LAST_LONG_ENTRY: u8 = 0x40;

use imgbuild_units::{civil_from_days, days_from_civil};

/// First second FAT can store: 1980-01-01 00:00:00.
pub(crate) const FAT_EPOCH: i64 = days_from_civil(1980, 1, 1) * 86_400;
/// Last second FAT can store: 2107-12-31 23:59:59 (stored as :58).
pub(crate) const FAT_END: i64 = days_from_civil(2108, 1, 1) * 86_400 - 1;

/// A timestamp in FAT form.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct DosTime {
    pub date: u16,
    pub time: u16,
    /// Creation-time refinement in 10 ms units (0..=199): the odd second.
    pub centis: u8,
}

impl DosTime {
    /// Seconds since the epoch, read as UTC and clamped to 1980..=2107.
    pub fn from_unix(t: i64) -> Self {
        let t = t.clamp(FAT_EPOCH, FAT_END);
        let (y, m, d) = civil_from_days(t.div_euclid(86_400));
        // Clamped above: the year is 1980..=2107, so every field fits its bits.
        let s = u16::try_from(t.rem_euclid(86_400) / 2).expect("below 43200");
        let (hh, mm, ss2) = (s / 1800, s / 30 % 60, s % 30);
        let field = |v: i64| u16::try_from(v).expect("a DOS date field, clamped above");
        DosTime {
            date: (field(y - 1980) << 9) | (field(m.into()) << 5) | field(d.into()),
            time: (hh << 11) | (mm << 5) | ss2,
            centis: if t.rem_euclid(2) == 1 { 100 } else { 0 },
        }
    }
}

/// A short (8.3) directory entry.
pub(crate) fn short_entry(
    out: &mut [u8],
    name: &[u8; 11],
    case: u8,
    attr: u8,
    cluster: u32,
    size: u32,
    mtime: i64,
) {
    let t = DosTime::from_unix(mtime);
    let e = &mut out[..ENTRY];
    e[0..11].copy_from_slice(name); // DIR_Name
    e[11] = attr; // DIR_Attr
    e[12] = case; // DIR_NTRes
    e[13] = t.centis; // DIR_CrtTimeTenth
    e[14..16].copy_from_slice(&t.time.to_le_bytes()); // DIR_CrtTime
    e[16..18].copy_from_slice(&t.date.to_le_bytes()); // DIR_CrtDate
    e[18..20].copy_from_slice(&t.date.to_le_bytes()); // DIR_LstAccDate
    let [c0, c1, c2, c3] = cluster.to_le_bytes();
    e[20..22].copy_from_slice(&[c2, c3]); // DIR_FstClusHI
    e[22..24].copy_from_slice(&t.time.to_le_bytes()); // DIR_WrtTime
    e[24..26].copy_from_slice(&t.date.to_le_bytes()); // DIR_WrtDate
    e[26..28].copy_from_slice(&[c0, c1]); // DIR_FstClusLO
    e[28..32].copy_from_slice(&size.to_le_bytes()); // DIR_FileSize
}

/// The volume-label entry of the root directory (as mkfs.fat writes it: no centiseconds).
pub(crate) fn label_entry(out: &mut [u8], label: &[u8; 11], mtime: i64) {
    short_entry(out, label, 0, ATTR_VOLUME_ID, 0, 0, mtime);
    out[13] = 0;
}

/// Encode the long-name entries (if any) and the short entry of `name` at the start of
/// `out`; returns the bytes used (`name.slots() * 32`).
pub(crate) fn named_entry(
    out: &mut [u8],
    name: &DirName,
    attr: u8,
    cluster: u32,
    size: u32,
    mtime: i64,
) -> usize {
    let mut pos = 0;
    if let Some(long) = &name.long {
        let sum = lfn_checksum(&name.short);
        let count = long.len().div_ceil(13);
        // Stored last part first; each part holds 13 UTF-16 units, the name is ended by
        // one 0x0000 then padded with 0xFFFF.
        for ord in (1..=count).rev() {
            let mut units = [0xFFFFu16; 13];
            let start = (ord - 1) * 13;
            for (i, u) in units.iter_mut().enumerate() {
                match long.get(start + i) {
                    Some(&c) => *u = c,
                    None if start + i == long.len() => *u = 0,
                    None => {}
                }
            }
            let e = &mut out[pos..pos + ENTRY];
            // At most 20 long entries (255 UTF-16 units, 13 each).
            let ord_byte = u8::try_from(ord).expect("at most 20 long entries");
            e[0] = ord_byte | if ord == count { LAST_LONG_ENTRY } else { 0 }; // LDIR_Ord
            for (i, u) in units[..5].iter().enumerate() {
                e[1 + 2 * i..3 + 2 * i].copy_from_slice(&u.to_le_bytes()); // LDIR_Name1
            }
            e[11] = ATTR_LONG_NAME; // LDIR_Attr
            e[12] = 0; // LDIR_Type
            e[13] = sum; // LDIR_Chksum
            for (i, u) in units[5..11].iter().enumerate() {
                e[14 + 2 * i..16 + 2 * i].copy_from_slice(&u.to_le_bytes()); // LDIR_Name2
            }
            e[26..28].copy_from_slice(&[0, 0]); // LDIR_FstClusLO
            for (i, u) in units[11..].iter().enumerate() {
                e[28 + 2 * i..30 + 2 * i].copy_from_slice(&u.to_le_bytes()); // LDIR_Name3
            }
            pos += ENTRY;
        }
    }
    short_entry(
        &mut out[pos..],
        &name.short,
        name.case,
        attr,
        cluster,
        size,
        mtime,
    );
    pos + ENTRY
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::name_entries;

    #[test]
    fn dates() {
        assert_eq!(FAT_EPOCH, 315_532_800);
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(951_782_400 / 86_400), (2000, 2, 29));
        assert_eq!(civil_from_days(1_704_067_200 / 86_400), (2024, 1, 1));
        for z in [-1000, 0, 3652, 11_016, 47_482, 50_000] {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, i64::from(m), i64::from(d)), z);
        }
    }

    #[test]
    fn dos_time_fields_and_clamping() {
        // 2024-02-29 13:45:07 UTC
        let t = DosTime::from_unix(1_709_214_307);
        assert_eq!(t.date, ((2024 - 1980) << 9) | (2 << 5) | 29);
        assert_eq!(t.time, (13 << 11) | (45 << 5) | 3);
        assert_eq!(t.centis, 100);
        let lo = DosTime::from_unix(0);
        assert_eq!((lo.date, lo.time, lo.centis), ((1 << 5) | 1, 0, 0));
        assert_eq!(DosTime::from_unix(i64::MIN), lo);
        let hi = DosTime::from_unix(i64::MAX);
        assert_eq!(hi.date, (127 << 9) | (12 << 5) | 31);
        assert_eq!(hi.time, (23 << 11) | (59 << 5) | 29);
    }

    #[test]
    fn long_entries_match_mtools_bytes() {
        // Bytes of the two long entries mcopy (mtools 4.0.32) wrote for "Readme Long Name.txt".
        let want1 = "42 61 00 6d 00 65 00 2e 00 74 00 0f 00 6b 78 00 74 00 00 00 ff ff ff ff ff ff 00 00 ff ff ff ff";
        let want2 = "01 52 00 65 00 61 00 64 00 6d 00 0f 00 6b 65 00 20 00 4c 00 6f 00 6e 00 67 00 00 00 20 00 4e 00";
        let n = &name_entries("/", &[b"Readme Long Name.txt"]).unwrap()[0];
        let mut buf = [0u8; 96];
        assert_eq!(named_entry(&mut buf, n, ATTR_ARCHIVE, 2, 3, 0), 96);
        let hex = |b: &[u8]| {
            b.iter()
                .map(|x| format!("{x:02x}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        assert_eq!(hex(&buf[..32]), want1);
        assert_eq!(hex(&buf[32..64]), want2);
        assert_eq!(&buf[64..75], b"README~1TXT");
        assert_eq!(buf[75], ATTR_ARCHIVE);
        assert_eq!(&buf[90..92], &[2, 0]);
        assert_eq!(&buf[92..96], &[3, 0, 0, 0]);
    }
}
