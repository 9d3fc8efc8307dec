//! Validation of FHIR R4 resources in JSON form, before they are stored.
//!
//! [`Validator::validate`] combines two sources (FHIR R4 json.html, datatypes.html,
//! resource.html):
//!
//! 1. HL7's JSON schema `fhir.schema.json` (vendored in `profiles/`). The root validator
//!    checks a resource in microseconds. Only when it fails is a per-type validator built
//!    (root replaced by `{"$ref": "#/definitions/<Type>"}`, keeping only the definitions that
//!    type reaches, nested resources left to their own validators; ~5 ms), cached (8 types,
//!    LRU) and run for precise issues: unknown elements, wrong JSON types, pattern failures
//!    of id, date, dateTime, instant..., codes outside required bindings, missing required
//!    complex elements.
//! 2. The element registry ([`crate::registry`]) for what the schema cannot express: missing
//!    required elements (including primitives such as `Observation.status`) in the resource
//!    and in every present backbone element and datatype; two forms of one choice element
//!    (`valueString` and `valueQuantity`); a complex value that is not an object; array vs
//!    single value for complex elements; integer ranges; calendar-invalid dates
//!    (`2021-02-30`); empty arrays and objects (ele-1); nested resources (contained,
//!    Bundle.entry.resource, Parameters.parameter.resource): their types, dom-2, dom-4.
//!
//! Not checked: invariants other than ele-1/dom-2/dom-4, bindings other than the required
//! code enums in the schema, reference target types, profiles, xhtml content.

mod issue;
mod schema;
mod walk;

pub use issue::{Issue, IssueCode, Severity, operation_outcome};

use crate::registry::R4Registry;
use issue::quote;
use serde_json::Value;
use std::collections::HashSet;

/// Number of per-type schema validators kept by [`Validator::new`].
pub const DEFAULT_TYPE_CACHE: usize = 8;

/// At most this many issues are returned, followed by an [`Severity::Information`] issue
/// counting the rest.
pub const MAX_ISSUES: usize = 1000;

/// Why a [`Validator`] could not be built (only if the bundled schema were broken).
#[derive(Debug, thiserror::Error)]
pub enum ValidatorError {
    /// `profiles/fhir.schema.json` is not JSON.
    #[error("the bundled fhir.schema.json is not valid JSON: {0}")]
    SchemaJson(#[from] serde_json::Error),
    /// The jsonschema crate rejected the schema.
    #[error("compiling the bundled fhir.schema.json: {0}")]
    SchemaCompile(String),
}

/// A FHIR R4 resource validator. Build it once (about 100 ms in release) and share it: it is
/// `Send + Sync`, and [`Validator::validate`] takes `&self`.
pub struct Validator {
    root: jsonschema::Validator,
    types: schema::TypeCache,
    registry: &'static R4Registry,
}

impl std::fmt::Debug for Validator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Validator")
            .field("cached_types", &self.types.cached())
            .finish_non_exhaustive()
    }
}

impl Validator {
    /// Compiles the bundled schema, keeping [`DEFAULT_TYPE_CACHE`] per-type validators.
    ///
    /// # Errors
    /// [`ValidatorError`] if the bundled schema cannot be parsed or compiled.
    pub fn new() -> Result<Self, ValidatorError> {
        Self::with_type_cache(DEFAULT_TYPE_CACHE)
    }

    /// Like [`Validator::new`], keeping up to `capacity` (at least 1) per-type validators
    /// (each takes about 5 ms to build in release, ~1 MB).
    ///
    /// # Errors
    /// [`ValidatorError`] if the bundled schema cannot be parsed or compiled.
    pub fn with_type_cache(capacity: usize) -> Result<Self, ValidatorError> {
        let schema: Value = serde_json::from_str(schema::FHIR_SCHEMA_JSON)?;
        let root = jsonschema::options()
            .build(&schema)
            .map_err(|e| ValidatorError::SchemaCompile(e.to_string()))?;
        Ok(Validator {
            root,
            types: schema::TypeCache::new(schema, capacity),
            registry: R4Registry::get(),
        })
    }

    /// Validates one resource in FHIR JSON form.
    ///
    /// Returns `Ok(())` or every issue found (at least one), in a deterministic order: the
    /// schema's findings first, then the registry's; one issue per code and location; at most
    /// [`MAX_ISSUES`] (+1 saying how many were left out).
    /// Shapes of the issues:
    /// * input not an object: [`IssueCode::Structure`], no expression;
    /// * `resourceType` missing: [`IssueCode::Required`]; not a concrete R4 resource type
    ///   (`Foo`, `Resource`): [`IssueCode::NotSupported`], expression `resourceType`;
    /// * unknown element: [`IssueCode::Structure`], `Unknown element 'foo'` at
    ///   `Patient.foo`;
    /// * wrong JSON type: [`IssueCode::Structure`] at e.g. `Patient.name[0].given[1]`;
    /// * bad primitive value (`1970-13-01`): [`IssueCode::Value`], value quoted;
    /// * missing required element: [`IssueCode::Required`] at `Observation.status`;
    /// * two choice forms: [`IssueCode::Structure`] at `Observation.value[x]`.
    ///
    /// Never panics, whatever the JSON.
    pub fn validate(&self, resource: &Value) -> Result<(), Vec<Issue>> {
        let Value::Object(obj) = resource else {
            return Err(vec![Issue::error(
                IssueCode::Structure,
                format!(
                    "A FHIR resource must be a JSON object, found {}",
                    quote(resource)
                ),
                None,
            )]);
        };
        let Some(rt) = obj.get("resourceType") else {
            return Err(vec![Issue::error(
                IssueCode::Required,
                "Missing 'resourceType': a FHIR resource must name its type",
                None,
            )]);
        };
        let td = rt
            .as_str()
            .filter(|rt| self.registry.is_resource_type(rt))
            .and_then(|rt| self.registry.type_definition(rt));
        let Some(td) = td else {
            return Err(vec![Issue::error(
                IssueCode::NotSupported,
                format!(
                    "Unknown resource type {}: not a FHIR R4 (4.0.1) resource type",
                    quote(rt)
                ),
                Some("resourceType".to_string()),
            )]);
        };
        let type_name = td.name();
        if exceeds_depth(resource, walk::MAX_DEPTH) {
            // The schema validator recurses once per level: refuse before it runs out of stack.
            return Err(vec![Issue::error(
                IssueCode::Structure,
                format!(
                    "Content is nested more than {} levels deep",
                    walk::MAX_DEPTH
                ),
                Some(type_name.to_string()),
            )]);
        }

        let mut walker = walk::Walker::new(self.registry);
        walker.walk_resource(obj, td, &mut type_name.to_string(), 0, false);

        let mut issues = Vec::new();
        if !self.root.is_valid(resource) {
            let mut seen = self.schema_check(resource, type_name, type_name, &mut issues);
            for nested in &walker.nested {
                if !self.root.is_valid(nested.value) {
                    seen += self.schema_check(
                        nested.value,
                        nested.type_name,
                        &nested.path,
                        &mut issues,
                    );
                }
            }
            if seen == 0 && walker.issues.is_empty() {
                // The root validator failed but no per-type validator says why: never accept
                // silently.
                issues.push(Issue::error(
                    IssueCode::Invalid,
                    "The resource does not conform to the FHIR R4 JSON schema",
                    Some(type_name.to_string()),
                ));
            }
        }
        issues.append(&mut walker.issues);
        if issues.is_empty() {
            return Ok(());
        }
        let mut seen = HashSet::new();
        issues.retain(|i| seen.insert((i.code, i.expression.clone())));
        if issues.len() > MAX_ISSUES {
            let omitted = issues.len() - MAX_ISSUES;
            issues.truncate(MAX_ISSUES);
            issues.push(Issue {
                severity: Severity::Information,
                code: IssueCode::Invalid,
                diagnostics: format!("{omitted} further issues are not listed"),
                expression: Vec::new(),
            });
        }
        Err(issues)
    }

    /// The resource types whose per-type validators are cached, most recently used first.
    pub fn cached_types(&self) -> Vec<&'static str> {
        self.types.cached()
    }

    /// Schema issues of one resource (not descending into nested resources); returns the
    /// number of schema errors seen.
    fn schema_check(
        &self,
        resource: &Value,
        type_name: &'static str,
        path: &str,
        out: &mut Vec<Issue>,
    ) -> usize {
        let Some(td) = self.registry.type_definition(type_name) else {
            return 0;
        };
        match self.types.get(type_name) {
            Ok(v) => schema::schema_issues(&v, resource, td, path, out),
            Err(e) => {
                out.push(Issue::error(
                    IssueCode::Exception,
                    e,
                    Some(path.to_string()),
                ));
                1
            }
        }
    }
}

/// Whether `value` nests arrays/objects more than `limit` levels deep (iterative, so any
/// depth is safe).
fn exceeds_depth(value: &Value, limit: usize) -> bool {
    let mut stack: Vec<(&Value, usize)> = vec![(value, 0)];
    while let Some((v, depth)) = stack.pop() {
        let children: Box<dyn Iterator<Item = &Value>> = match v {
            Value::Array(a) => Box::new(a.iter()),
            Value::Object(o) => Box::new(o.values()),
            _ => continue,
        };
        if depth >= limit {
            return true;
        }
        stack.extend(
            children
                .filter(|c| c.is_array() || c.is_object())
                .map(|c| (c, depth + 1)),
        );
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validator_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Validator>();
    }
}
