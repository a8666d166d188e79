//! Process measurements the examples report: peak resident memory (per run, by resetting the kernel's
//! high-water mark between runs) and medians.

/// The peak resident set size of this process since start or since the last [`reset_peak_rss`], in bytes
/// (Linux `VmHWM`); `None` where the OS does not report it.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Resets the peak resident set size to the current one (Linux: writing 5 to `/proc/self/clear_refs`),
/// so the next [`peak_rss_bytes`] measures one run. Returns whether the reset worked.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Formats a byte count as MB (10^6 bytes), or "n/a".
pub fn megabytes(bytes: Option<u64>) -> String {
    match bytes {
        Some(b) => format!("{:.0} MB", b as f64 / 1e6),
        None => "n/a".into(),
    }
}

/// The median of `values` (the mean of the middle two for an even count); NaN when empty.
pub fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}
