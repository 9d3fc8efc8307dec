//! ADT messages (IG message maps ADT_A01 ... ADT_A40): Patient, Encounter (PV1/PV2 and the
//! ROL/PRT of the visit), Location (PV1-3 PL), Practitioner (PV1-7/8/17, ROL-4, PRT-5),
//! AllergyIntolerance (AL1), Condition (DG1), Procedure (PR1 and its ROL/PRT, see
//! `procedure.rs`), RelatedPerson (GT1, IN1-16 insured, see `related.rs`), Coverage and its
//! payor Organization (IN1).
//!
//! ROL and PRT segments are read in the group they follow (ADT_A01 structure): after PID/PD1
//! a `PP` (primary care provider) role becomes Patient.generalPractitioner
//! (`ROL[Patient-GeneralPractitioner]`; other patient roles, IG `ROL[CareTeam]`, are not
//! mapped); after PV1/PV2 an Encounter.participant (`ROL[Encounter-PractitionerRole]`); after
//! PR1 a Procedure.performer. ROL/PRT anywhere else (insurance, ...) are not mapped.
//!
//! Encounter.status per trigger event (R4 encounter-status):
//!
//! | event | status | why |
//! |---|---|---|
//! | A01 admit | `in-progress` | |
//! | A02 transfer | `in-progress` | PV1-3 new location `active`, PV1-6 prior location `completed` |
//! | A03 discharge | `finished` | PV1-45 → period.end, location `completed` |
//! | A04 register | `arrived` | the outpatient/emergency patient is present, not yet seen |
//! | A05 pre-admit | `planned` | location `planned` |
//! | A08 update | from PV1: PV1-45 → `finished`, PV1-44 → `in-progress`, PV1-2 `P` → `planned`, else `unknown` | |
//! | A11 cancel admit | `cancelled` | the encounter ended before it began (not `entered-in-error`: the admit was real, then withdrawn) |
//! | A12 cancel transfer | `in-progress` | PV1-3 holds the location the patient is back in |
//! | A13 cancel discharge | `in-progress` | period.end dropped |
//!
//! A28/A31 write the Patient only; A40 merges patients (see `patient.rs`). The Encounter is
//! matched on PV1-19 (visit number, type VN); when PV1-19 is empty but PV1-44 is present the
//! identifier `<patient MRN>-visit-<PV1-44>` (patient's system) is used; with neither, no
//! Encounter is written.

use super::bundle::Write;
use super::datatypes::{Ident, concept, cwe, cx, ei, opt_ts};
use super::error::MappingError;
use super::patient::{self, PatientRef};
use super::v2::{Rep, Seg, segments};
use super::{Ctx, practitioner_ref, procedure, reference, related, role};
use serde_json::{Value, json};

const ACT_CODE: &str = "http://terminology.hl7.org/CodeSystem/v3-ActCode";
const PARTICIPATION: &str = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType";
const PHYSICAL_TYPE: &str = "http://terminology.hl7.org/CodeSystem/location-physical-type";
/// System of the Location identifiers built from PL (value: `facility/point of care/room/bed`).
pub(crate) const LOCATION_SYSTEM: &str = "urn:mediflow:hl7:location";

pub(crate) fn map(ctx: &mut Ctx, event: &str) -> Result<(), MappingError> {
    match event {
        "A01" | "A02" | "A03" | "A04" | "A05" | "A08" | "A11" | "A12" | "A13" | "A28" | "A31" => {}
        "A40" => return patient::merge(ctx),
        _ => {
            return Err(MappingError::UnsupportedEvent {
                message_type: "ADT".into(),
                event: event.into(),
            });
        }
    }
    let segs = segments(ctx.msg);
    let pid = segs
        .iter()
        .find(|s| s.id() == "PID")
        .copied()
        .ok_or_else(|| MappingError::MissingSegment {
            segment: "PID".into(),
        })?;
    // ROL/PRT belong to the segment group they follow (ADT_A01: after PID/PD1 the patient,
    // after PV1/PV2 the visit, after PR1 the procedure); elsewhere they are not mapped.
    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Within {
        Patient,
        Visit,
        Procedure,
        Other,
    }
    let mut within = Within::Other;
    let mut extra: Vec<Seg> = Vec::new();
    let mut visit_roles: Vec<Seg> = Vec::new();
    let mut procedures: Vec<(Seg, Vec<Seg>)> = Vec::new();
    for s in &segs {
        match s.id() {
            "PID" | "PD1" => {
                if s.id() == "PD1" {
                    extra.push(*s);
                }
                within = Within::Patient;
            }
            "NK1" => {
                extra.push(*s);
                within = Within::Other;
            }
            "PV1" | "PV2" => within = Within::Visit,
            "PR1" => {
                procedures.push((*s, Vec::new()));
                within = Within::Procedure;
            }
            "ROL" | "PRT" => match within {
                Within::Patient => extra.push(*s),
                Within::Visit => visit_roles.push(*s),
                Within::Procedure => {
                    if let Some((_, roles)) = procedures.last_mut() {
                        roles.push(*s);
                    }
                }
                Within::Other => {}
            },
            "ARV" => {}
            _ => within = Within::Other,
        }
    }
    let patient = patient::write(ctx, &pid, &extra, Write::Upsert)?;
    if matches!(event, "A28" | "A31") {
        return Ok(());
    }
    let encounter = match segs.iter().find(|s| s.id() == "PV1") {
        Some(pv1) => {
            let pv2 = segs.iter().find(|s| s.id() == "PV2").copied();
            encounter(
                ctx,
                event,
                pv1,
                pv2.as_ref(),
                &visit_roles,
                &patient,
                Write::Upsert,
            )?
        }
        None => None,
    };
    for (pr1, roles) in &procedures {
        procedure::procedure(ctx, event, pr1, roles, &patient, encounter.as_ref())?;
    }
    for s in &segs {
        match s.id() {
            "AL1" => allergy(ctx, s, &patient)?,
            "DG1" => condition(ctx, s, &patient, encounter.as_ref())?,
            "GT1" => {
                related::guarantor(ctx, s, &patient)?;
            }
            "IN1" => coverage(ctx, s, &patient)?,
            _ => {}
        }
    }
    Ok(())
}

/// PV1 (+PV2) → Encounter: PV1-19 identifier, status per event (module table), PV1-2 class
/// (v3-ActCode), PV1-4 type (v2-0007), PV1-10 serviceType (v2-0069), PV1-3 (and for A02
/// PV1-6) location, PV1-7 ATND / PV1-8 REF / PV1-9 CON / PV1-17 ADM participants, PV1-44/45
/// period, PV1-14 admitSource, PV1-36 dischargeDisposition, PV2-3 reasonCode; the ROL/PRT
/// segments of the visit (`roles`) add participants (IG `ROL[Encounter-PractitionerRole]`:
/// ROL-3 → participant.type, ROL-4 → individual, ROL-5/6 → period). Returns the Encounter
/// reference, `None` when no identifier could be built.
///
/// `event` is the ADT trigger event; any other value (`""` for ORU^R01, ORM^O01, OML^O21)
/// derives the status from PV1 alone like A08. `write` is [`Write::Upsert`] in ADT (the
/// ADT feed owns the visit) and [`Write::CreateIfAbsent`] in orders and results, which only
/// create a visit they do not find by PV1-19 and never change one.
pub(crate) fn encounter(
    ctx: &mut Ctx,
    event: &str,
    pv1: &Seg,
    pv2: Option<&Seg>,
    roles: &[Seg],
    patient: &PatientRef,
    write: Write,
) -> Result<Option<Value>, MappingError> {
    let start = opt_ts(pv1.v(44), "PV1-44")?;
    let end = opt_ts(pv1.v(45), "PV1-45")?;
    let sender = ctx.sender.clone();
    let key = match pv1.rep(19).and_then(|r| cx(ctx, &r, &sender)) {
        Some(mut k) => {
            k.type_code = Some("VN".into());
            k
        }
        None => match &start {
            Some(s) => {
                let mut k = patient.key.derived(&format!("visit-{}", s.date_time));
                k.type_code = Some("VN".into());
                k
            }
            None => return Ok(None),
        },
    };
    let class_code = pv1.v(2).unwrap_or_default();
    let status = match event {
        "A01" | "A02" | "A12" | "A13" => "in-progress",
        "A03" => "finished",
        "A04" => "arrived",
        "A05" => "planned",
        "A11" => "cancelled",
        _ if end.is_some() => "finished",
        _ if start.is_some() => "in-progress",
        _ if class_code == "P" => "planned",
        _ => "unknown",
    };
    let class = match class_code.as_str() {
        "I" | "B" => concept(ACT_CODE, "IMP", Some("inpatient encounter"))["coding"][0].clone(),
        "O" | "R" | "C" | "N" => concept(ACT_CODE, "AMB", Some("ambulatory"))["coding"][0].clone(),
        "E" => concept(ACT_CODE, "EMER", Some("emergency"))["coding"][0].clone(),
        "P" => concept(ACT_CODE, "PRENC", Some("pre-admission"))["coding"][0].clone(),
        _ => {
            json!({"system": "http://terminology.hl7.org/CodeSystem/v3-NullFlavor", "code": "UNK"})
        }
    };
    let loc_status = match status {
        "finished" | "cancelled" => "completed",
        "planned" => "planned",
        _ => "active",
    };
    let mut locations = Vec::new();
    if let Some(r) = pv1.rep(3)
        && let Some(l) = location(ctx, &r)
    {
        locations.push(json!({"location": l, "status": loc_status}));
    }
    if event == "A02"
        && let Some(r) = pv1.rep(6)
        && let Some(l) = location(ctx, &r)
    {
        locations.push(json!({"location": l, "status": "completed"}));
    }
    let mut participants = Vec::new();
    for (field, code, display) in [
        (7, "ATND", "attender"),
        (8, "REF", "referrer"),
        (9, "CON", "consultant"),
        (17, "ADM", "admitter"),
    ] {
        for r in pv1.reps(field) {
            if let Some(p) = practitioner_ref(ctx, &r) {
                participants.push(json!({
                    "type": [concept(PARTICIPATION, code, Some(display))],
                    "individual": p,
                }));
            }
        }
    }
    for seg in roles {
        if let Some(role) = role(ctx, seg)? {
            for actor in role.actors {
                participants.push(json!({
                    "type": role.code.as_ref().map(|c| vec![c.clone()]),
                    "individual": actor,
                    "period": {"start": role.start, "end": role.end},
                }));
            }
        }
    }
    let end = if event == "A13" { None } else { end };
    let enc = json!({
        "resourceType": "Encounter",
        "identifier": [key.to_json()],
        "status": status,
        "class": class,
        "type": pv1.v(4).map(|t| vec![concept("http://terminology.hl7.org/CodeSystem/v2-0007", &t, None)]),
        "serviceType": pv1.v(10).map(|t| concept("http://terminology.hl7.org/CodeSystem/v2-0069", &t, None)),
        "subject": patient.reference,
        "participant": participants,
        "period": {
            "start": start.map(|s| s.date_time),
            "end": end.map(|s| s.date_time),
        },
        "reasonCode": pv2.and_then(|p| p.rep(3)).and_then(|r| cwe(&r)).map(|c| vec![c]),
        "hospitalization": {
            "admitSource": pv1.v(14).map(|t| concept("http://terminology.hl7.org/CodeSystem/v2-0023", &t, None)),
            "dischargeDisposition": pv1.v(36).map(|t| concept("http://terminology.hl7.org/CodeSystem/v2-0112", &t, None)),
        },
        "location": locations,
    });
    let url = ctx.bundle.add(enc, &key, write);
    Ok(Some(reference(&url)))
}

/// PL → Location hierarchy (IG `PL[Location]`): PL-1 point of care (physical type `wa`),
/// PL-2 room (`ro`), PL-3 bed (`bd`), each level `partOf` the one above, within the PL-4
/// facility (else MSH-4). Each level is created when missing (`POST` + `ifNoneExist` on
/// identifier [`LOCATION_SYSTEM`]|`facility/poc/room/bed`). Returns a reference to the most
/// specific level.
pub(crate) fn location(ctx: &mut Ctx, pl: &Rep) -> Option<Value> {
    let facility = pl.c(4).unwrap_or_else(|| ctx.sender.clone());
    let levels = [(1, "wa", "Ward"), (2, "ro", "Room"), (3, "bd", "Bed")];
    let mut path = vec![facility];
    let mut parent: Option<String> = None;
    for (comp, code, display) in levels {
        let Some(name) = pl.c(comp) else {
            path.push(String::new());
            continue;
        };
        path.push(name.clone());
        let key = Ident::new(LOCATION_SYSTEM, path.join("/"));
        let loc = json!({
            "resourceType": "Location",
            "identifier": [key.to_json()],
            "status": "active",
            "name": name,
            "mode": "instance",
            "physicalType": concept(PHYSICAL_TYPE, code, Some(display)),
            "partOf": parent.as_deref().map(reference),
        });
        parent = Some(ctx.bundle.add(loc, &key, Write::CreateIfAbsent));
    }
    parent.map(|p| reference(&p))
}

/// AL1 → AllergyIntolerance: AL1-3 code, AL1-2 category (DA medication, FA food, EA/AA/PA/LA
/// environment), AL1-4 criticality (SV high, MO/MI low, U unable-to-assess), AL1-5
/// reaction, AL1-6 onset. Matched on `<patient>-allergy-<AL1-3.1 or text>`. Skipped when
/// AL1-3 is empty.
fn allergy(ctx: &mut Ctx, al1: &Seg, patient: &PatientRef) -> Result<(), MappingError> {
    let Some(code) = al1.rep(3).and_then(|r| cwe(&r)) else {
        // An AL1 without allergen names nothing: skipped rather than refusing the ADT.
        return Ok(());
    };
    let label = al1
        .vc(3, 1)
        .or_else(|| al1.vc(3, 2))
        .unwrap_or_else(|| "allergy".into());
    let key = patient.key.derived(&format!("allergy-{label}"));
    let category = al1.v(2).and_then(|c| match c.as_str() {
        "DA" => Some("medication"),
        "FA" => Some("food"),
        "EA" | "AA" | "PA" | "LA" => Some("environment"),
        _ => None,
    });
    let criticality = al1.v(4).and_then(|c| match c.as_str() {
        "SV" => Some("high"),
        "MO" | "MI" => Some("low"),
        "U" => Some("unable-to-assess"),
        _ => None,
    });
    let reactions: Vec<Value> = al1
        .texts(5)
        .into_iter()
        .map(|t| json!({"manifestation": [{"text": t}]}))
        .collect();
    let res = json!({
        "resourceType": "AllergyIntolerance",
        "identifier": [key.to_json()],
        "clinicalStatus": concept("http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical", "active", None),
        "category": category.map(|c| vec![c]),
        "criticality": criticality,
        "code": code,
        "patient": patient.reference,
        "onsetDateTime": opt_ts(al1.v(6), "AL1-6")?.map(|d| d.date_time),
        "reaction": reactions,
    });
    ctx.bundle.add(res, &key, Write::Upsert);
    Ok(())
}

/// DG1 → Condition: DG1-3 code (DG1-4 text), category `encounter-diagnosis`, DG1-5 onset,
/// subject, encounter. Matched on DG1-20 (EI) else `<patient>-dx-<DG1-3.1>`.
fn condition(
    ctx: &mut Ctx,
    dg1: &Seg,
    patient: &PatientRef,
    encounter: Option<&Value>,
) -> Result<(), MappingError> {
    let code = dg1
        .rep(3)
        .and_then(|r| cwe(&r))
        .or_else(|| dg1.v(4).map(|t| json!({"text": t})));
    let Some(code) = code else {
        return Err(MappingError::missing("DG1-3", "Diagnosis Code - DG1"));
    };
    let sender = ctx.sender.clone();
    let key = match dg1.rep(20).and_then(|r| ei(ctx, &r, &sender, "PLAC")) {
        Some(mut k) => {
            k.type_code = None;
            k
        }
        None => {
            let label = dg1.vc(3, 1).or_else(|| dg1.v(4)).unwrap_or_default();
            patient.key.derived(&format!("dx-{label}"))
        }
    };
    let res = json!({
        "resourceType": "Condition",
        "identifier": [key.to_json()],
        "category": [concept("http://terminology.hl7.org/CodeSystem/condition-category", "encounter-diagnosis", Some("Encounter Diagnosis"))],
        "code": code,
        "subject": patient.reference,
        "encounter": encounter,
        "onsetDateTime": opt_ts(dg1.v(5), "DG1-5")?.map(|d| d.date_time),
    });
    ctx.bundle.add(res, &key, Write::Upsert);
    Ok(())
}

/// IN1 → Coverage (IG `IN1[Coverage]`): status `active`, IN1-36 policy number identifier (else
/// `<patient>-coverage-<IN1-2 or IN1-3 or IN1-1>`), IN1-15 type (v2-0086), IN1-12/13
/// period, IN1-17 relationship, IN1-49 subscriberId, beneficiary; payor: the insurance
/// company (IN1-3 id, IN1-4 name, IN1-5 address) as an Organization created when missing
/// (IG: IN1-4 → payor(Organization)), display-only without IN1-3; subscriber (IG IN1-16/17),
/// only when IN1-17 is valued: the Patient when IN1-17 is `SEL` (self) or IN1-16 is the
/// patient's name, else the insured person (IN1-16 name, IN1-17 relationship, IN1-18 birth
/// date, IN1-19 address, IN1-43 sex) as a RelatedPerson of the patient, the same
/// RelatedPerson as a GT1 guarantor of the same name. Skipped when there is no payor at all.
fn coverage(ctx: &mut Ctx, in1: &Seg, patient: &PatientRef) -> Result<(), MappingError> {
    let Some(payor) = in1.vc(4, 1).or_else(|| in1.vc(3, 1)) else {
        return Ok(());
    };
    let sender = ctx.sender.clone();
    let key = match in1.v(36) {
        Some(policy) => {
            let sys = in1
                .rep(3)
                .and_then(|r| cx(ctx, &r, &sender))
                .map(|i| i.system)
                .unwrap_or_else(|| super::datatypes::facility_system(ctx.cfg, &sender));
            Ident::new(sys, policy)
        }
        None => {
            let label = in1
                .vc(2, 1)
                .or_else(|| in1.vc(3, 1))
                .or_else(|| in1.v(1))
                .unwrap_or_default();
            patient.key.derived(&format!("coverage-{label}"))
        }
    };
    let payor_ref = match in1.rep(3).and_then(|r| cx(ctx, &r, &sender)) {
        Some(mut org_id) => {
            org_id.type_code = None;
            let org = json!({
                "resourceType": "Organization",
                "identifier": [org_id.to_json()],
                "name": in1.vc(4, 1),
                "address": in1.reps(5).iter().filter_map(super::datatypes::xad).collect::<Vec<_>>(),
            });
            let url = ctx.bundle.add(org, &org_id, Write::CreateIfAbsent);
            json!({"reference": url, "display": payor})
        }
        None => json!({"display": payor}),
    };
    let subscriber = match in1.vc(17, 1) {
        Some(_) => related::insured(ctx, in1, patient)?,
        None => None,
    };
    let res = json!({
        "resourceType": "Coverage",
        "identifier": [key.to_json()],
        "status": "active",
        "type": in1.v(15).map(|t| concept("http://terminology.hl7.org/CodeSystem/v2-0086", &t, None)),
        "subscriberId": in1.v(49),
        "beneficiary": patient.reference,
        "relationship": in1.rep(17).and_then(|r| cwe(&r)),
        "period": {
            "start": opt_ts(in1.v(12), "IN1-12")?.map(|d| d.date_time),
            "end": opt_ts(in1.v(13), "IN1-13")?.map(|d| d.date_time),
        },
        "subscriber": subscriber,
        "payor": [payor_ref],
    });
    ctx.bundle.add(res, &key, Write::Upsert);
    Ok(())
}
