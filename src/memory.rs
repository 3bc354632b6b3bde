//! The machine's memory, as the limits that depend on it read it (shard sizes, the SQL memory
//! limit, the training-size check), and byte counts for people.

/// A `/proc/meminfo` field in bytes (`MemTotal`, `MemAvailable`, …), if readable.
pub fn meminfo(field: &str) -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.split(':').next() == Some(field))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kb.checked_mul(1024)
}

/// `bytes` for people: `512 MiB`, `1.5 GiB` (whole numbers without decimals).
pub fn format_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 || v.fract() == 0.0 {
        format!("{v:.0} {}", UNITS[unit])
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn bytes_for_people() {
        assert_eq!(super::format_bytes(1 << 20), "1 MiB");
        assert_eq!(super::format_bytes(3 << 29), "1.5 GiB");
        assert_eq!(super::format_bytes(12), "12 B");
    }
}
