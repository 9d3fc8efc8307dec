//! Parsing of search requests (R4 search.html) into a [`SearchQuery`].
//!
//! Parameter names are resolved against the R4 SearchParameter registry; values are parsed
//! per parameter type (search.html#ptypes) with the prefixes of search.html#prefix and the
//! modifiers of search.html#modifiers. Unknown parameters are ignored and reported (or, with
//! `Prefer: handling=strict`, refused); malformed values and unsupported modifiers are
//! refused with 400 (search.html#errors: "Servers SHALL reject any search request that
//! contains a search parameter with an unsupported modifier").

use fhir_model::datetime::FhirDateTime;
use fhir_model::search::{SearchParamDef, SearchParamRegistry, SearchParamType};

use super::{
    CURSOR_PARAM, Criterion, Cursor, DateBound, Include, IndexTable, MAX_COUNT, NumberBound,
    ParamKey, Prefix, SearchError, SearchParam, SearchQuery, SortBy, SortKey, Summary, TokenMatch,
    TokenSystem, Total, composite_sources, def_key, stored_keys,
};

/// Parses `(name, value)` pairs of a type-level search on `res_type`.
///
/// Unknown parameters are ignored and listed in [`SearchQuery::ignored`], unless `strict`
/// (`Prefer: handling=strict`) where they are an error. `_format` and `_pretty` are
/// response controls and skipped here.
pub fn parse_query(
    res_type: &str,
    pairs: &[(String, String)],
    strict: bool,
) -> Result<SearchQuery, SearchError> {
    let mut q = SearchQuery::new(res_type);
    for (name, value) in pairs {
        parse_pair(&mut q, &[res_type], name, value, strict)?;
    }
    Ok(q)
}

/// Parses a system-level search (`GET [base]?_type=…&…`, search.html#searchall). Only
/// parameters defined on every searched type are allowed (`_id`, `_lastUpdated`, `_tag`,
/// `_profile`, `_security`, `_source`, or any parameter common to the `_type` list).
pub fn parse_system_query(
    pairs: &[(String, String)],
    strict: bool,
) -> Result<SearchQuery, SearchError> {
    let mut q = SearchQuery::new("");
    for (name, value) in pairs.iter().filter(|(n, _)| n == "_type") {
        for t in split_or(value) {
            if !fhir_model::R4Registry::get().is_resource_type(&t) {
                return Err(invalid(
                    "_type",
                    value,
                    &format!("unknown resource type '{t}'"),
                ));
            }
            q.types.push(t);
        }
        let _ = name;
    }
    let types: Vec<String> = if q.types.is_empty() {
        vec!["Resource".to_string()]
    } else {
        q.types.clone()
    };
    let type_refs: Vec<&str> = types.iter().map(String::as_str).collect();
    for (name, value) in pairs.iter().filter(|(n, _)| n != "_type") {
        parse_pair(&mut q, &type_refs, name, value, strict)?;
    }
    Ok(q)
}

fn invalid(param: &str, value: &str, reason: &str) -> SearchError {
    SearchError::InvalidValue {
        param: param.to_string(),
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

/// One request parameter: a result control or a search parameter.
fn parse_pair(
    q: &mut SearchQuery,
    types: &[&str],
    name: &str,
    value: &str,
    strict: bool,
) -> Result<(), SearchError> {
    let bare = name.split(':').next().unwrap_or(name);
    match bare {
        "_format" | "_pretty" => {}
        "_count" => {
            let n: usize = value
                .parse()
                .map_err(|_| invalid(name, value, "expected a non-negative integer"))?;
            q.count = n.min(MAX_COUNT);
        }
        CURSOR_PARAM => {
            q.cursor = Some(
                Cursor::decode(value).ok_or_else(|| invalid(name, value, "not a paging cursor"))?,
            );
        }
        "_total" => {
            q.total = match value {
                "none" => Total::None,
                "estimate" => Total::Estimate,
                "accurate" => Total::Accurate,
                _ => return Err(invalid(name, value, "expected none, estimate or accurate")),
            }
        }
        "_summary" => {
            q.summary = match value {
                "true" => Summary::True,
                "false" => Summary::False,
                "count" => Summary::Count,
                "text" => Summary::Text,
                "data" => Summary::Data,
                _ => {
                    return Err(invalid(
                        name,
                        value,
                        "expected true, false, count, text or data",
                    ));
                }
            }
        }
        "_elements" => {
            let list: Vec<String> = value
                .split(',')
                .map(|e| e.trim().to_string())
                .filter(|e| !e.is_empty())
                .collect();
            q.elements = Some(list);
        }
        "_sort" => {
            for key in value.split(',').filter(|k| !k.is_empty()) {
                q.sort
                    .push(parse_sort(types, key).map_err(|r| invalid(name, value, &r))?);
            }
        }
        "_include" | "_revinclude" => {
            let iterate = matches!(
                name.split_once(':').map(|(_, m)| m),
                Some("iterate") | Some("recurse")
            );
            let reverse = bare == "_revinclude";
            q.includes.push(
                parse_include(types, value, reverse, iterate)
                    .map_err(|r| invalid(name, value, &r))?,
            );
        }
        "_contained" if value == "false" => {}
        "_contained" | "_containedType" | "_type" | "_score" | "_text" | "_content" | "_list"
        | "_query" | "_filter" => {
            if strict {
                return Err(SearchError::UnknownParam(name.to_string()));
            }
            q.ignored.push(name.to_string());
        }
        _ => match parse_param(types, name, value)? {
            Some(p) => q.params.push(p),
            None => {
                if strict {
                    return Err(SearchError::UnknownParam(name.to_string()));
                }
                q.ignored.push(name.to_string());
            }
        },
    }
    Ok(())
}

/// The definitions of `code` on each of `types` (all must have it; `Resource` stands for
/// the parameters of every type). `None` when a type lacks it.
fn defs_for(types: &[&str], code: &str) -> Option<Vec<(&'static SearchParamDef, String)>> {
    let reg = SearchParamRegistry::get();
    let mut out = Vec::with_capacity(types.len());
    for t in types {
        let def = if *t == "Resource" {
            reg.param("Patient", code).filter(|d| {
                d.base
                    .iter()
                    .any(|b| b == "Resource" || b == "DomainResource")
            })?
        } else {
            reg.param(t, code)?
        };
        out.push((def, t.to_string()));
    }
    Some(out)
}

/// The keys of `code` (+ derived suffix) over `defs`, deduplicated: for a parameter stored
/// as the union of others (`combo-code`), theirs ([`crate::search::stored_keys`]).
fn keys_of(defs: &[(&'static SearchParamDef, String)], suffix: &str) -> Vec<ParamKey> {
    let mut keys: Vec<ParamKey> = defs
        .iter()
        .flat_map(|(d, t)| stored_keys(d, t, suffix))
        .collect();
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// The table holding rows of a parameter kind.
pub fn table_of(kind: SearchParamType) -> Option<IndexTable> {
    Some(match kind {
        SearchParamType::String => IndexTable::String,
        SearchParamType::Token => IndexTable::Token,
        SearchParamType::Date => IndexTable::Date,
        SearchParamType::Number => IndexTable::Number,
        SearchParamType::Quantity => IndexTable::Quantity,
        SearchParamType::Uri => IndexTable::Uri,
        SearchParamType::Reference => IndexTable::Reference,
        SearchParamType::Composite | SearchParamType::Special => return None,
    })
}

/// A search parameter occurrence `name=value` on `types`, or `None` when the parameter is
/// unknown or not searchable here (to be ignored and reported).
fn parse_param(
    types: &[&str],
    name: &str,
    value: &str,
) -> Result<Option<SearchParam>, SearchError> {
    if let Some(rest) = name.strip_prefix("_has:") {
        return parse_has(types, name, rest, value);
    }
    // Chaining: `subject:Patient.name`, `subject.organization.name` (search.html#chaining).
    let (head, chain) = match name.split_once('.') {
        Some((h, c)) => (h, Some(c)),
        None => (name, None),
    };
    let (code, modifier) = match head.split_once(':') {
        Some((c, m)) => (c, Some(m)),
        None => (head, None),
    };
    match code {
        "_id" if chain.is_none() => {
            return match modifier {
                None => Ok(Some(SearchParam::Id(split_or(value)))),
                Some(m) => Err(unsupported(code, m)),
            };
        }
        "_lastUpdated" if chain.is_none() => {
            if let Some(m) = modifier {
                return Err(unsupported(code, m));
            }
            let bounds = split_or(value)
                .iter()
                .map(|v| parse_date_bound(v).map_err(|r| invalid(name, value, &r)))
                .collect::<Result<Vec<_>, _>>()?;
            return Ok(Some(SearchParam::LastUpdated(bounds)));
        }
        _ => {}
    }
    let Some(defs) = defs_for(types, code) else {
        return Ok(None);
    };
    let kind = defs[0].0.kind;
    if defs.iter().any(|(d, _)| d.kind != kind) {
        return Ok(None);
    }
    if let Some(chain) = chain {
        if kind != SearchParamType::Reference {
            return Err(invalid(
                name,
                value,
                "only reference parameters can be chained",
            ));
        }
        return parse_chain(&defs, code, modifier, chain, name, value).map(Some);
    }
    if modifier == Some("missing") {
        let missing = match value {
            "true" => true,
            "false" => false,
            _ => return Err(invalid(name, value, "expected true or false")),
        };
        if kind == SearchParamType::Composite {
            let (def, t) = &defs[0];
            let table = def
                .components
                .first()
                .and_then(|c| table_of(c.kind))
                .ok_or_else(|| unsupported(code, "missing"))?;
            return Ok(Some(SearchParam::Missing {
                table,
                keys: composite_sources(def, t)
                    .iter()
                    .map(|src| def_key(src, t, "#0"))
                    .collect(),
                missing,
            }));
        }
        let Some(table) = table_of(kind) else {
            return Ok(None);
        };
        return Ok(Some(SearchParam::Missing {
            table,
            keys: keys_of(&defs, ""),
            missing,
        }));
    }
    let values = split_or(value);
    let bad = |r: String| invalid(name, value, &r);
    let p = match kind {
        SearchParamType::String => {
            let make: fn(&str) -> Criterion = match modifier {
                None => |v| Criterion::StringStarts(fhir_model::search::normalize_string(v)),
                Some("exact") => |v| Criterion::StringExact(v.to_string()),
                Some("contains") => {
                    |v| Criterion::StringContains(fhir_model::search::normalize_string(v))
                }
                Some(m) => return Err(unsupported(code, m)),
            };
            SearchParam::Match {
                table: IndexTable::String,
                keys: keys_of(&defs, ""),
                values: values.iter().map(|v| make(v)).collect(),
                negate: false,
            }
        }
        SearchParamType::Token => match modifier {
            None | Some("not") => SearchParam::Match {
                table: IndexTable::Token,
                keys: keys_of(&defs, ""),
                values: values
                    .iter()
                    .map(|v| Criterion::Token(parse_token(v)))
                    .collect(),
                negate: modifier == Some("not"),
            },
            Some("text") => SearchParam::Match {
                table: IndexTable::String,
                keys: keys_of(&defs, ":text"),
                values: values
                    .iter()
                    .map(|v| Criterion::StringStarts(fhir_model::search::normalize_string(v)))
                    .collect(),
                negate: false,
            },
            Some("of-type") => SearchParam::Match {
                table: IndexTable::Token,
                keys: keys_of(&defs, ":of-type"),
                values: values
                    .iter()
                    .map(|v| parse_of_type(v).map(Criterion::Token))
                    .collect::<Result<_, _>>()
                    .map_err(bad)?,
                negate: false,
            },
            Some(m) => return Err(unsupported(code, m)),
        },
        SearchParamType::Date => {
            if let Some(m) = modifier {
                return Err(unsupported(code, m));
            }
            SearchParam::Match {
                table: IndexTable::Date,
                keys: keys_of(&defs, ""),
                values: values
                    .iter()
                    .map(|v| parse_date_bound(v).map(Criterion::Date))
                    .collect::<Result<_, _>>()
                    .map_err(bad)?,
                negate: false,
            }
        }
        SearchParamType::Number => {
            if let Some(m) = modifier {
                return Err(unsupported(code, m));
            }
            SearchParam::Match {
                table: IndexTable::Number,
                keys: keys_of(&defs, ""),
                values: values
                    .iter()
                    .map(|v| parse_number(v).map(Criterion::Number))
                    .collect::<Result<_, _>>()
                    .map_err(bad)?,
                negate: false,
            }
        }
        SearchParamType::Quantity => {
            if let Some(m) = modifier {
                return Err(unsupported(code, m));
            }
            SearchParam::Match {
                table: IndexTable::Quantity,
                keys: keys_of(&defs, ""),
                values: values
                    .iter()
                    .map(|v| parse_quantity(v))
                    .collect::<Result<_, _>>()
                    .map_err(bad)?,
                negate: false,
            }
        }
        SearchParamType::Uri => {
            let make = |v: &str| match modifier {
                None => Ok(Criterion::UriExact(v.to_string())),
                Some("below") => Ok(Criterion::UriBelow(v.to_string())),
                Some("above") => Ok(Criterion::UriAbove(uri_prefixes(v))),
                Some(m) => Err(unsupported(code, m)),
            };
            SearchParam::Match {
                table: IndexTable::Uri,
                keys: keys_of(&defs, ""),
                values: values.iter().map(|v| make(v)).collect::<Result<_, _>>()?,
                negate: false,
            }
        }
        SearchParamType::Reference => match modifier {
            Some("identifier") => SearchParam::Match {
                table: IndexTable::Token,
                keys: keys_of(&defs, ":identifier"),
                values: values
                    .iter()
                    .map(|v| Criterion::Token(parse_token(v)))
                    .collect(),
                negate: false,
            },
            Some(m) if !is_type_name(m) => return Err(unsupported(code, m)),
            type_modifier => {
                let targets = &defs[0].0.targets;
                if let Some(t) = type_modifier
                    && !targets.is_empty()
                    && !targets.iter().any(|x| x == t)
                {
                    return Err(invalid(
                        name,
                        value,
                        &format!("{t} is not a target of {code}"),
                    ));
                }
                let default_type =
                    type_modifier.or((targets.len() == 1).then(|| targets[0].as_str()));
                SearchParam::Match {
                    table: IndexTable::Reference,
                    keys: keys_of(&defs, ""),
                    values: values
                        .iter()
                        .map(|v| parse_reference(v, default_type))
                        .collect::<Result<_, _>>()
                        .map_err(bad)?,
                    negate: false,
                }
            }
        },
        SearchParamType::Composite => {
            if let Some(m) = modifier {
                return Err(unsupported(code, m));
            }
            let (def, t) = &defs[0];
            let mut tuples = Vec::new();
            for v in &values {
                let parts = split_unescaped(v, '$');
                if parts.len() != def.components.len() {
                    return Err(bad(format!(
                        "expected {} components separated by '$'",
                        def.components.len()
                    )));
                }
                let mut tuple = Vec::new();
                for (part, c) in parts.iter().zip(&def.components) {
                    tuple.push(parse_component(c.kind, part).map_err(&bad)?);
                }
                tuples.push(tuple);
            }
            // One match per composite whose rows hold the tuples (a union such as
            // `combo-code-value-quantity` has none of its own): a tuple matches within
            // the rows of one composite and one group, never across two.
            let mut alternatives = Vec::new();
            for src in composite_sources(def, t) {
                let mut components = Vec::new();
                for (i, c) in src.components.iter().enumerate() {
                    let table = table_of(c.kind).ok_or_else(|| unsupported(code, "composite"))?;
                    components.push((table, def_key(src, t, &format!("#{i}"))));
                }
                alternatives.push(SearchParam::Composite {
                    components,
                    values: tuples.clone(),
                });
            }
            match alternatives.len() {
                1 => alternatives.remove(0),
                _ => SearchParam::Or(alternatives),
            }
        }
        SearchParamType::Special => return Ok(None),
    };
    Ok(Some(p))
}

fn unsupported(code: &str, modifier: &str) -> SearchError {
    SearchError::UnsupportedModifier {
        param: code.to_string(),
        modifier: modifier.to_string(),
    }
}

fn is_type_name(s: &str) -> bool {
    fhir_model::R4Registry::get().is_resource_type(s)
}

/// One component value of a composite (search.html#composite).
fn parse_component(kind: SearchParamType, v: &str) -> Result<Criterion, String> {
    Ok(match kind {
        SearchParamType::Token => Criterion::Token(parse_token(v)),
        SearchParamType::String => Criterion::StringStarts(fhir_model::search::normalize_string(v)),
        SearchParamType::Date => Criterion::Date(parse_date_bound(v)?),
        SearchParamType::Number => Criterion::Number(parse_number(v)?),
        SearchParamType::Quantity => parse_quantity(v)?,
        SearchParamType::Uri => Criterion::UriExact(v.to_string()),
        SearchParamType::Reference => parse_reference(v, None)?,
        SearchParamType::Composite | SearchParamType::Special => {
            return Err("unsupported component type".to_string());
        }
    })
}

/// `ref[:Type].rest=value` (search.html#chaining): one [`SearchParam::Chain`] per target
/// type that has the chained parameter, ORed.
fn parse_chain(
    defs: &[(&'static SearchParamDef, String)],
    code: &str,
    modifier: Option<&str>,
    rest: &str,
    name: &str,
    value: &str,
) -> Result<SearchParam, SearchError> {
    let keys = keys_of(defs, "");
    let targets: Vec<String> = match modifier {
        Some(t) if is_type_name(t) => vec![t.to_string()],
        Some(m) => return Err(unsupported(code, m)),
        None => {
            let mut all: Vec<String> = Vec::new();
            for (d, _) in defs {
                for t in &d.targets {
                    if !all.contains(t) {
                        all.push(t.clone());
                    }
                }
            }
            all
        }
    };
    let mut branches = Vec::new();
    for t in &targets {
        if let Some(inner) = parse_param(&[t.as_str()], rest, value)? {
            branches.push(SearchParam::Chain {
                keys: keys.clone(),
                target_type: t.clone(),
                inner: Box::new(inner),
            });
        }
    }
    match branches.len() {
        0 => Err(invalid(
            name,
            value,
            &format!("no target type of '{code}' has a search parameter '{rest}'"),
        )),
        1 => Ok(branches.remove(0)),
        _ => Ok(SearchParam::Or(branches)),
    }
}

/// `_has:Source:param:rest=value` (search.html#has): resources referenced from a `Source`
/// resource's `param` where that resource matches `rest=value` (which may itself be a
/// `_has`).
fn parse_has(
    types: &[&str],
    name: &str,
    spec: &str,
    value: &str,
) -> Result<Option<SearchParam>, SearchError> {
    let mut parts = spec.splitn(3, ':');
    let (Some(source), Some(param), Some(rest)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(invalid(
            name,
            value,
            "expected _has:Type:reference:parameter",
        ));
    };
    if !is_type_name(source) {
        return Err(invalid(
            name,
            value,
            &format!("unknown resource type '{source}'"),
        ));
    }
    let reg = SearchParamRegistry::get();
    let Some(def) = reg.param(source, param) else {
        return Err(invalid(
            name,
            value,
            &format!("{source} has no search parameter '{param}'"),
        ));
    };
    if def.kind != SearchParamType::Reference {
        return Err(invalid(
            name,
            value,
            &format!("{source}.{param} is not a reference"),
        ));
    }
    if let Some(t) = types.first()
        && *t != "Resource"
        && !def.targets.is_empty()
        && !def.targets.iter().any(|x| x == t)
    {
        return Err(invalid(
            name,
            value,
            &format!("{source}.{param} cannot refer to {t}"),
        ));
    }
    let Some(inner) = parse_param(&[source], rest, value)? else {
        return Err(invalid(
            name,
            value,
            &format!("{source} has no search parameter '{rest}'"),
        ));
    };
    Ok(Some(SearchParam::Has {
        source_type: source.to_string(),
        keys: vec![def_key(def, source, "")],
        inner: Box::new(inner),
    }))
}

/// One `_sort` key: `[-]code` (search.html#sort).
fn parse_sort(types: &[&str], key: &str) -> Result<SortKey, String> {
    let (descending, code) = match key.strip_prefix('-') {
        Some(c) => (true, c),
        None => (false, key),
    };
    let by = match code {
        "_id" => SortBy::Id,
        "_lastUpdated" => SortBy::LastUpdated,
        _ => {
            let defs = defs_for(types, code).ok_or(format!("unknown sort parameter '{code}'"))?;
            let table =
                table_of(defs[0].0.kind).ok_or(format!("cannot sort on the {code} parameter"))?;
            SortBy::Indexed {
                table,
                keys: keys_of(&defs, ""),
            }
        }
    };
    Ok(SortKey { by, descending })
}

/// `Source:param[:Target]`, `Source:*` or `*` (search.html#include).
fn parse_include(
    types: &[&str],
    value: &str,
    reverse: bool,
    iterate: bool,
) -> Result<Include, String> {
    let reg = SearchParamRegistry::get();
    let mut parts = value.split(':');
    let first = parts.next().unwrap_or("");
    let (source, param) = if first == "*" {
        let t = types.first().copied().filter(|t| *t != "Resource");
        (
            t.ok_or("'*' needs a resource type")?.to_string(),
            "*".to_string(),
        )
    } else {
        (
            first.to_string(),
            parts.next().ok_or("expected Type:parameter")?.to_string(),
        )
    };
    if !is_type_name(&source) {
        return Err(format!("unknown resource type '{source}'"));
    }
    let target_type = parts.next().map(str::to_string);
    if let Some(t) = &target_type
        && !is_type_name(t)
    {
        return Err(format!("unknown resource type '{t}'"));
    }
    let keys: Vec<ParamKey> = if param == "*" {
        reg.params_for(&source)
            .filter(|d| d.kind == SearchParamType::Reference)
            .map(|d| def_key(d, &source, ""))
            .collect()
    } else {
        let def = reg
            .param(&source, &param)
            .ok_or(format!("{source} has no search parameter '{param}'"))?;
        if def.kind != SearchParamType::Reference {
            return Err(format!("{source}:{param} is not a reference parameter"));
        }
        vec![def_key(def, &source, "")]
    };
    Ok(Include {
        reverse,
        source_type: source,
        keys,
        target_type,
        iterate,
    })
}

/// Splits an OR list on unescaped commas; `\,` is a literal comma (R4 search.html#escaping).
pub fn split_or(value: &str) -> Vec<String> {
    split_unescaped(value, ',')
}

/// Splits on unescaped `sep`, unescaping `\,`, `\|`, `\$` and `\\`.
fn split_unescaped(value: &str, sep: char) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = value.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if matches!(chars.peek(), Some(',') | Some('|') | Some('$') | Some('\\')) => {
                if let Some(n) = chars.next() {
                    cur.push('\\');
                    cur.push(n);
                }
            }
            c if c == sep => out.push(unescape(&std::mem::take(&mut cur), sep)),
            _ => cur.push(c),
        }
    }
    out.push(unescape(&cur, sep));
    out
}

/// Removes the escapes kept by [`split_unescaped`] except those a later split needs
/// (`\|` inside a token is unescaped by [`parse_token`]).
fn unescape(s: &str, sep: char) -> String {
    if !s.contains('\\') {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\'
            && let Some(&n) = chars.peek()
            && (n == sep || n == ',' || (n == '$' && sep == '$'))
        {
            out.push(n);
            chars.next();
            continue;
        }
        out.push(c);
    }
    out
}

/// Splits `s` at the first unescaped `|`, unescaping `\|` in both halves.
fn split_pipe(s: &str) -> (String, Option<String>) {
    let bytes: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == '\\' {
            i += 2;
            continue;
        }
        if bytes[i] == '|' {
            let a: String = bytes[..i].iter().collect();
            let b: String = bytes[i + 1..].iter().collect();
            return (clean(&a), Some(b));
        }
        i += 1;
    }
    (clean(s), None)
}

fn clean(s: &str) -> String {
    s.replace("\\|", "|")
        .replace("\\$", "$")
        .replace("\\,", ",")
        .replace("\\\\", "\\")
}

/// `[system]|[code]` or `code` (R4 search.html#token).
pub fn parse_token(v: &str) -> TokenMatch {
    match split_pipe(v) {
        (code, None) => TokenMatch {
            system: TokenSystem::Any,
            value: Some(code),
        },
        (sys, Some(code)) => {
            let code = clean(&code);
            match (sys.is_empty(), code.is_empty()) {
                (true, _) => TokenMatch {
                    system: TokenSystem::None,
                    value: Some(code),
                },
                (false, true) => TokenMatch {
                    system: TokenSystem::Is(sys),
                    value: None,
                },
                (false, false) => TokenMatch {
                    system: TokenSystem::Is(sys),
                    value: Some(code),
                },
            }
        }
    }
}

/// `:of-type` value `system|code|value` (search.html#token, Identifier.type): stored as
/// system = type system, code = `typeCode|value`.
fn parse_of_type(v: &str) -> Result<TokenMatch, String> {
    let (system, rest) = split_pipe(v);
    let rest = rest.ok_or("expected system|code|value")?;
    let (code, value) = split_pipe(&rest);
    let value = value.ok_or("expected system|code|value")?;
    if code.is_empty() || value.is_empty() {
        return Err("expected system|code|value".to_string());
    }
    Ok(TokenMatch {
        system: if system.is_empty() {
            TokenSystem::Any
        } else {
            TokenSystem::Is(system)
        },
        value: Some(format!("{code}|{}", clean(&value))),
    })
}

/// `[Type/]id`, an absolute URL, or `Type/id/_history/n` (R4 search.html#reference).
/// `default_type` comes from a `:Type` modifier or a parameter with one target type.
fn parse_reference(v: &str, default_type: Option<&str>) -> Result<Criterion, String> {
    if v.is_empty() {
        return Err("expected [Type/]id or a URL".to_string());
    }
    if v.contains("://") || v.starts_with("urn:") {
        // Canonical references may carry `|version`; the index keeps the bare URL.
        let url = v.split('|').next().unwrap_or(v);
        return Ok(Criterion::ReferenceUrl(url.to_string()));
    }
    let v = v.split("/_history/").next().unwrap_or(v);
    let parts: Vec<&str> = v.split('/').collect();
    match parts.as_slice() {
        [id] => Ok(Criterion::Reference {
            target_type: default_type.map(str::to_string),
            id: id.to_string(),
        }),
        [t, id] if is_type_name(t) && !id.is_empty() => {
            if let Some(d) = default_type
                && d != *t
            {
                return Err(format!("{t} does not match the :{d} modifier"));
            }
            Ok(Criterion::Reference {
                target_type: Some(t.to_string()),
                id: id.to_string(),
            })
        }
        _ => Err("expected [Type/]id or a URL".to_string()),
    }
}

/// The prefixes of R4 search.html#prefix, split off a value (`ge2019`, `lt100`). A value
/// that starts with two lower-case letters which are not a prefix is an error for
/// number/date/quantity.
fn split_prefix(v: &str) -> Result<(Prefix, &str), String> {
    const PREFIXES: [(&str, Prefix); 9] = [
        ("eq", Prefix::Eq),
        ("ne", Prefix::Ne),
        ("gt", Prefix::Gt),
        ("lt", Prefix::Lt),
        ("ge", Prefix::Ge),
        ("le", Prefix::Le),
        ("sa", Prefix::Sa),
        ("eb", Prefix::Eb),
        ("ap", Prefix::Ap),
    ];
    if let Some((p, rest)) = PREFIXES
        .iter()
        .find_map(|(s, p)| v.strip_prefix(s).map(|r| (*p, r)))
    {
        return Ok((p, rest));
    }
    if v.len() >= 2 && v.as_bytes()[..2].iter().all(u8::is_ascii_lowercase) {
        return Err(format!("unknown prefix '{}'", &v[..2]));
    }
    Ok((Prefix::Eq, v))
}

/// `[prefix]date` (R4 search.html#prefix and #date).
pub fn parse_date_bound(v: &str) -> Result<DateBound, String> {
    let (prefix, rest) = split_prefix(v)?;
    let dt = FhirDateTime::parse(rest).map_err(|e| e.to_string())?;
    let (low, high) = dt.to_range();
    let approx_margin = if prefix == Prefix::Ap {
        let now = crate::clock::now_micros();
        let mid = low / 2 + high / 2;
        (now - mid).abs() / 10
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

/// `[prefix]number` with its implicit precision (search.html#number): half a unit of the
/// last significant digit either side (`100` → [99.5, 100.5), `1e2` → [50, 150)).
pub fn parse_number(v: &str) -> Result<NumberBound, String> {
    let (prefix, rest) = split_prefix(v)?;
    let value: f64 = rest
        .parse()
        .map_err(|_| format!("'{rest}' is not a number"))?;
    if !value.is_finite() || rest.contains(['i', 'I', 'n', 'N']) {
        return Err(format!("'{rest}' is not a number"));
    }
    let (mantissa, exponent) = match rest.find(['e', 'E']) {
        Some(i) => (
            &rest[..i],
            rest[i + 1..]
                .parse::<i32>()
                .map_err(|_| format!("'{rest}' is not a number"))?,
        ),
        None => (rest, 0),
    };
    let decimals = mantissa
        .split_once('.')
        .map(|(_, d)| d.len() as i32)
        .unwrap_or(0);
    let half = 0.5 * 10f64.powi(exponent - decimals);
    Ok(NumberBound {
        prefix,
        value,
        low: value - half,
        high: value + half,
    })
}

/// `[prefix]number|system|code`, `[prefix]number||code` or `[prefix]number`
/// (search.html#quantity). A UCUM code that converts also gets its canonical form.
fn parse_quantity(v: &str) -> Result<Criterion, String> {
    let (number, rest) = split_pipe(v);
    let bound = parse_number(&number)?;
    let (system, code) = match rest {
        None => (None, None),
        Some(rest) => {
            let (system, code) = split_pipe(&rest);
            let code = code.map(|c| clean(&c)).filter(|c| !c.is_empty());
            (Some(system).filter(|s| !s.is_empty()), code)
        }
    };
    let canonical = match (&system, &code) {
        (Some(s), Some(c)) if s == "http://unitsofmeasure.org" => {
            fhir_model::search::ucum::canonical(bound.value, c).map(|(value, unit)| {
                let factor = if bound.value == 0.0 {
                    1.0
                } else {
                    value / bound.value
                };
                let (a, b) = (bound.low * factor, bound.high * factor);
                (
                    NumberBound {
                        prefix: bound.prefix,
                        value,
                        low: a.min(b),
                        high: a.max(b),
                    },
                    unit,
                )
            })
        }
        _ => None,
    };
    Ok(Criterion::Quantity {
        bound,
        system,
        code,
        canonical,
    })
}

/// The prefixes of a URL at each `/` (for uri `:above`): `http://x/a/b` gives
/// `http://x/a/b`, `http://x/a`, `http://x`.
fn uri_prefixes(v: &str) -> Vec<String> {
    let mut out = vec![v.to_string()];
    let start = v.find("://").map(|i| i + 3).unwrap_or(0);
    let mut cur = v;
    while let Some(i) = cur.rfind('/') {
        if i < start {
            break;
        }
        cur = &cur[..i];
        if cur.len() > start {
            out.push(cur.to_string());
        }
    }
    out
}

/// Keeps the key name of `ParamKey` users honest in tests.
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
        assert_eq!(parse_token(r"a\|b").value.as_deref(), Some("a|b"));
    }

    #[test]
    fn number_precision_is_half_the_last_digit() {
        let n = parse_number("100").unwrap();
        assert_eq!((n.low, n.high), (99.5, 100.5));
        let n = parse_number("100.00").unwrap();
        assert!((n.low - 99.995).abs() < 1e-9);
        let n = parse_number("1e2").unwrap();
        assert_eq!((n.low, n.high), (50.0, 150.0));
        assert!(parse_number("zz100").is_err());
    }

    #[test]
    fn uri_above_prefixes_stop_at_the_authority() {
        assert_eq!(
            uri_prefixes("http://x.org/a/b"),
            vec!["http://x.org/a/b", "http://x.org/a", "http://x.org"]
        );
    }
}
