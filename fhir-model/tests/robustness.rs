//! `Validator::validate` must never panic and must stay deterministic on arbitrary JSON.

mod common;

use common::{testdata, validator};
use serde_json::{Map, Value, json};

/// A small deterministic generator (64-bit LCG), so failures reproduce.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn junk(rng: &mut Lcg) -> Value {
    match rng.below(10) {
        0 => Value::Null,
        1 => json!(true),
        2 => json!(-1.5e300),
        3 => json!(12345678901234567890u64),
        4 => json!(""),
        5 => json!("2021-02-30"),
        6 => json!([]),
        7 => json!({}),
        8 => json!([null, {"extension": [{}]}]),
        _ => json!({"resourceType": "Patient", "contained": [{"resourceType": "X"}]}),
    }
}

/// Replaces, adds or removes one value somewhere in `v`.
fn mutate(v: &mut Value, rng: &mut Lcg, depth: usize) {
    match v {
        Value::Object(map) if !map.is_empty() && depth < 8 && rng.below(3) > 0 => {
            let keys: Vec<String> = map.keys().cloned().collect();
            let key = &keys[rng.below(keys.len())];
            if let Some(child) = map.get_mut(key) {
                mutate(child, rng, depth + 1);
            }
        }
        Value::Array(items) if !items.is_empty() && depth < 8 && rng.below(3) > 0 => {
            let i = rng.below(items.len());
            mutate(&mut items[i], rng, depth + 1);
        }
        Value::Object(map) => match rng.below(3) {
            0 => {
                map.insert(format!("_x{}", rng.below(5)), junk(rng));
            }
            1 => {
                let keys: Vec<String> = map.keys().cloned().collect();
                if !keys.is_empty() {
                    map.remove(&keys[rng.below(keys.len())]);
                }
            }
            _ => *v = junk(rng),
        },
        _ => *v = junk(rng),
    }
}

#[test]
fn random_mutations_never_panic() {
    let path = testdata().join("synthea-r4/Alda_Carter_ee1034c9-cb75-413c-8f36-da7e4268d2b5.json");
    let bundle: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let wanted = ["Patient", "Observation", "Encounter", "Claim"];
    let resources: Vec<&Value> = bundle["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["resource"])
        .filter(|r| wanted.iter().any(|w| r["resourceType"] == *w))
        .collect();
    let mut rng = Lcg(42);
    for round in 0..400 {
        let mut r = resources[rng.below(resources.len())].clone();
        for _ in 0..=rng.below(3) {
            mutate(&mut r, &mut rng, 0);
        }
        let first = validator().validate(&r);
        if let Err(issues) = &first {
            assert!(!issues.is_empty(), "round {round}");
        }
        assert_eq!(
            validator().validate(&r),
            first,
            "round {round}: not deterministic"
        );
    }
}

#[test]
fn odd_top_level_shapes_never_panic() {
    // 400 levels: deeper than the validator's limit (96), shallow enough for serde_json's
    // recursive drop on a test thread's stack.
    let mut deep = json!("leaf");
    for _ in 0..400 {
        let mut m = Map::new();
        m.insert("extension".into(), json!([deep]));
        deep = Value::Object(m);
    }
    let cases = [
        json!({"resourceType": "Patient", "extension": [deep]}),
        json!({"resourceType": "Bundle", "type": "collection", "entry": [{"resource": {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": {"resourceType": "Patient", "birthDate": 1}}]}}]}),
        json!({"resourceType": "Parameters", "parameter": [{"name": "p", "resource": {"resourceType": "Observation"}}]}),
        json!({"resourceType": "Patient", "_birthDate": [1, 2], "_name": {}, "name": [null]}),
        json!({"resourceType": "Observation", "value[x]": 1, "valueFoo": 2, "_valueString": "x"}),
    ];
    for case in &cases {
        let result = validator().validate(case);
        assert!(result.is_err(), "{case}");
    }
}

#[test]
fn validator_can_be_shared_between_threads() {
    let p = json!({"resourceType": "Patient", "birthDate": "1970-13-01"});
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| s.spawn(|| validator().validate(&p)))
            .collect();
        let results: Vec<_> = handles
            .into_iter()
            .map(|h| h.join().expect("no panic"))
            .collect();
        assert!(results.windows(2).all(|w| w[0] == w[1]));
        assert!(results[0].is_err());
    });
}
