//! Test support shared by every crate's tests, and only their tests (a dev-dependency): the
//! helpers that were written once per crate.
//!
//! - [`run`], [`run_output`], [`output`]: run a tool, with its command line, status, stdout and
//!   stderr in the panic message when it fails (every oracle test runs other people's tools);
//! - [`have_tool`]: whether a judge is installed (a test without it says so and skips);
//!   [`self_signed_keys`]: an `openssl`-made key and certificate for signing tests;
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
