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
/// The connection type the shared SQL helpers of `backend_macros` run on.
type Conn = sqlx::PgConnection;

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
        // patient's id is selective and picked 10 s plans on 1M resources. Plan each run
        // (write transactions switch back to generic plans: `begin_tx`).
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

    /// `BEGIN` (rows are locked as read, `FOR UPDATE`) and, for this transaction only,
    /// PostgreSQL's default plan caching: the write statements are prepared once and then
    /// reuse a generic plan instead of being planned on every run (`bench mllp`: 366 → 478
    /// messages/s, ACK p99 33 → 26 ms). Searches inside a write transaction run unprepared,
    /// so they are still planned with their values (`search_query`).
    async fn begin_tx(&self) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
        self.pool
            .begin_with("BEGIN; SET LOCAL plan_cache_mode = auto")
            .await
    }
}

impl_sql_helpers!(Postgres, PgArguments, PgRow);

/// Writes the index rows of a flush, every table's in ONE statement: per table an
/// `INSERT … SELECT * FROM unnest($n::bigint[], …)` (one array per column), all but the
/// last as data-modifying `WITH` items (PostgreSQL 15 queries-with.html#QUERIES-WITH-MODIFYING:
/// they all run, each to completion). The text depends only on which tables have rows, so
/// its plan is prepared once per connection and reused; a multi-row `INSERT … VALUES` has a
/// different text for every row count, and planning those was a fifth of PostgreSQL's time
/// in an indexed import (docs/performance/2026-11-23-write-path-experiments.md). One
/// statement instead of one per table saves the round trips of a small flush (an HL7
/// message writes rows into five tables).
async fn write_index_tables(
    conn: &mut Conn,
    tables: &[(crate::search::IndexTable, Vec<(i64, &super::IndexRow)>)],
) -> Result<(), sqlx::Error> {
    let mut arrays: Vec<ColumnArray> = Vec::new();
    let mut inserts: Vec<String> = Vec::with_capacity(tables.len());
    for (table, rows) in tables {
        // The value columns transposed into one array each (`sql::value_binds` order).
        let mut columns: Vec<Vec<sql::Bind>> = Vec::new();
        for (_, row) in rows {
            for (j, bind) in sql::value_binds(&row.value).into_iter().enumerate() {
                if columns.len() <= j {
                    columns.push(Vec::with_capacity(rows.len()));
                }
                columns[j].push(bind);
            }
        }
        let first = arrays.len() + 1;
        arrays.push(ColumnArray::Int(
            rows.iter().map(|(rid, _)| Some(*rid)).collect(),
        ));
        arrays.push(ColumnArray::Int(
            rows.iter().map(|(_, r)| Some(r.param)).collect(),
        ));
        arrays.push(ColumnArray::Int(rows.iter().map(|(_, r)| r.grp).collect()));
        arrays.extend(columns.into_iter().map(ColumnArray::from_binds));
        let casts: Vec<String> = arrays[first - 1..]
            .iter()
            .enumerate()
            .map(|(j, a)| format!("${}::{}", first + j, a.sql_type()))
            .collect();
        inserts.push(format!(
            "INSERT INTO {} ({}) SELECT * FROM unnest({})",
            table.table(),
            sql::index_columns(*table),
            casts.join(", ")
        ));
    }
    let Some(last) = inserts.pop() else {
        return Ok(());
    };
    let mut text = String::new();
    for (i, insert) in inserts.iter().enumerate() {
        text.push_str(if i == 0 { "WITH " } else { ", " });
        text.push_str(&format!("w{i} AS ({insert})"));
    }
    if !text.is_empty() {
        text.push(' ');
    }
    text.push_str(&last);
    let mut q = sqlx::query(AssertSqlSafe(text));
    for array in arrays {
        q = match array {
            ColumnArray::Text(v) => q.bind(v),
            ColumnArray::Int(v) => q.bind(v),
            ColumnArray::Float(v) => q.bind(v),
        };
    }
    q.execute(&mut *conn).await?;
    Ok(())
}

/// One value column of index rows as a PostgreSQL array parameter.
enum ColumnArray {
    Text(Vec<Option<String>>),
    Int(Vec<Option<i64>>),
    Float(Vec<Option<f64>>),
}

impl ColumnArray {
    /// The column's binds (all of one kind: `sql::value_binds` gives each table's columns
    /// fixed kinds), as a typed array.
    fn from_binds(binds: Vec<sql::Bind>) -> ColumnArray {
        use sql::Bind;
        match binds.first() {
            Some(Bind::Int(_) | Bind::OptInt(_)) => ColumnArray::Int(
                binds
                    .into_iter()
                    .map(|b| match b {
                        Bind::Int(i) => Some(i),
                        Bind::OptInt(i) => i,
                        _ => None,
                    })
                    .collect(),
            ),
            Some(Bind::Float(_) | Bind::OptFloat(_)) => ColumnArray::Float(
                binds
                    .into_iter()
                    .map(|b| match b {
                        Bind::Float(f) => Some(f),
                        Bind::OptFloat(f) => f,
                        _ => None,
                    })
                    .collect(),
            ),
            _ => ColumnArray::Text(
                binds
                    .into_iter()
                    .map(|b| match b {
                        Bind::Text(t) => Some(t),
                        Bind::OptText(t) => t,
                        _ => None,
                    })
                    .collect(),
            ),
        }
    }

    /// The array's SQL type, for the `unnest` casts.
    fn sql_type(&self) -> &'static str {
        match self {
            ColumnArray::Text(_) => "text[]",
            ColumnArray::Int(_) => "bigint[]",
            ColumnArray::Float(_) => "float8[]",
        }
    }
}

impl_store!(PgStore, PgTx, postgres, "postgres", false);

/// A write transaction on one pooled connection.
struct PgTx {
    tx: Transaction<'static, Postgres>,
    queue: Vec<NewVersion>,
}

impl_store_tx!(PgTx, postgres);
