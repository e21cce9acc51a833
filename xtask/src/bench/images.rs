use super::*;

/// Jobs for one image build: imgbuild and the baseline script, same closure.
pub(super) fn image_jobs(env: &Env, format: &str, c: &Closure, out: &Path) -> Vec<Job> {
    let ext = if format == "sd-aarch64" {
        "img.zst"
    } else {
        "img"
    };
    let ours = out.join(format!("ours.{ext}"));
    let base = out.join(format!("base.{ext}"));
    let clean = |p: &Path| {
        let s = p.display().to_string();
        let raw = s.trim_end_matches(".zst").to_string();
        vec![
            p.to_path_buf(),
            PathBuf::from(format!("{s}.json")),
            PathBuf::from(format!("{raw}.bmap")),
            PathBuf::from(&raw),
            PathBuf::from(format!("{raw}.tmp")),
            PathBuf::from(format!("{s}.tmp")),
        ]
    };
    let script = util::xtask_dir()
        .join("scripts")
        .join(format!("baseline-{format}.sh"));
    let (bin, dir, f) = (env.imgbuild.clone(), c.dir.clone(), format.to_string());
    let o = ours.clone();
    let ours_job = Job::new(&format!("imgbuild {format}"), clean(&ours), move || {
        let mut c = Command::new(&bin);
        c.arg(&f)
            .arg("--closure")
            .arg(dir.join("result"))
            .arg("--store-root")
            .arg(&dir)
            .arg("--closure-info")
            .arg(dir.join("closure-info"))
            .arg("-o")
            .arg(&o);
        c
    });
    let (dir, b) = (c.dir.clone(), base.clone());
    let base_job = Job::new("baseline script", clean(&base), move || {
        let mut c = Command::new("bash");
        c.arg(&script).arg(&dir).arg(&b);
        c
    });
    vec![ours_job, base_job]
}

pub(super) fn bench_images(rep: &mut Report, env: &Env) -> Result<()> {
    rep.line("## images: whole builds, `imgbuild` vs the shell pipeline\n");
    rep.line(
        "imgbuild: `imgbuild FORMAT --closure C/result --store-root C --closure-info \
         C/closure-info -o OUT` (plans, writes sparse, hashes, fsyncs, renames, manifest; \
         sd-aarch64 compressed with zstd -3 on all CPUs). Baseline: `bash \
         xtask/scripts/baseline-FORMAT.sh C OUT` (what `cargo xtask baseline` runs: stages \
         the closure with cp -a and nix-store --load-db, mkfs.vfat + mmd/mcopy, mkfs.ext4 \
         -d, sgdisk or sfdisk, dd; sd-aarch64 also fsck, resize2fs -M and zstd -T0; no \
         fsync of the final image). The two lay out their disks differently (imgbuild \
         follows the format file: 512 MiB ESP and 512 MiB free in the root fs for \
         raw-efi); both sizes are listed.\n",
    );
    let mut cases = vec![
        ("raw-efi", fixture_closure(Arch::X86_64)?),
        ("sd-aarch64", fixture_closure(Arch::Aarch64)?),
    ];
    if !env.quick {
        cases.insert(1, ("raw-efi", synth_closure(env, Arch::X86_64, 1.0)?));
        cases.push(("sd-aarch64", synth_closure(env, Arch::Aarch64, 1.0)?));
    }
    for (format, c) in &cases {
        let name = c
            .dir
            .file_name()
            .map_or("x".into(), |n| n.to_string_lossy().into_owned());
        let out = env.out(&format!("images-{format}-{name}"))?;
        let jobs = image_jobs(env, format, c, &out);
        let st = run_jobs(env, &format!("{format}-{name}"), &jobs)?;
        let ext = if *format == "sd-aarch64" {
            "img.zst"
        } else {
            "img"
        };
        let ours_len = file_len(&out.join(format!("ours.{ext}")))?;
        let base_len = file_len(&out.join(format!("base.{ext}")))?;
        rep.line(&format!("### {format}: {}\n", c.desc));
        rep.stats(&jobs, &st);
        rep.line(&format!(
            "output: imgbuild {ours_len} bytes ({:.0} MiB), baseline {base_len} bytes ({:.0} MiB)",
            ours_len as f64 / MIB as f64,
            base_len as f64 / MIB as f64
        ));
        let r = st[0].secs() / st[1].secs();
        let rd = st[0].durable() / st[1].durable();
        if *format == "raw-efi" {
            rep.line(&goal_line("time vs shell pipeline", r, 0.3, "0.3"));
            rep.line(&goal_line(
                "time vs shell pipeline, both durable (+sync)",
                rd,
                0.3,
                "0.3",
            ));
        } else {
            rep.line(&format!(
                "- time vs shell pipeline: **{r:.2}** (+sync: {rd:.2}; no goal set for sd-aarch64)"
            ));
        }
        rep.rss(&st[0], "shell pipeline", &st[1]);
        for p in jobs.iter().flat_map(|j| j.clean.iter()) {
            remove_any(p)?;
        }
    }
    Ok(())
}
