//! ISO 9660 identifiers made from arbitrary names, deterministically.
//!
//! A file `name.ext` becomes `NAME.EXT;1`, a directory `NAME`: d-characters only (`A-Z`,
//! `0-9`, `_`; lower case is upper-cased, everything else becomes `_`), at most 30
//! characters for a file (name, dot and an extension of at most 8) and 31 for a directory
//! (interchange level 2). A name that collides with one already given in the same directory
//! (the directory's entries are named in the tree's byte order) gets a `~N` suffix on its
//! name part, the smallest `N` that makes it unique. Rock Ridge's `NM` carries the real name.

use std::collections::HashSet;

/// Longest file identifier without `;1` (ECMA-119 level 2: 30 characters).
const FILE_MAX: usize = 30;
/// Longest directory identifier.
const DIR_MAX: usize = 31;
/// Longest extension kept.
const EXT_MAX: usize = 8;

/// An identifier, split as ECMA-119 sorts it: the name part, then the extension.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct IsoName {
    pub stem: Vec<u8>,
    /// `None` for a directory.
    pub ext: Option<Vec<u8>>,
}

impl IsoName {
    /// The bytes of the directory record's identifier (`STEM.EXT;1` or `STEM`).
    pub fn identifier(&self) -> Vec<u8> {
        let mut out = self.stem.clone();
        if let Some(ext) = &self.ext {
            out.push(b'.');
            out.extend_from_slice(ext);
            out.extend_from_slice(b";1");
        }
        out
    }

    /// The identifier without its version: what must be unique in a directory.
    fn key(&self) -> Vec<u8> {
        let mut out = self.stem.clone();
        if let Some(ext) = &self.ext {
            out.push(b'.');
            out.extend_from_slice(ext);
        }
        out
    }
}

fn d_chars(part: &[u8]) -> Vec<u8> {
    part.iter()
        .map(|&b| match b {
            b'a'..=b'z' => b.to_ascii_uppercase(),
            b'A'..=b'Z' | b'0'..=b'9' => b,
            _ => b'_',
        })
        .collect()
}

/// Names the entries of one directory, in the order they are given.
#[derive(Default)]
pub struct Namer {
    used: HashSet<Vec<u8>>,
}

impl Namer {
    /// The identifier for `name` (a directory when `dir`), unique in this directory.
    pub fn name(&mut self, name: &[u8], dir: bool) -> IsoName {
        let (mut stem, ext) = if dir {
            let mut s = d_chars(name);
            s.truncate(DIR_MAX);
            (s, None)
        } else {
            let (stem, ext) = match name.iter().rposition(|&b| b == b'.') {
                Some(dot) => (&name[..dot], &name[dot + 1..]),
                None => (name, &name[..0]),
            };
            let mut ext = d_chars(ext);
            ext.truncate(EXT_MAX);
            let mut stem = d_chars(stem);
            stem.truncate(FILE_MAX - 1 - ext.len());
            (stem, Some(ext))
        };
        if stem.is_empty() && ext.as_ref().is_none_or(|e| e.is_empty()) {
            stem.push(b'_');
        }
        let max = match &ext {
            None => DIR_MAX,
            Some(e) => FILE_MAX - 1 - e.len(),
        };
        let mut candidate = IsoName {
            stem: stem.clone(),
            ext: ext.clone(),
        };
        let mut n = 1u64;
        while !self.used.insert(candidate.key()) {
            let suffix = format!("~{n}").into_bytes();
            let mut s = stem.clone();
            s.truncate(max.saturating_sub(suffix.len()));
            s.extend_from_slice(&suffix);
            candidate = IsoName {
                stem: s,
                ext: ext.clone(),
            };
            n += 1;
        }
        candidate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mangles_and_resolves_collisions_in_order() {
        let mut n = Namer::default();
        assert_eq!(n.name(b"vmlinuz.efi", false).identifier(), b"VMLINUZ.EFI;1");
        assert_eq!(
            n.name(b"VMLINUZ.efi", false).identifier(),
            b"VMLINUZ~1.EFI;1"
        );
        assert_eq!(n.name(b"vmlinuz-efi", true).identifier(), b"VMLINUZ_EFI");
        assert_eq!(n.name(b"Makefile", false).identifier(), b"MAKEFILE.;1");
        assert_eq!(n.name(b"makefile", true).identifier(), b"MAKEFILE");
        assert_eq!(n.name(b"MAKEFILE", true).identifier(), b"MAKEFILE~1");
        assert_eq!(n.name(b".bashrc", false).identifier(), b".BASHRC;1");
        let long = n.name(&[b'x'; 200], false).identifier();
        assert_eq!(long.len(), 30 + 2);
        let long2 = n.name(&[b'X'; 201], false).identifier();
        assert_eq!(long2, [&[b'X'; 27][..], b"~1.;1"].concat());
        let d = n.name(&[b'y'; 100], true).identifier();
        assert_eq!(d.len(), 31);
    }
}
