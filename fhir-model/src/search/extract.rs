//! Conversion of FHIRPath results to index values (R4 search.html §3.1.1.4, the tables of
//! "which data types each search parameter type may refer to").

use super::{SearchParamDef, SearchParamType, ucum};
use crate::datetime::FhirDateTime;
use crate::fhirpath::{Expression, Node};
use crate::registry::R4Registry;
use serde_json::{Map, Value};
use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;

/// One row of the search index: a parameter of a resource and one value it has.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexEntry<'r> {
    /// The SearchParameter code, e.g. "name", "code-value-quantity".
    pub code: &'r str,
    /// For a component of a composite parameter: (group, component index). `group` numbers the
    /// base-expression node the components were evaluated on (so one Observation.component's
    /// code and value stay together); None for ordinary parameters.
    pub composite: Option<(u32, u8)>,
    /// The value, typed by the parameter's (for composites: the component's) type.
    pub value: IndexValue,
}

/// An index value, by search parameter type (R4 search.html §3.1.1.4).
#[derive(Debug, Clone, PartialEq)]
pub enum IndexValue {
    /// string (search.html#string): `normalized` = lower-cased, accents/diacritics removed
    /// (NFD + drop combining marks), whitespace collapsed (see [`normalize_string`]);
    /// `exact` = the original text (for `:exact`).
    String {
        /// The normalised text, compared by prefix (default) or substring (`:contains`).
        normalized: String,
        /// The text as written.
        exact: String,
    },
    /// token (search.html#token): system None when absent; code None when only text is
    /// present (still emitted so `:missing` sees the element).
    Token {
        /// Coding.system, Identifier.system; None for code/boolean/string/ContactPoint values.
        system: Option<String>,
        /// Coding.code, Identifier.value, ContactPoint.value, the code/boolean/string itself.
        code: Option<String>,
    },
    /// Normalised text for token `:text` (CodeableConcept.text, Coding.display,
    /// Identifier.type.text), normalised like [`IndexValue::String`].
    TokenText(String),
    /// Identifier `:of-type`: Identifier.type.coding system/code + Identifier.value.
    OfType {
        /// Identifier.type.coding.system.
        type_system: Option<String>,
        /// Identifier.type.coding.code.
        type_code: String,
        /// Identifier.value.
        value: String,
    },
    /// date: `[low, high)` in microseconds since the Unix epoch, UTC, from the value's
    /// precision ([`FhirDateTime::to_range`]); an open Period end is `i64::MAX`, an open start
    /// `i64::MIN`.
    Date {
        /// Inclusive start (µs since 1970-01-01T00:00:00Z).
        low: i64,
        /// Exclusive end (µs since 1970-01-01T00:00:00Z).
        high: i64,
    },
    /// number: the value.
    Number {
        /// The decimal or integer value.
        value: f64,
    },
    /// quantity: value as f64, Quantity.system, Quantity.code, Quantity.unit, and the
    /// UCUM-canonical `(value, unit)` when system is `http://unitsofmeasure.org` and the code
    /// converts ([`ucum::canonical`]). Money gives system `urn:iso:std:iso:4217` and code =
    /// currency. A Range gives two entries, its low and its high (each a quantity).
    Quantity {
        /// Quantity.value.
        value: f64,
        /// Quantity.system.
        system: Option<String>,
        /// Quantity.code.
        code: Option<String>,
        /// Quantity.unit (human-readable).
        unit: Option<String>,
        /// UCUM canonical value and unit code, e.g. `(54.0, "g.m-3")` for `5.4 mg/dL`.
        canonical: Option<(f64, String)>,
    },
    /// uri / url / canonical / oid / uuid values (search.html#uri), as written.
    Uri(String),
    /// reference (search.html#reference).
    ///
    /// * `Type/id` (or `Type/id/_history/n`) with a known resource type → type + id;
    /// * an absolute URL ending in `Type/id[/_history/n]` → type + id + url (the URL without
    ///   the `/_history/n` tail), so the server can match it as local when the base is its own;
    /// * a `canonical` (`http://…|version`) → url only, the `|version` stripped (canonical
    ///   references are matched by URL, never as local `Type/id`, even when they end so);
    /// * another absolute URI (`urn:oid:`, a URL without a `Type/id` tail) or a relative text
    ///   that is not `Type/id` → url only, as written;
    /// * contained `#x` and `urn:uuid:` (unresolved transaction ids) → no entry.
    Reference {
        /// The target resource type, when known.
        target_type: Option<String>,
        /// The target logical id, when known.
        id: Option<String>,
        /// The absolute URL or canonical, when there is one.
        url: Option<String>,
    },
    /// Reference.identifier, for the `:identifier` modifier.
    ReferenceIdentifier {
        /// Reference.identifier.system.
        system: Option<String>,
        /// Reference.identifier.value.
        value: String,
    },
}

/// String-search normalisation (R4 search.html §3.1.1.4.3: "case-insensitive and
/// accent-insensitive"): Unicode NFD, combining marks dropped, lower-cased, runs of whitespace
/// collapsed to one space and trimmed. `"  Müller\tJOSÉ "` → `"muller jose"`. Apply the same
/// function to search values.
pub fn normalize_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut space = false;
    let mut push = |c: char, out: &mut String| {
        if c.is_whitespace() {
            space = !out.is_empty();
        } else {
            if space {
                out.push(' ');
                space = false;
            }
            out.push(c);
        }
    };
    if s.is_ascii() {
        for c in s.chars() {
            push(c.to_ascii_lowercase(), &mut out);
        }
    } else {
        // Lower-case first: some lower-case mappings add combining marks (U+0130 → i̇).
        for c in s.chars().flat_map(char::to_lowercase).nfd() {
            if !is_combining_mark(c) {
                push(c, &mut out);
            }
        }
    }
    out
}

/// Converts one FHIR value to the index values of a parameter of type `kind`, per the R4
/// search.html tables. `type_name` is the FHIR type code of the value (`HumanName`,
/// `CodeableConcept`, `dateTime`, `Quantity`, `Reference`, `canonical`…) when known; when
/// `None` the type is inferred from `kind` and the JSON shape. Values that do not fit the
/// parameter type give nothing. `Composite` and `Special` give nothing (see
/// `SearchParamRegistry::extract` for composites).
pub fn values_of(kind: SearchParamType, type_name: Option<&str>, value: &Value) -> Vec<IndexValue> {
    let mut out = Vec::new();
    convert(kind, type_name, value, &mut out);
    out
}

fn convert(kind: SearchParamType, type_name: Option<&str>, v: &Value, out: &mut Vec<IndexValue>) {
    match kind {
        SearchParamType::String => string_values(type_name, v, out),
        SearchParamType::Token => token_values(type_name, v, out),
        SearchParamType::Date => date_values(type_name, v, out),
        SearchParamType::Number => {
            if let Some(x) = number(v) {
                out.push(IndexValue::Number { value: x });
            }
        }
        SearchParamType::Quantity => quantity_values(type_name, v, out),
        SearchParamType::Uri => {
            if let Some(s) = v.as_str() {
                out.push(IndexValue::Uri(s.to_string()));
            }
        }
        SearchParamType::Reference => reference_values(type_name, v, out),
        SearchParamType::Composite | SearchParamType::Special => {}
    }
}

fn str_field<'v>(o: &'v Map<String, Value>, key: &str) -> Option<&'v str> {
    o.get(key).and_then(Value::as_str)
}

fn owned(o: &Map<String, Value>, key: &str) -> Option<String> {
    str_field(o, key).map(str::to_string)
}

fn array<'v>(o: &'v Map<String, Value>, key: &str) -> &'v [Value] {
    o.get(key)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
    .filter(|x: &f64| x.is_finite())
}

fn push_string(s: &str, out: &mut Vec<IndexValue>) {
    let normalized = normalize_string(s);
    if !normalized.is_empty() {
        out.push(IndexValue::String {
            normalized,
            exact: s.to_string(),
        });
    }
}

// ---------------------------------------------------------------- string (§3.1.1.4.3)

const HUMAN_NAME_PARTS: [&str; 5] = ["family", "given", "prefix", "suffix", "text"];
const ADDRESS_PARTS: [&str; 7] = [
    "line",
    "city",
    "district",
    "state",
    "postalCode",
    "country",
    "text",
];

/// string ← string, markdown (and other string-like primitives); HumanName: family, given,
/// prefix, suffix, text; Address: line, city, district, state, postalCode, country, text.
fn string_values(type_name: Option<&str>, v: &Value, out: &mut Vec<IndexValue>) {
    match v {
        Value::String(s) => push_string(s, out),
        Value::Object(o) => {
            let parts: &[&str] = match type_name {
                Some("HumanName") => &HUMAN_NAME_PARTS,
                Some("Address") => &ADDRESS_PARTS,
                _ if o.contains_key("family") || o.contains_key("given") => &HUMAN_NAME_PARTS,
                _ if ADDRESS_PARTS.iter().any(|k| o.contains_key(*k)) => &ADDRESS_PARTS,
                _ => &[],
            };
            for part in parts {
                match o.get(*part) {
                    Some(Value::String(s)) => push_string(s, out),
                    Some(Value::Array(a)) => {
                        for s in a.iter().filter_map(Value::as_str) {
                            push_string(s, out);
                        }
                    }
                    _ => {}
                }
            }
        }
        _ => {}
    }
}

// ---------------------------------------------------------------- token (§3.1.1.4.4)

fn push_text(s: Option<&str>, out: &mut Vec<IndexValue>) {
    if let Some(s) = s {
        let n = normalize_string(s);
        if !n.is_empty() {
            out.push(IndexValue::TokenText(n));
        }
    }
}

fn coding(o: &Map<String, Value>, out: &mut Vec<IndexValue>) -> bool {
    let system = owned(o, "system");
    let code = owned(o, "code");
    let any = system.is_some() || code.is_some();
    if any {
        out.push(IndexValue::Token { system, code });
    }
    push_text(str_field(o, "display"), out);
    any
}

fn codeable_concept(o: &Map<String, Value>, out: &mut Vec<IndexValue>) {
    let mut any = false;
    for c in array(o, "coding") {
        if let Value::Object(c) = c {
            any |= coding(c, out);
        }
    }
    let text = str_field(o, "text");
    if !any && text.is_some() {
        out.push(IndexValue::Token {
            system: None,
            code: None,
        });
    }
    push_text(text, out);
}

fn identifier(o: &Map<String, Value>, out: &mut Vec<IndexValue>) {
    let system = owned(o, "system");
    let value = owned(o, "value");
    if system.is_some() || value.is_some() {
        out.push(IndexValue::Token {
            system,
            code: value.clone(),
        });
    }
    if let Some(Value::Object(t)) = o.get("type") {
        if let Some(value) = &value {
            for c in array(t, "coding") {
                if let Value::Object(c) = c
                    && let Some(code) = str_field(c, "code")
                {
                    out.push(IndexValue::OfType {
                        type_system: owned(c, "system"),
                        type_code: code.to_string(),
                        value: value.clone(),
                    });
                }
            }
        }
        push_text(str_field(t, "text"), out);
    }
}

/// ContactPoint: R4 search.html's token table maps it to `ContactPoint.value` with no system
/// ("at the discretion of the server… special handling"), so `Token{None, value}`. The
/// `phone`/`email` parameters already select by ContactPoint.system in their expressions.
fn contact_point(o: &Map<String, Value>, out: &mut Vec<IndexValue>) {
    if let Some(v) = owned(o, "value") {
        out.push(IndexValue::Token {
            system: None,
            code: Some(v),
        });
    }
}

const CONTACT_SYSTEMS: [&str; 7] = ["phone", "fax", "email", "pager", "url", "sms", "other"];

fn token_values(type_name: Option<&str>, v: &Value, out: &mut Vec<IndexValue>) {
    match v {
        Value::String(s) => out.push(IndexValue::Token {
            system: None,
            code: Some(s.clone()),
        }),
        Value::Bool(b) => out.push(IndexValue::Token {
            system: None,
            code: Some(b.to_string()),
        }),
        Value::Number(n) => out.push(IndexValue::Token {
            system: None,
            code: Some(n.to_string()),
        }),
        Value::Object(o) => match type_name {
            Some("CodeableConcept") => codeable_concept(o, out),
            Some("Coding") => {
                coding(o, out);
            }
            Some("Identifier") => identifier(o, out),
            Some("ContactPoint") => contact_point(o, out),
            _ if o.contains_key("coding") => codeable_concept(o, out),
            _ if o.contains_key("code") || o.contains_key("display") => {
                coding(o, out);
            }
            _ if o.contains_key("rank")
                || o.contains_key("use")
                    && str_field(o, "system").is_some_and(|s| CONTACT_SYSTEMS.contains(&s)) =>
            {
                contact_point(o, out)
            }
            _ if o.contains_key("value") || o.contains_key("system") => identifier(o, out),
            _ if o.contains_key("text") => codeable_concept(o, out),
            _ => {}
        },
        _ => {}
    }
}

// ---------------------------------------------------------------- date (§3.1.1.4.2)

fn date_range(s: &str) -> Option<(i64, i64)> {
    FhirDateTime::parse(s).ok().map(|d| d.to_range())
}

/// date ← date, dateTime, instant (their precision's range); Period (start..end, open ends
/// unbounded); Timing (min..max of `event`, else `repeat.boundsPeriod`).
fn date_values(_type_name: Option<&str>, v: &Value, out: &mut Vec<IndexValue>) {
    match v {
        Value::String(s) => {
            if let Some((low, high)) = date_range(s) {
                out.push(IndexValue::Date { low, high });
            }
        }
        Value::Object(o) if o.contains_key("event") || o.contains_key("repeat") => {
            let mut range: Option<(i64, i64)> = None;
            for e in array(o, "event").iter().filter_map(Value::as_str) {
                if let Some((l, h)) = date_range(e) {
                    range = Some(range.map_or((l, h), |(a, b)| (a.min(l), b.max(h))));
                }
            }
            if let Some((low, high)) = range {
                out.push(IndexValue::Date { low, high });
            } else if let Some(Value::Object(p)) = o
                .get("repeat")
                .and_then(|r| r.get("boundsPeriod"))
                .map(|p| p as &Value)
            {
                period(p, out);
            }
        }
        Value::Object(o) => period(o, out),
        _ => {}
    }
}

fn period(o: &Map<String, Value>, out: &mut Vec<IndexValue>) {
    let start = str_field(o, "start").and_then(date_range);
    let end = str_field(o, "end").and_then(date_range);
    if start.is_none() && end.is_none() {
        return;
    }
    out.push(IndexValue::Date {
        low: start.map_or(i64::MIN, |r| r.0),
        high: end.map_or(i64::MAX, |r| r.1),
    });
}

// ---------------------------------------------------------------- quantity (§3.1.1.4.7)

const UCUM: &str = "http://unitsofmeasure.org";
const ISO_4217: &str = "urn:iso:std:iso:4217";

fn quantity(o: &Map<String, Value>, out: &mut Vec<IndexValue>) {
    let Some(value) = o.get("value").and_then(number) else {
        return;
    };
    let (system, code) = if let Some(cur) = str_field(o, "currency") {
        (Some(ISO_4217.to_string()), Some(cur.to_string()))
    } else {
        (owned(o, "system"), owned(o, "code"))
    };
    let canonical = match (&system, &code) {
        (Some(s), Some(c)) if s == UCUM => ucum::canonical(value, c),
        _ => None,
    };
    out.push(IndexValue::Quantity {
        value,
        system,
        code,
        unit: owned(o, "unit"),
        canonical,
    });
}

/// quantity ← Quantity, Age, Duration, Count, Distance, SimpleQuantity, Money, and Range
/// (its `low` and `high` as two separate quantity entries: a Range value matches a search
/// when either bound does; exact range semantics would need a range column).
fn quantity_values(type_name: Option<&str>, v: &Value, out: &mut Vec<IndexValue>) {
    let Value::Object(o) = v else {
        if let Some(value) = number(v) {
            out.push(IndexValue::Quantity {
                value,
                system: None,
                code: None,
                unit: None,
                canonical: None,
            });
        }
        return;
    };
    if type_name == Some("Range") || o.contains_key("low") || o.contains_key("high") {
        for k in ["low", "high"] {
            if let Some(Value::Object(q)) = o.get(k) {
                quantity(q, out);
            }
        }
    } else {
        quantity(o, out);
    }
}

// ---------------------------------------------------------------- reference (§3.1.1.4.5)

fn is_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// `Type/id[/_history/n]` at the end of `path`: (type, id).
fn type_id_tail(path: &str) -> Option<(&str, &str)> {
    let path = match path.rfind("/_history/") {
        Some(i) => &path[..i],
        None => path,
    };
    let mut it = path.rsplitn(3, '/');
    let id = it.next()?;
    let ty = it.next()?;
    (is_id(id) && R4Registry::get().is_resource_type(ty)).then_some((ty, id))
}

fn strip_history(s: &str) -> &str {
    match s.rfind("/_history/") {
        Some(i) if type_id_tail(s).is_some() => &s[..i],
        _ => s,
    }
}

/// A Reference.reference or uri text (see [`IndexValue::Reference`]).
fn reference_string(s: &str, out: &mut Vec<IndexValue>) {
    let s = s.trim();
    if s.is_empty() || s.starts_with('#') || s.starts_with("urn:uuid:") {
        return;
    }
    let absolute = s.contains("://") || s.starts_with("urn:");
    match type_id_tail(s) {
        Some((ty, id)) => {
            out.push(IndexValue::Reference {
                target_type: Some(ty.to_string()),
                id: Some(id.to_string()),
                url: absolute.then(|| strip_history(s).to_string()),
            });
        }
        _ => out.push(IndexValue::Reference {
            target_type: None,
            id: None,
            url: Some(s.to_string()),
        }),
    }
}

fn canonical_string(s: &str, out: &mut Vec<IndexValue>) {
    let url = s.split('|').next().unwrap_or(s).trim();
    if !url.is_empty() && !url.starts_with('#') {
        out.push(IndexValue::Reference {
            target_type: None,
            id: None,
            url: Some(url.to_string()),
        });
    }
}

/// reference ← Reference (reference → see [`IndexValue::Reference`]; identifier →
/// [`IndexValue::ReferenceIdentifier`]), canonical (url, version stripped), uri/url (as a
/// reference text). Resources (e.g. `Bundle.entry[0].resource`) give nothing.
fn reference_values(type_name: Option<&str>, v: &Value, out: &mut Vec<IndexValue>) {
    match v {
        Value::String(s) if type_name == Some("canonical") => canonical_string(s, out),
        Value::String(s) => reference_string(s, out),
        Value::Object(o) if !o.contains_key("resourceType") => {
            if let Some(r) = str_field(o, "reference") {
                reference_string(r, out);
            }
            if let Some(Value::Object(id)) = o.get("identifier")
                && let Some(value) = owned(id, "value")
            {
                out.push(IndexValue::ReferenceIdentifier {
                    system: owned(id, "system"),
                    value,
                });
            }
        }
        _ => {}
    }
}

// ---------------------------------------------------------------- evaluation

fn convert_node(kind: SearchParamType, node: &Node<'_>, out: &mut Vec<IndexValue>) {
    convert(kind, node.type_name(), node.value(), out);
}

/// Evaluates an ordinary parameter and appends its entries; false on an evaluation error.
pub(super) fn simple<'r>(
    def: &'r SearchParamDef,
    expr: &Expression,
    resource: &Value,
    out: &mut Vec<IndexEntry<'r>>,
) -> bool {
    let Ok(nodes) = expr.evaluate(resource) else {
        return false;
    };
    let mut values = Vec::new();
    for n in &nodes {
        convert_node(def.kind, n, &mut values);
    }
    out.extend(values.into_iter().map(|value| IndexEntry {
        code: &def.code,
        composite: None,
        value,
    }));
    true
}

/// Evaluates a composite parameter: its expression gives the base nodes (group = their
/// index), each component expression is evaluated on each base node and typed by the
/// component's parameter type. False on an evaluation error.
pub(super) fn composite<'r>(
    def: &'r SearchParamDef,
    expr: &Expression,
    resource: &Value,
    out: &mut Vec<IndexEntry<'r>>,
) -> bool {
    let Ok(bases) = expr.evaluate(resource) else {
        return false;
    };
    let mut values = Vec::new();
    let mut group_entries: Vec<IndexEntry<'r>> = Vec::new();
    for (group, base) in bases.iter().enumerate() {
        let group = u32::try_from(group).unwrap_or(u32::MAX);
        group_entries.clear();
        let mut complete = true;
        for (ci, comp) in def.components.iter().enumerate() {
            let Some(cexpr) = &comp.compiled else {
                return false;
            };
            let Ok(nodes) = cexpr.evaluate_on(resource, base) else {
                return false;
            };
            let index = u8::try_from(ci).unwrap_or(u8::MAX);
            let before = group_entries.len();
            for n in &nodes {
                values.clear();
                convert_node(comp.kind, n, &mut values);
                // Only the primary value of a component takes part in a composite match
                // (search.html#composite): no `:text`, `:of-type` or `:identifier` rows.
                group_entries.extend(
                    values
                        .drain(..)
                        .filter(|v| {
                            !matches!(
                                v,
                                IndexValue::TokenText(_)
                                    | IndexValue::OfType { .. }
                                    | IndexValue::ReferenceIdentifier { .. }
                            )
                        })
                        .map(|value| IndexEntry {
                            code: &def.code,
                            composite: Some((group, index)),
                            value,
                        }),
                );
            }
            if group_entries.len() == before {
                complete = false;
                break;
            }
        }
        // A tuple missing a component can never match a composite value: write none of it.
        if complete {
            out.append(&mut group_entries);
        }
    }
    true
}

/// Removes entries of `out[start..]` equal to an earlier one in that range.
pub(super) fn dedup_tail(out: &mut Vec<IndexEntry<'_>>, start: usize) {
    let mut i = start + 1;
    while i < out.len() {
        if out[start..i].contains(&out[i]) {
            out.remove(i);
        } else {
            i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strings_lose_case_accents_and_extra_whitespace() {
        assert_eq!(normalize_string("  Müller\tJOSÉ  "), "muller jose");
        assert_eq!(normalize_string("Åsa Ñúñez"), "asa nunez");
        assert_eq!(normalize_string("Smith"), "smith");
        assert_eq!(normalize_string(" \n "), "");
        assert_eq!(normalize_string("İstanbul ÇAĞ"), "istanbul cag");
    }

    #[test]
    fn human_names_index_every_part() {
        let name = json!({"family": "Müller", "given": ["Anna", "Maria"], "prefix": ["Dr."],
                          "use": "official"});
        let v = values_of(SearchParamType::String, Some("HumanName"), &name);
        let n: Vec<&str> = v
            .iter()
            .filter_map(|x| match x {
                IndexValue::String { normalized, .. } => Some(normalized.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(n, ["muller", "anna", "maria", "dr."]);
        // Shape inference without a type name.
        assert_eq!(values_of(SearchParamType::String, None, &name).len(), 4);
    }

    #[test]
    fn codeable_concepts_give_codes_and_text() {
        let cc = json!({"coding": [{"system": "http://loinc.org", "code": "8480-6",
                                     "display": "Systolic"}], "text": "BP"});
        let v = values_of(SearchParamType::Token, Some("CodeableConcept"), &cc);
        assert_eq!(
            v,
            [
                IndexValue::Token {
                    system: Some("http://loinc.org".into()),
                    code: Some("8480-6".into())
                },
                IndexValue::TokenText("systolic".into()),
                IndexValue::TokenText("bp".into()),
            ]
        );
        let text_only = values_of(SearchParamType::Token, None, &json!({"text": "Héadache"}));
        assert_eq!(
            text_only,
            [
                IndexValue::Token {
                    system: None,
                    code: None
                },
                IndexValue::TokenText("headache".into())
            ]
        );
    }

    #[test]
    fn identifiers_give_of_type_entries() {
        let id = json!({"system": "urn:sys", "value": "123",
            "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                                 "code": "MR"}], "text": "Medical Record"}});
        let v = values_of(SearchParamType::Token, Some("Identifier"), &id);
        assert_eq!(v.len(), 3);
        assert!(v.contains(&IndexValue::OfType {
            type_system: Some("http://terminology.hl7.org/CodeSystem/v2-0203".into()),
            type_code: "MR".into(),
            value: "123".into()
        }));
        assert_eq!(v, values_of(SearchParamType::Token, None, &id));
    }

    #[test]
    fn contact_points_index_their_value_without_system() {
        let cp = json!({"system": "phone", "value": "555-1234", "use": "home"});
        let want = [IndexValue::Token {
            system: None,
            code: Some("555-1234".into()),
        }];
        assert_eq!(
            values_of(SearchParamType::Token, Some("ContactPoint"), &cp),
            want
        );
        assert_eq!(values_of(SearchParamType::Token, None, &cp), want);
    }

    #[test]
    fn booleans_are_true_or_false_tokens() {
        assert_eq!(
            values_of(SearchParamType::Token, Some("boolean"), &json!(false)),
            [IndexValue::Token {
                system: None,
                code: Some("false".into())
            }]
        );
    }

    #[test]
    fn periods_and_timings_become_ranges() {
        let day = 86_400_000_000i64;
        let p = values_of(
            SearchParamType::Date,
            Some("Period"),
            &json!({"start": "1970-01-02"}),
        );
        assert_eq!(
            p,
            [IndexValue::Date {
                low: day,
                high: i64::MAX
            }]
        );
        let t = json!({"event": ["1970-01-03", "1970-01-02"]});
        assert_eq!(
            values_of(SearchParamType::Date, Some("Timing"), &t),
            [IndexValue::Date {
                low: day,
                high: 3 * day
            }]
        );
        assert!(values_of(SearchParamType::Date, None, &json!("not a date")).is_empty());
    }

    #[test]
    fn quantities_money_and_ranges() {
        let q = json!({"value": 5.4, "unit": "mg/dL", "system": UCUM, "code": "mg/dL"});
        let v = values_of(SearchParamType::Quantity, Some("Quantity"), &q);
        let [
            IndexValue::Quantity {
                value,
                canonical: Some((cv, cu)),
                ..
            },
        ] = v.as_slice()
        else {
            panic!("{v:?}");
        };
        // 5.4 mg/dL = 54 g/m3 in UCUM base units.
        assert_eq!((*value, cu.as_str()), (5.4, "g.m-3"));
        assert!((cv - 54.0).abs() < 1e-9, "{cv}");
        let money = values_of(
            SearchParamType::Quantity,
            None,
            &json!({"value": 10, "currency": "EUR"}),
        );
        assert!(
            matches!(&money[..], [IndexValue::Quantity { system: Some(s), code: Some(c), .. }]
            if s == ISO_4217 && c == "EUR")
        );
        let range = json!({"low": {"value": 1}, "high": {"value": 2}});
        assert_eq!(
            values_of(SearchParamType::Quantity, Some("Range"), &range).len(),
            2
        );
    }

    #[test]
    fn references_split_into_type_id_and_url() {
        let r = |s: &str| {
            values_of(
                SearchParamType::Reference,
                Some("Reference"),
                &json!({"reference": s}),
            )
        };
        let refv = |t: Option<&str>, i: Option<&str>, u: Option<&str>| IndexValue::Reference {
            target_type: t.map(Into::into),
            id: i.map(Into::into),
            url: u.map(Into::into),
        };
        assert_eq!(r("Patient/123"), [refv(Some("Patient"), Some("123"), None)]);
        assert_eq!(
            r("Patient/123/_history/2"),
            [refv(Some("Patient"), Some("123"), None)]
        );
        assert_eq!(
            r("http://ex.org/fhir/Patient/9/_history/1"),
            [refv(
                Some("Patient"),
                Some("9"),
                Some("http://ex.org/fhir/Patient/9")
            )]
        );
        assert_eq!(
            r("urn:oid:1.2.3"),
            [refv(None, None, Some("urn:oid:1.2.3"))]
        );
        assert!(r("#contained").is_empty());
        assert!(r("urn:uuid:0b9e5b8e-0000-4000-8000-000000000000").is_empty());
        let c = values_of(
            SearchParamType::Reference,
            Some("canonical"),
            &json!("http://hl7.org/fhir/Questionnaire/q|1.0"),
        );
        assert_eq!(
            c,
            [refv(
                None,
                None,
                Some("http://hl7.org/fhir/Questionnaire/q")
            )]
        );
        let ident = values_of(
            SearchParamType::Reference,
            None,
            &json!({"identifier": {"system": "urn:s", "value": "v"}, "display": "x"}),
        );
        assert_eq!(
            ident,
            [IndexValue::ReferenceIdentifier {
                system: Some("urn:s".into()),
                value: "v".into()
            }]
        );
    }
}
