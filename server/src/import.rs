//! `mediflow import PATH…`: loads FHIR JSON Bundles (transaction, batch, collection), single
//! resources and NDJSON files (one resource per line, as in FHIR Bulk Data), from files or
//! folders, into a database directly or through a running server's REST API.
//!
//! Every unit is one transaction, so a failed bundle is reported and skipped, never
//! half-written. NDJSON files go in chunks of [`NDJSON_CHUNK`] lines; a chunk whose
//! transaction fails on one line is retried without that line, so only bad lines are lost
//! (and reported with their line index).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use crate::error::ApiError;
use crate::interaction::{Context, bundle};
use crate::server::{self, StartResult};

/// NDJSON lines per transaction.
pub const NDJSON_CHUNK: usize = 1000;

/// Where resources go.
#[derive(Debug, Clone)]
pub enum Target {
    /// Straight into this database (`sqlite://…` or `postgres://…`).
    Database(String),
    /// Through a running server, e.g. `http://127.0.0.1:8080/fhir`.
    Server(String),
}

/// One failed unit: the file, the entry (bundle entry index or NDJSON line, 0-based) when
/// known, and why.
#[derive(Debug, Clone)]
pub struct Failure {
    pub file: PathBuf,
    pub entry: Option<usize>,
    pub reason: String,
}

/// What an import did.
#[derive(Debug, Default)]
pub struct Summary {
    pub files: usize,
    pub resources: usize,
    pub failures: Vec<Failure>,
    pub elapsed: Duration,
}

impl Summary {
    /// Resources per second over the whole run.
    pub fn rate(&self) -> f64 {
        self.resources as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// A sink for bundles: a direct database context or a server URL.
#[derive(Clone)]
pub enum Sink {
    Direct(Arc<Context>),
    Remote {
        client: reqwest::Client,
        url: String,
    },
}

/// A unit's error: the failing entry index if known, and the message.
type UnitError = (Option<usize>, String);

impl Sink {
    /// Opens the sink for `target` (connecting and migrating a database).
    /// With `defer_index`, resources are written without search-index rows and the
    /// database is marked stale until `mediflow reindex` runs.
    pub async fn open(target: &Target, defer_index: bool) -> StartResult<Sink> {
        Ok(match target {
            Target::Database(url) => {
                let mut ctx = server::context(url, "urn:mediflow:import".into()).await?;
                if defer_index {
                    ctx.defer_index = true;
                    ctx.store
                        .set_index_state(crate::reindex::STALE_KEY, Some("1"))
                        .await?;
                }
                Sink::Direct(Arc::new(ctx))
            }
            Target::Server(url) => {
                // A server with authorization on (issue 5) needs a bearer token: taken
                // from MEDIFLOW_TOKEN (e.g. `MEDIFLOW_TOKEN=$(mediflow token …)`).
                let mut headers = reqwest::header::HeaderMap::new();
                if let Ok(token) = std::env::var("MEDIFLOW_TOKEN") {
                    let value =
                        reqwest::header::HeaderValue::from_str(&format!("Bearer {}", token.trim()))
                            .map_err(|_| "MEDIFLOW_TOKEN is not a valid header value")?;
                    headers.insert(reqwest::header::AUTHORIZATION, value);
                }
                Sink::Remote {
                    client: reqwest::Client::builder()
                        .default_headers(headers)
                        .build()?,
                    url: url.trim_end_matches('/').to_string(),
                }
            }
        })
    }

    /// Ends a load into a database ([`crate::storage::Store::finish_bulk_load`]: planner
    /// statistics and, on PostgreSQL, the visibility map, which a bulk load leaves unset
    /// until autovacuum runs). Nothing to do for a remote server, which keeps its own.
    pub async fn finish(&self) -> Result<(), crate::storage::StoreError> {
        match self {
            Sink::Direct(ctx) => ctx.store.finish_bulk_load().await,
            Sink::Remote { .. } => Ok(()),
        }
    }

    /// Processes one transaction or batch Bundle. Returns the number of resources written
    /// and, for a batch, the failed entries.
    pub async fn submit(&self, bundle_json: Value) -> Result<(usize, Vec<UnitError>), UnitError> {
        let response = match self {
            Sink::Direct(ctx) => bundle::process(ctx, bundle_json, false)
                .await
                .map_err(|e| {
                    let index = match &e {
                        ApiError::InEntry { index, .. } => Some(*index),
                        _ => None,
                    };
                    (index, e.to_string())
                })?,
            Sink::Remote { client, url } => {
                let resp = client
                    .post(format!("{url}/"))
                    .header("Content-Type", "application/fhir+json")
                    .body(serde_json::to_vec(&bundle_json).unwrap_or_default())
                    .send()
                    .await
                    .map_err(|e| (None, format!("HTTP error: {e}")))?;
                let status = resp.status();
                let body: Value = resp
                    .json()
                    .await
                    .map_err(|e| (None, format!("bad response: {e}")))?;
                if !status.is_success() {
                    return Err(outcome_error(&body, status.as_u16()));
                }
                body
            }
        };
        let mut ok = 0;
        let mut failed = Vec::new();
        for (i, e) in response["entry"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            let status = e["response"]["status"].as_str().unwrap_or("");
            if status.starts_with('2') {
                ok += 1;
            } else {
                failed.push((
                    Some(i),
                    format!("{status}: {}", diagnostics(&e["response"]["outcome"])),
                ));
            }
        }
        Ok((ok, failed))
    }
}

fn diagnostics(outcome: &Value) -> String {
    outcome["issue"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["diagnostics"].as_str())
        .collect::<Vec<_>>()
        .join("; ")
}

/// Reads the entry index from an OperationOutcome's `Bundle.entry[N]` expression.
fn outcome_error(body: &Value, status: u16) -> UnitError {
    let index = body["issue"][0]["expression"][0]
        .as_str()
        .and_then(|e| e.strip_prefix("Bundle.entry["))
        .and_then(|r| r.split(']').next())
        .and_then(|n| n.parse().ok());
    (index, format!("HTTP {status}: {}", diagnostics(body)))
}

/// Collects `*.json` and `*.ndjson` files under `paths` (recursively), sorted.
pub fn collect_files(paths: &[PathBuf]) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut children: Vec<PathBuf> = std::fs::read_dir(p)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .collect();
            children.sort();
            let nested: Vec<PathBuf> = children
                .into_iter()
                .filter(|c| c.is_dir() || is_importable(c))
                .collect();
            out.extend(collect_files(&nested)?);
        } else if p.exists() {
            out.push(p.clone());
        } else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("{} does not exist", p.display()),
            ));
        }
    }
    Ok(out)
}

fn is_importable(p: &Path) -> bool {
    matches!(
        p.extension().and_then(|e| e.to_str()),
        Some("json") | Some("ndjson")
    )
}

/// Turns one parsed JSON document into a processable Bundle: transaction and batch Bundles
/// as they are; a collection (or any other Bundle type) becomes a transaction; a single
/// resource becomes a one-entry transaction. Resources with an id are written with `PUT
/// Type/id` (keeping their ids and the references to them), others with `POST`.
pub fn as_processable(doc: Value) -> Value {
    let is_bundle = doc.get("resourceType").and_then(Value::as_str) == Some("Bundle");
    let kind = doc.get("type").and_then(Value::as_str).unwrap_or("");
    if is_bundle && matches!(kind, "transaction" | "batch") {
        return doc;
    }
    let resources: Vec<(Option<String>, Value)> = if is_bundle {
        doc.get("entry")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|e| {
                let full = e.get("fullUrl").and_then(Value::as_str).map(str::to_string);
                e.get("resource").cloned().map(|r| (full, r))
            })
            .collect()
    } else {
        vec![(None, doc)]
    };
    transaction_of(resources)
}

/// A transaction Bundle writing these resources (PUT with id, POST without).
pub fn transaction_of(resources: Vec<(Option<String>, Value)>) -> Value {
    let entries: Vec<Value> = resources
        .into_iter()
        .map(|(full_url, r)| {
            let t = r
                .get("resourceType")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let request = match r.get("id").and_then(Value::as_str) {
                Some(id) => json!({"method": "PUT", "url": format!("{t}/{id}")}),
                None => json!({"method": "POST", "url": t}),
            };
            let mut e = json!({"resource": r, "request": request});
            if let Some(f) = full_url {
                e["fullUrl"] = json!(f);
            }
            e
        })
        .collect();
    json!({"resourceType": "Bundle", "type": "transaction", "entry": entries})
}

/// Imports one file; returns resources written and failures.
async fn import_file(sink: &Sink, path: &Path) -> (usize, Vec<Failure>) {
    let fail = |entry: Option<usize>, reason: String| Failure {
        file: path.to_path_buf(),
        entry,
        reason,
    };
    let text = match tokio::fs::read(path).await {
        Ok(t) => t,
        Err(e) => return (0, vec![fail(None, format!("cannot read: {e}"))]),
    };
    if path.extension().and_then(|e| e.to_str()) == Some("ndjson") {
        return import_ndjson(sink, path, &text).await;
    }
    let doc: Value = match serde_json::from_slice(&text) {
        Ok(v) => v,
        Err(e) => return (0, vec![fail(None, format!("not valid JSON: {e}"))]),
    };
    match sink.submit(as_processable(doc)).await {
        Ok((n, failed)) => (n, failed.into_iter().map(|(i, r)| fail(i, r)).collect()),
        Err((i, r)) => (0, vec![fail(i, r)]),
    }
}

async fn import_ndjson(sink: &Sink, path: &Path, text: &[u8]) -> (usize, Vec<Failure>) {
    let mut failures = Vec::new();
    let mut lines: Vec<(usize, Value)> = Vec::new();
    for (i, line) in text.split(|b| *b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice::<Value>(line) {
            Ok(v) => lines.push((i, v)),
            Err(e) => failures.push(Failure {
                file: path.to_path_buf(),
                entry: Some(i),
                reason: format!("line is not valid JSON: {e}"),
            }),
        }
    }
    let mut written = 0;
    for chunk in lines.chunks(NDJSON_CHUNK) {
        let mut chunk: Vec<(usize, Value)> = chunk.to_vec();
        while !chunk.is_empty() {
            let bundle = transaction_of(chunk.iter().map(|(_, v)| (None, v.clone())).collect());
            match sink.submit(bundle).await {
                Ok((n, _)) => {
                    written += n;
                    break;
                }
                Err((Some(i), reason)) if i < chunk.len() => {
                    let (line, _) = chunk.remove(i);
                    failures.push(Failure {
                        file: path.to_path_buf(),
                        entry: Some(line),
                        reason,
                    });
                }
                Err((_, reason)) => {
                    failures.push(Failure {
                        file: path.to_path_buf(),
                        entry: None,
                        reason,
                    });
                    break;
                }
            }
        }
    }
    (written, failures)
}

/// Runs an import: collects files, processes up to `concurrency` at once, shows a progress
/// bar when `progress`, prints the summary to stdout and returns it.
pub async fn run(
    paths: &[PathBuf],
    target: Target,
    concurrency: usize,
    progress: bool,
    defer_index: bool,
) -> StartResult<Summary> {
    let files = collect_files(paths)?;
    let sink = Sink::open(&target, defer_index).await?;
    let start = Instant::now();
    let bar = if progress {
        ProgressBar::new(files.len() as u64)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} files {msg} [{elapsed_precise}]")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let permits = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut tasks = Vec::with_capacity(files.len());
    for file in &files {
        let (sink, file, permits) = (sink.clone(), file.clone(), permits.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = permits.acquire_owned().await;
            import_file(&sink, &file).await
        }));
    }
    let mut summary = Summary {
        files: files.len(),
        ..Summary::default()
    };
    for task in tasks {
        let (n, failures) = task.await?;
        summary.resources += n;
        summary.failures.extend(failures);
        bar.inc(1);
        let rate = summary.resources as f64 / start.elapsed().as_secs_f64().max(1e-9);
        bar.set_message(format!("{} resources, {rate:.0}/s", summary.resources));
    }
    bar.finish_and_clear();
    sink.finish().await?;
    summary.elapsed = start.elapsed();
    print_summary(&summary);
    if defer_index {
        println!("search indexes were not written: run `mediflow reindex` next");
    }
    Ok(summary)
}

fn print_summary(s: &Summary) {
    println!(
        "imported {} resources from {} files in {:.2} s ({:.0} resources/s), {} failures",
        s.resources,
        s.files,
        s.elapsed.as_secs_f64(),
        s.rate(),
        s.failures.len()
    );
    for f in &s.failures {
        match f.entry {
            Some(i) => println!("FAILED {} entry {i}: {}", f.file.display(), f.reason),
            None => println!("FAILED {}: {}", f.file.display(), f.reason),
        }
    }
}
