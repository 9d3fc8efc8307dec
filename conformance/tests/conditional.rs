//! Conditional create / update / delete and version-aware updates (FHIR R4 4.0.1,
//! http.html#ccreate, #cond-update, #cdelete, #concurrency).

use conformance::*;
use serde_json::json;

server_tests!(
    conditional_create_without_match_is_201,
    conditional_create_with_one_match_is_200_and_creates_nothing,
    conditional_create_with_several_matches_is_412,
    conditional_create_accepts_identifier_value_only,
    conditional_update_without_match_creates_201,
    conditional_update_with_one_match_updates_200,
    conditional_update_with_several_matches_is_412,
    conditional_update_with_different_body_id_is_400,
    conditional_delete_with_one_match_deletes_it,
    conditional_delete_without_match_is_200_or_204,
    conditional_delete_with_several_matches_follows_capability_statement,
    update_with_matching_if_match_is_200,
    update_with_stale_if_match_is_412,
    concurrent_updates_with_same_if_match_only_one_wins,
    concurrent_updates_get_distinct_versions,
);

async fn count_matches(server: &Server, sys: &str, value: &str) -> usize {
    server
        .search(&format!("Patient?identifier={sys}|{value}"))
        .await
        .len()
}

fn id_of(resource: &serde_json::Value) -> String {
    resource["id"].as_str().expect("resource id").to_string()
}

/// http.html#ccreate: "No matches: The server processes the create as normal".
async fn conditional_create_without_match_is_201(server: Server) {
    let sys = unique_system();
    let resp = server
        .request(Method::POST, "Patient")
        .header("If-None-Exist", &format!("identifier={sys}|cc1"))
        .json(&patient(&sys, "cc1"))
        .send()
        .await;
    resp.assert_status(201);
    assert!(resp.location().is_some());
    assert_eq!(count_matches(&server, &sys, "cc1").await, 1);
}

/// http.html#ccreate: "One Match: The server ignores the post and returns 200 OK".
async fn conditional_create_with_one_match_is_200_and_creates_nothing(server: Server) {
    let sys = unique_system();
    let existing = server.create(&patient(&sys, "cc2")).await;
    let mut other = patient(&sys, "cc2");
    other["gender"] = json!("male");
    let resp = server
        .request(Method::POST, "Patient")
        .header("If-None-Exist", &format!("identifier={sys}|cc2"))
        .json(&other)
        .send()
        .await;
    resp.assert_status(200);
    if let Some(loc) = resp.location() {
        assert_eq!(parse_location(&loc).1, id_of(&existing));
    }
    if !resp.body.is_empty() {
        let body = resp.json();
        if body["resourceType"] == "Patient" {
            assert_eq!(body["id"], existing["id"], "returns the existing resource");
        }
    }
    assert_eq!(count_matches(&server, &sys, "cc2").await, 1);
    let read = server.read(&format!("Patient/{}", id_of(&existing))).await;
    assert_eq!(
        read["meta"]["versionId"], "1",
        "existing resource untouched"
    );
    assert_eq!(read["gender"], "unknown");
}

/// http.html#ccreate: "Multiple matches: The server returns a 412 Precondition Failed
/// error indicating the client's criteria were not selective enough".
async fn conditional_create_with_several_matches_is_412(server: Server) {
    let sys = unique_system();
    server.create(&patient(&sys, "dup")).await;
    server.create(&patient(&sys, "dup")).await;
    let resp = server
        .request(Method::POST, "Patient")
        .header("If-None-Exist", &format!("identifier={sys}|dup"))
        .json(&patient(&sys, "dup"))
        .send()
        .await;
    resp.assert_outcome(&[412]);
    assert_eq!(count_matches(&server, &sys, "dup").await, 2);
}

/// http.html#ccreate with search.html#token: `identifier=value` (any system) matches too.
async fn conditional_create_accepts_identifier_value_only(server: Server) {
    let sys = unique_system();
    let value = format!("only-value-{}", uuid::Uuid::new_v4().simple());
    let existing = server.create(&patient(&sys, &value)).await;
    let resp = server
        .request(Method::POST, "Patient")
        .header("If-None-Exist", &format!("identifier={value}"))
        .json(&patient(&sys, &value))
        .send()
        .await;
    resp.assert_status(200);
    if let Some(loc) = resp.location() {
        assert_eq!(parse_location(&loc).1, id_of(&existing));
    }
    assert_eq!(count_matches(&server, &sys, &value).await, 1);
}

/// http.html#cond-update: "No matches, no id provided: The server creates the resource".
async fn conditional_update_without_match_creates_201(server: Server) {
    let sys = unique_system();
    let resp = server
        .put(
            &format!("Patient?identifier={sys}|cu1"),
            &patient(&sys, "cu1"),
        )
        .await;
    resp.assert_status(201);
    let loc = resp.location().expect("Location on create");
    let (ty, id, vid) = parse_location(&loc);
    assert_eq!(ty, "Patient");
    assert_eq!(vid.as_deref(), Some("1"));
    let read = server.read(&format!("Patient/{id}")).await;
    assert_eq!(read["identifier"][0]["value"], "cu1");
    assert_eq!(count_matches(&server, &sys, "cu1").await, 1);
}

/// http.html#cond-update: "One Match, no resource id provided OR (resource id provided and
/// it matches the found resource): The server performs the update against the matching
/// resource" -> 200 and a new version of that resource.
async fn conditional_update_with_one_match_updates_200(server: Server) {
    let sys = unique_system();
    let existing = server.create(&patient(&sys, "cu2")).await;
    let id = id_of(&existing);

    let mut body = patient(&sys, "cu2");
    body["gender"] = json!("female");
    let resp = server
        .put(&format!("Patient?identifier={sys}|cu2"), &body)
        .await;
    resp.assert_status(200);
    assert_eq!(resp.etag().as_deref(), Some("W/\"2\""));
    let read = server.read(&format!("Patient/{id}")).await;
    assert_eq!(read["meta"]["versionId"], "2");
    assert_eq!(read["gender"], "female");

    // With the matching id in the body it is the same.
    let mut body = read.clone();
    body["gender"] = json!("male");
    server
        .put(&format!("Patient?identifier={sys}|cu2"), &body)
        .await
        .assert_status(200);
    let read = server.read(&format!("Patient/{id}")).await;
    assert_eq!(read["meta"]["versionId"], "3");
    assert_eq!(count_matches(&server, &sys, "cu2").await, 1);
}

/// http.html#cond-update: "Multiple matches: The server returns a 412 Precondition Failed
/// error indicating the client's criteria were not selective enough".
async fn conditional_update_with_several_matches_is_412(server: Server) {
    let sys = unique_system();
    let a = server.create(&patient(&sys, "cu3")).await;
    let b = server.create(&patient(&sys, "cu3")).await;
    let mut body = patient(&sys, "cu3");
    body["gender"] = json!("other");
    server
        .put(&format!("Patient?identifier={sys}|cu3"), &body)
        .await
        .assert_outcome(&[412]);
    for r in [a, b] {
        let read = server.read(&format!("Patient/{}", id_of(&r))).await;
        assert_eq!(read["meta"]["versionId"], "1", "nothing updated");
    }
}

/// http.html#cond-update: "One Match, resource id provided but does not match resource
/// found: The server returns a 400 Bad Request error indicating the client id
/// specification was a problem preferably with an OperationOutcome".
async fn conditional_update_with_different_body_id_is_400(server: Server) {
    let sys = unique_system();
    let existing = server.create(&patient(&sys, "cu4")).await;
    let mut body = patient(&sys, "cu4");
    body["id"] = json!("some-other-id");
    server
        .put(&format!("Patient?identifier={sys}|cu4"), &body)
        .await
        .assert_outcome(&[400]);
    let read = server.read(&format!("Patient/{}", id_of(&existing))).await;
    assert_eq!(read["meta"]["versionId"], "1");
}

/// http.html#cdelete: "One Match: The server performs an ordinary delete on the matching
/// resource".
async fn conditional_delete_with_one_match_deletes_it(server: Server) {
    let sys = unique_system();
    let keep = server.create(&patient(&sys, "keep")).await;
    let gone = server.create(&patient(&sys, "gone")).await;
    server
        .delete(&format!("Patient?identifier={sys}|gone"))
        .await
        .assert_status_in(&[200, 204]);
    server
        .get(&format!("Patient/{}", id_of(&gone)))
        .await
        .assert_status(410);
    server.read(&format!("Patient/{}", id_of(&keep))).await;
    assert_eq!(count_matches(&server, &sys, "gone").await, 0);
}

/// http.html#cdelete: "No matches or One Match: The server performs an ordinary delete on
/// the matching resource" - with no match that is the delete of a non-existent resource:
/// 200 OK or 204 No Content (http.html#delete).
async fn conditional_delete_without_match_is_200_or_204(server: Server) {
    let sys = unique_system();
    let keep = server.create(&patient(&sys, "keep")).await;
    server
        .delete(&format!("Patient?identifier={sys}|nobody"))
        .await
        .assert_status_in(&[200, 204]);
    server.read(&format!("Patient/{}", id_of(&keep))).await;
}

/// http.html#cdelete: "Multiple matches: A server may choose to delete all the matching
/// resources, or it may choose to return a 412 Precondition Failed error ... A server
/// indicates whether it can delete multiple resources in its Capability Statement
/// (.rest.resource.conditionalDelete)".
async fn conditional_delete_with_several_matches_follows_capability_statement(server: Server) {
    let sys = unique_system();
    let a = server.create(&patient(&sys, "many")).await;
    let b = server.create(&patient(&sys, "many")).await;
    let cs = server.read("metadata").await;
    let mode = cs["rest"][0]["resource"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["type"] == "Patient")
        .map(|r| {
            r["conditionalDelete"]
                .as_str()
                .unwrap_or("not-supported")
                .to_string()
        })
        .unwrap_or_default();
    let resp = server
        .delete(&format!("Patient?identifier={sys}|many"))
        .await;
    if mode == "multiple" {
        resp.assert_status_in(&[200, 204]);
        for r in [&a, &b] {
            server
                .get(&format!("Patient/{}", id_of(r)))
                .await
                .assert_status(410);
        }
    } else {
        resp.assert_outcome(&[412]);
        for r in [&a, &b] {
            server.read(&format!("Patient/{}", id_of(r))).await;
        }
    }
}

/// http.html#concurrency (Managing Resource Contention): an update with `If-Match` naming
/// the current version succeeds.
async fn update_with_matching_if_match_is_200(server: Server) {
    let created = server.create(&patient(&unique_system(), "im1")).await;
    let id = id_of(&created);
    let mut body = created.clone();
    body["active"] = json!(true);
    let resp = server
        .request(Method::PUT, &format!("Patient/{id}"))
        .header("If-Match", "W/\"1\"")
        .json(&body)
        .send()
        .await;
    resp.assert_status(200);
    assert_eq!(resp.etag().as_deref(), Some("W/\"2\""));
}

/// http.html#concurrency: "If the version id given in the If-Match header does not match,
/// the server returns a 412 Precondition Failed status code instead of updating the
/// resource".
async fn update_with_stale_if_match_is_412(server: Server) {
    let created = server.create(&patient(&unique_system(), "im2")).await;
    let id = id_of(&created);
    let mut body = created.clone();
    body["active"] = json!(true);
    server
        .put(&format!("Patient/{id}"), &body)
        .await
        .assert_status(200);
    body["active"] = json!(false);
    let resp = server
        .request(Method::PUT, &format!("Patient/{id}"))
        .header("If-Match", "W/\"1\"")
        .json(&body)
        .send()
        .await;
    resp.assert_outcome(&[409, 412]);
    assert_eq!(
        resp.status, 412,
        "If-Match mismatch is 412 per http.html#concurrency"
    );
    let read = server.read(&format!("Patient/{id}")).await;
    assert_eq!(read["meta"]["versionId"], "2");
    assert_eq!(read["active"], true, "stale update not applied");
}

/// http.html#concurrency: version-aware updates are atomic - of several concurrent
/// updates that all name version 1 in If-Match, exactly one succeeds; the others get
/// 412 (409 is allowed for a conflict detected at commit) and change nothing.
async fn concurrent_updates_with_same_if_match_only_one_wins(server: Server) {
    let created = server.create(&patient(&unique_system(), "race")).await;
    let id = id_of(&created);
    let n = 8;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let client = server.client().clone();
        let url = server.url(&format!("Patient/{id}"));
        let mut body = created.clone();
        body["name"][0]["given"] = json!([format!("writer-{i}")]);
        tasks.spawn(async move {
            client
                .put(&url)
                .header("Content-Type", FHIR_JSON)
                .header("If-Match", "W/\"1\"")
                .body(serde_json::to_vec(&body).unwrap())
                .send()
                .await
                .expect("PUT")
                .status()
                .as_u16()
        });
    }
    let mut statuses = Vec::new();
    while let Some(s) = tasks.join_next().await {
        statuses.push(s.expect("task"));
    }
    let ok = statuses.iter().filter(|s| **s == 200).count();
    assert_eq!(ok, 1, "exactly one winner: {statuses:?}");
    assert!(
        statuses.iter().all(|s| [200, 409, 412].contains(s)),
        "losers get 412/409: {statuses:?}"
    );
    let read = server.read(&format!("Patient/{id}")).await;
    assert_eq!(read["meta"]["versionId"], "2");
    let history = server.search(&format!("Patient/{id}/_history")).await;
    assert_eq!(history.len(), 2, "one create + one update in history");
}

/// http.html#versioning (resource.html#Meta versionId): concurrent updates without
/// If-Match all succeed and each gets its own version; history holds them all.
async fn concurrent_updates_get_distinct_versions(server: Server) {
    let created = server
        .create(&patient(&unique_system(), "many-writers"))
        .await;
    let id = id_of(&created);
    let n = 8;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let client = server.client().clone();
        let url = server.url(&format!("Patient/{id}"));
        let mut body = created.clone();
        body["name"][0]["given"] = json!([format!("writer-{i}")]);
        tasks.spawn(async move {
            let r = client
                .put(&url)
                .header("Content-Type", FHIR_JSON)
                .body(serde_json::to_vec(&body).unwrap())
                .send()
                .await
                .expect("PUT");
            let status = r.status().as_u16();
            let etag = r
                .headers()
                .get("etag")
                .map(|v| v.to_str().unwrap_or("").to_string());
            (status, etag)
        });
    }
    let mut etags = Vec::new();
    while let Some(res) = tasks.join_next().await {
        let (status, etag) = res.expect("task");
        assert_eq!(status, 200, "every plain update succeeds");
        etags.push(etag.expect("ETag"));
    }
    etags.sort();
    etags.dedup();
    assert_eq!(etags.len(), n, "distinct versions: {etags:?}");
    let read = server.read(&format!("Patient/{id}")).await;
    assert_eq!(read["meta"]["versionId"], (n + 1).to_string().as_str());
    let mut versions: Vec<String> = server
        .search(&format!("Patient/{id}/_history"))
        .await
        .iter()
        .map(|r| r["meta"]["versionId"].as_str().unwrap_or("").to_string())
        .collect();
    versions.sort_by_key(|v| v.parse::<u32>().unwrap_or(0));
    let want: Vec<String> = (1..=n + 1).map(|v| v.to_string()).collect();
    assert_eq!(versions, want);
}
