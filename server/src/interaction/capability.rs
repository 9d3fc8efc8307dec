//! The CapabilityStatement (R4 capabilitystatement.html, http.html#capabilities), generated
//! from the same registries the server runs on: the R4 resource types of
//! `fhir_model::registry` and every searchable R4 SearchParameter of
//! `fhir_model::search::SearchParamRegistry` (the registry the indexer and parser use).
//! Nothing here is a static file, so it cannot claim what the server does not do.

use fhir_model::registry::R4Registry;
use fhir_model::search::{SearchParamRegistry, SearchParamType};
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
            let params: Vec<Value> = SearchParamRegistry::get()
                .params_for(t)
                .filter(|p| p.kind != SearchParamType::Special)
                .map(|p| {
                    json!({
                        "name": p.code,
                        "definition": p.url,
                        "type": p.kind.code(),
                        "documentation": p.description,
                    })
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
