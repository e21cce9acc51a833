//! `cargo xtask`: imgbuild's developer tasks.
//!
//! - `fixtures`: a realistic NixOS-like closure built by real Nix into `DIR/nix/store`
//!   (or, with `--demo`, the small committed demo closure in `fixtures/demo`);
//! - `baseline`: the conventional shell pipeline (mkfs.vfat, mtools, mkfs.ext4 -d, sgdisk,
//!   sfdisk, dd, zstd) building the same image formats, as a benchmark and boot reference;
//! - `boot`: boots an image in QEMU and passes only when the fixture's initrd prints
//!   `IMGBUILD-BOOT-OK`;
//! - `bootctl`: runs Debian's `bootctl` against an image's ESP;
//! - `ci-boot`: everything above, end to end;
//! - `tidy`: ARCHITECTURE.md's promises checked (dependency table, no too_many_arguments,
//!   no Debug as data, crate docs);
//! - `ci`: what `.ci/run` runs: fmt, clippy, doc, tidy, workspace tests, then `ci-boot`;
//! - `bench`: imgbuild against mke2fs -d, cp -a, zstd and the baseline pipelines (one report);
//! - `fuzz`: structure-aware fuzzing of every reader (images, containers, text inputs);
//! - `oracle`: nixpkgs' own boot builders run on fixture toplevels, their output written as
//!   golden data (fixtures/oracle) for tests/e2e/oracle.rs.

mod baseline;
mod bench;
mod boot;
mod bootcount;
mod bootctl;
mod ci;
mod debs;
mod fixture;
mod fuzz;
mod initrd;
mod oracle;
mod tidy;
mod util;

use anyhow::Result;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "cargo xtask", about = "imgbuild developer tasks")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build the test closure with real Nix (offline, chroot store) or the committed demo closure
    Fixtures {
        #[arg(long, value_enum, default_value = "x86_64")]
        arch: fixture::Arch,
        /// Output directory (default: `target/fixtures/ARCH`; with --demo: `fixtures/demo`)
        #[arg(long)]
        out: Option<PathBuf>,
        /// Regenerate the small demo closure committed under fixtures/demo (x86_64) or
        /// fixtures/demo-aarch64
        #[arg(long)]
        demo: bool,
    },
    /// Build an image with the conventional shell pipeline (xtask/scripts/baseline-*.sh)
    Baseline {
        #[arg(value_enum)]
        format: boot::Format,
        /// Fixture directory (from `cargo xtask fixtures`)
        fixture: PathBuf,
        /// Output image (sd-aarch64: a .img.zst is also written when the name ends in .zst)
        out: PathBuf,
        /// Give the root filesystem this label instead of the right one (negative controls)
        #[arg(long)]
        root_label: Option<String>,
    },
    /// Boot an image in QEMU; exit 0 only when the console shows IMGBUILD-BOOT-OK
    Boot(boot::BootArgs),
    /// Check an image's ESP with Debian's bootctl (status, list, is-installed)
    Bootctl { image: PathBuf },
    /// CI boot tests: fixtures, baseline and imgbuild images, boots (virtio, nvme, aarch64),
    /// bootctl, negative controls
    CiBoot(ci::CiArgs),
    /// What .ci/run runs: fmt --check, clippy -D warnings, doc, cargo test, then ci-boot
    Ci(ci::CiArgs),
    /// Benchmarks against mke2fs -d, cp -a, zstd and the baseline pipelines; writes
    /// target/bench/report.md
    Bench(bench::BenchArgs),
    /// Structure-aware fuzzing of every reader: `fuzz TARGET|all [--iterations N] [--seconds S]`;
    /// writes target/fuzz/report.md, failing cases to target/fuzz/crashes
    Fuzz(fuzz::FuzzArgs),
    /// One fuzz target in this process (run by `fuzz`)
    #[command(hide = true)]
    FuzzWorker(fuzz::WorkerArgs),
    /// Run nixpkgs' own boot builders (from --builder-dir) on the oracle fixture toplevels and
    /// write their output as golden data under fixtures/oracle
    Oracle(oracle::OracleArgs),
    /// Check ARCHITECTURE.md's promises: the crate dependency table against cargo metadata,
    /// no allowances of clippy's too-many-arguments lint, no Debug formatting as data, crate
    /// docs everywhere, sizes, import circles, missing docs, ids (see `xtask/src/tidy/mod.rs`)
    Tidy(tidy::TidyArgs),
}

/// Counts every allocation request and free for the fuzz worker's bounds (the largest request
/// of a case, per thread; the peak of live bytes, per process).
struct Counting;

// SAFETY: forwards every call unchanged to the system allocator; `note_allocation` and
// `note_free` only update a const-initialised thread-local `Cell` and two static atomics (no
// allocation, no unwinding).
unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        imgbuild_testutil::harness::note_allocation(layout.size());
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract, passed on as is.
        unsafe { std::alloc::System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        imgbuild_testutil::harness::note_free(layout.size());
        // SAFETY: `ptr` came from `System.alloc` above with this layout.
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new: usize) -> *mut u8 {
        imgbuild_testutil::harness::note_free(layout.size());
        imgbuild_testutil::harness::note_allocation(new);
        // SAFETY: as for `dealloc`; the caller upholds `realloc`'s contract.
        unsafe { std::alloc::System.realloc(ptr, layout, new) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn main() {
    let cli = Cli::parse();
    if let Err(e) = real_main(cli) {
        eprintln!("xtask: error: {e:#}");
        std::process::exit(1);
    }
}

fn real_main(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Fixtures { arch, out, demo } => {
            if demo {
                let dir = match arch {
                    fixture::Arch::X86_64 => "fixtures/demo",
                    fixture::Arch::Aarch64 => "fixtures/demo-aarch64",
                };
                let out = out.unwrap_or_else(|| util::repo_root().join(dir));
                fixture::build_demo(arch, &out)
            } else {
                let out = out.unwrap_or_else(|| fixture::default_dir(arch));
                let info = fixture::build(arch, &out)?;
                println!("{}", serde_json::to_string_pretty(&info)?);
                Ok(())
            }
        }
        Cmd::Baseline {
            format,
            fixture,
            out,
            root_label,
        } => baseline::build(format, &fixture, &out, root_label.as_deref()).map(|_| ()),
        Cmd::Boot(args) => boot::cmd_boot(args),
        Cmd::Bootctl { image } => bootctl::check(&image),
        Cmd::CiBoot(args) => ci::run(args),
        Cmd::Ci(args) => ci::run_all(args),
        Cmd::Bench(args) => bench::run_bench(args),
        Cmd::Fuzz(args) => fuzz::run(args),
        Cmd::FuzzWorker(args) => fuzz::worker(args),
        Cmd::Oracle(args) => oracle::run(args),
        Cmd::Tidy(args) => tidy::run(args.negative_control),
    }
}
