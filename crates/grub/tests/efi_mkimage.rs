//! Our x86_64-efi image against `grub-mkimage -O x86_64-efi` from the same Debian GRUB
//! files (grub-efi-amd64-bin 2.06): byte for byte, for the module sets `grub-install`
//! passes and a few others, with and without an embedded config.

#![allow(clippy::unwrap_used)]

mod common;

use imgbuild_grub::{CoreOptions, EfiImage};

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
