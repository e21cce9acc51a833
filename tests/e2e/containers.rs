//! The container formats (qemu-efi, amazon, azure, gce) checked with the readers clouds and
//! hypervisors use: `qemu-img compare/check/info`, `vhdiinfo`, GNU tar and gzip, then the
//! disk inside with sgdisk and e2fsck. The disk in every container is the raw-efi disk of the
//! same seed, byte for byte.

use std::path::Path;
use std::process::Command;

use crate::common::*;

fn build(format: &str, out: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["--seed", "containers"];
    args.extend_from_slice(extra);
    run_demo(format, out, &args)
}

fn file_size(p: &Path) -> u64 {
    std::fs::metadata(p).unwrap().len()
}

/// The image file is what the manifest says it is.
fn check_manifest(m: &serde_json::Value, img: &Path, container: &str) {
    assert_eq!(m["container"], container);
    assert_eq!(m["image_size"].as_u64().unwrap(), file_size(img));
    assert_eq!(m["sha256"].as_str().unwrap(), sha256(img));
}

#[track_caller]
fn qemu_img_identical(fmt: &str, img: &Path, raw: &Path) {
    let out = stdout(
        Command::new("qemu-img")
            .args(["compare", "-f", fmt, "-F", "raw"])
            .arg(img)
            .arg(raw),
    );
    assert!(out.contains("Images are identical"), "{out}");
}

/// imgbuild reads the container back as the raw disk's system: `diff` finds nothing.
#[track_caller]
fn reads_as_raw(img: &Path, raw: &Path, kind: &str) {
    let o = imgbuild(&[
        "diff",
        &raw.display().to_string(),
        &img.display().to_string(),
    ])
    .output()
    .unwrap();
    let said = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{said}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(said.contains("identical"), "{said}");
    assert_eq!(inspect_json(img)["container"], kind);
}

#[test]
fn qcow2_vhd_and_azure_hold_the_raw_efi_disk() {
    let t = tempfile::tempdir().unwrap();
    let raw = t.path().join("disk.img");
    let m = build("raw-efi", &raw, &[]);
    let disk_sha = m["disk_sha256"].as_str().unwrap().to_string();
    let disk_size = m["disk_size"].as_u64().unwrap();

    let q = t.path().join("disk.qcow2");
    let mq = build("qemu-efi", &q, &[]);
    check_manifest(&mq, &q, "qcow2");
    assert_eq!(mq["disk_sha256"], disk_sha.as_str());
    assert!(mq.get("bmap").is_none(), "no bmap without a raw disk");
    qemu_img_identical("qcow2", &q, &raw);
    let check = stdout(Command::new("qemu-img").arg("check").arg(&q));
    assert!(check.contains("No errors were found"), "{check}");
    let info: serde_json::Value = serde_json::from_str(&stdout(
        Command::new("qemu-img")
            .args(["info", "--output=json"])
            .arg(&q),
    ))
    .unwrap();
    assert_eq!(info["format"], "qcow2");
    assert_eq!(info["virtual-size"].as_u64().unwrap(), disk_size);
    // Only the clusters holding data are stored.
    assert!(file_size(&q) < disk_size / 50, "{}", file_size(&q));
    reads_as_raw(&q, &raw, "qcow2");
    // Containers written by qemu-img read the same: compressed qcow2, monolithic sparse
    // VMDK.
    for (fmt, opts, kind) in [("qcow2", "-c", "qcow2"), ("vmdk", "", "vmdk")] {
        let c = t.path().join(format!("qemu-img.{fmt}"));
        let mut cmd = Command::new("qemu-img");
        cmd.args(["convert", "-O", fmt]);
        if !opts.is_empty() {
            cmd.arg(opts);
        }
        ok(cmd.arg(&raw).arg(&c));
        reads_as_raw(&c, &raw, kind);
    }

    let v = t.path().join("disk.vhd");
    let mv = build("amazon", &v, &[]);
    check_manifest(&mv, &v, "vhd");
    qemu_img_identical("vpc", &v, &raw);
    let info = stdout(Command::new("vhdiinfo").arg(&v));
    assert!(info.contains("Disk type\t\t: Dynamic"), "{info}");
    reads_as_raw(&v, &raw, "vhd");
    assert!(info.contains(&format!("({disk_size} bytes)")), "{info}");

    let a = t.path().join("azure.vhd");
    let ma = build("azure", &a, &[]);
    check_manifest(&ma, &a, "vhd-fixed");
    assert_eq!(file_size(&a), disk_size + 512);
    assert_eq!(disk_size % (1 << 20), 0, "Azure takes whole MiB");
    qemu_img_identical("vpc", &a, &raw);
    let info = stdout(Command::new("vhdiinfo").arg(&a));
    assert!(info.contains("Disk type\t\t: Fixed"), "{info}");
    reads_as_raw(&a, &raw, "vhd-fixed");
    // The raw disk is the file's start, and as sparse as the raw image.
    let head = stdout(&mut sh(&format!(
        "head -c {disk_size} {} | sha256sum",
        a.display()
    )));
    assert!(head.starts_with(&disk_sha), "{head}");

    let h = t.path().join("disk.vhdx");
    let mh = build("hyperv", &h, &[]);
    check_manifest(&mh, &h, "vhdx");
    qemu_img_identical("vhdx", &h, &raw);
    let check = stdout(
        Command::new("qemu-img")
            .args(["check", "-f", "vhdx"])
            .arg(&h),
    );
    assert!(check.contains("No errors were found"), "{check}");
    let info = stdout(Command::new("vhdiinfo").arg(&h));
    assert!(info.contains("VHDX"), "{info}");
    reads_as_raw(&h, &raw, "vhdx");
    assert!(info.contains(&format!("({disk_size} bytes)")), "{info}");

    // --keep-raw: the raw disk and its bmap beside the container.
    let q2 = t.path().join("kept.qcow2");
    let mk = build("qemu-efi", &q2, &["--keep-raw"]);
    let kept = t.path().join(mk["raw_image"].as_str().unwrap());
    assert_eq!(sha256(&kept), disk_sha);
    assert!(t.path().join(mk["bmap"].as_str().unwrap()).exists());
    assert_eq!(
        sha256(&q2),
        sha256(&q),
        "the same container with or without --keep-raw"
    );
}

#[test]
fn vmware_vmdk_and_virtualbox_ova() {
    let t = tempfile::tempdir().unwrap();
    let raw = t.path().join("disk.img");
    let m = build("raw-efi", &raw, &[]);
    let disk_size = m["disk_size"].as_u64().unwrap();

    let v = t.path().join("nixos.vmdk");
    let mv = build("vmware", &v, &["-j", "1"]);
    check_manifest(&mv, &v, "vmdk");
    qemu_img_identical("vmdk", &v, &raw);
    let check = stdout(
        Command::new("qemu-img")
            .args(["check", "-f", "vmdk"])
            .arg(&v),
    );
    assert!(check.contains("No errors were found"), "{check}");
    let info = stdout(Command::new("vmdkinfo").arg(&v));
    assert!(info.contains("Stream optimized"), "{info}");
    reads_as_raw(&v, &raw, "vmdk");
    assert!(info.contains(&format!("({disk_size} bytes)")), "{info}");
    // Grains are compressed on a pool of threads: the same bytes with more.
    let v3 = t.path().join("j3.vmdk");
    build("vmware", &v3, &["-j", "3"]);
    assert_eq!(sha256(&v), sha256(&v3));

    let ova = t.path().join("nixos.ova");
    let mo = build("virtualbox", &ova, &[]);
    check_manifest(&mo, &ova, "ova");
    reads_as_raw(&ova, &raw, "ova");
    let list = stdout(Command::new("tar").arg("-tf").arg(&ova));
    assert_eq!(list, "nixos.ovf\ndisk.vmdk\nnixos.mf\n");
    let x = t.path().join("x");
    std::fs::create_dir(&x).unwrap();
    ok(Command::new("tar").arg("-xf").arg(&ova).arg("-C").arg(&x));
    let vmdk = x.join("disk.vmdk");
    // The OVA's disk is the vmware format's file, byte for byte.
    assert_eq!(sha256(&vmdk), sha256(&v));
    let ovf = std::fs::read_to_string(x.join("nixos.ovf")).unwrap();
    assert!(
        ovf.contains(&format!("ovf:size=\"{}\"", file_size(&vmdk))),
        "{ovf}"
    );
    assert!(
        ovf.contains(&format!("ovf:capacity=\"{disk_size}\"")),
        "{ovf}"
    );
    assert!(
        ovf.contains("vmw:key=\"firmware\" vmw:value=\"efi\""),
        "{ovf}"
    );
    assert!(ovf.trim_end().ends_with("</Envelope>"), "{ovf}");
    let mf = std::fs::read_to_string(x.join("nixos.mf")).unwrap();
    assert_eq!(
        mf,
        format!(
            "SHA256(nixos.ovf)= {}\nSHA256(disk.vmdk)= {}\n",
            sha256(&x.join("nixos.ovf")),
            sha256(&vmdk)
        )
    );
    qemu_img_identical("vmdk", &vmdk, &raw);
}

/// The qcow2 clouds are the raw-efi disk in qcow2, each under its platform's name (their
/// NixOS settings come from the module): the same qcow2 as qemu-efi, byte for byte.
#[test]
fn qcow2_clouds_hold_the_raw_efi_disk() {
    let t = tempfile::tempdir().unwrap();
    let raw = t.path().join("disk.img");
    build("raw-efi", &raw, &[]);
    let q = t.path().join("qemu.qcow2");
    build("qemu-efi", &q, &[]);
    for cloud in ["openstack", "kubevirt", "oci"] {
        let img = t.path().join(format!("{cloud}.qcow2"));
        let m = build(cloud, &img, &[]);
        check_manifest(&m, &img, "qcow2");
        assert_eq!(m["format"], cloud);
        qemu_img_identical("qcow2", &img, &raw);
        assert_eq!(sha256(&img), sha256(&q), "{cloud}");
    }
}

#[test]
fn vagrant_box_is_the_ova_package_under_vagrants_names() {
    let t = tempfile::tempdir().unwrap();
    let raw = t.path().join("disk.img");
    build("raw-efi", &raw, &[]);
    let ova = t.path().join("nixos.ova");
    build("virtualbox", &ova, &["-j", "2"]);
    let bx = t.path().join("nixos.box");
    let m = build("vagrant-virtualbox", &bx, &["-j", "1"]);
    check_manifest(&m, &bx, "vagrant-box");
    // GNU tar and libarchive (what Vagrant's `box add` unpacks with) list the same members.
    let want = "box.ovf\ndisk.vmdk\nbox.mf\nVagrantfile\nmetadata.json\n";
    assert_eq!(stdout(Command::new("tar").arg("-tf").arg(&bx)), want);
    assert_eq!(stdout(Command::new("bsdtar").arg("-tf").arg(&bx)), want);
    let verbose = stdout(
        Command::new("tar")
            .args(["--numeric-owner", "-tvf"])
            .arg(&bx),
    );
    for line in verbose.lines() {
        assert!(line.starts_with("-rw-r--r-- 0/0 "), "{line}");
    }
    let x = t.path().join("box");
    std::fs::create_dir(&x).unwrap();
    ok(Command::new("tar").arg("-xf").arg(&bx).arg("-C").arg(&x));
    let xo = t.path().join("ova");
    std::fs::create_dir(&xo).unwrap();
    ok(Command::new("tar").arg("-xf").arg(&ova).arg("-C").arg(&xo));
    // The disk and the descriptor are the OVA's, byte for byte (another -j too).
    assert_eq!(sha256(&x.join("disk.vmdk")), sha256(&xo.join("disk.vmdk")));
    assert_eq!(
        std::fs::read(x.join("box.ovf")).unwrap(),
        std::fs::read(xo.join("nixos.ovf")).unwrap()
    );
    qemu_img_identical("vmdk", &x.join("disk.vmdk"), &raw);
    let mf = std::fs::read_to_string(x.join("box.mf")).unwrap();
    assert_eq!(
        mf,
        format!(
            "SHA256(box.ovf)= {}\nSHA256(disk.vmdk)= {}\n",
            sha256(&x.join("box.ovf")),
            sha256(&x.join("disk.vmdk"))
        )
    );
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(x.join("metadata.json")).unwrap()).unwrap();
    assert_eq!(meta["provider"], "virtualbox");
    let vf = std::fs::read_to_string(x.join("Vagrantfile")).unwrap();
    assert!(vf.starts_with("Vagrant.configure(\"2\")"), "{vf}");
    reads_as_raw(&bx, &raw, "ova");
    // Two builds, another thread count: the same bytes.
    let b2 = t.path().join("again.box");
    build("vagrant-virtualbox", &b2, &["-j", "2"]);
    assert_eq!(sha256(&bx), sha256(&b2));
}

#[test]
fn gce_is_a_sparse_tar_of_disk_raw_in_gzip() {
    let t = tempfile::tempdir().unwrap();
    let img = t.path().join("nixos.raw.tar.gz");
    let m = build("gce", &img, &["-j", "1"]);
    check_manifest(&m, &img, "gce-tar");
    let disk_size = m["disk_size"].as_u64().unwrap();
    assert_eq!(disk_size % (1 << 30), 0, "GCE takes whole GiB");
    ok(Command::new("gzip").arg("-t").arg(&img));
    let list = stdout(Command::new("tar").arg("-tvzf").arg(&img));
    assert_eq!(list.lines().count(), 1, "{list}");
    assert!(list.contains(" disk.raw"), "{list}");
    assert!(list.contains(&disk_size.to_string()), "{list}");
    let x = t.path().join("x");
    std::fs::create_dir(&x).unwrap();
    ok(Command::new("tar")
        .args(["-xSzf"])
        .arg(&img)
        .arg("-C")
        .arg(&x));
    let disk = x.join("disk.raw");
    assert_eq!(file_size(&disk), disk_size);
    assert_eq!(sha256(&disk), m["disk_sha256"].as_str().unwrap());
    let v = stdout(Command::new("sgdisk").arg("-v").arg(&disk));
    assert!(v.contains("No problems found"), "{v}");
    // The root partition grew to the end of the rounded disk, and is clean.
    let root = &m["partitions"][1];
    let (start, size) = (
        root["start"].as_u64().unwrap(),
        root["size"].as_u64().unwrap(),
    );
    assert_eq!(start + size + 33 * 512, disk_size);
    let fs = t.path().join("root.ext4");
    extract(&disk, start, size, &fs);
    ok(Command::new("e2fsck").arg("-fn").arg(&fs));

    // imgbuild reads it: the same system as the raw-efi image, on a bigger disk.
    let raw = t.path().join("disk.img");
    build("raw-efi", &raw, &[]);
    let o = imgbuild(&[
        "diff",
        "--json",
        &raw.display().to_string(),
        &img.display().to_string(),
    ])
    .output()
    .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let d: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    for k in ["added", "removed", "changed"] {
        assert_eq!(d["store"][k], serde_json::json!([]), "{d}");
    }
    assert_eq!(d["boot"], serde_json::json!([]), "{d}");
    assert!(d["partitions"].to_string().contains("disk size"), "{d}");

    // The same bytes with more threads (gzip is deflated in parallel).
    let img2 = t.path().join("again.raw.tar.gz");
    build("gce", &img2, &["-j", "3"]);
    assert_eq!(sha256(&img), sha256(&img2));
}

#[test]
fn container_options_that_cannot_apply_are_refused() {
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("x");
    let args = demo_args("qemu-efi", &out);
    let mut refs: Vec<&str> = args.iter().map(String::as_str).collect();
    refs.extend(["--compress", "zstd"]);
    let e = fails(&mut imgbuild(&refs));
    assert!(
        e.contains("`qcow2` container, which is not compressed again"),
        "{e}"
    );

    let args = demo_args("gce", &out);
    let mut refs: Vec<&str> = args.iter().map(String::as_str).collect();
    refs.extend(["--size", "1500MiB"]);
    let e = fails(&mut imgbuild(&refs));
    assert!(e.contains("not a multiple of 1.0 GiB"), "{e}");
    refs.truncate(refs.len() - 2);
    refs.extend(["--level", "12"]);
    let e = fails(&mut imgbuild(&refs));
    assert!(e.contains("levels are 1 to 9"), "{e}");
    assert!(!out.exists());

    let e = fails(&mut imgbuild(&["qcow2-eif"]));
    assert!(e.contains("neither a command nor a format"), "{e}");
    let list = stdout(&mut imgbuild(&["formats"]));
    for f in [
        "raw-efi",
        "sd-aarch64",
        "qemu-efi",
        "amazon",
        "azure",
        "gce",
    ] {
        assert!(list.contains(f), "{list}");
    }
}

/// A format file of one's own, derived from a built-in one with `base`.
#[test]
fn a_format_file_can_derive_from_a_built_in_one() {
    let t = tempfile::tempdir().unwrap();
    let f = t.path().join("mine.toml");
    std::fs::write(
        &f,
        "base = \"raw-efi\"\nname = \"mine\"\nextension = \"qcow2\"\n\
         [container]\ntype = \"qcow2\"\n\
         [[partition]]\nname = \"ESP\"\ntype = \"C12A7328-F81F-11D2-BA4B-00A0C93EC93B\"\n\
         start = \"1MiB\"\nsize = \"64MiB\"\nfilesystem = \"fat32\"\nlabel = \"ESP\"\n\
         contents = \"esp\"\nmount-point = \"/boot\"\n\
         [[partition]]\nname = \"primary\"\ntype = \"0FC63DAF-8483-4772-8E79-3D69D8477DE4\"\n\
         size = \"auto\"\nfree = \"8MiB\"\nfilesystem = \"ext4\"\nlabel = \"nixos\"\n\
         contents = \"root\"\nmount-point = \"/\"\n",
    )
    .unwrap();
    let out = t.path().join("mine.qcow2");
    let m = build(f.to_str().unwrap(), &out, &["--no-system-check"]);
    assert_eq!(m["format"], "mine");
    assert_eq!(m["container"], "qcow2");
    assert_eq!(m["partitions"][0]["start"].as_u64().unwrap(), 1 << 20);
    let check = stdout(Command::new("qemu-img").arg("check").arg(&out));
    assert!(check.contains("No errors were found"), "{check}");
}

fn be32(b: &[u8], at: usize) -> usize {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap()) as usize
}

/// The disk of a VMA archive, unpacked into `disk` by a reader written here from
/// `vma_spec.txt`; every header's and extent header's MD5 checked by `md5sum` (the field
/// taken as zeros). Returns the archive's header.
fn unpack_vma(vma: &Path, disk: &Path) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let v = std::fs::read(vma).unwrap();
    assert_eq!(&v[..8], b"VMA\0\0\0\0\x01");
    let header_size = be32(&v, 56);
    let sums = tempfile::tempdir().unwrap();
    let mut want = Vec::new();
    let mut zeroed = |name: String, h: &[u8], md5_at: usize| {
        let mut z = h.to_vec();
        z[md5_at..md5_at + 16].fill(0);
        std::fs::write(sums.path().join(&name), z).unwrap();
        let hex: String = h[md5_at..md5_at + 16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        want.push(format!("{hex}  {}", sums.path().join(&name).display()));
    };
    zeroed("header".into(), &v[..header_size], 32);
    let dev = 4096 + 32;
    let size = u64::from_be_bytes(v[dev + 8..dev + 16].try_into().unwrap());
    let out = std::fs::File::create(disk).unwrap();
    out.set_len(size).unwrap();
    let (mut pos, mut next, mut n) = (header_size, 0u64, 0);
    while pos < v.len() {
        let h = &v[pos..pos + 512];
        assert_eq!(&h[..4], b"VMAE");
        assert_eq!(h[8..24], v[8..24], "the archive's uuid");
        zeroed(format!("extent{n:05}"), h, 24);
        n += 1;
        pos += 512;
        for i in 0..59 {
            let info = u64::from_be_bytes(h[40 + 8 * i..48 + 8 * i].try_into().unwrap());
            if info == 0 {
                continue;
            }
            assert_eq!(info & 0xffff_ffff, next, "every cluster, in order");
            for b in 0..16 {
                if (info >> 48) & (1 << b) != 0 {
                    let at = next * 65536 + b * 4096;
                    let len = 4096.min(size - at) as usize;
                    out.write_all_at(&v[pos..pos + len], at).unwrap();
                    pos += 4096;
                }
            }
            next += 1;
        }
    }
    assert_eq!(next, size.div_ceil(65536), "every cluster listed");
    let got = stdout(&mut sh(&format!(
        "cd {} && md5sum *",
        sums.path().display()
    )));
    let mut got: Vec<String> = got
        .lines()
        .map(|l| {
            let (sum, name) = l.split_once("  ").unwrap();
            format!("{sum}  {}", sums.path().join(name).display())
        })
        .collect();
    got.sort();
    want.sort();
    let wrong = got.iter().zip(&want).filter(|(g, w)| g != w).count();
    assert!(
        got.len() == want.len() && wrong == 0,
        "{wrong} of {} header and extent MD5s differ",
        want.len()
    );
    assert_eq!(want.len(), 1 + n, "the header and every extent checked");
    v[..header_size].to_vec()
}

#[test]
fn proxmox_vma_holds_the_raw_efi_disk() {
    let t = tempfile::tempdir().unwrap();
    let raw = t.path().join("disk.img");
    let m = build("raw-efi", &raw, &[]);
    let disk_sha = m["disk_sha256"].as_str().unwrap().to_string();

    let z = t.path().join("nixos.vma.zst");
    let mz = build("proxmox", &z, &["-j", "1"]);
    check_manifest(&mz, &z, "vma");
    assert_eq!(mz["disk_sha256"], disk_sha.as_str());
    // Two builds, and -j4, give the same bytes.
    let again = t.path().join("again.vma.zst");
    build("proxmox", &again, &["-j", "1"]);
    assert_eq!(sha256(&again), sha256(&z));
    let j4 = t.path().join("j4.vma.zst");
    build("proxmox", &j4, &["-j", "4"]);
    assert_eq!(sha256(&j4), sha256(&z));

    let v = t.path().join("nixos.vma");
    ok(Command::new("zstd")
        .args(["-q", "-d"])
        .arg(&z)
        .arg("-o")
        .arg(&v));
    // It is always compressed, like the GCE tarball: `--compress` is refused.
    let mut args = demo_args("proxmox", &t.path().join("p.vma.zst"));
    args.extend(["--compress".to_string(), "zstd".to_string()]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = imgbuild(&refs).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("not compressed again"),
        "{err}"
    );

    let disk = t.path().join("from-vma.img");
    let head = unpack_vma(&v, &disk);
    assert_eq!(sha256(&disk), disk_sha, "the raw-efi disk, byte for byte");
    // ctime: SOURCE_DATE_EPOCH's default; the uuid from the seed.
    assert_eq!(
        u64::from_be_bytes(head[24..32].try_into().unwrap()),
        315_532_800
    );
    assert_ne!(head[8..24], [0; 16]);
    let text = String::from_utf8_lossy(&head);
    for want in [
        "qemu-server.conf\0",
        "\nbios: ovmf\n",
        "\nname: demo\n",
        "drive-virtio0\0",
    ] {
        assert!(text.contains(want), "{want:?} in the header");
    }
    reads_as_raw(&v, &raw, "vma");
    let ls = stdout(&mut imgbuild(&["ls", &v.display().to_string(), "/"]));
    assert!(ls.contains(" nix\n"), "{ls}");
}
