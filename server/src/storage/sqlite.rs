//! SQLite backend: the embedded, zero-configuration default.
//!
//! One writer connection (`BEGIN IMMEDIATE`, so writers queue instead of failing with
//! `SQLITE_BUSY` on lock upgrade) and a pool of readers; WAL journal so readers never block
//! the writer. Content is stored as JSON text.

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteArguments, SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, Row, Sqlite, SqlitePool, Transaction};

use super::hl7_messages;
use super::search_sql;
use super::sql::{self, Bind, Dialect, Sql};
use super::{
    CurrentVersion, HistoryQuery, NewVersion, ResourceKey, SearchPage, Store, StoreError, StoreTx,
    StoredVersion,
};
use crate::search::SearchQuery;

const D: Dialect = Dialect::Sqlite;
/// The connection type the shared SQL helpers of `backend_macros` run on.
type Conn = sqlx::SqliteConnection;

/// The SQLite store: a single-connection writer pool and a reader pool on one file.
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if missing, with parent folders) the database file at `path` and
    /// runs `migrations/sqlite`.
    pub async fn open(path: &str) -> Result<Self, StoreError> {
        if let Some(parent) = Path::new(path).parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent).map_err(|e| StoreError::Database(e.into()))?;
        }
        let opts = SqliteConnectOptions::from_str(&format!("sqlite://{path}"))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(30))
            .pragma("page_size", "8192")
            .pragma("cache_size", "-65536")
            .pragma("temp_store", "memory")
            // Memory-mapped reads: index pages come from the page cache without a read()
            // system call each (they were a fifth of the writer's time at 1M resources).
            .pragma("mmap_size", "4294967296");
        // The writer keeps a larger cache (the search-index b-trees it inserts into) and
        // checkpoints the WAL itself only every 32,768 pages (256 MiB), so a hot index page
        // is copied back once per checkpoint rather than after every 1000 pages written;
        // the background checkpointer ([`spawn_checkpointer`]) copies most frames before
        // that, so the writer's own checkpoint is short.
        let writer_opts = opts
            .clone()
            .pragma("cache_size", "-262144")
            .pragma("wal_autocheckpoint", "32768");
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(writer_opts)
            .await?;
        sqlx::migrate!("../migrations/sqlite").run(&writer).await?;
        let checkpointer = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(opts.clone())
            .await?;
        spawn_checkpointer(checkpointer);
        let reader = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(opts.read_only(true))
            .await?;
        Ok(SqliteStore { writer, reader })
    }

    /// Readers: a pool of read-only connections (WAL lets them run beside the writer).
    fn read_pool(&self) -> &SqlitePool {
        &self.reader
    }

    /// The single writer connection.
    fn write_pool(&self) -> &SqlitePool {
        &self.writer
    }

    /// `BEGIN IMMEDIATE` takes the write lock at once, so writers queue instead of failing
    /// with `SQLITE_BUSY` when a deferred transaction upgrades.
    async fn begin_tx(&self) -> Result<Transaction<'static, Sqlite>, sqlx::Error> {
        self.writer.begin_with("BEGIN IMMEDIATE").await
    }
}

/// How often the background checkpointer runs.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(200);

/// Copies committed WAL frames back into the database file from a connection of its own,
/// every [`CHECKPOINT_EVERY`] (`PRAGMA wal_checkpoint(PASSIVE)`: it never waits for the
/// writer or the readers; sqlite.org/pragma.html#pragma_wal_checkpoint). The copy and the
/// `fsync`s then happen beside the writer instead of inside one of its commits: when the
/// writer's own automatic checkpoint comes due (every 32,768 pages of WAL), most frames are
/// already in the database file, so it stalls for the remainder only, and once it
/// completes the next transaction starts the WAL over (sqlite.org/wal.html#ckpt), which
/// keeps the WAL bounded. Runs until the store's pools close.
fn spawn_checkpointer(pool: SqlitePool) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(CHECKPOINT_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if pool.is_closed() {
                break;
            }
            if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                .execute(&pool)
                .await
            {
                tracing::debug!(error = %e, "background WAL checkpoint");
            }
        }
    });
}

impl_sql_helpers!(Sqlite, SqliteArguments, SqliteRow);

/// Writes the index rows of a flush: per table, multi-row `INSERT`s of at most
/// [`sql::CHUNK`] rows.
async fn write_index_tables(
    conn: &mut Conn,
    tables: &[(crate::search::IndexTable, Vec<(i64, &super::IndexRow)>)],
) -> Result<(), sqlx::Error> {
    for (table, rows) in tables {
        for stmt in sql::insert_statements(D, *table, rows) {
            query(stmt).execute(&mut *conn).await?;
        }
    }
    Ok(())
}

impl_store!(SqliteStore, SqliteTx, sqlite, "sqlite", true);

/// A write transaction on the single writer connection.
struct SqliteTx {
    tx: Transaction<'static, Sqlite>,
    queue: Vec<NewVersion>,
}

pub(super) fn describe(queue: &[NewVersion]) -> String {
    match queue {
        [one] => format!("{}/{}", one.res_type, one.id),
        _ => format!("{} resources", queue.len()),
    }
}

/// Whether `e` means "another transaction got there first; run it again": a unique
/// violation on a version key, or (PostgreSQL) a deadlock victim (SQLSTATE 40P01) or a
/// serialization failure (40001). The whole transaction was rolled back, so a retry is safe.
pub(super) fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d)
        if d.is_unique_violation() || matches!(d.code().as_deref(), Some("40P01") | Some("40001")))
}

impl_store_tx!(SqliteTx, sqlite);
