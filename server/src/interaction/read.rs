//! Read-side interactions: read, vread (R4 http.html#read, #vread) and history
//! (http.html#history, Bundle type `history`). Search is in [`super::search`].

use serde_json::{Value, json};

use super::Context;
use crate::clock;
use crate::error::ApiError;
use crate::search::CURSOR_PARAM;
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
