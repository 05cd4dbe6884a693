//! Resident set size, read from /proc by the child about itself.
//!
//! Peak RSS comes from the parent's `wait4` rusage (see [`crate::launch`]); this module gives the
//! child's RSS at a point in time (`/proc/self/statm`, in pages) and its own high-water mark
//! (`VmHWM` in `/proc/self/status`), which unlike rusage starts fresh at `exec`.

/// The resident size in KiB from the text of `/proc/<pid>/statm` ("size resident shared ..." in
/// pages), or None if it does not parse.
pub fn parse_statm(text: &str, page_size: u64) -> Option<u64> {
    let resident: u64 = text.split_ascii_whitespace().nth(1)?.parse().ok()?;
    Some(resident * page_size / 1024)
}

/// The value in KiB of a `Key:   1234 kB` line of `/proc/<pid>/status`.
pub fn parse_status_kb(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(key)?.strip_prefix(':')?;
        let mut parts = rest.split_ascii_whitespace();
        let value = parts.next()?.parse().ok()?;
        (parts.next() == Some("kB")).then_some(value)
    })
}

/// This process's resident size now, in KiB (0 if /proc is unavailable).
pub fn current_kb() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|t| parse_statm(&t, page_size()))
        .unwrap_or(0)
}

/// This process's peak resident size since exec, in KiB (0 if unavailable).
pub fn high_water_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|t| parse_status_kb(&t, "VmHWM"))
        .unwrap_or(0)
}

fn page_size() -> u64 {
    // SAFETY: sysconf only reads a system constant.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 {
        n as u64
    } else {
        4096
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statm_resident_field_in_kib() {
        assert_eq!(parse_statm("2710 585 443 223 0 166 0\n", 4096), Some(2340));
        assert_eq!(parse_statm("10 3 1 1 0 1 0", 16384), Some(48));
        assert_eq!(parse_statm("10", 4096), None);
        assert_eq!(parse_statm("10 x 1", 4096), None);
        assert_eq!(parse_statm("", 4096), None);
    }

    #[test]
    fn status_lines() {
        let text = "Name:\tcat\nVmPeak:\t    8000 kB\nVmHWM:\t     1234 kB\nVmRSS:\t  1000 kB\nThreads:\t1\n";
        assert_eq!(parse_status_kb(text, "VmHWM"), Some(1234));
        assert_eq!(parse_status_kb(text, "VmRSS"), Some(1000));
        assert_eq!(parse_status_kb(text, "VmSwap"), None);
        assert_eq!(parse_status_kb(text, "Threads"), None, "no kB unit");
        assert_eq!(parse_status_kb("VmHWMx: 5 kB", "VmHWM"), None);
    }

    #[test]
    fn live_values_grow_with_touched_memory() {
        let before = current_kb();
        assert!(before > 0);
        let v = vec![1u8; 64 << 20];
        let during = current_kb();
        assert!(during >= before + 60 * 1024, "{before} -> {during}");
        assert!(high_water_kb() >= during);
        drop(v);
    }
}
