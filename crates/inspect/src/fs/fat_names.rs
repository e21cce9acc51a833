//! FAT directory entry names and times: 8.3 short names (code page 437, the lowercase
//! flags), long-name (VFAT) entries with their checksum and sequence checks, DOS timestamps.

use imgbuild_units::days_from_civil;

/// DOS date and time (local time by convention; read as UTC) -> Unix seconds.
pub(super) fn dos_time(date: u16, time: u16) -> i64 {
    let year = 1980 + i64::from(date >> 9);
    let month = i64::from((date >> 5) & 0xf).clamp(1, 12);
    let day = i64::from(date & 0x1f).max(1);
    let secs = i64::from(time >> 11) * 3600
        + i64::from((time >> 5) & 0x3f) * 60
        + i64::from(time & 0x1f) * 2;
    days_from_civil(year, month, day) * 86400 + secs
}

pub(super) fn short_name(raw: &[u8], case: u8) -> String {
    let mut base: Vec<u8> = raw[..8].to_vec();
    if base[0] == 0x05 {
        base[0] = 0xe5;
    }
    while base.last() == Some(&b' ') {
        base.pop();
    }
    let mut ext: Vec<u8> = raw[8..11].to_vec();
    while ext.last() == Some(&b' ') {
        ext.pop();
    }
    if case & 0x08 != 0 {
        base.make_ascii_lowercase();
    }
    if case & 0x10 != 0 {
        ext.make_ascii_lowercase();
    }
    let mut s = oem(&base);
    if !ext.is_empty() {
        s.push('.');
        s.push_str(&oem(&ext));
    }
    s
}

/// Code page 437 (Linux's default `codepage=` for vfat) for bytes above 0x7f of short names;
/// a bijection, so distinct names stay distinct.
const CP437_HIGH: &str = "ÇüéâäàåçêëèïîìÄÅÉæÆôöòûùÿÖÜ¢£¥₧ƒáíóúñÑªº¿⌐¬½¼¡«»░▒▓│┤╡╢╖╕╣║╗╝╜╛┐\
                          └┴┬├─┼╞╟╚╔╩╦╠═╬╧╨╤╥╙╘╒╓╫╪┘┌█▄▌▐▀αßΓπΣσµτΦΘΩδ∞φε∩≡±≥≤⌠⌡÷≈°∙·√ⁿ²■\u{a0}";

fn oem(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|&b| match b {
            0x20..=0x7e => char::from(b),
            0x80..=0xff => CP437_HIGH
                .chars()
                .nth(usize::from(b - 0x80))
                .unwrap_or('\u{fffd}'),
            _ => '\u{fffd}',
        })
        .collect()
}

fn lfn_checksum(short: &[u8]) -> u8 {
    short[..11]
        .iter()
        .fold(0u8, |sum, &c| sum.rotate_right(1).wrapping_add(c))
}

/// Collects the long-name entries that precede a short entry.
#[derive(Default)]
pub(super) struct Lfn {
    parts: Vec<[u16; 13]>,
    expect: u8,
    checksum: u8,
    active: bool,
}

impl Lfn {
    pub(super) fn reset(&mut self) {
        self.parts.clear();
        self.active = false;
    }

    pub(super) fn push(&mut self, e: &[u8]) {
        let seq = e[0];
        let n = seq & 0x1f;
        let mut chars = [0u16; 13];
        for (i, off) in [1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30]
            .iter()
            .enumerate()
        {
            chars[i] = u16::from_le_bytes([e[*off], e[*off + 1]]);
        }
        if seq & 0x40 != 0 {
            self.parts.clear();
            if n == 0 || n > 20 {
                self.active = false;
                return;
            }
            self.active = true;
            self.expect = n;
            self.checksum = e[13];
        } else if !self.active || n != self.expect || e[13] != self.checksum {
            self.reset();
            return;
        }
        self.parts.push(chars);
        self.expect = n - 1;
    }

    /// The long name, if complete and belonging to `short`.
    pub(super) fn take(&mut self, short: &[u8]) -> Option<String> {
        let ok = self.active && self.expect == 0 && self.checksum == lfn_checksum(short);
        let parts = std::mem::take(&mut self.parts);
        self.active = false;
        if !ok {
            return None;
        }
        let mut units: Vec<u16> = Vec::with_capacity(parts.len() * 13);
        for p in parts.iter().rev() {
            units.extend_from_slice(p);
        }
        if let Some(end) = units.iter().position(|&u| u == 0) {
            units.truncate(end);
        }
        while units.last() == Some(&0xffff) {
            units.pop();
        }
        (!units.is_empty()).then(|| String::from_utf16_lossy(&units))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dos_times() {
        // 1980-01-01 00:00:00
        assert_eq!(dos_time(0x21, 0), 315_532_800);
        // 2000-01-01 00:00:00 (year 20, month 1, day 1)
        assert_eq!(dos_time((20 << 9) | (1 << 5) | 1, 0), 946_684_800);
        assert_eq!(days_from_civil(1970, 1, 1), 0);
    }

    #[test]
    fn short_names() {
        assert_eq!(short_name(b"README  TXT", 0), "README.TXT");
        assert_eq!(short_name(b"EFI        ", 0), "EFI");
        assert_eq!(short_name(b"CONFIG  TXT", 0x18), "config.txt");
        assert_eq!(CP437_HIGH.chars().count(), 128);
        assert_eq!(short_name(b"\x9an\xd8c\x99d\x90 TXT", 0x18), "Ün╪cÖdÉ.txt");
    }
}
