//! Validation of an `instances.insert` body the way Compute does it: instance name, label keys and
//! values, `machineType` scope, metadata items and scheduling. Produces the plain [`InsertSpec`]
//! the state works with; owns no state and knows nothing of faults.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use regex::Regex;
use serde_json::Value;

use super::error::ApiError;
use super::model::Scheduling;

static NAME_RE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(?:[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?|[1-9][0-9]{0,19})$").expect("static regex")
});
static LABEL_KEY_RE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[a-z][a-z0-9_-]{0,62}$").expect("static regex"));
static LABEL_VALUE_RE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[a-z0-9_-]{0,63}$").expect("static regex"));
static MACHINE_TYPE_RE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"^(?:https://(?:www|compute)\.googleapis\.com/compute/v1/)?(?:projects/([^/]+)/)?zones/([^/]+)/machineTypes/([a-z0-9][-a-z0-9]*)$",
    )
    .expect("static regex")
});

/// What an accepted insert asks for, extracted from the request body.
#[derive(Debug, Clone)]
pub(crate) struct InsertSpec {
    pub(crate) name: String,
    /// Machine type name (`e2-standard-4`), already checked to be in the instance's zone.
    pub(crate) machine_type: String,
    pub(crate) labels: BTreeMap<String, String>,
    /// Metadata items in request order.
    pub(crate) metadata: Vec<(String, String)>,
    pub(crate) scheduling: Scheduling,
    /// Whether the first network interface asked for an external address (an accessConfig).
    pub(crate) wants_nat: bool,
    /// The request body as sent, for the fields the fake echoes back unchanged (disks, tags, ...).
    pub(crate) body: Value,
}

/// Checks an insert body for `project`/`zone` and returns what it asks for, or the 400 Compute
/// would answer.
pub(crate) fn insert_spec(project: &str, zone: &str, body: Value) -> Result<InsertSpec, ApiError> {
    if !body.is_object() {
        return Err(ApiError::parse_error(
            "the request body must be a JSON object",
        ));
    }
    let name = match body.get("name") {
        None | Some(Value::Null) => return Err(ApiError::required("resource.name")),
        Some(Value::String(s)) => s.clone(),
        Some(other) => {
            return Err(ApiError::invalid_field(
                "resource.name",
                &other.to_string(),
                "Must be a string",
            ))
        }
    };
    check_name(&name)?;
    let machine_type = machine_type(project, zone, &body)?;
    let labels = labels(&body)?;
    let metadata = metadata(&body)?;
    let scheduling = Scheduling::from_request(body.get("scheduling"))?;
    let wants_nat = body
        .pointer("/networkInterfaces/0/accessConfigs")
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty());
    Ok(InsertSpec {
        name,
        machine_type,
        labels,
        metadata,
        scheduling,
        wants_nat,
        body,
    })
}

/// Checks an instance name against Compute's regex.
pub(crate) fn check_name(name: &str) -> Result<(), ApiError> {
    if NAME_RE.is_match(name) {
        Ok(())
    } else {
        Err(ApiError::invalid_field(
            "resource.name",
            name,
            "Must be a match of regex '(?:[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?|[1-9][0-9]{0,19})'",
        ))
    }
}

fn machine_type(project: &str, zone: &str, body: &Value) -> Result<String, ApiError> {
    const FIELD: &str = "resource.machineType";
    let raw = match body.get("machineType") {
        None | Some(Value::Null) => return Err(ApiError::required(FIELD)),
        Some(Value::String(s)) if s.is_empty() => return Err(ApiError::required(FIELD)),
        Some(Value::String(s)) => s.as_str(),
        Some(other) => {
            return Err(ApiError::invalid_field(
                FIELD,
                &other.to_string(),
                "Must be a string",
            ))
        }
    };
    let Some(caps) = MACHINE_TYPE_RE.captures(raw) else {
        return Err(ApiError::invalid_field(
            FIELD,
            raw,
            "The URL is malformed. Expected 'zones/{zone}/machineTypes/{machineType}'.",
        ));
    };
    let in_project = caps.get(1).is_none_or(|p| p.as_str() == project);
    let in_zone = caps.get(2).is_some_and(|z| z.as_str() == zone);
    if !in_project || !in_zone {
        return Err(ApiError::invalid_field(
            FIELD,
            raw,
            "Machine type specified is in a different scope than the instance.",
        ));
    }
    Ok(caps
        .get(3)
        .map(|m| m.as_str().to_owned())
        .unwrap_or_default())
}

fn labels(body: &Value) -> Result<BTreeMap<String, String>, ApiError> {
    const FIELD: &str = "resource.labels";
    let mut out = BTreeMap::new();
    let map = match body.get("labels") {
        None | Some(Value::Null) => return Ok(out),
        Some(Value::Object(m)) => m,
        Some(other) => {
            return Err(ApiError::invalid_field(
                FIELD,
                &other.to_string(),
                "Must be a map",
            ))
        }
    };
    if map.len() > 64 {
        return Err(ApiError::invalid_field(
            FIELD,
            "",
            "At most 64 labels are allowed.",
        ));
    }
    for (key, value) in map {
        if !LABEL_KEY_RE.is_match(key) {
            return Err(ApiError::invalid_field(
                FIELD,
                "",
                &format!(
                    "Label key '{key}' violates format constraints. The key must start with a \
                     lowercase character, can only contain lowercase letters, numeric characters, \
                     underscores and dashes. The key can be at most 63 characters long."
                ),
            ));
        }
        let value = value.as_str().unwrap_or_default();
        if !LABEL_VALUE_RE.is_match(value) {
            return Err(ApiError::invalid_field(
                FIELD,
                "",
                &format!(
                    "Label value '{value}' violates format constraints. The value can only contain \
                     lowercase letters, numeric characters, underscores and dashes. The value can \
                     be at most 63 characters long."
                ),
            ));
        }
        out.insert(key.clone(), value.to_owned());
    }
    Ok(out)
}

fn metadata(body: &Value) -> Result<Vec<(String, String)>, ApiError> {
    let Some(items) = body.pointer("/metadata/items").and_then(Value::as_array) else {
        return Ok(Vec::new());
    };
    let mut out: Vec<(String, String)> = Vec::new();
    for item in items {
        let key = item.get("key").and_then(Value::as_str).unwrap_or_default();
        if key.is_empty() {
            return Err(ApiError::required("resource.metadata.items.key"));
        }
        if out.iter().any(|(k, _)| k == key) {
            return Err(ApiError::invalid_field(
                "resource.metadata",
                key,
                "Duplicate metadata key.",
            ));
        }
        let value = item
            .get("value")
            .and_then(Value::as_str)
            .unwrap_or_default();
        out.push((key.to_owned(), value.to_owned()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(name: &str, mt: &str) -> Value {
        json!({"name": name, "machineType": mt})
    }

    #[test]
    fn names() {
        for ok in ["a", "runner-1", "a-b-c", "x0"] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "A", "1a-", "runner_1", "-a", "a-", &"a".repeat(64)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn machine_types() {
        let zone_form = body("vm", "zones/z1/machineTypes/e2-small");
        assert_eq!(
            insert_spec("p", "z1", zone_form)
                .map(|s| s.machine_type)
                .ok(),
            Some("e2-small".into())
        );
        let url =
            "https://www.googleapis.com/compute/v1/projects/p/zones/z1/machineTypes/n2-standard-2";
        assert!(insert_spec("p", "z1", body("vm", url)).is_ok());
        assert!(insert_spec("p", "z2", body("vm", "zones/z1/machineTypes/e2-small")).is_err());
        assert!(insert_spec("q", "z1", body("vm", url)).is_err());
        assert!(insert_spec("p", "z1", body("vm", "e2-small")).is_err());
        assert!(insert_spec("p", "z1", json!({"name": "vm"})).is_err());
    }

    #[test]
    fn labels_checked() {
        let mut b = body("vm", "zones/z/machineTypes/t");
        b["labels"] = json!({"ok-key_1": "v_a-1", "empty": ""});
        assert_eq!(
            insert_spec("p", "z", b.clone())
                .map(|s| s.labels.len())
                .ok(),
            Some(2)
        );
        b["labels"] = json!({"Bad": "v"});
        assert!(insert_spec("p", "z", b.clone()).is_err());
        b["labels"] = json!({"k": "UPPER"});
        assert!(insert_spec("p", "z", b.clone()).is_err());
        b["labels"] = json!({"k": "a".repeat(64)});
        assert!(insert_spec("p", "z", b).is_err());
    }
}
