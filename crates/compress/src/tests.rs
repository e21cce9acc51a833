use super::*;
use imgbuild_blockio::{Counter, NoProgress, SourceError};
use std::sync::atomic::Ordering;

/// Compressible but not trivial data: words picked by an xorshift generator.
pub(crate) fn sample(len: usize, seed: u64) -> Vec<u8> {
    const WORDS: [&[u8]; 8] = [
        b"nix ",
        b"store ",
        b"ext4 ",
        b"zstd\n",
        b"boot ",
        b"image ",
        b"0123456789 ",
        b"x",
    ];
    let mut s = seed | 1;
    let mut out = Vec::with_capacity(len + 16);
    while out.len() < len {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        out.extend_from_slice(WORDS[(s % 8) as usize]);
        if s.is_multiple_of(97) {
            out.extend_from_slice(&s.to_le_bytes());
        }
    }
    out.truncate(len);
    out
}

const CHUNK: usize = 4 << 20;

fn file_with(data: &[u8]) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(data).unwrap();
    f
}

fn compress(
    src: &tempfile::NamedTempFile,
    len: u64,
    out: &mut Vec<u8>,
    opts: &Options,
    progress: &dyn Progress,
    cancel: &AtomicBool,
) -> Result<Summary> {
    let (w, s) = compress_file(src.path(), len, Vec::new(), opts, 2, progress, cancel)?;
    *out = w;
    Ok(s)
}

fn run(src: &tempfile::NamedTempFile, len: u64, opts: &Options) -> Vec<u8> {
    let mut out = Vec::new();
    let s = compress(
        src,
        len,
        &mut out,
        opts,
        &NoProgress,
        &AtomicBool::new(false),
    )
    .unwrap();
    assert_eq!(s.input_bytes, len);
    assert_eq!(s.output_bytes, out.len() as u64);
    out
}

#[test]
fn round_trips_and_records_size_and_checksum() {
    let data = sample(3 * CHUNK + 12345, 7);
    let src = file_with(&data);
    let z = run(&src, data.len() as u64, &Options::default());
    assert!(
        z.len() < data.len() / 3,
        "compressed {} -> {}",
        data.len(),
        z.len()
    );
    assert_eq!(zstd::decode_all(&z[..]).unwrap(), data);

    // Frame header: magic, then the descriptor: content checksum flag (bit 2) set,
    // frame content size present (bits 7-6 != 0), no dictionary id.
    assert_eq!(&z[..4], &[0x28, 0xB5, 0x2F, 0xFD]);
    let fhd = z[4];
    assert_ne!(fhd & 0b100, 0, "checksum flag");
    assert_ne!(fhd >> 6, 0, "content size flag");
    assert_eq!(fhd & 0b11, 0, "dictionary id flag");
    assert_eq!(
        zstd::zstd_safe::get_frame_content_size(&z).unwrap(),
        Some(data.len() as u64)
    );

    let plain = run(
        &src,
        data.len() as u64,
        &Options {
            checksum: false,
            ..Options::default()
        },
    );
    assert_eq!(plain[4] & 0b100, 0, "no checksum flag");
    assert_eq!(zstd::decode_all(&plain[..]).unwrap(), data);
}

#[test]
fn same_bytes_for_any_worker_count() {
    // Several zstdmt jobs worth of input (level 3 jobs are a few MiB).
    let data = sample(40 << 20, 11);
    let src = file_with(&data);
    let len = data.len() as u64;
    let with = |workers| {
        run(
            &src,
            len,
            &Options {
                workers,
                ..Options::default()
            },
        )
    };
    let one = with(1);
    assert_eq!(with(2), one);
    assert_eq!(with(4), one);
    // 0 is clamped to 1 (libzstd's single-threaded mode would encode differently).
    assert_eq!(with(0), one);
    assert_eq!(zstd::decode_all(&one[..]).unwrap(), data);
}

#[test]
fn compresses_a_prefix_and_empty_input() {
    let data = sample(100_000, 3);
    let src = file_with(&data);
    let z = run(&src, 4096, &Options::default());
    assert_eq!(zstd::decode_all(&z[..]).unwrap(), &data[..4096]);
    let z = run(&src, 0, &Options::default());
    assert!(zstd::decode_all(&z[..]).unwrap().is_empty());
    assert_eq!(
        zstd::zstd_safe::get_frame_content_size(&z).unwrap(),
        Some(0)
    );
}

#[test]
fn progress_counts_every_input_byte() {
    let data = sample(2 * CHUNK + 5, 5);
    let src = file_with(&data);
    let seen = Counter::default();
    let mut out = Vec::new();
    compress(
        &src,
        data.len() as u64,
        &mut out,
        &Options::default(),
        &seen,
        &AtomicBool::new(false),
    )
    .unwrap();
    assert_eq!(seen.0.load(Ordering::Relaxed), data.len() as u64);
}

#[test]
fn short_source_and_cancellation_are_errors() {
    let data = sample(10_000, 9);
    let src = file_with(&data);
    let mut out = Vec::new();
    let never = AtomicBool::new(false);
    match compress(
        &src,
        20_000,
        &mut out,
        &Options::default(),
        &NoProgress,
        &never,
    ) {
        Err(Error::Stream(diskmap::Error::Source(SourceError::Changed {
            planned: 20_000,
            found: 10_000,
            ..
        }))) => {}
        other => panic!("{other:?}"),
    }

    let big = sample(3 * CHUNK, 1);
    let src = file_with(&big);
    let cancel = AtomicBool::new(true);
    let mut out = Vec::new();
    match compress(
        &src,
        big.len() as u64,
        &mut out,
        &Options::default(),
        &NoProgress,
        &cancel,
    ) {
        Err(Error::Stream(diskmap::Error::Interrupted)) => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn write_errors_are_reported() {
    struct Full;
    impl Write for Full {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::new(io::ErrorKind::StorageFull, "disk full"))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let data = sample(CHUNK + 1, 2);
    let src = file_with(&data);
    let r = compress_file(
        src.path(),
        data.len() as u64,
        Full,
        &Options::default(),
        2,
        &NoProgress,
        &AtomicBool::new(false),
    );
    let Err(Error::Stream(diskmap::Error::Sink { source, .. })) = r else {
        panic!("{:?}", r.map(|r| r.1));
    };
    assert!(
        matches!(source.downcast_ref::<Error>(), Some(Error::Write { .. })),
        "{source}"
    );
}

#[test]
fn single_threaded_libzstd_mode_differs_which_is_why_workers_are_clamped() {
    let data = sample(40 << 20, 11);
    let src = file_with(&data);
    let ours = run(&src, data.len() as u64, &Options::default());
    let mut st = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
    st.multithread(0).unwrap();
    st.include_checksum(true).unwrap();
    st.set_pledged_src_size(Some(data.len() as u64)).unwrap();
    st.write_all(&data).unwrap();
    let st = st.finish().unwrap();
    assert_ne!(st, ours);
    assert_eq!(zstd::decode_all(&st[..]).unwrap(), data);
}

fn gzip(data: &[u8], workers: usize) -> Vec<u8> {
    use std::io::Write;
    let mut g = crate::Gzip::new(Vec::new(), 6, workers).unwrap();
    // Odd write sizes: chunking must not depend on them.
    for part in data.chunks(77_777) {
        g.write_all(part).unwrap();
    }
    g.finish().unwrap()
}

#[test]
fn gzip_round_trips_and_ignores_worker_count() {
    use std::io::Read;
    let mut data = Vec::new();
    let mut x = 1u64;
    for i in 0..(5 << 20) {
        x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        data.push(if i % 3 == 0 {
            (x >> 60) as u8
        } else {
            b'a' + (i % 7) as u8
        });
    }
    let one = gzip(&data, 1);
    assert_eq!(one, gzip(&data, 3));
    assert!(one.len() < data.len() / 2);
    let mut back = Vec::new();
    flate2::read::MultiGzDecoder::new(&one[..])
        .read_to_end(&mut back)
        .unwrap();
    assert!(back == data);
    // The empty input is a valid gzip member too.
    let mut back = Vec::new();
    flate2::read::GzDecoder::new(&gzip(&[], 2)[..])
        .read_to_end(&mut back)
        .unwrap();
    assert!(back.is_empty());
    // And gzip(1) agrees, when installed.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x.gz");
    std::fs::write(&p, &one).unwrap();
    if let Ok(out) = std::process::Command::new("gzip")
        .arg("-t")
        .arg(&p)
        .output()
    {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// `data` through an [`Xz`] sink on `threads` threads, as a map of bytes and zeros.
fn xz(data: &[u8], zeros: u64, level: u32, threads: u32) -> Vec<u8> {
    let len = data.len() as u64 + zeros;
    let mut b = MapBuilder::new("xz test", len);
    if !data.is_empty() {
        b.bytes(0, data.to_vec()).unwrap();
    }
    if zeros > 0 {
        b.zeros(data.len() as u64, zeros).unwrap();
    }
    let map = b.finish().unwrap();
    let mut x = Xz::new(Vec::new(), level, threads).unwrap();
    diskmap::stream(
        &map,
        &mut [&mut x],
        &StreamOptions { readers: 2 },
        &NoProgress,
        &AtomicBool::new(false),
    )
    .unwrap();
    let (out, summary) = x.into_inner().unwrap();
    assert_eq!(summary.input_bytes, len);
    assert_eq!(summary.output_bytes, out.len() as u64);
    out
}

#[test]
fn xz_is_the_same_for_any_thread_count_and_round_trips() {
    use std::io::Read;
    // Level 0: 1 MiB blocks, so 5 MiB of input is several blocks compressed in parallel.
    let data = sample(5 << 20, 7);
    let one = xz(&data, 3 << 20, 0, 1);
    assert_eq!(xz::block_size(0), 1 << 20);
    for threads in [2, 4] {
        assert!(one == xz(&data, 3 << 20, 0, threads), "{threads} threads");
    }
    let mut back = Vec::new();
    liblzma::read::XzDecoder::new(&one[..])
        .read_to_end(&mut back)
        .unwrap();
    assert_eq!(back.len(), (8 << 20) as usize);
    assert!(back[..data.len()] == data[..]);
    assert!(back[data.len()..].iter().all(|&b| b == 0));
    // Another level is another encoding; an impossible one is refused.
    assert!(one != xz(&data, 3 << 20, 1, 2));
    let e = Xz::new(Vec::new(), 10, 1)
        .err()
        .expect("level 10 is refused");
    assert!(e.to_string().contains("xz preset"), "{e}");
    // xz(1) agrees, when installed.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x.xz");
    std::fs::write(&p, &one).unwrap();
    if let Ok(out) = std::process::Command::new("xz").arg("-t").arg(&p).output() {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The empty input is a valid stream.
    let mut back = Vec::new();
    liblzma::read::XzDecoder::new(&xz(&[], 0, 6, 2)[..])
        .read_to_end(&mut back)
        .unwrap();
    assert!(back.is_empty());
}

/// The blocks of a zstd frame: (type, content size) of each, walked from the frame header
/// (RFC 8878, 3.1.1).
fn zstd_blocks(frame: &[u8]) -> Vec<(u8, usize)> {
    assert_eq!(frame[..4], [0x28, 0xb5, 0x2f, 0xfd]);
    let fhd = frame[4];
    let single = fhd & 0x20 != 0;
    let dict = [0, 1, 2, 4][usize::from(fhd & 3)];
    let fcs = match fhd >> 6 {
        0 => usize::from(single),
        1 => 2,
        2 => 4,
        _ => 8,
    };
    let mut at = 5 + usize::from(!single) + dict + fcs;
    let mut blocks = Vec::new();
    loop {
        let h = u32::from_le_bytes([frame[at], frame[at + 1], frame[at + 2], 0]);
        let (last, kind, size) = (h & 1 != 0, ((h >> 1) & 3) as u8, (h >> 3) as usize);
        blocks.push((kind, size));
        at += 3 + if kind == 1 { 1 } else { size };
        if last {
            break;
        }
    }
    let checksum = if fhd & 4 != 0 { 4 } else { 0 };
    assert_eq!(
        at + checksum,
        frame.len(),
        "the frame ends after its last block"
    );
    blocks
}

#[test]
fn a_frame_of_whole_jobs_ends_in_its_last_job_every_time() {
    // 64 MiB: eight level-3 jobs of 8 MiB exactly. libzstd's multithreaded encoder used to
    // end such a frame with an extra empty block when the last job had been handed out
    // before the end (timing-dependent); the sink gives the last byte with the end.
    let data = sample(64 << 20, 5);
    let src = file_with(&data);
    let len = data.len() as u64;
    let opts = Options {
        workers: 2,
        ..Options::default()
    };
    let first = run(&src, len, &opts);
    let blocks = zstd_blocks(&first);
    assert_ne!(blocks.last(), Some(&(0, 0)), "no empty last block");
    for _ in 0..4 {
        assert_eq!(run(&src, len, &opts), first);
    }
    assert_eq!(zstd::decode_all(&first[..]).unwrap(), data);
}
