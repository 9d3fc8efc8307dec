//! Synthea round trip: the 61 Synthea patient transaction Bundles from
//! `shared/testdata/synthea-r4` are POSTed to the base (FHIR R4 4.0.1,
//! http.html#transaction) and every created resource is read back (http.html#read) and
//! compared with what was sent, apart from id, meta and the `urn:uuid:` references,
//! which must now point at the resource created from that fullUrl
//! (http.html#trules, "Replacing hyperlinks and full-urls").

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use conformance::*;
use serde_json::Value;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

backend_tests!(synthea_transactions_round_trip);

/// Bundles posted at the same time.
const BUNDLES_IN_FLIGHT: usize = 2;
/// Concurrent read-back GETs (shared by all bundles in flight).
const READS_IN_FLIGHT: usize = 6;

fn synthea_files() -> Vec<PathBuf> {
    let dir = shared_dir().join("testdata/synthea-r4");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            name.ends_with(".json")
                && !name.starts_with("hospitalInformation")
                && !name.starts_with("practitionerInformation")
        })
        .collect();
    files.sort();
    files
}

/// Replace every `reference` that is a `urn:uuid:` fullUrl of the bundle by the
/// `Type/id` the server created for it.
fn rewrite_references(v: &mut Value, map: &HashMap<String, String>, errors: &mut Vec<String>) {
    match v {
        Value::Object(o) => {
            for (k, child) in o.iter_mut() {
                if k == "reference"
                    && let Value::String(s) = child
                    && s.starts_with("urn:uuid:")
                {
                    match map.get(s.as_str()) {
                        Some(target) => *s = target.clone(),
                        None => {
                            errors.push(format!("reference {s} is not a fullUrl of the bundle"))
                        }
                    }
                    continue;
                }
                rewrite_references(child, map, errors);
            }
        }
        Value::Array(a) => a
            .iter_mut()
            .for_each(|c| rewrite_references(c, map, errors)),
        _ => {}
    }
}

struct Ctx {
    client: reqwest::Client,
    base: String,
    reads: Semaphore,
}

/// POST one bundle, check the transaction-response, read every resource back.
/// Returns (resources checked, error messages).
async fn round_trip(ctx: Arc<Ctx>, path: PathBuf) -> (usize, Vec<String>) {
    let name = path.file_name().unwrap().to_string_lossy().to_string();
    let raw = tokio::fs::read(&path).await.expect("read bundle");
    let sent: Value = serde_json::from_slice(&raw).expect("bundle is JSON");
    let req_entries = entries(&sent);
    let mut errors = Vec::new();

    let resp = ctx
        .client
        .post(&ctx.base)
        .header("Content-Type", FHIR_JSON)
        .body(raw)
        .send()
        .await;
    let resp = match resp {
        Ok(r) => r,
        Err(e) => return (0, vec![format!("{name}: POST failed: {e}")]),
    };
    let status = resp.status().as_u16();
    let body = resp.bytes().await.map(|b| b.to_vec()).unwrap_or_default();
    if status != 200 {
        let text = String::from_utf8_lossy(&body);
        let cut: String = text.chars().take(1500).collect();
        return (
            0,
            vec![format!("{name}: transaction status {status}: {cut}")],
        );
    }
    let reply: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return (0, vec![format!("{name}: response is not JSON: {e}")]),
    };
    if reply["type"] != "transaction-response" {
        errors.push(format!("{name}: response Bundle.type is {}", reply["type"]));
    }
    let resp_entries = entries(&reply);
    if resp_entries.len() != req_entries.len() {
        return (
            0,
            vec![format!(
                "{name}: {} response entries for {} request entries",
                resp_entries.len(),
                req_entries.len()
            )],
        );
    }

    // fullUrl -> Type/id, checked against the request entry at the same position.
    let mut map = HashMap::new();
    let mut targets = Vec::new();
    for (i, (req, res)) in req_entries.iter().zip(&resp_entries).enumerate() {
        let st = res["response"]["status"].as_str().unwrap_or("");
        if !st.starts_with("201") {
            errors.push(format!("{name}: entry {i} status {st:?}, expected 201"));
        }
        let Some(loc) = res["response"]["location"].as_str() else {
            errors.push(format!("{name}: entry {i} has no response.location"));
            continue;
        };
        let (ty, id, vid) = parse_location(loc);
        let want_ty = req["resource"]["resourceType"].as_str().unwrap_or("");
        if ty != want_ty {
            errors.push(format!(
                "{name}: entry {i} location {loc} is not a {want_ty}"
            ));
        }
        if vid.as_deref() != Some("1") {
            errors.push(format!("{name}: entry {i} location {loc} lacks _history/1"));
        }
        let full_url = req["fullUrl"].as_str().unwrap_or_default().to_string();
        if map.insert(full_url.clone(), format!("{ty}/{id}")).is_some() {
            errors.push(format!("{name}: fullUrl {full_url} twice"));
        }
        targets.push((i, ty, id));
    }

    let mut reads = JoinSet::new();
    for (i, ty, id) in targets {
        let mut expected = req_entries[i]["resource"].clone();
        rewrite_references(&mut expected, &map, &mut errors);
        let expected = without_id_meta(&expected);
        let ctx = ctx.clone();
        let name = name.clone();
        reads.spawn(async move {
            let _permit = ctx.reads.acquire().await.expect("semaphore");
            let url = format!("{}/{ty}/{id}", ctx.base);
            let r = match ctx.client.get(&url).send().await {
                Ok(r) => r,
                Err(e) => return Err(format!("{name}: GET {url}: {e}")),
            };
            let status = r.status().as_u16();
            let bytes = r.bytes().await.map(|b| b.to_vec()).unwrap_or_default();
            if status != 200 {
                return Err(format!("{name}: GET {url}: status {status}"));
            }
            let actual: Value = serde_json::from_slice(&bytes)
                .map_err(|e| format!("{name}: GET {url}: not JSON: {e}"))?;
            if actual["id"] != id.as_str() {
                return Err(format!("{name}: GET {url}: id {}", actual["id"]));
            }
            match first_difference(&expected, &without_id_meta(&actual)) {
                None => Ok(()),
                Some(d) => Err(format!("{name}: entry {i} {ty}/{id}: {d}")),
            }
        });
    }
    let mut checked = 0;
    while let Some(res) = reads.join_next().await {
        match res.expect("read task") {
            Ok(()) => checked += 1,
            Err(e) => errors.push(e),
        }
    }
    (checked, errors)
}

/// http.html#transaction + #read: every Synthea bundle loads as a transaction and each
/// resource reads back equal to what was sent (modulo id/meta and rewritten urn:uuid
/// references).
async fn synthea_transactions_round_trip(backend: Backend) {
    let files = synthea_files();
    assert_eq!(files.len(), 61, "61 Synthea patient bundles");
    let expected_resources: usize = files
        .iter()
        .map(|f| {
            let v: Value = serde_json::from_slice(&std::fs::read(f).unwrap()).unwrap();
            entries(&v).len()
        })
        .sum();

    let server = Server::start(backend).await;
    let ctx = Arc::new(Ctx {
        client: server.client().clone(),
        base: server.base(),
        reads: Semaphore::new(READS_IN_FLIGHT),
    });
    let bundles = Arc::new(Semaphore::new(BUNDLES_IN_FLIGHT));
    let mut tasks = JoinSet::new();
    for f in files {
        let ctx = ctx.clone();
        let bundles = bundles.clone();
        tasks.spawn(async move {
            let _permit = bundles.acquire_owned().await.expect("semaphore");
            round_trip(ctx, f).await
        });
    }
    let mut checked = 0;
    let mut errors = Vec::new();
    while let Some(res) = tasks.join_next().await {
        let (n, errs) = res.expect("bundle task");
        checked += n;
        errors.extend(errs);
    }
    if !errors.is_empty() {
        let shown: Vec<&String> = errors.iter().take(25).collect();
        panic!(
            "{backend}: {} problems ({checked}/{expected_resources} resources round-tripped); first {}:\n{}",
            errors.len(),
            shown.len(),
            shown
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    assert_eq!(checked, expected_resources, "every resource read back");

    // The searchable state agrees: one Patient per bundle.
    let patients = server.search("Patient?_count=100").await;
    assert_eq!(patients.len(), 61, "61 Patients stored");
}
