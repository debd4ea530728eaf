//! A server process's CPU time and resident memory, from `/proc/<pid>`; the calling
//! thread's CPU time, from `/proc/thread-self`.

/// Clock ticks per second of `/proc/<pid>/stat` (`USER_HZ`: 100 on Linux, fixed for
/// user space whatever the kernel's HZ).
const USER_HZ: f64 = 100.0;

/// User plus system CPU seconds of `pid` (all its threads), when it exists.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count the
    // fields after its closing parenthesis. utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / USER_HZ)
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
        assert!(cpu_seconds(pid).is_some());
        assert!(rss_bytes(pid).is_some_and(|b| b > 0));
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
