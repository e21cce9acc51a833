//! ISSUE #23.3: the system check of the live media. A toplevel built for a disk (the demo, a
//! raw-efi system) is refused for iso, iso-installer, netboot and kexec, naming what it lacks;
//! once its boot.json and fstab are what imgbuild's NixOS module writes for the format
//! (nix/modules/imgbuild.nix), the same binary builds it.

use std::path::{Path, PathBuf};
use std::process::Output;

use crate::common::{assert_one_error_line, closure_args, demo, imgbuild, ok};

/// The demo closure, copied writable into `t`.
fn demo_copy(t: &Path) -> PathBuf {
    let root = t.join("demo");
    ok(std::process::Command::new("cp")
        .arg("-a")
        .arg(demo())
        .arg(&root));
    ok(std::process::Command::new("chmod")
        .arg("-R")
        .arg("u+w")
        .arg(&root));
    root
}

/// The host path of the logical store path `p` under the store root `root`.
fn host(root: &Path, p: &Path) -> PathBuf {
    root.join(p.strip_prefix("/").unwrap())
}

/// The toplevel's boot.json and /etc/fstab, on the host.
fn files(root: &Path) -> (PathBuf, PathBuf) {
    let top = host(root, &std::fs::read_link(root.join("result")).unwrap());
    let etc = host(root, &std::fs::read_link(top.join("etc")).unwrap());
    (top.join("boot.json"), etc.join("fstab"))
}

/// `imgbuild FORMAT` on the copy, writing `out`.
fn build(format: &str, root: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut args = closure_args(format, root, out);
    args.extend(extra.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    imgbuild(&refs).output().unwrap()
}

#[track_caller]
fn refused(format: &str, root: &Path, out: &Path, want: &[&str]) {
    let o = build(format, root, out, &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    let mut all = vec![
        format!("the system is not configured for `{format}`"),
        format!("imgbuild.format = \"{format}\""),
        "--no-system-check".to_string(),
    ];
    all.extend(want.iter().map(|w| w.to_string()));
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    assert_one_error_line(format, o.status.code(), &err, &all);
    assert!(!out.exists(), "{format}: {} exists", out.display());
}

#[track_caller]
fn builds(format: &str, root: &Path, out: &Path) {
    let o = build(format, root, out, &[]);
    assert!(
        o.status.success() && out.exists(),
        "{format}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Rewrites boot.json: `kernelParams` and the `"org.imgbuild.v1"` record.
fn set_boot_json(path: &Path, params: &[&str], record: serde_json::Value) {
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    v["org.nixos.bootspec.v1"]["kernelParams"] = serde_json::json!(params);
    v["org.imgbuild.v1"] = record;
    std::fs::write(path, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
}

/// The fstab NixOS writes for the module's live file systems (`/iso` only for the ISO).
fn live_fstab(iso: bool) -> String {
    let image = if iso {
        "/iso/nix-store.squashfs"
    } else {
        "../nix-store.squashfs"
    };
    format!(
        "# Filesystems.\ntmpfs / tmpfs mode=0755 0 0\n{}\
         {image} /nix/.ro-store squashfs loop,x-initrd.mount 0 0\n\
         tmpfs /nix/.rw-store tmpfs mode=0755,x-initrd.mount 0 0\n\
         overlay /nix/store overlay lowerdir=/nix/.ro-store,upperdir=/nix/.rw-store/store,\
         workdir=/nix/.rw-store/work,x-initrd.mount 0 0\n",
        if iso {
            "/dev/root /iso auto x-initrd.mount 0 0\n"
        } else {
            ""
        }
    )
}

#[test]
fn the_live_media_check_their_system() {
    let t = tempfile::tempdir().unwrap();
    let root = demo_copy(t.path());
    let out = |n: &str| t.path().join(n);
    let (boot_json, fstab) = files(&root);

    // A disk's toplevel: everything the live media need is named.
    let mounts = [
        "mounts ext4 /dev/disk/by-label/nixos at /, which must be a tmpfs",
        "nothing at /nix/.rw-store, which must be a tmpfs",
        "nothing at /nix/store, which must be an overlay",
    ];
    for format in ["iso", "iso-installer"] {
        let mut want = vec![
            "no \"org.imgbuild.v1\".iso.volumeID",
            "have no `root=LABEL=<volume ID>`",
            "nothing at /iso",
            "(squashfs /iso/nix-store.squashfs, loop)",
        ];
        want.extend(mounts);
        refused(format, &root, &out(format), &want);
    }
    for format in ["netboot", "kexec"] {
        let mut want = vec![
            "no \"org.imgbuild.v1\".netboot record",
            "(squashfs ../nix-store.squashfs, loop)",
        ];
        want.extend(mounts);
        refused(format, &root, &out(format), &want);
    }

    // Configured for netboot: netboot and kexec build, the ISO is still refused.
    set_boot_json(
        &boot_json,
        &["console=ttyS0,115200"],
        serde_json::json!({"release": "24.05", "netboot": {}}),
    );
    std::fs::write(&fstab, live_fstab(false)).unwrap();
    builds("netboot", &root, &out("n.netboot"));
    builds("kexec", &root, &out("k.kexec.tar.gz"));
    refused(
        "iso",
        &root,
        &out("x.iso"),
        &[
            "no \"org.imgbuild.v1\".iso.volumeID",
            "nothing at /iso",
            "mounts squashfs ../nix-store.squashfs at /nix/.ro-store",
        ],
    );

    // Configured for the ISO (a stand-in syslinux in the store): the ISO builds, and not a
    // netboot image; root= naming another volume is refused, naming both.
    let syslinux = "/nix/store/00000000000000000000000000000000-syslinux-6.04";
    let share = host(&root, Path::new(syslinux)).join("share/syslinux");
    std::fs::create_dir_all(&share).unwrap();
    for f in ["isolinux.bin", "ldlinux.c32", "isohdpfx.bin"] {
        std::fs::write(share.join(f), [0u8; 432]).unwrap();
    }
    let record = serde_json::json!({"release": "24.05",
        "iso": {"volumeID": "nixos-24.05-x86_64", "syslinux": syslinux}});
    set_boot_json(
        &boot_json,
        &["root=LABEL=nixos-24.05-x86_64", "boot.shell_on_fail"],
        record.clone(),
    );
    std::fs::write(&fstab, live_fstab(true)).unwrap();
    builds("iso", &root, &out("a.iso"));
    builds("iso-installer", &root, &out("b.iso"));
    refused(
        "kexec",
        &root,
        &out("k2.kexec.tar.gz"),
        &[
            "no \"org.imgbuild.v1\".netboot record",
            "squashfs /iso/nix-store.squashfs at /nix/.ro-store",
        ],
    );
    set_boot_json(&boot_json, &["root=LABEL=NIXOS_ISO"], record);
    refused(
        "iso",
        &root,
        &out("c.iso"),
        &["say `root=LABEL=NIXOS_ISO`, but the ISO's volume ID is `nixos-24.05-x86_64`"],
    );
    let o = build("iso", &root, &out("c.iso"), &["--no-system-check"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}
