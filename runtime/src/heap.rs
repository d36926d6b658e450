//! The process heap: glibc keeps pages freed by `free` in its arenas for reuse, so a
//! long-lived process (the agent, every shim) stays at its peak heap unless it asks
//! for them to be handed back.

/// Hands the heap pages that are free now back to the kernel (`malloc_trim(0)`: every
/// arena, not only the top of the heap). Costs a walk of the free lists: call it after
/// bursts, not per request.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks glibc's own free lists; it takes no pointers.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn freed_heap_goes_back_to_the_kernel() {
        fn rss_kb() -> u64 {
            std::fs::read_to_string("/proc/self/status")
                .ok()
                .and_then(|s| {
                    s.lines()
                        .find(|l| l.starts_with("VmRSS:"))
                        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
                })
                .unwrap_or(0)
        }
        // Many small blocks (below the mmap threshold, so they live in an arena), all
        // touched, then all but the last freed: the arena's top stays in use, so only
        // malloc_trim can return the pages under it.
        let mut blocks: Vec<Vec<u8>> = (0..4096).map(|_| vec![1u8; 16 * 1024]).collect();
        let last = blocks.pop();
        let before = rss_kb();
        drop(blocks);
        super::release_free_memory();
        let after = rss_kb();
        drop(last);
        if cfg!(all(target_os = "linux", target_env = "gnu")) {
            assert!(
                after + 16 * 1024 < before,
                "RSS {before} kB before, {after} kB after: less than 16 MiB of 64 returned"
            );
        }
    }
}
