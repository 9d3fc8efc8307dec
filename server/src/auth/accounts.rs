//! User and client accounts (issue 5, items 1 and 5): the rules shared by the
//! `mediflow user|client` commands ([`super::cli`]) and the admin API
//! (`crate::http::admin`), so that both accept and refuse the same input.
//!
//! * A **username** is 1 to 128 of `A-Z a-z 0-9 . _ @ + -` (an e-mail address fits).
//! * A **role** is a hospital role of `hospital-model.md` § Roles ([`Role`]).
//! * A **fhirUser** is the user's FHIR resource, `Practitioner/id`, `Patient/id`,
//!   `RelatedPerson/id` or `Person/id` (the types SMART App Launch 2.0 § "fhirUser"
//!   allows; `id` an R4 id, datatypes.html#id: `[A-Za-z0-9\-\.]{1,64}`).
//! * A **password** has 8 to 1024 characters; only its Argon2id hash is stored.
//! * A **client** registered here is a SMART Backend Services client
//!   (backend-services.html § "Registering a SMART Backend Service"): a client id, a
//!   public JWK Set inline or by URL (no private key material), and the most it may be
//!   granted, a scope string giving some resource access.
//!
//! First start ([`ensure_first_admin`]): when authorization is on and `auth_users` is
//! empty, `serve` creates the user [`FIRST_ADMIN`] with role ADMIN. Its password comes from
//! [`ADMIN_PASSWORD_ENV`] when set (never printed, and the operator's choice, so not
//! one-time); otherwise it is generated ([`mediflow_auth::password::generate`], 24
//! symbols from the OS CSPRNG), printed once on stdout by the caller, and one-time: the
//! user is stored with `must_change_password` and gets no token until it is changed
//! (`mediflow user passwd`).

use mediflow_auth::Role;
use serde_json::Value;

use super::now_secs;
use crate::storage::auth::{ClientRecord, UserRecord};
use crate::storage::{Store, StoreError};

/// The username of the administrator created on first start.
pub const FIRST_ADMIN: &str = "admin";
/// The environment variable with the first administrator's password.
pub const ADMIN_PASSWORD_ENV: &str = "MEDIFLOW_ADMIN_PASSWORD";
/// Fewest characters of a password.
pub const MIN_PASSWORD_CHARS: usize = 8;
/// Most characters of a password (Argon2 would take more; nobody types more).
pub const MAX_PASSWORD_CHARS: usize = 1024;
/// Most characters of a username.
pub const MAX_USERNAME_CHARS: usize = 128;
/// The resource types a `fhirUser` may name (SMART App Launch 2.0 § "fhirUser").
pub const FHIR_USER_TYPES: [&str; 4] = ["Practitioner", "Patient", "RelatedPerson", "Person"];

/// Why an account could not be created, changed or removed.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    /// Bad input: the message says which field and why (HTTP 400).
    #[error("{0}")]
    Invalid(String),
    /// No such user or client (HTTP 404).
    #[error("{0}")]
    NotFound(String),
    /// The username or client id is taken (HTTP 409).
    #[error("{0}")]
    Taken(String),
    /// The change would leave no ADMIN user, so nobody could manage accounts any more
    /// (HTTP 409).
    #[error("{0}")]
    LastAdmin(String),
    /// Database failure (HTTP 500).
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn invalid(msg: impl Into<String>) -> AccountError {
    AccountError::Invalid(msg.into())
}

/// A password in memory: its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(pub String);

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(***)")
    }
}

/// Checks a username (module doc).
pub fn check_username(username: &str) -> Result<(), AccountError> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | '+' | '-');
    if username.is_empty() || username.len() > MAX_USERNAME_CHARS || !username.chars().all(ok_char)
    {
        return Err(invalid(format!(
            "username {username:?}: expected 1 to {MAX_USERNAME_CHARS} of A-Z a-z 0-9 . _ @ + -"
        )));
    }
    Ok(())
}

/// Parses a role name (case-insensitive, `mediflow_auth::Role`).
pub fn parse_role(role: &str) -> Result<Role, AccountError> {
    role.parse()
        .map_err(|e: mediflow_auth::roles::UnknownRole| invalid(e.to_string()))
}

/// Checks a `fhirUser` reference: `Practitioner|Patient|RelatedPerson|Person/id`.
pub fn check_fhir_user(fhir_user: &str) -> Result<(), AccountError> {
    let bad = || {
        invalid(format!(
            "fhirUser {fhir_user:?}: expected Practitioner/id, Patient/id, RelatedPerson/id or \
             Person/id"
        ))
    };
    let (res_type, id) = fhir_user.split_once('/').ok_or_else(bad)?;
    let id_ok = !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    if !FHIR_USER_TYPES.contains(&res_type) || !id_ok {
        return Err(bad());
    }
    Ok(())
}

/// Checks a password's length (module doc).
pub fn check_password(password: &str) -> Result<(), AccountError> {
    let n = password.chars().count();
    if n < MIN_PASSWORD_CHARS {
        return Err(invalid(format!(
            "the password must have at least {MIN_PASSWORD_CHARS} characters"
        )));
    }
    if n > MAX_PASSWORD_CHARS {
        return Err(invalid(format!(
            "the password must have at most {MAX_PASSWORD_CHARS} characters"
        )));
    }
    Ok(())
}

/// Checks a password ([`check_password`]) and hashes it (Argon2id PHC string).
pub fn hash_password(password: &str) -> Result<String, AccountError> {
    check_password(password)?;
    mediflow_auth::password::hash(password).map_err(|e| invalid(e.to_string()))
}

/// A new user record, every field checked, the password hashed (Argon2id).
pub fn new_user(
    username: &str,
    password: &str,
    role: &str,
    fhir_user: Option<&str>,
    must_change_password: bool,
) -> Result<UserRecord, AccountError> {
    check_username(username)?;
    let role = parse_role(role)?;
    if let Some(f) = fhir_user {
        check_fhir_user(f)?;
    }
    Ok(UserRecord {
        username: username.to_string(),
        password_hash: hash_password(password)?,
        role: role.as_str().to_string(),
        fhir_user: fhir_user.map(str::to_string),
        failures: "[]".into(),
        locked_until: None,
        created_at: now_secs(),
        must_change_password,
    })
}

/// Refuses to remove `username`, or to give it the role `new_role`, when it is the only
/// ADMIN user left: the hospital would lose its last administrator.
pub async fn keep_an_admin(
    store: &dyn Store,
    username: &str,
    new_role: Option<Role>,
) -> Result<(), AccountError> {
    if new_role == Some(Role::Admin) {
        return Ok(());
    }
    let users = store.auth_users().await?;
    let is_admin = |u: &UserRecord| u.role == Role::Admin.as_str();
    let target_is_admin = users.iter().any(|u| u.username == username && is_admin(u));
    if target_is_admin && users.iter().filter(|u| is_admin(u)).count() == 1 {
        return Err(AccountError::LastAdmin(format!(
            "{username:?} is the only ADMIN user: add another administrator first"
        )));
    }
    Ok(())
}

/// Sets `username`'s password and clears its `must_change_password` flag and its login
/// lock (failures and `locked_until`): what `mediflow user passwd` does.
pub async fn set_password(
    store: &dyn Store,
    username: &str,
    password: &str,
) -> Result<UserRecord, AccountError> {
    let mut user = store
        .auth_user(username)
        .await?
        .ok_or_else(|| AccountError::NotFound(format!("no user {username:?}")))?;
    user.password_hash = hash_password(password)?;
    user.must_change_password = false;
    user.failures = "[]".into();
    user.locked_until = None;
    store.auth_put_user(&user).await?;
    Ok(user)
}

/// What [`ensure_first_admin`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FirstAdmin {
    /// There were users already (or another server created the first one): nothing.
    NotNeeded,
    /// The administrator was created with the password of [`ADMIN_PASSWORD_ENV`].
    CreatedWithGivenPassword,
    /// The administrator was created with this generated one-time password, to be shown
    /// once to the operator.
    CreatedWithOneTimePassword(Password),
}

/// First start (issue 5, item 1; module doc): creates [`FIRST_ADMIN`] with role ADMIN when
/// there is no user at all. `given` is the value of [`ADMIN_PASSWORD_ENV`], if set.
pub async fn ensure_first_admin(
    store: &dyn Store,
    given: Option<&Password>,
) -> Result<FirstAdmin, AccountError> {
    if store.auth_has_users().await? {
        return Ok(FirstAdmin::NotNeeded);
    }
    let (password, one_time) = match given {
        Some(p) => {
            check_password(&p.0).map_err(|e| invalid(format!("{ADMIN_PASSWORD_ENV}: {e}")))?;
            (p.clone(), false)
        }
        None => (Password(mediflow_auth::password::generate()), true),
    };
    let user = new_user(
        FIRST_ADMIN,
        &password.0,
        Role::Admin.as_str(),
        None,
        one_time,
    )?;
    if !store.auth_add_first_user(&user).await? {
        return Ok(FirstAdmin::NotNeeded);
    }
    Ok(if one_time {
        FirstAdmin::CreatedWithOneTimePassword(password)
    } else {
        FirstAdmin::CreatedWithGivenPassword
    })
}

/// A client's JWK Set must hold at least one usable public signature key (RS384 or
/// ES384) and no private key material (`d`).
pub fn check_public_jwks(value: &Value) -> Result<(), AccountError> {
    let keys = value
        .get("keys")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("the JWK Set has no \"keys\" array"))?;
    if keys.iter().any(|k| k.get("d").is_some()) {
        return Err(invalid(
            "the JWK Set contains a private key (\"d\"): register the public keys only",
        ));
    }
    let usable =
        mediflow_auth::Jwks::from_json(value).map_err(|e| invalid(format!("the JWK Set: {e}")))?;
    if usable.is_empty() {
        return Err(invalid(
            "the JWK Set has no usable public signature key (RS384 or ES384)",
        ));
    }
    Ok(())
}

/// What kind of OAuth client is registered (`auth_clients.kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientKind {
    /// SMART Backend Services: `client_credentials` with private_key_jwt, no redirect URI.
    Backend,
    /// An app without a secret (SMART client-public): PKCE protects its codes.
    Public,
    /// An app authenticating with private_key_jwt (SMART client-confidential-asymmetric).
    Confidential,
}

impl ClientKind {
    /// `backend`, `public` or `confidential`.
    pub fn parse(s: &str) -> Result<ClientKind, AccountError> {
        match s {
            "backend" => Ok(ClientKind::Backend),
            "public" => Ok(ClientKind::Public),
            "confidential" => Ok(ClientKind::Confidential),
            other => Err(invalid(format!(
                "kind {other:?}: expected backend, public or confidential"
            ))),
        }
    }

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            ClientKind::Backend => "backend",
            ClientKind::Public => "public",
            ClientKind::Confidential => "confidential",
        }
    }
}

/// The registration of a client (CLI `mediflow client add` and `POST /admin/clients`):
/// an id of printable ASCII, scopes that grant some resource access; backend and
/// confidential clients need public keys (a JWK Set inline or by URL) and public clients
/// none; apps need at least one absolute redirect URI without fragment (RFC 6749
/// §3.1.2) and backend clients none.
pub fn new_client(
    kind: ClientKind,
    client_id: &str,
    name: Option<&str>,
    jwks: Option<&Value>,
    jwks_url: Option<&str>,
    redirect_uris: &[String],
    scope: &str,
) -> Result<ClientRecord, AccountError> {
    let id_ok = |c: char| c.is_ascii_graphic();
    if client_id.is_empty() || client_id.len() > 256 || !client_id.chars().all(id_ok) {
        return Err(invalid(format!(
            "client id {client_id:?}: expected 1 to 256 printable ASCII characters without spaces"
        )));
    }
    let scopes = mediflow_auth::ScopeSet::parse(scope)
        .map_err(|e| invalid(format!("scope {scope:?}: {e}")))?;
    if scopes.has_no_resource_access() {
        return Err(invalid(format!(
            "scope {scope:?} grants no resource access"
        )));
    }
    let jwks_text = match (kind, jwks, jwks_url) {
        (_, Some(_), Some(_)) => return Err(invalid("give jwks or jwksUrl, not both")),
        (ClientKind::Public, None, None) => None,
        (ClientKind::Public, _, _) => {
            return Err(invalid(
                "a public client has no keys: drop jwks/jwksUrl or register it as confidential",
            ));
        }
        (_, None, None) => {
            return Err(invalid(format!(
                "a {} client authenticates with private_key_jwt: it needs its public keys \
                 (jwks or jwksUrl)",
                kind.as_str()
            )));
        }
        (_, Some(v), None) => {
            check_public_jwks(v)?;
            Some(v.to_string())
        }
        (_, None, Some(url)) => {
            let parsed =
                url::Url::parse(url).map_err(|e| invalid(format!("jwksUrl {url:?}: {e}")))?;
            if !matches!(parsed.scheme(), "https" | "http") {
                return Err(invalid(format!("jwksUrl {url:?}: expected an http(s) URL")));
            }
            None
        }
    };
    match kind {
        ClientKind::Backend if !redirect_uris.is_empty() => {
            return Err(invalid(
                "a backend client has no redirect URI (client_credentials grant)",
            ));
        }
        ClientKind::Public | ClientKind::Confidential if redirect_uris.is_empty() => {
            return Err(invalid(format!(
                "a {} app needs at least one redirect URI",
                kind.as_str()
            )));
        }
        _ => {}
    }
    for uri in redirect_uris {
        let u = url::Url::parse(uri).map_err(|e| invalid(format!("redirect URI {uri:?}: {e}")))?;
        if u.fragment().is_some() {
            return Err(invalid(format!(
                "redirect URI {uri:?} has a fragment (RFC 6749 §3.1.2)"
            )));
        }
    }
    Ok(ClientRecord {
        client_id: client_id.to_string(),
        name: name.unwrap_or(client_id).to_string(),
        kind: kind.as_str().into(),
        jwks: jwks_text,
        jwks_url: jwks_url.map(str::to_string),
        scopes: scopes.to_string(),
        redirect_uris: serde_json::json!(redirect_uris).to_string(),
        created_at: now_secs(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fhir_user_must_name_a_person_like_resource() {
        for ok in [
            "Practitioner/1",
            "Patient/a-b.c",
            "RelatedPerson/x",
            "Person/P9",
        ] {
            check_fhir_user(ok).unwrap();
        }
        for bad in [
            "Observation/1",
            "Practitioner/",
            "Practitioner",
            "Practitioner/1/_history/2",
            "http://h/fhir/Practitioner/1",
            "Patient/a b",
            "",
        ] {
            assert!(check_fhir_user(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn usernames_are_short_and_plain() {
        check_username("dr.house@example.org").unwrap();
        for bad in ["", "a b", "semi;colon", &"x".repeat(129)] {
            assert!(check_username(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn new_user_validates_role_and_password() {
        assert!(matches!(
            new_user("u", "long enough", "SURGEON", None, false),
            Err(AccountError::Invalid(_))
        ));
        assert!(matches!(
            new_user("u", "short", "DOCTOR", None, false),
            Err(AccountError::Invalid(_))
        ));
        let u = new_user("u", "long enough", "doctor", Some("Practitioner/1"), true).unwrap();
        assert_eq!(u.role, "DOCTOR");
        assert!(u.must_change_password);
        assert!(mediflow_auth::password::verify(
            "long enough",
            &u.password_hash
        ));
    }

    #[test]
    fn password_debug_hides_the_password() {
        assert!(!format!("{:?}", Password("s3cret-pw".into())).contains("s3cret"));
    }

    fn new_backend_client(
        id: &str,
        name: Option<&str>,
        jwks: Option<&Value>,
        url: Option<&str>,
        scope: &str,
    ) -> Result<ClientRecord, AccountError> {
        new_client(ClientKind::Backend, id, name, jwks, url, &[], scope)
    }

    #[test]
    fn apps_need_redirect_uris_and_public_apps_no_keys() {
        let key = mediflow_auth::SigningKey::generate_with(mediflow_auth::KeyAlgorithm::Es384);
        let jwks = serde_json::json!({"keys": [key.public_jwk()]});
        let cb = vec!["https://app.example/cb".to_string()];
        let app = new_client(
            ClientKind::Public,
            "app",
            None,
            None,
            None,
            &cb,
            "patient/*.rs",
        )
        .unwrap();
        assert_eq!(app.kind, "public");
        assert_eq!(app.redirect_uris, r#"["https://app.example/cb"]"#);
        assert!(
            new_client(
                ClientKind::Public,
                "app",
                None,
                None,
                None,
                &[],
                "patient/*.rs"
            )
            .is_err()
        );
        assert!(
            new_client(
                ClientKind::Public,
                "app",
                None,
                Some(&jwks),
                None,
                &cb,
                "patient/*.rs"
            )
            .is_err()
        );
        assert!(
            new_client(
                ClientKind::Confidential,
                "app",
                None,
                None,
                None,
                &cb,
                "patient/*.rs"
            )
            .is_err()
        );
        assert!(
            new_client(
                ClientKind::Confidential,
                "app",
                None,
                Some(&jwks),
                None,
                &cb,
                "patient/*.rs"
            )
            .is_ok()
        );
        assert!(
            new_client(
                ClientKind::Backend,
                "lab",
                None,
                Some(&jwks),
                None,
                &cb,
                "system/*.rs"
            )
            .is_err()
        );
        let frag = vec!["https://app.example/cb#x".to_string()];
        assert!(
            new_client(
                ClientKind::Public,
                "app",
                None,
                None,
                None,
                &frag,
                "patient/*.rs"
            )
            .is_err()
        );
    }

    #[test]
    fn backend_clients_need_public_keys_and_resource_scopes() {
        let key = mediflow_auth::SigningKey::generate_with(mediflow_auth::KeyAlgorithm::Es384);
        let jwks = serde_json::json!({"keys": [key.public_jwk()]});
        let c =
            new_backend_client("lab", None, Some(&jwks), None, "system/Observation.rs").unwrap();
        assert_eq!(c.kind, "backend");
        assert_eq!(c.name, "lab");
        assert!(new_backend_client("lab", None, Some(&jwks), None, "openid").is_err());
        assert!(new_backend_client("lab", None, None, None, "system/Observation.rs").is_err());
        assert!(new_backend_client("a b", None, Some(&jwks), None, "system/*.rs").is_err());
        let mut private = key.public_jwk();
        private["d"] = serde_json::json!("AAAA");
        let private = serde_json::json!({"keys": [private]});
        assert!(new_backend_client("lab", None, Some(&private), None, "system/*.rs").is_err());
        assert!(
            new_backend_client("lab", None, None, Some("ftp://x/jwks"), "system/*.rs").is_err()
        );
    }
}
