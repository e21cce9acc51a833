//! The `.sbat` section of a UKI, merged as ukify's `merge_sbat` does: the stub's `.sbat`
//! and the kernel's (when the kernel is a PE image with one), then ukify's default text for a
//! UKI (`uki,1,UKI,uki,1,<the UKI spec's address>`), each without its first line (the
//! `sbat,1,...` header, which must be there or the input is skipped), joined by newlines
//! after one header line, ending with `\n\0`. A section's bytes are read up to its last
//! non-NUL byte; lines are split where Python's `str.splitlines` splits.

use crate::Error;

/// The SBAT header line ukify puts first.
pub const HEADER: &str =
    "sbat,1,SBAT Version,sbat,1,https://github.com/rhboot/shim/blob/main/SBAT.md";
/// The SBAT text ukify adds for a UKI when given none (`--sbat`).
pub const UKI_DEFAULT: &str = "sbat,1,SBAT Version,sbat,1,https://github.com/rhboot/shim/blob/main/SBAT.md\nuki,1,UKI,uki,1,https://uapi-group.org/specifications/specs/unified_kernel_image/\n";

/// Python's `str.splitlines` boundaries.
fn is_line_break(c: char) -> bool {
    matches!(
        c,
        '\n' | '\r'
            | '\x0b'
            | '\x0c'
            | '\x1c'
            | '\x1d'
            | '\x1e'
            | '\u{85}'
            | '\u{2028}'
            | '\u{2029}'
    )
}

/// `str.splitlines()`: `\r\n` is one break, no empty last line for a trailing break.
fn split_lines(s: &str) -> Vec<&str> {
    let mut lines = Vec::new();
    let mut start = 0;
    let mut it = s.char_indices().peekable();
    while let Some((i, c)) = it.next() {
        if is_line_break(c) {
            lines.push(&s[start..i]);
            let mut next = i + c.len_utf8();
            if c == '\r' {
                if let Some(&(j, '\n')) = it.peek() {
                    it.next();
                    next = j + 1;
                }
            }
            start = next;
        }
    }
    if start < s.len() {
        lines.push(&s[start..]);
    }
    lines
}

/// The lines after the header of one SBAT text, or `None` when its first line is not a
/// `sbat,` header (ukify skips such an input).
fn entries(text: &str) -> Option<Vec<&str>> {
    let lines = split_lines(text);
    match lines.first() {
        Some(first) if first.starts_with("sbat,") => Some(lines[1..].to_vec()),
        _ => None,
    }
}

/// Merges the `.sbat` sections of PE images (`sections`: each one's bytes, NUL padding
/// included) and SBAT texts (`texts`) into a UKI's `.sbat`.
pub fn merge(sections: &[&[u8]], texts: &[&str]) -> Result<Vec<u8>, Error> {
    let mut lines: Vec<String> = Vec::new();
    for (i, s) in sections.iter().enumerate() {
        let end = s.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
        let text = std::str::from_utf8(&s[..end]).map_err(|_| Error::BadSbat { input: i })?;
        if let Some(e) = entries(text) {
            lines.extend(e.into_iter().map(str::to_owned));
        }
    }
    for t in texts {
        if let Some(e) = entries(t) {
            lines.extend(e.into_iter().map(str::to_owned));
        }
    }
    Ok(format!("{HEADER}\n{}\n\0", lines.join("\n")).into_bytes())
}
