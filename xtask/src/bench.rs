//! `cargo xtask bench [ext4|zstd|images|scaling|all] [--runs N] [--quick]`: imgbuild against
//! the conventional tools, one report (stdout and `target/bench/report.md`).
//!
//! - `ext4`: `imgbuild ext4` vs `mke2fs -t ext4 -d` (same size) vs `cp -a` (same disk), on the
//!   x86_64 fixture's `/nix/store` and on a generated tree (1 GiB, 55,000 entries, one
//!   directory of 18,000); `--size auto` image size vs `mke2fs -d` + `resize2fs -M`.
//! - `zstd`: imgbuild's compressor (`crates/compress/examples/compress.rs`) vs `zstd -T0 -3`
//!   on the same raw sd-aarch64 images.
//! - `images`: whole `imgbuild raw-efi` / `sd-aarch64` builds vs the shell pipelines in
//!   `xtask/scripts/baseline-*.sh` (what `cargo xtask baseline` runs), on the fixture closures
//!   and on 1 GiB synthetic closures.
//! - `scaling`: `imgbuild raw-efi` on synthetic closures of 0.25, 0.5, 1 and 2 GiB.
//!
//! Method: the release binaries are built first and copied to `target/bench/bin` (others may
//! rebuild `target/release` meanwhile). Warm page cache: every command runs once untimed,
//! then `--runs` timed rounds, the commands of a section interleaved round by round. Before
//! each run: its previous output is removed and `sync` is called (untimed). Time = wall
//! clock from spawn to exit; "+sync" adds a `sync` timed right after the command, i.e. the
//! cost of making the output durable (`imgbuild` and `mke2fs` fsync their output themselves;
//! `cp`, `dd` and `zstd` do not). Peak RSS = GNU time's `%M` (`ru_maxrss` from `wait4`): for
//! a shell pipeline the largest of the script and every process it waited for (the kernel
//! folds waited-for descendants' maxima into the child's). See [`measure`] for why not our
//! own `wait4`.
//!
//! Synthetic closures (`target/bench/closures/<arch>-<size>`): the fixture's closure (from
//! `cargo xtask fixtures`) plus generated filler store paths, and a new toplevel: a copy of
//! the fixture's with its own hash part replaced by a new one and `extra-dependencies`
//! listing every filler path by its full store path. `closure-info/` (store-paths,
//! registration with NAR hashes, sizes and references) comes from a scan of that store with
//! `imgbuild_nix::Closure::from_scan` (Nix's reference scanner, NAR hashing as
//! `nix-store --dump`), so both imgbuild (`--closure-info`) and the baseline script
//! (`nix-store --load-db`) get the whole closure. Everything generated is deterministic
//! (xorshift64* from fixed seeds) and reused while its marker file matches.

use crate::fixture::{self, Arch, FixtureInfo};
use crate::util::{self, cmd, output_quiet, run};
use anyhow::{bail, ensure, Context, Result};
use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{symlink, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;
/// Bump when the generators change: trees and closures with another version are rebuilt.
const GEN_VERSION: u32 = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Section {
    Ext4,
    Zstd,
    Images,
    Scaling,
    All,
}

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// What to benchmark
    #[arg(value_enum, default_value = "all")]
    section: Section,
    /// Timed runs per command (after one untimed warm-up run) [default: 3; 1 with --quick]
    #[arg(long)]
    runs: Option<usize>,
    /// Small sizes (128 MiB tree, fixtures only, closures up to 0.25 GiB): checks the bench
    /// itself; the goals are not meaningful then
    #[arg(long)]
    quick: bool,
}

/// Paths and binaries shared by every section.
struct Env {
    dir: PathBuf,
    imgbuild: PathBuf,
    compress: PathBuf,
    runs: usize,
    quick: bool,
}

impl Env {
    fn out(&self, name: &str) -> Result<PathBuf> {
        let d = self.dir.join("out").join(name);
        fs::create_dir_all(&d)?;
        Ok(d)
    }
}

pub fn run_bench(args: BenchArgs) -> Result<()> {
    util::need_tools(&[
        ("mke2fs", "e2fsprogs"),
        ("resize2fs", "e2fsprogs"),
        ("dumpe2fs", "e2fsprogs"),
        ("e2fsck", "e2fsprogs"),
        ("zstd", "zstd"),
        ("cp", "coreutils"),
        ("bash", "bash"),
        ("mkfs.vfat", "dosfstools"),
        ("mcopy", "mtools"),
        ("sgdisk", "gdisk"),
        ("sfdisk", "fdisk"),
        ("nix-store", "nix-bin"),
        ("time", "time"),
    ])?;
    let dir = util::target_dir().join("bench");
    fs::create_dir_all(dir.join("logs"))?;
    let (imgbuild, compress) = build_binaries(&dir)?;
    let env = Env {
        dir,
        imgbuild,
        compress,
        runs: args.runs.unwrap_or(if args.quick { 1 } else { 3 }).max(1),
        quick: args.quick,
    };
    let mut rep = Report::default();
    header(&mut rep, &env)?;
    let all = args.section == Section::All;
    let t = Instant::now();
    if all || args.section == Section::Ext4 {
        section(&mut rep, "ext4", |r| bench_ext4(r, &env))?;
    }
    if all || args.section == Section::Zstd {
        section(&mut rep, "zstd", |r| bench_zstd(r, &env))?;
    }
    if all || args.section == Section::Images {
        section(&mut rep, "images", |r| bench_images(r, &env))?;
    }
    if all || args.section == Section::Scaling {
        section(&mut rep, "scaling", |r| bench_scaling(r, &env))?;
    }
    rep.line(&format!(
        "\nBench finished in {:.0} s; load average at the end: {}.",
        t.elapsed().as_secs_f64(),
        loadavg()
    ));
    let text = rep.text();
    let path = env.dir.join("report.md");
    fs::write(&path, &text).with_context(|| format!("writing {}", path.display()))?;
    println!("{text}");
    eprintln!("xtask bench: report written to {}", path.display());
    Ok(())
}

fn section(rep: &mut Report, name: &str, f: impl FnOnce(&mut Report) -> Result<()>) -> Result<()> {
    let t = Instant::now();
    let before = loadavg();
    f(rep).with_context(|| format!("bench {name}"))?;
    rep.line(&format!(
        "_{name}: {:.0} s; load average before {before}, after {}._\n",
        t.elapsed().as_secs_f64(),
        loadavg()
    ));
    Ok(())
}

/// Builds the release `imgbuild` and the compress example, and copies both to `DIR/bin`.
fn build_binaries(dir: &Path) -> Result<(PathBuf, PathBuf)> {
    let root = util::repo_root();
    run(cmd("cargo").current_dir(&root).args([
        "build",
        "--release",
        "-p",
        "imgbuild",
        "--bin",
        "imgbuild",
    ]))?;
    run(cmd("cargo").current_dir(&root).args([
        "build",
        "--release",
        "-p",
        "imgbuild-compress",
        "--example",
        "compress",
    ]))?;
    let bin = dir.join("bin");
    fs::create_dir_all(&bin)?;
    let rel = util::target_dir().join("release");
    let mut out = Vec::new();
    for (src, name) in [
        (rel.join("imgbuild"), "imgbuild"),
        (rel.join("examples/compress"), "compress"),
    ] {
        let dst = bin.join(name);
        let _ = fs::remove_file(&dst);
        fs::copy(&src, &dst).with_context(|| format!("copying {}", src.display()))?;
        out.push(dst);
    }
    Ok((out[0].clone(), out[1].clone()))
}

// ---------------------------------------------------------------------------------------
// Measuring

/// One timed run.
#[derive(Clone, Copy, Debug)]
struct Sample {
    secs: f64,
    sync_secs: f64,
    rss_kib: u64,
    /// User + system CPU time of the command and everything it waited for.
    cpu_secs: f64,
}

/// The timed runs of one command.
#[derive(Clone, Debug, Default)]
struct Stats {
    samples: Vec<Sample>,
}

impl Stats {
    fn secs(&self) -> f64 {
        median(&self.samples.iter().map(|s| s.secs).collect::<Vec<_>>())
    }
    fn durable(&self) -> f64 {
        median(
            &self
                .samples
                .iter()
                .map(|s| s.secs + s.sync_secs)
                .collect::<Vec<_>>(),
        )
    }
    fn range(&self) -> String {
        let xs: Vec<f64> = self.samples.iter().map(|s| s.secs).collect();
        let lo = xs.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = xs.iter().copied().fold(0.0, f64::max);
        format!("{lo:.2}–{hi:.2}")
    }
    fn cpu(&self) -> f64 {
        median(&self.samples.iter().map(|s| s.cpu_secs).collect::<Vec<_>>())
    }
    /// The largest peak RSS over the runs, in MiB.
    fn rss_mib(&self) -> f64 {
        self.samples.iter().map(|s| s.rss_kib).max().unwrap_or(0) as f64 / 1024.0
    }
}

/// The median (mean of the two middle values for an even count); NaN when empty.
fn median(xs: &[f64]) -> f64 {
    let mut v: Vec<f64> = xs.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// `sync(2)`: flush every dirty page of the machine.
fn sync_all() {
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
fn measure(c: &mut Command, log: &Path) -> Result<Sample> {
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
struct Job {
    label: String,
    cmd: Box<dyn Fn() -> Command>,
    clean: Vec<PathBuf>,
}

impl Job {
    fn new(label: &str, clean: Vec<PathBuf>, make: impl Fn() -> Command + 'static) -> Self {
        Job {
            label: label.to_string(),
            cmd: Box::new(make),
            clean,
        }
    }
}

fn remove_any(p: &Path) -> Result<()> {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => util::remove_tree(p),
        Ok(_) => fs::remove_file(p).with_context(|| format!("removing {}", p.display())),
        Err(_) => Ok(()),
    }
}

/// One warm-up run of every job, then `runs` rounds of every job in turn.
fn run_jobs(env: &Env, group: &str, jobs: &[Job]) -> Result<Vec<Stats>> {
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

#[derive(Default)]
struct Report {
    text: String,
}

impl Report {
    fn line(&mut self, s: &str) {
        self.text.push_str(s);
        self.text.push('\n');
    }
    fn table(&mut self, headers: &[&str], rows: &[Vec<String>]) {
        self.text.push_str(&md_table(headers, rows));
        self.text.push('\n');
    }
    fn text(&self) -> String {
        self.text.clone()
    }
}

/// A Markdown table with columns padded to their widest cell.
fn md_table(headers: &[&str], rows: &[Vec<String>]) -> String {
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
fn verdict(value: f64, goal: f64) -> &'static str {
    if value <= goal {
        "PASS"
    } else {
        "MISS"
    }
}

fn stats_row(label: &str, s: &Stats, ours: Option<&Stats>) -> Vec<String> {
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

const STATS_HEADERS: [&str; 8] = [
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
fn goal_line(what: &str, value: f64, goal: f64, fmt_goal: &str) -> String {
    format!(
        "- {what}: **{value:.2}** (goal ≤ {fmt_goal}) **{}**",
        verdict(value, goal)
    )
}

fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn header(rep: &mut Report, env: &Env) -> Result<()> {
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

/// xorshift64*: fast, deterministic, good enough for file contents and shapes.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }
    /// Log-uniform in `[lo, hi]`: many small values, a long tail of big ones.
    fn log_size(&mut self, lo: u64, hi: u64) -> u64 {
        let u = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        let (a, b) = ((lo.max(1)) as f64, hi.max(lo.max(1)) as f64);
        (a.ln() + u * (b.ln() - a.ln())).exp() as u64
    }
    fn fill(&mut self, buf: &mut [u8]) {
        let mut chunks = buf.chunks_exact_mut(8);
        for c in &mut chunks {
            c.copy_from_slice(&self.next().to_le_bytes());
        }
        let rest = chunks.into_remainder();
        let last = self.next().to_le_bytes();
        rest.copy_from_slice(&last[..rest.len()]);
    }
}

const NIX32: &[u8; 32] = b"0123456789abcdfghijklmnpqrsvwxyz";

fn nix_hash(rng: &mut Rng) -> String {
    (0..32)
        .map(|_| NIX32[rng.below(32) as usize] as char)
        .collect()
}

const SYLLABLES: [&str; 32] = [
    "lib", "gtk", "py", "xorg", "net", "core", "util", "data", "font", "sys", "ssl", "xml",
    "compress", "image", "audio", "gl", "dbus", "crypt", "z", "ffi", "tools", "perl", "rust", "go",
    "qt", "kde", "gnome", "media", "proto", "db", "http", "json",
];
const LANGS: [&str; 16] = [
    "de", "fr", "es", "it", "ja", "ko", "nl", "pl", "pt_BR", "ru", "sv", "zh_CN", "cs", "fi", "tr",
    "uk",
];

/// Writes files of realistic shapes and contents and counts what it made.
struct Gen {
    rng: Rng,
    words: Vec<Vec<u8>>,
    bytes: u64,
    entries: u64,
}

#[derive(Clone, Copy)]
enum Kind {
    Lib,
    Tool,
    Script,
    Big,
    Tiny,
}

impl Gen {
    fn new(seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let letters = b"abcdefghijklmnopqrstuvwxyz_";
        let words = (0..2048)
            .map(|_| {
                let n = rng.range(2, 10) as usize;
                (0..n)
                    .map(|_| letters[rng.below(letters.len() as u64) as usize])
                    .collect()
            })
            .collect();
        Gen {
            rng,
            words,
            bytes: 0,
            entries: 0,
        }
    }

    /// Word text (compresses about 3x).
    fn text(&mut self, len: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(len + 16);
        let mut col = 0;
        let n = self.words.len() as u64;
        while v.len() < len {
            let r = self.rng.next();
            // Skewed towards the first words, as in real text.
            let i = ((r % n) * ((r >> 32) % n) / n) as usize;
            let w = &self.words[i];
            v.extend_from_slice(w);
            col += w.len() + 1;
            if col > 72 {
                v.push(b'\n');
                col = 0;
            } else {
                v.push(b' ');
            }
        }
        v.truncate(len);
        v
    }

    /// "Binary" contents in 4 KiB blocks: random, 4-bit symbols, or low-entropy patterns
    /// (compresses to roughly 60%).
    fn binary(&mut self, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        for block in v.chunks_mut(4096) {
            match self.rng.below(20) {
                0..=6 => self.rng.fill(block),
                7..=14 => {
                    self.rng.fill(block);
                    for b in block.iter_mut() {
                        *b = (*b & 0x0f) + 0x30;
                    }
                }
                _ => {
                    let p = self.rng.next().to_le_bytes();
                    for (i, b) in block.iter_mut().enumerate() {
                        *b = p[i % 8] ^ (i / 256) as u8;
                    }
                }
            }
        }
        v
    }

    fn mkdir(&mut self, p: &Path) -> Result<()> {
        if p.exists() {
            return Ok(());
        }
        if let Some(parent) = p.parent() {
            self.mkdir(parent)?;
        }
        fs::create_dir(p).with_context(|| format!("creating {}", p.display()))?;
        self.entries += 1;
        Ok(())
    }

    fn file(&mut self, p: &Path, data: &[u8], exec: bool) -> Result<()> {
        if let Some(parent) = p.parent() {
            self.mkdir(parent)?;
        }
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(if exec { 0o555 } else { 0o444 })
            .open(p)
            .with_context(|| format!("creating {}", p.display()))?;
        f.write_all(data)
            .with_context(|| format!("writing {}", p.display()))?;
        self.bytes += data.len() as u64;
        self.entries += 1;
        Ok(())
    }

    fn link(&mut self, target: &str, p: &Path) -> Result<()> {
        if let Some(parent) = p.parent() {
            self.mkdir(parent)?;
        }
        symlink(target, p).with_context(|| format!("creating symlink {}", p.display()))?;
        self.entries += 1;
        Ok(())
    }

    fn name(&mut self) -> String {
        let a = SYLLABLES[self.rng.below(32) as usize];
        match self.rng.below(3) {
            0 => a.to_string(),
            _ => format!("{a}{}", SYLLABLES[self.rng.below(32) as usize]),
        }
    }

    /// One store path of `kind` in `store`; references `refs` (full store paths) from
    /// `nix-support/propagated-build-inputs` and, for tools, absolute symlinks. Returns
    /// the full store path. Sizes are capped by `left` bytes.
    fn package(&mut self, store: &Path, kind: Kind, refs: &[String], left: u64) -> Result<String> {
        let name = self.name();
        let version = format!(
            "{}.{}.{}",
            self.rng.below(12),
            self.rng.below(30),
            self.rng.below(10)
        );
        let base = format!("{}-{name}-{version}", nix_hash(&mut self.rng));
        let root = store.join(&base);
        self.mkdir(&root)?;
        let cap = |n: u64| n.min(left.max(4096)) as usize;
        match kind {
            Kind::Lib => {
                for i in 0..self.rng.range(1, 3) {
                    let so = format!("lib{name}{i}.so");
                    let full = format!("{so}.{version}");
                    let major = format!("{so}.{}", version.split('.').next().unwrap_or("0"));
                    let len = cap(self.rng.log_size(16 << 10, 6 << 20));
                    let data = self.binary(len);
                    self.file(&root.join("lib").join(&full), &data, true)?;
                    self.link(&full, &root.join("lib").join(&major))?;
                    self.link(&major, &root.join("lib").join(&so))?;
                }
                for i in 0..self.rng.range(3, 40) {
                    let len = cap(self.rng.log_size(500, 30 << 10));
                    let data = self.text(len);
                    let p = root.join(format!("include/{name}/h{i}.h"));
                    self.file(&p, &data, false)?;
                }
                let data = self.text(300);
                self.file(&root.join(format!("lib/pkgconfig/{name}.pc")), &data, false)?;
            }
            Kind::Tool => {
                let n = self.rng.range(1, 10);
                for i in 0..n {
                    let len = cap(self.rng.log_size(10 << 10, 3 << 20));
                    let data = self.binary(len);
                    self.file(&root.join(format!("bin/{name}-{i}")), &data, true)?;
                    let len = self.rng.log_size(800, 8 << 10) as usize;
                    let data = self.binary(len);
                    let p = root.join(format!("share/man/man1/{name}-{i}.1.gz"));
                    self.file(&p, &data, false)?;
                }
                for k in 0..self.rng.below(3) {
                    let i = self.rng.below(n);
                    let alias = format!("{name}-alias{k}");
                    self.link(&format!("{name}-{i}"), &root.join("bin").join(alias))?;
                }
                for lang in LANGS.iter().take(self.rng.below(13) as usize) {
                    let len = self.rng.log_size(2 << 10, 80 << 10) as usize;
                    let data = self.binary(len);
                    let p = root.join(format!("share/locale/{lang}/LC_MESSAGES/{name}.mo"));
                    self.file(&p, &data, false)?;
                }
                if let Some(r) = refs.first() {
                    let p = root.join(format!("bin/{name}-wrapped"));
                    self.link(&format!("{r}/bin/{name}"), &p)?;
                }
            }
            Kind::Script | Kind::Tiny => {
                let (files, hi) = match kind {
                    Kind::Tiny => (self.rng.range(40, 200), 2 << 10),
                    _ => (self.rng.range(20, 120), 25 << 10),
                };
                let site = root.join(format!("lib/python3.11/site-packages/{name}"));
                for sub in 0..self.rng.range(1, 6) {
                    let d = site.join(format!("m{sub}"));
                    for i in 0..files {
                        let len = cap(self.rng.log_size(100, hi));
                        let data = self.text(len);
                        self.file(&d.join(format!("f{i}.py")), &data, false)?;
                        if i % 2 == 0 {
                            let data = self.binary(len / 2 + 16);
                            let p = d.join(format!("__pycache__/f{i}.cpython-311.pyc"));
                            self.file(&p, &data, false)?;
                        }
                    }
                }
            }
            Kind::Big => {
                for i in 0..self.rng.range(1, 3) {
                    let len = cap(self.rng.log_size(10 << 20, 100 << 20));
                    let data = self.binary(len);
                    self.file(&root.join(format!("lib/{name}/blob{i}.bin")), &data, false)?;
                }
                for i in 0..self.rng.range(5, 30) {
                    let len = cap(self.rng.log_size(4 << 10, 400 << 10));
                    let data = self.binary(len);
                    self.file(&root.join(format!("share/{name}/d{i}")), &data, false)?;
                }
            }
        }
        if !refs.is_empty() {
            let data = refs.join(" ") + "\n";
            let p = root.join("nix-support/propagated-build-inputs");
            self.file(&p, data.as_bytes(), false)?;
        }
        Ok(format!("/nix/store/{base}"))
    }

    /// A `man-pages`-like store path whose `share/man/man1` holds `n` entries (a tenth of
    /// them symlinks to other pages, as `.so` man links are).
    fn big_dir(&mut self, store: &Path, n: u64) -> Result<String> {
        let base = format!("{}-man-pages-6.7", nix_hash(&mut self.rng));
        let d = store.join(&base).join("share/man/man1");
        self.mkdir(&d)?;
        for i in 0..n {
            let p = d.join(format!("page{i:05}.1.gz"));
            if i % 10 == 9 {
                let target = format!("page{:05}.1.gz", self.rng.below(i));
                self.link(&target, &p)?;
            } else {
                let len = self.rng.log_size(500, 6 << 10) as usize;
                let data = self.binary(len);
                self.file(&p, &data, false)?;
            }
        }
        Ok(format!("/nix/store/{base}"))
    }

    /// Filler store paths in `store` until `bytes` of file data and `entries` entries are
    /// made (a big directory of `big_dir` entries first). Returns their store paths.
    fn store(
        &mut self,
        store: &Path,
        bytes: u64,
        entries: u64,
        big_dir: u64,
    ) -> Result<Vec<String>> {
        self.mkdir(store)?;
        let (b0, e0) = (self.bytes, self.entries);
        let mut paths = vec![self.big_dir(store, big_dir)?];
        loop {
            let (made, count) = (self.bytes - b0, self.entries - e0);
            if made >= bytes && count >= entries {
                break;
            }
            let left = bytes.saturating_sub(made);
            let kind = if made >= bytes {
                Kind::Tiny
            } else {
                match self.rng.below(100) {
                    0..=2 if left > 300 * MIB => Kind::Big,
                    0..=39 => Kind::Lib,
                    40..=69 => Kind::Tool,
                    _ => Kind::Script,
                }
            };
            let mut refs = Vec::new();
            for _ in 0..self.rng.below(4) {
                let r = &paths[self.rng.below(paths.len() as u64) as usize];
                if !refs.contains(r) {
                    refs.push(r.clone());
                }
            }
            let p = self.package(store, kind, &refs, left)?;
            paths.push(p);
        }
        Ok(paths)
    }
}

/// `(entries, bytes)` of regular-file data below `dir` (not counting `dir`).
fn count_tree(dir: &Path) -> Result<(u64, u64)> {
    let mut n = 0;
    let mut bytes = 0;
    for e in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let e = e?;
        let m = e.metadata()?;
        n += 1;
        if m.is_dir() {
            let (a, b) = count_tree(&e.path())?;
            n += a;
            bytes += b;
        } else if m.is_file() {
            bytes += m.len();
        }
    }
    Ok((n, bytes))
}

/// Reuses `dir` when its marker (`<dir>.stamp`, beside it) holds `stamp`; otherwise removes
/// it and calls `make`.
fn cached(dir: &Path, stamp: &str, make: impl FnOnce() -> Result<()>) -> Result<()> {
    let mut marker = dir.as_os_str().to_owned();
    marker.push(".stamp");
    let marker = PathBuf::from(marker);
    if fs::read_to_string(&marker).is_ok_and(|s| s == stamp) {
        return Ok(());
    }
    let _ = fs::remove_file(&marker);
    util::remove_tree(dir)?;
    fs::create_dir_all(dir)?;
    let t = Instant::now();
    make()?;
    fs::write(&marker, stamp)?;
    eprintln!(
        "xtask bench: generated {} in {:.1} s",
        dir.display(),
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The generated tree for the ext4 bench: `DIR/nix/store/...` plus a little `/etc`.
fn gen_tree(env: &Env) -> Result<(PathBuf, String)> {
    let (bytes, entries, big) = if env.quick {
        (128 * MIB, 7_000, 2_250)
    } else {
        (GIB, 55_000, 18_000)
    };
    let name = format!("gen-{}m-{entries}", bytes / MIB);
    let dir = env.dir.join("trees").join(&name);
    let stamp = format!("v{GEN_VERSION} tree {bytes} {entries} {big}\n");
    cached(&dir, &stamp, || {
        let mut g = Gen::new(0x7EE5_0001);
        g.store(&dir.join("nix/store"), bytes, entries, big)?;
        for i in 0..40 {
            let data = g.text(600);
            g.file(&dir.join(format!("etc/conf{i}")), &data, false)?;
        }
        Ok(())
    })?;
    Ok((
        dir,
        format!(
            "generated tree `{name}` (store-like: many small files, libraries and binaries up \
             to 100 MiB, symlinks, one directory of {big} entries)"
        ),
    ))
}

/// A closure directory as the baseline scripts and imgbuild take it: `result`,
/// `closure-info/`, `nix/store`.
struct Closure {
    dir: PathBuf,
    desc: String,
    nar_size: u64,
    paths: usize,
}

fn fixture_closure(arch: Arch) -> Result<Closure> {
    let dir = fixture::default_dir(arch);
    let info = fixture::ensure_built(arch, &dir)?;
    Ok(Closure {
        desc: format!(
            "fixture {} ({} store paths, NAR {:.0} MiB)",
            arch.name(),
            info.store_paths,
            info.total_nar_size as f64 / MIB as f64
        ),
        dir,
        nar_size: info.total_nar_size,
        paths: info.store_paths,
    })
}

fn replace_all(hay: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(hay.len());
    let mut i = 0;
    while i < hay.len() {
        if hay[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(hay[i]);
            i += 1;
        }
    }
    out
}

/// Copies `src` to `dst` (files, dirs, symlinks; modes kept), replacing `from` by `to` in
/// every file's contents and symlink's target.
fn copy_replacing(src: &Path, dst: &Path, from: &[u8], to: &[u8]) -> Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let m = fs::symlink_metadata(src)?;
    let mode = m.mode() & 0o7777;
    if m.file_type().is_symlink() {
        let t = fs::read_link(src)?;
        let t = replace_all(t.as_os_str().as_bytes(), from, to);
        symlink(std::ffi::OsStr::from_bytes(&t), dst)?;
    } else if m.is_dir() {
        fs::create_dir(dst)?;
        let mut names: Vec<_> = fs::read_dir(src)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<std::io::Result<_>>()?;
        names.sort();
        for n in names {
            copy_replacing(&src.join(&n), &dst.join(&n), from, to)?;
        }
        fs::set_permissions(dst, fs::Permissions::from_mode(mode | 0o700))?;
    } else {
        let data = replace_all(&fs::read(src)?, from, to);
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(dst)?;
        f.write_all(&data)?;
    }
    Ok(())
}

/// The fixture closure of `arch` plus generated store paths up to `gib` GiB of NAR, with
/// a new toplevel referencing every filler path (see the module docs).
fn synth_closure(env: &Env, arch: Arch, gib: f64) -> Result<Closure> {
    let fix_dir = fixture::default_dir(arch);
    let info: FixtureInfo = fixture::ensure_built(arch, &fix_dir)?;
    let target = (gib * GIB as f64) as u64;
    let filler = target.saturating_sub(info.total_nar_size);
    let filler_gib = filler as f64 / GIB as f64;
    let entries = (50_000.0 * filler_gib) as u64;
    let big = (9_000.0 * gib) as u64;
    let name = format!("{}-{}m", arch.name(), target / MIB);
    let dir = env.dir.join("closures").join(&name);
    let stamp = format!(
        "v{GEN_VERSION} closure {} {target} {entries} {big} {}\n",
        arch.name(),
        info.toplevel
    );
    cached(&dir, &stamp, || {
        let store = dir.join("nix/store");
        fs::create_dir_all(&store)?;
        let old_top = info.toplevel.trim_start_matches("/nix/store/").to_string();
        let listed = fs::read_to_string(fix_dir.join("closure-info/store-paths"))?;
        let srcs: Vec<PathBuf> = listed
            .lines()
            .filter(|l| !l.is_empty() && l.trim_start_matches("/nix/store/") != old_top)
            .map(|l| fix_dir.join(l.trim_start_matches('/')))
            .collect();
        for chunk in srcs.chunks(64) {
            run(cmd("cp").arg("-a").arg("-t").arg(&store).args(chunk))?;
        }
        let seed = 0xC105_0000 ^ (target / MIB) ^ ((arch as u64) << 40);
        let mut g = Gen::new(seed);
        let fill = g.store(&store, filler, entries, big)?;
        let new_hash = nix_hash(&mut g.rng);
        let old_hash = &old_top[..32];
        let new_top = format!("{new_hash}{}", &old_top[32..]);
        copy_replacing(
            &fix_dir.join("nix/store").join(&old_top),
            &store.join(&new_top),
            old_hash.as_bytes(),
            new_hash.as_bytes(),
        )?;
        let extra = store.join(&new_top).join("extra-dependencies");
        let _ = fs::remove_file(&extra);
        fs::write(&extra, fill.join("\n") + "\n")?;
        fs::set_permissions(&extra, fs::Permissions::from_mode(0o444))?;
        let top_path = format!("/nix/store/{new_top}");
        symlink(&top_path, dir.join("result"))?;
        let top = imgbuild_nix::StorePath::parse(&top_path)?;
        let c = imgbuild_nix::Closure::from_scan(&dir, &top)
            .with_context(|| format!("scanning the closure of {top_path}"))?;
        ensure!(
            c.paths.len() == info.store_paths + fill.len(),
            "the scan found {} store paths, expected {} fixture + {} filler",
            c.paths.len(),
            info.store_paths,
            fill.len()
        );
        let ci = dir.join("closure-info");
        fs::create_dir_all(&ci)?;
        fs::write(ci.join("store-paths"), c.store_paths_text())?;
        fs::write(ci.join("registration"), c.registration_text())?;
        fs::write(
            ci.join("total-nar-size"),
            format!("{}\n", c.total_nar_size()),
        )?;
        Ok(())
    })?;
    let nar_size: u64 = fs::read_to_string(dir.join("closure-info/total-nar-size"))?
        .trim()
        .parse()
        .context("total-nar-size")?;
    let paths = fs::read_to_string(dir.join("closure-info/store-paths"))?
        .lines()
        .count();
    let (n, _) = count_tree(&dir.join("nix/store"))?;
    Ok(Closure {
        desc: format!(
            "synthetic {} {:.2} GiB ({paths} store paths, {n} entries, NAR {:.2} GiB, \
             one directory of {big} entries)",
            arch.name(),
            gib,
            nar_size as f64 / GIB as f64
        ),
        dir,
        nar_size,
        paths,
    })
}

// ---------------------------------------------------------------------------------------
// Sections

fn file_len(p: &Path) -> Result<u64> {
    Ok(fs::metadata(p)
        .with_context(|| format!("reading {}", p.display()))?
        .len())
}

/// `Block count × Block size` of an ext4 image, from `dumpe2fs -h`.
fn ext4_bytes(img: &Path) -> Result<u64> {
    let text = output_quiet(cmd("dumpe2fs").arg("-h").arg(img))?;
    let field = |name: &str| -> Result<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim_start_matches(':').trim().parse().ok())
            .with_context(|| format!("dumpe2fs -h {}: no {name}", img.display()))
    };
    Ok(field("Block count")? * field("Block size")?)
}

fn bench_ext4(rep: &mut Report, env: &Env) -> Result<()> {
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
        let (n, b) = count_tree(&src)?;
        rep.line(&format!(
            "### {desc}\n\n`{}`: {n} entries, {:.2} GiB of file data.\n",
            src.display(),
            b as f64 / GIB as f64
        ));
        let out = env.out(&format!("ext4-{name}"))?;
        let ours_img = out.join("ours.img");
        let ours_cmd = {
            let (bin, src, img) = (env.imgbuild.clone(), src.clone(), ours_img.clone());
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
        let mk = |img: &Path, bytes: u64, src: &Path| {
            let mut c = Command::new("mke2fs");
            c.args(["-q", "-F", "-t", "ext4", "-L", "x", "-d"])
                .arg(src)
                .arg(img)
                .arg(format!("{}k", bytes / 1024));
            c
        };
        let mut mk_size = size;
        remove_any(&mk_img)?;
        let mut note = String::new();
        if measure(
            &mut mk(&mk_img, size, &src),
            &env.dir.join("logs/ext4-mke2fs-fit.log"),
        )
        .is_err()
        {
            mk_size = size * 12 / 10 + 64 * MIB;
            note = format!(
                " mke2fs -d does not fit the tree in imgbuild's {size} bytes; it got {mk_size}."
            );
        }
        let cp_dst = out.join("cp-copy");
        let jobs = vec![
            Job::new("imgbuild ext4", vec![ours_img.clone()], ours_cmd),
            {
                let (img, src) = (mk_img.clone(), src.clone());
                Job::new("mke2fs -d", vec![mk_img.clone()], move || {
                    mk(&img, mk_size, &src)
                })
            },
            {
                let (src, dst) = (src.clone(), cp_dst.clone());
                Job::new("cp -a", vec![cp_dst.clone()], move || {
                    let mut c = Command::new("cp");
                    c.arg("-a").arg(&src).arg(&dst);
                    c
                })
            },
        ];
        let st = run_jobs(env, &format!("ext4-{name}"), &jobs)?;
        remove_any(&cp_dst)?;
        let rows: Vec<Vec<String>> = jobs
            .iter()
            .zip(&st)
            .enumerate()
            .map(|(i, (j, s))| stats_row(&j.label, s, (i > 0).then_some(&st[0])))
            .collect();
        rep.table(&STATS_HEADERS, &rows);
        // Minimum sizes.
        let gen_img = out.join("mke2fs-min.img");
        remove_any(&gen_img)?;
        run(mk(&gen_img, size * 3 / 2 + 128 * MIB, &src).stdout(Stdio::null()))?;
        output_quiet(cmd("resize2fs").arg("-M").arg(&gen_img))?;
        let theirs = ext4_bytes(&gen_img)?;
        remove_any(&gen_img)?;
        let ours_fs = ext4_bytes(&ours_img)?;
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
        remove_any(&ours_img)?;
        remove_any(&mk_img)?;
    }
    Ok(())
}

/// `imgbuild sd-aarch64 --compress none` of `c` at `out` (untimed), for the zstd bench.
fn raw_sd_image(env: &Env, c: &Closure, out: &Path) -> Result<()> {
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

fn bench_zstd(rep: &mut Report, env: &Env) -> Result<()> {
    rep.line("## zstd: imgbuild's compressor vs `zstd -T0 -3`\n");
    rep.line(
        "Input: the raw (sparse) sd-aarch64 image `imgbuild sd-aarch64 --compress none` \
         builds. imgbuild: `compress RAW OUT` (crates/compress/examples/compress.rs: \
         `imgbuild_compress::compress` at level 3 with one worker per CPU and a content \
         checksum, exactly what `imgbuild` runs, without the image build around it); zstd: \
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
        let rows: Vec<Vec<String>> = jobs
            .iter()
            .zip(&st)
            .enumerate()
            .map(|(i, (j, s))| stats_row(&j.label, s, (i > 0).then_some(&st[0])))
            .collect();
        rep.table(&STATS_HEADERS, &rows);
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

/// Jobs for one image build: imgbuild and the baseline script, same closure.
fn image_jobs(env: &Env, format: &str, c: &Closure, out: &Path) -> Vec<Job> {
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

fn bench_images(rep: &mut Report, env: &Env) -> Result<()> {
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
        let rows: Vec<Vec<String>> = jobs
            .iter()
            .zip(&st)
            .enumerate()
            .map(|(i, (j, s))| stats_row(&j.label, s, (i > 0).then_some(&st[0])))
            .collect();
        rep.table(&STATS_HEADERS, &rows);
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
        rep.line(&format!(
            "- peak RSS: imgbuild {:.0} MiB, shell pipeline {:.0} MiB\n",
            st[0].rss_mib(),
            st[1].rss_mib()
        ));
        for p in jobs.iter().flat_map(|j| j.clean.iter()) {
            remove_any(p)?;
        }
    }
    Ok(())
}

/// Least-squares line `t = a + b x`: returns `(a, b)`.
fn fit_line(xs: &[f64], ys: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    let mx = xs.iter().sum::<f64>() / n;
    let my = ys.iter().sum::<f64>() / n;
    let sxy: f64 = xs.iter().zip(ys).map(|(x, y)| (x - mx) * (y - my)).sum();
    let sxx: f64 = xs.iter().map(|x| (x - mx) * (x - mx)).sum();
    let b = if sxx > 0.0 { sxy / sxx } else { 0.0 };
    (my - b * mx, b)
}

fn bench_scaling(rep: &mut Report, env: &Env) -> Result<()> {
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

    #[test]
    fn verdicts_and_fit() {
        assert_eq!(verdict(0.3, 0.3), "PASS");
        assert_eq!(verdict(0.31, 0.3), "MISS");
        let (a, b) = fit_line(&[1.0, 2.0, 4.0], &[3.0, 5.0, 9.0]);
        assert!((a - 1.0).abs() < 1e-9 && (b - 2.0).abs() < 1e-9);
        assert!(goal_line("x", 0.5, 1.0, "1.0").ends_with("**PASS**"));
    }

    #[test]
    fn replace_and_generators_are_deterministic() {
        assert_eq!(replace_all(b"aXbXX", b"X", b"YY"), b"aYYbYYYY");
        let (mut a, mut b) = (Gen::new(5), Gen::new(5));
        assert_eq!(a.binary(10_000), b.binary(10_000));
        assert_eq!(a.text(500), b.text(500));
        let h = nix_hash(&mut a.rng);
        assert_eq!(h.len(), 32);
        assert!(h.bytes().all(|c| NIX32.contains(&c)));
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
