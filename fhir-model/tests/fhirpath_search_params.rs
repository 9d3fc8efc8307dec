//! Every R4 SearchParameter expression (and composite component expression) in
//! `profiles/r4-search-params.json` must parse with `fhir_model::fhirpath`, and evaluate
//! without error on Synthea resources; the results of the common search shapes are checked.

mod common;

use common::testdata;
use fhir_model::fhirpath::{Expression, Node};
use serde_json::Value;
use std::collections::BTreeMap;

fn params() -> Value {
    let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../profiles/r4-search-params.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// (base expression, component expressions) of every parameter with an expression.
fn expressions(p: &Value) -> Vec<(String, Vec<String>)> {
    let list = p["params"].as_array().expect("params array");
    list.iter()
        .filter_map(|sp| {
            let e = sp.get("expression")?.as_str()?.to_string();
            let comps = sp
                .get("components")
                .and_then(Value::as_array)
                .map(|c| {
                    c.iter()
                        .filter_map(|x| x.get("expression")?.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            Some((e, comps))
        })
        .collect()
}

#[test]
fn all_search_parameter_expressions_parse() {
    let p = params();
    let mut distinct = BTreeMap::new();
    for (e, comps) in expressions(&p) {
        distinct.insert(e.clone(), ());
        for c in comps {
            distinct.insert(c, ());
        }
    }
    let mut failures = Vec::new();
    for e in distinct.keys() {
        if let Err(err) = Expression::parse(e) {
            failures.push(format!("{e}: {err}"));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    assert!(distinct.len() > 1300, "only {} expressions", distinct.len());
}

fn synthea_resources() -> Vec<Value> {
    let mut out = Vec::new();
    for name in [
        "hospitalInformation1559319163815.json",
        "practitionerInformation1559319163815.json",
        "Alda_Carter_ee1034c9-cb75-413c-8f36-da7e4268d2b5.json",
    ] {
        let path = testdata().join("synthea-r4").join(name);
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let bundle: Value = serde_json::from_str(&text).expect("valid JSON");
        // At most 5 resources of each type per Bundle keep the test fast.
        let mut per_type: BTreeMap<String, usize> = BTreeMap::new();
        for entry in bundle["entry"].as_array().expect("entries") {
            let r = &entry["resource"];
            let t = r["resourceType"].as_str().unwrap_or_default().to_string();
            let n = per_type.entry(t).or_default();
            if *n < 5 {
                *n += 1;
                out.push(r.clone());
            }
        }
    }
    out
}

#[test]
fn search_parameter_expressions_evaluate_on_synthea() {
    let p = params();
    let compiled: Vec<(Expression, Vec<Expression>)> = expressions(&p)
        .iter()
        .map(|(e, comps)| {
            (
                Expression::parse(e).expect("parses"),
                comps
                    .iter()
                    .map(|c| Expression::parse(c).expect("parses"))
                    .collect(),
            )
        })
        .collect();
    let resources = synthea_resources();
    assert!(resources.len() > 20);
    let mut evaluations = 0usize;
    let mut non_empty = 0usize;
    for r in &resources {
        for (e, comps) in &compiled {
            let nodes: Vec<Node<'_>> = e
                .evaluate(r)
                .unwrap_or_else(|err| panic!("{} on {}: {err}", e.source(), r["resourceType"]));
            evaluations += 1;
            if !nodes.is_empty() {
                non_empty += 1;
            }
            for n in &nodes {
                for c in comps {
                    c.evaluate_on(r, n).unwrap_or_else(|err| {
                        panic!("component {} on {}: {err}", c.source(), r["resourceType"])
                    });
                }
            }
        }
    }
    println!("{evaluations} evaluations, {non_empty} non-empty");
    assert!(non_empty > 500, "{non_empty}");
}

fn eval<'a>(expr: &str, r: &'a Value) -> Vec<Node<'a>> {
    Expression::parse(expr)
        .expect("parses")
        .evaluate(r)
        .expect("evaluates")
}

#[test]
fn search_shapes_on_synthea() {
    let resources = synthea_resources();
    let by_type = |t: &str| {
        resources
            .iter()
            .find(|r| r["resourceType"] == t)
            .unwrap_or_else(|| panic!("no {t}"))
    };
    let patient = by_type("Patient");
    let names = eval("Patient.name", patient);
    assert!(!names.is_empty());
    assert!(names.iter().all(|n| n.type_name() == Some("HumanName")));
    let bd = eval("Patient.birthDate", patient);
    assert_eq!(bd[0].type_name(), Some("date"));
    let phones = eval(
        "Patient.telecom.where(system='phone') | Person.telecom.where(system='phone')",
        patient,
    );
    assert!(phones.iter().all(|n| n.type_name() == Some("ContactPoint")));
    let race = eval(
        "Patient.extension('http://hl7.org/fhir/us/core/StructureDefinition/us-core-race')",
        patient,
    );
    assert_eq!(race.len(), 1);
    assert_eq!(
        eval("Patient.extension.where(url = 'http://hl7.org/fhir/us/core/StructureDefinition/us-core-race')", patient).len(),
        1
    );

    let obs = resources
        .iter()
        .find(|r| r["resourceType"] == "Observation" && r.get("valueQuantity").is_some())
        .expect("an Observation with valueQuantity");
    let v = eval("(Observation.value as Quantity)", obs);
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].type_name(), Some("Quantity"));
    assert_eq!(eval("Observation.value.as(Quantity)", obs).len(), 1);
    assert_eq!(
        eval("Observation.value.ofType(FHIR.Quantity)", obs).len(),
        1
    );
    assert_eq!(eval("Observation.value as CodeableConcept", obs).len(), 0);
    assert_eq!(
        eval("Observation.code", obs)[0].type_name(),
        Some("CodeableConcept")
    );
    // Synthea references are urn:uuid: inside transactions: resolve() gives nothing.
    assert!(eval("Observation.subject.where(resolve() is Patient)", obs).is_empty());
    let mut o2 = obs.clone();
    o2["subject"]["reference"] = Value::String("Patient/123".into());
    assert_eq!(
        eval("Observation.subject.where(resolve() is Patient)", &o2).len(),
        1
    );
    assert!(eval("Observation.subject.where(resolve() is Group)", &o2).is_empty());

    let enc = by_type("Encounter");
    let period = eval("Encounter.period", enc);
    assert_eq!(period[0].type_name(), Some("Period"));
    let participants = eval("Encounter.participant", enc);
    assert!(
        participants
            .iter()
            .all(|n| n.type_name() == Some("BackboneElement"))
    );
    let ind = eval("Encounter.participant.individual", enc);
    assert!(ind.iter().all(|n| n.type_name() == Some("Reference")));
}

/// Rough per-evaluation timings (not an assertion). Run optimised:
/// `cargo test --release -p fhir-model --test fhirpath_search_params -- --ignored --nocapture`
#[test]
#[ignore = "timing report, run with --release --ignored --nocapture"]
fn timing_report() {
    use std::time::Instant;
    let resources = synthea_resources();
    let first = |t: &str| {
        resources
            .iter()
            .find(|r| r["resourceType"] == t)
            .unwrap_or_else(|| panic!("no {t}"))
    };
    let patient = first("Patient");
    let mut obs = first("Observation").clone();
    obs["subject"]["reference"] = Value::String("Patient/123".into());
    let cases: [(&str, &Value); 6] = [
        ("Patient.name", patient),
        ("Patient.birthDate", patient),
        (
            "Patient.telecom.where(system='phone') | Person.telecom.where(system='phone') | Practitioner.telecom.where(system='phone')",
            patient,
        ),
        ("Observation.subject.where(resolve() is Patient)", &obs),
        (
            "(Observation.value as Quantity) | (Observation.value as SampledData)",
            &obs,
        ),
        (
            "Patient.extension('http://hl7.org/fhir/us/core/StructureDefinition/us-core-race').extension('text').value",
            patient,
        ),
    ];
    for (src, r) in cases {
        let e = Expression::parse(src).expect("parses");
        let n = 200_000;
        let mut count = 0usize;
        let t = Instant::now();
        for _ in 0..n {
            count += std::hint::black_box(e.evaluate(std::hint::black_box(r)).expect("ok")).len();
        }
        let ns = t.elapsed().as_nanos() as f64 / f64::from(n);
        println!("{ns:>8.0} ns  ({} results)  {src}", count / n as usize);
    }
    // All 1,3xx parameter expressions on each sampled resource (what indexing does, minus
    // the filtering of parameters by resource type).
    let p = params();
    let compiled: Vec<Expression> = expressions(&p)
        .iter()
        .map(|(e, _)| Expression::parse(e).expect("parses"))
        .collect();
    let t = Instant::now();
    let mut evals = 0usize;
    for _ in 0..20 {
        for r in &resources {
            for e in &compiled {
                std::hint::black_box(e.evaluate(r).expect("ok"));
                evals += 1;
            }
        }
    }
    let ns = t.elapsed().as_nanos() as f64 / evals as f64;
    println!("{ns:>8.0} ns  mean over {evals} evaluations of every expression on every sample");
}
