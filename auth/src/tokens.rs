//! JWTs: our access and id tokens, SMART Backend Services client assertions, and tokens
//! of an external OpenID Connect provider.
//!
//! * Access tokens are JWTs (RFC 9068 "JWT Profile for OAuth 2.0 Access Tokens": header
//!   `typ: at+jwt`, claims `iss sub aud exp iat jti client_id scope`), signed ES256/ES384
//!   with the `kid` of a [`SigningKey`], carrying the SMART launch context (`patient`,
//!   `encounter`, `fhirUser`) and MediFlow's `role`. The `at+jwt` type keeps an id_token
//!   from being replayed as an access token.
//! * id_tokens: OpenID Connect Core 1.0 §2 (`iss sub aud exp iat nonce`), plus SMART's
//!   `fhirUser` (SMART App Launch 2.0 § "Scopes for requesting identity data").
//! * Client assertions: SMART App Launch 2.0 § "Client Authentication: Asymmetric (public
//!   key)" (client-confidential-asymmetric.html), used by Backend Services
//!   (backend-services.html): header `alg` RS384 or ES384 and `kid`; claims `iss` = `sub`
//!   = client_id, `aud` = the token endpoint URL, `exp` no more than five minutes ahead,
//!   `jti`. Replay protection (a `jti` seen before, until its `exp`) is the caller's.
//! * External tokens (issue 5, item 6): verified against the issuer's JWKS; scopes and
//!   `fhirUser` are read from configurable claims.
//!
//! All checks take `now` (Unix seconds) from the caller; `exp`, `nbf` and `iat` are
//! checked with [`CLOCK_LEEWAY_SECS`] of tolerance. `alg: none`, HMAC algorithms and any
//! algorithm not listed for the token kind are refused before any key is looked at.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, Header, Validation};
use p256::elliptic_curve::rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::keys::{Jwks, KeyError, SelectError, SigningKey};

/// Clock skew tolerated on `exp`, `nbf` and `iat`, seconds.
pub const CLOCK_LEEWAY_SECS: i64 = 30;
/// Default access token lifetime (issue 5, item 8), seconds.
pub const ACCESS_TOKEN_LIFETIME_SECS: i64 = 15 * 60;
/// The longest a client assertion may live (`exp - now`), seconds (SMART: five minutes).
pub const MAX_ASSERTION_LIFETIME_SECS: i64 = 5 * 60;
/// The JOSE `typ` of our access tokens (RFC 9068 §2.1).
pub const ACCESS_TOKEN_TYP: &str = "at+jwt";

/// Why a token was refused (or could not be made).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not three base64url parts, or a header or payload that is not a JSON object.
    #[error("malformed token")]
    Malformed,
    /// The header's `alg` is not one accepted for this kind of token (`none`, `HS256`).
    #[error("algorithm `{0}` not accepted")]
    UnsupportedAlgorithm(String),
    /// The header's `typ` is not the expected one.
    #[error("token type `{0}` not accepted")]
    WrongType(String),
    /// No key with the header's `kid` (or the `kid` is missing where required). For an
    /// external issuer, the caller may refresh the issuer's JWKS and try once more.
    #[error("no key with kid {0:?}")]
    UnknownKid(Option<String>),
    /// The key named by `kid` does not suit the header's `alg`.
    #[error("key does not match the algorithm")]
    KeyMismatch,
    /// The signature does not verify.
    #[error("bad signature")]
    BadSignature,
    /// `exp` is in the past.
    #[error("token expired")]
    Expired,
    /// `nbf` (or `iat`) is in the future.
    #[error("token not valid yet")]
    NotYetValid,
    /// `iss` is not the expected issuer.
    #[error("wrong issuer")]
    WrongIssuer,
    /// `aud` does not contain the expected audience.
    #[error("wrong audience")]
    WrongAudience,
    /// A client assertion whose `sub` is not its `iss`, or whose `iss` is not the client.
    #[error("wrong subject")]
    WrongSubject,
    /// A client assertion valid for more than five minutes.
    #[error("assertion lifetime exceeds five minutes")]
    LifetimeTooLong,
    /// A required claim is absent or of the wrong JSON type.
    #[error("missing or malformed claim `{0}`")]
    Claim(&'static str),
    /// A client or issuer key set is unusable.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// Signing failed (should not happen with a valid key).
    #[error("signing failed: {0}")]
    Signing(String),
}

/// The claims of a MediFlow access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    /// Issuer: the server's FHIR base URL (SMART: the authorization server is identified
    /// by the FHIR base URL it protects).
    pub iss: String,
    /// Subject: the user id, or the client id for Backend Services.
    pub sub: String,
    /// Audience: the FHIR base URL (the `aud` the app sent in the authorize request).
    pub aud: String,
    /// Expiry, Unix seconds.
    pub exp: i64,
    /// Issued at, Unix seconds.
    pub iat: i64,
    /// Unique id (for revocation lists and audit).
    pub jti: String,
    /// Granted scopes, space-separated ([`crate::scopes::ScopeSet`] display form).
    pub scope: String,
    /// The OAuth client the token was issued to.
    pub client_id: String,
    /// Launch context: the patient id (`patient/` scopes confine to its compartment).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient: Option<String>,
    /// Launch context: the encounter id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encounter: Option<String>,
    /// The user's FHIR resource (`Practitioner/123`, `Patient/456`), relative or absolute.
    #[serde(rename = "fhirUser", default, skip_serializing_if = "Option::is_none")]
    pub fhir_user: Option<String>,
    /// The user's hospital role ([`crate::roles::Role`] name), none for Backend Services.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
}

/// The claims of an OpenID Connect id_token (OIDC Core §2) with SMART's `fhirUser`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdTokenClaims {
    /// Issuer: the server's FHIR base URL (same as the access token's).
    pub iss: String,
    /// Subject: the user id.
    pub sub: String,
    /// Audience: the client id.
    pub aud: String,
    /// Expiry, Unix seconds.
    pub exp: i64,
    /// Issued at, Unix seconds.
    pub iat: i64,
    /// When the user logged in, Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_time: Option<i64>,
    /// The `nonce` of the authorization request, echoed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    /// The user's FHIR resource URL (SMART requires an absolute URL here).
    #[serde(rename = "fhirUser", default, skip_serializing_if = "Option::is_none")]
    pub fhir_user: Option<String>,
}

/// What a verified client assertion tells the caller, for `jti` replay protection: store
/// `jti` (per client) until `exp` and refuse it if seen again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientAssertion {
    /// The assertion's unique id.
    pub jti: String,
    /// Its expiry, Unix seconds.
    pub exp: i64,
}

/// What a verified external token grants.
#[derive(Debug, Clone, PartialEq)]
pub struct ExternalToken {
    /// The `sub` claim.
    pub sub: String,
    /// The scopes, space-separated (from a string claim or an array of strings).
    pub scope: String,
    /// The `fhirUser`-like claim, if present.
    pub fhir_user: Option<String>,
    /// Expiry, Unix seconds.
    pub exp: i64,
    /// All claims, for audit and further mapping.
    pub claims: Value,
}

/// Signs an access token with `key` (header `alg` of the key, `kid`, `typ: at+jwt`).
pub fn issue_access_token(key: &SigningKey, claims: &AccessClaims) -> Result<String, TokenError> {
    sign(key, ACCESS_TOKEN_TYP, claims)
}

/// Signs an id_token with `key` (header `typ: JWT`).
pub fn issue_id_token(key: &SigningKey, claims: &IdTokenClaims) -> Result<String, TokenError> {
    sign(key, "JWT", claims)
}

fn sign<T: Serialize>(key: &SigningKey, typ: &str, claims: &T) -> Result<String, TokenError> {
    let mut header = Header::new(key.alg().jwt_algorithm());
    header.typ = Some(typ.to_owned());
    header.kid = Some(key.kid().to_owned());
    jsonwebtoken::encode(&header, claims, key.encoding_key())
        .map_err(|e| TokenError::Signing(e.to_string()))
}

/// Verifies one of our access tokens: `alg` ES256/ES384, `typ: at+jwt`, a `kid` found in
/// `jwks` (current or retired key), signature, `exp` (required), `nbf` and `iat` (if
/// present), `iss` = `expected_iss`, `aud` contains `expected_aud`.
pub fn verify_access_token(
    token: &str,
    jwks: &Jwks,
    expected_iss: &str,
    expected_aud: &str,
    now: i64,
) -> Result<AccessClaims, TokenError> {
    let claims = verify_jws(
        token,
        jwks,
        &["ES256", "ES384"],
        true,
        Some(ACCESS_TOKEN_TYP),
    )?;
    check_times(&claims, now)?;
    check_iss(&claims, expected_iss)?;
    check_aud(&claims, expected_aud)?;
    serde_json::from_value(claims).map_err(|_| TokenError::Claim("sub/jti/scope/client_id"))
}

/// Verifies a SMART Backend Services client assertion (`client_assertion` of a
/// `client_credentials` token request with `client_assertion_type =
/// urn:ietf:params:oauth:client-assertion-type:jwt-bearer`) against the client's
/// registered JWK Set.
pub fn verify_client_assertion(
    assertion: &str,
    client_jwks: &Value,
    client_id: &str,
    token_endpoint_url: &str,
    now: i64,
) -> Result<ClientAssertion, TokenError> {
    let jwks = Jwks::from_json(client_jwks)?;
    let claims = verify_jws(assertion, &jwks, &["RS384", "ES384"], true, None)?;
    if claims.get("iss").and_then(Value::as_str) != Some(client_id) {
        return Err(TokenError::WrongIssuer);
    }
    if claims.get("sub").and_then(Value::as_str) != Some(client_id) {
        return Err(TokenError::WrongSubject);
    }
    check_aud(&claims, token_endpoint_url)?;
    let exp = check_times(&claims, now)?;
    if exp - now > MAX_ASSERTION_LIFETIME_SECS + CLOCK_LEEWAY_SECS {
        return Err(TokenError::LifetimeTooLong);
    }
    let jti = claims
        .get("jti")
        .and_then(Value::as_str)
        .filter(|j| !j.is_empty())
        .ok_or(TokenError::Claim("jti"))?;
    Ok(ClientAssertion {
        jti: jti.to_owned(),
        exp,
    })
}

/// Verifies a token of an external OpenID Connect provider against its JWK Set
/// (RS256/384/512, PS256/384/512, ES256/384; a missing `kid` is accepted when the set has
/// a single suitable key): signature, `exp` (required), `nbf`, `iat`, `iss`, `aud`. The
/// scopes come from `scope_claim` (a space-separated string or an array of strings;
/// absent = no scope) and the FHIR user from `fhir_user_claim`. Claim names are looked up
/// as top-level keys first, then as dotted paths (`ext.fhirUser`).
///
/// On [`TokenError::UnknownKid`] the caller refetches the issuer's JWKS (once, rate
/// limited) and retries.
pub fn verify_external(
    token: &str,
    issuer_jwks: &Jwks,
    expected_iss: &str,
    expected_aud: &str,
    scope_claim: &str,
    fhir_user_claim: &str,
    now: i64,
) -> Result<ExternalToken, TokenError> {
    let claims = verify_jws(
        token,
        issuer_jwks,
        &[
            "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384",
        ],
        false,
        None,
    )?;
    let exp = check_times(&claims, now)?;
    check_iss(&claims, expected_iss)?;
    check_aud(&claims, expected_aud)?;
    let sub = claims
        .get("sub")
        .and_then(Value::as_str)
        .ok_or(TokenError::Claim("sub"))?
        .to_owned();
    let scope = match lookup_claim(&claims, scope_claim) {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.split_ascii_whitespace().collect::<Vec<_>>().join(" "),
        Some(Value::Array(items)) => {
            let mut out = Vec::new();
            for i in items {
                out.push(i.as_str().ok_or(TokenError::Claim("scope"))?);
            }
            out.join(" ")
        }
        Some(_) => return Err(TokenError::Claim("scope")),
    };
    let fhir_user = match lookup_claim(&claims, fhir_user_claim) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(TokenError::Claim("fhirUser")),
    };
    Ok(ExternalToken {
        sub,
        scope,
        fhir_user,
        exp,
        claims,
    })
}

impl ExternalToken {
    /// A claim by name, looked up as [`verify_external`] does: a top-level key first, then
    /// a dotted path (`ext.patient`).
    pub fn claim(&self, name: &str) -> Option<&Value> {
        lookup_claim(&self.claims, name)
    }
}

/// The `iss` claim of a JWT, read WITHOUT verifying anything: only to choose which
/// issuer's keys (ours, an external identity provider's, a client's) verify the token,
/// never to trust it. `None` when the token is not a JWS with a string `iss`.
pub fn unverified_issuer(jwt: &str) -> Option<String> {
    let payload = jwt.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    let v: Value = serde_json::from_slice(&bytes).ok()?;
    v.get("iss")?.as_str().map(str::to_owned)
}

fn lookup_claim<'a>(claims: &'a Value, name: &str) -> Option<&'a Value> {
    if let Some(v) = claims.get(name) {
        return Some(v);
    }
    if !name.contains('.') {
        return None;
    }
    name.split('.').try_fold(claims, |v, part| v.get(part))
}

/// Reads the JOSE header's `alg`, `kid` and `typ` without trusting anything else.
fn read_header(token: &str) -> Result<(String, Option<String>, Option<String>), TokenError> {
    let mut parts = token.split('.');
    let (Some(h), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };
    let bytes = URL_SAFE_NO_PAD
        .decode(h)
        .map_err(|_| TokenError::Malformed)?;
    let header: Value = serde_json::from_slice(&bytes).map_err(|_| TokenError::Malformed)?;
    let Value::Object(map) = header else {
        return Err(TokenError::Malformed);
    };
    let alg = map
        .get("alg")
        .and_then(Value::as_str)
        .ok_or(TokenError::Malformed)?
        .to_owned();
    let kid = match map.get("kid") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(TokenError::Malformed),
    };
    let typ = match map.get("typ") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(TokenError::Malformed),
    };
    Ok((alg, kid, typ))
}

/// Checks the header against `allowed` algorithms (and `typ`), picks the key, verifies
/// the signature, and returns the payload; no claim is checked here.
fn verify_jws(
    token: &str,
    jwks: &Jwks,
    allowed: &[&str],
    require_kid: bool,
    typ: Option<&str>,
) -> Result<Value, TokenError> {
    let (alg_name, kid, header_typ) = read_header(token)?;
    if !allowed.contains(&alg_name.as_str()) {
        return Err(TokenError::UnsupportedAlgorithm(alg_name));
    }
    if let Some(expected) = typ
        && !header_typ
            .as_deref()
            .is_some_and(|t| t.eq_ignore_ascii_case(expected))
    {
        return Err(TokenError::WrongType(header_typ.unwrap_or_default()));
    }
    if require_kid && kid.is_none() {
        return Err(TokenError::UnknownKid(None));
    }
    let alg: Algorithm = alg_name
        .parse()
        .map_err(|_| TokenError::UnsupportedAlgorithm(alg_name.clone()))?;
    let key = jwks
        .select(kid.as_deref(), &alg_name)
        .map_err(|e| match e {
            SelectError::UnknownKid => TokenError::UnknownKid(kid.clone()),
            SelectError::WrongKeyType => TokenError::KeyMismatch,
        })?;
    let mut validation = Validation::new(alg);
    validation.algorithms = vec![alg];
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    let data = jsonwebtoken::decode::<Value>(token, key, &validation).map_err(|e| {
        use jsonwebtoken::errors::ErrorKind;
        match e.kind() {
            ErrorKind::InvalidSignature => TokenError::BadSignature,
            ErrorKind::InvalidAlgorithm | ErrorKind::InvalidKeyFormat => TokenError::KeyMismatch,
            _ => TokenError::Malformed,
        }
    })?;
    match data.claims {
        c @ Value::Object(_) => Ok(c),
        _ => Err(TokenError::Malformed),
    }
}

fn int_claim(claims: &Value, name: &'static str) -> Result<Option<i64>, TokenError> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .or_else(|| n.as_f64().map(|f| f as i64))
            .map(Some)
            .ok_or(TokenError::Claim(name)),
        Some(_) => Err(TokenError::Claim(name)),
    }
}

/// `exp` required and not past; `nbf`, `iat` if present not in the future. Returns `exp`.
fn check_times(claims: &Value, now: i64) -> Result<i64, TokenError> {
    let exp = int_claim(claims, "exp")?.ok_or(TokenError::Claim("exp"))?;
    if exp + CLOCK_LEEWAY_SECS <= now {
        return Err(TokenError::Expired);
    }
    if let Some(nbf) = int_claim(claims, "nbf")?
        && nbf - CLOCK_LEEWAY_SECS > now
    {
        return Err(TokenError::NotYetValid);
    }
    if let Some(iat) = int_claim(claims, "iat")?
        && iat - CLOCK_LEEWAY_SECS > now
    {
        return Err(TokenError::NotYetValid);
    }
    Ok(exp)
}

fn check_iss(claims: &Value, expected: &str) -> Result<(), TokenError> {
    if claims.get("iss").and_then(Value::as_str) == Some(expected) {
        Ok(())
    } else {
        Err(TokenError::WrongIssuer)
    }
}

/// `aud` is a string equal to `expected` or an array containing it (RFC 7519 §4.1.3).
fn check_aud(claims: &Value, expected: &str) -> Result<(), TokenError> {
    let ok = match claims.get("aud") {
        Some(Value::String(s)) => s == expected,
        Some(Value::Array(items)) => items.iter().any(|i| i.as_str() == Some(expected)),
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(TokenError::WrongAudience)
    }
}

/// A new opaque secret (256 random bits, base64url): authorization codes, refresh
/// tokens, launch ids, client secrets, jti values.
pub fn new_opaque_token() -> String {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The SHA-256 of an opaque token, base64url: what the server stores instead of the
/// token itself (a leaked table then gives no usable code or refresh token). High-entropy
/// tokens need no salt or slow hash; passwords do ([`crate::password`]).
pub fn opaque_token_hash(token: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::KeyAlgorithm;
    use jsonwebtoken::EncodingKey;
    use serde_json::json;

    const ISS: &str = "https://mediflow.example/fhir";
    const NOW: i64 = 1_700_000_000;
    const TOKEN_URL: &str = "https://mediflow.example/auth/token";
    const RSA_PEM: &str = include_str!("../testdata/client-rsa-test-key.pem");
    const RSA_JWK: &str = include_str!("../testdata/client-rsa-test-key.jwk.json");

    fn claims() -> AccessClaims {
        AccessClaims {
            iss: ISS.into(),
            sub: "user-1".into(),
            aud: ISS.into(),
            exp: NOW + ACCESS_TOKEN_LIFETIME_SECS,
            iat: NOW,
            jti: "jti-1".into(),
            scope: "openid fhirUser patient/*.rs".into(),
            client_id: "app".into(),
            patient: Some("123".into()),
            encounter: None,
            fhir_user: Some("Patient/123".into()),
            role: Some("PATIENT".into()),
        }
    }

    fn b64(v: &Value) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
    }

    /// Replaces the header of `token` (the signature then no longer matches it).
    fn with_header(token: &str, header: Value) -> String {
        let mut parts = token.splitn(2, '.');
        parts.next();
        format!("{}.{}", b64(&header), parts.next().unwrap())
    }

    fn sign_raw(alg: Algorithm, kid: Option<&str>, key: &EncodingKey, claims: &Value) -> String {
        let mut h = Header::new(alg);
        h.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(&h, claims, key).unwrap()
    }

    #[test]
    fn access_token_round_trips() {
        let key = SigningKey::generate();
        let token = issue_access_token(&key, &claims()).unwrap();
        let jwks = Jwks::with_current(&key);
        assert_eq!(
            verify_access_token(&token, &jwks, ISS, ISS, NOW + 1).unwrap(),
            claims()
        );
    }

    #[test]
    fn access_token_header_has_kid_and_at_jwt_type() {
        let key = SigningKey::generate_with(KeyAlgorithm::Es384);
        let token = issue_access_token(&key, &claims()).unwrap();
        let (alg, kid, typ) = read_header(&token).unwrap();
        assert_eq!(alg, "ES384");
        assert_eq!(kid.as_deref(), Some(key.kid()));
        assert_eq!(typ.as_deref(), Some("at+jwt"));
        let payload: Value = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(token.split('.').nth(1).unwrap())
                .unwrap(),
        )
        .unwrap();
        assert_eq!(payload["fhirUser"], "Patient/123");
        assert!(payload.get("encounter").is_none());
    }

    #[test]
    fn token_signed_by_retired_key_still_verifies() {
        let old = SigningKey::generate();
        let token = issue_access_token(&old, &claims()).unwrap();
        let mut jwks = Jwks::with_current(&old);
        jwks.rotate(&SigningKey::generate(), NOW);
        assert!(verify_access_token(&token, &jwks, ISS, ISS, NOW + 10).is_ok());
    }

    #[test]
    fn expired_token_is_refused() {
        let key = SigningKey::generate();
        let token = issue_access_token(&key, &claims()).unwrap();
        let jwks = Jwks::with_current(&key);
        let exp = NOW + ACCESS_TOKEN_LIFETIME_SECS;
        // within the leeway it still passes
        assert!(verify_access_token(&token, &jwks, ISS, ISS, exp + CLOCK_LEEWAY_SECS - 1).is_ok());
        assert_eq!(
            verify_access_token(&token, &jwks, ISS, ISS, exp + CLOCK_LEEWAY_SECS),
            Err(TokenError::Expired)
        );
    }

    #[test]
    fn token_issued_in_the_future_is_refused() {
        let key = SigningKey::generate();
        let token = issue_access_token(&key, &claims()).unwrap();
        let jwks = Jwks::with_current(&key);
        assert_eq!(
            verify_access_token(&token, &jwks, ISS, ISS, NOW - 600),
            Err(TokenError::NotYetValid)
        );
    }

    #[test]
    fn wrong_audience_and_issuer_are_refused() {
        let key = SigningKey::generate();
        let token = issue_access_token(&key, &claims()).unwrap();
        let jwks = Jwks::with_current(&key);
        assert_eq!(
            verify_access_token(&token, &jwks, ISS, "https://other/fhir", NOW),
            Err(TokenError::WrongAudience)
        );
        assert_eq!(
            verify_access_token(&token, &jwks, "https://other/fhir", ISS, NOW),
            Err(TokenError::WrongIssuer)
        );
    }

    #[test]
    fn unknown_kid_is_refused() {
        let key = SigningKey::generate();
        let token = issue_access_token(&key, &claims()).unwrap();
        let other = Jwks::with_current(&SigningKey::generate());
        assert_eq!(
            verify_access_token(&token, &other, ISS, ISS, NOW),
            Err(TokenError::UnknownKid(Some(key.kid().to_owned())))
        );
    }

    #[test]
    fn signature_by_another_key_with_same_kid_is_refused() {
        let key = SigningKey::generate();
        let impostor = SigningKey::generate();
        let forged = issue_access_token(&impostor, &claims()).unwrap();
        let forged = with_header(
            &forged,
            json!({"alg": "ES256", "typ": "at+jwt", "kid": key.kid()}),
        );
        let jwks = Jwks::with_current(&key);
        assert_eq!(
            verify_access_token(&forged, &jwks, ISS, ISS, NOW),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn tampered_payload_is_refused() {
        let key = SigningKey::generate();
        let token = issue_access_token(&key, &claims()).unwrap();
        let mut evil = claims();
        evil.scope = "user/*.cruds".into();
        let parts: Vec<&str> = token.split('.').collect();
        let tampered = format!(
            "{}.{}.{}",
            parts[0],
            b64(&serde_json::to_value(&evil).unwrap()),
            parts[2]
        );
        let jwks = Jwks::with_current(&key);
        assert_eq!(
            verify_access_token(&tampered, &jwks, ISS, ISS, NOW),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn alg_none_and_hs256_are_refused() {
        let key = SigningKey::generate();
        let jwks = Jwks::with_current(&key);
        let payload = b64(&serde_json::to_value(claims()).unwrap());
        let none = format!(
            "{}.{}.",
            b64(&json!({"alg": "none", "typ": "at+jwt", "kid": key.kid()})),
            payload
        );
        assert_eq!(
            verify_access_token(&none, &jwks, ISS, ISS, NOW),
            Err(TokenError::UnsupportedAlgorithm("none".into()))
        );
        // HS256 keyed with the public key's bytes (the classic confusion attack)
        let secret = serde_json::to_vec(&key.public_jwk()).unwrap();
        let mut h = Header::new(Algorithm::HS256);
        h.kid = Some(key.kid().to_owned());
        h.typ = Some("at+jwt".into());
        let hs = jsonwebtoken::encode(&h, &claims(), &EncodingKey::from_secret(&secret)).unwrap();
        assert_eq!(
            verify_access_token(&hs, &jwks, ISS, ISS, NOW),
            Err(TokenError::UnsupportedAlgorithm("HS256".into()))
        );
    }

    #[test]
    fn id_token_is_not_accepted_as_access_token() {
        let key = SigningKey::generate();
        let id = IdTokenClaims {
            iss: ISS.into(),
            sub: "user-1".into(),
            aud: ISS.into(),
            exp: NOW + 300,
            iat: NOW,
            auth_time: Some(NOW),
            nonce: Some("n-0S6_WzA2Mj".into()),
            fhir_user: Some(format!("{ISS}/Practitioner/9")),
        };
        let token = issue_id_token(&key, &id).unwrap();
        let jwks = Jwks::with_current(&key);
        assert_eq!(
            verify_access_token(&token, &jwks, ISS, ISS, NOW),
            Err(TokenError::WrongType("JWT".into()))
        );
    }

    #[test]
    fn id_token_carries_oidc_claims_and_fhir_user() {
        let key = SigningKey::generate();
        let id = IdTokenClaims {
            iss: ISS.into(),
            sub: "user-1".into(),
            aud: "app".into(),
            exp: NOW + 300,
            iat: NOW,
            auth_time: None,
            nonce: Some("abc".into()),
            fhir_user: Some(format!("{ISS}/Practitioner/9")),
        };
        let token = issue_id_token(&key, &id).unwrap();
        let jwks = Jwks::with_current(&key);
        let payload = verify_jws(&token, &jwks, &["ES256"], true, Some("JWT")).unwrap();
        assert_eq!(payload["aud"], "app");
        assert_eq!(payload["nonce"], "abc");
        assert_eq!(payload["fhirUser"], format!("{ISS}/Practitioner/9"));
        assert!(payload.get("auth_time").is_none());
    }

    fn assertion_claims(exp: i64) -> Value {
        json!({
            "iss": "lab-system",
            "sub": "lab-system",
            "aud": TOKEN_URL,
            "exp": exp,
            "iat": NOW,
            "jti": "a-unique-jti",
        })
    }

    fn rsa_client() -> (EncodingKey, Value) {
        let key = EncodingKey::from_rsa_pem(RSA_PEM.as_bytes()).unwrap();
        let jwk: Value = serde_json::from_str(RSA_JWK).unwrap();
        (key, json!({"keys": [jwk]}))
    }

    #[test]
    fn rs384_client_assertion_verifies() {
        let (key, jwks) = rsa_client();
        let a = sign_raw(
            Algorithm::RS384,
            Some("test-rsa-1"),
            &key,
            &assertion_claims(NOW + 240),
        );
        assert_eq!(
            verify_client_assertion(&a, &jwks, "lab-system", TOKEN_URL, NOW),
            Ok(ClientAssertion {
                jti: "a-unique-jti".into(),
                exp: NOW + 240
            })
        );
    }

    #[test]
    fn es384_client_assertion_verifies() {
        let client = SigningKey::generate_with(KeyAlgorithm::Es384);
        let jwks = json!({"keys": [client.public_jwk()]});
        let enc = EncodingKey::from_ec_der(&client.to_pkcs8_der());
        let a = sign_raw(
            Algorithm::ES384,
            Some(client.kid()),
            &enc,
            &assertion_claims(NOW + 60),
        );
        assert!(verify_client_assertion(&a, &jwks, "lab-system", TOKEN_URL, NOW).is_ok());
    }

    #[test]
    fn client_assertion_with_other_algorithms_is_refused() {
        let (key, jwks) = rsa_client();
        let a = sign_raw(
            Algorithm::RS256,
            Some("test-rsa-1"),
            &key,
            &assertion_claims(NOW + 60),
        );
        assert_eq!(
            verify_client_assertion(&a, &jwks, "lab-system", TOKEN_URL, NOW),
            Err(TokenError::UnsupportedAlgorithm("RS256".into()))
        );
        let hs = sign_raw(
            Algorithm::HS256,
            Some("test-rsa-1"),
            &EncodingKey::from_secret(b"shared"),
            &assertion_claims(NOW + 60),
        );
        assert_eq!(
            verify_client_assertion(&hs, &jwks, "lab-system", TOKEN_URL, NOW),
            Err(TokenError::UnsupportedAlgorithm("HS256".into()))
        );
        let client = SigningKey::generate(); // ES256
        let ec_jwks = json!({"keys": [client.public_jwk()]});
        let es256 = sign_raw(
            Algorithm::ES256,
            Some(client.kid()),
            &EncodingKey::from_ec_der(&client.to_pkcs8_der()),
            &assertion_claims(NOW + 60),
        );
        assert_eq!(
            verify_client_assertion(&es256, &ec_jwks, "lab-system", TOKEN_URL, NOW),
            Err(TokenError::UnsupportedAlgorithm("ES256".into()))
        );
    }

    #[test]
    fn client_assertion_claims_are_checked() {
        let (key, jwks) = rsa_client();
        let sign = |c: &Value| sign_raw(Algorithm::RS384, Some("test-rsa-1"), &key, c);
        let ok = assertion_claims(NOW + 60);
        let check =
            |c: &Value| verify_client_assertion(&sign(c), &jwks, "lab-system", TOKEN_URL, NOW);

        let mut c = ok.clone();
        c["iss"] = json!("someone-else");
        assert_eq!(check(&c), Err(TokenError::WrongIssuer));
        let mut c = ok.clone();
        c["sub"] = json!("someone-else");
        assert_eq!(check(&c), Err(TokenError::WrongSubject));
        let mut c = ok.clone();
        c["aud"] = json!("https://mediflow.example/fhir");
        assert_eq!(check(&c), Err(TokenError::WrongAudience));
        let mut c = ok.clone();
        c["aud"] = json!(["x", TOKEN_URL]);
        assert!(check(&c).is_ok());
        let mut c = ok.clone();
        c["exp"] = json!(NOW + 3600);
        assert_eq!(check(&c), Err(TokenError::LifetimeTooLong));
        let mut c = ok.clone();
        c["exp"] = json!(NOW - 120);
        assert_eq!(check(&c), Err(TokenError::Expired));
        let mut c = ok.clone();
        c.as_object_mut().unwrap().remove("jti");
        assert_eq!(check(&c), Err(TokenError::Claim("jti")));
        let mut c = ok.clone();
        c.as_object_mut().unwrap().remove("exp");
        assert_eq!(check(&c), Err(TokenError::Claim("exp")));
    }

    #[test]
    fn client_assertion_needs_a_known_kid() {
        let (key, jwks) = rsa_client();
        let a = sign_raw(Algorithm::RS384, None, &key, &assertion_claims(NOW + 60));
        assert_eq!(
            verify_client_assertion(&a, &jwks, "lab-system", TOKEN_URL, NOW),
            Err(TokenError::UnknownKid(None))
        );
        let a = sign_raw(
            Algorithm::RS384,
            Some("nope"),
            &key,
            &assertion_claims(NOW + 60),
        );
        assert_eq!(
            verify_client_assertion(&a, &jwks, "lab-system", TOKEN_URL, NOW),
            Err(TokenError::UnknownKid(Some("nope".into())))
        );
    }

    #[test]
    fn client_assertion_signed_by_another_key_is_refused() {
        let (_, jwks) = rsa_client();
        let other = SigningKey::generate_with(KeyAlgorithm::Es384);
        let a = sign_raw(
            Algorithm::ES384,
            Some("test-rsa-1"),
            &EncodingKey::from_ec_der(&other.to_pkcs8_der()),
            &assertion_claims(NOW + 60),
        );
        // the kid names an RSA key: refused before any signature check
        assert_eq!(
            verify_client_assertion(&a, &jwks, "lab-system", TOKEN_URL, NOW),
            Err(TokenError::KeyMismatch)
        );
    }

    #[test]
    fn external_token_yields_scopes_and_fhir_user_from_configured_claims() {
        let (key, _) = rsa_client();
        let jwk: Value = serde_json::from_str(RSA_JWK).unwrap();
        let mut jwk_rs256 = jwk.clone();
        jwk_rs256.as_object_mut().unwrap().remove("alg");
        let idp = Jwks::from_json(&json!({"keys": [jwk_rs256]})).unwrap();
        let claims = json!({
            "iss": "https://idp.hospital.example/realms/staff",
            "sub": "u-42",
            "aud": ["mediflow", "account"],
            "exp": NOW + 300,
            "nbf": NOW - 5,
            "scp": ["user/Observation.rs", "openid"],
            "ext": {"fhir_user": "Practitioner/7"},
        });
        // no kid: the single RSA key is used
        let t = sign_raw(Algorithm::RS256, None, &key, &claims);
        let got = verify_external(
            &t,
            &idp,
            "https://idp.hospital.example/realms/staff",
            "mediflow",
            "scp",
            "ext.fhir_user",
            NOW,
        )
        .unwrap();
        assert_eq!(got.sub, "u-42");
        assert_eq!(got.scope, "user/Observation.rs openid");
        assert_eq!(got.fhir_user.as_deref(), Some("Practitioner/7"));
        assert_eq!(got.exp, NOW + 300);

        // a space-separated string claim works too; absent fhirUser is None
        let mut c2 = claims.clone();
        c2["scope"] = json!("patient/*.rs  launch/patient");
        let t2 = sign_raw(Algorithm::RS256, Some("test-rsa-1"), &key, &c2);
        let got = verify_external(
            &t2,
            &idp,
            "https://idp.hospital.example/realms/staff",
            "mediflow",
            "scope",
            "fhirUser",
            NOW,
        )
        .unwrap();
        assert_eq!(got.scope, "patient/*.rs launch/patient");
        assert_eq!(got.fhir_user, None);
    }

    #[test]
    fn external_token_checks_issuer_audience_and_times() {
        let (key, _) = rsa_client();
        let jwk: Value = serde_json::from_str(RSA_JWK).unwrap();
        let idp = Jwks::from_json(&json!({"keys": [jwk]})).unwrap();
        let base = json!({"iss": "https://idp", "sub": "s", "aud": "mediflow", "exp": NOW + 300});
        let run = |c: &Value| {
            let t = sign_raw(Algorithm::RS384, Some("test-rsa-1"), &key, c);
            verify_external(
                &t,
                &idp,
                "https://idp",
                "mediflow",
                "scope",
                "fhirUser",
                NOW,
            )
        };
        assert!(run(&base).is_ok());
        let mut c = base.clone();
        c["iss"] = json!("https://evil");
        assert_eq!(run(&c).unwrap_err(), TokenError::WrongIssuer);
        let mut c = base.clone();
        c["aud"] = json!("other");
        assert_eq!(run(&c).unwrap_err(), TokenError::WrongAudience);
        let mut c = base.clone();
        c["nbf"] = json!(NOW + 600);
        assert_eq!(run(&c).unwrap_err(), TokenError::NotYetValid);
        let mut c = base.clone();
        c["exp"] = json!(NOW - 600);
        assert_eq!(run(&c).unwrap_err(), TokenError::Expired);
        // the JWK says RS384: an RS256 signature with it is refused
        let t = sign_raw(Algorithm::RS256, Some("test-rsa-1"), &key, &base);
        assert_eq!(
            verify_external(
                &t,
                &idp,
                "https://idp",
                "mediflow",
                "scope",
                "fhirUser",
                NOW
            )
            .unwrap_err(),
            TokenError::KeyMismatch
        );
    }

    #[test]
    fn unverified_issuer_reads_iss_and_nothing_else() {
        let key = SigningKey::generate();
        let token = issue_access_token(&key, &claims()).unwrap();
        assert_eq!(unverified_issuer(&token).as_deref(), Some(ISS));
        for bad in ["", "abc", "a.!!.c", "a.e30.c"] {
            assert_eq!(unverified_issuer(bad), None, "{bad}");
        }
    }

    #[test]
    fn external_token_claims_are_found_by_dotted_path() {
        let t = ExternalToken {
            sub: "s".into(),
            scope: String::new(),
            fhir_user: None,
            exp: NOW,
            claims: json!({"patient": "p1", "ext": {"patient": "p2"}}),
        };
        assert_eq!(t.claim("patient"), Some(&json!("p1")));
        assert_eq!(t.claim("ext.patient"), Some(&json!("p2")));
        assert_eq!(t.claim("ext.none"), None);
    }

    #[test]
    fn malformed_tokens_are_refused() {
        let jwks = Jwks::with_current(&SigningKey::generate());
        for bad in ["", "abc", "a.b", "a.b.c.d", "!!.??.**"] {
            assert_eq!(
                verify_access_token(bad, &jwks, ISS, ISS, NOW),
                Err(TokenError::Malformed),
                "{bad}"
            );
        }
    }

    #[test]
    fn opaque_tokens_are_random_and_hash_stably() {
        let a = new_opaque_token();
        let b = new_opaque_token();
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert_eq!(opaque_token_hash(&a), opaque_token_hash(&a));
        assert_ne!(opaque_token_hash(&a), opaque_token_hash(&b));
    }
}
