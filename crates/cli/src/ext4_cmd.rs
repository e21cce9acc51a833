//! `imgbuild ext4 SRC_DIR -o OUT.img`: a bare ext4 filesystem image from a directory.

use anyhow::{Context, Result};
use clap::Args;
use imgbuild_plan::format::parse_size;
use imgbuild_plan::{ext4_image, Ext4ImageOptions, Ext4Size};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

#[derive(Args, Debug)]
pub struct Ext4Args {
    /// Directory whose contents become the filesystem
    src: PathBuf,
    /// Output image
    #[arg(short, long)]
    output: PathBuf,
    /// Volume label (at most 16 bytes)
    #[arg(long, default_value = "")]
    label: String,
    /// Filesystem UUID [default: derived from the label and the tree's names, metadata and sizes]
    #[arg(long)]
    uuid: Option<String>,
    /// Directory hash seed (a UUID) [default: derived from the label and the tree]
    #[arg(long)]
    hash_seed: Option<String>,
    /// `auto` (the exact minimum plus --free) or a size like 1GiB
    #[arg(long, default_value = "auto")]
    size: String,
    /// Free space to leave with --size auto
    #[arg(long, default_value = "0")]
    free: String,
    /// Keep the source uid/gid instead of root:root
    #[arg(long)]
    preserve_owner: bool,
    /// Keep the source mtimes instead of clamping them to SOURCE_DATE_EPOCH (default
    /// 1980-01-01), which makes the image independent of when files were touched
    #[arg(long)]
    preserve_times: bool,
    /// Worker threads [default: all cores]
    #[arg(long, short = 'j')]
    threads: Option<usize>,
}

/// A UUID as typed (`0123abcd-...`, or its 32 hex digits), in its text's byte order.
fn parse_uuid(s: &str) -> Result<[u8; 16]> {
    let u = uuid::Uuid::try_parse(s).with_context(|| format!("`{s}` is not a UUID"))?;
    Ok(u.into_bytes())
}

pub fn run(a: Ext4Args, cancel: &AtomicBool) -> Result<()> {
    let size = if a.size == "auto" {
        Ext4Size::Auto {
            extra_free: parse_size(&a.free).map_err(anyhow::Error::msg)?,
        }
    } else {
        Ext4Size::Exact(parse_size(&a.size).map_err(anyhow::Error::msg)?)
    };
    let opts = Ext4ImageOptions {
        output: a.output.clone(),
        label: a.label.clone(),
        uuid: a.uuid.as_deref().map(parse_uuid).transpose()?,
        hash_seed: a.hash_seed.as_deref().map(parse_uuid).transpose()?,
        size,
        preserve_owner: a.preserve_owner,
        preserve_times: a.preserve_times,
        epoch: crate::epoch()?,
        threads: a.threads,
    };
    let progress = crate::progress::Bars::new(false);
    let img = ext4_image(&a.src, &opts, &progress, cancel)
        .with_context(|| format!("building `{}`", a.output.display()))?;
    progress.finish();
    eprintln!(
        "wrote {} ({} bytes, UUID {}, sha256 {})",
        img.path.display(),
        img.size,
        img.uuid,
        img.sha256
    );
    Ok(())
}
