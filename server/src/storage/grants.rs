//! The grants of the SMART App Launch flow (issue 5): login sessions between the login
//! page and the patient picker, authorization codes, refresh tokens, EHR launch contexts
//! and the `jti`s of access tokens issued from them. Layout and the meaning of each kind:
//! `migrations/<backend>/0006_auth_grants.sql`.
//!
//! Secrets are stored by their SHA-256 ([`mediflow_auth::tokens::opaque_token_hash`]), so
//! a copy of the database yields no usable code or refresh token. Redeeming a single-use
//! grant is one `UPDATE … WHERE used_at IS NULL … RETURNING`, so two servers on one
//! PostgreSQL cannot both redeem the same code.

use sqlx::{AssertSqlSafe, Row};

use super::StoreError;
use super::sql::{Bind, Dialect, Sql};

/// What a grant row is (column `kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantKind {
    /// A signed-in user waiting at the patient picker.
    Login,
    /// An authorization code (RFC 6749 §4.1.2).
    Code,
    /// A refresh token (RFC 6749 §6).
    Refresh,
    /// An EHR launch context (SMART App Launch 2.0, `launch` parameter).
    Launch,
    /// The `jti` of an access token issued from a code or refresh token.
    Access,
}

impl GrantKind {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            GrantKind::Login => "login",
            GrantKind::Code => "code",
            GrantKind::Refresh => "refresh",
            GrantKind::Launch => "launch",
            GrantKind::Access => "access",
        }
    }
}

/// One grant row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantRecord {
    /// SHA-256 of the secret (base64url), or the `jti` for [`GrantKind::Access`].
    pub token_hash: String,
    /// What it is.
    pub kind: GrantKind,
    /// The code and everything issued from it share a family id.
    pub family: String,
    /// The client it was issued to (empty for a launch context made by a user token).
    pub client_id: String,
    /// JSON text: the user, scope, launch context, PKCE challenge, … (read whole by
    /// `crate::http::authorize`).
    pub data: String,
    /// Expiry, Unix seconds.
    pub exp: i64,
}

/// The outcome of redeeming a single-use grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redeemed {
    /// Valid, unexpired, unused: now marked used.
    Fresh(GrantRecord),
    /// It was redeemed before: a replay (the caller should revoke its family).
    Reused(GrantRecord),
    /// Unknown, expired, or revoked.
    Invalid,
}

const COLUMNS: &str = "token_hash, kind, family, client_id, data, exp";

fn insert(dialect: Dialect, g: &GrantRecord) -> Sql {
    let mut sql = Sql::new(dialect, "INSERT INTO auth_grants (");
    sql.push(COLUMNS).push(") VALUES ").rows(&[g], |g| {
        vec![
            Bind::Text(g.token_hash.clone()),
            Bind::Text(g.kind.as_str().to_string()),
            Bind::Text(g.family.clone()),
            Bind::Text(g.client_id.clone()),
            Bind::Text(g.data.clone()),
            Bind::Int(g.exp),
        ]
    });
    sql
}

/// Rows expired for a day are deleted (a day later, so that a replay shortly after expiry
/// is still recognised as a replay).
fn forget_expired(dialect: Dialect, now: i64) -> Sql {
    let mut sql = Sql::new(dialect, "DELETE FROM auth_grants WHERE exp < ");
    sql.bind(Bind::Int(now - 86_400));
    sql
}

fn redeem(dialect: Dialect, hash: &str, kind: GrantKind, now: i64) -> Sql {
    let mut sql = Sql::new(dialect, "UPDATE auth_grants SET used_at = ");
    sql.bind(Bind::Int(now))
        .push(" WHERE token_hash = ")
        .bind(Bind::Text(hash.to_string()))
        .push(" AND kind = ")
        .bind(Bind::Text(kind.as_str().to_string()))
        .push(" AND used_at IS NULL AND revoked = 0 AND exp >= ")
        .bind(Bind::Int(now))
        .push(" RETURNING ")
        .push(COLUMNS);
    sql
}

fn get(dialect: Dialect, hash: &str, kind: GrantKind) -> Sql {
    let mut sql = Sql::new(dialect, "SELECT ");
    sql.push(COLUMNS)
        .push(", used_at, revoked FROM auth_grants WHERE token_hash = ")
        .bind(Bind::Text(hash.to_string()))
        .push(" AND kind = ")
        .bind(Bind::Text(kind.as_str().to_string()));
    sql
}

fn revoke_family(dialect: Dialect, family: &str) -> Sql {
    let mut sql = Sql::new(
        dialect,
        "UPDATE auth_grants SET revoked = 1 WHERE family = ",
    );
    sql.bind(Bind::Text(family.to_string()));
    sql
}

fn family_access(dialect: Dialect, family: &str) -> Sql {
    let mut sql = Sql::new(
        dialect,
        "SELECT token_hash, exp FROM auth_grants WHERE kind = 'access' AND family = ",
    );
    sql.bind(Bind::Text(family.to_string()));
    sql
}

fn kind_from(s: &str) -> Result<GrantKind, StoreError> {
    Ok(match s {
        "login" => GrantKind::Login,
        "code" => GrantKind::Code,
        "refresh" => GrantKind::Refresh,
        "launch" => GrantKind::Launch,
        "access" => GrantKind::Access,
        other => {
            return Err(StoreError::Corrupt(format!(
                "auth_grants.kind {other:?} is unknown"
            )));
        }
    })
}

/// Generates the functions one backend runs for the [`super::Store`] `grant_*` methods.
macro_rules! backend_fns {
    ($module:ident, $db:ty, $pool:ty, $dialect:expr) => {
        /// The grant statements run on one backend's pool.
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

            fn grant_from(row: &DbRow) -> Result<GrantRecord, StoreError> {
                Ok(GrantRecord {
                    token_hash: row.try_get("token_hash")?,
                    kind: kind_from(&row.try_get::<String, _>("kind")?)?,
                    family: row.try_get("family")?,
                    client_id: row.try_get("client_id")?,
                    data: row.try_get("data")?,
                    exp: row.try_get("exp")?,
                })
            }

            /// Stores a new grant (deleting long-expired ones first).
            pub async fn put(pool: &$pool, g: &GrantRecord, now: i64) -> Result<(), StoreError> {
                query(forget_expired(D, now)).execute(pool).await?;
                query(insert(D, g)).execute(pool).await?;
                Ok(())
            }

            /// Redeems a single-use grant atomically.
            pub async fn redeem(
                pool: &$pool,
                hash: &str,
                kind: GrantKind,
                now: i64,
            ) -> Result<Redeemed, StoreError> {
                if let Some(row) = query(super::redeem(D, hash, kind, now))
                    .fetch_optional(pool)
                    .await?
                {
                    return Ok(Redeemed::Fresh(grant_from(&row)?));
                }
                let Some(row) = query(super::get(D, hash, kind))
                    .fetch_optional(pool)
                    .await?
                else {
                    return Ok(Redeemed::Invalid);
                };
                let used: Option<i64> = row.try_get("used_at")?;
                Ok(match used {
                    Some(_) => Redeemed::Reused(grant_from(&row)?),
                    None => Redeemed::Invalid,
                })
            }

            /// A grant that is not single-use (launch contexts, introspection of refresh
            /// tokens): `None` when unknown, expired, used or revoked.
            pub async fn get(
                pool: &$pool,
                hash: &str,
                kind: GrantKind,
                now: i64,
            ) -> Result<Option<GrantRecord>, StoreError> {
                let Some(row) = query(super::get(D, hash, kind))
                    .fetch_optional(pool)
                    .await?
                else {
                    return Ok(None);
                };
                let used: Option<i64> = row.try_get("used_at")?;
                let revoked: i64 = row.try_get("revoked")?;
                let g = grant_from(&row)?;
                Ok((used.is_none() && revoked == 0 && g.exp >= now).then_some(g))
            }

            /// Revokes a family; returns the `(jti, exp)` of the access tokens issued
            /// from it, for the access-token revocation list.
            pub async fn revoke_family(
                pool: &$pool,
                family: &str,
            ) -> Result<Vec<(String, i64)>, StoreError> {
                let mut tx = pool.begin().await?;
                query(super::revoke_family(D, family))
                    .execute(&mut *tx)
                    .await?;
                let rows = query(family_access(D, family)).fetch_all(&mut *tx).await?;
                tx.commit().await?;
                rows.iter()
                    .map(|r| Ok((r.try_get("token_hash")?, r.try_get("exp")?)))
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
    fn redeem_is_one_conditional_update() {
        let (text, binds) = redeem(Dialect::Postgres, "h", GrantKind::Code, 10).finish();
        assert!(text.starts_with("UPDATE auth_grants SET used_at = $1"));
        assert!(text.contains("used_at IS NULL AND revoked = 0 AND exp >= $4"));
        assert!(text.contains("RETURNING token_hash"));
        assert_eq!(binds.len(), 4);
    }
}
