//! Seeds of the `grub`, `grub-efi`, `verity` and `uki` targets, made once beside the others
//! (their own stamp, so adding them does not rebuild the image seeds): GRUB setups built by
//! `imgbuild-grub` from Debian's `/usr/lib/grub/i386-pc` and by `grub-mkimage`, Debian's
//! x86_64-efi `kernel.img` (grub-efi-amd64-bin), verity superblocks written
//! by `imgbuild-verity` and by `veritysetup format`. A missing tool leaves its seeds out
//! (said on stderr, and the stamp is not written, so a later run tries again).

use std::path::Path;

use anyhow::{Context, Result};
use imgbuild_grub::{boot_sector, CoreImage, CoreOptions, Install, PartTable, Platform, SECTOR};
use imgbuild_verity::{Hasher, Params, Salt};

use crate::util::{self, cmd};

/// Debian's i386-pc GRUB files (grub-pc-bin).
const GRUB_DIR: &str = "/usr/lib/grub/i386-pc";
/// Debian's x86_64-efi GRUB files (grub-efi-amd64-bin).
const GRUB_EFI_DIR: &str = "/usr/lib/grub/x86_64-efi";
/// Bump when these seeds change.
const STAMP: &str = "grub-verity v2\nuki v1\n";
const UUID: &str = "0b5e2f0c-1d4a-4c3b-9e8f-7a6d5c4b3a29";

/// The seeds' file names, as `Target::seeds` lists them.
/// GRUB: ours with Reed-Solomon codes, ours with a config, `grub-mkimage`'s.
pub const GRUB: &[&str] = &[
    "grub-msdos-rs.disk",
    "grub-gpt-config.disk",
    "grub-mkimage.disk",
];
/// GRUB x86_64-efi: Debian's `kernel.img`.
pub const GRUB_EFI: &[&str] = &["grub-efi-kernel.img"];
/// Verity: ours with three salts, then `veritysetup format`'s two.
pub const VERITY: &[&str] = &[
    "verity-salt32.sb",
    "verity-nosalt.sb",
    "verity-salt256.sb",
    "veritysetup.sb",
    "veritysetup-chromeos.sb",
];

/// Makes the seeds in `dir` unless its stamp says they are there.
pub fn build(dir: &Path) -> Result<()> {
    let stamp = dir.join("stamp-grub-verity");
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s == STAMP) {
        return Ok(());
    }
    let mut complete = grub(dir).context("the grub seeds")?;
    complete &= grub_efi(dir).context("the grub-efi seeds")?;
    complete &= verity(dir).context("the verity seeds")?;
    super::uki::build(dir).context("the uki seeds")?;
    if complete {
        std::fs::write(&stamp, STAMP)?;
    }
    Ok(())
}

/// A sector 0 with one MBR partition (2048.., Linux) and the boot signature.
fn mbr() -> [u8; SECTOR] {
    let mut s = [0u8; SECTOR];
    s[0x1be + 4] = 0x83;
    s[0x1be + 8..0x1be + 12].copy_from_slice(&2048u32.to_le_bytes());
    s[0x1be + 12..0x1be + 16].copy_from_slice(&8192u32.to_le_bytes());
    s[510..].copy_from_slice(&[0x55, 0xaa]);
    s
}

/// The disk's first sectors: GRUB's boot sector pointing at `first`, zeros, the core there.
fn disk(platform: &Platform, first: u64, core: &[u8]) -> Result<Vec<u8>> {
    let mut d = boot_sector(platform, &mbr(), first)?.to_vec();
    d.resize(usize::try_from(first)? * SECTOR, 0);
    d.extend_from_slice(core);
    d.resize(d.len().div_ceil(SECTOR) * SECTOR, 0);
    Ok(d)
}

/// Ours (embedded with Reed-Solomon codes on an MBR disk; placed at sector 34 without them,
/// with an embedded config), and `grub-mkimage`'s core behind our boot sector. False when
/// a tool was missing.
fn grub(dir: &Path) -> Result<bool> {
    if !Path::new(GRUB_DIR).join("kernel.img").exists() {
        eprintln!("fuzz seeds: {GRUB_DIR} is absent (apt-get install grub-pc-bin): no grub seeds");
        return Ok(false);
    }
    let mut platform = Platform::new();
    for e in std::fs::read_dir(GRUB_DIR)? {
        let e = e?;
        if e.file_type()?.is_file() {
            let name = e.file_name().to_string_lossy().into_owned();
            platform.insert(name, std::fs::read(e.path())?);
        }
    }
    let msdos = Install {
        table: PartTable::Msdos,
        partition: 1,
        fs_module: "ext2",
        grub_dir: "/boot/grub",
    }
    .core_image(&platform)?;
    let d = disk(&platform, 1, &msdos.embedded(1, 2047)?)?;
    std::fs::write(dir.join(GRUB[0]), d)?;
    let config = b"search.fs_uuid 0123-4567 root hd0,gpt2\nset prefix=($root)/boot/grub\n";
    let gpt = CoreImage::build(
        &platform,
        &CoreOptions {
            prefix: "(,gpt2)/boot/grub",
            config: Some(config),
            modules: &["ext2", "part_gpt", "biosdisk", "search_fs_uuid"],
        },
    )?;
    let d = disk(&platform, 34, &gpt.placed_at(34)?)?;
    std::fs::write(dir.join(GRUB[1]), d)?;
    if !util::have_tool("grub-mkimage") {
        eprintln!("fuzz seeds: grub-mkimage is not installed (apt-get install grub-common): grub seeds from imgbuild-grub only");
        return Ok(false);
    }
    let tmp = tempfile::tempdir()?;
    let (cfg, out) = (tmp.path().join("load.cfg"), tmp.path().join("core.img"));
    std::fs::write(&cfg, config)?;
    util::output_quiet(
        cmd("grub-mkimage")
            .args([
                "-O",
                "i386-pc",
                "-d",
                GRUB_DIR,
                "-p",
                "(,msdos1)/boot/grub",
                "-c",
            ])
            .arg(&cfg)
            .arg("-o")
            .arg(&out)
            .args(["fat", "part_msdos", "biosdisk"]),
    )?;
    let d = disk(&platform, 1, &std::fs::read(&out)?)?;
    std::fs::write(dir.join(GRUB[2]), d)?;
    Ok(true)
}

/// Debian's x86_64-efi `kernel.img`, copied; false when grub-efi-amd64-bin is missing.
fn grub_efi(dir: &Path) -> Result<bool> {
    let kernel = Path::new(GRUB_EFI_DIR).join("kernel.img");
    if !kernel.is_file() {
        eprintln!("fuzz seeds: {GRUB_EFI_DIR} is absent (apt-get install grub-efi-amd64-bin): no grub-efi seeds");
        return Ok(false);
    }
    std::fs::copy(&kernel, dir.join(GRUB_EFI[0]))?;
    Ok(true)
}

/// 16 blocks of noise.
fn data() -> Vec<u8> {
    imgbuild_testutil::noise(26, 16 * 4096)
}

/// The hash area's first block (the superblock and its zeros) of ours with three salts and
/// of `veritysetup format`'s (format 1, SHA-256; and Chrome OS's format 0, SHA-1, 1 KiB data
/// and 512-byte hash blocks, no salt). False when veritysetup is missing.
fn verity(dir: &Path) -> Result<bool> {
    let uuid = uuid::Uuid::parse_str(UUID)?;
    let salt32: Vec<u8> = (0..32).collect();
    let salt256: Vec<u8> = (0..=255).collect();
    for (name, salt) in VERITY[..3].iter().zip([&salt32[..], &[], &salt256[..]]) {
        let mut h = Hasher::new(Params {
            salt: Salt::new(salt)?,
            uuid,
        });
        h.push(&data());
        let bytes = h.finish()?.to_bytes();
        std::fs::write(dir.join(name), bytes.get(..4096).unwrap_or(&bytes))?;
    }
    if !util::have_tool("veritysetup") {
        eprintln!("fuzz seeds: veritysetup is not installed (apt-get install cryptsetup-bin): verity seeds from imgbuild-verity only");
        return Ok(false);
    }
    let tmp = tempfile::tempdir()?;
    let (d, h) = (tmp.path().join("data"), tmp.path().join("hash"));
    std::fs::write(&d, data())?;
    let salt_hex: String = salt32.iter().map(|b| format!("{b:02x}")).collect();
    let runs: [&[&str]; 2] = [
        &["--format=1", "--hash=sha256", "--data-block-size=4096"],
        &[
            "--format=0",
            "--hash=sha1",
            "--data-block-size=1024",
            "--hash-block-size=512",
            "--salt=-",
        ],
    ];
    for (name, args) in VERITY[3..].iter().zip(runs) {
        let _ = std::fs::remove_file(&h);
        let mut c = cmd("veritysetup");
        c.arg("format").args(args).arg(format!("--uuid={UUID}"));
        if !args.contains(&"--salt=-") {
            c.arg(format!("--salt={salt_hex}"));
        }
        util::output_quiet(c.arg(&d).arg(&h))?;
        let bytes = std::fs::read(&h)?;
        std::fs::write(dir.join(name), bytes.get(..4096).unwrap_or(&bytes))?;
    }
    Ok(true)
}
