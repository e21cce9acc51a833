//! One pass: whole builds against what bounds them. sd-aarch64 closure -> `.img.zst` against
//! `zstd -T0 -3` alone on the finished raw image; raw-efi with a big `--size` against a small
//! one (hashing holes must not dominate); raw-efi against a previous imgbuild binary; and the
//! bytes deduplication saves.

use super::*;

/// `imgbuild FORMAT` on closure `c` writing `out` with `extra` arguments.
fn imgbuild_job(
    env: &Env,
    label: &str,
    format: &str,
    c: &Closure,
    out: &Path,
    extra: &[&str],
) -> Job {
    imgbuild_job_with(&env.imgbuild, label, format, c, out, extra)
}

fn imgbuild_job_with(
    bin: &Path,
    label: &str,
    format: &str,
    c: &Closure,
    out: &Path,
    extra: &[&str],
) -> Job {
    let s = out.display().to_string();
    let raw = s.trim_end_matches(".zst").to_string();
    let clean = vec![
        out.to_path_buf(),
        PathBuf::from(format!("{s}.json")),
        PathBuf::from(format!("{raw}.bmap")),
        PathBuf::from(&raw),
        PathBuf::from(format!("{raw}.tmp")),
        PathBuf::from(format!("{s}.tmp")),
    ];
    let (bin, dir, f, o) = (
        bin.to_path_buf(),
        c.dir.clone(),
        format.to_string(),
        out.to_path_buf(),
    );
    let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    Job::new(label, clean, move || {
        let mut c = Command::new(&bin);
        c.arg(&f)
            .arg("--closure")
            .arg(dir.join("result"))
            .arg("--store-root")
            .arg(&dir)
            .arg("--closure-info")
            .arg(dir.join("closure-info"))
            .arg("-o")
            .arg(&o)
            .args(&extra);
        c
    })
}

fn name_of(c: &Closure) -> String {
    c.dir
        .file_name()
        .map_or("x".into(), |n| n.to_string_lossy().into_owned())
}

pub(super) fn bench_pipeline(rep: &mut Report, env: &Env) -> Result<()> {
    rep.line("## one pass: whole builds against what bounds them\n");
    sd_vs_zstd(rep, env)?;
    big_size(rep, env)?;
    previous(rep, env)?;
    dedup(rep, env)?;
    Ok(())
}

/// sd-aarch64 end to end vs `zstd -T0 -3` on its own finished raw image.
fn sd_vs_zstd(rep: &mut Report, env: &Env) -> Result<()> {
    rep.line(
        "### sd-aarch64: closure -> `.img.zst` vs `zstd -T0 -3` on the finished raw image\n\n\
         imgbuild plans, streams the disk once into zstd (all CPUs, level 3), the raw disk's \
         SHA-256, the bmap and the compressed file's SHA-256, fsyncs and renames; zstd only \
         compresses the raw image `--compress none` made (untimed). Goal ≤ 1.2.\n",
    );
    let mut closures = vec![fixture_closure(Arch::Aarch64)?];
    if !env.quick {
        closures.push(synth_closure(env, Arch::Aarch64, 1.0)?);
    }
    for c in &closures {
        let name = name_of(c);
        let out = env.out(&format!("pipeline-sd-{name}"))?;
        let raw = out.join("raw.img");
        super::zstd::raw_sd_image(env, c, &raw)?;
        let zst = out.join("zstd.img.zst");
        let jobs = vec![
            imgbuild_job(
                env,
                "imgbuild sd-aarch64",
                "sd-aarch64",
                c,
                &out.join("ours.img.zst"),
                &[],
            ),
            {
                let (raw, o) = (raw.clone(), zst.clone());
                Job::new("zstd -T0 -3 (raw image)", vec![zst.clone()], move || {
                    let mut c = Command::new("zstd");
                    c.args(["-q", "-T0", "-3", "-f"])
                        .arg(&raw)
                        .arg("-o")
                        .arg(&o);
                    c
                })
            },
        ];
        let st = run_jobs(env, &format!("pipeline-sd-{name}"), &jobs)?;
        rep.line(&format!("#### {}\n", c.desc));
        rep.stats(&jobs, &st);
        rep.line(&goal_line(
            "sd-aarch64 end to end vs zstd -T0 -3 alone",
            st[0].secs() / st[1].secs(),
            1.2,
            "1.2",
        ));
        rep.line(&format!(
            "- CPU: imgbuild {:.2} s, zstd {:.2} s (imgbuild also hashes the raw disk twice, \
             for the manifest and the bmap, and the compressed file once)\n",
            st[0].cpu(),
            st[1].cpu()
        ));
        for p in jobs.iter().flat_map(|j| j.clean.iter()) {
            remove_any(p)?;
        }
        remove_any(&raw)?;
    }
    Ok(())
}

/// raw-efi at `--size 8GiB` vs a smaller disk of the same closure.
fn big_size(rep: &mut Report, env: &Env) -> Result<()> {
    rep.line(
        "### raw-efi: `--size 8GiB` vs a smaller disk\n\n\
         The same closure on a bigger disk adds only holes: free space is never read or \
         written, but the disk's SHA-256 covers it. Goal: ≤ 1.5× the smaller case.\n",
    );
    let mut cases = vec![(fixture_closure(Arch::X86_64)?, "2GiB")];
    if !env.quick {
        cases.push((synth_closure(env, Arch::X86_64, 2.0)?, "auto"));
    }
    for (c, small) in &cases {
        let name = name_of(c);
        let out = env.out(&format!("pipeline-size-{name}"))?;
        let small_args: Vec<&str> = if *small == "auto" {
            vec![]
        } else {
            vec!["--size", small]
        };
        let jobs = vec![
            imgbuild_job(
                env,
                "imgbuild raw-efi --size 8GiB",
                "raw-efi",
                c,
                &out.join("big.img"),
                &["--size", "8GiB"],
            ),
            imgbuild_job(
                env,
                &format!("imgbuild raw-efi (size {small})"),
                "raw-efi",
                c,
                &out.join("small.img"),
                &small_args,
            ),
        ];
        let st = run_jobs(env, &format!("pipeline-size-{name}"), &jobs)?;
        rep.line(&format!("#### {}\n", c.desc));
        rep.stats(&jobs, &st);
        rep.line(&goal_line(
            &format!("8 GiB disk vs size {small}"),
            st[0].secs() / st[1].secs(),
            1.5,
            "1.5",
        ));
        rep.line(&format!(
            "- peak RSS: 8 GiB {:.0} MiB, size {small} {:.0} MiB\n",
            st[0].rss_mib(),
            st[1].rss_mib()
        ));
        for p in jobs.iter().flat_map(|j| j.clean.iter()) {
            remove_any(p)?;
        }
    }
    Ok(())
}

/// raw-efi against a previous imgbuild (`IMGBUILD_BENCH_PREVIOUS=/path/to/imgbuild`).
fn previous(rep: &mut Report, env: &Env) -> Result<()> {
    let Some(prev) = std::env::var_os("IMGBUILD_BENCH_PREVIOUS") else {
        rep.line(
            "### raw-efi vs a previous imgbuild\n\nSkipped: set `IMGBUILD_BENCH_PREVIOUS` to \
             another imgbuild binary to compare with (e.g. one built from main before a \
             change).\n",
        );
        return Ok(());
    };
    let prev = PathBuf::from(prev);
    rep.line(&format!(
        "### raw-efi vs a previous imgbuild (`{}`)\n\nBoth with dedup off where the current one \
         has it (`--no-dedup`), so both write the same bytes.\n",
        prev.display()
    ));
    let mut closures = vec![fixture_closure(Arch::X86_64)?];
    if !env.quick {
        closures.push(synth_closure(env, Arch::X86_64, 1.0)?);
    }
    for c in &closures {
        let name = name_of(c);
        let out = env.out(&format!("pipeline-prev-{name}"))?;
        let jobs = vec![
            imgbuild_job(
                env,
                "imgbuild raw-efi (this)",
                "raw-efi",
                c,
                &out.join("this.img"),
                &["--no-dedup"],
            ),
            imgbuild_job_with(
                &prev,
                "imgbuild raw-efi (previous)",
                "raw-efi",
                c,
                &out.join("prev.img"),
                &[],
            ),
        ];
        let st = run_jobs(env, &format!("pipeline-prev-{name}"), &jobs)?;
        rep.line(&format!("#### {}\n", c.desc));
        rep.stats(&jobs, &st);
        rep.line(&goal_line(
            "raw-efi vs the previous imgbuild",
            st[0].secs() / st[1].secs(),
            1.0,
            "1.0",
        ));
        rep.line("");
        for p in jobs.iter().flat_map(|j| j.clean.iter()) {
            remove_any(p)?;
        }
    }
    Ok(())
}

/// What deduplication saves (from the manifests of one untimed build each).
fn dedup(rep: &mut Report, env: &Env) -> Result<()> {
    rep.line("### dedup: identical store files stored once\n");
    let mut cases = vec![("raw-efi", fixture_closure(Arch::X86_64)?)];
    cases.push(("sd-aarch64", fixture_closure(Arch::Aarch64)?));
    if !env.quick {
        cases.push(("raw-efi", synth_closure(env, Arch::X86_64, 1.0)?));
    }
    let mut rows = Vec::new();
    for (format, c) in &cases {
        let out = env.out(&format!("pipeline-dedup-{}", name_of(c)))?;
        let mut sizes = Vec::new();
        let mut report = serde_json::Value::Null;
        for (tag, extra) in [("on", vec![]), ("off", vec!["--no-dedup"])] {
            let img = out.join(format!("{tag}.img"));
            let job = imgbuild_job(env, tag, format, c, &img, &extra);
            let mut cmd = (job.cmd)();
            cmd.args(["--compress", "none", "--json"]);
            let m: serde_json::Value = serde_json::from_str(&output_quiet(&mut cmd)?)?;
            let root = m["partitions"]
                .as_array()
                .and_then(|p| p.last())
                .map(|p| p["filesystem"]["size"].as_u64().unwrap_or(0))
                .unwrap_or(0);
            sizes.push(root);
            if tag == "on" {
                report = m["dedup"].clone();
            }
            for p in &job.clean {
                remove_any(p)?;
            }
        }
        rows.push(vec![
            format!("{format}: {}", c.desc),
            report["files_linked"].to_string(),
            format!(
                "{:.1}",
                report["bytes_saved"].as_f64().unwrap_or(0.0) / MIB as f64
            ),
            report["blocks_saved"].to_string(),
            format!("{:.1}", (sizes[1] as f64 - sizes[0] as f64) / MIB as f64),
        ]);
    }
    rep.table(
        &[
            "closure",
            "files linked",
            "MiB saved (apparent)",
            "blocks saved",
            "root fs smaller by MiB",
        ],
        &rows,
    );
    rep.line("");
    Ok(())
}
