//! The admin API (issue 5, item 5): users and OAuth clients managed over HTTP, outside
//! `/fhir` (these are not FHIR resources). Plain JSON in and out (`application/json`).
//!
//! | method and path | does | answers |
//! |---|---|---|
//! | `GET /admin/users` | lists the users | 200 `{"users": [user…]}` |
//! | `POST /admin/users` | adds a user: `{"username", "password", "role", "fhirUser"?, "mustChangePassword"?}` | 201 user, `Location`; 409 if the username is taken |
//! | `GET /admin/users/{username}` | one user | 200 user |
//! | `PUT /admin/users/{username}` | replaces role and fhirUser (absent: none), and the password and `mustChangePassword` when given: `{"role", "fhirUser"?, "password"?, "mustChangePassword"?}` | 200 user |
//! | `DELETE /admin/users/{username}` | removes a user | 204 |
//! | `GET /admin/clients` | lists the clients | 200 `{"clients": [client…]}` |
//! | `POST /admin/clients` | registers a SMART Backend Services client: `{"clientId", "scope", "jwks"? (a JWK Set) or "jwksUrl"?, "name"?}` | 201 client, `Location`; 409 if the client id is taken |
//! | `GET /admin/clients/{clientId}` | one client | 200 client |
//! | `DELETE /admin/clients/{clientId}` | removes a client | 204 |
//!
//! A user is `{"username", "role", "fhirUser", "mustChangePassword", "lockedUntil",
//! "created"}`; a client `{"clientId", "name", "kind", "scope", "jwks" | "jwksUrl",
//! "redirectUris", "created"}`. Password hashes, login failures and private key members
//! never leave the server. Field rules: [`crate::auth::accounts`]; unknown fields are
//! refused.
//!
//! Who: a bearer token of an admin ([`Principal::is_admin`]: scopes allowing every
//! interaction on every type, `system/*.cruds`; with `--no-auth`, anyone). Errors
//! ([`AdminError`]): `{"error", "error_description"}` with 400 `invalid_request`, 401
//! `invalid_token` (no or no valid token, with `WWW-Authenticate`), 403
//! `insufficient_scope` (not an admin), 404 `not_found`, 409 `conflict`.
//!
//! Every request, refusals included, is audited ([`crate::auth::audit`]: DICOM 110113
//! "Security Alert", subtype 110137 for a change, 110132 for a read or a refusal, the
//! account as `entity`).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::AppState;
use crate::auth::accounts::{self, AccountError};
use crate::auth::audit::{self, ADMIN_CHANGE, ADMIN_USE, AuditRecord, EventKind};
use crate::auth::{Principal, now_secs};
use crate::clock;
use crate::error::AdminError;
use crate::storage::auth::{ClientRecord, UserRecord};

type Shared = State<Arc<AppState>>;
type Connect = Option<Extension<ConnectInfo<SocketAddr>>>;

/// JWK members that hold private key material (RFC 7518 §6.2.2, §6.3.2, §6.4): never
/// shown, even if a registration held them.
const PRIVATE_JWK_MEMBERS: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

/// One admin request under way: authenticated and allowed, its audit record pending.
struct Admin {
    record: AuditRecord,
}

impl Admin {
    /// Authenticates the request and checks that it comes from an admin; a refusal is
    /// audited and returned as the response.
    async fn begin(
        state: &AppState,
        connect: &Connect,
        headers: &HeaderMap,
        subtype: &'static str,
        action: &'static str,
        account: Option<(&'static str, String)>,
    ) -> Result<Admin, Response> {
        let mut record = AuditRecord::new(EventKind::Admin, subtype, action, 200, None);
        record.ip = connect.as_ref().map(|c| c.0.0.ip().to_string());
        record.user_agent = super::header_str(headers, header::USER_AGENT).map(str::to_string);
        record.account = account;
        let refusal = match state.security.authenticate(headers).await {
            Ok(p) if p.is_admin() => {
                record.client_id = p.client_id.clone();
                record.sub = p.sub.clone();
                return Ok(Admin { record });
            }
            Ok(p) => {
                record.client_id = p.client_id.clone();
                record.sub = p.sub.clone();
                AdminError::InsufficientScope(not_admin(&p))
            }
            Err(e) => AdminError::InvalidToken(e.to_string()),
        };
        // A refusal is the use of a restricted function, whatever was attempted.
        record.subtype = ADMIN_USE.into();
        record.status = refusal.status().as_u16();
        state.auditor.record(record).await;
        Err(refusal.into_response())
    }

    /// Audits the outcome and renders it.
    async fn finish(mut self, state: &AppState, result: Result<Response, AdminError>) -> Response {
        let resp = result.unwrap_or_else(IntoResponse::into_response);
        self.record.status = resp.status().as_u16();
        state.auditor.record(self.record).await;
        resp
    }
}

fn not_admin(p: &Principal) -> String {
    format!(
        "the admin API needs an admin's token (scopes allowing every interaction on every \
         type, e.g. {}); the token of {} does not qualify",
        crate::auth::authz::ADMIN_SCOPE,
        p.client_id
    )
}

fn json_response(status: StatusCode, body: Value) -> Response {
    let mut resp = (status, Json(body)).into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

fn created(state: &AppState, path: &str, body: Value) -> Response {
    let mut resp = json_response(StatusCode::CREATED, body);
    let location = format!("{}{path}", state.security.issuer);
    if let Ok(v) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

/// Parses a JSON body into `T`: 400 with serde's message (which names the field).
fn parse_body<T: DeserializeOwned>(body: &Bytes) -> Result<T, AdminError> {
    if body.is_empty() {
        return Err(AdminError::InvalidRequest(
            "the request needs a JSON body".into(),
        ));
    }
    serde_json::from_slice(body).map_err(|e| AdminError::InvalidRequest(format!("body: {e}")))
}

fn instant(secs: i64) -> String {
    clock::format_instant(secs.saturating_mul(1_000_000))
}

/// A user as the admin API shows it: never the hash or the failures.
pub fn user_json(u: &UserRecord, now: i64) -> Value {
    json!({
        "username": u.username,
        "role": u.role,
        "fhirUser": u.fhir_user,
        "mustChangePassword": u.must_change_password,
        "lockedUntil": u.locked_until.filter(|t| *t > now).map(instant),
        "created": instant(u.created_at),
    })
}

/// A client as the admin API shows it: public keys only.
pub fn client_json(c: &ClientRecord) -> Value {
    let mut out = json!({
        "clientId": c.client_id,
        "name": c.name,
        "kind": c.kind,
        "scope": c.scopes,
        "redirectUris": serde_json::from_str::<Value>(&c.redirect_uris).unwrap_or(json!([])),
        "created": instant(c.created_at),
    });
    if let Some(mut jwks) = c
        .jwks
        .as_deref()
        .and_then(|t| serde_json::from_str::<Value>(t).ok())
    {
        if let Some(keys) = jwks.get_mut("keys").and_then(Value::as_array_mut) {
            for key in keys.iter_mut().filter_map(Value::as_object_mut) {
                for m in PRIVATE_JWK_MEMBERS {
                    key.remove(m);
                }
            }
        }
        out["jwks"] = json!({"keys": jwks.get("keys").cloned().unwrap_or(json!([]))});
    }
    if let Some(url) = &c.jwks_url {
        out["jwksUrl"] = json!(url);
    }
    out
}

/// Hashing a password (Argon2id, ~19 MiB and tens of milliseconds) off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, AccountError> + Send + 'static,
) -> Result<T, AdminError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(AdminError::from),
        Err(e) => Err(AdminError::Internal(format!("hashing the password: {e}"))),
    }
}

fn user_account(username: &str) -> Option<(&'static str, String)> {
    Some((audit::USER_SYSTEM, username.to_string()))
}

fn client_account(client_id: &str) -> Option<(&'static str, String)> {
    Some((audit::CLIENT_SYSTEM, client_id.to_string()))
}

/// `POST /admin/users` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct NewUser {
    username: String,
    password: String,
    role: String,
    #[serde(default)]
    fhir_user: Option<String>,
    #[serde(default)]
    must_change_password: bool,
}

/// `PUT /admin/users/{username}` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct UserUpdate {
    #[serde(default)]
    username: Option<String>,
    role: String,
    #[serde(default)]
    fhir_user: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    must_change_password: Option<bool>,
}

/// `POST /admin/clients` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct NewClient {
    client_id: String,
    scope: String,
    /// `backend` (default), `public` or `confidential`.
    #[serde(default)]
    kind: Option<String>,
    /// The redirect URIs of an app.
    #[serde(default)]
    redirect_uris: Vec<String>,
    #[serde(default)]
    jwks: Option<Value>,
    #[serde(default)]
    jwks_url: Option<String>,
    #[serde(default)]
    name: Option<String>,
}

/// The checked registration of a `POST` or `PUT` client body (kind `backend` when absent).
fn registration(new: &NewClient) -> Result<ClientRecord, AdminError> {
    let kind = accounts::ClientKind::parse(new.kind.as_deref().unwrap_or("backend"))?;
    Ok(accounts::new_client(
        kind,
        &new.client_id,
        new.name.as_deref(),
        new.jwks.as_ref(),
        new.jwks_url.as_deref(),
        &new.redirect_uris,
        &new.scope,
    )?)
}

/// `GET /admin/users`.
pub async fn list_users(State(state): Shared, connect: Connect, headers: HeaderMap) -> Response {
    let admin = match Admin::begin(&state, &connect, &headers, ADMIN_USE, "R", None).await {
        Ok(a) => a,
        Err(resp) => return resp,
    };
    let result = async {
        let now = now_secs();
        let users: Vec<Value> = state
            .ctx
            .store
            .auth_users()
            .await?
            .iter()
            .map(|u| user_json(u, now))
            .collect();
        Ok(json_response(StatusCode::OK, json!({"users": users})))
    }
    .await;
    admin.finish(&state, result).await
}

/// `POST /admin/users`.
pub async fn create_user(
    State(state): Shared,
    connect: Connect,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut admin = match Admin::begin(&state, &connect, &headers, ADMIN_CHANGE, "C", None).await {
        Ok(a) => a,
        Err(resp) => return resp,
    };
    let result = async {
        let new: NewUser = parse_body(&body)?;
        admin.record.account = user_account(&new.username);
        let username = new.username.clone();
        let record = blocking(move || {
            accounts::new_user(
                &new.username,
                &new.password,
                &new.role,
                new.fhir_user.as_deref(),
                new.must_change_password,
            )
        })
        .await?;
        if !state.ctx.store.auth_add_user(&record).await? {
            return Err(AdminError::Conflict(format!(
                "there is a user {username:?} already (PUT /admin/users/{username} changes it)"
            )));
        }
        Ok(created(
            &state,
            &format!("/admin/users/{username}"),
            user_json(&record, now_secs()),
        ))
    }
    .await;
    admin.finish(&state, result).await
}

async fn find_user(state: &AppState, username: &str) -> Result<UserRecord, AdminError> {
    state
        .ctx
        .store
        .auth_user(username)
        .await?
        .ok_or_else(|| AdminError::NotFound(format!("no user {username:?}")))
}

/// `GET /admin/users/{username}`.
pub async fn get_user(
    State(state): Shared,
    connect: Connect,
    headers: HeaderMap,
    Path(username): Path<String>,
) -> Response {
    let account = user_account(&username);
    let admin = match Admin::begin(&state, &connect, &headers, ADMIN_USE, "R", account).await {
        Ok(a) => a,
        Err(resp) => return resp,
    };
    let result = find_user(&state, &username)
        .await
        .map(|u| json_response(StatusCode::OK, user_json(&u, now_secs())));
    admin.finish(&state, result).await
}

/// `PUT /admin/users/{username}`.
pub async fn update_user(
    State(state): Shared,
    connect: Connect,
    headers: HeaderMap,
    Path(username): Path<String>,
    body: Bytes,
) -> Response {
    let account = user_account(&username);
    let admin = match Admin::begin(&state, &connect, &headers, ADMIN_CHANGE, "U", account).await {
        Ok(a) => a,
        Err(resp) => return resp,
    };
    let result = async {
        let change: UserUpdate = parse_body(&body)?;
        if change.username.as_ref().is_some_and(|u| *u != username) {
            return Err(AdminError::InvalidRequest(format!(
                "the body's username differs from the URL's {username:?} (usernames cannot \
                 be changed: add a new user and remove this one)"
            )));
        }
        let mut user = find_user(&state, &username).await?;
        let role = accounts::parse_role(&change.role)?;
        accounts::keep_an_admin(state.ctx.store.as_ref(), &username, Some(role)).await?;
        user.role = role.as_str().to_string();
        if let Some(f) = &change.fhir_user {
            accounts::check_fhir_user(f)?;
        }
        user.fhir_user = change.fhir_user;
        if let Some(password) = change.password {
            user.password_hash = blocking(move || accounts::hash_password(&password)).await?;
            user.must_change_password = false;
            user.failures = "[]".into();
            user.locked_until = None;
        }
        if let Some(flag) = change.must_change_password {
            user.must_change_password = flag;
        }
        state.ctx.store.auth_put_user(&user).await?;
        Ok(json_response(StatusCode::OK, user_json(&user, now_secs())))
    }
    .await;
    admin.finish(&state, result).await
}

/// `DELETE /admin/users/{username}`.
pub async fn delete_user(
    State(state): Shared,
    connect: Connect,
    headers: HeaderMap,
    Path(username): Path<String>,
) -> Response {
    let account = user_account(&username);
    let admin = match Admin::begin(&state, &connect, &headers, ADMIN_CHANGE, "D", account).await {
        Ok(a) => a,
        Err(resp) => return resp,
    };
    let result = async {
        accounts::keep_an_admin(state.ctx.store.as_ref(), &username, None).await?;
        match state.ctx.store.auth_delete_user(&username).await? {
            true => Ok(StatusCode::NO_CONTENT.into_response()),
            false => Err(AdminError::NotFound(format!("no user {username:?}"))),
        }
    }
    .await;
    admin.finish(&state, result).await
}

/// `GET /admin/clients`.
pub async fn list_clients(State(state): Shared, connect: Connect, headers: HeaderMap) -> Response {
    let admin = match Admin::begin(&state, &connect, &headers, ADMIN_USE, "R", None).await {
        Ok(a) => a,
        Err(resp) => return resp,
    };
    let result = state.ctx.store.auth_clients().await.map(|clients| {
        let clients: Vec<Value> = clients.iter().map(client_json).collect();
        json_response(StatusCode::OK, json!({"clients": clients}))
    });
    admin.finish(&state, result.map_err(AdminError::from)).await
}

/// `POST /admin/clients`.
pub async fn create_client(
    State(state): Shared,
    connect: Connect,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut admin = match Admin::begin(&state, &connect, &headers, ADMIN_CHANGE, "C", None).await {
        Ok(a) => a,
        Err(resp) => return resp,
    };
    let result = async {
        let new: NewClient = parse_body(&body)?;
        admin.record.account = client_account(&new.client_id);
        let record = registration(&new)?;
        if !state.ctx.store.auth_add_client(&record).await? {
            return Err(AdminError::Conflict(format!(
                "there is a client {:?} already (DELETE it first to register it anew)",
                record.client_id
            )));
        }
        Ok(created(
            &state,
            &format!("/admin/clients/{}", record.client_id),
            client_json(&record),
        ))
    }
    .await;
    admin.finish(&state, result).await
}

/// `GET /admin/clients/{client_id}`.
pub async fn get_client(
    State(state): Shared,
    connect: Connect,
    headers: HeaderMap,
    Path(client_id): Path<String>,
) -> Response {
    let account = client_account(&client_id);
    let admin = match Admin::begin(&state, &connect, &headers, ADMIN_USE, "R", account).await {
        Ok(a) => a,
        Err(resp) => return resp,
    };
    let result = match state.ctx.store.auth_client(&client_id).await {
        Ok(Some(c)) => Ok(json_response(StatusCode::OK, client_json(&c))),
        Ok(None) => Err(AdminError::NotFound(format!("no client {client_id:?}"))),
        Err(e) => Err(e.into()),
    };
    admin.finish(&state, result).await
}

/// `PUT /admin/clients/{client_id}`: replaces a client's registration (kind, name, keys,
/// redirect URIs, scope) with the same checks as a new one, e.g. to rotate a Backend
/// Services client's keys without unregistering it. The body's `clientId`, if given, must
/// be the URL's; 404 for an unknown client. Tokens already issued keep their scopes until
/// they expire.
pub async fn update_client(
    State(state): Shared,
    connect: Connect,
    headers: HeaderMap,
    Path(client_id): Path<String>,
    body: Bytes,
) -> Response {
    let account = client_account(&client_id);
    let admin = match Admin::begin(&state, &connect, &headers, ADMIN_CHANGE, "U", account).await {
        Ok(a) => a,
        Err(resp) => return resp,
    };
    let result = async {
        let mut value: Value = serde_json::from_slice(&body).map_err(|e| {
            AdminError::InvalidRequest(format!("the body is not a JSON object: {e}"))
        })?;
        match value.get("clientId") {
            None => value["clientId"] = json!(client_id),
            Some(v) if *v == json!(client_id) => {}
            Some(_) => {
                return Err(AdminError::InvalidRequest(format!(
                    "the body's clientId differs from the URL's {client_id:?} (client ids \
                     cannot be changed: register a new client)"
                )));
            }
        }
        let new: NewClient = serde_json::from_value(value)
            .map_err(|e| AdminError::InvalidRequest(format!("body: {e}")))?;
        let existing = state
            .ctx
            .store
            .auth_client(&client_id)
            .await?
            .ok_or_else(|| AdminError::NotFound(format!("no client {client_id:?}")))?;
        let mut record = registration(&new)?;
        record.created_at = existing.created_at;
        state.ctx.store.auth_put_client(&record).await?;
        Ok(json_response(StatusCode::OK, client_json(&record)))
    }
    .await;
    admin.finish(&state, result).await
}

/// `DELETE /admin/clients/{client_id}`.
pub async fn delete_client(
    State(state): Shared,
    connect: Connect,
    headers: HeaderMap,
    Path(client_id): Path<String>,
) -> Response {
    let account = client_account(&client_id);
    let admin = match Admin::begin(&state, &connect, &headers, ADMIN_CHANGE, "D", account).await {
        Ok(a) => a,
        Err(resp) => return resp,
    };
    let result = match state.ctx.store.auth_delete_client(&client_id).await {
        Ok(true) => Ok(StatusCode::NO_CONTENT.into_response()),
        Ok(false) => Err(AdminError::NotFound(format!("no client {client_id:?}"))),
        Err(e) => Err(e.into()),
    };
    admin.finish(&state, result).await
}

/// 405 (JSON) for a method an admin route does not support.
pub async fn method_not_allowed(req: axum::extract::Request) -> AdminError {
    AdminError::MethodNotAllowed(format!(
        "{} is not supported on {}",
        req.method(),
        req.uri().path()
    ))
}

/// 404 (JSON) for an unknown path under `/admin/`.
pub async fn not_found(req: axum::extract::Request) -> AdminError {
    AdminError::NotFound(format!(
        "no admin endpoint at {} (see /admin/users and /admin/clients)",
        req.uri().path()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_json_never_shows_the_hash_or_failures() {
        let u = UserRecord {
            username: "u".into(),
            password_hash: "$argon2id$SECRET".into(),
            role: "DOCTOR".into(),
            fhir_user: Some("Practitioner/1".into()),
            failures: "[1,2]".into(),
            locked_until: Some(50),
            created_at: 1,
            must_change_password: true,
        };
        let text = user_json(&u, 100).to_string();
        assert!(
            !text.contains("SECRET") && !text.contains("argon2"),
            "{text}"
        );
        assert!(!text.contains("failures"), "{text}");
        assert_eq!(user_json(&u, 100)["lockedUntil"], Value::Null);
        assert_eq!(user_json(&u, 10)["mustChangePassword"], true);
        assert!(user_json(&u, 10)["lockedUntil"].is_string());
    }

    #[test]
    fn client_json_drops_private_key_members() {
        let c = ClientRecord {
            client_id: "c".into(),
            name: "c".into(),
            kind: "backend".into(),
            jwks: Some(
                r#"{"keys":[{"kty":"EC","crv":"P-384","x":"X","y":"Y","d":"PRIVATE"}]}"#.into(),
            ),
            jwks_url: None,
            scopes: "system/*.rs".into(),
            redirect_uris: "[]".into(),
            created_at: 1,
        };
        let v = client_json(&c);
        assert!(!v.to_string().contains("PRIVATE"), "{v}");
        assert_eq!(v["jwks"]["keys"][0]["x"], "X");
        assert_eq!(v["scope"], "system/*.rs");
    }

    #[test]
    fn the_403_challenge_names_the_admin_scope() {
        assert!(
            crate::error::WWW_AUTHENTICATE_ADMIN
                .contains(&format!("scope=\"{}\"", crate::auth::authz::ADMIN_SCOPE))
        );
    }

    #[test]
    fn unknown_body_fields_are_refused() {
        let body =
            Bytes::from_static(br#"{"username":"u","password":"p","role":"DOCTOR","pasword":"x"}"#);
        assert!(matches!(
            parse_body::<NewUser>(&body),
            Err(AdminError::InvalidRequest(m)) if m.contains("pasword")
        ));
    }
}
