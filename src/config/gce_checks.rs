//! The checks of single `[runners.gce]` settings once `[runners.gce]` and `MachineOptions` are
//! merged: each applies Flotilla's default or reports the problem at the line the value came from
//! (the `[runners.gce]` key, or the `MachineOptions` entry). Owns [`Val`], the merged setting
//! that `gce` and `machine_options` build; the checks are called by `gce` only.

use std::collections::BTreeMap;

use super::diag::Diagnostics;
use super::error::WarningKind;
use super::gce_names::{
    check_name, check_tag, region_of_subnetwork, region_of_zone, MAX_USER_LABELS,
};
use super::toml_read::Field;

/// Default `disk_size_gb`.
pub(super) const DEFAULT_DISK_SIZE_GB: u64 = 50;

/// A setting, the line and key path it came from, and whether `MachineOptions` gave it.
pub(super) struct Val<T> {
    pub value: T,
    pub line: usize,
    pub path: String,
    pub carried: bool,
}

pub(super) fn required(
    d: &mut Diagnostics,
    v: Option<Val<String>>,
    line: usize,
    path: &str,
    what: &str,
) -> String {
    match v {
        Some(v) => v.value.trim().to_string(),
        None => {
            d.error(line, path, format!("required: {what}"));
            String::new()
        }
    }
}

pub(super) fn zones(
    d: &mut Diagnostics,
    v: Option<Val<Vec<String>>>,
    line: usize,
    path: &str,
) -> Vec<String> {
    let v = match v {
        Some(v) if !v.value.is_empty() => v,
        other => {
            let (line, path) = other.map_or((line, path.to_string()), |v| (v.line, v.path));
            d.error(line, &path, "required: at least one zone");
            return Vec::new();
        }
    };
    let mut seen = Vec::new();
    for zone in &v.value {
        if let Err(message) = check_name("zone", zone) {
            d.error(v.line, &v.path, message.to_string());
        } else if seen.contains(zone) {
            d.error(v.line, &v.path, format!("zone {zone:?} is listed twice"));
        }
        seen.push(zone.clone());
    }
    v.value
}

/// A subnetwork is regional: every zone must be in its region (the one its path names, or with
/// a bare name the one region all zones share).
pub(super) fn check_subnetwork_region(d: &mut Diagnostics, v: &Val<String>, zones: &[String]) {
    match region_of_subnetwork(&v.value) {
        Some(region) => {
            for zone in zones.iter().filter(|z| region_of_zone(z) != region) {
                let message = format!(
                    "subnetwork {:?} is in region {region}, but zone {zone:?} is not: a \
                     subnetwork is regional, so every zone must be in its region",
                    v.value
                );
                d.error(v.line, &v.path, message.to_string());
            }
        }
        None => {
            let mut regions: Vec<&str> = zones.iter().map(|z| region_of_zone(z)).collect();
            regions.sort_unstable();
            regions.dedup();
            if regions.len() > 1 {
                let message = format!(
                    "subnetwork {:?} is regional, but the zones span regions {}: list zones of \
                     one region",
                    v.value,
                    regions.join(", ")
                );
                d.error(v.line, &v.path, message.to_string());
            }
        }
    }
}

/// The service account and its scopes. Scopes without an account are an error in
/// `[runners.gce]`; carried over from `MachineOptions` (where docker-machine attached the
/// project's default account) they are dropped with a warning.
pub(super) fn service_account(
    d: &mut Diagnostics,
    account: Option<Val<String>>,
    scopes: Option<Val<Vec<String>>>,
) -> (Option<String>, Vec<String>) {
    if let Some(a) = &account {
        if a.value != "default" && !a.value.contains('@') {
            let message = format!(
                "invalid service account {:?}: expected an email address (or \"default\")",
                a.value
            );
            d.error(a.line, &a.path, message);
        }
    }
    let Some(scopes) = scopes.filter(|s| !s.value.is_empty()) else {
        return (account.map(|a| a.value), Vec::new());
    };
    if account.is_none() {
        if scopes.carried {
            d.warn(
                scopes.line,
                &scopes.path,
                WarningKind::ScopesWithoutServiceAccount,
            );
        } else {
            d.error(
                scopes.line,
                &scopes.path,
                "scopes need a service_account to apply to",
            );
        }
        return (None, Vec::new());
    }
    for scope in scopes.value.iter().filter(|s| !s.starts_with("https://")) {
        let message = format!(
            "invalid scope {scope:?}: expected a URL such as \
             \"https://www.googleapis.com/auth/cloud-platform\""
        );
        d.error(scopes.line, &scopes.path, message);
    }
    (account.map(|a| a.value), scopes.value)
}

pub(super) fn named(
    d: &mut Diagnostics,
    v: Option<Val<String>>,
    what: &str,
    default: &str,
) -> String {
    let Some(v) = v else {
        return default.to_string();
    };
    if let Err(message) = check_name(what, &v.value) {
        d.error(v.line, &v.path, message.to_string());
    }
    v.value
}

pub(super) fn disk_size(d: &mut Diagnostics, v: Option<Val<i64>>) -> u64 {
    let Some(v) = v else {
        return DEFAULT_DISK_SIZE_GB;
    };
    if !(10..=65536).contains(&v.value) {
        d.error(v.line, &v.path, "must be between 10 and 65536 (GB)");
        return DEFAULT_DISK_SIZE_GB;
    }
    v.value.unsigned_abs()
}

pub(super) fn tags(d: &mut Diagnostics, v: Option<Val<Vec<String>>>) -> Vec<String> {
    let Some(v) = v else { return Vec::new() };
    for tag in &v.value {
        if let Err(message) = check_tag(tag) {
            d.error(v.line, &v.path, message.to_string());
        }
    }
    v.value
}

pub(super) fn labels(
    d: &mut Diagnostics,
    v: Option<Val<BTreeMap<String, String>>>,
) -> BTreeMap<String, String> {
    let Some(v) = v else {
        return BTreeMap::new();
    };
    if v.value.len() > MAX_USER_LABELS {
        let message = format!(
            "too many labels ({}): GCE allows 64 per VM, {MAX_USER_LABELS} besides Flotilla's own",
            v.value.len()
        );
        d.error(v.line, &v.path, message.to_string());
    }
    v.value
}

pub(super) fn endpoint(
    d: &mut Diagnostics,
    f: Option<Field<String>>,
    path: &str,
) -> Option<String> {
    let f = f.filter(|f| !f.value.trim().is_empty())?;
    let url = f.value.trim().trim_end_matches('/').to_string();
    let ok = ["http://", "https://"]
        .iter()
        .any(|s| url.strip_prefix(s).is_some_and(|host| !host.is_empty()));
    if !ok {
        let message = format!(
            "invalid URL {:?}: must start with http:// or https://",
            f.value
        );
        d.error(f.line, path, message);
    }
    Some(url)
}

/// Integer seconds or a rate: the default when absent; an error below 1.
pub(super) fn at_least_one(
    d: &mut Diagnostics,
    f: Option<Field<i64>>,
    path: &str,
    default: u64,
) -> u64 {
    match f {
        None => default,
        Some(f) if f.value >= 1 => f.value.unsigned_abs(),
        Some(f) => {
            d.error(f.line, path, "must be at least 1");
            default
        }
    }
}
