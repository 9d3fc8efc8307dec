//! `transaction` and `batch` Bundles posted to the base URL (R4 http.html#transaction,
//! bundle.html#transaction).
//!
//! A transaction runs in one database transaction, all or nothing:
//! 1. ids are assigned and conditional targets resolved (`ifNoneExist`, conditional PUT and
//!    DELETE, R4 http.html#trules), building a map from each entry's `fullUrl` to its final
//!    `Type/id`;
//! 2. conditional references (`Patient?identifier=sys|val`) are resolved and every reference
//!    to a `fullUrl` (in `reference` elements anywhere, extensions and contained resources
//!    included, and in narrative links) is rewritten;
//! 3. entries run in the spec's order DELETE, POST, PUT, GET;
//! 4. the response lists entries in request order.
//!
//! A batch runs each entry on its own, in its own database transaction; a failing entry
//! gets an OperationOutcome in `response.outcome` and the others go on.

use std::collections::HashMap;

use serde_json::{Value, json};

use super::{Context, Written, read};
use crate::clock;
use crate::error::ApiError;
use crate::search::SearchQuery;
use crate::storage::{CurrentVersion, ResourceKey, StoreTx};

/// The HTTP verb of an entry (`Bundle.entry.request.method`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verb {
    Get,
    Post,
    Put,
    Delete,
}

/// What an entry's `request.url` designates, after stripping the base URL.
#[derive(Debug, Clone)]
enum Target {
    /// `Type`
    Type(String),
    /// `Type/id`
    Instance(String, String),
    /// `Type/id/_history/vid`
    Version(String, String, String),
    /// `Type?criteria`
    Conditional(String, String),
}

/// One parsed entry.
#[derive(Debug, Clone)]
struct Entry {
    index: usize,
    verb: Verb,
    target: Target,
    full_url: Option<String>,
    resource: Option<Value>,
    if_none_exist: Option<String>,
    if_match: Option<i64>,
    /// A create validated and serialised before the database transaction began.
    prepared: Option<super::Prepared>,
}

/// What phase 1 decided for a write entry.
#[derive(Debug, Clone)]
enum Plan {
    /// Create `Type/id` (a fresh id).
    Create(String, String),
    /// `ifNoneExist` matched this existing resource: no write, 200.
    Existing(String, String),
    /// Update (or update-as-create) `Type/id`.
    Update(String, String),
    /// Delete `Type/id` (None: the condition matched nothing).
    Delete(Option<(String, String)>),
    /// A read or search.
    Get,
}

/// Processes a Bundle of type `transaction` or `batch`, returning the response Bundle.
/// `representation`: include the resulting resources in the response entries
/// (`Prefer: return=representation`).
///
/// Errors: 400 for a Bundle of another type or a malformed entry; for a transaction, any
/// entry's error, wrapped in [`ApiError::InEntry`] with its index.
pub async fn process(
    ctx: &Context,
    bundle: Value,
    representation: bool,
) -> Result<Value, ApiError> {
    let (kind, raw_entries) = split_bundle(bundle)?;
    match kind.as_str() {
        "transaction" => {
            let prepared = prepare_entries(ctx, raw_entries)?;
            let mut tx = ctx.store.begin().await?;
            let response = run_transaction(ctx, tx.as_mut(), prepared, representation).await?;
            tx.commit().await?;
            Ok(response)
        }
        "batch" => Ok(batch(ctx, raw_entries, representation).await),
        other => Err(ApiError::BadRequest(format!(
            "Bundle.type must be 'transaction' or 'batch' to be processed, not '{other}'"
        ))),
    }
}

/// A transaction Bundle parsed, with the CPU work that needs no database done, ready for
/// [`run_transaction`].
pub struct PreparedTransaction {
    entries: Vec<Entry>,
    static_plans: Option<Vec<Plan>>,
}

/// Parses a Bundle of type `transaction` and does its database-free work (ids, reference
/// rewriting and create validation when no entry is conditional), so the caller can open
/// its database transaction afterwards and hold it only for the SQL.
///
/// Errors: 400 for a Bundle that is not a transaction or a malformed entry.
pub fn prepare_transaction(ctx: &Context, bundle: Value) -> Result<PreparedTransaction, ApiError> {
    let (kind, raw_entries) = split_bundle(bundle)?;
    if kind != "transaction" {
        return Err(ApiError::BadRequest(format!(
            "Bundle.type must be 'transaction', not '{kind}'"
        )));
    }
    prepare_entries(ctx, raw_entries)
}

/// `Bundle.type` and the entries of a Bundle.
fn split_bundle(mut bundle: Value) -> Result<(String, Vec<Value>), ApiError> {
    if bundle.get("resourceType").and_then(Value::as_str) != Some("Bundle") {
        return Err(ApiError::BadRequest(
            "POST to the base URL needs a Bundle (R4 http.html#transaction)".into(),
        ));
    }
    let kind = bundle.get("type").and_then(Value::as_str).unwrap_or("");
    let kind = kind.to_string();
    let raw_entries = match bundle.get_mut("entry").map(Value::take) {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a,
        Some(_) => return Err(ApiError::BadRequest("Bundle.entry must be an array".into())),
    };
    Ok((kind, raw_entries))
}

fn prepare_entries(
    ctx: &Context,
    raw_entries: Vec<Value>,
) -> Result<PreparedTransaction, ApiError> {
    let mut entries = raw_entries
        .into_iter()
        .enumerate()
        .map(|(i, e)| parse_entry(ctx, i, e).map_err(|err| in_entry(i, err)))
        .collect::<Result<Vec<_>, _>>()?;
    // When no entry needs the database to decide its target (no ifNoneExist, conditional
    // PUT/DELETE or conditional reference), ids are assigned, references rewritten and
    // creates validated and serialised before the transaction begins, so concurrent bundles
    // do their CPU work in parallel and the write lock is held only for the SQL.
    let static_plans: Option<Vec<Plan>> = entries
        .iter()
        .map(|e| {
            let conditional_refs = e.resource.as_ref().is_some_and(|r| {
                let mut found = Vec::new();
                collect_conditional_refs(r, &mut found);
                !found.is_empty()
            });
            if conditional_refs {
                None
            } else {
                static_plan(e)
            }
        })
        .collect();
    if let Some(plans) = &static_plans {
        let id_map = map_targets(&entries, plans)?;
        for (e, plan) in entries.iter_mut().zip(plans) {
            if let Some(res) = e.resource.as_mut()
                && !id_map.is_empty()
            {
                rewrite_references(res, &id_map);
            }
            if let Plan::Create(_, id) = plan {
                let res = e.resource.take().unwrap_or(Value::Null);
                let prepared = super::prepare_create_with_id(ctx, res, id.clone())
                    .map_err(|err| in_entry(e.index, err))?;
                e.prepared = Some(prepared);
            }
        }
    }
    Ok(PreparedTransaction {
        entries,
        static_plans,
    })
}

fn in_entry(index: usize, source: ApiError) -> ApiError {
    match source {
        e @ ApiError::InEntry { .. } => e,
        e => ApiError::InEntry {
            index,
            source: Box::new(e),
        },
    }
}

fn parse_entry(ctx: &Context, index: usize, entry: Value) -> Result<Entry, ApiError> {
    let Value::Object(mut map) = entry else {
        return Err(ApiError::BadRequest("entry is not an object".into()));
    };
    let request = map.remove("request").ok_or_else(|| {
        ApiError::BadRequest("entry has no request (Bundle.entry.request)".into())
    })?;
    let verb = match request.get("method").and_then(Value::as_str) {
        Some("GET") | Some("HEAD") => Verb::Get,
        Some("POST") => Verb::Post,
        Some("PUT") => Verb::Put,
        Some("DELETE") => Verb::Delete,
        Some(other) => {
            return Err(ApiError::MethodNotAllowed(format!(
                "request.method {other} is not supported in a Bundle"
            )));
        }
        None => {
            return Err(ApiError::BadRequest(
                "entry.request.method is missing".into(),
            ));
        }
    };
    let url = request
        .get("url")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::BadRequest("entry.request.url is missing".into()))?;
    let target = parse_target(ctx, url)?;
    let resource = map.remove("resource");
    if matches!(verb, Verb::Post | Verb::Put) {
        let Some(res) = &resource else {
            return Err(ApiError::BadRequest(
                "POST/PUT entry has no resource".into(),
            ));
        };
        let url_type = match &target {
            Target::Type(t) | Target::Instance(t, _) | Target::Conditional(t, _) => t,
            Target::Version(..) => {
                return Err(ApiError::BadRequest("cannot write to a version URL".into()));
            }
        };
        super::check_body_type(res, url_type)?;
        if let (Verb::Put, Target::Instance(_, id)) = (verb, &target)
            && let Some(body_id) = res.get("id").and_then(Value::as_str)
            && body_id != id
        {
            return Err(ApiError::BadRequest(format!(
                "resource id '{body_id}' does not match the id '{id}' in request.url"
            )));
        }
    }
    if verb == Verb::Post && !matches!(target, Target::Type(_)) {
        return Err(ApiError::BadRequest(format!(
            "POST entry url must be a resource type, not '{url}'"
        )));
    }
    let if_match = match request.get("ifMatch").and_then(Value::as_str) {
        Some(tag) => Some(parse_etag(tag)?),
        None => None,
    };
    Ok(Entry {
        index,
        verb,
        target,
        full_url: map
            .get("fullUrl")
            .and_then(Value::as_str)
            .map(str::to_string),
        resource,
        if_none_exist: request
            .get("ifNoneExist")
            .and_then(Value::as_str)
            .map(|s| s.trim_start_matches('?').to_string()),
        if_match,
        prepared: None,
    })
}

/// Parses `W/"3"`, `"3"` or `3` into a version number (R4 http.html#concurrency).
pub fn parse_etag(tag: &str) -> Result<i64, ApiError> {
    let t = tag.trim();
    let t = t.strip_prefix("W/").unwrap_or(t).trim_matches('"');
    t.parse()
        .map_err(|_| ApiError::BadRequest(format!("'{tag}' is not a version ETag like W/\"1\"")))
}

fn parse_target(ctx: &Context, url: &str) -> Result<Target, ApiError> {
    let rel = url
        .strip_prefix(&ctx.base_url)
        .map(|r| r.trim_start_matches('/'))
        .unwrap_or(url)
        .trim_start_matches('/');
    let (path, query) = match rel.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (rel, None),
    };
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let target = match (parts.as_slice(), query) {
        ([t], Some(q)) => Target::Conditional(t.to_string(), q.to_string()),
        ([t], None) => Target::Type(t.to_string()),
        ([t, id], _) => Target::Instance(t.to_string(), id.to_string()),
        ([t, id, "_history", v], _) => {
            Target::Version(t.to_string(), id.to_string(), v.to_string())
        }
        _ => {
            return Err(ApiError::BadRequest(format!(
                "unsupported request.url '{url}'"
            )));
        }
    };
    let (Target::Type(t)
    | Target::Instance(t, _)
    | Target::Version(t, _, _)
    | Target::Conditional(t, _)) = &target;
    super::check_known_type(t)?;
    if let Target::Instance(_, id) | Target::Version(_, id, _) = &target {
        super::check_id(id)?;
    }
    Ok(target)
}

/// Processing order of R4 http.html#trules: DELETE, POST, PUT/PATCH, GET.
fn order(verb: Verb) -> u8 {
    match verb {
        Verb::Delete => 0,
        Verb::Post => 1,
        Verb::Put => 2,
        Verb::Get => 3,
    }
}

/// Runs a prepared transaction Bundle inside `tx`, returning the response Bundle; the
/// caller commits `tx` (or drops it to roll back, which it must on an error).
///
/// Errors: any entry's error, wrapped in [`ApiError::InEntry`] with its index.
pub async fn run_transaction(
    ctx: &Context,
    tx: &mut dyn StoreTx,
    prepared: PreparedTransaction,
    representation: bool,
) -> Result<Value, ApiError> {
    let PreparedTransaction {
        mut entries,
        static_plans,
    } = prepared;
    let plans = match static_plans {
        Some(plans) => plans,
        None => {
            let found = prefetch_conditionals(tx, &entries).await?;
            let mut plans: Vec<Plan> = Vec::with_capacity(entries.len());
            for e in &entries {
                let plan = plan_entry(tx, e, &found)
                    .await
                    .map_err(|err| in_entry(e.index, err))?;
                plans.push(plan);
            }
            let id_map = map_targets(&entries, &plans)?;
            let mut cond_cache: HashMap<String, String> = HashMap::new();
            for e in entries.iter_mut() {
                if let Some(res) = e.resource.as_mut() {
                    resolve_conditional_refs(tx, res, &mut cond_cache, &found)
                        .await
                        .map_err(|err| in_entry(e.index, err))?;
                    if !id_map.is_empty() {
                        rewrite_references(res, &id_map);
                    }
                }
            }
            plans
        }
    };
    // The current versions of every update target are read (and on PostgreSQL locked) in
    // one query, so the writes below queue up unflushed until commit.
    let update_keys: Vec<(String, String)> = plans
        .iter()
        .filter_map(|p| match p {
            Plan::Update(t, id) => Some((t.clone(), id.clone())),
            _ => None,
        })
        .collect();
    let current = if update_keys.is_empty() {
        HashMap::new()
    } else {
        tx.current_versions(&update_keys).await?
    };
    // Execute in the spec's order: DELETE, POST, PUT, GET.
    let mut order_idx: Vec<usize> = (0..entries.len()).collect();
    order_idx.sort_by_key(|&i| order(entries[i].verb));
    let mut responses: Vec<Value> = vec![Value::Null; entries.len()];
    for i in order_idx {
        let e = &mut entries[i];
        let resp = execute(ctx, tx, e, &plans[i], Some(&current), representation)
            .await
            .map_err(|err| in_entry(e.index, err))?;
        responses[i] = resp;
    }
    Ok(response_bundle("transaction-response", responses))
}

/// Checks that no resource is the target of two entries and maps each entry's `fullUrl`
/// to its final `Type/id` (R4 http.html#transaction).
fn map_targets(entries: &[Entry], plans: &[Plan]) -> Result<HashMap<String, String>, ApiError> {
    let mut id_map: HashMap<String, String> = HashMap::new();
    let mut targets = std::collections::HashSet::new();
    for (e, plan) in entries.iter().zip(plans) {
        if let Plan::Create(t, id)
        | Plan::Update(t, id)
        | Plan::Existing(t, id)
        | Plan::Delete(Some((t, id))) = plan
        {
            if !targets.insert((t.as_str(), id.as_str())) {
                return Err(in_entry(
                    e.index,
                    ApiError::BadRequest(format!(
                        "{t}/{id} is the target of more than one entry (R4 http.html#transaction)"
                    )),
                ));
            }
            if let Some(full) = &e.full_url {
                id_map.insert(full.clone(), format!("{t}/{id}"));
            }
        }
    }
    Ok(id_map)
}

/// The plan of an entry that needs no database lookup, or `None`.
fn static_plan(e: &Entry) -> Option<Plan> {
    Some(match (e.verb, &e.target) {
        (Verb::Post, Target::Type(t)) if e.if_none_exist.is_none() => {
            Plan::Create(t.clone(), new_id())
        }
        (Verb::Put, Target::Instance(t, id)) => Plan::Update(t.clone(), id.clone()),
        (Verb::Delete, Target::Instance(t, id)) => Plan::Delete(Some((t.clone(), id.clone()))),
        (Verb::Get, _) => Plan::Get,
        _ => return None,
    })
}

/// The ids matching every conditional criterion of `entries` (`ifNoneExist`, conditional
/// PUT and DELETE, conditional references), keyed `Type?criteria`, looked up together
/// before any write of the transaction ([`StoreTx::search_ids_many`]). Criteria that do not
/// parse are left out: looking them up again reports the error on their entry.
async fn prefetch_conditionals(
    tx: &mut dyn StoreTx,
    entries: &[Entry],
) -> Result<HashMap<String, Vec<String>>, ApiError> {
    let mut keys: Vec<String> = Vec::new();
    let mut queries: Vec<SearchQuery> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut add = |t: &str, criteria: &str| {
        let key = format!("{t}?{criteria}");
        if seen.contains(&key) || super::check_known_type(t).is_err() {
            return;
        }
        if let Ok(q) = super::conditional_query(t, criteria) {
            seen.insert(key.clone());
            keys.push(key);
            queries.push(q);
        }
    };
    for e in entries {
        match (e.verb, &e.target, &e.if_none_exist) {
            (Verb::Post, Target::Type(t), Some(criteria)) => add(t, criteria),
            (Verb::Put | Verb::Delete, Target::Conditional(t, criteria), _) => add(t, criteria),
            _ => {}
        }
        if let Some(res) = &e.resource {
            let mut found = Vec::new();
            collect_conditional_refs(res, &mut found);
            for reference in found {
                let (t, criteria) = reference.split_once('?').unwrap_or((&reference, ""));
                add(t, criteria);
            }
        }
    }
    if queries.is_empty() {
        return Ok(HashMap::new());
    }
    let ids = tx.search_ids_many(&queries, 2).await?;
    Ok(keys.into_iter().zip(ids).collect())
}

/// Ids matching conditional criteria, from `found` when prefetched, else looked up.
async fn lookup(
    tx: &mut dyn StoreTx,
    found: &HashMap<String, Vec<String>>,
    t: &str,
    criteria: &str,
) -> Result<Vec<String>, ApiError> {
    let q = super::conditional_query(t, criteria)?;
    if let Some(ids) = found.get(&format!("{t}?{criteria}")) {
        return Ok(ids.clone());
    }
    super::conditional_ids(tx, &q).await
}

async fn plan_entry(
    tx: &mut dyn StoreTx,
    e: &Entry,
    found: &HashMap<String, Vec<String>>,
) -> Result<Plan, ApiError> {
    if let Some(plan) = static_plan(e) {
        return Ok(plan);
    }
    Ok(match (e.verb, &e.target) {
        (Verb::Post, Target::Type(t)) => match &e.if_none_exist {
            Some(criteria) => match lookup(tx, found, t, criteria).await?.as_slice() {
                [] => Plan::Create(t.clone(), new_id()),
                [one] => Plan::Existing(t.clone(), one.clone()),
                _ => return Err(super::several_matches("create", t, criteria)),
            },
            None => Plan::Create(t.clone(), new_id()),
        },
        (Verb::Put, Target::Instance(t, id)) => Plan::Update(t.clone(), id.clone()),
        (Verb::Put, Target::Conditional(t, criteria)) => {
            match lookup(tx, found, t, criteria).await?.as_slice() {
                [] => {
                    let body_id = e
                        .resource
                        .as_ref()
                        .and_then(|r| r.get("id"))
                        .and_then(Value::as_str);
                    match body_id {
                        Some(id) => {
                            super::check_id(id)?;
                            Plan::Update(t.clone(), id.to_string())
                        }
                        None => Plan::Create(t.clone(), new_id()),
                    }
                }
                [one] => Plan::Update(t.clone(), one.clone()),
                _ => return Err(super::several_matches("update", t, criteria)),
            }
        }
        (Verb::Delete, Target::Instance(t, id)) => Plan::Delete(Some((t.clone(), id.clone()))),
        (Verb::Delete, Target::Conditional(t, criteria)) => {
            match lookup(tx, found, t, criteria).await?.as_slice() {
                [] => Plan::Delete(None),
                [one] => Plan::Delete(Some((t.clone(), one.clone()))),
                _ => return Err(super::several_matches("delete", t, criteria)),
            }
        }
        (Verb::Get, _) => Plan::Get,
        (verb, _) => {
            return Err(ApiError::BadRequest(format!(
                "{verb:?} is not allowed on this request.url"
            )));
        }
    })
}

fn new_id() -> String {
    super::new_resource_id()
}

async fn execute(
    ctx: &Context,
    tx: &mut dyn StoreTx,
    e: &mut Entry,
    plan: &Plan,
    known: Option<&HashMap<ResourceKey, CurrentVersion>>,
    representation: bool,
) -> Result<Value, ApiError> {
    match plan {
        Plan::Create(_, id) => {
            let prepared = match e.prepared.take() {
                Some(p) => p,
                None => {
                    let res = e.resource.take().unwrap_or(Value::Null);
                    super::prepare_create_with_id(ctx, res, id.clone())?
                }
            };
            let w = prepared.queue(tx);
            Ok(write_response(ctx, &w, "201 Created", representation))
        }
        Plan::Update(t, id) => {
            let res = e.resource.take().unwrap_or(Value::Null);
            let w = match known {
                Some(map) => {
                    let current = map.get(&(t.clone(), id.clone())).copied();
                    super::update_from(ctx, tx, t, id, res, e.if_match, current)?
                }
                None => super::update(ctx, tx, t, id, res, e.if_match).await?,
            };
            let status = if w.created { "201 Created" } else { "200 OK" };
            Ok(write_response(ctx, &w, status, representation))
        }
        Plan::Existing(t, id) => {
            let v = tx
                .read(t, id)
                .await?
                .ok_or_else(|| ApiError::NotFound(format!("{t}/{id}")))?;
            let w = Written {
                res_type: t.clone(),
                id: id.clone(),
                version_id: v.version_id,
                last_updated: v.last_updated,
                content: v.content,
                created: false,
            };
            Ok(write_response(ctx, &w, "200 OK", representation))
        }
        Plan::Delete(None) => Ok(json!({"response": {"status": "204 No Content"}})),
        Plan::Delete(Some((t, id))) => {
            let w = super::delete(tx, t, id).await?;
            let mut resp = json!({"response": {"status": "204 No Content"}});
            if let Some(w) = w {
                resp["response"]["etag"] = json!(w.etag());
            }
            Ok(resp)
        }
        Plan::Get => get_in_tx(ctx, tx, &e.target).await,
    }
}

fn write_response(ctx: &Context, w: &Written, status: &str, representation: bool) -> Value {
    let mut v = json!({
        "fullUrl": format!("{}/{}/{}", ctx.base_url, w.res_type, w.id),
        "response": {
            "status": status,
            "location": w.location(&ctx.base_url),
            "etag": w.etag(),
            "lastModified": clock::format_instant(w.last_updated),
        }
    });
    if representation
        && let Some(text) = &w.content
        && let Ok(res) = serde_json::from_str::<Value>(text)
    {
        v["resource"] = res;
    }
    v
}

/// A GET entry inside the transaction: read, vread or search, seeing the transaction's
/// own writes.
async fn get_in_tx(
    ctx: &Context,
    tx: &mut dyn StoreTx,
    target: &Target,
) -> Result<Value, ApiError> {
    match target {
        Target::Instance(t, id) => match tx.read(t, id).await? {
            None => Err(ApiError::NotFound(format!("{t}/{id} is not known"))),
            Some(v) if v.deleted => Err(ApiError::Gone(format!("{t}/{id} was deleted"))),
            Some(v) => Ok(json!({
                "fullUrl": format!("{}/{t}/{id}", ctx.base_url),
                "resource": read::content_json(&v)?,
                "response": {"status": "200 OK", "etag": format!("W/\"{}\"", v.version_id),
                             "lastModified": clock::format_instant(v.last_updated)},
            })),
        },
        Target::Version(t, id, vid) => {
            let v = read::vread(ctx, t, id, vid).await?;
            Ok(json!({
                "resource": read::content_json(&v)?,
                "response": {"status": "200 OK", "etag": format!("W/\"{}\"", v.version_id)},
            }))
        }
        Target::Type(t) | Target::Conditional(t, _) => {
            let criteria = match target {
                Target::Conditional(_, c) => c.as_str(),
                _ => "",
            };
            let pairs: Vec<(String, String)> = url::form_urlencoded::parse(criteria.as_bytes())
                .into_owned()
                .collect();
            let q: SearchQuery = crate::search::parse_query(t, &pairs, false)?;
            let ids = tx.search_ids(&q, q.count).await?;
            let mut found = Vec::with_capacity(ids.len());
            for id in ids {
                if let Some(v) = tx.read(t, &id).await? {
                    found.push(json!({
                        "fullUrl": format!("{}/{t}/{id}", ctx.base_url),
                        "resource": read::content_json(&v)?,
                        "search": {"mode": "match"},
                    }));
                }
            }
            let mut b = json!({"resourceType": "Bundle", "type": "searchset"});
            b["entry"] = Value::Array(found);
            Ok(json!({"resource": b, "response": {"status": "200 OK"}}))
        }
    }
}

/// Resolves every conditional reference (`Type?criteria`, R4 http.html#trules) in
/// `resource` to `Type/id`; no match or several matches is a 412.
async fn resolve_conditional_refs(
    tx: &mut dyn StoreTx,
    resource: &mut Value,
    cache: &mut HashMap<String, String>,
    prefetched: &HashMap<String, Vec<String>>,
) -> Result<(), ApiError> {
    let mut found = Vec::new();
    collect_conditional_refs(resource, &mut found);
    if found.is_empty() {
        return Ok(());
    }
    let mut map = HashMap::new();
    for reference in found {
        if let Some(done) = cache.get(&reference) {
            map.insert(reference, done.clone());
            continue;
        }
        let (t, criteria) = reference.split_once('?').unwrap_or((&reference, ""));
        super::check_known_type(t)?;
        let resolved = match lookup(tx, prefetched, t, criteria).await?.as_slice() {
            [one] => format!("{t}/{one}"),
            [] => {
                return Err(ApiError::PreconditionFailed(format!(
                    "conditional reference '{reference}' matches no resource"
                )));
            }
            _ => {
                return Err(ApiError::PreconditionFailed(format!(
                    "conditional reference '{reference}' matches more than one resource"
                )));
            }
        };
        cache.insert(reference.clone(), resolved.clone());
        map.insert(reference, resolved);
    }
    rewrite_references(resource, &map);
    Ok(())
}

fn collect_conditional_refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                if k == "reference"
                    && let Value::String(s) = child
                    && s.contains('?')
                    && !s.starts_with('#')
                    && !s.contains("://")
                    && !s.starts_with("urn:")
                {
                    out.push(s.clone());
                } else {
                    collect_conditional_refs(child, out);
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|c| collect_conditional_refs(c, out)),
        _ => {}
    }
}

/// Element names whose values are links that a transaction rewrites besides
/// `Reference.reference`: R4 http.html#trules asks for "elements of type uri, url, oid,
/// uuid" too (e.g. `Attachment.url` pointing at a Binary in the bundle, `valueUri` in an
/// extension). Identifier values are strings, not links, and are left alone.
const LINK_ELEMENTS: &[&str] = &[
    "reference",
    "url",
    "uri",
    "valueUri",
    "valueUrl",
    "valueOid",
    "valueUuid",
];

/// Rewrites links found in `map` (fullUrl → `Type/id`), at any depth (extensions and
/// contained resources included): `reference` and the uri-typed [`LINK_ELEMENTS`], and
/// `href`/`src` links in `text.div` (R4 http.html#trules, bundle.html#references).
pub fn rewrite_references(v: &mut Value, map: &HashMap<String, String>) {
    match v {
        Value::Object(m) => {
            for (k, child) in m.iter_mut() {
                match child {
                    Value::String(s) if LINK_ELEMENTS.contains(&k.as_str()) => {
                        if let Some(new) = map.get(s.as_str()) {
                            *s = new.clone();
                        }
                    }
                    Value::String(s) if k == "div" && s.contains("urn:") => {
                        for (from, to) in map {
                            if s.contains(from.as_str()) {
                                *s = s.replace(from.as_str(), to);
                            }
                        }
                    }
                    _ => rewrite_references(child, map),
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|c| rewrite_references(c, map)),
        _ => {}
    }
}

fn response_bundle(kind: &str, entries: Vec<Value>) -> Value {
    json!({
        "resourceType": "Bundle",
        "id": new_id(),
        "type": kind,
        "meta": {"lastUpdated": clock::format_instant(clock::now_micros())},
        "entry": entries,
    })
}

/// A batch: each entry in its own database transaction; failures become entry outcomes.
async fn batch(ctx: &Context, raw: Vec<Value>, representation: bool) -> Value {
    let mut responses = Vec::with_capacity(raw.len());
    for (i, raw_entry) in raw.into_iter().enumerate() {
        let result = async {
            let entry = parse_entry(ctx, i, raw_entry)?;
            super::with_retry(|| {
                let mut entry = entry.clone();
                async move {
                    let mut tx = ctx.store.begin().await?;
                    let none = HashMap::new();
                    let plan = plan_entry(tx.as_mut(), &entry, &none).await?;
                    if let Some(res) = entry.resource.as_mut() {
                        resolve_conditional_refs(tx.as_mut(), res, &mut HashMap::new(), &none)
                            .await?;
                    }
                    let resp =
                        execute(ctx, tx.as_mut(), &mut entry, &plan, None, representation).await?;
                    tx.commit().await?;
                    Ok(resp)
                }
            })
            .await
        }
        .await;
        responses.push(match result {
            Ok(v) => v,
            Err(err) => json!({
                "response": {
                    "status": format!("{} {}", err.status().as_u16(), err.status().canonical_reason().unwrap_or("")),
                    "outcome": err.to_operation_outcome(),
                }
            }),
        });
    }
    response_bundle("batch-response", responses)
}
