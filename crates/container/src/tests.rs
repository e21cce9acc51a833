//! Every container read back (by a reader written here from the specifications, and by
//! `qemu-img`/GNU tar when installed) gives the disk's bytes, for maps of data, zeros and
//! free space at awkward offsets; and the same map gives the same container bytes.

use std::process::Command;
use std::sync::atomic::AtomicBool;

use imgbuild_diskmap::{Map, MapBuilder, Sink, StreamOptions};

use super::*;

/// A disk of `len` bytes with random data and zero extents between free space.
fn random_map(seed: u64, len: u64) -> Map {
    let mut r = imgbuild_testutil::Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut b = MapBuilder::new("test", len);
    let mut at = 0;
    while at < len {
        let gap = r.next_u64() % (3 << 20) / 512 * 512;
        at += gap;
        if at >= len {
            break;
        }
        let n = (1 + r.next_u64() % 300_000).min(len - at);
        if r.next_u64().is_multiple_of(4) {
            b.zeros(at, n).unwrap();
        } else {
            let mut data = imgbuild_testutil::noise(r.next_u64(), to_usize(n));
            // No zero bytes: every stored block then holds data.
            data.iter_mut().for_each(|x| *x |= 1);
            b.bytes(at, data).unwrap();
        }
        at += n;
    }
    b.finish().unwrap()
}

fn raw(map: &Map) -> Vec<u8> {
    let f = tempfile::tempfile().unwrap();
    f.set_len(map.len()).unwrap();
    imgbuild_diskmap::write_file(map, &f).unwrap();
    let mut v = vec![0; to_usize(map.len())];
    std::os::unix::fs::FileExt::read_exact_at(&f, &mut v, 0).unwrap();
    v
}

fn stream(map: &Map, sink: &mut dyn Sink) {
    imgbuild_diskmap::stream(
        map,
        &mut [sink],
        &StreamOptions { readers: 2 },
        &imgbuild_blockio::NoProgress,
        &AtomicBool::new(false),
    )
    .unwrap();
}

fn params(map: &Map) -> Params {
    Params {
        disk_size: map.len(),
        id: [0x42; 16],
        time: 1_700_000_000,
    }
}

fn qcow2(map: &Map) -> Vec<u8> {
    let mut q = Qcow2::new(map, &params(map), Vec::new()).unwrap();
    stream(map, &mut q);
    q.into_inner()
}

fn vhd(map: &Map) -> Vec<u8> {
    let mut v = Vhd::new(map, &params(map), Vec::new()).unwrap();
    stream(map, &mut v);
    v.into_inner()
}

fn tar(map: &Map) -> Vec<u8> {
    let mut t = GceTar::new(map, &params(map), Vec::new()).unwrap();
    stream(map, &mut t);
    t.into_inner()
}

fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().unwrap())
}
fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}

/// qcow2 read back from the specification: header, L1, L2, data; and every cluster of the
/// file referenced exactly once by the refcounts.
fn read_qcow2(q: &[u8]) -> Vec<u8> {
    assert_eq!(&q[..4], b"QFI\xfb");
    assert_eq!(be32(q, 4), 3);
    let c = 1usize << be32(q, 20);
    let size = to_usize(be64(q, 24));
    let l1_size = be32(q, 36) as usize;
    let l1 = to_usize(be64(q, 40));
    assert_eq!(q.len() % c, 0);
    let mut disk = vec![0u8; size];
    for i in 0..l1_size {
        let e = be64(q, l1 + i * 8);
        if e == 0 {
            continue;
        }
        assert_ne!(e & (1 << 63), 0, "OFLAG_COPIED on L1 entries");
        let l2 = to_usize(e & !(1 << 63));
        for j in 0..c / 8 {
            let d = be64(q, l2 + j * 8);
            if d == 0 {
                continue;
            }
            let at = (i * c / 8 + j) * c;
            let data = to_usize(d & !(1 << 63));
            let n = c.min(size - at);
            disk[at..at + n].copy_from_slice(&q[data..data + n]);
        }
    }
    // Refcounts: 16-bit, 1 for every cluster of the file, 0 beyond.
    assert_eq!(be32(q, 96), 4);
    let rt = to_usize(be64(q, 48));
    let per_block = c / 2;
    for cl in 0..q.len() / c + per_block {
        let block = be64(q, rt + cl / per_block * 8);
        let count = if block == 0 {
            0
        } else {
            let at = to_usize(block) + cl % per_block * 2;
            u16::from_be_bytes([q[at], q[at + 1]])
        };
        assert_eq!(
            count,
            u16::from(cl < q.len() / c),
            "refcount of cluster {cl}"
        );
    }
    disk
}

/// A dynamic VHD read back: footer, dynamic header, BAT, blocks.
fn read_vhd(v: &[u8]) -> Vec<u8> {
    let footer = &v[v.len() - 512..];
    assert_eq!(&v[..512], footer, "the footer copy at the start");
    assert_eq!(&footer[..8], b"conectix");
    assert_eq!(be32(footer, 60), 3);
    let size = to_usize(be64(footer, 48));
    let dyn_at = to_usize(be64(footer, 16));
    assert_eq!(&v[dyn_at..dyn_at + 8], b"cxsparse");
    let bat = to_usize(be64(v, dyn_at + 16));
    let entries = be32(v, dyn_at + 28) as usize;
    let block = be32(v, dyn_at + 32) as usize;
    let mut disk = vec![0u8; size];
    for i in 0..entries {
        let e = be32(v, bat + i * 4);
        if e == u32::MAX {
            continue;
        }
        let data = e as usize * 512 + 512;
        assert!(v[data - 512..data].iter().all(|&b| b == 0xFF));
        let at = i * block;
        let n = block.min(size - at);
        disk[at..at + n].copy_from_slice(&v[data..data + n]);
    }
    disk
}

fn octal_or_256(f: &[u8]) -> u64 {
    if f[0] & 0x80 != 0 {
        return u64::from_be_bytes(f[f.len() - 8..].try_into().unwrap());
    }
    let s = std::str::from_utf8(f)
        .unwrap()
        .trim_end_matches(['\0', ' ']);
    u64::from_str_radix(s, 8).unwrap()
}

/// The old GNU sparse tar read back: the member's sparse map and its data regions.
fn read_tar(t: &[u8]) -> Vec<u8> {
    assert_eq!(t.len() % 10240, 0);
    let h = &t[..512];
    assert_eq!(&h[..9], b"disk.raw\0");
    assert_eq!(h[156], b'S');
    assert_eq!(&h[257..265], b"ustar  \0");
    let mut sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    sum -= h[148..156].iter().map(|&b| u32::from(b)).sum::<u32>();
    sum += 8 * u32::from(b' ');
    assert_eq!(u64::from(sum), octal_or_256(&h[148..155]));
    let real = to_usize(octal_or_256(&h[483..495]));
    let stored = to_usize(octal_or_256(&h[124..136]));
    let mut regions = Vec::new();
    let mut entry = |b: &[u8]| {
        if b[0] != 0 {
            regions.push((octal_or_256(&b[..12]), octal_or_256(&b[12..24])));
        }
    };
    for i in 0..4 {
        entry(&h[386 + i * 24..410 + i * 24]);
    }
    let mut more = h[482] == 1;
    let mut at = 512;
    while more {
        let x = &t[at..at + 512];
        for i in 0..21 {
            entry(&x[i * 24..i * 24 + 24]);
        }
        more = x[504] == 1;
        at += 512;
    }
    assert_eq!(regions.iter().map(|r| r.1).sum::<u64>(), stored as u64);
    let mut disk = vec![0u8; real];
    for (o, l) in regions {
        let (o, l) = (to_usize(o), to_usize(l));
        disk[o..o + l].copy_from_slice(&t[at..at + l]);
        at += l;
    }
    assert!(t[at..].iter().all(|&b| b == 0), "zeros after the data");
    disk
}

#[test]
fn containers_read_back_as_the_disk() {
    for (seed, len) in [
        (1, 5 << 20),
        (2, (9 << 20) + 512),
        (3, 64 << 10),
        (4, (40 << 20) - 3 * 512),
        (5, 700 << 20),
    ] {
        let map = random_map(seed, len);
        let disk = raw(&map);
        assert!(read_qcow2(&qcow2(&map)) == disk, "qcow2, seed {seed}");
        if len % 512 == 0 {
            assert!(read_vhd(&vhd(&map)) == disk, "vhd, seed {seed}");
        }
        assert!(read_tar(&tar(&map)) == disk, "tar, seed {seed}");
    }
}

#[test]
fn empty_and_full_disks() {
    let empty = MapBuilder::new("e", 8 << 20).finish().unwrap();
    let q = qcow2(&empty);
    assert_eq!(read_qcow2(&q), vec![0; 8 << 20]);
    // Header, L1, refcount table, one refcount block: no L2, no data.
    assert_eq!(q.len(), 4 << 16);
    assert_eq!(read_vhd(&vhd(&empty)), vec![0; 8 << 20]);
    let t = tar(&empty);
    assert_eq!(read_tar(&t), vec![0; 8 << 20]);
    assert_eq!(t.len(), 10240);

    let mut b = MapBuilder::new("f", 3 << 20);
    b.bytes(0, vec![7u8; 3 << 20]).unwrap();
    let full = b.finish().unwrap();
    assert_eq!(read_qcow2(&qcow2(&full)), vec![7u8; 3 << 20]);
    assert_eq!(read_vhd(&vhd(&full)), vec![7u8; 3 << 20]);
    assert_eq!(read_tar(&tar(&full)), vec![7u8; 3 << 20]);
}

#[test]
fn same_map_same_bytes() {
    let map = random_map(9, 11 << 20);
    assert_eq!(qcow2(&map), qcow2(&map));
    assert_eq!(vhd(&map), vhd(&map));
    assert_eq!(tar(&map), tar(&map));
}

#[test]
fn many_regions_need_tar_extension_headers() {
    let mut b = MapBuilder::new("sparse", 64 << 20);
    for i in 0..100u64 {
        b.bytes(i * (600 << 10), vec![i as u8 + 1; 5000]).unwrap();
    }
    let map = b.finish().unwrap();
    let t = tar(&map);
    assert_eq!(t[482], 1);
    assert_eq!(read_tar(&t), raw(&map));
}

/// A disk of 8 GiB or more: its real size and the offset of the empty region at its end do
/// not fit 11 octal digits and go in GNU's base-256 form (0x80, then the value big-endian),
/// the small fields stay octal, the checksum covers it all. Only the header is built: the
/// disk is never streamed.
#[test]
fn a_gce_disk_of_8_gib_or_more_has_base_256_sizes() {
    let size = (10u64 << 30) + 4096;
    let map = MapBuilder::new("big", size).finish().unwrap();
    let t = GceTar::new(&map, &params(&map), Vec::new())
        .unwrap()
        .into_inner();
    assert_eq!(t.len(), 512, "the header alone, no extension");
    let h = &t[..512];
    for field in [&h[483..495], &h[386..398]] {
        assert_eq!(field[..4], [0x80, 0, 0, 0]);
        assert_eq!(octal_or_256(field), size);
    }
    assert_eq!(&h[398..410], b"00000000000\0", "the empty region's length");
    assert_eq!(&h[100..108], b"0000644\0");
    assert_eq!(&h[124..136], b"00000000000\0", "nothing stored");
    let mut sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    sum -= h[148..156].iter().map(|&b| u32::from(b)).sum::<u32>();
    sum += 8 * u32::from(b' ');
    assert_eq!(u64::from(sum), octal_or_256(&h[148..155]));
    assert_eq!(&h[154..156], b"\0 ");
}

fn have(tool: &str) -> bool {
    Command::new(tool).arg("--version").output().is_ok()
}

/// Runs `tool args...` in `dir`, asserting success.
#[track_caller]
fn run(tool: &str, args: &[&std::ffi::OsStr], dir: &std::path::Path) -> String {
    imgbuild_testutil::run(Command::new(tool).args(args).current_dir(dir))
}

/// What the real tools read: `qemu-img compare` of the qcow2 and VHD (and `qemu-img check`
/// of the qcow2), GNU tar's extraction.
#[test]
fn real_readers_agree() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let map = random_map(7, (24 << 20) + 4096);
    let disk = raw(&map);
    let write = |name: &str, bytes: &[u8]| {
        let p = d.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    };
    if have("tar") {
        let t = write("disk.tar", &tar(&map));
        run("tar", &["-xSf".as_ref(), t.as_os_str()], d);
        assert!(std::fs::read(d.join("disk.raw")).unwrap() == disk);
    }
    if !have("qemu-img") {
        eprintln!("qemu-img not installed: the container e2e tests check it");
        return;
    }
    let raw_path = write("disk.img", &disk);
    for (name, bytes, fmt) in [
        ("d.qcow2", qcow2(&map), "qcow2"),
        ("d.vhd", vhd(&map), "vpc"),
        ("d.vmdk", vmdk(&map, 2), "vmdk"),
        ("d.vhdx", vhdx(&map), "vhdx"),
    ] {
        let p = write(name, &bytes);
        let args = ["compare", "-f", fmt, "-F", "raw"].map(std::ffi::OsStr::new);
        run(
            "qemu-img",
            &[&args[..], &[p.as_os_str(), raw_path.as_os_str()]].concat(),
            d,
        );
        if fmt == "qcow2" {
            run("qemu-img", &["check".as_ref(), p.as_os_str()], d);
        }
    }
}

#[test]
fn all_zero_metadata_is_not_stored() {
    let mut b = MapBuilder::new("z", 4 << 20);
    // One buffer: 3 clusters of zeros, then one non-zero byte in the fourth.
    let mut data = vec![0u8; 4 << 16];
    data[(3 << 16) + 5] = 1;
    b.bytes(0, data).unwrap();
    let map = b.finish().unwrap();
    let q = qcow2(&map);
    assert_eq!(read_qcow2(&q), raw(&map));
    // Header, L1, refcount table, refcount block, one L2 table, one data cluster.
    assert_eq!(q.len(), 6 << 16);
}

/// Bytes at which two containers differ.
fn diff(a: &[u8], b: &[u8]) -> Vec<usize> {
    assert_eq!(a.len(), b.len());
    (0..a.len()).filter(|&i| a[i] != b[i]).collect()
}

#[test]
fn time_and_id_change_only_their_fields() {
    let map = random_map(11, 6 << 20);
    let p = params(&map);
    let later = Params {
        time: p.time + 1000,
        ..p.clone()
    };
    let other = Params {
        id: [0x43; 16],
        ..p.clone()
    };
    let run = |p: &Params| {
        let mut v = Vhd::new(&map, p, Vec::new()).unwrap();
        stream(&map, &mut v);
        v.into_inner()
    };
    let base = run(&p);
    let end = base.len() - 512;
    // The timestamp (24..28) and checksum (64..68) of both footer copies.
    let fields = |r: std::ops::Range<usize>| {
        let mut v: Vec<usize> = r.clone().collect();
        v.extend(r.map(|i| i + end));
        v
    };
    let d = diff(&base, &run(&later));
    assert!(!d.is_empty());
    assert!(
        d.iter()
            .all(|i| fields(24..28).contains(i) || fields(64..68).contains(i)),
        "{d:?}"
    );
    let d = diff(&base, &run(&other));
    assert!(
        d.iter()
            .all(|i| fields(68..84).contains(i) || fields(64..68).contains(i)),
        "{d:?}"
    );
    // qcow2 and the tar carry no id; the tar's only time is the member's mtime (136..148)
    // and its header checksum (148..156).
    let tar_of = |p: &Params| {
        let mut t = GceTar::new(&map, p, Vec::new()).unwrap();
        stream(&map, &mut t);
        t.into_inner()
    };
    let d = diff(&tar_of(&p), &tar_of(&later));
    assert!(d.iter().all(|&i| (136..156).contains(&i)), "{d:?}");
    assert!(diff(&tar_of(&p), &tar_of(&other)).is_empty());
    let q = |p: &Params| {
        let mut q = Qcow2::new(&map, p, Vec::new()).unwrap();
        stream(&map, &mut q);
        q.into_inner()
    };
    assert_eq!(q(&p), q(&later));
    assert_eq!(q(&p), q(&other));
}

fn vmdk(map: &Map, workers: usize) -> Vec<u8> {
    let mut v = Vmdk::new(map, &params(map), Vec::new(), workers, 6).unwrap();
    stream(map, &mut v);
    v.into_inner()
}

fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}
fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

/// A stream-optimized VMDK read back: footer, grain directory, grain tables, grain markers
/// and their zlib streams.
fn read_vmdk(v: &[u8]) -> Vec<u8> {
    use std::io::Read;
    assert_eq!(&v[..4], b"KDMV");
    assert_eq!(le64(v, 56), u64::MAX, "directory at the end");
    let n = v.len();
    assert!(v[n - 512..].iter().all(|&b| b == 0), "end-of-stream marker");
    assert_eq!(le32(v, n - 1536 + 12), 3, "footer marker");
    let footer = &v[n - 1024..n - 512];
    let capacity = le64(footer, 12);
    let grain = le64(footer, 20) * 512;
    let gd = to_usize(le64(footer, 56) * 512);
    let per_gt = u64::from(le32(footer, 44));
    let tables = (capacity * 512).div_ceil(grain).div_ceil(per_gt);
    let desc = std::str::from_utf8(&v[512..1024]).unwrap();
    assert!(desc.contains("createType=\"streamOptimized\""), "{desc}");
    let mut disk = vec![0u8; to_usize(capacity * 512)];
    for t in 0..tables {
        let gt = to_usize(u64::from(le32(v, gd + to_usize(t) * 4)) * 512);
        assert_ne!(gt, 0);
        for e in 0..per_gt {
            let at = to_usize(u64::from(le32(v, gt + to_usize(e) * 4)) * 512);
            if at == 0 {
                continue;
            }
            let lba = le64(v, at);
            assert_eq!(lba * 512, (t * per_gt + e) * grain);
            let size = le32(v, at + 8) as usize;
            let mut bytes = Vec::new();
            flate2::read::ZlibDecoder::new(&v[at + 12..at + 12 + size])
                .read_to_end(&mut bytes)
                .unwrap();
            let off = to_usize(lba * 512);
            let len = bytes.len().min(disk.len() - off);
            disk[off..off + len].copy_from_slice(&bytes[..len]);
        }
    }
    disk
}

#[test]
fn vmdk_reads_back_whatever_the_thread_count() {
    for (seed, len) in [(21, 5 << 20), (22, 70 << 20), (23, 1 << 20)] {
        let map = random_map(seed, len);
        let one = vmdk(&map, 1);
        assert!(read_vmdk(&one) == raw(&map), "seed {seed}");
        assert!(vmdk(&map, 3) == one, "seed {seed}: -j changes the bytes");
    }
    let empty = MapBuilder::new("e", 64 << 20).finish().unwrap();
    assert_eq!(read_vmdk(&vmdk(&empty, 2)), vec![0; 64 << 20]);
}

fn vhdx(map: &Map) -> Vec<u8> {
    let mut v = Vhdx::new(map, &params(map), Vec::new()).unwrap();
    stream(map, &mut v);
    v.into_inner()
}

fn le64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// A VHDX read back from the specification: region table, metadata, BAT, blocks; every
/// checksum verified.
fn read_vhdx(v: &[u8]) -> Vec<u8> {
    let (size, block, blocks) = vhdx_blocks(v);
    let mut disk = vec![0u8; to_usize(size)];
    for (b, at) in blocks {
        let off = to_usize(b * block);
        let n = to_usize(block).min(disk.len() - off);
        disk[off..off + n].copy_from_slice(&v[at..at + n]);
    }
    disk
}

/// The virtual size, block size and stored blocks (index, file offset) of a VHDX.
fn vhdx_blocks(v: &[u8]) -> (u64, u64, Vec<(u64, usize)>) {
    assert_eq!(&v[..8], b"vhdxfile");
    for at in [64 << 10, 128 << 10] {
        let mut h = v[at..at + 4096].to_vec();
        assert_eq!(&h[..4], b"head");
        let sum = le32(&h, 4);
        h[4..8].fill(0);
        assert_eq!(sum, crc32c::crc32c(&h), "header at {at}");
    }
    let mut r = v[192 << 10..256 << 10].to_vec();
    assert_eq!(&r[..4], b"regi");
    assert_eq!(r, v[256 << 10..320 << 10], "both region tables");
    let sum = le32(&r, 4);
    r[4..8].fill(0);
    assert_eq!(sum, crc32c::crc32c(&r));
    let (mut bat, mut meta) = (0, 0);
    for i in 0..le32(&r, 8) as usize {
        let e = &r[16 + i * 32..48 + i * 32];
        let off = to_usize(le64_at(e, 16));
        match e[0] {
            0x66 => bat = off,
            0x06 => meta = off,
            x => panic!("region {x:#x}"),
        }
    }
    assert_eq!(&v[meta..meta + 8], b"metadata");
    let mut block = 0;
    let mut size = 0;
    for i in 0..usize::from(u16::from_le_bytes([v[meta + 10], v[meta + 11]])) {
        let e = &v[meta + 32 + i * 32..meta + 64 + i * 32];
        let data = meta + le32(e, 16) as usize;
        match e[0] {
            0x37 => block = le32(v, data) as u64,
            0x24 => size = le64_at(v, data),
            _ => {}
        }
    }
    let chunk = (1u64 << 23) * 512 / block;
    let mut blocks = Vec::new();
    for b in 0..size.div_ceil(block) {
        let e = le64_at(v, bat + to_usize((b + b / chunk) * 8));
        match e & 7 {
            0 => {}
            6 => blocks.push((b, to_usize(e & !0xFFFFF))),
            s => panic!("state {s}"),
        }
    }
    (size, block, blocks)
}

#[test]
fn vhdx_reads_back_as_the_disk() {
    for (seed, len) in [(31, 5 << 20), (32, (70 << 20) + 512)] {
        let map = random_map(seed, len);
        assert!(read_vhdx(&vhdx(&map)) == raw(&map), "seed {seed}");
    }
    // Past one chunk of 2048 blocks (4 GiB): the sector-bitmap entry is skipped.
    let mut b = MapBuilder::new("big", 5 << 30);
    b.bytes(4 << 30, vec![5u8; 4096]).unwrap();
    b.bytes(1 << 20, vec![6u8; 4096]).unwrap();
    let map = b.finish().unwrap();
    let v = vhdx(&map);
    let (size, block, blocks) = vhdx_blocks(&v);
    assert_eq!((size, block), (5 << 30, 2 << 20));
    assert_eq!(blocks.iter().map(|b| b.0).collect::<Vec<_>>(), [0, 2048]);
    assert_eq!(&v[blocks[0].1 + (1 << 20)..][..4096], &[6u8; 4096][..]);
    assert_eq!(&v[blocks[1].1..][..4096], &[5u8; 4096][..]);
}

/// Disk sizes and names a format cannot describe are refused with a typed error naming the
/// format and the limit, before anything is written.
#[test]
fn sizes_and_names_a_format_cannot_hold_are_typed_errors() {
    let p = |disk_size| Params {
        disk_size,
        id: [7; 16],
        time: 0,
    };
    let e = vhd::fixed_footer(&p(1000)).unwrap_err();
    assert!(
        matches!(
            e,
            Error::NotWholeSectors {
                format: "vhd",
                disk_size: 1000,
                sector: 512
            }
        ),
        "{e}"
    );
    let e = vhd::fixed_footer(&p((2040 << 30) + 512)).unwrap_err();
    assert!(
        matches!(e, Error::DiskTooLarge { format: "vhd", max, .. } if max == 2040 << 30),
        "{e}"
    );
    assert!(e.to_string().ends_with("(use vhdx)"), "{e}");
    assert!(vhd::fixed_footer(&p(2040 << 30)).is_ok());

    let big = (64u64 << 40) + 512;
    let map = MapBuilder::new("test", big).finish().unwrap();
    let e = vhdx::Vhdx::new(&map, &p(big), Vec::new()).err().unwrap();
    assert!(
        matches!(e, Error::DiskTooLarge { format: "vhdx", max, .. } if max == 64 << 40),
        "{e}"
    );
    let odd = MapBuilder::new("test", 4097).finish().unwrap();
    let e = vmdk::Vmdk::new(&odd, &p(4097), Vec::new(), 1, 1)
        .err()
        .unwrap();
    assert!(
        matches!(e, Error::NotWholeSectors { format: "vmdk", .. }),
        "{e}"
    );

    let e = ova::Ova::new(&p(1 << 20), "my machine").err().unwrap();
    assert!(
        matches!(&e, Error::BadMachineName { name } if name == "my machine"),
        "{e}"
    );
}

fn vma(map: &Map) -> Vec<u8> {
    let conf = vma::Config {
        name: "qemu-server.conf",
        data: b"bios: ovmf\n",
    };
    let archive = vma::Archive::new(map, &params(map), "drive-virtio0", &[conf]).unwrap();
    let len = archive.len();
    let mut v = archive.write(Vec::new()).unwrap();
    stream(map, &mut v);
    let out = v.into_inner();
    assert_eq!(out.len() as u64, len, "the pledged length");
    out
}

/// VMA read back from `vma_spec.txt`: header and extent MD5s checked, every cluster listed
/// once, in order; the configuration and device name found through the blob offsets.
fn read_vma(v: &[u8]) -> Vec<u8> {
    use crate::vma::{at, md5_zeroed};
    assert_eq!(&v[..4], b"VMA\0");
    assert_eq!(be32(v, 4), 1);
    let header_size = be32(v, at::BLOB_OFFSET + 8) as usize;
    assert_eq!(md5_zeroed(&v[..header_size], at::MD5), v[32..48]);
    let blob = |off: u32| {
        let p = be32(v, at::BLOB_OFFSET) as usize + off as usize;
        let n = u16::from_le_bytes([v[p], v[p + 1]]) as usize;
        &v[p + 2..p + 2 + n]
    };
    assert_eq!(blob(be32(v, at::CONFIG_NAMES)), b"qemu-server.conf\0");
    assert_eq!(blob(be32(v, at::CONFIG_DATA)), b"bios: ovmf\n");
    assert_eq!(be32(v, at::CONFIG_NAMES + 4), 0);
    let dev = at::DEV_INFO + 32;
    assert_eq!(blob(be32(v, dev)), b"drive-virtio0\0");
    let size = be64(v, dev + 8);
    let mut disk = vec![0u8; (size.div_ceil(vma::CLUSTER) * vma::CLUSTER) as usize];
    let (mut pos, mut next) = (header_size, 0u64);
    while pos < v.len() {
        let h = &v[pos..pos + 512];
        assert_eq!(&h[..4], b"VMAE");
        assert_eq!(h[8..24], v[8..24], "the archive's uuid");
        assert_eq!(md5_zeroed(h, at::EXTENT_MD5), h[24..40]);
        pos += 512;
        let mut blocks = 0;
        for i in 0..59 {
            let info = be64(h, at::BLOCKINFO + 8 * i);
            if info == 0 {
                continue;
            }
            assert_eq!((info >> 32) & 0xff, 1, "dev id");
            assert_eq!(info & 0xffff_ffff, next, "clusters in order");
            let mask = (info >> 48) as u16;
            for b in 0..16 {
                if mask & (1 << b) != 0 {
                    let at = (next * vma::CLUSTER + b * 4096) as usize;
                    disk[at..at + 4096].copy_from_slice(&v[pos..pos + 4096]);
                    pos += 4096;
                    blocks += 1;
                }
            }
            next += 1;
        }
        assert_eq!(u16::from_be_bytes([h[6], h[7]]), blocks);
    }
    assert_eq!(next, size.div_ceil(vma::CLUSTER), "every cluster listed");
    disk.truncate(size as usize);
    disk
}

#[test]
fn vma_reads_back_as_the_disk() {
    for (seed, len) in [
        (1, 5 << 20),
        (2, (9 << 20) + 512),
        (3, 64 << 10),
        (6, 8 << 20),
    ] {
        let map = random_map(seed, len);
        assert!(read_vma(&vma(&map)) == raw(&map), "vma, seed {seed}");
    }
    let empty = MapBuilder::new("e", 8 << 20).finish().unwrap();
    let e = vma(&empty);
    assert_eq!(read_vma(&e), vec![0; 8 << 20]);
    // Header (fixed part + one 512-byte blob table) and the headers of 128 / 59 extents.
    assert_eq!(e.len(), 12288 + 512 + 3 * 512);
    let mut b = MapBuilder::new("f", 3 << 20);
    b.bytes(0, vec![7u8; 3 << 20]).unwrap();
    let full = b.finish().unwrap();
    assert_eq!(read_vma(&vma(&full)), vec![7u8; 3 << 20]);
    let map = random_map(9, 11 << 20);
    assert_eq!(vma(&map), vma(&map));
}
