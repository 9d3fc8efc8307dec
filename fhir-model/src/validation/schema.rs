//! The JSON-schema half of validation: the bundled HL7 `fhir.schema.json` (FHIR R4
//! json.html §2.6.3 "JSON Schema"), a root validator for the fast path and per-type
//! validators, built on demand and cached, whose errors become precise [`Issue`]s.
//!
//! Per-type schemas replace `definitions.ResourceList` (every element of type `Resource`:
//! `contained`, `Bundle.entry.resource`, `Parameters.parameter.resource`,
//! `Bundle.entry.response.outcome`) by `{}`: nested resources are checked one by one with
//! their own validators. Without that, the error report of a resource holding an invalid
//! nested resource collects errors against all 146 `oneOf` branches, recursively (1.7 s for
//! one Synthea Bundle; exponential in the nesting), and each per-type validator would compile
//! all 146 resource definitions.

use super::issue::{Issue, IssueCode, quote};
use crate::registry::{Child, ElementInfo, R4Registry, TypeDefinition};
use jsonschema::error::ValidationErrorKind;
use jsonschema::paths::LocationSegment;
use serde_json::{Map, Value};
use std::sync::{Arc, Mutex};

/// The vendored HL7 FHIR R4 JSON schema (draft-06), `profiles/fhir.schema.json`.
pub(crate) const FHIR_SCHEMA_JSON: &str = include_str!("../../../profiles/fhir.schema.json");

/// Per-type validators, most recently used first.
pub(crate) struct TypeCache {
    base: Value,
    capacity: usize,
    entries: Mutex<Vec<(&'static str, Arc<jsonschema::Validator>)>>,
}

impl TypeCache {
    /// `schema` is the parsed root schema; `capacity` the number of validators kept.
    pub(crate) fn new(mut schema: Value, capacity: usize) -> Self {
        if let Some(root) = schema.as_object_mut() {
            root.remove("oneOf");
            root.remove("discriminator");
            if let Some(defs) = root.get_mut("definitions").and_then(Value::as_object_mut) {
                defs.insert("ResourceList".into(), Value::Object(Default::default()));
            }
        }
        TypeCache {
            base: schema,
            capacity: capacity.max(1),
            entries: Mutex::new(Vec::new()),
        }
    }

    /// The validator for one resource type, built on a miss (see [`TypeCache::type_schema`]).
    /// The lock is not held while building, so two threads may build the same type once.
    pub(crate) fn get(
        &self,
        type_name: &'static str,
    ) -> Result<Arc<jsonschema::Validator>, String> {
        {
            let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(pos) = entries.iter().position(|(n, _)| *n == type_name) {
                let entry = entries.remove(pos);
                let v = Arc::clone(&entry.1);
                entries.insert(0, entry);
                return Ok(v);
            }
        }
        let schema = self.type_schema(type_name);
        let built = jsonschema::options()
            .build(&schema)
            .map_err(|e| format!("building the {type_name} validator: {e}"))?;
        let built = Arc::new(built);
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.retain(|(n, _)| *n != type_name);
        entries.insert(0, (type_name, Arc::clone(&built)));
        entries.truncate(self.capacity);
        Ok(built)
    }

    /// `{"$schema": ..., "$ref": "#/definitions/<Type>", "definitions": {...}}` holding only
    /// the definitions reachable from the type (building is then 2–4 times faster and the
    /// validator smaller than with all 680 definitions).
    fn type_schema(&self, type_name: &str) -> Value {
        let empty = Map::new();
        let defs = self
            .base
            .get("definitions")
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        let mut kept = Map::new();
        let mut queue = vec![type_name.to_string()];
        while let Some(name) = queue.pop() {
            if kept.contains_key(&name) {
                continue;
            }
            let Some(def) = defs.get(&name) else {
                continue;
            };
            collect_refs(def, &mut queue);
            kept.insert(name, def.clone());
        }
        let mut root = Map::new();
        if let Some(draft) = self.base.get("$schema") {
            root.insert("$schema".into(), draft.clone());
        }
        root.insert(
            "$ref".into(),
            Value::String(format!("#/definitions/{type_name}")),
        );
        root.insert("definitions".into(), Value::Object(kept));
        Value::Object(root)
    }

    /// Names of the cached types, most recently used first.
    pub(crate) fn cached(&self) -> Vec<&'static str> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.iter().map(|(n, _)| *n).collect()
    }
}

/// Pushes the definition names of all `"$ref": "#/definitions/<Name>"` inside `v`.
fn collect_refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(o) => {
            for (k, child) in o {
                if k == "$ref"
                    && let Some(name) = child
                        .as_str()
                        .and_then(|r| r.strip_prefix("#/definitions/"))
                {
                    out.push(name.to_string());
                } else {
                    collect_refs(child, out);
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|c| collect_refs(c, out)),
        _ => {}
    }
}

/// Converts the errors of `validator` on `resource` (of type `td`, located at `prefix`) into
/// issues appended to `out`. Returns the number of schema errors seen, including those
/// deliberately dropped (see [`null_paired_with_extension`]).
pub(crate) fn schema_issues(
    validator: &jsonschema::Validator,
    resource: &Value,
    td: &'static TypeDefinition,
    prefix: &str,
    out: &mut Vec<Issue>,
) -> usize {
    let reg = R4Registry::get();
    let mut seen = 0;
    for error in validator.iter_errors(resource) {
        seen += 1;
        let segments: Vec<Seg> = error
            .instance_path()
            .iter()
            .map(|s| match s {
                LocationSegment::Property(p) => Seg::Prop(p.into_owned()),
                LocationSegment::Index(i) => Seg::Index(i),
            })
            .collect();
        let path = fhir_path(prefix, &segments);
        let target = resolve(reg, td, &segments);
        let instance = error.instance();
        match error.kind() {
            ValidationErrorKind::AdditionalProperties { unexpected } => {
                for name in unexpected {
                    out.push(Issue::error(
                        IssueCode::Structure,
                        format!("Unknown element '{name}'"),
                        Some(format!("{path}.{name}")),
                    ));
                }
            }
            ValidationErrorKind::Required { property } => {
                let name = property.as_str().unwrap_or_default();
                let child = Seg::Prop(name.to_string());
                let full: Vec<Seg> = segments.iter().cloned().chain([child]).collect();
                let min = resolve(reg, td, &full).map_or(1, |t| t.info.min());
                out.push(Issue::error(
                    IssueCode::Required,
                    format!("Missing required element '{name}' (minimum cardinality {min})"),
                    Some(format!("{path}.{name}")),
                ));
            }
            ValidationErrorKind::Type { .. }
                if instance.is_null() && null_paired_with_extension(resource, &segments) => {}
            ValidationErrorKind::Type { .. } => {
                out.push(type_issue(instance, target.as_ref(), &segments, path));
            }
            ValidationErrorKind::Pattern { .. } if !instance.is_string() => {
                // Patterns on boolean/number definitions: the type error says it.
            }
            ValidationErrorKind::Pattern { .. } => {
                let text = match (target.as_ref().and_then(|t| t.code), instance.as_ref()) {
                    (_, Value::String(s)) if s.trim().is_empty() => format!(
                        "The value {} is empty or blank: FHIR strings need at least one \
                         non-whitespace character",
                        quote(instance)
                    ),
                    (Some(code), _) => {
                        format!("The value {} is not a valid {code}", quote(instance))
                    }
                    (None, _) => format!("The value {} has an invalid format", quote(instance)),
                };
                out.push(Issue::error(IssueCode::Value, text, Some(path)));
            }
            ValidationErrorKind::Enum { options } => {
                let codes: Vec<String> = options
                    .as_array()
                    .map(|a| a.iter().take(30).map(quote).collect())
                    .unwrap_or_default();
                out.push(Issue::error(
                    IssueCode::Value,
                    format!(
                        "The value {} is not one of the codes allowed here: {}",
                        quote(instance),
                        codes.join(", ")
                    ),
                    Some(path),
                ));
            }
            _ => {
                let mut text = error.to_string();
                if text.len() > 300 {
                    let cut = (0..=300)
                        .rev()
                        .find(|&i| text.is_char_boundary(i))
                        .unwrap_or(0);
                    text.truncate(cut);
                    text.push('…');
                }
                out.push(Issue::error(IssueCode::Invalid, text, Some(path)));
            }
        }
    }
    seen
}

fn type_issue(
    instance: &Value,
    target: Option<&Target<'_>>,
    segments: &[Seg],
    path: String,
) -> Issue {
    let Some(t) = target else {
        return Issue::error(
            IssueCode::Structure,
            format!("The value {} has the wrong JSON type", quote(instance)),
            Some(path),
        );
    };
    let card = format!("{}..{}", t.info.min(), t.info.max_str());
    let name = t.info.name();
    let text = if t.at_property && t.info.is_array() && !instance.is_array() {
        format!("Element '{name}' must be a JSON array (cardinality {card})")
    } else if t.at_property && !t.info.is_array() && instance.is_array() {
        format!("Element '{name}' must not be a JSON array (cardinality {card})")
    } else if segments
        .iter()
        .any(|s| matches!(s, Seg::Prop(p) if p.starts_with('_')))
    {
        format!(
            "The value {} has the wrong JSON type for the extensions of a primitive",
            quote(instance)
        )
    } else {
        let code = t.code.unwrap_or("element");
        let expected = match code {
            "boolean" => "a JSON boolean",
            "integer" | "positiveInt" | "unsignedInt" | "decimal" => "a JSON number",
            c if c.starts_with(|ch: char| ch.is_ascii_lowercase()) => "a JSON string",
            _ => "a JSON object",
        };
        format!(
            "The value {} is not a valid {code}: expected {expected}",
            quote(instance)
        )
    };
    Issue::error(IssueCode::Structure, text, Some(path))
}

/// json.html: a repeating primitive may hold `null` where only its extension is present:
/// `"given": ["a", null], "_given": [null, {"extension": [...]}]`. The HL7 schema types the
/// items as strings and rejects that `null`; it is fine when the `_` twin has an item there.
fn null_paired_with_extension(resource: &Value, segments: &[Seg]) -> bool {
    let [parents @ .., Seg::Prop(name), Seg::Index(index)] = segments else {
        return false;
    };
    let mut parent = resource;
    for seg in parents {
        let next = match seg {
            Seg::Prop(p) => parent.get(p.as_str()),
            Seg::Index(i) => parent.get(*i),
        };
        match next {
            Some(v) => parent = v,
            None => return false,
        }
    }
    parent
        .get(format!("_{name}"))
        .and_then(|twin| twin.get(*index))
        .is_some_and(|item| !item.is_null())
}

#[derive(Debug, Clone)]
enum Seg {
    Prop(String),
    Index(usize),
}

/// `Patient` + `[name, 0, given, 1]` -> `Patient.name[0].given[1]`; `_given` -> `given`.
fn fhir_path(prefix: &str, segments: &[Seg]) -> String {
    let mut out = prefix.to_string();
    for s in segments {
        match s {
            Seg::Prop(p) => {
                out.push('.');
                out.push_str(p.strip_prefix('_').unwrap_or(p));
            }
            Seg::Index(i) => {
                out.push('[');
                out.push_str(&i.to_string());
                out.push(']');
            }
        }
    }
    out
}

/// The element a JSON location points at.
struct Target<'r> {
    info: &'r ElementInfo,
    /// The FHIR type code of the value (the chosen type for a choice element; `Element`
    /// for `_x`).
    code: Option<&'r str>,
    /// The location is the property itself, not an item of its array.
    at_property: bool,
}

/// Follows a JSON location through the registry: inline elements, datatypes,
/// contentReference, and `_x` primitive extensions (typed `Element`).
fn resolve(
    reg: &'static R4Registry,
    td: &'static TypeDefinition,
    segments: &[Seg],
) -> Option<Target<'static>> {
    let mut td = td;
    let mut node = 0u32;
    let mut last: Option<(&'static TypeDefinition, u32, Option<&'static str>, bool)> = None;
    let mut i = 0;
    while i < segments.len() {
        let Seg::Prop(prop) = &segments[i] else {
            return None;
        };
        if let Some((prev_td, prev_el, prev_code, _)) = last {
            // Descend into the previous element's children.
            if let Some(n) = prev_td.node_of(prev_el) {
                td = prev_td;
                node = n;
            } else {
                td = reg.type_definition(prev_code?)?;
                node = 0;
            }
        }
        let (name, ext) = match prop.strip_prefix('_') {
            Some(rest) => (rest, true),
            None => (prop.as_str(), false),
        };
        let child = td.child(node, name)?;
        let element = match child {
            Child::ChoiceBase(_) => return None,
            other => other.element(),
        };
        let info = td.element_at(element);
        let code = match child {
            _ if ext => Some("Element"),
            Child::Choice { type_index, .. } => {
                info.types().get(usize::from(type_index)).map(|t| t.code())
            }
            _ if info.types().len() == 1 => info.types().first().map(|t| t.code()),
            _ => None,
        };
        i += 1;
        let mut at_property = true;
        if let Some(Seg::Index(_)) = segments.get(i) {
            at_property = false;
            i += 1;
        }
        last = Some((td, element, code, at_property));
    }
    last.map(|(td, element, code, at_property)| Target {
        info: td.element_at(element),
        code,
        at_property,
    })
}
