//! Process-wide settings for the numeric work, made once at the start of `main` (and of
//! the benchmark harness), before any thread exists.

/// Applies [`keep_freed_memory`] and [`fix_thread_count`].
pub fn tune() {
    keep_freed_memory();
    fix_thread_count();
}

/// Makes glibc keep freed memory for reuse: large blocks from the heap, not `mmap`, and
/// free heap never trimmed (given back to the system only when the process ends). A
/// no-op on other C libraries.
///
/// An iteration allocates and frees hundreds of tensors of tens of megabytes; glibc
/// serves anything over 32 MB with a fresh `mmap` and returns it on free, so every such
/// tensor costs page faults and the kernel zeroing its pages (a fifth of an iteration's
/// time at 256², measured with `clipcanvas bench`). Keeping large blocks in the heap
/// lets the next tensor reuse them. (A 2 GB trim threshold still let the heap's top be
/// given back and faulted in again after each backward pass: ten times the page faults.)
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        #[expect(unsafe_code, reason = "mallopt is a C function; it only sets two of glibc's thresholds")]
        // SAFETY: mallopt takes plain integers and is safe to call at any time; a refused
        // setting leaves glibc's default in place.
        unsafe {
            libc::mallopt(libc::M_MMAP_MAX, 0);
            libc::mallopt(libc::M_TRIM_THRESHOLD, -1);
        }
    }
}

/// Gives the free heap back to the system (glibc's `malloc_trim`). [`keep_freed_memory`]
/// keeps it for the next iteration while a run goes on; once a run has stopped, the
/// studio would otherwise hold its peak (gigabytes at 512²) until it quits. A no-op on
/// other C libraries.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        #[expect(unsafe_code, reason = "malloc_trim is a C function over glibc's own free lists")]
        // SAFETY: malloc_trim only returns free memory to the system; it may be called at
        // any time from any thread.
        unsafe {
            libc::malloc_trim(0);
        }
    }
}

/// Sets `RAYON_NUM_THREADS` to the number of physical cores when the user has not set
/// it. candle asks for its thread count before every matrix product and, without the
/// variable, counts the cores by reading `/proc/cpuinfo` each time: some 5 000 reads per
/// train-demo step, seconds of kernel time. The count is the one candle would find.
pub fn fix_thread_count() {
    let set = std::env::var("RAYON_NUM_THREADS").ok().and_then(|v| v.parse::<usize>().ok()).is_some_and(|n| n > 0);
    if !set {
        std::env::set_var("RAYON_NUM_THREADS", num_cpus::get_physical().max(1).to_string());
    }
}
