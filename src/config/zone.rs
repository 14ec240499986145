//! The host's local time zone, which autoscaling periods without `Timezone` are read in (as GitLab
//! Runner reads them in Go's `time.Local`): the `TZ` variable when set (empty: UTC), else the
//! zone `/etc/localtime` links to. Owns finding it and saying where it came from, so `config
//! check` can print which zone applies to each period.

use std::fmt;

use chrono_tz::Tz;

/// The host's zone and where it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostZone {
    /// The zone (UTC when none could be found, as in Go).
    pub zone: Tz,
    /// Where it came from: `TZ`, `/etc/localtime`, or why UTC was taken.
    pub source: String,
}

impl fmt::Display for HostZone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (host local time, {})", self.zone.name(), self.source)
    }
}

/// The host's zone now: the `TZ` variable, else `/etc/localtime`.
pub fn host_zone() -> HostZone {
    let tz = std::env::var("TZ").ok();
    host_zone_from(tz.as_deref(), || iana_time_zone::get_timezone().ok())
}

/// The zone Go's `time.Local` takes for a `TZ` value (`None`: unset) and the system's zone name
/// (read only when `TZ` is unset). A leading `:` is dropped; a path is read by its part after
/// `zoneinfo/`; a zone chrono-tz does not know is UTC.
pub fn host_zone_from(tz: Option<&str>, system: impl FnOnce() -> Option<String>) -> HostZone {
    let Some(tz) = tz else {
        return match system() {
            Some(name) => named(&name, "from /etc/localtime"),
            None => HostZone {
                zone: Tz::UTC,
                source: "no TZ and no zone in /etc/localtime: UTC".to_string(),
            },
        };
    };
    let name = tz.strip_prefix(':').unwrap_or(tz);
    if name.is_empty() {
        return HostZone {
            zone: Tz::UTC,
            source: "TZ is empty: UTC".to_string(),
        };
    }
    let name = name.rsplit_once("zoneinfo/").map_or(name, |(_, zone)| zone);
    named(name, &format!("from TZ={tz}"))
}

fn named(name: &str, source: &str) -> HostZone {
    match name.parse::<Tz>() {
        Ok(zone) => HostZone {
            zone,
            source: source.to_string(),
        },
        Err(_) => HostZone {
            zone: Tz::UTC,
            source: format!("{source}: unknown zone {name:?}, UTC"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tz_wins_over_the_system_zone_as_in_go() {
        let system = || Some("Asia/Tokyo".to_string());
        let zone = |tz| host_zone_from(tz, system).zone;
        assert_eq!(zone(None), Tz::Asia__Tokyo);
        assert_eq!(zone(Some("Europe/Berlin")), Tz::Europe__Berlin);
        assert_eq!(zone(Some(":America/New_York")), Tz::America__New_York);
        assert_eq!(
            zone(Some("/usr/share/zoneinfo/Australia/Sydney")),
            Tz::Australia__Sydney
        );
        assert_eq!(zone(Some("")), Tz::UTC);
        assert_eq!(zone(Some("Mars/Olympus")), Tz::UTC);
        assert_eq!(host_zone_from(None, || None).zone, Tz::UTC);
        let berlin = host_zone_from(Some("Europe/Berlin"), system);
        assert_eq!(
            berlin.to_string(),
            "Europe/Berlin (host local time, from TZ=Europe/Berlin)"
        );
    }
}
