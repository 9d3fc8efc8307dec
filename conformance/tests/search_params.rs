//! Full FHIR R4 search (search.html): every parameter type, modifier and prefix, chaining,
//! reverse chaining, includes, sorting, paging, result controls, compartments and
//! `$everything`, on both backends with the same expectations.
//!
//! Every test loads the same small hospital fixture ([`seed`]) with fixed ids, and every
//! expected result below was worked out by hand from that fixture and the rule cited next
//! to it.

use conformance::*;
use serde_json::{Value, json};

server_tests!(
    string_search_is_prefix_case_and_accent_insensitive,
    string_modifiers_exact_and_contains,
    token_search_forms_and_modifiers,
    date_search_prefixes_use_precision_ranges,
    date_search_over_periods,
    number_search_uses_implicit_precision,
    quantity_search_with_units_and_ucum_canonical_forms,
    composite_search_keeps_components_together,
    combo_parameters_match_the_resource_and_its_components,
    uri_search_exact_below_above,
    reference_search_forms,
    missing_modifier_on_several_types,
    chained_search_one_and_two_hops,
    chain_pages_count_a_resource_once_per_target,
    reverse_chaining_with_has,
    include_revinclude_and_iterate,
    sort_orders_and_paging_with_previous_links,
    total_and_summary_count,
    summary_and_elements_subset_resources,
    compartment_search_and_everything,
    system_level_search_over_several_types,
    malformed_values_and_modifiers_are_400,
    unknown_parameters_are_reported_or_refused_when_strict,
    capability_statement_lists_every_parameter_with_its_type,
);

backend_tests!(reindex_builds_indexes_of_a_deferred_import);

const LOINC: &str = "http://loinc.org";
const UCUM: &str = "http://unitsofmeasure.org";
const SNOMED: &str = "http://snomed.info/sct";

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn coding(system: &str, code: &str, display: &str) -> Value {
    json!({"coding": [{"system": system, "code": code, "display": display}]})
}

fn quantity(value: f64, code: &str) -> Value {
    json!({"value": value, "unit": code, "system": UCUM, "code": code})
}

/// The fixture, written with PUT so ids are fixed:
/// - Patients p1 Müller Anna F 1980-05-17 (MR m1, phone, married, narrative, active),
///   p2 Smith John M 1975 (inactive), p3 Smithers Jane F 1990-01-01, p4 Nobirth (no
///   birthDate);
/// - Practitioner pr1 House Gregory; Encounter e1 (p1, participant pr1);
/// - Observations o1 p1 heart rate 72 /min 2019-06-01T08:30Z in e1; o2 p1 heart rate 110
///   /min 2018-03-01; o3 p2 glucose 5.4 mmol/L 2019-07-01; o4 p3 body weight 1500 mg over
///   2019-01-01..2019-01-31; o5 p2 blood pressure 120/80 mm[Hg] 2020-02-02 (components);
/// - Conditions c1 p1 diabetes, c2 p2 diabetes, c3 p2 hypertension;
/// - RiskAssessments r1 p1 probability 0.8, r2 p2 0.3;
/// - ValueSets vs-a http://x.org/fhir/ValueSet/a, vs-b …/b.
async fn seed(server: &Server) {
    let resources = vec![
        json!({"resourceType": "Patient", "id": "p1", "active": true,
            "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">Anna Müller</div>"},
            "identifier": [{"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]},
                "system": "urn:hosp:mrn", "value": "m1"}],
            "name": [{"family": "Müller", "given": ["Anna"]}],
            "telecom": [{"system": "phone", "value": "555-0101"}],
            "gender": "female", "birthDate": "1980-05-17",
            "maritalStatus": {"text": "married"}}),
        json!({"resourceType": "Patient", "id": "p2", "active": false,
            "name": [{"family": "Smith", "given": ["John"]}], "gender": "male", "birthDate": "1975"}),
        json!({"resourceType": "Patient", "id": "p3",
            "name": [{"family": "Smithers", "given": ["Jane"]}], "gender": "female", "birthDate": "1990-01-01"}),
        json!({"resourceType": "Patient", "id": "p4", "name": [{"family": "Nobirth"}], "gender": "unknown"}),
        json!({"resourceType": "Practitioner", "id": "pr1", "name": [{"family": "House", "given": ["Gregory"]}]}),
        json!({"resourceType": "Encounter", "id": "e1", "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
            "subject": {"reference": "Patient/p1"},
            "participant": [{"individual": {"reference": "Practitioner/pr1"}}],
            "period": {"start": "2019-06-01T08:00:00Z", "end": "2019-06-01T09:00:00Z"}}),
        json!({"resourceType": "Observation", "id": "o1", "status": "final",
            "code": {"coding": [{"system": LOINC, "code": "8867-4", "display": "Heart rate"}], "text": "Heart rate"},
            "subject": {"reference": "Patient/p1"}, "encounter": {"reference": "Encounter/e1"},
            "effectiveDateTime": "2019-06-01T08:30:00Z", "valueQuantity": quantity(72.0, "/min")}),
        json!({"resourceType": "Observation", "id": "o2", "status": "final",
            "code": coding(LOINC, "8867-4", "Heart rate"),
            "subject": {"reference": "Patient/p1"},
            "effectiveDateTime": "2018-03-01", "valueQuantity": quantity(110.0, "/min")}),
        json!({"resourceType": "Observation", "id": "o3", "status": "final",
            "code": coding(LOINC, "2339-0", "Glucose"),
            "subject": {"reference": "Patient/p2"},
            "effectiveDateTime": "2019-07-01", "valueQuantity": quantity(5.4, "mmol/L")}),
        json!({"resourceType": "Observation", "id": "o4", "status": "final",
            "code": coding(LOINC, "29463-7", "Body weight"),
            "subject": {"reference": "Patient/p3"},
            "effectivePeriod": {"start": "2019-01-01", "end": "2019-01-31"},
            "valueQuantity": quantity(1500.0, "mg")}),
        json!({"resourceType": "Observation", "id": "o5", "status": "final",
        "code": coding(LOINC, "85354-9", "Blood pressure panel"),
        "subject": {"reference": "Patient/p2"}, "effectiveDateTime": "2020-02-02",
        "component": [
            {"code": coding(LOINC, "8480-6", "Systolic"), "valueQuantity": quantity(120.0, "mm[Hg]")},
            {"code": coding(LOINC, "8462-4", "Diastolic"), "valueQuantity": quantity(80.0, "mm[Hg]")}
        ]}),
        json!({"resourceType": "Condition", "id": "c1", "subject": {"reference": "Patient/p1"},
            "code": coding(SNOMED, "44054006", "Diabetes")}),
        json!({"resourceType": "Condition", "id": "c2", "subject": {"reference": "Patient/p2"},
            "code": coding(SNOMED, "44054006", "Diabetes")}),
        json!({"resourceType": "Condition", "id": "c3", "subject": {"reference": "Patient/p2"},
            "code": coding(SNOMED, "38341003", "Hypertension")}),
        json!({"resourceType": "RiskAssessment", "id": "r1", "status": "final",
            "subject": {"reference": "Patient/p1"}, "prediction": [{"probabilityDecimal": 0.8}]}),
        json!({"resourceType": "RiskAssessment", "id": "r2", "status": "final",
            "subject": {"reference": "Patient/p2"}, "prediction": [{"probabilityDecimal": 0.3}]}),
        json!({"resourceType": "ValueSet", "id": "vs-a", "status": "active", "url": "http://x.org/fhir/ValueSet/a"}),
        json!({"resourceType": "ValueSet", "id": "vs-b", "status": "active", "url": "http://x.org/fhir/ValueSet/b"}),
    ];
    let entries: Vec<Value> = resources
        .into_iter()
        .map(|r| {
            let url = format!(
                "{}/{}",
                r["resourceType"].as_str().unwrap(),
                r["id"].as_str().unwrap()
            );
            json!({"resource": r, "request": {"method": "PUT", "url": url}})
        })
        .collect();
    let resp = server
        .post(
            "",
            &json!({"resourceType": "Bundle", "type": "transaction", "entry": entries}),
        )
        .await;
    resp.assert_status(200);
}

/// Ids of the `match` entries of every page of a search, sorted.
async fn matches(server: &Server, path: &str) -> Vec<String> {
    let mut ids = ordered(server, path).await;
    ids.sort();
    ids
}

/// Ids of the `match` entries of every page, in result order.
async fn ordered(server: &Server, path: &str) -> Vec<String> {
    let mut ids = Vec::new();
    for page in server.all_pages(path).await {
        for e in entries(&page) {
            if e["search"]["mode"] == "match" {
                ids.push(e["resource"]["id"].as_str().unwrap_or_default().to_string());
            }
        }
    }
    ids
}

fn v(ids: &[&str]) -> Vec<String> {
    let mut out: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
    out.sort();
    out
}

/// Checks each `(query, expected ids)` pair, naming the query on failure.
async fn expect(server: &Server, cases: &[(&str, &[&str])]) {
    for (query, expected) in cases {
        assert_eq!(
            matches(server, query).await,
            v(expected),
            "{} on {}",
            query,
            server.backend()
        );
    }
}

/// search.html#string: matches when the value starts with the search text, ignoring case
/// and accents; every part of a HumanName is searched by `name`.
async fn string_search_is_prefix_case_and_accent_insensitive(server: Server) {
    seed(&server).await;
    expect(
        &server,
        &[
            ("Patient?name=smi", &["p2", "p3"]),
            ("Patient?name=SMI", &["p2", "p3"]),
            ("Patient?name=muller", &["p1"]),
            ("Patient?name=M%C3%BCll", &["p1"]),
            ("Patient?name=anna", &["p1"]),
            ("Patient?family=smith", &["p2", "p3"]),
            ("Patient?given=j", &["p2", "p3"]),
            ("Patient?given=ja", &["p3"]),
            // search.html#combining: a comma is OR, a repeated parameter is AND.
            ("Patient?name=anna,jane", &["p1", "p3"]),
            ("Patient?name=smi&given=john", &["p2"]),
            ("Practitioner?name=hou", &["pr1"]),
        ],
    )
    .await;
}

/// search.html#modifiers: `:exact` is case- and accent-sensitive equality, `:contains`
/// matches anywhere in the value.
async fn string_modifiers_exact_and_contains(server: Server) {
    seed(&server).await;
    expect(
        &server,
        &[
            ("Patient?name:exact=Smith", &["p2"]),
            ("Patient?name:exact=smith", &[]),
            ("Patient?name:exact=M%C3%BCller", &["p1"]),
            ("Patient?name:exact=Muller", &[]),
            ("Patient?name:contains=ith", &["p2", "p3"]),
            ("Patient?family:contains=LLE", &["p1"]),
        ],
    )
    .await;
}

/// search.html#token: `code`, `system|code`, `|code`, `system|`; `:not`, `:text`,
/// `:of-type`; booleans and ContactPoints.
async fn token_search_forms_and_modifiers(server: Server) {
    seed(&server).await;
    expect(
        &server,
        &[
            ("Patient?gender=male", &["p2"]),
            ("Patient?gender=female", &["p1", "p3"]),
            // :not: resources without a matching value, including those with none.
            ("Patient?gender:not=female", &["p2", "p4"]),
            ("Observation?code=http://loinc.org|8867-4", &["o1", "o2"]),
            ("Observation?code=8867-4", &["o1", "o2"]),
            // |code: only codes without a system.
            ("Observation?code=|8867-4", &[]),
            (
                "Observation?code=http://loinc.org|",
                &["o1", "o2", "o3", "o4", "o5"],
            ),
            ("Observation?code=8867-4,2339-0", &["o1", "o2", "o3"]),
            // :text searches CodeableConcept.text and Coding.display.
            ("Observation?code:text=heart", &["o1", "o2"]),
            ("Condition?code:text=hyper", &["c3"]),
            (
                "Patient?identifier:of-type=http://terminology.hl7.org/CodeSystem/v2-0203|MR|m1",
                &["p1"],
            ),
            ("Patient?identifier=urn:hosp:mrn|m1", &["p1"]),
            ("Patient?active=true", &["p1"]),
            ("Patient?active=false", &["p2"]),
            ("Patient?phone=555-0101", &["p1"]),
            ("Encounter?class=AMB", &["e1"]),
            ("Observation?status=final", &["o1", "o2", "o3", "o4", "o5"]),
        ],
    )
    .await;
}

/// search.html#date and #prefix: a date value is the range its precision implies; `eq`
/// needs the resource's range inside the search range, `gt`/`lt` need it to extend past
/// it, `sa`/`eb` need it wholly after/before, `ge`/`le` are `gt`/`lt` or `eq`, `ne` is
/// not `eq`. p2's birthDate "1975" is the whole year 1975.
async fn date_search_prefixes_use_precision_ranges(server: Server) {
    seed(&server).await;
    expect(
        &server,
        &[
            ("Patient?birthdate=1980", &["p1"]),
            ("Patient?birthdate=1980-05", &["p1"]),
            ("Patient?birthdate=1980-05-17", &["p1"]),
            ("Patient?birthdate=eq1980-05-17", &["p1"]),
            ("Patient?birthdate=lt1980", &["p2"]),
            ("Patient?birthdate=ge1980-05-17", &["p1", "p3"]),
            ("Patient?birthdate=gt1980-05-17", &["p3"]),
            ("Patient?birthdate=le1980-05-17", &["p1", "p2"]),
            ("Patient?birthdate=sa1980-05-17", &["p3"]),
            ("Patient?birthdate=eb1980-05-17", &["p2"]),
            ("Patient?birthdate=ne1980", &["p2", "p3"]),
            // The year 1975 is not inside one day of it...
            ("Patient?birthdate=1975-06-01", &[]),
            // ...but it extends after that day, so ge matches.
            ("Patient?birthdate=ge1975-06-01", &["p1", "p2", "p3"]),
            ("Patient?birthdate=ge1975&birthdate=lt1990", &["p1", "p2"]),
            ("Patient?birthdate=1980-05-17T00:00:00Z", &[]),
        ],
    )
    .await;
}

/// search.html#date over Period and dateTime (Observation `date` is `effective`): o4's
/// period is all of January 2019.
async fn date_search_over_periods(server: Server) {
    seed(&server).await;
    expect(
        &server,
        &[
            ("Observation?date=2019-01-15", &[]),
            ("Observation?date=2019-01", &["o4"]),
            ("Observation?date=2019", &["o1", "o3", "o4"]),
            ("Observation?date=ge2019-01-15", &["o1", "o3", "o4", "o5"]),
            ("Observation?date=lt2019-01-15", &["o2", "o4"]),
            ("Observation?date=2019-06-01T08:30:00Z", &["o1"]),
            ("Encounter?date=2019-06-01", &["e1"]),
            ("Encounter?date=gt2019-06-01T08:30:00Z", &["e1"]),
            ("Encounter?date=sa2019-06-01T08:30:00Z", &[]),
        ],
    )
    .await;
}

/// search.html#number: `eq` uses the search value's implicit precision (0.8 is
/// [0.75, 0.85)); other prefixes compare with the value.
async fn number_search_uses_implicit_precision(server: Server) {
    seed(&server).await;
    expect(
        &server,
        &[
            ("RiskAssessment?probability=0.8", &["r1"]),
            ("RiskAssessment?probability=0.80", &["r1"]),
            ("RiskAssessment?probability=0.7", &[]),
            ("RiskAssessment?probability=gt0.5", &["r1"]),
            ("RiskAssessment?probability=lt0.5", &["r2"]),
            ("RiskAssessment?probability=ge0.3", &["r1", "r2"]),
            ("RiskAssessment?probability=ne0.3", &["r1"]),
        ],
    )
    .await;
}

/// search.html#quantity: `[prefix]number|system|code`; UCUM units compare canonically
/// (1500 mg is 1.5 g and less than 1 kg).
async fn quantity_search_with_units_and_ucum_canonical_forms(server: Server) {
    seed(&server).await;
    expect(
        &server,
        &[
            ("Observation?value-quantity=gt100", &["o2", "o4"]),
            ("Observation?value-quantity=72", &["o1"]),
            ("Observation?value-quantity=72||/min", &["o1"]),
            (
                &format!(
                    "Observation?value-quantity=72|{}|{}",
                    enc(UCUM),
                    enc("/min")
                ),
                &["o1"],
            ),
            (
                &format!("Observation?value-quantity=1500|{}|mg", enc(UCUM)),
                &["o4"],
            ),
            (
                &format!("Observation?value-quantity=1.5|{}|g", enc(UCUM)),
                &["o4"],
            ),
            (
                &format!("Observation?value-quantity=lt1|{}|kg", enc(UCUM)),
                &["o4"],
            ),
            (
                &format!(
                    "Observation?value-quantity=5.4|{}|{}",
                    enc(UCUM),
                    enc("mmol/L")
                ),
                &["o3"],
            ),
            ("Observation?value-quantity=gt100||kg", &[]),
        ],
    )
    .await;
}

/// search.html#composite: the components of one value must match the same repeat (o5's
/// systolic is 120 and its diastolic 80, so "diastolic > 100" finds nothing).
async fn composite_search_keeps_components_together(server: Server) {
    seed(&server).await;
    expect(
        &server,
        &[
            (
                &format!(
                    "Observation?component-code-value-quantity={}$gt100",
                    enc("http://loinc.org|8480-6")
                ),
                &["o5"],
            ),
            (
                &format!(
                    "Observation?component-code-value-quantity={}$gt100",
                    enc("http://loinc.org|8462-4")
                ),
                &[],
            ),
            (
                &format!(
                    "Observation?component-code-value-quantity={}$lt100",
                    enc("http://loinc.org|8462-4")
                ),
                &["o5"],
            ),
            (
                &format!(
                    "Observation?code-value-quantity={}$gt100",
                    enc("http://loinc.org|8867-4")
                ),
                &["o2"],
            ),
            ("Observation?code-value-quantity=8867-4$lt100", &["o1"]),
        ],
    )
    .await;
}

/// Observation `combo-code` is `Observation.code | Observation.component.code`, and
/// `combo-value-quantity` the values of both (R4 observation.html#search; FHIRPath `|` is
/// union): a code or value found at either level matches, with every token form, `:text`,
/// `:missing` and `_sort`; the composite `combo-code-value-quantity` pairs a code and a value
/// of one node at either level. (MediFlow stores no rows of its own for these: it reads the
/// rows of `code`/`component-code`, `value-quantity`/`component-value-quantity` and
/// `code-value-quantity`/`component-code-value-quantity`.)
async fn combo_parameters_match_the_resource_and_its_components(server: Server) {
    seed(&server).await;
    expect(
        &server,
        &[
            // The panel code of o5 and a component code of o5; heart rate on o1, o2.
            (
                &format!("Observation?combo-code={}", enc("http://loinc.org|85354-9")),
                &["o5"],
            ),
            (
                &format!("Observation?combo-code={}", enc("http://loinc.org|8480-6")),
                &["o5"],
            ),
            ("Observation?combo-code=8867-4,8462-4", &["o1", "o2", "o5"]),
            // :text matches Coding.display / CodeableConcept.text at either level.
            ("Observation?combo-code:text=systolic", &["o5"]),
            ("Observation?combo-code:text=heart", &["o1", "o2"]),
            // :not: resources with no such code at either level.
            (
                "Observation?combo-code:not=8480-6&subject=Patient/p2",
                &["o3"],
            ),
            // Values: o5's components 120 and 80 mm[Hg]; o2 110 /min; o4 1500 mg.
            (
                "Observation?combo-value-quantity=gt100",
                &["o2", "o4", "o5"],
            ),
            ("Observation?combo-value-quantity=80", &["o5"]),
            ("Observation?combo-value-quantity:missing=true", &[]),
            ("Observation?combo-value-concept:missing=false", &[]),
            // The composite `combo-code-value-quantity` (expression `Observation |
            // Observation.component`): a code and a value of the SAME node, at either level
            // (search.html#composite). o5's systolic component is 120, its diastolic 80.
            (
                &format!(
                    "Observation?combo-code-value-quantity={}",
                    enc("http://loinc.org|8480-6$gt100")
                ),
                &["o5"],
            ),
            ("Observation?combo-code-value-quantity=8462-4$80", &["o5"]),
            // 80 belongs to the diastolic component, not the systolic one: no match.
            ("Observation?combo-code-value-quantity=8480-6$lt100", &[]),
            // The root level: heart rate 110 /min on o2.
            (
                "Observation?combo-code-value-quantity=8867-4$gt100",
                &["o2"],
            ),
            (
                "Observation?combo-code-value-quantity=8867-4$gt100,8462-4$80",
                &["o2", "o5"],
            ),
            ("Observation?combo-code-value-quantity:missing=true", &[]),
        ],
    )
    .await;
    // _sort on a union: the smallest value of either level (search.html#sort).
    let sorted = ordered(
        &server,
        "Observation?combo-value-quantity=lt200&_sort=combo-value-quantity",
    )
    .await;
    assert_eq!(sorted, ["o3", "o1", "o5", "o2"]);
}

/// search.html#uri: equality, `:below` (starts with) and `:above` (a prefix of the value).
async fn uri_search_exact_below_above(server: Server) {
    seed(&server).await;
    expect(
        &server,
        &[
            ("ValueSet?url=http://x.org/fhir/ValueSet/a", &["vs-a"]),
            ("ValueSet?url=http://x.org/fhir/ValueSet", &[]),
            ("ValueSet?url:below=http://x.org/fhir", &["vs-a", "vs-b"]),
            (
                "ValueSet?url:above=http://x.org/fhir/ValueSet/a/extra",
                &["vs-a"],
            ),
        ],
    )
    .await;
}

/// search.html#reference: `id`, `Type/id`, the `:Type` modifier, OR lists, and AND with
/// other parameters.
async fn reference_search_forms(server: Server) {
    seed(&server).await;
    expect(
        &server,
        &[
            ("Observation?subject=Patient/p1", &["o1", "o2"]),
            ("Observation?patient=p1", &["o1", "o2"]),
            ("Observation?subject:Patient=p2", &["o3", "o5"]),
            ("Observation?encounter=Encounter/e1", &["o1"]),
            (
                "Observation?subject=Patient/p1,Patient/p3",
                &["o1", "o2", "o4"],
            ),
            (
                "Observation?patient=p1&code=http://loinc.org|8867-4&date=ge2019",
                &["o1"],
            ),
            ("Encounter?practitioner=pr1", &["e1"]),
            ("Condition?patient=p2&code=44054006", &["c2"]),
        ],
    )
    .await;
}

/// search.html#missing: `:missing=true` finds resources without a value.
async fn missing_modifier_on_several_types(server: Server) {
    seed(&server).await;
    expect(
        &server,
        &[
            ("Patient?birthdate:missing=true", &["p4"]),
            ("Patient?birthdate:missing=false", &["p1", "p2", "p3"]),
            ("Observation?encounter:missing=false", &["o1"]),
            ("Patient?phone:missing=true", &["p2", "p3", "p4"]),
            ("Patient?name:missing=true", &[]),
            ("Observation?value-quantity:missing=true", &["o5"]),
        ],
    )
    .await;
}

/// search.html#chaining: `ref[:Type].param` follows a reference; two hops chain further.
async fn chained_search_one_and_two_hops(server: Server) {
    seed(&server).await;
    expect(
        &server,
        &[
            // Smith (p2: o3, o5) and Smithers (p3: o4) both start with "smi".
            ("Observation?subject:Patient.name=smi", &["o3", "o4", "o5"]),
            (
                "Observation?subject:Patient.name=smith&subject:Patient.given=john",
                &["o3", "o5"],
            ),
            ("Observation?patient.name=muller", &["o1", "o2"]),
            ("Observation?subject.name=smi", &["o3", "o4", "o5"]),
            ("Observation?patient.birthdate=lt1980", &["o3", "o5"]),
            ("Observation?encounter.participant.name=house", &["o1"]),
            ("Observation?encounter.practitioner.family=hou", &["o1"]),
        ],
    )
    .await;
    // Paged one at a time (search.html#paging), a chain's matches come once each, in the
    // order of one page, though they refer to two patients (p2: o3, o5; p3: o4): PostgreSQL
    // reads at most a page of referring rows per matching patient.
    assert_eq!(
        ordered(&server, "Observation?subject:Patient.name=smi&_count=1").await,
        ["o3", "o4", "o5"]
    );
    let first = server
        .read("Observation?subject:Patient.name=smi&_count=1")
        .await;
    let second = server.read(&bundle_link(&first, "next").unwrap()).await;
    let third = server.read(&bundle_link(&second, "next").unwrap()).await;
    assert_eq!(entries(&third)[0]["resource"]["id"], "o5");
    let back = server
        .read(&bundle_link(&third, "previous").expect("previous link"))
        .await;
    assert_eq!(entries(&back)[0]["resource"]["id"], "o4");
}

/// A resource that refers to the chained target twice is one match (search.html#chaining:
/// the chain selects resources, not references), also when the server reads only a page of
/// references per target: with `_count=1` both observations of pr1 are found, page by page
/// (d1's second reference must not fill the target's page in place of d2).
async fn chain_pages_count_a_resource_once_per_target(server: Server) {
    seed(&server).await;
    let pr1 = json!({"reference": "Practitioner/pr1"});
    for (id, performer) in [("d1", json!([pr1, pr1])), ("d2", json!([pr1]))] {
        server
            .put(
                &format!("Observation/{id}"),
                &json!({"resourceType": "Observation", "id": id, "status": "final",
                    "code": {"text": "dup"}, "performer": performer}),
            )
            .await
            .assert_status(201);
    }
    assert_eq!(
        ordered(
            &server,
            "Observation?performer:Practitioner.family=house&_count=1"
        )
        .await,
        ["d1", "d2"]
    );
}

/// search.html#has: `_has:Type:ref:param=value` finds resources referenced from matching
/// resources; `_has` nests.
async fn reverse_chaining_with_has(server: Server) {
    seed(&server).await;
    expect(
        &server,
        &[
            ("Patient?_has:Observation:patient:code=2339-0", &["p2"]),
            (
                "Patient?_has:Condition:subject:code=44054006",
                &["p1", "p2"],
            ),
            ("Patient?_has:Condition:subject:code=38341003", &["p2"]),
            (
                "Practitioner?_has:Encounter:participant:patient=p1",
                &["pr1"],
            ),
            (
                "Practitioner?_has:Encounter:practitioner:_has:Observation:encounter:code=8867-4",
                &["pr1"],
            ),
        ],
    )
    .await;
}

fn modes(bundle: &Value) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = entries(bundle)
        .iter()
        .filter(|e| e["search"]["mode"] != "outcome")
        .map(|e| {
            (
                e["search"]["mode"].as_str().unwrap_or_default().to_string(),
                format!(
                    "{}/{}",
                    e["resource"]["resourceType"].as_str().unwrap_or_default(),
                    e["resource"]["id"].as_str().unwrap_or_default()
                ),
            )
        })
        .collect();
    out.sort();
    out
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = list
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    out.sort();
    out
}

/// search.html#include: included resources come with `search.mode = include`;
/// `:iterate` follows the references of included resources too; `*` takes every reference
/// parameter.
async fn include_revinclude_and_iterate(server: Server) {
    seed(&server).await;
    let b = server
        .read("Encounter?patient=p1&_include=Encounter:practitioner")
        .await;
    assert_eq!(
        modes(&b),
        pairs(&[("include", "Practitioner/pr1"), ("match", "Encounter/e1")])
    );
    let b = server
        .read("Encounter?_id=e1&_revinclude=Observation:encounter")
        .await;
    assert_eq!(
        modes(&b),
        pairs(&[("include", "Observation/o1"), ("match", "Encounter/e1")])
    );
    let b = server
        .read("Observation?_id=o1&_include=Observation:encounter&_include:iterate=Encounter:practitioner")
        .await;
    assert_eq!(
        modes(&b),
        pairs(&[
            ("include", "Encounter/e1"),
            ("include", "Practitioner/pr1"),
            ("match", "Observation/o1")
        ])
    );
    // Without :iterate the practitioner is not reached from the included encounter.
    let b = server
        .read("Observation?_id=o1&_include=Observation:encounter&_include=Encounter:practitioner")
        .await;
    assert_eq!(
        modes(&b),
        pairs(&[("include", "Encounter/e1"), ("match", "Observation/o1")])
    );
    let b = server
        .read("Observation?_id=o1&_include=Observation:*")
        .await;
    assert_eq!(
        modes(&b),
        pairs(&[
            ("include", "Encounter/e1"),
            ("include", "Patient/p1"),
            ("match", "Observation/o1")
        ])
    );
    let b = server
        .read("Patient?_id=p2&_revinclude=Condition:subject&_revinclude=Observation:subject")
        .await;
    assert_eq!(
        modes(&b),
        pairs(&[
            ("include", "Condition/c2"),
            ("include", "Condition/c3"),
            ("include", "Observation/o3"),
            ("include", "Observation/o5"),
            ("match", "Patient/p2")
        ])
    );
}

/// search.html#sort: keys in order, `-` descending, resources without a value last;
/// paging (search.html#paging) through `next` returns each match once in order, and
/// `previous` returns the page before.
async fn sort_orders_and_paging_with_previous_links(server: Server) {
    seed(&server).await;
    assert_eq!(
        ordered(&server, "Patient?_sort=birthdate").await,
        ["p2", "p1", "p3", "p4"]
    );
    assert_eq!(
        ordered(&server, "Patient?_sort=-birthdate").await,
        ["p3", "p1", "p2", "p4"]
    );
    // Names sort on the normalized text: muller, nobirth, smith, smithers.
    assert_eq!(
        ordered(&server, "Patient?_sort=family").await,
        ["p1", "p4", "p2", "p3"]
    );
    assert_eq!(
        ordered(&server, "Observation?_sort=date").await,
        ["o2", "o4", "o1", "o3", "o5"]
    );
    assert_eq!(
        ordered(&server, "Observation?_sort=patient,-date").await,
        ["o1", "o2", "o5", "o3", "o4"]
    );
    assert_eq!(
        ordered(&server, "Patient?_sort=-_id").await,
        ["p4", "p3", "p2", "p1"]
    );
    // One per page, following next: the same order as one page.
    assert_eq!(
        ordered(&server, "Patient?_sort=birthdate&_count=1").await,
        ["p2", "p1", "p3", "p4"]
    );
    // previous from the third page gives the second.
    let first = server.read("Patient?_sort=birthdate&_count=1").await;
    assert!(bundle_link(&first, "previous").is_none());
    let second = server.read(&bundle_link(&first, "next").unwrap()).await;
    let third = server.read(&bundle_link(&second, "next").unwrap()).await;
    assert_eq!(entries(&third)[0]["resource"]["id"], "p3");
    let back = server
        .read(&bundle_link(&third, "previous").expect("previous link"))
        .await;
    assert_eq!(entries(&back)[0]["resource"]["id"], "p1");
    let back2 = server
        .read(&bundle_link(&back, "previous").expect("previous link"))
        .await;
    assert_eq!(entries(&back2)[0]["resource"]["id"], "p2");
    // Paging stays correct while resources are written: a patient created between pages
    // sorts before the cursor and does not shift the pages after it.
    server
        .put(
            "Patient/p0",
            &json!({"resourceType": "Patient", "id": "p0", "birthDate": "1970"}),
        )
        .await
        .assert_status(201);
    let fourth = server.read(&bundle_link(&third, "next").unwrap()).await;
    assert_eq!(entries(&fourth)[0]["resource"]["id"], "p4");
}

/// search.html#total and #summary: no total by default; `_total=accurate` counts every
/// match whatever the page size; `_summary=count` returns only the count.
async fn total_and_summary_count(server: Server) {
    seed(&server).await;
    let b = server.read("Patient?_count=1").await;
    assert!(b.get("total").is_none(), "no total by default: {b}");
    let b = server.read("Patient?_count=1&_total=accurate").await;
    assert_eq!(b["total"], 4);
    assert_eq!(entries(&b).len(), 1);
    let b = server.read("Observation?patient=p1&_summary=count").await;
    assert_eq!(b["total"], 2);
    assert!(entries(&b).iter().all(|e| e["search"]["mode"] != "match"));
    let b = server.read("Condition?code=44054006&_summary=count").await;
    assert_eq!(b["total"], 2);
}

fn subsetted(resource: &Value) -> bool {
    resource["meta"]["tag"]
        .as_array()
        .is_some_and(|tags| tags.iter().any(|t| t["code"] == "SUBSETTED"))
}

/// search.html#summary and #elements: `_summary=true` keeps the elements marked as summary
/// (Patient.maritalStatus is not), `_summary=data` drops the narrative, `_elements` keeps the
/// listed ones; subsets are tagged SUBSETTED.
async fn summary_and_elements_subset_resources(server: Server) {
    seed(&server).await;
    let p = &server.search("Patient?_id=p1&_summary=true").await[0];
    assert!(p.get("maritalStatus").is_none(), "{p}");
    assert!(p.get("text").is_none(), "{p}");
    assert_eq!(p["name"][0]["family"], "Müller");
    assert_eq!(p["birthDate"], "1980-05-17");
    assert!(subsetted(p), "{p}");
    let p = &server.search("Patient?_id=p1&_summary=data").await[0];
    assert!(p.get("text").is_none(), "{p}");
    assert_eq!(p["maritalStatus"]["text"], "married");
    let p = &server.search("Patient?_id=p1&_summary=text").await[0];
    assert!(p.get("text").is_some(), "{p}");
    assert!(p.get("name").is_none(), "{p}");
    let p = &server
        .search("Patient?_id=p1&_elements=birthDate,gender")
        .await[0];
    assert_eq!(p["birthDate"], "1980-05-17");
    assert_eq!(p["gender"], "female");
    assert!(p.get("name").is_none(), "{p}");
    assert!(subsetted(p), "{p}");
    let o = &server.search("Observation?_id=o1&_elements=value").await[0];
    assert_eq!(o["valueQuantity"]["value"], 72.0);
    // Mandatory elements stay (Observation.status and code have min 1).
    assert_eq!(o["status"], "final");
    assert!(o.get("subject").is_none(), "{o}");
    let p = &server.search("Patient?_id=p1").await[0];
    assert!(!subsetted(p));
}

/// compartmentdefinition.html#search: `Patient/{id}/Type` searches the resources of Type in
/// that patient's compartment (Observation via subject and performer), with further
/// criteria; `$everything` (patient-operation-everything) returns the patient, its
/// compartment, and what those refer to.
async fn compartment_search_and_everything(server: Server) {
    seed(&server).await;
    expect(
        &server,
        &[
            ("Patient/p1/Observation", &["o1", "o2"]),
            ("Patient/p1/Observation?code=8867-4&date=ge2019", &["o1"]),
            ("Patient/p2/Condition", &["c2", "c3"]),
            ("Patient/p3/Condition", &[]),
            ("Patient/p1/Encounter", &["e1"]),
        ],
    )
    .await;
    server
        .get("Patient/p1/ValueSet")
        .await
        .assert_outcome(&[404]);
    let mut everything: Vec<(String, String)> = Vec::new();
    for page in server.all_pages("Patient/p1/$everything").await {
        everything.extend(modes(&page));
    }
    everything.sort();
    assert_eq!(
        everything,
        pairs(&[
            ("include", "Practitioner/pr1"),
            ("match", "Condition/c1"),
            ("match", "Encounter/e1"),
            ("match", "Observation/o1"),
            ("match", "Observation/o2"),
            ("match", "Patient/p1"),
            ("match", "RiskAssessment/r1"),
        ])
    );
    server
        .get("Patient/nope/$everything")
        .await
        .assert_outcome(&[404]);
}

/// search.html#searchall: `GET [base]?_type=…` searches several types with the common
/// parameters.
async fn system_level_search_over_several_types(server: Server) {
    seed(&server).await;
    expect(
        &server,
        &[
            ("?_type=Patient,Practitioner&_id=p1,pr1,o1", &["p1", "pr1"]),
            (
                "?_type=Condition,RiskAssessment&_lastUpdated=gt2000",
                &["c1", "c2", "c3", "r1", "r2"],
            ),
            (
                "?_type=Condition,Observation&patient=p2",
                &["c2", "c3", "o3", "o5"],
            ),
        ],
    )
    .await;
    server.get("?_type=Nope").await.assert_outcome(&[400]);
}

/// search.html#errors: malformed values, unknown prefixes and unsupported modifiers are
/// refused with 400 and an OperationOutcome.
async fn malformed_values_and_modifiers_are_400(server: Server) {
    seed(&server).await;
    for bad in [
        "Patient?birthdate=notadate",
        "Patient?birthdate=zz2000",
        "Patient?name:foo=x",
        "Patient?gender:in=x",
        "RiskAssessment?probability=abc",
        "Observation?subject.foo=x",
        "Patient?_sort=foo",
        "Patient?_total=maybe",
        "Patient?_summary=maybe",
        "Patient?_include=Patient:foo",
        "Patient?birthdate:missing=perhaps",
        "Observation?component-code-value-quantity=8480-6",
    ] {
        let oo = server.get(bad).await.assert_outcome(&[400]);
        assert_error_outcome(&oo, bad);
    }
}

/// search.html#errors: an unknown parameter is ignored and reported in an OperationOutcome
/// entry (`search.mode = outcome`), or refused with `Prefer: handling=strict`.
async fn unknown_parameters_are_reported_or_refused_when_strict(server: Server) {
    seed(&server).await;
    let b = server.read("Patient?foo=bar&gender=male").await;
    let ids: Vec<String> = entries(&b)
        .iter()
        .filter(|e| e["search"]["mode"] == "match")
        .map(|e| e["resource"]["id"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(ids, ["p2"]);
    let outcome = entries(&b)
        .into_iter()
        .find(|e| e["search"]["mode"] == "outcome")
        .expect("outcome entry");
    assert!(outcome["resource"].to_string().contains("foo"));
    let resp = server
        .request(Method::GET, "Patient?foo=bar")
        .header("Prefer", "handling=strict")
        .send()
        .await;
    resp.assert_outcome(&[400]);
}

/// The CapabilityStatement lists every parameter of a type with its type and
/// documentation, from the registry the server searches with.
async fn capability_statement_lists_every_parameter_with_its_type(server: Server) {
    let cs = server.read("metadata").await;
    let resources = cs["rest"][0]["resource"].as_array().expect("resources");
    let obs = resources
        .iter()
        .find(|r| r["type"] == "Observation")
        .expect("Observation");
    let params = obs["searchParam"].as_array().expect("searchParam");
    let find = |name: &str| params.iter().find(|p| p["name"] == name).cloned();
    assert_eq!(
        find("code-value-quantity").expect("composite")["type"],
        "composite"
    );
    assert_eq!(
        find("value-quantity").expect("quantity")["type"],
        "quantity"
    );
    assert_eq!(find("date").expect("date")["type"], "date");
    assert_eq!(find("subject").expect("reference")["type"], "reference");
    assert_eq!(find("_lastUpdated").expect("_lastUpdated")["type"], "date");
    assert!(
        find("code").expect("code")["documentation"]
            .as_str()
            .is_some_and(|d| !d.is_empty())
    );
    // Every R4 Observation search parameter except the special ones (R4 lists 33 with
    // base Observation, plus the Resource ones).
    assert!(params.len() >= 33, "{} Observation params", params.len());
}

/// `mediflow import --defer-index` writes resources without index rows (searches by
/// indexed parameters find nothing); `mediflow reindex` then builds them.
async fn reindex_builds_indexes_of_a_deferred_import(backend: Backend) {
    let db = TestDb::new(backend).await;
    let dir = db.dir().join("reindex-input");
    std::fs::create_dir_all(&dir).unwrap();
    let lines: Vec<String> = (1..=30)
        .map(|i| {
            json!({"resourceType": "Patient", "id": format!("r{i}"),
                "name": [{"family": format!("Reindex{i}")}],
                "birthDate": format!("19{:02}-01-01", 40 + i)})
            .to_string()
        })
        .collect();
    std::fs::write(dir.join("patients.ndjson"), lines.join("\n") + "\n").unwrap();
    let out = run_mediflow(vec![
        "import".into(),
        dir.display().to_string(),
        "--database-url".into(),
        db.url().to_string(),
        "--defer-index".into(),
        "--quiet".into(),
    ])
    .await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let url = db.url().to_string();
    let server = Server::start_on(db, &[]).await;
    assert_eq!(server.search_ids("Patient?_id=r1").await, ["r1"]);
    assert!(matches(&server, "Patient?name=reindex").await.is_empty());
    let out = run_mediflow(vec![
        "reindex".into(),
        "--database-url".into(),
        url,
        "--batch".into(),
        "7".into(),
        "--quiet".into(),
    ])
    .await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    // 30 Patients, plus the AuditEvents the searches above wrote (issue 5).
    let stdout = String::from_utf8_lossy(&out.stdout);
    let reindexed: usize = stdout
        .strip_prefix("reindexed ")
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(reindexed >= 30, "{out:?}");
    assert_eq!(matches(&server, "Patient?name=reindex").await.len(), 30);
    assert_eq!(
        matches(&server, "Patient?birthdate=lt1945").await,
        v(&["r1", "r2", "r3", "r4"])
    );
}
