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
use super::sql::{self, Bind, Dialect, Sql};
use super::{
    CurrentVersion, HistoryQuery, NewVersion, ResourceKey, SearchPage, Store, StoreError, StoreTx,
    StoredVersion,
};
use crate::search::SearchQuery;

const D: Dialect = Dialect::Sqlite;

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
            .pragma("temp_store", "memory");
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(opts.clone())
            .await?;
        sqlx::migrate!("../migrations/sqlite").run(&writer).await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(opts.read_only(true))
            .await?;
        Ok(SqliteStore { writer, reader })
    }
}

fn bind_all<'q>(
    mut q: sqlx::query::Query<'q, Sqlite, SqliteArguments>,
    binds: Vec<Bind>,
) -> sqlx::query::Query<'q, Sqlite, SqliteArguments> {
    for b in binds {
        q = match b {
            Bind::Text(s) => q.bind(s),
            Bind::OptText(s) => q.bind(s),
            Bind::Int(i) => q.bind(i),
            Bind::Bool(b) => q.bind(b),
        };
    }
    q
}

fn query(sql: Sql) -> sqlx::query::Query<'static, Sqlite, SqliteArguments> {
    let (text, binds) = sql.finish();
    bind_all(sqlx::query(AssertSqlSafe(text)), binds)
}

fn to_version(row: &SqliteRow) -> Result<StoredVersion, sqlx::Error> {
    Ok(StoredVersion {
        res_type: row.try_get("res_type")?,
        id: row.try_get("id")?,
        version_id: row.try_get("version_id")?,
        last_updated: row.try_get("last_updated")?,
        method: row.try_get("method")?,
        deleted: row.try_get("deleted")?,
        content: row.try_get("content")?,
        seq: row.try_get("seq")?,
    })
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn begin(&self) -> Result<Box<dyn StoreTx>, StoreError> {
        let tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        Ok(Box::new(SqliteTx {
            tx,
            queue: Vec::new(),
        }))
    }

    async fn read(&self, res_type: &str, id: &str) -> Result<Option<StoredVersion>, StoreError> {
        let row = query(sql::read_current(D, res_type, id))
            .fetch_optional(&self.reader)
            .await?;
        Ok(row.as_ref().map(to_version).transpose()?)
    }

    async fn vread(
        &self,
        res_type: &str,
        id: &str,
        version_id: i64,
    ) -> Result<Option<StoredVersion>, StoreError> {
        let row = query(sql::read_version(D, res_type, id, version_id))
            .fetch_optional(&self.reader)
            .await?;
        Ok(row.as_ref().map(to_version).transpose()?)
    }

    async fn history(&self, q: &HistoryQuery) -> Result<Vec<StoredVersion>, StoreError> {
        let rows = query(sql::history(D, q)).fetch_all(&self.reader).await?;
        Ok(rows.iter().map(to_version).collect::<Result<_, _>>()?)
    }

    async fn search(&self, q: &SearchQuery) -> Result<SearchPage, StoreError> {
        let rows = query(sql::search(D, q, false, q.count + 1))
            .fetch_all(&self.reader)
            .await?;
        let mut matches: Vec<StoredVersion> =
            rows.iter().map(to_version).collect::<Result<_, _>>()?;
        let has_more = matches.len() > q.count;
        matches.truncate(q.count);
        Ok(SearchPage { matches, has_more })
    }

    async fn hl7_insert(
        &self,
        message: &hl7_messages::NewHl7Message,
    ) -> Result<hl7_messages::Hl7Insert, StoreError> {
        hl7_messages::sqlite::insert(&self.writer, message).await
    }

    async fn hl7_finish(
        &self,
        id: i64,
        status: hl7_messages::Hl7Status,
        reason: Option<&str>,
        ack: &str,
    ) -> Result<(), StoreError> {
        hl7_messages::sqlite::finish(&self.writer, id, status, reason, ack).await
    }

    async fn hl7_get(&self, id: i64) -> Result<Option<hl7_messages::Hl7MessageRecord>, StoreError> {
        hl7_messages::sqlite::get(&self.reader, id).await
    }

    async fn hl7_list(
        &self,
        query: &hl7_messages::Hl7ListQuery,
    ) -> Result<Vec<hl7_messages::Hl7MessageSummary>, StoreError> {
        hl7_messages::sqlite::list(&self.reader, query).await
    }
}

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

pub(super) fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

impl_store_tx!(SqliteTx, sqlite);
