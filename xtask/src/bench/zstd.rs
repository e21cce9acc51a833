use super::*;

/// `imgbuild sd-aarch64 --compress none` of `c` at `out` (untimed), for the zstd bench.
pub(super) fn raw_sd_image(env: &Env, c: &Closure, out: &Path) -> Result<()> {
    remove_any(out)?;
    let mut b = Command::new(&env.imgbuild);
    b.arg("sd-aarch64")
        .arg("--closure")
        .arg(c.dir.join("result"))
        .arg("--store-root")
        .arg(&c.dir)
        .arg("--closure-info")
        .arg(c.dir.join("closure-info"))
        .args(["--compress", "none", "-o"])
        .arg(out);
    output_quiet(&mut b)?;
    Ok(())
}

pub(super) fn bench_zstd(rep: &mut Report, env: &Env) -> Result<()> {
    rep.line("## zstd: imgbuild's compressor vs `zstd -T0 -3`\n");
    rep.line(
        "Input: the raw (sparse) sd-aarch64 image `imgbuild sd-aarch64 --compress none` \
         builds. imgbuild: `compress RAW OUT` (crates/compress/examples/compress.rs: \
         `imgbuild_compress::compress_file`: the zstd sink imgbuild feeds, at level 3 with one \
         worker per CPU and a content checksum, fed by the same stream with two reader \
         threads, without the image build, hashing and bmap around it); zstd: \
         `zstd -q -T0 -3 -f RAW -o OUT`. Neither fsyncs. Both outputs are checked to \
         decompress to RAW.\n",
    );
    let mut closures = vec![fixture_closure(Arch::Aarch64)?];
    if !env.quick {
        closures.push(synth_closure(env, Arch::Aarch64, 1.0)?);
    }
    for c in &closures {
        let out = env.out(&format!(
            "zstd-{}",
            c.dir
                .file_name()
                .map_or("x".into(), |n| n.to_string_lossy().into_owned())
        ))?;
        let raw = out.join("raw.img");
        raw_sd_image(env, c, &raw)?;
        let raw_len = file_len(&raw)?;
        let ours = out.join("ours.img.zst");
        let theirs = out.join("zstd.img.zst");
        let jobs = vec![
            {
                let (bin, raw, o) = (env.compress.clone(), raw.clone(), ours.clone());
                Job::new("imgbuild compress", vec![ours.clone()], move || {
                    let mut c = Command::new(&bin);
                    c.arg(&raw).arg(&o);
                    c
                })
            },
            {
                let (raw, o) = (raw.clone(), theirs.clone());
                Job::new("zstd -T0 -3", vec![theirs.clone()], move || {
                    let mut c = Command::new("zstd");
                    c.args(["-q", "-T0", "-3", "-f"])
                        .arg(&raw)
                        .arg("-o")
                        .arg(&o);
                    c
                })
            },
        ];
        let label = format!(
            "zstd-{}",
            c.dir
                .file_name()
                .map_or("x".into(), |n| n.to_string_lossy().into_owned())
        );
        let st = run_jobs(env, &label, &jobs)?;
        for z in [&ours, &theirs] {
            let same = output_quiet(Command::new("sh").arg("-c").arg(format!(
                "zstd -dc '{}' | cmp - '{}' && echo same",
                z.display(),
                raw.display()
            )))?;
            ensure!(
                same.trim() == "same",
                "{} does not decompress to the raw image",
                z.display()
            );
        }
        let (a, b) = (file_len(&ours)?, file_len(&theirs)?);
        rep.line(&format!(
            "### {}\n\nraw image {raw_len} bytes ({:.0} MiB apparent).\n",
            c.desc,
            raw_len as f64 / MIB as f64
        ));
        rep.stats(&jobs, &st);
        rep.line(&format!(
            "throughput: imgbuild {:.0} MiB/s, zstd {:.0} MiB/s (of raw image)",
            raw_len as f64 / MIB as f64 / st[0].secs(),
            raw_len as f64 / MIB as f64 / st[1].secs()
        ));
        rep.line(&goal_line(
            "time vs zstd -T0 -3",
            st[0].secs() / st[1].secs(),
            1.0,
            "1.0",
        ));
        rep.line(&format!(
            "- size: imgbuild {a} bytes, zstd {b} bytes: ratio **{:.4}** (goal ≤ 1.01) **{}**\n",
            a as f64 / b as f64,
            verdict(a as f64 / b as f64, 1.01)
        ));
        remove_any(&raw)?;
        remove_any(&ours)?;
        remove_any(&theirs)?;
    }
    Ok(())
}
