use super::*;

#[test]
fn builtin_formats_parse() {
    for (name, _) in BUILTIN {
        let f = Format::load(name).unwrap();
        assert_eq!(&f.name, name);
    }
    let raw = Format::load("raw-efi").unwrap();
    assert_eq!(raw.table.kind, TableType::Gpt);
    assert_eq!(raw.partitions[0].start, Some(Bytes(8 << 20)));
    assert_eq!(raw.partitions[0].size, PartSize::Fixed(512 << 20));
    assert_eq!(raw.root_partition().label, "nixos");
    let sd = Format::load("sd-aarch64").unwrap();
    assert_eq!(sd.compress, Compression::Zstd);
    assert!(sd.root_partition().bootable);
    assert_eq!(sd.partitions[0].type_id, Some(PartType::Mbr(0x0b)));
    assert_eq!(sd.partitions[0].type_id.unwrap().to_string(), "0x0b");
    assert_eq!(
        raw.partitions[0].type_id.unwrap().to_string(),
        "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
    );
}

#[test]
fn invalid_formats_are_refused_with_reasons() {
    let raw = BUILTIN[0].1;
    let e = Format::parse(
        "x",
        &raw.replace("C12A7328-F81F-11D2-BA4B-00A0C93EC93B", "nope"),
    )
    .unwrap_err();
    assert!(
        e.to_string()
            .contains("type `nope` is neither a GPT type GUID"),
        "{e}"
    );
    // An MBR byte on a GPT table.
    let e = Format::parse(
        "x",
        &raw.replace("C12A7328-F81F-11D2-BA4B-00A0C93EC93B", "0x0b"),
    )
    .unwrap_err();
    assert!(e.to_string().contains("is not a GUID"), "{e}");
    let e = Format::parse(
        "x",
        &raw.replace("label = \"nixos\"", "label = \"a-very-long-label-indeed\""),
    )
    .unwrap_err();
    assert!(e.to_string().contains("longer than 16"), "{e}");
    let e = Format::parse("x", &raw.replace("[root]", "[root]\nbogus = 1")).unwrap_err();
    assert!(e.to_string().contains("bogus"), "{e}");
}

/// Writes a format file deriving from `base` into `dir` and loads it.
fn load_with_base(dir: &Path, base: &str) -> Result<Format, FormatError> {
    let f = dir.join("derived.toml");
    std::fs::write(&f, format!("base = {base:?}\nname = \"derived\"\n")).unwrap();
    Format::load(f.to_str().unwrap())
}

/// Issue 27 item 1: `base` naming a device, a FIFO, a /proc file, a huge one-line file or
/// another file of the host is refused at once, and the error quotes none of it.
#[test]
fn hostile_bases_are_refused_fast_and_quote_nothing() {
    let d = tempfile::tempdir().unwrap();
    let fifo = d.path().join("fifo.toml");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    std::os::unix::fs::symlink("/dev/zero", d.path().join("zero.toml")).unwrap();
    std::os::unix::fs::symlink("/proc/self/environ", d.path().join("env.toml")).unwrap();
    // A shadow-like file: its one line must not appear in any message.
    let secret = "root:$6$Zq1secretHASHvalue$abcdefghijklmnop:19000:0:99999:7:::";
    std::fs::write(d.path().join("shadow"), format!("{secret}\n")).unwrap();
    let sub = d.path().join("a/b");
    std::fs::create_dir_all(&sub).unwrap();
    // 50 MB on one line.
    let huge = d.path().join("huge.toml");
    std::fs::write(&huge, vec![b'x'; 50_000_000]).unwrap();
    // A TOML file holding a long secret value where a format expects a partition type:
    // the value is quoted, but only its first characters.
    let long_secret = format!("token-{}-END", "s".repeat(200));
    std::fs::write(
        d.path().join("valid.toml"),
        BUILTIN[0]
            .1
            .replace("C12A7328-F81F-11D2-BA4B-00A0C93EC93B", &long_secret),
    )
    .unwrap();
    // The environment as it is (setting a variable here would race getenv in the
    // other test threads): no `NAME=value` entry of it may be quoted.
    let environ: Vec<String> = std::env::vars_os()
        .map(|(k, v)| format!("{}={}", k.to_string_lossy(), v.to_string_lossy()))
        .filter(|e| e.len() >= 8)
        .collect();
    let t = std::time::Instant::now();
    for (base, needle) in [
        ("/dev/zero", "a character device, not a regular file"),
        ("zero.toml", "a character device"),
        ("fifo.toml", "a FIFO, not a regular file"),
        ("env.toml", "a /proc or /sys file"),
        ("/proc/self/environ", "a /proc or /sys file"),
        ("shadow", "line 1, column"),
        ("../../shadow", "line 1, column"),
        ("huge.toml", "more than 1048576 bytes"),
        ("valid.toml", "is neither a GPT type GUID"),
    ] {
        let dir = if base.starts_with("..") {
            &sub
        } else {
            d.path()
        };
        let e = load_with_base(dir, base).unwrap_err();
        let msg = format!("{e}");
        assert!(msg.contains(needle), "{base}: {msg}");
        assert!(
            !msg.contains("Zq1secret"),
            "{base} quotes the secret: {msg}"
        );
        assert!(
            !environ.iter().any(|e| msg.contains(e.as_str())),
            "{base} quotes the environment"
        );
        assert!(!msg.contains("-END"), "{base} quotes a whole value: {msg}");
        assert!(msg.len() < 600, "{base}: {} bytes of message", msg.len());
    }
    assert!(t.elapsed() < std::time::Duration::from_secs(5));
    // The file named on the command line, 50 MB on one line: refused by size.
    let e = Format::load(huge.to_str().unwrap()).unwrap_err();
    assert!(e.to_string().len() < 300, "{e}");
    // Its own bad line is quoted, but short and escaped.
    let long = format!("name = \"x\"\nbad line {}\u{1b}[2J\n", "y".repeat(500_000));
    let e = Format::parse("mine", &long).unwrap_err().to_string();
    assert!(e.contains("line 2, column"), "{e}");
    assert!(e.len() < 300 && !e.contains('\u{1b}'), "{e}");
}

#[test]
fn extensions_names_and_labels_stay_in_their_place() {
    let raw = BUILTIN[0].1;
    // As TOML strings.
    for ext in [
        r#""../../tmp/x""#,
        r#""img/x""#,
        "\"..\"",
        r#"".img""#,
        r#""""#,
        r#""a\u0000b""#,
        r#""a b""#,
    ] {
        let t = raw.replace("extension = \"img\"", &format!("extension = {ext}"));
        assert_ne!(t, raw);
        let e = Format::parse("x", &t).unwrap_err().to_string();
        assert!(e.contains("is not a file-name extension"), "{ext:?}: {e}");
    }
    let ok = raw.replace("extension = \"img\"", "extension = \"raw.tar.gz\"");
    Format::parse("x", &ok).unwrap();
    for (label, why) in [
        (r#""ni\u0000xos""#, "NUL"),
        (r#""nix/os""#, "`/`"),
        (r#""nix\nos""#, "control"),
    ] {
        let t = raw.replace("label = \"nixos\"", &format!("label = {label}"));
        let e = Format::parse("x", &t).unwrap_err().to_string();
        assert!(e.contains(why), "{label:?}: {e}");
    }
    // 16 bytes is the most an ext4 label holds; 16 is fine.
    let t = raw.replace("label = \"nixos\"", "label = \"0123456789abcdef\"");
    Format::parse("x", &t).unwrap();
    for (name, why) in [(r#""ro\u0000ot""#, "NUL"), (r#""a/b""#, "`/`")] {
        let t = raw.replace("name = \"primary\"", &format!("name = {name}"));
        assert_ne!(t, raw);
        let e = Format::parse("x", &t).unwrap_err().to_string();
        assert!(e.contains(why), "{name:?}: {e}");
    }
    // GPT names: 36 UTF-16 units; a character outside the BMP takes two.
    let t = raw.replace(
        "name = \"primary\"",
        &format!("name = \"{}\"", "é".repeat(36)),
    );
    Format::parse("x", &t).unwrap();
    let t = raw.replace(
        "name = \"primary\"",
        &format!("name = \"{}\"", "😀".repeat(18)),
    );
    Format::parse("x", &t).unwrap();
    let t = raw.replace(
        "name = \"primary\"",
        &format!("name = \"{}\"", "😀".repeat(19)),
    );
    assert!(Format::parse("x", &t).is_err());
}

#[test]
fn guids() {
    let g = parse_guid("C12A7328-F81F-11D2-BA4B-00A0C93EC93B").unwrap();
    assert_eq!(g[0], 0xC1);
    assert_eq!(g[15], 0x3B);
    assert!(parse_guid("97FD5997-D90B-4AA3-8D16-C1723AEA73C").is_none());
    assert_eq!(
        parse_guid("c12a7328-f81f-11d2-ba4b-00a0c93ec93b"),
        Some(g),
        "either case"
    );
    for other in [
        "C12A7328F81F11D2BA4B00A0C93EC93B",
        "{C12A7328-F81F-11D2-BA4B-00A0C93EC93B}",
        "C12A7328F-81F-11D2-BA4B-00A0C93EC93B",
        "C12A7328-F81F-11D2-BA4B-00A0C93EC93G",
    ] {
        assert!(parse_guid(other).is_none(), "{other}");
    }
}

#[test]
fn tar_formats_take_their_keys_and_no_disk_keys() {
    for name in ["lxc", "lxc-metadata", "proxmox-lxc", "incus"] {
        let f = Format::load(name).expect("built in");
        assert_eq!(f.volume, Volume::Tar, "{name}");
        assert_eq!(f.container.kind.name(), "xz", "{name}");
        assert_eq!(f.extension, "tar.xz", "{name}");
        assert!(f.partitions.is_empty(), "{name}");
    }
    let layout = |n| Format::load(n).unwrap().tar.unwrap().layout;
    assert_eq!(layout("lxc"), TarLayout::Rootfs);
    assert_eq!(layout("lxc-metadata"), TarLayout::Metadata);
    assert_eq!(layout("incus"), TarLayout::Unified);
    assert!(Format::load("raw-efi").unwrap().tar.is_none());
    let lxc = BUILTIN.iter().find(|(n, _)| *n == "lxc").unwrap().1;
    let cases: [(&str, String, &str); 7] = [
        (
            "disk key",
            format!("{lxc}\n[table]\ntype = \"gpt\"\nalign = \"1MiB\"\n"),
            "volume `tar` has no partition table: no `table`",
        ),
        (
            "bootloader",
            format!("{lxc}\n[bootloader]\ntype = \"systemd-boot\"\n"),
            "volume `tar` has no boot loader of its own: no `bootloader`",
        ),
        (
            "no [tar]",
            lxc.replace("[tar]\nlayout = \"rootfs\"\n", "").replace(
                "directories = [\"dev\", \"proc\", \"sys\"]\nos-release = true\n",
                "",
            ),
            "missing field `tar`",
        ),
        (
            "container",
            lxc.replace("type = \"xz\"", "type = \"qcow2\""),
            "not in a `qcow2` container",
        ),
        (
            "parent dir",
            lxc.replace("\"proc\"", "\"../etc\""),
            "tar directory `../etc`",
        ),
        (
            "store",
            lxc.replace("\"proc\"", "\"nix/store/x\""),
            "outside /nix",
        ),
        (
            "layout",
            lxc.replace("layout = \"rootfs\"", "layout = \"disk\""),
            "unknown variant `disk`",
        ),
    ];
    for (case, text, want) in cases {
        let e = Format::parse("t", &text).expect_err(case).to_string();
        assert!(e.contains(want), "{case}: {e}");
    }
    // A disk format may not have `[tar]`.
    let raw = BUILTIN[0].1;
    let e = Format::parse("t", &format!("{raw}\n[tar]\nlayout = \"rootfs\"\n"))
        .expect_err("[tar] on a disk")
        .to_string();
    assert!(
        e.contains("volume `disk` is not a tar archive: no `tar`"),
        "{e}"
    );
}

#[test]
fn bios_formats_and_their_rules() {
    let raw = Format::load("raw").unwrap();
    assert_eq!(
        (raw.table.kind, raw.bootloader.kind, raw.partitions.len()),
        (TableType::Mbr, Bootloader::Grub, 1)
    );
    assert!(raw.root_partition().bootable);
    let d = Format::load("digitalocean").unwrap();
    assert_eq!(
        (d.extension.as_str(), d.container.kind.name()),
        ("qcow2.gz", "qcow2-gz")
    );
    assert_eq!(Format::load("hetzner").unwrap().table.kind, TableType::Mbr);
    let q = Format::load("qemu").unwrap();
    assert_eq!(
        (q.partitions[0].contents, q.partitions[0].filesystem),
        (Contents::BiosBoot, Filesystem::None)
    );
    assert!(q.partitions[0].mount_point.is_empty());
    let qemu = BUILTIN.iter().find(|(n, _)| *n == "qemu").unwrap().1;
    let refused = |text: String, want: &str| {
        let e = Format::parse("x", &text).unwrap_err().to_string();
        assert!(e.contains(want), "{want}: {e}");
    };
    // GRUB on GPT needs the BIOS boot partition; it is for GRUB only, GPT only, raw sectors.
    let no_bios = qemu.replacen("contents = \"bios-boot\"", "contents = \"root\"", 1);
    refused(no_bios, "exactly one root partition");
    refused(
        qemu.replace("type = \"grub\"", "type = \"extlinux\""),
        "a `bios-boot` partition is for `[bootloader] type = \"grub\"`",
    );
    refused(
        qemu.replacen("filesystem = \"none\"", "filesystem = \"fat\"", 1),
        "only they, have filesystem `none`",
    );
    refused(
        qemu.replacen(
            "contents = \"bios-boot\"",
            "contents = \"bios-boot\"\nmount-point = \"/x\"",
            1,
        ),
        "is not mounted",
    );
    let without = qemu
        .split("[[partition]]")
        .enumerate()
        .filter(|(i, _)| *i != 1)
        .map(|(_, p)| p)
        .collect::<Vec<_>>()
        .join("[[partition]]");
    refused(without, "GRUB on a GPT disk needs a `bios-boot` partition");
    // The hybrid: GRUB for UEFI too, /boot on the ESP; `efi` only with an ESP at /boot.
    assert!(q.bootloader.efi);
    assert_eq!(
        (
            q.partitions[1].contents,
            q.partitions[1].mount_point.as_str()
        ),
        (Contents::Esp, "/boot")
    );
    assert!(!raw.bootloader.efi);
    refused(
        qemu.replace("efi = true", "efi = false"),
        "an `esp` partition with GRUB needs `[bootloader] efi = true`",
    );
    refused(
        qemu.replace("mount-point = \"/boot\"", "mount-point = \"/boot/efi\""),
        "keeps /boot on the `esp` partition",
    );
    let no_esp = qemu
        .split("[[partition]]")
        .enumerate()
        .filter(|(i, _)| *i != 2)
        .map(|(_, p)| p)
        .collect::<Vec<_>>()
        .join("[[partition]]");
    refused(no_esp, "GRUB with `efi` needs an `esp` partition");
    let raw_text = BUILTIN.iter().find(|(n, _)| *n == "raw-efi").unwrap().1;
    refused(
        raw_text.replace("timeout = 5", "timeout = 5\nefi = true"),
        "`[bootloader] efi` is for `type = \"grub\"`",
    );
}

#[test]
fn a_disk_without_a_table_holds_the_root_alone() {
    let l = Format::load("linode").unwrap();
    assert_eq!(
        (l.table.kind, l.bootloader.kind, l.container.kind.name()),
        (TableType::None, Bootloader::Grub, "gzip")
    );
    assert_eq!(l.extension, "img.gz");
    assert_eq!(l.root_partition().type_id, None);
    let c = Format::load("cloudstack").unwrap();
    assert_eq!(
        (c.table.kind, c.container.kind.name(), c.extension.as_str()),
        (TableType::Mbr, "qcow2", "qcow2")
    );
    let linode = BUILTIN.iter().find(|(n, _)| *n == "linode").unwrap().1;
    let refused = |text: String, want: &str| {
        let e = Format::parse("x", &text).unwrap_err().to_string();
        assert!(e.contains(want), "{want}: {e}");
    };
    let part = "name = \"nixos\"\n";
    refused(
        linode.replacen(part, &format!("{part}type = \"0x83\"\n"), 1),
        "has no `type` or `bootable`",
    );
    refused(
        linode.replacen(part, &format!("{part}bootable = true\n"), 1),
        "has no `type` or `bootable`",
    );
    refused(
        linode.replacen(part, &format!("{part}start = \"1MiB\"\n"), 1),
        "starts its file system at byte 0",
    );
    let esp = "[[partition]]\nname = \"ESP\"\nsize = \"64MiB\"\nfilesystem = \"fat32\"\n\
               label = \"ESP\"\ncontents = \"esp\"\nmount-point = \"/boot\"\n\n";
    refused(
        linode.replacen("[[partition]]\n", &format!("{esp}[[partition]]\n"), 1),
        "holds one file system, not 2 partitions",
    );
    refused(
        linode.replace("type = \"grub\"", "type = \"systemd-boot\""),
        "systemd-boot needs a GPT table",
    );
    // A table needs each partition's type.
    refused(
        linode.replace("type = \"none\"", "type = \"mbr\""),
        "partition `nixos`: no `type`",
    );
    // An explicit start of 0 is the same disk.
    let zero = linode.replacen(part, &format!("{part}start = 0\n"), 1);
    assert_eq!(
        Format::parse("x", &zero).unwrap().table.kind,
        TableType::None
    );
}

#[test]
fn iso_formats_have_no_partition_keys_and_take_a_list_of_systems() {
    let iso = Format::load("iso").unwrap();
    assert_eq!(iso.volume, Volume::Iso9660);
    assert!(iso.partitions.is_empty());
    assert!(iso.system.contains("x86_64-linux") && iso.system.contains("aarch64-linux"));
    assert!(!iso.system.contains("riscv64-linux"));
    assert_eq!(iso.system.to_string(), "x86_64-linux or aarch64-linux");
    assert_eq!(
        serde_json::to_value(&iso.system).unwrap(),
        serde_json::json!(["x86_64-linux", "aarch64-linux"])
    );
    let raw = Format::load("raw-efi").unwrap();
    assert_eq!(raw.volume, Volume::Disk);
    assert_eq!(serde_json::to_value(&raw.system).unwrap(), "x86_64-linux");
    let installer = Format::load("iso-installer").unwrap();
    assert_eq!(installer.volume, Volume::Iso9660);
    assert_eq!(installer.extension, "iso");

    // An ISO with a disk's keys, a disk without them, an ISO in a container, no systems.
    let with = |extra: &str| Format::parse("x", &format!("base = \"iso\"\n{extra}"));
    for (extra, want) in [
        ("[table]\ntype = \"gpt\"\nalign = \"1MiB\"\n", "no `table`"),
        ("[root]\ndatabase = true\n", "no `root`"),
        ("[container]\ntype = \"qcow2\"\n", "written raw"),
        ("system = []\n", "lists no system"),
    ] {
        let e = with(extra).unwrap_err().to_string();
        assert!(e.contains(want), "{extra}: {e}");
    }
    let no_table = BUILTIN[0]
        .1
        .replace("[table]\ntype = \"gpt\"\nalign = \"1MiB\"\n", "");
    let e = Format::parse("x", &no_table).unwrap_err().to_string();
    assert!(e.contains("missing field `table`"), "{e}");
}

/// `[bootloader] uki = true` (issue 26 step 2): a raw-efi derivative takes it, off by
/// default; GRUB, extlinux and ISO formats refuse it.
#[test]
fn uki_is_a_systemd_boot_disk_option() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("uki.toml");
    std::fs::write(
        &f,
        "base = \"raw-efi\"\nname = \"raw-efi-uki\"\n[bootloader]\nuki = true\n",
    )
    .unwrap();
    let uki = Format::load(f.to_str().unwrap()).unwrap();
    assert!(uki.bootloader.uki);
    assert_eq!(uki.bootloader.kind, Bootloader::SystemdBoot);
    assert_eq!(
        uki.bootloader.timeout,
        Some(5),
        "the base's timeout is kept"
    );
    // Only the A/B appliance boots a UKI (systemd-sysupdate replaces it with the slots).
    for (name, _) in BUILTIN {
        let f = Format::load(name).unwrap();
        assert_eq!(f.bootloader.uki, *name == "appliance", "{name}");
    }
    for (base, want) in [
        (
            "raw",
            "`uki = true` is for `[bootloader] type = \"systemd-boot\"`",
        ),
        (
            "sd-aarch64",
            "`uki = true` is for `[bootloader] type = \"systemd-boot\"`",
        ),
        (
            "iso",
            "an iso9660 volume boots type #1 entries, not `uki = true`",
        ),
    ] {
        std::fs::write(
            &f,
            format!("base = {base:?}\nname = \"x\"\n[bootloader]\nuki = true\n"),
        )
        .unwrap();
        let e = Format::load(f.to_str().unwrap()).unwrap_err();
        assert!(
            imgbuild_units::error_chain(&e).contains(want),
            "{base}: {}",
            imgbuild_units::error_chain(&e)
        );
    }
}
