//! Building FHIR HTTP responses: `Content-Type: application/fhir+json; charset=utf-8`, the
//! version headers of R4 http.html#versioning (`ETag`, `Last-Modified`, `Location`) and the
//! `Prefer: return=` forms of http.html#ops.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use serde_json::{Value, json};

use crate::clock;
use crate::interaction::Written;
use crate::storage::StoredVersion;

/// The FHIR JSON media type (R4 http.html#mime-type).
pub const FHIR_JSON: &str = "application/fhir+json; charset=utf-8";

/// What the client asked for with `Prefer: return=` (R4 http.html#ops).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Return {
    Minimal,
    #[default]
    Representation,
    OperationOutcome,
}

/// Response options taken from the request: `_pretty`, `Prefer`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    pub pretty: bool,
    pub ret: Return,
    /// `Prefer: handling=strict` (R4 search.html#errors).
    pub strict: bool,
}

fn build(status: StatusCode, body: Body) -> Response {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON));
    resp
}

/// A JSON body, pretty-printed when asked (`_pretty=true`).
pub fn fhir_json(status: StatusCode, value: &Value, pretty: bool) -> Response {
    let text = if pretty {
        serde_json::to_string_pretty(value)
    } else {
        serde_json::to_string(value)
    };
    build(status, Body::from(text.unwrap_or_default()))
}

/// Stored JSON text as the body: sent as stored unless `_pretty` asks for re-formatting.
fn stored_text(status: StatusCode, text: &str, pretty: bool) -> Response {
    if pretty && let Ok(v) = serde_json::from_str::<Value>(text) {
        return fhir_json(status, &v, true);
    }
    build(status, Body::from(text.to_string()))
}

fn version_headers(headers: &mut HeaderMap, version_id: i64, last_updated: i64) {
    if let Ok(v) = HeaderValue::from_str(&format!("W/\"{version_id}\"")) {
        headers.insert(header::ETAG, v);
    }
    if let Ok(v) = HeaderValue::from_str(&clock::format_http_date(last_updated)) {
        headers.insert(header::LAST_MODIFIED, v);
    }
}

/// A read or vread: 200 with the resource, `ETag` and `Last-Modified`.
pub fn read(v: &StoredVersion, opts: Options) -> Response {
    let mut resp = stored_text(
        StatusCode::OK,
        v.content.as_deref().unwrap_or("{}"),
        opts.pretty,
    );
    version_headers(resp.headers_mut(), v.version_id, v.last_updated);
    resp
}

/// The result of a create or update: 201 or 200 (or `status` given), `Location`, `ETag`,
/// `Last-Modified`, and the body that `Prefer: return=` asks for.
pub fn written(w: &Written, status: StatusCode, base_url: &str, opts: Options) -> Response {
    let mut resp = match opts.ret {
        Return::Representation => {
            stored_text(status, w.content.as_deref().unwrap_or("{}"), opts.pretty)
        }
        Return::Minimal => {
            let mut r = Response::new(Body::empty());
            *r.status_mut() = status;
            r
        }
        Return::OperationOutcome => fhir_json(
            status,
            &information(&format!(
                "{} {}/{} version {}",
                if w.created { "created" } else { "updated" },
                w.res_type,
                w.id,
                w.version_id
            )),
            opts.pretty,
        ),
    };
    if let Ok(loc) = HeaderValue::from_str(&w.location(base_url)) {
        resp.headers_mut().insert(header::LOCATION, loc.clone());
        if status == StatusCode::CREATED {
            resp.headers_mut().insert(header::CONTENT_LOCATION, loc);
        }
    }
    version_headers(resp.headers_mut(), w.version_id, w.last_updated);
    resp
}

/// An informational OperationOutcome (e.g. the body of a delete).
pub fn information(message: &str) -> Value {
    json!({
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "information", "code": "informational", "diagnostics": message}],
    })
}

/// A delete's response: 200 with an OperationOutcome, or 204 for `Prefer: return=minimal`
/// (R4 http.html#delete).
pub fn deleted(message: &str, version: Option<i64>, opts: Options) -> Response {
    let mut resp = if opts.ret == Return::Minimal {
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::NO_CONTENT;
        r
    } else {
        fhir_json(StatusCode::OK, &information(message), opts.pretty)
    };
    if let Some(v) = version
        && let Ok(tag) = HeaderValue::from_str(&format!("W/\"{v}\""))
    {
        resp.headers_mut().insert(header::ETAG, tag);
    }
    resp
}
