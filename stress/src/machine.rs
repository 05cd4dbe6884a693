//! Facts about the machine a report was measured on: date, CPU model, CPU count, kernel.

/// The current UTC time as "YYYY-MM-DD HH:MM UTC".
pub fn utc_now() -> String {
    // SAFETY: time with a null argument only returns the time.
    let t = unsafe { libc::time(std::ptr::null_mut()) };
    // SAFETY: an all-zero tm is a valid value to be overwritten.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are to live locals.
    if unsafe { libc::gmtime_r(&t, &mut tm) }.is_null() {
        return "unknown date".to_string();
    }
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02} UTC",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min
    )
}

/// The CPU model named in a `/proc/cpuinfo` text.
pub fn cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        matches!(k.trim(), "model name" | "Model" | "cpu model")
            .then(|| v.trim().to_string())
            .filter(|v| !v.is_empty())
    })
}

/// This machine's CPU model, or "unknown CPU".
pub fn cpu() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| cpu_model(&t))
        .unwrap_or_else(|| "unknown CPU".to_string())
}

/// The kernel release (`uname -r`).
pub fn kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".to_string())
}

/// The number of CPUs this process may run on.
pub fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_model_lines() {
        let t = "processor\t: 0\nvendor_id\t: X\nmodel name\t: Some CPU @ 2.0GHz\nflags\t: a b\n";
        assert_eq!(cpu_model(t).as_deref(), Some("Some CPU @ 2.0GHz"));
        assert_eq!(cpu_model("processor : 0\n"), None);
    }

    #[test]
    fn date_shape() {
        let d = utc_now();
        assert_eq!(d.len(), "2026-11-22 10:00 UTC".len(), "{d}");
        assert!(d.starts_with("20") && d.ends_with(" UTC"));
        assert!(cpus() >= 1);
        assert!(!kernel().is_empty());
    }
}
