//! Error handling: status codes and OperationOutcome (FHIR R4 4.0.1, http.html#errors,
//! http.html#status, http.html#update "Rejecting Updates", operationoutcome.html).

use conformance::*;
use serde_json::json;

server_tests!(
    create_with_malformed_json_is_400,
    create_with_resource_type_not_matching_url_is_400,
    update_with_resource_type_not_matching_url_is_400,
    update_with_body_id_not_matching_url_is_400,
    update_without_body_id_is_400,
    create_with_unknown_resource_type_in_url_is_404,
    create_with_unknown_resource_type_in_body_is_rejected,
    create_with_unknown_element_is_422_with_expression,
    create_with_wrong_primitive_type_is_422_with_expression,
    create_with_malformed_birth_date_is_422_with_expression,
    update_with_invalid_resource_is_422_and_keeps_old_version,
    update_with_malformed_id_is_rejected,
    delete_on_metadata_is_405,
    post_to_resource_instance_is_405,
    update_on_history_version_is_405,
    errors_do_not_store_anything,
    body_over_default_16_mib_limit_is_413,
);
backend_tests!(body_over_max_body_bytes_is_413);

/// http.html#errors: 400 Bad Request - "resource could not be parsed or failed basic FHIR
/// validation rules".
async fn create_with_malformed_json_is_400(server: Server) {
    let resp = server
        .request(Method::POST, "Patient")
        .header("Content-Type", FHIR_JSON)
        .body("{\"resourceType\": \"Patient\", ")
        .send()
        .await;
    resp.assert_outcome(&[400]);
    let resp = server
        .request(Method::POST, "Patient")
        .header("Content-Type", FHIR_JSON)
        .body("[1, 2, 3]")
        .send()
        .await;
    resp.assert_outcome(&[400, 422]);
}

/// http.html#create: "The resource type in the body must match the type in the URL";
/// a mismatch is 400 Bad Request.
async fn create_with_resource_type_not_matching_url_is_400(server: Server) {
    let body = json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"}});
    server.post("Patient", &body).await.assert_outcome(&[400]);
}

/// http.html#update: the resource type in the body must match the URL (400).
async fn update_with_resource_type_not_matching_url_is_400(server: Server) {
    let body = json!({"resourceType": "Observation", "id": "abc", "status": "final",
                      "code": {"text": "x"}});
    server
        .put("Patient/abc", &body)
        .await
        .assert_outcome(&[400]);
    server.get("Patient/abc").await.assert_status(404);
    server.get("Observation/abc").await.assert_status(404);
}

/// http.html#update: "If no id element is provided, or the id disagrees with the id in the
/// URL, the server SHALL respond with an HTTP 400 error code".
async fn update_with_body_id_not_matching_url_is_400(server: Server) {
    let mut p = patient(&unique_system(), "idm");
    p["id"] = json!("other-id");
    server
        .put("Patient/this-id", &p)
        .await
        .assert_outcome(&[400]);
    server.get("Patient/this-id").await.assert_status(404);
    server.get("Patient/other-id").await.assert_status(404);
}

/// http.html#update: no id element in the body is 400.
async fn update_without_body_id_is_400(server: Server) {
    let p = patient(&unique_system(), "noid");
    server
        .put("Patient/no-id-in-body", &p)
        .await
        .assert_outcome(&[400]);
    server.get("Patient/no-id-in-body").await.assert_status(404);
}

/// http.html#status: 404 Not Found - "resource type not supported, or not a FHIR
/// end-point".
async fn create_with_unknown_resource_type_in_url_is_404(server: Server) {
    let body = json!({"resourceType": "NotAType"});
    server.post("NotAType", &body).await.assert_outcome(&[404]);
    server
        .put(
            "NotAType/1",
            &json!({"resourceType": "NotAType", "id": "1"}),
        )
        .await
        .assert_outcome(&[404]);
}

/// http.html#errors: a body whose resourceType is not a FHIR resource cannot be parsed as
/// the resource the URL names: 400 (or 422).
async fn create_with_unknown_resource_type_in_body_is_rejected(server: Server) {
    let body = json!({"resourceType": "NotAType", "active": true});
    server
        .post("Patient", &body)
        .await
        .assert_outcome(&[400, 422]);
    let body = json!({"active": true});
    server
        .post("Patient", &body)
        .await
        .assert_outcome(&[400, 422]);
}

/// Find an issue expression containing `path` (operationoutcome.html: issue.expression is
/// the FHIRPath of the element in error).
fn assert_expression_mentions(oo: &serde_json::Value, path: &str) {
    let exprs = outcome_expressions(oo);
    assert!(
        exprs.iter().any(|e| e.contains(path)),
        "OperationOutcome.issue.expression should mention {path}: {exprs:?} in {oo}"
    );
}

/// http.html#errors: 422 Unprocessable Entity - "the proposed resource violated
/// applicable FHIR profiles or server business rules" (json.html: unknown properties are
/// an error), with the path in issue.expression.
async fn create_with_unknown_element_is_422_with_expression(server: Server) {
    let body = json!({"resourceType": "Patient", "foo": 1});
    let oo = server.post("Patient", &body).await.assert_outcome(&[422]);
    assert_expression_mentions(&oo, "Patient.foo");
}

/// http.html#errors (422) with json.html (primitive types): `"active": "yes"` is not a
/// boolean.
async fn create_with_wrong_primitive_type_is_422_with_expression(server: Server) {
    let body = json!({"resourceType": "Patient", "active": "yes"});
    let oo = server.post("Patient", &body).await.assert_outcome(&[422]);
    assert_expression_mentions(&oo, "Patient.active");
}

/// http.html#errors (422) with datatypes.html#date: "1990-13-45" is not a valid date.
async fn create_with_malformed_birth_date_is_422_with_expression(server: Server) {
    let mut p = patient(&unique_system(), "bd");
    p["birthDate"] = json!("1990-13-45");
    let oo = server.post("Patient", &p).await.assert_outcome(&[422]);
    assert_expression_mentions(&oo, "Patient.birthDate");
}

/// http.html#update "Rejecting Updates": 422 for an invalid resource; the stored version
/// is unchanged.
async fn update_with_invalid_resource_is_422_and_keeps_old_version(server: Server) {
    let created = server.create(&patient(&unique_system(), "inv")).await;
    let id = created["id"].as_str().unwrap().to_string();
    let mut bad = created.clone();
    bad["birthDate"] = json!("1990-13-45");
    let oo = server
        .put(&format!("Patient/{id}"), &bad)
        .await
        .assert_outcome(&[422]);
    assert_expression_mentions(&oo, "Patient.birthDate");
    let read = server.read(&format!("Patient/{id}")).await;
    assert_eq!(read["meta"]["versionId"], "1");
    assert_eq!(read["birthDate"], "1970-01-01");
}

/// datatypes.html#id (`[A-Za-z0-9\-\.]{1,64}`) with http.html#update: an update to a
/// malformed id is rejected (400 or 422) and nothing is stored.
async fn update_with_malformed_id_is_rejected(server: Server) {
    let long = "a".repeat(65);
    for id in [long.as_str(), "bad_id!", "has%20space"] {
        let mut p = patient(&unique_system(), "badid");
        p["id"] = json!(id.replace("%20", " "));
        server
            .put(&format!("Patient/{id}"), &p)
            .await
            .assert_outcome(&[400, 422]);
    }
    server
        .get(&format!("Patient/{long}"))
        .await
        .assert_status_in(&[400, 404]);
}

/// http.html#status: 405 Method Not Allowed - the interaction is not supported on that
/// endpoint (metadata is read-only).
async fn delete_on_metadata_is_405(server: Server) {
    server.delete("metadata").await.assert_outcome(&[405]);
}

/// http.html#status: POST on an instance URL is not a FHIR interaction: 405.
async fn post_to_resource_instance_is_405(server: Server) {
    let created = server.create(&patient(&unique_system(), "pi")).await;
    let id = created["id"].as_str().unwrap();
    server
        .post(&format!("Patient/{id}"), &created)
        .await
        .assert_outcome(&[405]);
}

/// http.html#vread / #status: a version is immutable; PUT on `_history/[vid]` is 405.
async fn update_on_history_version_is_405(server: Server) {
    let created = server.create(&patient(&unique_system(), "hv")).await;
    let id = created["id"].as_str().unwrap();
    server
        .put(&format!("Patient/{id}/_history/1"), &created)
        .await
        .assert_outcome(&[405]);
}

/// http.html#errors: a rejected request has no effect - after a series of errors the
/// type holds nothing new.
async fn errors_do_not_store_anything(server: Server) {
    let sys = unique_system();
    let mut bad = patient(&sys, "e1");
    bad["birthDate"] = json!("1990-13-45");
    server.post("Patient", &bad).await.assert_status(422);
    let mut bad = patient(&sys, "e2");
    bad["foo"] = json!(1);
    server.post("Patient", &bad).await.assert_status(422);
    let mut bad = patient(&sys, "e3");
    bad["active"] = json!("yes");
    server.post("Patient", &bad).await.assert_status(422);
    assert!(
        server
            .search(&format!("Patient?identifier={sys}|"))
            .await
            .is_empty()
    );
}

/// http.html#status with RFC 9110 (413 Content Too Large): a body over `--max-body-bytes`
/// is refused; one under it is accepted.
async fn body_over_max_body_bytes_is_413(backend: Backend) {
    let server = Server::start_with_args(backend, &["--max-body-bytes", "4096"]).await;
    let sys = unique_system();
    let mut big = patient(&sys, "big");
    big["name"][0]["text"] = json!("x".repeat(8192));
    let resp = server.post("Patient", &big).await;
    resp.assert_outcome(&[413]);
    let small = patient(&sys, "small");
    server.post("Patient", &small).await.assert_status(201);
    let mut tx_big = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": big, "request": {"method": "POST", "url": "Patient"}}]});
    tx_big["id"] = json!("t");
    server.post("", &tx_big).await.assert_outcome(&[413]);
    let found = server.search(&format!("Patient?identifier={sys}|")).await;
    assert_eq!(found.len(), 1, "only the small patient stored");
}

/// http.html#status with RFC 9110 (413 Content Too Large): the default limit is 16 MiB
/// (16777216 bytes). A body just under it is accepted; one over it is refused with 413
/// and an OperationOutcome - or, as RFC 9110 15.5.14 allows, by closing the connection
/// while the client is still sending; either way nothing is stored and the server keeps
/// serving.
async fn body_over_default_16_mib_limit_is_413(server: Server) {
    let sys = unique_system();
    let mut under = patient(&sys, "just-under");
    under["name"][0]["text"] = json!("u".repeat(15 * 1024 * 1024));
    server.post("Patient", &under).await.assert_status(201);

    let mut big = patient(&sys, "huge");
    big["name"][0]["text"] = json!("x".repeat(16 * 1024 * 1024 + 1024));
    let sent = server
        .request(Method::POST, "Patient")
        .json(&big)
        .try_send()
        .await;
    if let Ok(resp) = sent {
        resp.assert_outcome(&[413]);
    }
    let stored = server.search(&format!("Patient?identifier={sys}|")).await;
    let values: Vec<&str> = stored
        .iter()
        .filter_map(|p| p["identifier"][0]["value"].as_str())
        .collect();
    assert_eq!(values, ["just-under"], "the oversized body was not stored");
}
