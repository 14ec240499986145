//! Maps a carried-over `MachineDriver = "google"` + `MachineOptions` onto the GCE settings,
//! option by option, as docker-machine's google driver reads them: `name=value` (or a bare
//! `name` for a boolean flag), comma lists for `google-tags` and `google-scopes`, a repeatable
//! `google-label=key:value`, the last occurrence of any other option winning. Options Flotilla
//! does not implement earn a warning each; unknown ones are errors with a suggestion.

use std::collections::BTreeMap;

use super::diag::Diagnostics;
use super::error::WarningKind;
use super::gce::GceSettings;
use super::gce_checks::Val;
use super::gce_names::{check_label_key, check_label_value, normalize_image, NameError};
use super::known_keys::MACHINE_OPTIONS;
use super::toml_read::{unknown, Field};

/// The settings `options` give; `path` is the machine table's (`runners[0].machine`) and `line`
/// the line of `MachineOptions` (or of the table when the key is absent).
pub(super) fn map(
    d: &mut Diagnostics,
    options: &[Field<String>],
    path: &str,
    line: usize,
) -> GceSettings {
    let key_path = format!("{path}.MachineOptions");
    let mut s = GceSettings::default();
    // docker-machine's booleans are false unless given, so a carried config always sets them.
    let mut use_internal_ip = option_val(&key_path, false, line, "google-use-internal-ip");
    let mut internal_ip_only = option_val(&key_path, false, line, "google-use-internal-ip-only");
    let mut spot = option_val(&key_path, false, line, "google-preemptible");
    let mut labels: Option<Val<BTreeMap<String, String>>> = None;
    for entry in options {
        let text = entry.value.trim();
        let (name, value) = match text.split_once('=') {
            Some((name, value)) => (name, Some(value.trim())),
            None => (text, None),
        };
        let here = entry.line;
        if MACHINE_OPTIONS.is_ignored(name) {
            d.warn(
                here,
                &format!("{key_path}[{name}]"),
                WarningKind::NotSupported,
            );
            continue;
        }
        if !MACHINE_OPTIONS.is_supported(name) {
            let what = format!("option {name:?}");
            d.error(here, &key_path, unknown(&what, name, &MACHINE_OPTIONS));
            continue;
        }
        let flag_path = format!("{key_path}[{name}]");
        let flag = |d: &mut Diagnostics| match value.map(parse_flag) {
            None => Some(true),
            Some(Some(on)) => Some(on),
            Some(None) => {
                d.error(here, &flag_path, "expected a bare flag, or =true / =false");
                None
            }
        };
        match name {
            "google-use-internal-ip" => {
                if let Some(on) = flag(d) {
                    use_internal_ip = option_val(&key_path, on, here, name);
                }
                continue;
            }
            "google-use-internal-ip-only" => {
                if let Some(on) = flag(d) {
                    internal_ip_only = option_val(&key_path, on, here, name);
                }
                continue;
            }
            "google-preemptible" => {
                if let Some(on) = flag(d) {
                    spot = option_val(&key_path, on, here, name);
                }
                continue;
            }
            _ => {}
        }
        let Some(value) = value else {
            let message = format!("expects a value: \"{name}=…\"");
            d.error(here, &flag_path, message);
            continue;
        };
        if value.is_empty() {
            // docker-machine takes an empty value as its default: so does Flotilla.
            continue;
        }
        let text = value.to_string();
        match name {
            "google-project" => s.project = Some(option_val(&key_path, text, here, name)),
            "google-zone" => s.zones = Some(option_val(&key_path, vec![text], here, name)),
            "google-machine-type" => s.machine_type = Some(option_val(&key_path, text, here, name)),
            "google-machine-image" => match normalize_image(&text) {
                Ok(image) => s.image = Some(option_val(&key_path, image, here, name)),
                Err(message) => d.error(here, &flag_path, message.to_string()),
            },
            "google-disk-size" => match value.parse::<i64>() {
                Ok(gb) => s.disk_size_gb = Some(option_val(&key_path, gb, here, name)),
                Err(_) => d.error(
                    here,
                    &flag_path,
                    format!("invalid disk size {value:?}: expected whole GB"),
                ),
            },
            "google-disk-type" => s.disk_type = Some(option_val(&key_path, text, here, name)),
            "google-network" => s.network = Some(option_val(&key_path, text, here, name)),
            "google-subnetwork" => s.subnetwork = Some(option_val(&key_path, text, here, name)),
            "google-service-account" => {
                s.service_account = Some(option_val(&key_path, text, here, name))
            }
            "google-tags" => s.tags = Some(option_val(&key_path, comma_list(value), here, name)),
            "google-scopes" => {
                s.scopes = Some(option_val(&key_path, comma_list(value), here, name))
            }
            "google-label" => {
                let checked = value
                    .split_once(':')
                    .ok_or_else(|| NameError::LabelPair {
                        value: value.to_string(),
                    })
                    .and_then(|(k, v)| {
                        check_label_key(k)?;
                        check_label_value(k, v)?;
                        Ok((k.to_string(), v.to_string()))
                    });
                match checked {
                    Ok((k, v)) => {
                        let all = labels.get_or_insert_with(|| {
                            option_val(&key_path, BTreeMap::new(), here, name)
                        });
                        all.value.insert(k, v);
                    }
                    Err(message) => d.error(here, &flag_path, message.to_string()),
                }
            }
            other => {
                let message = format!("option {other:?} is listed as mapped but not handled");
                d.error(here, &flag_path, message);
            }
        }
    }
    // As docker-machine: google-use-internal-ip-only implies google-use-internal-ip.
    if internal_ip_only.value && !use_internal_ip.value {
        use_internal_ip = option_val(
            &key_path,
            true,
            internal_ip_only.line,
            "google-use-internal-ip-only",
        );
    }
    s.use_internal_ip = Some(use_internal_ip);
    s.internal_ip_only = Some(internal_ip_only);
    s.spot = Some(spot);
    s.labels = labels;
    s
}

fn option_val<T>(key_path: &str, value: T, line: usize, name: &str) -> Val<T> {
    Val {
        value,
        line,
        path: format!("{key_path}[{name}]"),
        carried: true,
    }
}

/// Go's `strconv.ParseBool`, which docker-machine's flags use.
fn parse_flag(text: &str) -> Option<bool> {
    match text {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

fn comma_list(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}
