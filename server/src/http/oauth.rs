//! The authorization-server endpoints (issue 5), outside `/fhir` authentication:
//!
//! * `GET /.well-known/smart-configuration` (also under `/fhir/.well-known/`): SMART App
//!   Launch 2.0 § "SMART configuration" (conformance.html).
//! * `GET /auth/jwks`: our public keys, current and retired (RFC 7517 §5).
//! * `POST /auth/token`: SMART Backend Services (backend-services.html), the
//!   `client_credentials` grant (RFC 6749 §4.4) with `private_key_jwt` client
//!   authentication (RFC 7523 §2.2, SMART client-confidential-asymmetric.html).
//! * `POST /auth/introspect` (RFC 7662) and `POST /auth/revoke` (RFC 7009), for a client
//!   authenticated the same way or a bearer token allowed to search every type (admin).
//!
//! Errors follow RFC 6749 §5.2 ([`OAuthError`]).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use mediflow_auth::tokens::{self, ACCESS_TOKEN_LIFETIME_SECS};
use mediflow_auth::{Interaction, ScopeContext, ScopeSet};
use serde_json::{Value, json};

use super::AppState;
use crate::auth::audit::{AuditRecord, EventKind};
use crate::auth::{Principal, now_secs};
use crate::error::OAuthError;

/// `client_assertion_type` of private_key_jwt (RFC 7523 §2.2).
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

type Shared = State<Arc<AppState>>;

/// `GET /.well-known/smart-configuration`.
pub async fn smart_configuration(State(state): Shared) -> Response {
    let s = &state.security;
    let iss = &s.issuer;
    let doc = json!({
        "issuer": iss,
        "jwks_uri": format!("{iss}/auth/jwks"),
        "token_endpoint": s.token_url,
        "introspection_endpoint": format!("{iss}/auth/introspect"),
        "revocation_endpoint": format!("{iss}/auth/revoke"),
        "authorization_endpoint": format!("{iss}/auth/authorize"),
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
        // "none": public apps (PKCE protects their codes); private_key_jwt: confidential
        // apps and Backend Services.
        "token_endpoint_auth_methods_supported": ["private_key_jwt", "none"],
        "token_endpoint_auth_signing_alg_values_supported": ["RS384", "ES384"],
        "scopes_supported": [
            "openid", "fhirUser", "profile", "launch", "launch/patient", "launch/encounter",
            "offline_access", "online_access",
            "patient/*.rs", "patient/*.cruds", "patient/*.read", "patient/*.write",
            "user/*.rs", "user/*.cruds", "user/*.read", "user/*.write",
            "system/*.rs", "system/*.cruds", "system/*.read", "system/*.write", "system/*.*",
        ],
        "response_types_supported": ["code"],
        "capabilities": [
            "launch-ehr", "launch-standalone", "authorize-post",
            "client-public", "client-confidential-asymmetric",
            "sso-openid-connect", "context-ehr-patient", "context-ehr-encounter",
            "context-standalone-patient", "permission-offline", "permission-online",
            "permission-patient", "permission-user", "permission-v1", "permission-v2",
        ],
        "code_challenge_methods_supported": ["S256"],
    });
    json_no_store(doc)
}

/// `GET /.well-known/openid-configuration` (OpenID Connect Discovery 1.0 §3): what an
/// OIDC client needs to verify our id_tokens (SMART capability `sso-openid-connect`).
pub async fn openid_configuration(State(state): Shared) -> Response {
    let iss = &state.security.issuer;
    json_no_store(json!({
        "issuer": iss,
        "authorization_endpoint": format!("{iss}/auth/authorize"),
        "token_endpoint": state.security.token_url,
        "jwks_uri": format!("{iss}/auth/jwks"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256", "ES384"],
        "scopes_supported": ["openid", "fhirUser", "profile", "offline_access", "online_access"],
        "claims_supported": ["iss", "sub", "aud", "exp", "iat", "auth_time", "nonce", "fhirUser"],
        "token_endpoint_auth_methods_supported": ["private_key_jwt", "none"],
        "code_challenge_methods_supported": ["S256"],
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
    }))
}

/// `GET /auth/jwks`.
pub async fn jwks(State(state): Shared) -> Response {
    let mut resp = Json(state.security.jwks_json()).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/jwk-set+json"),
    );
    resp
}

fn json_no_store(v: Value) -> Response {
    let mut resp = Json(v).into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// The pairs of an `application/x-www-form-urlencoded` body.
pub(super) fn form(body: &Bytes) -> Vec<(String, String)> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

/// The first non-empty value of `name`.
pub(super) fn param<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
}

/// Authenticates the client of a token, introspection or revocation request by its
/// `client_assertion` (private_key_jwt): the registered client's JWK Set (inline or
/// fetched from its URL) verifies it, and its `jti` has not been used before. Returns the
/// client id and its registered scopes.
pub(super) async fn authenticate_client(
    state: &AppState,
    pairs: &[(String, String)],
) -> Result<(String, String), OAuthError> {
    let s = &state.security;
    match param(pairs, "client_assertion_type") {
        Some(JWT_BEARER) => {}
        Some(other) => {
            return Err(OAuthError::InvalidClient(format!(
                "client_assertion_type {other} is not supported: use {JWT_BEARER}"
            )));
        }
        None => {
            return Err(OAuthError::InvalidClient(
                "client authentication needs client_assertion_type and client_assertion \
                 (private_key_jwt)"
                    .into(),
            ));
        }
    }
    let assertion = param(pairs, "client_assertion")
        .ok_or_else(|| OAuthError::InvalidClient("client_assertion is missing".into()))?;
    let client_id = match (
        param(pairs, "client_id"),
        tokens::unverified_issuer(assertion),
    ) {
        (Some(id), _) => id.to_string(),
        (None, Some(iss)) => iss,
        (None, None) => {
            return Err(OAuthError::InvalidClient(
                "the client assertion has no iss".into(),
            ));
        }
    };
    let client = state
        .ctx
        .store
        .auth_client(&client_id)
        .await?
        .ok_or_else(|| OAuthError::InvalidClient(format!("unknown client {client_id:?}")))?;
    let jwks: Value = match (&client.jwks, &client.jwks_url) {
        (Some(text), _) => serde_json::from_str(text)
            .map_err(|_| OAuthError::InvalidClient("the client's JWK Set is unusable".into()))?,
        (None, Some(url)) => fetch_jwks(url).await?,
        (None, None) => {
            return Err(OAuthError::InvalidClient(
                "the client has no registered keys".into(),
            ));
        }
    };
    let now = now_secs();
    let verified = tokens::verify_client_assertion(assertion, &jwks, &client_id, &s.token_url, now)
        .map_err(|e| OAuthError::InvalidClient(format!("client assertion refused: {e}")))?;
    if !state
        .ctx
        .store
        .auth_use_jti(&client_id, &verified.jti, verified.exp, now)
        .await?
    {
        return Err(OAuthError::InvalidClient(
            "client assertion refused: its jti was used before (replay)".into(),
        ));
    }
    Ok((client.client_id, client.scopes))
}

async fn fetch_jwks(url: &str) -> Result<Value, OAuthError> {
    let fail = |e: String| OAuthError::InvalidClient(format!("fetching the client's JWK Set: {e}"));
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(5))
        .build()
        .map_err(|e| fail(e.to_string()))?;
    let resp = client
        .get(url)
        .send()
        .await
        .map_err(|e| fail(e.to_string()))?;
    if !resp.status().is_success() {
        return Err(fail(format!("HTTP {}", resp.status())));
    }
    resp.json().await.map_err(|e| fail(e.to_string()))
}

fn peer(connect: &Option<Extension<ConnectInfo<SocketAddr>>>) -> Option<String> {
    connect.as_ref().map(|c| c.0.0.ip().to_string())
}

/// `POST /auth/token`: `grant_type=client_credentials` (SMART Backend Services). The
/// grant is the requested scope ∩ the client's registered scopes, `system/` scopes only;
/// the access token lives [`ACCESS_TOKEN_LIFETIME_SECS`] seconds.
pub async fn token(
    State(state): Shared,
    connect: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let pairs = form(&body);
    let result = grant(&state, &pairs).await;
    let mut record = AuditRecord::new(EventKind::Login, "login", "E", 200, None);
    record.ip = peer(&connect);
    record.user_agent = super::header_str(&headers, header::USER_AGENT).map(str::to_string);
    let resp = match result {
        Ok((client_id, body)) => {
            record.client_id = client_id.clone();
            record.sub = client_id;
            json_no_store(body)
        }
        Err(e) => {
            record.status = e.status().as_u16();
            if let Some(iss) = param(&pairs, "client_assertion").and_then(tokens::unverified_issuer)
            {
                record.client_id = iss;
            }
            e.into_response()
        }
    };
    state.auditor.record(record).await;
    resp
}

async fn grant(
    state: &AppState,
    pairs: &[(String, String)],
) -> Result<(String, Value), OAuthError> {
    match param(pairs, "grant_type") {
        Some("client_credentials") => {}
        Some("authorization_code") => return super::authorize::token_from_code(state, pairs).await,
        Some("refresh_token") => return super::authorize::token_from_refresh(state, pairs).await,
        Some(other) => {
            return Err(OAuthError::UnsupportedGrantType(format!(
                "grant_type {other} is not supported (authorization_code, refresh_token, \
                 client_credentials)"
            )));
        }
        None => return Err(OAuthError::InvalidRequest("grant_type is missing".into())),
    }
    let (client_id, allowed) = authenticate_client(state, pairs).await?;
    let requested =
        param(pairs, "scope").ok_or_else(|| OAuthError::InvalidScope("scope is missing".into()))?;
    let requested =
        ScopeSet::parse(requested).map_err(|e| OAuthError::InvalidScope(format!("scope: {e}")))?;
    let allowed = ScopeSet::parse_lenient(&allowed);
    let mut granted = requested.intersect(&allowed);
    granted
        .resources
        .retain(|r| r.context == ScopeContext::System);
    let granted = ScopeSet {
        resources: granted.resources,
        ..ScopeSet::default()
    };
    if granted.has_no_resource_access() {
        return Err(OAuthError::InvalidScope(format!(
            "none of the requested scopes may be granted to {client_id} (Backend Services \
             grant system/ scopes within the client's registration)"
        )));
    }
    let now = now_secs();
    let (token, _) = state
        .security
        .mint(&client_id, &client_id, &granted, None, now)
        .map_err(|e| OAuthError::InvalidRequest(e.to_string()))?;
    Ok((
        client_id,
        json!({
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": ACCESS_TOKEN_LIFETIME_SECS,
            "scope": granted.to_string(),
        }),
    ))
}

/// Who may introspect or revoke: a client authenticated by assertion, or the bearer of an
/// access token allowed to search every type.
async fn caller(
    state: &AppState,
    headers: &HeaderMap,
    pairs: &[(String, String)],
) -> Result<(String, bool), OAuthError> {
    if param(pairs, "client_assertion").is_some() {
        let (client_id, _) = authenticate_client(state, pairs).await?;
        return Ok((client_id, false));
    }
    let p: Arc<Principal> = state
        .security
        .authenticate(headers)
        .await
        .map_err(|e| OAuthError::InvalidClient(e.to_string()))?;
    p.require_unconditional(Interaction::Search, "*", "introspection")
        .map_err(|e| OAuthError::InvalidClient(e.to_string()))?;
    Ok((p.client_id.clone(), true))
}

/// `POST /auth/introspect` (RFC 7662 §2): `{"active": false}` for anything but a valid,
/// unrevoked token of ours; a client sees only its own tokens as active.
pub async fn introspect(State(state): Shared, headers: HeaderMap, body: Bytes) -> Response {
    let pairs = form(&body);
    let (client_id, admin) = match caller(&state, &headers, &pairs).await {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let Some(token) = param(&pairs, "token") else {
        return OAuthError::InvalidRequest("token is missing".into()).into_response();
    };
    let inactive = json_no_store(json!({"active": false}));
    let Ok(claims) = state.security.verify(token).await else {
        // Not an access token of ours: perhaps a refresh token (RFC 7662 §2.1).
        return match super::authorize::introspect_refresh(&state, token).await {
            Ok(Some((owner, body))) if admin || owner == client_id => json_no_store(body),
            Ok(_) => inactive,
            Err(e) => e.into_response(),
        };
    };
    if !admin && claims.client_id != client_id {
        return inactive;
    }
    let mut out = json!({
        "active": true,
        "scope": claims.scope,
        "client_id": claims.client_id,
        "sub": claims.sub,
        "aud": claims.aud,
        "iss": claims.iss,
        "exp": claims.exp,
        "iat": claims.iat,
        "jti": claims.jti,
        "token_type": "Bearer",
    });
    if let Some(p) = claims.patient {
        out["patient"] = json!(p);
    }
    if let Some(u) = claims.fhir_user {
        out["fhirUser"] = json!(u);
    }
    json_no_store(out)
}

/// `POST /auth/revoke` (RFC 7009 §2): 200 whether or not the token was valid; a client
/// may revoke only its own tokens.
pub async fn revoke(State(state): Shared, headers: HeaderMap, body: Bytes) -> Response {
    let pairs = form(&body);
    let (client_id, admin) = match caller(&state, &headers, &pairs).await {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let Some(token) = param(&pairs, "token") else {
        return OAuthError::InvalidRequest("token is missing".into()).into_response();
    };
    match state.security.verify(token).await {
        Ok(claims) => {
            if (admin || claims.client_id == client_id)
                && let Err(e) = state.security.revoke(&claims.jti, claims.exp).await
            {
                return OAuthError::Server(e).into_response();
            }
        }
        // A refresh token: revoked with every token of its grant (RFC 7009 §2.1).
        Err(_) => {
            if let Err(e) =
                super::authorize::revoke_refresh(&state, token, |owner| admin || owner == client_id)
                    .await
            {
                return e.into_response();
            }
        }
    }
    json_no_store(json!({}))
}
