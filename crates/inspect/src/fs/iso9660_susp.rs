//! System Use Sharing Protocol (SUSP, IEEE P1281) entries of an ISO 9660 directory record
//! and the Rock Ridge (RRIP, IEEE P1282) facts they carry: `NM` names (continued across
//! entries), `PX` modes and owners, `SL` symlink targets (components continued across
//! records and entries), `TF` times, `CL`/`RE` deep directory relocation, and `CE` pointers
//! to continuation areas (followed by the caller, bounded).
//!
//! Pure functions on bytes: every length is checked against the area it lies in.

use super::Kind;

/// Longest Rock Ridge name or symlink target accepted, in bytes (Linux's `PATH_MAX`).
pub(crate) const MAX_RR_TEXT: usize = 4096;

/// A `CE` entry: where the next part of a record's system use area is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Continuation {
    /// Logical block of the continuation area.
    pub block: u32,
    /// Byte offset in that block.
    pub offset: u32,
    /// Bytes of the area.
    pub len: u32,
}

/// What one record's system use entries say (all areas of its `CE` chain folded in).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Susp {
    /// `SP` seen (only meaningful on the root's `.`): the bytes to skip in every record.
    pub sp_skip: Option<u8>,
    /// An `ER` naming Rock Ridge (`RRIP_1991A`, `IEEE_P1282`, `IEEE_1282`), or an `RR` entry.
    pub rock_ridge: bool,
    /// `NM`: the name, when one was given (`.`/`..` flags give none).
    pub name: Option<Vec<u8>>,
    /// `PX`: mode (with type bits), uid, gid.
    pub px: Option<(u32, u32, u32)>,
    /// `SL`: the symlink target.
    pub symlink: Option<Vec<u8>>,
    /// `TF` modification time (Unix seconds).
    pub mtime: Option<i64>,
    /// `CL`: the block of the directory relocated here.
    pub child_link: Option<u32>,
    /// `RE`: this record is a relocated directory, hidden where it is recorded.
    pub relocated: bool,
    /// `NM` said the name continues in another entry (state while parsing).
    nm_open: bool,
    /// `SL` said the target continues in another entry (state while parsing).
    sl_open: bool,
    /// The last `SL` component continues in the next component (state while parsing).
    sl_component_open: bool,
}

/// Why an area's entries are not believed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SuspError {
    /// An entry's length is below 4 or runs past its area.
    #[error("SUSP entry {sig:?} of {len} bytes at offset {at} of a {area}-byte area")]
    BadLength {
        /// The entry's signature, lossily.
        sig: String,
        /// Its declared length.
        len: usize,
        /// Where it starts.
        at: usize,
        /// The area's length.
        area: usize,
    },
    /// A Rock Ridge name or symlink target longer than [`MAX_RR_TEXT`].
    #[error("Rock Ridge {what} longer than {MAX_RR_TEXT} bytes")]
    TooLong {
        /// `name` or `symlink target`.
        what: &'static str,
    },
}

fn u32_le(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at + 4).map(|_| crate::bytes::le32(b, at))
}

fn push_text(to: &mut Vec<u8>, more: &[u8], what: &'static str) -> Result<(), SuspError> {
    if to.len() + more.len() > MAX_RR_TEXT {
        return Err(SuspError::TooLong { what });
    }
    to.extend_from_slice(more);
    Ok(())
}

/// A 7-byte ISO 9660 date (ECMA-119 9.1.5) as Unix seconds; `None` when unset or invalid.
pub(crate) fn short_date(d: &[u8]) -> Option<i64> {
    let d = d.get(..7)?;
    if d[1] == 0 || d[1] > 12 || d[2] == 0 || d[2] > 31 || d[3] > 23 || d[4] > 59 || d[5] > 60 {
        return None;
    }
    let days =
        imgbuild_units::days_from_civil(1900 + i64::from(d[0]), i64::from(d[1]), i64::from(d[2]));
    let secs = i64::from(d[3]) * 3600 + i64::from(d[4]) * 60 + i64::from(d[5]);
    // Offset from GMT in 15-minute steps, from -48 to +52.
    let offset = i64::from(i8::from_le_bytes([d[6]]));
    Some(days * 86400 + secs - offset * 900)
}

/// A 17-byte ISO 9660 date (ECMA-119 8.4.26.1): digits, then hundredths and a GMT offset.
pub(crate) fn long_date(d: &[u8]) -> Option<i64> {
    let d = d.get(..17)?;
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        std::str::from_utf8(&d[r]).ok()?.parse().ok()
    };
    let year = num(0..4)?;
    if year == 0 {
        return None;
    }
    let short = [
        u8::try_from(year.checked_sub(1900)?).ok()?,
        u8::try_from(num(4..6)?).ok()?,
        u8::try_from(num(6..8)?).ok()?,
        u8::try_from(num(8..10)?).ok()?,
        u8::try_from(num(10..12)?).ok()?,
        u8::try_from(num(12..14)?).ok()?,
        d[16],
    ];
    short_date(&short)
}

impl Susp {
    /// Reads the entries of one area (a record's system use field past the `SP` skip, or a
    /// continuation area); returns the `CE` entry found, if any. Padding (a zero byte where
    /// an entry would start, fewer than 4 bytes left) and `ST` end the area.
    pub(crate) fn parse(&mut self, area: &[u8]) -> Result<Option<Continuation>, SuspError> {
        let mut ce = None;
        let mut i = 0;
        while area.len().saturating_sub(i) >= 4 {
            let e = &area[i..];
            if e[0] == 0 {
                break;
            }
            let len = usize::from(e[2]);
            if len < 4 || len > e.len() {
                return Err(SuspError::BadLength {
                    sig: String::from_utf8_lossy(&e[..2]).into_owned(),
                    len,
                    at: i,
                    area: area.len(),
                });
            }
            let data = &e[4..len];
            match &e[..2] {
                b"ST" => break,
                b"SP" if data.len() >= 3 && data[..2] == [0xbe, 0xef] => {
                    self.sp_skip = Some(data[2]);
                }
                b"ER" => self.er(data),
                b"RR" => self.rock_ridge = true,
                b"CE" => {
                    if let (Some(block), Some(offset), Some(len)) =
                        (u32_le(data, 0), u32_le(data, 8), u32_le(data, 16))
                    {
                        ce = Some(Continuation { block, offset, len });
                    }
                }
                b"PX" => {
                    if let (Some(m), Some(u), Some(g)) =
                        (u32_le(data, 0), u32_le(data, 16), u32_le(data, 24))
                    {
                        self.px = Some((m, u, g));
                    }
                }
                b"NM" => self.nm(data)?,
                b"SL" => self.sl(data)?,
                b"TF" => self.tf(data),
                b"CL" => self.child_link = u32_le(data, 0),
                b"RE" => self.relocated = true,
                _ => {}
            }
            i += len;
        }
        Ok(ce)
    }

    fn er(&mut self, data: &[u8]) {
        // len_id, len_des, len_src, version, then the identifier.
        if data.len() >= 4 {
            let id_len = usize::from(data[0]);
            if let Some(id) = data.get(4..4 + id_len) {
                if matches!(id, b"RRIP_1991A" | b"IEEE_P1282" | b"IEEE_1282") {
                    self.rock_ridge = true;
                }
            }
        }
    }

    fn nm(&mut self, data: &[u8]) -> Result<(), SuspError> {
        let Some((&flags, text)) = data.split_first() else {
            return Ok(());
        };
        // CURRENT (2) and PARENT (4) name `.` and `..`: no name of its own.
        if flags & 0b110 != 0 {
            self.nm_open = false;
            return Ok(());
        }
        let name = match (&mut self.name, self.nm_open) {
            (Some(n), true) => n,
            (slot, _) => slot.insert(Vec::new()),
        };
        push_text(name, text, "name")?;
        self.nm_open = flags & 1 != 0;
        Ok(())
    }

    fn sl(&mut self, data: &[u8]) -> Result<(), SuspError> {
        let Some((&flags, mut comps)) = data.split_first() else {
            return Ok(());
        };
        if !self.sl_open || self.symlink.is_none() {
            self.symlink = Some(Vec::new());
            self.sl_component_open = false;
        }
        let Some(target) = self.symlink.as_mut() else {
            return Ok(());
        };
        while comps.len() >= 2 {
            let cflags = comps[0];
            let clen = usize::from(comps[1]);
            let Some(content) = comps.get(2..2 + clen) else {
                break;
            };
            // A component after a finished one is separated by `/`, except after the root.
            let sep = !target.is_empty() && !self.sl_component_open && target != b"/";
            if sep {
                push_text(target, b"/", "symlink target")?;
            }
            let part: &[u8] = if cflags & 8 != 0 {
                b"/"
            } else if cflags & 4 != 0 {
                b".."
            } else if cflags & 2 != 0 {
                b"."
            } else {
                content
            };
            push_text(target, part, "symlink target")?;
            self.sl_component_open = cflags & 1 != 0;
            comps = &comps[2 + clen..];
        }
        self.sl_open = flags & 1 != 0;
        Ok(())
    }

    fn tf(&mut self, data: &[u8]) {
        let Some((&flags, stamps)) = data.split_first() else {
            return;
        };
        let size = if flags & 0x80 != 0 { 17 } else { 7 };
        // Stamps in bit order: creation (1), modify (2), access, attributes, ...
        let skip = usize::from(flags & 1);
        if flags & 2 == 0 {
            return;
        }
        let Some(stamp) = stamps.get(skip * size..(skip + 1) * size) else {
            return;
        };
        self.mtime = if size == 17 {
            long_date(stamp)
        } else {
            short_date(stamp)
        };
    }
}

/// Permission bits of a POSIX mode.
pub(crate) fn mode_bits(m: u32) -> u16 {
    u16::try_from(m & 0o7777).unwrap_or(0)
}

/// The entry kind a POSIX mode's type bits name.
pub(crate) fn kind_of(m: u32) -> Option<Kind> {
    Some(match m & 0o170_000 {
        0o100_000 => Kind::File,
        0o120_000 => Kind::Symlink,
        0o020_000 => Kind::CharDev,
        0o060_000 => Kind::BlockDev,
        0o010_000 => Kind::Fifo,
        0o140_000 => Kind::Socket,
        _ => return None,
    })
}

/// An ISO 9660 identifier as Linux shows it without Rock Ridge: `;1` and a trailing dot of
/// a file dropped, lower case.
pub(crate) fn iso_name(ident: &[u8], dir: bool) -> Vec<u8> {
    let mut n = ident;
    if !dir {
        if let Some(i) = n.iter().position(|&b| b == b';') {
            n = &n[..i];
        }
        if n.len() > 1 {
            n = n.strip_suffix(b".").unwrap_or(n);
        }
    }
    n.to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_names_and_modes() {
        assert_eq!(iso_name(b"README.TXT;1", false), b"readme.txt");
        assert_eq!(iso_name(b"NOEXT.;1", false), b"noext");
        assert_eq!(iso_name(b"DIR.X", true), b"dir.x");
        assert_eq!(kind_of(0o120_777), Some(Kind::Symlink));
        assert_eq!(kind_of(0o040_755), None);
        assert_eq!(mode_bits(0o104_755), 0o4755);
    }

    fn entry(sig: &[u8], data: &[u8]) -> Vec<u8> {
        let mut v = sig.to_vec();
        v.push(u8::try_from(4 + data.len()).unwrap());
        v.push(1);
        v.extend_from_slice(data);
        v
    }

    #[test]
    fn names_and_targets_continue_across_entries() {
        let mut area = entry(b"NM", b"\x01hello-");
        area.extend(entry(b"NM", b"\x00world"));
        // SL: root, "nix", "st" continued into "ore", then "..".
        area.extend(entry(b"SL", b"\x01\x08\x00\x00\x03nix\x01\x02st"));
        area.extend(entry(b"SL", b"\x00\x00\x03ore\x04\x00"));
        let mut s = Susp::default();
        assert_eq!(s.parse(&area).unwrap(), None);
        assert_eq!(s.name.as_deref(), Some(&b"hello-world"[..]));
        assert_eq!(s.symlink.as_deref(), Some(&b"/nix/store/.."[..]));
    }

    #[test]
    fn bad_lengths_are_errors_and_padding_ends() {
        let mut s = Susp::default();
        assert!(matches!(
            s.parse(b"PX\x03\x01"),
            Err(SuspError::BadLength { len: 3, .. })
        ));
        assert!(s.parse(b"NM\xff\x01abc").is_err());
        assert_eq!(s.parse(&[0u8; 9]).unwrap(), None);
        let mut ce = b"CE\x1c\x01".to_vec();
        for v in [20u32, 100, 300] {
            ce.extend(v.to_le_bytes());
            ce.extend(v.to_be_bytes());
        }
        assert_eq!(
            s.parse(&ce).unwrap(),
            Some(Continuation {
                block: 20,
                offset: 100,
                len: 300
            })
        );
    }

    #[test]
    fn dates() {
        assert_eq!(short_date(&[70, 1, 1, 0, 0, 0, 0]), Some(0));
        // 01:00 at GMT+1 is midnight UTC.
        assert_eq!(short_date(&[70, 1, 1, 1, 0, 0, 4]), Some(0));
        assert_eq!(long_date(b"1970010100000100\x00"), Some(1));
        assert_eq!(short_date(&[0; 7]), None);
        assert_eq!(long_date(b"0000000000000000\x00"), None);
        let mut s = Susp::default();
        // TF with creation and modify, short form.
        let tf = entry(b"TF", &[0x03, 70, 1, 1, 0, 0, 5, 0, 70, 1, 1, 0, 0, 9, 0]);
        s.parse(&tf).unwrap();
        assert_eq!(s.mtime, Some(9));
    }

    #[test]
    fn too_long_names_are_refused() {
        let mut s = Susp::default();
        let mut area = Vec::new();
        for _ in 0..20 {
            area.extend(entry(b"NM", &[&[1u8][..], &[b'a'; 250]].concat()));
        }
        assert_eq!(s.parse(&area), Err(SuspError::TooLong { what: "name" }));
    }
}
