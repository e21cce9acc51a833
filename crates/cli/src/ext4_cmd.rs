//! `imgbuild ext4 SRC_DIR -o OUT.img`: a bare ext4 filesystem image from a directory.

use anyhow::{bail, Context, Result};
use clap::Args;
use imgbuild_blockio::{OutputFile, Region};
use imgbuild_fstree::{Owner, Perms, ScanOptions, Scanner};
use imgbuild_plan::derive_id as uuid_from_seed;
use imgbuild_plan::format::parse_size;
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
    /// Filesystem UUID [default: derived from the label and the tree]
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
    /// Worker threads [default: all cores]
    #[arg(long, short = 'j')]
    threads: Option<usize>,
}

fn parse_uuid(s: &str) -> Result<[u8; 16]> {
    let hex: String = s.chars().filter(|&c| c != '-').collect();
    if hex.len() != 32 {
        bail!("`{s}` is not a UUID");
    }
    let mut out = [0u8; 16];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
            .with_context(|| format!("`{s}` is not a UUID"))?;
    }
    Ok(out)
}

pub fn run(a: Ext4Args, cancel: &AtomicBool) -> Result<()> {
    let epoch = std::env::var("SOURCE_DATE_EPOCH").ok();
    let mtime = match &epoch {
        Some(v) => Some(
            v.trim()
                .parse::<i64>()
                .with_context(|| format!("SOURCE_DATE_EPOCH=`{v}` is not a number"))?,
        ),
        None => None,
    };
    let mut scanner = Scanner::new(ScanOptions {
        owner: if a.preserve_owner {
            Owner::Preserve
        } else {
            Owner::Fixed(0, 0)
        },
        perms: Perms::Preserve,
        mtime,
        hardlinks: true,
    });
    let tree = scanner
        .scan(&a.src)
        .with_context(|| format!("reading `{}`", a.src.display()))?;
    // Ids derive from the label and the tree's shape and metadata, never from randomness.
    let mut seed = a.label.as_bytes().to_vec();
    for (path, id) in tree.walk() {
        seed.extend_from_slice(&path);
        seed.push(0);
        let n = tree.node(id);
        seed.extend_from_slice(format!("{:?}", n.meta).as_bytes());
        if let imgbuild_fstree::Kind::File(d) = &n.kind {
            seed.extend_from_slice(&d.size().to_le_bytes());
        }
    }
    let uuid = match &a.uuid {
        Some(u) => parse_uuid(u)?,
        None => uuid_from_seed(&seed, "ext4-uuid"),
    };
    let hash_seed = match &a.hash_seed {
        Some(u) => parse_uuid(u)?,
        None => uuid_from_seed(&seed, "ext4-hash-seed"),
    };
    let size = if a.size == "auto" {
        imgbuild_ext4::Size::Auto {
            extra_free: parse_size(&a.free).map_err(anyhow::Error::msg)?,
        }
    } else {
        imgbuild_ext4::Size::Exact(parse_size(&a.size).map_err(anyhow::Error::msg)?)
    };
    let opts = imgbuild_ext4::Options {
        label: a.label.clone(),
        uuid,
        hash_seed,
        timestamp: mtime.unwrap_or(imgbuild_plan::DEFAULT_EPOCH),
        size,
        ..Default::default()
    };
    let plan = imgbuild_ext4::plan(&tree, &opts)
        .with_context(|| format!("planning `{}`", a.output.display()))?;
    let out = OutputFile::create(&a.output, plan.size_bytes())
        .with_context(|| format!("creating `{}`", a.output.display()))?;
    let region = Region::new(out.file(), "ext4", 0, plan.size_bytes());
    let pool = rayon_pool(crate::threads(a.threads))?;
    pool.install(|| plan.write(&tree, &region, &imgbuild_blockio::NoProgress, cancel))
        .with_context(|| format!("writing `{}`", a.output.display()))?;
    let size = plan.size_bytes();
    out.persist()?;
    eprintln!("wrote {} ({size} bytes)", a.output.display());
    Ok(())
}

fn rayon_pool(n: usize) -> Result<rayon::ThreadPool> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build()
        .context("starting worker threads")
}
