//! Moving references after a patient merge (HL7 v2 ADT^A40, v2.5.1 ch. 3.3.40; R4
//! patient.html#links): once the prior patient is linked `replaced-by` the surviving one,
//! the resources that pointed at the prior patient are updated to point at the survivor, in
//! the same transaction, each as a new version (history keeps the old reference).
//!
//! Which resources: those whose indexed reference parameters (`patient`, `subject`,
//! `encounter`) name the prior patient. References in other elements are left alone, and
//! the Patient resources themselves keep their links.

use serde_json::Value;

use super::{Context, read};
use crate::error::ApiError;
use crate::storage::StoreTx;

/// Rewrites every reference to `Patient/{prior}` in resources that refer to it into
/// `Patient/{survivor}`; returns how many resources got a new version.
///
/// Errors: storage errors and 422 if a rewritten resource no longer validates (never
/// expected: only reference strings change).
pub async fn move_patient_references(
    ctx: &Context,
    tx: &mut dyn StoreTx,
    prior: &str,
    survivor: &str,
) -> Result<usize, ApiError> {
    let from = format!("Patient/{prior}");
    let to = format!("Patient/{survivor}");
    let mut moved = 0;
    for (res_type, id) in tx.referencing("Patient", prior).await? {
        if res_type == "Patient" {
            continue;
        }
        let Some(current) = tx.read(&res_type, &id).await? else {
            continue;
        };
        if current.deleted {
            continue;
        }
        let mut resource = read::content_json(&current)?;
        if rewrite(&mut resource, &from, &to) {
            super::update(ctx, tx, &res_type, &id, resource, None).await?;
            moved += 1;
        }
    }
    Ok(moved)
}

/// Replaces `reference` values naming `from` (relative, absolute, or versioned) by `to`.
fn rewrite(v: &mut Value, from: &str, to: &str) -> bool {
    let mut changed = false;
    match v {
        Value::Object(map) => {
            for (k, child) in map.iter_mut() {
                match child {
                    Value::String(s) if k == "reference" && names(s, from) => {
                        *s = to.to_string();
                        changed = true;
                    }
                    _ => changed |= rewrite(child, from, to),
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                changed |= rewrite(item, from, to);
            }
        }
        _ => {}
    }
    changed
}

/// Whether `reference` designates `Type/id` given as `target`: `Type/id`,
/// `Type/id/_history/n`, or an absolute URL ending in either.
fn names(reference: &str, target: &str) -> bool {
    let unversioned = reference.split("/_history/").next().unwrap_or(reference);
    unversioned == target || unversioned.ends_with(&format!("/{target}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn references_to_the_prior_patient_are_rewritten_in_any_form() {
        let mut o = json!({"subject": {"reference": "http://x/fhir/Patient/a/_history/2"},
                           "performer": [{"reference": "Patient/a"}, {"reference": "Patient/ab"}]});
        assert!(rewrite(&mut o, "Patient/a", "Patient/b"));
        assert_eq!(o["subject"]["reference"], "Patient/b");
        assert_eq!(o["performer"][0]["reference"], "Patient/b");
        assert_eq!(o["performer"][1]["reference"], "Patient/ab");
    }
}
