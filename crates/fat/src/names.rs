//! File names: validation, 8.3 short names, long (VFAT) names.
//!
//! Rules, per directory:
//! - A name must be UTF-8, at most 255 UTF-16 units, without control characters, without any
//!   of `"*/:<>?\|`, and must not end with `.` or a space (Windows and Linux strip those, so
//!   such names would not round-trip).
//! - Two names of one directory must differ by more than letter case: FAT lookups are
//!   case-insensitive (Linux vfat, mtools and Windows refuse to create the second one).
//! - A name that is a valid 8.3 name (1 to 8 characters, optionally a dot and 1 to 3
//!   characters, only letters, digits and ``!#$%&'()-@^_`{}~``) gets a short entry only; when
//!   its base or extension is all lower case, the Windows NT case bits (0x08 base, 0x10
//!   extension) record it, as Windows, Linux vfat, mtools and fatfs read them. A valid 8.3
//!   name with mixed case in one part gets its upper-cased form as short name plus a long name.
//! - Every other name gets a long name and a generated short name: upper-cased ASCII letters
//!   and digits, spaces and extra dots dropped, other characters replaced by `_`, base cut
//!   to 8 and extension (after the last dot) to 3 characters, then a numeric tail `~N` with
//!   the smallest N (1, 2, ...) that makes it unique in the directory, the base shortened to
//!   fit, the way mtools numbers them. Valid 8.3 names are placed first, so a generated
//!   name never takes the short name of a real 8.3 name of the same directory.

use std::collections::{HashMap, HashSet};

use crate::{Error, Result};

/// Attribute bits and NT case bits of short entries.
pub(crate) const CASE_LOWER_BASE: u8 = 0x08;
pub(crate) const CASE_LOWER_EXT: u8 = 0x10;

/// Longest long name, in UTF-16 units.
pub(crate) const MAX_LFN: usize = 255;

/// The directory-entry form of one name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct DirName {
    /// 8.3 name, space padded, as stored.
    pub short: [u8; 11],
    /// NT case bits (byte 12 of the short entry).
    pub case: u8,
    /// The UTF-16 long name when one is needed.
    pub long: Option<Vec<u16>>,
}

impl DirName {
    /// Number of 32-byte directory slots: the long-name entries plus the short entry.
    pub fn slots(&self) -> u32 {
        1 + self
            .long
            .as_ref()
            // Names are at most 255 UTF-16 units: 20 entries.
            .map_or(0, |l| {
                u32::try_from(l.len().div_ceil(13)).expect("at most 20")
            })
    }
}

fn sfn_char_ok(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'()-@^_`{}~".contains(&c)
}

/// Why a file name cannot be stored ([`Error::BadName`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NameProblem {
    /// The name is not UTF-8.
    #[error("name is not valid UTF-8")]
    NotUtf8,
    /// A control character or one of `"*/:<>?\|`.
    #[error(
        "character {0:?} is not allowed in FAT names (no control characters, no any of \"*/:<>?\\|)"
    )]
    BadChar(char),
    /// A trailing `.` or space, which Windows and Linux strip.
    #[error("FAT names cannot end with `.` or a space")]
    BadEnd,
    /// More UTF-16 units than a long name holds.
    #[error("name is {units} UTF-16 units long, FAT allows {MAX_LFN}")]
    TooLong {
        /// The name's length in UTF-16 units.
        units: usize,
    },
    /// Another name of the same directory that differs only in letter case.
    #[error("differs from `{other}` only in letter case, and FAT names are case-insensitive")]
    CaseClash {
        /// The other name.
        other: String,
    },
}

/// Why a volume label cannot be stored ([`Error::BadLabel`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LabelProblem {
    /// More than 11 characters.
    #[error("a FAT label has at most 11 characters")]
    TooLong,
    /// A character outside printable ASCII, or one FAT reserves.
    #[error(
        "character {0:?} is not allowed (ASCII only; no control characters or any of *?.,;:/\\|+=<>[]\")"
    )]
    BadChar(char),
    /// A leading space.
    #[error("a FAT label cannot start with a space")]
    LeadingSpace,
}

/// Why `name` cannot be stored, if it cannot.
fn check_long(name: &str) -> std::result::Result<Vec<u16>, NameProblem> {
    if let Some(c) = name
        .chars()
        .find(|&c| (c as u32) < 0x20 || c == '\u{7f}' || "\"*/:<>?\\|".contains(c))
    {
        return Err(NameProblem::BadChar(c));
    }
    if name.ends_with('.') || name.ends_with(' ') {
        return Err(NameProblem::BadEnd);
    }
    let utf16: Vec<u16> = name.encode_utf16().collect();
    if utf16.len() > MAX_LFN {
        return Err(NameProblem::TooLong { units: utf16.len() });
    }
    Ok(utf16)
}

/// Case-folding key for the case-insensitive uniqueness check (full Unicode upper case).
fn fold(name: &str) -> String {
    name.chars().flat_map(char::to_uppercase).collect()
}

/// `Some((short, case, needs_long))` when `name` is a valid 8.3 name.
fn as_83(name: &str) -> Option<([u8; 11], u8, bool)> {
    let b = name.as_bytes();
    let (base, ext) = match b.iter().position(|&c| c == b'.') {
        Some(i) => (&b[..i], &b[i + 1..]),
        None => (b, &b[..0]),
    };
    let has_dot = base.len() != b.len();
    if base.is_empty() || base.len() > 8 || ext.len() > 3 || (has_dot && ext.is_empty()) {
        return None;
    }
    if !base.iter().chain(ext).all(|&c| sfn_char_ok(c)) {
        return None;
    }
    let mut short = [b' '; 11];
    for (i, c) in base.iter().enumerate() {
        short[i] = c.to_ascii_uppercase();
    }
    for (i, c) in ext.iter().enumerate() {
        short[8 + i] = c.to_ascii_uppercase();
    }
    // Case of each part: Some(true) all lower, Some(false) all upper, None mixed;
    // parts without letters count as upper.
    let case_of = |part: &[u8]| {
        let lower = part.iter().any(u8::is_ascii_lowercase);
        let upper = part.iter().any(u8::is_ascii_uppercase);
        match (lower, upper) {
            (true, true) => None,
            (true, false) => Some(true),
            _ => Some(false),
        }
    };
    match (case_of(base), case_of(ext)) {
        (Some(lb), Some(le)) => {
            let mut case = 0;
            if lb {
                case |= CASE_LOWER_BASE;
            }
            if le {
                case |= CASE_LOWER_EXT;
            }
            Some((short, case, false))
        }
        _ => Some((short, 0, true)),
    }
}

/// Basis of a generated short name: (base, extension), both upper-cased ASCII.
fn basis(name: &str) -> (Vec<u8>, Vec<u8>) {
    let chars: Vec<char> = name.chars().collect();
    let skip = |c: char| c == '.' || c == ' ';
    // The extension follows the last dot that has something other than dots and spaces
    // before it (".profile" has no extension, like on Windows and Linux).
    let dot = chars
        .iter()
        .rposition(|&c| c == '.')
        .filter(|&i| chars[..i].iter().any(|&c| !skip(c)));
    let (base, ext) = match dot {
        Some(i) => (&chars[..i], &chars[i + 1..]),
        None => (&chars[..], &chars[..0]),
    };
    let conv = |part: &[char], max: usize| -> Vec<u8> {
        part.iter()
            .filter(|&&c| !skip(c))
            .map(|&c| {
                if c.is_ascii() && sfn_char_ok(c as u8) {
                    (c as u8).to_ascii_uppercase()
                } else {
                    b'_'
                }
            })
            .take(max)
            .collect()
    };
    (conv(base, 8), conv(ext, 3))
}

/// Names of the entries of one directory, in the given order. `dir` is the directory's path
/// for error messages.
pub(crate) fn name_entries(dir: &str, names: &[&[u8]]) -> Result<Vec<DirName>> {
    let path_of = |n: &str| {
        if dir == "/" {
            format!("/{n}")
        } else {
            format!("{dir}/{n}")
        }
    };
    let mut strs: Vec<(&str, Vec<u16>)> = Vec::with_capacity(names.len());
    let mut folded: HashMap<String, usize> = HashMap::with_capacity(names.len());
    for (i, raw) in names.iter().enumerate() {
        let s = std::str::from_utf8(raw).map_err(|_| Error::BadName {
            path: path_of(&String::from_utf8_lossy(raw)),
            reason: NameProblem::NotUtf8,
        })?;
        let utf16 = check_long(s).map_err(|reason| Error::BadName {
            path: path_of(s),
            reason,
        })?;
        if let Some(&j) = folded.get(&fold(s)) {
            return Err(Error::BadName {
                path: path_of(s),
                reason: NameProblem::CaseClash {
                    other: strs[j].0.to_string(),
                },
            });
        }
        folded.insert(fold(s), i);
        strs.push((s, utf16));
    }

    let mut used: HashSet<[u8; 11]> = HashSet::with_capacity(names.len());
    let mut out: Vec<Option<DirName>> = vec![None; names.len()];
    for (i, (s, utf16)) in strs.iter().enumerate() {
        if let Some((short, case, needs_long)) = as_83(s) {
            let fresh = used.insert(short);
            debug_assert!(
                fresh,
                "distinct case-insensitive ASCII names have distinct upper-case forms"
            );
            out[i] = Some(DirName {
                short,
                case,
                long: needs_long.then(|| utf16.clone()),
            });
        }
    }
    // Next tail number to try per basis: every smaller one was found taken.
    let mut next_tail: HashMap<(Vec<u8>, Vec<u8>), u32> = HashMap::new();
    for (i, (s, utf16)) in strs.iter().enumerate() {
        if out[i].is_some() {
            continue;
        }
        let (base, ext) = basis(s);
        let key = (base, ext);
        let mut n = next_tail.get(&key).copied().unwrap_or(1);
        let short = loop {
            let tail = format!("~{n}");
            let keep = key.0.len().min(8 - tail.len());
            let mut short = [b' '; 11];
            short[..keep].copy_from_slice(&key.0[..keep]);
            short[keep..keep + tail.len()].copy_from_slice(tail.as_bytes());
            short[8..8 + key.1.len()].copy_from_slice(&key.1);
            if used.insert(short) {
                break short;
            }
            n += 1;
        };
        next_tail.insert(key, n + 1);
        out[i] = Some(DirName {
            short,
            case: 0,
            long: Some(utf16.clone()),
        });
    }
    Ok(out
        .into_iter()
        .map(|n| n.expect("every name was given a short name by one of the two passes"))
        .collect())
}

/// Checksum of a short name, stored in each of its long-name entries.
pub(crate) fn lfn_checksum(short: &[u8; 11]) -> u8 {
    short
        .iter()
        .fold(0u8, |sum, &c| sum.rotate_right(1).wrapping_add(c))
}

/// Validate and encode a volume label: upper-cased ASCII, space padded; `None` for no label.
pub(crate) fn label(label: &str) -> Result<Option<[u8; 11]>> {
    let bad = |reason| Error::BadLabel {
        label: label.to_string(),
        reason,
    };
    if label.len() > 11 {
        return Err(bad(LabelProblem::TooLong));
    }
    if let Some(c) = label
        .chars()
        .find(|&c| !c.is_ascii() || c.is_ascii_control() || "*?.,;:/\\|+=<>[]\"".contains(c))
    {
        return Err(bad(LabelProblem::BadChar(c)));
    }
    if label.starts_with(' ') {
        return Err(bad(LabelProblem::LeadingSpace));
    }
    let mut out = [b' '; 11];
    for (i, b) in label.bytes().enumerate() {
        out[i] = b.to_ascii_uppercase();
    }
    if &out == b"           " || &out == b"NO NAME    " {
        return Ok(None);
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<DirName> {
        let raw: Vec<&[u8]> = list.iter().map(|s| s.as_bytes()).collect();
        name_entries("/", &raw).unwrap()
    }
    fn short(n: &DirName) -> String {
        String::from_utf8(n.short.to_vec()).unwrap()
    }

    #[test]
    fn plain_83_names_need_no_long_entry() {
        let n = names(&[
            "BOOTX64.EFI",
            "config.txt",
            "README.md",
            "EFI",
            "Makefile",
            "a1",
        ]);
        assert_eq!(short(&n[0]), "BOOTX64 EFI");
        assert_eq!((n[0].case, n[0].long.is_none()), (0, true));
        assert_eq!(short(&n[1]), "CONFIG  TXT");
        assert_eq!(n[1].case, CASE_LOWER_BASE | CASE_LOWER_EXT);
        assert!(n[1].long.is_none());
        assert_eq!(n[2].case, CASE_LOWER_EXT);
        assert!(n[2].long.is_none());
        assert_eq!(short(&n[3]), "EFI        ");
        // Mixed case in one part: upper-cased short name plus the long name.
        assert_eq!(short(&n[4]), "MAKEFILE   ");
        assert!(n[4].long.is_some());
        assert_eq!(n[5].case, CASE_LOWER_BASE);
    }

    #[test]
    fn long_names_get_numeric_tails_like_mtools() {
        let n = names(&[
            "bcm2711-rpi-4-b.dtb",
            "bcm2711-rpi-400.dtb",
            "BCM271~1.DTB",
            ".profile",
            "a b.tar.gz",
            "héllo wörld.txt",
            "x+y",
        ]);
        // The real 8.3 name keeps ~1; generated names skip it.
        assert_eq!(short(&n[2]), "BCM271~1DTB");
        assert_eq!(short(&n[0]), "BCM271~2DTB");
        assert_eq!(short(&n[1]), "BCM271~3DTB");
        assert_eq!(short(&n[3]), "PROFIL~1   ");
        assert_eq!(short(&n[4]), "ABTAR~1 GZ ");
        assert_eq!(short(&n[5]), "H_LLOW~1TXT");
        assert_eq!(short(&n[6]), "X_Y~1      ");
        for d in &n[..2] {
            assert!(d.long.is_some());
        }
    }

    #[test]
    fn tails_grow_past_nine_and_stay_unique() {
        let list: Vec<String> = (0..1200)
            .map(|i| format!("longfilename_{i:04}.txt"))
            .collect();
        let refs: Vec<&str> = list.iter().map(String::as_str).collect();
        let n = names(&refs);
        let set: HashSet<_> = n.iter().map(|d| d.short).collect();
        assert_eq!(set.len(), n.len());
        assert_eq!(short(&n[9]), "LONGF~10TXT");
        assert_eq!(short(&n[1199]), "LON~1200TXT");
    }

    #[test]
    fn bad_names_are_refused_with_their_path() {
        for (bad, why) in [
            ("a:b", "not allowed"),
            ("dot.", "cannot end"),
            ("space ", "cannot end"),
            ("tab\there", "not allowed"),
        ] {
            let e = name_entries("/EFI", &[bad.as_bytes()]).unwrap_err();
            let msg = e.to_string();
            assert!(msg.contains(&format!("/EFI/{bad}")), "{msg}");
            assert!(msg.contains(why), "{msg}");
        }
        let long = "x".repeat(256);
        assert!(name_entries("/", &[long.as_bytes()]).is_err());
        assert!(name_entries("/", &["x".repeat(255).as_bytes()]).is_ok());
        let e = name_entries("/", &[b"\xff\xfe"]).unwrap_err();
        assert!(e.to_string().contains("UTF-8"), "{e}");
        let e = name_entries("/d", &[b"Foo", b"fOO"]).unwrap_err();
        assert!(e.to_string().contains("/d/fOO"), "{e}");
        assert!(e.to_string().contains("letter case"), "{e}");
    }

    #[test]
    fn checksum_golden() {
        // From an image written by `mcopy` (mtools 4.0.32) for "Readme Long Name.txt".
        assert_eq!(lfn_checksum(b"README~1TXT"), 0x6b);
        let n = names(&["Readme Long Name.txt"]);
        assert_eq!(short(&n[0]), "README~1TXT");
        assert_eq!(n[0].slots(), 3);
    }

    #[test]
    fn labels() {
        assert_eq!(label("esp").unwrap(), Some(*b"ESP        "));
        assert_eq!(label("FIRMWARE").unwrap(), Some(*b"FIRMWARE   "));
        assert_eq!(label("").unwrap(), None);
        assert_eq!(label("no name").unwrap(), None);
        assert!(label("TWELVE_CHARS").is_err());
        assert!(label("a.b").is_err());
        assert!(label(" x").is_err());
        assert!(label("é").is_err());
    }
}
