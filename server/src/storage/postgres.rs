//! PostgreSQL backend: the production store. Content is JSONB.
//!
//! Concurrency: [`StoreTx::current_versions`] locks the current-version rows
//! (`SELECT … FOR UPDATE`), so concurrent updates of one resource serialise and each gets
//! the next version number; two concurrent creates of the same new id collide on the unique
//! key `(res_type, id, version_id)` and the loser gets [`StoreError::VersionConflict`].

use std::collections::HashMap;

use async_trait::async_trait;
use sqlx::postgres::{PgArguments, PgPoolOptions, PgRow};
use sqlx::{AssertSqlSafe, PgPool, Postgres, Row, Transaction};

use super::hl7_messages;
use super::search_sql;
use super::sql::{self, Bind, Dialect, Sql};
use super::sqlite::{describe, is_unique_violation};
use super::{
    CurrentVersion, HistoryQuery, NewVersion, ResourceKey, SearchPage, Store, StoreError, StoreTx,
    StoredVersion,
};
use crate::search::SearchQuery;

const D: Dialect = Dialect::Postgres;

/// Connections in the pool: `MEDIFLOW_DB_MAX_CONNECTIONS`, else 2 × cores + 2. More
/// backends than that only contend for the same cores: on the 2-core benchmark machine,
/// reads went from 7,300 requests/s with 16 connections to 9,100 with 6
/// (docs/performance/).
pub fn pool_size() -> u32 {
    std::env::var("MEDIFLOW_DB_MAX_CONNECTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or_else(|| {
            let cores = std::thread::available_parallelism().map_or(2, |n| n.get()) as u32;
            2 * cores + 2
        })
}

/// The PostgreSQL store: one connection pool.
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// Connects to `url` and runs `migrations/postgres`. The pool holds
    /// [`pool_size`] connections.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        // Search statements are prepared once and run with different values; a generic
        // plan (PostgreSQL's default after five runs) cannot know that `value > 100` or one
        // patient's id is selective and picked 10 s plans on 1M resources. Plan each run.
        let options = url
            .parse::<sqlx::postgres::PgConnectOptions>()?
            .options([("plan_cache_mode", "force_custom_plan")]);
        let pool = PgPoolOptions::new()
            .max_connections(pool_size())
            .connect_with(options)
            .await?;
        sqlx::migrate!("../migrations/postgres").run(&pool).await?;
        Ok(PgStore { pool })
    }

    /// Reads use the shared pool.
    fn read_pool(&self) -> &PgPool {
        &self.pool
    }

    /// Writes use the shared pool.
    fn write_pool(&self) -> &PgPool {
        &self.pool
    }

    /// A plain `BEGIN`: rows are locked as read (`FOR UPDATE`).
    async fn begin_tx(&self) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
        self.pool.begin().await
    }
}

impl_sql_helpers!(Postgres, PgArguments, PgRow);

impl_store!(PgStore, PgTx, postgres, "postgres");

/// A write transaction on one pooled connection.
struct PgTx {
    tx: Transaction<'static, Postgres>,
    queue: Vec<NewVersion>,
}

impl_store_tx!(PgTx, postgres);
