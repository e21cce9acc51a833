//! Every known release x boot counting {off, on} x devicetree {no, yes}: the exact entry name,
//! entry text and loader.conf, written down by hand from each release's builder (the facts
//! in `release.rs`). The two content hashes were computed outside Rust:
//! `printf 'title NixOS\nversion ...\nsort-key nixos' | sha256sum`.

use super::*;
use crate::tests::{text, x86_entry, TOPLEVEL};
const LABEL: &str = "NixOS Zokor 26.11.20261201.abcdef0 (Linux 6.18.2)";
const KERNEL: &str = "1k2l3m4n5p6q7r8s9t0v1w2x3y4z5a6b-linux-6.12.31-bzImage.efi";
const INITRD: &str = "2b3c4d5f6g7h8i9j0k1l2m3n4p5q6r7s-initrd-linux-6.12.31-initrd.efi";
const DTB: &str =
    "/nix/store/6g7h8i9j0k1l2m3n4p5q6r7s8t9v0w1x-device-tree/broadcom/bcm2711-rpi-4-b.dtb";
/// The device tree's copy by the pathlib builders (store directory + file name) ...
const DTB_EFI: &str = "6g7h8i9j0k1l2m3n4p5q6r7s8t9v0w1x-device-tree-bcm2711-rpi-4-b.dtb.efi";
/// ... and by 24.05's (parent directory + file name).
const DTB_EFI_2405: &str = "broadcom-bcm2711-rpi-4-b.dtb.efi";
const HASH: &str = "e8dc829a37312d9c3f49044070557f4dcab6547d0f1adb33d8c89a3d02ad5945";
const HASH_DTB: &str = "4b41bb4d227106e8205155647dcce30357a9345d61ada2851e9cd75d192723dd";

fn entry(devicetree: bool) -> BootEntry {
    BootEntry {
        label: LABEL.to_owned(),
        devicetree: devicetree.then(|| DTB.to_owned()),
        ..x86_entry()
    }
}

fn opts(release: Release, counting: Option<u32>) -> SdBootOptions {
    SdBootOptions {
        build_date: "2026-12-01".to_owned(),
        boot_counting: counting,
        facts: release.facts().0,
        ..SdBootOptions::default()
    }
}

/// (entry file name, entry text, loader.conf).
fn esp(release: Release, counting: Option<u32>, devicetree: bool) -> (String, String, String) {
    let files = systemd_boot_esp(
        &entry(devicetree),
        "/nix/store/5f6g7h8i9j0k1l2m3n4p5q6r7s8t9v0w-systemd/lib/systemd/boot/efi/systemd-bootx64.efi"
            .to_owned(),
        &opts(release, counting),
    )
    .unwrap();
    let entries: Vec<&BootFile> = files
        .iter()
        .filter(|f| f.path.starts_with("loader/entries/"))
        .collect();
    assert_eq!(entries.len(), 1, "{files:#?}");
    (
        entries[0].path["loader/entries/".len()..].to_owned(),
        text(&files, &entries[0].path),
        text(&files, "loader/loader.conf"),
    )
}

/// The entry text of the generation-named builders (24.05 to 26.05).
fn old_entry(dtb_efi: Option<&str>) -> String {
    let mut s = format!(
        "title NixOS\n\
         sort-key nixos\n\
         version Generation 1 {LABEL}, built on 2026-12-01\n\
         linux /EFI/nixos/{KERNEL}\n\
         initrd /EFI/nixos/{INITRD}\n\
         options init={TOPLEVEL}/init console=ttyS0 loglevel=4 lsm=landlock,yama,bpf\n"
    );
    if let Some(d) = dtb_efi {
        s.push_str(&format!("devicetree /EFI/nixos/{d}\n"));
    }
    s
}

const OLD_LOADER: &str = "timeout 5\ndefault nixos-generation-1.conf\nconsole-mode keep\n";

#[test]
fn generation_named_releases() {
    for (release, dtb_efi) in [
        (Release::new(24, 5), DTB_EFI_2405),
        (Release::new(24, 11), DTB_EFI),
        (Release::new(25, 5), DTB_EFI),
        (Release::new(25, 11), DTB_EFI),
        (Release::new(26, 5), DTB_EFI),
    ] {
        for devicetree in [false, true] {
            let (name, text, loader) = esp(release, None, devicetree);
            assert_eq!(name, "nixos-generation-1.conf", "{release}");
            assert_eq!(text, old_entry(devicetree.then_some(dtb_efi)), "{release}");
            assert_eq!(loader, OLD_LOADER, "{release}");
        }
        // No boot counting in these builders: asking for it is an error, not a silent skip.
        let err = systemd_boot_esp(&entry(false), "/nix/store/x-sd/b.efi".into(), &{
            opts(release, Some(3))
        })
        .unwrap_err();
        assert!(
            matches!(err, Error::NoBootCounting { tries: 3, .. }),
            "{release}: {err}"
        );
    }
}

fn new_entry(devicetree: bool) -> String {
    let dt = if devicetree {
        format!("\ndevicetree /EFI/nixos/{DTB_EFI}")
    } else {
        String::new()
    };
    format!(
        "title NixOS\n\
         version Generation 1 {LABEL}, built on 2026-12-01\n\
         linux /EFI/nixos/{KERNEL}\n\
         initrd /EFI/nixos/{INITRD}\n\
         options init={TOPLEVEL}/init console=ttyS0 loglevel=4 lsm=landlock,yama,bpf{dt}\n\
         sort-key nixos"
    )
}

#[test]
fn content_hash_release_2611() {
    let r = Release::new(26, 11);
    for (devicetree, hash) in [(false, HASH), (true, HASH_DTB)] {
        // Counting off: `nixos-<hash>.conf`, `default` names it.
        let (name, text, loader) = esp(r, None, devicetree);
        assert_eq!(name, format!("nixos-{hash}.conf"));
        assert_eq!(text, new_entry(devicetree), "no newline after sort-key");
        assert_eq!(
            loader,
            format!("timeout 5\ndefault nixos-{hash}.conf\nconsole-mode keep\n")
        );
        // Counting on: `+<tries>` in the file name only; the id in `preferred` has none.
        let (name, counted_text, loader) = esp(r, Some(3), devicetree);
        assert_eq!(name, format!("nixos-{hash}+3.conf"));
        assert_eq!(
            counted_text, text,
            "the counter is not part of the hashed text"
        );
        assert_eq!(
            loader,
            format!("timeout 5\npreferred nixos-{hash}.conf\ndefault nixos-*\nconsole-mode keep\n")
        );
    }
    let (name, _, _) = esp(r, Some(7), false);
    assert_eq!(name, format!("nixos-{HASH}+7.conf"));
}

#[test]
fn content_hash_details() {
    let r = Release::new(26, 11);
    // No kernel parameters: `" ".join([init])` leaves no trailing space (the old builders'
    // `"init=%s " % init` did).
    let mut e = entry(false);
    e.kernel_params.clear();
    let files = systemd_boot_esp(&e, "/nix/store/x-sd/b.efi".into(), &opts(r, None)).unwrap();
    let entry_text = |files: &[BootFile]| {
        let f = files
            .iter()
            .find(|f| f.path.starts_with("loader/entries/"))
            .unwrap();
        (f.path.clone(), text(files, &f.path))
    };
    let (_, t) = entry_text(&files);
    assert!(
        t.contains(&format!("options init={TOPLEVEL}/init\nsort-key")),
        "{t}"
    );
    // Every setting: loader.conf order timeout, preferred/default, editor, bitlocker, console.
    let o = SdBootOptions {
        timeout: None,
        console_mode: "max".to_owned(),
        editor: false,
        reboot_for_bitlocker: true,
        distro_name: "MyOS".to_owned(),
        sort_key: Some("a".to_owned()),
        ..opts(r, Some(2))
    };
    let files = systemd_boot_esp(&entry(false), "/nix/store/x-sd/b.efi".into(), &o).unwrap();
    let (name, t) = entry_text(&files);
    let id = name
        .strip_prefix("loader/entries/")
        .and_then(|n| n.strip_suffix("+2.conf"))
        .unwrap();
    assert_eq!(
        text(&files, "loader/loader.conf"),
        format!(
            "timeout menu-force\npreferred {id}.conf\ndefault nixos-*\neditor 0\n\
             reboot-for-bitlocker yes\nconsole-mode max\n"
        )
    );
    assert!(
        t.starts_with("title MyOS\nversion ") && t.ends_with("\nsort-key a"),
        "{t}"
    );
}

#[test]
fn null_timeout_per_release() {
    let loader = |r: Release| {
        let o = SdBootOptions {
            timeout: None,
            ..opts(r, None)
        };
        let files = systemd_boot_esp(&entry(false), "/nix/store/x-sd/b.efi".into(), &o).unwrap();
        text(&files, "loader/loader.conf")
    };
    // 24.05: `if TIMEOUT != ""` leaves the line out; later: `menu-force`.
    assert_eq!(
        loader(Release::new(24, 5)),
        "default nixos-generation-1.conf\nconsole-mode keep\n"
    );
    assert_eq!(
        loader(Release::new(24, 11)),
        "timeout menu-force\ndefault nixos-generation-1.conf\nconsole-mode keep\n"
    );
}

#[test]
fn release_detection() {
    let r = |s| Release::find(s).map(|r| r.to_string());
    assert_eq!(r("26.11.20261201.abcdef0").as_deref(), Some("26.11"));
    assert_eq!(r("24.05pre571714.c3e128f3c0ec").as_deref(), Some("24.05"));
    assert_eq!(
        r("NixOS Uakari 24.05.20240601.b3b2b28 (Linux 6.1.0)").as_deref(),
        Some("24.05")
    );
    assert_eq!(
        r("sd-card-26.05.20260105.9f0c42f").as_deref(),
        Some("26.05")
    );
    assert_eq!(r("NixOS 2024.05"), None, "part of a longer number");
    assert_eq!(r("v1.2.3 (Linux 6.1)"), None);
    assert_eq!(r("99.13"), None, "no month 13");
    // A kernel version's minor.patch is not a release.
    assert_eq!(
        r("NixOS X 26.11.x (Linux 6.12.10)").as_deref(),
        Some("26.11")
    );
    assert_eq!(r("custom (Linux 6.12.10)"), None);
    assert_eq!(r("6.12.10"), None);
    assert_eq!(r("NixOS (Linux 6.12.10) 25.05").as_deref(), Some("25.05"));
    assert_eq!(r(""), None);

    let style = |y, m| Release::new(y, m).facts();
    assert_eq!(style(26, 11).1, Fit::Known);
    assert_eq!(style(26, 11).0.sd_boot, release::SdBootStyle::ContentHash);
    assert_eq!(
        style(26, 5).0.sd_boot,
        release::SdBootStyle::GenerationNames
    );
    assert_eq!(style(27, 5).1, Fit::Newer);
    assert_eq!(style(27, 5).0.release, Release::new(26, 11));
    assert_eq!(style(26, 8).1, Fit::Between);
    assert_eq!(style(26, 8).0.release, Release::new(26, 5));
    assert_eq!(style(23, 11).1, Fit::Older);
    assert_eq!(style(23, 11).0.release, Release::new(24, 5));
    assert!(RELEASES.windows(2).all(|w| w[0].release < w[1].release));
}

#[test]
fn extlinux_per_release() {
    let mut e = entry(false);
    e.system = "aarch64-linux".to_owned();
    let conf = |r: Release, timeout| {
        let o = ExtlinuxOptions {
            timeout,
            style: r.facts().0.extlinux,
            ..ExtlinuxOptions::default()
        };
        text(&extlinux_boot(&e, &o).unwrap(), "extlinux/extlinux.conf")
    };
    let head = "# Generated file, all changes will be lost on nixos-rebuild!\n\n\
                # Change this to e.g. nixos-42 to temporarily boot to an older configuration.\n\
                DEFAULT nixos-default\n\n";
    let menu = format!("MENU TITLE {}\n", "-".repeat(60));
    let entry = format!(
        "\nLABEL nixos-default\n  MENU LABEL NixOS - Default\n  \
         LINUX ../nixos/1k2l3m4n5p6q7r8s9t0v1w2x3y4z5a6b-linux-6.12.31-bzImage\n  \
         INITRD ../nixos/2b3c4d5f6g7h8i9j0k1l2m3n4p5q6r7s-initrd-linux-6.12.31-initrd\n  \
         APPEND init={TOPLEVEL}/init console=ttyS0 loglevel=4 lsm=landlock,yama,bpf\n"
    );
    for r in [Release::new(24, 5), Release::new(24, 11)] {
        assert_eq!(
            conf(r, Some(5)),
            format!("{head}{menu}TIMEOUT 50\n{entry}"),
            "{r}"
        );
        assert_eq!(
            conf(r, Some(0)),
            format!("{head}{menu}TIMEOUT -10\n{entry}"),
            "{r}"
        );
        assert_eq!(
            conf(r, None),
            format!("{head}{menu}TIMEOUT 0\n{entry}"),
            "{r}"
        );
    }
    for r in [
        Release::new(25, 5),
        Release::new(25, 11),
        Release::new(26, 11),
    ] {
        assert_eq!(
            conf(r, Some(5)),
            format!("{head}TIMEOUT 50\n{menu}{entry}"),
            "{r}"
        );
        assert_eq!(conf(r, Some(0)), format!("{head}TIMEOUT 1\n{entry}"), "{r}");
        assert_eq!(
            conf(r, None),
            format!("{head}TIMEOUT 0\n{menu}{entry}"),
            "{r}"
        );
    }
}

/// A specialisation `alt` with its own kernel, parameters and sort key; the initrd is shared
/// (copied once).
fn alt() -> Specialisation {
    let c = "/nix/store/7h8i9j0k1l2m3n4p5q6r7s8t9v0w1x2y-nixos-system-alt";
    Specialisation {
        name: "alt".to_owned(),
        entry: BootEntry {
            toplevel: c.to_owned(),
            init: format!("{c}/init"),
            kernel: "/nix/store/8i9j0k1l2m3n4p5q6r7s8t9v0w1x2y3z-linux-6.18.2/bzImage".to_owned(),
            kernel_params: vec!["quiet".to_owned()],
            label: "NixOS alt".to_owned(),
            ..entry(false)
        },
        sort_key: Some("z_alt".to_owned()),
    }
}

#[test]
fn specialisations_get_their_own_entries() {
    let c = "/nix/store/7h8i9j0k1l2m3n4p5q6r7s8t9v0w1x2y-nixos-system-alt";
    let files_of = |r: Release| {
        systemd_boot_esp_with_specialisations(
            &entry(false),
            &[alt()],
            "/nix/store/x-sd/b.efi".into(),
            &opts(r, None),
        )
        .unwrap()
    };
    let copies = |files: &[BootFile]| {
        files
            .iter()
            .filter(|f| f.path.starts_with("EFI/nixos/") && f.content != Content::Dir)
            .count()
    };
    // Generation names: nixos-generation-1-specialisation-alt.conf, sort-key second.
    let esp = files_of(Release::new(25, 11));
    assert_eq!(esp.entry, "loader/entries/nixos-generation-1.conf");
    let files = esp.files;
    assert_eq!(copies(&files), 3, "two kernels, one shared initrd");
    assert_eq!(
        text(&files, "loader/entries/nixos-generation-1-specialisation-alt.conf"),
        format!(
            "title NixOS (alt)\nsort-key z_alt\nversion Generation 1 NixOS alt, built on \
             2026-12-01\nlinux /EFI/nixos/8i9j0k1l2m3n4p5q6r7s8t9v0w1x2y3z-linux-6.18.2-bzImage.efi\n\
             initrd /EFI/nixos/{INITRD}\noptions init={c}/init quiet\n"
        )
    );
    assert_eq!(
        text(&files, "loader/loader.conf"),
        OLD_LOADER,
        "the generation's own entry"
    );
    // Content hash (sha256sum of the text), and loader.conf still names the parent.
    let esp = files_of(Release::new(26, 11));
    assert_eq!(esp.entry, format!("loader/entries/nixos-{HASH}.conf"));
    let files = esp.files;
    let h = "e77b091dd4aa66f4792c5216469832fb8463e2e3b889a9bd82f023883f8823ef";
    assert!(
        text(&files, &format!("loader/entries/nixos-{h}.conf")).starts_with("title NixOS (alt)\n")
    );
    assert_eq!(
        text(&files, "loader/loader.conf"),
        format!("timeout 5\ndefault nixos-{HASH}.conf\nconsole-mode keep\n")
    );
    // A name that would leave loader/entries is refused.
    let mut bad = alt();
    bad.name = "../x".to_owned();
    let err = systemd_boot_esp_with_specialisations(
        &entry(false),
        &[bad],
        "/nix/store/x-sd/b.efi".into(),
        &opts(Release::new(26, 11), None),
    )
    .unwrap_err();
    assert!(matches!(err, Error::BadText { .. }), "{err}");
}
