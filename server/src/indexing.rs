//! Search-index rows of a resource, computed at write time and written in the same
//! transaction as the resource (see `storage`).
//!
//! The values come from `fhir_model::search::SearchParamRegistry::extract`, which evaluates
//! every R4 SearchParameter expression (FHIRPath) of the resource's type; this module maps
//! them onto the typed index tables ([`RowValue`]) under their hashed parameter identity
//! ([`crate::search::def_key`]). `_id` and `_lastUpdated` are columns of `resources` and need
//! no rows.

use fhir_model::search::{IndexValue, SearchParamRegistry};
use serde_json::Value;

use crate::search::def_key;
use crate::storage::{IndexRow, RowValue};

/// Longest indexed text value, in bytes. B-tree entries have a size limit (about 2.7 KB on
/// PostgreSQL), and a narrative or a long markdown is no use in an index: longer values are
/// cut at a character boundary, so `:contains` and prefix searches see their first
/// 512 bytes. `search_string.exact` keeps the whole text (it is not in an index).
pub const MAX_INDEXED_BYTES: usize = 512;

/// `s` cut to at most [`MAX_INDEXED_BYTES`] bytes at a character boundary.
fn clip(mut s: String) -> String {
    if s.len() > MAX_INDEXED_BYTES {
        let mut end = MAX_INDEXED_BYTES;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

fn clip_opt(s: Option<String>) -> Option<String> {
    s.map(clip)
}

/// Index rows for `resource` (a JSON object with `resourceType`). Duplicates are removed.
pub fn extract(resource: &Value) -> Vec<IndexRow> {
    let Some(res_type) = resource.get("resourceType").and_then(Value::as_str) else {
        return Vec::new();
    };
    let registry = SearchParamRegistry::get();
    let entries = registry.extract(resource);
    let mut rows: Vec<IndexRow> = Vec::with_capacity(entries.len());
    for entry in entries {
        let Some(def) = registry.param(res_type, entry.code) else {
            continue;
        };
        let (suffix, grp) = match entry.composite {
            Some((group, index)) => (format!("#{index}"), Some(i64::from(group))),
            None => (String::new(), None),
        };
        let key = |extra: &str| {
            if extra.is_empty() {
                def_key(def, res_type, &suffix)
            } else {
                def_key(def, res_type, &format!("{suffix}{extra}"))
            }
        };
        let (param, value) = match entry.value {
            IndexValue::String { normalized, exact } => (
                key(""),
                RowValue::String {
                    value: normalized,
                    exact,
                },
            ),
            IndexValue::Token { system, code } => (key(""), RowValue::Token { system, code }),
            IndexValue::TokenText(text) => (
                key(":text"),
                RowValue::String {
                    value: text.clone(),
                    exact: text,
                },
            ),
            IndexValue::OfType {
                type_system,
                type_code,
                value,
            } => (
                key(":of-type"),
                RowValue::Token {
                    system: type_system,
                    code: Some(format!("{type_code}|{value}")),
                },
            ),
            IndexValue::Date { low, high } => (key(""), RowValue::Date { low, high }),
            IndexValue::Number { value } => (key(""), RowValue::Number(value)),
            IndexValue::Quantity {
                value,
                system,
                code,
                unit,
                canonical,
            } => (
                key(""),
                RowValue::Quantity {
                    value,
                    system,
                    code: code.or(unit),
                    canonical,
                },
            ),
            IndexValue::Uri(uri) => (key(""), RowValue::Uri(uri)),
            IndexValue::Reference {
                target_type,
                id,
                url,
            } => (
                key(""),
                RowValue::Reference {
                    target_type,
                    target_id: id,
                    url,
                },
            ),
            IndexValue::ReferenceIdentifier { system, value } => (
                key(":identifier"),
                RowValue::Token {
                    system,
                    code: Some(value),
                },
            ),
        };
        let value = match value {
            RowValue::String { value, exact } => RowValue::String {
                value: clip(value),
                exact,
            },
            RowValue::Token { system, code } => RowValue::Token {
                system: clip_opt(system),
                code: clip_opt(code),
            },
            RowValue::Quantity {
                value,
                system,
                code,
                canonical,
            } => RowValue::Quantity {
                value,
                system: clip_opt(system),
                code: clip_opt(code),
                canonical,
            },
            RowValue::Uri(v) => RowValue::Uri(clip(v)),
            RowValue::Reference {
                target_type,
                target_id,
                url,
            } => RowValue::Reference {
                target_type,
                target_id: clip_opt(target_id),
                url: clip_opt(url),
            },
            other => other,
        };
        let row = IndexRow { param, grp, value };
        if !rows.contains(&row) {
            rows.push(row);
        }
    }
    rows
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
    use crate::search::param_key;
    use serde_json::json;

    #[test]
    fn long_values_are_cut_at_a_character_boundary() {
        let long = "é".repeat(400);
        let cut = clip(long);
        assert!(cut.len() <= MAX_INDEXED_BYTES && cut.chars().all(|c| c == 'é'));
    }

    #[test]
    fn identifier_rows_are_tokens_under_the_type_scoped_key() {
        let p = json!({"resourceType": "Patient", "identifier": [{"system": "urn:mrn", "value": "42"}]});
        let rows = extract(&p);
        assert!(
            rows.iter()
                .any(|r| r.param == param_key("Patient", "identifier")
                    && r.value
                        == RowValue::Token {
                            system: Some("urn:mrn".into()),
                            code: Some("42".into())
                        })
        );
    }

    #[test]
    fn observation_subject_patient_is_indexed_for_patient_and_subject() {
        let o = json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
            "subject": {"reference": "Patient/p1"}});
        let rows = extract(&o);
        for code in ["patient", "subject"] {
            assert!(
                rows.iter().any(|r| r.param == param_key("Observation", code)
                    && matches!(&r.value, RowValue::Reference { target_id: Some(id), .. } if id == "p1")),
                "{code}"
            );
        }
    }

    #[test]
    fn observation_subject_group_is_not_a_patient() {
        let o = json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
            "subject": {"reference": "Group/g"}});
        let rows = extract(&o);
        assert!(
            rows.iter()
                .all(|r| r.param != param_key("Observation", "patient"))
        );
    }
}
