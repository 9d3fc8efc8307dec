//! The security tables (issue 5): signing keys, OAuth clients, users, client-assertion
//! `jti`s (replay protection) and revoked tokens. Layout: `migrations/<backend>/0004_auth.sql`,
//! and `0005_admin.sql` (`auth_users.must_change_password`).
//!
//! As for [`super::hl7_messages`], the SQL text is built once here with [`Sql`] for both
//! backends; `sqlite::SqliteStore` and `postgres::PgStore` only run it. Times are Unix
//! seconds. Nothing here interprets keys, scopes or hashes: that is `mediflow-auth`'s and
//! `crate::auth`'s work.

use sqlx::{AssertSqlSafe, Row};

use super::StoreError;
use super::sql::{Bind, Dialect, Sql};

/// One of our signing keys as stored (`auth_signing_keys`).
#[derive(Clone, PartialEq, Eq)]
pub struct StoredKey {
    /// RFC 7638 thumbprint of the public key.
    pub kid: String,
    /// `ES256` or `ES384`.
    pub alg: String,
    /// The private key, PKCS#8 PEM.
    pub pkcs8_pem: String,
    /// When it was made.
    pub created_at: i64,
    /// When it stopped signing; `None` for the current key.
    pub retired_at: Option<i64>,
}

impl std::fmt::Debug for StoredKey {
    /// Never shows the private key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("created_at", &self.created_at)
            .field("retired_at", &self.retired_at)
            .finish_non_exhaustive()
    }
}

/// A registered OAuth client (`auth_clients`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientRecord {
    /// The `client_id` (also `iss` and `sub` of its client assertions).
    pub client_id: String,
    /// A display name.
    pub name: String,
    /// `backend`, `public` or `confidential`.
    pub kind: String,
    /// Its JWK Set, JSON text (SMART: registered inline), or `None` with [`Self::jwks_url`].
    pub jwks: Option<String>,
    /// Where its JWK Set is fetched from (SMART: registered by URL).
    pub jwks_url: Option<String>,
    /// The most it may be granted, a space-separated scope string.
    pub scopes: String,
    /// Registered redirect URIs, JSON array text.
    pub redirect_uris: String,
    /// Registration time.
    pub created_at: i64,
}

/// A user (`auth_users`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    /// Login name.
    pub username: String,
    /// Argon2id PHC string.
    pub password_hash: String,
    /// The hospital role (`ADMIN`, `DOCTOR`, ...).
    pub role: String,
    /// The linked FHIR resource (`Practitioner/1`).
    pub fhir_user: Option<String>,
    /// Recent failed login times, JSON array text.
    pub failures: String,
    /// Locked until this time.
    pub locked_until: Option<i64>,
    /// Creation time.
    pub created_at: i64,
    /// The password was set for the user (the generated password of the first
    /// administrator, issue 5 item 1) and is good for one thing only: changing it. While
    /// this is true, **no token may be issued for the user**: the login flow must check it
    /// after a correct password and send the user to a password change instead (see
    /// [`UserRecord::may_get_tokens`]). `mediflow user passwd` clears it.
    pub must_change_password: bool,
}

impl UserRecord {
    /// Whether the login flow may issue tokens for this user once the password checked
    /// out: false while [`Self::must_change_password`] is set (the password is one-time).
    /// Locks ([`Self::locked_until`]) are the login throttle's business, not this check's.
    pub fn may_get_tokens(&self) -> bool {
        !self.must_change_password
    }
}

const KEY_COLUMNS: &str = "kid, alg, pkcs8_pem, created_at, retired_at";
const CLIENT_COLUMNS: &str =
    "client_id, name, kind, jwks, jwks_url, scopes, redirect_uris, created_at";
const USER_COLUMNS: &str = "username, password_hash, role, fhir_user, failures, locked_until, \
     created_at, must_change_password";

fn keys(dialect: Dialect) -> Sql {
    let mut sql = Sql::new(dialect, "SELECT ");
    sql.push(KEY_COLUMNS)
        .push(" FROM auth_signing_keys ORDER BY created_at, kid");
    sql
}

fn retire_keys(dialect: Dialect, at: i64) -> Sql {
    let mut sql = Sql::new(dialect, "UPDATE auth_signing_keys SET retired_at = ");
    sql.bind(Bind::Int(at)).push(" WHERE retired_at IS NULL");
    sql
}

fn insert_key(dialect: Dialect, k: &StoredKey) -> Sql {
    let mut sql = Sql::new(dialect, "INSERT INTO auth_signing_keys (");
    sql.push(KEY_COLUMNS).push(") VALUES ").rows(&[k], |k| {
        vec![
            Bind::Text(k.kid.clone()),
            Bind::Text(k.alg.clone()),
            Bind::Text(k.pkcs8_pem.clone()),
            Bind::Int(k.created_at),
            Bind::OptInt(k.retired_at),
        ]
    });
    sql
}

fn client(dialect: Dialect, client_id: Option<&str>) -> Sql {
    let mut sql = Sql::new(dialect, "SELECT ");
    sql.push(CLIENT_COLUMNS).push(" FROM auth_clients");
    if let Some(id) = client_id {
        sql.push(" WHERE client_id = ")
            .bind(Bind::Text(id.to_string()));
    }
    sql.push(" ORDER BY client_id");
    sql
}

fn put_client(dialect: Dialect, c: &ClientRecord) -> Sql {
    let mut sql = put_client_values(dialect, c);
    sql.push(
        " ON CONFLICT (client_id) DO UPDATE SET name = excluded.name, kind = excluded.kind, \
         jwks = excluded.jwks, jwks_url = excluded.jwks_url, scopes = excluded.scopes, \
         redirect_uris = excluded.redirect_uris",
    );
    sql
}

fn put_client_values(dialect: Dialect, c: &ClientRecord) -> Sql {
    let mut sql = Sql::new(dialect, "INSERT INTO auth_clients (");
    sql.push(CLIENT_COLUMNS).push(") VALUES ").rows(&[c], |c| {
        vec![
            Bind::Text(c.client_id.clone()),
            Bind::Text(c.name.clone()),
            Bind::Text(c.kind.clone()),
            Bind::OptText(c.jwks.clone()),
            Bind::OptText(c.jwks_url.clone()),
            Bind::Text(c.scopes.clone()),
            Bind::Text(c.redirect_uris.clone()),
            Bind::Int(c.created_at),
        ]
    });
    sql
}

/// `INSERT … ON CONFLICT (client_id) DO NOTHING`: no row inserted means the client id
/// is taken.
fn add_client(dialect: Dialect, c: &ClientRecord) -> Sql {
    let mut sql = put_client_values(dialect, c);
    sql.push(" ON CONFLICT (client_id) DO NOTHING");
    sql
}

fn delete_client(dialect: Dialect, client_id: &str) -> Sql {
    let mut sql = Sql::new(dialect, "DELETE FROM auth_clients WHERE client_id = ");
    sql.bind(Bind::Text(client_id.to_string()));
    sql
}

/// One user (`Some`), or every user by username (`None`).
fn users(dialect: Dialect, username: Option<&str>) -> Sql {
    let mut sql = Sql::new(dialect, "SELECT ");
    sql.push(USER_COLUMNS).push(" FROM auth_users");
    if let Some(name) = username {
        sql.push(" WHERE username = ")
            .bind(Bind::Text(name.to_string()));
    }
    sql.push(" ORDER BY username");
    sql
}

fn any_user(dialect: Dialect) -> Sql {
    Sql::new(dialect, "SELECT username FROM auth_users LIMIT 1")
}

fn insert_user(dialect: Dialect, u: &UserRecord) -> Sql {
    let mut sql = Sql::new(dialect, "INSERT INTO auth_users (");
    sql.push(USER_COLUMNS).push(") VALUES ").rows(&[u], |u| {
        vec![
            Bind::Text(u.username.clone()),
            Bind::Text(u.password_hash.clone()),
            Bind::Text(u.role.clone()),
            Bind::OptText(u.fhir_user.clone()),
            Bind::Text(u.failures.clone()),
            Bind::OptInt(u.locked_until),
            Bind::Int(u.created_at),
            Bind::Bool(u.must_change_password),
        ]
    });
    sql
}

fn put_user(dialect: Dialect, u: &UserRecord) -> Sql {
    let mut sql = insert_user(dialect, u);
    sql.push(
        " ON CONFLICT (username) DO UPDATE SET password_hash = excluded.password_hash, \
         role = excluded.role, fhir_user = excluded.fhir_user, failures = excluded.failures, \
         locked_until = excluded.locked_until, \
         must_change_password = excluded.must_change_password",
    );
    sql
}

/// `INSERT … ON CONFLICT (username) DO NOTHING`: no row inserted means the username is
/// taken.
fn add_user(dialect: Dialect, u: &UserRecord) -> Sql {
    let mut sql = insert_user(dialect, u);
    sql.push(" ON CONFLICT (username) DO NOTHING");
    sql
}

/// `INSERT INTO auth_users (…) SELECT … WHERE NOT EXISTS (SELECT 1 FROM auth_users)`: the
/// first user of an empty table, and nothing otherwise. Two servers starting together on
/// one PostgreSQL database may both see the table empty; the conflict on the username
/// then leaves only one insert standing.
fn add_first_user(dialect: Dialect, u: &UserRecord) -> Sql {
    let mut sql = Sql::new(dialect, "INSERT INTO auth_users (");
    sql.push(USER_COLUMNS).push(") SELECT ");
    let binds = [
        Bind::Text(u.username.clone()),
        Bind::Text(u.password_hash.clone()),
        Bind::Text(u.role.clone()),
        Bind::OptText(u.fhir_user.clone()),
        Bind::Text(u.failures.clone()),
        Bind::OptInt(u.locked_until),
        Bind::Int(u.created_at),
        Bind::Bool(u.must_change_password),
    ];
    for (i, b) in binds.into_iter().enumerate() {
        if i > 0 {
            sql.push(", ");
        }
        sql.bind(b);
    }
    sql.push(" WHERE NOT EXISTS (SELECT 1 FROM auth_users) ON CONFLICT (username) DO NOTHING");
    sql
}

fn delete_user(dialect: Dialect, username: &str) -> Sql {
    let mut sql = Sql::new(dialect, "DELETE FROM auth_users WHERE username = ");
    sql.bind(Bind::Text(username.to_string()));
    sql
}

fn forget_jti(dialect: Dialect, now: i64) -> Sql {
    let mut sql = Sql::new(dialect, "DELETE FROM auth_jti WHERE exp < ");
    sql.bind(Bind::Int(now));
    sql
}

/// `INSERT … ON CONFLICT DO NOTHING`: no row inserted means the `jti` was seen before.
fn use_jti(dialect: Dialect, client_id: &str, jti: &str, exp: i64) -> Sql {
    let mut sql = Sql::new(
        dialect,
        "INSERT INTO auth_jti (client_id, jti, exp) VALUES (",
    );
    sql.bind(Bind::Text(client_id.to_string()))
        .push(", ")
        .bind(Bind::Text(jti.to_string()))
        .push(", ")
        .bind(Bind::Int(exp))
        .push(") ON CONFLICT (client_id, jti) DO NOTHING");
    sql
}

fn revoke(dialect: Dialect, jti: &str, exp: i64) -> Sql {
    let mut sql = Sql::new(dialect, "INSERT INTO auth_revoked (jti, exp) VALUES (");
    sql.bind(Bind::Text(jti.to_string()))
        .push(", ")
        .bind(Bind::Int(exp))
        .push(") ON CONFLICT (jti) DO NOTHING");
    sql
}

fn revoked(dialect: Dialect, now: i64) -> Sql {
    let mut sql = Sql::new(dialect, "SELECT jti FROM auth_revoked WHERE exp >= ");
    sql.bind(Bind::Int(now));
    sql
}

/// Generates the functions one backend runs for the [`super::Store`] `auth_*` methods.
macro_rules! backend_fns {
    ($module:ident, $db:ty, $pool:ty, $dialect:expr) => {
        /// The security statements run on one backend's pool.
        pub(super) mod $module {
            use super::*;

            const D: Dialect = $dialect;
            type DbRow = <$db as sqlx::Database>::Row;

            fn query(
                sql: Sql,
            ) -> sqlx::query::Query<'static, $db, <$db as sqlx::Database>::Arguments> {
                let (text, binds) = sql.finish();
                bind_values!(sqlx::query(AssertSqlSafe(text)), binds)
            }

            fn key_from(row: &DbRow) -> Result<StoredKey, StoreError> {
                Ok(StoredKey {
                    kid: row.try_get("kid")?,
                    alg: row.try_get("alg")?,
                    pkcs8_pem: row.try_get("pkcs8_pem")?,
                    created_at: row.try_get("created_at")?,
                    retired_at: row.try_get("retired_at")?,
                })
            }

            fn client_from(row: &DbRow) -> Result<ClientRecord, StoreError> {
                Ok(ClientRecord {
                    client_id: row.try_get("client_id")?,
                    name: row.try_get("name")?,
                    kind: row.try_get("kind")?,
                    jwks: row.try_get("jwks")?,
                    jwks_url: row.try_get("jwks_url")?,
                    scopes: row.try_get("scopes")?,
                    redirect_uris: row.try_get("redirect_uris")?,
                    created_at: row.try_get("created_at")?,
                })
            }

            fn user_from(row: &DbRow) -> Result<UserRecord, StoreError> {
                Ok(UserRecord {
                    username: row.try_get("username")?,
                    password_hash: row.try_get("password_hash")?,
                    role: row.try_get("role")?,
                    fhir_user: row.try_get("fhir_user")?,
                    failures: row.try_get("failures")?,
                    locked_until: row.try_get("locked_until")?,
                    created_at: row.try_get("created_at")?,
                    must_change_password: row.try_get("must_change_password")?,
                })
            }

            /// Every signing key, oldest first.
            pub async fn keys(pool: &$pool) -> Result<Vec<StoredKey>, StoreError> {
                let rows = query(super::keys(D)).fetch_all(pool).await?;
                rows.iter().map(key_from).collect()
            }

            /// Adds a key; with `retire_at`, every current key is retired first (one
            /// transaction).
            pub async fn add_key(
                pool: &$pool,
                key: &StoredKey,
                retire_at: Option<i64>,
            ) -> Result<(), StoreError> {
                let mut tx = pool.begin().await?;
                if let Some(at) = retire_at {
                    query(retire_keys(D, at)).execute(&mut *tx).await?;
                }
                query(insert_key(D, key)).execute(&mut *tx).await?;
                tx.commit().await?;
                Ok(())
            }

            /// One client, or all of them (`None`), by client id.
            pub async fn clients(
                pool: &$pool,
                client_id: Option<&str>,
            ) -> Result<Vec<ClientRecord>, StoreError> {
                let rows = query(client(D, client_id)).fetch_all(pool).await?;
                rows.iter().map(client_from).collect()
            }

            /// Registers or replaces a client.
            pub async fn put_client(pool: &$pool, c: &ClientRecord) -> Result<(), StoreError> {
                query(super::put_client(D, c)).execute(pool).await?;
                Ok(())
            }

            /// Registers a client unless the client id is taken; false when it is.
            pub async fn add_client(pool: &$pool, c: &ClientRecord) -> Result<bool, StoreError> {
                let done = query(super::add_client(D, c)).execute(pool).await?;
                Ok(done.rows_affected() == 1)
            }

            /// Removes a client; false when there was none.
            pub async fn delete_client(pool: &$pool, client_id: &str) -> Result<bool, StoreError> {
                let done = query(super::delete_client(D, client_id))
                    .execute(pool)
                    .await?;
                Ok(done.rows_affected() > 0)
            }

            /// One user (`Some`), or all of them (`None`), by username.
            pub async fn users(
                pool: &$pool,
                username: Option<&str>,
            ) -> Result<Vec<UserRecord>, StoreError> {
                let rows = query(super::users(D, username)).fetch_all(pool).await?;
                rows.iter().map(user_from).collect()
            }

            /// Whether there is any user at all.
            pub async fn has_users(pool: &$pool) -> Result<bool, StoreError> {
                Ok(query(any_user(D)).fetch_optional(pool).await?.is_some())
            }

            /// Adds or replaces a user.
            pub async fn put_user(pool: &$pool, u: &UserRecord) -> Result<(), StoreError> {
                query(super::put_user(D, u)).execute(pool).await?;
                Ok(())
            }

            /// Adds a user unless the username is taken; false when it is.
            pub async fn add_user(pool: &$pool, u: &UserRecord) -> Result<bool, StoreError> {
                let done = query(super::add_user(D, u)).execute(pool).await?;
                Ok(done.rows_affected() == 1)
            }

            /// Adds a user only to an empty user table; false when there was a user.
            pub async fn add_first_user(pool: &$pool, u: &UserRecord) -> Result<bool, StoreError> {
                let done = query(super::add_first_user(D, u)).execute(pool).await?;
                Ok(done.rows_affected() == 1)
            }

            /// Removes a user; false when there was none.
            pub async fn delete_user(pool: &$pool, username: &str) -> Result<bool, StoreError> {
                let done = query(super::delete_user(D, username)).execute(pool).await?;
                Ok(done.rows_affected() > 0)
            }

            /// Records a client assertion `jti` (forgetting expired ones first); false when
            /// it was seen before.
            pub async fn use_jti(
                pool: &$pool,
                client_id: &str,
                jti: &str,
                exp: i64,
                now: i64,
            ) -> Result<bool, StoreError> {
                query(forget_jti(D, now)).execute(pool).await?;
                let done = query(super::use_jti(D, client_id, jti, exp))
                    .execute(pool)
                    .await?;
                Ok(done.rows_affected() == 1)
            }

            /// Records a revoked access token.
            pub async fn revoke(pool: &$pool, jti: &str, exp: i64) -> Result<(), StoreError> {
                query(super::revoke(D, jti, exp)).execute(pool).await?;
                Ok(())
            }

            /// The jtis of revoked tokens that have not expired.
            pub async fn revoked(pool: &$pool, now: i64) -> Result<Vec<String>, StoreError> {
                let rows = query(super::revoked(D, now)).fetch_all(pool).await?;
                rows.iter()
                    .map(|r| r.try_get::<String, _>("jti").map_err(StoreError::from))
                    .collect()
            }
        }
    };
}

backend_fns!(sqlite, sqlx::Sqlite, sqlx::SqlitePool, Dialect::Sqlite);
backend_fns!(postgres, sqlx::Postgres, sqlx::PgPool, Dialect::Postgres);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jti_insert_detects_replays_by_conflict() {
        let (text, binds) = use_jti(Dialect::Postgres, "c", "j", 5).finish();
        assert!(text.ends_with("ON CONFLICT (client_id, jti) DO NOTHING"));
        assert!(text.contains("$3"));
        assert_eq!(binds.len(), 3);
    }

    fn user(name: &str) -> UserRecord {
        UserRecord {
            username: name.into(),
            password_hash: "$argon2id$…".into(),
            role: "ADMIN".into(),
            fhir_user: None,
            failures: "[]".into(),
            locked_until: None,
            created_at: 1,
            must_change_password: true,
        }
    }

    #[test]
    fn first_user_insert_is_conditional_on_an_empty_table() {
        for d in [Dialect::Sqlite, Dialect::Postgres] {
            let (text, binds) = add_first_user(d, &user("admin")).finish();
            assert!(
                text.contains("WHERE NOT EXISTS (SELECT 1 FROM auth_users)"),
                "{text}"
            );
            assert!(
                text.ends_with("ON CONFLICT (username) DO NOTHING"),
                "{text}"
            );
            assert_eq!(binds.len(), 8);
        }
    }

    #[test]
    fn replacing_a_user_updates_the_password_change_flag() {
        let (text, _) = put_user(Dialect::Postgres, &user("u")).finish();
        assert!(
            text.contains("must_change_password = excluded.must_change_password"),
            "{text}"
        );
        let (text, _) = add_user(Dialect::Sqlite, &user("u")).finish();
        assert!(
            text.ends_with("ON CONFLICT (username) DO NOTHING"),
            "{text}"
        );
    }

    #[test]
    fn a_user_who_must_change_the_password_may_get_no_token() {
        let mut u = user("admin");
        assert!(!u.may_get_tokens());
        u.must_change_password = false;
        assert!(u.may_get_tokens());
    }

    #[test]
    fn stored_key_debug_hides_the_private_key() {
        let k = StoredKey {
            kid: "k".into(),
            alg: "ES256".into(),
            pkcs8_pem: "SECRET".into(),
            created_at: 1,
            retired_at: None,
        };
        assert!(!format!("{k:?}").contains("SECRET"));
    }
}
