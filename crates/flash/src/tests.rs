use super::*;
use imgbuild_blockio::NoProgress;

fn bmap_text(image: &[u8], block: u64, ranges: &[(u64, u64)]) -> String {
    let mut x = format!(
        "<?xml version=\"1.0\" ?>\n<bmap version=\"2.0\">\n<ImageSize> {} </ImageSize>\n\
         <BlockSize> {block} </BlockSize>\n<ChecksumType> sha256 </ChecksumType>\n<BlockMap>\n",
        image.len()
    );
    for &(a, b) in ranges {
        let end = ((b + 1) * block).min(image.len() as u64) as usize;
        let sum: String = Sha256::digest(&image[(a * block) as usize..end])
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        x.push_str(&format!("<Range chksum=\"{sum}\"> {a}-{b} </Range>\n"));
    }
    x + "</BlockMap>\n</bmap>\n"
}

fn image() -> Vec<u8> {
    let mut v = vec![0u8; 64 << 10];
    v[..4096].fill(1);
    v[40960..45056].fill(2);
    v
}

#[test]
fn writes_only_the_mapped_ranges_and_verifies_them() {
    let t = tempfile::tempdir().unwrap();
    let img = t.path().join("x.img");
    let data = image();
    std::fs::write(&img, &data).unwrap();
    let text = bmap_text(&data, 4096, &[(0, 0), (10, 10)]);
    let b = bmap::parse("x.img.bmap", &text).unwrap();
    let dev = t.path().join("dev");
    std::fs::write(&dev, vec![0xFFu8; 64 << 10]).unwrap();
    let bm = t.path().join("x.img.bmap");
    let r = flash(
        &img,
        Some((&bm, &b)),
        &dev,
        true,
        &NoProgress,
        &AtomicBool::new(false),
    )
    .unwrap();
    assert_eq!((r.written, r.ranges, r.verified), (8192, 2, true));
    let out = std::fs::read(&dev).unwrap();
    assert_eq!(&out[..4096], &data[..4096]);
    assert_eq!(&out[40960..45056], &data[40960..45056]);
    assert!(
        out[4096..40960].iter().all(|&x| x == 0xFF),
        "unmapped left alone"
    );
}

#[test]
fn zstd_images_and_no_bmap() {
    let t = tempfile::tempdir().unwrap();
    let data = image();
    let z = zstd::bulk::compress(&data, 3).unwrap();
    let img = t.path().join("x.img.zst");
    std::fs::write(&img, z).unwrap();
    let dev = t.path().join("new.img");
    let r = flash(&img, None, &dev, true, &NoProgress, &AtomicBool::new(false)).unwrap();
    assert_eq!(r.written, data.len() as u64);
    assert_eq!(std::fs::read(&dev).unwrap(), data);
}

#[test]
fn a_bmap_that_does_not_match_is_an_error() {
    let t = tempfile::tempdir().unwrap();
    let img = t.path().join("x.img");
    let mut data = image();
    std::fs::write(&img, &data).unwrap();
    data[5] = 9;
    let b = bmap::parse("b", &bmap_text(&data, 4096, &[(0, 1)])).unwrap();
    let dev = t.path().join("dev");
    let e = flash(
        &img,
        Some((Path::new("b"), &b)),
        &dev,
        false,
        &NoProgress,
        &AtomicBool::new(false),
    )
    .unwrap_err();
    let msg = imgbuild_testutil::error_chain(&e);
    assert!(msg.contains("do not match its checksum"), "{msg}");
    assert!(
        msg.starts_with("the flash stopped; nothing was written"),
        "{msg}"
    );
}

#[test]
fn bmap_parsing() {
    let data = image();
    let text = bmap_text(&data, 4096, &[(0, 0), (10, 15)]);
    let b = bmap::parse("b", &text).unwrap();
    assert_eq!(b.image_size, 65536);
    assert_eq!(b.ranges[1].offset, 40960);
    assert_eq!(b.ranges[1].len, 6 * 4096);
    assert_eq!(b.mapped(), 7 * 4096);
    // A damaged file: the checksum of the file itself.
    let with_sum = text.replace(
        "<BlockMap>",
        &format!(
            "<BmapFileChecksum> {} </BmapFileChecksum>\n<BlockMap>",
            "0".repeat(64)
        ),
    );
    let sum: String = Sha256::digest(with_sum.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let good = with_sum.replacen(&"0".repeat(64), &sum, 1);
    assert!(bmap::parse("b", &good).is_ok());
    let bad = good.replace("10-15", "10-14");
    let e = bmap::parse("b", &bad).unwrap_err();
    assert!(e.to_string().contains("damaged"), "{e}");
    let e = bmap::parse("b", &text.replace("10-15", "15-10")).unwrap_err();
    assert!(e.to_string().contains("empty"), "{e}");
}

#[test]
fn unsafe_targets_are_refused() {
    let t = tempfile::tempdir().unwrap();
    let img = t.path().join("x.img");
    std::fs::write(&img, image()).unwrap();
    let no = AtomicBool::new(false);
    let e = flash(&img, None, &img, false, &NoProgress, &no).unwrap_err();
    assert!(e.to_string().contains("it is the image itself"), "{e}");
    let small = t.path().join("small");
    std::fs::write(&small, [0u8; 512]).unwrap();
    let e = flash(&img, None, &small, false, &NoProgress, &no).unwrap_err();
    assert!(e.to_string().contains("holds 512 bytes"), "{e}");
    let e = flash(
        &img,
        None,
        Path::new("/dev/sdzz-no-such"),
        false,
        &NoProgress,
        &no,
    )
    .unwrap_err();
    assert!(e.to_string().contains("no such device"), "{e}");
    // The disk this machine runs from, when `/` is on a block device.
    let root = std::fs::metadata("/").unwrap();
    use std::os::unix::fs::MetadataExt;
    let (ma, mi) = (libc::major(root.dev()), libc::minor(root.dev()));
    if ma != 0 {
        let dev = std::fs::read_link(format!("/sys/dev/block/{ma}:{mi}")).unwrap();
        let name = dev.file_name().unwrap().to_string_lossy().into_owned();
        let node = Path::new("/dev").join(&name);
        if node.exists() {
            let e = flash(&img, None, &node, false, &NoProgress, &no).unwrap_err();
            assert!(e.to_string().contains("root file system"), "{e}");
        }
    }
}
