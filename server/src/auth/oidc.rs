//! An external OpenID Connect identity provider (issue 5, item 6): access tokens issued
//! by a configured issuer (a hospital's Keycloak, Entra ID, ...) are accepted next to our
//! own. What lives here: the `serve --oidc-*` flags ([`OidcArgs`]), the issuer's key set
//! (discovered, fetched, cached and refreshed), and the mapping of a verified external
//! token to a [`Principal`]. The signature and claim checks themselves are
//! [`mediflow_auth::tokens::verify_external`]; routing a token here by its (unverified)
//! `iss` is `Security::authenticate`.
//!
//! * **Keys**: the JWK Set at `--oidc-jwks-url`, or else at the `jwks_uri` of the issuer's
//!   discovery document `{issuer}/.well-known/openid-configuration` (OpenID Connect
//!   Discovery 1.0 §4; its `issuer` must equal the configured issuer, §4.3). Fetched at
//!   start-up (a failure is logged, not fatal: the provider may come up later) and again
//!   when a token names a `kid` the cached set lacks (the provider rotated its keys), at
//!   most once per `--oidc-jwks-refresh-secs` (default 10 s), so a stream of tokens with
//!   made-up `kid`s cannot make us hammer the provider. Requests that meet an unknown
//!   `kid` while a fetch is running wait for it and try the new set.
//! * **Checks**: signature (RS256/384/512, PS256/384/512, ES256/384), `iss` = the
//!   configured issuer, `aud` contains `--oidc-audience` (default: our FHIR base URL),
//!   `exp` (required), `nbf`, `iat`, with `mediflow_auth::tokens::CLOCK_LEEWAY_SECS`.
//! * **Mapping**: scopes from `--oidc-scope-claim` (a space-separated string or an array
//!   of strings), parsed **leniently** ([`ScopeSet::parse_lenient`]): a provider's scope
//!   claim also carries `openid`, `profile` and other systems' scopes, so a malformed
//!   SMART-looking scope grants nothing instead of refusing the whole token. `fhirUser`
//!   from `--oidc-fhir-user-claim`, the launch patient (which `patient/` scopes are
//!   confined to) from `--oidc-patient-claim` (a bare id or a `Patient/id` reference).
//!   The client is the token's `client_id` (RFC 9068 §2.2) or `azp` (OIDC Core §2), else
//!   its subject. With `--oidc-role-claim`, the user's hospital role caps the scopes as
//!   for our own login; a token without a known role is refused.
//!
//! The HTTP client is the workspace's `reqwest` with rustls (aws-lc-rs provider) and the
//! platform certificate verifier: the discovery document and the JWK Set are fetched over
//! `https://` (or `http://` on a trusted network).

use std::sync::{Arc, RwLock};
use std::time::Duration;

use mediflow_auth::tokens::{self, ExternalToken, TokenError};
use mediflow_auth::{Jwks, ScopeSet};
use serde_json::Value;

use super::{AuthFailure, Principal};

/// Default least time between two fetches of the provider's JWK Set, seconds.
pub const DEFAULT_JWKS_REFRESH_SECS: u64 = 10;
/// How long one fetch (discovery document or JWK Set) may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest discovery document or JWK Set accepted, bytes.
const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;

/// The `mediflow serve --oidc-*` flags (README § Security).
#[derive(Debug, Clone, clap::Args)]
pub struct OidcArgs {
    /// Accept access tokens of this external OpenID Connect issuer (its `iss`, e.g.
    /// http://idp.hospital.local/realms/staff), next to MediFlow's own tokens.
    #[arg(long, env = "MEDIFLOW_OIDC_ISSUER")]
    pub oidc_issuer: Option<String>,
    /// The `aud` external tokens must carry (default: the FHIR base URL).
    #[arg(long, env = "MEDIFLOW_OIDC_AUDIENCE")]
    pub oidc_audience: Option<String>,
    /// The issuer's JWK Set URL (default: `jwks_uri` of
    /// {issuer}/.well-known/openid-configuration).
    #[arg(long, env = "MEDIFLOW_OIDC_JWKS_URL")]
    pub oidc_jwks_url: Option<String>,
    /// The claim holding the SMART scopes (a space-separated string or an array; dotted
    /// paths such as `ext.scope` reach into objects).
    #[arg(long, env = "MEDIFLOW_OIDC_SCOPE_CLAIM", default_value = "scope")]
    pub oidc_scope_claim: String,
    /// The claim holding the user's FHIR resource (`Practitioner/7`).
    #[arg(
        long,
        env = "MEDIFLOW_OIDC_FHIR_USER_CLAIM",
        default_value = "fhirUser"
    )]
    pub oidc_fhir_user_claim: String,
    /// The claim holding the launch patient's id (`patient/` scopes are confined to it).
    #[arg(long, env = "MEDIFLOW_OIDC_PATIENT_CLAIM", default_value = "patient")]
    pub oidc_patient_claim: String,
    /// The claim holding the user's hospital role (ADMIN, DOCTOR, … or an array holding
    /// one): when set, a token's scopes are capped by that role's cap as for our own
    /// login, and a token without a known role is refused. Unset: no role is read.
    #[arg(long, env = "MEDIFLOW_OIDC_ROLE_CLAIM")]
    pub oidc_role_claim: Option<String>,
    /// Least seconds between two fetches of the issuer's JWK Set (a token with an unknown
    /// `kid` triggers one).
    #[arg(long, env = "MEDIFLOW_OIDC_JWKS_REFRESH_SECS", default_value_t = DEFAULT_JWKS_REFRESH_SECS)]
    pub oidc_jwks_refresh_secs: u64,
}

impl OidcArgs {
    /// The configuration, `None` without `--oidc-issuer`; an error when other `--oidc-*`
    /// URLs are given without it.
    pub fn into_config(self) -> Result<Option<OidcConfig>, OidcError> {
        let Some(issuer) = self.oidc_issuer.filter(|i| !i.trim().is_empty()) else {
            if self.oidc_audience.is_some() || self.oidc_jwks_url.is_some() {
                return Err(OidcError::Config(
                    "--oidc-audience and --oidc-jwks-url need --oidc-issuer".into(),
                ));
            }
            return Ok(None);
        };
        Ok(Some(OidcConfig {
            issuer: issuer.trim().to_string(),
            audience: self.oidc_audience,
            jwks_url: self.oidc_jwks_url,
            scope_claim: self.oidc_scope_claim,
            fhir_user_claim: self.oidc_fhir_user_claim,
            patient_claim: self.oidc_patient_claim,
            role_claim: self.oidc_role_claim.filter(|c| !c.trim().is_empty()),
            jwks_refresh: Duration::from_secs(self.oidc_jwks_refresh_secs),
        }))
    }
}

/// Settings of the external issuer (see the module doc).
#[derive(Debug, Clone)]
pub struct OidcConfig {
    /// The issuer identifier, compared verbatim with `iss`.
    pub issuer: String,
    /// The required `aud`; `None` = our FHIR base URL.
    pub audience: Option<String>,
    /// The JWK Set URL; `None` = discovered.
    pub jwks_url: Option<String>,
    /// Claim with the scopes.
    pub scope_claim: String,
    /// Claim with `fhirUser`.
    pub fhir_user_claim: String,
    /// Claim with the launch patient.
    pub patient_claim: String,
    /// Claim with the hospital role, if roles are read.
    pub role_claim: Option<String>,
    /// Least time between two JWK Set fetches.
    pub jwks_refresh: Duration,
}

/// Failures of the external issuer's set-up and key fetches.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    /// Inconsistent flags.
    #[error("OIDC configuration: {0}")]
    Config(String),
    /// The discovery document or JWK Set could not be fetched.
    #[error("fetching {url}: {reason}")]
    Fetch {
        /// The URL fetched.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// The discovery document is unusable (OIDC Discovery §4.3).
    #[error("discovery document {url}: {reason}")]
    Discovery {
        /// The document's URL.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The JWK Set is not one.
    #[error("JWK Set {url}: {source}")]
    Jwks {
        /// The set's URL.
        url: String,
        /// The key error.
        source: mediflow_auth::keys::KeyError,
    },
}

/// The cached key set and how many times it was replaced.
struct KeyCache {
    jwks: Jwks,
    generation: u64,
}

/// State of the fetcher, behind an async mutex: one fetch at a time.
struct FetchState {
    /// When the last fetch was attempted (successful or not).
    last_attempt: Option<tokio::time::Instant>,
    /// The JWK Set URL once known (configured or discovered).
    jwks_url: Option<String>,
}

/// A configured external issuer with its cached keys.
pub struct ExternalIssuer {
    config: OidcConfig,
    audience: String,
    keys: RwLock<KeyCache>,
    fetch: tokio::sync::Mutex<FetchState>,
    http: reqwest::Client,
}

impl ExternalIssuer {
    /// An issuer with an empty key cache; `default_audience` (our FHIR base URL) applies
    /// when the configuration names none. Call [`ExternalIssuer::refresh`] to load keys.
    pub fn new(config: OidcConfig, default_audience: &str) -> Result<ExternalIssuer, OidcError> {
        let http = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .build()
            .map_err(|e| OidcError::Config(format!("HTTP client: {e}")))?;
        Ok(ExternalIssuer {
            audience: config
                .audience
                .clone()
                .unwrap_or_else(|| default_audience.to_string()),
            fetch: tokio::sync::Mutex::new(FetchState {
                last_attempt: None,
                jwks_url: config.jwks_url.clone(),
            }),
            config,
            keys: RwLock::new(KeyCache {
                jwks: Jwks::new(),
                generation: 0,
            }),
            http,
        })
    }

    /// The issuer identifier (`iss` of its tokens).
    pub fn issuer(&self) -> &str {
        &self.config.issuer
    }

    /// The audience its tokens must name.
    pub fn audience(&self) -> &str {
        &self.audience
    }

    /// Fetches the key set now (discovering its URL first when needed), whatever the rate
    /// limit; returns the number of keys. Used at start-up.
    pub async fn refresh(&self) -> Result<usize, OidcError> {
        let mut state = self.fetch.lock().await;
        self.fetch_locked(&mut state).await
    }

    async fn fetch_locked(&self, state: &mut FetchState) -> Result<usize, OidcError> {
        state.last_attempt = Some(tokio::time::Instant::now());
        let url = match &state.jwks_url {
            Some(u) => u.clone(),
            None => {
                let u = self.discover().await?;
                state.jwks_url = Some(u.clone());
                u
            }
        };
        let doc = self.get_json(&url).await?;
        let jwks = Jwks::from_json(&doc).map_err(|source| OidcError::Jwks {
            url: url.clone(),
            source,
        })?;
        let n = jwks.len();
        let mut cache = match self.keys.write() {
            Ok(c) => c,
            Err(p) => p.into_inner(),
        };
        cache.jwks = jwks;
        cache.generation += 1;
        tracing::info!(issuer = %self.config.issuer, jwks_url = %url, keys = n, "external issuer keys loaded");
        Ok(n)
    }

    /// The `jwks_uri` of the discovery document (OIDC Discovery §4: `{issuer}` without a
    /// trailing `/`, then `/.well-known/openid-configuration`; §4.3: its `issuer` must be
    /// the configured one).
    async fn discover(&self) -> Result<String, OidcError> {
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.config.issuer.trim_end_matches('/')
        );
        let doc = self.get_json(&url).await?;
        let bad = |reason: &str| OidcError::Discovery {
            url: url.clone(),
            reason: reason.to_string(),
        };
        if doc.get("issuer").and_then(Value::as_str) != Some(self.config.issuer.as_str()) {
            return Err(bad(&format!(
                "its issuer {} is not the configured {}",
                doc.get("issuer").unwrap_or(&Value::Null),
                self.config.issuer
            )));
        }
        doc.get("jwks_uri")
            .and_then(Value::as_str)
            .filter(|u| !u.is_empty())
            .map(str::to_string)
            .ok_or_else(|| bad("no jwks_uri"))
    }

    async fn get_json(&self, url: &str) -> Result<Value, OidcError> {
        let fail = |reason: String| OidcError::Fetch {
            url: url.to_string(),
            reason,
        };
        let resp = self
            .http
            .get(url)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| fail(e.to_string()))?;
        if !resp.status().is_success() {
            return Err(fail(format!("HTTP {}", resp.status())));
        }
        let body = resp.bytes().await.map_err(|e| fail(e.to_string()))?;
        if body.len() > MAX_DOCUMENT_BYTES {
            return Err(fail(format!("larger than {MAX_DOCUMENT_BYTES} bytes")));
        }
        serde_json::from_slice(&body).map_err(|e| fail(format!("not JSON: {e}")))
    }

    /// Refetches the key set after an unknown `kid` was met with the set of `generation`.
    /// True when the caller should try again: the set changed meanwhile (another request
    /// refreshed it) or this call refreshed it. False when the last attempt is more recent
    /// than the refresh interval, or the fetch failed.
    async fn refresh_after(&self, generation: u64) -> bool {
        let mut state = self.fetch.lock().await;
        if self.generation() != generation {
            return true;
        }
        if state
            .last_attempt
            .is_some_and(|t| t.elapsed() < self.config.jwks_refresh)
        {
            return false;
        }
        match self.fetch_locked(&mut state).await {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(issuer = %self.config.issuer, error = %e, "refreshing the external issuer's keys failed");
                false
            }
        }
    }

    fn generation(&self) -> u64 {
        match self.keys.read() {
            Ok(c) => c.generation,
            Err(p) => p.into_inner().generation,
        }
    }

    /// One verification against the cached set; also returns the set's generation.
    fn check(&self, token: &str, now: i64) -> (Result<ExternalToken, TokenError>, u64) {
        let cache = match self.keys.read() {
            Ok(c) => c,
            Err(p) => p.into_inner(),
        };
        let result = tokens::verify_external(
            token,
            &cache.jwks,
            &self.config.issuer,
            &self.audience,
            &self.config.scope_claim,
            &self.config.fhir_user_claim,
            now,
        );
        (result, cache.generation)
    }

    /// Verifies a token of this issuer (refreshing the keys once on an unknown `kid`) and
    /// maps it to a principal (see the module doc); the token's expiry comes along for the
    /// verified-token cache.
    pub async fn authenticate(
        &self,
        token: &str,
        now: i64,
    ) -> Result<(Principal, i64), AuthFailure> {
        let verified = match self.check(token, now) {
            (Err(TokenError::UnknownKid(_)), generation)
                if self.refresh_after(generation).await =>
            {
                self.check(token, now).0?
            }
            (other, _) => other?,
        };
        let principal = self.principal(&verified)?;
        Ok((principal, verified.exp))
    }

    fn principal(&self, t: &ExternalToken) -> Result<Principal, AuthFailure> {
        let text = |name: &str| {
            t.claims
                .get(name)
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        let patient = match t.claim(&self.config.patient_claim) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => {
                Some(patient_id(s).ok_or(AuthFailure::Invalid(TokenError::Claim("patient")))?)
            }
            Some(_) => return Err(AuthFailure::Invalid(TokenError::Claim("patient"))),
        };
        let mut scopes = ScopeSet::parse_lenient(&t.scope);
        if let Some(name) = &self.config.role_claim {
            // Hospital roles (hospital-model.md § Roles) cap what the provider granted,
            // as they cap our own grants.
            let role =
                role_of(t.claim(name)).ok_or(AuthFailure::Invalid(TokenError::Claim("role")))?;
            scopes = scopes.capped_by(&[role.cap()]);
        }
        Ok(Principal {
            client_id: text("client_id")
                .or_else(|| text("azp"))
                .unwrap_or_else(|| t.sub.clone()),
            sub: t.sub.clone(),
            scopes,
            patient,
            fhir_user: t.fhir_user.clone(),
            jti: None,
            issuer: Some(self.config.issuer.clone()),
            anonymous: false,
        })
    }
}

/// The hospital role of a role claim: a role name, or the first role name of an array
/// (identity providers often put several roles of other systems there).
fn role_of(claim: Option<&Value>) -> Option<mediflow_auth::Role> {
    let parse = |v: &Value| {
        v.as_str()
            .and_then(|s| s.parse::<mediflow_auth::Role>().ok())
    };
    match claim? {
        Value::Array(items) => items.iter().find_map(parse),
        other => parse(other),
    }
}

/// The patient id of a `patient` claim: a bare id, `Patient/id`, or an absolute URL
/// ending in `Patient/id`; `None` when it is no valid FHIR id (R4 datatypes.html#id:
/// `[A-Za-z0-9\-\.]{1,64}`).
fn patient_id(claim: &str) -> Option<String> {
    let id = match claim.rsplit_once("Patient/") {
        Some((_, id)) => id,
        None => claim,
    };
    let valid = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    valid.then(|| id.to_string())
}

/// Builds the issuer of `config` and loads its keys once; a failed first load is logged
/// and retried when the first token arrives.
pub async fn start(
    config: OidcConfig,
    default_audience: &str,
) -> Result<Arc<ExternalIssuer>, OidcError> {
    let issuer = ExternalIssuer::new(config, default_audience)?;
    if let Err(e) = issuer.refresh().await {
        tracing::warn!(
            issuer = %issuer.issuer(),
            error = %e,
            "cannot load the external issuer's keys yet: its tokens are refused until they load"
        );
    }
    Ok(Arc::new(issuer))
}

#[cfg(test)]
mod tests {
    #[test]
    fn role_claims_may_be_a_name_or_an_array_holding_one() {
        use mediflow_auth::Role;
        assert_eq!(
            role_of(Some(&serde_json::json!("DOCTOR"))),
            Some(Role::Doctor)
        );
        assert_eq!(
            role_of(Some(&serde_json::json!(["uma_authorization", "nurse"]))),
            Some(Role::Nurse)
        );
        assert_eq!(role_of(Some(&serde_json::json!(["surgeon"]))), None);
        assert_eq!(role_of(None), None);
    }

    use super::*;

    #[test]
    fn patient_claim_accepts_ids_and_patient_references() {
        assert_eq!(patient_id("p-1.2").as_deref(), Some("p-1.2"));
        assert_eq!(patient_id("Patient/42").as_deref(), Some("42"));
        assert_eq!(
            patient_id("https://h.example/fhir/Patient/42").as_deref(),
            Some("42")
        );
        assert_eq!(patient_id(""), None);
        assert_eq!(patient_id("Patient/"), None);
        assert_eq!(patient_id("a b"), None);
        assert_eq!(patient_id(&"x".repeat(65)), None);
    }

    #[test]
    fn oidc_urls_without_an_issuer_are_refused() {
        let args = OidcArgs {
            oidc_issuer: None,
            oidc_audience: Some("aud".into()),
            oidc_jwks_url: None,
            oidc_scope_claim: "scope".into(),
            oidc_fhir_user_claim: "fhirUser".into(),
            oidc_patient_claim: "patient".into(),
            oidc_role_claim: None,
            oidc_jwks_refresh_secs: 10,
        };
        assert!(args.clone().into_config().is_err());
        let none = OidcArgs {
            oidc_audience: None,
            ..args.clone()
        };
        assert!(none.into_config().unwrap().is_none());
        let some = OidcArgs {
            oidc_issuer: Some("http://idp".into()),
            ..args
        };
        let config = some.into_config().unwrap().unwrap();
        assert_eq!(config.issuer, "http://idp");
        assert_eq!(config.audience.as_deref(), Some("aud"));
    }
}
