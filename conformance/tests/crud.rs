//! read, vread, create, update, delete and the general HTTP rules around them
//! (FHIR R4 4.0.1, http.html).

use conformance::*;
use serde_json::{Value, json};

server_tests!(
    create_returns_201_with_location_etag_and_last_modified,
    create_ignores_client_supplied_id_and_meta_version,
    create_preserves_meta_tags,
    read_returns_created_resource_with_etag_and_last_modified,
    read_of_unknown_id_is_404,
    read_of_unknown_resource_type_is_404,
    vread_returns_each_version,
    vread_of_unknown_version_is_404,
    update_of_existing_resource_is_200_and_bumps_version,
    update_as_create_with_client_id_is_201,
    update_ignores_meta_version_in_body,
    read_of_deleted_resource_is_410,
    delete_of_nonexistent_resource_is_200_or_204,
    delete_of_already_deleted_resource_is_200_or_204,
    update_after_delete_brings_resource_back,
    prefer_return_minimal_gives_empty_body,
    prefer_return_representation_gives_resource,
    prefer_return_operation_outcome_gives_outcome,
    responses_use_fhir_json_content_type,
    accept_application_json_is_served,
    format_parameter_selects_json,
    pretty_parameter_keeps_same_content,
    data_persists_across_restart,
);

/// http.html#create: 201 Created, Location `[base]/[type]/[id]/_history/[vid]`,
/// ETag and Last-Modified; the body is the stored resource with id and meta.
async fn create_returns_201_with_location_etag_and_last_modified(server: Server) {
    let sys = unique_system();
    let resp = server.post("Patient", &patient(&sys, "c1")).await;
    resp.assert_status(201);
    let body = resp.json();
    let id = body["id"].as_str().expect("created resource has an id");
    assert!(!id.is_empty());
    assert_eq!(body["meta"]["versionId"], "1", "first version is 1: {body}");
    let last_updated = body["meta"]["lastUpdated"]
        .as_str()
        .expect("meta.lastUpdated");
    parse_instant(last_updated);

    let location = resp.location().expect("Location header");
    assert_eq!(
        location,
        server.url(&format!("Patient/{id}/_history/1")),
        "Location is [base]/Patient/id/_history/1"
    );
    assert_eq!(resp.etag().as_deref(), Some("W/\"1\""), "ETag W/\"1\"");
    let lm = parse_http_date(&resp.header("last-modified").expect("Last-Modified header"));
    let lu = parse_instant(last_updated);
    assert_eq!(
        lm.timestamp(),
        lu.timestamp(),
        "Last-Modified matches meta.lastUpdated to the second"
    );
    assert_eq!(body["identifier"][0]["system"], sys.as_str());
}

/// http.html#create: "If an id is provided, the server SHALL ignore it"; and
/// http.html#versioning / resource.html#Meta: the server sets versionId and lastUpdated.
async fn create_ignores_client_supplied_id_and_meta_version(server: Server) {
    let mut p = patient(&unique_system(), "c2");
    p["id"] = json!("client-chosen-id");
    p["meta"] = json!({"versionId": "42", "lastUpdated": "2001-01-01T00:00:00Z"});
    let created = server.create(&p).await;
    assert_ne!(
        created["id"], "client-chosen-id",
        "server ignores the id on create"
    );
    assert_eq!(created["meta"]["versionId"], "1");
    assert_ne!(created["meta"]["lastUpdated"], "2001-01-01T00:00:00Z");
    server
        .get("Patient/client-chosen-id")
        .await
        .assert_status(404);
}

/// resource.html#Meta with http.html#create: tags and profiles sent by the client are
/// kept (only versionId/lastUpdated are server-managed).
async fn create_preserves_meta_tags(server: Server) {
    let mut p = patient(&unique_system(), "c3");
    p["meta"] = json!({
        "tag": [{"system": "https://example.org/tags", "code": "keep-me"}],
        "profile": ["http://hl7.org/fhir/StructureDefinition/Patient"]
    });
    let created = server.create(&p).await;
    let id = created["id"].as_str().unwrap();
    let read = server.read(&format!("Patient/{id}")).await;
    assert_eq!(
        read["meta"]["tag"], p["meta"]["tag"],
        "meta.tag kept: {read}"
    );
    assert_eq!(read["meta"]["profile"], p["meta"]["profile"]);
}

/// http.html#read: 200 with the resource, ETag `W/"vid"` and Last-Modified.
async fn read_returns_created_resource_with_etag_and_last_modified(server: Server) {
    let p = patient(&unique_system(), "r1");
    let created = server.create(&p).await;
    let id = created["id"].as_str().unwrap();
    let resp = server.get(&format!("Patient/{id}")).await;
    resp.assert_status(200);
    let read = resp.json();
    assert_eq!(read["resourceType"], "Patient");
    assert_eq!(read["id"], id);
    assert_eq!(without_id_meta(&read), without_id_meta(&p));
    assert_eq!(read["meta"]["versionId"], "1");
    assert_eq!(resp.etag().as_deref(), Some("W/\"1\""));
    let lm = parse_http_date(&resp.header("last-modified").expect("Last-Modified"));
    let lu = parse_instant(read["meta"]["lastUpdated"].as_str().unwrap());
    assert_eq!(lm.timestamp(), lu.timestamp());
}

/// http.html#read: "Unknown resources and deleted resources are treated differently on a
/// read: a GET for a deleted resource returns a 410 status code, whereas a GET for an
/// unknown resource returns 404".
async fn read_of_unknown_id_is_404(server: Server) {
    server
        .get("Patient/does-not-exist")
        .await
        .assert_outcome(&[404]);
}

/// http.html#read and #status (404 Not Found: "resource type not supported, or not a
/// FHIR end-point").
async fn read_of_unknown_resource_type_is_404(server: Server) {
    server.get("NotAType/123").await.assert_outcome(&[404]);
    server.get("NotAType").await.assert_outcome(&[404]);
}

/// http.html#vread: `GET [base]/[type]/[id]/_history/[vid]` returns that version.
async fn vread_returns_each_version(server: Server) {
    let p = patient(&unique_system(), "v1");
    let created = server.create(&p).await;
    let id = created["id"].as_str().unwrap().to_string();
    let mut v2 = created.clone();
    v2["active"] = json!(true);
    server
        .put(&format!("Patient/{id}"), &v2)
        .await
        .assert_status(200);

    let r1 = server.get(&format!("Patient/{id}/_history/1")).await;
    r1.assert_status(200);
    assert_eq!(r1.etag().as_deref(), Some("W/\"1\""));
    let r1 = r1.json();
    assert_eq!(r1["meta"]["versionId"], "1");
    assert!(r1.get("active").is_none(), "version 1 has no active: {r1}");

    let r2 = server.read(&format!("Patient/{id}/_history/2")).await;
    assert_eq!(r2["meta"]["versionId"], "2");
    assert_eq!(r2["active"], true);
}

/// http.html#vread: a version that does not exist is 404.
async fn vread_of_unknown_version_is_404(server: Server) {
    let created = server.create(&patient(&unique_system(), "v2")).await;
    let id = created["id"].as_str().unwrap();
    server
        .get(&format!("Patient/{id}/_history/99"))
        .await
        .assert_outcome(&[404]);
    server
        .get("Patient/no-such-id/_history/1")
        .await
        .assert_outcome(&[404]);
}

/// http.html#update: "If the interaction is successful, the server SHALL return either a
/// 200 OK HTTP status code if the resource was updated, or a 201 Created status code if
/// the resource was created"; with ETag/Last-Modified/Location for the new version.
async fn update_of_existing_resource_is_200_and_bumps_version(server: Server) {
    let created = server.create(&patient(&unique_system(), "u1")).await;
    let id = created["id"].as_str().unwrap().to_string();
    let mut next = created.clone();
    next["gender"] = json!("female");
    let resp = server.put(&format!("Patient/{id}"), &next).await;
    resp.assert_status(200);
    assert_eq!(resp.etag().as_deref(), Some("W/\"2\""));
    assert!(resp.header("last-modified").is_some(), "Last-Modified");
    if let Some(loc) = resp.location() {
        assert_eq!(
            parse_location(&loc),
            ("Patient".into(), id.clone(), Some("2".into()))
        );
    }
    let body = resp.json();
    assert_eq!(body["meta"]["versionId"], "2");
    assert_eq!(body["gender"], "female");
    let read = server.read(&format!("Patient/{id}")).await;
    assert_eq!(read["meta"]["versionId"], "2");
    assert_eq!(read["gender"], "female");
    let lu1 = parse_instant(created["meta"]["lastUpdated"].as_str().unwrap());
    let lu2 = parse_instant(read["meta"]["lastUpdated"].as_str().unwrap());
    assert!(lu2 >= lu1, "lastUpdated does not go backwards");
}

/// http.html#upsert (Update as Create): PUT to a new id creates it with that id: 201.
async fn update_as_create_with_client_id_is_201(server: Server) {
    let mut p = patient(&unique_system(), "u2");
    p["id"] = json!("client-id-1");
    let resp = server.put("Patient/client-id-1", &p).await;
    resp.assert_status(201);
    assert_eq!(resp.etag().as_deref(), Some("W/\"1\""));
    let loc = resp.location().expect("Location on 201");
    assert_eq!(
        parse_location(&loc),
        ("Patient".into(), "client-id-1".into(), Some("1".into()))
    );
    let read = server.read("Patient/client-id-1").await;
    assert_eq!(read["id"], "client-id-1");
    assert_eq!(read["meta"]["versionId"], "1");
    assert_eq!(without_id_meta(&read), without_id_meta(&p));
}

/// http.html#update: "If the request body includes a meta, the server SHALL ignore the
/// provided versionId and lastUpdated values".
async fn update_ignores_meta_version_in_body(server: Server) {
    let created = server.create(&patient(&unique_system(), "u3")).await;
    let id = created["id"].as_str().unwrap().to_string();
    let mut next = created.clone();
    next["meta"]["versionId"] = json!("77");
    next["meta"]["lastUpdated"] = json!("2001-01-01T00:00:00Z");
    let resp = server.put(&format!("Patient/{id}"), &next).await;
    resp.assert_status(200);
    let read = server.read(&format!("Patient/{id}")).await;
    assert_eq!(read["meta"]["versionId"], "2");
    assert_ne!(read["meta"]["lastUpdated"], "2001-01-01T00:00:00Z");
}

/// http.html#delete and #read: after a delete, read returns 410 Gone.
async fn read_of_deleted_resource_is_410(server: Server) {
    let created = server.create(&patient(&unique_system(), "d1")).await;
    let id = created["id"].as_str().unwrap();
    server
        .delete(&format!("Patient/{id}"))
        .await
        .assert_status_in(&[200, 204]);
    server
        .get(&format!("Patient/{id}"))
        .await
        .assert_outcome(&[410]);
}

/// http.html#delete: "Upon successful deletion, or if the resource does not exist at all,
/// the server should return either a 200 OK ... or a 204 No Content".
async fn delete_of_nonexistent_resource_is_200_or_204(server: Server) {
    server
        .delete("Patient/never-existed")
        .await
        .assert_status_in(&[200, 204]);
}

/// http.html#delete: "Performing this interaction on a resource that is already deleted
/// has no effect, and the server should return either a 200 OK ... or a 204 No Content".
async fn delete_of_already_deleted_resource_is_200_or_204(server: Server) {
    let created = server.create(&patient(&unique_system(), "d2")).await;
    let id = created["id"].as_str().unwrap();
    for _ in 0..2 {
        server
            .delete(&format!("Patient/{id}"))
            .await
            .assert_status_in(&[200, 204]);
    }
    server
        .get(&format!("Patient/{id}"))
        .await
        .assert_status(410);
}

/// http.html#delete: "Resources that have been deleted may be 'brought back to life' by a
/// subsequent update interaction using an HTTP PUT" (as a new version).
async fn update_after_delete_brings_resource_back(server: Server) {
    let created = server.create(&patient(&unique_system(), "d3")).await;
    let id = created["id"].as_str().unwrap().to_string();
    server
        .delete(&format!("Patient/{id}"))
        .await
        .assert_status_in(&[200, 204]);
    let mut again = without_id_meta(&created);
    again["id"] = json!(id);
    server
        .put(&format!("Patient/{id}"), &again)
        .await
        .assert_status_in(&[200, 201]);
    let read = server.read(&format!("Patient/{id}")).await;
    assert_eq!(
        read["meta"]["versionId"], "3",
        "create=1, delete=2, update=3: {read}"
    );
}

/// http.html#return (Managing Return Content): `Prefer: return=minimal` -> no body; the
/// headers (Location, ETag) still identify the result.
async fn prefer_return_minimal_gives_empty_body(server: Server) {
    let resp = server
        .request(Method::POST, "Patient")
        .header("Prefer", "return=minimal")
        .json(&patient(&unique_system(), "m1"))
        .send()
        .await;
    resp.assert_status(201);
    assert!(resp.body.is_empty(), "empty body, got {}", resp.text());
    let loc = resp.location().expect("Location");
    let (_, id, _) = parse_location(&loc);
    assert_eq!(resp.etag().as_deref(), Some("W/\"1\""));

    let mut upd = server.read(&format!("Patient/{id}")).await;
    upd["active"] = json!(false);
    let resp = server
        .request(Method::PUT, &format!("Patient/{id}"))
        .header("Prefer", "return=minimal")
        .json(&upd)
        .send()
        .await;
    resp.assert_status(200);
    assert!(
        resp.body.is_empty(),
        "empty body on update, got {}",
        resp.text()
    );
    assert_eq!(resp.etag().as_deref(), Some("W/\"2\""));
}

/// http.html#return: `Prefer: return=representation` returns the full resource (also the
/// default of this server).
async fn prefer_return_representation_gives_resource(server: Server) {
    let p = patient(&unique_system(), "m2");
    let resp = server
        .request(Method::POST, "Patient")
        .header("Prefer", "return=representation")
        .json(&p)
        .send()
        .await;
    resp.assert_status(201);
    let body = resp.json();
    assert_eq!(body["resourceType"], "Patient");
    assert!(body["id"].is_string());
    assert_eq!(without_id_meta(&body), without_id_meta(&p));
}

/// http.html#return: `Prefer: return=OperationOutcome` returns an OperationOutcome
/// instead of the resource.
async fn prefer_return_operation_outcome_gives_outcome(server: Server) {
    let resp = server
        .request(Method::POST, "Patient")
        .header("Prefer", "return=OperationOutcome")
        .json(&patient(&unique_system(), "m3"))
        .send()
        .await;
    resp.assert_status(201);
    assert!(resp.location().is_some(), "Location still present");
    let body = resp.json();
    assert_eq!(body["resourceType"], "OperationOutcome", "{body}");
}

/// http.html#mime-type: the formal mime type for FHIR JSON is `application/fhir+json`;
/// servers use it (with charset utf-8, the only allowed encoding) on every response.
async fn responses_use_fhir_json_content_type(server: Server) {
    let created = server.create(&patient(&unique_system(), "ct")).await;
    let id = created["id"].as_str().unwrap();
    server
        .get(&format!("Patient/{id}"))
        .await
        .assert_fhir_json_content_type();
    server.get("metadata").await.assert_fhir_json_content_type();
    server
        .get("Patient?_count=1")
        .await
        .assert_fhir_json_content_type();
    server
        .get("Patient/nope")
        .await
        .assert_fhir_json_content_type();
    server
        .post("Patient", &patient(&unique_system(), "ct2"))
        .await
        .assert_fhir_json_content_type();
}

/// http.html#mime-type: "servers SHALL support application/json" as an alternative
/// mime type for requests (Accept and Content-Type).
async fn accept_application_json_is_served(server: Server) {
    let body = serde_json::to_vec(&patient(&unique_system(), "aj")).unwrap();
    let resp = server
        .request(Method::POST, "Patient")
        .header("Content-Type", "application/json")
        .header("Accept", "application/json")
        .body(body)
        .send()
        .await;
    resp.assert_status(201);
    let id = resp.json()["id"].as_str().unwrap().to_string();
    let resp = server
        .request(Method::GET, &format!("Patient/{id}"))
        .header("Accept", "application/json")
        .send()
        .await;
    resp.assert_status(200);
    let ct = resp.header("content-type").unwrap_or_default();
    assert!(ct.contains("json"), "JSON content type, got {ct}");
    assert_eq!(resp.json()["id"], id.as_str());
}

/// http.html#mime-type: the `_format` parameter overrides Accept (`json`,
/// `application/json`, `application/fhir+json`).
async fn format_parameter_selects_json(server: Server) {
    let created = server.create(&patient(&unique_system(), "fmt")).await;
    let id = created["id"].as_str().unwrap();
    for fmt in ["json", "application/json", "application/fhir%2Bjson"] {
        let resp = server
            .request(Method::GET, &format!("Patient/{id}?_format={fmt}"))
            .header("Accept", "*/*")
            .send()
            .await;
        resp.assert_status(200);
        assert_eq!(resp.json()["id"], id, "_format={fmt}");
    }
}

/// http.html#general (General parameters): `_pretty=true` asks for pretty-printed output;
/// the content is the same resource.
async fn pretty_parameter_keeps_same_content(server: Server) {
    let created = server.create(&patient(&unique_system(), "pretty")).await;
    let id = created["id"].as_str().unwrap();
    let plain = server.read(&format!("Patient/{id}")).await;
    let resp = server.get(&format!("Patient/{id}?_pretty=true")).await;
    resp.assert_status(200);
    assert!(resp.text().contains('\n'), "pretty output has line breaks");
    assert_eq!(resp.json(), plain);
}

/// http.html#read after a server restart: the stored resources and their versions are
/// durable (read, vread and history still answer the same).
async fn data_persists_across_restart(mut server: Server) {
    let created = server.create(&patient(&unique_system(), "persist")).await;
    let id = created["id"].as_str().unwrap().to_string();
    let mut v2 = created.clone();
    v2["active"] = json!(true);
    server
        .put(&format!("Patient/{id}"), &v2)
        .await
        .assert_status(200);
    let before: Value = server.read(&format!("Patient/{id}")).await;
    server.restart().await;
    let after = server.read(&format!("Patient/{id}")).await;
    assert_eq!(after, before);
    let v1 = server.read(&format!("Patient/{id}/_history/1")).await;
    assert_eq!(v1["meta"]["versionId"], "1");
    let created2 = server.create(&patient(&unique_system(), "persist2")).await;
    assert_ne!(created2["id"], id.as_str(), "ids stay unique after restart");
}

backend_tests!(base_url_flag_sets_location_and_full_urls);

/// http.html#root (Service Base URL) with `--base-url`: the public base URL the server is
/// told to use appears in Location and Bundle fullUrl, not the listen address.
async fn base_url_flag_sets_location_and_full_urls(backend: Backend) {
    let public = "https://fhir.example.org/fhir";
    let server = Server::start_with_args(backend, &["--base-url", public]).await;
    let sys = unique_system();
    let resp = server.post("Patient", &patient(&sys, "base")).await;
    resp.assert_status(201);
    let id = resp.json()["id"].as_str().unwrap().to_string();
    assert_eq!(
        resp.location().as_deref(),
        Some(format!("{public}/Patient/{id}/_history/1").as_str())
    );
    let found = server.read(&format!("Patient?identifier={sys}|base")).await;
    assert_eq!(
        found["entry"][0]["fullUrl"],
        format!("{public}/Patient/{id}").as_str()
    );
}
