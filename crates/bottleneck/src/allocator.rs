//! The allocator the `bottleneck` binary, the Python module and the benchmarks use:
//! mimalloc, with freed memory kept for ten seconds before it goes back to the system.
//!
//! Training and scoring free and allocate the same few megabytes of tensors every step.
//! mimalloc's default (v3) returns freed pages after one second, so the next steps fault
//! the same memory back in and the kernel zeroes it: 10,883 page faults an epoch of the
//! throughput benchmark against 336 with purging off, and `clear_page_erms` at 4% of a
//! training step's profile. At ten seconds training ran 236-247 samples/s against
//! 233-235 and scoring 761-784 against 709-758 (alternated runs of the throughput example),
//! with the same peak memory: what is kept is what the next step reuses.
//!
//! A binary opts in with `#[global_allocator] static A: bottleneck::allocator::Allocator =
//! bottleneck::allocator::Allocator;` (feature `mimalloc`).

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicBool, Ordering};

use mimalloc::MiMalloc;

/// How long freed memory stays with the process before mimalloc returns it, in ms.
const PURGE_DELAY_MS: std::ffi::c_long = 10_000;

/// mimalloc v3's `mi_option_purge_delay` (`mi_option_t` in its `mimalloc.h`: libmimalloc-sys
/// names the v2 options only).
const MI_OPTION_PURGE_DELAY: std::ffi::c_int = 15;

unsafe extern "C" {
    /// mimalloc's `mi_option_set`: stores the value; allocates nothing.
    fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
}

static TUNED: AtomicBool = AtomicBool::new(false);

/// mimalloc, its options set before the first allocation it serves.
pub struct Allocator;

impl Allocator {
    #[inline(always)]
    fn tune() {
        if !TUNED.load(Ordering::Relaxed) && !TUNED.swap(true, Ordering::Relaxed) {
            // SAFETY: the symbol is mimalloc's (linked through the `mimalloc` crate) and the
            // option index is in its enum; setting an option is safe at any time.
            unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) };
        }
    }
}

// SAFETY: every call goes to MiMalloc unchanged; `tune` only sets an option.
unsafe impl GlobalAlloc for Allocator {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        Self::tune();
        unsafe { MiMalloc.alloc(layout) }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        Self::tune();
        unsafe { MiMalloc.alloc_zeroed(layout) }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { MiMalloc.dealloc(ptr, layout) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        Self::tune();
        unsafe { MiMalloc.realloc(ptr, layout, new_size) }
    }
}

#[cfg(test)]
mod tests {
    use std::ffi::{CStr, c_char, c_void};

    type Output = unsafe extern "C" fn(message: *const c_char, arg: *mut c_void);

    unsafe extern "C" {
        /// mimalloc's listing of its options by name, one message per line, to `out`.
        fn mi_options_print_out(out: Output, arg: *mut c_void);
    }

    unsafe extern "C" fn collect(message: *const c_char, arg: *mut c_void) {
        // SAFETY: `arg` is the String passed below and `message` a C string from mimalloc.
        let text = unsafe { &mut *(arg as *mut String) };
        text.push_str(&unsafe { CStr::from_ptr(message) }.to_string_lossy());
    }

    #[test]
    fn the_purge_delay_is_set_by_the_first_allocation() {
        // The lib's test binary runs on this allocator (lib.rs), so the option is set; it is
        // read back by its name, which checks the index hard-coded above.
        let mut listing = String::new();
        // SAFETY: `collect` matches mimalloc's output callback, `listing` outlives the call.
        unsafe { mi_options_print_out(collect, &mut listing as *mut String as *mut c_void) };
        let line = listing
            .lines()
            .find(|l| l.starts_with("option 'purge_delay'"))
            .unwrap_or_else(|| panic!("no purge_delay in mimalloc's options:\n{listing}"));
        assert_eq!(
            line.trim(),
            format!("option 'purge_delay': {}", super::PURGE_DELAY_MS)
        );
    }
}
