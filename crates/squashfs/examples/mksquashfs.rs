//! `cargo run --release -p imgbuild-squashfs --example mksquashfs -- SRC OUT [BLOCK] [LEVEL|none] [THREADS]`:
//! scans SRC (owners, modes, times kept) and writes OUT, printing the time taken and the
//! summary. For comparisons with `mksquashfs SRC OUT -comp zstd -noappend`.

use std::time::Instant;

use imgbuild_fstree::{Mtime, Owner, Perms, ScanOptions, Scanner};
use imgbuild_squashfs::{write, Compression, Options};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(src), Some(out)) = (args.get(1), args.get(2)) else {
        return Err("usage: mksquashfs SRC OUT [BLOCK] [LEVEL|none] [THREADS]".into());
    };
    let block_size = args.get(3).map_or(Ok(128 << 10), |b| b.parse())?;
    let compression = match args.get(4).map(String::as_str) {
        None => Compression::Zstd { level: 15 },
        Some("none") => Compression::None,
        Some(l) => Compression::Zstd { level: l.parse()? },
    };
    let threads = args.get(5).map_or(Ok(2), |t| t.parse())?;
    let start = Instant::now();
    let tree = Scanner::new(ScanOptions {
        owner: Owner::Preserve,
        perms: Perms::Preserve,
        mtime: Mtime::Host,
        hardlinks: true,
    })
    .scan(src.as_ref())?;
    let scanned = start.elapsed();
    let o = Options {
        block_size,
        compression,
        ..Options::default()
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()?;
    let f = std::fs::File::create(out)?;
    let s = pool.install(|| write(&tree, &o, f))?;
    println!(
        "{:.2}s (scan {:.2}s), {} bytes, {s:?}",
        start.elapsed().as_secs_f64(),
        scanned.as_secs_f64(),
        s.size
    );
    Ok(())
}
