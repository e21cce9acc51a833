//! OVA: a tar (OVF descriptor, manifest, disks) whose first `.vmdk` member holds the disk,
//! read in place as a VMDK extent.

use super::{tar, vmdk, Container, Ends, Reader, Src, Unpacked};
use crate::error::Result;

pub(super) const READER: Reader = Reader {
    kind: Container::Ova,
    name: "OVA",
    detect: |e: &Ends<'_>| e.head.len() >= 263 && e.head.get(257..262) == Some(&b"ustar"[..]),
    open: |src, out| {
        let (offset, size) = vmdk_member(src)?;
        vmdk::extent(src, offset, size, out).map(Unpacked::Out)
    },
};

/// Offset and size of the first `.vmdk` member of an OVA (a tar).
fn vmdk_member(src: &Src<'_>) -> Result<(u64, u64)> {
    let mut pos = 0;
    while pos + 512 <= src.len {
        let h = src.read(pos, 512, "tar header")?;
        if h.iter().all(|&b| b == 0) {
            break;
        }
        let size = tar::number(&h[124..136]).ok_or_else(|| src.corrupt("tar member size"))?;
        let name_len = h[..100].iter().position(|&b| b == 0).unwrap_or(100);
        if h[..name_len].ends_with(b".vmdk") && matches!(h[156], 0 | b'0') {
            return Ok((pos + 512, size));
        }
        pos = pos
            .checked_add(512 + size.next_multiple_of(512))
            .ok_or_else(|| src.corrupt("tar member size"))?;
    }
    Err(src.unsupported("a tar without a .vmdk member (an OVA holds one)"))
}
