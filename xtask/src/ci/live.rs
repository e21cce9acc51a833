//! ci-boot's live boots (issue 23): the fixture's `result-iso` as a hybrid ISO and its
//! `result-netboot` as a netboot directory, by imgbuild or, with `--baseline-only`, by the
//! conventional pipeline (xtask/scripts/baseline-{iso,netboot}.sh).
//! x86_64: the ISO as a CD and as a disk under OVMF and under SeaBIOS, netboot by direct
//! kernel boot; aarch64: the ISO as a CD under edk2, netboot. Negative control: a netboot
//! whose store image lacks a path the manifest lists must fail the initrd's sha256 check.

use std::path::Path;

use super::Run;
use crate::baseline;
use crate::boot::{self, Disk, Firmware, Format};
use crate::fixture::{Arch, FixtureInfo, Variant};

/// The boots of one ISO: (disk, firmware) pairs.
fn iso_boots(arch: Arch) -> &'static [(Disk, Firmware)] {
    match arch {
        Arch::X86_64 => &[
            (Disk::Cdrom, Firmware::Uefi),
            (Disk::Virtio, Firmware::Uefi),
            (Disk::Cdrom, Firmware::Bios),
            (Disk::Ide, Firmware::Bios),
        ],
        Arch::Aarch64 => &[(Disk::ScsiCd, Firmware::Uefi)],
    }
}

fn formats(arch: Arch) -> (Format, Format) {
    match arch {
        Arch::X86_64 => (Format::Iso, Format::Netboot),
        Arch::Aarch64 => (Format::IsoAarch64, Format::NetbootAarch64),
    }
}

impl Run {
    /// Boots a live image of `format` every way the architecture has.
    fn boot_live(&mut self, who: &str, format: Format, image: &Path, info: &FixtureInfo) {
        let ways: &[(Disk, Firmware)] = if format.variant() == Variant::Iso {
            iso_boots(format.arch())
        } else {
            &[(Disk::Virtio, Firmware::Uefi)]
        };
        for &(disk, firmware) in ways {
            let name = format!("boot {who} {}", boot::how(format, disk, firmware));
            self.boot_on(&name, (format, firmware, disk), image, info, false);
        }
    }

    /// The live steps of one architecture's fixture `fx`.
    pub(super) fn live(&mut self, arch: Arch, fx: &Path, imgbuild: bool) {
        let (iso, netboot) = formats(arch);
        let infos = self.step(&format!("live toplevels {}", arch.name()), || {
            let i = FixtureInfo::load_variant(fx, Variant::Iso)?;
            let n = FixtureInfo::load_variant(fx, Variant::Netboot)?;
            let note = format!(
                "iso {} paths, netboot {} paths",
                i.store_paths, n.store_paths
            );
            Ok(((i, n), note))
        });
        let Some((iso_info, net_info)) = infos else {
            return;
        };
        // Every way of booting costs 15-60 s under TCG: the imgbuild images get them all,
        // the hand-made baseline only with --baseline-only (it proved the harness first).
        let out = self.out.clone();
        for (format, info, file) in [
            (iso, &iso_info, format!("baseline-{}.iso", iso.name())),
            (netboot, &net_info, format!("baseline-{}", netboot.name())),
        ] {
            let built = if imgbuild {
                self.step(&format!("imgbuild {} image", format.name()), || {
                    Ok((boot::imgbuild_image(format)?, String::new()))
                })
                .map(|img| ("imgbuild", img))
            } else {
                let img = out.join(file);
                self.step(&format!("baseline {} image", format.name()), || {
                    let secs = baseline::build(format, fx, &img, None)?;
                    Ok(((), format!("{secs:.1} s")))
                })
                .map(|()| ("baseline", img))
            };
            if let Some((who, img)) = built {
                self.boot_live(who, format, &img, info);
            }
        }
        if arch == Arch::X86_64 {
            self.live_negative(fx, netboot);
        }
    }

    /// A netboot whose store image lacks `imgbuild-edge-cases` (which the toplevel's
    /// manifest lists) must fail the initrd's store check, naming the files.
    fn live_negative(&mut self, fx: &Path, format: Format) {
        let img = self.out.join("baseline-netboot-without-edge-cases");
        let built = self.step("netboot image without imgbuild-edge-cases", || {
            let env = [("BASELINE_OMIT", "-imgbuild-edge-cases")];
            let secs = baseline::build_with_env(format, fx, &img, &env)?;
            Ok(((), format!("{secs:.1} s")))
        });
        if built.is_some() {
            self.expect_fail(
                "negative control: a store path missing from the squashfs must FAIL",
                format,
                &img,
                "IMGBUILD-BOOT-FAIL store files differ",
            );
        }
    }
}
