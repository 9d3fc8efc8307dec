//! HL7 v2 over MLLP: the listener `mediflow serve` runs next to the HTTP API (issue 4).
//!
//! A lab analyzer or hospital system connects over TCP and sends HL7 v2 messages framed
//! `0x0B … 0x1C 0x0D` (HL7 v2.5.1 Appendix C.4, "Minimal Lower Layer Protocol"). Each
//! message becomes one FHIR transaction in the same store the REST API serves, and is
//! answered with an acknowledgment (HL7 v2.5.1 chapter 2, section 2.9).
//!
//! Along one message:
//! 1. [`listener`]: one tokio task per connection; frames are decoded with
//!    [`hl7::mllp::MllpCodec`] and handled strictly in order, one at a time; an idle
//!    connection is closed; a frame over the size cap is answered AR (ERR-3 207).
//! 2. [`process`]: the message is parsed (AR on failure), mapped to a transaction Bundle
//!    ([`mapping`], i.e. `hl7::fhir`) and applied with
//!    [`crate::interaction::bundle::run_transaction`]. In original mode the raw message row
//!    (`hl7_messages`), the FHIR writes and the status `processed` + ACK are one database
//!    transaction, committed once before the AA is sent; a repeated MSH-10 from the same
//!    sender (MSH-3/MSH-4) is caught by that row insert, rolled back, and answered with the
//!    stored ACK. On failure everything is rolled back and the raw message is stored with
//!    status `error` + reason and the AE/AR ([`outcome`]) in a separate transaction.
//! 3. Enhanced mode (MSH-15/MSH-16 valued, section 2.9.3): the raw message is stored first
//!    (status `received`), then a commit ACK (CA) is sent, per MSH-15; the FHIR writes and
//!    the status update are then one transaction, followed by the application ACK per
//!    MSH-16. **Choice:** the
//!    application ACK is sent back on the same connection, right after processing, rather
//!    than on a new connection to the sender; we do not wait for the sender's commit ACK of
//!    it, and ACK messages arriving on a connection are read and ignored.
//!
//! Conditional writes in the Bundles of concurrent messages (two messages creating the same
//! patient on two connections) are serialised by [`locks`], so a patient is never created
//! twice by this process; a key already seen matching an existing resource is not locked,
//! and a message that would create under such an unlocked key is rolled back and run again
//! holding the lock. Each applied message is audited with an AuditEvent naming its sender,
//! what it wrote and the patient ([`audit`]). [`client`] is the sending side (`mediflow hl7
//! send`, the MLLP benchmark); [`admin`] holds `mediflow hl7 messages|reprocess|send` and
//! the JSON summaries of `GET /fhir/$hl7-messages`; [`bench`] is `mediflow bench mllp`.
//!
//! Limits: idempotency and the in-flight bookkeeping are per process; two servers on one
//! database could both apply a message resent to each while the first is still processing.
//! In enhanced mode, if the process dies after the CA but before the FHIR commit, the
//! message stays `received` and a resend of it is applied then (nothing was applied
//! before: the FHIR writes and the status update commit together).

pub mod admin;
pub mod audit;
pub mod bench;
pub mod client;
pub mod listener;
pub mod locks;
pub mod mapping;
pub mod outcome;
pub mod process;

use std::net::SocketAddr;
use std::time::Duration;

pub use listener::Listener;
pub use process::Processor;

/// Default MLLP address: the loopback interface, port 2575 (the IANA port for HL7 over MLLP).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:2575";
/// Default idle timeout of a connection: 300 s without a byte received.
pub const DEFAULT_IDLE_TIMEOUT_SECS: u64 = 300;
/// Default largest accepted message (MLLP frame content): 1 MiB.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = hl7::mllp::DEFAULT_MAX_FRAME;

/// Settings of the MLLP listener (`mediflow serve --mllp-*`, `--hl7-*`).
#[derive(Debug, Clone)]
pub struct MllpConfig {
    /// Address to listen on (`--mllp-listen`, default [`DEFAULT_LISTEN`]).
    pub listen: SocketAddr,
    /// A connection without any byte for this long is closed (`--mllp-idle-timeout-secs`).
    pub idle_timeout: Duration,
    /// Largest message accepted; a longer frame is answered AR (`--mllp-max-message-bytes`).
    pub max_message_bytes: usize,
    /// Create patients that a message refers to but the store does not hold
    /// (`--hl7-no-auto-create` turns it off: such a message is answered AE, ERR-3 204).
    pub auto_create_patients: bool,
}

impl MllpConfig {
    /// The defaults on `listen`.
    pub fn new(listen: SocketAddr) -> MllpConfig {
        MllpConfig {
            listen,
            idle_timeout: Duration::from_secs(DEFAULT_IDLE_TIMEOUT_SECS),
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            auto_create_patients: true,
        }
    }
}
