//! Figures shared by the benchmarks: percentiles and their formatting, and CPU time read
//! from `/proc` (Linux). Included by each bench with `#[path]`.

#![allow(dead_code, reason = "each benchmark uses only some of these")]

use std::time::Duration;

/// Length of a clock tick in `/proc/*/stat` (USER_HZ is 100 on Linux).
pub const TICK_MS: u64 = 10;

/// Busy time of all CPUs together (everything but idle and iowait).
pub fn machine_busy() -> Duration {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let line = stat.lines().next().unwrap_or_default();
    let ticks: Vec<u64> = line.split_whitespace().skip(1).filter_map(|f| f.parse().ok()).collect();
    let busy: u64 = ticks.iter().enumerate().filter(|(i, _)| !matches!(i, 3 | 4)).map(|(_, t)| t).sum();
    ticks_to_duration(busy)
}

pub fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

pub fn percentile(sorted: &[Duration], p: usize) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    // Nearest rank.
    let rank = (sorted.len() * p).div_ceil(100).max(1);
    sorted[rank - 1]
}

/// utime + stime of a process (all its threads), or zero if `/proc` can't tell.
pub fn process_cpu(pid: &str) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at field 3, the state.
    let fields: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, rest)| rest).split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    ticks_to_duration(ticks(11) + ticks(12))
}

pub fn quantiles(sorted: &[Duration]) -> String {
    format!(
        "{} / {} / {}",
        ms(percentile(sorted, 50)),
        ms(percentile(sorted, 90)),
        ms(percentile(sorted, 99))
    )
}

pub fn seconds(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

pub fn thousands(n: f64) -> String {
    let digits = format!("{n:.0}");
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub fn ticks_to_duration(ticks: u64) -> Duration {
    Duration::from_millis(ticks.saturating_mul(TICK_MS))
}

/// Whether the part `part` was asked for: `cargo bench --bench NAME -- part…`; no names: all.
pub fn wanted(part: &str) -> bool {
    let named: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    named.is_empty() || named.iter().any(|w| w == part)
}
