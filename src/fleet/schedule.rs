//! `[[runners.machine.autoscaling]]`: which idle settings are active now. Owns the reading of
//! GitLab Runner's `Periods` (7 fields: second minute hour day-of-month month day-of-week year,
//! Sunday = 0 or 7, names such as `mon-fri` allowed; the 5-field form of `docker-autoscaler` is
//! accepted too and means "any second, any year") in each period's `Timezone` (IANA, through
//! chrono-tz; UTC when empty). As in GitLab Runner the LAST matching period wins for IdleCount,
//! IdleCountMin, IdleScaleFactor and IdleTime; with none matching the `[runners.machine]` values
//! apply. Evaluation is pure: the caller passes the wall-clock time.
//!
//! The cron crate is `croner` with seconds and year required: its day-of-week field is POSIX
//! (0 and 7 = Sunday), the same numbering as gorhill/cronexpr, which GitLab Runner uses.

use crate::config::MachineConfig;
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;
use std::time::Duration;

/// The idle settings in force at one moment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IdleSettings {
    /// `IdleCount`.
    pub idle_count: u32,
    /// `IdleCountMin`.
    pub idle_count_min: u32,
    /// `IdleScaleFactor` (0 = off).
    pub idle_scale_factor: f64,
    /// `IdleTime`.
    pub idle_time: Duration,
}

/// Why a period could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    /// A `Periods` entry is not a valid cron expression.
    #[error("autoscaling period {period:?}: {reason} (expected 7 fields: second minute hour day-of-month month day-of-week year)")]
    BadPeriod { period: String, reason: String },
    /// `Timezone` is not an IANA zone name.
    #[error("autoscaling Timezone {0:?} is not a known IANA time zone (e.g. \"Europe/Berlin\")")]
    BadTimezone(String),
}

struct Period {
    crons: Vec<Cron>,
    tz: Tz,
    settings: IdleSettings,
}

/// The compiled schedule of one runner: the base settings and its periods in config order.
/// Built once per config (re)load; cheap to evaluate.
pub struct Schedule {
    base: IdleSettings,
    periods: Vec<Period>,
}

impl std::fmt::Debug for Schedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Schedule")
            .field("base", &self.base)
            .field("periods", &self.periods.len())
            .finish()
    }
}

/// Parses one `Periods` entry (7 fields, or 5 meaning any second and any year).
pub fn parse_period(period: &str) -> Result<Cron, ScheduleError> {
    let fields: Vec<&str> = period.split_whitespace().collect();
    let normalized = match fields.len() {
        7 => fields.join(" "),
        5 => format!("* {} *", fields.join(" ")),
        n => {
            return Err(ScheduleError::BadPeriod {
                period: period.to_string(),
                reason: format!("{n} fields"),
            })
        }
    };
    CronParser::builder()
        .seconds(Seconds::Required)
        .year(Year::Required)
        .build()
        .parse(&normalized)
        .map_err(|e| ScheduleError::BadPeriod {
            period: period.to_string(),
            reason: e.to_string(),
        })
}

/// Reads a `Timezone` value (empty = UTC).
pub fn parse_timezone(tz: &str) -> Result<Tz, ScheduleError> {
    if tz.trim().is_empty() {
        return Ok(Tz::UTC);
    }
    tz.trim()
        .parse::<Tz>()
        .map_err(|_| ScheduleError::BadTimezone(tz.to_string()))
}

impl Schedule {
    /// Compiles `[runners.machine]` and its autoscaling periods.
    pub fn new(machine: &MachineConfig) -> Result<Schedule, ScheduleError> {
        let base = IdleSettings {
            idle_count: machine.idle_count,
            idle_count_min: machine.idle_count_min,
            idle_scale_factor: machine.idle_scale_factor,
            idle_time: machine.idle_time,
        };
        let mut periods = Vec::with_capacity(machine.autoscaling.len());
        for p in &machine.autoscaling {
            let crons = p
                .periods
                .iter()
                .map(|s| parse_period(s))
                .collect::<Result<Vec<_>, _>>()?;
            periods.push(Period {
                crons,
                tz: parse_timezone(&p.timezone)?,
                settings: IdleSettings {
                    idle_count: p.idle_count,
                    idle_count_min: p.idle_count_min,
                    idle_scale_factor: p.idle_scale_factor,
                    idle_time: p.idle_time,
                },
            });
        }
        Ok(Schedule { base, periods })
    }

    /// The settings active at `now`: the last period with a matching expression, else the base.
    pub fn active(&self, now: DateTime<Utc>) -> IdleSettings {
        self.active_period(now).unwrap_or(self.base)
    }

    /// The settings of the last period matching `now`, if one does.
    pub fn active_period(&self, now: DateTime<Utc>) -> Option<IdleSettings> {
        self.periods
            .iter()
            .rev()
            .find(|p| {
                let local = now.with_timezone(&p.tz);
                p.crons
                    .iter()
                    .any(|c| c.is_time_matching(&local).unwrap_or(false))
            })
            .map(|p| p.settings)
    }

    /// The `[runners.machine]` settings (no period).
    pub fn base(&self) -> IdleSettings {
        self.base
    }

    /// The settings in force at `now`: [`Schedule::active`]'s, or no idle VMs kept while
    /// `draining` (IdleTime stays).
    pub fn in_force(&self, now: DateTime<Utc>, draining: bool) -> IdleSettings {
        let active = self.active(now);
        if draining {
            IdleSettings {
                idle_count: 0,
                idle_count_min: 0,
                idle_scale_factor: 0.0,
                ..active
            }
        } else {
            active
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AutoscalingPeriod;
    use chrono::TimeZone;

    fn machine(periods: Vec<AutoscalingPeriod>) -> MachineConfig {
        MachineConfig {
            idle_count: 1,
            idle_count_min: 0,
            idle_scale_factor: 0.0,
            idle_time: Duration::from_secs(600),
            max_builds: 0,
            max_growth_rate: 0,
            machine_name: "m-%s".into(),
            autoscaling: periods,
            idle_count_policy: Default::default(),
            runner_name_prefix: true,
        }
    }

    fn period(p: &[&str], tz: &str, idle_count: u32) -> AutoscalingPeriod {
        AutoscalingPeriod {
            periods: p.iter().map(|s| s.to_string()).collect(),
            timezone: tz.into(),
            idle_count,
            idle_count_min: 0,
            idle_scale_factor: 0.0,
            idle_time: Duration::from_secs(60 * idle_count as u64),
        }
    }

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap()
    }

    #[test]
    fn sunday_is_zero_and_seven_as_in_gitlab_runner() {
        // 2024-06-02 is a Sunday, 2024-06-03 a Monday.
        let sunday = utc(2024, 6, 2, 12, 0, 0);
        let monday = utc(2024, 6, 3, 12, 0, 0);
        for (expr, on_sunday, on_monday) in [
            ("* * * * * 0 *", true, false),
            ("* * * * * 7 *", true, false),
            ("* * * * * 1 *", false, true),
            ("* * * * * sun *", true, false),
            ("* * * * * mon-fri *", false, true),
            ("* * * * * 1-5 *", false, true),
            ("* * * * * 0,6 *", true, false),
        ] {
            let c = parse_period(expr).unwrap();
            assert_eq!(
                c.is_time_matching(&sunday).unwrap(),
                on_sunday,
                "{expr} sunday"
            );
            assert_eq!(
                c.is_time_matching(&monday).unwrap(),
                on_monday,
                "{expr} monday"
            );
        }
    }

    #[test]
    fn seconds_and_year_fields_are_honoured() {
        let t = utc(2024, 6, 3, 9, 30, 15);
        for (expr, want) in [
            ("15 30 9 * * * *", true),
            ("16 30 9 * * * *", false),
            ("* * 9-17 * * * 2024", true),
            ("* * 9-17 * * * 2025", false),
            ("* 30 9 3 6 * 2020-2030", true),
            ("* 9-17 * * *", true), // 5 fields: any second, any year
        ] {
            assert_eq!(
                parse_period(expr).unwrap().is_time_matching(&t).unwrap(),
                want,
                "{expr}"
            );
        }
    }

    #[test]
    fn malformed_periods_and_zones_are_errors() {
        for bad in ["* * * * * *", "* * * 32 * * *", "x * * * * * *", ""] {
            assert!(parse_period(bad).is_err(), "{bad:?}");
        }
        assert!(parse_timezone("Mars/Olympus").is_err());
        assert_eq!(parse_timezone("").unwrap(), Tz::UTC);
        assert_eq!(parse_timezone("Europe/Berlin").unwrap(), Tz::Europe__Berlin);
    }

    #[test]
    fn the_last_matching_period_wins_in_its_timezone() {
        let s = Schedule::new(&machine(vec![
            period(&["* * 9-17 * * mon-fri *"], "Europe/Berlin", 5),
            period(&["* * 12 * * * *"], "UTC", 7),
        ]))
        .unwrap();
        // (UTC time, expected IdleCount)
        let cases = [
            (utc(2024, 6, 3, 8, 0, 0), 5),   // 10:00 Berlin (CEST) Monday
            (utc(2024, 6, 3, 12, 0, 0), 7),  // both match: the last wins
            (utc(2024, 6, 3, 16, 30, 0), 1), // 18:30 Berlin: none → base
            (utc(2024, 6, 2, 8, 0, 0), 1),   // Sunday
            (utc(2024, 6, 2, 12, 59, 59), 7),
        ];
        for (now, want) in cases {
            assert_eq!(s.active(now).idle_count, want, "{now}");
        }
        assert_eq!(
            s.active(utc(2024, 6, 3, 12, 0, 0)).idle_time,
            Duration::from_secs(420)
        );
    }

    #[test]
    fn a_bad_period_fails_schedule_construction() {
        let err = Schedule::new(&machine(vec![period(&["nope"], "", 1)])).unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
        let err = Schedule::new(&machine(vec![period(
            &["* * * * * * *"],
            "Nowhere/City",
            1,
        )]))
        .unwrap_err();
        assert!(err.to_string().contains("Nowhere/City"), "{err}");
    }
}
