//! Data type maps (IG "Datatype Maps"): CX → Identifier, EI → Identifier, HD → system URI,
//! XPN → HumanName, XAD → Address, XTN → ContactPoint, CWE/CE/CNE → CodeableConcept,
//! TS/DTM/DT → date/dateTime/instant, NM → decimal, XCN → Practitioner identifier and name.

use super::bundle::encode_criteria_value;
use super::error::MappingError;
use super::v2::Rep;
use super::{Ctx, MappingConfig};
use serde_json::{Number, Value, json};

/// Identifier type codes (table 0203) this crate emits.
pub(crate) const V2_0203: &str = "http://terminology.hl7.org/CodeSystem/v2-0203";

/// An identifier: system URI, value and optional v2-0203 type code (MR, PLAC, FILL, VN...).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Ident {
    pub(crate) system: String,
    pub(crate) value: String,
    pub(crate) type_code: Option<String>,
}

impl Ident {
    pub(crate) fn new(system: impl Into<String>, value: impl Into<String>) -> Ident {
        Ident {
            system: system.into(),
            value: value.into(),
            type_code: None,
        }
    }

    /// `identifier=<system>|<value>`, each part percent-encoded.
    pub(crate) fn criteria(&self) -> String {
        format!(
            "identifier={}|{}",
            encode_criteria_value(&self.system),
            encode_criteria_value(&self.value)
        )
    }

    /// A conditional reference `Type?identifier=system|value`.
    pub(crate) fn conditional(&self, rtype: &str) -> String {
        format!("{rtype}?{}", self.criteria())
    }

    /// The FHIR Identifier.
    pub(crate) fn to_json(&self) -> Value {
        let mut v = json!({"system": self.system, "value": self.value});
        if let Some(t) = &self.type_code {
            v["type"] = json!({"coding": [{"system": V2_0203, "code": t}]});
        }
        v
    }

    /// A derived identifier (same system) whose value is this one's plus `-suffix`.
    pub(crate) fn derived(&self, suffix: &str) -> Ident {
        Ident::new(self.system.clone(), format!("{}-{suffix}", self.value))
    }
}

/// Percent-encodes characters not allowed in a URN segment (whitespace, `%`, `|`, `?`, `#`...),
/// so a namespace such as `GOOD HEALTH HOSPITAL` gives a valid FHIR `uri`.
fn urn_part(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b':' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Identifier system for an assigning authority (HD: namespace id, universal id, universal id
/// type), in this order: the namespace through `cfg.assigning_authorities`; the universal id
/// (`ISO` → `urn:oid:<id>`, `URI` → as is, `UUID` → `urn:uuid:<id>`); `urn:mediflow:hl7:<ns>`;
/// then the facility default ([`facility_system`]).
pub(crate) fn authority_system(
    cfg: &MappingConfig,
    ns: Option<&str>,
    uid: Option<&str>,
    uid_type: Option<&str>,
    facility: &str,
) -> String {
    if let Some(sys) = ns.and_then(|n| cfg.assigning_authorities.get(n)) {
        return sys.clone();
    }
    if let Some(uid) = uid {
        if let Some(sys) = cfg.assigning_authorities.get(uid) {
            return sys.clone();
        }
        let t = uid_type.unwrap_or("").to_ascii_uppercase();
        let is_oid = uid
            .split('.')
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
        match t.as_str() {
            "ISO" if is_oid => return format!("urn:oid:{uid}"),
            "URI" if !uid.contains(char::is_whitespace) => return uid.to_owned(),
            "UUID" => return format!("urn:uuid:{}", urn_part(&uid.to_ascii_lowercase())),
            _ if ns.is_none() && is_oid => return format!("urn:oid:{uid}"),
            _ => {}
        }
    }
    if let Some(ns) = ns {
        return format!("urn:mediflow:hl7:{}", urn_part(ns));
    }
    facility_system(cfg, facility)
}

/// `cfg.facility_systems[facility]`, else `urn:mediflow:hl7:<facility>` (`local` when empty).
pub(crate) fn facility_system(cfg: &MappingConfig, facility: &str) -> String {
    if let Some(sys) = cfg.facility_systems.get(facility) {
        return sys.clone();
    }
    let f = if facility.is_empty() {
        "local"
    } else {
        facility
    };
    format!("urn:mediflow:hl7:{}", urn_part(f))
}

/// CX → Identifier (CX-1 value, CX-4 assigning authority → system, CX-5 type code).
/// `None` when CX-1 is empty.
pub(crate) fn cx(ctx: &Ctx, rep: &Rep, facility: &str) -> Option<Ident> {
    let value = rep.c(1)?;
    let system = authority_system(
        ctx.cfg,
        rep.s(4, 1).as_deref(),
        rep.s(4, 2).as_deref(),
        rep.s(4, 3).as_deref(),
        facility,
    );
    Some(Ident {
        system,
        value,
        type_code: rep.c(5),
    })
}

/// EI → Identifier (EI-1 entity id; EI-2 namespace, EI-3 universal id, EI-4 its type →
/// system). `None` when EI-1 is empty.
pub(crate) fn ei(ctx: &Ctx, rep: &Rep, facility: &str, type_code: &str) -> Option<Ident> {
    let value = rep.c(1)?;
    let system = authority_system(
        ctx.cfg,
        rep.c(2).as_deref(),
        rep.c(3).as_deref(),
        rep.c(4).as_deref(),
        facility,
    );
    Some(Ident {
        system,
        value,
        type_code: Some(type_code.to_owned()),
    })
}

/// Code system URI for a v2 coding system name (table 0396), `None` when empty.
pub(crate) fn code_system(name: &str) -> Option<String> {
    let n = name.trim();
    if n.is_empty() {
        return None;
    }
    let upper = n.to_ascii_uppercase();
    let known = match upper.as_str() {
        "LN" | "LOINC" => "http://loinc.org",
        "SCT" | "SNM" | "SNOMED" | "SNOMEDCT" | "SNM3" => "http://snomed.info/sct",
        "I10" | "ICD10" => "http://hl7.org/fhir/sid/icd-10",
        "I10C" | "ICD10CM" => "http://hl7.org/fhir/sid/icd-10-cm",
        "I9" | "I9C" | "ICD9" => "http://hl7.org/fhir/sid/icd-9-cm",
        "UCUM" => "http://unitsofmeasure.org",
        "RXN" | "RXNORM" => "http://www.nlm.nih.gov/research/umls/rxnorm",
        "CVX" => "http://hl7.org/fhir/sid/cvx",
        "NDC" => "http://hl7.org/fhir/sid/ndc",
        "C4" | "CPT" => "http://www.ama-assn.org/go/cpt",
        "CDCREC" => "urn:oid:2.16.840.1.113883.6.238",
        _ => "",
    };
    if !known.is_empty() {
        return Some(known.to_owned());
    }
    if let Some(num) = upper.strip_prefix("HL7")
        && num.len() == 4
        && num.bytes().all(|b| b.is_ascii_digit())
    {
        return Some(format!("http://terminology.hl7.org/CodeSystem/v2-{num}"));
    }
    Some(format!("urn:mediflow:hl7:codesystem:{}", urn_part(n)))
}

/// CWE/CE/CNE → CodeableConcept: CWE-1..3 and CWE-4..6 as codings (CWE-7/8 versions),
/// text from CWE-9 original text, else CWE-2. `None` when nothing is present.
pub(crate) fn cwe(rep: &Rep) -> Option<Value> {
    let mut codings = Vec::new();
    for (code, display, sys, version) in [(1, 2, 3, 7), (4, 5, 6, 8)] {
        if let Some(c) = rep.c(code) {
            codings.push(json!({
                "system": rep.c(sys).and_then(|s| code_system(&s)),
                "version": rep.c(version),
                "code": c,
                "display": rep.c(display),
            }));
        }
    }
    let text = rep.c(9).or_else(|| rep.c(2));
    if codings.is_empty() && text.is_none() {
        return None;
    }
    Some(json!({"coding": codings, "text": text}))
}

/// A CodeableConcept with one coding of `system` (no text).
pub(crate) fn concept(system: &str, code: &str, display: Option<&str>) -> Value {
    json!({"coding": [{"system": system, "code": code, "display": display}]})
}

/// XPN → HumanName: XPN-1.1 family, XPN-2 and XPN-3 given, XPN-4 and XPN-6 suffix, XPN-5
/// prefix, XPN-7 name type (table 0200) → use.
pub(crate) fn xpn(rep: &Rep) -> Option<Value> {
    let family = rep.c(1);
    let given: Vec<String> = [rep.c(2), rep.c(3)].into_iter().flatten().collect();
    if family.is_none() && given.is_empty() {
        return None;
    }
    let suffix: Vec<String> = [rep.c(4), rep.c(6)].into_iter().flatten().collect();
    let use_ = rep.c(7).and_then(|t| match t.as_str() {
        "L" => Some("official"),
        "D" => Some("usual"),
        "M" => Some("maiden"),
        "N" | "A" => Some("nickname"),
        "S" => Some("anonymous"),
        "B" | "BAD" => Some("old"),
        "T" | "TEMP" => Some("temp"),
        _ => None,
    });
    Some(json!({
        "use": use_,
        "family": family,
        "given": given,
        "prefix": rep.c(5).map(|p| vec![p]),
        "suffix": suffix,
    }))
}

/// XAD → Address: XAD-1.1 and XAD-2 lines, XAD-3 city, XAD-4 state, XAD-5 postal code,
/// XAD-6 country, XAD-9 district, XAD-7 address type (table 0190) → use/type.
pub(crate) fn xad(rep: &Rep) -> Option<Value> {
    let line: Vec<String> = [rep.s(1, 1), rep.c(2)].into_iter().flatten().collect();
    let (use_, type_) = match rep.c(7).as_deref() {
        Some("H") | Some("P") => (Some("home"), None),
        Some("B") | Some("O") => (Some("work"), None),
        Some("C") => (Some("temp"), None),
        Some("BA") => (Some("old"), None),
        Some("M") => (None, Some("postal")),
        Some("SH") => (None, Some("physical")),
        _ => (None, None),
    };
    let v = json!({
        "use": use_,
        "type": type_,
        "line": line,
        "city": rep.c(3),
        "district": rep.c(9),
        "state": rep.c(4),
        "postalCode": rep.c(5),
        "country": rep.c(6),
    });
    let has_data = ["line", "city", "district", "state", "postalCode", "country"]
        .iter()
        .any(|k| !v[*k].is_null() && v[*k] != json!([]));
    has_data.then_some(v)
}

/// XTN → ContactPoint: XTN-3 equipment type → system (Internet → email, FX → fax, BP →
/// pager, CP → phone with use mobile), XTN-2 use code → use (PRN home, WPN work...), value
/// XTN-4 email, else XTN-12 unformatted number, else +XTN-5 (XTN-6) XTN-7 xXTN-8, else XTN-1.
pub(crate) fn xtn(rep: &Rep) -> Option<Value> {
    let equip = rep.c(3).unwrap_or_default().to_ascii_uppercase();
    let email = rep.c(4);
    let system = match equip.as_str() {
        "INTERNET" | "X.400" => "email",
        "FX" => "fax",
        "BP" => "pager",
        "TDD" | "TTY" | "MD" => "other",
        _ if email.is_some() && rep.c(1).is_none() && rep.c(7).is_none() => "email",
        _ => "phone",
    };
    let value = if system == "email" {
        email.or_else(|| rep.c(1))
    } else if let Some(v) = rep.c(12) {
        Some(v)
    } else if let Some(local) = rep.c(7) {
        let mut s = String::new();
        if let Some(c) = rep.c(5) {
            s.push_str(&format!("+{c} "));
        }
        if let Some(a) = rep.c(6) {
            s.push_str(&format!("({a}) "));
        }
        s.push_str(&local);
        if let Some(x) = rep.c(8) {
            s.push_str(&format!(" x{x}"));
        }
        Some(s)
    } else {
        rep.c(1)
    }?;
    let use_ = if equip == "CP" {
        Some("mobile")
    } else {
        match rep.c(2).as_deref() {
            Some("PRN") | Some("ORN") | Some("VHN") => Some("home"),
            Some("WPN") => Some("work"),
            Some("PRS") => Some("mobile"),
            Some("ASN") | Some("EMR") => Some("temp"),
            _ => None,
        }
    };
    Some(json!({"system": system, "value": value, "use": use_}))
}

/// XCN → (identifier, HumanName): XCN-1 id with XCN-9 assigning authority (HD) → system;
/// XCN-2.1 family, XCN-3/4 given, XCN-5/7 suffix, XCN-6 prefix.
pub(crate) fn xcn(ctx: &Ctx, rep: &Rep, facility: &str) -> (Option<Ident>, Option<Value>) {
    let id = rep.c(1).map(|value| Ident {
        system: authority_system(
            ctx.cfg,
            rep.s(9, 1).as_deref(),
            rep.s(9, 2).as_deref(),
            rep.s(9, 3).as_deref(),
            facility,
        ),
        value,
        type_code: None,
    });
    let family = rep.c(2);
    let given: Vec<String> = [rep.c(3), rep.c(4)].into_iter().flatten().collect();
    let suffix: Vec<String> = [rep.c(5), rep.c(7)].into_iter().flatten().collect();
    let name = (family.is_some() || !given.is_empty()).then(|| {
        json!({
            "family": family,
            "given": given,
            "prefix": rep.c(6).map(|p| vec![p]),
            "suffix": suffix,
        })
    });
    (id, name)
}

/// A name as display text (`Dr John Smith`).
pub(crate) fn name_text(name: &Value) -> Option<String> {
    let mut parts: Vec<String> = Vec::new();
    for key in ["prefix", "given"] {
        if let Some(a) = name[key].as_array() {
            parts.extend(a.iter().filter_map(|v| v.as_str().map(str::to_owned)));
        }
    }
    if let Some(f) = name["family"].as_str() {
        parts.push(f.to_owned());
    }
    (!parts.is_empty()).then(|| parts.join(" "))
}

/// A v2 timestamp (TS/DTM: `YYYY[MM[DD[HH[MM[SS[.S+]]]]]][+/-ZZZZ]`) read for FHIR.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Stamp {
    /// FHIR `dateTime`: the precision kept; a time part only when the offset is known (FHIR
    /// requires a zone with a time), seconds added (`:00`) when v2 stopped at hours or
    /// minutes; without an offset only the date is kept.
    pub(crate) date_time: String,
    /// FHIR `date` (`YYYY`, `YYYY-MM` or `YYYY-MM-DD`).
    pub(crate) date: String,
    /// FHIR `instant`, only when the value has a time and an offset.
    pub(crate) instant: Option<String>,
}

/// Parses a TS/DTM/DT value (see [`Stamp`]); `location` names the field in the error.
pub(crate) fn ts(value: &str, location: &str) -> Result<Stamp, MappingError> {
    let bad = |why: &str| MappingError::invalid(location, value, why);
    let v = value.trim();
    let (body, offset) = match v
        .char_indices()
        .skip(4)
        .find(|(_, c)| *c == '+' || *c == '-')
    {
        Some((i, _)) => (&v[..i], Some(&v[i..])),
        None => (v, None),
    };
    let (digits, frac) = match body.split_once('.') {
        Some((d, f)) => (d, Some(f)),
        None => (body, None),
    };
    if !digits.bytes().all(|b| b.is_ascii_digit()) || ![4, 6, 8, 10, 12, 14].contains(&digits.len())
    {
        return Err(bad("not a timestamp YYYY[MM[DD[HH[MM[SS[.S]]]]]][+/-ZZZZ]"));
    }
    if let Some(f) = frac
        && (digits.len() != 14 || f.is_empty() || !f.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(bad("fractional seconds need whole seconds and digits"));
    }
    let num = |r: std::ops::Range<usize>| digits.get(r).and_then(|s| s.parse::<u32>().ok());
    let year = num(0..4).unwrap_or(0);
    if year == 0 {
        return Err(bad("year 0000"));
    }
    let month = num(4..6);
    let day = num(6..8);
    let (hour, minute, second) = (num(8..10), num(10..12), num(12..14));
    if let Some(m) = month
        && !(1..=12).contains(&m)
    {
        return Err(bad("month out of range"));
    }
    if let (Some(m), Some(d)) = (month, day)
        && chrono::NaiveDate::from_ymd_opt(year as i32, m, d).is_none()
    {
        return Err(bad("no such calendar day"));
    }
    if hour.is_some_and(|h| h > 23)
        || minute.is_some_and(|m| m > 59)
        || second.is_some_and(|s| s > 59)
    {
        return Err(bad("time out of range"));
    }
    let offset = match offset {
        None => None,
        Some(o) => {
            let sign = &o[..1];
            let d = &o[1..];
            if d.len() != 4 || !d.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad("timezone offset must be +/-HHMM"));
            }
            let (oh, om) = (&d[..2], &d[2..]);
            if oh.parse::<u32>().unwrap_or(99) > 14 || om.parse::<u32>().unwrap_or(99) > 59 {
                return Err(bad("timezone offset out of range"));
            }
            Some(format!("{sign}{oh}:{om}"))
        }
    };
    let mut date = format!("{year:04}");
    if let Some(m) = month {
        date.push_str(&format!("-{m:02}"));
    }
    if let Some(d) = day {
        date.push_str(&format!("-{d:02}"));
    }
    let (date_time, instant) = match (hour, &offset) {
        (Some(h), Some(off)) if day.is_some() => {
            let mut t = format!(
                "{date}T{h:02}:{:02}:{:02}",
                minute.unwrap_or(0),
                second.unwrap_or(0)
            );
            if let Some(f) = frac {
                t.push('.');
                t.push_str(f);
            }
            let off = if off == "+00:00" || off == "-00:00" {
                "Z"
            } else {
                off
            };
            t.push_str(off);
            (t.clone(), Some(t))
        }
        _ => (date.clone(), None),
    };
    Ok(Stamp {
        date_time,
        date,
        instant,
    })
}

/// Optional field: `Ok(None)` when absent, an error when present but malformed.
pub(crate) fn opt_ts(value: Option<String>, location: &str) -> Result<Option<Stamp>, MappingError> {
    value.map(|v| ts(&v, location)).transpose()
}

/// NM → FHIR decimal (a JSON number keeping the digits as sent: `3.50` stays `3.50`):
/// an optional sign, digits and at most one point; `+` and leading zeros dropped,
/// `.5` → `0.5`, `5.` → `5`. `None` when not numeric.
pub(crate) fn decimal(s: &str) -> Option<Number> {
    let s = s.trim();
    let (neg, rest) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let (int, frac) = rest.split_once('.').unwrap_or((rest, ""));
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    if !int.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let int = int.trim_start_matches('0');
    let mut out = String::new();
    if neg {
        out.push('-');
    }
    out.push_str(if int.is_empty() { "0" } else { int });
    if !frac.is_empty() {
        out.push('.');
        out.push_str(frac);
    }
    out.parse::<Number>().ok()
}
