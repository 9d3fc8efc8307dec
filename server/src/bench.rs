//! `mediflow bench`: the benchmarks behind `docs/performance/`.
//!
//! - `bench import`: loads the Synthea patient bundles repeatedly (each POST gets fresh
//!   server ids) until at least `--resources` resources are stored, and prints
//!   resources/second and peak RSS (VmHWM of this process).
//! - `bench read`: `GET /fhir/Patient/{id}` from `--clients` concurrent clients for
//!   `--seconds`, printing requests/second and p50/p99 latency. With no `--server` it starts
//!   a server in this process on a free port (client and server then share the machine's
//!   cores, as they would on one small host).
//! - `bench search`: the search queries of issue 3 (string, token, date, quantity,
//!   `_include`, chaining, `_has`, `_summary=count`) against a database loaded by
//!   `bench import`, each from `--clients` concurrent clients for `--seconds`, printing
//!   requests/second and p50/p95 latency per query. Parameter values (a patient id, a family
//!   name, an identifier) are read from the data first.
//! - `bench mllp`: HL7 v2 ORU^R01 over MLLP from `--connections` connections: messages/second
//!   and ACK latency p50/p99 (implemented in `crate::mllp::bench`).
//!
//! Against a `--server` with authorization on (issue 5), the requests carry the bearer
//! token of `MEDIFLOW_TOKEN` (e.g. `MEDIFLOW_TOKEN=$(mediflow token --client-id bench
//! --scope 'system/*.cruds')`); the in-process server runs without authentication.
//!
//! Figures are printed, never asserted: speed targets are checked by reading them.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::Semaphore;

use crate::import::{Sink, Target};
use crate::server::{self, StartResult};

/// Arguments of `mediflow bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub which: Which,
}

/// The benchmarks.
#[derive(Debug, clap::Subcommand)]
pub enum Which {
    /// Import throughput and peak memory.
    Import {
        /// Target database (a fresh one is best): sqlite://PATH or postgres://…
        #[arg(long)]
        database_url: String,
        /// Folder of transaction Bundles.
        #[arg(long, default_value = "../shared/testdata/synthea-r4")]
        data: PathBuf,
        /// Stop after at least this many resources.
        #[arg(long, default_value_t = 100_000)]
        resources: usize,
        /// Bundles in flight at once.
        #[arg(long, default_value_t = 2)]
        concurrency: usize,
        /// Write no search-index rows (the baseline for the cost of indexing).
        #[arg(long)]
        no_index: bool,
    },
    /// Read throughput and latency.
    Read {
        /// Database for the in-process server (ignored with --server).
        #[arg(long, default_value = "sqlite://mediflow-bench/read.db")]
        database_url: String,
        /// A running server's FHIR base instead of an in-process one.
        #[arg(long)]
        server: Option<String>,
        /// Concurrent clients.
        #[arg(long, default_value_t = 64)]
        clients: usize,
        /// Duration in seconds.
        #[arg(long, default_value_t = 20)]
        seconds: u64,
    },
    /// Search latency and throughput per query on a loaded database.
    Search {
        /// Database for the in-process server (ignored with --server).
        #[arg(long, default_value = "sqlite://mediflow-bench/search.db")]
        database_url: String,
        /// A running server's FHIR base instead of an in-process one.
        #[arg(long)]
        server: Option<String>,
        /// Concurrent clients.
        #[arg(long, default_value_t = 16)]
        clients: usize,
        /// Seconds per query.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// HL7 v2 over MLLP: ORU^R01 messages/second and ACK latency (see `crate::mllp::bench`).
    Mllp {
        /// Database for the in-process server (ignored with --to).
        #[arg(long, default_value = "sqlite://mediflow-bench/mllp.db")]
        database_url: String,
        /// A running server's MLLP address (host:port) instead of an in-process one.
        #[arg(long)]
        to: Option<String>,
        /// Concurrent MLLP connections.
        #[arg(long, default_value_t = 8)]
        connections: usize,
        /// Duration in seconds.
        #[arg(long, default_value_t = 30)]
        seconds: u64,
        /// OBX segments per ORU^R01 message.
        #[arg(long, default_value_t = 10)]
        observations: usize,
    },
}

/// Runs the chosen benchmark and prints its figures.
pub async fn run(args: BenchArgs) -> StartResult<()> {
    match args.which {
        Which::Import {
            database_url,
            data,
            resources,
            concurrency,
            no_index,
        } => bench_import(&database_url, &data, resources, concurrency, no_index).await,
        Which::Read {
            database_url,
            server,
            clients,
            seconds,
        } => bench_read(&database_url, server, clients, Duration::from_secs(seconds)).await,
        Which::Search {
            database_url,
            server,
            clients,
            seconds,
        } => bench_search(&database_url, server, clients, Duration::from_secs(seconds)).await,
        Which::Mllp {
            database_url,
            to,
            connections,
            seconds,
            observations,
        } => {
            crate::mllp::bench::run(crate::mllp::bench::MllpBench {
                database_url,
                to,
                connections,
                duration: Duration::from_secs(seconds),
                observations,
            })
            .await
        }
    }
}

/// Peak resident set size of this process in KiB (VmHWM, Linux), if known.
pub fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

async fn bench_import(
    url: &str,
    data: &PathBuf,
    target: usize,
    concurrency: usize,
    no_index: bool,
) -> StartResult<()> {
    let mut files: Vec<PathBuf> = crate::import::collect_files(std::slice::from_ref(data))?
        .into_iter()
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            !name.starts_with("hospitalInformation") && !name.starts_with("practitionerInformation")
        })
        .collect();
    files.sort();
    // Raw bytes only (about 42 MB); each submission parses its own copy.
    let mut raw = Vec::with_capacity(files.len());
    let mut per_round = 0;
    for f in &files {
        let bytes = std::fs::read(f)?;
        let v: Value = serde_json::from_slice(&bytes)?;
        per_round += v["entry"].as_array().map_or(0, Vec::len);
        raw.push(Arc::new(bytes));
    }
    if per_round == 0 {
        return Err(format!("no bundle entries under {}", data.display()).into());
    }
    let rounds = target.div_ceil(per_round);
    let sink = Sink::open(&Target::Database(url.to_string()), no_index).await?;
    println!(
        "bench import: {} bundles x {rounds} rounds = {} resources into {}",
        raw.len(),
        rounds * per_round,
        server::redact(url)
    );
    let permits = Arc::new(Semaphore::new(concurrency.max(1)));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..rounds {
        for bytes in &raw {
            let (sink, bytes, permits) = (sink.clone(), bytes.clone(), permits.clone());
            tasks.push(tokio::spawn(async move {
                let _p = permits.acquire_owned().await;
                let bundle: Value = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
                sink.submit(bundle)
                    .await
                    .map(|(n, _)| n)
                    .map_err(|(_, e)| e)
            }));
        }
    }
    let mut done = 0usize;
    let mut failures = 0usize;
    for t in tasks {
        match t.await? {
            Ok(n) => done += n,
            Err(e) => {
                failures += 1;
                eprintln!("bundle failed: {e}");
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    // As `mediflow import` does; timed apart, so the rate is the writes' alone.
    let analyzed = Instant::now();
    sink.finish().await?;
    println!(
        "imported {done} resources in {secs:.2} s: {:.0} resources/s; {failures} failed bundles; peak RSS {} MiB; VACUUM/ANALYZE {:.2} s",
        done as f64 / secs,
        peak_rss_kib().map_or("?".to_string(), |k| (k / 1024).to_string()),
        analyzed.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The load client: `clients` pooled connections, and `Authorization: Bearer
/// $MEDIFLOW_TOKEN` on every request when that variable is set.
fn http_client(clients: usize) -> StartResult<reqwest::Client> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Ok(token) = std::env::var("MEDIFLOW_TOKEN") {
        let value = reqwest::header::HeaderValue::from_str(&format!("Bearer {}", token.trim()))
            .map_err(|_| "MEDIFLOW_TOKEN is not a valid header value")?;
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    Ok(reqwest::Client::builder()
        .pool_max_idle_per_host(clients)
        .default_headers(headers)
        .build()?)
}

async fn bench_read(
    url: &str,
    server: Option<String>,
    clients: usize,
    duration: Duration,
) -> StartResult<()> {
    let base = server_base(url, server).await?;
    let client = http_client(clients)?;
    let patient = json!({"resourceType": "Patient", "name": [{"family": "Bench", "given": ["Read"]}], "birthDate": "1970-01-01"});
    let created = client
        .post(format!("{base}/Patient"))
        .header("Content-Type", "application/fhir+json")
        .body(patient.to_string())
        .send()
        .await?;
    let location = created
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .ok_or("create returned no Location")?
        .to_string();
    let read_url = location
        .split("/_history")
        .next()
        .unwrap_or(&location)
        .to_string();
    println!(
        "bench read: {clients} clients, {} s, GET {read_url}",
        duration.as_secs()
    );
    let load = load(&client, &read_url, clients, duration).await?;
    println!(
        "{} requests, {} errors: {:.0} requests/s, p50 {:.2} ms, p99 {:.2} ms",
        load.requests,
        load.errors,
        load.requests as f64 / duration.as_secs_f64(),
        load.percentile(0.50),
        load.percentile(0.99)
    );
    Ok(())
}

/// The FHIR base to benchmark: `server`, or a server started in this process on `url`.
async fn server_base(url: &str, server: Option<String>) -> StartResult<String> {
    Ok(match server {
        Some(b) => b.trim_end_matches('/').to_string(),
        None => {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let addr = listener.local_addr()?;
            let base = format!("http://{addr}/fhir");
            let ctx = server::context(url, base.clone()).await?;
            let (auditor, _) = crate::auth::audit::Auditor::start(ctx.store.clone());
            let state = Arc::new(crate::http::AppState {
                ctx,
                max_body_bytes: server::DEFAULT_MAX_BODY_BYTES,
                security: Arc::new(crate::auth::Security::disabled(&base)),
                auditor,
            });
            tokio::spawn(async move {
                let _ = axum::serve(listener, crate::http::router(state)).await;
            });
            base
        }
    })
}

/// Latencies (µs, sorted) and error count of a load run.
struct Load {
    latencies: Vec<u32>,
    requests: usize,
    errors: u64,
}

impl Load {
    /// The `p` quantile (0..1) in milliseconds.
    fn percentile(&self, p: f64) -> f64 {
        let all = &self.latencies;
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0) as f64
            / 1000.0
    }
}

/// `GET url` from `clients` concurrent clients for `duration`.
async fn load(
    client: &reqwest::Client,
    url: &str,
    clients: usize,
    duration: Duration,
) -> StartResult<Load> {
    let deadline = Instant::now() + duration;
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (client, url) = (client.clone(), url.to_string());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(100_000);
            let mut errors = 0u64;
            while Instant::now() < deadline {
                let t = Instant::now();
                match client.get(&url).send().await {
                    Ok(r) if r.status().is_success() => {
                        let _ = r.bytes().await;
                        lat.push(t.elapsed().as_micros() as u32);
                    }
                    _ => errors += 1,
                }
            }
            (lat, errors)
        }));
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (lat, e) = t.await?;
        latencies.extend(lat);
        errors += e;
    }
    latencies.sort_unstable();
    Ok(Load {
        requests: latencies.len(),
        latencies,
        errors,
    })
}

/// GET `url` and parse the JSON body.
async fn get_json(client: &reqwest::Client, url: &str) -> StartResult<Value> {
    let resp = client.get(url).send().await?;
    if !resp.status().is_success() {
        return Err(format!("GET {url}: {}", resp.status()).into());
    }
    Ok(resp.json().await?)
}

/// The LOINC code of the benchmark's Observation queries: body weight (29463-7), which every
/// Synthea patient has, in kg (so `value-quantity=gt100` selects a few). The issue names
/// heart rate (8867-4), which the bundled Synthea v2.4 data does not contain; the query
/// shapes are the same.
const BENCH_LOINC: &str = "29463-7";

/// The queries of the search benchmark (issue 3), with values read from the data: a
/// patient that has [`BENCH_LOINC`] observations, its family name and identifier.
async fn search_queries(
    client: &reqwest::Client,
    base: &str,
) -> StartResult<Vec<(String, String)>> {
    let enc = |s: &str| -> String { url::form_urlencoded::byte_serialize(s.as_bytes()).collect() };
    let code = format!("http://loinc.org%7C{BENCH_LOINC}");
    // `_sort=_id`: a pseudo-random pick (ids are UUIDs), not the first patient created.
    let obs = get_json(
        client,
        &format!("{base}/Observation?code={code}&_sort=_id&_count=1"),
    )
    .await?;
    let subject = obs["entry"][0]["resource"]["subject"]["reference"]
        .as_str()
        .ok_or("no body-weight Observation with a subject: load data with `bench import` first")?
        .to_string();
    let patient_id = subject.trim_start_matches("Patient/").to_string();
    let patient = get_json(client, &format!("{base}/Patient/{patient_id}")).await?;
    let family = patient["name"][0]["family"]
        .as_str()
        .unwrap_or("Smith")
        .to_string();
    let ident = &patient["identifier"][0];
    let identifier = format!(
        "{}|{}",
        ident["system"].as_str().unwrap_or(""),
        ident["value"].as_str().unwrap_or("")
    );
    let condition = get_json(client, &format!("{base}/Condition?_sort=_id&_count=1")).await?;
    let condition_code = condition["entry"][0]["resource"]["code"]["coding"][0]["code"]
        .as_str()
        .unwrap_or("44054006")
        .to_string();
    let prefix: String = family.chars().take(3).collect::<String>().to_lowercase();
    Ok(vec![
        (
            "Patient?name=PREFIX".into(),
            format!("{base}/Patient?name={}", enc(&prefix)),
        ),
        (
            "Patient?identifier=…".into(),
            format!("{base}/Patient?identifier={}", enc(&identifier)),
        ),
        (
            format!("Observation?patient=…&code=http://loinc.org|{BENCH_LOINC}&date=ge2019"),
            format!("{base}/Observation?patient={patient_id}&code={code}&date=ge2019"),
        ),
        (
            format!("Observation?code=http://loinc.org|{BENCH_LOINC}&value-quantity=gt100"),
            format!("{base}/Observation?code={code}&value-quantity=gt100"),
        ),
        (
            "Encounter?patient=…&_include=Encounter:practitioner".into(),
            format!("{base}/Encounter?patient={patient_id}&_include=Encounter:practitioner"),
        ),
        (
            "Observation?subject:Patient.name=…".into(),
            format!("{base}/Observation?subject:Patient.name={}", enc(&family)),
        ),
        (
            "Patient?_has:Observation:patient:code=…".into(),
            format!("{base}/Patient?_has:Observation:patient:code={code}"),
        ),
        (
            "Condition?code=…&_summary=count".into(),
            format!(
                "{base}/Condition?code={}&_summary=count",
                enc(&condition_code)
            ),
        ),
    ])
}

async fn bench_search(
    url: &str,
    server: Option<String>,
    clients: usize,
    duration: Duration,
) -> StartResult<()> {
    let base = server_base(url, server).await?;
    let client = http_client(clients)?;
    let count = get_json(&client, &format!("{base}?_summary=count")).await?;
    println!(
        "bench search: {} resources, {clients} clients, {} s per query, {}",
        count["total"],
        duration.as_secs(),
        server::redact(url)
    );
    for (label, query) in search_queries(&client, &base).await? {
        let first = get_json(&client, &query).await?;
        let matches = first["entry"].as_array().map_or(0, |e| {
            e.iter().filter(|x| x["search"]["mode"] == "match").count()
        });
        let load = load(&client, &query, clients, duration).await?;
        println!(
            "{label}: {:.0} requests/s, p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms ({} errors; first page {} matches{})",
            load.requests as f64 / duration.as_secs_f64(),
            load.percentile(0.50),
            load.percentile(0.95),
            load.percentile(0.99),
            load.errors,
            matches,
            first
                .get("total")
                .map(|t| format!(", total {t}"))
                .unwrap_or_default()
        );
    }
    Ok(())
}
