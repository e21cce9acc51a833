//! End-to-end tests of the `imgbuild` binary, checked with other people's tools: sgdisk,
//! sfdisk, fsck.fat, mtools, e2fsck, debugfs (and, in `nix_fixture`, real Nix and the kernel).

mod add;
mod common;
mod demo;
mod failures;
mod fixtures;
mod inspect;
mod unprivileged;
