use super::*;
use crate::sinks::{Bmap, RawFile, Sha256Sink};
use imgbuild_blockio::{NoProgress, SourceError};
use proptest::prelude::*;
use sha2::{Digest, Sha256};
use std::sync::atomic::AtomicBool;

/// Collects what the stream hands out, checking order and contiguity.
#[derive(Default)]
struct Collect {
    bytes: Vec<u8>,
    pieces: usize,
}

impl Sink for Collect {
    fn name(&self) -> String {
        "collect".into()
    }
    fn piece(&mut self, p: &Piece<'_>) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        assert_eq!(
            p.offset,
            self.bytes.len() as u64,
            "pieces in order, no gaps"
        );
        match p.bytes() {
            Some(b) => {
                assert_eq!(b.len() as u64, p.len);
                self.bytes.extend_from_slice(b);
            }
            None => self.bytes.resize(self.bytes.len() + p.len as usize, 0),
        }
        self.pieces += 1;
        Ok(())
    }
}

fn run(map: &Map, readers: usize) -> (Vec<u8>, String, String) {
    let mut c = Collect::default();
    let mut h = Sha256Sink::new();
    let mut b = Bmap::new(map);
    stream(
        map,
        &mut [&mut c, &mut h, &mut b],
        &StreamOptions { readers },
        &NoProgress,
        &AtomicBool::new(false),
    )
    .unwrap();
    assert_eq!(c.bytes.len() as u64, map.len());
    (c.bytes, h.hex().unwrap(), b.xml().unwrap().to_string())
}

#[test]
fn builder_fills_gaps_and_refuses_overlaps() {
    let mut b = MapBuilder::new("t", 100);
    b.bytes(10, &b"abc"[..]).unwrap();
    b.bytes(50, &b"xyz"[..]).unwrap();
    let m = b.finish().unwrap();
    let kinds: Vec<(u64, u64, bool)> = m
        .extents()
        .iter()
        .map(|e| (e.offset, e.len, e.is_free()))
        .collect();
    assert_eq!(
        kinds,
        [
            (0, 10, true),
            (10, 3, false),
            (13, 37, true),
            (50, 3, false),
            (53, 47, true)
        ]
    );
    assert_eq!(m.mapped_bytes(), 6);

    let mut b = MapBuilder::new("t", 100);
    b.bytes(10, &b"abc"[..]).unwrap();
    b.bytes(12, &b"x"[..]).unwrap();
    let e = b.finish().unwrap_err();
    assert!(
        matches!(
            e,
            Error::Overlap {
                first: 10,
                second: 12,
                ..
            }
        ),
        "{e}"
    );

    let mut b = MapBuilder::new("esp", 100);
    let e = b.bytes(98, &b"abc"[..]).unwrap_err();
    assert!(e.to_string().contains("`esp`"), "{e}");
    assert!(MapBuilder::new("t", 10).place(5, Map::free(6)).is_err());
}

#[test]
fn mapped_zeros_are_mapped_and_free_space_is_not() {
    let mut b = MapBuilder::new("t", 10 * 4096);
    b.zeros(4096, 4096).unwrap();
    b.bytes(3 * 4096 + 10, &b"x"[..]).unwrap();
    let m = b.finish().unwrap();
    assert_eq!(m.mapped_blocks(4096), [(1, 1), (3, 3)]);
    assert_eq!(m.mapped_bytes(), 4097);
    let kinds: Vec<(bool, bool)> = m
        .extents()
        .iter()
        .map(|e| (e.is_free(), e.is_zeros()))
        .collect();
    assert_eq!(
        kinds,
        [
            (true, true),
            (false, true),
            (true, true),
            (false, false),
            (true, true)
        ]
    );
}

/// A host file with holes: its data ranges read it, its holes and nothing else are mapped zeros;
/// ranges out of order overlap (refused), an offset that would wrap is refused.
#[test]
fn file_ranges_map_data_as_file_and_holes_as_zeros() {
    let src = SourceFile::new("/nonexistent", 100);
    let mut b = MapBuilder::new("t", 1000);
    b.file_ranges(200, &src, &[(10, 20), (50, 5)]).unwrap();
    let m = b.finish().unwrap();
    let kinds: Vec<(u64, u64, &str, Option<u64>)> = m
        .extents()
        .iter()
        .map(|e| match &e.content {
            Content::Free => (e.offset, e.len, "free", None),
            Content::Zero => (e.offset, e.len, "zero", None),
            Content::Bytes { .. } => (e.offset, e.len, "bytes", None),
            Content::File { offset, .. } => (e.offset, e.len, "file", Some(*offset)),
        })
        .collect();
    assert_eq!(
        kinds,
        [
            (0, 200, "free", None),
            (200, 10, "zero", None),
            (210, 20, "file", Some(10)),
            (230, 20, "zero", None),
            (250, 5, "file", Some(50)),
            (255, 45, "zero", None),
            (300, 700, "free", None),
        ]
    );
    // No data at all: all zeros; a whole file: one extent.
    let mut b = MapBuilder::new("t", 100);
    b.file_ranges(0, &src, &[]).unwrap();
    assert_eq!(b.finish().unwrap().extents().len(), 1);
    let mut b = MapBuilder::new("t", 100);
    b.file_ranges(0, &src, &[(0, 100)]).unwrap();
    let m = b.finish().unwrap();
    assert!(matches!(m.extents(), [e] if matches!(e.content, Content::File { offset: 0, .. })));

    let mut b = MapBuilder::new("t", 1000);
    b.file_ranges(0, &src, &[(50, 10), (40, 20)]).unwrap();
    assert!(matches!(b.finish().unwrap_err(), Error::Overlap { .. }));
    let mut b = MapBuilder::new("t", 1000);
    let e = b.file_ranges(u64::MAX - 5, &src, &[(10, 1)]).unwrap_err();
    assert!(matches!(e, Error::OutOfBounds { .. }), "{e}");
}

#[test]
fn placed_maps_are_shifted() {
    let mut inner = MapBuilder::new("fs", 100);
    inner.bytes(0, &b"hello"[..]).unwrap();
    let mut outer = MapBuilder::new("disk", 1000);
    outer.place(512, inner.finish().unwrap()).unwrap();
    outer.bytes(0, &b"mbr"[..]).unwrap();
    let m = outer.finish().unwrap();
    let mut buf = [0u8; 5];
    m.read_at(512, &mut buf).unwrap();
    assert_eq!(&buf, b"hello");
    assert_eq!(m.mapped_blocks(4096), [(0, 0)]);
}

#[test]
fn a_source_that_changed_size_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("f");
    std::fs::write(&p, b"0123456789").unwrap();
    let mut b = MapBuilder::new("t", 4096);
    b.file(0, &SourceFile::new(&p, 11), 0, 11).unwrap();
    let m = b.finish().unwrap();
    let mut c = Collect::default();
    let e = stream(
        &m,
        &mut [&mut c],
        &StreamOptions::default(),
        &NoProgress,
        &AtomicBool::new(false),
    )
    .unwrap_err();
    assert!(
        matches!(&e, Error::Source(SourceError::Changed { planned: 11, found: 10, path }) if *path == p),
        "{e}"
    );
}

#[test]
fn cancel_stops_the_stream() {
    let m = Map::free(1 << 30);
    let mut h = Sha256Sink::new();
    let e = stream(
        &m,
        &mut [&mut h],
        &StreamOptions::default(),
        &NoProgress,
        &AtomicBool::new(true),
    )
    .unwrap_err();
    assert!(matches!(e, Error::Interrupted), "{e}");
    assert!(h.digest().is_none(), "not finished after an interruption");
}

/// A failing sink stops the stream with its own error.
#[test]
fn a_failing_sink_stops_the_stream() {
    struct Fail;
    impl Sink for Fail {
        fn name(&self) -> String {
            "writing out.img".into()
        }
        fn piece(&mut self, p: &Piece<'_>) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
            if p.offset > 100 << 20 {
                return Err(std::io::Error::from_raw_os_error(libc::ENOSPC).into());
            }
            Ok(())
        }
    }
    let m = Map::free(1 << 30);
    let mut h = Sha256Sink::new();
    let e = stream(
        &m,
        &mut [&mut h, &mut Fail],
        &StreamOptions::default(),
        &NoProgress,
        &AtomicBool::new(false),
    )
    .unwrap_err();
    assert!(e.to_string().contains("writing out.img"), "{e}");
    let io = std::error::Error::source(&e)
        .and_then(|s| s.downcast_ref::<std::io::Error>())
        .and_then(std::io::Error::raw_os_error);
    assert_eq!(io, Some(libc::ENOSPC));
}

/// Parses our bmap back: (image size, mapped count, ranges with sums), checking the file's
/// own checksum the way bmaptool does.
fn parse_bmap(x: &str) -> (u64, u64, Vec<(u64, u64, String)>) {
    let field = |tag: &str| -> String {
        let s = x.find(&format!("<{tag}>")).unwrap() + tag.len() + 2;
        let e = x[s..].find(&format!("</{tag}>")).unwrap() + s;
        x[s..e].trim().to_string()
    };
    let sum = field("BmapFileChecksum");
    let zeroed = x.replacen(&sum, &"0".repeat(64), 1);
    assert_eq!(hex(&Sha256::digest(zeroed.as_bytes())), sum);
    let mut ranges = Vec::new();
    for line in x.lines().filter(|l| l.contains("<Range ")) {
        let sum = line.split('"').nth(1).unwrap().to_string();
        let body = line
            .split('>')
            .nth(1)
            .unwrap()
            .split('<')
            .next()
            .unwrap()
            .trim();
        let (a, b) = match body.split_once('-') {
            Some((a, b)) => (a.parse().unwrap(), b.parse().unwrap()),
            None => (body.parse().unwrap(), body.parse().unwrap()),
        };
        ranges.push((a, b, sum));
    }
    (
        field("ImageSize").parse().unwrap(),
        field("MappedBlocksCount").parse().unwrap(),
        ranges,
    )
}

fn hex(b: &[u8]) -> String {
    crate::sinks::hex(b)
}

#[derive(Debug, Clone)]
enum Piece_ {
    Zero(u64),
    Free(u64),
    Bytes(Vec<u8>),
    File(usize, u64, u64),
}

fn arb_parts() -> impl Strategy<Value = Vec<Piece_>> {
    let part = prop_oneof![
        (1u64..300_000).prop_map(Piece_::Zero),
        (1u64..(8 << 20)).prop_map(Piece_::Free),
        proptest::collection::vec(any::<u8>(), 1..9000).prop_map(Piece_::Bytes),
        (0usize..3, 0u64..3_000_000, 1u64..3_000_000).prop_map(|(f, o, l)| Piece_::File(f, o, l)),
    ];
    proptest::collection::vec(part, 0..40)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, max_shrink_iters: 50, ..ProptestConfig::default() })]

    /// Random maps of zeros, memory and file ranges: the stream hands every byte over in
    /// order, whatever the reader count; the raw sink, SHA-256 and bmap agree with it.
    #[test]
    fn stream_delivers_the_map(parts in arb_parts(), tail in 0u64..10_000) {
        let dir = tempfile::tempdir().unwrap();
        let mut files = Vec::new();
        for k in 0..3u64 {
            let p = dir.path().join(format!("src{k}"));
            let data: Vec<u8> = (0..6_000_000u64).map(|i| (i * (k + 7) / 3) as u8).collect();
            std::fs::write(&p, &data).unwrap();
            files.push((SourceFile::new(&p, data.len() as u64), data));
        }
        let len: u64 = parts.iter().map(|p| match p {
            Piece_::Zero(n) | Piece_::Free(n) => *n,
            Piece_::Bytes(b) => b.len() as u64,
            Piece_::File(_, _, l) => *l,
        }).sum::<u64>() + tail;
        let mut b = MapBuilder::new("t", len);
        let mut want = vec![0u8; len as usize];
        let mut off = 0u64;
        for p in &parts {
            match p {
                Piece_::Free(n) => off += n,
                Piece_::Zero(n) => {
                    b.zeros(off, *n).unwrap();
                    off += n;
                }
                Piece_::Bytes(v) => {
                    b.bytes(off, v.clone()).unwrap();
                    want[off as usize..off as usize + v.len()].copy_from_slice(v);
                    off += v.len() as u64;
                }
                Piece_::File(f, o, l) => {
                    b.file(off, &files[*f].0, *o, *l).unwrap();
                    want[off as usize..(off + l) as usize].copy_from_slice(&files[*f].1[*o as usize..(o + l) as usize]);
                    off += l;
                }
            }
        }
        let m = b.finish().unwrap();
        let (got1, sha1, bmap1) = run(&m, 1);
        let (got3, sha3, bmap3) = run(&m, 3);
        prop_assert!(got1 == want);
        prop_assert!(got3 == want);
        prop_assert_eq!(&sha1, &hex(&Sha256::digest(&want)));
        prop_assert_eq!(&sha1, &sha3);
        prop_assert_eq!(&bmap1, &bmap3);

        // The bmap: every non-zero byte is in a mapped range; each range's sum is right.
        let (size, mapped, ranges) = parse_bmap(&bmap1);
        prop_assert_eq!(size, len);
        prop_assert_eq!(mapped, ranges.iter().map(|r| r.1 - r.0 + 1).sum::<u64>());
        let mut covered = vec![false; len.div_ceil(4096) as usize];
        for (a, z, sum) in &ranges {
            let s = (a * 4096) as usize;
            let e = (((z + 1) * 4096) as usize).min(want.len());
            prop_assert_eq!(sum, &hex(&Sha256::digest(&want[s..e])));
            for c in &mut covered[*a as usize..=*z as usize] { *c = true; }
        }
        for (i, chunk) in want.chunks(4096).enumerate() {
            if chunk.iter().any(|&x| x != 0) {
                prop_assert!(covered[i], "block {} has data but is not mapped", i);
            }
        }

        // The raw sink writes the same bytes into a sparse file.
        let out = tempfile::tempfile().unwrap();
        out.set_len(len).unwrap();
        let mut raw = RawFile::new(&out, len, "out");
        stream(&m, &mut [&mut raw], &StreamOptions { readers: 2 }, &NoProgress, &AtomicBool::new(false)).unwrap();
        let mut back = vec![0u8; len as usize];
        std::os::unix::fs::FileExt::read_exact_at(&out, &mut back, 0).unwrap();
        prop_assert!(back == want);
    }
}

/// A planned file replaced by a FIFO before streaming: an error at once, not a build blocked
/// on the FIFO's open (no writer ever comes).
#[test]
fn a_source_replaced_by_a_fifo_is_refused_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("f");
    std::fs::write(&p, b"0123456789").unwrap();
    let mut b = MapBuilder::new("t", 4096);
    b.file(0, &SourceFile::new(&p, 10), 0, 10).unwrap();
    let m = b.finish().unwrap();
    std::fs::remove_file(&p).unwrap();
    let c = std::ffi::CString::new(p.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut c = Collect::default();
        let r = stream(
            &m,
            &mut [&mut c],
            &StreamOptions::default(),
            &NoProgress,
            &AtomicBool::new(false),
        );
        tx.send(r.map(|_| ())).unwrap();
    });
    let e = rx
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("streaming blocked on the FIFO")
        .unwrap_err();
    assert!(
        matches!(&e, Error::Source(SourceError::NotRegular { found: "a FIFO", path }) if *path == p),
        "{e}"
    );
    assert_eq!(
        e.to_string(),
        format!(
            "`{}` is a FIFO, not a regular file: it changed since it was scanned",
            p.display()
        )
    );
}
