//! `imgbuild inspect | ls | cat | cp`: reading images (ours, nixpkgs', anyone's) without
//! trusting them. All the reading is `imgbuild_inspect`; this file parses arguments and
//! prints.

use std::ffi::OsString;
use std::io::{self, BufWriter, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use imgbuild_inspect::{self as inspect, Entry, Image, Inspection, Kind, OpenOptions};

/// Options shared by the reading commands.
#[derive(Args, Debug)]
pub struct OpenArgs {
    /// Directory for temporary files (a decompressed .zst image is written there, sparse)
    #[arg(long, value_name = "DIR")]
    tmpdir: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// Image file (.img, or .img.zst)
    image: PathBuf,
    /// Print the inspection as JSON
    #[arg(long)]
    json: bool,
    /// Also read every directory, file and symlink of every filesystem (a deep check that
    /// the image reads back); fails if anything cannot be read
    #[arg(long)]
    deep: bool,
    /// Show what fills the image instead: bytes per store path (allocated, as `du` counts;
    /// files shared by several paths counted once), the closure total, what else fills each
    /// filesystem, free space, and the boot partition's files
    #[arg(long)]
    sizes: bool,
    /// With --sizes: also write a treemap of the image (partitions, store paths, their
    /// largest directories) as a self-contained SVG file
    #[arg(long, value_name = "FILE", requires = "sizes")]
    svg: Option<PathBuf>,
    #[command(flatten)]
    open: OpenArgs,
}

#[derive(Args, Debug)]
pub struct DiffArgs {
    /// The image before (raw or .zst)
    old: PathBuf,
    /// The image after
    new: PathBuf,
    /// Print the comparison as JSON
    #[arg(long, conflicts_with = "markdown")]
    json: bool,
    /// Print Markdown tables (for a CI job summary, e.g. `>> "$GITHUB_STEP_SUMMARY"`)
    #[arg(long)]
    markdown: bool,
    #[command(flatten)]
    open: OpenArgs,
}

#[derive(Args, Debug)]
pub struct LsArgs {
    /// Image file (.img, or .img.zst)
    image: PathBuf,
    /// [PART:]PATH; PART is a partition number or label [default: the root filesystem]
    #[arg(default_value = "/")]
    path: OsString,
    /// List subdirectories recursively (full paths, one per line)
    #[arg(short = 'R', long)]
    recursive: bool,
    #[command(flatten)]
    open: OpenArgs,
}

#[derive(Args, Debug)]
pub struct CatArgs {
    /// Image file (.img, or .img.zst)
    image: PathBuf,
    /// [PART:]PATH of a file (symlinks are followed inside the filesystem)
    path: OsString,
    #[command(flatten)]
    open: OpenArgs,
}

#[derive(Args, Debug)]
pub struct CpArgs {
    /// Image file (.img, or .img.zst)
    image: PathBuf,
    /// [PART:]PATH of a file, symlink or directory tree
    path: OsString,
    /// Destination (an existing directory: copied inside it)
    dest: PathBuf,
    #[command(flatten)]
    open: OpenArgs,
}

fn open(image: &std::path::Path, a: &OpenArgs) -> Result<Image> {
    let opts = OpenOptions {
        temp_dir: a.tmpdir.clone(),
        ..OpenOptions::default()
    };
    Image::open_with(image, &opts).with_context(|| format!("opening `{}`", image.display()))
}

fn location<'a>(img: &'a Image, arg: &OsString) -> Result<(&'a inspect::Filesystem, Vec<u8>)> {
    let (part, path) = inspect::split_location(arg.as_bytes());
    let fs = img.select(part.as_deref())?;
    Ok((fs, inspect::path::normalize(&path)))
}

pub fn inspect(a: InspectArgs) -> Result<()> {
    let img = open(&a.image, &a.open)?;
    if a.sizes {
        return quiet_pipe(sizes(&a, &img));
    }
    let mut report = img.inspect();
    if a.deep {
        report.read_all = Some(img.read_all());
    }
    let out = io::stdout();
    let mut out = BufWriter::new(out.lock());
    if a.json {
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
    } else {
        write_report(&mut out, &report)?;
    }
    out.flush()?;
    if !img.recognised() {
        anyhow::bail!(
            "`{}`: no partition table and no filesystem recognised",
            a.image.display()
        );
    }
    let errors: usize = report
        .read_all
        .iter()
        .flatten()
        .map(|r| r.errors.len())
        .sum();
    if errors > 0 {
        anyhow::bail!(
            "{errors} errors reading `{}` (see above)",
            a.image.display()
        );
    }
    Ok(())
}

/// A closed stdout (`imgbuild ls … | head`) ends the listing quietly.
fn quiet_pipe(r: Result<()>) -> Result<()> {
    match r {
        Err(e)
            if e.chain().any(|c| {
                c.downcast_ref::<io::Error>()
                    .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
            }) =>
        {
            Ok(())
        }
        r => r,
    }
}

pub fn ls(a: LsArgs) -> Result<()> {
    quiet_pipe(ls_inner(a))
}

fn ls_inner(a: LsArgs) -> Result<()> {
    let img = open(&a.image, &a.open)?;
    let (fs, path) = location(&img, &a.path)?;
    let out = io::stdout();
    let mut out = BufWriter::new(out.lock());
    let top = fs.metadata(&path)?;
    if a.recursive {
        let mut rows = Vec::new();
        let walked = fs.walk(&path, |p, e, _| {
            rows.push((p.to_vec(), e.clone()));
            // Print as we go, in batches, so a big tree streams.
            if rows.len() >= 4096 {
                write_rows(&mut out, &rows).map_err(host_err)?;
                rows.clear();
            }
            Ok(true)
        });
        // What was found before an error is printed, then the error.
        write_rows(&mut out, &rows)?;
        out.flush()?;
        walked?;
    } else if top.kind == Kind::Dir {
        let entries = fs.read_dir(&path)?;
        let rows: Vec<(Vec<u8>, Entry)> =
            entries.into_iter().map(|e| (e.name.clone(), e)).collect();
        write_rows(&mut out, &rows)?;
    } else {
        write_rows(&mut out, &[(path.clone(), top)])?;
    }
    out.flush()?;
    Ok(())
}

fn host_err(e: io::Error) -> inspect::Error {
    inspect::Error::Host {
        path: "<stdout>".into(),
        source: e,
    }
}

pub fn cat(a: CatArgs) -> Result<()> {
    let img = open(&a.image, &a.open)?;
    let (fs, path) = location(&img, &a.path)?;
    let mut r = fs.open(&path)?;
    let out = io::stdout();
    let mut out = out.lock();
    let mut buf = vec![0u8; 256 << 10];
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            break;
        }
        match out.write_all(&buf[..n]) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(()),
            Err(e) => return Err(e).context("writing to stdout"),
        }
    }
    match out.flush() {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(e).context("writing to stdout"),
        _ => Ok(()),
    }
}

pub fn cp(a: CpArgs) -> Result<()> {
    let img = open(&a.image, &a.open)?;
    let (fs, path) = location(&img, &a.path)?;
    let s = inspect::copy_out(fs, &path, &a.dest)
        .with_context(|| format!("copying to `{}`", a.dest.display()))?;
    eprintln!(
        "copied {} files ({} bytes), {} directories, {} symlinks{}",
        s.files,
        s.bytes,
        s.dirs,
        s.symlinks,
        if s.skipped > 0 {
            format!("; skipped {} devices, fifos or sockets", s.skipped)
        } else {
            String::new()
        }
    );
    Ok(())
}

/// `ls -l` lines: mode, owner, group, size, mtime (UTC), name [-> target].
fn write_rows(out: &mut dyn Write, rows: &[(Vec<u8>, Entry)]) -> io::Result<()> {
    let w_uid = rows
        .iter()
        .map(|(_, e)| digits(u64::from(e.uid)))
        .max()
        .unwrap_or(1);
    let w_gid = rows
        .iter()
        .map(|(_, e)| digits(u64::from(e.gid)))
        .max()
        .unwrap_or(1);
    let w_size = rows.iter().map(|(_, e)| digits(e.size)).max().unwrap_or(1);
    for (name, e) in rows {
        write!(
            out,
            "{} {:>w_uid$} {:>w_gid$} {:>w_size$} {} ",
            e.mode_string(),
            e.uid,
            e.gid,
            e.size,
            date(e.mtime),
        )?;
        out.write_all(name)?;
        if let Some(t) = &e.target {
            out.write_all(b" -> ")?;
            out.write_all(t)?;
        }
        out.write_all(b"\n")?;
    }
    Ok(())
}

fn digits(n: u64) -> usize {
    n.to_string().len()
}

use imgbuild_units::{date_time as date, human_size as human};

fn write_report(out: &mut dyn Write, r: &Inspection) -> io::Result<()> {
    let comp = match r.compression {
        inspect::Compression::None => "raw".to_string(),
        inspect::Compression::Zstd => format!("zstd, {} compressed", human(r.file_size)),
    };
    writeln!(
        out,
        "image     {} ({comp}, disk {} = {} bytes)",
        r.image,
        human(r.disk_size),
        r.disk_size
    )?;
    let t = &r.table;
    let mut tl = format!("{}", t.kind);
    if let Some(id) = &t.disk_id {
        tl += &format!(", disk id {id}");
    }
    if let Some(n) = t.entries {
        tl += &format!(", {n} entries");
    }
    if let (Some(a), Some(b)) = (t.first_usable_lba, t.last_usable_lba) {
        tl += &format!(", usable LBA {a}..{b}");
    }
    if let Some(h) = t.header {
        tl += &format!(", {h} header");
    }
    if let Some(ok) = t.backup_ok {
        tl += if ok {
            ", backup header ok"
        } else {
            ", backup header MISSING"
        };
    }
    writeln!(out, "table     {tl}")?;
    writeln!(out)?;
    writeln!(out, "partitions")?;
    for p in &r.partitions {
        let q = &p.partition;
        let ty = match q.entry.type_name {
            Some(n) => format!("{} ({n})", q.entry.type_id),
            None => q.entry.type_id.clone(),
        };
        write!(
            out,
            "  {:>2}  start {} (LBA {}), size {} (LBA {}..{}), type {ty}",
            q.entry.number,
            q.entry.start,
            q.entry.first_lba,
            human(q.entry.size),
            q.entry.first_lba,
            q.entry.last_lba
        )?;
        if let Some(n) = &q.entry.name {
            write!(out, ", name {n:?}")?;
        }
        if !q.entry.flags.is_empty() {
            write!(out, ", flags {}", q.entry.flags.join(","))?;
        }
        writeln!(out)?;
        if let Some(g) = &q.entry.guid {
            writeln!(out, "      guid {g}")?;
        }
        if let Some(fs) = &p.filesystem {
            write!(out, "      {}", fs.summary.kind)?;
            if let Some(l) = &fs.summary.label {
                write!(out, " label {l:?}")?;
            }
            if let Some(u) = &fs.summary.uuid {
                write!(out, " uuid {u}")?;
            }
            if fs.summary.size > 0 {
                write!(
                    out,
                    ", {} ({} bytes), {} used ({:.0} %), {} blocks of {}",
                    human(fs.summary.size),
                    fs.summary.size,
                    human(fs.used),
                    100.0 * fs.used as f64 / fs.summary.size as f64,
                    fs.summary.size / fs.block_size.max(1),
                    fs.block_size
                )?;
            }
            if let (Some(i), Some(u)) = (fs.inodes, fs.inodes_used) {
                write!(out, ", {u}/{i} inodes")?;
            }
            writeln!(out)?;
            if !fs.features.is_empty() {
                writeln!(out, "      features {}", fs.features.join(" "))?;
            }
        }
        if let Some(e) = &p.error {
            writeln!(out, "      not readable: {e}")?;
        }
    }
    writeln!(out)?;
    write_boot(out, r)?;
    if let Some(n) = &r.nixos {
        writeln!(out)?;
        writeln!(out, "nixos (partition {})", n.partition)?;
        match (&n.toplevel, &n.toplevel_from) {
            (Some(t), Some(from)) => writeln!(out, "  toplevel    {t} (from the {from})")?,
            (Some(t), None) => writeln!(out, "  toplevel    {t}")?,
            _ => writeln!(
                out,
                "  toplevel    not found (no system profile, no init= in a boot entry)"
            )?,
        }
        if !n.profile.is_empty() {
            writeln!(out, "  profile     {}", n.profile.join(" -> "))?;
        }
        if !n.generations.is_empty() {
            let g: Vec<String> = n.generations.iter().map(u64::to_string).collect();
            writeln!(out, "  generations {}", g.join(" "))?;
        }
        if let Some(v) = &n.version {
            writeln!(out, "  version     {v}")?;
        }
        if let Some(s) = &n.system {
            writeln!(out, "  system      {s}")?;
        }
        if let Some(k) = &n.kernel_params {
            writeln!(out, "  params      {k}")?;
        }
        writeln!(
            out,
            "  /etc/NIXOS  {}",
            if n.etc_nixos { "present" } else { "absent" }
        )?;
        for reg in &n.registered {
            write!(
                out,
                "  registered  {} store paths in {}",
                reg.count, reg.source
            )?;
            match reg.toplevel_registered {
                Some(true) => write!(out, ", toplevel included")?,
                Some(false) => write!(out, ", toplevel NOT included")?,
                None => {}
            }
            if let Some(m) = reg.missing_from_store {
                write!(out, ", {m} missing from /nix/store")?;
            }
            writeln!(out)?;
        }
        if n.registered.is_empty() {
            writeln!(
                out,
                "  registered  no Nix database and no /nix-path-registration"
            )?;
        }
        if let Some(s) = &n.store {
            write!(
                out,
                "  /nix/store  {} store paths, mode {}",
                s.paths, s.mode
            )?;
            if let Some(u) = s.unregistered {
                write!(out, ", {u} unregistered")?;
            }
            if s.optimised {
                write!(out, ", optimised (.links)")?;
            }
            writeln!(out)?;
        }
    }
    if let Some(all) = &r.read_all {
        writeln!(out)?;
        writeln!(out, "read back")?;
        for p in all {
            writeln!(
                out,
                "  partition {}: {} directories, {} files ({}), {} symlinks, {} other, {} errors",
                p.partition,
                p.dirs,
                p.files,
                human(p.bytes),
                p.symlinks,
                p.other,
                p.errors.len()
            )?;
            for e in &p.errors {
                writeln!(out, "    - {e}")?;
            }
        }
    }
    if !r.warnings.is_empty() {
        writeln!(out)?;
        writeln!(out, "warnings")?;
        for w in &r.warnings {
            writeln!(out, "  - {w}")?;
        }
    }
    Ok(())
}

fn write_boot(out: &mut dyn Write, r: &Inspection) -> io::Result<()> {
    let b = &r.boot;
    if b.is_empty() {
        writeln!(
            out,
            "boot      nothing found (no systemd-boot, extlinux, GRUB or Raspberry Pi firmware)"
        )?;
        return Ok(());
    }
    writeln!(out, "boot")?;
    for s in &b.systemd_boot {
        writeln!(out, "  systemd-boot on partition {}", s.partition)?;
        for bin in &s.binaries {
            writeln!(
                out,
                "    {} ({}){}",
                bin.path,
                human(bin.size),
                bin.version
                    .as_deref()
                    .map(|v| format!(": {v}"))
                    .unwrap_or_default()
            )?;
        }
        if !s.loader_conf.is_empty() {
            let kv: Vec<String> = s
                .loader_conf
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            writeln!(out, "    loader.conf: {}", kv.join(", "))?;
        }
        for e in &s.entries {
            writeln!(
                out,
                "    {} {}: {}",
                if e.default { "*" } else { " " },
                e.file,
                e.title.as_deref().unwrap_or("(no title)")
            )?;
            if let Some(v) = &e.version {
                writeln!(out, "        version  {v}")?;
            }
            match (e.tries_left, e.tries_done) {
                (Some(left), done) => writeln!(
                    out,
                    "        tries    {left} left, {} done{}; id {}",
                    done.unwrap_or(0),
                    if left == 0 {
                        " (out of tries: bad)"
                    } else {
                        ""
                    },
                    e.id
                )?,
                (None, _) => writeln!(out, "        tries    none (no boot counting)")?,
            }
            if let Some(l) = &e.linux {
                writeln!(out, "        linux    {l}")?;
            }
            for i in &e.initrd {
                writeln!(out, "        initrd   {i}")?;
            }
            if let Some(o) = &e.options {
                writeln!(out, "        options  {o}")?;
            }
            if let Some(d) = &e.devicetree {
                writeln!(out, "        dtb      {d}")?;
            }
            if !e.missing.is_empty() {
                writeln!(out, "        MISSING  {}", e.missing.join(" "))?;
            }
        }
    }
    for x in &b.extlinux {
        write!(out, "  extlinux on partition {}: {}", x.partition, x.config)?;
        if let Some(d) = &x.default {
            write!(out, ", default {d}")?;
        }
        if let Some(t) = &x.timeout {
            write!(out, ", timeout {t}")?;
        }
        writeln!(out)?;
        for e in &x.entries {
            writeln!(
                out,
                "    {} {}{}",
                if e.default { "*" } else { " " },
                e.label,
                e.menu_label
                    .as_deref()
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default()
            )?;
            for (k, v) in [
                ("linux", &e.linux),
                ("initrd", &e.initrd),
                ("append", &e.append),
                ("fdtdir", &e.fdtdir),
                ("fdt", &e.fdt),
            ] {
                if let Some(v) = v {
                    writeln!(out, "        {k:<8} {v}")?;
                }
            }
            if !e.missing.is_empty() {
                writeln!(out, "        MISSING  {}", e.missing.join(" "))?;
            }
        }
    }
    for g in &b.grub {
        writeln!(out, "  GRUB on partition {}: {}", g.partition, g.config)?;
        for e in &g.entries {
            writeln!(out, "      {e}")?;
        }
    }
    for pi in &b.raspberry_pi {
        writeln!(
            out,
            "  Raspberry Pi firmware on partition {}: {} firmware files, {} dtbs{}",
            pi.partition,
            pi.firmware.len(),
            pi.dtbs,
            pi.armstub
                .as_deref()
                .map(|a| format!(", armstub {a}"))
                .unwrap_or_default()
        )?;
        for k in &pi.kernels {
            writeln!(
                out,
                "      [{}] kernel={}{}",
                k.section,
                k.file,
                if k.present { "" } else { " (MISSING)" }
            )?;
        }
    }
    Ok(())
}

fn sizes(a: &InspectArgs, img: &Image) -> Result<()> {
    let sizes = img
        .sizes()
        .with_context(|| format!("measuring `{}`", a.image.display()))?;
    if let Some(svg) = &a.svg {
        crate::treemap::write_svg(&sizes, svg)
            .with_context(|| format!("writing `{}`", svg.display()))?;
    }
    let out = io::stdout();
    let mut out = BufWriter::new(out.lock());
    if a.json {
        serde_json::to_writer_pretty(&mut out, &sizes)?;
        writeln!(out)?;
    } else {
        write_sizes(&mut out, &sizes)?;
    }
    Ok(out.flush()?)
}

fn write_sizes(out: &mut dyn Write, s: &inspect::Sizes) -> io::Result<()> {
    let h = imgbuild_units::human_size;
    writeln!(out, "image: {} (disk {})", s.image, h(s.disk_size))?;
    writeln!(
        out,
        "closure: {} store paths (from {}), {} on disk; {} of it in files several paths share, counted once",
        s.store_paths.len(),
        s.closure_from,
        h(s.closure_total),
        h(s.shared)
    )?;
    for w in &s.warnings {
        writeln!(out, "warning: {w}")?;
    }
    writeln!(out)?;
    writeln!(out, "{:>11} {:>11}  STORE PATH", "SIZE", "EXCLUSIVE")?;
    for p in &s.store_paths {
        writeln!(out, "{:>11} {:>11}  {}", h(p.bytes), h(p.exclusive), p.path)?;
    }
    for p in &s.partitions {
        writeln!(out)?;
        writeln!(
            out,
            "partition {} ({}{}): {}, used {}, free {}",
            p.number,
            p.kind,
            p.label
                .as_deref()
                .map(|l| format!(", {l}"))
                .unwrap_or_default(),
            h(p.size),
            h(p.used),
            h(p.free)
        )?;
        for c in &p.parts {
            writeln!(out, "{:>11}  {}", h(c.bytes), c.name)?;
        }
        if p.number != s.root_partition && !p.files.is_empty() {
            writeln!(out, "  files:")?;
            for f in &p.files {
                writeln!(out, "{:>11}  {}", h(f.bytes), f.name)?;
            }
        }
    }
    Ok(())
}

/// `imgbuild diff`: true when the images are identical (as compared).
pub fn diff(a: DiffArgs) -> Result<bool> {
    let old = open(&a.old, &a.open)?;
    let new = open(&a.new, &a.open)?;
    let d = inspect::diff(&old, &new)
        .with_context(|| format!("comparing `{}` with `{}`", a.old.display(), a.new.display()))?;
    let out = io::stdout();
    let mut out = BufWriter::new(out.lock());
    if a.json {
        serde_json::to_writer_pretty(&mut out, &d)?;
        writeln!(out)?;
    } else {
        quiet_pipe(write_diff(&mut out, &d, a.markdown).map_err(Into::into))?;
    }
    quiet_pipe(out.flush().map_err(Into::into))?;
    Ok(d.identical)
}

fn signed(n: i64) -> String {
    let s = imgbuild_units::human_size(n.unsigned_abs());
    if n < 0 {
        format!("-{s}")
    } else {
        format!("+{s}")
    }
}

fn write_diff(out: &mut dyn Write, d: &inspect::Diff, md: bool) -> io::Result<()> {
    let h = imgbuild_units::human_size;
    let cell = |s: &str| {
        if md {
            s.replace('|', "\\|")
        } else {
            s.to_string()
        }
    };
    if md {
        writeln!(out, "### `{}` → `{}`\n", d.old, d.new)?;
    } else {
        writeln!(out, "old: {}\nnew: {}", d.old, d.new)?;
    }
    if d.identical {
        writeln!(out, "identical")?;
        return Ok(());
    }
    if let Some(t) = &d.toplevel {
        let (o, n) = (
            t.old.as_deref().unwrap_or("-"),
            t.new.as_deref().unwrap_or("-"),
        );
        if md {
            writeln!(out, "toplevel: `{o}` → `{n}`\n")?;
        } else {
            writeln!(out, "toplevel: {o} -> {n}")?;
        }
    }
    let s = &d.store;
    writeln!(
        out,
        "store paths: {} -> {}, {} -> {} ({}); {} added, {} removed, {} changed{}",
        s.old_paths,
        s.new_paths,
        h(s.old_bytes),
        h(s.new_bytes),
        signed(s.delta),
        s.added.len(),
        s.removed.len(),
        s.changed.len(),
        if md { "\n" } else { "" }
    )?;
    let rows: Vec<(&str, &inspect::PathChange)> = s
        .added
        .iter()
        .map(|c| ("added", c))
        .chain(s.removed.iter().map(|c| ("removed", c)))
        .chain(s.changed.iter().map(|c| ("changed", c)))
        .collect();
    if !rows.is_empty() {
        if md {
            writeln!(
                out,
                "| | name | version | size | delta |\n|---|---|---|---:|---:|"
            )?;
        }
        for (what, c) in rows {
            let version = match (&c.old_version, &c.new_version) {
                (Some(o), Some(n)) => format!("{o} -> {n}"),
                _ if what == "changed" => "rebuilt".to_string(),
                _ => String::new(),
            };
            let size = match what {
                "added" => h(c.new_bytes),
                "removed" => h(c.old_bytes),
                _ => format!("{} -> {}", h(c.old_bytes), h(c.new_bytes)),
            };
            let mark = match what {
                "added" => "+",
                "removed" => "-",
                _ => "~",
            };
            if md {
                writeln!(
                    out,
                    "| {mark} | {} | {} | {size} | {} |",
                    cell(&c.name),
                    cell(&version),
                    signed(c.delta)
                )?;
            } else {
                writeln!(
                    out,
                    "  {mark} {:<40} {:<24} {:>24} {:>12}",
                    c.name,
                    version,
                    size,
                    signed(c.delta)
                )?;
            }
        }
    }
    for (title, facts) in [("boot", &d.boot), ("partitions", &d.partitions)] {
        if facts.is_empty() {
            continue;
        }
        writeln!(out)?;
        if md {
            writeln!(out, "**{title}**\n\n| what | old | new |\n|---|---|---|")?;
        } else {
            writeln!(out, "{title}:")?;
        }
        for f in facts {
            let (o, n) = (
                f.old.as_deref().unwrap_or("-"),
                f.new.as_deref().unwrap_or("-"),
            );
            if md {
                writeln!(out, "| {} | {} | {} |", cell(&f.what), cell(o), cell(n))?;
            } else {
                writeln!(out, "  {}: {o} -> {n}", f.what)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_sizes() {
        assert_eq!(date(0), "1970-01-01 00:00");
        assert_eq!(date(315_532_800), "1980-01-01 00:00");
        assert_eq!(date(1), "1970-01-01 00:00");
        assert_eq!(date(951_782_400 + 3661), "2000-02-29 01:01");
        assert_eq!(human(512), "512 B");
        assert_eq!(human(512 << 20), "512.0 MiB");
    }
}
