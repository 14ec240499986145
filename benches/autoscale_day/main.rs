//! The autoscaling simulation bench (not a test): one day of job arrivals run through the real
//! pool code for a sweep of static `IdleCount = k` and for the adaptive policy, on a paused
//! tokio clock against an in-process cloud (`cloud.rs`), one fresh runtime per policy
//! (`day.rs`). Prints, per policy: jobs, p50/p95/p99 wait (arrival → VM leased), the share of
//! jobs within the SLO (wait ≤ 10 s), idle VM-seconds (insert → deletion less job time, from
//! the first arrival to the last job's end), VM creations and peak VMs; then verdicts, and last
//! the `efficiency:` line comparing the adaptive policy with the smallest static k meeting the
//! SLO. Exits 1 when no static k in the sweep meets the SLO (`K=none`), or the adaptive policy
//! misses the SLO or saves less than 40 %.
//!
//! Run: `cargo bench --bench autoscale_day` (the shipped day, `gitlab_day.csv` here), or
//! `cargo bench --bench autoscale_day -- --arrivals FILE` / `FLOTILLA_ARRIVALS=FILE` (CSV
//! `arrival_s,duration_s` with that header), or `-- --day-seed N` for a generated day.
//! `-- --generate N > day.csv` prints a generated day (seed N) and exits; `--boot-seed N`
//! changes the cloud's boot-time draws (default 1); `--sweep 20,25` tries only those static k
//! (`--sweep none`: the adaptive policy only).
//! The `--bench` argument cargo appends is ignored.

mod cloud;
mod day;

use chrono::{TimeZone, Utc};
use day::{DayResult, Policy, SLO_SHARE, SLO_WAIT_S};
use std::process::ExitCode;
use testkit::arrivals::{self, Arrival, DayShape};

/// The static sweep: k in steps of this, then refined by one below the first k that meets the
/// SLO.
const SWEEP_STEP: u32 = 5;
/// The largest static k tried.
const SWEEP_MAX: u32 = 200;
/// The adaptive policy's ceiling (IdleCount).
const ADAPTIVE_CEILING: u32 = 200;
/// The saving the adaptive policy must reach.
const TARGET_SAVING: f64 = 0.40;

struct Args {
    arrivals: Option<String>,
    day_seed: Option<u64>,
    generate: Option<u64>,
    boot_seed: u64,
    /// `--sweep K1,K2,…`: only these static k (ascending), instead of the default sweep.
    sweep: Option<Vec<u32>>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        arrivals: std::env::var("FLOTILLA_ARRIVALS")
            .ok()
            .filter(|v| !v.is_empty()),
        day_seed: None,
        generate: None,
        boot_seed: 1,
        sweep: None,
    };
    let mut it = std::env::args().skip(1);
    let number = |flag: &str, v: Option<String>| {
        v.and_then(|v| v.parse::<u64>().ok())
            .ok_or_else(|| format!("{flag} needs a number"))
    };
    while let Some(a) = it.next() {
        match a.as_str() {
            "--bench" => {}
            "--arrivals" => args.arrivals = Some(it.next().ok_or("--arrivals needs a file")?),
            "--day-seed" => args.day_seed = Some(number("--day-seed", it.next())?),
            "--generate" => args.generate = Some(number("--generate", it.next())?),
            "--boot-seed" => args.boot_seed = number("--boot-seed", it.next())?,
            "--sweep" => {
                let list = it.next().ok_or("--sweep needs a list such as 20,25")?;
                let ks: Result<Vec<u32>, _> = list
                    .split(',')
                    .filter(|k| *k != "none")
                    .map(|k| k.trim().parse())
                    .collect();
                let mut ks = ks.map_err(|_| format!("--sweep {list:?}: not a list of numbers"))?;
                ks.sort_unstable();
                args.sweep = Some(ks);
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(args)
}

fn load(args: &Args) -> Result<(String, Vec<Arrival>), String> {
    if let Some(seed) = args.day_seed {
        let day = arrivals::generate_day(seed, &DayShape::default());
        return Ok((format!("generated day, seed {seed}"), day));
    }
    let path = args.arrivals.clone().unwrap_or_else(|| {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/benches/autoscale_day/gitlab_day.csv"
        )
        .to_string()
    });
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    let day = arrivals::parse_csv(&text).map_err(|e| format!("{path}: {e}"))?;
    Ok((path, day))
}

fn report(r: &DayResult, jobs: usize, took: std::time::Duration) {
    println!(
        "{:<24} jobs={:<6} wait p50={:>6.1}s p95={:>6.1}s p99={:>6.1}s within_slo={:>5.1}% idle_vm_s={:>9.0} creations={:<6} peak_vms={:<4} ({:.1} s){}",
        r.policy.name(),
        jobs,
        r.wait_quantile(0.50),
        r.wait_quantile(0.95),
        r.wait_quantile(0.99),
        r.within_slo() * 100.0,
        r.idle_vm_s,
        r.creations,
        r.peak_vms,
        took.as_secs_f64(),
        if r.waits.len() < jobs {
            format!(" [{} jobs got no VM]", jobs - r.waits.len())
        } else {
            String::new()
        },
    );
    let hourly: Vec<String> = r
        .hourly
        .iter()
        .map(|h| format!("{:.0}", h / 1000.0))
        .collect();
    println!(
        "{:<24} idle by cause: boot={:.0} ready_then_used={:.0} never_used={:.0} ({} VMs); ready idle per hour (k VM-s): {}",
        "",
        r.parts[0],
        r.parts[1],
        r.parts[2],
        r.unused,
        hourly.join(" "),
    );
    println!("{:<24} late jobs per hour: {}", "", r.late_hourly.join(" "));
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("autoscale_day: {e}");
            return ExitCode::from(64);
        }
    };
    if let Some(seed) = args.generate {
        print!(
            "{}",
            arrivals::to_csv(&arrivals::generate_day(seed, &DayShape::default()))
        );
        return ExitCode::SUCCESS;
    }
    let (source, day) = match load(&args) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("autoscale_day: {e}");
            return ExitCode::from(66);
        }
    };
    // A Tuesday: periods (none in these configs) would read weekday hours.
    let day_start = Utc
        .with_ymd_and_hms(2026, 1, 6, 0, 0, 0)
        .single()
        .expect("a valid date");
    let last = day.last().map_or(0.0, |a| a.at);
    println!(
        "== autoscale_day: {} jobs over {:.1} h from {source}; boot median 35 s, p90 70 s, 1 % at 200 s (seed {}); MaxBuilds 1, MaxGrowthRate {}, {} Compute calls/min, limit none; SLO: {:.0} % of jobs wait <= {SLO_WAIT_S:.0} s",
        day.len(),
        last / 3600.0,
        args.boot_seed,
        day::MAX_GROWTH_RATE,
        day::API_RATE_PER_MINUTE,
        SLO_SHARE * 100.0,
    );
    let run = |policy: Policy| -> Result<DayResult, String> {
        // The simulation's own run time, on the real clock on purpose (the day runs paused).
        #[allow(clippy::disallowed_types)]
        let started = std::time::Instant::now();
        let r = day::simulate(policy, &day, args.boot_seed, day_start)?;
        report(&r, day.len(), started.elapsed());
        Ok(r)
    };
    let mut smallest: Option<DayResult> = None;
    if let Some(ks) = &args.sweep {
        for k in ks {
            match run(Policy::Static(*k)) {
                Ok(r) if r.meets_slo() => {
                    smallest = Some(r);
                    break;
                }
                Ok(_) => {}
                Err(e) => {
                    eprintln!("autoscale_day: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
    }
    let mut k = SWEEP_STEP;
    while args.sweep.is_none() && k <= SWEEP_MAX && smallest.is_none() {
        match run(Policy::Static(k)) {
            Ok(r) if r.meets_slo() => {
                smallest = Some(r);
                // Refine: the smallest k in the last step that still meets the SLO.
                for below in (k.saturating_sub(SWEEP_STEP - 1)..k).filter(|b| *b > 0) {
                    match run(Policy::Static(below)) {
                        Ok(r) if r.meets_slo() => {
                            smallest = Some(r);
                            break;
                        }
                        Ok(_) => {}
                        Err(e) => {
                            eprintln!("autoscale_day: {e}");
                            return ExitCode::FAILURE;
                        }
                    }
                }
            }
            Ok(_) => {}
            Err(e) => {
                eprintln!("autoscale_day: {e}");
                return ExitCode::FAILURE;
            }
        }
        k += SWEEP_STEP;
    }
    let adaptive = match run(Policy::Adaptive {
        ceiling: ADAPTIVE_CEILING,
    }) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("autoscale_day: {e}");
            return ExitCode::FAILURE;
        }
    };
    let a_part = format!(
        "adaptive idle_vm_s={:.0} p95_wait_s={:.1} within_slo={:.1}%",
        adaptive.idle_vm_s,
        adaptive.wait_quantile(0.95),
        adaptive.within_slo() * 100.0
    );
    let verdict = |ok: bool| if ok { "MET" } else { "NOT MET" };
    let adaptive_ok = adaptive.meets_slo() && adaptive.waits.len() == day.len();
    println!(
        "target: adaptive meets the SLO ({:.0} % within {SLO_WAIT_S:.0} s): {:.1} %: {}",
        SLO_SHARE * 100.0,
        adaptive.within_slo() * 100.0,
        verdict(adaptive_ok)
    );
    let Some(s) = smallest else {
        println!("target: a static IdleCount <= {SWEEP_MAX} meets the SLO: NOT MET");
        println!(
            "efficiency: static IdleCount=none idle_vm_s=- p95_wait_s=- | {a_part} | saving=-"
        );
        return ExitCode::FAILURE;
    };
    let k = match s.policy {
        Policy::Static(k) => k,
        Policy::Adaptive { .. } => 0,
    };
    let saving = 1.0 - adaptive.idle_vm_s / s.idle_vm_s;
    println!(
        "target: adaptive has >= {:.0} % fewer idle VM-seconds than static IdleCount={k}: {:.1} %: {}",
        TARGET_SAVING * 100.0,
        saving * 100.0,
        verdict(saving >= TARGET_SAVING)
    );
    println!(
        "efficiency: static IdleCount={k} idle_vm_s={:.0} p95_wait_s={:.1} | {a_part} | saving={:.1}%",
        s.idle_vm_s,
        s.wait_quantile(0.95),
        saving * 100.0
    );
    if adaptive_ok && saving >= TARGET_SAVING {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
