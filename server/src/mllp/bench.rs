//! `mediflow bench mllp`: ORU^R01 messages (one patient, `--observations` OBX each, unique
//! MSH-10s and order numbers) sent from `--connections` concurrent MLLP connections for
//! `--seconds`, each connection waiting for the ACK before sending its next message
//! (original mode, HL7 v2.5.1 section 2.9.2). Prints messages/second and ACK latency
//! p50/p99. Without `--to` it starts the HTTP-less MLLP side of a server in this process on
//! a free port (client and server then share the machine's cores).

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::client::{AckSummary, MllpClient};
use super::process::Processor;
use super::{MllpConfig, listener::Listener, mapping};
use crate::server::{self, StartResult};

/// Options of `mediflow bench mllp`.
#[derive(Debug, Clone)]
pub struct MllpBench {
    /// Database of the in-process server (ignored with `to`).
    pub database_url: String,
    /// A running server's MLLP address instead of an in-process one.
    pub to: Option<String>,
    /// Concurrent connections.
    pub connections: usize,
    /// Duration.
    pub duration: Duration,
    /// OBX segments per message.
    pub observations: usize,
}

/// One ORU^R01 (v2.5.1): the bench patient, one order, `observations` numeric OBX.
pub fn oru_message(control_id: &str, observations: usize) -> String {
    let mut m = format!(
        "MSH|^~\\&|BENCHLAB|BENCHHOSP|MEDIFLOW|HOSP|20240102030405+0000||ORU^R01^ORU_R01|{control_id}|P|2.5.1\r\
         PID|1||BENCH-0001^^^BENCHHOSP^MR||Bench^Mark^A||19700101|F\r\
         ORC|RE|P{control_id}^BENCHHOSP|F{control_id}^BENCHLAB\r\
         OBR|1|P{control_id}^BENCHHOSP|F{control_id}^BENCHLAB|24331-1^Lipid panel^LN|||20240102030000+0000|||||||||||||||20240102030405+0000|||F\r"
    );
    for i in 1..=observations {
        m.push_str(&format!(
            "OBX|{i}|NM|{code}^Analyte {i}^LN||{value}|mg/dL^mg/dL^UCUM|10-200|N|||F|||20240102030000+0000\r",
            code = 2000 + i,
            value = 50 + i,
        ));
    }
    m
}

/// Runs the benchmark and prints its figures.
pub async fn run(opts: MllpBench) -> StartResult<()> {
    let addr = match &opts.to {
        Some(a) => a.clone(),
        None => {
            let ctx = server::context(&opts.database_url, "http://127.0.0.1/fhir".into()).await?;
            // Audited as `serve` does, so the figures include the AuditEvent writes.
            let (auditor, _) = crate::auth::audit::Auditor::start(ctx.store.clone());
            let processor =
                Arc::new(Processor::new(ctx, mapping::config(true)).with_auditor(auditor));
            let mut config = MllpConfig::new("127.0.0.1:0".parse()?);
            config.idle_timeout = Duration::from_secs(600);
            let listener = Listener::bind(&config, processor).await?;
            let addr = listener.local_addr()?.to_string();
            let (_keep, rx) = tokio::sync::watch::channel(false);
            tokio::spawn(async move {
                listener.run(rx).await;
                drop(_keep);
            });
            addr
        }
    };
    let run_id = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
    // Warm-up: creates the patient, so the timed messages only find it.
    let mut warm = MllpClient::connect(&addr, Duration::from_secs(30)).await?;
    let ack = warm
        .request(oru_message(&format!("{run_id}-warm"), opts.observations).as_bytes())
        .await?;
    let summary = AckSummary::parse(&ack).ok_or("warm-up message: unreadable ACK")?;
    if summary.code != "AA" {
        return Err(format!("warm-up message not accepted: {summary:?}").into());
    }
    println!(
        "bench mllp: {} connections, {} s, ORU^R01 with {} OBX each, to {addr}{}",
        opts.connections,
        opts.duration.as_secs(),
        opts.observations,
        opts.to.as_ref().map_or(
            format!(" (in-process, {})", server::redact(&opts.database_url)),
            |_| String::new()
        )
    );
    let deadline = Instant::now() + opts.duration;
    let mut tasks = Vec::new();
    for c in 0..opts.connections {
        let (addr, run_id, observations) = (addr.clone(), run_id.clone(), opts.observations);
        tasks.push(tokio::spawn(async move {
            let mut lat: Vec<u32> = Vec::with_capacity(100_000);
            let mut errors = 0u64;
            let Ok(mut client) = MllpClient::connect(&addr, Duration::from_secs(30)).await else {
                return (lat, 1);
            };
            let mut n = 0u64;
            while Instant::now() < deadline {
                n += 1;
                let msg = oru_message(&format!("{run_id}-{c}-{n}"), observations);
                let t = Instant::now();
                match client.request(msg.as_bytes()).await {
                    Ok(ack) if AckSummary::parse(&ack).is_some_and(|s| s.code == "AA") => {
                        lat.push(t.elapsed().as_micros().min(u32::MAX as u128) as u32);
                    }
                    Ok(ack) => {
                        errors += 1;
                        if errors <= 3 {
                            eprintln!(
                                "not accepted: {}",
                                String::from_utf8_lossy(&ack).replace('\r', "\n")
                            );
                        }
                    }
                    Err(e) => {
                        errors += 1;
                        eprintln!("connection {c}: {e}");
                        break;
                    }
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
            .unwrap_or(0) as f64
            / 1000.0
    };
    println!(
        "{} messages acknowledged AA, {errors} errors: {:.0} messages/s, ACK latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        all.len(),
        all.len() as f64 / opts.duration.as_secs_f64(),
        pct(0.50),
        pct(0.99),
        all.last().copied().unwrap_or(0) as f64 / 1000.0
    );
    Ok(())
}
