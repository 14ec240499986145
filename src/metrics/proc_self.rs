//! The standard Prometheus process collector, read from `/proc/self` at each scrape (what
//! client_golang's `ProcessCollector` exports on Linux, so GitLab.com's ci-runners saturation
//! rules on `process_open_fds / process_max_fds` work unchanged): `process_cpu_seconds_total`,
//! `process_open_fds`, `process_max_fds`, `process_virtual_memory_bytes`,
//! `process_virtual_memory_max_bytes`, `process_resident_memory_bytes` and
//! `process_start_time_seconds`. Owns only reading those files; a series whose file cannot be
//! read (not Linux, a hardened `/proc`) is left out of the scrape, never an error.

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{Counter, Gauge, Opts};

/// Clock ticks per second of `/proc/<pid>/stat` times: `USER_HZ`, 100 on every Linux ABI
/// (client_golang's procfs hard-codes the same value).
const USER_HZ: f64 = 100.0;

/// Reads `/proc/self` at each `collect`. Registered once per manager run.
pub struct ProcessCollector {
    descs: Vec<Desc>,
}

fn gauge(name: &str, help: &str) -> Result<Gauge, prometheus::Error> {
    Gauge::with_opts(Opts::new(name, help))
}

const GAUGES: [(&str, &str); 6] = [
    ("process_open_fds", "Number of open file descriptors."),
    (
        "process_max_fds",
        "Maximum number of open file descriptors.",
    ),
    (
        "process_virtual_memory_bytes",
        "Virtual memory size in bytes.",
    ),
    (
        "process_virtual_memory_max_bytes",
        "Maximum amount of virtual memory available in bytes.",
    ),
    (
        "process_resident_memory_bytes",
        "Resident memory size in bytes.",
    ),
    (
        "process_start_time_seconds",
        "Start time of the process since unix epoch in seconds.",
    ),
];
const CPU: (&str, &str) = (
    "process_cpu_seconds_total",
    "Total user and system CPU time spent in seconds.",
);

impl ProcessCollector {
    /// The collector; its descriptions are fixed, so registering it fails only on a name clash.
    pub fn new() -> Result<ProcessCollector, prometheus::Error> {
        let mut descs = Vec::new();
        descs.extend(
            Counter::with_opts(Opts::new(CPU.0, CPU.1))?
                .desc()
                .into_iter()
                .cloned(),
        );
        for (name, help) in GAUGES {
            descs.extend(gauge(name, help)?.desc().into_iter().cloned());
        }
        Ok(ProcessCollector { descs })
    }
}

/// One reading of `/proc/self`; `None` for what could not be read.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Sample {
    pub(crate) cpu_seconds: Option<f64>,
    pub(crate) open_fds: Option<f64>,
    pub(crate) max_fds: Option<f64>,
    pub(crate) virtual_bytes: Option<f64>,
    pub(crate) virtual_max_bytes: Option<f64>,
    pub(crate) resident_bytes: Option<f64>,
    pub(crate) start_time: Option<f64>,
}

/// The fields of `/proc/<pid>/stat` after the command name: (utime + stime ticks, start ticks
/// since boot, vsize bytes).
fn parse_stat(stat: &str) -> Option<(f64, f64, f64)> {
    // The command name is in parentheses and may hold spaces or parentheses itself.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state): field n is fields[n - 3].
    let num = |n: usize| fields.get(n - 3)?.parse::<f64>().ok();
    Some((num(14)? + num(15)?, num(22)?, num(23)?))
}

/// A soft limit from `/proc/<pid>/limits` ("unlimited" is `u64::MAX`, as Go reports it).
fn parse_limit(limits: &str, name: &str) -> Option<f64> {
    let line = limits.lines().find(|l| l.starts_with(name))?;
    let soft = line[name.len()..].split_whitespace().next()?;
    if soft == "unlimited" {
        Some(u64::MAX as f64)
    } else {
        soft.parse().ok()
    }
}

/// `VmRSS` of `/proc/<pid>/status`, in bytes.
fn parse_rss(status: &str) -> Option<f64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: f64 = line["VmRSS:".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kb * 1024.0)
}

/// `btime` of `/proc/stat`: the boot time in seconds since the epoch.
fn parse_boot_time(stat: &str) -> Option<f64> {
    let line = stat.lines().find(|l| l.starts_with("btime "))?;
    line["btime ".len()..].trim().parse().ok()
}

/// Reads `/proc/self` now.
pub(crate) fn sample() -> Sample {
    let read = |path: &str| std::fs::read_to_string(path).ok();
    let stat = read("/proc/self/stat").and_then(|s| parse_stat(&s));
    let limits = read("/proc/self/limits");
    let boot = read("/proc/stat").and_then(|s| parse_boot_time(&s));
    Sample {
        cpu_seconds: stat.map(|(ticks, _, _)| ticks / USER_HZ),
        open_fds: std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|dir| dir.count() as f64),
        max_fds: limits
            .as_deref()
            .and_then(|l| parse_limit(l, "Max open files")),
        virtual_bytes: stat.map(|(_, _, vsize)| vsize),
        virtual_max_bytes: limits
            .as_deref()
            .and_then(|l| parse_limit(l, "Max address space")),
        resident_bytes: read("/proc/self/status").and_then(|s| parse_rss(&s)),
        start_time: stat
            .zip(boot)
            .map(|((_, start, _), boot)| boot + start / USER_HZ),
    }
}

impl Collector for ProcessCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let s = sample();
        let mut families = Vec::new();
        if let Some(cpu) = s.cpu_seconds {
            if let Ok(counter) = Counter::with_opts(Opts::new(CPU.0, CPU.1)) {
                counter.inc_by(cpu.max(0.0));
                families.extend(counter.collect());
            }
        }
        let values = [
            s.open_fds,
            s.max_fds,
            s.virtual_bytes,
            s.virtual_max_bytes,
            s.resident_bytes,
            s.start_time,
        ];
        for ((name, help), value) in GAUGES.into_iter().zip(values) {
            let (Some(value), Ok(g)) = (value, gauge(name, help)) else {
                continue;
            };
            g.set(value);
            families.extend(g.collect());
        }
        families
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_files() {
        let stat =
            "4242 (flo tilla (x)) S 1 2 3 4 5 6 7 8 9 10 150 50 0 0 20 0 8 0 12345 987654 321";
        assert_eq!(parse_stat(stat), Some((200.0, 12345.0, 987654.0)));
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            1024                 524288               files\n\
                      Max address space         unlimited            unlimited            bytes\n";
        assert_eq!(parse_limit(limits, "Max open files"), Some(1024.0));
        assert_eq!(
            parse_limit(limits, "Max address space"),
            Some(u64::MAX as f64)
        );
        assert_eq!(
            parse_rss("Name:\tx\nVmRSS:\t   2048 kB\n"),
            Some(2048.0 * 1024.0)
        );
        assert_eq!(parse_boot_time("cpu 1 2\nbtime 1700000000\n"), Some(1.7e9));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn reads_this_process() {
        let s = sample();
        assert!(s.open_fds.unwrap_or(0.0) >= 3.0, "{s:?}");
        assert!(
            s.max_fds.unwrap_or(0.0) >= s.open_fds.unwrap_or(f64::MAX),
            "{s:?}"
        );
        assert!(s.resident_bytes.unwrap_or(0.0) > 0.0, "{s:?}");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        let start = s.start_time.unwrap_or(0.0);
        assert!(start > 1.5e9 && start <= now + 1.0, "{s:?}");
    }
}
