//! imgbuild-inspect against real images: nixpkgs-style images made with the classic tools
//! (checked with blkid, dumpe2fs, mtools, the fatfs crate), hand-made hostile images, the
//! corruption fuzz test, and the regression inputs it found.

#![allow(clippy::unwrap_used)]

mod bios;
mod common;
mod fuzz;
use imgbuild_testutil::harness;
mod hostile;
mod iso;
mod live;
mod readers;
mod regressions;
mod squash;

use std::alloc::{GlobalAlloc, Layout, System};

/// Reports every allocation request's size to the harness (per thread), so the fuzz test can
/// check that no corrupt image makes a reader allocate out of proportion.
struct Counting;

// SAFETY: every method forwards to `System` with the caller's arguments unchanged; the
// report is a thread-local `Cell` update that never allocates and never affects the result.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        harness::note_allocation(layout.size());
        // SAFETY: forwarded with the same layout, which the caller guarantees is valid.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` with this layout (see `alloc`/`realloc`).
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        harness::note_allocation(new_size);
        // SAFETY: the caller's guarantees for `realloc` are passed on unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;
