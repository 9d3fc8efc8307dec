//! People related to the patient through its accounts: GT1 guarantor and IN1 insured →
//! RelatedPerson (HL7 v2 chapter 6 "Financial Management", GT1 and IN1 segments).
//!
//! The IG gives GT1 no segment map of its own (ADT_A01 lists the GT1 row without a target);
//! the guarantor is written the way the IG maps a person related to the patient,
//! `NK1[RelatedPerson]` (name, address, telecom, relationship, gender, birth date,
//! `RelatedPerson.patient = Patient`), with the GT1 fields in those places. The insured
//! person of IN1 follows `IN1[Coverage]`: `IN1-16 → subscriber(RelatedPerson)` when IN1-17 is
//! not the patient.
//!
//! A RelatedPerson is matched on `<patient MRN>-related-<family>-<given>` (XPN-1, XPN-2,
//! upper case) in the patient's system: one per person and patient, so a guarantor who is
//! also the insured (same name) is written once and referenced from both.

use super::bundle::Write;
use super::datatypes::{Ident, cwe, cx, opt_ts, xad, xpn, xtn};
use super::error::MappingError;
use super::patient::PatientRef;
use super::v2::{Rep, Seg};
use super::{Ctx, reference};
use serde_json::{Value, json};

/// HL7 table 0063 (Relationship), the default system of GT1-11 and IN1-17 codes.
const V2_0063: &str = "http://terminology.hl7.org/CodeSystem/v2-0063";

/// Who a GT1 or IN1 names.
enum Person {
    /// The patient: the relationship is `SEL` (table 0063 self), or the name (XPN-1 and
    /// XPN-2) is the patient's PID-5 (older senders use local relationship codes for self).
    Patient,
    /// Someone else, matched on this identifier.
    Other(Ident),
    /// No name.
    Nobody,
}

/// Whether `name` (with relationship code `rel`) is the patient or someone else, and then
/// its match identifier.
fn person(patient: &PatientRef, name: Option<&Rep>, rel: Option<&str>) -> Person {
    let part = |c| name.and_then(|r| r.c(c)).unwrap_or_default().to_uppercase();
    let (family, given) = (part(1), part(2));
    if rel == Some("SEL") || (!family.is_empty() && (family.clone(), given.clone()) == patient.name)
    {
        return Person::Patient;
    }
    if family.is_empty() && given.is_empty() {
        return Person::Nobody;
    }
    Person::Other(patient.key.derived(&format!("related-{family}-{given}")))
}

/// A relationship CWE (table 0063) as a CodeableConcept, system v2-0063 when CWE-3 is empty.
fn relationship(rep: &Rep) -> Option<Value> {
    let mut c = cwe(rep)?;
    if rep.c(1).is_some() && rep.c(3).is_none() {
        c["coding"][0]["system"] = json!(V2_0063);
    }
    Some(c)
}

/// Administrative sex (table 0001) → AdministrativeGender.
fn gender(code: Option<String>) -> Option<&'static str> {
    code.map(|g| match g.as_str() {
        "M" => "male",
        "F" => "female",
        "U" => "unknown",
        _ => "other",
    })
}

/// GT1 → RelatedPerson (see the module notes): GT1-2 guarantor number → identifier (after
/// the match identifier), GT1-3 name, GT1-5 address, GT1-6 home / GT1-7 business phone →
/// telecom (use `home` / `work` unless XTN-2 says otherwise), GT1-8 birthDate, GT1-9
/// gender, GT1-11 relationship (table 0063), GT1-13/14 period, `patient`. Returns the
/// reference of the guarantor: the Patient itself when GT1-11 is `SEL` (self) or GT1-3 is
/// the patient's name (nothing written), `None` when GT1-3 names nobody (an organization
/// guarantor, GT1-21, is not mapped).
///
/// # Errors
/// [`MappingError::InvalidValue`] for a malformed GT1-8, GT1-13 or GT1-14.
pub(crate) fn guarantor(
    ctx: &mut Ctx,
    gt1: &Seg,
    patient: &PatientRef,
) -> Result<Option<Value>, MappingError> {
    let key = match person(patient, gt1.rep(3).as_ref(), gt1.vc(11, 1).as_deref()) {
        Person::Patient => return Ok(Some(patient.reference.clone())),
        Person::Nobody => return Ok(None),
        Person::Other(key) => key,
    };
    let sender = ctx.sender.clone();
    let mut ids = vec![key.to_json()];
    ids.extend(
        gt1.reps(2)
            .iter()
            .filter_map(|r| cx(ctx, r, &sender))
            .map(|i| i.to_json()),
    );
    let mut telecom = Vec::new();
    for (field, default_use) in [(6, "home"), (7, "work")] {
        for r in gt1.reps(field) {
            if let Some(mut t) = xtn(&r) {
                if t["use"].is_null() && t["system"] == "phone" {
                    t["use"] = json!(default_use);
                }
                telecom.push(t);
            }
        }
    }
    let res = json!({
        "resourceType": "RelatedPerson",
        "identifier": ids,
        "patient": patient.reference,
        "relationship": gt1.rep(11).and_then(|r| relationship(&r)).map(|r| vec![r]),
        "name": gt1.reps(3).iter().filter_map(xpn).collect::<Vec<_>>(),
        "telecom": telecom,
        "gender": gender(gt1.v(9)),
        "birthDate": opt_ts(gt1.v(8), "GT1-8")?.map(|d| d.date),
        "address": gt1.reps(5).iter().filter_map(xad).collect::<Vec<_>>(),
        "period": {
            "start": opt_ts(gt1.v(13), "GT1-13")?.map(|d| d.date_time),
            "end": opt_ts(gt1.v(14), "GT1-14")?.map(|d| d.date_time),
        },
    });
    Ok(Some(reference(&ctx.bundle.add(res, &key, Write::Upsert))))
}

/// IN1 insured person → RelatedPerson (IG `IN1[Coverage]`: `IN1-16 → subscriber(RelatedPerson)`
/// when IN1-17 is not the patient): IN1-16 name, IN1-17 relationship (table 0063), IN1-18
/// birthDate, IN1-19 address, IN1-43 gender, `patient`. Returns its reference: the Patient
/// when IN1-17 is `SEL` or IN1-16 is the patient's name, `None` when IN1-16 is empty.
///
/// # Errors
/// [`MappingError::InvalidValue`] for a malformed IN1-18.
pub(crate) fn insured(
    ctx: &mut Ctx,
    in1: &Seg,
    patient: &PatientRef,
) -> Result<Option<Value>, MappingError> {
    let key = match person(patient, in1.rep(16).as_ref(), in1.vc(17, 1).as_deref()) {
        Person::Patient => return Ok(Some(patient.reference.clone())),
        Person::Nobody => return Ok(None),
        Person::Other(key) => key,
    };
    let res = json!({
        "resourceType": "RelatedPerson",
        "identifier": [key.to_json()],
        "patient": patient.reference,
        "relationship": in1.rep(17).and_then(|r| relationship(&r)).map(|r| vec![r]),
        "name": in1.reps(16).iter().filter_map(xpn).collect::<Vec<_>>(),
        "gender": gender(in1.v(43)),
        "birthDate": opt_ts(in1.v(18), "IN1-18")?.map(|d| d.date),
        "address": in1.reps(19).iter().filter_map(xad).collect::<Vec<_>>(),
    });
    Ok(Some(reference(&ctx.bundle.add(res, &key, Write::Upsert))))
}
