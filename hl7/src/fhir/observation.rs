//! OBX → Observation (IG OBX[Observation]): value[x] by OBX-2, units (OBX-6), reference
//! range (OBX-7), interpretation (OBX-8), status (OBX-11), effective (OBX-14), performer
//! (OBX-16), notes (NTE after the OBX).
//!
//! OBX-2 value types: NM → valueQuantity (valueString when the text is not a number); SN → valueQuantity (with comparator), valueRange
//! (`^3^-^5`) or valueRatio (`^1^:^128`, `^1^/^2`); ST, TX, FT → valueString (repetitions
//! joined by newlines); CWE, CE, CNE, CF → valueCodeableConcept; DT, TS, DTM → valueDateTime;
//! TM → valueTime; ED → an Attachment (contentType from ED-2/ED-3, data from ED-5 by ED-4
//! encoding) in the extension [`R5_VALUE_EXT`], as R4 value[x] has no Attachment; anything else (RP, HD, ...) → valueString of the whole value. Only the first
//! repetition of OBX-5 is used for NM, SN, coded and date types. An empty OBX-5 gives no
//! value (allowed with a status such as `registered`).

use super::datatypes::{cwe, decimal, opt_ts, ts};
use super::error::MappingError;
use super::v2::{Rep, Seg};
use serde_json::{Number, Value, json};

/// R5 `Observation.value[x]` (which allows Attachment) as an R4 cross-version extension.
pub(crate) const R5_VALUE_EXT: &str =
    "http://hl7.org/fhir/5.0/StructureDefinition/extension-Observation.value";
const UCUM: &str = "http://unitsofmeasure.org";
const INTERPRETATION: &str = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation";

/// UCUM codes accepted as such without OBX-6.3 saying `UCUM` (common clinical units).
const UCUM_COMMON: &[&str] = &[
    "%",
    "/min",
    "{beats}/min",
    "/uL",
    "/mm3",
    "10*3/uL",
    "10*6/uL",
    "10*9/L",
    "10*12/L",
    "cm",
    "m",
    "mm",
    "kg",
    "g",
    "mg",
    "ug",
    "ng",
    "pg",
    "L",
    "mL",
    "dL",
    "uL",
    "fL",
    "g/dL",
    "g/L",
    "mg/dL",
    "mg/L",
    "ug/L",
    "ug/dL",
    "ng/mL",
    "pg/mL",
    "mmol/L",
    "umol/L",
    "nmol/L",
    "pmol/L",
    "mol/L",
    "meq/L",
    "mEq/L",
    "[iU]/L",
    "U/L",
    "[IU]/L",
    "mU/L",
    "mm[Hg]",
    "Cel",
    "[degF]",
    "kg/m2",
    "s",
    "min",
    "h",
    "d",
    "wk",
    "mo",
    "a",
    "mg/dl",
    "g/dl",
    "mmol/l",
    "fl",
    "pg/cell",
    "mosm/kg",
    "mL/min",
    "mL/min/{1.73_m2}",
    "[in_i]",
    "[lb_av]",
    "1",
    "[ppm]",
    "ratio",
];

/// Reads OBX-6 into (unit text, UCUM code): the UCUM code is set when OBX-6.3 is `UCUM` or
/// the unit is one of the common UCUM codes.
fn units(obx: &Seg) -> (Option<String>, Option<String>) {
    let Some(code) = obx.vc(6, 1) else {
        return (obx.vc(6, 2), None);
    };
    let text = obx.vc(6, 2).unwrap_or_else(|| code.clone());
    let is_ucum = obx.vc(6, 3).is_some_and(|s| s.eq_ignore_ascii_case("UCUM"))
        || UCUM_COMMON.contains(&code.as_str());
    (Some(text), is_ucum.then_some(code))
}

fn quantity(value: Number, units: &(Option<String>, Option<String>)) -> Value {
    let mut q = json!({"value": value, "unit": units.0});
    if let Some(code) = &units.1 {
        q["system"] = json!(UCUM);
        q["code"] = json!(code);
    }
    q
}

/// OBX-11 (table 0085) → Observation.status: F final, P/S preliminary, C corrected, A
/// amended, X/N cancelled, R/I/O registered, D/W entered-in-error, U final; empty or unknown
/// → `unknown`.
pub(crate) fn status(code: Option<&str>) -> &'static str {
    match code.unwrap_or("") {
        "F" | "U" => "final",
        "P" | "S" => "preliminary",
        "C" => "corrected",
        "A" => "amended",
        "X" | "N" => "cancelled",
        "R" | "I" | "O" => "registered",
        "D" | "W" => "entered-in-error",
        _ => "unknown",
    }
}

/// OBX-8 abnormal flag (table 0078) → v3 ObservationInterpretation code.
fn interpretation(flag: &str) -> Value {
    let known = [
        ("L", "Low"),
        ("H", "High"),
        ("LL", "Critical low"),
        ("HH", "Critical high"),
        ("LU", "Significantly low"),
        ("HU", "Significantly high"),
        ("N", "Normal"),
        ("A", "Abnormal"),
        ("AA", "Critical abnormal"),
        ("<", "Off scale low"),
        (">", "Off scale high"),
        ("S", "Susceptible"),
        ("R", "Resistant"),
        ("I", "Intermediate"),
        ("MS", "moderately susceptible"),
        ("VS", "very susceptible"),
        ("U", "Significant change up"),
        ("D", "Significant change down"),
        ("B", "Better"),
        ("W", "Worse"),
        ("POS", "Positive"),
        ("NEG", "Negative"),
        ("IND", "Indeterminate"),
        ("DET", "Detected"),
        ("ND", "Not detected"),
        ("E", "Equivocal"),
        ("EX", "outside threshold"),
        ("NR", "Non-reactive"),
        ("RR", "Reactive"),
        ("WR", "Weakly reactive"),
    ];
    match known.iter().find(|(c, _)| *c == flag) {
        Some((c, d)) => json!({"coding": [{"system": INTERPRETATION, "code": c, "display": d}]}),
        None => json!({"text": flag}),
    }
}

/// OBX-7 → referenceRange: `low-high` (`3.5-5.0`, `-1-1`), `>x`/`>=x` (low), `<x`/`<=x`
/// (high); anything else as text. Low and high take the OBX-6 units.
fn reference_range(text: &str, units: &(Option<String>, Option<String>)) -> Value {
    let t = text.trim();
    let q = |s: &str| decimal(s).map(|n| quantity(n, units));
    for (prefix, is_low) in [(">=", true), ("<=", false), (">", true), ("<", false)] {
        if let Some(rest) = t.strip_prefix(prefix)
            && let Some(v) = q(rest)
        {
            let key = if is_low { "low" } else { "high" };
            return json!({key: v, "text": t});
        }
    }
    for (i, _) in t.match_indices('-').filter(|(i, _)| *i > 0) {
        if let (Some(lo), Some(hi)) = (q(&t[..i]), q(&t[i + 1..])) {
            return json!({"low": lo, "high": hi});
        }
    }
    json!({"text": t})
}

/// OBX-5 by OBX-2 → the `value[x]` element name and value; `None` when OBX-5 is empty.
pub(crate) fn value(obx: &Seg) -> Result<Option<(&'static str, Value)>, MappingError> {
    let vt = obx.v(2).unwrap_or_default().to_ascii_uppercase();
    let reps = obx.reps(5);
    let Some(first) = reps.first() else {
        return Ok(None);
    };
    let loc = obx.loc(5);
    let raw = first.text().unwrap_or_default();
    let u = units(obx);
    let out = match vt.as_str() {
        "NM" => match decimal(&raw) {
            Some(n) => ("valueQuantity", quantity(n, &u)),
            // Senders do put text in NM ("01I", "see note"): kept as text rather than
            // refusing the whole report.
            None => ("valueString", json!(raw)),
        },
        "SN" => structured_numeric(first, &u, &loc)?,
        "ST" | "TX" | "FT" => {
            let lines: Vec<String> = reps.iter().filter_map(Rep::text).collect();
            ("valueString", json!(lines.join("\n")))
        }
        "CWE" | "CE" | "CNE" | "CF" | "IS" | "ID" => match cwe(first) {
            Some(c) => ("valueCodeableConcept", c),
            None => return Ok(None),
        },
        "DT" | "TS" | "DTM" => {
            let d = ts(&first.c(1).unwrap_or_default(), &loc)?;
            ("valueDateTime", json!(d.date_time))
        }
        "TM" => match time(&raw) {
            Some(t) => ("valueTime", json!(t)),
            None => ("valueString", json!(raw)),
        },
        "ED" => ("valueAttachment", attachment(first, &loc)?),
        _ => match first.joined(" ") {
            Some(s) => ("valueString", json!(s)),
            None => return Ok(None),
        },
    };
    Ok(Some(out))
}

/// TM `HH[MM[SS[.S]]]` (offset ignored) → FHIR time `hh:mm:ss`.
fn time(raw: &str) -> Option<String> {
    let body = raw.split(['+', '-']).next()?.split('.').next()?;
    if ![2, 4, 6].contains(&body.len()) || !body.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n = |r: std::ops::Range<usize>| body.get(r).and_then(|s| s.parse::<u32>().ok());
    let (h, m, s) = (n(0..2)?, n(2..4).unwrap_or(0), n(4..6).unwrap_or(0));
    (h < 24 && m < 60 && s < 60).then(|| format!("{h:02}:{m:02}:{s:02}"))
}

/// SN: comparator ^ num1 ^ separator/suffix ^ num2.
fn structured_numeric(
    rep: &Rep,
    u: &(Option<String>, Option<String>),
    loc: &str,
) -> Result<(&'static str, Value), MappingError> {
    let text = rep.joined("").unwrap_or_default();
    let bad = || MappingError::invalid(loc, &text, "SN value is not comparator^num1^sep^num2");
    let comparator = rep.c(1);
    let n1 = rep.c(2).map(|s| decimal(&s).ok_or_else(bad)).transpose()?;
    let sep = rep.c(3);
    let n2 = rep.c(4).map(|s| decimal(&s).ok_or_else(bad)).transpose()?;
    match (sep.as_deref(), n1, n2) {
        (Some("-"), Some(a), Some(b)) => Ok((
            "valueRange",
            json!({"low": quantity(a, u), "high": quantity(b, u)}),
        )),
        (Some(":") | Some("/"), Some(a), Some(b)) => Ok((
            "valueRatio",
            json!({"numerator": {"value": a}, "denominator": {"value": b}}),
        )),
        (None, Some(a), None) => {
            let mut q = quantity(a, u);
            match comparator.as_deref() {
                None | Some("=") => {}
                Some(c @ ("<" | "<=" | ">" | ">=")) => q["comparator"] = json!(c),
                Some(_) => return Ok(("valueString", json!(text))),
            }
            Ok(("valueQuantity", q))
        }
        _ => Ok(("valueString", json!(text))),
    }
}

/// ED: source application ^ type of data (table 0191) ^ data subtype ^ encoding (A, Hex,
/// Base64) ^ data → Attachment (contentType `type/subtype`, data base64).
fn attachment(rep: &Rep, loc: &str) -> Result<Value, MappingError> {
    let major = match rep.c(2).unwrap_or_default().to_ascii_uppercase().as_str() {
        "IM" => "image",
        "AU" => "audio",
        "TEXT" => "text",
        "VIDEO" => "video",
        _ => "application",
    };
    let content_type = match rep.c(3) {
        Some(sub) if !sub.contains(char::is_whitespace) => {
            format!("{major}/{}", sub.to_ascii_lowercase())
        }
        _ if major == "text" => "text/plain".to_owned(),
        _ => "application/octet-stream".to_owned(),
    };
    let data = match rep.c(5) {
        None => None,
        Some(d) => {
            let enc = rep.c(4).unwrap_or_default().to_ascii_uppercase();
            Some(match enc.as_str() {
                "BASE64" => {
                    let compact: String = d.chars().filter(|c| !c.is_whitespace()).collect();
                    let ok = compact
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='));
                    if !ok {
                        return Err(MappingError::invalid(loc, d, "ED data is not base64"));
                    }
                    compact
                }
                "HEX" => {
                    let bytes = hex(&d)
                        .ok_or_else(|| MappingError::invalid(loc, &d, "ED data is not hex"))?;
                    base64(&bytes)
                }
                _ => base64(d.as_bytes()),
            })
        }
    };
    Ok(json!({"contentType": content_type, "data": data}))
}

fn hex(s: &str) -> Option<Vec<u8>> {
    let s: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    if !s.len().is_multiple_of(2) {
        return None;
    }
    s.chunks(2)
        .map(|c| u8::from_str_radix(std::str::from_utf8(c).ok()?, 16).ok())
        .collect()
}

/// Attachment.data (base64Binary, RFC 4648 §4 with padding).
fn base64(bytes: &[u8]) -> String {
    base64::Engine::encode(&base64::engine::general_purpose::STANDARD, bytes)
}

/// The parts of an Observation built from one OBX (identifier, subject and links are added by
/// the caller): status, code (OBX-3, required: MissingField `OBX-3`), value[x], interpretation,
/// referenceRange, effectiveDateTime (OBX-14), note (NTE). An OBX without OBX-3 (free-text
/// continuation lines some senders use) takes `order_code` (OBR-4) when given.
pub(crate) fn observation(
    obx: &Seg,
    notes: Vec<Value>,
    order_code: Option<&Value>,
) -> Result<Value, MappingError> {
    let code = obx
        .rep(3)
        .and_then(|r| cwe(&r))
        .or_else(|| order_code.cloned())
        .ok_or_else(|| MappingError::missing(obx.loc(3), "Observation Identifier"))?;
    let u = units(obx);
    let mut o = json!({
        "resourceType": "Observation",
        "status": status(obx.v(11).as_deref()),
        "code": code,
        "effectiveDateTime": opt_ts(obx.v(14), &obx.loc(14))?.map(|d| d.date_time),
        "interpretation": obx.reps(8).iter().filter_map(|r| r.c(1)).map(|f| interpretation(&f)).collect::<Vec<_>>(),
        "referenceRange": obx.v(7).map(|t| vec![reference_range(&t, &u)]),
        "note": notes,
    });
    match value(obx)? {
        // R4 Observation.value[x] has no Attachment: the R5 element through its R4
        // cross-version extension.
        Some(("valueAttachment", v)) => {
            o["extension"] = json!([{"url": R5_VALUE_EXT, "valueAttachment": v}]);
        }
        Some((name, v)) => o[name] = v,
        None => {}
    }
    Ok(o)
}
