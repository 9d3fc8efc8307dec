//! Search results as a `searchset` Bundle (R4 search.html#return), and the entry points that
//! build a query: type-level, system-level (`_type`), compartment
//! (`Patient/{id}/Observation`, R4 compartmentdefinition.html) and `Patient/{id}/$everything`
//! (R4 patient-operation-everything).
//!
//! Matches come first (`search.mode = match`), then `_include`/`_revinclude`d resources
//! (`search.mode = include`), then an OperationOutcome (`search.mode = outcome`) reporting
//! ignored parameters or include truncation. Links: `self`, `first`, and keyset `next` /
//! `previous` cursors that stay valid while resources are being written.

use std::collections::HashSet;

use fhir_model::registry::R4Registry;
use fhir_model::search::SearchParamRegistry;
use serde_json::{Map, Value, json};

use super::Context;
use super::read::content_json;
use crate::clock;
use crate::error::ApiError;
use crate::search::{
    CURSOR_PARAM, Criterion, Cursor, Include, IndexTable, MAX_INCLUDES, SearchParam, SearchQuery,
    Summary, Total, def_key,
};
use crate::storage::{ResourceKey, SearchPage, StoredVersion};

/// Rounds of `:iterate` includes at most (each round follows references one hop further).
const MAX_ITERATE_ROUNDS: usize = 4;

/// Runs `q` and renders the Bundle. `pairs` are the request's parameters (to rebuild
/// links), `path_url` the URL the search was made on (`[base]/Type`, `[base]`, or
/// `[base]/Patient/1/Observation`).
pub async fn search(
    ctx: &Context,
    q: &SearchQuery,
    pairs: &[(String, String)],
    path_url: &str,
) -> Result<Value, ApiError> {
    let mut bundle = json!({
        "resourceType": "Bundle",
        "id": uuid::Uuid::new_v4().to_string(),
        "meta": {"lastUpdated": clock::format_instant(clock::now_micros())},
        "type": "searchset",
    });
    let mut issues: Vec<Value> = q
        .ignored
        .iter()
        .map(|p| {
            json!({
                "severity": "warning",
                "code": "not-supported",
                "diagnostics": format!("search parameter '{p}' is not supported here and was ignored"),
            })
        })
        .collect();
    let links = Links::new(pairs, path_url);
    if q.summary == Summary::Count {
        bundle["total"] = json!(ctx.store.count(q).await?);
        bundle["link"] = json!([{"relation": "self", "url": links.url(None)}]);
        bundle["entry"] = Value::Array(outcome_entry(issues).into_iter().collect());
        return Ok(bundle);
    }
    let page = ctx.store.search(q).await?;
    if q.total != Total::None {
        bundle["total"] = json!(ctx.store.count(q).await?);
    }
    let mut entries = Vec::with_capacity(page.matches.len());
    let mut seen: HashSet<ResourceKey> = HashSet::new();
    for v in &page.matches {
        seen.insert((v.res_type.clone(), v.id.clone()));
        entries.push(entry(ctx, v, q, "match")?);
    }
    if !q.includes.is_empty() {
        let (included, truncated) = includes(ctx, q, &page.matches, &mut seen).await?;
        for v in &included {
            entries.push(entry(ctx, v, q, "include")?);
        }
        if truncated {
            issues.push(json!({
                "severity": "warning",
                "code": "too-costly",
                "diagnostics": format!(
                    "_include/_revinclude stopped at {MAX_INCLUDES} resources; page with a smaller _count to get the rest"
                ),
            }));
        }
    }
    entries.extend(outcome_entry(issues));
    bundle["link"] = Value::Array(links.page_links(q, &page));
    bundle["entry"] = Value::Array(entries);
    Ok(bundle)
}

/// The OperationOutcome entry of a searchset, if there is anything to say.
fn outcome_entry(issues: Vec<Value>) -> Option<Value> {
    (!issues.is_empty()).then(|| {
        json!({
            "resource": {"resourceType": "OperationOutcome", "issue": issues},
            "search": {"mode": "outcome"},
        })
    })
}

/// One Bundle entry, with `_summary`/`_elements` applied to the resource.
fn entry(ctx: &Context, v: &StoredVersion, q: &SearchQuery, mode: &str) -> Result<Value, ApiError> {
    let mut resource = content_json(v)?;
    subset(&mut resource, q);
    Ok(json!({
        "fullUrl": format!("{}/{}/{}", ctx.base_url, v.res_type, v.id),
        "resource": resource,
        "search": {"mode": mode},
    }))
}

/// Applies `_summary` (search.html#summary: `true` keeps the elements marked isSummary in
/// the definitions, `text` keeps text plus mandatory elements, `data` drops text) and
/// `_elements` (search.html#elements: the listed elements plus mandatory ones) to the top
/// level of `resource`, tagging a subset with `SUBSETTED` (R4 resource.html#tag).
fn subset(resource: &mut Value, q: &SearchQuery) {
    let Some(obj) = resource.as_object_mut() else {
        return;
    };
    let res_type = obj
        .get("resourceType")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let keep = match (q.summary, &q.elements) {
        (Summary::Data, None) => {
            obj.remove("text");
            return;
        }
        (Summary::True, _) => Keep::Summary,
        (Summary::Text, _) => Keep::Text,
        (_, Some(list)) => Keep::Elements(list),
        _ => return,
    };
    let keys: Vec<String> = obj.keys().cloned().collect();
    for k in keys {
        let base = k.strip_prefix('_').unwrap_or(&k);
        if matches!(base, "resourceType" | "id" | "meta") {
            continue;
        }
        if !keep.keeps(&res_type, base) {
            obj.remove(&k);
        }
    }
    let meta = obj
        .entry("meta")
        .or_insert_with(|| Value::Object(Map::new()));
    if let Some(meta) = meta.as_object_mut() {
        let tags = meta.entry("tag").or_insert_with(|| json!([]));
        if let Some(tags) = tags.as_array_mut() {
            tags.push(json!({
                "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
                "code": "SUBSETTED",
                "display": "subsetted",
            }));
        }
    }
}

/// Which top-level elements a subset keeps (besides `id` and `meta`).
enum Keep<'q> {
    /// `_summary=true`: elements marked isSummary, and mandatory ones.
    Summary,
    /// `_summary=text`: the narrative and mandatory elements.
    Text,
    /// `_elements`: the listed elements and mandatory ones.
    Elements(&'q [String]),
}

impl Keep<'_> {
    fn keeps(&self, res_type: &str, key: &str) -> bool {
        let required = || top_level(res_type, key).is_some_and(|e| e.is_required());
        match self {
            Keep::Summary => top_level(res_type, key).is_some_and(|e| e.is_summary()) || required(),
            Keep::Text => key == "text" || required(),
            Keep::Elements(list) => {
                list.iter().any(|e| e == key || choice_matches(e, key)) || required()
            }
        }
    }
}

/// The top-level element definition a JSON key belongs to (`valueQuantity` → `value[x]`).
fn top_level(res_type: &str, key: &str) -> Option<&'static fhir_model::registry::ElementInfo> {
    let def = R4Registry::get().type_definition(res_type)?;
    if let Some(e) = def.own_element(key) {
        return Some(e);
    }
    let split = key.find(|c: char| c.is_ascii_uppercase())?;
    def.own_element(&format!("{}[x]", &key[..split]))
}

/// Whether JSON key `key` is a typed form of choice element `name` (`value[x]` or `value`).
fn choice_matches(name: &str, key: &str) -> bool {
    let base = name.strip_suffix("[x]").unwrap_or(name);
    key.len() > base.len()
        && key.starts_with(base)
        && key[base.len()..].starts_with(|c: char| c.is_ascii_uppercase())
}

/// The `_include`/`_revinclude` resources for a page (search.html#include): direct includes
/// of the matches, then `:iterate` ones over everything added, for a few rounds. Returns the
/// resources and whether [`MAX_INCLUDES`] cut them short.
async fn includes(
    ctx: &Context,
    q: &SearchQuery,
    matches: &[StoredVersion],
    seen: &mut HashSet<ResourceKey>,
) -> Result<(Vec<StoredVersion>, bool), ApiError> {
    let mut out: Vec<StoredVersion> = Vec::new();
    let mut from: Vec<ResourceKey> = matches
        .iter()
        .map(|v| (v.res_type.clone(), v.id.clone()))
        .collect();
    for round in 0..=MAX_ITERATE_ROUNDS {
        if from.is_empty() {
            break;
        }
        let mut added: Vec<ResourceKey> = Vec::new();
        for inc in q.includes.iter().filter(|i| round == 0 || i.iterate) {
            let sources: Vec<ResourceKey> = if inc.reverse {
                from.clone()
            } else {
                from.iter()
                    .filter(|(t, _)| *t == inc.source_type)
                    .cloned()
                    .collect()
            };
            if sources.is_empty() {
                continue;
            }
            let room = MAX_INCLUDES.saturating_sub(out.len());
            let found = ctx.store.include(inc, &sources, room + 1).await?;
            for v in found {
                let key = (v.res_type.clone(), v.id.clone());
                if seen.contains(&key) {
                    continue;
                }
                if out.len() >= MAX_INCLUDES {
                    return Ok((out, true));
                }
                seen.insert(key.clone());
                added.push(key);
                out.push(v);
            }
        }
        from = added;
    }
    Ok((out, false))
}

/// Builds `self`, `first`, `next` and `previous` links from the request parameters.
struct Links {
    kept: Vec<(String, String)>,
    path_url: String,
}

impl Links {
    fn new(pairs: &[(String, String)], path_url: &str) -> Links {
        Links {
            kept: pairs
                .iter()
                .filter(|(k, _)| k != CURSOR_PARAM)
                .cloned()
                .collect(),
            path_url: path_url.to_string(),
        }
    }

    fn url(&self, cursor: Option<&Cursor>) -> String {
        let mut ser = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in &self.kept {
            ser.append_pair(k, v);
        }
        if let Some(c) = cursor {
            ser.append_pair(CURSOR_PARAM, &c.encode());
        }
        let qs = ser.finish();
        if qs.is_empty() {
            self.path_url.clone()
        } else {
            format!("{}?{qs}", self.path_url)
        }
    }

    /// The links of a page: `next` when more rows follow, `previous` when rows precede.
    fn page_links(&self, q: &SearchQuery, page: &SearchPage) -> Vec<Value> {
        let (matches, has_more) = (&page.matches, page.has_more);
        let mut links = vec![
            json!({"relation": "self", "url": self.url(q.cursor.as_ref())}),
            json!({"relation": "first", "url": self.url(None)}),
        ];
        let backward = q.cursor.as_ref().is_some_and(|c| c.backward);
        let at = |i: usize, backward: bool| Cursor {
            backward,
            values: page.sort_values.get(i).cloned().unwrap_or_default(),
            rid: page.rids.get(i).copied().unwrap_or_default(),
        };
        if matches.is_empty() {
            return links;
        }
        let more_after = if backward { true } else { has_more };
        let more_before = if backward {
            has_more
        } else {
            q.cursor.is_some()
        };
        if more_before {
            links.push(json!({"relation": "previous", "url": self.url(Some(&at(0, true)))}));
        }
        if more_after {
            links.push(
                json!({"relation": "next", "url": self.url(Some(&at(matches.len() - 1, false)))}),
            );
        }
        links
    }
}

/// The compartment condition (R4 compartmentdefinition.html): resources of `res_type` whose
/// compartment parameters for `compartment` (e.g. Observation: `subject`, `performer` for
/// Patient) refer to `compartment/id`. `None` when `res_type` is not in the compartment.
pub fn compartment_param(compartment: &str, id: &str, res_type: &str) -> Option<SearchParam> {
    let reg = SearchParamRegistry::get();
    let codes = reg.compartment_params(compartment, res_type);
    let keys: Vec<i64> = codes
        .iter()
        .filter_map(|code| reg.param(res_type, code).map(|d| def_key(d, res_type, "")))
        .collect();
    if keys.is_empty() {
        return None;
    }
    Some(SearchParam::Match {
        table: IndexTable::Reference,
        keys,
        values: vec![Criterion::Reference {
            target_type: Some(compartment.to_string()),
            id: id.to_string(),
        }],
        negate: false,
    })
}

/// `Patient/{id}/$everything` (R4 patient-operation-everything): the patient, every
/// resource in its compartment, and (as `include` entries) the resources they refer to,
/// such as practitioners, organizations and medications. Paged like a search; `_count`
/// and `_type` are honoured.
pub fn everything_query(id: &str, pairs: &[(String, String)]) -> Result<SearchQuery, ApiError> {
    let reg = SearchParamRegistry::get();
    let mut q = SearchQuery::new("");
    let mut types: Vec<String> = reg
        .compartment_types("Patient")
        .into_iter()
        .map(str::to_string)
        .collect();
    if !types.iter().any(|t| t == "Patient") {
        types.push("Patient".to_string());
    }
    for (k, v) in pairs {
        match k.as_str() {
            "_count" => {
                q.count = v
                    .parse::<usize>()
                    .map_err(|_| ApiError::BadRequest(format!("invalid _count={v}")))?
                    .min(crate::search::MAX_COUNT)
            }
            "_type" => {
                let wanted: Vec<&str> = v.split(',').collect();
                types.retain(|t| wanted.contains(&t.as_str()));
            }
            CURSOR_PARAM => {
                q.cursor =
                    Some(Cursor::decode(v).ok_or_else(|| {
                        ApiError::BadRequest(format!("invalid {CURSOR_PARAM}={v}"))
                    })?)
            }
            _ => {}
        }
    }
    let mut any = vec![SearchParam::Resource {
        res_type: "Patient".to_string(),
        id: id.to_string(),
    }];
    let mut keys = Vec::new();
    for t in &types {
        if let Some(SearchParam::Match { keys: k, .. }) = compartment_param("Patient", id, t) {
            keys.extend(k);
        }
    }
    if !keys.is_empty() {
        any.push(SearchParam::Match {
            table: IndexTable::Reference,
            keys,
            values: vec![Criterion::Reference {
                target_type: Some("Patient".to_string()),
                id: id.to_string(),
            }],
            negate: false,
        });
    }
    q.params.push(SearchParam::Or(any));
    q.types = types;
    // Everything the compartment's resources refer to, one hop (any reference parameter).
    q.includes = q
        .types
        .iter()
        .map(|t| Include {
            reverse: false,
            source_type: t.clone(),
            keys: Vec::new(),
            target_type: None,
            iterate: false,
        })
        .collect();
    Ok(q)
}
