use super::*;

/// One timed run.
#[derive(Clone, Copy, Debug)]
pub(super) struct Sample {
    pub(super) secs: f64,
    pub(super) sync_secs: f64,
    pub(super) rss_kib: u64,
    /// User + system CPU time of the command and everything it waited for.
    pub(super) cpu_secs: f64,
}

/// The timed runs of one command.
#[derive(Clone, Debug, Default)]
pub(super) struct Stats {
    pub(super) samples: Vec<Sample>,
}

impl Stats {
    pub(super) fn secs(&self) -> f64 {
        median(&self.samples.iter().map(|s| s.secs).collect::<Vec<_>>())
    }
    pub(super) fn durable(&self) -> f64 {
        median(
            &self
                .samples
                .iter()
                .map(|s| s.secs + s.sync_secs)
                .collect::<Vec<_>>(),
        )
    }
    pub(super) fn range(&self) -> String {
        let xs: Vec<f64> = self.samples.iter().map(|s| s.secs).collect();
        let lo = xs.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = xs.iter().copied().fold(0.0, f64::max);
        format!("{lo:.2}–{hi:.2}")
    }
    pub(super) fn cpu(&self) -> f64 {
        median(&self.samples.iter().map(|s| s.cpu_secs).collect::<Vec<_>>())
    }
    /// The largest peak RSS over the runs, in MiB.
    pub(super) fn rss_mib(&self) -> f64 {
        self.samples.iter().map(|s| s.rss_kib).max().unwrap_or(0) as f64 / 1024.0
    }
}

/// The median (mean of the two middle values for an even count); NaN when empty.
pub(super) fn median(xs: &[f64]) -> f64 {
    let mut v: Vec<f64> = xs.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// `sync(2)`: flush every dirty page of the machine.
pub(super) fn sync_all() {
    // SAFETY: sync() takes no arguments and has no memory-safety preconditions.
    unsafe { libc::sync() }
}

/// Runs `c` once (stdin null, output to `log`), after `sync`; times it and the `sync` after.
///
/// Peak RSS comes from GNU time's `%M`: the `ru_maxrss` that `wait4` gives for the command,
/// which for a shell pipeline is the largest over every process it waited for. Not from our
/// own `wait4`: a child that Rust spawns (vfork, then exec) starts with the spawning
/// process's peak RSS in its `ru_maxrss`, so xtask's own (the generators touch big buffers)
/// would be a floor under every number. `time` forks, and is small.
pub(super) fn measure(c: &mut Command, log: &Path) -> Result<Sample> {
    let line = util::display_cmd(c);
    let rss_file = log.with_extension("rss");
    let mut t = Command::new("time");
    t.arg("-f").arg("%M %U %S").arg("-o").arg(&rss_file);
    t.arg(c.get_program()).args(c.get_args());
    for (k, v) in c.get_envs() {
        match v {
            Some(v) => t.env(k, v),
            None => t.env_remove(k),
        };
    }
    if let Some(d) = c.get_current_dir() {
        t.current_dir(d);
    }
    let f = File::create(log).with_context(|| format!("creating {}", log.display()))?;
    t.stdin(Stdio::null())
        .stdout(f.try_clone()?)
        .stderr(Stdio::from(f));
    sync_all();
    let start = Instant::now();
    let status = t
        .status()
        .with_context(|| format!("cannot start `{line}` under GNU time"))?;
    let secs = start.elapsed().as_secs_f64();
    let start = Instant::now();
    sync_all();
    let sync_secs = start.elapsed().as_secs_f64();
    if !status.success() {
        let text = fs::read_to_string(log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(15).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!("`{line}` failed with {status}:\n{}", tail.join("\n"));
    }
    let rss =
        fs::read_to_string(&rss_file).with_context(|| format!("reading {}", rss_file.display()))?;
    // The last line is `%M %U %S` (a failure would have added a line before it).
    let (rss_kib, cpu_secs) = rss
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            match f.as_slice() {
                [m, u, s] => Some((
                    m.parse::<u64>().ok()?,
                    u.parse::<f64>().ok()? + s.parse::<f64>().ok()?,
                )),
                _ => None,
            }
        })
        .next_back()
        .with_context(|| format!("{}: no `%M %U %S` line in {rss:?}", rss_file.display()))?;
    Ok(Sample {
        secs,
        sync_secs,
        rss_kib,
        cpu_secs,
    })
}

/// A command to benchmark: how to make it, and what to remove before each run.
pub(super) struct Job {
    pub(super) label: String,
    pub(super) cmd: Box<dyn Fn() -> Command>,
    pub(super) clean: Vec<PathBuf>,
}

impl Job {
    pub(super) fn new(
        label: &str,
        clean: Vec<PathBuf>,
        make: impl Fn() -> Command + 'static,
    ) -> Self {
        Job {
            label: label.to_string(),
            cmd: Box::new(make),
            clean,
        }
    }
}

pub(super) fn remove_any(p: &Path) -> Result<()> {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => util::remove_tree(p),
        Ok(_) => fs::remove_file(p).with_context(|| format!("removing {}", p.display())),
        Err(_) => Ok(()),
    }
}

/// One warm-up run of every job, then `runs` rounds of every job in turn.
pub(super) fn run_jobs(env: &Env, group: &str, jobs: &[Job]) -> Result<Vec<Stats>> {
    let mut stats = vec![Stats::default(); jobs.len()];
    for round in 0..=env.runs {
        for (j, st) in jobs.iter().zip(stats.iter_mut()) {
            for p in &j.clean {
                remove_any(p)?;
            }
            let slug: String = format!("{group}-{}", j.label)
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .collect();
            let log = env.dir.join("logs").join(format!("{slug}.log"));
            let s =
                measure(&mut (j.cmd)(), &log).with_context(|| format!("{group}: {}", j.label))?;
            let what = if round == 0 {
                "warm-up".to_string()
            } else {
                format!("run {round}/{}", env.runs)
            };
            eprintln!(
                "xtask bench: {group}: {} {what}: {:.2} s (+{:.2} s sync), CPU {:.2} s, {:.0} MiB",
                j.label,
                s.secs,
                s.sync_secs,
                s.cpu_secs,
                s.rss_kib as f64 / 1024.0
            );
            if round > 0 {
                st.samples.push(s);
            }
        }
    }
    Ok(stats)
}

// ---------------------------------------------------------------------------------------
// Report

pub(super) fn file_len(p: &Path) -> Result<u64> {
    Ok(fs::metadata(p)
        .with_context(|| format!("reading {}", p.display()))?
        .len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_odd_even_empty() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&[7.5]), 7.5);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn stats_use_medians_and_max_rss() {
        let s = Stats {
            samples: vec![
                Sample {
                    secs: 3.0,
                    sync_secs: 0.5,
                    rss_kib: 1024,
                    cpu_secs: 1.0,
                },
                Sample {
                    secs: 1.0,
                    sync_secs: 0.1,
                    rss_kib: 4096,
                    cpu_secs: 1.0,
                },
                Sample {
                    secs: 2.0,
                    sync_secs: 3.0,
                    rss_kib: 2048,
                    cpu_secs: 1.0,
                },
            ],
        };
        assert_eq!(s.secs(), 2.0);
        assert_eq!(s.durable(), 3.5);
        assert_eq!(s.rss_mib(), 4.0);
        assert_eq!(s.cpu(), 1.0);
        assert_eq!(s.range(), "1.00–3.00");
    }

    /// The peak RSS covers grandchildren: `sh` runs `dd` with a 64 MiB buffer.
    #[test]
    fn measure_reports_descendants_peak_rss() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut c = Command::new("sh");
        c.arg("-c")
            .arg("dd if=/dev/zero of=/dev/null bs=64M count=2 2>/dev/null; true");
        let s = measure(&mut c, &dir.path().join("log")).expect("runs");
        assert!(s.rss_kib >= 64 * 1024, "rss {} KiB", s.rss_kib);
        assert!(s.rss_kib < 1024 * 1024, "rss {} KiB", s.rss_kib);
        let mut bad = Command::new("sh");
        bad.args(["-c", "echo oops; exit 3"]);
        let e = measure(&mut bad, &dir.path().join("log2")).expect_err("fails");
        assert!(format!("{e:#}").contains("oops"), "{e:#}");
    }

    /// The measuring process's own peak RSS does not leak into the command's.
    #[test]
    fn measure_is_not_floored_by_our_rss() {
        let dir = tempfile::tempdir().expect("tempdir");
        let big = vec![1u8; 300 << 20];
        let mut c = Command::new("sh");
        c.args(["-c", "true"]);
        let s = measure(&mut c, &dir.path().join("log")).expect("runs");
        assert!(s.rss_kib < 32 * 1024, "rss {} KiB", s.rss_kib);
        assert_eq!(big.iter().map(|&b| b as u64).sum::<u64>(), 300 << 20);
    }
}
