//! `[[runners.autoscaler.policy]]` of a `docker-autoscaler` runner, carried over onto
//! `[[runners.machine.autoscaling]]` periods: the 5-field cron of GitLab's autoscaler
//! (minute hour day-of-month month day-of-week) becomes docker+machine's 7 fields (any second,
//! any year), `idle_time` (a Go duration) becomes seconds, and `idle_count` / `scale_factor` /
//! `scale_factor_limit` become IdleCount / IdleCountMin / IdleScaleFactor. Owns the policy
//! entries' raw struct, their reading and this conversion; each entry says what it became for
//! `flotilla config check`.

use super::diag::Diagnostics;
use super::known_keys_autoscaler::POLICY;
use super::machine::{check_period, timezone_error, RawPeriod};
use super::toml_read::{check_keys, float, integer, string, string_items, Field, Scope};
use super::units;

/// The autoscaler's default `periods`: always.
const ALWAYS: &str = "* * * * *";

/// One `[[runners.autoscaler.policy]]` entry as written.
pub(super) struct RawPolicy {
    /// The line of the entry's header.
    pub line: usize,
    /// The key path of the entry (`runners[0].autoscaler.policy[1]`).
    pub path: String,
    pub periods: Option<Field<Vec<Field<String>>>>,
    pub timezone: Option<Field<String>>,
    pub idle_count: Option<Field<i64>>,
    /// A Go duration (`"20m0s"`).
    pub idle_time: Option<Field<String>>,
    pub scale_factor: Option<Field<f64>>,
    pub scale_factor_limit: Option<Field<i64>>,
}

/// Reads every `[[runners.autoscaler.policy]]` entry of the autoscaler table `s`, in order.
pub(super) fn read_all(d: &mut Diagnostics, s: &Scope<'_>) -> Vec<RawPolicy> {
    s.table_entries(d, "policy", "runners.autoscaler.policy")
        .into_iter()
        .map(|p| {
            check_keys(d, &p, &POLICY);
            RawPolicy {
                line: p.line,
                path: p.path.clone(),
                periods: string_items(d, &p, "periods"),
                timezone: string(d, &p, "timezone"),
                idle_count: integer(d, &p, "idle_count"),
                idle_time: string(d, &p, "idle_time"),
                scale_factor: float(d, &p, "scale_factor"),
                scale_factor_limit: integer(d, &p, "scale_factor_limit"),
            }
        })
        .collect()
}

/// A policy carried over: the docker+machine period and what it became, in words.
pub(super) struct Converted {
    /// The `[[runners.machine.autoscaling]]` entry (already valid).
    pub period: RawPeriod,
    /// One line for `flotilla config check`.
    pub note: String,
}

/// Converts one policy; `None` (with errors in `d`) when nothing valid is left of it.
/// `max_instances` caps `scale_factor` when the policy has no `scale_factor_limit`.
pub(super) fn convert(d: &mut Diagnostics, p: RawPolicy, max_instances: u32) -> Option<Converted> {
    let path = |key: &str| format!("{}.{key}", p.path);
    let (written, periods_line) = match p.periods {
        Some(f) if !f.value.is_empty() => (f.value, f.line),
        Some(f) => (always(f.line), f.line),
        None => (always(p.line), p.line),
    };
    let mut periods = Vec::new();
    for entry in &written {
        match to_seven_fields(&entry.value) {
            Ok(seven) => periods.push(Field {
                value: seven,
                line: entry.line,
            }),
            Err(message) => d.error(entry.line, &path("periods"), message),
        }
    }
    let timezone = p.timezone.filter(|f| !f.value.trim().is_empty());
    let mut valid = !periods.is_empty();
    if let Some(f) = &timezone {
        if let Some(message) = timezone_error(f.value.trim()) {
            d.error(f.line, &path("timezone"), message);
            valid = false;
        }
    }
    let idle_count = non_negative(d, p.idle_count, &path("idle_count"));
    let limit = non_negative(d, p.scale_factor_limit, &path("scale_factor_limit"));
    let factor = match p.scale_factor {
        Some(f) if !f.value.is_finite() || f.value < 0.0 => {
            d.error(
                f.line,
                &path("scale_factor"),
                "must be a number of at least 0",
            );
            0.0
        }
        Some(f) => f.value,
        None => 0.0,
    };
    let idle_time = match p.idle_time {
        None => None,
        Some(f) => match units::parse_go_duration(&f.value) {
            Ok(t) => Some(Field {
                value: i64::try_from(t.as_secs()).unwrap_or(i64::MAX),
                line: f.line,
            }),
            Err(e) => {
                d.error(f.line, &path("idle_time"), e.to_string());
                None
            }
        },
    };
    if !valid {
        return None;
    }
    let count = idle_count.as_ref().map_or(0, |f| f.value);
    let line_of = |f: &Option<Field<i64>>| f.as_ref().map_or(p.line, |f| f.line);
    // GitLab's autoscaler keeps max(idle_count, min(in use × scale_factor, scale_factor_limit))
    // idle; docker+machine keeps max(IdleCountMin, min(in use × IdleScaleFactor, IdleCount)).
    let (machine_count, machine_min, cap_note) = if factor > 0.0 {
        let (cap, why) = match limit.as_ref().map(|f| f.value) {
            Some(l) if l > 0 => (l.max(count), "scale_factor_limit"),
            _ if max_instances > 0 => (i64::from(max_instances).max(count), "max_instances"),
            _ => (
                count,
                "idle_count (no scale_factor_limit nor max_instances)",
            ),
        };
        (
            Some(Field {
                value: cap,
                line: line_of(&limit),
            }),
            Some(Field {
                value: count,
                line: line_of(&idle_count),
            }),
            format!(", IdleCountMin {count}, IdleScaleFactor {factor} capped at IdleCount {cap} (from {why})"),
        )
    } else {
        (idle_count, None, String::new())
    };
    let shown: Vec<&str> = written.iter().map(|f| f.value.as_str()).collect();
    let seven: Vec<&str> = periods.iter().map(|f| f.value.as_str()).collect();
    let note = format!(
        "{} periods {shown:?}{} → [[runners.machine.autoscaling]] Periods {seven:?}: \
         IdleCount {}{cap_note}, IdleTime {}s",
        p.path,
        timezone
            .as_ref()
            .map_or(String::new(), |f| format!(" ({})", f.value.trim())),
        machine_count.as_ref().map_or(0, |f| f.value),
        idle_time.as_ref().map_or(0, |f| f.value),
    );
    let period = RawPeriod {
        line: p.line,
        path: p.path,
        periods: Some(Field {
            value: periods,
            line: periods_line,
        }),
        timezone,
        idle_count: machine_count,
        idle_count_min: machine_min,
        idle_scale_factor: (factor > 0.0).then_some(Field {
            value: factor,
            line: p.line,
        }),
        idle_time,
    };
    Some(Converted { period, note })
}

fn always(line: usize) -> Vec<Field<String>> {
    vec![Field {
        value: ALWAYS.to_string(),
        line,
    }]
}

/// A count that must not be negative: dropped with an error when it is.
pub(super) fn non_negative(
    d: &mut Diagnostics,
    f: Option<Field<i64>>,
    path: &str,
) -> Option<Field<i64>> {
    match f {
        Some(f) if f.value < 0 => {
            d.error(f.line, path, "must not be negative");
            None
        }
        f => f,
    }
}

/// GitLab's autoscaler cron (minute hour day-of-month month day-of-week) as docker+machine's
/// 7-field cron (second … year): any second of the minute, any year.
pub(super) fn to_seven_fields(expression: &str) -> Result<String, String> {
    let fields: Vec<&str> = expression.split_whitespace().collect();
    if fields.len() != 5 {
        return Err(format!(
            "invalid period {expression:?}: expected 5 fields (minute hour day-of-month month \
             day-of-week), found {}",
            fields.len()
        ));
    }
    let seven = format!("* {} *", fields.join(" "));
    check_period(&seven)
        .map(|()| seven)
        .map_err(|_| format!("invalid period {expression:?}: not a valid cron expression"))
}

#[cfg(test)]
mod tests {
    use super::to_seven_fields;

    #[test]
    fn five_field_periods_become_seven_fields() {
        assert_eq!(
            to_seven_fields("* 7-19 * * mon-fri").as_deref(),
            Ok("* * 7-19 * * mon-fri *")
        );
        assert_eq!(
            to_seven_fields("0-30  4 * * *").as_deref(),
            Ok("* 0-30 4 * * * *")
        );
        assert!(to_seven_fields("* * * * * *").is_err());
        assert!(to_seven_fields("* 25 * * *").is_err());
    }
}
