//! Integration tests of the ext4 writer against real oracles: e2fsck, debugfs, the Linux
//! kernel (loop mounts; these tests run as root) and the `ext4-view` reader.

#![allow(clippy::unwrap_used)]

mod adversarial;
mod common;
mod errors;
mod htree;
mod props;
mod rw;
mod sizes;
mod uboot;
