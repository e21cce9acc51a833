//! `imgbuild`: rootless, reproducible NixOS disk images.
//!
//! The only crate that knows argv, the environment (`SOURCE_DATE_EPOCH`), terminals, signals
//! and exit codes. Everything else is a library call.

// Doc comments on the clap types are the `--help` texts, written for a terminal
// (`[PART:]PATH`, `SRC:DEST[:MODE[:UID:GID]]`), not intra-doc links.
#![allow(rustdoc::broken_intra_doc_links)]

mod ext4_cmd;
mod flash_cmd;
mod inspect_cmd;
mod progress;
mod report;
mod secure_boot_args;
mod treemap;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use imgbuild_plan::add::{Add, AddTarget};
use imgbuild_plan::{
    self as plan, format::parse_size, Compression, Dedup, DiskSize, Format, InputSpec, Inputs,
    Options, OutputOptions,
};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

#[derive(Parser)]
#[command(
    name = "imgbuild",
    version,
    about = "Rootless, reproducible NixOS disk images",
    long_about = None,
    after_help = ENVIRONMENT
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// x86_64 UEFI disk image: GPT, FAT32 ESP with systemd-boot, ext4 root
    #[command(after_help = ENVIRONMENT)]
    RawEfi {
        #[command(flatten)]
        args: BuildArgs,
        #[command(flatten)]
        esp: EspArgs,
    },
    /// Raspberry Pi 3/4 SD card image: MBR, FAT firmware, ext4 root with extlinux, zstd
    #[command(after_help = ENVIRONMENT)]
    SdAarch64 {
        #[command(flatten)]
        args: BuildArgs,
        #[command(flatten)]
        pi: PiArgs,
    },
    /// Build an image from a format file (`formats/*.toml`) or a built-in format name; also
    /// `imgbuild FORMAT [OPTIONS]` (e.g. `imgbuild qemu-efi`)
    #[command(after_help = ENVIRONMENT)]
    Build {
        /// Format name (see `imgbuild formats`) or path to a format file
        #[arg(long)]
        format: String,
        #[command(flatten)]
        b: FormatArgs,
    },
    /// List the built-in formats (each also a command: `imgbuild qemu-efi ...`)
    Formats {
        /// Print them as JSON
        #[arg(long)]
        json: bool,
    },
    /// Make an ext4 filesystem image from a directory
    #[command(after_help = ENVIRONMENT)]
    Ext4(ext4_cmd::Ext4Args),
    /// Explain an image (raw, .zst, .gz or a container): partition table, filesystems, boot setup, NixOS system
    Inspect(inspect_cmd::InspectArgs),
    /// List files in an image: `ls IMAGE [PART:]PATH` (PART: number or label, default the root filesystem)
    Ls(inspect_cmd::LsArgs),
    /// Print a file of an image to stdout
    Cat(inspect_cmd::CatArgs),
    /// Copy a file or a whole tree out of an image
    Cp(inspect_cmd::CpArgs),
    /// Compare two images as NixOS systems: toplevel, store paths added, removed and changed
    /// (with sizes), boot settings and files, partition layout. Exit status 0 when
    /// identical, 1 when different, 2 on error
    Diff(inspect_cmd::DiffArgs),
    /// Write an image (raw or .zst) onto a disk: only the bmap's ranges when there is one,
    /// verified by reading back; refuses mounted disks, the system disk, too-small targets
    Flash(flash_cmd::FlashArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell)
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff), e.g. `imgbuild man > imgbuild.1`
    Man,
    /// `imgbuild FORMAT [OPTIONS]`: a built-in format (`imgbuild formats`) or a format file.
    #[command(external_subcommand)]
    Format(Vec<String>),
}

/// The options of a build from any format: the common ones and every format-specific group
/// (the format decides which apply).
#[derive(Args)]
struct FormatArgs {
    #[command(flatten)]
    args: BuildArgs,
    #[command(flatten)]
    esp: EspArgs,
    #[command(flatten)]
    pi: PiArgs,
}

/// `imgbuild FORMAT [OPTIONS]`, for any built-in format or format file.
#[derive(Parser)]
#[command(after_help = ENVIRONMENT)]
struct FormatCmd {
    #[command(flatten)]
    b: FormatArgs,
}

/// `imgbuild FORMAT ...`: the format's build, or a clear error for a typo.
fn run_format(argv: Vec<String>) -> Result<()> {
    let name = argv.first().cloned().unwrap_or_default();
    match Format::load(&name) {
        Ok(_) => {}
        Err(plan::FormatError::Unknown(_)) => anyhow::bail!(
            "`{name}` is neither a command nor a format (commands: `imgbuild --help`; \
             built-in formats: {}; or a path to a format file)",
            plan::format::builtin_names()
        ),
        Err(e) => return Err(e.into()),
    }
    let cmd = <FormatCmd as clap::CommandFactory>::command()
        .name(format!("imgbuild {name}"))
        .bin_name(format!("imgbuild {name}"))
        .about(format!("Build a `{name}` image"));
    let m = cmd.try_get_matches_from(&argv).unwrap_or_else(|e| e.exit());
    let c = <FormatCmd as clap::FromArgMatches>::from_arg_matches(&m).unwrap_or_else(|e| e.exit());
    run_build(&name, c.b.args, Some(c.b.esp), Some(c.b.pi))
}

/// `imgbuild formats`: every built-in format, one line each (or JSON).
fn formats(json: bool) -> Result<()> {
    let mut list = Vec::new();
    let mut lines = Vec::new();
    for (name, _) in plan::format::BUILTIN {
        let f = Format::load(name)?;
        let disk = f.volume == plan::format::Volume::Disk;
        lines.push(format!(
            "{:<14} {:<14} {}",
            f.name,
            f.system.0.join(","),
            f.description
        ));
        list.push(serde_json::json!({
            "name": f.name,
            "description": f.description,
            "system": f.system,
            "volume": f.volume,
            "table": disk.then_some(f.table.kind),
            "container": f.container.kind,
            "compression": f.compress,
            "extension": f.extension,
        }));
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    for l in lines {
        println!("{l}");
    }
    Ok(())
}

#[derive(Args, Debug)]
struct BuildArgs {
    /// The system toplevel: a `nix build` result symlink or a store path
    #[arg(long, default_value = "./result")]
    closure: PathBuf,
    /// Where /nix/store lives on this host (a `--store DIR` chroot store has DIR/nix/store)
    #[arg(long, default_value = "/")]
    store_root: PathBuf,
    /// nixpkgs closureInfo output (store-paths, registration)
    #[arg(long)]
    closure_info: Option<PathBuf>,
    /// Output file [default: nixos.img, or nixos.img.zst when compressed]
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Size of the whole disk: bytes, or K/M/G/T (also KiB/MiB/GiB/TiB: powers of 1024) or
    /// KB/MB/GB/TB (powers of 1000: an 8GB image fits an 8 GB card) [default: the minimum plus
    /// --free]
    #[arg(long, value_parser = size_arg, value_name = "SIZE")]
    size: Option<u64>,
    /// Free space left in the root filesystem, with the automatic size (units as --size)
    /// [default: the format's: 512MiB for raw-efi, 16MiB for sd-aarch64]
    #[arg(long, value_parser = size_arg, value_name = "SIZE", conflicts_with = "size")]
    free: Option<u64>,
    /// Seed for every GUID, UUID, volume id and hash seed [default: imgbuild:FORMAT:TOPLEVEL]
    #[arg(long)]
    seed: Option<String>,
    /// Compression of the output [default: the format's: none for raw-efi, zstd for sd-aarch64]
    #[arg(long, value_enum)]
    compress: Option<CompressArg>,
    /// Compression level: zstd 1 (fastest) to 22 (smallest) [default: 3]; gzip (gce) 1 to 9
    /// [default: 6]
    #[arg(long, value_parser = clap::value_parser!(i32).range(1..=22))]
    level: Option<i32>,
    /// Also keep the uncompressed image
    #[arg(long)]
    keep_raw: bool,
    /// zstd level of the store image (squashfs) of iso, iso-installer, netboot, kexec and
    /// appliance: 1 (fastest) to 22 [default: 19, nixpkgs' for its ISOs]
    #[arg(long, value_parser = clap::value_parser!(i32).range(1..=22))]
    store_level: Option<i32>,
    /// Ship /nix-path-registration for first-boot registration [default: the format's]
    #[arg(long)]
    nix_path_registration: Option<bool>,
    /// Worker threads; 0 means all cores (the output is the same for any count) [default: 0]
    #[arg(long, short = 'j', value_name = "N")]
    threads: Option<usize>,
    /// Add a host file to the root filesystem: SRC:DEST[:MODE[:UID:GID]] (default 0644 root:root)
    #[arg(long, value_name = "SRC:DEST[:MODE[:UID:GID]]")]
    add: Vec<String>,
    /// Add a host directory tree to the root filesystem: DIR:DEST
    #[arg(long, value_name = "DIR:DEST")]
    add_tree: Vec<String>,
    /// Add a host file to the boot partition (ESP or firmware): SRC:DEST
    #[arg(long, value_name = "SRC:DEST")]
    add_boot: Vec<String>,
    /// Store every file of the closure separately (by default identical store files share one
    /// inode and their data is stored once, as `nix-store --optimise` would leave them)
    #[arg(long, conflicts_with = "optimise_store")]
    no_dedup: bool,
    /// Also fill /nix/store/.links as Nix names it, so the booted store is already optimised
    #[arg(long)]
    optimise_store: bool,
    /// Build even when the system's /etc/fstab or boot loader do not match the format (the
    /// image may then not boot)
    #[arg(long)]
    no_system_check: bool,
    /// Print the manifest as JSON on stdout
    #[arg(long)]
    json: bool,
    /// Print how long each phase took (on stderr)
    #[arg(long)]
    timings: bool,
    /// Plan and map the image, print its layout (with --json as JSON), write nothing
    #[arg(long)]
    dry_run: bool,
}

/// `--dry-run`: the plan's summary instead of an image.
fn dry_run(
    format: &Format,
    inputs: &Inputs,
    opts: &Options,
    progress: &progress::Bars,
    json: bool,
) -> Result<()> {
    let d = plan::dry_run(format, inputs, opts, progress, &CANCEL)
        .map_err(|e| match e {
            plan::Error::Interrupted => anyhow::anyhow!("interrupted"),
            e => anyhow::Error::new(e),
        })
        .context("planning the image (dry run)")?;
    progress.finish();
    if let Some(v) = &d.verity {
        report::print_verity(v);
    }
    if let Some(s) = &d.sysupdate {
        report::print_sysupdate(s);
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&d)?);
        return Ok(());
    }
    eprintln!(
        "dry run: `{}` would be a {} disk ({} bytes), {} bytes mapped ({} from files) in {} \
         extents; nothing written",
        d.format,
        plan::human_size(d.disk_size),
        d.disk_size,
        d.mapped_bytes,
        d.file_bytes,
        d.extents
    );
    for p in &d.partitions {
        eprintln!("  {} {}: {} bytes at {}", p.number, p.name, p.size, p.start);
    }
    Ok(())
}

/// Options of formats with an EFI system partition.
#[derive(Args, Debug)]
struct EspArgs {
    /// Size of the EFI system partition (units as --size) [default: the format's, 512MiB]
    #[arg(long, value_parser = size_arg, value_name = "SIZE")]
    esp_size: Option<u64>,
    /// Secure Boot: sign every EFI executable of the ESP (systemd-boot, EFI/Linux/*.efi, the
    /// kernels) with this RSA private key (PEM, unencrypted) and write
    /// loader/keys/auto/{PK,KEK,db}.auth enrolling its certificate; the key never enters the
    /// image or the manifest
    #[arg(
        long,
        value_name = "FILE",
        requires = "secure_boot_cert",
        group = "secure_boot_signer"
    )]
    secure_boot_key: Option<PathBuf>,
    /// Secure Boot without the key (two steps): what must be signed is written to DIR as
    /// NAME.tbs and the build stops; sign each (`openssl dgst -sha256 -sign KEY -out NAME.sig
    /// NAME.tbs`, or an HSM), put NAME.sig beside it and build again
    #[arg(
        long,
        value_name = "DIR",
        requires = "secure_boot_cert",
        group = "secure_boot_signer"
    )]
    secure_boot_signatures: Option<PathBuf>,
    /// The X.509 certificate (PEM or DER) of the signing key: PK, KEK and db at once
    #[arg(long, value_name = "FILE", requires = "secure_boot_signer")]
    secure_boot_cert: Option<PathBuf>,
    /// systemd-boot's `secure-boot-enroll` in loader.conf: if-safe (systemd 253+) enrols the
    /// keys by itself in a VM in setup mode, force on any machine in setup mode [default: no
    /// line, systemd-boot's default]
    #[arg(long, value_enum, value_name = "MODE", requires = "secure_boot_cert")]
    secure_boot_enroll: Option<secure_boot_args::EnrollArg>,
}

/// Options of Raspberry Pi formats.
#[derive(Args, Debug)]
struct PiArgs {
    /// Raspberry Pi firmware directory, when boot.json has no org.imgbuild.v1 firmware (see
    /// the README for what it must hold)
    #[arg(long, value_name = "DIR")]
    firmware: Option<PathBuf>,
    /// MBR disk signature, e.g. 0x2178694e [default: derived from the seed]
    #[arg(long, value_parser = hex_u32, value_name = "HEX")]
    disk_id: Option<u32>,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum CompressArg {
    None,
    Zstd,
}

fn size_arg(s: &str) -> Result<u64, String> {
    parse_size(s)
}

fn hex_u32(s: &str) -> Result<u32, String> {
    let t = s.trim_start_matches("0x").trim_start_matches("0X");
    u32::from_str_radix(t, 16).map_err(|e| format!("`{s}`: {e}"))
}

/// `SOURCE_DATE_EPOCH`, or imgbuild's fixed default (1980-01-01).
pub(crate) fn epoch() -> Result<i64> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) => {
            let t = v
                .trim()
                .parse::<i64>()
                .with_context(|| format!("SOURCE_DATE_EPOCH=`{v}` is not a number of seconds"))?;
            plan::check_epoch(t).map_err(|e| anyhow::anyhow!("SOURCE_DATE_EPOCH={v}: {e}"))
        }
        Err(_) => Ok(plan::DEFAULT_EPOCH),
    }
}

/// The environment imgbuild reads, for `--help` and the manual page.
const ENVIRONMENT: &str = "Environment:
  SOURCE_DATE_EPOCH  the time every generated file and filesystem carries, in seconds since
                     1970 (0 to 4354819198 = 2107-12-31) [default: 315532800 = 1980-01-01]";

/// SIGINT/SIGTERM/SIGHUP set this; the build stops at the next check and removes its
/// temporary files.
static CANCEL: AtomicBool = AtomicBool::new(false);

/// The signal that set [`CANCEL`]: the exit status is 128 + its number, as a shell reports a
/// process killed by it (130 for SIGINT, 143 for SIGTERM, 129 for SIGHUP).
static SIGNAL: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    // The first signal decides the exit status.
    let _ = SIGNAL.compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst);
    CANCEL.store(true, Ordering::SeqCst);
}

/// The exit status after an error: 128 + the signal that interrupted the command, else 1.
fn failure_status() -> i32 {
    match SIGNAL.load(Ordering::SeqCst) {
        0 if CANCEL.load(Ordering::SeqCst) => 130,
        0 => 1,
        sig => 128 + sig,
    }
}

fn install_signal_handlers() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: `on_signal` only stores to an atomic, which is async-signal-safe; the
        // sigaction struct is fully initialised (zeroed, then handler and an empty mask set).
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as *const () as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
    // Past `ulimit -f`, the kernel sends SIGXFSZ, whose default action kills the process and
    // leaves `OUT.tmp` behind. Ignored, the write fails with EFBIG and the build cleans up.
    // SAFETY: SIG_IGN is a valid disposition for SIGXFSZ; no handler code runs.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
}

fn run_build(
    format_name: &str,
    a: BuildArgs,
    esp: Option<EspArgs>,
    pi: Option<PiArgs>,
) -> Result<()> {
    let secure_boot = esp.as_ref().and_then(EspArgs::secure_boot);
    let esp_size = esp.and_then(|e| e.esp_size);
    let (firmware, disk_id) = pi.map_or((None, None), |p| (p.firmware, p.disk_id));
    let format = Format::load(format_name)?;
    let mut adds = Vec::new();
    for (specs, tree, target) in [
        (&a.add, false, AddTarget::Root),
        (&a.add_tree, true, AddTarget::Root),
        (&a.add_boot, false, AddTarget::Boot),
    ] {
        for s in specs {
            adds.push(Add::parse(s, tree, target).map_err(anyhow::Error::msg)?);
        }
    }
    let spec = InputSpec {
        closure: a.closure.clone(),
        store_root: a.store_root.clone(),
        closure_info: a.closure_info.clone(),
    };
    let progress = progress::Bars::new(a.json).with_timings(a.timings);
    progress.phase_msg("reading the closure");
    let inputs = Inputs::load(&spec, a.threads)?;
    let opts = Options {
        output: OutputOptions {
            path: a.output,
            compression: a.compress.map(|c| match c {
                CompressArg::None => Compression::None,
                CompressArg::Zstd => Compression::Zstd,
            }),
            level: a.level,
            keep_raw: a.keep_raw,
            store_level: a.store_level,
        },
        seed: a.seed,
        size: match a.size {
            Some(n) => DiskSize::Exact(n),
            None => DiskSize::Auto { free: a.free },
        },
        esp_size,
        threads: a.threads,
        firmware,
        disk_id,
        epoch: epoch()?,
        nix_path_registration: a.nix_path_registration,
        adds,
        dedup: match (a.no_dedup, a.optimise_store) {
            (true, _) => Dedup::Off,
            (false, true) => Dedup::OptimiseStore,
            (false, false) => Dedup::On,
        },
        check_system: !a.no_system_check,
        secure_boot,
    };
    if a.dry_run {
        return dry_run(&format, &inputs, &opts, &progress, a.json);
    }
    let output = opts.output_path(&format);
    let manifest =
        plan::build(&format, &inputs, &opts, &progress, &CANCEL).map_err(|e| match e {
            plan::Error::Interrupted => {
                anyhow::anyhow!("interrupted: nothing was written at `{}`", output.display())
            }
            e => anyhow::Error::new(e).context(format!("building `{}`", output.display())),
        })?;
    progress.finish();
    report::report(&manifest, &output, a.json)
}

/// Writes `bytes` to stdout; a reader that closed the pipe (`| head`) is not an error.
fn stdout(bytes: &[u8]) -> std::io::Result<()> {
    std::io::Write::write_all(&mut std::io::stdout(), bytes).or_else(|e| match e.kind() {
        std::io::ErrorKind::BrokenPipe => Ok(()),
        _ => Err(e),
    })
}

/// `imgbuild man`: the manual page, with a section for every subcommand.
fn man() -> Result<()> {
    let cmd = <Cli as clap::CommandFactory>::command();
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd.clone()).render(&mut out)?;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("imgbuild-{}", sub.get_name());
        let page = clap_mangen::Man::new(sub.clone().name(name));
        page.render_title(&mut out)?;
        page.render_name_section(&mut out)?;
        page.render_synopsis_section(&mut out)?;
        page.render_description_section(&mut out)?;
        page.render_options_section(&mut out)?;
    }
    stdout(&out).context("writing the manual page")
}

fn main() {
    let cli = Cli::parse();
    install_signal_handlers();
    let r = match cli.cmd {
        Cmd::RawEfi { args, esp } => run_build("raw-efi", args, Some(esp), None),
        Cmd::SdAarch64 { args, pi } => run_build("sd-aarch64", args, None, Some(pi)),
        Cmd::Build { format, b } => run_build(&format, b.args, Some(b.esp), Some(b.pi)),
        Cmd::Formats { json } => formats(json),
        Cmd::Flash(a) => flash_cmd::run(a),
        Cmd::Format(argv) => run_format(argv),
        Cmd::Ext4(a) => ext4_cmd::run(a, &CANCEL),
        Cmd::Inspect(a) => inspect_cmd::inspect(a),
        Cmd::Diff(a) => match inspect_cmd::diff(a) {
            Ok(true) => Ok(()),
            Ok(false) => std::process::exit(1),
            Err(e) => {
                eprintln!(
                    "imgbuild: error: {}",
                    imgbuild_units::error_chain(e.as_ref())
                );
                std::process::exit(2);
            }
        },
        Cmd::Ls(a) => inspect_cmd::ls(a),
        Cmd::Cat(a) => inspect_cmd::cat(a),
        Cmd::Cp(a) => inspect_cmd::cp(a),
        Cmd::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(
                shell,
                &mut <Cli as clap::CommandFactory>::command(),
                "imgbuild",
                &mut script,
            );
            stdout(&script).context("writing the completion script")
        }
        Cmd::Man => man(),
    };
    if let Err(e) = r {
        eprintln!(
            "imgbuild: error: {}",
            imgbuild_units::error_chain(e.as_ref())
        );
        std::process::exit(failure_status());
    }
}
