//! Memory stays bounded for a big sparse input. Alone in its own test binary (process), so
//! the peak RSS (VmHWM) it reads belongs to this test only.

#![allow(clippy::unwrap_used)]

use std::io;
use std::os::unix::fs::FileExt;
use std::sync::atomic::AtomicBool;

use imgbuild_compress::{compress_file, Options};

fn vm_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Discards the output but checks it decodes to the input, in a streaming way.
struct Sink {
    decoder: zstd::stream::write::Decoder<'static, Check>,
}

/// Compares the decompressed stream with the expected content (zeros, and 0xA5 inside the
/// islands) using slice equality (memcmp), so the check stays fast in a debug build.
struct Check {
    pos: u64,
    mismatch: Option<u64>,
}

const ISLAND_LEN: u64 = 1 << 20;
const ISLAND_STRIDE: u64 = 128 << 20;
const ISLAND_OFFSET: u64 = 4096;
static ZEROS: [u8; 1 << 16] = [0; 1 << 16];
static ISLAND: [u8; 1 << 16] = [0xA5; 1 << 16];

impl io::Write for Check {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut done = 0usize;
        while done < buf.len() {
            let pos = self.pos + done as u64;
            let within = pos % ISLAND_STRIDE;
            let (expected, run_end) =
                if (ISLAND_OFFSET..ISLAND_OFFSET + ISLAND_LEN).contains(&within) {
                    (&ISLAND, ISLAND_OFFSET + ISLAND_LEN - within)
                } else if within < ISLAND_OFFSET {
                    (&ZEROS, ISLAND_OFFSET - within)
                } else {
                    (&ZEROS, ISLAND_STRIDE - within)
                };
            let n = (buf.len() - done).min(run_end as usize).min(1 << 16);
            if self.mismatch.is_none() && buf[done..done + n] != expected[..n] {
                self.mismatch = Some(pos);
            }
            done += n;
        }
        self.pos += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl io::Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.decoder.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.decoder.flush()
    }
}

#[test]
fn one_gib_sparse_input_in_bounded_memory() {
    const GIB: u64 = 1 << 30;
    let named = tempfile::NamedTempFile::new().unwrap();
    let f = named.as_file();
    f.set_len(GIB).unwrap();
    // Some data islands in the holes: 1 MiB of 0xA5 every 128 MiB.
    let island = vec![0xA5u8; ISLAND_LEN as usize];
    for i in 0..GIB / ISLAND_STRIDE {
        f.write_all_at(&island, i * ISLAND_STRIDE + ISLAND_OFFSET)
            .unwrap();
    }
    let before = vm_kib("VmHWM:");
    let sink = Sink {
        decoder: zstd::stream::write::Decoder::new(Check {
            pos: 0,
            mismatch: None,
        })
        .unwrap(),
    };
    let (mut sink, summary) = compress_file(
        named.path(),
        GIB,
        sink,
        &Options {
            level: 3,
            workers: 2,
            checksum: true,
        },
        2,
        &imgbuild_blockio::NoProgress,
        &AtomicBool::new(false),
    )
    .unwrap();
    io::Write::flush(&mut sink.decoder).unwrap();
    let after = vm_kib("VmHWM:");
    let check = sink.decoder.into_inner();
    assert_eq!(check.pos, GIB);
    assert_eq!(check.mismatch, None, "decompressed data differs");
    assert!(summary.output_bytes < 1 << 20, "{summary:?}");
    let grown_mib = (after - before) / 1024;
    eprintln!("peak RSS {before} KiB -> {after} KiB (+{grown_mib} MiB) for a 1 GiB input");
    // A whole-file buffer would be 1024 MiB; zstdmt's job buffers are a few tens of MiB.
    assert!(grown_mib < 192, "peak RSS grew by {grown_mib} MiB");
}
