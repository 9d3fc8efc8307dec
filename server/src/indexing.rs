//! Search-index extraction at write time: the rows of [`IndexEntries`] for one resource,
//! written in the same transaction as the resource (see `storage`).
//!
//! Covers the parameters of [`crate::search::SUPPORTED_PARAMS`] that need index rows:
//! `identifier` (R4 search.html#token on `Identifier`: `system|value`).
//! `_id` and `_lastUpdated` are columns of the `resources` table and need no rows.

use serde_json::Value;

use crate::search::TokenParam;
use crate::storage::{IndexEntries, TokenIndex};

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
    entries
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
}
