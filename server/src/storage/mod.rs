//! Storage: every SQL statement of MediFlow lives below this module.
//!
//! The interaction layer talks to a [`Store`] (reads outside a transaction) and to a
//! [`StoreTx`] (everything inside one database transaction: locking reads, conditional
//! lookups and writes). Two implementations exist, [`sqlite::SqliteStore`] (the embedded
//! default) and [`postgres::PgStore`]; both share the SQL text built in [`sql`]. Table
//! layouts are described in `docs/storage.md` and created by `migrations/<backend>/`.
//!
//! Writes inside a [`StoreTx`] are buffered and flushed in multi-row statements before the
//! next read in the same transaction and at commit, so a 1,000-entry transaction Bundle costs
//! a handful of round trips rather than thousands.

#[macro_use]
mod backend_macros;
pub mod auth;
pub mod grants;
pub mod hl7_messages;

pub mod postgres;
mod search_sql;
mod sql;
pub mod sqlite;

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;

use crate::search::{Criterion, IndexTable, SearchParam, SearchQuery, TokenMatch, TokenSystem};

/// Errors of the storage layer. Mapped to OperationOutcome once, in `crate::error`.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database URL is not `sqlite:` or `postgres:`.
    #[error("unsupported database URL '{0}': expected sqlite://PATH or postgres://...")]
    UnsupportedUrl(String),
    /// Another writer created the same version first (unique key on type, id, version).
    #[error("version conflict: another write to {0} committed first")]
    VersionConflict(String),
    /// Any database failure (connection, SQL, constraint).
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Migration failure at start-up.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// Stored content that does not parse as JSON (should never happen).
    #[error("stored resource is not valid JSON: {0}")]
    Corrupt(String),
    /// A transaction run ahead on committed data (`crate::interaction::speculate`) asked
    /// for what only its database transaction can answer; it is run there instead.
    #[error("cannot be run ahead of its transaction: {0}")]
    NotSpeculable(&'static str),
}

/// `(resourceType, id)`: the logical identity of a resource.
pub type ResourceKey = (String, String);

/// One stored version of a resource, as read back.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredVersion {
    /// The resource type, e.g. `Patient`.
    pub res_type: String,
    /// The logical id (R4 datatypes.html#id).
    pub id: String,
    /// `meta.versionId` as a number (1, 2, 3 ...).
    pub version_id: i64,
    /// `meta.lastUpdated` in microseconds since the Unix epoch (UTC).
    pub last_updated: i64,
    /// The interaction that made this version: `POST`, `PUT` or `DELETE`.
    pub method: String,
    /// True for a logical delete; `content` is then `None`.
    pub deleted: bool,
    /// The resource JSON text, `meta` included.
    pub content: Option<String>,
    /// Global write order; used for history paging.
    pub seq: i64,
}

/// The current state of a resource, as needed to compute its next version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CurrentVersion {
    /// Current `meta.versionId`.
    pub version_id: i64,
    /// Whether the current version is a logical delete.
    pub deleted: bool,
}

/// The typed value of one search-index row (R4 search.html#ptypes); the table it goes to
/// follows from the variant.
#[derive(Debug, Clone, PartialEq)]
pub enum RowValue {
    /// `search_string`: normalized (lower-case, accents removed) and exact text.
    String { value: String, exact: String },
    /// `search_token`: system and code.
    Token {
        system: Option<String>,
        code: Option<String>,
    },
    /// `search_date`: `[low, high)` in microseconds since the epoch, UTC.
    Date { low: i64, high: i64 },
    /// `search_number`.
    Number(f64),
    /// `search_quantity`: value, system, code, and the UCUM-canonical (value, unit).
    Quantity {
        value: f64,
        system: Option<String>,
        code: Option<String>,
        canonical: Option<(f64, String)>,
    },
    /// `search_uri`.
    Uri(String),
    /// `search_reference`: target type and id, and/or an absolute or canonical URL.
    Reference {
        target_type: Option<String>,
        target_id: Option<String>,
        url: Option<String>,
    },
}

/// One search-index row of a resource: the hashed parameter identity
/// ([`crate::search::ParamKey`]), the composite group (`None` outside composites) and the
/// value.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexRow {
    pub param: i64,
    pub grp: Option<i64>,
    pub value: RowValue,
}

/// A version to write. Built by the interaction layer, which has already assigned
/// `version_id` from [`StoreTx::current_versions`] (or 1 for a fresh id).
#[derive(Debug, Clone)]
pub struct NewVersion {
    /// Resource type.
    pub res_type: String,
    /// Logical id.
    pub id: String,
    /// The version being written.
    pub version_id: i64,
    /// `meta.lastUpdated` in microseconds since the Unix epoch (UTC).
    pub last_updated: i64,
    /// `POST`, `PUT` or `DELETE`.
    pub method: &'static str,
    /// JSON text of the resource; `None` for a delete.
    pub content: Option<String>,
    /// Index rows; empty for a delete (and when indexing is deferred to `mediflow reindex`).
    pub index: Vec<IndexRow>,
    /// True when the id was freshly generated by the server: no previous row can exist, so
    /// the old index rows need no delete.
    pub fresh: bool,
}

/// History query (R4 http.html#history): instance, type or system level.
#[derive(Debug, Clone, Default)]
pub struct HistoryQuery {
    /// Restrict to one resource type (type and instance level).
    pub res_type: Option<String>,
    /// Restrict to one resource (instance level; needs `res_type`).
    pub id: Option<String>,
    /// `_since`: only versions with `last_updated >= since` (microseconds).
    pub since: Option<i64>,
    /// Page size.
    pub count: usize,
    /// Keyset cursor: only versions with `seq < before_seq` (newest first).
    pub before_seq: Option<i64>,
}

/// A page of search matches, in result order.
#[derive(Debug, Clone)]
pub struct SearchPage {
    /// The matching current versions (never deleted ones).
    pub matches: Vec<StoredVersion>,
    /// For each match, the values of the query's sort keys (JSON string, number or null),
    /// to build paging cursors.
    pub sort_values: Vec<Vec<serde_json::Value>>,
    /// For each match, its `rid` (creation-order key): the paging tie-breaker.
    pub rids: Vec<i64>,
    /// Whether more matches exist past this page (in the paging direction).
    pub has_more: bool,
}

/// The read side of a database plus the way into a write transaction.
#[async_trait]
pub trait Store: Send + Sync {
    /// `sqlite` or `postgres`.
    fn backend(&self) -> &'static str;
    /// Whether one write transaction runs at a time, the others waiting for it (SQLite:
    /// sqlite.org/lang_transaction.html, one writer per database). Writers that queue
    /// anyway gain from being applied together in one transaction (the MLLP group
    /// commit); writers that run in parallel (PostgreSQL) would be serialised by it.
    fn single_writer(&self) -> bool;
    /// Opens a write transaction. SQLite serialises writers; PostgreSQL locks rows as read.
    async fn begin(&self) -> Result<Box<dyn StoreTx>, StoreError>;
    /// [`StoreTx::current_versions`] on committed data, outside any transaction (nothing
    /// locked).
    async fn current_versions(
        &self,
        keys: &[ResourceKey],
    ) -> Result<HashMap<ResourceKey, CurrentVersion>, StoreError>;
    /// [`StoreTx::search_ids_many`] on committed data, outside any transaction.
    async fn search_ids_many(
        &self,
        queries: &[SearchQuery],
        limit: usize,
    ) -> Result<Vec<Vec<String>>, StoreError>;
    /// The current version of a resource (possibly a delete), or `None` if it never existed.
    async fn read(&self, res_type: &str, id: &str) -> Result<Option<StoredVersion>, StoreError>;
    /// One given version (vread), or `None`.
    async fn vread(
        &self,
        res_type: &str,
        id: &str,
        version_id: i64,
    ) -> Result<Option<StoredVersion>, StoreError>;
    /// History entries, newest first, at most `count + 1` (the extra one tells "more").
    async fn history(&self, query: &HistoryQuery) -> Result<Vec<StoredVersion>, StoreError>;
    /// Runs a search over current, non-deleted resources: one page of `query.count` matches
    /// from `query.cursor`, in `_sort` order then id.
    async fn search(&self, query: &SearchQuery) -> Result<SearchPage, StoreError>;
    /// The number of matches of a search (`_total`, `_summary=count`).
    async fn count(&self, query: &SearchQuery) -> Result<i64, StoreError>;
    /// The resources an `_include`/`_revinclude` adds for the resources `from`
    /// (`(res_type, id)`), at most `limit`.
    async fn include(
        &self,
        include: &crate::search::Include,
        from: &[ResourceKey],
        limit: usize,
    ) -> Result<Vec<StoredVersion>, StoreError>;
    /// Current, non-deleted versions after `after_seq` in write order, at most `limit`
    /// (for `mediflow reindex`), as `(seq, version)`.
    async fn current_after(
        &self,
        after_seq: i64,
        limit: usize,
    ) -> Result<Vec<StoredVersion>, StoreError>;
    /// Replaces the index rows of already-stored resources (reindex), in one transaction.
    async fn replace_index(&self, rows: &[(ResourceKey, Vec<IndexRow>)]) -> Result<(), StoreError>;
    /// A value of `search_index_state` (`stale`, `reindex_after_seq`, `definitions`).
    async fn index_state(&self, key: &str) -> Result<Option<String>, StoreError>;
    /// Readies the tables for searching after a bulk load. PostgreSQL: `VACUUM (ANALYZE)`.
    /// ANALYZE gives the planner statistics, which it otherwise lacks until autovacuum
    /// gets to the new tables (a `_has` search took 7 s instead of 35 ms at 1M resources;
    /// postgresql.org/docs/15/populate.html#POPULATE-ANALYZE); VACUUM sets the visibility
    /// map, without which every index-only scan of the index tables still reads each row's
    /// heap page (docs/15/indexes-index-only-scans.html; at 1M resources
    /// `Condition?code&_summary=count` p95 47 → 12 ms, 16 clients). Nothing on SQLite,
    /// whose statements are written for the planner without `sqlite_stat1` tables and whose
    /// indexes need no visibility information.
    async fn finish_bulk_load(&self) -> Result<(), StoreError>;
    /// Sets (or, with `None`, removes) a value of `search_index_state`.
    async fn set_index_state(&self, key: &str, value: Option<&str>) -> Result<(), StoreError>;

    // HL7 v2 messages received over MLLP (issue 4; table hl7_messages, see hl7_messages.rs).

    /// Stores an incoming HL7 v2 message with status `received`, or, when a message with
    /// the same MSH-3, MSH-4 and MSH-10 is stored already, returns that one
    /// ([`hl7_messages::Hl7Insert::Duplicate`]) and stores nothing.
    async fn hl7_insert(
        &self,
        message: &hl7_messages::NewHl7Message,
    ) -> Result<hl7_messages::Hl7Insert, StoreError>;
    /// Records the outcome of processing message `id`: status, reason (for `error`) and the
    /// application ACK text (MSA-1 AA/AE/AR), stamping `processed_at`.
    async fn hl7_finish(
        &self,
        id: i64,
        status: hl7_messages::Hl7Status,
        reason: Option<&str>,
        ack: &str,
    ) -> Result<(), StoreError>;
    /// One stored message, raw text and ACK included.
    async fn hl7_get(&self, id: i64) -> Result<Option<hl7_messages::Hl7MessageRecord>, StoreError>;
    /// Stored messages, newest first.
    async fn hl7_list(
        &self,
        query: &hl7_messages::Hl7ListQuery,
    ) -> Result<Vec<hl7_messages::Hl7MessageSummary>, StoreError>;

    // Security (issue 5; tables auth_*, see auth.rs).

    /// Every signing key, oldest first.
    async fn auth_keys(&self) -> Result<Vec<auth::StoredKey>, StoreError>;
    /// Adds a signing key; with `retire_at`, every current key is retired at that time
    /// first, in the same transaction (key rotation).
    async fn auth_add_key(
        &self,
        key: &auth::StoredKey,
        retire_at: Option<i64>,
    ) -> Result<(), StoreError>;
    /// One registered OAuth client.
    async fn auth_client(&self, client_id: &str) -> Result<Option<auth::ClientRecord>, StoreError>;
    /// Every registered OAuth client, by client id.
    async fn auth_clients(&self) -> Result<Vec<auth::ClientRecord>, StoreError>;
    /// Registers a client, or replaces the registration with the same client id.
    async fn auth_put_client(&self, client: &auth::ClientRecord) -> Result<(), StoreError>;
    /// Registers a client unless its client id is taken (false then).
    async fn auth_add_client(&self, client: &auth::ClientRecord) -> Result<bool, StoreError>;
    /// Removes a client registration; false when there was none.
    async fn auth_delete_client(&self, client_id: &str) -> Result<bool, StoreError>;
    /// One user.
    async fn auth_user(&self, username: &str) -> Result<Option<auth::UserRecord>, StoreError>;
    /// Every user, by username.
    async fn auth_users(&self) -> Result<Vec<auth::UserRecord>, StoreError>;
    /// Whether there is any user at all (one row read, not a count).
    async fn auth_has_users(&self) -> Result<bool, StoreError>;
    /// Adds a user, or replaces the one with the same username.
    async fn auth_put_user(&self, user: &auth::UserRecord) -> Result<(), StoreError>;
    /// Adds a user unless the username is taken (false then).
    async fn auth_add_user(&self, user: &auth::UserRecord) -> Result<bool, StoreError>;
    /// Adds `user` only when there is no user at all (first start, issue 5 item 1), in
    /// one statement; false when there was a user already.
    async fn auth_add_first_user(&self, user: &auth::UserRecord) -> Result<bool, StoreError>;
    /// Removes a user; false when there was none.
    async fn auth_delete_user(&self, username: &str) -> Result<bool, StoreError>;
    /// Records the `jti` of a client assertion until `exp` (forgetting expired ones);
    /// false when this client used it before (a replay).
    async fn auth_use_jti(
        &self,
        client_id: &str,
        jti: &str,
        exp: i64,
        now: i64,
    ) -> Result<bool, StoreError>;
    /// Records a revoked access token (RFC 7009) until its expiry.
    async fn auth_revoke(&self, jti: &str, exp: i64) -> Result<(), StoreError>;
    /// The jtis of revoked access tokens not yet expired at `now`.
    async fn auth_revoked(&self, now: i64) -> Result<Vec<String>, StoreError>;

    // SMART App Launch grants (issue 5; table auth_grants, see grants.rs).

    /// Stores a new grant (login session, code, refresh token, launch context, access jti).
    async fn grant_put(&self, grant: &grants::GrantRecord, now: i64) -> Result<(), StoreError>;
    /// Redeems a single-use grant by the hash of its secret: marks it used when fresh, or
    /// tells that it was used before (a replay).
    async fn grant_redeem(
        &self,
        token_hash: &str,
        kind: grants::GrantKind,
        now: i64,
    ) -> Result<grants::Redeemed, StoreError>;
    /// A valid (unused, unrevoked, unexpired) grant, without redeeming it.
    async fn grant_get(
        &self,
        token_hash: &str,
        kind: grants::GrantKind,
        now: i64,
    ) -> Result<Option<grants::GrantRecord>, StoreError>;
    /// Revokes every grant of a family; returns `(jti, exp)` of the access tokens issued
    /// from it.
    async fn grant_revoke_family(&self, family: &str) -> Result<Vec<(String, i64)>, StoreError>;
}

/// One database transaction. Dropping it without [`StoreTx::commit`] rolls back.
#[async_trait]
pub trait StoreTx: Send {
    /// Current versions of the given resources (missing keys are absent from the map).
    /// On PostgreSQL the rows are locked (`FOR UPDATE`) until the transaction ends.
    async fn current_versions(
        &mut self,
        keys: &[ResourceKey],
    ) -> Result<HashMap<ResourceKey, CurrentVersion>, StoreError>;
    /// The current version of one resource, with content, as seen inside this transaction.
    async fn read(&mut self, res_type: &str, id: &str)
    -> Result<Option<StoredVersion>, StoreError>;
    /// Current resources that refer to `target_type/target_id` through any indexed
    /// reference parameter, as `(res_type, id)`.
    async fn referencing(
        &mut self,
        target_type: &str,
        target_id: &str,
    ) -> Result<Vec<ResourceKey>, StoreError>;
    /// Ids of current resources matching a search (used by conditional interactions).
    /// Returns at most `limit` ids.
    async fn search_ids(
        &mut self,
        query: &SearchQuery,
        limit: usize,
    ) -> Result<Vec<String>, StoreError>;
    /// [`StoreTx::search_ids`] for several queries at once, in order: simple token
    /// criteria (`identifier=system|value`, the conditional writes of HL7 v2 mappings) are
    /// answered by one statement, the others one by one.
    async fn search_ids_many(
        &mut self,
        queries: &[SearchQuery],
        limit: usize,
    ) -> Result<Vec<Vec<String>>, StoreError>;
    /// Queues a version for writing; it is flushed before the next read and at commit.
    fn put(&mut self, version: NewVersion);
    /// [`Store::hl7_insert`] inside this transaction: the row exists only if it commits.
    async fn hl7_insert(
        &mut self,
        message: &hl7_messages::NewHl7Message,
    ) -> Result<hl7_messages::Hl7Insert, StoreError>;
    /// [`Store::hl7_finish`] inside this transaction.
    async fn hl7_finish(
        &mut self,
        id: i64,
        status: hl7_messages::Hl7Status,
        reason: Option<&str>,
        ack: &str,
    ) -> Result<(), StoreError>;
    /// Flushes queued writes, then opens a savepoint (SQL `SAVEPOINT`): a later
    /// [`StoreTx::rollback_to_savepoint`] undoes what was done since, the rest of the
    /// transaction kept. One level only; used to apply several HL7 messages in one
    /// transaction, each undone alone on an error (`crate::mllp::process`).
    async fn savepoint(&mut self) -> Result<(), StoreError>;
    /// Flushes queued writes and releases the savepoint, keeping its work in the
    /// transaction. A flush error (e.g. a version conflict) leaves the savepoint open for
    /// [`StoreTx::rollback_to_savepoint`].
    async fn release_savepoint(&mut self) -> Result<(), StoreError>;
    /// Drops queued writes and undoes everything since [`StoreTx::savepoint`]
    /// (`ROLLBACK TO` then `RELEASE`); also clears a PostgreSQL transaction aborted by an
    /// error inside the savepoint. An error here leaves the transaction unusable: drop it.
    async fn rollback_to_savepoint(&mut self) -> Result<(), StoreError>;
    /// Flushes queued writes and commits.
    async fn commit(self: Box<Self>) -> Result<(), StoreError>;
}

/// How [`StoreTx::search_ids_many`] splits its queries: those with exactly one token
/// parameter (one key) whose values all have a code (answered together by
/// [`sql::token_lookup`]) and the others.
pub(crate) struct TokenBatch {
    /// Indexes of the queries answered one by one.
    pub others: Vec<usize>,
    /// Indexes of the simple token queries.
    simple: Vec<usize>,
}

/// One row of [`sql::token_lookup`]: `(res_type, param, system, code, id)`.
pub(crate) type TokenRow = (String, i64, Option<String>, Option<String>, String);

/// The single token key and its values when `q` is a simple token query.
fn simple_token(q: &SearchQuery) -> Option<(i64, Vec<&TokenMatch>)> {
    if q.cursor.is_some() || q.res_type.is_empty() {
        return None;
    }
    let [
        SearchParam::Match {
            table: IndexTable::Token,
            keys,
            values,
            negate: false,
        },
    ] = q.params.as_slice()
    else {
        return None;
    };
    let [key] = keys.as_slice() else {
        return None;
    };
    let mut out = Vec::new();
    for v in values {
        match v {
            Criterion::Token(m) if m.value.is_some() => out.push(m),
            _ => return None,
        }
    }
    (!out.is_empty()).then_some((*key, out))
}

impl TokenBatch {
    pub fn new(queries: &[SearchQuery]) -> TokenBatch {
        let (mut simple, mut others) = (Vec::new(), Vec::new());
        for (i, q) in queries.iter().enumerate() {
            if simple_token(q).is_some() {
                simple.push(i)
            } else {
                others.push(i)
            }
        }
        TokenBatch { others, simple }
    }

    /// The distinct `(res_type, param key, code)` triples to look up.
    pub fn wanted<'q>(&self, queries: &'q [SearchQuery]) -> Vec<(&'q str, i64, &'q str)> {
        let mut out = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for &i in &self.simple {
            let q = &queries[i];
            if let Some((key, values)) = simple_token(q) {
                for m in values {
                    let t = (q.res_type.as_str(), key, m.value.as_deref().unwrap_or(""));
                    if seen.insert(t) {
                        out.push(t);
                    }
                }
            }
        }
        out
    }

    /// Fills `out[i]` for each simple query from the looked-up rows: the matching ids in
    /// id order, at most `limit`, as the search statement would return them.
    pub fn assign(
        &self,
        queries: &[SearchQuery],
        rows: &[TokenRow],
        limit: usize,
        out: &mut [Vec<String>],
    ) {
        for &i in &self.simple {
            let q = &queries[i];
            let Some((key, values)) = simple_token(q) else {
                continue;
            };
            let mut ids: Vec<&str> = rows
                .iter()
                .filter(|(t, p, system, code, _)| {
                    *t == q.res_type
                        && *p == key
                        && values.iter().any(|m| {
                            code.as_deref() == m.value.as_deref()
                                && match &m.system {
                                    TokenSystem::Any => true,
                                    TokenSystem::None => system.is_none(),
                                    TokenSystem::Is(s) => system.as_deref() == Some(s.as_str()),
                                }
                        })
                })
                .map(|(.., id)| id.as_str())
                .collect();
            ids.sort_unstable();
            ids.dedup();
            ids.truncate(limit);
            out[i] = ids.into_iter().map(str::to_string).collect();
        }
    }
}

/// Connects to the database named by `url` (`sqlite://PATH`, `sqlite:PATH` or
/// `postgres://...`), creating an SQLite file if needed, and runs the migrations.
///
/// Errors: [`StoreError::UnsupportedUrl`], connection and migration errors.
pub async fn connect(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(postgres::PgStore::connect(url).await?))
    } else if let Some(path) = url
        .strip_prefix("sqlite://")
        .or(url.strip_prefix("sqlite:"))
    {
        Ok(Arc::new(sqlite::SqliteStore::open(path).await?))
    } else {
        Err(StoreError::UnsupportedUrl(url.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::TokenMatch;

    fn ident(res_type: &str, system: TokenSystem, value: Option<&str>) -> SearchQuery {
        let mut q = SearchQuery::new(res_type);
        q.params = vec![SearchParam::Match {
            table: IndexTable::Token,
            keys: vec![7],
            values: vec![Criterion::Token(TokenMatch {
                system,
                value: value.map(str::to_string),
            })],
            negate: false,
        }];
        q
    }

    #[test]
    fn token_batch_matches_system_and_counts_like_search() {
        let queries = vec![
            ident("Patient", TokenSystem::Is("s".into()), Some("1")),
            ident("Patient", TokenSystem::None, Some("1")),
            ident("Patient", TokenSystem::Any, Some("1")),
            ident("Patient", TokenSystem::Is("s".into()), None),
            ident("Encounter", TokenSystem::Is("s".into()), Some("1")),
        ];
        let batch = TokenBatch::new(&queries);
        assert_eq!(batch.others, vec![3]);
        assert_eq!(
            batch.wanted(&queries),
            vec![("Patient", 7, "1"), ("Encounter", 7, "1")]
        );
        let row = |t: &str, system: Option<&str>, id: &str| -> TokenRow {
            (
                t.into(),
                7,
                system.map(str::to_string),
                Some("1".into()),
                id.into(),
            )
        };
        let rows = vec![
            row("Patient", Some("s"), "b"),
            row("Patient", Some("s"), "b"),
            row("Patient", None, "c"),
            row("Patient", Some("t"), "a"),
        ];
        let mut out = vec![Vec::new(); queries.len()];
        batch.assign(&queries, &rows, 2, &mut out);
        assert_eq!(out[0], vec!["b"]);
        assert_eq!(out[1], vec!["c"]);
        assert_eq!(out[2], vec!["a", "b"]);
        assert!(out[4].is_empty());
    }
}
