//! `imgbuild inspect | ls | cat | cp`: reading images (ours, nixpkgs', anyone's) without
//! trusting them. All the reading is `imgbuild_inspect`; this file parses arguments and
//! prints.

use std::ffi::OsString;
use std::io::{self, BufWriter, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use imgbuild_inspect::{self as inspect, Entry, Image, Kind, OpenOptions};

mod boot_text;
mod diff_text;
mod report;
mod sizes_text;

use diff_text::write_diff;
use report::write_report;
use sizes_text::write_sizes;

/// Options shared by the reading commands.
#[derive(Args, Debug)]
pub struct OpenArgs {
    /// Directory for temporary files (a decompressed .zst image is written there, sparse)
    #[arg(long, value_name = "DIR")]
    tmpdir: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// Image file (.img, .img.zst, .img.gz, or a container: .qcow2, .vhd, .vhdx, .vmdk, .ova, ...)
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
    /// Image file (.img, .img.zst, .img.gz, or a container: .qcow2, .vhd, .vhdx, .vmdk, .ova, ...)
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
    /// Image file (.img, .img.zst, .img.gz, or a container: .qcow2, .vhd, .vhdx, .vmdk, .ova, ...)
    image: PathBuf,
    /// [PART:]PATH of a file (symlinks are followed inside the filesystem)
    path: OsString,
    #[command(flatten)]
    open: OpenArgs,
}

#[derive(Args, Debug)]
pub struct CpArgs {
    /// Image file (.img, .img.zst, .img.gz, or a container: .qcow2, .vhd, .vhdx, .vmdk, .ova, ...)
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

use imgbuild_units::date_time as date;

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

#[cfg(test)]
mod tests {
    use super::*;
    use imgbuild_units::human_size as human;

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
