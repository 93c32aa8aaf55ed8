//! The process-wide memory allocator: mimalloc, set to keep freed memory.
//!
//! Tensor code allocates and frees buffers of many megabytes at every operation. The system
//! allocator maps each one fresh from the kernel, which zeroes every page: on a SwinUNETR
//! training step that page clearing was about half the run time. mimalloc reuses freed blocks;
//! with purging off it never hands them back, so peak memory, not churn, sets the footprint.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay`: position 15 of `mi_option_e` in both mimalloc 2 and 3 (libmimalloc-sys
/// 0.1 does not name it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Turns off returning freed memory to the OS. Call first thing in `main`.
pub fn retain_freed_memory() {
    // SAFETY: mi_option_set only stores an integer in mimalloc's option table.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
}
