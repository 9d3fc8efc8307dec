//! Behaviour of `Validator::validate` on hand-written resources.

mod common;

use common::{find, issues, validator};
use fhir_model::validation::{IssueCode, Severity, operation_outcome};
use serde_json::{Value, json};

fn patient() -> Value {
    json!({
        "resourceType": "Patient",
        "id": "p1",
        "name": [{"family": "Chalmers", "given": ["Peter", "James"]}],
        "gender": "male",
        "birthDate": "1974-12-25"
    })
}

fn observation() -> Value {
    json!({
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
        "subject": {"reference": "Patient/p1"},
        "valueQuantity": {"value": 67.5, "unit": "kg"}
    })
}

#[test]
fn valid_patient_and_observation_pass() {
    assert_eq!(validator().validate(&patient()), Ok(()));
    assert_eq!(validator().validate(&observation()), Ok(()));
}

#[test]
fn unknown_element_reports_its_path() {
    let mut p = patient();
    p["foo"] = json!(1);
    p["name"][0]["nickname"] = json!("Pete");
    let found = issues(&p);
    let top = find(&found, IssueCode::Structure, "Patient.foo");
    assert_eq!(top.diagnostics, "Unknown element 'foo'");
    assert_eq!(top.severity, Severity::Error);
    let nested = find(&found, IssueCode::Structure, "Patient.name[0].nickname");
    assert_eq!(nested.diagnostics, "Unknown element 'nickname'");
    assert_eq!(found.len(), 2, "{found:#?}");
}

#[test]
fn wrong_primitive_type_reports_path() {
    let mut p = patient();
    p["name"][0]["given"][1] = json!(5);
    p["active"] = json!("yes");
    let found = issues(&p);
    let given = find(&found, IssueCode::Structure, "Patient.name[0].given[1]");
    assert!(
        given.diagnostics.contains("not a valid string"),
        "{given:?}"
    );
    let active = find(&found, IssueCode::Structure, "Patient.active");
    assert!(active.diagnostics.contains("boolean"), "{active:?}");
}

#[test]
fn single_value_where_array_expected_is_rejected() {
    let mut p = patient();
    p["name"] = json!({"family": "Chalmers"});
    p["birthDate"] = json!(["1974-12-25"]);
    let found = issues(&p);
    let name = find(&found, IssueCode::Structure, "Patient.name");
    assert!(
        name.diagnostics.contains("must be a JSON array"),
        "{name:?}"
    );
    let bd = find(&found, IssueCode::Structure, "Patient.birthDate");
    assert!(
        bd.diagnostics.contains("must not be a JSON array"),
        "{bd:?}"
    );
}

#[test]
fn complex_value_that_is_not_an_object_is_rejected() {
    let mut p = patient();
    p["name"] = json!(["Peter Chalmers"]);
    p["maritalStatus"] = json!("M");
    let found = issues(&p);
    find(&found, IssueCode::Structure, "Patient.name[0]");
    find(&found, IssueCode::Structure, "Patient.maritalStatus");
}

#[test]
fn malformed_birth_date_is_rejected() {
    for bad in ["1970-13-01", "25/12/1974", "1974-12-25T10:00:00Z", ""] {
        let mut p = patient();
        p["birthDate"] = json!(bad);
        let found = issues(&p);
        let issue = find(&found, IssueCode::Value, "Patient.birthDate");
        assert!(issue.diagnostics.contains(&format!("'{bad}'")), "{issue:?}");
    }
}

#[test]
fn calendar_invalid_date_is_rejected() {
    let mut p = patient();
    p["birthDate"] = json!("2021-02-29");
    let found = issues(&p);
    let issue = find(&found, IssueCode::Value, "Patient.birthDate");
    assert!(issue.diagnostics.contains("'2021-02-29'"), "{issue:?}");
    p["birthDate"] = json!("2020-02-29");
    assert_eq!(validator().validate(&p), Ok(()));
}

#[test]
fn malformed_id_and_instant_are_rejected() {
    let mut p = patient();
    p["id"] = json!("has space");
    p["meta"] = json!({"lastUpdated": "2020-01-01"});
    let found = issues(&p);
    let id = find(&found, IssueCode::Value, "Patient.id");
    assert!(
        id.diagnostics.contains("'has space'") && id.diagnostics.contains(" id"),
        "{id:?}"
    );
    let lu = find(&found, IssueCode::Value, "Patient.meta.lastUpdated");
    assert!(lu.diagnostics.contains("instant"), "{lu:?}");
}

#[test]
fn date_time_without_zone_is_rejected() {
    let mut o = observation();
    o["effectiveDateTime"] = json!("2020-01-02T10:00:00");
    let found = issues(&o);
    find(&found, IssueCode::Value, "Observation.effectiveDateTime");
    o["effectiveDateTime"] = json!("2020-01-02T10:00:00.123+01:00");
    assert_eq!(validator().validate(&o), Ok(()));
}

#[test]
fn code_outside_required_binding_is_rejected() {
    let mut o = observation();
    o["status"] = json!("done");
    let found = issues(&o);
    let issue = find(&found, IssueCode::Value, "Observation.status");
    assert!(issue.diagnostics.contains("'done'") && issue.diagnostics.contains("'final'"));
}

#[test]
fn missing_required_observation_status_is_rejected() {
    let mut o = observation();
    o.as_object_mut().unwrap().remove("status");
    let found = issues(&o);
    let issue = find(&found, IssueCode::Required, "Observation.status");
    assert!(issue.diagnostics.contains("'status'"), "{issue:?}");
    assert_eq!(found.len(), 1, "{found:#?}");
}

#[test]
fn missing_required_observation_code_is_reported_once() {
    let mut o = observation();
    o.as_object_mut().unwrap().remove("code");
    let found = issues(&o);
    find(&found, IssueCode::Required, "Observation.code");
    assert_eq!(found.len(), 1, "{found:#?}");
}

#[test]
fn missing_required_bundle_type_is_rejected() {
    let found = issues(&json!({"resourceType": "Bundle"}));
    find(&found, IssueCode::Required, "Bundle.type");
}

#[test]
fn primitive_extension_satisfies_required_element() {
    let mut o = observation();
    o.as_object_mut().unwrap().remove("status");
    o["_status"] = json!({"extension": [{
        "url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason",
        "valueCode": "unknown"
    }]});
    assert_eq!(validator().validate(&o), Ok(()));
}

#[test]
fn missing_required_element_inside_backbone_is_rejected() {
    let mut o = observation();
    o["component"] = json!([{"valueString": "x"}]);
    let found = issues(&o);
    find(&found, IssueCode::Required, "Observation.component[0].code");
    let mut p = patient();
    p["link"] = json!([{"type": "seealso"}]);
    let found = issues(&p);
    find(&found, IssueCode::Required, "Patient.link[0].other");
}

#[test]
fn missing_extension_url_is_rejected() {
    let mut p = patient();
    p["extension"] = json!([{"valueString": "x"}]);
    let found = issues(&p);
    find(&found, IssueCode::Required, "Patient.extension[0].url");
}

#[test]
fn two_value_choices_are_rejected() {
    let mut o = observation();
    o["valueString"] = json!("heavy");
    let found = issues(&o);
    let issue = find(&found, IssueCode::Structure, "Observation.value[x]");
    assert!(
        issue.diagnostics.contains("'valueQuantity'")
            && issue.diagnostics.contains("'valueString'"),
        "{issue:?}"
    );
    assert_eq!(found.len(), 1, "{found:#?}");
}

#[test]
fn two_choices_in_an_extension_are_rejected() {
    let mut p = patient();
    p["extension"] =
        json!([{"url": "http://example.org/x", "valueString": "a", "valueBoolean": true}]);
    let found = issues(&p);
    find(
        &found,
        IssueCode::Structure,
        "Patient.extension[0].value[x]",
    );
}

#[test]
fn unknown_resource_type_is_not_supported() {
    for rt in [
        json!("Foo"),
        json!("Resource"),
        json!("DomainResource"),
        json!("patient"),
        json!(3),
    ] {
        let found = issues(&json!({"resourceType": rt, "id": "x"}));
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_eq!(found[0].code, IssueCode::NotSupported);
    }
}

#[test]
fn missing_resource_type_and_non_objects_are_rejected() {
    let found = issues(&json!({"id": "x"}));
    assert_eq!(found[0].code, IssueCode::Required);
    for v in [json!(null), json!([]), json!("Patient"), json!(1.5)] {
        let found = issues(&v);
        assert_eq!(found[0].code, IssueCode::Structure);
        assert!(found[0].expression.is_empty());
    }
}

#[test]
fn integer_range_and_fraction_are_checked() {
    let imm = |dose: Value| {
        json!({
            "resourceType": "ImmunizationRecommendation",
            "patient": {"reference": "Patient/p1"},
            "date": "2020-01-01",
            "recommendation": [{
                "vaccineCode": [{"text": "x"}],
                "forecastStatus": {"text": "due"},
                "doseNumberPositiveInt": dose
            }]
        })
    };
    assert_eq!(validator().validate(&imm(json!(2))), Ok(()));
    for bad in [json!(0), json!(1.5), json!(3_000_000_000u64)] {
        let found = issues(&imm(bad));
        find(
            &found,
            IssueCode::Value,
            "ImmunizationRecommendation.recommendation[0].doseNumberPositiveInt",
        );
    }
}

#[test]
fn empty_arrays_and_objects_are_rejected() {
    let mut p = patient();
    p["identifier"] = json!([]);
    p["maritalStatus"] = json!({});
    let found = issues(&p);
    find(&found, IssueCode::Structure, "Patient.identifier");
    find(&found, IssueCode::Invariant, "Patient.maritalStatus");
}

#[test]
fn contained_resource_errors_report_nested_paths() {
    let mut p = patient();
    p["contained"] = json!([
        {"resourceType": "Organization", "id": "o1", "name": "Acme"},
        {"resourceType": "Observation", "id": "o2", "code": {"text": "x"}, "bogus": true}
    ]);
    let found = issues(&p);
    find(&found, IssueCode::Structure, "Patient.contained[1].bogus");
    find(&found, IssueCode::Required, "Patient.contained[1].status");
    assert_eq!(found.len(), 2, "{found:#?}");
}

#[test]
fn nested_contained_resources_violate_dom_2() {
    let mut p = patient();
    p["contained"] = json!([{
        "resourceType": "Organization", "id": "o1",
        "contained": [{"resourceType": "Organization", "id": "o2"}]
    }]);
    let found = issues(&p);
    find(
        &found,
        IssueCode::Invariant,
        "Patient.contained[0].contained",
    );
}

#[test]
fn bundle_entry_errors_report_nested_paths() {
    let mut o = observation();
    o["status"] = json!("bogus-status");
    let bundle = json!({
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"fullUrl": "urn:uuid:1", "resource": patient(), "request": {"method": "POST", "url": "Patient"}},
            {"fullUrl": "urn:uuid:2", "resource": o, "request": {"method": "POST", "url": "Observation"}},
            {"resource": {"resourceType": "Nope"}},
            {"resource": "not an object"}
        ]
    });
    let found = issues(&bundle);
    find(&found, IssueCode::Value, "Bundle.entry[1].resource.status");
    find(
        &found,
        IssueCode::NotSupported,
        "Bundle.entry[2].resource.resourceType",
    );
    find(&found, IssueCode::Structure, "Bundle.entry[3].resource");
}

#[test]
fn content_reference_elements_are_walked() {
    let q = json!({
        "resourceType": "Questionnaire",
        "status": "active",
        "item": [{"linkId": "1", "type": "group", "item": [{"type": "string"}]}]
    });
    let found = issues(&q);
    find(
        &found,
        IssueCode::Required,
        "Questionnaire.item[0].item[0].linkId",
    );
}

#[test]
fn issues_are_deterministic() {
    let mut p = patient();
    p["foo"] = json!(1);
    p["birthDate"] = json!("x");
    p["extension"] = json!([{}]);
    let first = issues(&p);
    for _ in 0..5 {
        assert_eq!(issues(&p), first);
    }
}

#[test]
fn deeply_nested_input_does_not_panic() {
    let mut v = json!({"url": "http://x", "valueString": "leaf"});
    for _ in 0..300 {
        v = json!({"url": "http://x", "extension": [v]});
    }
    let p = json!({"resourceType": "Patient", "extension": [v]});
    let found = issues(&p);
    assert!(
        found.iter().any(|i| i.diagnostics.contains("nested")),
        "{found:#?}"
    );
    // Just under the limit (96 levels; each extension is an array and an object), with an
    // error at the bottom so the schema's error path recurses all the way down too.
    let mut v = json!({"url": "http://x", "valueString": 5});
    for _ in 0..46 {
        v = json!({"url": "http://x", "extension": [v]});
    }
    let p = json!({"resourceType": "Patient", "extension": [v]});
    let found = issues(&p);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(
        found[0].expression[0].ends_with("extension[0].valueString"),
        "{found:#?}"
    );
}

#[test]
fn per_type_validators_are_cached_lazily() {
    let v = fhir_model::Validator::with_type_cache(2).unwrap();
    assert!(v.cached_types().is_empty());
    assert_eq!(v.validate(&patient()), Ok(()));
    assert!(
        v.cached_types().is_empty(),
        "valid input needs no per-type validator"
    );
    for rt in ["Patient", "Observation", "Organization", "Patient"] {
        let _ = v.validate(&json!({"resourceType": rt, "bogus": 1}));
    }
    assert_eq!(v.cached_types(), vec!["Patient", "Organization"]);
}

#[test]
fn operation_outcome_lists_issues() {
    let mut o = observation();
    o["valueString"] = json!("x");
    let found = issues(&o);
    let oo = operation_outcome(&found);
    assert_eq!(oo["resourceType"], "OperationOutcome");
    assert_eq!(oo["issue"][0]["severity"], "error");
    assert_eq!(oo["issue"][0]["code"], "structure");
    assert_eq!(oo["issue"][0]["expression"][0], "Observation.value[x]");
    assert_eq!(
        operation_outcome(&[])["issue"][0]["severity"],
        "information"
    );
}

#[test]
fn null_primitive_with_extension_twin_is_accepted() {
    let mut p = patient();
    p["name"][0]["given"] = json!(["Peter", null]);
    p["name"][0]["_given"] = json!([null, {"extension": [{
        "url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason",
        "valueCode": "masked"
    }]}]);
    assert_eq!(validator().validate(&p), Ok(()));
    // Without the twin the null is an error.
    p["name"][0].as_object_mut().unwrap().remove("_given");
    let found = issues(&p);
    find(&found, IssueCode::Structure, "Patient.name[0].given[1]");
}

#[test]
fn issue_list_is_capped() {
    let mut p = patient();
    let obj = p.as_object_mut().unwrap();
    for i in 0..1500 {
        obj.insert(format!("bogus{i}"), json!(i));
    }
    let found = issues(&p);
    assert_eq!(found.len(), fhir_model::validation::MAX_ISSUES + 1);
    let last = found.last().unwrap();
    assert_eq!(last.severity, Severity::Information);
    assert_eq!(last.diagnostics, "500 further issues are not listed");
}
