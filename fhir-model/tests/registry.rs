//! `R4Registry` lookups and the committed `profiles/r4-elements.json` table.

mod common;

use fhir_model::registry::{R4Registry, TypeKind};

#[path = "../examples/gen_r4_elements.rs"]
#[allow(dead_code)]
mod generator;

#[test]
fn registry_lists_146_sorted_resource_types() {
    let reg = R4Registry::get();
    let names: Vec<&str> = reg.resource_types().collect();
    assert_eq!(names.len(), 146);
    assert!(names.windows(2).all(|w| w[0] < w[1]), "sorted and unique");
    assert_eq!(names.first(), Some(&"Account"));
    assert_eq!(names.last(), Some(&"VisionPrescription"));
    for rt in [
        "Patient",
        "Observation",
        "Bundle",
        "OperationOutcome",
        "Parameters",
        "Binary",
    ] {
        assert!(names.contains(&rt) && reg.is_resource_type(rt), "{rt}");
    }
}

#[test]
fn non_resources_are_not_resource_types() {
    let reg = R4Registry::get();
    for name in [
        "Resource",
        "DomainResource",
        "MetadataResource",
        "HumanName",
        "patient",
        "",
        "Foo",
    ] {
        assert!(!reg.is_resource_type(name), "{name}");
    }
    assert_eq!(
        reg.type_definition("HumanName").map(|t| t.kind()),
        Some(TypeKind::ComplexType)
    );
    assert!(
        reg.type_definition("DomainResource")
            .is_some_and(|t| t.is_abstract())
    );
    assert!(reg.is_primitive_type("date") && reg.is_primitive_type("xhtml"));
    assert_eq!(reg.primitive_types().count(), 20);
}

#[test]
fn patient_birth_date_is_a_single_date() {
    let reg = R4Registry::get();
    let bd = reg
        .element("Patient", "birthDate")
        .expect("Patient.birthDate");
    assert_eq!(bd.path(), "Patient.birthDate");
    assert_eq!(bd.min(), 0);
    assert_eq!(bd.max(), Some(1));
    assert_eq!(bd.max_str(), "1");
    assert!(!bd.is_array() && bd.is_summary());
    let codes: Vec<&str> = bd.types().iter().map(|t| t.code()).collect();
    assert_eq!(codes, ["date"]);
    assert!(reg.has_element("Patient", "identifier"));
    assert!(!reg.has_element("Patient", "status"));
    assert!(!reg.has_element("Nope", "id"));
    assert_eq!(
        reg.element("Patient", "id").unwrap().types()[0].code(),
        "id"
    );
}

#[test]
fn required_and_choice_elements_are_described() {
    let reg = R4Registry::get();
    let status = reg.element("Observation", "status").unwrap();
    assert!(status.is_required() && status.is_modifier());
    assert_eq!(reg.element("Bundle", "type").unwrap().min(), 1);
    let value = reg.element("Observation", "value[x]").unwrap();
    assert!(value.is_choice());
    let codes: Vec<&str> = value.types().iter().map(|t| t.code()).collect();
    assert_eq!(
        codes,
        [
            "Quantity",
            "CodeableConcept",
            "string",
            "boolean",
            "integer",
            "Range",
            "Ratio",
            "SampledData",
            "time",
            "dateTime",
            "Period"
        ]
    );
    // JSON names of a choice resolve to the choice element.
    assert_eq!(
        reg.element("Observation", "valueQuantity").unwrap().path(),
        "Observation.value[x]"
    );
    assert!(!reg.has_element("Observation", "valueHumanName"));
}

#[test]
fn paths_continue_into_datatypes_backbones_and_content_references() {
    let reg = R4Registry::get();
    assert_eq!(
        reg.element("Patient", "name.given").unwrap().path(),
        "HumanName.given"
    );
    assert_eq!(
        reg.element("Patient", "contact.name.family")
            .unwrap()
            .path(),
        "HumanName.family"
    );
    assert_eq!(
        reg.element("Observation", "valueQuantity.unit")
            .unwrap()
            .path(),
        "Quantity.unit"
    );
    assert_eq!(
        reg.element("Observation", "component.code").unwrap().path(),
        "Observation.component.code"
    );
    let nested = reg.element("Questionnaire", "item.item.linkId").unwrap();
    assert_eq!(nested.path(), "Questionnaire.item.linkId");
    let item_item = reg.element("Questionnaire", "item.item").unwrap();
    assert_eq!(item_item.content_reference(), Some("#Questionnaire.item"));
    assert!(!reg.has_element("Patient", "name.given.foo"));
}

#[test]
fn reference_targets_are_kept() {
    let reg = R4Registry::get();
    let subject = reg.element("Observation", "subject").unwrap();
    let t = &subject.types()[0];
    assert_eq!(t.code(), "Reference");
    assert_eq!(
        t.targets().collect::<Vec<_>>(),
        ["Patient", "Group", "Device", "Location"]
    );
}

#[test]
fn elements_file_matches_definitions() {
    let defs = common::testdata().join("fhir-r4-definitions");
    let generated = generator::generate(&defs).expect("generator runs");
    let committed = include_str!("../../profiles/r4-elements.json");
    assert!(
        generated == committed,
        "profiles/r4-elements.json is stale: run `cargo run -p fhir-model --example \
         gen_r4_elements -- ../shared/testdata/fhir-r4-definitions profiles/r4-elements.json`"
    );
    assert!(committed.len() < 1_500_000);
}

#[test]
fn vendored_schema_matches_shared_copy() {
    let shared = std::fs::read(common::testdata().join("fhir-r4-definitions/fhir.schema.json"))
        .expect("shared fhir.schema.json");
    let vendored = include_bytes!("../../profiles/fhir.schema.json");
    assert!(
        shared == vendored.as_slice(),
        "profiles/fhir.schema.json differs from shared copy"
    );
}
