//! Sizes and durations as users write them: `4G`, `60%`, `30s`, `5m`.

use crate::error::{Result, SluiceError};

/// Memory a session may use when nothing is configured: this share of physical memory.
pub const DEFAULT_MEMORY_FRACTION: f64 = 0.7;

/// The default memory limit: a fraction of physical memory, or of the cgroup limit when lower.
pub fn default_memory_limit() -> usize {
    let total = physical_memory().unwrap_or(4 << 30);
    (total as f64 * DEFAULT_MEMORY_FRACTION) as usize
}

fn physical_memory() -> Option<usize> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok();
    let total = meminfo.and_then(|m| {
        m.lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<usize>().ok())
            .map(|kb| kb * 1024)
    });
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok());
    match (total, cgroup) {
        (Some(t), Some(c)) => Some(t.min(c)),
        (t, c) => t.or(c),
    }
}

/// Parse a memory size: `4G`, `512MB`, `1.5GiB`, `123456` (bytes) or `60%` of RAM.
pub fn parse_memory_size(text: &str) -> Result<usize> {
    let t = text.trim();
    let bad = || {
        SluiceError::Usage(format!(
            "invalid memory size `{text}`: expected a number with K, M, G or T (e.g. 4G), or a percentage (e.g. 60%)"
        ))
    };
    if let Some(pct) = t.strip_suffix('%') {
        let p: f64 = pct.trim().parse().map_err(|_| bad())?;
        if !(p > 0.0 && p <= 100.0) {
            return Err(bad());
        }
        let total = physical_memory().unwrap_or(4 << 30);
        return Ok((total as f64 * p / 100.0) as usize);
    }
    let upper = t.to_ascii_uppercase();
    let digits_end = upper
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(upper.len());
    let (num, unit) = upper.split_at(digits_end);
    let value: f64 = num.parse().map_err(|_| bad())?;
    let mult: f64 = match unit.trim() {
        "" | "B" => 1.0,
        "K" | "KB" | "KIB" => 1024.0,
        "M" | "MB" | "MIB" => 1024.0 * 1024.0,
        "G" | "GB" | "GIB" => 1024.0 * 1024.0 * 1024.0,
        "T" | "TB" | "TIB" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return Err(bad()),
    };
    let bytes = value * mult;
    if bytes < 1.0 {
        return Err(bad());
    }
    Ok(bytes as usize)
}

/// `30s`, `5m`, `1h` or plain seconds.
pub fn parse_duration(text: &str) -> Result<std::time::Duration> {
    let t = text.trim();
    let (number, unit) = t.split_at(t.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(t.len()));
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| SluiceError::Usage(format!("{text}: expected a duration like 30s or 5m")))?;
    let seconds = match unit.trim() {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        other => {
            return Err(SluiceError::Usage(format!(
                "{text}: unknown unit `{other}`, use ms, s, m or h"
            )))
        }
    };
    if !(seconds > 0.0 && seconds.is_finite()) {
        return Err(SluiceError::Usage(format!(
            "{text}: must be more than zero"
        )));
    }
    Ok(std::time::Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_sizes() {
        assert_eq!(parse_memory_size("4G").unwrap(), 4 << 30);
        assert_eq!(parse_memory_size("512mb").unwrap(), 512 << 20);
        assert_eq!(parse_memory_size("1.5GiB").unwrap(), 3 << 29);
        assert_eq!(parse_memory_size("1000").unwrap(), 1000);
        assert!(parse_memory_size("50%").unwrap() > 0);
        assert!(parse_memory_size("lots").is_err());
        assert!(parse_memory_size("4X").is_err());
        assert!(parse_memory_size("0").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s").unwrap().as_secs(), 30);
        assert_eq!(parse_duration("5m").unwrap().as_secs(), 300);
        assert_eq!(parse_duration("250ms").unwrap().as_millis(), 250);
        assert_eq!(parse_duration("2").unwrap().as_secs(), 2);
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("5d")
            .unwrap_err()
            .to_string()
            .contains("unknown unit `d`"));
    }
}
