//! PR1 → Procedure (HL7 v2 chapter 6 "Financial Management", PR1 segment; IG segment map
//! `PR1[Procedure]`, message map ADT_A01 group PROCEDURE: `Procedure.subject = Patient`).
//!
//! Procedure.status is required in R4 and the IG leaves it to the message context ("if not
//! clear, use `unknown`"): `preparation` in A05 (pre-admit: the procedure is planned),
//! `completed` when PR1-5 gives when it was done, else `unknown`.
//!
//! The Procedure is matched on PR1-19 (procedure identifier, EI) when present, else on
//! `<patient MRN>-procedure-<PR1-3.1 or PR1-4>[-<PR1-5>]` in the patient's system, so a
//! procedure repeated by a later A08 updates the same resource.

use super::adt::location;
use super::bundle::Write;
use super::datatypes::{concept, cwe, ei, opt_ts};
use super::error::MappingError;
use super::patient::PatientRef;
use super::v2::Seg;
use super::{Ctx, practitioner_ref, role};
use serde_json::{Value, json};

const SCT: &str = "http://snomed.info/sct";

/// PR1 (+ the ROL/PRT segments of its PROCEDURE group) → Procedure, per IG `PR1[Procedure]`:
/// PR1-3 code (`CNE[CodeableConcept]`; PR1-4 → code.text when PR1-3.9 is empty), PR1-5
/// performedDateTime (performedPeriod start, end = PR1-5 + PR1-7 minutes, when PR1-5 has a
/// time and an offset and PR1-7 is valued), PR1-6 category, PR1-8 anesthesiologist
/// (performer.function SNOMED 88189002), PR1-11 surgeon (304292004), PR1-12 procedure
/// practitioner (no function), PR1-15 reasonCode, PR1-19 identifier, PR1-23 location
/// (`PL[Location]`), subject, encounter; each ROL-4 / PRT-5 person of the group is a further
/// performer with ROL-3 / PRT-4 as function. Skipped when PR1-3 and PR1-4 are both empty.
///
/// # Errors
/// [`MappingError::InvalidValue`] for a malformed PR1-5 or ROL/PRT date.
pub(crate) fn procedure(
    ctx: &mut Ctx,
    event: &str,
    pr1: &Seg,
    roles: &[Seg],
    patient: &PatientRef,
    encounter: Option<&Value>,
) -> Result<(), MappingError> {
    let description = pr1.v(4);
    let code = match (pr1.rep(3).and_then(|r| cwe(&r)), &description) {
        (Some(mut c), Some(d)) if pr1.vc(3, 9).is_none() => {
            c["text"] = json!(d);
            c
        }
        (Some(c), _) => c,
        (None, Some(d)) => json!({"text": d}),
        // A PR1 naming no procedure carries nothing to record.
        (None, None) => return Ok(()),
    };
    let start = opt_ts(pr1.v(5), "PR1-5")?;
    let minutes = pr1
        .v(7)
        .and_then(|m| m.parse::<i64>().ok())
        .filter(|m| *m >= 0);
    let period_end = match (&start, minutes) {
        (Some(s), Some(m)) if s.instant.is_some() => add_minutes(&s.date_time, m),
        _ => None,
    };
    let sender = ctx.sender.clone();
    let key = match pr1.rep(19).and_then(|r| ei(ctx, &r, &sender, "PLAC")) {
        Some(mut k) => {
            k.type_code = None;
            k
        }
        None => {
            let label = pr1
                .vc(3, 1)
                .or_else(|| description.clone())
                .unwrap_or_default();
            match pr1.v(5) {
                Some(when) => patient.key.derived(&format!("procedure-{label}-{when}")),
                None => patient.key.derived(&format!("procedure-{label}")),
            }
        }
    };
    let status = if event == "A05" {
        "preparation"
    } else if start.is_some() {
        "completed"
    } else {
        "unknown"
    };
    let mut performers = Vec::new();
    for (field, function) in [
        (8, Some(("88189002", "Anesthesiologist"))),
        (11, Some(("304292004", "Surgeon"))),
        (12, None),
    ] {
        for r in pr1.reps(field) {
            if let Some(actor) = practitioner_ref(ctx, &r) {
                performers.push(json!({
                    "function": function.map(|(c, d)| concept(SCT, c, Some(d))),
                    "actor": actor,
                }));
            }
        }
    }
    for seg in roles {
        if let Some(role) = role(ctx, seg)? {
            for actor in role.actors {
                performers.push(json!({"function": role.code.clone(), "actor": actor}));
            }
        }
    }
    let place = pr1.rep(23).and_then(|r| location(ctx, &r));
    let mut res = json!({
        "resourceType": "Procedure",
        "identifier": [key.to_json()],
        "status": status,
        "category": pr1.rep(6).and_then(|r| cwe(&r)),
        "code": code,
        "subject": patient.reference,
        "encounter": encounter,
        "performer": performers,
        "location": place,
        "reasonCode": pr1.reps(15).iter().filter_map(cwe).collect::<Vec<_>>(),
    });
    match (start, period_end) {
        (Some(s), Some(end)) => {
            res["performedPeriod"] = json!({"start": s.date_time, "end": end});
        }
        (Some(s), None) => res["performedDateTime"] = json!(s.date_time),
        _ => {}
    }
    ctx.bundle.add(res, &key, Write::Upsert);
    Ok(())
}

/// A FHIR dateTime with a time and an offset plus `minutes`, same offset (`Z` for UTC);
/// `None` when it cannot be read as such.
fn add_minutes(date_time: &str, minutes: i64) -> Option<String> {
    let t = chrono::DateTime::parse_from_rfc3339(date_time).ok()?;
    let end = t.checked_add_signed(chrono::Duration::try_minutes(minutes)?)?;
    Some(end.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
}
