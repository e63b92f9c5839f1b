//! The module's global allocator: mimalloc, asked for a plain block whenever a plain block
//! is aligned enough.
//!
//! The `mimalloc` crate passes every request to `mi_malloc_aligned`. mimalloc 3 serves that
//! from the page of the block's size only when the size is a power of two; any other size
//! (a `Vec` of four read chunks, a producer's message buffer) goes through its generic path
//! and over-allocates from the next size class, so the page of the asked size never gets a
//! block back and every such allocation takes the slow path again (microsoft/mimalloc#889;
//! ~200 instructions each, one or two per `read_batch`, `append` and `send`). Rust's own
//! `System` allocator makes the same choice against `malloc`.
//!
//! Invariants (cited by the `SAFETY` comments below):
//!
//! 1. A block of `mi_malloc`, `mi_zalloc` or `mi_realloc` of `n` bytes is aligned to
//!    [`PLAIN_ALIGN`] (16) if `n >= 16`, and to 8 otherwise: mimalloc rounds block sizes to
//!    multiples of 16 from 16 bytes on and starts pages 16-aligned (`MI_MAX_ALIGN_SIZE`,
//!    asserted in its `_mi_page_malloc_zero`). So a request whose alignment is at most 16
//!    and at most its size is met by a plain block (a size below 16 that is a multiple of
//!    an alignment of 16 cannot exist).
//! 2. `mi_free` frees blocks of the plain and the aligned functions alike, and
//!    `mi_realloc_aligned` / `mi_realloc` accept either.
//! 3. The `GlobalAlloc` contract: `layout` has a non-zero size and a power-of-two alignment;
//!    `ptr` was returned by this allocator with `layout`.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys::{
    mi_free, mi_malloc, mi_malloc_aligned, mi_realloc, mi_realloc_aligned, mi_zalloc, mi_zalloc_aligned,
};

/// The alignment every plain block of at least this size has (invariant 1).
const PLAIN_ALIGN: usize = 16;

/// Whether a plain block of `size` bytes meets `align` (invariant 1).
#[inline]
fn plain_fits(size: usize, align: usize) -> bool {
    align <= PLAIN_ALIGN && align <= size
}

/// mimalloc, with plain blocks where they are aligned enough.
pub(crate) struct Allocator;

// SAFETY: each method returns a block of mimalloc meeting the layout (invariants 1, 3) or
// null, and frees only blocks of mimalloc (invariant 2).
unsafe impl GlobalAlloc for Allocator {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let (size, align) = (layout.size(), layout.align());
        // SAFETY: plain when a plain block meets the alignment (invariant 1); mimalloc's
        // functions take any size and power-of-two alignment (invariant 3).
        unsafe {
            if plain_fits(size, align) { mi_malloc(size) } else { mi_malloc_aligned(size, align) }.cast()
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let (size, align) = (layout.size(), layout.align());
        // SAFETY: as in `alloc` (invariants 1, 3).
        unsafe {
            if plain_fits(size, align) { mi_zalloc(size) } else { mi_zalloc_aligned(size, align) }.cast()
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` is a block of mimalloc, plain or aligned (invariants 2, 3).
        unsafe { mi_free(ptr.cast::<c_void>()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let align = layout.align();
        // SAFETY: `ptr` is a block of mimalloc (invariants 2, 3); the new block is plain
        // only when a plain block of `new_size` meets the alignment (invariant 1).
        unsafe {
            let ptr = ptr.cast::<c_void>();
            if plain_fits(new_size, align) {
                mi_realloc(ptr, new_size)
            } else {
                mi_realloc_aligned(ptr, new_size, align)
            }
            .cast()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every size up to 4 KiB (and a few past the small sizes) with every alignment up to
    /// 4 KiB comes back aligned, allocated, zeroed and reallocated, freed in between so that
    /// blocks are reused.
    #[test]
    fn blocks_meet_their_alignment() {
        let sizes = (1..=4096).chain([8191, 65_537, 1 << 20]);
        for size in sizes {
            for align in (0..=12).map(|s| 1usize << s) {
                let layout = Layout::from_size_align(size, align).unwrap();
                // SAFETY: a non-zero size and a power-of-two alignment (invariant 3); each
                // block is freed once, with its layout.
                unsafe {
                    let a = Allocator.alloc(layout);
                    assert!(!a.is_null() && a as usize % align == 0, "alloc({size}, {align})");
                    let z = Allocator.alloc_zeroed(layout);
                    assert!(!z.is_null() && z as usize % align == 0, "alloc_zeroed({size}, {align})");
                    assert!(std::slice::from_raw_parts(z, size).iter().all(|&b| b == 0));
                    a.write_bytes(7, size);
                    let grown = Allocator.realloc(a, layout, size * 2 + 3);
                    assert!(!grown.is_null() && grown as usize % align == 0, "realloc({size}, {align})");
                    assert!(std::slice::from_raw_parts(grown, size).iter().all(|&b| b == 7));
                    Allocator.dealloc(grown, Layout::from_size_align(size * 2 + 3, align).unwrap());
                    Allocator.dealloc(z, layout);
                }
            }
        }
    }
}
