//! Our core.img against `grub-mkimage -O i386-pc` from the same Debian GRUB files: the same
//! diskboot and decompressor (size fields aside) and, once both LZMA payloads are
//! decompressed, the same kernel and module section byte for byte.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;

use imgbuild_grub::{CoreImage, CoreOptions, Install, PartTable};

fn judge(modules: &[&str], prefix: &str, config: Option<&[u8]>) {
    let (Some(platform), true) = (common::platform(), common::have("grub-mkimage")) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("i386-pc.img");
    let theirs = common::mkimage(
        dir.path(),
        "i386-pc",
        common::GRUB_DIR,
        prefix,
        config,
        modules,
    );

    let ours = CoreImage::build(
        &platform,
        &CoreOptions {
            prefix,
            config,
            modules,
        },
    )
    .unwrap();
    let ours_bytes = ours.mkimage_bytes();
    let dec_len = platform.get("lzma_decompress.img").unwrap().len();
    let (their_boot, their_dec, their_payload) = common::split_core(&theirs, dec_len);
    let (our_boot, our_dec, our_payload) = common::split_core(ours_bytes, dec_len);

    assert_eq!(
        our_payload, their_payload,
        "uncompressed payload for {modules:?}"
    );
    assert_eq!(our_payload, ours.payload_bytes());
    // diskboot.img: only the sector count of the block list differs, each its own.
    assert_eq!(our_boot[..0x1fc], their_boot[..0x1fc]);
    assert_eq!(our_boot[0x1fe..], their_boot[0x1fe..]);
    for (img, boot) in [(ours_bytes, &our_boot), (&theirs[..], &their_boot)] {
        let count = u16::from_le_bytes([boot[0x1fc], boot[0x1fd]]) as usize;
        assert_eq!(count, (img.len() - 512).div_ceil(512));
    }
    // grub-file recognises ours as it does grub-mkimage's: a multiboot image (the header is
    // in the decompressor). A weak check, asked for by the issue; the payload is the strong one.
    let ours_path = dir.path().join("ours.img");
    std::fs::write(&ours_path, ours_bytes).unwrap();
    if common::have("grub-file") {
        for path in [&ours_path, &out] {
            let ok = Command::new("grub-file")
                .arg("--is-x86-multiboot")
                .arg(path)
                .status()
                .unwrap();
            assert!(
                ok.success(),
                "grub-file --is-x86-multiboot {}",
                path.display()
            );
        }
    }
    // Read back functionally: the same modules, in the same order, and the same prefix and
    // config, from ours (as placed, and embedded with redundancy) and from grub-mkimage's.
    let mut their_sectors = theirs.clone();
    their_sectors.resize(theirs.len().div_ceil(512) * 512, 0);
    for (what, img) in [
        ("grub-mkimage", their_sectors),
        ("placed", ours.placed_at(1).unwrap()),
        ("embedded", ours.embedded(1, 2047).unwrap()),
    ] {
        let read = imgbuild_grub::read_core(&img).unwrap();
        assert_eq!(read.modules, ours.modules(), "{what}");
        assert_eq!(read.prefix.as_deref(), Some(prefix), "{what}");
        assert_eq!(read.config.as_deref(), config, "{what}");
        assert_eq!(read.uncompressed_size as usize, our_payload.len(), "{what}");
    }
    // lzma_decompress.img: only the compressed size differs (0x08..0x0c).
    assert_eq!(our_dec[..8], their_dec[..8]);
    assert_eq!(our_dec[12..], their_dec[12..]);
    // The compressed parts differ (xz's LZMA encoder, not the LZMA SDK's, see the crate
    // docs): same parameters, so the sizes must stay close.
    let (a, b) = (&ours_bytes[512 + dec_len..], &theirs[512 + dec_len..]);
    let same = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    eprintln!(
        "{modules:?}: payload {} bytes; compressed: ours {} bytes, grub-mkimage {} bytes, \
         the first {same} equal",
        our_payload.len(),
        a.len(),
        b.len(),
    );
    assert!(
        a.len() * 100 <= b.len() * 101,
        "our LZMA is over 1% larger than GRUB's"
    );
}

#[test]
fn msdos_fat_core_matches_grub_mkimage() {
    judge(
        &["biosdisk", "part_msdos", "fat"],
        "(hd0,msdos1)/boot/grub",
        None,
    );
}

#[test]
fn gpt_ext2_core_with_config_matches_grub_mkimage() {
    let config = b"search.fs_uuid 0123-4567 root hd0,gpt2\nset prefix=($root)'/boot/grub'\n";
    judge(
        &[
            "biosdisk",
            "part_gpt",
            "part_msdos",
            "ext2",
            "search_fs_uuid",
            "normal",
        ],
        "/boot/grub",
        Some(config),
    );
}

#[test]
fn same_inputs_same_bytes() {
    let Some(platform) = common::platform() else {
        return;
    };
    let opts = CoreOptions {
        prefix: "(hd0,msdos1)/boot/grub",
        config: None,
        modules: &["biosdisk", "part_msdos", "fat"],
    };
    let a = CoreImage::build(&platform, &opts).unwrap();
    let b = CoreImage::build(&platform.clone(), &opts).unwrap();
    assert_eq!(a.placed_at(1).unwrap(), b.placed_at(1).unwrap());
    assert_eq!(a.modules(), ["biosdisk", "part_msdos", "fshelp", "fat"]);
}

#[test]
fn grub_install_style_core_matches_grub_mkimage() {
    let install = Install {
        table: PartTable::Gpt,
        partition: 2,
        fs_module: "ext2",
        grub_dir: "/boot/grub",
    };
    judge(&install.modules(), &install.prefix().unwrap(), None);
}

/// What grub-install leaves in GRUB_DIR/i386-pc, from Debian's directory: every module, the
/// lists (grub's normal mode reads command.lst and friends to autoload), boot.img, core.img.
#[test]
fn installed_files_are_the_modules_lists_and_images() {
    let Some(platform) = common::platform() else {
        return;
    };
    let install = Install {
        table: PartTable::Msdos,
        partition: 1,
        fs_module: "fat",
        grub_dir: "/boot/grub",
    };
    let core = install.core_image(&platform).unwrap();
    let files = imgbuild_grub::installed_files(&platform, &core).unwrap();
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    let mods = std::fs::read_dir(common::GRUB_DIR)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".mod")
        })
        .count();
    assert_eq!(names.iter().filter(|n| n.ends_with(".mod")).count(), mods);
    for want in [
        "command.lst",
        "moddep.lst",
        "modinfo.sh",
        "efiemu64.o",
        "boot.img",
        "core.img",
    ] {
        assert!(names.contains(&want), "{want} missing");
    }
    assert!(!names.contains(&"kernel.img") && !names.contains(&"grub-bios-setup"));
    let mut sorted = names.clone();
    sorted.sort_unstable();
    assert_eq!(names, sorted);
    let core_file = files.iter().find(|(n, _)| n == "core.img").unwrap().1;
    assert_eq!(core_file, core.mkimage_bytes());
    eprintln!("{} files", files.len());
}
