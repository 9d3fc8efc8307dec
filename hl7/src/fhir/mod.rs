//! HL7 v2 → FHIR R4: one message becomes one `transaction` Bundle (as `serde_json::Value`),
//! following the HL7 V2-to-FHIR Implementation Guide
//! (<https://build.fhir.org/ig/HL7/v2-to-fhir/>: "Message Maps", "Segment Maps",
//! "Datatype Maps", "Vocabulary Maps").
//!
//! Entry point: [`to_transaction`] with a [`MappingConfig`]; failures are [`MappingError`]s
//! that know their ACK code (AR/AE) and table 0357 error code.
//!
//! # File map
//!
//! | file | what | IG sections |
//! |---|---|---|
//! | `mod.rs` | [`MappingConfig`], [`to_transaction`], dispatch on MSH-9, practitioners (XCN), roles (ROL, PRT), notes (NTE) | Message Maps, `XCN[Practitioner]`, person part of `ROL[Encounter-PractitionerRole]` / `PRT[PractitionerRole]` |
//! | `error.rs` | [`MappingError`] | — |
//! | `bundle.rs` | the Bundle under construction, criteria encoding, deterministic `urn:uuid` | — |
//! | `v2.rs` | segment access: unescaped, trimmed values, `""` read as absent | — |
//! | `datatypes.rs` | CX, EI, HD, XPN, XAD, XTN, CWE/CE, TS/DTM/DT, NM, XCN | Datatype Maps |
//! | `patient.rs` | PID, PD1, NK1 → Patient (PID-10/22 → US Core race/ethnicity); ROL/PRT `PP` → generalPractitioner; MRG (A40 merge) | `PID[Patient]`, `PD1[Patient]`, NK1, `ROL[Patient-GeneralPractitioner]`, `PRT[Patient-GeneralPractitioner-Practitioner]`, MRG |
//! | `adt.rs` | ADT events; PV1/PV2 (+ their ROL/PRT) → Encounter, PL → Location; AL1, DG1, IN1 (+ payor Organization, subscriber) | ADT_A01 ... ADT_A40, `PV1[Encounter]`, `ROL[Encounter-PractitionerRole]`, `AL1[AllergyIntolerance]`, `DG1[Condition]`, `IN1[Coverage]` |
//! | `procedure.rs` | PR1 (+ its ROL/PRT) → Procedure | ADT_A01 PROCEDURE, `PR1[Procedure]` |
//! | `related.rs` | GT1 guarantor, IN1-16 insured → RelatedPerson | `NK1[RelatedPerson]` pattern (no GT1 map in the IG), `IN1[Coverage]` subscriber |
//! | `orders.rs` | ORU^R01, ORM^O01, OML^O21; ORC/OBR → ServiceRequest, TQ1 → ServiceRequest occurrence/priority, OBR → DiagnosticReport, SPM → Specimen, PV1 → Encounter (create when absent) | ORU_R01, ORM_O01, OML_O21, `ORC[ServiceRequest]`, `OBR[ServiceRequest]`, `TQ1[ServiceRequest]`, `OBR[DiagnosticReport]`, `SPM[Specimen]`, `PV1[Encounter]` |
//! | `observation.rs` | OBX → Observation (`value[x]` by OBX-2, referenceRange, interpretation, status) | `OBX[Observation]` |
//!
//! # Writes: every entry is idempotent
//!
//! Every entry is either a conditional update `PUT Type?identifier=system|value` (the message
//! is the source of truth for that resource: Patient and Encounter in ADT, ServiceRequest,
//! DiagnosticReport, Observation, Specimen, AllergyIntolerance, Condition, Procedure,
//! RelatedPerson, Coverage) or a conditional create `POST Type` + `ifNoneExist:
//! identifier=system|value` (create when missing, never overwrite: Practitioner, Location,
//! Organization, and the Patient and Encounter of an order or result message, whose
//! demographics and visit belong to the ADT feed). Mapping and posting the same message
//! twice therefore changes nothing the second time. `fullUrl`s are `urn:uuid:`s derived from
//! type and criteria, so the Bundle of a message is the same on every run.
//!
//! Match identifiers: Patient by the first PID-3 with CX-5 `MR` (else the first PID-3);
//! Encounter by PV1-19 (type VN); ServiceRequest by placer number ORC-2/OBR-2 (type PLAC),
//! else filler ORC-3/OBR-3 (FILL); DiagnosticReport by filler number (else placer);
//! Observation by `<report identifier>-<OBX-1>`; Specimen by SPM-2; Practitioner by XCN-1;
//! Location by its place path; Procedure by PR1-19, else `<MRN>-procedure-<PR1-3.1>-<PR1-5>`;
//! RelatedPerson by `<MRN>-related-<FAMILY>-<GIVEN>`; Organization (payor) by IN1-3.
//! Systems: see [`MappingConfig`].
//!
//! # Dates and times
//!
//! FHIR `dateTime` needs a timezone as soon as it has a time. A v2 TS/DTM with an offset
//! keeps its full precision and offset (seconds padded with `:00` when v2 stops at the hour or
//! minute: `202001011230+0100` → `2020-01-01T12:30:00+01:00`). Without an offset the time is
//! dropped and only the date kept (`20200101123000` → `2020-01-01`): we do not guess the
//! sender's zone. `instant` elements (DiagnosticReport.issued) are only set from values
//! with a time and an offset. A malformed date in a mapped field is an
//! [`MappingError::InvalidValue`] (AE, 102).
//!
//! # Not mapped
//!
//! OBX segments of ADT messages and any Z-segment are ignored. Also left out: ROL/PRT roles
//! other than the patient's `PP` (IG `ROL[CareTeam]` / `PRT[CareTeam]`), ROL/PRT of the insurance
//! group, PRT in orders and results (`PRT[PractitionerRole]`, `PRT[Device]`,
//! `PRT[Observation-Location]`); no PractitionerRole is written (persons are referenced as
//! Practitioners); PR1-25 parent procedure (partOf would need a conditional reference that
//! fails when the parent is unknown); GT1 of an organization (GT1-21) and GT1/IN1 outside
//! ADT; TQ1-2..6 and TQ1-13/14 (quantity, repeat pattern, durations, counts); PV1 of
//! OML_O21 prior results; PR1 in A28/A31 (those write the Patient only). A40 does not move
//! other resources' references to the surviving patient (see `patient.rs`).

mod adt;
mod bundle;
mod datatypes;
mod error;
mod observation;
mod orders;
mod patient;
mod procedure;
mod related;
mod v2;

pub use bundle::encode_criteria_value;
pub use error::MappingError;

use crate::message::Message;
use bundle::{Bundle, Write};
use datatypes::xcn;
use serde_json::{Value, json};
use std::collections::HashMap;
use v2::{Rep, Seg};

/// Mapping options.
///
/// Identifier systems (CX-4 / EI-2..4 / HD assigning authorities) are chosen in this order:
/// `assigning_authorities[namespace id]` (or `[universal id]`); the universal id (type `ISO`
/// → `urn:oid:<id>`, `URI` → as is); `urn:mediflow:hl7:<namespace id>`;
/// `facility_systems[facility]`; `urn:mediflow:hl7:<facility or "local">`. The facility is
/// MSH-4 for identifiers assigned by the sender; for order numbers it is the placer's or the
/// filler's facility (see `orders.rs`).
#[derive(Clone, Debug)]
pub struct MappingConfig {
    /// When false, a result or order for a patient that is not in the store fails (the server answers AE):
    /// the Bundle then refers to the patient by a conditional reference instead of creating it.
    pub auto_create_patients: bool,
    /// CX-4 assigning authority namespace id (e.g. "MRN_AUTH") -> identifier system URI.
    pub assigning_authorities: HashMap<String, String>,
    /// MSH-4 sending facility -> default identifier system prefix when CX-4 is empty.
    pub facility_systems: HashMap<String, String>,
}

impl Default for MappingConfig {
    /// `auto_create_patients: true`, no assigning authorities, no facility systems.
    fn default() -> Self {
        MappingConfig {
            auto_create_patients: true,
            assigning_authorities: HashMap::new(),
            facility_systems: HashMap::new(),
        }
    }
}

/// Maps one HL7 v2 message to one FHIR R4 `transaction` Bundle.
///
/// Supported (MSH-9.1 ^ MSH-9.2; MSH-9.2 falls back to EVN-1 for ADT):
/// * `ADT` A01, A02, A03, A04, A05, A08, A11, A12, A13 (Patient, Encounter, Location,
///   Practitioner, AllergyIntolerance, Condition, Procedure, RelatedPerson, Coverage,
///   Organization), A28, A31 (Patient), A40 (merge);
/// * `ORU^R01` (DiagnosticReport, Observation, ServiceRequest, Specimen, Encounter);
/// * `ORM^O01`, `OML^O21` (ServiceRequest, Specimen, Observation for order OBX, Encounter).
///
/// # Errors
/// [`MappingError::UnsupportedMessageType`] / [`MappingError::UnsupportedEvent`] (AR) for
/// other messages; [`MappingError::MissingSegment`], [`MappingError::MissingField`] (e.g.
/// `PID-3`, `OBR-4`, `OBX-3`) and [`MappingError::InvalidValue`] (AE) for messages that
/// cannot be mapped. Never panics.
pub fn to_transaction(msg: &Message, cfg: &MappingConfig) -> Result<Value, MappingError> {
    let mt = msg.message_type();
    let code = mt.code.trim().to_ascii_uppercase();
    let mut event = mt.trigger.trim().to_ascii_uppercase();
    if event.is_empty() && code == "ADT" {
        event = msg
            .get("EVN-1")
            .unwrap_or_default()
            .trim()
            .to_ascii_uppercase();
    }
    let mut ctx = Ctx::new(msg, cfg);
    let unsupported_event = || MappingError::UnsupportedEvent {
        message_type: code.clone(),
        event: event.clone(),
    };
    match code.as_str() {
        "ADT" => adt::map(&mut ctx, &event).map_err(|e| match e {
            MappingError::UnsupportedEvent { .. } => unsupported_event(),
            e => e,
        })?,
        "ORU" if event == "R01" => orders::map(&mut ctx, orders::Kind::Result)?,
        "ORM" if event == "O01" => orders::map(&mut ctx, orders::Kind::Order)?,
        "OML" if event == "O21" => orders::map(&mut ctx, orders::Kind::Order)?,
        "ORU" | "ORM" | "OML" => return Err(unsupported_event()),
        _ => {
            return Err(MappingError::UnsupportedMessageType {
                message_type: mt.to_string(),
            });
        }
    }
    Ok(ctx.bundle.finish())
}

/// What the mappers share: the message, the options, MSH-4/MSH-6 and the Bundle.
pub(crate) struct Ctx<'m> {
    pub(crate) msg: &'m Message,
    pub(crate) cfg: &'m MappingConfig,
    /// MSH-4.1 (else MSH-4.2) sending facility, `""` when empty.
    pub(crate) sender: String,
    /// MSH-6.1 (else MSH-6.2) receiving facility, `""` when empty.
    pub(crate) receiver: String,
    pub(crate) bundle: Bundle,
}

impl<'m> Ctx<'m> {
    fn new(msg: &'m Message, cfg: &'m MappingConfig) -> Ctx<'m> {
        let fac = |f: &str| {
            msg.get(&format!("MSH-{f}.1"))
                .filter(|s| !s.trim().is_empty())
                .or_else(|| msg.get(&format!("MSH-{f}.2")))
                .map(|s| s.trim().to_owned())
                .unwrap_or_default()
        };
        Ctx {
            msg,
            cfg,
            sender: fac("4"),
            receiver: fac("6"),
            bundle: Bundle::new(),
        }
    }
}

/// XCN → a Reference to a Practitioner (IG `XCN[Practitioner]`): with an XCN-1 id the
/// Practitioner (identifier, name) is created when missing (`POST` + `ifNoneExist`) and
/// referenced; with only a name, a display-only Reference. `None` when the XCN is empty.
pub(crate) fn practitioner_ref(ctx: &mut Ctx, rep: &Rep) -> Option<Value> {
    let sender = ctx.sender.clone();
    let (id, name) = xcn(ctx, rep, &sender);
    let display = name.as_ref().and_then(datatypes::name_text);
    let Some(id) = id else {
        return display.map(|d| json!({"display": d}));
    };
    let resource = json!({
        "resourceType": "Practitioner",
        "identifier": [id.to_json()],
        "name": name.map(|n| vec![n]),
    });
    let url = ctx.bundle.add(resource, &id, Write::CreateIfAbsent);
    Some(json!({"reference": url, "display": display}))
}

/// One ROL or PRT segment read as a role played by practitioners.
pub(crate) struct Role {
    /// ROL-3 / PRT-4 as a CodeableConcept (CWE; table 0443 provider role, 0912 participation).
    pub(crate) code: Option<Value>,
    /// References to the Practitioners of ROL-4 / PRT-5 (one per XCN repetition), see
    /// [`practitioner_ref`].
    pub(crate) actors: Vec<Value>,
    /// ROL-5 / PRT-11 begin date/time (FHIR dateTime).
    pub(crate) start: Option<String>,
    /// ROL-6 / PRT-12 end date/time (FHIR dateTime).
    pub(crate) end: Option<String>,
}

/// The role code of a ROL (ROL-3.1, HL7 v2 chapter 15 "Role") or PRT (PRT-4.1, chapter 7
/// "Participation Information") segment and its coding system (ROL-3.3 / PRT-4.3), used to
/// pick the IG map (e.g. `PP` + `HL70443` → `ROL[Patient-GeneralPractitioner]`).
pub(crate) fn role_code(seg: &Seg) -> (Option<String>, Option<String>) {
    let f = if seg.id() == "PRT" { 4 } else { 3 };
    (seg.vc(f, 1), seg.vc(f, 3))
}

/// ROL (chapter 15: ROL-2 action code, ROL-3 role, ROL-4 person XCN, ROL-5/6 begin/end) or
/// PRT (chapter 7: PRT-2 action code, PRT-4 role of participation, PRT-5 person XCN,
/// PRT-11/12 begin/end) → [`Role`], following the person part of the IG maps
/// `ROL[Encounter-PractitionerRole]` and `PRT[PractitionerRole]` (the person is referenced as a
/// Practitioner, no PractitionerRole is written). `None` for a role being deleted (action
/// code `DE`) or without any person.
///
/// # Errors
/// [`MappingError::InvalidValue`] for a malformed begin or end date/time.
pub(crate) fn role(ctx: &mut Ctx, seg: &Seg) -> Result<Option<Role>, MappingError> {
    let (role_f, person_f, start_f, end_f) = match seg.id() {
        "ROL" => (3, 4, 5, 6),
        "PRT" => (4, 5, 11, 12),
        _ => return Ok(None),
    };
    if seg.v(2).as_deref() == Some("DE") {
        return Ok(None);
    }
    let start = datatypes::opt_ts(seg.v(start_f), &seg.loc(start_f))?;
    let end = datatypes::opt_ts(seg.v(end_f), &seg.loc(end_f))?;
    let actors: Vec<Value> = seg
        .reps(person_f)
        .iter()
        .filter_map(|r| practitioner_ref(ctx, r))
        .collect();
    if actors.is_empty() {
        return Ok(None);
    }
    Ok(Some(Role {
        code: seg.rep(role_f).and_then(|r| datatypes::cwe(&r)),
        actors,
        start: start.map(|s| s.date_time),
        end: end.map(|s| s.date_time),
    }))
}

/// NTE segments → Annotations (NTE-3 comment repetitions joined by newlines).
pub(crate) fn notes(ntes: &[Seg]) -> Vec<Value> {
    ntes.iter()
        .filter_map(|n| {
            let lines = n.texts(3);
            (!lines.is_empty()).then(|| json!({"text": lines.join("\n")}))
        })
        .collect()
}

/// A reference to a Bundle entry.
pub(crate) fn reference(url: &str) -> Value {
    json!({"reference": url})
}
