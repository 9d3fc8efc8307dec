//! FHIR search (R4 search.html): a request's parameters parsed into a typed [`SearchQuery`].
//!
//! Every SearchParameter of the R4 registry (`fhir_model::search::SearchParamRegistry`,
//! built from `profiles/r4-search-params.json`) is searchable on every resource type it
//! names. The registry is the single source for the parser ([`parse`]), the indexer
//! (`crate::indexing`) and the CapabilityStatement; the SQL is compiled from a
//! [`SearchQuery`] in `crate::storage` (one statement, joins and `EXISTS`-style
//! sub-selects, never per-row lookups).
//!
//! Shapes:
//! * one [`SearchParam`] per occurrence of a parameter in the request; occurrences are ANDed,
//!   the comma-separated values inside one are ORed (search.html#combining);
//! * values become [`Criterion`]s typed by the parameter kind ([`IndexTable`]);
//! * index rows are addressed by a [`ParamKey`]: a 64-bit hash of `"<scope>.<code>"`.

pub mod parse;

use fhir_model::search::SearchParamDef;
pub use parse::{parse_query, parse_system_query};

/// Default page size (R4 search.html#count leaves it to the server).
pub const DEFAULT_COUNT: usize = 20;
/// Largest page the server returns, whatever `_count` asks.
pub const MAX_COUNT: usize = 1000;
/// Most resources `_include`/`_revinclude` add to one page; past it the Bundle says so in an
/// OperationOutcome entry (never a silent truncation).
pub const MAX_INCLUDES: usize = 1000;
/// Server-side paging cursor parameter used in `next`/`previous` links.
pub const CURSOR_PARAM: &str = "_cursor";

/// The hashed identity of an indexed parameter, as stored in the `param` column of the
/// `search_*` tables: FNV-1a 64 of `"<scope>.<code>"`, where scope is the resource type, or
/// `Resource` for parameters defined on Resource/DomainResource (so `_tag` is one key across
/// types). Derived rows use a suffixed code: `code:text`, `code:of-type`, `code:identifier`,
/// and `code#N` for component N of a composite.
pub type ParamKey = i64;

/// [`ParamKey`] of `code` in `scope`.
pub fn param_key(scope: &str, code: &str) -> ParamKey {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0100_0000_01b3;
    let mut h = OFFSET;
    for b in scope
        .bytes()
        .chain(std::iter::once(b'.'))
        .chain(code.bytes())
    {
        h ^= u64::from(b);
        h = h.wrapping_mul(PRIME);
    }
    h as i64
}

/// The scope a parameter's rows are keyed under on `res_type`: `Resource` for the
/// parameters of Resource and DomainResource, else the resource type.
pub fn param_scope<'a>(def: &SearchParamDef, res_type: &'a str) -> &'a str {
    if def
        .base
        .iter()
        .any(|b| b == "Resource" || b == "DomainResource")
    {
        "Resource"
    } else {
        res_type
    }
}

/// The [`ParamKey`] of `def` on `res_type`, with an optional derived-row suffix.
pub fn def_key(def: &SearchParamDef, res_type: &str, suffix: &str) -> ParamKey {
    let scope = param_scope(def, res_type);
    if suffix.is_empty() {
        param_key(scope, &def.code)
    } else {
        param_key(scope, &format!("{}{suffix}", def.code))
    }
}

/// The keys whose rows hold the values of `def` on `res_type` (with a derived-row suffix):
/// its own key, or for a parameter stored as the union of others
/// (`SearchParamRegistry::stored_as`, e.g. Observation `combo-code` = `code` ∪
/// `component-code`) the keys of those.
pub fn stored_keys(def: &SearchParamDef, res_type: &str, suffix: &str) -> Vec<ParamKey> {
    let reg = fhir_model::search::SearchParamRegistry::get();
    match reg.stored_as(res_type, &def.code) {
        Some(codes) => codes
            .iter()
            .filter_map(|code| reg.param(res_type, code))
            .map(|d| def_key(d, res_type, suffix))
            .collect(),
        None => vec![def_key(def, res_type, suffix)],
    }
}

/// The composite parameters whose rows hold the tuples of composite `def` on `res_type`:
/// `def` itself, or for a composite stored as the union of others
/// (`SearchParamRegistry::stored_as`: Observation `combo-code-value-quantity` =
/// `code-value-quantity` ∪ `component-code-value-quantity`, and `-concept`) those.
pub fn composite_sources(
    def: &'static SearchParamDef,
    res_type: &str,
) -> Vec<&'static SearchParamDef> {
    let reg = fhir_model::search::SearchParamRegistry::get();
    match reg.stored_as(res_type, &def.code) {
        Some(codes) => codes
            .iter()
            .filter_map(|code| reg.param(res_type, code))
            .collect(),
        None => vec![def],
    }
}

/// Suffixes of derived-row keys (see [`ParamKey`]): `:text` rows of a token's display text,
/// `:of-type` rows of an Identifier's type and value, `:identifier` rows of a reference's
/// `Reference.identifier`.
pub const DERIVED_SUFFIXES: [&str; 3] = [":text", ":of-type", ":identifier"];

/// Whether `key` belongs to a parameter defined on Resource or DomainResource (`_tag`,
/// `_profile`, `_security`, `_source`, with their derived rows): such rows are keyed under
/// `Resource` and belong to resources of every type. Every other key is scoped to one
/// resource type, so its rows alone tell which resources of that type match.
pub fn is_resource_scoped(key: ParamKey) -> bool {
    static KEYS: std::sync::OnceLock<std::collections::HashSet<ParamKey>> =
        std::sync::OnceLock::new();
    KEYS.get_or_init(|| {
        let mut keys = std::collections::HashSet::new();
        for def in fhir_model::search::SearchParamRegistry::get().all() {
            if param_scope(def, "") != "Resource" {
                continue;
            }
            let groups: Vec<String> = std::iter::once(String::new())
                .chain((0..def.components.len()).map(|i| format!("#{i}")))
                .collect();
            for group in &groups {
                for suffix in std::iter::once("").chain(DERIVED_SUFFIXES) {
                    keys.insert(param_key(
                        "Resource",
                        &format!("{}{group}{suffix}", def.code),
                    ));
                }
            }
        }
        keys
    })
    .contains(&key)
}

/// The index table holding a parameter kind's rows (R4 search.html#ptypes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IndexTable {
    String,
    Token,
    Date,
    Number,
    Quantity,
    Uri,
    Reference,
}

impl IndexTable {
    /// The SQL table name.
    pub fn table(self) -> &'static str {
        match self {
            IndexTable::String => "search_string",
            IndexTable::Token => "search_token",
            IndexTable::Date => "search_date",
            IndexTable::Number => "search_number",
            IndexTable::Quantity => "search_quantity",
            IndexTable::Uri => "search_uri",
            IndexTable::Reference => "search_reference",
        }
    }

    /// All tables.
    pub const ALL: [IndexTable; 7] = [
        IndexTable::String,
        IndexTable::Token,
        IndexTable::Date,
        IndexTable::Number,
        IndexTable::Quantity,
        IndexTable::Uri,
        IndexTable::Reference,
    ];
}

/// The prefixes of R4 search.html#prefix, for number, date and quantity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prefix {
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

/// A date value as a range `[low, high)` in microseconds since the epoch (its precision).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DateBound {
    pub prefix: Prefix,
    pub low: i64,
    pub high: i64,
    /// For `ap`: how far outside the range still counts (10% of the distance to now).
    pub approx_margin: i64,
}

/// A number value with its implicit precision range (search.html#number): `100` is
/// `[99.5, 100.5)`, `100.00` is `[99.995, 100.005)`.
#[derive(Debug, Clone, PartialEq)]
pub struct NumberBound {
    pub prefix: Prefix,
    pub value: f64,
    pub low: f64,
    pub high: f64,
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

/// One typed value of a search parameter, compared against index rows of its table.
#[derive(Debug, Clone, PartialEq)]
pub enum Criterion {
    /// string: the normalized value starts with this (the default, search.html#string).
    StringStarts(String),
    /// string `:exact`: the exact text.
    StringExact(String),
    /// string `:contains` (also token `:text` when asked): the normalized value contains this.
    StringContains(String),
    /// token `[system|]code`.
    Token(TokenMatch),
    /// date with prefix.
    Date(DateBound),
    /// number with prefix.
    Number(NumberBound),
    /// quantity: number with prefix and optional `system|code`; `canonical` is the search
    /// value in UCUM canonical units when it converts (`5.4|http://unitsofmeasure.org|mg`).
    Quantity {
        bound: NumberBound,
        system: Option<String>,
        code: Option<String>,
        canonical: Option<(NumberBound, String)>,
    },
    /// uri: equal.
    UriExact(String),
    /// uri `:below`: starts with.
    UriBelow(String),
    /// uri `:above`: the stored value is one of these prefixes of the search value.
    UriAbove(Vec<String>),
    /// reference `[Type/]id`.
    Reference {
        target_type: Option<String>,
        id: String,
    },
    /// reference by absolute or canonical URL.
    ReferenceUrl(String),
}

/// One occurrence of a parameter in the query; its values are ORed, occurrences ANDed.
#[derive(Debug, Clone, PartialEq)]
pub enum SearchParam {
    /// `_id`.
    Id(Vec<String>),
    /// `_lastUpdated` (a column of `resources`).
    LastUpdated(Vec<DateBound>),
    /// Rows of `table` under any of `keys` matching any of `values`; with `negate`, the
    /// resources that have no such row (token `:not`, search.html#modifiers).
    Match {
        table: IndexTable,
        keys: Vec<ParamKey>,
        values: Vec<Criterion>,
        negate: bool,
    },
    /// `:missing=true|false`: whether the resource has any row under `keys`.
    Missing {
        table: IndexTable,
        keys: Vec<ParamKey>,
        missing: bool,
    },
    /// A composite parameter (search.html#composite): each value is one tuple of
    /// component criteria, matched by rows of the same `grp`.
    Composite {
        components: Vec<(IndexTable, ParamKey)>,
        values: Vec<Vec<Criterion>>,
    },
    /// Chaining (search.html#chaining): a reference under `keys` to a `target_type`
    /// resource matching `inner`.
    Chain {
        keys: Vec<ParamKey>,
        target_type: String,
        inner: Box<SearchParam>,
    },
    /// Reverse chaining `_has:Source:param:…` (search.html#has): referenced by a
    /// `source_type` resource, through its parameter `keys`, that matches `inner`.
    Has {
        source_type: String,
        keys: Vec<ParamKey>,
        inner: Box<SearchParam>,
    },
    /// Any of these (chains over several target types; compartment membership).
    Or(Vec<SearchParam>),
    /// Exactly this resource (the patient itself in `Patient/{id}/$everything`).
    Resource { res_type: String, id: String },
}

/// What a sort key sorts on.
#[derive(Debug, Clone, PartialEq)]
pub enum SortBy {
    Id,
    LastUpdated,
    Indexed {
        table: IndexTable,
        keys: Vec<ParamKey>,
    },
}

/// One `_sort` key (search.html#sort): `-` for descending.
#[derive(Debug, Clone, PartialEq)]
pub struct SortKey {
    pub by: SortBy,
    pub descending: bool,
}

/// `_include` / `_revinclude` (search.html#include).
#[derive(Debug, Clone, PartialEq)]
pub struct Include {
    /// `_revinclude` when true.
    pub reverse: bool,
    /// The source type of the reference parameter (`Encounter` in `Encounter:practitioner`).
    pub source_type: String,
    /// The reference parameter keys on the source type (all its reference params for `*`).
    pub keys: Vec<ParamKey>,
    /// The `:Type` restriction of the target, if any.
    pub target_type: Option<String>,
    /// `:iterate` (or R3's `:recurse`): apply to included resources too.
    pub iterate: bool,
}

/// `_total` (search.html#total).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Total {
    #[default]
    None,
    Estimate,
    Accurate,
}

/// `_summary` (search.html#summary).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Summary {
    #[default]
    False,
    True,
    Count,
    Text,
    Data,
}

/// A keyset paging position: the sort values and rid of the last (or, for `previous`, the
/// first) row of a page. Serialized into the `_cursor` link parameter.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Cursor {
    /// True for a `previous` link: rows before this position, in reverse.
    #[serde(rename = "b")]
    pub backward: bool,
    /// The sort-key values at the position (JSON string/number/null).
    #[serde(rename = "v")]
    pub values: Vec<serde_json::Value>,
    /// The `rid` (the store's creation-order key) at the position: the final tie-breaker,
    /// and the only key when the search has no `_sort`.
    #[serde(rename = "r")]
    pub rid: i64,
}

impl Cursor {
    /// The text for the `_cursor` parameter.
    pub fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Parses a `_cursor` value.
    pub fn decode(text: &str) -> Option<Cursor> {
        serde_json::from_str(text).ok()
    }
}

/// A parsed search.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchQuery {
    /// The resource type searched, or empty for a system-level search.
    pub res_type: String,
    /// System-level `_type`: the types searched (empty: all).
    pub types: Vec<String>,
    pub params: Vec<SearchParam>,
    /// `_count`, capped at [`MAX_COUNT`].
    pub count: usize,
    /// Keyset paging position.
    pub cursor: Option<Cursor>,
    /// `_sort` keys; the rid (creation order) is always the last tie-breaker, and the only
    /// order without `_sort` (R4 search.html#sort leaves that order to the server).
    pub sort: Vec<SortKey>,
    pub includes: Vec<Include>,
    pub total: Total,
    pub summary: Summary,
    /// `_elements`: the top-level elements to keep.
    pub elements: Option<Vec<String>>,
    /// Parameters that were not understood and were ignored (reported to the client).
    pub ignored: Vec<String>,
}

impl SearchQuery {
    /// An empty query on `res_type`: every resource, default page size.
    pub fn new(res_type: &str) -> SearchQuery {
        SearchQuery {
            res_type: res_type.to_string(),
            types: Vec::new(),
            params: Vec::new(),
            count: DEFAULT_COUNT,
            cursor: None,
            sort: Vec::new(),
            includes: Vec::new(),
            total: Total::None,
            summary: Summary::False,
            elements: None,
            ignored: Vec::new(),
        }
    }
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
    #[error("unsupported modifier ':{modifier}' on search parameter '{param}'")]
    UnsupportedModifier { param: String, modifier: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_level_keys_are_resource_scoped_and_type_keys_are_not() {
        assert!(is_resource_scoped(param_key("Resource", "_tag")));
        assert!(is_resource_scoped(param_key("Resource", "_security:text")));
        assert!(!is_resource_scoped(param_key("Observation", "code")));
        assert!(!is_resource_scoped(param_key("Observation", "subject")));
    }
}
