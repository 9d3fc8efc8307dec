//! Validation issues and their OperationOutcome form (FHIR R4 operationoutcome.html).

use serde::Serialize;
use serde_json::{Value, json};

/// OperationOutcome.issue.severity (value set `issue-severity`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The issue caused the action to fail and no further checking could be performed.
    Fatal,
    /// The issue is sufficiently important to cause the action to fail.
    Error,
    /// The issue is not important enough to cause the action to fail.
    Warning,
    /// Informational only.
    Information,
}

impl Severity {
    /// The FHIR code: `fatal`, `error`, `warning`, `information`.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Fatal => "fatal",
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Information => "information",
        }
    }
}

/// OperationOutcome.issue.code (value set `issue-type`), the codes this crate emits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum IssueCode {
    /// `invalid`: content invalid against the specification or a profile.
    Invalid,
    /// `structure`: a structural issue: unknown element, wrong JSON type, empty array,
    /// two forms of one choice element.
    Structure,
    /// `required`: a required element is missing.
    Required,
    /// `value`: an element value is invalid (pattern, code not in a required value set,
    /// calendar-invalid date, integer out of range).
    Value,
    /// `invariant`: a validation rule (constraint) failed, e.g. dom-2.
    Invariant,
    /// `not-supported`: the content is not supported, e.g. an unknown resource type.
    NotSupported,
    /// `exception`: an internal error while validating.
    Exception,
}

impl IssueCode {
    /// The FHIR code: `invalid`, `structure`, `required`, `value`, `invariant`,
    /// `not-supported`, `exception`.
    pub fn as_str(self) -> &'static str {
        match self {
            IssueCode::Invalid => "invalid",
            IssueCode::Structure => "structure",
            IssueCode::Required => "required",
            IssueCode::Value => "value",
            IssueCode::Invariant => "invariant",
            IssueCode::NotSupported => "not-supported",
            IssueCode::Exception => "exception",
        }
    }
}

/// One validation finding.
///
/// `expression` holds FHIRPath-style locations of the element concerned (json.html names):
/// `Patient.name[0].given[1]`, `Patient.birthDate`, `Observation.valueQuantity`,
/// `Bundle.entry[3].resource.status`. It is empty when the finding concerns the input as a
/// whole (not an object, unknown resource type).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Issue {
    /// How serious the issue is (validation findings are [`Severity::Error`]).
    pub severity: Severity,
    /// The issue type.
    pub code: IssueCode,
    /// Human-readable text: `Unknown element 'foo'`, `The value '1970-13-01' is not a valid
    /// date`...
    pub diagnostics: String,
    /// FHIRPath-style locations of the element concerned (may be empty).
    pub expression: Vec<String>,
}

impl Issue {
    /// An error-severity issue at one location (`expression` empty when `None`).
    pub fn error(
        code: IssueCode,
        diagnostics: impl Into<String>,
        expression: Option<String>,
    ) -> Self {
        Issue {
            severity: Severity::Error,
            code,
            diagnostics: diagnostics.into(),
            expression: expression.into_iter().collect(),
        }
    }

    /// This issue as an `OperationOutcome.issue` JSON object.
    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "severity": self.severity.as_str(),
            "code": self.code.as_str(),
            "diagnostics": self.diagnostics,
        });
        if !self.expression.is_empty()
            && let Some(obj) = v.as_object_mut()
        {
            obj.insert("expression".into(), json!(self.expression));
        }
        v
    }
}

/// An `OperationOutcome` resource (JSON) listing `issues` in order.
///
/// An empty slice gives the single `information`/`informational` issue R4 requires
/// (OperationOutcome.issue is 1..*).
pub fn operation_outcome(issues: &[Issue]) -> Value {
    let list: Vec<Value> = if issues.is_empty() {
        vec![
            json!({"severity": "information", "code": "informational", "diagnostics": "No issues"}),
        ]
    } else {
        issues.iter().map(Issue::to_json).collect()
    };
    json!({"resourceType": "OperationOutcome", "issue": list})
}

/// Quotes a JSON value for a diagnostic: strings in single quotes, anything else as JSON,
/// cut to 100 characters.
pub(crate) fn quote(value: &Value) -> String {
    let text = match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let mut out: String = text.chars().take(100).collect();
    if out.len() < text.len() {
        out.push('…');
    }
    match value {
        Value::String(_) => format!("'{out}'"),
        _ => out,
    }
}
