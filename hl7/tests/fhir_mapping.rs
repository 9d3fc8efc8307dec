//! HL7 v2 → FHIR R4 transaction Bundles (`hl7::fhir`): the shared samples
//! (`shared/testdata/hl7v2`, see INDEX.tsv) and small crafted messages for events the samples
//! lack. Every resource produced from every sample is checked with the validator the server
//! runs (`fhir_model::Validator`).

use hl7::ack::{AckCode, ErrorCode};
use hl7::fhir::{MappingConfig, MappingError, to_transaction};
use hl7::{Message, parse, split_messages};
use serde_json::Value;
use std::path::{Path, PathBuf};

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/testdata/hl7v2")
}

fn sample(file: &str) -> Message {
    let bytes = std::fs::read(data_dir().join(file)).unwrap();
    parse(&bytes).unwrap()
}

fn map(msg: &Message) -> Value {
    to_transaction(msg, &MappingConfig::default()).unwrap()
}

fn crafted(text: &str) -> Message {
    parse(text.replace('\n', "\r").as_bytes()).unwrap()
}

fn entries(b: &Value) -> &Vec<Value> {
    b["entry"].as_array().unwrap()
}

fn of_type<'a>(b: &'a Value, t: &str) -> Vec<&'a Value> {
    entries(b)
        .iter()
        .filter(|e| e["resource"]["resourceType"] == t)
        .collect()
}

fn one<'a>(b: &'a Value, t: &str) -> &'a Value {
    let v = of_type(b, t);
    assert_eq!(v.len(), 1, "expected one {t}: {b:#}");
    v[0]
}

/// Every sample the mapper supports: (file, message index in file).
fn supported_samples() -> Vec<(String, Message)> {
    let index = std::fs::read_to_string(data_dir().join("INDEX.tsv")).unwrap();
    let mut out = Vec::new();
    for line in index.lines().skip(1) {
        let c: Vec<&str> = line.split('\t').collect();
        if c.len() < 4 || c[0].contains("BadInputs") {
            continue;
        }
        let bytes = std::fs::read(data_dir().join(c[0])).unwrap();
        for m in split_messages(&bytes) {
            let Ok(msg) = parse(m) else { continue };
            let t = msg.message_type();
            let ok = match t.code.as_str() {
                "ADT" => [
                    "A01", "A02", "A03", "A04", "A05", "A08", "A11", "A12", "A13", "A28", "A31",
                    "A40",
                ]
                .contains(&t.trigger.as_str()),
                "ORU" => t.trigger == "R01",
                "ORM" => t.trigger == "O01",
                "OML" => t.trigger == "O21",
                _ => false,
            };
            // One hapi ORU has a blank PID-3: refused (MissingField PID-3), tested below.
            let no_pid3 = msg.get("PID-3").is_none_or(|v| v.trim().is_empty());
            // oru-imm has OBRs with an empty OBR-4 (codes shifted into OBR-3): refused.
            // ORU-R01-01 has an OBX before any OBR: refused (segment sequence), tested below.
            if ok && !no_pid3 && !c[0].ends_with("oru-imm.hl7") && !c[0].ends_with("ORU-R01-01.hl7")
            {
                out.push((c[0].to_owned(), msg));
            }
        }
    }
    out
}

#[test]
fn every_supported_sample_maps_to_resources_the_server_validator_accepts() {
    let validator = fhir_model::Validator::new().unwrap();
    let samples = supported_samples();
    assert!(samples.len() >= 50, "only {} samples", samples.len());
    let mut failures = Vec::new();
    for (file, msg) in &samples {
        let bundle = match to_transaction(msg, &MappingConfig::default()) {
            Ok(b) => b,
            Err(e) => {
                failures.push(format!("{file}: {e}"));
                continue;
            }
        };
        assert_eq!(bundle["type"], "transaction");
        for e in entries(&bundle) {
            let url = e["fullUrl"].as_str().unwrap();
            assert!(url.starts_with("urn:uuid:") && url.len() == 45, "{url}");
            let req = &e["request"];
            match req["method"].as_str().unwrap() {
                "PUT" => assert!(req["url"].as_str().unwrap().contains("?identifier=")),
                "POST" => assert!(
                    req["ifNoneExist"]
                        .as_str()
                        .unwrap()
                        .starts_with("identifier=")
                ),
                m => panic!("unexpected method {m}"),
            }
            if let Err(issues) = validator.validate(&e["resource"]) {
                failures.push(format!(
                    "{file}: {} {issues:?}",
                    e["resource"]["resourceType"]
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn remapping_a_message_gives_the_same_bundle() {
    for (file, msg) in supported_samples() {
        let a = to_transaction(&msg, &MappingConfig::default()).unwrap();
        let b = to_transaction(&msg, &MappingConfig::default()).unwrap();
        assert_eq!(a, b, "{file}");
    }
}

#[test]
fn no_two_entries_of_a_bundle_share_a_conditional_url() {
    for (file, msg) in supported_samples() {
        let b = map(&msg);
        let mut seen = std::collections::HashSet::new();
        for e in entries(&b) {
            let r = &e["request"];
            let key = format!(
                "{}{}",
                r["url"].as_str().unwrap(),
                r["ifNoneExist"].as_str().unwrap_or("")
            );
            assert!(seen.insert(key.clone()), "{file}: duplicate {key}");
        }
    }
}

#[test]
fn adt_a01_writes_patient_by_mrn_and_inpatient_encounter_in_progress() {
    let b = map(&sample("microsoft-fhir-converter/ADT01-23.hl7"));
    let p = one(&b, "Patient");
    assert_eq!(p["request"]["method"], "PUT");
    let url = p["request"]["url"].as_str().unwrap();
    assert!(url.starts_with("Patient?identifier="), "{url}");
    let mrn = p["resource"]["identifier"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["type"]["coding"][0]["code"] == "MR")
        .expect("an MR identifier");
    assert_eq!(
        mrn["type"]["coding"][0]["system"],
        "http://terminology.hl7.org/CodeSystem/v2-0203"
    );
    let enc = one(&b, "Encounter");
    assert_eq!(enc["resource"]["status"], "in-progress");
    assert_eq!(
        enc["resource"]["class"]["system"],
        "http://terminology.hl7.org/CodeSystem/v3-ActCode"
    );
    assert_eq!(enc["resource"]["subject"]["reference"], p["fullUrl"]);
}

const ADT_BASE: &str = "MSH|^~\\&|ADT|HOSP|EHR|HOSP|20240101120000+0100||ADT^{EV}^ADT_A01|C{EV}|P|2.5.1
EVN|{EV}|20240101120000+0100
PID|1||MRN123^^^MRN_AUTH^MR~999-88-7777^^^SSA^SS||Doe^Jane^Q^^Dr||19800229|F|||1 Main St^Apt 2^Springfield^IL^62701^USA^H||^PRN^PH^^1^217^5551234~^NET^Internet^jane@example.org
PV1|1|{CLASS}|4W^401^B^HOSP||||1234^Attend^Alice^^^^^^NPI&2.16.840.1.113883.4.6&ISO|5678^Refer^Rob|||||||||9999^Admit^Ann||V100^^^VISITS^VN|||||||||||||||||||||||||20240101103000+0100|{END}
";

fn adt(event: &str, class: &str, end: &str) -> Value {
    let text = ADT_BASE
        .replace("{EV}", event)
        .replace("{CLASS}", class)
        .replace("{END}", end);
    map(&crafted(&text))
}

fn encounter(b: &Value) -> &Value {
    &one(b, "Encounter")["resource"]
}

#[test]
fn encounter_status_follows_the_trigger_event() {
    for (ev, status) in [
        ("A01", "in-progress"),
        ("A02", "in-progress"),
        ("A03", "finished"),
        ("A04", "arrived"),
        ("A05", "planned"),
        ("A11", "cancelled"),
        ("A12", "in-progress"),
        ("A13", "in-progress"),
    ] {
        let end = if ev == "A03" || ev == "A13" {
            "20240105090000+0100"
        } else {
            ""
        };
        let b = adt(ev, "I", end);
        assert_eq!(encounter(&b)["status"], status, "{ev}");
    }
    // A08 derives the status from the visit data.
    assert_eq!(encounter(&adt("A08", "I", ""))["status"], "in-progress");
    assert_eq!(
        encounter(&adt("A08", "I", "20240105090000+0100"))["status"],
        "finished"
    );
}

#[test]
fn encounter_class_period_location_and_participants() {
    let b = adt("A03", "E", "20240105090000+0100");
    let e = encounter(&b);
    assert_eq!(e["class"]["code"], "EMER");
    assert_eq!(e["period"]["start"], "2024-01-01T10:30:00+01:00");
    assert_eq!(e["period"]["end"], "2024-01-05T09:00:00+01:00");
    assert_eq!(e["identifier"][0]["system"], "urn:mediflow:hl7:VISITS");
    assert_eq!(e["identifier"][0]["value"], "V100");
    assert_eq!(
        one(&b, "Encounter")["request"]["url"],
        "Encounter?identifier=urn:mediflow:hl7:VISITS|V100"
    );
    assert_eq!(e["location"][0]["status"], "completed");
    // Location hierarchy: ward, room, bed, created when absent.
    let locs = of_type(&b, "Location");
    assert_eq!(locs.len(), 3);
    let bed = locs.iter().find(|l| l["resource"]["name"] == "B").unwrap();
    assert_eq!(bed["request"]["method"], "POST");
    assert_eq!(
        bed["request"]["ifNoneExist"],
        "identifier=urn:mediflow:hl7:location|HOSP/4W/401/B"
    );
    assert_eq!(e["location"][0]["location"]["reference"], bed["fullUrl"]);
    assert_eq!(bed["resource"]["physicalType"]["coding"][0]["code"], "bd");
    let types: Vec<&str> = e["participant"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["type"][0]["coding"][0]["code"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["ATND", "REF", "ADM"]);
    let pract = of_type(&b, "Practitioner");
    assert_eq!(pract.len(), 3);
    assert!(
        pract
            .iter()
            .any(|p| p["resource"]["identifier"][0]["system"] == "urn:oid:2.16.840.1.113883.4.6")
    );
    assert_eq!(
        adt("A01", "O", "")["entry"].as_array().map(|_| ()),
        Some(())
    );
    assert_eq!(encounter(&adt("A01", "O", ""))["class"]["code"], "AMB");
    assert_eq!(encounter(&adt("A01", "I", ""))["class"]["code"], "IMP");
}

#[test]
fn a13_cancel_discharge_drops_the_end_of_the_period() {
    let e = adt("A13", "I", "20240105090000+0100");
    assert!(encounter(&e)["period"].get("end").is_none());
}

#[test]
fn identifier_systems_come_from_config_then_authority_then_facility() {
    let msg = crafted(
        &ADT_BASE
            .replace("{EV}", "A28")
            .replace("{CLASS}", "I")
            .replace("{END}", ""),
    );
    let b = map(&msg);
    let p = &one(&b, "Patient")["resource"];
    assert_eq!(p["identifier"][0]["system"], "urn:mediflow:hl7:MRN_AUTH");
    let mut cfg = MappingConfig::default();
    cfg.assigning_authorities
        .insert("MRN_AUTH".into(), "https://hosp.example/mrn".into());
    let b = to_transaction(&msg, &cfg).unwrap();
    let p = one(&b, "Patient");
    assert_eq!(
        p["resource"]["identifier"][0]["system"],
        "https://hosp.example/mrn"
    );
    assert_eq!(
        p["request"]["url"],
        "Patient?identifier=https://hosp.example/mrn|MRN123"
    );
    // No CX-4: the sending facility (MSH-4) decides.
    let msg = crafted("MSH|^~\\&|A|FAC1|B|C|20240101||ADT^A31|1|P|2.5\nPID|1||42^^^^MR||X^Y");
    let b = map(&msg);
    assert_eq!(
        one(&b, "Patient")["resource"]["identifier"][0]["system"],
        "urn:mediflow:hl7:FAC1"
    );
    let mut cfg = MappingConfig::default();
    cfg.facility_systems
        .insert("FAC1".into(), "https://fac1.example/id".into());
    let b = to_transaction(&msg, &cfg).unwrap();
    assert_eq!(
        one(&b, "Patient")["resource"]["identifier"][0]["system"],
        "https://fac1.example/id"
    );
    // Universal id of type ISO.
    let msg =
        crafted("MSH|^~\\&|A|FAC1|B|C|20240101||ADT^A31|1|P|2.5\nPID|1||42^^^&1.2.3.4&ISO^MR||X^Y");
    assert_eq!(
        one(&map(&msg), "Patient")["resource"]["identifier"][0]["system"],
        "urn:oid:1.2.3.4"
    );
}

#[test]
fn criteria_values_are_percent_encoded() {
    let msg = crafted(
        "MSH|^~\\&|A|FAC 1|B|C|20240101||ADT^A28|1|P|2.5\nPID|1||A\\T\\B=C#D%E+F?G H^^^^MR||X^Y",
    );
    let b = map(&msg);
    let url = one(&b, "Patient")["request"]["url"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        url,
        "Patient?identifier=urn:mediflow:hl7:FAC%25201|A%26B%3DC%23D%25E%2BF%3FG%20H"
    );
}

#[test]
fn a28_and_a31_write_the_patient_only() {
    for f in [
        "ADT-A28-01.hl7",
        "ADT-A31-01.hl7",
        "ADT-A28-02.hl7",
        "ADT-A31-02.hl7",
    ] {
        let b = map(&sample(&format!("microsoft-fhir-converter/{f}")));
        assert!(of_type(&b, "Encounter").is_empty(), "{f}");
        assert_eq!(one(&b, "Patient")["request"]["method"], "PUT");
    }
}

#[test]
fn a40_merge_links_survivor_and_prior_patient() {
    let b = map(&sample("microsoft-fhir-converter/ADT-A40-01.hl7"));
    let pats = of_type(&b, "Patient");
    assert_eq!(pats.len(), 2);
    let survivor = pats
        .iter()
        .find(|p| p["resource"]["identifier"][0]["value"] == "12345")
        .unwrap();
    let prior = pats
        .iter()
        .find(|p| p["resource"]["identifier"][0]["value"] == "56789")
        .unwrap();
    assert_eq!(prior["resource"]["active"], false);
    assert_eq!(prior["resource"]["link"][0]["type"], "replaced-by");
    assert_eq!(
        prior["resource"]["link"][0]["other"]["reference"],
        survivor["fullUrl"]
    );
    assert_eq!(survivor["resource"]["link"][0]["type"], "replaces");
    assert_eq!(
        survivor["resource"]["link"][0]["other"]["reference"],
        prior["fullUrl"]
    );
    // Two PID/MRG pairs: two merges.
    let b = map(&sample("microsoft-fhir-converter/ADT-A40-02.hl7"));
    assert_eq!(of_type(&b, "Patient").len(), 4);
}

#[test]
fn adt_allergies_diagnoses_and_insurance_are_mapped() {
    let b = map(&sample("microsoft-fhir-converter/ADT-A01-01.hl7"));
    let a = one(&b, "AllergyIntolerance");
    assert_eq!(a["resource"]["category"][0], "environment");
    assert_eq!(
        one(&b, "Condition")["resource"]["code"]["coding"][0]["system"],
        "http://snomed.info/sct"
    );
    assert_eq!(one(&b, "Coverage")["resource"]["status"], "active");
}

#[test]
fn patient_demographics_from_pid() {
    let b = adt("A01", "I", "");
    let p = &one(&b, "Patient")["resource"];
    assert_eq!(p["birthDate"], "1980-02-29");
    assert_eq!(p["gender"], "female");
    assert_eq!(p["name"][0]["family"], "Doe");
    assert_eq!(p["name"][0]["given"], serde_json::json!(["Jane", "Q"]));
    assert_eq!(p["address"][0]["city"], "Springfield");
    assert_eq!(p["address"][0]["use"], "home");
    assert_eq!(p["telecom"][0]["value"], "+1 (217) 5551234");
    assert_eq!(p["telecom"][1]["system"], "email");
    assert_eq!(p["telecom"][1]["value"], "jane@example.org");
}

#[test]
fn timestamps_keep_precision_and_offset_and_drop_unzoned_times() {
    let b = map(&crafted(
        "MSH|^~\\&|L|LAB|E|H|20240101||ORU^R01|9|P|2.5.1
PID|1||7^^^^MR||A^B
OBR|1|P1|F1|GLU^Glucose^L|||202401021230|||||||||||||||202401021300+0200||CH|F
OBX|1|TS|T^t^L||2024010212+0530||||||F|||2024
OBX|2|DT|D^d^L||202402||||||F",
    ));
    let dr = &one(&b, "DiagnosticReport")["resource"];
    assert_eq!(dr["effectiveDateTime"], "2024-01-02");
    assert_eq!(dr["issued"], "2024-01-02T13:00:00+02:00");
    let obs = of_type(&b, "Observation");
    assert_eq!(
        obs[0]["resource"]["valueDateTime"],
        "2024-01-02T12:00:00+05:30"
    );
    assert_eq!(obs[0]["resource"]["effectiveDateTime"], "2024");
    assert_eq!(obs[1]["resource"]["valueDateTime"], "2024-02");
}

#[test]
fn malformed_dates_are_data_type_errors() {
    let e = to_transaction(
        &crafted("MSH|^~\\&|A|F|B|C|20240101||ADT^A28|1|P|2.5\nPID|1||42^^^^MR||X^Y||19801340"),
        &MappingConfig::default(),
    )
    .unwrap_err();
    assert!(matches!(e, MappingError::InvalidValue { .. }), "{e:?}");
    assert_eq!(e.location(), Some("PID-7"));
    assert_eq!(e.ack_code(), AckCode::AE);
    assert_eq!(e.error_code(), ErrorCode::DataTypeError);
}

#[test]
fn oru_maps_report_observations_and_completes_the_order() {
    let b = map(&sample("microsoft-fhir-converter/LAB-ORU-1.hl7"));
    let reports = of_type(&b, "DiagnosticReport");
    assert_eq!(reports.len(), 2, "{b:#}");
    let dr = reports[0];
    assert_eq!(dr["resource"]["status"], "final");
    assert_eq!(dr["request"]["method"], "PUT");
    let dr_id = &dr["resource"]["identifier"][0];
    assert_eq!(dr_id["value"], "82503246");
    let srs = of_type(&b, "ServiceRequest");
    let sr = srs
        .iter()
        .find(|s| s["resource"]["identifier"][0]["value"] == "88502218")
        .unwrap();
    assert_eq!(sr["resource"]["status"], "completed");
    assert_eq!(sr["resource"]["intent"], "order");
    assert_eq!(
        sr["resource"]["identifier"][0]["type"]["coding"][0]["code"],
        "PLAC"
    );
    assert_eq!(
        sr["resource"]["identifier"][1]["type"]["coding"][0]["code"],
        "FILL"
    );
    assert_eq!(dr["resource"]["basedOn"][0]["reference"], sr["fullUrl"]);
    // Observations keyed <report id>-<OBX-1>, referenced as results.
    let obs: Vec<&Value> = of_type(&b, "Observation")
        .into_iter()
        .filter(|o| {
            o["resource"]["identifier"][0]["value"]
                .as_str()
                .unwrap()
                .starts_with("82503246-")
        })
        .collect();
    assert_eq!(obs.len(), 5);
    assert_eq!(obs[1]["resource"]["identifier"][0]["value"], "82503246-2");
    assert_eq!(dr["resource"]["result"].as_array().unwrap().len(), 5);
    assert_eq!(obs[1]["resource"]["status"], "preliminary");
    assert_eq!(obs[0]["resource"]["status"], "registered");
    assert_eq!(obs[4]["resource"]["status"], "final");
    assert_eq!(
        obs[1]["resource"]["valueQuantity"]["value"],
        serde_json::json!(4.06)
    );
    assert_eq!(obs[1]["resource"]["valueQuantity"]["unit"], "tera.l-1");
    assert!(obs[1]["resource"]["valueQuantity"].get("system").is_none());
    assert_eq!(
        obs[3]["resource"]["valueQuantity"]["system"],
        "http://unitsofmeasure.org"
    );
    assert_eq!(obs[3]["resource"]["valueQuantity"]["code"], "%");
    assert_eq!(
        obs[1]["resource"]["interpretation"][0]["coding"][0]["code"],
        "N"
    );
    // Specimen from SPM: both OBR groups name SPM-2 "SpecimenID", so one Specimen.
    let spm = one(&b, "Specimen");
    assert_eq!(spm["resource"]["identifier"][0]["value"], "SpecimenID");
    assert_eq!(
        spm["resource"]["collection"]["collectedDateTime"],
        "2014-10-06T05:35:00+07:00"
    );
    for r in &reports {
        assert_eq!(r["resource"]["specimen"][0]["reference"], spm["fullUrl"]);
    }
    // The patient of a result is created only when absent.
    let p = one(&b, "Patient");
    assert_eq!(p["request"]["method"], "POST");
}

#[test]
fn oru_structured_numeric_gives_quantity_and_reference_range_text() {
    let b = map(&sample("microsoft-fhir-converter/ORU-R01-RMGEAD.hl7"));
    let o = &one(&b, "Observation")["resource"];
    assert_eq!(o["valueQuantity"]["value"], serde_json::json!(182));
    assert_eq!(o["valueQuantity"]["unit"], "mg/dl");
    assert_eq!(o["referenceRange"][0]["text"], "70_105");
    assert_eq!(o["interpretation"][0]["coding"][0]["code"], "H");
    assert_eq!(
        o["interpretation"][0]["coding"][0]["system"],
        "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
    );
}

fn oru_with(obx: &str) -> Value {
    map(&crafted(&format!(
        "MSH|^~\\&|L|LAB|E|H|20240101||ORU^R01|9|P|2.5.1\nPID|1||7^^^^MR||A^B\nOBR|1|P1|F1|X^X^L||||||||||||||||||||||F\n{obx}"
    )))
}

fn obs(b: &Value) -> &Value {
    &one(b, "Observation")["resource"]
}

#[test]
fn obx_value_types_map_to_value_x() {
    let b = oru_with("OBX|1|SN|X^X^L||>=^5|mmol/L^^UCUM|3.5-5.0|H|||C");
    let o = obs(&b);
    assert_eq!(o["valueQuantity"]["comparator"], ">=");
    assert_eq!(o["valueQuantity"]["code"], "mmol/L");
    assert_eq!(
        o["referenceRange"][0]["low"]["value"],
        serde_json::json!(3.5)
    );
    assert_eq!(o["referenceRange"][0]["high"]["value"].to_string(), "5.0");
    assert_eq!(o["status"], "corrected");
    let b = oru_with("OBX|1|SN|X^X^L||^1^:^128|||||||F");
    assert_eq!(
        obs(&b)["valueRatio"]["denominator"]["value"],
        serde_json::json!(128)
    );
    let b = oru_with("OBX|1|SN|X^X^L||^2^-^4|mg||||||F");
    assert_eq!(obs(&b)["valueRange"]["high"]["value"], serde_json::json!(4));
    let b = oru_with("OBX|1|ST|X^X^L||hello \\T\\ bye|||||||F");
    assert_eq!(obs(&b)["valueString"], "hello & bye");
    let b = oru_with("OBX|1|FT|X^X^L||line1~line2|||||||F");
    assert_eq!(obs(&b)["valueString"], "line1\nline2");
    let b = oru_with("OBX|1|CWE|X^X^L||260373001^Detected^SCT|||POS|||F");
    assert_eq!(
        obs(&b)["valueCodeableConcept"]["coding"][0]["system"],
        "http://snomed.info/sct"
    );
    assert_eq!(obs(&b)["interpretation"][0]["coding"][0]["code"], "POS");
    let b = oru_with("OBX|1|ED|X^X^L||APP^IM^PNG^Base64^iVBORw0KGgo=|||||||F");
    assert_eq!(
        obs(&b)["extension"][0]["valueAttachment"]["contentType"],
        "image/png"
    );
    assert_eq!(
        obs(&b)["extension"][0]["valueAttachment"]["data"],
        "iVBORw0KGgo="
    );
    let b = oru_with("OBX|1|ED|X^X^L||APP^TEXT^PLAIN^A^Hi|||||||F");
    assert_eq!(obs(&b)["extension"][0]["valueAttachment"]["data"], "SGk=");
    let b = oru_with("OBX|1|NM|X^X^L||+007.50|mg/dL|<2|L|||X");
    let o = obs(&b);
    assert_eq!(o["valueQuantity"]["value"].to_string(), "7.50");
    assert_eq!(
        o["referenceRange"][0]["high"]["value"],
        serde_json::json!(2)
    );
    assert_eq!(o["status"], "cancelled");
    let b = oru_with("OBX|1|NM|X^X^L||12||||||D");
    assert_eq!(obs(&b)["status"], "entered-in-error");
    let b = oru_with("OBX|1|NM|X^X^L||01I|||||||F");
    assert_eq!(obs(&b)["valueString"], "01I");
    let e = to_transaction(
        &crafted("MSH|^~\\&|L|LAB|E|H|20240101||ORU^R01|9|P|2.5.1\nPID|1||7^^^^MR||A^B\nOBR|1|P1|F1|X^X^L\nOBX|1|SN|X^X^L||^abc"),
        &MappingConfig::default(),
    )
    .unwrap_err();
    assert_eq!(e.location(), Some("OBX-5"));
}

#[test]
fn nte_after_obx_becomes_observation_note() {
    let b = oru_with("OBX|1|NM|X^X^L||1|||||||F\nNTE|1||first comment\nNTE|2||second");
    let notes = obs(&b)["note"].as_array().unwrap();
    assert_eq!(notes.len(), 2);
    assert_eq!(notes[0]["text"], "first comment");
}

#[test]
fn samples_with_every_obx_type_map() {
    // ORU: CWE, NM, TX (LRI), ST/TX (linuxforhealth), SN (RMGEAD);
    // order OBX: TS (MDHHS OML 1), ST (MDHHS OML 2), ED/NM/RP/ST (OML-O21-03).
    let mut kinds = std::collections::BTreeSet::new();
    for f in [
        "microsoft-fhir-converter/LRI_2.0-NG_CBC_Typ_Message.hl7",
        "linuxforhealth-hl7v2-fhir-converter/ORU-multiline-short-mixed.hl7",
        "microsoft-fhir-converter/ORU-R01-RMGEAD.hl7",
        "microsoft-fhir-converter/MDHHS-OML-O21-1.hl7",
        "microsoft-fhir-converter/MDHHS-OML-O21-2.hl7",
        "microsoft-fhir-converter/OML-O21-03.hl7",
    ] {
        let b = map(&sample(f));
        for o in of_type(&b, "Observation") {
            for k in o["resource"].as_object().unwrap().keys() {
                if k.starts_with("value") {
                    kinds.insert(k.clone());
                }
            }
            // ED: R4 has no valueAttachment; the R5 cross-version extension carries it.
            if let Some(ext) = o["resource"]["extension"].as_array() {
                assert_eq!(
                    ext[0]["url"],
                    "http://hl7.org/fhir/5.0/StructureDefinition/extension-Observation.value"
                );
                kinds.insert("valueAttachment".into());
            }
        }
    }
    for k in [
        "valueQuantity",
        "valueString",
        "valueCodeableConcept",
        "valueDateTime",
        "valueAttachment",
    ] {
        assert!(kinds.contains(k), "{k} not produced: {kinds:?}");
    }
}

#[test]
fn without_auto_create_a_result_refers_to_the_patient_conditionally() {
    let cfg = MappingConfig {
        auto_create_patients: false,
        ..MappingConfig::default()
    };
    let b = to_transaction(&sample("microsoft-fhir-converter/LAB-ORU-1.hl7"), &cfg).unwrap();
    assert!(of_type(&b, "Patient").is_empty());
    let dr = of_type(&b, "DiagnosticReport")[0];
    assert_eq!(
        dr["resource"]["subject"]["reference"],
        "Patient?identifier=urn:mediflow:hl7:1|10006579"
    );
    for o in of_type(&b, "Observation") {
        assert_eq!(
            o["resource"]["subject"]["reference"],
            "Patient?identifier=urn:mediflow:hl7:1|10006579"
        );
    }
}

#[test]
fn orm_new_order_is_an_active_service_request() {
    let b = map(&sample("microsoft-fhir-converter/LAB-ORM-1.hl7"));
    let sr = one(&b, "ServiceRequest");
    assert_eq!(sr["resource"]["status"], "active");
    assert_eq!(sr["resource"]["intent"], "order");
    assert_eq!(
        sr["resource"]["code"]["coding"][0]["system"],
        "http://loinc.org"
    );
    assert_eq!(
        sr["request"]["url"],
        "ServiceRequest?identifier=urn:mediflow:hl7:local|88502218"
    );
    assert_eq!(sr["resource"]["authoredOn"], "2014-10-06");
    let b = map(&sample("npm-simple-hl7-3.3.0/orm.hl7"));
    let sr = one(&b, "ServiceRequest");
    assert_eq!(
        sr["request"]["url"],
        "ServiceRequest?identifier=urn:mediflow:hl7:MedCenter|20060307110114"
    );
}

#[test]
fn order_control_codes_set_service_request_status() {
    for (orc1, orc5, status) in [
        ("NW", "", "active"),
        ("CA", "", "revoked"),
        ("OC", "", "revoked"),
        ("DC", "", "revoked"),
        ("XO", "", "active"),
        ("SC", "CM", "completed"),
        ("SC", "HD", "on-hold"),
        ("HD", "", "on-hold"),
    ] {
        let b = map(&crafted(&format!(
            "MSH|^~\\&|HIS|H|LIS|L|20240101||ORM^O01|1|P|2.3\nPID|||12^^^^MR||A^B\nORC|{orc1}|P9|||{orc5}||||20240101\nOBR|1|P9||U^Urine^L"
        )));
        assert_eq!(
            one(&b, "ServiceRequest")["resource"]["status"],
            status,
            "{orc1}/{orc5}"
        );
    }
}

#[test]
fn oml_orders_with_specimens() {
    let b = map(&sample("microsoft-fhir-converter/OML-O21-01.hl7"));
    assert!(!of_type(&b, "ServiceRequest").is_empty());
    let b = map(&sample("microsoft-fhir-converter/OML-O21-03.hl7"));
    assert!(!of_type(&b, "Specimen").is_empty(), "{b:#}");
    for s in of_type(&b, "ServiceRequest") {
        assert_eq!(s["resource"]["intent"], "order");
    }
}

#[test]
fn unsupported_messages_are_rejected_with_ar() {
    let e = to_transaction(
        &sample("microsoft-fhir-converter/MDM-T02-01.hl7"),
        &MappingConfig::default(),
    )
    .unwrap_err();
    assert!(matches!(e, MappingError::UnsupportedMessageType { .. }));
    assert_eq!(e.ack_code(), AckCode::AR);
    assert_eq!(e.error_code().code(), 200);
    let e = to_transaction(
        &sample("microsoft-fhir-converter/ADT-A06-01.hl7"),
        &MappingConfig::default(),
    )
    .unwrap_err();
    assert!(matches!(e, MappingError::UnsupportedEvent { .. }));
    assert_eq!(e.ack_code(), AckCode::AR);
    assert_eq!(e.error_code().code(), 201);
}

#[test]
fn missing_pid_3_is_a_required_field_error() {
    let e = to_transaction(
        &crafted("MSH|^~\\&|A|F|B|C|20240101||ADT^A01|1|P|2.5\nPID|1||||X^Y\nPV1|1|I"),
        &MappingConfig::default(),
    )
    .unwrap_err();
    assert!(matches!(&e, MappingError::MissingField { location, .. } if location == "PID-3"));
    assert_eq!(e.location(), Some("PID-3"));
    assert_eq!(e.ack_code(), AckCode::AE);
    assert_eq!(e.error_code().code(), 101);
}

#[test]
fn odd_input_never_panics() {
    let dir = data_dir().join("nhapi/BadInputs");
    let mut stack = vec![dir];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(msg) = parse(&std::fs::read(&p).unwrap()) {
                let _ = to_transaction(&msg, &MappingConfig::default());
            }
        }
    }
    for text in [
        "MSH|^~\\&|A|F|B|C|20240101||ORU^R01|1|P|2.5\nPID|1||1^^^^MR\nOBR\nOBX|1|NM",
        "MSH|^~\\&|A|F|B|C|20240101||ORU^R01|1|P|2.5\nPID|1||1\nOBX|1|SN|X||<>^^^",
        "MSH|^~\\&|A|F|B|C|20240101||ADT^A40|1|P|2.5\nPID|1||1",
        "MSH|^~\\&|A|F|B|C|20240101||ORM^O01|1|P|2.5\nORC|NW",
        "MSH|^~\\&|A|F|B|C|20240101||ADT|1|P|2.5\nPID|1||1",
    ] {
        let _ = to_transaction(&crafted(text), &MappingConfig::default());
    }
}

#[test]
fn sample_with_blank_pid_3_is_refused() {
    let bytes = std::fs::read(data_dir().join("hapi-hl7v2/example_oml_o21.hl7")).unwrap();
    let oru = split_messages(&bytes)
        .into_iter()
        .filter_map(|m| parse(m).ok())
        .find(|m| m.control_id() == "LAB562901")
        .unwrap();
    let e = to_transaction(&oru, &MappingConfig::default()).unwrap_err();
    assert_eq!(e.location(), Some("PID-3"));
}

#[test]
fn result_without_obr_4_is_refused() {
    let e = to_transaction(
        &sample("npm-simple-hl7-3.3.0/oru-imm.hl7"),
        &MappingConfig::default(),
    )
    .unwrap_err();
    assert_eq!(e.location(), Some("OBR-4"));
    assert_eq!(e.error_code(), ErrorCode::RequiredFieldMissing);
}

#[test]
fn result_without_order_numbers_is_keyed_on_the_control_id() {
    let b = map(&crafted(
        "MSH|^~\\&|L|LAB|E|H|20240101||ORU^R01|CTL7|P|2.5.1\nPID|1||7^^^^MR||A^B\nOBR|1|||X^X^L\nOBX|1|CE|Y^Y^L||A^a^HL70136|||||||F\nOBX|1|NM|Z^Z^L||3|||||||F",
    ));
    let dr = one(&b, "DiagnosticReport");
    assert_eq!(
        dr["request"]["url"],
        "DiagnosticReport?identifier=urn:mediflow:hl7:LAB|CTL7-OBR1"
    );
    let ids: Vec<&str> = of_type(&b, "Observation")
        .iter()
        .map(|o| o["resource"]["identifier"][0]["value"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["CTL7-OBR1-1", "CTL7-OBR1-1-2"]);
    assert!(of_type(&b, "ServiceRequest").is_empty());
    let o = of_type(&b, "Observation")[0];
    assert_eq!(
        o["resource"]["valueCodeableConcept"]["coding"][0]["system"],
        "http://terminology.hl7.org/CodeSystem/v2-0136"
    );
}

#[test]
fn result_before_any_order_is_a_segment_sequence_error() {
    // ORU-R01-01 carries an OBX (ED) before its first OBR: dropping it silently would lose
    // a result, so the message is refused (AE, ERR-3 100).
    let msg = sample("microsoft-fhir-converter/ORU-R01-01.hl7");
    let err = to_transaction(&msg, &MappingConfig::default()).unwrap_err();
    assert_eq!(err.ack_code(), hl7::ack::AckCode::AE);
    assert_eq!(err.error_code(), hl7::ack::ErrorCode::SegmentSequenceError);
}

// ---------------------------------------------------------------------------------------
// PR1, GT1, ROL/PRT, TQ1, PV1 in orders and results, PID-10/22 (issue 4).

fn find<'a>(b: &'a Value, t: &str, pred: impl Fn(&Value) -> bool) -> &'a Value {
    of_type(b, t)
        .into_iter()
        .find(|e| pred(&e["resource"]))
        .unwrap_or_else(|| panic!("no matching {t}: {b:#}"))
}

fn has_identifier(r: &Value, value: &str) -> bool {
    r["identifier"]
        .as_array()
        .is_some_and(|ids| ids.iter().any(|i| i["value"] == value))
}

#[test]
fn pr1_becomes_a_procedure_of_the_patient_and_encounter() {
    // IG PR1[Procedure]: PR1-3 → code (PR1-4 → code.text as PR1-3.9 is empty), PR1-5 +
    // PR1-7 minutes → performedPeriod, PR1-6 → category, PR1-8 → performer (function SNOMED
    // 88189002), PR1-11 → performer (304292004), PR1-12 → performer, PR1-15 → reasonCode,
    // PR1-19 → identifier; message map ADT_A01 PROCEDURE: Procedure.subject = Patient.
    let b = map(&sample("microsoft-fhir-converter/ADT-A01-01.hl7"));
    let e = one(&b, "Procedure");
    let p = &e["resource"];
    assert_eq!(e["request"]["method"], "PUT");
    assert_eq!(
        e["request"]["url"],
        "Procedure?identifier=urn:mediflow:hl7:GHHSFacility|PR1006"
    );
    assert_eq!(p["status"], "completed");
    assert_eq!(p["code"]["coding"][0]["system"], "http://snomed.info/sct");
    assert_eq!(p["code"]["coding"][0]["code"], "76164006");
    assert_eq!(
        p["code"]["text"],
        "Biopsy of colon, which was part of colonoscopy"
    );
    assert_eq!(p["performedPeriod"]["start"], "2005-01-25T11:40:00+01:00");
    assert_eq!(p["performedPeriod"]["end"], "2005-01-25T11:42:00+01:00");
    assert_eq!(p["category"]["coding"][0]["code"], "D");
    assert_eq!(p["reasonCode"][0]["coding"][0]["code"], "799008");
    assert_eq!(p["subject"]["reference"], one(&b, "Patient")["fullUrl"]);
    assert_eq!(p["encounter"]["reference"], one(&b, "Encounter")["fullUrl"]);
    // Performers: anesthesiologist, surgeon, procedure practitioner, then the ROL of the
    // PROCEDURE group (ROL-3 → function, ROL-4 → actor).
    let performers = p["performer"].as_array().unwrap();
    let functions: Vec<&str> = performers
        .iter()
        .map(|f| f["function"]["coding"][0]["code"].as_str().unwrap_or("-"))
        .collect();
    assert_eq!(functions, ["88189002", "304292004", "-", "PP"]);
    let surgeon = find(&b, "Practitioner", |r| has_identifier(r, "121188"));
    assert_eq!(performers[1]["actor"]["reference"], surgeon["fullUrl"]);
    let rol_person = find(&b, "Practitioner", |r| has_identifier(r, "121"));
    assert_eq!(performers[3]["actor"]["reference"], rol_person["fullUrl"]);
    // PR1-23 → location (PL[Location]).
    let loc = p["location"]["reference"].as_str().unwrap();
    assert!(of_type(&b, "Location").iter().any(|l| l["fullUrl"] == loc));
}

#[test]
fn pr1_status_and_time_follow_the_message_context() {
    // IG PR1[Procedure] status: "depends on the message context"; A05 pre-admit → preparation.
    let b = map(&sample("microsoft-fhir-converter/ADT-A05-01.hl7"));
    assert_eq!(one(&b, "Procedure")["resource"]["status"], "preparation");
    // No PR1-7 → performedDateTime; no PR1-19 → keyed <MRN>-procedure-<PR1-3.1>-<PR1-5>;
    // PR1-5 without offset keeps the date only; no PR1-5 → status unknown.
    let b = map(&crafted(
        "MSH|^~\\&|ADT|HOSP|EHR|HOSP|20240101||ADT^A08|P1|P|2.5.1
PID|1||MRN9^^^^MR||Doe^Jo
PV1|1|I|||||||||||||||||V9^^^^VN
PR1|1||0DTJ4ZZ^Resection^I10P||20240102101500
PR1|2||||",
    ));
    let p = one(&b, "Procedure");
    assert_eq!(
        p["request"]["url"],
        "Procedure?identifier=urn:mediflow:hl7:HOSP|MRN9-procedure-0DTJ4ZZ-20240102101500"
    );
    assert_eq!(p["resource"]["performedDateTime"], "2024-01-02");
    assert_eq!(p["resource"]["status"], "completed");
    let b = map(&crafted(
        "MSH|^~\\&|ADT|HOSP|EHR|HOSP|20240101||ADT^A08|P1|P|2.5.1
PID|1||MRN9^^^^MR||Doe^Jo
PR1|1||X1^Thing^L",
    ));
    assert_eq!(one(&b, "Procedure")["resource"]["status"], "unknown");
}

#[test]
fn gt1_becomes_a_related_person_of_the_patient() {
    // GT1 (no IG segment map; written like NK1[RelatedPerson]): GT1-3 → name, GT1-5 →
    // address, GT1-6/7 → telecom, GT1-8 → birthDate, GT1-9 → gender, GT1-11 → relationship
    // (table 0063), GT1-2 → identifier, RelatedPerson.patient = Patient.
    let b = map(&sample("microsoft-fhir-converter/ADT-A04-01.hl7"));
    let g = find(&b, "RelatedPerson", |r| r["name"][0]["family"] == "RADIANT");
    let r = &g["resource"];
    assert_eq!(g["request"]["method"], "PUT");
    assert_eq!(r["patient"]["reference"], one(&b, "Patient")["fullUrl"]);
    assert_eq!(r["name"][0]["given"][0], "LUCY");
    assert_eq!(r["address"][0]["city"], "MADISON");
    assert_eq!(
        r["relationship"][0]["coding"][0]["system"],
        "http://terminology.hl7.org/CodeSystem/v2-0063"
    );
    assert_eq!(r["relationship"][0]["coding"][0]["code"], "BRO");
    assert_eq!(r["birthDate"], "2001-04-12");
    assert_eq!(r["gender"], "male");
    assert!(has_identifier(r, "1516"));
    assert!(!r["telecom"].as_array().unwrap().is_empty());
}

#[test]
fn self_guarantor_is_the_patient_and_in1_links_payor_and_subscriber() {
    // ADT-A01-01: GT1-11 SEL (the patient is the guarantor) → no RelatedPerson for the
    // guarantor. IN1[Coverage]: IN1-3/IN1-4 → payor(Organization); IN1-17 SPO (not the
    // patient) → IN1-16 → subscriber(RelatedPerson).
    let b = map(&sample("microsoft-fhir-converter/ADT-A01-01.hl7"));
    let people = of_type(&b, "RelatedPerson");
    assert_eq!(people.len(), 1, "{b:#}");
    let insured = &people[0];
    assert_eq!(insured["resource"]["name"][0]["family"], "Doe");
    assert_eq!(
        insured["resource"]["relationship"][0]["coding"][0]["code"],
        "SPO"
    );
    assert_eq!(insured["resource"]["birthDate"], "1975-02-28");
    let cov = &one(&b, "Coverage")["resource"];
    assert_eq!(cov["subscriber"]["reference"], insured["fullUrl"]);
    assert_eq!(
        cov["beneficiary"]["reference"],
        one(&b, "Patient")["fullUrl"]
    );
    let org = one(&b, "Organization");
    assert_eq!(org["request"]["method"], "POST");
    assert_eq!(
        org["request"]["ifNoneExist"],
        "identifier=urn:oid:2.16.840.1.113883.1.1|IC-1.31"
    );
    assert_eq!(org["resource"]["name"], "Blue Cross Blue Shield of Texas");
    assert_eq!(cov["payor"][0]["reference"], org["fullUrl"]);
    assert_eq!(
        cov["payor"][0]["display"],
        "Blue Cross Blue Shield of Texas"
    );
}

#[test]
fn guarantor_who_is_the_insured_is_one_related_person() {
    // GT1 and IN1-16 naming the same person → one RelatedPerson (matched on the patient and
    // the name), referenced as the Coverage subscriber; IN1-17 SEL → subscriber = Patient.
    let text = "MSH|^~\\&|ADT|HOSP|EHR|HOSP|20240101||ADT^A04|G1|P|2.5.1
PID|1||MRN7^^^^MR||Roe^Ann
PV1|1|O|||||||||||||||||V7^^^^VN
GT1|1|G77|Roe^Bob||1 Elm St^^Town^ST^11111||||M||SPO
IN1|1|PLAN1|INS1^^^INSURERS|Acme Health||||||||||||Roe^Bob|SPO^Spouse|19700101";
    let b = map(&crafted(text));
    let people = of_type(&b, "RelatedPerson");
    assert_eq!(people.len(), 1, "{b:#}");
    assert!(has_identifier(&people[0]["resource"], "G77"));
    assert_eq!(
        one(&b, "Coverage")["resource"]["subscriber"]["reference"],
        people[0]["fullUrl"]
    );
    let b = map(&crafted(&text.replace("SPO^Spouse", "SEL^Self")));
    assert_eq!(
        one(&b, "Coverage")["resource"]["subscriber"]["reference"],
        one(&b, "Patient")["fullUrl"]
    );
}

#[test]
fn rol_after_pid_is_the_general_practitioner_and_after_pv1_an_encounter_participant() {
    // ADT_A01 message map: ROL following PID with ROL-3 PP/HL70443 →
    // ROL[Patient-GeneralPractitioner] (ROL-4 → generalPractitioner); ROL following PV1 →
    // ROL[Encounter-PractitionerRole] (ROL-3 → participant.type, ROL-4 → individual,
    // ROL-5/6 → period).
    let b = map(&sample("microsoft-fhir-converter/ADT-A01-01.hl7"));
    let smith = find(&b, "Practitioner", |r| has_identifier(r, "12377H87"));
    let p = &one(&b, "Patient")["resource"];
    assert!(
        p["generalPractitioner"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["reference"] == smith["fullUrl"]),
        "{p:#}"
    );
    let enc = encounter(&b);
    let part = enc["participant"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["individual"]["reference"] == smith["fullUrl"])
        .expect("a ROL participant");
    assert_eq!(part["type"][0]["coding"][0]["code"], "PP");
    assert_eq!(
        part["type"][0]["coding"][0]["system"],
        "http://terminology.hl7.org/CodeSystem/v2-0443"
    );
    assert_eq!(part["period"]["start"], "2022-01-01");
    assert_eq!(part["period"]["end"], "2022-02-02");
    // PRT works the same way (PRT-4 role, PRT-5 person); a deleted role (action DE) is not.
    let b = map(&crafted(
        "MSH|^~\\&|ADT|HOSP|EHR|HOSP|20240101||ADT^A01|R1|P|2.8
PID|1||MRN5^^^^MR||Poe^Al
PRT|1|AD||PP^Primary Care Provider^HL70443|55^Gee^Pat
PV1|1|I|||||||||||||||||V5^^^^VN
PRT|1|AD||AT^Attending^HL70443|66^Aye^Bee
ROL|2|DE|CP^Consulting^HL70443|77^Zed^Cee",
    ));
    let gp = find(&b, "Practitioner", |r| has_identifier(r, "55"));
    assert_eq!(
        one(&b, "Patient")["resource"]["generalPractitioner"][0]["reference"],
        gp["fullUrl"]
    );
    let parts = encounter(&b)["participant"].as_array().unwrap().clone();
    assert_eq!(parts.len(), 1, "{parts:#?}");
    assert_eq!(parts[0]["type"][0]["coding"][0]["code"], "AT");
    assert!(of_type(&b, "Practitioner").len() == 2);
}

#[test]
fn tq1_sets_service_request_priority_and_occurrence() {
    // IG TQ1[ServiceRequest]: TQ1-7/8 → occurrenceTiming.repeat.boundsPeriod, TQ1-9 →
    // priority (ConceptMap table-hl70485-to-request-priority: R → routine, S → stat),
    // TQ1-11 → note.
    let b = map(&sample("microsoft-fhir-converter/OML-O21-01.hl7"));
    let sr = &one(&b, "ServiceRequest")["resource"];
    assert_eq!(sr["priority"], "routine");
    assert!(
        sr["note"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["text"] == "Fasting Sugar"),
        "{sr:#}"
    );
    let b = map(&crafted(
        "MSH|^~\\&|HIS|H|LIS|L|20240101||ORM^O01|T1|P|2.5.1
PID|||12^^^^MR||A^B
ORC|NW|P77
TQ1|1||||||202401051000+0100|202401061000+0100|S
OBR|1|P77||U^Urine^L",
    ));
    let sr = &one(&b, "ServiceRequest")["resource"];
    assert_eq!(sr["priority"], "stat");
    assert_eq!(
        sr["occurrenceTiming"]["repeat"]["boundsPeriod"]["start"],
        "2024-01-05T10:00:00+01:00"
    );
    assert_eq!(
        sr["occurrenceTiming"]["repeat"]["boundsPeriod"]["end"],
        "2024-01-06T10:00:00+01:00"
    );
}

#[test]
fn pv1_of_a_result_is_the_encounter_of_report_observations_and_order() {
    // ORU_R01 PATIENT_RESULT.PATIENT.VISIT.PV1 → PV1[Encounter]; created only when absent
    // (the ADT feed owns the visit), matched on PV1-19.
    let b = map(&sample(
        "linuxforhealth-hl7v2-fhir-converter/ORU-multiline-short.hl7",
    ));
    let enc = one(&b, "Encounter");
    assert_eq!(enc["request"]["method"], "POST");
    assert_eq!(
        enc["request"]["ifNoneExist"],
        "identifier=urn:mediflow:hl7:IBM_Toronto_Lab|Visit_0d70c6c8"
    );
    let url = &enc["fullUrl"];
    assert_eq!(
        one(&b, "DiagnosticReport")["resource"]["encounter"]["reference"],
        *url
    );
    assert_eq!(
        one(&b, "ServiceRequest")["resource"]["encounter"]["reference"],
        *url
    );
    for o in of_type(&b, "Observation") {
        assert_eq!(o["resource"]["encounter"]["reference"], *url);
    }
}

#[test]
fn an_order_refers_to_the_adt_encounter_and_never_writes_a_second_one() {
    // Same PV1-19 in ADT and ORM: the same conditional criteria and fullUrl, so the order
    // finds the visit the ADT wrote (IG ORM_O01 PATIENT_VISIT.PV1 → PV1[Encounter]).
    let adt_b = adt("A01", "I", "");
    let adt_enc = one(&adt_b, "Encounter");
    let b = map(&crafted(
        "MSH|^~\\&|HIS|HOSP|LIS|L|20240101||ORM^O01|E1|P|2.5.1
PID|1||MRN123^^^MRN_AUTH^MR||Doe^Jane
PV1|1|I|4W^401^B^HOSP||||||||||||||||V100^^^VISITS^VN
ORC|NW|P88
OBR|1|P88||U^Urine^L",
    ));
    let enc = one(&b, "Encounter");
    assert_eq!(enc["request"]["method"], "POST");
    assert_eq!(
        format!(
            "Encounter?{}",
            enc["request"]["ifNoneExist"].as_str().unwrap()
        ),
        adt_enc["request"]["url"].as_str().unwrap()
    );
    assert_eq!(enc["fullUrl"], adt_enc["fullUrl"]);
    assert_eq!(
        one(&b, "ServiceRequest")["resource"]["encounter"]["reference"],
        enc["fullUrl"]
    );
    // OML_O21: only the patient's visit; the PV1s of PRIOR_RESULT groups are not mapped.
    let b = map(&sample("microsoft-fhir-converter/OML-O21-03.hl7"));
    let enc = one(&b, "Encounter");
    assert!(has_identifier(&enc["resource"], "5001"));
}

#[test]
fn pid_10_and_22_become_us_core_race_and_ethnicity() {
    // PID[Patient]: PID-10/PID-22 → the realm's extension (US Core race / ethnicity):
    // ombCategory for OMB codes of CDCREC (or HL70005 / HL70189), text always.
    let b = map(&sample("microsoft-fhir-converter/ADT-A01-01.hl7"));
    let p = &one(&b, "Patient")["resource"];
    let ext = p["extension"].as_array().unwrap();
    let race = ext
        .iter()
        .find(|e| e["url"] == "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race")
        .unwrap();
    let omb: Vec<&str> = race["extension"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["url"] == "ombCategory")
        .map(|e| {
            assert_eq!(
                e["valueCoding"]["system"],
                "urn:oid:2.16.840.1.113883.6.238"
            );
            e["valueCoding"]["code"].as_str().unwrap()
        })
        .collect();
    assert_eq!(omb, ["2106-3", "2028-9"]);
    assert_eq!(race["extension"][2]["url"], "text");
    assert_eq!(race["extension"][2]["valueString"], "White, Asian");
    let eth = ext
        .iter()
        .find(|e| e["url"] == "http://hl7.org/fhir/us/core/StructureDefinition/us-core-ethnicity")
        .unwrap();
    assert_eq!(eth["extension"][0]["url"], "ombCategory");
    assert_eq!(eth["extension"][0]["valueCoding"]["code"], "2186-5");
    assert_eq!(eth["extension"][1]["valueString"], "NOT HISPANIC OR LATINO");
}

#[test]
fn race_outside_the_cdc_code_system_keeps_only_its_text() {
    // PID-10 "Caucasian" without a coding system: the US Core race extension with text only.
    let b = map(&sample(
        "linuxforhealth-hl7v2-fhir-converter/ORU-multiline-short.hl7",
    ));
    let p = &one(&b, "Patient")["resource"];
    assert_eq!(
        p["extension"],
        serde_json::json!([{
            "url": "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race",
            "extension": [{"url": "text", "valueString": "Caucasian"}],
        }])
    );
    // A non-OMB CDCREC code is "detailed"; HL70189 H is the OMB category 2135-2.
    let b = map(&crafted(
        "MSH|^~\\&|A|F|B|C|20240101||ADT^A28|1|P|2.5.1
PID|1||42^^^^MR||X^Y|||F||2034-7^Chinese^CDCREC||||||||||||H^Hispanic^HL70189",
    ));
    let ext = &one(&b, "Patient")["resource"]["extension"];
    assert_eq!(ext[0]["extension"][0]["url"], "detailed");
    assert_eq!(ext[0]["extension"][0]["valueCoding"]["code"], "2034-7");
    assert_eq!(ext[0]["extension"][1]["valueString"], "Chinese");
    assert_eq!(ext[1]["extension"][0]["valueCoding"]["code"], "2135-2");
    assert_eq!(ext[1]["extension"][1]["valueString"], "Hispanic");
}

#[test]
fn guarantor_or_insured_with_the_patients_name_is_the_patient() {
    // ADT01-23: GT1-3 and IN1-16 are the patient's own name (with local relationship code
    // "1"): no RelatedPerson; IN1[Coverage] IN1-16/17 → subscriber(Patient).
    let b = map(&sample("microsoft-fhir-converter/ADT01-23.hl7"));
    assert!(of_type(&b, "RelatedPerson").is_empty(), "{b:#}");
    let patient = &one(&b, "Patient")["fullUrl"];
    let covs = of_type(&b, "Coverage");
    assert!(
        covs.iter()
            .any(|c| c["resource"]["subscriber"]["reference"] == *patient)
    );
}
