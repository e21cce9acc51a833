use super::images::image_jobs;
use super::*;

/// Least-squares line `t = a + b x`: returns `(a, b)`.
pub(super) fn fit_line(xs: &[f64], ys: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    let mx = xs.iter().sum::<f64>() / n;
    let my = ys.iter().sum::<f64>() / n;
    let sxy: f64 = xs.iter().zip(ys).map(|(x, y)| (x - mx) * (y - my)).sum();
    let sxx: f64 = xs.iter().map(|x| (x - mx) * (x - mx)).sum();
    let b = if sxx > 0.0 { sxy / sxx } else { 0.0 };
    (my - b * mx, b)
}

pub(super) fn bench_scaling(rep: &mut Report, env: &Env) -> Result<()> {
    rep.line("## scaling: `imgbuild raw-efi` vs closure size\n");
    let sizes: &[f64] = if env.quick {
        &[0.125, 0.25]
    } else {
        &[0.25, 0.5, 1.0, 2.0]
    };
    let mut rows = Vec::new();
    let mut xs = Vec::new();
    let mut ys = Vec::new();
    let mut rss = Vec::new();
    let mut descs = Vec::new();
    for &gib in sizes {
        let c = synth_closure(env, Arch::X86_64, gib)?;
        let name = c
            .dir
            .file_name()
            .map_or("x".into(), |n| n.to_string_lossy().into_owned());
        let out = env.out(&format!("scaling-{name}"))?;
        let mut jobs = image_jobs(env, "raw-efi", &c, &out);
        jobs.truncate(1);
        let st = run_jobs(env, &format!("scaling-{name}"), &jobs)?;
        let s = &st[0];
        let img_len = file_len(&out.join("ours.img"))?;
        let nar_gib = c.nar_size as f64 / GIB as f64;
        rows.push(vec![
            format!("{gib}"),
            format!("{nar_gib:.3}"),
            c.paths.to_string(),
            format!("{:.0}", img_len as f64 / MIB as f64),
            format!("{:.2}", s.secs()),
            s.range(),
            format!("{:.2}", s.durable()),
            format!("{:.2}", s.cpu()),
            format!("{:.2}", s.secs() / nar_gib),
            format!("{:.0}", s.rss_mib()),
        ]);
        xs.push(nar_gib);
        ys.push(s.secs());
        rss.push(s.rss_mib());
        descs.push(c.desc.clone());
        for p in &jobs[0].clean {
            remove_any(p)?;
        }
    }
    for d in &descs {
        rep.line(&format!("- {d}"));
    }
    rep.line("");
    rep.table(
        &[
            "closure GiB",
            "NAR GiB",
            "store paths",
            "image MiB",
            "median s",
            "range s",
            "median s +sync",
            "CPU s",
            "s per NAR GiB",
            "peak RSS MiB",
        ],
        &rows,
    );
    let n = ys.len();
    let (a, b) = fit_line(&xs, &ys);
    let ratio = (ys[n - 1] / ys[0]) / (xs[n - 1] / xs[0]);
    let slope = |i: usize| (ys[i + 1] - ys[i]) / (xs[i + 1] - xs[i]);
    let (first, last) = (slope(0), slope(n - 2));
    rep.line(&format!(
        "fit: t = {a:.2} s + {b:.2} s/GiB × NAR GiB. (t_max / t_min) / (size_max / size_min) \
         = {ratio:.2} (1.0 = proportional; below 1 = fixed costs dominate the small closures)."
    ));
    rep.line(&format!(
        "- linear (no superlinear growth): slope of the last step {last:.2} s/GiB vs the first \
         {first:.2} s/GiB: **{:.2}** (goal ≤ 1.5) **{}**",
        last / first,
        verdict(last / first, 1.5)
    ));
    rep.line(&format!(
        "- peak RSS at the largest closure ({} GiB): **{:.0} MiB** (goal < 256 MiB) **{}**\n",
        sizes[n - 1],
        rss[n - 1],
        if rss[n - 1] < 256.0 { "PASS" } else { "MISS" }
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_and_fit() {
        assert_eq!(verdict(0.3, 0.3), "PASS");
        assert_eq!(verdict(0.31, 0.3), "MISS");
        let (a, b) = fit_line(&[1.0, 2.0, 4.0], &[3.0, 5.0, 9.0]);
        assert!((a - 1.0).abs() < 1e-9 && (b - 2.0).abs() < 1e-9);
        assert!(goal_line("x", 0.5, 1.0, "1.0").ends_with("**PASS**"));
    }
}
