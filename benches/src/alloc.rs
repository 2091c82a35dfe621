//! A counting global allocator: allocations per call, measured in the same run as the time.
//!
//! Each bench binary installs it with
//!
//! ```
//! use resilience_benches::alloc::{CountingAlloc, allocations, is_counting};
//!
//! #[global_allocator]
//! static ALLOC: CountingAlloc = CountingAlloc;
//!
//! assert!(is_counting());
//! let before = allocations();
//! let v = std::hint::black_box(vec![1_u8; 16]);
//! assert_eq!(allocations() - before, 1);
//! # drop(v);
//! ```
//!
//! The counter is thread-local, so a measurement on one thread is not disturbed by another
//! thread's allocations (criterion's own bookkeeping, a runtime's workers) and the counting itself
//! costs no contended atomic. Reallocations count as allocations (a `Vec` growing is a call to the
//! allocator all the same); frees are not counted.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

thread_local! {
    // `const` init and a `Copy` payload: no lazy registration, no destructor, so reading it from
    // inside the allocator can never allocate or recurse.
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

/// The system allocator, counting every allocation and reallocation of the current thread.
#[derive(Debug, Clone, Copy, Default)]
pub struct CountingAlloc;

#[inline]
fn bump() {
    // `try_with` fails only while the thread is being torn down; those allocations are not ours.
    let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
}

// One of the two places this workspace needs `unsafe` (the other is `pin.rs`): `GlobalAlloc`
// is an unsafe trait. Every method forwards to `System` with the caller's own arguments, so the
// contract `System` upholds is the contract we uphold; the only addition is a thread-local
// counter increment.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for CountingAlloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        bump();
        // SAFETY: forwarded unchanged; the caller upholds `GlobalAlloc::alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        bump();
        // SAFETY: forwarded unchanged; the caller upholds `GlobalAlloc::alloc_zeroed`'s contract.
        unsafe { System.alloc_zeroed(layout) }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged; `ptr` was allocated by `System` through this allocator.
        unsafe { System.dealloc(ptr, layout) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        bump();
        // SAFETY: forwarded unchanged; the caller upholds `GlobalAlloc::realloc`'s contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// How many allocations the current thread has made since it started (only counts while
/// [`CountingAlloc`] is the global allocator; otherwise always 0).
#[must_use]
pub fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

/// Whether [`CountingAlloc`] is installed: allocates once and looks at the counter.
#[must_use]
pub fn is_counting() -> bool {
    let before = allocations();
    let probe = std::hint::black_box(Box::new(0_u8));
    drop(probe);
    allocations() > before
}
