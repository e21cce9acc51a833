//! The netboot initrd as a map: the closure's initrd unchanged, zeros up to a multiple of 4,
//! then an uncompressed newc cpio archive holding the store image as `nix-store.squashfs`.
//!
//! Linux unpacks an initramfs made of several archives one after the other, each compressed
//! or not; between them it skips zeros, and it takes an uncompressed archive only where its
//! magic starts at a multiple of 4 bytes from the initrd's start, hence the padding. nixpkgs'
//! `makeInitrdNG { prepend = [ initrd ]; }` appends its archive the same way, compressed;
//! this one is not, so the store image's bytes are the file's, read by range, never copied
//! or recompressed.

use std::sync::Arc;

use imgbuild_cpio as cpio;
use imgbuild_diskmap::{Map, MapBuilder, SourceFile};

use super::STORE_IMAGE;
use crate::Result;

/// The store image's mode in the archive: a store file's (read-only).
const STORE_IMAGE_MODE: u32 = 0o444;

/// The initrd: `closure_initrd`, padding, the archive holding `store_image` with time `time`
/// (clamped to newc's 32 bits).
pub(crate) fn map(
    closure_initrd: &Arc<SourceFile>,
    store_image: &Arc<SourceFile>,
    time: i64,
) -> Result<Map> {
    let mtime = u32::try_from(time.max(0)).unwrap_or(u32::MAX);
    let member = cpio::Member::file(1, STORE_IMAGE_MODE, mtime, store_image.size);
    let header = cpio::header(STORE_IMAGE, &member)?;
    let trailer = cpio::trailer();
    let start = closure_initrd.size.next_multiple_of(4);
    let data = start + header.len() as u64;
    let end = data + store_image.size + cpio::padding(store_image.size);
    let len = end + trailer.len() as u64;
    let mut b = MapBuilder::new("netboot initrd", len);
    b.file(0, closure_initrd, 0, closure_initrd.size)?;
    b.zeros(closure_initrd.size, start - closure_initrd.size)?;
    b.bytes(start, header)?;
    b.file(data, store_image, 0, store_image.size)?;
    b.zeros(data + store_image.size, cpio::padding(store_image.size))?;
    b.bytes(end, trailer)?;
    Ok(b.finish()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use imgbuild_testutil::{noise, run};
    use std::process::Command;

    /// The map read back: the closure's initrd first, then an archive that GNU cpio and
    /// bsdtar list and extract, the store image's bytes unchanged.
    #[test]
    fn initrd_is_the_closures_then_a_cpio() {
        let dir = tempfile::tempdir().unwrap();
        let first = dir.path().join("initrd");
        let image = dir.path().join("image");
        // An odd length: the archive must start 4-aligned after zeros.
        let first_bytes = noise(1, 4097);
        let image_bytes = noise(2, 70_001);
        std::fs::write(&first, &first_bytes).unwrap();
        std::fs::write(&image, &image_bytes).unwrap();
        let m = map(
            &SourceFile::new(&first, 4097),
            &SourceFile::new(&image, 70_001),
            1_700_000_000,
        )
        .unwrap();
        let out = dir.path().join("netboot-initrd");
        let f = std::fs::File::create(&out).unwrap();
        f.set_len(m.len()).unwrap();
        imgbuild_diskmap::write_file(&m, &f).unwrap();
        let bytes = std::fs::read(&out).unwrap();
        assert_eq!(bytes.len() as u64, m.len());
        assert_eq!(&bytes[..4097], &first_bytes[..]);
        assert_eq!(&bytes[4097..4100], &[0, 0, 0]);
        assert_eq!(&bytes[4100..4106], b"070701");
        let archive = dir.path().join("archive.cpio");
        std::fs::write(&archive, &bytes[4100..]).unwrap();
        let listing = run(Command::new("bsdtar").arg("-tvf").arg(&archive));
        assert_eq!(listing.lines().count(), 1, "{listing}");
        assert!(
            listing.starts_with("-r--r--r--") && listing.contains(" 70001 "),
            "{listing}"
        );
        assert!(listing.trim_end().ends_with(" nix-store.squashfs"));
        let x = dir.path().join("x");
        std::fs::create_dir(&x).unwrap();
        run(Command::new("sh")
            .arg("-c")
            .arg("cpio -i --quiet < ../archive.cpio")
            .current_dir(&x));
        assert_eq!(
            std::fs::read(x.join("nix-store.squashfs")).unwrap(),
            image_bytes
        );
    }

    #[test]
    fn aligned_initrd_needs_no_padding() {
        let dir = tempfile::tempdir().unwrap();
        let first = dir.path().join("initrd");
        std::fs::write(&first, [7u8; 8]).unwrap();
        let image = dir.path().join("image");
        std::fs::write(&image, [1u8; 4]).unwrap();
        let m = map(&SourceFile::new(&first, 8), &SourceFile::new(&image, 4), 0).unwrap();
        // 8 + header (110 + 19 name bytes = 129, padded to 132) + 4 + trailer 124.
        assert_eq!(m.len(), 8 + 132 + 4 + 124);
    }
}
