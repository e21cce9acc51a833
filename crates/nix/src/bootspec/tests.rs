//! Tests of bootspec parsing, the settings extension and the synthesised fallback.
#![allow(clippy::unwrap_used)]

use super::*;
use std::os::unix::fs::symlink;

const T: &str = "0123456789abcdfghijklmnpqrsvwxyz";
const K: &str = "zyxwvsrqpnmlkjihgfdcba9876543210";
const I: &str = "11111111111111111111111111111111";
const C: &str = "22222222222222222222222222222222";

fn doc(top: &str) -> String {
    let child = format!(
        r#"{{"org.nixos.bootspec.v1": {{"init": "/nix/store/{C}-alt/init",
        "kernel": "/nix/store/{K}-linux-6.1/bzImage", "kernelParams": [],
        "label": "alt", "system": "x86_64-linux", "toplevel": "/nix/store/{C}-alt"}},
        "org.nixos.specialisation.v1": {{}}}}"#
    );
    format!(
        r#"{{
  "org.nixos.bootspec.v1": {{
"init": "/nix/store/{top}/init",
"initrd": "/nix/store/{I}-initrd/initrd",
"kernel": "/nix/store/{K}-linux-6.1/bzImage",
"kernelParams": ["console=ttyS0", "quiet"],
"label": "NixOS 24.05 (Linux 6.1)",
"system": "x86_64-linux",
"toplevel": "/nix/store/{top}"
  }},
  "org.nixos.specialisation.v1": {{ "alt": {child} }},
  "org.nixos.systemd-boot": {{ "sortKey": "nixos" }},
  "org.imgbuild.v1": {{ "firmware": "/nix/store/{K}-fw/share/boot", "x": 1 }}
}}"#
    )
}

#[test]
fn parses_v1_with_specialisations_and_extensions() {
    let top = format!("{T}-nixos-system-x");
    let spec = BootSpec::parse(doc(&top).as_bytes(), Path::new("boot.json")).unwrap();
    assert_eq!(spec.toplevel.base_name(), top);
    assert_eq!(
        spec.kernel.as_ref().unwrap().store_path().name(),
        "linux-6.1"
    );
    assert_eq!(
        spec.kernel.as_ref().unwrap().subpath(),
        Path::new("bzImage")
    );
    assert_eq!(spec.init.subpath(), Path::new("init"));
    assert_eq!(spec.initrd.as_ref().unwrap().store_path().hash_part(), I);
    assert_eq!(spec.initrd_secrets, None);
    assert_eq!(spec.kernel_params, ["console=ttyS0", "quiet"]);
    assert_eq!(spec.system, "x86_64-linux");
    assert!(!spec.synthesized);
    let alt = &spec.specialisations["alt"];
    assert_eq!(alt.toplevel.name(), "alt");
    assert_eq!(alt.initrd, None);
    assert_eq!(
        spec.extensions.keys().collect::<Vec<_>>(),
        ["org.imgbuild.v1", "org.nixos.systemd-boot"]
    );
    let ext = spec.imgbuild.unwrap();
    assert_eq!(ext.firmware.unwrap().subpath(), Path::new("share/boot"));
    assert_eq!(ext.other["x"], 1);
}

/// A boot.json (`/s/boot.json`) whose `org.imgbuild.v1` extension is `ext`, parsed.
fn with(ext: &str) -> Result<BootSpec> {
    let top = format!("{T}-nixos-system-x");
    let d = doc(&top).replace(
        r#""org.imgbuild.v1": { "firmware": "/nix/store/zyxwvsrqpnmlkjihgfdcba9876543210-fw/share/boot", "x": 1 }"#,
        &format!(r#""org.imgbuild.v1": {ext}"#),
    );
    assert!(d.contains(ext), "replacement failed");
    BootSpec::parse(d.as_bytes(), Path::new("/s/boot.json"))
}

/// The boot loader settings of imgbuild's NixOS module (CONTRACT: every key optional,
/// unknown keys kept).
#[test]
fn imgbuild_boot_loader_settings() {
    let full = r#"{ "release": "26.11", "future": [1],
        "bootloader": { "type": "systemd-boot", "timeout": 7, "editor": false,
          "consoleMode": "max", "rebootForBitlocker": true, "distroName": "MyOS",
          "installDeviceTree": true, "bootCounting": { "enable": true, "tries": 5 },
          "unknownLater": "x" } }"#;
    let ext = with(full).unwrap().imgbuild.unwrap();
    assert_eq!(ext.release.as_deref(), Some("26.11"));
    assert_eq!(ext.other.keys().collect::<Vec<_>>(), ["future"]);
    assert_eq!(
        ext.bootloader.unwrap(),
        BootloaderSettings {
            kind: Some(LoaderKind::SystemdBoot),
            timeout: Some(Some(7)),
            editor: Some(false),
            console_mode: Some("max".into()),
            reboot_for_bitlocker: Some(true),
            distro_name: Some("MyOS".into()),
            install_device_tree: Some(true),
            boot_counting: Some(BootCounting {
                enable: true,
                tries: 5
            }),
            use_generation_device_tree: None,
            device_tree_name: None,
            grub: None,
        }
    );
    // extlinux's device tree settings; a null name is an absent one.
    let b = with(
        r#"{ "bootloader": { "type": "extlinux", "useGenerationDeviceTree": false, "deviceTreeName": "broadcom/bcm2711-rpi-4-b.dtb" } }"#,
    )
    .unwrap()
    .imgbuild
    .unwrap()
    .bootloader
    .unwrap();
    assert_eq!(b.use_generation_device_tree, Some(false));
    assert_eq!(
        b.device_tree_name.as_deref(),
        Some("broadcom/bcm2711-rpi-4-b.dtb")
    );
    let b = with(r#"{ "bootloader": { "deviceTreeName": null } }"#)
        .unwrap()
        .imgbuild
        .unwrap()
        .bootloader
        .unwrap();
    assert_eq!(b.device_tree_name, None);
    // null timeout is not an absent one; absent keys stay absent; tries defaults to 3.
    let b = with(r#"{ "bootloader": { "type": "extlinux", "timeout": null, "bootCounting": { "enable": false } } }"#)
        .unwrap()
        .imgbuild
        .unwrap()
        .bootloader
        .unwrap();
    assert_eq!(b.kind, Some(LoaderKind::Extlinux));
    assert_eq!(b.timeout, Some(None));
    assert_eq!(b.editor, None);
    assert_eq!(
        b.boot_counting,
        Some(BootCounting {
            enable: false,
            tries: DEFAULT_BOOT_COUNTING_TRIES
        })
    );
    let b = with(r#"{ "bootloader": {} }"#).unwrap().imgbuild.unwrap();
    assert_eq!(b.bootloader, Some(BootloaderSettings::default()));
    assert_eq!(with("{}").unwrap().imgbuild.unwrap().bootloader, None);
}

/// CONTRACT: settings of the wrong type or out of range are refused, naming the file and the
/// key; text settings are bounded and without control characters.
#[test]
fn wrong_boot_loader_settings_are_refused_naming_file_and_key() {
    for (ext, want) in [
        (
            r#"{ "release": 26.11 }"#,
            "\"org.imgbuild.v1\".release is a number, not a string",
        ),
        (
            r#"{ "bootloader": [] }"#,
            "bootloader is an array, not an object",
        ),
        (
            r#"{ "bootloader": { "type": "limine" } }"#,
            "`limine` is not `systemd-boot`, `extlinux` or `grub`",
        ),
        (
            r#"{ "bootloader": { "timeout": "5" } }"#,
            "timeout is a string, not a number or null",
        ),
        (
            r#"{ "bootloader": { "timeout": 1.5 } }"#,
            "timeout 1.5 is not a whole number",
        ),
        (
            r#"{ "bootloader": { "timeout": 99999999999 } }"#,
            "not a whole number of seconds in range",
        ),
        (
            r#"{ "bootloader": { "editor": "no" } }"#,
            "editor is a string, not a boolean",
        ),
        (
            r#"{ "bootloader": { "consoleMode": "a\nb" } }"#,
            "consoleMode contains a control character",
        ),
        (
            r#"{ "bootloader": { "distroName": "a\u001b[2Jb" } }"#,
            "distroName contains a control character",
        ),
        (
            r#"{ "release": "26.11\u0000" }"#,
            "release contains a control character",
        ),
        (
            r#"{ "bootloader": { "useGenerationDeviceTree": 1 } }"#,
            "useGenerationDeviceTree is a number, not a boolean",
        ),
        (
            r#"{ "bootloader": { "deviceTreeName": 5 } }"#,
            "deviceTreeName is a number, not a string",
        ),
        (
            r#"{ "bootloader": { "bootCounting": true } }"#,
            "bootCounting is a boolean, not an object",
        ),
        (
            r#"{ "bootloader": { "bootCounting": { "enable": 1 } } }"#,
            "enable is a number, not a boolean",
        ),
        (
            r#"{ "bootloader": { "bootCounting": { "tries": -1 } } }"#,
            "tries -1 is not a count",
        ),
        (
            r#"{ "bootloader": { "bootCounting": { "tries": 4294967296 } } }"#,
            "tries 4294967296 is not a count",
        ),
    ] {
        let err = with(ext).unwrap_err().to_string();
        assert!(
            err.starts_with("/s/boot.json: ") && err.contains(want),
            "{ext}: {err}"
        );
    }
    let long = format!(
        r#"{{ "bootloader": {{ "distroName": "{}" }} }}"#,
        "x".repeat(257)
    );
    let err = with(&long).unwrap_err().to_string();
    assert!(err.contains("distroName is longer than 256 bytes"), "{err}");
}

#[test]
fn errors_name_file_and_reason() {
    let f = Path::new("/s/boot.json");
    let err = BootSpec::parse(b"{\n  \"a\": [1,\n}", f).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with("/s/boot.json: invalid JSON") && msg.contains("line 3"),
        "{msg}"
    );
    let err = BootSpec::parse(br#"{"v1": {"init": "/x"}}"#, f).unwrap_err();
    assert!(err.to_string().contains("pre-23.05"), "{err}");
    let err = BootSpec::parse(br#"{"org.nixos.bootspec.v1": {"init": "/x"}}"#, f).unwrap_err();
    assert!(err.to_string().contains("missing field"), "{err}");
    let bad_kernel = doc(&format!("{T}-x")).replace(&format!("/nix/store/{K}-linux-6.1"), "/boot");
    let err = BootSpec::parse(bad_kernel.as_bytes(), f).unwrap_err();
    assert!(err.to_string().contains("kernel:"), "{err}");
    let err = BootSpec::parse(b"[]", f).unwrap_err();
    assert!(err.to_string().contains("not a JSON object"), "{err}");
}

#[test]
fn reads_and_synthesizes_from_a_store() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let store = root.join("nix/store");
    let top = store.join(format!("{T}-nixos-system-x"));
    let kernel = store.join(format!("{K}-linux-6.1"));
    let initrd = store.join(format!("{I}-initrd"));
    std::fs::create_dir_all(kernel.join("lib/modules/6.1.77")).unwrap();
    std::fs::write(kernel.join("bzImage"), b"k").unwrap();
    std::fs::create_dir_all(&initrd).unwrap();
    std::fs::write(initrd.join("initrd"), b"i").unwrap();
    std::fs::create_dir_all(&top).unwrap();
    symlink(
        format!("/nix/store/{K}-linux-6.1/bzImage"),
        top.join("kernel"),
    )
    .unwrap();
    symlink(
        format!("/nix/store/{K}-linux-6.1"),
        top.join("kernel-modules"),
    )
    .unwrap();
    symlink(format!("/nix/store/{I}-initrd/initrd"), top.join("initrd")).unwrap();
    std::fs::write(top.join("init"), b"#!/bin/sh").unwrap();
    std::fs::write(top.join("kernel-params"), b"console=ttyS0  quiet").unwrap();
    std::fs::write(top.join("system"), b"x86_64-linux").unwrap();
    std::fs::write(top.join("nixos-version"), b"24.05").unwrap();
    let tp = StorePath::parse(&format!("/nix/store/{T}-nixos-system-x")).unwrap();

    let spec = BootSpec::read(root, &tp).unwrap();
    assert!(spec.synthesized);
    assert_eq!(
        spec.kernel.as_ref().unwrap().to_string(),
        format!("/nix/store/{K}-linux-6.1/bzImage")
    );
    assert_eq!(
        spec.initrd.unwrap().to_string(),
        format!("/nix/store/{I}-initrd/initrd")
    );
    assert_eq!(spec.init.to_string(), format!("{tp}/init"));
    assert_eq!(spec.kernel_params, ["console=ttyS0", "quiet"]);
    assert_eq!(spec.label, "NixOS 24.05 (Linux 6.1.77)");
    assert_eq!(spec.nixos_version.as_deref(), Some("24.05"));
    assert_eq!(spec.system, "x86_64-linux");

    // A kernel link escaping the store is refused.
    std::fs::remove_file(top.join("kernel")).unwrap();
    symlink("/boot/vmlinuz", top.join("kernel")).unwrap();
    let err = BootSpec::read(root, &tp).unwrap_err();
    assert!(matches!(err, Error::EscapesStore { .. }), "{err}");

    // With boot.json present it wins; its toplevel must match.
    let json = doc(&format!("{T}-nixos-system-x"));
    std::fs::write(top.join("boot.json"), &json).unwrap();
    let spec = BootSpec::read(root, &tp).unwrap();
    assert!(!spec.synthesized);
    assert_eq!(
        spec.nixos_version.as_deref(),
        Some("24.05"),
        "read beside boot.json"
    );
    // nixos-version is a hint: too big, not UTF-8 or with a control character, it is none.
    for bad in [
        vec![b'2'; 4097],
        b"24.05\xff".to_vec(),
        b"24.05\x1b[2J".to_vec(),
    ] {
        std::fs::write(top.join("nixos-version"), &bad).unwrap();
        assert_eq!(BootSpec::read(root, &tp).unwrap().nixos_version, None);
    }
    std::fs::write(top.join("nixos-version"), vec![b'2'; 4096]).unwrap();
    assert_eq!(
        BootSpec::read(root, &tp)
            .unwrap()
            .nixos_version
            .map(|v| v.len()),
        Some(4096),
        "4 KiB is within the bound"
    );
    std::fs::write(top.join("nixos-version"), b"24.05").unwrap();
    let other = StorePath::parse(&format!("/nix/store/{C}-nixos-system-x")).unwrap();
    let odir = store.join(other.base_name());
    std::fs::create_dir_all(&odir).unwrap();
    std::fs::write(odir.join("boot.json"), &json).unwrap();
    let err = BootSpec::read(root, &other).unwrap_err();
    assert!(err.to_string().contains("describes toplevel"), "{err}");
    std::fs::write(top.join("boot.json"), b"{").unwrap();
    let err = BootSpec::read(root, &tp).unwrap_err();
    assert!(err.to_string().contains("boot.json: invalid JSON"), "{err}");
}

/// The GRUB record (`type = "grub"`): nixpkgs' defaults for absent keys, the package and
/// files as store paths, settings imgbuild cannot follow listed, bad values refused.
#[test]
fn grub_record() {
    let grub = |b: &str| {
        with(&format!(r#"{{ "bootloader": {{ "type": "grub"{b} }} }}"#)).map(|s| {
            s.imgbuild
                .unwrap()
                .bootloader
                .unwrap()
                .grub
                .expect("type grub has a GRUB record")
        })
    };
    let d = grub("").unwrap();
    assert_eq!(d, GrubSettings::default());
    assert_eq!(
        (
            d.configuration_limit,
            d.entry_options.as_str(),
            d.gfxmode_bios.as_str(),
            d.fs_identifier
        ),
        (
            100,
            "--class nixos --unrestricted",
            "1024x768",
            FsIdentifier::Uuid
        )
    );
    let g = grub(&format!(
        r#", "grub": "/nix/store/{K}-grub-2.12", "devices": ["/dev/vda"],
        "grubEfi": "/nix/store/{K}-grub-efi-2.12", "efiSupport": true,
        "fsIdentifier": "label", "default": 1, "copyKernels": true,
        "font": "/nix/store/{K}-grub-2.12/share/grub/unicode.pf2", "splashImage": null,
        "extraConfig": "serial\nterminal_output serial", "theme": null, "users": {{}},
        "useOSProber": true"#
    ))
    .unwrap();
    assert_eq!(g.package.unwrap().name(), "grub-2.12");
    assert_eq!(g.efi_package.unwrap().name(), "grub-efi-2.12");
    assert!(g.efi_support && d.efi_package.is_none());
    assert_eq!(g.devices, ["/dev/vda"]);
    assert_eq!(g.fs_identifier, FsIdentifier::Label);
    assert_eq!(g.default, "1");
    assert!(g.copy_kernels);
    assert!(g.font.is_some() && g.splash_image.is_none());
    assert_eq!(g.extra_config, "serial\nterminal_output serial");
    assert_eq!(
        g.unsupported,
        ["useOSProber"],
        "null and empty settings are not in use"
    );
    for (bad, want) in [
        (r#", "fsIdentifier": "path""#, "fsIdentifier `path`"),
        (r#", "devices": "/dev/vda""#, "devices is a string"),
        (r#", "grub": "/usr/lib/grub""#, "bootloader.grub"),
        (r#", "grubEfi": "/usr/lib/grub""#, "bootloader.grubEfi"),
        (r#", "font": "/etc/font.pf2""#, "bootloader.font"),
        (r#", "configurationLimit": -1"#, "configurationLimit -1"),
        (r#", "extraConfig": 7"#, "extraConfig is a number"),
    ] {
        let err = grub(bad).unwrap_err().to_string();
        assert!(err.contains(want), "{bad}: {err}");
    }
    // Other loaders carry no GRUB record.
    let b = with(r#"{ "bootloader": { "type": "extlinux", "grub": "x" } }"#)
        .unwrap()
        .imgbuild
        .unwrap()
        .bootloader
        .unwrap();
    assert_eq!(b.grub, None);
}

#[test]
fn a_container_toplevel_has_imgbuild_json_and_no_kernel() {
    // As NixOS builds a boot.isContainer toplevel: init, system, nixos-version, no boot.json,
    // kernel, initrd or kernel-params; imgbuild's module adds imgbuild.json.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let top = root.join(format!("nix/store/{T}-nixos-system-c"));
    std::fs::create_dir_all(&top).unwrap();
    std::fs::write(top.join("init"), b"#!/bin/sh").unwrap();
    std::fs::write(top.join("system"), b"aarch64-linux").unwrap();
    std::fs::write(top.join("nixos-version"), b"24.05").unwrap();
    let tp = StorePath::parse(&format!("/nix/store/{T}-nixos-system-c")).unwrap();
    let logical = tp.to_path_buf();

    // Without the marker file it is no toplevel imgbuild knows, named so.
    let err = BootSpec::read(root, &tp).unwrap_err();
    assert!(
        err.to_string()
            .contains("no boot.json, no kernel and no imgbuild.json"),
        "{err}"
    );
    let err = crate::resolve_toplevel(&logical, root).unwrap_err();
    assert!(err.to_string().contains("imgbuild.json"), "{err}");

    let marker = r#"{"org.imgbuild.v1": {"container": {"isContainer": true, "os": "nixos"}}}"#;
    std::fs::write(top.join(IMGBUILD_JSON), marker).unwrap();
    assert_eq!(crate::resolve_toplevel(&logical, root).unwrap(), tp);
    let spec = BootSpec::read(root, &tp).unwrap();
    assert_eq!(spec.kernel, None);
    assert_eq!(spec.initrd, None);
    assert!(spec.kernel_params.is_empty());
    assert!(spec.synthesized);
    assert_eq!(spec.system, "aarch64-linux");
    assert_eq!(spec.label, "NixOS 24.05");
    let record = spec.container.unwrap();
    assert_eq!(record["isContainer"], Value::Bool(true));
    assert_eq!(record["os"], "nixos");

    // A marker file that is not the module's is refused by name, never taken as none.
    for (bad, want) in [
        ("{", "imgbuild.json"),
        ("[]", "no \"org.imgbuild.v1\" object"),
        (r#"{"org.imgbuild.v1": {}}"#, "no `container` record"),
        (
            r#"{"org.imgbuild.v1": {"container": true}}"#,
            "container is not an object",
        ),
    ] {
        std::fs::write(top.join(IMGBUILD_JSON), bad).unwrap();
        let err = BootSpec::read(root, &tp).unwrap_err();
        assert!(err.to_string().contains(want), "{bad}: {err}");
    }

    // With boot.json (a toplevel that has one), the marker file is read beside it.
    std::fs::write(top.join(IMGBUILD_JSON), marker).unwrap();
    std::fs::write(top.join("boot.json"), doc(&format!("{T}-nixos-system-c"))).unwrap();
    let spec = BootSpec::read(root, &tp).unwrap();
    assert!(spec.kernel.is_some());
    assert_eq!(spec.container.unwrap()["os"], "nixos");
}
