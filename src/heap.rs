//! The daemon's heap and the kernel: glibc keeps what the daemon frees unless told to give it
//! back, so resident memory would track the most ever used rather than what is in use. Two
//! calls: fewer malloc arenas at start, and a trim after large frees (idle archive spans, a
//! burst of forgotten inodes).

/// glibc gives each thread that allocates its own arena and rarely returns their free memory:
/// with FUSE, tokio and download threads passing 128-256 KiB buffers around, resident memory
/// then tracks the bytes that went through rather than the bytes in use. Two arenas keep the
/// daemon's footprint at its working set. Call before any thread is started.
pub fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only tunes the allocator; called before any thread is started.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Returns free heap pages to the kernel (after freeing a lot at once).
pub fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free heap pages to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}
