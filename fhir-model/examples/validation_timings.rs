//! Prints validation timings on the Synthea test data.
//!
//! ```text
//! cargo run --release -p fhir-model --example validation_timings -- [synthea dir]
//! ```
//! The directory defaults to `../shared/testdata/synthea-r4` (relative to the workspace).

use fhir_model::Validator;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

fn mean(total: Duration, n: usize) -> Duration {
    total / u32::try_from(n.max(1)).unwrap_or(u32::MAX)
}

/// Resident memory in MB (Linux; 0 elsewhere).
fn rss_mb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb / 1024)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "../shared/testdata/synthea-r4".to_string());

    let t = Instant::now();
    let registry = fhir_model::R4Registry::get();
    println!(
        "registry load: {:?} ({} resource types)",
        t.elapsed(),
        registry.resource_types().len()
    );

    let t = Instant::now();
    let validator = Validator::new()?;
    println!(
        "Validator::new (root schema compile): {:?}, RSS {} MB",
        t.elapsed(),
        rss_mb()
    );

    let mut files: Vec<_> = std::fs::read_dir(&dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    let mut resources = Vec::new();
    let mut bundles = Vec::new();
    for f in &files {
        let bundle: Value = serde_json::from_str(&std::fs::read_to_string(f)?)?;
        if let Some(entries) = bundle["entry"].as_array() {
            resources.extend(entries.iter().map(|e| e["resource"].clone()));
        }
        bundles.push(bundle);
    }

    let mut invalid = 0;
    let t = Instant::now();
    for r in &resources {
        if validator.validate(r).is_err() {
            invalid += 1;
        }
    }
    println!(
        "valid input: {} Synthea resources, {invalid} invalid, mean {:?} per resource",
        resources.len(),
        mean(t.elapsed(), resources.len())
    );
    let patients: Vec<&Value> = resources
        .iter()
        .filter(|r| r["resourceType"] == "Patient")
        .collect();
    let t = Instant::now();
    for _ in 0..20 {
        for p in &patients {
            let _ = validator.validate(p);
        }
    }
    println!(
        "valid Synthea Patient: mean {:?}",
        mean(t.elapsed(), patients.len() * 20)
    );
    let t = Instant::now();
    for b in &bundles {
        let _ = validator.validate(b);
    }
    println!(
        "whole Bundles: {} files, mean {:?} per Bundle",
        bundles.len(),
        mean(t.elapsed(), bundles.len())
    );

    for rt in ["Patient", "Observation", "Bundle", "ExplanationOfBenefit"] {
        let bad = json!({"resourceType": rt, "bogus": 1});
        let t = Instant::now();
        let _ = validator.validate(&bad);
        let first = t.elapsed();
        let t = Instant::now();
        for _ in 0..100 {
            let _ = validator.validate(&bad);
        }
        println!(
            "invalid {rt}: first call (builds the per-type validator) {first:?}, cached {:?}",
            mean(t.elapsed(), 100)
        );
    }
    let before = rss_mb();
    for rt in ["Claim", "Encounter", "Condition", "Procedure"] {
        let _ = validator.validate(&json!({"resourceType": rt, "bogus": 1}));
    }
    println!(
        "RSS with {} per-type validators cached: {} MB ({} MB more than with 4)",
        validator.cached_types().len(),
        rss_mb(),
        rss_mb().saturating_sub(before)
    );
    Ok(())
}
