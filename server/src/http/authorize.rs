//! SMART App Launch 2.0 (hl7.org/fhir/smart-app-launch, app-launch.html) on our own
//! authorization server (issue 5, items 2, 5, 7 and 8):
//!
//! * `GET /auth/authorize` validates the authorization request (§ "Obtain authorization
//!   code", RFC 6749 §4.1.1, PKCE RFC 7636) and serves a plain HTML login and consent page
//!   listing the app and the scopes it asks for; optional scopes can be unticked.
//! * `POST /auth/authorize` (the form; also SMART's `authorize-post` capability) checks
//!   the password (Argon2id, throttled: 5 failures in 15 minutes lock the account), caps
//!   the scopes (`requested ∩ ticked ∩ client registration ∩ role cap`), asks a staff user
//!   to pick a patient when `launch/patient` or `patient/` scopes need one (standalone
//!   launch), and redirects to the app with a single-use code (60 s).
//! * `POST /auth/launch` lets an EHR (any caller allowed to read the patient) create a
//!   launch context for an EHR launch (§ "EHR launch"): the app passes the returned
//!   `launch` value to `/auth/authorize` with the `launch` scope.
//! * The token endpoint's `authorization_code` and `refresh_token` grants
//!   ([`token_from_code`], [`token_from_refresh`]): the code is bound to the client, the
//!   redirect URI and the PKCE challenge (S256 only); `openid` gives an id_token with an
//!   absolute `fhirUser`; `offline_access`/`online_access` give a refresh token that is
//!   rotated at each use. A replayed code or refresh token revokes every token of its
//!   grant (RFC 6749 §4.1.2; OAuth 2.0 Security BCP, RFC 9700 §4.14.2).
//!
//! The pages carry the authorization request in hidden fields and are re-validated on
//! every POST, so no server memory holds a half-done login: any server in front of the
//! same database can answer the next step. A user between login and patient picker is
//! held by a `login` grant (10 minutes) whose secret is in the form.

use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::{Extension, Json};
use html_escape::{encode_double_quoted_attribute as attr, encode_text as text};
use mediflow_auth::password::LoginThrottle;
use mediflow_auth::tokens::{self, ACCESS_TOKEN_LIFETIME_SECS};
use mediflow_auth::{IdTokenClaims, Interaction, Role, ScopeContext, ScopeSet, pkce};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::AppState;
use super::oauth::{authenticate_client, form, param};
use crate::auth::audit::{ADMIN_CHANGE, AuditRecord, EventKind, USER_SYSTEM};
use crate::auth::{TokenContext, now_secs};
use crate::error::OAuthError;
use crate::storage::auth::{ClientRecord, UserRecord};
use crate::storage::grants::{GrantKind, GrantRecord, Redeemed};

/// Lifetime of an authorization code, seconds (RFC 6749 §4.1.2: "a maximum
/// authorization code lifetime of 10 minutes is RECOMMENDED"; ours is shorter).
pub const CODE_LIFETIME_SECS: i64 = 60;
/// How long a signed-in user may take at the patient picker, seconds.
pub const LOGIN_SESSION_SECS: i64 = 600;
/// Lifetime of an EHR launch context, seconds.
pub const LAUNCH_LIFETIME_SECS: i64 = 300;
/// Lifetime of an `offline_access` refresh grant, seconds (90 days; rotation does not
/// extend it).
pub const OFFLINE_REFRESH_SECS: i64 = 90 * 86_400;
/// Lifetime of an `online_access` refresh grant, seconds (a 12-hour working shift: we
/// keep no browser session, so "while the user is online" is bounded by a shift).
pub const ONLINE_REFRESH_SECS: i64 = 12 * 3_600;

/// The authorization-request parameters the pages carry along in hidden fields.
const REQUEST_PARAMS: [&str; 10] = [
    "response_type",
    "client_id",
    "redirect_uri",
    "scope",
    "state",
    "aud",
    "code_challenge",
    "code_challenge_method",
    "launch",
    "nonce",
];

type Shared = State<Arc<AppState>>;

/// An EHR launch context (`auth_grants.data` of a `launch` grant).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct LaunchData {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    patient: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    encounter: Option<String>,
}

/// A signed-in user at the patient picker (`data` of a `login` grant).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct LoginData {
    username: String,
    auth_time: i64,
}

/// What an authorization code and the refresh tokens issued from it carry (`data` of
/// `code` and `refresh` grants).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct GrantData {
    sub: String,
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    fhir_user: Option<String>,
    scope: String,
    #[serde(default)]
    patient: Option<String>,
    #[serde(default)]
    encounter: Option<String>,
    #[serde(default)]
    redirect_uri: Option<String>,
    #[serde(default)]
    code_challenge: Option<String>,
    #[serde(default)]
    nonce: Option<String>,
    auth_time: i64,
}

/// A validated authorization request.
struct AuthzRequest {
    client: ClientRecord,
    redirect_uri: String,
    state: String,
    requested: ScopeSet,
    code_challenge: String,
    nonce: Option<String>,
    launch: Option<LaunchData>,
    /// The request parameters, for the hidden fields.
    params: Vec<(String, String)>,
}

/// Why an authorization request is refused.
enum Refusal {
    /// Shown to the user, never redirected: the client or redirect URI is not trusted
    /// (RFC 6749 §4.1.2.1 "MUST NOT automatically redirect").
    Page(StatusCode, String),
    /// Sent back to the app's redirect URI (RFC 6749 §4.1.2.1).
    Redirect {
        redirect_uri: String,
        state: Option<String>,
        error: &'static str,
        description: String,
    },
}

impl Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::Page(status, message) => error_page(status, &message),
            Refusal::Redirect {
                redirect_uri,
                state,
                error,
                description,
            } => {
                let mut q = vec![
                    ("error", error.to_string()),
                    ("error_description", description),
                ];
                if let Some(s) = state {
                    q.push(("state", s));
                }
                redirect(&redirect_uri, &q)
            }
        }
    }
}

/// A 303 to `uri` with `params` added to its query (RFC 6749 §4.1.2).
fn redirect(uri: &str, params: &[(&str, String)]) -> Response {
    let location = match url::Url::parse(uri) {
        Ok(mut url) => {
            {
                let mut q = url.query_pairs_mut();
                for (k, v) in params {
                    q.append_pair(k, v);
                }
            }
            url.to_string()
        }
        Err(_) => return error_page(StatusCode::BAD_REQUEST, "the redirect URI is not a URL"),
    };
    let mut resp = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    no_store(resp)
}

fn no_store(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // The pages must not be framed by another site (clickjacking of the consent form).
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; form-action 'self' http: https:; frame-ancestors 'none'"),
    );
    resp
}

/// The registered redirect URIs of a client (JSON array text).
fn redirect_uris(client: &ClientRecord) -> Vec<String> {
    serde_json::from_str(&client.redirect_uris).unwrap_or_default()
}

/// Validates an authorization request (SMART App Launch 2.0 § "Obtain authorization
/// code": `response_type`, `client_id`, `redirect_uri`, `launch`, `scope`, `state`,
/// `aud`, `code_challenge`, `code_challenge_method` S256).
async fn parse_request(
    state: &AppState,
    pairs: &[(String, String)],
) -> Result<AuthzRequest, Refusal> {
    let page = |m: String| Refusal::Page(StatusCode::BAD_REQUEST, m);
    let client_id = param(pairs, "client_id").ok_or_else(|| page("client_id is missing".into()))?;
    let client = state
        .ctx
        .store
        .auth_client(client_id)
        .await
        .map_err(|e| Refusal::Page(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .ok_or_else(|| page(format!("unknown client {client_id:?}")))?;
    if client.kind == "backend" {
        return Err(page(format!(
            "client {client_id:?} is registered for SMART Backend Services, not for user \
             authorization"
        )));
    }
    let redirect_uri = param(pairs, "redirect_uri")
        .ok_or_else(|| page("redirect_uri is missing".into()))?
        .to_string();
    if !redirect_uris(&client).contains(&redirect_uri) {
        return Err(page(format!(
            "redirect_uri {redirect_uri:?} is not registered for this client"
        )));
    }
    let state_param = param(pairs, "state").map(str::to_string);
    let fail = |error: &'static str, description: String| Refusal::Redirect {
        redirect_uri: redirect_uri.clone(),
        state: state_param.clone(),
        error,
        description,
    };
    match param(pairs, "response_type") {
        Some("code") => {}
        Some(other) => {
            return Err(fail(
                "unsupported_response_type",
                format!("response_type {other} is not supported (code only)"),
            ));
        }
        None => return Err(fail("invalid_request", "response_type is missing".into())),
    }
    let Some(state_value) = state_param.clone() else {
        return Err(fail(
            "invalid_request",
            "state is required (SMART App Launch 2.0)".into(),
        ));
    };
    if param(pairs, "code_challenge_method") != Some("S256") {
        return Err(fail(
            "invalid_request",
            "PKCE is required with code_challenge_method=S256 (SMART App Launch 2.0)".into(),
        ));
    }
    let code_challenge = param(pairs, "code_challenge")
        .filter(|c| pkce::is_valid_challenge(c))
        .ok_or_else(|| {
            fail(
                "invalid_request",
                "code_challenge is missing or not a base64url SHA-256 (RFC 7636 §4.2)".into(),
            )
        })?
        .to_string();
    let aud = param(pairs, "aud").unwrap_or_default();
    if aud.trim_end_matches('/') != state.security.audience {
        return Err(fail(
            "invalid_request",
            format!(
                "aud {aud:?} is not this FHIR server ({}); SMART App Launch 2.0 requires \
                 the authorization server to reject it",
                state.security.audience
            ),
        ));
    }
    let scope =
        param(pairs, "scope").ok_or_else(|| fail("invalid_scope", "scope is missing".into()))?;
    let requested =
        ScopeSet::parse(scope).map_err(|e| fail("invalid_scope", format!("scope: {e}")))?;
    let launch = match param(pairs, "launch") {
        None => None,
        Some(_) if !requested.launch => {
            return Err(fail(
                "invalid_scope",
                "a launch parameter needs the launch scope (EHR launch)".into(),
            ));
        }
        Some(l) => {
            let g = state
                .ctx
                .store
                .grant_get(&tokens::opaque_token_hash(l), GrantKind::Launch, now_secs())
                .await
                .map_err(|e| fail("server_error", e.to_string()))?
                .ok_or_else(|| fail("invalid_request", "unknown or expired launch".into()))?;
            Some(serde_json::from_str::<LaunchData>(&g.data).unwrap_or_default())
        }
    };
    let params = REQUEST_PARAMS
        .iter()
        .filter_map(|k| param(pairs, k).map(|v| (k.to_string(), v.to_string())))
        .collect();
    Ok(AuthzRequest {
        client,
        redirect_uri,
        state: state_value,
        requested,
        code_challenge,
        nonce: param(pairs, "nonce").map(str::to_string),
        launch,
        params,
    })
}

/// `GET /auth/authorize`: the login and consent page.
pub async fn authorize_get(State(state): Shared, RawQuery(q): RawQuery) -> Response {
    let pairs: Vec<(String, String)> = q
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
    match parse_request(&state, &pairs).await {
        Ok(req) => login_page(StatusCode::OK, &req, None, None),
        Err(r) => r.into_response(),
    }
}

/// `POST /auth/authorize`: the login form, the consent and the patient picker.
pub async fn authorize_post(
    State(state): Shared,
    connect: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let pairs = form(&body);
    let req = match parse_request(&state, &pairs).await {
        Ok(r) => r,
        Err(r) => return r.into_response(),
    };
    let mut audit = AuditRecord::new(EventKind::Login, "login", "E", 200, None);
    audit.client_id = req.client.client_id.clone();
    audit.ip = connect.as_ref().map(|c| c.0.0.ip().to_string());
    audit.user_agent = super::header_str(&headers, header::USER_AGENT).map(str::to_string);
    if param(&pairs, "action") == Some("deny") {
        return Refusal::Redirect {
            redirect_uri: req.redirect_uri,
            state: Some(req.state),
            error: "access_denied",
            description: "the user denied the request".into(),
        }
        .into_response();
    }
    let now = now_secs();
    // Who: a login session from the picker, or a username and password.
    let session = param(&pairs, "session").map(str::to_string);
    let (user, auth_time) = match &session {
        Some(secret) => match resume_session(&state, secret, &req.client.client_id, now).await {
            Ok(Some(found)) => found,
            Ok(None) => {
                return login_page(
                    StatusCode::UNAUTHORIZED,
                    &req,
                    None,
                    Some("Your sign-in has expired. Please sign in again."),
                );
            }
            Err(e) => return error_page(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        },
        None => {
            let username = param(&pairs, "username").unwrap_or_default().to_string();
            let password = pairs
                .iter()
                .find(|(k, _)| k == "password")
                .map(|(_, v)| v.clone())
                .unwrap_or_default();
            audit.sub = username.clone();
            match check_password(&state, &username, password, now).await {
                Ok(user) => (user, now),
                Err(refusal) => {
                    audit.status = 401;
                    state.auditor.record(audit).await;
                    let message = match refusal {
                        LoginRefused::Invalid => "Wrong username or password.".to_string(),
                        LoginRefused::Locked => format!(
                            "This account is locked after {} failed sign-ins; try again in \
                             15 minutes or ask an administrator.",
                            LoginThrottle::default().max_failures
                        ),
                        LoginRefused::Store(e) => {
                            return error_page(StatusCode::INTERNAL_SERVER_ERROR, &e);
                        }
                    };
                    return login_page(
                        StatusCode::UNAUTHORIZED,
                        &req,
                        Some(&username),
                        Some(&message),
                    );
                }
            }
        }
    };
    audit.sub = user.username.clone();
    // A one-time password (the first administrator's, or one an admin set with
    // mustChangePassword): the user chooses a new one before any token is issued.
    let mut user = user;
    let mut session = session;
    if !user.may_get_tokens() {
        let secret = match &session {
            Some(s) => s.clone(),
            None => match start_session(&state, &req, &user, now).await {
                Ok(s) => s,
                Err(e) => return error_page(StatusCode::INTERNAL_SERVER_ERROR, &e),
            },
        };
        if param(&pairs, "action") != Some("change_password") {
            return password_page(StatusCode::OK, &req, &secret, &pairs, None);
        }
        let new = pairs
            .iter()
            .find(|(k, _)| k == "new_password")
            .map(|(_, v)| v.as_str())
            .unwrap_or_default();
        let confirm = pairs
            .iter()
            .find(|(k, _)| k == "confirm_password")
            .map(|(_, v)| v.as_str())
            .unwrap_or_default();
        if new != confirm {
            let m = "The two passwords differ.";
            return password_page(StatusCode::BAD_REQUEST, &req, &secret, &pairs, Some(m));
        }
        let store = state.ctx.store.clone();
        let (name, pw) = (user.username.clone(), new.to_string());
        match crate::auth::accounts::set_password(store.as_ref(), &name, &pw).await {
            Ok(updated) => {
                let mut changed = AuditRecord::new(EventKind::Admin, ADMIN_CHANGE, "U", 200, None);
                changed.client_id = req.client.client_id.clone();
                changed.sub = updated.username.clone();
                changed.account = Some((USER_SYSTEM, updated.username.clone()));
                changed.ip = audit.ip.clone();
                state.auditor.record(changed).await;
                user = updated;
            }
            Err(crate::auth::accounts::AccountError::Invalid(m)) => {
                return password_page(StatusCode::BAD_REQUEST, &req, &secret, &pairs, Some(&m));
            }
            Err(e) => return error_page(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        }
        session = Some(secret);
    }
    let Ok(role) = Role::from_str(&user.role) else {
        return error_page(
            StatusCode::FORBIDDEN,
            &format!("the account has an unknown role {:?}", user.role),
        );
    };
    // What: requested ∩ ticked ∩ the client's registration ∩ the role's cap.
    let chosen = ticked(&req.requested, &pairs);
    let granted = chosen.capped_by(&[ScopeSet::parse_lenient(&req.client.scopes), role.cap()]);
    if granted.has_no_resource_access() && !granted.openid {
        return Refusal::Redirect {
            redirect_uri: req.redirect_uri,
            state: Some(req.state),
            error: "invalid_scope",
            description: "none of the requested scopes may be granted to this user and app".into(),
        }
        .into_response();
    }
    // Which patient: the EHR's launch context, the PATIENT user's own record, or the
    // one a staff user picks (standalone launch with launch/patient).
    let mut patient = req.launch.as_ref().and_then(|l| l.patient.clone());
    let encounter = req.launch.as_ref().and_then(|l| l.encounter.clone());
    if role == Role::Patient {
        let own = user
            .fhir_user
            .as_deref()
            .and_then(|u| u.strip_prefix("Patient/"))
            .map(str::to_string);
        let Some(own) = own else {
            return error_page(
                StatusCode::FORBIDDEN,
                "this patient account is not linked to a Patient record",
            );
        };
        if patient.as_ref().is_some_and(|p| *p != own) {
            return error_page(
                StatusCode::FORBIDDEN,
                "the launch context is another patient's record",
            );
        }
        patient = Some(own);
    }
    let needs_patient = granted.launch_patient || granted.has_patient_scopes();
    if needs_patient && patient.is_none() {
        let picked = param(&pairs, "patient").map(str::to_string);
        let session = match &session {
            Some(s) => s.clone(),
            None => match start_session(&state, &req, &user, now).await {
                Ok(s) => s,
                Err(e) => return error_page(StatusCode::INTERNAL_SERVER_ERROR, &e),
            },
        };
        let chosen_ok = match &picked {
            Some(id) if param(&pairs, "action") == Some("approve") => {
                match state.ctx.store.read("Patient", id).await {
                    Ok(Some(v)) if !v.deleted => true,
                    Ok(_) => false,
                    Err(e) => return error_page(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
                }
            }
            _ => false,
        };
        if !chosen_ok {
            let message = picked
                .is_some()
                .then_some("That patient record does not exist. Please choose again.");
            return patient_page(&state, &req, &session, &chosen, &pairs, message).await;
        }
        patient = picked;
    }
    if let Some(secret) = &session
        && let Err(e) = state
            .ctx
            .store
            .grant_redeem(&tokens::opaque_token_hash(secret), GrantKind::Login, now)
            .await
    {
        return error_page(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string());
    }
    // The code (RFC 6749 §4.1.2), bound to client, redirect URI and PKCE challenge.
    let code = tokens::new_opaque_token();
    let data = GrantData {
        sub: user.username.clone(),
        role: Some(role.as_str().to_string()),
        fhir_user: user.fhir_user.clone(),
        scope: granted.to_string(),
        patient,
        encounter,
        redirect_uri: Some(req.redirect_uri.clone()),
        code_challenge: Some(req.code_challenge.clone()),
        nonce: req.nonce.clone(),
        auth_time,
    };
    let grant = GrantRecord {
        token_hash: tokens::opaque_token_hash(&code),
        kind: GrantKind::Code,
        family: uuid::Uuid::new_v4().to_string(),
        client_id: req.client.client_id.clone(),
        data: json!(data).to_string(),
        exp: now + CODE_LIFETIME_SECS,
    };
    if let Err(e) = state.ctx.store.grant_put(&grant, now).await {
        return error_page(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string());
    }
    audit.patient = data.patient.as_ref().map(|p| format!("Patient/{p}"));
    state.auditor.record(audit).await;
    redirect(&req.redirect_uri, &[("code", code), ("state", req.state)])
}

/// The scopes the user left ticked: every requested resource scope and refresh scope
/// whose box is ticked (all of them when the form had no consent section), plus the
/// identity and context scopes, which are not optional.
fn ticked(requested: &ScopeSet, pairs: &[(String, String)]) -> ScopeSet {
    if param(pairs, "consent") != Some("1") {
        return requested.clone();
    }
    let boxes: Vec<&str> = pairs
        .iter()
        .filter(|(k, _)| k == "grant")
        .map(|(_, v)| v.as_str())
        .collect();
    let mut out = requested.clone();
    out.resources
        .retain(|r| boxes.contains(&r.to_string().as_str()));
    out.offline_access &= boxes.contains(&"offline_access");
    out.online_access &= boxes.contains(&"online_access");
    out
}

enum LoginRefused {
    Invalid,
    Locked,
    Store(String),
}

/// A fixed Argon2id hash checked against when the username is unknown, so that unknown
/// and known usernames take the same time.
fn dummy_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| mediflow_auth::password::hash("mediflow-dummy").unwrap_or_default())
}

/// Checks a password with the login throttle (seed 004 NFR-SEC-001: 5 failures within 15
/// minutes lock the account for 15 minutes; a locked account's attempts are refused
/// without checking the password and are not counted).
async fn check_password(
    state: &AppState,
    username: &str,
    password: String,
    now: i64,
) -> Result<UserRecord, LoginRefused> {
    let store = &state.ctx.store;
    let user = store
        .auth_user(username)
        .await
        .map_err(|e| LoginRefused::Store(e.to_string()))?;
    let throttle = LoginThrottle::default();
    let mut failures: Vec<i64> = user
        .as_ref()
        .and_then(|u| serde_json::from_str(&u.failures).ok())
        .unwrap_or_default();
    if user.is_some() && throttle.locked_until(&failures, now).is_some() {
        return Err(LoginRefused::Locked);
    }
    let phc = user
        .as_ref()
        .map(|u| u.password_hash.clone())
        .unwrap_or_else(|| dummy_hash().to_string());
    // Argon2id costs tens of milliseconds of CPU: off the async workers.
    let ok = tokio::task::spawn_blocking(move || mediflow_auth::password::verify(&password, &phc))
        .await
        .unwrap_or(false);
    let Some(mut user) = user else {
        return Err(LoginRefused::Invalid);
    };
    if ok {
        if !failures.is_empty() || user.locked_until.is_some() {
            user.failures = "[]".into();
            user.locked_until = None;
            store
                .auth_put_user(&user)
                .await
                .map_err(|e| LoginRefused::Store(e.to_string()))?;
        }
        return Ok(user);
    }
    failures.push(now);
    let forget = throttle.forget_before(now);
    failures.retain(|t| *t >= forget);
    user.failures = json!(failures).to_string();
    user.locked_until = throttle.locked_until(&failures, now);
    store
        .auth_put_user(&user)
        .await
        .map_err(|e| LoginRefused::Store(e.to_string()))?;
    if user.locked_until.is_some() {
        tracing::warn!(username, "account locked after repeated failed sign-ins");
        return Err(LoginRefused::Locked);
    }
    Err(LoginRefused::Invalid)
}

/// Starts a login session for the patient picker; returns its secret.
async fn start_session(
    state: &AppState,
    req: &AuthzRequest,
    user: &UserRecord,
    now: i64,
) -> Result<String, String> {
    let secret = tokens::new_opaque_token();
    let data = LoginData {
        username: user.username.clone(),
        auth_time: now,
    };
    let g = GrantRecord {
        token_hash: tokens::opaque_token_hash(&secret),
        kind: GrantKind::Login,
        family: uuid::Uuid::new_v4().to_string(),
        client_id: req.client.client_id.clone(),
        data: json!(data).to_string(),
        exp: now + LOGIN_SESSION_SECS,
    };
    state
        .ctx
        .store
        .grant_put(&g, now)
        .await
        .map_err(|e| e.to_string())?;
    Ok(secret)
}

/// The user of a live login session started for `client_id` (a session of another
/// app's authorization request does not carry over).
async fn resume_session(
    state: &AppState,
    secret: &str,
    client_id: &str,
    now: i64,
) -> Result<Option<(UserRecord, i64)>, crate::storage::StoreError> {
    let store = &state.ctx.store;
    let Some(g) = store
        .grant_get(&tokens::opaque_token_hash(secret), GrantKind::Login, now)
        .await?
        .filter(|g| g.client_id == client_id)
    else {
        return Ok(None);
    };
    let Ok(data) = serde_json::from_str::<LoginData>(&g.data) else {
        return Ok(None);
    };
    Ok(store
        .auth_user(&data.username)
        .await?
        .map(|u| (u, data.auth_time)))
}

// ---------------------------------------------------------------------------------------
// Pages: plain HTML, no script, labelled controls (WCAG 2.1: 1.3.1, 3.3.2), errors in a
// role="alert" region.

fn html_page(status: StatusCode, title: &str, body: &str) -> Response {
    let page = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} · MediFlow</title><style>\
         body{{font-family:system-ui,sans-serif;max-width:34rem;margin:2rem auto;padding:0 1rem;line-height:1.5;color:#111}}\
         label{{display:block;margin-top:.8rem}} input[type=text],input[type=password],input[type=search]{{width:100%;padding:.4rem;font-size:1rem}}\
         fieldset{{margin-top:1rem}} .alert{{border:2px solid #a00;padding:.5rem;color:#a00}}\
         button{{margin-top:1rem;margin-right:.5rem;padding:.5rem 1rem;font-size:1rem}} li{{margin:.2rem 0}}\
         </style></head><body><main>{body}</main></body></html>",
        title = text(title),
    );
    no_store((status, Html(page)).into_response())
}

fn error_page(status: StatusCode, message: &str) -> Response {
    html_page(
        status,
        "Authorization error",
        &format!(
            "<h1>Authorization error</h1><p class=\"alert\" role=\"alert\">{}</p>",
            text(message)
        ),
    )
}

fn hidden(name: &str, value: &str) -> String {
    format!(
        "<input type=\"hidden\" name=\"{}\" value=\"{}\">",
        attr(name),
        attr(value)
    )
}

fn request_fields(req: &AuthzRequest) -> String {
    req.params.iter().map(|(k, v)| hidden(k, v)).collect()
}

fn alert(message: Option<&str>) -> String {
    message
        .map(|m| format!("<p class=\"alert\" role=\"alert\">{}</p>", text(m)))
        .unwrap_or_default()
}

/// A plain-language line for a resource scope (SMART scopes-and-launch-context.html).
fn describe(r: &mediflow_auth::ResourceScope) -> String {
    let p = r.permissions;
    let mut verbs = Vec::new();
    if p.read || p.search {
        verbs.push("read");
    }
    if p.create || p.update {
        verbs.push("create and change");
    }
    if p.delete {
        verbs.push("delete");
    }
    let what = r.resource_type.as_deref().unwrap_or("all kinds of");
    let whose = match r.context {
        ScopeContext::Patient => "of the selected patient",
        ScopeContext::User => "that you may access",
        ScopeContext::System => "of every patient",
    };
    let mut line = format!("{} {what} records {whose}", verbs.join(", "));
    if !r.query.is_empty() {
        let q: Vec<String> = r.query.iter().map(|(k, v)| format!("{k}={v}")).collect();
        line.push_str(&format!(" (only {})", q.join(", ")));
    }
    let mut chars = line.chars();
    match chars.next() {
        Some(c) => c.to_uppercase().collect::<String>() + chars.as_str(),
        None => line,
    }
}

/// The consent list: optional scopes as ticked boxes, required ones as plain items.
fn scope_list(requested: &ScopeSet, ticked: Option<&ScopeSet>) -> String {
    let mut out = String::from("<fieldset><legend>This app asks to:</legend><ul>");
    for (i, r) in requested.resources.iter().enumerate() {
        let s = r.to_string();
        let on = ticked.is_none_or(|t| t.resources.contains(r));
        out.push_str(&format!(
            "<li><input type=\"checkbox\" id=\"scope{i}\" name=\"grant\" value=\"{v}\"{c}> \
             <label for=\"scope{i}\" style=\"display:inline\">{d} <code>{t}</code></label></li>",
            v = attr(&s),
            c = if on { " checked" } else { "" },
            d = text(&describe(r)),
            t = text(&s),
        ));
    }
    for (flag, word, d) in [
        (
            requested.offline_access,
            "offline_access",
            "Stay connected after you sign out (offline access)",
        ),
        (
            requested.online_access,
            "online_access",
            "Stay connected while you are signed in (online access)",
        ),
    ] {
        if flag {
            let on = ticked.is_none_or(|t| {
                if word == "offline_access" {
                    t.offline_access
                } else {
                    t.online_access
                }
            });
            out.push_str(&format!(
                "<li><input type=\"checkbox\" id=\"{word}\" name=\"grant\" value=\"{word}\"{c}> \
                 <label for=\"{word}\" style=\"display:inline\">{d}</label></li>",
                c = if on { " checked" } else { "" },
            ));
        }
    }
    let mut fixed = Vec::new();
    if requested.openid || requested.fhir_user || requested.profile {
        fixed.push("Know who you are (your name and role)");
    }
    if requested.launch || requested.launch_patient {
        fixed.push("Know which patient's record is open");
    }
    if requested.launch_encounter {
        fixed.push("Know which encounter is open");
    }
    for f in fixed {
        out.push_str(&format!("<li>{}</li>", text(f)));
    }
    out.push_str("</ul></fieldset>");
    out.push_str(&hidden("consent", "1"));
    out
}

fn app_name(req: &AuthzRequest) -> &str {
    if req.client.name.is_empty() {
        &req.client.client_id
    } else {
        &req.client.name
    }
}

fn login_page(
    status: StatusCode,
    req: &AuthzRequest,
    username: Option<&str>,
    message: Option<&str>,
) -> Response {
    let body = format!(
        "<h1>Sign in to MediFlow</h1>\
         <p><strong>{app}</strong> wants to use your hospital account.</p>{alert}\
         <form method=\"post\" action=\"authorize\">{fields}\
         <label for=\"username\">Username</label>\
         <input type=\"text\" id=\"username\" name=\"username\" autocomplete=\"username\" required value=\"{user}\">\
         <label for=\"password\">Password</label>\
         <input type=\"password\" id=\"password\" name=\"password\" autocomplete=\"current-password\" required>\
         {scopes}\
         <button type=\"submit\" name=\"action\" value=\"approve\">Sign in and allow</button>\
         <button type=\"submit\" name=\"action\" value=\"deny\" formnovalidate>Deny</button>\
         </form>",
        app = text(app_name(req)),
        alert = alert(message),
        fields = request_fields(req),
        user = attr(username.unwrap_or_default()),
        scopes = scope_list(&req.requested, None),
    );
    html_page(status, "Sign in", &body)
}

/// Hidden fields that carry the consent (ticked scopes) from page to page.
fn consent_fields(pairs: &[(String, String)]) -> String {
    let mut out = String::new();
    if param(pairs, "consent") == Some("1") {
        out.push_str(&hidden("consent", "1"));
        for (k, v) in pairs {
            if k == "grant" {
                out.push_str(&hidden("grant", v));
            }
        }
    }
    out
}

/// "Choose a new password": shown after a one-time password was accepted.
fn password_page(
    status: StatusCode,
    req: &AuthzRequest,
    session: &str,
    pairs: &[(String, String)],
    message: Option<&str>,
) -> Response {
    let body = format!(
        "<h1>Choose a new password</h1>\
         <p>The password you signed in with can be used only once. Choose your own before \
         <strong>{app}</strong> can continue.</p>{alert}\
         <form method=\"post\" action=\"authorize\">{fields}{session}{consent}\
         <label for=\"new_password\">New password (at least 8 characters)</label>\
         <input type=\"password\" id=\"new_password\" name=\"new_password\" autocomplete=\"new-password\" minlength=\"8\" required>\
         <label for=\"confirm_password\">New password again</label>\
         <input type=\"password\" id=\"confirm_password\" name=\"confirm_password\" autocomplete=\"new-password\" minlength=\"8\" required>\
         <button type=\"submit\" name=\"action\" value=\"change_password\">Change password and continue</button>\
         <button type=\"submit\" name=\"action\" value=\"deny\" formnovalidate>Cancel</button>\
         </form>",
        app = text(app_name(req)),
        alert = alert(message),
        fields = request_fields(req),
        session = hidden("session", session),
        consent = consent_fields(pairs),
    );
    html_page(status, "Choose a new password", &body)
}

/// The patient picker of a standalone launch (SMART § "Standalone launch": the user
/// picks a patient), searching by name with our own search engine.
async fn patient_page(
    state: &AppState,
    req: &AuthzRequest,
    session: &str,
    chosen: &ScopeSet,
    pairs: &[(String, String)],
    message: Option<&str>,
) -> Response {
    let name = param(pairs, "patient_name").unwrap_or_default();
    let mut q_pairs = vec![("_count".to_string(), "20".to_string())];
    if !name.is_empty() {
        q_pairs.push(("name".into(), name.to_string()));
    }
    let list = match crate::search::parse_query("Patient", &q_pairs, false) {
        Ok(q) => state.ctx.store.search(&q).await.map(|p| p.matches),
        Err(_) => Ok(Vec::new()),
    };
    let rows = match list {
        Ok(rows) => rows,
        Err(e) => return error_page(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    let mut items = String::new();
    for (i, v) in rows.iter().enumerate() {
        let res: Value = v
            .content
            .as_deref()
            .and_then(|c| serde_json::from_str(c).ok())
            .unwrap_or(Value::Null);
        let label = format!(
            "{} (born {}, id {})",
            display_name(&res),
            res["birthDate"].as_str().unwrap_or("unknown"),
            v.id
        );
        items.push_str(&format!(
            "<li><input type=\"radio\" id=\"p{i}\" name=\"patient\" value=\"{id}\"{req}> \
             <label for=\"p{i}\" style=\"display:inline\">{label}</label></li>",
            id = attr(&v.id),
            req = if i == 0 { " required" } else { "" },
            label = text(&label),
        ));
    }
    if items.is_empty() {
        items.push_str("<li>No patient matches.</li>");
    }
    let mut carried = request_fields(req);
    carried.push_str(&hidden("session", session));
    carried.push_str(&hidden("consent", "1"));
    for r in &chosen.resources {
        carried.push_str(&hidden("grant", &r.to_string()));
    }
    for (on, word) in [
        (chosen.offline_access, "offline_access"),
        (chosen.online_access, "online_access"),
    ] {
        if on {
            carried.push_str(&hidden("grant", word));
        }
    }
    let body = format!(
        "<h1>Choose a patient</h1><p><strong>{app}</strong> will see this patient's record.</p>{alert}\
         <form method=\"post\" action=\"authorize\">{carried}\
         <label for=\"patient_name\">Find by name</label>\
         <input type=\"search\" id=\"patient_name\" name=\"patient_name\" value=\"{name}\">\
         <button type=\"submit\" name=\"action\" value=\"find\" formnovalidate>Search</button>\
         <fieldset><legend>Patients</legend><ul>{items}</ul></fieldset>\
         <button type=\"submit\" name=\"action\" value=\"approve\">Open this patient</button>\
         <button type=\"submit\" name=\"action\" value=\"deny\" formnovalidate>Deny</button>\
         </form>",
        app = text(app_name(req)),
        alert = alert(message),
        name = attr(name),
    );
    html_page(StatusCode::OK, "Choose a patient", &body)
}

/// "Given Family" of a Patient's first name (R4 HumanName), or its `text`.
fn display_name(res: &Value) -> String {
    let Some(n) = res["name"].get(0) else {
        return "Unnamed patient".into();
    };
    if let Some(t) = n["text"].as_str() {
        return t.to_string();
    }
    let mut parts: Vec<&str> = n["given"]
        .as_array()
        .map(|g| g.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if let Some(f) = n["family"].as_str() {
        parts.push(f);
    }
    if parts.is_empty() {
        "Unnamed patient".into()
    } else {
        parts.join(" ")
    }
}

// ---------------------------------------------------------------------------------------
// EHR launch contexts.

/// `POST /auth/launch` (form or JSON `{"patient": id, "encounter": id}`): creates an EHR
/// launch context for the bearer (who must be allowed to read that patient) and answers
/// 201 `{"launch": value, "expires_in": 300}`.
pub async fn create_launch(State(state): Shared, headers: HeaderMap, body: Bytes) -> Response {
    let p = match state.security.authenticate(&headers).await {
        Ok(p) => p,
        Err(e) => return crate::error::ApiError::Unauthorized(e.to_string()).into_response(),
    };
    let data: LaunchData =
        if super::header_str(&headers, header::CONTENT_TYPE).is_some_and(|c| c.contains("json")) {
            match serde_json::from_slice(&body) {
                Ok(d) => d,
                Err(e) => {
                    return OAuthError::InvalidRequest(format!("body: {e}")).into_response();
                }
            }
        } else {
            let pairs = form(&body);
            LaunchData {
                patient: param(&pairs, "patient").map(str::to_string),
                encounter: param(&pairs, "encounter").map(str::to_string),
            }
        };
    let Some(patient) = data.patient.clone() else {
        return OAuthError::InvalidRequest("patient is missing".into()).into_response();
    };
    if let Err(e) =
        crate::auth::authz::check_instance(&state.ctx, &p, Interaction::Read, "Patient", &patient)
            .await
    {
        return e.into_response();
    }
    let now = now_secs();
    let secret = tokens::new_opaque_token();
    let g = GrantRecord {
        token_hash: tokens::opaque_token_hash(&secret),
        kind: GrantKind::Launch,
        family: uuid::Uuid::new_v4().to_string(),
        client_id: p.client_id.clone(),
        data: json!(data).to_string(),
        exp: now + LAUNCH_LIFETIME_SECS,
    };
    if let Err(e) = state.ctx.store.grant_put(&g, now).await {
        return OAuthError::Server(e).into_response();
    }
    let mut resp = (
        StatusCode::CREATED,
        Json(json!({"launch": secret, "patient": patient, "expires_in": LAUNCH_LIFETIME_SECS})),
    )
        .into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

// ---------------------------------------------------------------------------------------
// Token endpoint grants.

/// The client of an `authorization_code` or `refresh_token` request: a confidential
/// client authenticates with private_key_jwt; a public client names itself with
/// `client_id` (SMART client-public: PKCE is its protection).
async fn user_grant_client(
    state: &AppState,
    pairs: &[(String, String)],
) -> Result<ClientRecord, OAuthError> {
    let client_id = if param(pairs, "client_assertion").is_some() {
        authenticate_client(state, pairs).await?.0
    } else {
        param(pairs, "client_id")
            .ok_or_else(|| OAuthError::InvalidClient("client_id is missing".into()))?
            .to_string()
    };
    let client = state
        .ctx
        .store
        .auth_client(&client_id)
        .await?
        .ok_or_else(|| OAuthError::InvalidClient(format!("unknown client {client_id:?}")))?;
    if client.kind != "public" && param(pairs, "client_assertion").is_none() {
        return Err(OAuthError::InvalidClient(format!(
            "client {client_id} is confidential: authenticate with private_key_jwt"
        )));
    }
    if client.kind == "backend" {
        return Err(OAuthError::UnsupportedGrantType(
            "Backend Services clients use client_credentials".into(),
        ));
    }
    Ok(client)
}

/// Revokes a grant family after a replay: its refresh tokens and its access tokens.
async fn revoke_family(state: &AppState, family: &str) -> Result<(), OAuthError> {
    for (jti, exp) in state.ctx.store.grant_revoke_family(family).await? {
        state.security.revoke(&jti, exp).await?;
    }
    Ok(())
}

/// Issues the access token (and id_token, refresh token) of a grant; records the access
/// token's jti in the family.
async fn issue(
    state: &AppState,
    client: &ClientRecord,
    data: &GrantData,
    family: &str,
    refresh_exp: Option<i64>,
    with_id_token: bool,
) -> Result<Value, OAuthError> {
    let scope = ScopeSet::parse_lenient(&data.scope);
    let now = now_secs();
    let ctx = TokenContext {
        client_id: client.client_id.clone(),
        sub: data.sub.clone(),
        scope: scope.clone(),
        patient: data.patient.clone(),
        encounter: data.encounter.clone(),
        fhir_user: data.fhir_user.clone(),
        role: data.role.clone(),
    };
    let (access, claims) = state
        .security
        .mint_context(&ctx, now)
        .map_err(|e| OAuthError::InvalidRequest(e.to_string()))?;
    state
        .ctx
        .store
        .grant_put(
            &GrantRecord {
                token_hash: claims.jti.clone(),
                kind: GrantKind::Access,
                family: family.to_string(),
                client_id: client.client_id.clone(),
                data: "{}".into(),
                exp: claims.exp,
            },
            now,
        )
        .await?;
    let mut out = json!({
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": ACCESS_TOKEN_LIFETIME_SECS,
        "scope": scope.to_string(),
    });
    if let Some(p) = &data.patient {
        out["patient"] = json!(p);
        // SMART § "Launch context": the app should show which patient it works on.
        out["need_patient_banner"] = json!(true);
    }
    if let Some(e) = &data.encounter {
        out["encounter"] = json!(e);
    }
    if with_id_token && scope.openid {
        let id = IdTokenClaims {
            iss: state.security.issuer.clone(),
            sub: data.sub.clone(),
            aud: client.client_id.clone(),
            exp: now + ACCESS_TOKEN_LIFETIME_SECS,
            iat: now,
            auth_time: Some(data.auth_time),
            nonce: data.nonce.clone(),
            // SMART § "fhirUser": an absolute URL of the user's FHIR resource.
            fhir_user: data
                .fhir_user
                .as_ref()
                .filter(|_| scope.fhir_user || scope.profile)
                .map(|u| format!("{}/{u}", state.ctx.base_url)),
        };
        out["id_token"] = json!(
            state
                .security
                .sign_id_token(&id)
                .map_err(|e| OAuthError::InvalidRequest(e.to_string()))?
        );
    }
    if let Some(exp) = refresh_exp {
        let secret = tokens::new_opaque_token();
        let mut kept = data.clone();
        kept.redirect_uri = None;
        kept.code_challenge = None;
        kept.nonce = None;
        state
            .ctx
            .store
            .grant_put(
                &GrantRecord {
                    token_hash: tokens::opaque_token_hash(&secret),
                    kind: GrantKind::Refresh,
                    family: family.to_string(),
                    client_id: client.client_id.clone(),
                    data: json!(kept).to_string(),
                    exp,
                },
                now,
            )
            .await?;
        out["refresh_token"] = json!(secret);
    }
    Ok(out)
}

/// Redeems `client`'s single-use code or refresh token by the hash of its secret. A
/// replay revokes every token of the grant (codes: RFC 6749 §4.1.2; refresh tokens:
/// RFC 9700 §4.14.2); unknown, expired, revoked or another client's: `invalid_grant`.
async fn redeem(
    state: &AppState,
    client: &ClientRecord,
    hash: &str,
    kind: GrantKind,
    now: i64,
) -> Result<GrantRecord, OAuthError> {
    let what = match kind {
        GrantKind::Code => "authorization code",
        _ => "refresh token",
    };
    let g = match state.ctx.store.grant_redeem(hash, kind, now).await? {
        Redeemed::Fresh(g) => g,
        Redeemed::Reused(g) => {
            revoke_family(state, &g.family).await?;
            return Err(OAuthError::InvalidGrant(format!(
                "the {what} was used before; every token issued from its grant is revoked"
            )));
        }
        Redeemed::Invalid => {
            return Err(OAuthError::InvalidGrant(format!(
                "unknown, expired or revoked {what}"
            )));
        }
    };
    if g.client_id != client.client_id {
        return Err(OAuthError::InvalidGrant(format!(
            "the {what} was issued to another client"
        )));
    }
    Ok(g)
}

/// `grant_type=authorization_code` (RFC 6749 §4.1.3; PKCE RFC 7636 §4.5-4.6): returns
/// the client id and the token response.
pub async fn token_from_code(
    state: &AppState,
    pairs: &[(String, String)],
) -> Result<(String, Value), OAuthError> {
    let client = user_grant_client(state, pairs).await?;
    let code =
        param(pairs, "code").ok_or_else(|| OAuthError::InvalidRequest("code is missing".into()))?;
    let now = now_secs();
    let g = redeem(
        state,
        &client,
        &tokens::opaque_token_hash(code),
        GrantKind::Code,
        now,
    )
    .await?;
    let data: GrantData = serde_json::from_str(&g.data)
        .map_err(|e| OAuthError::InvalidGrant(format!("unusable code: {e}")))?;
    if param(pairs, "redirect_uri") != data.redirect_uri.as_deref() {
        return Err(OAuthError::InvalidGrant(
            "redirect_uri differs from the authorization request's (RFC 6749 §4.1.3)".into(),
        ));
    }
    let verifier = param(pairs, "code_verifier")
        .ok_or_else(|| OAuthError::InvalidRequest("code_verifier is missing (PKCE)".into()))?;
    let challenge = data.code_challenge.as_deref().unwrap_or_default();
    if !pkce::is_valid_verifier(verifier) || !pkce::verify_s256(verifier, challenge) {
        return Err(OAuthError::InvalidGrant(
            "code_verifier does not match the code_challenge (RFC 7636 §4.6)".into(),
        ));
    }
    let scope = ScopeSet::parse_lenient(&data.scope);
    let refresh_exp = if scope.offline_access {
        Some(now + OFFLINE_REFRESH_SECS)
    } else if scope.online_access {
        Some(now + ONLINE_REFRESH_SECS)
    } else {
        None
    };
    let body = issue(state, &client, &data, &g.family, refresh_exp, true).await?;
    Ok((client.client_id, body))
}

/// `grant_type=refresh_token` (RFC 6749 §6): single use, rotated; a narrower `scope`
/// may be asked for; a replayed refresh token revokes its family.
pub async fn token_from_refresh(
    state: &AppState,
    pairs: &[(String, String)],
) -> Result<(String, Value), OAuthError> {
    let client = user_grant_client(state, pairs).await?;
    let token = param(pairs, "refresh_token")
        .ok_or_else(|| OAuthError::InvalidRequest("refresh_token is missing".into()))?;
    let hash = tokens::opaque_token_hash(token);
    let now = now_secs();
    // Checked before it is used up, so that a refused request does not burn the token.
    if let Some(g) = state
        .ctx
        .store
        .grant_get(&hash, GrantKind::Refresh, now)
        .await?
    {
        if g.client_id != client.client_id {
            return Err(OAuthError::InvalidGrant(
                "the refresh token was issued to another client".into(),
            ));
        }
        let data: GrantData = serde_json::from_str(&g.data)
            .map_err(|e| OAuthError::InvalidGrant(format!("unusable refresh token: {e}")))?;
        narrowed_scope(pairs, &data)?;
    }
    let g = redeem(state, &client, &hash, GrantKind::Refresh, now).await?;
    let mut data: GrantData = serde_json::from_str(&g.data)
        .map_err(|e| OAuthError::InvalidGrant(format!("unusable refresh token: {e}")))?;
    data.scope = narrowed_scope(pairs, &data)?;
    let body = issue(state, &client, &data, &g.family, Some(g.exp), false).await?;
    Ok((client.client_id, body))
}

/// The scope of a refresh request: the original grant's, or the narrower `scope` asked
/// for (RFC 6749 §6: it "MUST NOT include any scope not originally granted").
fn narrowed_scope(pairs: &[(String, String)], data: &GrantData) -> Result<String, OAuthError> {
    let Some(s) = param(pairs, "scope") else {
        return Ok(data.scope.clone());
    };
    let asked = ScopeSet::parse(s).map_err(|e| OAuthError::InvalidScope(format!("scope: {e}")))?;
    let narrowed = asked.intersect(&ScopeSet::parse_lenient(&data.scope));
    if narrowed != asked {
        return Err(OAuthError::InvalidScope(
            "scope exceeds what the refresh token grants (RFC 6749 §6)".into(),
        ));
    }
    Ok(narrowed.to_string())
}

/// The grant of a live (unused, unrevoked, unexpired) refresh token.
async fn live_refresh(state: &AppState, token: &str) -> Result<Option<GrantRecord>, OAuthError> {
    let hash = tokens::opaque_token_hash(token);
    Ok(state
        .ctx
        .store
        .grant_get(&hash, GrantKind::Refresh, now_secs())
        .await?)
}

/// RFC 7662 introspection of a refresh token: `None` when `token` is not a live one.
pub async fn introspect_refresh(
    state: &AppState,
    token: &str,
) -> Result<Option<(String, Value)>, OAuthError> {
    let Some(g) = live_refresh(state, token).await? else {
        return Ok(None);
    };
    let Ok(data) = serde_json::from_str::<GrantData>(&g.data) else {
        return Ok(None);
    };
    let mut out = json!({
        "active": true,
        "scope": data.scope,
        "client_id": g.client_id,
        "sub": data.sub,
        "exp": g.exp,
        "iss": state.security.issuer,
        "token_type": "refresh_token",
    });
    if let Some(p) = data.patient {
        out["patient"] = json!(p);
    }
    Ok(Some((g.client_id, out)))
}

/// RFC 7009 revocation of a refresh token (§2.1: revoking a refresh token should also
/// revoke the access tokens of the same grant). Returns the owning client id when
/// `token` was a live refresh token and `allowed(client_id)`.
pub async fn revoke_refresh(
    state: &AppState,
    token: &str,
    allowed: impl Fn(&str) -> bool,
) -> Result<bool, OAuthError> {
    let Some(g) = live_refresh(state, token).await? else {
        return Ok(false);
    };
    if !allowed(&g.client_id) {
        return Ok(false);
    }
    revoke_family(state, &g.family).await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unticked_scopes_are_dropped_and_identity_scopes_kept() {
        let requested =
            ScopeSet::parse("openid fhirUser launch/patient patient/Observation.rs patient/Condition.rs offline_access")
                .unwrap();
        let pairs = vec![
            ("consent".to_string(), "1".to_string()),
            ("grant".to_string(), "patient/Observation.rs".to_string()),
        ];
        let t = ticked(&requested, &pairs);
        assert_eq!(
            t.to_string(),
            "openid fhirUser launch/patient patient/Observation.rs"
        );
        assert_eq!(ticked(&requested, &[]), requested);
    }

    #[test]
    fn capping_keeps_patient_scopes_a_wider_request_would_subsume() {
        let requested = ScopeSet::parse("launch/patient patient/*.rs user/*.rs").unwrap();
        let client = ScopeSet::parse("launch/patient patient/*.rs user/*.rs").unwrap();
        let got = requested.capped_by(&[client, Role::Patient.cap()]);
        assert_eq!(got.to_string(), "launch/patient patient/*.rs");
        let doctor = ScopeSet::parse("user/Observation.rs user/Invoice.rs")
            .unwrap()
            .capped_by(&[ScopeSet::parse("user/*.rs").unwrap(), Role::Billing.cap()]);
        assert_eq!(doctor.to_string(), "user/Invoice.rs");
    }

    #[test]
    fn pages_escape_what_they_echo() {
        assert_eq!(
            hidden("state", "\"><script>"),
            "<input type=\"hidden\" name=\"state\" value=\"&quot;&gt;&lt;script&gt;\">"
        );
    }

    #[test]
    fn scope_descriptions_read_plainly() {
        let s = ScopeSet::parse("user/Observation.rs?category=laboratory").unwrap();
        assert_eq!(
            describe(&s.resources[0]),
            "Read Observation records that you may access (only category=laboratory)"
        );
    }
}
