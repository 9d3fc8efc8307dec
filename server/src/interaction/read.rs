//! Read-side interactions: read, vread (R4 http.html#read, #vread), history
//! (http.html#history, Bundle type `history`) and search (search.html, Bundle type
//! `searchset`).

use serde_json::{Value, json};

use super::Context;
use crate::clock;
use crate::error::ApiError;
use crate::search::{CURSOR_PARAM, SearchQuery};
use crate::storage::{HistoryQuery, StoreError, StoredVersion};

/// Read: the current version. 404 if it never existed, 410 if deleted.
pub async fn read(ctx: &Context, res_type: &str, id: &str) -> Result<StoredVersion, ApiError> {
    match ctx.store.read(res_type, id).await? {
        None => Err(ApiError::NotFound(format!("{res_type}/{id} is not known"))),
        Some(v) if v.deleted => Err(ApiError::Gone(format!(
            "{res_type}/{id} was deleted (version {})",
            v.version_id
        ))),
        Some(v) => Ok(v),
    }
}

/// Vread: one version. 404 if unknown, 410 if that version is a delete.
pub async fn vread(
    ctx: &Context,
    res_type: &str,
    id: &str,
    version: &str,
) -> Result<StoredVersion, ApiError> {
    let not_found =
        || ApiError::NotFound(format!("{res_type}/{id}/_history/{version} is not known"));
    let version_id: i64 = version.parse().map_err(|_| not_found())?;
    match ctx.store.vread(res_type, id, version_id).await? {
        None => Err(not_found()),
        Some(v) if v.deleted => Err(ApiError::Gone(format!(
            "{res_type}/{id}/_history/{version} is a delete"
        ))),
        Some(v) => Ok(v),
    }
}

/// Parses stored content back into JSON.
pub fn content_json(v: &StoredVersion) -> Result<Value, ApiError> {
    match &v.content {
        Some(text) => serde_json::from_str(text)
            .map_err(|e| ApiError::Store(StoreError::Corrupt(e.to_string()))),
        None => Ok(Value::Null),
    }
}

fn bundle_shell(kind: &str) -> Value {
    json!({
        "resourceType": "Bundle",
        "id": uuid::Uuid::new_v4().to_string(),
        "meta": {"lastUpdated": clock::format_instant(clock::now_micros())},
        "type": kind,
    })
}

/// History as a Bundle of type `history` (R4 http.html#history): newest first; each entry
/// has `fullUrl`, `resource` (absent for deletes), `request` and `response`.
/// `self_url` is the request URL without paging; `next` links use a `_cursor` on `seq`.
pub async fn history(ctx: &Context, q: &HistoryQuery, self_url: &str) -> Result<Value, ApiError> {
    if let (Some(t), Some(id)) = (&q.res_type, &q.id)
        && ctx.store.read(t, id).await?.is_none()
    {
        return Err(ApiError::NotFound(format!("{t}/{id} is not known")));
    }
    let mut rows = ctx.store.history(q).await?;
    let has_more = rows.len() > q.count;
    rows.truncate(q.count);
    let mut entries = Vec::with_capacity(rows.len());
    for v in &rows {
        let url = format!("{}/{}/{}", ctx.base_url, v.res_type, v.id);
        let (status, req_url) = match v.method.as_str() {
            "POST" => ("201 Created", v.res_type.clone()),
            "DELETE" => ("204 No Content", format!("{}/{}", v.res_type, v.id)),
            _ if v.version_id == 1 => ("201 Created", format!("{}/{}", v.res_type, v.id)),
            _ => ("200 OK", format!("{}/{}", v.res_type, v.id)),
        };
        let mut entry = json!({
            "fullUrl": url,
            "request": {"method": v.method, "url": req_url},
            "response": {
                "status": status,
                "etag": format!("W/\"{}\"", v.version_id),
                "lastModified": clock::format_instant(v.last_updated),
            },
        });
        if !v.deleted {
            entry["resource"] = content_json(v)?;
        }
        entries.push(entry);
    }
    let mut bundle = bundle_shell("history");
    let mut links = vec![json!({"relation": "self", "url": self_url})];
    if has_more && let Some(last) = rows.last() {
        let sep = if self_url.contains('?') { '&' } else { '?' };
        links.push(json!({"relation": "next", "url": format!("{self_url}{sep}{CURSOR_PARAM}={}", last.seq)}));
    }
    bundle["link"] = Value::Array(links);
    bundle["entry"] = Value::Array(entries);
    Ok(bundle)
}

/// Search as a Bundle of type `searchset` (R4 search.html#return): matches in id order,
/// `search.mode = match`; ignored parameters reported in an OperationOutcome entry with
/// `search.mode = outcome`; `self` and `next` links.
/// `pairs` are the request's parameters (to rebuild links), `path_url` is `[base]/Type`.
pub async fn search(
    ctx: &Context,
    q: &SearchQuery,
    pairs: &[(String, String)],
    path_url: &str,
) -> Result<Value, ApiError> {
    let page = ctx.store.search(q).await?;
    let mut entries = Vec::with_capacity(page.matches.len() + 1);
    for v in &page.matches {
        entries.push(json!({
            "fullUrl": format!("{}/{}/{}", ctx.base_url, v.res_type, v.id),
            "resource": content_json(v)?,
            "search": {"mode": "match"},
        }));
    }
    if !q.ignored.is_empty() {
        entries.push(json!({
            "resource": {
                "resourceType": "OperationOutcome",
                "issue": q.ignored.iter().map(|p| json!({
                    "severity": "warning",
                    "code": "not-supported",
                    "diagnostics": format!("search parameter '{p}' is not supported on {} and was ignored", q.res_type),
                })).collect::<Vec<_>>(),
            },
            "search": {"mode": "outcome"},
        }));
    }
    let kept: Vec<&(String, String)> = pairs.iter().filter(|(k, _)| k != CURSOR_PARAM).collect();
    let encode = |extra: Option<(&str, &str)>| {
        let mut ser = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in &kept {
            ser.append_pair(k, v);
        }
        if let Some((k, v)) = extra {
            ser.append_pair(k, v);
        }
        let qs = ser.finish();
        if qs.is_empty() {
            path_url.to_string()
        } else {
            format!("{path_url}?{qs}")
        }
    };
    let self_cursor = q.after_id.as_deref().map(|c| (CURSOR_PARAM, c));
    let mut links = vec![json!({"relation": "self", "url": encode(self_cursor)})];
    if page.has_more
        && let Some(last) = page.matches.last()
    {
        links.push(json!({"relation": "next", "url": encode(Some((CURSOR_PARAM, &last.id)))}));
    }
    let mut bundle = bundle_shell("searchset");
    bundle["link"] = Value::Array(links);
    bundle["entry"] = Value::Array(entries);
    Ok(bundle)
}
