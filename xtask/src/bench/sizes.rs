use super::*;

/// `inspect --sizes` and `diff` on images of the synthetic closures: what they cost next to a
/// plain `inspect`, and (as root) next to what people do today, loop-mounting the root and
/// running `du` over the store.
pub(super) fn bench_sizes(rep: &mut Report, env: &Env) -> Result<()> {
    rep.line("## sizes: `inspect --sizes` and `diff`\n");
    rep.line(
        "Images: `imgbuild raw-efi` (and `qemu-efi`, a qcow2) of two synthetic closures, built \
         once untimed. `inspect --sizes --json` walks every inode of both filesystems with our \
         own ext4 reader; `diff` measures both images and hashes every boot file. Peer (only \
         as root): `mount -o loop,ro` of the root partition, `du -s --block-size=1` of every \
         store path, `umount`.\n",
    );
    let (big, small) = if env.quick {
        (
            fixture_closure(Arch::X86_64)?,
            synth_closure(env, Arch::X86_64, 0.25)?,
        )
    } else {
        (
            synth_closure(env, Arch::X86_64, 1.0)?,
            synth_closure(env, Arch::X86_64, 0.5)?,
        )
    };
    let out = env.out("sizes")?;
    let (a, b, q) = (out.join("a.img"), out.join("b.img"), out.join("a.qcow2"));
    let m = build_image(env, "raw-efi", &big, &a)?;
    build_image(env, "raw-efi", &small, &b)?;
    build_image(env, "qemu-efi", &big, &q)?;
    rep.line(&format!(
        "- images: `a.img` {} ({:.2} GiB disk), `b.img` {}, `a.qcow2`\n",
        big.desc,
        m["disk_size"].as_u64().unwrap_or(0) as f64 / GIB as f64,
        small.desc
    ));
    let p = |s: &str| PathBuf::from(s);
    let mut jobs = vec![
        imgbuild_job(
            env,
            "imgbuild inspect --sizes --json a.img",
            vec![p("inspect"), p("--sizes"), p("--json"), a.clone()],
        ),
        imgbuild_job(
            env,
            "imgbuild inspect --json a.img",
            vec![p("inspect"), p("--json"), a.clone()],
        ),
        imgbuild_job(
            env,
            "imgbuild inspect --sizes --json a.qcow2",
            vec![p("inspect"), p("--sizes"), p("--json"), q.clone()],
        ),
        diff_job(env, "imgbuild diff a.img b.img", &a, &b),
        diff_job(env, "imgbuild diff a.qcow2 b.img", &q, &b),
    ];
    let root = m["partitions"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["mount_point"] == "/"))
        .and_then(|p| p["start"].as_u64())
        .context("the root partition in the manifest")?;
    let is_root = output_quiet(Command::new("id").arg("-u")).is_ok_and(|u| u.trim() == "0");
    if is_root {
        let mnt = out.join("mnt");
        fs::create_dir_all(&mnt)?;
        jobs.push(mount_du_job(&a, &mnt, root));
    }
    let st = run_jobs(env, "sizes", &jobs)?;
    rep.stats(&jobs, &st);
    rep.line(&format!(
        "- `--sizes` costs {:.2}x a plain `inspect`; on the qcow2 (unpacked first) {:.2}x the \
         raw image; `diff` {:.2} s",
        st[0].secs() / st[1].secs(),
        st[2].secs() / st[0].secs(),
        st[3].secs()
    ));
    if is_root {
        rep.line(&format!(
            "- `--sizes` vs mount + du + umount: {:.2}x\n",
            st[0].secs() / st[5].secs()
        ));
    }
    for f in [&a, &b, &q] {
        remove_any(f)?;
    }
    Ok(())
}

/// `imgbuild FORMAT` of closure `c` into `o`, untimed; its manifest.
fn build_image(env: &Env, format: &str, c: &Closure, o: &Path) -> Result<serde_json::Value> {
    let mut cmd = Command::new(&env.imgbuild);
    cmd.arg(format)
        .arg("--closure")
        .arg(c.dir.join("result"))
        .arg("--store-root")
        .arg(&c.dir)
        .arg("--closure-info")
        .arg(c.dir.join("closure-info"))
        .args(["--seed", "bench", "--json", "-o"])
        .arg(o);
    Ok(serde_json::from_str(&output_quiet(&mut cmd)?)?)
}

/// A timed `imgbuild ARGS`.
fn imgbuild_job(env: &Env, label: &str, args: Vec<PathBuf>) -> Job {
    let bin = env.imgbuild.clone();
    Job::new(label, Vec::new(), move || {
        let mut cmd = Command::new(&bin);
        cmd.args(&args);
        cmd
    })
}

/// A timed `imgbuild diff X Y`; it exits 1 when the images differ, as these do.
fn diff_job(env: &Env, label: &str, x: &Path, y: &Path) -> Job {
    let (bin, x, y) = (env.imgbuild.clone(), x.to_path_buf(), y.to_path_buf());
    Job::new(label, Vec::new(), move || {
        let mut cmd = Command::new("bash");
        cmd.arg("-c")
            .arg("\"$IMGBUILD\" diff \"$X\" \"$Y\"; [ $? -le 1 ]")
            .env("IMGBUILD", &bin)
            .env("X", &x)
            .env("Y", &y);
        cmd
    })
}

/// The peer, as root: the root partition (at byte `offset`) loop-mounted, `du -s` of every
/// store path, unmounted.
fn mount_du_job(img: &Path, mnt: &Path, offset: u64) -> Job {
    let (img, mnt) = (img.to_path_buf(), mnt.to_path_buf());
    Job::new(
        "mount -o loop,ro + du -s every store path + umount",
        Vec::new(),
        move || {
            let mut cmd = Command::new("bash");
            cmd.arg("-euo")
                .arg("pipefail")
                .arg("-c")
                .arg(
                    "mount -t ext4 -o \"loop,ro,offset=$OFF\" \"$IMG\" \"$MNT\"; \
                     du -s --block-size=1 \"$MNT\"/nix/store/* > /dev/null; umount \"$MNT\"",
                )
                .env("OFF", offset.to_string())
                .env("IMG", &img)
                .env("MNT", &mnt);
            cmd
        },
    )
}
