//! PKCE, Proof Key for Code Exchange (RFC 7636), method `S256` only: SMART App Launch
//! 2.0 § "App Protection" requires S256 and forbids `plain`.
//!
//! * RFC 7636 §4.1: `code_verifier = 43*128unreserved`, unreserved = `ALPHA / DIGIT /
//!   "-" / "." / "_" / "~"`.
//! * RFC 7636 §4.2: `code_challenge = BASE64URL-ENCODE(SHA256(ASCII(code_verifier)))`
//!   (no padding, so always 43 characters).
//! * RFC 7636 §4.6: the server recomputes the challenge from the verifier and compares.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

/// Whether `verifier` has the form RFC 7636 §4.1 requires (43–128 unreserved chars).
pub fn is_valid_verifier(verifier: &str) -> bool {
    (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// Whether `challenge` has the form of an S256 challenge (43 base64url characters).
pub fn is_valid_challenge(challenge: &str) -> bool {
    challenge.len() == 43
        && challenge
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
}

/// The S256 challenge of `verifier` (RFC 7636 §4.2), for clients and tests.
pub fn challenge_s256(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// RFC 7636 §4.6 with `S256`: true iff `verifier` is well-formed and its challenge
/// equals `challenge` (compared in constant time).
pub fn verify_s256(verifier: &str, challenge: &str) -> bool {
    if !is_valid_verifier(verifier) || !is_valid_challenge(challenge) {
        return false;
    }
    constant_time_eq(challenge_s256(verifier).as_bytes(), challenge.as_bytes())
}

/// Byte-wise comparison whose time does not depend on where the inputs differ.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7636 Appendix B.
    const RFC_VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    const RFC_CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

    #[test]
    fn rfc_7636_appendix_b_example_verifies() {
        assert_eq!(challenge_s256(RFC_VERIFIER), RFC_CHALLENGE);
        assert!(verify_s256(RFC_VERIFIER, RFC_CHALLENGE));
    }

    #[test]
    fn wrong_verifier_is_refused() {
        let other = "eBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        assert!(!verify_s256(other, RFC_CHALLENGE));
    }

    #[test]
    fn verifier_length_is_checked() {
        let short = "a".repeat(42);
        assert!(!verify_s256(&short, &challenge_s256(&short)));
        let long = "a".repeat(129);
        assert!(!verify_s256(&long, &challenge_s256(&long)));
        let ok = "a".repeat(128);
        assert!(verify_s256(&ok, &challenge_s256(&ok)));
    }

    #[test]
    fn verifier_charset_is_checked() {
        let bad = format!("{}+", "a".repeat(43));
        assert!(!verify_s256(&bad, &challenge_s256(&bad)));
        let space = format!("{} ", "a".repeat(43));
        assert!(!is_valid_verifier(&space));
        assert!(is_valid_verifier(&format!("{}-._~", "a".repeat(43))));
    }

    #[test]
    fn plain_method_challenge_is_refused() {
        // a `plain` challenge equals the verifier itself
        assert!(!verify_s256(RFC_VERIFIER, RFC_VERIFIER));
    }
}
