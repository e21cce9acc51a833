//! `appliance`: `imgbuild appliance` (dm-verity store, UKI, A/B slots, sysupdate artifacts)
//! against `imgbuild raw-efi` of the same closure, which shows what the store image, its
//! verity tree, the UKI and the artifacts cost over the plain disk; and the store part
//! against what systemd-repart runs for `image.repart.verityStore` (`mksquashfs` with the same
//! options, then `veritysetup format` over its output); and `--store-level 3` (zstd 3 for
//! the store image instead of nixpkgs' ISO level 19).

use super::*;

const MKSQUASHFS: &str = "-keep-as-directory -all-root -no-hardlinks -b 1048576 -comp zstd \
                          -Xcompression-level 19 -noappend -quiet";

pub(super) fn bench_appliance(rep: &mut Report, env: &Env) -> Result<()> {
    util::need_tools(&[
        ("mksquashfs", "squashfs-tools"),
        ("veritysetup", "cryptsetup-bin"),
    ])?;
    rep.line("## appliance: imgbuild appliance vs imgbuild raw-efi, and its store vs mksquashfs + veritysetup\n");
    rep.line(
        "imgbuild appliance: the store image (squashfs, zstd 19, 1 MiB blocks) to a temporary \
         file, read once into the verity hasher (and the `.usr.raw` artifact's SHA-256), the \
         UKI, then the disk in one pass, and the sysupdate artifacts (the store image \
         hard-linked, the hash area, the UKI, SHA256SUMS). raw-efi: the same closure as an \
         ext4 root with the store. Peer for the store part: `mksquashfs` of the store paths \
         with the same options, then `veritysetup format` of its output (what \
         systemd-repart runs for `Verity=data`/`hash`). The closure is a hard-linked copy \
         with the appliance record in boot.json (and the sample UKI stub where it has none).\n",
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
        let out = env.out(&format!("appliance-{name}"))?;
        let root = patched_copy(&c.dir, &out.join("closure"))?;
        let jobs = jobs(env, &root, &out)?;
        let st = run_jobs(env, &format!("appliance-{name}"), &jobs)?;
        rep.stats(&jobs, &st);
        rep.line(&format!(
            "- appliance / raw-efi time: {:.2} (the store image at zstd 19, its hash, the UKI, \
             the artifacts)",
            st[0].secs() / st[1].secs()
        ));
        rep.line(&goal_line(
            "appliance (whole disk) vs mksquashfs + veritysetup format (store part alone)",
            st[0].secs() / st[2].secs(),
            1.0,
            "1.0",
        ));
        let store = |f: &str| -> Result<u64> {
            let m: serde_json::Value = serde_json::from_slice(&fs::read(out.join(f))?)?;
            m["verity"]["store_image_size"]
                .as_u64()
                .context("verity.store_image_size in the manifest")
        };
        rep.line(&format!(
            "- appliance --store-level 3 / raw-efi time: {:.2}; its store image {} bytes vs {} \
             at level 19",
            st[3].secs() / st[1].secs(),
            store("fast.img.json")?,
            store("ours.img.json")?,
        ));
        rep.rss(&st[0], "mksquashfs + veritysetup", &st[2]);
        util::remove_tree(&out)?;
    }
    Ok(())
}

/// `src` hard-linked into `dst`, its toplevel's boot.json given the module's appliance record
/// and its systemd the sample UKI stub when it has no stub.
fn patched_copy(src: &Path, dst: &Path) -> Result<PathBuf> {
    if dst.exists() {
        util::remove_tree(dst)?;
    }
    run(cmd("cp").arg("-al").arg(src).arg(dst))?;
    crate::fixture::make_appliance(dst, "bench")?;
    Ok(dst.to_path_buf())
}

fn args(format: &str, root: &Path) -> Vec<std::ffi::OsString> {
    vec![
        format.into(),
        "--closure".into(),
        root.join("result").into(),
        "--store-root".into(),
        root.into(),
        "--closure-info".into(),
        root.join("closure-info").into(),
        "--seed".into(),
        "bench".into(),
        // A disk system with only boot.json patched: the bench measures the writer.
        "--no-system-check".into(),
    ]
}

fn jobs(env: &Env, root: &Path, out: &Path) -> Result<Vec<Job>> {
    let side = |f: &Path| {
        [
            "",
            ".json",
            ".tmp",
            ".json.tmp",
            ".bmap",
            ".bmap.tmp",
            ".store.tmp",
            ".sysupdate",
            ".sysupdate.tmp",
        ]
        .iter()
        .map(|x| PathBuf::from(format!("{}{x}", f.display())))
        .collect::<Vec<_>>()
    };
    let ours = |label: &str, format: &'static str, file: &str, extra: &'static [&'static str]| {
        let o = out.join(file);
        let (bin, r, o2) = (env.imgbuild.clone(), root.to_path_buf(), o.clone());
        Job::new(label, side(&o), move || {
            let mut c = Command::new(&bin);
            c.args(args(format, &r)).arg("-o").arg(&o2).args(extra);
            c
        })
    };
    let sources: Vec<PathBuf> = fs::read_to_string(root.join("closure-info/store-paths"))?
        .lines()
        .map(|p| root.join(p.trim_start_matches('/')))
        .collect();
    let (sq, hash) = (out.join("peer.squashfs"), out.join("peer.verity"));
    let (sq2, hash2) = (sq.clone(), hash.clone());
    let peer = Job::new(
        "mksquashfs + veritysetup format",
        vec![sq.clone(), hash.clone()],
        move || {
            let mut c = Command::new("bash");
            c.args([
                "-euo",
                "pipefail",
                "-c",
                &format!(
                    "mksquashfs \"${{@:3}}\" \"$1\" {MKSQUASHFS} && \
                     veritysetup format \"$1\" \"$2\" >/dev/null"
                ),
                "bash",
            ])
            .arg(&sq2)
            .arg(&hash2)
            .args(&sources);
            c
        },
    );
    Ok(vec![
        ours("imgbuild appliance", "appliance", "ours.img", &[]),
        ours("imgbuild raw-efi (same closure)", "raw-efi", "raw.img", &[]),
        peer,
        ours(
            "imgbuild appliance --store-level 3",
            "appliance",
            "fast.img",
            &["--store-level", "3"],
        ),
    ])
}
