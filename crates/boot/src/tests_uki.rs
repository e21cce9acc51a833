use super::*;
use crate::tests::{text, x86_entry};

fn esp(boot_counting: Option<u32>) -> Esp {
    let facts = RELEASES
        .iter()
        .find(|f| f.release.to_string() == "26.11")
        .copied()
        .unwrap();
    let o = SdBootOptions {
        boot_counting,
        facts,
        ..SdBootOptions::default()
    };
    systemd_boot_esp_with_specialisations(
        &x86_entry(),
        &[],
        "/nix/store/00000000000000000000000000000000-systemd/lib/systemd/boot/efi/systemd-bootx64.efi"
            .into(),
        &o,
    )
    .unwrap()
}

#[test]
fn uki_esp_drops_type1_entries_and_names_the_uki() {
    let before = esp(None);
    assert!(before
        .files
        .iter()
        .any(|f| f.path.starts_with("loader/entries/nixos")));
    assert!(before
        .files
        .iter()
        .any(|f| f.path.starts_with("EFI/nixos/") && f.content != Content::Dir));
    let files = uki_esp(before.clone(), "nixos.efi", None).unwrap();
    for f in &files {
        let copy = f.path.starts_with("EFI/nixos/") || f.path.starts_with("loader/entries/");
        assert!(!copy || f.content == Content::Dir, "{} left", f.path);
    }
    assert!(files
        .iter()
        .any(|f| f.path == "EFI/Linux" && f.content == Content::Dir));
    assert!(files.iter().any(|f| f.path == "EFI/BOOT/BOOTX64.EFI"));
    let conf = text(&files, "loader/loader.conf");
    let old = text(&before.files, "loader/loader.conf");
    assert!(conf.contains("default nixos.efi\n"), "{conf}");
    assert_eq!(
        conf.lines().filter(|l| l.starts_with("default ")).count(),
        1
    );
    // Every other line as systemd-boot's installer wrote it.
    let rest = |s: &str| {
        s.lines()
            .filter(|l| !l.starts_with("default "))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert_eq!(rest(&conf), rest(&old));
}

#[test]
fn uki_entry_id_drops_the_boot_counter_and_preferred() {
    let files = uki_esp(esp(Some(3)), "appliance_1.2+3-1.efi", None).unwrap();
    let conf = text(&files, "loader/loader.conf");
    assert!(conf.contains("default appliance_1.2.efi\n"), "{conf}");
    assert!(!conf.contains("preferred"), "{conf}");
    let files = uki_esp(esp(None), "a+b.efi", None).unwrap();
    assert!(text(&files, "loader/loader.conf").contains("default a+b.efi\n"));
    // A/B updates: a pattern that also matches the versions systemd-sysupdate adds.
    let files = uki_esp(esp(Some(3)), "kiosk_1.efi", Some("kiosk_*")).unwrap();
    let conf = text(&files, "loader/loader.conf");
    assert!(conf.contains("default kiosk_*\n"), "{conf}");
    assert_eq!(conf.matches("default ").count(), 1, "{conf}");
    assert!(uki_esp(esp(None), "kiosk_1.efi", Some("kiosk\n_*")).is_err());
}

#[test]
fn uki_names_and_cmdline_are_checked() {
    for bad in [
        "",
        ".efi",
        "x.EFI",
        "a/b.efi",
        "../x.efi",
        ".hidden.efi",
        "a\nb.efi",
    ] {
        assert!(uki_path(bad).is_err(), "{bad:?} accepted");
    }
    assert_eq!(
        uki_path("nixos_25.11.efi").unwrap(),
        "EFI/Linux/nixos_25.11.efi"
    );
    let params = vec!["console=ttyS0".to_string(), "quiet".to_string()];
    assert_eq!(
        uki_cmdline("/nix/store/x-sys/init", &params, &["usrhash=ab".into()]).unwrap(),
        "init=/nix/store/x-sys/init console=ttyS0 quiet usrhash=ab"
    );
    assert!(uki_cmdline("/i", &[], &["a\nb".into()]).is_err());
    assert!(uki_cmdline("/i", &[], &[String::new()]).is_err());
}
