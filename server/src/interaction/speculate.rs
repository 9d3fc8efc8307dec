//! Transactions run ahead of their database transaction, on committed data, and replayed
//! in it when nothing they read has changed (optimistic concurrency control with read-set
//! validation).
//!
//! A transaction Bundle whose entries are conditional (`PUT Type?identifier=…`, `POST` with
//! `ifNoneExist`, conditional references: every HL7 v2 message, R4 http.html#trules) can
//! only plan its writes after looking its criteria up, so its CPU work (planning, reference
//! rewriting, validation, serialisation, search-index extraction) was done inside the
//! database transaction. Where writers queue for one lock (SQLite, the MLLP group commit of
//! `crate::mllp::process`), that work held the lock. [`speculate`] does it before, with the
//! lookups answered from committed data ([`SpeculativeTx`]), and records every read the
//! run's decisions rest on with what it returned. [`replay`], inside the real transaction,
//! reads each again: if all return the same, a run there would decide exactly the same
//! (the run is a function of its reads, the ids it drew and the clock), so the recorded
//! writes are queued and the recorded response is the answer. If any read differs (another
//! writer got there first), nothing is queued and the caller runs the transaction itself.
//!
//! A speculative run never writes. It refuses (and the transaction runs normally) what it
//! cannot answer from committed data: a search after one of its own writes was queued, a
//! read of a resource it wrote itself, and everything that is not a transaction Bundle's
//! reads and writes (HL7 rows, savepoints, commit).
//!
//! The recorded `meta.lastUpdated` is the time of the speculative run, a few milliseconds
//! before the commit, as for the creates that [`super::bundle::prepare_transaction`]
//! prepares before any transaction.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use serde_json::Value;

use super::Context;
use super::bundle;
use crate::error::ApiError;
use crate::search::SearchQuery;
use crate::storage::{
    CurrentVersion, NewVersion, ResourceKey, Store, StoreError, StoreTx, StoredVersion,
    hl7_messages,
};

/// A transaction run ahead ([`speculate`]): what it read, what it would write, what it
/// would answer.
pub struct Speculation {
    reads: Vec<Read>,
    writes: Vec<NewVersion>,
    response: Value,
}

/// One read of a speculative run, with what it returned.
enum Read {
    CurrentVersions(Vec<ResourceKey>, HashMap<ResourceKey, CurrentVersion>),
    SearchIds(Vec<SearchQuery>, usize, Vec<Vec<String>>),
    Resource(String, String, Option<StoredVersion>),
}

/// Runs the transaction Bundle `bundle` ahead, on committed data, with `representation` as
/// in [`bundle::run_transaction`]. `None` when the run could not be done ahead (see the
/// module documentation) or failed: the real run then tells what went wrong.
pub async fn speculate(ctx: &Context, bundle: Value, representation: bool) -> Option<Speculation> {
    let prepared = bundle::prepare_transaction(ctx, bundle).ok()?;
    let mut tx = SpeculativeTx {
        store: ctx.store.as_ref(),
        reads: Vec::new(),
        queue: Vec::new(),
        written: HashSet::new(),
    };
    let response = bundle::run_transaction(ctx, &mut tx, prepared, representation)
        .await
        .ok()?;
    Some(Speculation {
        reads: tx.reads,
        writes: tx.queue,
        response,
    })
}

/// Replays `speculation` in `tx`: reads again what it read; when every read returns what
/// it returned ahead, queues its writes and returns its response, else returns `None`
/// having queued nothing. Errors: the database's, from the reads.
pub async fn replay(
    tx: &mut dyn StoreTx,
    speculation: Speculation,
) -> Result<Option<Value>, ApiError> {
    for read in &speculation.reads {
        let same = match read {
            Read::CurrentVersions(keys, found) => tx.current_versions(keys).await? == *found,
            Read::SearchIds(queries, limit, found) => {
                tx.search_ids_many(queries, *limit).await? == *found
            }
            Read::Resource(res_type, id, found) => tx.read(res_type, id).await? == *found,
        };
        if !same {
            return Ok(None);
        }
    }
    for version in speculation.writes {
        tx.put(version);
    }
    Ok(Some(speculation.response))
}

/// The transaction a speculative run sees: reads answered from committed data and
/// recorded, writes queued in memory, anything else refused.
struct SpeculativeTx<'a> {
    store: &'a dyn Store,
    reads: Vec<Read>,
    queue: Vec<NewVersion>,
    /// The resources of `queue`.
    written: HashSet<ResourceKey>,
}

impl SpeculativeTx<'_> {
    /// Refuses a search once a write is queued: committed data would not show it.
    fn searchable(&self) -> Result<(), StoreError> {
        match self.queue.is_empty() {
            true => Ok(()),
            false => Err(StoreError::NotSpeculable("a search after a write")),
        }
    }

    /// Refuses a read of a resource the run wrote itself.
    fn readable(&self, key: &ResourceKey) -> Result<(), StoreError> {
        match self.written.contains(key) {
            false => Ok(()),
            true => Err(StoreError::NotSpeculable("a read of its own write")),
        }
    }
}

#[async_trait]
impl StoreTx for SpeculativeTx<'_> {
    async fn current_versions(
        &mut self,
        keys: &[ResourceKey],
    ) -> Result<HashMap<ResourceKey, CurrentVersion>, StoreError> {
        for key in keys {
            self.readable(key)?;
        }
        let found = self.store.current_versions(keys).await?;
        self.reads
            .push(Read::CurrentVersions(keys.to_vec(), found.clone()));
        Ok(found)
    }

    async fn read(
        &mut self,
        res_type: &str,
        id: &str,
    ) -> Result<Option<StoredVersion>, StoreError> {
        self.readable(&(res_type.to_string(), id.to_string()))?;
        let found = self.store.read(res_type, id).await?;
        self.reads.push(Read::Resource(
            res_type.to_string(),
            id.to_string(),
            found.clone(),
        ));
        Ok(found)
    }

    async fn referencing(
        &mut self,
        _target_type: &str,
        _target_id: &str,
    ) -> Result<Vec<ResourceKey>, StoreError> {
        Err(StoreError::NotSpeculable("a reverse reference lookup"))
    }

    async fn search_ids(
        &mut self,
        q: &SearchQuery,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let mut found = self.search_ids_many(std::slice::from_ref(q), limit).await?;
        Ok(found.pop().unwrap_or_default())
    }

    async fn search_ids_many(
        &mut self,
        queries: &[SearchQuery],
        limit: usize,
    ) -> Result<Vec<Vec<String>>, StoreError> {
        self.searchable()?;
        let found = self.store.search_ids_many(queries, limit).await?;
        self.reads
            .push(Read::SearchIds(queries.to_vec(), limit, found.clone()));
        Ok(found)
    }

    fn put(&mut self, version: NewVersion) {
        self.written
            .insert((version.res_type.clone(), version.id.clone()));
        self.queue.push(version);
    }

    async fn hl7_insert(
        &mut self,
        _message: &hl7_messages::NewHl7Message,
    ) -> Result<hl7_messages::Hl7Insert, StoreError> {
        Err(StoreError::NotSpeculable("an HL7 message row"))
    }

    async fn hl7_finish(
        &mut self,
        _id: i64,
        _status: hl7_messages::Hl7Status,
        _reason: Option<&str>,
        _ack: &str,
    ) -> Result<(), StoreError> {
        Err(StoreError::NotSpeculable("an HL7 message row"))
    }

    async fn savepoint(&mut self) -> Result<(), StoreError> {
        Err(StoreError::NotSpeculable("a savepoint"))
    }

    async fn release_savepoint(&mut self) -> Result<(), StoreError> {
        Err(StoreError::NotSpeculable("a savepoint"))
    }

    async fn rollback_to_savepoint(&mut self) -> Result<(), StoreError> {
        Err(StoreError::NotSpeculable("a savepoint"))
    }

    async fn commit(self: Box<Self>) -> Result<(), StoreError> {
        Err(StoreError::NotSpeculable("a commit"))
    }
}
