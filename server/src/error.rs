//! The one place where failures become HTTP: every error of the interaction layer is an
//! [`ApiError`], turned into an OperationOutcome with the status that R4 http.html gives.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use fhir_model::validation::Issue;
use serde_json::{Value, json};

use crate::search::SearchError;
use crate::storage::StoreError;

/// An interaction failure. Each variant has one HTTP status and one OperationOutcome
/// issue type (R4 valueset-issue-type).
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 401: no valid access token (SMART App Launch 2.0; RFC 6750 §3): answered with
    /// `WWW-Authenticate: Bearer realm="MediFlow", error="invalid_token"`.
    #[error("{0}")]
    Unauthorized(String),
    /// 403: the token's scopes do not allow the interaction (R4 security.html).
    #[error("{0}")]
    Forbidden(String),
    /// 400: malformed JSON, resourceType or id not matching the URL, bad parameters.
    #[error("{0}")]
    BadRequest(String),
    /// 404: unknown resource type, id or version.
    #[error("{0}")]
    NotFound(String),
    /// 410: the resource was deleted.
    #[error("{0}")]
    Gone(String),
    /// 405: the method is not supported on this URL.
    #[error("{0}")]
    MethodNotAllowed(String),
    /// 406: a response format we do not produce (only JSON).
    #[error("{0}")]
    NotAcceptable(String),
    /// 409: a version conflict detected at write time.
    #[error("{0}")]
    Conflict(String),
    /// 412: `If-Match` mismatch, or a conditional interaction that matched several.
    #[error("{0}")]
    PreconditionFailed(String),
    /// 413: request body over the configured limit.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// 415: a request body format we do not read (only JSON).
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 422: the resource fails validation against the R4 definitions.
    #[error("resource is invalid: {}", summary(.0))]
    Invalid(Vec<Issue>),
    /// 400 in a transaction/batch entry, with the entry's index; wraps the entry's error.
    #[error("Bundle.entry[{index}]: {source}")]
    InEntry {
        index: usize,
        #[source]
        source: Box<ApiError>,
    },
    /// 500: storage failure.
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn summary(issues: &[Issue]) -> String {
    issues
        .iter()
        .map(|i| i.diagnostics.clone())
        .collect::<Vec<_>>()
        .join("; ")
}

/// The `WWW-Authenticate` challenge of a 401 (RFC 6750 §3).
pub const WWW_AUTHENTICATE: &str = r#"Bearer realm="MediFlow", error="invalid_token""#;

/// The error responses of the OAuth endpoints (`/auth/token`, `/auth/introspect`,
/// `/auth/revoke`): RFC 6749 §5.2, a JSON object `{"error", "error_description"}`, not an
/// OperationOutcome.
#[derive(Debug, thiserror::Error)]
pub enum OAuthError {
    /// 400 `invalid_request`: a required parameter is missing or malformed.
    #[error("{0}")]
    InvalidRequest(String),
    /// 401 `invalid_client`: client authentication failed (unknown client, bad assertion,
    /// replayed `jti`).
    #[error("{0}")]
    InvalidClient(String),
    /// 400 `invalid_grant`.
    #[error("{0}")]
    InvalidGrant(String),
    /// 400 `invalid_scope`: the scope is malformed or nothing of it may be granted.
    #[error("{0}")]
    InvalidScope(String),
    /// 400 `unsupported_grant_type`.
    #[error("{0}")]
    UnsupportedGrantType(String),
    /// 500 `server_error`.
    #[error(transparent)]
    Server(#[from] StoreError),
}

impl OAuthError {
    /// The RFC 6749 §5.2 error code.
    pub fn code(&self) -> &'static str {
        match self {
            OAuthError::InvalidRequest(_) => "invalid_request",
            OAuthError::InvalidClient(_) => "invalid_client",
            OAuthError::InvalidGrant(_) => "invalid_grant",
            OAuthError::InvalidScope(_) => "invalid_scope",
            OAuthError::UnsupportedGrantType(_) => "unsupported_grant_type",
            OAuthError::Server(_) => "server_error",
        }
    }

    /// The HTTP status (RFC 6749 §5.2: 400, or 401 for `invalid_client`).
    pub fn status(&self) -> StatusCode {
        match self {
            OAuthError::InvalidClient(_) => StatusCode::UNAUTHORIZED,
            OAuthError::Server(_) => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        if let OAuthError::Server(e) = &self {
            tracing::error!(error = %e, "token endpoint failed");
        }
        let description = match &self {
            OAuthError::Server(_) => "internal error".to_string(),
            other => other.to_string(),
        };
        let body = json!({"error": self.code(), "error_description": description});
        let mut resp = (self.status(), axum::Json(body)).into_response();
        let h = resp.headers_mut();
        h.insert(
            axum::http::header::CACHE_CONTROL,
            axum::http::HeaderValue::from_static("no-store"),
        );
        h.insert(
            axum::http::header::PRAGMA,
            axum::http::HeaderValue::from_static("no-cache"),
        );
        resp
    }
}

/// The error responses of the admin API (`/admin/…`, `crate::http::admin`): plain JSON
/// `{"error", "error_description"}` as at the OAuth endpoints, not an OperationOutcome
/// (these are not FHIR resources), with the RFC 6750 §3.1 codes for token problems.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// 400 `invalid_request`: malformed JSON, a missing or bad field (the message says
    /// which).
    #[error("{0}")]
    InvalidRequest(String),
    /// 401 `invalid_token` (RFC 6750 §3.1), with `WWW-Authenticate`: no or no valid
    /// bearer token.
    #[error("{0}")]
    InvalidToken(String),
    /// 403 `insufficient_scope` (RFC 6750 §3.1), with `WWW-Authenticate` naming the scope
    /// needed: the token is valid but not an admin's.
    #[error("{0}")]
    InsufficientScope(String),
    /// 404 `not_found`: no such user or client (or no such admin endpoint).
    #[error("{0}")]
    NotFound(String),
    /// 405 `method_not_allowed`.
    #[error("{0}")]
    MethodNotAllowed(String),
    /// 409 `conflict`: the username or client id is taken.
    #[error("{0}")]
    Conflict(String),
    /// 500 `server_error`: a database failure.
    #[error(transparent)]
    Server(#[from] StoreError),
    /// 500 `server_error`: anything else that should not happen.
    #[error("{0}")]
    Internal(String),
}

impl AdminError {
    /// The `error` code of the body.
    pub fn code(&self) -> &'static str {
        match self {
            AdminError::InvalidRequest(_) => "invalid_request",
            AdminError::InvalidToken(_) => "invalid_token",
            AdminError::InsufficientScope(_) => "insufficient_scope",
            AdminError::NotFound(_) => "not_found",
            AdminError::MethodNotAllowed(_) => "method_not_allowed",
            AdminError::Conflict(_) => "conflict",
            AdminError::Server(_) | AdminError::Internal(_) => "server_error",
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            AdminError::InvalidRequest(_) => StatusCode::BAD_REQUEST,
            AdminError::InvalidToken(_) => StatusCode::UNAUTHORIZED,
            AdminError::InsufficientScope(_) => StatusCode::FORBIDDEN,
            AdminError::NotFound(_) => StatusCode::NOT_FOUND,
            AdminError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            AdminError::Conflict(_) => StatusCode::CONFLICT,
            AdminError::Server(_) | AdminError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<crate::auth::accounts::AccountError> for AdminError {
    fn from(e: crate::auth::accounts::AccountError) -> Self {
        use crate::auth::accounts::AccountError;
        match e {
            AccountError::Invalid(m) => AdminError::InvalidRequest(m),
            AccountError::NotFound(m) => AdminError::NotFound(m),
            AccountError::Taken(m) | AccountError::LastAdmin(m) => AdminError::Conflict(m),
            AccountError::Store(e) => AdminError::Server(e),
        }
    }
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        use axum::http::{HeaderValue, header};
        if self.status().is_server_error() {
            tracing::error!(error = %self, "admin request failed");
        }
        let description = match &self {
            AdminError::Server(_) | AdminError::Internal(_) => "internal error".to_string(),
            other => other.to_string(),
        };
        let body = json!({"error": self.code(), "error_description": description});
        let mut resp = (self.status(), axum::Json(body)).into_response();
        let h = resp.headers_mut();
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        match self {
            AdminError::InvalidToken(_) => {
                h.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(WWW_AUTHENTICATE),
                );
            }
            AdminError::InsufficientScope(_) => {
                h.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(WWW_AUTHENTICATE_ADMIN),
                );
            }
            _ => {}
        }
        resp
    }
}

/// The `WWW-Authenticate` challenge of a 403 from the admin API (RFC 6750 §3: the scope
/// needed, `crate::auth::authz::ADMIN_SCOPE`).
pub const WWW_AUTHENTICATE_ADMIN: &str =
    r#"Bearer realm="MediFlow", error="insufficient_scope", scope="system/*.cruds""#;

impl From<SearchError> for ApiError {
    fn from(e: SearchError) -> Self {
        ApiError::BadRequest(e.to_string())
    }
}

impl ApiError {
    /// The HTTP status (R4 http.html#2.21.0.x "Status codes" per interaction).
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Gone(_) => StatusCode::GONE,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::NotAcceptable(_) => StatusCode::NOT_ACCEPTABLE,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PreconditionFailed(_) => StatusCode::PRECONDITION_FAILED,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::InEntry { source, .. } => source.status(),
            ApiError::Store(StoreError::VersionConflict(_)) => StatusCode::CONFLICT,
            ApiError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The OperationOutcome resource describing this error (R4 operationoutcome.html).
    pub fn to_operation_outcome(&self) -> Value {
        let issues: Vec<Value> = match self {
            ApiError::Invalid(issues) => issues.iter().map(Issue::to_json).collect(),
            ApiError::InEntry { index, source } => {
                let mut inner = source.to_operation_outcome();
                let mut issues = inner["issue"].take();
                if let Some(list) = issues.as_array_mut() {
                    for issue in list.iter_mut() {
                        let diag = issue["diagnostics"].as_str().unwrap_or("").to_string();
                        issue["diagnostics"] = json!(format!("Bundle.entry[{index}]: {diag}"));
                        let mut exprs: Vec<Value> = vec![json!(format!("Bundle.entry[{index}]"))];
                        if let Some(old) = issue.get("expression").and_then(Value::as_array) {
                            exprs = old
                                .iter()
                                .filter_map(Value::as_str)
                                .map(|e| json!(format!("Bundle.entry[{index}].resource.{e}")))
                                .collect();
                            exprs.insert(0, json!(format!("Bundle.entry[{index}]")));
                        }
                        issue["expression"] = Value::Array(exprs);
                    }
                }
                return json!({"resourceType": "OperationOutcome", "issue": issues});
            }
            other => vec![json!({
                "severity": if matches!(other, ApiError::Store(StoreError::VersionConflict(_))) { "error" } else if other.status().is_server_error() { "fatal" } else { "error" },
                "code": other.issue_code(),
                "diagnostics": other.to_string(),
            })],
        };
        json!({"resourceType": "OperationOutcome", "issue": issues})
    }

    fn issue_code(&self) -> &'static str {
        match self {
            ApiError::Unauthorized(_) => "login",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::BadRequest(_) => "invalid",
            ApiError::NotFound(_) => "not-found",
            ApiError::Gone(_) => "deleted",
            ApiError::MethodNotAllowed(_) => "not-supported",
            ApiError::NotAcceptable(_) => "not-supported",
            ApiError::UnsupportedMediaType(_) => "not-supported",
            ApiError::Conflict(_) => "conflict",
            ApiError::PreconditionFailed(_) => "conflict",
            ApiError::PayloadTooLarge(_) => "too-costly",
            ApiError::Invalid(_) => "invalid",
            ApiError::InEntry { source, .. } => source.issue_code(),
            ApiError::Store(StoreError::VersionConflict(_)) => "conflict",
            ApiError::Store(_) => "exception",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status().is_server_error() {
            tracing::error!(error = %self, "request failed");
        }
        let mut resp =
            crate::http::response::fhir_json(self.status(), &self.to_operation_outcome(), false);
        if matches!(self, ApiError::Unauthorized(_)) {
            resp.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static(WWW_AUTHENTICATE),
            );
        }
        resp
    }
}
