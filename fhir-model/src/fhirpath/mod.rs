//! A FHIRPath engine over FHIR JSON (`serde_json::Value`).
//!
//! Implements FHIRPath Normative Release 1 (<http://hl7.org/fhirpath/N1/>) with the FHIR R4
//! additions of <http://hl7.org/fhir/R4/fhirpath.html> (`extension()`, `resolve()`, the
//! `%resource`/`%context`/`%ucum` variables, FHIR type names). It is built for evaluating
//! the R4 SearchParameter expressions for every stored resource, so:
//!
//! * an [`Expression`] is parsed once into a tree (functions resolved at parse time) and
//!   is `Send + Sync`, to be kept in a table and shared between threads;
//! * evaluation borrows from the input JSON: navigation results are `Cow::Borrowed` nodes
//!   ([`Node`]), only computed values (literals, arithmetic, conversions) are owned;
//! * element types come from [`crate::registry::R4Registry`], so every node knows its FHIR
//!   type (`Patient.name` is `HumanName`, `Observation.value` on `valueQuantity` is
//!   `Quantity`), which `is`/`as`/`ofType` (FHIRPath §6.3) and search indexing need.
//!
//! Choice elements follow FHIR R4 fhirpath.html §"Choice types": `Observation.value`
//! finds whichever `value[x]` form the JSON holds. Primitive extensions in the JSON `_name`
//! sibling (FHIR R4 json.html §"primitive elements") are reachable as
//! `Patient.birthDate.extension`.
//!
//! `resolve()` has no server behind it: on a Reference whose `reference` is a relative or
//! absolute literal reference (`Patient/1`, `http://x/fhir/Patient/1/_history/2`) it
//! returns a stub resource node typed by the reference's type (so `where(resolve() is
//! Patient)` works); contained (`#id`), `urn:` and canonical references resolve to nothing.
//!
//! ```
//! use fhir_model::fhirpath::Expression;
//! let patient = serde_json::json!({"resourceType": "Patient", "name": [{"given": ["Ann"]}]});
//! let expr = Expression::parse("Patient.name.given").unwrap();
//! let nodes = expr.evaluate(&patient).unwrap();
//! assert_eq!(nodes[0].value(), "Ann");
//! assert_eq!(nodes[0].type_name(), Some("string"));
//! ```

mod eval;
mod parser;
mod value;

use serde_json::Value;
use std::borrow::Cow;

use crate::registry::TypeDefinition;

/// A parsed FHIRPath expression (FHIRPath §3 "Path selection", §4 "Expressions").
///
/// Parse once with [`Expression::parse`], evaluate many times. `Send + Sync`.
#[derive(Debug, Clone)]
pub struct Expression {
    root: parser::Expr,
    source: Box<str>,
}

/// Errors of parsing or evaluating an expression.
#[derive(Debug, thiserror::Error)]
pub enum FhirPathError {
    /// The text is not a valid FHIRPath expression (FHIRPath Appendix A grammar), or names
    /// an unknown function or uses a wrong number of arguments.
    #[error("FHIRPath syntax error at offset {position}: {message}")]
    Parse {
        /// Byte offset in the expression text.
        position: usize,
        /// What is wrong.
        message: String,
    },
    /// An evaluation error (FHIRPath §3 "Singleton evaluation of collections", type errors
    /// of operators §6, invalid arguments of functions §5).
    #[error("FHIRPath evaluation error: {message}")]
    Eval {
        /// What went wrong.
        message: String,
    },
}

impl FhirPathError {
    pub(crate) fn eval(message: impl Into<String>) -> Self {
        FhirPathError::Eval {
            message: message.into(),
        }
    }
}

/// The FHIRPath System types (FHIRPath §2.1 "Literals" / §6.3 "Types", namespace `System`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sys {
    Boolean,
    String,
    Integer,
    Decimal,
    Date,
    DateTime,
    Time,
    Quantity,
}

impl Sys {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Sys::Boolean => "Boolean",
            Sys::String => "String",
            Sys::Integer => "Integer",
            Sys::Decimal => "Decimal",
            Sys::Date => "Date",
            Sys::DateTime => "DateTime",
            Sys::Time => "Time",
            Sys::Quantity => "Quantity",
        }
    }

    fn qualified(self) -> &'static str {
        match self {
            Sys::Boolean => "System.Boolean",
            Sys::String => "System.String",
            Sys::Integer => "System.Integer",
            Sys::Decimal => "System.Decimal",
            Sys::Date => "System.Date",
            Sys::DateTime => "System.DateTime",
            Sys::Time => "System.Time",
            Sys::Quantity => "System.Quantity",
        }
    }
}

/// Type information of a node.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Ty {
    /// Not known (JSON outside the registry's knowledge).
    Unknown,
    /// A System type value (literals and computed values).
    Sys(Sys),
    /// A FHIR type: its name, and where its children are defined (a type root or an inline
    /// backbone element), `None` for primitives.
    Fhir {
        name: &'static str,
        def: Option<(&'static TypeDefinition, u32)>,
    },
}

/// One item of a FHIRPath result collection: a JSON value (borrowed from the input when it
/// was navigated to, owned when computed) with its type.
#[derive(Debug, Clone)]
pub struct Node<'a> {
    pub(crate) value: Cow<'a, Value>,
    pub(crate) ty: Ty,
    /// For FHIR primitives: the JSON `_name` sibling holding `id`/`extension`
    /// (FHIR R4 json.html §"Representing primitive elements").
    pub(crate) ext: Option<&'a Value>,
}

impl<'a> Node<'a> {
    pub(crate) fn sys(value: Value, s: Sys) -> Node<'a> {
        Node {
            value: Cow::Owned(value),
            ty: Ty::Sys(s),
            ext: None,
        }
    }

    /// The JSON value. For System values: a JSON boolean, string, number (decimal text kept
    /// exactly), date/time text without `@`, or `{"value": n, "unit": "u"}` for quantities.
    /// A FHIR primitive that has only extensions (`_birthDate` without `birthDate`) is
    /// `null`.
    pub fn value(&self) -> &Value {
        &self.value
    }

    /// The FHIR type code of the node when known: `HumanName`, `CodeableConcept`,
    /// `dateTime`, `date`, `Quantity`, `Reference`, `string`, `code`, a resource type such
    /// as `Patient`, `BackboneElement`...; for System values (literals, computed values)
    /// the FHIRPath System type (`System.String`, `System.Integer`...). `None` if unknown.
    pub fn type_name(&self) -> Option<&str> {
        match self.ty {
            Ty::Unknown => self.value.get("resourceType").and_then(Value::as_str),
            Ty::Sys(s) => Some(s.qualified()),
            Ty::Fhir { name, .. } => Some(name),
        }
    }

    /// The `_name` sibling of a FHIR primitive (its `id` and `extension`), if any.
    pub fn primitive_extension(&self) -> Option<&'a Value> {
        self.ext
    }
}

impl Expression {
    /// Parses a FHIRPath expression (FHIRPath Appendix A grammar, with the FHIR R4
    /// functions of fhirpath.html §"Additional functions").
    ///
    /// # Errors
    /// [`FhirPathError::Parse`] for invalid syntax, unknown functions or wrong argument
    /// counts.
    pub fn parse(src: &str) -> Result<Expression, FhirPathError> {
        Ok(Expression {
            root: parser::parse(src)?,
            source: src.into(),
        })
    }

    /// The expression text as given to [`Expression::parse`].
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Evaluates with `resource` as the root (`%resource`, `%context` and the initial
    /// focus; FHIRPath §3, FHIR R4 fhirpath.html §"Variables").
    ///
    /// # Errors
    /// [`FhirPathError::Eval`] for type errors and singleton violations.
    pub fn evaluate<'a>(&self, resource: &'a Value) -> Result<Vec<Node<'a>>, FhirPathError> {
        let root = eval::root_node(resource);
        eval::evaluate(&self.root, &root, &root)
    }

    /// Evaluates with `context` as the focus (`$this`, `%context`) inside `resource`
    /// (`%resource`); used for the component expressions of composite SearchParameters,
    /// which are relative to a node the base expression returned.
    ///
    /// # Errors
    /// [`FhirPathError::Eval`] for type errors and singleton violations.
    pub fn evaluate_on<'a>(
        &self,
        resource: &'a Value,
        context: &Node<'a>,
    ) -> Result<Vec<Node<'a>>, FhirPathError> {
        let root = eval::root_node(resource);
        eval::evaluate(&self.root, &root, context)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn eval_strs(expr: &str, v: &Value) -> Vec<String> {
        let e = Expression::parse(expr).expect("parses");
        e.evaluate(v)
            .expect("evaluates")
            .iter()
            .map(|n| match n.value() {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect()
    }

    #[test]
    fn hostile_input_is_rejected_not_crashing() {
        let deep = format!("{}1{}", "(".repeat(5000), ")".repeat(5000));
        assert!(Expression::parse(&deep).is_err());
        let long = format!("Patient{}", ".name".repeat(5000));
        assert!(Expression::parse(&long).is_err());
        let sum = vec!["1"; 5000].join(" + ");
        assert!(Expression::parse(&sum).is_err());
        let minus = format!("{}1", "-".repeat(5000));
        assert!(Expression::parse(&minus).is_err());
        for bad in [
            "'unterminated",
            "1 +",
            "@2020-13-01",
            "a.(",
            "%",
            "é",
            "1.as(Nope)",
        ] {
            assert!(Expression::parse(bad).is_err(), "{bad}");
        }
        let v = json!({});
        // Near the limit: parses and evaluates within a test thread's 2 MiB stack.
        let nested = format!("{}1{}", "(".repeat(60), ")".repeat(60));
        let chain = vec!["1"; 150].join(" | ");
        let path = format!("Patient{}", ".name".repeat(150));
        for e in [nested, chain, path] {
            let x = Expression::parse(&e).expect("parses");
            x.evaluate(&v).expect("evaluates");
        }
        for e in [
            "-(-9223372036854775807 - 1)",
            "(-9223372036854775807 - 1).abs()",
            "9223372036854775807 + 1",
            "@2020-01-01 + 10000000000 days",
            "@9999-12-31 + 1 day",
            "1.0 / 0.0000000000000000000000000001",
            "99999999999999999999999999.9 * 99999999999999999999999999.9",
        ] {
            let x = Expression::parse(e).expect("parses");
            let _ = x.evaluate(&v);
        }
    }

    #[test]
    fn send_sync() {
        fn check<T: Send + Sync>() {}
        check::<Expression>();
    }

    #[test]
    fn paths_and_types() {
        let p = json!({"resourceType": "Patient", "birthDate": "1974-12-25",
            "name": [{"given": ["A", "B"], "family": "F"}, {"given": ["C"]}],
            "_birthDate": {"extension": [{"url": "u", "valueString": "x"}]}});
        assert_eq!(eval_strs("Patient.name.given", &p), ["A", "B", "C"]);
        assert!(eval_strs("Observation.code", &p).is_empty());
        let e = Expression::parse("Patient.name").expect("parses");
        let r = e.evaluate(&p).expect("evaluates");
        assert_eq!(r[0].type_name(), Some("HumanName"));
        let e = Expression::parse("Patient.birthDate").expect("parses");
        assert_eq!(e.evaluate(&p).expect("ok")[0].type_name(), Some("date"));
        assert_eq!(
            eval_strs("Patient.birthDate.extension('u').value", &p),
            ["x"]
        );
    }

    #[test]
    fn choice_and_resolve() {
        // Parsed from text so the decimal keeps its written precision.
        let o: Value = serde_json::from_str(
            r##"{"resourceType": "Observation", "valueQuantity": {"value": 1.50, "unit": "mg"},
            "subject": {"reference": "http://x/fhir/Patient/1/_history/2"},
            "performer": [{"reference": "Practitioner/2"}, {"reference": "#c"}]}"##,
        )
        .expect("valid JSON");
        let e = Expression::parse("(Observation.value as Quantity)").expect("parses");
        let r = e.evaluate(&o).expect("evaluates");
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].type_name(), Some("Quantity"));
        assert_eq!(
            eval_strs("Observation.value.as(FHIR.Quantity).value", &o),
            ["1.50"]
        );
        assert_eq!(
            eval_strs(
                "Observation.subject.where(resolve() is Patient).reference",
                &o
            )
            .len(),
            1
        );
        assert_eq!(
            eval_strs("Observation.performer.where(resolve() is Patient)", &o).len(),
            0
        );
        assert_eq!(
            eval_strs("Observation.performer.where(resolve() is Practitioner)", &o).len(),
            1
        );
    }
}
