//! Search-index extraction at write time: the rows of [`IndexEntries`] for one resource,
//! written in the same transaction as the resource (see `storage`).
//!
//! Covers the parameters of [`crate::search::SUPPORTED_PARAMS`] that need index rows:
//! `identifier` (R4 search.html#token on `Identifier`: `system|value`) and the reference
//! parameters of [`ReferenceParam`] (R4 search.html#reference: target type and id).
//! `_id` and `_lastUpdated` are columns of the `resources` table and need no rows.

use serde_json::Value;

use crate::search::{ReferenceParam, TokenParam};
use crate::storage::{IndexEntries, ReferenceIndex, TokenIndex};

/// Index rows for `resource` (a JSON object with `resourceType`).
pub fn extract(resource: &Value) -> IndexEntries {
    let mut entries = IndexEntries::default();
    let identifiers = match resource.get("identifier") {
        Some(Value::Array(list)) => list.iter().collect::<Vec<_>>(),
        Some(one @ Value::Object(_)) => vec![one],
        _ => Vec::new(),
    };
    for ident in identifiers {
        let system = ident
            .get("system")
            .and_then(Value::as_str)
            .map(str::to_string);
        let value = ident
            .get("value")
            .and_then(Value::as_str)
            .map(str::to_string);
        if system.is_some() || value.is_some() {
            entries.tokens.push(TokenIndex {
                param: TokenParam::Identifier.as_str().to_string(),
                system,
                value,
            });
        }
    }
    let res_type = resource
        .get("resourceType")
        .and_then(Value::as_str)
        .unwrap_or("");
    for param in ReferenceParam::ALL {
        for (path, target_filter) in param.paths(res_type) {
            let mut found = Vec::new();
            collect_path(resource, path, &mut found);
            for reference in found {
                let Some((target_type, target_id)) = reference
                    .get("reference")
                    .and_then(Value::as_str)
                    .and_then(split_reference)
                else {
                    continue;
                };
                if target_filter.is_some_and(|f| f != target_type) {
                    continue;
                }
                let row = ReferenceIndex {
                    param: param.as_str().to_string(),
                    target_type: target_type.to_string(),
                    target_id: target_id.to_string(),
                };
                if !entries.references.contains(&row) {
                    entries.references.push(row);
                }
            }
        }
    }
    entries
}

/// The values at a dotted element path, arrays flattened (FHIRPath path navigation).
fn collect_path<'a>(value: &'a Value, path: &str, out: &mut Vec<&'a Value>) {
    let (head, rest) = match path.split_once('.') {
        Some((h, r)) => (h, Some(r)),
        None => (path, None),
    };
    let children: Vec<&Value> = match value.get(head) {
        Some(Value::Array(items)) => items.iter().collect(),
        Some(v) => vec![v],
        None => Vec::new(),
    };
    for child in children {
        match rest {
            Some(r) => collect_path(child, r, out),
            None => out.push(child),
        }
    }
}

/// `Type/id`, `Type/id/_history/n` or an absolute URL ending in `Type/id` → (Type, id).
/// Contained (`#x`) and `urn:` references have no stored target and give `None`.
pub fn split_reference(reference: &str) -> Option<(&str, &str)> {
    if reference.starts_with('#') || reference.starts_with("urn:") {
        return None;
    }
    let r = reference.split("/_history/").next().unwrap_or(reference);
    let mut parts = r.rsplitn(3, '/');
    let id = parts.next()?;
    let t = parts.next()?;
    let typed = t.chars().next().is_some_and(|c| c.is_ascii_uppercase());
    (typed && !id.is_empty() && !id.contains('?')).then_some((t, id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn identifier_system_and_value_are_indexed() {
        let p = json!({"resourceType": "Patient", "identifier": [{"system": "urn:mrn", "value": "42"}, {"value": "x"}]});
        let e = extract(&p);
        assert_eq!(e.tokens.len(), 2);
        assert_eq!(e.tokens[0].system.as_deref(), Some("urn:mrn"));
        assert_eq!(e.tokens[1].system, None);
    }

    #[test]
    fn observation_subject_patient_is_indexed_for_patient_and_subject() {
        let o = json!({"resourceType": "Observation", "subject": {"reference": "Patient/p1"}, "encounter": {"reference": "http://x/fhir/Encounter/e1/_history/2"}});
        let e = extract(&o);
        let params: Vec<(&str, &str, &str)> = e
            .references
            .iter()
            .map(|r| {
                (
                    r.param.as_str(),
                    r.target_type.as_str(),
                    r.target_id.as_str(),
                )
            })
            .collect();
        assert!(params.contains(&("patient", "Patient", "p1")));
        assert!(params.contains(&("subject", "Patient", "p1")));
        assert!(params.contains(&("encounter", "Encounter", "e1")));
    }

    #[test]
    fn observation_subject_group_is_not_a_patient() {
        let o = json!({"resourceType": "Observation", "subject": {"reference": "Group/g"}});
        let e = extract(&o);
        assert!(e.references.iter().all(|r| r.param != "patient"));
    }
}
