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
        // JIT compilation pays off for long analytic queries only: a broad search whose
        // estimated cost crosses `jit_above_cost` spent 31 ms compiling for a 1.5 ms run.
        let options = url
            .parse::<sqlx::postgres::PgConnectOptions>()?
            .options([("plan_cache_mode", "force_custom_plan"), ("jit", "off")]);
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

/// Writes index rows of one table in one statement whose text depends only on the table:
/// `INSERT … SELECT * FROM unnest($1::bigint[], …)`, one array per column. Its plan is
/// prepared once per connection and reused; a multi-row `INSERT … VALUES` has a different
/// text for every row count, and planning those was a fifth of PostgreSQL's time in an
/// indexed import (docs/performance/2026-11-23-write-path-experiments.md).
async fn write_index_rows(
    conn: &mut sqlx::PgConnection,
    table: crate::search::IndexTable,
    rows: &[(i64, &super::IndexRow)],
) -> Result<(), sqlx::Error> {
    use super::RowValue;
    use crate::search::IndexTable as T;
    let value_types = match table {
        T::String => "$4::text[], $5::text[]",
        T::Token => "$4::text[], $5::text[]",
        T::Date => "$4::bigint[], $5::bigint[]",
        T::Number => "$4::float8[]",
        T::Quantity => "$4::float8[], $5::text[], $6::text[], $7::float8[], $8::text[]",
        T::Uri => "$4::text[]",
        T::Reference => "$4::text[], $5::text[], $6::text[]",
    };
    let text = format!(
        "INSERT INTO {} ({}) SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], {value_types})",
        table.table(),
        sql::index_columns(table)
    );
    let rids: Vec<i64> = rows.iter().map(|(rid, _)| *rid).collect();
    let params: Vec<i64> = rows.iter().map(|(_, r)| r.param).collect();
    let groups: Vec<Option<i64>> = rows.iter().map(|(_, r)| r.grp).collect();
    let q = sqlx::query(AssertSqlSafe(text))
        .bind(rids)
        .bind(params)
        .bind(groups);
    // Column arrays of the value columns, in `sql::index_columns` order; a row of another
    // kind cannot reach this table (`sql::index_writes` sorts rows by `table_of_row`).
    let mut texts: [Vec<Option<String>>; 3] = Default::default();
    let mut ints: [Vec<i64>; 2] = Default::default();
    let mut floats: [Vec<Option<f64>>; 2] = Default::default();
    for (_, row) in rows {
        match &row.value {
            RowValue::String { value, exact } => {
                texts[0].push(Some(value.clone()));
                texts[1].push(Some(exact.clone()));
            }
            RowValue::Token { system, code } => {
                texts[0].push(system.clone());
                texts[1].push(code.clone());
            }
            RowValue::Date { low, high } => {
                ints[0].push(*low);
                ints[1].push(*high);
            }
            RowValue::Number(v) => floats[0].push(Some(*v)),
            RowValue::Quantity {
                value,
                system,
                code,
                canonical,
            } => {
                floats[0].push(Some(*value));
                texts[0].push(system.clone());
                texts[1].push(code.clone());
                floats[1].push(canonical.as_ref().map(|c| c.0));
                texts[2].push(canonical.as_ref().map(|c| c.1.clone()));
            }
            RowValue::Uri(v) => texts[0].push(Some(v.clone())),
            RowValue::Reference {
                target_type,
                target_id,
                url,
            } => {
                texts[0].push(target_type.clone());
                texts[1].push(target_id.clone());
                texts[2].push(url.clone());
            }
        }
    }
    let [t0, t1, t2] = texts;
    let [i0, i1] = ints;
    let [f0, f1] = floats;
    let q = match table {
        T::String | T::Token => q.bind(t0).bind(t1),
        T::Date => q.bind(i0).bind(i1),
        T::Number => q.bind(f0),
        T::Quantity => q.bind(f0).bind(t0).bind(t1).bind(f1).bind(t2),
        T::Uri => q.bind(t0),
        T::Reference => q.bind(t0).bind(t1).bind(t2),
    };
    q.execute(&mut *conn).await?;
    Ok(())
}

impl_store!(PgStore, PgTx, postgres, "postgres");

/// A write transaction on one pooled connection.
struct PgTx {
    tx: Transaction<'static, Postgres>,
    queue: Vec<NewVersion>,
}

impl_store_tx!(PgTx, postgres);
