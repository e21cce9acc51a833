//! `iso`: `imgbuild iso` against what nixpkgs runs (`mksquashfs` as `make-squashfs.nix`,
//! then `xorriso -as mkisofs` as `make-iso9660-image.sh`) on the same closure; and the store
//! image alone (`imgbuild iso --dry-run`, which writes it to a temporary file and plans the
//! volume) against `mksquashfs` alone.

use super::*;

/// A stand-in syslinux's store path in the bench's copy of a closure (the bench boots
/// nothing; the ISO needs the files).
const SYSLINUX: &str = "/nix/store/1m7b1zcsyfs6bl0ipzdcpq3x0jb5jsbb-syslinux-6.04";
const VOLUME_ID: &str = "nixos-bench-x86_64";
/// `make-squashfs.nix`'s options, with iso-image.nix's zstd level.
const MKSQUASHFS: &str = "-keep-as-directory -all-root -no-hardlinks -b 1048576 -comp zstd \
                          -Xcompression-level 19 -noappend -quiet";

pub(super) fn bench_iso(rep: &mut Report, env: &Env) -> Result<()> {
    util::need_tools(&[("mksquashfs", "squashfs-tools"), ("xorriso", "xorriso")])?;
    rep.line("## iso: imgbuild iso vs mksquashfs + xorriso\n");
    rep.line(
        "imgbuild: `imgbuild iso ... -o OUT` (store image to a temporary file, then the volume \
         in one pass, hashed, fsynced). Peer: `mksquashfs` with make-squashfs.nix's options \
         (`-comp zstd -Xcompression-level 19 -b 1048576`) then `xorriso -as mkisofs` with \
         make-iso9660-image.sh's (El Torito BIOS + UEFI, `-isohybrid-mbr`, \
         `-isohybrid-gpt-basdat`), given our `efi.img` and `isolinux.cfg`. Store image \
         alone: `imgbuild iso --dry-run` vs `mksquashfs` alone. The closure is a hard-linked \
         copy with the ISO settings in boot.json and a stand-in syslinux.\n",
    );
    let closures = if env.quick {
        vec![demo_closure()?]
    } else {
        vec![
            fixture_closure(Arch::X86_64)?,
            synth_closure(env, Arch::X86_64, 1.0)?,
        ]
    };
    for c in &closures {
        let name = c.name();
        rep.line(&format!("### {}\n", c.desc));
        let out = env.out(&format!("iso-{name}"))?;
        let root = patched_copy(&c.dir, &out.join("closure"))?;
        let prep = prepare_peer(env, &root, &out)?;
        let jobs = jobs(env, &root, &out, &prep);
        let st = run_jobs(env, &format!("iso-{name}"), &jobs)?;
        let size = |f: &str| file_len(&out.join(f));
        let (ours, peer) = (size("ours.iso")?, size("peer.iso")?);
        let (sq_ours, sq_peer) = (prep.store_image_size, size("peer.squashfs")?);
        rep.stats(&jobs, &st);
        rep.line(&format!(
            "- ISO: imgbuild {ours} bytes, peer {peer} bytes, ratio {:.3}",
            ours as f64 / peer as f64
        ));
        rep.line(&format!(
            "- store image: imgbuild {sq_ours} bytes, mksquashfs {sq_peer} bytes, ratio {:.3}",
            sq_ours as f64 / sq_peer as f64
        ));
        rep.line(&goal_line(
            "time vs mksquashfs + xorriso",
            st[0].secs() / st[1].secs(),
            1.0,
            "1.0",
        ));
        rep.line(&goal_line(
            "store image alone (dry run) vs mksquashfs",
            st[2].secs() / st[3].secs(),
            1.0,
            "1.0",
        ));
        rep.rss(&st[0], "peer", &st[1]);
        // Every output, the closure's copy included, is inside `out`.
        util::remove_tree(&out)?;
    }
    Ok(())
}

/// `src` hard-linked into `dst`, its toplevel's boot.json given `"org.imgbuild.v1".iso` and
/// the store a stand-in syslinux.
fn patched_copy(src: &Path, dst: &Path) -> Result<PathBuf> {
    if dst.exists() {
        util::remove_tree(dst)?;
    }
    run(cmd("cp").arg("-al").arg(src).arg(dst))?;
    let link = fs::read_link(dst.join("result"))?;
    let rel = |p: &str| dst.join(p.trim_start_matches('/'));
    let top = rel(&link.to_string_lossy());
    fs::set_permissions(&top, fs::Permissions::from_mode(0o755))?;
    let json = top.join("boot.json");
    let mut spec: serde_json::Value = serde_json::from_slice(&fs::read(&json)?)?;
    spec["org.imgbuild.v1"]["iso"] =
        serde_json::json!({ "volumeID": VOLUME_ID, "syslinux": SYSLINUX });
    // A new file: the old one is a hard link into the source closure.
    fs::remove_file(&json)?;
    fs::write(&json, serde_json::to_vec_pretty(&spec)?)?;
    let share = rel(SYSLINUX).join("share/syslinux");
    fs::create_dir_all(&share)?;
    for (name, len) in [
        ("isolinux.bin", 24_576),
        ("ldlinux.c32", 120_000),
        ("isohdpfx.bin", 432),
    ] {
        fs::write(share.join(name), vec![0x90u8; len])?;
    }
    Ok(dst.to_path_buf())
}

/// What the peer is given, made once untimed from a build of ours: the EFI image and
/// `isolinux.cfg` (extracted), the registration file, the path list.
struct PeerInputs {
    store_image_size: u64,
    path_list: PathBuf,
    store_sources: Vec<PathBuf>,
    registration: PathBuf,
    isohdpfx: PathBuf,
}

fn args(root: &Path) -> Vec<std::ffi::OsString> {
    vec![
        "iso".into(),
        "--closure".into(),
        root.join("result").into(),
        "--store-root".into(),
        root.into(),
        "--closure-info".into(),
        root.join("closure-info").into(),
        "--seed".into(),
        "bench".into(),
        // The closure is a disk system with only boot.json patched (its fstab and kernel
        // parameters are a disk's): the live system check would refuse it, and the bench
        // measures the writer, not the check.
        "--no-system-check".into(),
    ]
}

fn prepare_peer(env: &Env, root: &Path, out: &Path) -> Result<PeerInputs> {
    let first = out.join("first.iso");
    let mut c = Command::new(&env.imgbuild);
    c.args(args(root)).arg("-o").arg(&first).arg("--json");
    let m: serde_json::Value = serde_json::from_str(&output_quiet(&mut c)?)?;
    let store_image_size = m["iso"]["store_image_size"]
        .as_u64()
        .context("iso.store_image_size in the manifest")?;
    let x = out.join("extracted");
    run(cmd("xorriso")
        .args(["-osirrox", "on", "-indev"])
        .arg(&first)
        .args(["-extract", "/"])
        .arg(&x))?;
    let registration = out.join("nix-path-registration");
    fs::copy(root.join("closure-info/registration"), &registration)?;
    let store_sources = fs::read_to_string(root.join("closure-info/store-paths"))?
        .lines()
        .map(|p| root.join(p.trim_start_matches('/')))
        .collect();
    let share = root
        .join(SYSLINUX.trim_start_matches('/'))
        .join("share/syslinux");
    let mut list = String::new();
    for (target, source) in [
        ("nix-store.squashfs", out.join("peer.squashfs")),
        ("boot/bzImage", x.join("boot/bzImage")),
        ("boot/initrd", x.join("boot/initrd")),
        ("boot/efi.img", x.join("boot/efi.img")),
        ("version.txt", x.join("version.txt")),
        ("isolinux", share.clone()),
        ("isolinux/isolinux.cfg", x.join("isolinux/isolinux.cfg")),
    ] {
        list.push_str(&format!("{target}={}\n", source.display()));
    }
    let path_list = out.join("path-list");
    fs::write(&path_list, list)?;
    for p in ["", ".json", ".bmap"] {
        remove_any(&PathBuf::from(format!("{}{p}", first.display())))?;
    }
    Ok(PeerInputs {
        store_image_size,
        path_list,
        store_sources,
        registration,
        isohdpfx: share.join("isohdpfx.bin"),
    })
}

fn jobs(env: &Env, root: &Path, out: &Path, p: &PeerInputs) -> Vec<Job> {
    let with_side = |f: &Path| {
        [
            "",
            ".json",
            ".tmp",
            ".json.tmp",
            ".bmap",
            ".bmap.tmp",
            ".store.tmp",
        ]
        .iter()
        .map(|x| PathBuf::from(format!("{}{x}", f.display())))
        .collect::<Vec<_>>()
    };
    let ours = out.join("ours.iso");
    let (bin, r, o) = (env.imgbuild.clone(), root.to_path_buf(), ours.clone());
    let ours_job = Job::new("imgbuild iso", with_side(&ours), move || {
        let mut c = Command::new(&bin);
        c.args(args(&r)).arg("-o").arg(&o);
        c
    });
    let sq = out.join("peer.squashfs");
    let mksquashfs = |sq: &Path, p: &PeerInputs| {
        let mut c = Command::new("mksquashfs");
        c.arg(&p.registration)
            .args(&p.store_sources)
            .arg(sq)
            .args(MKSQUASHFS.split_whitespace());
        c
    };
    let peer = out.join("peer.iso");
    let script = format!(
        "\"$@\" && xorriso -as mkisofs -iso-level 3 -volid {VOLUME_ID} -appid nixos \
         -publisher nixos -graft-points -full-iso9660-filenames -joliet \
         -eltorito-boot isolinux/isolinux.bin -eltorito-catalog .boot.cat -no-emul-boot \
         -boot-load-size 4 -boot-info-table -isohybrid-mbr \"$ISOHDPFX\" \
         -eltorito-alt-boot -e boot/efi.img -no-emul-boot -isohybrid-gpt-basdat -r \
         -path-list \"$PATHS\" -quiet -o \"$OUT\""
    );
    let peer_cmd = mksquashfs(&sq, p);
    let (isohdpfx, paths, po) = (p.isohdpfx.clone(), p.path_list.clone(), peer.clone());
    let peer_job = Job::new(
        "mksquashfs + xorriso -as mkisofs",
        vec![peer.clone(), sq.clone()],
        move || {
            let mut c = Command::new("bash");
            c.args(["-euo", "pipefail", "-c", &script, "bash"])
                .arg(peer_cmd.get_program())
                .args(peer_cmd.get_args())
                .env("ISOHDPFX", &isohdpfx)
                .env("PATHS", &paths)
                .env("OUT", &po);
            c
        },
    );
    let (bin, r) = (env.imgbuild.clone(), root.to_path_buf());
    let dry = Job::new(
        "imgbuild iso --dry-run (store image alone)",
        vec![],
        move || {
            let mut c = Command::new(&bin);
            c.args(args(&r)).arg("--dry-run");
            c
        },
    );
    let alone = out.join("alone.squashfs");
    let alone_cmd = mksquashfs(&alone, p);
    let alone_job = Job::new("mksquashfs alone", vec![alone.clone()], move || {
        let mut c = Command::new(alone_cmd.get_program());
        c.args(alone_cmd.get_args());
        c
    });
    vec![ours_job, peer_job, dry, alone_job]
}
