use super::*;

/// One container format against the pipeline people use today: the raw image, then the
/// converter (`qemu-img convert`, or GNU tar + gzip as nixpkgs' google-compute-image does).
struct Case {
    format: &'static str,
    ext: &'static str,
    /// Shell command turning `$RAW` into `$OUT`.
    convert: &'static str,
    peer: &'static str,
}

const CASES: [Case; 5] = [
    Case {
        format: "qemu-efi",
        ext: "qcow2",
        convert: "qemu-img convert -O qcow2 \"$RAW\" \"$OUT\"",
        peer: "raw-efi + qemu-img convert -O qcow2",
    },
    Case {
        format: "amazon",
        ext: "vhd",
        convert: "qemu-img convert -O vpc -o subformat=dynamic,force_size=on \"$RAW\" \"$OUT\"",
        peer: "raw-efi + qemu-img convert -O vpc",
    },
    Case {
        format: "hyperv",
        ext: "vhdx",
        convert: "qemu-img convert -O vhdx -o subformat=dynamic \"$RAW\" \"$OUT\"",
        peer: "raw-efi + qemu-img convert -O vhdx",
    },
    Case {
        format: "vmware",
        ext: "vmdk",
        convert: "qemu-img convert -O vmdk -o subformat=streamOptimized \"$RAW\" \"$OUT\"",
        peer: "raw-efi + qemu-img convert -O vmdk (streamOptimized)",
    },
    Case {
        format: "gce",
        ext: "raw.tar.gz",
        convert: "cd \"$(dirname \"$RAW\")\" && tar --format=oldgnu -Sczf \"$OUT\" disk.raw",
        peer: "raw-efi (1 GiB multiple) + tar --format=oldgnu -Sczf",
    },
];

pub(super) fn bench_containers(rep: &mut Report, env: &Env) -> Result<()> {
    util::need_tools(&[("qemu-img", "qemu-utils"), ("tar", "tar"), ("gzip", "gzip")])?;
    rep.line("## containers: written from the plan vs raw image + converter\n");
    rep.line(
        "imgbuild: `imgbuild FORMAT ... -o OUT` (the container written in the one pass over \
         the disk, hashed, fsynced). Peer: `imgbuild raw-efi ... -o RAW` then the converter \
         people run today on it (`qemu-img convert`; for GCE `tar --format=oldgnu -Sczf`, as \
         nixpkgs' google-compute-image does), in one shell job. The gce peer's raw disk is \
         built with `--size` rounded up to a whole GiB, like ours.\n",
    );
    let mut closures = vec![fixture_closure(Arch::X86_64)?];
    if !env.quick {
        closures.push(synth_closure(env, Arch::X86_64, 1.0)?);
    }
    for c in &closures {
        let name = c.name();
        rep.line(&format!("### {}\n", c.desc));
        for case in &CASES {
            let out = env.out(&format!("containers-{}-{name}", case.format))?;
            let jobs = jobs(env, case, c, &out)?;
            let st = run_jobs(env, &format!("{}-{name}", case.format), &jobs)?;
            let ours = file_len(&out.join(format!("ours.{}", case.ext)))?;
            let peer = file_len(&out.join(format!("peer.{}", case.ext)))?;
            rep.line(&format!("#### {}\n", case.format));
            rep.stats(&jobs, &st);
            rep.line(&format!(
                "- file: imgbuild {ours} bytes ({:.1} MiB), peer {peer} bytes ({:.1} MiB), \
                 ratio {:.3}",
                ours as f64 / MIB as f64,
                peer as f64 / MIB as f64,
                ours as f64 / peer as f64
            ));
            rep.line(&goal_line(
                "time vs raw image + converter",
                st[0].secs() / st[1].secs(),
                1.0,
                "1.0",
            ));
            rep.line(&goal_line(
                "time vs the raw-efi build alone (the container's bytes are extra writes and \
                 an extra SHA-256 of the file)",
                st[0].secs() / st[2].secs(),
                1.2,
                "1.2",
            ));
            rep.rss(&st[0], "peer", &st[1]);
            for p in jobs.iter().flat_map(|j| j.clean.iter()) {
                remove_any(p)?;
            }
        }
    }
    Ok(())
}

fn jobs(env: &Env, case: &Case, c: &Closure, out: &Path) -> Result<Vec<Job>> {
    let ours = out.join(format!("ours.{}", case.ext));
    let peer = out.join(format!("peer.{}", case.ext));
    let raw = out.join("disk.raw");
    let with_side = |p: &Path| {
        let s = p.display().to_string();
        ["", ".json", ".tmp", ".json.tmp", ".bmap", ".bmap.tmp"]
            .iter()
            .map(|x| PathBuf::from(format!("{s}{x}")))
            .collect::<Vec<_>>()
    };
    let inputs = |cmd: &mut Command, dir: &Path| {
        cmd.arg("--closure")
            .arg(dir.join("result"))
            .arg("--store-root")
            .arg(dir)
            .arg("--closure-info")
            .arg(dir.join("closure-info"))
            .args(["--seed", "bench"]);
    };
    let (bin, dir, f, o) = (
        env.imgbuild.clone(),
        c.dir.clone(),
        case.format,
        ours.clone(),
    );
    let ours_job = Job::new(
        &format!("imgbuild {}", case.format),
        with_side(&ours),
        move || {
            let mut cmd = Command::new(&bin);
            cmd.arg(f);
            inputs(&mut cmd, &dir);
            cmd.arg("-o").arg(&o);
            cmd
        },
    );
    // The gce peer needs the same whole-GiB disk: ask ours what size it chose.
    let size = if case.format == "gce" {
        let mut cmd = Command::new(&env.imgbuild);
        cmd.arg("gce");
        inputs(&mut cmd, &c.dir);
        cmd.arg("-o").arg(&ours).arg("--json");
        let m: serde_json::Value = serde_json::from_str(&output_quiet(&mut cmd)?)?;
        Some(
            m["disk_size"]
                .as_u64()
                .context("disk_size in the manifest")?,
        )
    } else {
        None
    };
    let (bin, dir, convert) = (env.imgbuild.clone(), c.dir.clone(), case.convert);
    let (r, p) = (raw.clone(), peer.clone());
    let mut clean = with_side(&peer);
    clean.extend(with_side(&raw));
    let peer_job = Job::new(case.peer, clean, move || {
        let mut cmd = Command::new("bash");
        cmd.arg("-euo")
            .arg("pipefail")
            .arg("-c")
            .arg(format!(
                "\"$IMGBUILD\" \"$@\" && {convert} && rm -f \"$RAW\""
            ))
            .arg("bash")
            .arg("raw-efi");
        inputs(&mut cmd, &dir);
        cmd.arg("-o").arg(&r);
        if let Some(s) = size {
            cmd.arg("--size").arg(s.to_string());
        }
        cmd.env("IMGBUILD", &bin).env("RAW", &r).env("OUT", &p);
        cmd
    });
    let (bin, dir, r) = (env.imgbuild.clone(), c.dir.clone(), raw.clone());
    let raw_job = Job::new(
        "imgbuild raw-efi (the disk alone)",
        with_side(&raw),
        move || {
            let mut cmd = Command::new(&bin);
            cmd.arg("raw-efi");
            inputs(&mut cmd, &dir);
            cmd.arg("-o").arg(&r);
            if let Some(s) = size {
                cmd.arg("--size").arg(s.to_string());
            }
            cmd
        },
    );
    Ok(vec![ours_job, peer_job, raw_job])
}
