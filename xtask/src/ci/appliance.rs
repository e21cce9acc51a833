//! ci-boot's appliance steps (issue 26): the dm-verity store disk boots, and with one store
//! byte flipped it must not.

use super::Run;
use crate::boot::{self, Disk, Format};
use crate::fixture::FixtureInfo;
use crate::util::{self, cmd};
use anyhow::{bail, Result};
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

/// Issue 26: the appliance (dm-verity store) boots, the initrd mapping the store from
/// `usrhash=` and reading every block through dm-verity; with one byte of the store partition
/// flipped (at its middle, from the manifest's `verity.data`), the kernel refuses the block.
pub(super) fn appliance(run: &mut Run, info: &FixtureInfo) {
    let Some((img, (offset, size))) =
        run.step("imgbuild appliance image (dm-verity store)", || {
            let img = boot::imgbuild_image(Format::Appliance)?;
            let (offset, size, root) = verity_data(&img)?;
            Ok(((img, (offset, size)), format!("root hash {root}")))
        })
    else {
        return;
    };
    run.boot(
        "boot imgbuild appliance (virtio, verity store)",
        Format::Appliance,
        &img,
        Disk::Virtio,
        info,
    );
    // The same with a Unified Kernel Image: the ESP has no type #1 entry, so the kernel and
    // its usrhash= come from EFI/Linux/nixos.efi (.linux, .initrd, .cmdline).
    if let Some(uki) = run.step("imgbuild appliance-uki image (UKI in EFI/Linux)", || {
        let img = boot::imgbuild_image(Format::ApplianceUki)?;
        Ok((img, String::new()))
    }) {
        run.boot(
            "boot imgbuild appliance-uki (virtio, UKI + verity store)",
            Format::ApplianceUki,
            &uki,
            Disk::Virtio,
            info,
        );
    }
    let bad = run.out.join("appliance-flipped-store-byte.img");
    let made = run.step(
        "appliance with one store byte flipped (negative control)",
        || {
            util::run(cmd("cp").arg("--sparse=always").arg(&img).arg(&bad))?;
            let at = offset + size / 2;
            let mut f = fs::OpenOptions::new().read(true).write(true).open(&bad)?;
            let mut b = [0u8; 1];
            f.seek(SeekFrom::Start(at))?;
            f.read_exact(&mut b)?;
            b[0] ^= 0xff;
            f.seek(SeekFrom::Start(at))?;
            f.write_all(&b)?;
            Ok(((), format!("byte {at} flipped")))
        },
    );
    if made.is_some() {
        run.expect_fail(
            "negative control: a flipped store byte must FAIL (dm-verity)",
            Format::Appliance,
            &bad,
            "dm-verity refused a block",
        );
    }
}

/// The appliance manifest's store partition (offset, size) and root hash.
fn verity_data(img: &Path) -> Result<(u64, u64, String)> {
    let v = &boot::image_manifest(img)?["verity"];
    match (
        v["data"]["offset"].as_u64(),
        v["data"]["size"].as_u64(),
        v["root_hash"].as_str(),
    ) {
        (Some(o), Some(s), Some(r)) => Ok((o, s, r.to_string())),
        _ => bail!(
            "the manifest of {} has no verity.data offset/size and root_hash",
            img.display()
        ),
    }
}
