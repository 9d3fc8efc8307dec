//! Passwords: Argon2id hashes in PHC string form (RFC 9106; the `argon2` crate's
//! defaults, OWASP's m=19 MiB, t=2, p=1), the login throttle of seed 004
//! NFR-SEC-001 (issue 5, item 8), and random one-time passwords ([`generate`], issue 5,
//! item 1: the first administrator's).

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

/// A password could not be hashed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    /// The Argon2 implementation refused the input (e.g. a password longer than it
    /// accepts).
    #[error("password hashing failed: {0}")]
    Hash(String),
}

fn hasher() -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::default())
}

/// Hashes `password` with Argon2id and a fresh random 16-byte salt; returns the PHC
/// string (`$argon2id$v=19$m=19456,t=2,p=1$salt$hash`) to store.
pub fn hash(password: &str) -> Result<String, PasswordError> {
    let salt = SaltString::generate(&mut OsRng);
    hasher()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| PasswordError::Hash(e.to_string()))
}

/// Whether `password` matches the stored PHC string `phc` (with the parameters written
/// in it). A malformed or non-Argon2 `phc` gives `false`.
pub fn verify(password: &str, phc: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    hasher()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok()
}

/// Whether `phc` was made with other parameters than today's defaults (then rehash the
/// password at the next successful login).
pub fn needs_rehash(phc: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else {
        return true;
    };
    if parsed.algorithm.as_str() != "argon2id" {
        return true;
    }
    match Params::try_from(&parsed) {
        Ok(p) => {
            let d = Params::default();
            p.m_cost() != d.m_cost() || p.t_cost() != d.t_cost() || p.p_cost() != d.p_cost()
        }
        Err(_) => true,
    }
}

/// Characters of [`generate`]d passwords: ASCII letters and digits without the look-alikes
/// `0 O o 1 l I` (56 symbols, ~5.8 bits each), so a password read off a terminal can be
/// typed without doubt.
pub const GENERATED_ALPHABET: &[u8] = b"23456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnpqrstuvwxyz";

/// Length of [`generate`]d passwords: 24 symbols of [`GENERATED_ALPHABET`], ~139 bits.
pub const GENERATED_LEN: usize = 24;

/// A random password of [`GENERATED_LEN`] symbols of [`GENERATED_ALPHABET`], drawn from
/// the operating system's CSPRNG (`OsRng`) without modulo bias (bytes beyond the largest
/// multiple of the alphabet size are redrawn).
pub fn generate() -> String {
    use argon2::password_hash::rand_core::RngCore;
    let n = GENERATED_ALPHABET.len();
    let limit = 256 - 256 % n; // bytes >= limit would favour the first symbols
    let mut out = String::with_capacity(GENERATED_LEN);
    let mut buf = [0u8; 64];
    while out.len() < GENERATED_LEN {
        OsRng.fill_bytes(&mut buf);
        for &b in buf.iter().filter(|&&b| usize::from(b) < limit) {
            if out.len() == GENERATED_LEN {
                break;
            }
            out.push(char::from(GENERATED_ALPHABET[usize::from(b) % n]));
        }
    }
    out
}

/// The login throttle policy (seed 004 NFR-SEC-001): `max_failures` failed logins of one
/// account within `window_secs` lock it for `lockout_secs` after the last of them.
///
/// Pure: the caller keeps the failure timestamps (Unix seconds) of each account since
/// its last successful login, asks [`LoginThrottle::locked_until`] before checking a
/// password, refuses the attempt without checking it while locked (and records no
/// failure for it), records a failure on a wrong password, and clears the list on
/// success. Failures older than [`LoginThrottle::forget_before`] can be deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginThrottle {
    /// Failures that trigger the lock (5).
    pub max_failures: usize,
    /// The window they must fall in, seconds (15 minutes).
    pub window_secs: i64,
    /// How long the account stays locked after the triggering failure, seconds
    /// (15 minutes).
    pub lockout_secs: i64,
}

impl Default for LoginThrottle {
    fn default() -> Self {
        LoginThrottle {
            max_failures: 5,
            window_secs: 15 * 60,
            lockout_secs: 15 * 60,
        }
    }
}

impl LoginThrottle {
    /// If the account is locked at `now`, until when (Unix seconds, exclusive).
    /// `failures` are the failure times in any order.
    pub fn locked_until(&self, failures: &[i64], now: i64) -> Option<i64> {
        if self.max_failures == 0 || failures.len() < self.max_failures {
            return None;
        }
        let mut sorted = failures.to_vec();
        sorted.sort_unstable();
        let n = self.max_failures;
        sorted
            .windows(n)
            .filter(|w| w[n - 1] - w[0] < self.window_secs)
            .map(|w| w[n - 1] + self.lockout_secs)
            .max()
            .filter(|&until| until > now)
    }

    /// Failures before this time can no longer contribute to a lock at or after `now`.
    pub fn forget_before(&self, now: i64) -> i64 {
        now - self.window_secs - self.lockout_secs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_argon2id_phc_with_default_parameters() {
        let h = hash("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(!needs_rehash(&h));
    }

    #[test]
    fn verify_accepts_the_right_password_only() {
        let h = hash("s3cret!").unwrap();
        assert!(verify("s3cret!", &h));
        assert!(!verify("s3cret", &h));
        assert!(!verify("", &h));
    }

    #[test]
    fn same_password_hashes_differently_each_time() {
        assert_ne!(hash("x").unwrap(), hash("x").unwrap());
    }

    #[test]
    fn malformed_hash_never_verifies_and_needs_rehash() {
        assert!(!verify("x", "not a hash"));
        assert!(!verify("x", ""));
        assert!(needs_rehash(
            "$argon2id$v=19$m=4096,t=3,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA"
        ));
        assert!(needs_rehash("garbage"));
    }

    #[test]
    fn five_failures_in_fifteen_minutes_lock_for_fifteen_minutes() {
        let t = LoginThrottle::default();
        let f = [1000, 1100, 1200, 1300, 1400];
        assert_eq!(t.locked_until(&f, 1401), Some(1400 + 900));
        assert_eq!(t.locked_until(&f, 2299), Some(2300));
        assert_eq!(t.locked_until(&f, 2300), None);
    }

    #[test]
    fn four_failures_do_not_lock() {
        let t = LoginThrottle::default();
        assert_eq!(t.locked_until(&[1000, 1001, 1002, 1003], 1004), None);
    }

    #[test]
    fn failures_spread_over_more_than_the_window_do_not_lock() {
        let t = LoginThrottle::default();
        let f = [0, 300, 600, 800, 900];
        assert_eq!(t.locked_until(&f, 901), None);
        // a sixth failure brings the last five inside 15 minutes
        let f = [0, 300, 600, 800, 900, 1000];
        assert_eq!(t.locked_until(&f, 1001), Some(1900));
    }

    #[test]
    fn unsorted_failures_are_handled() {
        let t = LoginThrottle::default();
        assert_eq!(t.locked_until(&[40, 10, 30, 20, 0], 41), Some(940));
    }

    #[test]
    fn generated_passwords_are_long_random_and_unambiguous() {
        let a = generate();
        let b = generate();
        assert_eq!(a.len(), GENERATED_LEN);
        const { assert!(GENERATED_LEN >= 20) };
        assert_ne!(a, b);
        assert!(a.bytes().all(|c| GENERATED_ALPHABET.contains(&c)), "{a}");
        assert!(!a.contains(['0', 'O', 'o', '1', 'l', 'I']), "{a}");
    }

    #[test]
    fn old_failures_can_be_forgotten() {
        let t = LoginThrottle::default();
        assert_eq!(t.forget_before(10_000), 10_000 - 1800);
    }
}
