//! Helpers shared by the integration tests.
#![allow(dead_code)]

use fhir_model::validation::{Issue, IssueCode, Validator};
use serde_json::Value;
use std::path::PathBuf;
use std::sync::OnceLock;

/// `<repo>/../shared/testdata`: the shared test data beside the repository root.
pub fn testdata() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/testdata");
    assert!(
        dir.is_dir(),
        "shared test data not found at {} (expected <repo>/../shared/testdata)",
        dir.display()
    );
    dir
}

/// One validator for the whole test binary (it takes ~100 ms to build).
pub fn validator() -> &'static Validator {
    static V: OnceLock<Validator> = OnceLock::new();
    V.get_or_init(|| Validator::new().expect("bundled schema compiles"))
}

/// Validates and returns the issues (empty when valid).
pub fn issues(resource: &Value) -> Vec<Issue> {
    validator().validate(resource).err().unwrap_or_default()
}

/// The first issue with `code` at `expression`, with a readable failure otherwise.
pub fn find<'a>(issues: &'a [Issue], code: IssueCode, expression: &str) -> &'a Issue {
    issues
        .iter()
        .find(|i| i.code == code && i.expression.iter().any(|e| e == expression))
        .unwrap_or_else(|| panic!("no {code:?} issue at {expression} in {issues:#?}"))
}
