//! The HTTP edge: routes of the FHIR RESTful API (R4 http.html) under `/fhir`, request
//! parsing (body limit, content negotiation, `Prefer`, `_format`, `_pretty`), one log line
//! per request, and errors rendered as OperationOutcome (via `crate::error`).
//!
//! Handlers live in [`handlers`]; they parse, call `crate::interaction`, and render with
//! [`response`]. Outside `/fhir`: the OAuth endpoints ([`oauth`]) and the admin API for
//! users and clients ([`admin`], `/admin/…`, plain JSON).

pub mod admin;
mod authorize;
mod handlers;
mod hl7_messages;
pub mod oauth;
pub mod response;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, any, get, post};

use crate::auth::Security;
use crate::auth::audit::{self, AuditRecord, Auditor, EventKind};
use crate::error::ApiError;
use crate::interaction::Context;
use response::{Options, Return};

/// Shared state of all handlers.
pub struct AppState {
    /// Store, validator, base URL.
    pub ctx: Context,
    /// Largest accepted request body in bytes (413 above it).
    pub max_body_bytes: usize,
    /// Keys, token verification, and whether tokens are required (`crate::auth`).
    pub security: Arc<Security>,
    /// The AuditEvent writer (`crate::auth::audit`).
    pub auditor: Auditor,
}

/// Set by a handler on its response to refine the audit record (the Bundle type of a
/// `POST /fhir`).
#[derive(Debug, Clone, Copy)]
pub struct AuditSubtype(pub &'static str);

/// 405 with an OperationOutcome for any method a route does not support.
async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::MethodNotAllowed(format!(
        "{} is not supported on {}",
        req.method(),
        req.uri().path()
    ))
}

/// 404 with an OperationOutcome for any path outside the API.
async fn not_found(req: Request) -> ApiError {
    ApiError::NotFound(format!("no FHIR endpoint at {}", req.uri().path()))
}

fn with_405(r: MethodRouter<Arc<AppState>>) -> MethodRouter<Arc<AppState>> {
    r.fallback(method_not_allowed)
}

/// [`with_405`] for the admin API: the 405 is JSON like its other errors.
fn admin_405(r: MethodRouter<Arc<AppState>>) -> MethodRouter<Arc<AppState>> {
    r.fallback(admin::method_not_allowed)
}

/// The application router: every FHIR route under `/fhir`, the OAuth endpoints under
/// `/auth`, the admin API under `/admin`.
pub fn router(state: Arc<AppState>) -> Router {
    use handlers::*;
    Router::new()
        .route("/fhir/metadata", with_405(get(capabilities)))
        .route(
            "/.well-known/smart-configuration",
            with_405(get(oauth::smart_configuration)),
        )
        .route(
            "/fhir/.well-known/smart-configuration",
            with_405(get(oauth::smart_configuration)),
        )
        .route(
            "/.well-known/openid-configuration",
            with_405(get(oauth::openid_configuration)),
        )
        .route("/auth/jwks", with_405(get(oauth::jwks)))
        .route("/auth/token", with_405(post(oauth::token)))
        .route(
            "/auth/authorize",
            with_405(get(authorize::authorize_get).post(authorize::authorize_post)),
        )
        .route("/auth/launch", with_405(post(authorize::create_launch)))
        .route("/auth/introspect", with_405(post(oauth::introspect)))
        .route("/auth/revoke", with_405(post(oauth::revoke)))
        .route(
            "/admin/users",
            admin_405(get(admin::list_users).post(admin::create_user)),
        )
        .route(
            "/admin/users/{username}",
            admin_405(
                get(admin::get_user)
                    .put(admin::update_user)
                    .delete(admin::delete_user),
            ),
        )
        .route(
            "/admin/clients",
            admin_405(get(admin::list_clients).post(admin::create_client)),
        )
        .route(
            "/admin/clients/{client_id}",
            admin_405(
                get(admin::get_client)
                    .put(admin::update_client)
                    .delete(admin::delete_client),
            ),
        )
        .route("/admin", any(admin::not_found))
        .route("/admin/{*rest}", any(admin::not_found))
        .route("/fhir", with_405(get(search_system).post(bundle)))
        .route("/fhir/", with_405(get(search_system).post(bundle)))
        .route("/fhir/_search", with_405(post(search_system_post)))
        .route("/fhir/_history", with_405(get(history_system)))
        .route("/fhir/$hl7-messages", with_405(get(hl7_messages::list)))
        .route(
            "/fhir/{res_type}",
            with_405(
                get(search_type)
                    .post(create)
                    .put(conditional_update)
                    .delete(conditional_delete),
            ),
        )
        .route("/fhir/{res_type}/_search", with_405(post(search_type_post)))
        .route("/fhir/{res_type}/_history", with_405(get(history_type)))
        .route(
            "/fhir/{res_type}/{id}",
            with_405(get(read).put(update).delete(delete)),
        )
        .route(
            "/fhir/{res_type}/{id}/_history",
            with_405(get(history_instance)),
        )
        .route("/fhir/{res_type}/{id}/_history/{vid}", with_405(get(vread)))
        .route(
            "/fhir/{res_type}/{id}/{compartment_type}",
            with_405(get(compartment_search)),
        )
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state)
        .layer(middleware::from_fn(log_request))
        .layer(middleware::from_fn(negotiate))
}

/// Authentication and audit of every FHIR request (issue 5): outside `/fhir`, and for
/// `/fhir/metadata` and the SMART configuration, nothing happens. Otherwise the bearer
/// token is verified ([`Security::authenticate`]; 401 with `WWW-Authenticate` when it is
/// missing or invalid), the [`Principal`] goes into the request extensions for the
/// handlers' scope checks, and the outcome is audited (one AuditEvent per request,
/// refusals included).
async fn guard(State(state): State<Arc<AppState>>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let Some((subtype, action, entity, patient)) = audit::classify(req.method().as_str(), path)
    else {
        return next.run(req).await;
    };
    let query = req.uri().query().map(str::to_string);
    let ip = req
        .extensions()
        .get::<ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip().to_string());
    let user_agent = header_str(req.headers(), header::USER_AGENT).map(str::to_string);
    let principal = state.security.authenticate(req.headers()).await;
    let (resp, principal) = match principal {
        Ok(p) => {
            req.extensions_mut().insert(p.clone());
            (next.run(req).await, Some(p))
        }
        Err(e) => (ApiError::Unauthorized(e.to_string()).into_response(), None),
    };
    let subtype = resp
        .extensions()
        .get::<AuditSubtype>()
        .map_or(subtype, |s| s.0);
    let mut record = AuditRecord::new(
        EventKind::Rest,
        subtype,
        action,
        resp.status().as_u16(),
        principal.as_deref(),
    );
    record.ip = ip;
    record.user_agent = user_agent;
    record.entities.extend(entity.or_else(|| {
        // The Location of a create: [base]/Type/id/_history/n.
        let loc = header_str(resp.headers(), header::LOCATION)?;
        let rel = loc
            .strip_prefix(&state.ctx.base_url)?
            .trim_start_matches('/');
        let mut parts = rel.split('/');
        Some(format!("{}/{}", parts.next()?, parts.next()?))
    }));
    if let Some(p) = patient {
        record.patient = Some(p);
    } else if record.patient.is_none() {
        record.patient = query.as_deref().and_then(audit::patient_in_query);
    }
    if subtype.starts_with("search") {
        record.query = query;
    }
    state.auditor.record(record).await;
    resp
}

/// One structured log line per request: method, path, status, duration (tracing).
async fn log_request(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let start = Instant::now();
    let resp = next.run(req).await;
    tracing::info!(
        %method,
        %path,
        status = resp.status().as_u16(),
        duration_ms = start.elapsed().as_secs_f64() * 1000.0,
        "request"
    );
    resp
}

/// Content negotiation (R4 http.html#mime-type): JSON only. A `_format` or `Accept` that
/// excludes JSON gets 406; a request body declared as anything but JSON gets 415.
async fn negotiate(req: Request, next: Next) -> Response {
    let query = req.uri().query().unwrap_or("");
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        if k == "_format" && !is_json_format(&v) {
            return ApiError::NotAcceptable(format!(
                "_format={v} is not supported: this server speaks FHIR JSON only"
            ))
            .into_response();
        }
    }
    if let Some(accept) = header_str(req.headers(), header::ACCEPT)
        && !accepts_json(accept)
    {
        return ApiError::NotAcceptable(format!(
            "Accept: {accept} is not supported: this server speaks FHIR JSON only"
        ))
        .into_response();
    }
    if let Some(ct) = header_str(req.headers(), header::CONTENT_TYPE) {
        let ct = ct.to_ascii_lowercase();
        let is_form = ct.starts_with("application/x-www-form-urlencoded");
        if !ct.contains("json") && !is_form {
            return ApiError::UnsupportedMediaType(format!(
                "Content-Type: {ct} is not supported: send application/fhir+json"
            ))
            .into_response();
        }
    }
    next.run(req).await
}

fn is_json_format(v: &str) -> bool {
    matches!(
        v,
        "json" | "application/json" | "application/fhir+json" | "application/json+fhir"
    ) || v.starts_with("application/fhir+json")
}

fn accepts_json(accept: &str) -> bool {
    accept.split(',').any(|part| {
        let media = part.split(';').next().unwrap_or("").trim();
        media.contains("json") || media == "*/*" || media == "application/*" || media.is_empty()
    })
}

pub(crate) fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Reads `_pretty` and `Prefer` (`return=`, `handling=`) into [`Options`].
pub(crate) fn options(headers: &HeaderMap, pairs: &[(String, String)]) -> Options {
    let mut opts = Options {
        pretty: pairs.iter().any(|(k, v)| k == "_pretty" && v == "true"),
        ..Options::default()
    };
    if let Some(prefer) = header_str(headers, header::HeaderName::from_static("prefer")) {
        for part in prefer.split([',', ';']) {
            match part.trim() {
                "return=minimal" => opts.ret = Return::Minimal,
                "return=representation" => opts.ret = Return::Representation,
                "return=OperationOutcome" => opts.ret = Return::OperationOutcome,
                "handling=strict" => opts.strict = true,
                _ => {}
            }
        }
    }
    opts
}
