//! End-to-end tests of the `imgbuild` binary, checked with other people's tools: sgdisk,
//! sfdisk, fsck.fat, mtools, e2fsck, debugfs (and, in `fixtures`, real Nix and the kernel).

// Test helpers panic on purpose: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod add;
mod bios;
mod boot_release;
mod bounds;
mod common;
mod containers;
mod demo;
mod failures;
mod fixtures;
mod flash;
mod hostile;
mod inspect;
mod iso;
mod live_check;
mod lxc;
mod netboot;
mod oracle;
mod secure_boot;
mod sizes;
mod sysupdate;
mod uki;
mod unprivileged;
mod variants;
mod verity;
