//! `GET /fhir/$hl7-messages`: the HL7 v2 messages received over MLLP, for admins (issue 4).
//!
//! Query parameters: `status` (`received`, `processed`, `error`), `_count` (default 50, at
//! most 1000), `before` (only ids below this one: the next page starts at the last id
//! shown), `id` (one message in full, with its raw text and ACK). The answer is plain JSON
//! (`application/json`, not a FHIR resource):
//! `{"count": n, "messages": [{"id", "received", "sender": {"application" (MSH-3),
//! "facility" (MSH-4)}, "controlId" (MSH-10), "type" (MSH-9), "version" (MSH-12), "status",
//! "reason", "processed"}], "next": "…?before=ID"}`.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use serde_json::{Value, json};

use super::AppState;
use crate::error::ApiError;
use crate::mllp::admin::{DEFAULT_COUNT, MAX_COUNT, record_json, summary_json};
use crate::storage::hl7_messages::{Hl7ListQuery, Hl7Status};

fn json_response(value: &Value, pretty: bool) -> Response {
    let text = if pretty {
        serde_json::to_string_pretty(value)
    } else {
        serde_json::to_string(value)
    };
    let mut resp = Response::new(Body::from(text.unwrap_or_default()));
    *resp.status_mut() = StatusCode::OK;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

fn int_param(name: &str, value: &str) -> Result<i64, ApiError> {
    value
        .parse()
        .map_err(|_| ApiError::BadRequest(format!("{name}={value} is not a number")))
}

/// `GET /fhir/$hl7-messages`: stored HL7 v2 message summaries, newest first, or one message
/// in full with `id=N`.
pub async fn list(
    State(state): State<Arc<AppState>>,
    axum::Extension(p): axum::Extension<Arc<crate::auth::Principal>>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    // Raw HL7 messages carry data of every type: admins (system-wide search) only.
    p.require_unconditional(
        mediflow_auth::Interaction::Search,
        "*",
        "listing HL7 v2 messages",
    )?;
    let pairs: Vec<(String, String)> = q
        .as_deref()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
    let mut query = Hl7ListQuery {
        status: None,
        count: DEFAULT_COUNT,
        before: None,
    };
    let mut pretty = false;
    for (k, v) in &pairs {
        match k.as_str() {
            "status" => {
                query.status = Some(
                    v.parse::<Hl7Status>()
                        .map_err(|e| ApiError::BadRequest(e.to_string()))?,
                )
            }
            "_count" => query.count = int_param(k, v)?.clamp(1, MAX_COUNT as i64) as usize,
            "before" => query.before = Some(int_param(k, v)?),
            "_pretty" => pretty = v == "true",
            "id" => {
                let id = int_param(k, v)?;
                let record =
                    state.ctx.store.hl7_get(id).await?.ok_or_else(|| {
                        ApiError::NotFound(format!("no HL7 message with id {id}"))
                    })?;
                return Ok(json_response(&record_json(&record), pretty));
            }
            "_format" => {}
            other => {
                return Err(ApiError::BadRequest(format!(
                    "unknown parameter '{other}' for $hl7-messages (status, _count, before, id)"
                )));
            }
        }
    }
    let rows = state.ctx.store.hl7_list(&query).await?;
    let mut body = json!({
        "count": rows.len(),
        "messages": rows.iter().map(summary_json).collect::<Vec<_>>(),
    });
    if rows.len() == query.count
        && let Some(last) = rows.last()
    {
        let mut next = format!(
            "{}/$hl7-messages?_count={}&before={}",
            state.ctx.base_url, query.count, last.id
        );
        if let Some(s) = query.status {
            next.push_str(&format!("&status={s}"));
        }
        body["next"] = json!(next);
    }
    Ok(json_response(&body, pretty))
}
