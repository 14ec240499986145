//! Validates `[runners.machine]` of a `docker+machine` runner into a [`MachineConfig`], with
//! GitLab Runner's defaults and rules: counts are not negative, `IdleTime` is integer seconds,
//! `IdleCountMin` is at least 1 while `IdleScaleFactor` is in use, `MachineName` holds `%s`, and
//! each `[[runners.machine.autoscaling]]` entry has 7-field cron `Periods` and an IANA `Timezone`.
//! `MachineDriver` and `MachineOptions` are handed back untouched for the GCE mapping.

use std::time::Duration;

use croner::parser::{CronParser, Seconds, Year};

use super::diag::Diagnostics;
use super::model::{AutoscalingPeriod, MachineConfig};
use super::raw::{Field, RawMachine, RawPeriod};

/// Default `MachineName`.
pub(super) const DEFAULT_MACHINE_NAME: &str = "flotilla-%s";

/// Time zone of periods without `Timezone`.
pub(super) const DEFAULT_TIMEZONE: &str = "UTC";

/// `MachineDriver` and `MachineOptions` as written, for the GCE mapping.
pub(super) struct DriverOptions {
    /// `MachineDriver` (absent when empty).
    pub driver: Option<Field<String>>,
    /// `MachineOptions`, each entry with its line.
    pub options: Option<Field<Vec<Field<String>>>>,
    /// The key path of the machine table (`runners[0].machine`).
    pub path: String,
    /// The line of the machine table.
    pub line: usize,
}

/// Builds the warm-pool policy (defaults when the table is absent); problems go to `d`.
pub(super) fn build(
    d: &mut Diagnostics,
    raw: Option<RawMachine>,
    runner_path: &str,
    runner_line: usize,
) -> (MachineConfig, DriverOptions) {
    let raw = raw.unwrap_or_else(|| RawMachine {
        line: runner_line,
        path: format!("{runner_path}.machine"),
        ..RawMachine::default()
    });
    let path = raw.path.clone();
    let p = |key: &str| format!("{path}.{key}");
    let idle_scale_factor = factor(d, raw.idle_scale_factor, &p("IdleScaleFactor"));
    let config = MachineConfig {
        idle_count: count(d, raw.idle_count, &p("IdleCount")),
        idle_count_min: idle_count_min(
            count(d, raw.idle_count_min, &p("IdleCountMin")),
            idle_scale_factor,
        ),
        idle_scale_factor,
        idle_time: seconds(d, raw.idle_time, &p("IdleTime")),
        max_builds: count(d, raw.max_builds, &p("MaxBuilds")),
        max_growth_rate: count(d, raw.max_growth_rate, &p("MaxGrowthRate")),
        machine_name: machine_name(d, raw.machine_name, &p("MachineName")),
        autoscaling: raw
            .autoscaling
            .into_iter()
            .map(|period| autoscaling(d, period))
            .collect(),
    };
    let carried = DriverOptions {
        driver: raw.machine_driver.filter(|f| !f.value.trim().is_empty()),
        options: raw.machine_options,
        path: raw.path,
        line: raw.line,
    };
    (config, carried)
}

fn autoscaling(d: &mut Diagnostics, raw: RawPeriod) -> AutoscalingPeriod {
    let p = |key: &str| format!("{}.{key}", raw.path);
    let mut periods = Vec::new();
    match raw.periods {
        Some(f) if !f.value.is_empty() => {
            for entry in f.value {
                if let Err(message) = check_period(&entry.value) {
                    d.error(entry.line, &p("Periods"), message);
                }
                periods.push(entry.value);
            }
        }
        f => d.error(
            f.map_or(raw.line, |f| f.line),
            &p("Periods"),
            "required: at least one cron expression (7 fields: second minute hour \
             day-of-month month day-of-week year)",
        ),
    }
    let idle_scale_factor = factor(d, raw.idle_scale_factor, &p("IdleScaleFactor"));
    AutoscalingPeriod {
        periods,
        timezone: timezone(d, raw.timezone, &p("Timezone")),
        idle_count: count(d, raw.idle_count, &p("IdleCount")),
        idle_count_min: idle_count_min(
            count(d, raw.idle_count_min, &p("IdleCountMin")),
            idle_scale_factor,
        ),
        idle_scale_factor,
        idle_time: seconds(d, raw.idle_time, &p("IdleTime")),
    }
}

/// Checks one `Periods` expression as GitLab Runner's cron reads it: 7 fields, seconds to year,
/// Sunday = 0 (names such as `mon-fri` allowed).
pub(super) fn check_period(expression: &str) -> Result<(), String> {
    let fields = expression.split_whitespace().count();
    if fields != 7 {
        return Err(format!(
            "invalid period {expression:?}: expected 7 fields (second minute hour day-of-month \
             month day-of-week year), found {fields}"
        ));
    }
    let parser = CronParser::builder()
        .seconds(Seconds::Required)
        .year(Year::Required)
        .build();
    parser
        .parse(expression)
        .map(|_| ())
        .map_err(|e| format!("invalid period {expression:?}: {e}"))
}

/// `Timezone`: an IANA name; UTC when empty.
fn timezone(d: &mut Diagnostics, f: Option<Field<String>>, path: &str) -> String {
    let Some(f) = f.filter(|f| !f.value.trim().is_empty()) else {
        return DEFAULT_TIMEZONE.to_string();
    };
    let name = f.value.trim();
    if name.parse::<chrono_tz::Tz>().is_err() {
        let message = format!(
            "unknown time zone {name:?}: use an IANA name such as \"Europe/Berlin\" or \"UTC\""
        );
        d.error(f.line, path, message);
    }
    name.to_string()
}

/// GitLab Runner: `IdleCountMin` is taken as 1 when `IdleScaleFactor` is in use and it is lower.
fn idle_count_min(value: u32, idle_scale_factor: f64) -> u32 {
    if idle_scale_factor > 0.0 {
        value.max(1)
    } else {
        value
    }
}

/// `MachineName`: one `%s` (where a unique id goes), otherwise lowercase letters, digits and `-`
/// (it ends up in a Compute Engine instance name).
fn machine_name(d: &mut Diagnostics, f: Option<Field<String>>, path: &str) -> String {
    let Some(f) = f.filter(|f| !f.value.is_empty()) else {
        return DEFAULT_MACHINE_NAME.to_string();
    };
    let name = f.value;
    if name.matches("%s").count() != 1 {
        let message = format!(
            "invalid MachineName {name:?}: must contain %s once (a unique id goes there), \
             e.g. \"runner-%s\""
        );
        d.error(f.line, path, message);
    } else {
        let rest = name.replacen("%s", "", 1);
        let valid = rest
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !valid {
            let message = format!(
                "invalid MachineName {name:?}: besides %s, use lowercase letters, digits and '-' \
                 (it becomes a Compute Engine instance name)"
            );
            d.error(f.line, path, message);
        }
    }
    name
}

/// A count: 0 when absent; an error when negative.
fn count(d: &mut Diagnostics, f: Option<Field<i64>>, path: &str) -> u32 {
    let Some(f) = f else { return 0 };
    match u32::try_from(f.value) {
        Ok(n) => n,
        Err(_) if f.value < 0 => {
            d.error(f.line, path, "must not be negative");
            0
        }
        Err(_) => u32::MAX,
    }
}

/// Integer seconds: 0 when absent; an error when negative.
fn seconds(d: &mut Diagnostics, f: Option<Field<i64>>, path: &str) -> Duration {
    let Some(f) = f else { return Duration::ZERO };
    if f.value < 0 {
        d.error(f.line, path, "must not be negative (seconds)");
        return Duration::ZERO;
    }
    crate::time::secs(f.value.unsigned_abs())
}

/// `IdleScaleFactor`: a finite number ≥ 0 (0 = off).
fn factor(d: &mut Diagnostics, f: Option<Field<f64>>, path: &str) -> f64 {
    let Some(f) = f else { return 0.0 };
    if !f.value.is_finite() || f.value < 0.0 {
        d.error(f.line, path, "must be a number of at least 0 (0 = off)");
        return 0.0;
    }
    f.value
}

#[cfg(test)]
mod tests {
    use super::check_period;

    #[test]
    fn periods_are_gitlab_runner_cron() {
        assert_eq!(check_period("* * 9-17 * * mon-fri *"), Ok(()));
        assert_eq!(check_period("* 30-59 3 * * * *"), Ok(()));
        assert_eq!(check_period("0 0 8-18 * * 1-5 2024-2030"), Ok(()));
        assert_eq!(check_period("* * * * * sat,sun *"), Ok(()));
        let five = check_period("* 9-17 * * mon-fri").unwrap_err();
        assert!(five.contains("expected 7 fields"), "{five}");
        assert!(five.contains("found 5"), "{five}");
        assert!(check_period("* * 25 * * * *").is_err(), "hour 25");
        assert!(check_period("* * * * * funday *").is_err());
    }
}
