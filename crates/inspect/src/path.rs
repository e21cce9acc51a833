//! Paths inside a filesystem: bytes, absolute, normalised lexically.

/// The components of `path`, empty ones dropped (`.` and `..` kept, for a resolver).
pub(crate) fn components(path: &[u8]) -> impl DoubleEndedIterator<Item = Vec<u8>> + '_ {
    path.split(|&b| b == b'/')
        .filter(|c| !c.is_empty())
        .map(<[u8]>::to_vec)
}

/// `/a/b` from `[a, b]`; `/` from none.
pub(crate) fn from_components(names: &[Vec<u8>]) -> Vec<u8> {
    let mut p = Vec::new();
    for n in names {
        p.push(b'/');
        p.extend_from_slice(n);
    }
    if p.is_empty() {
        p.push(b'/');
    }
    p
}

/// `a//b/./c/../d` -> `/a/b/d`: absolute, no empty, `.` or `..` components (`..` of the
/// root is the root). Lexical, like `realpath -s`: a symlink followed by `..` is not
/// resolved first.
pub fn normalize(path: &[u8]) -> Vec<u8> {
    let mut parts: Vec<&[u8]> = Vec::new();
    for c in path.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    let mut out = Vec::with_capacity(path.len() + 1);
    for p in &parts {
        out.push(b'/');
        out.extend_from_slice(p);
    }
    if out.is_empty() {
        out.push(b'/');
    }
    out
}

/// `dir` + `/` + `name` for a normalised `dir`.
pub fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = dir.to_vec();
    if p.last() != Some(&b'/') {
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

/// `/a/b` -> (`/a`, `b`); `None` for the root.
pub fn parent_and_name(path: &[u8]) -> Option<(&[u8], &[u8])> {
    let trimmed = match path.iter().rposition(|&b| b != b'/') {
        Some(i) => &path[..=i],
        None => return None,
    };
    let slash = trimmed.iter().rposition(|&b| b == b'/');
    Some(match slash {
        Some(0) => (&b"/"[..], &trimmed[1..]),
        Some(i) => (&trimmed[..i], &trimmed[i + 1..]),
        None => (&b"/"[..], trimmed),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes() {
        assert_eq!(normalize(b""), b"/");
        assert_eq!(normalize(b"/"), b"/");
        assert_eq!(normalize(b"a//b/./c/../d/"), b"/a/b/d");
        assert_eq!(normalize(b"/../../x"), b"/x");
        assert_eq!(join(b"/", b"x"), b"/x");
        assert_eq!(join(b"/a", b"x"), b"/a/x");
        assert_eq!(parent_and_name(b"/a/b"), Some((&b"/a"[..], &b"b"[..])));
        assert_eq!(parent_and_name(b"/a"), Some((&b"/"[..], &b"a"[..])));
        assert_eq!(parent_and_name(b"/"), None);
    }
}
