//! Job arrivals for the autoscaling simulation (`cargo bench --bench autoscale_day`): the CSV
//! format (`arrival_s,duration_s`, decimal seconds, that header first), its reader and writer,
//! and a seeded generator of a day shaped like GitLab.com's shared runners — a weekday peak
//! about ten times the night, bursts of 50 jobs within a minute, job durations log-normal with
//! a median of four minutes. Plain data: no clock, no I/O besides what the caller passes in.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The CSV header line.
pub const HEADER: &str = "arrival_s,duration_s";

/// One job: when it arrives (seconds from the start of the day) and how long it runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Arrival {
    /// Seconds from the start of the day (≥ 0).
    pub at: f64,
    /// Seconds the job runs once it has a VM (> 0).
    pub duration: f64,
}

/// A file that is not an arrivals CSV.
#[derive(Debug, thiserror::Error)]
pub enum ArrivalsError {
    /// The first line is not [`HEADER`].
    #[error("line 1: expected the header {HEADER:?}, found {0:?}")]
    Header(String),
    /// A line is not two decimal numbers, or one is out of range.
    #[error("line {line}: {reason} (expected `arrival_s,duration_s`, e.g. `12.345,180.0`)")]
    Line { line: usize, reason: String },
    /// No job at all.
    #[error("no arrivals after the header")]
    Empty,
}

/// Reads an arrivals CSV; blank lines are skipped, arrivals sorted by time.
pub fn parse_csv(text: &str) -> Result<Vec<Arrival>, ArrivalsError> {
    let mut lines = text.lines().enumerate();
    let header = lines.next().map(|(_, l)| l.trim()).unwrap_or("");
    if header != HEADER {
        return Err(ArrivalsError::Header(header.chars().take(80).collect()));
    }
    let mut out = Vec::new();
    for (i, raw) in lines {
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        let bad = |reason: String| ArrivalsError::Line {
            line: i + 1,
            reason,
        };
        let (a, d) = line.split_once(',').ok_or_else(|| bad("no comma".into()))?;
        let number = |what: &str, v: &str| {
            v.trim()
                .parse::<f64>()
                .ok()
                .filter(|x| x.is_finite())
                .ok_or_else(|| bad(format!("{what} {:?} is not a number", v.trim())))
        };
        let at = number("arrival_s", a)?;
        let duration = number("duration_s", d)?;
        if at < 0.0 {
            return Err(bad(format!("arrival_s {at} is negative")));
        }
        if duration <= 0.0 {
            return Err(bad(format!("duration_s {duration} is not positive")));
        }
        out.push(Arrival { at, duration });
    }
    if out.is_empty() {
        return Err(ArrivalsError::Empty);
    }
    out.sort_by(|x, y| x.at.total_cmp(&y.at));
    Ok(out)
}

/// Writes arrivals as CSV (milliseconds for arrivals, tenths for durations).
pub fn to_csv(arrivals: &[Arrival]) -> String {
    let mut s = String::with_capacity(arrivals.len() * 20 + HEADER.len() + 1);
    s.push_str(HEADER);
    s.push('\n');
    for a in arrivals {
        s.push_str(&format!("{:.3},{:.1}\n", a.at, a.duration));
    }
    s
}

/// The shape of a generated day.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DayShape {
    /// Jobs per hour at night (00–06 and after 21 h).
    pub night_per_hour: f64,
    /// Jobs per hour on the working-hours plateau (09–17 h).
    pub peak_per_hour: f64,
    /// Bursts in the day (their times drawn in proportion to the rate).
    pub bursts: u32,
    /// Jobs in each burst, all within one minute.
    pub burst_size: u32,
    /// Median job duration, seconds.
    pub median_duration: f64,
    /// Log-normal shape of durations (σ of the log).
    pub duration_sigma: f64,
}

impl Default for DayShape {
    /// GitLab.com's shared runners scaled down: 108 jobs/h at night, 1080 at the peak, eight
    /// bursts of 50, durations with a median of 4 min and a p90 of about 11 min.
    fn default() -> DayShape {
        DayShape {
            night_per_hour: 108.0,
            peak_per_hour: 1080.0,
            bursts: 8,
            burst_size: 50,
            median_duration: 240.0,
            duration_sigma: 0.8,
        }
    }
}

/// Seconds in the generated day.
pub const DAY: f64 = 86_400.0;
/// The longest generated job (GitLab's default job timeout is 1 h; some run 3).
const MAX_DURATION: f64 = 3.0 * 3600.0;

impl DayShape {
    /// Share of the peak above the night level at hour `h` (0..24): ramps 06–09 and 17–21, a
    /// lunch dip at 12–13.
    fn level(h: f64) -> f64 {
        match h {
            h if h < 6.0 => 0.0,
            h if h < 9.0 => (h - 6.0) / 3.0,
            h if (12.0..13.0).contains(&h) => 0.85,
            h if h < 17.0 => 1.0,
            h if h < 21.0 => (21.0 - h) / 4.0,
            _ => 0.0,
        }
    }

    /// Jobs per second at `t` seconds into the day.
    pub fn rate(&self, t: f64) -> f64 {
        let level = Self::level(t / 3600.0);
        (self.night_per_hour + (self.peak_per_hour - self.night_per_hour) * level) / 3600.0
    }
}

/// A standard normal draw (Box–Muller).
fn normal(rng: &mut StdRng) -> f64 {
    let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

fn duration(rng: &mut StdRng, shape: &DayShape) -> f64 {
    (shape.median_duration * (shape.duration_sigma * normal(rng)).exp()).clamp(1.0, MAX_DURATION)
}

/// A time in the day drawn in proportion to the rate (rejection sampling).
fn time_by_rate(rng: &mut StdRng, shape: &DayShape, max_rate: f64) -> f64 {
    loop {
        let t = rng.random::<f64>() * DAY;
        if rng.random::<f64>() * max_rate <= shape.rate(t) {
            return t;
        }
    }
}

/// One day of arrivals from `seed`: a non-homogeneous Poisson process at [`DayShape::rate`]
/// (thinning) plus the bursts; sorted by time. The same seed gives the same day.
pub fn generate_day(seed: u64, shape: &DayShape) -> Vec<Arrival> {
    let mut rng = StdRng::seed_from_u64(seed);
    let max_rate = shape.night_per_hour.max(shape.peak_per_hour) / 3600.0;
    let mut out = Vec::new();
    if max_rate > 0.0 {
        let mut t = 0.0;
        loop {
            let u: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
            t += -u.ln() / max_rate;
            if t >= DAY {
                break;
            }
            if rng.random::<f64>() * max_rate <= shape.rate(t) {
                let d = duration(&mut rng, shape);
                out.push(Arrival { at: t, duration: d });
            }
        }
        for _ in 0..shape.bursts {
            let start = time_by_rate(&mut rng, shape, max_rate).min(DAY - 60.0);
            for _ in 0..shape.burst_size {
                let at = start + rng.random::<f64>() * 60.0;
                let d = duration(&mut rng, shape);
                out.push(Arrival { at, duration: d });
            }
        }
    }
    out.sort_by(|x, y| x.at.total_cmp(&y.at));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_it_writes_and_sorts() {
        let text = "arrival_s,duration_s\n12.345,180.0\n\n3.5,60\n";
        let a = parse_csv(text).expect("valid");
        assert_eq!(
            a,
            vec![
                Arrival {
                    at: 3.5,
                    duration: 60.0
                },
                Arrival {
                    at: 12.345,
                    duration: 180.0
                }
            ]
        );
        assert_eq!(parse_csv(&to_csv(&a)).expect("round trip"), a);
    }

    #[test]
    fn rejects_what_is_not_the_format_with_the_line() {
        let cases = [
            ("at,dur\n1,2\n", "line 1: expected the header"),
            ("arrival_s,duration_s\n1,2\n3;4\n", "line 3: no comma"),
            (
                "arrival_s,duration_s\nx,2\n",
                "line 2: arrival_s \"x\" is not a number",
            ),
            (
                "arrival_s,duration_s\n1,inf\n",
                "line 2: duration_s \"inf\" is not a number",
            ),
            (
                "arrival_s,duration_s\n-1,2\n",
                "line 2: arrival_s -1 is negative",
            ),
            (
                "arrival_s,duration_s\n1,0\n",
                "line 2: duration_s 0 is not positive",
            ),
            ("arrival_s,duration_s\n\n", "no arrivals"),
        ];
        for (text, want) in cases {
            let e = parse_csv(text).expect_err(text).to_string();
            assert!(e.starts_with(want), "{text:?}: {e}");
        }
    }

    #[test]
    fn a_generated_day_has_the_shape_asked_for() {
        let shape = DayShape::default();
        let day = generate_day(7, &shape);
        assert_eq!(day, generate_day(7, &shape), "seeded");
        assert_ne!(day, generate_day(8, &shape));
        let hour = |h: f64| {
            day.iter()
                .filter(|a| a.at >= h * 3600.0 && a.at < (h + 1.0) * 3600.0)
                .count() as f64
        };
        let night = (0..5).map(|h| hour(f64::from(h))).sum::<f64>() / 5.0;
        let peak = (14..17).map(|h| hour(f64::from(h))).sum::<f64>() / 3.0;
        assert!((80.0..140.0).contains(&night), "night {night}/h");
        assert!(
            peak / night > 6.0 && peak / night < 16.0,
            "{peak} vs {night}"
        );
        // Every burst is 50 jobs in one minute: some minute holds ≥ 50 arrivals.
        let mut per_minute = std::collections::BTreeMap::<u64, u32>::new();
        for a in &day {
            *per_minute.entry((a.at / 60.0) as u64).or_default() += 1;
        }
        let busiest = per_minute.values().max().copied().unwrap_or(0);
        assert!(
            busiest >= 25,
            "a burst lands in at most two minutes: {busiest}"
        );
        let mut d: Vec<f64> = day.iter().map(|a| a.duration).collect();
        d.sort_by(f64::total_cmp);
        let median = d[d.len() / 2];
        assert!((200.0..290.0).contains(&median), "median duration {median}");
        assert!(day
            .iter()
            .all(|a| a.at >= 0.0 && a.at < DAY && a.duration > 0.0));
    }
}
