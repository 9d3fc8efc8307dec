//! HL7 v2 for MediFlow: our own ER7 (pipe-delimited) parser, an MLLP codec and an ACK builder.
//!
//! Why not the `hl7-parser` crate named on the design card: version 0.3.0 mis-parses v2.7+
//! messages with five encoding characters (`MSH|^~\&#`: every MSH field shifts by one),
//! drops hex escapes (`\X41\` gives "X41" instead of "A") and takes only UTF-8 strings, so
//! MSH-18 character sets cannot be honoured. This crate reads the delimiters from MSH-1/MSH-2,
//! transcodes from the MSH-18 character set with `encoding_rs`, and unescapes on read.
//!
//! # Module map
//!
//! | module | what lives there |
//! |---|---|
//! | [`message`] | [`parse`] and the tree it builds: [`Message`] → [`Segment`] → [`Field`] → [`Repetition`] → [`Component`] → subcomponent text |
//! | [`location`] | [`Location`]: 1-based positions (`PID-3`, `OBX[2]-5.1`) |
//! | [`delimiters`] | [`Delimiters`] read from MSH-1 and MSH-2 (4 or 5 encoding characters) |
//! | [`charset`] | [`Charset`]: MSH-18 (table 0211) names, decoding and encoding |
//! | [`escape`] | `\F\ \S\ \T\ \R\ \E\ \P\ \Xhh\ \.br\` escape sequences |
//! | [`version`] | [`Version`]: accepted MSH-12 values, 2.3 to 2.8.2 |
//! | [`header`] | [`Header`]: MSH alone, also sniffed best-effort from unparsable bytes |
//! | [`split`] | [`split_messages`]: files and FHS/BHS batches into single messages |
//! | [`error`] | [`ParseError`] |
//! | [`ack`] | ACK/NAK building (MSA, ERR, table 0357 codes) |
//! | [`mllp`] | [`mllp::MllpCodec`], a `tokio_util` codec for `0x0B ... 0x1C 0x0D` frames |
//!
//! Everything is pure (no I/O) except that the codec plugs into tokio's `Framed`.
//! Not here: message structure validation (which segments a trigger needs), data type
//! checks, and HL7 null (`""`) handling; callers check what they use.
//!
//! # Example
//!
//! ```
//! let bytes = b"MSH|^~\\&#|LAB|HOSP|EHR|HOSP|20240102||ORU^R01^ORU_R01|MSG1|P|2.7\r\
//!               PID|1||123^^^HOSP^MR~456^^^SSA^SS||Smith\\S\\Jr^John\r";
//! let msg = hl7::parse(bytes).unwrap();
//! assert_eq!(msg.get("MSH-9").as_deref(), Some("ORU"));
//! assert_eq!(msg.get("MSH-10").as_deref(), Some("MSG1"));
//! assert_eq!(msg.version(), hl7::Version::V2_7);
//! assert_eq!(msg.get("PID-3[2].4").as_deref(), Some("SSA"));
//! assert_eq!(msg.get("PID-5.1").as_deref(), Some("Smith^Jr"));
//!
//! let ack = hl7::ack::accept(&msg);
//! let ack = hl7::parse(ack.as_str().as_bytes()).unwrap();
//! assert_eq!(ack.get("MSA-2").as_deref(), Some("MSG1"));
//! assert_eq!(ack.get("MSH-5").as_deref(), Some("LAB"));
//! ```

#![warn(missing_docs)]

pub mod ack;
pub mod charset;
pub mod delimiters;
pub mod error;
pub mod escape;
pub mod fhir;
pub mod header;
pub mod location;
pub mod message;
pub mod mllp;
pub mod split;
pub mod version;

pub use charset::Charset;
pub use delimiters::Delimiters;
pub use error::ParseError;
pub use header::{Header, MessageType};
pub use location::{Location, LocationError};
pub use message::{Component, Field, Message, Repetition, Segment, parse};
pub use split::split_messages;
pub use version::Version;
