//! The squashfs writer checked by other readers: unsquashfs (listing and extraction) and,
//! as root, the kernel's squashfs driver through a loop mount. One test binary.

#![allow(clippy::unwrap_used)]

mod common;
mod oracle;
mod props;
