//! `mediflow bench`: the benchmarks behind `docs/performance/`.
//!
//! - `bench import`: loads the Synthea patient bundles repeatedly (each POST gets fresh
//!   server ids) until at least `--resources` resources are stored, and prints
//!   resources/second and peak RSS (VmHWM of this process).
//! - `bench read`: `GET /fhir/Patient/{id}` from `--clients` concurrent clients for
//!   `--seconds`, printing requests/second and p50/p99 latency. With no `--server` it starts
//!   a server in this process on a free port (client and server then share the machine's
//!   cores, as they would on one small host).
//! - `bench mllp`: HL7 v2 ORU^R01 over MLLP from `--connections` connections: messages/second
//!   and ACK latency p50/p99 (implemented in `crate::mllp::bench`).
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
        } => bench_import(&database_url, &data, resources, concurrency).await,
        Which::Read {
            database_url,
            server,
            clients,
            seconds,
        } => bench_read(&database_url, server, clients, Duration::from_secs(seconds)).await,
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
    let sink = Sink::open(&Target::Database(url.to_string())).await?;
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
    println!(
        "imported {done} resources in {secs:.2} s: {:.0} resources/s; {failures} failed bundles; peak RSS {} MiB",
        done as f64 / secs,
        peak_rss_kib().map_or("?".to_string(), |k| (k / 1024).to_string())
    );
    Ok(())
}

async fn bench_read(
    url: &str,
    server: Option<String>,
    clients: usize,
    duration: Duration,
) -> StartResult<()> {
    let base = match server {
        Some(b) => b.trim_end_matches('/').to_string(),
        None => {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let addr = listener.local_addr()?;
            let base = format!("http://{addr}/fhir");
            let ctx = server::context(url, base.clone()).await?;
            let state = Arc::new(crate::http::AppState {
                ctx,
                max_body_bytes: server::DEFAULT_MAX_BODY_BYTES,
            });
            tokio::spawn(async move {
                let _ = axum::serve(listener, crate::http::router(state)).await;
            });
            base
        }
    };
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(clients)
        .build()?;
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
    let deadline = Instant::now() + duration;
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (client, url) = (client.clone(), read_url.clone());
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
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (lat, e) = t.await?;
        all.extend(lat);
        errors += e;
    }
    all.sort_unstable();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    println!(
        "{} requests, {errors} errors: {:.0} requests/s, p50 {:.2} ms, p99 {:.2} ms",
        all.len(),
        all.len() as f64 / duration.as_secs_f64(),
        pct(0.50) as f64 / 1000.0,
        pct(0.99) as f64 / 1000.0
    );
    Ok(())
}
