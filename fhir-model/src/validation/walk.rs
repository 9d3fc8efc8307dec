//! Structure checks driven by the element registry, for what `fhir.schema.json` misses:
//! required elements (min >= 1) in the resource and in every present backbone element or
//! datatype, two forms of one choice element, integer ranges, calendar-valid dates, empty
//! arrays/objects, nested resources (contained, Bundle.entry.resource...), dom-2/dom-4.
//!
//! The walk follows only properties the registry knows; unknown properties and wrong JSON
//! types are left to the schema. It never panics and stops at [`MAX_DEPTH`].

use super::issue::{Issue, IssueCode, quote};
use crate::datetime::FhirDateTime;
use crate::registry::{Child, R4Registry, TypeDefinition, TypeKind};
use serde_json::{Map, Value};
use std::fmt::Write as _;

/// Deepest object nesting examined (resources nest far less; serde_json's own parser stops
/// at 128).
pub(crate) const MAX_DEPTH: usize = 96;

/// A resource found inside another one, to be schema-checked on its own.
pub(crate) struct Nested<'a> {
    pub(crate) path: String,
    pub(crate) value: &'a Value,
    pub(crate) type_name: &'static str,
}

pub(crate) struct Walker<'a> {
    reg: &'static R4Registry,
    pub(crate) issues: Vec<Issue>,
    pub(crate) nested: Vec<Nested<'a>>,
    too_deep: bool,
}

impl<'a> Walker<'a> {
    pub(crate) fn new(reg: &'static R4Registry) -> Self {
        Walker {
            reg,
            issues: Vec::new(),
            nested: Vec::new(),
            too_deep: false,
        }
    }

    /// Walks one resource object of type `td` found at `path` (`Patient`,
    /// `Bundle.entry[0].resource`). `path` is a scratch buffer, restored on return.
    pub(crate) fn walk_resource(
        &mut self,
        obj: &'a Map<String, Value>,
        td: &'static TypeDefinition,
        path: &mut String,
        depth: usize,
        contained: bool,
    ) {
        self.walk_object(obj, td, 0, path, depth, true);
        if contained {
            if obj.contains_key("contained") {
                self.issues.push(Issue::error(
                    IssueCode::Invariant,
                    "dom-2: a contained resource SHALL NOT contain nested resources",
                    Some(format!("{path}.contained")),
                ));
            }
            let meta = obj.get("meta").and_then(Value::as_object);
            if meta.is_some_and(|m| m.contains_key("versionId") || m.contains_key("lastUpdated")) {
                self.issues.push(Issue::error(
                    IssueCode::Invariant,
                    "dom-4: a contained resource SHALL NOT have a meta.versionId or a \
                     meta.lastUpdated",
                    Some(format!("{path}.meta")),
                ));
            }
        }
    }

    fn walk_object(
        &mut self,
        obj: &'a Map<String, Value>,
        td: &'static TypeDefinition,
        node: u32,
        path: &mut String,
        depth: usize,
        is_resource_root: bool,
    ) {
        if depth > MAX_DEPTH {
            if !self.too_deep {
                self.too_deep = true;
                self.issues.push(Issue::error(
                    IssueCode::Structure,
                    format!("Content is nested more than {MAX_DEPTH} levels deep"),
                    Some(path.clone()),
                ));
            }
            return;
        }
        if obj.is_empty() && !is_resource_root {
            self.issues.push(Issue::error(
                IssueCode::Invariant,
                "ele-1: All FHIR elements must have a @value or children (empty object)",
                Some(path.clone()),
            ));
            return;
        }
        let base = path.len();
        // Required elements seen (bit i = node_def.required[i]) and choice forms seen
        // (element, JSON name).
        let node_def = td.node(node);
        let mut present_required: u64 = 0;
        let mut choices: Vec<(u32, &str)> = Vec::new();
        for (key, value) in obj {
            if is_resource_root && key == "resourceType" {
                continue;
            }
            let (name, is_ext) = match key.strip_prefix('_') {
                Some(rest) => (rest, true),
                None => (key.as_str(), false),
            };
            let Some(child) = td.child(node, name) else {
                continue; // unknown: reported by the schema
            };
            let element = match child {
                Child::ChoiceBase(_) => continue,
                Child::Choice { element, .. } => {
                    if !choices.contains(&(element, name)) {
                        choices.push((element, name));
                    }
                    element
                }
                Child::Element(element) => element,
            };
            if let Some(pos) = node_def.required.iter().position(|&r| r == element) {
                present_required |= 1u64 << pos.min(63);
            }
            path.truncate(base);
            path.push('.');
            path.push_str(name);
            if let Value::Array(items) = value
                && items.is_empty()
            {
                self.issues.push(Issue::error(
                    IssueCode::Structure,
                    format!("Empty array for '{key}': absent elements must be omitted"),
                    Some(path.clone()),
                ));
                continue;
            }
            if is_ext {
                if let Some(element_td) = self.reg.type_definition("Element") {
                    self.each_item(value, path, |w, item, p| {
                        if let Value::Object(o) = item {
                            w.walk_object(o, element_td, 0, p, depth + 1, false);
                        }
                    });
                }
                continue;
            }
            let info = td.element_at(element);
            if info.is_array() != value.is_array() {
                // The schema checks this for primitives only (complex definitions have no
                // `type`); dedup drops the copy.
                let card = format!("{}..{}", info.min(), info.max_str());
                let text = if info.is_array() {
                    format!("Element '{name}' must be a JSON array (cardinality {card})")
                } else {
                    format!("Element '{name}' must not be a JSON array (cardinality {card})")
                };
                self.issues
                    .push(Issue::error(IssueCode::Structure, text, Some(path.clone())));
                continue;
            }
            if let Some(inline) = td.node_of(element) {
                self.each_item(value, path, |w, item, p| match item {
                    Value::Object(o) => w.walk_object(o, td, inline, p, depth + 1, false),
                    other => w
                        .issues
                        .push(not_an_object(other, "BackboneElement", p.clone())),
                });
                continue;
            }
            let code = match child {
                Child::Choice { type_index, .. } => info.types().get(usize::from(type_index)),
                _ if info.types().len() == 1 => info.types().first(),
                _ => None,
            };
            let Some(code) = code.map(|t| t.code()) else {
                continue;
            };
            let contained = is_resource_root && name == "contained";
            self.each_item(value, path, |w, item, p| {
                w.walk_typed(item, code, p, depth + 1, contained);
            });
        }
        path.truncate(base);
        for (pos, &r) in node_def.required.iter().enumerate() {
            if pos < 64 && present_required & (1u64 << pos) == 0 {
                let info = td.element_at(r);
                self.issues.push(Issue::error(
                    IssueCode::Required,
                    format!(
                        "Missing required element '{}' (minimum cardinality {})",
                        info.name(),
                        info.min()
                    ),
                    Some(format!("{path}.{}", info.name())),
                ));
            }
        }
        for (i, &(element, _)) in choices.iter().enumerate() {
            if choices[..i].iter().any(|&(e, _)| e == element) {
                continue; // reported with the first form
            }
            let forms: Vec<String> = choices
                .iter()
                .filter(|&&(e, _)| e == element)
                .map(|&(_, n)| format!("'{n}'"))
                .collect();
            if forms.len() > 1 {
                let name = td.element_at(element).name();
                self.issues.push(Issue::error(
                    IssueCode::Structure,
                    format!(
                        "Only one form of choice element '{name}' is allowed, found {}",
                        forms.join(", ")
                    ),
                    Some(format!("{path}.{name}")),
                ));
            }
        }
    }

    /// Calls `f` on each array item with `[i]` appended to `path`, or on the value itself.
    fn each_item(
        &mut self,
        value: &'a Value,
        path: &mut String,
        mut f: impl FnMut(&mut Self, &'a Value, &mut String),
    ) {
        match value {
            Value::Array(items) => {
                let base = path.len();
                for (i, item) in items.iter().enumerate() {
                    path.truncate(base);
                    let _ = write!(path, "[{i}]");
                    f(self, item, path);
                }
                path.truncate(base);
            }
            other => f(self, other, path),
        }
    }

    fn walk_typed(
        &mut self,
        value: &'a Value,
        code: &str,
        path: &mut String,
        depth: usize,
        contained: bool,
    ) {
        if code == "Resource" {
            self.walk_nested_resource(value, path, depth, contained);
        } else if code.starts_with(|c: char| c.is_ascii_lowercase()) {
            if let Some(issue) = check_primitive(value, code, path) {
                self.issues.push(issue);
            }
        } else if let Some(td) = self.reg.type_definition(code)
            && td.kind() == TypeKind::ComplexType
        {
            match value {
                Value::Object(o) => self.walk_object(o, td, 0, path, depth, false),
                other => self.issues.push(not_an_object(other, code, path.clone())),
            }
        }
    }

    fn walk_nested_resource(
        &mut self,
        value: &'a Value,
        path: &mut String,
        depth: usize,
        contained: bool,
    ) {
        let Value::Object(obj) = value else {
            self.issues.push(Issue::error(
                IssueCode::Structure,
                format!(
                    "Expected a resource (a JSON object), found {}",
                    quote(value)
                ),
                Some(path.clone()),
            ));
            return;
        };
        let Some(rt) = obj.get("resourceType") else {
            self.issues.push(Issue::error(
                IssueCode::Required,
                "Missing 'resourceType' in a nested resource",
                Some(path.clone()),
            ));
            return;
        };
        let td = rt
            .as_str()
            .filter(|rt| self.reg.is_resource_type(rt))
            .and_then(|rt| self.reg.type_definition(rt));
        let Some(td) = td else {
            self.issues.push(Issue::error(
                IssueCode::NotSupported,
                format!(
                    "Unknown resource type {} (not a FHIR R4 resource)",
                    quote(rt)
                ),
                Some(format!("{path}.resourceType")),
            ));
            return;
        };
        self.nested.push(Nested {
            path: path.clone(),
            value,
            type_name: td.name(),
        });
        self.walk_resource(obj, td, path, depth, contained);
    }
}

/// A complex value that is not a JSON object (the schema does not type complex values).
fn not_an_object(value: &Value, code: &str, path: String) -> Issue {
    Issue::error(
        IssueCode::Structure,
        format!(
            "The value {} is not a valid {code}: expected a JSON object",
            quote(value)
        ),
        Some(path),
    )
}

/// Checks the schema cannot express: integers (the schema types them as `number`) and
/// calendar validity of dates (its patterns accept `2021-02-31`).
pub(crate) fn check_primitive(value: &Value, code: &str, path: &str) -> Option<Issue> {
    let invalid = |reason: String| {
        Some(Issue::error(
            IssueCode::Value,
            format!("The value {} is not a valid {code}{reason}", quote(value)),
            Some(path.to_string()),
        ))
    };
    match (code, value) {
        ("integer" | "positiveInt" | "unsignedInt", Value::Number(n)) => {
            let min = match code {
                "positiveInt" => 1,
                "unsignedInt" => 0,
                _ => i64::from(i32::MIN),
            };
            match n.as_i64() {
                Some(i) if (min..=i64::from(i32::MAX)).contains(&i) => None,
                Some(_) => invalid(format!(
                    " (allowed range {min}..={}, datatypes.html)",
                    i32::MAX
                )),
                None => invalid(": a whole number without fraction or exponent is required".into()),
            }
        }
        ("date", Value::String(s)) => FhirDateTime::parse_date(s)
            .err()
            .and_then(|e| invalid(format!(": {e}"))),
        ("dateTime", Value::String(s)) => FhirDateTime::parse_date_time(s)
            .err()
            .and_then(|e| invalid(format!(": {e}"))),
        ("instant", Value::String(s)) => FhirDateTime::parse_instant(s)
            .err()
            .and_then(|e| invalid(format!(": {e}"))),
        _ => None,
    }
}
