//! Test support shared by every crate's tests, and only their tests (a dev-dependency): the
//! helpers that were written once per crate.
//!
//! - [`run`], [`run_output`], [`output`]: run a tool, with its command line, status, stdout and
//!   stderr in the panic message when it fails (every oracle test runs other people's tools);
//! - [`have_tool`]: whether a judge is installed (a test without it says so and skips);
//!   [`self_signed_keys`]: an `openssl`-made key and certificate for signing tests;
//!   [`tiny_pe`]: a small PE32+ EFI application to sign;
//! - [`noise`], [`Rng`]: deterministic pseudo-random bytes and numbers (xorshift64*);
//! - [`crc32`]: CRC-32 (IEEE), bitwise, independent of the crates under test;
//! - [`error_chain`]: an error with its sources, as the CLI prints it (what message tests check);
//! - [`harness`]: the image corruption harness (mutations, allocation and panic counting)
//!   that the inspect crate's fuzz tests and the end-to-end tests share.

#![warn(missing_docs)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::missing_panics_doc)]

use std::process::{Command, Output};

pub mod harness;

pub use harness::Rng;

/// `outer: inner: innermost`: an error's message and its sources', as the CLI prints an
/// error (errors chain their causes instead of printing them, so a test of what a user reads
/// checks this, not `to_string()` alone).
pub use imgbuild_units::error_chain;

/// Runs `cmd`, panicking unless it succeeds; its output.
#[track_caller]
pub fn run_output(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e} (is the tool installed?)"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs `cmd`, panicking unless it succeeds; its stdout.
#[track_caller]
pub fn run(cmd: &mut Command) -> String {
    String::from_utf8_lossy(&run_output(cmd).stdout).into_owned()
}

/// Runs `cmd` whatever its status: whether it succeeded, and stdout then stderr.
#[track_caller]
pub fn output(cmd: &mut Command) -> (bool, String) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e} (is the tool installed?)"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Whether `tool` is on the PATH; when not, says on stderr that the test is skipped and how
/// to get it (`install`: e.g. `apt install sbsigntool`).
pub fn have_tool(tool: &str, install: &str) -> bool {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        eprintln!("skipped: `{tool}` is not installed ({install})");
    }
    found
}

/// A fresh RSA-2048 key and self-signed certificate (`openssl req -x509 -nodes`, PEM) named
/// after `cn` in `dir`: (key, certificate). Keys for signing tests are made at test time,
/// never committed.
pub fn self_signed_keys(
    dir: &std::path::Path,
    cn: &str,
) -> (std::path::PathBuf, std::path::PathBuf) {
    let (key, cert) = (dir.join(format!("{cn}.key")), dir.join(format!("{cn}.pem")));
    run(Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650",
        ])
        .arg("-subj")
        .arg(format!("/CN={cn}/"))
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert));
    (key, cert)
}

/// A small PE32+ EFI application (for the Authenticode tests and fuzz seeds): headers,
/// `.text` and `.data` (0x200 bytes each, file alignment 0x200), then `tail` bytes after the
/// last section (so the padding to 8 bytes is exercised when `tail` is not a multiple of 8).
pub fn tiny_pe(tail: usize) -> Vec<u8> {
    let mut b = vec![0u8; 0x600];
    b[0..2].copy_from_slice(b"MZ");
    b[0x3c..0x40].copy_from_slice(&0x40u32.to_le_bytes());
    b[0x40..0x44].copy_from_slice(b"PE\0\0");
    let coff = 0x44;
    b[coff..coff + 2].copy_from_slice(&0x8664u16.to_le_bytes());
    b[coff + 2..coff + 4].copy_from_slice(&2u16.to_le_bytes());
    b[coff + 16..coff + 18].copy_from_slice(&240u16.to_le_bytes());
    b[coff + 18..coff + 20].copy_from_slice(&0x0022u16.to_le_bytes());
    let opt = coff + 20;
    let put32 =
        |b: &mut Vec<u8>, at: usize, v: u32| b[at..at + 4].copy_from_slice(&v.to_le_bytes());
    b[opt..opt + 2].copy_from_slice(&0x20bu16.to_le_bytes());
    put32(&mut b, opt + 4, 0x200); // SizeOfCode
    put32(&mut b, opt + 16, 0x1000); // AddressOfEntryPoint
    put32(&mut b, opt + 20, 0x1000); // BaseOfCode
    put32(&mut b, opt + 32, 0x1000); // SectionAlignment
    put32(&mut b, opt + 36, 0x200); // FileAlignment
    put32(&mut b, opt + 56, 0x3000); // SizeOfImage
    put32(&mut b, opt + 60, 0x200); // SizeOfHeaders
    b[opt + 68..opt + 70].copy_from_slice(&10u16.to_le_bytes()); // EFI application
    put32(&mut b, opt + 108, 16); // NumberOfRvaAndSizes
    let table = opt + 240;
    for (i, (name, va, raw, flags)) in [
        (b".text\0\0\0", 0x1000u32, 0x200u32, 0x6000_0020u32),
        (b".data\0\0\0", 0x2000, 0x400, 0xc000_0040),
    ]
    .into_iter()
    .enumerate()
    {
        let s = table + i * 40;
        b[s..s + 8].copy_from_slice(name);
        put32(&mut b, s + 8, 0x200);
        put32(&mut b, s + 12, va);
        put32(&mut b, s + 16, 0x200);
        put32(&mut b, s + 20, raw);
        put32(&mut b, s + 36, flags);
    }
    for (i, x) in b[0x200..0x600].iter_mut().enumerate() {
        *x = (i * 7 % 251) as u8;
    }
    b.extend((0..tail).map(|i| (i * 13 % 256) as u8));
    b
}

/// `len` deterministic pseudo-random bytes from `seed`.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut r = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        out.extend_from_slice(&r.next_u64().to_le_bytes());
    }
    out.truncate(len);
    out
}

/// CRC-32 (IEEE 802.3, reflected, polynomial 0xEDB88320, as GPT and zip use it), computed
/// bit by bit: an oracle independent of the CRC crates the code under test uses.
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_check_value() {
        // The standard check value of CRC-32/ISO-HDLC.
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn noise_is_deterministic_and_seeded() {
        assert_eq!(noise(1, 100), noise(1, 100));
        assert_ne!(noise(1, 100), noise(2, 100));
        assert_eq!(noise(3, 13).len(), 13);
    }

    #[test]
    fn error_chain_joins_every_source() {
        #[derive(Debug)]
        struct Outer(std::io::Error);
        impl std::fmt::Display for Outer {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("reading `x`")
            }
        }
        impl std::error::Error for Outer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let inner = std::io::Error::other("disk on fire");
        assert_eq!(error_chain(&inner), "disk on fire");
        assert_eq!(error_chain(&Outer(inner)), "reading `x`: disk on fire");
    }

    #[test]
    fn run_reports_failures() {
        assert_eq!(run(Command::new("echo").arg("hi")), "hi\n");
        let (ok, text) = output(Command::new("sh").args(["-c", "echo out; echo err >&2; exit 3"]));
        assert!(!ok);
        assert_eq!(text, "out\nerr\n");
    }
}
