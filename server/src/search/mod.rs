//! Search parameters: parsing a FHIR query string into a typed [`SearchQuery`].
//!
//! This is the minimal search of the first release (R4 search.html): `_id`, `_lastUpdated`
//! with prefixes, `identifier` as a token, the reference parameters `patient`, `subject`
//! and `encounter` (from [`reference_params`]), `_count`, and keyset paging. The list of
//! supported parameters, [`SUPPORTED_PARAMS`], is the single source used by the parser,
//! the indexer (`crate::indexing`) and the CapabilityStatement.

pub mod reference_params;

use fhir_model::datetime::FhirDateTime;
use reference_params::REFERENCE_PARAMS;

/// Default page size (R4 search.html#count leaves it to the server).
pub const DEFAULT_COUNT: usize = 20;
/// Largest page the server returns, whatever `_count` asks.
pub const MAX_COUNT: usize = 1000;

/// The FHIR search parameter type (R4 search.html#ptypes), as listed in the
/// CapabilityStatement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamType {
    Token,
    Date,
    Reference,
}

impl ParamType {
    /// The `SearchParamType` code.
    pub fn code(self) -> &'static str {
        match self {
            ParamType::Token => "token",
            ParamType::Date => "date",
            ParamType::Reference => "reference",
        }
    }
}

/// Indexed token parameters. Each maps to index rows written at write time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenParam {
    /// `identifier`: `[type].identifier` (Identifier: system|value).
    Identifier,
}

impl TokenParam {
    /// The SearchParameter code stored in `search_token.param`.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenParam::Identifier => "identifier",
        }
    }
}

/// Indexed reference parameters (R4 search.html#reference), defined per resource type by
/// [`REFERENCE_PARAMS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReferenceParam {
    /// `patient`: the subject or patient, when it is a Patient.
    Patient,
    /// `subject`: the subject of the resource.
    Subject,
    /// `encounter`: the encounter the resource belongs to.
    Encounter,
}

impl ReferenceParam {
    /// All reference parameters.
    pub const ALL: [ReferenceParam; 3] = [
        ReferenceParam::Patient,
        ReferenceParam::Subject,
        ReferenceParam::Encounter,
    ];

    /// The SearchParameter code stored in `search_reference.param`.
    pub fn as_str(self) -> &'static str {
        match self {
            ReferenceParam::Patient => "patient",
            ReferenceParam::Subject => "subject",
            ReferenceParam::Encounter => "encounter",
        }
    }

    /// The parameter with this code, if it is one.
    pub fn from_code(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == code)
    }

    /// The element paths (and target-type filters) this parameter reads on `res_type`.
    pub fn paths(
        self,
        res_type: &str,
    ) -> impl Iterator<Item = (&'static str, Option<&'static str>)> + '_ {
        REFERENCE_PARAMS
            .iter()
            .filter(move |(c, t, _, _)| *c == self.as_str() && *t == res_type)
            .map(|(_, _, path, target)| (*path, *target))
    }

    /// Whether `res_type` has this parameter.
    pub fn applies_to(self, res_type: &str) -> bool {
        self.paths(res_type).next().is_some()
    }

    /// The single target type when the parameter only ever points at one (`patient`).
    pub fn fixed_target(self) -> Option<&'static str> {
        match self {
            ReferenceParam::Patient => Some("Patient"),
            ReferenceParam::Encounter => Some("Encounter"),
            ReferenceParam::Subject => None,
        }
    }
}

/// One supported search parameter: its code, type, documentation, and which resource types
/// have it.
pub struct ParamDef {
    pub code: &'static str,
    pub kind: ParamType,
    pub documentation: &'static str,
    /// Whether a resource type has this parameter.
    pub applies_to: fn(&str) -> bool,
}

fn all_types(_: &str) -> bool {
    true
}

fn has_identifier(res_type: &str) -> bool {
    fhir_model::registry::R4Registry::get().has_element(res_type, "identifier")
}

/// Every supported search parameter. Add here, then in [`parse_query`] and the indexer.
pub const SUPPORTED_PARAMS: &[ParamDef] = &[
    ParamDef {
        code: "_id",
        kind: ParamType::Token,
        documentation: "Logical id of the resource (Resource.id)",
        applies_to: all_types,
    },
    ParamDef {
        code: "_lastUpdated",
        kind: ParamType::Date,
        documentation: "When the resource version last changed (Resource.meta.lastUpdated)",
        applies_to: all_types,
    },
    ParamDef {
        code: "identifier",
        kind: ParamType::Token,
        documentation: "A business identifier of the resource: system|value",
        applies_to: has_identifier,
    },
    ParamDef {
        code: "patient",
        kind: ParamType::Reference,
        documentation: "Who the resource is about, when it is a Patient",
        applies_to: |t| ReferenceParam::Patient.applies_to(t),
    },
    ParamDef {
        code: "subject",
        kind: ParamType::Reference,
        documentation: "The subject of the resource",
        applies_to: |t| ReferenceParam::Subject.applies_to(t),
    },
    ParamDef {
        code: "encounter",
        kind: ParamType::Reference,
        documentation: "The encounter the resource belongs to",
        applies_to: |t| ReferenceParam::Encounter.applies_to(t),
    },
];

/// The date prefixes of R4 search.html#prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatePrefix {
    Eq,
    Ne,
    Gt,
    Lt,
    Ge,
    Le,
    Sa,
    Eb,
    Ap,
}

/// A date parameter value as a range `[low, high)` in microseconds since the epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DateBound {
    pub prefix: DatePrefix,
    pub low: i64,
    pub high: i64,
    /// For `ap`: how far outside the range still counts (10% of the distance to now).
    pub approx_margin: i64,
}

/// The system part of a token (R4 search.html#token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSystem {
    /// `code`: any system.
    Any,
    /// `|code`: no system.
    None,
    /// `system|code` or `system|`.
    Is(String),
}

/// One token value: `[system|]code`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenMatch {
    pub system: TokenSystem,
    /// `None` for `system|` (any code in the system).
    pub value: Option<String>,
}

/// One reference value: `[Type/]id` (R4 search.html#reference).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefMatch {
    /// The target type when known (from `Type/id`, the `:Type` modifier or the parameter).
    pub target_type: Option<String>,
    /// The target id.
    pub id: String,
}

/// One occurrence of a parameter in the query; its comma-separated values are ORed, and
/// several occurrences are ANDed (R4 search.html#combining).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SearchParam {
    /// `_id`.
    Id(Vec<String>),
    /// `_lastUpdated`.
    LastUpdated(Vec<DateBound>),
    /// An indexed token parameter.
    Token {
        code: TokenParam,
        values: Vec<TokenMatch>,
    },
    /// An indexed reference parameter.
    Reference {
        code: ReferenceParam,
        values: Vec<RefMatch>,
    },
}

/// A parsed search: resource type, parameters, page size and keyset cursor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchQuery {
    pub res_type: String,
    pub params: Vec<SearchParam>,
    /// `_count`, capped at [`MAX_COUNT`].
    pub count: usize,
    /// Paging cursor: only ids after this one (results are ordered by id).
    pub after_id: Option<String>,
    /// Parameters that were not understood and were ignored (reported to the client).
    pub ignored: Vec<String>,
}

/// Errors in a search query: answered with 400 (R4 search.html#errors).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SearchError {
    #[error("invalid value '{value}' for search parameter '{param}': {reason}")]
    InvalidValue {
        param: String,
        value: String,
        reason: String,
    },
    #[error("unknown search parameter '{0}'")]
    UnknownParam(String),
}

/// Server-side paging cursor parameter used in `next` links.
pub const CURSOR_PARAM: &str = "_cursor";

/// Parses `(name, value)` pairs of a search on `res_type`.
///
/// Unknown parameters are ignored and listed in [`SearchQuery::ignored`], unless `strict`
/// (`Prefer: handling=strict`) where they are an error. `_format` and `_pretty` are
/// response controls and skipped here.
pub fn parse_query(
    res_type: &str,
    pairs: &[(String, String)],
    strict: bool,
) -> Result<SearchQuery, SearchError> {
    let mut q = SearchQuery {
        res_type: res_type.to_string(),
        params: Vec::new(),
        count: DEFAULT_COUNT,
        after_id: None,
        ignored: Vec::new(),
    };
    for (full_name, value) in pairs {
        let (name, modifier) = match full_name.split_once(':') {
            Some((n, m)) => (n.to_string(), Some(m)),
            None => (full_name.clone(), None),
        };
        let name = &name;
        let invalid = |reason: &str| SearchError::InvalidValue {
            param: name.clone(),
            value: value.clone(),
            reason: reason.to_string(),
        };
        match name.as_str() {
            "_format" | "_pretty" => {}
            "_count" => {
                let n: usize = value
                    .parse()
                    .map_err(|_| invalid("expected a non-negative integer"))?;
                q.count = n.min(MAX_COUNT);
            }
            CURSOR_PARAM => q.after_id = Some(value.clone()),
            "_id" => q.params.push(SearchParam::Id(split_or(value))),
            "_lastUpdated" => {
                let bounds = split_or(value)
                    .iter()
                    .map(|v| parse_date_bound(v).map_err(|r| invalid(&r)))
                    .collect::<Result<Vec<_>, _>>()?;
                q.params.push(SearchParam::LastUpdated(bounds));
            }
            "identifier" if modifier.is_none() && has_identifier(res_type) => {
                let values = split_or(value).iter().map(|v| parse_token(v)).collect();
                q.params.push(SearchParam::Token {
                    code: TokenParam::Identifier,
                    values,
                });
            }
            code if ReferenceParam::from_code(code).is_some_and(|p| p.applies_to(res_type)) => {
                let Some(param) = ReferenceParam::from_code(code) else {
                    continue;
                };
                let type_modifier =
                    modifier.filter(|m| m.chars().next().is_some_and(|c| c.is_ascii_uppercase()));
                if modifier.is_some() && type_modifier.is_none() {
                    return Err(invalid("unsupported modifier on a reference parameter"));
                }
                let values = split_or(value)
                    .iter()
                    .map(|v| parse_reference(v, type_modifier.or(param.fixed_target())))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|r| invalid(&r))?;
                q.params.push(SearchParam::Reference {
                    code: param,
                    values,
                });
            }
            _ if modifier.is_some() => {
                if strict {
                    return Err(SearchError::UnknownParam(full_name.clone()));
                }
                q.ignored.push(full_name.clone());
            }
            other => {
                if strict {
                    return Err(SearchError::UnknownParam(other.to_string()));
                }
                q.ignored.push(other.to_string());
            }
        }
    }
    Ok(q)
}

/// Splits an OR list on unescaped commas; `\,` is a literal comma (R4 search.html#escaping).
fn split_or(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = value.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if matches!(chars.peek(), Some(',') | Some('|') | Some('$') | Some('\\')) => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            ',' => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out
}

/// `[system]|[code]` or `code` (R4 search.html#token).
fn parse_token(v: &str) -> TokenMatch {
    match v.split_once('|') {
        None => TokenMatch {
            system: TokenSystem::Any,
            value: Some(v.to_string()),
        },
        Some(("", code)) => TokenMatch {
            system: TokenSystem::None,
            value: Some(code.to_string()),
        },
        Some((sys, "")) => TokenMatch {
            system: TokenSystem::Is(sys.to_string()),
            value: None,
        },
        Some((sys, code)) => TokenMatch {
            system: TokenSystem::Is(sys.to_string()),
            value: Some(code.to_string()),
        },
    }
}

/// `[Type/]id`, an absolute URL ending in `Type/id`, or `Type/id/_history/n`
/// (R4 search.html#reference). `default_type` comes from a `:Type` modifier or a
/// parameter with one target type.
fn parse_reference(v: &str, default_type: Option<&str>) -> Result<RefMatch, String> {
    let v = v.split("/_history/").next().unwrap_or(v);
    let parts: Vec<&str> = v.rsplitn(3, '/').collect();
    let m = match parts.as_slice() {
        [id] if !id.is_empty() => RefMatch {
            target_type: default_type.map(str::to_string),
            id: id.to_string(),
        },
        [id, t, ..]
            if !id.is_empty() && t.chars().next().is_some_and(|c| c.is_ascii_uppercase()) =>
        {
            RefMatch {
                target_type: Some(t.to_string()),
                id: id.to_string(),
            }
        }
        _ => return Err("expected [Type/]id".to_string()),
    };
    Ok(m)
}

/// `[prefix]date` (R4 search.html#prefix and #date).
fn parse_date_bound(v: &str) -> Result<DateBound, String> {
    let prefixes = [
        ("eq", DatePrefix::Eq),
        ("ne", DatePrefix::Ne),
        ("gt", DatePrefix::Gt),
        ("lt", DatePrefix::Lt),
        ("ge", DatePrefix::Ge),
        ("le", DatePrefix::Le),
        ("sa", DatePrefix::Sa),
        ("eb", DatePrefix::Eb),
        ("ap", DatePrefix::Ap),
    ];
    let (prefix, rest) = prefixes
        .iter()
        .find_map(|(p, d)| v.strip_prefix(p).map(|r| (*d, r)))
        .unwrap_or((DatePrefix::Eq, v));
    let dt = FhirDateTime::parse(rest).map_err(|e| e.to_string())?;
    let (low, high) = dt.to_range();
    let approx_margin = if prefix == DatePrefix::Ap {
        let now = crate::clock::now_micros();
        (now - low).abs() / 10
    } else {
        0
    };
    Ok(DateBound {
        prefix,
        low,
        high,
        approx_margin,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaped_comma_is_not_an_or_separator() {
        assert_eq!(
            split_or(r"a\,b,c"),
            vec!["a,b".to_string(), "c".to_string()]
        );
    }

    #[test]
    fn token_forms_follow_search_html_token() {
        assert_eq!(parse_token("|x").system, TokenSystem::None);
        assert_eq!(parse_token("s|").value, None);
        assert_eq!(parse_token("x").system, TokenSystem::Any);
    }
}
