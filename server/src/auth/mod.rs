//! The server side of MediFlow's security (issue 5), on top of the pure `mediflow-auth`
//! crate: signing keys kept in the database, bearer-token authentication of every FHIR
//! request, scope enforcement ([`authz`]), the AuditEvent trail ([`audit`]), the rules for
//! user and client accounts and the administrator of the first start ([`accounts`]) and
//! the `mediflow client|keys|token|user` commands ([`cli`]). The OAuth endpoints
//! themselves are in `crate::http::oauth`, the admin API in `crate::http::admin`.
//!
//! Identifiers (decided here, documented in the README § Security):
//! * **issuer** (`iss` of our access tokens): the server's root URL, i.e. the FHIR base
//!   URL (`--base-url`, default `http://LISTEN/fhir`) without its trailing `/fhir`, e.g.
//!   `http://127.0.0.1:8080`. The OAuth endpoints live under it (`/auth/token`,
//!   `/auth/jwks`, `/.well-known/smart-configuration`).
//! * **audience** (`aud` of our access tokens): the FHIR base URL itself, as SMART App
//!   Launch 2.0 asks (`aud` = the FHIR server the token is for).
//! * **token endpoint URL** (the `aud` a Backend Services client assertion must carry,
//!   SMART backend-services.html § "Authenticating to the Token endpoint"):
//!   `{issuer}/auth/token`.
//!
//! Keys (issue 5, item 8): an ES256 key is generated on first start (or by the first
//! `mediflow token`/`keys rotate`) and stored in `auth_signing_keys`; `mediflow keys
//! rotate` makes a new key current and retires the old one, which stays in the JWKS until
//! every token it signed has expired ([`ACCESS_TOKEN_LIFETIME_SECS`] after retirement). A
//! running server reloads its keys when it meets an unknown `kid`, so keys rotated (or
//! tokens minted) by the CLI on the same database are picked up without a restart.
//!
//! External identity provider (issue 5, item 6): with `serve --oidc-issuer`, a token
//! whose (unverified) `iss` is that issuer is verified against the issuer's keys instead
//! ([`oidc`]); every other token must be one of ours.

pub mod accounts;
pub mod audit;
pub mod authz;
pub mod cli;
pub mod oidc;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use axum::http::{HeaderMap, header};
use mediflow_auth::keys::KeyError;
use mediflow_auth::scopes::ScopeError;
use mediflow_auth::tokens::{
    self, ACCESS_TOKEN_LIFETIME_SECS, AccessClaims, CLOCK_LEEWAY_SECS, IdTokenClaims, TokenError,
};
use mediflow_auth::{Jwks, KeyAlgorithm, ScopeSet, SigningKey};

use crate::storage::auth::StoredKey;
use crate::storage::{Store, StoreError};

/// Failures of the security set-up and of the `mediflow client|keys|token|user` commands.
#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    /// Database failure.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored or registered key is unusable.
    #[error("key: {0}")]
    Key(#[from] KeyError),
    /// A token could not be signed.
    #[error("token: {0}")]
    Token(#[from] TokenError),
    /// A malformed scope string.
    #[error("scope: {0}")]
    Scope(#[from] ScopeError),
    /// Bad command input (file not found, not JSON, unknown role ...).
    #[error("{0}")]
    Input(String),
    /// A user or client account refused ([`accounts`]).
    #[error(transparent)]
    Account(#[from] accounts::AccountError),
}

/// Why a request's bearer token was refused (answered 401 by `crate::http`).
#[derive(Debug, thiserror::Error)]
pub enum AuthFailure {
    /// No `Authorization: Bearer` header.
    #[error("this endpoint needs an access token: send Authorization: Bearer <token>")]
    Missing,
    /// The token does not verify (signature, expiry, issuer, audience ...).
    #[error("invalid access token: {0}")]
    Invalid(#[from] TokenError),
    /// The token was revoked (RFC 7009).
    #[error("invalid access token: revoked")]
    Revoked,
    /// The token's scope string is malformed.
    #[error("invalid access token: {0}")]
    Scope(#[from] ScopeError),
}

/// Who is making a request, from a verified access token (or "anonymous" with
/// `--no-auth`). Put in the request extensions by the authentication middleware.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The OAuth client (`client_id` claim).
    pub client_id: String,
    /// The user, or the client for Backend Services (`sub` claim).
    pub sub: String,
    /// The granted scopes.
    pub scopes: ScopeSet,
    /// The launch patient (`patient` claim): `patient/` scopes are confined to its
    /// compartment.
    pub patient: Option<String>,
    /// The user's FHIR resource (`fhirUser` claim).
    pub fhir_user: Option<String>,
    /// The access token's `jti` (our tokens only: revocation applies to them).
    pub jti: Option<String>,
    /// The external OpenID Connect issuer of the token (`--oidc-issuer`), `None` for our
    /// own tokens. Audit records then name the subject as `iss` + `sub`.
    pub issuer: Option<String>,
    /// True with `--no-auth`: every scope, audited as agent "anonymous".
    pub anonymous: bool,
}

impl Principal {
    /// The principal of every request when authentication is off (`--no-auth`): all
    /// system scopes.
    pub fn anonymous() -> Principal {
        Principal {
            client_id: "anonymous".to_string(),
            sub: "anonymous".to_string(),
            scopes: ScopeSet::parse("system/*.cruds").unwrap_or_default(),
            patient: None,
            fhir_user: None,
            jti: None,
            issuer: None,
            anonymous: true,
        }
    }
}

/// Who and what a user-facing access token is for: the authorization-code and
/// refresh-token grants of SMART App Launch 2.0 (§ "Obtaining access token").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenContext {
    /// The OAuth client.
    pub client_id: String,
    /// The user (`sub`).
    pub sub: String,
    /// The granted scopes.
    pub scope: ScopeSet,
    /// Launch context: the patient id.
    pub patient: Option<String>,
    /// Launch context: the encounter id.
    pub encounter: Option<String>,
    /// The user's FHIR resource, relative (`Practitioner/1`).
    pub fhir_user: Option<String>,
    /// The user's hospital role name.
    pub role: Option<String>,
}

/// Our signing keys: the current one and the published set (current and retired).
struct KeyRing {
    current: Arc<SigningKey>,
    jwks: Jwks,
}

/// The security configuration and state of a running server.
pub struct Security {
    /// Whether bearer tokens are required (false with `--no-auth`).
    pub enabled: bool,
    /// `iss` of our tokens (see the module doc).
    pub issuer: String,
    /// `aud` of our tokens: the FHIR base URL.
    pub audience: String,
    /// The token endpoint URL, `{issuer}/auth/token`.
    pub token_url: String,
    store: Option<Arc<dyn Store>>,
    keys: RwLock<KeyRing>,
    revoked: RwLock<HashSet<String>>,
    last_reload: std::sync::Mutex<i64>,
    /// Verified tokens (token text → principal and expiry), so that a client's repeated
    /// requests cost a lookup instead of an ECDSA verification each (measured on the read
    /// benchmark: 3,300 requests/s verifying every time, see the closing note of issue
    /// 5). Bounded by [`VERIFIED_CACHE_MAX`]; expiry and revocation are checked on every
    /// hit.
    verified: RwLock<HashMap<String, (Arc<Principal>, i64)>>,
    /// The external OpenID Connect issuer whose tokens are accepted too (`--oidc-issuer`).
    external: Option<Arc<oidc::ExternalIssuer>>,
}

/// Most verified tokens remembered at once (the cache is cleared when full).
pub const VERIFIED_CACHE_MAX: usize = 10_000;

/// Unix seconds now.
pub fn now_secs() -> i64 {
    crate::clock::now_micros().div_euclid(1_000_000)
}

/// The issuer for a FHIR base URL: the base without a trailing `/fhir`.
pub fn issuer_for(base_url: &str) -> String {
    let base = base_url.trim_end_matches('/');
    base.strip_suffix("/fhir").unwrap_or(base).to_string()
}

/// Loads our signing keys from the database, generating and storing an ES256 key when
/// there is no current one. Retired keys whose tokens have all expired are left out of
/// the set.
async fn load_keys(store: &dyn Store) -> Result<KeyRing, SecurityError> {
    let mut rows = store.auth_keys().await?;
    if !rows.iter().any(|r| r.retired_at.is_none()) {
        let key = SigningKey::generate();
        let row = stored(&key, now_secs());
        store.auth_add_key(&row, None).await?;
        tracing::info!(
            kid = key.kid(),
            alg = key.alg().as_str(),
            "generated a signing key"
        );
        rows.push(row);
    }
    let mut jwks = Jwks::new();
    let mut current = None;
    for row in &rows {
        let key = SigningKey::from_pkcs8_pem(&row.pkcs8_pem)?;
        jwks.add(key.public_jwk(), row.retired_at)?;
        if row.retired_at.is_none() {
            current = Some(key);
        }
    }
    jwks.prune(now_secs(), ACCESS_TOKEN_LIFETIME_SECS + CLOCK_LEEWAY_SECS);
    let current = current.ok_or_else(|| SecurityError::Input("no current signing key".into()))?;
    Ok(KeyRing {
        current: Arc::new(current),
        jwks,
    })
}

fn stored(key: &SigningKey, now: i64) -> StoredKey {
    StoredKey {
        kid: key.kid().to_string(),
        alg: key.alg().as_str().to_string(),
        pkcs8_pem: key.to_pkcs8_pem().to_string(),
        created_at: now,
        retired_at: None,
    }
}

/// Key rotation (`mediflow keys rotate`): a new ES256 key becomes current; the others are
/// retired now. Returns the new `kid`.
pub async fn rotate_keys(store: &dyn Store, alg: KeyAlgorithm) -> Result<String, SecurityError> {
    let key = SigningKey::generate_with(alg);
    let now = now_secs();
    store.auth_add_key(&stored(&key, now), Some(now)).await?;
    Ok(key.kid().to_string())
}

impl Security {
    /// Loads (or creates) the signing keys and the revocation list from `store`.
    pub async fn load(
        store: Arc<dyn Store>,
        base_url: &str,
        enabled: bool,
    ) -> Result<Security, SecurityError> {
        let keys = load_keys(store.as_ref()).await?;
        let revoked = store.auth_revoked(now_secs()).await?;
        Ok(Self::build(
            Some(store),
            base_url,
            enabled,
            keys,
            revoked.into_iter().collect(),
        ))
    }

    /// Security turned off with an ephemeral key that is never stored (the in-process
    /// server of `mediflow bench`).
    pub fn disabled(base_url: &str) -> Security {
        let key = SigningKey::generate();
        let keys = KeyRing {
            jwks: Jwks::with_current(&key),
            current: Arc::new(key),
        };
        Self::build(None, base_url, false, keys, HashSet::new())
    }

    fn build(
        store: Option<Arc<dyn Store>>,
        base_url: &str,
        enabled: bool,
        keys: KeyRing,
        revoked: HashSet<String>,
    ) -> Security {
        let issuer = issuer_for(base_url);
        Security {
            enabled,
            token_url: format!("{issuer}/auth/token"),
            audience: base_url.trim_end_matches('/').to_string(),
            issuer,
            store,
            keys: RwLock::new(keys),
            revoked: RwLock::new(revoked),
            last_reload: std::sync::Mutex::new(0),
            verified: RwLock::new(HashMap::new()),
            external: None,
        }
    }

    /// Accepts the tokens of an external OpenID Connect issuer too (`serve
    /// --oidc-issuer`). Refused when it claims to be our own issuer.
    pub fn with_external(
        mut self,
        issuer: Arc<oidc::ExternalIssuer>,
    ) -> Result<Security, SecurityError> {
        if issuer.issuer().trim_end_matches('/') == self.issuer.trim_end_matches('/') {
            return Err(SecurityError::Input(format!(
                "--oidc-issuer {} is MediFlow's own issuer",
                issuer.issuer()
            )));
        }
        self.external = Some(issuer);
        Ok(self)
    }

    /// The external issuer, if one is configured.
    pub fn external(&self) -> Option<&oidc::ExternalIssuer> {
        self.external.as_deref()
    }

    /// The JWK Set to publish at `/auth/jwks`.
    pub fn jwks_json(&self) -> serde_json::Value {
        match self.keys.read() {
            Ok(k) => k.jwks.to_json(),
            Err(p) => p.into_inner().jwks.to_json(),
        }
    }

    fn current_key(&self) -> Arc<SigningKey> {
        match self.keys.read() {
            Ok(k) => k.current.clone(),
            Err(p) => p.into_inner().current.clone(),
        }
    }

    /// Reloads the keys from the database, at most every five seconds (an unknown `kid`
    /// may come from a key rotated by the CLI). True when a reload happened.
    async fn reload_keys(&self) -> bool {
        let Some(store) = &self.store else {
            return false;
        };
        let now = now_secs();
        {
            let Ok(mut last) = self.last_reload.lock() else {
                return false;
            };
            if now - *last < 5 {
                return false;
            }
            *last = now;
        }
        match load_keys(store.as_ref()).await {
            Ok(ring) => {
                if let Ok(mut k) = self.keys.write() {
                    *k = ring;
                }
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "reloading signing keys failed");
                false
            }
        }
    }

    /// Signs an access token for `client_id`/`sub` with `scope`, valid
    /// [`ACCESS_TOKEN_LIFETIME_SECS`] from `now`.
    pub fn mint(
        &self,
        client_id: &str,
        sub: &str,
        scope: &ScopeSet,
        patient: Option<String>,
        now: i64,
    ) -> Result<(String, AccessClaims), SecurityError> {
        self.mint_context(
            &TokenContext {
                client_id: client_id.to_string(),
                sub: sub.to_string(),
                scope: scope.clone(),
                patient,
                encounter: None,
                fhir_user: None,
                role: None,
            },
            now,
        )
    }

    /// Signs an access token carrying a user's launch context (authorization-code and
    /// refresh grants), valid [`ACCESS_TOKEN_LIFETIME_SECS`] from `now`.
    pub fn mint_context(
        &self,
        ctx: &TokenContext,
        now: i64,
    ) -> Result<(String, AccessClaims), SecurityError> {
        let claims = AccessClaims {
            iss: self.issuer.clone(),
            sub: ctx.sub.clone(),
            aud: self.audience.clone(),
            exp: now + ACCESS_TOKEN_LIFETIME_SECS,
            iat: now,
            jti: uuid::Uuid::new_v4().to_string(),
            scope: ctx.scope.to_string(),
            client_id: ctx.client_id.clone(),
            patient: ctx.patient.clone(),
            encounter: ctx.encounter.clone(),
            fhir_user: ctx.fhir_user.clone(),
            role: ctx.role.clone(),
        };
        let token = tokens::issue_access_token(&self.current_key(), &claims)?;
        Ok((token, claims))
    }

    /// Signs an OpenID Connect id_token (OIDC Core §2) with the current key.
    pub fn sign_id_token(&self, claims: &IdTokenClaims) -> Result<String, SecurityError> {
        Ok(tokens::issue_id_token(&self.current_key(), claims)?)
    }

    /// Verifies one of our access tokens (signature, `exp`, `iss`, `aud`, revocation),
    /// reloading the keys once on an unknown `kid`.
    pub async fn verify(&self, token: &str) -> Result<AccessClaims, AuthFailure> {
        let now = now_secs();
        let check = |s: &Security| {
            let keys = match s.keys.read() {
                Ok(k) => k,
                Err(p) => p.into_inner(),
            };
            tokens::verify_access_token(token, &keys.jwks, &s.issuer, &s.audience, now)
        };
        let claims = match check(self) {
            Err(TokenError::UnknownKid(_)) if self.reload_keys().await => check(self)?,
            other => other?,
        };
        if self.is_revoked(&claims.jti) {
            return Err(AuthFailure::Revoked);
        }
        Ok(claims)
    }

    /// Remembers a revoked token's `jti` (RFC 7009) in memory and in the database.
    pub async fn revoke(&self, jti: &str, exp: i64) -> Result<(), StoreError> {
        if let Some(store) = &self.store {
            store.auth_revoke(jti, exp).await?;
        }
        if let Ok(mut r) = self.revoked.write() {
            r.insert(jti.to_string());
        }
        Ok(())
    }

    fn is_revoked(&self, jti: &str) -> bool {
        match self.revoked.read() {
            Ok(r) => r.contains(jti),
            Err(p) => p.into_inner().contains(jti),
        }
    }

    /// The principal of a request: from its bearer token, or anonymous when
    /// authentication is off. A token whose unverified `iss` is the external issuer's is
    /// verified by it ([`oidc::ExternalIssuer::authenticate`]), any other must be ours.
    /// Tokens verified before are looked up (checking expiry and revocation again) rather
    /// than verified anew.
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Arc<Principal>, AuthFailure> {
        static ANONYMOUS: std::sync::OnceLock<Arc<Principal>> = std::sync::OnceLock::new();
        if !self.enabled {
            return Ok(ANONYMOUS
                .get_or_init(|| Arc::new(Principal::anonymous()))
                .clone());
        }
        let token = bearer(headers).ok_or(AuthFailure::Missing)?;
        let hit = self
            .verified
            .read()
            .ok()
            .and_then(|c| c.get(token).cloned());
        if let Some((p, exp)) = hit {
            if exp + CLOCK_LEEWAY_SECS < now_secs() {
                if let Ok(mut c) = self.verified.write() {
                    c.remove(token);
                }
                return Err(AuthFailure::Invalid(TokenError::Expired));
            }
            if p.jti.as_deref().is_some_and(|j| self.is_revoked(j)) {
                return Err(AuthFailure::Revoked);
            }
            return Ok(p);
        }
        let (p, exp) = match &self.external {
            Some(ext) if tokens::unverified_issuer(token).as_deref() == Some(ext.issuer()) => {
                let (p, exp) = ext.authenticate(token, now_secs()).await?;
                (Arc::new(p), exp)
            }
            _ => {
                let claims = self.verify(token).await?;
                let exp = claims.exp;
                let p = Principal {
                    scopes: ScopeSet::parse(&claims.scope)?,
                    client_id: claims.client_id,
                    sub: claims.sub,
                    patient: claims.patient,
                    fhir_user: claims.fhir_user,
                    jti: Some(claims.jti),
                    issuer: None,
                    anonymous: false,
                };
                (Arc::new(p), exp)
            }
        };
        if let Ok(mut c) = self.verified.write() {
            if c.len() >= VERIFIED_CACHE_MAX {
                let now = now_secs();
                c.retain(|_, (_, e)| *e + CLOCK_LEEWAY_SECS >= now);
                if c.len() >= VERIFIED_CACHE_MAX {
                    c.clear();
                }
            }
            c.insert(token.to_string(), (p.clone(), exp));
        }
        Ok(p)
    }
}

/// The token of an `Authorization: Bearer <token>` header (RFC 6750 §2.1; the scheme is
/// case-insensitive).
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issuer_is_the_base_without_fhir() {
        assert_eq!(
            issuer_for("http://127.0.0.1:8080/fhir"),
            "http://127.0.0.1:8080"
        );
        assert_eq!(
            issuer_for("https://h.example/api/"),
            "https://h.example/api"
        );
    }

    #[tokio::test]
    async fn minted_tokens_verify_and_others_do_not() {
        let s = Security::disabled("http://h/fhir");
        let scope = ScopeSet::parse("system/Patient.rs").unwrap();
        let (token, claims) = s.mint("c", "c", &scope, None, now_secs()).unwrap();
        assert_eq!(s.verify(&token).await.unwrap().jti, claims.jti);
        let other = Security::disabled("http://h/fhir");
        assert!(other.verify(&token).await.is_err());
        s.revoke(&claims.jti, claims.exp).await.unwrap();
        assert!(matches!(s.verify(&token).await, Err(AuthFailure::Revoked)));
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, "bearer abc".parse().unwrap());
        assert_eq!(bearer(&h), Some("abc"));
        h.insert(header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(bearer(&h), None);
    }
}
