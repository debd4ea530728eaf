//! A server process's CPU time and resident memory, from `/proc/<pid>`; the calling
//! thread's CPU time, from `/proc/thread-self`.

/// Clock ticks per second of `/proc/<pid>/stat` (`USER_HZ`: 100 on Linux, fixed for
/// user space whatever the kernel's HZ).
const USER_HZ: f64 = 100.0;

/// A process's CPU time so far, split where it ran.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CpuTimes {
    /// Seconds in user space.
    pub user: f64,
    /// Seconds in the kernel: system calls, and the interrupts and softirqs that
    /// came while the process ran (on loopback, the receiving side's TCP input of
    /// what it sent).
    pub system: f64,
}

impl CpuTimes {
    /// User plus system seconds.
    pub fn total(self) -> f64 {
        self.user + self.system
    }
}

/// The CPU time spent between two samples of one process: (all of it, the kernel's),
/// when both samples exist.
pub fn spent(before: Option<CpuTimes>, after: Option<CpuTimes>) -> (Option<f64>, Option<f64>) {
    match (before, after) {
        (Some(b), Some(a)) => (Some(a.total() - b.total()), Some(a.system - b.system)),
        _ => (None, None),
    }
}

/// User and system CPU seconds of `pid` (all its threads), when it exists. The
/// kernel charges each scheduler tick to one side or the other and reports them in
/// hundredths of a second: a window of seconds holds hundreds of them.
pub fn cpu_times(pid: u32) -> Option<CpuTimes> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count the
    // fields after its closing parenthesis. utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some(CpuTimes {
        user: utime / USER_HZ,
        system: stime / USER_HZ,
    })
}

/// Resident memory of `pid` in bytes (`VmRSS`), when it exists.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// CPU nanoseconds the calling thread has run, when the kernel says.
///
/// The first field of `/proc/thread-self/schedstat` is the scheduler's own count of
/// time on a CPU, in nanoseconds (`CONFIG_SCHED_INFO`, on in every distribution
/// kernel). Without it, `/proc/thread-self/stat`'s user + system ticks: 10 ms steps,
/// still usable over windows of seconds. Read from /proc rather than through
/// `clock_gettime(CLOCK_THREAD_CPUTIME_ID)`, which would need `unsafe` and libc.
pub fn thread_cpu_ns() -> Option<u64> {
    if let Ok(text) = std::fs::read_to_string("/proc/thread-self/schedstat") {
        if let Some(ns) = text.split_whitespace().next().and_then(|f| f.parse().ok()) {
            return Some(ns);
        }
    }
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) * (1_000_000_000 / USER_HZ as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_cpu_time_and_memory() {
        let pid = std::process::id();
        let times = cpu_times(pid).expect("CPU times");
        assert!(times.user >= 0.0 && times.system >= 0.0);
        assert_eq!(times.total(), times.user + times.system);
        assert!(rss_bytes(pid).is_some_and(|b| b > 0));
    }

    #[test]
    fn spent_is_the_difference_of_two_samples_and_nothing_without_both() {
        let before = CpuTimes {
            user: 1.0,
            system: 0.5,
        };
        let after = CpuTimes {
            user: 1.5,
            system: 2.0,
        };
        assert_eq!(spent(Some(before), Some(after)), (Some(2.0), Some(1.5)));
        assert_eq!(spent(None, Some(after)), (None, None));
        assert_eq!(spent(Some(before), None), (None, None));
    }

    #[test]
    fn this_thread_cpu_time_grows_with_work() {
        let before = thread_cpu_ns().expect("thread CPU time");
        // Spin for 30 ms of wall time: on a busy machine the thread may get less of
        // it, but it gets something, and the count never goes back.
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while start.elapsed() < std::time::Duration::from_millis(30) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        let after = thread_cpu_ns().expect("thread CPU time");
        assert!(after > before, "{before} -> {after}");
    }
}
