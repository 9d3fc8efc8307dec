//! batch and transaction (FHIR R4 4.0.1, http.html#transaction and bundle.html).

use conformance::*;
use serde_json::{Value, json};

server_tests!(
    transaction_creates_all_entries_and_returns_transaction_response,
    urn_uuid_references_are_rewritten_to_created_ids,
    urn_uuid_references_are_rewritten_inside_extensions_and_contained,
    urn_uuid_links_are_rewritten_in_uri_elements,
    urn_uuid_links_are_rewritten_in_narrative,
    conditional_reference_in_transaction_is_resolved,
    unresolvable_conditional_reference_fails_the_transaction,
    transaction_if_none_exist_reuses_existing_resource,
    transaction_response_entries_keep_request_order,
    transaction_processes_get_after_writes,
    transaction_processes_delete_before_post,
    transaction_put_with_client_id_creates_201,
    transaction_conditional_update_and_delete_entries,
    transaction_with_failing_entry_changes_nothing,
    transaction_with_stale_if_match_changes_nothing,
    transaction_with_several_if_none_exist_matches_is_412,
    transaction_touching_same_resource_twice_fails,
    batch_processes_entries_independently_with_outcomes_for_failures,
    post_to_base_with_non_batch_bundle_is_rejected,
);

fn bundle(kind: &str, entries: Vec<Value>) -> Value {
    json!({"resourceType": "Bundle", "type": kind, "entry": entries})
}

fn urn() -> String {
    format!("urn:uuid:{}", uuid::Uuid::new_v4())
}

fn post_entry(full_url: &str, resource: Value) -> Value {
    let ty = resource["resourceType"].as_str().unwrap().to_string();
    json!({"fullUrl": full_url, "resource": resource,
           "request": {"method": "POST", "url": ty}})
}

fn observation(subject: &str) -> Value {
    json!({"resourceType": "Observation", "status": "final",
           "code": {"text": "heart rate"},
           "subject": {"reference": subject},
           "valueQuantity": {"value": 72, "unit": "beats/min"}})
}

/// POST a bundle to the base, assert 200 and the response bundle type; returns entries.
async fn post_bundle(server: &Server, b: &Value, response_type: &str) -> Vec<Value> {
    let resp = server.post("", b).await;
    resp.assert_status(200);
    let body = resp.json();
    assert_eq!(body["resourceType"], "Bundle", "{body}");
    assert_eq!(body["type"], response_type, "response Bundle.type");
    let es = entries(&body);
    assert_eq!(
        es.len(),
        b["entry"].as_array().map_or(0, Vec::len),
        "one response entry per request entry: {body}"
    );
    es
}

/// `Type/id` of a response entry's location.
fn location_ref(entry: &Value) -> String {
    let loc = entry["response"]["location"]
        .as_str()
        .unwrap_or_else(|| panic!("entry has response.location: {entry}"));
    let (ty, id, _) = parse_location(loc);
    format!("{ty}/{id}")
}

fn status_of(entry: &Value) -> &str {
    entry["response"]["status"].as_str().unwrap_or("")
}

/// http.html#transaction and #transaction-response: each entry has response.status,
/// location, etag and lastModified; the response is a `transaction-response` Bundle.
async fn transaction_creates_all_entries_and_returns_transaction_response(server: Server) {
    let sys = unique_system();
    let p = urn();
    let b = bundle(
        "transaction",
        vec![
            post_entry(&p, patient(&sys, "tx1")),
            post_entry(&urn(), observation(&p)),
        ],
    );
    let es = post_bundle(&server, &b, "transaction-response").await;
    for (e, ty) in es.iter().zip(["Patient", "Observation"]) {
        assert!(status_of(e).starts_with("201"), "status 201 Created: {e}");
        let loc = e["response"]["location"].as_str().expect("location");
        let (lty, id, vid) = parse_location(loc);
        assert_eq!(lty, ty);
        assert_eq!(vid.as_deref(), Some("1"), "location has _history/1: {loc}");
        assert_eq!(e["response"]["etag"], "W/\"1\"", "{e}");
        assert!(
            e["response"]["lastModified"].is_string(),
            "lastModified: {e}"
        );
        let read = server.read(&format!("{ty}/{id}")).await;
        assert_eq!(read["id"], id.as_str());
    }
    assert_eq!(
        server
            .search(&format!("Patient?identifier={sys}|tx1"))
            .await
            .len(),
        1
    );
}

/// http.html#trules and bundle.html#references: references to an entry's `urn:uuid:`
/// fullUrl are replaced by the id the server assigned.
async fn urn_uuid_references_are_rewritten_to_created_ids(server: Server) {
    let p = urn();
    let enc = urn();
    let b = bundle(
        "transaction",
        vec![
            post_entry(
                &enc,
                json!({"resourceType": "Encounter", "status": "finished",
                "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                          "code": "AMB"},
                "subject": {"reference": p}}),
            ),
            post_entry(&urn(), {
                let mut o = observation(&p);
                o["encounter"] = json!({"reference": enc});
                o
            }),
            post_entry(&p, patient(&unique_system(), "rw")),
        ],
    );
    let es = post_bundle(&server, &b, "transaction-response").await;
    let enc_ref = location_ref(&es[0]);
    let obs_ref = location_ref(&es[1]);
    let pat_ref = location_ref(&es[2]);
    assert!(pat_ref.starts_with("Patient/"));
    let e = server.read(&enc_ref).await;
    assert_eq!(e["subject"]["reference"], pat_ref.as_str());
    let o = server.read(&obs_ref).await;
    assert_eq!(o["subject"]["reference"], pat_ref.as_str());
    assert_eq!(o["encounter"]["reference"], enc_ref.as_str());
}

/// http.html#trules: "Servers SHALL replace all matching links in the bundle" - including
/// references nested in extensions (also nested/modifier extensions) and in contained
/// resources; local `#id` references stay as they are.
async fn urn_uuid_references_are_rewritten_inside_extensions_and_contained(server: Server) {
    let p = urn();
    let mut o = observation(&p);
    o["extension"] = json!([
        {"url": "http://example.org/fhir/StructureDefinition/ref-ext",
         "valueReference": {"reference": p}},
        {"url": "http://example.org/fhir/StructureDefinition/complex-ext",
         "extension": [{"url": "inner", "valueReference": {"reference": p}}]}
    ]);
    o["contained"] = json!([
        {"resourceType": "Specimen", "id": "spec1", "subject": {"reference": p}}
    ]);
    o["specimen"] = json!({"reference": "#spec1"});
    o["component"] = json!([{
        "code": {"text": "c"},
        "valueString": "x",
        "extension": [{"url": "http://example.org/fhir/StructureDefinition/c-ext",
                       "valueReference": {"reference": p}}]
    }]);
    let b = bundle(
        "transaction",
        vec![
            post_entry(&urn(), o),
            post_entry(&p, patient(&unique_system(), "ext")),
        ],
    );
    let es = post_bundle(&server, &b, "transaction-response").await;
    let pat_ref = location_ref(&es[1]);
    let read = server.read(&location_ref(&es[0])).await;
    assert_eq!(
        read["extension"][0]["valueReference"]["reference"],
        pat_ref.as_str()
    );
    assert_eq!(
        read["extension"][1]["extension"][0]["valueReference"]["reference"],
        pat_ref.as_str()
    );
    assert_eq!(
        read["contained"][0]["subject"]["reference"],
        pat_ref.as_str()
    );
    assert_eq!(
        read["component"][0]["extension"][0]["valueReference"]["reference"],
        pat_ref.as_str()
    );
    assert_eq!(
        read["specimen"]["reference"], "#spec1",
        "local reference kept"
    );
    assert!(!read.to_string().contains(&p), "no urn:uuid left: {read}");
}

/// http.html#trules: "Servers SHALL replace all matching links in the bundle, whether they
/// are found in the resource ids, resource references, elements of type uri, url, oid,
/// uuid, and <a href="" & <img src="" in the narrative" - here an element of type uri.
async fn urn_uuid_links_are_rewritten_in_uri_elements(server: Server) {
    let p = urn();
    let mut o = observation(&p);
    o["extension"] = json!([{"url": "http://example.org/fhir/StructureDefinition/uri-ext",
                             "valueUri": p}]);
    let b = bundle(
        "transaction",
        vec![
            post_entry(&urn(), o),
            post_entry(&p, patient(&unique_system(), "uri")),
        ],
    );
    let es = post_bundle(&server, &b, "transaction-response").await;
    let pat_ref = location_ref(&es[1]);
    let read = server.read(&location_ref(&es[0])).await;
    let uri = read["extension"][0]["valueUri"]
        .as_str()
        .unwrap_or_default();
    assert!(
        uri.ends_with(&pat_ref),
        "valueUri rewritten to {pat_ref}: {uri}"
    );
}

/// http.html#trules (as above): `<a href="urn:uuid:...">` in the narrative is rewritten.
async fn urn_uuid_links_are_rewritten_in_narrative(server: Server) {
    let p = urn();
    let mut o = observation(&p);
    o["text"] = json!({"status": "generated",
        "div": format!("<div xmlns=\"http://www.w3.org/1999/xhtml\"><a href=\"{p}\">the patient</a></div>")});
    let b = bundle(
        "transaction",
        vec![
            post_entry(&urn(), o),
            post_entry(&p, patient(&unique_system(), "nar")),
        ],
    );
    let es = post_bundle(&server, &b, "transaction-response").await;
    let pat_ref = location_ref(&es[1]);
    let read = server.read(&location_ref(&es[0])).await;
    let div = read["text"]["div"].as_str().unwrap_or_default();
    assert!(
        div.contains(&pat_ref),
        "narrative link rewritten to {pat_ref}: {div}"
    );
    assert!(
        !div.contains(&p),
        "no urn:uuid left in the narrative: {div}"
    );
}

/// http.html#trules (conditional references): a reference `Patient?identifier=sys|val`
/// is replaced by the single matching resource.
async fn conditional_reference_in_transaction_is_resolved(server: Server) {
    let sys = unique_system();
    let existing = server.create(&patient(&sys, "cref")).await;
    let b = bundle(
        "transaction",
        vec![post_entry(
            &urn(),
            observation(&format!("Patient?identifier={sys}|cref")),
        )],
    );
    let es = post_bundle(&server, &b, "transaction-response").await;
    let o = server.read(&location_ref(&es[0])).await;
    assert_eq!(
        o["subject"]["reference"],
        format!("Patient/{}", existing["id"].as_str().unwrap()).as_str()
    );
}

/// http.html#trules: for a conditional reference, "If there are no matches, or multiple
/// matches, the transaction fails, and an error is returned to the user".
async fn unresolvable_conditional_reference_fails_the_transaction(server: Server) {
    let sys = unique_system();
    let b = bundle(
        "transaction",
        vec![
            post_entry(&urn(), patient(&sys, "other")),
            post_entry(
                &urn(),
                observation(&format!("Patient?identifier={sys}|nobody")),
            ),
        ],
    );
    let resp = server.post("", &b).await;
    resp.assert_outcome(&[400, 404, 409, 412, 422]);
    assert!(
        server
            .search(&format!("Patient?identifier={sys}|"))
            .await
            .is_empty()
    );
}

/// http.html#ccreate inside a transaction (`request.ifNoneExist`): one match -> the
/// existing resource is used (200) and references to the entry point to it; no match ->
/// created (201).
async fn transaction_if_none_exist_reuses_existing_resource(server: Server) {
    let sys = unique_system();
    let existing = server.create(&patient(&sys, "ine")).await;
    let existing_ref = format!("Patient/{}", existing["id"].as_str().unwrap());
    let p = urn();
    let mut pe = post_entry(&p, patient(&sys, "ine"));
    pe["request"]["ifNoneExist"] = json!(format!("identifier={sys}|ine"));
    let mut fresh = post_entry(&urn(), patient(&sys, "ine-new"));
    fresh["request"]["ifNoneExist"] = json!(format!("identifier={sys}|ine-new"));
    let b = bundle(
        "transaction",
        vec![pe, post_entry(&urn(), observation(&p)), fresh],
    );
    let es = post_bundle(&server, &b, "transaction-response").await;
    assert!(
        status_of(&es[0]).starts_with("200"),
        "existing match is 200: {}",
        es[0]
    );
    assert!(
        status_of(&es[2]).starts_with("201"),
        "no match creates: {}",
        es[2]
    );
    assert_eq!(
        server
            .search(&format!("Patient?identifier={sys}|ine-new"))
            .await
            .len(),
        1
    );
    if es[0]["response"]["location"].is_string() {
        assert_eq!(location_ref(&es[0]), existing_ref);
    }
    let o = server.read(&location_ref(&es[1])).await;
    assert_eq!(o["subject"]["reference"], existing_ref.as_str());
    assert_eq!(
        server
            .search(&format!("Patient?identifier={sys}|ine"))
            .await
            .len(),
        1
    );
}

/// http.html#transaction-response: "The response ... SHALL have an entry for each entry in
/// the request, in the same order", whatever the processing order.
async fn transaction_response_entries_keep_request_order(server: Server) {
    let sys = unique_system();
    let doomed = server.create(&patient(&sys, "doomed")).await;
    let doomed_id = doomed["id"].as_str().unwrap().to_string();
    let mut put = patient(&sys, "put");
    put["id"] = json!("order-put");
    let b = bundle(
        "transaction",
        vec![
            json!({"request": {"method": "GET", "url": format!("Patient/{doomed_id}/_history/1")}}),
            json!({"resource": put, "request": {"method": "PUT", "url": "Patient/order-put"}}),
            post_entry(&urn(), patient(&sys, "post")),
            json!({"request": {"method": "DELETE", "url": format!("Patient/{doomed_id}")}}),
        ],
    );
    let es = post_bundle(&server, &b, "transaction-response").await;
    assert!(status_of(&es[0]).starts_with("200"), "GET: {}", es[0]);
    assert_eq!(
        es[0]["resource"]["id"],
        doomed_id.as_str(),
        "GET result first"
    );
    assert!(
        status_of(&es[1]).starts_with("201"),
        "PUT create: {}",
        es[1]
    );
    assert_eq!(location_ref(&es[1]), "Patient/order-put");
    assert!(status_of(&es[2]).starts_with("201"), "POST: {}", es[2]);
    assert!(status_of(&es[3]).starts_with("200") || status_of(&es[3]).starts_with("204"));
    server
        .get(&format!("Patient/{doomed_id}"))
        .await
        .assert_status(410);
}

/// http.html#trules: processing order is DELETE, POST, PUT/PATCH, then GET/HEAD: a GET
/// placed first in the bundle sees the PUT and the POST of the same transaction.
async fn transaction_processes_get_after_writes(server: Server) {
    let sys = unique_system();
    let target = server.create(&patient(&sys, "before")).await;
    let id = target["id"].as_str().unwrap().to_string();
    let mut updated = target.clone();
    updated["name"][0]["given"] = json!(["after"]);
    let b = bundle(
        "transaction",
        vec![
            json!({"request": {"method": "GET", "url": format!("Patient/{id}")}}),
            json!({"request": {"method": "GET", "url": format!("Patient?identifier={sys}|new")}}),
            json!({"resource": updated, "request": {"method": "PUT", "url": format!("Patient/{id}")}}),
            post_entry(&urn(), patient(&sys, "new")),
        ],
    );
    let es = post_bundle(&server, &b, "transaction-response").await;
    assert_eq!(
        es[0]["resource"]["name"][0]["given"][0], "after",
        "GET after PUT: {}",
        es[0]
    );
    assert_eq!(es[0]["resource"]["meta"]["versionId"], "2");
    let found = &es[1]["resource"];
    assert_eq!(found["resourceType"], "Bundle", "search result: {found}");
    assert_eq!(found["type"], "searchset");
    assert_eq!(entries(found).len(), 1, "GET search sees the POST: {found}");
}

/// http.html#trules: DELETEs are processed before POSTs: a conditional delete placed
/// after a POST of a resource that also matches its criteria removes only the resource
/// that existed before (processed after the POST, it would see two matches).
async fn transaction_processes_delete_before_post(server: Server) {
    let sys = unique_system();
    let old = server.create(&patient(&sys, "dp")).await;
    let b = bundle(
        "transaction",
        vec![
            post_entry(&urn(), patient(&sys, "dp")),
            json!({"request": {"method": "DELETE", "url": format!("Patient?identifier={sys}|dp")}}),
        ],
    );
    let es = post_bundle(&server, &b, "transaction-response").await;
    assert!(
        status_of(&es[0]).starts_with("201"),
        "POST creates: {}",
        es[0]
    );
    let new_ref = location_ref(&es[0]);
    server
        .get(&format!("Patient/{}", old["id"].as_str().unwrap()))
        .await
        .assert_status(410);
    server.read(&new_ref).await;
    let now = server.search(&format!("Patient?identifier={sys}|dp")).await;
    assert_eq!(now.len(), 1, "only the new Patient is left: {now:?}");
    assert_eq!(
        format!("Patient/{}", now[0]["id"].as_str().unwrap()),
        new_ref
    );
}

/// http.html#upsert inside a transaction: PUT with a new client id is a create: 201.
async fn transaction_put_with_client_id_creates_201(server: Server) {
    let mut p = patient(&unique_system(), "tput");
    p["id"] = json!("tx-put-1");
    let b = bundle(
        "transaction",
        vec![
            json!({"fullUrl": server.url("Patient/tx-put-1"), "resource": p,
                    "request": {"method": "PUT", "url": "Patient/tx-put-1"}}),
        ],
    );
    let es = post_bundle(&server, &b, "transaction-response").await;
    assert!(status_of(&es[0]).starts_with("201"), "{}", es[0]);
    assert_eq!(es[0]["response"]["etag"], "W/\"1\"");
    let read = server.read("Patient/tx-put-1").await;
    assert_eq!(read["meta"]["versionId"], "1");
}

/// http.html#cond-update and #cdelete as transaction entries (`PUT Patient?identifier=`,
/// `DELETE Patient?identifier=`).
async fn transaction_conditional_update_and_delete_entries(server: Server) {
    let sys = unique_system();
    let upd = server.create(&patient(&sys, "cu")).await;
    let del = server.create(&patient(&sys, "cd")).await;
    let mut body = patient(&sys, "cu");
    body["gender"] = json!("female");
    let b = bundle(
        "transaction",
        vec![
            json!({"resource": body, "request": {"method": "PUT", "url": format!("Patient?identifier={sys}|cu")}}),
            json!({"request": {"method": "DELETE", "url": format!("Patient?identifier={sys}|cd")}}),
            json!({"resource": patient(&sys, "cn"), "request": {"method": "PUT", "url": format!("Patient?identifier={sys}|cn")}}),
        ],
    );
    let es = post_bundle(&server, &b, "transaction-response").await;
    assert!(status_of(&es[0]).starts_with("200"), "{}", es[0]);
    assert!(status_of(&es[2]).starts_with("201"), "{}", es[2]);
    let read = server
        .read(&format!("Patient/{}", upd["id"].as_str().unwrap()))
        .await;
    assert_eq!(read["gender"], "female");
    assert_eq!(read["meta"]["versionId"], "2");
    server
        .get(&format!("Patient/{}", del["id"].as_str().unwrap()))
        .await
        .assert_status(410);
    assert_eq!(
        server
            .search(&format!("Patient?identifier={sys}|cn"))
            .await
            .len(),
        1
    );
}

/// The OperationOutcome of a failed transaction names the failing entry (index 1).
fn assert_names_entry_1(oo: &Value) {
    let text = oo.to_string().to_lowercase();
    assert!(
        ["entry[1]", "entry 1", "entry #1", "entry: 1", "entry=1"]
            .iter()
            .any(|n| text.contains(n)),
        "OperationOutcome names the failing entry (Bundle.entry[1]): {oo}"
    );
}

/// http.html#transaction: "either all actions succeed or all fail ... the server SHALL
/// return a single OperationOutcome" - an invalid entry rejects the whole transaction and
/// nothing is stored.
async fn transaction_with_failing_entry_changes_nothing(server: Server) {
    let sys = unique_system();
    let existing = server.create(&patient(&sys, "existing")).await;
    let eid = existing["id"].as_str().unwrap().to_string();
    let mut bad = patient(&sys, "bad");
    bad["birthDate"] = json!("1990-13-45");
    let mut upd = existing.clone();
    upd["gender"] = json!("female");
    let mut put_new = patient(&sys, "putnew");
    put_new["id"] = json!("tx-fail-put");
    let b = bundle(
        "transaction",
        vec![
            post_entry(&urn(), patient(&sys, "good")),
            post_entry(&urn(), bad),
            json!({"resource": upd, "request": {"method": "PUT", "url": format!("Patient/{eid}")}}),
            json!({"resource": put_new, "request": {"method": "PUT", "url": "Patient/tx-fail-put"}}),
        ],
    );
    let resp = server.post("", &b).await;
    let oo = resp.assert_outcome(&[400, 422]);
    assert_names_entry_1(&oo);
    let left = server.search(&format!("Patient?identifier={sys}|")).await;
    assert_eq!(left.len(), 1, "only the pre-existing patient: {left:?}");
    let read = server.read(&format!("Patient/{eid}")).await;
    assert_eq!(read["meta"]["versionId"], "1", "update rolled back");
    assert_eq!(read["gender"], "unknown");
    server.get("Patient/tx-fail-put").await.assert_status(404);
}

/// http.html#concurrency in a transaction (`request.ifMatch`): a stale version fails the
/// whole transaction (412/409) and nothing changes.
async fn transaction_with_stale_if_match_changes_nothing(server: Server) {
    let sys = unique_system();
    let existing = server.create(&patient(&sys, "im")).await;
    let id = existing["id"].as_str().unwrap().to_string();
    let mut v2 = existing.clone();
    v2["active"] = json!(true);
    server
        .put(&format!("Patient/{id}"), &v2)
        .await
        .assert_status(200);
    let mut stale = existing.clone();
    stale["active"] = json!(false);
    let b = bundle(
        "transaction",
        vec![
            post_entry(&urn(), patient(&sys, "new")),
            json!({"resource": stale, "request": {"method": "PUT", "url": format!("Patient/{id}"),
                                                   "ifMatch": "W/\"1\""}}),
        ],
    );
    server.post("", &b).await.assert_outcome(&[409, 412]);
    let read = server.read(&format!("Patient/{id}")).await;
    assert_eq!(read["meta"]["versionId"], "2");
    assert!(
        server
            .search(&format!("Patient?identifier={sys}|new"))
            .await
            .is_empty()
    );
}

/// http.html#ccreate in a transaction: several matches for `ifNoneExist` -> 412 and the
/// transaction fails as a whole.
async fn transaction_with_several_if_none_exist_matches_is_412(server: Server) {
    let sys = unique_system();
    server.create(&patient(&sys, "twice")).await;
    server.create(&patient(&sys, "twice")).await;
    let mut pe = post_entry(&urn(), patient(&sys, "twice"));
    pe["request"]["ifNoneExist"] = json!(format!("identifier={sys}|twice"));
    let b = bundle(
        "transaction",
        vec![post_entry(&urn(), patient(&sys, "other")), pe],
    );
    server.post("", &b).await.assert_outcome(&[412]);
    assert!(
        server
            .search(&format!("Patient?identifier={sys}|other"))
            .await
            .is_empty()
    );
}

/// http.html#trules: "If any resource identities (including resolved identities from
/// conditional update/delete) overlap in steps 1-3, then the transaction SHALL fail".
async fn transaction_touching_same_resource_twice_fails(server: Server) {
    let sys = unique_system();
    let existing = server.create(&patient(&sys, "twice")).await;
    let id = existing["id"].as_str().unwrap().to_string();
    let mut upd = existing.clone();
    upd["gender"] = json!("male");
    let b = bundle(
        "transaction",
        vec![
            json!({"resource": upd, "request": {"method": "PUT", "url": format!("Patient/{id}")}}),
            json!({"request": {"method": "DELETE", "url": format!("Patient/{id}")}}),
        ],
    );
    server.post("", &b).await.assert_outcome(&[400, 409, 422]);
    let read = server.read(&format!("Patient/{id}")).await;
    assert_eq!(read["meta"]["versionId"], "1");
}

/// http.html#brules (batch): "each entry is treated as if an individual interaction";
/// failures are reported per entry in a `batch-response` with response.outcome.
async fn batch_processes_entries_independently_with_outcomes_for_failures(server: Server) {
    let sys = unique_system();
    let mut bad = patient(&sys, "bad");
    bad["birthDate"] = json!("1990-13-45");
    let mut put = patient(&sys, "put");
    put["id"] = json!("batch-put-1");
    let b = bundle(
        "batch",
        vec![
            json!({"resource": patient(&sys, "ok"), "request": {"method": "POST", "url": "Patient"}}),
            json!({"resource": bad, "request": {"method": "POST", "url": "Patient"}}),
            json!({"request": {"method": "GET", "url": "Patient/batch-missing"}}),
            json!({"resource": put, "request": {"method": "PUT", "url": "Patient/batch-put-1"}}),
        ],
    );
    let es = post_bundle(&server, &b, "batch-response").await;
    assert!(status_of(&es[0]).starts_with("201"), "{}", es[0]);
    let s1 = status_of(&es[1]);
    assert!(
        s1.starts_with("400") || s1.starts_with("422"),
        "invalid entry: {}",
        es[1]
    );
    assert_error_outcome(&es[1]["response"]["outcome"], "batch entry 1 outcome");
    assert!(status_of(&es[2]).starts_with("404"), "{}", es[2]);
    assert!(status_of(&es[3]).starts_with("201"), "{}", es[3]);
    assert_eq!(location_ref(&es[3]), "Patient/batch-put-1");
    server.read(&location_ref(&es[0])).await;
    server.read("Patient/batch-put-1").await;
    let found = server.search(&format!("Patient?identifier={sys}|")).await;
    assert_eq!(found.len(), 2, "ok + put stored, bad not: {found:?}");
}

/// http.html#transaction: the base endpoint accepts only `batch` and `transaction`
/// Bundles; anything else is an error (400/422) with an OperationOutcome.
async fn post_to_base_with_non_batch_bundle_is_rejected(server: Server) {
    let sys = unique_system();
    let b = bundle(
        "collection",
        vec![json!({"fullUrl": urn(), "resource": patient(&sys, "coll")})],
    );
    server.post("", &b).await.assert_outcome(&[400, 422]);
    server
        .post("", &patient(&sys, "notabundle"))
        .await
        .assert_outcome(&[400, 422]);
    assert!(
        server
            .search(&format!("Patient?identifier={sys}|"))
            .await
            .is_empty()
    );
}
