//! Raspberry Pi firmware `config.txt`.

/// `config.txt` as nixpkgs' `nixos/modules/installer/sd-card/sd-image-aarch64.nix` writes it
/// (newest version seen, Swarsel/nixpkgs 4aa6836a648ca76c68866decf0c8965e36ec2a3b, ~2026:
/// single `u-boot.bin` for all boards, `[pi3] core_freq=250`, `[cm5]`, `[pi5] enable_uart=0`).
/// The Nix `''...''` string with its common indentation stripped; ends with a newline.
///
/// The firmware files it refers to (`u-boot.bin`, `armstub8-gic.bin`, `start*.elf`, dtbs) are
/// not listed here: the caller copies the Nix-built firmware directory.
pub fn rpi_config_txt() -> &'static str {
    CONFIG_TXT
}

const CONFIG_TXT: &str = "\
kernel=u-boot.bin

# Boot in 64-bit mode.
arm_64bit=1

# U-Boot needs this to work, regardless of whether UART is actually used or not.
# Look in arch/arm/mach-bcm283x/Kconfig in the U-Boot tree to see if this is still
# a requirement in the future.
enable_uart=1

# Prevent the firmware from smashing the framebuffer setup done by the mainline kernel
# when attempting to show low-voltage or overtemperature warnings.
avoid_warnings=1

[pi3]
# Otherwise the serial output will be garbled.
core_freq=250

[pi4]
enable_gic=1
armstub=armstub8-gic.bin

# Otherwise the resolution will be weird in most cases, compared to
# what the pi3 firmware does by default.
disable_overscan=1

# Supported in newer board revisions
arm_boost=1

[cm4]
# Enable host mode on the 2711 built-in XHCI USB controller.
# This line should be removed if the legacy DWC2 controller is required
# (e.g. for USB device mode) or if USB support is not required.
otg_mode=1

[cm5]
dtoverlay=dwc2,dr_mode=host

[pi5]
# On some revisions of the RPi5, U-Boot interprets picks up
# ghost inputs from the uart, interrupting the boot process.
# https://bugzilla.opensuse.org/show_bug.cgi?id=1251192
enable_uart=0
";

/// A file the Raspberry Pi firmware will look for on the firmware partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NeededFile {
    /// The file's name on the firmware partition.
    pub name: String,
    /// Why: the `config.txt` setting or the board that needs it.
    pub why: String,
}

/// Boot files each board the config addresses loads: its firmware (`start*.elf`,
/// `fixup*.dat`, the Pi 3's `bootcode.bin`; the Pi 5 keeps its firmware in EEPROM) and the
/// device tree the firmware picks for the main models.
const BOARDS: &[(&str, &str, &[&str])] = &[
    (
        "pi3",
        "Raspberry Pi 3",
        &[
            "bootcode.bin",
            "start.elf",
            "fixup.dat",
            "bcm2710-rpi-3-b.dtb",
            "bcm2710-rpi-3-b-plus.dtb",
        ],
    ),
    (
        "pi02",
        "Raspberry Pi Zero 2 W",
        &[
            "bootcode.bin",
            "start.elf",
            "fixup.dat",
            "bcm2710-rpi-zero-2-w.dtb",
        ],
    ),
    (
        "pi4",
        "Raspberry Pi 4",
        &[
            "start4.elf",
            "fixup4.dat",
            "bcm2711-rpi-4-b.dtb",
            "bcm2711-rpi-400.dtb",
        ],
    ),
    (
        "cm4",
        "Compute Module 4",
        &["start4.elf", "fixup4.dat", "bcm2711-rpi-cm4.dtb"],
    ),
    ("pi5", "Raspberry Pi 5", &["bcm2712-rpi-5-b.dtb"]),
];

/// Settings whose value names a file on the firmware partition.
const FILE_SETTINGS: &[&str] = &[
    "kernel",
    "armstub",
    "device_tree",
    "start_file",
    "fixup_file",
    "ramfsfile",
];

/// The files `config_txt` makes the firmware load, for every board it has a section for
/// (`[pi3]`, `[pi4]`, `[pi5]`, `[pi02]`, `[cm4]`) and for `[all]`: the files its settings name
/// (`kernel=`, `armstub=`, `device_tree=`, `initramfs`, ...) and each such board's own
/// firmware and device tree. Sorted by name, each once. Overlays (`dtoverlay=`) are not
/// listed: the firmware skips a missing overlay.
pub fn needed_files(config_txt: &str) -> Vec<NeededFile> {
    let mut out: Vec<NeededFile> = Vec::new();
    let mut push = |name: &str, why: String| {
        if !name.is_empty() && !out.iter().any(|n| n.name.eq_ignore_ascii_case(name)) {
            out.push(NeededFile {
                name: name.to_string(),
                why,
            });
        }
    };
    let mut section = "all".to_string();
    for raw in config_txt.lines() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = s.trim().to_ascii_lowercase();
            if let Some((_, board, files)) = BOARDS.iter().find(|b| b.0 == section) {
                for f in *files {
                    push(f, format!("[{section}]: the {board} loads it"));
                }
            }
            continue;
        }
        // Settings under filters this list does not know (gpio, edid, tryboot...) apply only
        // sometimes; a board section or [all] applies whenever that board boots.
        if section != "all" && !BOARDS.iter().any(|b| b.0 == section) {
            continue;
        }
        if let Some(rest) = line.strip_prefix("initramfs ") {
            let file = rest.split_whitespace().next().unwrap_or("");
            push(file, format!("[{section}] initramfs {file}"));
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            let (k, v) = (k.trim(), v.trim());
            if FILE_SETTINGS.contains(&k) {
                push(v, format!("[{section}] {k}={v}"));
            }
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

#[cfg(test)]
mod needed_tests {
    use super::*;

    #[test]
    fn nixpkgs_config_needs_uboot_armstub_and_the_boards_files() {
        let n = needed_files(rpi_config_txt());
        let names: Vec<&str> = n.iter().map(|f| f.name.as_str()).collect();
        for want in [
            "u-boot.bin",
            "armstub8-gic.bin",
            "bootcode.bin",
            "start.elf",
            "start4.elf",
            "fixup4.dat",
            "bcm2710-rpi-3-b.dtb",
            "bcm2711-rpi-4-b.dtb",
            "bcm2711-rpi-cm4.dtb",
            "bcm2712-rpi-5-b.dtb",
        ] {
            assert!(names.contains(&want), "{want} in {names:?}");
        }
        let uboot = n.iter().find(|f| f.name == "u-boot.bin").unwrap();
        assert_eq!(uboot.why, "[all] kernel=u-boot.bin");
        let stub = n.iter().find(|f| f.name == "armstub8-gic.bin").unwrap();
        assert_eq!(stub.why, "[pi4] armstub=armstub8-gic.bin");
    }

    #[test]
    fn per_board_kernels_and_unknown_filters() {
        let n = needed_files(
            "[pi3]\nkernel=u-boot-rpi3.bin\n[pi4]\nkernel=u-boot-rpi4.bin # comment\n\
             [gpio4=1]\nkernel=other.bin\n[all]\ninitramfs initrd.img followkernel\n",
        );
        let names: Vec<&str> = n.iter().map(|f| f.name.as_str()).collect();
        assert!(names.contains(&"u-boot-rpi3.bin"));
        assert!(names.contains(&"u-boot-rpi4.bin"));
        assert!(names.contains(&"initrd.img"));
        assert!(!names.contains(&"other.bin"), "{names:?}");
        assert!(needed_files("arm_64bit=1\n").is_empty());
    }
}
