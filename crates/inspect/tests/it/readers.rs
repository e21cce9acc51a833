//! What the readers report, checked against other people's tools: sfdisk, blkid, dumpe2fs,
//! mtools (`mcopy`), the fatfs crate, and the source trees themselves.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use imgbuild_inspect::{Compression, Container, Image, Kind, TableKind};
use serde_json::Value;

use crate::common::{self, demo, run};

fn sfdisk(img: &Path) -> Value {
    serde_json::from_str(&run(Command::new("sfdisk").arg("--json").arg(img))).unwrap()
}

/// `blkid -p` of the filesystem at `offset`: TYPE, LABEL, UUID, ...
fn blkid(img: &Path, offset: u64) -> BTreeMap<String, String> {
    run(Command::new("blkid")
        .args(["-p", "-o", "export", "-O", &offset.to_string()])
        .arg(img))
    .lines()
    .filter_map(|l| l.split_once('='))
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// `dumpe2fs -h` fields of the ext4 filesystem at `offset`.
fn dumpe2fs(img: &Path, offset: u64) -> BTreeMap<String, String> {
    let spec = format!("{}?offset={offset}", img.display());
    run(Command::new("dumpe2fs").arg("-h").arg(spec))
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

fn num(m: &BTreeMap<String, String>, k: &str) -> u64 {
    m[k].parse().unwrap_or_else(|_| panic!("{k}: {}", m[k]))
}

/// Checks every filesystem of `img` against blkid and dumpe2fs / the fatfs crate.
fn check_filesystems(img: &Path) {
    let i = Image::open(img).unwrap();
    let r = i.inspect();
    for p in &r.partitions {
        let fs = p
            .filesystem
            .as_ref()
            .expect("every partition has a filesystem");
        assert!(fs.error.is_none(), "{fs:?}");
        let b = blkid(img, p.partition.entry.start);
        assert_eq!(
            fs.summary.label.as_deref(),
            b.get("LABEL").map(String::as_str),
            "{b:?}"
        );
        let uuid = b["UUID"].clone();
        assert_eq!(fs.summary.uuid.as_deref(), Some(uuid.as_str()), "{b:?}");
        if b["TYPE"] == "ext4" {
            assert_eq!(fs.summary.kind, "ext4");
            let d = dumpe2fs(img, p.partition.entry.start);
            let bs = num(&d, "Block size");
            assert_eq!(fs.block_size, bs);
            assert_eq!(fs.summary.size, num(&d, "Block count") * bs);
            assert_eq!(
                fs.used,
                (num(&d, "Block count") - num(&d, "Free blocks")) * bs
            );
            assert_eq!(fs.inodes, Some(num(&d, "Inode count")));
            assert_eq!(
                fs.inodes_used,
                Some(num(&d, "Inode count") - num(&d, "Free inodes"))
            );
        } else {
            assert_eq!(b["TYPE"], "vfat");
            assert_eq!(fs.summary.kind, b["VERSION"].to_lowercase(), "{b:?}");
            // The fatfs crate, on the partition's bytes.
            let mut f = std::fs::File::open(img).unwrap();
            f.seek(SeekFrom::Start(p.partition.entry.start)).unwrap();
            let mut bytes = vec![0u8; p.partition.entry.size as usize];
            f.read_exact(&mut bytes).unwrap();
            let ff = fatfs::FileSystem::new(std::io::Cursor::new(bytes), fatfs::FsOptions::new())
                .unwrap();
            let st = ff.stats().unwrap();
            assert_eq!(fs.block_size, u64::from(st.cluster_size()));
            assert_eq!(
                fs.used,
                u64::from(st.total_clusters() - st.free_clusters()) * u64::from(st.cluster_size())
            );
        }
    }
}

#[test]
fn classic_sd_image_is_explained() {
    let t = tempfile::tempdir().unwrap();
    let img = common::classic("sd", &t.path().join("sd.img"), None);
    let i = Image::open(&img).unwrap();
    assert!(i.warnings().is_empty(), "{:?}", i.warnings());
    let r = i.inspect();
    // Table, against sfdisk.
    let sf = sfdisk(&img);
    let pt = &sf["partitiontable"];
    assert_eq!(pt["label"], "dos");
    assert_eq!(r.table.kind, TableKind::Mbr);
    assert_eq!(r.table.disk_id.as_deref(), pt["id"].as_str());
    assert_eq!(r.partitions.len(), 2);
    for (p, s) in r
        .partitions
        .iter()
        .zip(pt["partitions"].as_array().unwrap())
    {
        assert_eq!(p.partition.entry.first_lba, s["start"].as_u64().unwrap());
        assert_eq!(p.partition.entry.size / 512, s["size"].as_u64().unwrap());
        assert_eq!(
            p.partition.entry.type_id,
            format!("0x{:0>2}", s["type"].as_str().unwrap())
        );
        assert_eq!(
            p.partition.entry.flags.contains(&"boot".to_string()),
            s["bootable"].as_bool().unwrap_or(false)
        );
    }
    check_filesystems(&img);
    // Boot: extlinux on the root, Pi firmware on partition 1.
    let x = &r.boot.extlinux[0];
    assert_eq!(
        (x.partition, x.config.as_str()),
        (2, "/boot/extlinux/extlinux.conf")
    );
    assert_eq!(x.default.as_deref(), Some("nixos-default"));
    assert_eq!(x.timeout.as_deref(), Some("50"));
    let e = &x.entries[0];
    assert!(e.default);
    assert_eq!(e.menu_label.as_deref(), Some("NixOS - Default"));
    assert!(e
        .linux
        .as_deref()
        .unwrap()
        .ends_with("-linux-6.1.0-imgbuild-demo-bzImage"));
    assert!(e.missing.is_empty(), "{:?}", e.missing);
    let toplevel = std::fs::read_link(demo().join("result")).unwrap();
    let toplevel = toplevel.to_str().unwrap();
    assert_eq!(
        e.append.as_deref(),
        Some(format!("init={toplevel}/init console=ttyS0,115200 panic=1 loglevel=4").as_str())
    );
    let pi = &r.boot.raspberry_pi[0];
    assert_eq!(pi.partition, 1);
    assert_eq!(pi.kernels[0].file, "u-boot-rpi4.bin");
    assert_eq!(pi.kernels[0].section, "pi4");
    assert!(pi.kernels[0].present);
    assert_eq!(pi.armstub.as_deref(), Some("armstub8-gic.bin"));
    assert!(r.boot.systemd_boot.is_empty());
    // NixOS: no profile, the toplevel from the boot entry, registration counted.
    let n = r.nixos.as_ref().unwrap();
    assert_eq!(n.toplevel.as_deref(), Some(toplevel));
    assert_eq!(n.toplevel_from.as_deref(), Some("boot entry"));
    assert!(n.profile.is_empty());
    assert_eq!(
        n.version.as_deref(),
        Some(
            std::fs::read_to_string(demo().join(&toplevel[1..]).join("nixos-version"))
                .unwrap()
                .trim()
        )
    );
    let paths = std::fs::read_to_string(demo().join("closure-info/store-paths")).unwrap();
    let count = paths.lines().count() as u64;
    assert_eq!(n.registered.len(), 1);
    assert_eq!(n.registered[0].source, "/nix-path-registration");
    assert_eq!(n.registered[0].count, count);
    assert_eq!(n.registered[0].toplevel_registered, Some(true));
    assert_eq!(n.registered[0].missing_from_store, Some(0));
    assert_eq!(n.store.as_ref().unwrap().paths, count);
    assert!(!n.etc_nixos);
}

#[test]
fn classic_efi_image_is_explained() {
    let t = tempfile::tempdir().unwrap();
    let img = common::classic("efi", &t.path().join("efi.img"), None);
    let i = Image::open(&img).unwrap();
    assert!(i.warnings().is_empty(), "{:?}", i.warnings());
    let r = i.inspect();
    let sf = sfdisk(&img);
    let pt = &sf["partitiontable"];
    assert_eq!(pt["label"], "gpt");
    assert_eq!(r.table.kind, TableKind::Gpt);
    assert_eq!(r.table.disk_id.as_deref(), pt["id"].as_str());
    assert_eq!(r.table.first_usable_lba, pt["firstlba"].as_u64());
    assert_eq!(r.table.last_usable_lba, pt["lastlba"].as_u64());
    assert_eq!(r.table.backup_ok, Some(true));
    for (p, s) in r
        .partitions
        .iter()
        .zip(pt["partitions"].as_array().unwrap())
    {
        let q = &p.partition;
        assert_eq!(q.entry.first_lba, s["start"].as_u64().unwrap());
        assert_eq!(q.entry.size / 512, s["size"].as_u64().unwrap());
        assert_eq!(q.entry.type_id, s["type"].as_str().unwrap());
        assert_eq!(q.entry.guid.as_deref(), s["uuid"].as_str());
        assert_eq!(q.entry.name.as_deref(), s["name"].as_str());
    }
    assert_eq!(
        r.partitions[0].partition.entry.type_name,
        Some("EFI System")
    );
    check_filesystems(&img);
    let sb = &r.boot.systemd_boot[0];
    assert_eq!(sb.partition, 1);
    assert_eq!(sb.default.as_deref(), Some("nixos-generation-1.conf"));
    assert_eq!(
        sb.loader_conf,
        vec![
            ("timeout".to_string(), "5".to_string()),
            ("default".into(), "nixos-generation-1.conf".into()),
            ("console-mode".into(), "keep".into())
        ]
    );
    let e = &sb.entries[0];
    assert_eq!(e.file, "nixos-generation-1.conf");
    assert!(e.default);
    assert_eq!(e.title.as_deref(), Some("NixOS"));
    assert_eq!(e.initrd.len(), 1);
    assert!(e.missing.is_empty(), "{:?}", e.missing);
    let names: Vec<&str> = sb.binaries.iter().map(|b| b.path.as_str()).collect();
    assert_eq!(
        names,
        ["/EFI/BOOT/BOOTX64.EFI", "/EFI/systemd/systemd-bootx64.efi"]
    );
    let toplevel = std::fs::read_link(demo().join("result")).unwrap();
    let toplevel = toplevel.to_str().unwrap();
    let n = r.nixos.as_ref().unwrap();
    assert_eq!(n.partition, 2);
    assert_eq!(n.toplevel.as_deref(), Some(toplevel));
    assert_eq!(n.toplevel_from.as_deref(), Some("profile"));
    assert_eq!(
        n.profile,
        ["/nix/var/nix/profiles/system", "system-1-link", toplevel]
    );
    assert_eq!(n.generations, [1]);
    assert_eq!(n.system.as_deref(), Some("x86_64-linux"));
    assert!(n.etc_nixos);
    let count = std::fs::read_to_string(demo().join("closure-info/store-paths"))
        .unwrap()
        .lines()
        .count() as u64;
    assert_eq!(n.registered[0].source, "/nix/var/nix/db/db.sqlite");
    assert_eq!(n.registered[0].count, count);
    assert_eq!(n.registered[0].toplevel_registered, Some(true));
    assert_eq!(n.store.as_ref().unwrap().unregistered, Some(0));
    // Partitions by label, by GPT name and by number.
    assert!(i
        .filesystem("ESP")
        .unwrap()
        .exists(b"/loader/loader.conf")
        .unwrap());
    assert!(i
        .filesystem("esp")
        .unwrap()
        .exists(b"/LOADER/LOADER.CONF")
        .unwrap());
    assert!(i
        .filesystem("primary")
        .unwrap()
        .exists(b"/etc/NIXOS")
        .unwrap());
    assert!(i.filesystem("2").unwrap().exists(b"/etc/NIXOS").unwrap());
    let e = i.filesystem("9").unwrap_err();
    assert!(
        e.to_string().contains("partitions: 1 (ESP), 2 (nixos)"),
        "{e}"
    );
}

/// Kind, mode, size, symlink target, content.
type Node = (Kind, u32, u64, Option<String>, Vec<u8>);

/// Walks `dir` on the host: path -> node.
fn host_tree(root: &Path) -> BTreeMap<String, Node> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let v = if m.file_type().is_symlink() {
                let t = std::fs::read_link(&p).unwrap().display().to_string();
                (
                    Kind::Symlink,
                    m.mode() & 0o7777,
                    m.len(),
                    Some(t),
                    Vec::new(),
                )
            } else if m.is_dir() {
                stack.push(p.clone());
                (Kind::Dir, m.mode() & 0o7777, 0, None, Vec::new())
            } else {
                (
                    Kind::File,
                    m.mode() & 0o7777,
                    m.len(),
                    None,
                    std::fs::read(&p).unwrap(),
                )
            };
            out.insert(rel, v);
        }
    }
    out
}

#[test]
fn ext4_tree_reads_back_like_its_source() {
    let t = tempfile::tempdir().unwrap();
    let img = common::classic("sd", &t.path().join("sd.img"), None);
    let i = Image::open(&img).unwrap();
    let fs = i.root_filesystem().unwrap();
    let want = host_tree(&demo().join("nix/store"));
    let mut got = BTreeMap::new();
    fs.walk(b"/nix/store", |p, e, _| {
        if p != b"/nix/store" {
            let rel = String::from_utf8(p[b"/nix/store/".len()..].to_vec()).unwrap();
            let content = if e.kind == Kind::File {
                fs.read_to_vec(p, 1 << 20)?
            } else {
                Vec::new()
            };
            let size = if e.kind == Kind::Dir { 0 } else { e.size };
            let target = e
                .target
                .as_ref()
                .map(|t| String::from_utf8(t.clone()).unwrap());
            got.insert(rel, (e.kind, u32::from(e.mode), size, target, content));
        }
        Ok(true)
    })
    .unwrap();
    assert_eq!(got.len(), want.len());
    for (k, v) in &want {
        assert_eq!(got.get(k), Some(v), "{k}");
    }
    // ls of a symlink and a file; cat through a symlink.
    let tl = std::fs::read_link(demo().join("result")).unwrap();
    let tl = tl.to_str().unwrap().as_bytes();
    let kernel = fs.metadata(&[tl, b"/kernel"].concat()).unwrap();
    assert_eq!(kernel.kind, Kind::Symlink);
    assert_eq!(kernel.mode_string(), "lrwxrwxrwx");
    let via_link = fs.read_to_vec(&[tl, b"/kernel"].concat(), 1 << 20).unwrap();
    let direct = std::fs::read(
        demo().join("nix/store/knh4j0zphbwpnpgrplpd6q9j2r59d4wa-linux-6.1.0-imgbuild-demo/bzImage"),
    )
    .unwrap();
    assert_eq!(via_link, direct);
    let root = fs.read_dir(b"/").unwrap();
    let names: Vec<String> = root
        .iter()
        .map(|e| String::from_utf8_lossy(&e.name).into())
        .collect();
    assert_eq!(
        names,
        ["boot", "lost+found", "nix", "nix-path-registration"]
    );
    let e = fs.read_to_vec(b"/nix", 10).unwrap_err();
    assert!(
        matches!(e, imgbuild_inspect::Error::IsADirectory { .. }),
        "{e}"
    );
    let e = fs.metadata(b"/nope").unwrap_err();
    assert!(e.is_not_found(), "{e}");
    assert!(
        e.to_string().contains("partition 2 (NIXOS_SD) `/nope`"),
        "{e}"
    );
}

/// FAT12, FAT16 and FAT32 trees: copied out by us, and by mcopy, must be equal; listings
/// agree with the fatfs crate.
#[test]
fn fat_trees_match_mtools_and_fatfs() {
    for (size, bits, spc) in [(1440, 12, None), (16384, 16, Some(2)), (40960, 32, Some(1))] {
        let t = tempfile::tempdir().unwrap();
        let img = common::bare_fat(t.path(), size, Some(bits), spc);
        let i = Image::open(&img).unwrap();
        let fs = i.filesystem("0").unwrap();
        assert_eq!(fs.info().summary.kind, format!("fat{bits}"));
        assert_eq!(fs.info().summary.label.as_deref(), Some("BARE"));
        assert_eq!(fs.info().summary.uuid.as_deref(), Some("0BAD-CAFE"));
        let ours = t.path().join("ours");
        let s = imgbuild_inspect::copy_out(fs, b"/", &ours).unwrap();
        assert_eq!(s.files, 45, "{s:?}");
        let theirs = t.path().join("theirs");
        std::fs::create_dir(&theirs).unwrap();
        run(Command::new("mcopy")
            .env("MTOOLS_SKIP_CHECK", "1")
            .args(["-s", "-n", "-i"])
            .arg(&img)
            .args([
                "::/Deep",
                "::/README.TXT",
                "::/a rather long file name.conf",
            ])
            .arg(&theirs));
        run(Command::new("diff").arg("-r").arg(&ours).arg(&theirs));
        // Names and sizes as the fatfs crate sees them.
        let bytes = std::fs::read(&img).unwrap();
        let ff =
            fatfs::FileSystem::new(std::io::Cursor::new(bytes), fatfs::FsOptions::new()).unwrap();
        let deep: BTreeMap<String, u64> = ff
            .root_dir()
            .open_dir("Deep")
            .unwrap()
            .iter()
            .map(|e| e.unwrap())
            .filter(|e| e.file_name() != "." && e.file_name() != "..")
            .map(|e| (e.file_name(), if e.is_dir() { 0 } else { e.len() }))
            .collect();
        let mine: BTreeMap<String, u64> = fs
            .read_dir(b"/Deep")
            .unwrap()
            .into_iter()
            .map(|e| (String::from_utf8(e.name).unwrap(), e.size))
            .collect();
        assert_eq!(mine, deep);
        // Case-insensitive lookup, long and short names.
        assert_eq!(
            fs.read_to_vec(
                "/deep/ER/STILL/a long directory name/ÜNÏCÖDÉ FILE.TXT".as_bytes(),
                100
            )
            .unwrap(),
            b"utf\n"
        );
        assert_eq!(
            fs.read_to_vec(b"/ARATHE~1.CON", 10_000).unwrap().len(),
            5000
        );
    }
}

#[test]
fn zstd_image_reads_like_the_raw_one() {
    let t = tempfile::tempdir().unwrap();
    let img = common::classic("efi", &t.path().join("efi.img"), None);
    run(Command::new("zstd").args(["-q", "-T0", "-k"]).arg(&img));
    let zst = t.path().join("efi.img.zst");
    let raw = Image::open(&img).unwrap().inspect();
    let z = Image::open(&zst).unwrap();
    assert_eq!(z.compression(), Compression::Zstd);
    let mut zr = serde_json::to_value(z.inspect()).unwrap();
    let mut rr = serde_json::to_value(raw).unwrap();
    assert_eq!(zr["file_size"], std::fs::metadata(&zst).unwrap().len());
    for v in [&mut zr, &mut rr] {
        let o = v.as_object_mut().unwrap();
        o.remove("image");
        o.remove("compression");
        o.remove("file_size");
    }
    assert_eq!(zr, rr);
    // The decompressed copy went to a temporary directory we chose, and is gone.
    let tmp = t.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let opts = imgbuild_inspect::OpenOptions {
        temp_dir: Some(tmp.clone()),
        ..Default::default()
    };
    let z = Image::open_with(&zst, &opts).unwrap();
    assert_eq!(z.disk_size(), std::fs::metadata(&img).unwrap().len());
    assert_eq!(
        std::fs::read_dir(&tmp).unwrap().count(),
        0,
        "anonymous temporary file"
    );
}

/// A gzip stream (Linode's `.img.gz`) and a gzipped qcow2 (DigitalOcean's `.qcow2.gz`) read
/// like the raw image; a gzipped tar stays a GCE image.
#[test]
fn gzip_image_and_gzipped_qcow2_read_like_the_raw_one() {
    if !imgbuild_testutil::have_tool("qemu-img", "apt-get install qemu-utils") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let img = common::classic("efi", &t.path().join("efi.img"), None);
    let qcow = t.path().join("efi.qcow2");
    run(Command::new("qemu-img")
        .args(["convert", "-f", "raw", "-O", "qcow2"])
        .arg(&img)
        .arg(&qcow));
    run(Command::new("gzip").args(["-k", "-1"]).arg(&img).arg(&qcow));
    let comparable = |i: &Image| {
        let mut v = serde_json::to_value(i.inspect()).unwrap();
        let o = v.as_object_mut().unwrap();
        for k in ["image", "compression", "file_size", "container"] {
            o.remove(k);
        }
        v
    };
    let raw = comparable(&Image::open(&img).unwrap());
    for (gz, container) in [
        ("efi.img.gz", Container::Raw),
        ("efi.qcow2.gz", Container::Qcow2),
    ] {
        let i = Image::open(&t.path().join(gz)).unwrap();
        assert_eq!(i.compression(), Compression::Gzip, "{gz}");
        assert_eq!(i.container(), container, "{gz}");
        assert_eq!(comparable(&i), raw, "{gz}");
    }
}

/// nixos-generators' raw-efi images boot with GRUB: its menu entries are listed.
#[test]
fn grub_menu_entries_are_listed() {
    let t = tempfile::tempdir().unwrap();
    let img = common::bare_fat(t.path(), 1440, Some(12), None);
    let cfg = t.path().join("grub.cfg");
    std::fs::write(
        &cfg,
        "set timeout=5\nmenuentry \"NixOS - Default\" {\n  linux /kernels/x\n}\n  menuentry 'NixOS - Configuration 1' --class nixos {\n}\nsubmenu \"more\" {}\n",
    )
    .unwrap();
    run(Command::new("mmd")
        .env("MTOOLS_SKIP_CHECK", "1")
        .args(["-i"])
        .arg(&img)
        .args(["::/EFI", "::/EFI/BOOT"]));
    run(Command::new("mcopy")
        .env("MTOOLS_SKIP_CHECK", "1")
        .args(["-i"])
        .arg(&img)
        .arg(&cfg)
        .arg("::/EFI/BOOT/grub.cfg"));
    let r = Image::open(&img).unwrap().inspect();
    assert_eq!(r.boot.grub.len(), 1);
    assert_eq!(r.boot.grub[0].config, "/EFI/BOOT/grub.cfg");
    assert_eq!(
        r.boot.grub[0].entries,
        ["NixOS - Default", "NixOS - Configuration 1"]
    );
    assert!(r.nixos.is_none());
}
