//! One fuzz target in one process (`cargo xtask fuzz-worker`): mutate a seed, run every
//! reader entry point on it under a deadline, count what happened. The parent
//! ([`super::run`]) restarts it when a case aborts the process or hangs.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use imgbuild_testutil::harness::{self, Mutation, Rng};
use serde::{Deserialize, Serialize};

mod exercise;
mod seeds;

use super::blob;
use super::mutate;
use super::text;
use super::{Target, MAX_ALLOCATION, MAX_LIVE};
use exercise::{exercise, Seen};
use seeds::{gzip, load_seeds, Seed};

/// What one worker run did (printed as JSON on its last stdout line).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Summary {
    pub target: String,
    pub iterations: u64,
    pub seconds: f64,
    /// Images that opened (image targets) / inputs accepted (text targets).
    pub accepted: u64,
    /// Normalised error messages and how often each was seen.
    pub errors: BTreeMap<String, u64>,
    /// Field kinds mutated, and how often.
    pub fields: BTreeMap<String, u64>,
    /// Entry points run, and how often.
    pub calls: BTreeMap<String, u64>,
    pub largest_allocation: u64,
    /// Most heap a case held at once (over the worker's own), in bytes.
    #[serde(default)]
    pub peak_live: u64,
    pub slowest_ms: u64,
}

/// A case that failed, as the parent replays and minimises it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Case {
    pub target: String,
    /// Seed file name (in the seeds directory).
    pub seed: String,
    /// `describe`d mutations (binary seeds).
    pub mutations: Vec<String>,
    /// The whole input (text targets, and the GCE tar's gzip).
    pub input_hex: Option<String>,
    /// The case's number in its run: it picks the entry point (`inspect`, `ls`, ...), so a
    /// replay runs the same one.
    #[serde(default)]
    pub n: u64,
}

/// Why a case failed.
pub enum Failure {
    Panic(String),
    Hang,
    Allocation(usize),
    /// A peak of live heap over [`MAX_LIVE`].
    Memory(usize),
}

/// What a case allocated: its largest single request and its peak of live heap.
#[derive(Clone, Copy, Debug, Default)]
pub struct Mem {
    pub largest: usize,
    pub peak: usize,
}

/// `XTASK_FUZZ_SABOTAGE=TARGET` makes a text target panic (every 50th case, and on
/// replay): CI's negative control that a failing reader fails the fuzz run.
fn sabotaged(target: &str) -> bool {
    std::env::var("XTASK_FUZZ_SABOTAGE").is_ok_and(|t| t == target)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .filter_map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok())
        .collect()
}

pub fn describe(m: &Mutation) -> String {
    harness::describe(std::slice::from_ref(m))
        .trim()
        .to_string()
}

pub fn parse_mutation(s: &str) -> Option<Mutation> {
    let w: Vec<&str> = s.split_whitespace().collect();
    match w.as_slice() {
        ["flip", at, bit] => Some(Mutation::Flip {
            at: at.parse().ok()?,
            bit: bit.parse().ok()?,
        }),
        ["write", at, h] => Some(Mutation::Write {
            at: at.parse().ok()?,
            bytes: unhex(h),
        }),
        ["copy", from, at, len] => Some(Mutation::Copy {
            from: from.parse().ok()?,
            at: at.parse().ok()?,
            len: len.parse().ok()?,
        }),
        _ => None,
    }
}

/// `` `/path/x.img` partition 2 /a/b: corrupt: ext4: bad extent header (12 entries) `` ->
/// `corrupt: ext4: bad extent header (# entries)`.
pub fn normalise(e: &str) -> String {
    let mut s = String::new();
    let mut in_tick = false;
    for c in e.chars() {
        match c {
            '`' => in_tick = !in_tick,
            _ if in_tick => {}
            c if c.is_ascii_digit() => {
                if !s.ends_with('#') {
                    s.push('#');
                }
            }
            c => s.push(c),
        }
    }
    // Drop the location before the first ": " (image, partition, path).
    let s = match s.find(": ") {
        Some(i)
            if s[..i].contains("partition")
                || s[..i].trim().is_empty()
                || s[..i].starts_with(' ') =>
        {
            s[i + 2..].to_string()
        }
        _ => s,
    };
    s.chars().take(90).collect()
}

/// Runs `f` in a fresh thread under `deadline`; a panic anywhere in it (caught by a
/// library's guard or not), any allocation above [`MAX_ALLOCATION`] and a peak of live heap
/// above [`MAX_LIVE`] is a failure. The peak is the process's (the worker runs one case at a
/// time; its other thread waits here).
fn bounded<T: Send + 'static>(
    deadline: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<(T, Mem), Failure> {
    harness::install_panic_counter();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        harness::reset_largest_allocation();
        let base = harness::reset_peak();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        let mem = Mem {
            largest: harness::largest_allocation(),
            peak: harness::peak().saturating_sub(base),
        };
        let _ = tx.send((r.ok(), harness::panics_here(), mem));
    });
    match rx.recv_timeout(deadline) {
        Err(_) => Err(Failure::Hang),
        Ok((None, (_, msg), _)) => Err(Failure::Panic(format!("escaped: {msg}"))),
        Ok((Some(_), (n, msg), _)) if n > 0 => Err(Failure::Panic(format!("{n} caught: {msg}"))),
        Ok((Some(_), _, m)) if m.largest > MAX_ALLOCATION => Err(Failure::Allocation(m.largest)),
        Ok((Some(_), _, m)) if m.peak > MAX_LIVE => Err(Failure::Memory(m.peak)),
        Ok((Some(t), _, m)) => Ok((t, m)),
    }
}

/// Options of one worker run.
pub struct Opts {
    pub target: Target,
    pub seeds: PathBuf,
    pub work: PathBuf,
    pub iterations: u64,
    pub seconds: f64,
    pub seed: u64,
    pub deadline: Duration,
}

/// Runs one case: mutated file in place (or a new GCE tar.gz), then the entry points.
fn run_case(
    s: &Seed,
    muts: &[Mutation],
    scratch: &Path,
    n: u64,
    deadline: Duration,
) -> Result<(Seen, Mem), Failure> {
    if let Some(tar) = &s.tar {
        let _ = std::fs::write(&s.path, mutated_tar(tar, s.tar_header, muts));
        let (p, sc) = (s.path.clone(), scratch.to_path_buf());
        return bounded(deadline, move || exercise(&p, &sc, n));
    }
    let _restore = harness::apply(&s.path, s.len, muts);
    let file = File::open(&s.path).ok();
    let fix = file.map_or(Vec::new(), |f| mutate::fixups(s.fixup, &s.path, &f, s.len));
    let _restore_fix = harness::apply(&s.path, s.len, &fix);
    let (p, sc) = (s.path.clone(), scratch.to_path_buf());
    bounded(deadline, move || exercise(&p, &sc, n))
}

/// A gzip seed's contents with `muts` applied (a tar's first header's checksum fixed),
/// gzipped.
fn mutated_tar(tar: &[u8], tar_header: bool, muts: &[Mutation]) -> Vec<u8> {
    let mut t = tar.to_vec();
    for m in muts {
        apply_mem(&mut t, m);
    }
    let h = t[..512.min(t.len())].to_vec();
    if tar_header && h.len() == 512 {
        t[148..156].copy_from_slice(&mutate::tar_checksum(&h));
    }
    gzip(&t)
}

/// The seed a recorded case mutated (copied into `work`), and its mutations.
fn case_seed(
    case: &Case,
    target: Target,
    seeds: &Path,
    work: &Path,
) -> Result<(Seed, Vec<Mutation>)> {
    let s = load_seeds(target, seeds, work)?
        .into_iter()
        .find(|s| s.name == case.seed)
        .context("the case's seed")?;
    let muts = case
        .mutations
        .iter()
        .filter_map(|m| parse_mutation(m))
        .collect();
    Ok((s, muts))
}

fn apply_mem(t: &mut [u8], m: &Mutation) {
    let len = t.len() as u64;
    match m {
        Mutation::Flip { at, bit } if *at < len => t[*at as usize] ^= 1 << (bit % 8),
        Mutation::Write { at, bytes } if *at < len => {
            let n = bytes.len().min((len - at) as usize);
            t[*at as usize..*at as usize + n].copy_from_slice(&bytes[..n]);
        }
        Mutation::Copy { from, at, len: l } if *from < len && *at < len => {
            let n = (*l).min(len - from).min(len - at) as usize;
            let src = t[*from as usize..*from as usize + n].to_vec();
            t[*at as usize..*at as usize + n].copy_from_slice(&src);
        }
        _ => {}
    }
}

fn save_case(work: &Path, case: &Case) {
    if let Ok(j) = serde_json::to_string(case) {
        let _ = std::fs::write(work.join("current.json"), j);
    }
}

/// A case's result: what the readers saw and the memory they used, or a failure.
type Outcome = Result<(Seen, Mem), Failure>;

/// Runs the reader of an in-memory target on `input`: its error, if it refused it.
fn parse_input(target: Target, input: &[u8], dir: &Path) -> Option<String> {
    if target.is_blob() {
        blob::parse(target, input)
    } else {
        text::parse(target.name(), input, dir)
    }
}

/// One case of a text or byte-string target: a mutated seed parsed (the field kinds a
/// byte-string mutation changed counted in `sum`; the sabotaged target panics every 50th).
fn text_case(
    o: &Opts,
    rng: &mut Rng,
    seeds: &[(String, Vec<u8>)],
    n: u64,
    scratch: &Path,
    sum: &mut Summary,
) -> (Case, Outcome) {
    let (name, seed) = &seeds[(rng.next_u64() % seeds.len() as u64) as usize];
    let input = if o.target.is_blob() {
        let (input, kinds) = blob::mutate(o.target, name, rng, seed);
        for k in kinds {
            *sum.fields.entry(k).or_default() += 1;
        }
        input
    } else {
        text::mutate(o.target.name(), rng, seed)
    };
    let case = Case {
        target: o.target.name().to_string(),
        seed: name.clone(),
        mutations: Vec::new(),
        input_hex: Some(hex(&input)),
        n,
    };
    save_case(&o.work, &case);
    let t = o.target;
    let sabotage = sabotaged(t.name()) && n.is_multiple_of(50);
    let dir = scratch.to_path_buf();
    let r = bounded(o.deadline, move || {
        // The negative control of CI: a target that panics must fail the run.
        assert!(!sabotage, "sabotaged on purpose (XTASK_FUZZ_SABOTAGE)");
        parse_input(t, &input, &dir)
    })
    .map(|(e, mem)| {
        let seen = Seen {
            accepted: e.is_none(),
            errors: e.map(|e| normalise(&e)).into_iter().collect(),
            calls: vec![if t.is_blob() { "read" } else { "parse" }],
        };
        (seen, mem)
    });
    (case, r)
}

/// One case of an image target: a seed mutated at its fields (counted in `sum`), then read.
fn image_case(
    o: &Opts,
    rng: &mut Rng,
    seeds: &[Seed],
    n: u64,
    scratch: &Path,
    sum: &mut Summary,
) -> Result<(Case, Outcome)> {
    let s = &seeds[(rng.next_u64() % seeds.len() as u64) as usize];
    let file = File::open(&s.path)?;
    let len = s.tar.as_ref().map_or(s.len, |t| t.len() as u64);
    let (muts, kinds) = mutate::mutations(rng, &file, &s.map, len);
    for k in kinds {
        *sum.fields.entry(k.to_string()).or_default() += 1;
    }
    let case = Case {
        target: sum.target.clone(),
        seed: s.name.clone(),
        mutations: muts.iter().map(describe).collect(),
        input_hex: None,
        n,
    };
    save_case(&o.work, &case);
    Ok((case, run_case(s, &muts, scratch, n, o.deadline)))
}

/// Counts a passing case into `sum`.
fn record(sum: &mut Summary, seen: Seen, mem: Mem) {
    sum.accepted += u64::from(seen.accepted);
    for e in seen.errors {
        *sum.errors.entry(e).or_default() += 1;
    }
    for c in seen.calls {
        *sum.calls.entry(c.to_string()).or_default() += 1;
    }
    sum.largest_allocation = sum.largest_allocation.max(mem.largest as u64);
    sum.peak_live = sum.peak_live.max(mem.peak as u64);
}

/// A failing case: `work/failure.json`, the summary printed, then an error (or, for a hang,
/// the end of the process: the stuck thread cannot be stopped).
fn fail(o: &Opts, sum: &Summary, case: &Case, f: &Failure) -> Result<Summary> {
    let why = match f {
        Failure::Panic(m) => format!("panic: {m}"),
        Failure::Hang => format!("hang: no result after {:?}", o.deadline),
        Failure::Allocation(b) => format!("allocation of {b} bytes"),
        Failure::Memory(b) => format!("{b} bytes of heap live at once"),
    };
    let _ = std::fs::write(
        o.work.join("failure.json"),
        serde_json::to_string(&(why.clone(), case))?,
    );
    println!("{}", serde_json::to_string(sum)?);
    if matches!(f, Failure::Hang) {
        std::process::exit(11);
    }
    anyhow::bail!("{why}");
}

/// The seeds of an in-memory target, by name. A byte-string target's seed that is missing
/// (its tool is not installed) is left out, saying so; none at all is an error.
fn memory_seeds(target: Target, dir: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    for name in target.seeds() {
        match std::fs::read(dir.join(name)) {
            Ok(b) => out.push((name.to_string(), b)),
            Err(e) if target.is_blob() && e.kind() == std::io::ErrorKind::NotFound => {
                eprintln!(
                    "fuzz {}: seed {name} is missing (its tool is not installed)",
                    target.name()
                );
            }
            Err(e) => return Err(e).with_context(|| format!("seed {name}")),
        }
    }
    anyhow::ensure!(!out.is_empty(), "no seeds for {}", target.name());
    Ok(out)
}

/// The loop of one worker. Returns the summary; a failing case ends the run with its
/// description in `work/failure.json` (and an error).
pub fn run(o: &Opts) -> Result<Summary> {
    std::fs::create_dir_all(&o.work)?;
    let scratch = o.work.join("scratch");
    std::fs::create_dir_all(&scratch)?;
    let mut sum = Summary {
        target: o.target.name().to_string(),
        ..Summary::default()
    };
    let mut rng = Rng(o.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let t0 = Instant::now();
    let text_seeds = if o.target.in_memory() {
        memory_seeds(o.target, &o.seeds)?
    } else {
        Vec::new()
    };
    let seeds = if o.target.in_memory() {
        Vec::new()
    } else {
        load_seeds(o.target, &o.seeds, &o.work)?
    };
    let mut n = 0u64;
    while n < o.iterations && t0.elapsed().as_secs_f64() < o.seconds {
        n += 1;
        let (case, outcome) = if o.target.in_memory() {
            text_case(o, &mut rng, &text_seeds, n, &scratch, &mut sum)
        } else {
            image_case(o, &mut rng, &seeds, n, &scratch, &mut sum)?
        };
        sum.iterations = n;
        match outcome {
            Ok((seen, mem)) => record(&mut sum, seen, mem),
            Err(f) => {
                sum.seconds = t0.elapsed().as_secs_f64();
                return fail(o, &sum, &case, &f);
            }
        }
    }
    sum.seconds = t0.elapsed().as_secs_f64();
    Ok(sum)
}

/// Replays a case; `Ok(None)` when it passes, `Ok(Some(why))` when it still fails.
/// Writes the input of `case` to `dest`: a text target's bytes, or the seed image with the
/// mutations and checksum fixups applied (a sparse copy; the GCE tar gzipped), so a failure
/// can be kept as a regression input.
pub fn save_input(case: &Case, seeds: &Path, work: &Path, dest: &Path) -> Result<()> {
    let target = Target::from_name(&case.target).context("unknown target")?;
    if target.in_memory() {
        std::fs::write(dest, unhex(case.input_hex.as_deref().unwrap_or("")))?;
        return Ok(());
    }
    std::fs::create_dir_all(work)?;
    let (s, muts) = case_seed(case, target, seeds, work)?;
    if let Some(tar) = &s.tar {
        std::fs::write(dest, mutated_tar(tar, s.tar_header, &muts))?;
        return Ok(());
    }
    let _restore = harness::apply(&s.path, s.len, &muts);
    let file = File::open(&s.path)?;
    let fix = mutate::fixups(s.fixup, &s.path, &file, s.len);
    let _restore_fix = harness::apply(&s.path, s.len, &fix);
    let _ = std::fs::remove_file(dest);
    crate::util::cmd("cp")
        .arg("--sparse=always")
        .arg(&s.path)
        .arg(dest)
        .status()
        .ok()
        .filter(std::process::ExitStatus::success)
        .context("cp --sparse=always of the mutated seed")?;
    Ok(())
}

pub fn replay(
    case: &Case,
    seeds: &Path,
    work: &Path,
    deadline: Duration,
) -> Result<Option<String>> {
    std::fs::create_dir_all(work)?;
    let scratch = work.join("scratch");
    std::fs::create_dir_all(&scratch)?;
    let target = Target::from_name(&case.target).context("unknown target")?;
    let r = if target.in_memory() {
        let input = unhex(case.input_hex.as_deref().unwrap_or(""));
        let sabotage = sabotaged(target.name());
        let dir = scratch.clone();
        bounded(deadline, move || {
            assert!(!sabotage, "sabotaged on purpose (XTASK_FUZZ_SABOTAGE)");
            parse_input(target, &input, &dir)
        })
        .map(|_| ())
    } else {
        let (s, muts) = case_seed(case, target, seeds, work)?;
        run_case(&s, &muts, &scratch, case.n, deadline).map(|_| ())
    };
    Ok(match r {
        Ok(()) => None,
        Err(Failure::Panic(m)) => Some(format!("panic: {m}")),
        Err(Failure::Hang) => Some("hang".into()),
        Err(Failure::Allocation(b)) => Some(format!("allocation of {b} bytes")),
        Err(Failure::Memory(b)) => Some(format!("{b} bytes of heap live at once")),
    })
}

#[cfg(test)]
mod tests;
