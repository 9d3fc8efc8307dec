//! The security tables (issue 5): signing keys, OAuth clients, users, client-assertion
//! `jti`s (replay protection) and revoked tokens. Layout: `migrations/<backend>/0004_auth.sql`.
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
}

const KEY_COLUMNS: &str = "kid, alg, pkcs8_pem, created_at, retired_at";
const CLIENT_COLUMNS: &str =
    "client_id, name, kind, jwks, jwks_url, scopes, redirect_uris, created_at";
const USER_COLUMNS: &str =
    "username, password_hash, role, fhir_user, failures, locked_until, created_at";

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
    sql.push(
        " ON CONFLICT (client_id) DO UPDATE SET name = excluded.name, kind = excluded.kind, \
         jwks = excluded.jwks, jwks_url = excluded.jwks_url, scopes = excluded.scopes, \
         redirect_uris = excluded.redirect_uris",
    );
    sql
}

fn user(dialect: Dialect, username: &str) -> Sql {
    let mut sql = Sql::new(dialect, "SELECT ");
    sql.push(USER_COLUMNS)
        .push(" FROM auth_users WHERE username = ")
        .bind(Bind::Text(username.to_string()));
    sql
}

fn put_user(dialect: Dialect, u: &UserRecord) -> Sql {
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
        ]
    });
    sql.push(
        " ON CONFLICT (username) DO UPDATE SET password_hash = excluded.password_hash, \
         role = excluded.role, fhir_user = excluded.fhir_user, failures = excluded.failures, \
         locked_until = excluded.locked_until",
    );
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

            /// One user.
            pub async fn user(
                pool: &$pool,
                username: &str,
            ) -> Result<Option<UserRecord>, StoreError> {
                let row = query(super::user(D, username)).fetch_optional(pool).await?;
                row.as_ref().map(user_from).transpose()
            }

            /// Adds or replaces a user.
            pub async fn put_user(pool: &$pool, u: &UserRecord) -> Result<(), StoreError> {
                query(super::put_user(D, u)).execute(pool).await?;
                Ok(())
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
