//! Compress a file with imgbuild's compressor, the same sink `imgbuild` feeds for a `.zst`
//! image, so that it can be timed against the `zstd` CLI (`cargo xtask bench zstd`).
//!
//! ```text
//! cargo run --release -p imgbuild-compress --example compress -- IN OUT [LEVEL] [WORKERS]
//! ```
//! LEVEL defaults to 3, WORKERS to the number of CPUs (like `zstd -T0`). OUT is written
//! through a 1 MiB buffer and not fsynced (neither does `zstd`). Prints the input and output
//! sizes on stderr.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [input, output, rest @ ..] = args.as_slice() else {
        return Err("usage: compress IN OUT [LEVEL] [WORKERS]".into());
    };
    let level = match rest.first() {
        Some(l) => l.parse()?,
        None => 3,
    };
    let workers = match rest.get(1) {
        Some(w) => w.parse()?,
        None => std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
    };
    let len = std::fs::metadata(input)
        .map_err(|e| format!("{input}: {e}"))?
        .len();
    let dst = File::create(output).map_err(|e| format!("{output}: {e}"))?;
    let w = BufWriter::with_capacity(1 << 20, dst);
    let opts = imgbuild_compress::Options {
        level,
        workers,
        checksum: true,
    };
    let (mut w, s) = imgbuild_compress::compress_file(
        std::path::Path::new(input),
        len,
        w,
        &opts,
        2,
        &imgbuild_blockio::NoProgress,
        &AtomicBool::new(false),
    )?;
    w.flush()?;
    eprintln!(
        "{input}: {} -> {} bytes ({:.2}%)",
        s.input_bytes,
        s.output_bytes,
        100.0 * s.output_bytes as f64 / s.input_bytes.max(1) as f64
    );
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("compress: {e}");
            ExitCode::FAILURE
        }
    }
}
