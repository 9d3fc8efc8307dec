//! The AuditEvent of an applied HL7 v2 message (issue 5, item 9: every interaction that
//! writes patient data is audited, MLLP included). One event per message that was applied
//! (AA): what its transaction wrote, the patient, and the sender with its address. The
//! event layout (DICOM 110107 Import, HL7 table 0003 subtype, agent = MSH-3^MSH-4) is
//! described and built in [`crate::auth::audit`]; messages answered AE/AR wrote nothing
//! and are kept, with their reason, in `hl7_messages` instead.

use serde_json::Value;

use crate::auth::audit::{AuditRecord, Hl7Source};
use crate::storage::StoreTx;

/// What the transaction of one message did, for its AuditEvent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Imported {
    /// `Type/id` of each resource created or updated, in Bundle order (conditional creates
    /// that matched an existing resource wrote nothing and are left out).
    pub written: Vec<String>,
    /// Whether any of them was created.
    pub created: bool,
    /// The patients concerned, `Patient/id`: those of the Bundle's Patient entries, else
    /// the one a conditional reference (`Patient?identifier=…`) resolves to.
    pub patients: Vec<String>,
}

/// Reads `response` (the transaction-response of `bundle`) for what was written; resolves
/// a conditional patient reference in `tx` when the Bundle has no Patient entry (results
/// and orders with `--hl7-no-auto-create`). Best effort: a failed lookup leaves the
/// patient out.
pub async fn imported(
    base_url: &str,
    tx: &mut dyn StoreTx,
    bundle: &Value,
    response: &Value,
) -> Imported {
    let empty = Vec::new();
    let requests = bundle["entry"].as_array().unwrap_or(&empty);
    let responses = response["entry"].as_array().unwrap_or(&empty);
    let mut out = Imported::default();
    for (request, resp) in requests.iter().zip(responses) {
        let status = resp["response"]["status"].as_str().unwrap_or("");
        let Some(what) = resp["response"]["location"]
            .as_str()
            .and_then(|l| type_and_id(base_url, l))
        else {
            continue;
        };
        let matched_existing = request["request"]["method"] == "POST" && status.starts_with("200");
        if what.starts_with("Patient/") && !out.patients.contains(&what) {
            out.patients.push(what.clone());
        }
        if matched_existing || !(status.starts_with("200") || status.starts_with("201")) {
            continue;
        }
        out.created |= status.starts_with("201");
        if !out.written.contains(&what) {
            out.written.push(what);
        }
    }
    if out.patients.is_empty()
        && let Some(criteria) = conditional_patient(bundle)
    {
        let pairs: Vec<(String, String)> = url::form_urlencoded::parse(criteria.as_bytes())
            .into_owned()
            .collect();
        if let Ok(q) = crate::search::parse_query("Patient", &pairs, false)
            && let Ok(ids) = tx.search_ids(&q, 2).await
            && let [id] = ids.as_slice()
        {
            out.patients.push(format!("Patient/{id}"));
        }
    }
    out
}

/// `Type/id` of a transaction-response location `{base}/Type/id/_history/n`.
fn type_and_id(base_url: &str, location: &str) -> Option<String> {
    let rel = location
        .strip_prefix(base_url)
        .unwrap_or(location)
        .trim_start_matches('/');
    let mut parts = rel.split('/');
    let (t, id) = (parts.next()?, parts.next()?);
    (!t.is_empty() && !id.is_empty()).then(|| format!("{t}/{id}"))
}

/// The criteria of the first conditional Patient reference (`Patient?…`) in the Bundle.
fn conditional_patient(bundle: &Value) -> Option<String> {
    fn find(v: &Value) -> Option<String> {
        match v {
            Value::Object(map) => {
                if let Some(Value::String(r)) = map.get("reference")
                    && let Some(criteria) = r.strip_prefix("Patient?")
                {
                    return Some(criteria.to_string());
                }
                map.values().find_map(find)
            }
            Value::Array(items) => items.iter().find_map(find),
            _ => None,
        }
    }
    bundle["entry"]
        .as_array()?
        .iter()
        .find_map(|e| find(&e["resource"]))
}

/// The sender as the admin commands show it: `MSH-3^MSH-4` (ER7 text), or MSH-3 alone
/// when MSH-4 is empty.
pub fn sender(application: &str, facility: &str) -> String {
    if facility.is_empty() {
        application.to_string()
    } else {
        format!("{application}^{facility}")
    }
}

/// The audit record of a message applied from `sender` at `ip`.
pub fn record(
    sender: &str,
    ip: Option<String>,
    message: &hl7::Message,
    imported: Imported,
) -> AuditRecord {
    let source = Hl7Source {
        message_type: message.header().field(9).to_string(),
        control_id: message.control_id().to_string(),
    };
    let action = if imported.created { "C" } else { "U" };
    let mut r = AuditRecord::hl7_import(sender, ip, source, action);
    let mut patients = imported.patients.into_iter();
    r.patient = patients.next();
    r.entities = imported.written;
    for p in patients {
        if !r.entities.contains(&p) {
            r.entities.push(p);
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn locations_become_type_and_id() {
        let base = "http://h/fhir";
        assert_eq!(
            type_and_id(base, "http://h/fhir/Patient/1/_history/2").as_deref(),
            Some("Patient/1")
        );
        assert_eq!(
            type_and_id(base, "Observation/o/_history/1").as_deref(),
            Some("Observation/o")
        );
        assert_eq!(type_and_id(base, "http://h/fhir/"), None);
    }

    #[test]
    fn conditional_patient_references_are_found_in_resources() {
        let bundle = json!({"entry": [
            {"resource": {"resourceType": "Observation",
                          "subject": {"reference": "Patient?identifier=urn:mrn|7"}}},
        ]});
        assert_eq!(
            conditional_patient(&bundle).as_deref(),
            Some("identifier=urn:mrn|7")
        );
        assert_eq!(conditional_patient(&json!({"entry": []})), None);
    }

    #[test]
    fn sender_joins_application_and_facility() {
        assert_eq!(sender("LAB", "HOSP"), "LAB^HOSP");
        assert_eq!(sender("LAB", ""), "LAB");
    }
}
