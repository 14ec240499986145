//! What `flotilla config check` says about a file that loaded, beyond its warnings: the runners
//! left out for their executor, and the time zone each autoscaling period is read in (its
//! `Timezone`, or the host's local zone). Owns the wording; reads a built [`Config`] only.

use super::global::Config;
use super::zone::HostZone;

/// One line per skipped runner and per autoscaling period, `host` being the zone of periods
/// without `Timezone`.
pub fn check_notes(config: &Config, host: &HostZone) -> Vec<String> {
    let mut notes = Vec::new();
    for skipped in &config.skipped {
        notes.push(format!(
            "{} {:?}: executor {:?}: skipped: executor not supported (never polled)",
            skipped.path, skipped.name, skipped.executor
        ));
    }
    for (i, runner) in config.runners.iter().enumerate() {
        let Some(machine) = &runner.machine else {
            continue;
        };
        for (j, period) in machine.autoscaling.iter().enumerate() {
            let zone = match period.timezone.trim() {
                "" => host.to_string(),
                named => format!("{named} (Timezone)"),
            };
            notes.push(format!(
                "runners[{i}] {:?}: machine.autoscaling[{j}] Periods {:?} are read in {zone}",
                runner.name, period.periods
            ));
        }
    }
    notes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::host_zone_from;

    #[test]
    fn notes_name_skipped_runners_and_period_zones() {
        let text = format!(
            "[[runners]]\nname = \"sh\"\nurl = \"https://gitlab.example.com\"\n\
             token = \"{t}\"\nexecutor = \"shell\"\n\
             [[runners]]\nname = \"vm\"\nurl = \"https://gitlab.example.com\"\n\
             token = \"{t}x\"\nexecutor = \"docker+machine\"\n\
             [runners.machine]\nMachineDriver = \"google\"\n\
             MachineOptions = [\"google-project=p\", \"google-zone=us-central1-a\"]\n\
             [[runners.machine.autoscaling]]\nPeriods = [\"* * 9-17 * * mon-fri *\"]\n\
             [[runners.machine.autoscaling]]\nPeriods = [\"* * * * * sat,sun *\"]\n\
             Timezone = \"Europe/Berlin\"\n",
            t = format!("glrt-{}", "t".repeat(20))
        );
        let loaded = Config::from_toml_str(&text, "c.toml").unwrap();
        let host = host_zone_from(Some("Asia/Tokyo"), || None);
        let notes = check_notes(&loaded.config, &host);
        assert_eq!(notes.len(), 3, "{notes:#?}");
        assert!(
            notes[0]
                .contains("runners[0] \"sh\": executor \"shell\": skipped: executor not supported"),
            "{}",
            notes[0]
        );
        assert!(
            notes[1].contains("autoscaling[0]")
                && notes[1].ends_with("read in Asia/Tokyo (host local time, from TZ=Asia/Tokyo)"),
            "{}",
            notes[1]
        );
        assert!(
            notes[2].ends_with("read in Europe/Berlin (Timezone)"),
            "{}",
            notes[2]
        );
    }
}
