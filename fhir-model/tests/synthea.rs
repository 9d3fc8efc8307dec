//! Synthea R4 transaction Bundles from the shared test data must validate.

mod common;

use common::{testdata, validator};
use serde_json::Value;

/// Two provider Bundles and three patient Bundles of different sizes.
const BUNDLES: [&str; 5] = [
    "hospitalInformation1559319163815.json",
    "practitionerInformation1559319163815.json",
    "Alda_Carter_ee1034c9-cb75-413c-8f36-da7e4268d2b5.json",
    "Annmarie_Doyle_b1756d32-c4c4-4fd2-9023-ff241b55bae0.json",
    "Brent_Beer_7dc94cc0-8c2e-4835-9994-cecbe894bcbf.json",
];

fn load(name: &str) -> Value {
    let path = testdata().join("synthea-r4").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn valid_synthea_resources_pass() {
    let mut checked = 0;
    for name in BUNDLES {
        let bundle = load(name);
        let entries = bundle["entry"].as_array().expect("entries");
        assert!(!entries.is_empty(), "{name}");
        for (i, entry) in entries.iter().enumerate() {
            let resource = &entry["resource"];
            if let Err(issues) = validator().validate(resource) {
                panic!(
                    "{name} entry {i} ({}): {issues:#?}",
                    resource["resourceType"]
                );
            }
            checked += 1;
        }
    }
    assert!(checked > 300, "only {checked} resources checked");
}

#[test]
fn valid_synthea_bundles_pass_as_a_whole() {
    for name in BUNDLES {
        let bundle = load(name);
        assert_eq!(validator().validate(&bundle), Ok(()), "{name}");
    }
}

#[test]
fn broken_synthea_entry_is_located_in_its_bundle() {
    let mut bundle = load(BUNDLES[2]);
    let entries = bundle["entry"].as_array_mut().unwrap();
    let (i, obs) = entries
        .iter_mut()
        .enumerate()
        .find(|(_, e)| e["resource"]["resourceType"] == "Observation")
        .expect("an Observation");
    obs["resource"].as_object_mut().unwrap().remove("status");
    obs["resource"]["effectiveDateTime"] = Value::from("2019-02-30T10:00:00Z");
    let issues = validator().validate(&bundle).unwrap_err();
    let paths: Vec<&str> = issues
        .iter()
        .flat_map(|i| i.expression.iter().map(String::as_str))
        .collect();
    assert!(
        paths.contains(&format!("Bundle.entry[{i}].resource.status").as_str()),
        "{issues:#?}"
    );
    assert!(
        paths.contains(&format!("Bundle.entry[{i}].resource.effectiveDateTime").as_str()),
        "{issues:#?}"
    );
}
