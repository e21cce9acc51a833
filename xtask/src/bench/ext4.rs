use super::*;

/// `Block count × Block size` of an ext4 image, from `dumpe2fs -h`.
pub(super) fn ext4_bytes(img: &Path) -> Result<u64> {
    let text = output_quiet(cmd("dumpe2fs").arg("-h").arg(img))?;
    let field = |name: &str| -> Result<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim_start_matches(':').trim().parse().ok())
            .with_context(|| format!("dumpe2fs -h {}: no {name}", img.display()))
    };
    Ok(field("Block count")? * field("Block size")?)
}

pub(super) fn bench_ext4(rep: &mut Report, env: &Env) -> Result<()> {
    rep.line("## ext4: `imgbuild ext4` vs `mke2fs -t ext4 -d` vs `cp -a`\n");
    rep.line(
        "`imgbuild ext4 SRC -o IMG --label x` (size auto, no free space; fsyncs IMG); \
         `mke2fs -q -F -t ext4 -L x -d SRC IMG SIZE` with SIZE = imgbuild's image size \
         (mke2fs flushes with fsync); `cp -a SRC DIR` with DIR beside the images (no \
         flush: compare the +sync column). Size: imgbuild `--size auto --free 0` vs \
         `mke2fs -d` into 1.5x + 128 MiB then `resize2fs -M` (dumpe2fs block count x \
         block size).\n",
    );
    let fix = fixture::default_dir(Arch::X86_64);
    fixture::ensure_built(Arch::X86_64, &fix)?;
    let (gen, gen_desc) = gen_tree(env)?;
    let trees = [
        (
            "fixture",
            fix.join("nix/store"),
            "fixture x86_64 `nix/store` as Nix left it (closure, .drv files, build outputs)"
                .to_string(),
        ),
        ("generated", gen.clone(), gen_desc),
    ];
    for (name, src, desc) in trees {
        bench_ext4_tree(rep, env, name, &src, &desc)?;
    }
    Ok(())
}

/// `mke2fs -t ext4 -d SRC IMG SIZE` with the label imgbuild gets.
fn mke2fs(img: &Path, bytes: u64, src: &Path) -> Command {
    let mut c = Command::new("mke2fs");
    c.args(["-q", "-F", "-t", "ext4", "-L", "x", "-d"])
        .arg(src)
        .arg(img)
        .arg(format!("{}k", bytes / 1024));
    c
}

/// The size mke2fs gets: imgbuild's, or 1.2x + 64 MiB when the tree does not fit in it (then
/// with a note saying so).
fn mke2fs_size(env: &Env, img: &Path, size: u64, src: &Path) -> Result<(u64, String)> {
    remove_any(img)?;
    if measure(
        &mut mke2fs(img, size, src),
        &env.dir.join("logs/ext4-mke2fs-fit.log"),
    )
    .is_ok()
    {
        return Ok((size, String::new()));
    }
    let mk_size = size * 12 / 10 + 64 * MIB;
    let note =
        format!(" mke2fs -d does not fit the tree in imgbuild's {size} bytes; it got {mk_size}.");
    Ok((mk_size, note))
}

/// mke2fs's minimum: `mke2fs -d` into 1.5x + 128 MiB, then `resize2fs -M`; its bytes.
fn mke2fs_min(out: &Path, size: u64, src: &Path) -> Result<u64> {
    let gen_img = out.join("mke2fs-min.img");
    remove_any(&gen_img)?;
    run(mke2fs(&gen_img, size * 3 / 2 + 128 * MIB, src).stdout(Stdio::null()))?;
    output_quiet(cmd("resize2fs").arg("-M").arg(&gen_img))?;
    let theirs = ext4_bytes(&gen_img)?;
    remove_any(&gen_img)?;
    Ok(theirs)
}

/// The report lines of one tree: times against the goals, peak RSS, minimum sizes.
fn report_tree(rep: &mut Report, st: &[Stats], sizes: (u64, u64, &str), ours_fs: u64, theirs: u64) {
    let (size, mk_size, note) = sizes;
    rep.line(&format!(
        "image size {size} bytes (mke2fs got {mk_size}).{note}\n"
    ));
    rep.line(&goal_line(
        "time vs mke2fs -d",
        st[0].secs() / st[1].secs(),
        0.33,
        "0.33",
    ));
    rep.line(&goal_line(
        "time vs cp -a, both durable (+sync)",
        st[0].durable() / st[2].durable(),
        1.0,
        "1.0",
    ));
    rep.line(&goal_line(
        "time vs cp -a without flushing cp's writes",
        st[0].secs() / st[2].secs(),
        1.0,
        "1.0",
    ));
    rep.line(&format!(
        "- peak RSS: imgbuild {:.0} MiB, mke2fs {:.0} MiB, cp {:.0} MiB",
        st[0].rss_mib(),
        st[1].rss_mib(),
        st[2].rss_mib()
    ));
    rep.line(&format!(
        "- size: imgbuild --size auto {ours_fs} bytes ({:.1} MiB) vs mke2fs -d + resize2fs -M \
         {theirs} bytes ({:.1} MiB): ratio **{:.3}** (goal ≤ 1.0) **{}**\n",
        ours_fs as f64 / MIB as f64,
        theirs as f64 / MIB as f64,
        ours_fs as f64 / theirs as f64,
        verdict(ours_fs as f64, theirs as f64)
    ));
}

/// One tree: imgbuild ext4, mke2fs -d and cp -a timed, then the minimum sizes.
fn bench_ext4_tree(rep: &mut Report, env: &Env, name: &str, src: &Path, desc: &str) -> Result<()> {
    let (n, b) = count_tree(src)?;
    rep.line(&format!(
        "### {desc}\n\n`{}`: {n} entries, {:.2} GiB of file data.\n",
        src.display(),
        b as f64 / GIB as f64
    ));
    let out = env.out(&format!("ext4-{name}"))?;
    let ours_img = out.join("ours.img");
    let ours_cmd = {
        let (bin, src, img) = (env.imgbuild.clone(), src.to_path_buf(), ours_img.clone());
        move || {
            let mut c = Command::new(&bin);
            c.arg("ext4")
                .arg(&src)
                .arg("-o")
                .arg(&img)
                .args(["--label", "x"]);
            c
        }
    };
    // Untimed: imgbuild's size, which mke2fs then gets.
    remove_any(&ours_img)?;
    measure(&mut ours_cmd(), &env.dir.join("logs/ext4-size.log"))?;
    let size = file_len(&ours_img)?;
    output_quiet(cmd("e2fsck").arg("-fn").arg(&ours_img))
        .with_context(|| format!("e2fsck -fn {}", ours_img.display()))?;
    let mk_img = out.join("mke2fs.img");
    let (mk_size, note) = mke2fs_size(env, &mk_img, size, src)?;
    let cp_dst = out.join("cp-copy");
    let jobs = vec![
        Job::new("imgbuild ext4", vec![ours_img.clone()], ours_cmd),
        {
            let (img, src) = (mk_img.clone(), src.to_path_buf());
            Job::new("mke2fs -d", vec![mk_img.clone()], move || {
                mke2fs(&img, mk_size, &src)
            })
        },
        {
            let (src, dst) = (src.to_path_buf(), cp_dst.clone());
            Job::new("cp -a", vec![cp_dst.clone()], move || {
                let mut c = Command::new("cp");
                c.arg("-a").arg(&src).arg(&dst);
                c
            })
        },
    ];
    let st = run_jobs(env, &format!("ext4-{name}"), &jobs)?;
    remove_any(&cp_dst)?;
    rep.stats(&jobs, &st);
    // Minimum sizes.
    let theirs = mke2fs_min(&out, size, src)?;
    let ours_fs = ext4_bytes(&ours_img)?;
    report_tree(rep, &st, (size, mk_size, &note), ours_fs, theirs);
    remove_any(&ours_img)?;
    remove_any(&mk_img)?;
    Ok(())
}
