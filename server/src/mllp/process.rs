//! Processing one HL7 v2 message: store, deduplicate, parse, map, apply, acknowledge, record.
//!
//! The listener calls [`Processor::accept`] for each MLLP frame. It stores the raw message
//! (`hl7_messages`, status `received`) before anything else, answers a repeated MSH-10 from
//! the same MSH-3/MSH-4 with the stored ACK, and parses the message. What is left to do
//! comes back as a [`Step`]: either the ACKs to send, or a commit ACK to send right away
//! (enhanced mode, HL7 v2.5.1 section 2.9.3) and a [`Job`] for [`Processor::apply`], which
//! maps the message to a FHIR transaction Bundle, runs it as one database transaction and
//! builds the application ACK only once that transaction has committed (or failed and been
//! rolled back: a message is never half-applied). The ACK text and status (`processed`, or
//! `error` with the reason) are recorded before the ACK is returned for sending.
//!
//! Duplicates while the original is still being processed (a client that dropped its
//! connection and resent at once) wait for the original to finish, then get its ACK: each
//! (MSH-3, MSH-4, MSH-10) is registered in memory before its row is inserted.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use hl7::ack::{Ack, AckCode};
use hl7::{Charset, Header, Message};
use tokio::sync::watch;

use super::locks::KeyedLocks;
use super::mapping::{self, MappingConfig};
use super::outcome::{AckMode, Rejection, commit_ack};
use crate::clock;
use crate::interaction::{self, Context, bundle};
use crate::storage::hl7_messages::{Hl7Insert, Hl7MessageRecord, Hl7Status, NewHl7Message};

/// (MSH-3, MSH-4, MSH-10) as ER7 text: the identity of a message for idempotency.
type MessageKey = (String, String, String);

/// Processes HL7 v2 messages into the FHIR store; shared by all connections.
pub struct Processor {
    ctx: Context,
    mapping: MappingConfig,
    locks: KeyedLocks,
    in_flight: Mutex<HashMap<MessageKey, watch::Receiver<bool>>>,
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
        job: Job<'a>,
    },
}

/// A stored, parsed message waiting for [`Processor::apply`].
pub struct Job<'a> {
    id: i64,
    message: Message,
    mode: AckMode,
    started: Instant,
    _in_flight: Option<InFlight<'a>>,
}

impl Job<'_> {
    /// The `hl7_messages` row id.
    pub fn id(&self) -> i64 {
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
        Processor {
            ctx,
            mapping,
            locks: KeyedLocks::default(),
            in_flight: Mutex::new(HashMap::new()),
        }
    }

    /// Stores, deduplicates and parses one message (the content of an MLLP frame).
    pub async fn accept(&self, raw: &[u8]) -> Step<'_> {
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
        let new = new_message(raw, &header);
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
            job: Job {
                id,
                message,
                mode,
                started,
                _in_flight: in_flight,
            },
        }
    }

    /// Maps and applies a stored, parsed message, records the outcome, and returns the
    /// application ACK to send (`None` when MSH-16 says not to, in enhanced mode).
    pub async fn apply(&self, job: Job<'_>) -> Option<Vec<u8>> {
        let header = job.message.header();
        let result = self.run(&job.message).await;
        let ack = match &result {
            Ok(()) => hl7::ack::accept(&job.message),
            Err(rejection) => rejection.ack(&header),
        };
        let new = NewHl7Message {
            control_id: Some(job.message.control_id()),
            message_type: header.field(9).to_string(),
            ..Default::default()
        };
        self.record(job.id, result.as_ref().map(|_| ()), &ack, &new, job.started)
            .await;
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
            Ok(message) => match self.run(&message).await {
                Ok(()) => (Ok(()), hl7::ack::accept(&message)),
                Err(rejection) => {
                    let ack = rejection.ack(&message.header());
                    (Err(rejection), ack)
                }
            },
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

    /// Map, then apply as one FHIR transaction, holding the locks of its conditional writes.
    async fn run(&self, message: &Message) -> Result<(), Rejection> {
        let bundle = mapping::to_transaction(message, &self.mapping)?;
        let keys = super::locks::write_keys(&bundle);
        let _held = self.locks.lock(keys).await;
        interaction::with_retry(|| bundle::process(&self.ctx, bundle.clone(), false)).await?;
        Ok(())
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
