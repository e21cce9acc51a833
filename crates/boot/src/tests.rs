//! Golden texts derived by hand from the nixpkgs sources named in each test, for a fixed entry.

use super::*;

pub(crate) const TOPLEVEL: &str =
    "/nix/store/9xv4a3q1nl0p6i7m5k2c8b3d1f0g2h4j-nixos-system-nixos-25.05.20250601.abcdef0";

pub(crate) fn x86_entry() -> BootEntry {
    BootEntry {
        toplevel: TOPLEVEL.to_owned(),
        init: format!("{TOPLEVEL}/init"),
        kernel: "/nix/store/1k2l3m4n5p6q7r8s9t0v1w2x3y4z5a6b-linux-6.12.31/bzImage".to_owned(),
        initrd: Some(
            "/nix/store/2b3c4d5f6g7h8i9j0k1l2m3n4p5q6r7s-initrd-linux-6.12.31/initrd".to_owned(),
        ),
        kernel_params: vec![
            "console=ttyS0".to_owned(),
            "loglevel=4".to_owned(),
            "lsm=landlock,yama,bpf".to_owned(),
        ],
        label: "NixOS Warbler 25.05.20250601.abcdef0 (Linux 6.12.31)".to_owned(),
        system: "x86_64-linux".to_owned(),
        dtbs: None,
        devicetree: None,
    }
}

fn aarch64_entry() -> BootEntry {
    BootEntry {
        toplevel: TOPLEVEL.to_owned(),
        init: format!("{TOPLEVEL}/init"),
        kernel: "/nix/store/3c4d5f6g7h8i9j0k1l2m3n4p5q6r7s8t-linux-6.12.31/Image".to_owned(),
        initrd: Some(
            "/nix/store/4d5f6g7h8i9j0k1l2m3n4p5q6r7s8t9v-initrd-linux-6.12.31/initrd".to_owned(),
        ),
        kernel_params: vec![
            "console=ttyS0,115200n8".to_owned(),
            "console=ttyAMA0,115200n8".to_owned(),
            "console=tty0".to_owned(),
            "loglevel=7".to_owned(),
        ],
        label: "NixOS Warbler 25.05.20250601.abcdef0 (Linux 6.12.31)".to_owned(),
        system: "aarch64-linux".to_owned(),
        dtbs: Some("/nix/store/3c4d5f6g7h8i9j0k1l2m3n4p5q6r7s8t-linux-6.12.31/dtbs".to_owned()),
        devicetree: None,
    }
}

const SD_EFI: &str =
    "/nix/store/5f6g7h8i9j0k1l2m3n4p5q6r7s8t9v0w-systemd-257.5/lib/systemd/boot/efi/systemd-bootx64.efi";

pub(crate) fn text(files: &[BootFile], path: &str) -> String {
    let f = files
        .iter()
        .find(|f| f.path == path)
        .unwrap_or_else(|| panic!("no {path} in {files:#?}"));
    match &f.content {
        Content::Text(t) => String::from_utf8(t.clone()).unwrap(),
        other => panic!("{path} is {other:?}"),
    }
}

fn listing(files: &[BootFile]) -> Vec<(String, String)> {
    files
        .iter()
        .map(|f| {
            let what = match &f.content {
                Content::Dir => "dir".to_owned(),
                Content::Text(_) => "text".to_owned(),
                Content::StoreFile(p) => format!("file {}", p.display()),
                Content::StoreTree(p) => format!("tree {}", p.display()),
            };
            (f.path.clone(), what)
        })
        .collect()
}

// nixpkgs nixos/modules/system/boot/loader/systemd-boot/systemd-boot-builder.py
// (write_loader_conf, BOOT_ENTRY, write_entry, copy_from_file) + systemd-boot.nix defaults;
// systemd src/bootctl/bootctl-install.c (directories, entries.srel, EFI/BOOT copy).
#[test]
fn systemd_boot_golden() {
    let files = systemd_boot_esp(
        &x86_entry(),
        SD_EFI.to_owned(),
        &SdBootOptions {
            build_date: "2025-06-01".to_owned(),
            ..SdBootOptions::default()
        },
    )
    .unwrap();

    let k = "1k2l3m4n5p6q7r8s9t0v1w2x3y4z5a6b-linux-6.12.31-bzImage.efi";
    let i = "2b3c4d5f6g7h8i9j0k1l2m3n4p5q6r7s-initrd-linux-6.12.31-initrd.efi";
    let expected: Vec<(String, String)> = [
        ("EFI", "dir".to_owned()),
        ("EFI/BOOT", "dir".to_owned()),
        ("EFI/BOOT/BOOTX64.EFI", format!("file {SD_EFI}")),
        ("EFI/Linux", "dir".to_owned()),
        ("EFI/nixos", "dir".to_owned()),
        ("EFI/nixos/.extra-files", "dir".to_owned()),
        (
            &format!("EFI/nixos/{k}"),
            "file /nix/store/1k2l3m4n5p6q7r8s9t0v1w2x3y4z5a6b-linux-6.12.31/bzImage".to_owned(),
        ),
        (
            &format!("EFI/nixos/{i}"),
            "file /nix/store/2b3c4d5f6g7h8i9j0k1l2m3n4p5q6r7s-initrd-linux-6.12.31/initrd"
                .to_owned(),
        ),
        ("EFI/systemd", "dir".to_owned()),
        ("EFI/systemd/systemd-bootx64.efi", format!("file {SD_EFI}")),
        ("loader", "dir".to_owned()),
        ("loader/entries", "dir".to_owned()),
        ("loader/entries.srel", "text".to_owned()),
        ("loader/entries/nixos-generation-1.conf", "text".to_owned()),
        ("loader/keys", "dir".to_owned()),
        ("loader/loader.conf", "text".to_owned()),
    ]
    .into_iter()
    .map(|(p, w)| (p.to_owned(), w))
    .collect();
    assert_eq!(listing(&files), expected);

    assert_eq!(
        text(&files, "loader/loader.conf"),
        "timeout 5\n\
         default nixos-generation-1.conf\n\
         console-mode keep\n"
    );
    assert_eq!(
        text(&files, "loader/entries/nixos-generation-1.conf"),
        format!(
            "title NixOS\n\
             sort-key nixos\n\
             version Generation 1 NixOS Warbler 25.05.20250601.abcdef0 (Linux 6.12.31), built on 2025-06-01\n\
             linux /EFI/nixos/{k}\n\
             initrd /EFI/nixos/{i}\n\
             options init={TOPLEVEL}/init console=ttyS0 loglevel=4 lsm=landlock,yama,bpf\n"
        )
    );
    assert_eq!(text(&files, "loader/entries.srel"), "type1\n");
}

#[test]
fn systemd_boot_options_change_loader_conf_and_entry() {
    let mut entry = aarch64_entry();
    entry.kernel_params.clear();
    entry.devicetree = Some(
        "/nix/store/6g7h8i9j0k1l2m3n4p5q6r7s8t9v0w1x-device-tree/broadcom/bcm2711-rpi-4-b.dtb"
            .to_owned(),
    );
    let opts = SdBootOptions {
        timeout: None,
        console_mode: "max".to_owned(),
        editor: false,
        reboot_for_bitlocker: true,
        generation: 7,
        build_date: "2026-01-31".to_owned(),
        sort_key: Some("a_first".to_owned()),
        distro_name: "MyOS".to_owned(),
        boot_counting: None,
        facts: Release::new(25, 11).facts().0,
    };
    let efi = "/nix/store/x-systemd/lib/systemd/boot/efi/systemd-bootaa64.efi".to_owned();
    let files = systemd_boot_esp(&entry, efi.clone(), &opts).unwrap();
    assert_eq!(
        text(&files, "loader/loader.conf"),
        "timeout menu-force\n\
         default nixos-generation-7.conf\n\
         editor 0\n\
         reboot-for-bitlocker yes\n\
         console-mode max\n"
    );
    let dt = "6g7h8i9j0k1l2m3n4p5q6r7s8t9v0w1x-device-tree-bcm2711-rpi-4-b.dtb.efi";
    assert_eq!(
        text(&files, "loader/entries/nixos-generation-7.conf"),
        format!(
            "title MyOS\n\
             sort-key a_first\n\
             version Generation 7 NixOS Warbler 25.05.20250601.abcdef0 (Linux 6.12.31), built on 2026-01-31\n\
             linux /EFI/nixos/3c4d5f6g7h8i9j0k1l2m3n4p5q6r7s8t-linux-6.12.31-Image.efi\n\
             initrd /EFI/nixos/4d5f6g7h8i9j0k1l2m3n4p5q6r7s8t9v-initrd-linux-6.12.31-initrd.efi\n\
             options init={TOPLEVEL}/init \n\
             devicetree /EFI/nixos/{dt}\n"
        ),
        "no parameters: the builder's `init=%s ` keeps its trailing space"
    );
    let l = listing(&files);
    assert!(l.contains(&("EFI/BOOT/BOOTAA64.EFI".to_owned(), format!("file {efi}"))));
    assert!(l.contains(&(
        "EFI/systemd/systemd-bootaa64.efi".to_owned(),
        format!("file {efi}")
    )));
    assert!(l.contains(&(
        format!("EFI/nixos/{dt}"),
        format!("file {}", entry.devicetree.as_deref().unwrap())
    )));
}

#[test]
fn systemd_boot_file_names() {
    // File inside a store directory: <hash>-<name>-<file>.efi.
    assert_eq!(
        systemd_boot_file_name("kernel", "/nix/store/abc-linux-6.1/bzImage").unwrap(),
        "abc-linux-6.1-bzImage.efi"
    );
    assert_eq!(
        systemd_boot_file_name("initrd", "/nix/store/def-initrd-linux-6.1/initrd").unwrap(),
        "def-initrd-linux-6.1-initrd.efi"
    );
    // The store path itself is the file: <hash>-<name>.efi.
    assert_eq!(
        systemd_boot_file_name("initrd", "/nix/store/ghi-initrd-secrets").unwrap(),
        "ghi-initrd-secrets.efi"
    );
    // Deeper files: only the last component (Path.name) is appended.
    assert_eq!(
        systemd_boot_file_name("devicetree", "/nix/store/jkl-dt/a/b/c.dtb").unwrap(),
        "jkl-dt-c.dtb.efi"
    );
    for bad in [
        "/nix/store",
        "/nix/store/",
        "/nix/storex/a",
        "relative/x",
        "/nix/store/a/",
    ] {
        assert!(
            matches!(
                systemd_boot_file_name("kernel", bad),
                Err(Error::NotInStore { what: "kernel", .. })
            ),
            "{bad}"
        );
    }
}

#[test]
fn systemd_boot_errors() {
    let mut e = x86_entry();
    e.system = "mips64el-linux".to_owned();
    assert!(matches!(
        systemd_boot_esp(&e, SD_EFI.to_owned(), &SdBootOptions::default()),
        Err(Error::UnknownEfiArch { .. })
    ));
    let mut e = x86_entry();
    e.initrd = None;
    assert!(matches!(
        systemd_boot_esp(&e, SD_EFI.to_owned(), &SdBootOptions::default()),
        Err(Error::MissingInitrd { .. })
    ));
    for date in ["2025-6-01", "20250601xx", "2025/06/01", ""] {
        let opts = SdBootOptions {
            build_date: date.to_owned(),
            ..SdBootOptions::default()
        };
        assert!(
            matches!(
                systemd_boot_esp(&x86_entry(), SD_EFI.to_owned(), &opts),
                Err(Error::BadDate { .. })
            ),
            "{date}"
        );
    }
    let mut e = x86_entry();
    e.kernel_params.push("evil\ntitle x".to_owned());
    assert!(matches!(
        systemd_boot_esp(&e, SD_EFI.to_owned(), &SdBootOptions::default()),
        Err(Error::BadText { .. })
    ));
    assert_eq!(efi_arch("i686-linux").unwrap(), "ia32");
    assert_eq!(efi_arch("riscv64-linux").unwrap(), "riscv64");
}

// nixpkgs nixos/modules/system/boot/loader/generic-extlinux-compatible/extlinux-conf-builder.sh
// at NixOS/nixpkgs 8ee7ca3fd50f4d0e3124dbfb1ee736e8a74e0961 (heredoc header, `TIMEOUT`, then
// `MENU TITLE` if the menu is on, then addEntry's echo lines), as run by sd-image-aarch64.nix:
// `<populateCmd> -c <toplevel> -d ./files/boot` with `-g 20 -t 5`.
#[test]
fn extlinux_golden() {
    let files = extlinux_boot(&aarch64_entry(), &ExtlinuxOptions::default()).unwrap();
    let k = "3c4d5f6g7h8i9j0k1l2m3n4p5q6r7s8t-linux-6.12.31-Image";
    let i = "4d5f6g7h8i9j0k1l2m3n4p5q6r7s8t9v-initrd-linux-6.12.31-initrd";
    let d = "3c4d5f6g7h8i9j0k1l2m3n4p5q6r7s8t-linux-6.12.31-dtbs";
    let e = aarch64_entry();
    assert_eq!(
        listing(&files),
        vec![
            ("extlinux".to_owned(), "dir".to_owned()),
            ("extlinux/extlinux.conf".to_owned(), "text".to_owned()),
            ("nixos".to_owned(), "dir".to_owned()),
            (format!("nixos/{k}"), format!("file {}", e.kernel)),
            (
                format!("nixos/{d}"),
                format!("tree {}", e.dtbs.as_deref().unwrap())
            ),
            (
                format!("nixos/{i}"),
                format!("file {}", e.initrd.as_deref().unwrap())
            ),
        ]
    );
    assert_eq!(
        text(&files, "extlinux/extlinux.conf"),
        format!(
            "# Generated file, all changes will be lost on nixos-rebuild!\n\
             \n\
             # Change this to e.g. nixos-42 to temporarily boot to an older configuration.\n\
             DEFAULT nixos-default\n\
             \n\
             TIMEOUT 50\n\
             MENU TITLE ------------------------------------------------------------\n\
             \n\
             LABEL nixos-default\n  \
             MENU LABEL NixOS - Default\n  \
             LINUX ../nixos/{k}\n  \
             INITRD ../nixos/{i}\n  \
             APPEND init={TOPLEVEL}/init console=ttyS0,115200n8 console=ttyAMA0,115200n8 console=tty0 loglevel=7\n  \
             FDTDIR ../nixos/{d}\n"
        )
    );
}

#[test]
fn extlinux_timeouts_and_device_tree_rules() {
    let e = aarch64_entry();
    let conf =
        |opts: ExtlinuxOptions| text(&extlinux_boot(&e, &opts).unwrap(), "extlinux/extlinux.conf");
    let header = "# Generated file, all changes will be lost on nixos-rebuild!\n\n\
                  # Change this to e.g. nixos-42 to temporarily boot to an older configuration.\n\
                  DEFAULT nixos-default\n\n";
    let menu = "MENU TITLE ------------------------------------------------------------\n";

    // 0: menu disabled, TIMEOUT 1, no MENU TITLE.
    let c = conf(ExtlinuxOptions {
        timeout: Some(0),
        ..ExtlinuxOptions::default()
    });
    assert!(
        c.starts_with(&format!("{header}TIMEOUT 1\n\nLABEL nixos-default\n")),
        "{c}"
    );
    // null (-1) and negative: wait forever (TIMEOUT 0) with the menu.
    for t in [None, Some(-1), Some(-7)] {
        let c = conf(ExtlinuxOptions {
            timeout: t,
            ..ExtlinuxOptions::default()
        });
        assert!(
            c.starts_with(&format!("{header}TIMEOUT 0\n{menu}\n")),
            "{t:?}: {c}"
        );
    }
    let c = conf(ExtlinuxOptions {
        timeout: Some(12),
        ..ExtlinuxOptions::default()
    });
    assert!(c.contains("\nTIMEOUT 120\n"), "{c}");

    // -n: FDT with the name; -r: no device tree line at all (dtbs still copied).
    let c = conf(ExtlinuxOptions {
        dtb_name: Some("broadcom/bcm2711-rpi-4-b.dtb".to_owned()),
        ..ExtlinuxOptions::default()
    });
    assert!(c.ends_with(
        "  FDT ../nixos/3c4d5f6g7h8i9j0k1l2m3n4p5q6r7s8t-linux-6.12.31-dtbs/broadcom/bcm2711-rpi-4-b.dtb\n"
    ), "{c}");
    let opts = ExtlinuxOptions {
        use_generation_device_tree: false,
        ..ExtlinuxOptions::default()
    };
    let files = extlinux_boot(&e, &opts).unwrap();
    let c = text(&files, "extlinux/extlinux.conf");
    assert!(c.ends_with("loglevel=7\n"), "{c}");
    assert!(files
        .iter()
        .any(|f| matches!(&f.content, Content::StoreTree(_))));

    // No dtbs: no FDTDIR line; an explicit name is an error (the builder bails out).
    let mut no_dtbs = e.clone();
    no_dtbs.dtbs = None;
    let files = extlinux_boot(&no_dtbs, &ExtlinuxOptions::default()).unwrap();
    assert!(text(&files, "extlinux/extlinux.conf").ends_with("loglevel=7\n"));
    assert_eq!(files.len(), 5);
    assert!(matches!(
        extlinux_boot(
            &no_dtbs,
            &ExtlinuxOptions {
                dtb_name: Some("x.dtb".to_owned()),
                ..ExtlinuxOptions::default()
            }
        ),
        Err(Error::DtbNameWithoutDtbs { .. })
    ));

    // No kernel parameters: "APPEND init=<toplevel>/init " keeps the space from the builder.
    let mut bare = e.clone();
    bare.kernel_params.clear();
    bare.dtbs = None;
    let c = text(
        &extlinux_boot(&bare, &ExtlinuxOptions::default()).unwrap(),
        "extlinux/extlinux.conf",
    );
    assert!(
        c.ends_with(&format!("  APPEND init={TOPLEVEL}/init \n")),
        "{c}"
    );

    let mut no_initrd = e;
    no_initrd.initrd = None;
    assert!(matches!(
        extlinux_boot(&no_initrd, &ExtlinuxOptions::default()),
        Err(Error::MissingInitrd { .. })
    ));
}

#[test]
fn extlinux_clean_names() {
    assert_eq!(
        extlinux_clean_name("kernel", "/nix/store/abc-linux-6.1/Image").unwrap(),
        "abc-linux-6.1-Image"
    );
    assert_eq!(
        extlinux_clean_name("initrd", "/nix/store/def-initrd-linux-6.1/initrd").unwrap(),
        "def-initrd-linux-6.1-initrd"
    );
    assert_eq!(
        extlinux_clean_name("dtbs", "/nix/store/ghi-device-tree-overlays").unwrap(),
        "ghi-device-tree-overlays"
    );
    // Every '/' of a deeper path becomes '-' (unlike systemd-boot's last-component rule).
    assert_eq!(
        extlinux_clean_name("dtbs", "/nix/store/jkl-linux-6.1/lib/dtbs").unwrap(),
        "jkl-linux-6.1-lib-dtbs"
    );
    assert!(matches!(
        extlinux_clean_name("kernel", "/boot/Image"),
        Err(Error::NotInStore { .. })
    ));
}

/// Nix `''...''` string semantics for the test below: drop the first line break, strip the
/// smallest indentation of the non-empty lines, empty/whitespace-only lines become empty.
fn nix_indented_string(src: &str) -> String {
    let body = src.strip_prefix('\n').unwrap_or(src);
    let lines: Vec<&str> = body.split('\n').collect();
    let indent = lines
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start_matches(' ').len())
        .min()
        .unwrap_or(0);
    lines
        .iter()
        .map(|l| {
            if l.trim().is_empty() {
                ""
            } else {
                &l[indent..]
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

// The configTxt block of nixos/modules/installer/sd-card/sd-image-aarch64.nix as it appears
// in Swarsel/nixpkgs 4aa6836a648ca76c68866decf0c8965e36ec2a3b (newest seen), copied with its
// indentation; the closing `''` sits on its own line, so the text ends with "\n".
const SD_IMAGE_AARCH64_CONFIG_TXT_BLOCK: &str = r#"
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
        "#;

#[test]
fn rpi_config_txt_matches_nixpkgs() {
    let expected = nix_indented_string(SD_IMAGE_AARCH64_CONFIG_TXT_BLOCK);
    assert!(expected.ends_with("enable_uart=0\n"));
    assert_eq!(rpi_config_txt(), expected);
}
