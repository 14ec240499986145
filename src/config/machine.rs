//! Validates `[runners.machine]` of a `docker+machine` runner into a [`MachineConfig`], with
//! GitLab Runner's defaults and rules: counts are not negative, `IdleTime` is integer seconds,
//! `IdleCountMin` is at least 1 while `IdleScaleFactor` is in use, `MachineName` holds `%s`, and
//! each `[[runners.machine.autoscaling]]` entry has 7-field cron `Periods` and an IANA `Timezone`.
//! `MachineDriver` and `MachineOptions` are handed back untouched for the GCE mapping. Owns the
//! section whole: its raw struct, its reading from the TOML table (keys checked against
//! `known_keys`, each value with its line) and its building.

use std::time::Duration;

use croner::parser::{CronParser, Seconds, Year};

use super::diag::Diagnostics;
use super::known_keys;
use super::toml_read::{check_keys, float, integer, string, string_items, Field, Scope};

/// `[runners.machine]`: the warm-pool policy, in GitLab Runner's spelling and defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct MachineConfig {
    /// `IdleCount`: idle VMs to keep ready.
    pub idle_count: u32,
    /// `IdleCountMin`: the floor when `IdleScaleFactor` is used.
    pub idle_count_min: u32,
    /// `IdleScaleFactor`: idle VMs as a multiple of VMs in use (0 = off).
    pub idle_scale_factor: f64,
    /// `IdleTime`: how long an idle VM above the idle count is kept.
    pub idle_time: Duration,
    /// `MaxBuilds`: jobs per VM before it is removed (0 = no limit).
    pub max_builds: u32,
    /// `MaxGrowthRate`: VMs being created at once (0 = no limit).
    pub max_growth_rate: u32,
    /// `MachineName` with `%s` (a unique lowercase id goes there).
    pub machine_name: String,
    /// `[[runners.machine.autoscaling]]` periods; the last matching one wins.
    pub autoscaling: Vec<AutoscalingPeriod>,
    /// `IdleCountPolicy` (Flotilla's key): a fixed IdleCount, or a warm pool that follows demand.
    pub idle_count_policy: IdleCountPolicy,
    /// VM names start with `runner-<short token>-`, as GitLab Runner's docker+machine names
    /// them (true); false for a carried-over docker-autoscaler instance group, whose VMs are
    /// named `<group>-<id>` as the group's are.
    pub runner_name_prefix: bool,
}

/// `IdleCountPolicy`: how many idle VMs a docker+machine runner keeps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum IdleCountPolicy {
    /// `"static"` (the default): GitLab Runner's IdleCount / IdleScaleFactor / periods.
    #[default]
    Static,
    /// `"adaptive"`: arrival rate × time to ready + burst headroom, between IdleCountMin (and
    /// an active period's IdleCount) and IdleCount; jobs are taken without a VM leased and get
    /// one from the warm pool or made on demand.
    Adaptive,
}

impl IdleCountPolicy {
    /// The value as written in `config.toml`.
    pub fn as_str(self) -> &'static str {
        match self {
            IdleCountPolicy::Static => "static",
            IdleCountPolicy::Adaptive => "adaptive",
        }
    }
}

/// One `[[runners.machine.autoscaling]]` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct AutoscalingPeriod {
    /// `Periods`: GitLab Runner's 7-field cron expressions (seconds … year; Sunday = 0).
    pub periods: Vec<String>,
    /// `Timezone` (IANA name; empty: the host's local zone, [`super::host_zone`]).
    pub timezone: String,
    /// `IdleCount` while the period is active.
    pub idle_count: u32,
    /// `IdleCountMin` while the period is active.
    pub idle_count_min: u32,
    /// `IdleScaleFactor` while the period is active.
    pub idle_scale_factor: f64,
    /// `IdleTime` while the period is active.
    pub idle_time: Duration,
}

/// Default `MachineName`.
pub(super) const DEFAULT_MACHINE_NAME: &str = "flotilla-%s";

/// Time zone of periods without `Timezone`: empty, the host's local zone (as GitLab Runner).
pub(super) const DEFAULT_TIMEZONE: &str = "";

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
        idle_count_policy: idle_count_policy(d, raw.idle_count_policy, &p("IdleCountPolicy")),
        runner_name_prefix: true,
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
                    d.error(entry.line, &p("Periods"), message.to_string());
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

/// A `Periods` expression GitLab Runner's cron would refuse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum PeriodError {
    /// Not the 7 fields GitLab Runner's cron reads.
    #[error(
        "invalid period {expression:?}: expected 7 fields (second minute hour day-of-month \
         month day-of-week year), found {fields}"
    )]
    Fields { expression: String, fields: usize },
    /// Seven fields that the cron parser refuses (its reason inside).
    #[error("invalid period {expression:?}: {reason}")]
    Cron { expression: String, reason: String },
}

/// Checks one `Periods` expression as GitLab Runner's cron reads it: 7 fields, seconds to year,
/// Sunday = 0 (names such as `mon-fri` allowed).
pub(super) fn check_period(expression: &str) -> Result<(), PeriodError> {
    let fields = expression.split_whitespace().count();
    if fields != 7 {
        return Err(PeriodError::Fields {
            expression: expression.to_string(),
            fields,
        });
    }
    let parser = CronParser::builder()
        .seconds(Seconds::Required)
        .year(Year::Required)
        .build();
    parser
        .parse(expression)
        .map(|_| ())
        .map_err(|e| PeriodError::Cron {
            expression: expression.to_string(),
            reason: e.to_string(),
        })
}

/// `Timezone`: an IANA name; empty (the host's local zone) when absent or empty.
fn timezone(d: &mut Diagnostics, f: Option<Field<String>>, path: &str) -> String {
    let Some(f) = f.filter(|f| !f.value.trim().is_empty()) else {
        return DEFAULT_TIMEZONE.to_string();
    };
    let name = f.value.trim();
    if let Some(message) = timezone_error(name) {
        d.error(f.line, path, message);
    }
    name.to_string()
}

/// Why `name` is not a time zone a period can be read in (`None`: an IANA name it knows).
pub(super) fn timezone_error(name: &str) -> Option<String> {
    name.parse::<chrono_tz::Tz>().is_err().then(|| {
        format!("unknown time zone {name:?}: use an IANA name such as \"Europe/Berlin\" or \"UTC\"")
    })
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

/// `IdleCountPolicy`: `"static"` (default) or `"adaptive"`.
fn idle_count_policy(d: &mut Diagnostics, f: Option<Field<String>>, path: &str) -> IdleCountPolicy {
    let Some(f) = f else {
        return IdleCountPolicy::Static;
    };
    match f.value.trim() {
        "" | "static" => IdleCountPolicy::Static,
        "adaptive" => IdleCountPolicy::Adaptive,
        other => {
            let message = format!(
                "unknown IdleCountPolicy {other:?}: use \"static\" (a fixed IdleCount) or \"adaptive\""
            );
            d.error(f.line, path, message);
            IdleCountPolicy::Static
        }
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

/// `[runners.machine]`.
#[derive(Default)]
pub(super) struct RawMachine {
    /// The line of the table header.
    pub line: usize,
    /// The key path of the table (`runners[0].machine`).
    pub path: String,
    pub idle_count: Option<Field<i64>>,
    pub idle_count_min: Option<Field<i64>>,
    /// A float or an integer in the file.
    pub idle_scale_factor: Option<Field<f64>>,
    pub idle_time: Option<Field<i64>>,
    pub max_builds: Option<Field<i64>>,
    pub max_growth_rate: Option<Field<i64>>,
    pub machine_name: Option<Field<String>>,
    pub machine_driver: Option<Field<String>>,
    pub idle_count_policy: Option<Field<String>>,
    /// Each entry with its own line (an array may span many).
    pub machine_options: Option<Field<Vec<Field<String>>>>,
    /// The `[[runners.machine.autoscaling]]` entries.
    pub autoscaling: Vec<RawPeriod>,
}

/// One `[[runners.machine.autoscaling]]` entry.
#[derive(Default)]
pub(super) struct RawPeriod {
    /// The line of the entry's header.
    pub line: usize,
    /// The key path of the entry (`runners[0].machine.autoscaling[1]`).
    pub path: String,
    /// Each expression with its own line.
    pub periods: Option<Field<Vec<Field<String>>>>,
    pub timezone: Option<Field<String>>,
    pub idle_count: Option<Field<i64>>,
    pub idle_count_min: Option<Field<i64>>,
    pub idle_scale_factor: Option<Field<f64>>,
    pub idle_time: Option<Field<i64>>,
}

/// Reads `[runners.machine]`.
pub(super) fn read(d: &mut Diagnostics, s: &Scope<'_>) -> RawMachine {
    check_keys(d, s, &known_keys::MACHINE);
    RawMachine {
        line: s.line,
        path: s.path.clone(),
        idle_count: integer(d, s, "IdleCount"),
        idle_count_min: integer(d, s, "IdleCountMin"),
        idle_scale_factor: float(d, s, "IdleScaleFactor"),
        idle_time: integer(d, s, "IdleTime"),
        max_builds: integer(d, s, "MaxBuilds"),
        max_growth_rate: integer(d, s, "MaxGrowthRate"),
        machine_name: string(d, s, "MachineName"),
        machine_driver: string(d, s, "MachineDriver"),
        idle_count_policy: string(d, s, "IdleCountPolicy"),
        machine_options: string_items(d, s, "MachineOptions"),
        autoscaling: periods(d, s),
    }
}

/// The `[[runners.machine.autoscaling]]` entries, in order.
fn periods(d: &mut Diagnostics, s: &Scope<'_>) -> Vec<RawPeriod> {
    s.table_entries(d, "autoscaling", "runners.machine.autoscaling")
        .into_iter()
        .map(|p| {
            check_keys(d, &p, &known_keys::MACHINE_AUTOSCALING);
            RawPeriod {
                line: p.line,
                path: p.path.clone(),
                periods: string_items(d, &p, "Periods"),
                timezone: string(d, &p, "Timezone"),
                idle_count: integer(d, &p, "IdleCount"),
                idle_count_min: integer(d, &p, "IdleCountMin"),
                idle_scale_factor: float(d, &p, "IdleScaleFactor"),
                idle_time: integer(d, &p, "IdleTime"),
            }
        })
        .collect()
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
        let five = five.to_string();
        assert!(five.contains("expected 7 fields"), "{five}");
        assert!(five.contains("found 5"), "{five}");
        assert!(check_period("* * 25 * * * *").is_err(), "hour 25");
        assert!(check_period("* * * * * funday *").is_err());
    }
}
