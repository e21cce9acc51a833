//! The last line of defence: third-party readers run inside `catch_unwind`.
//!
//! Before any third-party reader sees a structure, this crate validates what it can itself
//! (partition table headers, the ext4 superblock, the FAT boot sector, the EBR chain) so
//! that known panics (for example `gpt`'s `assert_eq!(part_size, 128)`, integer overflows
//! in `mbrman`) are never reached, and the fuzz test (`tests/fuzz.rs`) counts any panic that
//! still gets here as a failure. But a reader we do not own may still have a panic path we
//! have not found; rather than abort the whole program on a hostile image, a panic inside a
//! reader becomes [`Error::ReaderPanic`] and the filesystem object that panicked is marked
//! poisoned (every later call on it fails), because its internal state may be half-updated.
//!
//! This needs `panic = "unwind"` (the default; the workspace never sets `abort`). The
//! panic message is still printed by the process's panic hook; the error carries it too.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::{Error, Result, Where};

/// Runs `f`, turning a panic into [`Error::ReaderPanic`].
pub(crate) fn guard<T>(
    reader: &'static str,
    at: impl FnOnce() -> Where,
    f: impl FnOnce() -> Result<T>,
) -> Result<T> {
    // AssertUnwindSafe: after a panic the only state we keep using is the error; callers
    // that hold reader state across calls poison it (see `fs::Fs::poisoned`).
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(payload) => Err(Error::ReaderPanic {
            at: at(),
            reader,
            message: panic_message(payload.as_ref()),
        }),
    }
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_string()
    }
}
