//! JSON, Bundle and FHIR value helpers.

use serde_json::Value;

use crate::shared_dir;

/// `Bundle.entry` as a Vec (empty if absent).
pub fn entries(bundle: &Value) -> Vec<Value> {
    bundle["entry"].as_array().cloned().unwrap_or_default()
}

/// The URL of the Bundle link with the given relation.
pub fn bundle_link(bundle: &Value, relation: &str) -> Option<String> {
    bundle["link"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|l| l["relation"] == relation)
        .and_then(|l| l["url"].as_str())
        .map(str::to_string)
}

/// `W/"<versionId>"`.
pub fn weak_etag(version: &str) -> String {
    format!("W/\"{version}\"")
}

/// Parse a Location (absolute or relative, with or without `_history`) into
/// `(type, id, Option<version>)`.
pub fn parse_location(location: &str) -> (String, String, Option<String>) {
    let path = match location.find("/fhir/") {
        Some(i) => &location[i + "/fhir/".len()..],
        None => location.trim_start_matches('/'),
    };
    let parts: Vec<&str> = path.split('/').collect();
    assert!(
        parts.len() >= 2,
        "Location {location:?} should be [base]/Type/id[/_history/vid]"
    );
    let version = if parts.len() >= 4 && parts[2] == "_history" {
        Some(parts[3].to_string())
    } else {
        None
    };
    (parts[0].to_string(), parts[1].to_string(), version)
}

/// A unique identifier system for one test, so searches only see that test's data.
pub fn unique_system() -> String {
    format!("urn:mediflow-test:{}", uuid::Uuid::new_v4().simple())
}

/// A minimal valid Patient with one identifier.
pub fn patient(system: &str, value: &str) -> Value {
    serde_json::json!({
        "resourceType": "Patient",
        "identifier": [{"system": system, "value": value}],
        "name": [{"family": "Test", "given": [value]}],
        "gender": "unknown",
        "birthDate": "1970-01-01"
    })
}

/// The first differing path between two JSON values, if any (objects compared as maps).
pub fn first_difference(expected: &Value, actual: &Value) -> Option<String> {
    fn walk(a: &Value, b: &Value, path: &str) -> Option<String> {
        match (a, b) {
            (Value::Object(x), Value::Object(y)) => {
                for (k, v) in x {
                    match y.get(k) {
                        None => return Some(format!("{path}.{k}: missing in actual")),
                        Some(w) => {
                            if let Some(d) = walk(v, w, &format!("{path}.{k}")) {
                                return Some(d);
                            }
                        }
                    }
                }
                y.keys()
                    .find(|k| !x.contains_key(*k))
                    .map(|k| format!("{path}.{k}: unexpected in actual: {}", y[k]))
            }
            (Value::Array(x), Value::Array(y)) => {
                if x.len() != y.len() {
                    return Some(format!(
                        "{path}: array length {} expected, {} actual",
                        x.len(),
                        y.len()
                    ));
                }
                x.iter()
                    .zip(y)
                    .enumerate()
                    .find_map(|(i, (v, w))| walk(v, w, &format!("{path}[{i}]")))
            }
            _ if a == b => None,
            _ => Some(format!("{path}: expected {a}, actual {b}")),
        }
    }
    walk(expected, actual, "$")
}

/// A copy of `resource` without the top-level `id` and `meta`.
pub fn without_id_meta(resource: &Value) -> Value {
    let mut r = resource.clone();
    if let Some(o) = r.as_object_mut() {
        o.remove("id");
        o.remove("meta");
    }
    r
}

/// Parse a FHIR instant / dateTime with offset.
pub fn parse_instant(s: &str) -> chrono::DateTime<chrono::FixedOffset> {
    chrono::DateTime::parse_from_rfc3339(s).unwrap_or_else(|e| panic!("not an instant {s:?}: {e}"))
}

/// Parse an HTTP-date (`Last-Modified`).
pub fn parse_http_date(s: &str) -> chrono::DateTime<chrono::FixedOffset> {
    chrono::DateTime::parse_from_rfc2822(s)
        .unwrap_or_else(|e| panic!("Last-Modified {s:?} is not an HTTP-date: {e}"))
}

/// The 146 concrete R4 resource type names (from the R4 JSON schema in shared/testdata).
pub fn r4_resource_types() -> Vec<String> {
    let path = shared_dir().join("testdata/fhir-r4-definitions/fhir.schema.json");
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let schema: Value = serde_json::from_str(&text).expect("schema is JSON");
    let mut types: Vec<String> = schema["discriminator"]["mapping"]
        .as_object()
        .expect("discriminator.mapping")
        .keys()
        .cloned()
        .collect();
    types.sort();
    types
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_parse_absolute_and_relative() {
        assert_eq!(
            parse_location("http://127.0.0.1:1/fhir/Patient/abc/_history/2"),
            ("Patient".into(), "abc".into(), Some("2".into()))
        );
        assert_eq!(
            parse_location("Observation/x"),
            ("Observation".into(), "x".into(), None)
        );
    }

    #[test]
    fn first_difference_reports_paths() {
        let a = serde_json::json!({"a": [1, {"b": "x"}]});
        let b = serde_json::json!({"a": [1, {"b": "y"}]});
        assert_eq!(first_difference(&a, &a), None);
        assert!(first_difference(&a, &b).unwrap().starts_with("$.a[1].b"));
    }

    #[test]
    fn r4_has_146_resource_types() {
        let types = r4_resource_types();
        assert_eq!(types.len(), 146);
        assert!(types.contains(&"Patient".to_string()));
    }
}
