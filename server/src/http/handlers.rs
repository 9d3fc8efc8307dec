//! One handler per RESTful interaction (R4 http.html). Each parses its request, calls
//! `crate::interaction`, and renders the result; errors become OperationOutcome through
//! `ApiError`'s `IntoResponse`.

use std::sync::Arc;

use axum::Extension;
use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use fhir_model::datetime::FhirDateTime;
use mediflow_auth::Interaction;

use super::response::{self, Options};
use super::{AppState, AuditSubtype, header_str, options};
use crate::auth::Principal;
use crate::auth::authz::{self, audit_immutable};
use crate::error::ApiError;
use crate::interaction::{self, bundle::parse_etag, capability, read as reads};
use crate::search::{self, CURSOR_PARAM, DEFAULT_COUNT, MAX_COUNT};
use crate::storage::HistoryQuery;

type Shared = State<Arc<AppState>>;
/// The authenticated requestor (set by `super::guard`).
type Who = Extension<Arc<Principal>>;
type Result<T> = std::result::Result<T, ApiError>;

fn pairs(raw: &Option<String>) -> Vec<(String, String)> {
    raw.as_deref()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default()
}

/// Reads the body up to the configured limit: 413 above it (R4 http.html: the server may
/// refuse large requests).
async fn body_bytes(state: &AppState, headers: &HeaderMap, body: Body) -> Result<Bytes> {
    let too_large = || {
        ApiError::PayloadTooLarge(format!(
            "request body is larger than the limit of {} bytes",
            state.max_body_bytes
        ))
    };
    if let Some(len) =
        header_str(headers, header::CONTENT_LENGTH).and_then(|v| v.parse::<usize>().ok())
        && len > state.max_body_bytes
    {
        return Err(too_large());
    }
    axum::body::to_bytes(body, state.max_body_bytes)
        .await
        .map_err(|_| too_large())
}

async fn resource_body(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
    url_type: &str,
) -> Result<serde_json::Value> {
    let bytes = body_bytes(state, headers, body).await?;
    let resource = interaction::parse_resource(&bytes)?;
    interaction::check_body_type(&resource, url_type)?;
    Ok(resource)
}

fn if_match(headers: &HeaderMap) -> Result<Option<i64>> {
    header_str(headers, header::IF_MATCH)
        .map(parse_etag)
        .transpose()
}

/// `GET /fhir/metadata`: the CapabilityStatement.
pub async fn capabilities(
    State(state): Shared,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    let opts = options(&headers, &pairs(&q));
    let cs = capability::capability_statement(&state.ctx.base_url);
    response::fhir_json(StatusCode::OK, &cs, opts.pretty)
}

/// `POST /fhir`: a transaction or batch Bundle.
pub async fn bundle(
    State(state): Shared,
    Extension(p): Who,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    let opts = options(&headers, &pairs(&q));
    let bytes = body_bytes(&state, &headers, body).await?;
    let value = interaction::parse_resource(&bytes)?;
    authz::authorize_bundle(&p, &state.ctx.base_url, &value)?;
    let subtype = match value.get("type").and_then(|t| t.as_str()) {
        Some("batch") => "batch",
        _ => "transaction",
    };
    let representation = opts.ret == response::Return::Representation
        && header_str(&headers, header::HeaderName::from_static("prefer")).is_some();
    let result = interaction::bundle::process(&state.ctx, value, representation).await?;
    let mut resp = response::fhir_json(StatusCode::OK, &result, opts.pretty);
    resp.extensions_mut().insert(AuditSubtype(subtype));
    Ok(resp)
}

/// `GET /fhir/{type}/{id}`: read (R4 http.html#read).
pub async fn read(
    State(state): Shared,
    Extension(p): Who,
    Path((t, id)): Path<(String, String)>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Result<Response> {
    interaction::check_known_type(&t)?;
    authz::check_instance(&state.ctx, &p, Interaction::Read, &t, &id).await?;
    let v = reads::read(&state.ctx, &t, &id).await?;
    Ok(response::read(&v, options(&headers, &pairs(&q))))
}

/// `GET /fhir/{type}/{id}/_history/{vid}`: vread (R4 http.html#vread).
pub async fn vread(
    State(state): Shared,
    Extension(p): Who,
    Path((t, id, vid)): Path<(String, String, String)>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Result<Response> {
    interaction::check_known_type(&t)?;
    authz::check_instance(&state.ctx, &p, Interaction::Read, &t, &id).await?;
    let v = reads::vread(&state.ctx, &t, &id, &vid).await?;
    Ok(response::read(&v, options(&headers, &pairs(&q))))
}

/// `POST /fhir/{type}`: create, or conditional create with `If-None-Exist`
/// (R4 http.html#create, #ccreate).
pub async fn create(
    State(state): Shared,
    Extension(p): Who,
    Path(t): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    interaction::check_known_type(&t)?;
    let grant = p.require(Interaction::Create, &t)?;
    let opts = options(&headers, &pairs(&q));
    let resource = resource_body(&state, &headers, body, &t).await?;
    let ctx = &state.ctx;
    // Validated and serialised before the write transaction begins.
    let prepared = interaction::prepare_create(ctx, resource)?;
    let mut tx = ctx.store.begin().await?;
    if let Some(criteria) = header_str(&headers, header::HeaderName::from_static("if-none-exist")) {
        p.require_unconditional(Interaction::Create, &t, "a conditional create")?;
        let criteria = criteria.trim_start_matches('?');
        let query = interaction::conditional_query(&t, criteria)?;
        match interaction::conditional_ids(tx.as_mut(), &query)
            .await?
            .as_slice()
        {
            [] => {}
            [one] => {
                let v = reads::read(ctx, &t, one).await?;
                let w = interaction::Written {
                    res_type: t.clone(),
                    id: one.clone(),
                    version_id: v.version_id,
                    last_updated: v.last_updated,
                    content: v.content,
                    created: false,
                };
                return Ok(response::written(&w, StatusCode::OK, &ctx.base_url, opts));
            }
            _ => return Err(interaction::several_matches("create", &t, criteria)),
        }
    }
    let w = prepared.queue(tx.as_mut());
    authz::check_in_tx(tx.as_mut(), &t, &w.id, &grant).await?;
    tx.commit().await?;
    Ok(response::written(
        &w,
        StatusCode::CREATED,
        &ctx.base_url,
        opts,
    ))
}

/// `PUT /fhir/{type}/{id}`: update or update-as-create (R4 http.html#update), with
/// `If-Match` for version-aware updates (http.html#concurrency).
pub async fn update(
    State(state): Shared,
    Extension(p): Who,
    Path((t, id)): Path<(String, String)>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    interaction::check_known_type(&t)?;
    if t == "AuditEvent" {
        return Err(audit_immutable());
    }
    let grant = p.require(Interaction::Update, &t)?;
    interaction::check_id(&id)?;
    let opts = options(&headers, &pairs(&q));
    let resource = resource_body(&state, &headers, body, &t).await?;
    match resource.get("id").and_then(|v| v.as_str()) {
        Some(body_id) if body_id == id => {}
        Some(body_id) => {
            return Err(ApiError::BadRequest(format!(
                "id '{body_id}' in the body does not match id '{id}' in the URL (R4 http.html#update)"
            )));
        }
        None => {
            return Err(ApiError::BadRequest(
                "the resource has no id; an update needs the id of the URL in the body (R4 http.html#update)".into(),
            ));
        }
    }
    let expected = if_match(&headers)?;
    let ctx = &state.ctx;
    let w = interaction::with_retry(|| {
        let resource = resource.clone();
        let (t, id, grant) = (&t, &id, &grant);
        async move {
            let mut tx = ctx.store.begin().await?;
            if !grant.is_unconditional() && tx.read(t, id).await?.is_some_and(|v| !v.deleted) {
                // The version replaced must be reachable too.
                authz::check_in_tx(tx.as_mut(), t, id, grant).await?;
            }
            let w = interaction::update(ctx, tx.as_mut(), t, id, resource, expected).await?;
            authz::check_in_tx(tx.as_mut(), t, id, grant).await?;
            tx.commit().await?;
            Ok(w)
        }
    })
    .await?;
    let status = if w.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(response::written(&w, status, &ctx.base_url, opts))
}

/// `PUT /fhir/{type}?criteria`: conditional update (R4 http.html#cond-update).
pub async fn conditional_update(
    State(state): Shared,
    Extension(p): Who,
    Path(t): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    interaction::check_known_type(&t)?;
    if t == "AuditEvent" {
        return Err(audit_immutable());
    }
    p.require_unconditional(Interaction::Update, &t, "a conditional update")?;
    let criteria = q.clone().unwrap_or_default();
    let opts = options(&headers, &pairs(&q));
    let resource = resource_body(&state, &headers, body, &t).await?;
    let query = interaction::conditional_query(&t, &criteria)?;
    let expected = if_match(&headers)?;
    let ctx = &state.ctx;
    let body_id = resource
        .get("id")
        .and_then(|v| v.as_str())
        .map(str::to_string);
    let w = interaction::with_retry(|| {
        let resource = resource.clone();
        let (t, criteria, query, body_id) = (&t, &criteria, &query, &body_id);
        async move {
            let mut tx = ctx.store.begin().await?;
            let id = match interaction::conditional_ids(tx.as_mut(), query).await?.as_slice() {
                [] => match body_id {
                    Some(id) => {
                        interaction::check_id(id)?;
                        id.clone()
                    }
                    None => interaction::new_resource_id(),
                },
                [one] => {
                    if let Some(b) = body_id
                        && b != one
                    {
                        return Err(ApiError::BadRequest(format!(
                            "id '{b}' in the body does not match the resource '{one}' found by the criteria"
                        )));
                    }
                    one.clone()
                }
                _ => return Err(interaction::several_matches("update", t, criteria)),
            };
            let w = interaction::update(ctx, tx.as_mut(), t, &id, resource, expected).await?;
            tx.commit().await?;
            Ok(w)
        }
    })
    .await?;
    let status = if w.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(response::written(&w, status, &ctx.base_url, opts))
}

/// `DELETE /fhir/{type}/{id}` (R4 http.html#delete): a logical delete.
pub async fn delete(
    State(state): Shared,
    Extension(p): Who,
    Path((t, id)): Path<(String, String)>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Result<Response> {
    interaction::check_known_type(&t)?;
    if t == "AuditEvent" {
        return Err(audit_immutable());
    }
    let grant = p.require(Interaction::Delete, &t)?;
    let opts = options(&headers, &pairs(&q));
    let ctx = &state.ctx;
    let mut tx = ctx.store.begin().await?;
    if !grant.is_unconditional() && tx.read(&t, &id).await?.is_some_and(|v| !v.deleted) {
        authz::check_in_tx(tx.as_mut(), &t, &id, &grant).await?;
    }
    let w = interaction::delete(tx.as_mut(), &t, &id).await?;
    tx.commit().await?;
    Ok(match w {
        Some(w) => response::deleted(
            &format!("deleted {t}/{id} (version {})", w.version_id),
            Some(w.version_id),
            opts,
        ),
        None => response::deleted(
            &format!("{t}/{id} does not exist or is already deleted; nothing to do"),
            None,
            opts,
        ),
    })
}

/// `DELETE /fhir/{type}?criteria`: conditional delete, single match (R4 http.html#cdelete).
pub async fn conditional_delete(
    State(state): Shared,
    Extension(p): Who,
    Path(t): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Result<Response> {
    interaction::check_known_type(&t)?;
    if t == "AuditEvent" {
        return Err(audit_immutable());
    }
    p.require_unconditional(Interaction::Delete, &t, "a conditional delete")?;
    let criteria = q.clone().unwrap_or_default();
    let opts = options(&headers, &pairs(&q));
    let query = interaction::conditional_query(&t, &criteria)?;
    let ctx = &state.ctx;
    let mut tx = ctx.store.begin().await?;
    let resp = match interaction::conditional_ids(tx.as_mut(), &query)
        .await?
        .as_slice()
    {
        [] => response::deleted(
            &format!("no {t} matches '{criteria}'; nothing to delete"),
            None,
            opts,
        ),
        [one] => {
            let w = interaction::delete(tx.as_mut(), &t, one).await?;
            response::deleted(&format!("deleted {t}/{one}"), w.map(|w| w.version_id), opts)
        }
        _ => return Err(interaction::several_matches("delete", &t, &criteria)),
    };
    tx.commit().await?;
    Ok(resp)
}

/// `GET /fhir/{type}?…`: search (R4 search.html; minimal parameter set for now).
pub async fn search_type(
    State(state): Shared,
    Extension(p): Who,
    Path(t): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Result<Response> {
    run_search(&state, &p, &t, pairs(&q), &headers).await
}

/// The parameters of a `POST … /_search`: the query string's, then the
/// `application/x-www-form-urlencoded` body's (R4 http.html#search).
async fn form_pairs(
    state: &AppState,
    q: &Option<String>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Vec<(String, String)>> {
    let bytes = body_bytes(state, headers, body).await?;
    let mut all = pairs(q);
    all.extend(url::form_urlencoded::parse(&bytes).into_owned());
    Ok(all)
}

/// `POST /fhir/{type}/_search` with a form body (R4 http.html#search).
pub async fn search_type_post(
    State(state): Shared,
    Extension(p): Who,
    Path(t): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    let all = form_pairs(&state, &q, &headers, body).await?;
    run_search(&state, &p, &t, all, &headers).await
}

async fn run_search(
    state: &AppState,
    p: &Principal,
    t: &str,
    pairs: Vec<(String, String)>,
    headers: &HeaderMap,
) -> Result<Response> {
    interaction::check_known_type(t)?;
    let opts: Options = options(headers, &pairs);
    let mut query = search::parse_query(t, &pairs, opts.strict)?;
    authz::authorize_search(p, &mut query)?;
    let path_url = format!("{}/{t}", state.ctx.base_url);
    let mut bundle = interaction::search::search(&state.ctx, &query, &pairs, &path_url).await?;
    authz::filter_includes(&state.ctx, p, &mut bundle).await?;
    Ok(response::fhir_json(StatusCode::OK, &bundle, opts.pretty))
}

/// `GET /fhir?_type=…&…`: system-level search (R4 search.html#searchall).
pub async fn search_system(
    State(state): Shared,
    Extension(p): Who,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Result<Response> {
    run_system_search(&state, &p, pairs(&q), &headers).await
}

/// `POST /fhir/_search` with a form body.
pub async fn search_system_post(
    State(state): Shared,
    Extension(p): Who,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    let all = form_pairs(&state, &q, &headers, body).await?;
    run_system_search(&state, &p, all, &headers).await
}

async fn run_system_search(
    state: &AppState,
    p: &Principal,
    pairs: Vec<(String, String)>,
    headers: &HeaderMap,
) -> Result<Response> {
    let opts: Options = options(headers, &pairs);
    let mut query = search::parse_system_query(&pairs, opts.strict)?;
    authz::authorize_search(p, &mut query)?;
    let mut bundle =
        interaction::search::search(&state.ctx, &query, &pairs, &state.ctx.base_url).await?;
    authz::filter_includes(&state.ctx, p, &mut bundle).await?;
    Ok(response::fhir_json(StatusCode::OK, &bundle, opts.pretty))
}

/// `GET /fhir/{compartment}/{id}/{type}`: compartment search (R4
/// compartmentdefinition.html#search), and `GET /fhir/Patient/{id}/$everything`
/// (R4 patient-operation-everything).
pub async fn compartment_search(
    State(state): Shared,
    Extension(p): Who,
    Path((compartment, id, t)): Path<(String, String, String)>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Result<Response> {
    interaction::check_known_type(&compartment)?;
    let pairs = pairs(&q);
    let opts: Options = options(&headers, &pairs);
    let path_url = format!("{}/{compartment}/{id}/{t}", state.ctx.base_url);
    let query = if t == "$everything" {
        if compartment != "Patient" {
            return Err(ApiError::NotFound(format!(
                "$everything is defined on Patient, not {compartment}"
            )));
        }
        authz::check_instance(&state.ctx, &p, Interaction::Read, "Patient", &id).await?;
        interaction::read::read(&state.ctx, "Patient", &id).await?;
        let mut query = interaction::search::everything_query(&id, &pairs)?;
        // The patient's record, not the access log: AuditEvents (in the Patient
        // compartment through their entity) only when `_type` asks for them.
        if !pairs.iter().any(|(k, _)| k == "_type") {
            query.types.retain(|t| t != "AuditEvent");
        }
        authz::everything_types(&p, &id, &mut query.types);
        let types = query.types.clone();
        query.includes.retain(|i| types.contains(&i.source_type));
        if query.types.is_empty() {
            return Err(ApiError::Forbidden(
                "the access token's scopes allow searching none of the Patient compartment's types"
                    .into(),
            ));
        }
        query
    } else {
        interaction::check_known_type(&t)?;
        let mut query = search::parse_query(&t, &pairs, opts.strict)?;
        let member =
            interaction::search::compartment_param(&compartment, &id, &t).ok_or_else(|| {
                ApiError::NotFound(format!("{t} is not in the {compartment} compartment"))
            })?;
        query.params.push(member);
        authz::authorize_search(&p, &mut query)?;
        query
    };
    let mut bundle = interaction::search::search(&state.ctx, &query, &pairs, &path_url).await?;
    authz::filter_includes(&state.ctx, &p, &mut bundle).await?;
    Ok(response::fhir_json(StatusCode::OK, &bundle, opts.pretty))
}

/// `GET /fhir/_history` (R4 http.html#history, system level).
pub async fn history_system(
    State(state): Shared,
    Extension(p): Who,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Result<Response> {
    p.require_unconditional(Interaction::Search, "*", "system history")?;
    history(&state, None, None, q, &headers).await
}

/// `GET /fhir/{type}/_history`.
pub async fn history_type(
    State(state): Shared,
    Extension(p): Who,
    Path(t): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Result<Response> {
    interaction::check_known_type(&t)?;
    p.require_unconditional(Interaction::Search, &t, "type history")?;
    history(&state, Some(t), None, q, &headers).await
}

/// `GET /fhir/{type}/{id}/_history`.
pub async fn history_instance(
    State(state): Shared,
    Extension(p): Who,
    Path((t, id)): Path<(String, String)>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Result<Response> {
    interaction::check_known_type(&t)?;
    authz::check_instance(&state.ctx, &p, Interaction::Read, &t, &id).await?;
    history(&state, Some(t), Some(id), q, &headers).await
}

async fn history(
    state: &AppState,
    t: Option<String>,
    id: Option<String>,
    q: Option<String>,
    headers: &HeaderMap,
) -> Result<Response> {
    let pairs = pairs(&q);
    let opts = options(headers, &pairs);
    let (query, self_url) = history_query(&state.ctx.base_url, t, id, &pairs)?;
    let bundle = reads::history(&state.ctx, &query, &self_url).await?;
    Ok(response::fhir_json(StatusCode::OK, &bundle, opts.pretty))
}

/// Parses `_count`, `_since` and the paging cursor of a history request (R4
/// http.html#history) and builds the `self` URL (without the cursor).
fn history_query(
    base_url: &str,
    t: Option<String>,
    id: Option<String>,
    pairs: &[(String, String)],
) -> Result<(HistoryQuery, String)> {
    let bad = |name: &str, value: &str, why: &str| {
        ApiError::BadRequest(format!("invalid {name}={value}: {why}"))
    };
    let mut self_url = base_url.to_string();
    for part in [t.as_deref(), id.as_deref()].into_iter().flatten() {
        self_url.push('/');
        self_url.push_str(part);
    }
    self_url.push_str("/_history");
    let mut query = HistoryQuery {
        res_type: t,
        id,
        since: None,
        count: DEFAULT_COUNT,
        before_seq: None,
    };
    let mut kept = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        match k.as_str() {
            "_count" => {
                query.count = v
                    .parse::<usize>()
                    .map_err(|_| bad(k, v, "expected an integer"))?
                    .min(MAX_COUNT)
            }
            "_since" => {
                let dt = FhirDateTime::parse(v).map_err(|e| bad(k, v, &e.to_string()))?;
                query.since = Some(dt.to_range().0);
            }
            CURSOR_PARAM => {
                query.before_seq = Some(v.parse().map_err(|_| bad(k, v, "not a paging cursor"))?);
                continue;
            }
            _ => {}
        }
        kept.append_pair(k, v);
    }
    let qs = kept.finish();
    if !qs.is_empty() {
        self_url.push('?');
        self_url.push_str(&qs);
    }
    Ok((query, self_url))
}
