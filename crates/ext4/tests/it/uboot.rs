//! U-Boot's ext4 driver (the sd-aarch64 image boots through it) reads our images: listing
//! an htree directory, loading files through deep extent trees with holes, fast and slow
//! symlinks, long names. Runs Debian's u-boot-qemu in qemu-system-aarch64 (TCG).

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use imgbuild_fstree::{Meta, Node, Tree};

use crate::adversarial::noise;
use crate::common::*;

const UBOOT: &str = "/usr/lib/u-boot/qemu_arm64/u-boot.bin";

struct Console {
    child: Child,
    rx: mpsc::Receiver<Vec<u8>>,
    buf: Vec<u8>,
}

impl Console {
    fn start(img: &std::path::Path) -> Console {
        assert!(
            std::path::Path::new(UBOOT).exists(),
            "{UBOOT} missing: apt-get install u-boot-qemu"
        );
        let mut child = Command::new("qemu-system-aarch64")
            .args([
                "-M",
                "virt",
                "-accel",
                "tcg",
                "-cpu",
                "cortex-a57",
                "-m",
                "512",
            ])
            .args(["-nographic", "-nic", "none", "-bios", UBOOT, "-drive"])
            .arg(format!(
                "file={},if=virtio,format=raw,readonly=on",
                img.display()
            ))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("qemu-system-aarch64 (package qemu-system-arm) must be installed");
        let mut out = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut b = [0u8; 65536];
            while let Ok(n) = out.read(&mut b) {
                if n == 0 || tx.send(b[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        let mut c = Console {
            child,
            rx,
            buf: Vec::new(),
        };
        c.wait_for("autoboot");
        c.send("");
        c.wait_for("\n=> ");
        c
    }

    fn wait_for(&mut self, pat: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(i) = self
                .buf
                .windows(pat.len())
                .position(|w| w == pat.as_bytes())
            {
                let out: Vec<u8> = self.buf.drain(..i + pat.len()).collect();
                return String::from_utf8_lossy(&out).into_owned();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(d) => self.buf.extend_from_slice(&d),
                Err(_) => panic!(
                    "U-Boot: timed out waiting for {pat:?}; last output:\n{}",
                    String::from_utf8_lossy(&self.buf)
                ),
            }
        }
    }

    fn send(&mut self, line: &str) {
        let stdin = self.child.stdin.as_mut().expect("piped stdin");
        stdin.write_all(line.as_bytes()).expect("write");
        stdin.write_all(b"\n").expect("write");
        stdin.flush().expect("flush");
    }

    /// Run a command, return its output (without the echo and the next prompt).
    fn cmd(&mut self, line: &str) -> String {
        let t = Instant::now();
        self.send(line);
        eprintln!("u-boot: {line}");
        let out = self.wait_for("\n=> ");
        eprintln!("  ({:.1}s)", t.elapsed().as_secs_f64());
        out.split_once('\n')
            .map_or(String::new(), |x| x.1.to_string())
    }

    /// Load `path` and return (bytes read, CRC-32 U-Boot computed).
    fn load(&mut self, path: &str) -> (u64, u32) {
        let out = self.cmd(&format!("ext4load virtio 0 0x40400000 {path}"));
        let n: u64 = out
            .split_whitespace()
            .next()
            .and_then(|w| w.parse().ok())
            .unwrap_or_else(|| panic!("ext4load {path}: {out}"));
        let out = self.cmd(&format!("crc32 0x40400000 {n:x}"));
        let crc = out
            .rsplit("==> ")
            .next()
            .and_then(|w| w.split_whitespace().next())
            .and_then(|w| u32::from_str_radix(w, 16).ok())
            .unwrap_or_else(|| panic!("crc32: {out}"));
        (n, crc)
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn uboot_reads_our_images() {
    let m = Meta::new(0o755, 0, 0, 1_700_000_000);
    let mut t = Tree::new(m);
    let many = t.insert_path(b"/many", Node::dir(m)).unwrap();
    for i in 0..600 {
        t.insert(
            many,
            format!("entry-{i:05}").as_bytes(),
            Node::bytes(m, Vec::new()),
        )
        .unwrap();
    }
    t.mkdir_p(b"/files", m).unwrap();
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    for (i, n) in [1usize, 4095, 4096, 4097, 3 << 20].into_iter().enumerate() {
        files.push((format!("/files/size-{n}"), noise(i as u64, n)));
    }
    // 1500 one-block runs with holes between: a two-level extent tree.
    let mut sparse = vec![0u8; 3000 * 4096];
    for i in 0..1500 {
        sparse[i * 8192..i * 8192 + 4096].copy_from_slice(&noise(i as u64 + 7, 4096));
    }
    files.push(("/files/sparse".into(), sparse));
    let long = format!("/files/{}", "n".repeat(255));
    files.push((long.clone(), b"long name".to_vec()));
    for (p, d) in &files {
        t.insert_path(p.as_bytes(), Node::bytes(m, d.clone()))
            .unwrap();
    }
    t.mkdir_p(b"/sym", m).unwrap();
    t.insert_path(b"/sym/fast", Node::symlink(m, "../files/size-4097"))
        .unwrap();
    let slow_target = format!("../files/{}", "n".repeat(255));
    t.insert_path(b"/sym/slow", Node::symlink(m, slow_target))
        .unwrap();
    // The Bytes file has no holes; rebuild it with holes as a host file so the image has
    // them too.
    let src = tempfile::tempdir().unwrap();
    let sp = src.path().join("sparse");
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::create(&sp).unwrap();
        f.set_len(3000 * 4096).unwrap();
        for i in 0..1500u64 {
            f.write_all_at(&noise(i + 7, 4096), i * 8192).unwrap();
        }
    }
    let id = t.lookup(b"/files/sparse").unwrap();
    t.node_mut(id).kind = imgbuild_fstree::Kind::File(imgbuild_fstree::FileData::Host {
        path: sp,
        size: 3000 * 4096,
    });

    let img = build(&t, &opts());
    fsck(&img.path);
    let ex = debugfs(&img.path, "dump_extents /files/sparse");
    assert!(
        ex.contains(" 0/ 2 "),
        "two-level extent tree expected:\n{ex}"
    );

    let mut c = Console::start(&img.path);
    let root = c.cmd("ext4ls virtio 0 /");
    for name in ["many", "files", "sym", "lost+found"] {
        assert!(root.contains(name), "{root}");
    }
    let ht = debugfs(&img.path, "htree_dump /many");
    assert!(ht.contains("Indirect levels: 0"), "htree expected");
    let many = c.cmd("ext4ls virtio 0 /many");
    assert_eq!(
        many.lines().filter(|l| l.contains("entry-")).count(),
        600,
        "{many}"
    );
    for (p, d) in &files {
        let (n, crc) = c.load(p);
        assert_eq!(n, d.len() as u64, "{p}: size");
        assert_eq!(crc, crc32fast::hash(d), "{p}: content");
    }
    let (n, crc) = c.load("/sym/fast");
    assert_eq!((n, crc), (4097, crc32fast::hash(&files[3].1)));
    let (n, crc) = c.load("/sym/slow");
    assert_eq!((n, crc), (9, crc32fast::hash(b"long name")));
    let sym = c.cmd("ext4ls virtio 0 /sym");
    assert_eq!(sym.matches("<SYM>").count(), 2, "{sym}");
}
