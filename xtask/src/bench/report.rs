use super::*;

#[derive(Default)]
pub(super) struct Report {
    pub(super) text: String,
}

impl Report {
    /// The timing table of one group of jobs: every job's stats, and imgbuild's (the first
    /// job) ratio to each of the others.
    pub(super) fn stats(&mut self, jobs: &[super::Job], st: &[super::Stats]) {
        let rows: Vec<Vec<String>> = jobs
            .iter()
            .zip(st)
            .enumerate()
            .map(|(i, (j, s))| stats_row(&j.label, s, (i > 0).then_some(&st[0])))
            .collect();
        self.table(&STATS_HEADERS, &rows);
    }

    /// `- peak RSS: imgbuild X MiB, PEER Y MiB` and a blank line.
    pub(super) fn rss(&mut self, ours: &super::Stats, peer: &str, theirs: &super::Stats) {
        self.line(&format!(
            "- peak RSS: imgbuild {:.0} MiB, {peer} {:.0} MiB\n",
            ours.rss_mib(),
            theirs.rss_mib()
        ));
    }

    pub(super) fn line(&mut self, s: &str) {
        self.text.push_str(s);
        self.text.push('\n');
    }
    pub(super) fn table(&mut self, headers: &[&str], rows: &[Vec<String>]) {
        self.text.push_str(&md_table(headers, rows));
        self.text.push('\n');
    }
    pub(super) fn text(&self) -> String {
        self.text.clone()
    }
}

/// A Markdown table with columns padded to their widest cell.
pub(super) fn md_table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let n = headers.len();
    let mut w: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate().take(n) {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let fmt_row = |cells: Vec<&str>| {
        let mut s = String::from("|");
        for (i, wi) in w.iter().enumerate() {
            let c = cells.get(i).copied().unwrap_or("");
            let pad = wi - c.chars().count();
            s.push(' ');
            s.push_str(c);
            s.push_str(&" ".repeat(pad));
            s.push_str(" |");
        }
        s.push('\n');
        s
    };
    let mut out = fmt_row(headers.to_vec());
    out.push('|');
    for wi in &w {
        out.push_str(&"-".repeat(wi + 2));
        out.push('|');
    }
    out.push('\n');
    for r in rows {
        out.push_str(&fmt_row(r.iter().map(String::as_str).collect()));
    }
    out
}

/// PASS when `value <= goal`.
pub(super) fn verdict(value: f64, goal: f64) -> &'static str {
    if value <= goal {
        "PASS"
    } else {
        "MISS"
    }
}

pub(super) fn stats_row(label: &str, s: &Stats, ours: Option<&Stats>) -> Vec<String> {
    let ratio = |a: f64, b: f64| format!("{:.2}", a / b);
    vec![
        label.to_string(),
        format!("{:.2}", s.secs()),
        s.range(),
        format!("{:.2}", s.durable()),
        format!("{:.2}", s.cpu()),
        format!("{:.0}", s.rss_mib()),
        ours.map_or("—".into(), |o| ratio(o.secs(), s.secs())),
        ours.map_or("—".into(), |o| ratio(o.durable(), s.durable())),
    ]
}

pub(super) const STATS_HEADERS: [&str; 8] = [
    "command",
    "median s",
    "range s",
    "median s +sync",
    "CPU s",
    "peak RSS MiB",
    "imgbuild / this",
    "imgbuild / this (+sync)",
];

/// A goal line: `what: value (goal: <= goal) PASS|MISS`.
pub(super) fn goal_line(what: &str, value: f64, goal: f64, fmt_goal: &str) -> String {
    format!(
        "- {what}: **{value:.2}** (goal ≤ {fmt_goal}) **{}**",
        verdict(value, goal)
    )
}

pub(super) fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

pub(super) fn header(rep: &mut Report, env: &Env) -> Result<()> {
    let root = util::repo_root();
    let git = |args: &[&str]| {
        output_quiet(cmd("git").current_dir(&root).args(args))
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "?".into())
    };
    let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
        .lines()
        .count();
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "?".into());
    let mem = fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|k| k.parse::<u64>().ok())
        })
        .map_or("?".into(), |k| format!("{:.1} GiB", k as f64 / 1048576.0));
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mke2fs_v = Command::new("mke2fs")
        .arg("-V")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stderr)
                .lines()
                .next()
                .unwrap_or("")
                .to_string()
        })
        .unwrap_or_default();
    let zstd_v = output_quiet(cmd("zstd").arg("--version")).unwrap_or_default();
    rep.line("# imgbuild benchmark report\n");
    rep.line(&format!(
        "- commit {} ({}), release binaries built from the working tree{}",
        git(&["rev-parse", "--short", "HEAD"]),
        git(&["log", "-1", "--format=%cd", "--date=iso"]),
        if dirty > 0 {
            format!(" with {dirty} modified tracked files")
        } else {
            String::new()
        }
    ));
    rep.line(&format!(
        "- machine: {cpus} CPUs ({cpu}), {mem} RAM, Linux {}; load average at start: {} \
         (the machine is shared: others may be compiling)",
        kernel.trim(),
        loadavg()
    ));
    rep.line(&format!(
        "- tools: {}; {}; {}",
        mke2fs_v.trim(),
        zstd_v.trim(),
        output_quiet(cmd("cp").arg("--version"))
            .unwrap_or_default()
            .lines()
            .next()
            .unwrap_or("")
    ));
    rep.line(&format!(
        "- method: warm page cache; every command once untimed, then {} timed round(s), \
         commands interleaved; before each run its output is removed and `sync` called. \
         *median s*: wall time of the process; *+sync*: plus a `sync` right after it (the \
         cost of making its output durable: imgbuild and mke2fs fsync their output, cp, dd \
         and zstd do not); *peak RSS*: GNU time's %M, i.e. `ru_maxrss` from `wait4` (for a \
         shell pipeline, the largest of any process it ran); *CPU s*: user + system time of the command and \
         its children (GNU time %U + %S), which other load on the machine disturbs less \
         than wall time. Ratios are imgbuild's median over the other's.{}",
        env.runs,
        if env.quick {
            " **--quick: small inputs, goals not meaningful.**"
        } else {
            ""
        }
    ));
    rep.line("");
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Deterministic generators

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_aligned_markdown() {
        let t = md_table(
            &["a", "long header"],
            &[
                vec!["xyz".into(), "1".into()],
                vec!["q".into(), "22".into()],
            ],
        );
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 4);
        assert_eq!(lines[0], "| a   | long header |");
        assert_eq!(lines[1], "|-----|-------------|");
        assert_eq!(lines[2], "| xyz | 1           |");
        assert_eq!(lines[3], "| q   | 22          |");
    }
}
