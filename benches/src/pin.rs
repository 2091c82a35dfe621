//! Pinning a bench thread to one CPU, so that a load test's client and server do not trade
//! cores (or share one) between rounds: on a 2-core machine an unpinned client and server move
//! the bare client's throughput by more than the difference being measured.

/// Pins the calling thread to CPU `cpu` (modulo the CPUs available). Returns whether it took;
/// on other systems than Linux it does nothing and returns `false`.
#[must_use]
pub fn pin_current_thread(cpu: usize) -> bool {
    imp::pin(cpu)
}

/// The number of CPUs this process may run on.
#[must_use]
pub fn available_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
}

#[cfg(target_os = "linux")]
mod imp {
    // `sched_setaffinity` has no safe wrapper in std; the set is a plain local value.
    #[allow(unsafe_code)]
    pub(super) fn pin(cpu: usize) -> bool {
        let cpu = cpu % super::available_cpus();
        // SAFETY: `set` is a zeroed, properly sized `cpu_set_t` owned by this frame; CPU_SET
        // writes one bit inside it, and sched_setaffinity only reads it (pid 0 = this thread).
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &raw const set) == 0
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    pub(super) fn pin(_cpu: usize) -> bool {
        false
    }
}
