//! `imgbuild flash IMAGE DEVICE`: an image onto a disk, through its bmap, verified.

use anyhow::{Context, Result};
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct FlashArgs {
    /// The image: raw (`nixos.img`) or zstd-compressed (`nixos.img.zst`)
    image: PathBuf,
    /// The whole disk to write (`/dev/sdX`, `/dev/mmcblk0`), or a regular file
    device: PathBuf,
    /// The block map [default: IMAGE.bmap, or X.bmap for X.zst, when it exists]
    #[arg(long, value_name = "FILE", conflicts_with = "no_bmap")]
    bmap: Option<PathBuf>,
    /// Write every byte of the image, even with a bmap beside it
    #[arg(long)]
    no_bmap: bool,
    /// Do not read the written ranges back to check them
    #[arg(long)]
    no_verify: bool,
    /// Print what was done as JSON
    #[arg(long)]
    json: bool,
}

/// `imgbuild flash IMAGE DEVICE`.
pub fn run(a: FlashArgs) -> Result<()> {
    let bmap_path = match (&a.bmap, a.no_bmap) {
        (_, true) => None,
        (Some(p), false) => Some(p.clone()),
        (None, false) => imgbuild_flash::find_bmap(&a.image),
    };
    let bmap = match &bmap_path {
        Some(p) => Some(imgbuild_flash::read_bmap(p)?),
        None => None,
    };
    let progress = crate::progress::Bars::new(a.json);
    let r = imgbuild_flash::flash(
        &a.image,
        bmap_path.as_deref().zip(bmap.as_ref()),
        &a.device,
        !a.no_verify,
        &progress,
        &crate::CANCEL,
    )
    .with_context(|| {
        format!(
            "flashing `{}` onto `{}`",
            a.image.display(),
            a.device.display()
        )
    })?;
    progress.finish();
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "image": a.image,
                "device": a.device,
                "image_size": r.image_size,
                "written": r.written,
                "ranges": r.ranges,
                "bmap": r.bmap,
                "verified": r.verified,
            }))?
        );
    } else {
        eprintln!(
            "wrote {} onto {}: {} of {} bytes in {} range{} ({}){}",
            a.image.display(),
            a.device.display(),
            r.written,
            r.image_size,
            r.ranges,
            if r.ranges == 1 { "" } else { "s" },
            match &r.bmap {
                Some(b) => format!("bmap {}", b.display()),
                None => "no bmap: every byte".into(),
            },
            if r.verified { ", verified" } else { "" }
        );
    }
    Ok(())
}
