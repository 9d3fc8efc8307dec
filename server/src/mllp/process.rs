//! Processing one HL7 v2 message: store, deduplicate, parse, map, apply, acknowledge, record.
//!
//! The listener calls [`Processor::accept`] for each MLLP frame, which parses the message.
//! What is left to do comes back as a [`Step`]: either the ACKs to send, or a commit ACK to
//! send right away (enhanced mode, HL7 v2.5.1 section 2.9.3) and a [`Job`] for
//! [`Processor::apply`], which maps the message to a FHIR transaction Bundle and applies it.
//!
//! Original mode, message parsed: the raw row (`hl7_messages`), the FHIR writes and the
//! status `processed` with the AA are written in ONE database transaction, committed once;
//! the ACK is sent only after that commit. A repeated MSH-10 from the same MSH-3/MSH-4 is
//! found by the row insert in that transaction, which is then rolled back and the stored ACK
//! sent again. On any failure the transaction is rolled back (a message is never
//! half-applied) and the raw message is stored with status `error`, the reason and the
//! AE/AR in a transaction of its own, so the raw message is never lost.
//!
//! On SQLite, messages that arrive while another group is being written share one
//! transaction, each inside a savepoint of its own (`Groups`: group commit); what is said
//! above holds per message, and a message the group cannot apply runs again alone.
//!
//! Enhanced mode, and messages that do not parse: the raw message is stored (status
//! `received`) before anything else (the CA promises it is safe); the FHIR writes and the
//! status update are then again one transaction.
//!
//! Duplicates while the original is still being processed (a client that dropped its
//! connection and resent at once) wait for the original to finish, then get its ACK: each
//! (MSH-3, MSH-4, MSH-10) is registered in memory before its row is inserted.
//!
//! Each applied message (AA), and each one reprocessed successfully, is audited with an
//! AuditEvent when the processor has an auditor ([`Processor::with_auditor`]; see
//! [`super::audit`]).

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use hl7::ack::{Ack, AckCode};
use hl7::{Charset, Header, Message};
use serde_json::Value;
use tokio::sync::{oneshot, watch};

use super::audit::Imported;
use super::locks::KeyedLocks;
use super::mapping::{self, MappingConfig};
use super::outcome::{AckMode, Rejection, commit_ack};
use crate::auth::audit::Auditor;
use crate::clock;
use crate::error::ApiError;
use crate::interaction::{Context, bundle, merge, speculate};
use crate::storage::hl7_messages::{Hl7Insert, Hl7MessageRecord, Hl7Status, NewHl7Message};
use crate::storage::{StoreError, StoreTx};

/// (MSH-3, MSH-4, MSH-10) as ER7 text: the identity of a message for idempotency.
type MessageKey = (String, String, String);

/// Processes HL7 v2 messages into the FHIR store; shared by all connections.
pub struct Processor {
    ctx: Context,
    mapping: MappingConfig,
    locks: Arc<KeyedLocks>,
    /// Group commit, on SQLite only (see [`Groups`]).
    groups: Option<Arc<Groups>>,
    in_flight: Mutex<HashMap<MessageKey, watch::Receiver<bool>>>,
    auditor: Option<Auditor>,
}

/// What is left to do for a message after [`Processor::accept`].
pub enum Step<'a> {
    /// Nothing to process: send these acknowledgments (maybe none), in order.
    Done(Vec<Vec<u8>>),
    /// Stored and parsed: send `commit` now (enhanced mode CA, when MSH-15 asks for it),
    /// then run [`Processor::apply`] with `job`.
    Apply {
        /// The commit ACK to send before processing.
        commit: Option<Vec<u8>>,
        /// The message to apply.
        job: Box<Job<'a>>,
    },
}

/// A stored, parsed message waiting for [`Processor::apply`].
pub struct Job<'a> {
    /// The stored row; `None` in original mode, where the row is inserted in the same
    /// database transaction as the FHIR writes.
    id: Option<i64>,
    /// The row to insert when `id` is `None` (shared with the group commit's [`Work`]).
    new: Arc<NewHl7Message>,
    message: Message,
    mode: AckMode,
    started: Instant,
    /// The sender's address, for the AuditEvent.
    peer: Option<IpAddr>,
    _in_flight: Option<InFlight<'a>>,
}

impl Job<'_> {
    /// The `hl7_messages` row id, when the message was stored before processing.
    pub fn id(&self) -> Option<i64> {
        self.id
    }
}

/// Marks a message key as being processed; on drop, unmarks it and wakes waiting duplicates.
struct InFlight<'a> {
    owner: &'a Processor,
    key: MessageKey,
    done: watch::Sender<bool>,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut map = self
            .owner
            .in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        map.remove(&self.key);
        drop(map);
        let _ = self.done.send(true);
    }
}

/// The outcome of [`Processor::reprocess`].
#[derive(Debug, Clone)]
pub struct Reprocessed {
    /// The new status.
    pub status: Hl7Status,
    /// The reason when the status is `error`.
    pub reason: Option<String>,
    /// The new application ACK.
    pub ack: String,
}

/// Why [`Processor::reprocess`] did not run.
#[derive(Debug, thiserror::Error)]
pub enum ReprocessError {
    /// No stored message has this id.
    #[error("no HL7 message with id {0}")]
    NotFound(i64),
    /// The message was applied already; reprocessing it would apply it twice.
    #[error("HL7 message {0} is already processed (use --force to apply it again)")]
    AlreadyProcessed(i64),
    /// Reading or writing `hl7_messages` failed.
    #[error(transparent)]
    Store(#[from] crate::storage::StoreError),
}

impl Processor {
    /// A processor writing through `ctx`, mapping with `mapping`.
    pub fn new(ctx: Context, mapping: MappingConfig) -> Processor {
        let locks = Arc::new(KeyedLocks::default());
        Processor {
            groups: Groups::for_store(&ctx, &locks, false),
            ctx,
            mapping,
            locks,
            in_flight: Mutex::new(HashMap::new()),
            auditor: None,
        }
    }

    /// Audits every applied message through `auditor` (one AuditEvent each).
    pub fn with_auditor(mut self, auditor: Auditor) -> Processor {
        self.auditor = Some(auditor);
        self.groups = Groups::for_store(&self.ctx, &self.locks, true);
        self
    }

    /// Stores, deduplicates and parses one message (the content of an MLLP frame) sent
    /// from `peer`.
    pub async fn accept(&self, raw: &[u8], peer: Option<IpAddr>) -> Step<'_> {
        let started = Instant::now();
        let sniffed = Header::sniff(raw);
        if sniffed
            .as_ref()
            .is_some_and(|h| h.message_type().code == "ACK")
        {
            // An acknowledgment (e.g. the sender's commit ACK of our enhanced-mode
            // application ACK): never answered, never stored (HL7 v2.5.1 2.9.3).
            tracing::debug!("MLLP: ACK message received and ignored");
            return Step::Done(Vec::new());
        }
        let header = sniffed.unwrap_or_else(Header::empty);
        let mode = AckMode::of(&header);
        let new = Arc::new(new_message(raw, &header));
        let in_flight = match &new.control_id {
            Some(c) => {
                let key = (
                    new.sending_application.clone(),
                    new.sending_facility.clone(),
                    c.clone(),
                );
                Some(self.claim(key).await)
            }
            None => None,
        };
        // Original mode: the raw row is inserted, the FHIR writes applied and the status and
        // ACK recorded in one database transaction ([`Processor::apply`]); a failure rolls
        // it back and stores the raw message with status `error` on its own.
        if mode == AckMode::Original
            && let Ok(message) = hl7::parse(raw)
            && AckMode::of(&message.header()) == AckMode::Original
        {
            return Step::Apply {
                commit: None,
                job: Box::new(Job {
                    id: None,
                    new,
                    message,
                    mode,
                    started,
                    peer,
                    _in_flight: in_flight,
                }),
            };
        }
        let id = match self.ctx.store.hl7_insert(&new).await {
            Err(e) => {
                tracing::error!(error = %e, control_id = ?new.control_id, "MLLP: cannot store message");
                let rejection = Rejection::Store(e);
                let acks = match mode {
                    AckMode::Original => vec![rejection.ack(&header).to_bytes()],
                    AckMode::Enhanced { .. } if mode.sends_commit_ack(AckCode::CE) => {
                        vec![
                            commit_ack(&header, AckCode::CE, Some(rejection.error_detail()))
                                .to_bytes(),
                        ]
                    }
                    AckMode::Enhanced { .. } => Vec::new(),
                };
                return Step::Done(acks);
            }
            Ok(Hl7Insert::Duplicate(record)) if record.summary.status != Hl7Status::Received => {
                tracing::info!(
                    id = record.summary.id,
                    control_id = ?record.summary.control_id,
                    status = %record.summary.status,
                    "MLLP: duplicate MSH-10, original ACK sent again"
                );
                return Step::Done(duplicate_reply(&header, mode, &record));
            }
            // Left `received` by a run that died before finishing (we hold the key, so no
            // one in this process is on it): process it now under the same row.
            Ok(Hl7Insert::Duplicate(record)) => record.summary.id,
            Ok(Hl7Insert::Inserted(id)) => id,
        };
        let message = match hl7::parse(raw) {
            Ok(m) => m,
            Err(e) => {
                let rejection = Rejection::Parse(e);
                let ack = match mode {
                    AckMode::Original => rejection.ack(&header),
                    AckMode::Enhanced { .. } => {
                        commit_ack(&header, AckCode::CR, Some(rejection.error_detail()))
                    }
                };
                self.record(id, Err(&rejection), &ack, &new, started).await;
                let send = match mode {
                    AckMode::Original => true,
                    AckMode::Enhanced { .. } => mode.sends_commit_ack(AckCode::CR),
                };
                return Step::Done(if send { vec![ack.to_bytes()] } else { vec![] });
            }
        };
        let header = message.header();
        let mode = AckMode::of(&header);
        let commit = mode
            .sends_commit_ack(AckCode::CA)
            .then(|| commit_ack(&header, AckCode::CA, None).to_bytes());
        Step::Apply {
            commit,
            job: Box::new(Job {
                id: Some(id),
                new,
                message,
                mode,
                started,
                peer,
                _in_flight: in_flight,
            }),
        }
    }

    /// Maps and applies a parsed message, records the outcome, and returns the application
    /// ACK to send (`None` when MSH-16 says not to, in enhanced mode).
    pub async fn apply(&self, job: Job<'_>) -> Option<Vec<u8>> {
        let header = job.message.header();
        let (id, result, ack) = match self.run_grouped(job.id, &job.new, &job.message).await {
            Applied::Duplicate(record) => {
                tracing::info!(
                    id = record.summary.id,
                    control_id = ?record.summary.control_id,
                    status = %record.summary.status,
                    "MLLP: duplicate MSH-10, original ACK sent again"
                );
                return duplicate_reply(&header, job.mode, &record)
                    .into_iter()
                    .next_back();
            }
            Applied::Done {
                id,
                result,
                ack,
                imported,
            } => {
                if let Some(imported) = imported {
                    let sender = super::audit::sender(
                        &job.new.sending_application,
                        &job.new.sending_facility,
                    );
                    let ip = job.peer.map(|p| p.to_string());
                    self.audit(&sender, ip, &job.message, imported).await;
                }
                (id, result, ack)
            }
        };
        let (status, reason) = match &result {
            Ok(()) => (Hl7Status::Processed, None),
            Err(r) => (Hl7Status::Error, Some(r.to_string())),
        };
        tracing::info!(
            id,
            message_type = %header.field(9),
            control_id = %job.message.control_id(),
            %status,
            reason = reason.as_deref().unwrap_or(""),
            duration_ms = job.started.elapsed().as_secs_f64() * 1000.0,
            "MLLP message"
        );
        let code = match &result {
            Ok(()) => AckCode::AA,
            Err(r) => r.ack_code(),
        };
        job.mode.sends_application_ack(code).then(|| ack.to_bytes())
    }

    /// Runs stored message `id` again (after a fix to the mapping or the data): parses,
    /// maps and applies it, and records the new status and ACK. A message already
    /// `processed` is refused unless `force`.
    pub async fn reprocess(&self, id: i64, force: bool) -> Result<Reprocessed, ReprocessError> {
        let record = self
            .ctx
            .store
            .hl7_get(id)
            .await?
            .ok_or(ReprocessError::NotFound(id))?;
        if record.summary.status == Hl7Status::Processed && !force {
            return Err(ReprocessError::AlreadyProcessed(id));
        }
        let bytes = raw_bytes(&record.raw);
        let (result, ack) = match hl7::parse(&bytes) {
            Err(e) => {
                let rejection = Rejection::Parse(e);
                let header = Header::sniff(&bytes).unwrap_or_else(Header::empty);
                let ack = rejection.ack(&header);
                (Err(rejection), ack)
            }
            Ok(message) => {
                let none = Arc::new(NewHl7Message::default());
                match self.run_recorded(Some(id), &none, &message).await {
                    Applied::Done {
                        result,
                        ack,
                        imported,
                        ..
                    } => {
                        if let Some(imported) = imported {
                            let sender = super::audit::sender(
                                &record.summary.sending_application,
                                &record.summary.sending_facility,
                            );
                            self.audit(&sender, None, &message, imported).await;
                        }
                        let (status, reason) = match &result {
                            Ok(()) => (Hl7Status::Processed, None),
                            Err(r) => (Hl7Status::Error, Some(r.to_string())),
                        };
                        return Ok(Reprocessed {
                            status,
                            reason,
                            ack: ack.into_string(),
                        });
                    }
                    Applied::Duplicate(_) => {
                        return Err(ReprocessError::Store(StoreError::Corrupt(format!(
                            "HL7 message {id} changed while being reprocessed"
                        ))));
                    }
                }
            }
        };
        let (status, reason) = match &result {
            Ok(()) => (Hl7Status::Processed, None),
            Err(r) => (Hl7Status::Error, Some(r.to_string())),
        };
        self.ctx
            .store
            .hl7_finish(id, status, reason.as_deref(), ack.as_str())
            .await?;
        Ok(Reprocessed {
            status,
            reason,
            ack: ack.into_string(),
        })
    }

    /// Maps and applies `message` and records its outcome in row `row` (inserted from
    /// `new` when `None`). On success the row insert, the FHIR writes and the status update
    /// are one database transaction; on failure that transaction is rolled back and the
    /// row, status `error` with the reason, is written in a transaction of its own.
    async fn run_recorded(
        &self,
        row: Option<i64>,
        new: &Arc<NewHl7Message>,
        message: &Message,
    ) -> Applied {
        let rejection = match self.try_apply(row, new, message).await {
            Ok(applied) => return applied,
            Err(rejection) => rejection,
        };
        let ack = rejection.ack(&message.header());
        let recorded = async {
            let mut tx = self.ctx.store.begin().await?;
            let id = match row {
                Some(id) => id,
                None => match tx.hl7_insert(new).await? {
                    Hl7Insert::Inserted(id) => id,
                    Hl7Insert::Duplicate(r) if r.summary.status != Hl7Status::Received => {
                        return Ok(Err(r));
                    }
                    Hl7Insert::Duplicate(r) => r.summary.id,
                },
            };
            let reason = rejection.to_string();
            tx.hl7_finish(id, Hl7Status::Error, Some(&reason), ack.as_str())
                .await?;
            tx.commit().await?;
            Ok::<_, StoreError>(Ok(id))
        }
        .await;
        let id = match recorded {
            Ok(Ok(id)) => Some(id),
            Ok(Err(record)) => return Applied::Duplicate(record),
            Err(e) => {
                tracing::error!(error = %e, "MLLP: cannot record the outcome of a message");
                row
            }
        };
        Applied::Done {
            id,
            result: Err(rejection),
            ack,
            imported: None,
        }
    }

    /// Queues the AuditEvent of an applied message (when there is an auditor).
    async fn audit(&self, sender: &str, ip: Option<String>, message: &Message, imported: Imported) {
        if let Some(auditor) = &self.auditor {
            auditor
                .record(super::audit::record(sender, ip, message, imported))
                .await;
        }
    }

    /// Maps `message` and applies it in one database transaction with the row insert (when
    /// `row` is `None`) and the status update, holding the locks of its conditional writes
    /// (but for keys known to match an existing resource, see [`KeyedLocks`]). Retried on a
    /// version conflict. On an error nothing was committed.
    async fn try_apply(
        &self,
        row: Option<i64>,
        new: &Arc<NewHl7Message>,
        message: &Message,
    ) -> Result<Applied, Rejection> {
        let mut work = Work::new(message, &self.mapping, &self.locks, row, new.clone())?;
        let mut conflicts = 0;
        loop {
            let _held = self.locks.lock(work.locked_keys()).await;
            match self.attempt(&work).await {
                Ok(Attempt::Done { applied, .. }) => return Ok(applied),
                Ok(Attempt::NeedsLock(created)) => {
                    for key in created {
                        self.locks.forget(&key);
                        work.unlocked.remove(&key);
                    }
                }
                Err(Rejection::Transaction(ApiError::Store(StoreError::VersionConflict(_))))
                    if conflicts < 5 =>
                {
                    conflicts += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// One run of [`Processor::try_apply`]'s transaction: [`attempt_on`] in a transaction
    /// of its own, committed when the message was applied.
    async fn attempt(&self, work: &Work) -> Result<Attempt, Rejection> {
        let ahead = Ahead::Prepared(bundle::prepare_transaction(&self.ctx, work.bundle.clone())?);
        let mut tx = self.ctx.store.begin().await.map_err(ApiError::from)?;
        let audit = self.auditor.is_some();
        let attempt = attempt_on(&self.ctx, audit, tx.as_mut(), work, ahead).await?;
        if let Attempt::Done {
            applied: Applied::Done { .. },
            remember,
        } = &attempt
        {
            tx.commit().await.map_err(ApiError::from)?;
            for key in remember {
                self.locks.remember(key);
            }
        }
        Ok(attempt)
    }

    /// Applies a parsed message and records its outcome, like
    /// [`Processor::run_recorded`], but in a group commit when it can ([`Groups`]): the
    /// message's Bundle is mapped and run ahead here ([`speculate`]; else prepared), then
    /// applied by a group with the messages that arrived meanwhile. A message the group
    /// could not apply (an error, a lock it did not hold, a conflict, a failed commit) runs
    /// again alone.
    async fn run_grouped(
        &self,
        row: Option<i64>,
        new: &Arc<NewHl7Message>,
        message: &Message,
    ) -> Applied {
        let Some(groups) = &self.groups else {
            return self.run_recorded(row, new, message).await;
        };
        let grouped = async {
            let work = Work::new(message, &self.mapping, &self.locks, row, new.clone()).ok()?;
            // Run ahead here, on this connection's task, so the group's lane (which holds
            // the one writer) only checks the reads and queues the writes.
            let ahead = match speculate::speculate(&self.ctx, work.bundle.clone(), false).await {
                Some(speculation) => Ahead::Speculated(speculation),
                None => Ahead::Prepared(
                    bundle::prepare_transaction(&self.ctx, work.bundle.clone()).ok()?,
                ),
            };
            let (reply, answer) = oneshot::channel();
            groups.submit(Member {
                work,
                ahead: Some(ahead),
                reply,
            });
            answer.await.ok()
        };
        match grouped.await {
            Some(applied) => applied,
            None => self.run_recorded(row, new, message).await,
        }
    }

    /// Registers `key` as in flight, first waiting for any run already processing it.
    async fn claim(&self, key: MessageKey) -> InFlight<'_> {
        loop {
            let waiting = {
                let mut map = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
                match map.get(&key) {
                    Some(rx) => rx.clone(),
                    None => {
                        let (done, rx) = watch::channel(false);
                        map.insert(key.clone(), rx);
                        return InFlight {
                            owner: self,
                            key,
                            done,
                        };
                    }
                }
            };
            let mut waiting = waiting;
            // Err: the sender is gone, which also means the run is over.
            let _ = waiting.wait_for(|done| *done).await;
        }
    }

    /// Records status, reason and ACK of message `id`; a failure is logged, not returned:
    /// the FHIR transaction has committed (or not) whatever happens here.
    async fn record(
        &self,
        id: i64,
        result: Result<(), &Rejection>,
        ack: &Ack,
        message: &NewHl7Message,
        started: Instant,
    ) {
        let (status, reason) = match result {
            Ok(()) => (Hl7Status::Processed, None),
            Err(r) => (Hl7Status::Error, Some(r.to_string())),
        };
        if let Err(e) = self
            .ctx
            .store
            .hl7_finish(id, status, reason.as_deref(), ack.as_str())
            .await
        {
            tracing::error!(id, error = %e, "MLLP: cannot record the outcome of a message");
        }
        tracing::info!(
            id,
            message_type = %message.message_type,
            control_id = ?message.control_id,
            %status,
            reason = reason.as_deref().unwrap_or(""),
            duration_ms = started.elapsed().as_secs_f64() * 1000.0,
            "MLLP message"
        );
    }
}

/// What [`Processor::run_recorded`] did.
enum Applied {
    /// Applied (or not) and recorded in row `id` (`None` if even that failed); what was
    /// written, for the AuditEvent, when applied and audited.
    Done {
        id: Option<i64>,
        result: Result<(), Rejection>,
        ack: Ack,
        imported: Option<Imported>,
    },
    /// The message was stored and finished already (a duplicate MSH-10): nothing done.
    Duplicate(Box<Hl7MessageRecord>),
}

/// What one transaction attempt of [`Processor::try_apply`] did.
enum Attempt {
    /// Applied (to commit) or found to be a duplicate (nothing written); `remember` are the
    /// keys that matched an existing resource, for [`KeyedLocks::remember`] once committed.
    Done {
        applied: Applied,
        remember: Vec<String>,
    },
    /// To roll back: these keys, run without their lock, created a resource.
    NeedsLock(Vec<String>),
}

/// The database half of applying one message, prepared outside any transaction: the
/// mapped transaction Bundle and what [`attempt_on`] needs besides.
struct Work {
    /// The `hl7_messages` row, or `None` to insert `new` in the same transaction.
    row: Option<i64>,
    new: Arc<NewHl7Message>,
    bundle: Value,
    /// The conditional write key of each Bundle entry ([`super::locks::entry_write_keys`]).
    entry_keys: Vec<Option<String>>,
    /// Keys run without their lock (known to match an existing resource).
    unlocked: HashSet<String>,
    /// ADT^A40: references to the merged patients are moved after the writes.
    merge: bool,
    /// The AA to record and send when applied.
    ack: Ack,
}

impl Work {
    /// Maps `message` (HL7 V2-to-FHIR, [`mapping::to_transaction`]).
    fn new(
        message: &Message,
        mapping: &MappingConfig,
        locks: &KeyedLocks,
        row: Option<i64>,
        new: Arc<NewHl7Message>,
    ) -> Result<Work, Rejection> {
        let bundle = mapping::to_transaction(message, mapping)?;
        let entry_keys = super::locks::entry_write_keys(&bundle);
        let unlocked = entry_keys
            .iter()
            .flatten()
            .filter(|k| locks.is_known(k))
            .cloned()
            .collect();
        let kind = message.message_type();
        Ok(Work {
            row,
            new,
            bundle,
            entry_keys,
            unlocked,
            merge: kind.code == "ADT" && kind.trigger == "A40",
            ack: hl7::ack::accept(message),
        })
    }

    /// The keys whose locks a run must hold: all but the unlocked ones.
    fn locked_keys(&self) -> BTreeSet<String> {
        self.entry_keys
            .iter()
            .flatten()
            .filter(|k| !self.unlocked.contains(*k))
            .cloned()
            .collect()
    }
}

/// Applies `work` inside `tx`, which the caller commits when this returns
/// [`Attempt::Done`] with [`Applied::Done`] (and otherwise rolls back): the row insert
/// (when `work.row` is `None`; a duplicate MSH-10 stops here), the transaction Bundle (run
/// ahead: replayed, or run here when a read changed; prepared: run here), the A40
/// reference moves, the AuditEvent facts (when `audit`) and the status `processed`.
async fn attempt_on(
    ctx: &Context,
    audit: bool,
    tx: &mut dyn StoreTx,
    work: &Work,
    ahead: Ahead,
) -> Result<Attempt, Rejection> {
    let id = match work.row {
        Some(id) => id,
        None => match tx.hl7_insert(&work.new).await.map_err(ApiError::from)? {
            Hl7Insert::Inserted(id) => id,
            Hl7Insert::Duplicate(r) if r.summary.status != Hl7Status::Received => {
                return Ok(Attempt::Done {
                    applied: Applied::Duplicate(r),
                    remember: Vec::new(),
                });
            }
            // Left `received` by a run that died before finishing: process it now.
            Hl7Insert::Duplicate(r) => r.summary.id,
        },
    };
    let response = match ahead {
        Ahead::Prepared(prepared) => bundle::run_transaction(ctx, tx, prepared, false).await?,
        Ahead::Speculated(speculation) => match speculate::replay(tx, speculation).await? {
            Some(response) => response,
            // A read changed since the run ahead: run the transaction here.
            None => {
                let prepared = bundle::prepare_transaction(ctx, work.bundle.clone())?;
                bundle::run_transaction(ctx, tx, prepared, false).await?
            }
        },
    };
    if work.merge {
        for (prior, survivor) in merged_patients(&work.bundle, &response) {
            merge::move_patient_references(ctx, tx, &prior, &survivor).await?;
        }
    }
    let statuses: Vec<&str> = response
        .get("entry")
        .and_then(Value::as_array)
        .map(|entries| {
            entries
                .iter()
                .map(|e| e["response"]["status"].as_str().unwrap_or(""))
                .collect()
        })
        .unwrap_or_default();
    let outcome = |prefix: &'static str| {
        work.entry_keys
            .iter()
            .zip(statuses.iter())
            .filter_map(move |(k, status)| k.as_ref().filter(|_| status.starts_with(prefix)))
    };
    // A key run without its lock created a resource: another message could be creating
    // the same one. Roll back and run again holding the lock.
    let created: Vec<String> = outcome("201")
        .filter(|k| work.unlocked.contains(*k))
        .cloned()
        .collect();
    if !created.is_empty() {
        return Ok(Attempt::NeedsLock(created));
    }
    let imported = match audit {
        true => Some(super::audit::imported(&ctx.base_url, tx, &work.bundle, &response).await),
        false => None,
    };
    tx.hl7_finish(id, Hl7Status::Processed, None, work.ack.as_str())
        .await
        .map_err(ApiError::from)?;
    Ok(Attempt::Done {
        applied: Applied::Done {
            id: Some(id),
            result: Ok(()),
            ack: work.ack.clone(),
            imported,
        },
        remember: outcome("200").cloned().collect(),
    })
}

/// A message waiting for a group commit: its work, its Bundle run ahead or prepared (taken
/// by a run of the group; prepared again from `work.bundle` for a second run, `None` if
/// that failed), and where to send what became of it (dropped unsent when the group did
/// not apply it: it runs alone).
struct Member {
    work: Work,
    ahead: Option<Ahead>,
    reply: oneshot::Sender<Applied>,
}

/// A message's transaction Bundle made ready outside the database transaction.
enum Ahead {
    /// Prepared ([`bundle::prepare_transaction`]), to run in the transaction.
    Prepared(bundle::PreparedTransaction),
    /// Run ahead on committed data ([`speculate::speculate`]), to replay in the
    /// transaction, or to run there if a read changed meanwhile.
    Speculated(speculate::Speculation),
}

/// How a run of a group keeps its members apart ([`Groups::apply`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Isolation {
    /// No savepoints: a member that cannot be applied undoes the whole run (the group's
    /// transaction is rolled back), and the group runs again with [`Isolation::Savepoints`].
    /// The common case (every member applies) then pays nothing for isolation: a savepoint
    /// makes SQLite copy each page a message first touches into its sub-journal
    /// (sqlite.org/lang_savepoint.html), 13 % of the throughput of `bench mllp`.
    Optimistic,
    /// Each member inside a savepoint of its own ([`StoreTx::savepoint`]): a member that
    /// cannot be applied is rolled back to it and runs alone afterwards.
    Savepoints,
}

/// Group commit of HL7 messages: the messages that arrive while a group is being written
/// are applied together in the next one, in ONE database transaction. The group runs
/// first without savepoints ([`Isolation::Optimistic`]); if a member cannot be applied the
/// whole transaction is rolled back and the group runs again with each member inside a
/// savepoint of its own ([`Isolation::Savepoints`]), so that one message's error undoes
/// only that message, which then runs alone. Each message still gets its ACK only after
/// the commit that holds its writes (HL7 v2.5.1 section 2.9.2, original mode), and a
/// message is still never half-applied. What is saved is per-commit work: SQLite writes
/// each changed page to the WAL once per commit, and the pages an ORU^R01 changes (the
/// index tables' hot leaves, `hl7_messages`) are mostly the same from one message to the
/// next.
///
/// One group runs at a time (SQLite has one writer anyway) and holds up to [`MAX_GROUP`]
/// messages. With one message in flight a group is that one message: nothing waits for
/// company.
///
/// Only on a store with one writer ([`crate::storage::Store::single_writer`], SQLite).
/// On PostgreSQL each message keeps its own transaction: there the writers run in
/// parallel, and one transaction per group serialised them and held the row locks they
/// share (the patient's, locked by the no-op update of every ORU^R01 for the same patient)
/// across the whole group: 185 against 270 messages/s in `bench mllp`.
struct Groups {
    ctx: Context,
    locks: Arc<KeyedLocks>,
    audit: bool,
    state: Mutex<GroupState>,
}

/// The messages waiting for a group, and whether a lane is running groups.
#[derive(Default)]
struct GroupState {
    queue: VecDeque<Member>,
    running: bool,
}

/// The most messages one group commit applies.
const MAX_GROUP: usize = 32;

/// Clears [`GroupState::running`] if a lane ends by a panic (a lane that finds the queue
/// empty clears it itself, under the same lock, so no message is left waiting).
struct Lane<'a>(Option<&'a Groups>);

impl Drop for Lane<'_> {
    fn drop(&mut self) {
        if let Some(groups) = self.0 {
            groups.state().running = false;
        }
    }
}

impl Groups {
    /// Group commit for `ctx`'s store: `Some` when it has one writer (SQLite), `None`
    /// when writers run in parallel (PostgreSQL).
    fn for_store(ctx: &Context, locks: &Arc<KeyedLocks>, audit: bool) -> Option<Arc<Groups>> {
        ctx.store.single_writer().then(|| {
            Arc::new(Groups {
                ctx: ctx.clone(),
                locks: locks.clone(),
                audit,
                state: Mutex::new(GroupState::default()),
            })
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, GroupState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `member`; starts a lane when none runs.
    fn submit(self: &Arc<Self>, member: Member) {
        let start = {
            let mut state = self.state();
            state.queue.push_back(member);
            !std::mem::replace(&mut state.running, true)
        };
        if start {
            let groups = self.clone();
            tokio::spawn(async move { groups.lane().await });
        }
    }

    /// Runs groups until the queue is empty.
    async fn lane(&self) {
        let mut lane = Lane(Some(self));
        loop {
            let group: Vec<Member> = {
                let mut state = self.state();
                if state.queue.is_empty() {
                    state.running = false;
                    lane.0 = None;
                    return;
                }
                let n = state.queue.len().min(MAX_GROUP);
                state.queue.drain(..n).collect()
            };
            self.run(group).await;
        }
    }

    /// Applies `group` in one transaction, holding the locks of all its members' keys:
    /// optimistically, then, if that run was undone, with savepoints.
    async fn run(&self, group: Vec<Member>) {
        let keys: BTreeSet<String> = group.iter().flat_map(|m| m.work.locked_keys()).collect();
        let _held = self.locks.lock(keys).await;
        let Some(mut group) = self.apply(group, Isolation::Optimistic).await else {
            return;
        };
        tracing::debug!(
            messages = group.len(),
            "MLLP: group undone; running it again with savepoints"
        );
        for member in &mut group {
            if member.ahead.is_none() {
                member.ahead = bundle::prepare_transaction(&self.ctx, member.work.bundle.clone())
                    .ok()
                    .map(Ahead::Prepared);
            }
        }
        self.apply(group, Isolation::Savepoints).await;
    }

    /// One run of `group` in one transaction. Every member applied is answered after the
    /// commit; the others are dropped unanswered, to run alone. Returns the group untouched
    /// but for the prepared Bundles taken when an [`Isolation::Optimistic`] run was undone
    /// (a member could not be applied), else `None`.
    async fn apply(&self, mut group: Vec<Member>, isolation: Isolation) -> Option<Vec<Member>> {
        let savepoints = isolation == Isolation::Savepoints;
        let mut tx = match self.ctx.store.begin().await {
            Ok(tx) => tx,
            Err(e) => {
                tracing::warn!(error = %e, "MLLP: group transaction did not begin; messages run alone");
                return None;
            }
        };
        let mut applied: Vec<(usize, Applied)> = Vec::new();
        let mut remember: Vec<String> = Vec::new();
        for (i, member) in group.iter_mut().enumerate() {
            let Some(ahead) = member.ahead.take() else {
                // Its Bundle did not prepare again: it runs alone, which reports why.
                continue;
            };
            if savepoints && tx.savepoint().await.is_err() {
                return None;
            }
            let done =
                match attempt_on(&self.ctx, self.audit, tx.as_mut(), &member.work, ahead).await {
                    Ok(Attempt::Done {
                        applied: done @ Applied::Done { .. },
                        remember: keys,
                    }) => Some((done, keys)),
                    _ => None,
                };
            let kept = match (done, savepoints) {
                (Some(done), false) => Some(done),
                (Some(done), true) => tx.release_savepoint().await.ok().map(|()| done),
                (None, _) => None,
            };
            match kept {
                Some((done, keys)) => {
                    applied.push((i, done));
                    remember.extend(keys);
                }
                // Undone; the message runs alone.
                None if savepoints => {
                    if tx.rollback_to_savepoint().await.is_err() {
                        return None;
                    }
                }
                // Rolled back when `tx` is dropped; the group runs again.
                None => return Some(group),
            }
        }
        if applied.is_empty() {
            return None;
        }
        if let Err(e) = tx.commit().await {
            tracing::warn!(error = %e, "MLLP: group commit failed; messages run alone");
            return None;
        }
        for key in &remember {
            self.locks.remember(key);
        }
        tracing::debug!(
            messages = applied.len(),
            ?isolation,
            "MLLP: group committed"
        );
        let mut replies: Vec<Option<oneshot::Sender<Applied>>> =
            group.into_iter().map(|m| Some(m.reply)).collect();
        for (i, done) in applied {
            if let Some(reply) = replies[i].take() {
                let _ = reply.send(done);
            }
        }
        None
    }
}

/// The answer to a duplicate: in original mode the stored ACK as it was; in enhanced mode a
/// new commit ACK (CA, per MSH-15) and then the stored application ACK (per MSH-16).
fn duplicate_reply(header: &Header, mode: AckMode, record: &Hl7MessageRecord) -> Vec<Vec<u8>> {
    let charset = charset_of(header);
    let stored = record.ack.as_deref().map(|a| charset.encode(a));
    let stored_code = record.ack.as_deref().and_then(msa1);
    match (mode, stored) {
        (AckMode::Original, Some(ack)) => vec![ack],
        (AckMode::Enhanced { .. }, Some(ack)) => {
            let is_commit = matches!(stored_code, Some(AckCode::CR | AckCode::CE));
            if is_commit {
                let code = stored_code.unwrap_or(AckCode::CR);
                return if mode.sends_commit_ack(code) {
                    vec![ack]
                } else {
                    Vec::new()
                };
            }
            let mut out = Vec::new();
            if mode.sends_commit_ack(AckCode::CA) {
                out.push(commit_ack(header, AckCode::CA, None).to_bytes());
            }
            if mode.sends_application_ack(stored_code.unwrap_or(AckCode::AA)) {
                out.push(ack);
            }
            out
        }
        (_, None) => {
            let rejection = Rejection::Store(crate::storage::StoreError::Corrupt(format!(
                "duplicate of HL7 message {}, which has no stored ACK",
                record.summary.id
            )));
            vec![rejection.ack(header).to_bytes()]
        }
    }
}

/// MSA-1 of a stored ACK (read loosely: an AR for MSH-12 2.2 does not parse strictly).
fn msa1(ack: &str) -> Option<AckCode> {
    let summary = super::client::AckSummary::parse(ack.as_bytes())?;
    match summary.code.as_str() {
        "AA" => Some(AckCode::AA),
        "AE" => Some(AckCode::AE),
        "AR" => Some(AckCode::AR),
        "CA" => Some(AckCode::CA),
        "CE" => Some(AckCode::CE),
        "CR" => Some(AckCode::CR),
        _ => None,
    }
}

/// The `(prior, survivor)` Patient ids of an A40 merge: each Patient entry linked
/// `replaced-by` another entry's fullUrl, with the ids read from the transaction-response
/// locations (`…/Patient/{id}/_history/{n}`) of both entries.
fn merged_patients(bundle: &Value, response: &Value) -> Vec<(String, String)> {
    let empty = Vec::new();
    let entries = bundle["entry"].as_array().unwrap_or(&empty);
    let responses = response["entry"].as_array().unwrap_or(&empty);
    let id_at = |i: usize| -> Option<String> {
        let location = responses.get(i)?["response"]["location"].as_str()?;
        let path = location.split("/_history").next()?;
        path.rsplit('/').next().map(str::to_string)
    };
    let mut pairs = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let links = e["resource"]["link"].as_array();
        for link in links.into_iter().flatten() {
            if link["type"] != "replaced-by" {
                continue;
            }
            let Some(target) = link["other"]["reference"].as_str() else {
                continue;
            };
            let survivor = entries
                .iter()
                .position(|o| o["fullUrl"].as_str() == Some(target))
                .and_then(id_at);
            if let (Some(prior), Some(survivor)) = (id_at(i), survivor) {
                pairs.push((prior, survivor));
            }
        }
    }
    pairs
}

/// The MSH-18 character set named in a (sniffed) header; UTF-8 when empty or unknown.
fn charset_of(header: &Header) -> Charset {
    let name = header.component(18, 1).trim();
    if name.is_empty() {
        return Charset::Utf8;
    }
    Charset::from_hl7_name(name).unwrap_or(Charset::Utf8)
}

/// The row to insert for `raw`: MSH fields from the sniffed header, text decoded from the
/// MSH-18 character set (invalid bytes replaced).
fn new_message(raw: &[u8], header: &Header) -> NewHl7Message {
    let control_id = header.field(10).trim();
    NewHl7Message {
        received_at: clock::now_micros(),
        sending_application: header.field(3).to_string(),
        sending_facility: header.field(4).to_string(),
        control_id: (!control_id.is_empty()).then(|| control_id.to_string()),
        message_type: header.field(9).to_string(),
        version: header.field(12).to_string(),
        raw: charset_of(header).decode_lossy(raw),
    }
}

/// The bytes of a stored message, encoded back into its MSH-18 character set.
pub fn raw_bytes(text: &str) -> Vec<u8> {
    let header = Header::sniff(text.as_bytes()).unwrap_or_else(Header::empty);
    charset_of(&header).encode(text)
}

/// Shared handle, as the listener and the admin commands hold it.
pub type SharedProcessor = Arc<Processor>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_text_round_trips_in_the_message_charset() {
        let raw =
            b"MSH|^~\\&|A|B|C|D|20240101||ADT^A01|1|P|2.5.1||||||8859/1\rPID|1||1||M\xfcller\r";
        let header = Header::sniff(raw).unwrap();
        let new = new_message(raw, &header);
        assert!(new.raw.contains("Müller"));
        assert_eq!(raw_bytes(&new.raw), raw.to_vec());
        assert_eq!(new.control_id.as_deref(), Some("1"));
        assert_eq!(new.message_type, "ADT^A01");
    }

    #[test]
    fn msa1_reads_the_stored_code() {
        let msg = hl7::parse(b"MSH|^~\\&|A|B|C|D|20240101||ADT^A01|1|P|2.5.1\r").unwrap();
        let ack = hl7::ack::accept(&msg);
        assert_eq!(msa1(ack.as_str()), Some(AckCode::AA));
    }
}
