//! Write an ext4 image of a host directory (a manual-testing aid; the real CLI is
//! `imgbuild ext4`).
//!
//! ```text
//! cargo run --release -p imgbuild-ext4 --example mkimg -- SRC OUT.img [SIZE_BYTES|auto] [FREE_BYTES]
//! ```

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::Instant;

use imgbuild_blockio as blockio;
use imgbuild_ext4 as ext4;
use imgbuild_fstree::{Mtime, Owner, Perms, ScanOptions, Scanner};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let src = PathBuf::from(&args[0]);
    let out = PathBuf::from(&args[1]);
    let free: u64 = args.get(3).map_or(0, |s| s.parse().unwrap());
    let size = match args.get(2).map(String::as_str) {
        None | Some("auto") => ext4::Size::Auto { extra_free: free },
        Some(n) => ext4::Size::Exact(n.parse().unwrap()),
    };
    let t = Instant::now();
    let tree = Scanner::new(ScanOptions {
        owner: Owner::Preserve,
        perms: Perms::Preserve,
        mtime: Mtime::Host,
        hardlinks: true,
    })
    .scan(&src)
    .unwrap();
    let opts = ext4::Options {
        uuid: [0x42; 16],
        hash_seed: [0x17; 16],
        timestamp: 1_700_000_000,
        size,
        ..Default::default()
    };
    let plan = ext4::plan(&tree, &opts).unwrap();
    let f = blockio::OutputFile::create(&out, plan.size_bytes()).unwrap();
    let map = plan.map(&tree).unwrap();
    imgbuild_diskmap::write_file(&map, f.file()).unwrap();
    f.persist().unwrap();
    let (inodes, used) = plan.inode_counts();
    eprintln!(
        "{}: {} bytes (min {}), {} free, {used}/{inodes} inodes, {:.3}s",
        out.display(),
        plan.size_bytes(),
        plan.min_size_bytes(),
        plan.free_bytes(),
        t.elapsed().as_secs_f64()
    );
}
