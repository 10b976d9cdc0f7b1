//! The conventional `process_*` metrics (resident memory, CPU time, open
//! file descriptors), read from `/proc/self` at each scrape. Off Linux the
//! collector reports nothing.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Unit;

/// Registered once per metrics registry; holds no state of its own.
#[derive(Debug, Default)]
pub struct ProcessCollector;

/// One reading of `/proc/self`.
#[derive(Debug, Default, PartialEq)]
struct Reading {
    cpu_seconds: f64,
    resident_bytes: i64,
    virtual_bytes: i64,
    open_fds: i64,
    max_fds: Option<i64>,
    start_time_seconds: Option<f64>,
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(r) = read() else { return Ok(()) };
        let cpu = ConstCounter::new(r.cpu_seconds);
        cpu.encode(encoder.encode_descriptor(
            "process_cpu",
            "Total user and system CPU time spent",
            Some(&Unit::Seconds),
            cpu.metric_type(),
        )?)?;
        let gauges = [
            (
                "process_resident_memory",
                "Resident memory size",
                Some(Unit::Bytes),
                Some(r.resident_bytes),
            ),
            (
                "process_virtual_memory",
                "Virtual memory size",
                Some(Unit::Bytes),
                Some(r.virtual_bytes),
            ),
            (
                "process_open_fds",
                "Open file descriptors",
                None,
                Some(r.open_fds),
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors",
                None,
                r.max_fds,
            ),
        ];
        for (name, help, unit, value) in gauges {
            let Some(value) = value else { continue };
            let gauge = ConstGauge::new(value);
            gauge.encode(encoder.encode_descriptor(
                name,
                help,
                unit.as_ref(),
                gauge.metric_type(),
            )?)?;
        }
        if let Some(start) = r.start_time_seconds {
            let gauge = ConstGauge::new(start);
            gauge.encode(encoder.encode_descriptor(
                "process_start_time",
                "Start time of the process since the Unix epoch",
                Some(&Unit::Seconds),
                gauge.metric_type(),
            )?)?;
        }
        Ok(())
    }
}

fn read() -> Option<Reading> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let mut r = parse_stat(&stat, clock_ticks(), page_size())?;
    r.open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as i64;
    r.max_fds = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|l| parse_max_fds(&l));
    if let Some(since_boot) = r.start_time_seconds {
        r.start_time_seconds = boot_time().map(|boot| boot + since_boot);
    }
    Some(r)
}

/// Fields 14/15 (utime, stime, in ticks), 22 (starttime, ticks since boot),
/// 23 (vsize, bytes) and 24 (rss, pages) of `/proc/self/stat`; the command
/// name (field 2) may hold spaces and parentheses, so fields are counted
/// from the last `)`.
fn parse_stat(stat: &str, ticks: f64, page: i64) -> Option<Reading> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state).
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<f64>().ok());
    Some(Reading {
        cpu_seconds: (field(14)? + field(15)?) / ticks,
        start_time_seconds: field(22).map(|t| t / ticks),
        virtual_bytes: field(23)? as i64,
        resident_bytes: field(24)? as i64 * page,
        ..Reading::default()
    })
}

fn parse_max_fds(limits: &str) -> Option<i64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn boot_time() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}

// Linux on every architecture subcar ships for uses 100 Hz for the values
// in /proc and 4 KiB pages; reading them through libc would add a
// dependency for two constants.
fn clock_ticks() -> f64 {
    100.0
}

fn page_size() -> i64 {
    4096
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_an_awkward_command_name() {
        let stat = "4242 (sub car) (x)) S 1 4242 4242 0 -1 4194560 1 0 0 0 250 50 0 0 20 0 9 0 1000 104857600 2560 18446744073709551615";
        let r = parse_stat(stat, 100.0, 4096).unwrap();
        assert_eq!(r.cpu_seconds, 3.0);
        assert_eq!(r.virtual_bytes, 104_857_600);
        assert_eq!(r.resident_bytes, 2560 * 4096);
        assert_eq!(r.start_time_seconds, Some(10.0));
    }

    #[test]
    fn garbage_stat_reads_as_nothing() {
        assert_eq!(parse_stat("no parenthesis", 100.0, 4096), None);
        assert_eq!(parse_stat("1 (x) S 1 2", 100.0, 4096), None);
    }

    #[test]
    fn parses_the_soft_fd_limit() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units\nMax open files            1024                 524288               files\n";
        assert_eq!(parse_max_fds(limits), Some(1024));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn reads_this_process() {
        let r = read().expect("/proc/self is readable");
        assert!(r.resident_bytes > 0);
        assert!(r.open_fds > 0);
    }
}
