//! Printing: aligned tables, `key: value` blocks and `--format json`.

use serde::Serialize;

/// How a command prints its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Human-readable (the default).
    Table,
    /// Indented JSON, for scripts.
    Json,
}

/// Prints `value` as pretty JSON.
pub fn json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Prints rows under a header, columns padded to their widest cell (three spaces apart, as
/// docker does).
pub fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            out.push_str(cell);
            if i != last {
                out.push_str(&" ".repeat(w - cell.chars().count() + 3));
            }
        }
        println!("{out}");
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

/// Bytes in docker's style: decimal units, three significant digits (`1.23MB`).
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "kB", "MB", "GB", "TB", "PB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes}B")
    } else {
        let digits = if value >= 100.0 {
            0
        } else if value >= 10.0 {
            1
        } else {
            2
        };
        format!("{value:.digits$}{}", UNITS[unit])
    }
}

/// An RFC 3339 time as docker shows it: `5 minutes ago`.
pub fn ago(rfc3339: Option<&str>) -> String {
    let Some(then) = rfc3339.and_then(|t| humantime::parse_rfc3339_weak(t).ok()) else {
        return "N/A".to_owned();
    };
    let secs = std::time::SystemTime::now()
        .duration_since(then)
        .map_or(0, |d| d.as_secs());
    let (n, unit) = match secs {
        0..=1 => return "Less than a second ago".to_owned(),
        2..=59 => (secs, "second"),
        60..=3599 => (secs / 60, "minute"),
        3600..=86_399 => (secs / 3600, "hour"),
        86_400..=1_209_599 => (secs / 86_400, "day"),
        1_209_600..=5_183_999 => (secs / 604_800, "week"),
        5_184_000..=63_071_999 => (secs / 2_592_000, "month"),
        _ => (secs / 31_536_000, "year"),
    };
    if n == 1 {
        format!("{} {unit} ago", if unit == "hour" { "An" } else { "1" })
    } else {
        format!("{n} {unit}s ago")
    }
}

#[cfg(test)]
mod tests {
    use super::{ago, human_size};

    #[test]
    fn relative_times() {
        assert_eq!(ago(None), "N/A");
        assert_eq!(ago(Some("garbage")), "N/A");
        let t = humantime::format_rfc3339(
            std::time::SystemTime::now() - std::time::Duration::from_secs(300),
        )
        .to_string();
        assert_eq!(ago(Some(&t)), "5 minutes ago");
    }

    #[test]
    fn sizes_like_docker() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(1234), "1.23kB");
        assert_eq!(human_size(12_345_678), "12.3MB");
        assert_eq!(human_size(123_456_789_012), "123GB");
    }
}
