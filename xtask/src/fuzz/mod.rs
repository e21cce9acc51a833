//! `cargo xtask fuzz TARGET|all [--iterations N] [--seconds S]`: structure-aware fuzzing of
//! every reader on stable Rust (no `cargo fuzz`, which needs nightly).
//!
//! Seeds (built once into `target/fuzz/seeds`): imgbuild's own images of the demo closures
//! (raw-efi, sd-aarch64, and every container format) and images made by the conventional
//! tools (`mkfs.ext4 -d`, `mkfs.vfat` + mtools, `sfdisk`, `qemu-img convert`), the format
//! files, the demo closures' registrations and `boot.json`s.
//!
//! Each target runs in its own worker process (`cargo xtask fuzz-worker`): a case mutates
//! fields of the structures the target is about (see [`fields`]), recomputes their
//! checksums ([`mutate::fixups`]), then runs every reader entry point (open, inspect, ls, cat,
//! cp, --sizes, diff, the deep read) in a thread under a deadline. A panic (even one a
//! library's guard caught), a hang, an allocation above [`MAX_ALLOCATION`] or a peak of live
//! heap above [`MAX_LIVE`] is a failure;
//! so is a worker that dies (an aborting allocation). Text and byte-string targets ([`text`],
//! [`blob`]: GRUB's core image read back, the verity superblock, UKIs) mutate and read their input
//! in memory instead. Failing cases are replayed in fresh
//! processes, minimised (mutations dropped while it still fails) and written to
//! `target/fuzz/crashes/` (the case as JSON, and its input: the mutated image or text); the
//! run then continues with the next case.
//!
//! The report (stdout and `target/fuzz/report.md`) gives per target: cases, time, rate,
//! accepted inputs, distinct error kinds reached, field kinds mutated, entry points run,
//! largest allocation, slowest case: "0 panics" next to how deep the inputs went.

mod blob;
mod fields;
mod iso_seeds;
mod mutate;
mod seeds;
mod squash_seeds;
mod text;
mod worker;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::util::{self, cmd};

/// Largest single allocation a case may make (the biggest seed disk is 1.1 GB, sparse; no
/// reader needs more than a table or a file chunk at once).
pub const MAX_ALLOCATION: usize = 96 << 20;
/// Most heap a case may hold at once, over what the worker held before it (a fixed cap, not a
/// multiple of the image: the seeds are up to 1.1 GB, and no reader holds an image in memory).
pub const MAX_LIVE: usize = 256 << 20;
/// Bump when the seeds change.
const SEEDS_VERSION: u32 = 9;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    Gpt,
    Mbr,
    Ext4,
    Fat,
    Iso9660,
    Squashfs,
    Nixdb,
    Qcow2,
    Vhd,
    Vhdx,
    Vmdk,
    Ova,
    Gce,
    Vma,
    Format,
    Registration,
    Bootspec,
    Grub,
    GrubEfi,
    Verity,
    Uki,
    Authenticode,
}

const ALL: [Target; 22] = [
    Target::Gpt,
    Target::Mbr,
    Target::Ext4,
    Target::Fat,
    Target::Iso9660,
    Target::Squashfs,
    Target::Nixdb,
    Target::Qcow2,
    Target::Vhd,
    Target::Vhdx,
    Target::Vmdk,
    Target::Ova,
    Target::Gce,
    Target::Vma,
    Target::Format,
    Target::Registration,
    Target::Bootspec,
    Target::Grub,
    Target::GrubEfi,
    Target::Verity,
    Target::Uki,
    Target::Authenticode,
];

impl Target {
    pub fn name(self) -> &'static str {
        match self {
            Target::Gpt => "gpt",
            Target::Mbr => "mbr",
            Target::Ext4 => "ext4",
            Target::Fat => "fat",
            Target::Iso9660 => "iso9660",
            Target::Squashfs => "squashfs",
            Target::Nixdb => "nixdb",
            Target::Qcow2 => "qcow2",
            Target::Vhd => "vhd",
            Target::Vhdx => "vhdx",
            Target::Vmdk => "vmdk",
            Target::Ova => "ova",
            Target::Gce => "gce",
            Target::Vma => "vma",
            Target::Format => "format",
            Target::Registration => "registration",
            Target::Bootspec => "bootspec",
            Target::Grub => "grub",
            Target::GrubEfi => "grub-efi",
            Target::Verity => "verity",
            Target::Uki => "uki",
            Target::Authenticode => "authenticode",
        }
    }

    pub fn from_name(s: &str) -> Option<Target> {
        ALL.into_iter().find(|t| t.name() == s)
    }

    pub fn is_text(self) -> bool {
        matches!(
            self,
            Target::Format | Target::Registration | Target::Bootspec
        )
    }

    /// Whether the seeds are raw disks whose hot ranges are the reads `inspect` makes.
    pub fn is_disk(self) -> bool {
        matches!(
            self,
            Target::Gpt
                | Target::Mbr
                | Target::Ext4
                | Target::Fat
                | Target::Iso9660
                | Target::Squashfs
                | Target::Nixdb
        )
    }

    /// A reader of a byte string ([`blob`]): mutated and read in memory, like text.
    pub fn is_blob(self) -> bool {
        matches!(
            self,
            Target::Grub | Target::GrubEfi | Target::Verity | Target::Uki | Target::Authenticode
        )
    }

    /// Whether cases hold their whole input in memory (text and byte-string targets)
    /// rather than mutating an image file in place.
    pub fn in_memory(self) -> bool {
        self.is_text() || self.is_blob()
    }

    /// Seed files (in the seeds directory).
    pub fn seeds(self) -> &'static [&'static str] {
        match self {
            Target::Gpt => &["demo-efi.img", "classic-efi.img", "demo-appliance.img"],
            Target::Mbr => &["demo-sd.img", "classic-sd.img"],
            Target::Ext4 => &[
                "demo-efi.img",
                "demo-sd.img",
                "classic-efi.img",
                "classic-efi-nocsum.img",
            ],
            Target::Fat => &["demo-efi.img", "classic-sd.img", "fat12.img"],
            Target::Iso9660 => iso_seeds::SEEDS,
            Target::Squashfs => squash_seeds::SEEDS,
            Target::Nixdb => &["demo-efi.img", "classic-efi.img"],
            Target::Qcow2 => &["demo.qcow2", "classic.qcow2", "classic-compressed.qcow2"],
            Target::Vhd => &["demo.vhd", "demo-fixed.vhd", "classic.vhd"],
            Target::Vhdx => &["demo.vhdx", "classic.vhdx"],
            Target::Vmdk => &["demo.vmdk", "classic.vmdk", "classic-stream.vmdk"],
            Target::Ova => &["demo.ova"],
            // a gzip stream: GCE's tar, DigitalOcean's qcow2 (`inspect` unpacks both)
            Target::Gce => &["demo.raw.tar.gz", "demo.qcow2.gz"],
            Target::Vma => &["demo.vma"],
            Target::Format => &[
                "raw-efi.toml",
                "sd-aarch64.toml",
                "qemu-efi.toml",
                "gce.toml",
                "virtualbox.toml",
                "raw.toml",
                "qemu.toml",
            ],
            Target::Registration => &["demo.registration", "demo-aarch64.registration"],
            Target::Bootspec => &[
                "demo.boot.json",
                "demo-aarch64.boot.json",
                "oracle-26.11-counting.boot.json",
                "demo-grub.boot.json",
            ],
            Target::Grub => blob::seeds::GRUB,
            Target::GrubEfi => blob::seeds::GRUB_EFI,
            Target::Verity => blob::seeds::VERITY,
            Target::Uki => blob::uki::SEEDS,
            Target::Authenticode => blob::authenticode::SEEDS,
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct FuzzArgs {
    /// A target, or `all`
    target: String,
    /// Cases per target (the run also stops at --seconds)
    #[arg(long, default_value_t = u64::MAX)]
    iterations: u64,
    /// Seconds per target
    #[arg(long, default_value_t = 60.0)]
    seconds: f64,
    /// Random seed (the same seed runs the same cases)
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Targets run at once
    #[arg(long, default_value_t = 2)]
    jobs: usize,
    /// Per-case deadline in seconds (a case that takes longer is a hang)
    #[arg(long, default_value_t = 20)]
    deadline: u64,
}

#[derive(clap::Args, Debug)]
pub struct WorkerArgs {
    #[arg(long)]
    target: String,
    #[arg(long)]
    seeds: PathBuf,
    #[arg(long)]
    work: PathBuf,
    #[arg(long)]
    iterations: u64,
    #[arg(long)]
    seconds: f64,
    #[arg(long)]
    seed: u64,
    #[arg(long)]
    deadline: u64,
    /// Replay this case (JSON) once; exit 0 when it passes, 1 when it fails
    #[arg(long)]
    replay: Option<PathBuf>,
    /// With --replay: write the case's input (the mutated image, or the text) here instead
    #[arg(long, requires = "replay")]
    save_input: Option<PathBuf>,
}

/// `cargo xtask fuzz-worker`: one target in this process.
pub fn worker(a: WorkerArgs) -> Result<()> {
    let target = Target::from_name(&a.target).context("unknown target")?;
    let deadline = Duration::from_secs(a.deadline);
    if let Some(r) = a.replay {
        let case: worker::Case = serde_json::from_slice(&std::fs::read(&r)?)?;
        if let Some(dest) = &a.save_input {
            return worker::save_input(&case, &a.seeds, &a.work, dest);
        }
        return match worker::replay(&case, &a.seeds, &a.work, deadline)? {
            None => Ok(()),
            Some(why) => {
                println!("{why}");
                std::process::exit(1)
            }
        };
    }
    let s = worker::run(&worker::Opts {
        target,
        seeds: a.seeds,
        work: a.work,
        iterations: a.iterations,
        seconds: a.seconds,
        seed: a.seed,
        deadline,
    })?;
    println!("{}", serde_json::to_string(&s)?);
    Ok(())
}

fn quiet(c: &mut Command) -> Result<()> {
    util::output_quiet(c).map(drop)
}

pub fn copy_sparse(from: &Path, to: &Path) -> Result<()> {
    quiet(cmd("cp").arg("--sparse=always").arg(from).arg(to))
}

/// What the parent learnt of one target.
struct Done {
    target: Target,
    summaries: Vec<worker::Summary>,
    failures: Vec<String>,
}

/// Minimises a failing case by dropping mutations while it still fails (in fresh
/// processes), then writes it to `crashes/`.
fn minimise(
    exe: &Path,
    seeds: &Path,
    work: &Path,
    case: worker::Case,
    deadline: u64,
) -> Result<(PathBuf, String)> {
    // A worker replaying case `c` (written to replay.json) once.
    let worker = |c: &worker::Case| -> Result<Command> {
        let f = work.join("replay.json");
        std::fs::write(&f, serde_json::to_string(c)?)?;
        let mut cmd = Command::new(exe);
        cmd.env(text::TOKEN_VAR, text::TOKEN)
            .args(["fuzz-worker", "--target", &c.target])
            .args(["--iterations", "1", "--seconds", "1", "--seed", "1"])
            .args(["--deadline", &deadline.to_string()])
            .arg("--seeds")
            .arg(seeds)
            .arg("--work")
            .arg(work.join("replay"))
            .arg("--replay")
            .arg(f);
        Ok(cmd)
    };
    let replay = |c: &worker::Case| -> Result<Option<String>> {
        let o = worker(c)?.output()?;
        Ok(if o.status.success() {
            None
        } else {
            Some(
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .last()
                    .map_or_else(|| format!("died: {}", o.status), str::to_string),
            )
        })
    };
    let mut best = case;
    let mut why = replay(&best)?.unwrap_or_else(|| "did not fail again on replay (flaky)".into());
    let mut i = 0;
    while i < best.mutations.len() && best.mutations.len() > 1 {
        let mut c = best.clone();
        c.mutations.remove(i);
        match replay(&c)? {
            Some(w) => {
                best = c;
                why = w;
            }
            None => i += 1,
        }
    }
    let dir = util::target_dir().join("fuzz/crashes");
    std::fs::create_dir_all(&dir)?;
    let n = std::fs::read_dir(&dir)?.count();
    let out = dir.join(format!("{}-{n}.json", best.target));
    std::fs::write(&out, serde_json::to_string_pretty(&(&why, &best))?)?;
    // The input itself beside it (the mutated image or text), to keep as a regression input.
    let saved = worker(&best)?
        .arg("--save-input")
        .arg(dir.join(format!("{}-{n}.input", best.target)))
        .status()?;
    if !saved.success() {
        eprintln!("fuzz: could not save the input of {}", out.display());
    }
    Ok((out, why))
}

/// Runs one target to its budget, restarting the worker after each failure.
fn fuzz_target(exe: &Path, seeds: &Path, a: &FuzzArgs, target: Target) -> Result<Done> {
    let work = util::target_dir().join("fuzz/work").join(target.name());
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let t0 = Instant::now();
    let mut done = Done {
        target,
        summaries: Vec::new(),
        failures: Vec::new(),
    };
    let mut iterations = 0u64;
    let mut round = 0u64;
    while iterations < a.iterations && t0.elapsed().as_secs_f64() < a.seconds {
        let left = a.seconds - t0.elapsed().as_secs_f64();
        let o = Command::new(exe)
            .env(text::TOKEN_VAR, text::TOKEN)
            .args(["fuzz-worker", "--target", target.name()])
            .arg("--seeds")
            .arg(seeds)
            .arg("--work")
            .arg(&work)
            .args(["--iterations", &(a.iterations - iterations).to_string()])
            .args(["--seconds", &format!("{left:.1}")])
            .args(["--seed", &(a.seed.wrapping_add(round * 7919)).to_string()])
            .args(["--deadline", &a.deadline.to_string()])
            .stderr(std::process::Stdio::inherit())
            .output()
            .with_context(|| format!("running the {} worker", target.name()))?;
        round += 1;
        let out = String::from_utf8_lossy(&o.stdout);
        if let Some(s) = out
            .lines()
            .rev()
            .find_map(|l| serde_json::from_str::<worker::Summary>(l).ok())
        {
            iterations += s.iterations;
            done.summaries.push(s);
        }
        if o.status.success() {
            break;
        }
        // A failure: the worker wrote it (panic, hang, allocation), or it died mid-case
        // (the current case is the culprit).
        let (why, case): (String, worker::Case) = match std::fs::read(work.join("failure.json")) {
            Ok(b) => serde_json::from_slice(&b)?,
            Err(_) => (
                format!("worker died: {}", o.status),
                serde_json::from_slice(&std::fs::read(work.join("current.json"))?)?,
            ),
        };
        let _ = std::fs::remove_file(work.join("failure.json"));
        iterations += 1;
        let (path, min_why) = minimise(exe, seeds, &work, case, a.deadline)?;
        eprintln!(
            "xtask fuzz: {}: FAILURE ({why}); minimised: {min_why}; saved {}",
            target.name(),
            path.display()
        );
        done.failures.push(format!("{why} -> {}", path.display()));
    }
    Ok(done)
}

fn report(done: &[Done], secs: f64) -> String {
    let mut r = String::from("# cargo xtask fuzz\n\n");
    r += "| target | cases | s | cases/s | accepted | error kinds | field kinds | entry points run | largest alloc MiB | peak heap MiB | failures |\n";
    r += "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|\n";
    let mut details = String::new();
    for d in done {
        let n: u64 = d.summaries.iter().map(|s| s.iterations).sum();
        let t: f64 = d.summaries.iter().map(|s| s.seconds).sum();
        let acc: u64 = d.summaries.iter().map(|s| s.accepted).sum();
        let mut errors = std::collections::BTreeMap::<String, u64>::new();
        let mut fields = std::collections::BTreeMap::<String, u64>::new();
        let mut calls = std::collections::BTreeMap::<String, u64>::new();
        for s in &d.summaries {
            for (k, v) in &s.errors {
                *errors.entry(k.clone()).or_default() += v;
            }
            for (k, v) in &s.fields {
                *fields.entry(k.clone()).or_default() += v;
            }
            for (k, v) in &s.calls {
                *calls.entry(k.clone()).or_default() += v;
            }
        }
        let big = d
            .summaries
            .iter()
            .map(|s| s.largest_allocation)
            .max()
            .unwrap_or(0);
        let peak = d.summaries.iter().map(|s| s.peak_live).max().unwrap_or(0);
        let calls_s: Vec<String> = calls.iter().map(|(k, v)| format!("{k} {v}")).collect();
        r += &format!(
            "| {} | {n} | {t:.0} | {:.0} | {acc} | {} | {} | {} | {:.1} | {:.1} | {} |\n",
            d.target.name(),
            n as f64 / t.max(0.001),
            errors.len(),
            fields.len(),
            calls_s.join(", "),
            big as f64 / (1 << 20) as f64,
            peak as f64 / (1 << 20) as f64,
            d.failures.len()
        );
        let mut top: Vec<(&String, &u64)> = errors.iter().collect();
        top.sort_by(|a, b| b.1.cmp(a.1));
        details += &format!(
            "\n## {}\n\nmost frequent error kinds (of {}):\n",
            d.target.name(),
            errors.len()
        );
        for (e, c) in top.iter().take(8) {
            details += &format!("- {c} x {e}\n");
        }
        for f in &d.failures {
            details += &format!("- FAILURE: {f}\n");
        }
    }
    r += &format!("\nTotal {secs:.0} s.\n");
    r + &details
}

/// `cargo xtask fuzz`.
pub fn run(a: FuzzArgs) -> Result<()> {
    let root = util::repo_root();
    let targets: Vec<Target> = if a.target == "all" {
        ALL.to_vec()
    } else {
        a.target
            .split(',')
            .map(|t| Target::from_name(t).with_context(|| format!("no fuzz target `{t}`")))
            .collect::<Result<_>>()?
    };
    let seeds = seeds::seeds(&root)?;
    let exe = std::env::current_exe()?;
    let t0 = Instant::now();
    // A queue: each of --jobs threads takes the next target when its last one ends.
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<(usize, Result<Done>)> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..a.jobs.clamp(1, targets.len().max(1)))
            .map(|_| {
                let (exe, seeds, a, next, targets) = (&exe, &seeds, &a, &next, &targets);
                s.spawn(move || {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(&t) = targets.get(i) else { break };
                        let r = fuzz_target(exe, seeds, a, t)
                            .with_context(|| format!("fuzz target {}", t.name()));
                        mine.push((i, r));
                    }
                    mine
                })
            })
            .collect();
        hs.into_iter()
            .flat_map(|h| {
                h.join().unwrap_or_else(|_| {
                    vec![(usize::MAX, Err(anyhow::anyhow!("fuzz thread panicked")))]
                })
            })
            .collect()
    });
    let mut results = results;
    results.sort_by_key(|(i, _)| *i);
    let mut done = Vec::new();
    for (_, r) in results {
        done.push(r?);
    }
    let text = report(&done, t0.elapsed().as_secs_f64());
    let path = util::target_dir().join("fuzz/report.md");
    std::fs::write(&path, &text)?;
    println!("{text}");
    let failures: usize = done.iter().map(|d| d.failures.len()).sum();
    if failures > 0 {
        bail!("{failures} failing cases (see {})", path.display());
    }
    Ok(())
}
