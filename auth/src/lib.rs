//! The policy and crypto core of MediFlow's SMART on FHIR authorization (issue 5). Pure:
//! no database, no HTTP, no clock (callers pass `now` as Unix seconds) and no logging;
//! randomness comes from the operating system.
//!
//! Module map:
//! * [`scopes`]: SMART App Launch 2.0 scopes, v1 and v2 syntax with query restrictions
//!   ([`scopes::ScopeSet`]), what a set allows for an interaction on a resource type
//!   ([`scopes::ScopeSet::allows`] → [`scopes::Access`]), and capping a request
//!   ([`scopes::ScopeSet::intersect`]).
//! * [`roles`]: the hospital roles of `hospital-model.md` § Roles ([`roles::Role`]) and
//!   the scope cap of each ([`roles::Role::cap`]).
//! * [`pkce`]: RFC 7636 S256 code challenges.
//! * [`password`]: Argon2id password hashes (PHC strings) and the login throttle
//!   ([`password::LoginThrottle`], 5 failures in 15 minutes lock 15 minutes).
//! * [`keys`]: ES256/ES384 signing keys with RFC 7638 thumbprint `kid`s, PKCS#8 storage,
//!   and JWK Sets with rotation ([`keys::Jwks`]).
//! * [`tokens`]: access tokens and id_tokens (issue, verify), SMART Backend Services
//!   client assertions (RS384/ES384), tokens of an external OIDC provider, and opaque
//!   secrets for codes and refresh tokens.
//!
//! Crypto: `jsonwebtoken` 11 with its `rust_crypto` backend (exactly one backend may be
//! enabled in the build: enabling `aws_lc_rs` anywhere as well makes it panic). We sign
//! with ECDSA only and merely verify RSA (the `rsa` crate's private-key operations have
//! an open timing advisory).

#![warn(missing_docs)]

pub mod keys;
pub mod password;
pub mod pkce;
pub mod roles;
pub mod scopes;
pub mod tokens;

pub use keys::{Jwks, KeyAlgorithm, SigningKey};
pub use roles::Role;
pub use scopes::{Access, Interaction, Permissions, ResourceScope, ScopeContext, ScopeSet};
pub use tokens::{AccessClaims, ClientAssertion, ExternalToken, IdTokenClaims, TokenError};
