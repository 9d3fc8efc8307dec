//! `SearchParamRegistry`: the committed `profiles/r4-search-params.json`, parameter lookup,
//! compartments, and index extraction on Synthea resources (R4 search.html §3.1.1.4).

mod common;

use fhir_model::search::{
    IndexEntry, IndexValue, SearchParamRegistry, SearchParamType, normalize_string, values_of,
};
use serde_json::Value;
use std::path::PathBuf;

#[path = "../examples/gen_r4_search_params.rs"]
#[allow(dead_code)]
mod generator;

const DAY: i64 = 86_400_000_000;

fn sample(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata/search")
        .join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).expect("sample is JSON")
}

fn reg() -> &'static SearchParamRegistry {
    SearchParamRegistry::get()
}

fn entries<'a>(all: &'a [IndexEntry<'a>], code: &str) -> Vec<&'a IndexValue> {
    all.iter()
        .filter(|e| e.code == code)
        .map(|e| &e.value)
        .collect()
}

fn strings(all: &[IndexEntry<'_>], code: &str) -> Vec<String> {
    entries(all, code)
        .into_iter()
        .filter_map(|v| match v {
            IndexValue::String { normalized, .. } => Some(normalized.clone()),
            _ => None,
        })
        .collect()
}

fn token(system: Option<&str>, code: &str) -> IndexValue {
    IndexValue::Token {
        system: system.map(Into::into),
        code: Some(code.into()),
    }
}

fn reference(ty: &str, id: &str) -> IndexValue {
    IndexValue::Reference {
        target_type: Some(ty.into()),
        id: Some(id.into()),
        url: None,
    }
}

#[test]
fn search_params_file_matches_definitions() {
    let defs = common::testdata().join("fhir-r4-definitions");
    let generated = generator::generate(&defs).expect("generator runs");
    let committed = include_str!("../../profiles/r4-search-params.json");
    assert!(
        generated == committed,
        "profiles/r4-search-params.json is stale: run `cargo run -p fhir-model --example \
         gen_r4_search_params -- ../shared/testdata/fhir-r4-definitions \
         profiles/r4-search-params.json`"
    );
    assert!(committed.len() < 800_000);
}

#[test]
fn registry_loads_and_compiles_all_r4_parameters() {
    let s = reg().stats();
    assert_eq!(s.params, 1375);
    assert_eq!(s.without_expression, 3, "_text, _content, _query");
    assert_eq!(s.special, 1, "Location.near");
    assert!(s.parse_failures.is_empty(), "{:#?}", s.parse_failures);
    assert_eq!(s.compiled, 1375 - 3 - 1);
    assert!(s.specialised > 100, "{s:?}");
    assert_eq!(reg().all().len(), 1375);
}

#[test]
fn common_parameters_apply_to_every_resource_type() {
    let r4 = fhir_model::R4Registry::get();
    for rt in r4.resource_types() {
        for code in [
            "_id",
            "_lastUpdated",
            "_tag",
            "_profile",
            "_security",
            "_source",
        ] {
            let p = reg()
                .param(rt, code)
                .unwrap_or_else(|| panic!("{rt} {code}"));
            assert_eq!(p.base, ["Resource"]);
        }
        let text = reg().param(rt, "_text").is_some();
        assert_eq!(
            text,
            !matches!(rt, "Bundle" | "Binary" | "Parameters"),
            "{rt}"
        );
    }
    let p = reg()
        .param("Observation", "code-value-quantity")
        .expect("param");
    assert_eq!(p.kind, SearchParamType::Composite);
    let comps: Vec<(&str, SearchParamType)> = p
        .components
        .iter()
        .map(|c| (c.code.as_str(), c.kind))
        .collect();
    assert_eq!(
        comps,
        [
            ("code", SearchParamType::Token),
            ("value-quantity", SearchParamType::Quantity)
        ]
    );
    let patient = reg().param("Observation", "patient").expect("patient");
    assert_eq!(patient.targets, ["Patient", "Group"]);
    assert!(patient.base.len() > 20, "multi-base clinical-patient");
    assert!(reg().param("Patient", "no-such-param").is_none());
    assert!(reg().param("NoSuchType", "_id").is_none());
    let n = reg().params_for("Patient").count();
    assert!(n > 25, "{n}");
    assert!(reg().params_for("Patient").any(|p| p.code == "birthdate"));
}

#[test]
fn compartments_list_the_linking_parameters() {
    assert_eq!(
        reg().compartment_params("Patient", "Observation"),
        ["subject", "performer"]
    );
    assert_eq!(reg().compartment_params("Patient", "Patient"), ["link"]);
    assert_eq!(
        reg().compartment_params("Encounter", "Encounter"),
        ["{def}"]
    );
    assert!(reg().compartment_params("Patient", "CodeSystem").is_empty());
    assert!(reg().compartment_params("Nope", "Observation").is_empty());
    let types = reg().compartment_types("Patient");
    assert!(types.contains(&"Observation") && !types.contains(&"CodeSystem"));
    for c in [
        "Patient",
        "Encounter",
        "RelatedPerson",
        "Practitioner",
        "Device",
    ] {
        assert!(!reg().compartment_types(c).is_empty(), "{c}");
    }
}

#[test]
fn patient_name_is_indexed_normalized_by_part() {
    let p = sample("patient.json");
    let e = reg().extract(&p);
    assert_eq!(strings(&e, "family"), ["carter"]);
    assert_eq!(strings(&e, "given"), ["alda"]);
    assert_eq!(strings(&e, "name"), ["carter", "alda"]);
    assert!(strings(&e, "address-city").contains(&"chicopee".to_string()));
    assert!(strings(&e, "address").contains(&"410 ryan vista".to_string()));
    let exact: Vec<&IndexValue> = entries(&e, "family");
    assert!(matches!(exact[0], IndexValue::String { exact, .. } if exact == "Carter"));
}

#[test]
fn accents_and_case_are_removed_from_names() {
    let p = serde_json::json!({"resourceType": "Patient", "id": "x",
        "name": [{"family": "Müller", "given": ["JOSÉ  María"]}]});
    let e = reg().extract(&p);
    assert_eq!(strings(&e, "family"), ["muller"]);
    assert_eq!(strings(&e, "given"), ["jose maria"]);
    assert_eq!(normalize_string("Müller"), "muller");
}

#[test]
fn birthdate_is_a_one_day_range() {
    let e = reg().extract(&sample("patient.json"));
    let [IndexValue::Date { low, high }] = entries(&e, "birthdate")[..] else {
        panic!("{:?}", entries(&e, "birthdate"));
    };
    assert_eq!(high - low, DAY);
    let expected = fhir_model::datetime::FhirDateTime::parse("2015-08-22")
        .expect("date")
        .to_range();
    assert_eq!((*low, *high), expected);
}

#[test]
fn patient_tokens_cover_identifiers_gender_and_phone() {
    let e = reg().extract(&sample("patient.json"));
    let ids = entries(&e, "identifier");
    assert!(ids.contains(&&token(
        Some("http://hl7.org/fhir/sid/us-ssn"),
        "999-16-5745"
    )));
    assert!(ids.iter().any(|v| matches!(v,
        IndexValue::OfType { type_code, value, .. } if type_code == "SS" && value == "999-16-5745")));
    assert!(ids.contains(&&IndexValue::TokenText("social security number".into())));
    assert_eq!(entries(&e, "gender"), [&token(None, "female")]);
    assert_eq!(entries(&e, "phone"), [&token(None, "555-843-1642")]);
    assert_eq!(entries(&e, "telecom"), [&token(None, "555-843-1642")]);
    assert!(entries(&e, "email").is_empty());
    assert_eq!(entries(&e, "active"), Vec::<&IndexValue>::new());
}

#[test]
fn meta_tag_and_profile_are_indexed() {
    let mut p = sample("patient.json");
    let e = reg().extract(&p);
    assert_eq!(
        entries(&e, "_tag"),
        [&token(
            Some("https://smarthealthit.org/tags"),
            "synthea-5-2019"
        )]
    );
    assert!(entries(&e, "_profile").is_empty());
    p["meta"]["profile"] =
        serde_json::json!(["http://hl7.org/fhir/us/core/StructureDefinition/us-core-patient"]);
    p["meta"]["source"] = serde_json::json!("urn:mediflow:test");
    p["meta"]["security"] = serde_json::json!([{"system": "urn:s", "code": "R"}]);
    let e = reg().extract(&p);
    assert_eq!(
        entries(&e, "_profile"),
        [&IndexValue::Uri(
            "http://hl7.org/fhir/us/core/StructureDefinition/us-core-patient".into()
        )]
    );
    assert_eq!(
        entries(&e, "_source"),
        [&IndexValue::Uri("urn:mediflow:test".into())]
    );
    assert_eq!(entries(&e, "_security"), [&token(Some("urn:s"), "R")]);
}

#[test]
fn id_and_last_updated_are_left_to_the_server() {
    let mut p = sample("patient.json");
    p["meta"]["lastUpdated"] = serde_json::json!("2020-01-01T00:00:00Z");
    let e = reg().extract(&p);
    assert!(
        e.iter()
            .all(|x| x.code != "_id" && x.code != "_lastUpdated")
    );
}

#[test]
fn observation_value_quantity_has_ucum_canonical_form() {
    let o = sample("observation-quantity.json");
    let e = reg().extract(&o);
    let q = entries(&e, "value-quantity");
    assert_eq!(q.len(), 1, "{q:?}");
    let IndexValue::Quantity {
        system, canonical, ..
    } = q[0]
    else {
        panic!("{q:?}");
    };
    assert_eq!(system.as_deref(), Some("http://unitsofmeasure.org"));
    assert!(canonical.is_some(), "{q:?}");
    assert_eq!(
        entries(&e, "patient"),
        [&reference(
            "Patient",
            "36b0075a-44ae-459c-92a6-d83e037fd064"
        )]
    );
    assert_eq!(entries(&e, "subject"), entries(&e, "patient"));
    assert!(!entries(&e, "date").is_empty());
    assert!(!entries(&e, "code").is_empty());
    assert_eq!(
        entries(&e, "category"),
        [
            &token(
                Some("http://terminology.hl7.org/CodeSystem/observation-category"),
                "vital-signs"
            ),
            &IndexValue::TokenText("vital-signs".into())
        ]
    );
}

/// The composite entries of `code`, grouped: group → [(component index, value)].
fn groups<'a>(e: &'a [IndexEntry<'a>], code: &str) -> Vec<Vec<(u8, &'a IndexValue)>> {
    let mut out: Vec<Vec<(u8, &IndexValue)>> = Vec::new();
    for x in e.iter().filter(|x| x.code == code) {
        let (g, c) = x.composite.expect("composite entry");
        let g = g as usize;
        if out.len() <= g {
            out.resize(g + 1, Vec::new());
        }
        out[g].push((c, &x.value));
    }
    out
}

fn quantity_value(v: &IndexValue) -> f64 {
    match v {
        IndexValue::Quantity { value, .. } => *value,
        other => panic!("not a quantity: {other:?}"),
    }
}

#[test]
fn code_value_quantity_pairs_the_code_with_the_value() {
    let o = sample("observation-quantity.json");
    let e = reg().extract(&o);
    let g = groups(&e, "code-value-quantity");
    assert_eq!(g.len(), 1, "one base node: the Observation");
    assert!(
        g[0].iter()
            .any(|(c, v)| *c == 0 && matches!(v, IndexValue::Token { .. }))
    );
    assert_eq!(
        g[0].iter()
            .filter(|(c, v)| *c == 1 && matches!(v, IndexValue::Quantity { .. }))
            .count(),
        1
    );
}

#[test]
fn component_code_value_quantity_keeps_each_component_together() {
    let o = sample("observation-bp.json");
    let e = reg().extract(&o);
    let g = groups(&e, "component-code-value-quantity");
    assert_eq!(g.len(), 2, "two components");
    for (code, value) in [("8462-4", 77.135), ("8480-6", 116.55)] {
        let group = g
            .iter()
            .find(|grp| grp.contains(&(0, &token(Some("http://loinc.org"), code))))
            .unwrap_or_else(|| panic!("group for {code}"));
        let q: Vec<f64> = group
            .iter()
            .filter(|(c, _)| *c == 1)
            .map(|(_, v)| quantity_value(v))
            .collect();
        assert_eq!(q.len(), 1);
        assert!((q[0] - value).abs() < 0.01, "{code}: {q:?}");
    }
    // The BP observation itself has no value: code-value-quantity has a code, no quantity.
    let top = groups(&e, "code-value-quantity");
    assert!(top.iter().flatten().all(|(c, _)| *c == 0));
    let comp_codes = entries(&e, "component-code");
    assert!(comp_codes.contains(&&token(Some("http://loinc.org"), "8480-6")));
    let cvq = entries(&e, "component-value-quantity");
    assert_eq!(cvq.len(), 2);
}

#[test]
fn encounter_condition_medication_request_and_report() {
    let enc = sample("encounter.json");
    let e = reg().extract(&enc);
    let [IndexValue::Date { low, high }] = entries(&e, "date")[..] else {
        panic!("{:?}", entries(&e, "date"));
    };
    assert!(low < high && *high != i64::MAX);
    assert_eq!(entries(&e, "patient").len(), 1);
    assert!(!entries(&e, "class").is_empty());
    assert!(!entries(&e, "type").is_empty());

    let cond = sample("condition.json");
    let e = reg().extract(&cond);
    assert_eq!(entries(&e, "patient").len(), 1);
    assert!(!entries(&e, "onset-date").is_empty());
    assert!(!entries(&e, "clinical-status").is_empty());
    assert_eq!(entries(&e, "encounter").len(), 1);

    let mr = sample("medicationrequest.json");
    let e = reg().extract(&mr);
    assert!(entries(&e, "code").contains(&&token(
        Some("http://www.nlm.nih.gov/research/umls/rxnorm"),
        "312617"
    )));
    assert!(entries(&e, "code").contains(&&IndexValue::TokenText(
        "prednisone 5 mg oral tablet".into()
    )));
    assert!(
        entries(&e, "medication").is_empty(),
        "a CodeableConcept, not a Reference"
    );
    assert_eq!(
        entries(&e, "patient"),
        [&reference(
            "Patient",
            "983561b3-02dd-4227-88a7-835827bd9566"
        )]
    );
    assert_eq!(entries(&e, "authoredon").len(), 1);
    assert_eq!(entries(&e, "status"), [&token(None, "stopped")]);

    let dr = sample("diagnosticreport.json");
    let e = reg().extract(&dr);
    assert!(!entries(&e, "result").is_empty());
    assert!(entries(&e, "result").iter().all(
        |v| matches!(v, IndexValue::Reference { target_type: Some(t), .. } if t == "Observation")
    ));
    assert_eq!(entries(&e, "patient").len(), 1);
    assert!(!entries(&e, "issued").is_empty());
}

#[test]
fn entries_are_deduplicated() {
    let p = serde_json::json!({"resourceType": "Patient",
        "name": [{"family": "Smith"}, {"family": "SMITH"}, {"family": "Smith"}]});
    let e = reg().extract(&p);
    assert_eq!(
        entries(&e, "family").len(),
        2,
        "Smith twice is one entry; SMITH differs in `exact`"
    );
}

#[test]
fn resources_without_a_known_type_give_nothing() {
    assert!(reg().extract(&serde_json::json!({"id": "x"})).is_empty());
    assert!(
        reg()
            .extract(&serde_json::json!({"resourceType": "Nope"}))
            .is_empty()
    );
}

/// Evaluates each parameter's whole (multi-base) expression and converts the nodes the way
/// extraction does, to compare with what the per-type specialised expressions gave.
fn whole_union_values(res: &Value, code: &str) -> Option<Vec<IndexValue>> {
    let rt = res["resourceType"].as_str()?;
    let def = reg().param(rt, code)?;
    if def.kind == SearchParamType::Composite {
        return None;
    }
    let nodes = def.compiled.as_ref()?.evaluate(res).ok()?;
    let mut v = Vec::new();
    for n in &nodes {
        for x in values_of(def.kind, n.type_name(), n.value()) {
            if !v.contains(&x) {
                v.push(x);
            }
        }
    }
    Some(v)
}

#[test]
fn specialised_expressions_match_the_whole_union() {
    let mut checked = 0;
    for name in [
        "patient.json",
        "observation-quantity.json",
        "observation-bp.json",
        "encounter.json",
        "condition.json",
        "medicationrequest.json",
        "diagnosticreport.json",
    ] {
        let res = sample(name);
        let rt = res["resourceType"].as_str().expect("type");
        let e = reg().extract(&res);
        for def in reg().params_for(rt) {
            if matches!(def.code.as_str(), "_id" | "_lastUpdated") {
                continue;
            }
            let Some(whole) = whole_union_values(&res, &def.code) else {
                continue;
            };
            // A parameter stored as the union of others (`stored_as`) has no entries of its
            // own: the union of its parts' must be the values of its whole expression.
            let mut got: Vec<IndexValue> = Vec::new();
            let parts: Vec<&str> = match reg().stored_as(rt, &def.code) {
                Some(parts) => parts.iter().map(String::as_str).collect(),
                None => vec![def.code.as_str()],
            };
            for part in parts {
                for v in entries(&e, part) {
                    if !got.contains(v) {
                        got.push(v.clone());
                    }
                }
            }
            if reg().stored_as(rt, &def.code).is_some() {
                got.sort_by_key(|v| format!("{v:?}"));
                let mut whole = whole;
                whole.sort_by_key(|v| format!("{v:?}"));
                assert_eq!(got, whole, "{rt}.{} ({:?})", def.code, def.expression);
                continue;
            }
            assert_eq!(got, whole, "{rt}.{} ({:?})", def.code, def.expression);
            checked += usize::from(def.base.len() > 1);
        }
    }
    assert!(checked > 20, "{checked} multi-base parameters compared");
}

/// The tuples of a composite evaluated from its definition: per node of its expression, the
/// values of each component (search.html#composite), sorted for comparison.
fn composite_tuples(res: &Value, rt: &str, code: &str) -> Vec<Vec<Vec<IndexValue>>> {
    let def = reg().param(rt, code).expect("composite");
    let nodes = def
        .compiled
        .as_ref()
        .expect("expr")
        .evaluate(res)
        .expect("evaluates");
    let mut out = Vec::new();
    for base in &nodes {
        let mut tuple = Vec::new();
        for c in &def.components {
            let found = c
                .compiled
                .as_ref()
                .expect("component")
                .evaluate_on(res, base);
            let mut values: Vec<IndexValue> = Vec::new();
            for n in found.expect("component evaluates") {
                values.extend(values_of(c.kind, n.type_name(), n.value()));
            }
            values.retain(|v| !matches!(v, IndexValue::TokenText(_) | IndexValue::OfType { .. }));
            values.sort_by_key(|v| format!("{v:?}"));
            values.dedup();
            tuple.push(values);
        }
        if tuple.iter().all(|v| !v.is_empty()) {
            out.push(tuple);
        }
    }
    out.sort_by_key(|t| format!("{t:?}"));
    out
}

/// The tuples the extracted entries of composite `code` give: per group, per component.
fn entry_tuples(all: &[IndexEntry<'_>], code: &str, width: usize) -> Vec<Vec<Vec<IndexValue>>> {
    let mut groups: std::collections::BTreeMap<u32, Vec<Vec<IndexValue>>> = Default::default();
    for e in all.iter().filter(|e| e.code == code) {
        let Some((group, index)) = e.composite else {
            continue;
        };
        let tuple = groups
            .entry(group)
            .or_insert_with(|| vec![Vec::new(); width]);
        tuple[usize::from(index)].push(e.value.clone());
    }
    let mut out: Vec<Vec<Vec<IndexValue>>> = groups
        .into_values()
        .map(|mut t| {
            for v in &mut t {
                v.sort_by_key(|x| format!("{x:?}"));
                v.dedup();
            }
            t
        })
        .collect();
    out.sort_by_key(|t| format!("{t:?}"));
    out
}

/// A composite stored as the union of other composites (Observation `combo-code-value-*`)
/// has no rows of its own; each node of its expression must give the same component
/// tuple as the parts' rows (search.html#composite matches within one tuple), on a result
/// with a value and one with components.
#[test]
fn composite_unions_give_the_tuples_of_the_whole_composite() {
    let mut checked = 0;
    for name in ["observation-quantity.json", "observation-bp.json"] {
        let res = sample(name);
        let rt = "Observation";
        let e = reg().extract(&res);
        for code in ["combo-code-value-quantity", "combo-code-value-concept"] {
            let parts = reg().stored_as(rt, code).expect("stored as its parts");
            assert!(
                entry_tuples(&e, code, 2).is_empty(),
                "{code} has no rows of its own"
            );
            let mut got: Vec<Vec<Vec<IndexValue>>> =
                parts.iter().flat_map(|p| entry_tuples(&e, p, 2)).collect();
            got.sort_by_key(|t| format!("{t:?}"));
            let whole = composite_tuples(&res, rt, code);
            assert_eq!(got, whole, "{name}: {code}");
            checked += whole.len();
        }
    }
    assert!(checked >= 3, "{checked} tuples compared");
}

fn synthea_resources(limit: usize) -> Vec<Value> {
    let dir = common::testdata().join("synthea-r4");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("synthea dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files.into_iter().take(limit) {
        let text = std::fs::read_to_string(&f).expect("bundle");
        let bundle: Value = serde_json::from_str(&text).expect("json");
        for e in bundle["entry"].as_array().into_iter().flatten() {
            out.push(e["resource"].clone());
        }
    }
    out
}

#[test]
fn synthea_bundles_extract_without_evaluation_errors() {
    let fresh =
        SearchParamRegistry::from_json(include_str!("../../profiles/r4-search-params.json"))
            .expect("table");
    let resources = synthea_resources(3);
    let mut total = 0;
    for r in &resources {
        total += fresh.extract(r).len();
    }
    assert!(total > resources.len() * 5, "{total} entries");
    assert_eq!(fresh.eval_error_count(), 0);
}

#[test]
fn evaluation_errors_skip_the_parameter_and_are_counted() {
    let table = r#"{"params": [
      {"code": "bad", "base": ["Patient"], "type": "string",
       "expression": "Patient.name.given.single()", "url": "urn:t:bad"},
      {"code": "family", "base": ["Patient"], "type": "string",
       "expression": "Patient.name.family", "url": "urn:t:family"}],
      "compartments": {}}"#;
    let reg = SearchParamRegistry::from_json(table).expect("table");
    let p = serde_json::json!({"resourceType": "Patient",
        "name": [{"family": "A", "given": ["B", "C"]}]});
    let e = reg.extract(&p);
    assert_eq!(strings(&e, "family"), ["a"]);
    assert!(entries(&e, "bad").is_empty());
    assert_eq!(reg.eval_error_count(), 1);
}

#[test]
fn fhirpath_suite_examples_extract_without_evaluation_errors() {
    let fresh =
        SearchParamRegistry::from_json(include_str!("../../profiles/r4-search-params.json"))
            .expect("table");
    let dir = common::testdata().join("fhirpath-r4");
    let mut n = 0;
    for sub in ["input-json", "input"] {
        for e in std::fs::read_dir(dir.join(sub)).expect("dir").flatten() {
            let path = e.path();
            if path.extension().is_none_or(|x| x != "json") {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("read");
            let res: Value = serde_json::from_str(&text).expect("json");
            let before = fresh.eval_error_count();
            let entries = fresh.extract(&res);
            assert_eq!(fresh.eval_error_count(), before, "{}", path.display());
            n += entries.len();
        }
    }
    assert!(n > 100, "{n}");
}

/// Extraction speed on Synthea (not an assertion). Run with
/// `cargo test --release -p fhir-model --test search -- --ignored --nocapture extraction_speed`.
#[test]
#[ignore]
fn extraction_speed() {
    let t = std::time::Instant::now();
    let fresh =
        SearchParamRegistry::from_json(include_str!("../../profiles/r4-search-params.json"));
    println!("registry build: {:?}", t.elapsed());
    drop(fresh);
    let reg = reg();
    let resources = synthea_resources(64);
    let t = std::time::Instant::now();
    let mut n = 0usize;
    for r in &resources {
        n += reg.extract(r).len();
    }
    let el = t.elapsed();
    let mut by_type: std::collections::BTreeMap<&str, (usize, std::time::Duration)> =
        Default::default();
    for r in &resources {
        let t = std::time::Instant::now();
        std::hint::black_box(reg.extract(r));
        let e = by_type
            .entry(r["resourceType"].as_str().unwrap_or("?"))
            .or_default();
        e.0 += 1;
        e.1 += t.elapsed();
    }
    println!(
        "{} resources, {n} entries, {:.1} µs/resource, {:.1} entries/resource",
        resources.len(),
        el.as_secs_f64() * 1e6 / resources.len() as f64,
        n as f64 / resources.len() as f64
    );
    println!(
        "registry: {:?}; evaluation errors: {}",
        reg.stats(),
        reg.eval_error_count()
    );
    for (rt, (c, d)) in by_type {
        println!(
            "  {rt:24} {c:6} {:8.1} µs",
            d.as_secs_f64() * 1e6 / c as f64
        );
    }
}
