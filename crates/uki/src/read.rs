//! A UKI read back: what `inspect` reports of one on an ESP.

use crate::pe::Pe;
use crate::{Error, Placed};

/// Longest text kept of `.cmdline`, `.uname` or `PRETTY_NAME` (longer ones are cut).
pub const MAX_TEXT: usize = 4096;

/// What a UKI holds, as read from its bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UkiInfo {
    /// Every section, in table order.
    pub sections: Vec<Placed>,
    /// `.cmdline`, without trailing NULs (lossy UTF-8, at most [`MAX_TEXT`] bytes).
    pub cmdline: Option<String>,
    /// `.uname`.
    pub uname: Option<String>,
    /// `PRETTY_NAME` of `.osrel` (unquoted).
    pub pretty_name: Option<String>,
}

/// Reads the sections of the UKI `image` and the texts of `.cmdline`, `.uname` and `.osrel`.
/// A section whose data lies outside the image is an error.
pub fn read(image: &[u8]) -> Result<UkiInfo, Error> {
    read_prefix(image, image.len() as u64)
}

/// [`read`] from the first bytes `prefix` of a UKI of `file_len` bytes (a reader that need
/// not hold the kernel and initrd): the headers must be in `prefix`; a text section whose
/// data is not wholly in it is left out (`None`).
pub fn read_prefix(prefix: &[u8], file_len: u64) -> Result<UkiInfo, Error> {
    let image = prefix;
    let pe = Pe::parse_prefix(image, file_len)?;
    let mut info = UkiInfo {
        sections: Vec::with_capacity(pe.sections.len()),
        cmdline: None,
        uname: None,
        pretty_name: None,
    };
    for s in &pe.sections {
        let name = s.name();
        if let Ok(data) = s.data(image) {
            match name.as_str() {
                ".cmdline" => info.cmdline = Some(text(data)),
                ".uname" => info.uname = Some(text(data)),
                ".osrel" => info.pretty_name = pretty_name(data),
                _ => {}
            }
        }
        info.sections.push(Placed {
            name,
            offset: u64::from(s.pointer_to_raw_data),
            len: u64::from(s.virtual_size.min(s.size_of_raw_data)),
            virtual_address: s.virtual_address,
            virtual_size: s.virtual_size,
        });
    }
    Ok(info)
}

fn text(b: &[u8]) -> String {
    let end = b.iter().rposition(|&c| c != 0).map_or(0, |i| i + 1);
    let b = &b[..end.min(MAX_TEXT)];
    String::from_utf8_lossy(b).into_owned()
}

/// `PRETTY_NAME=` of an os-release text, its quotes removed (os-release(5): a shell-like
/// assignment, the value optionally in single or double quotes).
fn pretty_name(osrel: &[u8]) -> Option<String> {
    let s = String::from_utf8_lossy(osrel);
    let line = s.lines().find_map(|l| l.strip_prefix("PRETTY_NAME="))?;
    let v = line.trim();
    let v = ['"', '\'']
        .iter()
        .find_map(|q| v.strip_prefix(*q).and_then(|x| x.strip_suffix(*q)))
        .unwrap_or(v);
    Some(text(v.as_bytes()))
}
