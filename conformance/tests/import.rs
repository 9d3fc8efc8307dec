//! `mediflow import` CLI: direct into the database and through the REST API. Read back
//! over HTTP. Bundle semantics per FHIR R4 4.0.1 http.html#transaction / bundle.html;
//! NDJSON per the Bulk Data format (one resource per line).

use std::path::{Path, PathBuf};
use std::process::Output;

use conformance::*;
use serde_json::{Value, json};

backend_tests!(
    import_into_database_loads_bundles_and_ndjson,
    import_into_database_reports_and_skips_broken_bundle,
    import_through_server_loads_bundles_and_ndjson,
    import_through_server_reports_and_skips_broken_bundle,
    import_accepts_several_file_paths,
);

/// Fixture content: what a folder holds and how to check it afterwards.
struct Fixture {
    dir: PathBuf,
    sys: String,
}

fn urn() -> String {
    format!("urn:uuid:{}", uuid::Uuid::new_v4())
}

fn write_json(path: &Path, v: &Value) {
    std::fs::write(path, serde_json::to_vec_pretty(v).unwrap()).expect("write fixture");
}

/// Writes into `dir` (made for the test):
/// - `good-transaction.json`: Patient + Observation referencing it by urn:uuid (2)
/// - `good-batch.json`: 2 Patients
/// - `good-collection.json`: 1 Patient
/// - `patients.ndjson`: 3 Patients
///
/// and, with `broken`, `broken.json`: a transaction whose entry 1 is invalid.
fn make_fixture(root: &Path, broken: bool) -> Fixture {
    let dir = root.join("import-input");
    std::fs::create_dir_all(&dir).unwrap();
    let sys = unique_system();
    let p = urn();
    write_json(
        &dir.join("good-transaction.json"),
        &json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"fullUrl": p, "resource": patient(&sys, "tx-patient"),
             "request": {"method": "POST", "url": "Patient"}},
            {"fullUrl": urn(), "resource": {"resourceType": "Observation", "status": "final",
                "code": {"text": "imported"},
                "identifier": [{"system": sys, "value": "tx-obs"}],
                "subject": {"reference": p}},
             "request": {"method": "POST", "url": "Observation"}}
        ]}),
    );
    write_json(
        &dir.join("good-batch.json"),
        &json!({"resourceType": "Bundle", "type": "batch", "entry": [
            {"resource": patient(&sys, "batch-1"), "request": {"method": "POST", "url": "Patient"}},
            {"resource": patient(&sys, "batch-2"), "request": {"method": "POST", "url": "Patient"}}
        ]}),
    );
    let mut coll = patient(&sys, "collection-1");
    coll["id"] = json!("coll-1");
    write_json(
        &dir.join("good-collection.json"),
        &json!({"resourceType": "Bundle", "type": "collection", "entry": [
            {"fullUrl": "http://example.org/fhir/Patient/coll-1", "resource": coll}
        ]}),
    );
    let lines: Vec<String> = (1..=3)
        .map(|i| {
            let mut p = patient(&sys, &format!("ndjson-{i}"));
            p["id"] = json!(format!("nd-{i}"));
            serde_json::to_string(&p).unwrap()
        })
        .collect();
    std::fs::write(dir.join("patients.ndjson"), lines.join("\n") + "\n").unwrap();
    if broken {
        let mut bad = patient(&sys, "broken-bad");
        bad["birthDate"] = json!("1990-13-45");
        write_json(
            &dir.join("broken.json"),
            &json!({"resourceType": "Bundle", "type": "transaction", "entry": [
                {"fullUrl": urn(), "resource": patient(&sys, "broken-good"),
                 "request": {"method": "POST", "url": "Patient"}},
                {"fullUrl": urn(), "resource": bad,
                 "request": {"method": "POST", "url": "Patient"}}
            ]}),
        );
    }
    Fixture { dir, sys }
}

fn describe(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Identifier values of the Patients (and Observations) stored for the fixture's system.
async fn stored_values(server: &Server, sys: &str) -> Vec<String> {
    let mut values: Vec<String> = Vec::new();
    for ty in ["Patient", "Observation"] {
        for r in server.search(&format!("{ty}?identifier={sys}|")).await {
            values.push(
                r["identifier"][0]["value"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            );
        }
    }
    values.sort();
    values
}

fn good_values() -> Vec<String> {
    let mut v: Vec<String> = [
        "tx-patient",
        "tx-obs",
        "batch-1",
        "batch-2",
        "collection-1",
        "ndjson-1",
        "ndjson-2",
        "ndjson-3",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.sort();
    v
}

/// The transaction's urn:uuid reference was rewritten to the imported Patient.
async fn assert_transaction_reference_resolved(server: &Server, sys: &str) {
    let obs = server
        .search(&format!("Observation?identifier={sys}|tx-obs"))
        .await;
    assert_eq!(obs.len(), 1, "imported Observation: {obs:?}");
    let pat = server
        .search(&format!("Patient?identifier={sys}|tx-patient"))
        .await;
    assert_eq!(pat.len(), 1);
    assert_eq!(
        obs[0]["subject"]["reference"],
        format!("Patient/{}", pat[0]["id"].as_str().unwrap()).as_str()
    );
}

fn assert_summary_counts(out: &Output, count: usize) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout
            .split(|c: char| !c.is_ascii_digit())
            .any(|n| n == count.to_string()),
        "summary on stdout mentions the resource count {count}:\n{}",
        describe(out)
    );
}

fn assert_failure_reported(out: &Output) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("broken.json"),
        "failure names the file:\n{}",
        describe(out)
    );
    let lower = stdout.to_lowercase();
    assert!(
        lower.contains("entry") && stdout.contains('1'),
        "failure names the entry index 1:\n{}",
        describe(out)
    );
    assert!(
        stdout.contains("birthDate") || stdout.contains("1990-13-45"),
        "failure gives the reason (the invalid birthDate):\n{}",
        describe(out)
    );
}

/// Import folder directly into a database (no server running), exit 0 when all is good;
/// then serve that database and read back.
async fn import_into_database_loads_bundles_and_ndjson(backend: Backend) {
    let db = TestDb::new(backend).await;
    let fx = make_fixture(db.dir(), false);
    let out = run_mediflow(vec![
        "import".into(),
        fx.dir.display().to_string(),
        "--database-url".into(),
        db.url().to_string(),
    ])
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_summary_counts(&out, 8);
    if backend == Backend::Postgres {
        // The import ends with VACUUM (ANALYZE): the tables it loaded have planner
        // statistics (`pg_class.reltuples` is -1 for a table never analysed or vacuumed,
        // PostgreSQL 14+, docs/15/catalog-pg-class.html) and pages marked all-visible in
        // the visibility map, which index-only scans need (`relallvisible`, set by VACUUM).
        use sqlx::Connection;
        let mut conn = sqlx::postgres::PgConnection::connect(db.url())
            .await
            .expect("connect");
        let (reltuples, relallvisible): (f32, i32) = sqlx::query_as(
            "SELECT reltuples, relallvisible FROM pg_class \
             WHERE relname = 'search_token' AND relkind = 'r'",
        )
        .fetch_one(&mut conn)
        .await
        .expect("pg_class");
        assert!(
            reltuples > 0.0,
            "search_token analysed: reltuples {reltuples}"
        );
        assert!(
            relallvisible > 0,
            "search_token vacuumed: relallvisible {relallvisible}"
        );
        let _ = conn.close().await;
    }
    let server = Server::start_on(db, &[]).await;
    assert_eq!(stored_values(&server, &fx.sys).await, good_values());
    assert_transaction_reference_resolved(&server, &fx.sys).await;
}

/// A bundle with one invalid entry is reported (file, entry index, reason) and skipped
/// whole (transaction semantics, http.html#transaction); the rest is imported; exit 1.
async fn import_into_database_reports_and_skips_broken_bundle(backend: Backend) {
    let db = TestDb::new(backend).await;
    let fx = make_fixture(db.dir(), true);
    let out = run_mediflow(vec![
        "import".into(),
        fx.dir.display().to_string(),
        "--database-url".into(),
        db.url().to_string(),
    ])
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert_failure_reported(&out);
    let server = Server::start_on(db, &[]).await;
    let values = stored_values(&server, &fx.sys).await;
    assert!(
        !values.iter().any(|v| v.starts_with("broken")),
        "never half-written: {values:?}"
    );
    assert_eq!(values, good_values());
}

/// Import through the REST API of a running server (`--server <base>`), exit 0.
async fn import_through_server_loads_bundles_and_ndjson(backend: Backend) {
    let server = Server::start(backend).await;
    let fx = make_fixture(server.db().dir(), false);
    let out = run_mediflow(vec![
        "import".into(),
        fx.dir.display().to_string(),
        "--server".into(),
        server.base(),
    ])
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_summary_counts(&out, 8);
    assert_eq!(stored_values(&server, &fx.sys).await, good_values());
    assert_transaction_reference_resolved(&server, &fx.sys).await;
}

/// Through the REST API a broken bundle is also reported and skipped whole; exit 1.
async fn import_through_server_reports_and_skips_broken_bundle(backend: Backend) {
    let server = Server::start(backend).await;
    let fx = make_fixture(server.db().dir(), true);
    let out = run_mediflow(vec![
        "import".into(),
        fx.dir.display().to_string(),
        "--server".into(),
        server.base(),
    ])
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert_failure_reported(&out);
    let values = stored_values(&server, &fx.sys).await;
    assert_eq!(values, good_values(), "broken bundle skipped whole");
}

/// `mediflow import PATH...` takes several files (not only folders).
async fn import_accepts_several_file_paths(backend: Backend) {
    let db = TestDb::new(backend).await;
    let fx = make_fixture(db.dir(), true);
    let out = run_mediflow(vec![
        "import".into(),
        fx.dir.join("good-transaction.json").display().to_string(),
        fx.dir.join("patients.ndjson").display().to_string(),
        "--database-url".into(),
        db.url().to_string(),
    ])
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_summary_counts(&out, 5);
    let server = Server::start_on(db, &[]).await;
    let mut want: Vec<String> = ["tx-patient", "tx-obs", "ndjson-1", "ndjson-2", "ndjson-3"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    want.sort();
    assert_eq!(stored_values(&server, &fx.sys).await, want);
}
