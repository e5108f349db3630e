//! The process's memory policy. An iteration allocates and frees hundreds of tensors of
//! tens of megabytes; glibc serves anything over 32 MB with a fresh `mmap` and returns it
//! on free, so every such tensor costs page faults and the kernel zeroing its pages
//! (a fifth of an iteration's time at 256², measured with `clipcanvas bench`). Keeping
//! large blocks in the heap lets the next tensor reuse them.

/// Makes glibc keep freed memory for reuse: large blocks from the heap, not `mmap`, and
/// up to 2 GB of free heap kept rather than trimmed. Call once, early in `main`. A no-op
/// on other C libraries.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        #[expect(unsafe_code, reason = "mallopt is a C function; it only sets two of glibc's thresholds")]
        // SAFETY: mallopt takes plain integers and is safe to call at any time; a refused
        // setting leaves glibc's default in place.
        unsafe {
            libc::mallopt(libc::M_MMAP_MAX, 0);
            libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        }
    }
}
