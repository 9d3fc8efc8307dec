//! Signing keys and JSON Web Key Sets (issue 5, item 8).
//!
//! MediFlow signs its own tokens with ECDSA only: ES256 (P-256, the default) or ES384
//! (P-384) (RFC 7518 §3.4). RSA keys appear only in *other* parties' key sets (SMART
//! Backend Services clients, external identity providers), which are only verified.
//!
//! * [`SigningKey`]: a private key with its `kid`, stored as PKCS#8 (RFC 5208) DER or PEM.
//! * `kid` = the RFC 7638 JWK thumbprint (SHA-256, base64url) of the public key.
//! * [`Jwks`]: a JWK Set (RFC 7517 §5) with, for our own keys, the time each was retired.
//!
//! Rotation ([`Jwks::rotate`]): a new key becomes the current signing key at once; the
//! previous keys are marked retired at that moment and stay in the published set, so
//! tokens they signed still verify, until `retired_at + max token lifetime`
//! ([`Jwks::prune`]). The server keeps the private keys and `retired_at` in its database
//! and publishes [`Jwks::to_json`] at its `jwks_uri`.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use p256::elliptic_curve::rand_core::OsRng;
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey, LineEnding};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// Errors with keys and key sets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The PKCS#8 document is not a P-256 or P-384 private key.
    #[error("not a PKCS#8 P-256 or P-384 private key")]
    BadPrivateKey,
    /// A JWK lacks a member or has one of the wrong form.
    #[error("malformed JWK: {0}")]
    BadJwk(String),
    /// A JWK Set is not an object with a `keys` array.
    #[error("malformed JWK Set: no `keys` array")]
    BadJwks,
}

/// The algorithms MediFlow signs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyAlgorithm {
    /// ECDSA P-256 with SHA-256.
    Es256,
    /// ECDSA P-384 with SHA-384.
    Es384,
}

impl KeyAlgorithm {
    /// The JOSE name (`ES256`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Es256 => "ES256",
            Self::Es384 => "ES384",
        }
    }

    /// The JWK `crv` (`P-256`).
    pub fn curve(self) -> &'static str {
        match self {
            Self::Es256 => "P-256",
            Self::Es384 => "P-384",
        }
    }

    /// The jsonwebtoken algorithm.
    pub fn jwt_algorithm(self) -> Algorithm {
        match self {
            Self::Es256 => Algorithm::ES256,
            Self::Es384 => Algorithm::ES384,
        }
    }
}

enum Secret {
    P256(p256::SecretKey),
    P384(p384::SecretKey),
}

/// One of our private signing keys.
pub struct SigningKey {
    alg: KeyAlgorithm,
    secret: Secret,
    kid: String,
    public_jwk: Value,
    encoding_key: EncodingKey,
}

impl std::fmt::Debug for SigningKey {
    /// Shows the algorithm and kid, never the private key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("alg", &self.alg)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A fresh ES256 (P-256) key from the operating system's random source.
    pub fn generate() -> SigningKey {
        Self::generate_with(KeyAlgorithm::Es256)
    }

    /// A fresh key for `alg`.
    pub fn generate_with(alg: KeyAlgorithm) -> SigningKey {
        let secret = match alg {
            KeyAlgorithm::Es256 => Secret::P256(p256::SecretKey::random(&mut OsRng)),
            KeyAlgorithm::Es384 => Secret::P384(p384::SecretKey::random(&mut OsRng)),
        };
        Self::from_secret(secret).expect("a freshly generated key encodes as PKCS#8")
    }

    fn from_secret(secret: Secret) -> Result<SigningKey, KeyError> {
        let (alg, x, y, der) = match &secret {
            Secret::P256(k) => {
                let p = k.public_key().to_encoded_point(false);
                let der = k.to_pkcs8_der().map_err(|_| KeyError::BadPrivateKey)?;
                (
                    KeyAlgorithm::Es256,
                    p.x().map(|v| v.to_vec()),
                    p.y().map(|v| v.to_vec()),
                    der,
                )
            }
            Secret::P384(k) => {
                let p = k.public_key().to_encoded_point(false);
                let der = k.to_pkcs8_der().map_err(|_| KeyError::BadPrivateKey)?;
                (
                    KeyAlgorithm::Es384,
                    p.x().map(|v| v.to_vec()),
                    p.y().map(|v| v.to_vec()),
                    der,
                )
            }
        };
        let (Some(x), Some(y)) = (x, y) else {
            return Err(KeyError::BadPrivateKey);
        };
        let x = URL_SAFE_NO_PAD.encode(x);
        let y = URL_SAFE_NO_PAD.encode(y);
        let bare = json!({"kty": "EC", "crv": alg.curve(), "x": x, "y": y});
        let kid = jwk_thumbprint(&bare)?;
        let public_jwk = json!({
            "kty": "EC",
            "crv": alg.curve(),
            "x": x,
            "y": y,
            "kid": kid,
            "use": "sig",
            "alg": alg.as_str(),
        });
        let encoding_key = EncodingKey::from_ec_der(der.as_bytes());
        Ok(SigningKey {
            alg,
            secret,
            kid,
            public_jwk,
            encoding_key,
        })
    }

    /// Loads a key stored with [`SigningKey::to_pkcs8_der`]; the curve (P-256 or P-384)
    /// comes from the document.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<SigningKey, KeyError> {
        if let Ok(k) = p256::SecretKey::from_pkcs8_der(der) {
            return Self::from_secret(Secret::P256(k));
        }
        if let Ok(k) = p384::SecretKey::from_pkcs8_der(der) {
            return Self::from_secret(Secret::P384(k));
        }
        Err(KeyError::BadPrivateKey)
    }

    /// Loads a key stored with [`SigningKey::to_pkcs8_pem`].
    pub fn from_pkcs8_pem(pem: &str) -> Result<SigningKey, KeyError> {
        if let Ok(k) = p256::SecretKey::from_pkcs8_pem(pem) {
            return Self::from_secret(Secret::P256(k));
        }
        if let Ok(k) = p384::SecretKey::from_pkcs8_pem(pem) {
            return Self::from_secret(Secret::P384(k));
        }
        Err(KeyError::BadPrivateKey)
    }

    /// The private key as PKCS#8 DER, for storage (zeroed when dropped).
    pub fn to_pkcs8_der(&self) -> Zeroizing<Vec<u8>> {
        let doc = match &self.secret {
            Secret::P256(k) => k.to_pkcs8_der(),
            Secret::P384(k) => k.to_pkcs8_der(),
        }
        .expect("a valid key encodes as PKCS#8");
        Zeroizing::new(doc.as_bytes().to_vec())
    }

    /// The private key as a PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`), for storage.
    pub fn to_pkcs8_pem(&self) -> Zeroizing<String> {
        let pem = match &self.secret {
            Secret::P256(k) => k.to_pkcs8_pem(LineEnding::LF),
            Secret::P384(k) => k.to_pkcs8_pem(LineEnding::LF),
        }
        .expect("a valid key encodes as PKCS#8 PEM");
        Zeroizing::new(pem.as_str().to_owned())
    }

    /// The key id: the RFC 7638 thumbprint of the public key.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The signing algorithm.
    pub fn alg(&self) -> KeyAlgorithm {
        self.alg
    }

    /// The public key as a JWK (`kty`, `crv`, `x`, `y`, `kid`, `use: sig`, `alg`).
    pub fn public_jwk(&self) -> Value {
        self.public_jwk.clone()
    }

    pub(crate) fn encoding_key(&self) -> &EncodingKey {
        &self.encoding_key
    }
}

/// The RFC 7638 JWK thumbprint of a public JWK: SHA-256 over the JSON object of the
/// required members in lexicographic order without whitespace (§3.2: EC `crv kty x y`,
/// RSA `e kty n`, OKP `crv kty x`), base64url without padding.
pub fn jwk_thumbprint(jwk: &Value) -> Result<String, KeyError> {
    let kty = member(jwk, "kty")?;
    let names: &[&str] = match kty {
        "EC" => &["crv", "kty", "x", "y"],
        "RSA" => &["e", "kty", "n"],
        "OKP" => &["crv", "kty", "x"],
        other => return Err(KeyError::BadJwk(format!("unsupported kty `{other}`"))),
    };
    let mut canonical = String::from("{");
    for (i, name) in names.iter().enumerate() {
        if i > 0 {
            canonical.push(',');
        }
        let value = member(jwk, name)?;
        canonical.push_str(&serde_json::to_string(name).expect("string"));
        canonical.push(':');
        canonical.push_str(&serde_json::to_string(value).expect("string"));
    }
    canonical.push('}');
    Ok(URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes())))
}

fn member<'a>(jwk: &'a Value, name: &str) -> Result<&'a str, KeyError> {
    jwk.get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| KeyError::BadJwk(format!("missing string member `{name}`")))
}

/// One key of a [`Jwks`].
#[derive(Clone)]
struct JwkEntry {
    kid: Option<String>,
    jwk: Value,
    key: DecodingKey,
    retired_at: Option<i64>,
}

/// A JWK Set of public keys that tokens are verified against: ours (current and retired)
/// or another party's (a client's, an identity provider's).
#[derive(Clone, Default)]
pub struct Jwks {
    entries: Vec<JwkEntry>,
}

impl std::fmt::Debug for Jwks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.entries.iter().map(|e| (&e.kid, e.retired_at)))
            .finish()
    }
}

impl Jwks {
    /// An empty set.
    pub fn new() -> Jwks {
        Jwks::default()
    }

    /// A set holding the public half of `key`, current.
    pub fn with_current(key: &SigningKey) -> Jwks {
        let mut set = Jwks::new();
        set.add_signing_key(key);
        set
    }

    /// Reads a JWK Set (`{"keys": [...]}`) of another party. Keys that cannot verify
    /// signatures (encryption keys, unknown types, malformed members) are skipped.
    pub fn from_json(set: &Value) -> Result<Jwks, KeyError> {
        let keys = set
            .get("keys")
            .and_then(Value::as_array)
            .ok_or(KeyError::BadJwks)?;
        let mut out = Jwks::new();
        for jwk in keys {
            let _ = out.add(jwk.clone(), None);
        }
        Ok(out)
    }

    /// Adds a public JWK; `retired_at` (Unix seconds) for our retired keys, `None` for a
    /// current one or another party's. Refused: a key whose `use` is not `sig`, a
    /// symmetric (`oct`) key, and a JWK carrying private material (`d`).
    pub fn add(&mut self, jwk: Value, retired_at: Option<i64>) -> Result<(), KeyError> {
        if let Some(u) = jwk.get("use")
            && u.as_str() != Some("sig")
        {
            return Err(KeyError::BadJwk("`use` is not `sig`".into()));
        }
        match jwk.get("kty").and_then(Value::as_str) {
            Some("EC" | "RSA" | "OKP") => {}
            _ => return Err(KeyError::BadJwk("not an asymmetric public key".into())),
        }
        if jwk.get("d").is_some() {
            return Err(KeyError::BadJwk(
                "private key material in a public JWK".into(),
            ));
        }
        let parsed: jsonwebtoken::jwk::Jwk =
            serde_json::from_value(jwk.clone()).map_err(|e| KeyError::BadJwk(e.to_string()))?;
        let key = DecodingKey::from_jwk(&parsed).map_err(|e| KeyError::BadJwk(e.to_string()))?;
        let kid = jwk.get("kid").and_then(Value::as_str).map(str::to_owned);
        self.entries.retain(|e| kid.is_none() || e.kid != kid);
        self.entries.push(JwkEntry {
            kid,
            jwk,
            key,
            retired_at,
        });
        Ok(())
    }

    /// Adds the public half of one of our keys as current.
    pub fn add_signing_key(&mut self, key: &SigningKey) {
        self.add(key.public_jwk(), None)
            .expect("our own public JWK is valid");
    }

    /// Marks key `kid` retired at `at`; false if there is no such key.
    pub fn retire(&mut self, kid: &str, at: i64) -> bool {
        let mut found = false;
        for e in &mut self.entries {
            if e.kid.as_deref() == Some(kid) {
                e.retired_at.get_or_insert(at);
                found = true;
            }
        }
        found
    }

    /// Key rotation: every current key is retired at `now` and `new_key` becomes the
    /// current one. The caller signs with `new_key` from now on, stores the retirement
    /// times, and calls [`Jwks::prune`] later.
    pub fn rotate(&mut self, new_key: &SigningKey, now: i64) {
        for e in &mut self.entries {
            e.retired_at.get_or_insert(now);
        }
        self.add_signing_key(new_key);
    }

    /// Drops retired keys whose tokens have all expired: those with
    /// `retired_at + max_token_lifetime_secs <= now`. Returns the dropped kids.
    pub fn prune(&mut self, now: i64, max_token_lifetime_secs: i64) -> Vec<String> {
        let mut dropped = Vec::new();
        self.entries.retain(|e| match e.retired_at {
            Some(t) if t + max_token_lifetime_secs <= now => {
                dropped.extend(e.kid.clone());
                false
            }
            _ => true,
        });
        dropped
    }

    /// The public JWK with id `kid`.
    pub fn get(&self, kid: &str) -> Option<&Value> {
        self.entries
            .iter()
            .find(|e| e.kid.as_deref() == Some(kid))
            .map(|e| &e.jwk)
    }

    /// When key `kid` was retired (`Some(None)`: current; `None`: no such key).
    pub fn retired_at(&self, kid: &str) -> Option<Option<i64>> {
        self.entries
            .iter()
            .find(|e| e.kid.as_deref() == Some(kid))
            .map(|e| e.retired_at)
    }

    /// The key ids, in insertion order.
    pub fn kids(&self) -> Vec<&str> {
        self.entries
            .iter()
            .filter_map(|e| e.kid.as_deref())
            .collect()
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the set has no key.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The JWK Set document to publish at `jwks_uri` (`{"keys": [...]}`), current and
    /// retired keys alike.
    pub fn to_json(&self) -> Value {
        json!({ "keys": self.entries.iter().map(|e| e.jwk.clone()).collect::<Vec<_>>() })
    }

    /// The verification key for a JWS header: by `kid` if the header has one; without
    /// `kid`, the only key compatible with `alg` when there is exactly one. The key must
    /// suit `alg` (kty/crv) and, if the JWK names an `alg`, that one.
    pub(crate) fn select(&self, kid: Option<&str>, alg: &str) -> Result<&DecodingKey, SelectError> {
        let compatible = |e: &&JwkEntry| jwk_suits_alg(&e.jwk, alg);
        match kid {
            Some(kid) => {
                let e = self
                    .entries
                    .iter()
                    .find(|e| e.kid.as_deref() == Some(kid))
                    .ok_or(SelectError::UnknownKid)?;
                if compatible(&e) {
                    Ok(&e.key)
                } else {
                    Err(SelectError::WrongKeyType)
                }
            }
            None => {
                let mut it = self.entries.iter().filter(compatible);
                match (it.next(), it.next()) {
                    (Some(e), None) => Ok(&e.key),
                    _ => Err(SelectError::UnknownKid),
                }
            }
        }
    }
}

/// Why [`Jwks::select`] found no key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SelectError {
    UnknownKid,
    WrongKeyType,
}

fn jwk_suits_alg(jwk: &Value, alg: &str) -> bool {
    if let Some(a) = jwk.get("alg").and_then(Value::as_str)
        && a != alg
    {
        return false;
    }
    let kty = jwk.get("kty").and_then(Value::as_str);
    let crv = jwk.get("crv").and_then(Value::as_str);
    match alg {
        "ES256" => kty == Some("EC") && crv == Some("P-256"),
        "ES384" => kty == Some("EC") && crv == Some("P-384"),
        "RS256" | "RS384" | "RS512" | "PS256" | "PS384" | "PS512" => kty == Some("RSA"),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_7638_example_thumbprint() {
        // RFC 7638 §3.1
        let jwk = json!({
            "kty": "RSA",
            "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
            "e": "AQAB",
            "alg": "RS256",
            "kid": "2011-04-29"
        });
        assert_eq!(
            jwk_thumbprint(&jwk).unwrap(),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }

    #[test]
    fn generated_key_kid_is_its_public_thumbprint() {
        let k = SigningKey::generate();
        assert_eq!(k.alg(), KeyAlgorithm::Es256);
        let jwk = k.public_jwk();
        assert_eq!(jwk["kty"], "EC");
        assert_eq!(jwk["crv"], "P-256");
        assert_eq!(jwk["alg"], "ES256");
        assert_eq!(jwk["use"], "sig");
        assert_eq!(jwk["kid"], k.kid());
        assert_eq!(jwk_thumbprint(&jwk).unwrap(), k.kid());
        assert!(jwk.get("d").is_none(), "private part must not be published");
    }

    #[test]
    fn pkcs8_der_and_pem_round_trip_keep_the_kid() {
        for alg in [KeyAlgorithm::Es256, KeyAlgorithm::Es384] {
            let k = SigningKey::generate_with(alg);
            let again = SigningKey::from_pkcs8_der(&k.to_pkcs8_der()).unwrap();
            assert_eq!(again.kid(), k.kid());
            assert_eq!(again.alg(), alg);
            let pem = k.to_pkcs8_pem();
            assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
            assert_eq!(SigningKey::from_pkcs8_pem(&pem).unwrap().kid(), k.kid());
        }
    }

    #[test]
    fn garbage_is_not_a_key() {
        assert_eq!(
            SigningKey::from_pkcs8_der(b"nope").unwrap_err(),
            KeyError::BadPrivateKey
        );
        assert_eq!(
            SigningKey::from_pkcs8_pem("nope").unwrap_err(),
            KeyError::BadPrivateKey
        );
    }

    #[test]
    fn debug_does_not_show_the_private_key() {
        let k = SigningKey::generate();
        let shown = format!("{k:?}");
        assert!(shown.contains(k.kid()));
        assert!(!shown.contains("secret"));
    }

    #[test]
    fn rotation_keeps_old_key_until_its_tokens_expire() {
        let old = SigningKey::generate();
        let new = SigningKey::generate_with(KeyAlgorithm::Es384);
        let mut set = Jwks::with_current(&old);
        set.rotate(&new, 1_000);
        assert_eq!(set.kids(), vec![old.kid(), new.kid()]);
        assert_eq!(set.retired_at(old.kid()), Some(Some(1_000)));
        assert_eq!(set.retired_at(new.kid()), Some(None));
        // 15-minute tokens: the old key stays 900 s
        assert!(set.prune(1_899, 900).is_empty());
        assert_eq!(set.prune(1_900, 900), vec![old.kid().to_string()]);
        assert_eq!(set.kids(), vec![new.kid()]);
    }

    #[test]
    fn jwks_json_lists_public_keys() {
        let a = SigningKey::generate();
        let set = Jwks::with_current(&a);
        let doc = set.to_json();
        assert_eq!(doc["keys"].as_array().unwrap().len(), 1);
        assert_eq!(doc["keys"][0]["kid"], a.kid());
        let back = Jwks::from_json(&doc).unwrap();
        assert_eq!(back.kids(), vec![a.kid()]);
        assert_eq!(back.get(a.kid()), Some(&a.public_jwk()));
    }

    #[test]
    fn foreign_jwks_skips_unusable_keys() {
        let rsa: Value =
            serde_json::from_str(include_str!("../testdata/client-rsa-test-key.jwk.json")).unwrap();
        let doc = json!({"keys": [
            rsa,
            {"kty": "RSA", "kid": "enc", "use": "enc", "n": "AQAB", "e": "AQAB"},
            {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
        ]});
        let mut private = SigningKey::generate().public_jwk();
        private["d"] = json!("AAAA");
        assert!(Jwks::new().add(private, None).is_err());
        let set = Jwks::from_json(&doc).unwrap();
        assert_eq!(set.kids(), vec!["test-rsa-1"]);
        assert!(Jwks::from_json(&json!({"nokeys": []})).is_err());
    }

    #[test]
    fn key_selection_checks_kid_and_type() {
        let ec = SigningKey::generate();
        let set = Jwks::with_current(&ec);
        assert!(set.select(Some(ec.kid()), "ES256").is_ok());
        assert_eq!(
            set.select(Some(ec.kid()), "ES384").err(),
            Some(SelectError::WrongKeyType)
        );
        assert_eq!(
            set.select(Some(ec.kid()), "RS384").err(),
            Some(SelectError::WrongKeyType)
        );
        assert_eq!(
            set.select(Some("other"), "ES256").err(),
            Some(SelectError::UnknownKid)
        );
        // no kid: the single compatible key
        assert!(set.select(None, "ES256").is_ok());
        assert!(set.select(None, "ES384").is_err());
    }
}
