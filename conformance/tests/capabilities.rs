//! capabilities interaction (FHIR R4 4.0.1, http.html#capabilities and
//! capabilitystatement.html).

use conformance::*;
use serde_json::Value;

server_tests!(
    metadata_returns_capability_statement_for_fhir_4_0_1,
    capability_statement_lists_all_r4_resource_types_with_interactions,
    capability_statement_declares_system_interactions_and_conditionals,
);

async fn capability_statement(server: &Server) -> Value {
    let resp = server.get("metadata").await;
    resp.assert_status(200).assert_fhir_json_content_type();
    resp.json()
}

/// http.html#capabilities: `GET [base]/metadata` returns a CapabilityStatement;
/// "fhirVersion" is the version the server implements (4.0.1), kind "instance" for a
/// running server, JSON among the formats.
async fn metadata_returns_capability_statement_for_fhir_4_0_1(server: Server) {
    let cs = capability_statement(&server).await;
    assert_eq!(cs["resourceType"], "CapabilityStatement");
    assert_eq!(cs["fhirVersion"], "4.0.1");
    assert_eq!(cs["kind"], "instance");
    assert!(
        matches!(cs["status"].as_str(), Some("active" | "draft")),
        "status: {}",
        cs["status"]
    );
    assert!(
        cs["date"].is_string(),
        "date is required (cpb-... invariants)"
    );
    let formats: Vec<&str> = cs["format"]
        .as_array()
        .expect("format")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        formats
            .iter()
            .any(|f| *f == "json" || f.contains("fhir+json")),
        "JSON format listed: {formats:?}"
    );
    assert_eq!(cs["rest"][0]["mode"], "server");
    if let Some(url) = cs["implementation"]["url"].as_str() {
        assert_eq!(
            url.trim_end_matches('/'),
            server.base(),
            "implementation.url is the base"
        );
    }
    // `mode=full` is the default (http.html#capabilities).
    let full = server.read("metadata?mode=full").await;
    assert_eq!(full["resourceType"], "CapabilityStatement");
}

/// http.html#capabilities with capabilitystatement.html (rest.resource): every one of the
/// 146 R4 resource types is listed once with the interactions this server implements.
async fn capability_statement_lists_all_r4_resource_types_with_interactions(server: Server) {
    let cs = capability_statement(&server).await;
    let expected = r4_resource_types();
    assert_eq!(expected.len(), 146, "R4 has 146 resource types");
    let resources = cs["rest"][0]["resource"].as_array().expect("rest.resource");
    let mut listed: Vec<String> = resources
        .iter()
        .map(|r| r["type"].as_str().unwrap_or_default().to_string())
        .collect();
    listed.sort();
    assert_eq!(listed, expected, "rest.resource types");
    let want = [
        "read",
        "vread",
        "update",
        "delete",
        "history-instance",
        "history-type",
        "create",
        "search-type",
    ];
    for r in resources {
        let codes: Vec<&str> = r["interaction"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|i| i["code"].as_str())
            .collect();
        for w in want {
            assert!(
                codes.contains(&w),
                "{} lacks interaction {w}: {codes:?}",
                r["type"]
            );
        }
        assert!(
            matches!(
                r["versioning"].as_str(),
                None | Some("versioned" | "versioned-update")
            ),
            "{} versioning {}",
            r["type"],
            r["versioning"]
        );
    }
}

/// capabilitystatement.html: rest.interaction lists transaction, batch and
/// history-system; resources declare conditional create/update/delete and update-create.
async fn capability_statement_declares_system_interactions_and_conditionals(server: Server) {
    let cs = capability_statement(&server).await;
    let codes: Vec<&str> = cs["rest"][0]["interaction"]
        .as_array()
        .expect("rest.interaction")
        .iter()
        .filter_map(|i| i["code"].as_str())
        .collect();
    for w in ["transaction", "batch", "history-system"] {
        assert!(codes.contains(&w), "rest.interaction lacks {w}: {codes:?}");
    }
    let patient = cs["rest"][0]["resource"]
        .as_array()
        .expect("rest.resource")
        .iter()
        .find(|r| r["type"] == "Patient")
        .expect("Patient listed")
        .clone();
    assert_eq!(patient["conditionalCreate"], true, "{patient}");
    assert_eq!(patient["updateCreate"], true, "{patient}");
    assert!(
        matches!(patient["conditionalUpdate"].as_bool(), Some(true)),
        "{patient}"
    );
    assert!(
        matches!(
            patient["conditionalDelete"].as_str(),
            Some("single" | "multiple")
        ),
        "{patient}"
    );
    let params: Vec<&str> = patient["searchParam"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert!(
        params.contains(&"identifier"),
        "Patient searchParam identifier: {params:?}"
    );
}
