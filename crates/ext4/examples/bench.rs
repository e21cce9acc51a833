//! Time the ext4 writer against `mke2fs -t ext4 -d` and `cp -a` on the same tree.
//!
//! ```text
//! cargo run --release -p imgbuild-ext4 --example bench -- [--mib 200] [--entries 10000] [SRC]
//! ```
//! Without SRC, a tree of about `--mib` MiB in `--entries` entries (one directory holding
//! 36% of them, like the issue's 18,000 of 50,000) is generated under /var/tmp first. Also
//! prints our `--size auto` image size next to `mke2fs -d` + `resize2fs -M`.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use imgbuild_blockio as blockio;
use imgbuild_ext4 as ext4;
use imgbuild_fstree::{Mtime, Owner, Perms, ScanOptions, Scanner};

fn generate(root: &Path, mib: u64, entries: u64) {
    let _ = std::fs::remove_dir_all(root);
    std::fs::create_dir_all(root).unwrap();
    let big_dir = entries * 36 / 100;
    let dirs = (entries - big_dir) / 50 + 1;
    let files = entries - big_dir - dirs;
    // Sizes: mostly small files, a few large ones carrying half the bytes.
    let total = mib << 20;
    let large = (files / 200).max(1);
    let large_size = total / 2 / large;
    let small_size = (total / 2) / (files + big_dir).max(1);
    let mut seed = 1u64;
    let mut noise = |len: u64| -> Vec<u8> {
        (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect()
    };
    std::fs::create_dir(root.join("big")).unwrap();
    for i in 0..big_dir {
        let len = (i * 7919) % (2 * small_size + 1);
        std::fs::write(root.join(format!("big/entry-{i:06}")), noise(len)).unwrap();
    }
    for d in 0..dirs {
        std::fs::create_dir_all(root.join(format!("d{:03}/sub{d:04}", d % 100))).unwrap();
    }
    for f in 0..files {
        let d = f % dirs;
        let len = if f < large {
            large_size
        } else {
            (f * 104_729) % (2 * small_size + 1)
        };
        let p = root.join(format!("d{:03}/sub{d:04}/file-{f}", d % 100));
        std::fs::write(p, noise(len)).unwrap();
    }
}

fn secs(t: Instant) -> f64 {
    t.elapsed().as_secs_f64()
}

fn run(cmd: &mut Command) {
    let st = cmd.status().unwrap();
    assert!(st.success(), "{cmd:?} failed");
}

fn blocks_of(img: &Path) -> u64 {
    let out = Command::new("dumpe2fs")
        .arg("-h")
        .arg(img)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("Block count:"))
        .map(|v| v.trim().parse().unwrap())
        .unwrap()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut mib, mut entries, mut src) = (200u64, 10_000u64, None);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--mib" => mib = args.next().unwrap().parse().unwrap(),
            "--entries" => entries = args.next().unwrap().parse().unwrap(),
            _ => src = Some(PathBuf::from(a)),
        }
    }
    let work = PathBuf::from("/var/tmp/imgbuild-ext4-bench");
    std::fs::create_dir_all(&work).unwrap();
    let src = src.unwrap_or_else(|| {
        let s = work.join(format!("src-{mib}M-{entries}"));
        if !s.exists() {
            let t = Instant::now();
            generate(&s, mib, entries);
            eprintln!("generated {} in {:.2}s", s.display(), secs(t));
        }
        s
    });
    // Warm the page cache for everyone.
    run(Command::new("sh")
        .arg("-c")
        .arg(format!("tar -cf - -C '{}' . > /dev/null", src.display())));

    let img = work.join("ours.img");
    // Every timed run starts with no dirty pages pending, and none of them waits for its
    // own writeback.
    let sync = || run(&mut Command::new("sync"));
    sync();
    let t0 = Instant::now();
    let tree = Scanner::new(ScanOptions {
        owner: Owner::Fixed(0, 0),
        perms: Perms::Preserve,
        mtime: Mtime::Fixed(1),
        hardlinks: true,
    })
    .scan(&src)
    .unwrap();
    let t_scan = secs(t0);
    let t1 = Instant::now();
    let opts = ext4::Options {
        uuid: [1; 16],
        hash_seed: [2; 16],
        timestamp: 1,
        ..Default::default()
    };
    let plan = ext4::plan(&tree, &opts).unwrap();
    let t_plan = secs(t1);
    let t2 = Instant::now();
    let _ = std::fs::remove_file(&img);
    let out = blockio::OutputFile::create(&img, plan.size_bytes()).unwrap();
    let map = plan.map(&tree).unwrap();
    imgbuild_diskmap::write_file(&map, out.file()).unwrap();
    out.persist().unwrap();
    let t_write = secs(t2);
    let ours = secs(t0);

    let theirs = work.join("mke2fs.img");
    let size = (plan.size_bytes() * 12 / 10 + (64 << 20)) / (1 << 20);
    let _ = std::fs::remove_file(&theirs);
    sync();
    let t3 = Instant::now();
    run(Command::new("mke2fs")
        .args([
            "-q",
            "-F",
            "-t",
            "ext4",
            "-T",
            "default",
            "-E",
            "root_owner=0:0",
            "-d",
        ])
        .arg(&src)
        .arg(&theirs)
        .arg(format!("{size}M")));
    let mke2fs = secs(t3);

    let copy = work.join("cp-copy");
    let _ = std::fs::remove_dir_all(&copy);
    sync();
    let t4 = Instant::now();
    run(Command::new("cp").arg("-a").arg(&src).arg(&copy));
    let cp = secs(t4);
    std::fs::remove_dir_all(&copy).unwrap();

    run(Command::new("e2fsck")
        .arg("-fn")
        .arg(&img)
        .stdout(std::process::Stdio::null()));
    run(Command::new("resize2fs")
        .arg("-M")
        .arg(&theirs)
        .stderr(std::process::Stdio::null())
        .stdout(std::process::Stdio::null()));
    let min_theirs = blocks_of(&theirs) * 4096;

    println!(
        "tree: {} ({} nodes, {} MiB of data)",
        src.display(),
        tree.len(),
        plan.data_bytes() >> 20
    );
    println!(
        "imgbuild-ext4: {ours:.3}s (scan {t_scan:.3}s, plan {t_plan:.3}s, write {t_write:.3}s)"
    );
    println!(
        "mke2fs -d:     {mke2fs:.3}s  -> ratio {:.2}x",
        ours / mke2fs
    );
    println!("cp -a:         {cp:.3}s  -> ratio {:.2}x", ours / cp);
    println!(
        "size: ours {} MiB, mke2fs -d + resize2fs -M {} MiB",
        plan.size_bytes() >> 20,
        min_theirs >> 20
    );
}
