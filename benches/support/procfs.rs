//! What the scale benches read of the manager's process (`/proc/<pid>`), and the
//! least-squares slope they fit to samples. Shared by `scale`, `soak` and `docker_scale`
//! (each includes it with `#[path]`; not every bench uses every item).
#![allow(dead_code)]

/// One reading of the manager's /proc.
#[derive(Debug, Clone, Copy, Default)]
pub struct Proc {
    pub rss_kb: u64,
    pub anon_kb: u64,
    pub hwm_kb: u64,
    pub cpu_ms: f64,
    pub fds: u64,
}

/// The manager's RSS, anonymous RSS, peak RSS, CPU time and open descriptors now.
pub fn read_proc(pid: u32, ticks: f64) -> Proc {
    let mut p = Proc::default();
    if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
        for line in status.lines() {
            let kb = || {
                line.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0)
            };
            if line.starts_with("VmRSS:") {
                p.rss_kb = kb();
            } else if line.starts_with("RssAnon:") {
                p.anon_kb = kb();
            } else if line.starts_with("VmHWM:") {
                p.hwm_kb = kb();
            }
        }
    }
    if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // Fields after the command's closing parenthesis; utime and stime are 14th and 15th.
        if let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) {
            let f: Vec<&str> = rest.split_whitespace().collect();
            let t = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
            p.cpu_ms = (t(11) + t(12)) * 1000.0 / ticks;
        }
    }
    p.fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count() as u64)
        .unwrap_or(0);
    p
}

/// The kernel's clock ticks per second (`getconf CLK_TCK`, 100 if that fails).
pub fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// Least-squares slope of `y` over `x`.
pub fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    let (sx, sy) = points
        .iter()
        .fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
    let (mx, my) = (sx / n, sy / n);
    let num: f64 = points.iter().map(|(x, y)| (x - mx) * (y - my)).sum();
    let den: f64 = points.iter().map(|(x, _)| (x - mx) * (x - mx)).sum();
    if den == 0.0 {
        0.0
    } else {
        num / den
    }
}
