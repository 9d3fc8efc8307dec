//! Patient maps (IG "Segment Maps" `PID[Patient]`, `PD1[Patient]`, `NK1[RelatedPerson]` used here
//! as Patient.contact, `MRG[Patient]` for A40 merges).
//!
//! The patient is matched by its first PID-3 repetition whose CX-5 is `MR`, else by its first
//! PID-3 repetition (system from CX-4, see [`super::datatypes::authority_system`]).

use super::bundle::Write;
use super::datatypes::{Ident, cwe, cx, opt_ts, xad, xpn, xtn};
use super::error::MappingError;
use super::v2::{Rep, Seg};
use super::{Ctx, practitioner_ref};
use serde_json::{Value, json};

/// The patient of a message: its match identifier and the reference other resources use
/// (`urn:uuid:` of the Bundle entry, or a conditional reference when not written).
pub(crate) struct PatientRef {
    pub(crate) key: Ident,
    pub(crate) reference: Value,
    /// PID-5 (first repetition) family and first given name, upper case: tells a guarantor
    /// or insured who is the patient (see `related.rs`).
    pub(crate) name: (String, String),
}

/// PID-5 first repetition → (XPN-1 family, XPN-2 given), upper case.
fn name_key(pid: &Seg) -> (String, String) {
    let name = pid.rep(5);
    let part = |c| {
        name.as_ref()
            .and_then(|r| r.c(c))
            .unwrap_or_default()
            .to_uppercase()
    };
    (part(1), part(2))
}

/// PID-3 → identifiers (MissingField `PID-3` when no repetition has a CX-1) and the match key.
pub(crate) fn identifiers(ctx: &Ctx, pid: &Seg) -> Result<(Ident, Vec<Ident>), MappingError> {
    let ids: Vec<Ident> = pid
        .reps(3)
        .iter()
        .filter_map(|r| cx(ctx, r, &ctx.sender))
        .collect();
    let key = ids
        .iter()
        .find(|i| i.type_code.as_deref() == Some("MR"))
        .or_else(|| ids.first())
        .cloned()
        .ok_or_else(|| MappingError::missing("PID-3", "Patient Identifier List"))?;
    Ok((key, ids))
}

/// PID (+ PD1, NK1, ROL, PRT segments given) → Patient: PID-3 identifier, PID-5 name, PID-7
/// birthDate, PID-8 gender, PID-10 race and PID-22 ethnic group (US Core extensions, see
/// [`race_ethnicity`]), PID-11 address, PID-13/14 telecom, PID-15 communication, PID-16
/// maritalStatus, PID-24/25 multipleBirth, PID-29/30 deceased; PD1-4 generalPractitioner;
/// NK1-2..7 contact; ROL with ROL-3 `PP` (table 0443 primary care provider) → ROL-4
/// generalPractitioner (IG `ROL[Patient-GeneralPractitioner]`), PRT with PRT-4 `PP` → PRT-5
/// generalPractitioner (IG `PRT[Patient-GeneralPractitioner-Practitioner]`).
pub(crate) fn resource(
    ctx: &mut Ctx,
    pid: &Seg,
    ids: &[Ident],
    extra: &[Seg],
) -> Result<Value, MappingError> {
    let birth = opt_ts(pid.v(7), "PID-7")?;
    let gender = pid.v(8).map(|g| match g.as_str() {
        "M" => "male",
        "F" => "female",
        "U" => "unknown",
        _ => "other",
    });
    let mut telecom: Vec<Value> = pid.reps(13).iter().filter_map(xtn).collect();
    for r in pid.reps(14) {
        if let Some(mut t) = xtn(&r) {
            if t["use"].is_null() {
                t["use"] = json!("work");
            }
            telecom.push(t);
        }
    }
    let mut p = json!({
        "resourceType": "Patient",
        "identifier": ids.iter().map(Ident::to_json).collect::<Vec<_>>(),
        "name": pid.reps(5).iter().filter_map(xpn).collect::<Vec<_>>(),
        "telecom": telecom,
        "gender": gender,
        "birthDate": birth.map(|b| b.date),
        "address": pid.reps(11).iter().filter_map(xad).collect::<Vec<_>>(),
        "maritalStatus": pid.rep(16).and_then(|r| cwe(&r)),
        "communication": pid.rep(15).and_then(|r| cwe(&r)).map(|l| vec![json!({"language": l})]),
        "extension": race_ethnicity(pid),
    });
    match (opt_ts(pid.v(29), "PID-29")?, pid.v(30).as_deref()) {
        (Some(d), _) => p["deceasedDateTime"] = json!(d.date_time),
        (None, Some("Y")) => p["deceasedBoolean"] = json!(true),
        (None, Some("N")) => p["deceasedBoolean"] = json!(false),
        _ => {}
    }
    match (
        pid.v(25).and_then(|n| n.parse::<u32>().ok()),
        pid.v(24).as_deref(),
    ) {
        (Some(n), _) if n > 0 => p["multipleBirthInteger"] = json!(n),
        (_, Some("Y")) => p["multipleBirthBoolean"] = json!(true),
        (_, Some("N")) => p["multipleBirthBoolean"] = json!(false),
        _ => {}
    }
    let mut gps = Vec::new();
    let mut contacts = Vec::new();
    for s in extra {
        match s.id() {
            "PD1" => {
                for r in s.reps(4) {
                    if let Some(gp) = practitioner_ref(ctx, &r) {
                        gps.push(gp);
                    }
                }
            }
            "NK1" => {
                if let Some(c) = contact(s) {
                    contacts.push(c);
                }
            }
            "ROL" | "PRT" => {
                let (code, system) = super::role_code(s);
                let system_ok = system
                    .as_deref()
                    .is_none_or(|t| t.eq_ignore_ascii_case("HL70443"));
                if code.as_deref() == Some("PP")
                    && system_ok
                    && let Some(role) = super::role(ctx, s)?
                {
                    gps.extend(role.actors);
                }
            }
            _ => {}
        }
    }
    p["generalPractitioner"] = json!(gps);
    p["contact"] = json!(contacts);
    Ok(p)
}

/// US Core race extension (PID-10 → `us-core-race`).
pub(crate) const US_CORE_RACE: &str =
    "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race";
/// US Core ethnicity extension (PID-22 → `us-core-ethnicity`).
pub(crate) const US_CORE_ETHNICITY: &str =
    "http://hl7.org/fhir/us/core/StructureDefinition/us-core-ethnicity";
/// CDC Race & Ethnicity code system (CDCREC).
pub(crate) const CDC_RACE_ETHNICITY: &str = "urn:oid:2.16.840.1.113883.6.238";
/// OMB race categories (US Core ombCategory of us-core-race).
const OMB_RACE: [(&str, &str); 5] = [
    ("1002-5", "American Indian or Alaska Native"),
    ("2028-9", "Asian"),
    ("2054-5", "Black or African American"),
    ("2076-8", "Native Hawaiian or Other Pacific Islander"),
    ("2106-3", "White"),
];
/// OMB ethnicity categories (US Core ombCategory of us-core-ethnicity).
const OMB_ETHNICITY: [(&str, &str); 2] = [
    ("2135-2", "Hispanic or Latino"),
    ("2186-5", "Not Hispanic or Latino"),
];

/// The CDC race/ethnicity code of a CWE (CWE-1..3, else the alternate CWE-4..6) when its
/// coding system is CDCREC (`CDCREC`, `2.16.840.1.113883.6.238`) or the v2 table (`HL70005`
/// race, `HL70189` ethnic group; table 0189 `H`/`N` are read as 2135-2/2186-5) and the code
/// has the CDCREC form `NNNN-N`.
fn cdc_code(rep: &Rep, table: &str) -> Option<String> {
    for (code_c, sys_c) in [(1, 3), (4, 6)] {
        let (Some(code), Some(sys)) = (rep.c(code_c), rep.c(sys_c)) else {
            continue;
        };
        let sys = sys.to_ascii_uppercase();
        let sys = sys.strip_prefix("URN:OID:").unwrap_or(&sys);
        if sys != "CDCREC" && sys != "2.16.840.1.113883.6.238" && sys != table {
            continue;
        }
        let code = match (table, code.as_str()) {
            ("HL70189", "H") => "2135-2".to_owned(),
            ("HL70189", "N") => "2186-5".to_owned(),
            _ => code,
        };
        let cdc_form = code.split_once('-').is_some_and(|(a, b)| {
            !a.is_empty()
                && b.len() == 1
                && a.bytes().all(|c| c.is_ascii_digit())
                && b.bytes().all(|c| c.is_ascii_digit())
        });
        if cdc_form {
            return Some(code);
        }
    }
    None
}

/// One US Core race or ethnicity extension from the repetitions of PID-10 or PID-22:
/// CDC codes in an OMB category → `ombCategory` (at most `max_omb`), other CDC codes →
/// `detailed`, and always `text` (CWE-9, else CWE-2, else the OMB display, else CWE-1 of
/// each repetition, joined by `, `). A value not in the CDC system keeps only its text.
fn omb_extension(
    url: &str,
    reps: &[Rep],
    omb: &[(&str, &str)],
    table: &str,
    max_omb: usize,
) -> Option<Value> {
    let mut categories: Vec<Value> = Vec::new();
    let mut detailed: Vec<Value> = Vec::new();
    let mut texts: Vec<String> = Vec::new();
    for r in reps {
        let code = cdc_code(r, table);
        let category = code
            .as_deref()
            .and_then(|c| omb.iter().find(|(o, _)| *o == c));
        let text = r
            .c(9)
            .or_else(|| r.c(2))
            .or_else(|| category.map(|(_, d)| (*d).to_owned()))
            .or_else(|| r.c(1));
        if let Some(t) = text
            && !texts.contains(&t)
        {
            texts.push(t);
        }
        match (category, code) {
            (Some((c, d)), _) => {
                let coding = json!({"system": CDC_RACE_ETHNICITY, "code": c, "display": d});
                if categories.len() < max_omb
                    && !categories.iter().any(|e| e["valueCoding"] == coding)
                {
                    categories.push(json!({"url": "ombCategory", "valueCoding": coding}));
                }
            }
            (None, Some(c)) => {
                let coding = json!({"system": CDC_RACE_ETHNICITY, "code": c, "display": r.c(2)});
                detailed.push(json!({"url": "detailed", "valueCoding": coding}));
            }
            (None, None) => {}
        }
    }
    if texts.is_empty() {
        return None;
    }
    let mut ext = categories;
    ext.extend(detailed);
    ext.push(json!({"url": "text", "valueString": texts.join(", ")}));
    Some(json!({"url": url, "extension": ext}))
}

/// PID-10 race → US Core race extension, PID-22 ethnic group → US Core ethnicity extension
/// (the IG's `PID[Patient]` map leaves both to the realm's extension, "e.g., for US = US Core";
/// US Core 6 StructureDefinitions us-core-race: ombCategory 0..5, detailed 0..*, text 1..1,
/// us-core-ethnicity: ombCategory 0..1, detailed 0..*, text 1..1). Codes count when their
/// system is CDCREC (urn:oid:2.16.840.1.113883.6.238) or HL70005 / HL70189; any other value
/// keeps its text only.
pub(crate) fn race_ethnicity(pid: &Seg) -> Vec<Value> {
    [
        omb_extension(US_CORE_RACE, &pid.reps(10), &OMB_RACE, "HL70005", 5),
        omb_extension(
            US_CORE_ETHNICITY,
            &pid.reps(22),
            &OMB_ETHNICITY,
            "HL70189",
            1,
        ),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// NK1 → Patient.contact: NK1-3 relationship, NK1-2 name, NK1-5/6 telecom, NK1-4 address.
fn contact(nk1: &Seg) -> Option<Value> {
    let mut telecom: Vec<Value> = nk1.reps(5).iter().filter_map(xtn).collect();
    telecom.extend(nk1.reps(6).iter().filter_map(xtn));
    let c = json!({
        "relationship": nk1.rep(3).and_then(|r| cwe(&r)).map(|r| vec![r]),
        "name": nk1.rep(2).and_then(|r| xpn(&r)),
        "telecom": telecom,
        "address": nk1.rep(4).and_then(|r| xad(&r)),
    });
    let has_details = ["name", "telecom", "address"]
        .iter()
        .any(|k| !c[*k].is_null() && c[*k] != json!([]));
    has_details.then_some(c)
}

/// Writes the patient of `pid` as `write` says and returns its reference; `extra` holds the
/// PD1 and NK1 segments that belong to it.
pub(crate) fn write(
    ctx: &mut Ctx,
    pid: &Seg,
    extra: &[Seg],
    write: Write,
) -> Result<PatientRef, MappingError> {
    let (key, ids) = identifiers(ctx, pid)?;
    let resource = resource(ctx, pid, &ids, extra)?;
    let url = ctx.bundle.add(resource, &key, write);
    Ok(PatientRef {
        key,
        reference: json!({"reference": url}),
        name: name_key(pid),
    })
}

/// The patient by conditional reference only (`Patient?identifier=system|value`), nothing
/// written: the server fails the transaction when no single patient matches.
pub(crate) fn refer(ctx: &Ctx, pid: &Seg) -> Result<PatientRef, MappingError> {
    let (key, _) = identifiers(ctx, pid)?;
    let reference = json!({"reference": key.conditional("Patient")});
    Ok(PatientRef {
        key,
        reference,
        name: name_key(pid),
    })
}

/// ADT^A40 "merge patient - patient identifier list": for each PID/MRG pair, the survivor
/// (PID) is written with `link: replaces → prior` and the prior patient (MRG-1 identifiers,
/// MRG-7 name) with `active: false` and `link: replaced-by → survivor` (R4
/// patient.html#links). References from other resources to the prior patient are not moved
/// here: that needs a search by reference, which a transaction Bundle cannot express; the
/// server does it in the same database transaction (`mediflow::interaction::merge`).
pub(crate) fn merge(ctx: &mut Ctx) -> Result<(), MappingError> {
    let segs = super::v2::segments(ctx.msg);
    let mut found = false;
    let mut i = 0;
    while i < segs.len() {
        if segs[i].id() != "PID" {
            i += 1;
            continue;
        }
        let pid = segs[i];
        let mut extra = Vec::new();
        let mut mrg = None;
        let mut j = i + 1;
        while j < segs.len() && segs[j].id() != "PID" {
            match segs[j].id() {
                "MRG" if mrg.is_none() => mrg = Some(segs[j]),
                "PD1" | "NK1" => extra.push(segs[j]),
                _ => {}
            }
            j += 1;
        }
        i = j;
        let Some(mrg) = mrg else {
            return Err(MappingError::MissingSegment {
                segment: "MRG".into(),
            });
        };
        let prior_ids: Vec<Ident> = mrg
            .reps(1)
            .iter()
            .filter_map(|r| cx(ctx, r, &ctx.sender))
            .collect();
        let prior_key = prior_ids
            .iter()
            .find(|i| i.type_code.as_deref() == Some("MR"))
            .or_else(|| prior_ids.first())
            .cloned()
            .ok_or_else(|| MappingError::missing("MRG-1", "Prior Patient Identifier List"))?;
        let (key, ids) = identifiers(ctx, &pid)?;
        if key.system == prior_key.system && key.value == prior_key.value {
            return Err(MappingError::invalid(
                "MRG-1",
                prior_key.value,
                "the prior patient identifier is the surviving patient's (PID-3)",
            ));
        }
        let prior_url = format!(
            "urn:uuid:{}",
            super::bundle::name_uuid_for("Patient", &prior_key)
        );
        let survivor_url = format!("urn:uuid:{}", super::bundle::name_uuid_for("Patient", &key));
        let mut survivor = resource(ctx, &pid, &ids, &extra)?;
        survivor["active"] = json!(true);
        survivor["link"] = json!([{"other": {"reference": prior_url}, "type": "replaces"}]);
        ctx.bundle.add(survivor, &key, Write::Upsert);
        let prior = json!({
            "resourceType": "Patient",
            "identifier": prior_ids.iter().map(Ident::to_json).collect::<Vec<_>>(),
            "active": false,
            "name": mrg.reps(7).iter().filter_map(xpn).collect::<Vec<_>>(),
            "link": [{"other": {"reference": survivor_url}, "type": "replaced-by"}],
        });
        ctx.bundle.add(prior, &prior_key, Write::Upsert);
        found = true;
    }
    if !found {
        return Err(MappingError::MissingSegment {
            segment: "PID".into(),
        });
    }
    Ok(())
}
