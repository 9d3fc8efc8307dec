//! Orders and results (IG message maps ORU_R01, ORM_O01, OML_O21; segment maps
//! `ORC[ServiceRequest]`, `OBR[ServiceRequest]`, `OBR[DiagnosticReport]`, `SPM[Specimen]`).
//!
//! Segments are grouped in message order: PID starts a patient; ORC, or an OBR not preceded
//! by its own ORC, starts an order; OBX, SPM and NTE attach to the current order (an NTE to
//! the OBX before it, else to the order). An OBX before any ORC/OBR is a segment sequence
//! error (the message is refused rather than a result dropped); NTE before any ORC/OBR is not
//! mapped. TQ1 attaches to the current order (see [`timing`]).
//!
//! PV1/PV2 between a PID and that patient's first order are the patient's visit: an
//! Encounter matched on PV1-19 (the ADT `PV1[Encounter]` mapping, status from PV1 alone as for
//! A08) written `POST` + `ifNoneExist`, so an order or result creates the visit only when the
//! ADT feed has not, never a second one and never a status change; ServiceRequest,
//! DiagnosticReport and Observation then refer to it (`encounter`). A PV1 after an order
//! group (OML_O21 PRIOR_RESULT visits) is not mapped.
//!
//! Order numbers: placer ORC-2 (else OBR-2), filler ORC-3 (else OBR-3), as EI. When EI-2..4
//! are empty the system comes from the facility that assigned the number: in ORM/OML the
//! sender (MSH-4) is the placer and the receiver (MSH-6) the filler; in ORU it is the other
//! way round, so a result finds the order it answers.
//!
//! ServiceRequest.status from ORC-1 (table 0119): NW, OK, XO, XR, RL, RE, SC/SS/SN without
//! ORC-5 → `active`; CA, OC, CR, DC, OD, DR → `revoked`; HD, OH → `on-hold`; with ORC-5 order
//! status (table 0038): CM → `completed`, CA, DC, RP → `revoked`, ER → `entered-in-error`,
//! HD → `on-hold`, IP, SC, A → `active`. In ORU the order is `completed` when OBR-25 is `F`
//! (or `C`), else from ORC-5, else `active`. intent is always `order`.
//!
//! Without any order number, an order (ORM/OML) is keyed `<MSH-10>-ORDER<n>` and a report
//! (ORU) `<MSH-10>-OBR<OBR-1>`, both in the system of the assigning facility: idempotent for
//! a re-sent message, not across messages.
//!
//! DiagnosticReport.status from OBR-25 (table 0123): O, I, S → `registered`, A, R → `partial`,
//! P → `preliminary`, C → `corrected`, F → `final`, X → `cancelled`, else `unknown`. R4
//! DiagnosticReport has no `note`: NTEs after OBR go to the ServiceRequest.

use super::adt;
use super::bundle::Write;
use super::datatypes::{Ident, cwe, ei, opt_ts};
use super::error::MappingError;
use super::observation;
use super::patient::{self, PatientRef};
use super::v2::{Seg, segments};
use super::{Ctx, notes, practitioner_ref, reference};
use serde_json::{Value, json};

/// Which side of the order lifecycle the message comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// ORM^O01, OML^O21: sent by the placer.
    Order,
    /// ORU^R01: sent by the filler.
    Result,
}

struct Group<'m> {
    pid: usize,
    orc: Option<Seg<'m>>,
    obr: Option<Seg<'m>>,
    order_notes: Vec<Seg<'m>>,
    obx: Vec<(Seg<'m>, Vec<Seg<'m>>)>,
    spm: Vec<Seg<'m>>,
    /// TQ1 timing/quantity segments of the order (ORDER.TIMING, ORU ORDER_OBSERVATION.TIMING_QTY).
    tq1: Vec<Seg<'m>>,
    /// Whether the last OBX/SPM/order segment seen was an OBX (NTE then belongs to it).
    last_obx: bool,
}

impl<'m> Group<'m> {
    fn new(pid: usize) -> Group<'m> {
        Group {
            pid,
            orc: None,
            obr: None,
            order_notes: Vec::new(),
            obx: Vec::new(),
            spm: Vec::new(),
            tq1: Vec::new(),
            last_obx: false,
        }
    }
}

pub(crate) fn map(ctx: &mut Ctx, kind: Kind) -> Result<(), MappingError> {
    let segs = segments(ctx.msg);
    let mut pids: Vec<PatientSegs> = Vec::new();
    let mut groups: Vec<Group> = Vec::new();
    for s in segs {
        match s.id() {
            "PID" => pids.push(PatientSegs {
                pid: s,
                extra: Vec::new(),
                pv1: None,
                pv2: None,
            }),
            // Patient-level segments: only before the first order of that patient (a PV1
            // inside an order group is a prior result's visit, OML_O21 PRIOR_RESULT).
            "PD1" | "NK1" | "PV1" | "PV2" => {
                let n = pids.len();
                if groups.last().is_none_or(|g| g.pid + 1 != n)
                    && let Some(p) = pids.last_mut()
                {
                    match s.id() {
                        "PV1" if p.pv1.is_none() => p.pv1 = Some(s),
                        "PV2" if p.pv2.is_none() => p.pv2 = Some(s),
                        "PV1" | "PV2" => {}
                        _ => p.extra.push(s),
                    }
                }
            }
            "TQ1" => {
                if let Some(g) = groups.last_mut() {
                    g.tq1.push(s);
                }
            }
            "ORC" => {
                let mut g = Group::new(pids.len().saturating_sub(1));
                g.orc = Some(s);
                groups.push(g);
            }
            "OBR" => match groups.last_mut() {
                Some(g) if g.obr.is_none() && g.obx.is_empty() && g.orc.is_some() => {
                    g.obr = Some(s);
                }
                _ => {
                    let mut g = Group::new(pids.len().saturating_sub(1));
                    g.obr = Some(s);
                    groups.push(g);
                }
            },
            "OBX" => match groups.last_mut() {
                Some(g) => {
                    g.obx.push((s, Vec::new()));
                    g.last_obx = true;
                }
                // A result outside any order group would be silently lost: refuse the
                // message instead (AE, ERR-3 100 segment sequence error).
                None => {
                    return Err(MappingError::MissingSegment {
                        segment: "OBR".into(),
                    });
                }
            },
            "SPM" => {
                if let Some(g) = groups.last_mut() {
                    g.spm.push(s);
                    g.last_obx = false;
                }
            }
            "NTE" => {
                if let Some(g) = groups.last_mut() {
                    match g.obx.last_mut() {
                        Some((_, n)) if g.last_obx => n.push(s),
                        _ => g.order_notes.push(s),
                    }
                }
            }
            _ => {}
        }
    }
    if pids.is_empty() {
        return Err(MappingError::MissingSegment {
            segment: "PID".into(),
        });
    }
    let mut patients = Vec::new();
    let mut encounters = Vec::new();
    for p in &pids {
        let patient = if ctx.cfg.auto_create_patients {
            patient::write(ctx, &p.pid, &p.extra, Write::CreateIfAbsent)?
        } else {
            patient::refer(ctx, &p.pid)?
        };
        // The visit of the order or result (IG ORU_R01 / ORM_O01 / OML_O21 PATIENT_VISIT:
        // `PV1[Encounter]`), created when no Encounter has this PV1-19, never changed.
        let encounter = match &p.pv1 {
            Some(pv1) => adt::encounter(
                ctx,
                "",
                pv1,
                p.pv2.as_ref(),
                &[],
                &patient,
                Write::CreateIfAbsent,
            )?,
            None => None,
        };
        patients.push(patient);
        encounters.push(encounter);
    }
    if groups.is_empty() {
        return Err(MappingError::MissingSegment {
            segment: if kind == Kind::Result { "OBR" } else { "ORC" }.into(),
        });
    }
    let any_obr = groups.iter().any(|g| g.obr.is_some());
    for (i, g) in groups.iter().enumerate() {
        // In a result, an ORC without its own OBR (odd ordering) carries nothing to report.
        if kind == Kind::Result && g.obr.is_none() && any_obr {
            continue;
        }
        let p = patients.get(g.pid).unwrap_or(&patients[0]);
        let encounter = encounters.get(g.pid).cloned().flatten();
        group(ctx, kind, g, i + 1, p, encounter.as_ref())?;
    }
    Ok(())
}

/// ORC-1 (+ ORC-5) → ServiceRequest.status (module table).
fn order_status(control: Option<&str>, order_status: Option<&str>) -> &'static str {
    if let Some(s) = order_status {
        match s {
            "CM" => return "completed",
            "CA" | "DC" | "RP" => return "revoked",
            "ER" => return "entered-in-error",
            "HD" => return "on-hold",
            "IP" | "SC" | "A" => return "active",
            _ => {}
        }
    }
    match control.unwrap_or("NW") {
        "NW" | "OK" | "XO" | "XR" | "RL" | "RE" | "SC" | "SS" | "SN" | "NA" | "RO" | "CH" => {
            "active"
        }
        "CA" | "OC" | "CR" | "DC" | "OD" | "DR" => "revoked",
        "HD" | "OH" => "on-hold",
        _ => "unknown",
    }
}

/// OBR-25 → DiagnosticReport.status (module table).
fn report_status(code: Option<&str>) -> &'static str {
    match code.unwrap_or("") {
        "O" | "I" | "S" => "registered",
        "A" | "R" => "partial",
        "P" => "preliminary",
        "C" => "corrected",
        "F" => "final",
        "X" => "cancelled",
        _ => "unknown",
    }
}

/// The segments that describe one patient of the message: PID, its PD1/NK1, its visit.
struct PatientSegs<'m> {
    pid: Seg<'m>,
    extra: Vec<Seg<'m>>,
    pv1: Option<Seg<'m>>,
    pv2: Option<Seg<'m>>,
}

/// What TQ1 gives a ServiceRequest (see [`timing`]).
#[derive(Default)]
struct Timing {
    /// ServiceRequest.occurrenceTiming.
    occurrence: Option<Value>,
    /// ServiceRequest.priority (request-priority code).
    priority: Option<&'static str>,
    /// ServiceRequest.note additions.
    notes: Vec<Value>,
}

/// TQ1 (HL7 v2 chapter 4 "Orders", TQ1 timing/quantity) → ServiceRequest per IG
/// `TQ1[ServiceRequest]`: TQ1-7 start / TQ1-8 end → occurrenceTiming.repeat.boundsPeriod,
/// TQ1-9 priority (table 0485 via IG ConceptMap table-hl70485-to-request-priority: S →
/// `stat`, A → `asap`, R → `routine`; other codes have no R4 equivalent and are dropped),
/// TQ1-11 text instruction → note. The first TQ1 with any of these fields is used (R4
/// occurrence[x] and priority are single).
///
/// # Errors
/// [`MappingError::InvalidValue`] for a malformed TQ1-7 or TQ1-8.
fn timing(tq1s: &[Seg]) -> Result<Timing, MappingError> {
    let Some(tq) = tq1s
        .iter()
        .find(|t| t.v(7).is_some() || t.v(8).is_some() || t.v(9).is_some() || t.v(11).is_some())
    else {
        return Ok(Timing::default());
    };
    let start = opt_ts(tq.v(7), "TQ1-7")?;
    let end = opt_ts(tq.v(8), "TQ1-8")?;
    let occurrence = (start.is_some() || end.is_some()).then(|| {
        json!({"repeat": {"boundsPeriod": {
            "start": start.map(|s| s.date_time),
            "end": end.map(|e| e.date_time),
        }}})
    });
    let priority = tq.v(9).and_then(|p| match p.to_ascii_uppercase().as_str() {
        "S" => Some("stat"),
        "A" => Some("asap"),
        "R" => Some("routine"),
        _ => None,
    });
    let notes = tq
        .texts(11)
        .into_iter()
        .map(|t| json!({"text": t}))
        .collect();
    Ok(Timing {
        occurrence,
        priority,
        notes,
    })
}

fn group(
    ctx: &mut Ctx,
    kind: Kind,
    g: &Group,
    index: usize,
    patient: &PatientRef,
    encounter: Option<&Value>,
) -> Result<(), MappingError> {
    let (placer_fac, filler_fac) = match kind {
        Kind::Order => (ctx.sender.clone(), ctx.receiver.clone()),
        Kind::Result => (ctx.receiver.clone(), ctx.sender.clone()),
    };
    let number = |ctx: &Ctx, field: usize, fac: &str, code: &str| -> Option<Ident> {
        let from = |s: &Option<Seg>| {
            s.and_then(|s| s.rep(field))
                .and_then(|r| ei(ctx, &r, fac, code))
        };
        from(&g.orc).or_else(|| from(&g.obr))
    };
    let placer = number(ctx, 2, &placer_fac, "PLAC");
    let filler = number(ctx, 3, &filler_fac, "FILL");
    let obr = g.obr;
    let code = obr.and_then(|o| o.rep(4)).and_then(|r| cwe(&r));
    let obr25 = obr.and_then(|o| o.v(25));
    let orc5 = g.orc.and_then(|o| o.v(5));

    // Specimens first: the ServiceRequest, report and observations refer to them.
    let base = filler.clone().or_else(|| placer.clone());
    let mut specimens = Vec::new();
    for (i, spm) in g.spm.iter().enumerate() {
        if let Some(r) = specimen(
            ctx,
            spm,
            i + 1,
            base.as_ref(),
            &placer_fac,
            &filler_fac,
            patient,
        )? {
            specimens.push(r);
        }
    }

    let control = ctx.msg.control_id().trim().to_owned();
    let sr_key = placer.clone().or_else(|| filler.clone()).or_else(|| {
        // An order without placer or filler number: keyed on MSH-10 and its position, so
        // a re-sent message stays idempotent.
        (kind == Kind::Order && !control.is_empty()).then(|| {
            let sys = super::datatypes::facility_system(ctx.cfg, &placer_fac);
            Ident::new(sys, format!("{control}-ORDER{index}"))
        })
    });
    let mut sr_url = None;
    if let Some(key) = &sr_key {
        let status = match kind {
            Kind::Result if matches!(obr25.as_deref(), Some("F") | Some("C")) => "completed",
            Kind::Result => order_status(Some("RE"), orc5.as_deref()),
            Kind::Order => order_status(g.orc.and_then(|o| o.v(1)).as_deref(), orc5.as_deref()),
        };
        let requester = match g.orc.and_then(|o| o.rep(12)) {
            Some(r) => practitioner_ref(ctx, &r),
            None => obr
                .and_then(|o| o.rep(16))
                .and_then(|r| practitioner_ref(ctx, &r)),
        };
        let authored = opt_ts(g.orc.and_then(|o| o.v(9)), "ORC-9")?;
        let Timing {
            occurrence,
            priority,
            notes: mut timing_notes,
        } = timing(&g.tq1)?;
        let mut sr_notes = notes(&g.order_notes);
        sr_notes.append(&mut timing_notes);
        let sr = json!({
            "resourceType": "ServiceRequest",
            "identifier": [placer.as_ref().map(Ident::to_json), filler.as_ref().map(Ident::to_json)],
            "status": status,
            "intent": "order",
            "priority": priority,
            "code": code,
            "subject": patient.reference,
            "encounter": encounter,
            "occurrenceTiming": occurrence,
            "authoredOn": authored.map(|d| d.date_time),
            "requester": requester,
            "specimen": specimens,
            "note": sr_notes,
        });
        sr_url = Some(ctx.bundle.add(sr, key, Write::Upsert));
    }

    match kind {
        Kind::Order => {
            // OBX in an order: supporting observations of the request.
            if let Some(base) = &sr_key {
                for (i, (obx, ntes)) in g.obx.iter().enumerate() {
                    let key = base.derived(&format!(
                        "obx-{}",
                        obx.v(1).unwrap_or_else(|| (i + 1).to_string())
                    ));
                    let mut o = observation::observation(obx, notes(ntes), code.as_ref())?;
                    o["identifier"] = json!([key.to_json()]);
                    o["subject"] = patient.reference.clone();
                    o["encounter"] = encounter.cloned().unwrap_or(Value::Null);
                    o["basedOn"] = json!(
                        sr_url
                            .as_deref()
                            .map(reference)
                            .into_iter()
                            .collect::<Vec<_>>()
                    );
                    ctx.bundle.add(o, &key, Write::Upsert);
                }
            }
        }
        Kind::Result => {
            let Some(obr) = obr else {
                return Err(MappingError::MissingSegment {
                    segment: "OBR".into(),
                });
            };
            let report_key = match filler.clone().or_else(|| placer.clone()) {
                Some(k) => k,
                None => {
                    // No order number at all: the message control id keeps a re-sent
                    // message idempotent.
                    let control = ctx.msg.control_id();
                    if control.trim().is_empty() {
                        return Err(MappingError::missing("OBR-3", "Filler Order Number"));
                    }
                    let set = obr.v(1).unwrap_or_else(|| index.to_string());
                    let sys = super::datatypes::facility_system(ctx.cfg, &filler_fac);
                    Ident::new(sys, format!("{}-OBR{set}", control.trim()))
                }
            };
            let code =
                code.ok_or_else(|| MappingError::missing("OBR-4", "Universal Service Identifier"))?;
            let mut results = Vec::new();
            let mut used: Vec<String> = Vec::new();
            for (i, (obx, ntes)) in g.obx.iter().enumerate() {
                // OBX-1, made unique within the report (some senders repeat set ids).
                let mut set_id = obx.v(1).unwrap_or_else(|| (i + 1).to_string());
                if used.contains(&set_id) {
                    set_id = format!("{set_id}-{}", i + 1);
                }
                used.push(set_id.clone());
                let key = report_key.derived(&set_id);
                let mut o = observation::observation(obx, notes(ntes), Some(&code))?;
                let performer = obx.rep(16).and_then(|r| practitioner_ref(ctx, &r));
                o["identifier"] =
                    json!([Ident::new(key.system.clone(), key.value.clone()).to_json()]);
                o["basedOn"] = json!(
                    sr_url
                        .as_deref()
                        .map(reference)
                        .into_iter()
                        .collect::<Vec<_>>()
                );
                o["subject"] = patient.reference.clone();
                o["encounter"] = encounter.cloned().unwrap_or(Value::Null);
                o["performer"] = json!(performer.into_iter().collect::<Vec<_>>());
                o["specimen"] = specimens.first().cloned().unwrap_or(Value::Null);
                results.push(reference(&ctx.bundle.add(o, &key, Write::Upsert)));
            }
            let effective = opt_ts(obr.v(7), "OBR-7")?;
            let issued = opt_ts(obr.v(22), "OBR-22")?;
            let mut report_id = report_key.clone();
            report_id.type_code = None;
            let dr = json!({
                "resourceType": "DiagnosticReport",
                "identifier": [report_id.to_json()],
                "basedOn": sr_url.as_deref().map(reference).into_iter().collect::<Vec<_>>(),
                "status": report_status(obr25.as_deref()),
                "code": code,
                "subject": patient.reference,
                "encounter": encounter,
                "effectiveDateTime": effective.map(|d| d.date_time),
                "issued": issued.and_then(|d| d.instant),
                "specimen": specimens,
                "result": results,
            });
            ctx.bundle.add(dr, &report_key, Write::Upsert);
        }
    }
    Ok(())
}

/// SPM → Specimen: SPM-2 identifier (EIP: filler SPM-2.2, else placer SPM-2.1, else
/// `<order>-specimen-<SPM-1>`), SPM-4 type, SPM-8 collection.bodySite, SPM-17.1
/// collection.collectedDateTime, SPM-18 receivedTime, subject. `None` when there is no
/// identifier to match on.
#[allow(clippy::too_many_arguments)]
fn specimen(
    ctx: &mut Ctx,
    spm: &Seg,
    index: usize,
    order: Option<&Ident>,
    placer_fac: &str,
    filler_fac: &str,
    patient: &PatientRef,
) -> Result<Option<Value>, MappingError> {
    let eip = spm.rep(2);
    let from = |n: usize, fac: &str| {
        eip.as_ref()
            .and_then(|r| r.sub(n))
            .and_then(|r| ei(ctx, &r, fac, "SID"))
    };
    let id = from(2, filler_fac).or_else(|| from(1, placer_fac));
    let key = match (id, order) {
        (Some(mut id), _) => {
            id.type_code = None;
            id
        }
        (None, Some(o)) => {
            let mut k = o.derived(&format!(
                "specimen-{}",
                spm.v(1).unwrap_or_else(|| index.to_string())
            ));
            k.type_code = None;
            k
        }
        (None, None) => return Ok(None),
    };
    let collected = opt_ts(spm.rep(17).and_then(|r| r.c(1)), "SPM-17")?;
    let received = opt_ts(spm.v(18), "SPM-18")?;
    let res = json!({
        "resourceType": "Specimen",
        "identifier": [key.to_json()],
        "type": spm.rep(4).and_then(|r| cwe(&r)),
        "subject": patient.reference,
        "receivedTime": received.map(|d| d.date_time),
        "collection": {
            "collectedDateTime": collected.map(|d| d.date_time),
            "bodySite": spm.rep(8).and_then(|r| cwe(&r)),
        },
    });
    let url = ctx.bundle.add(res, &key, Write::Upsert);
    Ok(Some(reference(&url)))
}
