//! The CapabilityStatement (R4 capabilitystatement.html, http.html#capabilities), generated
//! from the same registries the server runs on: the R4 resource types of
//! `fhir_model::registry` and the search parameters of [`crate::search::SUPPORTED_PARAMS`].
//! Nothing here is a static file, so it cannot claim what the server does not do.

use fhir_model::registry::R4Registry;
use serde_json::{Value, json};

use crate::clock;

/// Type-level interactions every resource type supports (R4 valueset-type-restful-interaction).
const TYPE_INTERACTIONS: &[&str] = &[
    "read",
    "vread",
    "update",
    "delete",
    "history-instance",
    "history-type",
    "create",
    "search-type",
];

/// Builds the CapabilityStatement for a server whose FHIR base is `base_url`.
pub fn capability_statement(base_url: &str) -> Value {
    let resources: Vec<Value> = R4Registry::get()
        .resource_types()
        .map(|t| {
            let params: Vec<Value> = crate::search::SUPPORTED_PARAMS
                .iter()
                .filter(|p| (p.applies_to)(t))
                .map(|p| {
                    let mut sp = json!({
                        "name": p.code,
                        "type": p.kind.code(),
                        "documentation": p.documentation,
                    });
                    if let Some(def) = definition(p.code) {
                        sp["definition"] = json!(def);
                    }
                    sp
                })
                .collect();
            json!({
                "type": t,
                "profile": format!("http://hl7.org/fhir/StructureDefinition/{t}"),
                "interaction": TYPE_INTERACTIONS.iter().map(|i| json!({"code": i})).collect::<Vec<_>>(),
                "versioning": "versioned-update",
                "readHistory": true,
                "updateCreate": true,
                "conditionalCreate": true,
                "conditionalRead": "not-supported",
                "conditionalUpdate": true,
                "conditionalDelete": "single",
                "referencePolicy": ["literal", "logical"],
                "searchParam": params,
            })
        })
        .collect();
    json!({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": clock::format_instant(clock::now_micros()),
        "publisher": "MediFlow",
        "kind": "instance",
        "software": {"name": "MediFlow", "version": env!("CARGO_PKG_VERSION")},
        "implementation": {"description": "MediFlow FHIR R4 server", "url": base_url},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "json"],
        "rest": [{
            "mode": "server",
            "resource": resources,
            "interaction": [
                {"code": "transaction"},
                {"code": "batch"},
                {"code": "history-system"},
            ],
        }],
    })
}

/// The canonical URL of the core SearchParameter for the parameters common to all
/// resources (R4 search-parameters.json `Resource-id`, `Resource-lastUpdated`).
fn definition(code: &str) -> Option<&'static str> {
    match code {
        "_id" => Some("http://hl7.org/fhir/SearchParameter/Resource-id"),
        "_lastUpdated" => Some("http://hl7.org/fhir/SearchParameter/Resource-lastUpdated"),
        _ => None,
    }
}
