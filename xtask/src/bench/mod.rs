//! `cargo xtask bench [ext4|zstd|images|scaling|pipeline|containers|sizes|iso|appliance|all] [--runs N] [--quick]`: imgbuild against
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
//! - `pipeline`: sd-aarch64 end to end vs `zstd -T0 -3` on its raw image, raw-efi at
//!   `--size 8GiB` vs smaller, raw-efi vs a previous binary (`IMGBUILD_BENCH_PREVIOUS`), and
//!   what dedup saves.
//! - `containers`: qemu-efi, amazon, hyperv, vmware and gce written from the plan vs `imgbuild raw-efi` plus
//!   `qemu-img convert` (or `tar --format=oldgnu -Sczf`), on the x86_64 fixture and a 1 GiB
//!   synthetic closure.
//! - `iso`: `imgbuild iso` vs `mksquashfs` + `xorriso -as mkisofs` with nixpkgs' options on
//!   the x86_64 fixture and a 1 GiB synthetic closure (hard-linked copies with the ISO
//!   settings in boot.json); the store image alone (`iso --dry-run`) vs `mksquashfs`; sizes
//!   and their ratios.
//! - `appliance`: `imgbuild appliance` vs `imgbuild raw-efi` of the same closure (what the
//!   verity store, the UKI and the sysupdate artifacts cost), and vs `mksquashfs` +
//!   `veritysetup format` (the store part alone, as systemd-repart makes it).
//! - `sizes`: `inspect --sizes` and `diff` on images of 1 GiB and 0.5 GiB synthetic closures,
//!   vs a plain `inspect` and (as root) loop mount + `du`.
//!
//! Method: the release binaries are built first and copied to `target/bench/bin` (others may
//! rebuild `target/release` meanwhile). Warm page cache: every command runs once untimed,
//! then `--runs` timed rounds, the commands of a section interleaved round by round. Before
//! each run: its previous output is removed and `sync` is called (untimed). Time = wall
//! clock from spawn to exit; "+sync" adds a `sync` timed right after the command, i.e. the
//! cost of making the output durable (`imgbuild` and `mke2fs` fsync their output themselves;
//! `cp`, `dd` and `zstd` do not). Peak RSS = GNU time's `%M` (`ru_maxrss` from `wait4`): for
//! a shell pipeline the largest of the script and every process it waited for (the kernel
//! folds waited-for descendants' maxima into the child's). See [`measure::measure`] for why not our
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

mod appliance;
mod closure;
mod containers;
mod ext4;
mod gen;
mod images;
mod iso;
mod measure;
mod pipeline;
mod report;
mod scaling;
mod sizes;
mod zstd;

use crate::fixture::{self, Arch, FixtureInfo};
use crate::util::{self, cmd, output_quiet, run};
use anyhow::{bail, ensure, Context, Result};
use closure::*;
use gen::*;
use measure::*;
use report::*;
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
    Pipeline,
    Containers,
    Sizes,
    Iso,
    Appliance,
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
        section(&mut rep, "ext4", |r| ext4::bench_ext4(r, &env))?;
    }
    if all || args.section == Section::Zstd {
        section(&mut rep, "zstd", |r| zstd::bench_zstd(r, &env))?;
    }
    if all || args.section == Section::Images {
        section(&mut rep, "images", |r| images::bench_images(r, &env))?;
    }
    if all || args.section == Section::Scaling {
        section(&mut rep, "scaling", |r| scaling::bench_scaling(r, &env))?;
    }
    if all || args.section == Section::Pipeline {
        section(&mut rep, "pipeline", |r| pipeline::bench_pipeline(r, &env))?;
    }
    if all || args.section == Section::Sizes {
        section(&mut rep, "sizes", |r| sizes::bench_sizes(r, &env))?;
    }
    if all || args.section == Section::Iso {
        section(&mut rep, "iso", |r| iso::bench_iso(r, &env))?;
    }
    if all || args.section == Section::Appliance {
        section(&mut rep, "appliance", |r| {
            appliance::bench_appliance(r, &env)
        })?;
    }
    if all || args.section == Section::Containers {
        section(&mut rep, "containers", |r| {
            containers::bench_containers(r, &env)
        })?;
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
