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
