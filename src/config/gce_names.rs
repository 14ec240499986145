//! Compute Engine's naming rules, as pure checks for the GCE validator: image references (and
//! docker-machine's short image form), label keys and values, network tags, resource names, and
//! the region of a zone or of a subnetwork path. Each returns a message for the validator to
//! attach to a key.

use std::sync::LazyLock;

use regex::Regex;

/// The ownership labels Flotilla puts on every VM start with this; operators' labels must not.
pub(super) const RESERVED_LABEL_PREFIX: &str = "flotilla-";

/// Labels GCE allows on one resource; two are Flotilla's.
pub(super) const MAX_USER_LABELS: usize = 62;

/// Compute API prefixes of full resource URLs.
const API_PREFIXES: [&str; 2] = [
    "https://www.googleapis.com/compute/v1/",
    "https://compute.googleapis.com/compute/v1/",
];

static IMAGE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^projects/[^/\s]+/global/images/(family/)?[a-z]([-a-z0-9]*[a-z0-9])?$")
        .expect("static regex")
});

/// A GCE name, label or image reference that GCE would refuse; the message says what to write.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum NameError {
    /// Not an image reference Flotilla understands.
    #[error(
        "invalid image {text:?}: use projects/PROJECT/global/images/NAME, \
         projects/PROJECT/global/images/family/FAMILY or a full image URL"
    )]
    Image { text: String },
    /// A label key GCE refuses.
    #[error(
        "invalid label key {key:?}: use 1 to 63 lowercase letters, digits, '_' or '-', \
         starting with a letter"
    )]
    LabelKey { key: String },
    /// A label key in Flotilla's own namespace.
    #[error(
        "label key {key:?} is reserved: Flotilla's own labels start with \
         {RESERVED_LABEL_PREFIX:?}"
    )]
    ReservedLabelKey { key: String },
    /// A label value GCE refuses.
    #[error(
        "invalid value {value:?} of label {key:?}: use at most 63 lowercase letters, \
         digits, '_' or '-'"
    )]
    LabelValue { key: String, value: String },
    /// A `google-label` option without its `:`.
    #[error("invalid label {value:?}: expected key:value")]
    LabelPair { value: String },
    /// A network tag GCE refuses.
    #[error(
        "invalid network tag {tag:?}: use 1 to 63 lowercase letters, digits or '-', \
         starting with a letter and not ending with '-'"
    )]
    Tag { tag: String },
    /// A zone, machine type or disk type that is not a plain name.
    #[error("invalid {what} {name:?}: use lowercase letters, digits and '-' (a name, not a URL)")]
    Name { what: String, name: String },
}

static RFC1035: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$").expect("static regex"));

/// An image reference as Flotilla stores it: `projects/P/global/images/[family/]N` or a full
/// image URL (kept as written), or docker-machine's `P/global/images/N` (given `projects/`).
pub(super) fn normalize_image(text: &str) -> Result<String, NameError> {
    let text = text.trim();
    let relative = API_PREFIXES
        .iter()
        .find_map(|prefix| text.strip_prefix(prefix))
        .unwrap_or(text);
    if IMAGE.is_match(relative) {
        return Ok(text.to_string());
    }
    let carried = format!("projects/{relative}");
    if relative == text && IMAGE.is_match(&carried) {
        return Ok(carried);
    }
    Err(NameError::Image {
        text: text.to_string(),
    })
}

/// A label key: 1 to 63 lowercase letters, digits, `_` or `-`, starting with a letter; not one
/// of Flotilla's own.
pub(super) fn check_label_key(key: &str) -> Result<(), NameError> {
    let first_ok = key.chars().next().is_some_and(char::is_lowercase);
    if !first_ok || key.chars().count() > 63 || !key.chars().all(label_char) {
        return Err(NameError::LabelKey {
            key: key.to_string(),
        });
    }
    if key.starts_with(RESERVED_LABEL_PREFIX) {
        return Err(NameError::ReservedLabelKey {
            key: key.to_string(),
        });
    }
    Ok(())
}

/// A label value: at most 63 lowercase letters, digits, `_` or `-` (may be empty).
pub(super) fn check_label_value(key: &str, value: &str) -> Result<(), NameError> {
    if value.chars().count() > 63 || !value.chars().all(label_char) {
        return Err(NameError::LabelValue {
            key: key.to_string(),
            value: value.to_string(),
        });
    }
    Ok(())
}

fn label_char(c: char) -> bool {
    c.is_lowercase() || c.is_ascii_digit() || c == '_' || c == '-'
}

/// A network tag (RFC 1035: lowercase letter first, then letters, digits, `-`; at most 63).
pub(super) fn check_tag(tag: &str) -> Result<(), NameError> {
    if RFC1035.is_match(tag) {
        Ok(())
    } else {
        Err(NameError::Tag {
            tag: tag.to_string(),
        })
    }
}

/// A plain resource name (zone, machine type, disk type): lowercase letters, digits and `-`.
pub(super) fn check_name(what: &str, name: &str) -> Result<(), NameError> {
    let valid = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if valid {
        Ok(())
    } else {
        Err(NameError::Name {
            what: what.to_string(),
            name: name.to_string(),
        })
    }
}

/// The region of a zone (`europe-west4-b` → `europe-west4`).
pub(super) fn region_of_zone(zone: &str) -> &str {
    zone.rsplit_once('-').map_or(zone, |(region, _)| region)
}

/// The region a subnetwork path names (`…/regions/R/subnetworks/N`), if it names one.
pub(super) fn region_of_subnetwork(subnetwork: &str) -> Option<&str> {
    let mut parts = subnetwork.split('/');
    parts.find(|p| *p == "regions")?;
    parts.next().filter(|r| !r.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_in_all_accepted_forms() {
        let cos = "projects/cos-cloud/global/images/family/cos-stable";
        assert_eq!(normalize_image(cos).as_deref(), Ok(cos));
        let url = "https://www.googleapis.com/compute/v1/projects/p/global/images/img-1";
        assert_eq!(normalize_image(url).as_deref(), Ok(url));
        assert_eq!(
            normalize_image("gitlab-ci-155816/global/images/runners-cos-v1").as_deref(),
            Ok("projects/gitlab-ci-155816/global/images/runners-cos-v1")
        );
        assert!(normalize_image("cos-stable").is_err());
        assert!(normalize_image("projects/p/global/images/").is_err());
        assert!(normalize_image("https://example.com/projects/p/global/images/x").is_err());
    }

    #[test]
    fn labels_follow_gce_rules() {
        assert_eq!(check_label_key("gl_resource_type"), Ok(()));
        assert_eq!(check_label_value("k", "ci_ephemeral"), Ok(()));
        assert_eq!(check_label_value("k", ""), Ok(()));
        assert!(check_label_key("").is_err());
        assert!(check_label_key("Env").is_err());
        assert!(check_label_key("1env").is_err());
        assert!(check_label_key(&"k".repeat(64)).is_err());
        assert!(check_label_key("flotilla-manager")
            .unwrap_err()
            .to_string()
            .contains("reserved"));
        assert!(check_label_value("k", "Prod").is_err());
        assert!(check_label_value("k", "a.b").is_err());
        assert!(check_label_value("k", &"v".repeat(64)).is_err());
    }

    #[test]
    fn tags_names_and_regions() {
        assert_eq!(check_tag("gitlab-com"), Ok(()));
        assert!(check_tag("srm-").is_err());
        assert!(check_tag("Web").is_err());
        assert_eq!(check_name("zone", "us-east1-d"), Ok(()));
        assert!(check_name("machine type", "zones/z/machineTypes/e2").is_err());
        assert_eq!(region_of_zone("europe-west4-b"), "europe-west4");
        assert_eq!(
            region_of_subnetwork("projects/p/regions/us-east1/subnetworks/s"),
            Some("us-east1")
        );
        assert_eq!(region_of_subnetwork("shared-runners"), None);
    }
}
