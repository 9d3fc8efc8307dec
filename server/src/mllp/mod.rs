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
//! 2. [`process`]: the raw message is stored first (`hl7_messages`, status `received`); a
//!    repeated MSH-10 from the same sender (MSH-3/MSH-4) gets its stored ACK again and is
//!    not applied twice; the message is parsed (AR on failure), mapped to a transaction
//!    Bundle ([`mapping`], i.e. `hl7::fhir`) and run through
//!    [`crate::interaction::bundle::process`] as one database transaction. The ACK (AA, or
//!    AE/AR with an ERR segment, see [`outcome`]) is built only after that transaction has
//!    committed or failed, then recorded with the status (`processed` / `error` + reason).
//! 3. Enhanced mode (MSH-15/MSH-16 valued, section 2.9.3): a commit ACK (CA) right after the
//!    raw message is stored, per MSH-15, then the application ACK per MSH-16. **Choice:** the
//!    application ACK is sent back on the same connection, right after processing, rather
//!    than on a new connection to the sender; we do not wait for the sender's commit ACK of
//!    it, and ACK messages arriving on a connection are read and ignored.
//!
//! Conditional writes in the Bundles of concurrent messages (two messages creating the same
//! patient on two connections) are serialised by [`locks`], so a patient is never created
//! twice by this process. [`client`] is the sending side (`mediflow hl7 send`, the MLLP
//! benchmark); [`admin`] holds `mediflow hl7 messages|reprocess|send` and the JSON summaries
//! of `GET /fhir/$hl7-messages`; [`bench`] is `mediflow bench mllp`.
//!
//! Limits: idempotency and the in-flight bookkeeping are per process; two servers on one
//! database could both apply a message resent to each while the first is still processing.
//! If the process dies between the FHIR commit and the status update, the message stays
//! `received` and a resend of it is applied again (the conditional references of the mapping
//! keep patients, encounters and orders from being duplicated).

pub mod admin;
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
