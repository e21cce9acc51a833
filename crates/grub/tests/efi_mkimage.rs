//! Our x86_64-efi image against `grub-mkimage -O x86_64-efi` from the same Debian GRUB
//! files (grub-efi-amd64-bin 2.06): byte for byte, for the module sets `grub-install`
//! passes and a few others, with and without an embedded config.

#![allow(clippy::unwrap_used)]

mod common;

use imgbuild_grub::{installed_efi_files, CoreOptions, EfiImage, EfiInstall, PartTable};

fn judge(modules: &[&str], prefix: &str, config: Option<&[u8]>) {
    let (Some(platform), true) = (
        common::platform_at(common::GRUB_EFI_DIR, "grub-efi-amd64-bin"),
        common::have("grub-mkimage"),
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let theirs = common::mkimage(
        dir.path(),
        "x86_64-efi",
        common::GRUB_EFI_DIR,
        prefix,
        config,
        modules,
    );

    let ours = EfiImage::build(
        &platform,
        &CoreOptions {
            prefix,
            config,
            modules,
        },
    )
    .unwrap();
    assert_eq!(ours.bytes().len(), theirs.len(), "size for {modules:?}");
    if let Some(at) = ours.bytes().iter().zip(&theirs).position(|(a, b)| a != b) {
        panic!("first difference at {at:#x} for {modules:?}");
    }
    assert!(ours.modules().iter().any(|m| m == modules[0]));
}

#[test]
fn the_modules_grub_install_passes_for_a_uuid_search() {
    // What grub-install --target=x86_64-efi asks for when GRUB's directory is on an ext4
    // root of a GPT disk: the fs, the partition map, the UUID search, with the early config.
    judge(
        &["ext2", "part_gpt", "search_fs_uuid"],
        "($root)/boot/grub",
        Some(b"search.fs_uuid 0b2a6e36-3e5b-4b2b-9d86-1f3c2e2e1a11 root \nset prefix=($root)'/boot/grub'\n"),
    );
}

#[test]
fn normal_and_the_file_systems_with_a_drive_prefix() {
    judge(
        &["part_gpt", "fat", "ext2", "normal", "search_fs_uuid"],
        "(hd0,gpt2)/boot/grub",
        None,
    );
}

#[test]
fn plain_prefix_without_config() {
    judge(&["fat", "part_gpt"], "(hd0,gpt2)/boot/grub", None);
}

#[test]
fn many_modules() {
    judge(
        &[
            "normal",
            "linux",
            "ext2",
            "fat",
            "part_gpt",
            "part_msdos",
            "search",
            "efi_gop",
            "all_video",
            "gzio",
            "configfile",
            "echo",
            "test",
        ],
        "/EFI/BOOT",
        Some(b"set timeout=5\n"),
    );
}

/// What imgbuild installs for the hybrid disk (GRUB's directory on the FAT ESP mounted at
/// /boot) against grub-mkimage given the same modules, prefix and early config; and the
/// platform directory grub-install leaves.
#[test]
fn efi_install_on_the_esp() {
    let i = EfiInstall {
        table: PartTable::Gpt,
        fs_module: "fat",
        fs_uuid: "1a2b-3c4d",
        grub_dir: "/grub",
    };
    let config = i.config().unwrap();
    assert_eq!(
        config,
        "search.fs_uuid 1a2b-3c4d root \nset prefix=($root)'/grub'\n"
    );
    judge(&i.modules(), "/grub", Some(config.as_bytes()));
    let Some(platform) = common::platform_at(common::GRUB_EFI_DIR, "grub-efi-amd64-bin") else {
        return;
    };
    let image = i.image(&platform).unwrap();
    let files = installed_efi_files(&platform, &image).unwrap();
    let names: Vec<&str> = files.iter().map(|f| f.0.as_str()).collect();
    for want in [
        "core.efi",
        "grub.efi",
        "moddep.lst",
        "fat.mod",
        "modinfo.sh",
    ] {
        assert!(names.contains(&want), "{want} missing");
    }
    assert!(!names.contains(&"kernel.img") && !names.contains(&"boot.img"));
    let mut sorted = names.clone();
    sorted.sort_unstable();
    assert_eq!(names, sorted);
}
